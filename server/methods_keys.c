/*
 * methods_keys.c - key.create, key.list, key.revoke: API keys over the wire.
 *
 * An admin manages every key; a manager only keys whose scope lies inside its own,
 * never an admin key, and never creates one wider than itself. Tokens leave the
 * server once, in key.create's reply; key.list shows neither tokens nor hashes.
 */
#include "methods.h"

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
} key_job;

static dsc_status finish_key(dsc__job *job, dsc_status st, const dsc_error *st_err,
                             msgpack_packer *pk, dsc_error *err) {
    key_job *j = (key_job *)job;
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
