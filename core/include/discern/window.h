/*
 * window.h - the time windows a budget counts over, and one counter per window.
 *
 * A budget's window is one of:
 *   day | week | month | year   calendar periods in the ledger's timezone; weeks start
 *                               on Monday (ISO 8601); resets at the next period start
 *   rolling:<duration>          sliding window, bucketed: 30 buckets of duration/30;
 *                               a charge counts until its whole bucket has left the
 *                               window, so no interval of <duration> ever holds more
 *                               than the limit (a burst at the edge cannot double it)
 *   rate:<n>/<duration>         token bucket: refills n (API units) per <duration>;
 *                               the budget's limit is the bucket size (the burst)
 * Durations are <integer><unit>, unit s|m|h|d|w ("90s", "1h", "7d"); "rate:10/s"
 * means 10 per 1 s.
 *
 * Timezones (for calendar windows): "UTC" (default), a fixed offset "+02:00",
 * "-0530", or "local": the process's TZ rules (POSIX TZ, with DST) through
 * localtime_r/mktime, which are thread-safe; set TZ before starting threads.
 *
 *   dsc_window w; dsc_window_parse("rolling:1h", &w, &err);
 *   dsc_window_counter c; dsc_window_counter_init(&c, &w);
 *   dsc_window_counter_add(&c, &w, &tz, 5 * DSC_MICRO, now_us);
 *   used = dsc_window_counter_used(&c, &w, &tz, now_us);
 */
#ifndef DISCERN_WINDOW_H
#define DISCERN_WINDOW_H

#include "discern/export.h"

#include "discern/status.h"

#include <stdbool.h>
#include <stdint.h>

DSC_API_BEGIN

typedef enum dsc_window_kind {
    DSC_WINDOW_DAY,
    DSC_WINDOW_WEEK,
    DSC_WINDOW_MONTH,
    DSC_WINDOW_YEAR,
    DSC_WINDOW_ROLLING,
    DSC_WINDOW_RATE
} dsc_window_kind;

/* Buckets of a rolling window: the window covers between 30 and 31 buckets. */
#define DSC_WINDOW_BUCKETS 30

typedef struct dsc_window {
    dsc_window_kind kind;
    int64_t span_us;    /* rolling: window length; rate: refill period */
    int64_t rate_micro; /* rate: micro-units refilled per span_us */
} dsc_window;

typedef struct dsc_tz {
    bool local;       /* use the process's TZ rules (localtime_r / mktime) */
    int32_t offset_s; /* otherwise a fixed offset east of UTC */
} dsc_tz;

/* The state of one counter over one window; embed it and call _init/_destroy. */
typedef struct dsc_window_counter {
    int64_t used;     /* calendar and rate: micro-units counted now */
    int64_t a, b;     /* calendar: period [a, b) in µs; rate: a = last refill time µs */
    int64_t head;     /* rolling: index of the newest bucket */
    int64_t *buckets; /* rolling: DSC_WINDOW_BUCKETS + 1 sums, NULL otherwise */
} dsc_window_counter;

/* Parse a window ("month", "rolling:1h", "rate:100/1m"); DSC_BAD_REQUEST naming the
 * text when it is not one. */
dsc_status dsc_window_parse(const char *text, dsc_window *out, dsc_error *err);
/* The longest duration a window takes: 100 000 days (about 274 years). */
#define DSC_DURATION_MAX_S (100000LL * 86400)

/* Parse a duration "<int><s|m|h|d|w>" into µs; false when malformed, not > 0 or
 * longer than DSC_DURATION_MAX_S. */
bool dsc_duration_parse(const char *text, int64_t *us);
/* Parse a timezone ("UTC", "+02:00", "-0530", "local"); NULL or "" is UTC. */
dsc_status dsc_tz_parse(const char *text, dsc_tz *out, dsc_error *err);
/* The calendar period [start, end) (unix seconds) of w containing t; w must be
 * day/week/month/year. */
void dsc_window_period(const dsc_window *w, const dsc_tz *tz, int64_t t, int64_t *start,
                       int64_t *end);

/* Prepare c for w; DSC_NOMEM when the rolling buckets cannot be allocated. */
dsc_status dsc_window_counter_init(dsc_window_counter *c, const dsc_window *w);
/* Release what c owns (safe on a zeroed counter). */
void dsc_window_counter_destroy(dsc_window_counter *c);
/* Add amount (may be negative: a correction) at time now_us. A charge older than
 * the current period or rolling window is ignored. */
void dsc_window_counter_add(dsc_window_counter *c, const dsc_window *w, const dsc_tz *tz,
                            int64_t amount, int64_t now_us);
/* What counts against the limit at now_us (>= 0); advances c to now_us. */
int64_t dsc_window_counter_used(dsc_window_counter *c, const dsc_window *w, const dsc_tz *tz,
                                int64_t now_us);
/* When the used amount next goes down (unix seconds): the next period start for
 * calendar windows, when the oldest charged bucket leaves a rolling window, when the
 * bucket is full again for a rate. Call after _used at the same now_us. */
int64_t dsc_window_counter_resets_at(const dsc_window_counter *c, const dsc_window *w,
                                     int64_t now_us);
/* Seconds (rounded up, >= 1) until a request of request micro-units fits a budget
 * whose counter holds level (used + held) of limit, 0 when it fits now. A rate
 * window refills from now, used and held alike: the wait is until the next token the
 * request needs is there (until the bucket is empty when request > limit). Calendar
 * and rolling windows do not refill: until resets_at (unix seconds). */
int64_t dsc_window_wait_s(const dsc_window *w, int64_t level, int64_t request, int64_t limit,
                          int64_t resets_at, int64_t now_s);

DSC_API_END

#endif
