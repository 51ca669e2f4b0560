/*
 * bench_ledger.c - what the ledger costs: prints each measurement on one line.
 *
 *   bench_ledger [dir] [what...]
 *     dir    where the SQLite files go (default: bench-ledger-data, created)
 *     what   any of: memory durable rss restart (default: all)
 *
 *   memory   reserve+settle pairs per second, in memory, one thread, subjects
 *            spread over 3 budgets each (org:*, team:*, user:*)
 *   pairs    the same from 1 thread, from 2 threads on subjects with nothing in common
 *            (orgs, teams and users of their own), and from 2 threads sharing orgs
 *            and teams (users of their own)
 *   durable  settles per second with durability full, many threads, group commit
 *            (also batch and off for comparison)
 *   rss      resident memory with 100,000 budgets, each with a counter
 *   restart  dsc_ledger_new over a store holding 1,000,000 charge records
 *   fill [N [D]] N decisions (a hold with its check's decision, then its settle;
 *            default 10,000,000) spread over 30 days, written with durability off and
 *            a journal retention of D days (default 0: none); then the store's bytes
 *            per decision, dsc_ledger_new over it, and a new team:* budget over all of
 *            it in effect, then a new team:* rolling:30d one (the file stays as
 *            DIR/fill-N[-D].db; a later run reuses it when DIR/fill-N[-D].db.done
 *            says its fill ran to the end, and fills anew otherwise)
 *   checks   what a server's check + settle costs the ledger with durability full:
 *            64 000 checks (async reserve + async decision record) then their
 *            settles, from 2 threads with 512 checks or settles in flight; wall rate and process
 * CPU (all threads, the writer's SQLite work included) per check and settle checks1  the same with
 * dsc_ledger_reserve with a decision (hold + decision, one record)
 *   checks1-16  checks1 with 16 in flight: small commits, like a server's few
 *            connections (what a commit writes is per page, not per record)
 *   pairs1   checks1's checks, each followed at once by its settle, 512 in flight: a
 *            hold and its settle meet in one batch (one row per decision)
 *   pairs1-16  pairs1 with 16 in flight
 *   pairs1-1   4 000 pairs, one in flight: one decision per commit (a server at
 *            pipeline 1 with few connections), where a commit writes whole pages
 */
#include "discern/ledger.h"

#include <dirent.h>
#include <pthread.h>
#include <sched.h>
#include <semaphore.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <malloc.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* dsc_ledger_reserve with the reply spread out: the id into rid (may be NULL), the
 * budgets that would be exceeded into ex[0..max), their count into *nex. */
static dsc_status reserve_as(dsc_ledger *l, dsc_reserve_req req, char *rid, dsc_budget_state *ex,
                             size_t max, size_t *nex, const dsc_done *done, dsc_error *err) {
    dsc_reserve_out out = {.exceeded = ex, .max_exceeded = max};
    dsc_status st = dsc_ledger_reserve(l, &req, &out, done, err);
    if (rid) memcpy(rid, out.reservation_id, DSC_RESERVATION_ID_MAX);
    if (nex) *nex = out.n_exceeded;
    return st;
}

/* dsc_ledger_settle with the request by value; out (may be NULL) must outlive done. */
static dsc_status settle_as(dsc_ledger *l, dsc_settle_req req, dsc_settle_out *out,
                            const dsc_done *done, dsc_error *err) {
    return dsc_ledger_settle(l, &req, out, done, err);
}

#define M DSC_MICRO

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static double cpu_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Times this process blocked (voluntary context switches): a thread waiting for a
 * lock another holds sleeps in the kernel, so this counts lock waits, whatever share
 * of the cores the machine leaves to the run. */
static long blocked_count(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_nvcsw;
}

/* CPU seconds of the store's writer thread (named "dsc-store"), from /proc. */
static double writer_cpu_s(void) {
    DIR *d = opendir("/proc/self/task");
    struct dirent *e;
    double total = 0;
    while (d && (e = readdir(d))) {
        char path[300], comm[32] = "", stat[1024];
        snprintf(path, sizeof path, "/proc/self/task/%s/comm", e->d_name);
        FILE *f = fopen(path, "r");
        if (!f) continue;
        if (!fgets(comm, sizeof comm, f)) comm[0] = '\0';
        fclose(f);
        if (strncmp(comm, "dsc-store", 9) != 0) continue;
        snprintf(path, sizeof path, "/proc/self/task/%s/stat", e->d_name);
        if (!(f = fopen(path, "r"))) continue;
        size_t n = fread(stat, 1, sizeof stat - 1, f);
        fclose(f);
        stat[n] = '\0';
        unsigned long ut = 0, st = 0;
        const char *p = strrchr(stat, ')');
        if (p &&
            sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &ut, &st) == 2)
            total += (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
    }
    if (d) closedir(d);
    return total;
}

/* A counter of /proc/self/io so far: "wchar" (bytes passed to write() and pwrite()) or
 * "write_bytes" (bytes of the page cache it dirtied for storage: whole 4 KiB pages). */
static long long io_count(const char *name) {
    FILE *f = fopen("/proc/self/io", "r");
    char line[128], fmt[48];
    long long v = -1;
    snprintf(fmt, sizeof fmt, "%s: %%lld", name);
    while (f && fgets(line, sizeof line, f))
        if (sscanf(line, fmt, &v) == 1) break;
    if (f) fclose(f);
    return v;
}

static long long written_bytes(void) {
    return io_count("wchar");
}

static long long file_bytes(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 ? (long long)st.st_size : 0;
}

static long rss_kb(void) {
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    long kb = -1;
    while (f && fgets(line, sizeof line, f))
        if (sscanf(line, "VmRSS: %ld kB", &kb) == 1) break;
    if (f) fclose(f);
    return kb;
}

