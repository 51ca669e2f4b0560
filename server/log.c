/*
 * log.c - structured log lines (see log.h).
 */
#include "log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define LOG_LINE_MAX 1024

static size_t put_time(char *buf, size_t cap) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct tm tm;
    gmtime_r(&ts.tv_sec, &tm);
    size_t n = strftime(buf, cap, "ts=%Y-%m-%dT%H:%M:%S", &tm);
    int m = snprintf(buf + n, cap - n, ".%03ldZ", ts.tv_nsec / 1000000);
    return n + (m > 0 ? (size_t)m : 0);
}

void dsc_log_write(const dsc_log *log, dsc_log_level level, const char *event, const char *fmt,
                   ...) {
    if (!log || level < log->level) return;
    char line[LOG_LINE_MAX];
    size_t n = put_time(line, sizeof line);
    int m =
        snprintf(line + n, sizeof line - n, " level=%s event=%s", dsc_log_level_name(level), event);
    if (m > 0) n += (size_t)m;
    if (fmt && *fmt && n < sizeof line - 2) {
        line[n++] = ' ';
        va_list ap;
        va_start(ap, fmt);
        m = vsnprintf(line + n, sizeof line - n, fmt, ap);
        va_end(ap);
        if (m > 0) n += (size_t)m;
    }
    if (n > sizeof line - 2) n = sizeof line - 2;
    line[n++] = '\n';
    ssize_t w = write(log->fd, line, n);
    (void)w; /* nowhere left to report a failed log write */
}
