/*
 * ledger_reader.c - the ledger's reader thread: reads a new budget's past usage for
 * dsc_ledger_budget with a done, and recalls a forgotten reservation from the store for
 * dsc_ledger_settle or dsc_ledger_cancel with a done, so that neither the caller (a
 * server worker with other connections to serve) nor the store's writer (every
 * commit) waits for it, and nothing reads the store under the ledger's lock.
 *
 * Tasks are taken in order, one at a time: the budget's history is read from the
 * store's reader connection (dsc__budget_history_read), then its record is queued to
 * the store with the caller's completion, exactly as the blocking call would. The
 * thread starts on first use and, at dsc_ledger_free, finishes its queue before the
 * store closes.
 */
#define _GNU_SOURCE /* pthread_setname_np */
#include "ledger_internal.h"

#include <pthread.h>
#include <stdlib.h>

typedef struct task {
    struct task *next;
    dsc__rec *rec;       /* a new budget's record, or NULL: */
    dsc__recall *recall; /* a settle or cancel of a forgotten reservation */
    dsc__done done;
} task;

struct dsc__reader {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    pthread_t thread;
    task *head, *tail;
    bool stop;
};

static void run_task(dsc_ledger *l, task *t) {
    dsc_error err = {DSC_OK, ""};
    dsc_status st;
    t->done.queued = false;
    if (t->recall) {
        st = dsc__done_now(dsc__recall_run(l, t->recall, &t->done, &err), &t->done);
    } else {
        t->rec->u.budget.history = dsc__budget_history_read(l, &t->rec->u.budget);
        st = dsc__budget_persist(l, t->rec, &t->done, &err);
    }
    if (st != DSC_OK && t->done.fn) t->done.fn(t->done.ud, st, &err); /* done runs once */
    free(t->recall);
    free(t);
}

static void *reader_main(void *arg) {
    dsc_ledger *l = arg;
    dsc__reader *r = l->reader;
    pthread_mutex_lock(&r->mu);
    for (;;) {
        while (!r->head && !r->stop)
            pthread_cond_wait(&r->cv, &r->mu);
        task *t = r->head;
        if (!t) break; /* stopping, with nothing left */
        r->head = t->next;
        if (!r->head) r->tail = NULL;
        pthread_mutex_unlock(&r->mu);
        run_task(l, t);
        pthread_mutex_lock(&r->mu);
    }
    pthread_mutex_unlock(&r->mu);
    return NULL;
}

/* The reader, started on first use (reader_mu held). */
static dsc__reader *reader_get(dsc_ledger *l) {
    if (l->reader) return l->reader;
    dsc__reader *r = calloc(1, sizeof *r);
    if (!r) return NULL;
    pthread_mutex_init(&r->mu, NULL);
    pthread_cond_init(&r->cv, NULL);
    l->reader = r;
    if (pthread_create(&r->thread, NULL, reader_main, l) != 0) {
        pthread_mutex_destroy(&r->mu);
        pthread_cond_destroy(&r->cv);
        free(r);
        l->reader = NULL;
        return NULL;
    }
    pthread_setname_np(r->thread, "dsc-reader"); /* a name only: failure is harmless */
    return r;
}

static dsc_status submit(dsc_ledger *l, task *t) {
    pthread_mutex_lock(&l->reader_mu);
    dsc__reader *r = reader_get(l);
    pthread_mutex_unlock(&l->reader_mu);
    if (!r) {
        free(t);
        return DSC_INTERNAL;
    }
    pthread_mutex_lock(&r->mu);
    *(r->tail ? &r->tail->next : &r->head) = t;
    r->tail = t;
    pthread_cond_signal(&r->cv);
    pthread_mutex_unlock(&r->mu);
    return DSC_OK;
}

dsc_status dsc__reader_submit(dsc_ledger *l, dsc__rec *rec, const dsc__done *done) {
    task *t = calloc(1, sizeof *t);
    if (!t) return DSC_NOMEM;
    t->rec = rec;
    t->done = *done;
    return submit(l, t);
}

dsc_status dsc__reader_recall(dsc_ledger *l, const dsc__recall *rc, const dsc__done *done) {
    task *t = calloc(1, sizeof *t);
    dsc__recall *copy = malloc(sizeof *copy);
    if (!t || !copy) {
        free(t);
        free(copy);
        return DSC_NOMEM;
    }
    *copy = *rc;
    t->recall = copy;
    t->done = *done;
    dsc_status st = submit(l, t);
    if (st != DSC_OK) free(copy); /* submit freed t */
    return st;
}

void dsc__reader_stop(dsc_ledger *l) {
    dsc__reader *r = l->reader;
    if (!r) return;
    pthread_mutex_lock(&r->mu);
    r->stop = true;
    pthread_cond_signal(&r->cv);
    pthread_mutex_unlock(&r->mu);
    pthread_join(r->thread, NULL);
    pthread_mutex_destroy(&r->mu);
    pthread_cond_destroy(&r->cv);
    free(r);
    l->reader = NULL;
}
