/*
 * test_policy.c - the policy engine: loading, combining, the ctx API, and hostile
 * policies that must be contained while the VM keeps serving the next request.
 *
 * Each test writes its policies into a fresh temporary folder.
 */
#include "discern/policy.h"

#include "discern/catalog.h"

#include <criterion/criterion.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static char dir[64];

static void make_dir(void) {
    snprintf(dir, sizeof dir, "/tmp/discern-policy-XXXXXX");
    cr_assert_not_null(mkdtemp(dir));
}

static void put(const char *name, const char *src) {
    char path[256];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    cr_assert_not_null(f);
    fputs(src, f);
    fclose(f);
}

static void remove_dir(void) {
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    cr_assert_eq(system(cmd), 0);
}

TestSuite(policy, .init = make_dir, .fini = remove_dir);
TestSuite(policy_hostile, .init = make_dir, .fini = remove_dir);
TestSuite(policy_lint);

static dsc_policy_vm *vm_for(dsc_policy_limits *limits) {
    dsc_error err = {0};
    dsc_policy_set *set = dsc_policy_set_load(dir, &err);
    cr_assert_not_null(set, "load failed: %s", err.message);
    dsc_policy_vm *vm = dsc_policy_vm_new(set, NULL, NULL, limits, &err);
    cr_assert_not_null(vm, "vm failed: %s", err.message);
    dsc_policy_set_unref(set);
    return vm;
}

static dsc_estimate est_g(double gco2e) {
    dsc_estimate e;
    memset(&e, 0, sizeof e);
    e.total.gwp_kgco2eq.min = gco2e / 2000.0;
    e.total.gwp_kgco2eq.max = gco2e / 1000.0;
    e.total.energy_kwh.max = 0.002;
    strcpy(e.zone, "FRA");
    return e;
}

static dsc_policy_input request(const dsc_estimate *e) {
    dsc_policy_input in = {
        .subject = {.org = "acme", .team = "infra", .user = "ana"},
        .provider = "openai",
        .model = "gpt-4o",
        .input_tokens = 100,
        .output_tokens = 800,
        .purpose = "code-review",
        .estimate = e,
        .now = 1767225600,
    };
    return in;
}

static dsc_decision decide(dsc_policy_vm *vm) {
    dsc_estimate e = est_g(4.0);
    dsc_policy_input in = request(&e);
    dsc_decision d;
    cr_assert_eq(dsc_policy_vm_decide(vm, &in, &d), DSC_OK, "%s", d.reason);
    return d;
}

#define POLICY(body) "return { decide = function(req, ctx) " body " end }\n"

/* --- loading --- */

Test(policy, set_loads_policies_in_file_name_order_and_skips_tests_and_purposes) {
    put("b.lua", POLICY("return nil"));
    put("a.lua", "return { name = 'first', decide = function() end }\n");
    put("a_test.lua", "this is not lua at all");
    put("purposes.lua", "return { classes = { essential = {'health'} } }\n");
    dsc_error err = {0};
    dsc_policy_set *set = dsc_policy_set_load(dir, &err);
    cr_assert_not_null(set, "%s", err.message);
    cr_assert_eq(dsc_policy_set_count(set), 2);
    cr_assert_str_eq(dsc_policy_set_name(set, 0), "first");
    cr_assert_str_eq(dsc_policy_set_name(set, 1), "b");
    cr_assert_eq(strlen(dsc_policy_set_version(set)), 16);
    dsc_policy_set_unref(set);
}

Test(policy, version_changes_when_a_file_changes) {
    put("a.lua", POLICY("return allow('x')"));
    dsc_error err;
    dsc_policy_set *s1 = dsc_policy_set_load(dir, &err);
    dsc_policy_set *s2 = dsc_policy_set_load(dir, &err);
    put("a.lua", POLICY("return allow('y')"));
    dsc_policy_set *s3 = dsc_policy_set_load(dir, &err);
    cr_assert_str_eq(dsc_policy_set_version(s1), dsc_policy_set_version(s2));
    cr_assert_str_neq(dsc_policy_set_version(s1), dsc_policy_set_version(s3));
    dsc_policy_set_unref(s1);
    dsc_policy_set_unref(s2);
    dsc_policy_set_unref(s3);
}

Test(policy, syntax_error_names_file_and_line_and_refuses_the_whole_set) {
    put("a.lua", POLICY("return allow()"));
    put("b.lua", "return {\n  decide = function(req, ctx)\n    if then\n  end\n}\n");
    dsc_error err = {0};
    cr_assert_null(dsc_policy_set_load(dir, &err));
    cr_assert_eq(err.code, DSC_POLICY_ERROR);
    cr_assert(strstr(err.message, "b.lua:3:") != NULL, "%s", err.message);
}

Test(policy, missing_decide_names_the_file_and_refuses_the_set) {
    put("a.lua", "local x = 1\nreturn { name = 'a' }\n");
    dsc_error err = {0};
    cr_assert_null(dsc_policy_set_load(dir, &err));
    cr_assert(strstr(err.message, "a.lua:2: the policy table has no 'decide' function"), "%s",
              err.message);
}

Test(policy, bytecode_files_are_refused) {
    put("a.lua", "\x1bLua\x54\x00 binary");
    dsc_error err = {0};
    cr_assert_null(dsc_policy_set_load(dir, &err));
    cr_assert(strstr(err.message, "binary chunk"), "%s", err.message);
}

Test(policy, bad_mode_and_on_error_values_are_refused) {
    put("a.lua", "return { mode = 'loud', decide = function() end }\n");
    dsc_error err = {0};
    cr_assert_null(dsc_policy_set_load(dir, &err));
    cr_assert(strstr(err.message, "a.lua:1: field 'mode'"), "%s", err.message);
    put("a.lua", "return { on_error = 'maybe', decide = function() end }\n");
    cr_assert_null(dsc_policy_set_load(dir, &err));
    cr_assert(strstr(err.message, "field 'on_error'"), "%s", err.message);
}

Test(policy, missing_folder_is_an_io_error) {
    dsc_error err = {0};
    cr_assert_null(dsc_policy_set_load("/nonexistent/discern", &err));
    cr_assert_eq(err.code, DSC_IO);
}

/* --- combining --- */

Test(policy, no_policy_deciding_means_allow_with_a_reason) {
    put("a.lua", POLICY("return nil"));
    dsc_policy_vm *vm = vm_for(NULL);
    dsc_decision d = decide(vm);
    cr_assert_eq(d.outcome, DSC_POLICY_ALLOW);
    cr_assert_str_eq(d.reason, "no policy objected");
    cr_assert_str_eq(d.policy, "");
    cr_assert_eq(d.n_verdicts, 1);
    cr_assert_eq(d.verdicts[0].outcome, DSC_POLICY_ABSTAIN);
    dsc_policy_vm_free(vm);
}

Test(policy, refuse_beats_throttle_beats_allow_and_ties_keep_the_first) {
    put("1.lua", POLICY("return allow('fine')"));
    put("2.lua", POLICY("return throttle{retry_after = 30, reason = 'slow down'}"));
    put("3.lua", POLICY("return throttle{retry_after = 99, reason = 'second throttle'}"));
    dsc_policy_vm *vm = vm_for(NULL);
    dsc_decision d = decide(vm);
    cr_assert_eq(d.outcome, DSC_POLICY_THROTTLE);
    cr_assert_str_eq(d.policy, "2");
    cr_assert_str_eq(d.reason, "slow down");
    cr_assert_eq(d.retry_after_s, 30);
    cr_assert_eq(d.n_verdicts, 3);
    dsc_policy_vm_free(vm);
    put("4.lua", POLICY("return refuse('no', {suggest = {model = 'gpt-4o-mini'}})"));
    vm = vm_for(NULL);
    d = decide(vm);
    cr_assert_eq(d.outcome, DSC_POLICY_REFUSE);
    cr_assert_str_eq(d.policy, "4");
    cr_assert_str_eq(d.suggest_provider, "openai");
    cr_assert_str_eq(d.suggest_model, "gpt-4o-mini");
    dsc_policy_vm_free(vm);
}

Test(policy, shadow_policies_are_recorded_but_never_change_the_outcome) {
    put("a.lua", POLICY("return allow('ok')"));
    put("b.lua",
        "return { mode = 'shadow', decide = function() return refuse('would refuse') end }\n");
    dsc_policy_vm *vm = vm_for(NULL);
    dsc_decision d = decide(vm);
    cr_assert_eq(d.outcome, DSC_POLICY_ALLOW);
    cr_assert_str_eq(d.policy, "a");
    cr_assert(d.verdicts[1].shadow);
    cr_assert_eq(d.verdicts[1].outcome, DSC_POLICY_REFUSE);
    cr_assert_str_eq(d.verdicts[1].reason, "would refuse");
    cr_assert_str_eq(d.version, dsc_policy_set_version(dsc_policy_vm_set(vm)));
    dsc_policy_vm_free(vm);
}

Test(policy, disabled_policies_do_not_run) {
    put("a.lua", "return { enabled = false, decide = function() return refuse('x') end }\n");
    dsc_policy_vm *vm = vm_for(NULL);
    dsc_decision d = decide(vm);
    cr_assert_eq(d.outcome, DSC_POLICY_ALLOW);
    cr_assert_eq(d.n_verdicts, 0);
    dsc_policy_vm_free(vm);
}

Test(policy, a_non_decision_return_value_is_an_error_with_the_line_of_decide) {
    put("a.lua", "\nreturn {\n decide = function() return 'yes' end }\n");
    dsc_policy_vm *vm = vm_for(NULL);
    dsc_decision d = decide(vm);
    cr_assert_eq(d.outcome, DSC_POLICY_REFUSE);
    cr_assert(d.verdicts[0].error);
    cr_assert(strstr(d.reason, "a.lua:3: decide returned a string"), "%s", d.reason);
    dsc_policy_vm_free(vm);
}

