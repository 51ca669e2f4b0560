/*
 * report.c - usage reports summed from the store's charge events (see
 * discern/report.h), and a thread that runs them off the caller's thread.
 *
 * The SQL reads the charges of the event log (store_sqlite_schema.c: settles, expiries
 * and holds finished with them in one row, at their finish's time),
 * each of which names its subject and what its hold was for (provider, model,
 * purpose), from the newest checkpoint before the period on (the log has no index on
 * time). A report by team or user from the start of an hour takes the whole hours
 * that are rolled up from rollups (one sum per subject and hour) and only the charges
 * after them one by one, which sums exactly the same. Only names from fixed tables
 * below are ever pasted into it, every value is bound. A report opens its own read-only connection
 * (WAL: it never blocks the ledger's writer).
 */
#define _GNU_SOURCE /* pthread_setname_np */
#include "discern/report.h"

#include "store_sqlite_internal.h"

#include <pthread.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const by_names[] = {
#define DSC_REPORT_NAME(name, wire) wire,
    DSC_REPORT_BY_MAP(DSC_REPORT_NAME)
#undef DSC_REPORT_NAME
};
static const char *const period_names[] = {
#define DSC_REPORT_NAME(name, wire) wire,
    DSC_REPORT_PERIOD_MAP(DSC_REPORT_NAME)
#undef DSC_REPORT_NAME
};
#define N_BY (sizeof by_names / sizeof by_names[0])
#define N_PERIOD (sizeof period_names / sizeof period_names[0])

// clang-format off
#define SCOPE_TEXT "'org:' || ifnull(s.org, '') || CASE WHEN ifnull(s.team, '') <> '' THEN '/team:' || s.team ELSE '' END"
static const char *const group_sql[] = {
    [DSC_REPORT_BY_TEAM] = SCOPE_TEXT,
    [DSC_REPORT_BY_USER] = SCOPE_TEXT " || CASE WHEN ifnull(s.user, '') <> '' THEN '/user:' || s.user ELSE '' END",
    [DSC_REPORT_BY_MODEL] = "ifnull(pr.name || '/' || mo.name, '')",
    [DSC_REPORT_BY_PURPOSE] = "ifnull(pu.name, '')",
};
#define T "(u.at_us / 1000000)"
static const char *const period_sql[] = {
    [DSC_REPORT_HOUR] = "(" T " / 3600) * 3600",
    [DSC_REPORT_DAY] = "(" T " / 86400) * 86400",
    /* 1970-01-01 was a Thursday: day d's Monday is d - (d + 3) % 7. */
    [DSC_REPORT_WEEK] = "((" T " / 86400) - ((" T " / 86400) + 3) % 7) * 86400",
    [DSC_REPORT_MONTH] = "CAST(strftime('%s', " T ", 'unixepoch', 'start of month') AS INTEGER)",
};
// clang-format on

static const char *parse_name(const char *s, const char *const *names, size_t n, int *out) {
    for (size_t i = 0; i < n; i++)
        if (strcmp(s, names[i]) == 0) {
            *out = (int)i;
            return NULL;
        }
    return s;
}

dsc_status dsc_report_by_parse(const char *s, dsc_report_by *out, dsc_error *err) {
    int v = 0;
    if (parse_name(s, by_names, N_BY, &v))
        return dsc_error_set(err, DSC_BAD_REQUEST,
                             "field 'by': '%.64s' is not team, user, model or purpose", s);
    *out = (dsc_report_by)v;
    return DSC_OK;
}

dsc_status dsc_report_period_parse(const char *s, dsc_report_period *out, dsc_error *err) {
    int v = 0;
    if (parse_name(s, period_names, N_PERIOD, &v))
        return dsc_error_set(err, DSC_BAD_REQUEST,
                             "field 'period': '%.64s' is not hour, day, week or month", s);
    *out = (dsc_report_period)v;
    return DSC_OK;
}

const char *dsc_report_by_name(dsc_report_by by) {
    return (size_t)by < N_BY ? by_names[by] : "team";
}

const char *dsc_report_period_name(dsc_report_period p) {
    return (size_t)p < N_PERIOD ? period_names[p] : "day";
}

void dsc_report_clear(dsc_report *r) {
    free(r->rows);
    memset(r, 0, sizeof *r);
}

static void bind_opt(sqlite3_stmt *st, int i, const char *v) {
    if (v[0])
        sqlite3_bind_text(st, i, v, -1, SQLITE_TRANSIENT);
    else
        sqlite3_bind_null(st, i);
}

