/*
 * test_integration_enforce.c - promises of enforcement kept by a real discernd: cost
 * budgets priced from the catalogue, one discernd per store file, the grid forecast
 * reaching policies, the wait a rate window names.
 */
#include "harness.h"

#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static th_server srv;

static void start(void) {
    th_server_start(&srv, NULL);
}
static void stop(void) {
    th_server_cleanup(&srv);
}

TestSuite(enforce, .init = start, .fini = stop, .timeout = 60);

#define MONEY "\"subject\": {\"org\": \"acme\", \"team\": \"money\"}"
#define COST_BUDGET "\"selector\": \"team:money\", \"metric\": \"cost\", \"window\": \"day\""

static th_client *admin(const th_server *s) {
    th_client *c = th_connect_tcp(s);
    json_t *res, *r = th_ok(c, "auth", "{\"token\": \"" TH_ADMIN_TOKEN "\"}", &res);
    json_decref(r);
    return c;
}

/* The budget_state of metric in a reply's budgets. */
static json_t *budget_of(json_t *res, const char *metric) {
    json_t *b;
    size_t i;
    json_array_foreach(json_object_get(res, "budgets"), i, b) {
        if (strcmp(th_str(b, "metric"), metric) == 0) return b;
    }
    cr_assert_fail("no %s budget in the reply", metric);
    return NULL;
}

static void set_budget(th_client *a, const char *params) {
    json_t *res, *r = th_ok(a, "budget.set", params, &res);
    json_decref(r);
}

/* ---------------------------------------------------------------- cost -- */

/* gpt-4o lists 2.5 USD per million input and 10 per million output tokens. */
Test(enforce, cost_budget_holds_the_priced_upper_bound_and_settles_the_priced_actual) {
    th_client *a = admin(&srv);
    set_budget(a, "{" COST_BUDGET ", \"limit\": 1}");
    json_t *res,
        *r = th_ok(a, "check",
                   "{" MONEY ", \"provider\": \"openai\", \"model\": \"gpt-4o\","
                   " \"input_tokens\": 1000, \"output_tokens\": 800, \"purpose\": \"chat\","
                   " \"budgets\": true}",
                   &res);
    cr_assert_str_eq(th_str(res, "decision"), "allow");
    cr_assert_float_eq(th_num(budget_of(res, "cost"), "request"), 0.0105, 1e-9);
    char params[256];
    snprintf(params, sizeof params,
             "{\"reservation\": \"%s\", \"input_tokens\": 1000, \"output_tokens\": 500}",
             th_str(res, "reservation"));
    json_decref(r);
    r = th_ok(a, "budget.get", "{" MONEY "}", &res);
    cr_assert_float_eq(th_num(budget_of(res, "cost"), "held"), 0.0105, 1e-9);
    json_decref(r);
    r = th_ok(a, "settle", params, &res);
    cr_assert_float_eq(th_num(json_object_get(res, "charged"), "cost"), 0.0075, 1e-9);
    json_t *b = budget_of(res, "cost");
    cr_assert_float_eq(th_num(b, "used"), 0.0075, 1e-9);
    cr_assert_eq(th_num(b, "held"), 0);
    json_decref(r);
    th_client_free(a);
}

Test(enforce, cost_budget_refuses_a_check_whose_price_would_exceed_it) {
    th_client *a = admin(&srv);
    set_budget(a, "{" COST_BUDGET ", \"limit\": 0.01}");
    json_t *res,
        *r = th_ok(a, "check",
                   "{" MONEY ", \"provider\": \"openai\", \"model\": \"gpt-4o\","
                   " \"input_tokens\": 1000, \"output_tokens\": 800, \"purpose\": \"chat\"}",
                   &res);
    cr_assert_str_eq(th_str(res, "decision"), "refuse");
    cr_assert(strstr(th_str(res, "reason"), "cost"), "%s", th_str(res, "reason"));
    cr_assert_null(json_object_get(res, "reservation"));
    json_decref(r);
    th_client_free(a);
}