Test(policy, invalid_input_is_a_bad_request_naming_the_field) {
    put("a.lua", POLICY("return allow()"));
    dsc_policy_vm *vm = vm_for(NULL);
    dsc_policy_input in = request(NULL);
    in.output_tokens = -1;
    dsc_decision d;
    cr_assert_eq(dsc_policy_vm_decide(vm, &in, &d), DSC_BAD_REQUEST);
    cr_assert(strstr(d.reason, "output_tokens"));
    in = request(NULL);
    in.model = NULL;
    cr_assert_eq(dsc_policy_vm_decide(vm, &in, &d), DSC_BAD_REQUEST);
    cr_assert(strstr(d.reason, "'model'"));
    dsc_policy_vm_free(vm);
}

/* --- the request and ctx --- */

Test(policy, req_carries_the_request_and_ctx_the_estimate_in_api_units) {
    put("a.lua",
        POLICY("local s = req.subject\n"
               "  return allow(string.format('%s/%s/%s %s %s %d %d %s %s %.1f %.1f %s %s %d',"
               " s.org, s.team, s.user, req.provider, req.model, req.input_tokens,"
               " req.output_tokens, req.purpose, req.tags.env, ctx.estimate.gco2e.max,"
               " ctx.estimate.energy_wh.max, ctx.estimate.zone, req.zone, ctx.now()))"));
    dsc_policy_vm *vm = vm_for(NULL);
    dsc_estimate e = est_g(4.0);
    dsc_policy_input in = request(&e);
    dsc_policy_tag tags[] = {{"env", "prod"}};
    in.tags = tags;
    in.n_tags = 1;
    dsc_decision d;
    cr_assert_eq(dsc_policy_vm_decide(vm, &in, &d), DSC_OK);
    cr_assert_str_eq(d.reason,
                     "acme/infra/ana openai gpt-4o 100 800 code-review prod 4.0 2.0 FRA FRA "
                     "1767225600");
    in.n_tags = 0; /* tags do not leak into the next request */
    cr_assert_eq(dsc_policy_vm_decide(vm, &in, &d), DSC_OK);
    cr_assert(strstr(d.reason, "code-review nil 4.0"), "%s", d.reason);
    dsc_policy_vm_free(vm);
}

/* A policy reading a different field of req each request, chosen by input_tokens. */
Test(policy, req_fields_read_lazily_follow_each_request) {
    put("purposes.lua",
        "return { classes = { essential = {'health'}, discretionary = {'fun'} } }\n");
    put("a.lua", POLICY("local n = req.input_tokens\n"
                        "  if n == 1 then return allow(req.model .. ' ' .. req.purpose_class) end\n"
                        "  if n == 2 then return allow(req.provider .. ' ' .. tostring(req.purpose)"
                        " .. ' ' .. req.purpose_class .. ' ' .. tostring(req.subject.team)) end\n"
                        "  return allow(req.model .. ' ' .. req.provider .. ' ' .. "
                        "tostring(req.zone) .. ' ' .. req.output_tokens .. ' ' .. "
                        "tostring(req.subject.team) .. ' ' .. req.purpose_class)"));
    dsc_policy_vm *vm = vm_for(NULL);
    dsc_estimate e = est_g(1.0);
    dsc_policy_input in = request(&e);
    dsc_decision d;
    in.input_tokens = 1;
    in.purpose = "health";
    cr_assert_eq(dsc_policy_vm_decide(vm, &in, &d), DSC_OK);
    cr_assert_str_eq(d.reason, "gpt-4o essential");
    in.input_tokens = 2;
    in.provider = "mistral";
    in.purpose = "fun";
    in.subject.team = NULL;
    cr_assert_eq(dsc_policy_vm_decide(vm, &in, &d), DSC_OK);
    cr_assert_str_eq(d.reason, "mistral fun discretionary nil");
    in.input_tokens = 3;
    in.model = "large";
    in.output_tokens = 7;
    in.purpose = NULL;
    in.zone = "DEU";
    in.subject.team = "data";
    cr_assert_eq(dsc_policy_vm_decide(vm, &in, &d), DSC_OK);
    cr_assert_str_eq(d.reason, "large mistral DEU 7 data productive");
    in.input_tokens = 1; /* back to the first fields, which this VM has refilled since */
    in.provider = "openai";
    in.purpose = "health";
    cr_assert_eq(dsc_policy_vm_decide(vm, &in, &d), DSC_OK);
    cr_assert_str_eq(d.reason, "large essential");
    dsc_policy_vm_free(vm);
}

Test(policy, pairs_lists_every_field_of_req_subject_tags_and_estimate) {
#define KEYS                                                                                       \
    "local function keys(t) local k = {} for n, v in pairs(t) do\n"                                \
    "  k[#k + 1] = n .. '=' .. (type(v) == 'table' and 'table' or tostring(v)) end\n"              \
    "  table.sort(k) return table.concat(k, ',') end\n"
    put("a.lua", KEYS POLICY("return allow(keys(req) .. ' | ' .. keys(req.subject) .. ' | ' .. "
                             "keys(req.tags))"));
    put("b.lua", KEYS POLICY("return allow(keys(ctx.estimate) .. ' | ' .. "
                             "keys(ctx.estimate.gco2e))"));
#undef KEYS
    dsc_policy_vm *vm = vm_for(NULL);
    dsc_estimate e = est_g(4.0);
    dsc_policy_input in = request(&e);
    dsc_policy_tag tags[] = {{"env", "prod"}, {"app", "bot"}};
    in.tags = tags;
    in.n_tags = 2;
    dsc_decision d;
    cr_assert_eq(dsc_policy_vm_decide(vm, &in, &d), DSC_OK);
    cr_assert_str_eq(d.verdicts[0].reason,
                     "input_tokens=100,model=gpt-4o,output_tokens=800,provider=openai,"
                     "purpose=code-review,purpose_class=productive,subject=table,tags=table,"
                     "zone=FRA | org=acme,team=infra,user=ana | app=bot,env=prod");
    cr_assert_str_eq(d.verdicts[1].reason,
                     "adpe_kgsbeq=table,energy_wh=table,gco2e=table,pe_mj=table,water_ml=table,"
                     "zone=FRA | max=4.0,min=2.0");
    in.n_tags = 1; /* and the next request shows its own */
    in.purpose = NULL;
    in.subject.user = NULL;
    e.total.gwp_kgco2eq.max = 0.008;
    cr_assert_eq(dsc_policy_vm_decide(vm, &in, &d), DSC_OK);
    cr_assert_str_eq(d.verdicts[0].reason,
                     "input_tokens=100,model=gpt-4o,output_tokens=800,provider=openai,"
                     "purpose_class=productive,subject=table,tags=table,zone=FRA | "
                     "org=acme,team=infra | env=prod");
    cr_assert(strstr(d.verdicts[1].reason, "| max=8.0,min=2.0"), "%s", d.verdicts[1].reason);
    dsc_policy_vm_free(vm);
}

Test(policy, a_tag_read_in_one_request_is_gone_in_the_next) {
    put("a.lua", POLICY("return allow(tostring(req.tags.env) .. ' ' .. tostring(req.tags.app))"));
    dsc_policy_vm *vm = vm_for(NULL);
    dsc_estimate e = est_g(4.0);
    dsc_policy_input in = request(&e);
    dsc_policy_tag tags[] = {{"env", "prod"}, {"env", "test"}};
    in.tags = tags;
    in.n_tags = 2;
    dsc_decision d;
    cr_assert_eq(dsc_policy_vm_decide(vm, &in, &d), DSC_OK);
    cr_assert_str_eq(d.reason, "test nil", "the last of a repeated key wins");
    in.n_tags = 0;
    cr_assert_eq(dsc_policy_vm_decide(vm, &in, &d), DSC_OK);
    cr_assert_str_eq(d.reason, "nil nil");
    dsc_policy_vm_free(vm);
}

/* The value the test below gives ctx.estimate.gco2e.max, for case i. */
static double format_case(unsigned *seed, int i) {
    static const double fixed[] = {
        0.0,       -0.0,       0.125,    2.5,        0.0125, 12.5,
        9.995,     999.5,      99.95,    0.00099995, 1e-5,   123456789.0,
        1.0 / 3,   2.0 / 3,    1e21,     1e-300,     5e-324, 1.7976931348623157e308,
        1.0 / 0.0, -1.0 / 0.0, 0.0 / 0.0};
    int nf = (int)(sizeof fixed / sizeof fixed[0]);
    if (i < nf) return fixed[i];
    *seed = *seed * 1103515245u + 12345u;
    unsigned r = *seed >> 8;
    double mant = (double)(r % 1000000u) / 1000.0; /* often a few decimals: near halves */
    int exp10 = (int)(r % 61u) - 30;
    double v = i % 3 ? mant * pow(10.0, exp10) : (double)r / 7.0 * pow(2.0, (int)(r % 40) - 20);
    return i % 5 == 0 ? -v : v;
}

Test(policy, decision_options_are_checked_naming_the_field) {
    put("a.lua", POLICY("return allow{reason = 5}"));
    put("b.lua", POLICY("return throttle{retry_after = -1}"));
    put("c.lua", POLICY("return allow{suggest = true}"));
    put("d.lua", POLICY("return allow('r', {suggest = {provider = 'p'}})"));
    put("e.lua", POLICY("return throttle(setmetatable({}, {__index = {reason = 'inherited', "
                        "retry_after = 2.5, suggest = {model = 'small'}}}))"));
    dsc_policy_vm *vm = vm_for(NULL);
    dsc_decision d = decide(vm);
    cr_assert(strstr(d.verdicts[0].reason, "field 'reason' must be a string, got number"), "%s",
              d.verdicts[0].reason);
    cr_assert(strstr(d.verdicts[1].reason, "field 'retry_after' must be a number of seconds"), "%s",
              d.verdicts[1].reason);
    cr_assert(strstr(d.verdicts[2].reason,
                     "field 'suggest' must be a model name or a table {provider=, model=}, got "
                     "boolean"),
              "%s", d.verdicts[2].reason);
    cr_assert(strstr(d.verdicts[3].reason, "field 'suggest' needs a 'model'"), "%s",
              d.verdicts[3].reason);
    cr_assert_str_eq(d.verdicts[4].reason, "inherited");
    cr_assert_eq(d.verdicts[4].retry_after_s, 3);
    cr_assert_str_eq(d.verdicts[4].suggest_model, "small");
    cr_assert_str_eq(d.verdicts[4].suggest_provider, "openai", "the request's provider");
    dsc_policy_vm_free(vm);
}

