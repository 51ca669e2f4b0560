/*
 * policy_vm.c - one VM per worker thread: its own sandboxed lua_State with every
 * policy of a set loaded, deciding one request at a time.
 *
 * Per request: refill req and ctx in place (policy_ctx.c), call each policy's decide
 * through lua_pcall under the time budget, turn errors into the policy's on_error
 * outcome, combine (refuse > throttle > allow, ties keep the first, shadow never
 * counts). Also here: the purpose taxonomy (purposes.lua) and its lookup.
 */
#include "policy_internal.h"

#include "discern/catalog.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define DEFAULT_MEMORY (32u << 20)
#define DEFAULT_TIME_BUDGET_NS 1000000LL
#define DEFAULT_LOAD_BUDGET_NS 100000000LL
#define PURPOSE_MAX 128
#define PURPOSE_WORDS 16

/* --- purposes --- */

/* Lower-case ASCII, runs of anything else than letters and digits become one '-'. */
static size_t normalize(const char *in, char *out, size_t n) {
    size_t k = 0;
    for (; *in && k + 1 < n; in++) {
        unsigned char c = (unsigned char)*in;
        if (isalnum(c) || c >= 0x80)
            out[k++] = (char)tolower(c);
        else if (k > 0 && out[k - 1] != '-')
            out[k++] = '-';
    }
    while (k > 0 && out[k - 1] == '-')
        k--;
    out[k] = '\0';
    return k;
}

static void purposes_add_class(lua_State *L, const dsc__policy_file *f, int map, int line) {
    /* stack: ... class-name, list */
    size_t cn;
    const char *cls = lua_tolstring(L, -2, &cn);
    if (cn == 0 || cn >= 32)
        luaL_error(L, "%s:%d: class names must be 1 to 31 characters", f->file, line);
    if (!lua_istable(L, -1))
        luaL_error(L, "%s:%d: class '%s' must list its purposes as strings", f->file, line, cls);
    lua_Integer n = luaL_len(L, -1);
    for (lua_Integer i = 1; i <= n; i++) {
        char key[PURPOSE_MAX];
        if (lua_rawgeti(L, -1, i) != LUA_TSTRING)
            luaL_error(L, "%s:%d: class '%s' entry %d must be a string", f->file, line, cls,
                       (int)i);
        if (normalize(lua_tostring(L, -1), key, sizeof key) == 0)
            luaL_error(L, "%s:%d: class '%s' entry %d is empty", f->file, line, cls, (int)i);
        lua_pop(L, 1);
        lua_pushvalue(L, -2);
        lua_setfield(L, map, key);
    }
}

void dsc__purposes_build(lua_State *L, const dsc__policy_file *f, char *default_class, size_t n) {
    int line = dsc__last_return_line(f->src, f->len);
    int src = lua_gettop(L);
    lua_newtable(L);
    int map = lua_gettop(L);
    if (lua_getfield(L, src, "classes") != LUA_TTABLE)
        luaL_error(
            L,
            "%s:%d: purposes.lua must return {classes = {class = {purposes...}}, default = class}",
            f->file, line);
    for (lua_pushnil(L); lua_next(L, -2); lua_pop(L, 1)) {
        if (lua_type(L, -2) != LUA_TSTRING)
            luaL_error(L, "%s:%d: class names must be strings", f->file, line);
        purposes_add_class(L, f, map, line);
    }
    lua_pop(L, 1);
    int t = lua_getfield(L, src, "default");
    if (t == LUA_TSTRING && lua_rawlen(L, -1) > 0 && lua_rawlen(L, -1) < n)
        snprintf(default_class, n, "%s", lua_tostring(L, -1));
    else if (t != LUA_TNIL)
        luaL_error(L, "%s:%d: field 'default' must be a class name of 1 to %d characters", f->file,
                   line, (int)n - 1);
    lua_pop(L, 1);
    lua_replace(L, src);
}

/* Look words[i..j] up joined by '-'; pushes the class and returns 1 when found. */
static int lookup_words(lua_State *L, int map, char **words, int i, int j) {
    char key[PURPOSE_MAX];
    size_t k = 0;
    for (int w = i; w <= j; w++) {
        size_t len = strlen(words[w]);
        if (k + len + 2 > sizeof key) return 0;
        if (w > i) key[k++] = '-';
        memcpy(key + k, words[w], len);
        k += len;
    }
    key[k] = '\0';
    if (lua_getfield(L, map, key) == LUA_TSTRING) return 1;
    lua_pop(L, 1);
    return 0;
}

