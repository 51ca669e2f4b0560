/*
 * store_sqlite.c - the ledger's SQLite store: schema, group-commit writer, reload.
 *
 * The "sqlite" backend of store.h (dsc__store_sqlite): every target that is not a URI.
 * One file in WAL mode. One writer thread owns the write connection: it takes every
 * queued record, writes them all in one transaction and commits (one fsync per batch
 * with synchronous=FULL), then lets the ledger apply the batch and wakes the callers
 * waiting on it. A failed statement that is the record's own fault (a constraint)
 * fails only that record; an I/O error (SQLITE_FULL, IOERR, READONLY, ...) rolls the
 * whole batch back and fails every record in it with DSC_STORE_UNAVAILABLE. While the
 * store is failing, the writer probes it every second so that it recovers by itself.
 *
 * A full disk: the WAL grows until the checkpoint at 1000 pages (4 MiB), which a
 * nearly full disk never lets it reach, and a failed commit leaves it at its size.
 * So after a failed commit the store enters recovery: every probe, every batch and
 * every commit first checkpoints the WAL into the database and truncates it
 * (reclaim_wal), which gives the WAL's space back once a little is free, and it stays
 * in recovery (one checkpoint per commit) until the file system has RECOVERED_FREE
 * bytes free again.
 * One discernd per store file: open takes an exclusive flock() on "<store>.lock" (the
 * kernel drops it when the process dies, even by kill -9) and writes its pid there, so
 * a second process is refused naming the file and the holder's pid.
 * Schema and queries for admins: docs/operations.md. The writer thread is named
 * "dsc-store" (top -H, /proc/PID/task/TID/comm) so its CPU can be told apart.
 */
#define _GNU_SOURCE /* pthread_setname_np */
#include "store.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>

enum {
    ST_RES_INSERT,
    ST_RES_UPDATE,
    ST_RES_UPSERT,
    ST_CHARGE,
    ST_DECISION,
    ST_BUDGET_UPSERT,
    ST_BUDGET_DELETE,
    ST_BEGIN,
    ST_COMMIT,
    ST_ROLLBACK,
    ST_COUNT
};

typedef struct sq_store {
    dsc__store base;   /* first: the operations */
    sqlite3 *db, *rdb; /* writer connection; reader for lookups (lazy) */
    sqlite3_stmt *st[ST_COUNT];
    dsc_durability durability;
    int batch_ms;
    char path[1024];
    int lock_fd; /* flock()ed "<path>.lock" while open; -1 before */
    pthread_mutex_t qmu, dbmu, rmu;
    pthread_cond_t nonempty;
    dsc__rec *head, *tail;
    size_t waiters; /* queued records whose caller waits for the commit (waited or done) */
    bool stop, healthy, started;
    pthread_t writer;
    dsc__store_apply_fn apply;
    void *apply_ud;
    dsc__rec **batch;
    size_t batch_cap;
    uint64_t batches, records, failures;
    bool recovering; /* a commit failed: checkpoint and truncate the WAL (writer only) */
    int64_t charge_seq, batch_charge_seq; /* the last charge committed; in this batch */
    struct {                              /* the reader's prepared statements, by SQL */
        sqlite3_stmt *st;
        char *sql;
    } rcache[8];
    int rcache_next;
} sq_store;

#define METRIC_COLS(p)                                                                             \
    p "energy_wh, " p "gco2e, " p "water_ml, " p "pe_mj, " p "cost, " p "tokens, " p "requests"
#define METRIC_DEFS(p)                                                                             \
    p "energy_wh INTEGER NOT NULL DEFAULT 0, " p "gco2e INTEGER NOT NULL DEFAULT 0, " p            \
      "water_ml INTEGER NOT NULL DEFAULT 0, " p "pe_mj INTEGER NOT NULL DEFAULT 0, " p             \
      "cost INTEGER NOT NULL DEFAULT 0, " p "tokens INTEGER NOT NULL DEFAULT 0, " p                \
      "requests INTEGER NOT NULL DEFAULT 0"
#define Q7 "?,?,?,?,?,?,?"
/* What a hold was for, on its reservations row: the key that took it and what its
 * check asked for (a settle re-estimates from them). */
#define HOLD_WHAT "owner, provider, model, zone, purpose"

/* Indexes are what the reload and the documented admin queries need, and no more: every
 * index is one more B-tree write per row on the hot path. reservations has no rowid (its
 * text id is the key: one B-tree, not a table plus an index); finished_us is indexed
 * only where set, so a new hold adds no entry there. Files made before keep their
 * tables; their full finished_us index is replaced by the partial one on open. */
// clang-format off
static const char schema_sql[] =
    "CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT);"
    "INSERT OR IGNORE INTO meta VALUES('schema_version', '1');"
    "CREATE TABLE IF NOT EXISTS budgets(id INTEGER PRIMARY KEY, selector TEXT NOT NULL,"
    " metric TEXT NOT NULL, window TEXT NOT NULL, limit_micro INTEGER NOT NULL,"
    " updated_us INTEGER NOT NULL, UNIQUE(selector, metric, window));"
    "CREATE TABLE IF NOT EXISTS reservations(id TEXT PRIMARY KEY, request_id TEXT,"
    " org TEXT, team TEXT, user TEXT, key TEXT, created_us INTEGER, expires_us INTEGER,"
    " state TEXT NOT NULL, finished_us INTEGER, " METRIC_DEFS("held_") ", "
    METRIC_DEFS("charged_") ") WITHOUT ROWID;"
    "CREATE INDEX IF NOT EXISTS reservations_held ON reservations(state)"
    " WHERE state = 'held';"
    "DROP INDEX IF EXISTS reservations_finished;"
    "CREATE INDEX IF NOT EXISTS reservations_finished_at ON reservations(finished_us)"
    " WHERE finished_us IS NOT NULL;"
    "CREATE TABLE IF NOT EXISTS charges(seq INTEGER PRIMARY KEY, at_us INTEGER NOT NULL,"
    " kind TEXT NOT NULL, reservation_id TEXT, org TEXT, team TEXT, user TEXT, key TEXT, "
    METRIC_DEFS("") ");"
    "CREATE INDEX IF NOT EXISTS charges_at ON charges(at_us);"
    "CREATE UNIQUE INDEX IF NOT EXISTS charges_settle_once ON charges(reservation_id)"
    " WHERE kind IN ('settle', 'late', 'unreserved');"
    "CREATE TABLE IF NOT EXISTS decisions(seq INTEGER PRIMARY KEY, decision_id TEXT,"
    " request_id TEXT, at_us INTEGER NOT NULL, org TEXT, team TEXT, user TEXT, key TEXT,"
    " purpose TEXT, provider TEXT, model TEXT, input_tokens INTEGER, output_tokens INTEGER,"
    " est_energy_wh INTEGER, est_gco2e INTEGER, est_water_ml INTEGER, outcome TEXT,"
    " policy TEXT, policy_version TEXT, reason TEXT, reservation_id TEXT);"
    "CREATE INDEX IF NOT EXISTS decisions_at ON decisions(at_us);";
