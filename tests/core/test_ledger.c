/* test_ledger.c - the in-memory ledger: budgets, selectors, reserve/settle/cancel,
 * expiry, idempotency and concurrency, driven by a fake clock. */
#include "discern/ledger.h"
#include "ledger_calls.h"

#include "../../core/ledger_internal.h"

#include <criterion/criterion.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>

#define S 1000000LL
#define M DSC_MICRO

/* 2025-01-15 12:00:00 UTC */
#define T0 (1736942400LL * S)

static dsc_ledger *open_ledger(fake_clock *clk, dsc_expired_policy exp) {
    clk->now = T0;
    dsc_ledger_config cfg = {.now_us = fake_now, .clock_ud = clk, .expired = exp};
    dsc_error err;
    dsc_ledger *l = dsc_ledger_new(&cfg, &err);
    cr_assert(l, "%s", err.message);
    return l;
}

static void budget(dsc_ledger *l, const char *sel, dsc_metric m, const char *win, double lim) {
    dsc_error err;
    cr_assert_eq(dsc_ledger_budget(l, &(dsc_budget_req){sel, m, win, lim, false}, NULL, NULL, &err),
                 DSC_OK, "%s", err.message);
}

static dsc_amounts amt(dsc_metric m, int64_t v) {
    dsc_amounts a = {{0}};
    a.v[m] = v;
    return a;
}

static dsc_budget_state state_of(dsc_ledger *l, const dsc_subject *s, const char *sel) {
    dsc_budget_state st[16];
    size_t n = 0;
    cr_assert_eq(dsc_ledger_preview(l, s, NULL, st, 16, &n, NULL), DSC_OK);
    for (size_t i = 0; i < n && i < 16; i++)
        if (strcmp(st[i].selector, sel) == 0) return st[i];
    cr_assert_fail("no budget %s applies", sel);
    return st[0];
}

static const dsc_subject ana = {.org = "acme", .team = "infra", .user = "ana", .key = "k1"};

Test(ledger, budgets_are_created_changed_listed_and_deleted) {
    fake_clock clk;
    dsc_ledger *l = open_ledger(&clk, DSC_EXPIRED_CHARGE);
    dsc_budget_info info;
    dsc_error err;
    cr_assert_eq(
        dsc_ledger_budget(l, &(dsc_budget_req){"team:*", DSC_METRIC_GCO2E, "month", 50000, false},
                          &info, NULL, &err),
        DSC_OK);
    cr_assert_eq(info.limit, 50000 * M);
    int64_t id = info.id;
    budget(l, "org:acme", DSC_METRIC_ENERGY_WH, "year", 1e6);
    cr_assert_eq(
        dsc_ledger_budget(l, &(dsc_budget_req){"team:*", DSC_METRIC_GCO2E, "month", 60000, false},
                          &info, NULL, &err),
        DSC_OK);
    cr_assert_eq(info.id, id, "changing a limit keeps the budget");
    cr_assert_eq(dsc_ledger_budget_get(l, "team:*", DSC_METRIC_GCO2E, "month", &info, &err),
                 DSC_OK);
    cr_assert_eq(info.limit, 60000 * M);
    dsc_budget_info all[4];
    size_t total;
    cr_assert_eq(dsc_ledger_budget_list(l, 0, all, 4, &total), 2);
    cr_assert_eq(total, 2);
    cr_assert_str_eq(all[0].selector, "team:*");
    cr_assert_str_eq(all[1].selector, "org:acme");
    cr_assert_eq(dsc_ledger_budget(l,
                                   &(dsc_budget_req){"team:*", DSC_METRIC_GCO2E, "month", 0, true},
                                   NULL, NULL, &err),
                 DSC_OK);
    cr_assert_eq(dsc_ledger_budget_get(l, "team:*", DSC_METRIC_GCO2E, "month", &info, &err),
                 DSC_UNKNOWN_BUDGET);
    cr_assert_eq(dsc_ledger_budget(l,
                                   &(dsc_budget_req){"team:*", DSC_METRIC_GCO2E, "month", 0, true},
                                   NULL, NULL, &err),
                 DSC_UNKNOWN_BUDGET);
    cr_assert_eq(dsc_ledger_budget_list(l, 0, all, 4, &total), 1);
    dsc_ledger_free(l);
}

Test(ledger, bad_budget_fields_are_refused_naming_the_field) {
    fake_clock clk;
    dsc_ledger *l = open_ledger(&clk, DSC_EXPIRED_CHARGE);
    dsc_error err;
    cr_assert_eq(
        dsc_ledger_budget(l, &(dsc_budget_req){"squad:x", DSC_METRIC_GCO2E, "month", 1, false},
                          NULL, NULL, &err),
        DSC_BAD_REQUEST);
    cr_assert(strstr(err.message, "selector") && strstr(err.message, "squad:x"), "%s", err.message);
    cr_assert_eq(
        dsc_ledger_budget(l, &(dsc_budget_req){"team:a b", DSC_METRIC_GCO2E, "month", 1, false},
                          NULL, NULL, &err),
        DSC_BAD_REQUEST);
    cr_assert_eq(
        dsc_ledger_budget(l, &(dsc_budget_req){"org:*/team:x", DSC_METRIC_GCO2E, "month", 1, false},
                          NULL, NULL, &err),
        DSC_BAD_REQUEST);
    cr_assert_eq(
        dsc_ledger_budget(l, &(dsc_budget_req){"team:x", DSC_METRIC_GCO2E, "quarter", 1, false},
                          NULL, NULL, &err),
        DSC_BAD_REQUEST);
    cr_assert(strstr(err.message, "window") && strstr(err.message, "quarter"));
    cr_assert_eq(
        dsc_ledger_budget(l, &(dsc_budget_req){"team:x", DSC_METRIC_GCO2E, "month", -3, false},
                          NULL, NULL, &err),
        DSC_BAD_REQUEST);
    cr_assert(strstr(err.message, "limit"), "%s", err.message);
    cr_assert_eq(dsc_ledger_budget(l,
                                   &(dsc_budget_req){"team:x", (dsc_metric)99, "month", 1, false},
                                   NULL, NULL, &err),
                 DSC_UNKNOWN_METRIC);
    size_t total;
    dsc_ledger_budget_list(l, 0, NULL, 0, &total);
    cr_assert_eq(total, 0, "nothing was created");
    dsc_ledger_free(l);
}

Test(ledger, metric_names_units_and_estimate_amounts) {
    dsc_metric m;
    cr_assert_eq(dsc_metric_parse("water_ml", &m), DSC_OK);
    cr_assert_eq(m, DSC_METRIC_WATER_ML);
    cr_assert_str_eq(dsc_metric_unit(DSC_METRIC_GCO2E), "g");
    cr_assert_eq(dsc_metric_parse("co2", &m), DSC_UNKNOWN_METRIC);
    cr_assert_null(dsc_metric_name(DSC_METRIC_COUNT));
    dsc_estimate est;
    memset(&est, 0, sizeof est);
    est.total.energy_kwh.max = 0.002;   /* 2 Wh */
    est.total.gwp_kgco2eq.max = 0.0005; /* 0.5 g */
    est.total.wcf_l.max = 0.01;         /* 10 mL */
    dsc_amounts a;
    dsc_amounts_from_estimate(&est, 100, 400, 1234, &a);
    cr_assert_eq(a.v[DSC_METRIC_ENERGY_WH], 2 * M);
    cr_assert_eq(a.v[DSC_METRIC_GCO2E], M / 2);
    cr_assert_eq(a.v[DSC_METRIC_WATER_ML], 10 * M);
    cr_assert_eq(a.v[DSC_METRIC_TOKENS], 500 * M);
    cr_assert_eq(a.v[DSC_METRIC_REQUESTS], M);
    cr_assert_eq(a.v[DSC_METRIC_COST], 1234);
}

Test(ledger, team_counters_are_scoped_by_org) {
    fake_clock clk;
    dsc_ledger *l = open_ledger(&clk, DSC_EXPIRED_CHARGE);
    budget(l, "team:*", DSC_METRIC_REQUESTS, "day", 5);
    dsc_subject a = {.org = "acme", .team = "infra"}, b = {.org = "beta", .team = "infra"};
    char rid[DSC_RESERVATION_ID_MAX];
    dsc_amounts one = amt(DSC_METRIC_REQUESTS, 3 * M);
    cr_assert_eq(
        reserve_as(l, (dsc_reserve_req){&a, &one, 60, NULL, NULL}, rid, NULL, 0, NULL, NULL, NULL),
        DSC_OK);
    dsc_budget_state sa = state_of(l, &a, "team:*"), sb = state_of(l, &b, "team:*");
    cr_assert_str_eq(sa.counter, "org:acme/team:infra");
    cr_assert_str_eq(sb.counter, "org:beta/team:infra");
    cr_assert_eq(sa.held, 3 * M);
    cr_assert_eq(sb.held, 0);
    cr_assert_eq(sb.remaining, 5 * M);
    dsc_ledger_free(l);
}