Test(policy, suggest_may_name_a_model_of_the_request_provider_as_a_plain_string) {
    put("a.lua", POLICY("return allow('smaller', {suggest = 'gpt-4o-mini'})"));
    put("b.lua", POLICY("return throttle{retry_after = 1, suggest = 'small'}"));
    put("c.lua", POLICY("return allow{suggest = ''}"));
    put("d.lua", POLICY("return allow{suggest = 5}"));
    dsc_policy_vm *vm = vm_for(NULL);
    dsc_decision d = decide(vm);
    cr_assert_str_eq(d.verdicts[0].suggest_model, "gpt-4o-mini");
    cr_assert_str_eq(d.verdicts[0].suggest_provider, "openai", "the request's provider");
    cr_assert_str_eq(d.verdicts[1].suggest_model, "small");
    cr_assert_str_eq(d.verdicts[1].suggest_provider, "openai");
    cr_assert(strstr(d.verdicts[2].reason, "field 'suggest' needs a 'model'"), "%s",
              d.verdicts[2].reason);
    cr_assert(strstr(d.verdicts[3].reason, "field 'suggest' must be a model name or a table"), "%s",
              d.verdicts[3].reason);
    cr_assert(strstr(d.verdicts[3].reason, "got number"), "%s", d.verdicts[3].reason);
    dsc_policy_vm_free(vm);
}

Test(policy, a_decision_read_by_its_policy_shows_its_outcome_reason_retry_and_suggestion) {
    put("a.lua",
        POLICY("local a = throttle{retry_after = 2, reason = 'wait', suggest = 'small'}\n"
               "  local b = allow('r', {suggest = {provider = 'p', model = 'm'}})\n"
               "  local c = refuse()\n"
               "  local long = allow(string.rep('x', 300))\n"
               "  return allow(string.format('%s %s %d %s [%s] | %s %s %s | %s [%s] %s %s | %d',"
               " a.outcome, a.reason, a.retry_after, a.suggest.model, a.suggest.provider,"
               " b.suggest.provider, b.suggest.model, tostring(b), c.outcome, c.reason,"
               " tostring(c.suggest), tostring(c), #long.reason))"));
    dsc_policy_vm *vm = vm_for(NULL);
    dsc_decision d = decide(vm);
    cr_assert_str_eq(d.reason,
                     "throttle wait 2 small [] | p m allow(r) | refuse [] nil refuse() | 255");
    dsc_policy_vm_free(vm);
}

Test(policy, string_format_writes_what_printf_writes) {
    put("a.lua", POLICY("return allow(string.format('%.' .. req.input_tokens .. 'g|%d|%s|%%', "
                        "ctx.estimate.gco2e.max, req.output_tokens, req.model))"));
    dsc_policy_vm *vm = vm_for(NULL);
    dsc_estimate e = est_g(1.0);
    dsc_policy_input in = request(&e);
    unsigned seed = 1;
    for (int i = 0; i < 20000; i++) {
        double v = format_case(&seed, i);
        e.total.gwp_kgco2eq.max = v / 1000.0;
        double shown = e.total.gwp_kgco2eq.max * 1000.0; /* what the policy reads */
        in.input_tokens = i % 18;                        /* 16 and 17: beyond the fast path */
        in.output_tokens = i % 7 == 0 ? INT64_MAX - i : (int64_t)i * 7919;
        dsc_decision d;
        cr_assert_eq(dsc_policy_vm_decide(vm, &in, &d), DSC_OK, "%s", d.reason);
        char want[256];
        snprintf(want, sizeof want, "%.*g|%lld|gpt-4o|%%", (int)in.input_tokens, shown,
                 (long long)in.output_tokens);
        cr_assert_str_eq(d.reason, want, "case %d: %.17g with %%.%dg", i, shown,
                         (int)in.input_tokens);
    }
    dsc_policy_vm_free(vm);
}

Test(policy, string_format_keeps_lua_errors_and_other_conversions) {
    put("a.lua", POLICY("return allow(string.format('%5.1f|%x|%q', 3.14159, 255, 'a'))"));
    put("b.lua", POLICY("return allow(string.format('%d', 1.5))"));
    put("c.lua", POLICY("return allow(string.format('%s and %s', 'one'))"));
    put("d.lua", POLICY("return allow(string.format('%d %.2g %s %d %d', '12', '0.125', 3.0, -5, "
                        "math.mininteger))"));
    dsc_policy_vm *vm = vm_for(NULL);
    dsc_decision d = decide(vm);
    cr_assert_str_eq(d.verdicts[0].reason, "  3.1|ff|\"a\"");
    cr_assert(strstr(d.verdicts[1].reason,
                     "bad argument #2 to 'format' (number has no integer representation)"),
              "%s", d.verdicts[1].reason);
    cr_assert(strstr(d.verdicts[2].reason, "bad argument #3 to 'format' (no value)"), "%s",
              d.verdicts[2].reason);
    cr_assert_str_eq(d.verdicts[3].reason, "12 0.12 3.0 -5 -9223372036854775808");
    dsc_policy_vm_free(vm);
}

static dsc_budget_state budget(const char *sel, const char *counter, dsc_metric m, double limit,
                               double used) {
    dsc_budget_state b;
    memset(&b, 0, sizeof b);
    snprintf(b.selector, sizeof b.selector, "%s", sel);
    snprintf(b.counter, sizeof b.counter, "%s", counter);
    snprintf(b.window, sizeof b.window, "month");
    b.metric = m;
    b.limit = (int64_t)(limit * DSC_MICRO);
    b.used = (int64_t)(used * DSC_MICRO);
    b.remaining = b.limit - b.used;
    b.request = 4 * DSC_MICRO;
    b.would_exceed = b.used + b.request > b.limit;
    b.resets_at = 1769904000;
    return b;
}

Test(policy, ctx_budget_finds_budgets_by_selector_counter_or_kind_and_metric) {
    put("a.lua", POLICY("local t = ctx.budget('team', 'gco2e')\n"
                        "  local o = ctx.budget('org:acme')\n"
                        "  local none = ctx.budget('team', 'water_ml')\n"
                        "  return allow(string.format('%s %s %.1f %.1f %s %d %s %d %s', t.counter,"
                        " t.metric, t.limit, t.remaining, tostring(t.would_exceed), t.resets_at,"
                        " o.metric, #ctx.budgets(), tostring(none)))"));
    dsc_policy_vm *vm = vm_for(NULL);
    dsc_budget_state bs[] = {budget("org:acme", "org:acme", DSC_METRIC_ENERGY_WH, 1000, 10),
                             budget("team:*", "team:infra", DSC_METRIC_GCO2E, 50, 48)};
    dsc_estimate e = est_g(4.0);
    dsc_policy_input in = request(&e);
    in.budgets = bs;
    in.n_budgets = 2;
    dsc_decision d;
    cr_assert_eq(dsc_policy_vm_decide(vm, &in, &d), DSC_OK);
    cr_assert_str_eq(d.reason, "team:infra gco2e 50.0 2.0 true 1769904000 energy_wh 2 nil");
    in.n_budgets = 1; /* the next request sees only its own budgets */
    cr_assert_eq(dsc_policy_vm_decide(vm, &in, &d), DSC_OK);
    cr_assert(d.verdicts[0].error, "%s", d.reason);
    dsc_policy_vm_free(vm);
}

Test(policy, ctx_budgets_lists_each_request_own_budgets_as_their_number_changes) {
    put("a.lua", POLICY("local s = {} for i, b in ipairs(ctx.budgets()) do s[i] = b.counter end\n"
                        "  return allow(#ctx.budgets() .. ' ' .. table.concat(s, ','))"));
    dsc_policy_vm *vm = vm_for(NULL);
    dsc_budget_state bs[] = {budget("org:acme", "org:acme", DSC_METRIC_ENERGY_WH, 1000, 10),
                             budget("team:*", "team:infra", DSC_METRIC_GCO2E, 50, 48),
                             budget("user:*", "user:ana", DSC_METRIC_REQUESTS, 10, 1)};
    dsc_estimate e = est_g(4.0);
    dsc_policy_input in = request(&e);
    in.budgets = bs;
    static const struct {
        int n;
        const char *want;
    } steps[] = {{2, "2 org:acme,team:infra"},
                 {1, "1 org:acme"},
                 {3, "3 org:acme,team:infra,user:ana"},
                 {0, "0 "},
                 {3, "3 org:acme,team:infra,user:ana"}};
    for (size_t i = 0; i < sizeof steps / sizeof steps[0]; i++) {
        in.n_budgets = steps[i].n;
        dsc_decision d;
        cr_assert_eq(dsc_policy_vm_decide(vm, &in, &d), DSC_OK);
        cr_assert_str_eq(d.reason, steps[i].want, "step %zu", i);
    }
    dsc_policy_vm_free(vm);
}

