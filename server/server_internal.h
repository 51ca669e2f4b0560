/*
 * server_internal.h - what server.c (threads, sockets) and methods.c (the method
 * table and handlers) share: the server, worker and connection structs and the
 * dispatch entry point. Not part of any public API.
 */
#ifndef DISCERN_SERVER_INTERNAL_H
#define DISCERN_SERVER_INTERNAL_H

#include "accept.h"
#include "authlimit.h"
#include "config.h"
#include "keys.h"
#include "log.h"
#include "rpc.h"
#include "reservations.h"
#include "server.h"

#include "discern/catalog.h"
#include "discern/estimate.h"
#include "discern/grid.h"
#include "discern/ledger.h"
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

/* One outstanding _async ledger call of a job (jobs.c). */
#define DSC__JOB_SLOTS 2
typedef struct dsc__job_slot_t {
    dsc__job *job;
    dsc_status st; /* what done() reported */
    dsc_error err;
    int64_t issued_us;
    struct dsc__job_slot_t *next; /* on the worker's completion list */
} dsc__job_slot_t;

/* Pack the result of a finished job into pk (st/st_err: the first failure among its
 * completions, DSC_OK when all committed); return an error to reply with instead. */
typedef dsc_status (*dsc__job_finish_fn)(dsc__job *job, dsc_status st, const dsc_error *st_err,
                                         msgpack_packer *pk, dsc_error *err);

/* A request waiting for the store; handlers embed it first in their own struct. */
struct dsc__job {
    dsc__conn *conn;
    dsc__worker *w;
    uint32_t msgid;
    bool is_request;
    int waiting;   /* completions still expected (worker thread only) */
    dsc_status st; /* the first failed completion */
    dsc_error err;
    int64_t started_us;
    size_t size; /* of the whole block, for the worker's job cache */
    dsc__job_finish_fn finish;
    dsc__job_slot_t slots[DSC__JOB_SLOTS];
};

/* Freed jobs kept per worker for the next request of the same size (a handful of
 * job types exist: one list per size), at most DSC__JOB_CACHE_MAX blocks each. */
#define DSC__JOB_CACHE_SIZES 4
#define DSC__JOB_CACHE_MAX 32
typedef struct dsc__job_cache {
    size_t size;
    void *head; /* first word of a cached block: the next one */
    int n;
} dsc__job_cache;

/* The largest output buffer a worker keeps for its next reply (conn_flush). */
#define DSC__SPARE_OUT_MAX (64u << 10)

/* What a reload swaps as one (state.c): immutable once loaded, refcounted. */
typedef struct dsc__state {
    atomic_int refs;
    uint64_t generation;
    dsc_catalog *catalog;
    dsc_policy_set *policies;
} dsc__state;

/* Largest token count accepted on the wire (1e11: far above any context window,
 * keeps micro-unit sums exact). */
#define DSC__TOKENS_MAX 100000000000LL

/* Upper bounds (µs) of the check-latency histogram buckets (metrics.c). */
#define DSC__LATENCY_BUCKETS 12

/* Counters one worker owns and anyone may read (relaxed atomics). */
typedef struct dsc__counters {
    atomic_uint_fast64_t requests;        /* requests and notifications dispatched */
    atomic_uint_fast64_t errors;          /* error replies, all kinds */
    atomic_uint_fast64_t protocol_errors; /* frames that were not valid requests */
    atomic_uint_fast64_t closed_broken;   /* connections closed for a broken stream */
    atomic_uint_fast64_t ledger_writes;   /* calls of M_WRITES_LEDGER methods */
    atomic_uint_fast64_t decisions[4];    /* by dsc_policy_outcome (ALLOW..REFUSE) */
    atomic_uint_fast64_t unenforced;      /* allowed with the store down, failure_mode open */
    atomic_uint_fast64_t policy_errors;   /* this worker's VMs, summed over reloads */
    atomic_uint_fast64_t latency[DSC__LATENCY_BUCKETS + 1]; /* checks per bucket (+Inf last) */
    atomic_uint_fast64_t latency_sum_us;
    atomic_uint_fast64_t store_ops, store_us; /* ledger calls that touch the store */
} dsc__counters;

