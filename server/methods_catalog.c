/*
 * methods_catalog.c - handlers over the catalogue, the grid and the policy set:
 * estimate, models.list, zones.list, grid.set (admin), policy.reload (admin).
 *
 * Each handler works on the worker's current state (dispatch syncs it: M_STATE), so a reload
 * never changes the catalogue under a request. The estimate's params reader is shared
 * with check and settle, like the packer of its context (context.c).
 */
#include "methods.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

/* "WxH" (e.g. "1024x1024") into a pixel count. */
static dsc_status read_image_size(const msgpack_object *p, int64_t *pixels, dsc_error *err) {
    char text[32];
    dsc_status st = dsc_rpc_get_str(p, "image_size", false, text, sizeof text, err);
    if (st != DSC_OK || !text[0]) return st;
    unsigned w = 0, h = 0;
    char tail = 0;
    if (sscanf(text, "%5ux%5u%c", &w, &h, &tail) != 2 || w == 0 || h == 0)
        return dsc_error_set(err, DSC_BAD_REQUEST,
                             "field 'image_size': '%s' is not WIDTHxHEIGHT (e.g. 1024x1024)", text);
    *pixels = (int64_t)w * h;
    return DSC_OK;
}

/* A named choice: absent leaves *out; unknown is a bad request naming the field. */
static dsc_status read_choice(const msgpack_object *p, const char *key, dsc_choice kind, int *out,
                              dsc_error *err) {
    char text[32];
    dsc_status st = dsc_rpc_get_str(p, key, false, text, sizeof text, err);
    if (st != DSC_OK || !text[0]) return st;
    if (dsc_estimate_choice_parse(kind, text, out) != DSC_OK)
        return dsc_error_set(err, DSC_BAD_REQUEST, "field '%s': unknown value '%s' (%s)", key, text,
                             dsc_estimate_choice_names(kind));
    return DSC_OK;
}

static dsc_status read_choices(const msgpack_object *p, dsc_estimate_input *in, dsc_error *err) {
    int method = in->method, scope = 0, carbon = 0, water = 0, modality = 0;
    dsc_status st;
    if ((st = read_choice(p, "method", DSC_CHOICE_METHOD, &method, err)) ||
        (st = read_choice(p, "scope", DSC_CHOICE_SCOPE, &scope, err)) ||
        (st = read_choice(p, "carbon", DSC_CHOICE_CARBON, &carbon, err)) ||
        (st = read_choice(p, "water", DSC_CHOICE_WATER, &water, err)) ||
        (st = read_choice(p, "modality", DSC_CHOICE_MODALITY, &modality, err)))
        return st;
    in->method = (dsc_method)method;
    in->scope = (dsc_scope)scope;
    in->carbon = (dsc_carbon)carbon;
    in->water = (dsc_water)water;
    in->modality = (dsc_modality)modality;
    return DSC_OK;
}

/* The optional fields of an estimate, most of them absent in a request: picked from
 * the params in one pass, then read from the few present. */
static const dsc_rpc_name extra_names[] = {DSC_RPC_NAME("method"),
                                           DSC_RPC_NAME("scope"),
                                           DSC_RPC_NAME("carbon"),
                                           DSC_RPC_NAME("water"),
                                           DSC_RPC_NAME("modality"),
                                           DSC_RPC_NAME("cached_input_tokens"),
                                           DSC_RPC_NAME("reasoning_tokens"),
                                           DSC_RPC_NAME("images"),
                                           DSC_RPC_NAME("image_size"),
                                           DSC_RPC_NAME("parameters_b"),
                                           DSC_RPC_NAME("active_parameters_b"),
                                           DSC_RPC_NAME("total_parameters_b")};
#define EXTRA_NAMES (sizeof extra_names / sizeof extra_names[0])

