/*
 * ledger.c - the reserve -> settle -> cancel protocol over budgets (see ledger.h).
 *
 * No lock is common to calls on disjoint counters. Which lock guards what, in the
 * order they are taken (a thread holding one may take only those below it):
 *
 *   1. a shard's mu (DSC__SHARDS of them; one at a time, but for a budget change):
 *      its reservations and request ids, expiry heap, finished list, stats, its
 *      cache of counters, and every field of the reservations in it. An id names its
 *      shard (its last hex digit): a hold taken for a request_id goes to that
 *      request's shard, any other to the shard of the CPU the caller runs on, so
 *      threads on different cores do not meet there. The budgets (selectors, the
 *      live and dead lists, limits, the epoch) are read under any one shard's lock
 *      and changed only under all of them, taken in index order (dsc__budgets_write):
 *      a budget changes rarely, and the hot path then takes no lock for it at all.
 *   2. journal_mu (with a store only): a new hold's id order is taken, the hold
 *      indexed and its record queued in one step, so ids reach the log in the order
 *      of their counters whatever the threads (lost_hold and the store's search for
 *      a forgotten hold count on it). The store's queue lock, taken inside it,
 *      serialises every record anyway.
 *   3. a shard of the counters' index (cmap, by the hash of a counter's key), then
 *      counters_new_mu while a new counter joins its budget's list. Only a shard's
 *      first use of a counter comes here: it then caches it (at most
 *      DSC__SHARD_CACHE_MAX; a full cache starts afresh).
 *   4. a counter's lock: its holds and window. The counters share DSC__COUNTER_LOCKS
 *      mutexes, a counter's picked by a hash of its address (dsc__counter_lock_of),
 *      rather than one each (40 bytes in every counter). A reserve locks the locks of
 *      every counter of its subject, sorted by index and each once, so the
 *      all-or-nothing check over every matching budget and the holds it takes are
 *      atomic and two reserves never deadlock; everything else locks one counter at a
 *      time (never two: they may share a lock), releasing a hold and charging its
 *      usage in one step (dsc__reservation_release_charge) so no reserve sees a
 *      counter between the two.
 *   5. the store's own queue lock (dsc__store_enqueue), innermost; the writer calls
 *      dsc__ledger_apply holding none of its locks, and no store is ever read under
 *      any of these (the reader thread and the blocking calls read it unlocked).
 *
 * reader_mu only starts the reader thread and nests with nothing. The shards' stats
 * are summed by dsc_ledger_stats_get; expire_all reads each shard's earliest expiry
 * from an atomic and locks only the shards with a hold due.
 *
 * A reservation moves HELD -> SETTLING -> SETTLED (or CANCELLING -> CANCELLED,
 * EXPIRING -> EXPIRED/RELEASED). The -ING states mean "written to the store, not
 * committed yet": the hold stays on the counters until the commit, and usage reaches
 * the counters only after it (ledger_store.c applies it), so memory never runs
 * ahead of what is durable. Without a store, the same transitions happen at once.
 * A new hold is the exception: it is acknowledged once its record is queued (the
 * settle's commit makes it durable, the log being ordered), and a hold lost in a
 * crash before that commit is charged by its settle as unreserved usage.
 *
 * Expiry uses a min-heap on expires_us per shard; finished reservations stay on a
 * FIFO list per shard for retain_s (at most retain_max of them in all, the oldest of
 * a shard above its even share forgotten first) so that repeated settles and reserves get the same
 * answer; with a store, older ones are looked up there.
 */
#define _GNU_SOURCE /* sched_getcpu */
#include "ledger_internal.h"

#include "discern/random.h"

#include <ctype.h>
#include <math.h>
#include <sched.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* --- metrics and amounts ------------------------------------------------------ */

static const char *const metric_names[] = {
#define DSC_METRIC_NAME(name, wire, unit) wire,
    DSC_METRIC_MAP(DSC_METRIC_NAME)
#undef DSC_METRIC_NAME
};
static const char *const metric_units[] = {
#define DSC_METRIC_UNIT(name, wire, unit) unit,
    DSC_METRIC_MAP(DSC_METRIC_UNIT)
#undef DSC_METRIC_UNIT
};

const char *dsc_metric_name(dsc_metric m) {
    return (unsigned)m < DSC_METRIC_COUNT ? metric_names[m] : NULL;
}

const char *dsc_metric_unit(dsc_metric m) {
    return (unsigned)m < DSC_METRIC_COUNT ? metric_units[m] : NULL;
}

dsc_status dsc_metric_parse(const char *name, dsc_metric *out) {
    for (int i = 0; name && i < DSC_METRIC_COUNT; i++)
        if (strcmp(name, metric_names[i]) == 0) {
            *out = (dsc_metric)i;
            return DSC_OK;
        }
    return DSC_UNKNOWN_METRIC;
}

static int64_t to_micro(double v) {
    return v > 0 ? llround(v * 1e6) : 0;
}

void dsc_amounts_from_estimate(const dsc_estimate *est, int64_t input_tokens, int64_t output_tokens,
                               int64_t cost_micro, dsc_amounts *out) {
    memset(out, 0, sizeof *out);
    if (est) {
        out->v[DSC_METRIC_ENERGY_WH] = to_micro(est->total.energy_kwh.max * 1e3);
        out->v[DSC_METRIC_GCO2E] = to_micro(est->total.gwp_kgco2eq.max * 1e3);
        out->v[DSC_METRIC_WATER_ML] = to_micro(est->total.wcf_l.max * 1e3);
        out->v[DSC_METRIC_PE_MJ] = to_micro(est->total.pe_mj.max);
    }
    int64_t tokens =
        (input_tokens > 0 ? input_tokens : 0) + (output_tokens > 0 ? output_tokens : 0);
    out->v[DSC_METRIC_TOKENS] = tokens * DSC_MICRO;
    out->v[DSC_METRIC_REQUESTS] = DSC_MICRO;
    out->v[DSC_METRIC_COST] = cost_micro > 0 ? cost_micro : 0;
}

dsc_status dsc_amount_from_api(const char *field, double v, int64_t *micro, dsc_error *err) {
    if (!isfinite(v) || v < 0 || v > DSC_AMOUNT_API_MAX)
        return dsc_error_set(err, DSC_BAD_REQUEST,
                             "field '%s': %g is not a number between 0 and %g", field, v,
                             DSC_AMOUNT_API_MAX);
    *micro = llround(v * 1e6);
    return DSC_OK;
}

double dsc_amount_to_api(int64_t micro) {
    return (double)micro / 1e6;
}

static dsc_status check_amounts(const char *what, const dsc_amounts *a, dsc_error *err) {
    for (int m = 0; m < DSC_METRIC_COUNT; m++)
        if (a->v[m] < 0 || a->v[m] > (int64_t)(DSC_AMOUNT_API_MAX * 1e6))
            return dsc_error_set(err, DSC_BAD_REQUEST, "field '%s.%s': %lld is out of range", what,
                                 metric_names[m], (long long)a->v[m]);
    return DSC_OK;
}

static dsc_status check_subject(const dsc_subject *s, dsc_error *err) {
    dsc_status st;
    if ((st = dsc__check_name("org", s->org, err)) != DSC_OK) return st;
    if ((st = dsc__check_name("team", s->team, err)) != DSC_OK) return st;
    if ((st = dsc__check_name("user", s->user, err)) != DSC_OK) return st;
    return dsc__check_name("key", s->key, err);
}

static dsc_status check_id(const char *field, const char *id, size_t max, dsc_error *err) {
    if (!id || !*id) return dsc_error_set(err, DSC_BAD_REQUEST, "field '%s' is missing", field);
    if (strlen(id) >= max)
        return dsc_error_set(err, DSC_BAD_REQUEST, "field '%s': longer than %zu characters", field,
                             max - 1);
    return DSC_OK;
}

/* --- clock, heap, reservations ----------------------------------------------- */

/* Copy s into a fixed field, truncating (snprintf is too slow for the hot path). */
static void copy_str(char *dst, size_t max, const char *s) {
    size_t n = strlen(s);
    if (n >= max) n = max - 1;
    memcpy(dst, s, n);
    dst[n] = '\0';
}

static int64_t realtime_us(void *ud) {
    (void)ud;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

int64_t dsc__ledger_now(dsc_ledger *l) {
    return l->now_us(l->clock_ud);
}

/* --- shards ------------------------------------------------------------------- */

#define RID_RANDOM_BYTES 12 /* 96 bits: an id cannot be guessed */
#define RID_ORDER_HEX 12    /* then a counter seeded from the clock, in front */
#define RID_LEN (1 + RID_ORDER_HEX + 2 * RID_RANDOM_BYTES)
#define RID_ORDER_MASK ((UINT64_C(1) << (4 * RID_ORDER_HEX)) - 1)
#define RID_ORDER_HALF (UINT64_C(1) << (4 * RID_ORDER_HEX - 1))
#define HOLD_TTL_MAX_S (7 * 86400) /* the longest a hold may live */

static bool rid_order(const char *id, uint64_t *out);

/* An entry of l->moved: the key is its own copy of the id. */
typedef struct moved_id {
    size_t shard;
    char id[];
} moved_id;

static int hex_value(char c) {
    return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

/* The shard of id: for an id of the ledger's shape, its last hex digit (a new id's is
 * set to its shard: see new_rid); for one loaded from a store written before that
 * whose request id chose another shard, the one recorded at open; for any other id
 * (an unreserved settle's own), a hash of it. */
dsc__shard *dsc__shard_of(dsc_ledger *l, const char *id) {
    if (l->moved.len) {
        const moved_id *m = dsc__strmap_get(&l->moved, id);
        if (m) return &l->shards[m->shard];
    }
    size_t n = strlen(id);
    if (n == RID_LEN && id[0] == 'r' && hex_value(id[n - 1]) >= 0)
        return &l->shards[hex_value(id[n - 1]) & (DSC__SHARDS - 1)];
    return &l->shards[dsc__strmap_hash(id) & (DSC__SHARDS - 1)];
}

dsc__shard *dsc__shard_here(dsc_ledger *l) {
    int cpu = sched_getcpu(); /* from the vDSO: a few ns */
    return &l->shards[(cpu < 0 ? 0 : (unsigned)cpu) & (DSC__SHARDS - 1)];
}

void dsc__budgets_write(dsc_ledger *l) {
    for (size_t i = 0; i < DSC__SHARDS; i++)
        pthread_mutex_lock(&l->shards[i].mu);
}

void dsc__budgets_done(dsc_ledger *l) {
    for (size_t i = DSC__SHARDS; i-- > 0;)
        pthread_mutex_unlock(&l->shards[i].mu);
}

/* The shard a new hold for request_id goes to (its request map entry is there too). */
static dsc__shard *request_shard(dsc_ledger *l, const char *request_id) {
    return &l->shards[dsc__strmap_hash(request_id) & (DSC__SHARDS - 1)];
}

/* The reservation id in its shard, which the caller holds locked; NULL when absent. */
static dsc__reservation *shard_find(dsc__shard *sh, const char *id) {
    return dsc__strmap_get(&sh->reservations, id);
}

/* --- heap ---------------------------------------------------------------------- */

static void heap_set(dsc__shard *sh, size_t i, dsc__reservation *r) {
    sh->heap[i] = r;
    r->heap_idx = i;
}

static void heap_up(dsc__shard *sh, size_t i) {
    dsc__reservation *r = sh->heap[i];
    while (i > 0 && sh->heap[(i - 1) / 2]->expires_us > r->expires_us) {
        heap_set(sh, i, sh->heap[(i - 1) / 2]);
        i = (i - 1) / 2;
    }
    heap_set(sh, i, r);
}

static void heap_down(dsc__shard *sh, size_t i) {
    dsc__reservation *r = sh->heap[i];
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= sh->heap_n) break;
        if (c + 1 < sh->heap_n && sh->heap[c + 1]->expires_us < sh->heap[c]->expires_us) c++;
        if (sh->heap[c]->expires_us >= r->expires_us) break;
        heap_set(sh, i, sh->heap[c]);
        i = c;
    }
    heap_set(sh, i, r);
}

