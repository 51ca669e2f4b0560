/*
 * policy_ctx.c - the req and ctx tables that decide(req, ctx) receives.
 *
 * Both are built once per VM as read-only proxies over data tables; per request only
 * the data tables' fields are overwritten (dsc__ctx_fill), so a request allocates
 * nothing here in the steady state. Budgets are exposed lazily: the first call to
 * ctx.budget or ctx.budgets in a request fills pooled tables, in API units
 * (micro-units / 1e6).
 *
 * ctx: estimate (ranges per metric; callable for what-if), budget(selector, metric),
 * budgets(), grid(zone), grid_forecast(zone), models(provider), model(name, provider),
 * now(), log(...),
 * purpose_class(purpose). See docs/policies.md.
 */
#include "policy_internal.h"

#include <stdlib.h>
#include <string.h>

/* The estimate's metrics as policies see them, with their factor from estimate.h's
 * units to API units (kWh -> Wh, kg -> g, L -> mL). */
static const struct {
    const char *name;
    size_t offset;
    double factor;
} est_metrics[5] = {
    {"energy_wh", offsetof(dsc_impacts, energy_kwh), 1000.0},
    {"gco2e", offsetof(dsc_impacts, gwp_kgco2eq), 1000.0},
    {"water_ml", offsetof(dsc_impacts, wcf_l), 1000.0},
    {"pe_mj", offsetof(dsc_impacts, pe_mj), 1.0},
    {"adpe_kgsbeq", offsetof(dsc_impacts, adpe_kgsbeq), 1.0},
};

dsc_policy_vm *dsc__vm_of(lua_State *L) {
    return (dsc_policy_vm *)dsc__sandbox_of(L);
}

static const dsc_policy_input *input_of(lua_State *L, dsc_policy_vm *vm) {
    if (!vm->in) luaL_error(L, "ctx is only available while a request is decided");
    return vm->in;
}

static int new_ref(lua_State *L) {
    return luaL_ref(L, LUA_REGISTRYINDEX);
}

static void push_ref(lua_State *L, int ref) {
    lua_rawgeti(L, LUA_REGISTRYINDEX, ref);
}

static void set_string(lua_State *L, int t, const char *k, const char *v) {
    if (v && v[0])
        lua_pushstring(L, v);
    else
        lua_pushnil(L);
    lua_setfield(L, t, k);
}

static void set_number(lua_State *L, int t, const char *k, double v) {
    lua_pushnumber(L, v);
    lua_setfield(L, t, k);
}

static void set_integer(lua_State *L, int t, const char *k, int64_t v) {
    lua_pushinteger(L, (lua_Integer)v);
    lua_setfield(L, t, k);
}

static const char *request_zone(const dsc_policy_input *in) {
    if (in->zone && in->zone[0]) return in->zone;
    return in->estimate && in->estimate->zone[0] ? in->estimate->zone : NULL;
}

/* Fill an estimate's data tables: data (zone) and the 5 metric tables (min, max) at
 * metrics[0..5) on the stack. */
static void fill_impacts(lua_State *L, int data, const int metrics[5], const dsc_estimate *est) {
    for (int m = 0; m < 5; m++) {
        const dsc_range *r = (const dsc_range *)((const char *)&est->total + est_metrics[m].offset);
        set_number(L, metrics[m], "min", r->min * est_metrics[m].factor);
        set_number(L, metrics[m], "max", r->max * est_metrics[m].factor);
    }
    set_string(L, data, "zone", est->zone);
}

/* A new what-if result: entry = {proxy, data, metric data x5}, the proxy read-only over
 * data, data's metric fields read-only proxies over the metric tables. Pushes entry. */
static void new_whatif_entry(lua_State *L) {
    lua_createtable(L, 7, 0);
    int entry = lua_gettop(L);
    lua_createtable(L, 0, 6);
    int data = lua_gettop(L);
    for (int m = 0; m < 5; m++) {
        lua_createtable(L, 0, 2);
        set_number(L, lua_gettop(L), "min", 0);
        set_number(L, lua_gettop(L), "max", 0);
        lua_pushvalue(L, -1);
        lua_rawseti(L, entry, 3 + m);
        dsc__sandbox_readonly(L, -1, est_metrics[m].name);
        lua_setfield(L, data, est_metrics[m].name);
        lua_pop(L, 1);
    }
    dsc__sandbox_readonly(L, data, "what-if estimate");
    lua_rawseti(L, entry, 1);
    lua_rawseti(L, entry, 2); /* pops data */
}

