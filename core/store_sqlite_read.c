/*
 * store_sqlite_read.c - the SQLite store's reads: the reload on open, a new budget's
 * history, the recall of a forgotten reservation.
 *
 * Everything reads the event log (store_sqlite_schema.c), which has no index but its
 * seq: a read that starts at a time starts at the seq the checkpoints give for it
 * (dsc__sq_first_seq_at: every event before is older) and skips, in order, the events
 * before the first one at or after that time, which is exactly where a read by time
 * started when the log had an index on at_us. The reload: budgets (the budgets view),
 * holds with no settle, cancel or expiry after them, the newest finished reservations
 * (their newest event's state, the sum of what they were charged, the request id of
 * their hold), then the charges of the longest budget window in commit order. A new
 * budget's history reads the rolled-up hours per subject and hour, or, for a budget
 * over every value of a level (team:*), summed per value and span of its window
 * (scan_by_level: a subject id indexes its value, no join), then the raw tail.
 */
#include "store_sqlite_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef dsc__sq_store sq_store;

#define US 1000000LL

// clang-format off
#define RID(t) "CASE typeof(" t ".rid) WHEN 'blob' THEN 'r' || lower(hex(" t ".rid)) ELSE " t ".rid END"
#define AMOUNTS(t) t ".energy_wh, " t ".gco2e, " t ".water_ml, " t ".pe_mj, " t ".cost, " t ".tokens, " t ".requests"
#define SUBJECT "ifnull(s.org, ''), ifnull(s.team, ''), ifnull(s.user, ''), ifnull(s.key, '')"
#define WHAT "ow.name, pr.name, mo.name, zo.name, pu.name"
#define JOIN_SUBJECT(t) " LEFT JOIN subjects s ON s.id = " t ".subject"
#define JOIN_WHAT(t) \
    " LEFT JOIN names ow ON ow.id = " t ".owner LEFT JOIN names pr ON pr.id = " t ".provider" \
    " LEFT JOIN names mo ON mo.id = " t ".model LEFT JOIN names zo ON zo.id = " t ".zone" \
    " LEFT JOIN names pu ON pu.id = " t ".purpose"
/* the same for a finishing event t whose hold is k: the hold's, else t's own */
#define OF(t, k, c) "ifnull(" k "." c ", " t "." c ")"
#define JOIN_WHAT_OF(t, k) \
    " LEFT JOIN names ow ON ow.id = " OF(t, k, "owner") " LEFT JOIN names pr ON pr.id = " \
    OF(t, k, "provider") " LEFT JOIN names mo ON mo.id = " OF(t, k, "model") \
    " LEFT JOIN names zo ON zo.id = " OF(t, k, "zone") " LEFT JOIN names pu ON pu.id = " \
    OF(t, k, "purpose")

static const char budgets_sql[] =
    "SELECT id, selector, metric, window, limit_micro FROM budgets ORDER BY id";
/* ?1: the first seq that can hold an open hold */
static const char held_sql[] =
    "SELECT " RID("r") ", r.request_id, " SUBJECT ", r.at_us, r.expires_us, " AMOUNTS("r") ", " WHAT
    ", r.seq FROM events r" JOIN_SUBJECT("r") JOIN_WHAT("r")
    " WHERE r.type IN (1, 2) AND r.seq >= ?1 AND r.rid NOT IN (SELECT rid FROM events"
    " WHERE type IN (3, 4, 5) AND seq >= ?1 AND rid IS NOT NULL) AND r.seq NOT IN (SELECT hold"
    " FROM events WHERE type IN (3, 4, 5) AND seq >= ?1 AND hold IS NOT NULL) ORDER BY r.seq";
/* ?1: the first seq of the finished ones' events, ?2: finished since, ?3: how many;
 * the request id from the hold each event names */
static const char finished_sql[] =
    "SELECT * FROM (SELECT " RID("fin") ", ifnull(h.request_id, f.request_id), " SUBJECT ","
    " st.name, " DSC__SQ_FIN_AT("f") " AS fin_at, "
    AMOUNTS("fin") ", " WHAT " FROM (SELECT " DSC__SQ_RID_OF("e", "k") " AS rid, max(e.seq) AS last,"
    " max(e.hold) AS hold, sum(e.energy_wh) AS energy_wh, sum(e.gco2e) AS gco2e,"
    " sum(e.water_ml) AS water_ml, sum(e.pe_mj) AS pe_mj, sum(e.cost) AS cost,"
    " sum(e.tokens) AS tokens, sum(e.requests) AS requests FROM events e"
    " LEFT JOIN events k ON k.seq = e.hold WHERE e.type IN (" DSC__SQ_FINISH_TYPES ") AND e.seq >= ?1"
    " AND " DSC__SQ_RID_OF("e", "k") " IS NOT NULL GROUP BY 1) fin"
    " JOIN events f ON f.seq = fin.last LEFT JOIN events h ON h.seq = fin.hold"
    " LEFT JOIN names st ON st.id = f.state" JOIN_SUBJECT("f") JOIN_WHAT_OF("f", "h")
    " WHERE fin_at >= ?2 ORDER BY fin_at DESC LIMIT ?3) ORDER BY fin_at";
/* the charges: at_us, subject, amounts, seq; as hourly sums with seq 0 */
#define CHARGES_HEAD \
    "SELECT " DSC__SQ_FIN_AT("e") ", " SUBJECT ", " AMOUNTS("e") ", e.seq FROM events e" \
    JOIN_SUBJECT("e") " WHERE e.type IN (" DSC__SQ_CHARGE_TYPES ") AND e.kind IS NOT NULL"
