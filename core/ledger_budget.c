/*
 * ledger_budget.c - budgets, selectors and counters of the ledger.
 *
 * Budgets are found without scanning: a subject (org, team, user, key) names at
 * most 15 selectors that can apply to it ("*", "org:*", "org:acme", "team:*",
 * "team:infra", "org:acme/team:*", "org:acme/team:infra", ... for user and key), and
 * each selector is one hash lookup giving the budgets configured for it. A budget's
 * counter for the subject is one more lookup by "<budget id>#<counter name>", where
 * the counter name is "*", "org:<org>", or "org:<org>/<level>:<name>" below the org
 * level ("<level>:<name>" when the subject names no org).
 */
#include "ledger_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const level_names[LV_COUNT] = {"*", "org", "team", "user", "key"};

dsc_status dsc__check_name(const char *field, const char *v, dsc_error *err) {
    if (!v || !*v) return DSC_OK;
    size_t len = strlen(v);
    if (len >= DSC_NAME_MAX)
        return dsc_error_set(err, DSC_BAD_REQUEST, "field '%s': longer than %d characters", field,
                             DSC_NAME_MAX - 1);
    for (const char *p = v; *p; p++)
        if (*p == ':' || *p == '/' || *p == '*' || (unsigned char)*p <= ' ' || *p == 0x7f)
            return dsc_error_set(err, DSC_BAD_REQUEST,
                                 "field '%s': '%.63s' may not contain ':', '/', '*', spaces "
                                 "or control characters",
                                 field, v);
    return DSC_OK;
}

static int parse_level(const char *s, size_t len) {
    for (int i = LV_ORG; i < LV_COUNT; i++)
        if (strlen(level_names[i]) == len && strncmp(s, level_names[i], len) == 0) return i;
    return -1;
}

/* "<level>:<name|*>" into level and value. */
static bool parse_part(const char *s, size_t len, int *level, char *value) {
    const char *colon = memchr(s, ':', len);
    if (!colon) return false;
    *level = parse_level(s, (size_t)(colon - s));
    size_t vlen = len - (size_t)(colon - s) - 1;
    if (*level < 0 || vlen == 0 || vlen >= DSC_NAME_MAX) return false;
    memcpy(value, colon + 1, vlen);
    value[vlen] = '\0';
    return strcmp(value, "*") == 0 || dsc__check_name("selector", value, NULL) == DSC_OK;
}

static bool parse_selector(const char *text, dsc__budget *b) {
    char org[DSC_NAME_MAX], value[DSC_NAME_MAX];
    int level;
    b->qualified = false;
    if (strcmp(text, "*") == 0) {
        b->level = LV_ALL;
        b->any = true;
        return true;
    }
    const char *slash = strchr(text, '/');
    if (!slash) {
        if (!parse_part(text, strlen(text), &level, value)) return false;
    } else {
        if (!parse_part(text, (size_t)(slash - text), &level, org) || level != LV_ORG ||
            strcmp(org, "*") == 0)
            return false;
        if (!parse_part(slash + 1, strlen(slash + 1), &level, value) || level == LV_ORG)
            return false;
        b->qualified = true;
    }
    b->level = (dsc__level)level;
    b->any = strcmp(value, "*") == 0;
    return true;
}

static dsc_status parse_selector_checked(const char *text, dsc__budget *b, dsc_error *err) {
    if (!text || strlen(text) >= DSC_SELECTOR_MAX || !parse_selector(text, b))
        return dsc_error_set(err, DSC_BAD_REQUEST,
                             "field 'selector': '%.60s' is not '*', '<level>:<name|*>' or "
                             "'org:<name>/<level>:<name|*>' (level org|team|user|key)",
                             text ? text : "(null)");
    return DSC_OK;
}

void dsc__budget_ident(char *buf, size_t len, const char *selector, dsc_metric m,
                       const char *window) {
    snprintf(buf, len, "%s|%d|%s", selector, (int)m, window);
}

