/* test_ledger_tsan.c - the ledger's threaded paths all at once, as a plain program so
 * that it runs under ThreadSanitizer too (Criterion cannot: see tests/server/
 * CMakeLists.txt; scripts/test.sh runs this in its TSan pass). Eight threads reserve,
 * settle and cancel on overlapping subjects while others preview, list counters,
 * read stats, expire holds, and change, add and delete budgets; once in memory and
 * once over a SQLite store (holds acknowledged when queued, settles waiting for their
 * commit, new budgets read from the store). Exits 1 on a broken invariant: a limit
 * overshot, or usage that is not what was charged. */
#include "discern/ledger.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#define M DSC_MICRO
#define TEAMS 4
#define WORKERS 8

typedef struct run {
    dsc_ledger *l;
    int rounds;
    _Atomic int64_t charged[TEAMS];
    _Atomic int stop, next, violations, failures, held;
} run;

static int failed;

static void check(bool ok, const char *what) {
    if (ok) return;
    fprintf(stderr, "test_ledger_tsan: %s\n", what);
    failed = 1;
}

static dsc_subject subject_of(int i, char user[16]) {
    static const char *const teams[TEAMS] = {"t0", "t1", "t2", "t3"};
    snprintf(user, 16, "u%d", i);
    return (dsc_subject){.org = "acme", .team = teams[i % TEAMS], .user = user};
}

static dsc_amounts gco2e(int64_t v) {
    dsc_amounts a = {{0}};
    a.v[DSC_METRIC_GCO2E] = v;
    return a;
}

static void set_budget(dsc_ledger *l, const char *sel, const char *win, double limit, bool rm) {
    dsc_error err;
    dsc_status st = dsc_ledger_budget(l, &(dsc_budget_req){sel, DSC_METRIC_GCO2E, win, limit, rm},
                                      NULL, NULL, &err);
    check(st == DSC_OK || (rm && st == DSC_UNKNOWN_BUDGET), err.message);
}

static void *worker(void *arg) {
    run *r = arg;
    int me = atomic_fetch_add(&r->next, 1);
    char user[16];
    dsc_subject s = subject_of(me, user);
    unsigned seed = (unsigned)me * 2654435761u + 7;
    for (int i = 0; i < r->rounds; i++) {
        seed = seed * 1103515245u + 12345u;
        int64_t want = (int64_t)(seed >> 16) % 40 + 1;
        dsc_amounts a = gco2e(want * M);
        dsc_reserve_out out = {0};
        if (dsc_ledger_reserve(r->l, &(dsc_reserve_req){&s, &a, 60, NULL, NULL}, &out, NULL,
                               NULL) != DSC_OK)
            continue;
        r->held++;
        if ((seed >> 4) % 4 == 0) {
            if (dsc_ledger_cancel(r->l, &(dsc_cancel_req){out.reservation_id, NULL}, NULL, NULL) !=
                DSC_OK)
                r->failures++;
            continue;
        }
        int64_t actual = (int64_t)(seed >> 8) % (want * M + 1);
        dsc_amounts act = gco2e(actual);
        if (dsc_ledger_settle(r->l, &(dsc_settle_req){out.reservation_id, &act, NULL, NULL}, NULL,
                              NULL, NULL) == DSC_OK)
            r->charged[me % TEAMS] += actual;
        else
            r->failures++;
    }
    return NULL;
}

/* Previews (used + held within every limit that binds), counter lists and stats. */
static void *reader(void *arg) {
    run *r = arg;
    for (int i = 0; !r->stop; i = (i + 1) % WORKERS) {
        char user[16];
        dsc_subject s = subject_of(i, user);
        dsc_budget_state st[8];
        size_t n = 0, total = 0;
        dsc_ledger_preview(r->l, &s, NULL, st, 8, &n, NULL);
        for (size_t k = 0; k < n && k < 8; k++)
            if (strcmp(st[k].window, "year") == 0 && st[k].used + st[k].held > st[k].limit)
                r->violations++;
        dsc_ledger_counter_list(r->l, 0, st, 8, &n, &total, NULL);
        dsc_ledger_stats stats;
        dsc_ledger_stats_get(r->l, &stats);
        dsc_ledger_tick(r->l);
    }
    return NULL;
}

