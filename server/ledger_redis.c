/*
 * ledger_redis.c - the ledger operations (ledger_ops.h) on a Redis shared by many
 * discernd.
 *
 * What lives where. Redis holds every counter, every hold, the budget definitions
 * (hash <tag>budgets, field "<selector>|<metric>|<window>") with their version, and
 * the decision journal (stream <tag>journal): server/redis/common.lua lists the
 * keys. The process's dsc_ledger is memory-only and holds a copy of the definitions
 * as of version `loaded`: it resolves which budgets match a subject and names their
 * counters ("<selector>|<metric>|<window>#<counter>", the same on every replica),
 * and never counts anything itself.
 *
 * Each worker has its own Redis connection on its own loop (store_redis.c): every
 * operation is one script call whose completion runs on that loop, so no worker
 * waits for Redis. Worker 0 also keeps the definitions and the API keys (<tag>keys:
 * a key created through one replica authenticates on every other) current (the
 * subscription, and a reload after any 'stale' answer) and, once a second, sweeps
 * the expired holds of every replica (sweep.lua finishes each exactly once).
 *
 * A reserve carries the definitions' version; Redis answers 'stale' when they
 * changed since and the hold is not taken: the worker reads the definitions at once
 * on its own connection and matches and sends the hold again (at most twice), so a
 * limit that changed is never checked against an old copy and the client never sees
 * the change (store_unavailable only when they keep changing faster than that).
 */
#include "ledger_ops.h"
#include "redis_ledger.h"
#include "server_internal.h"

#include "discern/random.h"
#include "strmap_internal.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define JOURNAL_MAX 1000000               /* decision journal entries kept (XADD MAXLEN ~) */
#define RETAIN_S 600                      /* a finished hold answers repeats this long */
#define SWEEP_MAX 1000                    /* expired holds finished per sweep call */
#define STATES_MAX DSC_REDIS_COUNTERS_MAX /* more budgets on one subject are refused */
#define HOLDS_KEPT 65536                  /* what this replica's own holds were for, newest kept */
#define RECENT_MAX 16384 /* counters whose last state read is kept (then all dropped) */
#define DSC__COUNTER_NAME_MAX (3 * DSC_SELECTOR_MAX + DSC_WINDOW_MAX + 32)

struct dsc__redis_shared {
    dsc__store_url url;
    int32_t tz_offset_s;
    atomic_int_fast64_t loaded;           /* version of the definitions in srv->ledger; -1 = none */
    atomic_bool reload;                   /* a 'stale' answer asked worker 0 for a reload */
    atomic_bool busy, again;              /* a reload is under way; another was asked meanwhile */
    atomic_int outstanding;               /* replies the reload under way still waits for */
    pthread_mutex_t sync_mu;              /* one definitions sync at a time */
    pthread_mutex_t holds_mu;             /* guards holds, ring */
    dsc__strmap holds;                    /* reservation id -> what it was for (its own holds) */
    char (*ring)[DSC_RESERVATION_ID_MAX]; /* their ids, oldest first, for eviction */
    size_t ring_head;
    int64_t recent_max_age_us; /* redis_state_max_age_ms; 0: no recent states used */
    pthread_mutex_t recent_mu; /* guards recent */
    dsc__strmap recent;        /* counter name -> its last state read from Redis */
};

/* ------------------------------------------------------------------ names -- */

typedef struct counters {
    dsc_budget_state states[STATES_MAX];
    char names[STATES_MAX][DSC__COUNTER_NAME_MAX];
    dsc__redis_counter c[DSC_REDIS_COUNTERS_MAX];
    size_t n;
} counters;

/* The budget's id in Redis: "<selector>|<metric>|<window>". */
static void budget_id(char *out, size_t cap, const char *selector, dsc_metric m,
                      const char *window) {
    snprintf(out, cap, "%s|%s|%s", selector, dsc_metric_name(m), window);
}

/* src (NULL: "") into dst, cut to cap - 1 bytes; what snprintf "%s" does, without
 * parsing a format (the reserve's hot path copies eight of them). */
static void copy_str(char *dst, size_t cap, const char *src) {
    size_t n = src ? strnlen(src, cap - 1) : 0;
    memcpy(dst, src ? src : "", n);
    dst[n] = '\0';
}

/* A counter's Redis name, "<selector>|<metric>|<window>#<counter>" (cut to cap). */
static void counter_name(char *out, size_t cap, const dsc_budget_state *b) {
    const char *const parts[] = {b->selector, "|",       dsc_metric_name(b->metric), "|", b->window,
                                 "#",         b->counter};
    size_t at = 0;
    for (size_t i = 0; i < sizeof parts / sizeof *parts && at + 1 < cap; i++) {
        copy_str(out + at, cap - at, parts[i]);
        at += strlen(out + at);
    }
    out[at] = '\0';
}

/* The Redis counters of the budgets that apply to s (from the local definitions),
 * with the amount of each one's metric that request would hold. */
static dsc_status match(dsc__worker *w, const dsc_subject *s, const dsc_amounts *request,
                        counters *k, dsc_error *err) {
    size_t n = 0;
    dsc_status st = dsc_ledger_preview(w->srv->ledger, s, request, k->states, STATES_MAX, &n, err);
    if (st != DSC_OK) return st;
    if (n > DSC_REDIS_COUNTERS_MAX)
        return dsc_error_set(err, DSC_TOO_LARGE,
                             "subject: %zu budgets apply, a Redis store takes at most %d", n,
                             DSC_REDIS_COUNTERS_MAX);
    for (size_t i = 0; i < n; i++) {
        const dsc_budget_state *b = &k->states[i];
        counter_name(k->names[i], sizeof k->names[i], b);
        k->c[i] = (dsc__redis_counter){
            .name = k->names[i], .limit = b->limit, .amount = b->request, .metric = b->metric};
        if (dsc_window_parse(b->window, &k->c[i].window, err) != DSC_OK) return err->code;
    }
    k->n = n;
    return DSC_OK;
}

/* Bring a state read from Redis into a budget state matched locally. */
static void state_from(dsc_budget_state *b, const dsc__redis_counter_state *r,
                       const dsc_window *win) {
    b->used = r->used;
    b->held = r->held;
    b->resets_at = r->resets_at;
    int64_t rem = b->limit - b->used - b->held;
    b->remaining = rem > 0 ? rem : 0;
    b->would_exceed = b->used + b->held + b->request > b->limit;
    b->retry_after_s = dsc_window_wait_s(win, b->used + b->held, b->request, b->limit, b->resets_at,
                                         dsc__now_us() / 1000000);
}

/* ---------------------------------------------------------- recent states -- */

/* Every reply that reads counters (state, reserve, settle) leaves each one's state
 * here with the time it was read; a check's policies take them while they are
 * younger than redis_state_max_age_ms instead of a state.lua call of their own.
 * What is admitted is never decided here: reserve.lua checks every counter again,
 * atomically, in Redis. */
typedef struct recent_state {
    dsc__redis_counter_state s;
    int64_t at_us;
    char name[]; /* the map's key */
} recent_state;

static void recent_free(void *val, void *ud) {
    (void)ud;
    free(val);
}

static void recent_put(dsc__redis_shared *rs, const char *name, const dsc__redis_counter_state *s,
                       int64_t at_us) {
    if (rs->recent_max_age_us <= 0) return;
    pthread_mutex_lock(&rs->recent_mu);
    recent_state *r = dsc__strmap_get(&rs->recent, name);
    if (!r) {
        if (rs->recent.len >= RECENT_MAX) { /* bounded: start again */
            dsc__strmap_each(&rs->recent, recent_free, NULL);
            dsc__strmap_destroy(&rs->recent);
            dsc__strmap_init(&rs->recent);
        }
        size_t len = strlen(name) + 1;
        if ((r = malloc(sizeof *r + len))) {
            memcpy(r->name, name, len);
            r->at_us = INT64_MIN;
            if (dsc__strmap_put(&rs->recent, r->name, r) != DSC_OK) {
                free(r);
                r = NULL;
            }
        }
    }
    if (r && at_us >= r->at_us) r->s = *s, r->at_us = at_us;
    pthread_mutex_unlock(&rs->recent_mu);
}

