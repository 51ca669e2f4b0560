/*
 * test_catalog.c - the catalogue: the shipped data loads with the expected contents,
 * lookups (names, aliases, zones, providers) work, close matches are suggested, and
 * malformed or missing files are refused with the file and line named.
 *
 * Malformed catalogues are written to a fresh temporary directory per test.
 */
#include "discern/catalog.h"

#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define SHIPPED DISCERN_SOURCE_DIR "/core/data"

static dsc_catalog *load_shipped(void) {
    dsc_error err;
    dsc_catalog *cat = dsc_catalog_load(SHIPPED, &err);
    cr_assert_not_null(cat, "shipped catalogue failed to load: %s", err.message);
    return cat;
}

/* ---- a small valid catalogue, and a scratch directory to write variants into ---- */

static const char *tiny_models =
    "{\n"
    "  \"aliases\": [\n"
    "    {\"type\": \"alias\", \"provider\": \"acme\", \"name\": \"big\", \"alias\": "
    "\"acme-big-1\"}\n"
    "  ],\n"
    "  \"models\": [\n"
    "    {\"type\": \"model\", \"provider\": \"acme\", \"name\": \"acme-big-1\",\n"
    "     \"architecture\": {\"type\": \"moe\", \"parameters\": {\"total\": 400, \"active\": "
    "{\"min\": 40, \"max\": 120}}},\n"
    "     \"warnings\": [\"model-arch-not-released\"], \"sources\": [], \"deployment\": {\"tps\": "
    "50, \"ttft\": 0.5}},\n"
    "    {\"type\": \"model\", \"provider\": \"acme\", \"name\": \"acme-small\",\n"
    "     \"architecture\": {\"type\": \"dense\", \"parameters\": 8}, \"warnings\": null, "
    "\"sources\": [],\n"
    "     \"deployment\": {\"tps\": null, \"ttft\": null}}\n"
    "  ]\n"
    "}\n";
static const char *tiny_mixes = "name,adpe,pe,gwp,wue\n"
                                "FRA,0.00000004858,9.31,0.05,2.5\n"
                                "WOR,0.00000001349,2.5871,0.47,3.908\n";
static const char *tiny_providers =
    "{\"_about\": \"test\", \"acme\": {\"datacenter_location\": \"FRA\", "
    "\"datacenter_pue\": {\"min\": 1.1, \"max\": 1.3}, \"datacenter_wue\": 0.5}}\n";

typedef struct scratch {
    char dir[64];
} scratch;

static void write_file(const scratch *s, const char *name, const char *text) {
    char path[256];
    snprintf(path, sizeof path, "%s/%s", s->dir, name);
    FILE *f = fopen(path, "wb");
    cr_assert_not_null(f, "cannot write %s", path);
    fputs(text, f);
    fclose(f);
}

static void scratch_make(scratch *s, const char *models, const char *mixes, const char *providers) {
    snprintf(s->dir, sizeof s->dir, "/tmp/discern-catalog-XXXXXX");
    cr_assert_not_null(mkdtemp(s->dir));
    if (models) write_file(s, DSC_CATALOG_MODELS_FILE, models);
    if (mixes) write_file(s, DSC_CATALOG_MIXES_FILE, mixes);
    if (providers) write_file(s, DSC_CATALOG_PROVIDERS_FILE, providers);
}

static void scratch_remove(scratch *s) {
    const char *files[] = {DSC_CATALOG_MODELS_FILE, DSC_CATALOG_MIXES_FILE,
                           DSC_CATALOG_PROVIDERS_FILE};
    for (size_t i = 0; i < 3; i++) {
        char path[256];
        snprintf(path, sizeof path, "%s/%s", s->dir, files[i]);
        unlink(path);
    }
    rmdir(s->dir);
}

/* Load a catalogue made of the given files and expect failure with code; the
 * message must contain every fragment. */
static void expect_refused(const char *models, const char *mixes, const char *providers,
                           dsc_status code, const char *frag1, const char *frag2) {
    scratch s;
    scratch_make(&s, models, mixes, providers);
    dsc_error err;
    dsc_catalog *cat = dsc_catalog_load(s.dir, &err);
    scratch_remove(&s);
    cr_assert_null(cat, "a bad catalogue was accepted");
    cr_assert_eq(err.code, code, "code %d, message: %s", err.code, err.message);
    cr_assert_not_null(strstr(err.message, frag1), "'%s' not in: %s", frag1, err.message);
    if (frag2)
        cr_assert_not_null(strstr(err.message, frag2), "'%s' not in: %s", frag2, err.message);
}

/* ---- the shipped data ---- */

Test(catalog, shipped_data_has_every_model_alias_zone_and_provider) {
    dsc_catalog *cat = load_shipped();
    cr_assert_eq(dsc_catalog_model_count(cat), 356);
    cr_assert_eq(dsc_catalog_alias_count(cat), 12);
    cr_assert_eq(dsc_catalog_zone_count(cat), 50);
    cr_assert_eq(dsc_catalog_provider_count(cat), 6);
    dsc_catalog_free(cat);
}

Test(catalog, moe_model_carries_ranges_deployment_and_warnings) {
    dsc_catalog *cat = load_shipped();
    const dsc_model *m = dsc_catalog_model(cat, "openai", "gpt-4o");
    cr_assert_not_null(m);
    cr_assert_str_eq(m->provider, "openai");
    cr_assert_str_eq(m->name, "gpt-4o");
    cr_assert_eq(m->arch, DSC_ARCH_MOE);
    cr_assert_float_eq(m->active_params_b.min, 44, 0);
    cr_assert_float_eq(m->active_params_b.max, 132, 0);
    cr_assert_float_eq(m->total_params_b.min, 440, 0);
    cr_assert_float_eq(m->total_params_b.max, 440, 0);
    cr_assert_float_eq(m->tps, 37.8, 0);
    cr_assert_float_eq(m->ttft_s, 0.52, 0);
    cr_assert_eq(m->warnings, DSC_WARN_ARCH_NOT_RELEASED | DSC_WARN_ARCH_MULTIMODAL);
    dsc_catalog_free(cat);
}

