/*
 * metrics.c - counters kept by the workers and their Prometheus text exposition
 * (served at /metrics by http.c).
 *
 * Workers only ever write their own counters (relaxed atomics, or a per-worker
 * mutex for the labelled decision table, uncontended except while /metrics reads);
 * the exposition sums over workers. Label sets stay bounded: policies are at most
 * DSC_POLICY_MAX per set and purposes are reported by class (purposes.lua), not as
 * free text; budget counters (one per subject that reserved on a wildcard budget) are
 * exported up to DSC__METRICS_COUNTERS_MAX, with a comment line when some are not.
 */
#include "server_internal.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const int64_t latency_bounds_us[DSC__LATENCY_BUCKETS] = {
    50, 100, 250, 500, 1000, 2500, 5000, 10000, 25000, 50000, 100000, 1000000};

static void add(atomic_uint_fast64_t *v, uint64_t n) {
    atomic_fetch_add_explicit(v, n, memory_order_relaxed);
}

static uint64_t get(const atomic_uint_fast64_t *v) {
    return atomic_load_explicit((atomic_uint_fast64_t *)v, memory_order_relaxed);
}

static bool same_label(const dsc__label_count *a, const dsc__label_count *b) {
    return a->shadow == b->shadow && a->outcome == b->outcome &&
           strcmp(a->policy, b->policy) == 0 && strcmp(a->purpose_class, b->purpose_class) == 0;
}

static void count_label(dsc__worker *w, bool shadow, int outcome, const char *policy,
                        const char *klass) {
    pthread_mutex_lock(&w->labels_lock);
    int i = 0;
    for (; i < w->n_labels; i++) {
        dsc__label_count *l = &w->labels[i];
        if (l->shadow == shadow && l->outcome == outcome && strcmp(l->policy, policy) == 0 &&
            strcmp(l->purpose_class, klass) == 0)
            break;
    }
    if (i == w->n_labels && w->n_labels < DSC__LABELS_MAX) {
        dsc__label_count *l = &w->labels[w->n_labels++];
        l->shadow = shadow;
        l->outcome = outcome;
        snprintf(l->policy, sizeof l->policy, "%s", policy);
        snprintf(l->purpose_class, sizeof l->purpose_class, "%s", klass);
        l->count = 0;
    }
    if (i < DSC__LABELS_MAX) w->labels[i].count++;
    pthread_mutex_unlock(&w->labels_lock);
}

void dsc__count_decision(dsc__worker *w, dsc_policy_outcome outcome, const char *policy,
                         const char *purpose, bool unenforced, int64_t latency_us) {
    dsc__counters *c = &w->counters;
    if (outcome >= DSC_POLICY_ALLOW && outcome <= DSC_POLICY_REFUSE) add(&c->decisions[outcome], 1);
    if (unenforced) add(&c->unenforced, 1);
    int b = 0;
    while (b < DSC__LATENCY_BUCKETS && latency_us > latency_bounds_us[b])
        b++;
    add(&c->latency[b], 1);
    add(&c->latency_sum_us, (uint64_t)(latency_us > 0 ? latency_us : 0));
    const char *klass = w->vm ? dsc_policy_vm_purpose_class(w->vm, purpose) : "unknown";
    count_label(w, false, outcome, policy, klass); /* "" when none decided, as in replies */
}

void dsc__count_shadow(dsc__worker *w, const char *policy, dsc_policy_outcome outcome) {
    count_label(w, true, outcome, policy, "");
}

void dsc__count_store(dsc__worker *w, int64_t us) {
    add(&w->counters.store_ops, 1);
    add(&w->counters.store_us, (uint64_t)(us > 0 ? us : 0));
}

void dsc__count_policy(dsc__worker *w) {
    dsc_policy_stats st;
    dsc_policy_vm_stats(w->vm, &st);
    if (st.errors < w->vm_errors_seen) w->vm_errors_seen = 0; /* a new VM after reload */
    add(&w->counters.policy_errors, st.errors - w->vm_errors_seen);
    w->vm_errors_seen = st.errors;
    if (st.watchdog_signals < w->vm_signals_seen) w->vm_signals_seen = 0;
    add(&w->counters.policy_slow, st.watchdog_signals - w->vm_signals_seen);
    w->vm_signals_seen = st.watchdog_signals;
}

/* v in lower-case hex without leading zeros (printf's %x) at p; returns the end. */
static char *put_hex(char *p, uint64_t v) {
    char digits[16];
    int n = 0;
    do {
        digits[n++] = "0123456789abcdef"[v & 15];
        v >>= 4;
    } while (v);
    while (n)
        *p++ = digits[--n];
    return p;
}