/* Every counter of k as recently read: young enough, and its window not reset since
 * (a reset counts from Redis's clock: resets_at is when it next goes down). */
static bool recent_get(dsc__redis_shared *rs, const counters *k, dsc__redis_counter_state *out) {
    int64_t now = dsc__now_us();
    bool all = rs->recent_max_age_us > 0;
    pthread_mutex_lock(&rs->recent_mu);
    for (size_t i = 0; all && i < k->n; i++) {
        recent_state *r = dsc__strmap_get(&rs->recent, k->names[i]);
        all = r && now - r->at_us <= rs->recent_max_age_us && now / 1000000 < r->s.resets_at;
        if (all) out[i] = r->s;
    }
    pthread_mutex_unlock(&rs->recent_mu);
    return all;
}

static void recent_keep(dsc__redis_shared *rs, const counters *k, size_t from,
                        const dsc__redis_counter_state *s, size_t n, int64_t at_us) {
    for (size_t i = 0; i < n && from + i < k->n; i++)
        recent_put(rs, k->names[from + i], &s[i], at_us);
}

static dsc__redis *conn_of(dsc__worker *w, dsc_error *err) {
    if (!w->redis) dsc_error_set(err, DSC_STORE_UNAVAILABLE, "redis: no connection");
    return w->redis;
}

/* ------------------------------------------------------------- own holds -- */

/* What a hold this replica took was for: a settle that comes back to the replica
 * (the common case behind a sticky balancer) is estimated without asking Redis.
 * Constant facts only (subject, owner, provider, model, zone, purpose): the state
 * and every charge stay Redis's. At most HOLDS_KEPT, the oldest forgotten first. */
typedef struct own_hold {
    dsc_hold_info info; /* info.id is the map's key */
} own_hold;

static void holds_forget_locked(dsc__redis_shared *rs, const char *id) {
    own_hold *h = dsc__strmap_del(&rs->holds, id);
    free(h);
}

static void holds_keep(dsc__redis_shared *rs, const dsc_hold_info *info) {
    own_hold *h = malloc(sizeof *h);
    if (!h) return;
    h->info = *info;
    pthread_mutex_lock(&rs->holds_mu);
    char *slot = rs->ring[rs->ring_head];
    if (slot[0]) holds_forget_locked(rs, slot);
    snprintf(slot, DSC_RESERVATION_ID_MAX, "%s", info->id);
    rs->ring_head = (rs->ring_head + 1) % HOLDS_KEPT;
    if (dsc__strmap_get(&rs->holds, h->info.id) ||
        dsc__strmap_put(&rs->holds, h->info.id, h) != DSC_OK)
        free(h);
    pthread_mutex_unlock(&rs->holds_mu);
}

static bool holds_find(dsc__redis_shared *rs, const char *id, dsc_hold_info *out) {
    pthread_mutex_lock(&rs->holds_mu);
    own_hold *h = dsc__strmap_get(&rs->holds, id);
    if (h) *out = h->info;
    pthread_mutex_unlock(&rs->holds_mu);
    return h != NULL;
}

/* The hold of a reserve, as holds_keep keeps it. */
static void hold_of(dsc_hold_info *h, const char *id, const dsc_reserve_req *req) {
    const dsc_decision_record *d = req->decision;
    const dsc_subject *s = req->subject;
    memset(h, 0, sizeof *h);
    copy_str(h->id, sizeof h->id, id);
    if (s) {
        copy_str(h->org, sizeof h->org, s->org);
        copy_str(h->team, sizeof h->team, s->team);
        copy_str(h->user, sizeof h->user, s->user);
        copy_str(h->key, sizeof h->key, s->key);
    }
    if (d) {
        copy_str(h->owner, sizeof h->owner, d->key_id);
        copy_str(h->provider, sizeof h->provider, d->provider);
        copy_str(h->model, sizeof h->model, d->model);
        copy_str(h->zone, sizeof h->zone, d->zone);
        copy_str(h->purpose, sizeof h->purpose, d->purpose);
    }
    h->open = true;
}

/* Something a call's completion needs: the caller's done, and what to fill. */
typedef struct pending {
    dsc__worker *w;
    dsc_done done;
    counters k;
    dsc_budget_state *out; /* preview */
    size_t max;
    dsc_reserve_out *rout; /* reserve */
    dsc_settle_out *sout;  /* settle */
    dsc__settle_states *sstates;
    int64_t sent_us;     /* when the call was made: what it reads is at least this recent */
    dsc_hold_info *hold; /* hold_get */
    dsc_hold_info own;   /* reserve: what the hold is for, kept once it is held */
    bool budget_remove;  /* budget: the change, applied again when a reload lost it */
    dsc_budget_info binfo;
    double blimit;
    dsc_reserve_req rreq; /* reserve: sent again after a 'stale' (the caller's, kept until done) */
    char *detail;         /* reserve: the decision's journal text (owned) */
    char *facts;          /* reserve: what the hold is for, packed (owned) */
    char *group;          /* reserve: its hourly rollup group, JSON text (owned) */
    int retries;          /* reserve: 'stale' answers retried so far */
    struct seed *sd;      /* budget: a new budget's past usage, being read */
} pending;

static pending *pending_new(dsc__worker *w, const dsc_done *done, dsc_error *err) {
    pending *p = malloc(sizeof *p);
    if (!p) {
        dsc_error_set(err, DSC_NOMEM, "out of memory for a Redis call");
        return NULL;
    }
    p->w = w;
    p->done = *done;
    p->k.n = 0;
    p->sstates = NULL;
    p->sent_us = dsc__now_us();
    p->detail = NULL;
    p->facts = NULL;
    p->group = NULL;
    p->retries = 0;
    p->sd = NULL;
    return p;
}

static void seed_free(struct seed *sd);

static void pending_free(pending *p) {
    if (p) free(p->detail);
    if (p) free(p->facts);
    if (p) free(p->group);
    if (p) seed_free(p->sd);
    free(p);
}

static void finish(pending *p, dsc_status st, const dsc_error *err) {
    p->done.fn(p->done.ud, st, err);
    pending_free(p);
}

static void finish_status(pending *p, dsc_status st, const char *fmt, const char *what) {
    dsc_error e;
    dsc_error_set(&e, st, fmt, what);
    finish(p, st, &e);
}

/* ---------------------------------------------------------------- journal -- */

/* The journal record of a decision: its fields' values packed in the order of
 * DSC_REDIS_JOURNAL_FIELDS (redis_ledger.h), no names, nothing escaped; what
 * decisions.list reads back through dsc__redis_journal_load. About half the bytes
 * of the same record as JSON, and no object to build: the check's hot path writes
 * one per decision and Redis keeps and appends to its AOF each byte. */
static char *journal_text(const dsc_decision_record *d, const char *reservation) {
    const dsc_subject *s = &d->subject;
    char nums[7][24];
    const int64_t ints[7] = {d->at_us ? d->at_us : dsc__now_us(),
                             d->input_tokens,
                             d->output_tokens,
                             d->est_energy_wh,
                             d->est_gco2e,
                             d->est_water_ml,
                             (int64_t)d->warnings};
    for (int i = 0; i < 7; i++)
        *dsc__redis_put_int(nums[i], ints[i]) = '\0';
    const char *const v[] = {
        d->decision_id, d->request_id, nums[0],     s->org,     s->team,          s->user,
        s->key,         d->purpose,    d->provider, d->model,   nums[1],          nums[2],
        nums[3],        nums[4],       nums[5],     d->outcome, d->policy,        d->policy_version,
        d->reason,      reservation,   d->key_id,   d->zone,    d->purpose_class, d->verdicts,
        d->tags,        nums[6]};
#define JOURNAL_COUNT(name, kind) +1
    _Static_assert(sizeof v / sizeof *v == 0 DSC_REDIS_JOURNAL_FIELDS(JOURNAL_COUNT),
                   "one value per journal field, in their order");
#undef JOURNAL_COUNT
    size_t cap = 1;
    for (size_t i = 0; i < sizeof v / sizeof *v; i++)
        cap += (v[i] ? strlen(v[i]) : 0) + 21;
    char *text = malloc(cap);
    if (text && !dsc__redis_facts_pack(text, cap, v, sizeof v / sizeof *v)) {
        free(text);
        text = NULL;
    }
    return text;
}