// clang-format on

static const char *const stmt_sql[ST_COUNT] = {
    [ST_RES_INSERT] =
        "INSERT INTO reservations(id, request_id, org, team, user, key,"
        " created_us, expires_us, state, " METRIC_COLS("held_") ", " HOLD_WHAT ")"
                                                                " VALUES(?,?,?,?,?,?,?,?,?," Q7
                                                                ",?,?,?,?,?)",
    [ST_RES_UPDATE] = "UPDATE reservations SET state = ?2, finished_us = ?3,"
                      " charged_energy_wh = charged_energy_wh + ?4,"
                      " charged_gco2e = charged_gco2e + ?5,"
                      " charged_water_ml = charged_water_ml + ?6,"
                      " charged_pe_mj = charged_pe_mj + ?7, charged_cost = charged_cost + ?8,"
                      " charged_tokens = charged_tokens + ?9,"
                      " charged_requests = charged_requests + ?10 WHERE id = ?1",
    [ST_RES_UPSERT] =
        "INSERT INTO reservations(id, request_id, org, team, user, key, created_us, state,"
        " finished_us, " METRIC_COLS(
            "charged_") ") VALUES(?,?,?,?,?,?,?,?,?," Q7 ")"
                        " ON CONFLICT(id) DO UPDATE SET state = excluded.state,"
                        " finished_us = excluded.finished_us,"
                        " charged_energy_wh = charged_energy_wh + excluded.charged_energy_wh,"
                        " charged_gco2e = charged_gco2e + excluded.charged_gco2e,"
                        " charged_water_ml = charged_water_ml + excluded.charged_water_ml,"
                        " charged_pe_mj = charged_pe_mj + excluded.charged_pe_mj,"
                        " charged_cost = charged_cost + excluded.charged_cost,"
                        " charged_tokens = charged_tokens + excluded.charged_tokens,"
                        " charged_requests = charged_requests + excluded.charged_requests",
    [ST_CHARGE] =
        "INSERT INTO charges(at_us, kind, reservation_id, org, team, user, key, " METRIC_COLS(
            "") ") VALUES(?,?,?,?,?,?,?," Q7 ")",
    [ST_DECISION] = "INSERT INTO decisions(decision_id, request_id, at_us, org, team, user,"
                    " key, purpose, provider, model, input_tokens, output_tokens,"
                    " est_energy_wh, est_gco2e, est_water_ml, outcome, policy,"
                    " policy_version, reason, reservation_id, key_id, zone, purpose_class,"
                    " verdicts, tags, warnings)"
                    " VALUES(?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
    [ST_BUDGET_UPSERT] = "INSERT INTO budgets(id, selector, metric, window, limit_micro,"
                         " updated_us) VALUES(?,?,?,?,?,?) ON CONFLICT(selector, metric,"
                         " window) DO UPDATE SET limit_micro = excluded.limit_micro,"
                         " updated_us = excluded.updated_us",
    [ST_BUDGET_DELETE] = "DELETE FROM budgets WHERE id = ?",
    [ST_BEGIN] = "BEGIN",
    [ST_COMMIT] = "COMMIT",
    [ST_ROLLBACK] = "ROLLBACK"};

static dsc_status db_error(sqlite3 *db, const char *what, dsc_error *err) {
    return dsc_error_set(err, DSC_STORE_UNAVAILABLE, "ledger store: %s: %s", what,
                         db ? sqlite3_errmsg(db) : "cannot allocate a connection");
}

/* Create the parent directory of path when missing (one level, like var/). */
static void make_parent(const char *path) {
    char dir[1024];
    snprintf(dir, sizeof dir, "%s", path);
    char *slash = strrchr(dir, '/');
    if (!slash || slash == dir) return;
    *slash = '\0';
    if (mkdir(dir, 0755) != 0 && errno != EEXIST) return;
}

