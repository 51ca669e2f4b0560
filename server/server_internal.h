/*
 * server_internal.h - the server and its workers: the structs every server file
 * shares (dsc_server, dsc__worker, the state a reload swaps). Connections are in
 * conn.h, the method layer in methods.h, jobs in jobs.h, counters in metrics.h,
 * the HTTP side in http.h. Not part of any public API.
 */
#ifndef DISCERN_SERVER_INTERNAL_H
#define DISCERN_SERVER_INTERNAL_H

#include "accept.h"
#include "authlimit.h"
#include "config.h"
#include "context.h"
#include "jobs.h"
#include "keys.h"
#include "ledger_ops.h"
#include "log.h"
#include "metrics.h"
#include "rpc.h"
#include "server.h"

#include "discern/catalog.h"
#include "discern/estimate.h"
#include "discern/grid.h"
#include "discern/ledger.h"
#include "discern/report.h"
#include "discern/policy.h"

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
typedef struct dsc__job dsc__job;
typedef struct dsc__conn dsc__conn;
typedef struct dsc__http_call dsc__http_call;

/* The largest output buffer a worker keeps for its next reply (conn_flush). */
#define DSC__SPARE_OUT_MAX (64u << 10)

/* What a reload swaps as one (state.c): immutable once loaded, refcounted. */
typedef struct dsc__state {
    atomic_int refs;
    uint64_t generation;
    dsc_catalog *catalog;
    dsc_policy_set *policies;
} dsc__state;

/* Largest token count accepted on the wire: the estimator's cap, so that one number
 * holds for the protocol, the estimate and the docs. */
#define DSC__TOKENS_MAX DSC_ESTIMATE_TOKENS_MAX

/* A socket handed from the acceptor to a worker. */
typedef struct dsc__handoff {
    int fd; /* -1 with call set: a JSON API call to run */
    dsc__http_call *call;
    bool is_unix;
    char addr[DSC__ADDR_KEY_MAX]; /* its slot's address key (dsc__accept_admit) */
} dsc__handoff;

struct dsc__worker {
    dsc_server *srv;
    int index;
    pthread_t thread;
    bool started;
    struct event_base *base;
    struct event *notify;      /* activated by the main thread: new sockets or stop */
    struct event *drain_timer; /* drain deadline */
    pthread_mutex_t lock;      /* guards queue and stop */
    dsc__handoff *queue;
    size_t n_queue, cap_queue;
    bool stop;             /* drain and exit (set under lock) */
    bool draining;         /* worker-thread copy of stop */
    msgpack_zone zone;     /* decoded requests; cleared after every message */
    dsc_decision decision; /* the VM's full answer for the request being decided */
    uint8_t *rbuf;         /* shared read buffer of this worker's connections */
    size_t rcap;
    dsc__state *state; /* the state this worker's VM runs */
    dsc_policy_vm *vm; /* this worker's Lua policy VM */
    dsc__conn *conns;  /* this worker's connections */
    uint64_t next_conn_id;
    dsc__counters counters;
    size_t jobs;                /* jobs outstanding on this worker */
    dsc__job_slot_t *completed; /* done() results not yet handled (under lock) */
    dsc__conn *flush_list;      /* connections with replies from completed jobs */
    dsc__job_cache job_cache[DSC__JOB_CACHE_SIZES]; /* worker thread only */
    char *spare_out; /* a sent connection's output buffer, for the next */
    size_t spare_out_cap;
    uint64_t vm_errors_seen;          /* policy errors of the current VM already counted */
    uint64_t vm_signals_seen;         /* its watchdog signals already counted */
    uint64_t decision_seq;            /* for decision ids */
    dsc__context_cache context_cache; /* the estimate contexts it packed last */
    pthread_mutex_t labels_lock;      /* guards labels (this worker writes, /metrics reads) */
    dsc__label_count labels[DSC__LABELS_MAX];
    int n_labels;
    struct dsc__redis *redis; /* a Redis store: this loop's connection (ledger_redis.c) */
    struct event *redis_tick; /* worker 0 of a Redis store: sweep, reload */
    atomic_bool redis_ready;  /* its connection takes calls (/healthz) */
};

struct dsc_server {
    dsc_server_config cfg;
    dsc_log log;
    struct event_base *base; /* main thread: listeners, signals, HTTP, tick */
    struct evconnlistener *tcp, *unix_listener;
    struct evhttp *http;
    struct evconnlistener *http_listener; /* evhttp's own, paused with the others */
    struct event *http_done_ev;           /* main thread: JSON API calls answered */
    pthread_mutex_t http_lock;            /* guards http_done */
    dsc__http_call *http_done;            /* answered by a worker, not yet sent */
    char www[DSC_CONFIG_STR_MAX];         /* the console's folder, resolved */
    struct dsc__accept *accept;           /* who gets a connection (accept.c) */
    struct event *sig_term, *sig_int, *sig_hup, *sig_stop_request;
    dsc__worker *workers;
    int n_workers;
    pthread_mutex_t state_lock; /* guards state (the pointer, not what it points to) */
    dsc__state *state;
    atomic_uint_fast64_t generation;      /* state->generation, readable without the lock */
    dsc_grid *grid;                       /* live grid intensities (thread-safe) */
    dsc_ledger *ledger;                   /* budgets, holds, journal (thread-safe) */
    const struct dsc__ledger_ops *lops;   /* the ledger operations: local or Redis */
    struct dsc__redis_shared *redis;      /* a Redis store's shared state, else NULL */
    dsc__authlimit *authlimit;            /* failed auth by peer address (thread-safe) */
    dsc__keys *keys;                      /* API keys and the admin journal (thread-safe) */
    dsc_reporter *reporter;               /* usage reports off the workers; NULL: no store */
    struct event *tick;                   /* once a second: expire holds, prune reservations */
    atomic_int_fast64_t store_free_bytes; /* on the store's file system; -1 = unknown */
    bool store_disk_low;                  /* below store_free_warn_bytes (main thread) */
    unsigned next_worker;                 /* main thread only */
    atomic_int connections;               /* open client connections, all workers */
    atomic_uint_fast64_t rejected;        /* connections refused over max_connections */
    int64_t started_us;
    int tcp_port, http_port;
    bool stopping; /* main thread only */
    int exit_code;
};

/* No connection and no job left: a draining worker may stop (server.c). */
bool dsc__worker_idle(const dsc__worker *w);

/* Load a new catalogue + policy set (policy tests run first). NULL with err. */
dsc__state *dsc__state_load(dsc_server *srv, dsc_error *err);
dsc__state *dsc__state_ref(dsc__state *s);
void dsc__state_unref(dsc__state *s);
/* Load and swap in a new state; the old one stays when loading fails. */
dsc_status dsc__server_reload(dsc_server *srv, dsc_error *err);
/* Make w run the server's current state (new VM after a reload). */
dsc_status dsc__worker_sync(dsc__worker *w, dsc_error *err);
/* Drop w's VM and state (worker exit). */
void dsc__worker_release_state(dsc__worker *w);

/* Microseconds since the epoch (CLOCK_REALTIME). */
int64_t dsc__now_us(void);

#endif