/* Publish the heap's earliest expiry for the lock-free look of expire_all. */
static void heap_publish(dsc__shard *sh) {
    atomic_store_explicit(&sh->next_expiry, sh->heap_n ? sh->heap[0]->expires_us : INT64_MAX,
                          memory_order_relaxed);
}

dsc_status dsc__heap_push(dsc_ledger *l, dsc__reservation *r) {
    (void)l;
    dsc__shard *sh = r->shard;
    if (sh->heap_n == sh->heap_cap) {
        size_t cap = sh->heap_cap ? sh->heap_cap * 2 : 256;
        dsc__reservation **h = realloc(sh->heap, cap * sizeof *h);
        if (!h) return DSC_NOMEM;
        sh->heap = h;
        sh->heap_cap = cap;
    }
    sh->heap[sh->heap_n++] = r;
    heap_up(sh, sh->heap_n - 1);
    heap_publish(sh);
    return DSC_OK;
}

void dsc__heap_remove(dsc_ledger *l, dsc__reservation *r) {
    (void)l;
    dsc__shard *sh = r->shard;
    size_t i = r->heap_idx;
    if (i == SIZE_MAX) return;
    r->heap_idx = SIZE_MAX;
    dsc__reservation *last = sh->heap[--sh->heap_n];
    if (i != sh->heap_n) {
        heap_set(sh, i, last);
        heap_up(sh, i);
        heap_down(sh, last->heap_idx);
    }
    heap_publish(sh);
}

/* --- reservations ---------------------------------------------------------------- */

/* The bytes s takes in a reservation's tail: at most max - 1 characters and a NUL
 * ("" for NULL). */
static size_t str_size(const char *s, size_t max) {
    return s && *s ? strnlen(s, max - 1) + 1 : 1;
}

static const char *put_str(char **tail, const char *s, size_t max) {
    char *start = *tail;
    size_t n = str_size(s, max);
    if (n > 1) memcpy(start, s, n - 1);
    start[n - 1] = '\0';
    *tail += n;
    return start;
}

dsc__reservation *dsc__reservation_new(const char *id, const char *request_id, const dsc_subject *s,
                                       const dsc__hold_what *what, const dsc__hit *hits, size_t n) {
    dsc__hold_what none = {0};
    const dsc__hold_what *w = what ? what : &none;
    const size_t m = DSC_NAME_MAX, u = SIZE_MAX; /* the ids were kept to a name's length */
    size_t strs = str_size(request_id, m) + str_size(w->owner, m) + str_size(s->org, u) +
                  str_size(s->team, u) + str_size(s->user, u) + str_size(s->key, u) +
                  str_size(w->provider, u) + str_size(w->model, u) + str_size(w->zone, u) +
                  str_size(w->purpose, u);
    dsc__reservation *r = calloc(1, sizeof *r + n * sizeof r->counters[0] + strs);
    if (!r) return NULL;
    copy_str(r->id, sizeof r->id, id);
    r->heap_idx = SIZE_MAX;
    r->n = n;
    for (size_t i = 0; i < n; i++)
        r->counters[i] = hits[i].c;
    char *tail = (char *)&r->counters[n];
    r->request_id = put_str(&tail, request_id, m);
    r->owner = put_str(&tail, w->owner, m);
    r->org = put_str(&tail, s->org, u);
    r->team = put_str(&tail, s->team, u);
    r->user = put_str(&tail, s->user, u);
    r->key = put_str(&tail, s->key, u);
    r->provider = put_str(&tail, w->provider, u);
    r->model = put_str(&tail, w->model, u);
    r->zone = put_str(&tail, w->zone, u);
    r->purpose = put_str(&tail, w->purpose, u);
    return r;
}

dsc_status dsc__reservation_index(dsc_ledger *l, dsc__reservation *r) {
    dsc__shard *sh = r->shard ? r->shard : dsc__shard_of(l, r->id);
    r->shard = sh;
    r->epoch = l->budget_epoch; /* every reservation is indexed right after matching */
    if (dsc__strmap_put(&sh->reservations, r->id, r) != DSC_OK) return DSC_NOMEM;
    sh->n_reservations++;
    if (!r->request_id[0] || dsc__strmap_get(&sh->requests, r->request_id)) return DSC_OK;
    if (dsc__strmap_put(&sh->requests, r->request_id, r) == DSC_OK) return DSC_OK;
    dsc__strmap_del(&sh->reservations, r->id);
    sh->n_reservations--;
    return DSC_NOMEM;
}

/* a + b, held at the int64 range: a store file edited by hand can hold any counter
 * value, and no sum of them may overflow (the fuzzer's store target found one). */
static int64_t sat_add(int64_t a, int64_t b) {
    int64_t r;
    if (!__builtin_add_overflow(a, b, &r)) return r;
    return b > 0 ? INT64_MAX : INT64_MIN;
}

/* a - b, held at the int64 range. */
static int64_t sat_sub(int64_t a, int64_t b) {
    int64_t r;
    if (!__builtin_sub_overflow(a, b, &r)) return r;
    return b < 0 ? INT64_MAX : INT64_MIN;
}

size_t dsc__counter_lock_of(const dsc__counter *c) {
    uint64_t h = (uint64_t)(uintptr_t)c * 0x9E3779B97F4A7C15ull; /* Fibonacci hashing */
    return (size_t)(h >> 54) & (DSC__COUNTER_LOCKS - 1);         /* the top 10 bits */
}

void dsc__counter_lock(dsc_ledger *l, const dsc__counter *c) {
    pthread_mutex_lock(&l->counter_locks[dsc__counter_lock_of(c)].mu);
}

void dsc__counter_unlock(dsc_ledger *l, const dsc__counter *c) {
    pthread_mutex_unlock(&l->counter_locks[dsc__counter_lock_of(c)].mu);
}

/* Add (sign +1) or remove (-1) v on c's holds (c's lock held). */
static void counter_hold(dsc__counter *c, int64_t v, int sign) {
    c->held = sign > 0 ? sat_add(c->held, v) : sat_sub(c->held, v);
}

void dsc__reservation_hold(dsc_ledger *l, dsc__reservation *r, int sign) {
    for (size_t i = 0; i < r->n; i++) {
        dsc__counter *c = r->counters[i];
        dsc__counter_lock(l, c);
        counter_hold(c, r->held.v[c->b->metric], sign);
        dsc__counter_unlock(l, c);
    }
}

/* Charge a to c at at_us (c's lock held). */
static void charge_counter(dsc_ledger *l, dsc__counter *c, const dsc_amounts *a, int64_t at_us) {
    int64_t v = a->v[c->b->metric];
    if (v) dsc_window_counter_add(&c->wc, &c->b->win, &l->tz, v, at_us);
}

static bool hits_have(const dsc__hit *hits, size_t n, const dsc__counter *c) {
    for (size_t i = 0; i < n; i++)
        if (hits[i].c == c) return true;
    return false;
}

/* Release r's holds (release) and charge a at at_us, each counter under its own lock
 * in one step, so that no reserve ever sees a counter with the hold gone and the
 * usage not there yet. Budgets changed since the hold: usage goes to the budgets
 * that apply now, as a restart would count it; on failure (out of memory), to those
 * of the hold. r's shard lock is held. */
void dsc__reservation_release_charge(dsc_ledger *l, dsc__reservation *r, bool release,
                                     const dsc_amounts *a, int64_t at_us) {
    dsc__hit hits[DSC__HITS_MAX];
    size_t nh = 0;
    dsc_subject s = {r->org, r->team, r->user, r->key};
    for (int m = 0; a && m < DSC_METRIC_COUNT; m++)
        r->charged.v[m] += a->v[m];
    bool moved = a && r->epoch != l->budget_epoch &&
                 dsc__match(l, r->shard, &s, true, hits, &nh, NULL) == DSC_OK;
    for (size_t i = 0; i < r->n; i++) {
        dsc__counter *c = r->counters[i];
        dsc__counter_lock(l, c);
        if (release) counter_hold(c, r->held.v[c->b->metric], -1);
        if (a && (!moved || hits_have(hits, nh, c))) charge_counter(l, c, a, at_us);
        dsc__counter_unlock(l, c);
    }
    for (size_t i = 0; moved && i < nh; i++) {
        bool done = false;
        for (size_t j = 0; j < r->n && !done; j++)
            done = r->counters[j] == hits[i].c;
        if (done) continue;
        dsc__counter_lock(l, hits[i].c);
        charge_counter(l, hits[i].c, a, at_us);
        dsc__counter_unlock(l, hits[i].c);
    }
}

