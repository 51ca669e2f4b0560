/*
 * policy_runner.c - `discern policy test`: run the *_test.lua files of a policy
 * folder against its policies, with fake budgets, a fake clock and fake models.
 *
 * Each test file runs in its own sandboxed state with a small API:
 *   test(name, fn)          one test: fresh budgets, clock, grid and models
 *   budget{selector=, metric=, window=, limit=, used=, held=, resets_at=}
 *   clock(unix_seconds)     what ctx.now() returns (default 2026-01-01T00:00:00Z)
 *   model{provider=, name=, alias=, params_b=, gco2e=, energy_wh=, water_ml=}  per 1000
 *                           output tokens: estimates and ctx.models() come from these
 *                           (without any, from the catalogue when one is given)
 *   grid{zone=, gco2e_kwh=, live=true, valid_until=, forecast={{at=, gco2e_kwh=}...}}
 *   decide{...}             the policy under test (x_test.lua tests x.lua) alone
 *   decide_all{...}         every enabled policy, combined as in production
 *   enabled()               whether the policy under test is enabled (its `enabled`
 *                           switch), so a test can follow the switch, not repeat it
 *   expect(d).to_allow(s) / to_refuse(s) / to_throttle(s) / to_abstain()
 *            .to_suggest(model [, provider]) / to_not_suggest() / to_retry_after(n)
 *   ok(condition, message)  a plain check, failing at the caller's line
 * A failure is reported as "file:line: message (in test 'name')".
 */
#include "policy_internal.h"

#include "discern/catalog.h"
#include "discern/window.h"

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TEST_MEMORY (64u << 20)
#define TEST_BUDGET_NS 2000000000LL /* per test, and for a file's top-level code */
#define DEFAULT_NOW 1767225600      /* 2026-01-01T00:00:00Z */
#define MAX_BUDGETS 64
#define MAX_MODELS 64
#define MAX_TESTS 256
#define MAX_TAGS 32

typedef struct fake_model {
    char provider[DSC_POLICY_NAME_MAX], name[DSC_POLICY_MODEL_MAX];
    char alias[DSC_POLICY_MODEL_MAX];            /* another name of it, "" for none */
    double params_b, gco2e, energy_wh, water_ml; /* per 1000 output tokens */
} fake_model;

typedef struct runner {
    dsc__sandbox sb; /* first: the test state's extra space points here */
    const char *dir;
    dsc_policy_set *set;
    const dsc_catalog *cat;
    void (*on_failure)(void *ud, const char *line);
    void *ud;
    dsc_policy_test_report *report;
    const char *file;
    int policy; /* index of the policy under test, -1 when none matches */
    dsc_policy_vm *vm;
    dsc_grid *grid;
    dsc_budget_state budgets[MAX_BUDGETS];
    int nb;
    fake_model models[MAX_MODELS];
    int nm;
    int64_t now;
    /* what the file declared outside any test: every test starts from it */
    dsc_budget_state file_budgets[MAX_BUDGETS];
    int file_nb;
    fake_model file_models[MAX_MODELS];
    int file_nm;
    int64_t file_now;
} runner;

static runner *runner_of(lua_State *L) {
    return (runner *)dsc__sandbox_of(L);
}

static void fail_line(runner *r, const char *msg) {
    r->report->failed++;
    if (r->on_failure) r->on_failure(r->ud, msg);
}

/* --- the fake oracle --- */

static const fake_model *find_model(runner *r, const char *provider, const char *name) {
    for (int i = 0; i < r->nm; i++)
        if (!strcmp(r->models[i].provider, provider) &&
            (!strcmp(r->models[i].name, name) || !strcmp(r->models[i].alias, name)))
            return &r->models[i];
    return NULL;
}

static const char *fake_canonical(void *ud, const char *provider, const char *name) {
    const fake_model *m = find_model(ud, provider, name);
    return m ? m->name : NULL;
}