/* Push est as a what-if result: the request's next pooled table (no allocation once
 * the pool has grown), or a fresh one past DSC__WHATIF_POOL_MAX calls. Results stay
 * valid until the end of the request, like ctx.budgets(). */
static void push_whatif(lua_State *L, dsc_policy_vm *vm, const dsc_estimate *est) {
    int i = ++vm->whatif_used;
    int pool = 0;
    if (i <= DSC__WHATIF_POOL_MAX) {
        push_ref(L, vm->whatif_pool_ref);
        pool = lua_gettop(L);
    }
    if (pool && i <= vm->whatif_pool_n) {
        lua_rawgeti(L, pool, i);
    } else {
        new_whatif_entry(L);
        if (pool) {
            lua_pushvalue(L, -1);
            lua_rawseti(L, pool, i);
            vm->whatif_pool_n = i;
        }
    }
    int entry = lua_gettop(L);
    int metrics[5];
    for (int m = 0; m < 5; m++) {
        lua_rawgeti(L, entry, 3 + m);
        metrics[m] = lua_gettop(L);
    }
    lua_rawgeti(L, entry, 2);
    fill_impacts(L, lua_gettop(L), metrics, est);
    lua_rawgeti(L, entry, 1);
    lua_replace(L, pool ? pool : entry);
    lua_settop(L, pool ? pool : entry);
}

/* ctx.estimate{provider=, model=, input_tokens=, output_tokens=, zone=}: what-if. */
static int l_whatif(lua_State *L) {
    dsc_policy_vm *vm = dsc__vm_of(L);
    const dsc_policy_input *in = input_of(L, vm);
    luaL_checktype(L, 2, LUA_TTABLE);
    dsc_estimate_input q = {.provider = in->provider,
                            .model = in->model,
                            .input_tokens = in->input_tokens,
                            .output_tokens = in->output_tokens,
                            .zone = in->zone,
                            .method = DSC_METHOD_ECOLOGITS};
    if (in->estimate) { /* compare like with like: the request's method and scope */
        q.method = in->estimate->method;
        q.scope = in->estimate->scope;
        q.carbon = in->estimate->carbon;
        q.water = in->estimate->water;
    }
    if (lua_getfield(L, 2, "provider") != LUA_TNIL) q.provider = luaL_checkstring(L, -1);
    if (lua_getfield(L, 2, "model") != LUA_TNIL) q.model = luaL_checkstring(L, -1);
    if (lua_getfield(L, 2, "zone") != LUA_TNIL) q.zone = luaL_checkstring(L, -1);
    if (lua_getfield(L, 2, "input_tokens") != LUA_TNIL) q.input_tokens = luaL_checkinteger(L, -1);
    if (lua_getfield(L, 2, "output_tokens") != LUA_TNIL) q.output_tokens = luaL_checkinteger(L, -1);
    if (!vm->oracle.estimate) return luaL_error(L, "what-if estimates need a catalogue");
    dsc_estimate est;
    dsc_error err = {0};
    if (vm->oracle.estimate(vm->oracle.ud, &q, &est, &err) != DSC_OK) {
        lua_pushnil(L);
        lua_pushstring(L, err.message);
        return 2;
    }
    push_whatif(L, vm, &est);
    return 1;
}

static void fill_budget(lua_State *L, int t, const dsc_budget_state *b) {
    set_string(L, t, "selector", b->selector);
    set_string(L, t, "counter", b->counter);
    set_string(L, t, "metric", dsc_metric_name(b->metric));
    set_string(L, t, "window", b->window);
    set_number(L, t, "limit", (double)b->limit / (double)DSC_MICRO);
    set_number(L, t, "used", (double)b->used / (double)DSC_MICRO);
    set_number(L, t, "held", (double)b->held / (double)DSC_MICRO);
    set_number(L, t, "remaining", (double)b->remaining / (double)DSC_MICRO);
    set_number(L, t, "request", (double)b->request / (double)DSC_MICRO);
    set_integer(L, t, "resets_at", b->resets_at);
    lua_pushboolean(L, b->would_exceed);
    lua_setfield(L, t, "would_exceed");
}