/* Reserve amount on subject s and settle actual (both GCO2E, micro-units). */
static void spend(dsc_ledger *l, const dsc_subject *s, int64_t hold, int64_t actual) {
    char rid[DSC_RESERVATION_ID_MAX];
    dsc_amounts h = amt(DSC_METRIC_GCO2E, hold), a = amt(DSC_METRIC_GCO2E, actual);
    cr_assert_eq(
        reserve_as(l, (dsc_reserve_req){s, &h, 60, NULL, NULL}, rid, NULL, 0, NULL, NULL, NULL),
        DSC_OK);
    if (actual >= 0)
        cr_assert_eq(settle_as(l, (dsc_settle_req){rid, &a, NULL, NULL}, NULL, NULL, NULL), DSC_OK);
}

Test(ledger, counter_list_reports_each_wildcard_counter_with_its_used_and_held) {
    fake_clock clk;
    dsc_ledger *l = open_ledger(&clk, DSC_EXPIRED_CHARGE);
    budget(l, "team:*", DSC_METRIC_GCO2E, "month", 100);
    budget(l, "org:acme", DSC_METRIC_GCO2E, "day", 50);
    dsc_subject acme_web = {.org = "acme", .team = "web"},
                acme_infra = {.org = "acme", .team = "infra"};
    dsc_subject beta_infra = {.org = "beta", .team = "infra"};
    spend(l, &acme_web, 9 * M, 4 * M);
    spend(l, &beta_infra, 2 * M, -1); /* held, not settled */
    spend(l, &acme_infra, 5 * M, 1 * M);
    dsc_budget_state st[8];
    size_t n = 0, total = 0;
    cr_assert_eq(dsc_ledger_counter_list(l, 0, st, 8, &n, &total, NULL), DSC_OK);
    cr_assert_eq(total, 4);
    cr_assert_eq(n, 4);
    const char *want[4] = {"org:acme/team:infra", "org:acme/team:web", "org:beta/team:infra",
                           "org:acme"};
    int64_t used[4] = {1 * M, 4 * M, 0, 5 * M}, held[4] = {0, 0, 2 * M, 0};
    for (int i = 0; i < 4; i++) {
        cr_assert_str_eq(st[i].counter, want[i], "counter %d: %s", i, st[i].counter);
        cr_assert_eq(st[i].used, used[i], "%s used %lld", want[i], (long long)st[i].used);
        cr_assert_eq(st[i].held, held[i], "%s held %lld", want[i], (long long)st[i].held);
        cr_assert_eq(st[i].metric, DSC_METRIC_GCO2E);
    }
    cr_assert_str_eq(st[0].selector, "team:*");
    cr_assert_str_eq(st[0].window, "month");
    cr_assert_eq(st[0].limit, 100 * M);
    cr_assert_eq(st[0].remaining, 99 * M);
    cr_assert_eq(st[2].remaining, 98 * M);
    cr_assert_str_eq(st[3].selector, "org:acme");
    cr_assert_eq(st[3].remaining, 45 * M);
    cr_assert_gt(st[3].resets_at, T0 / S);
    dsc_ledger_free(l);
}

Test(ledger, counter_list_pages_by_offset_and_skips_deleted_budgets) {
    fake_clock clk;
    dsc_ledger *l = open_ledger(&clk, DSC_EXPIRED_CHARGE);
    budget(l, "user:*", DSC_METRIC_GCO2E, "month", 100);
    budget(l, "team:*", DSC_METRIC_GCO2E, "month", 100);
    char names[5][8] = {"u3", "u1", "u4", "u0", "u2"};
    for (int i = 0; i < 5; i++) {
        dsc_subject s = {.user = names[i], .team = i < 2 ? "t1" : "t2"};
        spend(l, &s, (i + 1) * M, (i + 1) * M);
    }
    /* user:* has 5 counters (user:u0..u4), team:* has 2 (team:t1, team:t2). */
    const char *want[7] = {"user:u0", "user:u1", "user:u2", "user:u3",
                           "user:u4", "team:t1", "team:t2"};
    dsc_budget_state page[3];
    size_t seen = 0, n = 0, total = 0;
    for (size_t off = 0; off < 9; off += 3) {
        cr_assert_eq(dsc_ledger_counter_list(l, off, page, 3, &n, &total, NULL), DSC_OK);
        cr_assert_eq(total, 7);
        cr_assert_eq(n, off + 3 <= 7 ? 3 : 7 - off, "page at %zu has %zu", off, n);
        for (size_t i = 0; i < n; i++, seen++)
            cr_assert_str_eq(page[i].counter, want[seen], "item %zu: %s", seen, page[i].counter);
    }
    cr_assert_eq(seen, 7);
    cr_assert_eq(dsc_ledger_counter_list(l, 7, page, 3, &n, NULL, NULL), DSC_OK);
    cr_assert_eq(n, 0, "an offset past the end copies nothing");
    cr_assert_eq(dsc_ledger_budget(l,
                                   &(dsc_budget_req){"user:*", DSC_METRIC_GCO2E, "month", 0, true},
                                   NULL, NULL, NULL),
                 DSC_OK);
    cr_assert_eq(dsc_ledger_counter_list(l, 0, page, 3, &n, &total, NULL), DSC_OK);
    cr_assert_eq(total, 2, "a deleted budget's counters are not listed");
    cr_assert_eq(n, 2);
    cr_assert_str_eq(page[0].counter, "team:t1");
    cr_assert_eq(page[0].used, 3 * M);
    cr_assert_str_eq(page[1].counter, "team:t2");
    cr_assert_eq(page[1].used, 12 * M);
    cr_assert_eq(dsc_ledger_counter_list(l, 0, NULL, 0, NULL, &total, NULL), DSC_OK);
    cr_assert_eq(total, 2, "the total alone can be asked for");
    dsc_ledger_free(l);
}

Test(ledger, preview_reports_every_matching_budget_and_what_a_request_would_do) {
    fake_clock clk;
    dsc_ledger *l = open_ledger(&clk, DSC_EXPIRED_CHARGE);
    budget(l, "org:acme", DSC_METRIC_GCO2E, "month", 100);
    budget(l, "team:*", DSC_METRIC_GCO2E, "month", 10);
    budget(l, "user:bob", DSC_METRIC_GCO2E, "month", 10); /* does not apply to ana */
    budget(l, "org:acme/user:*", DSC_METRIC_REQUESTS, "day", 2);
    dsc_amounts req = amt(DSC_METRIC_GCO2E, 12 * M);
    dsc_budget_state st[8];
    size_t n;
    cr_assert_eq(dsc_ledger_preview(l, &ana, &req, st, 8, &n, NULL), DSC_OK);
    cr_assert_eq(n, 3);
    int exceed = 0;
    for (size_t i = 0; i < n; i++) {
        if (strcmp(st[i].selector, "team:*") == 0) {
            cr_assert(st[i].would_exceed);
            cr_assert_eq(st[i].request, 12 * M);
            cr_assert_eq(st[i].resets_at, 1738368000, "2025-02-01T00:00Z");
            exceed++;
        } else {
            cr_assert_not(st[i].would_exceed, "%s", st[i].selector);
        }
    }
    cr_assert_eq(exceed, 1);
    dsc_error err;
    dsc_subject bad = {.org = "ac/me"};
    cr_assert_eq(dsc_ledger_preview(l, &bad, &req, st, 8, &n, &err), DSC_BAD_REQUEST);
    cr_assert(strstr(err.message, "'org'"), "%s", err.message);
    dsc_ledger_free(l);
}

Test(ledger, charge_over_budget_is_refused_and_leaves_balance_unchanged) {
    fake_clock clk;
    dsc_ledger *l = open_ledger(&clk, DSC_EXPIRED_CHARGE);
    budget(l, "org:acme", DSC_METRIC_GCO2E, "month", 100);
    budget(l, "team:infra", DSC_METRIC_GCO2E, "month", 10);
    char rid[DSC_RESERVATION_ID_MAX];
    dsc_amounts six = amt(DSC_METRIC_GCO2E, 6 * M);
    cr_assert_eq(reserve_as(l, (dsc_reserve_req){&ana, &six, 60, "q1", NULL}, rid, NULL, 0, NULL,
                            NULL, NULL),
                 DSC_OK);
    dsc_budget_state ex[4];
    size_t nex;
    dsc_error err;
    cr_assert_eq(
        reserve_as(l, (dsc_reserve_req){&ana, &six, 60, "q2", NULL}, rid, ex, 4, &nex, NULL, &err),
        DSC_BUDGET_EXCEEDED);
    cr_assert_eq(nex, 1);
    cr_assert_str_eq(ex[0].selector, "team:infra");
    cr_assert_eq(ex[0].held, 6 * M);
    cr_assert_eq(ex[0].remaining, 4 * M);
    /* all or nothing: the org budget, which had room, holds only the first request */
    cr_assert_eq(state_of(l, &ana, "org:acme").held, 6 * M);
    cr_assert_eq(state_of(l, &ana, "team:infra").held, 6 * M);
    dsc_ledger_free(l);
}