static dsc_status fake_estimate(void *ud, const dsc_estimate_input *in, dsc_estimate *out,
                                dsc_error *err) {
    runner *r = ud;
    memset(out, 0, sizeof *out);
    const fake_model *m = find_model(r, in->provider, in->model);
    if (!m)
        return dsc_error_set(err, DSC_UNKNOWN_MODEL, "unknown model '%s' of provider '%s'",
                             in->model, in->provider);
    double k = (double)in->output_tokens / 1000.0;
    out->total.gwp_kgco2eq.min = out->total.gwp_kgco2eq.max = m->gco2e * k / 1000.0;
    out->total.energy_kwh.min = out->total.energy_kwh.max = m->energy_wh * k / 1000.0;
    out->total.wcf_l.min = out->total.wcf_l.max = m->water_ml * k / 1000.0;
    snprintf(out->zone, sizeof out->zone, "%s", in->zone && in->zone[0] ? in->zone : "WOR");
    return DSC_OK;
}

static int fake_models(void *ud, const char *provider, dsc_policy_model *out, int max) {
    runner *r = ud;
    int n = 0;
    for (int i = 0; i < r->nm; i++) {
        if (strcmp(r->models[i].provider, provider)) continue;
        if (n < max) out[n] = (dsc_policy_model){r->models[i].name, r->models[i].params_b};
        n++;
    }
    return n ? n : -1;
}

/* --- API: budget, clock, model, grid --- */

static double opt_number(lua_State *L, int t, const char *k, double def) {
    lua_getfield(L, t, k);
    double v = luaL_optnumber(L, -1, def);
    lua_pop(L, 1);
    return v;
}

static void opt_string(lua_State *L, int t, const char *k, char *dst, size_t n, const char *def) {
    lua_getfield(L, t, k);
    const char *s = luaL_optstring(L, -1, def);
    if (!s) luaL_error(L, "field '%s' is required", k);
    snprintf(dst, n, "%s", s);
    lua_pop(L, 1);
}

static int64_t micro(double v) {
    return (int64_t)(v * (double)DSC_MICRO + (v >= 0 ? 0.5 : -0.5));
}

static int l_budget(lua_State *L) {
    runner *r = runner_of(L);
    luaL_checktype(L, 1, LUA_TTABLE);
    if (r->nb == MAX_BUDGETS) return luaL_error(L, "at most %d budgets per test", MAX_BUDGETS);
    dsc_budget_state *b = &r->budgets[r->nb];
    memset(b, 0, sizeof *b);
    char metric[32];
    opt_string(L, 1, "selector", b->selector, sizeof b->selector, NULL);
    opt_string(L, 1, "metric", metric, sizeof metric, NULL);
    opt_string(L, 1, "window", b->window, sizeof b->window, "month");
    if (dsc_metric_parse(metric, &b->metric) != DSC_OK)
        return luaL_error(L, "unknown metric '%s'", metric);
    b->limit = micro(opt_number(L, 1, "limit", 0));
    b->used = micro(opt_number(L, 1, "used", 0));
    b->held = micro(opt_number(L, 1, "held", 0));
    b->resets_at = (int64_t)opt_number(L, 1, "resets_at", (double)(r->now + 86400));
    r->nb++;
    if (!r->vm) r->file_budgets[r->file_nb++] = *b;
    return 0;
}

static int l_clock(lua_State *L) {
    runner *r = runner_of(L);
    r->now = (int64_t)luaL_checkinteger(L, 1);
    if (!r->vm) r->file_now = r->now;
    return 0;
}

static int l_model(lua_State *L) {
    runner *r = runner_of(L);
    luaL_checktype(L, 1, LUA_TTABLE);
    if (r->nm == MAX_MODELS) return luaL_error(L, "at most %d models per test", MAX_MODELS);
    fake_model *m = &r->models[r->nm];
    opt_string(L, 1, "provider", m->provider, sizeof m->provider, "openai");
    opt_string(L, 1, "name", m->name, sizeof m->name, NULL);
    opt_string(L, 1, "alias", m->alias, sizeof m->alias, "");
    m->params_b = opt_number(L, 1, "params_b", 0);
    m->gco2e = opt_number(L, 1, "gco2e", 0);
    m->energy_wh = opt_number(L, 1, "energy_wh", 0);
    m->water_ml = opt_number(L, 1, "water_ml", 0);
    r->nm++;
    if (r->vm)
        dsc_policy_vm_set_oracle(
            r->vm, &(dsc_policy_oracle){r, fake_estimate, fake_models, fake_canonical});
    else
        r->file_models[r->file_nm++] = *m;
    return 0;
}