Test(catalog, dense_model_has_equal_active_and_total_and_no_deployment_when_null) {
    dsc_catalog *cat = load_shipped();
    const dsc_model *m = dsc_catalog_model(cat, "openai", "gpt-3.5-turbo");
    cr_assert_not_null(m);
    cr_assert_eq(m->arch, DSC_ARCH_DENSE);
    cr_assert_float_eq(m->total_params_b.min, 20, 0);
    cr_assert_float_eq(m->total_params_b.max, 70, 0);
    cr_assert_float_eq(m->active_params_b.max, m->total_params_b.max, 0);
    const dsc_model *h =
        dsc_catalog_model(cat, "huggingface_hub", "meta-llama/Meta-Llama-3-8B-Instruct");
    cr_assert_not_null(h);
    cr_assert_eq(h->tps, 0);
    cr_assert_eq(h->ttft_s, 0);
    dsc_catalog_free(cat);
}

Test(catalog, alias_resolves_to_the_same_record_as_its_target) {
    dsc_catalog *cat = load_shipped();
    const dsc_model *alias = dsc_catalog_model(cat, "anthropic", "claude-opus-4-1");
    const dsc_model *target = dsc_catalog_model(cat, "anthropic", "claude-opus-4-1-20250805");
    cr_assert_not_null(target);
    cr_assert_eq(alias, target);
    const dsc_alias *a = NULL;
    for (size_t i = 0; i < dsc_catalog_alias_count(cat); i++)
        if (strcmp(dsc_catalog_alias_at(cat, i)->name, "claude-opus-4-1") == 0)
            a = dsc_catalog_alias_at(cat, i);
    cr_assert_not_null(a);
    cr_assert_eq(a->target, target);
    dsc_catalog_free(cat);
}

Test(catalog, model_lookup_needs_the_right_provider_and_exact_name) {
    dsc_catalog *cat = load_shipped();
    cr_assert_null(dsc_catalog_model(cat, "anthropic", "gpt-4o"));
    cr_assert_null(dsc_catalog_model(cat, "openai", "GPT-4O"));
    cr_assert_null(dsc_catalog_model(cat, "openai", "claude-3-5-sonnet-20241022"));
    cr_assert_null(dsc_catalog_model(cat, "anthropic", "claude-3-5-sonnet-20241022"));
    cr_assert_null(dsc_catalog_model(cat, NULL, "gpt-4o"));
    cr_assert_null(dsc_catalog_model(NULL, "openai", "gpt-4o"));
    dsc_catalog_free(cat);
}

Test(catalog, zone_lookup_is_case_insensitive_and_rejects_unknown_codes) {
    dsc_catalog *cat = load_shipped();
    const dsc_zone *z = dsc_catalog_zone(cat, "fra");
    cr_assert_not_null(z);
    cr_assert_str_eq(z->name, "FRA");
    cr_assert_eq(z, dsc_catalog_zone(cat, "FRA"));
    const dsc_zone *usa = dsc_catalog_zone(cat, "USA");
    cr_assert_float_eq(usa->gwp_kgco2eq_per_kwh, 0.38355, 0);
    cr_assert_float_eq(usa->adpe_kgsbeq_per_kwh, 9.855e-08, 0);
    cr_assert_float_eq(usa->pe_mj_per_kwh, 9.6884, 0);
    cr_assert_float_eq(usa->wue_l_per_kwh, 3.1321, 0);
    cr_assert_null(dsc_catalog_zone(cat, "XXX"));
    cr_assert_null(dsc_catalog_zone(cat, "FRANCE-LONG-NAME"));
    cr_assert_null(dsc_catalog_zone(cat, ""));
    dsc_catalog_free(cat);
}

Test(catalog, providers_carry_default_zone_and_pue_wue_ranges) {
    dsc_catalog *cat = load_shipped();
    const dsc_provider *mistral = dsc_catalog_provider(cat, "mistralai");
    cr_assert_not_null(mistral);
    cr_assert_str_eq(mistral->zone, "SWE");
    cr_assert_float_eq(mistral->pue.min, 1.16, 0);
    cr_assert_float_eq(mistral->pue.max, 1.16, 0);
    const dsc_provider *anthropic = dsc_catalog_provider(cat, "anthropic");
    cr_assert_float_eq(anthropic->pue.min, 1.09, 0);
    cr_assert_float_eq(anthropic->pue.max, 1.14, 0);
    cr_assert_float_eq(anthropic->wue_l_per_kwh.min, 0.13, 0);
    cr_assert_float_eq(anthropic->wue_l_per_kwh.max, 0.999, 0);
    cr_assert_null(dsc_catalog_provider(cat, "_about"));
    cr_assert_null(dsc_catalog_provider(cat, "nobody"));
    dsc_catalog_free(cat);
}

Test(catalog, provider_models_are_contiguous_sorted_and_complete) {
    dsc_catalog *cat = load_shipped();
    size_t n = 0;
    const dsc_model *m = dsc_catalog_provider_models(cat, "openai", &n);
    cr_assert_eq(n, 83);
    for (size_t i = 0; i < n; i++) {
        cr_assert_str_eq(m[i].provider, "openai");
        if (i) cr_assert_lt(strcmp(m[i - 1].name, m[i].name), 0);
    }
    cr_assert_null(dsc_catalog_provider_models(cat, "nobody", &n));
    cr_assert_eq(n, 0);
    size_t total = 0;
    const char *providers[] = {"anthropic",       "cohere",    "google_genai",
                               "huggingface_hub", "mistralai", "openai"};
    for (size_t i = 0; i < 6; i++) {
        dsc_catalog_provider_models(cat, providers[i], &n);
        total += n;
    }
    cr_assert_eq(total, dsc_catalog_model_count(cat));
    dsc_catalog_free(cat);
}