static dsc_ledger *open_ledger(const char *path, dsc_durability d, int64_t (*clock)(void *),
                               void *ud) {
    dsc_ledger_config cfg = {.store_path = path, .durability = d, .now_us = clock, .clock_ud = ud};
    dsc_error err;
    dsc_ledger *l = dsc_ledger_new(&cfg, &err);
    if (!l) {
        fprintf(stderr, "bench_ledger: %s\n", err.message);
        exit(1);
    }
    return l;
}

static void set_budget(dsc_ledger *l, const char *sel, dsc_metric m, const char *w, double lim) {
    dsc_error err;
    if (dsc_ledger_budget(l, &(dsc_budget_req){sel, m, w, lim, false}, NULL, NULL, &err) !=
        DSC_OK) {
        fprintf(stderr, "bench_ledger: budget %s: %s\n", sel, err.message);
        exit(1);
    }
}

static void subject_of(int i, char *org, char *team, char *user, dsc_subject *s) {
    sprintf(org, "org%d", i % 5);
    sprintf(team, "team%d", i % 50);
    sprintf(user, "user%d", i % 1000);
    *s = (dsc_subject){.org = org, .team = team, .user = user};
}

static void three_budgets(dsc_ledger *l) {
    set_budget(l, "org:*", DSC_METRIC_GCO2E, "month", 1e11);
    set_budget(l, "team:*", DSC_METRIC_GCO2E, "month", 1e11);
    set_budget(l, "user:*", DSC_METRIC_REQUESTS, "rolling:1h", 1e11);
}

/* --- pairs: 1 and 2 threads --------------------------------------------------- */

typedef struct pair_run {
    dsc_ledger *l;
    int first, n;  /* this thread's subjects: first .. first + 499 */
    bool own_orgs; /* orgs and teams of its own too, else shared with the other thread */
    atomic_int *failures;
} pair_run;

static void *pair_thread(void *arg) {
    pair_run *p = arg;
    char names[500][3][16], rid[DSC_RESERVATION_ID_MAX];
    dsc_subject subjects[500];
    for (int i = 0; i < 500; i++) {
        subject_of(p->first + i, names[i][0], names[i][1], names[i][2], &subjects[i]);
        for (int k = 0; p->own_orgs && k < 2; k++) /* "org3-t1", "team42-t1" */
            snprintf(names[i][k] + strlen(names[i][k]), 16 - strlen(names[i][k]), "-t%d",
                     p->first / 500);
    }
    dsc_amounts a = {{0}};
    a.v[DSC_METRIC_GCO2E] = 5 * M;
    a.v[DSC_METRIC_REQUESTS] = M;
    for (int i = 0; i < p->n; i++)
        if (reserve_as(p->l, (dsc_reserve_req){&subjects[i % 500], &a, 60, NULL, NULL}, rid, NULL,
                       0, NULL, NULL, NULL) != DSC_OK ||
            settle_as(p->l, (dsc_settle_req){rid, &a, NULL, NULL}, NULL, NULL, NULL) != DSC_OK)
            atomic_fetch_add(p->failures, 1);
    return NULL;
}

/* One pairs row: N pairs on a fresh memory ledger from threads threads. */
static void pairs_run(int threads, bool own_orgs) {
    enum { N = 1000000 };
    dsc_ledger *l = open_ledger(NULL, DSC_DURABILITY_FULL, NULL, NULL);
    three_budgets(l);
    atomic_int failures = 0;
    pair_run runs[2];
    pthread_t tids[2];
    long w0 = blocked_count();
    double t0 = now_s(), c0 = cpu_s();
    for (int t = 0; t < threads; t++) {
        runs[t] = (pair_run){l, t * 500, N / threads, own_orgs, &failures};
        pthread_create(&tids[t], NULL, pair_thread, &runs[t]);
    }
    for (int t = 0; t < threads; t++)
        pthread_join(tids[t], NULL);
    double dt = now_s() - t0, dc = cpu_s() - c0;
    long waits = blocked_count() - w0 - threads; /* each thread's join: one each */
    printf("pairs: %d reserve+settle pairs, memory, %d thread%s%s, 3 budgets each: %.0f "
           "pairs/s (%.2f us/pair CPU, %.0f pairs per CPU-second, %ld lock waits, %d failed)\n",
           N, threads, threads == 1 ? "" : "s",
           threads == 1 ? ""
           : own_orgs   ? " (orgs, teams, users apart)"
                        : " (orgs, teams shared)",
           N / dt, dc * 1e6 / N, N / dc, waits < 0 ? 0 : waits, atomic_load(&failures));
    dsc_ledger_free(l);
}

/* reserve+settle pairs/s on one memory ledger from 1 thread, from 2 threads whose
 * subjects have nothing in common (their own orgs, teams and users: disjoint
 * counters, what a ledger without one global lock runs apart), and from 2 threads
 * that share the orgs and teams (their org:* and team:* counters are common). */
static void bench_pairs(void) {
    pairs_run(1, true);
    pairs_run(2, true);
    pairs_run(2, false);
}

/* --- memory ----------------------------------------------------------------- */

