/*
 * test_cli.c - the `discern` binary: estimate, models and zones print what they
 * should, in tables and JSON, and fail with the documented exit codes and messages
 * (0 ok, 1 catalogue unreadable, 2 bad options, 3 unknown provider/model/zone).
 *
 * Each test runs build/bin/discern in a child process with stdout and stderr sent
 * to temporary files, then inspects both and the exit status.
 */
#include "run.h"

#include <criterion/criterion.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define DISCERN DISCERN_BINARY_DIR "/bin/discern"
#define VECTORS DISCERN_SOURCE_DIR "/tests/data/ecologits_vectors.json"

/* Run discern with args (NULL-terminated); data_env, when not NULL, is put in
 * DISCERN_DATA_DIR (otherwise that variable is removed). */
static run_result run_env(const char *data_env, const char *const *args) {
    char set[512];
    snprintf(set, sizeof set, "DISCERN_DATA_DIR=%s", data_env ? data_env : "");
    return run_discern(args, (const char *const[]){data_env ? set : "DISCERN_DATA_DIR", NULL});
}

#define RUN(...) run_env(NULL, (const char *const[]){__VA_ARGS__, NULL})

static void expect_fail(run_result r, int code, const char *frag) {
    cr_assert_eq(r.code, code, "exit %d, stderr: %s", r.code, r.err);
    cr_assert_not_null(strstr(r.err, frag), "'%s' not in stderr: %s", frag, r.err);
    cr_assert_not_null(strstr(r.err, "discern: "), "stderr: %s", r.err);
    cr_assert_eq(strchr(r.err, '\n'), r.err + strlen(r.err) - 1, "not one line: %s", r.err);
    cr_assert_str_eq(r.out, "", "stdout should be empty on error: %s", r.out);
    run_free(&r);
}

/* ---- help and usage ---- */

Test(cli, every_command_has_help_and_exits_zero) {
    const char *cmds[] = {"estimate", "models", "zones"};
    for (size_t i = 0; i < 3; i++) {
        run_result r = RUN(cmds[i], "--help");
        cr_assert_eq(r.code, 0, "%s --help exit %d", cmds[i], r.code);
        char want[64];
        snprintf(want, sizeof want, "usage: discern %s", cmds[i]);
        cr_assert_not_null(strstr(r.out, want), "%s", r.out);
        run_free(&r);
    }
    run_result r = RUN("--help");
    cr_assert_eq(r.code, 0);
    cr_assert_not_null(strstr(r.out, "estimate"));
    run_free(&r);
}

Test(cli, no_command_or_unknown_command_is_a_usage_error) {
    run_result r = run_env(NULL, (const char *const[]){NULL});
    cr_assert_eq(r.code, 2);
    run_free(&r);
    r = RUN("frobnicate");
    cr_assert_eq(r.code, 2);
    cr_assert_not_null(strstr(r.err, "unknown command 'frobnicate'"));
    run_free(&r);
}

/* ---- estimate ---- */

Test(cli, estimate_table_shows_ranges_zone_factors_and_warnings) {
    run_result r = RUN("estimate", "--provider", "openai", "--model", "gpt-4o", "--output-tokens",
                       "500", "--zone", "FRA");
    cr_assert_eq(r.code, 0, "stderr: %s", r.err);
    const char *want[] = {"zone FRA",      "energy (Wh)", "0.801 \u2013 1.28",
                          "GWP (gCO2e)",   "water (mL)",  "primary energy (MJ)",
                          "ADPe (kgSbeq)", "usage",       "embodied",
                          "PUE 1.2",       "16 GPUs",     "warnings: model-arch-not-released"};
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++)
        cr_assert_not_null(strstr(r.out, want[i]), "'%s' not in:\n%s", want[i], r.out);
    run_free(&r);
}

Test(cli, estimate_without_zone_uses_the_provider_default) {
    run_result r = RUN("estimate", "--provider", "mistralai", "--model", "mistral-small-latest",
                       "--output-tokens", "100");
    cr_assert_eq(r.code, 0, "stderr: %s", r.err);
    cr_assert_not_null(strstr(r.out, "zone SWE (provider default)"), "%s", r.out);
    run_free(&r);
}

