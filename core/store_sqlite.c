/*
 * store_sqlite.c - the ledger's SQLite store: the group-commit writer of its event log.
 *
 * The "sqlite" backend of store.h (dsc__store_sqlite): every target that is not a URI.
 * One file in WAL mode. One writer thread owns the write connection: it takes every
 * queued record, appends one row per record to the event log (store_sqlite_schema.c),
 * or one row for a hold and its finish when both are in the batch (a hold nobody waits
 * on is kept back a few batches for its settle: carry_holds), in one transaction, commits
 * (one fsync per batch with synchronous=FULL), then lets the ledger apply the batch and wakes the
 * callers waiting on it. Strings an event repeats (subjects, models, reasons, ...) are interned:
 * the writer keeps the ids it has used in memory, so the hot path appends one row and runs no
 * SELECT. A failed statement that is the record's own fault (a constraint) fails only that record;
 * an I/O error (SQLITE_FULL, IOERR, READONLY, ...) rolls the whole batch back and fails every
 * record in it with DSC_STORE_UNAVAILABLE (and forgets the ids interned by it). While the store is
 * failing, the writer probes it every second so that it recovers by itself. Reads (reload, history,
 * recall) are in store_sqlite_read.c.
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
#include "store_sqlite_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>

typedef dsc__sq_store sq_store;

/* A checkpoint adds its hours' sums to rollups ROLL_MANY rows per statement (a
 * statement's own overhead is paid once for all of them), the rest one by one. */
#define ROLL_MANY 16
#define ROLL_ROW "(?, ?, ?, ?, ?, ?, ?, ?, ?)"
#define ROLL_ROWS4 ROLL_ROW "," ROLL_ROW "," ROLL_ROW "," ROLL_ROW
#define ROLL_ROWS ROLL_ROWS4 "," ROLL_ROWS4 "," ROLL_ROWS4 "," ROLL_ROWS4 /* ROLL_MANY */
#define ROLL_UPSERT                                                                                \
    " ON CONFLICT(hour_us, subject) DO UPDATE SET"                                                 \
    " energy_wh = energy_wh + excluded.energy_wh, gco2e = gco2e + excluded.gco2e,"                 \
    " water_ml = water_ml + excluded.water_ml, pe_mj = pe_mj + excluded.pe_mj,"                    \
    " cost = cost + excluded.cost, tokens = tokens + excluded.tokens,"                             \
    " requests = requests + excluded.requests"

static const char *const stmt_sql[ST_COUNT] = {
    [ST_EVENT] =
        "INSERT INTO events(at_us, type, rid, subject, state, kind, hold, energy_wh, gco2e,"
        " water_ml, pe_mj, cost, tokens, requests, owner, expires_us, request_id,"
        " provider, model, zone, purpose, decision_id, outcome, policy,"
        " policy_version, reason, purpose_class, verdicts, tags, warnings,"
        " input_tokens, output_tokens, est_energy_wh, est_gco2e, est_water_ml,"
        " finish_after_us, held_energy_wh, held_gco2e, held_water_ml, held_pe_mj, held_cost,"
        " held_tokens, held_requests)"
        " VALUES(?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,"
        "?,?,?,?,?,?,?,?)",
    /* a settle, cancel or expiry of a hold the writer knows open: the hot path's second
     * row binds 13 values, not 43 */
    [ST_FINISH] = "INSERT INTO events(at_us, type, subject, state, kind, hold, energy_wh, gco2e,"
                  " water_ml, pe_mj, cost, tokens, requests)"
                  " VALUES(?,?,?,?,?,?,?,?,?,?,?,?,?)",
    [ST_BUDGET] = "INSERT INTO budget_log(at_us, deleted, budget_id, selector, metric, window,"
                  " limit_micro) VALUES(?,?,?,?,?,?,?)",
    /* a string missing from memory is nearly always new to the file (memory forgets only
     * after a restart, a rollback or INTERN_MAX): insert first, look up on conflict */
    [ST_NAME_GET] = "SELECT id FROM names WHERE name = ?1",
    [ST_NAME_ADD] = "INSERT INTO names(name) VALUES(?1) ON CONFLICT DO NOTHING",
    [ST_SUBJECT_GET] = "SELECT id FROM subjects WHERE org = ?1 AND team = ?2 AND user = ?3"
                       " AND key = ?4",
    [ST_SUBJECT_ADD] = "INSERT INTO subjects(org, team, user, key) VALUES(?1, ?2, ?3, ?4)"
                       " ON CONFLICT DO NOTHING",
    [ST_CHECKPOINT] = "INSERT INTO checkpoints(seq, at_us, max_at_us, held_from, max_rid)"
                      " VALUES(?1, ?2, ?3, ?4, ?5)",
    [ST_ROLLUP] = "INSERT INTO rollups VALUES" ROLL_ROW ROLL_UPSERT,
    [ST_ROLLUP_MANY] = "INSERT INTO rollups VALUES" ROLL_ROWS ROLL_UPSERT,
    /* old events in [?1, ?2), but the holds still open */
    [ST_PURGE] = "DELETE FROM events WHERE seq >= ?1 AND seq < ?2"
                 " AND NOT (type IN (1, 2) AND dsc_open(rid))",
    [ST_PURGED] = "INSERT OR REPLACE INTO meta VALUES('purged_before_us', ?1)",
    [ST_UNRESERVED] = "INSERT INTO unreserved VALUES(?1)",
    /* IMMEDIATE: the write lock first, waiting (busy_timeout) for another connection
     * to the file (the keys' table) to commit; a deferred BEGIN that reads first
     * fails at once with SQLITE_BUSY when that connection committed meanwhile */
    [ST_BEGIN] = "BEGIN IMMEDIATE",
    [ST_COMMIT] = "COMMIT",
    [ST_ROLLBACK] = "ROLLBACK"};

dsc_status dsc__sq_db_error(sqlite3 *db, const char *what, dsc_error *err) {
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

/* One integer from sql (?1 = arg); 0 when there is none. */
/* The integer sql (one row, ?1 = arg) gives; 0, and *ok false, when it fails. */
static int64_t query_int(sqlite3 *db, const char *sql, int64_t arg, bool *ok) {
    sqlite3_stmt *st = NULL;
    int64_t v = 0;
    int rc = SQLITE_ERROR;
    if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) == SQLITE_OK) {
        sqlite3_bind_int64(st, 1, arg);
        rc = sqlite3_step(st);
        if (rc == SQLITE_ROW) v = sqlite3_column_int64(st, 0);
    }
    sqlite3_finalize(st);
    if (rc != SQLITE_ROW && rc != SQLITE_DONE) *ok = false;
    return v;
}

static void roll_add(sq_store *s, int64_t at_us, int64_t subject, const dsc_amounts *a);

/* The charges committed after the newest checkpoint, summed per hour and subject
 * again (they are not in rollups yet). */