/* ---------------------------------------------------------------- preview -- */

static void on_state(void *ud, dsc_status st, const dsc__redis_answer *a, const dsc_error *err) {
    pending *p = ud;
    if (st == DSC_OK) recent_keep(p->w->srv->redis, &p->k, 0, a->counters, p->k.n, p->sent_us);
    for (size_t i = 0; st == DSC_OK && i < p->k.n && i < p->max; i++)
        state_from(&p->out[i], &a->counters[i], &p->k.c[i].window);
    finish(p, st, err);
}

static dsc_status preview(dsc__worker *w, const dsc_subject *s, const dsc_amounts *request,
                          bool recent_ok, dsc_budget_state *out, size_t max, size_t *n,
                          const dsc_done *done, bool *later, dsc_error *err) {
    *later = false;
    dsc__redis *r = conn_of(w, err);
    if (!r) return DSC_STORE_UNAVAILABLE;
    pending *p = pending_new(w, done, err);
    if (!p) return DSC_NOMEM;
    dsc_status st = match(w, s, request, &p->k, err);
    if (st == DSC_OK) {
        *n = p->k.n;
        memcpy(out, p->k.states, (p->k.n < max ? p->k.n : max) * sizeof *out);
    }
    dsc__redis_counter_state recent[STATES_MAX];
    if (st == DSC_OK && recent_ok && recent_get(w->srv->redis, &p->k, recent)) {
        for (size_t i = 0; i < p->k.n && i < max; i++)
            state_from(&out[i], &recent[i], &p->k.c[i].window);
        free(p);
        return DSC_OK;
    }
    if (st != DSC_OK || p->k.n == 0) {
        free(p);
        return st;
    }
    p->out = out, p->max = max;
    st = dsc__redis_state(r, w->srv->redis->tz_offset_s, p->k.c, p->k.n, on_state, p, err);
    if (st != DSC_OK) {
        free(p);
        return st;
    }
    *later = true;
    return DSC_OK;
}

/* ---------------------------------------------------------------- holds -- */

static void copy_field(char *out, size_t cap, json_t *o, const char *key) {
    const char *v = json_string_value(json_object_get(o, key));
    snprintf(out, cap, "%s", v ? v : "");
}

/* A hold's facts as reserve packs them (dsc__redis_facts_pack), in this order. */
#define HOLD_FACTS(h)                                                                              \
    { h->org, h->team, h->user, h->key, h->provider, h->model, h->zone, h->purpose }
#define HOLD_FACTS_CAPS(h)                                                                         \
    {                                                                                              \
        sizeof h->org, sizeof h->team, sizeof h->user, sizeof h->key, sizeof h->provider,          \
            sizeof h->model, sizeof h->zone, sizeof h->purpose                                     \
    }
#define HOLD_FACTS_N 8

/* The facts reserve keeps with a hold (malloc'd; NULL: too long or out of memory):
 * the HOLD_FACTS strings, then what the check held of each metric (dsc_metric order,
 * micro-units), which an expiry charges and the hourly rollups count
 * (server/redis/common.lua, hold_charge); facts_unpack reads only the strings. */
static char *facts_pack(const dsc_hold_info *h, const dsc_amounts *held) {
    char nums[DSC_METRIC_COUNT][24];
    const char *v[HOLD_FACTS_N + DSC_METRIC_COUNT] = HOLD_FACTS(h);
    for (int m = 0; m < DSC_METRIC_COUNT; m++) {
        *dsc__redis_put_int(nums[m], held->v[m]) = '\0';
        v[HOLD_FACTS_N + m] = nums[m];
    }
    char *out = malloc(DSC_REDIS_FACTS_MAX);
    if (out && !dsc__redis_facts_pack(out, DSC_REDIS_FACTS_MAX, v, sizeof v / sizeof *v)) {
        free(out);
        out = NULL;
    }
    return out;
}

/* The hourly rollup's group (server/redis/common.lua) that the hold's settle or
 * expiry is rolled up in: {org, team, user, key, provider, model, purpose}, the same
 * text as an unknown id's (subject_group). malloc'd; NULL when out of memory. */
static char *hold_group(const dsc_hold_info *h) {
    const char *v[DSC_REDIS_GROUP_PARTS] = {h->org,      h->team,  h->user,   h->key,
                                            h->provider, h->model, h->purpose};
    return dsc__redis_group_text(v);
}

/* The facts read back into h; a hold taken by an earlier version keeps the journal
 * text of its check instead (JSON), read by name. Unreadable facts leave them "". */
static void facts_unpack(dsc_hold_info *h, const char *text, size_t len) {
    char *const v[HOLD_FACTS_N] = HOLD_FACTS(h);
    const size_t caps[HOLD_FACTS_N] = HOLD_FACTS_CAPS(h);
    if (len > 0 && text[0] == '{') {
        static const char *const names[HOLD_FACTS_N] = {"org",      "team",  "user", "key",
                                                        "provider", "model", "zone", "purpose"};
        json_t *o = json_loadb(text, len, 0, NULL);
        for (int i = 0; i < HOLD_FACTS_N; i++)
            copy_field(v[i], caps[i], o, names[i]);
        json_decref(o);
        return;
    }
    const char *p = text, *end = text + len;
    for (int i = 0; i < HOLD_FACTS_N; i++)
        if (!dsc__redis_facts_next(&p, end, v[i], caps[i])) {
            for (int j = 0; j < HOLD_FACTS_N; j++)
                v[j][0] = '\0';
            return;
        }
}

static void on_hold(void *ud, dsc_status st, const dsc__redis_answer *a, const dsc_error *err) {
    pending *p = ud;
    if (st != DSC_OK) {
        finish(p, st, err);
        return;
    }
    if (!a->hold.known) {
        finish_status(p, DSC_UNKNOWN_RESERVATION, "field 'reservation': '%s' is unknown",
                      p->hold->id);
        return;
    }
    dsc_hold_info *h = p->hold;
    facts_unpack(h, a->hold.detail, a->hold.detail_len);
    snprintf(h->owner, sizeof h->owner, "%s", a->hold.owner);
    h->expires_us = a->hold.expires_us;
    h->open = strcmp(a->hold.state, "held") == 0;
    finish(p, DSC_OK, NULL);
}

static dsc_status hold_get(dsc__worker *w, const char *id, dsc_hold_info *out, const dsc_done *done,
                           bool *later, dsc_error *err) {
    *later = false;
    if (holds_find(w->srv->redis, id, out)) return DSC_OK; /* one of this replica's own */
    dsc__redis *r = conn_of(w, err);
    if (!r) return DSC_STORE_UNAVAILABLE;
    pending *p = pending_new(w, done, err);
    if (!p) return DSC_NOMEM;
    memset(out, 0, sizeof *out);
    snprintf(out->id, sizeof out->id, "%s", id);
    p->hold = out;
    dsc_status st = dsc__redis_hold(r, id, on_hold, p, err);
    if (st != DSC_OK) {
        free(p);
        return st;
    }
    *later = true;
    return DSC_OK;
}

/* ---------------------------------------------------------------- reserve -- */

#define STALE_RETRIES 2 /* a hold answered 'stale' is matched and sent again this often */

static void retry_stale(pending *p);