#define ROLLUPS_HEAD \
    "SELECT r.hour_us, " SUBJECT ", " AMOUNTS("r") ", 0 FROM rollups r" JOIN_SUBJECT("r") \
    " WHERE 1"
/* ?1: the first seq that can hold the hold, ?2: its id */
static const char find_sql[] =
    "SELECT e.type, " SUBJECT ", st.name, " AMOUNTS("e") ", " WHAT " FROM events e"
    JOIN_SUBJECT("e") " LEFT JOIN names st ON st.id = e.state" JOIN_WHAT("e")
    " WHERE (e.rid = ?2 OR e.hold = ?1) AND e.seq >= ?1 AND e.type IN (" DSC__SQ_HOLD_TYPES ", "
    DSC__SQ_FINISH_TYPES ")"
    " ORDER BY e.seq";
static const char find_hold_sql[] =
    "SELECT seq FROM events WHERE seq BETWEEN ?1 AND ?2 AND rid = ?3"
    " AND type IN (" DSC__SQ_HOLD_TYPES ")"
    " LIMIT 1";
// clang-format on

int64_t dsc__sq_first_seq_at(sqlite3 *db, int64_t at_us) {
    sqlite3_stmt *st = NULL;
    int64_t seq = 1;
    if (sqlite3_prepare_v2(db,
                           "SELECT coalesce(max(seq), 0) + 1 FROM checkpoints WHERE max_at_us < ?1",
                           -1, &st, NULL) == SQLITE_OK) {
        sqlite3_bind_int64(st, 1, at_us);
        if (sqlite3_step(st) == SQLITE_ROW) seq = sqlite3_column_int64(st, 0);
    }
    sqlite3_finalize(st);
    return seq;
}

dsc_status dsc__sq_open_conn(const char *path, sqlite3 **db, dsc_error *err) {
    int rc = sqlite3_open_v2(
        path, db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, NULL);
    if (rc != SQLITE_OK) {
        dsc_error_set(err, DSC_STORE_UNAVAILABLE, "ledger store: cannot open '%s': %s", path,
                      *db ? sqlite3_errmsg(*db) : sqlite3_errstr(rc));
        sqlite3_close(*db);
        *db = NULL;
        return DSC_STORE_UNAVAILABLE;
    }
    sqlite3_busy_timeout(*db, 5000);
    return DSC_OK;
}

/* --- columns ---------------------------------------------------------------------- */

static void col_text(sqlite3_stmt *st, int i, char *dst, size_t max) {
    const unsigned char *v = sqlite3_column_text(st, i);
    snprintf(dst, max, "%s", v ? (const char *)v : "");
}

static void col_amounts(sqlite3_stmt *st, int first, dsc_amounts *a) {
    for (int m = 0; m < DSC_METRIC_COUNT; m++)
        a->v[m] = sqlite3_column_int64(st, first + m);
}

static void col_subject(sqlite3_stmt *st, int first, dsc__rec_subject *s) {
    col_text(st, first, s->org, sizeof s->org);
    col_text(st, first + 1, s->team, sizeof s->team);
    col_text(st, first + 2, s->user, sizeof s->user);
    col_text(st, first + 3, s->key, sizeof s->key);
}

/* WHAT from column first on, into rec's decision fields. */
static void col_what(sqlite3_stmt *st, int first, dsc__rec *rec) {
    dsc__rec_decision *d = &rec->u.decision;
    col_text(st, first, d->key_id, sizeof d->key_id);
    col_text(st, first + 1, d->provider, sizeof d->provider);
    col_text(st, first + 2, d->model, sizeof d->model);
    col_text(st, first + 3, d->zone, sizeof d->zone);
    col_text(st, first + 4, d->purpose, sizeof d->purpose);
}

/* --- running a read ------------------------------------------------------------------ */

typedef dsc_status (*row_fn)(void *ctx, sqlite3_stmt *st, dsc__rec *rec);

/* Run the prepared st (on db) with ints bound to ?1.. and texts (NULL-ended, may be
 * NULL) after them, handing each row to fn. st is reset, not finalized. */
static dsc_status each_row_stmt(sqlite3 *db, sqlite3_stmt *st, const int64_t *ints, int n_ints,
                                const char *const *texts, void *ctx, row_fn fn, dsc_error *err) {
    dsc__rec *rec = calloc(1, sizeof *rec);
    if (!rec) return dsc_error_set(err, DSC_NOMEM, "out of memory loading the ledger");
    dsc_status res = DSC_OK;
    for (int i = 0; i < n_ints; i++)
        sqlite3_bind_int64(st, i + 1, ints[i]);
    for (int i = 0; texts && texts[i]; i++)
        sqlite3_bind_text(st, n_ints + i + 1, texts[i], -1, SQLITE_STATIC);
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW)
        if ((res = fn(ctx, st, rec)) != DSC_OK) {
            dsc_error_set(err, res, "ledger store: rebuilding the counters failed (%s)",
                          dsc_status_message(res));
            goto out;
        }
    if (rc != SQLITE_DONE) res = dsc__sq_db_error(db, "loading", err);
out:
    sqlite3_reset(st);
    free(rec);
    return res;
}

