/*
 * methods_keys.c - key.create, key.list, key.revoke: API keys over the wire; and
 * admin_journal.list, every key and budget change with the key that made it.
 *
 * An admin manages every key; a manager only keys whose scope lies inside its own,
 * never an admin key, and never creates one wider than itself. Tokens leave the
 * server once, in key.create's reply; key.list shows neither tokens nor hashes.
 *
 * The admin journal is the store file's admin_journal table (read on a read-only
 * connection of its own, as decisions.list reads the decisions), or with a Redis
 * store the stream <tag>admin that every replica appends to: one query answers for
 * the changes made through all of them.
 */
#include "methods.h"
#include "redis_ledger.h"

#include <sqlite3.h>

#include <stdint.h>
#include <stdio.h>
#include <string.h>

#define LIST_PAGE 64

static bool is_admin(const dsc__call *c) {
    return c->role == DSC__ROLE_ADMIN;
}

/* Whether the caller may manage a key of role and scope. */
static dsc_status may_manage(const dsc__call *c, dsc__role role, const dsc__scope *scope,
                             dsc_error *err) {
    if (is_admin(c)) return DSC_OK;
    char mine[DSC__SCOPE_TEXT_MAX], theirs[DSC__SCOPE_TEXT_MAX];
    if (role == DSC__ROLE_ADMIN)
        return dsc_error_set(err, DSC_FORBIDDEN, "field 'role': only an admin manages admin keys");
    if (!dsc__scope_within(scope, c->scope)) {
        dsc__scope_format(c->scope, mine, sizeof mine);
        dsc__scope_format(scope, theirs, sizeof theirs);
        return dsc_error_set(err, DSC_FORBIDDEN,
                             "field 'scope': '%s' is not inside this key's scope '%s'", theirs,
                             mine);
    }
    return DSC_OK;
}

static void pack_key_info(msgpack_packer *pk, const dsc__key_info *k) {
    char scope[DSC__SCOPE_TEXT_MAX];
    dsc__scope_format(&k->scope, scope, sizeof scope);
    msgpack_pack_map(pk, 8);
    dsc__pack_key(pk, "key_id");
    dsc_rpc_pack_cstr(pk, k->id);
    dsc__pack_key(pk, "role");
    dsc_rpc_pack_cstr(pk, dsc__role_name(k->role));
    dsc__pack_key(pk, "scope");
    dsc_rpc_pack_cstr(pk, scope);
    dsc__pack_key(pk, "label");
    dsc_rpc_pack_cstr(pk, k->label);
    dsc__pack_key(pk, "created_at");
    msgpack_pack_int64(pk, k->created_at);
    dsc__pack_key(pk, "created_by");
    dsc_rpc_pack_cstr(pk, k->created_by);
    dsc__pack_key(pk, "expires_at");
    msgpack_pack_int64(pk, k->expires_at);
    dsc__pack_key(pk, "revoked_at");
    msgpack_pack_int64(pk, k->revoked_at);
}

static dsc_status read_key_spec(const msgpack_object *p, dsc__key_info *spec, dsc_error *err) {
    char role[16], scope[DSC__SCOPE_TEXT_MAX];
    dsc_status st;
    memset(spec, 0, sizeof *spec);
    int64_t now = dsc__now_us() / 1000000;
    if ((st = dsc_rpc_get_str(p, "role", true, role, sizeof role, err)) ||
        (st = dsc_rpc_get_str(p, "scope", true, scope, sizeof scope, err)) ||
        (st = dsc_rpc_get_str(p, "label", false, spec->label, sizeof spec->label, err)) ||
        (st = dsc_rpc_get_int(p, "expires_at", false, now + 1, INT64_MAX / 2, &spec->expires_at,
                              err)) ||
        (st = dsc__role_parse(role, &spec->role, err)))
        return st;
    return dsc__scope_parse(scope, &spec->scope, err);
}

static void pack_created(msgpack_packer *pk, const dsc__key_info *made, const char *token) {
    msgpack_pack_map(pk, 3);
    dsc__pack_key(pk, "key_id");
    dsc_rpc_pack_cstr(pk, made->id);
    dsc__pack_key(pk, "token");
    dsc_rpc_pack_cstr(pk, token);
    dsc__pack_key(pk, "key");
    pack_key_info(pk, made);
}

