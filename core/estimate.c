/*
 * estimate.c - the footprint of one request, method "ecologits" (EcoLogits main).
 *
 * Why: this is the number every policy decision rests on, so it reproduces the
 * EcoLogits methodology (mlco2/ecologits @ 5be90da, package string 0.9.3) exactly,
 * checked against reference vectors to 1e-9 relative error (tests/core/test_estimate.c).
 * docs/methodology.md explains the formulas in prose; the constants are all in
 * ECOLOGITS_MAIN below.
 *
 * Shape of the computation (per request):
 *   validate the input -> resolve provider, model (or alias) and zone ->
 *   run the formulas twice: bound 0 at (active.min, total.min) with PUE.min/WUE.min,
 *   bound 1 at (active.max, total.max) with PUE.max/WUE.max -> min = bound 0, max =
 *   bound 1 for every output ("paired" ranges, as EcoLogits' RangeValue does).
 * No allocation; the catalogue is only read.
 *
 * API: see discern/estimate.h.
 */
#include "discern/estimate.h"

#include "discern/catalog.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

/* Largest token count accepted: a billion tokens in one request is not a request. */
#define TOKENS_MAX 1000000000LL

/* Every constant of the method, with units and sources (see docs/methodology.md). */
typedef struct method_constants {
    double quantization_bits;    /* Q: bits per weight */
    double memory_overhead;      /* x1.2 on weights (EleutherAI, Transformer Math 101) */
    double gpu_memory_gb;        /* H100 80GB */
    double gpu_energy_alpha;     /* Wh / token / B-param   (ML.ENERGY fit) */
    double gpu_energy_beta;      /* 1 / batch              (ML.ENERGY fit) */
    double gpu_energy_gamma;     /* Wh / token             (ML.ENERGY fit) */
    double latency_alpha;        /* s / token / B-param    (ML.ENERGY fit) */
    double latency_beta;         /* s / token / batch unit (ML.ENERGY fit) */
    double latency_gamma;        /* s / token              (ML.ENERGY fit) */
    double batch_size;           /* B: requests served together */
    double server_gpu_slots;     /* GPUs per server (AWS p5.48xlarge) */
    double server_power_kw;      /* server without GPUs, kW (BoaviztAPI) */
    double server_embodied_gwp;  /* kgCO2eq, server without GPUs (BoaviztAPI) */
    double server_embodied_adpe; /* kgSbeq */
    double server_embodied_pe;   /* MJ */
    double gpu_embodied_gwp;     /* kgCO2eq per GPU (NVIDIA HGX H100 PCF) */
    double gpu_embodied_adpe;    /* kgSbeq per GPU (Boavizta A100 value) */
    double gpu_embodied_pe;      /* MJ per GPU (Boavizta A100 value) */
    double hardware_lifetime_s;  /* 3 years */
} method_constants;

static const method_constants ECOLOGITS_MAIN = {
    .quantization_bits = 16,
    .memory_overhead = 1.2,
    .gpu_memory_gb = 80,
    .gpu_energy_alpha = 1.1665273170451914e-06,
    .gpu_energy_beta = -0.011205921025579175,
    .gpu_energy_gamma = 4.052928146734005e-05,
    .latency_alpha = 0.0006785088094353663,
    .latency_beta = 0.0003119310311688259,
    .latency_gamma = 0.019473717579473387,
    .batch_size = 64,
    .server_gpu_slots = 8,
    .server_power_kw = 1.2,
    .server_embodied_gwp = 5700,
    .server_embodied_adpe = 0.37,
    .server_embodied_pe = 70000,
    .gpu_embodied_gwp = 164,
    .gpu_embodied_adpe = 0.0051,
    .gpu_embodied_pe = 1828,
    .hardware_lifetime_s = 3.0 * 365 * 24 * 3600,
};

static const char *const method_names[DSC_METHOD_COUNT] = {"ecologits"};