Test(catalog, iteration_is_ordered_and_stops_at_the_end) {
    dsc_catalog *cat = load_shipped();
    size_t n = dsc_catalog_model_count(cat);
    for (size_t i = 1; i < n; i++) {
        const dsc_model *a = dsc_catalog_model_at(cat, i - 1), *b = dsc_catalog_model_at(cat, i);
        int c = strcmp(a->provider, b->provider);
        cr_assert(c < 0 || (c == 0 && strcmp(a->name, b->name) < 0));
    }
    cr_assert_null(dsc_catalog_model_at(cat, n));
    cr_assert_str_eq(dsc_catalog_zone_at(cat, 0)->name, "ARG");
    cr_assert_null(dsc_catalog_zone_at(cat, dsc_catalog_zone_count(cat)));
    cr_assert_str_eq(dsc_catalog_provider_at(cat, 0)->name, "anthropic");
    cr_assert_null(dsc_catalog_provider_at(cat, 6));
    cr_assert_null(dsc_catalog_alias_at(cat, 12));
    dsc_catalog_free(cat);
}

Test(catalog, every_record_is_found_by_its_own_names_and_not_by_a_split_moved_by_one_byte) {
    dsc_catalog *cat = load_shipped();
    char a[512], b[512];
    for (size_t i = 0; i < dsc_catalog_model_count(cat); i++) {
        const dsc_model *m = dsc_catalog_model_at(cat, i);
        cr_assert_eq(dsc_catalog_model(cat, m->provider, m->name), m, "%s", m->name);
        /* the same bytes split one later and one earlier: another key */
        snprintf(a, sizeof a, "%s%c", m->provider, m->name[0]);
        cr_assert_null(dsc_catalog_model(cat, a, m->name + 1), "%s|%s", a, m->name + 1);
        size_t n = strlen(m->provider);
        snprintf(a, sizeof a, "%.*s", (int)(n - 1), m->provider);
        snprintf(b, sizeof b, "%c%s", m->provider[n - 1], m->name);
        cr_assert_null(dsc_catalog_model(cat, a, b), "%s|%s", a, b);
    }
    for (size_t i = 0; i < dsc_catalog_zone_count(cat); i++) {
        const dsc_zone *z = dsc_catalog_zone_at(cat, i);
        cr_assert_eq(dsc_catalog_zone(cat, z->name), z, "%s", z->name);
    }
    for (size_t i = 0; i < dsc_catalog_provider_count(cat); i++) {
        const dsc_provider *p = dsc_catalog_provider_at(cat, i);
        cr_assert_eq(dsc_catalog_provider(cat, p->name), p, "%s", p->name);
    }
    dsc_catalog_free(cat);
}

/* ---- suggestions ---- */

Test(catalog, edit_distance_is_levenshtein_ignoring_case) {
    cr_assert_eq(dsc_catalog_edit_distance("gpt-4o", "gpt-4o"), 0);
    cr_assert_eq(dsc_catalog_edit_distance("gpt4o", "gpt-4o"), 1);
    cr_assert_eq(dsc_catalog_edit_distance("FRA", "fra"), 0);
    cr_assert_eq(dsc_catalog_edit_distance("kitten", "sitting"), 3);
    cr_assert_eq(dsc_catalog_edit_distance("", "abc"), 3);
}

Test(catalog, unknown_model_suggests_the_closest_names_of_that_provider_first) {
    dsc_catalog *cat = load_shipped();
    const char *out[DSC_SUGGEST_MAX];
    size_t n = dsc_catalog_suggest_models(cat, "openai", "gpt4o", out, DSC_SUGGEST_MAX);
    cr_assert_geq(n, 1);
    cr_assert_str_eq(out[0], "gpt-4o");
    n = dsc_catalog_suggest_models(cat, "anthropic", "claude-sonnet-4-5", out, DSC_SUGGEST_MAX);
    cr_assert_geq(n, 1);
    cr_assert_str_eq(out[0], "claude-sonnet-4-5"); /* an alias is a valid suggestion */
    cr_assert_eq(dsc_catalog_suggest_models(cat, "openai", "zzzzzzzzzzzz", out, DSC_SUGGEST_MAX),
                 0);
    dsc_catalog_free(cat);
}

Test(catalog, unknown_zone_and_provider_get_close_matches) {
    dsc_catalog *cat = load_shipped();
    const char *out[DSC_SUGGEST_MAX];
    size_t n = dsc_catalog_suggest_providers(cat, "open-ai", out, DSC_SUGGEST_MAX);
    cr_assert_geq(n, 1);
    cr_assert_str_eq(out[0], "openai");
    n = dsc_catalog_suggest_zones(cat, "FRX", out, DSC_SUGGEST_MAX);
    cr_assert_eq(n, DSC_SUGGEST_MAX);
    int has_fra = 0;
    for (size_t i = 0; i < n; i++)
        has_fra |= strcmp(out[i], "FRA") == 0;
    cr_assert(has_fra);
    dsc_catalog_free(cat);
}