dsc_status dsc__read_estimate_extras(const dsc__call *c, const msgpack_object *params,
                                     dsc_estimate_input *in, dsc_error *err) {
    dsc_status st;
    msgpack_object_kv kv[EXTRA_NAMES];
    msgpack_object picked;
    const msgpack_object *p = dsc_rpc_pick(params, extra_names, EXTRA_NAMES, kv, &picked);
    in->method = c->srv->cfg.estimate_method;
    if ((st = read_choices(p, in, err)) ||
        (st = dsc_rpc_get_int(p, "cached_input_tokens", false, 0, DSC__TOKENS_MAX,
                              &in->cached_input_tokens, err)) ||
        (st = dsc_rpc_get_int(p, "reasoning_tokens", false, 0, DSC__TOKENS_MAX,
                              &in->reasoning_tokens, err)) ||
        (st = dsc_rpc_get_int(p, "images", false, 0, 100000, &in->images, err)) ||
        (st = read_image_size(p, &in->image_pixels, err)) ||
        (st = dsc_rpc_get_num(p, "parameters_b", false, 0, 1e6, &in->parameters_b, err)) ||
        (st = dsc_rpc_get_num(p, "active_parameters_b", false, 0, 1e6, &in->active_parameters_b,
                              err)) ||
        (st =
             dsc_rpc_get_num(p, "total_parameters_b", false, 0, 1e6, &in->total_parameters_b, err)))
        return st;
    in->grid = c->srv->grid;
    in->now = dsc__now_us() / 1000000;
    return DSC_OK;
}

dsc_status dsc__read_estimate_args(const dsc__call *c, const msgpack_object *p,
                                   dsc__estimate_args *a, bool outputs_required, dsc_error *err) {
    memset(a, 0, sizeof *a);
    dsc_status st;
    if ((st = dsc_rpc_get_str(p, "provider", true, a->provider, sizeof a->provider, err)) ||
        (st = dsc_rpc_get_str(p, "model", true, a->model, sizeof a->model, err)) ||
        (st = dsc_rpc_get_int(p, "input_tokens", false, 0, DSC__TOKENS_MAX, &a->in.input_tokens,
                              err)) ||
        (st = dsc_rpc_get_int(p, "output_tokens", outputs_required, 0, DSC__TOKENS_MAX,
                              &a->in.output_tokens, err)) ||
        (st = dsc_rpc_get_num(p, "latency_s", false, 0, 86400, &a->in.latency_s, err)) ||
        (st = dsc_rpc_get_str(p, "zone", false, a->zone, sizeof a->zone, err)) ||
        (st = dsc__read_estimate_extras(c, p, &a->in, err)))
        return st;
    a->in.provider = a->provider;
    a->in.model = a->model;
    a->in.zone = a->zone[0] ? a->zone : NULL;
    return DSC_OK;
}

dsc_status dsc__m_estimate(dsc__call *c, const msgpack_object *p, msgpack_packer *pk,
                           dsc_error *err) {
    dsc__estimate_args a;
    dsc_estimate est;
    dsc_status st = dsc__read_estimate_args(c, p, &a, true, err);
    if (st == DSC_OK) st = dsc_estimate_compute(c->w->state->catalog, &a.in, &est, err);
    if (st != DSC_OK) return st;
    msgpack_pack_map(pk, 4 + DSC__ESTIMATE_CONTEXT_KEYS);
    dsc__pack_key(pk, "estimate");
    dsc__pack_impacts(pk, &est.total);
    dsc__pack_key(pk, "usage");
    dsc__pack_impacts(pk, &est.usage);
    dsc__pack_key(pk, "embodied");
    dsc__pack_impacts(pk, &est.embodied);
    dsc__pack_key(pk, "zone");
    dsc_rpc_pack_cstr(pk, est.zone);
    dsc__context_pack(pk, &c->w->context_cache, &est);
    return DSC_OK;
}

static dsc_status unknown_provider(const dsc_catalog *cat, const char *provider, dsc_error *err) {
    const char *names[DSC_SUGGEST_MAX];
    char hint[160];
    size_t n = dsc_catalog_suggest_providers(cat, provider, names, DSC_SUGGEST_MAX);
    return dsc_error_set(err, DSC_UNKNOWN_PROVIDER, "field 'provider': unknown provider '%s'%s",
                         provider, dsc_catalog_format_suggestions(names, n, hint, sizeof hint));
}