static void grid_forecast(lua_State *L, runner *r, const char *zone) {
    dsc_grid_point pts[DSC_GRID_FORECAST_MAX];
    int n = 0;
    for (lua_Integer i = 1; lua_rawgeti(L, -1, i) == LUA_TTABLE; i++, lua_pop(L, 1)) {
        if (n == DSC_GRID_FORECAST_MAX) luaL_error(L, "too many forecast points");
        pts[n].at = (int64_t)opt_number(L, lua_gettop(L), "at", 0);
        pts[n].gco2e_kwh = opt_number(L, lua_gettop(L), "gco2e_kwh", 0);
        n++;
    }
    lua_pop(L, 1);
    dsc_error err;
    if (dsc_grid_set_forecast(r->grid, zone, pts, n, &err) != DSC_OK)
        luaL_error(L, "%s", err.message);
}

static int l_grid(lua_State *L) {
    runner *r = runner_of(L);
    luaL_checktype(L, 1, LUA_TTABLE);
    if (!r->vm) return luaL_error(L, "grid{} must be called inside test()");
    char zone[16];
    dsc_error err = {0};
    dsc_status st = DSC_OK;
    opt_string(L, 1, "zone", zone, sizeof zone, NULL);
    if (lua_getfield(L, 1, "gco2e_kwh") != LUA_TNIL) {
        double v = luaL_checknumber(L, -1);
        lua_getfield(L, 1, "live");
        bool live = lua_isnil(L, -1) || lua_toboolean(L, -1);
        int64_t until = (int64_t)opt_number(L, 1, "valid_until", (double)(r->now + 3600));
        st = live ? dsc_grid_set_live(r->grid, zone, v, until, &err)
                  : dsc_grid_set_annual(r->grid, zone, v, &err);
        lua_pop(L, 1);
    }
    lua_pop(L, 1);
    if (st != DSC_OK) return luaL_error(L, "%s", err.message);
    if (lua_getfield(L, 1, "forecast") == LUA_TTABLE) grid_forecast(L, r, zone);
    return 0;
}

/* --- decide --- */

typedef struct request {
    dsc_policy_input in;
    dsc_estimate est;
    dsc_budget_state budgets[MAX_BUDGETS];
    dsc_policy_tag tags[MAX_TAGS];
} request;

static const char *field(lua_State *L, int t, const char *k, const char *def) {
    lua_getfield(L, t, k);
    const char *s = luaL_optstring(L, -1, def);
    lua_pop(L, 1); /* the string stays alive: it is referenced by the table at t */
    return s;
}

static void read_subject(lua_State *L, int t, dsc_subject *s) {
    int src = t;
    if (lua_getfield(L, t, "subject") == LUA_TTABLE) src = lua_gettop(L);
    s->org = field(L, src, "org", NULL);
    s->team = field(L, src, "team", NULL);
    s->user = field(L, src, "user", NULL);
    s->key = field(L, src, "key", NULL);
    /* the subject table stays on the stack so its strings stay alive */
}

static void read_tags(lua_State *L, int t, request *q) {
    if (lua_getfield(L, t, "tags") != LUA_TTABLE) return;
    for (lua_pushnil(L); lua_next(L, -2); lua_pop(L, 1)) {
        if (q->in.n_tags == MAX_TAGS) luaL_error(L, "at most %d tags", MAX_TAGS);
        if (lua_type(L, -2) != LUA_TSTRING || lua_type(L, -1) != LUA_TSTRING)
            luaL_error(L, "tags must map strings to strings");
        q->tags[q->in.n_tags++] = (dsc_policy_tag){lua_tostring(L, -2), lua_tostring(L, -1)};
    }
    q->in.tags = q->tags;
}

/* estimate = {gco2e = 4 | {min=, max=}, energy_wh = ..., water_ml = ..., pe_mj = ...} */
static void read_range(lua_State *L, int t, const char *k, double factor, dsc_range *r) {
    int ty = lua_getfield(L, t, k);
    if (ty == LUA_TNUMBER) {
        r->min = r->max = lua_tonumber(L, -1) / factor;
    } else if (ty == LUA_TTABLE) {
        r->max = opt_number(L, lua_gettop(L), "max", 0) / factor;
        r->min = opt_number(L, lua_gettop(L), "min", r->max * factor) / factor;
    } else if (ty != LUA_TNIL) {
        luaL_error(L, "estimate field '%s' must be a number or {min=, max=}", k);
    }
    lua_pop(L, 1);
}

