/*
 * cli_estimate.c - `discern estimate`, `discern models` and `discern zones`: the
 * offline commands, which need only the catalogue (no server).
 *
 *   discern estimate --provider P --model M --output-tokens N [--input-tokens N]
 *                    [--latency S] [--zone CODE] [--method ecologits|discern]
 *                    [discern: --cached-tokens N --reasoning-tokens N --parameters-b B
 *                     --active-parameters-b B --total-parameters-b B --scope S --carbon C
 *                     --water W --images N --image-size WxH --modality M]
 *                    [--json] [--data DIR]
 *   discern models [--provider P] [--json] [--data DIR]
 *   discern zones [--json] [--data DIR]
 *
 * Exit codes (cli.h): 0 ok, 1 catalogue cannot be loaded, 2 bad flags or values,
 * 3 unknown provider/model/zone (the message suggests close matches).
 * JSON is built with jansson; estimates are printed with 17 significant digits.
 */
#include "cli.h"

#include "discern/catalog.h"
#include "discern/estimate.h"
#include "discern/paths.h"

#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* A positive finite number of seconds. */
static int parse_seconds(const cli_ctx *cx, const char *opt, const char *text, double *out) {
    char *end;
    errno = 0;
    double v = strtod(text, &end);
    if (end == text || *end != '\0' || errno == ERANGE || !isfinite(v) || !(v > 0))
        return cli_fail(cx, DSC_BAD_REQUEST, "option %s: '%s' is not a positive number of seconds",
                        opt, text);
    *out = v;
    return CLI_EXIT_OK;
}

/* Load the catalogue from --data, DISCERN_DATA_DIR or next to the binary. */
static dsc_catalog *open_catalog(const cli_ctx *cx) {
    const char *data_flag = cx->data;
    char dir[DSC_PATH_MAX];
    dsc_error err;
    if (dsc_paths_data_dir(data_flag, dir, sizeof dir, &err) != DSC_OK) {
        cli_fail(cx, err.code, "%s", err.message);
        return NULL;
    }
    dsc_catalog *cat = dsc_catalog_load(dir, &err);
    if (!cat) cli_fail(cx, err.code, "cannot load the catalogue: %s", err.message);
    return cat;
}

/* Print a JSON value (consumed) on stdout with digits significant digits (17 for
 * computed values, so they round-trip; 15 for catalogue data, so 32.3 stays 32.3);
 * FAIL if it could not be built. */
static int print_json(const cli_ctx *cx, json_t *root, int digits) {
    char *text = root ? json_dumps(root, JSON_INDENT(2) | JSON_REAL_PRECISION(digits)) : NULL;
    json_decref(root);
    if (!text) return cli_fail(cx, DSC_NOMEM, "out of memory while writing JSON");
    puts(text);
    free(text);
    return CLI_EXIT_OK;
}

static json_t *json_range(dsc_range r) {
    return json_pack("{s:f,s:f}", "min", r.min, "max", r.max);
}

/* ---- estimate ---- */

static const char estimate_help[] =
    "usage: discern estimate --provider P --model M --output-tokens N [options]\n"
    "\n"
    "The footprint of one request, computed offline from the catalogue: energy, GWP,\n"
    "water, primary energy and ADPe, each a min-max range, split into usage and\n"
    "embodied (manufacturing) impacts, with the scope and assumptions behind them.\n"
    "\n"
    "options:\n"
    "  --provider P         provider: openai, anthropic, mistralai, google_genai, ...\n"
    "  --model M            model name or alias (see 'discern models'); with --method\n"
    "                       discern an unknown model is estimated too (flagged)\n"
    "  --output-tokens N    tokens of the answer (0..1000000000)\n"
    "  --input-tokens N     prompt tokens (the ecologits method ignores them)\n"
    "  --latency S          measured request latency in seconds (caps the ecologits\n"
    "                       method's modeled one; the discern method does not use it)\n"
    "  --zone CODE          electricity mix (ISO 3166-1 alpha-3 or WOR; see 'discern zones');\n"
    "                       default: the provider's datacentre zone\n"
    "  --method NAME        ecologits (default: EcoLogits reproduced exactly) or discern\n"
    "  --json               print one JSON object instead of a table\n"
    "  --data DIR           catalogue directory (default: $DISCERN_DATA_DIR, then the\n"
    "                       data installed next to this program)\n"
    "\n"
    "discern method only (docs/methodology.md):\n"
    "  --cached-tokens N    of the input tokens, how many came from a prompt cache\n"
    "  --reasoning-tokens N hidden reasoning tokens generated besides the answer\n"
    "  --parameters-b B     size of a dense model, billions of parameters\n"
    "  --active-parameters-b B, --total-parameters-b B   size of a mixture of experts\n"
    "  --scope S            inference (default) or lifecycle (adds training amortised and\n"
    "                       the rest of the infrastructure)\n"
    "  --carbon C           location (default: the zone's grid) or market (the provider's\n"
    "                       market-based factor, when published)\n"
    "  --water W            onsite (default: datacentre cooling) or total (adds the water\n"
    "                       used to generate the electricity)\n"
    "  --modality M         text (default), embedding (input tokens only) or image\n"
    "  --images N           images generated (implies --modality image)\n"
    "  --image-size WxH     pixels of each image (default 1024x1024)\n"
    "The offline estimate uses annual grid averages; a live value pushed with\n"
    "'discern grid set' is used by the server's discern-method estimates.\n"
    "\n"
    "units: the table shows energy in Wh, GWP in gCO2e, water in mL, primary energy in\n"
    "MJ, ADPe in kgSbeq; --json gives energy_kwh (kWh), gwp_kgco2eq (kg), wcf_l (L),\n"
    "pe_mj (MJ), adpe_kgsbeq (kg), and list_price.amount in list_price.currency\n"
    "(null when the model has no price in prices.json), as the table's list price.\n"
    "\n"
    "exit codes: 0 ok, 1 catalogue unreadable, 2 bad options, 3 unknown provider/model/zone\n";

