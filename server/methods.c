/*
 * methods.c - the method table of discernd and the handlers that need no core
 * module beyond the server itself (ping, stats, auth). A failed auth is counted and
 * slowed down by authlimit.c.
 *
 * A handler reads its params map with the dsc_rpc_get_* getters (which name the
 * field in every error), and on success packs exactly one result map. When it
 * returns an error, whatever it packed is discarded and an error reply is sent
 * instead, so a handler may fail at any point without corrupting the stream.
 */
#include "conn.h"

#include <stdio.h>
#include <string.h>

const msgpack_object dsc__empty_map = {.type = MSGPACK_OBJECT_MAP};

typedef dsc__call call;
typedef dsc__method_fn method_fn;

/* Who may call a method: a set of roles (docs/protocol.md, "Roles").
 *   ANON     anyone, before or without auth
 *   READER   reader keys; CLIENT client keys; MANAGER manager keys
 *   an admin (the admin token, an admin key, a Unix peer in unix_admin_uids) may call
 *   every method. An unauthenticated Unix-socket peer (the socket's file mode decides
 *   who may connect), and with require_auth = false any unauthenticated connection,
 *   counts as a client and a reader over the whole subject space (anonymous mode).
 *   Anyone else is refused with `unauthorized`, before the handler runs.
 * Flags of a method:
 *   M_SCOPED         acts on subjects, budgets or keys: the handler sees the caller's
 *                    scope in c->scope, fills the subject parts a request omits from it
 *                    and refuses what lies outside it with `forbidden` (NULL scope:
 *                    the method is not scoped; an admin's scope is everything).
 *   M_WRITES_LEDGER  may change budgets, holds or the journal: counted in stats as
 *                    ledger_writes and logged at debug level with its outcome.
 *   M_STATE          reads the catalogue or runs the policies: dispatch brings the
 *                    worker onto the current state (dsc__worker_sync) first, once,
 *                    so a request runs wholly on one catalogue and policy set. */
#define ANON (1u << DSC__ROLE_NONE)
#define READER (1u << DSC__ROLE_READER)
#define CLIENT (1u << DSC__ROLE_CLIENT)
#define MANAGER (1u << DSC__ROLE_MANAGER)
#define ADMIN_ONLY 0u
enum { M_SCOPED = 1 << 0, M_WRITES_LEDGER = 1 << 1, M_STATE = 1 << 2 };

typedef struct method {
    const char *name;
    method_fn fn;
    unsigned roles; /* besides admin */
    unsigned flags;
    const char *const *params; /* the keys its params map may have (NULL-terminated) */
} method;

/* The params each method accepts: any other key is refused with bad_request naming
 * it, before the handler runs (a misspelt `reserve` or `ttl_s` must not silently
 * keep its default). docs/protocol.md lists the same keys per method. */
#define ESTIMATE_PARAMS                                                                            \
    "provider", "model", "input_tokens", "output_tokens", "latency_s", "zone", "method", "scope",  \
        "carbon", "water", "modality", "cached_input_tokens", "reasoning_tokens", "images",        \
        "image_size", "parameters_b", "active_parameters_b", "total_parameters_b"
static const char *const no_params[] = {NULL};
static const char *const auth_params[] = {"token", NULL};
static const char *const estimate_params[] = {ESTIMATE_PARAMS, NULL};
static const char *const provider_params[] = {"provider", NULL};
static const char *const check_params[] = {ESTIMATE_PARAMS, "subject", "purpose",    "tags",
                                           "reserve",       "budgets", "request_id", "ttl_s",
                                           "context",       NULL};
static const char *const settle_params[] = {ESTIMATE_PARAMS, "reservation", "subject", "context",
                                            NULL};
static const char *const reservation_params[] = {"reservation", NULL};
static const char *const subject_params[] = {"subject", NULL};
static const char *const selector_params[] = {"selector", NULL};
static const char *const budget_set_params[] = {"selector", "metric", "window", "limit", NULL};
static const char *const budget_key_params[] = {"selector", "metric", "window", NULL};
static const char *const decisions_params[] = {"subject", "since", "until", "outcome",
                                               "after",   "limit", NULL};