static void bench_memory(void) {
    dsc_ledger *l = open_ledger(NULL, DSC_DURABILITY_FULL, NULL, NULL);
    three_budgets(l);
    enum { N = 2000000 };
    enum { SUBJECTS = 1000 };
    static char names[SUBJECTS][3][16];
    static dsc_subject subjects[SUBJECTS];
    for (int i = 0; i < SUBJECTS; i++)
        subject_of(i, names[i][0], names[i][1], names[i][2], &subjects[i]);
    char org[16], team[16], user[16], rid[DSC_RESERVATION_ID_MAX];
    dsc_subject s;
    dsc_amounts a = {{0}};
    a.v[DSC_METRIC_GCO2E] = 5 * M;
    a.v[DSC_METRIC_REQUESTS] = M;
    double t0 = now_s(), c0 = cpu_s();
    for (int i = 0; i < N; i++) {
        if (reserve_as(l, (dsc_reserve_req){&subjects[i % SUBJECTS], &a, 60, NULL, NULL}, rid, NULL,
                       0, NULL, NULL, NULL) != DSC_OK ||
            settle_as(l, (dsc_settle_req){rid, &a, NULL, NULL}, NULL, NULL, NULL) != DSC_OK) {
            fprintf(stderr, "bench_ledger: memory pair %d failed\n", i);
            exit(1);
        }
    }
    double dt = now_s() - t0, dc = cpu_s() - c0;
    printf("memory: %d reserve+settle pairs, 1 thread, 3 budgets each: %.0f pairs/s "
           "(%.2f us/pair wall, %.2f us/pair CPU: %.0f pairs per CPU-second)\n",
           N, N / dt, dt * 1e6 / N, dc * 1e6 / N, N / dc);
    dsc_budget_state st[4];
    size_t n;
    subject_of(0, org, team, user, &s);
    t0 = now_s();
    for (int i = 0; i < N; i++)
        dsc_ledger_preview(l, &s, &a, st, 4, &n, NULL);
    dt = now_s() - t0;
    printf("memory: preview of 3 budgets: %.0f /s (%.2f us)\n", N / dt, dt * 1e6 / N);
    dsc_ledger_free(l);
}

/* --- durable ---------------------------------------------------------------- */

typedef struct durable_run {
    dsc_ledger *l;
    int per_thread;
    char (*rids)[DSC_RESERVATION_ID_MAX];
    int phase; /* 0 reserve, 1 settle */
    pthread_barrier_t *go;
    int failures;
} durable_run;

typedef struct worker {
    durable_run *run;
    int index;
} worker;

static void *durable_worker(void *arg) {
    worker *w = arg;
    durable_run *r = w->run;
    char org[16], team[16], user[16];
    dsc_subject s;
    subject_of(w->index, org, team, user, &s);
    dsc_amounts a = {{0}};
    a.v[DSC_METRIC_GCO2E] = 5 * M;
    a.v[DSC_METRIC_REQUESTS] = M;
    pthread_barrier_wait(r->go);
    for (int i = 0; i < r->per_thread; i++) {
        char *rid = r->rids[w->index * r->per_thread + i];
        dsc_status st =
            r->phase == 0
                ? reserve_as(r->l, (dsc_reserve_req){&s, &a, 3600, NULL, NULL}, rid, NULL, 0, NULL,
                             NULL, NULL)
                : settle_as(r->l, (dsc_settle_req){rid, &a, NULL, NULL}, NULL, NULL, NULL);
        if (st != DSC_OK) __atomic_add_fetch(&r->failures, 1, __ATOMIC_RELAXED);
    }
    return NULL;
}

static double run_phase(durable_run *r, int threads, int phase) {
    pthread_t *t = calloc((size_t)threads, sizeof *t);
    worker *w = calloc((size_t)threads, sizeof *w);
    pthread_barrier_t go;
    pthread_barrier_init(&go, NULL, (unsigned)threads + 1);
    r->go = &go;
    r->phase = phase;
    for (int i = 0; i < threads; i++) {
        w[i] = (worker){r, i};
        pthread_create(&t[i], NULL, durable_worker, &w[i]);
    }
    pthread_barrier_wait(&go);
    double t0 = now_s();
    for (int i = 0; i < threads; i++)
        pthread_join(t[i], NULL);
    double dt = now_s() - t0;
    pthread_barrier_destroy(&go);
    free(t);
    free(w);
    return dt;
}

static void bench_durable_mode(const char *dir, dsc_durability d, const char *name, int threads,
                               int per_thread) {
    char path[1024];
    snprintf(path, sizeof path, "%s/durable-%s-%d.db", dir, name, threads);
    unlink(path);
    dsc_ledger *l = open_ledger(path, d, NULL, NULL);
    three_budgets(l);
    durable_run r = {.l = l, .per_thread = per_thread};
    r.rids = calloc((size_t)threads * (size_t)per_thread, sizeof *r.rids);
    double tr = run_phase(&r, threads, 0);
    double ts = run_phase(&r, threads, 1);
    dsc_ledger_stats stats;
    dsc_ledger_stats_get(l, &stats);
    dsc_ledger_free(l); /* flushes what batch/off modes still queue */
    int n = threads * per_thread;
    printf("durable %-5s: %d threads, %d settles: %.0f settles/s; reserves %.0f/s; "
           "%.1f records/commit; failures %d\n",
           name, threads, n, n / ts, n / tr,
           stats.store_batches ? (double)stats.store_records / (double)stats.store_batches : 0,
           r.failures);
    free(r.rids);
}

typedef struct async_run {
    dsc_ledger *l;
    char (*rids)[DSC_RESERVATION_ID_MAX];
    int n, nthreads;
    sem_t slots; /* settles in flight, like requests on open connections */
    long done;
    int failures;
} async_run;

typedef struct async_worker {
    async_run *run;
    int index;
} async_worker;

static void on_settled(void *ud, dsc_status st, const dsc_error *err) {
    async_run *r = ud;
    (void)err;
    if (st != DSC_OK) __atomic_add_fetch(&r->failures, 1, __ATOMIC_RELAXED);
    __atomic_add_fetch(&r->done, 1, __ATOMIC_RELEASE);
    sem_post(&r->slots);
}

static void *async_settler(void *arg) {
    async_worker *w = arg;
    async_run *r = w->run;
    dsc_amounts a = {{0}};
    a.v[DSC_METRIC_GCO2E] = 5 * M;
    a.v[DSC_METRIC_REQUESTS] = M;
    for (int i = w->index; i < r->n; i += r->nthreads) {
        sem_wait(&r->slots);
        if (settle_as(r->l, (dsc_settle_req){r->rids[i], &a, NULL, NULL}, NULL,
                      &(dsc_done){on_settled, r}, NULL) != DSC_OK)
            on_settled(r, DSC_INTERNAL, NULL);
    }
    return NULL;
}