static bool reroll_tail(sq_store *s) {
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(s->db,
                           "SELECT " DSC__SQ_FIN_AT(
                               "e") ", subject, energy_wh, gco2e, water_ml,"
                                    " pe_mj, cost, tokens, requests FROM events e WHERE seq > ?1"
                                    " AND type IN (" DSC__SQ_CHARGE_TYPES ") AND kind IS NOT NULL"
                                    " ORDER BY seq",
                           -1, &st, NULL) != SQLITE_OK)
        return false;
    sqlite3_bind_int64(st, 1, s->checkpoint_seq);
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        dsc_amounts a;
        for (int m = 0; m < DSC_METRIC_COUNT; m++)
            a.v[m] = sqlite3_column_int64(st, 2 + m);
        roll_add(s, sqlite3_column_int64(st, 0), sqlite3_column_int64(st, 1), &a);
    }
    sqlite3_finalize(st);
    return rc == SQLITE_DONE;
}

/* The largest counter of a hold so far, which the next checkpoint stores: the newest
 * checkpoint's and those of the holds after it (the writer then adds its own). */
static bool read_max_rid(sq_store *s) {
    sqlite3_stmt *st = NULL;
    s->max_rid_len = 0;
    if (sqlite3_prepare_v2(s->db,
                           "SELECT max(m) FROM (SELECT max_rid AS m FROM checkpoints WHERE seq = ?1"
                           " UNION ALL SELECT substr(rid, 1, 6) FROM events WHERE seq > ?1"
                           " AND type IN (" DSC__SQ_HOLD_TYPES ") AND length(rid) = 18)",
                           -1, &st, NULL) != SQLITE_OK)
        return false;
    sqlite3_bind_int64(st, 1, s->checkpoint_seq);
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW && sqlite3_column_type(st, 0) == SQLITE_BLOB &&
        sqlite3_column_bytes(st, 0) == DSC__SQ_COUNTER_BYTES) {
        memcpy(s->max_rid, sqlite3_column_blob(st, 0), DSC__SQ_COUNTER_BYTES);
        s->max_rid_len = DSC__SQ_COUNTER_BYTES;
    }
    sqlite3_finalize(st);
    return rc == SQLITE_ROW;
}

/* A hold committed: its id's counter into max_rid when it is the largest. */
static void note_rid(sq_store *s, const char *id) {
    unsigned char b[32];
    if (dsc__sq_pack_rid(id, b) != DSC__SQ_RID_BYTES) return;
    if (s->max_rid_len && memcmp(b, s->max_rid, DSC__SQ_COUNTER_BYTES) <= 0) return;
    memcpy(s->max_rid, b, DSC__SQ_COUNTER_BYTES);
    s->max_rid_len = DSC__SQ_COUNTER_BYTES;
}

/* The newest event, checkpoint and time written, read once at open; false when a
 * read failed (the open fails rather than write from wrong positions). */
static bool read_positions(sq_store *s) {
    bool ok = true;
    s->last_seq = query_int(s->db, "SELECT coalesce(max(seq), 0) FROM events", 0, &ok);
    s->charge_seq = s->last_seq; /* no charge is newer than the newest event */
    s->checkpoint_seq = query_int(s->db, "SELECT coalesce(max(seq), 0) FROM checkpoints", 0, &ok);
    s->checkpoint_at =
        query_int(s->db, "SELECT at_us FROM checkpoints WHERE seq = ?1", s->checkpoint_seq, &ok);
    s->held_from = query_int(s->db,
                             "SELECT coalesce(max(held_from), 1) FROM checkpoints"
                             " WHERE seq = ?1",
                             s->checkpoint_seq, &ok);
    if (s->held_from < 1) s->held_from = 1;
    int64_t at = query_int(s->db, "SELECT coalesce(max(max_at_us), 0) FROM checkpoints", 0, &ok);
    int64_t tail = query_int(s->db,
                             "SELECT coalesce(max(" DSC__SQ_FIN_AT("e") "), 0) FROM events e"
                                                                        " WHERE seq > ?1",
                             s->checkpoint_seq, &ok);
    s->max_at_us = tail > at ? tail : at;
    s->retained_from = query_int(s->db, "SELECT coalesce(min(seq), 1) FROM events", 0, &ok);
    return ok && read_max_rid(s) && reroll_tail(s);
}

static void sql_open(sqlite3_context *ctx, int argc, sqlite3_value **argv);