static const char *const report_params[] = {"subject", "by",    "period", "metric",
                                            "since",   "until", NULL};
static const char *const key_create_params[] = {"role", "scope", "label", "expires_at", NULL};
static const char *const scope_params[] = {"scope", NULL};
static const char *const key_id_params[] = {"key_id", NULL};
static const char *const page_params[] = {"after", "limit", NULL};
static const char *const grid_params[] = {"zone", "gco2e_per_kwh", "valid_until", "forecast", NULL};

static dsc_status m_ping(call *c, const msgpack_object *params, msgpack_packer *pk, dsc_error *err);
static dsc_status m_stats(call *c, const msgpack_object *params, msgpack_packer *pk,
                          dsc_error *err);
static dsc_status m_auth(call *c, const msgpack_object *params, msgpack_packer *pk, dsc_error *err);

/* The method table: the wire name, the handler, who may call it, the flags above,
 * the params it accepts.
 * docs/protocol.md documents each method's params and result. */
static const method methods[] = {
    {"ping", m_ping, ANON, 0, no_params},
    {"auth", m_auth, ANON, 0, auth_params},
    {"estimate", dsc__m_estimate, ANON, M_STATE, estimate_params},
    {"models.list", dsc__m_models_list, ANON, M_STATE, provider_params},
    {"zones.list", dsc__m_zones_list, ANON, M_STATE, no_params},
    {"stats", m_stats, READER | MANAGER, M_STATE, no_params},
    {"check", dsc__m_check, CLIENT, M_SCOPED | M_WRITES_LEDGER | M_STATE, check_params},
    {"settle", dsc__m_settle, CLIENT, M_SCOPED | M_WRITES_LEDGER | M_STATE, settle_params},
    {"cancel", dsc__m_cancel, CLIENT, M_SCOPED | M_WRITES_LEDGER, reservation_params},
    {"budget.get", dsc__m_budget_get, READER | CLIENT | MANAGER, M_SCOPED, subject_params},
    {"budget.list", dsc__m_budget_list, READER | MANAGER, M_SCOPED, selector_params},
    {"budget.set", dsc__m_budget_set, MANAGER, M_SCOPED | M_WRITES_LEDGER, budget_set_params},
    {"budget.delete", dsc__m_budget_delete, MANAGER, M_SCOPED | M_WRITES_LEDGER, budget_key_params},
    {"decisions.list", dsc__m_decisions_list, READER | MANAGER, M_SCOPED, decisions_params},
    {"report", dsc__m_report, READER | MANAGER, M_SCOPED, report_params},
    {"key.create", dsc__m_key_create, MANAGER, M_SCOPED, key_create_params},
    {"key.list", dsc__m_key_list, MANAGER, M_SCOPED, scope_params},
    {"key.revoke", dsc__m_key_revoke, MANAGER, M_SCOPED, key_id_params},
    {"admin_journal.list", dsc__m_admin_journal_list, ADMIN_ONLY, 0, page_params},
    {"grid.set", dsc__m_grid_set, ADMIN_ONLY, M_STATE, grid_params},
    {"policy.reload", dsc__m_policy_reload, ADMIN_ONLY, 0, no_params},
};

#define N_METHODS (sizeof methods / sizeof methods[0])

static const method *find_method(const char *name, size_t len) {
    for (size_t i = 0; i < N_METHODS; i++)
        if (strlen(methods[i].name) == len && memcmp(methods[i].name, name, len) == 0)
            return &methods[i];
    return NULL;
}

bool dsc__method_exists(const char *name, size_t len) {
    return find_method(name, len) != NULL;
}

void dsc__copy_str(char *dst, size_t cap, const char *src) {
    if (cap == 0) return;
    size_t n = strnlen(src, cap - 1);
    memcpy(dst, src, n);
    dst[n] = '\0';
}