static void read_estimate(lua_State *L, runner *r, int t, request *q) {
    memset(&q->est, 0, sizeof q->est);
    q->in.estimate = &q->est;
    if (lua_getfield(L, t, "estimate") == LUA_TTABLE) {
        int e = lua_gettop(L);
        read_range(L, e, "gco2e", 1000.0, &q->est.total.gwp_kgco2eq);
        read_range(L, e, "energy_wh", 1000.0, &q->est.total.energy_kwh);
        read_range(L, e, "water_ml", 1000.0, &q->est.total.wcf_l);
        read_range(L, e, "pe_mj", 1.0, &q->est.total.pe_mj);
        snprintf(q->est.zone, sizeof q->est.zone, "%s", q->in.zone ? q->in.zone : "WOR");
        lua_pop(L, 1);
        return;
    }
    lua_pop(L, 1);
    if (r->nm == 0 && !r->cat) return; /* no models and no catalogue: a zero footprint */
    dsc_estimate_input ei = {.provider = q->in.provider,
                             .model = q->in.model,
                             .input_tokens = q->in.input_tokens,
                             .output_tokens = q->in.output_tokens,
                             .zone = q->in.zone};
    dsc_error err;
    dsc_status st = r->nm ? fake_estimate(r, &ei, &q->est, &err)
                          : dsc_estimate_compute(r->cat, &ei, &q->est, &err);
    if (st != DSC_OK) luaL_error(L, "decide: %s", err.message);
}

static bool selector_applies(const char *sel, const dsc_subject *s, char *counter, size_t n) {
    static const char *const kinds[] = {"org", "team", "user", "key"};
    const char *vals[] = {s->org, s->team, s->user, s->key};
    for (int k = 0; k < 4; k++) {
        size_t len = strlen(kinds[k]);
        if (strncmp(sel, kinds[k], len) || sel[len] != ':') continue;
        const char *want = sel + len + 1, *have = vals[k];
        if (!have || !have[0] || (strcmp(want, "*") && strcmp(want, have))) return false;
        snprintf(counter, n, "%s:%s", kinds[k], have);
        return true;
    }
    return false;
}

/* The budgets that apply to the request, as the ledger's preview would give them. */
static void apply_budgets(runner *r, request *q) {
    dsc_amounts a;
    memset(&a, 0, sizeof a);
    a.v[DSC_METRIC_ENERGY_WH] = micro(q->est.total.energy_kwh.max * 1000.0);
    a.v[DSC_METRIC_GCO2E] = micro(q->est.total.gwp_kgco2eq.max * 1000.0);
    a.v[DSC_METRIC_WATER_ML] = micro(q->est.total.wcf_l.max * 1000.0);
    a.v[DSC_METRIC_PE_MJ] = micro(q->est.total.pe_mj.max);
    a.v[DSC_METRIC_TOKENS] = (q->in.input_tokens + q->in.output_tokens) * DSC_MICRO;
    a.v[DSC_METRIC_REQUESTS] = DSC_MICRO;
    for (int i = 0; i < r->nb; i++) {
        dsc_budget_state *b = &q->budgets[q->in.n_budgets];
        *b = r->budgets[i];
        if (!selector_applies(b->selector, &q->in.subject, b->counter, sizeof b->counter)) continue;
        int64_t left = b->limit - b->used - b->held;
        b->remaining = left > 0 ? left : 0;
        b->request = a.v[b->metric];
        b->would_exceed = b->used + b->held + b->request > b->limit;
        dsc_window w;
        b->retry_after_s = dsc_window_parse(b->window, &w, NULL) == DSC_OK
                               ? dsc_window_wait_s(&w, b->used + b->held, b->request, b->limit,
                                                   b->resets_at, r->now)
                               : 0;
        q->in.n_budgets++;
    }
    q->in.budgets = q->budgets;
}

static void push_verdict_fields(lua_State *L, dsc_policy_outcome o, const char *reason,
                                const char *policy, int64_t retry, const char *sp, const char *sm) {
    lua_createtable(L, 0, 6);
    lua_pushstring(L, dsc_policy_outcome_name(o));
    lua_setfield(L, -2, "outcome");
    lua_pushstring(L, reason);
    lua_setfield(L, -2, "reason");
    lua_pushstring(L, policy);
    lua_setfield(L, -2, "policy");
    lua_pushinteger(L, (lua_Integer)retry);
    lua_setfield(L, -2, "retry_after");
    if (sm[0]) {
        lua_createtable(L, 0, 2);
        lua_pushstring(L, sp);
        lua_setfield(L, -2, "provider");
        lua_pushstring(L, sm);
        lua_setfield(L, -2, "model");
        lua_setfield(L, -2, "suggest");
    }
}

