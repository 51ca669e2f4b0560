/*
 * keys.c - API keys and the admin journal (see keys.h).
 *
 * Keys are few (at most DSC__KEYS_MAX) and read on every auth, so all of them live
 * in one array under a mutex; the store file only makes them survive a restart. The
 * file is the ledger's own SQLite store, opened here on a second connection (WAL
 * lets it write between the ledger writer's batches; writes here are rare admin
 * calls). Existing stores gain the tables on open (CREATE TABLE IF NOT EXISTS).
 * Tokens are hashed with SHA-256 (libcrypto): only the hash is compared and stored.
 */
#include "keys.h"

#include "discern/random.h"

#include <jansson.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define HASH_LEN 32
#define TOKEN_PREFIX "dsk_"

typedef struct entry {
    dsc__key_info info;
    uint8_t hash[HASH_LEN];
} entry;

struct dsc__keys {
    pthread_mutex_t mu;
    sqlite3 *db; /* NULL = memory only */
    entry *v;
    size_t n, cap;
    atomic_uint_fast64_t generation;
};

// clang-format off
static const char schema_sql[] =
    "CREATE TABLE IF NOT EXISTS keys(id TEXT PRIMARY KEY, hash BLOB NOT NULL UNIQUE,"
    " role TEXT NOT NULL, scope TEXT NOT NULL, label TEXT NOT NULL DEFAULT '',"
    " created_at INTEGER NOT NULL, expires_at INTEGER NOT NULL DEFAULT 0,"
    " revoked_at INTEGER NOT NULL DEFAULT 0, created_by TEXT NOT NULL);"
    "CREATE TABLE IF NOT EXISTS admin_journal(seq INTEGER PRIMARY KEY, at_us INTEGER NOT NULL,"
    " by_key TEXT NOT NULL, action TEXT NOT NULL, target TEXT NOT NULL, detail TEXT);";
// clang-format on

static const char *const role_names[] = {"none",
#define DSC__ROLE_NAME(name, wire) wire,
                                         DSC__ROLE_MAP(DSC__ROLE_NAME)
#undef DSC__ROLE_NAME
};

#define N_ROLES (sizeof role_names / sizeof role_names[0])

const char *dsc__role_name(dsc__role r) {
    return (size_t)r < N_ROLES ? role_names[r] : "none";
}

dsc_status dsc__role_parse(const char *name, dsc__role *out, dsc_error *err) {
    for (size_t i = 1; i < N_ROLES; i++)
        if (strcmp(name, role_names[i]) == 0) return *out = (dsc__role)i, DSC_OK;
    return dsc_error_set(err, DSC_BAD_REQUEST,
                         "field 'role': unknown role '%.32s' (admin, manager, client, reader)",
                         name);
}

static int64_t now_s(void) {
    return (int64_t)time(NULL);
}

static void hash_token(const char *token, uint8_t out[HASH_LEN]) {
    unsigned int len = HASH_LEN;
    if (EVP_Digest(token, strlen(token), out, &len, EVP_sha256(), NULL) != 1)
        memset(out, 0, HASH_LEN); /* matches no token: every stored hash came from EVP */
}

static dsc_status sql_fail(sqlite3 *db, const char *what, dsc_error *err) {
    return dsc_error_set(err, DSC_STORE_UNAVAILABLE, "key store: %s: %s", what,
                         db ? sqlite3_errmsg(db) : "cannot open");
}

static const char *col_text(sqlite3_stmt *st, int i) {
    const unsigned char *t = sqlite3_column_text(st, i);
    return t ? (const char *)t : "";
}

static dsc_status grow(dsc__keys *k, dsc_error *err) {
    if (k->n < k->cap) return DSC_OK;
    if (k->n >= DSC__KEYS_MAX)
        return dsc_error_set(err, DSC_TOO_LARGE, "at most %d keys (revoked ones included)",
                             DSC__KEYS_MAX);
    size_t cap = k->cap ? k->cap * 2 : 16;
    entry *v = realloc(k->v, cap * sizeof *v);
    if (!v) return dsc_error_set(err, DSC_NOMEM, "out of memory for a key");
    k->v = v;
    k->cap = cap;
    return DSC_OK;
}

