/* test_window.c - calendar periods, rolling buckets and token buckets, on fixed times. */
#include "discern/window.h"

#include <criterion/criterion.h>
#include <stdlib.h>
#include <time.h>

#define S 1000000LL

/* Unix seconds of a UTC date-time (timegm is not POSIX: compute it). */
static int64_t utc(int y, int mo, int d, int h, int mi, int s) {
    int64_t yy = y - (mo <= 2);
    int64_t era = (yy >= 0 ? yy : yy - 399) / 400;
    int64_t yoe = yy - era * 400;
    int64_t doy = (153 * (mo + (mo > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    int64_t days = era * 146097 + yoe * 365 + yoe / 4 - yoe / 100 + doy - 719468;
    return days * 86400 + h * 3600 + mi * 60 + s;
}

static dsc_window win(const char *text) {
    dsc_window w;
    cr_assert_eq(dsc_window_parse(text, &w, NULL), DSC_OK, "window %s", text);
    return w;
}

Test(window, month_rolls_over_from_january_31_to_february) {
    dsc_window w = win("month");
    dsc_tz tz = {0};
    int64_t s, e;
    dsc_window_period(&w, &tz, utc(2025, 1, 31, 23, 59, 59), &s, &e);
    cr_assert_eq(s, utc(2025, 1, 1, 0, 0, 0));
    cr_assert_eq(e, utc(2025, 2, 1, 0, 0, 0));
    dsc_window_period(&w, &tz, utc(2025, 2, 1, 0, 0, 0), &s, &e);
    cr_assert_eq(s, utc(2025, 2, 1, 0, 0, 0));
    cr_assert_eq(e, utc(2025, 3, 1, 0, 0, 0));
    cr_assert_eq(e - s, 28 * 86400);
}

Test(window, leap_year_february_has_29_days_and_century_rules_hold) {
    dsc_window w = win("month");
    dsc_tz tz = {0};
    int64_t s, e;
    dsc_window_period(&w, &tz, utc(2024, 2, 29, 12, 0, 0), &s, &e);
    cr_assert_eq(e - s, 29 * 86400);
    cr_assert_eq(e, utc(2024, 3, 1, 0, 0, 0));
    dsc_window_period(&w, &tz, utc(2100, 2, 10, 0, 0, 0), &s, &e);
    cr_assert_eq(e - s, 28 * 86400, "2100 is not a leap year");
    dsc_window_period(&w, &tz, utc(2000, 2, 10, 0, 0, 0), &s, &e);
    cr_assert_eq(e - s, 29 * 86400, "2000 is a leap year");
    dsc_window y = win("year");
    dsc_window_period(&y, &tz, utc(2024, 12, 31, 23, 0, 0), &s, &e);
    cr_assert_eq(e - s, 366 * 86400);
}

Test(window, weeks_start_on_monday) {
    dsc_window w = win("week");
    dsc_tz tz = {0};
    int64_t s, e;
    /* 2024-01-07 is a Sunday, 2024-01-01 a Monday */
    dsc_window_period(&w, &tz, utc(2024, 1, 7, 23, 59, 59), &s, &e);
    cr_assert_eq(s, utc(2024, 1, 1, 0, 0, 0));
    cr_assert_eq(e, utc(2024, 1, 8, 0, 0, 0));
    dsc_window_period(&w, &tz, utc(2024, 1, 8, 0, 0, 0), &s, &e);
    cr_assert_eq(s, utc(2024, 1, 8, 0, 0, 0));
    /* across a year boundary: Wed 2025-01-01 belongs to the week of Mon 2024-12-30 */
    dsc_window_period(&w, &tz, utc(2025, 1, 1, 10, 0, 0), &s, &e);
    cr_assert_eq(s, utc(2024, 12, 30, 0, 0, 0));
}

Test(window, fixed_offset_moves_the_day_boundary) {
    dsc_window w = win("day");
    dsc_tz tz;
    cr_assert_eq(dsc_tz_parse("+02:00", &tz, NULL), DSC_OK);
    int64_t s, e;
    /* 23:30 UTC on Jan 1 is 01:30 on Jan 2 at +02:00 */
    dsc_window_period(&w, &tz, utc(2025, 1, 1, 23, 30, 0), &s, &e);
    cr_assert_eq(s, utc(2025, 1, 1, 22, 0, 0));
    cr_assert_eq(e, utc(2025, 1, 2, 22, 0, 0));
    cr_assert_eq(dsc_tz_parse("-0530", &tz, NULL), DSC_OK);
    cr_assert_eq(tz.offset_s, -(5 * 3600 + 30 * 60));
    dsc_error err;
    cr_assert_eq(dsc_tz_parse("Mars/Olympus", &tz, &err), DSC_BAD_REQUEST);
    cr_assert(strstr(err.message, "timezone") && strstr(err.message, "Mars/Olympus"));
}

Test(window, local_timezone_follows_dst_day_of_23_hours) {
    setenv("TZ", "CET-1CEST,M3.5.0,M10.5.0/3", 1);
    tzset();
    dsc_window w = win("day");
    dsc_tz tz;
    cr_assert_eq(dsc_tz_parse("local", &tz, NULL), DSC_OK);
    int64_t s, e;
    dsc_window_period(&w, &tz, utc(2024, 3, 31, 12, 0, 0), &s, &e); /* CEST begins */
    cr_assert_eq(s, utc(2024, 3, 30, 23, 0, 0));
    cr_assert_eq(e, utc(2024, 3, 31, 22, 0, 0));
    cr_assert_eq(e - s, 23 * 3600);
    dsc_window m = win("month");
    dsc_window_period(&m, &tz, utc(2024, 10, 31, 12, 0, 0), &s, &e);
    cr_assert_eq(s, utc(2024, 9, 30, 22, 0, 0), "October starts at CEST midnight");
    cr_assert_eq(e, utc(2024, 10, 31, 23, 0, 0), "November starts at CET midnight");
}

Test(window, rolling_edge_burst_cannot_double_the_allowance) {
    dsc_window w = win("rolling:1h");
    dsc_window_counter c;
    cr_assert_eq(dsc_window_counter_init(&c, &w), DSC_OK);
    int64_t t0 = utc(2025, 5, 1, 0, 0, 0) * S;
    dsc_window_counter_add(&c, &w, NULL, 10 * S, t0 + 3599 * S); /* burst at the edge */
    /* two seconds later a naive fixed window would have reset */
    cr_assert_eq(dsc_window_counter_used(&c, &w, NULL, t0 + 3601 * S), 10 * S);
    /* within one hour of the burst it always counts */
    cr_assert_eq(dsc_window_counter_used(&c, &w, NULL, t0 + (3599 + 3599) * S), 10 * S);
    int64_t reset = dsc_window_counter_resets_at(&c, &w, t0 + 3601 * S);
    cr_assert_geq(reset, t0 / S + 3599 + 3600);
    cr_assert_leq(reset, t0 / S + 3599 + 3600 + 120);
    cr_assert_eq(dsc_window_counter_used(&c, &w, NULL, reset * S), 0);
    dsc_window_counter_destroy(&c);
}

Test(window, token_bucket_refills_at_its_rate_up_to_the_burst) {
    dsc_window w = win("rate:10/s");
    cr_assert_eq(w.rate_micro, 10 * S);
    dsc_window_counter c;
    cr_assert_eq(dsc_window_counter_init(&c, &w), DSC_OK);
    int64_t t = 1700000000 * S;
    dsc_window_counter_add(&c, &w, NULL, 20 * S, t); /* the whole burst */
    cr_assert_eq(dsc_window_counter_used(&c, &w, NULL, t), 20 * S);
    cr_assert_eq(dsc_window_counter_used(&c, &w, NULL, t + S / 2), 15 * S);
    cr_assert_eq(dsc_window_counter_resets_at(&c, &w, t + S / 2), t / S + 2);
    /* many tiny reads do not slow the refill down */
    for (int i = 1; i <= 1000; i++)
        dsc_window_counter_used(&c, &w, NULL, t + S / 2 + i * 100);
    cr_assert_eq(dsc_window_counter_used(&c, &w, NULL, t + S), 10 * S);
    cr_assert_eq(dsc_window_counter_used(&c, &w, NULL, t + 10 * S), 0, "never below empty");
    dsc_window_counter_destroy(&c);
}

Test(window, a_rate_wait_is_until_the_next_token_the_request_needs_is_there) {
    dsc_window w = win("rate:2/1m"); /* one token every 30 s */
    int64_t now = 1700000000;
    cr_assert_eq(dsc_window_wait_s(&w, 1 * S, 1 * S, 2 * S, now + 60, now), 0, "fits now");
    cr_assert_eq(dsc_window_wait_s(&w, 2 * S, 1 * S, 2 * S, now + 60, now), 30);
    cr_assert_eq(dsc_window_wait_s(&w, 2 * S, 2 * S, 2 * S, now + 60, now), 60, "two tokens");
    cr_assert_eq(dsc_window_wait_s(&w, 2 * S, 5 * S, 2 * S, now + 60, now), 60,
                 "larger than the bucket: until it is empty");
    dsc_window r = win("rate:10/s");
    cr_assert_eq(dsc_window_wait_s(&r, 10 * S, S / 100, 10 * S, now, now), 1, "at least 1 s");
    dsc_window d = win("day");
    cr_assert_eq(dsc_window_wait_s(&d, 5 * S, 1 * S, 5 * S, now + 3600, now), 3600,
                 "a calendar window waits for its reset");
}

Test(window, malformed_windows_are_refused_with_the_text) {
    const char *bad[] = {"fortnight",  "rolling:", "rolling:10s",
                         "rolling:1x", "rate:10",  "rate:-1/s",
                         "rate:5/0s",  "",         "rolling:-5m"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        dsc_window w;
        dsc_error err;
        cr_assert_eq(dsc_window_parse(bad[i], &w, &err), DSC_BAD_REQUEST, "%s", bad[i]);
        cr_assert(strstr(err.message, "window"), "%s", err.message);
    }
    dsc_window w = win("rate:100/1m");
    cr_assert_eq(w.span_us, 60 * S);
    w = win("rolling:7d");
    cr_assert_eq(w.span_us, 7 * 86400 * S);
}

Test(window, a_duration_too_long_to_count_in_microseconds_is_refused) {
    dsc_window w;
    dsc_error err;
    int64_t us;
    /* found by fuzz_window: 99 905 030 weeks overflowed the µs multiplication */
    cr_assert_eq(dsc_window_parse("rate:1/99905030w", &w, &err), DSC_BAD_REQUEST);
    cr_assert_eq(dsc_window_parse("rolling:100001d", &w, &err), DSC_BAD_REQUEST);
    cr_assert_not(dsc_duration_parse("14286w", &us));
    cr_assert(dsc_duration_parse("100000d", &us));
    cr_assert_eq(us, DSC_DURATION_MAX_S * 1000000);
    cr_assert_eq(dsc_window_parse("rolling:14285w", &w, &err), DSC_OK, "%s", err.message);
}