static dsc_status setup_db(sq_store *s, dsc_error *err) {
    char pragmas[160], msg[256];
    /* the page size takes only on a new file (before its first table) */
    snprintf(pragmas, sizeof pragmas,
             "PRAGMA page_size=%d; PRAGMA journal_mode=WAL; PRAGMA synchronous=%s;"
             " PRAGMA cache_size=-32768;",
             DSC__SQ_PAGE_SIZE, s->durability == DSC_DURABILITY_OFF ? "OFF" : "FULL");
    if (sqlite3_exec(s->db, pragmas, NULL, NULL, NULL) != SQLITE_OK)
        return dsc__sq_db_error(s->db, "setting WAL mode", err);
    if (dsc__sq_schema(s->db, msg, sizeof msg) != SQLITE_OK)
        return dsc_error_set(err, DSC_STORE_UNAVAILABLE,
                             "ledger store: creating or migrating the schema: %s", msg);
    if (sqlite3_create_function(s->db, "dsc_open", 1, SQLITE_UTF8, s, sql_open, NULL, NULL) !=
        SQLITE_OK)
        return dsc__sq_db_error(s->db, "registering dsc_open", err);
    for (int i = 0; i < ST_COUNT; i++)
        if (sqlite3_prepare_v3(s->db, stmt_sql[i], -1, SQLITE_PREPARE_PERSISTENT, &s->st[i],
                               NULL) != SQLITE_OK)
            return dsc__sq_db_error(s->db, "preparing statements", err);
    if (!read_positions(s)) return dsc__sq_db_error(s->db, "reading the log's positions", err);
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
    s->retention_us = o->retention_us;
    s->healthy = true;
    s->lock_fd = -1;
    snprintf(s->path, sizeof s->path, "%s", path);
    pthread_mutex_init(&s->qmu, NULL);
    pthread_mutex_init(&s->dbmu, NULL);
    pthread_mutex_init(&s->rmu, NULL);
    pthread_cond_init(&s->nonempty, NULL);
    pthread_cond_init(&s->room, NULL);
    dsc__strmap_init(&s->names.map);
    dsc__strmap_init(&s->subjects.map);
    dsc__strmap_init(&s->open);
    dsc__strmap_init(&s->roll);
    make_parent(path);
    if (take_lock(s, err) != DSC_OK || dsc__sq_open_conn(path, &s->db, err) != DSC_OK ||
        setup_db(s, err) != DSC_OK) {
        sq_close(&s->base);
        return NULL;
    }
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

static void bind_id(sqlite3_stmt *st, int i, int64_t id) {
    if (id)
        sqlite3_bind_int64(st, i, id);
    else
        sqlite3_bind_null(st, i);
}

static void bind_amounts(sqlite3_stmt *st, int first, const dsc_amounts *a) {
    for (int m = 0; m < DSC_METRIC_COUNT; m++)
        sqlite3_bind_int64(st, first + m, a->v[m]);
}

/* Every statement binds all its parameters each time, so bindings are not cleared. */
static int step(sqlite3_stmt *st) {
    int rc = sqlite3_step(st);
    sqlite3_reset(st);
    return rc == SQLITE_DONE ? SQLITE_OK : rc;
}

/* --- interning ------------------------------------------------------------------ */

struct dsc__sq_name {
    int64_t id;
    char key[];
};
typedef struct dsc__sq_name sq_name;

/* The cache is dropped (and refilled as ids are used) past this many entries. */
#define INTERN_MAX 65536

static void free_name(void *val, void *ud) {
    (void)ud;
    free(val);
}

static void intern_clear(dsc__sq_intern *in) {
    memset(in->memo, 0, sizeof in->memo);
    memset(in->warnings, 0, sizeof in->warnings);
    dsc__strmap_each(&in->map, free_name, NULL);
    dsc__strmap_destroy(&in->map);
    dsc__strmap_init(&in->map);
    in->n_added = 0;
}

static void intern_free(dsc__sq_intern *in) {
    intern_clear(in);
    dsc__strmap_destroy(&in->map);
    free(in->added);
}

/* The batch rolled back: the ids it added are gone from the file, so from memory. */
static void intern_rollback(dsc__sq_intern *in) {
    memset(in->memo, 0, sizeof in->memo);
    memset(in->warnings, 0, sizeof in->warnings);
    for (size_t i = 0; i < in->n_added; i++) {
        dsc__strmap_del_if(&in->map, in->added[i]->key, in->added[i]);
        free(in->added[i]);
    }
    in->n_added = 0;
}

/* Remember key -> id (and that this batch added it). Out of memory, it is not
 * remembered: the next use looks it up again. */
static sq_name *intern_remember(dsc__sq_intern *in, const char *key, int64_t id) {
    size_t n = strlen(key);
    if (in->n_added == in->cap_added) {
        size_t cap = in->cap_added ? in->cap_added * 2 : 64;
        sq_name **a = realloc(in->added, cap * sizeof *a);
        if (!a) return NULL;
        in->added = a;
        in->cap_added = cap;
    }
    sq_name *e = malloc(sizeof *e + n + 1);
    if (!e) return NULL;
    e->id = id;
    memcpy(e->key, key, n + 1);
    if (dsc__strmap_put(&in->map, e->key, e) != DSC_OK) {
        free(e);
        return NULL;
    }
    in->added[in->n_added++] = e;
    return e;
}

/* The id of the row add inserts with vals bound (1..n), else (it is there already) of
 * the one get finds. */
static int intern_row(sq_store *s, int get, int add, const char *const *vals, int n, int64_t *id) {
    sqlite3_stmt *st = s->st[add];
    for (int i = 0; i < n; i++)
        sqlite3_bind_text(st, i + 1, vals[i], -1, SQLITE_STATIC);
    int rc = step(st);
    if (rc != SQLITE_OK) return rc;
    if (sqlite3_changes(s->db) == 1) {
        *id = sqlite3_last_insert_rowid(s->db);
        return SQLITE_OK;
    }
    st = s->st[get];
    for (int i = 0; i < n; i++)
        sqlite3_bind_text(st, i + 1, vals[i], -1, SQLITE_STATIC);
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) *id = sqlite3_column_int64(st, 0);
    sqlite3_reset(st);
    if (rc == SQLITE_DONE) rc = SQLITE_CORRUPT; /* a conflict without the row */
    return rc == SQLITE_ROW ? SQLITE_OK : rc;
}

/* The id of name in names (0 for "": stored as NULL). field: the column it is for;
 * a column mostly repeats its last name (a model, a policy, a reason), which is
 * then found by one comparison, without hashing it. */
static int name_id(sq_store *s, int field, const char *name, int64_t *id) {
    *id = 0;
    if (!name || !name[0]) return SQLITE_OK;
    sq_name **memo = &s->names.memo[field % DSC__SQ_MEMO];
    sq_name *e = *memo;
    if (!e || strcmp(e->key, name) != 0) e = dsc__strmap_get(&s->names.map, name);
    if (e) {
        *memo = e;
        *id = e->id;
        return SQLITE_OK;
    }
    int rc = intern_row(s, ST_NAME_GET, ST_NAME_ADD, &name, 1, id);
    if (rc == SQLITE_OK) *memo = intern_remember(&s->names, name, *id);
    return rc;
}

/* The levels of subj joined by 0x1f into key (no formatting on the hot path). */
static void subject_key(const dsc__rec_subject *subj, char key[4 * DSC_NAME_MAX + 4]) {
    const char *const parts[4] = {subj->org, subj->team, subj->user, subj->key};
    size_t len = 0;
    for (int i = 0; i < 4; i++) {
        size_t n = strnlen(parts[i], DSC_NAME_MAX - 1);
        memcpy(key + len, parts[i], n);
        len += n;
        key[len++] = i < 3 ? '\x1f' : '\0';
    }
}

/* The id of a subject tuple in subjects (absent levels are ""). */
static int subject_id(sq_store *s, const dsc__rec_subject *subj, int64_t *id) {
    char key[4 * DSC_NAME_MAX + 4];
    subject_key(subj, key);
    sq_name *e = dsc__strmap_get(&s->subjects.map, key);
    if (e) {
        *id = e->id;
        return SQLITE_OK;
    }
    const char *vals[4] = {subj->org, subj->team, subj->user, subj->key};
    int rc = intern_row(s, ST_SUBJECT_GET, ST_SUBJECT_ADD, vals, 4, id);
    if (rc == SQLITE_OK) intern_remember(&s->subjects, key, *id);
    return rc;
}

/* Bind the interned id of name to parameter i; the first failure is kept in *rc. */
static void bind_name(sq_store *s, sqlite3_stmt *st, int i, const char *name, int *rc) {
    int64_t id = 0;
    if (*rc == SQLITE_OK) *rc = name_id(s, i, name, &id);
    bind_id(st, i, id);
}

/* --- writing events ------------------------------------------------------------- */

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

/* Bind the interned id of the warnings' JSON to parameter i: each set's id is kept by
 * its bits, so a set seen before is neither formatted nor looked up. */
static void bind_warnings(sq_store *s, sqlite3_stmt *st, int i, unsigned bits, int *rc) {
    sq_name **known = bits < DSC__SQ_WARNINGS ? &s->names.warnings[bits] : NULL;
    if (!bits || (known && *known)) {
        bind_id(st, i, bits ? (*known)->id : 0);
        return;
    }
    char json[256];
    bind_name(s, st, i, warnings_json(bits, json, sizeof json), rc);
    sq_name *e = s->names.memo[i % DSC__SQ_MEMO]; /* what bind_name found or added */
    if (known && *rc == SQLITE_OK && e && strcmp(e->key, json) == 0) *known = e;
}

/* The estimate's column i, NULL when it is what the row's hold holds (held: NULL
 * without one): the views read it from the hold's amounts then. */
static void bind_est(sqlite3_stmt *st, int i, int64_t est, const dsc_amounts *held, dsc_metric m) {
    if (!held || held->v[m] != est) sqlite3_bind_int64(st, i, est);
}