/* Decisions counted by (outcome, policy, purpose class), for /metrics. */
#define DSC__LABELS_MAX 128
typedef struct dsc__label_count {
    bool shadow; /* a shadow policy's verdict (purpose_class ""), not a decision */
    int outcome;
    char policy[DSC_POLICY_NAME_MAX];
    char purpose_class[32];
    uint64_t count;
} dsc__label_count;

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
    char addr[DSC__ADDR_KEY_MAX]; /* the peer's IP address ("" for Unix peers) */
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
    uint32_t jobs;     /* requests waiting for the store; the struct outlives a close
                          (fd = -1) until they are done */
    bool flush_queued; /* on the worker's flush_list */
    struct dsc__conn *flush_next;
    struct dsc__conn *prev, *next;
};

/* A socket handed from the acceptor to a worker. */
typedef struct dsc__handoff {
    int fd;
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
    uint64_t vm_errors_seen;     /* policy errors of the current VM already counted */
    uint64_t decision_seq;       /* for decision ids */
    pthread_mutex_t labels_lock; /* guards labels (this worker writes, /metrics reads) */
    dsc__label_count labels[DSC__LABELS_MAX];
    int n_labels;
};

struct dsc_server {
    dsc_server_config cfg;
    dsc_log log;
    struct event_base *base; /* main thread: listeners, signals, HTTP, tick */
    struct evconnlistener *tcp, *unix_listener;
    struct evhttp *http;
    struct evconnlistener *http_listener; /* evhttp's own, paused with the others */
    struct dsc__accept *accept;           /* who gets a connection (accept.c) */
    struct event *sig_term, *sig_int, *sig_hup, *sig_stop_request;
    dsc__worker *workers;
    int n_workers;
    pthread_mutex_t state_lock; /* guards state (the pointer, not what it points to) */
    dsc__state *state;
    atomic_uint_fast64_t generation;      /* state->generation, readable without the lock */
    dsc_grid *grid;                       /* live grid intensities (thread-safe) */
    dsc_ledger *ledger;                   /* budgets, holds, journal (thread-safe) */
    dsc__resv_table *reservations;        /* what each reservation was for (thread-safe) */
    dsc__authlimit *authlimit;            /* failed auth by peer address (thread-safe) */
    dsc__keys *keys;                      /* API keys and the admin journal (thread-safe) */
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

/* What one method call sees. */
typedef struct dsc__call {
    dsc__conn *conn;
    dsc_server *srv;
    dsc__worker *w;
    uint32_t msgid;
    bool is_request;
    dsc__job *deferred;      /* set by dsc__job_defer: the reply comes later */
    bool replayed;           /* run again by dsc__job_delay_call, after its wait */
    const dsc__scope *scope; /* the caller's scope for an M_SCOPED method, else NULL */
    const char *key_id;      /* the caller's key id ("admin", "" when anonymous) */
} dsc__call;

/* Jobs (jobs.c). Defer the call: a zeroed job of size bytes (a struct beginning with
 * a dsc__job) is allocated; NULL when out of memory. */
dsc__job *dsc__job_defer(dsc__call *c, size_t size, dsc__job_finish_fn finish);
/* The done() user data for the job's i-th _async call (counts it as outstanding). */
void *dsc__job_slot(dsc__job *job, int i);
/* Undo dsc__job_slot when the _async call failed at once (done will not run). */
void dsc__job_unslot(dsc__job *job);
/* The done() of every _async ledger call (any thread). */
void dsc__job_done(void *ud, dsc_status st, const dsc_error *err);
/* Worker thread: handle the completions filed by dsc__job_done. */
void dsc__jobs_run_completed(dsc__worker *w);
/* Reply now for a job that waits for nothing, and free it (inside dispatch). */
void dsc__job_finish_now(dsc__job *job);
/* Worker teardown: free the cached job blocks. */
void dsc__jobs_cache_free(dsc__worker *w);
/* server.c: give conn's empty output buffer the worker's spare storage, if any, so
 * that packing a reply does not allocate. */
void dsc__conn_out_ready(dsc__conn *conn);
/* server.c: after a job of conn finished, send its reply or free a closed conn. */
void dsc__conn_after_job(dsc__conn *conn);

/* A method handler: read params (a map), pack one result map into pk, or return an
 * error (whatever was packed is then discarded). */
typedef dsc_status (*dsc__method_fn)(dsc__call *c, const msgpack_object *params, msgpack_packer *pk,
                                     dsc_error *err);

/* Defer the call and run fn again with the same params after delay_us on the
 * worker's loop (c->replayed set), its result being the reply. Params packed over
 * DSC__JOB_DELAY_PARAMS_MAX bytes are refused (DSC_TOO_LARGE); DSC_NOMEM when out of
 * memory. */
#define DSC__JOB_DELAY_PARAMS_MAX 4096
dsc_status dsc__job_delay_call(dsc__call *c, const msgpack_object *params, dsc__method_fn fn,
                               int64_t delay_us, dsc_error *err);

/* Handlers (methods_catalog.c, methods_ledger.c). */
dsc_status dsc__m_estimate(dsc__call *c, const msgpack_object *p, msgpack_packer *pk,
                           dsc_error *err);
dsc_status dsc__m_models_list(dsc__call *c, const msgpack_object *p, msgpack_packer *pk,
                              dsc_error *err);
dsc_status dsc__m_zones_list(dsc__call *c, const msgpack_object *p, msgpack_packer *pk,
                             dsc_error *err);
dsc_status dsc__m_grid_set(dsc__call *c, const msgpack_object *p, msgpack_packer *pk,
                           dsc_error *err);
dsc_status dsc__m_policy_reload(dsc__call *c, const msgpack_object *p, msgpack_packer *pk,
                                dsc_error *err);

dsc_status dsc__m_check(dsc__call *c, const msgpack_object *p, msgpack_packer *pk, dsc_error *err);
dsc_status dsc__m_settle(dsc__call *c, const msgpack_object *p, msgpack_packer *pk, dsc_error *err);
dsc_status dsc__m_cancel(dsc__call *c, const msgpack_object *p, msgpack_packer *pk, dsc_error *err);
dsc_status dsc__m_budget_get(dsc__call *c, const msgpack_object *p, msgpack_packer *pk,
                             dsc_error *err);
dsc_status dsc__m_budget_list(dsc__call *c, const msgpack_object *p, msgpack_packer *pk,
                              dsc_error *err);
dsc_status dsc__m_budget_set(dsc__call *c, const msgpack_object *p, msgpack_packer *pk,
                             dsc_error *err);
dsc_status dsc__m_budget_delete(dsc__call *c, const msgpack_object *p, msgpack_packer *pk,
                                dsc_error *err);

/* Key and audit handlers (methods_keys.c). */
dsc_status dsc__m_key_create(dsc__call *c, const msgpack_object *p, msgpack_packer *pk,
                             dsc_error *err);
dsc_status dsc__m_key_list(dsc__call *c, const msgpack_object *p, msgpack_packer *pk,
                           dsc_error *err);
dsc_status dsc__m_key_revoke(dsc__call *c, const msgpack_object *p, msgpack_packer *pk,
                             dsc_error *err);
dsc_status dsc__m_decisions_list(dsc__call *c, const msgpack_object *p, msgpack_packer *pk,
                                 dsc_error *err);
/* Make conn an admin connection (a Unix peer in unix_admin_uids, the admin token). */
void dsc__conn_make_admin(dsc__conn *conn);

/* Metrics (metrics.c), called on the worker's thread. */
void dsc__count_decision(dsc__worker *w, dsc_policy_outcome outcome, const char *policy,
                         const char *purpose, bool unenforced, int64_t latency_us);
void dsc__count_store(dsc__worker *w, int64_t us);
/* One verdict of a shadow policy (discern_shadow_verdicts_total). */
void dsc__count_shadow(dsc__worker *w, const char *policy, dsc_policy_outcome outcome);
void dsc__count_policy(dsc__worker *w);
/* Write a fresh decision id ("d-...", unique across workers and restarts). */
void dsc__new_decision_id(dsc__worker *w, char *out, size_t cap);
/* Start the HTTP listener on srv->cfg.http (http.c). */
dsc_status dsc__http_start(dsc_server *srv, dsc_error *err);
/* Parse the query string of GET /v1/budgets (NULL = none) into q and point subject
 * at its org, team, user and key (NULL when absent): 1 when any is given, 0 when
 * none, -1 when the query is malformed. evhttp_clear_headers(q) releases it. */
struct evkeyvalq;
int dsc__http_query_subject(const char *query, struct evkeyvalq *q, dsc_subject *subject);
/* The Prometheus text exposition of the server's metrics; caller frees. NULL on OOM. */
char *dsc__metrics_render(dsc_server *srv, size_t *len);

/* Shared by the handlers: pack a dsc_impacts as a map of {min, max} ranges. */
void dsc__pack_impacts(msgpack_packer *pk, const dsc_impacts *im);
/* Pack a NUL-terminated key. */
void dsc__pack_key(msgpack_packer *pk, const char *key);
/* Read provider, model, tokens, latency_s, zone and the extras below from params
 * into in, with the strings stored in a. */
typedef struct dsc__estimate_args {
    char provider[DSC_POLICY_NAME_MAX], model[DSC_POLICY_MODEL_MAX], zone[DSC_ZONE_MAX];
    dsc_estimate_input in;
} dsc__estimate_args;
dsc_status dsc__read_estimate_args(const dsc__call *c, const msgpack_object *p,
                                   dsc__estimate_args *a, bool outputs_required, dsc_error *err);
/* The params every estimate reads besides provider/model/tokens: method (default: the
 * server's estimate_method), cached/reasoning tokens, images, sizes, scope, carbon,
 * water, modality; and the server's live grid. */
dsc_status dsc__read_estimate_extras(const dsc__call *c, const msgpack_object *p,
                                     dsc_estimate_input *in, dsc_error *err);
/* Pack the DSC__ESTIMATE_CONTEXT_KEYS keys method, scope, assumptions and warnings. */
#define DSC__ESTIMATE_CONTEXT_KEYS 4
void dsc__pack_estimate_context(msgpack_packer *pk, const dsc_estimate *est);

/* A request's subject, its strings in place (methods_ledger.c). */
typedef struct dsc__subject_buf {
    char org[DSC_NAME_MAX], team[DSC_NAME_MAX], user[DSC_NAME_MAX], key[DSC_NAME_MAX];
    dsc_subject subject;
} dsc__subject_buf;
/* Read params.subject into s; a scope (may be NULL) fills the parts it omits (the
 * whole subject when there is none) and refuses a part outside it with DSC_FORBIDDEN.
 * required: a subject (given or filled) must name at least one part. */
dsc_status dsc__read_subject(const msgpack_object *p, bool required, const dsc__scope *scope,
                             dsc__subject_buf *s, dsc_error *err);

/* The empty map handed to a method called with params []. */
extern const msgpack_object dsc__empty_map;

/* Run one decoded request or notification of conn: find the method, check rights,
 * call it, and (for a request) pack the reply into conn->out. */
void dsc__dispatch(dsc__conn *conn, const dsc_rpc_request *req);
/* Microseconds since the epoch (CLOCK_REALTIME). */
int64_t dsc__now_us(void);

#endif