static dsc_status live_append(dsc_ledger *l, dsc__budget *b) {
    if (l->n_live == l->cap_live) {
        size_t cap = l->cap_live ? l->cap_live * 2 : 64;
        dsc__budget **live = realloc(l->live, cap * sizeof *live);
        if (!live) return DSC_NOMEM;
        l->live = live;
        l->cap_live = cap;
    }
    size_t i = l->n_live; /* keep ordered by id (loads may come in any order) */
    while (i > 0 && l->live[i - 1]->id > b->id) {
        l->live[i] = l->live[i - 1];
        i--;
    }
    l->live[i] = b;
    l->n_live++;
    return DSC_OK;
}

/* The shard of the counters' index that holds key. */
static dsc__cmap *cmap_of(dsc_ledger *l, const char *key) {
    return &l->cmap[dsc__strmap_hash(key) & (DSC__CMAP_SHARDS - 1)];
}

/* Index c (every shard locked, or opening). */
static dsc_status cmap_put(dsc_ledger *l, dsc__counter *c) {
    dsc__cmap *m = cmap_of(l, c->key);
    pthread_mutex_lock(&m->mu);
    dsc_status st = dsc__strmap_put(&m->map, c->key, c);
    pthread_mutex_unlock(&m->mu);
    if (st == DSC_OK) atomic_fetch_add_explicit(&l->n_counters, 1, memory_order_relaxed);
    return st;
}

/* Unindex c, and drop it from every shard's cache (every shard locked, or opening). */
static void cmap_del(dsc_ledger *l, dsc__counter *c) {
    for (size_t i = 0; i < DSC__SHARDS; i++)
        dsc__strmap_del_if(&l->shards[i].counters, c->key, c);
    dsc__cmap *m = cmap_of(l, c->key);
    pthread_mutex_lock(&m->mu);
    bool gone = dsc__strmap_del_if(&m->map, c->key, c) != NULL;
    pthread_mutex_unlock(&m->mu);
    if (gone) atomic_fetch_sub_explicit(&l->n_counters, 1, memory_order_relaxed);
}

dsc_status dsc__budget_insert(dsc_ledger *l, dsc__budget *b) {
    dsc__sel_slot *slot = dsc__strmap_get(&l->sels, b->selector);
    bool new_slot = !slot;
    if (new_slot) {
        if (!(slot = calloc(1, sizeof *slot + strlen(b->selector) + 1))) return DSC_NOMEM;
        strcpy(slot->selector, b->selector);
        if (dsc__strmap_put(&l->sels, slot->selector, slot) != DSC_OK) goto fail;
    }
    if (dsc__strmap_put(&l->budgets, b->ident, b) != DSC_OK) goto fail_sel;
    if (live_append(l, b) != DSC_OK) goto fail_ident;
    for (dsc__counter *c = b->counters; c; c = c->next)
        if (cmap_put(l, c) != DSC_OK) goto fail_counters;
    l->budget_epoch++;
    b->next_sel = slot->head;
    slot->head = b;
    l->shape_count[dsc__budget_shape(b)]++;
    if (b->id >= l->next_budget_id) l->next_budget_id = b->id + 1;
    return DSC_OK;
fail_counters:
    for (dsc__counter *c = b->counters; c; c = c->next)
        cmap_del(l, c);
    for (size_t i = 0; i < l->n_live; i++)
        if (l->live[i] == b) {
            memmove(&l->live[i], &l->live[i + 1], (l->n_live - i - 1) * sizeof *l->live);
            l->n_live--;
            break;
        }
fail_ident:
    dsc__strmap_del(&l->budgets, b->ident);
fail_sel:
    if (new_slot) dsc__strmap_del(&l->sels, slot->selector);
fail:
    if (new_slot) free(slot);
    return DSC_NOMEM;
}

static void unlink_from_slot(dsc_ledger *l, dsc__budget *b) {
    dsc__sel_slot *slot = dsc__strmap_get(&l->sels, b->selector);
    if (!slot) return;
    for (dsc__budget **p = &slot->head; *p; p = &(*p)->next_sel)
        if (*p == b) {
            *p = b->next_sel;
            break;
        }
    if (!slot->head) {
        dsc__strmap_del(&l->sels, slot->selector);
        free(slot);
    }
}

