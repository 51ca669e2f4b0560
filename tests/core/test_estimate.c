/*
 * test_estimate.c - the estimate reproduces EcoLogits and refuses bad input clearly.
 *
 * Conformance: every case of tests/data/ecologits_vectors.json (computed by running
 * EcoLogits main @ 5be90da itself) must match to a relative error of 1e-9 on every
 * min and max of every output (total, usage, embodied) and on the per-bound
 * intermediates; the case for a model EcoLogits main removed must be unknown_model.
 * Behaviour: aliases, default zones, the latency cap, input validation, messages.
 * The discern method: the three disclosures bracketed (max/min <= 6), prefill,
 * cached and reasoning tokens, unknown models, live/market carbon, water, lifecycle,
 * images, embeddings, and the scope and assumptions every answer carries.
 */
#include "discern/estimate.h"

#include "discern/catalog.h"
#include "discern/grid.h"

#include <criterion/criterion.h>
#include <jansson.h>
#include <math.h>
#include <pthread.h>
#include <string.h>

#define SHIPPED DISCERN_SOURCE_DIR "/core/data"
#define VECTORS DISCERN_SOURCE_DIR "/tests/data/ecologits_vectors.json"
#define REL_TOL 1e-9

static dsc_catalog *cat;

static void load(void) {
    dsc_error err;
    cat = dsc_catalog_load(SHIPPED, &err);
    cr_assert_not_null(cat, "catalogue failed to load: %s", err.message);
}

static void unload(void) {
    dsc_catalog_free(cat);
    cat = NULL;
}

TestSuite(estimate, .init = load, .fini = unload);

static dsc_estimate_input request(const char *provider, const char *model, int64_t out_tokens) {
    return (dsc_estimate_input){
        .provider = provider, .model = model, .output_tokens = out_tokens, .input_tokens = 1000};
}

/* ---- conformance against the EcoLogits vectors ---- */

static void expect_close(const char *id, const char *what, double got, double want) {
    double scale = fmax(fabs(got), fabs(want));
    double rel = scale == 0 ? 0 : fabs(got - want) / scale;
    cr_assert_leq(rel, REL_TOL, "%s: %s = %.17g, expected %.17g (relative error %.3g)", id, what,
                  got, want, rel);
}

static void expect_range(const char *id, const char *what, dsc_range got, const json_t *want) {
    char label[96];
    cr_assert(json_is_object(want), "%s: %s missing from the vectors", id, what);
    snprintf(label, sizeof label, "%s.min", what);
    expect_close(id, label, got.min, json_number_value(json_object_get(want, "min")));
    snprintf(label, sizeof label, "%s.max", what);
    expect_close(id, label, got.max, json_number_value(json_object_get(want, "max")));
}