/* A decision's own columns (22..35 of ST_EVENT); held: the amounts of the row's hold. */
static void bind_decision(sq_store *s, sqlite3_stmt *st, const dsc__rec_decision *d,
                          const dsc_amounts *held, int *rc) {
    bind_text(st, 22, d->decision_id);
    bind_name(s, st, 23, d->outcome, rc);
    bind_name(s, st, 24, d->policy, rc);
    bind_name(s, st, 25, d->policy_version, rc);
    bind_name(s, st, 26, d->reason, rc);
    bind_name(s, st, 27, d->purpose_class, rc);
    bind_name(s, st, 28, d->verdicts, rc);
    bind_name(s, st, 29, d->tags, rc);
    bind_warnings(s, st, 30, d->warnings, rc);
    sqlite3_bind_int64(st, 31, d->input_tokens);
    sqlite3_bind_int64(st, 32, d->output_tokens);
    bind_est(st, 33, d->est_energy_wh, held, DSC_METRIC_ENERGY_WH);
    bind_est(st, 34, d->est_gco2e, held, DSC_METRIC_GCO2E);
    bind_est(st, 35, d->est_water_ml, held, DSC_METRIC_WATER_ML);
}

/* The type of r's row; fin: the finish of r (a hold) written in the same row. */
static int event_type(const dsc__rec *r, const dsc__rec *fin) {
    switch (r->type) {
    case DSC__REC_RESERVE:
        if (fin) return r->with_decision ? DSC__EV_HOLD_DECISION_FINISH : DSC__EV_HOLD_FINISH;
        return r->with_decision ? DSC__EV_HOLD_DECISION : DSC__EV_HOLD;
    case DSC__REC_SETTLE:
        return DSC__EV_SETTLE;
    case DSC__REC_CANCEL:
        return DSC__EV_CANCEL;
    case DSC__REC_EXPIRE:
        return DSC__EV_EXPIRE;
    default:
        return DSC__EV_DECISION;
    }
}

/* An unreserved settle's id, once: a repeat fails with a constraint (the record's own
 * fault), as the ledger cannot recall ids it did not make. */
static int write_unreserved(sq_store *s, const dsc__rec *r) {
    if (r->type != DSC__REC_SETTLE || !r->charge_kind || strcmp(r->charge_kind, "unreserved"))
        return SQLITE_OK;
    dsc__sq_bind_rid(s->st[ST_UNRESERVED], 1, r->reservation_id);
    return step(s->st[ST_UNRESERVED]);
}

static const dsc_amounts zero_amounts = {{0}};

/* What a finish charged (a cancel or a release: nothing). */
static const dsc_amounts *charged(const dsc__rec *fin) {
    return fin->charge_kind ? &fin->amounts : &zero_amounts;
}

/* A settle, cancel or expiry of an open hold: it names the hold by seq only (the views
 * and reads take the id, the owner and what it was for from the hold). */
static int write_finish(sq_store *s, const dsc__rec *r, int64_t hold, int64_t subject) {
    sqlite3_stmt *st = s->st[ST_FINISH];
    int rc = SQLITE_OK;
    sqlite3_bind_int64(st, 1, r->at_us);
    sqlite3_bind_int(st, 2, event_type(r, NULL));
    bind_id(st, 3, subject);
    bind_name(s, st, 4, r->state, &rc);
    bind_name(s, st, 5, r->charge_kind, &rc);
    sqlite3_bind_int64(st, 6, hold);
    bind_amounts(st, 7, charged(r));
    return rc == SQLITE_OK ? step(st) : rc;
}

/* Any other event, in ST_EVENT: a hold (with its check's decision; with its finish
 * when fin is in the same batch), a finish of a hold the writer does not know open,
 * a decision. u.decision carries what a hold was for (owner = key_id, provider,
 * model, zone, purpose), and the decision itself on a decision or a hold that has
 * one. */
static int write_row(sq_store *s, const dsc__rec *r, const dsc__rec *fin, int64_t subject) {
    sqlite3_stmt *st = s->st[ST_EVENT];
    const dsc__rec_decision *d = &r->u.decision;
    int type = event_type(r, fin), rc = SQLITE_OK;
    bool hold = r->type == DSC__REC_RESERVE, finish = !hold && type != DSC__EV_DECISION;
    sqlite3_clear_bindings(st);
    sqlite3_bind_int64(st, 1, r->at_us);
    sqlite3_bind_int(st, 2, type);
    dsc__sq_bind_rid(st, 3, r->reservation_id);
    bind_id(st, 4, subject);
    const dsc__rec *f = fin ? fin : finish ? r : NULL; /* what finished the hold */
    if (f) {
        bind_name(s, st, 5, f->state, &rc);
        bind_name(s, st, 6, f->charge_kind, &rc);
    }
    if (hold || finish) bind_amounts(st, 8, f ? charged(f) : &r->amounts);
    if (hold) sqlite3_bind_int64(st, 16, r->expires_us);
    if (hold || type == DSC__EV_DECISION)
        bind_text(st, 17, hold && r->request_id[0] ? r->request_id : d->request_id);
    bind_name(s, st, 15, d->key_id, &rc);
    bind_name(s, st, 18, d->provider, &rc);
    bind_name(s, st, 19, d->model, &rc);
    bind_name(s, st, 20, d->zone, &rc);
    bind_name(s, st, 21, d->purpose, &rc);
    if (type == DSC__EV_HOLD_DECISION || type == DSC__EV_HOLD_DECISION_FINISH ||
        type == DSC__EV_DECISION)
        bind_decision(s, st, d, hold ? &r->amounts : NULL, &rc);
    if (fin) {
        sqlite3_bind_int64(st, 36, fin->at_us - r->at_us);
        bind_amounts(st, 37, &r->amounts);
    }
    return rc == SQLITE_OK ? step(st) : rc;
}

/* One events row for rec i of the batch (a hold, a settle, cancel, expiry or a
 * decision), and for the finish of a hold in the same batch with it. */
static int write_event(sq_store *s, dsc__rec **recs, size_t i) {
    const dsc__rec *r = recs[i];
    dsc__sq_slot *slot = &s->slots[i];
    const dsc__rec *fin = slot->finish >= 0 ? recs[slot->finish] : NULL;
    bool finish = r->type != DSC__REC_RESERVE && r->type != DSC__REC_DECISION;
    int64_t subject = 0;
    int rc = subject_id(s, &r->subject, &subject);
    if (rc != SQLITE_OK) return rc;
    const struct dsc__sq_open *h = finish ? dsc__strmap_get(&s->open, r->reservation_id) : NULL;
    rc = h ? write_finish(s, r, h->seq, subject) : write_row(s, r, fin, subject);
    if (rc != SQLITE_OK) return rc;
    s->last_seq = slot->seq = sqlite3_last_insert_rowid(s->db);
    slot->subject = subject;
    if (r->at_us > s->max_at_us) s->max_at_us = r->at_us;
    if (fin) {
        s->slots[slot->finish].seq = slot->seq;
        s->slots[slot->finish].subject = subject;
        if (fin->at_us > s->max_at_us) s->max_at_us = fin->at_us;
    } else if (r->type == DSC__REC_RESERVE) {
        /* known open at once, so that a settle later in the batch names it (forgotten
         * again if the batch rolls back) */
        dsc__sq_hold_open(s, r->reservation_id, slot->seq);
    }
    return SQLITE_OK;
}