void dsc__pack_page(msgpack_packer *pk, const char *name, int64_t n, const msgpack_sbuffer *rows,
                    int64_t next) {
    msgpack_pack_map(pk, 2);
    dsc__pack_key(pk, name);
    msgpack_pack_array(pk, (size_t)n);
    pk->callback(pk->data, rows->data, rows->size); /* through the reply buffer */
    dsc__pack_key(pk, "next");
    if (next)
        msgpack_pack_int64(pk, next);
    else
        msgpack_pack_nil(pk);
}

void dsc__pack_impacts(msgpack_packer *pk, const dsc_impacts *im) {
    msgpack_pack_map(pk, 5);
    dsc__pack_key(pk, "energy_kwh");
    dsc_rpc_pack_range(pk, im->energy_kwh.min, im->energy_kwh.max);
    dsc__pack_key(pk, "gwp_kgco2eq");
    dsc_rpc_pack_range(pk, im->gwp_kgco2eq.min, im->gwp_kgco2eq.max);
    dsc__pack_key(pk, "adpe_kgsbeq");
    dsc_rpc_pack_range(pk, im->adpe_kgsbeq.min, im->adpe_kgsbeq.max);
    dsc__pack_key(pk, "pe_mj");
    dsc_rpc_pack_range(pk, im->pe_mj.min, im->pe_mj.max);
    dsc__pack_key(pk, "wcf_l");
    dsc_rpc_pack_range(pk, im->wcf_l.min, im->wcf_l.max);
}

/* -------------------------------------------------------------------- handlers -- */

static dsc_status m_ping(call *c, const msgpack_object *params, msgpack_packer *pk,
                         dsc_error *err) {
    (void)c;
    (void)params;
    (void)err;
    msgpack_pack_map(pk, 3);
    dsc__pack_key(pk, "pong");
    msgpack_pack_true(pk);
    dsc__pack_key(pk, "version");
    dsc_rpc_pack_cstr(pk, DISCERN_VERSION);
    dsc__pack_key(pk, "time");
    msgpack_pack_double(pk, (double)dsc__now_us() / 1e6);
    return DSC_OK;
}

static uint64_t sum_counter(dsc_server *srv, size_t offset) {
    uint64_t total = 0;
    for (int i = 0; i < srv->n_workers; i++) {
        atomic_uint_fast64_t *v =
            (atomic_uint_fast64_t *)((char *)&srv->workers[i].counters + offset);
        total += atomic_load_explicit(v, memory_order_relaxed);
    }
    return total;
}

#define SUM(srv, field) sum_counter((srv), offsetof(dsc__counters, field))

static dsc_status m_stats(call *c, const msgpack_object *params, msgpack_packer *pk,
                          dsc_error *err) {
    (void)params;
    dsc_server *srv = c->srv;
    msgpack_pack_map(pk, 12);
    dsc__pack_key(pk, "version");
    dsc_rpc_pack_cstr(pk, DISCERN_VERSION);
    dsc__pack_key(pk, "uptime_s");
    msgpack_pack_double(pk, (double)(dsc__now_us() - srv->started_us) / 1e6);
    dsc__pack_key(pk, "workers");
    msgpack_pack_int(pk, srv->n_workers);
    dsc__pack_key(pk, "connections");
    msgpack_pack_int(pk, atomic_load(&srv->connections));
    dsc__pack_key(pk, "connections_rejected");
    msgpack_pack_uint64(pk, atomic_load(&srv->rejected));
    dsc__pack_key(pk, "requests");
    msgpack_pack_uint64(pk, SUM(srv, requests));
    dsc__pack_key(pk, "errors");
    msgpack_pack_uint64(pk, SUM(srv, errors));
    dsc__pack_key(pk, "protocol_errors");
    msgpack_pack_uint64(pk, SUM(srv, protocol_errors));
    dsc__pack_key(pk, "ledger_writes");
    msgpack_pack_uint64(pk, SUM(srv, ledger_writes));
    dsc__pack_key(pk, "decisions");
    msgpack_pack_map(pk, 3);
    for (int o = DSC_POLICY_ALLOW; o <= DSC_POLICY_REFUSE; o++) {
        dsc__pack_key(pk, dsc_policy_outcome_name((dsc_policy_outcome)o));
        msgpack_pack_uint64(pk, sum_counter(srv, offsetof(dsc__counters, decisions) +
                                                     (size_t)o * sizeof(atomic_uint_fast64_t)));
    }
    dsc__pack_key(pk, "unenforced");
    msgpack_pack_uint64(pk, SUM(srv, unenforced));
    (void)err;
    dsc__pack_key(pk, "policy_version");
    dsc_rpc_pack_cstr(pk, dsc_policy_set_version(c->w->state->policies));
    return DSC_OK;
}