/* Make pool entry i (1-based) exist: pool[2i-1] = data table, pool[2i] = its proxy. */
static void pool_entry(lua_State *L, dsc_policy_vm *vm, int pool, int i) {
    if (i <= vm->budget_pool_n) return;
    lua_createtable(L, 0, 11);
    dsc__sandbox_readonly(L, -1, "budget");
    lua_rawseti(L, pool, 2 * i);
    lua_rawseti(L, pool, 2 * i - 1);
    vm->budget_pool_n = i;
}

/* Fill the budget tables for this request, once. */
static void ensure_budgets(lua_State *L, dsc_policy_vm *vm) {
    if (vm->budgets_filled >= 0) return;
    const dsc_policy_input *in = input_of(L, vm);
    int n = in->n_budgets < DSC__BUDGET_POOL_MAX ? in->n_budgets : DSC__BUDGET_POOL_MAX;
    push_ref(L, vm->budget_pool_ref);
    int pool = lua_gettop(L);
    push_ref(L, vm->budgets_data_ref);
    int arr = lua_gettop(L);
    for (int i = 1; i <= n; i++) {
        pool_entry(L, vm, pool, i);
        lua_rawgeti(L, pool, 2 * i - 1);
        fill_budget(L, lua_gettop(L), &in->budgets[i - 1]);
        lua_pop(L, 1);
        lua_rawgeti(L, pool, 2 * i);
        lua_rawseti(L, arr, i);
    }
    for (int i = vm->budgets_shown; i > n; i--) {
        lua_pushnil(L);
        lua_rawseti(L, arr, i);
    }
    vm->budgets_shown = n;
    vm->budgets_filled = n;
    lua_settop(L, pool - 1);
}

static int l_budgets(lua_State *L) {
    dsc_policy_vm *vm = dsc__vm_of(L);
    ensure_budgets(L, vm);
    push_ref(L, vm->budgets_ref);
    return 1;
}

static bool budget_matches(const dsc_budget_state *b, const char *sel, const char *metric) {
    if (metric && strcmp(dsc_metric_name(b->metric) ? dsc_metric_name(b->metric) : "", metric))
        return false;
    if (!sel || strcmp(sel, b->selector) == 0 || strcmp(sel, b->counter) == 0) return true;
    size_t n = strlen(sel); /* a bare kind ("team") matches every team budget */
    return !strchr(sel, ':') && strncmp(b->selector, sel, n) == 0 && b->selector[n] == ':';
}

/* ctx.budget(selector, metric): the first applying budget that matches, or nil. */
static int l_budget(lua_State *L) {
    dsc_policy_vm *vm = dsc__vm_of(L);
    const char *sel = luaL_optstring(L, 1, NULL);
    const char *metric = luaL_optstring(L, 2, NULL);
    ensure_budgets(L, vm);
    for (int i = 0; i < vm->budgets_filled; i++) {
        if (!budget_matches(&vm->in->budgets[i], sel, metric)) continue;
        push_ref(L, vm->budgets_data_ref);
        lua_rawgeti(L, -1, i + 1);
        return 1;
    }
    lua_pushnil(L);
    return 1;
}

static const char *zone_arg(lua_State *L, const dsc_policy_input *in) {
    const char *zone = luaL_optstring(L, 1, NULL);
    return zone ? zone : request_zone(in);
}

/* ctx.grid(zone): gCO2e/kWh and "live" | "annual", or nil when unknown. */
static int l_grid(lua_State *L) {
    dsc_policy_vm *vm = dsc__vm_of(L);
    const dsc_policy_input *in = input_of(L, vm);
    const char *zone = zone_arg(L, in);
    double v;
    dsc_grid_source src = dsc_grid_get(vm->grid, zone, in->now, &v);
    if (src == DSC_GRID_NONE) {
        lua_pushnil(L);
        return 1;
    }
    lua_pushnumber(L, v);
    lua_pushstring(L, dsc_grid_source_name(src));
    return 2;
}

