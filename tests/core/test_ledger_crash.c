/* test_ledger_crash.c - what kill -9 can take from a ledger with a store: a check's
 * hold is acknowledged once queued (one commit wait per decision, the settle's), so a
 * crash may lose the holds of the last batch but never an acknowledged settle; after
 * the restart a lost hold's settle is charged as unreserved usage, and a made-up id
 * of the ledger's shape outside that gap stays unknown. */
#include "discern/ledger.h"
#include "ledger_calls.h"

#include <criterion/criterion.h>
#include <pthread.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define M DSC_MICRO

static const dsc_subject ana = {.org = "acme", .team = "infra", .user = "ana"};

/* A fresh database path under the build tree's ledger-tests/ (kept for inspection). */
static void temp_db(char *path, size_t len) {
    char dir[512];
    snprintf(dir, sizeof dir, "%s/ledger-tests", DISCERN_BINARY_DIR);
    mkdir(dir, 0755);
    snprintf(dir, sizeof dir, "%s/ledger-tests/crashXXXXXX", DISCERN_BINARY_DIR);
    cr_assert(mkdtemp(dir), "mkdtemp");
    snprintf(path, len, "%s/discern.db", dir);
}

static dsc_ledger *open_at(const char *path) {
    dsc_ledger_config cfg = {.store_path = path};
    dsc_error err;
    dsc_ledger *l = dsc_ledger_new(&cfg, &err);
    cr_assert(l, "%s", err.message);
    return l;
}

static dsc_amounts gco2e(int64_t v) {
    dsc_amounts a = {{0}};
    a.v[DSC_METRIC_GCO2E] = v;
    return a;
}

static int64_t used(dsc_ledger *l) {
    dsc_budget_state st[2];
    size_t n = 0;
    cr_assert_eq(dsc_ledger_preview(l, &ana, NULL, st, 2, &n, NULL), DSC_OK);
    cr_assert_eq(n, 1);
    return st[0].used;
}

static void budget(const char *path) {
    dsc_ledger *l = open_at(path);
    cr_assert_eq(dsc_ledger_budget(l, &(dsc_budget_req){"*", DSC_METRIC_GCO2E, "year", 1e9, false},
                                   NULL, NULL, NULL),
                 DSC_OK);
    dsc_ledger_free(l);
}

/* Settle rid for ana with amount; its kind (the call must succeed). */
static dsc_settle_kind settle(dsc_ledger *l, const char *rid, int64_t amount) {
    dsc_amounts a = gco2e(amount);
    dsc_settle_out out = {DSC_SETTLE_RESERVED};
    dsc_error err;
    dsc_status st = settle_as(l, (dsc_settle_req){rid, &a, &ana, NULL}, &out, NULL, &err);
    cr_assert_eq(st, DSC_OK, "settle of %s: %s", rid, err.message);
    return out.kind;
}

/* --- random kills under check + settle ------------------------------------------ */

/* What a child reports: a hold acknowledged (settled false, with the amount it is
 * about to settle), then its settle acknowledged. */
typedef struct report {
    char rid[DSC_RESERVATION_ID_MAX];
    int64_t amount;
    bool settled;
} report;

static void child_checks_and_settles(const char *path, int fd, unsigned seed) {
    dsc_ledger *l = open_at(path);
    for (;;) {
        seed = seed * 1103515245u + 12345u;
        report r = {.amount = (int64_t)(seed >> 8) % 1000 + 1};
        dsc_amounts hold = gco2e(1000);
        if (reserve_as(l, (dsc_reserve_req){&ana, &hold, 3600, NULL, NULL}, r.rid, NULL, 0, NULL,
                       NULL, NULL) != DSC_OK)
            _exit(2);
        if (write(fd, &r, sizeof r) != (ssize_t)sizeof r) _exit(4);
        dsc_amounts act = gco2e(r.amount);
        if (settle_as(l, (dsc_settle_req){r.rid, &act, NULL, NULL}, NULL, NULL, NULL) != DSC_OK)
            _exit(3);
        r.settled = true;
        if (write(fd, &r, sizeof r) != (ssize_t)sizeof r) _exit(4);
    }
}

