/*
 * ledger_store.c - between the ledger's memory and its store.
 *
 * After each batch the store's writer calls dsc__ledger_apply: committed settles,
 * cancels and expiries release their holds and charge the counters; records of a
 * failed batch are undone in reverse order (a settle back to HELD, then its
 * reservation dropped if the reserve itself failed). On open, the store replays
 * budgets, open holds, recently finished reservations and the charges inside every
 * budget's window, which rebuilds the counters exactly as they were.
 */
#include "ledger_internal.h"

#include <stdio.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

static const char *const rstate_names[] = {"none",     "held",       "settling",
                                           "settled",  "cancelling", "cancelled",
                                           "expiring", "expired",    "released"};

const char *dsc__rstate_name(dsc__rstate st) {
    return rstate_names[st];
}

dsc__rstate dsc__rstate_parse(const char *name) {
    for (size_t i = 0; name && i < sizeof rstate_names / sizeof rstate_names[0]; i++)
        if (strcmp(name, rstate_names[i]) == 0) return (dsc__rstate)i;
    return RS_NONE;
}

static void put(char *dst, size_t max, const char *src);

/* What r was for (its owner, provider, model, zone, purpose) into rec's decision
 * fields: the store keeps them on every event of the hold, so a finished one can be
 * reloaded or recalled whole. */
static void fill_what(dsc__rec *rec, const dsc__reservation *r) {
    dsc__rec_decision *d = &rec->u.decision;
    put(d->key_id, sizeof d->key_id, r->owner);
    put(d->provider, sizeof d->provider, r->provider ? r->provider : "");
    put(d->model, sizeof d->model, r->model ? r->model : "");
    put(d->zone, sizeof d->zone, r->zone ? r->zone : "");
    put(d->purpose, sizeof d->purpose, r->purpose ? r->purpose : "");
}

dsc__rec *dsc__rec_alloc(void) {
    dsc__rec *rec = malloc(sizeof *rec);
    if (rec) memset(rec, 0, offsetof(dsc__rec, u));
    return rec;
}

/* The decision fields fill_what leaves alone, empty: their text is read only up to
 * its NUL, so clearing the first byte does what zeroing the 5 KiB would. */
static void clear_rest(dsc__rec_decision *d) {
    char *text[] = {d->decision_id, d->request_id,    d->outcome,  d->policy, d->policy_version,
                    d->reason,      d->purpose_class, d->verdicts, d->tags};
    for (size_t i = 0; i < sizeof text / sizeof text[0]; i++)
        text[i][0] = '\0';
    memset(&d->input_tokens, 0, sizeof *d - offsetof(dsc__rec_decision, input_tokens));
}

dsc__rec *dsc__rec_for(dsc__rec_type type, const dsc__reservation *r, int64_t at_us) {
    dsc__rec *rec = dsc__rec_alloc();
    if (rec) {
        dsc__rec_fill(rec, type, r, at_us);
        clear_rest(&rec->u.decision);
        fill_what(rec, r);
    }
    return rec;
}

/* Copy a string known to fit (ids and names are checked on the way in), truncating
 * anyway: snprintf costs more than the rest of building the record. */
static void put(char *dst, size_t max, const char *src) {
    size_t n = strlen(src);
    if (n >= max) n = max - 1;
    memcpy(dst, src, n);
    dst[n] = '\0';
}

void dsc__rec_fill(dsc__rec *rec, dsc__rec_type type, const dsc__reservation *r, int64_t at_us) {
    rec->type = type;
    rec->at_us = at_us;
    put(rec->reservation_id, sizeof rec->reservation_id, r->id);
    put(rec->request_id, sizeof rec->request_id, r->request_id);
    put(rec->subject.org, DSC_NAME_MAX, r->org);
    put(rec->subject.team, DSC_NAME_MAX, r->team);
    put(rec->subject.user, DSC_NAME_MAX, r->user);
    put(rec->subject.key, DSC_NAME_MAX, r->key);
}

/* --- applying outcomes (r's shard lock held) ---------------------------- */