typedef struct estimate_opts {
    const char *provider, *model, *out_tokens, *in_tokens, *latency, *zone, *method;
    const char *cached, *reasoning, *params, *active, *total, *scope, *carbon, *water, *images,
        *image_size, *modality;
} estimate_opts;

/* A positive finite number of billions of parameters. */
static int parse_params(const cli_ctx *cx, const char *opt, const char *text, double *out) {
    char *end;
    errno = 0;
    double v = strtod(text, &end);
    if (end == text || *end != '\0' || errno == ERANGE || !isfinite(v) || !(v > 0) || v > 1e6)
        return cli_fail(cx, DSC_BAD_REQUEST,
                        "option %s: '%s' is not a number of billions in (0, 1e6]", opt, text);
    *out = v;
    return CLI_EXIT_OK;
}

/* "WxH" into a pixel count. */
static int parse_image_size(const cli_ctx *cx, const char *text, int64_t *pixels) {
    unsigned w = 0, h = 0;
    char tail = 0;
    if (sscanf(text, "%5ux%5u%c", &w, &h, &tail) != 2 || w == 0 || h == 0)
        return cli_fail(cx, DSC_BAD_REQUEST, "option --image-size: '%s' is not WIDTHxHEIGHT", text);
    *pixels = (int64_t)w * h;
    return CLI_EXIT_OK;
}

/* A named choice of the discern method; USAGE naming the option and the choices. */
static int parse_choice(const cli_ctx *cx, const char *opt, const char *text, dsc_choice kind,
                        int *out) {
    if (!text) return CLI_EXIT_OK;
    if (dsc_estimate_choice_parse(kind, text, out) == DSC_OK) return CLI_EXIT_OK;
    return cli_fail(cx, DSC_BAD_REQUEST, "option %s: unknown value '%s' (%s)", opt, text,
                    dsc_estimate_choice_names(kind));
}

static int discern_choices(const cli_ctx *cx, const estimate_opts *o, dsc_estimate_input *in) {
    int scope = 0, carbon = 0, water = 0, modality = 0;
    int rc = parse_choice(cx, "--scope", o->scope, DSC_CHOICE_SCOPE, &scope);
    if (rc == CLI_EXIT_OK) rc = parse_choice(cx, "--carbon", o->carbon, DSC_CHOICE_CARBON, &carbon);
    if (rc == CLI_EXIT_OK) rc = parse_choice(cx, "--water", o->water, DSC_CHOICE_WATER, &water);
    if (rc == CLI_EXIT_OK)
        rc = parse_choice(cx, "--modality", o->modality, DSC_CHOICE_MODALITY, &modality);
    in->scope = (dsc_scope)scope;
    in->carbon = (dsc_carbon)carbon;
    in->water = (dsc_water)water;
    in->modality = (dsc_modality)modality;
    return rc;
}

