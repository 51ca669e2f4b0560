/*
 * methods_report.c - report: usage summed from the store's charges by group and
 * period (core/report.c), for the caller's scope.
 *
 * The report runs on the server's reporter thread with a read-only connection of its
 * own; the worker defers the call (a job with one slot) and serves its other
 * connections meanwhile. A memory-only server keeps no charges: store_unavailable.
 *
 * With a Redis store the charges are summed per subject and hour in Redis by the
 * scripts that make them (server/redis/common.lua, "Hourly rollups"): the report
 * reads the hours that begin in [since, until) a page at a time on the worker's
 * Redis connection (rollups.lua) and sums them here into the same rows, so every
 * replica answers for the charges of all of them.
 */
#include "methods.h"
#include "redis_ledger.h"

#include "discern/report.h"
#include "discern/window.h"
#include "strmap_internal.h"

#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#define REPORT_DEFAULT_S (30 * 86400) /* since defaults to 30 days before until */

typedef struct report_job {
    dsc__job job;
    dsc_report_query q;
    dsc_report rep; /* filled on the reporter thread, before dsc__job_done */
} report_job;

static dsc_status read_query(dsc__call *c, const msgpack_object *p, dsc_report_query *q,
                             dsc_error *err) {
    char by[16] = "", period[16] = "", metric[16] = "";
    double since = 0, until = 0;
    dsc__subject_buf s;
    dsc_status st;
    memset(q, 0, sizeof *q);
    if ((st = dsc_rpc_get_str(p, "by", true, by, sizeof by, err)) ||
        (st = dsc_rpc_get_str(p, "period", false, period, sizeof period, err)) ||
        (st = dsc_rpc_get_str(p, "metric", false, metric, sizeof metric, err)) ||
        (st = dsc_rpc_get_num(p, "since", false, 0, 1e11, &since, err)) ||
        (st = dsc_rpc_get_num(p, "until", false, 0, 1e11, &until, err)) ||
        (st = dsc_report_by_parse(by, &q->by, err)) ||
        (st = dsc_report_period_parse(period[0] ? period : "day", &q->period, err)) ||
        (st = dsc__read_subject(p, false, c->scope, &s, err)))
        return st;
    if (!metric[0]) snprintf(metric, sizeof metric, "gco2e");
    if (dsc_metric_parse(metric, &q->metric) != DSC_OK)
        return dsc_error_set(err, DSC_BAD_REQUEST,
                             "field 'metric': '%s' is not energy_wh, gco2e, water_ml, pe_mj, "
                             "cost, tokens or requests",
                             metric);
    q->until = until > 0 ? (int64_t)until : dsc__now_us() / 1000000 + 1;
    q->since = since > 0 ? (int64_t)since : q->until - REPORT_DEFAULT_S;
    if (q->since >= q->until)
        return dsc_error_set(err, DSC_BAD_REQUEST, "field 'since': must be before until");
    memcpy(q->org, s.org, sizeof q->org);
    memcpy(q->team, s.team, sizeof q->team);
    memcpy(q->user, s.user, sizeof q->user);
    return DSC_OK;
}

/* The reporter thread's completion: keep the rows, then hand over to the worker
 * (dsc__job_done takes the worker's lock: the rows are visible there). */
static void on_report(void *ud, dsc_status st, const dsc_error *err, dsc_report *rep) {
    dsc__job_slot_t *slot = ud;
    ((report_job *)slot->job)->rep = *rep;
    dsc__job_done(ud, st, err);
}

static void pack_rows(msgpack_packer *pk, const dsc_report *rep) {
    msgpack_pack_array(pk, rep->n);
    for (size_t i = 0; i < rep->n; i++) {
        const dsc_report_row *r = &rep->rows[i];
        msgpack_pack_map(pk, 3);
        dsc__pack_key(pk, "period_start");
        msgpack_pack_int64(pk, r->period_start);
        dsc__pack_key(pk, "group");
        dsc_rpc_pack_cstr(pk, r->group);
        dsc__pack_key(pk, "value");
        msgpack_pack_double(pk, dsc_amount_to_api(r->value));
    }
}

static dsc_status finish_report(dsc__job *job, dsc_status st, const dsc_error *st_err,
                                msgpack_packer *pk, dsc_error *err) {
    report_job *j = (report_job *)job;
    if (st == DSC_OK) {
        const dsc_report_query *q = &j->q;
        msgpack_pack_map(pk, 8);
        dsc__pack_key(pk, "by");
        dsc_rpc_pack_cstr(pk, dsc_report_by_name(q->by));
        dsc__pack_key(pk, "period");
        dsc_rpc_pack_cstr(pk, dsc_report_period_name(q->period));
        dsc__pack_key(pk, "metric");
        dsc_rpc_pack_cstr(pk, dsc_metric_name(q->metric));
        dsc__pack_key(pk, "unit");
        dsc_rpc_pack_cstr(pk, dsc_metric_unit(q->metric));
        dsc__pack_key(pk, "since");
        msgpack_pack_int64(pk, q->since);
        dsc__pack_key(pk, "until");
        msgpack_pack_int64(pk, q->until);
        dsc__pack_key(pk, "rows");
        pack_rows(pk, &j->rep);
        dsc__pack_key(pk, "truncated");
        if (j->rep.truncated)
            msgpack_pack_true(pk);
        else
            msgpack_pack_false(pk);
    } else {
        *err = *st_err;
    }
    dsc_report_clear(&j->rep);
    return st;
}