static const char *const warning_names[] = {"model-arch-not-released", "model-arch-multimodal"};
#define WARNING_COUNT (sizeof warning_names / sizeof warning_names[0])

const char *dsc_method_name(dsc_method m) {
    return (unsigned)m < DSC_METHOD_COUNT ? method_names[m] : NULL;
}

dsc_status dsc_method_parse(const char *name, dsc_method *out) {
    for (int m = 0; name && m < DSC_METHOD_COUNT; m++)
        if (strcmp(name, method_names[m]) == 0) {
            if (out) *out = (dsc_method)m;
            return DSC_OK;
        }
    return DSC_BAD_REQUEST;
}

int dsc_estimate_warning_names(unsigned bits, const char **names, int max) {
    int n = 0;
    for (size_t i = 0; i < WARNING_COUNT && n < max; i++)
        if (bits & (1u << i)) names[n++] = warning_names[i];
    return n;
}

/* ---- input validation ---- */

static dsc_status check_tokens(const char *field, int64_t v, dsc_error *err) {
    if (v < 0)
        return dsc_error_set(err, DSC_BAD_REQUEST, "field '%s' must be >= 0, got %lld", field,
                             (long long)v);
    if (v > TOKENS_MAX)
        return dsc_error_set(err, DSC_BAD_REQUEST, "field '%s' is %lld, above the limit of %lld",
                             field, (long long)v, (long long)TOKENS_MAX);
    return DSC_OK;
}

static dsc_status check_input(const dsc_estimate_input *in, dsc_error *err) {
    if (!in) return dsc_error_set(err, DSC_BAD_REQUEST, "no request given");
    if ((unsigned)in->method >= DSC_METHOD_COUNT)
        return dsc_error_set(err, DSC_BAD_REQUEST, "field 'method' has unknown value %d",
                             (int)in->method);
    if (!in->provider || !*in->provider)
        return dsc_error_set(err, DSC_BAD_REQUEST, "field 'provider' is required");
    if (!in->model || !*in->model)
        return dsc_error_set(err, DSC_BAD_REQUEST, "field 'model' is required");
    dsc_status st = check_tokens("input_tokens", in->input_tokens, err);
    if (st == DSC_OK) st = check_tokens("output_tokens", in->output_tokens, err);
    if (st == DSC_OK && !isfinite(in->latency_s))
        st = dsc_error_set(err, DSC_BAD_REQUEST,
                           "field 'latency_s' must be a finite number of seconds, got %g",
                           in->latency_s);
    return st;
}

/* ---- resolution: provider, model, zone ---- */

typedef struct resolved {
    const dsc_provider *provider;
    const dsc_model *model;
    const dsc_zone *zone;
} resolved;

static dsc_status unknown_provider(const dsc_catalog *cat, const char *name, dsc_error *err) {
    size_t n = 0;
    if (dsc_catalog_provider_models(cat, name, &n))
        return dsc_error_set(err, DSC_UNKNOWN_PROVIDER,
                             "field 'provider': '%s' has models but no datacentre configuration "
                             "in %s",
                             name, DSC_CATALOG_PROVIDERS_FILE);
    const char *names[DSC_SUGGEST_MAX];
    char hint[160];
    n = dsc_catalog_suggest_providers(cat, name, names, DSC_SUGGEST_MAX);
    return dsc_error_set(err, DSC_UNKNOWN_PROVIDER, "field 'provider': unknown provider '%s'%s",
                         name, dsc_catalog_format_suggestions(names, n, hint, sizeof hint));
}

static dsc_status unknown_model(const dsc_catalog *cat, const dsc_estimate_input *in,
                                dsc_error *err) {
    const char *names[DSC_SUGGEST_MAX];
    char hint[160];
    size_t n = dsc_catalog_suggest_models(cat, in->provider, in->model, names, DSC_SUGGEST_MAX);
    return dsc_error_set(err, DSC_UNKNOWN_MODEL,
                         "field 'model': unknown model '%s' of provider '%s'%s", in->model,
                         in->provider, dsc_catalog_format_suggestions(names, n, hint, sizeof hint));
}

