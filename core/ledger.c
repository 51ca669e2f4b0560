/*
 * ledger.c - the reserve -> settle -> cancel protocol over budgets (see ledger.h).
 *
 * Everything lives under one mutex: a reserve is a handful of hash lookups and
 * additions, far shorter than any I/O, so one lock keeps the all-or-nothing check
 * and the holds atomic without ordering problems between budgets.
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
 * Expiry uses a min-heap on expires_us; finished reservations stay on a FIFO list
 * for retain_s (at most retain_max of them) so that repeated settles and reserves
 * get the same answer; with a store, older ones are looked up there.
 */
#include "ledger_internal.h"

#include "discern/random.h"

#include <ctype.h>
#include <math.h>
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

static void heap_set(dsc_ledger *l, size_t i, dsc__reservation *r) {
    l->heap[i] = r;
    r->heap_idx = i;
}

static void heap_up(dsc_ledger *l, size_t i) {
    dsc__reservation *r = l->heap[i];
    while (i > 0 && l->heap[(i - 1) / 2]->expires_us > r->expires_us) {
        heap_set(l, i, l->heap[(i - 1) / 2]);
        i = (i - 1) / 2;
    }
    heap_set(l, i, r);
}

static void heap_down(dsc_ledger *l, size_t i) {
    dsc__reservation *r = l->heap[i];
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= l->heap_n) break;
        if (c + 1 < l->heap_n && l->heap[c + 1]->expires_us < l->heap[c]->expires_us) c++;
        if (l->heap[c]->expires_us >= r->expires_us) break;
        heap_set(l, i, l->heap[c]);
        i = c;
    }
    heap_set(l, i, r);
}

dsc_status dsc__heap_push(dsc_ledger *l, dsc__reservation *r) {
    if (l->heap_n == l->heap_cap) {
        size_t cap = l->heap_cap ? l->heap_cap * 2 : 256;
        dsc__reservation **h = realloc(l->heap, cap * sizeof *h);
        if (!h) return DSC_NOMEM;
        l->heap = h;
        l->heap_cap = cap;
    }
    l->heap[l->heap_n++] = r;
    heap_up(l, l->heap_n - 1);
    return DSC_OK;
}

void dsc__heap_remove(dsc_ledger *l, dsc__reservation *r) {
    size_t i = r->heap_idx;
    if (i == SIZE_MAX) return;
    r->heap_idx = SIZE_MAX;
    dsc__reservation *last = l->heap[--l->heap_n];
    if (i == l->heap_n) return;
    heap_set(l, i, last);
    heap_up(l, i);
    heap_down(l, last->heap_idx);
}

static size_t str_size(const char *s) {
    return s && *s ? strlen(s) + 1 : 1;
}

static const char *put_str(char **tail, const char *s) {
    char *start = *tail;
    size_t n = str_size(s);
    if (s && *s)
        memcpy(start, s, n);
    else
        start[0] = '\0';
    *tail += n;
    return start;
}

dsc__reservation *dsc__reservation_new(const char *id, const char *request_id, const dsc_subject *s,
                                       const dsc__hold_what *what, const dsc__hit *hits, size_t n) {
    dsc__hold_what none = {0};
    const dsc__hold_what *w = what ? what : &none;
    size_t strs = str_size(s->org) + str_size(s->team) + str_size(s->user) + str_size(s->key) +
                  str_size(w->provider) + str_size(w->model) + str_size(w->zone) +
                  str_size(w->purpose);
    dsc__reservation *r = calloc(1, sizeof *r + n * sizeof r->counters[0] + strs);
    if (!r) return NULL;
    copy_str(r->id, sizeof r->id, id);
    if (request_id) copy_str(r->request_id, sizeof r->request_id, request_id);
    r->heap_idx = SIZE_MAX;
    r->n = n;
    for (size_t i = 0; i < n; i++)
        r->counters[i] = hits[i].c;
    char *tail = (char *)&r->counters[n];
    r->org = put_str(&tail, s->org);
    r->team = put_str(&tail, s->team);
    r->user = put_str(&tail, s->user);
    r->key = put_str(&tail, s->key);
    r->provider = put_str(&tail, w->provider);
    r->model = put_str(&tail, w->model);
    r->zone = put_str(&tail, w->zone);
    r->purpose = put_str(&tail, w->purpose);
    return r;
}