void dsc__budget_remove(dsc_ledger *l, dsc__budget *b) {
    l->budget_epoch++;
    unlink_from_slot(l, b);
    l->shape_count[dsc__budget_shape(b)]--;
    dsc__strmap_del(&l->budgets, b->ident);
    for (size_t i = 0; i < l->n_live; i++)
        if (l->live[i] == b) {
            memmove(&l->live[i], &l->live[i + 1], (l->n_live - i - 1) * sizeof *l->live);
            l->n_live--;
            break;
        }
    for (dsc__counter *c = b->counters; c; c = c->next)
        cmap_del(l, c);
    b->next_dead = l->dead;
    l->dead = b;
}

static bool present(const char *s) {
    return s && *s;
}

/* Append s to the string at *p, never past end (the last byte stays a NUL). The hot
 * paths build keys with this rather than snprintf, which costs ~10x more. */
static void put(char **p, char *end, const char *s) {
    while (*s && *p < end - 1)
        *(*p)++ = *s++;
    **p = '\0';
}

static void put_int(char **p, char *end, int64_t v) {
    char digits[24];
    int n = 0;
    uint64_t u = v < 0 ? 0 : (uint64_t)v;
    do
        digits[n++] = (char)('0' + u % 10), u /= 10;
    while (u);
    while (n && *p < end - 1)
        *(*p)++ = digits[--n];
    **p = '\0';
}

/* "<level>:<v>", qualified by "org:<org>/" when org is given, into buf. */
static void level_name(char *buf, size_t len, const char *org, int lv, const char *v) {
    char *p = buf, *end = buf + len;
    *p = '\0';
    if (org) {
        put(&p, end, "org:");
        put(&p, end, org);
        put(&p, end, "/");
    }
    put(&p, end, level_names[lv]);
    put(&p, end, ":");
    put(&p, end, v);
}

#define CAND_MAX 160 /* longer than any selector: an over-long candidate matches none */

int dsc__budget_shape(const dsc__budget *b) {
    if (b->level == LV_ALL) return 0;
    if (b->level == LV_ORG) return b->any ? 1 : 2;
    return 3 + (b->level - LV_TEAM) * 4 + (b->qualified ? 2 : 0) + (b->any ? 0 : 1);
}

/* The selectors that can apply to s and have budgets of their shape, into cand (at
 * most DSC__SHAPES): most deployments use a few shapes, so most are skipped unbuilt. */
static size_t candidates(const dsc_ledger *l, const dsc_subject *s, char cand[][CAND_MAX]) {
    size_t n = 0;
    const size_t *has = l->shape_count;
    if (has[0]) strcpy(cand[n++], "*");
    if (present(s->org)) {
        if (has[1]) strcpy(cand[n++], "org:*");
        if (has[2]) level_name(cand[n++], CAND_MAX, NULL, LV_ORG, s->org);
    }
    const char *vals[LV_COUNT] = {NULL, NULL, s->team, s->user, s->key};
    for (int lv = LV_TEAM; lv < LV_COUNT; lv++) {
        if (!present(vals[lv])) continue;
        const size_t *h = has + 3 + (lv - LV_TEAM) * 4;
        if (h[0]) level_name(cand[n++], CAND_MAX, NULL, lv, "*");
        if (h[1]) level_name(cand[n++], CAND_MAX, NULL, lv, vals[lv]);
        if (!present(s->org)) continue;
        if (h[2]) level_name(cand[n++], CAND_MAX, s->org, lv, "*");
        if (h[3]) level_name(cand[n++], CAND_MAX, s->org, lv, vals[lv]);
    }
    return n;
}

size_t dsc__counter_key(const dsc__budget *b, const dsc_subject *s, char *key, size_t len) {
    char *p = key, *end = key + len;
    put_int(&p, end, b->id);
    put(&p, end, "#");
    size_t off = (size_t)(p - key);
    const char *vals[LV_COUNT] = {NULL, s->org, s->team, s->user, s->key};
    if (b->level == LV_ALL)
        put(&p, end, "*");
    else
        level_name(p, (size_t)(end - p), b->level == LV_ORG || !present(s->org) ? NULL : s->org,
                   b->level, vals[b->level]);
    return off;
}

