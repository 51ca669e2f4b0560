/*
 * fuzz_window.c - libFuzzer target for the budget window and timezone parsers
 * (core/window.c): the input, as a C string, is parsed as a window, a duration and
 * a timezone; a window that parses is then used for a counter over a few instants
 * spread by the input, so that what the parser accepts is also what the counter
 * can count.
 */
#include "fuzz_util.h"

#include "discern/window.h"

#include <stdlib.h>
#include <string.h>

static void count_in(const dsc_window *w, const dsc_tz *tz, const uint8_t *data, size_t size) {
    dsc_window_counter c;
    memset(&c, 0, sizeof c);
    if (dsc_window_counter_init(&c, w) != DSC_OK) return;
    int64_t t = 1767225600LL * 1000000; /* 2026-01-01 */
    for (size_t i = 0; i < size && i < 16; i++) {
        t += (int64_t)data[i] * 37 * 60 * 1000000;
        dsc_window_counter_add(&c, w, tz, 1000, t);
        int64_t start, end;
        dsc_window_period(w, tz, t, &start, &end);
        if (dsc_window_counter_used(&c, w, tz, t) < 0) abort();
    }
    dsc_window_counter_destroy(&c);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char *s = fuzz_cstr(data, size);
    if (!s) return 0;
    dsc_error err;
    dsc_window w;
    dsc_tz tz, utc;
    int64_t us;
    (void)dsc_duration_parse(s, &us);
    if (dsc_tz_parse("UTC", &utc, &err) != DSC_OK) abort();
    if (dsc_tz_parse(s, &tz, &err) == DSC_OK) {
        dsc_window m;
        if (dsc_window_parse("month", &m, &err) == DSC_OK) count_in(&m, &tz, data, size);
    }
    if (dsc_window_parse(s, &w, &err) == DSC_OK) count_in(&w, &utc, data, size);
    free(s);
    return 0;
}
