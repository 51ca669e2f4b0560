/*
 * grid.h - carbon intensity of electricity per zone, live or annual.
 *
 * A thread-safe table of grid intensities in gCO2e/kWh, keyed by zone (ISO 3166-1
 * alpha-3 or "WOR"). Each zone may have an annual average (from the catalogue's
 * electricity mixes: gwp kgCO2e/kWh x 1000), a live value pushed by an admin or a feed
 * that is trusted until its valid_until, and a short forecast. Policies read it
 * through ctx.grid(zone) and ctx.grid_forecast(zone).
 *
 *   dsc_grid *g = dsc_grid_new();
 *   dsc_grid_set_annual(g, "FRA", 56.0, &err);
 *   dsc_grid_set_live(g, "FRA", 81.0, now + 3600, &err);
 *   double v; dsc_grid_get(g, "FRA", now, &v)  -> DSC_GRID_LIVE, v = 81
 *
 * Readers and writers may run on different threads at once.
 */
#ifndef DISCERN_GRID_H
#define DISCERN_GRID_H

#include "discern/export.h"

#include "discern/status.h"

#include <stdint.h>

DSC_API_BEGIN

typedef struct dsc_grid dsc_grid;
typedef struct dsc_catalog dsc_catalog;

/* Longest zone code accepted (plus the terminating NUL fits in 8 bytes). */
#define DSC_GRID_ZONE_MAX 7
/* Most forecast points kept per zone. */
#define DSC_GRID_FORECAST_MAX 48

typedef enum dsc_grid_source {
    DSC_GRID_NONE = 0, /* nothing known for the zone */
    DSC_GRID_ANNUAL,   /* the annual average */
    DSC_GRID_LIVE,     /* a live value still valid */
} dsc_grid_source;

/* One forecast point: from unix second `at`, the intensity is gco2e_kwh. */
typedef struct dsc_grid_point {
    int64_t at;
    double gco2e_kwh;
} dsc_grid_point;

/* A new empty table; NULL when out of memory. */
dsc_grid *dsc_grid_new(void);
/* Free g and everything in it; NULL is a no-op. */
void dsc_grid_free(dsc_grid *g);

/* Set the annual average of every zone of the catalogue's electricity mixes (its gwp
 * in kgCO2e/kWh x 1000). Errors as dsc_grid_set_annual. */
dsc_status dsc_grid_load_catalog(dsc_grid *g, const dsc_catalog *cat, dsc_error *err);
/* Set the annual average of zone. DSC_BAD_REQUEST for a bad zone or a negative or
 * non-finite value, DSC_NOMEM when the table cannot grow. */
dsc_status dsc_grid_set_annual(dsc_grid *g, const char *zone, double gco2e_kwh, dsc_error *err);
/* Set a live value of zone trusted until valid_until (unix seconds). Errors as above. */
dsc_status dsc_grid_set_live(dsc_grid *g, const char *zone, double gco2e_kwh, int64_t valid_until,
                             dsc_error *err);
/* Replace the forecast of zone with n points (at most DSC_GRID_FORECAST_MAX, any order;
 * n = 0 clears it). Errors as above, DSC_TOO_LARGE for too many points. */
dsc_status dsc_grid_set_forecast(dsc_grid *g, const char *zone, const dsc_grid_point *pts, int n,
                                 dsc_error *err);

/* The intensity of zone at time now: the live value while valid, else the annual one.
 * Writes it to *gco2e_kwh and returns its source; DSC_GRID_NONE (and 0) when unknown. */
dsc_grid_source dsc_grid_get(dsc_grid *g, const char *zone, int64_t now, double *gco2e_kwh);
/* Copy the forecast points of zone that are not yet over at now (sorted by time) into
 * out (at most max); returns how many were written. */
int dsc_grid_forecast(dsc_grid *g, const char *zone, int64_t now, dsc_grid_point *out, int max);

/* "live", "annual" or "none". */
const char *dsc_grid_source_name(dsc_grid_source s);

DSC_API_END

#endif