Test(ledger, settle_replaces_the_hold_with_the_actual_and_is_idempotent) {
    fake_clock clk;
    dsc_ledger *l = open_ledger(&clk, DSC_EXPIRED_CHARGE);
    budget(l, "user:*", DSC_METRIC_GCO2E, "month", 10);
    char rid[DSC_RESERVATION_ID_MAX];
    dsc_amounts hold = amt(DSC_METRIC_GCO2E, 8 * M), actual = amt(DSC_METRIC_GCO2E, 3 * M);
    cr_assert_eq(reserve_as(l, (dsc_reserve_req){&ana, &hold, 60, "q1", NULL}, rid, NULL, 0, NULL,
                            NULL, NULL),
                 DSC_OK);
    dsc_settle_out kind;
    cr_assert_eq(settle_as(l, (dsc_settle_req){rid, &actual, NULL, NULL}, &kind, NULL, NULL),
                 DSC_OK);
    cr_assert_eq(kind.kind, DSC_SETTLE_RESERVED);
    dsc_budget_state s = state_of(l, &ana, "user:*");
    cr_assert_eq(s.used, 3 * M);
    cr_assert_eq(s.held, 0);
    cr_assert_eq(s.remaining, 7 * M);
    cr_assert_eq(settle_as(l, (dsc_settle_req){rid, &actual, NULL, NULL}, &kind, NULL, NULL),
                 DSC_OK);
    cr_assert_eq(kind.kind, DSC_SETTLE_REPEATED);
    cr_assert_eq(state_of(l, &ana, "user:*").used, 3 * M, "a repeated settle charges nothing");
    dsc_ledger_free(l);
}

Test(ledger, reserve_with_a_repeated_request_id_holds_once) {
    fake_clock clk;
    dsc_ledger *l = open_ledger(&clk, DSC_EXPIRED_CHARGE);
    budget(l, "*", DSC_METRIC_TOKENS, "day", 1000);
    char r1[DSC_RESERVATION_ID_MAX], r2[DSC_RESERVATION_ID_MAX];
    dsc_amounts a = amt(DSC_METRIC_TOKENS, 400 * M);
    cr_assert_eq(
        reserve_as(l, (dsc_reserve_req){&ana, &a, 60, "same", NULL}, r1, NULL, 0, NULL, NULL, NULL),
        DSC_OK);
    cr_assert_eq(
        reserve_as(l, (dsc_reserve_req){&ana, &a, 60, "same", NULL}, r2, NULL, 0, NULL, NULL, NULL),
        DSC_OK);
    cr_assert_str_eq(r1, r2);
    cr_assert_eq(state_of(l, &ana, "*").held, 400 * M);
    cr_assert_eq(reserve_as(l, (dsc_reserve_req){&ana, &a, 60, "other", NULL}, r2, NULL, 0, NULL,
                            NULL, NULL),
                 DSC_OK);
    cr_assert_str_neq(r1, r2);
    cr_assert_eq(state_of(l, &ana, "*").held, 800 * M);
    dsc_ledger_free(l);
}

Test(ledger, cancel_releases_the_hold_and_unknown_ids_are_reported) {
    fake_clock clk;
    dsc_ledger *l = open_ledger(&clk, DSC_EXPIRED_CHARGE);
    budget(l, "key:k1", DSC_METRIC_REQUESTS, "rolling:1h", 1);
    char rid[DSC_RESERVATION_ID_MAX];
    dsc_amounts one = amt(DSC_METRIC_REQUESTS, M);
    cr_assert_eq(reserve_as(l, (dsc_reserve_req){&ana, &one, 60, NULL, NULL}, rid, NULL, 0, NULL,
                            NULL, NULL),
                 DSC_OK);
    cr_assert_eq(reserve_as(l, (dsc_reserve_req){&ana, &one, 60, NULL, NULL}, rid, NULL, 0, NULL,
                            NULL, NULL),
                 DSC_BUDGET_EXCEEDED);
    char first[DSC_RESERVATION_ID_MAX];
    cr_assert_eq(reserve_as(l, (dsc_reserve_req){&(dsc_subject){.key = "k2"}, &one, 60, NULL, NULL},
                            first, NULL, 0, NULL, NULL, NULL),
                 DSC_OK);
    dsc_ledger_free(l);
    l = open_ledger(&clk, DSC_EXPIRED_CHARGE);
    budget(l, "key:k1", DSC_METRIC_REQUESTS, "rolling:1h", 1);
    cr_assert_eq(reserve_as(l, (dsc_reserve_req){&ana, &one, 60, NULL, NULL}, rid, NULL, 0, NULL,
                            NULL, NULL),
                 DSC_OK);
    cr_assert_eq(dsc_ledger_cancel(l, &(dsc_cancel_req){rid, NULL}, NULL, NULL), DSC_OK);
    cr_assert_eq(state_of(l, &ana, "key:k1").held, 0);
    cr_assert_eq(state_of(l, &ana, "key:k1").used, 0);
    cr_assert_eq(dsc_ledger_cancel(l, &(dsc_cancel_req){rid, NULL}, NULL, NULL), DSC_OK,
                 "cancelling twice is a no-op");
    dsc_error err;
    cr_assert_eq(dsc_ledger_cancel(l, &(dsc_cancel_req){"r-nope", NULL}, NULL, &err),
                 DSC_UNKNOWN_RESERVATION);
    cr_assert(strstr(err.message, "r-nope"));
    dsc_ledger_free(l);
}

Test(ledger, expired_holds_are_charged_by_default) {
    fake_clock clk;
    dsc_ledger *l = open_ledger(&clk, DSC_EXPIRED_CHARGE);
    budget(l, "user:*", DSC_METRIC_GCO2E, "month", 10);
    char rid[DSC_RESERVATION_ID_MAX];
    dsc_amounts hold = amt(DSC_METRIC_GCO2E, 4 * M);
    cr_assert_eq(reserve_as(l, (dsc_reserve_req){&ana, &hold, 30, NULL, NULL}, rid, NULL, 0, NULL,
                            NULL, NULL),
                 DSC_OK);
    clk.now += 29 * S;
    cr_assert_eq(dsc_ledger_tick(l), 0);
    clk.now += 2 * S;
    cr_assert_eq(dsc_ledger_tick(l), 1);
    dsc_budget_state s = state_of(l, &ana, "user:*");
    cr_assert_eq(s.held, 0);
    cr_assert_eq(s.used, 4 * M);
    /* a late settle replaces what the expiry charged with the actual */
    dsc_amounts actual = amt(DSC_METRIC_GCO2E, 1 * M);
    dsc_settle_out kind;
    cr_assert_eq(settle_as(l, (dsc_settle_req){rid, &actual, NULL, NULL}, &kind, NULL, NULL),
                 DSC_OK);
    cr_assert_eq(kind.kind, DSC_SETTLE_LATE);
    cr_assert_eq(state_of(l, &ana, "user:*").used, 1 * M);
    dsc_ledger_stats stats;
    dsc_ledger_stats_get(l, &stats);
    cr_assert_eq(stats.expired, 1);
    cr_assert_eq(stats.holds, 0);
    dsc_ledger_free(l);
}

Test(ledger, expired_holds_are_released_when_configured) {
    fake_clock clk;
    dsc_ledger *l = open_ledger(&clk, DSC_EXPIRED_RELEASE);
    budget(l, "user:*", DSC_METRIC_GCO2E, "month", 10);
    char rid[DSC_RESERVATION_ID_MAX];
    dsc_amounts hold = amt(DSC_METRIC_GCO2E, 4 * M);
    cr_assert_eq(reserve_as(l, (dsc_reserve_req){&ana, &hold, 30, NULL, NULL}, rid, NULL, 0, NULL,
                            NULL, NULL),
                 DSC_OK);
    clk.now += 31 * S;
    /* expired lazily by the next preview, without a tick */
    dsc_budget_state s = state_of(l, &ana, "user:*");
    cr_assert_eq(s.held, 0);
    cr_assert_eq(s.used, 0);
    dsc_ledger_free(l);
}

Test(ledger, settle_of_an_unknown_reservation_is_charged_as_unreserved_usage_once) {
    fake_clock clk;
    dsc_ledger *l = open_ledger(&clk, DSC_EXPIRED_CHARGE);
    budget(l, "team:*", DSC_METRIC_ENERGY_WH, "day", 100);
    budget(l, "*", DSC_METRIC_ENERGY_WH, "day", 100);
    dsc_amounts actual = amt(DSC_METRIC_ENERGY_WH, 7 * M);
    dsc_settle_out kind;
    cr_assert_eq(settle_as(l, (dsc_settle_req){"r-lost", &actual, &ana, NULL}, &kind, NULL, NULL),
                 DSC_OK);
    cr_assert_eq(kind.kind, DSC_SETTLE_UNRESERVED);
    cr_assert_eq(settle_as(l, (dsc_settle_req){"r-lost", &actual, &ana, NULL}, &kind, NULL, NULL),
                 DSC_OK);
    cr_assert_eq(kind.kind, DSC_SETTLE_REPEATED);
    cr_assert_eq(state_of(l, &ana, "team:*").used, 7 * M);
    /* with no subject it still counts, against the budgets of everyone */
    cr_assert_eq(settle_as(l, (dsc_settle_req){"r-anon", &actual, NULL, NULL}, &kind, NULL, NULL),
                 DSC_OK);
    cr_assert_eq(state_of(l, &ana, "*").used, 14 * M);
    cr_assert_eq(state_of(l, &ana, "team:*").used, 7 * M);
    dsc_error err;
    dsc_amounts neg = amt(DSC_METRIC_ENERGY_WH, -1);
    cr_assert_eq(settle_as(l, (dsc_settle_req){"r-x", &neg, &ana, NULL}, &kind, NULL, &err),
                 DSC_BAD_REQUEST);
    cr_assert(strstr(err.message, "actual.energy_wh"), "%s", err.message);
    dsc_ledger_free(l);
}

