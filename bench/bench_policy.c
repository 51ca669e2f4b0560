/*
 * bench_policy.c - how long one request takes through the shipped policies.
 *
 *   bench_policy [POLICY_DIR [N]]     (default: policies, 10 000 000)
 *
 * Loads POLICY_DIR with the catalogue (found as every program finds it: see
 * paths.h), builds one VM and evaluates a typical request N times: team and org
 * carbon budgets and a per-user rate budget apply, the purpose is productive, the
 * model has smaller siblings (so right-size runs its what-if estimates). It runs
 * twice: the set as shipped (grid-aware disabled) and all four policies enabled
 * (a copy of the folder with grid-aware switched on, a live grid value set); a folder
 * without grid_aware.lua runs only the first.
 * Prints the median, p99 and max per evaluation, the evaluations the time budget's
 * watchdog had to signal (those that outlived a tick, e.g. descheduled), and the Lua
 * state's memory and the process RSS after the first 1% and at the end (no growth =
 * no leak).
 */
#include "discern/catalog.h"
#include "discern/paths.h"
#include "discern/policy.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define BUCKET_NS 10
#define BUCKETS 100000 /* up to 1 ms in 10 ns steps; slower goes in the last bucket */

static int64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static long rss_kib(void) {
    FILE *f = fopen("/proc/self/statm", "r");
    long pages = 0, resident = 0;
    if (f) {
        if (fscanf(f, "%ld %ld", &pages, &resident) != 2) resident = 0;
        fclose(f);
    }
    return resident * 4;
}

static double percentile(const uint32_t *hist, long total, double q) {
    long want = (long)(q * (double)total), seen = 0;
    for (int i = 0; i < BUCKETS; i++)
        if ((seen += hist[i]) > want) return (i + 0.5) * BUCKET_NS / 1000.0;
    return BUCKETS * BUCKET_NS / 1000.0;
}

static dsc_budget_state budget(const char *sel, const char *counter, dsc_metric m,
                               const char *window, double limit, double used, int64_t request) {
    dsc_budget_state b;
    memset(&b, 0, sizeof b);
    snprintf(b.selector, sizeof b.selector, "%s", sel);
    snprintf(b.counter, sizeof b.counter, "%s", counter);
    snprintf(b.window, sizeof b.window, "%s", window);
    b.metric = m;
    b.limit = (int64_t)(limit * DSC_MICRO);
    b.used = (int64_t)(used * DSC_MICRO);
    b.remaining = b.limit - b.used;
    b.request = request;
    b.would_exceed = b.used + b.request > b.limit;
    b.resets_at = 1769904000;
    return b;
}

/* Copy dir to a temporary folder with grid-aware enabled; returns the folder, or NULL
 * when dir has no grid_aware.lua to switch on (the second run is then skipped). */
static const char *all_four(const char *dir, char *tmp, size_t n) {
    char grid[4096];
    snprintf(grid, sizeof grid, "%s/grid_aware.lua", dir);
    if (access(grid, R_OK) != 0) return NULL;
    snprintf(tmp, n, "/tmp/discern-bench-XXXXXX");
    if (!mkdtemp(tmp)) return NULL;
    char cmd[8192];
    snprintf(
        cmd, sizeof cmd,
        "cp '%s'/*.lua '%s'/ && sed -i 's/enabled = false/enabled = true/' '%s'/grid_aware.lua",
        dir, tmp, tmp);
    return system(cmd) == 0 ? tmp : NULL;
}

