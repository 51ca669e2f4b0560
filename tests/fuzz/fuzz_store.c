/*
 * fuzz_store.c - libFuzzer target for the rows discernd reads back on restart
 * (core/store_sqlite.c, core/ledger_store.c): a store file made by the ledger gets
 * rows built from the input, written with SQLite directly as a damaged or hostile
 * file would hold them, then a ledger is opened on it, as at start, and its
 * counters are listed.
 *
 * Input: records, each one byte picking the table (budget_log, events, checkpoints,
 * rollups, names, subjects: the event log of core/store_sqlite_schema.c) then one
 * value per column: a type byte and its bytes (NULL, a small integer, an
 * 8-byte integer, a double, a short text, or a word the store uses: a state, kind,
 * metric or window). Records the schema refuses (NOT NULL, UNIQUE) are skipped.
 */
#include "fuzz_util.h"

#include "discern/ledger.h"

#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const char *const tables[] = {"budget_log", "events", "checkpoints",
                                     "rollups",    "names",  "subjects"};
#define N_TABLES 6

static const char *const words[] = {
    "held",     "settled",   "cancelled", "expired",  "settle", "late",       "unreserved",
    "expire",   "energy_wh", "gco2e",     "water_ml", "pe_mj",  "cost",       "tokens",
    "requests", "month",     "day",       "week",     "year",   "rolling:1h", "rate:10/1m",
    "*",        "org:o",     "team:t",    "user:u",   "key:k",  "o",          "t",
    "u",        "r1",        "r2",        ""};
#define N_WORDS (sizeof words / sizeof words[0])

typedef struct cursor {
    const uint8_t *p;
    size_t left;
} cursor;

static bool take(cursor *c, void *out, size_t n) {
    if (c->left < n) return false;
    memcpy(out, c->p, n);
    c->p += n, c->left -= n;
    return true;
}

/* Bind one value from the input to column i; false at the end of the input. */
static bool bind_value(sqlite3_stmt *st, int i, cursor *c) {
    uint8_t type, len;
    int8_t small;
    int64_t big;
    double d;
    if (!take(c, &type, 1)) return false;
    switch (type % 6) {
    case 0:
        return sqlite3_bind_null(st, i) == SQLITE_OK;
    case 1:
        return take(c, &small, 1) && sqlite3_bind_int64(st, i, small) == SQLITE_OK;
    case 2:
        return take(c, &big, 8) && sqlite3_bind_int64(st, i, big) == SQLITE_OK;
    case 3:
        return take(c, &d, 8) && sqlite3_bind_double(st, i, d) == SQLITE_OK;
    case 4:
        if (!take(c, &len, 1) || c->left < (size_t)(len % 64)) return false;
        sqlite3_bind_text(st, i, (const char *)c->p, len % 64, SQLITE_TRANSIENT);
        c->p += len % 64, c->left -= len % 64;
        return true;
    default:
        return take(c, &len, 1) &&
               sqlite3_bind_text(st, i, words[len % N_WORDS], -1, SQLITE_STATIC) == SQLITE_OK;
    }
}

static sqlite3_stmt *insert_for(sqlite3 *db, const char *table) {
    char sql[1024];
    sqlite3_stmt *st = NULL;
    snprintf(sql, sizeof sql, "SELECT * FROM %s LIMIT 0", table);
    if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK) abort();
    int n = sqlite3_column_count(st);
    sqlite3_finalize(st);
    int off = snprintf(sql, sizeof sql, "INSERT OR IGNORE INTO %s VALUES(?", table);
    for (int i = 1; i < n; i++)
        off += snprintf(sql + off, sizeof sql - (size_t)off, ",?");
    snprintf(sql + off, sizeof sql - (size_t)off, ")");
    if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK) abort();
    return st;
}

static void write_rows(const char *path, const uint8_t *data, size_t size) {
    sqlite3 *db;
    if (sqlite3_open(path, &db) != SQLITE_OK) abort();
    sqlite3_stmt *ins[N_TABLES];
    for (int t = 0; t < N_TABLES; t++)
        ins[t] = insert_for(db, tables[t]);
    sqlite3_exec(db, "BEGIN", NULL, NULL, NULL);
    cursor c = {data, size};
    uint8_t t;
    while (take(&c, &t, 1)) {
        sqlite3_stmt *st = ins[t % N_TABLES];
        bool whole = true;
        for (int i = 1; whole && i <= sqlite3_bind_parameter_count(st); i++)
            whole = bind_value(st, i, &c);
        if (whole) sqlite3_step(st);
        sqlite3_reset(st);
        sqlite3_clear_bindings(st);
    }
    sqlite3_exec(db, "COMMIT", NULL, NULL, NULL);
    for (int t2 = 0; t2 < N_TABLES; t2++)
        sqlite3_finalize(ins[t2]);
    sqlite3_close(db);
}

static void open_and_list(const char *path) {
    dsc_ledger_config cfg = {.store_path = path, .durability = DSC_DURABILITY_OFF};
    dsc_error err;
    dsc_ledger *l = dsc_ledger_new(&cfg, &err);
    if (!l) return;
    dsc_budget_state states[32];
    size_t n = 0;
    size_t total = 0;
    (void)dsc_ledger_counter_list(l, 0, states, 32, &n, &total, &err);
    dsc_ledger_free(l);
}

static void remove_store(const char *path) {
    char p[600];
    unlink(path);
    snprintf(p, sizeof p, "%s-wal", path);
    unlink(p);
    snprintf(p, sizeof p, "%s-shm", path);
    unlink(p);
    snprintf(p, sizeof p, "%s-journal", path);
    unlink(p);
}

/* The bytes of a fresh store with the ledger's schema, made once. */
static uint8_t *fresh;
static size_t fresh_len;

static void setup(const char *path) {
    dsc_ledger_config cfg = {.store_path = path, .durability = DSC_DURABILITY_OFF};
    dsc_error err;
    dsc_ledger *l = dsc_ledger_new(&cfg, &err);
    if (!l) abort();
    dsc_ledger_free(l);
    FILE *f = fopen(path, "rb");
    if (!f || !(fresh = malloc(1 << 20))) abort();
    fresh_len = fread(fresh, 1, 1 << 20, f);
    fclose(f);
    if (fresh_len == 0 || fresh_len == 1 << 20) abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char path[512];
    snprintf(path, sizeof path, "%s/store.db", fuzz_dir());
    remove_store(path);
    if (!fresh) {
        setup(path);
        remove_store(path);
    }
    if (!fuzz_write(fuzz_dir(), "store.db", fresh, fresh_len)) abort();
    write_rows(path, data, size);
    open_and_list(path);
    remove_store(path);
    return 0;
}
