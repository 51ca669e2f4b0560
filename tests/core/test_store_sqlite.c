/* test_store_sqlite.c - the ledger's SQLite store: restart rebuilds every counter,
 * decisions are journaled, a full disk fails cleanly and recovers, and a process
 * killed with SIGKILL loses no acknowledged settle and duplicates none. */
#include "discern/ledger.h"
#include "discern/report.h"
#include "ledger_calls.h"

#include "../../core/ledger_internal.h"
#include "../../core/store_sqlite_internal.h"

#include <criterion/criterion.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <sqlite3.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define S 1000000LL
#define M DSC_MICRO
#define T0 (1736942400LL * S) /* 2025-01-15T12:00:00Z */

/* A fresh database path under the build tree's ledger-tests/ (kept for inspection). */
static void temp_db(char *path, size_t len) {
    char dir[512];
    snprintf(dir, sizeof dir, "%s/ledger-tests", DISCERN_BINARY_DIR);
    mkdir(dir, 0755);
    snprintf(dir, sizeof dir, "%s/ledger-tests/XXXXXX", DISCERN_BINARY_DIR);
    cr_assert(mkdtemp(dir), "mkdtemp");
    snprintf(path, len, "%s/discern.db", dir);
}

static dsc_ledger *open_at(const char *path, fake_clock *clk, int64_t retain_s) {
    dsc_ledger_config cfg = {
        .store_path = path, .now_us = clk ? fake_now : NULL, .clock_ud = clk, .retain_s = retain_s};
    dsc_error err;
    dsc_ledger *l = dsc_ledger_new(&cfg, &err);
    cr_assert(l, "%s", err.message);
    return l;
}

static dsc_amounts amt(dsc_metric m, int64_t v) {
    dsc_amounts a = {{0}};
    a.v[m] = v;
    return a;
}

static const dsc_subject ana = {.org = "acme", .team = "infra", .user = "ana"};

static size_t preview(dsc_ledger *l, dsc_budget_state *st, size_t max) {
    size_t n = 0;
    cr_assert_eq(dsc_ledger_preview(l, &ana, NULL, st, max, &n, NULL), DSC_OK);
    return n;
}

static dsc_budget_state find(dsc_budget_state *st, size_t n, const char *sel) {
    for (size_t i = 0; i < n; i++)
        if (strcmp(st[i].selector, sel) == 0) return st[i];
    cr_assert_fail("no %s", sel);
    return st[0];
}

static int64_t query_int(const char *path, const char *sql) {
    sqlite3 *db;
    cr_assert_eq(sqlite3_open(path, &db), SQLITE_OK);
    sqlite3_stmt *st;
    cr_assert_eq(sqlite3_prepare_v2(db, sql, -1, &st, NULL), SQLITE_OK, "%s", sqlite3_errmsg(db));
    cr_assert_eq(sqlite3_step(st), SQLITE_ROW);
    int64_t v = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    sqlite3_close(db);
    return v;
}

Test(store_sqlite, restart_rebuilds_budgets_counters_and_holds) {
    char path[600];
    temp_db(path, sizeof path);
    fake_clock clk = {T0};
    dsc_ledger *l = open_at(path, &clk, 0);
    dsc_error err;
    cr_assert_eq(
        dsc_ledger_budget(l, &(dsc_budget_req){"team:*", DSC_METRIC_GCO2E, "month", 100, false},
                          NULL, NULL, &err),
        DSC_OK);
    cr_assert_eq(dsc_ledger_budget(
                     l, &(dsc_budget_req){"org:acme", DSC_METRIC_REQUESTS, "rolling:1h", 50, false},
                     NULL, NULL, &err),
                 DSC_OK);
    cr_assert_eq(dsc_ledger_budget(
                     l, &(dsc_budget_req){"user:*", DSC_METRIC_TOKENS, "rate:10/s", 100, false},
                     NULL, NULL, &err),
                 DSC_OK);
    char rid[DSC_RESERVATION_ID_MAX], first[DSC_RESERVATION_ID_MAX],
        open_rid[DSC_RESERVATION_ID_MAX];
    for (int i = 0; i < 5; i++) {
        dsc_amounts a = amt(DSC_METRIC_GCO2E, 10 * M);
        a.v[DSC_METRIC_REQUESTS] = M;
        a.v[DSC_METRIC_TOKENS] = 20 * M;
        cr_assert_eq(reserve_as(l, (dsc_reserve_req){&ana, &a, 60, NULL, NULL}, rid, NULL, 0, NULL,
                                NULL, &err),
                     DSC_OK, "%s", err.message);
        a.v[DSC_METRIC_GCO2E] = (3 + i) * M;
        cr_assert_eq(settle_as(l, (dsc_settle_req){rid, &a, NULL, NULL}, NULL, NULL, &err), DSC_OK,
                     "%s", err.message);
        if (i == 0) strcpy(first, rid);
        clk.now += S / 10;
    }
    dsc_amounts hold = amt(DSC_METRIC_GCO2E, 7 * M);
    cr_assert_eq(reserve_as(l, (dsc_reserve_req){&ana, &hold, 600, "open", NULL}, open_rid, NULL, 0,
                            NULL, NULL, &err),
                 DSC_OK);
    dsc_budget_state before[8], after[8];
    size_t nb = preview(l, before, 8);
    dsc_ledger_free(l);

    l = open_at(path, &clk, 0);
    size_t na = preview(l, after, 8);
    cr_assert_eq(na, nb);
    for (size_t i = 0; i < nb; i++) {
        dsc_budget_state a = find(after, na, before[i].selector);
        cr_assert_eq(a.used, before[i].used, "%s used", a.selector);
        cr_assert_eq(a.held, before[i].held, "%s held", a.selector);
        cr_assert_eq(a.resets_at, before[i].resets_at, "%s resets_at", a.selector);
    }
    cr_assert_eq(find(after, na, "team:*").used, (3 + 4 + 5 + 6 + 7) * M);
    cr_assert_eq(find(after, na, "team:*").held, 7 * M);
    /* the hold survives and settles; the old settle stays settled */
    dsc_settle_out kind;
    dsc_amounts actual = amt(DSC_METRIC_GCO2E, 2 * M);
    cr_assert_eq(settle_as(l, (dsc_settle_req){open_rid, &actual, NULL, NULL}, &kind, NULL, &err),
                 DSC_OK);
    cr_assert_eq(kind.kind, DSC_SETTLE_RESERVED);
    cr_assert_eq(settle_as(l, (dsc_settle_req){first, &actual, NULL, NULL}, &kind, NULL, &err),
                 DSC_OK);
    cr_assert_eq(kind.kind, DSC_SETTLE_REPEATED);
    char again[DSC_RESERVATION_ID_MAX];
    cr_assert_eq(reserve_as(l, (dsc_reserve_req){&ana, &hold, 600, "open", NULL}, again, NULL, 0,
                            NULL, NULL, &err),
                 DSC_OK);
    cr_assert_str_eq(again, open_rid, "request ids survive a restart");
    dsc_ledger_free(l);
    cr_assert_eq(query_int(path, "SELECT SUM(gco2e) FROM charges"), (25 + 2) * M);
}

Test(store_sqlite, a_settle_forgotten_by_memory_is_still_idempotent) {
    char path[600];
    temp_db(path, sizeof path);
    fake_clock clk = {T0};
    dsc_ledger *l = open_at(path, &clk, 1); /* remember finished reservations for 1 s */
    dsc_error err;
    cr_assert_eq(dsc_ledger_budget(l, &(dsc_budget_req){"*", DSC_METRIC_GCO2E, "day", 100, false},
                                   NULL, NULL, &err),
                 DSC_OK);
    char rid[DSC_RESERVATION_ID_MAX];
    dsc_amounts a = amt(DSC_METRIC_GCO2E, 5 * M);
    cr_assert_eq(
        reserve_as(l, (dsc_reserve_req){&ana, &a, 60, NULL, NULL}, rid, NULL, 0, NULL, NULL, &err),
        DSC_OK);
    cr_assert_eq(settle_as(l, (dsc_settle_req){rid, &a, NULL, NULL}, NULL, NULL, &err), DSC_OK);
    clk.now += 10 * S;
    dsc_ledger_tick(l);
    dsc_ledger_stats stats;
    dsc_ledger_stats_get(l, &stats);
    cr_assert_eq(stats.reservations, 0, "forgotten by memory");
    dsc_settle_out kind;
    cr_assert_eq(
        settle_as(l, (dsc_settle_req){rid, &a, (dsc_subject *)&ana, NULL}, &kind, NULL, &err),
        DSC_OK);
    cr_assert_eq(kind.kind, DSC_SETTLE_REPEATED);
    dsc_budget_state st[4];
    cr_assert_eq(find(st, preview(l, st, 4), "*").used, 5 * M);
    dsc_ledger_free(l);
}

Test(store_sqlite, decisions_are_journaled_with_their_reasons) {
    char path[600];
    temp_db(path, sizeof path);
    dsc_ledger *l = open_at(path, NULL, 0);
    dsc_decision_record d = {.decision_id = "d1",
                             .request_id = "q1",
                             .subject = ana,
                             .purpose = "code-review",
                             .provider = "openai",
                             .model = "gpt-4o",
                             .input_tokens = 100,
                             .output_tokens = 800,
                             .est_gco2e = 1500000,
                             .outcome = "refuse",
                             .policy = "carbon",
                             .policy_version = "v7",
                             .reason = "team infra is over its month"};
    dsc_error err;
    cr_assert_eq(dsc_ledger_record(l, &d, NULL, &err), DSC_OK, "%s", err.message);
    char long_reason[600];
    memset(long_reason, 'x', sizeof long_reason - 1);
    long_reason[sizeof long_reason - 1] = '\0';
    d.reason = long_reason;
    cr_assert_eq(dsc_ledger_record(l, &d, NULL, &err), DSC_BAD_REQUEST);
    cr_assert(strstr(err.message, "reason"), "%s", err.message);
    dsc_ledger_free(l);
    cr_assert_eq(query_int(path,
                           "SELECT count(*) FROM decisions WHERE outcome = 'refuse' AND "
                           "policy_version = 'v7' AND team = 'infra' AND est_gco2e = 1500000"),
                 1);
}

/* A check's estimate is what its hold holds, as a rule: the event row then leaves it
 * NULL and the decisions view reads the hold's amounts, in a row of the hold alone or
 * of the hold with its settle; an estimate unlike the hold is stored as it is. */
Test(store_sqlite, a_decisions_estimate_equal_to_its_hold_is_read_from_the_hold) {
    char path[600];
    temp_db(path, sizeof path);
    dsc_ledger *l = open_at(path, NULL, 0);
    dsc_amounts held = amt(DSC_METRIC_GCO2E, 1500000);
    held.v[DSC_METRIC_ENERGY_WH] = 4100000;
    held.v[DSC_METRIC_WATER_ML] = 9000000;
    dsc_decision_record d = {.decision_id = "d-open",
                             .subject = ana,
                             .model = "gpt-4o",
                             .est_energy_wh = 4100000,
                             .est_gco2e = 1500000,
                             .est_water_ml = 9000000,
                             .outcome = "allow"};
    dsc_error err;
    char open_rid[DSC_RESERVATION_ID_MAX], settled_rid[DSC_RESERVATION_ID_MAX];
    dsc_reserve_req r = {.subject = &ana, .amounts = &held, .ttl_s = 600, .decision = &d};
    cr_assert_eq(reserve_as(l, r, open_rid, NULL, 0, NULL, NULL, &err), DSC_OK, "%s", err.message);
    d.decision_id = "d-settled";
    cr_assert_eq(reserve_as(l, r, settled_rid, NULL, 0, NULL, NULL, &err), DSC_OK, "%s",
                 err.message);
    dsc_amounts actual = amt(DSC_METRIC_GCO2E, 700000);
    cr_assert_eq(settle_as(l, (dsc_settle_req){settled_rid, &actual, NULL, NULL}, NULL, NULL, &err),
                 DSC_OK, "%s", err.message);
    d.decision_id = "d-other";
    d.est_water_ml = 8000000; /* not what the hold holds */
    cr_assert_eq(reserve_as(l, r, NULL, NULL, 0, NULL, NULL, &err), DSC_OK, "%s", err.message);
    dsc_ledger_free(l);
    cr_assert_eq(query_int(path, "SELECT count(*) FROM events WHERE decision_id IN ('d-open',"
                                 " 'd-settled') AND est_gco2e IS NULL AND est_energy_wh IS NULL"
                                 " AND est_water_ml IS NULL"),
                 2, "the estimate is not stored twice");
    cr_assert_eq(query_int(path, "SELECT type FROM events WHERE decision_id = 'd-settled'"), 7,
                 "the hold, its decision and its settle in one row");
    cr_assert_eq(query_int(path, "SELECT count(*) FROM events WHERE decision_id = 'd-other'"
                                 " AND est_water_ml = 8000000 AND est_gco2e IS NULL"),
                 1);
    cr_assert_eq(query_int(path, "SELECT count(*) FROM decisions WHERE decision_id IN ('d-open',"
                                 " 'd-settled') AND est_energy_wh = 4100000 AND est_gco2e ="
                                 " 1500000 AND est_water_ml = 9000000"),
                 2);
    cr_assert_eq(query_int(path, "SELECT est_water_ml FROM decisions WHERE decision_id ="
                                 " 'd-other'"),
                 8000000);
    cr_assert_eq(query_int(path, "SELECT count(*) FROM charges WHERE gco2e = 700000"), 1);
}

Test(store_sqlite, full_disk_fails_the_settle_keeps_memory_and_recovers) {
    char path[600];
    temp_db(path, sizeof path);
    fake_clock clk = {T0};
    dsc_ledger *l = open_at(path, &clk, 0);
    dsc_error err;
    cr_assert_eq(dsc_ledger_budget(l, &(dsc_budget_req){"*", DSC_METRIC_GCO2E, "year", 1e6, false},
                                   NULL, NULL, &err),
                 DSC_OK);
    enum { N = 400 };
    static char rids[N][DSC_RESERVATION_ID_MAX];
    dsc_amounts a = amt(DSC_METRIC_GCO2E, 2 * M);
    for (int i = 0; i < N; i++)
        cr_assert_eq(reserve_as(l, (dsc_reserve_req){&ana, &a, 3600, NULL, NULL}, rids[i], NULL, 0,
                                NULL, NULL, &err),
                     DSC_OK);
    /* the file may not grow any more: as if the disk were full */
    cr_assert_eq(dsc__ledger_store_exec(l, "PRAGMA max_page_count = 1", &err), DSC_OK);
    int failed = -1;
    int64_t settled = 0;
    for (int i = 0; i < N && failed < 0; i++) {
        dsc_status st = settle_as(l, (dsc_settle_req){rids[i], &a, NULL, NULL}, NULL, NULL, &err);
        if (st == DSC_OK)
            settled += 2 * M;
        else
            failed = i;
    }
    cr_assert_geq(failed, 0, "the store never filled up");
    cr_assert_eq(err.code, DSC_STORE_UNAVAILABLE);
    cr_assert(strstr(err.message, "full"), "message: %s", err.message);
    dsc_budget_state st[2];
    dsc_budget_state s = find(st, preview(l, st, 2), "*");
    cr_assert_eq(s.used, settled, "memory did not advance past the store");
    cr_assert_eq(s.held, (int64_t)(N - failed) * 2 * M, "the failed settle's hold stays");
    dsc_ledger_stats stats;
    dsc_ledger_stats_get(l, &stats);
    cr_assert_not(stats.store_ok);
    /* space comes back: the same settle now succeeds, without a restart */
    cr_assert_eq(dsc__ledger_store_exec(l, "PRAGMA max_page_count = 1073741823", &err), DSC_OK);
    cr_assert_eq(settle_as(l, (dsc_settle_req){rids[failed], &a, NULL, NULL}, NULL, NULL, &err),
                 DSC_OK, "%s", err.message);
    s = find(st, preview(l, st, 2), "*");
    cr_assert_eq(s.used, settled + 2 * M);
    dsc_ledger_stats_get(l, &stats);
    cr_assert(stats.store_ok);
    dsc_ledger_free(l);
    l = open_at(path, &clk, 0);
    cr_assert_eq(find(st, preview(l, st, 2), "*").used, settled + 2 * M, "store and memory agree");
    dsc_ledger_free(l);
}

Test(store_sqlite, read_only_database_fails_the_settle_and_recovers) {
    char path[600];
    temp_db(path, sizeof path);
    fake_clock clk = {T0};
    dsc_ledger *l = open_at(path, &clk, 0);
    dsc_error err;
    cr_assert_eq(dsc_ledger_budget(l, &(dsc_budget_req){"*", DSC_METRIC_GCO2E, "year", 100, false},
                                   NULL, NULL, &err),
                 DSC_OK);
    char rid[DSC_RESERVATION_ID_MAX];
    dsc_amounts a = amt(DSC_METRIC_GCO2E, 3 * M);
    cr_assert_eq(reserve_as(l, (dsc_reserve_req){&ana, &a, 3600, NULL, NULL}, rid, NULL, 0, NULL,
                            NULL, &err),
                 DSC_OK);
    /* as if the file or its directory had become read-only */
    cr_assert_eq(dsc__ledger_store_exec(l, "PRAGMA query_only = 1", &err), DSC_OK);
    cr_assert_eq(settle_as(l, (dsc_settle_req){rid, &a, NULL, NULL}, NULL, NULL, &err),
                 DSC_STORE_UNAVAILABLE);
    cr_assert(strstr(err.message, "readonly"), "message: %s", err.message);
    dsc_budget_state st[2];
    dsc_budget_state s = find(st, preview(l, st, 2), "*");
    cr_assert_eq(s.used, 0);
    cr_assert_eq(s.held, 3 * M);
    char other[DSC_RESERVATION_ID_MAX];
    cr_assert_eq(reserve_as(l, (dsc_reserve_req){&ana, &a, 3600, NULL, NULL}, other, NULL, 0, NULL,
                            NULL, &err),
                 DSC_STORE_UNAVAILABLE, "a reserve fails too");
    cr_assert_eq(find(st, preview(l, st, 2), "*").held, 3 * M, "and holds nothing");
    /* writable again: the same settle goes through, without a restart */
    cr_assert_eq(dsc__ledger_store_exec(l, "PRAGMA query_only = 0", &err), DSC_OK);
    cr_assert_eq(settle_as(l, (dsc_settle_req){rid, &a, NULL, NULL}, NULL, NULL, &err), DSC_OK,
                 "%s", err.message);
    s = find(st, preview(l, st, 2), "*");
    cr_assert_eq(s.used, 3 * M);
    cr_assert_eq(s.held, 0);
    dsc_ledger_free(l);
    cr_assert_eq(query_int(path, "SELECT count(*) FROM reservations"), 1);
    cr_assert_eq(query_int(path, "SELECT sum(gco2e) FROM charges"), 3 * M);
}

Test(store_sqlite, a_failed_store_is_found_healthy_again_without_any_traffic) {
    char path[600];
    temp_db(path, sizeof path);
    fake_clock clk = {T0};
    dsc_ledger *l = open_at(path, &clk, 0);
    dsc_error err;
    cr_assert_eq(dsc_ledger_budget(l, &(dsc_budget_req){"*", DSC_METRIC_GCO2E, "year", 100, false},
                                   NULL, NULL, &err),
                 DSC_OK);
    char rid[DSC_RESERVATION_ID_MAX];
    dsc_amounts a = amt(DSC_METRIC_GCO2E, 3 * M);
    cr_assert_eq(reserve_as(l, (dsc_reserve_req){&ana, &a, 3600, NULL, NULL}, rid, NULL, 0, NULL,
                            NULL, &err),
                 DSC_OK);
    cr_assert_eq(dsc__ledger_store_exec(l, "PRAGMA query_only = 1", &err), DSC_OK);
    cr_assert_eq(settle_as(l, (dsc_settle_req){rid, &a, NULL, NULL}, NULL, NULL, &err),
                 DSC_STORE_UNAVAILABLE);
    dsc_ledger_stats stats;
    dsc_ledger_stats_get(l, &stats);
    cr_assert_not(stats.store_ok, "unhealthy as soon as the caller hears of the failure");
    cr_assert_eq(dsc__ledger_store_exec(l, "PRAGMA query_only = 0", &err), DSC_OK);
    /* nobody calls: the writer's own probe finds the store writable again */
    for (int i = 0; i < 400 && !stats.store_ok; i++) {
        struct timespec ts = {0, 25 * 1000000L};
        nanosleep(&ts, NULL);
        dsc_ledger_stats_get(l, &stats);
    }
    cr_assert(stats.store_ok, "still unhealthy 10 s after the store became writable");
    dsc_ledger_free(l);
}

Test(store_sqlite, unopenable_store_is_reported_with_its_path) {
    dsc_ledger_config cfg = {.store_path = "/nonexistent-dir/sub/discern.db"};
    dsc_error err;
    cr_assert_null(dsc_ledger_new(&cfg, &err));
    cr_assert_eq(err.code, DSC_STORE_UNAVAILABLE);
    cr_assert(strstr(err.message, "/nonexistent-dir/sub/discern.db"), "%s", err.message);
}

/* --- one process per store file ------------------------------------------------- */

/* The error of opening a ledger on path, which must fail. */
static dsc_error open_refused(const char *path) {
    dsc_ledger_config cfg = {.store_path = path};
    dsc_error err;
    dsc_ledger *l = dsc_ledger_new(&cfg, &err);
    cr_assert_null(l, "a second ledger opened a store that is in use");
    cr_assert_eq(err.code, DSC_STORE_UNAVAILABLE);
    return err;
}

