/*
 * jobs.c - requests whose reply waits for the ledger's store (docs/internals.md,
 * "Durable replies must not block a worker").
 *
 * A handler that issues _async ledger calls turns its request into a job
 * (dsc__job_defer) and returns at once; the worker goes on reading and answering
 * other requests, so many records share one group commit. Each _async call gets a
 * completion slot as its done() user data. done() runs on the store's writer thread
 * (or inside the call): it only files the slot on the worker's completion list and
 * wakes the worker's loop. The worker then counts the job down and, when nothing
 * is outstanding, calls the job's finish() to pack the reply, and sends it.
 *
 * A connection with jobs outstanding outlives its socket: closing it releases the fd
 * and buffers, and the last job frees the rest (replies to a closed peer are
 * dropped).
 *
 *   job = dsc__job_defer(c, sizeof(my_job), finish);   in a handler (only the
 *                                                       dsc__job part is zeroed)
 *   dsc_ledger_settle(l, &req, &out, &(dsc_done){dsc__job_done, dsc__job_slot(job, 0)}, &err);
 *
 * A call can also wait for time instead of the store (dsc__job_delay_call, used by
 * auth for the turns of authlimit.c): its params are packed into the job, a one-shot
 * timer on the worker's loop completes the job's only slot, and finish() runs the
 * method again on the params unpacked, its result being the reply. The worker never
 * sleeps; a draining worker waits for these jobs like any other (their delays are
 * shorter than the drain deadline).
 *
 * A finished job's block goes back to its worker's job cache (one free list per job
 * size, bounded) and the next job of that size reuses it: a check or settle then
 * costs no malloc/free pair of a block of tens of KiB. Jobs are created and freed on
 * their worker's thread only, so the cache needs no lock.
 */
#include "conn.h"

#include <stdlib.h>
#include <string.h>

/* The cache list for size: its own, else a free one; NULL when all are taken. */
static dsc__job_cache *cache_for(dsc__worker *w, size_t size) {
    dsc__job_cache *free_slot = NULL;
    for (int i = 0; i < DSC__JOB_CACHE_SIZES; i++) {
        if (w->job_cache[i].size == size) return &w->job_cache[i];
        if (!free_slot && w->job_cache[i].n == 0) free_slot = &w->job_cache[i];
    }
    if (free_slot) free_slot->size = size;
    return free_slot;
}

static void *job_alloc(dsc__worker *w, size_t size) {
    dsc__job_cache *k = cache_for(w, size);
    if (!k || !k->head) return malloc(size);
    void *p = k->head;
    memcpy(&k->head, p, sizeof k->head);
    k->n--;
    return p;
}

static void job_release(dsc__job *job) {
    dsc__job_cache *k = cache_for(job->w, job->size);
    if (!k || k->n == DSC__JOB_CACHE_MAX) {
        free(job);
        return;
    }
    memcpy((void *)job, &k->head, sizeof k->head);
    k->head = job;
    k->n++;
}

void dsc__jobs_cache_free(dsc__worker *w) {
    for (int i = 0; i < DSC__JOB_CACHE_SIZES; i++) {
        dsc__job_cache *k = &w->job_cache[i];
        while (k->head) {
            void *p = k->head;
            memcpy(&k->head, p, sizeof k->head);
            free(p);
        }
        k->n = 0;
    }
}

dsc__job *dsc__job_defer(dsc__call *c, size_t size, dsc__job_finish_fn finish) {
    /* Only the header is cleared: a handler's own part can be tens of KiB, mostly
     * never touched, and zeroing it costs page faults on every request. */
    dsc__job *job = job_alloc(c->w, size);
    if (!job) return NULL;
    memset(job, 0, sizeof *job);
    job->size = size;
    job->conn = c->conn;
    job->w = c->w;
    job->msgid = c->msgid;
    job->is_request = c->is_request;
    job->finish = finish;
    job->started_us = dsc__now_us();
    for (int i = 0; i < DSC__JOB_SLOTS; i++)
        job->slots[i].job = job;
    c->deferred = job;
    return job;
}

void *dsc__job_slot(dsc__job *job, int i) {
    job->waiting++;
    job->slots[i].issued_us = dsc__now_us();
    return &job->slots[i];
}

void dsc__job_unslot(dsc__job *job) {
    job->waiting--;
}

/* done() of every _async ledger call: any thread, hands over and returns. */
void dsc__job_done(void *ud, dsc_status st, const dsc_error *err) {
    dsc__job_slot_t *slot = ud;
    dsc__worker *w = slot->job->w;
    slot->st = st;
    if (st != DSC_OK && err)
        slot->err = *err;
    else
        dsc_error_clear(&slot->err);
    pthread_mutex_lock(&w->lock);
    slot->next = w->completed;
    w->completed = slot;
    pthread_mutex_unlock(&w->lock);
    event_active(w->notify, EV_READ, 0);
}

/* Pack the job's reply into its connection; a notification's, or one whose peer is
 * gone, is packed into a scratch buffer and dropped (finish still counts it). */