dsc_status dsc__m_models_list(dsc__call *c, const msgpack_object *p, msgpack_packer *pk,
                              dsc_error *err) {
    char provider[DSC_POLICY_NAME_MAX];
    dsc_status st = dsc_rpc_get_str(p, "provider", false, provider, sizeof provider, err);
    if (st != DSC_OK) return st;
    const dsc_catalog *cat = c->w->state->catalog;
    const dsc_model *models;
    size_t n;
    if (provider[0]) {
        models = dsc_catalog_provider_models(cat, provider, &n);
        if (n == 0) return unknown_provider(cat, provider, err);
    } else {
        n = dsc_catalog_model_count(cat);
        models = NULL;
    }
    msgpack_pack_map(pk, 1);
    dsc__pack_key(pk, "models");
    msgpack_pack_array(pk, n);
    for (size_t i = 0; i < n; i++) {
        const dsc_model *m = models ? &models[i] : dsc_catalog_model_at(cat, i);
        msgpack_pack_map(pk, 2);
        dsc__pack_key(pk, "provider");
        dsc_rpc_pack_cstr(pk, m->provider);
        dsc__pack_key(pk, "model");
        dsc_rpc_pack_cstr(pk, m->name);
    }
    return DSC_OK;
}

dsc_status dsc__m_zones_list(dsc__call *c, const msgpack_object *p, msgpack_packer *pk,
                             dsc_error *err) {
    (void)p;
    (void)err;
    const dsc_catalog *cat = c->w->state->catalog;
    int64_t now = dsc__now_us() / 1000000;
    size_t n = dsc_catalog_zone_count(cat);
    msgpack_pack_map(pk, 1);
    dsc__pack_key(pk, "zones");
    msgpack_pack_array(pk, n);
    for (size_t i = 0; i < n; i++) {
        const dsc_zone *z = dsc_catalog_zone_at(cat, i);
        double current = 0;
        dsc_grid_source src = dsc_grid_get(c->srv->grid, z->name, now, &current);
        msgpack_pack_map(pk, 4);
        dsc__pack_key(pk, "zone");
        dsc_rpc_pack_cstr(pk, z->name);
        dsc__pack_key(pk, "gco2e_per_kwh");
        msgpack_pack_double(pk, z->gwp_kgco2eq_per_kwh * 1000.0);
        dsc__pack_key(pk, "current_gco2e_per_kwh");
        msgpack_pack_double(pk, src == DSC_GRID_NONE ? z->gwp_kgco2eq_per_kwh * 1000.0 : current);
        dsc__pack_key(pk, "source");
        dsc_rpc_pack_cstr(pk, src == DSC_GRID_LIVE ? "live" : "annual");
    }
    return DSC_OK;
}

/* One point {from, gco2e_per_kwh} of grid.set's forecast; errors name its index. */
static dsc_status read_point(const msgpack_object *o, uint32_t i, dsc_grid_point *pt,
                             dsc_error *err) {
    static const char *const keys[] = {"from", "gco2e_per_kwh", NULL};
    dsc_status st = DSC_OK;
    double v = 0;
    if (o->type != MSGPACK_OBJECT_MAP)
        return dsc_error_set(err, DSC_BAD_REQUEST, "field 'forecast[%u]': expected a map, got %s",
                             i, dsc_rpc_type_name(o));
    if ((st = dsc_rpc_check_keys(o, keys, "a forecast point", err)) ||
        (st = dsc_rpc_get_int(o, "from", true, 0, INT64_MAX / 2, &pt->at, err)) ||
        (st = dsc_rpc_get_num(o, "gco2e_per_kwh", true, 0, 100000, &v, err))) {
        char msg[DSC_ERROR_MESSAGE_MAX];
        snprintf(msg, sizeof msg, "%s", err->message);
        return dsc_error_set(err, st, "field 'forecast[%u]': %s", i, msg);
    }
    pt->gco2e_kwh = v;
    return DSC_OK;
}