Test(policy, ctx_budgets_would_exceed_lists_only_the_exceeded_budgets_in_order) {
    /* the filter is read first, so a later budget's table is asked for before earlier ones */
    put("a.lua", POLICY("local s = {} for i, b in ipairs(ctx.budgets('would_exceed')) do\n"
                        "    s[i] = b.counter .. (b.would_exceed and '!' or '?') end\n"
                        "  local all = {} for i, b in ipairs(ctx.budgets()) do\n"
                        "    all[i] = b.counter end\n"
                        "  return allow(#ctx.budgets('would_exceed') .. ' ' .. table.concat(s, ',')"
                        " .. ' / ' .. table.concat(all, ','))"));
    dsc_policy_vm *vm = vm_for(NULL);
    dsc_budget_state bs[] = {budget("org:acme", "org:acme", DSC_METRIC_ENERGY_WH, 1000, 10),
                             budget("team:*", "team:infra", DSC_METRIC_GCO2E, 50, 48),
                             budget("user:*", "user:ana", DSC_METRIC_REQUESTS, 10, 9)};
    dsc_estimate e = est_g(4.0);
    dsc_policy_input in = request(&e);
    in.budgets = bs;
    static const struct {
        int n;
        bool org_over;
        const char *want;
    } steps[] = {{3, false, "2 team:infra!,user:ana! / org:acme,team:infra,user:ana"},
                 {1, false, "0  / org:acme"},
                 {3, true, "3 org:acme!,team:infra!,user:ana! / org:acme,team:infra,user:ana"},
                 {2, false, "1 team:infra! / org:acme,team:infra"}};
    for (size_t i = 0; i < sizeof steps / sizeof steps[0]; i++) {
        in.n_budgets = steps[i].n;
        bs[0].would_exceed = steps[i].org_over;
        dsc_decision d;
        cr_assert_eq(dsc_policy_vm_decide(vm, &in, &d), DSC_OK);
        cr_assert_str_eq(d.reason, steps[i].want, "step %zu", i);
    }
    dsc_policy_vm_free(vm);
}

Test(policy, ctx_budgets_refuses_an_unknown_filter_or_one_not_a_string_naming_it) {
    put("a.lua", POLICY("return allow(tostring(#ctx.budgets('nope')))"));
    put("b.lua", POLICY("return allow(tostring(#ctx.budgets(5)))"));
    put("c.lua", POLICY("local ok = pcall(function() ctx.budgets('would_exceed')[1] = 1 end)\n"
                        "  return allow(tostring(ok))"));
    dsc_policy_vm *vm = vm_for(NULL);
    dsc_decision d = decide(vm);
    cr_assert(d.verdicts[0].error);
    cr_assert(strstr(d.verdicts[0].reason,
                     "ctx.budgets: unknown filter 'nope' (expected \"would_exceed\")"),
              "%s", d.verdicts[0].reason);
    cr_assert(d.verdicts[1].error);
    cr_assert(strstr(d.verdicts[1].reason, "argument 'filter' must be a string, got number"), "%s",
              d.verdicts[1].reason);
    cr_assert_str_eq(d.verdicts[2].reason, "false", "the list is read-only");
    dsc_policy_vm_free(vm);
}

Test(policy, ctx_budget_fields_follow_each_request_when_the_same_slot_is_refilled) {
    put("a.lua",
        POLICY("local b = ctx.budgets()[1]\n"
               "  return allow(string.format('%s %s %s %s %.1f %.1f %.1f %.1f %.1f %d %d %s',"
               " b.selector, tostring(b.counter), b.metric, b.window, b.limit, b.used,"
               " b.held, b.remaining, b.request, b.resets_at, b.retry_after,"
               " tostring(b.would_exceed)))"));
    dsc_policy_vm *vm = vm_for(NULL);
    dsc_budget_state b = budget("team:*", "team:infra", DSC_METRIC_GCO2E, 50, 10);
    dsc_estimate e = est_g(4.0);
    dsc_policy_input in = request(&e);
    in.budgets = &b;
    in.n_budgets = 1;
    dsc_decision d;
    cr_assert_eq(dsc_policy_vm_decide(vm, &in, &d), DSC_OK);
    cr_assert_str_eq(d.reason,
                     "team:* team:infra gco2e month 50.0 10.0 0.0 40.0 4.0 1769904000 0 false");
    cr_assert_eq(dsc_policy_vm_decide(vm, &in, &d), DSC_OK); /* unchanged: the same answer */
    cr_assert_str_eq(d.reason,
                     "team:* team:infra gco2e month 50.0 10.0 0.0 40.0 4.0 1769904000 0 false");
    b = budget("user:*", "", DSC_METRIC_ENERGY_WH, 60, 58); /* every field changes */
    snprintf(b.window, sizeof b.window, "rolling:1h");
    b.held = 1 * DSC_MICRO;
    b.remaining = 1 * DSC_MICRO;
    b.request = 3 * DSC_MICRO;
    b.would_exceed = true;
    b.resets_at = 1769900000;
    b.retry_after_s = 120;
    cr_assert_eq(dsc_policy_vm_decide(vm, &in, &d), DSC_OK);
    cr_assert_str_eq(d.reason,
                     "user:* nil energy_wh rolling:1h 60.0 58.0 1.0 1.0 3.0 1769900000 120 true");
    b.used = 20 * DSC_MICRO; /* one field changes back */
    cr_assert_eq(dsc_policy_vm_decide(vm, &in, &d), DSC_OK);
    cr_assert_str_eq(d.reason,
                     "user:* nil energy_wh rolling:1h 60.0 20.0 1.0 1.0 3.0 1769900000 120 true");
    dsc_policy_vm_free(vm);
}

Test(policy, purposes_map_free_text_to_classes_with_a_default) {
    put("a.lua", POLICY("return allow(req.purpose_class .. ' ' .. ctx.purpose_class('Write "
                        "Marketing copy!'))"));
    put("purposes.lua", "return { default = 'productive', classes = {\n"
                        "  essential = {'health', 'accessibility'},\n"
                        "  productive = {'code', 'translation'},\n"
                        "  discretionary = {'marketing copy', 'entertainment'} } }\n");
    dsc_policy_vm *vm = vm_for(NULL);
    dsc_decision d = decide(vm); /* purpose "code-review" */
    cr_assert_str_eq(d.reason, "productive discretionary");
    cr_assert_str_eq(dsc_policy_vm_purpose_class(vm, "Health"), "essential");
    cr_assert_str_eq(dsc_policy_vm_purpose_class(vm, "public health research"), "essential");
    cr_assert_str_eq(dsc_policy_vm_purpose_class(vm, "knitting"), "productive");
    cr_assert_str_eq(dsc_policy_vm_purpose_class(vm, NULL), "productive");
    dsc_policy_vm_free(vm);
}

Test(policy, bad_purposes_file_refuses_the_set) {
    put("a.lua", POLICY("return nil"));
    put("purposes.lua", "return { classes = { essential = 'health' } }\n");
    dsc_error err = {0};
    cr_assert_null(dsc_policy_set_load(dir, &err));
    cr_assert(strstr(err.message, "purposes.lua:1: class 'essential'"), "%s", err.message);
}

Test(policy, ctx_grid_reads_live_then_annual_values) {
    put("a.lua", POLICY("local v, src = ctx.grid()\n"
                        "  local f = ctx.grid_forecast()\n"
                        "  return allow(string.format('%.0f %s %d %s', v, src, #f, "
                        "tostring(ctx.grid('XXX'))))"));
    dsc_error err = {0};
    dsc_policy_set *set = dsc_policy_set_load(dir, &err);
    dsc_grid *g = dsc_grid_new();
    dsc_policy_vm *vm = dsc_policy_vm_new(set, NULL, g, NULL, &err);
    dsc_grid_set_annual(g, "FRA", 56, &err);
    dsc_decision d = decide(vm);
    cr_assert_str_eq(d.reason, "56 annual 0 nil");
    dsc_grid_set_live(g, "FRA", 120, 1767225600 + 60, &err);
    dsc_grid_point pts[] = {{1767225600 + 3600, 30}, {1767225600, 120}};
    dsc_grid_set_forecast(g, "FRA", pts, 2, &err);
    d = decide(vm);
    cr_assert_str_eq(d.reason, "120 live 2 nil");
    dsc_policy_vm_free(vm);
    dsc_grid_free(g);
    dsc_policy_set_unref(set);
}

static dsc_status fake_estimate(void *ud, const dsc_estimate_input *in, dsc_estimate *out,
                                dsc_error *err) {
    (void)ud;
    memset(out, 0, sizeof *out);
    if (strcmp(in->model, "gpt-4o-mini") == 0)
        out->total.gwp_kgco2eq.max = 0.0005;
    else if (strcmp(in->model, "gpt-4o") == 0)
        out->total.gwp_kgco2eq.max = 0.004;
    else
        return dsc_error_set(err, DSC_UNKNOWN_MODEL, "unknown model '%s'", in->model);
    return DSC_OK;
}

static int fake_models(void *ud, const char *provider, dsc_policy_model *out, int max) {
    (void)ud;
    if (strcmp(provider, "openai") != 0) return -1;
    dsc_policy_model ms[] = {{"gpt-4o", 200}, {"gpt-4o-mini", 8}};
    for (int i = 0; i < 2 && i < max; i++)
        out[i] = ms[i];
    return 2;
}

Test(policy, what_if_estimates_and_model_lists_come_from_the_oracle) {
    put("a.lua", POLICY("local m = ctx.models()\n"
                        "  local alt = ctx.estimate{model = m[1].name}\n"
                        "  local bad, err = ctx.estimate{model = 'nope'}\n"
                        "  local _, below = ctx.models('openai', 100)\n"
                        "  local _, none = ctx.models('openai', 1)\n"
                        "  local _, all = ctx.models('openai', 1000)\n"
                        "  assert(below == 1 and none == 0 and all == 2, 'counts below')\n"
                        "  return allow(string.format('%s %.1f %s %s %s', m[1].name, alt.gco2e.max,"
                        " tostring(bad), err, tostring(ctx.models('nobody'))))"));
    dsc_policy_vm *vm = vm_for(NULL);
    dsc_policy_oracle o = {NULL, fake_estimate, fake_models, NULL};
    dsc_policy_vm_set_oracle(vm, &o);
    dsc_decision d = decide(vm);
    cr_assert_str_eq(d.reason, "gpt-4o-mini 0.5 nil unknown model 'nope' nil", "%s", d.reason);
    dsc_policy_vm_free(vm);
}