Test(cli, estimate_by_alias_names_the_model_and_a_measured_latency_caps) {
    run_result r = RUN("estimate", "--provider", "anthropic", "--model", "claude-sonnet-4-5",
                       "--output-tokens", "500", "--latency", "3");
    cr_assert_eq(r.code, 0, "stderr: %s", r.err);
    cr_assert_not_null(strstr(r.out, "claude-sonnet-4-5-20250929 (alias claude-sonnet-4-5)"), "%s",
                       r.out);
    cr_assert_not_null(strstr(r.out, "capped by the measured latency"), "%s", r.out);
    run_free(&r);
}

static const json_t *vector_outputs(json_t *root, const char *id) {
    size_t i;
    const json_t *c;
    json_array_foreach(json_object_get(root, "cases"), i, c) {
        if (strcmp(json_string_value(json_object_get(c, "id")), id) == 0)
            return json_object_get(json_object_get(c, "expected"), "outputs");
    }
    cr_assert_fail("vector %s not found", id);
    return NULL;
}

static void expect_same_keys(const json_t *got, const json_t *want, const char *where) {
    cr_assert_eq(json_object_size(got), json_object_size(want), "%s: key count", where);
    const char *key;
    const json_t *v;
    json_object_foreach((json_t *)want, key, v) {
        const json_t *g = json_object_get(got, key);
        cr_assert_not_null(g, "%s: key '%s' missing", where, key);
        if (json_object_get(v, "min")) {
            double a = json_number_value(json_object_get(g, "min")),
                   b = json_number_value(json_object_get(v, "min"));
            cr_assert_leq(fabs(a - b), 1e-9 * fabs(b), "%s.%s.min %g vs %g", where, key, a, b);
            a = json_number_value(json_object_get(g, "max"));
            b = json_number_value(json_object_get(v, "max"));
            cr_assert_leq(fabs(a - b), 1e-9 * fabs(b), "%s.%s.max %g vs %g", where, key, a, b);
        } else {
            expect_same_keys(g, v, key);
        }
    }
}

Test(cli, estimate_json_has_exactly_the_vector_keys_plus_zone_warnings_method_scope_price) {
    run_result r = RUN("estimate", "--provider", "openai", "--model", "gpt-4o", "--output-tokens",
                       "500", "--json");
    cr_assert_eq(r.code, 0, "stderr: %s", r.err);
    json_error_t je;
    json_t *got = json_loads(r.out, 0, &je);
    cr_assert_not_null(got, "stdout is not JSON (%s): %s", je.text, r.out);
    json_t *vectors = json_load_file(VECTORS, 0, &je);
    cr_assert_not_null(vectors);
    const json_t *want = vector_outputs(vectors, "openai/gpt-4o|out=500|zone=default|lat=none");
    cr_assert_eq(json_object_size(got), json_object_size(want) + 6);
    cr_assert_str_eq(json_string_value(json_object_get(got, "zone")), "USA");
    cr_assert_str_eq(json_string_value(json_object_get(got, "method")), "ecologits");
    cr_assert_eq(json_array_size(json_object_get(got, "warnings")), 2);
    cr_assert(json_is_object(json_object_get(got, "scope")));
    cr_assert(json_is_object(json_object_get(got, "assumptions")));
    cr_assert(json_is_object(json_object_get(got, "list_price")));
    const char *extra[] = {"zone", "method", "warnings", "scope", "assumptions", "list_price"};
    for (size_t i = 0; i < 6; i++)
        json_object_del(got, extra[i]);
    expect_same_keys(got, want, "outputs");
    json_decref(got);
    json_decref(vectors);
    run_free(&r);
}

Test(cli, unknown_model_zone_or_provider_exit_3_with_suggestions) {
    expect_fail(RUN("estimate", "--provider", "openai", "--model", "gpt4o", "--output-tokens", "5"),
                3, "did you mean 'gpt-4o'");
    expect_fail(RUN("estimate", "--provider", "openai", "--model", "gpt-4o", "--output-tokens", "5",
                    "--zone", "FRX"),
                3, "unknown zone 'FRX'");
    expect_fail(
        RUN("estimate", "--provider", "open-ai", "--model", "gpt-4o", "--output-tokens", "5"), 3,
        "did you mean 'openai'");
    expect_fail(RUN("models", "--provider", "opnai"), 3, "unknown provider 'opnai'");
}

