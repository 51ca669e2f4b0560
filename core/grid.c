/*
 * grid.c - the table of grid carbon intensities per zone (see grid.h).
 *
 * An open-addressing hash of zones behind one read-write lock: reads (one per policy
 * call to ctx.grid) take the lock shared, pushes of live values take it exclusive.
 * Zones are short codes, so keys live inline in the slots.
 */
#include "discern/grid.h"

#include "discern/catalog.h"

#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

typedef struct grid_slot {
    char zone[DSC_GRID_ZONE_MAX + 1]; /* "" = empty slot */
    double annual;
    double live;
    int64_t live_until;
    int has_annual, has_live;
    int n_forecast;
    dsc_grid_point forecast[DSC_GRID_FORECAST_MAX];
} grid_slot;

struct dsc_grid {
    pthread_rwlock_t lock;
    grid_slot *slots;
    size_t cap, used; /* cap is a power of two */
};

dsc_grid *dsc_grid_new(void) {
    dsc_grid *g = calloc(1, sizeof *g);
    if (!g) return NULL;
    g->cap = 64;
    g->slots = calloc(g->cap, sizeof *g->slots);
    if (!g->slots || pthread_rwlock_init(&g->lock, NULL) != 0) {
        free(g->slots);
        free(g);
        return NULL;
    }
    return g;
}

void dsc_grid_free(dsc_grid *g) {
    if (!g) return;
    pthread_rwlock_destroy(&g->lock);
    free(g->slots);
    free(g);
}

static uint64_t zone_hash(const char *zone) {
    uint64_t h = 1469598103934665603ULL;
    for (const unsigned char *p = (const unsigned char *)zone; *p; p++)
        h = (h ^ *p) * 1099511628211ULL;
    return h;
}

/* The slot holding zone, or the empty slot where it would go. */
static grid_slot *find_slot(grid_slot *slots, size_t cap, const char *zone) {
    size_t i = (size_t)zone_hash(zone) & (cap - 1);
    while (slots[i].zone[0] && strcmp(slots[i].zone, zone) != 0)
        i = (i + 1) & (cap - 1);
    return &slots[i];
}

static int grow(dsc_grid *g) {
    size_t cap = g->cap * 2;
    grid_slot *slots = calloc(cap, sizeof *slots);
    if (!slots) return -1;
    for (size_t i = 0; i < g->cap; i++)
        if (g->slots[i].zone[0]) *find_slot(slots, cap, g->slots[i].zone) = g->slots[i];
    free(g->slots);
    g->slots = slots;
    g->cap = cap;
    return 0;
}

static dsc_status check_zone(const char *zone, dsc_error *err) {
    size_t n = zone ? strlen(zone) : 0;
    if (n == 0 || n > DSC_GRID_ZONE_MAX)
        return dsc_error_set(err, DSC_BAD_REQUEST,
                             "field 'zone' must be 1 to %d characters, got '%s'", DSC_GRID_ZONE_MAX,
                             zone ? zone : "(null)");
    return DSC_OK;
}

static dsc_status check_value(double v, dsc_error *err) {
    if (!isfinite(v) || v < 0)
        return dsc_error_set(err, DSC_BAD_REQUEST,
                             "field 'gco2e_kwh' must be a finite number >= 0, got %g", v);
    return DSC_OK;
}

/* The slot of zone, created when missing; call with the write lock held. */
static grid_slot *slot_for_write(dsc_grid *g, const char *zone, dsc_error *err) {
    if ((g->used + 1) * 10 > g->cap * 7 && grow(g) != 0) {
        dsc_error_set(err, DSC_NOMEM, "cannot grow the grid table");
        return NULL;
    }
    grid_slot *s = find_slot(g->slots, g->cap, zone);
    if (!s->zone[0]) {
        strcpy(s->zone, zone);
        g->used++;
    }
    return s;
}

dsc_status dsc_grid_set_annual(dsc_grid *g, const char *zone, double gco2e_kwh, dsc_error *err) {
    dsc_status st = check_zone(zone, err);
    if (st == DSC_OK) st = check_value(gco2e_kwh, err);
    if (st != DSC_OK) return st;
    pthread_rwlock_wrlock(&g->lock);
    grid_slot *s = slot_for_write(g, zone, err);
    if (s) {
        s->annual = gco2e_kwh;
        s->has_annual = 1;
    }
    pthread_rwlock_unlock(&g->lock);
    return s ? DSC_OK : DSC_NOMEM;
}