Test(policy, ctx_estimate_of_a_model_name_estimates_the_request_on_that_model) {
    put("a.lua", POLICY("local alt = ctx.estimate('gpt-4o-mini')\n"
                        "  local same = ctx.estimate{model = 'gpt-4o-mini'}\n"
                        "  local bad, err = ctx.estimate('nope')\n"
                        "  return allow(string.format('%.1f %s %s %s', alt.gco2e.max,"
                        " tostring(alt.gco2e.max == same.gco2e.max), tostring(bad), err))"));
    put("b.lua", POLICY("return allow(tostring(ctx.estimate(true)))"));
    put("c.lua", POLICY("return allow(tostring(ctx.estimate()))"));
    dsc_policy_vm *vm = vm_for(NULL);
    dsc_policy_oracle o = {NULL, fake_estimate, fake_models, NULL};
    dsc_policy_vm_set_oracle(vm, &o);
    dsc_decision d = decide(vm);
    cr_assert_str_eq(d.verdicts[0].reason, "0.5 true nil unknown model 'nope'", "%s",
                     d.verdicts[0].reason);
    for (int i = 1; i <= 2; i++) {
        cr_assert(d.verdicts[i].error, "%s", d.verdicts[i].reason);
        cr_assert(strstr(d.verdicts[i].reason, "ctx.estimate: argument 'model' must be a model "
                                               "name or a table"),
                  "%s", d.verdicts[i].reason);
    }
    cr_assert(strstr(d.verdicts[1].reason, "got boolean"), "%s", d.verdicts[1].reason);
    cr_assert(strstr(d.verdicts[2].reason, "got no value"), "%s", d.verdicts[2].reason);
    dsc_policy_vm_free(vm);
}

/* An oracle answering with the output tokens it was asked for, in the gwp. */
static dsc_status tokens_estimate(void *ud, const dsc_estimate_input *in, dsc_estimate *out,
                                  dsc_error *err) {
    (void)ud;
    (void)err;
    memset(out, 0, sizeof *out);
    out->total.gwp_kgco2eq.max = (double)in->output_tokens / 1000.0;
    return DSC_OK;
}

Test(policy, ctx_estimate_of_a_model_name_keeps_the_request_tokens) {
    put("a.lua",
        POLICY("return allow(string.format('%.0f', ctx.estimate('gpt-4o-mini').gco2e.max))"));
    dsc_policy_vm *vm = vm_for(NULL);
    dsc_policy_oracle o = {NULL, tokens_estimate, fake_models, NULL};
    dsc_policy_vm_set_oracle(vm, &o);
    dsc_decision d = decide(vm);
    cr_assert_str_eq(d.reason, "800", "%s", d.reason);
    dsc_policy_vm_free(vm);
}

/* An oracle answering with the method and scope it was asked for, in the gwp. */
static dsc_status echo_estimate(void *ud, const dsc_estimate_input *in, dsc_estimate *out,
                                dsc_error *err) {
    (void)ud;
    (void)err;
    memset(out, 0, sizeof *out);
    out->total.gwp_kgco2eq.max = (double)(in->method * 100 + in->scope * 10 + in->water) / 1000.0;
    return DSC_OK;
}

Test(policy, what_if_estimates_use_the_method_and_scope_of_the_request_estimate) {
    put("a.lua", POLICY("return allow(string.format('%.0f', "
                        "ctx.estimate{model = 'gpt-4o-mini'}.gco2e.max))"));
    dsc_policy_vm *vm = vm_for(NULL);
    dsc_policy_oracle o = {NULL, echo_estimate, fake_models, NULL};
    dsc_policy_vm_set_oracle(vm, &o);
    dsc_estimate e = est_g(4.0);
    e.method = DSC_METHOD_DISCERN;
    e.scope = DSC_SCOPE_LIFECYCLE;
    e.water = DSC_WATER_TOTAL;
    dsc_policy_input in = request(&e);
    dsc_decision d;
    cr_assert_eq(dsc_policy_vm_decide(vm, &in, &d), DSC_OK, "%s", d.reason);
    cr_assert_str_eq(d.reason, "111", "what-if asked with method/scope/water %s", d.reason);
    dsc_policy_vm_free(vm);
}

static void capture_log(void *ud, const char *policy, const char *line) {
    snprintf(ud, 128, "%s: %s", policy, line);
}

Test(policy, ctx_log_lines_reach_the_log_callback) {
    put("a.lua", POLICY("ctx.log('seen', req.model, 3, true, {}) return nil"));
    dsc_policy_vm *vm = vm_for(NULL);
    char line[128] = "";
    decide(vm); /* no callback: dropped */
    dsc_policy_vm_set_log(vm, capture_log, line);
    decide(vm);
    cr_assert_str_eq(line, "a: seen gpt-4o 3 true table");
    dsc_policy_vm_free(vm);
}

/* --- hostile policies: contained, on_error applied, the next request served --- */

/* Load `hostile` as a.lua next to a well-behaved b.lua; check the hostile policy gets
 * its on_error outcome with `expect` in the reason, then that b still answers. */
static dsc_policy_vm *contained(const char *hostile, const char *expect) {
    put("a.lua", hostile);
    put("b.lua", POLICY("return allow('b is fine: ' .. req.model)"));
    dsc_policy_limits lim = {.memory_bytes = 8u << 20, .time_budget_ns = 500000000};
    dsc_policy_vm *vm = vm_for(&lim);
    dsc_decision d = decide(vm);
    cr_assert_eq(d.outcome, DSC_POLICY_REFUSE, "outcome %d: %s", d.outcome, d.reason);
    cr_assert(d.verdicts[0].error);
    cr_assert(strstr(d.verdicts[0].reason, expect), "reason: %s", d.verdicts[0].reason);
    cr_assert_str_eq(d.verdicts[1].reason, "b is fine: gpt-4o");
    d = decide(vm); /* and again: the VM is still healthy */
    cr_assert_str_eq(d.verdicts[1].reason, "b is fine: gpt-4o");
    cr_assert(strstr(d.verdicts[0].reason, expect), "reason: %s", d.verdicts[0].reason);
    return vm;
}

Test(policy_hostile, infinite_loop_is_cut_by_the_time_budget) {
    dsc_policy_vm *vm =
        contained(POLICY("while true do end"), "a.lua:1: time budget of 500 ms exceeded");
    dsc_policy_stats st;
    dsc_policy_vm_stats(vm, &st);
    cr_assert_eq(st.timeouts, 2);
    cr_assert_eq(st.errors, 2);
    cr_assert_eq(st.evaluations, 4);
    dsc_policy_vm_free(vm);
}

static int64_t thread_cpu_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

Test(policy_hostile, a_runaway_policy_is_cut_by_the_watchdog_signal_soon_after_its_budget) {
    put("a.lua", POLICY("while true do end"));
    dsc_policy_limits lim = {.time_budget_ns = 30000000};
    dsc_policy_vm *vm = vm_for(&lim);
    int64_t t0 = thread_cpu_ns();
    dsc_decision d = decide(vm);
    int64_t spent = thread_cpu_ns() - t0;
    cr_assert(strstr(d.verdicts[0].reason, "time budget of 30 ms exceeded"), "%s", d.reason);
    cr_assert_geq(spent, 30000000, "cut after %lld ns of CPU, before its budget", (long long)spent);
    cr_assert_lt(spent, 250000000, "cut after %lld ns of CPU", (long long)spent);
    dsc_policy_stats st;
    dsc_policy_vm_stats(vm, &st);
    /* at least the loop's (a loaded machine may also stretch a short one across ticks) */
    cr_assert_geq(st.watchdog_signals, 1, "the loop outlived a tick: %llu signals",
                  (unsigned long long)st.watchdog_signals);
    cr_assert_eq(st.timeouts, 1);
    dsc_policy_vm_free(vm);
}

Test(policy_hostile, no_watchdog_signal_reaches_the_thread_outside_an_evaluation) {
    put("a.lua", POLICY("if req.input_tokens > 100 then while true do end end\n"
                        "  return allow('quick')"));
    dsc_policy_limits lim = {.time_budget_ns = 20000000};
    dsc_policy_vm *vm = vm_for(&lim);
    dsc_estimate e = est_g(1.0);
    dsc_policy_input in = request(&e);
    in.input_tokens = 101;
    dsc_decision d;
    cr_assert_eq(dsc_policy_vm_decide(vm, &in, &d), DSC_OK);
    cr_assert(strstr(d.reason, "time budget"), "%s", d.reason);
    /* 50 ms asleep, idle, then busy with quick evaluations: an interrupted sleep
     * (EINTR) would be a signal outside an evaluation */
    struct timespec nap = {0, 50000000}, left;
    cr_assert_eq(nanosleep(&nap, &left), 0, "the idle thread was interrupted");
    in.input_tokens = 1;
    for (int i = 0; i < 20; i++) {
        cr_assert_eq(dsc_policy_vm_decide(vm, &in, &d), DSC_OK);
        cr_assert_str_eq(d.reason, "quick", "the hook of the cut evaluation is gone");
        nap = (struct timespec){0, 2000000};
        cr_assert_eq(nanosleep(&nap, &left), 0, "interrupted after evaluation %d", i);
    }
    dsc_policy_vm_free(vm);
}

