/*
 * log.h - structured log lines to stderr, one line per event, logfmt style:
 *
 *   ts=2026-11-22T02:20:17.123Z level=info event=listening transport=tcp addr=127.0.0.1:7878
 *
 * Each line is formatted into one buffer and written with a single write(2), so
 * lines from different threads never interleave. Secrets (the admin token) are
 * never passed here.
 */
#ifndef DISCERN_SERVER_LOG_H
#define DISCERN_SERVER_LOG_H

#include "config.h"

typedef struct dsc_log {
    dsc_log_level level; /* lines below this level are dropped */
    int fd;              /* 2 = stderr */
} dsc_log;

/* Write "ts=... level=... event=<event> " then fmt's key=value pairs, if level is
 * enabled. Truncates lines over 1 KiB. */
void dsc_log_write(const dsc_log *log, dsc_log_level level, const char *event, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

#endif
