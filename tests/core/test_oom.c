/*
 * test_oom.c - out of memory along core's main paths: catalogue load, estimate,
 * ledger reserve/settle (in memory and with a store), policy load and evaluation.
 * For every n, the n-th allocation of the operation is refused (tests/support/oom.c,
 * linked with --wrap): the operation returns an error, leaks nothing (ASan's leak
 * check at exit), and the same operation then succeeds. The loop ends at the first
 * n the operation no longer reaches.
 */
#include "oom.h"

#include "discern/catalog.h"
#include "discern/estimate.h"
#include "discern/ledger.h"
#include "discern/policy.h"

#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define DATA DISCERN_SOURCE_DIR "/core/data"
#define POLICIES DISCERN_SOURCE_DIR "/policies"
#define MAX_N 100000 /* a bound on the loops, far above what any path allocates */

Test(oom, catalog_load_fails_with_nomem_at_every_allocation_and_then_loads) {
    long n;
    for (n = 1; n < MAX_N; n++) {
        dsc_error err;
        oom_fail_at(n);
        dsc_catalog *cat = dsc_catalog_load(DATA, &err);
        if (!oom_stop()) {
            cr_assert(cat, "%s", err.message);
            dsc_catalog_free(cat);
            break;
        }
        cr_assert_null(cat, "allocation %ld refused, yet the catalogue loaded", n);
        cr_assert_eq(err.code, DSC_NOMEM, "allocation %ld: %s", n, err.message);
    }
    cr_assert_gt(n, 1, "the load allocated nothing: the test does not reach it");
}

Test(oom, estimate_allocates_nothing) {
    dsc_error err;
    dsc_catalog *cat = dsc_catalog_load(DATA, &err);
    cr_assert(cat, "%s", err.message);
    dsc_estimate_input in = {.provider = "openai", .model = "gpt-4o", .output_tokens = 500};
    dsc_estimate est;
    oom_fail_at(1);
    dsc_status st = dsc_estimate_compute(cat, &in, &est, &err);
    cr_assert_not(oom_stop(), "the estimate allocated");
    cr_assert_eq(st, DSC_OK, "%s", err.message);
    dsc_catalog_free(cat);
}

static dsc_amounts grams(int64_t micro) {
    dsc_amounts a = {{0}};
    a.v[DSC_METRIC_GCO2E] = micro;
    return a;
}

/* One budget, a reserve and its settle; DSC_OK or the first error. */
static dsc_status reserve_and_settle(dsc_ledger *l, int i, dsc_error *err) {
    static const dsc_subject subj = {.org = "o", .team = "t", .user = "u"};
    char req[32];
    dsc_amounts hold = grams(1000), actual = grams(800);
    dsc_budget_state ex[4];
    snprintf(req, sizeof req, "req-%d", i);
    dsc_budget_req b = {.selector = "team:*", .metric = DSC_METRIC_GCO2E, .window = "month",
                        .limit = 1e6};
    dsc_reserve_req r = {.subject = &subj, .amounts = &hold, .ttl_s = 60, .request_id = req};
    dsc_reserve_out ro = {.exceeded = ex, .max_exceeded = 4};
    dsc_status st = dsc_ledger_budget(l, &b, NULL, NULL, err);
    if (st == DSC_OK) st = dsc_ledger_reserve(l, &r, &ro, NULL, err);
    dsc_settle_req s = {.reservation_id = ro.reservation_id, .actual = &actual};
    if (st == DSC_OK) st = dsc_ledger_settle(l, &s, NULL, NULL, err);
    return st;
}

static void remove_store(const char *path) {
    static const char *const ext[] = {"", "-wal", "-shm", "-journal", ".lock"};
    char p[128];
    for (size_t i = 0; path && i < sizeof ext / sizeof ext[0]; i++) {
        snprintf(p, sizeof p, "%s%s", path, ext[i]);
        unlink(p);
    }
}

/* The ledger is opened on a fresh store (or none), used and freed under the failing
 * allocator; whatever was refused, it keeps serving. */