/* The hours [?1, ?6) from rollups, then the charges from seq ?7 on that are newer than
 * the rolled-up ones (seq > ?8) or at or after ?6; by model or purpose (which rollups
 * do not keep) ?6 = ?1 and ?8 = 0: every charge one by one, with what it was for from
 * the hold it names (a charge of a hold the writer knew carries only its seq). */
static int build_sql(const dsc_report_query *q, char *sql, size_t cap) {
    const char *m = dsc_metric_name(q->metric);
    return snprintf(
        sql, cap,
        "SELECT %s AS p, %s AS g, sum(u.v) FROM (SELECT r.hour_us AS at_us,"
        " r.subject AS subject, r.%s AS v, NULL AS provider, NULL AS model,"
        " NULL AS purpose FROM rollups r WHERE r.hour_us >= ?1 AND r.hour_us < ?6"
        " UNION ALL SELECT " DSC__SQ_FIN_AT(
            "e") " AS t, e.subject, e.%s,"
                 " ifnull(h.provider, e.provider), ifnull(h.model, e.model),"
                 " ifnull(h.purpose, e.purpose) FROM events e LEFT JOIN events h ON h.seq = e.hold"
                 " WHERE e.type IN (" DSC__SQ_CHARGE_TYPES
                 ") AND e.kind IS NOT NULL AND e.seq >= ?7"
                 " AND (e.seq > ?8 OR t >= ?6) AND t >= ?1 AND t < ?2) u"
                 " LEFT JOIN subjects s ON s.id = u.subject"
                 " LEFT JOIN names pr ON pr.id = u.provider LEFT JOIN names mo ON mo.id = u.model"
                 " LEFT JOIN names pu ON pu.id = u.purpose"
                 " WHERE (?3 IS NULL OR s.org = ?3) AND (?4 IS NULL OR s.team = ?4)"
                 " AND (?5 IS NULL OR s.user = ?5) GROUP BY p, g ORDER BY p, g LIMIT %d",
        period_sql[q->period], group_sql[q->by], m, m, DSC_REPORT_ROWS_MAX + 1);
}

/* ?6, ?7, ?8 of build_sql: where the rolled-up hours end, the first seq to read one by
 * one, and the newest rolled-up seq. */
static void bind_rolled(sqlite3 *db, sqlite3_stmt *st, const dsc_report_query *q) {
    int64_t since = q->since * 1000000, until = q->until * 1000000, seq = 0, at = 0;
    sqlite3_stmt *cp = NULL;
    if (sqlite3_prepare_v2(db, "SELECT seq, max_at_us FROM checkpoints ORDER BY seq DESC LIMIT 1",
                           -1, &cp, NULL) == SQLITE_OK &&
        sqlite3_step(cp) == SQLITE_ROW)
        seq = sqlite3_column_int64(cp, 0), at = sqlite3_column_int64(cp, 1);
    sqlite3_finalize(cp);
    int64_t end = dsc__sq_hour_of(at < until ? at : until);
    bool rolled = (q->by == DSC_REPORT_BY_TEAM || q->by == DSC_REPORT_BY_USER) && seq > 0 &&
                  since >= 0 && since % DSC__SQ_HOUR_US == 0 && end > since;
    if (!rolled) end = since, seq = 0;
    sqlite3_bind_int64(st, 6, end);
    sqlite3_bind_int64(st, 7, dsc__sq_first_seq_at(db, rolled ? end : since));
    sqlite3_bind_int64(st, 8, seq);
}

static dsc_status read_rows(sqlite3_stmt *st, dsc_report *out, dsc_error *err) {
    int rc;
    size_t cap = 0;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        if (out->n == DSC_REPORT_ROWS_MAX) {
            out->truncated = true;
            return DSC_OK;
        }
        if (out->n == cap) {
            cap = cap ? cap * 2 : 64;
            dsc_report_row *rows = realloc(out->rows, cap * sizeof *rows);
            if (!rows) return dsc_error_set(err, DSC_NOMEM, "out of memory for the report");
            out->rows = rows;
        }
        dsc_report_row *r = &out->rows[out->n++];
        r->period_start = sqlite3_column_int64(st, 0);
        const unsigned char *g = sqlite3_column_text(st, 1);
        snprintf(r->group, sizeof r->group, "%s", g ? (const char *)g : "");
        r->value = sqlite3_column_int64(st, 2);
    }
    if (rc != SQLITE_DONE)
        return dsc_error_set(err, DSC_STORE_UNAVAILABLE, "report: %s", sqlite3_errstr(rc));
    return DSC_OK;
}

