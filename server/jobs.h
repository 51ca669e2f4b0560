/*
 * jobs.h - requests that wait for the store (jobs.c): a job per deferred call, its
 * completion slots, and the worker's cache of finished job blocks.
 */
#ifndef DISCERN_SERVER_JOBS_H
#define DISCERN_SERVER_JOBS_H

#include "discern/status.h"

#include <msgpack.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct dsc__worker dsc__worker;
typedef struct dsc__job dsc__job;
typedef struct dsc__conn dsc__conn;
typedef struct dsc__call dsc__call;

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

#endif