static dsc_status open_conn(const char *path, sqlite3 **db, dsc_error *err) {
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

/* The pid recorded in a lock file by its holder; 0 when it cannot be read. */
static long lock_holder(int fd) {
    char buf[24] = {0};
    ssize_t n = pread(fd, buf, sizeof buf - 1, 0);
    return n > 0 ? strtol(buf, NULL, 10) : 0;
}

/* Take the store's exclusive lock, or refuse naming the file and who holds it. */
static dsc_status take_lock(sq_store *s, dsc_error *err) {
    char lock[1100], pid[24];
    snprintf(lock, sizeof lock, "%s.lock", s->path);
    s->lock_fd = open(lock, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (s->lock_fd < 0)
        return dsc_error_set(err, DSC_STORE_UNAVAILABLE, "ledger store: cannot open '%s': %s", lock,
                             strerror(errno));
    if (flock(s->lock_fd, LOCK_EX | LOCK_NB) != 0) {
        int e = errno;
        long holder = lock_holder(s->lock_fd);
        if (e != EWOULDBLOCK)
            return dsc_error_set(err, DSC_STORE_UNAVAILABLE, "ledger store: cannot lock '%s': %s",
                                 lock, strerror(e));
        if (holder > 0)
            return dsc_error_set(err, DSC_STORE_UNAVAILABLE,
                                 "ledger store: '%s' is in use by pid %ld, which holds '%s'",
                                 s->path, holder, lock);
        return dsc_error_set(err, DSC_STORE_UNAVAILABLE,
                             "ledger store: '%s' is in use by another process, which holds '%s'",
                             s->path, lock);
    }
    int n = snprintf(pid, sizeof pid, "%ld\n", (long)getpid());
    if (ftruncate(s->lock_fd, 0) != 0 || pwrite(s->lock_fd, pid, (size_t)n, 0) != n)
        return dsc_error_set(err, DSC_STORE_UNAVAILABLE, "ledger store: cannot write '%s': %s",
                             lock, strerror(errno));
    return DSC_OK;
}

/* Columns added after the first schema: a store made before gains them on open (an
 * ALTER that finds the column already there is the normal case, not an error). */
static const char *const added_columns[] = {
    "reservations ADD COLUMN owner TEXT",    "decisions ADD COLUMN key_id TEXT",
    "reservations ADD COLUMN provider TEXT", "reservations ADD COLUMN model TEXT",
    "reservations ADD COLUMN zone TEXT",     "reservations ADD COLUMN purpose TEXT",
    "decisions ADD COLUMN zone TEXT",        "decisions ADD COLUMN purpose_class TEXT",
    "decisions ADD COLUMN verdicts TEXT",    "decisions ADD COLUMN tags TEXT",
    "decisions ADD COLUMN warnings TEXT",
};

static int add_columns(sqlite3 *db) {
    for (size_t i = 0; i < sizeof added_columns / sizeof added_columns[0]; i++) {
        char sql[128];
        snprintf(sql, sizeof sql, "ALTER TABLE %s", added_columns[i]);
        if (sqlite3_exec(db, sql, NULL, NULL, NULL) != SQLITE_OK &&
            !strstr(sqlite3_errmsg(db), "duplicate column"))
            return sqlite3_errcode(db);
    }
    return SQLITE_OK;
}

static dsc_status setup_db(sq_store *s, dsc_error *err) {
    char pragmas[128];
    snprintf(pragmas, sizeof pragmas,
             "PRAGMA journal_mode=WAL; PRAGMA synchronous=%s;"
             " PRAGMA cache_size=-32768;",
             s->durability == DSC_DURABILITY_OFF ? "OFF" : "FULL");
    if (sqlite3_exec(s->db, pragmas, NULL, NULL, NULL) != SQLITE_OK)
        return db_error(s->db, "setting WAL mode", err);
    if (sqlite3_exec(s->db, schema_sql, NULL, NULL, NULL) != SQLITE_OK)
        return db_error(s->db, "creating the schema", err);
    if (add_columns(s->db) != SQLITE_OK) return db_error(s->db, "adding columns", err);
    for (int i = 0; i < ST_COUNT; i++)
        if (sqlite3_prepare_v3(s->db, stmt_sql[i], -1, SQLITE_PREPARE_PERSISTENT, &s->st[i],
                               NULL) != SQLITE_OK)
            return db_error(s->db, "preparing statements", err);
    return DSC_OK;
}

static void sq_close(dsc__store *base);

static dsc__store *sq_open(const char *path, const dsc__store_options *o, dsc_error *err) {
    sq_store *s = calloc(1, sizeof *s);
    if (!s) {
        dsc_error_set(err, DSC_NOMEM, "out of memory opening the ledger store");
        return NULL;
    }
    s->base.type = &dsc__store_sqlite;
    s->durability = o->durability;
    s->batch_ms = o->batch_ms > 0 ? o->batch_ms : 10;
    s->healthy = true;
    s->lock_fd = -1;
    snprintf(s->path, sizeof s->path, "%s", path);
    pthread_mutex_init(&s->qmu, NULL);
    pthread_mutex_init(&s->dbmu, NULL);
    pthread_mutex_init(&s->rmu, NULL);
    pthread_cond_init(&s->nonempty, NULL);
    make_parent(path);
    if (take_lock(s, err) != DSC_OK || open_conn(path, &s->db, err) != DSC_OK ||
        setup_db(s, err) != DSC_OK) {
        sq_close(&s->base);
        return NULL;
    }
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(s->db, "SELECT coalesce(max(seq), 0) FROM charges", -1, &st, NULL) ==
            SQLITE_OK &&
        sqlite3_step(st) == SQLITE_ROW)
        s->charge_seq = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    return &s->base;
}

static int64_t sq_charge_seq(dsc__store *base) {
    sq_store *s = (sq_store *)base;
    return s->charge_seq;
}

/* --- binding helpers -------------------------------------------------------- */

static void bind_text(sqlite3_stmt *st, int i, const char *v) {
    if (v && *v)
        sqlite3_bind_text(st, i, v, -1, SQLITE_STATIC);
    else
        sqlite3_bind_null(st, i);
}

static void bind_amounts(sqlite3_stmt *st, int first, const dsc_amounts *a) {
    for (int m = 0; m < DSC_METRIC_COUNT; m++)
        sqlite3_bind_int64(st, first + m, a->v[m]);
}

static void bind_subject(sqlite3_stmt *st, int first, const dsc__rec_subject *s) {
    bind_text(st, first, s->org);
    bind_text(st, first + 1, s->team);
    bind_text(st, first + 2, s->user);
    bind_text(st, first + 3, s->key);
}

/* Every statement binds all its parameters each time, so bindings are not cleared. */
static int step(sqlite3_stmt *st) {
    int rc = sqlite3_step(st);
    sqlite3_reset(st);
    return rc == SQLITE_DONE ? SQLITE_OK : rc;
}

static int write_reserve(sq_store *s, const dsc__rec *r) {
    sqlite3_stmt *st = s->st[ST_RES_INSERT];
    bind_text(st, 1, r->reservation_id);
    bind_text(st, 2, r->request_id);
    bind_subject(st, 3, &r->subject);
    sqlite3_bind_int64(st, 7, r->at_us);
    sqlite3_bind_int64(st, 8, r->expires_us);
    bind_text(st, 9, r->state);
    bind_amounts(st, 10, &r->amounts);
    const dsc__rec_decision *d = r->with_decision ? &r->u.decision : NULL;
    bind_text(st, 17, d ? d->key_id : "");
    bind_text(st, 18, d ? d->provider : "");
    bind_text(st, 19, d ? d->model : "");
    bind_text(st, 20, d ? d->zone : "");
    bind_text(st, 21, d ? d->purpose : "");
    return step(st);
}

/* The reservation's new state, with what this record charged added to it. A plain
 * UPDATE finds the row with one seek; only a reservation the store never had (an
 * unreserved settle) takes the INSERT ... ON CONFLICT path. */
static int write_state(sq_store *s, const dsc__rec *r) {
    static const dsc_amounts zero = {{0}};
    const dsc_amounts *charged = r->charge_kind ? &r->amounts : &zero;
    sqlite3_stmt *st = s->st[ST_RES_UPDATE];
    bind_text(st, 1, r->reservation_id);
    bind_text(st, 2, r->state);
    sqlite3_bind_int64(st, 3, r->at_us);
    bind_amounts(st, 4, charged);
    int rc = step(st);
    if (rc != SQLITE_OK || sqlite3_changes(s->db) > 0) return rc;
    st = s->st[ST_RES_UPSERT];
    bind_text(st, 1, r->reservation_id);
    bind_text(st, 2, r->request_id);
    bind_subject(st, 3, &r->subject);
    sqlite3_bind_int64(st, 7, r->at_us);
    bind_text(st, 8, r->state);
    sqlite3_bind_int64(st, 9, r->at_us);
    bind_amounts(st, 10, charged);
    return step(st);
}

static int write_charge(sq_store *s, const dsc__rec *r) {
    if (!r->charge_kind) return SQLITE_OK;
    sqlite3_stmt *st = s->st[ST_CHARGE];
    sqlite3_bind_int64(st, 1, r->at_us);
    bind_text(st, 2, r->charge_kind);
    bind_text(st, 3, r->reservation_id);
    bind_subject(st, 4, &r->subject);
    bind_amounts(st, 8, &r->amounts);
    int rc = step(st);
    if (rc == SQLITE_OK) s->batch_charge_seq = sqlite3_last_insert_rowid(s->db);
    return rc;
}

/* The estimate's warnings as a JSON array of their names ('["model-not-in-catalogue"]')
 * into buf; "" when there are none (the column is then NULL). */
static const char *warnings_json(unsigned bits, char *buf, size_t cap) {
    const char *names[16];
    int n = dsc_estimate_warning_names(bits, names, 16);
    size_t len = 0;
    buf[0] = '\0';
    for (int i = 0; i < n && len < cap; i++)
        len += (size_t)snprintf(buf + len, cap - len, "%s\"%s\"", i ? "," : "[", names[i]);
    if (n > 0 && len + 2 <= cap) {
        buf[len] = ']';
        buf[len + 1] = '\0';
    } else if (n > 0) {
        buf[0] = '\0'; /* cannot happen with today's names: never a broken array */
    }
    return buf;
}

static int write_decision(sq_store *s, const dsc__rec *r) {
    const dsc__rec_decision *d = &r->u.decision;
    sqlite3_stmt *st = s->st[ST_DECISION];
    bind_text(st, 1, d->decision_id);
    bind_text(st, 2, d->request_id);
    sqlite3_bind_int64(st, 3, r->at_us);
    bind_subject(st, 4, &r->subject);
    bind_text(st, 8, d->purpose);
    bind_text(st, 9, d->provider);
    bind_text(st, 10, d->model);
    sqlite3_bind_int64(st, 11, d->input_tokens);
    sqlite3_bind_int64(st, 12, d->output_tokens);
    sqlite3_bind_int64(st, 13, d->est_energy_wh);
    sqlite3_bind_int64(st, 14, d->est_gco2e);
    sqlite3_bind_int64(st, 15, d->est_water_ml);
    bind_text(st, 16, d->outcome);
    bind_text(st, 17, d->policy);
    bind_text(st, 18, d->policy_version);
    bind_text(st, 19, d->reason);
    bind_text(st, 20, r->reservation_id);
    bind_text(st, 21, d->key_id);
    bind_text(st, 22, d->zone);
    bind_text(st, 23, d->purpose_class);
    bind_text(st, 24, d->verdicts);
    bind_text(st, 25, d->tags);
    char warnings[256];
    bind_text(st, 26, warnings_json(d->warnings, warnings, sizeof warnings));
    return step(st);
}

static int write_budget(sq_store *s, const dsc__rec *r) {
    const dsc__rec_budget *b = &r->u.budget;
    if (r->type == DSC__REC_BUDGET_DELETE) {
        sqlite3_bind_int64(s->st[ST_BUDGET_DELETE], 1, b->id);
        return step(s->st[ST_BUDGET_DELETE]);
    }
    sqlite3_stmt *st = s->st[ST_BUDGET_UPSERT];
    sqlite3_bind_int64(st, 1, b->id);
    bind_text(st, 2, b->selector);
    bind_text(st, 3, dsc_metric_name(b->metric));
    bind_text(st, 4, b->window);
    sqlite3_bind_int64(st, 5, b->limit);
    sqlite3_bind_int64(st, 6, r->at_us);
    return step(st);
}

static bool own_fault(int rc) {
    return (rc & 0xff) == SQLITE_CONSTRAINT;
}

static int write_rec(sq_store *s, const dsc__rec *r) {
    int rc;
    switch (r->type) {
    case DSC__REC_RESERVE:
        rc = write_reserve(s, r);
        if (rc != SQLITE_OK || !r->with_decision) return rc;
        rc = write_decision(s, r);
        /* the hold is written: a decision refused on its own would leave it without
         * its journal, so any failure fails the batch (decisions have no constraint
         * a validated record can break, so this does not happen in practice) */
        return rc == SQLITE_OK || !own_fault(rc) ? rc : SQLITE_ERROR;
    case DSC__REC_SETTLE:
    case DSC__REC_CANCEL:
    case DSC__REC_EXPIRE:
        rc = write_charge(s, r);
        return rc == SQLITE_OK ? write_state(s, r) : rc;
    case DSC__REC_DECISION:
        return write_decision(s, r);
    default:
        return write_budget(s, r);
    }
}

/* --- the writer ----------------------------------------------------------------- */

/* Free space on the store's file system leaves recovery once it is this large. */
#define RECOVERED_FREE (64LL * 1024 * 1024)

static long long free_bytes(const sq_store *s) {
    char dir[sizeof s->path];
    snprintf(dir, sizeof dir, "%s", s->path);
    char *slash = strrchr(dir, '/');
    if (!slash)
        strcpy(dir, ".");
    else
        slash[slash == dir] = '\0';
    struct statvfs v;
    return statvfs(dir, &v) == 0 ? (long long)v.f_bavail * (long long)v.f_frsize : -1;
}

/* In recovery (dbmu held, no transaction open): move the WAL into the database and
 * truncate it to zero bytes. Readers in the WAL make it fail with BUSY at once (no
 * waiting on the writer's thread); it is tried again on the next batch. */
static void reclaim_wal(sq_store *s) {
    if (!s->recovering) return;
    sqlite3_busy_timeout(s->db, 0);
    int rc = sqlite3_wal_checkpoint_v2(s->db, NULL, SQLITE_CHECKPOINT_TRUNCATE, NULL, NULL);
    sqlite3_busy_timeout(s->db, 5000);
    if (rc == SQLITE_OK && free_bytes(s) >= RECOVERED_FREE) s->recovering = false;
}

/* Write and commit recs[0..n); fills every status. Returns whether it committed. */
static bool write_batch(sq_store *s, dsc__rec **recs, size_t n) {
    char msg[DSC_ERROR_MESSAGE_MAX] = "";
    pthread_mutex_lock(&s->dbmu);
    reclaim_wal(s);
    s->batch_charge_seq = 0;
    int rc = step(s->st[ST_BEGIN]);
    for (size_t i = 0; rc == SQLITE_OK && i < n; i++) {
        recs[i]->status = DSC_OK;
        int r = write_rec(s, recs[i]);
        if (r == SQLITE_OK) continue;
        if (!own_fault(r)) {
            rc = r;
            break;
        }
        recs[i]->status = DSC_INTERNAL;
        snprintf(recs[i]->message, sizeof recs[i]->message, "ledger store refused the record: %s",
                 sqlite3_errmsg(s->db));
    }
    if (rc == SQLITE_OK) rc = step(s->st[ST_COMMIT]);
    if (rc == SQLITE_OK && s->batch_charge_seq) s->charge_seq = s->batch_charge_seq;
    if (rc != SQLITE_OK) {
        snprintf(msg, sizeof msg, "ledger store unavailable (%s): %s; nothing was recorded",
                 sqlite3_errstr(rc), sqlite3_errmsg(s->db));
        if (!sqlite3_get_autocommit(s->db)) step(s->st[ST_ROLLBACK]);
        s->recovering = true;
    }
    reclaim_wal(s);
    pthread_mutex_unlock(&s->dbmu);
    for (size_t i = 0; rc != SQLITE_OK && i < n; i++) {
        recs[i]->status = DSC_STORE_UNAVAILABLE;
        snprintf(recs[i]->message, sizeof recs[i]->message, "%s", msg);
    }
    return rc == SQLITE_OK;
}

static bool probe(sq_store *s) {
    pthread_mutex_lock(&s->dbmu);
    reclaim_wal(s);
    int rc = sqlite3_exec(s->db,
                          "BEGIN; INSERT OR REPLACE INTO meta VALUES('probe',"
                          " strftime('%s','now')); COMMIT;",
                          NULL, NULL, NULL);
    if (rc != SQLITE_OK) sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
    pthread_mutex_unlock(&s->dbmu);
    return rc == SQLITE_OK;
}

static void sleep_ms(int ms) {
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* How often a failing store is probed while no work comes. */
enum { PROBE_MS = 1000 };

/* Wait for work (qmu held); probes a failing store every PROBE_MS meanwhile. */
static void wait_for_work(sq_store *s) {
    while (!s->head && !s->stop) {
        if (s->healthy) {
            pthread_cond_wait(&s->nonempty, &s->qmu);
            continue;
        }
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_sec += PROBE_MS / 1000;
        ts.tv_nsec += (long)(PROBE_MS % 1000) * 1000000L;
        if (ts.tv_nsec >= 1000000000L) ts.tv_sec++, ts.tv_nsec -= 1000000000L;
        pthread_cond_timedwait(&s->nonempty, &s->qmu, &ts);
        if (!s->head && !s->stop) {
            pthread_mutex_unlock(&s->qmu);
            bool ok = probe(s);
            pthread_mutex_lock(&s->qmu);
            if (ok) s->healthy = true;
        }
    }
}

/* Take the queue into s->batch (qmu held); returns how many. */
static size_t take_batch(sq_store *s) {
    size_t n = 0;
    for (dsc__rec *r = s->head; r; r = r->next)
        n++;
    if (n > s->batch_cap) {
        dsc__rec **b = realloc(s->batch, n * 2 * sizeof *b);
        if (!b)
            n = s->batch_cap; /* take what fits; the rest waits */
        else
            s->batch = b, s->batch_cap = n * 2;
    }
    dsc__rec *r = s->head;
    for (size_t i = 0; i < n; i++, r = r->next)
        s->batch[i] = r;
    s->head = r;
    if (!r) s->tail = NULL;
    s->waiters = 0;
    for (; r; r = r->next) /* what did not fit (out of memory): rarely anything */
        s->waiters += r->waited || r->done_fn;
    return n;
}

/* Durability full, qmu held: a queue that nobody waits on (holds acknowledged once
 * queued, expiries) waits up to batch_ms for a record someone waits on, so that a
 * check's hold and its settle share one commit: one fsync per decision, not two. The
 * wait bounds what a crash can lose of holds acknowledged once queued. */
static void gather_unwaited(sq_store *s) {
    struct timespec dl;
    clock_gettime(CLOCK_REALTIME, &dl);
    dl.tv_sec += s->batch_ms / 1000;
    dl.tv_nsec += (long)(s->batch_ms % 1000) * 1000000L;
    if (dl.tv_nsec >= 1000000000L) dl.tv_sec++, dl.tv_nsec -= 1000000000L;
    while (!s->waiters && !s->stop)
        if (pthread_cond_timedwait(&s->nonempty, &s->qmu, &dl) != 0) break;
}

/* Record the batch's outcome before anyone hears of it: a caller told
 * store_unavailable must see the store unhealthy from then on. */
static void set_healthy(sq_store *s, bool ok) {
    pthread_mutex_lock(&s->qmu);
    s->healthy = ok;
    pthread_mutex_unlock(&s->qmu);
}

static void finish_batch(sq_store *s, size_t n, bool ok) {
    pthread_mutex_lock(&s->qmu);
    s->batches++;
    s->records += n;
    if (!ok) s->failures++;
    for (size_t i = 0; i < n; i++) {
        dsc__rec *r = s->batch[i];
        if (!r->waited) {
            free(r);
            continue;
        }
        r->done = true;
        pthread_cond_signal(&r->cv);
    }
    pthread_mutex_unlock(&s->qmu);
}

static void *writer_main(void *arg) {
    sq_store *s = arg;
    pthread_mutex_lock(&s->qmu);
    for (;;) {
        wait_for_work(s);
        if (!s->head) break; /* stopping with nothing left */
        if (s->durability == DSC_DURABILITY_BATCH && !s->stop) {
            pthread_mutex_unlock(&s->qmu); /* let a batch gather */
            sleep_ms(s->batch_ms);
            pthread_mutex_lock(&s->qmu);
        } else if (s->durability == DSC_DURABILITY_FULL && s->healthy) {
            gather_unwaited(s);
        }
        size_t n = take_batch(s);
        pthread_mutex_unlock(&s->qmu);
        bool ok = write_batch(s, s->batch, n);
        set_healthy(s, ok);
        if (s->apply) s->apply(s->apply_ud, s->batch, n);
        for (size_t i = 0; i < n; i++) { /* outside every lock: callbacks may call in */
            dsc__rec *r = s->batch[i];
            if (!r->done_fn || r->waited) continue;
            dsc_error e = {.code = r->status};
            memcpy(e.message, r->message, sizeof e.message);
            r->done_fn(r->done_ud, r->status, &e);
        }
        finish_batch(s, n, ok);
        pthread_mutex_lock(&s->qmu);
    }
    pthread_mutex_unlock(&s->qmu);
    return NULL;
}

static dsc_status sq_start(dsc__store *base, dsc__store_apply_fn apply, void *ud, dsc_error *err) {
    sq_store *s = (sq_store *)base;
    s->apply = apply;
    s->apply_ud = ud;
    if (pthread_create(&s->writer, NULL, writer_main, s) != 0)
        return dsc_error_set(err, DSC_INTERNAL, "cannot start the ledger store's writer");
    pthread_setname_np(s->writer, "dsc-store"); /* a name only: failure is harmless */
    s->started = true;
    return DSC_OK;
}

static dsc_status sq_enqueue(dsc__store *base, dsc__rec *rec, bool wait) {
    sq_store *s = (sq_store *)base;
    pthread_mutex_lock(&s->qmu);
    if (!wait && !rec->done_fn && !s->healthy) {
        pthread_mutex_unlock(&s->qmu);
        free(rec);
        return DSC_STORE_UNAVAILABLE;
    }
    rec->waited = wait;
    rec->done = false;
    if (wait && pthread_cond_init(&rec->cv, NULL) != 0) {
        pthread_mutex_unlock(&s->qmu);
        return DSC_INTERNAL;
    }
    rec->next = NULL;
    if (s->tail)
        s->tail->next = rec;
    else
        s->head = rec;
    s->tail = rec;
    s->waiters += wait || rec->done_fn;
    pthread_cond_signal(&s->nonempty);
    pthread_mutex_unlock(&s->qmu);
    return DSC_OK;
}

static dsc_status sq_wait(dsc__store *base, dsc__rec *rec) {
    sq_store *s = (sq_store *)base;
    pthread_mutex_lock(&s->qmu);
    while (!rec->done)
        pthread_cond_wait(&rec->cv, &s->qmu);
    pthread_mutex_unlock(&s->qmu);
    pthread_cond_destroy(&rec->cv);
    return rec->status;
}

static bool sq_healthy(dsc__store *base) {
    sq_store *s = (sq_store *)base;
    pthread_mutex_lock(&s->qmu);
    bool ok = s->healthy;
    pthread_mutex_unlock(&s->qmu);
    return ok;
}

static void sq_counts(dsc__store *base, uint64_t *batches, uint64_t *records, uint64_t *failures) {
    sq_store *s = (sq_store *)base;
    pthread_mutex_lock(&s->qmu);
    *batches = s->batches;
    *records = s->records;
    *failures = s->failures;
    pthread_mutex_unlock(&s->qmu);
}

static dsc_status sq_exec(dsc__store *base, const char *sql, dsc_error *err) {
    sq_store *s = (sq_store *)base;
    pthread_mutex_lock(&s->dbmu);
    dsc_status st = DSC_OK;
    if (sqlite3_exec(s->db, sql, NULL, NULL, NULL) != SQLITE_OK) st = db_error(s->db, sql, err);
    pthread_mutex_unlock(&s->dbmu);
    return st;
}

static void sq_close(dsc__store *base) {
    sq_store *s = (sq_store *)base;
    if (!s) return;
    if (s->started) {
        pthread_mutex_lock(&s->qmu);
        s->stop = true;
        pthread_cond_signal(&s->nonempty);
        pthread_mutex_unlock(&s->qmu);
        pthread_join(s->writer, NULL);
    }
    for (int i = 0; i < ST_COUNT; i++)
        sqlite3_finalize(s->st[i]);
    for (int i = 0; i < 8; i++) {
        sqlite3_finalize(s->rcache[i].st);
        free(s->rcache[i].sql);
    }
    sqlite3_close(s->db);
    sqlite3_close(s->rdb);
    free(s->batch);
    pthread_mutex_destroy(&s->qmu);
    pthread_mutex_destroy(&s->dbmu);
    pthread_mutex_destroy(&s->rmu);
    pthread_cond_destroy(&s->nonempty);
    if (s->lock_fd >= 0) close(s->lock_fd); /* releases the lock, after the last write */
    free(s);
}

/* --- reading back ---------------------------------------------------------------- */

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

typedef dsc_status (*row_fn)(dsc__store_loader *ld, sqlite3_stmt *st, dsc__rec *rec);

/* Run sql (binding at most one int64), calling fn for every row. */
/* Run sql on db and hand each row to fn; with bind, arg is ?1 and texts (NULL-ended,
 * may be NULL) are ?2, ?3, ... */
/* Run the prepared st (on db) and hand each row to fn; with bind, arg is ?1 and texts
 * (NULL-ended, may be NULL) are ?2, ?3, ... st is reset, not finalized. */
static dsc_status each_row_stmt(sqlite3 *db, sqlite3_stmt *st, bool bind, int64_t arg,
                                const char *const *texts, dsc__store_loader *ld, row_fn fn,
                                dsc_error *err) {
    dsc__rec *rec = calloc(1, sizeof *rec);
    if (!rec) return dsc_error_set(err, DSC_NOMEM, "out of memory loading the ledger");
    dsc_status res = DSC_OK;
    if (bind) sqlite3_bind_int64(st, 1, arg);
    for (int i = 0; bind && texts && texts[i]; i++)
        sqlite3_bind_text(st, i + 2, texts[i], -1, SQLITE_STATIC);
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW)
        if ((res = fn(ld, st, rec)) != DSC_OK) {
            dsc_error_set(err, res, "ledger store: rebuilding the counters failed (%s)",
                          dsc_status_message(res));
            goto out;
        }
    if (rc != SQLITE_DONE) res = db_error(db, "loading", err);
out:
    sqlite3_reset(st);
    free(rec);
    return res;
}

static dsc_status each_row_bound(sqlite3 *db, const char *sql, bool bind, int64_t arg,
                                 const char *const *texts, dsc__store_loader *ld, row_fn fn,
                                 dsc_error *err) {
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK)
        return db_error(db, "loading", err);
    dsc_status res = each_row_stmt(db, st, bind, arg, texts, ld, fn, err);
    sqlite3_finalize(st);
    return res;
}