Test(ledger, calendar_month_counter_resets_at_the_first_of_the_month) {
    fake_clock clk;
    dsc_ledger *l = open_ledger(&clk, DSC_EXPIRED_CHARGE);
    clk.now = 1738367999LL * S; /* 2025-01-31T23:59:59Z */
    budget(l, "org:acme", DSC_METRIC_GCO2E, "month", 10);
    dsc_amounts a = amt(DSC_METRIC_GCO2E, 9 * M);
    char rid[DSC_RESERVATION_ID_MAX];
    cr_assert_eq(
        reserve_as(l, (dsc_reserve_req){&ana, &a, 60, NULL, NULL}, rid, NULL, 0, NULL, NULL, NULL),
        DSC_OK);
    cr_assert_eq(settle_as(l, (dsc_settle_req){rid, &a, NULL, NULL}, NULL, NULL, NULL), DSC_OK);
    dsc_budget_state s = state_of(l, &ana, "org:acme");
    cr_assert_eq(s.used, 9 * M);
    cr_assert_eq(s.resets_at, 1738368000);
    clk.now += S; /* February */
    s = state_of(l, &ana, "org:acme");
    cr_assert_eq(s.used, 0);
    cr_assert_eq(s.resets_at, 1740787200, "2025-03-01T00:00Z");
    dsc_ledger_free(l);
}

Test(ledger, rolling_window_refuses_a_second_burst_right_after_the_edge) {
    fake_clock clk;
    dsc_ledger *l = open_ledger(&clk, DSC_EXPIRED_CHARGE);
    budget(l, "user:*", DSC_METRIC_REQUESTS, "rolling:1h", 10);
    dsc_amounts one = amt(DSC_METRIC_REQUESTS, M);
    char rid[DSC_RESERVATION_ID_MAX];
    clk.now += 3599 * S;
    for (int i = 0; i < 10; i++) {
        cr_assert_eq(reserve_as(l, (dsc_reserve_req){&ana, &one, 60, NULL, NULL}, rid, NULL, 0,
                                NULL, NULL, NULL),
                     DSC_OK);
        cr_assert_eq(settle_as(l, (dsc_settle_req){rid, &one, NULL, NULL}, NULL, NULL, NULL),
                     DSC_OK);
    }
    clk.now += 2 * S;
    cr_assert_eq(reserve_as(l, (dsc_reserve_req){&ana, &one, 60, NULL, NULL}, rid, NULL, 0, NULL,
                            NULL, NULL),
                 DSC_BUDGET_EXCEEDED);
    clk.now = T0 + (3599 + 3600 + 120) * S;
    cr_assert_eq(reserve_as(l, (dsc_reserve_req){&ana, &one, 60, NULL, NULL}, rid, NULL, 0, NULL,
                            NULL, NULL),
                 DSC_OK);
    dsc_ledger_free(l);
}

Test(ledger, token_bucket_budget_allows_the_burst_then_the_rate) {
    fake_clock clk;
    dsc_ledger *l = open_ledger(&clk, DSC_EXPIRED_CHARGE);
    budget(l, "key:*", DSC_METRIC_REQUESTS, "rate:2/s", 4); /* burst 4, 2 per second */
    dsc_amounts one = amt(DSC_METRIC_REQUESTS, M);
    char rid[DSC_RESERVATION_ID_MAX];
    for (int i = 0; i < 4; i++) {
        cr_assert_eq(reserve_as(l, (dsc_reserve_req){&ana, &one, 60, NULL, NULL}, rid, NULL, 0,
                                NULL, NULL, NULL),
                     DSC_OK);
        cr_assert_eq(settle_as(l, (dsc_settle_req){rid, &one, NULL, NULL}, NULL, NULL, NULL),
                     DSC_OK);
    }
    dsc_budget_state ex[2];
    size_t nex;
    cr_assert_eq(
        reserve_as(l, (dsc_reserve_req){&ana, &one, 60, NULL, NULL}, rid, ex, 2, &nex, NULL, NULL),
        DSC_BUDGET_EXCEEDED);
    cr_assert_eq(ex[0].resets_at, T0 / S + 2);
    clk.now += S / 2; /* one token back */
    cr_assert_eq(reserve_as(l, (dsc_reserve_req){&ana, &one, 60, NULL, NULL}, rid, NULL, 0, NULL,
                            NULL, NULL),
                 DSC_OK);
    cr_assert_eq(settle_as(l, (dsc_settle_req){rid, &one, NULL, NULL}, NULL, NULL, NULL), DSC_OK);
    cr_assert_eq(reserve_as(l, (dsc_reserve_req){&ana, &one, 60, NULL, NULL}, rid, NULL, 0, NULL,
                            NULL, NULL),
                 DSC_BUDGET_EXCEEDED);
    dsc_ledger_free(l);
}

/* The wait a preview names: when the next token is there, for settled and held usage. */
static int64_t wait_for_one(dsc_ledger *l) {
    dsc_amounts one = amt(DSC_METRIC_REQUESTS, M);
    dsc_budget_state st[4];
    size_t n = 0;
    cr_assert_eq(dsc_ledger_preview(l, &ana, &one, st, 4, &n, NULL), DSC_OK);
    cr_assert_eq(n, 1);
    cr_assert(st[0].would_exceed);
    return st[0].retry_after_s;
}

Test(ledger, rate_budget_names_the_wait_for_the_next_token_for_settled_and_held_usage) {
    fake_clock clk;
    dsc_ledger *l = open_ledger(&clk, DSC_EXPIRED_CHARGE);
    budget(l, "user:*", DSC_METRIC_REQUESTS, "rate:2/1m", 2); /* one token every 30 s */
    dsc_amounts one = amt(DSC_METRIC_REQUESTS, M);
    char rid[2][DSC_RESERVATION_ID_MAX];
    for (int i = 0; i < 2; i++)
        cr_assert_eq(reserve_as(l, (dsc_reserve_req){&ana, &one, 600, NULL, NULL}, rid[i], NULL, 0,
                                NULL, NULL, NULL),
                     DSC_OK);
    cr_assert_eq(wait_for_one(l), 30, "two held");
    for (int i = 0; i < 2; i++)
        cr_assert_eq(settle_as(l, (dsc_settle_req){rid[i], &one, NULL, NULL}, NULL, NULL, NULL),
                     DSC_OK);
    cr_assert_eq(wait_for_one(l), 30, "two settled");
    clk.now += 10 * S;
    cr_assert_eq(wait_for_one(l), 20, "10 s later");
    dsc_ledger_free(l);
}

/* --- concurrency ------------------------------------------------------------- */

typedef struct race {
    dsc_ledger *l;
    _Atomic int64_t settled;
    _Atomic int stop;
    _Atomic int violations;
    int seed;
} race;

static void *reserver(void *arg) {
    race *r = arg;
    unsigned seed = (unsigned)__atomic_fetch_add(&r->seed, 1, __ATOMIC_RELAXED) * 7919u + 1;
    for (int i = 0; i < 3000; i++) {
        seed = seed * 1103515245u + 12345u;
        int64_t want = (int64_t)(seed >> 16) % 50 + 1;
        dsc_amounts a = amt(DSC_METRIC_GCO2E, want * M);
        char rid[DSC_RESERVATION_ID_MAX];
        if (reserve_as(r->l, (dsc_reserve_req){&ana, &a, 60, NULL, NULL}, rid, NULL, 0, NULL, NULL,
                       NULL) != DSC_OK)
            continue;
        int64_t actual = (int64_t)(seed >> 8) % (want * M + 1);
        if ((seed >> 4) % 5 == 0) {
            dsc_ledger_cancel(r->l, &(dsc_cancel_req){rid, NULL}, NULL, NULL);
            continue;
        }
        dsc_amounts act = amt(DSC_METRIC_GCO2E, actual);
        if (settle_as(r->l, (dsc_settle_req){rid, &act, NULL, NULL}, NULL, NULL, NULL) == DSC_OK)
            r->settled += actual;
    }
    return NULL;
}

static void *watcher(void *arg) {
    race *r = arg;
    while (!r->stop) {
        dsc_budget_state st;
        size_t n;
        dsc_ledger_preview(r->l, &ana, NULL, &st, 1, &n, NULL);
        if (st.used + st.held > st.limit) r->violations++;
    }
    return NULL;
}

