/*
 * estimate.h - the footprint of one AI request, as a range.
 *
 * Given a catalogue (catalog.h) and a request (provider, model, tokens, optional
 * measured latency and zone), computes energy, GWP, ADPe, primary energy and water,
 * each a {min, max} range, split into usage and embodied, with the zone and
 * warnings that explain it. Method DSC_METHOD_ECOLOGITS reproduces EcoLogits
 * (main-branch constants) exactly; see docs/methodology.md.
 *
 *   dsc_estimate_input in = {.provider = "openai", .model = "gpt-4o", .output_tokens = 500};
 *   dsc_estimate est;
 *   if (dsc_estimate_compute(cat, &in, &est, &err) != DSC_OK) ... err.message ...
 *
 * The estimate allocates nothing and is safe to call from many threads at once on
 * one catalogue.
 */
#ifndef DISCERN_ESTIMATE_H
#define DISCERN_ESTIMATE_H

#include "discern/export.h"

#include "discern/status.h"

#include <stdint.h>

DSC_API_BEGIN

typedef struct dsc_catalog dsc_catalog;

typedef struct dsc_range {
    double min, max;
} dsc_range;

/* Units: kWh, kgCO2eq, kgSbeq, MJ, L (as EcoLogits). */
typedef struct dsc_impacts {
    dsc_range energy_kwh;
    dsc_range gwp_kgco2eq;
    dsc_range adpe_kgsbeq;
    dsc_range pe_mj;
    dsc_range wcf_l;
} dsc_impacts;

typedef enum dsc_method {
    DSC_METHOD_ECOLOGITS = 0, /* EcoLogits main @ 5be90da, the default */
    DSC_METHOD_COUNT
} dsc_method;

/* Warning bits carried with an estimate (never used in the math). */
#define DSC_WARN_ARCH_NOT_RELEASED (1u << 0) /* "model-arch-not-released" */
#define DSC_WARN_ARCH_MULTIMODAL (1u << 1)   /* "model-arch-multimodal" */

typedef struct dsc_estimate_input {
    const char *provider;  /* required: "openai" */
    const char *model;     /* required: a model name or alias of that provider */
    int64_t input_tokens;  /* >= 0; ignored by the ecologits method */
    int64_t output_tokens; /* >= 0 */
    double latency_s;      /* measured request latency; <= 0 means not measured */
    const char *zone;      /* ISO 3166-1 alpha-3 or "WOR"; NULL or "" = provider default */
    dsc_method method;
} dsc_estimate_input;

/* What one run of the formulas saw at one parameter bound (for audits and tests). */
typedef struct dsc_estimate_bound {
    double active_params_b, total_params_b;
    int gpu_count;
    double latency_s;              /* generation latency used, after the measured cap */
    double gpu_energy_kwh_per_gpu;
    double server_energy_kwh;
    double it_energy_kwh;
} dsc_estimate_bound;

typedef struct dsc_estimate {
    dsc_impacts total;    /* energy and water are usage only */
    dsc_impacts usage;
    dsc_impacts embodied; /* energy_kwh and wcf_l are zero */
    char zone[8];         /* the zone whose mix was used */
    unsigned warnings;    /* DSC_WARN_* */
    dsc_method method;
    dsc_estimate_bound bound[2]; /* [0] = min run, [1] = max run */
} dsc_estimate;

/* Compute the footprint of in into out. Returns DSC_OK, or DSC_BAD_REQUEST /
 * DSC_UNKNOWN_PROVIDER / DSC_UNKNOWN_MODEL / DSC_UNKNOWN_ZONE with err naming the
 * field and value (out is then zeroed). Allocates nothing. */
dsc_status dsc_estimate_compute(const dsc_catalog *cat, const dsc_estimate_input *in,
                                dsc_estimate *out, dsc_error *err);

/* The wire name of a method ("ecologits"); NULL for an out-of-range value. */
const char *dsc_method_name(dsc_method m);
/* Parse a method name; returns DSC_BAD_REQUEST for an unknown one. */
dsc_status dsc_method_parse(const char *name, dsc_method *out);
/* Write the warning codes of bits into names (at most max); returns how many. */
int dsc_estimate_warning_names(unsigned bits, const char **names, int max);

DSC_API_END

#endif