static void pack_revoked(msgpack_packer *pk, const char *id) {
    msgpack_pack_map(pk, 2);
    dsc__pack_key(pk, "key_id");
    dsc_rpc_pack_cstr(pk, id);
    dsc__pack_key(pk, "revoked");
    msgpack_pack_true(pk);
}

/* With a Redis store a key change is answered once Redis has it, so the key works
 * (or stops working) on every replica when the caller hears of it. */
typedef struct key_job {
    dsc__job job;
    bool revoked;
    dsc__key_info made;
    char token[DSC__TOKEN_MAX];
    char by[DSC__KEY_ID_MAX]; /* the key that made the change */
} key_job;

/* The change into the admin journal every replica shares, as keys.c journals it. */
static void journal_key(dsc__worker *w, const key_job *j) {
    char scope[DSC__SCOPE_TEXT_MAX], detail[DSC__SCOPE_TEXT_MAX + 32] = "";
    if (!j->revoked) {
        dsc__scope_format(&j->made.scope, scope, sizeof scope);
        snprintf(detail, sizeof detail, "role=%s scope=%s", dsc__role_name(j->made.role), scope);
    }
    dsc__ledger_redis_admin(w, j->by, j->revoked ? "key.revoke" : "key.create", j->made.id, detail);
}

static dsc_status finish_key(dsc__job *job, dsc_status st, const dsc_error *st_err,
                             msgpack_packer *pk, dsc_error *err) {
    key_job *j = (key_job *)job;
    if (st == DSC_OK) journal_key(job->w, j);
    if (st == DSC_OK && j->revoked)
        pack_revoked(pk, j->made.id);
    else if (st == DSC_OK)
        pack_created(pk, &j->made, j->token);
    else
        *err = *st_err;
    memset(j->token, 0, sizeof j->token);
    return st;
}

static dsc_status share_key(dsc__call *c, const dsc__key_info *made, const char *token,
                            dsc_error *err) {
    key_job *j = (key_job *)dsc__job_defer(c, sizeof *j, finish_key);
    if (!j) return dsc_error_set(err, DSC_NOMEM, "out of memory for a key change");
    j->revoked = token == NULL;
    j->made = *made;
    snprintf(j->by, sizeof j->by, "%s", c->key_id);
    snprintf(j->token, sizeof j->token, "%s", token ? token : "");
    dsc_done done = {dsc__job_done, dsc__job_slot(&j->job, 0)};
    dsc_status st = dsc__ledger_redis_key_put(c->w, made->id, &done, err);
    if (st != DSC_OK) dsc__job_unslot(&j->job);
    return st;
}

dsc_status dsc__m_key_create(dsc__call *c, const msgpack_object *p, msgpack_packer *pk,
                             dsc_error *err) {
    dsc__key_info spec, made;
    char token[DSC__TOKEN_MAX];
    dsc_status st = read_key_spec(p, &spec, err);
    if (st == DSC_OK) st = may_manage(c, spec.role, &spec.scope, err);
    if (st == DSC_OK) st = dsc__keys_create(c->srv->keys, &spec, c->key_id, &made, token, err);
    if (st != DSC_OK) return st;
    dsc_log_write(&c->srv->log, DSC_LOG_INFO, "key_created", "key_id=%s role=%s by=%s", made.id,
                  dsc__role_name(made.role), c->key_id);
    if (c->srv->redis)
        st = share_key(c, &made, token, err);
    else
        pack_created(pk, &made, token);
    memset(token, 0, sizeof token);
    return st;
}

/* Whether key.list shows k to the caller, with the optional filter scope. */
static bool listed(const dsc__call *c, const dsc__key_info *k, const dsc__scope *filter) {
    if (filter && !dsc__scope_within(&k->scope, filter)) return false;
    return is_admin(c) || (k->role != DSC__ROLE_ADMIN && dsc__scope_within(&k->scope, c->scope));
}

/* Two passes (count, then pack at most max), as budget.list: the array header needs
 * the count, and a key created between the passes must not overflow it. */
static size_t pack_listed(dsc__call *c, const dsc__scope *filter, msgpack_packer *pk, size_t max) {
    dsc__key_info page[LIST_PAGE];
    size_t matched = 0, got;
    for (size_t off = 0; (got = dsc__keys_list(c->srv->keys, off, page, LIST_PAGE)) > 0; off += got)
        for (size_t i = 0; i < got && matched < max; i++)
            if (listed(c, &page[i], filter)) {
                matched++;
                if (pk) pack_key_info(pk, &page[i]);
            }
    return matched;
}