static dsc_status each_row(sqlite3 *db, const char *sql, const int64_t *ints, int n_ints, void *ctx,
                           row_fn fn, dsc_error *err) {
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK)
        return dsc__sq_db_error(db, "loading", err);
    dsc_status res = each_row_stmt(db, st, ints, n_ints, NULL, ctx, fn, err);
    sqlite3_finalize(st);
    return res;
}

/* --- the reload ------------------------------------------------------------------- */

static dsc_status row_budget(void *ctx, sqlite3_stmt *st, dsc__rec *rec) {
    dsc__store_loader *ld = ctx;
    dsc__rec_budget *b = &rec->u.budget;
    b->id = sqlite3_column_int64(st, 0);
    col_text(st, 1, b->selector, sizeof b->selector);
    if (dsc_metric_parse((const char *)sqlite3_column_text(st, 2), &b->metric) != DSC_OK)
        return DSC_OK; /* an unknown metric: skipped */
    col_text(st, 3, b->window, sizeof b->window);
    b->limit = sqlite3_column_int64(st, 4);
    return ld->budget(ld->ud, b);
}

typedef struct held_ctx {
    sq_store *s;
    dsc__store_loader *ld;
} held_ctx;

static dsc_status row_held(void *ctx, sqlite3_stmt *st, dsc__rec *rec) {
    held_ctx *h = ctx;
    dsc__store_loader *ld = h->ld;
    col_text(st, 0, rec->reservation_id, sizeof rec->reservation_id);
    col_text(st, 1, rec->request_id, sizeof rec->request_id);
    col_subject(st, 2, &rec->subject);
    rec->expires_us = sqlite3_column_int64(st, 7);
    col_amounts(st, 8, &rec->amounts);
    col_what(st, 8 + DSC_METRIC_COUNT, rec);
    dsc__sq_hold_open(h->s, rec->reservation_id, sqlite3_column_int64(st, 13 + DSC_METRIC_COUNT));
    return ld->held(ld->ud, rec, sqlite3_column_int64(st, 6));
}

static dsc_status row_finished(void *ctx, sqlite3_stmt *st, dsc__rec *rec) {
    dsc__store_loader *ld = ctx;
    col_text(st, 0, rec->reservation_id, sizeof rec->reservation_id);
    col_text(st, 1, rec->request_id, sizeof rec->request_id);
    col_subject(st, 2, &rec->subject);
    char buf[16];
    col_text(st, 6, buf, sizeof buf);
    rec->state = buf;
    col_amounts(st, 8, &rec->amounts);
    col_what(st, 8 + DSC_METRIC_COUNT, rec);
    dsc_status res = ld->finished(ld->ud, rec, sqlite3_column_int64(st, 7));
    rec->state = NULL;
    return res;
}

/* A read of charges by time: the events before the first at or after since are
 * skipped (the scan may start a little earlier, at a checkpoint). */
typedef struct charge_scan {
    dsc__replay_fn fn;
    void *ud;
    int64_t since_us, last_seq;
    bool started, any;
} charge_scan;

static dsc_status row_charge(void *ctx, sqlite3_stmt *st, dsc__rec *rec) {
    charge_scan *c = ctx;
    rec->at_us = sqlite3_column_int64(st, 0);
    if (!c->started && rec->at_us < c->since_us) return DSC_OK;
    c->started = true;
    int64_t seq = sqlite3_column_int64(st, 5 + DSC_METRIC_COUNT);
    if (seq) { /* 0: an hour's sum */
        c->any = true;
        c->last_seq = seq;
    }
    col_subject(st, 1, &rec->subject);
    col_amounts(st, 5, &rec->amounts);
    return c->fn(c->ud, rec);
}

static dsc_status load_charge(void *ud, const dsc__rec *charge) {
    dsc__store_loader *ld = ud;
    return ld->charge(ld->ud, charge);
}

static dsc_status load_finished(sq_store *s, dsc__store_loader *ld, dsc_error *err) {
    int64_t since = ld->finished_since_us, from = dsc__sq_first_seq_at(s->db, since);
    int64_t ints[3] = {from, since, ld->finished_max ? (int64_t)ld->finished_max : -1};
    return each_row(s->db, finished_sql, ints, 3, ld, row_finished, err);
}

static dsc_status scan_charges(sq_store *s, sqlite3 *db, bool cached, int64_t since_us,
                               const dsc__replay_filter *f, int metric, dsc__replay_fn fn, void *ud,
                               int64_t *last_seq);

dsc_status dsc__sq_load(dsc__store *base, dsc__store_loader *ld, dsc_error *err) {
    sq_store *s = (sq_store *)base;
    dsc_status res = each_row(s->db, budgets_sql, NULL, 0, ld, row_budget, err);
    if (res != DSC_OK) return res;
    if (ld->budgets_done) ld->budgets_done(ld->ud, ld);
    held_ctx h = {s, ld};
    s->holds_known = true; /* unless one cannot be remembered (dsc__sq_hold_open) */
    if ((res = each_row(s->db, held_sql, &s->held_from, 1, &h, row_held, err)) != DSC_OK) {
        s->holds_known = false;
        return res;
    }
    if ((res = load_finished(s, ld, err)) != DSC_OK) return res;
    dsc__replay_filter every = {.hourly_before_us = ld->hourly_before_us};
    res = scan_charges(s, s->db, false, ld->since_us, &every, -1, load_charge, ld, NULL);
    if (res != DSC_OK)
        return dsc_error_set(err, res, "ledger store: rebuilding the counters failed (%s)",
                             dsc_status_message(res));
    return DSC_OK;
}