static void back_to_held(dsc_ledger *l, dsc__reservation *r) {
    r->state = r->prev;
    if (r->state == RS_HELD) dsc__heap_push(l, r);
}

void dsc__apply_settle(dsc_ledger *l, dsc__reservation *r, const dsc_amounts *delta, int64_t at_us,
                       bool ok) {
    if (!ok) {
        if (r->prev == RS_NONE)
            dsc__reservation_drop(l, r);
        else
            back_to_held(l, r);
        return;
    }
    dsc__reservation_release_charge(l, r, r->prev == RS_HELD, delta, at_us);
    r->shard->settles++;
    dsc__reservation_finish(l, r, RS_SETTLED, at_us);
}

void dsc__apply_cancel(dsc_ledger *l, dsc__reservation *r, int64_t at_us, bool ok) {
    if (!ok) {
        back_to_held(l, r);
        return;
    }
    dsc__reservation_hold(l, r, -1);
    dsc__reservation_finish(l, r, RS_CANCELLED, at_us);
}

void dsc__apply_expire(dsc_ledger *l, dsc__reservation *r, const dsc_amounts *charge, int64_t at_us,
                       bool ok) {
    if (!ok) {
        back_to_held(l, r);
        return;
    }
    dsc__reservation_release_charge(l, r, true, charge, at_us);
    r->shard->expired++;
    dsc__reservation_finish(l, r, l->expired == DSC_EXPIRED_CHARGE ? RS_EXPIRED : RS_RELEASED,
                            at_us);
}

void dsc__apply_reserve_failed(dsc_ledger *l, dsc__reservation *r) {
    if (r->state != RS_HELD) return;
    dsc__reservation_hold(l, r, -1);
    r->shard->n_held--;
    dsc__reservation_drop(l, r);
}

static void apply_locked(dsc_ledger *l, dsc__reservation *r, dsc__rec *rec) {
    bool ok = rec->status == DSC_OK;
    switch (rec->type) {
    case DSC__REC_RESERVE:
        r->committing = false;
        if (!ok) dsc__apply_reserve_failed(l, r);
        break;
    case DSC__REC_SETTLE:
        if (r->state == RS_SETTLING) dsc__apply_settle(l, r, &rec->amounts, rec->at_us, ok);
        break;
    case DSC__REC_CANCEL:
        if (r->state == RS_CANCELLING) dsc__apply_cancel(l, r, rec->at_us, ok);
        break;
    case DSC__REC_EXPIRE:
        if (r->state == RS_EXPIRING) dsc__apply_expire(l, r, &rec->amounts, rec->at_us, ok);
        break;
    default:
        break;
    }
}

/* Apply one record to its reservation, under the reservation's shard lock. */
static void apply_one(dsc_ledger *l, dsc__rec *rec) {
    if (rec->type >= DSC__REC_DECISION || rec->acked) return;
    dsc__shard *sh = dsc__shard_of(l, rec->reservation_id);
    pthread_mutex_lock(&sh->mu);
    dsc__reservation *r = dsc__strmap_get(&sh->reservations, rec->reservation_id);
    if (r) apply_locked(l, r, rec);
    pthread_mutex_unlock(&sh->mu);
}

/* --- budgets changed through the writer ------------------------------------------ */

typedef struct budget_replay {
    dsc_ledger *l;
    dsc__budget *b;
    dsc__strmap counters; /* b's counters while it is not indexed yet */
} budget_replay;

static dsc_status replay_into_budget(void *ud, const dsc__rec *charge) {
    budget_replay *br = ud;
    const dsc__rec_subject *rs = &charge->subject;
    dsc_subject s = {rs->org, rs->team, rs->user, rs->key};
    int64_t v = charge->amounts.v[br->b->metric];
    if (!v || !dsc__budget_applies(br->b, &s)) return DSC_OK;
    bool created;
    dsc__counter *c = dsc__budget_counter(&br->counters, br->b, &s, &created);
    if (!c) return DSC_NOMEM;
    dsc_window_counter_add(&c->wc, &br->b->win, &br->l->tz, v, charge->at_us);
    return DSC_OK;
}