Test(store_sqlite, a_store_in_use_is_refused_naming_the_file_and_the_pid_holding_it) {
    char path[600], needle[1400];
    temp_db(path, sizeof path);
    dsc_ledger *l = open_at(path, NULL, 0);
    dsc_error err = open_refused(path);
    snprintf(needle, sizeof needle, "'%s' is in use by pid %ld, which holds '%s.lock'", path,
             (long)getpid(), path);
    cr_assert(strstr(err.message, needle), "%s", err.message);
    dsc_ledger_free(l);
    dsc_ledger_free(open_at(path, NULL, 0)); /* free releases it */
}

Test(store_sqlite, the_lock_of_a_killed_process_is_released_by_the_kernel) {
    char path[600], needle[64];
    temp_db(path, sizeof path);
    int ready[2];
    cr_assert_eq(pipe(ready), 0);
    pid_t pid = fork();
    cr_assert(pid >= 0);
    if (pid == 0) {
        dsc_ledger_config cfg = {.store_path = path};
        dsc_ledger *l = dsc_ledger_new(&cfg, NULL);
        char c = l ? 'y' : 'n';
        if (write(ready[1], &c, 1) != 1) _exit(1);
        for (;;)
            pause();
    }
    char c = 0;
    ssize_t got = read(ready[0], &c, 1);
    dsc_ledger_config cfg = {.store_path = path};
    dsc_error err;
    dsc_ledger *second = dsc_ledger_new(&cfg, &err);
    kill(pid, SIGKILL); /* before any assertion: a failed test leaves no child behind */
    waitpid(pid, NULL, 0);
    close(ready[0]);
    close(ready[1]);
    cr_assert(got == 1 && c == 'y', "the child could not open the store");
    cr_assert_null(second, "a second ledger opened a store that is in use");
    snprintf(needle, sizeof needle, "in use by pid %ld", (long)pid);
    cr_assert(strstr(err.message, needle), "%s", err.message);
    dsc_ledger_free(open_at(path, NULL, 0));
}

/* --- crash: a child settling in a loop is killed with SIGKILL ------------------ */

typedef struct ack {
    char rid[DSC_RESERVATION_ID_MAX];
    int64_t amount;
} ack;

static void child_settles(const char *path, int fd, unsigned seed) {
    dsc_ledger *l = open_at(path, NULL, 0);
    for (unsigned i = 0;; i++) {
        seed = seed * 1103515245u + 12345u;
        ack a = {.amount = (int64_t)(seed >> 8) % 1000 + 1};
        dsc_amounts req = amt(DSC_METRIC_GCO2E, 1000);
        if (reserve_as(l, (dsc_reserve_req){&ana, &req, 3600, NULL, NULL}, a.rid, NULL, 0, NULL,
                       NULL, NULL) != DSC_OK)
            _exit(2);
        dsc_amounts act = amt(DSC_METRIC_GCO2E, a.amount);
        if (settle_as(l, (dsc_settle_req){a.rid, &act, NULL, NULL}, NULL, NULL, NULL) != DSC_OK)
            _exit(3);
        if (write(fd, &a, sizeof a) != (ssize_t)sizeof a) _exit(4);
    }
}

static size_t read_acks(int fd, ack *acks, size_t max) {
    size_t n = 0;
    ssize_t r;
    while (n < max && (r = read(fd, &acks[n], sizeof acks[n])) == (ssize_t)sizeof acks[n])
        n++;
    return n;
}

Test(store_sqlite, kill_9_loses_no_acknowledged_settle_and_duplicates_none) {
    char path[600];
    temp_db(path, sizeof path);
    dsc_ledger *l = open_at(path, NULL, 0);
    cr_assert_eq(dsc_ledger_budget(l, &(dsc_budget_req){"*", DSC_METRIC_GCO2E, "year", 1e9, false},
                                   NULL, NULL, NULL),
                 DSC_OK);
    dsc_ledger_free(l);
    enum { MAX_ACKS = 200000 };
    ack *acks = malloc(MAX_ACKS * sizeof *acks);
    size_t total = 0;
    int64_t acked_sum = 0;
    srand((unsigned)time(NULL));
    for (int round = 0; round < 20; round++) {
        int p[2];
        cr_assert_eq(pipe(p), 0);
        pid_t pid = fork();
        cr_assert_geq(pid, 0);
        if (pid == 0) {
            close(p[0]);
            child_settles(path, p[1], (unsigned)round * 2654435761u + 17);
        }
        close(p[1]);
        struct timespec ts = {0, (30 + rand() % 200) * 1000000L};
        nanosleep(&ts, NULL);
        kill(pid, SIGKILL);
        int status;
        waitpid(pid, &status, 0);
        cr_assert(WIFSIGNALED(status), "child exited by itself (%d)", WEXITSTATUS(status));
        size_t n = read_acks(p[0], acks + total, MAX_ACKS - total);
        close(p[0]);
        for (size_t i = total; i < total + n; i++)
            acked_sum += acks[i].amount;
        total += n;
    }
    cr_log_info("%zu settles acknowledged over 20 rounds", total);
    cr_assert_gt(total, 20, "the children acknowledged only %zu settles", total);
    sqlite3 *db;
    cr_assert_eq(sqlite3_open(path, &db), SQLITE_OK);
    sqlite3_stmt *st;
    cr_assert_eq(sqlite3_prepare_v2(db,
                                    "SELECT count(*), sum(gco2e) FROM charges WHERE "
                                    "reservation_id = ? AND kind = 'settle'",
                                    -1, &st, NULL),
                 SQLITE_OK);
    for (size_t i = 0; i < total; i++) {
        sqlite3_bind_text(st, 1, acks[i].rid, -1, SQLITE_STATIC);
        cr_assert_eq(sqlite3_step(st), SQLITE_ROW);
        cr_assert_eq(sqlite3_column_int(st, 0), 1, "settle %s present %d times", acks[i].rid,
                     sqlite3_column_int(st, 0));
        cr_assert_eq(sqlite3_column_int64(st, 1), acks[i].amount);
        sqlite3_reset(st);
    }
    sqlite3_finalize(st);
    sqlite3_close(db);
    /* the rebuilt counter is exactly what the store holds, and covers every ack */
    int64_t stored = query_int(path, "SELECT sum(gco2e) FROM charges");
    cr_assert_geq(stored, acked_sum);
    l = open_at(path, NULL, 0);
    dsc_budget_state s[2];
    cr_assert_eq(find(s, preview(l, s, 2), "*").used, stored);
    dsc_ledger_free(l);
    free(acks);
}

/* --- completions instead of blocking ------------------------------------------ */

typedef struct completion {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int calls;
    dsc_status st;
} completion;

static void on_done(void *ud, dsc_status st, const dsc_error *err) {
    completion *c = ud;
    cr_assert_eq(err->code, st);
    pthread_mutex_lock(&c->mu);
    c->calls++;
    c->st = st;
    pthread_cond_signal(&c->cv);
    pthread_mutex_unlock(&c->mu);
}

static void wait_calls(completion *c, int n) {
    pthread_mutex_lock(&c->mu);
    while (c->calls < n)
        pthread_cond_wait(&c->cv, &c->mu);
    pthread_mutex_unlock(&c->mu);
}

Test(store_sqlite, async_settle_reports_the_commit_and_then_counts) {
    char path[600];
    temp_db(path, sizeof path);
    dsc_ledger *l = open_at(path, NULL, 0);
    dsc_error err;
    cr_assert_eq(dsc_ledger_budget(l, &(dsc_budget_req){"*", DSC_METRIC_GCO2E, "day", 100, false},
                                   NULL, NULL, &err),
                 DSC_OK);
    char rid[DSC_RESERVATION_ID_MAX];
    dsc_amounts a = amt(DSC_METRIC_GCO2E, 5 * M);
    cr_assert_eq(
        reserve_as(l, (dsc_reserve_req){&ana, &a, 60, NULL, NULL}, rid, NULL, 0, NULL, NULL, &err),
        DSC_OK);
    completion c = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0, DSC_INTERNAL};
    dsc_settle_out kind;
    cr_assert_eq(
        settle_as(l, (dsc_settle_req){rid, &a, NULL, NULL}, &kind, &(dsc_done){on_done, &c}, &err),
        DSC_OK);
    wait_calls(&c, 1);
    cr_assert_eq(c.st, DSC_OK);
    cr_assert_eq(query_int(path, "SELECT count(*) FROM charges WHERE kind = 'settle'"), 1,
                 "durable when reported");
    dsc_budget_state st[2];
    cr_assert_eq(find(st, preview(l, st, 2), "*").used, 5 * M);
    /* a repeat has nothing to write: reported at once, charged nothing */
    cr_assert_eq(
        settle_as(l, (dsc_settle_req){rid, &a, NULL, NULL}, &kind, &(dsc_done){on_done, &c}, &err),
        DSC_OK);
    cr_assert_eq(c.calls, 2);
    cr_assert_eq(kind.kind, DSC_SETTLE_REPEATED);
    dsc_decision_record d = {.decision_id = "d9", .outcome = "allow"};
    cr_assert_eq(dsc_ledger_record(l, &d, &(dsc_done){on_done, &c}, &err), DSC_OK);
    wait_calls(&c, 3);
    cr_assert_eq(query_int(path, "SELECT count(*) FROM decisions WHERE decision_id = 'd9'"), 1);
    dsc_ledger_free(l);
}

Test(store_sqlite, async_budget_changes_report_their_commit_and_are_in_effect_by_then) {
    char path[600];
    temp_db(path, sizeof path);
    dsc_ledger *l = open_at(path, NULL, 0);
    dsc_error err;
    cr_assert_eq(dsc_ledger_budget(l, &(dsc_budget_req){"*", DSC_METRIC_GCO2E, "day", 100, false},
                                   NULL, NULL, &err),
                 DSC_OK);
    char rid[DSC_RESERVATION_ID_MAX];
    dsc_amounts a = amt(DSC_METRIC_GCO2E, 5 * M);
    cr_assert_eq(
        reserve_as(l, (dsc_reserve_req){&ana, &a, 60, NULL, NULL}, rid, NULL, 0, NULL, NULL, &err),
        DSC_OK);
    cr_assert_eq(settle_as(l, (dsc_settle_req){rid, &a, NULL, NULL}, NULL, NULL, &err), DSC_OK);
    completion c = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0, DSC_INTERNAL};
    cr_assert_eq(dsc_ledger_budget(l,
                                   &(dsc_budget_req){"team:*", DSC_METRIC_GCO2E, "day", 50, false},
                                   NULL, &(dsc_done){on_done, &c}, &err),
                 DSC_OK);
    wait_calls(&c, 1);
    cr_assert_eq(c.st, DSC_OK);
    dsc_budget_info info;
    cr_assert_eq(dsc_ledger_budget_get(l, "team:*", DSC_METRIC_GCO2E, "day", &info, &err), DSC_OK);
    cr_assert_eq(info.limit, 50 * M);
    dsc_budget_state st[2];
    cr_assert_eq(find(st, preview(l, st, 2), "team:*").used, 5 * M, "the past usage is counted");
    cr_assert_eq(query_int(path, "SELECT limit_micro FROM budgets WHERE selector = 'team:*'"),
                 50 * M);
    cr_assert_eq(dsc_ledger_budget(l,
                                   &(dsc_budget_req){"team:*", DSC_METRIC_GCO2E, "day", 70, false},
                                   NULL, &(dsc_done){on_done, &c}, &err),
                 DSC_OK);
    wait_calls(&c, 2);
    cr_assert_eq(find(st, preview(l, st, 2), "team:*").limit, 70 * M);
    cr_assert_eq(find(st, preview(l, st, 2), "team:*").used, 5 * M, "a new limit keeps the count");
    cr_assert_eq(dsc_ledger_budget(l, &(dsc_budget_req){"team:*", DSC_METRIC_GCO2E, "day", 0, true},
                                   NULL, &(dsc_done){on_done, &c}, &err),
                 DSC_OK);
    wait_calls(&c, 3);
    cr_assert_eq(dsc_ledger_budget_get(l, "team:*", DSC_METRIC_GCO2E, "day", &info, NULL),
                 DSC_UNKNOWN_BUDGET);
    cr_assert_eq(query_int(path, "SELECT count(*) FROM budgets WHERE selector = 'team:*'"), 0);
    /* refused at once, and then done never runs */
    cr_assert_eq(dsc_ledger_budget(l, &(dsc_budget_req){"team:*", DSC_METRIC_GCO2E, "day", 0, true},
                                   NULL, &(dsc_done){on_done, &c}, &err),
                 DSC_UNKNOWN_BUDGET);
    cr_assert_eq(dsc_ledger_budget(l, &(dsc_budget_req){"team:", DSC_METRIC_GCO2E, "day", 1, false},
                                   NULL, &(dsc_done){on_done, &c}, &err),
                 DSC_BAD_REQUEST);
    cr_assert(strstr(err.message, "selector"), "%s", err.message);
    cr_assert_eq(c.calls, 3);
    dsc_ledger_free(l);
    /* without a store there is nothing to wait for: done runs inside the call */
    l = open_at(NULL, NULL, 0);
    cr_assert_eq(dsc_ledger_budget(l, &(dsc_budget_req){"*", DSC_METRIC_TOKENS, "day", 9, false},
                                   NULL, &(dsc_done){on_done, &c}, &err),
                 DSC_OK);
    cr_assert_eq(c.calls, 4);
    cr_assert_eq(dsc_ledger_budget(l, &(dsc_budget_req){"*", DSC_METRIC_TOKENS, "day", 0, true},
                                   NULL, &(dsc_done){on_done, &c}, &err),
                 DSC_OK);
    cr_assert_eq(c.calls, 5);
    dsc_ledger_free(l);
}

Test(store_sqlite, an_async_budget_on_a_read_only_store_reports_the_failure_and_is_not_in_effect) {
    char path[600];
    temp_db(path, sizeof path);
    dsc_ledger *l = open_at(path, NULL, 0);
    dsc_error err;
    dsc_amounts a = amt(DSC_METRIC_GCO2E, 2 * M);
    cr_assert_eq(settle_as(l, (dsc_settle_req){"before", &a, &ana, NULL}, NULL, NULL, &err),
                 DSC_OK);
    cr_assert_eq(dsc__ledger_store_exec(l, "PRAGMA query_only = 1", &err), DSC_OK);
    completion c = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0, DSC_INTERNAL};
    cr_assert_eq(dsc_ledger_budget(l,
                                   &(dsc_budget_req){"team:*", DSC_METRIC_GCO2E, "day", 50, false},
                                   NULL, &(dsc_done){on_done, &c}, &err),
                 DSC_OK);
    wait_calls(&c, 1);
    cr_assert_eq(c.st, DSC_STORE_UNAVAILABLE, "the commit failed and done says so");
    cr_assert_eq(dsc_ledger_budget_get(l, "team:*", DSC_METRIC_GCO2E, "day", NULL, NULL),
                 DSC_UNKNOWN_BUDGET);
    cr_assert_eq(dsc__ledger_store_exec(l, "PRAGMA query_only = 0", &err), DSC_OK);
    cr_assert_eq(dsc_ledger_budget(l,
                                   &(dsc_budget_req){"team:*", DSC_METRIC_GCO2E, "day", 50, false},
                                   NULL, &(dsc_done){on_done, &c}, &err),
                 DSC_OK);
    wait_calls(&c, 2);
    cr_assert_eq(c.st, DSC_OK);
    dsc_budget_state st[2];
    cr_assert_eq(find(st, preview(l, st, 2), "team:*").used, 2 * M, "its past counted once");
    dsc_ledger_free(l);
}

Test(store_sqlite, async_reserve_and_cancel_complete_and_a_full_disk_reports_through_done) {
    char path[600];
    temp_db(path, sizeof path);
    fake_clock clk = {T0};
    dsc_ledger *l = open_at(path, &clk, 0);
    dsc_error err;
    cr_assert_eq(dsc_ledger_budget(l, &(dsc_budget_req){"*", DSC_METRIC_GCO2E, "day", 100, false},
                                   NULL, NULL, &err),
                 DSC_OK);
    completion c = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0, DSC_INTERNAL};
    char rid[DSC_RESERVATION_ID_MAX];
    dsc_amounts a = amt(DSC_METRIC_GCO2E, 30 * M);
    cr_assert_eq(reserve_as(l, (dsc_reserve_req){&ana, &a, 60, "q1", NULL}, rid, NULL, 0, NULL,
                            &(dsc_done){on_done, &c}, &err),
                 DSC_OK);
    dsc_budget_state st[2];
    cr_assert_eq(find(st, preview(l, st, 2), "*").held, 30 * M, "held before the commit");
    wait_calls(&c, 1);
    cr_assert_eq(c.st, DSC_OK, "a reserve is acknowledged once queued");
    cr_assert_eq(dsc_ledger_cancel(l, &(dsc_cancel_req){rid, NULL}, &(dsc_done){on_done, &c}, &err),
                 DSC_OK);
    wait_calls(&c, 2);
    cr_assert_eq(find(st, preview(l, st, 2), "*").held, 0);
    cr_assert_eq(query_int(path, "SELECT count(*) FROM reservations WHERE state = 'cancelled'"), 1,
                 "the cancel's commit carries the reserve before it");
    /* refusals are answered at once and never call done */
    dsc_amounts big = amt(DSC_METRIC_GCO2E, 101 * M);
    cr_assert_eq(reserve_as(l, (dsc_reserve_req){&ana, &big, 60, NULL, NULL}, rid, NULL, 0, NULL,
                            &(dsc_done){on_done, &c}, &err),
                 DSC_BUDGET_EXCEEDED);
    /* a full disk: reserves are acknowledged once queued (their holds stay) until a
     * commit has failed; from then on each waits for its own commit, done reports
     * store_unavailable and that hold is gone by then */
    cr_assert_eq(dsc__ledger_store_exec(l, "PRAGMA max_page_count = 1", &err), DSC_OK);
    dsc_amounts small = amt(DSC_METRIC_GCO2E, M / 10);
    int ok = 0, failed = 0;
    for (int i = 0; i < 400 && !failed; i++) {
        int before = c.calls;
        cr_assert_eq(reserve_as(l, (dsc_reserve_req){&ana, &small, 60, NULL, NULL}, rid, NULL, 0,
                                NULL, &(dsc_done){on_done, &c}, &err),
                     DSC_OK);
        wait_calls(&c, before + 1);
        if (c.st == DSC_OK)
            ok++;
        else
            failed = c.st;
        struct timespec ts = {0, 2 * 1000000L}; /* let the writer try a commit */
        nanosleep(&ts, NULL);
    }
    cr_assert_eq(failed, DSC_STORE_UNAVAILABLE, "the file never filled up");
    cr_assert_eq(find(st, preview(l, st, 2), "*").held, ok * (M / 10),
                 "the failed reserve holds nothing");
    dsc_ledger_free(l);
}

Test(store_sqlite, a_budget_created_mid_window_counts_the_usage_already_there) {
    char path[600];
    temp_db(path, sizeof path);
    fake_clock clk = {T0};
    dsc_ledger *l = open_at(path, &clk, 0);
    dsc_error err;
    cr_assert_eq(dsc_ledger_budget(l, &(dsc_budget_req){"*", DSC_METRIC_GCO2E, "year", 1000, false},
                                   NULL, NULL, &err),
                 DSC_OK);
    dsc_subject other = {.org = "beta", .team = "infra"};
    char rid[DSC_RESERVATION_ID_MAX], early[DSC_RESERVATION_ID_MAX];
    dsc_amounts a = amt(DSC_METRIC_GCO2E, 4 * M);
    for (int i = 0; i < 3; i++) {
        cr_assert_eq(reserve_as(l, (dsc_reserve_req){&ana, &a, 600, NULL, NULL}, rid, NULL, 0, NULL,
                                NULL, &err),
                     DSC_OK);
        cr_assert_eq(settle_as(l, (dsc_settle_req){rid, &a, NULL, NULL}, NULL, NULL, &err), DSC_OK);
    }
    cr_assert_eq(reserve_as(l, (dsc_reserve_req){&other, &a, 600, NULL, NULL}, rid, NULL, 0, NULL,
                            NULL, &err),
                 DSC_OK);
    cr_assert_eq(settle_as(l, (dsc_settle_req){rid, &a, NULL, NULL}, NULL, NULL, &err), DSC_OK);
    cr_assert_eq(reserve_as(l, (dsc_reserve_req){&ana, &a, 600, NULL, NULL}, early, NULL, 0, NULL,
                            NULL, &err),
                 DSC_OK);
    clk.now += 10 * S;
    cr_assert_eq(
        dsc_ledger_budget(l, &(dsc_budget_req){"team:*", DSC_METRIC_GCO2E, "month", 50, false},
                          NULL, NULL, &err),
        DSC_OK);
    dsc_budget_state st[4];
    dsc_budget_state s = find(st, preview(l, st, 4), "team:*");
    cr_assert_eq(s.used, 12 * M, "acme/infra's usage this month, not beta's");
    cr_assert_eq(s.held, 0, "a hold taken before the budget existed is not on it");
    /* the early reservation's usage lands on the budget that applies when it settles */
    cr_assert_eq(settle_as(l, (dsc_settle_req){early, &a, NULL, NULL}, NULL, NULL, &err), DSC_OK);
    s = find(st, preview(l, st, 4), "team:*");
    cr_assert_eq(s.used, 16 * M);
    dsc_ledger_free(l);
    l = open_at(path, &clk, 0);
    cr_assert_eq(find(st, preview(l, st, 4), "team:*").used, 16 * M, "a restart agrees");
    cr_assert_eq(find(st, preview(l, st, 4), "*").used, 20 * M);
    dsc_ledger_free(l);
}