/* --- a forgotten reservation ------------------------------------------------------ */

/* The 12 hex digits of an id's counter as the 6 bytes the log stores them in. */
static bool hex_counter(const char *hex, unsigned char out[6]) {
    for (int i = 0; i < 12; i++) {
        char c = hex[i];
        int v = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
        if (v < 0) return false;
        if (i % 2 == 0)
            out[i / 2] = (unsigned char)(v << 4);
        else
            out[i / 2] |= (unsigned char)v;
    }
    return true;
}

/* The seqs that can hold the hold of id, [*from, *to]: the ledger's ids start with a
 * counter that grows in the log's order, and each checkpoint keeps the largest counter
 * of a hold up to its seq (max_rid), so the hold lies after the last checkpoint below
 * its counter and at or before the first one at or above it: at most the events of
 * one checkpoint interval, whatever the id (a made-up one costs no more). Ids of an
 * older shape come only from a migrated file, whose events all precede its first
 * checkpoint (written by the migration). */
static const char *const recall_sql[DSC__SQ_RD_COUNT] = {
    [DSC__SQ_RD_FIND] = find_sql,
    [DSC__SQ_RD_FIND_HOLD] = find_hold_sql,
    [DSC__SQ_RD_BELOW] = "SELECT seq + 1 FROM checkpoints WHERE max_rid < ?1"
                         " ORDER BY max_rid DESC, seq DESC LIMIT 1",
    [DSC__SQ_RD_ABOVE] =
        "SELECT seq FROM checkpoints WHERE max_rid >= ?1 ORDER BY max_rid, seq LIMIT 1",
    [DSC__SQ_RD_FIRST] = "SELECT min(seq) FROM checkpoints"};

/* The reader's statement i of recall_sql (rmu held, rdb open), prepared once. */
static sqlite3_stmt *recall_stmt(sq_store *s, int i) {
    if (!s->rst[i] && sqlite3_prepare_v3(s->rdb, recall_sql[i], -1, SQLITE_PREPARE_PERSISTENT,
                                         &s->rst[i], NULL) != SQLITE_OK) {
        sqlite3_finalize(s->rst[i]);
        s->rst[i] = NULL;
    }
    return s->rst[i];
}

/* Statement i with the blob b[0..n) (NULL: nothing) bound to ?1: its one integer into
 * *v when it has a row with one. */
static void recall_int(sq_store *s, int i, const unsigned char *b, int n, int64_t *v) {
    sqlite3_stmt *st = recall_stmt(s, i);
    if (!st) return;
    if (b) sqlite3_bind_blob(st, 1, b, n, SQLITE_STATIC);
    if (sqlite3_step(st) == SQLITE_ROW && sqlite3_column_type(st, 0) != SQLITE_NULL)
        *v = sqlite3_column_int64(st, 0);
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
}

static void hold_range(sq_store *s, const char *id, int64_t *from, int64_t *to) {
    *from = 1, *to = INT64_MAX;
    unsigned char counter[6];
    if (strlen(id) == 37 && hex_counter(id + 1, counter)) {
        recall_int(s, DSC__SQ_RD_BELOW, counter, sizeof counter, from);
        recall_int(s, DSC__SQ_RD_ABOVE, counter, sizeof counter, to);
    } else {
        recall_int(s, DSC__SQ_RD_FIRST, NULL, 0, to);
    }
}

/* The seq of id's hold, 0 when the log has none: found within hold_range. */
static int64_t hold_seq(sq_store *s, const char *id) {
    int64_t from, to, seq = 0;
    hold_range(s, id, &from, &to);
    sqlite3_stmt *st = recall_stmt(s, DSC__SQ_RD_FIND_HOLD);
    if (!st) return 0;
    sqlite3_bind_int64(st, 1, from);
    sqlite3_bind_int64(st, 2, to);
    dsc__sq_bind_rid(st, 3, id);
    if (sqlite3_step(st) == SQLITE_ROW) seq = sqlite3_column_int64(st, 0);
    sqlite3_reset(st);
    sqlite3_clear_bindings(st); /* the id was the caller's */
    return seq;
}

typedef struct found {
    dsc__rec *out;
    const char **state;
    bool any, what;
} found;

static dsc_status row_found(void *ctx, sqlite3_stmt *st, dsc__rec *rec) {
    (void)rec;
    static const char *const states[] = {"held", "settled", "cancelled", "expired", "released"};
    found *f = ctx;
    int type = sqlite3_column_int(st, 0);
    if (!f->any) col_subject(st, 1, &f->out->subject);
    f->any = true;
    if (!f->what) { /* the hold's, or the first event's when the hold is gone */
        col_what(st, 6 + DSC_METRIC_COUNT, f->out);
        f->what = true;
    }
    if (type == DSC__EV_HOLD || type == DSC__EV_HOLD_DECISION) {
        if (!*f->state) *f->state = states[0];
        return DSC_OK;
    }
    const char *v = (const char *)sqlite3_column_text(st, 5);
    for (size_t i = 1; v && i < sizeof states / sizeof states[0]; i++)
        if (strcmp(v, states[i]) == 0) *f->state = states[i];
    dsc_amounts a;
    col_amounts(st, 6, &a);
    for (int m = 0; m < DSC_METRIC_COUNT; m++)
        f->out->amounts.v[m] = dsc__sq_add(f->out->amounts.v[m], a.v[m]);
    return DSC_OK;
}