/* One row of the keys table into a new entry. */
static dsc_status load_row(dsc__keys *k, sqlite3_stmt *st, dsc_error *err) {
    dsc_status s = grow(k, err);
    if (s != DSC_OK) return s;
    entry *e = &k->v[k->n];
    memset(e, 0, sizeof *e);
    snprintf(e->info.id, sizeof e->info.id, "%s", col_text(st, 0));
    if (sqlite3_column_bytes(st, 1) != HASH_LEN ||
        dsc__role_parse(col_text(st, 2), &e->info.role, NULL) != DSC_OK ||
        dsc__scope_parse(col_text(st, 3), &e->info.scope, NULL) != DSC_OK)
        return dsc_error_set(err, DSC_STORE_UNAVAILABLE, "key store: key '%s' is malformed",
                             e->info.id);
    memcpy(e->hash, sqlite3_column_blob(st, 1), HASH_LEN);
    snprintf(e->info.label, sizeof e->info.label, "%s", col_text(st, 4));
    e->info.created_at = sqlite3_column_int64(st, 5);
    e->info.expires_at = sqlite3_column_int64(st, 6);
    e->info.revoked_at = sqlite3_column_int64(st, 7);
    snprintf(e->info.created_by, sizeof e->info.created_by, "%s", col_text(st, 8));
    k->n++;
    return DSC_OK;
}

static dsc_status load_all(dsc__keys *k, dsc_error *err) {
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(k->db,
                           "SELECT id, hash, role, scope, label, created_at, expires_at,"
                           " revoked_at, created_by FROM keys ORDER BY rowid",
                           -1, &st, NULL) != SQLITE_OK)
        return sql_fail(k->db, "reading keys", err);
    dsc_status s = DSC_OK;
    int rc;
    while (s == DSC_OK && (rc = sqlite3_step(st)) == SQLITE_ROW)
        s = load_row(k, st, err);
    if (s == DSC_OK && rc != SQLITE_DONE) s = sql_fail(k->db, "reading keys", err);
    sqlite3_finalize(st);
    return s;
}

static dsc_status open_db(dsc__keys *k, const char *path, dsc_error *err) {
    if (sqlite3_open_v2(path, &k->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, NULL) !=
        SQLITE_OK)
        return sql_fail(k->db, path, err);
    sqlite3_busy_timeout(k->db, 5000);
    if (sqlite3_exec(k->db, "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;", NULL, NULL,
                     NULL) != SQLITE_OK ||
        sqlite3_exec(k->db, schema_sql, NULL, NULL, NULL) != SQLITE_OK)
        return sql_fail(k->db, path, err);
    return load_all(k, err);
}

dsc__keys *dsc__keys_open(const char *path, dsc_error *err) {
    dsc__keys *k = calloc(1, sizeof *k);
    if (!k) {
        dsc_error_set(err, DSC_NOMEM, "out of memory for the keys");
        return NULL;
    }
    pthread_mutex_init(&k->mu, NULL);
    atomic_init(&k->generation, 0);
    if (path && path[0] && open_db(k, path, err) != DSC_OK) goto fail;
    return k;
fail:
    dsc__keys_free(k);
    return NULL;
}

void dsc__keys_free(dsc__keys *k) {
    if (!k) return;
    sqlite3_close(k->db);
    pthread_mutex_destroy(&k->mu);
    free(k->v);
    free(k);
}

