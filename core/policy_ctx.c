/*
 * policy_ctx.c - the req and ctx tables that decide(req, ctx) receives.
 *
 * Both are built once per VM as read-only proxies over data tables; per request only
 * the data tables' fields are overwritten (dsc__ctx_fill), so a request allocates
 * nothing here in the steady state. Budgets are exposed lazily: the first call to
 * ctx.budget or ctx.budgets in a request fills pooled tables, in API units
 * (micro-units / 1e6).
 *
 * ctx: estimate (ranges per metric; callable for what-if: estimate(model) or
 * estimate{...}), budget(selector, metric), budgets() and budgets("would_exceed"),
 * grid(zone), grid_forecast(zone), models(provider), model(name, provider), now(), log(...),
 * purpose_class(purpose). See docs/policies.md.
 *
 * The per-request fills set fields through keys interned once per VM (vm->keys_ref):
 * lua_setfield(L, t, "name") finds a C string's Lua string through a small cache
 * that compares with strcmp on every call, 14% of an evaluation of the shipped set
 * in a profile; pushing the interned key and lua_rawset on the (plain) data table
 * skips that.
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

/* The interned keys, at these indexes of the array at vm->keys_ref; the metric names
 * (as values of budget.metric) follow at K_METRIC + metric. */
enum {
    K_NONE, /* Lua arrays start at 1 */
    K_MIN,
    K_MAX,
    K_ZONE,
    K_SELECTOR,
    K_COUNTER,
    K_METRIC_FIELD,
    K_WINDOW,
    K_LIMIT,
    K_USED,
    K_HELD,
    K_REMAINING,
    K_REQUEST,
    K_RESETS_AT,
    K_RETRY_AFTER,
    K_WOULD_EXCEED,
    K_PROVIDER,
    K_MODEL,
    K_INPUT_TOKENS,
    K_OUTPUT_TOKENS,
    K_PURPOSE,
    K_PURPOSE_CLASS,
    K_ORG,
    K_TEAM,
    K_USER,
    K_KEY,
    K_METRIC /* first of the metric names */
};

