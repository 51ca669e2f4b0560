/*
 * ledger_calls.h - the ledger's one-call API with its request by value and its reply
 * spread out, and a clock the tests set, for the core tests (test_ledger.c,
 * test_store_sqlite.c, test_oom.c): one copy of what they share.
 */
#ifndef DISCERN_TESTS_LEDGER_CALLS_H
#define DISCERN_TESTS_LEDGER_CALLS_H

#include "discern/ledger.h"

#include <stdatomic.h>
#include <stdint.h>
#include <string.h>

/* The ledger's clock in a test (dsc_ledger_config.now_us = fake_now, clock_ud = &clk):
 * unix µs, moved by the test (atomic: a test's threads may read it). */
typedef struct fake_clock {
    _Atomic int64_t now;
} fake_clock;

static inline int64_t fake_now(void *ud) {
    return ((fake_clock *)ud)->now;
}

/* dsc_ledger_reserve with the reply spread out: the id into rid (may be NULL), the
 * budgets that would be exceeded into ex[0..max), their count into *nex. */
static inline dsc_status reserve_as(dsc_ledger *l, dsc_reserve_req req, char *rid,
                                    dsc_budget_state *ex, size_t max, size_t *nex,
                                    const dsc_done *done, dsc_error *err) {
    dsc_reserve_out out = {.exceeded = ex, .max_exceeded = max};
    dsc_status st = dsc_ledger_reserve(l, &req, &out, done, err);
    if (rid) memcpy(rid, out.reservation_id, DSC_RESERVATION_ID_MAX);
    if (nex) *nex = out.n_exceeded;
    return st;
}

/* dsc_ledger_settle with the request by value; out (may be NULL) must outlive done. */
static inline dsc_status settle_as(dsc_ledger *l, dsc_settle_req req, dsc_settle_out *out,
                                   const dsc_done *done, dsc_error *err) {
    return dsc_ledger_settle(l, &req, out, done, err);
}

#endif