/* For subject s, each budget created late (window "month") counts what the same
 * selector created early (window "year") counted live, and every budget of s has its
 * twin. */
static void assert_late_counts_as_early(dsc_ledger *l, const dsc_subject *s, int label) {
    enum { MAX = 64 };
    dsc_budget_state st[MAX];
    size_t n = 0, compared = 0;
    cr_assert_eq(dsc_ledger_preview(l, s, NULL, st, MAX, &n, NULL), DSC_OK);
    cr_assert_leq(n, MAX);
    for (size_t a = 0; a < n; a++)
        for (size_t b = 0; b < n; b++)
            if (strcmp(st[a].selector, st[b].selector) == 0 && strcmp(st[a].window, "year") == 0 &&
                strcmp(st[b].window, "month") == 0) {
                cr_assert_eq(st[b].used, st[a].used, "subject %d, %s: %lld late, %lld early", label,
                             st[a].selector, (long long)st[b].used, (long long)st[a].used);
                compared++;
            }
    cr_assert_eq(compared * 2, n, "subject %d: every budget in both windows", label);
}

/* Every selector shape, created after the charges (window "month"), counts exactly
 * what the same selector created before them (window "year") counted live, for every
 * subject: the store's replay skips only charges the budget cannot apply to. */
Test(store_sqlite, a_budget_created_late_counts_what_one_created_early_counted_for_every_shape) {
    static const char *const sels[] = {
        "*",          "org:*",           "org:acme", "team:*",
        "team:infra", "org:acme/team:*", "user:*",   "org:beta/team:infra",
        "user:ana",   "key:*",           "key:k1",   "org:acme/user:ana"};
    enum { NSEL = sizeof sels / sizeof *sels };
    static const dsc_subject subjects[] = {
        {.org = "acme", .team = "infra", .user = "ana", .key = "k1"},
        {.org = "acme", .team = "web", .user = "bob"},
        {.org = "beta", .team = "infra", .user = "ana"},
        {.org = "acme", .user = "dan", .key = "k2"},
        {.org = "gamma"}};
    enum { NSUB = sizeof subjects / sizeof *subjects };
    char path[600];
    temp_db(path, sizeof path);
    fake_clock clk = {T0};
    dsc_ledger *l = open_at(path, &clk, 0);
    dsc_error err;
    for (int i = 0; i < NSEL; i++)
        cr_assert_eq(
            dsc_ledger_budget(l, &(dsc_budget_req){sels[i], DSC_METRIC_GCO2E, "year", 1e6, false},
                              NULL, NULL, &err),
            DSC_OK, "%s: %s", sels[i], err.message);
    for (int i = 0; i < NSUB; i++) {
        for (int k = 0; k < 2; k++) { /* a charge of gCO2e, and one of tokens only */
            dsc_amounts a = amt(k ? DSC_METRIC_TOKENS : DSC_METRIC_GCO2E, (i + 1) * M);
            char rid[32];
            snprintf(rid, sizeof rid, "unreserved-%d-%d", i, k);
            cr_assert_eq(
                settle_as(l, (dsc_settle_req){rid, &a, &subjects[i], NULL}, NULL, NULL, &err),
                DSC_OK, "%s", err.message);
        }
    }
    clk.now += 10 * S;
    for (int i = 0; i < NSEL; i++)
        cr_assert_eq(
            dsc_ledger_budget(l, &(dsc_budget_req){sels[i], DSC_METRIC_GCO2E, "month", 1e6, false},
                              NULL, NULL, &err),
            DSC_OK);
    for (int i = 0; i < NSUB; i++)
        assert_late_counts_as_early(l, &subjects[i], i);
    /* and the shapes did filter: a few exact values */
    dsc_budget_state st[2 * NSEL];
    size_t n = 0;
    cr_assert_eq(dsc_ledger_preview(l, &subjects[0], NULL, st, 2 * NSEL, &n, NULL), DSC_OK);
    for (size_t i = 0; i < n; i++) {
        if (strcmp(st[i].window, "month") != 0) continue;
        if (strcmp(st[i].selector, "*") == 0) cr_assert_eq(st[i].used, 15 * M);
        if (strcmp(st[i].selector, "org:acme") == 0) cr_assert_eq(st[i].used, 7 * M);
        if (strcmp(st[i].selector, "user:*") == 0) cr_assert_eq(st[i].used, 1 * M);
        if (strcmp(st[i].selector, "key:k1") == 0) cr_assert_eq(st[i].used, 1 * M);
    }
    dsc_ledger_free(l);
}

/* Settles commit from four threads while budgets of every shape are created: each
 * new budget (window "month") reads most of its past on the creating thread while the
 * writer goes on, and the writer adds the rest; every charge must be counted exactly
 * once, as by the same selector created before them all (window "year"). */
typedef struct settler {
    dsc_ledger *l;
    int index;
} settler;

static const dsc_subject settled_for[] = {{.org = "acme", .team = "infra", .user = "ana"},
                                          {.org = "acme", .team = "web", .user = "bob"},
                                          {.org = "beta", .team = "infra", .user = "cy"}};

static void *settle_many(void *arg) {
    settler *t = arg;
    for (int i = 0; i < 300; i++) {
        char rid[32];
        snprintf(rid, sizeof rid, "t%d-%d", t->index, i);
        dsc_amounts a = amt(DSC_METRIC_GCO2E, (i % 5 + 1) * M);
        cr_assert_eq(settle_as(t->l,
                               (dsc_settle_req){rid, &a, &settled_for[(i + t->index) % 3], NULL},
                               NULL, NULL, NULL),
                     DSC_OK);
    }
    return NULL;
}

Test(store_sqlite, budgets_created_while_settles_commit_count_every_charge_once) {
    static const char *const sels[] = {"*",          "org:*",           "org:acme", "team:*",
                                       "team:infra", "org:beta/team:*", "user:*",   "user:ana"};
    enum { NSEL = sizeof sels / sizeof *sels };
    char path[600];
    temp_db(path, sizeof path);
    fake_clock clk = {T0};
    dsc_ledger *l = open_at(path, &clk, 0);
    dsc_error err;
    for (int i = 0; i < NSEL; i++)
        cr_assert_eq(
            dsc_ledger_budget(l, &(dsc_budget_req){sels[i], DSC_METRIC_GCO2E, "year", 1e6, false},
                              NULL, NULL, &err),
            DSC_OK);
    pthread_t th[4];
    settler args[4];
    for (int i = 0; i < 4; i++) {
        args[i] = (settler){l, i};
        pthread_create(&th[i], NULL, settle_many, &args[i]);
    }
    for (int round = 0; round < 3; round++) /* each shape created, deleted, created again */
        for (int i = 0; i < NSEL; i++) {
            if (round == 1) {
                cr_assert_eq(dsc_ledger_budget(
                                 l, &(dsc_budget_req){sels[i], DSC_METRIC_GCO2E, "month", 0, true},
                                 NULL, NULL, &err),
                             DSC_OK, "%s", err.message);
                continue;
            }
            cr_assert_eq(dsc_ledger_budget(
                             l, &(dsc_budget_req){sels[i], DSC_METRIC_GCO2E, "month", 1e6, false},
                             NULL, NULL, &err),
                         DSC_OK, "%s", err.message);
        }
    for (int i = 0; i < 4; i++)
        pthread_join(th[i], NULL);
    for (int w = 0; w < 3; w++)
        assert_late_counts_as_early(l, &settled_for[w], w);
    int64_t total = query_int(path, "SELECT sum(gco2e) FROM charges");
    dsc_budget_state st[2 * NSEL];
    size_t n = 0;
    cr_assert_eq(dsc_ledger_preview(l, &settled_for[0], NULL, st, 2 * NSEL, &n, NULL), DSC_OK);
    for (size_t i = 0; i < n; i++)
        if (strcmp(st[i].selector, "*") == 0) cr_assert_eq(st[i].used, total);
    dsc_ledger_free(l);
}

/* --- group commit under concurrency, and the faster modes ---------------------- */

typedef struct hammer {
    dsc_ledger *l;
    int64_t settled[8];
} hammer;

typedef struct hammer_arg {
    hammer *h;
    int index;
} hammer_arg;

static void *hammer_thread(void *arg) {
    hammer_arg *a = arg;
    dsc_subject s = {.org = "acme", .team = a->index % 2 ? "infra" : "web"};
    for (int i = 0; i < 150; i++) {
        dsc_amounts want = amt(DSC_METRIC_GCO2E, 2 * M);
        char rid[DSC_RESERVATION_ID_MAX];
        if (reserve_as(a->h->l, (dsc_reserve_req){&s, &want, 60, NULL, NULL}, rid, NULL, 0, NULL,
                       NULL, NULL) != DSC_OK)
            continue;
        dsc_amounts act = amt(DSC_METRIC_GCO2E, (i % 7) * M / 4);
        if (i % 5 == 0)
            cr_assert_eq(dsc_ledger_cancel(a->h->l, &(dsc_cancel_req){rid, NULL}, NULL, NULL),
                         DSC_OK);
        else if (settle_as(a->h->l, (dsc_settle_req){rid, &act, NULL, NULL}, NULL, NULL, NULL) ==
                 DSC_OK)
            a->h->settled[a->index] += act.v[DSC_METRIC_GCO2E];
    }
    return NULL;
}

static void hammer_mode(dsc_durability mode) {
    char path[600];
    temp_db(path, sizeof path);
    dsc_ledger_config cfg = {.store_path = path, .durability = mode, .batch_ms = 5};
    dsc_error err;
    hammer h = {.l = dsc_ledger_new(&cfg, &err)};
    cr_assert(h.l, "%s", err.message);
    cr_assert_eq(
        dsc_ledger_budget(h.l, &(dsc_budget_req){"org:acme", DSC_METRIC_GCO2E, "month", 500, false},
                          NULL, NULL, &err),
        DSC_OK);
    pthread_t t[8];
    hammer_arg args[8];
    for (int i = 0; i < 8; i++) {
        args[i] = (hammer_arg){&h, i};
        pthread_create(&t[i], NULL, hammer_thread, &args[i]);
    }
    for (int i = 0; i < 8; i++)
        pthread_join(t[i], NULL);
    int64_t total = 0;
    for (int i = 0; i < 8; i++)
        total += h.settled[i];
    dsc_ledger_stats stats;
    dsc_ledger_stats_get(h.l, &stats);
    dsc_ledger_free(h.l);            /* commits what batch and off still queue */
    if (mode == DSC_DURABILITY_FULL) /* batch and off may not have committed yet */
        cr_assert_lt(stats.store_batches, stats.store_records, "records shared commits");
    cr_assert_eq(query_int(path, "SELECT coalesce(sum(gco2e), 0) FROM charges"), total);
    cr_assert_eq(query_int(path, "SELECT count(*) FROM reservations WHERE state = 'held'"), 0);
    h.l = open_at(path, NULL, 0);
    dsc_budget_state s[2];
    cr_assert_eq(find(s, preview(h.l, s, 2), "org:acme").used, total);
    dsc_ledger_free(h.l);
}

Test(store_sqlite, concurrent_durable_calls_share_commits_and_match_the_store_in_full_mode) {
    hammer_mode(DSC_DURABILITY_FULL);
}

Test(store_sqlite, batch_and_off_modes_commit_everything_by_close) {
    hammer_mode(DSC_DURABILITY_BATCH);
    hammer_mode(DSC_DURABILITY_OFF);
}

/* An _async completion that records it ran. */
static void note_done(void *ud, dsc_status st, const dsc_error *err) {
    (void)err;
    *(int *)ud = st == DSC_OK ? 1 : -1;
}

/* durability batch: "a call returns once queued". With a commit delay far longer than
 * the test, every call completes inside itself and its effect is in the counters at
 * once; the file has it after close. */
Test(store_sqlite, batch_mode_acknowledges_calls_once_queued_and_counts_them_at_once) {
    char path[600];
    temp_db(path, sizeof path);
    dsc_ledger_config cfg = {
        .store_path = path, .durability = DSC_DURABILITY_BATCH, .batch_ms = 5000};
    dsc_error err;
    dsc_ledger *l = dsc_ledger_new(&cfg, &err);
    cr_assert(l, "%s", err.message);
    cr_assert_eq(
        dsc_ledger_budget(l, &(dsc_budget_req){"org:acme", DSC_METRIC_GCO2E, "month", 500, false},
                          NULL, NULL, &err),
        DSC_OK, "%s", err.message);
    dsc_amounts hold = amt(DSC_METRIC_GCO2E, 10 * M), act = amt(DSC_METRIC_GCO2E, 4 * M);
    char rid[DSC_RESERVATION_ID_MAX], rid2[DSC_RESERVATION_ID_MAX];
    int reserved = 0, settled = 0, cancelled = 0, journaled = 0;
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    dsc_decision_record dec = {.decision_id = "d-1", .outcome = "allow", .purpose = "chat"};
    cr_assert_eq(reserve_as(l, (dsc_reserve_req){&ana, &hold, 60, "req-1", &dec}, rid, NULL, 0,
                            NULL, &(dsc_done){note_done, &reserved}, &err),
                 DSC_OK, "%s", err.message);
    cr_assert_eq(reserved, 1, "the reserve completed once queued");
    /* A retry of the same request is answered at once, not "still being reserved". */
    cr_assert_eq(reserve_as(l, (dsc_reserve_req){&ana, &hold, 60, "req-1", NULL}, rid2, NULL, 0,
                            NULL, NULL, &err),
                 DSC_OK, "%s", err.message);
    cr_assert_str_eq(rid2, rid);
    cr_assert_eq(settle_as(l, (dsc_settle_req){rid, &act, NULL, NULL}, NULL,
                           &(dsc_done){note_done, &settled}, &err),
                 DSC_OK, "%s", err.message);
    cr_assert_eq(settled, 1, "the settle completed once queued");
    dsc_budget_state st[2];
    dsc_budget_state b = find(st, preview(l, st, 2), "org:acme");
    cr_assert_eq(b.used, 4 * M, "the settle is counted at once");
    cr_assert_eq(b.held, 0);
    cr_assert_eq(reserve_as(l, (dsc_reserve_req){&ana, &hold, 60, NULL, NULL}, rid2, NULL, 0, NULL,
                            NULL, &err),
                 DSC_OK);
    cr_assert_eq(dsc_ledger_cancel(l, &(dsc_cancel_req){rid2, NULL},
                                   &(dsc_done){note_done, &cancelled}, &err),
                 DSC_OK);
    cr_assert_eq(cancelled, 1, "the cancel completed once queued");
    cr_assert_eq(find(st, preview(l, st, 2), "org:acme").held, 0, "the cancel released at once");
    dec.decision_id = "d-2";
    cr_assert_eq(dsc_ledger_record(l, &dec, &(dsc_done){note_done, &journaled}, &err), DSC_OK);
    cr_assert_eq(journaled, 1, "the decision completed once queued");
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double ms = (double)(t1.tv_sec - t0.tv_sec) * 1e3 + (double)(t1.tv_nsec - t0.tv_nsec) / 1e6;
    cr_assert_lt(ms, 2500, "the calls waited for the 5 s batch (%.0f ms)", ms);
    dsc_ledger_free(l); /* commits what is queued */
    cr_assert_eq(query_int(path, "SELECT coalesce(sum(gco2e), 0) FROM charges"), 4 * M);
    cr_assert_eq(query_int(path, "SELECT count(*) FROM decisions"), 2);
    l = open_at(path, NULL, 0);
    cr_assert_eq(find(st, preview(l, st, 2), "org:acme").used, 4 * M);
    dsc_ledger_free(l);
}

static void exec_sql(const char *path, const char *sql) {
    sqlite3 *db;
    cr_assert_eq(sqlite3_open(path, &db), SQLITE_OK);
    cr_assert_eq(sqlite3_exec(db, sql, NULL, NULL, NULL), SQLITE_OK, "%s", sqlite3_errmsg(db));
    sqlite3_close(db);
}

Test(store_sqlite, unreserved_and_late_settles_write_their_reservation_rows) {
    char path[600];
    temp_db(path, sizeof path);
    fake_clock clk = {T0};
    dsc_ledger *l = open_at(path, &clk, 0);
    dsc_error err;
    cr_assert_eq(dsc_ledger_budget(l, &(dsc_budget_req){"*", DSC_METRIC_GCO2E, "day", 100, false},
                                   NULL, NULL, &err),
                 DSC_OK);
    dsc_amounts a = amt(DSC_METRIC_GCO2E, 4 * M);
    dsc_settle_out kind;
    cr_assert_eq(settle_as(l, (dsc_settle_req){"r-never-held", &a, &ana, NULL}, &kind, NULL, &err),
                 DSC_OK, "%s", err.message);
    cr_assert_eq(kind.kind, DSC_SETTLE_UNRESERVED);
    char rid[DSC_RESERVATION_ID_MAX];
    cr_assert_eq(
        reserve_as(l, (dsc_reserve_req){&ana, &a, 60, NULL, NULL}, rid, NULL, 0, NULL, NULL, &err),
        DSC_OK);
    cr_assert_eq(dsc_ledger_cancel(l, &(dsc_cancel_req){rid, NULL}, NULL, &err), DSC_OK);
    dsc_amounts later = amt(DSC_METRIC_GCO2E, 6 * M);
    cr_assert_eq(settle_as(l, (dsc_settle_req){rid, &later, NULL, NULL}, &kind, NULL, &err),
                 DSC_OK);
    cr_assert_eq(kind.kind, DSC_SETTLE_LATE);
    dsc_ledger_free(l);
    cr_assert_eq(query_int(path, "SELECT charged_gco2e FROM reservations"
                                 " WHERE id = 'r-never-held' AND state = 'settled'"
                                 " AND user = 'ana' AND finished_us IS NOT NULL"),
                 4 * M, "the unreserved settle inserts its row");
    char sql[200];
    snprintf(sql, sizeof sql,
             "SELECT charged_gco2e + held_gco2e FROM reservations WHERE id = '%s'"
             " AND state = 'settled'",
             rid);
    cr_assert_eq(query_int(path, sql), 6 * M + 4 * M, "the late settle updates the held row");
    cr_assert_eq(query_int(path, "SELECT SUM(gco2e) FROM charges"), 10 * M);
}

/* The schema before reservations lost their rowid and finished_us its full index. */
static const char old_schema[] =
    "CREATE TABLE meta(key TEXT PRIMARY KEY, value TEXT);"
    "INSERT INTO meta VALUES('schema_version', '1');"
    "CREATE TABLE budgets(id INTEGER PRIMARY KEY, selector TEXT NOT NULL, metric TEXT NOT NULL,"
    " window TEXT NOT NULL, limit_micro INTEGER NOT NULL, updated_us INTEGER NOT NULL,"
    " UNIQUE(selector, metric, window));"
    "CREATE TABLE reservations(id TEXT PRIMARY KEY, request_id TEXT, org TEXT, team TEXT,"
    " user TEXT, key TEXT, created_us INTEGER, expires_us INTEGER, state TEXT NOT NULL,"
    " finished_us INTEGER, held_energy_wh INTEGER NOT NULL DEFAULT 0, held_gco2e INTEGER NOT"
    " NULL DEFAULT 0, held_water_ml INTEGER NOT NULL DEFAULT 0, held_pe_mj INTEGER NOT NULL"
    " DEFAULT 0, held_cost INTEGER NOT NULL DEFAULT 0, held_tokens INTEGER NOT NULL DEFAULT 0,"
    " held_requests INTEGER NOT NULL DEFAULT 0, charged_energy_wh INTEGER NOT NULL DEFAULT 0,"
    " charged_gco2e INTEGER NOT NULL DEFAULT 0, charged_water_ml INTEGER NOT NULL DEFAULT 0,"
    " charged_pe_mj INTEGER NOT NULL DEFAULT 0, charged_cost INTEGER NOT NULL DEFAULT 0,"
    " charged_tokens INTEGER NOT NULL DEFAULT 0, charged_requests INTEGER NOT NULL DEFAULT 0);"
    "CREATE INDEX reservations_held ON reservations(state) WHERE state = 'held';"
    "CREATE INDEX reservations_finished ON reservations(finished_us);"
    "CREATE TABLE charges(seq INTEGER PRIMARY KEY, at_us INTEGER NOT NULL, kind TEXT NOT NULL,"
    " reservation_id TEXT, org TEXT, team TEXT, user TEXT, key TEXT, energy_wh INTEGER NOT NULL"
    " DEFAULT 0, gco2e INTEGER NOT NULL DEFAULT 0, water_ml INTEGER NOT NULL DEFAULT 0, pe_mj"
    " INTEGER NOT NULL DEFAULT 0, cost INTEGER NOT NULL DEFAULT 0, tokens INTEGER NOT NULL"
    " DEFAULT 0, requests INTEGER NOT NULL DEFAULT 0);"
    "CREATE INDEX charges_at ON charges(at_us);"
    "CREATE UNIQUE INDEX charges_settle_once ON charges(reservation_id)"
    " WHERE kind IN ('settle', 'late', 'unreserved');"
    "CREATE TABLE decisions(seq INTEGER PRIMARY KEY, decision_id TEXT, request_id TEXT,"
    " at_us INTEGER NOT NULL, org TEXT, team TEXT, user TEXT, key TEXT, purpose TEXT,"
    " provider TEXT, model TEXT, input_tokens INTEGER, output_tokens INTEGER, est_energy_wh"
    " INTEGER, est_gco2e INTEGER, est_water_ml INTEGER, outcome TEXT, policy TEXT,"
    " policy_version TEXT, reason TEXT, reservation_id TEXT);"
    "CREATE INDEX decisions_at ON decisions(at_us);"
    "INSERT INTO budgets VALUES(1, '*', 'gco2e', 'day', 100000000, 1736942400000000);"
    "INSERT INTO reservations(id, org, team, user, created_us, expires_us, state, held_gco2e)"
    " VALUES('r00000000000000a1', 'acme', 'infra', 'ana', 1736942400000000,"
    " 1736942460000000, 'held', 7000000);"
    "INSERT INTO reservations(id, org, team, user, created_us, expires_us, state, finished_us,"
    " held_gco2e, charged_gco2e) VALUES('r00000000000000a2', 'acme', 'infra', 'ana',"
    " 1736942400000000, 1736942460000000, 'settled', 1736942401000000, 7000000, 3000000);"
    "INSERT INTO charges(at_us, kind, reservation_id, org, team, user, gco2e)"
    " VALUES(1736942401000000, 'settle', 'r00000000000000a2', 'acme', 'infra', 'ana', 3000000);";

