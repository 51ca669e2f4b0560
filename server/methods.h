/*
 * methods.h - the method layer: what one call sees (dsc__call), the handlers of the
 * method table (methods*.c), their shared readers and packers, and dispatch, the
 * one entry point of a transport. A handler sees its caller's role, scope and key id
 * through the call, never the connection: conn.h is for transports only.
 */
#ifndef DISCERN_SERVER_METHODS_H
#define DISCERN_SERVER_METHODS_H

#include "server_internal.h"

/* What one method call sees. */
struct dsc__call {
    dsc__conn *conn; /* opaque here: the transport's (conn.h) */
    dsc__role role;  /* the caller's role (NONE when anonymous) */
    dsc_server *srv;
    dsc__worker *w;
    uint32_t msgid;
    bool is_request;
    dsc__job *deferred;      /* set by dsc__job_defer: the reply comes later */
    bool replayed;           /* run again by dsc__job_delay_call, after its wait */
    const dsc__scope *scope; /* the caller's scope for an M_SCOPED method, else NULL */
    const char *key_id;      /* the caller's key id ("admin", "" when anonymous) */
};

/* A method handler: read params (a map), pack one result map into pk, or return an
 * error (whatever was packed is then discarded). */
typedef dsc_status (*dsc__method_fn)(dsc__call *c, const msgpack_object *params, msgpack_packer *pk,
                                     dsc_error *err);

/* Defer the call and run fn again with the same params after delay_us on the
 * worker's loop (c->replayed set), its result being the reply. Params packed over
 * DSC__JOB_DELAY_PARAMS_MAX bytes are refused (DSC_TOO_LARGE); DSC_NOMEM when out of
 * memory. */
#define DSC__JOB_DELAY_PARAMS_MAX 4096
dsc_status dsc__job_delay_call(dsc__call *c, const msgpack_object *params, dsc__method_fn fn,
                               int64_t delay_us, dsc_error *err);

/* Handlers (methods_catalog.c, methods_ledger.c). */
dsc_status dsc__m_estimate(dsc__call *c, const msgpack_object *p, msgpack_packer *pk,
                           dsc_error *err);
dsc_status dsc__m_models_list(dsc__call *c, const msgpack_object *p, msgpack_packer *pk,
                              dsc_error *err);
dsc_status dsc__m_zones_list(dsc__call *c, const msgpack_object *p, msgpack_packer *pk,
                             dsc_error *err);
dsc_status dsc__m_grid_set(dsc__call *c, const msgpack_object *p, msgpack_packer *pk,
                           dsc_error *err);
dsc_status dsc__m_policy_reload(dsc__call *c, const msgpack_object *p, msgpack_packer *pk,
                                dsc_error *err);

dsc_status dsc__m_check(dsc__call *c, const msgpack_object *p, msgpack_packer *pk, dsc_error *err);
dsc_status dsc__m_settle(dsc__call *c, const msgpack_object *p, msgpack_packer *pk, dsc_error *err);
dsc_status dsc__m_cancel(dsc__call *c, const msgpack_object *p, msgpack_packer *pk, dsc_error *err);
dsc_status dsc__m_budget_get(dsc__call *c, const msgpack_object *p, msgpack_packer *pk,
                             dsc_error *err);
dsc_status dsc__m_budget_list(dsc__call *c, const msgpack_object *p, msgpack_packer *pk,
                              dsc_error *err);
dsc_status dsc__m_budget_set(dsc__call *c, const msgpack_object *p, msgpack_packer *pk,
                             dsc_error *err);
dsc_status dsc__m_budget_delete(dsc__call *c, const msgpack_object *p, msgpack_packer *pk,
                                dsc_error *err);

/* Key and audit handlers (methods_keys.c). */
dsc_status dsc__m_key_create(dsc__call *c, const msgpack_object *p, msgpack_packer *pk,
                             dsc_error *err);
dsc_status dsc__m_key_list(dsc__call *c, const msgpack_object *p, msgpack_packer *pk,
                           dsc_error *err);
dsc_status dsc__m_admin_journal_list(dsc__call *c, const msgpack_object *p, msgpack_packer *pk,
                                     dsc_error *err);
dsc_status dsc__m_key_revoke(dsc__call *c, const msgpack_object *p, msgpack_packer *pk,
                             dsc_error *err);
dsc_status dsc__m_decisions_list(dsc__call *c, const msgpack_object *p, msgpack_packer *pk,
                                 dsc_error *err);
/* Usage reports (methods_report.c). */
dsc_status dsc__m_report(dsc__call *c, const msgpack_object *p, msgpack_packer *pk, dsc_error *err);

/* Copy src into dst (cap bytes with the NUL), cut at cap - 1 bytes: what
 * snprintf(dst, cap, "%s", src) does, without printf's set-up on every request. */
void dsc__copy_str(char *dst, size_t cap, const char *src);
/* Shared by the handlers: pack a dsc_impacts as a map of {min, max} ranges. */
void dsc__pack_impacts(msgpack_packer *pk, const dsc_impacts *im);
/* A page of a listing: {name: [n packed rows], next: next or nil (0 = the last page)};
 * rows holds the n rows already packed. */
void dsc__pack_page(msgpack_packer *pk, const char *name, int64_t n, const msgpack_sbuffer *rows,
                    int64_t next);
/* Pack a NUL-terminated key (inline, so that a literal key's length is a constant). */
static inline void dsc__pack_key(msgpack_packer *pk, const char *key) {
    dsc_rpc_pack_cstr(pk, key);
}
/* Read provider, model, tokens, latency_s, zone and the extras below from params
 * into in, with the strings stored in a. */
typedef struct dsc__estimate_args {
    char provider[DSC_POLICY_NAME_MAX], model[DSC_POLICY_MODEL_MAX], zone[DSC_ZONE_MAX];
    dsc_estimate_input in;
} dsc__estimate_args;
dsc_status dsc__read_estimate_args(const dsc__call *c, const msgpack_object *p,
                                   dsc__estimate_args *a, bool outputs_required, dsc_error *err);
/* The params every estimate reads besides provider/model/tokens: method (default: the
 * server's estimate_method), cached/reasoning tokens, images, sizes, scope, carbon,
 * water, modality; and the server's live grid. */
dsc_status dsc__read_estimate_extras(const dsc__call *c, const msgpack_object *p,
                                     dsc_estimate_input *in, dsc_error *err);

/* A request's subject, its strings in place (methods_ledger.c). */
typedef struct dsc__subject_buf {
    char org[DSC_NAME_MAX], team[DSC_NAME_MAX], user[DSC_NAME_MAX], key[DSC_NAME_MAX];
    dsc_subject subject;
} dsc__subject_buf;
/* Read params.subject into s; a scope (may be NULL) fills the parts it omits (the
 * whole subject when there is none) and refuses a part outside it with DSC_FORBIDDEN.
 * required: a subject (given or filled) must name at least one part. */
dsc_status dsc__read_subject(const msgpack_object *p, bool required, const dsc__scope *scope,
                             dsc__subject_buf *s, dsc_error *err);

/* The empty map handed to a method called with params []. */
extern const msgpack_object dsc__empty_map;

/* methods.c: whether the method table has name. */
bool dsc__method_exists(const char *name, size_t len);

/* Run one decoded request or notification of conn: find the method, check rights,
 * call it, and (for a request) pack the reply into conn->out. */
void dsc__dispatch(dsc__conn *conn, const dsc_rpc_request *req);

#endif
