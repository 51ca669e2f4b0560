/*
 * catalog.h - the model catalogue: models, aliases, providers and electricity mixes.
 *
 * Loaded once from a data directory holding EcoLogits-format files (see
 * core/data/README.md):
 *   models.json            {"aliases":[...], "models":[...]}  (EcoLogits format)
 *   electricity_mixes.csv  name,adpe,pe,gwp,wue              (EcoLogits format)
 *   providers.json         {"openai": {"datacenter_location", "datacenter_pue",
 *                           "datacenter_wue"}, ...}  (PUE/WUE a number or {min,max})
 *   prices.json            optional list prices: {"currency": "USD", "prices": [{"provider",
 *                          "model", "input", "output", "as_of", "source"}]} (per M tokens)
 *   serving.json           optional: the serving assumptions of the discern method
 *                          (accelerators, per-provider profiles, model overrides,
 *                          lifecycle, image and embedding classes; core/data/README.md)
 * After loading, the catalogue is read-only: every lookup is safe from many threads.
 *
 *   dsc_error err;
 *   dsc_catalog *cat = dsc_catalog_load("core/data", &err);   // NULL + err on failure
 *   const dsc_model *m = dsc_catalog_model(cat, "openai", "gpt-4o");  // alias-aware
 *   const dsc_zone *z = dsc_catalog_zone(cat, "FRA");
 *   const dsc_model *all = dsc_catalog_provider_models(cat, "openai", &n);  // what-ifs
 *   dsc_catalog_free(cat);
 *
 * Lookups go through open-addressing hash tables (O(1), no allocation). Unknown
 * names get close-match suggestions (case-insensitive edit distance) for messages.
 */
#ifndef DISCERN_CATALOG_H
#define DISCERN_CATALOG_H

#include "discern/export.h"

#include "discern/estimate.h"
#include "discern/status.h"

#include <stddef.h>
#include <stdint.h>

DSC_API_BEGIN

/* The file names a catalogue directory holds. */
#define DSC_CATALOG_MODELS_FILE "models.json"
#define DSC_CATALOG_MIXES_FILE "electricity_mixes.csv"
#define DSC_CATALOG_PROVIDERS_FILE "providers.json"
#define DSC_CATALOG_PRICES_FILE "prices.json"   /* optional */
#define DSC_CATALOG_SERVING_FILE "serving.json" /* optional: the discern method's data */

/* Longest zone code kept (ISO 3166-1 alpha-3 needs 3; the field holds up to 7). */
#define DSC_ZONE_MAX 8
/* How many suggestions the estimate's error messages carry. */
#define DSC_SUGGEST_MAX 3

typedef enum dsc_arch {
    DSC_ARCH_DENSE = 0, /* every parameter is active */
    DSC_ARCH_MOE = 1    /* mixture of experts: active < total */
} dsc_arch;

/* One model record. For a dense model active_params_b == total_params_b. A scalar
 * parameter count has min == max. */
typedef struct dsc_model {
    const char *provider; /* "openai" */
    const char *name;     /* "gpt-4o" */
    dsc_arch arch;
    dsc_range active_params_b; /* billions of parameters, > 0 */
    dsc_range total_params_b;  /* billions of parameters, > 0 */
    double tps;                /* measured tokens per second; 0 = unknown */
    double ttft_s;             /* measured time to first token, s; 0 = unknown */
    unsigned warnings;         /* DSC_WARN_* bits */
} dsc_model;

/* Another name for a model of the same provider. */
typedef struct dsc_alias {
    const char *provider;
    const char *name;        /* the alias: "claude-sonnet-4-5" */
    const dsc_model *target; /* the model it stands for */
} dsc_alias;

/* One electricity mix (annual country average). */
typedef struct dsc_zone {
    char name[DSC_ZONE_MAX];    /* "FRA", "WOR" */
    double gwp_kgco2eq_per_kwh; /* Our World in Data */
    double adpe_kgsbeq_per_kwh; /* ADEME Base Empreinte */
    double pe_mj_per_kwh;       /* ADEME Base Empreinte */
    double wue_l_per_kwh;       /* off-site water for generation (WRI) */
} dsc_zone;