/* The class of a purpose: the whole normalised text when listed, else the leftmost
 * longest run of its words that is listed, else the default class. */
/* The remembered class of purpose, or NULL. */
static const char *memo_find(const dsc_policy_vm *vm, const char *purpose) {
    if (!purpose) return NULL;
    for (int i = 0; i < vm->class_memo_n; i++)
        if (strcmp(vm->class_memo[i].purpose, purpose) == 0) return vm->class_memo[i].klass;
    return NULL;
}

/* Remember klass for purpose (the oldest entry gives way); a purpose too long to
 * keep is computed every time. */
static void memo_put(dsc_policy_vm *vm, const char *purpose, const char *klass) {
    size_t n = strlen(purpose), k = strlen(klass);
    if (n >= sizeof vm->class_memo[0].purpose || k >= sizeof vm->class_memo[0].klass) return;
    int i = vm->class_memo_next;
    memcpy(vm->class_memo[i].purpose, purpose, n + 1);
    memcpy(vm->class_memo[i].klass, klass, k + 1);
    vm->class_memo_next = (i + 1) % DSC__CLASS_MEMO_N;
    if (vm->class_memo_n < DSC__CLASS_MEMO_N) vm->class_memo_n++;
}

static void purpose_class_compute(lua_State *L, dsc_policy_vm *vm, const char *purpose) {
    char norm[PURPOSE_MAX], *words[PURPOSE_WORDS];
    int n = 0;
    lua_rawgeti(L, LUA_REGISTRYINDEX, vm->purposes_ref);
    int map = lua_gettop(L);
    if (purpose && normalize(purpose, norm, sizeof norm) > 0) {
        if (lua_getfield(L, map, norm) == LUA_TSTRING) goto found;
        lua_pop(L, 1);
        for (char *p = norm; p && n < PURPOSE_WORDS; p = strchr(p, '-')) {
            if (*p == '-') *p++ = '\0';
            words[n++] = p;
        }
        for (int i = 0; i < n; i++)
            for (int j = n - 1; j >= i; j--)
                if (lookup_words(L, map, words, i, j)) goto found;
    }
    lua_pushstring(L, vm->default_class);
found:
    lua_remove(L, map);
}

void dsc__purpose_class(lua_State *L, dsc_policy_vm *vm, const char *purpose) {
    const char *klass = memo_find(vm, purpose);
    if (klass) {
        lua_pushstring(L, klass);
        return;
    }
    purpose_class_compute(L, vm, purpose);
    if (purpose) memo_put(vm, purpose, lua_tostring(L, -1));
}

/* --- the catalogue as oracle: what-if estimates and model lists --- */

static dsc_status catalog_estimate(void *ud, const dsc_estimate_input *in, dsc_estimate *out,
                                   dsc_error *err) {
    return dsc_estimate_compute(ud, in, out, err);
}

static const char *catalog_canonical(void *ud, const char *provider, const char *name) {
    const dsc_model *m = dsc_catalog_model(ud, provider, name);
    return m ? m->name : NULL;
}

static int catalog_models(void *ud, const char *provider, dsc_policy_model *out, int max) {
    size_t n = 0;
    const dsc_model *ms = dsc_catalog_provider_models(ud, provider, &n);
    if (!ms || n == 0) return -1;
    for (size_t i = 0; i < n && (int)i < max; i++)
        out[i] = (dsc_policy_model){ms[i].name, ms[i].active_params_b.max};
    return (int)n;
}

/* --- creation --- */

static int load_all(lua_State *L) {
    dsc_policy_vm *vm = dsc__vm_of(L);
    dsc_policy_set *set = vm->set;
    for (int i = 0; i < set->n; i++) {
        dsc__sandbox_load_policy(L, &set->files[i], true);
        lua_getfield(L, -1, "decide");
        vm->decide_ref[i] = luaL_ref(L, LUA_REGISTRYINDEX);
        lua_pop(L, 1);
    }
    if (set->purposes.src) {
        dsc__sandbox_load_policy(L, &set->purposes, false);
        dsc__purposes_build(L, &set->purposes, vm->default_class, sizeof vm->default_class);
    } else {
        lua_newtable(L);
    }
    vm->purposes_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    return dsc__ctx_build(L);
}

