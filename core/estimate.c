/*
 * estimate.c - the footprint of one request: methods "ecologits" and "discern".
 *
 * Why: this is the number every policy decision rests on, so the ecologits method
 * reproduces the EcoLogits methodology (mlco2/ecologits @ 5be90da, package string 0.9.3) exactly,
 * checked against reference vectors to 1e-9 relative error (tests/core/test_estimate.c).
 * docs/methodology.md explains the formulas in prose; the constants are all in
 * ECOLOGITS_MAIN below.
 *
 * Shape of the computation (per request):
 *   validate the input -> resolve provider, model (or alias) and zone ->
 *   run the formulas twice: bound 0 at (active.min, total.min) with PUE.min/WUE.min,
 *   bound 1 at (active.max, total.max) with PUE.max/WUE.max -> min = bound 0, max =
 *   bound 1 for every output ("paired" ranges, as EcoLogits' RangeValue does).
 * The discern method (second half of this file) keeps that shape with its own
 * formulas over serving.json: prefill and decode from the accelerator's FLOP/s and
 * bandwidth, a batch range, fallbacks for unknown models, live or market carbon,
 * on-site or total water, an optional lifecycle scope, images and embeddings.
 * No allocation; the catalogue is only read (and the grid, under its read lock).
 *
 * API: see discern/estimate.h.
 */
#include "discern/estimate.h"

#include "discern/catalog.h"
#include "discern/grid.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

/* Largest token count accepted (estimate.h). */
#define TOKENS_MAX DSC_ESTIMATE_TOKENS_MAX
/* Largest model size accepted, in billions, and largest image (a 10k x 10k canvas). */
#define PARAMS_MAX_B 1e6
#define IMAGE_PIXELS_MAX 100000000LL

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

const char *const dsc_method_names[DSC_METHOD_COUNT + 1] = {"ecologits", "discern", NULL};

static const char *const warning_names[] = {"model-arch-not-released", "model-arch-multimodal",
                                            "model-not-in-catalogue",  "model-fallback-class",
                                            "market-factor-unknown",   "lifecycle-class-value"};
#define WARNING_COUNT (sizeof warning_names / sizeof warning_names[0])

static const char *const scope_names[] = {"inference", "lifecycle", NULL};
static const char *const carbon_names[] = {"location", "market", NULL};
static const char *const water_names[] = {"onsite", "total", NULL};
static const char *const modality_names[] = {"text", "embedding", "image", NULL};

/* Each named choice: its NULL-terminated names (in enum order) and how an error lists them. */
static const struct {
    const char *const *names;
    const char *listed;
} choices[DSC_CHOICE_COUNT] = {
    [DSC_CHOICE_METHOD] = {dsc_method_names, "ecologits or discern"},
    [DSC_CHOICE_SCOPE] = {scope_names, "inference or lifecycle"},
    [DSC_CHOICE_CARBON] = {carbon_names, "location or market"},
    [DSC_CHOICE_WATER] = {water_names, "onsite or total"},
    [DSC_CHOICE_MODALITY] = {modality_names, "text, embedding or image"},
};

dsc_status dsc_estimate_choice_parse(dsc_choice kind, const char *text, int *out) {
    if ((unsigned)kind >= DSC_CHOICE_COUNT || !text) return DSC_BAD_REQUEST;
    const char *const *names = choices[kind].names;
    for (int i = 0; names[i]; i++)
        if (strcmp(text, names[i]) == 0) {
            if (out) *out = i;
            return DSC_OK;
        }
    return DSC_BAD_REQUEST;
}

const char *dsc_estimate_choice_names(dsc_choice kind) {
    return (unsigned)kind < DSC_CHOICE_COUNT ? choices[kind].listed : NULL;
}

const char *const *dsc_estimate_choice_list(dsc_choice kind) {
    return (unsigned)kind < DSC_CHOICE_COUNT ? choices[kind].names : NULL;
}