/* A discern-only option given to the ecologits method would be ignored: refuse it. */
static int discern_only(const cli_ctx *cx, const estimate_opts *o) {
    const struct {
        const char *name, *value;
    } opts[] = {{"--cached-tokens", o->cached},
                {"--reasoning-tokens", o->reasoning},
                {"--parameters-b", o->params},
                {"--active-parameters-b", o->active},
                {"--total-parameters-b", o->total},
                {"--scope", o->scope},
                {"--carbon", o->carbon},
                {"--water", o->water},
                {"--images", o->images},
                {"--image-size", o->image_size},
                {"--modality", o->modality}};
    for (size_t i = 0; i < sizeof opts / sizeof opts[0]; i++)
        if (opts[i].value)
            return cli_fail(cx, DSC_BAD_REQUEST, "option %s needs --method discern", opts[i].name);
    return CLI_EXIT_OK;
}

/* The options only the discern method reads. */
static int discern_input(const cli_ctx *cx, const estimate_opts *o, dsc_estimate_input *in) {
    int rc = discern_choices(cx, o, in);
    if (rc == CLI_EXIT_OK && o->cached)
        rc = cli_parse_count(cx, "--cached-tokens", o->cached, &in->cached_input_tokens);
    if (rc == CLI_EXIT_OK && o->reasoning)
        rc = cli_parse_count(cx, "--reasoning-tokens", o->reasoning, &in->reasoning_tokens);
    if (rc == CLI_EXIT_OK && o->images)
        rc = cli_parse_count(cx, "--images", o->images, &in->images);
    if (rc == CLI_EXIT_OK && o->image_size)
        rc = parse_image_size(cx, o->image_size, &in->image_pixels);
    if (rc == CLI_EXIT_OK && o->params)
        rc = parse_params(cx, "--parameters-b", o->params, &in->parameters_b);
    if (rc == CLI_EXIT_OK && o->active)
        rc = parse_params(cx, "--active-parameters-b", o->active, &in->active_parameters_b);
    if (rc == CLI_EXIT_OK && o->total)
        rc = parse_params(cx, "--total-parameters-b", o->total, &in->total_parameters_b);
    return rc;
}

static int estimate_input(const cli_ctx *cx, const estimate_opts *o, dsc_estimate_input *in) {
    memset(in, 0, sizeof *in);
    if (!o->provider) return cli_fail(cx, DSC_BAD_REQUEST, "missing --provider (see --help)");
    if (!o->model) return cli_fail(cx, DSC_BAD_REQUEST, "missing --model (see --help)");
    int no_output = o->images || o->modality;
    if (!o->out_tokens && !no_output)
        return cli_fail(cx, DSC_BAD_REQUEST, "missing --output-tokens (see --help)");
    in->provider = o->provider;
    in->model = o->model;
    in->zone = o->zone;
    int rc = o->out_tokens
                 ? cli_parse_count(cx, "--output-tokens", o->out_tokens, &in->output_tokens)
                 : CLI_EXIT_OK;
    if (rc == CLI_EXIT_OK && o->in_tokens)
        rc = cli_parse_count(cx, "--input-tokens", o->in_tokens, &in->input_tokens);
    if (rc == CLI_EXIT_OK && o->latency)
        rc = parse_seconds(cx, "--latency", o->latency, &in->latency_s);
    if (rc == CLI_EXIT_OK && o->method && dsc_method_parse(o->method, &in->method) != DSC_OK)
        rc =
            cli_fail(cx, DSC_BAD_REQUEST,
                     "option --method: unknown method '%s' (known: ecologits, discern)", o->method);
    if (rc == CLI_EXIT_OK) rc = discern_input(cx, o, in);
    if (rc == CLI_EXIT_OK && in->method != DSC_METHOD_DISCERN) rc = discern_only(cx, o);
    return rc;
}

static json_t *impacts_json(const dsc_impacts *im, int with_energy_and_water) {
    json_t *o = json_object();
    if (!o) return NULL;
    if (with_energy_and_water) json_object_set_new(o, "energy_kwh", json_range(im->energy_kwh));
    json_object_set_new(o, "gwp_kgco2eq", json_range(im->gwp_kgco2eq));
    json_object_set_new(o, "adpe_kgsbeq", json_range(im->adpe_kgsbeq));
    json_object_set_new(o, "pe_mj", json_range(im->pe_mj));
    if (with_energy_and_water) json_object_set_new(o, "wcf_l", json_range(im->wcf_l));
    return o;
}

static json_t *strings_json(const char *const *names, int n) {
    json_t *arr = json_array();
    for (int i = 0; arr && i < n; i++)
        json_array_append_new(arr, json_string(names[i]));
    return arr;
}