static int cmp_rid(const void *a, const void *b) {
    return strcmp(a, b);
}

/* Reserve with blocking threads, then settle from 2 threads with completions,
 * at most inflight settles outstanding. */
static void bench_durable_async(const char *dir, int inflight) {
    char path[1024];
    snprintf(path, sizeof path, "%s/durable-async-%d.db", dir, inflight);
    unlink(path);
    dsc_ledger *l = open_ledger(path, DSC_DURABILITY_FULL, NULL, NULL);
    three_budgets(l);
    durable_run r = {.l = l, .per_thread = 1000};
    r.rids = calloc(64 * 1000, sizeof *r.rids);
    run_phase(&r, 64, 0);
    /* settles arrive roughly in the order requests were reserved */
    qsort(r.rids, 64 * 1000, sizeof *r.rids, cmp_rid);
    dsc_ledger_stats before;
    dsc_ledger_stats_get(l, &before);
    async_run ar = {.l = l, .rids = r.rids, .n = 64 * 1000, .nthreads = 2};
    sem_init(&ar.slots, 0, (unsigned)inflight);
    pthread_t t[2];
    async_worker w[2] = {{&ar, 0}, {&ar, 1}};
    double t0 = now_s();
    for (int i = 0; i < 2; i++)
        pthread_create(&t[i], NULL, async_settler, &w[i]);
    for (int i = 0; i < 2; i++)
        pthread_join(t[i], NULL);
    while (__atomic_load_n(&ar.done, __ATOMIC_ACQUIRE) < ar.n) {
        struct timespec ts = {0, 100000};
        nanosleep(&ts, NULL);
    }
    double dt = now_s() - t0;
    dsc_ledger_stats after;
    dsc_ledger_stats_get(l, &after);
    printf("durable full async: 2 threads, %d in flight, %d settles: %.0f settles/s; "
           "%.1f records/commit; failures %d\n",
           inflight, ar.n, ar.n / dt,
           (double)(after.store_records - before.store_records) /
               (double)(after.store_batches - before.store_batches),
           ar.failures);
    sem_destroy(&ar.slots);
    dsc_ledger_free(l);
    free(r.rids);
}

static void bench_durable(const char *dir) {
    bench_durable_mode(dir, DSC_DURABILITY_FULL, "full", 16, 2000);
    bench_durable_mode(dir, DSC_DURABILITY_FULL, "full", 64, 1000);
    bench_durable_mode(dir, DSC_DURABILITY_FULL, "full", 256, 400);
    bench_durable_mode(dir, DSC_DURABILITY_BATCH, "batch", 64, 1000);
    bench_durable_mode(dir, DSC_DURABILITY_OFF, "off", 64, 1000);
}

/* --- checks: the server's hot path ----------------------------------------------- */

typedef struct check_run {
    dsc_ledger *l;
    char (*rids)[DSC_RESERVATION_ID_MAX];
    int n, nthreads, phase; /* 0 checks, 1 settles, 2 each check then its settle */
    bool one_record;        /* dsc_ledger_reserve with a decision: hold + decision in one */
    int inflight;           /* checks or settles in flight */
    sem_t slots;
    long done, calls;
    int failures;
} check_run;

typedef struct check_worker {
    check_run *run;
    int index;
} check_worker;

static void on_check_done(void *ud, dsc_status st, const dsc_error *err) {
    check_run *r = ud;
    (void)err;
    if (st != DSC_OK) __atomic_add_fetch(&r->failures, 1, __ATOMIC_RELAXED);
    __atomic_add_fetch(&r->done, 1, __ATOMIC_RELEASE);
    sem_post(&r->slots);
}

/* One check as discernd journals it: the hold, then the decision naming it. */
static void one_check(check_run *r, int i, const dsc_subject *s, const dsc_amounts *a) {
    char did[32];
    snprintf(did, sizeof did, "d%08x%08x", (unsigned)i * 2654435761u, (unsigned)i);
    dsc_decision_record d = {.decision_id = did,
                             .subject = *s,
                             .purpose = "code-review",
                             .provider = "openai",
                             .model = "gpt-4o",
                             .input_tokens = 1200,
                             .output_tokens = 800,
                             .est_energy_wh = 4 * M,
                             .est_gco2e = 5 * M,
                             .est_water_ml = 7 * M,
                             .outcome = "allow",
                             .policy = "right-size",
                             .policy_version = "3f2a9c1d0b7e",
                             .reason = "allowed; openai/gpt-4.1-nano would do for less",
                             .reservation_id = r->rids[i]};
    if (r->one_record) {
        sem_wait(&r->slots);
        __atomic_add_fetch(&r->calls, 1, __ATOMIC_RELAXED);
        if (reserve_as(r->l, (dsc_reserve_req){s, a, 3600, NULL, &d}, r->rids[i], NULL, 0, NULL,
                       &(dsc_done){on_check_done, r}, NULL) != DSC_OK)
            on_check_done(r, DSC_INTERNAL, NULL);
        return;
    }
    sem_wait(&r->slots);
    sem_wait(&r->slots);
    if (reserve_as(r->l, (dsc_reserve_req){s, a, 3600, NULL, NULL}, r->rids[i], NULL, 0, NULL,
                   &(dsc_done){on_check_done, r}, NULL) != DSC_OK)
        on_check_done(r, DSC_INTERNAL, NULL);
    if (dsc_ledger_record(r->l, &d, &(dsc_done){on_check_done, r}, NULL) != DSC_OK)
        on_check_done(r, DSC_INTERNAL, NULL);
    __atomic_add_fetch(&r->calls, 2, __ATOMIC_RELAXED);
}

