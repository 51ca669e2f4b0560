/*
 * test_oom.c - out of memory along core's main paths: catalogue load, estimate,
 * ledger reserve/settle (in memory and with a store), a team budget's history read from
 * rolled-up hours, policy load and evaluation.
 * For every n, the n-th allocation of the operation is refused (tests/support/oom.c,
 * linked with --wrap): the operation returns an error, leaks nothing (ASan's leak
 * check at exit), and the same operation then succeeds. The loop ends at the first
 * n the operation no longer reaches.
 */
#include "ledger_calls.h"
#include "oom.h"

#include "discern/catalog.h"
#include "discern/estimate.h"
#include "discern/ledger.h"
#include "discern/policy.h"

#include "../../core/store.h"

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

#define S 1000000LL
#define FEB1 1769904000LL /* 2026-02-01T00:00:00Z, in seconds */
#define MAR1 1772323200LL

/* Each team's sum of the charges a replay hands over: team "a" in [0], "b" in [1]. */
static dsc_status sum_by_team(void *ud, const dsc__rec *charge) {
    int64_t *sums = ud;
    sums[strcmp(charge->subject.team, "a") != 0] += charge->amounts.v[DSC_METRIC_GCO2E];
    return DSC_OK;
}

/* A store of 6000 settles 3 s apart from February 1st (5 h, past a checkpoint: hours rolled up
 * and a raw tail) for three users of teams a and b; want: each team's gco2e. */
static void fill_teams(const char *path, int64_t want[2]) {
    fake_clock clk = {(FEB1 + 1234) * S};
    dsc_ledger_config cfg = {.store_path = path, .now_us = fake_now, .clock_ud = &clk};
    dsc_error err;
    dsc_ledger *l = dsc_ledger_new(&cfg, &err);
    cr_assert(l, "%s", err.message);
    static const dsc_subject who[3] = {{.org = "o", .team = "a", .user = "u1"},
                                       {.org = "o", .team = "a", .user = "u2"},
                                       {.org = "o", .team = "b", .user = "u3"}};
    want[0] = want[1] = 0;
    for (int i = 0; i < 6000; i++) {
        clk.now += 3 * S;
        dsc_amounts a = grams((i % 5 + 1) * 1000000);
        char rid[32];
        snprintf(rid, sizeof rid, "x-%d", i);
        dsc_settle_req s = {.reservation_id = rid, .actual = &a, .subject_if_unknown = &who[i % 3]};
        cr_assert_eq(dsc_ledger_settle(l, &s, NULL, NULL, &err), DSC_OK, "%s", err.message);
        want[i % 3 == 2] += a.v[DSC_METRIC_GCO2E];
    }
    dsc_ledger_free(l);
}

/* A new team:* budget's history over rolled-up hours is summed per team in memory
 * sized by the subjects and the spans (the index of subjects, the teams, the sums);
 * when one of those allocations is refused, the store reads the hours per subject
 * instead: the history still counts every charge, and the writer need not read it
 * again. */
Test(oom, a_team_budgets_history_reads_per_subject_when_its_sums_per_team_cannot_be_allocated) {
    char dir[] = "/tmp/dsc-oom.XXXXXX", path[64];
    cr_assert(mkdtemp(dir));
    snprintf(path, sizeof path, "%s/l.db", dir);
    int64_t want[2];
    fill_teams(path, want);
    dsc__store_options o = {.durability = DSC_DURABILITY_FULL};
    dsc_error err;
    dsc__store *st = dsc__store_open(path, &o, &err);
    cr_assert(st, "%s", err.message);
    const char *team_any[4] = {NULL, "", NULL, NULL};
    dsc__replay_filter f = {.metric = DSC_METRIC_GCO2E,
                            .hourly_before_us = INT64_MAX,
                            .by_level = 2,
                            .by_from_us = FEB1 * S,
                            .by_span_us = (MAR1 - FEB1) * S,
                            .by_until_us = MAR1 * S};
    memcpy(f.subject, team_any, sizeof f.subject);
    long n, coped = 0;
    for (n = 1; n < MAX_N; n++) {
        int64_t sums[2] = {0, 0}, seq = 0;
        oom_fail_at(n);
        dsc_status res = dsc__store_replay_read(st, FEB1 * S, &f, sum_by_team, sums, &seq);
        bool hit = oom_stop();
        if (res == DSC_OK) {
            cr_assert_eq(sums[0], want[0], "allocation %ld refused: team a", n);
            cr_assert_eq(sums[1], want[1], "allocation %ld refused: team b", n);
            coped += hit;
        } else {
            cr_assert(hit, "%s", dsc_status_wire(res));
            cr_assert(res == DSC_NOMEM || res == DSC_STORE_UNAVAILABLE, "allocation %ld: %s", n,
                      dsc_status_wire(res));
        }
        if (!hit) break;
    }
    cr_assert_gt(n, 3);
    cr_assert_geq(coped, 3, "%ld refused allocations left the history whole", coped);
    dsc__store_close(st);
    remove_store(path);
    cr_assert_eq(rmdir(dir), 0);
}
