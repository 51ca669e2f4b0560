/*
 * server_internal.h - what server.c (threads, sockets) and methods.c (the method
 * table and handlers) share: the server, worker and connection structs and the
 * dispatch entry point. Not part of any public API.
 */
#ifndef DISCERN_SERVER_INTERNAL_H
#define DISCERN_SERVER_INTERNAL_H

#include "config.h"
#include "log.h"
#include "rpc.h"
#include "server.h"

#include <event2/event.h>
#include <event2/http.h>
#include <event2/listener.h>
#include <msgpack.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/types.h>

typedef struct dsc__worker dsc__worker;

/* Counters one worker owns and anyone may read (relaxed atomics). */
typedef struct dsc__counters {
    atomic_uint_fast64_t requests;      /* requests and notifications dispatched */
    atomic_uint_fast64_t errors;        /* error replies, all kinds */
    atomic_uint_fast64_t protocol_errors; /* frames that were not valid requests */
    atomic_uint_fast64_t closed_broken; /* connections closed for a broken stream */
} dsc__counters;

/* One client connection; owned by exactly one worker thread. */
typedef struct dsc__conn {
    dsc__worker *w;
    int fd;
    uint64_t id;
    bool is_unix;
    bool admin;           /* auth succeeded, or an allowed Unix peer uid */
    bool closing;         /* close once the output is flushed */
    bool paused;          /* reading stopped until the output drains */
    uid_t peer_uid;
    struct event *rev, *wev;
    uint8_t *in;          /* received bytes; in[0..in_len) */
    size_t in_cap, in_len;
    dsc_rpc_scanner sc;   /* the scan of the message starting at in[0] */
    msgpack_sbuffer out;  /* replies not yet written: out.data[out_off..out.size) */
    size_t out_off;
    struct dsc__conn *prev, *next;
} dsc__conn;

/* A socket handed from the acceptor to a worker. */
typedef struct dsc__handoff {
    int fd;
    bool is_unix;
} dsc__handoff;

struct dsc__worker {
    dsc_server *srv;
    int index;
    pthread_t thread;
    bool started;
    struct event_base *base;
    struct event *notify;       /* activated by the main thread: new sockets or stop */
    struct event *drain_timer;  /* drain deadline */
    pthread_mutex_t lock;       /* guards queue and stop */
    dsc__handoff *queue;
    size_t n_queue, cap_queue;
    bool stop;                  /* drain and exit (set under lock) */
    bool draining;              /* worker-thread copy of stop */
    msgpack_zone zone;          /* decoded requests; cleared after every message */
    dsc__conn *conns;           /* this worker's connections */
    uint64_t next_conn_id;
    dsc__counters counters;
};

struct dsc_server {
    dsc_server_config cfg;
    dsc_log log;
    struct event_base *base; /* main thread: listeners, signals, HTTP, tick */
    struct evconnlistener *tcp, *unix_listener;
    struct evhttp *http;
    struct event *sig_term, *sig_int, *sig_hup, *sig_stop_request;
    dsc__worker *workers;
    int n_workers;
    unsigned next_worker;     /* main thread only */
    atomic_int connections;   /* open client connections, all workers */
    atomic_uint_fast64_t rejected; /* connections refused over max_connections */
    int64_t started_us;
    int tcp_port, http_port;
    bool stopping;            /* main thread only */
    int exit_code;
};

/* The empty map handed to a method called with params []. */
extern const msgpack_object dsc__empty_map;

/* Run one decoded request or notification of conn: find the method, check rights,
 * call it, and (for a request) pack the reply into conn->out. */
void dsc__dispatch(dsc__conn *conn, const dsc_rpc_request *req);
/* Parse "host:port" / "[v6]:port" for config key; DSC_BAD_REQUEST naming it. */
dsc_status dsc__parse_hostport(const char *key, const char *text, struct sockaddr_storage *ss,
                               socklen_t *len, dsc_error *err);
/* Microseconds since the epoch (CLOCK_REALTIME). */
int64_t dsc__now_us(void);

#endif
