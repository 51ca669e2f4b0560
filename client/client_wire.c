/*
 * client_wire.c - the protocol side of libdiscern-client: one row per method that
 * packs the request's params and decodes the result map into a plain struct. What a
 * reply may make us allocate is bounded by the scanner shared with the server
 * (core/rpc_scan.c), called from client.c.
 *
 * Encoders check required fields before anything is packed so that a bad request
 * never reaches the socket. Decoders follow docs/protocol.md: unknown keys are
 * ignored, a missing required key is DSC_PARSE naming it.
 */
#include "client_wire.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------------ packing -- */

static int pack_cstr(msgpack_packer *pk, const char *s) {
    return msgpack_pack_str_with_body(pk, s, strlen(s));
}

static int pack_kv_str(msgpack_packer *pk, const char *key, const char *val) {
    return pack_cstr(pk, key) | pack_cstr(pk, val);
}

static int pack_kv_int(msgpack_packer *pk, const char *key, int64_t val) {
    return pack_cstr(pk, key) | msgpack_pack_int64(pk, val);
}

static int pack_kv_num(msgpack_packer *pk, const char *key, double val) {
    return pack_cstr(pk, key) | msgpack_pack_double(pk, val);
}

static bool given(const char *s) {
    return s && s[0];
}

static dsc_status need(const char *field, const char *val, dsc_error *err) {
    if (given(val)) return DSC_OK;
    return dsc_error_set(err, DSC_BAD_REQUEST, "field '%s' is required", field);
}

static dsc_status need_count(const char *field, int64_t v, dsc_error *err) {
    if (v >= 0) return DSC_OK;
    return dsc_error_set(err, DSC_BAD_REQUEST, "field '%s': %lld is negative", field, (long long)v);
}

static dsc_status pack_result(int rc, dsc_error *err) {
    return rc == 0 ? DSC_OK : dsc_error_set(err, DSC_NOMEM, "out of memory while packing");
}

static int subject_parts(const dsc_client_subject *s) {
    return given(s->org) + given(s->team) + given(s->user) + given(s->key);
}

static int pack_subject(msgpack_packer *pk, const dsc_client_subject *s) {
    int rc = pack_cstr(pk, "subject") | msgpack_pack_map(pk, (size_t)subject_parts(s));
    if (given(s->org)) rc |= pack_kv_str(pk, "org", s->org);
    if (given(s->team)) rc |= pack_kv_str(pk, "team", s->team);
    if (given(s->user)) rc |= pack_kv_str(pk, "user", s->user);
    if (given(s->key)) rc |= pack_kv_str(pk, "key", s->key);
    return rc;
}

static dsc_status need_subject(const dsc_client_subject *s, dsc_error *err) {
    if (subject_parts(s) > 0) return DSC_OK;
    return dsc_error_set(err, DSC_BAD_REQUEST,
                         "field 'subject': give at least one of org, team, user, key");
}

/* [ {n pairs ...} ]: every encoder opens its params like this. */
static int open_params(msgpack_packer *pk, size_t pairs) {
    return msgpack_pack_array(pk, 1) | msgpack_pack_map(pk, pairs);
}

static dsc_status enc_none(msgpack_packer *pk, const void *rq, const dsc__encode_ctx *ctx,
                           dsc_error *err) {
    (void)rq;
    (void)ctx;
    return pack_result(open_params(pk, 0), err);
}

/* The estimate inputs check and settle share: how many are sent, and packing them. */
static size_t estimate_extras_count(int64_t cached, int64_t reasoning, const char *method) {
    return (cached > 0) + (reasoning > 0) + (given(method) ? 1 : 0);
}

static int pack_estimate_extras(msgpack_packer *pk, int64_t cached, int64_t reasoning,
                                const char *method) {
    int rc = 0;
    if (cached > 0) rc |= pack_kv_int(pk, "cached_input_tokens", cached);
    if (reasoning > 0) rc |= pack_kv_int(pk, "reasoning_tokens", reasoning);
    if (given(method)) rc |= pack_kv_str(pk, "method", method);
    return rc;
}

/* `context: false`: the results of check and settle hold no estimate context
 * (method, scope, assumptions, warnings), so the library never asks for it; it is
 * more than half of a check reply's bytes (docs/protocol.md). */
static int pack_no_context(msgpack_packer *pk) {
    return pack_cstr(pk, "context") | msgpack_pack_false(pk);
}

static dsc_status check_validate(const dsc_client_check_request *q, bool keyed, dsc_error *err) {
    dsc_status st;
    if (!q) return dsc_error_set(err, DSC_BAD_REQUEST, "no check request");
    if ((!keyed && (st = need_subject(&q->subject, err))) ||
        (st = need("provider", q->provider, err)) || (st = need("model", q->model, err)) ||
        (st = need("purpose", q->purpose, err)) ||
        (st = need_count("input_tokens", q->input_tokens, err)) ||
        (st = need_count("output_tokens", q->output_tokens, err)) ||
        (st = need_count("cached_input_tokens", q->cached_input_tokens, err)) ||
        (st = need_count("reasoning_tokens", q->reasoning_tokens, err)))
        return st;
    if (q->n_tags > 0 && !q->tags)
        return dsc_error_set(err, DSC_BAD_REQUEST, "field 'tags': %zu pairs but no array",
                             q->n_tags);
    for (size_t i = 0; i < 2 * q->n_tags; i++)
        if (!q->tags[i])
            return dsc_error_set(err, DSC_BAD_REQUEST, "field 'tags': entry %zu is NULL", i);
    if (q->ttl_s < 0 || q->ttl_s > 86400)
        return dsc_error_set(err, DSC_BAD_REQUEST, "field 'ttl_s': %d is not in 1..86400",
                             q->ttl_s);
    return DSC_OK;
}