/* ctx.grid_forecast(zone): {{at=, gco2e_kwh=}, ...} sorted by time (may be empty). */
static int l_grid_forecast(lua_State *L) {
    dsc_policy_vm *vm = dsc__vm_of(L);
    const dsc_policy_input *in = input_of(L, vm);
    dsc_grid_point pts[DSC_GRID_FORECAST_MAX];
    int n = dsc_grid_forecast(vm->grid, zone_arg(L, in), in->now, pts, DSC_GRID_FORECAST_MAX);
    lua_createtable(L, n, 0);
    for (int i = 0; i < n; i++) {
        lua_createtable(L, 0, 2);
        set_integer(L, lua_gettop(L), "at", pts[i].at);
        set_number(L, lua_gettop(L), "gco2e_kwh", pts[i].gco2e_kwh);
        lua_rawseti(L, -2, i + 1);
    }
    return 1;
}

static int l_now(lua_State *L) {
    lua_pushinteger(L, (lua_Integer)input_of(L, dsc__vm_of(L))->now);
    return 1;
}

/* ctx.log(...): one line, arguments separated by spaces, tables shown by type. */
static int l_log(lua_State *L) {
    dsc_policy_vm *vm = dsc__vm_of(L);
    int n = lua_gettop(L);
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    for (int i = 1; i <= n; i++) {
        if (i > 1) luaL_addchar(&b, ' ');
        int t = lua_type(L, i);
        if (t == LUA_TSTRING || t == LUA_TNUMBER) {
            lua_pushvalue(L, i);
            luaL_addvalue(&b);
        } else if (t == LUA_TBOOLEAN) {
            luaL_addstring(&b, lua_toboolean(L, i) ? "true" : "false");
        } else {
            luaL_addstring(&b, luaL_typename(L, i));
        }
    }
    luaL_pushresult(&b);
    if (vm->log) vm->log(vm->log_ud, vm->set->files[vm->current].name, lua_tostring(L, -1));
    return 0;
}

static int cmp_models(const void *a, const void *b) {
    double x = ((const dsc_policy_model *)a)->params_b, y = ((const dsc_policy_model *)b)->params_b;
    return (x > y) - (x < y);
}

/* Push {list, index, sizes} for provider: the read-only list of its models, smallest
 * first, a table name -> entry, and the list's params_b as a plain array (for
 * binary search). Returns 0 (nothing pushed) when unknown. */
static int build_models(lua_State *L, dsc_policy_vm *vm, const char *provider) {
    dsc_policy_model ms[256];
    int n = vm->oracle.models ? vm->oracle.models(vm->oracle.ud, provider, ms, 256) : -1;
    if (n < 0) return 0;
    if (n > 256) n = 256;
    qsort(ms, (size_t)n, sizeof *ms, cmp_models);
    lua_createtable(L, 3, 0);
    int pair = lua_gettop(L);
    lua_createtable(L, n, 0);
    lua_createtable(L, 0, n);
    lua_createtable(L, n, 0);
    int list = pair + 1, index = pair + 2, sizes = pair + 3;
    for (int i = 0; i < n; i++) {
        lua_createtable(L, 0, 2);
        set_string(L, lua_gettop(L), "name", ms[i].name);
        set_number(L, lua_gettop(L), "params_b", ms[i].params_b);
        dsc__sandbox_readonly(L, -1, "model");
        lua_pushvalue(L, -1);
        lua_rawseti(L, list, i + 1);
        lua_setfield(L, index, ms[i].name);
        lua_pop(L, 1);
        lua_pushnumber(L, ms[i].params_b);
        lua_rawseti(L, sizes, i + 1);
    }
    lua_rawseti(L, pair, 3);
    lua_rawseti(L, pair, 2);
    dsc__sandbox_readonly(L, list, "models");
    lua_rawseti(L, pair, 1);
    lua_pop(L, 1);
    return 1;
}