dsc_status dsc__sq_find_reservation(dsc__store *base, const char *id, dsc__rec *out,
                                    const char **state) {
    sq_store *s = (sq_store *)base;
    dsc_status res = DSC_UNKNOWN_RESERVATION;
    found f = {out, state, false, false};
    *state = NULL;
    memset(&out->amounts, 0, sizeof out->amounts);
    pthread_mutex_lock(&s->rmu);
    if (!s->rdb && dsc__sq_open_conn(s->path, &s->rdb, NULL) != DSC_OK) goto out;
    sqlite3_stmt *st = recall_stmt(s, DSC__SQ_RD_FIND);
    int64_t hold = st ? hold_seq(s, id) : 0;
    if (!hold) goto out;
    sqlite3_bind_int64(st, 1, hold);
    dsc__sq_bind_rid(st, 2, id);
    dsc_status r = each_row_stmt(s->rdb, st, NULL, 0, NULL, &f, row_found, NULL);
    sqlite3_clear_bindings(st);
    if (r == DSC_OK && f.any && *state) res = DSC_OK;
out:
    pthread_mutex_unlock(&s->rmu);
    return res;
}

/* --- a new budget's history --------------------------------------------------------- */

/* The reader's prepared statement for sql (rmu held, rdb open), prepared once. */
static sqlite3_stmt *reader_stmt(sq_store *s, const char *sql) {
    enum { N = sizeof s->rcache / sizeof s->rcache[0] };
    for (int i = 0; i < N; i++)
        if (s->rcache[i].sql && strcmp(s->rcache[i].sql, sql) == 0) return s->rcache[i].st;
    int i = s->rcache_next++ % N;
    sqlite3_finalize(s->rcache[i].st);
    free(s->rcache[i].sql);
    s->rcache[i].st = NULL;
    s->rcache[i].sql = NULL;
    sqlite3_stmt *st = NULL;
    char *copy = strdup(sql);
    if (!copy ||
        sqlite3_prepare_v3(s->rdb, sql, -1, SQLITE_PREPARE_PERSISTENT, &st, NULL) != SQLITE_OK) {
        free(copy);
        sqlite3_finalize(st);
        return NULL;
    }
    s->rcache[i].st = st;
    s->rcache[i].sql = copy;
    return st;
}

/* The conditions of a scan of table t ("e" or "r"): metric (< 0: any) non-zero, and
 * filter's subject; its subject values become ?5, ?6, ... in texts. */
static void scan_conds(const dsc__replay_filter *f, int metric, const char *t, char *sql,
                       size_t cap, const char *texts[5]) {
    static const char *const cols[4] = {"org", "team", "user", "key"};
    size_t n = 0, len = 0;
    sql[0] = '\0';
    if (metric >= 0)
        len += (size_t)snprintf(sql, cap, " AND %s.%s != 0", t, dsc_metric_name(metric));
    for (int i = 0; i < 4 && len < cap; i++) {
        if (!f->subject[i]) continue;
        if (!f->subject[i][0]) {
            len += (size_t)snprintf(sql + len, cap - len, " AND s.%s <> ''", cols[i]);
            continue;
        }
        texts[n++] = f->subject[i];
        len += (size_t)snprintf(sql + len, cap - len, " AND s.%s = ?%zu", cols[i], n + 4);
    }
    texts[n] = NULL;
}

static int64_t floor_hour(int64_t t) {
    return dsc__sq_hour_of(t);
}

/* --- a budget over a whole level: rolled-up hours summed per value ----------------- */

/* The values of a level a new team:* budget counts apart (with their org), each a
 * group; the subjects' ids index their group, so that the rollups are read without a
 * join and summed per group and span. The hours before by_from_us (earlier calendar
 * periods) only make the counters of the groups seen there, which start again from
 * zero at by_from_us: their read stops once every group was seen. Declined (the
 * caller reads per subject and hour) when the ids are too sparse to index, a sum from
 * by_from_us on is negative (a calendar counter clamps each charge at zero: only their
 * order would count them alike), a rolled-up hour lies at or past by_until_us, or the
 * index or the sums would take too much memory (over LEVEL_IDS_MAX ids or
 * LEVEL_CELLS_MAX sums, or an allocation fails): the per-subject read needs none of it. */
typedef struct level_group {
    char org[DSC_NAME_MAX], value[DSC_NAME_MAX];
} level_group;

typedef struct level_sums {
    const dsc__replay_filter *f;
    int32_t *group_of; /* subject id -> its group + 1 (0: not counted) */
    int64_t n_ids;
    level_group *groups;
    size_t n_groups, cap;
    int64_t lo, n_spans; /* span 0: the hours before by_from_us; span k: the k-th from it */
    int64_t *sums;       /* [span * n_groups + group] */
    size_t n_seen;       /* groups seen before by_from_us */
    bool declined, all_seen;
} level_sums;

#define LEVEL_SPARSE(n) (4 * (n) + 1024) /* ids beyond this for n subjects: too sparse */
#define LEVEL_CELLS_MAX (1 << 22) /* sums: 32 MiB */
#define LEVEL_IDS_MAX (1 << 23)   /* the subjects' index: 32 MiB */