Test(policy_hostile, a_slow_policy_within_its_budget_is_watched_but_not_cut) {
    put("a.lua", POLICY("local x = 0 for i = 1, req.input_tokens do x = x + i % 7 end\n"
                        "  return allow('done ' .. x)"));
    dsc_policy_limits lim = {.time_budget_ns = 2000000000};
    dsc_policy_vm *vm = vm_for(&lim);
    dsc_estimate e = est_g(1.0);
    dsc_policy_input in = request(&e);
    in.input_tokens = 5000000; /* tens of ms: many ticks */
    dsc_decision d;
    cr_assert_eq(dsc_policy_vm_decide(vm, &in, &d), DSC_OK);
    cr_assert_eq(d.outcome, DSC_POLICY_ALLOW, "%s", d.reason);
    dsc_policy_stats st;
    dsc_policy_vm_stats(vm, &st);
    cr_assert_geq(st.watchdog_signals, 1);
    cr_assert_eq(st.errors, 0);
    dsc_policy_vm_free(vm);
}

typedef struct runaway {
    dsc_policy_set *set;
    int cut;
    uint64_t signals;
} runaway;

static void *run_runaway(void *arg) {
    runaway *r = arg;
    dsc_error err;
    dsc_policy_limits lim = {.time_budget_ns = 20000000};
    dsc_policy_vm *vm = dsc_policy_vm_new(r->set, NULL, NULL, &lim, &err);
    if (!vm) return NULL;
    for (int i = 0; i < 3; i++) {
        dsc_estimate e = est_g(1.0);
        dsc_policy_input in = request(&e);
        dsc_decision d;
        if (dsc_policy_vm_decide(vm, &in, &d) == DSC_OK && strstr(d.reason, "time budget"))
            r->cut++;
    }
    dsc_policy_stats st;
    dsc_policy_vm_stats(vm, &st);
    r->signals = st.watchdog_signals;
    dsc_policy_vm_free(vm);
    return NULL;
}

Test(policy_hostile, runaway_policies_on_several_threads_are_each_cut) {
    put("a.lua", POLICY("while true do end"));
    dsc_error err = {0};
    dsc_policy_set *set = dsc_policy_set_load(dir, &err);
    cr_assert_not_null(set, "%s", err.message);
    runaway r[3];
    pthread_t t[3];
    for (int i = 0; i < 3; i++) {
        r[i] = (runaway){set, 0, 0};
        cr_assert_eq(pthread_create(&t[i], NULL, run_runaway, &r[i]), 0);
    }
    for (int i = 0; i < 3; i++) {
        pthread_join(t[i], NULL);
        cr_assert_eq(r[i].cut, 3, "thread %d: %d of 3 cut", i, r[i].cut);
        cr_assert_geq(r[i].signals, 3, "thread %d: %llu signals", i,
                      (unsigned long long)r[i].signals);
    }
    dsc_policy_set_unref(set);
}

Test(policy_hostile, infinite_loop_inside_pcall_cannot_swallow_the_kill) {
    dsc_policy_vm *vm =
        contained(POLICY("for i = 1, 100 do pcall(function() while true do end end) end\n"
                         "  while true do pcall(error, 'x') end"),
                  "time budget");
    dsc_policy_stats st;
    dsc_policy_vm_stats(vm, &st);
    cr_assert_eq(st.timeouts, 2);
    dsc_policy_vm_free(vm);
}

Test(policy_hostile, string_rep_bomb_hits_the_memory_cap) {
    dsc_policy_vm *vm =
        contained(POLICY("local s = string.rep('x', 1 << 30) return allow(s)"), "memory cap");
    dsc_policy_stats st;
    dsc_policy_vm_stats(vm, &st);
    cr_assert_eq(st.memory, 2);
    cr_assert_lt(st.memory_in_use, 8u << 20);
    dsc_policy_vm_free(vm);
}

Test(policy_hostile, string_doubling_bomb_hits_the_memory_cap) {
    dsc_policy_vm_free(
        contained(POLICY("local s = 'x' while true do s = s .. s end"), "memory cap"));
}

Test(policy_hostile, table_growth_until_the_cap_is_contained) {
    dsc_policy_vm *vm = contained(POLICY("local t = {} local i = 0 while true do i = i + 1 t[i] = "
                                         "string.rep('x', 4096) .. i end"),
                                  "memory cap");
    dsc_policy_stats st;
    dsc_policy_vm_stats(vm, &st);
    cr_assert_lt(st.memory_in_use, 2u << 20, "garbage of the failed call was collected");
    dsc_policy_vm_free(vm);
}

Test(policy_hostile, deep_recursion_is_contained) {
    dsc_policy_vm_free(
        contained("local function f(n) return 1 + f(n + 1) end\n" POLICY("return f(1)"),
                  "policy error: a.lua"));
}

Test(policy_hostile, os_io_require_load_dofile_debug_collectgarbage_are_absent) {
    const char *names[] = {"os",       "io",     "require",   "load",
                           "loadfile", "dofile", "debug",     "collectgarbage",
                           "package",  "rawset", "coroutine", "print"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        char src[256];
        snprintf(src, sizeof src, POLICY("return allow(type(%s))"), names[i]);
        put("a.lua", src);
        dsc_policy_vm *vm = vm_for(NULL);
        dsc_decision d = decide(vm);
        cr_assert_str_eq(d.reason, "nil", "%s is reachable", names[i]);
        dsc_policy_vm_free(vm);
    }
}

Test(policy_hostile, calling_os_execute_is_an_error_not_an_escape) {
    dsc_policy_vm_free(
        contained(POLICY("os.execute('touch /tmp/pwned')"), "a.lua:1: attempt to index"));
}

Test(policy_hostile, bytecode_cannot_be_produced_or_loaded) {
    dsc_policy_vm_free(contained(POLICY("local f = string.dump(function() end) return allow(f)"),
                                 "attempt to call a nil value"));
}

Test(policy_hostile, the_string_metatable_is_hidden) {
    dsc_policy_vm_free(contained(POLICY("getmetatable('').__index.rep = nil"), "attempt to index"));
}

Test(policy_hostile, setmetatable_on_the_request_fails) {
    dsc_policy_vm_free(
        contained(POLICY("setmetatable(req, {})"), "a.lua:1: cannot change a protected"));
}

Test(policy_hostile, writing_to_the_request_fails) {
    dsc_policy_vm_free(contained(POLICY("req.model = 'free'"),
                                 "a.lua:1: attempt to modify read-only table 'req'"));
    dsc_policy_vm_free(
        contained(POLICY("req.subject.team = 'x'"), "read-only table 'req.subject'"));
    dsc_policy_vm_free(
        contained(POLICY("ctx.now = function() return 0 end"), "read-only table 'ctx'"));
}

Test(policy_hostile, gc_metamethods_are_refused) {
    dsc_policy_vm_free(
        contained(POLICY("setmetatable({}, {__gc = function() while true do end end})"),
                  "__gc metamethods are not allowed"));
}

Test(policy_hostile, global_writes_do_not_persist_between_requests) {
    dsc_policy_vm_free(contained(POLICY("count = (count or 0) + 1 return allow(tostring(count))"),
                                 "a.lua:1: assignment to global 'count'"));
    dsc_policy_vm_free(contained("counter = 0\n" POLICY("counter = counter + 1"),
                                 "assignment to global 'counter'"));
    dsc_policy_vm_free(contained(POLICY("string.upper = nil"), "read-only table 'string'"));
    dsc_policy_vm_free(contained(POLICY("_ENV.x = 1"), "assignment to global 'x'"));
    dsc_policy_vm_free(contained("STATE = {n = 0, nested = {}}\n" POLICY("STATE.n = STATE.n + 1"),
                                 "read-only table"));
    dsc_policy_vm_free(contained("STATE = {n = 0, nested = {}}\n" POLICY("STATE.nested.x = 1"),
                                 "read-only table"));
}

Test(policy, global_tables_stay_readable_after_loading) {
    put("a.lua", "LIMITS = {team = 50, list = {1, 2, 3}}\nLIMITS.self = LIMITS\n"
                 "function total() local s = 0 for _, v in ipairs(LIMITS.list) do s = s + v end "
                 "return s end\n" POLICY("local n = 0 for _ in pairs(LIMITS) do n = n + 1 end\n"
                                         "  return allow(string.format('%d %d %d %d', LIMITS.team, "
                                         "total(), #LIMITS.self.list, n))"));
    dsc_policy_vm *vm = vm_for(NULL);
    dsc_decision d = decide(vm);
    cr_assert_str_eq(d.reason, "50 6 3 3");
    dsc_policy_vm_free(vm);
}

Test(policy_hostile, errors_raised_with_tables_still_give_a_reason) {
    dsc_policy_vm_free(contained(
        POLICY("error(setmetatable({}, {__tostring = function() while true do end end}))"),
        "error object is a table value"));
}

Test(policy_hostile, on_error_allow_is_honoured) {
    put("a.lua", "return { on_error = 'allow', decide = function() error('boom') end }\n");
    dsc_policy_vm *vm = vm_for(NULL);
    dsc_decision d = decide(vm);
    cr_assert_eq(d.outcome, DSC_POLICY_ALLOW);
    cr_assert(strstr(d.reason, "policy error: a.lua:1: boom"), "%s", d.reason);
    dsc_policy_vm_free(vm);
}

Test(policy_hostile, a_deeply_nested_global_table_is_refused_at_load) {
    put("a.lua", "T = {} local t = T for i = 1, 100000 do t.x = {} t = t.x end\n"
                 "return { decide = function() end }\n");
    dsc_error err = {0};
    cr_assert_null(dsc_policy_set_load(dir, &err));
    cr_assert(strstr(err.message, "nested more than 64 levels"), "%s", err.message);
}

Test(policy_hostile, an_endless_top_level_chunk_is_refused_at_load) {
    put("a.lua", "while true do end\nreturn { decide = function() end }\n");
    dsc_error err = {0};
    cr_assert_null(dsc_policy_set_load(dir, &err));
    cr_assert(strstr(err.message, "a.lua:1: time budget"), "%s", err.message);
}