static json_t *scope_json(const dsc_estimate *est) {
    const char *names[8];
    int n = dsc_estimate_includes(est, names, 8);
    return json_pack("{s:s,s:s,s:s,s:o}", "boundary", dsc_scope_name(est->scope), "carbon",
                     dsc_carbon_name(est->carbon), "water", dsc_water_name(est->water), "includes",
                     strings_json(names, n));
}

static json_t *assumptions_json(const dsc_estimate *est) {
    const dsc_estimate_assumptions *a = &est->assumptions;
    json_t *o = json_pack("{s:s,s:s,s:f,s:o,s:o,s:o,s:s,s:s,s:s,s:s,s:f,s:o}", "modality",
                          dsc_modality_name(a->modality), "accelerator", a->accelerator,
                          "precision_bits", a->precision_bits, "batch", json_range(a->batch),
                          "active_params_b", json_range(a->active_params_b), "total_params_b",
                          json_range(a->total_params_b), "params_source", a->params_source, "zone",
                          est->zone, "zone_source", a->zone_source, "grid_source", a->grid_source,
                          "gco2e_per_kwh", a->gco2e_per_kwh, "pue", json_range(a->pue));
    if (o)
        json_object_set_new(o, "lifecycle_source",
                            a->lifecycle_source ? json_string(a->lifecycle_source) : json_null());
    return o;
}

/* The list price of the request, as the table prints it; null when unpriced. */
static json_t *list_price_json(const dsc_catalog *cat, const dsc_estimate_input *in) {
    const dsc_price *p = dsc_catalog_price(cat, in->provider, in->model);
    if (!p) return json_null();
    double amount = (double)dsc_price_cost_micro(p, in->input_tokens, in->output_tokens) / 1e6;
    return json_pack("{s:f,s:s,s:f,s:f,s:s}", "amount", amount, "currency",
                     dsc_catalog_currency(cat), "input_per_mtok", p->input_per_mtok,
                     "output_per_mtok", p->output_per_mtok, "as_of", p->as_of);
}

static int estimate_print_json(const cli_ctx *cx, const dsc_catalog *cat,
                               const dsc_estimate_input *in, const dsc_estimate *est) {
    json_t *root = impacts_json(&est->total, 1);
    if (!root) return cli_fail(cx, DSC_NOMEM, "out of memory while writing JSON");
    const char *names[8];
    int n = dsc_estimate_warning_names(est->warnings, names, 8);
    json_object_set_new(root, "usage", impacts_json(&est->usage, 1));
    json_object_set_new(root, "embodied", impacts_json(&est->embodied, 0));
    json_object_set_new(root, "zone", json_string(est->zone));
    json_object_set_new(root, "warnings", strings_json(names, n));
    json_object_set_new(root, "method", json_string(dsc_method_name(est->method)));
    json_object_set_new(root, "scope", scope_json(est));
    json_object_set_new(root, "assumptions", assumptions_json(est));
    json_object_set_new(root, "list_price", list_price_json(cat, in));
    return print_json(cx, root, 17);
}

/* A formatted range; big enough for two %.3g numbers and the dash. */
typedef struct range_text {
    char s[80];
} range_text;

/* "0.801 – 1.28", or one number when the bounds agree to the digits shown. */
static range_text fmt_range(dsc_range r, double scale) {
    char lo[32], hi[32];
    range_text t;
    snprintf(lo, sizeof lo, "%.3g", r.min * scale);
    snprintf(hi, sizeof hi, "%.3g", r.max * scale);
    if (strcmp(lo, hi) == 0)
        snprintf(t.s, sizeof t.s, "%s", lo);
    else
        snprintf(t.s, sizeof t.s, "%s \u2013 %s", lo, hi);
    return t;
}

/* Print s left-aligned in width display columns (UTF-8 aware). */
static void print_cell(const char *s, int width) {
    int cols = 0;
    for (const unsigned char *p = (const unsigned char *)s; *p; p++)
        cols += (*p & 0xC0) != 0x80;
    fputs(s, stdout);
    for (; cols < width; cols++)
        putchar(' ');
}

typedef struct table_row {
    const char *label;
    size_t offset; /* of the dsc_range inside dsc_impacts */
    double scale;  /* to the unit in the label */
    int embodied;  /* has an embodied part */
} table_row;

static const table_row table_rows[] = {
    {"energy (Wh)", offsetof(dsc_impacts, energy_kwh), 1e3, 0},
    {"GWP (gCO2e)", offsetof(dsc_impacts, gwp_kgco2eq), 1e3, 1},
    {"water (mL)", offsetof(dsc_impacts, wcf_l), 1e3, 0},
    {"primary energy (MJ)", offsetof(dsc_impacts, pe_mj), 1, 1},
    {"ADPe (kgSbeq)", offsetof(dsc_impacts, adpe_kgsbeq), 1, 1},
};