static dsc_status enc_check(msgpack_packer *pk, const void *rq, const dsc__encode_ctx *ctx,
                            dsc_error *err) {
    const dsc_client_check_request *q = rq;
    dsc_status st = check_validate(q, ctx->keyed, err);
    if (st != DSC_OK) return st;
    size_t n = 9 + (given(q->zone) ? 1 : 0) + (q->n_tags ? 1 : 0) + (q->ttl_s ? 1 : 0) +
               q->budgets +
               estimate_extras_count(q->cached_input_tokens, q->reasoning_tokens, q->method);
    int rc = open_params(pk, n) | pack_subject(pk, &q->subject) |
             pack_kv_str(pk, "provider", q->provider) | pack_kv_str(pk, "model", q->model) |
             pack_kv_int(pk, "input_tokens", q->input_tokens) |
             pack_kv_int(pk, "output_tokens", q->output_tokens) |
             pack_kv_str(pk, "purpose", q->purpose) | pack_cstr(pk, "reserve") |
             (q->no_reserve ? msgpack_pack_false(pk) : msgpack_pack_true(pk)) |
             pack_kv_str(pk, "request_id", given(q->request_id) ? q->request_id : ctx->request_id) |
             pack_no_context(pk);
    if (given(q->zone)) rc |= pack_kv_str(pk, "zone", q->zone);
    if (q->ttl_s) rc |= pack_kv_int(pk, "ttl_s", q->ttl_s);
    if (q->budgets) rc |= pack_cstr(pk, "budgets") | msgpack_pack_true(pk);
    rc |= pack_estimate_extras(pk, q->cached_input_tokens, q->reasoning_tokens, q->method);
    if (q->n_tags) {
        rc |= pack_cstr(pk, "tags") | msgpack_pack_map(pk, q->n_tags);
        for (size_t i = 0; i < 2 * q->n_tags; i++)
            rc |= pack_cstr(pk, q->tags[i]);
    }
    return pack_result(rc, err);
}

static dsc_status enc_settle(msgpack_packer *pk, const void *rq, const dsc__encode_ctx *ctx,
                             dsc_error *err) {
    (void)ctx;
    const dsc_client_settle_request *q = rq;
    dsc_status st;
    if (!q) return dsc_error_set(err, DSC_BAD_REQUEST, "no settle request");
    if ((st = need("reservation", q->reservation, err)) ||
        (st = need_count("input_tokens", q->input_tokens, err)) ||
        (st = need_count("output_tokens", q->output_tokens, err)) ||
        (st = need_count("cached_input_tokens", q->cached_input_tokens, err)) ||
        (st = need_count("reasoning_tokens", q->reasoning_tokens, err)))
        return st;
    int parts = subject_parts(&q->subject);
    size_t n = 4 + (q->latency_s > 0) + given(q->provider) + given(q->model) + given(q->zone) +
               (parts > 0) +
               estimate_extras_count(q->cached_input_tokens, q->reasoning_tokens, q->method);
    int rc = open_params(pk, n) | pack_kv_str(pk, "reservation", q->reservation) |
             pack_kv_int(pk, "input_tokens", q->input_tokens) |
             pack_kv_int(pk, "output_tokens", q->output_tokens) | pack_no_context(pk);
    if (q->latency_s > 0) rc |= pack_kv_num(pk, "latency_s", q->latency_s);
    if (given(q->provider)) rc |= pack_kv_str(pk, "provider", q->provider);
    if (given(q->model)) rc |= pack_kv_str(pk, "model", q->model);
    if (given(q->zone)) rc |= pack_kv_str(pk, "zone", q->zone);
    if (parts > 0) rc |= pack_subject(pk, &q->subject);
    rc |= pack_estimate_extras(pk, q->cached_input_tokens, q->reasoning_tokens, q->method);
    return pack_result(rc, err);
}

/* Methods whose request is one optional or required string. */
static dsc_status enc_one_str(msgpack_packer *pk, const char *key, const char *val, bool required,
                              dsc_error *err) {
    if (required && need(key, val, err)) return DSC_BAD_REQUEST;
    if (!given(val)) return pack_result(open_params(pk, 0), err);
    return pack_result(open_params(pk, 1) | pack_kv_str(pk, key, val), err);
}

static dsc_status enc_cancel(msgpack_packer *pk, const void *rq, const dsc__encode_ctx *ctx,
                             dsc_error *err) {
    (void)ctx;
    return enc_one_str(pk, "reservation", rq, true, err);
}

static dsc_status enc_budget_list(msgpack_packer *pk, const void *rq, const dsc__encode_ctx *ctx,
                                  dsc_error *err) {
    (void)ctx;
    return enc_one_str(pk, "selector", rq, false, err);
}

static dsc_status enc_key_create(msgpack_packer *pk, const void *rq, const dsc__encode_ctx *ctx,
                                 dsc_error *err) {
    (void)ctx;
    const dsc_client_key_request *q = rq;
    if (!q) return dsc_error_set(err, DSC_BAD_REQUEST, "no key request");
    if (need("role", q->role, err) || need("scope", q->scope, err)) return DSC_BAD_REQUEST;
    int rc = open_params(pk, 2 + (size_t)given(q->label) + (q->expires_at > 0)) |
             pack_kv_str(pk, "role", q->role) | pack_kv_str(pk, "scope", q->scope);
    if (given(q->label)) rc |= pack_kv_str(pk, "label", q->label);
    if (q->expires_at > 0) rc |= pack_kv_int(pk, "expires_at", q->expires_at);
    return pack_result(rc, err);
}

static dsc_status enc_key_list(msgpack_packer *pk, const void *rq, const dsc__encode_ctx *ctx,
                               dsc_error *err) {
    (void)ctx;
    return enc_one_str(pk, "scope", rq, false, err);
}

static dsc_status enc_key_revoke(msgpack_packer *pk, const void *rq, const dsc__encode_ctx *ctx,
                                 dsc_error *err) {
    (void)ctx;
    return enc_one_str(pk, "key_id", rq, true, err);
}

static dsc_status enc_decisions(msgpack_packer *pk, const void *rq, const dsc__encode_ctx *ctx,
                                dsc_error *err) {
    (void)ctx;
    static const dsc_client_decisions_request none;
    const dsc_client_decisions_request *q = rq ? rq : &none;
    int parts = subject_parts(&q->subject);
    size_t n = (size_t)((parts > 0) + (q->since > 0) + (q->until > 0) + given(q->outcome) +
                        (q->limit > 0) + (q->after > 0));
    int rc = open_params(pk, n);
    if (parts > 0) rc |= pack_subject(pk, &q->subject);
    if (q->since > 0) rc |= pack_kv_num(pk, "since", q->since);
    if (q->until > 0) rc |= pack_kv_num(pk, "until", q->until);
    if (given(q->outcome)) rc |= pack_kv_str(pk, "outcome", q->outcome);
    if (q->limit > 0) rc |= pack_kv_int(pk, "limit", q->limit);
    if (q->after > 0) rc |= pack_kv_int(pk, "after", q->after);
    return pack_result(rc, err);
}