/* Whether b counts every charge of an hour alike (so the store may hand it an hour's
 * sum at the hour's start): a calendar window whose periods start on the hour (a
 * fixed offset of whole hours), or a rolling window of whole-hour buckets. */
static bool counts_hours_alike(const dsc__budget *b, const dsc_tz *tz) {
    if (b->win.kind <= DSC_WINDOW_YEAR) return !tz->local && tz->offset_s % 3600 == 0;
    if (b->win.kind == DSC_WINDOW_ROLLING)
        return (b->win.span_us / DSC_WINDOW_BUCKETS) % (3600 * 1000000LL) == 0;
    return false;
}

/* For b over every value of a level (team:*) that counts hours alike: the spans its
 * window counts by, so the store may sum the rolled-up hours per value and span (a
 * calendar window: its current period, earlier hours being earlier periods; a rolling
 * one: its buckets, from the one holding since). */
static void by_level_of(const dsc__budget *b, const dsc_tz *tz, int64_t now, int64_t since,
                        dsc__replay_filter *f) {
    if (!b->any || b->level == LV_ALL || !f->hourly_before_us) return;
    if (b->win.kind == DSC_WINDOW_ROLLING) {
        int64_t w = b->win.span_us / DSC_WINDOW_BUCKETS;
        f->by_from_us = since - ((since % w) + w) % w;
        f->by_span_us = w;
        f->by_until_us = INT64_MAX;
    } else {
        const int64_t us = 1000000;
        int64_t start, end;
        dsc_window_period(&b->win, tz, now / us - (now % us < 0), &start, &end);
        f->by_from_us = start * us;
        f->by_until_us = end * us;
        f->by_span_us = f->by_until_us - f->by_from_us;
    }
    f->by_level = (int)b->level;
}

/* The charges b can apply to, as a store pre-filter, read from since on at now; names
 * point into bufs. */
static void replay_filter_of(const dsc__budget *b, const dsc_tz *tz, int64_t now, int64_t since,
                             dsc__replay_filter *f, char bufs[2][DSC_SELECTOR_MAX]) {
    memset(f, 0, sizeof *f);
    f->metric = b->metric;
    f->hourly_before_us = counts_hours_alike(b, tz) ? INT64_MAX : 0;
    by_level_of(b, tz, now, since, f);
    if (b->level == LV_ALL) return;
    const char *part = b->selector; /* "[org:<org>/]<level>:<value>" */
    if (b->qualified) {
        const char *slash = strchr(part, '/');
        snprintf(bufs[0], DSC_SELECTOR_MAX, "%.*s", (int)(slash - part - 4), part + 4);
        f->subject[0] = bufs[0];
        part = slash + 1;
    }
    snprintf(bufs[1], DSC_SELECTOR_MAX, "%s", b->any ? "" : strchr(part, ':') + 1);
    f->subject[b->level - LV_ORG] = bufs[1];
}

/* A new budget counts the usage already in its window: the store's charges are
 * replayed into it before it is indexed. The bulk is read on the caller's thread from
 * the store's reader connection (dsc__budget_history_read), while the writer goes on
 * committing; the writer then adds the charges committed since (after seq) and
 * indexes it. Only the writer applies charges to indexed budgets, so nothing is
 * counted twice or missed. */
struct dsc__budget_history {
    budget_replay br; /* the budget, and its counters while it is not indexed */
    int64_t seq;      /* the stored charges up to this seq are counted into it */
    bool read;        /* the reader counted them: the writer needs only those after */
};

static struct dsc__budget_history *history_new(dsc_ledger *l, const dsc__rec_budget *rb) {
    struct dsc__budget_history *h = calloc(1, sizeof *h);
    if (!h) return NULL;
    if (dsc__budget_new(rb->selector, rb->metric, rb->window, &h->br.b, NULL) != DSC_OK) {
        free(h);
        return NULL;
    }
    h->br.l = l;
    h->br.b->id = rb->id;
    h->br.b->limit = rb->limit;
    dsc__strmap_init(&h->br.counters);
    return h;
}