/* A provider's datacentre assumptions. */
typedef struct dsc_provider {
    const char *name;
    char zone[DSC_ZONE_MAX]; /* default electricity-mix zone ("WOR" when not given) */
    dsc_range pue;           /* power usage effectiveness, >= 1 */
    dsc_range wue_l_per_kwh; /* on-site water usage effectiveness, L/kWh */
} dsc_provider;

/* The list price of a model, per million tokens, in the catalogue's currency. */
typedef struct dsc_price {
    const char *provider;
    const char *model;      /* the catalogue model priced (aliases share it) */
    double input_per_mtok;  /* price of one million input tokens */
    double output_per_mtok; /* price of one million output tokens */
    const char *as_of;      /* when the price was recorded: "2026-03" */
    const char *source;     /* where it was published */
} dsc_price;

/* ---- serving.json: the data of the discern method ---- */

/* One accelerator class: what a device holds, draws and costs to make. */
typedef struct dsc_accelerator {
    const char *name;          /* "H100" */
    double memory_gb;          /* HBM per device */
    double power_w;            /* board power while serving */
    double bandwidth_bytes_s;  /* peak HBM bandwidth */
    double peak_flops;         /* dense 16-bit FLOP/s */
    double per_server;         /* devices per server */
    double embodied[3];        /* per device: kgCO2eq, kgSbeq, MJ (DSC_CRIT_*) */
    double server_embodied[3]; /* per server without its devices */
} dsc_accelerator;

/* Index of the three embodied criteria. */
enum { DSC_CRIT_GWP = 0, DSC_CRIT_ADPE = 1, DSC_CRIT_PE = 2 };

/* How a provider (or one model) is served. */
typedef struct dsc_serving {
    const dsc_accelerator *accelerator;
    double precision_bits; /* bits per weight */
    dsc_range batch;       /* concurrent requests sharing a decode step */
} dsc_serving;

/* A provider's serving profile ("*" is the default of unlisted providers). */
typedef struct dsc_serving_provider {
    const char *name;
    dsc_serving serving;
    double market_gwp_kgco2eq_per_kwh; /* < 0: no market-based factor published */
    dsc_range fallback_active_b;       /* class of an unknown model of this provider */
    dsc_range fallback_total_b;
} dsc_serving_provider;

/* A per-model override: serving (fields with accelerator NULL / 0 keep the provider's)
 * and, for a model models.json lacks, its size (active_b.max == 0: not given). */
typedef struct dsc_serving_model {
    const char *provider, *model;
    dsc_serving serving;
    dsc_range active_b, total_b;
} dsc_serving_model;

/* What the lifecycle scope adds beyond inference: usage impacts x usage_multiplier
 * (training amortised, rest of the infrastructure) plus IT energy x per_kwh_it. */
typedef struct dsc_lifecycle {
    dsc_range usage_multiplier;
    double per_kwh_it_gwp, per_kwh_it_wcf, per_kwh_it_adpe, per_kwh_it_pe;
    const char *source;
    int per_model; /* 1: disclosed for this model; 0: the class value */
} dsc_lifecycle;

/* The constants of the discern method. */
typedef struct dsc_method_data {
    double bandwidth_efficiency; /* share of peak HBM bandwidth reached in decode */
    double prefill_mfu;          /* model FLOPs utilisation in prefill */
    double cached_input_factor;  /* cost of a cached input token / an uncached one */
    double host_overhead;        /* IT energy / accelerator energy (host, idle) */
    double lifetime_s;           /* hardware lifetime */
    dsc_range image_wh;          /* accelerator energy per reference image */
    double image_reference_pixels;
    dsc_range embedding_active_b; /* class of an unknown embedding model */
} dsc_method_data;

typedef struct dsc_catalog dsc_catalog;

/* Load the three files of dir. Returns a catalogue owned by the caller (free with
 * dsc_catalog_free), or NULL with err naming the file and the line (and column for
 * JSON) that failed: DSC_IO (missing/unreadable), DSC_PARSE (malformed), DSC_NOMEM. */
dsc_catalog *dsc_catalog_load(const char *dir, dsc_error *err);
/* Release cat and everything it owns; NULL is a no-op. */
void dsc_catalog_free(dsc_catalog *cat);