static void *check_submitter(void *arg) {
    check_worker *w = arg;
    check_run *r = w->run;
    char org[16], team[16], user[16];
    dsc_amounts a = {{0}};
    a.v[DSC_METRIC_GCO2E] = 5 * M;
    a.v[DSC_METRIC_REQUESTS] = M;
    for (int i = w->index; i < r->n; i += r->nthreads) {
        dsc_subject s;
        subject_of(i, org, team, user, &s);
        if (r->phase == 0 || r->phase == 2) {
            one_check(r, i, &s, &a);
            if (r->phase == 0) continue;
        }
        sem_wait(&r->slots);
        __atomic_add_fetch(&r->calls, 1, __ATOMIC_RELAXED);
        if (settle_as(r->l, (dsc_settle_req){r->rids[i], &a, NULL, NULL}, NULL,
                      &(dsc_done){on_check_done, r}, NULL) != DSC_OK)
            on_check_done(r, DSC_INTERNAL, NULL);
    }
    return NULL;
}

/* Run one phase from 2 threads; wall and CPU seconds until every completion ran. */
static void check_phase(check_run *r, int phase, double *wall, double *cpu, double *wcpu) {
    r->phase = phase;
    r->done = r->calls = 0;
    /* inflight checks or settles: a check as two records takes two slots */
    sem_init(&r->slots, 0,
             (unsigned)(phase == 0 && !r->one_record ? 2 : 1) * (unsigned)r->inflight);
    pthread_t t[2];
    check_worker w[2] = {{r, 0}, {r, 1}};
    double t0 = now_s(), c0 = cpu_s(), w0 = writer_cpu_s();
    for (int i = 0; i < 2; i++)
        pthread_create(&t[i], NULL, check_submitter, &w[i]);
    for (int i = 0; i < 2; i++)
        pthread_join(t[i], NULL);
    while (__atomic_load_n(&r->done, __ATOMIC_ACQUIRE) <
           __atomic_load_n(&r->calls, __ATOMIC_ACQUIRE)) {
        struct timespec ts = {0, 100000};
        nanosleep(&ts, NULL);
    }
    *wall = now_s() - t0;
    *cpu = cpu_s() - c0;
    *wcpu = writer_cpu_s() - w0;
    sem_destroy(&r->slots);
}

static void bench_checks(const char *dir, bool one_record, int inflight) {
    char path[1024];
    snprintf(path, sizeof path, "%s/checks.db", dir);
    unlink(path);
    dsc_ledger *l = open_ledger(path, DSC_DURABILITY_FULL, NULL, NULL);
    three_budgets(l);
    check_run r = {
        .l = l, .n = 64000, .nthreads = 2, .one_record = one_record, .inflight = inflight};
    r.rids = calloc((size_t)r.n, sizeof *r.rids);
    double cw, cc, sw, sc, cwr, swr;
    dsc_ledger_stats s0, s1, s2;
    dsc_ledger_stats_get(l, &s0);
    long long w0 = written_bytes(), b0 = io_count("write_bytes");
    check_phase(&r, 0, &cw, &cc, &cwr);
    dsc_ledger_stats_get(l, &s1);
    check_phase(&r, 1, &sw, &sc, &swr);
    dsc_ledger_stats_get(l, &s2);
    printf("%s: %d checks (%s, async, full, %d in flight): %.0f /s, %.2f us CPU each "
           "(writer %.2f), %.0f records/commit; their settles: %.0f /s, %.2f us CPU each "
           "(writer %.2f), %.0f records/commit; check+settle %.2f us CPU (writer %.2f); "
           "failures %d\n",
           one_record ? "checks1" : "checks", r.n,
           one_record ? "hold and decision in one record" : "reserve + decision", inflight,
           r.n / cw, cc * 1e6 / r.n, cwr * 1e6 / r.n,
           (double)(s1.store_records - s0.store_records) /
               (double)(s1.store_batches - s0.store_batches),
           r.n / sw, sc * 1e6 / r.n, swr * 1e6 / r.n,
           (double)(s2.store_records - s1.store_records) /
               (double)(s2.store_batches - s1.store_batches),
           (cc + sc) * 1e6 / r.n, (cwr + swr) * 1e6 / r.n, r.failures);
    long long wrote = written_bytes() - w0, blocks = io_count("write_bytes") - b0;
    dsc_ledger_free(l);
    free(r.rids);
    printf("%s: bytes written per check+settle (WAL appends and their checkpoints into the "
           "database) %.0f, of storage (write_bytes) %.0f; database %.0f bytes per check+settle"
           " (%lld bytes)\n",
           one_record ? "checks1" : "checks", (double)wrote / r.n, (double)blocks / r.n,
           (double)file_bytes(path) / r.n, file_bytes(path));
}

/* pairs1: each check's settle submitted right after it, so that a hold and its settle
 * meet in one batch (as at one decision per commit, where the settle is what the
 * commit waits for): the store writes one row per decision. */
static void bench_paired(const char *dir, int inflight) {
    char path[1024];
    snprintf(path, sizeof path, "%s/pairs.db", dir);
    unlink(path);
    dsc_ledger *l = open_ledger(path, DSC_DURABILITY_FULL, NULL, NULL);
    three_budgets(l);
    /* one pair in flight is one commit (and fsync) per decision: fewer of them */
    check_run r = {.l = l,
                   .n = inflight > 1 ? 64000 : 4000,
                   .nthreads = 2,
                   .one_record = true,
                   .inflight = inflight};
    r.rids = calloc((size_t)r.n, sizeof *r.rids);
    double w, c, wr;
    dsc_ledger_stats s0, s1;
    dsc_ledger_stats_get(l, &s0);
    long long w0 = written_bytes(), b0 = io_count("write_bytes");
    check_phase(&r, 2, &w, &c, &wr);
    dsc_ledger_stats_get(l, &s1);
    long long wrote = written_bytes() - w0, blocks = io_count("write_bytes") - b0;
    dsc_ledger_free(l);
    free(r.rids);
    printf("pairs1: %d checks each followed by its settle (async, full, %d in flight): %.0f "
           "pairs/s, %.2f us CPU per check+settle (writer %.2f), %.0f records/commit; bytes "
           "written per check+settle %.0f, of storage (write_bytes) %.0f; database %.0f bytes "
           "per check+settle (%lld bytes); failures %d\n",
           r.n, inflight, r.n / w, c * 1e6 / r.n, wr * 1e6 / r.n,
           (double)(s1.store_records - s0.store_records) /
               (double)(s1.store_batches - s0.store_batches),
           (double)wrote / r.n, (double)blocks / r.n, (double)file_bytes(path) / r.n,
           file_bytes(path), r.failures);
}