Test(cli, bad_numbers_and_flags_exit_2_naming_the_option) {
    expect_fail(
        RUN("estimate", "--provider", "openai", "--model", "gpt-4o", "--output-tokens", "-5"), 2,
        "--output-tokens: '-5'");
    expect_fail(
        RUN("estimate", "--provider", "openai", "--model", "gpt-4o", "--output-tokens", "abc"), 2,
        "'abc' is not a non-negative integer");
    expect_fail(RUN("estimate", "--provider", "openai", "--model", "gpt-4o", "--output-tokens",
                    "2000000000"),
                2, "2000000000");
    expect_fail(RUN("estimate", "--provider", "openai", "--model", "gpt-4o", "--output-tokens", "5",
                    "--latency", "nan"),
                2, "--latency: 'nan'");
    expect_fail(RUN("estimate", "--provider", "openai", "--model", "gpt-4o", "--output-tokens", "5",
                    "--input-tokens", "1e3"),
                2, "--input-tokens");
    expect_fail(RUN("estimate", "--provider", "openai", "--model", "gpt-4o"), 2,
                "missing --output-tokens");
    expect_fail(RUN("estimate", "--provider", "openai", "--model", "gpt-4o", "--output-tokens", "5",
                    "--bogus"),
                2, "unknown option '--bogus'");
    expect_fail(RUN("estimate", "--provider", "openai", "--model", "gpt-4o", "--output-tokens"), 2,
                "needs a value");
    expect_fail(RUN("estimate", "--provider", "openai", "--model", "gpt-4o", "--output-tokens", "5",
                    "--method", "magic"),
                2, "unknown method 'magic'");
}

Test(cli, flags_accept_the_equals_form) {
    run_result r = RUN("estimate", "--provider=openai", "--model=gpt-4o-mini", "--output-tokens=50",
                       "--zone=DEU", "--json");
    cr_assert_eq(r.code, 0, "stderr: %s", r.err);
    cr_assert_not_null(strstr(r.out, "\"zone\": \"DEU\""), "%s", r.out);
    run_free(&r);
}

/* ---- the catalogue location ---- */

Test(cli, missing_catalogue_exits_1_naming_the_file) {
    expect_fail(RUN("zones", "--data", "/nonexistent-discern-data"), 1,
                "/nonexistent-discern-data/models.json");
    expect_fail(run_env("/nonexistent-env-data", (const char *const[]){"zones", NULL}), 1,
                "/nonexistent-env-data/models.json");
}

Test(cli, malformed_catalogue_exits_1_naming_file_and_line) {
    char dir[] = "/tmp/discern-cli-data-XXXXXX";
    cr_assert_not_null(mkdtemp(dir));
    char path[128];
    snprintf(path, sizeof path, "%s/models.json", dir);
    FILE *f = fopen(path, "w");
    cr_assert_not_null(f);
    fputs("{\n  \"models\": [\n    {\"provider\": oops}\n  ]\n}\n", f);
    fclose(f);
    run_result r = RUN("models", "--data", dir);
    unlink(path);
    rmdir(dir);
    expect_fail(r, 1, "models.json:3:");
}

Test(cli, data_flag_takes_precedence_over_the_environment) {
    run_result r =
        run_env("/nonexistent-env-data",
                (const char *const[]){"zones", "--data", DISCERN_SOURCE_DIR "/core/data", NULL});
    cr_assert_eq(r.code, 0, "stderr: %s", r.err);
    cr_assert_not_null(strstr(r.out, "FRA"));
    run_free(&r);
}

/* ---- models and zones ---- */

Test(cli, models_lists_one_provider_with_parameters_and_aliases) {
    run_result r = RUN("models", "--provider", "anthropic");
    cr_assert_eq(r.code, 0, "stderr: %s", r.err);
    cr_assert_not_null(strstr(r.out, "claude-opus-4-1-20250805"), "%s", r.out);
    cr_assert_not_null(strstr(r.out, "200-600"), "%s", r.out);
    cr_assert_not_null(strstr(r.out, "anthropic/claude-sonnet-4-5 -> claude-sonnet-4-5-20250929"));
    cr_assert_null(strstr(r.out, "gpt-4o"));
    run_free(&r);
}