/* ------------------------------------------------------------ Redis rollups -- */

#define ROLLUP_PAGE 2000  /* rollup fields read per call */
#define ROLLUP_CALLS 4096 /* calls per report at most (a page is 744 hours or more) */

typedef struct agg {
    dsc_report_row row;
    char key[24 + DSC_REPORT_GROUP_MAX]; /* "<period_start> <group>": the index's key */
} agg;

typedef struct rollup_job {
    report_job r;      /* first: finish_report packs r.rep */
    dsc__strmap index; /* key -> agg */
    agg **v;
    size_t n, cap;
    int64_t to_hour;
    int calls;
} rollup_job;

static const char *part(json_t *a, size_t i) {
    const char *v = json_string_value(json_array_get(a, i));
    return v ? v : "";
}

/* The report group of a rollup field {org, team, user, key, provider, model,
 * purpose}, as core/report.c names it; false when q's subject filter leaves it out. */
static bool group_of(const dsc_report_query *q, json_t *a, char *out, size_t cap) {
    const char *org = part(a, 0), *team = part(a, 1), *user = part(a, 2);
    if ((q->org[0] && strcmp(q->org, org)) || (q->team[0] && strcmp(q->team, team)) ||
        (q->user[0] && strcmp(q->user, user)))
        return false;
    const char *provider = part(a, 4), *model = part(a, 5);
    switch (q->by) {
    case DSC_REPORT_BY_TEAM:
    case DSC_REPORT_BY_USER:
        snprintf(out, cap, "org:%s%s%s%s%s", org, team[0] ? "/team:" : "", team,
                 q->by == DSC_REPORT_BY_USER && user[0] ? "/user:" : "",
                 q->by == DSC_REPORT_BY_USER ? user : "");
        break;
    case DSC_REPORT_BY_MODEL:
        snprintf(out, cap, "%s%s%s", provider[0] && model[0] ? provider : "",
                 provider[0] && model[0] ? "/" : "", provider[0] && model[0] ? model : "");
        break;
    default:
        snprintf(out, cap, "%s", part(a, 6));
    }
    return true;
}

static int64_t period_of(dsc_report_period p, int64_t hour) {
    static const dsc_window_kind kinds[] = {DSC_WINDOW_DAY, DSC_WINDOW_DAY, DSC_WINDOW_WEEK,
                                            DSC_WINDOW_MONTH};
    if (p == DSC_REPORT_HOUR) return hour;
    dsc_window w = {.kind = kinds[p]};
    dsc_tz utc = {false, 0};
    int64_t start, end;
    dsc_window_period(&w, &utc, hour, &start, &end);
    return start;
}

/* Add one rollup field to its row (a new row while there are fewer than the most). */
static dsc_status add_field(rollup_job *j, int64_t hour, const char *field, const char *sums) {
    const dsc_report_query *q = &j->r.q;
    char group[DSC_REPORT_GROUP_MAX];
    int64_t v = 0;
    json_t *a = json_loads(field, 0, NULL);
    bool in = json_is_array(a) && group_of(q, a, group, sizeof group) &&
              dsc__redis_rollup_sum(sums, q->metric, &v);
    json_decref(a);
    if (!in) return DSC_OK;
    char key[sizeof((agg *)0)->key];
    int64_t start = period_of(q->period, hour);
    snprintf(key, sizeof key, "%lld %s", (long long)start, group);
    agg *g = dsc__strmap_get(&j->index, key);
    if (g) {
        g->row.value += v;
        return DSC_OK;
    }
    if (j->n == DSC_REPORT_ROWS_MAX) {
        j->r.rep.truncated = true;
        return DSC_OK;
    }
    if (j->n == j->cap) {
        size_t cap = j->cap ? 2 * j->cap : 64;
        agg **nv = realloc(j->v, cap * sizeof *nv);
        if (!nv) return DSC_NOMEM;
        j->v = nv, j->cap = cap;
    }
    if (!(g = malloc(sizeof *g))) return DSC_NOMEM;
    g->row.period_start = start;
    g->row.value = v;
    snprintf(g->row.group, sizeof g->row.group, "%s", group);
    memcpy(g->key, key, sizeof key);
    if (dsc__strmap_put(&j->index, g->key, g) != DSC_OK) {
        free(g);
        return DSC_NOMEM;
    }
    j->v[j->n++] = g;
    return DSC_OK;
}

