/*
 * ledger_ops.h - what the method handlers ask of the ledger, as one table of
 * operations with two implementations (docs/internals.md, "The Redis store"):
 *
 *   dsc__ledger_local  the process's own dsc_ledger (SQLite or memory): each
 *                      operation is the ledger's call of the same shape;
 *   dsc__ledger_redis  a Redis shared by many discernd (ledger_redis.c): the
 *                      process's dsc_ledger keeps only the budget definitions
 *                      (read from Redis, to match a subject's budgets), every
 *                      counter and hold lives in Redis, and each operation is a
 *                      script call on the worker's own Redis connection.
 *
 *   const dsc__ledger_ops *ops = srv->lops;
 *   ops->reserve(w, &req, &out, &done, &err);   done runs on w's loop (Redis) or
 *                                               the store's writer (local)
 *
 * Every operation with a done has the ledger's contract (discern/ledger.h): it
 * returns an error and never calls done, or returns DSC_OK and calls done exactly
 * once. The two reads (preview, hold_get) answer at once when they can (*later =
 * false, done is not called) and otherwise call done once out is filled; the Redis
 * reserve may report DSC_BUDGET_EXCEEDED through done, with out->exceeded filled
 * (the counters in Redis refused what the replica's policies allowed).
 */
#ifndef DISCERN_SERVER_LEDGER_OPS_H
#define DISCERN_SERVER_LEDGER_OPS_H

#include "discern/ledger.h"

#include <stdbool.h>

typedef struct dsc__worker dsc__worker;
typedef struct dsc_server dsc_server;

/* The budget states a settle's reply carries (the subject's budgets after it). A
 * store that reads its counters in the settle's own call fills v (at most max),
 * sets n and filled by the time done runs; otherwise filled stays false and the
 * caller reads them itself. */
typedef struct dsc__settle_states {
    dsc_budget_state *v;
    size_t max, n;
    bool filled;
} dsc__settle_states;

typedef struct dsc__ledger_ops {
    const char *name; /* "local", "redis" */
    /* recent_ok: the states may be ones the store read up to its configured age ago
     * (a check's policies); false: as of now (budget.get). */
    dsc_status (*preview)(dsc__worker *w, const dsc_subject *s, const dsc_amounts *request,
                          bool recent_ok, dsc_budget_state *out, size_t max, size_t *n,
                          const dsc_done *done, bool *later, dsc_error *err);
    dsc_status (*hold_get)(dsc__worker *w, const char *id, dsc_hold_info *out, const dsc_done *done,
                           bool *later, dsc_error *err);
    dsc_status (*reserve)(dsc__worker *w, const dsc_reserve_req *req, dsc_reserve_out *out,
                          const dsc_done *done, dsc_error *err);
    dsc_status (*record)(dsc__worker *w, const dsc_decision_record *rec, const dsc_done *done,
                         dsc_error *err);
    dsc_status (*settle)(dsc__worker *w, const dsc_settle_req *req, dsc_settle_out *out,
                         dsc__settle_states *states, const dsc_done *done, dsc_error *err);
    dsc_status (*cancel)(dsc__worker *w, const dsc_cancel_req *req, const dsc_done *done,
                         dsc_error *err);
    dsc_status (*budget)(dsc__worker *w, const dsc_budget_req *req, const dsc_done *done,
                         dsc_error *err);
    /* Whether the store takes writes now (/healthz, discern_store_ok). */
    bool (*healthy)(dsc_server *srv);
} dsc__ledger_ops;

extern const dsc__ledger_ops dsc__ledger_local, dsc__ledger_redis;

/* The Redis side of a server (ledger_redis.c), NULL-safe: open checks the config
 * and starts nothing; worker_start connects w's loop (and, on worker 0, the budgets
 * subscription, the sweep of expired holds and the definitions' reload); worker_stop
 * closes w's connection, completing its calls in flight as store_unavailable. */
typedef struct dsc__redis_shared dsc__redis_shared;
dsc_status dsc__ledger_redis_open(dsc_server *srv, dsc_error *err);
dsc_status dsc__ledger_redis_worker_start(dsc__worker *w, dsc_error *err);
void dsc__ledger_redis_worker_stop(dsc__worker *w);
void dsc__ledger_redis_free(dsc_server *srv);
/* A Redis store: write the API key id (just created or revoked in srv->keys) to
 * Redis, so every replica knows it; done once Redis has it. */
dsc_status dsc__ledger_redis_key_put(dsc__worker *w, const char *id, const dsc_done *done,
                                     dsc_error *err);
/* A Redis store: append a key or budget change made by key `by` to the admin journal
 * every replica shares (stream <tag>admin); a failure is logged (the change itself is
 * made and its reply must not lie about it). */
void dsc__ledger_redis_admin(dsc__worker *w, const char *by, const char *action,
                             const char *target, const char *detail);
/* The store's URL without its password, for logs. */
void dsc__ledger_redis_describe(const dsc_server *srv, char *out, size_t cap);

#endif