/* "d-<time us>-<worker>-<seq>" in hex, written by hand: snprintf cost a check more
 * than a thousand instructions here (docs/benchmarks.md). */
void dsc__new_decision_id(dsc__worker *w, char *out, size_t cap) {
    char id[3 * 17 + 2], *p = id;
    *p++ = 'd';
    *p++ = '-';
    p = put_hex(p, (uint64_t)dsc__now_us());
    *p++ = '-';
    p = put_hex(p, (uint64_t)(unsigned)w->index);
    *p++ = '-';
    p = put_hex(p, ++w->decision_seq);
    *p = '\0';
    if (!cap) return;
    size_t n = (size_t)(p - id) < cap ? (size_t)(p - id) : cap - 1;
    memcpy(out, id, n);
    out[n] = '\0';
}

/* ----------------------------------------------------------------- exposition -- */

typedef struct text {
    char *buf;
    size_t len, cap;
    bool failed;
} text;

static void put(text *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void put(text *t, const char *fmt, ...) {
    if (t->failed) return;
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(t->buf + t->len, t->cap - t->len, fmt, ap);
        va_end(ap);
        if (n < 0) {
            t->failed = true;
            return;
        }
        if ((size_t)n < t->cap - t->len) {
            t->len += (size_t)n;
            return;
        }
        size_t cap = t->cap * 2 + (size_t)n;
        char *p = realloc(t->buf, cap);
        if (!p) {
            t->failed = true;
            return;
        }
        t->buf = p;
        t->cap = cap;
    }
}

static uint64_t sum_at(dsc_server *srv, size_t offset) {
    uint64_t s = 0;
    for (int i = 0; i < srv->n_workers; i++)
        s += get((const atomic_uint_fast64_t *)((const char *)&srv->workers[i].counters + offset));
    return s;
}

/* Most budget counters whose used/held/remaining one /metrics reply exports. */
#define DSC__METRICS_COUNTERS_MAX 10000

#define SUM_FIELD(srv, field) sum_at((srv), offsetof(dsc__counters, field))

static void put_counter(text *t, const char *name, const char *help, uint64_t v) {
    put(t, "# HELP %s %s\n# TYPE %s counter\n%s %" PRIu64 "\n", name, help, name, name, v);
}

static void put_decisions(text *t, dsc_server *srv) {
    put(t,
        "# HELP discern_decisions_total Decisions by outcome, deciding policy and purpose class.\n"
        "# TYPE discern_decisions_total counter\n");
    dsc__label_count all[DSC__LABELS_MAX];
    int n = 0;
    for (int i = 0; i < srv->n_workers; i++) {
        dsc__worker *w = &srv->workers[i];
        pthread_mutex_lock(&w->labels_lock);
        for (int k = 0; k < w->n_labels; k++) {
            const dsc__label_count *l = &w->labels[k];
            int j = 0;
            while (j < n && !same_label(&all[j], l))
                j++;
            if (j == n && n < DSC__LABELS_MAX)
                all[n++] = *l;
            else if (j < n)
                all[j].count += l->count;
        }
        pthread_mutex_unlock(&w->labels_lock);
    }
    for (int j = 0; j < n; j++)
        if (!all[j].shadow)
            put(t,
                "discern_decisions_total{outcome=\"%s\",policy=\"%s\",purpose_class=\"%s\"} "
                "%" PRIu64 "\n",
                dsc_policy_outcome_name((dsc_policy_outcome)all[j].outcome), all[j].policy,
                all[j].purpose_class, all[j].count);
    put(t, "# HELP discern_shadow_verdicts_total Verdicts of shadow policies (never decisive).\n"
           "# TYPE discern_shadow_verdicts_total counter\n");
    for (int j = 0; j < n; j++)
        if (all[j].shadow)
            put(t, "discern_shadow_verdicts_total{policy=\"%s\",outcome=\"%s\"} %" PRIu64 "\n",
                all[j].policy, dsc_policy_outcome_name((dsc_policy_outcome)all[j].outcome),
                all[j].count);
}