Test(store_sqlite, a_file_of_the_previous_schema_becomes_an_event_log_with_no_index_on_events) {
    char path[600];
    temp_db(path, sizeof path);
    exec_sql(path, old_schema);
    fake_clock clk = {T0 + 2 * S};
    dsc_ledger *l = open_at(path, &clk, 0);
    dsc_budget_state st[2];
    dsc_budget_state all = find(st, preview(l, st, 2), "*");
    cr_assert_eq(all.held, 7 * M, "the held row is a hold again");
    cr_assert_eq(all.used, 3 * M, "the charge is counted");
    dsc_error err;
    dsc_settle_out kind;
    dsc_amounts a = amt(DSC_METRIC_GCO2E, 3 * M);
    cr_assert_eq(
        settle_as(l, (dsc_settle_req){"r00000000000000a2", &a, NULL, NULL}, &kind, NULL, &err),
        DSC_OK);
    cr_assert_eq(kind.kind, DSC_SETTLE_REPEATED, "the finished row was reloaded");
    cr_assert_eq(
        settle_as(l, (dsc_settle_req){"r00000000000000a1", &a, NULL, NULL}, &kind, NULL, &err),
        DSC_OK);
    cr_assert_eq(kind.kind, DSC_SETTLE_RESERVED);
    dsc_ledger_free(l);
    cr_assert_eq(query_int(path,
                           "SELECT count(*) FROM sqlite_master WHERE type = 'table'"
                           " AND name IN ('reservations', 'charges', 'decisions', 'budgets')"),
                 0, "the old tables are views now");
    cr_assert_eq(query_int(path, "SELECT count(*) FROM sqlite_master WHERE type = 'index'"
                                 " AND tbl_name = 'events'"),
                 0, "nothing but the seq is indexed on the hot path");
    cr_assert_eq(query_int(path, "SELECT value FROM meta WHERE key = 'schema_version'"), 5);
    cr_assert_eq(query_int(path, "SELECT count(*) FROM reservations WHERE state = 'settled'"), 2);
    cr_assert_eq(query_int(path, "SELECT count(*) FROM charges WHERE kind = 'settle'"), 2);
}

static dsc_decision_record allow_decision(const char *id) {
    return (dsc_decision_record){.decision_id = id,
                                 .subject = ana,
                                 .purpose = "code-review",
                                 .provider = "openai",
                                 .model = "gpt-4o",
                                 .est_gco2e = 5 * M,
                                 .outcome = "allow",
                                 .policy = "budgets",
                                 .policy_version = "v1",
                                 .reason = "within budget",
                                 .reservation_id = "overwritten"};
}

Test(store_sqlite, reserve_journal_commits_hold_and_decision_in_one_record_and_calls_done_once) {
    char path[600];
    temp_db(path, sizeof path);
    fake_clock clk = {T0};
    dsc_ledger *l = open_at(path, &clk, 0);
    dsc_error err;
    cr_assert_eq(dsc_ledger_budget(l, &(dsc_budget_req){"*", DSC_METRIC_GCO2E, "day", 100, false},
                                   NULL, NULL, &err),
                 DSC_OK);
    dsc_ledger_stats before, after;
    dsc_ledger_stats_get(l, &before);
    completion c = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0, DSC_INTERNAL};
    char rid[DSC_RESERVATION_ID_MAX];
    dsc_amounts a = amt(DSC_METRIC_GCO2E, 5 * M);
    dsc_decision_record d = allow_decision("d1");
    cr_assert_eq(reserve_as(l, (dsc_reserve_req){&ana, &a, 60, "q1", &d}, rid, NULL, 0, NULL,
                            &(dsc_done){on_done, &c}, &err),
                 DSC_OK, "%s", err.message);
    dsc_budget_state st[2];
    cr_assert_eq(find(st, preview(l, st, 2), "*").held, 5 * M, "held before the commit");
    wait_calls(&c, 1);
    cr_assert_eq(c.st, DSC_OK);
    /* the batch is counted just after the completions run */
    for (int i = 0; i < 2000; i++) {
        dsc_ledger_stats_get(l, &after);
        if (after.store_batches > before.store_batches) break;
        nanosleep(&(struct timespec){0, 1000000}, NULL);
    }
    cr_assert_eq(after.store_records - before.store_records, 1, "one record for both rows");
    cr_assert_eq(after.decisions - before.decisions, 1);
    char sql[300];
    snprintf(sql, sizeof sql,
             "SELECT count(*) FROM decisions d JOIN reservations r ON r.id = d.reservation_id"
             " WHERE d.decision_id = 'd1' AND r.id = '%s' AND r.state = 'held'"
             " AND d.at_us = r.created_us AND d.reason = 'within budget' AND d.user = 'ana'",
             rid);
    cr_assert_eq(query_int(path, sql), 1, "the decision names its hold");
    /* the same request again: the same hold, the new decision journaled alone */
    char again[DSC_RESERVATION_ID_MAX];
    d.decision_id = "d2";
    cr_assert_eq(reserve_as(l, (dsc_reserve_req){&ana, &a, 60, "q1", &d}, again, NULL, 0, NULL,
                            &(dsc_done){on_done, &c}, &err),
                 DSC_OK, "%s", err.message);
    cr_assert_str_eq(again, rid);
    wait_calls(&c, 2);
    snprintf(sql, sizeof sql,
             "SELECT count(*) FROM decisions WHERE decision_id = 'd2' AND reservation_id = '%s'",
             rid);
    cr_assert_eq(query_int(path, sql), 1);
    cr_assert_eq(query_int(path, "SELECT count(*) FROM reservations"), 1);
    cr_assert_eq(find(st, preview(l, st, 2), "*").held, 5 * M, "nothing more held");
    dsc_ledger_free(l);
    cr_assert_eq(c.calls, 2, "done ran once per call");
}

Test(store_sqlite, reserve_journal_refused_or_invalid_holds_and_journals_nothing) {
    char path[600];
    temp_db(path, sizeof path);
    dsc_ledger *l = open_at(path, NULL, 0);
    dsc_error err;
    cr_assert_eq(dsc_ledger_budget(l, &(dsc_budget_req){"*", DSC_METRIC_GCO2E, "day", 10, false},
                                   NULL, NULL, &err),
                 DSC_OK);
    completion c = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0, DSC_INTERNAL};
    char rid[DSC_RESERVATION_ID_MAX];
    dsc_amounts big = amt(DSC_METRIC_GCO2E, 11 * M);
    dsc_decision_record d = allow_decision("d1");
    cr_assert_eq(reserve_as(l, (dsc_reserve_req){&ana, &big, 60, NULL, &d}, rid, NULL, 0, NULL,
                            &(dsc_done){on_done, &c}, &err),
                 DSC_BUDGET_EXCEEDED);
    char reason[600];
    memset(reason, 'x', sizeof reason - 1);
    reason[sizeof reason - 1] = '\0';
    d.reason = reason;
    dsc_amounts a = amt(DSC_METRIC_GCO2E, M);
    cr_assert_eq(reserve_as(l, (dsc_reserve_req){&ana, &a, 60, NULL, &d}, rid, NULL, 0, NULL,
                            &(dsc_done){on_done, &c}, &err),
                 DSC_BAD_REQUEST);
    cr_assert(strstr(err.message, "'reason'"), "%s", err.message);
    dsc_budget_state st[2];
    cr_assert_eq(find(st, preview(l, st, 2), "*").held, 0, "nothing held");
    dsc_ledger_stats stats;
    dsc_ledger_stats_get(l, &stats);
    cr_assert_eq(stats.decisions, 0);
    dsc_ledger_free(l);
    cr_assert_eq(c.calls, 0, "done is never called for an error");
    cr_assert_eq(query_int(path, "SELECT count(*) FROM decisions"), 0);
    cr_assert_eq(query_int(path, "SELECT count(*) FROM reservations"), 0);
}

Test(store_sqlite, reserve_journal_on_a_full_disk_reports_through_done_and_releases_the_hold) {
    char path[600];
    temp_db(path, sizeof path);
    dsc_ledger *l = open_at(path, NULL, 0);
    dsc_error err;
    cr_assert_eq(dsc_ledger_budget(l, &(dsc_budget_req){"*", DSC_METRIC_GCO2E, "day", 100, false},
                                   NULL, NULL, &err),
                 DSC_OK);
    cr_assert_eq(dsc__ledger_store_exec(l, "PRAGMA max_page_count = 1", &err), DSC_OK);
    completion c = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0, DSC_INTERNAL};
    char rid[DSC_RESERVATION_ID_MAX];
    dsc_amounts a = amt(DSC_METRIC_GCO2E, M / 100);
    dsc_decision_record d = allow_decision("d-full");
    int ok = 0, failed = 0;
    for (int i = 0; i < 400 && !failed; i++) {
        cr_assert_eq(reserve_as(l, (dsc_reserve_req){&ana, &a, 60, NULL, &d}, rid, NULL, 0, NULL,
                                &(dsc_done){on_done, &c}, &err),
                     DSC_OK);
        wait_calls(&c, i + 1);
        if (c.st == DSC_OK)
            ok++;
        else
            failed = c.st;
        struct timespec ts = {0, 2 * 1000000L}; /* let the writer try a commit */
        nanosleep(&ts, NULL);
    }
    cr_assert_eq(failed, DSC_STORE_UNAVAILABLE, "the file never filled up");
    cr_assert_eq(c.calls, ok + 1, "done runs once per reserve");
    dsc_budget_state st[2];
    cr_assert_eq(find(st, preview(l, st, 2), "*").held, ok * (M / 100),
                 "the failed record holds nothing; the acknowledged ones stay");
    dsc_ledger_free(l);
    cr_assert_eq(query_int(path, "SELECT count(*) FROM decisions"),
                 query_int(path, "SELECT count(*) FROM reservations"), "decisions = holds");
}

/* The reservations and decisions tables as a store made before keys had them. */
static const char old_tables[] =
    "CREATE TABLE reservations(id TEXT PRIMARY KEY, request_id TEXT, org TEXT, team TEXT,"
    " user TEXT, key TEXT, created_us INTEGER, expires_us INTEGER, state TEXT NOT NULL,"
    " finished_us INTEGER, held_energy_wh INTEGER NOT NULL DEFAULT 0, held_gco2e INTEGER NOT"
    " NULL DEFAULT 0, held_water_ml INTEGER NOT NULL DEFAULT 0, held_pe_mj INTEGER NOT NULL"
    " DEFAULT 0, held_cost INTEGER NOT NULL DEFAULT 0, held_tokens INTEGER NOT NULL DEFAULT 0,"
    " held_requests INTEGER NOT NULL DEFAULT 0, charged_energy_wh INTEGER NOT NULL DEFAULT 0,"
    " charged_gco2e INTEGER NOT NULL DEFAULT 0, charged_water_ml INTEGER NOT NULL DEFAULT 0,"
    " charged_pe_mj INTEGER NOT NULL DEFAULT 0, charged_cost INTEGER NOT NULL DEFAULT 0,"
    " charged_tokens INTEGER NOT NULL DEFAULT 0, charged_requests INTEGER NOT NULL DEFAULT 0)"
    " WITHOUT ROWID;"
    "INSERT INTO reservations(id, org, team, created_us, expires_us, state, held_requests)"
    " VALUES('r00000000000000aa', 'acme', 'infra', 1, 9000000000000000, 'held', 1000000);"
    "CREATE TABLE decisions(seq INTEGER PRIMARY KEY, decision_id TEXT, request_id TEXT,"
    " at_us INTEGER NOT NULL, org TEXT, team TEXT, user TEXT, key TEXT, purpose TEXT,"
    " provider TEXT, model TEXT, input_tokens INTEGER, output_tokens INTEGER,"
    " est_energy_wh INTEGER, est_gco2e INTEGER, est_water_ml INTEGER, outcome TEXT,"
    " policy TEXT, policy_version TEXT, reason TEXT, reservation_id TEXT);";

Test(store_sqlite, a_store_made_before_keys_opens_keeps_its_holds_and_journals_the_new_fields) {
    char path[600];
    temp_db(path, sizeof path);
    sqlite3 *db;
    cr_assert_eq(sqlite3_open(path, &db), SQLITE_OK);
    cr_assert_eq(sqlite3_exec(db, old_tables, NULL, NULL, NULL), SQLITE_OK, "%s",
                 sqlite3_errmsg(db));
    sqlite3_close(db);
    dsc_ledger *l = open_at(path, NULL, 0);
    dsc_hold_info h;
    cr_assert_eq(dsc_ledger_hold_get(l, "r00000000000000aa", &h), DSC_OK);
    cr_assert_str_eq(h.owner, "");
    cr_assert_str_eq(h.model, "", "made before holds kept their model");
    dsc_decision_record d = {.decision_id = "d1",
                             .subject = ana,
                             .outcome = "allow",
                             .key_id = "k_00000000000000ff",
                             .zone = "FRA",
                             .purpose_class = "productive",
                             .verdicts = "[{\"policy\":\"p\",\"shadow\":true}]",
                             .tags = "{\"ticket\":\"T-1\"}"};
    dsc_error err;
    cr_assert_eq(dsc_ledger_record(l, &d, NULL, &err), DSC_OK, "%s", err.message);
    char id[DSC_RESERVATION_ID_MAX];
    dsc_amounts one = amt(DSC_METRIC_REQUESTS, DSC_MICRO);
    completion done = {.mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER};
    cr_assert_eq(reserve_as(l, (dsc_reserve_req){&ana, &one, 60, NULL, &d}, id, NULL, 0, NULL,
                            &(dsc_done){on_done, &done}, &err),
                 DSC_OK, "%s", err.message);
    wait_calls(&done, 1);
    cr_assert_eq(done.st, DSC_OK);
    dsc_ledger_free(l);
    cr_assert_eq(query_int(path,
                           "SELECT count(*) FROM decisions WHERE key_id = 'k_00000000000000ff'"
                           " AND zone = 'FRA' AND purpose_class = 'productive' AND"
                           " json_extract(tags, '$.ticket') = 'T-1' AND"
                           " json_extract(verdicts, '$[0].shadow') = 1"),
                 2);
    l = open_at(path, NULL, 0);
    cr_assert_eq(dsc_ledger_hold_get(l, id, &h), DSC_OK);
    cr_assert_str_eq(h.owner, "k_00000000000000ff");
    cr_assert_str_eq(h.zone, "FRA");
    dsc_ledger_free(l);
}

Test(store_sqlite, a_hold_reloaded_after_a_restart_keeps_its_owner_and_what_it_was_for) {
    char path[600];
    temp_db(path, sizeof path);
    dsc_ledger *l = open_at(path, NULL, 0);
    dsc_decision_record d = {.decision_id = "d1",
                             .subject = ana,
                             .outcome = "allow",
                             .key_id = "k_1",
                             .provider = "mistral",
                             .model = "mistral-large",
                             .zone = "SE",
                             .purpose = "search"};
    dsc_error err;
    char id[DSC_RESERVATION_ID_MAX];
    dsc_amounts one = amt(DSC_METRIC_REQUESTS, DSC_MICRO);
    cr_assert_eq(
        reserve_as(l, (dsc_reserve_req){&ana, &one, 600, NULL, &d}, id, NULL, 0, NULL, NULL, &err),
        DSC_OK, "%s", err.message);
    dsc_ledger_free(l);
    l = open_at(path, NULL, 0);
    dsc_hold_info h;
    cr_assert_eq(dsc_ledger_hold_get(l, id, &h), DSC_OK);
    cr_assert(h.open);
    cr_assert_str_eq(h.owner, "k_1");
    cr_assert_str_eq(h.provider, "mistral");
    cr_assert_str_eq(h.model, "mistral-large");
    cr_assert_str_eq(h.zone, "SE");
    cr_assert_str_eq(h.purpose, "search");
    cr_assert_str_eq(h.user, "ana");
    cr_assert_eq(settle_as(l, (dsc_settle_req){id, &one, NULL, "k_2"}, NULL, NULL, &err),
                 DSC_FORBIDDEN, "a reloaded hold is still its owner's");
    cr_assert_eq(settle_as(l, (dsc_settle_req){id, &one, NULL, "k_1"}, NULL, NULL, &err), DSC_OK,
                 "%s", err.message);
    dsc_ledger_free(l);
}

Test(store_sqlite, a_forgotten_reservation_is_recalled_off_the_caller_and_still_owner_checked) {
    char path[600];
    temp_db(path, sizeof path);
    fake_clock clk = {T0};
    dsc_ledger *l = open_at(path, &clk, 1); /* remember finished reservations for 1 s */
    dsc_error err;
    dsc_decision_record d = {.decision_id = "d1", .subject = ana, .key_id = "k_1", .model = "m"};
    char rid[DSC_RESERVATION_ID_MAX], other[DSC_RESERVATION_ID_MAX];
    dsc_amounts a = amt(DSC_METRIC_GCO2E, 5 * M);
    cr_assert_eq(
        reserve_as(l, (dsc_reserve_req){&ana, &a, 60, NULL, &d}, rid, NULL, 0, NULL, NULL, &err),
        DSC_OK);
    cr_assert_eq(
        reserve_as(l, (dsc_reserve_req){&ana, &a, 60, NULL, &d}, other, NULL, 0, NULL, NULL, &err),
        DSC_OK);
    cr_assert_eq(settle_as(l, (dsc_settle_req){rid, &a, NULL, "k_1"}, NULL, NULL, &err), DSC_OK);
    cr_assert_eq(dsc_ledger_cancel(l, &(dsc_cancel_req){other, "k_1"}, NULL, &err), DSC_OK);
    clk.now += 10 * S;
    dsc_ledger_tick(l);
    dsc_hold_info h;
    cr_assert_eq(dsc_ledger_hold_get(l, rid, &h), DSC_UNKNOWN_RESERVATION, "forgotten by memory");
    /* with a done: recalled on the ledger's reader thread, done runs there once */
    completion done = {.mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER};
    dsc_settle_out kind = {DSC_SETTLE_RESERVED};
    cr_assert_eq(settle_as(l, (dsc_settle_req){rid, &a, NULL, "k_2"}, &kind,
                           &(dsc_done){on_done, &done}, &err),
                 DSC_OK, "handed to the reader: the outcome comes through done");
    wait_calls(&done, 1);
    cr_assert_eq(done.st, DSC_FORBIDDEN, "recalled from the store with its owner");
    cr_assert_eq(dsc_ledger_hold_get(l, rid, &h), DSC_OK, "recalled into memory");
    cr_assert_str_eq(h.owner, "k_1");
    cr_assert_str_eq(h.model, "m");
    cr_assert_eq(settle_as(l, (dsc_settle_req){rid, &a, NULL, "k_1"}, &kind, NULL, &err), DSC_OK);
    cr_assert_eq(kind.kind, DSC_SETTLE_REPEATED);
    /* a cancel of a forgotten one, with a done */
    cr_assert_eq(
        dsc_ledger_cancel(l, &(dsc_cancel_req){other, "k_2"}, &(dsc_done){on_done, &done}, &err),
        DSC_OK);
    wait_calls(&done, 2);
    cr_assert_eq(done.st, DSC_FORBIDDEN);
    cr_assert_eq(dsc_ledger_cancel(l, &(dsc_cancel_req){other, "k_1"}, NULL, &err), DSC_OK);
    /* an id of the ledger's shape the store never had stays unknown */
    cr_assert_eq(
        settle_as(l, (dsc_settle_req){"r000000000000ffffffffffffffffffffffff", &a, NULL, NULL},
                  NULL, &(dsc_done){on_done, &done}, &err),
        DSC_OK);
    wait_calls(&done, 3);
    cr_assert_eq(done.st, DSC_UNKNOWN_RESERVATION);
    dsc_ledger_free(l);
}