static void push_decision(lua_State *L, const dsc_decision *d, bool single) {
    if (single && d->n_verdicts == 1) {
        const dsc_policy_verdict *v = &d->verdicts[0];
        push_verdict_fields(L, v->outcome, v->reason, v->policy, v->retry_after_s,
                            v->suggest_provider, v->suggest_model);
        return;
    }
    push_verdict_fields(L, d->outcome, d->reason, d->policy, d->retry_after_s, d->suggest_provider,
                        d->suggest_model);
    lua_createtable(L, d->n_verdicts, 0);
    for (int i = 0; i < d->n_verdicts; i++) {
        const dsc_policy_verdict *v = &d->verdicts[i];
        push_verdict_fields(L, v->outcome, v->reason, v->policy, v->retry_after_s,
                            v->suggest_provider, v->suggest_model);
        lua_rawseti(L, -2, i + 1);
    }
    lua_setfield(L, -2, "verdicts");
}

static int run_decide(lua_State *L, bool all) {
    runner *r = runner_of(L);
    luaL_checktype(L, 1, LUA_TTABLE);
    if (!r->vm) return luaL_error(L, "decide must be called inside test()");
    if (!all && r->policy < 0)
        return luaL_error(L, "decide: %s tests no policy of this folder (use decide_all)", r->file);
    request *q = lua_newuserdatauv(L, sizeof *q, 0); /* freed by the GC, even on error */
    memset(q, 0, sizeof *q);
    read_subject(L, 1, &q->in.subject);
    q->in.provider = field(L, 1, "provider", "openai");
    q->in.model = field(L, 1, "model", "gpt-4o");
    q->in.purpose = field(L, 1, "purpose", NULL);
    q->in.zone = field(L, 1, "zone", NULL);
    q->in.input_tokens = (int64_t)opt_number(L, 1, "input_tokens", 0);
    q->in.output_tokens = (int64_t)opt_number(L, 1, "output_tokens", 500);
    q->in.now = r->now;
    read_tags(L, 1, q);
    read_estimate(L, r, 1, q);
    apply_budgets(r, q);
    dsc_decision *d = lua_newuserdatauv(L, sizeof *d, 0);
    if (dsc__vm_run(r->vm, &q->in, all ? -1 : r->policy, d) != DSC_OK)
        return luaL_error(L, "decide: %s", d->reason);
    push_decision(L, d, !all);
    return 1;
}

static int l_decide(lua_State *L) {
    return run_decide(L, false);
}
static int l_decide_all(lua_State *L) {
    return run_decide(L, true);
}
static int l_enabled(lua_State *L) {
    runner *r = runner_of(L);
    if (r->policy < 0) return luaL_error(L, "enabled: %s tests no policy of this folder", r->file);
    lua_pushboolean(L, r->set->files[r->policy].enabled);
    return 1;
}

/* --- tests --- */

static void end_test(runner *r) {
    dsc_policy_vm_free(r->vm);
    dsc_grid_free(r->grid);
    r->vm = NULL;
    r->grid = NULL;
}

static int begin_test(lua_State *L, runner *r) {
    dsc_error err;
    r->nb = r->file_nb;
    memcpy(r->budgets, r->file_budgets, sizeof r->budgets);
    r->nm = r->file_nm;
    memcpy(r->models, r->file_models, sizeof r->models);
    r->now = r->file_now;
    r->grid = dsc_grid_new();
    if (r->grid && r->cat && dsc_grid_load_catalog(r->grid, r->cat, &err) != DSC_OK) {
        end_test(r);
        return luaL_error(L, "%s", err.message);
    }
    r->vm = r->grid ? dsc_policy_vm_new(r->set, r->cat, r->grid, NULL, &err) : NULL;
    if (!r->vm) {
        end_test(r);
        return luaL_error(L, "cannot create a policy VM: %s",
                          r->grid ? err.message : "out of memory");
    }
    if (!r->cat || r->nm) /* declared models replace the catalogue */
        dsc_policy_vm_set_oracle(
            r->vm, &(dsc_policy_oracle){r, fake_estimate, fake_models, fake_canonical});
    return 0;
}

