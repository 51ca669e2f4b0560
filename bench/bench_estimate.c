/*
 * bench_estimate.c - how long one estimate and one catalogue load take.
 *
 *   build-rel/bin/bench_estimate [iterations] [data dir]
 *
 * Loads the catalogue LOADS times (wall-clock min and median), then runs
 * `iterations` estimates (default 4 000 000) cycling through a mix of requests
 * (MoE and dense models, parameter ranges, PUE ranges, measured-throughput and
 * latency-fit models, explicit and default zones, a measured latency), and reports
 * nanoseconds per estimate, wall and CPU; then the same for the discern method
 * (prefill, cache, reasoning, a live grid value, market carbon, total water,
 * lifecycle, an unknown model, an image, an embedding). Finally it times the error
 * path of an unknown model, which ranks close matches for the message.
 * Targets (docs/benchmarks.md): estimate well under 1 us (both methods), load under
 * 50 ms.
 */
#include "discern/catalog.h"
#include "discern/estimate.h"
#include "discern/grid.h"
#include "discern/paths.h"

#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#define LOADS 21
#define DEFAULT_ITERATIONS 4000000L
#define MISS_ITERATIONS 20000L

static double now_s(clockid_t clock) {
    struct timespec ts;
    clock_gettime(clock, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static dsc_catalog *bench_load(const char *dir) {
    double ms[LOADS];
    dsc_catalog *cat = NULL;
    dsc_error err;
    for (int i = 0; i < LOADS; i++) {
        dsc_catalog_free(cat);
        double t0 = now_s(CLOCK_MONOTONIC);
        cat = dsc_catalog_load(dir, &err);
        ms[i] = (now_s(CLOCK_MONOTONIC) - t0) * 1e3;
        if (!cat) {
            fprintf(stderr, "bench_estimate: %s\n", err.message);
            return NULL;
        }
    }
    qsort(ms, LOADS, sizeof ms[0], cmp_double);
    printf("catalogue load: %d runs, min %.2f ms, median %.2f ms, max %.2f ms "
           "(%zu models, %zu aliases, %zu zones)\n",
           LOADS, ms[0], ms[LOADS / 2], ms[LOADS - 1], dsc_catalog_model_count(cat),
           dsc_catalog_alias_count(cat), dsc_catalog_zone_count(cat));
    return cat;
}

static const dsc_estimate_input requests[] = {
    {.provider = "openai", .model = "gpt-4o", .output_tokens = 500},
    {.provider = "openai", .model = "gpt-3.5-turbo", .output_tokens = 50, .zone = "FRA"},
    {.provider = "anthropic", .model = "claude-sonnet-4-5", .output_tokens = 800, .latency_s = 6},
    {.provider = "mistralai", .model = "mistral-large-latest", .output_tokens = 300},
    {.provider = "huggingface_hub",
     .model = "meta-llama/Meta-Llama-3-70B-Instruct",
     .output_tokens = 500},
    {.provider = "google_genai", .model = "gemini-2.5-flash", .output_tokens = 1200, .zone = "DEU"},
    {.provider = "openai", .model = "gpt-4o-mini", .output_tokens = 5000, .zone = "WOR"},
    {.provider = "anthropic", .model = "claude-opus-4-1-20250805", .output_tokens = 200},
};
#define REQUEST_COUNT (sizeof requests / sizeof requests[0])

#define D DSC_METHOD_DISCERN
static dsc_estimate_input discern_requests[] = {
    {.provider = "openai",
     .model = "gpt-4o",
     .input_tokens = 1000,
     .output_tokens = 400,
     .method = D},
    {.provider = "openai",
     .model = "gpt-4o",
     .input_tokens = 50000,
     .cached_input_tokens = 40000,
     .output_tokens = 300,
     .reasoning_tokens = 2000,
     .method = D},
    {.provider = "google_genai",
     .model = "gemini-2.5-flash",
     .input_tokens = 1000,
     .output_tokens = 400,
     .carbon = DSC_CARBON_MARKET,
     .method = D},
    {.provider = "mistralai",
     .model = "mistral-large-2411",
     .output_tokens = 400,
     .scope = DSC_SCOPE_LIFECYCLE,
     .method = D},
    {.provider = "anthropic",
     .model = "claude-sonnet-4-5",
     .input_tokens = 3000,
     .output_tokens = 800,
     .zone = "DEU",
     .water = DSC_WATER_TOTAL,
     .method = D},
    {.provider = "openai",
     .model = "gpt-9-preview",
     .input_tokens = 500,
     .output_tokens = 200,
     .method = D},
    {.provider = "openai", .model = "gpt-image-1", .images = 2, .method = D},
    {.provider = "openai",
     .model = "text-embedding-3-large",
     .input_tokens = 2000,
     .modality = DSC_MODALITY_EMBEDDING,
     .method = D},
};
#define DISCERN_COUNT (sizeof discern_requests / sizeof discern_requests[0])

static int bench_estimates(const dsc_catalog *cat, const dsc_estimate_input *reqs, size_t n,
                           const char *label, long iterations) {
    dsc_estimate est;
    dsc_error err;
    double checksum = 0;
    double wall0 = now_s(CLOCK_MONOTONIC), cpu0 = now_s(CLOCK_PROCESS_CPUTIME_ID);
    for (long i = 0; i < iterations; i++) {
        if (dsc_estimate_compute(cat, &reqs[i % n], &est, &err) != DSC_OK) {
            fprintf(stderr, "bench_estimate: %s\n", err.message);
            return 1;
        }
        checksum += est.total.gwp_kgco2eq.max;
    }
    double wall = now_s(CLOCK_MONOTONIC) - wall0, cpu = now_s(CLOCK_PROCESS_CPUTIME_ID) - cpu0;
    printf("%s: %ld runs over %zu request shapes, %.1f ns/estimate wall, %.1f ns CPU "
           "(%.2f M/s; checksum %.6g)\n",
           label, iterations, n, wall * 1e9 / (double)iterations, cpu * 1e9 / (double)iterations,
           (double)iterations / wall / 1e6, checksum);
    return 0;
}

/* The discern mix, with a live grid value for DEU (read under the grid's lock). */
static int bench_discern(const dsc_catalog *cat, long iterations) {
    dsc_grid *grid = dsc_grid_new();
    if (!grid || dsc_grid_set_live(grid, "DEU", 300, INT64_MAX, NULL) != DSC_OK) {
        dsc_grid_free(grid);
        fprintf(stderr, "bench_estimate: cannot make a grid table\n");
        return 1;
    }
    for (size_t i = 0; i < DISCERN_COUNT; i++) {
        discern_requests[i].grid = grid;
        discern_requests[i].now = (int64_t)time(NULL);
    }
    int rc =
        bench_estimates(cat, discern_requests, DISCERN_COUNT, "estimate (discern)", iterations);
    dsc_grid_free(grid);
    return rc;
}

static void bench_unknown_model(const dsc_catalog *cat) {
    dsc_estimate_input in = {.provider = "openai", .model = "gpt4o", .output_tokens = 500};
    dsc_estimate est;
    dsc_error err;
    double t0 = now_s(CLOCK_MONOTONIC);
    for (long i = 0; i < MISS_ITERATIONS; i++)
        dsc_estimate_compute(cat, &in, &est, &err);
    double t = now_s(CLOCK_MONOTONIC) - t0;
    printf("unknown model (error with suggestions): %ld runs, %.2f us each (\"%s\")\n",
           MISS_ITERATIONS, t * 1e6 / MISS_ITERATIONS, err.message);
}

int main(int argc, char **argv) {
    long iterations = argc > 1 ? atol(argv[1]) : DEFAULT_ITERATIONS;
    if (iterations <= 0) {
        fprintf(stderr, "usage: bench_estimate [iterations > 0] [data dir]\n");
        return 2;
    }
    char dir[DSC_PATH_MAX];
    dsc_error err;
    if (dsc_paths_data_dir(argc > 2 ? argv[2] : NULL, dir, sizeof dir, &err) != DSC_OK) {
        fprintf(stderr, "bench_estimate: %s\n", err.message);
        return 1;
    }
    dsc_catalog *cat = bench_load(dir);
    if (!cat) return 1;
    int rc = bench_estimates(cat, requests, REQUEST_COUNT, "estimate (ecologits)", iterations);
    if (rc == 0) rc = bench_discern(cat, iterations);
    if (rc == 0) bench_unknown_model(cat);
    dsc_catalog_free(cat);
    return rc;
}