static dsc_status enc_admin_journal(msgpack_packer *pk, const void *rq, const dsc__encode_ctx *ctx,
                                    dsc_error *err) {
    (void)ctx;
    static const dsc_client_admin_journal_request none;
    const dsc_client_admin_journal_request *q = rq ? rq : &none;
    int rc = open_params(pk, (size_t)((q->limit > 0) + (q->after > 0)));
    if (q->limit > 0) rc |= pack_kv_int(pk, "limit", q->limit);
    if (q->after > 0) rc |= pack_kv_int(pk, "after", q->after);
    return pack_result(rc, err);
}

static dsc_status enc_report(msgpack_packer *pk, const void *rq, const dsc__encode_ctx *ctx,
                             dsc_error *err) {
    (void)ctx;
    const dsc_client_report_request *q = rq;
    dsc_status st;
    if (!q) return dsc_error_set(err, DSC_BAD_REQUEST, "no report request");
    if ((st = need("by", q->by, err))) return st;
    int parts = subject_parts(&q->subject);
    size_t n = (size_t)(1 + (parts > 0) + given(q->period) + given(q->metric) + (q->since > 0) +
                        (q->until > 0));
    int rc = open_params(pk, n);
    rc |= pack_kv_str(pk, "by", q->by);
    if (parts > 0) rc |= pack_subject(pk, &q->subject);
    if (given(q->period)) rc |= pack_kv_str(pk, "period", q->period);
    if (given(q->metric)) rc |= pack_kv_str(pk, "metric", q->metric);
    if (q->since > 0) rc |= pack_kv_num(pk, "since", q->since);
    if (q->until > 0) rc |= pack_kv_num(pk, "until", q->until);
    return pack_result(rc, err);
}

static dsc_status enc_auth(msgpack_packer *pk, const void *rq, const dsc__encode_ctx *ctx,
                           dsc_error *err) {
    (void)ctx;
    return enc_one_str(pk, "token", rq, true, err);
}

static dsc_status enc_estimate(msgpack_packer *pk, const void *rq, const dsc__encode_ctx *ctx,
                               dsc_error *err) {
    (void)ctx;
    const dsc_client_estimate_request *q = rq;
    dsc_status st;
    if (!q) return dsc_error_set(err, DSC_BAD_REQUEST, "no estimate request");
    if ((st = need("provider", q->provider, err)) || (st = need("model", q->model, err)) ||
        (st = need_count("input_tokens", q->input_tokens, err)) ||
        (st = need_count("output_tokens", q->output_tokens, err)))
        return st;
    size_t n = 4 + (given(q->zone) ? 1 : 0) + (q->latency_s > 0 ? 1 : 0);
    int rc = open_params(pk, n) | pack_kv_str(pk, "provider", q->provider) |
             pack_kv_str(pk, "model", q->model) | pack_kv_int(pk, "input_tokens", q->input_tokens) |
             pack_kv_int(pk, "output_tokens", q->output_tokens);
    if (given(q->zone)) rc |= pack_kv_str(pk, "zone", q->zone);
    if (q->latency_s > 0) rc |= pack_kv_num(pk, "latency_s", q->latency_s);
    return pack_result(rc, err);
}

static dsc_status enc_budget_get(msgpack_packer *pk, const void *rq, const dsc__encode_ctx *ctx,
                                 dsc_error *err) {
    static const dsc_client_subject none;
    const dsc_client_subject *s = rq ? rq : &none;
    dsc_status st = ctx->keyed ? DSC_OK : need_subject(s, err);
    if (st != DSC_OK) return st;
    return pack_result(open_params(pk, 1) | pack_subject(pk, s), err);
}

static dsc_status budget_key_validate(const dsc_client_budget_set_request *q, dsc_error *err) {
    dsc_status st;
    if (!q) return dsc_error_set(err, DSC_BAD_REQUEST, "no budget request");
    if ((st = need("selector", q->selector, err)) || (st = need("metric", q->metric, err)) ||
        (st = need("window", q->window, err)))
        return st;
    return DSC_OK;
}

static int pack_budget_key(msgpack_packer *pk, const dsc_client_budget_set_request *q) {
    return pack_kv_str(pk, "selector", q->selector) | pack_kv_str(pk, "metric", q->metric) |
           pack_kv_str(pk, "window", q->window);
}

static dsc_status enc_budget_set(msgpack_packer *pk, const void *rq, const dsc__encode_ctx *ctx,
                                 dsc_error *err) {
    (void)ctx;
    const dsc_client_budget_set_request *q = rq;
    dsc_status st = budget_key_validate(q, err);
    if (st != DSC_OK) return st;
    if (!(q->limit >= 0))
        return dsc_error_set(err, DSC_BAD_REQUEST, "field 'limit': %g is not >= 0", q->limit);
    return pack_result(
        open_params(pk, 4) | pack_budget_key(pk, q) | pack_kv_num(pk, "limit", q->limit), err);
}

static dsc_status enc_budget_delete(msgpack_packer *pk, const void *rq, const dsc__encode_ctx *ctx,
                                    dsc_error *err) {
    (void)ctx;
    const dsc_client_budget_set_request *q = rq;
    dsc_status st = budget_key_validate(q, err);
    if (st != DSC_OK) return st;
    return pack_result(open_params(pk, 3) | pack_budget_key(pk, q), err);
}

static dsc_status enc_grid_set(msgpack_packer *pk, const void *rq, const dsc__encode_ctx *ctx,
                               dsc_error *err) {
    (void)ctx;
    const dsc_client_grid_request *q = rq;
    if (!q) return dsc_error_set(err, DSC_BAD_REQUEST, "no grid request");
    if (need("zone", q->zone, err)) return DSC_BAD_REQUEST;
    if (!(q->gco2e_per_kwh >= 0))
        return dsc_error_set(err, DSC_BAD_REQUEST, "field 'gco2e_per_kwh': %g is not >= 0",
                             q->gco2e_per_kwh);
    return pack_result(open_params(pk, 3) | pack_kv_str(pk, "zone", q->zone) |
                           pack_kv_num(pk, "gco2e_per_kwh", q->gco2e_per_kwh) |
                           pack_kv_int(pk, "valid_until", q->valid_until),
                       err);
}

/* ------------------------------------------------------------------ reading -- */