Test(catalog, suggestions_format_as_one_readable_clause) {
    char buf[128];
    const char *one[] = {"gpt-4o"};
    const char *three[] = {"a", "b", "c"};
    cr_assert_str_eq(dsc_catalog_format_suggestions(one, 0, buf, sizeof buf), "");
    cr_assert_str_eq(dsc_catalog_format_suggestions(one, 1, buf, sizeof buf),
                     "; did you mean 'gpt-4o'?");
    cr_assert_str_eq(dsc_catalog_format_suggestions(three, 2, buf, sizeof buf),
                     "; did you mean 'a' or 'b'?");
    cr_assert_str_eq(dsc_catalog_format_suggestions(three, 3, buf, sizeof buf),
                     "; did you mean 'a', 'b' or 'c'?");
    char tiny[8];
    dsc_catalog_format_suggestions(three, 3, tiny, sizeof tiny);
    cr_assert_lt(strlen(tiny), sizeof tiny);
}

/* ---- small catalogues, good and bad ---- */

Test(catalog, tiny_catalogue_loads_with_alias_and_null_deployment) {
    scratch s;
    scratch_make(&s, tiny_models, tiny_mixes, tiny_providers);
    dsc_error err;
    dsc_catalog *cat = dsc_catalog_load(s.dir, &err);
    scratch_remove(&s);
    cr_assert_not_null(cat, "%s", err.message);
    cr_assert_eq(dsc_catalog_model(cat, "acme", "big"),
                 dsc_catalog_model(cat, "acme", "acme-big-1"));
    const dsc_model *small = dsc_catalog_model(cat, "acme", "acme-small");
    cr_assert_eq(small->tps, 0);
    cr_assert_eq(small->warnings, 0);
    cr_assert_str_eq(dsc_catalog_provider(cat, "acme")->zone, "FRA");
    dsc_catalog_free(cat);
}

Test(catalog, missing_file_is_an_io_error_naming_the_path) {
    expect_refused(tiny_models, NULL, tiny_providers, DSC_IO, DSC_CATALOG_MIXES_FILE,
                   "No such file");
    expect_refused(NULL, tiny_mixes, tiny_providers, DSC_IO, DSC_CATALOG_MODELS_FILE,
                   "cannot read");
}

Test(catalog, malformed_json_names_file_line_and_column) {
    const char *broken =
        "{\n  \"aliases\": [],\n  \"models\": [ {\"provider\": \"acme\",, } ]\n}\n";
    expect_refused(broken, tiny_mixes, tiny_providers, DSC_PARSE, "models.json:3:", NULL);
    expect_refused(tiny_models, tiny_mixes, "{\"acme\": {\n\n\"datacenter_pue\": }}", DSC_PARSE,
                   "providers.json:3:", NULL);
}

Test(catalog, bad_csv_names_file_line_and_column) {
    expect_refused(tiny_models,
                   "name,adpe,pe,gwp,wue\nFRA,1e-8,9.3,0.05,2.5\nWOR,1e-8,2.5,abc,3.9\n",
                   tiny_providers, DSC_PARSE, "electricity_mixes.csv:3:", "column 'gwp': 'abc'");
    expect_refused(tiny_models, "name,adpe,pe,gwp\nFRA,1e-8,9.3,0.05\n", tiny_providers, DSC_PARSE,
                   "electricity_mixes.csv:1:", "missing column 'wue'");
    expect_refused(tiny_models, "name,adpe,pe,gwp,wue\nFRA,1e-8,9.3,0.05\n", tiny_providers,
                   DSC_PARSE, "electricity_mixes.csv:2:", "expected 5 fields, found 4");
    expect_refused(tiny_models, "name,adpe,pe,gwp,wue\nFRA,1e-8,9.3,0.05,2\nfra,1,1,1,1\n",
                   tiny_providers, DSC_PARSE, "electricity_mixes.csv:3:", "duplicate zone 'FRA'");
    expect_refused(tiny_models, "name,adpe,pe,gwp,wue\nFRA,1e-8,9.3,-0.05,2\n", tiny_providers,
                   DSC_PARSE, "electricity_mixes.csv:2:", "non-negative");
}

Test(catalog, csv_accepts_reordered_columns_and_crlf_lines) {
    scratch s;
    scratch_make(&s, tiny_models, "gwp,name,wue,pe,adpe\r\n0.05,FRA,2.5,9.31,4.858e-08\r\n\r\n",
                 tiny_providers);
    dsc_error err;
    dsc_catalog *cat = dsc_catalog_load(s.dir, &err);
    scratch_remove(&s);
    cr_assert_not_null(cat, "%s", err.message);
    const dsc_zone *z = dsc_catalog_zone(cat, "FRA");
    cr_assert_float_eq(z->gwp_kgco2eq_per_kwh, 0.05, 0);
    cr_assert_float_eq(z->wue_l_per_kwh, 2.5, 0);
    cr_assert_float_eq(z->adpe_kgsbeq_per_kwh, 4.858e-08, 0);
    cr_assert_eq(dsc_catalog_zone_count(cat), 1);
    dsc_catalog_free(cat);
}

Test(catalog, invalid_model_records_name_the_entry_and_field) {
    const char *neg = "{\"aliases\": [], \"models\": [{\"provider\": \"acme\", \"name\": \"neg\", "
                      "\"architecture\": {\"type\": \"dense\", \"parameters\": -3}}]}";
    expect_refused(neg, tiny_mixes, tiny_providers, DSC_PARSE, "models[0] ('neg')",
                   "architecture.parameters");
    const char *kind = "{\"models\": [{\"provider\": \"acme\", \"name\": \"x\", "
                       "\"architecture\": {\"type\": \"rnn\", \"parameters\": 3}}]}";
    expect_refused(kind, tiny_mixes, tiny_providers, DSC_PARSE, "architecture.type", NULL);
    const char *range =
        "{\"models\": [{\"provider\": \"acme\", \"name\": \"x\", "
        "\"architecture\": {\"type\": \"dense\", \"parameters\": {\"min\": 9, \"max\": 3}}}]}";
    expect_refused(range, tiny_mixes, tiny_providers, DSC_PARSE, "models[0] ('x')", NULL);
    const char *noname = "{\"models\": [{\"provider\": \"acme\", "
                         "\"architecture\": {\"type\": \"dense\", \"parameters\": 3}}]}";
    expect_refused(noname, tiny_mixes, tiny_providers, DSC_PARSE, "field 'name'", NULL);
    expect_refused("[1, 2]", tiny_mixes, tiny_providers, DSC_PARSE, "top level", NULL);
    const char *huge = "{\"models\": [{\"provider\": \"acme\", \"name\": \"huge\", "
                       "\"architecture\": {\"type\": \"moe\", \"parameters\": "
                       "{\"total\": 1e12, \"active\": 5}}}]}";
    expect_refused(huge, tiny_mixes, tiny_providers, DSC_PARSE, "models[0] ('huge')",
                   "architecture.parameters.total");
}