Test(cli, models_json_lists_the_whole_catalogue) {
    run_result r = RUN("models", "--json");
    cr_assert_eq(r.code, 0, "stderr: %s", r.err);
    json_t *root = json_loads(r.out, 0, NULL);
    cr_assert_not_null(root);
    cr_assert_eq(json_array_size(json_object_get(root, "models")), 356);
    cr_assert_eq(json_array_size(json_object_get(root, "aliases")), 12);
    json_decref(root);
    run_free(&r);
}

Test(cli, zones_lists_every_mix_with_default_providers) {
    run_result r = RUN("zones");
    cr_assert_eq(r.code, 0, "stderr: %s", r.err);
    cr_assert_not_null(strstr(r.out, "WOR"));
    cr_assert_not_null(strstr(r.out, "mistralai"));
    run_free(&r);
    r = RUN("zones", "--json");
    json_t *root = json_loads(r.out, 0, NULL);
    cr_assert_not_null(root);
    const json_t *zones = json_object_get(root, "zones");
    cr_assert_eq(json_array_size(zones), 50);
    cr_assert_float_eq(
        json_number_value(json_object_get(json_array_get(zones, 0), "gwp_kgco2eq_per_kwh")),
        0.35895, 1e-12);
    json_decref(root);
    run_free(&r);
}

Test(cli, estimate_shows_the_list_price_when_the_model_has_one) {
    run_result r = RUN("estimate", "--provider", "openai", "--model", "gpt-4o", "--output-tokens",
                       "500", "--input-tokens", "1000");
    cr_assert_eq(r.code, 0, "stderr: %s", r.err);
    cr_assert_not_null(strstr(r.out, "list price: 0.007500 USD for 1000 input + 500 output"), "%s",
                       r.out);
    run_free(&r);
    r = RUN("estimate", "--provider", "huggingface_hub", "--model",
            "meta-llama/Meta-Llama-3-8B-Instruct", "--output-tokens", "10");
    cr_assert_eq(r.code, 0, "stderr: %s", r.err);
    cr_assert_null(strstr(r.out, "list price"), "%s", r.out);
    run_free(&r);
}

/* ---- the discern method and the list price in JSON ---- */

static json_t *run_json(run_result *r) {
    cr_assert_eq(r->code, 0, "exit %d, stderr: %s", r->code, r->err);
    json_error_t je;
    json_t *got = json_loads(r->out, 0, &je);
    cr_assert_not_null(got, "stdout is not JSON (%s): %s", je.text, r->out);
    run_free(r);
    return got;
}

static double json_max(json_t *obj, const char *key) {
    return json_number_value(json_object_get(json_object_get(obj, key), "max"));
}

Test(cli, estimate_json_carries_the_list_price_the_table_prints) {
    run_result r = RUN("estimate", "--provider", "openai", "--model", "gpt-4o", "--output-tokens",
                       "500", "--input-tokens", "1000", "--json");
    json_t *got = run_json(&r);
    json_t *price = json_object_get(got, "list_price");
    cr_assert_float_eq(json_number_value(json_object_get(price, "amount")), 0.0075, 1e-12);
    cr_assert_str_eq(json_string_value(json_object_get(price, "currency")), "USD");
    json_decref(got);
    r = RUN("estimate", "--provider", "huggingface_hub", "--model",
            "meta-llama/Meta-Llama-3-8B-Instruct", "--output-tokens", "10", "--json");
    got = run_json(&r);
    cr_assert(json_is_null(json_object_get(got, "list_price")));
    json_decref(got);
}

Test(cli, estimate_help_says_the_units_of_text_and_json_and_the_discern_flags) {
    run_result r = RUN("estimate", "--help");
    cr_assert_eq(r.code, 0);
    const char *frags[] = {"energy in Wh",
                           "gCO2e",
                           "energy_kwh (kWh)",
                           "wcf_l (L)",
                           "list_price.amount",
                           "--cached-tokens",
                           "--reasoning-tokens",
                           "--parameters-b",
                           "--scope",
                           "--carbon",
                           "--water",
                           "--images"};
    for (size_t i = 0; i < sizeof frags / sizeof frags[0]; i++)
        cr_assert_not_null(strstr(r.out, frags[i]), "'%s' not in: %s", frags[i], r.out);
    run_free(&r);
}