Test(store_sqlite, a_decision_journals_the_estimates_warnings_by_name) {
    char path[600];
    temp_db(path, sizeof path);
    dsc_ledger *l = open_at(path, NULL, 0);
    dsc_decision_record d = {.decision_id = "d-warned",
                             .subject = ana,
                             .outcome = "allow",
                             .warnings = DSC_WARN_MODEL_UNLISTED | DSC_WARN_FALLBACK_CLASS};
    dsc_error err;
    cr_assert_eq(dsc_ledger_record(l, &d, NULL, &err), DSC_OK, "%s", err.message);
    d.decision_id = "d-plain";
    d.warnings = 0;
    cr_assert_eq(dsc_ledger_record(l, &d, NULL, &err), DSC_OK, "%s", err.message);
    dsc_ledger_free(l);
    cr_assert_eq(query_int(path, "SELECT json_array_length(warnings) FROM decisions"
                                 " WHERE decision_id = 'd-warned'"),
                 2);
    cr_assert_eq(query_int(path, "SELECT count(*) FROM decisions, json_each(decisions.warnings)"
                                 " WHERE decision_id = 'd-warned' AND json_each.value IN"
                                 " ('model-not-in-catalogue', 'model-fallback-class')"),
                 2);
    cr_assert_eq(query_int(path, "SELECT count(*) FROM decisions"
                                 " WHERE decision_id = 'd-plain' AND warnings IS NULL"),
                 1);
}

/* tests/data/store-ed891d2.sql is the sqlite3 .dump of a store file written by the
 * ledger at commit ed891d2 (before keys, owners and what a hold was for), through its
 * API with the clock at T0: budget team:* gco2e month 100, reservation
 * r00062bbd6abf5000 (request "req-held") holding 5 g for acme/infra/ana with a ttl of
 * 3600 s, r00062bbd6abf5001 reserved and settled at 3 g, and decision d-old. The test
 * rebuilds the file from it. */
Test(store_sqlite, a_store_written_at_ed891d2_migrates_on_open_and_keeps_its_holds_and_charges) {
    char path[600], dump[600];
    temp_db(path, sizeof path);
    snprintf(dump, sizeof dump, "%s/tests/data/store-ed891d2.sql", DISCERN_SOURCE_DIR);
    FILE *f = fopen(dump, "r");
    cr_assert(f, "%s", dump);
    static char sql[1 << 16];
    size_t n = fread(sql, 1, sizeof sql - 1, f);
    fclose(f);
    cr_assert(n > 0 && n < sizeof sql - 1, "%s: %zu bytes", dump, n);
    sql[n] = '\0';
    exec_sql(path, sql);
    fake_clock clk = {T0 + 60 * S};
    dsc_ledger *l = open_at(path, &clk, 0);
    dsc_budget_state st[4];
    dsc_budget_state b = find(st, preview(l, st, 4), "team:*");
    cr_assert_eq(b.used, 3 * M, "the settled charge is replayed");
    cr_assert_eq(b.held, 5 * M, "the open hold is reloaded");
    dsc_hold_info h;
    cr_assert_eq(dsc_ledger_hold_get(l, "r00062bbd6abf5000", &h), DSC_OK);
    cr_assert(h.open);
    cr_assert_str_eq(h.owner, "", "no owner before keys");
    cr_assert_str_eq(h.model, "gpt-4o", "what the hold was for comes from its check's decision");
    dsc_error err;
    dsc_settle_out out;
    dsc_amounts two = amt(DSC_METRIC_GCO2E, 2 * M);
    cr_assert_eq(
        settle_as(l, (dsc_settle_req){"r00062bbd6abf5001", &two, NULL, NULL}, &out, NULL, &err),
        DSC_OK, "%s", err.message);
    cr_assert_eq(out.kind, DSC_SETTLE_REPEATED);
    cr_assert_eq(
        settle_as(l, (dsc_settle_req){"r00062bbd6abf5000", &two, NULL, NULL}, &out, NULL, &err),
        DSC_OK, "%s", err.message);
    cr_assert_eq(out.kind, DSC_SETTLE_RESERVED);
    dsc_decision_record d = {.decision_id = "d-new",
                             .subject = ana,
                             .outcome = "allow",
                             .key_id = "k_1",
                             .model = "gpt-4o",
                             .warnings = DSC_WARN_MODEL_UNLISTED};
    cr_assert_eq(dsc_ledger_record(l, &d, NULL, &err), DSC_OK, "%s", err.message);
    dsc_ledger_free(l);
    cr_assert_eq(query_int(path, "SELECT count(*) FROM pragma_table_info('reservations') WHERE"
                                 " name IN ('owner', 'provider', 'model', 'zone', 'purpose')"),
                 5);
    cr_assert_eq(query_int(path, "SELECT count(*) FROM decisions WHERE decision_id = 'd-old'"), 1);
    cr_assert_eq(query_int(path, "SELECT count(*) FROM decisions WHERE decision_id = 'd-new'"
                                 " AND key_id = 'k_1' AND warnings IS NOT NULL"),
                 1);
    l = open_at(path, &clk, 0);
    b = find(st, preview(l, st, 4), "team:*");
    cr_assert_eq(b.used, 5 * M, "3 g settled before, 2 g after the migration");
    cr_assert_eq(b.held, 0);
    dsc_ledger_free(l);
}

/* tests/data/store-f80df70.sql is the sqlite3 .dump of a store file written by
 * discernd at commit f80df70 (the last schema before the event log) through the CLI:
 * budgets team:* gco2e month 100 and org:acme/user:ana energy_wh rolling:1h 50 (and
 * user:tmp set then deleted), checks for acme/infra/ana (req-held, still held;
 * req-settle, settled), acme/infra/bo (req-cancel, cancelled), acme/web/cy
 * (req-expire: expired with ttl 1 s, charged, then settled late; req-noreserve and
 * req-after, decisions only), and one API key. */
#define F0 1796164391453206LL /* req-held's created_us */
#define HELD_RID "r619a1c330d65b71624450305ecc33ecf5897"
#define SETTLED_RID "r619a1c330d660347b7780045ae056cc84972"
#define CANCELLED_RID "r619a1c330d67d453b4576def6433d6b552c5"
#define LATE_RID "r619a1c330d687614e44bb5471a3392524b2d"

static void load_dump(const char *path, const char *name) {
    char dump[600];
    snprintf(dump, sizeof dump, "%s/tests/data/%s", DISCERN_SOURCE_DIR, name);
    FILE *f = fopen(dump, "r");
    cr_assert(f, "%s", dump);
    static char sql[1 << 16];
    size_t n = fread(sql, 1, sizeof sql - 1, f);
    fclose(f);
    cr_assert(n > 0 && n < sizeof sql - 1, "%s: %zu bytes", dump, n);
    sql[n] = '\0';
    exec_sql(path, sql);
}

static dsc_settle_kind settle_kind_of(dsc_ledger *l, const char *rid) {
    dsc_error err;
    dsc_settle_out out;
    dsc_amounts one = amt(DSC_METRIC_GCO2E, M);
    cr_assert_eq(settle_as(l, (dsc_settle_req){rid, &one, NULL, NULL}, &out, NULL, &err), DSC_OK,
                 "%s: %s", rid, err.message);
    return out.kind;
}

Test(store_sqlite,
     a_store_written_at_f80df70_migrates_keeping_holds_charges_decisions_budgets_keys) {
    char path[600];
    temp_db(path, sizeof path);
    load_dump(path, "store-f80df70.sql");
    fake_clock clk = {F0 + 60 * S};
    dsc_ledger *l = open_at(path, &clk, 0);
    dsc_budget_state st[4];
    dsc_budget_state b = find(st, preview(l, st, 4), "team:*");
    cr_assert_eq(b.used, 211714, "the settle is replayed");
    cr_assert_eq(b.held, 523739, "the open hold is reloaded");
    dsc_hold_info h;
    cr_assert_eq(dsc_ledger_hold_get(l, HELD_RID, &h), DSC_OK);
    cr_assert(h.open);
    cr_assert_str_eq(h.owner, "admin");
    cr_assert_str_eq(h.model, "gpt-4o");
    char id[DSC_RESERVATION_ID_MAX];
    dsc_amounts one = amt(DSC_METRIC_GCO2E, M);
    dsc_error err;
    cr_assert_eq(reserve_as(l, (dsc_reserve_req){&ana, &one, 60, "req-settle", NULL}, id, NULL, 0,
                            NULL, NULL, &err),
                 DSC_OK, "%s", err.message);
    cr_assert_str_eq(id, SETTLED_RID, "a finished hold answers its repeated check");
    cr_assert_eq(settle_kind_of(l, SETTLED_RID), DSC_SETTLE_REPEATED);
    cr_assert_eq(settle_kind_of(l, LATE_RID), DSC_SETTLE_REPEATED);
    cr_assert_eq(settle_kind_of(l, HELD_RID), DSC_SETTLE_RESERVED);
    dsc_ledger_free(l);
    cr_assert_eq(query_int(path, "SELECT count(*) FROM budgets"), 2, "user:tmp stays deleted");
    cr_assert_eq(query_int(path, "SELECT count(*) FROM keys"), 1);
    cr_assert_eq(query_int(path, "SELECT count(*) FROM admin_journal"), 5);
    cr_assert_eq(query_int(path, "SELECT count(*) FROM decisions"), 6);
    cr_assert_eq(query_int(path, "SELECT count(*) FROM decisions WHERE reservation_id = '" LATE_RID
                                 "' AND json_extract(tags, '$.ticket') IS NULL"),
                 1);
    cr_assert_eq(
        query_int(path,
                  "SELECT count(*) FROM decisions WHERE"
                  " json_extract(tags, '$.ticket') = 'T-1' AND reservation_id = '" SETTLED_RID "'"),
        1);
    cr_assert_eq(query_int(path, "SELECT count(*) FROM reservations"), 4);
    cr_assert_eq(query_int(path, "SELECT count(*) FROM reservations WHERE id = '" CANCELLED_RID
                                 "' AND state = 'cancelled' AND charged_gco2e = 0"),
                 1);
    cr_assert_eq(query_int(path, "SELECT charged_gco2e FROM reservations WHERE id = '" LATE_RID
                                 "' AND state = 'settled'"),
                 107706, "expire 523739, then late -416033");
    cr_assert_eq(query_int(path, "SELECT sum(gco2e) FROM charges WHERE kind = 'settle'"),
                 211714 + 1 * M);
    l = open_at(path, &clk, 0);
    b = find(st, preview(l, st, 4), "team:*");
    cr_assert_eq(b.used, 211714 + 1 * M, "charged before and after the migration");
    cr_assert_eq(b.held, 0);
    dsc_ledger_free(l);
}

/* --- checkpoints and hourly rollups ------------------------------------------------- */

static const char *const rolled_windows[] = {"month", "day", "rolling:30h", "rolling:1h",
                                             "rate:1000/1h"};
enum { N_ROLLED = sizeof rolled_windows / sizeof *rolled_windows };
static const dsc_subject rolled_subjects[] = {{.org = "acme", .team = "infra", .user = "ana"},
                                              {.org = "acme", .team = "web", .user = "bob"},
                                              {.org = "beta", .team = "infra", .user = "cy"}};

static void budget_for(dsc_ledger *l, const char *sel, dsc_metric m, const char *window) {
    dsc_error err;
    cr_assert_eq(
        dsc_ledger_budget(l, &(dsc_budget_req){sel, m, window, 1e9, false}, NULL, NULL, &err),
        DSC_OK, "%s %s: %s", sel, window, err.message);
}

/* The used and held of every budget of subject s's preview, in preview order. */
static size_t usage_of(dsc_ledger *l, const dsc_subject *s, dsc_budget_state *st, size_t max) {
    size_t n = 0;
    cr_assert_eq(dsc_ledger_preview(l, s, NULL, st, max, &n, NULL), DSC_OK);
    cr_assert_leq(n, max);
    return n;
}

/* Fill a store with 6000 settles over five hours (far more than a checkpoint's worth,
 * every hour rolled up), charging gco2e and energy_wh alike, with budgets on gco2e
 * counting them live; one hold stays open throughout, one finishes at the end. */
static dsc_ledger *open_retaining(const char *path, fake_clock *clk, int64_t retention_s) {
    dsc_ledger_config cfg = {.store_path = path,
                             .now_us = fake_now,
                             .clock_ud = clk,
                             .journal_retention_s = retention_s};
    dsc_error err;
    dsc_ledger *l = dsc_ledger_new(&cfg, &err);
    cr_assert(l, "%s", err.message);
    return l;
}

static dsc_ledger *fill_retaining(const char *path, fake_clock *clk, int windows,
                                  int64_t retention_s, char held[DSC_RESERVATION_ID_MAX],
                                  char settled[DSC_RESERVATION_ID_MAX]) {
    dsc_ledger *l = open_retaining(path, clk, retention_s);
    for (int w = 0; w < windows; w++) {
        budget_for(l, "team:*", DSC_METRIC_GCO2E, rolled_windows[w]);
        budget_for(l, "user:ana", DSC_METRIC_GCO2E, rolled_windows[w]);
    }
    dsc_error err;
    dsc_amounts hold = amt(DSC_METRIC_GCO2E, 2 * M);
    cr_assert_eq(reserve_as(l, (dsc_reserve_req){&ana, &hold, 7 * 86400, "req-open", NULL}, held,
                            NULL, 0, NULL, NULL, &err),
                 DSC_OK, "%s", err.message);
    for (int i = 0; i < 6000; i++) {
        clk->now += 3 * S;
        dsc_amounts a = amt(DSC_METRIC_GCO2E, (i % 7 + 1) * M);
        a.v[DSC_METRIC_ENERGY_WH] = a.v[DSC_METRIC_GCO2E];
        char rid[32];
        snprintf(rid, sizeof rid, "u-%d", i);
        cr_assert_eq(settle_as(l, (dsc_settle_req){rid, &a, &rolled_subjects[i % 3], NULL}, NULL,
                               NULL, &err),
                     DSC_OK, "%s", err.message);
    }
    cr_assert_eq(reserve_as(l, (dsc_reserve_req){&ana, &hold, 600, "req-done", NULL}, settled, NULL,
                            0, NULL, NULL, &err),
                 DSC_OK, "%s", err.message);
    dsc_amounts both = hold;
    both.v[DSC_METRIC_ENERGY_WH] = both.v[DSC_METRIC_GCO2E];
    cr_assert_eq(settle_as(l, (dsc_settle_req){settled, &both, NULL, NULL}, NULL, NULL, &err),
                 DSC_OK);
    clk->now += 20 * 60 * S; /* the newest hour is partial: its charges are read one by one */
    return l;
}

static dsc_ledger *fill_hours(const char *path, fake_clock *clk, int windows,
                              char held[DSC_RESERVATION_ID_MAX],
                              char settled[DSC_RESERVATION_ID_MAX]) {
    return fill_retaining(path, clk, windows, 0, held, settled);
}

Test(store_sqlite, a_new_budget_reads_rolled_up_hours_and_counts_exactly_what_every_charge_counts) {
    char path[600], held[DSC_RESERVATION_ID_MAX], settled[DSC_RESERVATION_ID_MAX];
    temp_db(path, sizeof path);
    fake_clock clk = {T0 + 1234 * S}; /* not on the hour */
    dsc_ledger *l = fill_hours(path, &clk, N_ROLLED, held, settled);
    cr_assert_gt(query_int(path, "SELECT count(*) FROM checkpoints"), 1);
    cr_assert_gt(query_int(path, "SELECT count(*) FROM rollups"), 3 * 5);
    for (int w = 0; w < N_ROLLED; w++) { /* the same budgets on energy_wh, created now */
        budget_for(l, "team:*", DSC_METRIC_ENERGY_WH, rolled_windows[w]);
        budget_for(l, "user:ana", DSC_METRIC_ENERGY_WH, rolled_windows[w]);
    }
    for (int i = 0; i < 3; i++) {
        dsc_budget_state st[64];
        size_t n = usage_of(l, &rolled_subjects[i], st, 64), compared = 0;
        for (size_t a = 0; a < n; a++)
            for (size_t b = 0; b < n; b++)
                if (st[a].metric == DSC_METRIC_GCO2E && st[b].metric == DSC_METRIC_ENERGY_WH &&
                    !strcmp(st[a].selector, st[b].selector) &&
                    !strcmp(st[a].window, st[b].window)) {
                    cr_assert_eq(st[b].used, st[a].used, "%s %s: %lld from the store, %lld live",
                                 st[a].selector, st[a].window, (long long)st[b].used,
                                 (long long)st[a].used);
                    cr_assert_gt(st[a].used, 0, "%s %s counts", st[a].selector, st[a].window);
                    compared++;
                }
        cr_assert_eq(compared * 2, n);
    }
    dsc_ledger_free(l);
}

/* The rate window of rolled_windows is last. */
Test(store_sqlite, a_restart_reads_the_checkpoint_and_the_tail_and_keeps_counters_and_holds) {
    char path[600], held[DSC_RESERVATION_ID_MAX], settled[DSC_RESERVATION_ID_MAX];
    temp_db(path, sizeof path);
    fake_clock clk = {T0 + 1234 * S};
    /* no rate window: its reach (a million hours) would read every charge one by one */
    dsc_ledger *l = fill_hours(path, &clk, N_ROLLED - 1, held, settled);
    dsc_budget_state before[3][32], after[32];
    size_t n[3];
    for (int i = 0; i < 3; i++)
        n[i] = usage_of(l, &rolled_subjects[i], before[i], 32);
    dsc_ledger_free(l);
    cr_assert_gt(query_int(path, "SELECT min(held_from) FROM checkpoints"), 0);
    cr_assert_eq(query_int(path, "SELECT max(held_from) FROM checkpoints"),
                 query_int(path, "SELECT min(seq) FROM events WHERE type = 1"),
                 "every checkpoint knows the open hold from the start");
    l = open_at(path, &clk, 0);
    for (int i = 0; i < 3; i++) {
        cr_assert_eq(usage_of(l, &rolled_subjects[i], after, 32), n[i]);
        for (size_t k = 0; k < n[i]; k++)
            cr_assert(after[k].used == before[i][k].used && after[k].held == before[i][k].held,
                      "%s %s %s: used %lld held %lld after, %lld %lld before", after[k].selector,
                      dsc_metric_name(after[k].metric), after[k].window, (long long)after[k].used,
                      (long long)after[k].held, (long long)before[i][k].used,
                      (long long)before[i][k].held);
    }
    dsc_hold_info h;
    cr_assert_eq(dsc_ledger_hold_get(l, held, &h), DSC_OK, "the hold from before every checkpoint");
    cr_assert(h.open);
    cr_assert_eq(settle_kind_of(l, settled), DSC_SETTLE_REPEATED, "the finished one is known");
    cr_assert_eq(settle_kind_of(l, held), DSC_SETTLE_RESERVED);
    dsc_ledger_free(l);
}

/* --- a new budget over a whole level, from rollups summed per value ---------------- */

#define FEB1 (1738368000LL * S) /* 2025-02-01T00:00:00Z */

static const char *const level_windows[] = {"month", "day", "rolling:30h", "rolling:30d"};
static const char *const level_selectors[] = {"team:*", "org:*", "user:*", "org:acme/team:*"};
enum { N_LEVEL_WINDOWS = 4, N_LEVEL_SELECTORS = 4 };
static const dsc_subject level_subjects[] = {{.org = "acme", .team = "infra", .user = "ana"},
                                             {.org = "acme", .team = "web", .user = "bob"},
                                             {.org = "beta", .team = "infra", .user = "cy"},
                                             {.org = "beta", .team = "ops", .user = "dee"}};

static void level_budgets(dsc_ledger *l, dsc_metric m) {
    for (int s = 0; s < N_LEVEL_SELECTORS; s++)
        for (int w = 0; w < N_LEVEL_WINDOWS; w++)
            budget_for(l, level_selectors[s], m, level_windows[w]);
}

/* n unreserved settles 3 s apart from the clock on, charging gco2e and energy_wh
 * alike; dee (beta/ops) only before February. */
static void settle_levels(dsc_ledger *l, fake_clock *clk, int n) {
    dsc_error err;
    for (int i = 0; i < n; i++) {
        clk->now += 3 * S;
        const dsc_subject *s = &level_subjects[i % 4];
        if (i % 4 == 3 && clk->now >= FEB1) s = &level_subjects[i % 3];
        dsc_amounts a = amt(DSC_METRIC_GCO2E, (i % 5 + 1) * M);
        a.v[DSC_METRIC_ENERGY_WH] = a.v[DSC_METRIC_GCO2E];
        char rid[32];
        snprintf(rid, sizeof rid, "lv-%lld-%d", (long long)clk->now, i);
        cr_assert_eq(settle_as(l, (dsc_settle_req){rid, &a, s, NULL}, NULL, NULL, &err), DSC_OK,
                     "%s", err.message);
    }
}

/* Every counter of l: those of energy_wh budgets into mine, the others into theirs. */
static void counters_by_metric(dsc_ledger *l, dsc_budget_state *mine, size_t *n_mine,
                               dsc_budget_state *theirs, size_t *n_theirs, size_t max) {
    dsc_budget_state all[256];
    size_t n = 0, total = 0;
    cr_assert_eq(dsc_ledger_counter_list(l, 0, all, 256, &n, &total, NULL), DSC_OK);
    cr_assert_eq(n, total);
    *n_mine = *n_theirs = 0;
    for (size_t i = 0; i < n; i++) {
        bool energy = all[i].metric == DSC_METRIC_ENERGY_WH;
        size_t *k = energy ? n_mine : n_theirs;
        cr_assert_lt(*k, max);
        (energy ? mine : theirs)[(*k)++] = all[i];
    }
}

/* Each energy_wh counter of l has its gco2e twin (the same budget and counter) with
 * the same used and reset time, and the other way round; returns how many counted
 * something. */