/* Write one key row (insert, or the revocation of an existing one). */
static dsc_status persist(dsc__keys *k, const entry *e, bool insert, dsc_error *err) {
    if (!k->db) return DSC_OK;
    char scope[DSC__SCOPE_TEXT_MAX];
    dsc__scope_format(&e->info.scope, scope, sizeof scope);
    sqlite3_stmt *st = NULL;
    const char *sql = insert ? "INSERT INTO keys(id, hash, role, scope, label, created_at,"
                               " expires_at, revoked_at, created_by) VALUES(?1,?2,?3,?4,?5,?6,?7,"
                               "?8,?9)"
                             : "UPDATE keys SET revoked_at = ?8 WHERE id = ?1";
    if (sqlite3_prepare_v2(k->db, sql, -1, &st, NULL) != SQLITE_OK)
        return sql_fail(k->db, "writing a key", err);
    sqlite3_bind_text(st, 1, e->info.id, -1, SQLITE_STATIC);
    if (insert) {
        sqlite3_bind_blob(st, 2, e->hash, HASH_LEN, SQLITE_STATIC);
        sqlite3_bind_text(st, 3, dsc__role_name(e->info.role), -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 4, scope, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 5, e->info.label, -1, SQLITE_STATIC);
        sqlite3_bind_int64(st, 6, e->info.created_at);
        sqlite3_bind_int64(st, 7, e->info.expires_at);
        sqlite3_bind_text(st, 9, e->info.created_by, -1, SQLITE_STATIC);
    }
    sqlite3_bind_int64(st, 8, e->info.revoked_at);
    int rc = sqlite3_step(st);
    sqlite3_finalize(st);
    return rc == SQLITE_DONE ? DSC_OK : sql_fail(k->db, "writing a key", err);
}