void dsc__budget_history_free(struct dsc__budget_history *h) {
    if (!h) return;
    dsc__budget_drop_counters(h->br.b);
    free(h->br.b);
    dsc__strmap_destroy(&h->br.counters);
    free(h);
}

/* Count into h the charges of its window stored after h->seq (all when 0), on the
 * reader connection or the writer's. On failure h counts nothing (seq 0). */
static dsc_status history_replay(struct dsc__budget_history *h, int64_t now, bool reader) {
    dsc__budget *b = h->br.b;
    dsc__replay_filter filter;
    char bufs[2][DSC_SELECTOR_MAX];
    int64_t since = now - dsc__window_reach(b);
    replay_filter_of(b, &h->br.l->tz, now, since, &filter, bufs);
    filter.after_seq = h->seq;
    dsc__store *store = h->br.l->store;
    dsc_status st =
        reader ? dsc__store_replay_read(store, since, &filter, replay_into_budget, &h->br, &h->seq)
               : dsc__store_replay(store, since, &filter, replay_into_budget, &h->br, &h->seq);
    if (st != DSC_OK) {
        dsc__strmap_destroy(&h->br.counters);
        dsc__budget_drop_counters(b);
        dsc__strmap_init(&h->br.counters);
        h->seq = 0;
    }
    return st;
}

struct dsc__budget_history *dsc__budget_history_read(dsc_ledger *l, const dsc__rec_budget *rb) {
    struct dsc__budget_history *h = history_new(l, rb);
    if (h) h->read = history_replay(h, dsc__ledger_now(l), true) == DSC_OK;
    return h;
}

/* The writer's part: the rest of a new budget's history (all of it when nothing was
 * read before), then the budget itself; consumes h. */
static dsc__budget *history_finish(struct dsc__budget_history *h, int64_t now) {
    if (!h->read || h->seq != dsc__store_charge_seq(h->br.l->store)) /* !read: seq is 0 */
        history_replay(h, now, false); /* failing, it counts from now on only */
    dsc__budget *b = h->br.b;
    dsc__strmap_destroy(&h->br.counters);
    free(h);
    return b;
}

static void apply_budget(dsc_ledger *l, dsc__rec *rec) {
    const dsc__rec_budget *rb = &rec->u.budget;
    char ident[DSC_SELECTOR_MAX + DSC_WINDOW_MAX + 16];
    dsc__budget_ident(ident, sizeof ident, rb->selector, rb->metric, rb->window);
    dsc__budgets_write(l);
    dsc__budget *old = dsc__strmap_get(&l->budgets, ident);
    int64_t now = dsc__ledger_now(l);
    struct dsc__budget_history *h = rb->history;
    rec->u.budget.history = NULL;
    if (rec->type == DSC__REC_BUDGET_DELETE || old) {
        if (rec->type == DSC__REC_BUDGET_DELETE && old && old->id == rb->id)
            dsc__budget_remove(l, old);
        else if (rec->type == DSC__REC_BUDGET_SET)
            old->limit = rb->limit;
        dsc__budgets_done(l);
        dsc__budget_history_free(h); /* read for nothing: another set created it first */
        return;
    }
    dsc__budgets_done(l);
    if (!h && !(h = history_new(l, rb))) return;
    dsc__budget *b = history_finish(h, now);
    dsc__budgets_write(l);
    if (dsc__strmap_get(&l->budgets, ident) || dsc__budget_insert(l, b) != DSC_OK) {
        dsc__budget_drop_counters(b);
        free(b);
    }
    dsc__budgets_done(l);
}

void dsc__ledger_apply(void *ud, dsc__rec **recs, size_t n) {
    dsc_ledger *l = ud;
    for (size_t i = 0; i < n; i++)
        if (recs[i]->status == DSC_OK) apply_one(l, recs[i]);
    for (size_t i = n; i-- > 0;) /* failures are undone newest first */
        if (recs[i]->status != DSC_OK) apply_one(l, recs[i]);
    /* budgets last: a new one replays every charge committed so far, this batch's too */
    for (size_t i = 0; i < n; i++) {
        if (recs[i]->type != DSC__REC_BUDGET_SET && recs[i]->type != DSC__REC_BUDGET_DELETE)
            continue;
        if (recs[i]->status == DSC_OK) {
            apply_budget(l, recs[i]);
        } else {
            dsc__budget_history_free(recs[i]->u.budget.history);
            recs[i]->u.budget.history = NULL;
        }
    }
}