static int write_budget(sq_store *s, const dsc__rec *r) {
    const dsc__rec_budget *b = &r->u.budget;
    sqlite3_stmt *st = s->st[ST_BUDGET];
    sqlite3_bind_int64(st, 1, r->at_us);
    sqlite3_bind_int(st, 2, r->type == DSC__REC_BUDGET_DELETE);
    sqlite3_bind_int64(st, 3, b->id);
    bind_text(st, 4, b->selector);
    bind_text(st, 5, dsc_metric_name(b->metric));
    bind_text(st, 6, b->window);
    sqlite3_bind_int64(st, 7, r->type == DSC__REC_BUDGET_DELETE ? 0 : b->limit);
    return step(st);
}

static bool own_fault(int rc) {
    return (rc & 0xff) == SQLITE_CONSTRAINT;
}

static int write_rec(sq_store *s, dsc__rec **recs, size_t i) {
    const dsc__rec *r = recs[i];
    if (s->slots[i].with_hold) return SQLITE_OK; /* in its hold's row */
    s->slots[i].seq = s->slots[i].subject = 0;
    if (r->type == DSC__REC_SYNC) return SQLITE_OK;
    if (r->type >= DSC__REC_BUDGET_SET) return write_budget(s, r);
    int rc = write_unreserved(s, r);
    if (rc == SQLITE_OK) rc = write_event(s, recs, i);
    /* a hold and its decision are one row: nothing a validated record can break */
    return rc == SQLITE_OK || r->type != DSC__REC_RESERVE || !own_fault(rc) ? rc : SQLITE_ERROR;
}

/* Pair each finish (settle, cancel, expiry) with its hold when both are in the batch,
 * so that they are written as one row: holds go into s->holds by id, each finish
 * looks its id up. The table is left empty again. */
static void pair_finishes(sq_store *s, dsc__rec **recs, size_t n) {
    size_t mask = s->holds_cap - 1;
    for (size_t i = 0; i < n; i++) {
        const dsc__rec *r = recs[i];
        s->slots[i] = (dsc__sq_slot){.finish = -1};
        bool finish =
            r->type == DSC__REC_SETTLE || r->type == DSC__REC_CANCEL || r->type == DSC__REC_EXPIRE;
        if ((r->type != DSC__REC_RESERVE && !finish) || !r->reservation_id[0]) continue;
        size_t h = dsc__strmap_hash(r->reservation_id) & mask;
        for (; s->holds[h]; h = (h + 1) & mask) {
            size_t k = (size_t)s->holds[h] - 1;
            if (!finish || s->slots[k].finish >= 0 ||
                strcmp(recs[k]->reservation_id, r->reservation_id) != 0)
                continue;
            s->slots[k].finish = (int32_t)i;
            s->slots[i].with_hold = true;
            break;
        }
        if (!finish) {
            s->holds[h] = (int32_t)i + 1;
            s->slots[i].pos = (uint32_t)h;
        }
    }
    for (size_t i = 0; i < n; i++) /* empty again */
        if (recs[i]->type == DSC__REC_RESERVE && recs[i]->reservation_id[0])
            s->holds[s->slots[i].pos] = 0;
}

/* --- open holds and rollups ---------------------------------------------------- */

/* Unused entries kept for the next holds (no malloc per hold); more are freed. */
#define OPEN_SPARE 4096

/* The open hold whose link n is (NULL for NULL). */
#define OPEN_OF(n) DSC__DLIST_ENTRY((n), struct dsc__sq_open, link)

static void open_release(sq_store *s, struct dsc__sq_open *e) {
    if (s->open_spare >= OPEN_SPARE) {
        free(e);
        return;
    }
    e->link.next = s->open_free ? &s->open_free->link : NULL;
    s->open_free = e;
    s->open_spare++;
}

/* An unused entry off the free list; NULL when there is none. */
static struct dsc__sq_open *open_spare_take(sq_store *s) {
    struct dsc__sq_open *e = s->open_free;
    if (e) {
        s->open_free = OPEN_OF(e->link.next);
        s->open_spare--;
    }
    return e;
}

/* Put e on the list in seq order: at the end, as holds are written (and loaded) in
 * seq order; walking back only if one ever comes out of order. */
static void open_link(sq_store *s, struct dsc__sq_open *e) {
    dsc__dlink *after = s->open_list.tail;
    while (after && OPEN_OF(after)->seq > e->seq)
        after = after->prev;
    dsc__dlist_insert_after(&s->open_list, after, &e->link);
}

static void hold_closed(sq_store *s, const char *id) {
    struct dsc__sq_open *e = dsc__strmap_del(&s->open, id);
    if (!e) return;
    dsc__dlist_unlink(&s->open_list, &e->link);
    open_release(s, e);
}

void dsc__sq_hold_open(dsc__sq_store *s, const char *id, int64_t seq) {
    size_t n = strlen(id);
    struct dsc__sq_open *e = open_spare_take(s);
    if (!e) e = malloc(sizeof *e);
    if (!e || n >= sizeof e->key) { /* not known open: the checkpoints keep the older bound */
        free(e);
        s->holds_known = false;
        return;
    }
    e->seq = seq;
    memcpy(e->key, id, n + 1);
    hold_closed(s, id);
    if (dsc__strmap_put(&s->open, e->key, e) != DSC_OK) {
        open_release(s, e);
        s->holds_known = false;
        return;
    }
    open_link(s, e);
}

/* The seq from which a restart must look for open holds. */
static int64_t oldest_open(sq_store *s) {
    const struct dsc__sq_open *first = OPEN_OF(s->open_list.head);
    int64_t min = first ? first->seq : s->last_seq + 1;
    if (!s->holds_known && s->held_from < min) min = s->held_from;
    return min;
}

typedef struct sq_roll {
    int64_t hour_us, subject;
    dsc_amounts sums;
    char key[48];
} sq_roll;

/* The key of an hour and subject: both as 16 hex digits (no formatting per charge). */
static void roll_key(int64_t hour, int64_t subject, char key[48]) {
    static const char hex[] = "0123456789abcdef";
    uint64_t v[2] = {(uint64_t)hour, (uint64_t)subject};
    for (int k = 0; k < 2; k++)
        for (int i = 0; i < 16; i++)
            key[k * 17 + i] = hex[(v[k] >> (60 - 4 * i)) & 15];
    key[16] = ':';
    key[33] = '\0';
}

/* Count a committed charge into its hour's sums (flushed at the next checkpoint). Out
 * of memory, the store stops taking checkpoints (rollups_lost) rather than lose it. */
static void roll_add(sq_store *s, int64_t at_us, int64_t subject, const dsc_amounts *a) {
    int64_t hour = dsc__sq_hour_of(at_us);
    char key[48];
    roll_key(hour, subject, key);
    sq_roll *r = dsc__strmap_get(&s->roll, key);
    if (!r) {
        if (!(r = calloc(1, sizeof *r))) {
            s->rollups_lost = true;
            return;
        }
        r->hour_us = hour;
        r->subject = subject;
        memcpy(r->key, key, sizeof key);
        if (dsc__strmap_put(&s->roll, r->key, r) != DSC_OK) {
            free(r);
            s->rollups_lost = true;
            return;
        }
    }
    for (int m = 0; m < DSC_METRIC_COUNT; m++)
        r->sums.v[m] = dsc__sq_add(r->sums.v[m], a->v[m]);
}