/* --- rss ---------------------------------------------------------------------- */

static void bench_rss(size_t retain_max) {
    long before = rss_kb();
    dsc_ledger_config cfg = {.retain_max = retain_max};
    dsc_ledger *l = dsc_ledger_new(&cfg, NULL);
    if (!l) exit(1);
    enum { N = 100000 };
    char sel[64], org[16], team[16], user[16], rid[DSC_RESERVATION_ID_MAX];
    double t0 = now_s();
    for (int i = 0; i < N; i++) {
        snprintf(sel, sizeof sel, "user:u%d", i);
        set_budget(l, sel, DSC_METRIC_GCO2E, i % 10 == 0 ? "rolling:1h" : "month", 1000);
    }
    double dt = now_s() - t0;
    dsc_amounts a = {{0}};
    a.v[DSC_METRIC_GCO2E] = M;
    for (int i = 0; i < N; i++) { /* every budget gets its counter */
        snprintf(user, sizeof user, "u%d", i);
        snprintf(org, sizeof org, "o%d", i % 100);
        snprintf(team, sizeof team, "t%d", i % 1000);
        dsc_subject s = {.org = org, .team = team, .user = user};
        if (reserve_as(l, (dsc_reserve_req){&s, &a, 60, NULL, NULL}, rid, NULL, 0, NULL, NULL,
                       NULL) != DSC_OK ||
            settle_as(l, (dsc_settle_req){rid, &a, NULL, NULL}, NULL, NULL, NULL) != DSC_OK)
            exit(1);
    }
    long after = rss_kb();
    dsc_ledger_stats stats;
    dsc_ledger_stats_get(l, &stats);
    printf("rss: %zu budgets, %zu counters, %zu remembered reservations: %.1f MB RSS "
           "(+%.1f MB); budget_set %.1f us each\n",
           stats.budgets, stats.counters, stats.reservations, after / 1024.0,
           (after - before) / 1024.0, dt * 1e6 / N);
    dsc_ledger_free(l);
    malloc_trim(0);
}

/* --- fill: a store of many decisions, its size, a restart, a new budget ------------ */

typedef struct clock_state {
    int64_t now;
} clock_state;

static int64_t bench_clock(void *ud) {
    return ((clock_state *)ud)->now;
}

/* N decisions as discernd makes them: a hold with its check's decision, its settle. */
static void fill_decisions(dsc_ledger *l, int64_t *now, int64_t step, long n) {
    char org[16], team[16], user[16], did[48], req[48], rid[DSC_RESERVATION_ID_MAX];
    dsc_amounts a = {{0}};
    a.v[DSC_METRIC_GCO2E] = 5 * M;
    a.v[DSC_METRIC_ENERGY_WH] = 2 * M;
    a.v[DSC_METRIC_REQUESTS] = M;
    for (long i = 0; i < n; i++) {
        dsc_subject s;
        subject_of((int)(i % 1000000), org, team, user, &s);
        snprintf(did, sizeof did, "d-%llx-0-%ld", (long long)*now, i);
        snprintf(req, sizeof req, "req-%ld", i);
        dsc_decision_record d = {.decision_id = did,
                                 .subject = s,
                                 .purpose = i % 3 ? "code-review" : "chat",
                                 .provider = "openai",
                                 .model = i % 2 ? "gpt-4o" : "gpt-4o-mini",
                                 .key_id = "k_00000000000000a1",
                                 .zone = "FRA",
                                 .input_tokens = 1200,
                                 .output_tokens = 400,
                                 .est_energy_wh = 4 * M,
                                 .est_gco2e = 5 * M,
                                 .est_water_ml = 7 * M,
                                 .outcome = "allow",
                                 .policy = "right-size",
                                 .policy_version = "3f2a9c1d0b7e",
                                 .reason = "allowed; openai/gpt-4.1-nano would do for less"};
        *now += step;
        if (reserve_as(l, (dsc_reserve_req){&s, &a, 3600, req, &d}, rid, NULL, 0, NULL, NULL,
                       NULL) != DSC_OK ||
            settle_as(l, (dsc_settle_req){rid, &a, NULL, NULL}, NULL, NULL, NULL) != DSC_OK) {
            i--; /* the queue was briefly failing: retry */
            continue;
        }
    }
}

/* DIR/fill-N[-D].db of a fill that ran to its end has DIR/fill-N[-D].db.done beside it,
 * holding the fill's clock at its end: written (renamed into place) only after the
 * ledger that filled it was closed, so a fill cut short is never taken for one. */
static bool fill_done_read(const char *done, int64_t *end) {
    FILE *f = fopen(done, "r");
    if (!f) return false;
    long long v = 0;
    bool ok = fscanf(f, "%lld", &v) == 1 && v > 0;
    fclose(f);
    *end = v;
    return ok;
}

static void fill_done_write(const char *done, int64_t end) {
    char tmp[1200];
    snprintf(tmp, sizeof tmp, "%s.tmp", done);
    FILE *f = fopen(tmp, "w");
    if (!f) return;
    bool ok = fprintf(f, "%lld\n", (long long)end) > 0;
    if (fclose(f) == 0 && ok) rename(tmp, done);
}

/* Write n decisions into a new file at path (what was there is removed first);
 * *clk is left at the fill's end. */