Test(ledger, eight_threads_reserving_against_one_budget_never_exceed_it) {
    fake_clock clk;
    race r = {.l = open_ledger(&clk, DSC_EXPIRED_CHARGE)};
    budget(r.l, "team:infra", DSC_METRIC_GCO2E, "year", 1e9 / 1e6 * 200); /* 200 kg */
    pthread_t w, t[8];
    pthread_create(&w, NULL, watcher, &r);
    for (int i = 0; i < 8; i++)
        pthread_create(&t[i], NULL, reserver, &r);
    for (int i = 0; i < 8; i++)
        pthread_join(t[i], NULL);
    r.stop = 1;
    pthread_join(w, NULL);
    dsc_budget_state s = state_of(r.l, &ana, "team:infra");
    cr_assert_eq(r.violations, 0, "hold + used exceeded the limit %d times", r.violations);
    cr_assert_eq(s.held, 0);
    cr_assert_eq(s.used, r.settled, "used %lld != settled %lld", (long long)s.used,
                 (long long)r.settled);
    cr_assert_leq(s.used, s.limit);
    cr_assert_gt(s.used, 0);
    dsc_ledger_free(r.l);
}

/* Eight threads on overlapping subjects: one org shared by all, four teams each shared
 * by two threads, a user each; the org and team budgets both bind (four teams' limits
 * add up to more than the org's). */
#define CROWD_TEAMS 4

typedef struct crowd {
    dsc_ledger *l;
    _Atomic int64_t charged[CROWD_TEAMS]; /* settled per team */
    _Atomic int stop, violations, refused, held_ok, next;
} crowd;

static dsc_subject crowd_subject(int i, char user[16]) {
    static const char *const teams[CROWD_TEAMS] = {"t0", "t1", "t2", "t3"};
    snprintf(user, 16, "u%d", i);
    return (dsc_subject){.org = "acme", .team = teams[i % CROWD_TEAMS], .user = user};
}

static void *crowd_worker(void *arg) {
    crowd *c = arg;
    int me = atomic_fetch_add(&c->next, 1);
    char user[16];
    dsc_subject s = crowd_subject(me, user);
    unsigned seed = (unsigned)me * 2654435761u + 1;
    for (int i = 0; i < 4000; i++) {
        seed = seed * 1103515245u + 12345u;
        int64_t want = (int64_t)(seed >> 16) % 40 + 1;
        dsc_amounts a = amt(DSC_METRIC_GCO2E, want * M);
        char rid[DSC_RESERVATION_ID_MAX];
        if (reserve_as(c->l, (dsc_reserve_req){&s, &a, 60, NULL, NULL}, rid, NULL, 0, NULL, NULL,
                       NULL) != DSC_OK) {
            c->refused++;
            continue;
        }
        c->held_ok++;
        if ((seed >> 4) % 4 == 0) {
            cr_assert_eq(dsc_ledger_cancel(c->l, &(dsc_cancel_req){rid, NULL}, NULL, NULL), DSC_OK);
            continue;
        }
        int64_t actual = (int64_t)(seed >> 8) % (want * M + 1); /* at most what it held */
        dsc_amounts act = amt(DSC_METRIC_GCO2E, actual);
        cr_assert_eq(settle_as(c->l, (dsc_settle_req){rid, &act, NULL, NULL}, NULL, NULL, NULL),
                     DSC_OK);
        c->charged[me % CROWD_TEAMS] += actual;
    }
    return NULL;
}

/* Every budget of every subject, over and over: used + held never above its limit. */
static void *crowd_watcher(void *arg) {
    crowd *c = arg;
    for (int i = 0; !c->stop; i = (i + 1) % 8) {
        char user[16];
        dsc_subject s = crowd_subject(i, user);
        dsc_budget_state st[4];
        size_t n = 0;
        dsc_ledger_preview(c->l, &s, NULL, st, 4, &n, NULL);
        for (size_t k = 0; k < n && k < 4; k++)
            if (st[k].used + st[k].held > st[k].limit) c->violations++;
    }
    return NULL;
}

Test(ledger,
     eight_threads_on_shared_org_and_team_budgets_never_overshoot_and_used_is_what_was_charged) {
    fake_clock clk;
    crowd c = {.l = open_ledger(&clk, DSC_EXPIRED_CHARGE)};
    budget(c.l, "org:*", DSC_METRIC_GCO2E, "year", 3000);
    budget(c.l, "team:*", DSC_METRIC_GCO2E, "year", 1000);
    pthread_t w, t[8];
    pthread_create(&w, NULL, crowd_watcher, &c);
    for (int i = 0; i < 8; i++)
        pthread_create(&t[i], NULL, crowd_worker, &c);
    for (int i = 0; i < 8; i++)
        pthread_join(t[i], NULL);
    c.stop = 1;
    pthread_join(w, NULL);
    cr_assert_eq(c.violations, 0, "used + held exceeded a limit %d times", c.violations);
    cr_assert_gt(c.refused, 0, "the budgets never bound: the test proves nothing");
    cr_assert_gt(c.held_ok, 0);
    int64_t total = 0;
    for (int team = 0; team < CROWD_TEAMS; team++) {
        char user[16];
        dsc_subject s = crowd_subject(team, user);
        dsc_budget_state st = state_of(c.l, &s, "team:*");
        cr_assert_eq(st.held, 0);
        cr_assert_eq(st.used, c.charged[team], "team t%d: used %lld, charged %lld", team,
                     (long long)st.used, (long long)c.charged[team]);
        cr_assert_leq(st.used, st.limit);
        total += c.charged[team];
    }
    char user[16];
    dsc_subject s = crowd_subject(0, user);
    dsc_budget_state org = state_of(c.l, &s, "org:*");
    cr_assert_eq(org.held, 0);
    cr_assert_eq(org.used, total, "org: used %lld, charged %lld", (long long)org.used,
                 (long long)total);
    cr_assert_leq(org.used, org.limit);
    dsc_ledger_free(c.l);
}

Test(ledger, usage_settled_after_a_budget_appears_counts_on_it) {
    fake_clock clk;
    dsc_ledger *l = open_ledger(&clk, DSC_EXPIRED_CHARGE);
    char rid[DSC_RESERVATION_ID_MAX];
    dsc_amounts a = amt(DSC_METRIC_GCO2E, 3 * M);
    cr_assert_eq(
        reserve_as(l, (dsc_reserve_req){&ana, &a, 60, NULL, NULL}, rid, NULL, 0, NULL, NULL, NULL),
        DSC_OK);
    budget(l, "user:ana", DSC_METRIC_GCO2E, "day", 10);
    cr_assert_eq(settle_as(l, (dsc_settle_req){rid, &a, NULL, NULL}, NULL, NULL, NULL), DSC_OK);
    dsc_budget_state s = state_of(l, &ana, "user:ana");
    cr_assert_eq(s.used, 3 * M);
    cr_assert_eq(s.held, 0);
    /* and a deleted budget takes nothing more */
    cr_assert_eq(
        reserve_as(l, (dsc_reserve_req){&ana, &a, 60, NULL, NULL}, rid, NULL, 0, NULL, NULL, NULL),
        DSC_OK);
    cr_assert_eq(dsc_ledger_budget(l,
                                   &(dsc_budget_req){"user:ana", DSC_METRIC_GCO2E, "day", 0, true},
                                   NULL, NULL, NULL),
                 DSC_OK);
    cr_assert_eq(settle_as(l, (dsc_settle_req){rid, &a, NULL, NULL}, NULL, NULL, NULL), DSC_OK);
    size_t n;
    cr_assert_eq(dsc_ledger_preview(l, &ana, NULL, NULL, 0, &n, NULL), DSC_OK);
    cr_assert_eq(n, 0);
    dsc_ledger_free(l);
}

Test(ledger, bad_configuration_is_refused_naming_the_field) {
    dsc_error err;
    dsc_ledger_config cfg = {.timezone = "Europe/Nowhere"};
    cr_assert_null(dsc_ledger_new(&cfg, &err));
    cr_assert_eq(err.code, DSC_BAD_REQUEST);
    cr_assert(strstr(err.message, "timezone") && strstr(err.message, "Europe/Nowhere"), "%s",
              err.message);
    cfg = (dsc_ledger_config){.durability = (dsc_durability)7};
    cr_assert_null(dsc_ledger_new(&cfg, &err));
    cr_assert(strstr(err.message, "durability"), "%s", err.message);
    cfg = (dsc_ledger_config){.timezone = "+05:30"};
    dsc_ledger *l = dsc_ledger_new(&cfg, &err);
    cr_assert(l, "%s", err.message);
    dsc_ledger_free(l);
    dsc_ledger_free(NULL);
}

Test(ledger, calendar_budgets_follow_the_configured_timezone) {
    fake_clock clk = {.now = 1736899200LL * S + 30 * 60 * S}; /* 2025-01-15T00:30Z */
    dsc_ledger_config cfg = {.now_us = fake_now, .clock_ud = &clk, .timezone = "+02:00"};
    dsc_ledger *l = dsc_ledger_new(&cfg, NULL);
    cr_assert(l);
    budget(l, "org:acme", DSC_METRIC_REQUESTS, "day", 5);
    /* 00:30Z is 02:30 at +02:00: the local day ends at 22:00Z */
    cr_assert_eq(state_of(l, &ana, "org:acme").resets_at, 1736899200 + 22 * 3600);
    dsc_ledger_free(l);
}