#define AUTH_TRIES 3 /* wrong tokens before the connection is closed */

/* Compare in time that depends only on the lengths, never on where they differ. */
static bool token_equal(const char *a, size_t alen, const char *b, size_t blen) {
    volatile unsigned char diff = (unsigned char)(alen != blen);
    size_t n = alen > blen ? alen : blen;
    for (size_t i = 0; i < n; i++) {
        unsigned char x = i < alen ? (unsigned char)a[i] : 0;
        unsigned char y = i < blen ? (unsigned char)b[i] : 0;
        diff |= x ^ y;
    }
    return diff == 0;
}

void dsc__conn_make_admin(dsc__conn *conn) {
    conn->role = DSC__ROLE_ADMIN;
    memset(&conn->scope, 0, sizeof conn->scope);
    snprintf(conn->key_id, sizeof conn->key_id, "admin");
    conn->key_expires_at = 0;
}

static void conn_bind_key(dsc__conn *conn, const dsc__key_info *k, uint64_t generation) {
    conn->role = k->role;
    conn->scope = k->scope;
    snprintf(conn->key_id, sizeof conn->key_id, "%s", k->id);
    conn->key_expires_at = k->expires_at;
    conn->key_generation = generation;
}

static void conn_forget_key(dsc__conn *conn) {
    conn->role = DSC__ROLE_NONE;
    memset(&conn->scope, 0, sizeof conn->scope);
    conn->key_id[0] = '\0';
    conn->key_expires_at = 0;
}

/* Which identity a token names: the admin token, or a valid key. */
static bool auth_token(call *c, const char *token) {
    const char *want = c->srv->cfg.admin_token;
    if (want[0] && token_equal(token, strlen(token), want, strlen(want))) {
        dsc__conn_make_admin(c->conn);
        return true;
    }
    dsc__key_info k;
    uint64_t gen = dsc__keys_generation(c->srv->keys);
    if (dsc__keys_auth(c->srv->keys, token, dsc__now_us() / 1000000, &k) != DSC_OK) return false;
    conn_bind_key(c->conn, &k, gen);
    return true;
}

static void pack_identity(msgpack_packer *pk, const dsc__conn *conn) {
    char scope[DSC__SCOPE_TEXT_MAX];
    dsc__scope_format(&conn->scope, scope, sizeof scope);
    msgpack_pack_map(pk, 4);
    dsc__pack_key(pk, "admin");
    if (conn->role == DSC__ROLE_ADMIN)
        msgpack_pack_true(pk);
    else
        msgpack_pack_false(pk);
    dsc__pack_key(pk, "role");
    dsc_rpc_pack_cstr(pk, dsc__role_name(conn->role));
    dsc__pack_key(pk, "key_id");
    dsc_rpc_pack_cstr(pk, conn->key_id);
    dsc__pack_key(pk, "scope");
    dsc_rpc_pack_cstr(pk, scope);
}

