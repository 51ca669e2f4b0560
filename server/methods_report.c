/*
 * methods_report.c - report: usage summed from the store's charges by group and
 * period (core/report.c), for the caller's scope.
 *
 * The report runs on the server's reporter thread with a read-only connection of its
 * own; the worker defers the call (a job with one slot) and serves its other
 * connections meanwhile. A memory-only server keeps no charges: store_unavailable.
 */
#include "methods.h"

#include "discern/report.h"

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

dsc_status dsc__m_report(dsc__call *c, const msgpack_object *p, msgpack_packer *pk,
                         dsc_error *err) {
    (void)pk;
    dsc_report_query q;
    dsc_status st = read_query(c, p, &q, err);
    if (st != DSC_OK) return st;
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