static int row_cmp(const void *a, const void *b) {
    const dsc_report_row *x = a, *y = b;
    if (x->period_start != y->period_start) return x->period_start < y->period_start ? -1 : 1;
    return strcmp(x->group, y->group);
}

/* The rows summed so far into r.rep, ordered by period and group; the sums freed. */
static dsc_status rollup_rows(rollup_job *j, dsc_status st) {
    dsc_report *rep = &j->r.rep;
    if (st == DSC_OK && j->n && !(rep->rows = malloc(j->n * sizeof *rep->rows))) st = DSC_NOMEM;
    for (size_t i = 0; i < j->n; i++) {
        if (st == DSC_OK) rep->rows[rep->n++] = j->v[i]->row;
        free(j->v[i]);
    }
    free(j->v);
    dsc__strmap_destroy(&j->index);
    if (st == DSC_OK)
        qsort(rep->rows, rep->n, sizeof *rep->rows, row_cmp);
    else
        dsc_report_clear(rep);
    return st;
}

static dsc_status read_rollups(rollup_job *j, int64_t from, const char *cursor, dsc_error *err);

static void on_rollups(void *ud, dsc_status st, const dsc__redis_answer *a,
                       const dsc_error *st_err) {
    rollup_job *j = ud;
    dsc_error err = st == DSC_OK ? (dsc_error){0} : *st_err;
    for (size_t i = 0; st == DSC_OK && i < a->n; i++) {
        int64_t hour = strtoll(a->rows[3 * i]->str, NULL, 10);
        if (add_field(j, hour, a->rows[3 * i + 1]->str, a->rows[3 * i + 2]->str) != DSC_OK)
            st = dsc_error_set(&err, DSC_NOMEM, "out of memory for the report");
    }
    if (st == DSC_OK && a->next_hour < j->to_hour) {
        if (++j->calls > ROLLUP_CALLS)
            st = dsc_error_set(&err, DSC_STORE_UNAVAILABLE, "report: too many rollup pages");
        else if ((st = read_rollups(j, a->next_hour, a->cursor, &err)) == DSC_OK)
            return;
    }
    if (st == DSC_NOMEM && err.code != DSC_NOMEM)
        dsc_error_set(&err, DSC_NOMEM, "out of memory for the report");
    st = rollup_rows(j, st);
    dsc__job_done(&j->r.job.slots[0], st, &err);
}

static dsc_status read_rollups(rollup_job *j, int64_t from, const char *cursor, dsc_error *err) {
    if (!j->r.job.w->redis)
        return dsc_error_set(err, DSC_STORE_UNAVAILABLE, "redis: no connection");
    return dsc__redis_rollups(j->r.job.w->redis, from, j->to_hour, cursor, ROLLUP_PAGE, on_rollups,
                              j, err);
}

/* A report from Redis's hourly rollups: the hours that begin in [since, until). */
static dsc_status report_rollups(dsc__call *c, const dsc_report_query *q, dsc_error *err) {
    rollup_job *j = (rollup_job *)dsc__job_defer(c, sizeof *j, finish_report);
    if (!j) return dsc_error_set(err, DSC_NOMEM, "out of memory for the report");
    j->r.q = *q;
    memset(&j->r.rep, 0, sizeof j->r.rep);
    dsc__strmap_init(&j->index);
    j->v = NULL;
    j->n = j->cap = 0;
    j->calls = 0;
    j->to_hour = q->until;
    int64_t from = (q->since + 3599) / 3600 * 3600;
    dsc__job_slot(&j->r.job, 0);
    dsc_status st = read_rollups(j, from, "0", err);
    if (st != DSC_OK) {
        dsc__job_unslot(&j->r.job);
        dsc__strmap_destroy(&j->index);
    }
    return st;
}

dsc_status dsc__m_report(dsc__call *c, const msgpack_object *p, msgpack_packer *pk,
                         dsc_error *err) {
    (void)pk;
    dsc_report_query q;
    dsc_status st = read_query(c, p, &q, err);
    if (st != DSC_OK) return st;
    if (c->srv->redis) return report_rollups(c, &q, err);
    if (!c->srv->reporter)
        return dsc_error_set(err, DSC_STORE_UNAVAILABLE,
                             "this server has no store: charges are not kept");
    report_job *j = (report_job *)dsc__job_defer(c, sizeof *j, finish_report);
    if (!j) return dsc_error_set(err, DSC_NOMEM, "out of memory for the report");
    j->q = q;
    void *slot = dsc__job_slot(&j->job, 0);
    st = dsc_reporter_submit(c->srv->reporter, &q, on_report, slot);
    if (st != DSC_OK) {
        dsc__job_unslot(&j->job);
        return dsc_error_set(err, st, "the report cannot be queued");
    }
    return DSC_OK;
}