/* --- the test runner (`discern policy test`) --- */

typedef struct failures {
    int n;
    char lines[16][320];
} failures;

static void collect(void *ud, const char *line) {
    failures *f = ud;
    if (f->n < 16) snprintf(f->lines[f->n], sizeof f->lines[0], "%s", line);
    f->n++;
}

Test(policy_runner, shipped_policies_pass_their_own_tests) {
    failures f = {0};
    dsc_policy_test_report rep;
    dsc_error err = {0};
    cr_assert_eq(
        dsc_policy_run_tests(DISCERN_SOURCE_DIR "/policies", NULL, collect, &f, &rep, &err), DSC_OK,
        "%s", err.message);
    for (int i = 0; i < f.n && i < 16; i++)
        cr_log_error("%s", f.lines[i]);
    cr_assert_eq(rep.failed, 0);
    cr_assert_geq(rep.passed, 20);
}

/* A shipped file of policies/, read into a static buffer. */
static const char *shipped(const char *name) {
    static char text[4][32768];
    static int next;
    char path[512];
    snprintf(path, sizeof path, "%s/policies/%s", DISCERN_SOURCE_DIR, name);
    FILE *f = fopen(path, "r");
    cr_assert_not_null(f, "%s", path);
    char *buf = text[next++ % 4];
    size_t n = fread(buf, 1, sizeof text[0] - 1, f);
    buf[n] = '\0';
    fclose(f);
    return buf;
}

/* Copy grid_aware.lua with its switch set to on, its tests and purposes.lua into dir,
 * and run the tests. */
static dsc_policy_test_report grid_aware_switched(bool on) {
    char src[32768];
    snprintf(src, sizeof src, "%s", shipped("grid_aware.lua"));
    char *sw = strstr(src, "enabled = false");
    cr_assert_not_null(sw, "grid_aware.lua has no 'enabled = false' switch");
    if (on) memcpy(sw, "enabled = true ", 15);
    put("grid_aware.lua", src);
    put("grid_aware_test.lua", shipped("grid_aware_test.lua"));
    put("purposes.lua", shipped("purposes.lua"));
    failures f = {0};
    dsc_policy_test_report rep;
    dsc_error err = {0};
    cr_assert_eq(dsc_policy_run_tests(dir, NULL, collect, &f, &rep, &err), DSC_OK, "%s",
                 err.message);
    for (int i = 0; i < f.n && i < 16; i++)
        cr_log_error("%s", f.lines[i]);
    return rep;
}

Test(policy_runner, grid_aware_passes_its_tests_with_its_switch_on_and_off, .init = make_dir,
     .fini = remove_dir) {
    dsc_policy_test_report on = grid_aware_switched(true);
    cr_assert_eq(on.failed, 0, "switched on, %d tests fail", on.failed);
    dsc_policy_test_report off = grid_aware_switched(false);
    cr_assert_eq(off.failed, 0, "switched off, %d tests fail", off.failed);
    cr_assert_eq(on.passed, off.passed);
}

Test(policy_runner, failures_are_reported_with_file_line_and_counted, .init = make_dir,
     .fini = remove_dir) {
    put("p.lua", POLICY("if req.purpose == 'x' then return refuse('no x') end return nil"));
    put("p_test.lua", "test('passes', function()\n"
                      "  expect(decide{purpose = 'x'}).to_refuse('no x')\n"
                      "end)\n"
                      "test('fails on the outcome', function()\n"
                      "  expect(decide{purpose = 'y'}).to_refuse('no x')\n"
                      "end)\n"
                      "test('fails on an error', function()\n"
                      "  local t = nil\n"
                      "  return t.field\n"
                      "end)\n");
    failures f = {0};
    dsc_policy_test_report rep;
    dsc_error err = {0};
    cr_assert_eq(dsc_policy_run_tests(dir, NULL, collect, &f, &rep, &err), DSC_OK);
    cr_assert_eq(rep.passed, 1);
    cr_assert_eq(rep.failed, 2);
    cr_assert_str_eq(f.lines[0],
                     "p_test.lua:5: expected refuse, got abstain (in test 'fails on the outcome')");
    cr_assert(strstr(f.lines[1], "p_test.lua:9: attempt to index a nil value"), "%s", f.lines[1]);
}

Test(policy_runner, a_broken_policy_fails_the_run_before_any_test, .init = make_dir,
     .fini = remove_dir) {
    put("p.lua", "return {");
    put("p_test.lua", "test('never runs', function() end)\n");
    dsc_policy_test_report rep;
    dsc_error err = {0};
    cr_assert_eq(dsc_policy_run_tests(dir, NULL, NULL, NULL, &rep, &err), DSC_POLICY_ERROR);
    cr_assert(strstr(err.message, "p.lua:1:"), "%s", err.message);
}

Test(policy_runner, an_endless_test_file_is_stopped_and_counted, .init = make_dir,
     .fini = remove_dir) {
    put("p.lua", POLICY("return nil"));
    put("p_test.lua", "test('loops', function() while true do end end)\nwhile true do end\n");
    put("q_test.lua", "test('still runs', function() expect(decide_all{}).to_allow() end)\n");
    failures f = {0};
    dsc_policy_test_report rep;
    dsc_error err = {0};
    cr_assert_eq(dsc_policy_run_tests(dir, NULL, collect, &f, &rep, &err), DSC_OK);
    cr_assert_eq(rep.failed, 2);
    cr_assert_eq(rep.passed, 1);
    cr_assert(strstr(f.lines[0], "p_test.lua:1: time budget of 2000 ms exceeded (in test 'loops')"),
              "%s", f.lines[0]);
    cr_assert(strstr(f.lines[1], "p_test.lua:2: time budget"), "%s", f.lines[1]);
}

/* --- with the real catalogue --- */

static dsc_catalog *shipped_catalog(void) {
    dsc_error err = {0};
    dsc_catalog *cat = dsc_catalog_load(DISCERN_SOURCE_DIR "/core/data", &err);
    cr_assert_not_null(cat, "%s", err.message);
    return cat;
}

Test(policy_runner, shipped_policies_pass_their_tests_with_the_catalogue_too) {
    dsc_catalog *cat = shipped_catalog();
    failures f = {0};
    dsc_policy_test_report rep;
    dsc_error err = {0};
    cr_assert_eq(dsc_policy_run_tests(DISCERN_SOURCE_DIR "/policies", cat, collect, &f, &rep, &err),
                 DSC_OK, "%s", err.message);
    for (int i = 0; i < f.n && i < 16; i++)
        cr_log_error("%s", f.lines[i]);
    cr_assert_eq(rep.failed, 0);
    dsc_catalog_free(cat);
}

Test(policy, the_catalogue_answers_what_if_estimates_and_model_lists) {
    put("a.lua", POLICY("local ms = ctx.models('openai')\n"
                        "  local small = ctx.estimate{model = 'gpt-4o-mini'}\n"
                        "  local big = ctx.estimate{model = 'gpt-4o'}\n"
                        "  local _, err = ctx.estimate{model = 'no-such-model'}\n"
                        "  assert(#ms > 3 and ms[1].params_b <= ms[#ms].params_b)\n"
                        "  return allow(string.format('%s %s', tostring(small.gco2e.max < "
                        "big.gco2e.max), err))"));
    dsc_catalog *cat = shipped_catalog();
    dsc_error err = {0};
    dsc_policy_set *set = dsc_policy_set_load(dir, &err);
    dsc_policy_vm *vm = dsc_policy_vm_new(set, cat, NULL, NULL, &err);
    cr_assert_not_null(vm, "%s", err.message);
    dsc_decision d = decide(vm);
    cr_assert(strstr(d.reason, "true "), "%s", d.reason);
    cr_assert(strstr(d.reason, "no-such-model"), "%s", d.reason);
    dsc_policy_vm_free(vm);
    dsc_policy_set_unref(set);
    dsc_catalog_free(cat);
}

Test(policy, an_alias_resolves_so_policies_see_the_catalogue_model_name) {
    put("a.lua", POLICY("local m = ctx.model()\n"
                        "  local again = ctx.model('claude-opus-4-1', 'anthropic')\n"
                        "  return allow(string.format('%s %s %s %s', req.model, m and m.name, "
                        "again and again.name, tostring(m and m.params_b > 0)))"));
    dsc_catalog *cat = shipped_catalog();
    dsc_error err = {0};
    dsc_policy_set *set = dsc_policy_set_load(dir, &err);
    dsc_policy_vm *vm = dsc_policy_vm_new(set, cat, NULL, NULL, &err);
    cr_assert_not_null(vm, "%s", err.message);
    dsc_estimate e = est_g(4.0);
    dsc_policy_input in = request(&e);
    in.provider = "anthropic";
    in.model = "claude-opus-4-1"; /* an alias of claude-opus-4-1-20250805 */
    dsc_decision d;
    cr_assert_eq(dsc_policy_vm_decide(vm, &in, &d), DSC_OK, "%s", d.reason);
    cr_assert_str_eq(d.reason,
                     "claude-opus-4-1-20250805 claude-opus-4-1-20250805 claude-opus-4-1-20250805 "
                     "true");
    dsc_policy_vm_free(vm);
    dsc_policy_set_unref(set);
    dsc_catalog_free(cat);
}

Test(policy, the_grid_falls_back_to_the_catalogue_annual_mix) {
    dsc_catalog *cat = shipped_catalog();
    dsc_grid *g = dsc_grid_new();
    dsc_error err = {0};
    cr_assert_eq(dsc_grid_load_catalog(g, cat, &err), DSC_OK, "%s", err.message);
    double v;
    cr_assert_eq(dsc_grid_get(g, "FRA", 0, &v), DSC_GRID_ANNUAL);
    const dsc_zone *z = dsc_catalog_zone(cat, "FRA");
    cr_assert_float_eq(v, z->gwp_kgco2eq_per_kwh * 1000.0, 1e-9);
    dsc_grid_free(g);
    dsc_catalog_free(cat);
}

