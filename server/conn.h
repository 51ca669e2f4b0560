/*
 * conn.h - a client connection of a worker (conn.c: socket I/O, framing, deadlines;
 * http_api.c: a JSON API call without a socket) and what transports do with it.
 * Included by the transports, jobs.c and methods.c (auth); never by a handler.
 */
#ifndef DISCERN_SERVER_CONN_H
#define DISCERN_SERVER_CONN_H

#include "methods.h"

/* One client connection; owned by exactly one worker thread. */
struct dsc__conn {
    dsc__worker *w;
    int fd;
    uint64_t id;
    bool is_unix;
    dsc__role role;   /* NONE until auth; ADMIN for the admin token or a Unix admin uid */
    dsc__scope scope; /* what the connection may act on (all for admin) */
    char key_id[DSC__KEY_ID_MAX]; /* the key it authenticated with; "admin" or "" */
    int64_t key_expires_at;       /* unix seconds; 0 = never */
    uint64_t key_generation;      /* dsc__keys_generation when the key was last checked */
    uint8_t auth_failures;        /* wrong tokens on this connection (3 close it) */
    bool closing;                 /* close once the output is flushed */
    bool paused;                  /* reading stopped until the output drains */
    uid_t peer_uid;
    char addr[DSC__ADDR_KEY_MAX];           /* the peer's IP address ("" for Unix peers) */
    char auth_peer[DSC__AUTHLIMIT_KEY_MAX]; /* its authlimit key, set at the first auth */
    struct event *rev, *wev;
    struct event *timer;    /* idle and frame deadlines (server.c, "Deadlines") */
    int64_t last_frame_ms;  /* monotonic: the last complete message (or the accept) */
    int64_t frame_start_ms; /* when the partial message in[] began arriving */
    int64_t armed_ms;       /* the deadline the timer is set for */
    bool in_frame;          /* in[] ends with a partial message */
    uint8_t *in;            /* received bytes; in[0..in_len) */
    size_t in_cap, in_len;
    bool borrowed;       /* in is the worker's rbuf (only during one read's pump) */
    dsc_rpc_scanner sc;  /* the scan of the message starting at in[0] */
    msgpack_sbuffer out; /* replies not yet written: out.data[out_off..out.size) */
    size_t out_off;
    uint32_t jobs;        /* requests waiting for the store; the struct outlives a close
                             (fd = -1) until they are done */
    dsc__http_call *http; /* a call of the JSON API (http_api.c): no socket, fd = -1 */
    bool flush_queued;    /* on the worker's flush_list */
    struct dsc__conn *flush_next;
    struct dsc__conn *prev, *next;
};

/* conn.c: give conn's empty output buffer the worker's spare storage, if any, so
 * that packing a reply does not allocate. */
void dsc__conn_out_ready(dsc__conn *conn);
/* conn.c: after a job of conn finished, send its reply or free a closed conn. */
void dsc__conn_after_job(dsc__conn *conn);

/* Make conn an admin connection (a Unix peer in unix_admin_uids, the admin token). */
void dsc__conn_make_admin(dsc__conn *conn);

/* methods.c: bind conn to the key or admin token of a Bearer header, through the
 * failed-auth limiter (conn->auth_peer set). *limited: refused by the limiter. */
dsc_status dsc__conn_auth_bearer(dsc__conn *conn, const char *token, bool *limited, dsc_error *err);

/* Bytes one read(2) asks for; a worker's shared read buffer is max_message_bytes
 * plus this. */
#define DSC__READ_CHUNK (16 * 1024)

/* After packing into c->out through o from mark: when a write failed (out of
 * memory), drop the partial bytes and close c once the earlier replies are sent
 * (a reply that cannot be packed is never sent in part, nor left unanswered). */
void dsc__conn_out_check(dsc__conn *c, const dsc_rpc_out *o, size_t mark);

/* conn.c, on the worker's thread. Open a connection for a handed-over socket. */
void dsc__conn_open(dsc__worker *w, const dsc__handoff *h);
/* Close the socket (why: logged at debug); the struct goes with its last job. */
void dsc__conn_close(dsc__conn *c, const char *why);
/* Answer what is buffered, send, decide whether to keep reading; may free c. */
void dsc__conn_pump(dsc__conn *c);

#endif