static dsc__counter *counter_new(dsc__strmap *map, dsc__budget *b, const char *key, size_t off) {
    dsc__counter *c = calloc(1, sizeof *c + strlen(key) + 1);
    if (!c) return NULL;
    c->b = b;
    strcpy(c->key, key);
    c->name_off = off;
    if (dsc_window_counter_init(&c->wc, &b->win) != DSC_OK) goto fail;
    if (dsc__strmap_put(map, c->key, c) != DSC_OK) goto fail;
    c->next = b->counters;
    b->counters = c;
    b->n_counters++;
    return c;
fail:
    dsc_window_counter_destroy(&c->wc);
    free(c);
    return NULL;
}

dsc__counter *dsc__budget_counter(dsc__strmap *map, dsc__budget *b, const dsc_subject *s,
                                  bool *created) {
    char key[DSC__COUNTER_KEY_MAX];
    size_t off = dsc__counter_key(b, s, key, sizeof key);
    dsc__counter *c = dsc__strmap_get(map, key);
    *created = !c;
    return c ? c : counter_new(map, b, key, off);
}

bool dsc__budget_applies(const dsc__budget *b, const dsc_subject *s) {
    const char *vals[LV_COUNT] = {NULL, s->org, s->team, s->user, s->key};
    if (b->level == LV_ALL) return true;
    if (!present(vals[b->level]) || (b->qualified && !present(s->org))) return false;
    char cand[CAND_MAX];
    level_name(cand, sizeof cand, b->qualified ? s->org : NULL, b->level,
               b->any ? "*" : vals[b->level]);
    return strcmp(cand, b->selector) == 0;
}

/* Cache c in sh (its lock held). A full cache starts afresh: the counters in use come
 * back at their next call, so it holds the shard's working set in bounded memory. Out
 * of memory: c stays uncached. */
static void cache_put(dsc__shard *sh, dsc__counter *c) {
    if (sh->counters.len >= DSC__SHARD_CACHE_MAX) {
        dsc__strmap_destroy(&sh->counters);
        dsc__strmap_init(&sh->counters);
    }
    dsc__strmap_put(&sh->counters, c->key, c);
}

/* b's counter named key (off: where its name starts), found or, with create, made:
 * first in the cache of sh (whose lock the caller holds; NULL: none), then in the
 * counters' index, whose shard is locked here (the budget's counter list under
 * counters_new_mu, as holders of other shards may add to it). A counter found there
 * joins sh's cache, so that a shard's calls on counters it has seen take no lock
 * but their own. */
static dsc__counter *counter_get(dsc_ledger *l, dsc__shard *sh, dsc__budget *b, const char *key,
                                 size_t off, bool create, bool *nomem) {
    dsc__counter *c = sh ? dsc__strmap_get(&sh->counters, key) : NULL;
    if (c) return c;
    dsc__cmap *m = cmap_of(l, key);
    pthread_mutex_lock(&m->mu);
    c = dsc__strmap_get(&m->map, key);
    if (!c && create) {
        pthread_mutex_lock(&l->counters_new_mu);
        c = counter_new(&m->map, b, key, off);
        pthread_mutex_unlock(&l->counters_new_mu);
        if (c) atomic_fetch_add_explicit(&l->n_counters, 1, memory_order_relaxed);
        *nomem = !c;
    }
    pthread_mutex_unlock(&m->mu);
    if (c && sh) cache_put(sh, c);
    return c;
}

static dsc_status add_hits(dsc_ledger *l, dsc__shard *sh, dsc__sel_slot *slot, const dsc_subject *s,
                           bool create, dsc__hit *hits, size_t *n) {
    char key[DSC__COUNTER_KEY_MAX];
    bool nomem = false;
    for (dsc__budget *b = slot->head; b; b = b->next_sel) {
        if (*n == DSC__HITS_MAX) return DSC_TOO_LARGE;
        size_t off = dsc__counter_key(b, s, key, sizeof key);
        dsc__counter *c = counter_get(l, sh, b, key, off, create, &nomem);
        if (nomem) return DSC_NOMEM;
        hits[(*n)++] = (dsc__hit){b, c};
    }
    return DSC_OK;
}