static dsc_status unknown_zone(const dsc_catalog *cat, const char *zone, dsc_error *err) {
    const char *names[DSC_SUGGEST_MAX];
    char hint[160];
    size_t n = dsc_catalog_suggest_zones(cat, zone, names, DSC_SUGGEST_MAX);
    return dsc_error_set(err, DSC_UNKNOWN_ZONE, "field 'zone': unknown zone '%s'%s", zone,
                         dsc_catalog_format_suggestions(names, n, hint, sizeof hint));
}

static dsc_status resolve(const dsc_catalog *cat, const dsc_estimate_input *in, resolved *r,
                          dsc_error *err) {
    r->provider = dsc_catalog_provider(cat, in->provider);
    if (!r->provider) return unknown_provider(cat, in->provider, err);
    r->model = dsc_catalog_model(cat, in->provider, in->model);
    if (!r->model) return unknown_model(cat, in, err);
    const char *zone = (in->zone && *in->zone) ? in->zone : r->provider->zone;
    r->zone = dsc_catalog_zone(cat, zone);
    if (!r->zone) return unknown_zone(cat, zone, err);
    return DSC_OK;
}

/* ---- the formulas, at one parameter bound ---- */

/* Usage and embodied values of one run; energy and water are usage only. */
typedef struct bound_impacts {
    double energy, gwp_u, adpe_u, pe_u, wcf_u, gwp_e, adpe_e, pe_e;
} bound_impacts;

/* GPUs needed to hold the weights: 2^ceil(log2(ceil(memory / GPU memory))). */
static int gpu_count(const method_constants *k, double total_params_b) {
    double memory_gb = k->memory_overhead * total_params_b * k->quantization_bits / 8;
    double needed = ceil(memory_gb / k->gpu_memory_gb);
    double gpus = 1;
    while (gpus < needed)
        gpus *= 2;
    return (int)gpus;
}

/* Generation latency in s, capped by the measured request latency (upper bound only). */
static double generation_latency(const method_constants *k, const dsc_model *m, double active_b,
                                 double n_out, double measured_s) {
    double modeled;
    if (m->tps > 0)
        modeled = n_out / m->tps + m->ttft_s;
    else
        modeled = n_out * (k->latency_alpha * active_b + k->latency_beta * k->batch_size +
                           k->latency_gamma) +
                  m->ttft_s;
    return (measured_s > 0 && measured_s < modeled) ? measured_s : modeled;
}

/* The energy side: GPU, server and IT energy of the run, into b. */
static void run_energy(const method_constants *k, double n_out, dsc_estimate_bound *b) {
    double gpu_wh_per_token =
        k->gpu_energy_alpha * exp(k->gpu_energy_beta * k->batch_size) * b->active_params_b +
        k->gpu_energy_gamma;
    b->gpu_energy_kwh_per_gpu = n_out * gpu_wh_per_token / 1000;
    b->server_energy_kwh = (b->latency_s / 3600) * k->server_power_kw *
                           (b->gpu_count / k->server_gpu_slots) / k->batch_size;
    b->it_energy_kwh = b->server_energy_kwh + b->gpu_count * b->gpu_energy_kwh_per_gpu;
}

/* Embodied impacts: the server's share (its GPUs' slots plus the GPUs), allocated by
 * generation time over the hardware lifetime, divided among the batch. */
static void run_embodied(const method_constants *k, const dsc_estimate_bound *b, bound_impacts *o) {
    double slots = b->gpu_count / k->server_gpu_slots;
    double share = b->latency_s / (k->hardware_lifetime_s * k->batch_size);
    o->gwp_e = share * (slots * k->server_embodied_gwp + b->gpu_count * k->gpu_embodied_gwp);
    o->adpe_e = share * (slots * k->server_embodied_adpe + b->gpu_count * k->gpu_embodied_adpe);
    o->pe_e = share * (slots * k->server_embodied_pe + b->gpu_count * k->gpu_embodied_pe);
}