const msgpack_object *dsc__map_get(const msgpack_object *m, const char *key) {
    if (!m || m->type != MSGPACK_OBJECT_MAP) return NULL;
    size_t len = strlen(key);
    for (uint32_t i = 0; i < m->via.map.size; i++) {
        const msgpack_object *k = &m->via.map.ptr[i].key;
        if ((k->type == MSGPACK_OBJECT_STR || k->type == MSGPACK_OBJECT_BIN) &&
            k->via.str.size == len && memcmp(k->via.str.ptr, key, len) == 0)
            return &m->via.map.ptr[i].val;
    }
    return NULL;
}

bool dsc__obj_str(const msgpack_object *o, char *dst, size_t cap) {
    if (!o || (o->type != MSGPACK_OBJECT_STR && o->type != MSGPACK_OBJECT_BIN)) return false;
    size_t n = o->via.str.size < cap - 1 ? o->via.str.size : cap - 1;
    memcpy(dst, o->via.str.ptr, n);
    dst[n] = '\0';
    return true;
}

static bool obj_num(const msgpack_object *o, double *out) {
    if (!o) return false;
    switch (o->type) {
    case MSGPACK_OBJECT_POSITIVE_INTEGER:
        *out = (double)o->via.u64;
        return true;
    case MSGPACK_OBJECT_NEGATIVE_INTEGER:
        *out = (double)o->via.i64;
        return true;
    case MSGPACK_OBJECT_FLOAT32:
    case MSGPACK_OBJECT_FLOAT64:
        *out = o->via.f64;
        return true;
    default:
        return false;
    }
}

static bool obj_int(const msgpack_object *o, int64_t *out) {
    double d;
    if (!o) return false;
    if (o->type == MSGPACK_OBJECT_POSITIVE_INTEGER && o->via.u64 <= INT64_MAX)
        return *out = (int64_t)o->via.u64, true;
    if (o->type == MSGPACK_OBJECT_NEGATIVE_INTEGER) return *out = o->via.i64, true;
    if (obj_num(o, &d) && d > -9.2e18 && d < 9.2e18) return *out = (int64_t)d, true;
    return false;
}

static bool obj_bool(const msgpack_object *o, bool *out) {
    if (!o || o->type != MSGPACK_OBJECT_BOOLEAN) return false;
    *out = o->via.boolean;
    return true;
}

static dsc_status lacks(const char *method, const char *key, dsc_error *err) {
    return dsc_error_set(err, DSC_PARSE, "malformed reply to %s: no valid '%s'", method, key);
}

/* Optional getters leave *out unchanged when the key is absent or mistyped. */
static void opt_str(const msgpack_object *m, const char *key, char *dst, size_t cap) {
    dsc__obj_str(dsc__map_get(m, key), dst, cap);
}
static void opt_num(const msgpack_object *m, const char *key, double *out) {
    obj_num(dsc__map_get(m, key), out);
}
static void opt_int(const msgpack_object *m, const char *key, int64_t *out) {
    obj_int(dsc__map_get(m, key), out);
}
static void opt_bool(const msgpack_object *m, const char *key, bool *out) {
    obj_bool(dsc__map_get(m, key), out);
}

/* An id the caller hands back to us (reservation): truncating it would break settle. */
static dsc_status id_str(const msgpack_object *m, const char *method, const char *key, char *dst,
                         size_t cap, dsc_error *err) {
    const msgpack_object *o = dsc__map_get(m, key);
    if (!dsc__obj_str(o, dst, cap)) return lacks(method, key, err);
    if (o->via.str.size >= cap)
        return dsc_error_set(err, DSC_PARSE, "malformed reply to %s: '%s' longer than %zu bytes",
                             method, key, cap - 1);
    return DSC_OK;
}

static void decode_range(const msgpack_object *m, dsc_client_range *r) {
    opt_num(m, "min", &r->min);
    opt_num(m, "max", &r->max);
}

static void decode_impacts(const msgpack_object *m, dsc_client_impacts *im) {
    decode_range(dsc__map_get(m, "energy_kwh"), &im->energy_kwh);
    decode_range(dsc__map_get(m, "gwp_kgco2eq"), &im->gwp_kgco2eq);
    decode_range(dsc__map_get(m, "adpe_kgsbeq"), &im->adpe_kgsbeq);
    decode_range(dsc__map_get(m, "pe_mj"), &im->pe_mj);
    decode_range(dsc__map_get(m, "wcf_l"), &im->wcf_l);
}

static void decode_budget(const msgpack_object *m, dsc_client_budget *b) {
    opt_str(m, "selector", b->selector, sizeof b->selector);
    opt_str(m, "counter", b->counter, sizeof b->counter);
    opt_str(m, "metric", b->metric, sizeof b->metric);
    opt_str(m, "window", b->window, sizeof b->window);
    opt_str(m, "unit", b->unit, sizeof b->unit);
    opt_num(m, "limit", &b->limit);
    opt_num(m, "used", &b->used);
    opt_num(m, "held", &b->held);
    opt_num(m, "remaining", &b->remaining);
    opt_num(m, "request", &b->request);
    opt_int(m, "resets_at", &b->resets_at);
    opt_bool(m, "would_exceed", &b->would_exceed);
}

static dsc_status decode_budgets(const msgpack_object *m, const char *method,
                                 dsc_client_budgets *out, dsc_error *err) {
    const msgpack_object *a = dsc__map_get(m, "budgets");
    if (!a || a->type != MSGPACK_OBJECT_ARRAY) return lacks(method, "budgets", err);
    out->count = 0;
    out->items = a->via.array.size ? calloc(a->via.array.size, sizeof *out->items) : NULL;
    if (a->via.array.size && !out->items)
        return dsc_error_set(err, DSC_NOMEM, "out of memory for %u budgets", a->via.array.size);
    for (uint32_t i = 0; i < a->via.array.size; i++) {
        if (a->via.array.ptr[i].type != MSGPACK_OBJECT_MAP) return lacks(method, "budgets[]", err);
        decode_budget(&a->via.array.ptr[i], &out->items[out->count++]);
    }
    return DSC_OK;
}

static dsc_status decode_decision(const msgpack_object *m, dsc_decision *out, dsc_error *err) {
    char d[16];
    if (!dsc__obj_str(dsc__map_get(m, "decision"), d, sizeof d))
        return lacks("check", "decision", err);
    if (strcmp(d, "allow") == 0)
        *out = DSC_DECISION_ALLOW;
    else if (strcmp(d, "throttle") == 0)
        *out = DSC_DECISION_THROTTLE;
    else if (strcmp(d, "refuse") == 0)
        *out = DSC_DECISION_REFUSE;
    else
        return dsc_error_set(err, DSC_PARSE, "malformed reply to check: decision '%s'", d);
    return DSC_OK;
}