dsc_status dsc__m_key_list(dsc__call *c, const msgpack_object *p, msgpack_packer *pk,
                           dsc_error *err) {
    char text[DSC__SCOPE_TEXT_MAX];
    dsc__scope filter;
    dsc_status st = dsc_rpc_get_str(p, "scope", false, text, sizeof text, err);
    if (st == DSC_OK && text[0]) st = dsc__scope_parse(text, &filter, err);
    if (st != DSC_OK) return st;
    const dsc__scope *f = text[0] ? &filter : NULL;
    size_t n = pack_listed(c, f, NULL, SIZE_MAX);
    msgpack_pack_map(pk, 1);
    dsc__pack_key(pk, "keys");
    msgpack_pack_array(pk, n);
    pack_listed(c, f, pk, n); /* keys are never removed: exactly n again */
    return DSC_OK;
}

dsc_status dsc__m_key_revoke(dsc__call *c, const msgpack_object *p, msgpack_packer *pk,
                             dsc_error *err) {
    char id[DSC__KEY_ID_MAX];
    dsc__key_info k;
    dsc_status st = dsc_rpc_get_str(p, "key_id", true, id, sizeof id, err);
    if (st == DSC_OK) st = dsc__keys_get(c->srv->keys, id, &k, err);
    if (st == DSC_OK) st = may_manage(c, k.role, &k.scope, err);
    if (st == DSC_OK)
        st = dsc__keys_revoke(c->srv->keys, id, c->key_id, dsc__now_us() / 1000000, err);
    if (st != DSC_OK) return st;
    dsc_log_write(&c->srv->log, DSC_LOG_INFO, "key_revoked", "key_id=%s by=%s", id, c->key_id);
    if (c->srv->redis) return share_key(c, &k, NULL, err);
    pack_revoked(pk, id);
    return DSC_OK;
}

/* ------------------------------------------------------------ admin journal -- */

#define JOURNAL_LIMIT_DEFAULT 100
#define JOURNAL_LIMIT_MAX 1000

typedef struct change {
    int64_t seq, at_us;
    const char *by, *action, *target, *detail;
} change;

static void pack_change(msgpack_packer *pk, const change *ch) {
    msgpack_pack_map(pk, 6);
    dsc__pack_key(pk, "seq");
    msgpack_pack_int64(pk, ch->seq);
    dsc__pack_key(pk, "at");
    msgpack_pack_double(pk, (double)ch->at_us / 1e6);
    dsc__pack_key(pk, "by_key");
    dsc_rpc_pack_cstr(pk, ch->by);
    dsc__pack_key(pk, "action");
    dsc_rpc_pack_cstr(pk, ch->action);
    dsc__pack_key(pk, "target");
    dsc_rpc_pack_cstr(pk, ch->target);
    dsc__pack_key(pk, "detail");
    dsc_rpc_pack_cstr(pk, ch->detail);
}

static const char *text_col(sqlite3_stmt *st, int i) {
    const unsigned char *t = sqlite3_column_text(st, i);
    return t ? (const char *)t : "";
}

/* The page of the store file's admin_journal after seq `after`. */
static dsc_status journal_sqlite(const char *store, int64_t after, int64_t limit,
                                 msgpack_packer *pk, dsc_error *err) {
    sqlite3 *db = NULL;
    sqlite3_stmt *st = NULL;
    dsc_status res = DSC_OK;
    if (sqlite3_open_v2(store, &db, SQLITE_OPEN_READONLY, NULL) != SQLITE_OK ||
        sqlite3_busy_timeout(db, 2000) != SQLITE_OK ||
        sqlite3_prepare_v2(db,
                           "SELECT seq, at_us, by_key, action, target, ifnull(detail, '')"
                           " FROM admin_journal WHERE seq > ?1 ORDER BY seq LIMIT ?2",
                           -1, &st, NULL) != SQLITE_OK) {
        res = dsc_error_set(err, DSC_STORE_UNAVAILABLE, "admin journal: %s",
                            db ? sqlite3_errmsg(db) : "cannot open");
        goto out;
    }
    sqlite3_bind_int64(st, 1, after);
    sqlite3_bind_int64(st, 2, limit + 1); /* one more: is there a next page? */
    msgpack_sbuffer rows;
    msgpack_sbuffer_init(&rows);
    msgpack_packer rp;
    msgpack_packer_init(&rp, &rows, msgpack_sbuffer_write);
    int64_t n = 0, last = 0;
    bool more = false;
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW && !(more = n == limit)) {
        change ch = {sqlite3_column_int64(st, 0),
                     sqlite3_column_int64(st, 1),
                     text_col(st, 2),
                     text_col(st, 3),
                     text_col(st, 4),
                     text_col(st, 5)};
        pack_change(&rp, &ch);
        last = ch.seq, n++;
    }
    if (rc != SQLITE_ROW && rc != SQLITE_DONE) {
        res = dsc_error_set(err, DSC_STORE_UNAVAILABLE, "admin journal: %s", sqlite3_errstr(rc));
    } else {
        dsc__pack_page(pk, "changes", n, &rows, more ? last : 0);
    }
    msgpack_sbuffer_destroy(&rows);