Test(ledger, missing_arguments_are_errors_not_crashes) {
    fake_clock clk;
    dsc_ledger *l = open_ledger(&clk, DSC_EXPIRED_CHARGE);
    budget(l, "*", DSC_METRIC_REQUESTS, "day", 1);
    dsc_error err;
    dsc_amounts a = amt(DSC_METRIC_REQUESTS, 2 * M);
    size_t n;
    cr_assert_eq(dsc_ledger_preview(l, NULL, &a, NULL, 5, &n, &err), DSC_OK);
    cr_assert_eq(n, 1);
    dsc_reserve_out out = {0};
    cr_assert_eq(
        dsc_ledger_reserve(l, &(dsc_reserve_req){&ana, &a, 60, NULL, NULL}, NULL, NULL, &err),
        DSC_BAD_REQUEST, "no reply to fill");
    cr_assert_eq(dsc_ledger_reserve(l, NULL, &out, NULL, &err), DSC_BAD_REQUEST, "no request");
    cr_assert_eq(dsc_ledger_settle(l, NULL, NULL, NULL, &err), DSC_BAD_REQUEST);
    cr_assert_eq(dsc_ledger_cancel(l, NULL, NULL, &err), DSC_BAD_REQUEST);
    cr_assert_eq(dsc_ledger_budget(l, NULL, NULL, NULL, &err), DSC_BAD_REQUEST);
    char rid[DSC_RESERVATION_ID_MAX];
    cr_assert_eq(
        reserve_as(l, (dsc_reserve_req){&ana, &a, 60, NULL, NULL}, rid, NULL, 5, &n, NULL, &err),
        DSC_BUDGET_EXCEEDED);
    cr_assert_eq(n, 1);
    cr_assert_eq(reserve_as(l, (dsc_reserve_req){&ana, NULL, 60, NULL, NULL}, rid, NULL, 0, NULL,
                            NULL, &err),
                 DSC_BAD_REQUEST);
    cr_assert(strstr(err.message, "amounts"));
    cr_assert_eq(
        reserve_as(l, (dsc_reserve_req){&ana, &a, 0, NULL, NULL}, rid, NULL, 0, NULL, NULL, &err),
        DSC_BAD_REQUEST);
    cr_assert(strstr(err.message, "ttl"), "%s", err.message);
    cr_assert_eq(settle_as(l, (dsc_settle_req){NULL, &a, NULL, NULL}, NULL, NULL, &err),
                 DSC_BAD_REQUEST);
    cr_assert(strstr(err.message, "reservation_id"), "%s", err.message);
    cr_assert_eq(settle_as(l, (dsc_settle_req){"r1", NULL, NULL, NULL}, NULL, NULL, &err),
                 DSC_BAD_REQUEST);
    cr_assert_eq(dsc_ledger_cancel(l, &(dsc_cancel_req){"", NULL}, NULL, &err), DSC_BAD_REQUEST);
    cr_assert_eq(dsc_ledger_budget(l, &(dsc_budget_req){NULL, DSC_METRIC_GCO2E, NULL, 1, false},
                                   NULL, NULL, &err),
                 DSC_BAD_REQUEST);
    cr_assert_eq(dsc_ledger_budget(l, &(dsc_budget_req){"*", DSC_METRIC_GCO2E, NULL, 1, false},
                                   NULL, NULL, &err),
                 DSC_BAD_REQUEST);
    cr_assert_eq(dsc_ledger_record(l, NULL, NULL, &err), DSC_BAD_REQUEST);
    dsc_ledger_free(l);
}

static void count_done(void *ud, dsc_status st, const dsc_error *err) {
    (void)err;
    if (st == DSC_OK) (*(int *)ud)++;
}

Test(ledger, reserve_journal_without_a_store_holds_counts_the_decision_and_reports_at_once) {
    fake_clock clk = {T0};
    dsc_ledger *l = open_ledger(&clk, DSC_EXPIRED_CHARGE);
    budget(l, "user:*", DSC_METRIC_GCO2E, "day", 10);
    dsc_decision_record d = {.decision_id = "d1", .subject = ana, .outcome = "allow"};
    char rid[DSC_RESERVATION_ID_MAX];
    dsc_amounts a = amt(DSC_METRIC_GCO2E, 4 * M);
    int done = 0;
    dsc_error err;
    cr_assert_eq(reserve_as(l, (dsc_reserve_req){&ana, &a, 60, NULL, &d}, rid, NULL, 0, NULL,
                            &(dsc_done){count_done, &done}, &err),
                 DSC_OK, "%s", err.message);
    cr_assert_eq(done, 1, "nothing to commit: done runs inside the call");
    cr_assert_eq(state_of(l, &ana, "user:*").held, 4 * M);
    dsc_ledger_stats stats;
    dsc_ledger_stats_get(l, &stats);
    cr_assert_eq(stats.decisions, 1);
    /* without a decision it is dsc_ledger_reserve with a done and no decision */
    cr_assert_eq(reserve_as(l, (dsc_reserve_req){&ana, &a, 60, NULL, NULL}, rid, NULL, 0, NULL,
                            &(dsc_done){count_done, &done}, &err),
                 DSC_OK);
    dsc_ledger_stats_get(l, &stats);
    cr_assert_eq(stats.decisions, 1);
    cr_assert_eq(state_of(l, &ana, "user:*").held, 8 * M);
    dsc_ledger_free(l);
}

/* Without a store a decision is only checked, never copied: a field too long is still
 * refused by name, holds nothing and counts no decision, and the longest that fits
 * goes through. */
Test(ledger, a_decision_field_too_long_is_refused_by_name_without_a_store_and_holds_nothing) {
    fake_clock clk = {T0};
    dsc_ledger *l = open_ledger(&clk, DSC_EXPIRED_CHARGE);
    budget(l, "user:*", DSC_METRIC_GCO2E, "day", 10);
    char reason[600], verdicts[2049];
    memset(reason, 'x', sizeof reason - 1);
    reason[sizeof reason - 1] = '\0';
    memset(verdicts, ' ', sizeof verdicts - 1);
    verdicts[sizeof verdicts - 1] = '\0';
    dsc_decision_record d = {.decision_id = "d1", .subject = ana, .reason = reason};
    char rid[DSC_RESERVATION_ID_MAX];
    dsc_amounts a = amt(DSC_METRIC_GCO2E, 4 * M);
    dsc_error err;
    cr_assert_eq(
        reserve_as(l, (dsc_reserve_req){&ana, &a, 60, NULL, &d}, rid, NULL, 0, NULL, NULL, &err),
        DSC_BAD_REQUEST);
    cr_assert(strstr(err.message, "'reason'"), "%s", err.message);
    cr_assert_eq(dsc_ledger_record(l, &d, NULL, &err), DSC_BAD_REQUEST);
    cr_assert(strstr(err.message, "'reason'"), "%s", err.message);
    d.reason = "fits";
    d.verdicts = verdicts;
    cr_assert_eq(dsc_ledger_record(l, &d, NULL, &err), DSC_BAD_REQUEST);
    cr_assert(strstr(err.message, "'verdicts'"), "%s", err.message);
    cr_assert_eq(state_of(l, &ana, "user:*").held, 0);
    dsc_ledger_stats stats;
    dsc_ledger_stats_get(l, &stats);
    cr_assert_eq(stats.decisions, 0);
    verdicts[sizeof verdicts - 2] = '\0'; /* 2047 bytes: the most that fits */
    reason[511] = '\0';
    d.reason = reason;
    cr_assert_eq(
        reserve_as(l, (dsc_reserve_req){&ana, &a, 60, NULL, &d}, rid, NULL, 0, NULL, NULL, &err),
        DSC_OK, "%s", err.message);
    cr_assert_eq(dsc_ledger_record(l, &d, NULL, &err), DSC_OK, "%s", err.message);
    dsc_ledger_stats_get(l, &stats);
    cr_assert_eq(stats.decisions, 2);
    cr_assert_eq(state_of(l, &ana, "user:*").held, 4 * M);
    dsc_ledger_free(l);
}