static int l_test(lua_State *L) {
    runner *r = runner_of(L);
    const char *name = luaL_checkstring(L, 1);
    luaL_checktype(L, 2, LUA_TFUNCTION);
    if (r->vm) return luaL_error(L, "test() cannot be nested");
    begin_test(L, r);
    lua_pushcfunction(L, dsc__sandbox_msgh);
    lua_pushvalue(L, 2);
    dsc__sandbox_arm(L, TEST_BUDGET_NS); /* each test gets its own time */
    int st = lua_pcall(L, 0, 0, -2);
    dsc__sandbox_disarm(L);
    dsc__sandbox_arm(L, TEST_BUDGET_NS); /* and so does the code after it */
    end_test(r);
    if (st == LUA_OK) {
        r->report->passed++;
        return 0;
    }
    lua_pushfstring(L, "%s (in test '%s')",
                    st == LUA_ERRMEM ? "out of memory" : lua_tostring(L, -1), name);
    fail_line(r, lua_tostring(L, -1));
    return 0;
}

/* expect(): plain Lua, loaded into every test state. */
static const char expect_src[] =
    "local function show(d)\n"
    "  return d.outcome .. (d.reason ~= '' and (' (' .. d.reason .. ')') or '')\n"
    "end\n"
    "function ok(cond, message)\n"
    "  if not cond then error(message or 'check failed', 2) end\n"
    "end\n"
    "return function(d)\n"
    "  local m = {}\n"
    "  local function outcome(want)\n"
    "    return function(text)\n"
    "      if type(d) ~= 'table' or d.outcome == nil then error('expect() needs a decision', 2) "
    "end\n"
    "      if d.outcome ~= want then error('expected ' .. want .. ', got ' .. show(d), 2) end\n"
    "      if text and not string.find(d.reason, text, 1, true) then\n"
    "        error(string.format('expected reason containing %q, got %q', text, d.reason), 2)\n"
    "      end\n"
    "      return m\n"
    "    end\n"
    "  end\n"
    "  m.to_allow = outcome('allow')\n"
    "  m.to_refuse = outcome('refuse')\n"
    "  m.to_throttle = outcome('throttle')\n"
    "  m.to_abstain = outcome('abstain')\n"
    "  function m.to_suggest(model, provider)\n"
    "    local s = d.suggest\n"
    "    if not s or s.model ~= model or (provider and s.provider ~= provider) then\n"
    "      error(string.format('expected suggestion %s, got %s', model,\n"
    "        s and (s.provider .. '/' .. s.model) or 'none'), 2)\n"
    "    end\n"
    "    return m\n"
    "  end\n"
    "  function m.to_not_suggest()\n"
    "    if d.suggest then error('expected no suggestion, got ' .. d.suggest.model, 2) end\n"
    "    return m\n"
    "  end\n"
    "  function m.to_retry_after(n)\n"
    "    if d.retry_after ~= n then\n"
    "      error(string.format('expected retry_after %d, got %d', n, d.retry_after), 2)\n"
    "    end\n"
    "    return m\n"
    "  end\n"
    "  return m\n"
    "end\n";

static int build_api(lua_State *L) {
    lua_createtable(L, 0, 32);
    int api = lua_gettop(L);
    lua_rawgeti(L, LUA_REGISTRYINDEX, dsc__sandbox_of(L)->base_ref);
    for (lua_pushnil(L); lua_next(L, -2);) {
        lua_pushvalue(L, -2);
        lua_insert(L, -2);
        lua_rawset(L, api);
    }
    lua_pop(L, 1);
    static const luaL_Reg fns[] = {{"test", l_test},
                                   {"budget", l_budget},
                                   {"clock", l_clock},
                                   {"model", l_model},
                                   {"grid", l_grid},
                                   {"decide", l_decide},
                                   {"decide_all", l_decide_all},
                                   {"enabled", l_enabled},
                                   {NULL, NULL}};
    luaL_setfuncs(L, fns, 0);
    if (luaL_loadbufferx(L, expect_src, sizeof expect_src - 1, "=expect", "t") != LUA_OK)
        return lua_error(L);
    lua_pushvalue(L, api);
    lua_setupvalue(L, -2, 1);
    lua_call(L, 0, 1);
    lua_setfield(L, api, "expect");
    return 1;
}