/* How many models at the start of the sorted sizes array (at idx) are under below. */
static lua_Integer count_below(lua_State *L, int idx, double below) {
    lua_Integer lo = 0, hi = (lua_Integer)lua_rawlen(L, idx); /* answer in [lo, hi] */
    while (lo < hi) {
        lua_Integer mid = lo + (hi - lo) / 2; /* is sizes[mid + 1] < below? */
        lua_rawgeti(L, idx, mid + 1);
        double v = lua_tonumber(L, -1);
        lua_pop(L, 1);
        if (v < below)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

/* Push the cached {list, index, sizes} of provider (built on first use); 0 when unknown. */
static int provider_models(lua_State *L, dsc_policy_vm *vm, const char *provider) {
    push_ref(L, vm->models_ref);
    if (lua_getfield(L, -1, provider) != LUA_TNIL) {
        lua_remove(L, -2);
        return 1;
    }
    lua_pop(L, 1);
    if (!build_models(L, vm, provider)) {
        lua_pop(L, 1);
        return 0;
    }
    lua_pushvalue(L, -1);
    lua_setfield(L, -3, provider);
    lua_remove(L, -2);
    return 1;
}

/* ctx.models(provider [, below]): {{name=, params_b=}, ...} smallest first, or nil if
 * unknown; with below, also how many of them have params_b < below. */
static int l_models(lua_State *L) {
    dsc_policy_vm *vm = dsc__vm_of(L);
    const char *provider = luaL_optstring(L, 1, input_of(L, vm)->provider);
    int with_count = !lua_isnoneornil(L, 2);
    double below = with_count ? luaL_checknumber(L, 2) : 0;
    if (!provider_models(L, vm, provider)) {
        lua_pushnil(L);
        return 1;
    }
    int pair = lua_gettop(L);
    lua_rawgeti(L, pair, 1);
    if (!with_count) return 1;
    lua_rawgeti(L, pair, 3);
    lua_pushinteger(L, count_below(L, -1, below));
    lua_remove(L, -2);
    return 2;
}

/* ctx.model(name, provider): {name=, params_b=} of one model, or nil if unknown. */
static int l_model(lua_State *L) {
    dsc_policy_vm *vm = dsc__vm_of(L);
    const dsc_policy_input *in = input_of(L, vm);
    const char *name = luaL_optstring(L, 1, in->model);
    const char *provider = luaL_optstring(L, 2, in->provider);
    if (!provider_models(L, vm, provider)) {
        lua_pushnil(L);
        return 1;
    }
    lua_rawgeti(L, -1, 2);
    lua_getfield(L, -1, name);
    return 1;
}

static int l_purpose_class(lua_State *L) {
    dsc__purpose_class(L, dsc__vm_of(L), luaL_optstring(L, 1, NULL));
    return 1;
}

/* The estimate: read-only ranges per metric, callable for what-if estimates. */
static void build_estimate(lua_State *L, dsc_policy_vm *vm) {
    lua_createtable(L, 0, 6);
    int data = lua_gettop(L);
    for (int m = 0; m < 5; m++) {
        lua_createtable(L, 0, 2);
        set_number(L, lua_gettop(L), "min", 0);
        set_number(L, lua_gettop(L), "max", 0);
        dsc__sandbox_readonly(L, -1, est_metrics[m].name);
        lua_setfield(L, data, est_metrics[m].name);
        vm->est_metric_ref[m] = new_ref(L);
    }
    dsc__sandbox_readonly(L, data, "ctx.estimate");
    lua_getmetatable(L, -1);
    lua_pushcfunction(L, l_whatif);
    lua_setfield(L, -2, "__call");
    lua_pop(L, 1);
    lua_insert(L, data);
    vm->est_data_ref = new_ref(L); /* pops data; the proxy stays on the stack */
}

static void build_req(lua_State *L, dsc_policy_vm *vm) {
    lua_createtable(L, 0, 12);
    int data = lua_gettop(L);
    lua_createtable(L, 0, 4);
    dsc__sandbox_readonly(L, -1, "req.subject");
    lua_setfield(L, data, "subject");
    vm->subject_data_ref = new_ref(L);
    lua_createtable(L, 0, 4);
    dsc__sandbox_readonly(L, -1, "req.tags");
    lua_setfield(L, data, "tags");
    vm->tags_data_ref = new_ref(L);
    dsc__sandbox_readonly(L, data, "req");
    vm->req_ref = new_ref(L);
    vm->req_data_ref = new_ref(L);
}

int dsc__ctx_build(lua_State *L) {
    dsc_policy_vm *vm = dsc__vm_of(L);
    build_req(L, vm);
    lua_createtable(L, 0, 10);
    int data = lua_gettop(L);
    build_estimate(L, vm);
    lua_setfield(L, data, "estimate");
    static const luaL_Reg fns[] = {{"budget", l_budget},
                                   {"budgets", l_budgets},
                                   {"grid", l_grid},
                                   {"grid_forecast", l_grid_forecast},
                                   {"now", l_now},
                                   {"log", l_log},
                                   {"models", l_models},
                                   {"model", l_model},
                                   {"purpose_class", l_purpose_class},
                                   {NULL, NULL}};
    luaL_setfuncs(L, fns, 0);
    dsc__sandbox_readonly(L, data, "ctx");
    vm->ctx_ref = new_ref(L);
    lua_pop(L, 1);
    lua_newtable(L);
    vm->budgets_data_ref = new_ref(L);
    push_ref(L, vm->budgets_data_ref);
    dsc__sandbox_readonly(L, -1, "ctx.budgets()");
    vm->budgets_ref = new_ref(L);
    lua_pop(L, 1);
    lua_newtable(L);
    vm->budget_pool_ref = new_ref(L);
    lua_newtable(L);
    vm->models_ref = new_ref(L);
    lua_newtable(L);
    vm->whatif_pool_ref = new_ref(L);
    return 0;
}

static void fill_subject(lua_State *L, dsc_policy_vm *vm, const dsc_subject *s) {
    push_ref(L, vm->subject_data_ref);
    int t = lua_gettop(L);
    set_string(L, t, "org", s->org);
    set_string(L, t, "team", s->team);
    set_string(L, t, "user", s->user);
    set_string(L, t, "key", s->key);
    lua_pop(L, 1);
}

static void fill_tags(lua_State *L, dsc_policy_vm *vm, const dsc_policy_input *in) {
    push_ref(L, vm->tags_data_ref);
    int t = lua_gettop(L);
    for (lua_pushnil(L); lua_next(L, t); lua_pop(L, 1)) { /* clearing keys is allowed */
        lua_pushvalue(L, -2);
        lua_pushnil(L);
        lua_rawset(L, t);
    }
    for (int i = 0; i < in->n_tags; i++)
        set_string(L, t, in->tags[i].key, in->tags[i].value);
    lua_pop(L, 1);
}

static void fill_estimate(lua_State *L, dsc_policy_vm *vm, const dsc_estimate *est) {
    static const dsc_estimate zero;
    if (!est) est = &zero;
    for (int m = 0; m < 5; m++) {
        const dsc_range *r = (const dsc_range *)((const char *)&est->total + est_metrics[m].offset);
        push_ref(L, vm->est_metric_ref[m]);
        set_number(L, lua_gettop(L), "min", r->min * est_metrics[m].factor);
        set_number(L, lua_gettop(L), "max", r->max * est_metrics[m].factor);
        lua_pop(L, 1);
    }
    push_ref(L, vm->est_data_ref);
    set_string(L, lua_gettop(L), "zone", est->zone);
    lua_pop(L, 1);
}

int dsc__ctx_fill(lua_State *L) {
    dsc_policy_vm *vm = dsc__vm_of(L);
    const dsc_policy_input *in = vm->in;
    push_ref(L, vm->req_data_ref);
    int t = lua_gettop(L);
    set_string(L, t, "provider", in->provider);
    set_string(L, t, "model", in->model);
    set_integer(L, t, "input_tokens", in->input_tokens);
    set_integer(L, t, "output_tokens", in->output_tokens);
    set_string(L, t, "purpose", in->purpose);
    dsc__purpose_class(L, vm, in->purpose);
    lua_setfield(L, t, "purpose_class");
    set_string(L, t, "zone", request_zone(in));
    lua_pop(L, 1);
    fill_subject(L, vm, &in->subject);
    fill_tags(L, vm, in);
    fill_estimate(L, vm, in->estimate);
    vm->budgets_filled = -1;
    vm->whatif_used = 0;
    return 0;
}