static dsc_status journal_locked(dsc__keys *k, const char *by, const char *action,
                                 const char *target, const char *detail, dsc_error *err) {
    if (!k->db) return DSC_OK;
    sqlite3_stmt *st = NULL;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    if (sqlite3_prepare_v2(k->db,
                           "INSERT INTO admin_journal(at_us, by_key, action, target, detail)"
                           " VALUES(?1,?2,?3,?4,?5)",
                           -1, &st, NULL) != SQLITE_OK)
        return sql_fail(k->db, "journaling", err);
    sqlite3_bind_int64(st, 1, (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000);
    sqlite3_bind_text(st, 2, by, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 3, action, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 4, target, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 5, detail, -1, SQLITE_STATIC);
    int rc = sqlite3_step(st);
    sqlite3_finalize(st);
    return rc == SQLITE_DONE ? DSC_OK : sql_fail(k->db, "journaling", err);
}

dsc_status dsc__keys_journal(dsc__keys *k, const char *by, const char *action, const char *target,
                             const char *detail, dsc_error *err) {
    pthread_mutex_lock(&k->mu);
    dsc_status st = journal_locked(k, by, action, target, detail, err);
    pthread_mutex_unlock(&k->mu);
    return st;
}

/* A fresh id and token for e (hash filled). */
static dsc_status new_secret(entry *e, char token[DSC__TOKEN_MAX], dsc_error *err) {
    uint8_t raw[32], idb[8];
    dsc_status st = dsc_random_bytes(raw, sizeof raw, err);
    if (st == DSC_OK) st = dsc_random_bytes(idb, sizeof idb, err);
    if (st != DSC_OK) return st;
    memcpy(token, TOKEN_PREFIX, sizeof TOKEN_PREFIX - 1);
    dsc_random_hex(raw, sizeof raw, token + sizeof TOKEN_PREFIX - 1);
    memset(raw, 0, sizeof raw);
    e->info.id[0] = 'k';
    e->info.id[1] = '_';
    dsc_random_hex(idb, sizeof idb, e->info.id + 2);
    hash_token(token, e->hash);
    return DSC_OK;
}

static dsc_status create_locked(dsc__keys *k, entry *e, const char *by, dsc_error *err) {
    char scope[DSC__SCOPE_TEXT_MAX], detail[DSC__SCOPE_TEXT_MAX + 32];
    dsc_status st = grow(k, err);
    if (st == DSC_OK) st = persist(k, e, true, err);
    if (st != DSC_OK) return st;
    k->v[k->n++] = *e;
    dsc__scope_format(&e->info.scope, scope, sizeof scope);
    snprintf(detail, sizeof detail, "role=%s scope=%s", dsc__role_name(e->info.role), scope);
    return journal_locked(k, by, "key.create", e->info.id, detail, err);
}

dsc_status dsc__keys_create(dsc__keys *k, const dsc__key_info *spec, const char *by,
                            dsc__key_info *out, char token[DSC__TOKEN_MAX], dsc_error *err) {
    entry e;
    memset(&e, 0, sizeof e);
    e.info = *spec;
    e.info.created_at = now_s();
    e.info.revoked_at = 0;
    snprintf(e.info.created_by, sizeof e.info.created_by, "%s", by);
    dsc_status st = new_secret(&e, token, err);
    if (st != DSC_OK) return st;
    pthread_mutex_lock(&k->mu);
    st = create_locked(k, &e, by, err);
    pthread_mutex_unlock(&k->mu);
    if (st != DSC_OK) memset(token, 0, DSC__TOKEN_MAX);
    if (st == DSC_OK && out) *out = e.info;
    return st;
}

bool dsc__key_valid(const dsc__key_info *info, int64_t now) {
    return info->revoked_at == 0 && (info->expires_at == 0 || now < info->expires_at);
}

dsc_status dsc__keys_auth(dsc__keys *k, const char *token, int64_t now, dsc__key_info *out) {
    uint8_t h[HASH_LEN];
    if (strncmp(token, TOKEN_PREFIX, sizeof TOKEN_PREFIX - 1) != 0) return DSC_UNAUTHORIZED;
    hash_token(token, h);
    dsc_status st = DSC_UNAUTHORIZED;
    pthread_mutex_lock(&k->mu);
    for (size_t i = 0; i < k->n; i++) {
        if (memcmp(k->v[i].hash, h, HASH_LEN) != 0) continue;
        if (dsc__key_valid(&k->v[i].info, now)) {
            *out = k->v[i].info;
            st = DSC_OK;
        }
        break;
    }
    pthread_mutex_unlock(&k->mu);
    return st;
}

static entry *find(dsc__keys *k, const char *id) {
    for (size_t i = 0; i < k->n; i++)
        if (strcmp(k->v[i].info.id, id) == 0) return &k->v[i];
    return NULL;
}

dsc_status dsc__keys_get(dsc__keys *k, const char *id, dsc__key_info *out, dsc_error *err) {
    pthread_mutex_lock(&k->mu);
    entry *e = find(k, id);
    if (e) *out = e->info;
    pthread_mutex_unlock(&k->mu);
    return e ? DSC_OK : dsc_error_set(err, DSC_BAD_REQUEST, "field 'key_id': no key '%.32s'", id);
}

static dsc_status revoke_locked(dsc__keys *k, entry *e, const char *by, int64_t now,
                                dsc_error *err) {
    if (e->info.revoked_at) return DSC_OK;
    entry copy = *e;
    copy.info.revoked_at = now > 0 ? now : 1;
    dsc_status st = persist(k, &copy, false, err);
    if (st != DSC_OK) return st;
    *e = copy;
    atomic_fetch_add(&k->generation, 1);
    return journal_locked(k, by, "key.revoke", e->info.id, "", err);
}

dsc_status dsc__keys_revoke(dsc__keys *k, const char *id, const char *by, int64_t now,
                            dsc_error *err) {
    pthread_mutex_lock(&k->mu);
    entry *e = find(k, id);
    dsc_status st = e ? revoke_locked(k, e, by, now, err)
                      : dsc_error_set(err, DSC_BAD_REQUEST, "field 'key_id': no key '%.32s'", id);
    pthread_mutex_unlock(&k->mu);
    return st;
}

size_t dsc__keys_list(dsc__keys *k, size_t offset, dsc__key_info *out, size_t max) {
    size_t got = 0;
    pthread_mutex_lock(&k->mu);
    for (size_t i = offset; i < k->n && got < max; i++)
        out[got++] = k->v[i].info;
    pthread_mutex_unlock(&k->mu);
    return got;
}

uint64_t dsc__keys_generation(dsc__keys *k) {
    return atomic_load_explicit(&k->generation, memory_order_acquire);
}

/* ------------------------------------------------------- a shared key store -- */

static void hex_of(const uint8_t *b, size_t n, char *out) {
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++)
        out[2 * i] = digits[b[i] >> 4], out[2 * i + 1] = digits[b[i] & 15];
    out[2 * n] = '\0';
}

