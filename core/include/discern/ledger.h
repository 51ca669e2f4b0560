/*
 * ledger.h - budgets, windows and the reserve -> settle -> cancel protocol.
 *
 * Shared vocabulary (used by the policy engine and the server too):
 *   dsc_metric        what a budget counts (energy_wh, gco2e, water_ml, pe_mj, cost,
 *                     tokens, requests)
 *   dsc_subject       who asks: org / team / user / key (any may be NULL)
 *   dsc_amounts       one integer per metric, in micro-units of the metric's API unit
 *                     (1 gco2e = 1 000 000 µg; amounts reconcile exactly)
 *   dsc_budget_state  one budget as seen by one subject: limit, used, held,
 *                     remaining, when it resets, and what a request would add
 */
#ifndef DISCERN_LEDGER_H
#define DISCERN_LEDGER_H

#include "discern/estimate.h"
#include "discern/status.h"

#include <stdbool.h>
#include <stdint.h>

/* XX(name, wire name, API unit) */
#define DSC_METRIC_MAP(XX)                                                                         \
    XX(ENERGY_WH, "energy_wh", "Wh")                                                               \
    XX(GCO2E, "gco2e", "g")                                                                        \
    XX(WATER_ML, "water_ml", "mL")                                                                 \
    XX(PE_MJ, "pe_mj", "MJ")                                                                       \
    XX(COST, "cost", "currency")                                                               \
    XX(TOKENS, "tokens", "tokens")                                                                 \
    XX(REQUESTS, "requests", "requests")

typedef enum dsc_metric {
#define DSC_METRIC_ENUM(name, wire, unit) DSC_METRIC_##name,
    DSC_METRIC_MAP(DSC_METRIC_ENUM)
#undef DSC_METRIC_ENUM
        DSC_METRIC_COUNT
} dsc_metric;

/* Micro-units per API unit: every amount inside the ledger is an integer. */
#define DSC_MICRO 1000000LL

#define DSC_SELECTOR_MAX 128
#define DSC_WINDOW_MAX 32

typedef struct dsc_subject {
    const char *org, *team, *user, *key; /* NULL or "" = not given */
} dsc_subject;

typedef struct dsc_amounts {
    int64_t v[DSC_METRIC_COUNT]; /* micro-units, indexed by dsc_metric */
} dsc_amounts;

typedef struct dsc_budget_state {
    char selector[DSC_SELECTOR_MAX]; /* as configured: "team:*" */
    char counter[DSC_SELECTOR_MAX];  /* the concrete counter it resolved to: "team:infra" */
    dsc_metric metric;
    char window[DSC_WINDOW_MAX]; /* "month", "rolling:1h", "rate:100/1m" */
    int64_t limit, used, held, remaining; /* micro-units; remaining = limit - used - held, >= 0 */
    int64_t resets_at;                    /* unix seconds */
    int64_t request;                      /* what the request under review would add */
    bool would_exceed;                    /* used + held + request > limit */
} dsc_budget_state;

/* The wire name of a metric ("gco2e"); NULL when out of range. */
const char *dsc_metric_name(dsc_metric m);
/* The API unit of a metric ("g"). */
const char *dsc_metric_unit(dsc_metric m);
/* Parse a metric's wire name; DSC_UNKNOWN_METRIC when it names none. */
dsc_status dsc_metric_parse(const char *name, dsc_metric *out);

/* The amounts a request would cost, from the upper bound of its estimate: energy,
 * gco2e, water, pe from est (may be NULL: zero), tokens = input + output,
 * requests = 1, cost = cost_micro (micro-currency, 0 when unknown). */
void dsc_amounts_from_estimate(const dsc_estimate *est, int64_t input_tokens,
                               int64_t output_tokens, int64_t cost_micro, dsc_amounts *out);

#endif