static void finished_unlink(dsc__reservation *r) {
    dsc__shard *sh = r->shard;
    if (!r->finished_us) return;
    dsc__dlist_unlink(&sh->finished, &r->finished_link);
    r->finished_us = 0;
    atomic_store_explicit(&sh->n_finished, sh->n_finished - 1, memory_order_relaxed);
}

void dsc__reservation_finish(dsc_ledger *l, dsc__reservation *r, dsc__rstate st, int64_t at_us) {
    (void)l;
    dsc__shard *sh = r->shard;
    if (r->prev == RS_HELD || r->state == RS_HELD) sh->n_held--;
    r->state = st;
    finished_unlink(r);
    r->finished_us = at_us > 0 ? at_us : 1;
    dsc__dlist_append(&sh->finished, &r->finished_link);
    atomic_store_explicit(&sh->n_finished, sh->n_finished + 1, memory_order_relaxed);
}

void dsc__reservation_drop(dsc_ledger *l, dsc__reservation *r) {
    dsc__shard *sh = r->shard;
    dsc__heap_remove(l, r);
    finished_unlink(r);
    if (dsc__strmap_del_if(&sh->reservations, r->id, r)) sh->n_reservations--;
    if (r->request_id[0]) dsc__strmap_del_if(&sh->requests, r->request_id, r);
    free(r);
}

/* Whether the ledger keeps more than retain_max finished reservations, sh more than
 * its even share of them: only then are the other shards' counts summed (a relaxed
 * read each, so the bound may be passed by the few finishing meanwhile). */
static bool too_many_finished(dsc_ledger *l, dsc__shard *sh) {
    size_t mine = atomic_load_explicit(&sh->n_finished, memory_order_relaxed);
    if (mine <= l->retain_max / DSC__SHARDS) return false;
    size_t total = 0;
    for (size_t i = 0; i < DSC__SHARDS && total <= l->retain_max; i++)
        total += atomic_load_explicit(&l->shards[i].n_finished, memory_order_relaxed);
    return total > l->retain_max;
}

/* Forget sh's finished reservations older than retain_s, and its oldest while the
 * ledger keeps more than retain_max and sh more than its share (sh->mu held). */
static void forget_old(dsc_ledger *l, dsc__shard *sh, int64_t now) {
    dsc__reservation *r;
    while ((r = DSC__DLIST_ENTRY(sh->finished.head, dsc__reservation, finished_link)) &&
           (r->finished_us < now - l->retain_us || too_many_finished(l, sh)))
        dsc__reservation_drop(l, r);
}

/* --- expiry ------------------------------------------------------------------ */

/* (sh->mu held) */
static bool expire_one(dsc_ledger *l, dsc__reservation *r, int64_t now) {
    dsc_amounts charge = {{0}};
    if (l->expired == DSC_EXPIRED_CHARGE) charge = r->held;
    dsc__heap_remove(l, r);
    r->prev = r->state;
    r->state = RS_EXPIRING;
    if (!l->store) {
        dsc__apply_expire(l, r, &charge, now, true);
        return true;
    }
    dsc__rec *rec = dsc__rec_for(DSC__REC_EXPIRE, r, now);
    if (rec) {
        rec->amounts = charge;
        rec->charge_kind = l->expired == DSC_EXPIRED_CHARGE ? "expire" : NULL;
        rec->state = l->expired == DSC_EXPIRED_CHARGE ? "expired" : "released";
    }
    if (!rec || dsc__store_enqueue(l->store, rec, false) != DSC_OK) {
        r->state = r->prev; /* retried at the next tick */
        dsc__heap_push(l, r);
        return false;
    }
    return true;
}

/* Expire what is due in sh (sh->mu held). */
static size_t expire_due(dsc_ledger *l, dsc__shard *sh, int64_t now) {
    size_t n = 0;
    while (sh->heap_n && sh->heap[0]->expires_us <= now) {
        if (!expire_one(l, sh->heap[0], now)) break;
        n++;
    }
    return n;
}

/* Expire what is due in every shard (no shard lock held): a shard whose
 * earliest expiry is still to come is skipped without taking its lock, so a reserve
 * normally looks at DSC__SHARDS atomics and locks nothing here. */
static size_t expire_all(dsc_ledger *l, int64_t now) {
    size_t n = 0;
    for (size_t i = 0; i < DSC__SHARDS; i++) {
        dsc__shard *sh = &l->shards[i];
        if (atomic_load_explicit(&sh->next_expiry, memory_order_relaxed) > now) continue;
        pthread_mutex_lock(&sh->mu);
        n += expire_due(l, sh, now);
        pthread_mutex_unlock(&sh->mu);
    }
    return n;
}

/* --- ids a crash may have lost ------------------------------------------------- */

/* Whether order a comes after b on the counter's 48-bit circle (it wraps every
 * 8.9 years of microseconds: half the circle either way is "after" or "before"). */
static bool order_after(uint64_t a, uint64_t b) {
    uint64_t d = (a - b) & RID_ORDER_MASK;
    return d != 0 && d < RID_ORDER_HALF;
}

/* The order counter of an id of the current shape; false for any other id. */
static bool rid_order(const char *id, uint64_t *out) {
    if (strlen(id) != RID_LEN || !dsc__ledger_made(id)) return false;
    uint64_t v = 0;
    for (int i = 1; i <= RID_ORDER_HEX; i++)
        v = v << 4 | (uint64_t)(isdigit((unsigned char)id[i]) ? id[i] - '0' : id[i] - 'a' + 10);
    *out = v;
    return true;
}

/* A loaded r whose request id's shard is not its id's (written before ids named their
 * shard) goes to the request's shard, and l->moved says so. */
static dsc_status place_loaded(dsc_ledger *l, dsc__reservation *r) {
    if (!r->request_id[0]) return DSC_OK;
    dsc__shard *sh = request_shard(l, r->request_id);
    if (dsc__shard_of(l, r->id) == sh) return DSC_OK;
    moved_id *m = malloc(sizeof *m + strlen(r->id) + 1);
    if (!m) return DSC_NOMEM;
    m->shard = (size_t)(sh - l->shards);
    strcpy(m->id, r->id);
    if (dsc__strmap_put(&l->moved, m->id, m) != DSC_OK) {
        free(m);
        return DSC_NOMEM;
    }
    r->shard = sh;
    return DSC_OK;
}

static void free_moved(void *val, void *ud) {
    (void)ud;
    free(val);
}

static void moved_free(dsc_ledger *l) {
    dsc__strmap_each(&l->moved, free_moved, NULL);
    dsc__strmap_destroy(&l->moved);
}

dsc_status dsc__ledger_loaded(dsc_ledger *l, dsc__reservation *r) {
    uint64_t v;
    if (rid_order(r->id, &v)) {
        if (!l->have_durable_rid || order_after(v, l->durable_rid)) l->durable_rid = v;
        l->have_durable_rid = true;
    }
    return place_loaded(l, r);
}

/* After the store is loaded: this ledger's ids start after every stored one (also
 * when the clock went back), and the ids between the newest stored one and the
 * first of this run are the ones a crash can have lost. A check is acknowledged once
 * its hold is queued (journal_reserve), its id's order taken in the same step under
 * journal_mu, and the log is ordered, so a lost hold's id comes after every durable
 * one, also with holds taken on many threads at once; a previous run made it, so it
 * comes before ours. With no hold stored (none open, none finished within retain_s),
 * the gap reaches back as long as the longest hold lives (HOLD_TTL_MAX_S). */
static void lost_gap_open(dsc_ledger *l) {
    uint64_t start = atomic_load(&l->next_rid) & RID_ORDER_MASK;
    if (l->have_durable_rid && !order_after(start, l->durable_rid))
        start = (l->durable_rid + 1) & RID_ORDER_MASK;
    if (!l->have_durable_rid)
        l->durable_rid = (start - (uint64_t)HOLD_TTL_MAX_S * 1000000) & RID_ORDER_MASK;
    atomic_store(&l->next_rid, start);
    l->start_rid = start;
    l->lost_gap = true;
}

/* Whether id (which neither memory nor the store knows) can be a hold lost in a
 * crash: made by a ledger after the newest stored id and before this run's first.
 * Its settle is charged as unreserved usage; no hold of this run can ever have that
 * id, so a made-up one in the gap only charges the caller's own subject, like any
 * unreserved settle, and one outside it stays unknown. */
static bool lost_hold(const dsc_ledger *l, const char *id) {
    uint64_t v;
    return l->lost_gap && rid_order(id, &v) && order_after(v, l->durable_rid) &&
           order_after(l->start_rid, v);
}

/* --- lifecycle ---------------------------------------------------------------- */

static dsc_status config_apply(dsc_ledger *l, const dsc_ledger_config *cfg, dsc_error *err) {
    if ((unsigned)cfg->durability > DSC_DURABILITY_OFF)
        return dsc_error_set(err, DSC_BAD_REQUEST,
                             "field 'durability': %d is not full, batch "
                             "or off",
                             (int)cfg->durability);
    if ((unsigned)cfg->expired > DSC_EXPIRED_RELEASE)
        return dsc_error_set(err, DSC_BAD_REQUEST,
                             "field 'expired': %d is not charge or "
                             "release",
                             (int)cfg->expired);
    if (cfg->batch_ms < 0 || cfg->retain_s < 0)
        return dsc_error_set(err, DSC_BAD_REQUEST,
                             "fields 'batch_ms' and 'retain_s' must be "
                             ">= 0");
    l->durability = cfg->durability;
    l->expired = cfg->expired;
    l->now_us = cfg->now_us ? cfg->now_us : realtime_us;
    l->clock_ud = cfg->clock_ud;
    l->retain_us = (cfg->retain_s ? cfg->retain_s : 600) * 1000000LL;
    l->retain_max = cfg->retain_max ? cfg->retain_max : 100000;
    return dsc_tz_parse(cfg->timezone, &l->tz, err);
}

/* The ledger's locks and shards, empty; false when a lock cannot be made (nothing is
 * left to destroy then). */