static const char *const key_names[K_METRIC] = {
    [K_MIN] = "min",
    [K_MAX] = "max",
    [K_ZONE] = "zone",
    [K_SELECTOR] = "selector",
    [K_COUNTER] = "counter",
    [K_METRIC_FIELD] = "metric",
    [K_WINDOW] = "window",
    [K_LIMIT] = "limit",
    [K_USED] = "used",
    [K_HELD] = "held",
    [K_REMAINING] = "remaining",
    [K_REQUEST] = "request",
    [K_RESETS_AT] = "resets_at",
    [K_RETRY_AFTER] = "retry_after",
    [K_WOULD_EXCEED] = "would_exceed",
    [K_PROVIDER] = "provider",
    [K_MODEL] = "model",
    [K_INPUT_TOKENS] = "input_tokens",
    [K_OUTPUT_TOKENS] = "output_tokens",
    [K_PURPOSE] = "purpose",
    [K_PURPOSE_CLASS] = "purpose_class",
    [K_ORG] = "org",
    [K_TEAM] = "team",
    [K_USER] = "user",
    [K_KEY] = "key",
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

/* Push the interned keys array; returns its stack index. */
static int push_keys(lua_State *L, const dsc_policy_vm *vm) {
    lua_rawgeti(L, LUA_REGISTRYINDEX, vm->keys_ref);
    return lua_gettop(L);
}

/* The same setters through interned key k (keys: the array's stack index), for data
 * tables without metatables. */
static void put_string(lua_State *L, int keys, int t, int k, const char *v) {
    lua_rawgeti(L, keys, k);
    if (v && v[0])
        lua_pushstring(L, v);
    else
        lua_pushnil(L);
    lua_rawset(L, t);
}

static void put_number(lua_State *L, int keys, int t, int k, double v) {
    lua_rawgeti(L, keys, k);
    lua_pushnumber(L, v);
    lua_rawset(L, t);
}

static void put_integer(lua_State *L, int keys, int t, int k, int64_t v) {
    lua_rawgeti(L, keys, k);
    lua_pushinteger(L, (lua_Integer)v);
    lua_rawset(L, t);
}

/* Protected: the keys array, built once at VM creation. */
static void build_keys(lua_State *L, dsc_policy_vm *vm) {
    lua_createtable(L, K_METRIC + DSC_METRIC_COUNT, 0);
    for (int k = 1; k < K_METRIC; k++) {
        lua_pushstring(L, key_names[k]);
        lua_rawseti(L, -2, k);
    }
    for (int m = 0; m < DSC_METRIC_COUNT; m++) {
        lua_pushstring(L, dsc_metric_name((dsc_metric)m));
        lua_rawseti(L, -2, K_METRIC + m);
    }
    vm->keys_ref = new_ref(L);
}

static const char *request_zone(const dsc_policy_input *in) {
    if (in->zone && in->zone[0]) return in->zone;
    return in->estimate && in->estimate->zone[0] ? in->estimate->zone : NULL;
}

/* --- lazy views ---
 *
 * req, req.subject, ctx.estimate (and its metrics) and pooled what-if results are
 * read-only proxies over data tables whose scalar fields are filled on first read: a
 * data table's metatable has __index = l_view_index, which computes the field from
 * the request (or the stored what-if estimate), stores it and marks it in
 * vm->view_mask. A new request (or a pooled what-if result handed out again) rewrites
 * only the marked fields: those some policy has read. So a request pays for the
 * fields its policies read, not for every field (12% of an evaluation of the shipped
 * set went to filling req and ctx). pairs() on a view fills every field first. */

enum { KIND_REQ, KIND_SUBJECT, KIND_EST, KIND_METRIC };

/* The interned keys of each kind's scalar fields, 0-terminated; bit b of a view's mask
 * is field b. */
static const int kind_fields[4][8] = {
    [KIND_REQ] = {K_PROVIDER, K_MODEL, K_INPUT_TOKENS, K_OUTPUT_TOKENS, K_PURPOSE, K_PURPOSE_CLASS,
                  K_ZONE},
    [KIND_SUBJECT] = {K_ORG, K_TEAM, K_USER, K_KEY},
    [KIND_EST] = {K_ZONE},
    [KIND_METRIC] = {K_MIN, K_MAX},
};

/* What a view shows: its kind, and for estimates which one and which metric. */
typedef struct view_src {
    int kind, metric;
    const dsc_estimate *est;
} view_src;

static view_src src_of(const dsc_policy_vm *vm, int id) {
    static const dsc_estimate zero;
    if (id == DSC__VIEW_REQ) return (view_src){KIND_REQ, 0, NULL};
    if (id == DSC__VIEW_SUBJECT) return (view_src){KIND_SUBJECT, 0, NULL};
    int e = (id - DSC__VIEW_EST) / 6, m = (id - DSC__VIEW_EST) % 6 - 1;
    const dsc_estimate *est =
        e > 0 ? &vm->whatif_est[e - 1] : (vm->in && vm->in->estimate ? vm->in->estimate : &zero);
    return (view_src){m < 0 ? KIND_EST : KIND_METRIC, m, est};
}

static void push_str(lua_State *L, const char *v) {
    if (v && v[0])
        lua_pushstring(L, v);
    else
        lua_pushnil(L);
}

static const char *canonical_model(dsc_policy_vm *vm, const char *provider, const char *name);

static void push_req_field(lua_State *L, dsc_policy_vm *vm, int k) {
    const dsc_policy_input *in = vm->in;
    if (k == K_PROVIDER)
        push_str(L, in->provider);
    else if (k == K_MODEL)
        push_str(L, canonical_model(vm, in->provider, in->model));
    else if (k == K_INPUT_TOKENS)
        lua_pushinteger(L, (lua_Integer)in->input_tokens);
    else if (k == K_OUTPUT_TOKENS)
        lua_pushinteger(L, (lua_Integer)in->output_tokens);
    else if (k == K_PURPOSE)
        push_str(L, in->purpose);
    else if (k == K_PURPOSE_CLASS)
        dsc__purpose_class(L, vm, in->purpose);
    else
        push_str(L, request_zone(in));
}

static void push_subject_field(lua_State *L, const dsc_subject *s, int k) {
    push_str(L, k == K_ORG ? s->org : k == K_TEAM ? s->team : k == K_USER ? s->user : s->key);
}

/* Push field k (an interned key index) of what src shows. */
static void push_field(lua_State *L, dsc_policy_vm *vm, const view_src *src, int k) {
    if (src->kind == KIND_REQ || src->kind == KIND_SUBJECT) {
        if (!vm->in) /* outside a request there is nothing to show */
            lua_pushnil(L);
        else if (src->kind == KIND_REQ)
            push_req_field(L, vm, k);
        else
            push_subject_field(L, &vm->in->subject, k);
    } else if (src->kind == KIND_EST) {
        push_str(L, src->est->zone);
    } else {
        const dsc_range *r =
            (const dsc_range *)((const char *)&src->est->total + est_metrics[src->metric].offset);
        lua_pushnumber(L, (k == K_MIN ? r->min : r->max) * est_metrics[src->metric].factor);
    }
}

/* Write the fields of mask into data table t (at its stack index) from src. */
static void write_fields(lua_State *L, dsc_policy_vm *vm, int keys, int t, const view_src *src,
                         unsigned mask) {
    const int *f = kind_fields[src->kind];
    for (int b = 0; f[b]; b++) {
        if (!(mask & (1u << b))) continue;
        lua_rawgeti(L, keys, f[b]);
        push_field(L, vm, src, f[b]);
        lua_rawset(L, t);
    }
}

/* Rewrite the fields of view id that policies have read, except those in keep (they
 * hold the right value already). */
static void refill_view_except(lua_State *L, dsc_policy_vm *vm, int keys, int id, unsigned keep) {
    unsigned mask = vm->view_mask[id] & ~keep;
    if (!mask) return;
    push_ref(L, vm->view_ref[id]);
    view_src src = src_of(vm, id);
    write_fields(L, vm, keys, lua_gettop(L), &src, mask);
    lua_pop(L, 1);
}

static void refill_view(lua_State *L, dsc_policy_vm *vm, int keys, int id) {
    refill_view_except(L, vm, keys, id, 0);
}

/* __index of a view's data table (upvalue: the view's id): fill the field read. */
static int l_view_index(lua_State *L) {
    dsc_policy_vm *vm = dsc__vm_of(L);
    int id = (int)lua_tointeger(L, lua_upvalueindex(1));
    if (lua_type(L, 2) != LUA_TSTRING) return 0;
    lua_rawgeti(L, LUA_REGISTRYINDEX, vm->key_index_ref);
    lua_pushvalue(L, 2);
    int k = lua_rawget(L, -2) == LUA_TNUMBER ? (int)lua_tointeger(L, -1) : 0;
    view_src src = src_of(vm, id);
    if (src.kind <= KIND_SUBJECT && !vm->in) return 0; /* nothing to show outside a request */
    const int *f = kind_fields[src.kind];
    int b = 0;
    while (f[b] && f[b] != k)
        b++;
    if (!f[b]) return 0;
    push_field(L, vm, &src, k);
    lua_pushvalue(L, 2);
    lua_pushvalue(L, -2);
    lua_rawset(L, 1);
    vm->view_mask[id] |= 1u << b;
    return 1;
}

/* __pairs of a view (upvalues: data table, id): every field filled, then next. */
static int l_view_pairs(lua_State *L) {
    dsc_policy_vm *vm = dsc__vm_of(L);
    int id = (int)lua_tointeger(L, lua_upvalueindex(2));
    view_src src = src_of(vm, id);
    unsigned all = (1u << 8) - 1;
    if (src.kind > KIND_SUBJECT || vm->in) {
        lua_rawgeti(L, LUA_REGISTRYINDEX, vm->keys_ref);
        write_fields(L, vm, lua_gettop(L), lua_upvalueindex(1), &src, all);
        vm->view_mask[id] = all;
    }
    lua_getglobal(L, "next"); /* the state's own global table, never seen by policies */
    lua_pushvalue(L, lua_upvalueindex(1));
    lua_pushnil(L);
    return 3;
}

/* Make the data table at idx view id and push its read-only proxy (name in errors). */
static void push_view(lua_State *L, dsc_policy_vm *vm, int idx, int id, const char *name) {
    idx = lua_absindex(L, idx);
    lua_createtable(L, 0, 1);
    lua_pushinteger(L, id);
    lua_pushcclosure(L, l_view_index, 1);
    lua_setfield(L, -2, "__index");
    lua_setmetatable(L, idx);
    lua_pushvalue(L, idx);
    vm->view_ref[id] = new_ref(L);
    vm->view_mask[id] = 0;
    dsc__sandbox_readonly(L, idx, name);
    lua_getmetatable(L, -1);
    lua_pushvalue(L, idx);
    lua_pushinteger(L, id);
    lua_pushcclosure(L, l_view_pairs, 2);
    lua_setfield(L, -2, "__pairs");
    lua_pop(L, 1);
}

/* Push a read-only estimate {<metric> = {min, max}..., zone}: the views from id on when
 * id >= 0, else plain tables filled from est now. */
static void push_estimate_tables(lua_State *L, dsc_policy_vm *vm, int id, const dsc_estimate *est,
                                 const char *name) {
    int keys = push_keys(L, vm);
    lua_createtable(L, 0, 6);
    int data = lua_gettop(L);
    for (int m = 0; m < 5; m++) {
        lua_createtable(L, 0, 2);
        if (id >= 0) {
            push_view(L, vm, -1, id + 1 + m, est_metrics[m].name);
        } else {
            view_src src = {KIND_METRIC, m, est};
            write_fields(L, vm, keys, lua_gettop(L), &src, 3);
            dsc__sandbox_readonly(L, -1, est_metrics[m].name);
        }
        lua_setfield(L, data, est_metrics[m].name);
        lua_pop(L, 1);
    }
    if (id >= 0) {
        push_view(L, vm, data, id, name);
    } else {
        view_src src = {KIND_EST, 0, est};
        write_fields(L, vm, keys, data, &src, 1);
        dsc__sandbox_readonly(L, data, name);
    }
    lua_replace(L, keys);
    lua_settop(L, keys);
}

/* Push est as a what-if result: the request's next pooled views (no allocation once
 * the pool has grown), or fresh tables past DSC__WHATIF_POOL_MAX calls. Results stay
 * valid until the end of the request, like ctx.budgets(). */
static void push_whatif(lua_State *L, dsc_policy_vm *vm, const dsc_estimate *est) {
    int i = ++vm->whatif_used;
    if (i > DSC__WHATIF_POOL_MAX) {
        push_estimate_tables(L, vm, -1, est, "what-if estimate");
        return;
    }
    int id = DSC__VIEW_EST + 6 * i;
    vm->whatif_est[i - 1] = *est;
    push_ref(L, vm->whatif_pool_ref);
    int pool = lua_gettop(L);
    if (i > vm->whatif_pool_n) {
        push_estimate_tables(L, vm, id, NULL, "what-if estimate");
        lua_rawseti(L, pool, i);
        vm->whatif_pool_n = i;
    } else {
        int keys = push_keys(L, vm);
        for (int v = id; v < id + 6; v++)
            refill_view(L, vm, keys, v);
        lua_pop(L, 1);
    }
    lua_rawgeti(L, pool, i);
    lua_replace(L, pool);
}

/* Push field k of the argument table at 2 (metamethods apply, as with getfield). */
static int arg_field(lua_State *L, int keys, int k) {
    lua_rawgeti(L, keys, k);
    return lua_gettable(L, 2);
}

/* The what-if question for this request: the request itself, on its estimate's method
 * and scope (compare like with like). */
static dsc_estimate_input whatif_base(const dsc_policy_input *in) {
    dsc_estimate_input q = {.provider = in->provider,
                            .model = in->model,
                            .input_tokens = in->input_tokens,
                            .output_tokens = in->output_tokens,
                            .zone = in->zone,
                            .method = DSC_METHOD_ECOLOGITS};
    if (in->estimate) {
        q.method = in->estimate->method;
        q.scope = in->estimate->scope;
        q.carbon = in->estimate->carbon;
        q.water = in->estimate->water;
    }
    return q;
}

/* Read the fields of the argument table at 2 into q. */
static void whatif_fields(lua_State *L, dsc_policy_vm *vm, dsc_estimate_input *q) {
    int keys = push_keys(L, vm);
    if (arg_field(L, keys, K_PROVIDER) != LUA_TNIL) q->provider = luaL_checkstring(L, -1);
    if (arg_field(L, keys, K_MODEL) != LUA_TNIL) q->model = luaL_checkstring(L, -1);
    if (arg_field(L, keys, K_ZONE) != LUA_TNIL) q->zone = luaL_checkstring(L, -1);
    if (arg_field(L, keys, K_INPUT_TOKENS) != LUA_TNIL) q->input_tokens = luaL_checkinteger(L, -1);
    if (arg_field(L, keys, K_OUTPUT_TOKENS) != LUA_TNIL)
        q->output_tokens = luaL_checkinteger(L, -1);
}

/* ctx.estimate(model) or ctx.estimate{provider=, model=, input_tokens=, output_tokens=,
 * zone=}: what-if. The string form asks only for another model of the request's
 * provider, without a table to build. */
static int l_whatif(lua_State *L) {
    dsc_policy_vm *vm = dsc__vm_of(L);
    dsc_estimate_input q = whatif_base(input_of(L, vm));
    int t = lua_type(L, 2);
    lua_settop(L, 2);
    if (t == LUA_TSTRING)
        q.model = lua_tostring(L, 2);
    else if (t == LUA_TTABLE)
        whatif_fields(L, vm, &q);
    else
        return luaL_error(L,
                          "ctx.estimate: argument 'model' must be a model name or a table "
                          "{provider=, model=, ...}, got %s",
                          lua_typename(L, t));
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

static bool same_string(const char *a, const char *b) {
    return strcmp(a, b) == 0;
}

/* Write into data table t the fields of b that differ from prev, the state the table
 * holds (metric DSC__METRIC_NONE: a fresh table, write them all), then make prev b.
 * Each field's copy is updated only after its rawset, so an error part-way leaves prev
 * true to the table. */
static void fill_budget(lua_State *L, int keys, int t, const dsc_budget_state *b,
                        dsc_budget_state *prev) {
#define CHANGED(eq) (fresh || !(eq))
    bool fresh = prev->metric == DSC__METRIC_NONE;
    if (CHANGED(same_string(prev->selector, b->selector))) {
        put_string(L, keys, t, K_SELECTOR, b->selector);
        memcpy(prev->selector, b->selector, sizeof prev->selector);
    }
    if (CHANGED(same_string(prev->counter, b->counter))) {
        put_string(L, keys, t, K_COUNTER, b->counter);
        memcpy(prev->counter, b->counter, sizeof prev->counter);
    }
    if (CHANGED(prev->metric == b->metric)) {
        lua_rawgeti(L, keys, K_METRIC_FIELD);
        if ((unsigned)b->metric < DSC_METRIC_COUNT)
            lua_rawgeti(L, keys, K_METRIC + (int)b->metric);
        else
            lua_pushnil(L);
        lua_rawset(L, t);
        prev->metric = b->metric;
    }
    if (CHANGED(same_string(prev->window, b->window))) {
        put_string(L, keys, t, K_WINDOW, b->window);
        memcpy(prev->window, b->window, sizeof prev->window);
    }
#define MICRO_FIELD(f, k)                                                                          \
    if (CHANGED(prev->f == b->f)) {                                                                \
        put_number(L, keys, t, k, (double)b->f / (double)DSC_MICRO);                               \
        prev->f = b->f;                                                                            \
    }
    MICRO_FIELD(limit, K_LIMIT)
    MICRO_FIELD(used, K_USED)
    MICRO_FIELD(held, K_HELD)
    MICRO_FIELD(remaining, K_REMAINING)
    MICRO_FIELD(request, K_REQUEST)
#undef MICRO_FIELD
    if (CHANGED(prev->resets_at == b->resets_at)) {
        put_integer(L, keys, t, K_RESETS_AT, b->resets_at);
        prev->resets_at = b->resets_at;
    }
    if (CHANGED(prev->retry_after_s == b->retry_after_s)) {
        put_integer(L, keys, t, K_RETRY_AFTER, b->retry_after_s);
        prev->retry_after_s = b->retry_after_s;
    }
    if (CHANGED(prev->would_exceed == b->would_exceed)) {
        lua_rawgeti(L, keys, K_WOULD_EXCEED);
        lua_pushboolean(L, b->would_exceed);
        lua_rawset(L, t);
        prev->would_exceed = b->would_exceed;
    }
#undef CHANGED
}

/* Make pool entries up to i (1-based) exist: pool[2i-1] = data table, pool[2i] = its
 * proxy. ctx.budgets("would_exceed") may ask for entry i before the ones under it. */
static void pool_entry(lua_State *L, dsc_policy_vm *vm, int pool, int i) {
    while (vm->budget_pool_n < i) {
        int j = vm->budget_pool_n + 1;
        lua_createtable(L, 0, 12);
        dsc__sandbox_readonly(L, -1, "budget");
        lua_rawseti(L, pool, 2 * j);
        lua_rawseti(L, pool, 2 * j - 1);
        vm->budget_shown_state[j - 1].metric = DSC__METRIC_NONE; /* fresh: fill every field */
        vm->budget_pool_n = j;
    }
}

/* Make pool entry i (1-based) exist and hold budget i of this request. */
static void fill_entry(lua_State *L, dsc_policy_vm *vm, int pool, int keys, int i) {
    pool_entry(L, vm, pool, i);
    lua_rawgeti(L, pool, 2 * i - 1);
    fill_budget(L, keys, lua_gettop(L), &vm->in->budgets[i - 1], &vm->budget_shown_state[i - 1]);
    lua_pop(L, 1);
}

/* The request's budgets, as many as the pool holds. */
static int budget_count(const dsc_policy_input *in) {
    return in->n_budgets < DSC__BUDGET_POOL_MAX ? in->n_budgets : DSC__BUDGET_POOL_MAX;
}

/* Fill the budget tables for this request, once. */
static void ensure_budgets(lua_State *L, dsc_policy_vm *vm) {
    if (vm->budgets_filled >= 0) return;
    int n = budget_count(input_of(L, vm));
    push_ref(L, vm->budget_pool_ref);
    int pool = lua_gettop(L);
    push_ref(L, vm->budgets_data_ref);
    int arr = lua_gettop(L);
    int keys = push_keys(L, vm);
    for (int i = 1; i <= n; i++) {
        fill_entry(L, vm, pool, keys, i);
        if (i <= vm->budgets_shown) continue; /* arr[i] is pool entry i's proxy already */
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

/* Fill the array of the budgets this request would exceed, once: only their tables are
 * filled, and most requests exceed none, so the array stays empty and nothing is. */
static void ensure_exceeded(lua_State *L, dsc_policy_vm *vm) {
    if (vm->exceed_filled) return;
    const dsc_policy_input *in = input_of(L, vm);
    int n = budget_count(in), k = 0;
    push_ref(L, vm->budget_pool_ref);
    int pool = lua_gettop(L);
    push_ref(L, vm->exceed_data_ref);
    int arr = lua_gettop(L);
    int keys = push_keys(L, vm);
    for (int i = 1; i <= n; i++) {
        if (!in->budgets[i - 1].would_exceed) continue;
        fill_entry(L, vm, pool, keys, i);
        lua_rawgeti(L, pool, 2 * i);
        lua_rawseti(L, arr, ++k);
    }
    for (int i = vm->exceed_shown; i > k; i--) {
        lua_pushnil(L);
        lua_rawseti(L, arr, i);
    }
    vm->exceed_shown = k;
    vm->exceed_filled = true;
    lua_settop(L, pool - 1);
}

/* ctx.budgets() every budget of the request; ctx.budgets("would_exceed") those this
 * request would exceed, in the same order. */
static int l_budgets(lua_State *L) {
    dsc_policy_vm *vm = dsc__vm_of(L);
    if (lua_isnoneornil(L, 1)) {
        ensure_budgets(L, vm);
        push_ref(L, vm->budgets_ref);
        return 1;
    }
    if (lua_type(L, 1) != LUA_TSTRING)
        return luaL_error(L, "ctx.budgets: argument 'filter' must be a string, got %s",
                          luaL_typename(L, 1));
    if (strcmp(lua_tostring(L, 1), "would_exceed") != 0)
        return luaL_error(L, "ctx.budgets: unknown filter '%s' (expected \"would_exceed\")",
                          lua_tostring(L, 1));
    ensure_exceeded(L, vm);
    push_ref(L, vm->exceed_ref);
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
 * first, a table name -> entry, and the list's params_b as a userdata array of doubles
 * (for a binary search in C). Returns 0 (nothing pushed) when unknown. */
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
    double *sizes = lua_newuserdatauv(L, (size_t)n * sizeof *sizes, 0);
    int list = pair + 1, index = pair + 2;
    for (int i = 0; i < n; i++) {
        lua_createtable(L, 0, 2);
        set_string(L, lua_gettop(L), "name", ms[i].name);
        set_number(L, lua_gettop(L), "params_b", ms[i].params_b);
        dsc__sandbox_readonly(L, -1, "model");
        lua_pushvalue(L, -1);
        lua_rawseti(L, list, i + 1);
        lua_setfield(L, index, ms[i].name);
        lua_pop(L, 1);
        sizes[i] = ms[i].params_b;
    }
    lua_rawseti(L, pair, 3);
    lua_rawseti(L, pair, 2);
    dsc__sandbox_readonly(L, list, "models");
    lua_rawseti(L, pair, 1);
    lua_pop(L, 1);
    return 1;
}

/* How many models at the start of the sorted sizes (the userdata at idx) are under below. */
static lua_Integer count_below(lua_State *L, int idx, double below) {
    const double *sizes = lua_touserdata(L, idx);
    size_t lo = 0, hi = lua_rawlen(L, idx) / sizeof *sizes; /* the answer is in [lo, hi] */
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (sizes[mid] < below)
            lo = mid + 1;
        else
            hi = mid;
    }
    return (lua_Integer)lo;
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

/* The catalogue's name of a model given by name or alias (name itself when unknown):
 * policies compare models by the name ctx.models lists. */
static const char *canonical_model(dsc_policy_vm *vm, const char *provider, const char *name) {
    if (!vm->oracle.canonical || !provider || !name) return name;
    dsc__canon_cache *c = &vm->canon;
    if (c->valid && strcmp(c->provider, provider) == 0 && strcmp(c->name, name) == 0)
        return c->found ? c->result : name;
    const char *r = vm->oracle.canonical(vm->oracle.ud, provider, name);
    size_t np = strlen(provider), nn = strlen(name), nr = r ? strlen(r) : 0;
    c->valid = np < sizeof c->provider && nn < sizeof c->name && nr < sizeof c->result;
    if (c->valid) { /* the request's model is looked up again by ctx.model and the next request */
        memcpy(c->provider, provider, np + 1);
        memcpy(c->name, name, nn + 1);
        memcpy(c->result, r ? r : "", nr + 1);
        c->found = r != NULL;
    }
    return r ? r : name;
}

/* ctx.model(name, provider): {name=, params_b=} of one model (an alias finds its
 * model), or nil if unknown. */
static int l_model(lua_State *L) {
    dsc_policy_vm *vm = dsc__vm_of(L);
    const dsc_policy_input *in = input_of(L, vm);
    const char *provider = luaL_optstring(L, 2, in->provider);
    const char *name = canonical_model(vm, provider, luaL_optstring(L, 1, in->model));
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
    push_estimate_tables(L, vm, DSC__VIEW_EST, NULL, "ctx.estimate");
    lua_getmetatable(L, -1);
    lua_pushcfunction(L, l_whatif);
    lua_setfield(L, -2, "__call");
    lua_pop(L, 1);
}

/* req.tags: any keys, so not a view: its data table's __index looks the tag up. */
static int l_tags_index(lua_State *L) {
    dsc_policy_vm *vm = dsc__vm_of(L);
    const char *k = lua_type(L, 2) == LUA_TSTRING ? lua_tostring(L, 2) : NULL;
    const dsc_policy_input *in = vm->in;
    int found = -1;
    for (int i = 0; k && in && i < in->n_tags; i++)
        if (strcmp(in->tags[i].key, k) == 0) found = i; /* the last one wins */
    if (found < 0 || !in->tags[found].value[0]) return 0;
    lua_pushstring(L, in->tags[found].value);
    lua_pushvalue(L, 2);
    lua_pushvalue(L, -2);
    lua_rawset(L, 1);
    vm->tags_shown = true;
    return 1;
}

static int l_tags_pairs(lua_State *L) {
    dsc_policy_vm *vm = dsc__vm_of(L);
    for (int i = 0; vm->in && i < vm->in->n_tags; i++)
        set_string(L, lua_upvalueindex(1), vm->in->tags[i].key, vm->in->tags[i].value);
    vm->tags_shown = true;
    lua_getglobal(L, "next");
    lua_pushvalue(L, lua_upvalueindex(1));
    lua_pushnil(L);
    return 3;
}

static void build_tags(lua_State *L, dsc_policy_vm *vm) {
    lua_createtable(L, 0, 4);
    int data = lua_gettop(L);
    lua_createtable(L, 0, 1);
    lua_pushcfunction(L, l_tags_index);
    lua_setfield(L, -2, "__index");
    lua_setmetatable(L, data);
    dsc__sandbox_readonly(L, data, "req.tags");
    lua_getmetatable(L, -1);
    lua_pushvalue(L, data);
    lua_pushcclosure(L, l_tags_pairs, 1);
    lua_setfield(L, -2, "__pairs");
    lua_pop(L, 1);
    lua_insert(L, data);
    vm->tags_data_ref = new_ref(L); /* pops data; the proxy stays on the stack */
}

static void build_req(lua_State *L, dsc_policy_vm *vm) {
    lua_createtable(L, 0, 12);
    int data = lua_gettop(L);
    lua_createtable(L, 0, 4);
    push_view(L, vm, -1, DSC__VIEW_SUBJECT, "req.subject");
    lua_setfield(L, data, "subject");
    lua_pop(L, 1);
    build_tags(L, vm);
    lua_setfield(L, data, "tags");
    push_view(L, vm, data, DSC__VIEW_REQ, "req");
    vm->req_ref = new_ref(L);
    lua_pop(L, 1);
}

/* Protected: the map interned key -> its index, for the views' __index. */
static void build_key_index(lua_State *L, dsc_policy_vm *vm) {
    lua_createtable(L, 0, K_METRIC);
    for (int k = 1; k < K_METRIC; k++) {
        lua_pushinteger(L, k);
        lua_setfield(L, -2, key_names[k]);
    }
    vm->key_index_ref = new_ref(L);
}

int dsc__ctx_build(lua_State *L) {
    dsc_policy_vm *vm = dsc__vm_of(L);
    build_keys(L, vm);
    build_key_index(L, vm);
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
    vm->exceed_data_ref = new_ref(L);
    push_ref(L, vm->exceed_data_ref);
    dsc__sandbox_readonly(L, -1, "ctx.budgets(\"would_exceed\")");
    vm->exceed_ref = new_ref(L);
    lua_pop(L, 1);
    lua_newtable(L);
    vm->budget_pool_ref = new_ref(L);
    lua_newtable(L);
    vm->models_ref = new_ref(L);
    lua_newtable(L);
    vm->whatif_pool_ref = new_ref(L);
    return 0;
}

/* The tags read last request go; this request's are read through l_tags_index. */
static void clear_tags(lua_State *L, dsc_policy_vm *vm) {
    if (!vm->tags_shown) return;
    push_ref(L, vm->tags_data_ref);
    int t = lua_gettop(L);
    for (lua_pushnil(L); lua_next(L, t); lua_pop(L, 1)) { /* clearing keys is allowed */
        lua_pushvalue(L, -2);
        lua_pushnil(L);
        lua_rawset(L, t);
    }
    lua_pop(L, 1);
    vm->tags_shown = false;
}

/* Whether prev (n bytes) holds s (NULL as ""); if not, make it hold s, or nothing (*ok
 * false) when s does not fit. */
static bool same_as_before(char *prev, size_t n, bool *ok, const char *s) {
    if (!s) s = "";
    if (*ok && strcmp(prev, s) == 0) return true;
    size_t len = strlen(s);
    *ok = len < n;
    if (*ok) memcpy(prev, s, len + 1);
    return false;
}

/* The fields of req (bits of its view mask) that hold this request's value already:
 * provider, model and purpose (with its class) as the last request's. Requests from one
 * application repeat them, and the model's and the class's lookups are not free. */
static unsigned req_unchanged(dsc_policy_vm *vm) {
    dsc__req_prev *p = &vm->prev;
    const dsc_policy_input *in = vm->in;
    bool provider = same_as_before(p->provider, sizeof p->provider, &p->ok[0], in->provider);
    bool model = same_as_before(p->model, sizeof p->model, &p->ok[1], in->model);
    bool purpose = same_as_before(p->purpose, sizeof p->purpose, &p->ok[2], in->purpose);
    bool valid = p->valid;
    p->valid = true;
    if (!valid) return 0;
    return (provider ? 1u : 0) | (provider && model ? 2u : 0) | (purpose ? 16u | 32u : 0);
}

int dsc__ctx_fill(lua_State *L) {
    dsc_policy_vm *vm = dsc__vm_of(L);
    int keys = push_keys(L, vm);
    refill_view_except(L, vm, keys, DSC__VIEW_REQ, req_unchanged(vm));
    refill_view(L, vm, keys, DSC__VIEW_SUBJECT);
    for (int v = DSC__VIEW_EST; v < DSC__VIEW_EST + 6; v++)
        refill_view(L, vm, keys, v);
    lua_pop(L, 1);
    clear_tags(L, vm);
    vm->budgets_filled = -1;
    vm->exceed_filled = false;
    vm->whatif_used = 0;
    return 0;
}