static void on_reserve(void *ud, dsc_status st, const dsc__redis_reserve_out *o,
                       const dsc_error *err) {
    pending *p = ud;
    dsc_reserve_out *out = p->rout;
    if (st != DSC_OK) {
        finish(p, st, err);
        return;
    }
    switch (o->kind) {
    case DSC_REDIS_HELD:
        recent_keep(p->w->srv->redis, &p->k, 0, o->counters, o->n, p->sent_us);
        holds_keep(p->w->srv->redis, &p->own);
        finish(p, DSC_OK, NULL);
        return;
    case DSC_REDIS_REPEAT:
        snprintf(out->reservation_id, sizeof out->reservation_id, "%s", o->reservation_id);
        finish(p, DSC_OK, NULL);
        return;
    case DSC_REDIS_REFUSED:
        recent_keep(p->w->srv->redis, &p->k, o->refused, o->counters, 1, p->sent_us);
        out->reservation_id[0] = '\0';
        out->n_exceeded = 1;
        if (out->exceeded && out->max_exceeded > 0) {
            out->exceeded[0] = p->k.states[o->refused];
            state_from(&out->exceeded[0], &o->counters[0], &p->k.c[o->refused].window);
        }
        finish_status(p, DSC_BUDGET_EXCEEDED, "%s", "a budget would be exceeded");
        return;
    case DSC_REDIS_STALE:
        retry_stale(p);
        return;
    }
}

static void new_reservation_id(char out[DSC_RESERVATION_ID_MAX]) {
    uint8_t b[18];
    out[0] = 'r';
    if (dsc_random_bytes(b, sizeof b, NULL) != DSC_OK) {
        out[0] = '\0';
        return;
    }
    dsc_random_hex(b, sizeof b, out + 1);
}

/* Match p's request against the definitions this replica has now and send it, with
 * their version (a first call, or again after a 'stale'). */
static dsc_status send_reserve(pending *p, dsc_error *err) {
    dsc__worker *w = p->w;
    const dsc_reserve_req *req = &p->rreq;
    dsc__redis *r = conn_of(w, err);
    if (!r) return DSC_STORE_UNAVAILABLE;
    int64_t version = atomic_load(&w->srv->redis->loaded);
    dsc_status st = match(w, req->subject, req->amounts, &p->k, err);
    if (st != DSC_OK) return st;
    dsc__redis_reserve_req rq = {
        .version = version < 0 ? 0 : version,
        .reservation_id = p->rout->reservation_id,
        .request_id = req->request_id,
        .owner_key = req->decision ? req->decision->key_id : NULL,
        .ttl_us = req->ttl_s * 1000000,
        .tz_offset_s = w->srv->redis->tz_offset_s,
        .journal = p->detail,
        .hold_facts = p->facts,
        .hold_group = p->group,
        .journal_max = p->detail ? JOURNAL_MAX : 0,
        .counters = p->k.c,
        .n = p->k.n,
    };
    p->sent_us = dsc__now_us();
    return dsc__redis_reserve(r, &rq, on_reserve, p, err);
}

static dsc_status reserve(dsc__worker *w, const dsc_reserve_req *req, dsc_reserve_out *out,
                          const dsc_done *done, dsc_error *err) {
    dsc__redis *r = conn_of(w, err);
    if (!r) return DSC_STORE_UNAVAILABLE;
    if (req->ttl_s <= 0) return dsc_error_set(err, DSC_BAD_REQUEST, "field 'ttl_s': must be > 0");
    pending *p = pending_new(w, done, err);
    if (!p) return DSC_NOMEM;
    dsc_status st = DSC_OK;
    new_reservation_id(out->reservation_id);
    out->n_exceeded = 0;
    if (!out->reservation_id[0])
        st = dsc_error_set(err, DSC_IO, "no random bytes for a reservation id");
    if (st == DSC_OK && req->decision &&
        !(p->detail = journal_text(req->decision, out->reservation_id)))
        st = dsc_error_set(err, DSC_NOMEM, "out of memory for the journal");
    if (st == DSC_OK) {
        p->rout = out;
        p->rreq = *req;
        hold_of(&p->own, out->reservation_id, req);
        if (!(p->facts = facts_pack(&p->own, req->amounts)))
            st = dsc_error_set(err, DSC_TOO_LARGE, "%s", "subject: too long to keep with a hold");
        else if (!(p->group = hold_group(&p->own)))
            st = dsc_error_set(err, DSC_NOMEM, "%s", "out of memory for a hold");
    }
    if (st == DSC_OK) st = send_reserve(p, err);
    if (st != DSC_OK) pending_free(p);
    return st;
}

/* A 'stale' answer: Redis has budget definitions newer than the ones the hold was
 * matched with, and held nothing. The replica reads them at once on this worker's
 * connection, and the hold is matched and sent again (at most STALE_RETRIES times),
 * so a budget change never reaches the client as store_unavailable. */
static void apply_defs(dsc_server *srv, const dsc__redis_answer *a);

static void on_stale_defs(void *ud, dsc_status st, const dsc__redis_answer *a,
                          const dsc_error *err) {
    pending *p = ud;
    dsc_error e;
    if (st != DSC_OK) {
        atomic_store(&p->w->srv->redis->reload, true);
        finish(p, st, err);
        return;
    }
    apply_defs(p->w->srv, a);
    if ((st = send_reserve(p, &e)) != DSC_OK) finish(p, st, &e);
}

static void retry_stale(pending *p) {
    dsc_error e;
    dsc_status st = DSC_STORE_UNAVAILABLE;
    if (p->retries++ >= STALE_RETRIES) {
        atomic_store(&p->w->srv->redis->reload, true);
        finish_status(p, st, "%s", "redis: the budget definitions kept changing meanwhile; retry");
        return;
    }
    if (!conn_of(p->w, &e) || (st = dsc__redis_defs(p->w->redis, on_stale_defs, p, &e)) != DSC_OK) {
        atomic_store(&p->w->srv->redis->reload, true);
        finish(p, st, &e);
    }
}

/* ---------------------------------------------------------------- record -- */

static void on_done(void *ud, dsc_status st, const dsc__redis_answer *a, const dsc_error *err) {
    (void)a;
    finish(ud, st, err);
}

static dsc_status record(dsc__worker *w, const dsc_decision_record *rec, const dsc_done *done,
                         dsc_error *err) {
    dsc__redis *r = conn_of(w, err);
    if (!r) return DSC_STORE_UNAVAILABLE;
    char *detail = journal_text(rec, rec->reservation_id);
    pending *p = detail ? pending_new(w, done, err) : NULL;
    dsc_status st = p ? dsc__redis_record(r, rec->decision_id ? rec->decision_id : "", detail,
                                          JOURNAL_MAX, on_done, p, err)
                      : dsc_error_set(err, DSC_NOMEM, "out of memory for the journal");
    free(detail);
    if (st != DSC_OK) free(p);
    return st;
}

/* ---------------------------------------------------------------- settle -- */

/* settle.lua answered the counters after the settle: the reply's budget states
 * (matched with the actual usage as the request; the reply's carry none). */
static void settle_states(pending *p, const dsc__redis_settle_out *o) {
    dsc__settle_states *s = p->sstates;
    if (o->n == p->k.n) recent_keep(p->w->srv->redis, &p->k, 0, o->counters, o->n, p->sent_us);
    if (!s || o->n != p->k.n) return;
    s->n = 0;
    for (size_t i = 0; i < o->n && i < s->max; i++, s->n++) {
        s->v[i] = p->k.states[i];
        s->v[i].request = 0;
        state_from(&s->v[i], &o->counters[i], &p->k.c[i].window);
    }
    s->filled = true;
}

static void on_settle(void *ud, dsc_status st, const dsc__redis_settle_out *o,
                      const dsc_error *err) {
    pending *p = ud;
    if (st != DSC_OK) {
        finish(p, st, err);
        return;
    }
    static const dsc_settle_kind kinds[] = {DSC_SETTLE_RESERVED, DSC_SETTLE_REPEATED,
                                            DSC_SETTLE_LATE, DSC_SETTLE_UNRESERVED};
    if (o->kind == DSC_REDIS_UNKNOWN)
        finish_status(p, DSC_UNKNOWN_RESERVATION, "%s",
                      "field 'reservation': unknown to the store; give a subject to charge it");
    else if (o->kind == DSC_REDIS_FORBIDDEN)
        finish_status(p, DSC_FORBIDDEN, "%s", "field 'reservation': held by another key");
    else {
        if (p->sout) p->sout->kind = kinds[o->kind];
        settle_states(p, o);
        finish(p, DSC_OK, NULL);
    }
}