static bool locks_init(dsc_ledger *l) {
    int rc = pthread_mutex_init(&l->counters_new_mu, NULL);
    rc |= pthread_mutex_init(&l->reader_mu, NULL);
    rc |= pthread_mutex_init(&l->journal_mu, NULL);
    for (size_t i = 0; i < DSC__CMAP_SHARDS; i++) {
        rc |= pthread_mutex_init(&l->cmap[i].mu, NULL);
        dsc__strmap_init(&l->cmap[i].map);
    }
    for (size_t i = 0; i < DSC__COUNTER_LOCKS; i++)
        rc |= pthread_mutex_init(&l->counter_locks[i].mu, NULL);
    atomic_init(&l->next_rid, (uint64_t)dsc__ledger_now(l));
    for (size_t i = 0; i < DSC__SHARDS; i++) {
        dsc__shard *sh = &l->shards[i];
        rc |= pthread_mutex_init(&sh->mu, NULL);
        dsc__strmap_init(&sh->reservations);
        dsc__strmap_init(&sh->requests);
        dsc__strmap_init(&sh->counters);
        atomic_init(&sh->next_expiry, INT64_MAX);
    }
    return rc == 0; /* Linux's pthread inits with default attributes cannot fail */
}

static void locks_destroy(dsc_ledger *l) {
    for (size_t i = 0; i < DSC__SHARDS; i++) {
        dsc__shard *sh = &l->shards[i];
        dsc__strmap_destroy(&sh->reservations);
        dsc__strmap_destroy(&sh->requests);
        dsc__strmap_destroy(&sh->counters);
        free(sh->heap);
        pthread_mutex_destroy(&sh->mu);
    }
    for (size_t i = 0; i < DSC__CMAP_SHARDS; i++) {
        dsc__strmap_destroy(&l->cmap[i].map);
        pthread_mutex_destroy(&l->cmap[i].mu);
    }
    for (size_t i = 0; i < DSC__COUNTER_LOCKS; i++)
        pthread_mutex_destroy(&l->counter_locks[i].mu);
    pthread_mutex_destroy(&l->reader_mu);
    pthread_mutex_destroy(&l->journal_mu);
    pthread_mutex_destroy(&l->counters_new_mu);
}

dsc_ledger *dsc_ledger_new(const dsc_ledger_config *cfg, dsc_error *err) {
    dsc_ledger_config none = {0};
    if (!cfg) cfg = &none;
    dsc_ledger *l = calloc(1, sizeof *l);
    if (!l) {
        dsc_error_set(err, DSC_NOMEM, "out of memory allocating the ledger");
        return NULL;
    }
    dsc__strmap_init(&l->budgets);
    dsc__strmap_init(&l->sels);
    dsc__strmap_init(&l->moved);
    l->next_budget_id = 1;
    if (config_apply(l, cfg, err) != DSC_OK) {
        free(l);
        return NULL;
    }
    if (!locks_init(l)) {
        free(l);
        dsc_error_set(err, DSC_INTERNAL, "cannot create the ledger's locks");
        return NULL;
    }
    if (cfg->store_path) {
        if (dsc__ledger_store_open(l, cfg, err)) goto fail;
        lost_gap_open(l);
    }
    return l;
fail:
    dsc_ledger_free(l);
    return NULL;
}

static void free_reservation(void *val, void *ud) {
    (void)ud;
    free(val);
}

void dsc_ledger_free(dsc_ledger *l) {
    if (!l) return;
    dsc__reader_stop(l);        /* its last budgets go to the store's queue */
    dsc__store_close(l->store); /* drains the queue, applying the last batch */
    for (size_t i = 0; i < DSC__SHARDS; i++)
        dsc__strmap_each(&l->shards[i].reservations, free_reservation, NULL);
    dsc__budgets_free(l);
    dsc__strmap_destroy(&l->budgets);
    dsc__strmap_destroy(&l->sels);
    moved_free(l);
    locks_destroy(l);
    free(l);
}

/* --- preview and reserve ------------------------------------------------------ */

/* The state of budget h for s (h->c's lock held when locked, else taken here). */
static void fill_state(dsc_ledger *l, const dsc__hit *h, const dsc_subject *s, int64_t request,
                       int64_t now, bool locked, dsc_budget_state *out) {
    const dsc__budget *b = h->b;
    copy_str(out->selector, sizeof out->selector, b->selector);
    copy_str(out->window, sizeof out->window, b->window_text);
    if (h->c) {
        copy_str(out->counter, sizeof out->counter, h->c->key + h->c->name_off);
    } else {
        char key[DSC__COUNTER_KEY_MAX];
        size_t off = dsc__counter_key(b, s, key, sizeof key);
        copy_str(out->counter, sizeof out->counter, key + off);
    }
    out->metric = b->metric;
    out->limit = b->limit;
    out->used = out->held = 0;
    if (h->c) {
        if (!locked) dsc__counter_lock(l, h->c);
        out->used = dsc_window_counter_used(&h->c->wc, &b->win, &l->tz, now);
        out->held = h->c->held;
        out->resets_at = dsc_window_counter_resets_at(&h->c->wc, &b->win, now);
        if (!locked) dsc__counter_unlock(l, h->c);
    } else if (b->win.kind <= DSC_WINDOW_YEAR) {
        int64_t start;
        dsc_window_period(&b->win, &l->tz, now / 1000000, &start, &out->resets_at);
    } else {
        out->resets_at = (now + 999999) / 1000000;
    }
    int64_t busy = sat_add(out->used, out->held);
    int64_t rem = sat_sub(out->limit, busy);
    out->remaining = rem > 0 ? rem : 0;
    out->request = request;
    out->would_exceed = sat_add(busy, request) > out->limit;
    out->retry_after_s =
        dsc_window_wait_s(&b->win, busy, request, out->limit, out->resets_at, now / 1000000);
}

dsc_status dsc_ledger_preview(dsc_ledger *l, const dsc_subject *subject, const dsc_amounts *request,
                              dsc_budget_state *out, size_t max, size_t *n, dsc_error *err) {
    static const dsc_amounts zero = {{0}};
    dsc_subject none = {0};
    if (!subject) subject = &none;
    if (!request) request = &zero;
    if (!out) max = 0;
    dsc_status st = check_subject(subject, err);
    if (st != DSC_OK) return st;
    dsc__hit hits[DSC__HITS_MAX];
    size_t nh = 0;
    int64_t now = dsc__ledger_now(l);
    expire_all(l, now);
    dsc__shard *sh = dsc__shard_here(l);
    pthread_mutex_lock(&sh->mu);
    st = dsc__match(l, sh, subject, false, hits, &nh, err);
    for (size_t i = 0; st == DSC_OK && i < nh && i < max; i++)
        fill_state(l, &hits[i], subject, request->v[hits[i].b->metric], now, false, &out[i]);
    pthread_mutex_unlock(&sh->mu);
    if (n) *n = nh;
    return st;
}

static int counter_name_cmp(const void *a, const void *b) {
    const dsc__counter *x = *(dsc__counter *const *)a, *y = *(dsc__counter *const *)b;
    return strcmp(x->key + x->name_off, y->key + y->name_off);
}

/* b's counters ordered by name, from the skip-th, appended to out[*n..max) (a shard's
 * lock held; the list is copied under counters_new_mu, as a reserve may be adding one). */
static dsc_status budget_counter_states(dsc_ledger *l, dsc__budget *b, size_t skip, int64_t now,
                                        dsc_budget_state *out, size_t max, size_t *n) {
    pthread_mutex_lock(&l->counters_new_mu);
    dsc__counter **v = malloc((b->n_counters ? b->n_counters : 1) * sizeof *v);
    size_t k = 0;
    for (dsc__counter *c = b->counters; v && c && k < b->n_counters; c = c->next)
        v[k++] = c;
    pthread_mutex_unlock(&l->counters_new_mu);
    if (!v) return DSC_NOMEM;
    qsort(v, k, sizeof *v, counter_name_cmp);
    for (size_t i = skip; i < k && *n < max; i++)
        fill_state(l, &(dsc__hit){b, v[i]}, NULL, 0, now, false, &out[(*n)++]);
    free(v);
    return DSC_OK;
}

static size_t counters_of(dsc_ledger *l, const dsc__budget *b) {
    pthread_mutex_lock(&l->counters_new_mu);
    size_t n = b->n_counters;
    pthread_mutex_unlock(&l->counters_new_mu);
    return n;
}

dsc_status dsc_ledger_counter_list(dsc_ledger *l, size_t offset, dsc_budget_state *out, size_t max,
                                   size_t *n, size_t *total, dsc_error *err) {
    size_t got = 0, seen = 0;
    dsc_status st = DSC_OK;
    if (!out) max = 0;
    int64_t now = dsc__ledger_now(l);
    expire_all(l, now);
    dsc__shard *sh = dsc__shard_here(l);
    pthread_mutex_lock(&sh->mu);
    for (size_t i = 0; i < l->n_live; i++) {
        dsc__budget *b = l->live[i];
        size_t first = seen, nc = counters_of(l, b);
        seen += nc;
        if (st != DSC_OK || got == max || seen <= offset || nc == 0) continue;
        size_t skip = offset > first ? offset - first : 0;
        st = budget_counter_states(l, b, skip, now, out, max, &got);
    }
    pthread_mutex_unlock(&sh->mu);
    if (n) *n = st == DSC_OK ? got : 0;
    if (total) *total = seen;
    if (st != DSC_OK) return dsc_error_set(err, st, "out of memory listing counters");
    return DSC_OK;
}

/* The budgets amounts would exceed, into exceeded; how many there are (the counters
 * of hits locked). */
static size_t find_exceeded(dsc_ledger *l, const dsc__hit *hits, size_t nh, const dsc_subject *s,
                            const dsc_amounts *a, int64_t now, dsc_budget_state *exceeded,
                            size_t max) {
    size_t n = 0;
    for (size_t i = 0; i < nh; i++) {
        const dsc__hit *h = &hits[i];
        int64_t req = a->v[h->b->metric];
        int64_t used = dsc_window_counter_used(&h->c->wc, &h->b->win, &l->tz, now);
        if (sat_add(sat_add(used, h->c->held), req) <= h->b->limit) continue;
        if (n < max) fill_state(l, h, s, req, now, true, &exceeded[n]);
        n++;
    }
    return n;
}