static void set_limits(dsc_policy_limits *l, const dsc_policy_limits *in) {
    if (in) *l = *in;
    if (!l->memory_bytes) l->memory_bytes = DEFAULT_MEMORY;
    if (l->time_budget_ns <= 0) l->time_budget_ns = DEFAULT_TIME_BUDGET_NS;
    if (l->load_budget_ns <= 0) l->load_budget_ns = DEFAULT_LOAD_BUDGET_NS;
}

dsc_policy_vm *dsc_policy_vm_new(dsc_policy_set *set, const dsc_catalog *cat, dsc_grid *grid,
                                 const dsc_policy_limits *limits, dsc_error *err) {
    dsc_policy_vm *vm = calloc(1, sizeof *vm);
    if (!vm) {
        dsc_error_set(err, DSC_NOMEM, "out of memory");
        return NULL;
    }
    set_limits(&vm->limits, limits);
    vm->set = dsc_policy_set_ref(set);
    vm->cat = cat;
    vm->grid = grid;
    if (cat)
        vm->oracle =
            (dsc_policy_oracle){(void *)cat, catalog_estimate, catalog_models, catalog_canonical};
    snprintf(vm->default_class, sizeof vm->default_class, "productive");
    vm->L = dsc__sandbox_open(&vm->sb, vm->limits.memory_bytes);
    if (!vm->L) {
        dsc_error_set(err, DSC_NOMEM, "cannot create a Lua state");
        goto fail;
    }
    lua_pushcfunction(vm->L, dsc__sandbox_msgh);
    lua_pushcfunction(vm->L, load_all);
    dsc__sandbox_arm(vm->L, vm->limits.load_budget_ns * (set->n + 1));
    int st = lua_pcall(vm->L, 0, 0, 1);
    dsc__sandbox_disarm(vm->L);
    if (st != LUA_OK) {
        dsc_error_set(err, st == LUA_ERRMEM ? DSC_NOMEM : DSC_POLICY_ERROR, "%s",
                      lua_tostring(vm->L, -1));
        goto fail;
    }
    lua_settop(vm->L, 0);
    return vm;
fail:
    dsc_policy_vm_free(vm);
    return NULL;
}

void dsc_policy_vm_free(dsc_policy_vm *vm) {
    if (!vm) return;
    dsc__sandbox_close(vm->L);
    dsc_policy_set_unref(vm->set);
    free(vm);
}

static int clear_models(lua_State *L) {
    lua_newtable(L);
    lua_rawseti(L, LUA_REGISTRYINDEX, dsc__vm_of(L)->models_ref);
    return 0;
}

void dsc_policy_vm_set_oracle(dsc_policy_vm *vm, const dsc_policy_oracle *oracle) {
    memset(&vm->oracle, 0, sizeof vm->oracle);
    if (oracle)
        vm->oracle = *oracle;
    else if (vm->cat)
        vm->oracle = (dsc_policy_oracle){(void *)vm->cat, catalog_estimate, catalog_models,
                                         catalog_canonical};
    vm->canon.valid = vm->prev.valid = false; /* so did the model names */
    lua_pushcfunction(vm->L, clear_models);   /* the model lists came from the old oracle */
    if (lua_pcall(vm->L, 0, 0, 0) != LUA_OK) lua_pop(vm->L, 1);
}

void dsc_policy_vm_set_log(dsc_policy_vm *vm,
                           void (*log)(void *ud, const char *policy, const char *line), void *ud) {
    vm->log = log;
    vm->log_ud = ud;
}

void dsc_policy_vm_stats(const dsc_policy_vm *vm, dsc_policy_stats *out) {
    *out = vm->stats;
    out->memory_in_use = vm->sb.used;
    out->watchdog_signals = dsc__sandbox_signals(vm->L);
}

dsc_policy_set *dsc_policy_vm_set(const dsc_policy_vm *vm) {
    return vm->set;
}

static void copy_str(char *dst, size_t n, const char *src) {
    size_t len = strlen(src);
    if (len >= n) len = n - 1;
    memcpy(dst, src, len);
    dst[len] = '\0';
}

static int class_of(lua_State *L) {
    dsc_policy_vm *vm = dsc__vm_of(L);
    dsc__purpose_class(L, vm, lua_touserdata(L, 1));
    copy_str(vm->class_buf, sizeof vm->class_buf, lua_tostring(L, -1));
    return 0;
}