/* The optional forecast of grid.set: *n = -1 when absent (the zone's forecast stays). */
static dsc_status read_forecast(const msgpack_object *p, dsc_grid_point *pts, int *n,
                                dsc_error *err) {
    const msgpack_object *a;
    *n = -1;
    dsc_status st = dsc_rpc_get_array(p, "forecast", false, DSC_GRID_FORECAST_MAX, &a, err);
    if (st != DSC_OK || !a) return st;
    for (uint32_t i = 0; i < a->via.array.size; i++)
        if ((st = read_point(&a->via.array.ptr[i], i, &pts[i], err)) != DSC_OK) return st;
    *n = (int)a->via.array.size;
    return DSC_OK;
}

dsc_status dsc__m_grid_set(dsc__call *c, const msgpack_object *p, msgpack_packer *pk,
                           dsc_error *err) {
    char zone[DSC_ZONE_MAX];
    double value = 0;
    int64_t until = 0, now = dsc__now_us() / 1000000;
    dsc_grid_point pts[DSC_GRID_FORECAST_MAX];
    int n_pts = -1;
    dsc_status st;
    if ((st = dsc_rpc_get_str(p, "zone", true, zone, sizeof zone, err)) ||
        (st = dsc_rpc_get_num(p, "gco2e_per_kwh", true, 0, 100000, &value, err)) ||
        (st = dsc_rpc_get_int(p, "valid_until", true, INT64_MIN, INT64_MAX, &until, err)) ||
        (st = read_forecast(p, pts, &n_pts, err)))
        return st;
    const dsc_zone *z = dsc_catalog_zone(c->w->state->catalog, zone);
    if (!z) return dsc_error_set(err, DSC_UNKNOWN_ZONE, "field 'zone': unknown zone '%s'", zone);
    if (until <= now)
        return dsc_error_set(err, DSC_BAD_REQUEST,
                             "field 'valid_until': %lld is not in the future (now %lld)",
                             (long long)until, (long long)now);
    if ((st = dsc_grid_set_live(c->srv->grid, z->name, value, until, err)) != DSC_OK ||
        (n_pts >= 0 && (st = dsc_grid_set_forecast(c->srv->grid, z->name, pts, n_pts, err))))
        return st;
    dsc_grid_point kept[DSC_GRID_FORECAST_MAX];
    int n_kept = dsc_grid_forecast(c->srv->grid, z->name, now, kept, DSC_GRID_FORECAST_MAX);
    dsc_log_write(&c->srv->log, DSC_LOG_INFO, "grid_set",
                  "zone=%s gco2e_per_kwh=%g valid_until=%lld forecast_points=%d", z->name, value,
                  (long long)until, n_kept);
    msgpack_pack_map(pk, 4);
    dsc__pack_key(pk, "zone");
    dsc_rpc_pack_cstr(pk, z->name);
    dsc__pack_key(pk, "gco2e_per_kwh");
    msgpack_pack_double(pk, value);
    dsc__pack_key(pk, "valid_until");
    msgpack_pack_int64(pk, until);
    dsc__pack_key(pk, "forecast_points");
    msgpack_pack_int(pk, n_kept);
    return DSC_OK;
}

dsc_status dsc__m_policy_reload(dsc__call *c, const msgpack_object *p, msgpack_packer *pk,
                                dsc_error *err) {
    (void)p;
    dsc_status st = dsc__server_reload(c->srv, err);
    /* The one handler that changes the state: it moves onto what it loaded. */
    if (st == DSC_OK) st = dsc__worker_sync(c->w, err);
    if (st != DSC_OK) return st;
    const dsc_policy_set *set = c->w->state->policies;
    int n = dsc_policy_set_count(set);
    msgpack_pack_map(pk, 2);
    dsc__pack_key(pk, "policy_version");
    dsc_rpc_pack_cstr(pk, dsc_policy_set_version(set));
    dsc__pack_key(pk, "policies");
    msgpack_pack_array(pk, (size_t)n);
    for (int i = 0; i < n; i++)
        dsc_rpc_pack_cstr(pk, dsc_policy_set_name(set, i));
    return DSC_OK;
}