static void fill_new(const char *path, const char *done, long n, long days, clock_state *clk) {
    char wal[1100];
    snprintf(wal, sizeof wal, "%s-wal", path);
    unlink(done);
    unlink(path);
    unlink(wal);
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    int64_t end = (int64_t)ts.tv_sec * 1000000, span = 30 * 86400LL * 1000000;
    clk->now = end - span;
    dsc_ledger_config cfg = {.store_path = path,
                             .durability = DSC_DURABILITY_OFF,
                             .now_us = bench_clock,
                             .clock_ud = clk,
                             .journal_retention_s = days * 86400};
    dsc_error err;
    dsc_ledger *l = dsc_ledger_new(&cfg, &err);
    if (!l) {
        fprintf(stderr, "bench_ledger: %s\n", err.message);
        exit(1);
    }
    set_budget(l, "org:*", DSC_METRIC_GCO2E, "month", 1e12);
    set_budget(l, "user:*", DSC_METRIC_REQUESTS, "day", 1e12);
    double t0 = now_s();
    fill_decisions(l, &clk->now, span / n, n);
    dsc_ledger_free(l);
    double fill = now_s() - t0;
    fill_done_write(done, clk->now);
    long long db = file_bytes(path);
    printf("fill: %ld decisions (hold + decision, settle) over 30 days written in %.1f s "
           "(durability off, retention %ld days, %.0f /s): database %lld bytes, %.0f bytes "
           "per decision\n",
           n, fill, days, n / fill, db, (double)db / n);
}

static void remove_budget(dsc_ledger *l, const char *sel, dsc_metric m, const char *w) {
    dsc_ledger_budget(l, &(dsc_budget_req){sel, m, w, 0, true}, NULL, NULL, NULL);
}

/* Time a new team:* gco2e budget over window w until it is in effect, print what team0
 * counts, then remove it again (so the file can be timed once more). */
static void time_new_budget(dsc_ledger *l, long n, const char *w) {
    remove_budget(l, "team:*", DSC_METRIC_GCO2E, w); /* left by a run cut short */
    double t0 = now_s();
    set_budget(l, "team:*", DSC_METRIC_GCO2E, w, 1e12); /* waits until in effect */
    double budget = now_s() - t0;
    dsc_budget_state st[8];
    size_t k = 0;
    char org[16], team[16], user[16];
    dsc_subject s;
    subject_of(0, org, team, user, &s);
    dsc_ledger_preview(l, &s, NULL, st, 8, &k, NULL);
    int64_t used = 0;
    for (size_t i = 0; i < k && i < 8; i++)
        if (strcmp(st[i].selector, "team:*") == 0) used = st[i].used;
    printf("fill: a new team:* gco2e %s budget over %ld decisions in effect after %.3f s "
           "(team0 counts %.0f g)\n",
           w, n, budget, (double)used / M);
    remove_budget(l, "team:*", DSC_METRIC_GCO2E, w);
}

static void bench_fill(const char *dir, long n, long days) {
    char path[1024], done[1100];
    if (days > 0)
        snprintf(path, sizeof path, "%s/fill-%ld-%ld.db", dir, n, days);
    else
        snprintf(path, sizeof path, "%s/fill-%ld.db", dir, n);
    snprintf(done, sizeof done, "%s.done", path);
    clock_state clk;
    if (file_bytes(path) > 0 && fill_done_read(done, &clk.now))
        printf("fill: reusing %s (complete), %lld bytes\n", path, file_bytes(path));
    else
        fill_new(path, done, n, days, &clk);
    double t0 = now_s();
    dsc_ledger *l = open_ledger(path, DSC_DURABILITY_FULL, bench_clock, &clk);
    double opened = now_s() - t0;
    dsc_ledger_stats stats;
    dsc_ledger_stats_get(l, &stats);
    printf("fill: dsc_ledger_new over %ld decisions took %.2f s (%zu reservations reloaded)\n", n,
           opened, stats.reservations);
    time_new_budget(l, n, "month");
    time_new_budget(l, n, "rolling:30d");
    dsc_ledger_free(l);
}

/* --- restart ---------------------------------------------------------------------- */

typedef struct done_wait {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool done;
} done_wait;

static void on_budget_done(void *ud, dsc_status st, const dsc_error *err) {
    done_wait *w = ud;
    if (st != DSC_OK) fprintf(stderr, "bench_ledger: budget: %s\n", err->message);
    pthread_mutex_lock(&w->mu);
    w->done = true;
    pthread_cond_signal(&w->cv);
    pthread_mutex_unlock(&w->mu);
}

/* Durable reserve + settle pairs in a loop until stop, timing the slowest pair. */
typedef struct probe {
    dsc_ledger *l;
    atomic_bool stop;
    atomic_int settles;
    double max_wait;
} probe;

static void *settle_probe(void *arg) {
    probe *p = arg;
    dsc_subject s = {.org = "org0", .team = "team0", .user = "user0"};
    dsc_amounts a = {{0}};
    a.v[DSC_METRIC_GCO2E] = M;
    while (!atomic_load(&p->stop)) {
        char rid[DSC_RESERVATION_ID_MAX];
        double t0 = now_s();
        if (reserve_as(p->l, (dsc_reserve_req){&s, &a, 60, NULL, NULL}, rid, NULL, 0, NULL, NULL,
                       NULL) != DSC_OK ||
            settle_as(p->l, (dsc_settle_req){rid, &a, NULL, NULL}, NULL, NULL, NULL) != DSC_OK)
            continue;
        double dt = now_s() - t0;
        if (dt > p->max_wait) p->max_wait = dt;
        atomic_fetch_add(&p->settles, 1);
    }
    return NULL;
}

/* span_s: how far back the charges go (two weeks; or minutes, when most settled
 * reservations are still remembered and reloaded too). */