/* The owner a script checks: "*" lets any key (an admin) finish any hold. */
static const char *owner_arg(const char *key_id) {
    return key_id ? key_id : "*";
}

/* The hourly rollup's group (server/redis/common.lua) of a charge to s without a
 * hold: {org, team, user, key, provider, model, purpose}, what it was for unknown.
 * "" for none; NULL when out of memory. */
static char *subject_group(const dsc_subject *s) {
    if (!s) return strdup("");
    const char *v[DSC_REDIS_GROUP_PARTS] = {s->org, s->team, s->user, s->key, "", "", ""};
    return dsc__redis_group_text(v);
}

static dsc_status settle(dsc__worker *w, const dsc_settle_req *req, dsc_settle_out *out,
                         dsc__settle_states *states, const dsc_done *done, dsc_error *err) {
    dsc__redis *r = conn_of(w, err);
    if (!r) return DSC_STORE_UNAVAILABLE;
    pending *p = pending_new(w, done, err);
    if (!p) return DSC_NOMEM;
    dsc_status st = match(w, req->subject_if_unknown, req->actual, &p->k, err);
    if (st == DSC_OK && !(p->detail = subject_group(req->subject_if_unknown)))
        st = dsc_error_set(err, DSC_NOMEM, "out of memory for a settle");
    if (st == DSC_OK) {
        p->sout = out;
        p->sstates = req->subject_if_unknown ? states : NULL;
        dsc__redis_settle_req rq = {
            .reservation_id = req->reservation_id,
            .owner_key = owner_arg(req->key_id),
            .actual = *req->actual,
            .retain_s = RETAIN_S,
            .tz_offset_s = w->srv->redis->tz_offset_s,
            .journal = p->detail, /* the group an unknown id's charge is rolled up in */
            .journal_max = JOURNAL_MAX,
            .counters = p->k.c,
            .n = p->k.n,
        };
        st = dsc__redis_settle(r, &rq, on_settle, p, err);
    }
    if (st != DSC_OK) pending_free(p);
    return st;
}

/* ---------------------------------------------------------------- cancel -- */

static void on_cancel(void *ud, dsc_status st, const dsc__redis_answer *a, const dsc_error *err) {
    pending *p = ud;
    if (st != DSC_OK)
        finish(p, st, err);
    else if (a->cancel == DSC_REDIS_CANCEL_UNKNOWN)
        finish_status(p, DSC_UNKNOWN_RESERVATION, "%s", "field 'reservation': unknown");
    else if (a->cancel == DSC_REDIS_CANCEL_FORBIDDEN)
        finish_status(p, DSC_FORBIDDEN, "%s", "field 'reservation': held by another key");
    else
        finish(p, DSC_OK, NULL);
}

static dsc_status cancel(dsc__worker *w, const dsc_cancel_req *req, const dsc_done *done,
                         dsc_error *err) {
    dsc__redis *r = conn_of(w, err);
    if (!r) return DSC_STORE_UNAVAILABLE;
    pending *p = pending_new(w, done, err);
    if (!p) return DSC_NOMEM;
    dsc_status st = dsc__redis_cancel(r, req->reservation_id, owner_arg(req->key_id), RETAIN_S,
                                      JOURNAL_MAX, on_cancel, p, err);
    if (st != DSC_OK) free(p);
    return st;
}

/* ---------------------------------------------------------- definitions -- */

/* A definition as Redis keeps it: {"selector", "metric", "window", "limit"} with the
 * limit in API units, as given, so every replica derives the same micro-units. */
static char *definition_text(const dsc_budget_info *b, double limit) {
    json_t *o = json_pack("{s:s, s:s, s:s, s:f}", "selector", b->selector, "metric",
                          dsc_metric_name(b->metric), "window", b->window, "limit", limit);
    char *text = o ? json_dumps(o, JSON_COMPACT | JSON_REAL_PRECISION(17)) : NULL;
    json_decref(o);
    return text;
}

typedef struct def {
    char selector[DSC_SELECTOR_MAX], window[DSC_WINDOW_MAX];
    dsc_metric metric;
    double limit;
} def;

static bool def_parse(const char *text, def *d) {
    json_t *o = json_loads(text, 0, NULL);
    const char *sel = json_string_value(json_object_get(o, "selector"));
    const char *met = json_string_value(json_object_get(o, "metric"));
    const char *win = json_string_value(json_object_get(o, "window"));
    json_t *lim = json_object_get(o, "limit");
    bool ok = sel && met && win && json_is_number(lim) &&
              dsc_metric_parse(met, &d->metric) == DSC_OK && strlen(sel) < sizeof d->selector &&
              strlen(win) < sizeof d->window;
    if (ok) {
        strcpy(d->selector, sel);
        strcpy(d->window, win);
        d->limit = json_number_value(lim);
    }
    json_decref(o);
    return ok;
}

static int def_cmp(const char *sa, dsc_metric ma, const char *wa, const char *sb, dsc_metric mb,
                   const char *wb) {
    int c = strcmp(sa, sb);
    if (c == 0) c = (int)ma - (int)mb;
    return c ? c : strcmp(wa, wb);
}

static int def_sort(const void *a, const void *b) {
    const def *x = a, *y = b;
    return def_cmp(x->selector, x->metric, x->window, y->selector, y->metric, y->window);
}

static int info_sort(const void *a, const void *b) {
    const dsc_budget_info *x = a, *y = b;
    return def_cmp(x->selector, x->metric, x->window, y->selector, y->metric, y->window);
}

static void set_local(dsc_server *srv, const char *selector, dsc_metric m, const char *window,
                      double limit, bool remove) {
    dsc_budget_req rq = {selector, m, window, limit, remove};
    dsc_error e;
    if (dsc_ledger_budget(srv->ledger, &rq, NULL, NULL, &e) != DSC_OK && !remove)
        dsc_log_write(&srv->log, DSC_LOG_WARN, "budget_skipped", "selector=%s message=\"%s\"",
                      selector, e.message);
}

/* Make the local definitions exactly defs (n of them, sorted here): one merge of two
 * sorted lists, deleting the others and setting the new or changed ones. */
static void sync_defs(dsc_server *srv, def *defs, size_t n) {
    size_t total = 0;
    dsc_ledger_budget_list(srv->ledger, 0, NULL, 0, &total);
    dsc_budget_info *have = calloc(total ? total : 1, sizeof *have);
    if (!have) return;
    total = dsc_ledger_budget_list(srv->ledger, 0, have, total, NULL);
    qsort(have, total, sizeof *have, info_sort);
    qsort(defs, n, sizeof *defs, def_sort);
    size_t i = 0, j = 0;
    while (i < total || j < n) {
        int c = i == total ? 1
                : j == n   ? -1
                           : def_cmp(have[i].selector, have[i].metric, have[i].window,
                                     defs[j].selector, defs[j].metric, defs[j].window);
        int64_t micro = 0;
        if (c < 0) {
            set_local(srv, have[i].selector, have[i].metric, have[i].window, 0, true);
            i++;
            continue;
        }
        if (c > 0 || dsc_amount_from_api("limit", defs[j].limit, &micro, NULL) != DSC_OK ||
            micro != have[i].limit)
            set_local(srv, defs[j].selector, defs[j].metric, defs[j].window, defs[j].limit, false);
        if (c == 0) i++;
        j++;
    }
    free(have);
}

/* Make the local definitions the ones of defs.lua's answer a, unless they are at its
 * version already. */
static void apply_defs(dsc_server *srv, const dsc__redis_answer *a) {
    dsc__redis_shared *rs = srv->redis;
    pthread_mutex_lock(&rs->sync_mu);
    if (a->version != atomic_load(&rs->loaded)) {
        def *defs = calloc(a->n ? a->n : 1, sizeof *defs);
        size_t n = 0;
        for (size_t i = 0; defs && i < a->n; i++)
            if (def_parse(a->defs[2 * i + 1]->str, &defs[n])) n++;
        if (defs) {
            sync_defs(srv, defs, n);
            atomic_store(&rs->loaded, a->version);
            dsc_log_write(&srv->log, DSC_LOG_INFO, "budgets_loaded", "version=%lld budgets=%zu",
                          (long long)a->version, n);
        } else {
            atomic_store(&rs->reload, true);
        }
        free(defs);
    }
    pthread_mutex_unlock(&rs->sync_mu);
}