static const char *choice_name(dsc_choice kind, unsigned v) {
    const char *const *names = choices[kind].names;
    unsigned i = 0;
    while (names[i] && i < v)
        i++;
    return names[i];
}

/* The typed parsers: one call of dsc_estimate_choice_parse each. */
#define TYPED_CHOICE(type, kind, name_fn, parse_fn)                                                \
    const char *name_fn(type v) {                                                                  \
        return choice_name(kind, (unsigned)v);                                                     \
    }                                                                                              \
    dsc_status parse_fn(const char *name, type *out) {                                             \
        int v = 0;                                                                                 \
        dsc_status st = dsc_estimate_choice_parse(kind, name, &v);                                 \
        if (st == DSC_OK && out) *out = (type)v;                                                   \
        return st;                                                                                 \
    }
TYPED_CHOICE(dsc_method, DSC_CHOICE_METHOD, dsc_method_name, dsc_method_parse)
TYPED_CHOICE(dsc_scope, DSC_CHOICE_SCOPE, dsc_scope_name, dsc_scope_parse)
TYPED_CHOICE(dsc_carbon, DSC_CHOICE_CARBON, dsc_carbon_name, dsc_carbon_parse)
TYPED_CHOICE(dsc_water, DSC_CHOICE_WATER, dsc_water_name, dsc_water_parse)
TYPED_CHOICE(dsc_modality, DSC_CHOICE_MODALITY, dsc_modality_name, dsc_modality_parse)