static void run_bound(const method_constants *k, const resolved *r, const dsc_estimate_input *in,
                      int hi, dsc_estimate_bound *b, bound_impacts *o) {
    double n_out = (double)in->output_tokens;
    double pue = hi ? r->provider->pue.max : r->provider->pue.min;
    double wue_on = hi ? r->provider->wue_l_per_kwh.max : r->provider->wue_l_per_kwh.min;
    b->active_params_b = hi ? r->model->active_params_b.max : r->model->active_params_b.min;
    b->total_params_b = hi ? r->model->total_params_b.max : r->model->total_params_b.min;
    b->gpu_count = gpu_count(k, b->total_params_b);
    b->latency_s = generation_latency(k, r->model, b->active_params_b, n_out, in->latency_s);
    run_energy(k, n_out, b);
    o->energy = pue * b->it_energy_kwh;
    o->gwp_u = o->energy * r->zone->gwp_kgco2eq_per_kwh;
    o->adpe_u = o->energy * r->zone->adpe_kgsbeq_per_kwh;
    o->pe_u = o->energy * r->zone->pe_mj_per_kwh;
    /* Water on PUE-inclusive energy, as EcoLogits main does (0.11 uses IT energy). */
    o->wcf_u = o->energy * (wue_on + pue * r->zone->wue_l_per_kwh);
    run_embodied(k, b, o);
}

static void fill(dsc_estimate *out, const bound_impacts *lo, const bound_impacts *hi) {
#define PAIR(field, member) (field) = (dsc_range){lo->member, hi->member}
    PAIR(out->usage.energy_kwh, energy);
    PAIR(out->usage.gwp_kgco2eq, gwp_u);
    PAIR(out->usage.adpe_kgsbeq, adpe_u);
    PAIR(out->usage.pe_mj, pe_u);
    PAIR(out->usage.wcf_l, wcf_u);
    PAIR(out->embodied.gwp_kgco2eq, gwp_e);
    PAIR(out->embodied.adpe_kgsbeq, adpe_e);
    PAIR(out->embodied.pe_mj, pe_e);
#undef PAIR
    out->total.energy_kwh = out->usage.energy_kwh;
    out->total.wcf_l = out->usage.wcf_l;
    out->total.gwp_kgco2eq = (dsc_range){lo->gwp_u + lo->gwp_e, hi->gwp_u + hi->gwp_e};
    out->total.adpe_kgsbeq = (dsc_range){lo->adpe_u + lo->adpe_e, hi->adpe_u + hi->adpe_e};
    out->total.pe_mj = (dsc_range){lo->pe_u + lo->pe_e, hi->pe_u + hi->pe_e};
}

dsc_status dsc_estimate_compute(const dsc_catalog *cat, const dsc_estimate_input *in,
                                dsc_estimate *out, dsc_error *err) {
    if (!out) return dsc_error_set(err, DSC_BAD_REQUEST, "no estimate to write into");
    memset(out, 0, sizeof *out);
    if (!cat) return dsc_error_set(err, DSC_INTERNAL, "no catalogue loaded");
    dsc_status st = check_input(in, err);
    resolved r;
    if (st == DSC_OK) st = resolve(cat, in, &r, err);
    if (st != DSC_OK) return st;
    bound_impacts lo, hi;
    run_bound(&ECOLOGITS_MAIN, &r, in, 0, &out->bound[0], &lo);
    run_bound(&ECOLOGITS_MAIN, &r, in, 1, &out->bound[1], &hi);
    fill(out, &lo, &hi);
    memcpy(out->zone, r.zone->name, sizeof out->zone);
    out->warnings = r.model->warnings;
    out->method = in->method;
    return DSC_OK;
}