static int lock_index_cmp(const void *a, const void *b) {
    size_t x = *(const size_t *)a, y = *(const size_t *)b;
    return x < y ? -1 : x > y;
}

/* Lock the counters of hits: their locks in the one global order (by index), each
 * once though counters share it, into order[]; returns how many. */
static size_t lock_counters(dsc_ledger *l, const dsc__hit *hits, size_t nh, size_t *order) {
    for (size_t i = 0; i < nh; i++)
        order[i] = dsc__counter_lock_of(hits[i].c);
    if (nh > 1) qsort(order, nh, sizeof *order, lock_index_cmp);
    size_t n = 0;
    for (size_t i = 0; i < nh; i++)
        if (n == 0 || order[n - 1] != order[i]) order[n++] = order[i];
    for (size_t i = 0; i < n; i++)
        pthread_mutex_lock(&l->counter_locks[order[i]].mu);
    return n;
}

static void unlock_counters(dsc_ledger *l, const size_t *order, size_t n) {
    for (size_t i = n; i-- > 0;)
        pthread_mutex_unlock(&l->counter_locks[order[i]].mu);
}

static dsc_status reserve_validate(const dsc_subject *s, const dsc_amounts *a, int64_t ttl_s,
                                   const char *request_id, dsc_error *err) {
    dsc_status st = check_subject(s, err);
    if (st == DSC_OK) st = check_amounts("amounts", a, err);
    if (st != DSC_OK) return st;
    if (ttl_s <= 0 || ttl_s > HOLD_TTL_MAX_S)
        return dsc_error_set(err, DSC_BAD_REQUEST,
                             "field 'ttl': %lld is not between 1 and "
                             "604800 seconds",
                             (long long)ttl_s);
    if (request_id && *request_id) return check_id("request_id", request_id, DSC_NAME_MAX, err);
    return DSC_OK;
}

/* A new id without its order yet: "r" + 12 hex digits of a counter (zeros until
 * rid_order_set) + 24 hex digits, random but the last, which names the hold's shard
 * (see dsc__shard_of): 92 random bits, what makes an id unguessable. */
static void rid_make(const uint8_t random[RID_RANDOM_BYTES], size_t shard,
                     char id[DSC_RESERVATION_ID_MAX]) {
    static const char hex[] = "0123456789abcdef";
    id[0] = 'r';
    memset(id + 1, '0', RID_ORDER_HEX);
    dsc_random_hex(random, RID_RANDOM_BYTES, id + 1 + RID_ORDER_HEX);
    id[RID_LEN - 1] = hex[shard & 15];
    id[RID_LEN] = '\0';
}

/* The next order counter into id's first 12 hex digits. The counter orders the ids
 * (seeded from the clock at open, so later ids sort later across restarts): the store
 * keys holds by id, and ids in order append to its B-tree instead of dirtying a
 * random page per hold (measured: random ids alone cost about 20 us of server CPU per
 * check + settle at pipeline 1). With a store it is taken under journal_mu, with the
 * hold's record queued in the same step. */
static void rid_order_set(dsc_ledger *l, char *id) {
    static const char hex[] = "0123456789abcdef";
    uint64_t v = atomic_fetch_add_explicit(&l->next_rid, 1, memory_order_relaxed);
    for (int i = RID_ORDER_HEX; i >= 1; i--, v >>= 4)
        id[i] = hex[v & 15];
}

/* The random part of a new id, drawn before any lock is taken. */
static dsc_status rid_random(uint8_t random[RID_RANDOM_BYTES]) {
    return dsc_random_bytes(random, RID_RANDOM_BYTES, NULL) == DSC_OK ? DSC_OK : DSC_IO;
}

/* A new reservation of sh, its id without its order, not indexed yet. */
static dsc__reservation *hold_make(dsc__shard *sh, size_t shard,
                                   const uint8_t random[RID_RANDOM_BYTES], const dsc_subject *s,
                                   const dsc_amounts *a, int64_t now, int64_t ttl_s,
                                   const char *request_id, const dsc__hold_what *what,
                                   const dsc__hit *hits, size_t nh) {
    char id[DSC_RESERVATION_ID_MAX];
    rid_make(random, shard, id);
    dsc__reservation *r = dsc__reservation_new(id, request_id, s, what, hits, nh);
    if (!r) return NULL;
    r->shard = sh;
    r->state = RS_HELD;
    r->held = *a;
    r->created_us = now;
    r->expires_us = now + ttl_s * 1000000;
    return r;
}

/* Check r against its counters and, when every budget has room, put its holds on
 * them: all or nothing, under the counters' locks taken in the one global order.
 * DSC_BUDGET_EXCEEDED with the budgets that have none in exceeded. */
static dsc_status hold_check(dsc_ledger *l, dsc__reservation *r, const dsc_subject *subject,
                             const dsc__hit *hits, size_t nh, int64_t now,
                             dsc_budget_state *exceeded, size_t max_exceeded, size_t *n_exceeded,
                             dsc_error *err) {
    size_t order[DSC__HITS_MAX];
    size_t nl = lock_counters(l, hits, nh, order);
    size_t nx = find_exceeded(l, hits, nh, subject, &r->held, now, exceeded, max_exceeded);
    for (size_t i = 0; !nx && i < nh; i++)
        counter_hold(hits[i].c, r->held.v[hits[i].b->metric], +1);
    unlock_counters(l, order, nl);
    if (n_exceeded) *n_exceeded = nx;
    if (!nx) return DSC_OK;
    return dsc_error_set(err, DSC_BUDGET_EXCEEDED, "%zu budget%s would be exceeded", nx,
                         nx == 1 ? "" : "s");
}

/* Give r its order and index it in its shard and expiry heap (sh->mu held). */
static dsc_status hold_index(dsc_ledger *l, dsc__reservation *r) {
    do
        rid_order_set(l, r->id);
    while (shard_find(r->shard, r->id)); /* orders are never reused: practically never */
    if (dsc__reservation_index(l, r) != DSC_OK) return DSC_NOMEM;
    if (dsc__heap_push(l, r) == DSC_OK) {
        r->shard->n_held++;
        return DSC_OK;
    }
    dsc__strmap_del(&r->shard->reservations, r->id);
    r->shard->n_reservations--;
    if (dsc__strmap_get(&r->shard->requests, r->request_id) == r)
        dsc__strmap_del(&r->shard->requests, r->request_id);
    return DSC_NOMEM;
}

/* Whether a durable call is acknowledged once its record is queued (durability batch
 * and off, as docs/operations.md promises) instead of once it is committed. Then the
 * caller applies its effect to the counters at once (so the reply, and the next
 * call, see it), done is called as the call returns, and the writer only counts the
 * commit's outcome: a failed commit loses acknowledged changes, as a crash would. */
static bool acked_when_queued(const dsc_ledger *l) {
    return l->durability != DSC_DURABILITY_FULL;
}

/* Queue rec with done's completion (its shard's lock held, if any). Not acked: *wait_rec is set
 * when the caller must wait, else done hears of the commit. Acked (acknowledged once queued):
 * neither. rec belongs to the store once this returns DSC_OK. */
static dsc_status enqueue_as(dsc_ledger *l, dsc__rec *rec, bool acked, dsc__done *done,
                             dsc__rec **wait_rec) {
    bool wait = !acked && !done->fn;
    rec->acked = acked;
    rec->done_fn = acked ? NULL : done->fn;
    rec->done_ud = done->ud;
    dsc_status st = dsc__store_enqueue(l->store, rec, wait);
    if (st != DSC_OK) return st;
    done->queued = !acked && done->fn != NULL;
    *wait_rec = wait ? rec : NULL;
    return DSC_OK;
}

/* Queue rec as the ledger's durability says; see enqueue_as. */
static dsc_status enqueue(dsc_ledger *l, dsc__rec *rec, dsc__done *done, dsc__rec **wait_rec) {
    return enqueue_as(l, rec, acked_when_queued(l), done, wait_rec);
}

/* The record of a new hold (with a store), in dec (its decision, already copied in)
 * when given, built before the hold's id has its order (hold_publish copies it in);
 * NULL when out of memory (only without a dec). */
static dsc__rec *journal_rec(dsc__reservation *r, dsc__rec *dec) {
    dsc__rec *rec = dec;
    if (rec) {
        dsc__rec_fill(rec, DSC__REC_RESERVE, r, r->created_us);
        rec->with_decision = true;
    } else {
        rec = dsc__rec_for(DSC__REC_RESERVE, r, r->created_us);
    }
    if (rec) {
        rec->amounts = r->held;
        rec->expires_us = r->expires_us;
        rec->state = "held";
    }
    return rec;
}

/* Publish r, whose holds are on its counters: its id's order, its index, and with a
 * store its record rec queued, all in one step under journal_mu, so that ids reach
 * the log in the order of their counters (sh->mu held). On failure
 * the holds are released and r is gone.
 *
 * A hold is acknowledged once queued under every durability while the store is
 * healthy (acked): the hold is in memory, so it already keeps concurrent checks from
 * overshooting, and the log is ordered, so the settle that waits for its own commit
 * makes this record durable too (one commit wait per decision, not two). A crash
 * before the commit loses the hold; its settle is then charged as unreserved (see
 * lost_hold). While the last commit failed, a reserve under durability full waits
 * for its own commit as a settle does: it is refused while the store fails, and the
 * first one after the store recovers goes through (no probe to wait for). */
static dsc_status hold_publish(dsc_ledger *l, dsc__reservation *r, dsc__rec *rec, bool acked,
                               dsc__done *done, dsc__rec **wait_rec, dsc_error *err) {
    if (rec) pthread_mutex_lock(&l->journal_mu);
    dsc_status st = hold_index(l, r);
    if (st == DSC_OK && rec) {
        copy_str(rec->reservation_id, sizeof rec->reservation_id, r->id);
        st = enqueue_as(l, rec, acked, done, wait_rec);
        if (st != DSC_OK) dsc__apply_reserve_failed(l, r); /* indexed: dropped with its holds */
    } else if (st != DSC_OK) {
        free(rec);
        dsc__reservation_hold(l, r, -1);
        free(r);
    }
    if (rec) pthread_mutex_unlock(&l->journal_mu);
    if (st == DSC_OK) {
        r->committing = rec && !acked;
        return DSC_OK;
    }
    if (st == DSC_NOMEM) return dsc_error_set(err, st, "out of memory holding a reservation");
    return dsc_error_set(err, st, "the ledger store is failing; nothing was reserved");
}