Test(catalog, duplicate_models_and_dangling_aliases_are_refused) {
    const char *dup = "{\"models\": ["
                      "{\"provider\": \"acme\", \"name\": \"x\", \"architecture\": {\"type\": "
                      "\"dense\", \"parameters\": 3}},"
                      "{\"provider\": \"acme\", \"name\": \"x\", \"architecture\": {\"type\": "
                      "\"dense\", \"parameters\": 4}}]}";
    expect_refused(dup, tiny_mixes, tiny_providers, DSC_PARSE, "duplicate model 'acme/x'", NULL);
    const char *dangling =
        "{\"aliases\": [{\"provider\": \"acme\", \"name\": \"y\", \"alias\": \"nope\"}],"
        "\"models\": [{\"provider\": \"acme\", \"name\": \"x\", "
        "\"architecture\": {\"type\": \"dense\", \"parameters\": 3}}]}";
    expect_refused(dangling, tiny_mixes, tiny_providers, DSC_PARSE, "aliases[0] ('y')",
                   "unknown model 'acme/nope'");
}

Test(catalog, provider_with_unknown_zone_or_bad_pue_is_refused) {
    expect_refused(tiny_models, tiny_mixes,
                   "{\"acme\": {\"datacenter_location\": \"XYZ\", \"datacenter_pue\": 1.1, "
                   "\"datacenter_wue\": 0.5}}",
                   DSC_PARSE, "provider 'acme'", "zone 'XYZ'");
    expect_refused(tiny_models, tiny_mixes,
                   "{\"acme\": {\"datacenter_location\": \"FRA\", \"datacenter_pue\": 0.5, "
                   "\"datacenter_wue\": 0.5}}",
                   DSC_PARSE, "provider 'acme'", "datacenter_pue");
}

Test(catalog, null_location_means_the_world_mix) {
    scratch s;
    scratch_make(&s, tiny_models, tiny_mixes,
                 "{\"acme\": {\"datacenter_location\": null, \"datacenter_pue\": 1.1, "
                 "\"datacenter_wue\": 0.5}}");
    dsc_error err;
    dsc_catalog *cat = dsc_catalog_load(s.dir, &err);
    scratch_remove(&s);
    cr_assert_not_null(cat, "%s", err.message);
    cr_assert_str_eq(dsc_catalog_provider(cat, "acme")->zone, "WOR");
    dsc_catalog_free(cat);
}

Test(catalog, free_null_is_a_no_op) {
    dsc_catalog_free(NULL);
    cr_assert_eq(dsc_catalog_model_count(NULL), 0);
}

/* ---- prices ---- */

Test(catalog, shipped_prices_are_found_by_model_and_alias) {
    dsc_catalog *cat = load_shipped();
    cr_assert_str_eq(dsc_catalog_currency(cat), "USD");
    cr_assert_geq(dsc_catalog_price_count(cat), 10);
    const dsc_price *p = dsc_catalog_price(cat, "openai", "gpt-4o");
    cr_assert_not_null(p);
    cr_assert_float_eq(p->input_per_mtok, 2.5, 0);
    cr_assert_float_eq(p->output_per_mtok, 10.0, 0);
    cr_assert_str_eq(p->as_of, "2026-03");
    cr_assert_not_null(strstr(p->source, "openai.com"));
    const dsc_price *alias = dsc_catalog_price(cat, "anthropic", "claude-sonnet-4-5");
    cr_assert_not_null(alias);
    cr_assert_eq(alias, dsc_catalog_price(cat, "anthropic", "claude-sonnet-4-5-20250929"));
    cr_assert_str_eq(alias->model, "claude-sonnet-4-5-20250929");
    cr_assert_null(
        dsc_catalog_price(cat, "huggingface_hub", "meta-llama/Meta-Llama-3-8B-Instruct"));
    cr_assert_null(dsc_catalog_price(cat, "openai", "no-such-model"));
    dsc_catalog_free(cat);
}

/* A model's record finds the price its names find, for every model and alias; no
 * record (or one of another catalogue) has none. */
Test(catalog, a_model_record_has_the_price_its_name_and_aliases_have) {
    dsc_catalog *cat = load_shipped(), *other = load_shipped();
    size_t priced = 0;
    for (size_t i = 0; i < dsc_catalog_model_count(cat); i++) {
        const dsc_model *m = dsc_catalog_model_at(cat, i);
        const dsc_price *p = dsc_catalog_price(cat, m->provider, m->name);
        cr_assert_eq(dsc_catalog_model_price(cat, m), p, "%s/%s", m->provider, m->name);
        cr_assert_null(dsc_catalog_model_price(other, m), "%s/%s", m->provider, m->name);
        priced += p != NULL;
    }
    cr_assert_geq(priced, 10);
    for (size_t i = 0; i < dsc_catalog_alias_count(cat); i++) {
        const dsc_alias *a = dsc_catalog_alias_at(cat, i);
        cr_assert_eq(dsc_catalog_model_price(cat, dsc_catalog_model(cat, a->provider, a->name)),
                     dsc_catalog_price(cat, a->provider, a->name), "%s/%s", a->provider, a->name);
    }
    cr_assert_null(dsc_catalog_model_price(cat, NULL));
    cr_assert_null(dsc_catalog_model_price(NULL, dsc_catalog_model_at(cat, 0)));
    dsc_catalog_free(other);
    dsc_catalog_free(cat);
}