dsc_status dsc__match(dsc_ledger *l, dsc__shard *sh, const dsc_subject *s, bool create,
                      dsc__hit *hits, size_t *n, dsc_error *err) {
    char cand[DSC__SHAPES][CAND_MAX];
    size_t nc = candidates(l, s, cand);
    *n = 0;
    for (size_t i = 0; i < nc; i++) {
        dsc__sel_slot *slot = dsc__strmap_get(&l->sels, cand[i]);
        if (!slot) continue;
        dsc_status st = add_hits(l, sh, slot, s, create, hits, n);
        if (st == DSC_TOO_LARGE)
            return dsc_error_set(err, st, "more than %d budgets apply to one subject",
                                 DSC__HITS_MAX);
        if (st != DSC_OK) return dsc_error_set(err, st, "out of memory creating a counter");
    }
    return DSC_OK;
}

void dsc__budget_drop_counters(dsc__budget *b) {
    for (dsc__counter *c = b->counters, *next; c; c = next) {
        next = c->next;
        dsc_window_counter_destroy(&c->wc);
        free(c);
    }
    b->counters = NULL;
    b->n_counters = 0;
}

static void budget_free(dsc__budget *b) {
    dsc__budget_drop_counters(b);
    free(b);
}

static void free_slot(void *val, void *ud) {
    (void)ud;
    free(val);
}

void dsc__budgets_free(dsc_ledger *l) {
    for (size_t i = 0; i < l->n_live; i++)
        budget_free(l->live[i]);
    for (dsc__budget *b = l->dead, *next; b; b = next) {
        next = b->next_dead;
        budget_free(b);
    }
    dsc__strmap_each(&l->sels, free_slot, NULL);
    free(l->live);
    l->live = NULL;
    l->n_live = 0;
}

/* --- the public budget API ------------------------------------------------------ */

/* Parse (selector, metric, window) into a fresh budget (not indexed). */
dsc_status dsc__budget_new(const char *selector, dsc_metric metric, const char *window,
                           dsc__budget **out, dsc_error *err) {
    if ((unsigned)metric >= DSC_METRIC_COUNT)
        return dsc_error_set(err, DSC_UNKNOWN_METRIC, "field 'metric': %d is not a metric",
                             (int)metric);
    dsc__budget tmp;
    memset(&tmp, 0, sizeof tmp);
    dsc_status st = parse_selector_checked(selector, &tmp, err);
    if (st == DSC_OK) st = dsc_window_parse(window, &tmp.win, err);
    if (st != DSC_OK) return st;
    tmp.metric = metric;
    char wtext[DSC_WINDOW_MAX], ident[DSC_SELECTOR_MAX + DSC_WINDOW_MAX + 16];
    snprintf(wtext, sizeof wtext, "%s", window);
    dsc__budget_ident(ident, sizeof ident, selector, metric, wtext);
    size_t ilen = strlen(ident), slen = strlen(selector), wlen = strlen(wtext);
    dsc__budget *b = malloc(sizeof *b + ilen + 1 + slen + 1 + wlen + 1);
    if (!b) return dsc_error_set(err, DSC_NOMEM, "out of memory creating a budget");
    memcpy(b, &tmp, sizeof tmp);
    memcpy(b->ident, ident, ilen + 1);
    b->selector = memcpy(b->ident + ilen + 1, selector, slen + 1);
    b->window_text = memcpy(b->ident + ilen + 1 + slen + 1, wtext, wlen + 1);
    *out = b;
    return DSC_OK;
}

static dsc_status budget_prepare(const char *selector, dsc_metric metric, const char *window,
                                 dsc__budget **out, dsc_error *err) {
    return dsc__budget_new(selector, metric, window, out, err);
}

static void budget_info(const dsc__budget *b, dsc_budget_info *out) {
    if (!out) return;
    memset(out, 0, sizeof *out);
    out->id = b->id;
    snprintf(out->selector, sizeof out->selector, "%s", b->selector);
    snprintf(out->window, sizeof out->window, "%s", b->window_text);
    out->metric = b->metric;
    out->limit = b->limit;
}