/* Budgets that come and go, and a limit that moves, while the workers run: a
 * rolling budget that binds nothing (its limit is far above any use) and a day
 * budget per round. */
static void *changer(void *arg) {
    run *r = arg;
    for (int i = 0; !r->stop; i++) {
        set_budget(r->l, "user:*", "rolling:1h", 1e6 + i % 7, false);
        set_budget(r->l, "org:acme/team:*", "day", 1e6, (i & 1) != 0);
        nanosleep(&(struct timespec){0, 1000000}, NULL);
    }
    return NULL;
}

static void run_all(dsc_ledger *l, int rounds, const char *what) {
    run r = {.l = l, .rounds = rounds};
    set_budget(l, "org:*", "year", 20000, false);
    set_budget(l, "team:*", "year", 6000, false);
    pthread_t w[WORKERS], rd, ch;
    pthread_create(&rd, NULL, reader, &r);
    pthread_create(&ch, NULL, changer, &r);
    for (int i = 0; i < WORKERS; i++)
        pthread_create(&w[i], NULL, worker, &r);
    for (int i = 0; i < WORKERS; i++)
        pthread_join(w[i], NULL);
    r.stop = 1;
    pthread_join(rd, NULL);
    pthread_join(ch, NULL);
    dsc_ledger_sync(l, NULL, NULL);
    int64_t total = 0;
    for (int t = 0; t < TEAMS; t++) {
        char user[16];
        dsc_subject s = subject_of(t, user);
        dsc_budget_state st[8];
        size_t n = 0;
        dsc_ledger_preview(l, &s, NULL, st, 8, &n, NULL);
        for (size_t k = 0; k < n && k < 8; k++) {
            if (strcmp(st[k].window, "year") != 0) continue;
            check(st[k].held == 0, "a hold is left");
            check(st[k].used <= st[k].limit, "a limit is overshot");
            if (strcmp(st[k].selector, "team:*") == 0)
                check(st[k].used == r.charged[t], "a team's usage is not what was charged");
            if (strcmp(st[k].selector, "org:*") == 0 && t == 0) total = -st[k].used;
        }
    }
    for (int t = 0; t < TEAMS; t++)
        total += r.charged[t];
    check(total == 0, "the org's usage is not what was charged");
    check(r.violations == 0, "used + held exceeded a limit");
    check(r.failures == 0, "a settle or cancel failed");
    check(r.held > 0, "no hold was taken");
    printf("test_ledger_tsan: %s: %d holds, %d failures, %d violations\n", what, (int)r.held,
           (int)r.failures, (int)r.violations);
}

int main(void) {
    dsc_error err;
    dsc_ledger *l = dsc_ledger_new(NULL, &err);
    if (!l) return fprintf(stderr, "%s\n", err.message), 1;
    run_all(l, 3000, "memory");
    dsc_ledger_free(l);

    char dir[512], path[600];
    snprintf(dir, sizeof dir, "%s/ledger-tests", DISCERN_BINARY_DIR);
    mkdir(dir, 0755);
    snprintf(dir, sizeof dir, "%s/ledger-tests/tsanXXXXXX", DISCERN_BINARY_DIR);
    if (!mkdtemp(dir)) return perror("mkdtemp"), 1;
    snprintf(path, sizeof path, "%s/discern.db", dir);
    dsc_ledger_config cfg = {.store_path = path, .durability = DSC_DURABILITY_FULL};
    if (!(l = dsc_ledger_new(&cfg, &err))) return fprintf(stderr, "%s\n", err.message), 1;
    run_all(l, 150, "store");
    dsc_ledger_free(l);
    return failed;
}