static dsc_status dec_check(const msgpack_object *m, void *out, dsc_error *err) {
    dsc_client_check_result *r = out;
    dsc_status st = decode_decision(m, &r->decision, err);
    if (st != DSC_OK) return st;
    opt_str(m, "reason", r->reason, sizeof r->reason);
    opt_str(m, "policy", r->policy, sizeof r->policy);
    opt_str(m, "policy_version", r->policy_version, sizeof r->policy_version);
    opt_str(m, "decision_id", r->decision_id, sizeof r->decision_id);
    opt_str(m, "zone", r->zone, sizeof r->zone);
    decode_impacts(dsc__map_get(m, "estimate"), &r->estimate);
    opt_num(m, "retry_after_s", &r->retry_after_s);
    const msgpack_object *sg = dsc__map_get(m, "suggest");
    opt_str(sg, "provider", r->suggest_provider, sizeof r->suggest_provider);
    opt_str(sg, "model", r->suggest_model, sizeof r->suggest_model);
    if (dsc__map_get(m, "reservation") &&
        (st = id_str(m, "check", "reservation", r->reservation, sizeof r->reservation, err)))
        return st;
    opt_int(m, "expires_at", &r->expires_at);
    opt_bool(m, "unenforced", &r->unenforced);
    if (!dsc__map_get(m, "budgets")) return DSC_OK; /* not asked for: none */
    return decode_budgets(m, "check", &r->budgets, err);
}

static void clear_check(void *out) {
    dsc_client_check_result_clear(out);
}

static const struct {
    const char *key;
    size_t offset;
} amount_keys[] = {
    {"energy_wh", offsetof(dsc_client_amounts, energy_wh)},
    {"gco2e", offsetof(dsc_client_amounts, gco2e)},
    {"water_ml", offsetof(dsc_client_amounts, water_ml)},
    {"pe_mj", offsetof(dsc_client_amounts, pe_mj)},
    {"cost", offsetof(dsc_client_amounts, cost)},
    {"tokens", offsetof(dsc_client_amounts, tokens)},
    {"requests", offsetof(dsc_client_amounts, requests)},
};

static dsc_status dec_settle(const msgpack_object *m, void *out, dsc_error *err) {
    dsc_client_settle_result *r = out;
    dsc_status st = id_str(m, "settle", "reservation", r->reservation, sizeof r->reservation, err);
    if (st != DSC_OK) return st;
    opt_str(m, "settled", r->settled, sizeof r->settled);
    const msgpack_object *ch = dsc__map_get(m, "charged");
    if (!ch || ch->type != MSGPACK_OBJECT_MAP) return lacks("settle", "charged", err);
    for (size_t i = 0; i < sizeof amount_keys / sizeof amount_keys[0]; i++)
        opt_num(ch, amount_keys[i].key, (double *)((char *)&r->charged + amount_keys[i].offset));
    decode_impacts(dsc__map_get(m, "estimate"), &r->estimate);
    return decode_budgets(m, "settle", &r->budgets, err);
}

static void clear_settle(void *out) {
    dsc_client_settle_result_clear(out);
}

static dsc_status dec_cancel(const msgpack_object *m, void *out, dsc_error *err) {
    dsc_client_cancel_result *r = out;
    opt_str(m, "reservation", r->reservation, sizeof r->reservation);
    if (!obj_bool(dsc__map_get(m, "released"), &r->released))
        return lacks("cancel", "released", err);
    return DSC_OK;
}

static dsc_status dec_estimate(const msgpack_object *m, void *out, dsc_error *err) {
    dsc_client_estimate_result *r = out;
    const msgpack_object *e = dsc__map_get(m, "estimate");
    if (!e || e->type != MSGPACK_OBJECT_MAP) return lacks("estimate", "estimate", err);
    decode_impacts(e, &r->estimate);
    decode_impacts(dsc__map_get(m, "usage"), &r->usage);
    decode_impacts(dsc__map_get(m, "embodied"), &r->embodied);
    opt_str(m, "zone", r->zone, sizeof r->zone);
    opt_str(m, "method", r->method, sizeof r->method);
    const msgpack_object *w = dsc__map_get(m, "warnings");
    if (w && w->type == MSGPACK_OBJECT_ARRAY)
        for (uint32_t i = 0; i < w->via.array.size && r->n_warnings < 8; i++)
            if (dsc__obj_str(&w->via.array.ptr[i], r->warnings[r->n_warnings], 48)) r->n_warnings++;
    return DSC_OK;
}

static dsc_status dec_budgets(const msgpack_object *m, void *out, dsc_error *err) {
    return decode_budgets(m, "budget call", out, err);
}

static void clear_budgets(void *out) {
    dsc_client_budgets_clear(out);
}

static dsc_status dec_budget_set(const msgpack_object *m, void *out, dsc_error *err) {
    dsc_client_budget_set_result *r = out;
    const msgpack_object *b = dsc__map_get(m, "budget");
    if (!b || b->type != MSGPACK_OBJECT_MAP) return lacks("budget.set", "budget", err);
    decode_budget(b, &r->budget);
    opt_bool(m, "created", &r->created);
    return DSC_OK;
}

static dsc_status dec_deleted(const msgpack_object *m, void *out, dsc_error *err) {
    (void)out;
    bool deleted = false;
    if (!obj_bool(dsc__map_get(m, "deleted"), &deleted) || !deleted)
        return lacks("budget.delete", "deleted", err);
    return DSC_OK;
}

static dsc_status dec_grid(const msgpack_object *m, void *out, dsc_error *err) {
    dsc_client_grid_result *r = out;
    if (!dsc__obj_str(dsc__map_get(m, "zone"), r->zone, sizeof r->zone))
        return lacks("grid.set", "zone", err);
    opt_num(m, "gco2e_per_kwh", &r->gco2e_per_kwh);
    opt_int(m, "valid_until", &r->valid_until);
    return DSC_OK;
}

