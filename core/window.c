/*
 * window.c - calendar periods, rolling buckets and token buckets (see window.h).
 *
 * Calendar math for fixed offsets is pure integer arithmetic on civil dates (days
 * from 1970-01-01, proleptic Gregorian), so month lengths and leap years come out
 * right without touching the C library's timezone state. The "local" timezone uses
 * localtime_r and mktime, which read the process's TZ (thread-safe in glibc).
 */
#include "discern/window.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define US_PER_S 1000000LL
#define S_PER_DAY 86400LL

static int64_t floor_div(int64_t a, int64_t b) {
    int64_t q = a / b;
    return (a % b != 0 && ((a < 0) != (b < 0))) ? q - 1 : q;
}

/* Days since 1970-01-01 of a civil date (m 1..12). */
static int64_t days_from_civil(int64_t y, int m, int d) {
    y -= m <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    int64_t yoe = y - era * 400;
    int64_t doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

static void civil_from_days(int64_t z, int64_t *y, int *m, int *d) {
    z += 719468;
    int64_t era = (z >= 0 ? z : z - 146096) / 146097;
    int64_t doe = z - era * 146097;
    int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    int64_t mp = (5 * doy + 2) / 153;
    *d = (int)(doy - (153 * mp + 2) / 5 + 1);
    *m = (int)(mp < 10 ? mp + 3 : mp - 9);
    *y = yoe + era * 400 + (*m <= 2);
}

bool dsc_duration_parse(const char *text, int64_t *us) {
    if (!text || !*text) return false;
    int64_t n = 1;
    const char *p = text;
    if (isdigit((unsigned char)*p)) {
        errno = 0;
        char *end;
        long long v = strtoll(p, &end, 10);
        if (errno || v <= 0 || v > 100000000LL) return false;
        n = v;
        p = end;
    }
    int64_t unit;
    switch (*p) {
    case 's':
        unit = 1;
        break;
    case 'm':
        unit = 60;
        break;
    case 'h':
        unit = 3600;
        break;
    case 'd':
        unit = S_PER_DAY;
        break;
    case 'w':
        unit = 7 * S_PER_DAY;
        break;
    default:
        return false;
    }
    if (p[1] != '\0') return false;
    /* 100 000 w would overflow µs; period arithmetic on now + span must not either. */
    if (n > DSC_DURATION_MAX_S / unit) return false;
    *us = n * unit * US_PER_S;
    return true;
}

static dsc_status parse_rate(const char *spec, dsc_window *out) {
    char *end;
    errno = 0;
    double n = strtod(spec, &end);
    if (errno || end == spec || *end != '/' || !isfinite(n) || n <= 0 || n > 1e12)
        return DSC_BAD_REQUEST;
    if (!dsc_duration_parse(end + 1, &out->span_us)) return DSC_BAD_REQUEST;
    out->kind = DSC_WINDOW_RATE;
    out->rate_micro = llround(n * 1e6);
    return out->rate_micro > 0 ? DSC_OK : DSC_BAD_REQUEST;
}

static dsc_status parse_window(const char *text, dsc_window *out) {
    static const struct {
        const char *name;
        dsc_window_kind kind;
    } calendar[] = {{"day", DSC_WINDOW_DAY},
                    {"week", DSC_WINDOW_WEEK},
                    {"month", DSC_WINDOW_MONTH},
                    {"year", DSC_WINDOW_YEAR}};
    memset(out, 0, sizeof *out);
    for (size_t i = 0; i < sizeof calendar / sizeof calendar[0]; i++)
        if (strcmp(text, calendar[i].name) == 0) {
            out->kind = calendar[i].kind;
            return DSC_OK;
        }
    if (strncmp(text, "rolling:", 8) == 0) {
        out->kind = DSC_WINDOW_ROLLING;
        if (!dsc_duration_parse(text + 8, &out->span_us)) return DSC_BAD_REQUEST;
        return out->span_us >= DSC_WINDOW_BUCKETS * US_PER_S ? DSC_OK : DSC_BAD_REQUEST;
    }
    if (strncmp(text, "rate:", 5) == 0) return parse_rate(text + 5, out);
    return DSC_BAD_REQUEST;
}

dsc_status dsc_window_parse(const char *text, dsc_window *out, dsc_error *err) {
    if (!text || strlen(text) >= 32 || parse_window(text, out) != DSC_OK)
        return dsc_error_set(err, DSC_BAD_REQUEST,
                             "field 'window': '%.40s' is not day|week|month|year, "
                             "rolling:<duration> (>= 30s) or rate:<n>/<duration>",
                             text ? text : "(null)");
    return DSC_OK;
}

static bool parse_offset(const char *s, int32_t *off) {
    int sign = s[0] == '+' ? 1 : s[0] == '-' ? -1 : 0;
    if (!sign) return false;
    int digits[4], n = 0;
    for (const char *p = s + 1; *p; p++) {
        if (*p == ':' && n == 2) continue;
        if (!isdigit((unsigned char)*p) || n == 4) return false;
        digits[n++] = *p - '0';
    }
    if (n != 4 && n != 2) return false;
    int hh = digits[0] * 10 + digits[1], mm = n == 4 ? digits[2] * 10 + digits[3] : 0;
    if (hh > 14 || mm > 59) return false;
    *off = sign * (hh * 3600 + mm * 60);
    return true;
}

dsc_status dsc_tz_parse(const char *text, dsc_tz *out, dsc_error *err) {
    memset(out, 0, sizeof *out);
    if (!text || !*text || strcmp(text, "UTC") == 0 || strcmp(text, "Z") == 0) return DSC_OK;
    if (strcmp(text, "local") == 0) {
        out->local = true;
        return DSC_OK;
    }
    if (parse_offset(text, &out->offset_s)) return DSC_OK;
    return dsc_error_set(err, DSC_BAD_REQUEST,
                         "field 'timezone': '%.40s' is not UTC, local or an offset like +02:00",
                         text);
}

static void period_fixed(const dsc_window *w, int32_t off, int64_t t, int64_t *start,
                         int64_t *end) {
    int64_t z = floor_div(t + off, S_PER_DAY), y, zs, ze;
    int m, d;
    civil_from_days(z, &y, &m, &d);
    switch (w->kind) {
    case DSC_WINDOW_DAY:
        zs = z, ze = z + 1;
        break;
    case DSC_WINDOW_WEEK:
        zs = z - (z + 3 - floor_div(z + 3, 7) * 7); /* 1970-01-01 was a Thursday */
        ze = zs + 7;
        break;
    case DSC_WINDOW_MONTH:
        zs = days_from_civil(y, m, 1);
        ze = m == 12 ? days_from_civil(y + 1, 1, 1) : days_from_civil(y, m + 1, 1);
        break;
    default:
        zs = days_from_civil(y, 1, 1);
        ze = days_from_civil(y + 1, 1, 1);
        break;
    }
    *start = zs * S_PER_DAY - off;
    *end = ze * S_PER_DAY - off;
}

/* Local midnight of tm's date shifted by (dy years, dm months, dd days). */
static int64_t local_midnight(const struct tm *tm, int dy, int dm, int dd) {
    struct tm x = {0};
    x.tm_year = tm->tm_year + dy;
    x.tm_mon = tm->tm_mon + dm;
    x.tm_mday = tm->tm_mday + dd;
    x.tm_isdst = -1;
    return (int64_t)mktime(&x);
}

static void period_local(const dsc_window *w, int64_t t, int64_t *start, int64_t *end) {
    time_t tt = (time_t)t;
    struct tm tm;
    if (!localtime_r(&tt, &tm)) {
        period_fixed(w, 0, t, start, end);
        return;
    }
    switch (w->kind) {
    case DSC_WINDOW_DAY:
        break;
    case DSC_WINDOW_WEEK:
        tm.tm_mday -= (tm.tm_wday + 6) % 7;
        break;
    case DSC_WINDOW_MONTH:
        tm.tm_mday = 1;
        break;
    default:
        tm.tm_mday = 1, tm.tm_mon = 0;
        break;
    }
    *start = local_midnight(&tm, 0, 0, 0);
    *end = local_midnight(&tm, w->kind == DSC_WINDOW_YEAR, w->kind == DSC_WINDOW_MONTH,
                          w->kind == DSC_WINDOW_DAY    ? 1
                          : w->kind == DSC_WINDOW_WEEK ? 7
                                                       : 0);
}

void dsc_window_period(const dsc_window *w, const dsc_tz *tz, int64_t t, int64_t *start,
                       int64_t *end) {
    if (tz && tz->local)
        period_local(w, t, start, end);
    else
        period_fixed(w, tz ? tz->offset_s : 0, t, start, end);
}

dsc_status dsc_window_counter_init(dsc_window_counter *c, const dsc_window *w) {
    memset(c, 0, sizeof *c);
    if (w->kind != DSC_WINDOW_ROLLING) return DSC_OK;
    c->buckets = calloc(DSC_WINDOW_BUCKETS + 1, sizeof *c->buckets);
    return c->buckets ? DSC_OK : DSC_NOMEM;
}

void dsc_window_counter_destroy(dsc_window_counter *c) {
    free(c->buckets);
    c->buckets = NULL;
}

static bool is_calendar(const dsc_window *w) {
    return w->kind <= DSC_WINDOW_YEAR;
}

static int64_t bucket_width(const dsc_window *w) {
    return w->span_us / DSC_WINDOW_BUCKETS;
}

/* Roll the calendar period forward to now; false when now is before the period. */
static bool calendar_advance(dsc_window_counter *c, const dsc_window *w, const dsc_tz *tz,
                             int64_t now_us) {
    if (c->b != 0 && now_us < c->a) return false;
    if (c->b == 0 || now_us >= c->b) {
        int64_t s, e;
        dsc_window_period(w, tz, floor_div(now_us, US_PER_S), &s, &e);
        c->a = s * US_PER_S;
        c->b = e * US_PER_S;
        c->used = 0;
    }
    return true;
}

static void rolling_advance(dsc_window_counter *c, const dsc_window *w, int64_t now_us) {
    int64_t idx = floor_div(now_us, bucket_width(w));
    if (idx <= c->head) return;
    int64_t n = DSC_WINDOW_BUCKETS + 1;
    if (idx - c->head >= n)
        memset(c->buckets, 0, (size_t)n * sizeof *c->buckets);
    else
        for (int64_t i = c->head + 1; i <= idx; i++)
            c->buckets[i % n] = 0;
    c->head = idx;
}

/* Refill the token bucket up to now, keeping the fraction of a micro-unit owed. */
static void rate_advance(dsc_window_counter *c, const dsc_window *w, int64_t now_us) {
    if (now_us <= c->a) return;
    if (c->used <= 0) {
        c->used = 0;
        c->a = now_us;
        return;
    }
    double refill = (double)w->rate_micro * (double)(now_us - c->a) / (double)w->span_us;
    if (refill >= (double)c->used) {
        c->used = 0;
        c->a = now_us;
        return;
    }
    int64_t whole = (int64_t)refill;
    c->used -= whole;
    c->a += (int64_t)((double)whole * (double)w->span_us / (double)w->rate_micro);
}

void dsc_window_counter_add(dsc_window_counter *c, const dsc_window *w, const dsc_tz *tz,
                            int64_t amount, int64_t now_us) {
    if (is_calendar(w)) {
        /* a correction may not take a period below zero: it belongs to an older one */
        if (calendar_advance(c, w, tz, now_us))
            c->used = c->used + amount > 0 ? c->used + amount : 0;
    } else if (w->kind == DSC_WINDOW_ROLLING) {
        rolling_advance(c, w, now_us);
        int64_t idx = floor_div(now_us, bucket_width(w));
        if (idx >= c->head - DSC_WINDOW_BUCKETS)
            c->buckets[idx % (DSC_WINDOW_BUCKETS + 1)] += amount;
    } else {
        if (c->a == 0) c->a = now_us;
        rate_advance(c, w, now_us);
        c->used = c->used + amount > 0 ? c->used + amount : 0;
    }
}

int64_t dsc_window_counter_used(dsc_window_counter *c, const dsc_window *w, const dsc_tz *tz,
                                int64_t now_us) {
    int64_t used = 0;
    if (is_calendar(w)) {
        used = calendar_advance(c, w, tz, now_us) ? c->used : 0;
    } else if (w->kind == DSC_WINDOW_ROLLING) {
        rolling_advance(c, w, now_us);
        for (int i = 0; i <= DSC_WINDOW_BUCKETS; i++)
            used += c->buckets[i];
    } else {
        rate_advance(c, w, now_us);
        used = c->used;
    }
    return used > 0 ? used : 0;
}

static int64_t ceil_div_pos(int64_t a, int64_t b) {
    return a <= 0 ? 0 : (a + b - 1) / b;
}

int64_t dsc_window_counter_resets_at(const dsc_window_counter *c, const dsc_window *w,
                                     int64_t now_us) {
    int64_t now_s = ceil_div_pos(now_us, US_PER_S);
    if (is_calendar(w)) return c->b ? c->b / US_PER_S : now_s;
    if (w->kind == DSC_WINDOW_ROLLING) {
        int64_t n = DSC_WINDOW_BUCKETS + 1;
        for (int64_t j = c->head - DSC_WINDOW_BUCKETS; j <= c->head; j++)
            if (c->buckets[((j % n) + n) % n] > 0)
                return ceil_div_pos((j + n) * bucket_width(w), US_PER_S);
        return now_s;
    }
    if (c->used <= 0) return now_s;
    double us = (double)c->used * (double)w->span_us / (double)w->rate_micro;
    return ceil_div_pos(c->a + (int64_t)ceil(us), US_PER_S);
}

int64_t dsc_window_wait_s(const dsc_window *w, int64_t level, int64_t request, int64_t limit,
                          int64_t resets_at, int64_t now_s) {
    double excess = (double)level + (double)request - (double)limit;
    if (excess <= 0) return 0;
    if (w->kind != DSC_WINDOW_RATE) return resets_at > now_s ? resets_at - now_s : 1;
    if (excess > (double)level) excess = (double)level; /* no more than an empty bucket */
    /* The refill is counted in whole micro-units, so level may be up to one too high:
     * allow for it rather than round a 30 s wait up to 31. */
    double us = (excess - 1) * (double)w->span_us / (double)w->rate_micro;
    int64_t s = (int64_t)ceil(us / (double)US_PER_S);
    return s > 0 ? s : 1;
}