static dsc_range range_at(const dsc_impacts *im, size_t offset) {
    return *(const dsc_range *)(const void *)((const char *)im + offset);
}

static void print_impacts_table(const dsc_estimate *est) {
    print_cell("", 21);
    print_cell("total", 22);
    print_cell("usage", 22);
    puts("embodied");
    for (size_t i = 0; i < sizeof table_rows / sizeof table_rows[0]; i++) {
        const table_row *row = &table_rows[i];
        print_cell(row->label, 21);
        print_cell(fmt_range(range_at(&est->total, row->offset), row->scale).s, 22);
        print_cell(fmt_range(range_at(&est->usage, row->offset), row->scale).s, 22);
        dsc_range emb = range_at(&est->embodied, row->offset);
        /* water has an embodied part only in the lifecycle scope */
        puts(row->embodied || emb.max > 0 ? fmt_range(emb, row->scale).s : "-");
    }
}

static void print_factors(const dsc_catalog *cat, const dsc_estimate_input *in,
                          const dsc_estimate *est) {
    const dsc_provider *p = dsc_catalog_provider(cat, in->provider);
    const dsc_zone *z = dsc_catalog_zone(cat, est->zone);
    printf("factors: PUE %s, on-site water %s L/kWh; %s mix %.4g gCO2e/kWh, %.4g MJ/kWh, "
           "%.4g kgSbeq/kWh, %.4g L/kWh off-site water\n",
           fmt_range(p->pue, 1).s, fmt_range(p->wue_l_per_kwh, 1).s, z->name,
           z->gwp_kgco2eq_per_kwh * 1e3, z->pe_mj_per_kwh, z->adpe_kgsbeq_per_kwh,
           z->wue_l_per_kwh);
}

static void print_model_line(const dsc_catalog *cat, const dsc_estimate_input *in,
                             const dsc_estimate *est) {
    const dsc_model *m = dsc_catalog_model(cat, in->provider, in->model);
    dsc_range gpus = {est->bound[0].gpu_count, est->bound[1].gpu_count};
    dsc_range latency = {est->bound[0].latency_s, est->bound[1].latency_s};
    const char *why = in->latency_s > 0 && est->bound[0].latency_s == in->latency_s
                          ? " (capped by the measured latency)"
                          : (m->tps > 0 ? " (measured throughput)" : " (latency model)");
    printf("model: %s, %s B active of %s B; %s GPUs (H100 80GB); generation %s s%s\n",
           m->arch == DSC_ARCH_MOE ? "mixture of experts" : "dense",
           fmt_range(m->active_params_b, 1).s, fmt_range(m->total_params_b, 1).s,
           fmt_range(gpus, 1).s, fmt_range(latency, 1).s, why);
}

/* The discern method's model and serving line. */
static void print_serving_line(const dsc_estimate *est) {
    const dsc_estimate_assumptions *a = &est->assumptions;
    dsc_range devices = {est->bound[0].gpu_count, est->bound[1].gpu_count};
    dsc_range busy = {est->bound[0].latency_s, est->bound[1].latency_s};
    printf("model: %s B active of %s B (%s); %s x %s, %g-bit weights, batch %s; "
           "accelerator time %s s\n",
           fmt_range(a->active_params_b, 1).s, fmt_range(a->total_params_b, 1).s, a->params_source,
           fmt_range(devices, 1).s, a->accelerator, a->precision_bits, fmt_range(a->batch, 1).s,
           fmt_range(busy, 1).s);
}

static void print_scope(const dsc_estimate *est) {
    const dsc_estimate_assumptions *a = &est->assumptions;
    const char *names[8];
    int n = dsc_estimate_includes(est, names, 8);
    printf("scope: %s, %s carbon (%.4g gCO2e/kWh, %s), %s water; includes",
           dsc_scope_name(est->scope), dsc_carbon_name(est->carbon), a->gco2e_per_kwh,
           a->grid_source, dsc_water_name(est->water));
    for (int i = 0; i < n; i++)
        printf("%s %s", i ? "," : "", names[i]);
    putchar('\n');
    if (a->lifecycle_source) printf("lifecycle: %s\n", a->lifecycle_source);
}