static dsc_status row_level_group(void *ctx, sqlite3_stmt *st, dsc__rec *rec) {
    (void)rec;
    level_sums *ls = ctx;
    int64_t id = sqlite3_column_int64(st, 0);
    if (id < 0 || id >= ls->n_ids) return DSC_OK;
    level_group g;
    col_text(st, 1, g.org, sizeof g.org);
    col_text(st, 2, g.value, sizeof g.value);
    level_group *last = ls->n_groups ? &ls->groups[ls->n_groups - 1] : NULL;
    if (!last || strcmp(last->org, g.org) || strcmp(last->value, g.value)) {
        if (ls->n_groups == ls->cap) {
            size_t cap = ls->cap ? 2 * ls->cap : 64;
            level_group *more = realloc(ls->groups, cap * sizeof *more);
            if (!more) return DSC_NOMEM;
            ls->groups = more, ls->cap = cap;
        }
        ls->groups[ls->n_groups++] = g;
    }
    ls->group_of[id] = (int32_t)ls->n_groups;
    return DSC_OK;
}

/* A row before by_from_us: the first one of its group is kept (any will do). */
static dsc_status row_level_seen(void *ctx, sqlite3_stmt *st, dsc__rec *rec) {
    (void)rec;
    level_sums *ls = ctx;
    int64_t id = sqlite3_column_int64(st, 1);
    if (id < 0 || id >= ls->n_ids || !ls->group_of[id]) return DSC_OK;
    int64_t *cell = &ls->sums[ls->group_of[id] - 1];
    if (*cell) return DSC_OK;
    *cell = sqlite3_column_int64(st, 2);
    if (++ls->n_seen < ls->n_groups) return DSC_OK;
    ls->all_seen = true;
    return DSC_STORE_UNAVAILABLE; /* stops the read: nothing more to learn from it */
}

static dsc_status row_level_sum(void *ctx, sqlite3_stmt *st, dsc__rec *rec) {
    (void)rec;
    level_sums *ls = ctx;
    int64_t hour = sqlite3_column_int64(st, 0), id = sqlite3_column_int64(st, 1);
    int64_t v = sqlite3_column_int64(st, 2);
    if (id < 0 || id >= ls->n_ids || !ls->group_of[id]) return DSC_OK;
    if (v < 0 || hour >= ls->f->by_until_us) {
        ls->declined = true;
        return DSC_STORE_UNAVAILABLE; /* stops the read; not an error of the caller's */
    }
    int64_t k = 1 + (hour - ls->f->by_from_us) / ls->f->by_span_us;
    int64_t *cell = &ls->sums[k * (int64_t)ls->n_groups + ls->group_of[id] - 1];
    *cell = dsc__sq_add(*cell, v);
    return DSC_OK;
}

/* The reader's cached statement for sql, or one prepared on db. */
static sqlite3_stmt *scan_stmt(sq_store *s, sqlite3 *db, bool cached, const char *sql) {
    sqlite3_stmt *st = NULL;
    if (cached) return reader_stmt(s, sql);
    if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK) sqlite3_finalize(st), st = NULL;
    return st;
}

static void scan_done(sqlite3_stmt *st, bool cached) {
    if (cached)
        sqlite3_clear_bindings(st); /* the texts were the caller's */
    else
        sqlite3_finalize(st);
}

/* Run sql (ints at ?1..?4, texts after) on db with fn for each row. */
static dsc_status scan_rows(sq_store *s, sqlite3 *db, bool cached, const char *sql,
                            const int64_t ints[4], const char *const *texts, void *ctx, row_fn fn) {
    sqlite3_stmt *st = scan_stmt(s, db, cached, sql);
    if (!st) return DSC_STORE_UNAVAILABLE;
    dsc_status res = each_row_stmt(db, st, ints, 4, texts, ctx, fn, NULL);
    scan_done(st, cached);
    return res;
}

/* The groups of ls, from the subjects f lets through; declined when their ids are
 * too sparse to index. */
static dsc_status level_groups(sq_store *s, sqlite3 *db, bool cached, level_sums *ls) {
    static const char *const cols[5] = {"", "org", "team", "user", "key"};
    int64_t n = 0, max_id = 0;
    sqlite3_stmt *st = scan_stmt(s, db, cached, "SELECT count(*), max(id) FROM subjects");
    if (!st) return DSC_STORE_UNAVAILABLE;
    if (sqlite3_step(st) == SQLITE_ROW)
        n = sqlite3_column_int64(st, 0), max_id = sqlite3_column_int64(st, 1);
    sqlite3_reset(st);
    scan_done(st, cached);
    if (max_id < 0 || max_id > LEVEL_SPARSE(n) || max_id >= LEVEL_IDS_MAX) {
        ls->declined = true;
        return DSC_OK;
    }
    ls->n_ids = max_id + 1;
    if (!(ls->group_of = calloc((size_t)ls->n_ids, sizeof *ls->group_of))) return DSC_NOMEM;
    char conds[400], sql[700];
    const char *texts[5];
    scan_conds(ls->f, -1, "s", conds, sizeof conds, texts);
    snprintf(sql, sizeof sql, "SELECT s.id, s.org, s.%s FROM subjects s WHERE 1%s ORDER BY 2, 3",
             cols[ls->f->by_level], conds);
    int64_t none[4] = {0, 0, 0, 0};
    return scan_rows(s, db, cached, sql, none, texts, ls, row_level_group);
}