static void reply(dsc__job *job) {
    dsc__conn *conn = job->conn;
    bool deliver = (conn->fd >= 0 || conn->http) && job->is_request;
    msgpack_sbuffer scratch;
    msgpack_sbuffer_init(&scratch);
    if (deliver) dsc__conn_out_ready(conn);
    msgpack_sbuffer *out = deliver ? &conn->out : &scratch;
    msgpack_packer pk;
    dsc_rpc_out o = {out, SIZE_MAX, false};
    msgpack_packer_init(&pk, &o, dsc_rpc_out_write);
    size_t mark = out->size;
    dsc_error err;
    dsc_error_clear(&err);
    dsc_rpc_pack_result_begin(&pk, job->msgid);
    dsc_status st = job->finish(job, job->st, &job->err, &pk, &err);
    if (st == DSC_OK && o.failed)
        st = dsc_error_set(&err, DSC_NOMEM, "out of memory packing the reply");
    if (st != DSC_OK) {
        out->size = mark;
        o.failed = false;
        if (err.code == DSC_OK) dsc_error_set(&err, st, "%s", dsc_status_message(st));
        atomic_fetch_add_explicit(&job->w->counters.errors, 1, memory_order_relaxed);
        dsc_rpc_pack_error(&pk, job->msgid, &err);
        if (deliver) dsc__conn_out_check(conn, &o, mark);
    }
    msgpack_sbuffer_destroy(&scratch);
}

void dsc__job_finish_now(dsc__job *job) {
    reply(job);
    job_release(job);
}

/* Reply, free the job, and queue its connection for one send after the batch of
 * completions (a commit finishes many jobs of one connection at once). */
static void complete(dsc__job *job) {
    dsc__conn *conn = job->conn;
    dsc__worker *w = job->w;
    reply(job);
    conn->jobs--;
    w->jobs--;
    job_release(job);
    if (!conn->flush_queued) {
        conn->flush_queued = true;
        conn->flush_next = w->flush_list;
        w->flush_list = conn;
    }
}

void dsc__jobs_run_completed(dsc__worker *w) {
    pthread_mutex_lock(&w->lock);
    dsc__job_slot_t *list = w->completed;
    w->completed = NULL;
    pthread_mutex_unlock(&w->lock);
    int64_t now = dsc__now_us();
    while (list) {
        dsc__job_slot_t *slot = list;
        list = slot->next;
        dsc__job *job = slot->job;
        dsc__count_store(w, now - slot->issued_us);
        if (slot->st != DSC_OK && job->st == DSC_OK) {
            job->st = slot->st;
            job->err = slot->err;
        }
        if (--job->waiting == 0) complete(job);
    }
    while (w->flush_list) {
        dsc__conn *conn = w->flush_list;
        w->flush_list = conn->flush_next;
        conn->flush_queued = false;
        dsc__conn_after_job(conn);
    }
}

/* ------------------------------------------------------------- delayed calls -- */

typedef struct delayed {
    dsc__job job;
    dsc__method_fn fn;
    msgpack_sbuffer params; /* the params map, packed */
} delayed;

static void on_delay(evutil_socket_t fd, short what, void *slot) {
    (void)fd;
    (void)what;
    dsc__job_done(slot, DSC_OK, NULL);
}

static dsc_status finish_delayed(dsc__job *job, dsc_status st, const dsc_error *st_err,
                                 msgpack_packer *pk, dsc_error *err) {
    delayed *d = (delayed *)job;
    if (st != DSC_OK) *err = *st_err;
    msgpack_zone zone;
    msgpack_object params;
    if (st == DSC_OK && !msgpack_zone_init(&zone, 1024))
        st = dsc_error_set(err, DSC_NOMEM, "out of memory replaying a delayed call");
    else if (st == DSC_OK) {
        st = dsc_rpc_decode((const uint8_t *)d->params.data, d->params.size, &zone, &params);
        dsc__call c = {.conn = job->conn,
                       .role = job->conn->role,
                       .srv = job->w->srv,
                       .w = job->w,
                       .msgid = job->msgid,
                       .is_request = job->is_request,
                       .replayed = true,
                       .key_id = ""};
        if (st == DSC_OK) st = d->fn(&c, &params, pk, err);
        msgpack_zone_destroy(&zone);
    }
    msgpack_sbuffer_destroy(&d->params);
    return st;
}

dsc_status dsc__job_delay_call(dsc__call *c, const msgpack_object *params, dsc__method_fn fn,
                               int64_t delay_us, dsc_error *err) {
    msgpack_sbuffer packed;
    msgpack_sbuffer_init(&packed);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &packed, msgpack_sbuffer_write);
    if (msgpack_pack_object(&pk, *params) != 0 || packed.size > DSC__JOB_DELAY_PARAMS_MAX) {
        bool big = packed.size > DSC__JOB_DELAY_PARAMS_MAX;
        msgpack_sbuffer_destroy(&packed);
        return big ? dsc_error_set(err, DSC_TOO_LARGE, "params: over %d bytes packed",
                                   DSC__JOB_DELAY_PARAMS_MAX)
                   : dsc_error_set(err, DSC_NOMEM, "out of memory delaying a call");
    }
    delayed *d = (delayed *)dsc__job_defer(c, sizeof *d, finish_delayed);
    if (!d) {
        msgpack_sbuffer_destroy(&packed);
        return dsc_error_set(err, DSC_NOMEM, "out of memory delaying a call");
    }
    d->fn = fn;
    d->params = packed;
    struct timeval tv = {(time_t)(delay_us / 1000000), (suseconds_t)(delay_us % 1000000)};
    if (event_base_once(c->w->base, -1, EV_TIMEOUT, on_delay, dsc__job_slot(&d->job, 0), &tv) !=
        0) {
        dsc__job_unslot(&d->job);
        msgpack_sbuffer_destroy(&d->params);
        d->params = (msgpack_sbuffer){0};
        return dsc_error_set(err, DSC_INTERNAL, "cannot arm the timer of a delayed call");
    }
    return DSC_OK;
}