static dsc_status m_auth(call *c, const msgpack_object *params, msgpack_packer *pk,
                         dsc_error *err) {
    /* Failed logins cost turns (authlimit.c): wait for this peer's, or be refused. */
    dsc__conn *conn = c->conn;
    if (!conn->auth_peer[0]) dsc__authlimit_key(conn->fd, conn->auth_peer, sizeof conn->auth_peer);
    int64_t wait_us =
        c->replayed ? 0
                    : dsc__authlimit_admit(c->srv->authlimit, conn->auth_peer, dsc__now_us(), err);
    if (wait_us != 0)
        return wait_us < 0 ? DSC_UNAUTHORIZED
                           : dsc__job_delay_call(c, params, m_auth, wait_us, err);
    char token[DSC_CONFIG_STR_MAX];
    dsc_status st = dsc_rpc_get_str(params, "token", true, token, sizeof token, err);
    if (st != DSC_OK) return st;
    bool ok = auth_token(c, token);
    memset(token, 0, sizeof token);
    if (!ok) {
        /* Guessing costs a connection every AUTH_TRIES attempts. */
        bool last = ++c->conn->auth_failures >= AUTH_TRIES;
        if (last) c->conn->closing = true;
        dsc__authlimit_failed(c->srv->authlimit, conn->auth_peer, dsc__now_us());
        return dsc_error_set(err, DSC_UNAUTHORIZED,
                             "field 'token': neither the admin token nor a valid key");
    }
    pack_identity(pk, c->conn);
    return DSC_OK;
}

dsc_status dsc__conn_auth_bearer(dsc__conn *conn, const char *token, bool *limited,
                                 dsc_error *err) {
    dsc_server *srv = conn->w->srv;
    int64_t wait_us = dsc__authlimit_admit(srv->authlimit, conn->auth_peer, dsc__now_us(), err);
    *limited = wait_us != 0;
    if (wait_us > 0)
        return dsc_error_set(err, DSC_UNAUTHORIZED,
                             "too many failed tokens from this address: retry in %lld ms",
                             (long long)(wait_us / 1000 + 1));
    if (wait_us < 0) return DSC_UNAUTHORIZED;
    call c = {.conn = conn, .srv = srv, .w = conn->w, .key_id = ""};
    if (auth_token(&c, token)) return DSC_OK;
    dsc__authlimit_failed(srv->authlimit, conn->auth_peer, dsc__now_us());
    return dsc_error_set(err, DSC_UNAUTHORIZED,
                         "Authorization: the Bearer token is neither the admin token nor a "
                         "valid key");
}

/* -------------------------------------------------------------------- dispatch -- */

static const dsc__scope scope_all;

/* A key revoked or expired since auth stops working at its connection's next call. */
static dsc_status refresh_key(call *c, dsc_error *err) {
    dsc__conn *conn = c->conn;
    if (conn->role == DSC__ROLE_NONE || strcmp(conn->key_id, "admin") == 0) return DSC_OK;
    int64_t now = dsc__now_us() / 1000000;
    uint64_t gen = dsc__keys_generation(c->srv->keys);
    bool expired = conn->key_expires_at && now >= conn->key_expires_at;
    if (!expired && gen == conn->key_generation) return DSC_OK;
    dsc__key_info k;
    if (!expired && dsc__keys_get(c->srv->keys, conn->key_id, &k, NULL) == DSC_OK &&
        dsc__key_valid(&k, now)) {
        conn->key_generation = gen;
        return DSC_OK;
    }
    char id[DSC__KEY_ID_MAX];
    snprintf(id, sizeof id, "%s", conn->key_id);
    conn_forget_key(conn);
    return dsc_error_set(err, DSC_UNAUTHORIZED, "key '%s' was revoked or has expired", id);
}

/* Whether this connection may call m (see the table's comment), and its scope. */
static dsc_status check_access(call *c, const method *m, dsc_error *err) {
    dsc_status st = refresh_key(c, err);
    if (st != DSC_OK) return st;
    dsc__role role = c->conn->role;
    bool anonymous_mode = role == DSC__ROLE_NONE && (c->conn->is_unix || !c->srv->cfg.require_auth);
    unsigned mine = ANON | (anonymous_mode ? READER | CLIENT : 1u << role);
    if (role != DSC__ROLE_ADMIN && !(m->roles & mine)) {
        if (role == DSC__ROLE_NONE)
            return dsc_error_set(err, DSC_UNAUTHORIZED,
                                 "method '%s' needs a key (call auth with a token first)", m->name);
        return dsc_error_set(err, DSC_UNAUTHORIZED, "method '%s' is not open to a %s key", m->name,
                             dsc__role_name(role));
    }
    c->scope = (m->flags & M_SCOPED) ? (anonymous_mode ? &scope_all : &c->conn->scope) : NULL;
    c->key_id = anonymous_mode ? "" : c->conn->key_id;
    c->role = role;
    return DSC_OK;
}