/* --- rebuilding from the store ------------------------------------------------ */

typedef struct rebuild {
    dsc_ledger *l;
    int64_t now;
    dsc__rec_subject last; /* the previous charge's subject and its budgets */
    dsc__hit hits[DSC__HITS_MAX];
    size_t nh;
    bool have_last;
} rebuild;

static dsc_subject subject_of(const dsc__rec_subject *s) {
    return (dsc_subject){s->org, s->team, s->user, s->key};
}

static dsc_status load_budget(void *ud, const dsc__rec_budget *rb) {
    rebuild *rb_ = ud;
    dsc__budget *b = NULL;
    dsc_status st = dsc__budget_new(rb->selector, rb->metric, rb->window, &b, NULL);
    if (st == DSC_NOMEM) return st;
    if (st != DSC_OK) return DSC_OK; /* a row edited by hand into nonsense: skipped */
    b->id = rb->id;
    b->limit = rb->limit;
    if (dsc__budget_insert(rb_->l, b) == DSC_OK) return DSC_OK;
    free(b);
    return DSC_NOMEM;
}

static dsc__reservation *load_reservation(rebuild *rb, const dsc__rec *rec) {
    dsc_subject s = subject_of(&rec->subject);
    dsc__hit hits[DSC__HITS_MAX];
    size_t nh = 0;
    if (dsc__match(rb->l, NULL, &s, true, hits, &nh, NULL) != DSC_OK) return NULL;
    const dsc__rec_decision *d = &rec->u.decision;
    dsc__hold_what what = {d->provider, d->model, d->zone, d->purpose, d->key_id};
    dsc__reservation *r =
        dsc__reservation_new(rec->reservation_id, rec->request_id, &s, &what, hits, nh);
    if (!r) return NULL;
    if (dsc__ledger_loaded(rb->l, r) != DSC_OK || dsc__reservation_index(rb->l, r) != DSC_OK) {
        free(r);
        return NULL;
    }
    return r;
}

static dsc_status load_held(void *ud, const dsc__rec *rec, int64_t created_us) {
    rebuild *rb = ud;
    dsc__reservation *r = load_reservation(rb, rec);
    if (!r) return DSC_NOMEM;
    r->state = RS_HELD;
    r->held = rec->amounts;
    r->created_us = created_us;
    r->expires_us = rec->expires_us;
    dsc__reservation_hold(rb->l, r, +1);
    r->shard->n_held++;
    return dsc__heap_push(rb->l, r);
}

static dsc_status load_finished(void *ud, const dsc__rec *rec, int64_t finished_us) {
    rebuild *rb = ud;
    dsc__reservation *r = load_reservation(rb, rec);
    if (!r) return DSC_NOMEM;
    r->charged = rec->amounts;
    dsc__rstate st = dsc__rstate_parse(rec->state);
    r->state = st == RS_NONE ? RS_SETTLED : st;
    dsc__reservation_finish(rb->l, r, r->state, finished_us);
    return DSC_OK;
}

static bool same_subject(const dsc__rec_subject *a, const dsc__rec_subject *b) {
    return strcmp(a->org, b->org) == 0 && strcmp(a->team, b->team) == 0 &&
           strcmp(a->user, b->user) == 0 && strcmp(a->key, b->key) == 0;
}