Test(ledger, reservation_ids_are_92_random_bits_and_a_guess_of_their_shape_charges_nothing) {
    fake_clock clk;
    dsc_ledger *l = open_ledger(&clk, DSC_EXPIRED_CHARGE);
    budget(l, "team:*", DSC_METRIC_TOKENS, "day", 1000);
    char a[DSC_RESERVATION_ID_MAX], b[DSC_RESERVATION_ID_MAX];
    dsc_amounts ten = amt(DSC_METRIC_TOKENS, 10 * M);
    dsc_error err;
    cr_assert_eq(
        reserve_as(l, (dsc_reserve_req){&ana, &ten, 60, NULL, NULL}, a, NULL, 0, NULL, NULL, &err),
        DSC_OK);
    cr_assert_eq(
        reserve_as(l, (dsc_reserve_req){&ana, &ten, 60, NULL, NULL}, b, NULL, 0, NULL, NULL, &err),
        DSC_OK);
    cr_assert_eq(strlen(a), 37);
    cr_assert_eq(a[0], 'r');
    cr_assert_str_neq(a, b);
    /* Ids are in order (their first 12 hex digits), the 23 after them random (the last
     * names the ledger shard that holds it). */
    cr_assert_lt(memcmp(a, b, 13), 0);
    cr_assert_neq(memcmp(a + 13, b + 13, 24), 0);
    /* The next id's order part with a made-up random part is a guess that fails. */
    char next[DSC_RESERVATION_ID_MAX];
    snprintf(next, sizeof next, "%.13s%024d", b, 0);
    next[12] = (char)(next[12] == '9' ? 'a' : next[12] == 'f' ? '0' : next[12] + 1);
    const char *guesses[] = {next, "r0000000000000001", "rffffffffffffffffffffffffffffffffffff"};
    for (size_t i = 0; i < 3; i++)
        cr_assert_eq(settle_as(l, (dsc_settle_req){guesses[i], &ten, &ana, NULL}, NULL, NULL, &err),
                     DSC_UNKNOWN_RESERVATION, "%s", guesses[i]);
    cr_assert_eq(state_of(l, &ana, "team:*").used, 0);
    /* An id of the caller's own shape is an unreserved settle, as before. */
    dsc_settle_out kind;
    cr_assert_eq(settle_as(l, (dsc_settle_req){"job-7", &ten, &ana, NULL}, &kind, NULL, &err),
                 DSC_OK, "%s", err.message);
    cr_assert_eq(kind.kind, DSC_SETTLE_UNRESERVED);
    dsc_ledger_free(l);
}

static void ignore(void *ud, dsc_status st, const dsc_error *err) {
    (void)ud;
    (void)st;
    (void)err;
}

Test(ledger, a_hold_journaled_with_its_decision_is_owned_by_the_decision_key) {
    fake_clock clk;
    dsc_ledger *l = open_ledger(&clk, DSC_EXPIRED_CHARGE);
    char id[DSC_RESERVATION_ID_MAX];
    dsc_amounts one = amt(DSC_METRIC_REQUESTS, M);
    dsc_decision_record rec = {
        .decision_id = "d-1", .subject = ana, .outcome = "allow", .key_id = "k_0123456789abcdef"};
    dsc_error err;
    cr_assert_eq(reserve_as(l, (dsc_reserve_req){&ana, &one, 60, NULL, &rec}, id, NULL, 0, NULL,
                            &(dsc_done){ignore, NULL}, &err),
                 DSC_OK, "%s", err.message);
    dsc_hold_info h;
    cr_assert_eq(dsc_ledger_hold_get(l, id, &h), DSC_OK);
    cr_assert_str_eq(h.owner, "k_0123456789abcdef");
    cr_assert_eq(
        reserve_as(l, (dsc_reserve_req){&ana, &one, 60, NULL, NULL}, id, NULL, 0, NULL, NULL, &err),
        DSC_OK);
    cr_assert_eq(dsc_ledger_hold_get(l, id, &h), DSC_OK);
    cr_assert_str_eq(h.owner, "");
    cr_assert_eq(dsc_ledger_hold_get(l, "r-none", &h), DSC_UNKNOWN_RESERVATION);
    dsc_ledger_free(l);
}

Test(ledger, a_hold_keeps_who_took_it_and_what_its_check_asked_for) {
    fake_clock clk;
    dsc_ledger *l = open_ledger(&clk, DSC_EXPIRED_CHARGE);
    char id[DSC_RESERVATION_ID_MAX];
    dsc_amounts one = amt(DSC_METRIC_REQUESTS, M);
    dsc_decision_record rec = {.decision_id = "d-1",
                               .subject = ana,
                               .outcome = "allow",
                               .key_id = "k_1",
                               .provider = "openai",
                               .model = "gpt-4o",
                               .zone = "FR",
                               .purpose = "support"};
    dsc_error err;
    cr_assert_eq(
        reserve_as(l, (dsc_reserve_req){&ana, &one, 60, NULL, &rec}, id, NULL, 0, NULL, NULL, &err),
        DSC_OK, "%s", err.message);
    dsc_hold_info h;
    cr_assert_eq(dsc_ledger_hold_get(l, id, &h), DSC_OK);
    cr_assert_str_eq(h.id, id);
    cr_assert_str_eq(h.org, "acme");
    cr_assert_str_eq(h.team, "infra");
    cr_assert_str_eq(h.user, "ana");
    cr_assert_str_eq(h.owner, "k_1");
    cr_assert_str_eq(h.provider, "openai");
    cr_assert_str_eq(h.model, "gpt-4o");
    cr_assert_str_eq(h.zone, "FR");
    cr_assert_str_eq(h.purpose, "support");
    cr_assert_eq(h.held.v[DSC_METRIC_REQUESTS], M);
    cr_assert_eq(h.expires_us, clk.now + 60 * 1000000LL);
    cr_assert(h.open);
    cr_assert_eq(settle_as(l, (dsc_settle_req){id, &one, NULL, "k_1"}, NULL, NULL, &err), DSC_OK);
    cr_assert_eq(dsc_ledger_hold_get(l, id, &h), DSC_OK, "finished ones are remembered");
    cr_assert_not(h.open);
    cr_assert_str_eq(h.model, "gpt-4o");
    dsc_ledger_free(l);
}

Test(ledger, a_settle_or_cancel_by_another_key_is_refused_and_changes_nothing) {
    fake_clock clk;
    dsc_ledger *l = open_ledger(&clk, DSC_EXPIRED_CHARGE);
    budget(l, "*", DSC_METRIC_REQUESTS, "day", 10);
    char id[DSC_RESERVATION_ID_MAX];
    dsc_amounts one = amt(DSC_METRIC_REQUESTS, M), two = amt(DSC_METRIC_REQUESTS, 2 * M);
    dsc_decision_record rec = {.decision_id = "d-1", .subject = ana, .key_id = "k_1"};
    dsc_error err;
    cr_assert_eq(
        reserve_as(l, (dsc_reserve_req){&ana, &two, 60, NULL, &rec}, id, NULL, 0, NULL, NULL, &err),
        DSC_OK, "%s", err.message);
    cr_assert_eq(settle_as(l, (dsc_settle_req){id, &one, NULL, "k_2"}, NULL, NULL, &err),
                 DSC_FORBIDDEN);
    cr_assert(strstr(err.message, "reservation"), "%s", err.message);
    cr_assert_eq(dsc_ledger_cancel(l, &(dsc_cancel_req){id, "k_2"}, NULL, &err), DSC_FORBIDDEN);
    cr_assert_eq(dsc_ledger_cancel(l, &(dsc_cancel_req){id, ""}, NULL, &err), DSC_FORBIDDEN,
                 "a caller with no key is not the owner either");
    cr_assert_eq(state_of(l, &ana, "*").held, 2 * M, "the hold stays");
    cr_assert_eq(state_of(l, &ana, "*").used, 0);
    dsc_settle_out kind;
    cr_assert_eq(settle_as(l, (dsc_settle_req){id, &one, NULL, NULL}, &kind, NULL, &err), DSC_OK,
                 "no key given: an admin may");
    cr_assert_eq(kind.kind, DSC_SETTLE_RESERVED);
    cr_assert_eq(state_of(l, &ana, "*").used, M);
    dsc_ledger_free(l);
}

/* A finished reservation is remembered (a repeated settle answers "repeated") until
 * retain_max of them are, whichever shards they are in, also when they are all in one
 * (one thread on one core); beyond that one is forgotten. */
Test(ledger, finished_reservations_are_remembered_up_to_retain_max_in_all) {
    fake_clock clk = {T0};
    dsc_ledger_config cfg = {.now_us = fake_now, .clock_ud = &clk, .retain_max = 64};
    dsc_ledger *l = dsc_ledger_new(&cfg, NULL);
    cr_assert(l);
    budget(l, "team:*", DSC_METRIC_TOKENS, "day", 1e6);
    enum { N = 64 };
    char rid[N + 1][DSC_RESERVATION_ID_MAX];
    dsc_amounts one = amt(DSC_METRIC_TOKENS, M);
    for (int i = 0; i <= N; i++) {
        cr_assert_eq(reserve_as(l, (dsc_reserve_req){&ana, &one, 60, NULL, NULL}, rid[i], NULL, 0,
                                NULL, NULL, NULL),
                     DSC_OK);
        cr_assert_eq(settle_as(l, (dsc_settle_req){rid[i], &one, NULL, NULL}, NULL, NULL, NULL),
                     DSC_OK);
        clk.now += 1000;
    }
    dsc_ledger_tick(l);
    int repeated = 0, unknown = 0;
    for (int i = 0; i <= N; i++) {
        dsc_settle_out out;
        dsc_status st = settle_as(l, (dsc_settle_req){rid[i], &one, NULL, NULL}, &out, NULL, NULL);
        repeated += st == DSC_OK && out.kind == DSC_SETTLE_REPEATED;
        unknown += st == DSC_UNKNOWN_RESERVATION;
    }
    cr_assert_eq(repeated, N, "%d of %d remembered", repeated, N + 1);
    cr_assert_eq(unknown, 1);
    cr_assert_eq(state_of(l, &ana, "team:*").used, (N + 1) * M);
    dsc_ledger_free(l);
}

/* A request id whose hold goes to shard 0 (the shard is the hash of the request id). */
static void request_in_shard0(char *buf, size_t len, int *next) {
    do
        snprintf(buf, len, "q%d", (*next)++);
    while ((dsc__strmap_hash(buf) & (DSC__SHARDS - 1)) != 0);
}