static long ledger_round_trip(const char *store) {
    long n;
    for (n = 1; n < MAX_N; n++) {
        remove_store(store);
        dsc_ledger_config cfg = {.store_path = store, .durability = DSC_DURABILITY_OFF};
        dsc_error err;
        oom_fail_at(n);
        dsc_ledger *l = dsc_ledger_new(&cfg, &err);
        dsc_status st = l ? reserve_and_settle(l, (int)n, &err) : err.code;
        bool hit = oom_stop();
        if (l && hit && st == DSC_OK) /* the refused allocation was retried or optional */
            cr_log_info("allocation %ld refused, the ledger coped", n);
        if (l) {
            /* whatever failed, the ledger still serves */
            cr_assert_eq(reserve_and_settle(l, -(int)n, &err), DSC_OK,
                         "after allocation %ld was refused: %s", n, err.message);
            dsc_ledger_free(l);
        } else {
            cr_assert(hit, "the ledger did not open: %s", err.message);
            cr_assert_eq(err.code, DSC_NOMEM, "allocation %ld: %s", n, err.message);
        }
        if (!hit) break;
        cr_assert(st == DSC_OK || st == DSC_NOMEM, "allocation %ld: %s (%s)", n,
                  dsc_status_wire(st), err.message);
    }
    return n;
}

Test(oom, ledger_reserve_and_settle_fail_with_nomem_and_the_ledger_keeps_serving) {
    cr_assert_gt(ledger_round_trip(NULL), 1);
}

Test(oom, ledger_with_a_store_fails_with_nomem_and_keeps_serving) {
    char dir[] = "/tmp/dsc-oom.XXXXXX", path[64];
    cr_assert(mkdtemp(dir));
    snprintf(path, sizeof path, "%s/l.db", dir);
    cr_assert_gt(ledger_round_trip(path), 1);
    remove_store(path);
    cr_assert_eq(rmdir(dir), 0);
}

static dsc_status decide(dsc_policy_set *set, dsc_decision *d, dsc_error *err) {
    dsc_policy_vm *vm = dsc_policy_vm_new(set, NULL, NULL, NULL, err);
    if (!vm) return err->code;
    dsc_policy_input in = {.subject = {.org = "o", .team = "t", .user = "u"},
                           .provider = "openai",
                           .model = "gpt-4o",
                           .input_tokens = 100,
                           .output_tokens = 200,
                           .purpose = "support",
                           .now = 1767225600};
    dsc_status st = dsc_policy_vm_decide(vm, &in, d);
    dsc_policy_vm_free(vm);
    return st;
}

Test(oom, policy_load_and_decide_fail_cleanly_and_then_decide) {
    dsc_error err;
    dsc_decision ok;
    dsc_policy_set *ref = dsc_policy_set_load(POLICIES, &err);
    cr_assert(ref, "%s", err.message);
    cr_assert_eq(decide(ref, &ok, &err), DSC_OK, "%s", err.message);
    dsc_policy_set_unref(ref);
    long n;
    for (n = 1; n < MAX_N; n++) {
        dsc_decision d;
        oom_fail_at(n);
        dsc_policy_set *set = dsc_policy_set_load(POLICIES, &err);
        dsc_status st = set ? decide(set, &d, &err) : err.code;
        bool hit = oom_stop();
        if (!hit) {
            cr_assert_eq(st, DSC_OK, "%s", err.message);
            dsc_policy_set_unref(set);
            break;
        }
        /* A refused allocation inside Lua is a policy error (the VM decides by its
         * on_error rule) or a load error; never a crash, never a silent allow. */
        if (st == DSC_OK) cr_assert_eq(d.outcome, ok.outcome, "allocation %ld", n);
        if (set) {
            cr_assert_eq(decide(set, &d, &err), DSC_OK, "after %ld: %s", n, err.message);
            cr_assert_eq(d.outcome, ok.outcome);
            dsc_policy_set_unref(set);
        }
    }
    cr_assert_gt(n, 1);
}