Test(catalog, cost_is_tokens_times_price_in_micro_units) {
    dsc_price p = {.input_per_mtok = 2.5, .output_per_mtok = 10.0};
    cr_assert_eq(dsc_price_cost_micro(&p, 1000, 500), 7500); /* $0.0075 */
    cr_assert_eq(dsc_price_cost_micro(&p, 0, 0), 0);
    cr_assert_eq(dsc_price_cost_micro(&p, 1000000000, 1000000000), 12500000000LL);
    dsc_price tiny = {.input_per_mtok = 0.15, .output_per_mtok = 0.6};
    cr_assert_eq(dsc_price_cost_micro(&tiny, 3, 1), 1); /* 1.05 rounds to 1 */
    cr_assert_eq(dsc_price_cost_micro(NULL, 10, 10), 0);
    cr_assert_eq(dsc_price_cost_micro(&p, -1, 10), 0);
}

Test(catalog, prices_file_is_optional) {
    scratch s;
    scratch_make(&s, tiny_models, tiny_mixes, tiny_providers);
    dsc_error err;
    dsc_catalog *cat = dsc_catalog_load(s.dir, &err);
    scratch_remove(&s);
    cr_assert_not_null(cat, "%s", err.message);
    cr_assert_eq(dsc_catalog_price_count(cat), 0);
    cr_assert_str_eq(dsc_catalog_currency(cat), "");
    cr_assert_null(dsc_catalog_price(cat, "acme", "acme-small"));
    dsc_catalog_free(cat);
}

static void expect_prices_refused(const char *prices, const char *frag1, const char *frag2) {
    scratch s;
    scratch_make(&s, tiny_models, tiny_mixes, tiny_providers);
    write_file(&s, DSC_CATALOG_PRICES_FILE, prices);
    dsc_error err;
    dsc_catalog *cat = dsc_catalog_load(s.dir, &err);
    char path[256];
    snprintf(path, sizeof path, "%s/%s", s.dir, DSC_CATALOG_PRICES_FILE);
    unlink(path);
    scratch_remove(&s);
    cr_assert_null(cat, "bad prices accepted");
    cr_assert_eq(err.code, DSC_PARSE);
    cr_assert_not_null(strstr(err.message, frag1), "'%s' not in: %s", frag1, err.message);
    if (frag2)
        cr_assert_not_null(strstr(err.message, frag2), "'%s' not in: %s", frag2, err.message);
}

Test(catalog, bad_prices_name_the_file_entry_and_field) {
    expect_prices_refused("{\"currency\": \"USD\", \"prices\": [{\"provider\": \"acme\", "
                          "\"model\": \"nope\", \"input\": 1, \"output\": 2, \"as_of\": \"x\", "
                          "\"source\": \"y\"}]}",
                          "prices.json: prices[0]", "unknown model 'acme/nope'");
    expect_prices_refused("{\"currency\": \"USD\", \"prices\": [{\"provider\": \"acme\", "
                          "\"model\": \"big\", \"input\": -1, \"output\": 2, \"as_of\": \"x\", "
                          "\"source\": \"y\"}]}",
                          "prices[0]", "'input' and 'output'");
    expect_prices_refused("{\"currency\": \"USD\", \"prices\": ["
                          "{\"provider\": \"acme\", \"model\": \"big\", \"input\": 1, "
                          "\"output\": 2, \"as_of\": \"x\", \"source\": \"y\"},"
                          "{\"provider\": \"acme\", \"model\": \"acme-big-1\", \"input\": 1, "
                          "\"output\": 2, \"as_of\": \"x\", \"source\": \"y\"}]}",
                          "prices[1]", "priced twice");
    expect_prices_refused("{\"prices\": []}", "prices.json", "currency");
    expect_prices_refused("{\"currency\": \"USD\",\n \"prices\": [\n}", "prices.json:3:", NULL);
}

/* ---- serving.json: the discern method's data ---- */

Test(catalog, shipped_serving_data_has_profiles_overrides_lifecycle_and_classes) {
    dsc_error err;
    dsc_catalog *cat = dsc_catalog_load(SHIPPED, &err);
    cr_assert_not_null(cat, "%s", err.message);
    const dsc_method_data *k = dsc_catalog_method_data(cat);
    cr_assert_not_null(k);
    cr_assert_float_eq(k->host_overhead, 1.603, 1e-12);
    cr_assert_float_eq(k->lifetime_s, 94608000, 1e-3);
    const dsc_serving_provider *g = dsc_catalog_serving_provider(cat, "google_genai");
    cr_assert_str_eq(g->serving.accelerator->name, "TPUv4");
    cr_assert_float_eq(g->serving.accelerator->bandwidth_bytes_s, 1.2e12, 1);
    cr_assert_float_eq(g->market_gwp_kgco2eq_per_kwh, 0.125, 1e-12);
    const dsc_serving_provider *other = dsc_catalog_serving_provider(cat, "cohere");
    cr_assert_str_eq(other->name, "*", "an unlisted provider gets the default profile");
    cr_assert_lt(other->market_gwp_kgco2eq_per_kwh, 0);
    const dsc_lifecycle *l = dsc_catalog_lifecycle(cat, "mistralai", "mistral-large-2411");
    cr_assert(l->per_model);
    cr_assert_gt(l->per_kwh_it_gwp, 0);
    cr_assert_eq(dsc_catalog_lifecycle(cat, "openai", "gpt-4o")->per_model, 0);
    cr_assert_null(dsc_catalog_accelerator(cat, "A100"));
    dsc_catalog_free(cat);
}