/* Run one child for a random while and kill it; its reports into reps. */
static size_t one_round(const char *path, unsigned seed, report *reps, size_t max) {
    int p[2];
    cr_assert_eq(pipe(p), 0);
    pid_t pid = fork();
    cr_assert_geq(pid, 0);
    if (pid == 0) {
        close(p[0]);
        child_checks_and_settles(path, p[1], seed);
    }
    close(p[1]);
    struct timespec ts = {0, (30 + rand() % 200) * 1000000L};
    nanosleep(&ts, NULL);
    kill(pid, SIGKILL);
    int status;
    waitpid(pid, &status, 0);
    cr_assert(WIFSIGNALED(status), "child exited by itself (%d)", WEXITSTATUS(status));
    size_t n = 0;
    while (n < max && read(p[0], &reps[n], sizeof reps[n]) == (ssize_t)sizeof reps[n])
        n++;
    close(p[0]);
    return n;
}

Test(ledger_crash, kill_9_loses_no_acknowledged_settle_and_every_acknowledged_hold_is_charged) {
    char path[600];
    temp_db(path, sizeof path);
    budget(path);
    enum { MAX_REPORTS = 400000, ROUNDS = 12 };
    report *reps = malloc(MAX_REPORTS * sizeof *reps);
    int64_t expected = 0;
    size_t settles = 0, kinds[4] = {0};
    srand((unsigned)time(NULL));
    for (int round = 0; round < ROUNDS; round++) {
        size_t n = one_round(path, (unsigned)round * 2654435761u + 7, reps, MAX_REPORTS);
        dsc_ledger *l = open_at(path);
        for (size_t i = 0; i < n; i++) {
            if (reps[i].settled) {
                settles++;
                cr_assert_eq(settle(l, reps[i].rid, reps[i].amount), DSC_SETTLE_REPEATED,
                             "acknowledged settle of %s lost", reps[i].rid);
                continue;
            }
            expected += reps[i].amount;
            if (i + 1 < n) continue; /* its settle follows in the reports */
            /* the hold acknowledged last, its settle never acknowledged: the store has
             * the hold, or the settle too, or neither (lost); charged once either way */
            kinds[settle(l, reps[i].rid, reps[i].amount)]++;
        }
        cr_assert_eq(used(l), expected, "round %d: every acknowledged hold charged once", round);
        dsc_ledger_free(l);
    }
    cr_log_info("%zu settles acknowledged; open holds at the kill: %zu durable, %zu settled, "
                "%zu lost",
                settles, kinds[DSC_SETTLE_RESERVED], kinds[DSC_SETTLE_REPEATED],
                kinds[DSC_SETTLE_UNRESERVED]);
    cr_assert_gt(settles, (size_t)ROUNDS, "the children acknowledged only %zu settles", settles);
    cr_assert_eq(kinds[DSC_SETTLE_LATE], 0);
    free(reps);
}

/* --- a hold that surely was lost --------------------------------------------------- */

/* The child: open the ledger, say so, wait until the parent holds the database's write
 * lock, take n holds (acknowledged while the writer cannot commit), report their ids
 * and wait to be killed. */
static void child_holds_while_locked(const char *path, int out, int in, int n) {
    dsc_ledger *l = open_at(path);
    char c = 'o';
    if (write(out, &c, 1) != 1 || read(in, &c, 1) != 1) _exit(4);
    for (int i = 0; i < n; i++) {
        char rid[DSC_RESERVATION_ID_MAX];
        dsc_amounts hold = gco2e(50 * M);
        if (reserve_as(l, (dsc_reserve_req){&ana, &hold, 3600, NULL, NULL}, rid, NULL, 0, NULL,
                       NULL, NULL) != DSC_OK)
            _exit(2);
        if (write(out, rid, sizeof rid) != (ssize_t)sizeof rid) _exit(4);
    }
    for (;;)
        pause();
}

/* An id of the ledger's shape with order counter v. */
static void made_up_id(char *out, uint64_t v) {
    snprintf(out, DSC_RESERVATION_ID_MAX, "r%012llx0123456789abcdef01234567",
             (unsigned long long)(v & 0xffffffffffffULL));
}

static uint64_t order_of(const char *rid) {
    char hex[13];
    memcpy(hex, rid + 1, 12);
    hex[12] = '\0';
    return strtoull(hex, NULL, 16);
}