static dsc_status dec_reload(const msgpack_object *m, void *out, dsc_error *err) {
    dsc_client_reload_result *r = out;
    opt_str(m, "policy_version", r->policy_version, sizeof r->policy_version);
    const msgpack_object *p = dsc__map_get(m, "policies");
    if (!p || p->type != MSGPACK_OBJECT_ARRAY) return lacks("policy.reload", "policies", err);
    if (p->via.array.size == 0) return DSC_OK;
    r->policies = calloc(p->via.array.size, sizeof *r->policies);
    if (!r->policies) return dsc_error_set(err, DSC_NOMEM, "out of memory for policy names");
    for (uint32_t i = 0; i < p->via.array.size; i++) {
        const msgpack_object *s = &p->via.array.ptr[i];
        if (s->type != MSGPACK_OBJECT_STR) return lacks("policy.reload", "policies[]", err);
        char *name = malloc(s->via.str.size + 1);
        if (!name) return dsc_error_set(err, DSC_NOMEM, "out of memory for policy names");
        dsc__obj_str(s, name, s->via.str.size + 1);
        r->policies[r->n_policies++] = name;
    }
    return DSC_OK;
}

static void clear_reload(void *out) {
    dsc_client_reload_result_clear(out);
}

static dsc_status dec_ping(const msgpack_object *m, void *out, dsc_error *err) {
    dsc_client_ping_result *r = out;
    bool pong = false;
    if (!obj_bool(dsc__map_get(m, "pong"), &pong) || !pong) return lacks("ping", "pong", err);
    opt_str(m, "version", r->version, sizeof r->version);
    opt_num(m, "time", &r->time);
    return DSC_OK;
}

static void opt_u64(const msgpack_object *m, const char *key, uint64_t *out) {
    int64_t v = 0;
    if (obj_int(dsc__map_get(m, key), &v) && v >= 0) *out = (uint64_t)v;
}

static dsc_status dec_stats(const msgpack_object *m, void *out, dsc_error *err) {
    dsc_client_stats_result *r = out;
    if (!dsc__obj_str(dsc__map_get(m, "version"), r->version, sizeof r->version))
        return lacks("stats", "version", err);
    opt_str(m, "policy_version", r->policy_version, sizeof r->policy_version);
    opt_num(m, "uptime_s", &r->uptime_s);
    opt_u64(m, "workers", &r->workers);
    opt_u64(m, "connections", &r->connections);
    opt_u64(m, "connections_rejected", &r->connections_rejected);
    opt_u64(m, "protocol_errors", &r->protocol_errors);
    opt_u64(m, "ledger_writes", &r->ledger_writes);
    opt_u64(m, "requests", &r->requests);
    opt_u64(m, "errors", &r->errors);
    opt_u64(m, "unenforced", &r->unenforced);
    const msgpack_object *d = dsc__map_get(m, "decisions");
    opt_u64(d, "allow", &r->allow);
    opt_u64(d, "throttle", &r->throttle);
    opt_u64(d, "refuse", &r->refuse);
    return DSC_OK;
}

static dsc_status enc_models(msgpack_packer *pk, const void *rq, const dsc__encode_ctx *ctx,
                             dsc_error *err) {
    (void)ctx;
    return enc_one_str(pk, "provider", rq, false, err);
}

/* The array under key as count items of size bytes, each decoded by fn. */
static dsc_status decode_list(const msgpack_object *m, const char *method, const char *key,
                              size_t size, void **items, size_t *count,
                              void (*fn)(const msgpack_object *, void *), dsc_error *err) {
    const msgpack_object *a = dsc__map_get(m, key);
    if (!a || a->type != MSGPACK_OBJECT_ARRAY) return lacks(method, key, err);
    *count = 0;
    if (a->via.array.size == 0) return DSC_OK;
    char *p = calloc(a->via.array.size, size);
    if (!p) return dsc_error_set(err, DSC_NOMEM, "out of memory for %u %s", a->via.array.size, key);
    *items = p;
    for (uint32_t i = 0; i < a->via.array.size; i++) {
        if (a->via.array.ptr[i].type != MSGPACK_OBJECT_MAP) return lacks(method, key, err);
        fn(&a->via.array.ptr[i], p + (*count)++ * size);
    }
    return DSC_OK;
}

static void decode_model(const msgpack_object *m, void *out) {
    dsc_client_model *x = out;
    opt_str(m, "provider", x->provider, sizeof x->provider);
    opt_str(m, "model", x->model, sizeof x->model);
}

static dsc_status dec_models(const msgpack_object *m, void *out, dsc_error *err) {
    dsc_client_models *r = out;
    return decode_list(m, "models.list", "models", sizeof *r->items, (void **)&r->items, &r->count,
                       decode_model, err);
}

static void clear_models(void *out) {
    dsc_client_models_clear(out);
}

static void decode_zone(const msgpack_object *m, void *out) {
    dsc_client_zone *x = out;
    opt_str(m, "zone", x->zone, sizeof x->zone);
    opt_num(m, "gco2e_per_kwh", &x->gco2e_per_kwh);
    x->current_gco2e_per_kwh = x->gco2e_per_kwh;
    opt_num(m, "current_gco2e_per_kwh", &x->current_gco2e_per_kwh);
    opt_str(m, "source", x->source, sizeof x->source);
}

static dsc_status dec_zones(const msgpack_object *m, void *out, dsc_error *err) {
    dsc_client_zones *r = out;
    return decode_list(m, "zones.list", "zones", sizeof *r->items, (void **)&r->items, &r->count,
                       decode_zone, err);
}

static void clear_zones(void *out) {
    dsc_client_zones_clear(out);
}

static void decode_key(const msgpack_object *m, void *out) {
    dsc_client_key *k = out;
    opt_str(m, "key_id", k->key_id, sizeof k->key_id);
    opt_str(m, "role", k->role, sizeof k->role);
    opt_str(m, "scope", k->scope, sizeof k->scope);
    opt_str(m, "label", k->label, sizeof k->label);
    opt_str(m, "created_by", k->created_by, sizeof k->created_by);
    opt_int(m, "created_at", &k->created_at);
    opt_int(m, "expires_at", &k->expires_at);
    opt_int(m, "revoked_at", &k->revoked_at);
}

static dsc_status dec_key_create(const msgpack_object *m, void *out, dsc_error *err) {
    dsc_client_key *k = out;
    const msgpack_object *info = dsc__map_get(m, "key");
    if (info && info->type == MSGPACK_OBJECT_MAP) decode_key(info, k);
    dsc_status st = id_str(m, "key.create", "key_id", k->key_id, sizeof k->key_id, err);
    if (st == DSC_OK) st = id_str(m, "key.create", "token", k->token, sizeof k->token, err);
    return st;
}