static const char *tiny_serving_head =
    "{\"constants\": {\"bandwidth_efficiency\": 0.7, \"prefill_mfu\": 0.5, "
    "\"cached_input_factor\": 0.1, \"host_overhead\": 1.5, \"lifetime_years\": 3},\n"
    " \"accelerators\": [{\"name\": \"X1\", \"memory_gb\": 80, \"power_w\": 700, "
    "\"bandwidth_gb_s\": 3000, \"peak_tflops\": 900, \"per_server\": 8, "
    "\"embodied\": {\"gwp\": 1, \"adpe\": 1, \"pe\": 1}, "
    "\"server_embodied\": {\"gwp\": 1, \"adpe\": 1, \"pe\": 1}}],\n";
static const char *tiny_serving_tail =
    " \"lifecycle\": {\"default\": {\"usage_multiplier\": 0.5, \"source\": \"s\"}},\n"
    " \"images\": {\"energy_wh_per_image\": 1, \"reference_pixels\": 1048576},\n"
    " \"embeddings\": {\"active_b\": 1}}\n";

/* Load the tiny catalogue with a serving.json of head + middle + tail; returns the
 * catalogue (or NULL with *err). */
static dsc_catalog *load_serving(const char *middle, dsc_error *err) {
    char text[4096];
    snprintf(text, sizeof text, "%s%s%s", tiny_serving_head, middle, tiny_serving_tail);
    scratch s;
    scratch_make(&s, tiny_models, tiny_mixes, tiny_providers);
    write_file(&s, DSC_CATALOG_SERVING_FILE, text);
    dsc_catalog *cat = dsc_catalog_load(s.dir, err);
    char path[256];
    snprintf(path, sizeof path, "%s/%s", s.dir, DSC_CATALOG_SERVING_FILE);
    unlink(path);
    scratch_remove(&s);
    return cat;
}

#define TINY_PROVIDERS                                                                             \
    " \"providers\": {\"*\": {\"accelerator\": \"X1\", \"precision_bits\": 16, \"batch\": 32, "    \
    "\"fallback\": {\"active_b\": 1, \"total_b\": 10}}},\n"

Test(catalog, serving_overrides_give_an_unlisted_model_its_size_and_serving) {
    dsc_error err;
    dsc_catalog *cat = load_serving(
        TINY_PROVIDERS " \"models\": [{\"provider\": \"acme\", \"model\": \"acme-new\", "
                       "\"batch\": {\"min\": 4, \"max\": 8}, \"active_b\": 3, \"total_b\": 30}],\n",
        &err);
    cr_assert_not_null(cat, "%s", err.message);
    const dsc_serving_model *m = dsc_catalog_serving_model(cat, "acme", "acme-new");
    cr_assert_not_null(m);
    cr_assert_float_eq(m->total_b.max, 30, 1e-12);
    cr_assert_null(m->serving.accelerator, "unset fields keep the provider's");
    dsc_estimate_input in = {
        .provider = "acme", .model = "acme-new", .output_tokens = 10, .method = DSC_METHOD_DISCERN};
    dsc_estimate est;
    cr_assert_eq(dsc_estimate_compute(cat, &in, &est, &err), DSC_OK, "%s", err.message);
    cr_assert_str_eq(est.assumptions.params_source, "override");
    cr_assert_float_eq(est.assumptions.batch.min, 4, 1e-12);
    cr_assert_str_eq(est.assumptions.accelerator, "X1");
    dsc_catalog_free(cat);
}

Test(catalog, serving_file_is_optional_and_the_discern_method_then_says_it_needs_it) {
    scratch s;
    scratch_make(&s, tiny_models, tiny_mixes, tiny_providers);
    dsc_error err;
    dsc_catalog *cat = dsc_catalog_load(s.dir, &err);
    scratch_remove(&s);
    cr_assert_not_null(cat, "%s", err.message);
    cr_assert_null(dsc_catalog_method_data(cat));
    dsc_estimate_input in = {
        .provider = "acme", .model = "big", .output_tokens = 10, .method = DSC_METHOD_DISCERN};
    dsc_estimate est;
    cr_assert_eq(dsc_estimate_compute(cat, &in, &est, &err), DSC_BAD_REQUEST);
    cr_assert_not_null(strstr(err.message, "serving.json"), "%s", err.message);
    in.method = DSC_METHOD_ECOLOGITS;
    cr_assert_eq(dsc_estimate_compute(cat, &in, &est, &err), DSC_OK);
    dsc_catalog_free(cat);
}

static void expect_serving_refused(const char *middle, const char *frag) {
    dsc_error err;
    dsc_catalog *cat = load_serving(middle, &err);
    cr_assert_null(cat, "bad serving.json accepted");
    cr_assert_eq(err.code, DSC_PARSE);
    cr_assert_not_null(strstr(err.message, "serving.json"), "%s", err.message);
    cr_assert_not_null(strstr(err.message, frag), "'%s' not in: %s", frag, err.message);
}

Test(catalog, bad_serving_data_is_refused_naming_the_file_and_field) {
    expect_serving_refused("", "\"*\" default");
    expect_serving_refused(" \"providers\": {\"*\": {\"accelerator\": \"Z9\", \"precision_bits\": "
                           "16, \"batch\": 32}},\n",
                           "'accelerator'");
    expect_serving_refused(" \"providers\": {\"*\": {\"accelerator\": \"X1\", \"precision_bits\": "
                           "16, \"batch\": 0, \"fallback\": {\"active_b\": 1, \"total_b\": 1}}},\n",
                           "'batch'");
    expect_serving_refused(TINY_PROVIDERS
                           " \"models\": [{\"provider\": \"acme\", \"model\": \"m\", "
                           "\"active_b\": 30, \"total_b\": 3}],\n",
                           "active <= total");
}