/* One reload at a time (the definitions and the keys, two replies); news meanwhile
 * asks for one more after it. */
static void reload_defs(dsc__worker *w);

static void reload_done(dsc__worker *w) {
    dsc__redis_shared *rs = w->srv->redis;
    if (atomic_fetch_sub(&rs->outstanding, 1) != 1) return;
    atomic_store(&rs->busy, false);
    if (atomic_exchange(&rs->again, false)) reload_defs(w);
}

static void on_defs(void *ud, dsc_status st, const dsc__redis_answer *a, const dsc_error *err) {
    dsc__worker *w = ud;
    dsc_server *srv = w->srv;
    dsc__redis_shared *rs = srv->redis;
    if (st != DSC_OK) {
        atomic_store(&rs->reload, true);
        dsc_log_write(&srv->log, DSC_LOG_WARN, "budgets_reload_failed", "message=\"%s\"",
                      err->message);
        reload_done(w);
        return;
    }
    apply_defs(srv, a);
    reload_done(w);
}

/* The API keys as Redis has them: add the new ones, take revocations. */
static void on_keyring(void *ud, dsc_status st, const dsc__redis_answer *a, const dsc_error *err) {
    dsc__worker *w = ud;
    dsc_server *srv = w->srv;
    if (st != DSC_OK) {
        atomic_store(&srv->redis->reload, true);
        dsc_log_write(&srv->log, DSC_LOG_WARN, "keys_reload_failed", "message=\"%s\"",
                      err->message);
    }
    for (size_t i = 0; st == DSC_OK && i < a->n; i++) {
        dsc_error e;
        if (dsc__keys_entry_put(srv->keys, a->defs[2 * i + 1]->str, &e) != DSC_OK)
            dsc_log_write(&srv->log, DSC_LOG_WARN, "key_skipped", "key_id=%.40s message=\"%s\"",
                          a->defs[2 * i]->str, e.message);
    }
    reload_done(w);
}

/* Read the budget definitions and the API keys again (after news, or a 'stale'). */
static void reload_defs(dsc__worker *w) {
    dsc__redis_shared *rs = w->srv->redis;
    dsc_error err;
    if (atomic_exchange(&rs->busy, true)) {
        atomic_store(&rs->again, true);
        return;
    }
    atomic_store(&rs->reload, false);
    atomic_store(&rs->outstanding, 2);
    if (!w->redis || dsc__redis_defs(w->redis, on_defs, w, &err) != DSC_OK) {
        atomic_store(&rs->outstanding, 0);
        atomic_store(&rs->busy, false);
        atomic_store(&rs->reload, true);
        return;
    }
    if (dsc__redis_keyring(w->redis, on_keyring, w, &err) != DSC_OK) {
        atomic_store(&rs->reload, true);
        reload_done(w);
    }
}

dsc_status dsc__ledger_redis_key_put(dsc__worker *w, const char *id, const dsc_done *done,
                                     dsc_error *err) {
    dsc__redis *r = conn_of(w, err);
    if (!r) return DSC_STORE_UNAVAILABLE;
    char *text = dsc__keys_entry_text(w->srv->keys, id);
    if (!text) return dsc_error_set(err, DSC_NOMEM, "out of memory for a key's entry");
    pending *p = pending_new(w, done, err);
    dsc_status st = p ? dsc__redis_key(r, id, text, on_done, p, err) : DSC_NOMEM;
    free(text);
    if (st != DSC_OK) free(p);
    return st;
}

#define ADMIN_MAX 100000 /* admin journal entries kept (XADD MAXLEN ~) */

static void on_admin(void *ud, dsc_status st, const dsc__redis_answer *a, const dsc_error *err) {
    (void)a;
    dsc__worker *w = ud;
    if (st != DSC_OK)
        dsc_log_write(&w->srv->log, DSC_LOG_ERROR, "journal_failed", "message=\"%s\"",
                      err->message);
}

void dsc__ledger_redis_admin(dsc__worker *w, const char *by, const char *action, const char *target,
                             const char *detail) {
    dsc_error err;
    if (!conn_of(w, &err) || dsc__redis_admin_add(w->redis, by, action, target, detail, ADMIN_MAX,
                                                  on_admin, w, &err) != DSC_OK) {
        dsc_log_write(&w->srv->log, DSC_LOG_ERROR, "journal_failed", "action=%s message=\"%s\"",
                      action, err.message);
        return;
    }
    /* in Redis before the change's reply goes out: a change the caller then makes
     * through another replica is journaled after this one */
    dsc__redis_flush(w->redis);
}

/* Redis has the change at version v. The local copy is in step when it was at v - 1
 * (every change before this one is in it); a reload that read a version before v
 * dropped this change from it, so it is applied again. */
static void on_budget(void *ud, dsc_status st, const dsc__redis_answer *a, const dsc_error *err) {
    pending *p = ud;
    dsc_server *srv = p->w->srv;
    dsc__redis_shared *rs = srv->redis;
    bool reload = st != DSC_OK; /* the local copy changed first: put Redis's back */
    if (st == DSC_OK) {
        pthread_mutex_lock(&rs->sync_mu);
        int64_t loaded = atomic_load(&rs->loaded);
        if (loaded < a->version)
            set_local(srv, p->binfo.selector, p->binfo.metric, p->binfo.window, p->blimit,
                      p->budget_remove);
        if (loaded == a->version - 1)
            atomic_store(&rs->loaded, a->version);
        else if (loaded < a->version)
            reload = true;
        pthread_mutex_unlock(&rs->sync_mu);
    }
    if (reload) reload_defs(p->w);
    finish(p, st, err);
}

/* ---------------------------------------------------- a new budget's past -- */

/* A new budget counts the usage already in its window, as on SQLite: before its
 * definition goes to Redis, the replica reads the hourly rollups of the hours that
 * begin in the window (rollups.lua), gives each subject's sums of the budget's metric
 * to the counter that subject falls in (matched by this replica's copy of the
 * definitions, which has the new budget already), and budget.lua sets the
 * definition and those counters in one step. Calendar and rolling windows; a rate
 * window (a token bucket) starts full. */
#define SEED_PAIRS_MAX 50000 /* (hour, amount) pairs of one new budget's counters */
#define SEED_PAGE 2000       /* rollup fields read per call */
#define SEED_CALLS 64

typedef struct seed_counter {
    char name[DSC__COUNTER_NAME_MAX]; /* the map's key */
    size_t n, cap;
    int64_t (*pairs)[2]; /* hour, amount; hours ascending, one per slot (same_slot) */
} seed_counter;

typedef struct seed {
    dsc_window win;
    char id[DSC__COUNTER_NAME_MAX];
    char *text;        /* the definition */
    dsc__strmap index; /* counter name -> seed_counter */
    seed_counter **v;
    size_t n, cap, pairs;
    int64_t to_hour;
    int calls;
} seed;

static void seed_free(seed *sd) {
    if (!sd) return;
    for (size_t i = 0; i < sd->n; i++) {
        free(sd->v[i]->pairs);
        free(sd->v[i]);
    }
    free(sd->v);
    dsc__strmap_destroy(&sd->index);
    free(sd->text);
    free(sd);
}

static const char *part_of(json_t *a, size_t i) {
    const char *v = json_string_value(json_array_get(a, i));
    return v && v[0] ? v : NULL;
}

/* The name of the counter of the new budget (p->binfo) that subject s falls in; false
 * when the budget does not count s. */