static dsc_status dec_keys(const msgpack_object *m, void *out, dsc_error *err) {
    dsc_client_keys *r = out;
    return decode_list(m, "key.list", "keys", sizeof *r->items, (void **)&r->items, &r->count,
                       decode_key, err);
}

static void clear_keys(void *out) {
    dsc_client_keys_clear(out);
}

static dsc_status dec_revoked(const msgpack_object *m, void *out, dsc_error *err) {
    (void)out;
    bool revoked = false;
    if (!obj_bool(dsc__map_get(m, "revoked"), &revoked) || !revoked)
        return lacks("key.revoke", "revoked", err);
    return DSC_OK;
}

static void decode_verdicts(const msgpack_object *a, dsc_client_decision *d) {
    if (!a || a->type != MSGPACK_OBJECT_ARRAY) return;
    for (uint32_t i = 0; i < a->via.array.size && d->n_verdicts < DSC_CLIENT_VERDICTS_MAX; i++) {
        const msgpack_object *v = &a->via.array.ptr[i];
        dsc_client_verdict *x = &d->verdicts[d->n_verdicts++];
        opt_str(v, "policy", x->policy, sizeof x->policy);
        opt_str(v, "outcome", x->outcome, sizeof x->outcome);
        opt_str(v, "reason", x->reason, sizeof x->reason);
        opt_bool(v, "shadow", &x->shadow);
    }
}

static void decode_tags(const msgpack_object *m, dsc_client_decision *d) {
    if (!m || m->type != MSGPACK_OBJECT_MAP) return;
    for (uint32_t i = 0; i < m->via.map.size && d->n_tags < DSC_CLIENT_TAGS_MAX; i++) {
        char(*t)[64] = d->tags[d->n_tags];
        if (dsc__obj_str(&m->via.map.ptr[i].key, t[0], 64) &&
            dsc__obj_str(&m->via.map.ptr[i].val, t[1], 64))
            d->n_tags++;
    }
}

static void decode_journal_entry(const msgpack_object *m, void *out) {
    dsc_client_decision *d = out;
    static const char *const strs[] = {"decision_id", "key_id", "purpose",        "purpose_class",
                                       "provider",    "model",  "zone",           "reservation",
                                       "outcome",     "policy", "policy_version", "reason"};
    char *dst[] = {d->decision_id, d->key_id, d->purpose,        d->purpose_class,
                   d->provider,    d->model,  d->zone,           d->reservation,
                   d->outcome,     d->policy, d->policy_version, d->reason};
    size_t cap[] = {sizeof d->decision_id,   sizeof d->key_id,         sizeof d->purpose,
                    sizeof d->purpose_class, sizeof d->provider,       sizeof d->model,
                    sizeof d->zone,          sizeof d->reservation,    sizeof d->outcome,
                    sizeof d->policy,        sizeof d->policy_version, sizeof d->reason};
    for (size_t i = 0; i < sizeof strs / sizeof strs[0]; i++)
        opt_str(m, strs[i], dst[i], cap[i]);
    const msgpack_object *s = dsc__map_get(m, "subject");
    opt_str(s, "org", d->org, sizeof d->org);
    opt_str(s, "team", d->team, sizeof d->team);
    opt_str(s, "user", d->user, sizeof d->user);
    opt_str(s, "key", d->key, sizeof d->key);
    opt_num(m, "at", &d->at);
    opt_int(m, "seq", &d->seq);
    opt_int(m, "input_tokens", &d->input_tokens);
    opt_int(m, "output_tokens", &d->output_tokens);
    const msgpack_object *e = dsc__map_get(m, "estimate");
    opt_num(e, "energy_wh", &d->est_energy_wh);
    opt_num(e, "gco2e", &d->est_gco2e);
    opt_num(e, "water_ml", &d->est_water_ml);
    decode_verdicts(dsc__map_get(m, "verdicts"), d);
    decode_tags(dsc__map_get(m, "tags"), d);
}

static dsc_status dec_decisions(const msgpack_object *m, void *out, dsc_error *err) {
    dsc_client_decisions *r = out;
    opt_int(m, "next", &r->next);
    return decode_list(m, "decisions.list", "decisions", sizeof *r->items, (void **)&r->items,
                       &r->count, decode_journal_entry, err);
}

static void clear_decisions(void *out) {
    dsc_client_decisions_clear(out);
}

static void decode_admin_change(const msgpack_object *m, void *out) {
    dsc_client_admin_change *c = out;
    opt_int(m, "seq", &c->seq);
    opt_num(m, "at", &c->at);
    opt_str(m, "by_key", c->by_key, sizeof c->by_key);
    opt_str(m, "action", c->action, sizeof c->action);
    opt_str(m, "target", c->target, sizeof c->target);
    opt_str(m, "detail", c->detail, sizeof c->detail);
}

static dsc_status dec_admin_journal(const msgpack_object *m, void *out, dsc_error *err) {
    dsc_client_admin_journal *r = out;
    opt_int(m, "next", &r->next);
    return decode_list(m, "admin_journal.list", "changes", sizeof *r->items, (void **)&r->items,
                       &r->count, decode_admin_change, err);
}

static void clear_admin_journal(void *out) {
    dsc_client_admin_journal_clear(out);
}

static void decode_report_row(const msgpack_object *m, void *out) {
    dsc_client_report_row *r = out;
    opt_int(m, "period_start", &r->period_start);
    opt_str(m, "group", r->group, sizeof r->group);
    opt_num(m, "value", &r->value);
}

static dsc_status dec_report(const msgpack_object *m, void *out, dsc_error *err) {
    dsc_client_report *r = out;
    opt_str(m, "by", r->by, sizeof r->by);
    opt_str(m, "period", r->period, sizeof r->period);
    opt_str(m, "metric", r->metric, sizeof r->metric);
    opt_str(m, "unit", r->unit, sizeof r->unit);
    opt_int(m, "since", &r->since);
    opt_int(m, "until", &r->until);
    obj_bool(dsc__map_get(m, "truncated"), &r->truncated);
    return decode_list(m, "report", "rows", sizeof *r->rows, (void **)&r->rows, &r->count,
                       decode_report_row, err);
}

static void clear_report(void *out) {
    dsc_client_report_clear(out);
}

static dsc_status dec_auth(const msgpack_object *m, void *out, dsc_error *err) {
    (void)out;
    bool admin = false; /* false for a key that is not an admin's: still authenticated */
    if (!obj_bool(dsc__map_get(m, "admin"), &admin)) return lacks("auth", "admin", err);
    return DSC_OK;
}