Test(enforce, a_model_without_a_price_is_refused_where_a_cost_budget_applies) {
    th_client *a = admin(&srv);
    set_budget(a, "{" COST_BUDGET ", \"limit\": 1}");
    json_t *res, *r = th_ok(a, "check",
                            "{" MONEY ", \"provider\": \"openai\", \"model\": \"gpt-4-turbo\","
                            " \"output_tokens\": 10, \"purpose\": \"chat\"}",
                            &res);
    cr_assert_str_eq(th_str(res, "decision"), "refuse");
    cr_assert_str_eq(th_str(res, "policy"), "ledger");
    cr_assert(strstr(th_str(res, "reason"), "openai/gpt-4-turbo has no list price"), "%s",
              th_str(res, "reason"));
    cr_assert(strstr(th_str(res, "reason"), "team:money"), "%s", th_str(res, "reason"));
    cr_assert_null(json_object_get(res, "reservation"));
    char sql[256];
    snprintf(sql, sizeof sql,
             "SELECT count(*) FROM decisions WHERE decision_id = '%s' AND outcome = 'refuse'"
             " AND policy = 'ledger'",
             th_str(res, "decision_id"));
    cr_assert_eq(th_sql_int(&srv, sql), 1);
    json_decref(r);
    /* Without a cost budget the same model is allowed. */
    r = th_ok(a, "check",
              "{\"subject\": {\"org\": \"acme\", \"team\": \"free\"}, \"provider\": \"openai\","
              " \"model\": \"gpt-4-turbo\", \"output_tokens\": 10, \"purpose\": \"chat\","
              " \"reserve\": false}",
              &res);
    cr_assert_str_eq(th_str(res, "decision"), "allow");
    json_decref(r);
    th_client_free(a);
}

/* ---------------------------------------------------------- one per store -- */

/* Run a second discernd on srv's config and store, with its own listeners; returns
 * its exit status and what it wrote to stderr. */