/* ---- robustness: mutated files never crash, and a refusal names the mutated file ---- */

static uint32_t next_random(uint32_t *state) { /* xorshift32: reproducible */
    *state ^= *state << 13;
    *state ^= *state >> 17;
    *state ^= *state << 5;
    return *state;
}

static void mutate(char *buf, size_t *len, size_t cap, uint32_t *rng) {
    static const char alphabet[] = "{}[]\",:0123456789.-e \nabcFRAWOR";
    for (int k = 1 + (int)(next_random(rng) % 4); k > 0 && *len > 0; k--) {
        size_t at = next_random(rng) % *len;
        switch (next_random(rng) % 3) {
        case 0:
            buf[at] = alphabet[next_random(rng) % (sizeof alphabet - 1)];
            break;
        case 1:
            memmove(buf + at, buf + at + 1, *len - at);
            (*len)--;
            break;
        default:
            if (*len + 1 < cap) {
                memmove(buf + at + 1, buf + at, *len - at + 1);
                buf[at] = alphabet[next_random(rng) % (sizeof alphabet - 1)];
                (*len)++;
            }
        }
    }
    buf[*len] = '\0';
}

Test(catalog, mutated_catalogue_files_load_or_are_refused_naming_the_file) {
    const char *names[3] = {DSC_CATALOG_MODELS_FILE, DSC_CATALOG_MIXES_FILE,
                            DSC_CATALOG_PROVIDERS_FILE};
    const char *texts[3] = {tiny_models, tiny_mixes, tiny_providers};
    uint32_t rng = 0x9e3779b9u;
    int loaded = 0, refused = 0;
    for (int round = 0; round < 600; round++) {
        int which = round % 3;
        char buf[4096];
        size_t len = strlen(texts[which]);
        memcpy(buf, texts[which], len + 1);
        mutate(buf, &len, sizeof buf, &rng);
        scratch s;
        scratch_make(&s, which == 0 ? buf : tiny_models, which == 1 ? buf : tiny_mixes,
                     which == 2 ? buf : tiny_providers);
        dsc_error err;
        dsc_catalog *cat = dsc_catalog_load(s.dir, &err);
        scratch_remove(&s);
        if (cat) {
            dsc_catalog_free(cat);
            loaded++;
            continue;
        }
        refused++;
        cr_assert_eq(err.code, DSC_PARSE, "round %d: code %d: %s", round, err.code, err.message);
        cr_assert_not_null(strstr(err.message, names[which]), "round %d: %s", round, err.message);
    }
    /* The mutations exercise both outcomes, not only one. */
    cr_assert_gt(loaded, 20, "only %d mutated catalogues loaded", loaded);
    cr_assert_gt(refused, 200, "only %d mutated catalogues refused", refused);
    cr_log_info("%d loaded, %d refused", loaded, refused);
}

Test(catalog, queries_over_96_bytes_get_no_suggestions) {
    char name[121], models[512];
    memset(name, 'm', 120);
    name[120] = '\0';
    snprintf(models, sizeof models,
             "{\"models\": [{\"provider\": \"acme\", \"name\": \"%s\", "
             "\"architecture\": {\"type\": \"dense\", \"parameters\": 3}}]}",
             name);
    scratch s;
    scratch_make(&s, models, tiny_mixes, tiny_providers);
    dsc_error err;
    dsc_catalog *cat = dsc_catalog_load(s.dir, &err);
    scratch_remove(&s);
    cr_assert_not_null(cat, "%s", err.message);
    const char *out[DSC_SUGGEST_MAX];
    name[119] = 'x'; /* one edit away, but 120 bytes long */
    cr_assert_eq(dsc_catalog_suggest_models(cat, "acme", name, out, DSC_SUGGEST_MAX), 0);
    name[90] = '\0'; /* 90 bytes: within the limit, 30 deletions away (limit 30) */
    cr_assert_eq(dsc_catalog_suggest_models(cat, "acme", name, out, DSC_SUGGEST_MAX), 1);
    dsc_catalog_free(cat);
}

Test(catalog, mutated_serving_files_load_or_are_refused_and_loaded_ones_estimate_finitely) {
    char base[4096];
    snprintf(base, sizeof base, "%s%s", TINY_PROVIDERS, "");
    uint32_t rng = 0x2545f491u;
    int loaded = 0, refused = 0;
    for (int round = 0; round < 300; round++) {
        char buf[4096];
        size_t len = strlen(base);
        memcpy(buf, base, len + 1);
        mutate(buf, &len, sizeof buf, &rng);
        dsc_error err;
        dsc_catalog *cat = load_serving(buf, &err);
        if (!cat) {
            refused++;
            cr_assert_eq(err.code, DSC_PARSE, "round %d: %s", round, err.message);
            cr_assert_not_null(strstr(err.message, DSC_CATALOG_SERVING_FILE), "%s", err.message);
            continue;
        }
        loaded++;
        dsc_estimate_input in = {.provider = "acme",
                                 .model = "unlisted",
                                 .input_tokens = 100,
                                 .output_tokens = 100,
                                 .method = DSC_METHOD_DISCERN};
        dsc_estimate est;
        if (dsc_estimate_compute(cat, &in, &est, &err) == DSC_OK)
            cr_assert(isfinite(est.total.energy_kwh.max) &&
                          est.total.energy_kwh.min <= est.total.energy_kwh.max,
                      "round %d: [%g, %g]", round, est.total.energy_kwh.min,
                      est.total.energy_kwh.max);
        dsc_catalog_free(cat);
    }
    cr_assert_gt(loaded, 2, "only %d mutated serving files loaded", loaded);
    cr_assert_gt(refused, 100, "only %d mutated serving files refused", refused);
}
