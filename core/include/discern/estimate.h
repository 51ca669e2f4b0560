/*
 * estimate.h - the footprint of one AI request, as a range.
 *
 * Given a catalogue (catalog.h) and a request (provider, model, tokens, optional
 * measured latency and zone), computes energy, GWP, ADPe, primary energy and water,
 * each a {min, max} range, split into usage and embodied, with the zone and
 * warnings that explain it. Method DSC_METHOD_ECOLOGITS reproduces EcoLogits
 * (main-branch constants) exactly; DSC_METHOD_DISCERN adds prefill, cached and
 * reasoning tokens, serving assumptions as data (serving.json), estimates for
 * unknown models, live grid values, market carbon, total water, a lifecycle scope,
 * images and embeddings. Every answer states its scope and assumptions; see
 * docs/methodology.md.
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
typedef struct dsc_grid dsc_grid;

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
    DSC_METHOD_DISCERN = 1,   /* prefill, serving data, scopes (docs/methodology.md) */
    DSC_METHOD_COUNT
} dsc_method;

/* What an answer includes. The ecologits method is always inference, location, total
 * water (on-site plus electricity generation, as EcoLogits computes it). */
typedef enum dsc_scope { DSC_SCOPE_INFERENCE = 0, DSC_SCOPE_LIFECYCLE = 1 } dsc_scope;
typedef enum dsc_carbon { DSC_CARBON_LOCATION = 0, DSC_CARBON_MARKET = 1 } dsc_carbon;
typedef enum dsc_water { DSC_WATER_ONSITE = 0, DSC_WATER_TOTAL = 1 } dsc_water;
typedef enum dsc_modality {
    DSC_MODALITY_TEXT = 0,
    DSC_MODALITY_EMBEDDING = 1, /* input tokens only */
    DSC_MODALITY_IMAGE = 2      /* images generated */
} dsc_modality;

/* Warning bits carried with an estimate (never used in the math). */
/* The largest token count of any kind one request may state (input, output, cached,
 * reasoning): a billion tokens is no single request. discernd takes the same cap on
 * the wire (docs/protocol.md, "Limits"). */
#define DSC_ESTIMATE_TOKENS_MAX 1000000000LL

#define DSC_WARN_ARCH_NOT_RELEASED (1u << 0) /* "model-arch-not-released" */
#define DSC_WARN_ARCH_MULTIMODAL (1u << 1)   /* "model-arch-multimodal" */
#define DSC_WARN_MODEL_UNLISTED (1u << 2)    /* "model-not-in-catalogue" */
#define DSC_WARN_FALLBACK_CLASS (1u << 3)    /* "model-fallback-class": widest range */
#define DSC_WARN_MARKET_UNKNOWN (1u << 4)    /* "market-factor-unknown": location used */
#define DSC_WARN_LIFECYCLE_CLASS (1u << 5)   /* "lifecycle-class-value" */

typedef struct dsc_estimate_input {
    const char *provider;  /* required: "openai" */
    const char *model;     /* required: a model name or alias of that provider */
    int64_t input_tokens;  /* >= 0; ignored by the ecologits method */
    int64_t output_tokens; /* >= 0 */
    double latency_s;      /* measured request latency; <= 0 means not measured */
    const char *zone;      /* ISO 3166-1 alpha-3 or "WOR"; NULL or "" = provider default */
    dsc_method method;
    /* The rest is read by the discern method only (zero = not given). */
    int64_t cached_input_tokens; /* part of input_tokens served from a prompt cache */
    int64_t reasoning_tokens;    /* hidden tokens generated besides output_tokens */
    int64_t images;              /* images generated (modality image) */
    int64_t image_pixels;        /* pixels per image; 0 = the reference 1024x1024 */
    dsc_modality modality;       /* images > 0 implies DSC_MODALITY_IMAGE */
    double parameters_b;         /* dense size of a model, billions (overrides) */
    double active_parameters_b, total_parameters_b; /* MoE size, billions */
    dsc_scope scope;
    dsc_carbon carbon;
    dsc_water water;
    dsc_grid *grid; /* live intensities (location carbon); NULL = annual only */
    int64_t now;    /* unix seconds, to judge a live value's validity */
} dsc_estimate_input;

/* What one run of the formulas saw at one parameter bound (for audits and tests). */
typedef struct dsc_estimate_bound {
    double active_params_b, total_params_b;
    int gpu_count;
    double latency_s; /* generation latency used, after the measured cap */
    double gpu_energy_kwh_per_gpu;
    double server_energy_kwh;
    double it_energy_kwh;
} dsc_estimate_bound;

/* Where a number came from, for the answer's "assumptions". Strings are static or
 * live as long as the catalogue. */