static void expect_impacts(const char *id, const char *part, const dsc_impacts *got,
                           const json_t *want, int with_energy_and_water) {
    char label[64];
#define CHECK(field)                                                                               \
    snprintf(label, sizeof label, "%s.%s", part, #field);                                          \
    expect_range(id, label, got->field, json_object_get(want, #field))
    CHECK(gwp_kgco2eq);
    CHECK(adpe_kgsbeq);
    CHECK(pe_mj);
    if (with_energy_and_water) {
        CHECK(energy_kwh);
        CHECK(wcf_l);
    }
#undef CHECK
}

static void expect_bound(const char *id, int i, const dsc_estimate_bound *b, const json_t *want) {
    cr_assert_eq(b->gpu_count, json_integer_value(json_object_get(want, "gpu_required_count")),
                 "%s: bound %d gpu count %d", id, i, b->gpu_count);
    expect_close(id, "active_params_b", b->active_params_b,
                 json_number_value(json_object_get(want, "active_params_b")));
    expect_close(id, "total_params_b", b->total_params_b,
                 json_number_value(json_object_get(want, "total_params_b")));
    expect_close(id, "generation_latency_s", b->latency_s,
                 json_number_value(json_object_get(want, "generation_latency_s")));
    expect_close(id, "gpu_energy_kwh_per_gpu", b->gpu_energy_kwh_per_gpu,
                 json_number_value(json_object_get(want, "gpu_energy_kwh_per_gpu")));
    expect_close(id, "server_energy_kwh", b->server_energy_kwh,
                 json_number_value(json_object_get(want, "server_energy_kwh")));
    expect_close(id, "it_energy_kwh", b->it_energy_kwh,
                 json_number_value(json_object_get(want, "it_energy_kwh")));
}

static void expect_warnings(const char *id, unsigned bits, const json_t *want) {
    const char *names[8];
    int n = dsc_estimate_warning_names(bits, names, 8);
    cr_assert_eq((size_t)n, json_array_size(want), "%s: %d warnings", id, n);
    for (int i = 0; i < n; i++)
        cr_assert_str_eq(names[i], json_string_value(json_array_get(want, (size_t)i)), "%s", id);
}

static dsc_estimate_input vector_input(const json_t *in) {
    const json_t *lat = json_object_get(in, "request_latency_s");
    return (dsc_estimate_input){
        .provider = json_string_value(json_object_get(in, "provider")),
        .model = json_string_value(json_object_get(in, "model")),
        .input_tokens = json_integer_value(json_object_get(in, "input_tokens")),
        .output_tokens = json_integer_value(json_object_get(in, "output_tokens")),
        .latency_s = json_is_number(lat) ? json_number_value(lat) : 0,
        .zone = json_string_value(json_object_get(in, "zone")), /* NULL when null */
    };
}

/* Run one case; returns 1 when it expected numbers, 0 when it expected an error. */
static int run_case(const json_t *c) {
    const char *id = json_string_value(json_object_get(c, "id"));
    const json_t *expected = json_object_get(c, "expected");
    dsc_estimate_input in = vector_input(json_object_get(c, "inputs"));
    dsc_estimate est;
    dsc_error err;
    dsc_status st = dsc_estimate_compute(cat, &in, &est, &err);
    const json_t *errors = json_object_get(expected, "errors");
    if (errors) {
        cr_assert_str_eq(json_string_value(json_array_get(errors, 0)), "model-not-registered");
        cr_assert_eq(st, DSC_UNKNOWN_MODEL, "%s: status %d (%s)", id, st, err.message);
        return 0;
    }
    cr_assert_eq(st, DSC_OK, "%s: %s", id, err.message);
    const json_t *outputs = json_object_get(expected, "outputs");
    expect_impacts(id, "total", &est.total, outputs, 1);
    expect_impacts(id, "usage", &est.usage, json_object_get(outputs, "usage"), 1);
    expect_impacts(id, "embodied", &est.embodied, json_object_get(outputs, "embodied"), 0);
    const json_t *resolved = json_object_get(expected, "resolved");
    cr_assert_str_eq(est.zone, json_string_value(json_object_get(resolved, "zone")), "%s", id);
    expect_warnings(id, est.warnings, json_object_get(expected, "warnings"));
    const json_t *inter = json_object_get(expected, "intermediates");
    /* EcoLogits runs once for scalar parameters (both bounds equal), twice for ranges. */
    size_t runs = json_array_size(inter);
    cr_assert(runs == 1 || runs == 2, "%s: %zu runs", id, runs);
    for (int i = 0; i < 2; i++)
        expect_bound(id, i, &est.bound[i], json_array_get(inter, runs == 2 ? (size_t)i : 0));
    return 1;
}

Test(estimate, reproduces_every_ecologits_reference_vector_to_1e_9) {
    json_error_t je;
    json_t *root = json_load_file(VECTORS, 0, &je);
    cr_assert_not_null(root, "%s:%d: %s", VECTORS, je.line, je.text);
    const json_t *cases = json_object_get(root, "cases");
    size_t i, numeric = 0, errors = 0;
    const json_t *c;
    json_array_foreach(cases, i, c) {
        if (run_case(c))
            numeric++;
        else
            errors++;
    }
    cr_assert_eq(numeric, 21);
    cr_assert_eq(errors, 1);
    json_decref(root);
}

/* ---- behaviour ---- */

Test(estimate, alias_gives_the_same_numbers_as_its_target) {
    dsc_estimate a, b;
    dsc_estimate_input in = request("anthropic", "claude-opus-4-1", 500);
    cr_assert_eq(dsc_estimate_compute(cat, &in, &a, NULL), DSC_OK);
    in.model = "claude-opus-4-1-20250805";
    cr_assert_eq(dsc_estimate_compute(cat, &in, &b, NULL), DSC_OK);
    cr_assert_eq(memcmp(&a.total, &b.total, sizeof a.total), 0);
}

Test(estimate, without_zone_the_provider_default_applies_and_zone_is_case_insensitive) {
    dsc_estimate est;
    dsc_estimate_input in = request("mistralai", "mistral-large-latest", 500);
    cr_assert_eq(dsc_estimate_compute(cat, &in, &est, NULL), DSC_OK);
    cr_assert_str_eq(est.zone, "SWE");
    in.zone = "";
    cr_assert_eq(dsc_estimate_compute(cat, &in, &est, NULL), DSC_OK);
    cr_assert_str_eq(est.zone, "SWE");
    in.zone = "fra";
    cr_assert_eq(dsc_estimate_compute(cat, &in, &est, NULL), DSC_OK);
    cr_assert_str_eq(est.zone, "FRA");
}

Test(estimate, measured_latency_only_ever_lowers_the_estimate) {
    dsc_estimate base, fast, slow;
    dsc_estimate_input in = request("openai", "gpt-4o", 500);
    cr_assert_eq(dsc_estimate_compute(cat, &in, &base, NULL), DSC_OK);
    in.latency_s = 2.0; /* below the modeled 13.75 s */
    cr_assert_eq(dsc_estimate_compute(cat, &in, &fast, NULL), DSC_OK);
    cr_assert_float_eq(fast.bound[0].latency_s, 2.0, 0);
    cr_assert_lt(fast.total.energy_kwh.max, base.total.energy_kwh.max);
    cr_assert_lt(fast.embodied.gwp_kgco2eq.max, base.embodied.gwp_kgco2eq.max);
    cr_assert_float_eq(fast.bound[0].gpu_energy_kwh_per_gpu, base.bound[0].gpu_energy_kwh_per_gpu,
                       0);
    in.latency_s = 600.0; /* a slow request does not raise it */
    cr_assert_eq(dsc_estimate_compute(cat, &in, &slow, NULL), DSC_OK);
    cr_assert_eq(memcmp(&slow.total, &base.total, sizeof base.total), 0);
    in.latency_s = -1; /* not measured */
    cr_assert_eq(dsc_estimate_compute(cat, &in, &slow, NULL), DSC_OK);
    cr_assert_eq(memcmp(&slow.total, &base.total, sizeof base.total), 0);
}

Test(estimate, input_tokens_do_not_change_the_ecologits_numbers) {
    dsc_estimate a, b;
    dsc_estimate_input in = request("openai", "gpt-4o-mini", 200);
    in.input_tokens = 0;
    cr_assert_eq(dsc_estimate_compute(cat, &in, &a, NULL), DSC_OK);
    in.input_tokens = 500000;
    cr_assert_eq(dsc_estimate_compute(cat, &in, &b, NULL), DSC_OK);
    cr_assert_eq(memcmp(&a.total, &b.total, sizeof a.total), 0);
}

Test(estimate, every_catalogue_model_gives_finite_ordered_positive_ranges) {
    for (size_t i = 0; i < dsc_catalog_model_count(cat); i++) {
        const dsc_model *m = dsc_catalog_model_at(cat, i);
        dsc_estimate est;
        dsc_error err;
        dsc_estimate_input in = request(m->provider, m->name, 300);
        cr_assert_eq(dsc_estimate_compute(cat, &in, &est, &err), DSC_OK, "%s: %s", m->name,
                     err.message);
        const dsc_range *r = &est.total.energy_kwh;
        for (int k = 0; k < 5; k++, r++) {
            cr_assert(isfinite(r->min) && isfinite(r->max), "%s/%s", m->provider, m->name);
            cr_assert_gt(r->min, 0, "%s/%s field %d", m->provider, m->name, k);
            cr_assert_leq(r->min, r->max, "%s/%s field %d", m->provider, m->name, k);
        }
    }
}

Test(estimate, more_output_tokens_cost_more) {
    dsc_estimate a, b;
    dsc_estimate_input in = request("openai", "gpt-4o", 50);
    cr_assert_eq(dsc_estimate_compute(cat, &in, &a, NULL), DSC_OK);
    in.output_tokens = 5000;
    cr_assert_eq(dsc_estimate_compute(cat, &in, &b, NULL), DSC_OK);
    cr_assert_gt(b.total.gwp_kgco2eq.min, 50 * a.total.gwp_kgco2eq.min);
}

Test(estimate, zero_output_tokens_costs_only_the_time_to_first_token) {
    dsc_estimate est;
    dsc_estimate_input in = request("openai", "gpt-4o", 0);
    cr_assert_eq(dsc_estimate_compute(cat, &in, &est, NULL), DSC_OK);
    cr_assert_eq(est.bound[0].gpu_energy_kwh_per_gpu, 0);
    cr_assert_float_eq(est.bound[0].latency_s, 0.52, 1e-12);
}

static void expect_error(dsc_estimate_input in, dsc_status code, const char *frag1,
                         const char *frag2) {
    dsc_estimate est;
    memset(&est, 0xab, sizeof est);
    dsc_error err;
    cr_assert_eq(dsc_estimate_compute(cat, &in, &est, &err), code, "got: %s", err.message);
    cr_assert_eq(err.code, code);
    cr_assert_not_null(strstr(err.message, frag1), "'%s' not in: %s", frag1, err.message);
    if (frag2)
        cr_assert_not_null(strstr(err.message, frag2), "'%s' not in: %s", frag2, err.message);
    cr_assert_eq(est.total.energy_kwh.max, 0, "output must be zeroed on error");
    cr_assert_eq(est.zone[0], '\0');
}

Test(estimate, negative_or_absurd_token_counts_are_bad_requests_naming_the_field) {
    dsc_estimate_input in = request("openai", "gpt-4o", -5);
    expect_error(in, DSC_BAD_REQUEST, "output_tokens", "-5");
    in.output_tokens = 2000000000;
    expect_error(in, DSC_BAD_REQUEST, "output_tokens", "2000000000");
    in.output_tokens = 10;
    in.input_tokens = -1;
    expect_error(in, DSC_BAD_REQUEST, "input_tokens", "-1");
    in.input_tokens = 1000000001;
    expect_error(in, DSC_BAD_REQUEST, "input_tokens", "1000000001");
}

Test(estimate, nan_or_infinite_latency_is_a_bad_request) {
    dsc_estimate_input in = request("openai", "gpt-4o", 10);
    in.latency_s = NAN;
    expect_error(in, DSC_BAD_REQUEST, "latency_s", "nan");
    in.latency_s = INFINITY;
    expect_error(in, DSC_BAD_REQUEST, "latency_s", "inf");
}

Test(estimate, missing_provider_or_model_is_a_bad_request) {
    expect_error(request(NULL, "gpt-4o", 10), DSC_BAD_REQUEST, "field 'provider'", NULL);
    expect_error(request("openai", "", 10), DSC_BAD_REQUEST, "field 'model'", NULL);
    dsc_estimate_input in = request("openai", "gpt-4o", 10);
    in.method = DSC_METHOD_COUNT;
    expect_error(in, DSC_BAD_REQUEST, "field 'method'", NULL);
}

Test(estimate, unknown_names_get_their_own_status_and_close_matches) {
    expect_error(request("open-ai", "gpt-4o", 10), DSC_UNKNOWN_PROVIDER, "'open-ai'",
                 "did you mean 'openai'");
    expect_error(request("openai", "gpt4o", 10), DSC_UNKNOWN_MODEL, "'gpt4o'",
                 "did you mean 'gpt-4o'");
    expect_error(request("anthropic", "claude-3-5-sonnet-20241022", 10), DSC_UNKNOWN_MODEL,
                 "field 'model'", "claude-3-5-sonnet-20241022");
    dsc_estimate_input in = request("openai", "gpt-4o", 10);
    in.zone = "FRX";
    expect_error(in, DSC_UNKNOWN_ZONE, "field 'zone'", "'FRA'");
}

Test(estimate, estimate_without_catalogue_or_output_fails_cleanly) {
    dsc_estimate est;
    dsc_estimate_input in = request("openai", "gpt-4o", 10);
    cr_assert_eq(dsc_estimate_compute(NULL, &in, &est, NULL), DSC_INTERNAL);
    cr_assert_eq(dsc_estimate_compute(cat, &in, NULL, NULL), DSC_BAD_REQUEST);
    cr_assert_eq(dsc_estimate_compute(cat, NULL, &est, NULL), DSC_BAD_REQUEST);
}

Test(estimate, method_names_parse_and_print) {
    dsc_method m = DSC_METHOD_COUNT;
    cr_assert_eq(dsc_method_parse("ecologits", &m), DSC_OK);
    cr_assert_eq(m, DSC_METHOD_ECOLOGITS);
    cr_assert_str_eq(dsc_method_name(DSC_METHOD_ECOLOGITS), "ecologits");
    cr_assert_eq(dsc_method_parse("magic", &m), DSC_BAD_REQUEST);
    cr_assert_eq(dsc_method_parse(NULL, &m), DSC_BAD_REQUEST);
    cr_assert_null(dsc_method_name(DSC_METHOD_COUNT));
}

Test(estimate, warning_names_follow_the_bits) {
    const char *names[2];
    cr_assert_eq(dsc_estimate_warning_names(0, names, 2), 0);
    cr_assert_eq(dsc_estimate_warning_names(DSC_WARN_ARCH_MULTIMODAL, names, 2), 1);
    cr_assert_str_eq(names[0], "model-arch-multimodal");
    cr_assert_eq(
        dsc_estimate_warning_names(DSC_WARN_ARCH_NOT_RELEASED | DSC_WARN_ARCH_MULTIMODAL, names, 1),
        1);
    cr_assert_str_eq(names[0], "model-arch-not-released");
}

/* ---- concurrency: one catalogue, many threads, identical answers ---- */

#define THREADS 4
#define PER_THREAD 20000

static void *estimate_many(void *arg) {
    const dsc_estimate *want = arg;
    dsc_estimate_input in = request("anthropic", "claude-sonnet-4-5", 700);
    in.latency_s = 9;
    for (int i = 0; i < PER_THREAD; i++) {
        dsc_estimate got;
        if (dsc_estimate_compute(cat, &in, &got, NULL) != DSC_OK) return "failed";
        if (memcmp(&got.total, &want->total, sizeof got.total) != 0) return "differs";
    }
    return NULL;
}

Test(estimate, concurrent_estimates_on_one_catalogue_agree) {
    dsc_estimate want;
    dsc_estimate_input in = request("anthropic", "claude-sonnet-4-5", 700);
    in.latency_s = 9;
    cr_assert_eq(dsc_estimate_compute(cat, &in, &want, NULL), DSC_OK);
    pthread_t t[THREADS];
    for (int i = 0; i < THREADS; i++)
        cr_assert_eq(pthread_create(&t[i], NULL, estimate_many, &want), 0);
    for (int i = 0; i < THREADS; i++) {
        void *res = NULL;
        pthread_join(t[i], &res);
        cr_assert_null(res, "thread %d: %s", i, (const char *)res);
    }
}

/* ---- the discern method ---- */

static dsc_estimate_input discern(const char *provider, const char *model, int64_t in_tokens,
                                  int64_t out_tokens) {
    return (dsc_estimate_input){.provider = provider,
                                .model = model,
                                .input_tokens = in_tokens,
                                .output_tokens = out_tokens,
                                .method = DSC_METHOD_DISCERN};
}

static dsc_estimate compute_ok(const dsc_estimate_input *in) {
    dsc_estimate est;
    dsc_error err;
    dsc_status st = dsc_estimate_compute(cat, in, &est, &err);
    cr_assert_eq(st, DSC_OK, "%s/%s: %s", in->provider, in->model, err.message);
    return est;
}

/* The estimate names the catalogue's record of its model (an alias's target), so a
 * caller needs no second look-up by name; none for a model the discern method only
 * guesses, and none when the estimate fails. */
Test(estimate, an_estimate_names_its_model_record_and_none_for_a_fallback) {
    dsc_estimate est;
    dsc_estimate_input in = request("anthropic", "claude-opus-4-1", 500);
    cr_assert_eq(dsc_estimate_compute(cat, &in, &est, NULL), DSC_OK);
    cr_assert_eq(est.model, dsc_catalog_model(cat, "anthropic", "claude-opus-4-1-20250805"));
    cr_assert_not_null(est.model);
    in = discern("openai", "gpt-4o", 100, 500);
    est = compute_ok(&in);
    cr_assert_eq(est.model, dsc_catalog_model(cat, "openai", "gpt-4o"));
    in = discern("openai", "no-such-model-at-all", 100, 500);
    est = compute_ok(&in);
    cr_assert_null(est.model, "a fallback class is no record of the catalogue");
    in = request("openai", "no-such-model-at-all", 500);
    cr_assert_neq(dsc_estimate_compute(cat, &in, &est, NULL), DSC_OK);
    cr_assert_null(est.model);
}

/* The range holds the disclosed value and is at most 6 wide (max / min). */
static void expect_brackets(const char *what, dsc_range r, double disclosed) {
    cr_assert(r.min <= disclosed && disclosed <= r.max, "%s: %.4g not in [%.4g, %.4g]", what,
              disclosed, r.min, r.max);
    cr_assert_leq(r.max / r.min, 6.0, "%s: range [%.4g, %.4g] is %.2f wide", what, r.min, r.max,
                  r.max / r.min);
}

Test(estimate, discern_brackets_mistral_large_2_lca_in_lifecycle_scope) {
    dsc_estimate_input in = discern("mistralai", "mistral-large-2411", 0, 400);
    in.scope = DSC_SCOPE_LIFECYCLE;
    dsc_estimate est = compute_ok(&in);
    expect_brackets("gwp (kg)", est.total.gwp_kgco2eq, 1.14e-3);
    expect_brackets("water (L)", est.total.wcf_l, 45e-3);
    cr_assert_eq(est.scope, DSC_SCOPE_LIFECYCLE);
    cr_assert_not_null(est.assumptions.lifecycle_source);
    cr_assert_eq(est.warnings & DSC_WARN_LIFECYCLE_CLASS, 0, "a disclosed model is not a class");
}

Test(estimate, discern_brackets_google_gemini_median_prompt_market_onsite) {
    dsc_estimate_input in = discern("google_genai", "gemini-2.5-flash", 1000, 400);
    in.carbon = DSC_CARBON_MARKET;
    in.water = DSC_WATER_ONSITE;
    dsc_estimate est = compute_ok(&in);
    expect_brackets("energy (kWh)", est.total.energy_kwh, 0.24e-3);
    expect_brackets("water (L)", est.total.wcf_l, 0.26e-3);
    cr_assert_eq(est.carbon, DSC_CARBON_MARKET);
    cr_assert_str_eq(est.assumptions.grid_source, "market");
    cr_assert_str_eq(est.assumptions.accelerator, "TPUv4");
}

Test(estimate, discern_brackets_openai_average_chatgpt_query) {
    dsc_estimate_input in = discern("openai", "gpt-4o", 1000, 400);
    expect_brackets("energy (kWh)", compute_ok(&in).total.energy_kwh, 0.34e-3);
}

Test(estimate, discern_50000_input_tokens_raise_gpt4o_energy_by_more_than_10_percent) {
    dsc_estimate_input none = discern("openai", "gpt-4o", 0, 400);
    dsc_estimate_input rag = discern("openai", "gpt-4o", 50000, 400);
    dsc_estimate a = compute_ok(&none), b = compute_ok(&rag);
    cr_assert_gt(b.total.energy_kwh.min, 1.1 * a.total.energy_kwh.min);
    cr_assert_gt(b.total.energy_kwh.max, 1.1 * a.total.energy_kwh.max);
}

Test(estimate, discern_2000_reasoning_tokens_at_least_double_a_100_token_answer) {
    dsc_estimate_input plain = discern("openai", "gpt-4o", 0, 100);
    dsc_estimate_input thinking = plain;
    thinking.reasoning_tokens = 2000;
    dsc_estimate a = compute_ok(&plain), b = compute_ok(&thinking);
    cr_assert_geq(b.total.energy_kwh.min, 2 * a.total.energy_kwh.min);
    cr_assert_geq(b.total.energy_kwh.max, 2 * a.total.energy_kwh.max);
}

Test(estimate, discern_cached_input_tokens_cost_less_than_fresh_ones_but_not_nothing) {
    dsc_estimate_input none = discern("openai", "gpt-4o", 0, 100);
    dsc_estimate_input fresh = discern("openai", "gpt-4o", 20000, 100);
    dsc_estimate_input cached = fresh;
    cached.cached_input_tokens = 20000;
    double e0 = compute_ok(&none).total.energy_kwh.max;
    double ef = compute_ok(&fresh).total.energy_kwh.max;
    double ec = compute_ok(&cached).total.energy_kwh.max;
    cr_assert(e0 < ec && ec < ef, "none %g, cached %g, fresh %g", e0, ec, ef);
}

Test(estimate, discern_cached_tokens_above_input_tokens_are_a_bad_request_naming_the_field) {
    dsc_estimate_input in = discern("openai", "gpt-4o", 10, 100);
    in.cached_input_tokens = 11;
    dsc_estimate est;
    dsc_error err;
    cr_assert_eq(dsc_estimate_compute(cat, &in, &est, &err), DSC_BAD_REQUEST);
    cr_assert_not_null(strstr(err.message, "cached_input_tokens"), "%s", err.message);
}

Test(estimate, discern_estimates_an_unknown_model_with_the_widest_class_and_flags_it) {
    dsc_estimate_input in = discern("openai", "gpt-9-preview", 1000, 400);
    dsc_estimate est = compute_ok(&in);
    cr_assert_str_eq(est.assumptions.params_source, "fallback-class");
    cr_assert(est.warnings & DSC_WARN_FALLBACK_CLASS);
    cr_assert(est.warnings & DSC_WARN_MODEL_UNLISTED);
    dsc_estimate_input known = discern("openai", "gpt-4o", 1000, 400);
    dsc_estimate k = compute_ok(&known);
    cr_assert_lt(est.total.energy_kwh.min, k.total.energy_kwh.min);
    cr_assert_gt(est.total.energy_kwh.max, k.total.energy_kwh.max);
    in.method = DSC_METHOD_ECOLOGITS;
    cr_assert_eq(dsc_estimate_compute(cat, &in, &est, NULL), DSC_UNKNOWN_MODEL);
}

Test(estimate, discern_estimates_an_unlisted_model_from_the_parameters_given) {
    dsc_estimate_input dense = discern("mistralai", "my-finetune", 0, 400);
    dense.parameters_b = 123;
    dsc_estimate_input listed = discern("mistralai", "mistral-large-2411", 0, 400);
    dsc_estimate a = compute_ok(&dense), b = compute_ok(&listed);
    cr_assert_str_eq(a.assumptions.params_source, "request");
    cr_assert(a.warnings & DSC_WARN_MODEL_UNLISTED);
    cr_assert_eq(a.warnings & DSC_WARN_FALLBACK_CLASS, 0);
    cr_assert_float_eq(a.total.energy_kwh.max, b.total.energy_kwh.max, 1e-15);
    dsc_estimate_input moe = discern("mistralai", "my-moe", 0, 400);
    moe.active_parameters_b = 20;
    moe.total_parameters_b = 120;
    dsc_estimate c = compute_ok(&moe);
    cr_assert_float_eq(c.assumptions.active_params_b.max, 20, 1e-12);
    cr_assert_float_eq(c.assumptions.total_params_b.max, 120, 1e-12);
    cr_assert_lt(c.total.energy_kwh.max, a.total.energy_kwh.max);
}

Test(estimate, discern_uses_a_live_grid_value_while_valid_and_ecologits_never_does) {
    dsc_grid *g = dsc_grid_new();
    cr_assert_not_null(g);
    dsc_estimate_input in = discern("mistralai", "mistral-large-2411", 0, 400);
    in.zone = "DEU";
    in.grid = g;
    in.now = 1000;
    dsc_estimate annual = compute_ok(&in);
    cr_assert_str_eq(annual.assumptions.grid_source, "annual");
    cr_assert_float_eq(annual.assumptions.gco2e_per_kwh, 344.14, 1e-9);
    cr_assert_eq(dsc_grid_set_live(g, "DEU", 688.28, 2000, NULL), DSC_OK);
    dsc_estimate live = compute_ok(&in);
    cr_assert_str_eq(live.assumptions.grid_source, "live");
    cr_assert_float_eq(live.usage.gwp_kgco2eq.max, 2 * annual.usage.gwp_kgco2eq.max, 1e-15);
    in.now = 2000; /* expired */
    cr_assert_str_eq(compute_ok(&in).assumptions.grid_source, "annual");
    in.now = 1000;
    in.method = DSC_METHOD_ECOLOGITS;
    dsc_estimate eco = compute_ok(&in);
    cr_assert_str_eq(eco.assumptions.grid_source, "annual");
    cr_assert_float_eq(eco.assumptions.gco2e_per_kwh, 344.14, 1e-9);
    dsc_grid_free(g);
}

Test(estimate, discern_market_carbon_uses_the_provider_factor_or_says_it_has_none) {
    dsc_estimate_input in = discern("google_genai", "gemini-2.5-flash", 1000, 400);
    in.carbon = DSC_CARBON_MARKET;
    dsc_estimate g = compute_ok(&in);
    cr_assert_float_eq(g.assumptions.gco2e_per_kwh, 125, 1e-9);
    dsc_estimate_input o = discern("openai", "gpt-4o", 1000, 400);
    o.carbon = DSC_CARBON_MARKET;
    dsc_estimate est = compute_ok(&o);
    cr_assert(est.warnings & DSC_WARN_MARKET_UNKNOWN);
    cr_assert_eq(est.carbon, DSC_CARBON_LOCATION, "the answer says what it used");
}

Test(estimate, discern_total_water_adds_the_water_of_electricity_generation) {
    dsc_estimate_input in = discern("openai", "gpt-4o", 1000, 400);
    dsc_estimate onsite = compute_ok(&in);
    in.water = DSC_WATER_TOTAL;
    dsc_estimate total = compute_ok(&in);
    /* USA: 0.569 L/kWh on site; 1.2 x 3.1321 L/kWh off site, per kWh of IT energy */
    double it = total.bound[1].it_energy_kwh;
    cr_assert_float_eq(onsite.total.wcf_l.max, it * 0.569, 1e-15);
    cr_assert_float_eq(total.total.wcf_l.max, it * (0.569 + 1.2 * 3.1321), 1e-15);
}

Test(estimate, discern_lifecycle_of_an_undisclosed_model_adds_the_class_value_flagged) {
    dsc_estimate_input in = discern("openai", "gpt-4o", 1000, 400);
    dsc_estimate inference = compute_ok(&in);
    in.scope = DSC_SCOPE_LIFECYCLE;
    dsc_estimate life = compute_ok(&in);
    cr_assert(life.warnings & DSC_WARN_LIFECYCLE_CLASS);
    cr_assert_float_eq(life.total.gwp_kgco2eq.max - inference.total.gwp_kgco2eq.max,
                       0.84 * inference.usage.gwp_kgco2eq.max, 1e-15);
    cr_assert_float_eq(life.total.energy_kwh.max, inference.total.energy_kwh.max, 1e-18);
    cr_assert_null(inference.assumptions.lifecycle_source);
}

Test(estimate, discern_images_scale_with_their_count_and_size) {
    dsc_estimate_input one = discern("openai", "gpt-image-1", 0, 0);
    one.images = 1;
    dsc_estimate_input four = one;
    four.images = 4;
    dsc_estimate_input big = one;
    big.image_pixels = 2048 * 2048;
    double e1 = compute_ok(&one).total.energy_kwh.max;
    cr_assert_float_eq(compute_ok(&four).total.energy_kwh.max, 4 * e1, 1e-15);
    cr_assert_float_eq(compute_ok(&big).total.energy_kwh.max, 4 * e1, 1e-15);
    /* 2.9 Wh of accelerator energy x host overhead 1.603 x PUE 1.2 */
    cr_assert_float_eq(e1, 2.9e-3 * 1.603 * 1.2, 1e-12);
}

Test(estimate, discern_embeddings_count_input_tokens_only) {
    dsc_estimate_input in = discern("openai", "text-embedding-3-large", 1000, 0);
    in.modality = DSC_MODALITY_EMBEDDING;
    dsc_estimate a = compute_ok(&in);
    in.output_tokens = 500;
    in.reasoning_tokens = 500;
    dsc_estimate b = compute_ok(&in);
    cr_assert_float_eq(a.total.energy_kwh.max, b.total.energy_kwh.max, 1e-18);
    cr_assert_gt(a.total.energy_kwh.max, 0);
    cr_assert_str_eq(a.assumptions.params_source, "fallback-class");
    cr_assert_float_eq(a.assumptions.active_params_b.max, 7, 1e-12);
}

Test(estimate, every_answer_states_its_scope_and_assumptions) {
    dsc_estimate_input eco = request("openai", "gpt-4o", 500);
    dsc_estimate e = compute_ok(&eco);
    cr_assert_eq(e.scope, DSC_SCOPE_INFERENCE);
    cr_assert_eq(e.water, DSC_WATER_TOTAL, "EcoLogits counts the water of electricity too");
    cr_assert_str_eq(e.assumptions.accelerator, "H100");
    cr_assert_float_eq(e.assumptions.batch.min, 64, 1e-12);
    cr_assert_str_eq(e.assumptions.zone_source, "provider");
    dsc_estimate_input d = discern("openai", "gpt-4o", 0, 500);
    d.zone = "FRA";
    dsc_estimate x = compute_ok(&d);
    cr_assert_str_eq(x.assumptions.zone_source, "request");
    cr_assert_float_eq(x.assumptions.batch.min, 64, 1e-12);
    cr_assert_float_eq(x.assumptions.batch.max, 256, 1e-12);
    cr_assert_float_eq(x.assumptions.precision_bits, 8, 1e-12);
    cr_assert_str_eq(dsc_scope_name(x.scope), "inference");
    cr_assert_str_eq(dsc_carbon_name(x.carbon), "location");
    cr_assert_str_eq(dsc_water_name(x.water), "onsite");
}

Test(estimate, scope_carbon_and_water_names_parse_and_refuse_unknown_ones) {
    dsc_scope s;
    dsc_carbon c;
    dsc_water w;
    cr_assert_eq(dsc_scope_parse("lifecycle", &s), DSC_OK);
    cr_assert_eq(s, DSC_SCOPE_LIFECYCLE);
    cr_assert_eq(dsc_carbon_parse("market", &c), DSC_OK);
    cr_assert_eq(c, DSC_CARBON_MARKET);
    cr_assert_eq(dsc_water_parse("total", &w), DSC_OK);
    cr_assert_eq(w, DSC_WATER_TOTAL);
    cr_assert_eq(dsc_scope_parse("everything", &s), DSC_BAD_REQUEST);
    cr_assert_eq(dsc_carbon_parse(NULL, &c), DSC_BAD_REQUEST);
    cr_assert_eq(dsc_method_parse("discern", NULL), DSC_OK);
}

Test(estimate, every_choice_parses_each_listed_name_to_its_index_and_names_them_in_order) {
    for (int k = 0; k < DSC_CHOICE_COUNT; k++) {
        const char *const *names = dsc_estimate_choice_list((dsc_choice)k);
        cr_assert_not_null(names);
        char listed[128] = "";
        int n = 0;
        while (names[n])
            n++;
        for (int i = 0; i < n; i++) {
            int v = -1;
            cr_assert_eq(dsc_estimate_choice_parse((dsc_choice)k, names[i], &v), DSC_OK);
            cr_assert_eq(v, i);
            const char *sep = i == 0 ? "" : i == n - 1 ? " or " : ", ";
            strncat(listed, sep, sizeof listed - strlen(listed) - 1);
            strncat(listed, names[i], sizeof listed - strlen(listed) - 1);
        }
        cr_assert_str_eq(dsc_estimate_choice_names((dsc_choice)k), listed);
        cr_assert_eq(dsc_estimate_choice_parse((dsc_choice)k, "nonesuch", NULL), DSC_BAD_REQUEST);
        cr_assert_eq(dsc_estimate_choice_parse((dsc_choice)k, NULL, NULL), DSC_BAD_REQUEST);
    }
    int v = -1;
    cr_assert_eq(dsc_estimate_choice_parse(DSC_CHOICE_MODALITY, "image", &v), DSC_OK);
    cr_assert_eq(v, DSC_MODALITY_IMAGE);
    cr_assert_eq(dsc_estimate_choice_parse(DSC_CHOICE_COUNT, "text", &v), DSC_BAD_REQUEST);
    cr_assert_null(dsc_estimate_choice_names(DSC_CHOICE_COUNT));
    cr_assert_str_eq(dsc_method_names[DSC_METHOD_DISCERN], "discern");
    cr_assert_null(dsc_method_names[DSC_METHOD_COUNT]);
    cr_assert_null(dsc_modality_name((dsc_modality)3));
}
