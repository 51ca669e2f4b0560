/* test_grid.c - the grid intensity table: live values override the annual average
 * until they expire, forecasts are sorted and trimmed, bad input names the field. */
#include "discern/grid.h"

#include <criterion/criterion.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>

Test(grid, live_value_overrides_annual_until_it_expires) {
    dsc_grid *g = dsc_grid_new();
    dsc_error err;
    double v;
    cr_assert_eq(dsc_grid_get(g, "FRA", 100, &v), DSC_GRID_NONE);
    cr_assert_eq(v, 0);
    cr_assert_eq(dsc_grid_set_annual(g, "FRA", 56, &err), DSC_OK);
    cr_assert_eq(dsc_grid_get(g, "FRA", 100, &v), DSC_GRID_ANNUAL);
    cr_assert_eq(v, 56);
    cr_assert_eq(dsc_grid_set_live(g, "FRA", 90, 200, &err), DSC_OK);
    cr_assert_eq(dsc_grid_get(g, "FRA", 199, &v), DSC_GRID_LIVE);
    cr_assert_eq(v, 90);
    cr_assert_eq(dsc_grid_get(g, "FRA", 200, &v), DSC_GRID_ANNUAL);
    cr_assert_eq(v, 56);
    cr_assert_str_eq(dsc_grid_source_name(DSC_GRID_LIVE), "live");
    dsc_grid_free(g);
    dsc_grid_free(NULL);
}

Test(grid, bad_zone_or_value_is_refused_naming_the_field) {
    dsc_grid *g = dsc_grid_new();
    dsc_error err;
    cr_assert_eq(dsc_grid_set_annual(g, "", 1, &err), DSC_BAD_REQUEST);
    cr_assert(strstr(err.message, "'zone'"));
    cr_assert_eq(dsc_grid_set_annual(g, "TOOLONGZONE", 1, &err), DSC_BAD_REQUEST);
    cr_assert_eq(dsc_grid_set_live(g, "FRA", -5, 10, &err), DSC_BAD_REQUEST);
    cr_assert(strstr(err.message, "'gco2e_kwh'"));
    cr_assert_eq(dsc_grid_set_live(g, "FRA", 0.0 / 0.0, 10, &err), DSC_BAD_REQUEST);
    double v;
    cr_assert_eq(dsc_grid_get(g, NULL, 0, &v), DSC_GRID_NONE);
    dsc_grid_free(g);
}

Test(grid, forecast_is_sorted_and_past_points_are_dropped) {
    dsc_grid *g = dsc_grid_new();
    dsc_error err;
    dsc_grid_point pts[] = {{300, 30}, {100, 100}, {200, 60}};
    cr_assert_eq(dsc_grid_set_forecast(g, "DEU", pts, 3, &err), DSC_OK);
    dsc_grid_point out[8];
    int n = dsc_grid_forecast(g, "DEU", 250, out, 8);
    cr_assert_eq(n, 2); /* the point at 200 is current, the one at 100 is over */
    cr_assert_eq(out[0].at, 200);
    cr_assert_eq(out[1].gco2e_kwh, 30);
    cr_assert_eq(dsc_grid_forecast(g, "XXX", 0, out, 8), 0);
    dsc_grid_point many[DSC_GRID_FORECAST_MAX + 1] = {{0, 0}};
    cr_assert_eq(dsc_grid_set_forecast(g, "DEU", many, DSC_GRID_FORECAST_MAX + 1, &err),
                 DSC_TOO_LARGE);
    dsc_grid_free(g);
}

Test(grid, table_grows_past_its_first_capacity) {
    dsc_grid *g = dsc_grid_new();
    dsc_error err;
    char zone[8];
    for (int i = 0; i < 500; i++) {
        snprintf(zone, sizeof zone, "Z%d", i);
        cr_assert_eq(dsc_grid_set_annual(g, zone, i, &err), DSC_OK);
    }
    double v;
    for (int i = 0; i < 500; i++) {
        snprintf(zone, sizeof zone, "Z%d", i);
        cr_assert_eq(dsc_grid_get(g, zone, 0, &v), DSC_GRID_ANNUAL);
        cr_assert_eq(v, i);
    }
    dsc_grid_free(g);
}

static void *writer(void *arg) {
    dsc_grid *g = arg;
    dsc_error err;
    for (int i = 0; i < 20000; i++)
        dsc_grid_set_live(g, "FRA", i % 2 ? 100 : 200, 1000, &err);
    return NULL;
}

Test(grid, concurrent_readers_see_only_values_that_were_written) {
    dsc_grid *g = dsc_grid_new();
    dsc_error err;
    dsc_grid_set_live(g, "FRA", 100, 1000, &err);
    pthread_t t;
    pthread_create(&t, NULL, writer, g);
    for (int i = 0; i < 20000; i++) {
        double v;
        dsc_grid_get(g, "FRA", 0, &v);
        cr_assert(v == 100 || v == 200);
    }
    pthread_join(t, NULL);
    dsc_grid_free(g);
}