static dsc_status run(call *c, const dsc_rpc_request *req, msgpack_packer *pk, dsc_error *err) {
    const method *m = find_method(req->method, req->method_len);
    if (!m) {
        int n = req->method_len > 64 ? 64 : (int)req->method_len;
        return dsc_error_set(err, DSC_BAD_REQUEST, "method: unknown method '%.*s'", n, req->method);
    }
    dsc_status st = check_access(c, m, err);
    if (st != DSC_OK) return st;
    if (!dsc_rpc_keys_known(req->params, m->params)) {
        char where[96];
        snprintf(where, sizeof where, "the params of '%s'", m->name);
        st = dsc_rpc_check_keys(req->params, m->params, where, err);
    }
    if (st == DSC_OK && (m->flags & M_STATE)) st = dsc__worker_sync(c->w, err);
    if (st == DSC_OK) st = m->fn(c, req->params ? req->params : &dsc__empty_map, pk, err);
    if (m->flags & M_WRITES_LEDGER) {
        atomic_fetch_add_explicit(&c->w->counters.ledger_writes, 1, memory_order_relaxed);
        dsc_log_write(&c->srv->log, DSC_LOG_DEBUG, "ledger_write", "conn=%llu method=%s code=%s",
                      (unsigned long long)c->conn->id, m->name, dsc_status_wire(st));
    }
    return st;
}

/* A deferred call: nothing waited for means reply now; otherwise the job is
 * counted on its connection and replies when its completions are in. */
static void adopt_job(dsc__call *c, dsc_status st, const dsc_error *err) {
    dsc__job *job = c->deferred;
    if (st != DSC_OK && job->st == DSC_OK) {
        job->st = st;
        job->err = *err;
    }
    if (job->waiting == 0) {
        dsc__job_finish_now(job);
        return;
    }
    c->conn->jobs++;
    c->w->jobs++;
}

void dsc__dispatch(dsc__conn *conn, const dsc_rpc_request *req) {
    bool is_request = req->kind == DSC_RPC_REQUEST;
    call c = {.conn = conn,
              .srv = conn->w->srv,
              .w = conn->w,
              .msgid = req->msgid,
              .is_request = is_request,
              .key_id = ""};
    dsc__conn_out_ready(conn);
    msgpack_sbuffer *out = &conn->out;
    size_t mark = out->size;
    msgpack_packer pk;
    dsc_rpc_out o = {out, SIZE_MAX, false};
    msgpack_packer_init(&pk, &o, dsc_rpc_out_write);
    dsc_error err;
    dsc_error_clear(&err);
    atomic_fetch_add_explicit(&conn->w->counters.requests, 1, memory_order_relaxed);
    if (is_request) dsc_rpc_pack_result_begin(&pk, req->msgid);
    dsc_status st = run(&c, req, &pk, &err);
    if (o.failed && st == DSC_OK && !c.deferred)
        st = dsc_error_set(&err, DSC_NOMEM, "out of memory packing the reply");
    if (st == DSC_OK && is_request && !c.deferred) return;
    out->size = mark; /* discard a partial or deferred result, or a notification's */
    o.failed = false;
    if (c.deferred) {
        adopt_job(&c, st, &err);
        return;
    }
    if (st == DSC_OK) return;
    if (err.code == DSC_OK) dsc_error_set(&err, st, "%s", dsc_status_message(st));
    atomic_fetch_add_explicit(&conn->w->counters.errors, 1, memory_order_relaxed);
    if (is_request) {
        dsc_rpc_pack_error(&pk, req->msgid, &err);
        dsc__conn_out_check(conn, &o, mark);
    } else
        dsc_log_write(&c.srv->log, DSC_LOG_INFO, "notification_failed", "conn=%llu code=%s",
                      (unsigned long long)conn->id, dsc_status_wire(err.code));
}