int dsc_estimate_includes(const dsc_estimate *est, const char **names, int max) {
    const char *all[8];
    int n = 0;
    int discern = est->method == DSC_METHOD_DISCERN;
    dsc_modality mod = est->assumptions.modality;
    if (mod == DSC_MODALITY_IMAGE) all[n++] = "image-generation";
    if (discern && mod != DSC_MODALITY_IMAGE) all[n++] = "prefill";
    if (mod == DSC_MODALITY_TEXT) all[n++] = "decode";
    all[n++] = discern ? "host-and-idle" : "server";
    all[n++] = "embodied-hardware";
    all[n++] = "water-onsite";
    if (est->water == DSC_WATER_TOTAL) all[n++] = "water-electricity";
    if (est->scope == DSC_SCOPE_LIFECYCLE) {
        all[n++] = "training-amortised";
        all[n++] = "infrastructure";
    }
    int k = 0;
    for (; k < n && k < max; k++)
        names[k] = all[k];
    return k;
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

static dsc_status check_params(const char *field, double v, dsc_error *err) {
    if (!isfinite(v) || v < 0 || v > PARAMS_MAX_B)
        return dsc_error_set(err, DSC_BAD_REQUEST,
                             "field '%s' must be a number of billions in [0, %g], got %g", field,
                             PARAMS_MAX_B, v);
    return DSC_OK;
}

static dsc_status check_enums(const dsc_estimate_input *in, dsc_error *err) {
    if ((unsigned)in->scope > DSC_SCOPE_LIFECYCLE)
        return dsc_error_set(err, DSC_BAD_REQUEST, "field 'scope' has unknown value %d",
                             (int)in->scope);
    if ((unsigned)in->carbon > DSC_CARBON_MARKET)
        return dsc_error_set(err, DSC_BAD_REQUEST, "field 'carbon' has unknown value %d",
                             (int)in->carbon);
    if ((unsigned)in->water > DSC_WATER_TOTAL)
        return dsc_error_set(err, DSC_BAD_REQUEST, "field 'water' has unknown value %d",
                             (int)in->water);
    if ((unsigned)in->modality > DSC_MODALITY_IMAGE)
        return dsc_error_set(err, DSC_BAD_REQUEST, "field 'modality' has unknown value %d",
                             (int)in->modality);
    return DSC_OK;
}

/* The fields only the discern method reads (validated for both, so a request means
 * the same whichever method answers it). */
static dsc_status check_discern_input(const dsc_estimate_input *in, dsc_error *err) {
    dsc_status st = check_tokens("cached_input_tokens", in->cached_input_tokens, err);
    if (st == DSC_OK) st = check_tokens("reasoning_tokens", in->reasoning_tokens, err);
    if (st == DSC_OK) st = check_tokens("images", in->images, err);
    if (st == DSC_OK && in->cached_input_tokens > in->input_tokens)
        st = dsc_error_set(err, DSC_BAD_REQUEST,
                           "field 'cached_input_tokens' (%lld) is more than input_tokens (%lld)",
                           (long long)in->cached_input_tokens, (long long)in->input_tokens);
    if (st == DSC_OK && (in->image_pixels < 0 || in->image_pixels > IMAGE_PIXELS_MAX))
        st = dsc_error_set(err, DSC_BAD_REQUEST, "field 'image_size' must be 1 to %lld pixels",
                           (long long)IMAGE_PIXELS_MAX);
    if (st == DSC_OK) st = check_params("parameters_b", in->parameters_b, err);
    if (st == DSC_OK) st = check_params("active_parameters_b", in->active_parameters_b, err);
    if (st == DSC_OK) st = check_params("total_parameters_b", in->total_parameters_b, err);
    if (st == DSC_OK && in->active_parameters_b > 0 && in->total_parameters_b > 0 &&
        in->active_parameters_b > in->total_parameters_b)
        st = dsc_error_set(err, DSC_BAD_REQUEST,
                           "field 'active_parameters_b' (%g) is more than total_parameters_b (%g)",
                           in->active_parameters_b, in->total_parameters_b);
    if (st == DSC_OK) st = check_enums(in, err);
    return st;
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
    if (st == DSC_OK) st = check_discern_input(in, err);
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
    double wcf_e; /* lifecycle water (discern method); 0 otherwise */
} bound_impacts;

/* The smallest power of two >= needed (at least 1). */
static int gpu_pow2(double needed) {
    double gpus = 1;
    while (gpus < needed && gpus < (1 << 30))
        gpus *= 2;
    return (int)gpus;
}

/* GPUs needed to hold the weights: 2^ceil(log2(ceil(memory / GPU memory))). */
static int gpu_count(const method_constants *k, double total_params_b) {
    double memory_gb = k->memory_overhead * total_params_b * k->quantization_bits / 8;
    return gpu_pow2(ceil(memory_gb / k->gpu_memory_gb));
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
    o->wcf_e = 0;
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
    PAIR(out->embodied.wcf_l, wcf_e);
#undef PAIR
    out->total.energy_kwh = out->usage.energy_kwh;
    out->total.wcf_l = (dsc_range){lo->wcf_u + lo->wcf_e, hi->wcf_u + hi->wcf_e};
    out->total.gwp_kgco2eq = (dsc_range){lo->gwp_u + lo->gwp_e, hi->gwp_u + hi->gwp_e};
    out->total.adpe_kgsbeq = (dsc_range){lo->adpe_u + lo->adpe_e, hi->adpe_u + hi->adpe_e};
    out->total.pe_mj = (dsc_range){lo->pe_u + lo->pe_e, hi->pe_u + hi->pe_e};
}

/* ---- the ecologits method's answer context ---- */

static void ecologits_assumptions(const resolved *r, const dsc_estimate_input *in,
                                  dsc_estimate *out) {
    dsc_estimate_assumptions *a = &out->assumptions;
    out->scope = DSC_SCOPE_INFERENCE;
    out->carbon = DSC_CARBON_LOCATION;
    out->water = DSC_WATER_TOTAL; /* EcoLogits adds the water of electricity generation */
    a->accelerator = "H100";
    a->precision_bits = ECOLOGITS_MAIN.quantization_bits;
    a->batch = (dsc_range){ECOLOGITS_MAIN.batch_size, ECOLOGITS_MAIN.batch_size};
    a->active_params_b = r->model->active_params_b;
    a->total_params_b = r->model->total_params_b;
    a->params_source = "catalogue";
    a->zone_source = in->zone && *in->zone ? "request" : "provider";
    a->grid_source = "annual"; /* EcoLogits knows annual averages only */
    a->gco2e_per_kwh = r->zone->gwp_kgco2eq_per_kwh * 1000;
    a->pue = r->provider->pue;
}

static dsc_status compute_ecologits(const dsc_catalog *cat, const dsc_estimate_input *in,
                                    dsc_estimate *out, dsc_error *err) {
    resolved r;
    dsc_status st = resolve(cat, in, &r, err);
    if (st != DSC_OK) return st;
    bound_impacts lo, hi;
    run_bound(&ECOLOGITS_MAIN, &r, in, 0, &out->bound[0], &lo);
    run_bound(&ECOLOGITS_MAIN, &r, in, 1, &out->bound[1], &hi);
    fill(out, &lo, &hi);
    memcpy(out->zone, r.zone->name, sizeof out->zone);
    out->warnings = r.model->warnings;
    out->model = r.model;
    ecologits_assumptions(&r, in, out);
    return DSC_OK;
}

/* ---- the discern method ----
 *
 * Per bound (0 = min, 1 = max), with the accelerator a of the serving profile:
 *   prefill  J/token = 2 P_act 1e9 FLOP x a.power / (a.peak x MFU)
 *   decode   J/token = max(a.power / (a.bandwidth x eff) x bytes_step / B,  prefill J/token)
 *            bytes_step = min(P_tot, B x P_act) 1e9 x bits / 8   (weights read per step)
 *   tokens   prefill: input - cached + cached x cached_factor; decode: output + reasoning
 *   IT kWh   = accelerator J x host_overhead / 3.6e6; energy = PUE x IT
 *   embodied = accelerator-seconds (J / a.power) x (device + server / per_server) / life
 *   usage    = energy x factor (live or annual location, or the provider's market factor)
 *   water    = IT x WUE_onsite (+ PUE x WUE_offsite of the zone for total)
 *   lifecycle adds usage x multiplier + IT x per-kWh amortisation (serving.json)
 * The min bound takes the small model, the large batch, the small PUE/WUE; the max
 * bound the opposite. Embeddings are prefill only; images cost a per-image energy. */

typedef struct discern_ctx {
    const dsc_method_data *k;
    const dsc_provider *provider;
    const dsc_serving_provider *profile;
    const dsc_model *model; /* NULL when the catalogue lacks it */
    const dsc_lifecycle *lifecycle;
    const dsc_zone *zone;
    dsc_serving serving;
    dsc_range active_b, total_b;
    double gwp_factor; /* kgCO2eq/kWh applied to usage energy */
    dsc_modality modality;
} discern_ctx;

static dsc_status discern_provider(const dsc_catalog *cat, const dsc_estimate_input *in,
                                   discern_ctx *x, dsc_error *err) {
    x->k = dsc_catalog_method_data(cat);
    if (!x->k)
        return dsc_error_set(err, DSC_BAD_REQUEST,
                             "field 'method': 'discern' needs %s in the catalogue directory",
                             DSC_CATALOG_SERVING_FILE);
    x->provider = dsc_catalog_provider(cat, in->provider);
    if (!x->provider) return unknown_provider(cat, in->provider, err);
    x->profile = dsc_catalog_serving_provider(cat, in->provider);
    x->serving = x->profile->serving;
    return DSC_OK;
}

/* Apply a per-model override's serving fields (those it sets). */
static void apply_override(discern_ctx *x, const dsc_serving_model *o) {
    if (o->serving.accelerator) x->serving.accelerator = o->serving.accelerator;
    if (o->serving.precision_bits > 0) x->serving.precision_bits = o->serving.precision_bits;
    if (o->serving.batch.max > 0) x->serving.batch = o->serving.batch;
}

/* Size from the request: parameters_b (dense) or active/total (either alone stands for
 * both). Returns 0 when the request gives none. */
static int request_size(const dsc_estimate_input *in, discern_ctx *x) {
    double act = in->active_parameters_b, tot = in->total_parameters_b;
    if (in->parameters_b > 0) act = tot = in->parameters_b;
    if (act <= 0 && tot <= 0) return 0;
    if (act <= 0) act = tot;
    if (tot <= 0) tot = act;
    x->active_b = (dsc_range){act, act};
    x->total_b = (dsc_range){tot, tot};
    return 1;
}

/* The model's size, by precedence: request, catalogue, serving.json override, the
 * provider's fallback class (or the embedding class). */
static void discern_model(const dsc_catalog *cat, const dsc_estimate_input *in, discern_ctx *x,
                          dsc_estimate *out) {
    dsc_estimate_assumptions *a = &out->assumptions;
    x->model = dsc_catalog_model(cat, in->provider, in->model);
    const char *name = x->model ? x->model->name : in->model;
    const dsc_serving_model *o = dsc_catalog_serving_model(cat, in->provider, name);
    if (o) apply_override(x, o);
    if (x->model) out->warnings |= x->model->warnings;
    if (request_size(in, x)) {
        a->params_source = "request";
        if (!x->model) out->warnings |= DSC_WARN_MODEL_UNLISTED;
    } else if (x->model) {
        x->active_b = x->model->active_params_b;
        x->total_b = x->model->total_params_b;
        a->params_source = "catalogue";
    } else if (o && o->active_b.max > 0) {
        x->active_b = o->active_b;
        x->total_b = o->total_b;
        a->params_source = "override";
        out->warnings |= DSC_WARN_MODEL_UNLISTED;
    } else {
        int emb = x->modality == DSC_MODALITY_EMBEDDING;
        x->active_b = emb ? x->k->embedding_active_b : x->profile->fallback_active_b;
        x->total_b = emb ? x->k->embedding_active_b : x->profile->fallback_total_b;
        a->params_source = "fallback-class";
        out->warnings |= DSC_WARN_MODEL_UNLISTED | DSC_WARN_FALLBACK_CLASS;
    }
}

/* The carbon factor: market (provider's, when published), else the live value of the
 * zone while valid, else its annual average. */
static void discern_carbon(const dsc_estimate_input *in, discern_ctx *x, dsc_estimate *out) {
    dsc_estimate_assumptions *a = &out->assumptions;
    x->gwp_factor = x->zone->gwp_kgco2eq_per_kwh;
    a->grid_source = "annual";
    if (in->carbon == DSC_CARBON_MARKET) {
        if (x->profile->market_gwp_kgco2eq_per_kwh >= 0) {
            x->gwp_factor = x->profile->market_gwp_kgco2eq_per_kwh;
            a->grid_source = "market";
        } else {
            out->warnings |= DSC_WARN_MARKET_UNKNOWN;
        }
    }
    double live = 0;
    if (strcmp(a->grid_source, "annual") == 0 &&
        dsc_grid_get(in->grid, x->zone->name, in->now, &live) == DSC_GRID_LIVE) {
        x->gwp_factor = live / 1000;
        a->grid_source = "live";
    }
    a->gco2e_per_kwh = x->gwp_factor * 1000;
}

static dsc_status discern_resolve(const dsc_catalog *cat, const dsc_estimate_input *in,
                                  discern_ctx *x, dsc_estimate *out, dsc_error *err) {
    dsc_status st = discern_provider(cat, in, x, err);
    if (st != DSC_OK) return st;
    x->modality = in->images > 0 ? DSC_MODALITY_IMAGE : in->modality;
    discern_model(cat, in, x, out);
    const char *zone = (in->zone && *in->zone) ? in->zone : x->provider->zone;
    x->zone = dsc_catalog_zone(cat, zone);
    if (!x->zone) return unknown_zone(cat, zone, err);
    discern_carbon(in, x, out);
    if (in->scope == DSC_SCOPE_LIFECYCLE) {
        x->lifecycle =
            dsc_catalog_lifecycle(cat, in->provider, x->model ? x->model->name : in->model);
        if (!x->lifecycle->per_model) out->warnings |= DSC_WARN_LIFECYCLE_CLASS;
    }
    return DSC_OK;
}

/* Accelerator energy of generating the images, in J (a per-image measurement scaled by
 * pixels: the model size plays no part). */
static double image_j(const discern_ctx *x, const dsc_estimate_input *in, int hi) {
    double ref = x->k->image_reference_pixels;
    double pixels = in->image_pixels > 0 ? (double)in->image_pixels : ref;
    double wh = hi ? x->k->image_wh.max : x->k->image_wh.min;
    return (double)in->images * wh * 3600 * pixels / ref;
}

/* Accelerator energy of the tokens, in J: prefill (cached tokens discounted), then
 * decode bounded below by its FLOPs. */
static double tokens_j(const discern_ctx *x, const dsc_estimate_input *in, int hi,
                       const dsc_estimate_bound *b) {
    const dsc_accelerator *acc = x->serving.accelerator;
    double batch = hi ? x->serving.batch.min : x->serving.batch.max;
    double prefill_j =
        2 * b->active_params_b * 1e9 * acc->power_w / (acc->peak_flops * x->k->prefill_mfu);
    double cached = (double)in->cached_input_tokens;
    double prefill_tokens = (double)in->input_tokens - cached + cached * x->k->cached_input_factor;
    if (x->modality == DSC_MODALITY_EMBEDDING) return prefill_tokens * prefill_j;
    double step_bytes =
        fmin(b->total_params_b, batch * b->active_params_b) * 1e9 * x->serving.precision_bits / 8;
    double memory_j =
        acc->power_w / (acc->bandwidth_bytes_s * x->k->bandwidth_efficiency) * step_bytes / batch;
    double decode_tokens = (double)(in->output_tokens + in->reasoning_tokens);
    return prefill_tokens * prefill_j + decode_tokens * fmax(memory_j, prefill_j);
}

/* Accelerator energy of the request at one bound, in J; b gets the size and devices. */
static double discern_accelerator_j(const discern_ctx *x, const dsc_estimate_input *in, int hi,
                                    dsc_estimate_bound *b) {
    b->active_params_b = hi ? x->active_b.max : x->active_b.min;
    b->total_params_b = hi ? x->total_b.max : x->total_b.min;
    if (x->modality == DSC_MODALITY_IMAGE) {
        b->gpu_count = 1;
        return image_j(x, in, hi);
    }
    double memory_gb = 1.2 * b->total_params_b * x->serving.precision_bits / 8;
    b->gpu_count = gpu_pow2(ceil(memory_gb / x->serving.accelerator->memory_gb));
    return tokens_j(x, in, hi, b);
}

static void discern_lifecycle(const discern_ctx *x, int hi, double it_kwh, bound_impacts *o) {
    const dsc_lifecycle *l = x->lifecycle;
    double m = hi ? l->usage_multiplier.max : l->usage_multiplier.min;
    o->gwp_e += o->gwp_u * m + it_kwh * l->per_kwh_it_gwp;
    o->adpe_e += o->adpe_u * m + it_kwh * l->per_kwh_it_adpe;
    o->pe_e += o->pe_u * m + it_kwh * l->per_kwh_it_pe;
    o->wcf_e = o->wcf_u * m + it_kwh * l->per_kwh_it_wcf;
}

static void discern_bound(const discern_ctx *x, const dsc_estimate_input *in, int hi,
                          dsc_estimate_bound *b, bound_impacts *o) {
    const dsc_accelerator *acc = x->serving.accelerator;
    double pue = hi ? x->provider->pue.max : x->provider->pue.min;
    double wue_on = hi ? x->provider->wue_l_per_kwh.max : x->provider->wue_l_per_kwh.min;
    double acc_j = discern_accelerator_j(x, in, hi, b);
    b->latency_s = acc_j / acc->power_w; /* accelerator-seconds */
    b->gpu_energy_kwh_per_gpu = acc_j / 3.6e6 / b->gpu_count;
    b->it_energy_kwh = acc_j * x->k->host_overhead / 3.6e6;
    b->server_energy_kwh = b->it_energy_kwh - acc_j / 3.6e6;
    o->energy = pue * b->it_energy_kwh;
    o->gwp_u = o->energy * x->gwp_factor;
    o->adpe_u = o->energy * x->zone->adpe_kgsbeq_per_kwh;
    o->pe_u = o->energy * x->zone->pe_mj_per_kwh;
    o->wcf_u = b->it_energy_kwh *
               (wue_on + (in->water == DSC_WATER_TOTAL ? pue * x->zone->wue_l_per_kwh : 0));
    double share = b->latency_s / x->k->lifetime_s;
    o->gwp_e = share *
               (acc->embodied[DSC_CRIT_GWP] + acc->server_embodied[DSC_CRIT_GWP] / acc->per_server);
    o->adpe_e = share * (acc->embodied[DSC_CRIT_ADPE] +
                         acc->server_embodied[DSC_CRIT_ADPE] / acc->per_server);
    o->pe_e =
        share * (acc->embodied[DSC_CRIT_PE] + acc->server_embodied[DSC_CRIT_PE] / acc->per_server);
    o->wcf_e = 0;
    if (x->lifecycle) discern_lifecycle(x, hi, b->it_energy_kwh, o);
}

static void discern_assumptions(const discern_ctx *x, const dsc_estimate_input *in,
                                dsc_estimate *out) {
    dsc_estimate_assumptions *a = &out->assumptions;
    out->scope = in->scope;
    out->carbon = strcmp(a->grid_source, "market") == 0 ? DSC_CARBON_MARKET : DSC_CARBON_LOCATION;
    out->water = in->water;
    a->accelerator = x->serving.accelerator->name;
    a->precision_bits = x->serving.precision_bits;
    a->batch = x->serving.batch;
    a->active_params_b = x->active_b;
    a->total_params_b = x->total_b;
    a->zone_source = in->zone && *in->zone ? "request" : "provider";
    a->pue = x->provider->pue;
    a->lifecycle_source = x->lifecycle ? x->lifecycle->source : NULL;
    a->modality = x->modality;
}

static dsc_status compute_discern(const dsc_catalog *cat, const dsc_estimate_input *in,
                                  dsc_estimate *out, dsc_error *err) {
    discern_ctx x;
    memset(&x, 0, sizeof x);
    dsc_status st = discern_resolve(cat, in, &x, out, err);
    if (st != DSC_OK) return st;
    bound_impacts lo, hi;
    discern_bound(&x, in, 0, &out->bound[0], &lo);
    discern_bound(&x, in, 1, &out->bound[1], &hi);
    fill(out, &lo, &hi);
    memcpy(out->zone, x.zone->name, sizeof out->zone);
    out->model = x.model;
    discern_assumptions(&x, in, out);
    return DSC_OK;
}

dsc_status dsc_estimate_compute(const dsc_catalog *cat, const dsc_estimate_input *in,
                                dsc_estimate *out, dsc_error *err) {
    if (!out) return dsc_error_set(err, DSC_BAD_REQUEST, "no estimate to write into");
    memset(out, 0, sizeof *out);
    if (!cat) return dsc_error_set(err, DSC_INTERNAL, "no catalogue loaded");
    dsc_status st = check_input(in, err);
    if (st != DSC_OK) return st;
    st = in->method == DSC_METHOD_DISCERN ? compute_discern(cat, in, out, err)
                                          : compute_ecologits(cat, in, out, err);
    if (st != DSC_OK) {
        memset(out, 0, sizeof *out);
        return st;
    }
    out->method = in->method;
    return DSC_OK;
}