static dsc__rec *budget_rec(dsc__rec_type type, const dsc__budget *b, int64_t id, int64_t limit,
                            int64_t now) {
    dsc__rec *rec = calloc(1, sizeof *rec);
    if (!rec) return NULL;
    rec->type = type;
    rec->at_us = now;
    rec->u.budget.id = id;
    rec->u.budget.limit = limit;
    rec->u.budget.metric = b->metric;
    snprintf(rec->u.budget.selector, sizeof rec->u.budget.selector, "%s", b->selector);
    snprintf(rec->u.budget.window, sizeof rec->u.budget.window, "%s", b->window_text);
    return rec;
}

dsc_status dsc__budget_persist(dsc_ledger *l, dsc__rec *rec, dsc__done *done, dsc_error *err) {
    if (!rec) return dsc_error_set(err, DSC_NOMEM, "out of memory");
    bool wait = !done->fn;
    rec->done_fn = done->fn;
    rec->done_ud = done->ud;
    dsc_status st = dsc__store_enqueue(l->store, rec, wait);
    if (st != DSC_OK && rec->type == DSC__REC_BUDGET_SET) { /* never reaches the writer */
        dsc__budget_history_free(rec->u.budget.history);
        rec->u.budget.history = NULL;
    }
    if (!wait) {
        done->queued = st == DSC_OK;
        return st == DSC_OK ? st : dsc_error_set(err, st, "ledger store unavailable");
    }
    if (st == DSC_OK && (st = dsc__store_wait(l->store, rec)) != DSC_OK)
        dsc_error_set(err, st, "%s", rec->message);
    free(rec);
    return st;
}

/* Create b or change the limit of its twin (every shard locked); b is
 * consumed. */
static dsc_status budget_apply_set(dsc_ledger *l, dsc__budget *b, dsc_budget_info *out,
                                   dsc_error *err) {
    dsc__budget *old = dsc__strmap_get(&l->budgets, b->ident);
    if (old) {
        old->limit = b->limit;
        budget_info(old, out);
        free(b);
        return DSC_OK;
    }
    if (dsc__budget_insert(l, b) != DSC_OK) {
        free(b);
        return dsc_error_set(err, DSC_NOMEM, "out of memory indexing a budget");
    }
    budget_info(b, out);
    return DSC_OK;
}

/* A budget set with a store: the writer applies it after the commit, a new one with
 * its window's past usage, read beforehand off the writer (on the reader thread for an
 * async call, here otherwise). Consumes rec. */
static dsc_status budget_set_stored(dsc_ledger *l, dsc__rec *rec, bool is_new, dsc__done *done,
                                    dsc_error *err) {
    if (rec && is_new && done->fn) {
        dsc_status st = dsc__reader_submit(l, rec, done);
        if (st == DSC_OK) {
            done->queued = true;
            return st;
        }
        free(rec);
        return dsc_error_set(err, st, "cannot queue the new budget");
    }
    if (rec && is_new) rec->u.budget.history = dsc__budget_history_read(l, &rec->u.budget);
    return dsc__budget_persist(l, rec, done, err);
}

static dsc_status budget_set_impl(dsc_ledger *l, const char *selector, dsc_metric metric,
                                  const char *window, double limit, dsc_budget_info *out,
                                  dsc__done *done, dsc_error *err) {
    int64_t micro;
    dsc_status st = dsc_amount_from_api("limit", limit, &micro, err);
    if (st != DSC_OK) return st;
    dsc__budget *b = NULL;
    if ((st = budget_prepare(selector, metric, window, &b, err)) != DSC_OK) return st;
    b->limit = micro;
    dsc__budgets_write(l);
    dsc__budget *old = dsc__strmap_get(&l->budgets, b->ident);
    bool is_new = !old;
    b->id = old ? old->id : l->next_budget_id++;
    int64_t now = dsc__ledger_now(l);
    if (!l->store) {
        st = budget_apply_set(l, b, out, err);
        dsc__budgets_done(l);
        return st;
    }
    dsc__budgets_done(l);
    st = budget_set_stored(l, budget_rec(DSC__REC_BUDGET_SET, b, b->id, micro, now), is_new, done,
                           err);
    if (st == DSC_OK && !done->queued) { /* waited: report the budget now in effect */
        dsc__shard *here = dsc__shard_here(l);
        pthread_mutex_lock(&here->mu);
        dsc__budget *applied = dsc__strmap_get(&l->budgets, b->ident);
        if (applied)
            budget_info(applied, out);
        else
            st = dsc_error_set(err, DSC_NOMEM, "out of memory indexing a budget");
        pthread_mutex_unlock(&here->mu);
    }
    free(b);
    return st;
}