dsc_status dsc_report_run(const char *path, const dsc_report_query *q, dsc_report *out,
                          dsc_error *err) {
    memset(out, 0, sizeof *out);
    if ((size_t)q->by >= N_BY || (size_t)q->period >= N_PERIOD || q->metric < 0 ||
        q->metric >= DSC_METRIC_COUNT)
        return dsc_error_set(err, DSC_BAD_REQUEST, "report: invalid query");
    char sql[2048];
    if (build_sql(q, sql, sizeof sql) >= (int)sizeof sql)
        return dsc_error_set(err, DSC_INTERNAL, "report: query too long");
    sqlite3 *db = NULL;
    sqlite3_stmt *st = NULL;
    dsc_status res = DSC_OK;
    if (sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL) != SQLITE_OK ||
        sqlite3_busy_timeout(db, 2000) != SQLITE_OK ||
        sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK) {
        res = dsc_error_set(err, DSC_STORE_UNAVAILABLE, "report: %s",
                            db ? sqlite3_errmsg(db) : "cannot open the store");
        goto fail;
    }
    sqlite3_bind_int64(st, 1, q->since * 1000000);
    sqlite3_bind_int64(st, 2, q->until * 1000000);
    bind_opt(st, 3, q->org);
    bind_opt(st, 4, q->team);
    bind_opt(st, 5, q->user);
    bind_rolled(db, st, q);
    res = read_rows(st, out, err);
fail:
    if (res != DSC_OK) dsc_report_clear(out);
    sqlite3_finalize(st);
    sqlite3_close(db);
    return res;
}

/* ------------------------------------------------------------------ reporter -- */

typedef struct task {
    struct task *next;
    dsc_report_query q;
    dsc_report_done done;
    void *ud;
} task;

struct dsc_reporter {
    char path[4096];
    pthread_mutex_t mu;
    pthread_cond_t cv;
    pthread_t thread;
    bool started, stop;
    task *head, *tail;
};

static void *reporter_main(void *arg) {
    dsc_reporter *r = arg;
    pthread_mutex_lock(&r->mu);
    for (;;) {
        while (!r->head && !r->stop)
            pthread_cond_wait(&r->cv, &r->mu);
        task *t = r->head;
        if (!t) break;
        r->head = t->next;
        if (!r->head) r->tail = NULL;
        pthread_mutex_unlock(&r->mu);
        dsc_error err = {DSC_OK, ""};
        dsc_report rep;
        dsc_status st = dsc_report_run(r->path, &t->q, &rep, &err);
        t->done(t->ud, st, &err, &rep);
        free(t);
        pthread_mutex_lock(&r->mu);
    }
    pthread_mutex_unlock(&r->mu);
    return NULL;
}

dsc_reporter *dsc_reporter_new(const char *path) {
    dsc_reporter *r = calloc(1, sizeof *r);
    if (!r || strlen(path) >= sizeof r->path) {
        free(r);
        return NULL;
    }
    memcpy(r->path, path, strlen(path) + 1);
    pthread_mutex_init(&r->mu, NULL);
    pthread_cond_init(&r->cv, NULL);
    return r;
}

dsc_status dsc_reporter_submit(dsc_reporter *r, const dsc_report_query *q, dsc_report_done done,
                               void *ud) {
    task *t = calloc(1, sizeof *t);
    if (!t) return DSC_NOMEM;
    t->q = *q;
    t->done = done;
    t->ud = ud;
    pthread_mutex_lock(&r->mu);
    if (!r->started && pthread_create(&r->thread, NULL, reporter_main, r) == 0) {
        r->started = true;
        pthread_setname_np(r->thread, "dsc-report"); /* a name only */
    }
    if (!r->started || r->stop) {
        pthread_mutex_unlock(&r->mu);
        free(t);
        return DSC_INTERNAL;
    }
    *(r->tail ? &r->tail->next : &r->head) = t;
    r->tail = t;
    pthread_cond_signal(&r->cv);
    pthread_mutex_unlock(&r->mu);
    return DSC_OK;
}

void dsc_reporter_free(dsc_reporter *r) {
    if (!r) return;
    pthread_mutex_lock(&r->mu);
    r->stop = true;
    pthread_cond_signal(&r->cv);
    bool started = r->started;
    pthread_mutex_unlock(&r->mu);
    if (started) pthread_join(r->thread, NULL);
    pthread_mutex_destroy(&r->mu);
    pthread_cond_destroy(&r->cv);
    free(r);
}