/* Sum the rolled-up hours [lo, until) of metric into ls's groups and spans. */
static dsc_status level_read(sq_store *s, sqlite3 *db, bool cached, int metric, int64_t until,
                             level_sums *ls) {
    const dsc__replay_filter *f = ls->f;
    int64_t spans = until > f->by_from_us ? (until - f->by_from_us - 1) / f->by_span_us + 1 : 0;
    ls->n_spans = 1 + spans;
    if (!ls->n_groups) return DSC_OK;
    if (ls->n_spans > LEVEL_CELLS_MAX / (int64_t)ls->n_groups) {
        ls->declined = true;
        return DSC_OK;
    }
    ls->sums = calloc((size_t)(ls->n_spans * (int64_t)ls->n_groups), sizeof *ls->sums);
    if (!ls->sums) return DSC_NOMEM;
    char sql[300];
    const char *m = dsc_metric_name(metric);
    snprintf(sql, sizeof sql,
             "SELECT hour_us, subject, %s FROM rollups WHERE hour_us >= ?1 AND hour_us < ?2"
             " AND %s != 0",
             m, m);
    int64_t from = f->by_from_us;
    dsc_status res = DSC_OK;
    if (ls->lo < from) {
        int64_t before[4] = {ls->lo, from < until ? from : until, 0, 0};
        res = scan_rows(s, db, cached, sql, before, NULL, ls, row_level_seen);
        if (ls->all_seen) res = DSC_OK;
    }
    int64_t ints[4] = {ls->lo > from ? ls->lo : from, until, 0, 0};
    if (res == DSC_OK && ints[0] < until)
        res = scan_rows(s, db, cached, sql, ints, NULL, ls, row_level_sum);
    return ls->declined ? DSC_OK : res;
}

/* Hand ls's sums to c's fn through rec, span by span, each at its span's start. */
static dsc_status level_emit(level_sums *ls, int metric, dsc__rec *rec, charge_scan *c) {
    const dsc__replay_filter *f = ls->f;
    dsc_status res = DSC_OK;
    for (int64_t k = 0; k < ls->n_spans && res == DSC_OK; k++)
        for (size_t g = 0; g < ls->n_groups && res == DSC_OK; g++) {
            int64_t v = ls->sums[k * (int64_t)ls->n_groups + (int64_t)g];
            if (!v) continue;
            memset(&rec->subject, 0, sizeof rec->subject);
            snprintf(rec->subject.org, sizeof rec->subject.org, "%s", ls->groups[g].org);
            char *level[5] = {NULL, rec->subject.org, rec->subject.team, rec->subject.user,
                              rec->subject.key};
            snprintf(level[f->by_level], DSC_NAME_MAX, "%s", ls->groups[g].value);
            memset(&rec->amounts, 0, sizeof rec->amounts);
            rec->amounts.v[metric] = v;
            rec->at_us = k ? f->by_from_us + (k - 1) * f->by_span_us : ls->lo;
            res = c->fn(c->ud, rec);
        }
    return res;
}

/* The rolled-up hours [lo, until) as one sum per value of f's level and span, through
 * c; *declined when they must be read per subject and hour instead (nothing given):
 * also when a step before the first sum is handed over fails (out of memory, a
 * statement), which the per-subject read then meets again or not. */
static dsc_status scan_by_level(sq_store *s, sqlite3 *db, bool cached, const dsc__replay_filter *f,
                                int metric, int64_t lo, int64_t until, charge_scan *c,
                                bool *declined) {
    level_sums ls = {.f = f, .lo = lo};
    dsc_status res = DSC_OK;
    dsc__rec *rec = NULL;
    if (metric < 0 || f->by_level < 1 || f->by_level > 4 || f->by_span_us <= 0) ls.declined = true;
    if (!ls.declined) res = level_groups(s, db, cached, &ls);
    if (res == DSC_OK && !ls.declined) res = level_read(s, db, cached, metric, until, &ls);
    if (res == DSC_OK && !ls.declined && !(rec = calloc(1, sizeof *rec))) res = DSC_NOMEM;
    if (res != DSC_OK) ls.declined = true, res = DSC_OK;
    if (!ls.declined) res = level_emit(&ls, metric, rec, c);
    *declined = ls.declined;
    free(rec);
    free(ls.group_of);
    free(ls.groups);
    free(ls.sums);
    return res;
}

static dsc_status run_scan(sq_store *s, sqlite3 *db, bool cached, const char *sql,
                           const int64_t ints[4], const char *const *texts, charge_scan *c) {
    return scan_rows(s, db, cached, sql, ints, texts, c, row_charge);
}

/* The charges at or after since_us that f lets through, in commit order, through fn.
 * The hours before the newest checkpoint's (and before f->hourly_before_us) come from
 * rollups, one sum per subject and hour; every charge after that, one by one: the
 * events from the checkpoint that precedes the boundary hour R that are newer than
 * the rolled-up ones or at or after R. So each charge is counted once, by its hour or
 * by itself. With a retention, the hours whose events may be dropped are read from
 * rollups for every budget (a window that needs each charge's time, reaching back
 * further than the retention, counts those hours as hour sums). */