static dsc_status each_row(sq_store *s, const char *sql, bool bind, int64_t arg,
                           dsc__store_loader *ld, row_fn fn, dsc_error *err) {
    return each_row_bound(s->db, sql, bind, arg, NULL, ld, fn, err);
}

static dsc_status row_budget(dsc__store_loader *ld, sqlite3_stmt *st, dsc__rec *rec) {
    dsc__rec_budget *b = &rec->u.budget;
    b->id = sqlite3_column_int64(st, 0);
    col_text(st, 1, b->selector, sizeof b->selector);
    if (dsc_metric_parse((const char *)sqlite3_column_text(st, 2), &b->metric) != DSC_OK)
        return DSC_OK; /* an unknown metric: skipped */
    col_text(st, 3, b->window, sizeof b->window);
    b->limit = sqlite3_column_int64(st, 4);
    return ld->budget(ld->ud, b);
}

/* HOLD_WHAT from column first on, into rec's decision fields. */
static void col_what(sqlite3_stmt *st, int first, dsc__rec *rec) {
    dsc__rec_decision *d = &rec->u.decision;
    col_text(st, first, d->key_id, sizeof d->key_id);
    col_text(st, first + 1, d->provider, sizeof d->provider);
    col_text(st, first + 2, d->model, sizeof d->model);
    col_text(st, first + 3, d->zone, sizeof d->zone);
    col_text(st, first + 4, d->purpose, sizeof d->purpose);
}