/* Bind r's hour, subject and sums as row k (from 0) of st. */
static void bind_roll(sqlite3_stmt *st, int k, const sq_roll *r) {
    sqlite3_bind_int64(st, 9 * k + 1, r->hour_us);
    sqlite3_bind_int64(st, 9 * k + 2, r->subject);
    bind_amounts(st, 9 * k + 3, &r->sums);
}

typedef struct roll_list {
    const sq_roll **v;
    size_t n;
} roll_list;

static void list_roll(void *val, void *ud) {
    roll_list *l = ud;
    l->v[l->n++] = val;
}

static int roll_order(const void *a, const void *b) {
    const sq_roll *x = *(const sq_roll *const *)a, *y = *(const sq_roll *const *)b;
    if (x->hour_us != y->hour_us) return x->hour_us < y->hour_us ? -1 : 1;
    return (x->subject > y->subject) - (x->subject < y->subject);
}

/* v[0..n) into rollups: ROLL_MANY rows per statement, the rest one by one. */
static int write_rolls(sq_store *s, const sq_roll **v, size_t n) {
    int rc = SQLITE_OK;
    size_t i = 0;
    for (; rc == SQLITE_OK && n - i >= ROLL_MANY; i += ROLL_MANY) {
        for (int k = 0; k < ROLL_MANY; k++)
            bind_roll(s->st[ST_ROLLUP_MANY], k, v[i + (size_t)k]);
        rc = step(s->st[ST_ROLLUP_MANY]);
    }
    for (; rc == SQLITE_OK && i < n; i++) {
        bind_roll(s->st[ST_ROLLUP], 0, v[i]);
        rc = step(s->st[ST_ROLLUP]);
    }
    return rc;
}

/* Every hour's sums into rollups, in key order: the rows a checkpoint adds (subjects
 * get their ids in the order they first come) go to the right edge of the table's
 * B-tree, which packs its pages instead of splitting them in the middle. *skipped:
 * out of memory for the order, nothing was written (the checkpoint waits). */
static int flush_rollups(sq_store *s, bool *skipped) {
    roll_list l = {malloc((s->roll.len ? s->roll.len : 1) * sizeof *l.v), 0};
    *skipped = !l.v;
    if (!l.v) return SQLITE_OK;
    dsc__strmap_each(&s->roll, list_roll, &l);
    qsort(l.v, l.n, sizeof *l.v, roll_order);
    int rc = write_rolls(s, l.v, l.n);
    free(l.v);
    return rc;
}

/* A checkpoint, when one is due, before the batch's own rows: the sums of the charges
 * committed since the last one into rollups, then the checkpoints row (its seq: every
 * event up to it is rolled up). *written tells the caller to forget the sums once the
 * batch commits. */
static int write_checkpoint(sq_store *s, int64_t now_us, bool *written, int64_t *held_from) {
    *written = false;
    int64_t since = s->last_seq - s->checkpoint_seq;
    if (s->rollups_lost || since <= 0 ||
        (since < DSC__SQ_CHECKPOINT_EVERY && now_us - s->checkpoint_at < DSC__SQ_CHECKPOINT_US))
        return SQLITE_OK;
    bool skipped;
    int rc = flush_rollups(s, &skipped);
    if (rc != SQLITE_OK || skipped) return rc;
    sqlite3_stmt *st = s->st[ST_CHECKPOINT];
    *held_from = oldest_open(s);
    sqlite3_bind_int64(st, 1, s->last_seq);
    sqlite3_bind_int64(st, 2, now_us);
    sqlite3_bind_int64(st, 3, s->max_at_us);
    sqlite3_bind_int64(st, 4, *held_from);
    if (s->max_rid_len) /* the largest counter of a hold up to seq: see hold_range */
        sqlite3_bind_blob(st, 5, s->max_rid, s->max_rid_len, SQLITE_STATIC);
    else
        sqlite3_bind_zeroblob(st, 5, 0);
    rc = step(st);
    *written = rc == SQLITE_OK;
    return rc;
}

static void checkpoint_done(sq_store *s, int64_t seq, int64_t now_us, int64_t held_from) {
    s->checkpoint_seq = seq;
    s->checkpoint_at = now_us;
    s->held_from = held_from;
    dsc__strmap_each(&s->roll, free_name, NULL);
    dsc__strmap_destroy(&s->roll);
    dsc__strmap_init(&s->roll);
}

/* dsc_open(rid): whether the stored reservation id (a blob of its hex digits, or its
 * text) is a hold still open, for the purge. */
static void sql_open(sqlite3_context *ctx, int argc, sqlite3_value **argv) {
    (void)argc;
    sq_store *s = sqlite3_user_data(ctx);
    char id[DSC_RESERVATION_ID_MAX] = "";
    if (sqlite3_value_type(argv[0]) == SQLITE_BLOB) {
        static const char hex[] = "0123456789abcdef";
        const unsigned char *b = sqlite3_value_blob(argv[0]);
        int n = sqlite3_value_bytes(argv[0]);
        if (n > 0 && 2 * n + 2 <= (int)sizeof id) {
            id[0] = 'r';
            for (int i = 0; i < n; i++)
                id[1 + 2 * i] = hex[b[i] >> 4], id[2 + 2 * i] = hex[b[i] & 15];
            id[1 + 2 * n] = '\0';
        }
    } else if (sqlite3_value_type(argv[0]) == SQLITE_TEXT) {
        snprintf(id, sizeof id, "%s", (const char *)sqlite3_value_text(argv[0]));
    }
    sqlite3_result_int(ctx, id[0] && dsc__strmap_get(&s->open, id) != NULL);
}

/* With a retention, at a checkpoint and in the batches after it while more is left:
 * drop up to DSC__SQ_PURGE_CHUNK of the oldest events that are rolled up (before the
 * checkpoint), older than the retention (before the seq the checkpoints give for that
 * time) and not an open hold. *to is where the next purge starts once this batch
 * commits; *more whether it stopped at the chunk. */
static int purge(sq_store *s, int64_t now_us, int64_t checkpoint, int64_t *to, bool *more) {
    *to = s->retained_from;
    *more = false;
    if (s->retention_us <= 0 || !s->holds_known) return SQLITE_OK;
    int64_t end = dsc__sq_first_seq_at(s->db, now_us - s->retention_us);
    if (end > checkpoint + 1) end = checkpoint + 1;
    if (end > s->retained_from + DSC__SQ_PURGE_CHUNK) {
        end = s->retained_from + DSC__SQ_PURGE_CHUNK;
        *more = true;
    }
    if (end <= s->retained_from) return SQLITE_OK;
    sqlite3_stmt *st = s->st[ST_PURGE];
    sqlite3_bind_int64(st, 1, s->retained_from);
    sqlite3_bind_int64(st, 2, end);
    int rc = step(st);
    if (rc == SQLITE_OK) { /* every event dropped is older than this */
        sqlite3_bind_int64(s->st[ST_PURGED], 1, now_us - s->retention_us);
        rc = step(s->st[ST_PURGED]);
    }
    if (rc == SQLITE_OK) *to = end;
    return rc;
}