static size_t assert_counters_twin(dsc_ledger *l) {
    dsc_budget_state mine[128], theirs[128];
    size_t n_mine, n_theirs, counted = 0;
    counters_by_metric(l, mine, &n_mine, theirs, &n_theirs, 128);
    cr_assert_eq(n_mine, n_theirs, "%zu counters from the store, %zu live", n_mine, n_theirs);
    for (size_t i = 0; i < n_mine; i++) {
        size_t j = 0;
        while (j < n_theirs && (strcmp(mine[i].selector, theirs[j].selector) ||
                                strcmp(mine[i].window, theirs[j].window) ||
                                strcmp(mine[i].counter, theirs[j].counter)))
            j++;
        cr_assert_lt(j, n_theirs, "%s %s %s has no twin", mine[i].selector, mine[i].window,
                     mine[i].counter);
        cr_assert_eq(mine[i].used, theirs[j].used, "%s %s %s: %lld from the store, %lld live",
                     mine[i].selector, mine[i].window, mine[i].counter, (long long)mine[i].used,
                     (long long)theirs[j].used);
        cr_assert_eq(mine[i].resets_at, theirs[j].resets_at, "%s %s %s resets alike",
                     mine[i].selector, mine[i].window, mine[i].counter);
        counted += mine[i].used > 0;
    }
    return counted;
}

Test(
    store_sqlite,
    a_new_budget_over_rolled_up_hours_the_raw_tail_and_a_months_start_counts_what_a_live_one_counts) {
    char path[600];
    temp_db(path, sizeof path);
    fake_clock clk = {FEB1 - 2 * 3600 * S - 1234 * S}; /* January's last hours, then February */
    dsc_ledger *l = open_at(path, &clk, 0);
    level_budgets(l, DSC_METRIC_GCO2E);
    settle_levels(l, &clk, 6000); /* five hours: many checkpoints, every hour rolled up */
    clk.now += 20 * 60 * S;       /* the newest hour is partial: its charges are read one by one */
    cr_assert_gt(query_int(path, "SELECT count(*) FROM rollups"), 4 * 4);
    cr_assert_gt(query_int(path, "SELECT count(*) FROM events WHERE seq >"
                                 " (SELECT max(seq) FROM checkpoints)"),
                 0, "a tail not rolled up yet");
    level_budgets(l, DSC_METRIC_ENERGY_WH);
    size_t counted = assert_counters_twin(l);
    cr_assert_gt(counted, 20, "most counters count something");
    dsc_budget_state st[64];
    size_t n = usage_of(l, &level_subjects[3], st, 64), zero = 0;
    for (size_t i = 0; i < n; i++) /* dee's team charged only in January */
        zero += !strcmp(st[i].window, "month") && !strcmp(st[i].selector, "team:*") && !st[i].used;
    cr_assert_eq(zero, 2, "beta/ops has a month counter at zero on both metrics");
    dsc_ledger_free(l);
}

Test(store_sqlite,
     a_new_budget_over_subject_ids_too_sparse_to_index_counts_what_the_restart_counts) {
    char path[600];
    temp_db(path, sizeof path);
    fake_clock clk = {FEB1 + 1234 * S};
    dsc_ledger *l = open_at(path, &clk, 0);
    level_budgets(l, DSC_METRIC_GCO2E);
    settle_levels(l, &clk, 2000);
    dsc_error err;
    cr_assert_eq(dsc__ledger_store_exec(l,
                                        "INSERT INTO subjects(id, org, team, user, key)"
                                        " VALUES(1099511627776, 'gamma', 'far', 'zed', '')",
                                        &err),
                 DSC_OK, "%s", err.message);
    const dsc_subject far = {.org = "gamma", .team = "far2", .user = "zoe"};
    dsc_amounts a = amt(DSC_METRIC_GCO2E, 9 * M);
    a.v[DSC_METRIC_ENERGY_WH] = a.v[DSC_METRIC_GCO2E];
    for (int i = 0; i < 50; i++) {
        clk.now += 3 * S;
        char rid[32];
        snprintf(rid, sizeof rid, "far-%d", i);
        cr_assert_eq(settle_as(l, (dsc_settle_req){rid, &a, &far, NULL}, NULL, NULL, &err), DSC_OK,
                     "%s", err.message);
    }
    settle_levels(l, &clk, 2000);
    clk.now += 20 * 60 * S;
    cr_assert_gt(query_int(path, "SELECT max(id) FROM subjects"), 1099511627776LL);
    cr_assert_gt(query_int(path, "SELECT count(*) FROM rollups r JOIN subjects s"
                                 " ON s.id = r.subject WHERE s.team = 'far2'"),
                 0, "the far subject's hours are rolled up");
    level_budgets(l, DSC_METRIC_ENERGY_WH);
    cr_assert_gt(assert_counters_twin(l), 20);
    dsc_budget_state before[64], after[64];
    size_t n = usage_of(l, &far, before, 64);
    cr_assert_gt(find(before, n, "team:*").used, 0, "the far team counts");
    dsc_ledger_free(l);
    l = open_at(path, &clk, 0);
    cr_assert_eq(usage_of(l, &far, after, 64), n);
    for (size_t k = 0; k < n; k++)
        cr_assert_eq(after[k].used, before[k].used, "%s %s %s: %lld after the restart, %lld new",
                     after[k].selector, dsc_metric_name(after[k].metric), after[k].window,
                     (long long)after[k].used, (long long)before[k].used);
    cr_assert_gt(assert_counters_twin(l), 20, "and the restart counts what both counted");
    dsc_ledger_free(l);
}

/* The raw answer: hour, "org:O/team:T", sum(gco2e) from every charge in [since, until). */
static size_t raw_by_team_hour(const char *path, int64_t since, int64_t until, dsc_report_row *rows,
                               size_t max) {
    sqlite3 *db;
    sqlite3_stmt *st;
    cr_assert_eq(sqlite3_open(path, &db), SQLITE_OK);
    cr_assert_eq(sqlite3_prepare_v2(db,
                                    "SELECT at_us / 3600000000 * 3600, 'org:' || org || '/team:' ||"
                                    " team, sum(gco2e) FROM charges WHERE at_us >= ?1 AND"
                                    " at_us < ?2 GROUP BY 1, 2 ORDER BY 1, 2",
                                    -1, &st, NULL),
                 SQLITE_OK);
    sqlite3_bind_int64(st, 1, since * S);
    sqlite3_bind_int64(st, 2, until * S);
    size_t n = 0;
    while (sqlite3_step(st) == SQLITE_ROW && n < max) {
        rows[n].period_start = sqlite3_column_int64(st, 0);
        snprintf(rows[n].group, sizeof rows[n].group, "%s", sqlite3_column_text(st, 1));
        rows[n++].value = sqlite3_column_int64(st, 2);
    }
    sqlite3_finalize(st);
    sqlite3_close(db);
    return n;
}

Test(store_sqlite, a_report_from_the_hour_reads_rollups_and_sums_exactly_what_every_charge_sums) {
    char path[600], held[DSC_RESERVATION_ID_MAX], settled[DSC_RESERVATION_ID_MAX];
    temp_db(path, sizeof path);
    fake_clock clk = {T0 + 1234 * S};
    dsc_ledger *l = fill_hours(path, &clk, 1, held, settled);
    dsc_ledger_free(l);
    cr_assert_gt(query_int(path, "SELECT count(*) FROM rollups"), 3 * 4);
    int64_t since = T0 / S, until = clk.now / S - 1800; /* the end: inside an hour */
    dsc_report_query q = {.by = DSC_REPORT_BY_TEAM,
                          .period = DSC_REPORT_HOUR,
                          .metric = DSC_METRIC_GCO2E,
                          .since = since,
                          .until = until};
    dsc_report rep;
    dsc_error err;
    cr_assert_eq(dsc_report_run(path, &q, &rep, &err), DSC_OK, "%s", err.message);
    static dsc_report_row raw[64];
    size_t n = raw_by_team_hour(path, since, until, raw, 64);
    cr_assert_gt(n, 6);
    cr_assert_eq(rep.n, n);
    for (size_t i = 0; i < n; i++) {
        cr_assert_eq(rep.rows[i].period_start, raw[i].period_start);
        cr_assert_str_eq(rep.rows[i].group, raw[i].group);
        cr_assert_eq(rep.rows[i].value, raw[i].value, "%s at %lld: %lld, every charge: %lld",
                     raw[i].group, (long long)raw[i].period_start, (long long)rep.rows[i].value,
                     (long long)raw[i].value);
    }
    dsc_report_clear(&rep);
}

Test(store_sqlite, retention_drops_old_rolled_up_events_and_keeps_rollups_open_holds_and_counters) {
    char path[600], held[DSC_RESERVATION_ID_MAX], settled[DSC_RESERVATION_ID_MAX];
    temp_db(path, sizeof path);
    fake_clock clk = {T0 + 1234 * S};
    /* two hours: more than the reach of the rolling:1h window (which needs each charge) */
    dsc_ledger *l = fill_retaining(path, &clk, N_ROLLED - 1, 7200, held, settled);
    dsc_budget_state before[32], after[32];
    size_t n = usage_of(l, &rolled_subjects[0], before, 32);
    dsc_ledger_free(l);
    int64_t events = query_int(path, "SELECT count(*) FROM events WHERE type = 3");
    cr_assert_lt(events, 6000 * 3 / 5, "%lld of 6001 settles left", (long long)events);
    cr_assert_gt(events, 2 * 3600 / 3, "the last two hours are all there");
    cr_assert_eq(query_int(path, "SELECT count(*) FROM events WHERE type IN (1, 2, 7, 8)"), 2,
                 "the hold open since the start is kept, and the last hour's");
    cr_assert_eq(query_int(path, "SELECT min(hour_us) FROM rollups"),
                 (T0 + 1234 * S) / (3600 * S) * (3600 * S), "the first hour is still rolled up");
    cr_assert_eq(query_int(path, "SELECT count(*) FROM reservations WHERE state = 'held'"), 1);
    l = open_retaining(path, &clk, 7200);
    cr_assert_eq(usage_of(l, &rolled_subjects[0], after, 32), n);
    for (size_t k = 0; k < n; k++)
        cr_assert(after[k].used == before[k].used && after[k].held == before[k].held,
                  "%s %s: used %lld after, %lld before", after[k].selector, after[k].window,
                  (long long)after[k].used, (long long)before[k].used);
    budget_for(l, "team:*", DSC_METRIC_ENERGY_WH, "month"); /* from rollups alone */
    size_t m = usage_of(l, &rolled_subjects[0], after, 32);
    int64_t gco2e = -1, energy = -2;
    for (size_t k = 0; k < m; k++)
        if (!strcmp(after[k].selector, "team:*") && !strcmp(after[k].window, "month"))
            *(after[k].metric == DSC_METRIC_GCO2E ? &gco2e : &energy) = after[k].used;
    cr_assert_eq(energy, gco2e, "the month from dropped events' hours: %lld vs %lld",
                 (long long)energy, (long long)gco2e);
    dsc_hold_info h;
    cr_assert_eq(dsc_ledger_hold_get(l, held, &h), DSC_OK);
    cr_assert(h.open);
    dsc_ledger_free(l);
}

/* The ledger cannot recall an id it did not make, so a repeated unreserved settle
 * that memory has forgotten is refused by the store, never charged twice. */
Test(store_sqlite, an_unreserved_settle_repeated_after_memory_forgot_it_is_refused_not_charged) {
    char path[600];
    temp_db(path, sizeof path);
    fake_clock clk = {T0};
    dsc_ledger *l = open_at(path, &clk, 1);
    dsc_error err;
    dsc_amounts a = amt(DSC_METRIC_GCO2E, 4 * M);
    dsc_settle_out kind;
    cr_assert_eq(settle_as(l, (dsc_settle_req){"ext-42", &a, &ana, NULL}, &kind, NULL, &err),
                 DSC_OK, "%s", err.message);
    cr_assert_eq(kind.kind, DSC_SETTLE_UNRESERVED);
    dsc_ledger_free(l);
    clk.now += 3600 * S; /* a restart an hour later: nothing finished is remembered */
    l = open_at(path, &clk, 1);
    cr_assert_neq(settle_as(l, (dsc_settle_req){"ext-42", &a, &ana, NULL}, &kind, NULL, &err),
                  DSC_OK, "the repeat is refused");
    dsc_ledger_free(l);
    cr_assert_eq(query_int(path, "SELECT count(*) FROM charges WHERE reservation_id = 'ext-42'"),
                 1);
    cr_assert_eq(query_int(path, "SELECT sum(gco2e) FROM charges"), 4 * M);
}

/* durability full: a check is answered before its record commits (the writer waits up
 * to batch_ms for a record someone waits on); dsc_ledger_sync is that record, so a
 * reader of the file sees every decision answered before it, and its done runs once. */
Test(store_sqlite, sync_returns_once_every_decision_answered_before_it_is_readable) {
    char path[600];
    temp_db(path, sizeof path);
    dsc_ledger_config cfg = {.store_path = path, .batch_ms = 30000};
    dsc_error err;
    dsc_ledger *l = dsc_ledger_new(&cfg, &err);
    cr_assert(l, "%s", err.message);
    char rid[DSC_RESERVATION_ID_MAX];
    dsc_amounts a = amt(DSC_METRIC_GCO2E, 5 * M);
    dsc_decision_record d = allow_decision("d-sync-1");
    cr_assert_eq(reserve_as(l, (dsc_reserve_req){&ana, &a, 60, "q-sync-1", &d}, rid, NULL, 0, NULL,
                            NULL, &err),
                 DSC_OK, "%s", err.message);
    cr_assert_eq(query_int(path, "SELECT count(*) FROM decisions"), 0,
                 "answered, not committed yet (the writer waits for a waited record)");
    cr_assert_eq(dsc_ledger_sync(l, NULL, &err), DSC_OK, "%s", err.message);
    cr_assert_eq(query_int(path, "SELECT count(*) FROM decisions"), 1);
    d = allow_decision("d-sync-2");
    cr_assert_eq(reserve_as(l, (dsc_reserve_req){&ana, &a, 60, "q-sync-2", &d}, rid, NULL, 0, NULL,
                            NULL, &err),
                 DSC_OK, "%s", err.message);
    completion c = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0, DSC_INTERNAL};
    cr_assert_eq(dsc_ledger_sync(l, &(dsc_done){on_done, &c}, &err), DSC_OK, "%s", err.message);
    wait_calls(&c, 1);
    cr_assert_eq(c.st, DSC_OK);
    cr_assert_eq(query_int(path, "SELECT count(*) FROM decisions"), 2);
    dsc_ledger_free(l);
}

Test(store_sqlite, sync_without_a_store_is_immediate) {
    dsc_error err;
    dsc_ledger *l = dsc_ledger_new(&(dsc_ledger_config){0}, &err);
    cr_assert(l, "%s", err.message);
    completion c = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0, DSC_INTERNAL};
    cr_assert_eq(dsc_ledger_sync(l, &(dsc_done){on_done, &c}, &err), DSC_OK);
    cr_assert_eq(c.calls, 1, "done ran before the return");
    cr_assert_eq(dsc_ledger_sync(l, NULL, &err), DSC_OK);
    dsc_ledger_free(l);
}

/* A settle of a finished reservation that memory forgot finds its hold between the
 * two checkpoints around its id's counter, across many checkpoints; an id with a real
 * counter but made-up random digits is unknown, not charged. */
Test(store_sqlite, forgotten_holds_are_found_between_the_checkpoints_around_their_ids) {
    char path[600];
    temp_db(path, sizeof path);
    fake_clock clk = {T0};
    dsc_ledger_config cfg = {.store_path = path,
                             .durability = DSC_DURABILITY_OFF,
                             .now_us = fake_now,
                             .clock_ud = &clk,
                             .retain_s = 1};
    dsc_error err;
    dsc_ledger *l = dsc_ledger_new(&cfg, &err);
    cr_assert(l, "%s", err.message);
    /* a minute between every 3000 pairs: four checkpoints or more */
    enum { PAIRS = 13000 };
    enum { EVERY = 97, SAMPLED = PAIRS / EVERY + 1 };
    static char rids[SAMPLED][DSC_RESERVATION_ID_MAX];
    dsc_amounts a = amt(DSC_METRIC_GCO2E, 5);
    for (int i = 0; i < PAIRS; i++) {
        char rid[DSC_RESERVATION_ID_MAX];
        if (i && i % 3000 == 0) clk.now += 61 * S;
        cr_assert_eq(reserve_as(l, (dsc_reserve_req){&ana, &a, 60, NULL, NULL}, rid, NULL, 0, NULL,
                                NULL, &err),
                     DSC_OK, "%s", err.message);
        cr_assert_eq(settle_as(l, (dsc_settle_req){rid, &a, NULL, NULL}, NULL, NULL, &err), DSC_OK,
                     "%s", err.message);
        if (i % EVERY == 0) memcpy(rids[i / EVERY], rid, sizeof rid);
    }
    cr_assert_eq(dsc_ledger_sync(l, NULL, &err), DSC_OK, "%s", err.message);
    cr_assert_geq(query_int(path, "SELECT count(*) FROM checkpoints"), 3);
    clk.now += 10 * S;
    dsc_ledger_tick(l);
    dsc_ledger_stats stats;
    dsc_ledger_stats_get(l, &stats);
    cr_assert_eq(stats.reservations, 0, "forgotten by memory");
    for (int k = 0; k < SAMPLED; k++) {
        dsc_settle_out out;
        cr_assert_eq(settle_as(l, (dsc_settle_req){rids[k], &a, (dsc_subject *)&ana, NULL}, &out,
                               NULL, &err),
                     DSC_OK, "%s: %s", rids[k], err.message);
        cr_assert_eq(out.kind, DSC_SETTLE_REPEATED, "%s", rids[k]);
    }
    char forged[DSC_RESERVATION_ID_MAX];
    memcpy(forged, rids[SAMPLED / 2], sizeof forged);
    forged[20] = forged[20] == 'a' ? 'b' : 'a'; /* same counter, other random digits */
    cr_assert_eq(
        settle_as(l, (dsc_settle_req){forged, &a, (dsc_subject *)&ana, NULL}, NULL, NULL, &err),
        DSC_UNKNOWN_RESERVATION, "%s", err.message);
    dsc_ledger_free(l);
}

/* Reserve and settle n pairs of 5 g on l for ana, the clock a minute on (a checkpoint
 * in the next batch) after the first half. */
static void pairs(dsc_ledger *l, fake_clock *clk, int n) {
    dsc_amounts a = amt(DSC_METRIC_GCO2E, 5);
    dsc_error err;
    for (int i = 0; i < n; i++) {
        char rid[DSC_RESERVATION_ID_MAX];
        if (i == n / 2) clk->now += 61 * S;
        cr_assert_eq(reserve_as(l, (dsc_reserve_req){&ana, &a, 60, NULL, NULL}, rid, NULL, 0, NULL,
                                NULL, &err),
                     DSC_OK, "%s", err.message);
        cr_assert_eq(settle_as(l, (dsc_settle_req){rid, &a, NULL, NULL}, NULL, NULL, &err), DSC_OK,
                     "%s", err.message);
    }
    cr_assert_eq(dsc_ledger_sync(l, NULL, &err), DSC_OK, "%s", err.message);
}

/* The writer keeps the largest counter of a hold in memory for the next checkpoint;
 * across a restart between two checkpoints, each one still stores the largest counter
 * of any hold up to its seq (what the recall of a forgotten hold relies on). */
Test(store_sqlite, each_checkpoint_keeps_the_largest_counter_of_a_hold_up_to_it_across_a_restart) {
    char path[600];
    temp_db(path, sizeof path);
    fake_clock clk = {T0};
    dsc_ledger_config cfg = {
        .store_path = path, .durability = DSC_DURABILITY_OFF, .now_us = fake_now, .clock_ud = &clk};
    dsc_error err;
    dsc_ledger *l = dsc_ledger_new(&cfg, &err);
    cr_assert(l, "%s", err.message);
    pairs(l, &clk, 6000); /* a checkpoint, then events after it */
    dsc_ledger_free(l);
    int64_t before = query_int(path, "SELECT count(*) FROM checkpoints");
    cr_assert_geq(before, 1);
    cr_assert_gt(query_int(path, "SELECT max(seq) FROM events"),
                 query_int(path, "SELECT max(seq) FROM checkpoints"), "holds after the checkpoint");
    l = dsc_ledger_new(&cfg, &err);
    cr_assert(l, "%s", err.message);
    clk.now += 120 * S; /* the first batch takes a checkpoint before its own holds */
    pairs(l, &clk, 9000);
    dsc_ledger_free(l);
    cr_assert_geq(query_int(path, "SELECT count(*) FROM checkpoints"), before + 2);
    cr_assert_eq(query_int(path, "SELECT count(*) FROM checkpoints WHERE length(max_rid) != 6"), 0);
    cr_assert_eq(query_int(path,
                           "SELECT count(*) FROM checkpoints c WHERE c.max_rid IS NOT"
                           " (SELECT max(substr(rid, 1, 6)) FROM events e WHERE e.seq <= c.seq"
                           " AND e.type IN (1, 2, 7, 8) AND length(e.rid) = 18)"),
                 0, "a checkpoint's max_rid is the largest counter up to it");
}

/* A log the open cannot read (a damaged page of events) fails the open, saying what it
 * was reading, rather than writing on from wrong positions. */