static bool hash_of_hex(const char *hex, uint8_t out[HASH_LEN]) {
    if (!hex || strlen(hex) != 2 * HASH_LEN) return false;
    for (size_t i = 0; i < HASH_LEN; i++) {
        unsigned v;
        if (sscanf(hex + 2 * i, "%2x", &v) != 1) return false;
        out[i] = (uint8_t)v;
    }
    return true;
}

char *dsc__keys_entry_text(dsc__keys *k, const char *id) {
    pthread_mutex_lock(&k->mu);
    entry *e = find(k, id);
    json_t *o = NULL;
    if (e) {
        char hash[2 * HASH_LEN + 1], scope[DSC__SCOPE_TEXT_MAX];
        hex_of(e->hash, HASH_LEN, hash);
        dsc__scope_format(&e->info.scope, scope, sizeof scope);
        o = json_pack("{s:s, s:s, s:s, s:s, s:s, s:I, s:I, s:I, s:s}", "id", e->info.id, "hash",
                      hash, "role", dsc__role_name(e->info.role), "scope", scope, "label",
                      e->info.label, "created_at", (json_int_t)e->info.created_at, "expires_at",
                      (json_int_t)e->info.expires_at, "revoked_at", (json_int_t)e->info.revoked_at,
                      "created_by", e->info.created_by);
    }
    pthread_mutex_unlock(&k->mu);
    char *text = o ? json_dumps(o, JSON_COMPACT) : NULL;
    json_decref(o);
    return text;
}

/* An entry from its text; false when any field is missing or malformed. */
static bool entry_parse(json_t *o, entry *e) {
    const char *id = json_string_value(json_object_get(o, "id"));
    const char *role = json_string_value(json_object_get(o, "role"));
    const char *scope = json_string_value(json_object_get(o, "scope"));
    const char *label = json_string_value(json_object_get(o, "label"));
    const char *by = json_string_value(json_object_get(o, "created_by"));
    memset(e, 0, sizeof *e);
    if (!id || !role || !scope || !label || !by || strlen(id) >= sizeof e->info.id ||
        !hash_of_hex(json_string_value(json_object_get(o, "hash")), e->hash) ||
        dsc__role_parse(role, &e->info.role, NULL) != DSC_OK ||
        dsc__scope_parse(scope, &e->info.scope, NULL) != DSC_OK)
        return false;
    strcpy(e->info.id, id);
    snprintf(e->info.label, sizeof e->info.label, "%s", label);
    snprintf(e->info.created_by, sizeof e->info.created_by, "%s", by);
    e->info.created_at = json_integer_value(json_object_get(o, "created_at"));
    e->info.expires_at = json_integer_value(json_object_get(o, "expires_at"));
    e->info.revoked_at = json_integer_value(json_object_get(o, "revoked_at"));
    return true;
}

dsc_status dsc__keys_entry_put(dsc__keys *k, const char *text, dsc_error *err) {
    json_t *o = json_loads(text, 0, NULL);
    entry in;
    bool ok = o && entry_parse(o, &in);
    json_decref(o);
    if (!ok) return dsc_error_set(err, DSC_STORE_UNAVAILABLE, "key store: a key is malformed");
    pthread_mutex_lock(&k->mu);
    entry *e = find(k, in.info.id);
    dsc_status st = DSC_OK;
    if (e) {
        if (e->info.revoked_at != in.info.revoked_at) atomic_fetch_add(&k->generation, 1);
        e->info.revoked_at = in.info.revoked_at;
    } else if ((st = grow(k, err)) == DSC_OK) {
        k->v[k->n++] = in;
    }
    pthread_mutex_unlock(&k->mu);
    return st;
}