static void print_list_price(const dsc_catalog *cat, const dsc_estimate_input *in) {
    const dsc_price *price = dsc_catalog_price(cat, in->provider, in->model);
    if (price)
        printf("list price: %.6f %s for %lld input + %lld output tokens (%g / %g per M tokens, "
               "as of %s)\n",
               (double)dsc_price_cost_micro(price, in->input_tokens, in->output_tokens) / 1e6,
               dsc_catalog_currency(cat), (long long)in->input_tokens, (long long)in->output_tokens,
               price->input_per_mtok, price->output_per_mtok, price->as_of);
}

static void print_header(const dsc_catalog *cat, const dsc_estimate_input *in,
                         const dsc_estimate *est) {
    const dsc_model *m = dsc_catalog_model(cat, in->provider, in->model);
    int default_zone = !in->zone || !*in->zone;
    printf("%s/%s", in->provider, m ? m->name : in->model);
    if (!m) printf(" (not in the catalogue)");
    if (m && strcmp(m->name, in->model) != 0) printf(" (alias %s)", in->model);
    printf(", %lld output tokens", (long long)in->output_tokens);
    if (in->reasoning_tokens) printf(" + %lld reasoning", (long long)in->reasoning_tokens);
    if (in->images) printf(", %lld images", (long long)in->images);
    printf(", method %s, zone %s%s\n\n", dsc_method_name(est->method), est->zone,
           default_zone ? " (provider default)" : "");
}

static void estimate_print_human(const dsc_catalog *cat, const dsc_estimate_input *in,
                                 const dsc_estimate *est) {
    print_header(cat, in, est);
    print_impacts_table(est);
    putchar('\n');
    print_factors(cat, in, est);
    if (est->method == DSC_METHOD_DISCERN)
        print_serving_line(est);
    else
        print_model_line(cat, in, est);
    print_scope(est);
    print_list_price(cat, in);
    const char *names[8];
    int n = dsc_estimate_warning_names(est->warnings, names, 8);
    if (n > 0) {
        fputs("warnings:", stdout);
        for (int i = 0; i < n; i++)
            printf("%s %s", i ? "," : "", names[i]);
        putchar('\n');
    }
}

int cli_estimate(cli_ctx *cx, int argc, char **argv) {
    estimate_opts o = {0};
    const cli_flag flags[] = {
        {.name = "--provider", .value = &o.provider},
        {.name = "--model", .value = &o.model},
        {.name = "--output-tokens", .value = &o.out_tokens},
        {.name = "--input-tokens", .value = &o.in_tokens},
        {.name = "--latency", .value = &o.latency},
        {.name = "--zone", .value = &o.zone},
        {.name = "--method", .value = &o.method},
        {.name = "--cached-tokens", .value = &o.cached},
        {.name = "--reasoning-tokens", .value = &o.reasoning},
        {.name = "--parameters-b", .value = &o.params},
        {.name = "--active-parameters-b", .value = &o.active},
        {.name = "--total-parameters-b", .value = &o.total},
        {.name = "--scope", .value = &o.scope},
        {.name = "--carbon", .value = &o.carbon},
        {.name = "--water", .value = &o.water},
        {.name = "--images", .value = &o.images},
        {.name = "--image-size", .value = &o.image_size},
        {.name = "--modality", .value = &o.modality},
    };
    int rc = cli_parse_flags(cx, argc, argv, flags, sizeof flags / sizeof flags[0], NULL);
    if (rc != CLI_EXIT_OK) return rc;
    if (cx->help) return fputs(estimate_help, stdout), CLI_EXIT_OK;
    dsc_estimate_input in;
    if ((rc = estimate_input(cx, &o, &in)) != CLI_EXIT_OK) return rc;
    dsc_catalog *cat = open_catalog(cx);
    if (!cat) return CLI_EXIT_FAIL;
    dsc_estimate est;
    dsc_error err;
    dsc_status st = dsc_estimate_compute(cat, &in, &est, &err);
    if (st != DSC_OK)
        rc = cli_fail_status(cx, st, &err);
    else if (cx->json)
        rc = estimate_print_json(cx, cat, &in, &est);
    else
        estimate_print_human(cat, &in, &est);
    dsc_catalog_free(cat);
    return rc;
}

/* ---- models ---- */

static const char models_help[] =
    "usage: discern models [--provider P] [--json] [--data DIR]\n"
    "\n"
    "The model catalogue: each model's architecture, active and total parameters\n"
    "(billions), measured throughput (tokens/s) and time to first token when known,\n"
    "then the aliases. --json also gives list prices where prices.json has them.\n"
    "\n"
    "options:\n"
    "  --provider P   only this provider's models\n"
    "  --json         print {\"models\": [...], \"aliases\": [...]}\n"
    "  --data DIR     catalogue directory\n";