Test(store_sqlite, an_unreadable_log_fails_the_open_and_says_what_it_was_reading) {
    char path[600];
    temp_db(path, sizeof path);
    fake_clock clk = {T0};
    dsc_ledger_config cfg = {
        .store_path = path, .durability = DSC_DURABILITY_OFF, .now_us = fake_now, .clock_ud = &clk};
    dsc_error err;
    dsc_ledger *l = dsc_ledger_new(&cfg, &err);
    cr_assert(l, "%s", err.message);
    pairs(l, &clk, 3000);
    dsc_ledger_free(l);
    int64_t root = query_int(path, "SELECT rootpage FROM sqlite_master WHERE name = 'events'");
    int64_t page = query_int(path, "PRAGMA page_size");
    cr_assert(root > 1 && page > 0 && page <= 65536);
    static unsigned char junk[65536];
    memset(junk, 0xa5, sizeof junk);
    int fd = open(path, O_WRONLY);
    cr_assert_geq(fd, 0);
    cr_assert_eq(pwrite(fd, junk, (size_t)page, (off_t)((root - 1) * page)), page);
    close(fd);
    l = dsc_ledger_new(&cfg, &err);
    cr_assert_null(l, "opened a store whose log cannot be read");
    cr_assert_eq(err.code, DSC_STORE_UNAVAILABLE);
    cr_assert(strstr(err.message, "reading the log's positions"), "%s", err.message);
}

static uint64_t batches_of(dsc_ledger *l) {
    dsc_ledger_stats st;
    dsc_ledger_stats_get(l, &st);
    return st.store_batches;
}

/* Old events beyond one purge's chunk go over the batches after the checkpoint, at
 * most a chunk each, not in one long transaction; every charge stays counted. */
Test(store_sqlite, a_purge_longer_than_its_chunk_goes_on_over_the_batches_after_the_checkpoint) {
    char path[600];
    temp_db(path, sizeof path);
    fake_clock clk = {T0};
    dsc_ledger *l = open_retaining(path, &clk, 3600);
    budget_for(l, "user:ana", DSC_METRIC_GCO2E, "month");
    pairs(l, &clk, 20000);
    char old[128]; /* the events before the clock jumps */
    snprintf(old, sizeof old, "SELECT count(*) FROM events WHERE at_us < %lld",
             (long long)(T0 + 1800 * S));
    int64_t before = query_int(path, old), left = before, used = -1;
    cr_assert_gt(before, 2 * DSC__SQ_PURGE_CHUNK, "%lld old events", (long long)before);
    clk.now += 2 * 3600 * S; /* the next batch takes a checkpoint and starts the purge */
    uint64_t from = batches_of(l);
    dsc_amounts a = amt(DSC_METRIC_GCO2E, 5);
    dsc_error err;
    int steps = 0;
    for (; left > 0 && steps < 20; steps++) {
        char id[32];
        snprintf(id, sizeof id, "late-%d", steps);
        uint64_t b = batches_of(l);
        cr_assert_eq(settle_as(l, (dsc_settle_req){id, &a, &ana, NULL}, NULL, NULL, &err), DSC_OK,
                     "%s", err.message);
        cr_assert_eq(dsc_ledger_sync(l, NULL, &err), DSC_OK, "%s", err.message);
        int64_t now_left = query_int(path, old);
        cr_assert_lt(now_left, left, "step %d: no progress from %lld", steps, (long long)left);
        cr_assert_leq(left - now_left, (int64_t)(batches_of(l) - b) * DSC__SQ_PURGE_CHUNK);
        left = now_left;
    }
    cr_assert_eq(left, 0, "%lld old events left", (long long)left);
    cr_assert_geq(batches_of(l) - from,
                  (uint64_t)((before + DSC__SQ_PURGE_CHUNK - 1) / DSC__SQ_PURGE_CHUNK));
    dsc_budget_state st[4];
    size_t n = usage_of(l, &ana, st, 4);
    for (size_t k = 0; k < n; k++)
        if (!strcmp(st[k].window, "month")) used = st[k].used;
    cr_assert_eq(used, (20000 + steps) * 5, "every charge counted: %lld", (long long)used);
    dsc_ledger_free(l);
}

/* --- the size of an event row ------------------------------------------------------- */