const char *dsc_policy_vm_purpose_class(dsc_policy_vm *vm, const char *purpose) {
    const char *klass = memo_find(vm, purpose);
    if (klass) return klass;
    lua_pushcfunction(vm->L, class_of);
    lua_pushlightuserdata(vm->L, (void *)purpose);
    if (lua_pcall(vm->L, 1, 0, 0) != LUA_OK) {
        lua_pop(vm->L, 1);
        return vm->default_class;
    }
    return vm->class_buf;
}

/* --- deciding --- */

/* Record in v the answer of policy i at the top of the stack. Returns NULL, or the
 * error (in bad, n bytes) when it is not a decision. Raises nothing: it runs outside the
 * protected call, which now calls decide itself (a C function between them cost a
 * call frame and a lua_call per policy). */
static const char *read_answer(dsc_policy_vm *vm, int i, dsc_policy_verdict *v, char *bad,
                               size_t n) {
    lua_State *L = vm->L;
    if (lua_isnil(L, -1)) return NULL; /* abstain */
    const dsc__decision *d = dsc__sandbox_todecision(L, -1);
    if (!d) {
        lua_Debug ar;
        const char *type = luaL_typename(L, -1);
        lua_rawgeti(L, LUA_REGISTRYINDEX, vm->decide_ref[i]);
        lua_getinfo(L, ">S", &ar);
        snprintf(bad, n,
                 "%s:%d: decide returned a %s; expected allow(), throttle{}, refuse() or nil",
                 vm->set->files[i].file, ar.linedefined, type);
        return bad;
    }
    v->outcome = d->outcome;
    v->retry_after_s = d->retry_after_s;
    copy_str(v->reason, sizeof v->reason, d->reason); /* up to the NUL: most are short */
    copy_str(v->suggest_provider, sizeof v->suggest_provider, d->suggest_provider);
    copy_str(v->suggest_model, sizeof v->suggest_model, d->suggest_model);
    if (v->suggest_model[0] && !v->suggest_provider[0])
        copy_str(v->suggest_provider, sizeof v->suggest_provider, vm->in->provider);
    return NULL;
}

static void error_verdict(dsc_policy_vm *vm, int i, dsc_policy_verdict *v, int st, bool timed_out,
                          const char *msg) {
    const dsc__policy_file *f = &vm->set->files[i];
    vm->stats.errors++;
    v->error = true;
    v->outcome = f->on_error;
    v->retry_after_s = 0;
    v->suggest_provider[0] = v->suggest_model[0] = '\0';
    if (st == LUA_ERRMEM) {
        vm->stats.memory++;
        snprintf(v->reason, sizeof v->reason, "policy error: %s: memory cap of %zu bytes exceeded",
                 f->file, vm->limits.memory_bytes);
    } else {
        if (timed_out) vm->stats.timeouts++;
        snprintf(v->reason, sizeof v->reason, "policy error: %s", msg ? msg : "unknown error");
    }
}

/* Run policy i's decide(req, ctx) under the time budget; its verdict goes in v (written
 * in place: a verdict is 500 bytes). */
static void run_one(dsc_policy_vm *vm, int i, dsc_policy_verdict *v) {
    lua_State *L = vm->L;
    const dsc__policy_file *f = &vm->set->files[i];
    v->outcome = DSC_POLICY_ABSTAIN;
    v->error = false;
    v->retry_after_s = 0;
    v->reason[0] = v->suggest_provider[0] = v->suggest_model[0] = '\0';
    vm->current = i;
    lua_pushcfunction(L, dsc__sandbox_msgh);
    lua_rawgeti(L, LUA_REGISTRYINDEX, vm->decide_ref[i]);
    lua_rawgeti(L, LUA_REGISTRYINDEX, vm->req_ref);
    lua_rawgeti(L, LUA_REGISTRYINDEX, vm->ctx_ref);
    dsc__sandbox_arm(L, vm->limits.time_budget_ns);
    int st = lua_pcall(L, 2, 1, 1);
    bool timed_out = vm->sb.expired;
    dsc__sandbox_disarm(L);
    vm->stats.evaluations++;
    char bad[DSC_POLICY_REASON_MAX - 16]; /* fits in the reason after "policy error: " */
    const char *msg = st == LUA_OK ? read_answer(vm, i, v, bad, sizeof bad) : lua_tostring(L, -1);
    if (msg) {
        error_verdict(vm, i, v, st == LUA_OK ? LUA_ERRRUN : st, timed_out, msg);
        lua_settop(L, 0);
        lua_gc(L, LUA_GCCOLLECT); /* whatever the failed call piled up goes now */
    }
    lua_settop(L, 0);
    copy_str(v->policy, sizeof v->policy, f->name);
    v->shadow = f->shadow;
}