static dsc_status budget_delete_impl(dsc_ledger *l, const char *selector, dsc_metric metric,
                                     const char *window, dsc__done *done, dsc_error *err) {
    dsc__budget *key = NULL;
    dsc_status st = budget_prepare(selector, metric, window, &key, err);
    if (st != DSC_OK) return st;
    dsc__shard *here = dsc__shard_here(l);
    pthread_mutex_lock(&here->mu);
    dsc__budget *b = dsc__strmap_get(&l->budgets, key->ident);
    int64_t id = b ? b->id : 0, now = dsc__ledger_now(l);
    pthread_mutex_unlock(&here->mu);
    if (!b) {
        st = dsc_error_set(err, DSC_UNKNOWN_BUDGET, "no budget '%s' on %s over '%s'", key->selector,
                           dsc_metric_name(metric), key->window_text);
        goto out;
    }
    if (l->store) { /* the writer removes it after the commit */
        st = dsc__budget_persist(l, budget_rec(DSC__REC_BUDGET_DELETE, key, id, 0, now), done, err);
        goto out;
    }
    dsc__budgets_write(l);
    b = dsc__strmap_get(&l->budgets, key->ident);
    if (b && b->id == id) dsc__budget_remove(l, b);
    dsc__budgets_done(l);
out:
    free(key);
    return st;
}

dsc_status dsc_ledger_budget(dsc_ledger *l, const dsc_budget_req *req, dsc_budget_info *out,
                             const dsc_done *done, dsc_error *err) {
    if (!req) return dsc_error_set(err, DSC_BAD_REQUEST, "no budget request");
    dsc__ledger_room(l);
    dsc__done d = {done ? done->fn : NULL, done ? done->ud : NULL, false};
    dsc_status st = req->remove
                        ? budget_delete_impl(l, req->selector, req->metric, req->window, &d, err)
                        : budget_set_impl(l, req->selector, req->metric, req->window, req->limit,
                                          done ? NULL : out, &d, err);
    return dsc__done_now(st, &d);
}

dsc_status dsc_ledger_budget_get(dsc_ledger *l, const char *selector, dsc_metric metric,
                                 const char *window, dsc_budget_info *out, dsc_error *err) {
    dsc__budget *key = NULL;
    dsc_status st = budget_prepare(selector, metric, window, &key, err);
    if (st != DSC_OK) return st;
    dsc__shard *here = dsc__shard_here(l);
    pthread_mutex_lock(&here->mu);
    dsc__budget *b = dsc__strmap_get(&l->budgets, key->ident);
    if (b)
        budget_info(b, out);
    else
        st = dsc_error_set(err, DSC_UNKNOWN_BUDGET, "no budget '%s' on %s over '%s'", key->selector,
                           dsc_metric_name(metric), key->window_text);
    pthread_mutex_unlock(&here->mu);
    free(key);
    return st;
}

size_t dsc_ledger_budget_list(dsc_ledger *l, size_t offset, dsc_budget_info *out, size_t max,
                              size_t *total) {
    size_t n = 0;
    dsc__shard *here = dsc__shard_here(l);
    pthread_mutex_lock(&here->mu);
    for (size_t i = offset; out && i < l->n_live && n < max; i++)
        budget_info(l->live[i], &out[n++]);
    if (total) *total = l->n_live;
    pthread_mutex_unlock(&here->mu);
    return n;
}