static int provider_known(const dsc_catalog *cat, const char *provider) {
    size_t n = 0;
    dsc_catalog_provider_models(cat, provider, &n);
    return n > 0 || dsc_catalog_provider(cat, provider) != NULL;
}

static int unknown_provider(const cli_ctx *cx, const dsc_catalog *cat, const char *provider) {
    const char *names[DSC_SUGGEST_MAX];
    char hint[160];
    size_t n = dsc_catalog_suggest_providers(cat, provider, names, DSC_SUGGEST_MAX);
    return cli_fail(cx, DSC_UNKNOWN_PROVIDER, "option --provider: unknown provider '%s'%s",
                    provider, dsc_catalog_format_suggestions(names, n, hint, sizeof hint));
}

static json_t *price_json(const dsc_catalog *cat, const dsc_model *m) {
    const dsc_price *p = dsc_catalog_price(cat, m->provider, m->name);
    if (!p) return json_null();
    return json_pack("{s:f,s:f,s:s,s:s,s:s}", "input_per_mtok", p->input_per_mtok,
                     "output_per_mtok", p->output_per_mtok, "currency", dsc_catalog_currency(cat),
                     "as_of", p->as_of, "source", p->source);
}

static json_t *model_json(const dsc_catalog *cat, const dsc_model *m) {
    const char *names[8];
    int n = dsc_estimate_warning_names(m->warnings, names, 8);
    json_t *warnings = json_array();
    for (int i = 0; warnings && i < n; i++)
        json_array_append_new(warnings, json_string(names[i]));
    return json_pack("{s:s,s:s,s:s,s:o,s:o,s:o,s:o,s:o,s:o}", "provider", m->provider, "name",
                     m->name, "architecture", m->arch == DSC_ARCH_MOE ? "moe" : "dense",
                     "active_params_b", json_range(m->active_params_b), "total_params_b",
                     json_range(m->total_params_b), "tps",
                     m->tps > 0 ? json_real(m->tps) : json_null(), "ttft_s",
                     m->ttft_s > 0 ? json_real(m->ttft_s) : json_null(), "warnings", warnings,
                     "price", price_json(cat, m));
}

static int models_print_json(const cli_ctx *cx, const dsc_catalog *cat, const char *provider) {
    json_t *models = json_array(), *aliases = json_array();
    for (size_t i = 0; i < dsc_catalog_model_count(cat); i++) {
        const dsc_model *m = dsc_catalog_model_at(cat, i);
        if (!provider || strcmp(m->provider, provider) == 0)
            json_array_append_new(models, model_json(cat, m));
    }
    for (size_t i = 0; i < dsc_catalog_alias_count(cat); i++) {
        const dsc_alias *a = dsc_catalog_alias_at(cat, i);
        if (!provider || strcmp(a->provider, provider) == 0)
            json_array_append_new(aliases, json_pack("{s:s,s:s,s:s}", "provider", a->provider,
                                                     "name", a->name, "alias", a->target->name));
    }
    return print_json(cx, json_pack("{s:o,s:o}", "models", models, "aliases", aliases), 15);
}

static void fmt_params(char *buf, size_t cap, dsc_range r) {
    if (r.min == r.max)
        snprintf(buf, cap, "%g", r.min);
    else
        snprintf(buf, cap, "%g-%g", r.min, r.max);
}

static void models_print_human(const dsc_catalog *cat, const char *provider) {
    int wp = 8, wn = 5;
    for (size_t i = 0; i < dsc_catalog_model_count(cat); i++) {
        const dsc_model *m = dsc_catalog_model_at(cat, i);
        if (provider && strcmp(m->provider, provider) != 0) continue;
        if ((int)strlen(m->provider) > wp) wp = (int)strlen(m->provider);
        if ((int)strlen(m->name) > wn) wn = (int)strlen(m->name);
    }
    printf("%-*s  %-*s  %-5s  %10s  %10s  %6s  %7s\n", wp, "PROVIDER", wn, "MODEL", "ARCH",
           "ACTIVE(B)", "TOTAL(B)", "TPS", "TTFT(s)");
    for (size_t i = 0; i < dsc_catalog_model_count(cat); i++) {
        const dsc_model *m = dsc_catalog_model_at(cat, i);
        if (provider && strcmp(m->provider, provider) != 0) continue;
        char act[32], tot[32], tps[16] = "-", ttft[16] = "-";
        fmt_params(act, sizeof act, m->active_params_b);
        fmt_params(tot, sizeof tot, m->total_params_b);
        if (m->tps > 0) snprintf(tps, sizeof tps, "%g", m->tps);
        if (m->ttft_s > 0) snprintf(ttft, sizeof ttft, "%g", m->ttft_s);
        printf("%-*s  %-*s  %-5s  %10s  %10s  %6s  %7s\n", wp, m->provider, wn, m->name,
               m->arch == DSC_ARCH_MOE ? "moe" : "dense", act, tot, tps, ttft);
    }
    int header = 0;
    for (size_t i = 0; i < dsc_catalog_alias_count(cat); i++) {
        const dsc_alias *a = dsc_catalog_alias_at(cat, i);
        if (provider && strcmp(a->provider, provider) != 0) continue;
        if (!header++) puts("\naliases:");
        printf("  %s/%s -> %s\n", a->provider, a->name, a->target->name);
    }
}