Test(ledger, a_shards_counter_cache_stays_bounded_and_a_counter_it_dropped_keeps_its_usage) {
    fake_clock clk;
    dsc_ledger *l = open_ledger(&clk, DSC_EXPIRED_CHARGE);
    budget(l, "user:*", DSC_METRIC_REQUESTS, "day", 1);
    enum { N = DSC__SHARD_CACHE_MAX + 100 };
    dsc_amounts one = amt(DSC_METRIC_REQUESTS, M);
    char user[16], req[24], rid[DSC_RESERVATION_ID_MAX];
    int next = 0;
    for (int i = 0; i < N; i++) {
        snprintf(user, sizeof user, "u%d", i);
        request_in_shard0(req, sizeof req, &next);
        dsc_subject s = {.org = "acme", .team = "infra", .user = user};
        cr_assert_eq(reserve_as(l, (dsc_reserve_req){&s, &one, 60, req, NULL}, rid, NULL, 0, NULL,
                                NULL, NULL),
                     DSC_OK);
        cr_assert_eq(settle_as(l, (dsc_settle_req){rid, &one, NULL, NULL}, NULL, NULL, NULL),
                     DSC_OK);
        cr_assert_leq(l->shards[0].counters.len, DSC__SHARD_CACHE_MAX, "after %d users", i + 1);
    }
    dsc_ledger_stats stats;
    dsc_ledger_stats_get(l, &stats);
    cr_assert_eq(stats.counters, N, "every user has one counter, cached or not");
    dsc_subject first = {.org = "acme", .team = "infra", .user = "u0"};
    snprintf(req, sizeof req, "1#org:acme/user:u%d", N - 1);
    cr_assert_not_null(dsc__strmap_get(&l->shards[0].counters, req), "the newest is cached");
    cr_assert_null(dsc__strmap_get(&l->shards[0].counters, "1#org:acme/user:u0"),
                   "u0's counter left the cache");
    request_in_shard0(req, sizeof req, &next);
    cr_assert_eq(reserve_as(l, (dsc_reserve_req){&first, &one, 60, req, NULL}, rid, NULL, 0, NULL,
                            NULL, NULL),
                 DSC_BUDGET_EXCEEDED, "the counter found again is the one that was charged");
    cr_assert_eq(state_of(l, &first, "user:*").used, M);
    dsc_ledger_free(l);
}

Test(ledger, a_budgets_and_a_holds_strings_live_in_their_allocation_not_in_fixed_arrays) {
    /* bench/memory.sh's target counts on it: 100 000 budgets and remembered holds */
    cr_assert_lt(sizeof(dsc__budget), DSC_SELECTOR_MAX);
    cr_assert_lt(sizeof(dsc__counter), 80, "a counter has no mutex of its own");
    cr_assert_lt(sizeof(dsc__reservation), DSC_RESERVATION_ID_MAX + 2 * DSC_NAME_MAX +
                                               2 * sizeof(dsc_amounts) + 18 * sizeof(void *));
    fake_clock clk;
    dsc_ledger *l = open_ledger(&clk, DSC_EXPIRED_CHARGE);
    char sel[DSC_SELECTOR_MAX], req[DSC_NAME_MAX], key[DSC_NAME_MAX];
    memset(req, 'r', sizeof req - 1);
    req[sizeof req - 1] = '\0';
    memset(key, 'k', sizeof key - 1);
    key[sizeof key - 1] = '\0';
    snprintf(sel, sizeof sel, "org:%.54s/user:%.63s", key, req); /* 127 characters */
    cr_assert_eq(strlen(sel), DSC_SELECTOR_MAX - 1);
    budget(l, sel, DSC_METRIC_REQUESTS, "rolling:1h", 5);
    dsc_budget_info info;
    cr_assert_eq(dsc_ledger_budget_get(l, sel, DSC_METRIC_REQUESTS, "rolling:1h", &info, NULL),
                 DSC_OK);
    cr_assert_str_eq(info.selector, sel);
    cr_assert_str_eq(info.window, "rolling:1h");
    dsc_amounts one = amt(DSC_METRIC_REQUESTS, M);
    dsc_decision_record rec = {.decision_id = "d-1", .subject = ana, .key_id = key};
    char r1[DSC_RESERVATION_ID_MAX], r2[DSC_RESERVATION_ID_MAX];
    cr_assert_eq(
        reserve_as(l, (dsc_reserve_req){&ana, &one, 60, req, &rec}, r1, NULL, 0, NULL, NULL, NULL),
        DSC_OK);
    cr_assert_eq(
        reserve_as(l, (dsc_reserve_req){&ana, &one, 60, req, NULL}, r2, NULL, 0, NULL, NULL, NULL),
        DSC_OK);
    cr_assert_str_eq(r1, r2, "the longest request id finds its hold");
    dsc_hold_info h;
    cr_assert_eq(dsc_ledger_hold_get(l, r1, &h), DSC_OK);
    cr_assert_str_eq(h.owner, key, "the longest owner comes back whole");
    dsc_ledger_free(l);
}

/* The counter named key ("<budget id>#<name>"), from the counters' index. */
static dsc__counter *counter_named(dsc_ledger *l, const char *key) {
    return dsc__strmap_get(&l->cmap[dsc__strmap_hash(key) & (DSC__CMAP_SHARDS - 1)].map, key);
}

Test(ledger, a_reserve_over_counters_that_share_a_lock_takes_it_once_and_holds_on_each,
     .timeout = 20) {
    fake_clock clk;
    dsc_ledger *l = open_ledger(&clk, DSC_EXPIRED_CHARGE);
    budget(l, "user:*", DSC_METRIC_REQUESTS, "day", 1); /* budget 1 */
    budget(l, "key:*", DSC_METRIC_REQUESTS, "day", 1);  /* budget 2 */
    enum { N = 1200 }; /* more counters of each budget than there are locks */
    dsc_amounts one = amt(DSC_METRIC_REQUESTS, M);
    char name[32], rid[DSC_RESERVATION_ID_MAX];
    for (int i = 0; i < 2 * N; i++) { /* the users' counters, then the keys' */
        char v[16];
        snprintf(v, sizeof v, "%c%d", i < N ? 'u' : 'k', i % N);
        dsc_subject s = {.org = "acme", .user = i < N ? v : NULL, .key = i < N ? NULL : v};
        cr_assert_eq(reserve_as(l, (dsc_reserve_req){&s, &one, 60, NULL, NULL}, rid, NULL, 0, NULL,
                                NULL, NULL),
                     DSC_OK);
        cr_assert_eq(dsc_ledger_cancel(l, &(dsc_cancel_req){rid, NULL}, NULL, NULL), DSC_OK);
    }
    int user = -1, key = -1; /* a user and a key whose counters share a lock */
    size_t lock_of_user[DSC__COUNTER_LOCKS];
    for (size_t k = 0; k < DSC__COUNTER_LOCKS; k++)
        lock_of_user[k] = SIZE_MAX;
    for (int i = 0; i < N; i++) {
        snprintf(name, sizeof name, "1#org:acme/user:u%d", i);
        dsc__counter *c = counter_named(l, name);
        cr_assert(c, "%s", name);
        lock_of_user[dsc__counter_lock_of(c)] = (size_t)i;
    }
    for (int j = 0; j < N && key < 0; j++) {
        snprintf(name, sizeof name, "2#org:acme/key:k%d", j);
        dsc__counter *c = counter_named(l, name);
        cr_assert(c, "%s", name);
        size_t u = lock_of_user[dsc__counter_lock_of(c)];
        if (u != SIZE_MAX) user = (int)u, key = j;
    }
    cr_assert_geq(key, 0, "a user's counter and a key's share a lock");
    char u[16], k[16];
    snprintf(u, sizeof u, "u%d", user);
    snprintf(k, sizeof k, "k%d", key);
    dsc_subject both = {.org = "acme", .user = u, .key = k};
    cr_assert_eq(reserve_as(l, (dsc_reserve_req){&both, &one, 60, NULL, NULL}, rid, NULL, 0, NULL,
                            NULL, NULL),
                 DSC_OK, "the shared lock is taken once");
    cr_assert_eq(state_of(l, &both, "user:*").held, M);
    cr_assert_eq(state_of(l, &both, "key:*").held, M);
    size_t nex = 0;
    char rid2[DSC_RESERVATION_ID_MAX];
    cr_assert_eq(reserve_as(l, (dsc_reserve_req){&both, &one, 60, NULL, NULL}, rid2, NULL, 0, &nex,
                            NULL, NULL),
                 DSC_BUDGET_EXCEEDED);
    cr_assert_eq(nex, 2);
    cr_assert_eq(settle_as(l, (dsc_settle_req){rid, &one, NULL, NULL}, NULL, NULL, NULL), DSC_OK);
    cr_assert_eq(state_of(l, &both, "user:*").used, M);
    cr_assert_eq(state_of(l, &both, "key:*").used, M);
    cr_assert_eq(state_of(l, &both, "key:*").held, 0);
    dsc_ledger_free(l);
}