static void put_latency(text *t, dsc_server *srv) {
    put(t, "# HELP discern_check_seconds Latency of check, from request decoded to reply packed.\n"
           "# TYPE discern_check_seconds histogram\n");
    uint64_t cumulative = 0;
    for (int b = 0; b <= DSC__LATENCY_BUCKETS; b++) {
        cumulative += sum_at(srv, offsetof(dsc__counters, latency) +
                                      (size_t)b * sizeof(atomic_uint_fast64_t));
        if (b < DSC__LATENCY_BUCKETS)
            put(t, "discern_check_seconds_bucket{le=\"%g\"} %" PRIu64 "\n",
                (double)latency_bounds_us[b] / 1e6, cumulative);
        else
            put(t, "discern_check_seconds_bucket{le=\"+Inf\"} %" PRIu64 "\n", cumulative);
    }
    put(t, "discern_check_seconds_sum %.6f\ndiscern_check_seconds_count %" PRIu64 "\n",
        (double)SUM_FIELD(srv, latency_sum_us) / 1e6, cumulative);
}

/* v as a Prometheus label value: backslash, double quote and newline escaped. */
static const char *label(char *buf, size_t cap, const char *v) {
    size_t n = 0;
    for (; *v && n + 3 < cap; v++) {
        char e = *v == '\\' ? '\\' : *v == '"' ? '"' : *v == '\n' ? 'n' : 0;
        if (e) {
            buf[n++] = '\\';
            buf[n++] = e;
        } else {
            buf[n++] = *v;
        }
    }
    buf[n] = '\0';
    return buf;
}

#define LABEL_MAX (2 * DSC_SELECTOR_MAX + 2)

static void put_budget_limits(text *t, dsc_server *srv) {
    put(t, "# HELP discern_budget_limit Limit of each budget, in the metric's unit.\n"
           "# TYPE discern_budget_limit gauge\n");
    dsc_budget_info page[64];
    char sel[LABEL_MAX], win[LABEL_MAX];
    for (size_t off = 0;; off += 64) {
        size_t got = dsc_ledger_budget_list(srv->ledger, off, page, 64, NULL);
        for (size_t i = 0; i < got; i++)
            put(t, "discern_budget_limit{selector=\"%s\",metric=\"%s\",window=\"%s\"} %.6f\n",
                label(sel, sizeof sel, page[i].selector), dsc_metric_name(page[i].metric),
                label(win, sizeof win, page[i].window), dsc_amount_to_api(page[i].limit));
        if (got < 64) break;
    }
}

static void put_counter_state(text *t, const dsc_budget_state *s) {
    static const char *const names[3] = {"used", "held", "remaining"};
    int64_t v[3] = {s->used, s->held, s->remaining};
    char sel[LABEL_MAX], ctr[LABEL_MAX], win[LABEL_MAX];
    label(sel, sizeof sel, s->selector);
    label(ctr, sizeof ctr, s->counter);
    label(win, sizeof win, s->window);
    for (int k = 0; k < 3; k++)
        put(t,
            "discern_budget_%s{selector=\"%s\",counter=\"%s\",metric=\"%s\",window=\"%s\"} "
            "%.6f\n",
            names[k], sel, ctr, dsc_metric_name(s->metric), win, dsc_amount_to_api(v[k]));
}

/* used / held / remaining of every counter (one per subject that reserved on a budget:
 * a single one for "*", "org:acme"), at most DSC__METRICS_COUNTERS_MAX of them. */
static void put_budget_counters(text *t, dsc_server *srv) {
    enum { PAGE = 256 };
    put(t, "# HELP discern_budget_used Used, per budget counter, in the metric's unit.\n"
           "# TYPE discern_budget_used gauge\n"
           "# HELP discern_budget_held Held by open reservations, per budget counter.\n"
           "# TYPE discern_budget_held gauge\n"
           "# HELP discern_budget_remaining Remaining, per budget counter.\n"
           "# TYPE discern_budget_remaining gauge\n");
    dsc_budget_state *page = malloc(PAGE * sizeof *page);
    if (!page) {
        t->failed = true;
        return;
    }
    size_t total = 0, done = 0, n = 0;
    do {
        size_t want =
            DSC__METRICS_COUNTERS_MAX - done < PAGE ? DSC__METRICS_COUNTERS_MAX - done : PAGE;
        if (dsc_ledger_counter_list(srv->ledger, done, page, want, &n, &total, NULL) != DSC_OK) {
            t->failed = true;
            break;
        }
        for (size_t i = 0; i < n; i++)
            put_counter_state(t, &page[i]);
        done += n;
    } while (n == PAGE && done < DSC__METRICS_COUNTERS_MAX);
    free(page);
    put(t,
        "# HELP discern_budget_counters Budget counters in the ledger (each is one subject's "
        "usage of one budget).\n# TYPE discern_budget_counters gauge\ndiscern_budget_counters "
        "%zu\n",
        total);
    if (total > done)
        put(t, "# discern_budget_used/held/remaining: %zu of %zu counters exported (at most %d)\n",
            done, total, DSC__METRICS_COUNTERS_MAX);
}