static dsc_status wait_rec(dsc_ledger *l, dsc__rec *rec, dsc_error *err) {
    if (!rec) return DSC_OK;
    dsc_status st = dsc__store_wait(l->store, rec);
    if (st != DSC_OK) dsc_error_set(err, st, "%s", rec->message);
    free(rec);
    return st;
}

static dsc_status decision_copy(const dsc_decision_record *d, dsc__rec *rec, dsc_error *err);

/* A record for a decision: only its header zeroed, the decision's fields are all
 * written by decision_copy (zeroing the whole ~5 KiB record cost more than the rest
 * of the reserve). NULL when out of memory. */
/* The record a check's decision goes into, validated (before anything is held); NULL
 * with *st DSC_OK when there is none to write (no decision, or no store: then its
 * fields are only checked, nothing is allocated or copied). */
static dsc__rec *decision_rec(dsc_ledger *l, const dsc_decision_record *d, dsc_status *st,
                              dsc_error *err) {
    *st = DSC_OK;
    if (!d) return NULL;
    if (!l->store) {
        *st = decision_copy(d, NULL, err);
        return NULL;
    }
    dsc__rec *rec = dsc__rec_alloc();
    if (!rec) {
        *st = dsc_error_set(err, DSC_NOMEM, "out of memory journaling a decision");
        return NULL;
    }
    if ((*st = decision_copy(d, rec, err)) == DSC_OK) return rec;
    free(rec);
    return NULL;
}

/* A repeated request_id (the shard's lock held): the same reservation, and the decision (if any)
 * journaled alone, naming it; dec is consumed. */
static dsc_status reserve_repeated(dsc_ledger *l, dsc__reservation *r, dsc__rec *dec, int64_t now,
                                   char reservation_id[DSC_RESERVATION_ID_MAX], dsc__done *done,
                                   dsc__rec **wait_rec, dsc_error *err) {
    copy_str(reservation_id, DSC_RESERVATION_ID_MAX, r->id);
    if (r->committing) {
        free(dec);
        return dsc_error_set(err, DSC_STORE_UNAVAILABLE,
                             "request '%s' is still being reserved; retry", r->request_id);
    }
    if (!dec) return DSC_OK;
    dec->type = DSC__REC_DECISION;
    dec->at_us = now;
    copy_str(dec->reservation_id, sizeof dec->reservation_id, r->id);
    if (enqueue(l, dec, done, wait_rec) != DSC_OK)
        return dsc_error_set(err, DSC_STORE_UNAVAILABLE,
                             "the ledger store is failing; the decision was not journaled");
    atomic_fetch_add_explicit(&l->decisions, 1, memory_order_relaxed);
    return DSC_OK;
}

/* Take a new hold for subject in sh (sh->mu held): match, check and
 * hold, then publish. */
static dsc_status reserve_new(dsc_ledger *l, dsc__shard *sh, const uint8_t *random,
                              const dsc_subject *subject, const dsc_amounts *amounts, int64_t now,
                              int64_t ttl_s, const char *request_id,
                              const dsc_decision_record *decision, dsc__rec *dec,
                              dsc_reserve_out *out, dsc__done *done, dsc__rec **wait_rec,
                              dsc_error *err) {
    dsc__hit hits[DSC__HITS_MAX];
    size_t nh = 0;
    dsc__hold_what what = {0};
    if (decision)
        what = (dsc__hold_what){decision->provider, decision->model, decision->zone,
                                decision->purpose, decision->key_id};
    dsc_status st = dsc__match(l, sh, subject, true, hits, &nh, err);
    dsc__reservation *r = NULL;
    if (st == DSC_OK && !(r = hold_make(sh, (size_t)(sh - l->shards), random, subject, amounts, now,
                                        ttl_s, request_id, &what, hits, nh)))
        st = dsc_error_set(err, DSC_NOMEM, "out of memory holding a reservation");
    if (st == DSC_OK)
        st = hold_check(l, r, subject, hits, nh, now, out->exceeded, out->max_exceeded,
                        &out->n_exceeded, err);
    if (st != DSC_OK) {
        free(r);
        free(dec);
        return st;
    }
    dsc__rec *rec = l->store ? journal_rec(r, dec) : NULL;
    if (l->store && !rec) {
        dsc__reservation_hold(l, r, -1);
        free(r);
        return dsc_error_set(err, DSC_NOMEM, "out of memory");
    }
    if (!l->store) free(dec);
    bool acked = l->store && (acked_when_queued(l) || dsc__store_healthy(l->store));
    st = hold_publish(l, r, rec, acked, done, wait_rec, err);
    if (st != DSC_OK) return st;
    copy_str(out->reservation_id, DSC_RESERVATION_ID_MAX, r->id);
    if (decision) atomic_fetch_add_explicit(&l->decisions, 1, memory_order_relaxed);
    return DSC_OK;
}

static dsc_status reserve_impl(dsc_ledger *l, const dsc_reserve_req *req, dsc_reserve_out *out,
                               dsc__done *done, dsc_error *err) {
    const dsc_subject none = {0}, *subject = req->subject ? req->subject : &none;
    const char *request_id = req->request_id && *req->request_id ? req->request_id : NULL;
    out->n_exceeded = 0;
    if (!out->exceeded) out->max_exceeded = 0;
    if (!req->amounts) return dsc_error_set(err, DSC_BAD_REQUEST, "field 'amounts' is missing");
    dsc_status st = reserve_validate(subject, req->amounts, req->ttl_s, request_id, err);
    if (st != DSC_OK) return st;
    uint8_t random[RID_RANDOM_BYTES];
    if (rid_random(random) != DSC_OK)
        return dsc_error_set(err, DSC_IO, "no random bytes for a reservation id");
    dsc__rec *dec = decision_rec(l, req->decision, &st, err), *rec = NULL;
    if (st != DSC_OK) return st;
    /* a request's hold lives in the request's shard; any other in the shard of the CPU
     * the caller runs on, so threads on different cores share no shard */
    dsc__shard *sh = request_id ? request_shard(l, request_id) : dsc__shard_here(l);
    int64_t now = dsc__ledger_now(l);
    expire_all(l, now);
    pthread_mutex_lock(&sh->mu);
    forget_old(l, sh, now);
    dsc__reservation *r = request_id ? dsc__strmap_get(&sh->requests, request_id) : NULL;
    if (r) {
        st = reserve_repeated(l, r, dec, now, out->reservation_id, done, &rec, err);
        if (st == DSC_OK && req->decision && !l->store)
            atomic_fetch_add_explicit(&l->decisions, 1, memory_order_relaxed);
    } else
        st = reserve_new(l, sh, random, subject, req->amounts, now, req->ttl_s, request_id,
                         req->decision, dec, out, done, &rec, err);
    pthread_mutex_unlock(&sh->mu);
    if (st == DSC_OK) st = wait_rec(l, rec, err);
    return st;
}

dsc_status dsc__done_now(dsc_status st, const dsc__done *done) {
    if (st == DSC_OK && done->fn && !done->queued) {
        dsc_error ok = {DSC_OK, ""};
        done->fn(done->ud, DSC_OK, &ok);
    }
    return st;
}

/* An internal completion from the caller's (NULL: wait). */
static dsc__done done_from(const dsc_done *d) {
    dsc__done x = {d ? d->fn : NULL, d ? d->ud : NULL, false};
    return x;
}

dsc_status dsc_ledger_reserve(dsc_ledger *l, const dsc_reserve_req *req, dsc_reserve_out *out,
                              const dsc_done *done, dsc_error *err) {
    if (!req || !out) return dsc_error_set(err, DSC_BAD_REQUEST, "no reserve request or reply");
    dsc__ledger_room(l);
    dsc__done d = done_from(done);
    return dsc__done_now(reserve_impl(l, req, out, &d, err), &d);
}

/* --- settle and cancel ---------------------------------------------------------- */

dsc_status dsc__reservation_recall(dsc_ledger *l, const char *id) {
    if (!l->store) return DSC_UNKNOWN_RESERVATION;
    dsc__rec *row = calloc(1, sizeof *row);
    const char *state = NULL;
    if (!row) return DSC_NOMEM;
    dsc_status st = dsc__store_find_reservation(l->store, id, row, &state);
    dsc__rstate rs = st == DSC_OK ? dsc__rstate_parse(state) : RS_NONE;
    if (rs == RS_NONE || rs == RS_HELD) { /* held ones are never forgotten */
        free(row);
        return DSC_UNKNOWN_RESERVATION;
    }
    dsc_subject s = {row->subject.org, row->subject.team, row->subject.user, row->subject.key};
    const dsc__rec_decision *d = &row->u.decision;
    dsc__hold_what what = {d->provider, d->model, d->zone, d->purpose, d->key_id};
    dsc__hit hits[DSC__HITS_MAX];
    size_t nh = 0;
    dsc__reservation *r = NULL;
    dsc__shard *sh = dsc__shard_of(l, id);
    pthread_mutex_lock(&sh->mu);
    st = DSC_OK;
    if (shard_find(sh, id)) goto out; /* recalled meanwhile */
    st = DSC_NOMEM;
    if (dsc__match(l, sh, &s, true, hits, &nh, NULL) != DSC_OK) goto out;
    if (!(r = dsc__reservation_new(id, NULL, &s, &what, hits, nh))) goto out;
    r->charged = row->amounts;
    r->state = rs;
    if (dsc__reservation_index(l, r) != DSC_OK) {
        free(r);
        goto out;
    }
    dsc__reservation_finish(l, r, rs, dsc__ledger_now(l));
    st = DSC_OK;
out:
    pthread_mutex_unlock(&sh->mu);
    free(row);
    return st;
}

/* Whether id has the shape of an id this ledger makes ("r" + hex digits, the old
 * 16 or the current 36): an unknown one is a guess, never an unreserved settle (but
 * for one a crash lost, see lost_hold), so a made-up id can never take the place of
 * a hold to come. */