/* The model named name (or an alias of it) at provider; NULL when unknown. */
const dsc_model *dsc_catalog_model(const dsc_catalog *cat, const char *provider, const char *name);
/* The electricity mix of zone (case-insensitive: "fra" finds "FRA"); NULL when unknown. */
const dsc_zone *dsc_catalog_zone(const dsc_catalog *cat, const char *zone);
/* The provider's datacentre configuration; NULL when providers.json lacks it. */
const dsc_provider *dsc_catalog_provider(const dsc_catalog *cat, const char *name);
/* The models of provider, contiguous and sorted by name; *count gets how many
 * (0 and NULL when the provider has none). Pointers live as long as cat. */
const dsc_model *dsc_catalog_provider_models(const dsc_catalog *cat, const char *provider,
                                             size_t *count);

/* The list price of a model (or alias); NULL when prices.json does not price it. */
const dsc_price *dsc_catalog_price(const dsc_catalog *cat, const char *provider, const char *model);
/* The same for a model record of cat (dsc_estimate.model, dsc_catalog_model): no
 * look-up by name; NULL for NULL or a record of another catalogue. */
const dsc_price *dsc_catalog_model_price(const dsc_catalog *cat, const dsc_model *m);
/* The currency of the prices ("USD"); "" when no prices.json was loaded. */
const char *dsc_catalog_currency(const dsc_catalog *cat);
/* What a request costs at price p, in micro-units of the currency (1 USD = 1 000 000),
 * rounded to the nearest; 0 when p is NULL or a count is negative. */
int64_t dsc_price_cost_micro(const dsc_price *p, int64_t input_tokens, int64_t output_tokens);

/* The discern method's data; NULL when the directory has no serving.json. */
const dsc_method_data *dsc_catalog_method_data(const dsc_catalog *cat);
/* The serving profile of provider, else the "*" default; NULL without serving.json. */
const dsc_serving_provider *dsc_catalog_serving_provider(const dsc_catalog *cat,
                                                         const char *provider);
/* The override of (provider, model) in serving.json; NULL when none. */
const dsc_serving_model *dsc_catalog_serving_model(const dsc_catalog *cat, const char *provider,
                                                   const char *model);
/* What the lifecycle scope adds for (provider, model): its disclosed record, else
 * the class default; NULL without serving.json. */
const dsc_lifecycle *dsc_catalog_lifecycle(const dsc_catalog *cat, const char *provider,
                                           const char *model);
/* The accelerator class named name; NULL when unknown. */
const dsc_accelerator *dsc_catalog_accelerator(const dsc_catalog *cat, const char *name);

/* Iteration, in a stable order (models by provider then name; others by name). */
size_t dsc_catalog_model_count(const dsc_catalog *cat);
const dsc_model *dsc_catalog_model_at(const dsc_catalog *cat, size_t i); /* NULL past end */
size_t dsc_catalog_alias_count(const dsc_catalog *cat);
const dsc_alias *dsc_catalog_alias_at(const dsc_catalog *cat, size_t i);
size_t dsc_catalog_zone_count(const dsc_catalog *cat);
const dsc_zone *dsc_catalog_zone_at(const dsc_catalog *cat, size_t i);
size_t dsc_catalog_provider_count(const dsc_catalog *cat);
const dsc_provider *dsc_catalog_provider_at(const dsc_catalog *cat, size_t i);
size_t dsc_catalog_price_count(const dsc_catalog *cat);
const dsc_price *dsc_catalog_price_at(const dsc_catalog *cat, size_t i);

/* Close matches for an unknown name, best first, at most max written to out (the
 * strings live as long as cat). Models (and aliases) are searched within provider,
 * or across all providers when provider is NULL or unknown. Returns how many (0 for
 * a query longer than 96 bytes). */
size_t dsc_catalog_suggest_models(const dsc_catalog *cat, const char *provider, const char *query,
                                  const char **out, size_t max);
size_t dsc_catalog_suggest_zones(const dsc_catalog *cat, const char *query, const char **out,
                                 size_t max);
size_t dsc_catalog_suggest_providers(const dsc_catalog *cat, const char *query, const char **out,
                                     size_t max);
/* Write "; did you mean 'a' or 'b'?" for n names into buf (always NUL-terminated;
 * "" when n is 0). Returns buf. */
char *dsc_catalog_format_suggestions(const char *const *names, size_t n, char *buf, size_t cap);
/* Case-insensitive Levenshtein distance between a and b (each compared on its first
 * 127 bytes). */
int dsc_catalog_edit_distance(const char *a, const char *b);

DSC_API_END

#endif