static dsc_status load_charge(void *ud, const dsc__rec *rec) {
    rebuild *rb = ud;
    if (!rb->have_last || !same_subject(&rb->last, &rec->subject)) {
        dsc_subject s = subject_of(&rec->subject);
        if (dsc__check_name("org", s.org, NULL) || dsc__check_name("team", s.team, NULL) ||
            dsc__check_name("user", s.user, NULL) || dsc__check_name("key", s.key, NULL))
            return DSC_OK; /* not a subject the ledger could have written: skipped */
        dsc_status st = dsc__match(rb->l, NULL, &s, true, rb->hits, &rb->nh, NULL);
        if (st != DSC_OK) return st;
        rb->last = rec->subject;
        rb->have_last = true;
    }
    for (size_t i = 0; i < rb->nh; i++) {
        dsc__counter *c = rb->hits[i].c;
        int64_t v = rec->amounts.v[c->b->metric];
        if (v) dsc_window_counter_add(&c->wc, &c->b->win, &rb->l->tz, v, rec->at_us);
    }
    return DSC_OK;
}

int64_t dsc__window_reach(const dsc__budget *b) {
    switch (b->win.kind) {
    case DSC_WINDOW_DAY:
        return 2 * 86400LL * 1000000;
    case DSC_WINDOW_WEEK:
        return 8 * 86400LL * 1000000;
    case DSC_WINDOW_MONTH:
        return 32 * 86400LL * 1000000;
    case DSC_WINDOW_YEAR:
        return 367 * 86400LL * 1000000;
    case DSC_WINDOW_ROLLING:
        return b->win.span_us + b->win.span_us / DSC_WINDOW_BUCKETS;
    default: /* a token bucket empties in limit / rate periods */
        return (int64_t)((double)b->limit / (double)b->win.rate_micro * (double)b->win.span_us) +
               b->win.span_us;
    }
}

/* How far back any budget's window reaches from now (µs). */
static int64_t longest_window(dsc_ledger *l) {
    int64_t longest = 0;
    for (size_t i = 0; i < l->n_live; i++) {
        int64_t span = dsc__window_reach(l->live[i]);
        if (span > longest) longest = span;
    }
    return longest;
}

/* Before when every budget counts an hour's charges alike (INT64_MAX: always). */
static int64_t hourly_before(dsc_ledger *l, int64_t now) {
    int64_t before = INT64_MAX;
    for (size_t i = 0; i < l->n_live; i++)
        if (!counts_hours_alike(l->live[i], &l->tz) && now - dsc__window_reach(l->live[i]) < before)
            before = now - dsc__window_reach(l->live[i]);
    return before;
}

static void budgets_loaded(void *ud, dsc__store_loader *ld) {
    rebuild *rb = ud;
    ld->since_us = rb->now - longest_window(rb->l);
    ld->hourly_before_us = hourly_before(rb->l, rb->now);
    ld->finished_since_us = rb->now - rb->l->retain_us;
    ld->finished_max = rb->l->retain_max;
}

dsc_status dsc__ledger_store_open(dsc_ledger *l, const dsc_ledger_config *cfg, dsc_error *err) {
    dsc_error local;
    if (!err) err = &local;
    dsc__store_options o = {.durability = l->durability,
                            .batch_ms = cfg->batch_ms,
                            .retention_us = cfg->journal_retention_s * 1000000};
    l->store = dsc__store_open(cfg->store_path, &o, err);
    if (!l->store) return err->code;
    rebuild *rb = calloc(1, sizeof *rb);
    if (!rb) return dsc_error_set(err, DSC_NOMEM, "out of memory rebuilding the ledger");
    rb->l = l;
    rb->now = dsc__ledger_now(l);
    dsc__store_loader ld = {.ud = rb,
                            .budget = load_budget,
                            .budgets_done = budgets_loaded,
                            .held = load_held,
                            .finished = load_finished,
                            .charge = load_charge};
    dsc_status st = dsc__store_load(l->store, &ld, err);
    free(rb);
    if (st != DSC_OK) return st;
    return dsc__store_start(l->store, dsc__ledger_apply, l, err);
}

dsc_status dsc__ledger_store_exec(dsc_ledger *l, const char *sql, dsc_error *err) {
    if (!l->store) return dsc_error_set(err, DSC_BAD_REQUEST, "this ledger has no store");
    return dsc__store_exec(l->store, sql, err);
}