bool dsc__ledger_made(const char *id) {
    size_t n = strlen(id);
    if (id[0] != 'r' || (n != 17 && n != RID_LEN)) return false;
    for (size_t i = 1; i < n; i++)
        if (!isxdigit((unsigned char)id[i]) || isupper((unsigned char)id[i])) return false;
    return true;
}

/* A reservation object for a settle of an unknown id (its shard's lock held). */
static dsc_status unreserved(dsc_ledger *l, const char *id, const dsc_subject *s,
                             dsc__reservation **out, dsc_error *err) {
    dsc__hit hits[DSC__HITS_MAX];
    size_t nh = 0;
    if (dsc__ledger_made(id) && !lost_hold(l, id))
        return dsc_error_set(err, DSC_UNKNOWN_RESERVATION,
                             "field 'reservation': '%s' has the form of an id made by the "
                             "ledger but is not known; an unreserved settle needs an id of "
                             "its own",
                             id);
    dsc_status st = dsc__match(l, dsc__shard_of(l, id), s, true, hits, &nh, err);
    if (st != DSC_OK) return st;
    dsc__reservation *r = dsc__reservation_new(id, NULL, s, NULL, hits, nh);
    if (!r || dsc__reservation_index(l, r) != DSC_OK) {
        free(r);
        return dsc_error_set(err, DSC_NOMEM, "out of memory recording a settle");
    }
    r->state = RS_NONE;
    *out = r;
    return DSC_OK;
}

/* What settling r means now: its kind, and DSC_OK to go on (its shard's lock held). */
static dsc_status settle_kind(dsc__reservation *r, dsc_settle_kind *kind, dsc_error *err) {
    switch (r->state) {
    case RS_NONE:
        *kind = DSC_SETTLE_UNRESERVED;
        return DSC_OK;
    case RS_HELD:
        *kind = DSC_SETTLE_RESERVED;
        return DSC_OK;
    case RS_SETTLED:
        *kind = DSC_SETTLE_REPEATED;
        return DSC_OK;
    case RS_SETTLING: /* answering OK before the first commit could ack a lost settle */
        return dsc_error_set(err, DSC_STORE_UNAVAILABLE,
                             "a settle of reservation '%s' is "
                             "being committed right now; retry",
                             r->id);
    case RS_CANCELLED:
    case RS_EXPIRED:
    case RS_RELEASED:
        *kind = DSC_SETTLE_LATE;
        return DSC_OK;
    default:
        return dsc_error_set(err, DSC_STORE_UNAVAILABLE,
                             "reservation '%s' is being %s right "
                             "now; retry the settle",
                             r->id, r->state == RS_CANCELLING ? "cancelled" : "expired");
    }
}

static const char *kind_charge_name(dsc_settle_kind k) {
    return k == DSC_SETTLE_RESERVED ? "settle" : k == DSC_SETTLE_LATE ? "late" : "unreserved";
}

/* Start settling r with actual (its shard's lock held); *rec set when the caller
 * must wait. */
static dsc_status settle_begin(dsc_ledger *l, dsc__reservation *r, dsc_settle_kind kind,
                               const dsc_amounts *actual, int64_t now, dsc__done *done,
                               dsc__rec **wait_rec, dsc_error *err) {
    dsc_amounts delta;
    for (int m = 0; m < DSC_METRIC_COUNT; m++)
        delta.v[m] = actual->v[m] - r->charged.v[m];
    dsc__heap_remove(l, r);
    r->prev = r->state;
    r->state = RS_SETTLING;
    if (!l->store) {
        dsc__apply_settle(l, r, &delta, now, true);
        return DSC_OK;
    }
    dsc__rec *rec = dsc__rec_for(DSC__REC_SETTLE, r, now);
    if (rec) {
        rec->amounts = delta;
        rec->charge_kind = kind_charge_name(kind);
        rec->state = "settled";
    }
    dsc_status st = rec ? enqueue(l, rec, done, wait_rec) : DSC_NOMEM;
    if (st != DSC_OK) {
        dsc__apply_settle(l, r, &delta, now, false);
        return dsc_error_set(err, st,
                             st == DSC_NOMEM
                                 ? "out of memory"
                                 : "the ledger store is failing; nothing was charged, retry");
    }
    if (acked_when_queued(l)) dsc__apply_settle(l, r, &delta, now, true);
    return DSC_OK;
}

/* A hold taken by another key is not the caller's to settle or cancel (its shard's lock held). */
static dsc_status check_key(const dsc__recall *rc, const dsc__reservation *r, dsc_error *err) {
    if (!rc->check_key || r->state == RS_NONE || strcmp(r->owner, rc->key_id) == 0) return DSC_OK;
    return dsc_error_set(err, DSC_FORBIDDEN, "field 'reservation': '%s' is held by another key",
                         r->id);
}

/* A reservation that is not in memory but may be in the store: recalled on the reader
 * thread when the caller gave a done (its worker never reads the store), else here,
 * outside the lock, before the call runs again. */
static dsc_status recall_then(dsc_ledger *l, const dsc__recall *rc, dsc__done *done,
                              dsc_error *err) {
    if (!done->fn) return dsc__recall_run(l, rc, done, err);
    dsc_status st = dsc__reader_recall(l, rc, done);
    if (st != DSC_OK)
        return dsc_error_set(err, st, "cannot look reservation '%s' up in the store", rc->id);
    done->queued = true;
    return DSC_OK;
}

static dsc_status settle_impl(dsc_ledger *l, const dsc__recall *rc, bool may_recall,
                              dsc__done *done, dsc_error *err) {
    dsc_subject s = {rc->subject.org, rc->subject.team, rc->subject.user, rc->subject.key};
    dsc_settle_kind k = DSC_SETTLE_RESERVED;
    dsc__rec *rec = NULL;
    dsc_status st = DSC_OK;
    dsc__shard *sh = dsc__shard_of(l, rc->id);
    pthread_mutex_lock(&sh->mu);
    int64_t now = dsc__ledger_now(l);
    dsc__reservation *r = shard_find(sh, rc->id);
    if (!r && may_recall && l->store && dsc__ledger_made(rc->id)) {
        pthread_mutex_unlock(&sh->mu);
        return recall_then(l, rc, done, err);
    }
    if (!r && (st = unreserved(l, rc->id, &s, &r, err)) != DSC_OK) goto out;
    if ((st = check_key(rc, r, err)) != DSC_OK) goto out;
    /* the kind is written before the record is queued: on the reader thread (a
     * recalled settle) its done may run on the writer, and the reply read it, at once */
    if ((st = settle_kind(r, &k, err)) == DSC_OK && rc->kind) *rc->kind = k;
    if (st != DSC_OK || k == DSC_SETTLE_REPEATED) goto out;
    st = settle_begin(l, r, k, &rc->actual, now, done, &rec, err);
out:
    pthread_mutex_unlock(&sh->mu);
    if (st == DSC_OK) st = wait_rec(l, rec, err);
    return st;
}

static void subject_copy(dsc__rec_subject *dst, const dsc_subject *s) {
    copy_str(dst->org, sizeof dst->org, s && s->org ? s->org : "");
    copy_str(dst->team, sizeof dst->team, s && s->team ? s->team : "");
    copy_str(dst->user, sizeof dst->user, s && s->user ? s->user : "");
    copy_str(dst->key, sizeof dst->key, s && s->key ? s->key : "");
}

/* The request of a settle or cancel, validated, as a recall (which copies it). */
static dsc_status recall_from(const char *id, const char *key_id, dsc__recall *rc, dsc_error *err) {
    dsc_status st = check_id("reservation_id", id, DSC_RESERVATION_ID_MAX, err);
    if (st == DSC_OK && key_id && strlen(key_id) >= DSC_NAME_MAX) /* "": an anonymous caller */
        st = dsc_error_set(err, DSC_BAD_REQUEST, "field 'key_id' is longer than %d bytes",
                           DSC_NAME_MAX - 1);
    if (st != DSC_OK) return st;
    copy_str(rc->id, sizeof rc->id, id);
    rc->check_key = key_id != NULL;
    copy_str(rc->key_id, sizeof rc->key_id, key_id ? key_id : "");
    return DSC_OK;
}

dsc_status dsc_ledger_settle(dsc_ledger *l, const dsc_settle_req *req, dsc_settle_out *out,
                             const dsc_done *done, dsc_error *err) {
    if (!req) return dsc_error_set(err, DSC_BAD_REQUEST, "no settle request");
    dsc__ledger_room(l);
    dsc_subject none = {0};
    const dsc_subject *s = req->subject_if_unknown ? req->subject_if_unknown : &none;
    dsc__recall rc = {.kind = out ? &out->kind : NULL};
    dsc_status st = recall_from(req->reservation_id, req->key_id, &rc, err);
    if (st == DSC_OK && !req->actual)
        st = dsc_error_set(err, DSC_BAD_REQUEST, "field 'actual' is missing");
    if (st == DSC_OK) st = check_amounts("actual", req->actual, err);
    if (st == DSC_OK) st = check_subject(s, err);
    if (st != DSC_OK) return st;
    rc.actual = *req->actual;
    subject_copy(&rc.subject, s);
    dsc__done d = done_from(done);
    return dsc__done_now(settle_impl(l, &rc, true, &d, err), &d);
}

/* Start cancelling a held r (its shard's lock held); *rec set when the caller must
 * wait. */
static dsc_status cancel_begin(dsc_ledger *l, dsc__reservation *r, int64_t now, dsc__done *done,
                               dsc__rec **wait_rec, dsc_error *err) {
    dsc__heap_remove(l, r);
    r->prev = r->state;
    r->state = RS_CANCELLING;
    if (!l->store) {
        dsc__apply_cancel(l, r, now, true);
        return DSC_OK;
    }
    dsc__rec *rec = dsc__rec_for(DSC__REC_CANCEL, r, now);
    if (rec) rec->state = "cancelled";
    dsc_status st = rec ? enqueue(l, rec, done, wait_rec) : DSC_NOMEM;
    if (st != DSC_OK) {
        dsc__apply_cancel(l, r, now, false);
        return dsc_error_set(err, st, "the ledger store is failing; the hold stays");
    }
    if (acked_when_queued(l)) dsc__apply_cancel(l, r, now, true);
    return DSC_OK;
}