Test(ledger_crash, a_hold_lost_before_its_commit_is_charged_by_its_settle_and_only_once) {
    char path[600];
    temp_db(path, sizeof path);
    budget(path);
    /* one durable hold, settled: the newest id the store keeps */
    dsc_ledger *l = open_at(path);
    char durable[DSC_RESERVATION_ID_MAX];
    dsc_amounts hold = gco2e(50 * M);
    cr_assert_eq(reserve_as(l, (dsc_reserve_req){&ana, &hold, 3600, NULL, NULL}, durable, NULL, 0,
                            NULL, NULL, NULL),
                 DSC_OK);
    cr_assert_eq(settle(l, durable, 5 * M), DSC_SETTLE_RESERVED);
    dsc_ledger_free(l);

    enum { N = 3 };
    int up[2], down[2];
    cr_assert_eq(pipe(up), 0);
    cr_assert_eq(pipe(down), 0);
    pid_t pid = fork();
    cr_assert_geq(pid, 0);
    if (pid == 0) {
        close(up[0]);
        close(down[1]);
        child_holds_while_locked(path, up[1], down[0], N);
    }
    close(up[1]);
    close(down[0]);
    char c;
    cr_assert_eq(read(up[0], &c, 1), 1, "the child did not open the ledger");
    sqlite3 *db;
    cr_assert_eq(sqlite3_open(path, &db), SQLITE_OK);
    cr_assert_eq(sqlite3_exec(db, "BEGIN IMMEDIATE", NULL, NULL, NULL), SQLITE_OK, "%s",
                 sqlite3_errmsg(db));
    cr_assert_eq(write(down[1], "g", 1), 1);
    char lost[N][DSC_RESERVATION_ID_MAX];
    for (int i = 0; i < N; i++)
        cr_assert_eq(read(up[0], lost[i], sizeof lost[i]), (ssize_t)sizeof lost[i],
                     "the hold was not acknowledged while the store could not commit");
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
    sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
    sqlite3_close(db);
    close(up[0]);
    close(down[1]);

    l = open_at(path);
    cr_assert_eq(used(l), 5 * M);
    dsc_hold_info h;
    for (int i = 0; i < N; i++) {
        cr_assert_eq(dsc_ledger_hold_get(l, lost[i], &h), DSC_UNKNOWN_RESERVATION,
                     "the hold is lost");
        cr_assert_eq(settle(l, lost[i], 7 * M), DSC_SETTLE_UNRESERVED,
                     "its settle is still charged");
        cr_assert_eq(settle(l, lost[i], 7 * M), DSC_SETTLE_REPEATED, "and only once");
    }
    cr_assert_eq(settle(l, durable, 5 * M), DSC_SETTLE_REPEATED);
    cr_assert_eq(used(l), (5 + 7 * N) * M);
    /* made-up ids of the ledger's shape outside the gap stay unknown: one before the
     * newest stored id, one after this ledger's first */
    char before[DSC_RESERVATION_ID_MAX], after[DSC_RESERVATION_ID_MAX];
    made_up_id(before, order_of(durable) - 1);
    made_up_id(after, order_of(lost[N - 1]) + 3600ULL * 1000000);
    dsc_amounts a = gco2e(M);
    dsc_error err;
    cr_assert_eq(settle_as(l, (dsc_settle_req){before, &a, &ana, NULL}, NULL, NULL, &err),
                 DSC_UNKNOWN_RESERVATION, "%s", before);
    cr_assert_eq(settle_as(l, (dsc_settle_req){after, &a, &ana, NULL}, NULL, NULL, &err),
                 DSC_UNKNOWN_RESERVATION, "%s", after);
    cr_assert_eq(used(l), (5 + 7 * N) * M);
    /* this ledger's own ids come after the gap */
    char fresh[DSC_RESERVATION_ID_MAX];
    cr_assert_eq(reserve_as(l, (dsc_reserve_req){&ana, &hold, 3600, NULL, NULL}, fresh, NULL, 0,
                            NULL, NULL, NULL),
                 DSC_OK);
    cr_assert_gt(strcmp(fresh, lost[N - 1]), 0);
    dsc_ledger_free(l);
}

/* --- holds from many threads reach the log in the order of their ids ------------ */

typedef struct orderly {
    dsc_ledger *l;
    _Atomic int failures;
} orderly;

static void *hold_many(void *arg) {
    orderly *o = arg;
    for (int i = 0; i < 1500; i++) {
        char rid[DSC_RESERVATION_ID_MAX];
        dsc_amounts hold = gco2e(M);
        if (reserve_as(o->l, (dsc_reserve_req){&ana, &hold, 3600, NULL, NULL}, rid, NULL, 0, NULL,
                       NULL, NULL) != DSC_OK)
            o->failures++;
    }
    return NULL;
}