dsc_status dsc__reservation_index(dsc_ledger *l, dsc__reservation *r) {
    r->epoch = l->budget_epoch; /* every reservation is indexed right after matching */
    if (dsc__strmap_put(&l->reservations, r->id, r) != DSC_OK) return DSC_NOMEM;
    if (!r->request_id[0] || dsc__strmap_get(&l->requests, r->request_id)) return DSC_OK;
    if (dsc__strmap_put(&l->requests, r->request_id, r) == DSC_OK) return DSC_OK;
    dsc__strmap_del(&l->reservations, r->id);
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

void dsc__reservation_hold(dsc__reservation *r, int sign) {
    for (size_t i = 0; i < r->n; i++) {
        dsc__counter *c = r->counters[i];
        int64_t v = r->held.v[c->b->metric];
        c->held = sign > 0 ? sat_add(c->held, v) : sat_sub(c->held, v);
    }
}

static void charge_counter(dsc_ledger *l, dsc__counter *c, const dsc_amounts *a, int64_t at_us) {
    int64_t v = a->v[c->b->metric];
    if (v) dsc_window_counter_add(&c->wc, &c->b->win, &l->tz, v, at_us);
}

void dsc__reservation_charge(dsc_ledger *l, dsc__reservation *r, const dsc_amounts *a,
                             int64_t at_us) {
    for (int m = 0; m < DSC_METRIC_COUNT; m++)
        r->charged.v[m] += a->v[m];
    dsc__hit hits[DSC__HITS_MAX];
    size_t nh = 0;
    dsc_subject s = {r->org, r->team, r->user, r->key};
    /* Budgets changed since the hold: usage goes to the budgets that apply now, as a
     * restart would count it. On failure (out of memory), to those of the hold. */
    if (r->epoch != l->budget_epoch && dsc__match(l, &s, true, hits, &nh, NULL) == DSC_OK) {
        for (size_t i = 0; i < nh; i++)
            charge_counter(l, hits[i].c, a, at_us);
        return;
    }
    for (size_t i = 0; i < r->n; i++)
        charge_counter(l, r->counters[i], a, at_us);
}

static void finished_unlink(dsc_ledger *l, dsc__reservation *r) {
    if (!r->finished_us) return;
    if (r->fprev)
        r->fprev->fnext = r->fnext;
    else
        l->fhead = r->fnext;
    if (r->fnext)
        r->fnext->fprev = r->fprev;
    else
        l->ftail = r->fprev;
    r->fprev = r->fnext = NULL;
    r->finished_us = 0;
    l->n_finished--;
}

void dsc__reservation_finish(dsc_ledger *l, dsc__reservation *r, dsc__rstate st, int64_t at_us) {
    if (r->prev == RS_HELD || r->state == RS_HELD) l->n_held--;
    r->state = st;
    finished_unlink(l, r);
    r->finished_us = at_us > 0 ? at_us : 1;
    r->fprev = l->ftail;
    r->fnext = NULL;
    if (l->ftail)
        l->ftail->fnext = r;
    else
        l->fhead = r;
    l->ftail = r;
    l->n_finished++;
}

void dsc__reservation_drop(dsc_ledger *l, dsc__reservation *r) {
    dsc__heap_remove(l, r);
    finished_unlink(l, r);
    dsc__strmap_del_if(&l->reservations, r->id, r);
    if (r->request_id[0]) dsc__strmap_del_if(&l->requests, r->request_id, r);
    free(r);
}

static void forget_old(dsc_ledger *l, int64_t now) {
    while (l->fhead &&
           (l->n_finished > l->retain_max || l->fhead->finished_us < now - l->retain_us))
        dsc__reservation_drop(l, l->fhead);
}

/* --- expiry ------------------------------------------------------------------ */

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

static size_t expire_due(dsc_ledger *l, int64_t now) {
    size_t n = 0;
    while (l->heap_n && l->heap[0]->expires_us <= now) {
        if (!expire_one(l, l->heap[0], now)) break;
        n++;
    }
    return n;
}

/* --- ids a crash may have lost ------------------------------------------------- */

#define RID_RANDOM_BYTES 12 /* 96 bits: an id cannot be guessed */
#define RID_ORDER_HEX 12    /* then a counter seeded from the clock, in front */
#define RID_LEN (1 + RID_ORDER_HEX + 2 * RID_RANDOM_BYTES)
#define RID_ORDER_MASK ((UINT64_C(1) << (4 * RID_ORDER_HEX)) - 1)
#define RID_ORDER_HALF (UINT64_C(1) << (4 * RID_ORDER_HEX - 1))
#define HOLD_TTL_MAX_S (7 * 86400) /* the longest a hold may live */

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

void dsc__ledger_loaded_rid(dsc_ledger *l, const char *id) {
    uint64_t v;
    if (!rid_order(id, &v)) return;
    if (!l->have_durable_rid || order_after(v, l->durable_rid)) l->durable_rid = v;
    l->have_durable_rid = true;
}

/* After the store is loaded: this ledger's ids start after every stored one (also
 * when the clock went back), and the ids between the newest stored one and the
 * first of this run are the ones a crash can have lost. A check is acknowledged once
 * its hold is queued (journal_reserve) and the log is ordered, so a lost hold's id
 * comes after every durable one; a previous run made it, so it comes before ours.
 * With no hold stored (none open, none finished within retain_s), the gap reaches
 * back as long as the longest hold lives (HOLD_TTL_MAX_S). */
static void lost_gap_open(dsc_ledger *l) {
    uint64_t start = l->next_rid & RID_ORDER_MASK;
    if (l->have_durable_rid && !order_after(start, l->durable_rid)) {
        start = (l->durable_rid + 1) & RID_ORDER_MASK;
        l->next_rid = start;
    }
    if (!l->have_durable_rid)
        l->durable_rid = (start - (uint64_t)HOLD_TTL_MAX_S * 1000000) & RID_ORDER_MASK;
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

dsc_ledger *dsc_ledger_new(const dsc_ledger_config *cfg, dsc_error *err) {
    dsc_ledger_config none = {0};
    if (!cfg) cfg = &none;
    dsc_ledger *l = calloc(1, sizeof *l);
    if (!l) {
        dsc_error_set(err, DSC_NOMEM, "out of memory allocating the ledger");
        return NULL;
    }
    if (pthread_mutex_init(&l->mu, NULL) != 0) {
        free(l);
        dsc_error_set(err, DSC_INTERNAL, "cannot create the ledger's mutex");
        return NULL;
    }
    dsc__strmap_init(&l->budgets);
    dsc__strmap_init(&l->sels);
    dsc__strmap_init(&l->counters);
    dsc__strmap_init(&l->reservations);
    dsc__strmap_init(&l->requests);
    l->next_budget_id = 1;
    if (config_apply(l, cfg, err) != DSC_OK) goto fail;
    l->next_rid = (uint64_t)dsc__ledger_now(l);
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
    dsc__strmap_each(&l->reservations, free_reservation, NULL);
    dsc__budgets_free(l);
    dsc__strmap_destroy(&l->budgets);
    dsc__strmap_destroy(&l->sels);
    dsc__strmap_destroy(&l->counters);
    dsc__strmap_destroy(&l->reservations);
    dsc__strmap_destroy(&l->requests);
    free(l->heap);
    pthread_mutex_destroy(&l->mu);
    free(l);
}

/* --- preview and reserve ------------------------------------------------------ */

static void fill_state(dsc_ledger *l, const dsc__hit *h, const dsc_subject *s, int64_t request,
                       int64_t now, dsc_budget_state *out) {
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
        out->used = dsc_window_counter_used(&h->c->wc, &b->win, &l->tz, now);
        out->held = h->c->held;
        out->resets_at = dsc_window_counter_resets_at(&h->c->wc, &b->win, now);
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
    pthread_mutex_lock(&l->mu);
    int64_t now = dsc__ledger_now(l);
    expire_due(l, now);
    st = dsc__match(l, subject, false, hits, &nh, err);
    for (size_t i = 0; st == DSC_OK && i < nh && i < max; i++)
        fill_state(l, &hits[i], subject, request->v[hits[i].b->metric], now, &out[i]);
    pthread_mutex_unlock(&l->mu);
    if (n) *n = nh;
    return st;
}

static int counter_name_cmp(const void *a, const void *b) {
    const dsc__counter *x = *(dsc__counter *const *)a, *y = *(dsc__counter *const *)b;
    return strcmp(x->key + x->name_off, y->key + y->name_off);
}

/* b's counters ordered by name, from the skip-th, appended to out[*n..max) (mu held). */
static dsc_status budget_counter_states(dsc_ledger *l, dsc__budget *b, size_t skip, int64_t now,
                                        dsc_budget_state *out, size_t max, size_t *n) {
    dsc__counter **v = malloc(b->n_counters * sizeof *v);
    if (!v) return DSC_NOMEM;
    size_t k = 0;
    for (dsc__counter *c = b->counters; c && k < b->n_counters; c = c->next)
        v[k++] = c;
    qsort(v, k, sizeof *v, counter_name_cmp);
    for (size_t i = skip; i < k && *n < max; i++)
        fill_state(l, &(dsc__hit){b, v[i]}, NULL, 0, now, &out[(*n)++]);
    free(v);
    return DSC_OK;
}

dsc_status dsc_ledger_counter_list(dsc_ledger *l, size_t offset, dsc_budget_state *out, size_t max,
                                   size_t *n, size_t *total, dsc_error *err) {
    size_t got = 0, seen = 0;
    dsc_status st = DSC_OK;
    if (!out) max = 0;
    pthread_mutex_lock(&l->mu);
    int64_t now = dsc__ledger_now(l);
    expire_due(l, now);
    for (size_t i = 0; i < l->n_live; i++) {
        dsc__budget *b = l->live[i];
        size_t first = seen;
        seen += b->n_counters;
        if (st != DSC_OK || got == max || seen <= offset || b->n_counters == 0) continue;
        size_t skip = offset > first ? offset - first : 0;
        st = budget_counter_states(l, b, skip, now, out, max, &got);
    }
    pthread_mutex_unlock(&l->mu);
    if (n) *n = st == DSC_OK ? got : 0;
    if (total) *total = seen;
    if (st != DSC_OK) return dsc_error_set(err, st, "out of memory listing counters");
    return DSC_OK;
}

/* The budgets amounts would exceed, into exceeded; how many there are. */
static size_t find_exceeded(dsc_ledger *l, const dsc__hit *hits, size_t nh, const dsc_subject *s,
                            const dsc_amounts *a, int64_t now, dsc_budget_state *exceeded,
                            size_t max) {
    size_t n = 0;
    for (size_t i = 0; i < nh; i++) {
        const dsc__hit *h = &hits[i];
        int64_t req = a->v[h->b->metric];
        int64_t used = dsc_window_counter_used(&h->c->wc, &h->b->win, &l->tz, now);
        if (sat_add(sat_add(used, h->c->held), req) <= h->b->limit) continue;
        if (n < max) fill_state(l, h, s, req, now, &exceeded[n]);
        n++;
    }
    return n;
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

/* "r" + 12 hex digits of a counter + 24 random hex digits. The counter only orders
 * the ids (seeded from the clock at open, so later ids sort later across restarts):
 * the store's reservations table is keyed by id, and ids in order append to its
 * B-tree instead of dirtying a random page per hold (measured: random ids alone cost
 * about 20 us of server CPU per check + settle at pipeline 1). The random part is
 * what makes an id unguessable. */
static dsc_status new_rid(dsc_ledger *l, char id[DSC_RESERVATION_ID_MAX]) {
    static const char hex[] = "0123456789abcdef";
    uint8_t b[RID_RANDOM_BYTES];
    if (dsc_random_bytes(b, sizeof b, NULL) != DSC_OK) return DSC_IO;
    uint64_t v = l->next_rid++;
    id[0] = 'r';
    for (int i = RID_ORDER_HEX; i >= 1; i--, v >>= 4)
        id[i] = hex[v & 15];
    dsc_random_hex(b, sizeof b, id + 1 + RID_ORDER_HEX);
    return DSC_OK;
}

/* Create, index and hold a new reservation (mu held). */
static dsc_status hold_new(dsc_ledger *l, const dsc_subject *s, const dsc_amounts *a, int64_t now,
                           int64_t ttl_s, const char *request_id, const dsc__hold_what *what,
                           const dsc__hit *hits, size_t nh, dsc__reservation **out) {
    char id[DSC_RESERVATION_ID_MAX];
    do {
        if (new_rid(l, id) != DSC_OK) return DSC_IO;
    } while (dsc__strmap_get(&l->reservations, id)); /* 2^-96 per id: practically never */
    dsc__reservation *r = dsc__reservation_new(id, request_id, s, what, hits, nh);
    if (!r) return DSC_NOMEM;
    r->state = RS_HELD;
    r->held = *a;
    r->created_us = now;
    r->expires_us = now + ttl_s * 1000000;
    if (dsc__reservation_index(l, r) != DSC_OK) goto fail;
    if (dsc__heap_push(l, r) != DSC_OK) goto fail_index;
    dsc__reservation_hold(r, +1);
    l->n_held++;
    *out = r;
    return DSC_OK;
fail_index:
    dsc__strmap_del(&l->reservations, r->id);
    if (dsc__strmap_get(&l->requests, r->request_id) == r)
        dsc__strmap_del(&l->requests, r->request_id);
fail:
    free(r);
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

/* Queue rec with done's completion (mu held). Not acked: *wait_rec is set when the
 * caller must wait, else done hears of the commit. Acked (acknowledged once queued):
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

/* Queue rec as the ledger's durability says (mu held); see enqueue_as. */
static dsc_status enqueue(dsc_ledger *l, dsc__rec *rec, dsc__done *done, dsc__rec **wait_rec) {
    return enqueue_as(l, rec, acked_when_queued(l), done, wait_rec);
}

/* Journal a new hold (mu held), in dec (its decision, already copied in) when given;
 * dec is consumed either way. Acknowledged once queued under every durability while
 * the store is healthy: the hold is in memory, so it already keeps concurrent checks
 * from overshooting, and the log is ordered, so the settle that waits for its own
 * commit makes this record durable too (one commit wait per decision, not two). A
 * crash before the commit loses the hold; its settle is then charged as unreserved
 * (see lost_hold). While the last commit failed, a reserve under durability full
 * waits for its own commit as a settle does: it is refused while the store fails,
 * and the first one after the store recovers goes through (no probe to wait for). */
static dsc_status journal_reserve(dsc_ledger *l, dsc__reservation *r, dsc__rec *dec,
                                  dsc__done *done, dsc__rec **wait_rec, dsc_error *err) {
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
    bool acked = acked_when_queued(l) || dsc__store_healthy(l->store);
    dsc_status st = rec ? enqueue_as(l, rec, acked, done, wait_rec) : DSC_NOMEM;
    if (st != DSC_OK) {
        dsc__apply_reserve_failed(l, r);
        return dsc_error_set(err, st,
                             st == DSC_NOMEM ? "out of memory"
                                             : "the ledger store is failing; nothing was reserved");
    }
    r->committing = !acked;
    if (dec) l->decisions++;
    return DSC_OK;
}

static dsc_status wait_rec(dsc_ledger *l, dsc__rec *rec, dsc_error *err) {
    if (!rec) return DSC_OK;
    dsc_status st = dsc__store_wait(l->store, rec);
    if (st != DSC_OK) dsc_error_set(err, st, "%s", rec->message);
    free(rec);
    return st;
}

static dsc_status decision_copy(const dsc_decision_record *d, dsc__rec *rec, dsc_error *err);

/* The record a check's decision goes into, validated (before anything is held); NULL
 * with *st DSC_OK when there is none to write. */
static dsc__rec *decision_rec(dsc_ledger *l, const dsc_decision_record *d, dsc_status *st,
                              dsc_error *err) {
    *st = DSC_OK;
    if (!d) return NULL;
    dsc__rec *rec = calloc(1, sizeof *rec);
    if (!rec) {
        *st = dsc_error_set(err, DSC_NOMEM, "out of memory journaling a decision");
        return NULL;
    }
    if ((*st = decision_copy(d, rec, err)) == DSC_OK && l->store) return rec;
    free(rec);
    return NULL;
}

/* A repeated request_id (mu held): the same reservation, and the decision (if any)
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
    l->decisions++;
    return DSC_OK;
}

static dsc_status reserve_impl(dsc_ledger *l, const dsc_subject *subject,
                               const dsc_amounts *amounts, int64_t ttl_s, const char *request_id,
                               char reservation_id[DSC_RESERVATION_ID_MAX],
                               dsc_budget_state *exceeded, size_t max_exceeded, size_t *n_exceeded,
                               const dsc_decision_record *decision, dsc__done *done,
                               dsc_error *err) {
    dsc_subject none = {0};
    if (!subject) subject = &none;
    if (n_exceeded) *n_exceeded = 0;
    if (!amounts) return dsc_error_set(err, DSC_BAD_REQUEST, "field 'amounts' is missing");
    if (!reservation_id)
        return dsc_error_set(err, DSC_BAD_REQUEST, "no buffer for the reservation id");
    if (!exceeded) max_exceeded = 0;
    dsc_status st = reserve_validate(subject, amounts, ttl_s, request_id, err);
    if (st != DSC_OK) return st;
    dsc__rec *dec = decision_rec(l, decision, &st, err);
    if (st != DSC_OK) return st;
    if (request_id && !*request_id) request_id = NULL;
    dsc__hit hits[DSC__HITS_MAX];
    size_t nh = 0;
    dsc__reservation *r = NULL;
    dsc__rec *rec = NULL;
    pthread_mutex_lock(&l->mu);
    int64_t now = dsc__ledger_now(l);
    expire_due(l, now);
    forget_old(l, now);
    if (request_id && (r = dsc__strmap_get(&l->requests, request_id))) {
        st = reserve_repeated(l, r, dec, now, reservation_id, done, &rec, err);
        dec = NULL;
        goto out;
    }
    if ((st = dsc__match(l, subject, true, hits, &nh, err)) != DSC_OK) goto out;
    size_t nx = find_exceeded(l, hits, nh, subject, amounts, now, exceeded, max_exceeded);
    if (n_exceeded) *n_exceeded = nx;
    if (nx) {
        st = dsc_error_set(err, DSC_BUDGET_EXCEEDED, "%zu budget%s would be exceeded", nx,
                           nx == 1 ? "" : "s");
        goto out;
    }
    dsc__hold_what what = {0};
    if (decision)
        what = (dsc__hold_what){decision->provider, decision->model, decision->zone,
                                decision->purpose};
    st = hold_new(l, subject, amounts, now, ttl_s, request_id, &what, hits, nh, &r);
    if (st != DSC_OK) {
        dsc_error_set(err, st,
                      st == DSC_IO ? "no random bytes for a reservation id"
                                   : "out of memory holding a reservation");
        goto out;
    }
    copy_str(reservation_id, DSC_RESERVATION_ID_MAX, r->id);
    if (decision && decision->key_id) copy_str(r->owner, sizeof r->owner, decision->key_id);
    if (l->store) st = journal_reserve(l, r, dec, done, &rec, err);
    dec = NULL;
out:
    if (st == DSC_OK && decision && !l->store) l->decisions++;
    pthread_mutex_unlock(&l->mu);
    free(dec);
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
    dsc__done d = done_from(done);
    return dsc__done_now(reserve_impl(l, req->subject, req->amounts, req->ttl_s, req->request_id,
                                      out->reservation_id, out->exceeded, out->max_exceeded,
                                      &out->n_exceeded, req->decision, &d, err),
                         &d);
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
    dsc__hold_what what = {d->provider, d->model, d->zone, d->purpose};
    dsc__hit hits[DSC__HITS_MAX];
    size_t nh = 0;
    dsc__reservation *r = NULL;
    pthread_mutex_lock(&l->mu);
    st = DSC_OK;
    if (dsc__strmap_get(&l->reservations, id)) goto out; /* recalled meanwhile */
    st = DSC_NOMEM;
    if (dsc__match(l, &s, true, hits, &nh, NULL) != DSC_OK) goto out;
    if (!(r = dsc__reservation_new(id, NULL, &s, &what, hits, nh))) goto out;
    r->charged = row->amounts;
    r->state = rs;
    copy_str(r->owner, sizeof r->owner, d->key_id);
    if (dsc__reservation_index(l, r) != DSC_OK) {
        free(r);
        goto out;
    }
    dsc__reservation_finish(l, r, rs, dsc__ledger_now(l));
    st = DSC_OK;
out:
    pthread_mutex_unlock(&l->mu);
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

/* A reservation object for a settle of an unknown id (mu held). */
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
    dsc_status st = dsc__match(l, s, true, hits, &nh, err);
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

/* What settling r means now: its kind, and DSC_OK to go on (mu held). */
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

/* Start settling r with actual (mu held); *rec set when the caller must wait. */
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

/* A hold taken by another key is not the caller's to settle or cancel (mu held). */
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
    pthread_mutex_lock(&l->mu);
    int64_t now = dsc__ledger_now(l);
    dsc__reservation *r = dsc__strmap_get(&l->reservations, rc->id);
    if (!r && may_recall && l->store && dsc__ledger_made(rc->id)) {
        pthread_mutex_unlock(&l->mu);
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
    pthread_mutex_unlock(&l->mu);
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

/* Start cancelling a held r (mu held); *rec set when the caller must wait. */
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
    pthread_mutex_lock(&l->mu);
    int64_t now = dsc__ledger_now(l);
    dsc__reservation *r = dsc__strmap_get(&l->reservations, rc->id);
    if (!r && may_recall && l->store && dsc__ledger_made(rc->id)) {
        pthread_mutex_unlock(&l->mu);
        return recall_then(l, rc, done, err);
    }
    if (!r)
        st = dsc_error_set(err, DSC_UNKNOWN_RESERVATION, "reservation '%s' is unknown", rc->id);
    else if ((st = check_key(rc, r, err)) == DSC_OK && r->state == RS_HELD)
        st = cancel_begin(l, r, now, done, &rec, err);
    pthread_mutex_unlock(&l->mu);
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
    dsc__recall rc = {.cancel = true};
    dsc_status st = recall_from(req->reservation_id, req->key_id, &rc, err);
    if (st != DSC_OK) return st;
    dsc__done d = done_from(done);
    return dsc__done_now(cancel_impl(l, &rc, true, &d, err), &d);
}

dsc_status dsc_ledger_hold_get(dsc_ledger *l, const char *reservation_id, dsc_hold_info *out) {
    if (!reservation_id) return DSC_UNKNOWN_RESERVATION;
    pthread_mutex_lock(&l->mu);
    dsc__reservation *r = dsc__strmap_get(&l->reservations, reservation_id);
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
    pthread_mutex_unlock(&l->mu);
    return found ? DSC_OK : DSC_UNKNOWN_RESERVATION;
}

size_t dsc_ledger_tick(dsc_ledger *l) {
    pthread_mutex_lock(&l->mu);
    int64_t now = dsc__ledger_now(l);
    size_t n = expire_due(l, now);
    forget_old(l, now);
    pthread_mutex_unlock(&l->mu);
    return n;
}

/* --- decisions and stats ------------------------------------------------------- */

static dsc_status copy_field(const char *field, const char *v, char *dst, size_t max,
                             dsc_error *err) {
    if (!v) v = "";
    size_t n = strlen(v);
    if (n >= max)
        return dsc_error_set(err, DSC_BAD_REQUEST, "field '%s': longer than %zu characters", field,
                             max - 1);
    memcpy(dst, v, n + 1);
    return DSC_OK;
}

static dsc_status decision_copy(const dsc_decision_record *d, dsc__rec *rec, dsc_error *err) {
    dsc__rec_decision *o = &rec->u.decision;
    dsc_subject s = d->subject;
    dsc_status st = check_subject(&s, err);
    const struct {
        const char *name, *v;
        char *dst;
        size_t max;
    } f[] = {{"decision_id", d->decision_id, o->decision_id, sizeof o->decision_id},
             {"request_id", d->request_id, o->request_id, sizeof o->request_id},
             {"purpose", d->purpose, o->purpose, sizeof o->purpose},
             {"provider", d->provider, o->provider, sizeof o->provider},
             {"model", d->model, o->model, sizeof o->model},
             {"outcome", d->outcome, o->outcome, sizeof o->outcome},
             {"policy", d->policy, o->policy, sizeof o->policy},
             {"policy_version", d->policy_version, o->policy_version, sizeof o->policy_version},
             {"reason", d->reason, o->reason, sizeof o->reason},
             {"reservation_id", d->reservation_id, rec->reservation_id, sizeof rec->reservation_id},
             {"key_id", d->key_id, o->key_id, sizeof o->key_id},
             {"zone", d->zone, o->zone, sizeof o->zone},
             {"purpose_class", d->purpose_class, o->purpose_class, sizeof o->purpose_class},
             {"verdicts", d->verdicts, o->verdicts, sizeof o->verdicts},
             {"tags", d->tags, o->tags, sizeof o->tags},
             {"org", s.org, rec->subject.org, DSC_NAME_MAX},
             {"team", s.team, rec->subject.team, DSC_NAME_MAX},
             {"user", s.user, rec->subject.user, DSC_NAME_MAX},
             {"key", s.key, rec->subject.key, DSC_NAME_MAX}};
    for (size_t i = 0; st == DSC_OK && i < sizeof f / sizeof f[0]; i++)
        st = copy_field(f[i].name, f[i].v, f[i].dst, f[i].max, err);
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
    dsc__rec *rec = calloc(1, sizeof *rec);
    if (!rec) return dsc_error_set(err, DSC_NOMEM, "out of memory journaling a decision");
    rec->type = DSC__REC_DECISION;
    dsc_status st = decision_copy(d, rec, err);
    if (st != DSC_OK || !l->store) {
        free(rec);
        if (st == DSC_OK) {
            pthread_mutex_lock(&l->mu);
            l->decisions++;
            pthread_mutex_unlock(&l->mu);
        }
        return st;
    }
    pthread_mutex_lock(&l->mu);
    rec->at_us = d->at_us ? d->at_us : dsc__ledger_now(l);
    l->decisions++;
    dsc__rec *wait = NULL;
    st = enqueue(l, rec, done, &wait);
    pthread_mutex_unlock(&l->mu);
    if (st != DSC_OK)
        return dsc_error_set(err, st,
                             "the ledger store is failing; the decision was not "
                             "journaled");
    return wait_rec(l, wait, err);
}

dsc_status dsc_ledger_record(dsc_ledger *l, const dsc_decision_record *rec, const dsc_done *done,
                             dsc_error *err) {
    dsc__done d = done_from(done);
    return dsc__done_now(decision_impl(l, rec, &d, err), &d);
}

static dsc_status sync_impl(dsc_ledger *l, dsc__done *done, dsc_error *err) {
    if (!l->store) return DSC_OK;
    dsc__rec *rec = calloc(1, sizeof *rec);
    if (!rec) return dsc_error_set(err, DSC_NOMEM, "out of memory");
    rec->type = DSC__REC_SYNC;
    pthread_mutex_lock(&l->mu);
    dsc__rec *wait = NULL;
    dsc_status st = enqueue_as(l, rec, false, done, &wait); /* never acked: it is the wait */
    pthread_mutex_unlock(&l->mu);
    if (st != DSC_OK) return dsc_error_set(err, st, "the ledger store is failing");
    return wait_rec(l, wait, err);
}

dsc_status dsc_ledger_sync(dsc_ledger *l, const dsc_done *done, dsc_error *err) {
    dsc__done d = done_from(done);
    return dsc__done_now(sync_impl(l, &d, err), &d);
}

void dsc_ledger_stats_get(dsc_ledger *l, dsc_ledger_stats *out) {
    memset(out, 0, sizeof *out);
    pthread_mutex_lock(&l->mu);
    out->budgets = l->n_live;
    out->counters = l->n_counters;
    out->holds = l->n_held;
    out->reservations = l->reservations.len;
    out->decisions = l->decisions;
    out->settles = l->settles;
    out->expired = l->expired_count;
    pthread_mutex_unlock(&l->mu);
    out->store_ok = true;
    if (l->store) {
        dsc__store_counts(l->store, &out->store_batches, &out->store_records, &out->store_failures);
        out->store_ok = dsc__store_healthy(l->store);
    }
}