static dsc_status row_held(dsc__store_loader *ld, sqlite3_stmt *st, dsc__rec *rec) {
    col_text(st, 0, rec->reservation_id, sizeof rec->reservation_id);
    col_text(st, 1, rec->request_id, sizeof rec->request_id);
    col_subject(st, 2, &rec->subject);
    rec->expires_us = sqlite3_column_int64(st, 7);
    col_amounts(st, 8, &rec->amounts);
    col_what(st, 8 + DSC_METRIC_COUNT, rec);
    return ld->held(ld->ud, rec, sqlite3_column_int64(st, 6));
}

static dsc_status row_finished(dsc__store_loader *ld, sqlite3_stmt *st, dsc__rec *rec) {
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

static dsc_status row_charge(dsc__store_loader *ld, sqlite3_stmt *st, dsc__rec *rec) {
    rec->at_us = sqlite3_column_int64(st, 0);
    col_subject(st, 1, &rec->subject);
    col_amounts(st, 5, &rec->amounts);
    return ld->charge(ld->ud, rec);
}

/* Reload at most finished_max finished reservations: the bound on finished_us. */
static int64_t newest_finished_bound(sq_store *s, const dsc__store_loader *ld) {
    sqlite3_stmt *st = NULL;
    int64_t since = ld->finished_since_us;
    if (!ld->finished_max ||
        sqlite3_prepare_v2(s->db,
                           "SELECT finished_us FROM reservations WHERE finished_us >= ?1"
                           " ORDER BY finished_us DESC LIMIT 1 OFFSET ?2",
                           -1, &st, NULL) != SQLITE_OK)
        goto out;
    sqlite3_bind_int64(st, 1, since);
    sqlite3_bind_int64(st, 2, (sqlite3_int64)ld->finished_max);
    if (sqlite3_step(st) == SQLITE_ROW) since = sqlite3_column_int64(st, 0) + 1;
out:
    sqlite3_finalize(st);
    return since;
}

static dsc_status sq_load(dsc__store *base, dsc__store_loader *ld, dsc_error *err) {
    sq_store *s = (sq_store *)base;
    dsc_status res = each_row(s,
                              "SELECT id, selector, metric, window, limit_micro FROM budgets"
                              " ORDER BY id",
                              false, 0, ld, row_budget, err);
    if (res != DSC_OK) return res;
    if (ld->budgets_done) ld->budgets_done(ld->ud, ld);
    res = each_row(
        s,
        "SELECT id, request_id, org, team, user, key, created_us, expires_us, " METRIC_COLS(
            "held_") ", " HOLD_WHAT " FROM reservations WHERE state = 'held'",
        false, 0, ld, row_held, err);
    if (res != DSC_OK) return res;
    ld->finished_since_us = newest_finished_bound(s, ld);
    res = each_row(s,
                   "SELECT id, request_id, org, team, user, key, state, finished_us, " METRIC_COLS(
                       "charged_") ", " HOLD_WHAT " FROM reservations WHERE finished_us >= ?1"
                                   " AND state <> 'held' ORDER BY finished_us",
                   true, ld->finished_since_us, ld, row_finished, err);
    if (res != DSC_OK) return res;
    return each_row(s,
                    "SELECT at_us, org, team, user, key, " METRIC_COLS(
                        "") " FROM charges"
                            " WHERE seq >= (SELECT min(seq) FROM charges WHERE at_us >= ?1)"
                            " ORDER BY seq",
                    true, ld->since_us, ld, row_charge, err);
}

static dsc_status sq_find_reservation(dsc__store *base, const char *id, dsc__rec *out,
                                      const char **state) {
    sq_store *s = (sq_store *)base;
    static const char sql[] = "SELECT org, team, user, key, state, " METRIC_COLS(
        "charged_") ", " HOLD_WHAT " FROM reservations WHERE id = ?";
    static const char *const states[] = {"held", "settled", "cancelled", "expired", "released"};
    dsc_status res = DSC_UNKNOWN_RESERVATION;
    sqlite3_stmt *st = NULL;
    pthread_mutex_lock(&s->rmu);
    if (!s->rdb && open_conn(s->path, &s->rdb, NULL) != DSC_OK) goto out;
    if (sqlite3_prepare_v2(s->rdb, sql, -1, &st, NULL) != SQLITE_OK) goto out;
    sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
    if (sqlite3_step(st) != SQLITE_ROW) goto out;
    col_subject(st, 0, &out->subject);
    const char *v = (const char *)sqlite3_column_text(st, 4);
    for (size_t i = 0; v && i < sizeof states / sizeof states[0]; i++)
        if (strcmp(v, states[i]) == 0) *state = states[i];
    col_amounts(st, 5, &out->amounts);
    col_what(st, 5 + DSC_METRIC_COUNT, out);
    res = *state ? DSC_OK : DSC_UNKNOWN_RESERVATION;
out:
    sqlite3_finalize(st);
    pthread_mutex_unlock(&s->rmu);
    return res;
}

typedef struct replay_ctx {
    dsc_status (*fn)(void *ud, const dsc__rec *charge);
    void *ud;
    int64_t last_seq;
    bool any;
} replay_ctx;

static dsc_status replay_charge(void *ud, const dsc__rec *charge) {
    replay_ctx *c = ud;
    return c->fn(c->ud, charge);
}

/* A replayed charge: its seq (the last column), then the charge itself. */
static dsc_status row_replay(dsc__store_loader *ld, sqlite3_stmt *st, dsc__rec *rec) {
    replay_ctx *c = ((replay_ctx *)ld->ud);
    c->last_seq = sqlite3_column_int64(st, 5 + DSC_METRIC_COUNT);
    c->any = true;
    return row_charge(ld, st, rec);
}

/* The replay's SQL: the charges from the first at or after ?1 (or, with after_seq,
 * those after it), less those filter rules out; its subject values become ?2, ?3, ...
 * in texts. */
static void replay_sql(const dsc__replay_filter *f, char *sql, size_t cap, const char *texts[5]) {
    static const char *const cols[4] = {"org", "team", "user", "key"};
    static const char head[] =
        "SELECT at_us, org, team, user, key, " METRIC_COLS("") ", seq FROM charges WHERE ";
    size_t n = 0, len = (size_t)snprintf(sql, cap, "%s%s != 0", head, dsc_metric_name(f->metric));
    if (f->after_seq > 0) /* a seek on the rowid: the window's start is far behind */
        len += (size_t)snprintf(sql + len, cap - len, " AND seq > %lld AND at_us >= ?1",
                                (long long)f->after_seq);
    else
        len += (size_t)snprintf(sql + len, cap - len,
                                " AND seq >= (SELECT min(seq) FROM charges WHERE at_us >= ?1)");
    for (int i = 0; i < 4 && len < cap; i++) {
        if (!f->subject[i]) continue;
        if (!f->subject[i][0]) {
            len += (size_t)snprintf(sql + len, cap - len, " AND %s IS NOT NULL", cols[i]);
            continue;
        }
        texts[n++] = f->subject[i];
        len += (size_t)snprintf(sql + len, cap - len, " AND %s = ?%zu", cols[i], n + 1);
    }
    if (len < cap) snprintf(sql + len, cap - len, " ORDER BY seq");
    texts[n] = NULL;
}

/* Replay the charges st selects (on db) through fn. */
static dsc_status replay_stmt(sqlite3 *db, sqlite3_stmt *st, int64_t since_us,
                              const char *const *texts,
                              dsc_status (*fn)(void *ud, const dsc__rec *charge), void *ud,
                              int64_t *last_seq) {
    replay_ctx ctx = {fn, ud, 0, false};
    dsc__store_loader ld = {.ud = &ctx, .charge = replay_charge};
    dsc_status res = each_row_stmt(db, st, true, since_us, texts, &ld, row_replay, NULL);
    if (ctx.any && last_seq) *last_seq = ctx.last_seq;
    return res;
}

static dsc_status sq_replay(dsc__store *base, int64_t since_us, const dsc__replay_filter *filter,
                            dsc_status (*fn)(void *ud, const dsc__rec *charge), void *ud,
                            int64_t *last_seq) {
    sq_store *s = (sq_store *)base;
    char sql[600];
    const char *texts[5];
    replay_sql(filter, sql, sizeof sql, texts);
    sqlite3_stmt *st = NULL;
    pthread_mutex_lock(&s->dbmu);
    dsc_status res = DSC_STORE_UNAVAILABLE;
    if (sqlite3_prepare_v2(s->db, sql, -1, &st, NULL) == SQLITE_OK)
        res = replay_stmt(s->db, st, since_us, texts, fn, ud, last_seq);
    sqlite3_finalize(st);
    pthread_mutex_unlock(&s->dbmu);
    return res;
}

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

/* One read transaction on the reader: the newest charge's seq, then the replay, both
 * of the same snapshot; *last_seq is that seq. */
static dsc_status replay_snapshot(sq_store *s, int64_t since_us, const dsc__replay_filter *filter,
                                  dsc_status (*fn)(void *ud, const dsc__rec *charge), void *ud,
                                  int64_t *last_seq) {
    char sql[600];
    const char *texts[5];
    replay_sql(filter, sql, sizeof sql, texts);
    sqlite3_stmt *newest = reader_stmt(s, "SELECT coalesce(max(seq), 0) FROM charges");
    if (!newest || sqlite3_step(newest) != SQLITE_ROW) {
        if (newest) sqlite3_reset(newest);
        return DSC_STORE_UNAVAILABLE;
    }
    int64_t snapshot = sqlite3_column_int64(newest, 0);
    sqlite3_reset(newest);
    sqlite3_stmt *st = reader_stmt(s, sql);
    if (!st) return DSC_STORE_UNAVAILABLE;
    dsc_status res = replay_stmt(s->rdb, st, since_us, texts, fn, ud, NULL);
    sqlite3_clear_bindings(st); /* the texts were the caller's */
    if (res == DSC_OK) *last_seq = snapshot;
    return res;
}

static dsc_status sq_replay_read(dsc__store *base, int64_t since_us,
                                 const dsc__replay_filter *filter,
                                 dsc_status (*fn)(void *ud, const dsc__rec *charge), void *ud,
                                 int64_t *last_seq) {
    sq_store *s = (sq_store *)base;
    pthread_mutex_lock(&s->rmu);
    dsc_status res = DSC_STORE_UNAVAILABLE;
    if ((s->rdb || open_conn(s->path, &s->rdb, NULL) == DSC_OK) &&
        sqlite3_exec(s->rdb, "BEGIN", NULL, NULL, NULL) == SQLITE_OK) {
        res = replay_snapshot(s, since_us, filter, fn, ud, last_seq);
        sqlite3_exec(s->rdb, "COMMIT", NULL, NULL, NULL);
    }
    pthread_mutex_unlock(&s->rmu);
    return res;
}

/* --- the backend ----------------------------------------------------------------- */

/* Any target that is not a URI ("scheme://...") is a file path. */
static bool sq_accepts(const char *target) {
    return !strstr(target, "://");
}

const dsc__store_type dsc__store_sqlite = {
    .name = "sqlite",
    .accepts = sq_accepts,
    .open = sq_open,
    .load = sq_load,
    .start = sq_start,
    .append = sq_enqueue,
    .wait = sq_wait,
    .history = sq_replay_read,
    .history_tail = sq_replay,
    .charge_seq = sq_charge_seq,
    .find_reservation = sq_find_reservation,
    .healthy = sq_healthy,
    .counts = sq_counts,
    .exec = sq_exec,
    .close = sq_close,
};