/* The lost-hold gap (the ids after the newest durable one) and the store's search for
 * a forgotten hold both count on ids reaching the log in the order of their counters:
 * a hold's id order is taken as its record is queued, whatever the threads. */
Test(ledger_crash, holds_taken_on_eight_threads_reach_the_log_in_the_order_of_their_ids) {
    char path[600];
    temp_db(path, sizeof path);
    budget(path);
    orderly o = {.l = open_at(path)};
    pthread_t t[8];
    for (int i = 0; i < 8; i++)
        pthread_create(&t[i], NULL, hold_many, &o);
    for (int i = 0; i < 8; i++)
        pthread_join(t[i], NULL);
    cr_assert_eq(o.failures, 0);
    dsc_ledger_free(o.l);

    sqlite3 *db;
    cr_assert_eq(sqlite3_open(path, &db), SQLITE_OK);
    sqlite3_stmt *st;
    cr_assert_eq(sqlite3_prepare_v2(db,
                                    "SELECT lower(hex(substr(rid, 1, 6))) FROM events"
                                    " WHERE type IN (1, 2) ORDER BY seq",
                                    -1, &st, NULL),
                 SQLITE_OK, "%s", sqlite3_errmsg(db));
    char prev[13] = "";
    int n = 0, out_of_order = 0;
    while (sqlite3_step(st) == SQLITE_ROW) {
        const char *order = (const char *)sqlite3_column_text(st, 0);
        cr_assert(order && strlen(order) == 12, "a hold's id in the log: %s", order);
        if (n++ && strcmp(order, prev) <= 0) out_of_order++;
        memcpy(prev, order, sizeof prev);
    }
    sqlite3_finalize(st);
    sqlite3_close(db);
    cr_assert_eq(n, 8 * 1500, "every hold is in the log");
    cr_assert_eq(out_of_order, 0, "%d holds reached the log after a hold with a later id",
                 out_of_order);
}

/* --- a store written before ids named their shard ---------------------------------- */

/* A hold for a request, stored by a ledger whose ids did not name their shard (its
 * id's last digit is rewritten in the file, as any id of an older ledger could be),
 * is found again after a restart by its request id and by its id. */
Test(ledger_crash, a_stored_hold_whose_id_names_another_shard_than_its_request_is_found_by_both) {
    char path[600];
    temp_db(path, sizeof path);
    budget(path);
    dsc_ledger *l = open_at(path);
    char rid[DSC_RESERVATION_ID_MAX];
    dsc_amounts hold = gco2e(50 * M);
    cr_assert_eq(reserve_as(l, (dsc_reserve_req){&ana, &hold, 3600, "req-1", NULL}, rid, NULL, 0,
                            NULL, NULL, NULL),
                 DSC_OK);
    dsc_ledger_free(l);

    char old[DSC_RESERVATION_ID_MAX];
    memcpy(old, rid, sizeof old);
    size_t last = strlen(old) - 1;
    old[last] = old[last] == '0' ? '1' : '0'; /* another shard */
    sqlite3 *db;
    cr_assert_eq(sqlite3_open(path, &db), SQLITE_OK);
    char sql[256];
    snprintf(sql, sizeof sql, "UPDATE events SET rid = x'%s' WHERE rid = x'%s'", old + 1, rid + 1);
    cr_assert_eq(sqlite3_exec(db, sql, NULL, NULL, NULL), SQLITE_OK, "%s", sqlite3_errmsg(db));
    cr_assert_eq(sqlite3_changes(db), 1, "the hold's event");
    sqlite3_close(db);

    l = open_at(path);
    char again[DSC_RESERVATION_ID_MAX];
    cr_assert_eq(reserve_as(l, (dsc_reserve_req){&ana, &hold, 3600, "req-1", NULL}, again, NULL, 0,
                            NULL, NULL, NULL),
                 DSC_OK);
    cr_assert_str_eq(again, old, "the repeated check finds the stored hold");
    dsc_hold_info h;
    cr_assert_eq(dsc_ledger_hold_get(l, old, &h), DSC_OK);
    cr_assert(h.open);
    cr_assert_eq(settle(l, old, 5 * M), DSC_SETTLE_RESERVED);
    cr_assert_eq(used(l), 5 * M);
    dsc_ledger_free(l);
}