static bool seed_counter_of(pending *p, const dsc_subject *s, char *out, size_t cap) {
    dsc_budget_state st[STATES_MAX];
    size_t n = 0;
    const dsc_budget_info *b = &p->binfo;
    if (dsc_ledger_preview(p->w->srv->ledger, s, NULL, st, STATES_MAX, &n, NULL) != DSC_OK)
        return false;
    for (size_t i = 0; i < n && i < STATES_MAX; i++)
        if (st[i].metric == b->metric && strcmp(st[i].selector, b->selector) == 0 &&
            strcmp(st[i].window, b->window) == 0) {
            snprintf(out, cap, "%s|%s|%s#%s", b->selector, dsc_metric_name(b->metric), b->window,
                     st[i].counter);
            return true;
        }
    return false;
}

static seed_counter *seed_counter_get(seed *sd, const char *name) {
    seed_counter *c = dsc__strmap_get(&sd->index, name);
    if (c) return c;
    if (sd->n == sd->cap) {
        size_t cap = sd->cap ? 2 * sd->cap : 16;
        seed_counter **v = realloc(sd->v, cap * sizeof *v);
        if (!v) return NULL;
        sd->v = v, sd->cap = cap;
    }
    if (!(c = calloc(1, sizeof *c))) return NULL;
    snprintf(c->name, sizeof c->name, "%s", name);
    if (dsc__strmap_put(&sd->index, c->name, c) != DSC_OK) {
        free(c);
        return NULL;
    }
    return sd->v[sd->n++] = c;
}

/* Whether the hours a and b (a first) count as one for the new budget's counter:
 * every hour of a calendar period (budget.lua sums them; they begin at or after the
 * period's start), the hours of one rolling bucket. So a counter sends at most 31
 * pairs, whatever its window's length. */
static bool same_slot(const seed *sd, int64_t a, int64_t b) {
    if (sd->win.kind != DSC_WINDOW_ROLLING) return true;
    int64_t width = sd->win.span_us / DSC_WINDOW_BUCKETS;
    return width > 0 && a * 1000000 / width == b * 1000000 / width;
}

/* Add one rollup field {org, team, user, key, ...} -> "v1,...,v7" of hour. */
static dsc_status seed_field(pending *p, int64_t hour, const char *field, const char *sums) {
    seed *sd = p->sd;
    json_t *a = json_loads(field, 0, NULL);
    dsc_subject s = {part_of(a, 0), part_of(a, 1), part_of(a, 2), part_of(a, 3)};
    char name[DSC__COUNTER_NAME_MAX];
    int64_t x = 0;
    bool counts = json_is_array(a) && dsc__redis_rollup_sum(sums, p->binfo.metric, &x) &&
                  seed_counter_of(p, &s, name, sizeof name);
    json_decref(a);
    if (!counts || x == 0) return DSC_OK;
    seed_counter *c = seed_counter_get(sd, name);
    if (!c) return DSC_NOMEM;
    if (c->n && same_slot(sd, c->pairs[c->n - 1][0], hour)) {
        c->pairs[c->n - 1][1] += x;
        return DSC_OK;
    }
    if (sd->pairs == SEED_PAIRS_MAX) return DSC_TOO_LARGE;
    if (c->n == c->cap) {
        size_t cap = c->cap ? 2 * c->cap : 8;
        int64_t(*np)[2] = realloc(c->pairs, cap * sizeof *np);
        if (!np) return DSC_NOMEM;
        c->pairs = np, c->cap = cap;
    }
    c->pairs[c->n][0] = hour, c->pairs[c->n][1] = x;
    c->n++, sd->pairs++;
    return DSC_OK;
}

/* Send the definition with every counter's past usage (budget.lua). */
static dsc_status seed_send(pending *p, dsc_error *err) {
    seed *sd = p->sd;
    size_t n = 2 * sd->n + 2 * sd->pairs, k = 0;
    const char **v = malloc((n ? n : 1) * sizeof *v);
    char(*num)[24] = malloc((n ? n : 1) * sizeof *num);
    dsc_status st = v && num ? DSC_OK : dsc_error_set(err, DSC_NOMEM, "out of memory for a budget");
    for (size_t i = 0; st == DSC_OK && i < sd->n; i++) {
        const seed_counter *c = sd->v[i];
        v[k++] = c->name;
        snprintf(num[k], sizeof num[k], "%zu", c->n), v[k] = num[k], k++;
        for (size_t j = 0; j < c->n; j++) {
            snprintf(num[k], sizeof num[k], "%lld", (long long)c->pairs[j][0]), v[k] = num[k], k++;
            snprintf(num[k], sizeof num[k], "%lld", (long long)c->pairs[j][1]), v[k] = num[k], k++;
        }
    }
    if (st == DSC_OK && !conn_of(p->w, err)) st = DSC_STORE_UNAVAILABLE;
    if (st == DSC_OK)
        st = dsc__redis_budget_seeded(p->w->redis, sd->id, sd->text, p->w->srv->redis->tz_offset_s,
                                      &sd->win, v, k, on_budget, p, err);
    free(v);
    free(num);
    return st;
}

static dsc_status seed_read(pending *p, int64_t from, const char *cursor, dsc_error *err);

static void on_seed_rollups(void *ud, dsc_status st, const dsc__redis_answer *a,
                            const dsc_error *st_err) {
    pending *p = ud;
    dsc_error err = st == DSC_OK ? (dsc_error){0} : *st_err;
    for (size_t i = 0; st == DSC_OK && i < a->n; i++) {
        st = seed_field(p, strtoll(a->rows[3 * i]->str, NULL, 10), a->rows[3 * i + 1]->str,
                        a->rows[3 * i + 2]->str);
        if (st != DSC_OK)
            dsc_error_set(&err, st,
                          st == DSC_TOO_LARGE
                              ? "budget: its window's usage needs more than %d counter sums"
                              : "out of memory reading a new budget's usage (%d)",
                          SEED_PAIRS_MAX);
    }
    if (st == DSC_OK && a->next_hour < p->sd->to_hour) {
        st = ++p->sd->calls > SEED_CALLS
                 ? dsc_error_set(&err, DSC_STORE_UNAVAILABLE, "budget: too many rollup pages")
                 : seed_read(p, a->next_hour, a->cursor, &err);
        if (st == DSC_OK) return;
    } else if (st == DSC_OK && (st = seed_send(p, &err)) == DSC_OK) {
        return;
    }
    reload_defs(p->w); /* the local copy changed first: put Redis's back */
    finish(p, st, &err);
}

static dsc_status seed_read(pending *p, int64_t from, const char *cursor, dsc_error *err) {
    if (!conn_of(p->w, err)) return DSC_STORE_UNAVAILABLE;
    return dsc__redis_rollups(p->w->redis, from, p->sd->to_hour, cursor, SEED_PAGE, on_seed_rollups,
                              p, err);
}

/* Start reading the past usage of a new budget with a calendar or rolling window
 * (*text is then the seed's); *started false (nothing sent) for a rate window. */
static dsc_status seed_start(pending *p, const char *id, char **text, bool *started,
                             dsc_error *err) {
    dsc_window win;
    *started = false;
    if (dsc_window_parse(p->binfo.window, &win, err) != DSC_OK) return err->code;
    if (win.kind == DSC_WINDOW_RATE) return DSC_OK;
    seed *sd = calloc(1, sizeof *sd);
    if (!sd) return dsc_error_set(err, DSC_NOMEM, "out of memory for a new budget");
    sd->win = win;
    sd->text = *text;
    *text = NULL;
    snprintf(sd->id, sizeof sd->id, "%s", id);
    dsc__strmap_init(&sd->index);
    p->sd = sd;
    int64_t now = dsc__now_us() / 1000000, from = now - win.span_us / 1000000, end;
    if (win.kind != DSC_WINDOW_ROLLING) {
        dsc_tz tz = {false, p->w->srv->redis->tz_offset_s};
        dsc_window_period(&win, &tz, now, &from, &end);
    }
    from = (from + 3599) / 3600 * 3600;               /* the hours that begin in the window */
    if (win.kind == DSC_WINDOW_ROLLING) from -= 3600; /* an hour early: Redis's clock decides */
    sd->to_hour = now + 7200;
    dsc_status st = seed_read(p, from, "0", err);
    *started = st == DSC_OK;
    return st;
}

