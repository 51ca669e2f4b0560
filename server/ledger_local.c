/*
 * ledger_local.c - the ledger operations (ledger_ops.h) over the process's own
 * dsc_ledger: each is the ledger's call of the same shape, and the two reads
 * answer at once.
 */
#include "ledger_ops.h"
#include "server_internal.h"

static dsc_status preview(dsc__worker *w, const dsc_subject *s, const dsc_amounts *request,
                          bool recent_ok, dsc_budget_state *out, size_t max, size_t *n,
                          const dsc_done *done, bool *later, dsc_error *err) {
    (void)done;
    (void)recent_ok; /* the ledger's memory is always current */
    *later = false;
    return dsc_ledger_preview(w->srv->ledger, s, request, out, max, n, err);
}

static dsc_status hold_get(dsc__worker *w, const char *id, dsc_hold_info *out, const dsc_done *done,
                           bool *later, dsc_error *err) {
    (void)done;
    (void)err;
    *later = false;
    return dsc_ledger_hold_get(w->srv->ledger, id, out);
}

static dsc_status reserve(dsc__worker *w, const dsc_reserve_req *req, dsc_reserve_out *out,
                          const dsc_done *done, dsc_error *err) {
    return dsc_ledger_reserve(w->srv->ledger, req, out, done, err);
}

static dsc_status record(dsc__worker *w, const dsc_decision_record *rec, const dsc_done *done,
                         dsc_error *err) {
    return dsc_ledger_record(w->srv->ledger, rec, done, err);
}

static dsc_status settle(dsc__worker *w, const dsc_settle_req *req, dsc_settle_out *out,
                         dsc__settle_states *states, const dsc_done *done, dsc_error *err) {
    (void)states; /* read after the commit, from the ledger's memory */
    return dsc_ledger_settle(w->srv->ledger, req, out, done, err);
}

static dsc_status cancel(dsc__worker *w, const dsc_cancel_req *req, const dsc_done *done,
                         dsc_error *err) {
    return dsc_ledger_cancel(w->srv->ledger, req, done, err);
}

static dsc_status budget(dsc__worker *w, const dsc_budget_req *req, const dsc_done *done,
                         dsc_error *err) {
    return dsc_ledger_budget(w->srv->ledger, req, NULL, done, err);
}

static bool healthy(dsc_server *srv) {
    dsc_ledger_stats ls;
    dsc_ledger_stats_get(srv->ledger, &ls);
    return ls.store_ok;
}

const dsc__ledger_ops dsc__ledger_local = {
    "local", preview, hold_get, reserve, record, settle, cancel, budget, healthy,
};
