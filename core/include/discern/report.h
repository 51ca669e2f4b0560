/*
 * report.h - usage reports: what the store's charges add up to, by group and period.
 *
 * A report sums one metric of the `charges` table (every settle, late settle,
 * unreserved settle and expiry charge) per period (UTC hour, day, ISO week from
 * Monday, calendar month) and group (org/team, org/team/user, provider/model of the
 * check that made the hold, its purpose), for charges at since <= t < until, within
 * an optional org/team/user filter. Sums are exact: micro-units added as integers.
 *
 *   dsc_report_query q = {DSC_REPORT_BY_TEAM, DSC_REPORT_DAY, DSC_METRIC_GCO2E, since, until};
 *   dsc_report rep;
 *   dsc_report_run("var/discern.db", &q, &rep, &err);    rows ordered by period, group
 *   dsc_report_clear(&rep);
 *
 * dsc_reporter runs reports on a thread of its own with a read-only connection, so
 * that whoever asks (a server worker) never waits for the disk:
 *
 *   dsc_reporter *r = dsc_reporter_new("var/discern.db");
 *   dsc_reporter_submit(r, &q, done, ud);   done(ud, st, err, &rep) on that thread;
 *                                           done owns rep (dsc_report_clear it)
 *   dsc_reporter_free(r);                   runs what was submitted, then stops
 */
#ifndef DISCERN_REPORT_H
#define DISCERN_REPORT_H

#include "discern/ledger.h"
#include "discern/status.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define DSC_REPORT_ROWS_MAX 10000 /* rows of one report; more sets truncated */
#define DSC_REPORT_GROUP_MAX 200

/* XX(name, wire name) */
#define DSC_REPORT_BY_MAP(XX)                                                                      \
    XX(TEAM, "team") XX(USER, "user") XX(MODEL, "model") XX(PURPOSE, "purpose")
#define DSC_REPORT_PERIOD_MAP(XX)                                                                  \
    XX(HOUR, "hour") XX(DAY, "day") XX(WEEK, "week") XX(MONTH, "month")

typedef enum dsc_report_by {
#define DSC_REPORT_ENUM(name, wire) DSC_REPORT_BY_##name,
    DSC_REPORT_BY_MAP(DSC_REPORT_ENUM)
#undef DSC_REPORT_ENUM
} dsc_report_by;

typedef enum dsc_report_period {
#define DSC_REPORT_ENUM(name, wire) DSC_REPORT_##name,
    DSC_REPORT_PERIOD_MAP(DSC_REPORT_ENUM)
#undef DSC_REPORT_ENUM
} dsc_report_period;

typedef struct dsc_report_query {
    dsc_report_by by;
    dsc_report_period period;
    dsc_metric metric;
    int64_t since, until;   /* unix seconds, since <= t < until */
    char org[DSC_NAME_MAX]; /* "" = any */
    char team[DSC_NAME_MAX];
    char user[DSC_NAME_MAX];
} dsc_report_query;

typedef struct dsc_report_row {
    int64_t period_start; /* unix seconds (UTC) */
    char group[DSC_REPORT_GROUP_MAX];
    int64_t value; /* micro-units of the metric */
} dsc_report_row;

typedef struct dsc_report {
    dsc_report_row *rows;
    size_t n;
    bool truncated; /* more than DSC_REPORT_ROWS_MAX rows existed */
} dsc_report;

/* Parse a wire name; DSC_BAD_REQUEST naming the accepted values otherwise. */
dsc_status dsc_report_by_parse(const char *s, dsc_report_by *out, dsc_error *err);
dsc_status dsc_report_period_parse(const char *s, dsc_report_period *out, dsc_error *err);
const char *dsc_report_by_name(dsc_report_by by);
const char *dsc_report_period_name(dsc_report_period p);

/* Run q on the store file at path (read-only). DSC_STORE_UNAVAILABLE when it cannot
 * be read; out is empty then. */
dsc_status dsc_report_run(const char *path, const dsc_report_query *q, dsc_report *out,
                          dsc_error *err);
void dsc_report_clear(dsc_report *r);

typedef struct dsc_reporter dsc_reporter;
typedef void (*dsc_report_done)(void *ud, dsc_status st, const dsc_error *err, dsc_report *rep);
/* A reporter on the store at path (its thread starts with the first report). */
dsc_reporter *dsc_reporter_new(const char *path);
/* Queue q; done runs once, on the reporter's thread. DSC_NOMEM / DSC_INTERNAL when it
 * cannot be queued (done does not run). */
dsc_status dsc_reporter_submit(dsc_reporter *r, const dsc_report_query *q, dsc_report_done done,
                               void *ud);
/* Run the queued reports, stop the thread, free r (NULL is a no-op). */
void dsc_reporter_free(dsc_reporter *r);

#endif