static dsc_status budget(dsc__worker *w, const dsc_budget_req *req, const dsc_done *done,
                         dsc_error *err) {
    dsc__redis *r = conn_of(w, err);
    if (!r) return DSC_STORE_UNAVAILABLE;
    dsc_server *srv = w->srv;
    dsc_budget_info info;
    char id[DSC__COUNTER_NAME_MAX], *text = NULL;
    /* The local copy validates and normalises the change (and is corrected by a
     * reload should Redis refuse it). */
    pthread_mutex_lock(&srv->redis->sync_mu);
    bool is_new = !req->remove && dsc_ledger_budget_get(srv->ledger, req->selector, req->metric,
                                                        req->window, &info, NULL) != DSC_OK;
    dsc_status st = req->remove ? dsc_ledger_budget_get(srv->ledger, req->selector, req->metric,
                                                        req->window, &info, err)
                                : DSC_OK;
    if (st == DSC_OK)
        st = dsc_ledger_budget(srv->ledger, req, req->remove ? NULL : &info, NULL, err);
    pthread_mutex_unlock(&srv->redis->sync_mu);
    if (st != DSC_OK) return st;
    budget_id(id, sizeof id, info.selector, info.metric, info.window);
    if (!req->remove && !(text = definition_text(&info, req->limit)))
        return dsc_error_set(err, DSC_NOMEM, "out of memory for a budget definition");
    pending *p = pending_new(w, done, err);
    bool started = false;
    if (p) {
        p->binfo = info;
        p->blimit = req->limit;
        p->budget_remove = req->remove;
        if (is_new) st = seed_start(p, id, &text, &started, err);
        if (st == DSC_OK && !started)
            st = dsc__redis_budget(r, id, req->remove ? "" : text, on_budget, p, err);
    } else {
        st = DSC_NOMEM;
    }
    free(text);
    if (st != DSC_OK) {
        pending_free(p);
        reload_defs(w);
    }
    return st;
}

/* ---------------------------------------------------------------- health -- */

static bool healthy(dsc_server *srv) {
    for (int i = 0; i < srv->n_workers; i++)
        if (!atomic_load(&srv->workers[i].redis_ready)) return false;
    return srv->n_workers > 0;
}

const dsc__ledger_ops dsc__ledger_redis = {
    "redis", preview, hold_get, reserve, record, settle, cancel, budget, healthy,
};

/* ------------------------------------------------------------ lifecycle -- */

static void on_sweep(void *ud, dsc_status st, const dsc__redis_answer *a, const dsc_error *err) {
    (void)err;
    dsc__worker *w = ud;
    if (st == DSC_OK && a->count > 0)
        dsc_log_write(&w->srv->log, DSC_LOG_INFO, "holds_expired", "count=%lld",
                      (long long)a->count);
}

/* Worker 0, once a second: a reload asked for, and the expired holds of any replica. */
static void on_redis_tick(evutil_socket_t fd, short what, void *arg) {
    (void)fd;
    (void)what;
    dsc__worker *w = arg;
    dsc_error err;
    if (!w->redis || !dsc__redis_ready(w->redis)) return;
    if (atomic_load(&w->srv->redis->reload) || atomic_load(&w->srv->redis->loaded) < 0)
        reload_defs(w);
    dsc__redis_sweep(w->redis, true, SWEEP_MAX, RETAIN_S, JOURNAL_MAX, on_sweep, w, &err);
}

static void on_ready(void *ud, bool ready) {
    dsc__worker *w = ud;
    atomic_store(&w->redis_ready, ready);
    dsc_log_write(&w->srv->log, ready ? DSC_LOG_INFO : DSC_LOG_WARN,
                  ready ? "store_connected" : "store_lost", "worker=%d%s%s", w->index,
                  ready ? "" : " message=", ready ? "" : dsc__redis_last_error(w->redis));
    if (ready && w->index == 0) reload_defs(w);
}

static void on_budgets_news(void *ud, int64_t version) {
    dsc__worker *w = ud;
    /* a budgets version this replica has (its own change) needs nothing; anything
     * else (another's change, a key, a reconnect) is read again */
    if (version < 0 || version > atomic_load(&w->srv->redis->loaded)) reload_defs(w);
}

dsc_status dsc__ledger_redis_open(dsc_server *srv, dsc_error *err) {
    dsc__redis_shared *rs = calloc(1, sizeof *rs);
    if (!rs) return dsc_error_set(err, DSC_NOMEM, "out of memory for the Redis store");
    srv->redis = rs;
    pthread_mutex_init(&rs->sync_mu, NULL);
    pthread_mutex_init(&rs->holds_mu, NULL);
    pthread_mutex_init(&rs->recent_mu, NULL);
    dsc__strmap_init(&rs->holds);
    dsc__strmap_init(&rs->recent);
    rs->recent_max_age_us = srv->cfg.redis_state_max_age_ms * 1000;
    if (!(rs->ring = calloc(HOLDS_KEPT, sizeof *rs->ring)))
        return dsc_error_set(err, DSC_NOMEM, "out of memory for the Redis store");
    atomic_init(&rs->loaded, -1);
    atomic_init(&rs->reload, false);
    atomic_init(&rs->busy, false);
    atomic_init(&rs->again, false);
    atomic_init(&rs->outstanding, 0);
    dsc_status st = dsc__store_url_parse("store", srv->cfg.store, &rs->url, err);
    if (st == DSC_OK) st = dsc__store_url_env(&rs->url, getenv("DISCERN_REDIS_PASSWORD"), err);
    dsc_tz tz;
    if (st == DSC_OK) st = dsc_tz_parse(srv->cfg.timezone[0] ? srv->cfg.timezone : "UTC", &tz, err);
    if (st == DSC_OK && tz.local)
        st = dsc_error_set(err, DSC_BAD_REQUEST,
                           "timezone: a Redis store needs a fixed offset (\"UTC\", \"+02:00\"): "
                           "every replica must reset windows at the same instant");
    rs->tz_offset_s = tz.offset_s;
    return st;
}

void dsc__ledger_redis_describe(const dsc_server *srv, char *out, size_t cap) {
    dsc__store_url_describe(&srv->redis->url, out, cap);
}

dsc_status dsc__ledger_redis_worker_start(dsc__worker *w, dsc_error *err) {
    dsc_server *srv = w->srv;
    atomic_init(&w->redis_ready, false);
    if (!srv->redis) return DSC_OK;
    dsc__redis_config rc = {
        .url = &srv->redis->url,
        .prefix = srv->cfg.redis_prefix,
        .on_ready = on_ready,
        .on_budgets = w->index == 0 ? on_budgets_news : NULL,
        .ud = w,
    };
    if (!(w->redis = dsc__redis_new(w->base, &rc, err))) return err->code;
    if (w->index != 0) return DSC_OK;
    struct timeval second = {1, 0};
    w->redis_tick = event_new(w->base, -1, EV_PERSIST, on_redis_tick, w);
    if (!w->redis_tick) return dsc_error_set(err, DSC_NOMEM, "redis tick event");
    event_add(w->redis_tick, &second);
    return DSC_OK;
}

void dsc__ledger_redis_worker_stop(dsc__worker *w) {
    if (w->redis_tick) event_free(w->redis_tick);
    w->redis_tick = NULL;
    dsc__redis *r = w->redis;
    dsc__redis_free(r);
    w->redis = NULL;
    atomic_store(&w->redis_ready, false);
}

void dsc__ledger_redis_free(dsc_server *srv) {
    if (!srv->redis) return;
    dsc__redis_shared *rs = srv->redis;
    for (size_t i = 0; rs->ring && i < HOLDS_KEPT; i++)
        if (rs->ring[i][0]) holds_forget_locked(rs, rs->ring[i]);
    dsc__strmap_destroy(&rs->holds);
    dsc__strmap_each(&rs->recent, recent_free, NULL);
    dsc__strmap_destroy(&rs->recent);
    pthread_mutex_destroy(&rs->recent_mu);
    free(rs->ring);
    pthread_mutex_destroy(&rs->holds_mu);
    pthread_mutex_destroy(&srv->redis->sync_mu);
    free(srv->redis);
    srv->redis = NULL;
}