static dsc_status cancel_impl(dsc_ledger *l, const dsc__recall *rc, bool may_recall,
                              dsc__done *done, dsc_error *err) {
    dsc__rec *rec = NULL;
    dsc_status st = DSC_OK;
    dsc__shard *sh = dsc__shard_of(l, rc->id);
    pthread_mutex_lock(&sh->mu);
    int64_t now = dsc__ledger_now(l);
    dsc__reservation *r = shard_find(sh, rc->id);
    if (!r && may_recall && l->store && dsc__ledger_made(rc->id)) {
        pthread_mutex_unlock(&sh->mu);
        return recall_then(l, rc, done, err);
    }
    if (!r)
        st = dsc_error_set(err, DSC_UNKNOWN_RESERVATION, "reservation '%s' is unknown", rc->id);
    else if ((st = check_key(rc, r, err)) == DSC_OK && r->state == RS_HELD)
        st = cancel_begin(l, r, now, done, &rec, err);
    pthread_mutex_unlock(&sh->mu);
    if (st == DSC_OK) st = wait_rec(l, rec, err);
    return st;
}

dsc_status dsc__recall_run(dsc_ledger *l, const dsc__recall *rc, dsc__done *done, dsc_error *err) {
    dsc_status st = dsc__reservation_recall(l, rc->id);
    if (st == DSC_NOMEM)
        return dsc_error_set(err, st, "out of memory recalling reservation '%s'", rc->id);
    return rc->cancel ? cancel_impl(l, rc, false, done, err) : settle_impl(l, rc, false, done, err);
}

dsc_status dsc_ledger_cancel(dsc_ledger *l, const dsc_cancel_req *req, const dsc_done *done,
                             dsc_error *err) {
    if (!req) return dsc_error_set(err, DSC_BAD_REQUEST, "no cancel request");
    dsc__ledger_room(l);
    dsc__recall rc = {.cancel = true};
    dsc_status st = recall_from(req->reservation_id, req->key_id, &rc, err);
    if (st != DSC_OK) return st;
    dsc__done d = done_from(done);
    return dsc__done_now(cancel_impl(l, &rc, true, &d, err), &d);
}

dsc_status dsc_ledger_hold_get(dsc_ledger *l, const char *reservation_id, dsc_hold_info *out) {
    if (!reservation_id) return DSC_UNKNOWN_RESERVATION;
    dsc__shard *sh = dsc__shard_of(l, reservation_id);
    pthread_mutex_lock(&sh->mu);
    dsc__reservation *r = shard_find(sh, reservation_id);
    bool found = r && r->state != RS_NONE; /* RS_NONE: an unreserved settle, not a hold */
    if (found) {
        memset(out, 0, sizeof *out);
        copy_str(out->id, sizeof out->id, r->id);
        copy_str(out->org, sizeof out->org, r->org);
        copy_str(out->team, sizeof out->team, r->team);
        copy_str(out->user, sizeof out->user, r->user);
        copy_str(out->key, sizeof out->key, r->key);
        copy_str(out->owner, sizeof out->owner, r->owner);
        copy_str(out->provider, sizeof out->provider, r->provider);
        copy_str(out->model, sizeof out->model, r->model);
        copy_str(out->zone, sizeof out->zone, r->zone);
        copy_str(out->purpose, sizeof out->purpose, r->purpose);
        out->held = r->held;
        out->expires_us = r->expires_us;
        out->open = r->state == RS_HELD;
    }
    pthread_mutex_unlock(&sh->mu);
    return found ? DSC_OK : DSC_UNKNOWN_RESERVATION;
}

size_t dsc_ledger_tick(dsc_ledger *l) {
    size_t n = 0;
    int64_t now = dsc__ledger_now(l);
    for (size_t i = 0; i < DSC__SHARDS; i++) {
        dsc__shard *sh = &l->shards[i];
        pthread_mutex_lock(&sh->mu);
        n += expire_due(l, sh, now);
        forget_old(l, sh, now);
        pthread_mutex_unlock(&sh->mu);
    }
    return n;
}

/* --- decisions and stats ------------------------------------------------------- */

/* Check v's length against max and, when dst is given, copy it there. */
static dsc_status copy_field(const char *field, const char *v, char *dst, size_t max,
                             dsc_error *err) {
    if (!v) v = "";
    size_t n = strlen(v);
    if (n >= max)
        return dsc_error_set(err, DSC_BAD_REQUEST, "field '%s': longer than %zu characters", field,
                             max - 1);
    if (dst) memcpy(dst, v, n + 1);
    return DSC_OK;
}

/* Where a decision's string goes in a record, and its room. */
#define DECISION_FIELD(name, v, member)                                                            \
    { name, v, offsetof(dsc__rec, member), sizeof(((dsc__rec *)0)->member) }

/* Validate d's strings and, when rec is given, copy d into it (every field of
 * rec->u.decision, the reservation id and the subject). */
static dsc_status decision_copy(const dsc_decision_record *d, dsc__rec *rec, dsc_error *err) {
    dsc_subject s = d->subject;
    dsc_status st = check_subject(&s, err);
    const struct {
        const char *name, *v;
        size_t off, max;
    } f[] = {DECISION_FIELD("decision_id", d->decision_id, u.decision.decision_id),
             DECISION_FIELD("request_id", d->request_id, u.decision.request_id),
             DECISION_FIELD("purpose", d->purpose, u.decision.purpose),
             DECISION_FIELD("provider", d->provider, u.decision.provider),
             DECISION_FIELD("model", d->model, u.decision.model),
             DECISION_FIELD("outcome", d->outcome, u.decision.outcome),
             DECISION_FIELD("policy", d->policy, u.decision.policy),
             DECISION_FIELD("policy_version", d->policy_version, u.decision.policy_version),
             DECISION_FIELD("reason", d->reason, u.decision.reason),
             DECISION_FIELD("reservation_id", d->reservation_id, reservation_id),
             DECISION_FIELD("key_id", d->key_id, u.decision.key_id),
             DECISION_FIELD("zone", d->zone, u.decision.zone),
             DECISION_FIELD("purpose_class", d->purpose_class, u.decision.purpose_class),
             DECISION_FIELD("verdicts", d->verdicts, u.decision.verdicts),
             DECISION_FIELD("tags", d->tags, u.decision.tags),
             DECISION_FIELD("org", s.org, subject.org),
             DECISION_FIELD("team", s.team, subject.team),
             DECISION_FIELD("user", s.user, subject.user),
             DECISION_FIELD("key", s.key, subject.key)};
    for (size_t i = 0; st == DSC_OK && i < sizeof f / sizeof f[0]; i++)
        st = copy_field(f[i].name, f[i].v, rec ? (char *)rec + f[i].off : NULL, f[i].max, err);
    if (!rec) return st;
    dsc__rec_decision *o = &rec->u.decision;
    o->input_tokens = d->input_tokens;
    o->output_tokens = d->output_tokens;
    o->est_energy_wh = d->est_energy_wh;
    o->est_gco2e = d->est_gco2e;
    o->est_water_ml = d->est_water_ml;
    o->warnings = d->warnings;
    return st;
}

static dsc_status decision_impl(dsc_ledger *l, const dsc_decision_record *d, dsc__done *done,
                                dsc_error *err) {
    if (!d) return dsc_error_set(err, DSC_BAD_REQUEST, "field 'decision' is missing");
    dsc_status st;
    dsc__rec *rec = decision_rec(l, d, &st, err);
    if (!rec) {
        if (st == DSC_OK) atomic_fetch_add_explicit(&l->decisions, 1, memory_order_relaxed);
        return st;
    }
    rec->type = DSC__REC_DECISION;
    rec->at_us = d->at_us ? d->at_us : dsc__ledger_now(l);
    atomic_fetch_add_explicit(&l->decisions, 1, memory_order_relaxed);
    dsc__rec *wait = NULL;
    st = enqueue(l, rec, done, &wait);
    if (st != DSC_OK)
        return dsc_error_set(err, st,
                             "the ledger store is failing; the decision was not "
                             "journaled");
    return wait_rec(l, wait, err);
}

dsc_status dsc_ledger_record(dsc_ledger *l, const dsc_decision_record *rec, const dsc_done *done,
                             dsc_error *err) {
    dsc__ledger_room(l);
    dsc__done d = done_from(done);
    return dsc__done_now(decision_impl(l, rec, &d, err), &d);
}

static dsc_status sync_impl(dsc_ledger *l, dsc__done *done, dsc_error *err) {
    if (!l->store) return DSC_OK;
    dsc__rec *rec = calloc(1, sizeof *rec);
    if (!rec) return dsc_error_set(err, DSC_NOMEM, "out of memory");
    rec->type = DSC__REC_SYNC;
    dsc__rec *wait = NULL;
    dsc_status st = enqueue_as(l, rec, false, done, &wait); /* never acked: it is the wait */
    if (st != DSC_OK) return dsc_error_set(err, st, "the ledger store is failing");
    return wait_rec(l, wait, err);
}

dsc_status dsc_ledger_sync(dsc_ledger *l, const dsc_done *done, dsc_error *err) {
    dsc__done d = done_from(done);
    return dsc__done_now(sync_impl(l, &d, err), &d);
}

void dsc_ledger_stats_get(dsc_ledger *l, dsc_ledger_stats *out) {
    memset(out, 0, sizeof *out);
    dsc__shard *here = dsc__shard_here(l);
    pthread_mutex_lock(&here->mu);
    out->budgets = l->n_live;
    pthread_mutex_unlock(&here->mu);
    out->counters = atomic_load(&l->n_counters);
    out->decisions = atomic_load(&l->decisions);
    for (size_t i = 0; i < DSC__SHARDS; i++) {
        dsc__shard *sh = &l->shards[i];
        pthread_mutex_lock(&sh->mu);
        out->holds += sh->n_held;
        out->reservations += sh->n_reservations;
        out->settles += sh->settles;
        out->expired += sh->expired;
        pthread_mutex_unlock(&sh->mu);
    }
    out->store_ok = true;
    if (l->store) {
        dsc__store_counts(l->store, &out->store_batches, &out->store_records, &out->store_failures);
        out->store_ok = dsc__store_healthy(l->store);
    }
}