static void bench_restart(const char *dir, int64_t span_s) {
    char path[1024];
    snprintf(path, sizeof path, "%s/restart-%lld.db", dir, (long long)span_s);
    unlink(path);
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    int64_t end = (int64_t)ts.tv_sec * 1000000;
    enum { N = 1000000 };
    int64_t step = span_s * 1000000 / N;
    clock_state clk = {end - (int64_t)N * step};
    dsc_ledger *l = open_ledger(path, DSC_DURABILITY_OFF, bench_clock, &clk);
    three_budgets(l);
    set_budget(l, "*", DSC_METRIC_REQUESTS, "year", 1e11);
    double t0 = now_s();
    char org[16], team[16], user[16], rid[DSC_RESERVATION_ID_MAX];
    dsc_amounts a = {{0}};
    a.v[DSC_METRIC_GCO2E] = 3 * M;
    a.v[DSC_METRIC_REQUESTS] = M;
    for (int i = 0; i < N; i++) {
        dsc_subject s;
        subject_of(i, org, team, user, &s);
        snprintf(rid, sizeof rid, "load-%d", i);
        clk.now += step;
        if (settle_as(l, (dsc_settle_req){rid, &a, &s, NULL}, NULL, NULL, NULL) != DSC_OK) {
            i--; /* the queue was briefly failing: retry */
            continue;
        }
    }
    dsc_ledger_free(l);
    double fill = now_s() - t0;
    dsc_budget_state st[8];
    size_t n = 0;
    t0 = now_s();
    l = open_ledger(path, DSC_DURABILITY_FULL, bench_clock, &clk);
    double dt = now_s() - t0;
    dsc_subject s;
    subject_of(0, org, team, user, &s);
    dsc_ledger_preview(l, &s, NULL, st, 8, &n, NULL);
    int64_t total = 0;
    for (size_t i = 0; i < n && i < 8; i++)
        if (st[i].selector[0] == '*') total = st[i].used;
    dsc_ledger_stats stats;
    dsc_ledger_stats_get(l, &stats);
    printf("restart: %d charge records over %lld s (written in %.1f s with durability off): "
           "dsc_ledger_new rebuilt the counters in %.2f s, reloading %zu reservations; "
           "'*' counts %lld requests\n",
           N, (long long)span_s, fill, dt, stats.reservations, (long long)(total / M));
    /* A budget created now counts the usage already in its window: its creator reads
     * those charges, and the writer adds what was committed meanwhile. Meanwhile a
     * second thread reserves and settles in a loop: its slowest pair is how long
     * durable calls waited for the budget. */
    static const char *const fresh[] = {"user:user7", "team:*"};
    for (int i = 0; i < 2; i++) {
        probe p = {.l = l};
        pthread_t th;
        pthread_create(&th, NULL, settle_probe, &p);
        while (!atomic_load(&p.settles))
            sched_yield();
        t0 = now_s();
        set_budget(l, fresh[i], DSC_METRIC_GCO2E, "year", 1e11);
        double took = now_s() - t0;
        atomic_store(&p.stop, true);
        pthread_join(th, NULL);
        printf("restart: budget.set of a new '%s' over a year of those charges took %.3f s; "
               "a durable reserve+settle meanwhile took at most %.3f s (%d pairs)\n",
               fresh[i], took, p.max_wait, atomic_load(&p.settles));
    }
    /* The async form, as discernd calls it: the caller gets its thread back at once. */
    done_wait w = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, false};
    t0 = now_s();
    if (dsc_ledger_budget(l, &(dsc_budget_req){"org:*", DSC_METRIC_GCO2E, "year", 1e11, false},
                          NULL, &(dsc_done){on_budget_done, &w}, NULL) != DSC_OK) {
        fprintf(stderr, "bench_ledger: dsc_ledger_budget with a done failed\n");
        exit(1);
    }
    double returned = now_s() - t0;
    pthread_mutex_lock(&w.mu);
    while (!w.done)
        pthread_cond_wait(&w.cv, &w.mu);
    pthread_mutex_unlock(&w.mu);
    printf("restart: dsc_ledger_budget with a done of a new 'org:*' returned in %.6f s, its "
           "completion came after %.3f s\n",
           returned, now_s() - t0);
    dsc_ledger_free(l);
}

static bool wants(int argc, char **argv, const char *what) {
    if (argc <= 2) return true;
    for (int i = 2; i < argc; i++)
        if (strcmp(argv[i], what) == 0) return true;
    return false;
}

int main(int argc, char **argv) {
    const char *dir = argc > 1 ? argv[1] : "bench-ledger-data";
    mkdir(dir, 0755);
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (wants(argc, argv, "memory")) bench_memory();
    if (wants(argc, argv, "pairs")) bench_pairs();
    if (wants(argc, argv, "rss")) {
        bench_rss(1); /* budgets and counters only */
        bench_rss(0); /* plus the default 100 000 remembered reservations */
    }
    if (wants(argc, argv, "async")) {
        bench_durable_async(dir, 256);
        bench_durable_async(dir, 1024);
    }
    if (wants(argc, argv, "durable")) bench_durable(dir);
    if (wants(argc, argv, "checks")) bench_checks(dir, false, 512);
    if (wants(argc, argv, "checks1")) bench_checks(dir, true, 512);
    if (wants(argc, argv, "checks1-16")) bench_checks(dir, true, 16);
    if (wants(argc, argv, "pairs1")) bench_paired(dir, 512);
    if (wants(argc, argv, "pairs1-16")) bench_paired(dir, 16);
    if (wants(argc, argv, "pairs1-1")) bench_paired(dir, 1);
    if (wants(argc, argv, "restart")) bench_restart(dir, 14 * 86400);
    for (int i = 2; i < argc; i++)
        if (strcmp(argv[i], "fill") == 0)
            bench_fill(dir, i + 1 < argc && atol(argv[i + 1]) > 0 ? atol(argv[i + 1]) : 10000000,
                       i + 2 < argc ? atol(argv[i + 2]) : 0);
    if (wants(argc, argv, "restart-recent")) bench_restart(dir, 500);
    return 0;
}