/* Protected: load and run one test file with the API as its environment. */
static int run_file(lua_State *L) {
    const dsc__policy_file *f = lua_touserdata(L, 1);
    build_api(L);
    lua_createtable(L, 0, 0); /* the file's globals, reading through to the API */
    lua_insert(L, -2);
    lua_setfield(L, -2, "__index");
    lua_createtable(L, 0, 0);
    lua_insert(L, -2);
    lua_setmetatable(L, -2);
    if (luaL_loadbufferx(L, f->src, f->len, f->chunkname, "t") != LUA_OK) return lua_error(L);
    lua_insert(L, -2);
    lua_setupvalue(L, -2, 1);
    lua_call(L, 0, 0);
    return 0;
}

/* The index of the policy that test file `name` (x_test.lua) tests, or -1. */
static int policy_under_test(const dsc_policy_set *set, const char *name) {
    size_t stem = strlen(name) - strlen("_test.lua");
    for (int i = 0; i < set->n; i++)
        if (strlen(set->files[i].file) == stem + 4 && !strncmp(set->files[i].file, name, stem))
            return i;
    return -1;
}

static void run_test_file(runner *r, const char *name) {
    dsc__policy_file f = {0};
    char path[4096];
    dsc_error err;
    snprintf(path, sizeof path, "%s/%s", r->dir, name);
    r->file = name;
    r->file_nb = r->file_nm = r->nb = r->nm = 0;
    r->now = r->file_now = DEFAULT_NOW;
    r->policy = policy_under_test(r->set, name);
    char chunk[300];
    snprintf(chunk, sizeof chunk, "@%s", name);
    f.chunkname = chunk;
    f.src = dsc__read_file(path, &f.len, &err);
    if (!f.src) {
        fail_line(r, err.message);
        return;
    }
    lua_State *L = dsc__sandbox_open(&r->sb, TEST_MEMORY);
    if (!L) {
        fail_line(r, "cannot create a Lua state: out of memory");
    } else {
        lua_pushcfunction(L, dsc__sandbox_msgh);
        lua_pushcfunction(L, run_file);
        lua_pushlightuserdata(L, &f);
        dsc__sandbox_arm(L, TEST_BUDGET_NS);
        if (lua_pcall(L, 1, 0, 1) != LUA_OK) fail_line(r, lua_tostring(L, -1));
        end_test(r);
        dsc__sandbox_close(L);
    }
    free(f.src);
}

static int cmp_names(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static dsc_status list_tests(const char *dir, char **names, int *n, dsc_error *err) {
    DIR *d = opendir(dir);
    if (!d) return dsc_error_set(err, DSC_IO, "cannot open policy folder '%s'", dir);
    struct dirent *e;
    *n = 0;
    while ((e = readdir(d)) != NULL && *n < MAX_TESTS) {
        size_t len = strlen(e->d_name);
        if (e->d_name[0] == '.' || len < 9 || strcmp(e->d_name + len - 9, "_test.lua")) continue;
        if (!(names[*n] = strdup(e->d_name))) break;
        (*n)++;
    }
    closedir(d);
    qsort(names, (size_t)*n, sizeof *names, cmp_names);
    return DSC_OK;
}

dsc_status dsc_policy_run_tests(const char *dir, const dsc_catalog *cat,
                                void (*on_failure)(void *ud, const char *line), void *ud,
                                dsc_policy_test_report *report, dsc_error *err) {
    memset(report, 0, sizeof *report);
    dsc_policy_set *set = dsc_policy_set_load(dir, err);
    if (!set) return err ? err->code : DSC_POLICY_ERROR;
    runner *r = calloc(1, sizeof *r);
    char *names[MAX_TESTS];
    int n = 0;
    dsc_status st =
        r ? list_tests(dir, names, &n, err) : dsc_error_set(err, DSC_NOMEM, "out of memory");
    if (st == DSC_OK) {
        *r = (runner){.dir = dir,
                      .set = set,
                      .cat = cat,
                      .on_failure = on_failure,
                      .ud = ud,
                      .report = report};
        for (int i = 0; i < n; i++)
            run_test_file(r, names[i]);
    }
    for (int i = 0; i < n; i++)
        free(names[i]);
    free(r);
    dsc_policy_set_unref(set);
    return st;
}