/* Whether id (a hold's) has a larger counter than top's (NULL: none yet), compared
 * as the lower-case hex digits of the ids the ledger makes. */
static bool counter_above(const char *id, const char *top) {
    if (strlen(id) != 2 * DSC__SQ_RID_BYTES + 1) return false;
    return !top || memcmp(id + 1, top + 1, 2 * DSC__SQ_COUNTER_BYTES) > 0;
}

/* After a commit: the holds it opened and closed, the charges it made, the largest
 * counter of its holds (packed once per batch, not once per hold). */
static void batch_committed(sq_store *s, dsc__rec **recs, size_t n) {
    const char *top = NULL;
    for (size_t i = 0; i < n; i++) {
        const dsc__rec *r = recs[i];
        const dsc__sq_slot *slot = &s->slots[i];
        if (r->status != DSC_OK || !slot->seq) continue;
        if (r->type == DSC__REC_RESERVE && counter_above(r->reservation_id, top))
            top = r->reservation_id;
        if (r->type != DSC__REC_RESERVE && r->type != DSC__REC_DECISION) {
            if (!slot->with_hold) hold_closed(s, r->reservation_id);
            if (r->charge_kind) roll_add(s, r->at_us, slot->subject, &r->amounts);
        }
    }
    if (top) note_rid(s, top);
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

/* The writer's positions before a batch, restored when it rolls back. */
typedef struct positions {
    int64_t last_seq, max_at_us, checkpoint_seq;
} positions;

static void batch_failed(sq_store *s, const positions *p, dsc__rec **recs, size_t n) {
    for (size_t i = 0; i < n; i++) /* the holds it wrote are not there */
        if (recs[i]->type == DSC__REC_RESERVE && s->slots[i].seq)
            hold_closed(s, recs[i]->reservation_id);
    s->last_seq = p->last_seq;
    s->max_at_us = p->max_at_us;
    s->checkpoint_seq = p->checkpoint_seq;
    intern_rollback(&s->names);
    intern_rollback(&s->subjects);
}

/* The latest at_us of the batch: its time for the checkpoint. */
static int64_t batch_time(dsc__rec **recs, size_t n) {
    int64_t now = 0;
    for (size_t i = 0; i < n; i++)
        if (recs[i]->at_us > now) now = recs[i]->at_us;
    return now;
}

/* A hold is kept back at most this many batches, and at most CARRY_AGE_BATCHES times
 * batch_ms after it was first (by the writer's monotonic clock, not the ledger's, which
 * a test may stop). */
#define CARRY_MAX 64
#define CARRY_AGE_BATCHES 4

static int64_t mono_us(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* Whether the writer may keep r, a hold of the batch whose finish is not in it, back
 * for the next batch (now: mono_us()): a hold acknowledged once queued that nobody
 * waits on, under durability full or batch (off writes as fast as it can). */
static bool carryable(const sq_store *s, const dsc__rec *r, const dsc__sq_slot *slot, int64_t now) {
    return s->durability != DSC_DURABILITY_OFF && r->type == DSC__REC_RESERVE && r->acked &&
           !r->waited && !r->done_fn && slot->finish < 0 && r->reservation_id[0] &&
           (!r->carried || (r->carried < CARRY_MAX &&
                            now - r->carried_at < CARRY_AGE_BATCHES * s->batch_ms * 1000LL));
}

/* Whether the batch may keep holds back: not with a sync (which promises everything
 * before it) or a decision that names a hold (a repeated check's). */
static bool may_carry(dsc__rec **recs, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (recs[i]->type == DSC__REC_SYNC ||
            (recs[i]->type == DSC__REC_DECISION && recs[i]->reservation_id[0]))
            return false;
    return true;
}

/* A check's hold is acknowledged once queued and its settle comes after the reply, so
 * under load it misses the hold's batch by a commit or more (under full; under batch,
 * whenever a batch_ms boundary falls between them) and the decision costs two rows. The writer
 * keeps such holds back, batch after batch (they come first in the next), until their settle is in
 * the batch with them (the pair is one row), they are CARRY_AGE_BATCHES * batch_ms old, or the
 * store stops or fails (may: read under qmu). Only holds after the last hold the batch writes:
 * holds still reach the log in the order of their ids (lost_hold in ledger.c, hold_range in
 * store_sqlite_read.c and the checkpoints count on it), and a settle is in its hold's
 * batch or a later one. Moves them from recs[0..n) (paired) to s->carry; returns how
 * many records are left. */
static size_t carry_holds(sq_store *s, dsc__rec **recs, size_t n, bool may) {
    int64_t now = mono_us();
    if (!may || !may_carry(recs, n)) return n;
    size_t from = 0; /* after the last hold written */
    for (size_t i = n; i-- > 0 && !from;)
        if (recs[i]->type == DSC__REC_RESERVE && !carryable(s, recs[i], &s->slots[i], now))
            from = i + 1;
    size_t k = from;
    for (size_t i = from; i < n; i++) /* new places (UINT32_MAX: kept back) */
        s->slots[i].pos = carryable(s, recs[i], &s->slots[i], now) ? UINT32_MAX : (uint32_t)k++;
    for (size_t i = from, j = from; k < n && i < n; i++) {
        dsc__sq_slot slot = s->slots[i];
        if (slot.pos == UINT32_MAX) {
            if (!recs[i]->carried++) recs[i]->carried_at = now;
            s->carry[s->n_carry++] = recs[i];
            continue;
        }
        if (slot.finish >= 0) slot.finish = (int32_t)s->slots[slot.finish].pos;
        recs[j] = recs[i];
        s->slots[j++] = slot;
    }
    return k;
}

/* Write and commit recs[0..n), paired (pair_finishes); fills every status. Returns
 * whether it committed. */
static bool write_batch(sq_store *s, dsc__rec **recs, size_t n) {
    char msg[DSC_ERROR_MESSAGE_MAX] = "";
    pthread_mutex_lock(&s->dbmu);
    reclaim_wal(s);
    if (s->names.map.len > INTERN_MAX) intern_clear(&s->names);
    if (s->subjects.map.len > INTERN_MAX) intern_clear(&s->subjects);
    s->names.n_added = s->subjects.n_added = 0;
    positions before = {s->last_seq, s->max_at_us, s->checkpoint_seq};
    int64_t now = batch_time(recs, n), checkpoint = s->last_seq, held_from = 0;
    int64_t retained = s->retained_from;
    bool checkpointed = false, more = s->purge_more;
    int rc = step(s->st[ST_BEGIN]);
    if (rc == SQLITE_OK) rc = write_checkpoint(s, now, &checkpointed, &held_from);
    if (rc == SQLITE_OK && now && (checkpointed || more)) /* now: 0 in a batch of syncs */
        rc = purge(s, now, checkpointed ? checkpoint : s->checkpoint_seq, &retained, &more);
    for (size_t i = 0; rc == SQLITE_OK && i < n; i++) {
        recs[i]->status = DSC_OK;
        int r = write_rec(s, recs, i);
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
    if (rc == SQLITE_OK) {
        s->charge_seq = s->last_seq;
        if (checkpointed) checkpoint_done(s, checkpoint, now, held_from);
        s->retained_from = retained;
        s->purge_more = more;
        batch_committed(s, recs, n);
    } else {
        snprintf(msg, sizeof msg, "ledger store unavailable (%s): %s; nothing was recorded",
                 sqlite3_errstr(rc), sqlite3_errmsg(s->db));
        if (!sqlite3_get_autocommit(s->db)) step(s->st[ST_ROLLBACK]);
        batch_failed(s, &before, recs, n);
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
    while (!s->head && !s->n_carry && !s->stop) {
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

/* At most this many records per batch: a transaction stays short (checkpoints, taken
 * between batches, are at most this many events late). */
#define BATCH_MAX 4096
/* At most about this many records wait on the queue: callers beyond it wait in
 * sq_room for the writer, so memory follows the disk's pace, not the callers'. */
#define QUEUE_MAX (4 * BATCH_MAX)

/* Room for n records in a batch (qmu held); false when out of memory. */
static bool batch_room(sq_store *s, size_t n) {
    if (n <= s->batch_cap) return true;
    size_t cap = n * 2, holds = 16;
    while (holds < 2 * cap)
        holds *= 2;
    dsc__rec **b = realloc(s->batch, cap * sizeof *b);
    if (b) s->batch = b;
    dsc__rec **c = b ? realloc(s->carry, cap * sizeof *c) : NULL;
    if (c) s->carry = c;
    dsc__sq_slot *slots = c ? realloc(s->slots, cap * sizeof *slots) : NULL;
    if (slots) s->slots = slots;
    int32_t *h = slots ? calloc(holds, sizeof *h) : NULL;
    if (!h) return false;
    free(s->holds);
    s->holds = h;
    s->holds_cap = holds;
    s->batch_cap = cap;
    return true;
}

/* Take the holds kept back by the last batch, then the queue (at most BATCH_MAX of it),
 * into s->batch (qmu held); returns how many. One walk of the list: each record is far
 * from the next in memory. */
static size_t take_batch(sq_store *s) {
    size_t c = s->n_carry, n = s->queued < BATCH_MAX ? s->queued : BATCH_MAX;
    if (!batch_room(s, c + n)) n = s->batch_cap - c;         /* take what fits; the rest waits */
    if (c) memcpy(s->batch, s->carry, c * sizeof *s->batch); /* c <= batch_cap */
    s->n_carry = 0;
    dsc__rec *r = s->head;
    size_t waiters = 0;
    for (size_t i = 0; i < n; i++, r = r->next) {
        s->batch[c + i] = r;
        waiters += r->waited || r->done_fn;
    }
    s->head = r;
    if (!r) s->tail = NULL;
    s->queued -= n;
    s->waiters -= waiters; /* those left (BATCH_MAX, or out of memory) */
    if (s->queued < QUEUE_MAX) pthread_cond_broadcast(&s->room);
    return c + n;
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
        if (!s->head && !s->n_carry) break; /* stopping with nothing left */
        if (s->durability == DSC_DURABILITY_BATCH && !s->stop) {
            pthread_mutex_unlock(&s->qmu); /* let a batch gather */
            sleep_ms(s->batch_ms);
            pthread_mutex_lock(&s->qmu);
        } else if (s->durability == DSC_DURABILITY_FULL && s->healthy) {
            gather_unwaited(s);
        }
        size_t n = take_batch(s);
        bool may = !s->stop && s->healthy;
        pthread_mutex_unlock(&s->qmu);
        pair_finishes(s, s->batch, n);
        n = carry_holds(s, s->batch, n, may);
        if (!n) { /* every record kept back: gather again */
            pthread_mutex_lock(&s->qmu);
            continue;
        }
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
    bool was_empty = !s->head, waiter = wait || rec->done_fn;
    if (s->tail)
        s->tail->next = rec;
    else
        s->head = rec;
    s->tail = rec;
    s->waiters += waiter;
    s->queued++;
    /* The writer waits for a first record (wait_for_work) or, gathering under full, for
     * one someone waits on (gather_unwaited): waking it for a hold nobody waits on
     * would cost it a context switch per check for nothing. */
    if (was_empty || waiter) pthread_cond_signal(&s->nonempty);
    pthread_mutex_unlock(&s->qmu);
    return DSC_OK;
}

/* The writer's pace as backpressure: wait while QUEUE_MAX records are queued. Never
 * on the writer itself (its callbacks may call the ledger), nor once it stops. */
static void sq_room(dsc__store *base) {
    sq_store *s = (sq_store *)base;
    if (!s->started || pthread_equal(pthread_self(), s->writer)) return;
    pthread_mutex_lock(&s->qmu);
    while (s->queued >= QUEUE_MAX && !s->stop)
        pthread_cond_wait(&s->room, &s->qmu);
    pthread_mutex_unlock(&s->qmu);
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
    if (sqlite3_exec(s->db, sql, NULL, NULL, NULL) != SQLITE_OK)
        st = dsc__sq_db_error(s->db, sql, err);
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
        pthread_cond_broadcast(&s->room);
        pthread_mutex_unlock(&s->qmu);
        pthread_join(s->writer, NULL);
    }
    for (int i = 0; i < ST_COUNT; i++)
        sqlite3_finalize(s->st[i]);
    for (int i = 0; i < DSC__SQ_RD_COUNT; i++)
        sqlite3_finalize(s->rst[i]);
    for (int i = 0; i < 8; i++) {
        sqlite3_finalize(s->rcache[i].st);
        free(s->rcache[i].sql);
    }
    sqlite3_close(s->db);
    sqlite3_close(s->rdb);
    free(s->batch);
    free(s->carry);
    free(s->slots);
    free(s->holds);
    dsc__strmap_each(&s->open, free_name, NULL);
    for (struct dsc__sq_open *e; (e = open_spare_take(s));)
        free(e);
    dsc__strmap_destroy(&s->open);
    dsc__strmap_each(&s->roll, free_name, NULL);
    dsc__strmap_destroy(&s->roll);
    intern_free(&s->names);
    intern_free(&s->subjects);
    pthread_mutex_destroy(&s->qmu);
    pthread_mutex_destroy(&s->dbmu);
    pthread_mutex_destroy(&s->rmu);
    pthread_cond_destroy(&s->nonempty);
    pthread_cond_destroy(&s->room);
    if (s->lock_fd >= 0) close(s->lock_fd); /* releases the lock, after the last write */
    free(s);
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
    .load = dsc__sq_load,
    .start = sq_start,
    .append = sq_enqueue,
    .room = sq_room,
    .wait = sq_wait,
    .history = dsc__sq_replay_read,
    .history_tail = dsc__sq_replay,
    .charge_seq = sq_charge_seq,
    .find_reservation = dsc__sq_find_reservation,
    .healthy = sq_healthy,
    .counts = sq_counts,
    .exec = sq_exec,
    .close = sq_close,
};