dsc_status dsc_grid_set_live(dsc_grid *g, const char *zone, double gco2e_kwh, int64_t valid_until,
                             dsc_error *err) {
    dsc_status st = check_zone(zone, err);
    if (st == DSC_OK) st = check_value(gco2e_kwh, err);
    if (st != DSC_OK) return st;
    pthread_rwlock_wrlock(&g->lock);
    grid_slot *s = slot_for_write(g, zone, err);
    if (s) {
        s->live = gco2e_kwh;
        s->live_until = valid_until;
        s->has_live = 1;
    }
    pthread_rwlock_unlock(&g->lock);
    return s ? DSC_OK : DSC_NOMEM;
}

dsc_status dsc_grid_load_catalog(dsc_grid *g, const dsc_catalog *cat, dsc_error *err) {
    size_t n = dsc_catalog_zone_count(cat);
    for (size_t i = 0; i < n; i++) {
        const dsc_zone *z = dsc_catalog_zone_at(cat, i);
        dsc_status st = dsc_grid_set_annual(g, z->name, z->gwp_kgco2eq_per_kwh * 1000.0, err);
        if (st != DSC_OK) return st;
    }
    return DSC_OK;
}

static int point_cmp(const void *a, const void *b) {
    int64_t x = ((const dsc_grid_point *)a)->at, y = ((const dsc_grid_point *)b)->at;
    return (x > y) - (x < y);
}

dsc_status dsc_grid_set_forecast(dsc_grid *g, const char *zone, const dsc_grid_point *pts, int n,
                                 dsc_error *err) {
    dsc_status st = check_zone(zone, err);
    if (st != DSC_OK) return st;
    if (n < 0 || n > DSC_GRID_FORECAST_MAX)
        return dsc_error_set(err, DSC_TOO_LARGE,
                             "field 'forecast' must have 0 to %d points, got %d",
                             DSC_GRID_FORECAST_MAX, n);
    for (int i = 0; i < n; i++)
        if ((st = check_value(pts[i].gco2e_kwh, err)) != DSC_OK) return st;
    dsc_grid_point sorted[DSC_GRID_FORECAST_MAX];
    if (n > 0) memcpy(sorted, pts, (size_t)n * sizeof *pts);
    qsort(sorted, (size_t)n, sizeof *sorted, point_cmp);
    pthread_rwlock_wrlock(&g->lock);
    grid_slot *s = slot_for_write(g, zone, err);
    if (s) {
        if (n > 0) memcpy(s->forecast, sorted, (size_t)n * sizeof *sorted);
        s->n_forecast = n;
    }
    pthread_rwlock_unlock(&g->lock);
    return s ? DSC_OK : DSC_NOMEM;
}

dsc_grid_source dsc_grid_get(dsc_grid *g, const char *zone, int64_t now, double *gco2e_kwh) {
    dsc_grid_source src = DSC_GRID_NONE;
    double v = 0;
    if (g && zone && zone[0] && strlen(zone) <= DSC_GRID_ZONE_MAX) {
        pthread_rwlock_rdlock(&g->lock);
        const grid_slot *s = find_slot(g->slots, g->cap, zone);
        if (s->zone[0] && s->has_live && now < s->live_until) {
            v = s->live;
            src = DSC_GRID_LIVE;
        } else if (s->zone[0] && s->has_annual) {
            v = s->annual;
            src = DSC_GRID_ANNUAL;
        }
        pthread_rwlock_unlock(&g->lock);
    }
    if (gco2e_kwh) *gco2e_kwh = v;
    return src;
}

int dsc_grid_forecast(dsc_grid *g, const char *zone, int64_t now, dsc_grid_point *out, int max) {
    int k = 0;
    if (!g || !zone || !zone[0] || strlen(zone) > DSC_GRID_ZONE_MAX) return 0;
    pthread_rwlock_rdlock(&g->lock);
    const grid_slot *s = find_slot(g->slots, g->cap, zone);
    for (int i = 0; s->zone[0] && i < s->n_forecast && k < max; i++) {
        /* A point is over once the next one has started. */
        if (i + 1 < s->n_forecast && s->forecast[i + 1].at <= now) continue;
        out[k++] = s->forecast[i];
    }
    pthread_rwlock_unlock(&g->lock);
    return k;
}

const char *dsc_grid_source_name(dsc_grid_source s) {
    switch (s) {
    case DSC_GRID_LIVE:
        return "live";
    case DSC_GRID_ANNUAL:
        return "annual";
    default:
        return "none";
    }
}