/* The method table, indexed by dsc_client_method (then the internal DSC__CALL_AUTH).
 * retry_safe: sending the request twice has the effect of sending it once (check is,
 * because every check carries a request_id; settle and cancel are idempotent). Only
 * budget.delete is not: a second one answers unknown_budget. */
static const dsc__method methods[DSC__CALL_COUNT] = {
    [DSC_CALL_CHECK] = {"check", enc_check, dec_check, sizeof(dsc_client_check_result), clear_check,
                        true},
    [DSC_CALL_SETTLE] = {"settle", enc_settle, dec_settle, sizeof(dsc_client_settle_result),
                         clear_settle, true},
    [DSC_CALL_CANCEL] = {"cancel", enc_cancel, dec_cancel, sizeof(dsc_client_cancel_result), NULL,
                         true},
    [DSC_CALL_ESTIMATE] = {"estimate", enc_estimate, dec_estimate,
                           sizeof(dsc_client_estimate_result), NULL, true},
    [DSC_CALL_BUDGET_GET] = {"budget.get", enc_budget_get, dec_budgets, sizeof(dsc_client_budgets),
                             clear_budgets, true},
    [DSC_CALL_BUDGET_LIST] = {"budget.list", enc_budget_list, dec_budgets,
                              sizeof(dsc_client_budgets), clear_budgets, true},
    [DSC_CALL_BUDGET_SET] = {"budget.set", enc_budget_set, dec_budget_set,
                             sizeof(dsc_client_budget_set_result), NULL, true},
    [DSC_CALL_BUDGET_DELETE] = {"budget.delete", enc_budget_delete, dec_deleted, 0, NULL, false},
    [DSC_CALL_GRID_SET] = {"grid.set", enc_grid_set, dec_grid, sizeof(dsc_client_grid_result), NULL,
                           true},
    [DSC_CALL_POLICY_RELOAD] = {"policy.reload", enc_none, dec_reload,
                                sizeof(dsc_client_reload_result), clear_reload, true},
    [DSC_CALL_PING] = {"ping", enc_none, dec_ping, sizeof(dsc_client_ping_result), NULL, true},
    [DSC_CALL_STATS] = {"stats", enc_none, dec_stats, sizeof(dsc_client_stats_result), NULL, true},
    [DSC_CALL_MODELS_LIST] = {"models.list", enc_models, dec_models, sizeof(dsc_client_models),
                              clear_models, true},
    [DSC_CALL_ZONES_LIST] = {"zones.list", enc_none, dec_zones, sizeof(dsc_client_zones),
                             clear_zones, true},
    [DSC_CALL_KEY_CREATE] = {"key.create", enc_key_create, dec_key_create, sizeof(dsc_client_key),
                             NULL, false},
    [DSC_CALL_KEY_LIST] = {"key.list", enc_key_list, dec_keys, sizeof(dsc_client_keys), clear_keys,
                           true},
    [DSC_CALL_KEY_REVOKE] = {"key.revoke", enc_key_revoke, dec_revoked, 0, NULL, true},
    [DSC_CALL_DECISIONS_LIST] = {"decisions.list", enc_decisions, dec_decisions,
                                 sizeof(dsc_client_decisions), clear_decisions, true},
    [DSC_CALL_REPORT] = {"report", enc_report, dec_report, sizeof(dsc_client_report), clear_report,
                         true},
    [DSC_CALL_ADMIN_JOURNAL_LIST] = {"admin_journal.list", enc_admin_journal, dec_admin_journal,
                                     sizeof(dsc_client_admin_journal), clear_admin_journal, true},
    [DSC__CALL_AUTH] = {"auth", enc_auth, dec_auth, 0, NULL, true},
};

const dsc__method *dsc__method_get(int m) {
    return m >= 0 && m < DSC__CALL_COUNT ? &methods[m] : NULL;
}

/* ------------------------------------------------------------------ framing -- */

void dsc__reply_limits(size_t max_reply, dsc_rpc_limits *lim) {
    lim->max_message_bytes = max_reply;
    lim->max_depth = DSC_RPC_DEPTH_CAP;
    lim->max_items = UINT32_MAX / 2; /* a map's 2 * count still fits the scanner's counters */
    lim->max_objects = UINT32_MAX;
    lim->max_string_bytes = UINT32_MAX;
}

/* ------------------------------------------------------------ result frees -- */

void dsc_client_keys_clear(dsc_client_keys *k) {
    if (!k) return;
    free(k->items);
    k->items = NULL;
    k->count = 0;
}

void dsc_client_report_clear(dsc_client_report *r) {
    if (!r) return;
    free(r->rows);
    r->rows = NULL;
    r->count = 0;
}

void dsc_client_decisions_clear(dsc_client_decisions *d) {
    if (!d) return;
    free(d->items);
    d->items = NULL;
    d->count = 0;
    d->next = 0;
}

void dsc_client_admin_journal_clear(dsc_client_admin_journal *j) {
    if (!j) return;
    free(j->items);
    j->items = NULL;
    j->count = 0;
    j->next = 0;
}

void dsc_client_budgets_clear(dsc_client_budgets *b) {
    if (!b) return;
    free(b->items);
    b->items = NULL;
    b->count = 0;
}

void dsc_client_models_clear(dsc_client_models *m) {
    if (!m) return;
    free(m->items);
    m->items = NULL;
    m->count = 0;
}

void dsc_client_zones_clear(dsc_client_zones *z) {
    if (!z) return;
    free(z->items);
    z->items = NULL;
    z->count = 0;
}

void dsc_client_check_result_clear(dsc_client_check_result *r) {
    if (!r) return;
    dsc_client_budgets_clear(&r->budgets);
    memset(r, 0, sizeof *r);
}

void dsc_client_settle_result_clear(dsc_client_settle_result *r) {
    if (!r) return;
    dsc_client_budgets_clear(&r->budgets);
    memset(r, 0, sizeof *r);
}

void dsc_client_reload_result_clear(dsc_client_reload_result *r) {
    if (!r) return;
    for (size_t i = 0; i < r->n_policies; i++)
        free(r->policies[i]);
    free(r->policies);
    memset(r, 0, sizeof *r);
}

const char *dsc_decision_name(dsc_decision d) {
    switch (d) {
    case DSC_DECISION_ALLOW:
        return "allow";
    case DSC_DECISION_THROTTLE:
        return "throttle";
    case DSC_DECISION_REFUSE:
        return "refuse";
    }
    return "?";
}