out:
    sqlite3_finalize(st);
    sqlite3_close(db);
    return res;
}

/* With a Redis store: one read of the stream, packed when it answers. */
typedef struct admin_job {
    dsc__job job;
    int64_t limit;
    msgpack_sbuffer rows;
    int64_t n, next;
} admin_job;

static dsc_status finish_admin(dsc__job *job, dsc_status st, const dsc_error *st_err,
                               msgpack_packer *pk, dsc_error *err) {
    admin_job *j = (admin_job *)job;
    if (st == DSC_OK)
        dsc__pack_page(pk, "changes", j->n, &j->rows, j->next);
    else
        *err = *st_err;
    msgpack_sbuffer_destroy(&j->rows);
    return st;
}

static void on_admin_rows(void *ud, dsc_status st, const dsc__redis_answer *a,
                          const dsc_error *st_err) {
    admin_job *j = ud;
    dsc_error err = st == DSC_OK ? (dsc_error){0} : *st_err;
    msgpack_packer rp;
    msgpack_packer_init(&rp, &j->rows, msgpack_sbuffer_write);
    for (size_t i = 0; st == DSC_OK && i < a->n && j->n < j->limit; i++) {
        const redisReply *const *r = a->rows + 6 * i;
        change ch = {dsc__redis_seq_of_id(r[0]->str),
                     strtoll(r[1]->str, NULL, 10),
                     r[2]->str,
                     r[3]->str,
                     r[4]->str,
                     r[5]->str};
        pack_change(&rp, &ch);
        if (++j->n == j->limit && i + 1 < a->n) j->next = ch.seq;
    }
    dsc__job_done(&j->job.slots[0], st, &err);
}

static dsc_status journal_redis(dsc__call *c, int64_t after, int64_t limit, dsc_error *err) {
    if (!c->w->redis) return dsc_error_set(err, DSC_STORE_UNAVAILABLE, "redis: no connection");
    admin_job *j = (admin_job *)dsc__job_defer(c, sizeof *j, finish_admin);
    if (!j) return dsc_error_set(err, DSC_NOMEM, "out of memory for admin_journal.list");
    j->limit = limit;
    j->n = j->next = 0;
    msgpack_sbuffer_init(&j->rows);
    char start[48];
    dsc__redis_id_of_seq(after, start, sizeof start);
    dsc__job_slot(&j->job, 0);
    dsc_status st = dsc__redis_admin_read(c->w->redis, start, limit + 1, on_admin_rows, j, err);
    if (st != DSC_OK) {
        dsc__job_unslot(&j->job);
        msgpack_sbuffer_destroy(&j->rows);
    }
    return st;
}

dsc_status dsc__m_admin_journal_list(dsc__call *c, const msgpack_object *p, msgpack_packer *pk,
                                     dsc_error *err) {
    int64_t after = 0, limit = JOURNAL_LIMIT_DEFAULT;
    dsc_status st;
    if ((st = dsc_rpc_get_int(p, "after", false, 0, INT64_MAX, &after, err)) ||
        (st = dsc_rpc_get_int(p, "limit", false, 1, JOURNAL_LIMIT_MAX, &limit, err)))
        return st;
    if (!c->srv->cfg.store[0])
        return dsc_error_set(err, DSC_STORE_UNAVAILABLE,
                             "this server has no store: changes are not journaled");
    if (c->srv->redis) return journal_redis(c, after, limit, err);
    return journal_sqlite(c->srv->cfg.store, after, limit, pk, err);
}