typedef struct dsc_estimate_assumptions {
    const char *accelerator; /* "H100" */
    double precision_bits;
    dsc_range batch; /* requests per decode step: [1] at min, [0] at max */
    dsc_range active_params_b, total_params_b;
    const char *params_source; /* "catalogue", "override", "request", "fallback-class" */
    const char *zone_source;   /* "request" or "provider" */
    const char *grid_source;   /* "annual", "live" or "market" */
    double gco2e_per_kwh;      /* carbon factor applied to usage energy */
    dsc_range pue;
    const char *lifecycle_source; /* NULL unless scope is lifecycle */
    dsc_modality modality;
} dsc_estimate_assumptions;

typedef struct dsc_estimate {
    dsc_impacts total; /* energy and water are usage only (lifecycle adds water) */
    dsc_impacts usage;
    dsc_impacts embodied; /* energy_kwh and wcf_l are zero */
    char zone[8];         /* the zone whose mix was used */
    unsigned warnings;    /* DSC_WARN_* */
    dsc_method method;
    dsc_scope scope;
    dsc_carbon carbon;
    dsc_water water;
    dsc_estimate_assumptions assumptions;
    dsc_estimate_bound bound[2]; /* [0] = min run, [1] = max run */
    /* The catalogue's record of the model (an alias's target), NULL when the catalogue
     * does not list it (the discern method's fallback); lives as long as the catalogue. */
    const struct dsc_model *model;
} dsc_estimate;

/* Compute the footprint of in into out. Returns DSC_OK, or DSC_BAD_REQUEST /
 * DSC_UNKNOWN_PROVIDER / DSC_UNKNOWN_MODEL / DSC_UNKNOWN_ZONE with err naming the
 * field and value (out is then zeroed). The discern method never answers
 * DSC_UNKNOWN_MODEL (it falls back, with a warning) and needs serving.json. */
dsc_status dsc_estimate_compute(const dsc_catalog *cat, const dsc_estimate_input *in,
                                dsc_estimate *out, dsc_error *err);

/* The wire name of a method ("ecologits"); NULL for an out-of-range value. */
const char *dsc_method_name(dsc_method m);
/* Parse a method name; returns DSC_BAD_REQUEST for an unknown one. */
dsc_status dsc_method_parse(const char *name, dsc_method *out);
/* Wire names of the scope enums ("inference", "location", "onsite", ...) and their
 * parsers (DSC_BAD_REQUEST for an unknown name). */
const char *dsc_scope_name(dsc_scope s);
const char *dsc_carbon_name(dsc_carbon c);
const char *dsc_water_name(dsc_water w);
const char *dsc_modality_name(dsc_modality m); /* "text", "embedding", "image" */
dsc_status dsc_modality_parse(const char *name, dsc_modality *out);
dsc_status dsc_scope_parse(const char *name, dsc_scope *out);
dsc_status dsc_carbon_parse(const char *name, dsc_carbon *out);
dsc_status dsc_water_parse(const char *name, dsc_water *out);
/* The named choices of an estimate, for one parser and one list of names. */
typedef enum dsc_choice {
    DSC_CHOICE_METHOD,   /* dsc_method */
    DSC_CHOICE_SCOPE,    /* dsc_scope */
    DSC_CHOICE_CARBON,   /* dsc_carbon */
    DSC_CHOICE_WATER,    /* dsc_water */
    DSC_CHOICE_MODALITY, /* dsc_modality */
    DSC_CHOICE_COUNT
} dsc_choice;
/* Parse text as a name of kind into *out (the enum value; out may be NULL);
 * DSC_BAD_REQUEST for NULL, an unknown name or an unknown kind. */
dsc_status dsc_estimate_choice_parse(dsc_choice kind, const char *text, int *out);
/* The names of kind as an error lists them ("inference or lifecycle"); NULL for an
 * unknown kind. */
const char *dsc_estimate_choice_names(dsc_choice kind);
/* The names of kind in enum order, NULL-terminated; NULL for an unknown kind. */
const char *const *dsc_estimate_choice_list(dsc_choice kind);
/* The method names, NULL-terminated, for tables that need a constant. */
extern const char *const dsc_method_names[DSC_METHOD_COUNT + 1];
/* What est includes, as stable names ("prefill", "decode", "host-and-idle",
 * "embodied-hardware", "water-onsite", "water-electricity", "training-amortised",
 * "infrastructure"), written to names (at most max); returns how many. */
int dsc_estimate_includes(const dsc_estimate *est, const char **names, int max);
/* Write the warning codes of bits into names (at most max); returns how many. */
int dsc_estimate_warning_names(unsigned bits, const char **names, int max);

DSC_API_END

#endif