static void combine(dsc_decision *out) {
    int best = -1, sugg = -1;
    for (int i = 0; i < out->n_verdicts; i++) {
        const dsc_policy_verdict *v = &out->verdicts[i];
        if (v->shadow || v->outcome == DSC_POLICY_ABSTAIN) continue;
        if (best < 0 || v->outcome > out->verdicts[best].outcome) best = i;
        if (sugg < 0 && v->suggest_model[0]) sugg = i;
    }
    if (best < 0) {
        out->outcome = DSC_POLICY_ALLOW;
        copy_str(out->reason, sizeof out->reason, "no policy objected");
        return;
    }
    const dsc_policy_verdict *w = &out->verdicts[best];
    out->outcome = w->outcome;
    copy_str(out->reason, sizeof out->reason, w->reason);
    copy_str(out->policy, sizeof out->policy, w->policy);
    out->retry_after_s = w->retry_after_s;
    if (w->suggest_model[0]) sugg = best;
    if (sugg >= 0) {
        copy_str(out->suggest_provider, sizeof out->suggest_provider,
                 out->verdicts[sugg].suggest_provider);
        copy_str(out->suggest_model, sizeof out->suggest_model, out->verdicts[sugg].suggest_model);
    }
}

static dsc_status check_input(const dsc_policy_input *in, dsc_decision *out) {
    const char *bad = NULL;
    if (!in->provider || !in->provider[0])
        bad = "field 'provider' is required";
    else if (!in->model || !in->model[0])
        bad = "field 'model' is required";
    else if (in->input_tokens < 0)
        bad = "field 'input_tokens' must be >= 0";
    else if (in->output_tokens < 0)
        bad = "field 'output_tokens' must be >= 0";
    else if (in->n_budgets < 0 || (in->n_budgets > 0 && !in->budgets))
        bad = "field 'budgets' is invalid";
    else if (in->n_tags < 0 || (in->n_tags > 0 && !in->tags))
        bad = "field 'tags' is invalid";
    for (int i = 0; !bad && i < in->n_tags; i++)
        if (!in->tags[i].key || !in->tags[i].key[0] || !in->tags[i].value)
            bad = "field 'tags' has an entry without key or value";
    if (!bad) return DSC_OK;
    copy_str(out->reason, sizeof out->reason, bad);
    return DSC_BAD_REQUEST;
}

static void reset_decision(dsc_policy_vm *vm, dsc_decision *out) {
    out->outcome = DSC_POLICY_REFUSE;
    out->reason[0] = out->policy[0] = '\0';
    memcpy(out->version, vm->set->version, sizeof out->version);
    out->retry_after_s = 0;
    out->suggest_provider[0] = out->suggest_model[0] = '\0';
    out->n_verdicts = 0;
}

static dsc_status fill_request(dsc_policy_vm *vm, dsc_decision *out) {
    lua_State *L = vm->L;
    lua_pushcfunction(L, dsc__sandbox_msgh);
    lua_pushcfunction(L, dsc__ctx_fill);
    dsc__sandbox_arm(L, vm->limits.time_budget_ns);
    int st = lua_pcall(L, 0, 0, 1);
    dsc__sandbox_disarm(L);
    if (st == LUA_OK) return DSC_OK;
    snprintf(out->reason, sizeof out->reason, "cannot build the request: %s", lua_tostring(L, -1));
    lua_settop(L, 0);
    lua_gc(L, LUA_GCCOLLECT);
    return DSC_NOMEM;
}

dsc_status dsc__vm_run(dsc_policy_vm *vm, const dsc_policy_input *in, int only, dsc_decision *out) {
    reset_decision(vm, out);
    dsc_status st = check_input(in, out);
    if (st != DSC_OK) return st;
    vm->stats.decisions++;
    vm->in = in;
    st = fill_request(vm, out);
    for (int i = 0; st == DSC_OK && i < vm->set->n; i++) {
        const dsc__policy_file *f = &vm->set->files[i];
        if (only >= 0 ? i != only : !f->enabled) continue;
        run_one(vm, i, &out->verdicts[out->n_verdicts++]);
    }
    vm->in = NULL;
    if (st == DSC_OK) combine(out);
    return st;
}

dsc_status dsc_policy_vm_decide(dsc_policy_vm *vm, const dsc_policy_input *in, dsc_decision *out) {
    return dsc__vm_run(vm, in, -1, out);
}