static dsc_status scan_charges(sq_store *s, sqlite3 *db, bool cached, int64_t since_us,
                               const dsc__replay_filter *f, int metric, dsc__replay_fn fn, void *ud,
                               int64_t *last_seq) {
    char ce[400], cr[400], sql[1600];
    const char *texts[5];
    scan_conds(f, metric, "e", ce, sizeof ce, texts);
    scan_conds(f, metric, "r", cr, sizeof cr, texts);
    charge_scan c = {.fn = fn, .ud = ud, .since_us = since_us};
    int64_t ints[4] = {since_us, f->after_seq, 0, 0};
    dsc_status res = DSC_OK;
    if (f->after_seq > 0) {
        c.started = true;
        snprintf(sql, sizeof sql,
                 "%s%s AND e.seq > ?2 AND " DSC__SQ_FIN_AT("e") " >= ?1 ORDER BY e.seq",
                 CHARGES_HEAD, ce);
        res = run_scan(s, db, cached, sql, ints, texts, &c);
    } else {
        int64_t cp_seq = 0, cp_at = 0;
        sqlite3_stmt *st = NULL;
        if (sqlite3_prepare_v2(db,
                               "SELECT seq, max_at_us FROM checkpoints ORDER BY seq DESC"
                               " LIMIT 1",
                               -1, &st, NULL) == SQLITE_OK &&
            sqlite3_step(st) == SQLITE_ROW)
            cp_seq = sqlite3_column_int64(st, 0), cp_at = sqlite3_column_int64(st, 1);
        sqlite3_finalize(st);
        /* hours whose events may be dropped (retention) come from rollups in any case */
        int64_t purged = 0;
        if (sqlite3_prepare_v2(db, "SELECT value FROM meta WHERE key = 'purged_before_us'", -1, &st,
                               NULL) == SQLITE_OK &&
            sqlite3_step(st) == SQLITE_ROW)
            purged = sqlite3_column_int64(st, 0);
        sqlite3_finalize(st);
        int64_t hb = f->hourly_before_us;
        if (purged > 0 && hb < floor_hour(purged) + DSC__SQ_HOUR_US)
            hb = floor_hour(purged) + DSC__SQ_HOUR_US; /* clamped: no overflow */
        int64_t r = floor_hour(cp_at < hb ? cp_at : hb);
        if (hb > 0 && cp_seq > 0 && r > floor_hour(since_us)) {
            int64_t sums[4] = {floor_hour(since_us), 0, r, 0};
            snprintf(sql, sizeof sql,
                     "%s%s AND r.hour_us >= ?1 AND r.hour_us < ?3"
                     " ORDER BY r.hour_us",
                     ROLLUPS_HEAD, cr);
            c.started = true;
            bool declined = true;
            if (f->by_level)
                res = scan_by_level(s, db, cached, f, metric, sums[0], r, &c, &declined);
            if (res == DSC_OK && declined) res = run_scan(s, db, cached, sql, sums, texts, &c);
            ints[1] = dsc__sq_first_seq_at(db, r);
            ints[2] = r;
            ints[3] = cp_seq;
            snprintf(
                sql, sizeof sql,
                "%s%s AND e.seq >= ?2 AND (e.seq > ?4 OR " DSC__SQ_FIN_AT("e") " >= ?3)"
                                                                               " ORDER BY e.seq",
                CHARGES_HEAD, ce);
        } else {
            ints[1] = dsc__sq_first_seq_at(db, since_us);
            snprintf(sql, sizeof sql, "%s%s AND e.seq >= ?2 ORDER BY e.seq", CHARGES_HEAD, ce);
        }
        if (res == DSC_OK) res = run_scan(s, db, cached, sql, ints, texts, &c);
    }
    if (c.any && last_seq) *last_seq = c.last_seq;
    return res;
}

dsc_status dsc__sq_replay(dsc__store *base, int64_t since_us, const dsc__replay_filter *filter,
                          dsc__replay_fn fn, void *ud, int64_t *last_seq) {
    sq_store *s = (sq_store *)base;
    pthread_mutex_lock(&s->dbmu);
    dsc_status res =
        scan_charges(s, s->db, false, since_us, filter, (int)filter->metric, fn, ud, last_seq);
    pthread_mutex_unlock(&s->dbmu);
    return res;
}

/* One read transaction on the reader: the newest event's seq, then the replay, both
 * of the same snapshot; *last_seq is that seq. */
static dsc_status replay_snapshot(sq_store *s, int64_t since_us, const dsc__replay_filter *filter,
                                  dsc__replay_fn fn, void *ud, int64_t *last_seq) {
    sqlite3_stmt *newest = reader_stmt(s, "SELECT coalesce(max(seq), 0) FROM events");
    if (!newest || sqlite3_step(newest) != SQLITE_ROW) {
        if (newest) sqlite3_reset(newest);
        return DSC_STORE_UNAVAILABLE;
    }
    int64_t snapshot = sqlite3_column_int64(newest, 0);
    sqlite3_reset(newest);
    dsc_status res =
        scan_charges(s, s->rdb, true, since_us, filter, (int)filter->metric, fn, ud, NULL);
    if (res == DSC_OK) *last_seq = snapshot;
    return res;
}

dsc_status dsc__sq_replay_read(dsc__store *base, int64_t since_us, const dsc__replay_filter *filter,
                               dsc__replay_fn fn, void *ud, int64_t *last_seq) {
    sq_store *s = (sq_store *)base;
    pthread_mutex_lock(&s->rmu);
    dsc_status res = DSC_STORE_UNAVAILABLE;
    if ((s->rdb || dsc__sq_open_conn(s->path, &s->rdb, NULL) == DSC_OK) &&
        sqlite3_exec(s->rdb, "BEGIN", NULL, NULL, NULL) == SQLITE_OK) {
        res = replay_snapshot(s, since_us, filter, fn, ud, last_seq);
        sqlite3_exec(s->rdb, "COMMIT", NULL, NULL, NULL);
    }
    pthread_mutex_unlock(&s->rmu);
    return res;
}