static int64_t query_fmt(const char *path, const char *fmt, ...) {
    char sql[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(sql, sizeof sql, fmt, ap);
    va_end(ap);
    return query_int(path, sql);
}

static int64_t count_where(const char *path, const char *fmt, const char *rid) {
    char sql[512];
    snprintf(sql, sizeof sql, fmt, rid);
    return query_int(path, sql);
}

/* Three holds of 5 g with their checks' decisions (key k_1, provider p, model m) made
 * at T0 and a fourth without a decision: at T0 + 5 s the first is settled at 5 g, the second
 * cancelled, the fourth settled at 1 g; the third (ttl 1 s) expires at T0 + 10 s
 * (charged 5 g) and is settled late at 2 g. commit_holds_first: the holds are
 * committed before anything finishes them (each finish then names its hold by seq);
 * else everything but the late settle is one batch (durability batch), so that each
 * hold and its finish are one row. */
static void finish_four(const char *path, fake_clock *clk, bool commit_holds_first,
                        char ids[4][DSC_RESERVATION_ID_MAX]) {
    dsc_ledger_config cfg = {.store_path = path,
                             .now_us = fake_now,
                             .clock_ud = clk,
                             .retain_s = 1,
                             .durability =
                                 commit_holds_first ? DSC_DURABILITY_FULL : DSC_DURABILITY_BATCH,
                             .batch_ms = commit_holds_first ? 0 : 500};
    dsc_error err;
    dsc_ledger *l = dsc_ledger_new(&cfg, &err);
    cr_assert(l, "%s", err.message);
    budget_for(l, "*", DSC_METRIC_GCO2E, "year");
    dsc_amounts a = amt(DSC_METRIC_GCO2E, 5 * M), one = amt(DSC_METRIC_GCO2E, M);
    const char *dids[] = {"d1", "d2", "d3"};
    for (int i = 0; i < 4; i++) {
        dsc_decision_record d = {.decision_id = i < 3 ? dids[i] : NULL,
                                 .subject = ana,
                                 .key_id = "k_1",
                                 .provider = "p",
                                 .model = "m"};
        cr_assert_eq(
            reserve_as(l, (dsc_reserve_req){&ana, &a, i == 2 ? 1 : 60, NULL, i < 3 ? &d : NULL},
                       ids[i], NULL, 0, NULL, NULL, &err),
            DSC_OK, "%s", err.message);
    }
    if (commit_holds_first) cr_assert_eq(dsc_ledger_sync(l, NULL, &err), DSC_OK, "%s", err.message);
    clk->now += 5 * S;
    cr_assert_eq(settle_as(l, (dsc_settle_req){ids[0], &a, NULL, NULL}, NULL, NULL, &err), DSC_OK);
    cr_assert_eq(dsc_ledger_cancel(l, &(dsc_cancel_req){ids[1], NULL}, NULL, &err), DSC_OK);
    cr_assert_eq(settle_as(l, (dsc_settle_req){ids[3], &one, NULL, NULL}, NULL, NULL, &err),
                 DSC_OK);
    clk->now += 5 * S;
    dsc_ledger_tick(l);
    cr_assert_eq(dsc_ledger_sync(l, NULL, &err), DSC_OK, "%s", err.message);
    dsc_amounts two = amt(DSC_METRIC_GCO2E, 2 * M);
    dsc_settle_out late;
    cr_assert_eq(settle_as(l, (dsc_settle_req){ids[2], &two, NULL, NULL}, &late, NULL, &err),
                 DSC_OK, "%s", err.message);
    cr_assert_eq(late.kind, DSC_SETTLE_LATE);
    dsc_ledger_free(l);
}

/* What the views, a restart and the recall of forgotten ones make of finish_four,
 * whichever rows it wrote. */
static void views_show_four(const char *path, fake_clock *clk,
                            char ids[4][DSC_RESERVATION_ID_MAX]) {
    cr_assert_eq(query_fmt(path,
                           "SELECT count(*) FROM reservations WHERE held_gco2e = 5000000"
                           " AND created_us = %lld",
                           (long long)T0),
                 4);
    cr_assert_eq(query_int(path, "SELECT count(*) FROM reservations WHERE owner = 'k_1'"
                                 " AND model = 'm'"),
                 3, "what the checks' holds were for");
    cr_assert_eq(query_fmt(path,
                           "SELECT count(*) FROM charges WHERE kind = 'settle'"
                           " AND reservation_id = '%s' AND gco2e = 5000000 AND at_us = %lld",
                           ids[0], (long long)(T0 + 5 * S)),
                 1, "charged when it was settled");
    cr_assert_eq(
        query_fmt(path, "SELECT count(*) FROM reservations WHERE id = '%s' AND finished_us = %lld",
                  ids[0], (long long)(T0 + 5 * S)),
        1);
    cr_assert_eq(
        count_where(path, "SELECT charged_gco2e FROM reservations WHERE id = '%s'", ids[2]), 2 * M,
        "the expiry and the late settle (by id) are one reservation");
    cr_assert_eq(
        count_where(path, "SELECT charged_gco2e FROM reservations WHERE id = '%s'", ids[3]), M);
    const char *state[] = {"settled", "cancelled", "settled", "settled"};
    for (int i = 0; i < 4; i++) {
        char fmt[200];
        snprintf(fmt, sizeof fmt,
                 "SELECT count(*) FROM reservations WHERE id = '%%s' AND state = '%s'", state[i]);
        cr_assert_eq(count_where(path, fmt, ids[i]), 1, "%s %s", ids[i], state[i]);
    }
    cr_assert_eq(query_int(path, "SELECT count(*) FROM reservations"), 4);
    cr_assert_eq(query_int(path, "SELECT count(*) FROM decisions WHERE reservation_id IS NOT NULL"
                                 " AND key_id = 'k_1'"),
                 3);
    cr_assert_eq(query_int(path, "SELECT sum(gco2e) FROM charges"), (5 + 1 + 2) * M);
    cr_assert_eq(query_int(path, "SELECT sum(gco2e) FROM usage_by_team_month"), (5 + 1 + 2) * M);
    dsc_report_query q = {.by = DSC_REPORT_BY_MODEL,
                          .period = DSC_REPORT_DAY,
                          .metric = DSC_METRIC_GCO2E,
                          .since = T0 / S - 3600,
                          .until = T0 / S + 3600};
    dsc_report rep;
    dsc_error rerr;
    cr_assert_eq(dsc_report_run(path, &q, &rep, &rerr), DSC_OK, "%s", rerr.message);
    cr_assert_eq(rep.n, 2, "model m and no model");
    cr_assert_str_eq(rep.rows[0].group, "", "the hold without a decision");
    cr_assert_eq(rep.rows[0].value, M);
    cr_assert_str_eq(rep.rows[1].group, "p/m");
    cr_assert_eq(rep.rows[1].value, (5 + 5 - 3) * M, "settled, expired, late");
    dsc_report_clear(&rep);
    /* after a restart the finished ones are reloaded with their hold's owner and the
     * charges counted again, and once memory forgot them each is still known finished */
    dsc_ledger *l = open_at(path, clk, 3600);
    dsc_hold_info h;
    cr_assert_eq(dsc_ledger_hold_get(l, ids[0], &h), DSC_OK);
    cr_assert(!h.open);
    cr_assert_str_eq(h.owner, "k_1");
    cr_assert_str_eq(h.model, "m");
    dsc_budget_state st[4];
    cr_assert_eq(find(st, preview(l, st, 4), "*").used, (5 + 1 + 2) * M);
    dsc_ledger_free(l);
    l = open_at(path, clk, 1);
    clk->now += 10 * S;
    dsc_ledger_tick(l);
    dsc_error err;
    dsc_settle_out out;
    dsc_amounts a = amt(DSC_METRIC_GCO2E, 5 * M);
    for (int i = 0; i < 4; i += 3) {
        cr_assert_eq(settle_as(l, (dsc_settle_req){ids[i], &a, NULL, NULL}, &out, NULL, &err),
                     DSC_OK, "%s", err.message);
        cr_assert_eq(out.kind, DSC_SETTLE_REPEATED);
    }
    cr_assert_eq(dsc_ledger_cancel(l, &(dsc_cancel_req){ids[1], NULL}, NULL, &err), DSC_OK, "%s",
                 err.message);
    dsc_ledger_free(l);
}

Test(store_sqlite, a_settle_cancel_or_expiry_names_its_hold_by_seq_only_and_views_show_its_id) {
    char path[600], ids[4][DSC_RESERVATION_ID_MAX];
    temp_db(path, sizeof path);
    fake_clock clk = {T0};
    finish_four(path, &clk, true, ids);
    cr_assert_eq(query_int(path, "SELECT count(*) FROM events WHERE type IN (3, 4, 5)"), 5);
    cr_assert_eq(query_int(path, "SELECT count(*) FROM events f JOIN events h ON h.seq = f.hold"
                                 " WHERE f.type IN (3, 4, 5) AND f.rid IS NULL"
                                 " AND h.type IN (1, 2) AND h.rid IS NOT NULL"),
                 4, "each names its hold, no copy of the id");
    cr_assert_eq(query_int(path, "SELECT count(*) FROM events WHERE type IN (3, 4, 5)"
                                 " AND hold IS NOT NULL AND owner IS NULL AND model IS NULL"),
                 4, "nor of its owner and what it was for");
    views_show_four(path, &clk, ids);
}

Test(store_sqlite, a_hold_finished_in_the_batch_that_writes_it_is_one_row_that_the_views_split) {
    char path[600], ids[4][DSC_RESERVATION_ID_MAX];
    temp_db(path, sizeof path);
    fake_clock clk = {T0};
    finish_four(path, &clk, false, ids);
    cr_assert_eq(query_int(path, "SELECT count(*) FROM events"), 5,
                 "four rows and the late settle");
    cr_assert_eq(query_int(path, "SELECT count(*) FROM events WHERE type = 7"), 3);
    cr_assert_eq(query_int(path,
                           "SELECT count(*) FROM events WHERE type = 8 AND decision_id IS NULL"
                           " AND held_gco2e = 5000000 AND gco2e = 1000000"),
                 1, "the hold without a decision, what it held beside what it charged");
    cr_assert_eq(query_int(path, "SELECT count(*) FROM events WHERE type IN (7, 8)"
                                 " AND finish_after_us = 5000000"),
                 3, "settled and cancelled 5 s after the hold");
    cr_assert_eq(query_int(path, "SELECT count(*) FROM events WHERE type = 3 AND rid IS NOT NULL"
                                 " AND hold IS NULL"),
                 1, "the late settle names the reservation by id");
    views_show_four(path, &clk, ids);
}

/* A check's hold is acknowledged once queued, and its settle comes after the reply: a
 * batch later. The writer keeps the hold back until its settle is in the batch with
 * it (one row), but a sync keeps nothing back. */
static void hold_meets_its_later_settle(dsc_durability durability) {
    char path[600];
    temp_db(path, sizeof path);
    dsc_ledger_config cfg = {.store_path = path, .durability = durability};
    dsc_error err;
    dsc_ledger *l = dsc_ledger_new(&cfg, &err);
    cr_assert(l, "%s", err.message);
    char rid[DSC_RESERVATION_ID_MAX];
    dsc_amounts a = amt(DSC_METRIC_GCO2E, 5 * M), charged = amt(DSC_METRIC_GCO2E, 2 * M);
    cr_assert_eq(
        reserve_as(l, (dsc_reserve_req){&ana, &a, 60, "q1", NULL}, rid, NULL, 0, NULL, NULL, &err),
        DSC_OK, "%s", err.message);
    /* a record someone waits on: the hold's batch is committed without it */
    cr_assert_eq(dsc_ledger_budget(l, &(dsc_budget_req){"*", DSC_METRIC_GCO2E, "day", 100, false},
                                   NULL, NULL, &err),
                 DSC_OK, "%s", err.message);
    cr_assert_eq(query_int(path, "SELECT count(*) FROM budget_log"), 1);
    cr_assert_eq(query_int(path, "SELECT count(*) FROM events"), 0, "the hold is kept back");
    cr_assert_eq(settle_as(l, (dsc_settle_req){rid, &charged, NULL, NULL}, NULL, NULL, &err),
                 DSC_OK, "%s", err.message);
    cr_assert_eq(dsc_ledger_sync(l, NULL, &err), DSC_OK, "%s", err.message);
    cr_assert_eq(query_int(path, "SELECT count(*) FROM events"), 1);
    cr_assert_eq(query_int(path, "SELECT count(*) FROM events WHERE type = 8 AND gco2e = 2000000"
                                 " AND held_gco2e = 5000000"),
                 1, "the hold and its settle in one row");
    cr_assert_eq(query_int(path, "SELECT count(*) FROM reservations WHERE state = 'settled'"
                                 " AND held_gco2e = 5000000 AND charged_gco2e = 2000000"),
                 1);
    /* a sync promises every record before it: nothing is kept back past it */
    cr_assert_eq(
        reserve_as(l, (dsc_reserve_req){&ana, &a, 60, "q2", NULL}, rid, NULL, 0, NULL, NULL, &err),
        DSC_OK, "%s", err.message);
    cr_assert_eq(dsc_ledger_sync(l, NULL, &err), DSC_OK, "%s", err.message);
    cr_assert_eq(query_int(path, "SELECT count(*) FROM reservations WHERE state = 'held'"), 1,
                 "the hold is in the file once the sync returns");
    dsc_ledger_free(l);
}

Test(store_sqlite, under_full_a_hold_kept_back_meets_its_later_settle_in_one_row) {
    hold_meets_its_later_settle(DSC_DURABILITY_FULL);
}

Test(store_sqlite, under_batch_a_hold_kept_back_meets_its_later_settle_in_one_row) {
    hold_meets_its_later_settle(DSC_DURABILITY_BATCH);
}

/* A hold nobody settles is not kept back for ever: the writer writes it after a few
 * batches (CARRY_MAX) or batch_ms (CARRY_AGE_BATCHES), which bounds what a crash can
 * lose of acknowledged holds. */
Test(store_sqlite, under_full_a_hold_nobody_settles_is_written_after_a_few_batches) {
    char path[600];
    temp_db(path, sizeof path);
    dsc_ledger *l = open_at(path, NULL, 0);
    dsc_error err;
    char rid[DSC_RESERVATION_ID_MAX];
    dsc_amounts a = amt(DSC_METRIC_GCO2E, 5 * M);
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    cr_assert_eq(
        reserve_as(l, (dsc_reserve_req){&ana, &a, 60, "q1", NULL}, rid, NULL, 0, NULL, NULL, &err),
        DSC_OK, "%s", err.message);
    /* waited records keep coming (a batch each), the hold's settle never does */
    for (int i = 0; i < 2000 && !query_int(path, "SELECT count(*) FROM events"); i++)
        cr_assert_eq(
            dsc_ledger_budget(l, &(dsc_budget_req){"*", DSC_METRIC_GCO2E, "day", 100 + i, false},
                              NULL, NULL, &err),
            DSC_OK, "%s", err.message);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double ms = (double)(t1.tv_sec - t0.tv_sec) * 1e3 + (double)(t1.tv_nsec - t0.tv_nsec) / 1e6;
    cr_assert_eq(query_int(path, "SELECT count(*) FROM events WHERE type = 1"), 1);
    cr_assert_lt(query_int(path, "SELECT count(*) FROM budget_log"), 2000,
                 "written before the batches ran out (%.1f ms)", ms);
    dsc_ledger_free(l);
}

/* tests/data/store-744e429.sql is the sqlite3 .dump of a store file written by the
 * ledger at commit 744e429 (schema 3: each settle, cancel and expiry row also carried
 * its hold's id), through its API with the clock at T0: budget team:* gco2e month
 * 100; holds of 5 g for acme/infra/ana with the decisions of their checks (key k_1,
 * openai gpt-4o): req-held (ttl 3600 s, still held), req-settle (settled at 3 g),
 * req-cancel (cancelled), req-expire (ttl 1 s: expired at T0 + 10 s, charged 5 g,
 * then settled late at 2 g); the unreserved settle u-1 of 1 g; decision d-only. */
#define V3_HELD "r2bbd6abf5000e5768fc5c3f4988aa47f3d3c"
#define V3_SETTLED "r2bbd6abf5001050e1653bfa6d7bfbe0ce316"
#define V3_CANCELLED "r2bbd6abf50024339766e8f8710cb4ad70dd1"
#define V3_LATE "r2bbd6abf5003d397b7aca8d5b03d9afe284f"

Test(store_sqlite, a_store_written_at_744e429_opens_with_its_holds_charges_and_finished_ids) {
    char path[600];
    temp_db(path, sizeof path);
    load_dump(path, "store-744e429.sql");
    fake_clock clk = {T0 + 20 * S};
    dsc_ledger *l = open_at(path, &clk, 1);
    dsc_budget_state st[4];
    dsc_budget_state b = find(st, preview(l, st, 4), "team:*");
    cr_assert_eq(b.used, 6 * M, "3 settled, 5 expired - 3 late, 1 unreserved");
    cr_assert_eq(b.held, 5 * M, "the open hold is reloaded");
    dsc_hold_info h;
    cr_assert_eq(dsc_ledger_hold_get(l, V3_HELD, &h), DSC_OK);
    cr_assert(h.open);
    cr_assert_str_eq(h.owner, "k_1");
    cr_assert_str_eq(h.model, "gpt-4o");
    clk.now += 10 * S;
    dsc_ledger_tick(l); /* memory forgets the finished ones: the store recalls them */
    cr_assert_eq(settle_kind_of(l, V3_SETTLED), DSC_SETTLE_REPEATED);
    cr_assert_eq(settle_kind_of(l, V3_LATE), DSC_SETTLE_REPEATED);
    dsc_error err;
    cr_assert_eq(dsc_ledger_cancel(l, &(dsc_cancel_req){V3_CANCELLED, NULL}, NULL, &err), DSC_OK,
                 "%s", err.message);
    cr_assert_eq(settle_kind_of(l, V3_HELD), DSC_SETTLE_RESERVED);
    dsc_amounts one = amt(DSC_METRIC_GCO2E, M);
    cr_assert_neq(settle_as(l, (dsc_settle_req){"u-1", &one, &ana, NULL}, NULL, NULL, &err), DSC_OK,
                  "an unreserved id is not charged twice");
    dsc_ledger_free(l);
    cr_assert_eq(query_int(path, "SELECT value FROM meta WHERE key = 'schema_version'"), 5);
    cr_assert_eq(query_int(path, "SELECT count(*) FROM reservations"), 5);
    cr_assert_eq(query_int(path, "SELECT count(*) FROM reservations WHERE id = '" V3_HELD
                                 "' AND state = 'settled' AND charged_gco2e = 1000000"),
                 1, "settled after the upgrade: a row of the new shape joins the old hold");
    cr_assert_eq(query_int(path, "SELECT charged_gco2e FROM reservations WHERE id = '" V3_LATE
                                 "' AND state = 'settled'"),
                 2 * M);
    cr_assert_eq(query_int(path, "SELECT count(*) FROM reservations WHERE id = '" V3_CANCELLED
                                 "' AND state = 'cancelled'"),
                 1);
    cr_assert_eq(query_int(path, "SELECT count(*) FROM charges WHERE reservation_id = '" V3_HELD
                                 "' AND kind = 'settle'"),
                 1);
    cr_assert_eq(query_int(path, "SELECT count(*) FROM decisions"), 5);
    l = open_at(path, &clk, 1);
    b = find(st, preview(l, st, 4), "team:*");
    cr_assert_eq(b.used, 7 * M, "charged before and after the upgrade");
    cr_assert_eq(b.held, 0);
    dsc_ledger_free(l);
}

/* tests/data/store-7f87fcc.sql is the sqlite3 .dump of a store file written by the
 * ledger at commit 7f87fcc (schema 4: a settle, cancel or expiry of an open hold names
 * it by seq), through its API with the clock at T0, each hold committed before what
 * finishes it: budget team:* gco2e month 100; holds of 5 g for acme/infra/ana with the
 * decisions of their checks (key k_1, openai gpt-4o, zone FRA): req-held (ttl 3600 s,
 * still held), req-settle (settled at 3 g), req-cancel (cancelled), req-expire (ttl
 * 1 s: expired at T0 + 10 s, charged 5 g); at T0 + 130 s req-expire settled late at
 * 2 g, the unreserved settle u-1 of 1 g and decision d-only (a checkpoint and its
 * rollups); at T0 + 250 s req-tail held and settled at 4 g (after the last
 * checkpoint). */
#define V4_HELD "r2bbd6abf500046b6b99e959a8c26611fa85b"
#define V4_SETTLED "r2bbd6abf500147a8ed92a6257df6b54d855d"
#define V4_CANCELLED "r2bbd6abf5002520a9dbf79ef4ce28b12f2d7"
#define V4_LATE "r2bbd6abf500304974eada0171a048f177de2"
#define V4_TAIL "r2bbd6abf50042cca609c376b13412682fda0"

Test(store_sqlite, a_store_written_at_7f87fcc_gets_schema_5_and_keeps_every_event_and_counter) {
    char path[600];
    temp_db(path, sizeof path);
    load_dump(path, "store-7f87fcc.sql");
    int64_t events = query_int(path, "SELECT count(*) FROM events");
    fake_clock clk = {T0 + 400 * S};
    dsc_ledger *l = open_at(path, &clk, 1);
    dsc_budget_state st[4];
    dsc_budget_state b = find(st, preview(l, st, 4), "team:*");
    cr_assert_eq(b.used, 10 * M, "3 settled, 5 expired - 3 late, 1 unreserved, 4 in the tail");
    cr_assert_eq(b.held, 5 * M, "the open hold is reloaded");
    dsc_hold_info h;
    cr_assert_eq(dsc_ledger_hold_get(l, V4_HELD, &h), DSC_OK);
    cr_assert(h.open);
    cr_assert_str_eq(h.owner, "k_1");
    cr_assert_str_eq(h.model, "gpt-4o");
    clk.now += 10 * S;
    dsc_ledger_tick(l); /* memory forgets the finished ones: the store recalls them */
    cr_assert_eq(settle_kind_of(l, V4_SETTLED), DSC_SETTLE_REPEATED);
    cr_assert_eq(settle_kind_of(l, V4_LATE), DSC_SETTLE_REPEATED);
    cr_assert_eq(settle_kind_of(l, V4_TAIL), DSC_SETTLE_REPEATED);
    dsc_error err;
    cr_assert_eq(dsc_ledger_cancel(l, &(dsc_cancel_req){V4_CANCELLED, NULL}, NULL, &err), DSC_OK,
                 "%s", err.message);
    dsc_amounts one = amt(DSC_METRIC_GCO2E, M);
    cr_assert_neq(settle_as(l, (dsc_settle_req){"u-1", &one, &ana, NULL}, NULL, NULL, &err), DSC_OK,
                  "an unreserved id is not charged twice");
    dsc_ledger_free(l);
    cr_assert_eq(query_int(path, "SELECT value FROM meta WHERE key = 'schema_version'"), 5);
    cr_assert_eq(query_int(path, "SELECT count(*) FROM events"), events, "nothing rewritten");
    cr_assert_eq(query_int(path, "SELECT count(*) FROM events WHERE finish_after_us IS NOT NULL"
                                 " OR held_gco2e IS NOT NULL"),
                 0);
    cr_assert_eq(query_int(path, "SELECT count(*) FROM reservations"), 6, "5 holds and u-1");
    cr_assert_eq(query_int(path, "SELECT sum(gco2e) FROM charges"), 10 * M);
    cr_assert_eq(query_int(path, "SELECT sum(gco2e) FROM usage_by_team_month"), 10 * M);
    cr_assert_eq(query_int(path, "SELECT count(*) FROM decisions"), 6);
    cr_assert_eq(query_int(path, "SELECT count(*) FROM reservations WHERE state = 'held'"
                                 " AND id = '" V4_HELD "' AND held_gco2e = 5000000"),
                 1);
    /* the old hold settled, and a new hold finished with its settle, in one batch */
    dsc_ledger_config cfg = {.store_path = path,
                             .now_us = fake_now,
                             .clock_ud = &clk,
                             .durability = DSC_DURABILITY_BATCH,
                             .batch_ms = 500};
    l = dsc_ledger_new(&cfg, &err);
    cr_assert(l, "%s", err.message);
    char rid[DSC_RESERVATION_ID_MAX];
    dsc_amounts five = amt(DSC_METRIC_GCO2E, 5 * M);
    dsc_decision_record d = {.decision_id = "d-new", .subject = ana, .key_id = "k_1"};
    cr_assert_eq(settle_as(l, (dsc_settle_req){V4_HELD, &one, NULL, NULL}, NULL, NULL, &err),
                 DSC_OK, "%s", err.message);
    cr_assert_eq(
        reserve_as(l, (dsc_reserve_req){&ana, &five, 60, NULL, &d}, rid, NULL, 0, NULL, NULL, &err),
        DSC_OK, "%s", err.message);
    cr_assert_eq(settle_as(l, (dsc_settle_req){rid, &five, NULL, NULL}, NULL, NULL, &err), DSC_OK,
                 "%s", err.message);
    dsc_ledger_free(l);
    cr_assert_eq(query_int(path, "SELECT count(*) FROM events WHERE type = 7"), 1);
    cr_assert_eq(query_int(path, "SELECT count(*) FROM reservations WHERE state = 'settled'"
                                 " AND id = '" V4_HELD "' AND charged_gco2e = 1000000"),
                 1, "a settle of the new code names the old hold");
    l = open_at(path, &clk, 1);
    b = find(st, preview(l, st, 4), "team:*");
    cr_assert_eq(b.used, 16 * M, "charged before and after the upgrade");
    cr_assert_eq(b.held, 0);
    dsc_ledger_free(l);
}

/* a commit writes whole pages: a new file has small ones, an older file keeps its own */
Test(store_sqlite, a_new_store_has_2_kib_pages_and_an_older_file_keeps_its_page_size) {
    char path[600], old[600];
    temp_db(path, sizeof path);
    dsc_ledger_free(open_at(path, NULL, 0));
    cr_assert_eq(query_int(path, "PRAGMA page_size"), 2048);
    temp_db(old, sizeof old);
    load_dump(old, "store-744e429.sql");
    cr_assert_eq(query_int(old, "PRAGMA page_size"), 4096);
    fake_clock clk = {T0 + 20 * S};
    dsc_ledger_free(open_at(old, &clk, 0));
    cr_assert_eq(query_int(old, "PRAGMA page_size"), 4096);
    cr_assert_eq(query_int(old, "SELECT count(*) FROM reservations"), 5);
}

/* --- backpressure: the queue the writer has not taken yet is bounded ------------ */

typedef struct producer {
    dsc_ledger *l;
    int n;
    _Atomic int done;
    _Atomic int failed;
} producer;

static void *produce(void *ud) {
    producer *p = ud;
    dsc_decision_record d = {
        .decision_id = "d", .subject = ana, .outcome = "allow", .policy = "carbon"};
    for (int i = 0; i < p->n; i++) {
        dsc_error err;
        if (dsc_ledger_record(p->l, &d, NULL, &err) != DSC_OK) p->failed++;
        p->done++;
    }
    return NULL;
}

Test(store_sqlite, callers_wait_for_the_writer_once_its_queue_is_full_and_nothing_is_lost) {
    char path[600];
    temp_db(path, sizeof path);
    dsc_ledger_config cfg = {.store_path = path, .durability = DSC_DURABILITY_OFF};
    dsc_error err;
    dsc_ledger *l = dsc_ledger_new(&cfg, &err);
    cr_assert(l, "%s", err.message);
    /* another connection holds the write lock: the writer's next batch waits for it */
    sqlite3 *db;
    cr_assert_eq(sqlite3_open(path, &db), SQLITE_OK);
    cr_assert_eq(sqlite3_exec(db, "BEGIN IMMEDIATE", NULL, NULL, NULL), SQLITE_OK);
    enum { N = 60000, QUEUE_BOUND = 4 * 4096, ONE_BATCH = 4096 };
    producer p = {.l = l, .n = N};
    pthread_t t;
    cr_assert_eq(pthread_create(&t, NULL, produce, &p), 0);
    int seen = -1;
    for (int i = 0; i < 40 && seen != p.done; i++) { /* until it stops advancing */
        seen = p.done;
        nanosleep(&(struct timespec){0, 50000000L}, NULL);
    }
    int stalled = p.done;
    cr_assert_lt(stalled, N, "%d records were queued while the writer could not write", stalled);
    cr_assert_leq(stalled, QUEUE_BOUND + ONE_BATCH + 1, "the queue grew to %d", stalled);
    cr_assert_eq(sqlite3_exec(db, "COMMIT", NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(db);
    pthread_join(t, NULL);
    cr_assert_eq(p.done, N);
    cr_assert_eq(p.failed, 0);
    dsc_ledger_free(l);
    cr_assert_eq(query_int(path, "SELECT count(*) FROM decisions"), N, "every record committed");
}

/* --- interning: the ids the writer keeps in memory ------------------------------ */

/* A decision for user, its reason and model copied into buffers of the caller's: the
 * same name arrives through a different pointer each time. */
typedef struct named_decision {
    char id[32], user[32], reason[512], model[32];
    dsc_decision_record d;
} named_decision;

static void name_decision(named_decision *n, const char *id, const char *user, const char *reason,
                          const char *model, unsigned warnings) {
    snprintf(n->id, sizeof n->id, "%s", id);
    snprintf(n->user, sizeof n->user, "%s", user);
    snprintf(n->reason, sizeof n->reason, "%s", reason);
    snprintf(n->model, sizeof n->model, "%s", model);
    n->d = (dsc_decision_record){.decision_id = n->id,
                                 .subject = {.org = "acme", .team = "infra", .user = n->user},
                                 .provider = "openai",
                                 .model = n->model,
                                 .outcome = "allow",
                                 .policy = "budgets",
                                 .reason = n->reason,
                                 .warnings = warnings};
}

static dsc_status record_named(dsc_ledger *l, const char *id, const char *user, const char *reason,
                               const char *model, unsigned warnings) {
    named_decision n;
    name_decision(&n, id, user, reason, model, warnings);
    dsc_error err;
    return dsc_ledger_record(l, &n.d, NULL, &err);
}

/* The warnings of DSC_WARN_* bits 0..2 as the views show them: SQL true when the
 * decision's warnings column holds exactly the names of bits b. */
#define WARNINGS_ARE(b)                                                                            \
    "ifnull(json_array_length(warnings), 0) = ((" b ") & 1) + ((" b ") >> 1 & 1) + ((" b           \
    ") >> 2 & 1) AND (ifnull(warnings, '') LIKE '%model-arch-not-released%') = ((" b ") & 1)"      \
    " AND (ifnull(warnings, '') LIKE '%model-arch-multimodal%') = ((" b ") >> 1 & 1)"              \
    " AND (ifnull(warnings, '') LIKE '%model-not-in-catalogue%') = ((" b ") >> 2 & 1)"

Test(store_sqlite, names_and_subjects_already_in_the_file_keep_their_ids_after_a_restart) {
    char path[600];
    temp_db(path, sizeof path);
    dsc_ledger *l = open_at(path, NULL, 0);
    cr_assert_eq(record_named(l, "d1", "ana", "within budget", "gpt-4o", 5), DSC_OK);
    dsc_ledger_free(l);
    l = open_at(path, NULL, 0); /* memory knows no id now; the file knows them all */
    cr_assert_eq(record_named(l, "d2", "ana", "within budget", "gpt-4o", 5), DSC_OK);
    cr_assert_eq(record_named(l, "d3", "bo", "a new reason", "gpt-4o", 2), DSC_OK);
    dsc_ledger_free(l);
    cr_assert_eq(query_int(path, "SELECT count(*) FROM names WHERE name = 'within budget'"), 1);
    cr_assert_eq(query_int(path, "SELECT count(*) FROM names WHERE name = 'gpt-4o'"), 1);
    cr_assert_eq(query_int(path, "SELECT count(*) FROM subjects WHERE user = 'ana'"), 1);
    cr_assert_eq(query_int(path, "SELECT count(*) FROM decisions WHERE decision_id IN ('d1', 'd2')"
                                 " AND user = 'ana' AND reason = 'within budget'"
                                 " AND model = 'gpt-4o' AND " WARNINGS_ARE("5")),
                 2);
    cr_assert_eq(query_int(path, "SELECT count(*) FROM decisions WHERE decision_id = 'd3'"
                                 " AND user = 'bo' AND reason = 'a new reason'"
                                 " AND model = 'gpt-4o' AND " WARNINGS_ARE("2")),
                 1);
}

Test(store_sqlite, many_distinct_names_and_subjects_in_turn_each_read_back_as_written) {
    char path[600];
    temp_db(path, sizeof path);
    dsc_ledger *l = open_at(path, NULL, 0);
    enum { N = 600, REASONS = 150, USERS = 120 }; /* more than any column's last-name memo */
    static const char *const models[] = {"gpt-4o", "gpt-4o-mini", "claude-3-haiku"};
    for (int i = 0; i < N; i++) {
        char id[32], user[32], reason[64];
        snprintf(id, sizeof id, "d%d", i);
        snprintf(user, sizeof user, "u%d", i % USERS);
        snprintf(reason, sizeof reason, "reason %d", i % REASONS);
        cr_assert_eq(record_named(l, id, user, reason, models[i % 3], (unsigned)i % 8), DSC_OK);
    }
    dsc_ledger_free(l);
#define I "CAST(substr(decision_id, 2) AS INTEGER)"
    cr_assert_eq(query_int(path, "SELECT count(*) FROM decisions WHERE user = 'u' || (" I " % 120)"
                                 " AND reason = 'reason ' || (" I " % 150) AND model ="
                                 " CASE " I " % 3 WHEN 0 THEN 'gpt-4o' WHEN 1 THEN 'gpt-4o-mini'"
                                 " ELSE 'claude-3-haiku' END AND " WARNINGS_ARE(I " % 8")),
                 N, "every decision reads back its own names");
#undef I
    cr_assert_eq(query_int(path, "SELECT count(*) FROM names WHERE name LIKE 'reason %'"), REASONS);
    cr_assert_eq(query_int(path, "SELECT count(*) FROM subjects"), USERS, "each subject once");
}

Test(store_sqlite, a_name_first_written_by_a_batch_that_rolled_back_is_written_again) {
    char path[600];
    temp_db(path, sizeof path);
    /* a long batch: the two decisions below are queued well within one */
    dsc_ledger_config cfg = {
        .store_path = path, .durability = DSC_DURABILITY_BATCH, .batch_ms = 1000};
    dsc_error err;
    dsc_ledger *l = dsc_ledger_new(&cfg, &err);
    cr_assert(l, "%s", err.message);
    cr_assert_eq(record_named(l, "d0", "ana", "within budget", "gpt-4o", 0), DSC_OK);
    cr_assert_eq(dsc_ledger_sync(l, NULL, &err), DSC_OK, "%s", err.message);
    /* the file may not grow any more: as if the disk were full */
    cr_assert_eq(dsc__ledger_store_exec(l, "PRAGMA max_page_count = 1", &err), DSC_OK);
    /* one batch: a decision whose new warnings set fits, one whose verdicts cannot */
    named_decision big;
    name_decision(&big, "d-big", "ana", "within budget", "gpt-4o", 0);
    static char verdicts[2000];
    memset(verdicts, 'v', sizeof verdicts - 1);
    big.d.verdicts = verdicts;
    cr_assert_eq(record_named(l, "d-lost", "ana", "within budget", "gpt-4o", 6), DSC_OK);
    cr_assert_eq(dsc_ledger_record(l, &big.d, NULL, &err), DSC_OK, "%s", err.message);
    cr_assert_neq(dsc_ledger_sync(l, NULL, &err), DSC_OK, "the store never filled up");
    cr_assert_eq(dsc__ledger_store_exec(l, "PRAGMA max_page_count = 1073741823", &err), DSC_OK);
    dsc_status st = DSC_STORE_UNAVAILABLE;
    for (int i = 0; i < 100 && st != DSC_OK; i++) { /* until the writer's probe succeeds */
        nanosleep(&(struct timespec){0, 50000000L}, NULL);
        st = record_named(l, "d-again", "ana", "within budget", "gpt-4o", 6);
    }
    cr_assert_eq(st, DSC_OK);
    dsc_ledger_free(l);
    cr_assert_eq(query_int(path, "SELECT count(*) FROM decisions WHERE decision_id = 'd-lost'"), 0,
                 "the batch rolled back");
    cr_assert_eq(query_int(path, "SELECT count(*) FROM decisions WHERE decision_id = 'd-again'"
                                 " AND " WARNINGS_ARE("6")),
                 1, "the names the failed batch added are there again");
}

Test(store_sqlite, a_checkpoint_adds_every_subjects_sums_to_rollups_however_many_there_are) {
    char path[600];
    temp_db(path, sizeof path);
    fake_clock clk = {T0};
    dsc_ledger *l = open_at(path, &clk, 0);
    enum { USERS = 41 }; /* more than one statement's rows, and some left over */
    static dsc_subject subjects[USERS];
    static char users[USERS][16];
    dsc_error err;
    for (int n = 0; n < 2 * USERS; n++) {
        int i = n % USERS;
        snprintf(users[i], sizeof users[i], "u%d", i);
        subjects[i] = (dsc_subject){.org = "acme", .team = "infra", .user = users[i]};
        char rid[32];
        snprintf(rid, sizeof rid, "u-%d", n);
        dsc_amounts a = amt(DSC_METRIC_GCO2E, (i + 1) * M);
        cr_assert_eq(settle_as(l, (dsc_settle_req){rid, &a, &subjects[i], NULL}, NULL, NULL, &err),
                     DSC_OK, "%s", err.message);
    }
    clk.now += 120 * S; /* the next batch takes a checkpoint: every sum so far is flushed */
    dsc_subject late = {.org = "acme", .team = "infra", .user = "late"};
    dsc_amounts one = amt(DSC_METRIC_GCO2E, M);
    cr_assert_eq(settle_as(l, (dsc_settle_req){"u-late", &one, &late, NULL}, NULL, NULL, &err),
                 DSC_OK, "%s", err.message);
    dsc_ledger_free(l);
    cr_assert_eq(query_int(path, "SELECT count(*) FROM (SELECT s.user FROM rollups r"
                                 " JOIN subjects s ON s.id = r.subject WHERE s.user != 'late'"
                                 " GROUP BY s.user HAVING sum(r.gco2e) = 2000000 *"
                                 " (CAST(substr(s.user, 2) AS INTEGER) + 1))"),
                 USERS, "each subject's two charges, rolled up");
    cr_assert_eq(query_int(path, "SELECT count(*) FROM rollups r JOIN subjects s"
                                 " ON s.id = r.subject WHERE s.user != 'late'"
                                 " AND r.requests != 0"),
                 0, "no other metric");
}