static void put_budgets(text *t, dsc_server *srv) {
    put_budget_limits(t, srv);
    /* a Redis store's counters are in Redis, not in this replica's ledger: none
     * rather than zeros (read them with budget.get) */
    if (!srv->redis) put_budget_counters(t, srv);
}

static void put_ledger(text *t, dsc_server *srv) {
    dsc_ledger_stats ls;
    dsc_ledger_stats_get(srv->ledger, &ls);
    put(t,
        "# HELP discern_store_up 1 when the last store commit succeeded.\n# TYPE discern_store_up "
        "gauge\n"
        "discern_store_up %d\n",
        srv->lops->healthy(srv) ? 1 : 0);
    put(t,
        "# HELP discern_store_free_bytes Bytes free on the store's file system (-1: no "
        "store file).\n# TYPE discern_store_free_bytes gauge\ndiscern_store_free_bytes %lld\n",
        (long long)atomic_load(&srv->store_free_bytes));
    put_counter(t, "discern_store_failures_total", "Store batches that failed to commit.",
                ls.store_failures);
    put_counter(t, "discern_store_batches_total", "Store batches committed.", ls.store_batches);
    put(t, "# HELP discern_holds Open holds.\n# TYPE discern_holds gauge\ndiscern_holds %zu\n",
        ls.holds);
    put(t,
        "# HELP discern_reservations_remembered Reservations the ledger keeps in memory for "
        "settle (open, or finished within its retain period).\n"
        "# TYPE discern_reservations_remembered gauge\ndiscern_reservations_remembered %zu\n",
        ls.reservations);
    put(t,
        "# HELP discern_budgets Budgets defined.\n# TYPE discern_budgets gauge\ndiscern_budgets "
        "%zu\n",
        ls.budgets);
    put(t,
        "# HELP discern_store_call_seconds Time spent in ledger calls that touch the store.\n"
        "# TYPE discern_store_call_seconds summary\n"
        "discern_store_call_seconds_sum %.6f\ndiscern_store_call_seconds_count %" PRIu64 "\n",
        (double)SUM_FIELD(srv, store_us) / 1e6, SUM_FIELD(srv, store_ops));
}

char *dsc__metrics_render(dsc_server *srv, size_t *len) {
    text t = {malloc(8192), 0, 8192, false};
    if (!t.buf) return NULL;
    put_decisions(&t, srv);
    put_latency(&t, srv);
    put_counter(&t, "discern_unenforced_total",
                "Checks allowed unenforced because the store was down (failure_mode open).",
                SUM_FIELD(srv, unenforced));
    put_counter(&t, "discern_auth_failures_total",
                "auth calls refused for a wrong or unknown token (docs/operations.md).",
                dsc__authlimit_total(srv->authlimit));
    put_counter(&t, "discern_policy_errors_total",
                "Policy evaluations that raised, timed out or ran out of memory.",
                SUM_FIELD(srv, policy_errors));
    put_counter(&t, "discern_policy_watchdog_signals_total",
                "Policy evaluations that outlived a watchdog tick (about 1 ms) and then ran "
                "counted until policy_time_budget_us.",
                SUM_FIELD(srv, policy_slow));
    put_counter(&t, "discern_requests_total",
                "MessagePack-RPC requests and notifications dispatched.", SUM_FIELD(srv, requests));
    put_counter(&t, "discern_errors_total", "Error replies.", SUM_FIELD(srv, errors));
    put_counter(&t, "discern_protocol_errors_total", "Messages that were not valid requests.",
                SUM_FIELD(srv, protocol_errors));
    put(&t,
        "# HELP discern_connections Open client connections.\n# TYPE discern_connections gauge\n"
        "discern_connections %d\n",
        atomic_load(&srv->connections));
    put_counter(&t, "discern_connections_rejected_total",
                "Connections closed at once (max_connections, the Unix reserve, "
                "max_connections_per_address).",
                (uint64_t)atomic_load(&srv->rejected));
    put_counter(&t, "discern_accept_errors_total",
                "accept(2) failures (out of descriptors: accepting pauses, then resumes).",
                dsc__accept_errors(srv));
    put_ledger(&t, srv);
    put_budgets(&t, srv);
    if (t.failed) {
        free(t.buf);
        return NULL;
    }
    *len = t.len;
    return t.buf;
}