int cli_models(cli_ctx *cx, int argc, char **argv) {
    const char *provider = NULL;
    const cli_flag flags[] = {{.name = "--provider", .value = &provider}};
    int rc = cli_parse_flags(cx, argc, argv, flags, 1, NULL);
    if (rc != CLI_EXIT_OK) return rc;
    if (cx->help) return fputs(models_help, stdout), CLI_EXIT_OK;
    dsc_catalog *cat = open_catalog(cx);
    if (!cat) return CLI_EXIT_FAIL;
    if (provider && !provider_known(cat, provider))
        rc = unknown_provider(cx, cat, provider);
    else if (cx->json)
        rc = models_print_json(cx, cat, provider);
    else
        models_print_human(cat, provider);
    dsc_catalog_free(cat);
    return rc;
}

/* ---- zones ---- */

static const char zones_help[] =
    "usage: discern zones [--json] [--data DIR]\n"
    "\n"
    "The electricity mixes known (annual country averages; WOR = world): carbon\n"
    "intensity, primary energy, abiotic resource depletion and off-site water per kWh,\n"
    "and which providers use each zone by default.\n"
    "\n"
    "options:\n"
    "  --json       print {\"zones\": [...]} with the factors in kg, MJ, kgSbeq and L per kWh\n"
    "  --data DIR   catalogue directory\n";

static int zones_print_json(const cli_ctx *cx, const dsc_catalog *cat) {
    json_t *zones = json_array();
    for (size_t i = 0; i < dsc_catalog_zone_count(cat); i++) {
        const dsc_zone *z = dsc_catalog_zone_at(cat, i);
        json_array_append_new(
            zones, json_pack("{s:s,s:f,s:f,s:f,s:f}", "name", z->name, "gwp_kgco2eq_per_kwh",
                             z->gwp_kgco2eq_per_kwh, "adpe_kgsbeq_per_kwh", z->adpe_kgsbeq_per_kwh,
                             "pe_mj_per_kwh", z->pe_mj_per_kwh, "wue_l_per_kwh", z->wue_l_per_kwh));
    }
    return print_json(cx, json_pack("{s:o}", "zones", zones), 15);
}

static void zones_print_human(const dsc_catalog *cat) {
    printf("%-5s  %14s  %10s  %16s  %10s  %s\n", "ZONE", "GWP(gCO2e/kWh)", "PE(MJ/kWh)",
           "ADPE(kgSbeq/kWh)", "WUE(L/kWh)", "DEFAULT FOR");
    for (size_t i = 0; i < dsc_catalog_zone_count(cat); i++) {
        const dsc_zone *z = dsc_catalog_zone_at(cat, i);
        printf("%-5s  %14.4g  %10.4g  %16.4g  %10.4g  ", z->name, z->gwp_kgco2eq_per_kwh * 1e3,
               z->pe_mj_per_kwh, z->adpe_kgsbeq_per_kwh, z->wue_l_per_kwh);
        int n = 0;
        for (size_t k = 0; k < dsc_catalog_provider_count(cat); k++) {
            const dsc_provider *p = dsc_catalog_provider_at(cat, k);
            if (strcmp(p->zone, z->name) == 0) printf("%s%s", n++ ? ", " : "", p->name);
        }
        putchar('\n');
    }
}

int cli_zones(cli_ctx *cx, int argc, char **argv) {
    int rc = cli_parse_flags(cx, argc, argv, NULL, 0, NULL);
    if (rc != CLI_EXIT_OK) return rc;
    if (cx->help) return fputs(zones_help, stdout), CLI_EXIT_OK;
    dsc_catalog *cat = open_catalog(cx);
    if (!cat) return CLI_EXIT_FAIL;
    if (cx->json)
        rc = zones_print_json(cx, cat);
    else
        zones_print_human(cat);
    dsc_catalog_free(cat);
    return rc;
}