Test(cli, estimate_discern_flags_reach_the_method_and_show_in_json) {
    run_result r = RUN("estimate", "--provider", "openai", "--model", "gpt-4o", "--output-tokens",
                       "100", "--method", "discern", "--json");
    json_t *plain = run_json(&r);
    r = RUN("estimate", "--provider", "openai", "--model", "gpt-4o", "--output-tokens", "100",
            "--method", "discern", "--reasoning-tokens", "2000", "--scope", "lifecycle", "--carbon",
            "market", "--water", "total", "--json");
    json_t *got = run_json(&r);
    cr_assert_gt(json_max(got, "energy_kwh"), 2 * json_max(plain, "energy_kwh"));
    json_t *scope = json_object_get(got, "scope");
    cr_assert_str_eq(json_string_value(json_object_get(scope, "boundary")), "lifecycle");
    cr_assert_str_eq(json_string_value(json_object_get(scope, "water")), "total");
    cr_assert_str_eq(json_string_value(json_object_get(scope, "carbon")), "location",
                     "openai publishes no market factor: the answer says location");
    json_t *a = json_object_get(got, "assumptions");
    cr_assert_str_eq(json_string_value(json_object_get(a, "accelerator")), "H100");
    cr_assert_str_eq(json_string_value(json_object_get(got, "method")), "discern");
    json_decref(got);
    json_decref(plain);
}

Test(cli, estimate_discern_estimates_an_unknown_model_from_parameters_or_its_class) {
    run_result r = RUN("estimate", "--provider", "openai", "--model", "gpt-9", "--output-tokens",
                       "100", "--method", "discern");
    cr_assert_eq(r.code, 0, "stderr: %s", r.err);
    cr_assert_not_null(strstr(r.out, "gpt-9 (not in the catalogue)"), "%s", r.out);
    cr_assert_not_null(strstr(r.out, "model-fallback-class"), "%s", r.out);
    cr_assert_not_null(strstr(r.out, "scope: inference"), "%s", r.out);
    run_free(&r);
    r = RUN("estimate", "--provider", "openai", "--model", "gpt-9", "--output-tokens", "100",
            "--method", "discern", "--parameters-b", "70", "--json");
    json_t *got = run_json(&r);
    json_t *a = json_object_get(got, "assumptions");
    cr_assert_str_eq(json_string_value(json_object_get(a, "params_source")), "request");
    cr_assert_float_eq(json_max(a, "total_params_b"), 70, 1e-12);
    json_decref(got);
    r = RUN("estimate", "--provider", "openai", "--model", "dall-e-x", "--method", "discern",
            "--images", "2", "--image-size", "512x512", "--json");
    got = run_json(&r);
    cr_assert_str_eq(
        json_string_value(json_object_get(json_object_get(got, "assumptions"), "modality")),
        "image");
    json_decref(got);
}

Test(cli, discern_only_options_are_refused_by_the_ecologits_method_and_bad_values_named) {
    expect_fail(RUN("estimate", "--provider", "openai", "--model", "gpt-4o", "--output-tokens", "5",
                    "--scope", "lifecycle"),
                2, "option --scope needs --method discern");
    expect_fail(RUN("estimate", "--provider", "openai", "--model", "gpt-4o", "--output-tokens", "5",
                    "--method", "discern", "--water", "sea"),
                2, "option --water: unknown value 'sea'");
    expect_fail(RUN("estimate", "--provider", "openai", "--model", "gpt-4o", "--output-tokens", "5",
                    "--method", "discern", "--image-size", "huge"),
                2, "--image-size");
    expect_fail(RUN("estimate", "--provider", "openai", "--model", "gpt-4o", "--output-tokens", "5",
                    "--method", "discern", "--input-tokens", "3", "--cached-tokens", "4"),
                2, "cached_input_tokens");
}