static int run(const char *label, const char *dir, const dsc_catalog *cat, long n) {
    dsc_error err = {0};
    dsc_policy_set *set = dsc_policy_set_load(dir, &err);
    dsc_grid *grid = dsc_grid_new();
    if (!set || !grid || dsc_grid_load_catalog(grid, cat, &err) != DSC_OK) {
        fprintf(stderr, "bench_policy: %s\n", err.message);
        return 1;
    }
    dsc_grid_set_live(grid, "USA", 420, INT64_MAX, &err);
    dsc_policy_vm *vm = dsc_policy_vm_new(set, cat, grid, NULL, &err);
    if (!vm) {
        fprintf(stderr, "bench_policy: %s\n", err.message);
        return 1;
    }
    dsc_estimate est;
    dsc_estimate_input ei = {
        .provider = "openai", .model = "gpt-4o", .input_tokens = 400, .output_tokens = 800};
    if (dsc_estimate_compute(cat, &ei, &est, &err) != DSC_OK) {
        fprintf(stderr, "bench_policy: %s\n", err.message);
        return 1;
    }
    int64_t g = (int64_t)(est.total.gwp_kgco2eq.max * 1e3 * DSC_MICRO);
    dsc_budget_state bs[] = {
        budget("org:acme", "org:acme", DSC_METRIC_GCO2E, "year", 500000, 120000, g),
        budget("team:*", "team:infra", DSC_METRIC_GCO2E, "month", 50000, 20000, g),
        budget("user:*", "user:ana", DSC_METRIC_REQUESTS, "rate:100/1m", 100, 10, DSC_MICRO),
    };
    dsc_policy_tag tags[] = {{"app", "review-bot"}};
    dsc_policy_input in = {
        .subject = {.org = "acme", .team = "infra", .user = "ana", .key = "k1"},
        .provider = "openai",
        .model = "gpt-4o",
        .input_tokens = 400,
        .output_tokens = 800,
        .purpose = "code-review",
        .tags = tags,
        .n_tags = 1,
        .estimate = &est,
        .budgets = bs,
        .n_budgets = 3,
        .now = 1767225600,
    };
    uint32_t *hist = calloc(BUCKETS, sizeof *hist);
    if (!hist) return 1;
    memset(hist, 0, BUCKETS * sizeof *hist); /* touch its pages now: RSS then shows the VM */
    dsc_decision d;
    dsc_policy_stats st;
    long warm = n / 100 > 0 ? n / 100 : 1;
    size_t mem_warm = 0;
    long rss_warm = 0;
    struct timespec c0, c1;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &c0);
    int64_t max = 0, t0 = now_ns();
    for (long i = 0; i < n; i++) {
        int64_t a = now_ns();
        dsc_policy_vm_decide(vm, &in, &d);
        int64_t dt = now_ns() - a;
        if (i == warm) {
            dsc_policy_vm_stats(vm, &st);
            mem_warm = st.memory_in_use;
            rss_warm = rss_kib();
        }
        if (dt > max) max = dt;
        long b = dt / BUCKET_NS;
        hist[b < BUCKETS ? b : BUCKETS - 1]++;
    }
    double secs = (double)(now_ns() - t0) / 1e9;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &c1);
    double cpu = (double)(c1.tv_sec - c0.tv_sec) + (double)(c1.tv_nsec - c0.tv_nsec) / 1e9;
    dsc_policy_vm_stats(vm, &st);
    printf("%s: %d policies run, outcome %s (%s), suggest %s\n", label, d.n_verdicts,
           dsc_policy_outcome_name(d.outcome), d.policy[0] ? d.policy : "-",
           d.suggest_model[0] ? d.suggest_model : "-");
    printf("  %ld evaluations in %.2f s: median %.2f us, p99 %.2f us, max %.1f us, errors %llu, "
           "watchdog signals %llu; CPU %.2f us each (timing included)\n",
           n, secs, percentile(hist, n, 0.5), percentile(hist, n, 0.99), (double)max / 1000.0,
           (unsigned long long)st.errors, (unsigned long long)st.watchdog_signals,
           cpu * 1e6 / (double)n);
    printf("  Lua memory after %ld: %zu KiB, at the end: %zu KiB; RSS %ld KiB -> %ld KiB\n", warm,
           mem_warm / 1024, st.memory_in_use / 1024, rss_warm, rss_kib());
    free(hist);
    dsc_policy_vm_free(vm);
    dsc_policy_set_unref(set);
    dsc_grid_free(grid);
    return 0;
}

int main(int argc, char **argv) {
    const char *dir = argc > 1 ? argv[1] : "policies";
    long n = argc > 2 ? atol(argv[2]) : 10000000L;
    char data[DSC_PATH_MAX], tmp[64];
    dsc_error err = {0};
    dsc_catalog *cat = NULL;
    if (dsc_paths_data_dir(NULL, data, sizeof data, &err) == DSC_OK)
        cat = dsc_catalog_load(data, &err);
    if (!cat || n <= 0) {
        fprintf(stderr, "bench_policy: %s\n", n <= 0 ? "N must be > 0" : err.message);
        return 1;
    }
    int rc = run("shipped set (grid-aware disabled)", dir, cat, n);
    const char *four = all_four(dir, tmp, sizeof tmp);
    if (!rc && four) rc = run("all four policies enabled", four, cat, n);
    if (four) {
        char cmd[128];
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", four);
        if (system(cmd) != 0) fprintf(stderr, "bench_policy: cannot remove %s\n", four);
    }
    dsc_catalog_free(cat);
    return rc;
}