/* --- the lint (`discern policy check`) --- */

Test(policy_lint, shipped_policies_are_clean) {
    failures f = {0};
    dsc_error err = {0};
    int n = dsc_policy_check(DISCERN_SOURCE_DIR "/policies", collect, &f, &err);
    for (int i = 0; i < f.n && i < 16; i++)
        cr_log_error("%s", f.lines[i]);
    cr_assert_eq(n, 0, "%s", err.message);
}

Test(policy_lint, unknown_fields_globals_and_global_writes_are_reported_with_lines,
     .init = make_dir, .fini = remove_dir) {
    put("p.lua", "local LIMIT = 5 -- ctx.nothing in a comment\n"
                 "function helper(x) return x + LIMIT end\n"
                 "return {\n"
                 "  decide = function(req, ctx)\n"
                 "    local b = ctx.budgt('team')\n"
                 "    count = 1\n"
                 "    if req.purpse == \"ctx.bogus\" then end\n"
                 "    os.exit(1)\n"
                 "    for i, v in ipairs(ctx.budgets()) do helper(i) end\n"
                 "    return alow({reason = [[x]], retry_after = LIMIT})\n"
                 "  end,\n"
                 "}\n");
    failures f = {0};
    dsc_error err = {0};
    cr_assert_eq(dsc_policy_check(dir, collect, &f, &err), 5, "%s / %s / %s", f.lines[0],
                 f.lines[1], f.lines[5]);
    cr_assert_str_eq(f.lines[0], "p.lua:5: unknown field ctx.budgt");
    cr_assert(strstr(f.lines[1], "p.lua:6: assignment to global 'count' inside a function"), "%s",
              f.lines[1]);
    cr_assert_str_eq(f.lines[2], "p.lua:7: unknown field req.purpse");
    cr_assert_str_eq(f.lines[3], "p.lua:8: unknown global 'os'");
    cr_assert_str_eq(f.lines[4], "p.lua:10: unknown global 'alow'");
}

Test(policy_lint, a_folder_that_does_not_compile_is_an_error, .init = make_dir,
     .fini = remove_dir) {
    put("p.lua", "return {");
    dsc_error err = {0};
    cr_assert_eq(dsc_policy_check(dir, NULL, NULL, &err), -1);
    cr_assert(strstr(err.message, "p.lua:1:"), "%s", err.message);
}

/* --- threads and allocation failures --- */

typedef struct worker {
    dsc_policy_set *set;
    dsc_grid *grid;
    int refused, allowed;
} worker;

static void *work(void *arg) {
    worker *w = arg;
    dsc_error err;
    dsc_policy_vm *vm = dsc_policy_vm_new(w->set, NULL, w->grid, NULL, &err);
    if (!vm) return NULL;
    for (int i = 0; i < 2000; i++) {
        dsc_estimate e = est_g(i % 2 ? 10.0 : 1.0);
        dsc_policy_input in = request(&e);
        dsc_decision d;
        if (dsc_policy_vm_decide(vm, &in, &d) != DSC_OK) continue;
        if (d.outcome == DSC_POLICY_REFUSE)
            w->refused++;
        else if (d.outcome == DSC_POLICY_ALLOW)
            w->allowed++;
    }
    dsc_policy_vm_free(vm);
    return NULL;
}

Test(policy, one_set_serves_vms_on_several_threads) {
    put("a.lua", POLICY("if ctx.estimate.gco2e.max > 5 then return refuse('big') end\n"
                        "  local g = ctx.grid() return allow(tostring(g))"));
    dsc_error err = {0};
    dsc_policy_set *set = dsc_policy_set_load(dir, &err);
    dsc_grid *g = dsc_grid_new();
    dsc_grid_set_annual(g, "FRA", 56, &err);
    worker w[4];
    pthread_t t[4];
    for (int i = 0; i < 4; i++) {
        w[i] = (worker){dsc_policy_set_ref(set), g, 0, 0};
        pthread_create(&t[i], NULL, work, &w[i]);
    }
    dsc_policy_set_unref(set); /* the workers hold their own references */
    for (int i = 0; i < 4; i++) {
        pthread_join(t[i], NULL);
        cr_assert_eq(w[i].refused, 1000);
        cr_assert_eq(w[i].allowed, 1000);
        dsc_policy_set_unref(w[i].set);
    }
    dsc_grid_free(g);
}

Test(policy, a_memory_cap_too_small_fails_cleanly_at_every_size) {
    put("a.lua", "local big = {} for i = 1, 2000 do big[i] = 'x' .. i end\n" POLICY(
                     "return allow(big[#big] .. ' ' .. req.model)"));
    put("purposes.lua", "return { classes = { essential = {'health'} } }\n");
    dsc_error err = {0};
    dsc_policy_set *set = dsc_policy_set_load(dir, &err);
    cr_assert_not_null(set, "%s", err.message);
    int worked = 0;
    for (size_t cap = 8 << 10; cap <= (640u << 10); cap += 8 << 10) {
        dsc_policy_limits lim = {.memory_bytes = cap};
        dsc_policy_vm *vm = dsc_policy_vm_new(set, NULL, NULL, &lim, &err);
        if (!vm) {
            cr_assert(err.code == DSC_NOMEM || err.code == DSC_POLICY_ERROR, "%d", err.code);
            continue;
        }
        dsc_estimate e = est_g(1);
        dsc_policy_input in = request(&e);
        dsc_decision d;
        dsc_status st = dsc_policy_vm_decide(vm, &in, &d);
        cr_assert(st == DSC_OK || st == DSC_NOMEM, "%d", st);
        if (st == DSC_OK && !d.verdicts[0].error) {
            cr_assert_str_eq(d.reason, "x2000 gpt-4o");
            worked++;
        }
        dsc_policy_vm_free(vm);
    }
    cr_assert_gt(worked, 0, "some cap was large enough");
    dsc_policy_set_unref(set);
}

Test(policy, what_if_results_stay_distinct_within_a_request_read_only_and_reused_after) {
    /* 20 results in one request: more than the pool keeps, so fresh ones are made too */
    put("a.lua",
        POLICY("local r = {}\n"
               "  for i = 1, 20 do\n"
               "    r[i] = ctx.estimate{model = i % 2 == 1 and 'gpt-4o-mini' or 'gpt-4o'}\n"
               "  end\n"
               "  for i = 1, 20 do\n"
               "    local want = i % 2 == 1 and 0.5 or 4\n"
               "    assert(math.abs(r[i].gco2e.max - want) < 1e-9, 'result ' .. i)\n"
               "  end\n"
               "  local ok = pcall(function() r[1].gco2e = 0 end)\n"
               "  local ok2 = pcall(function() r[20].gco2e.max = 0 end)\n"
               "  return allow(string.format('%s %s %.1f %s', tostring(ok), tostring(ok2),"
               " r[2].gco2e.max, tostring(r[1] ~= r[3])))"));
    dsc_policy_vm *vm = vm_for(NULL);
    dsc_policy_oracle o = {NULL, fake_estimate, fake_models, NULL};
    dsc_policy_vm_set_oracle(vm, &o);
    for (int i = 0; i < 3; i++) {
        dsc_decision d = decide(vm);
        cr_assert_str_eq(d.reason, "false false 4.0 true", "request %d: %s", i, d.reason);
    }
    dsc_policy_stats st;
    dsc_policy_vm_stats(vm, &st);
    size_t before = st.memory_in_use;
    for (int i = 0; i < 200; i++)
        decide(vm);
    dsc_policy_vm_stats(vm, &st);
    cr_assert_lt(st.memory_in_use, before + 64 * 1024, "%zu -> %zu", before, st.memory_in_use);
    dsc_policy_vm_free(vm);
}

Test(policy, purpose_classes_stay_right_when_more_purposes_than_the_vm_remembers_alternate) {
    put("a.lua", POLICY("return allow(req.purpose_class)"));
    put("purposes.lua", "return { default = 'productive', classes = {\n"
                        "  essential = {'health'}, discretionary = {'entertainment'} } }\n");
    dsc_policy_vm *vm = vm_for(NULL);
    /* 20 purposes (more than the 8 the VM remembers) in turn, three rounds: every
     * answer is the class of its own purpose, whether remembered or computed again */
    char purpose[80];
    dsc_estimate e = est_g(4.0);
    dsc_policy_input in = request(&e);
    dsc_decision d;
    for (int round = 0; round < 3; round++)
        for (int i = 0; i < 20; i++) {
            const char *want = i % 3 == 0   ? "essential"
                               : i % 3 == 1 ? "discretionary"
                                            : "productive";
            snprintf(purpose, sizeof purpose, "%s %d",
                     i % 3 == 0   ? "health"
                     : i % 3 == 1 ? "entertainment"
                                  : "knitting",
                     i);
            cr_assert_str_eq(dsc_policy_vm_purpose_class(vm, purpose), want, "'%s', round %d",
                             purpose, round);
            in.purpose = purpose;
            cr_assert_eq(dsc_policy_vm_decide(vm, &in, &d), DSC_OK, "%s", d.reason);
            cr_assert_str_eq(d.reason, want, "req.purpose_class of '%s', round %d", purpose, round);
        }
    /* one too long to remember is still classed */
    memset(purpose, 'x', sizeof purpose - 1);
    memcpy(purpose, "health ", 7);
    purpose[sizeof purpose - 1] = '\0';
    cr_assert_str_eq(dsc_policy_vm_purpose_class(vm, purpose), "essential");
    cr_assert_str_eq(dsc_policy_vm_purpose_class(vm, NULL), "productive");
    dsc_policy_vm_free(vm);
}