static int second_discernd(char *out, size_t max) {
    char exe[512], link[64], cmd[2048], errfile[400];
    snprintf(link, sizeof link, "/proc/%d/exe", (int)srv.pid);
    ssize_t n = readlink(link, exe, sizeof exe - 1);
    cr_assert_gt(n, 0);
    exe[n] = '\0';
    snprintf(errfile, sizeof errfile, "%s/second.err", srv.dir);
    snprintf(cmd, sizeof cmd,
             "timeout 20 '%s' --config '%s/discernd.conf' --unix '%s/second.sock' --listen "
             "127.0.0.1:0 --http 127.0.0.1:0 --port-file '%s/second.ports' 2>'%s'",
             exe, srv.dir, srv.dir, srv.dir, errfile);
    int status = system(cmd);
    FILE *f = fopen(errfile, "r");
    cr_assert_not_null(f);
    size_t got = fread(out, 1, max - 1, f);
    out[got] = '\0';
    fclose(f);
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

Test(enforce, a_second_discernd_on_the_same_store_refuses_to_start_naming_file_and_pid) {
    char out[4096], needle[800];
    int code = second_discernd(out, sizeof out);
    cr_assert_eq(code, 3, "exit %d: %s", code, out);
    snprintf(needle, sizeof needle, "'%s' is in use by pid %d, which holds '%s.lock'", srv.store,
             (int)srv.pid, srv.store);
    cr_assert(strstr(out, needle), "%s", out);
    /* The first one serves on, undisturbed. */
    th_client *c = th_connect_unix(&srv);
    json_t *res, *r = th_ok(c, "ping", "{}", &res);
    json_decref(r);
    th_client_free(c);
}

/* ------------------------------------------------------------ rate waits -- */

/* Replace the fixture policy file name by the shipped one and reload. */
static void ship_policy(th_client *a, const char *name) {
    char path[512];
    snprintf(path, sizeof path, "%s/policies/%s", DISCERN_SOURCE_DIR, name);
    FILE *f = fopen(path, "r");
    cr_assert_not_null(f, "%s", path);
    static char text[65536];
    size_t n = fread(text, 1, sizeof text - 1, f);
    text[n] = '\0';
    fclose(f);
    th_write_policy(&srv, name, text);
    json_t *res, *r = th_ok(a, "policy.reload", "{}", &res);
    json_decref(r);
}

#define RATE_CHECK(user)                                                                           \
    "{\"subject\": {\"org\": \"acme\", \"user\": \"" user "\"}, \"provider\": \"openai\","         \
    " \"model\": \"gpt-4o\", \"output_tokens\": 10, \"purpose\": \"chat\"}"

/* With rate:2/1m one request token refills every 30 s: that is the wait, whether the
 * two earlier requests were settled or are still held. */
Test(enforce, a_rate_budget_throttles_until_the_next_token_for_settled_and_held_requests) {
    th_client *a = admin(&srv);
    ship_policy(a, "budgets.lua");
    set_budget(a, "{\"selector\": \"user:*\", \"metric\": \"requests\", \"window\": "
                  "\"rate:2/1m\", \"limit\": 2}");
    json_t *res, *r;
    char params[256];
    for (int i = 0; i < 2; i++) {
        r = th_ok(a, "check", RATE_CHECK("settler"), &res);
        cr_assert_str_eq(th_str(res, "decision"), "allow");
        snprintf(params, sizeof params,
                 "{\"reservation\": \"%s\", \"input_tokens\": 0, \"output_tokens\": 10}",
                 th_str(res, "reservation"));
        json_decref(r);
        r = th_ok(a, "settle", params, &res);
        json_decref(r);
        r = th_ok(a, "check", RATE_CHECK("holder"), &res);
        cr_assert_str_eq(th_str(res, "decision"), "allow");
        json_decref(r);
    }
    const char *users[] = {RATE_CHECK("settler"), RATE_CHECK("holder")};
    for (int i = 0; i < 2; i++) {
        r = th_ok(a, "check", users[i], &res);
        cr_assert_str_eq(th_str(res, "decision"), "throttle");
        double wait = th_num(res, "retry_after_s");
        cr_assert(wait >= 29 && wait <= 30, "%s: retry_after_s %g, the next token is 30 s away",
                  i ? "held" : "settled", wait);
        json_decref(r);
    }
    th_client_free(a);
}

/* ------------------------------------------------------ the grid forecast -- */

static const char *error_of(th_client *c, const char *method, const char *params, char *msg,
                            size_t max) {
    json_t *r = th_call(c, method, params);
    static char code[64];
    snprintf(code, sizeof code, "%s", th_error_code(r));
    snprintf(msg, max, "%s", th_error_message(r));
    json_decref(r);
    return code;
}

Test(enforce, grid_set_refuses_a_forecast_too_long_or_malformed_naming_the_point) {
    th_client *a = admin(&srv);
    long long until = (long long)time(NULL) + 3600;
    char params[8192], msg[512];
    int n = snprintf(params, sizeof params,
                     "{\"zone\": \"DEU\", \"gco2e_per_kwh\": 450, \"valid_until\": %lld, "
                     "\"forecast\": [",
                     until);
    for (int i = 0; i < 49; i++)
        n += snprintf(params + n, sizeof params - (size_t)n,
                      "%s{\"from\": %lld, \"gco2e_per_kwh\": 100}", i ? ", " : "", until + i);
    snprintf(params + n, sizeof params - (size_t)n, "]}");
    cr_assert_str_eq(error_of(a, "grid.set", params, msg, sizeof msg), "too_large");
    cr_assert(strstr(msg, "field 'forecast': 49 items, at most 48"), "%s", msg);
    snprintf(params, sizeof params,
             "{\"zone\": \"DEU\", \"gco2e_per_kwh\": 450, \"valid_until\": %lld, \"forecast\": "
             "[{\"from\": %lld, \"gco2e_per_kwh\": 100}, {\"from\": %lld}]}",
             until, until, until + 60);
    cr_assert_str_eq(error_of(a, "grid.set", params, msg, sizeof msg), "bad_request");
    cr_assert(strstr(msg, "field 'forecast[1]': field 'gco2e_per_kwh' is required"), "%s", msg);
    snprintf(params, sizeof params,
             "{\"zone\": \"DEU\", \"gco2e_per_kwh\": 450, \"valid_until\": %lld, \"forecast\": "
             "[{\"from\": %lld, \"gco2e_per_kwh\": -3}]}",
             until, until);
    cr_assert_str_eq(error_of(a, "grid.set", params, msg, sizeof msg), "bad_request");
    cr_assert(strstr(msg, "field 'forecast[0]': field 'gco2e_per_kwh'"), "%s", msg);
    snprintf(params, sizeof params,
             "{\"zone\": \"DEU\", \"gco2e_per_kwh\": 450, \"valid_until\": %lld, \"forecast\": "
             "{\"from\": 1}}",
             until);
    cr_assert_str_eq(error_of(a, "grid.set", params, msg, sizeof msg), "bad_request");
    cr_assert(strstr(msg, "field 'forecast': expected an array"), "%s", msg);
    th_client_free(a);
}

/* grid_aware switched on, a dirty live value and a forecast with a cleaner hour: a
 * discretionary check is throttled until that hour starts. */
Test(enforce, a_dirty_grid_defers_discretionary_work_until_the_forecast_cleaner_hour) {
    th_client *a = admin(&srv);
    ship_policy(a, "purposes.lua");
    char path[512];
    snprintf(path, sizeof path, "%s/policies/grid_aware.lua", DISCERN_SOURCE_DIR);
    FILE *f = fopen(path, "r");
    cr_assert_not_null(f);
    static char text[32768];
    text[fread(text, 1, sizeof text - 1, f)] = '\0';
    fclose(f);
    char *sw = strstr(text, "enabled = false");
    cr_assert_not_null(sw);
    memcpy(sw, "enabled = true ", 15);
    th_write_policy(&srv, "grid_aware.lua", text);
    json_t *res, *r = th_ok(a, "policy.reload", "{}", &res);
    json_decref(r);

    long long now = (long long)time(NULL), cleaner = now + 5400;
    char params[1024];
    snprintf(params, sizeof params,
             "{\"zone\": \"DEU\", \"gco2e_per_kwh\": 450, \"valid_until\": %lld, \"forecast\": "
             "[{\"from\": %lld, \"gco2e_per_kwh\": 450}, {\"from\": %lld, \"gco2e_per_kwh\": 380},"
             " {\"from\": %lld, \"gco2e_per_kwh\": 210}]}",
             now + 7200, now, now + 1800, cleaner);
    r = th_ok(a, "grid.set", params, &res);
    cr_assert_eq(th_num(res, "forecast_points"), 3);
    json_decref(r);
    const char *check = "{\"subject\": {\"org\": \"acme\", \"team\": \"infra\"}, \"provider\": "
                        "\"openai\", \"model\": \"gpt-4o\", \"output_tokens\": 100, \"zone\": "
                        "\"DEU\", \"purpose\": \"%s\"}";
    snprintf(params, sizeof params, check, "entertainment");
    r = th_ok(a, "check", params, &res);
    long long asked = (long long)time(NULL);
    cr_assert_str_eq(th_str(res, "decision"), "throttle", "%s", th_str(res, "reason"));
    cr_assert_str_eq(th_str(res, "policy"), "grid-aware");
    cr_assert(strstr(th_str(res, "reason"), "210 expected at"), "%s", th_str(res, "reason"));
    double wait = th_num(res, "retry_after_s");
    cr_assert(wait >= (double)(cleaner - asked) && wait <= (double)(cleaner - now),
              "retry_after_s %g, the cleaner hour starts in %lld s", wait, cleaner - asked);
    json_decref(r);
    /* Productive work goes ahead on the same grid. */
    snprintf(params, sizeof params, check, "code-review");
    r = th_ok(a, "check", params, &res);
    cr_assert_str_eq(th_str(res, "decision"), "allow");
    json_decref(r);
    th_client_free(a);
}

/* ------------------------------------------------------------ reply size -- */

#define LEAN_CHECK                                                                                 \
    "{\"subject\": {\"org\": \"acme\", \"team\": \"infra\", \"user\": \"ana\"}, "                  \
    "\"provider\": \"openai\", \"model\": \"gpt-4o\", \"input_tokens\": 100, "                     \
    "\"output_tokens\": 800, \"purpose\": \"code-review\", \"method\": \"discern\""

Test(enforce, context_false_leaves_the_estimate_context_out_of_check_and_settle_replies) {
    th_client *c = admin(&srv);
    json_t *res, *r = th_ok(c, "check", LEAN_CHECK "}", &res);
    size_t full = th_last_size(c);
    cr_assert_not_null(json_object_get(res, "assumptions"), "the context is sent by default");
    cr_assert_str_eq(th_str(res, "method"), "discern");
    json_decref(r);
    r = th_ok(c, "check", LEAN_CHECK ", \"context\": false}", &res);
    size_t lean = th_last_size(c);
    const char *gone[] = {"method", "scope", "assumptions", "warnings"};
    for (size_t i = 0; i < sizeof gone / sizeof gone[0]; i++)
        cr_assert_null(json_object_get(res, gone[i]), "%s is still in the reply", gone[i]);
    const char *kept[] = {"decision",    "reason", "policy",     "policy_version",
                          "decision_id", "zone",   "reservation"};
    for (size_t i = 0; i < sizeof kept / sizeof kept[0]; i++)
        cr_assert_gt(strlen(th_str(res, kept[i])), 0, "%s", kept[i]);
    cr_assert_gt(th_num(json_object_get(json_object_get(res, "estimate"), "gwp_kgco2eq"), "max"),
                 0);
    cr_assert_gt(th_num(res, "expires_at"), 0);
    char params[300];
    snprintf(params, sizeof params,
             "{\"reservation\": \"%s\", \"input_tokens\": 100, \"output_tokens\": 500, "
             "\"method\": \"discern\", \"context\": false}",
             th_str(res, "reservation"));
    json_decref(r);
    cr_log_info("check reply: %zu bytes with the context, %zu with context: false", full, lean);
    cr_assert_lt(lean, 420, "%zu bytes with context: false", lean);
    cr_assert_gt(full, lean + 400, "%zu bytes with the context, %zu without", full, lean);
    r = th_ok(c, "settle", params, &res);
    cr_assert_str_eq(th_str(res, "settled"), "reserved");
    cr_assert_null(json_object_get(res, "assumptions"));
    cr_assert_not_null(json_object_get(res, "charged"));
    json_decref(r);
    th_fails(c, "check", LEAN_CHECK ", \"context\": 0}", "bad_request", "context");
    th_client_free(c);
}
