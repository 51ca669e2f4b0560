/*
 * test_cli_server.c - the server-facing `discern` commands and `discern exec`: their
 * output (decision line, budgets table with bars, JSON), their exit codes (0 allow,
 * 10 throttle, 11 refuse, 2 usage, 4 unreachable) and exec's allow / refuse /
 * throttle / throttle-then-allow / failure / fallback paths.
 *
 * Each test runs build/bin/discern in a child process. Decisions come from a
 * scripted peer (fake_server.c); ping, stats and admin authentication from a real
 * discernd started by the server test harness.
 */
#include "fake_server.h"
#include "harness.h"
#include "run.h"

#include <criterion/criterion.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* Kills a discernd left running by a test that failed before its cleanup. */
TestSuite(cli_server, .fini = th_kill_live_server);

#define DISCERN DISCERN_BINARY_DIR "/bin/discern"

/* The key of the real server a test started (real_server), given as DISCERN_KEY;
 * "" = none. Each test runs in its own process. */
static char test_key[96] = "";

/* Run discern with DISCERN_SERVER=server (NULL: unset) and args (NULL-terminated). */
static run_result run(const char *server, const char *const *args) {
    char set[512], key[128];
    snprintf(set, sizeof set, "DISCERN_SERVER=%s", server ? server : "");
    snprintf(key, sizeof key, "DISCERN_KEY=%s", test_key);
    return run_discern(args,
                       (const char *const[]){server ? set : "DISCERN_SERVER", "DISCERN_ADMIN_TOKEN",
                                             "DISCERN_USER", "DISCERN_TEAM", "DISCERN_ORG",
                                             test_key[0] ? key : "DISCERN_KEY", NULL});
}

#define RUN(server, ...) run(server, (const char *const[]){__VA_ARGS__, NULL})
#define REQ                                                                                        \
    "--provider", "openai", "--model", "gpt-4o", "--output-tokens", "800", "--input-tokens",       \
        "100", "--purpose", "code-review", "--team", "infra", "--user", "ana"

/* ------------------------------------------------------------ help, usage -- */

Test(cli_server, every_server_command_has_help_and_exits_zero) {
    const char *cmds[][2] = {
        {"check", NULL},      {"exec", NULL},     {"settle", NULL},    {"cancel", NULL},
        {"budget", NULL},     {"budget", "list"}, {"budget", "get"},   {"budget", "set"},
        {"budget", "delete"}, {"grid", NULL},     {"grid", "set"},     {"reload", NULL},
        {"stats", NULL},      {"ping", NULL},     {"key", NULL},       {"key", "create"},
        {"key", "list"},      {"key", "revoke"},  {"decisions", NULL}, {"admin-journal", NULL}};
    for (size_t i = 0; i < sizeof cmds / sizeof cmds[0]; i++) {
        run_result r = cmds[i][1] ? RUN(NULL, cmds[i][0], cmds[i][1], "--help")
                                  : RUN(NULL, cmds[i][0], "--help");
        cr_assert_eq(r.code, 0, "%s %s --help: exit %d %s", cmds[i][0],
                     cmds[i][1] ? cmds[i][1] : "", r.code, r.err);
        char want[64];
        snprintf(want, sizeof want, "usage: discern %s", cmds[i][0]);
        run_has(r.out, want);
        run_free(&r);
    }
}

Test(cli_server, grid_set_help_says_which_estimates_a_live_value_changes) {
    run_result r = RUN(NULL, "grid", "set", "--help");
    cr_assert_eq(r.code, 0);
    run_has(r.out, "estimates by the discern method");
    run_has(r.out, "ecologits method stay on annual averages");
    cr_assert_null(strstr(r.out, "every estimate"), "%s", r.out);
    run_free(&r);
}

Test(cli_server, missing_or_bad_flags_are_usage_errors_naming_the_flag) {
    run_result r = RUN(NULL, "check", "--provider", "openai", "--model", "gpt-4o",
                       "--output-tokens", "10", "--user", "ana");
    cr_assert_eq(r.code, 2);
    run_has(r.err, "option --purpose is required");
    run_free(&r);
    r = RUN(NULL, "check", REQ, "--output-tokens", "-5");
    cr_assert_eq(r.code, 2);
    run_has(r.err, "--output-tokens: '-5' is not a non-negative integer");
    run_free(&r);
    r = RUN(NULL, "check", "--provider", "openai", "--model", "gpt-4o", "--output-tokens", "1",
            "--purpose", "chat");
    cr_assert_eq(r.code, 2);
    run_has(r.err, "who asks?");
    run_free(&r);
    r = RUN(NULL, "ping", "--server", "nonsense");
    cr_assert_eq(r.code, 2);
    run_has(r.err, "address 'nonsense'");
    run_free(&r);
    r = RUN(NULL, "ping", "--frob");
    cr_assert_eq(r.code, 2);
    run_has(r.err, "unknown option '--frob'");
    run_free(&r);
    r = RUN(NULL, "exec", REQ);
    cr_assert_eq(r.code, 2);
    run_has(r.err, "give the command after '--'");
    run_free(&r);
    r = RUN(NULL, "budget", "frob");
    cr_assert_eq(r.code, 2);
    run_free(&r);
}

/* ------------------------------------------------------------ real server -- */

Test(cli_server, ping_and_stats_talk_to_a_real_server) {
    th_server s;
    th_server_start(&s, NULL);
    char addr[64];
    snprintf(addr, sizeof addr, "127.0.0.1:%d", s.port);
    run_result r = RUN(addr, "ping");
    cr_assert_eq(r.code, 0, "%s", r.err);
    run_has(r.out, "pong from discernd 0.1.0 in");
    run_free(&r);
    r = RUN(NULL, "stats", "--server", addr, "--json");
    cr_assert_eq(r.code, 1, "stats without a key: %s", r.err);
    run_has(r.err, "(unauthorized)");
    run_free(&r);
    char reader[72];
    th_create_key(&s, "reader", "*", reader, NULL);
    r = RUN(NULL, "stats", "--server", addr, "--json", "--key", reader);
    cr_assert_eq(r.code, 0, "%s", r.err);
    json_t *j = json_loads(r.out, 0, NULL);
    cr_assert_not_null(j, "%s", r.out);
    cr_assert_str_eq(json_string_value(json_object_get(j, "version")), "0.1.0");
    cr_assert_eq(json_integer_value(json_object_get(j, "workers")), 2);
    json_decref(j);
    run_free(&r);
    char unix_addr[400];
    snprintf(unix_addr, sizeof unix_addr, "unix:%s", s.unix_path);
    r = RUN(unix_addr, "stats");
    cr_assert_eq(r.code, 0, "%s", r.err);
    run_has(r.out, "discernd 0.1.0");
    run_has(r.out, "decisions: allow");
    run_free(&r);
    th_server_cleanup(&s);
}

Test(cli_server, a_wrong_admin_token_is_refused_before_the_admin_call) {
    th_server s;
    th_server_start(&s, NULL);
    char addr[64];
    snprintf(addr, sizeof addr, "127.0.0.1:%d", s.port);
    run_result r = RUN(addr, "budget", "set", "--selector", "team:*", "--metric", "gco2e",
                       "--window", "month", "--limit", "100", "--admin-token", "wrong");
    cr_assert_eq(r.code, 1, "%s", r.err);
    run_has(r.err, "admin token was refused");
    run_has(r.err, "(unauthorized)");
    run_free(&r);
    r = RUN(addr, "ping", "--admin-token", "x");
    cr_assert_eq(r.code, 2);
    run_has(r.err, "discern: ping: option --admin-token is not used by this command (bad_request)");
    run_free(&r);
    th_server_cleanup(&s);
}

Test(cli_server, an_unreachable_server_exits_4) {
    char addr[64];
    snprintf(addr, sizeof addr, "127.0.0.1:%d", fake_closed_port());
    run_result r = RUN(addr, "check", REQ);
    cr_assert_eq(r.code, 4);
    run_has(r.err, "Connection refused (unreachable)");
    cr_assert_str_eq(r.out, "");
    run_free(&r);
}

/* -------------------------------------------------------- scripted checks -- */

Test(cli_server, check_prints_the_decision_and_a_budgets_table_with_bars) {
    fake_server f;
    fake_start(&f, FAKE_SCRIPT, "allow,throttle:2.5,refuse");
    run_result r = RUN(f.address, "check", REQ);
    cr_assert_eq(r.code, 0, "%s", r.err);
    run_has(r.out, "allow: within budgets [policy budgets]");
    run_has(r.out, "reservation r-1");
    run_has(r.out, "team:*");
    run_has(r.out, "team:infra");
    run_has(r.out, "[########++..........]");
    run_has(r.out, "2027-01-01 00:00:00 UTC");
    run_free(&r);
    r = RUN(f.address, "check", REQ);
    cr_assert_eq(r.code, 10);
    run_has(r.out, "throttle: team:* gco2e month exhausted");
    run_has(r.out, "retry after 2.5 s");
    run_free(&r);
    r = RUN(f.address, "check", REQ, "--json");
    cr_assert_eq(r.code, 11);
    json_t *j = json_loads(r.out, 0, NULL);
    cr_assert_not_null(j, "%s", r.out);
    cr_assert_str_eq(json_string_value(json_object_get(j, "decision")), "refuse");
    json_t *b = json_array_get(json_object_get(j, "budgets"), 0);
    cr_assert_str_eq(json_string_value(json_object_get(b, "counter")), "team:infra");
    cr_assert_float_eq(json_real_value(json_object_get(b, "remaining")), 50.0, 1e-9);
    json_decref(j);
    run_free(&r);
    fake_stop(&f);
}

/* ------------------------------------------------------------------- exec -- */

Test(cli_server, exec_runs_an_allowed_command_and_settles_the_tokens_it_reports) {
    fake_server f;
    fake_start(&f, FAKE_SCRIPT, "allow");
    run_result r = RUN(f.address, "exec", REQ, "--", "sh", "-c",
                       "echo \"input_tokens=7\noutput_tokens=9\" > \"$DISCERN_USAGE_FILE\"; "
                       "echo ran with $DISCERN_RESERVATION");
    cr_assert_eq(r.code, 0, "%s", r.err);
    cr_assert_str_eq(r.out, "ran with r-1\n");
    run_has(r.err, "allow: within budgets");
    fake_expect_log(&f, "check code-review 800\nsettle r-1 7 9\n");
    run_free(&r);
    fake_stop(&f);
}

Test(cli_server, exec_charges_the_flags_when_the_command_reports_nothing) {
    fake_server f;
    fake_start(&f, FAKE_SCRIPT, "allow");
    run_result r = RUN(f.address, "exec", REQ, "--quiet", "--", "true");
    cr_assert_eq(r.code, 0, "%s", r.err);
    cr_assert_str_eq(r.err, "");
    fake_expect_log(&f, "check code-review 800\nsettle r-1 100 800\n");
    run_free(&r);
    fake_stop(&f);
}

Test(cli_server, exec_cancels_when_the_command_fails_and_exits_with_its_status) {
    fake_server f;
    fake_start(&f, FAKE_SCRIPT, "allow");
    run_result r = RUN(f.address, "exec", REQ, "--", "sh", "-c", "exit 3");
    cr_assert_eq(r.code, 3);
    fake_expect_log(&f, "check code-review 800\ncancel r-1\n");
    run_free(&r);
    r = RUN(f.address, "exec", REQ, "--", "/nonexistent/command");
    cr_assert_eq(r.code, 127);
    run_has(r.err, "cannot run '/nonexistent/command'");
    fake_expect_log(&f, "check code-review 800\ncancel r-1\ncheck code-review 800\ncancel r-2\n");
    run_free(&r);
    fake_stop(&f);
}

static bool exists(const char *path) {
    struct stat st;
    return stat(path, &st) == 0;
}

Test(cli_server, exec_never_runs_a_refused_or_throttled_command) {
    fake_server f;
    fake_start(&f, FAKE_SCRIPT, "refuse,throttle:1,allow");
    char marker[128], script[200];
    snprintf(marker, sizeof marker, "%s/ran", f.dir);
    snprintf(script, sizeof script, "touch '%s'", marker);
    run_result r = RUN(f.address, "exec", REQ, "--", "sh", "-c", script);
    cr_assert_eq(r.code, 11);
    run_has(r.err, "exec: refuse: team:* gco2e month exhausted");
    run_free(&r);
    r = RUN(f.address, "exec", REQ, "--", "sh", "-c", script);
    cr_assert_eq(r.code, 10);
    run_has(r.err, "exec: throttle:");
    run_has(r.err, "retry after 1 s");
    run_free(&r);
    cr_assert_not(exists(marker), "the command ran");
    fake_expect_log(&f, "check code-review 800\ncheck code-review 800\n");
    fake_stop(&f);
}

Test(cli_server, exec_with_wait_sleeps_through_throttles_then_runs) {
    fake_server f;
    fake_start(&f, FAKE_SCRIPT, "throttle:0.2,throttle:0.2,allow");
    run_result r = RUN(f.address, "exec", REQ, "--wait", "--max-wait", "5", "--", "echo", "hello");
    cr_assert_eq(r.code, 0, "%s", r.err);
    cr_assert_str_eq(r.out, "hello\n");
    run_has(r.err, "after waiting throttles");
    fake_expect_log(&f, "check code-review 800\ncheck code-review 800\ncheck code-review 800\n"
                        "settle r-1 100 800\n");
    run_free(&r);
    fake_stop(&f);
}

Test(cli_server, exec_with_wait_gives_up_past_max_wait) {
    fake_server f;
    fake_start(&f, FAKE_SCRIPT, "throttle:0.2,throttle:30,allow");
    run_result r = RUN(f.address, "exec", REQ, "--wait", "--max-wait", "1", "--", "echo", "no");
    cr_assert_eq(r.code, 10, "%s", r.err);
    cr_assert_str_eq(r.out, "");
    run_has(r.err, "waited the longest allowed");
    run_free(&r);
    fake_stop(&f);
}

Test(cli_server, exec_refuses_when_unreachable_unless_the_fallback_allows) {
    char addr[64];
    snprintf(addr, sizeof addr, "127.0.0.1:%d", fake_closed_port());
    run_result r = RUN(addr, "exec", REQ, "--", "echo", "ran");
    cr_assert_eq(r.code, 4);
    cr_assert_str_eq(r.out, "");
    run_has(r.err, "fallback: refuse");
    run_free(&r);
    r = RUN(addr, "exec", REQ, "--fallback", "allow", "--", "echo", "ran");
    cr_assert_eq(r.code, 0, "%s", r.err);
    cr_assert_str_eq(r.out, "ran\n");
    run_has(r.err, "fallback: allow: running unmetered");
    run_free(&r);
    r = RUN(addr, "exec", REQ, "--fallback", "maybe", "--", "echo", "ran");
    cr_assert_eq(r.code, 2);
    run_free(&r);
}

/* ---------------------------------------------- against a real discernd -- */

#define SHIPPED_POLICIES "policies = \"" DISCERN_SOURCE_DIR "/policies\""
#define ADMIN "--admin-token", TH_ADMIN_TOKEN

/* Start discernd with the shipped policies; the CLI authenticates with an admin key
 * of it (DISCERN_KEY). */
static void real_server(th_server *s, char *addr, size_t cap) {
    th_server_start(s, SHIPPED_POLICIES);
    snprintf(addr, cap, "127.0.0.1:%d", s->port);
    th_create_key(s, "admin", "*", test_key, NULL);
}

static void ok(run_result r, const char *frag) {
    cr_assert_eq(r.code, 0, "exit %d: %s", r.code, r.err);
    if (frag) run_has(r.out, frag);
    run_free(&r);
}

Test(cli_server, check_on_a_real_server_allows_throttles_refuses_and_names_unknown_models) {
    th_server s;
    char addr[64];
    real_server(&s, addr, sizeof addr);
    ok(RUN(addr, "budget", "set", "--selector", "user:ana", "--metric", "requests", "--window",
           "rate:1/2s", "--limit", "1", ADMIN),
       "created user:ana requests rate:1/2s limit 1 requests");
    /* an allow with a suggestion reads as an allow, then the suggestion and its reason */
    run_result r = RUN(addr, "check", REQ);
    cr_assert_eq(r.code, 0, "%s", r.err);
    cr_assert(strncmp(r.out, "allow, with a suggestion [policy right-size ", 44) == 0, "%s", r.out);
    run_has(r.out, "\nsuggestion: openai/gpt-4.1-nano-2025-04-14 (gpt-4.1-nano-2025-04-14 would "
                   "need ");
    cr_assert(!strstr(r.out, "allow: "), "%s", r.out);
    run_free(&r);
    r = RUN(addr, "check", REQ);
    cr_assert_eq(r.code, 10, "%s%s", r.out, r.err);
    run_has(r.out, "throttle: rate budget");
    run_has(r.out, "retry after");
    run_free(&r);
    ok(RUN(addr, "budget", "set", "--selector", "team:infra", "--metric", "gco2e", "--window",
           "month", "--limit", "0.001", ADMIN),
       "created");
    r = RUN(addr, "check", "--provider", "openai", "--model", "gpt-4o", "--output-tokens", "800",
            "--purpose", "code-review", "--team", "infra", "--user", "bob", "--json");
    cr_assert_eq(r.code, 11, "%s%s", r.out, r.err);
    json_t *j = json_loads(r.out, 0, NULL);
    cr_assert_not_null(j, "%s", r.out);
    cr_assert_str_eq(json_string_value(json_object_get(j, "decision")), "refuse");
    cr_assert_str_eq(json_string_value(json_object_get(j, "policy")), "budgets");
    json_decref(j);
    run_free(&r);
    r = RUN(addr, "check", "--provider", "openai", "--model", "gpt-9", "--output-tokens", "1",
            "--purpose", "chat", "--user", "ana");
    cr_assert_eq(r.code, 3);
    run_has(r.err, "gpt-9");
    run_has(r.err, "(unknown_model)");
    run_free(&r);
    th_server_cleanup(&s);
}

/* The reservation of a check printed with --json. */
static void reserve(const char *addr, char *out, size_t cap) {
    run_result r = RUN(addr, "check", REQ, "--json");
    cr_assert_eq(r.code, 0, "%s%s", r.out, r.err);
    json_t *j = json_loads(r.out, 0, NULL);
    cr_assert_not_null(j);
    snprintf(out, cap, "%s", json_string_value(json_object_get(j, "reservation")));
    json_decref(j);
    run_free(&r);
}

Test(cli_server, settle_and_cancel_on_a_real_server) {
    th_server s;
    char addr[64], res[128];
    real_server(&s, addr, sizeof addr);
    ok(RUN(addr, "budget", "set", "--selector", "user:*", "--metric", "tokens", "--window", "month",
           "--limit", "100000", ADMIN),
       NULL);
    reserve(addr, res, sizeof res);
    run_result r =
        RUN(addr, "settle", "--reservation", res, "--input-tokens", "10", "--output-tokens", "20");
    cr_assert_eq(r.code, 0, "%s", r.err);
    run_has(r.out, "(reserved)");
    run_has(r.out, "30 tokens");
    run_free(&r);
    r = RUN(addr, "settle", "--reservation", res, "--output-tokens", "20", "--json");
    cr_assert_eq(r.code, 0, "%s", r.err);
    run_has(r.out, "\"settled\": \"repeated\"");
    run_has(r.out, "\"tokens\": 0.0");
    run_free(&r);
    r = RUN(addr, "settle", "--reservation", res, "--output-tokens", "20");
    cr_assert_eq(r.code, 0, "%s", r.err);
    run_has(r.out, "(repeated): already settled, nothing more charged");
    run_free(&r);
    reserve(addr, res, sizeof res);
    ok(RUN(addr, "cancel", "--reservation", res), "released");
    r = RUN(addr, "cancel", "--reservation", "r-never-issued");
    cr_assert_eq(r.code, 1);
    run_has(r.err, "(unknown_reservation)");
    run_free(&r);
    r = RUN(addr, "budget", "get", "--user", "ana", "--json");
    cr_assert_eq(r.code, 0, "%s", r.err);
    json_t *j = json_loads(r.out, 0, NULL);
    json_t *b = json_array_get(json_object_get(j, "budgets"), 0);
    cr_assert_float_eq(json_real_value(json_object_get(b, "used")), 30, 1e-9);
    cr_assert_float_eq(json_real_value(json_object_get(b, "held")), 0, 1e-9);
    json_decref(j);
    run_free(&r);
    th_server_cleanup(&s);
}

Test(cli_server, budgets_grid_and_reload_on_a_real_server) {
    th_server s;
    char addr[64];
    real_server(&s, addr, sizeof addr);
    ok(RUN(addr, "budget", "set", "--selector", "team:*", "--metric", "gco2e", "--window", "month",
           "--limit", "50", ADMIN),
       "created team:* gco2e month limit 50 g");
    ok(RUN(addr, "budget", "set", "--selector", "team:*", "--metric", "gco2e", "--window", "month",
           "--limit", "60", ADMIN),
       "updated");
    ok(RUN(addr, "budget", "list"), "team:*");
    run_result r = RUN(addr, "budget", "get", "--team", "infra");
    cr_assert_eq(r.code, 0, "%s", r.err);
    run_has(r.out, "team:infra");
    run_has(r.out, "[....................]");
    run_has(r.out, "00:00:00 UTC");
    run_free(&r);
    r = RUN(addr, "budget", "set", "--selector", "team:*", "--metric", "carbon", "--window",
            "month", "--limit", "1", ADMIN);
    cr_assert_eq(r.code, 3);
    run_has(r.err, "(unknown_metric)");
    run_free(&r);
    ok(RUN(addr, "budget", "delete", "--selector", "team:*", "--metric", "gco2e", "--window",
           "month", ADMIN),
       "deleted team:* gco2e month");
    r = RUN(addr, "budget", "delete", "--selector", "team:*", "--metric", "gco2e", "--window",
            "month", ADMIN);
    cr_assert_eq(r.code, 1);
    run_has(r.err, "(unknown_budget)");
    run_free(&r);
    char client_key[72];
    th_create_key(&s, "client", "*", client_key, NULL);
    r = RUN(addr, "budget", "delete", "--selector", "team:*", "--metric", "gco2e", "--window",
            "month", "--key", client_key);
    cr_assert_eq(r.code, 1);
    run_has(r.err, "(unauthorized)");
    run_free(&r);
    ok(RUN(addr, "grid", "set", "--zone", "FRA", "--gco2e-per-kwh", "21.5", "--valid-for", "600",
           ADMIN),
       "grid FRA: 21.5 gCO2e/kWh until");
    r = RUN(addr, "grid", "set", "--zone", "XXX", "--gco2e-per-kwh", "1", "--valid-for", "60",
            ADMIN);
    cr_assert_eq(r.code, 3);
    run_free(&r);
    ok(RUN(addr, "reload", ADMIN), "budgets");
    th_server_cleanup(&s);
}

Test(cli_server, exec_on_a_real_server_settles_refuses_and_waits_out_a_throttle) {
    th_server s;
    char addr[64];
    real_server(&s, addr, sizeof addr);
    ok(RUN(addr, "budget", "set", "--selector", "user:ana", "--metric", "requests", "--window",
           "rate:1/2s", "--limit", "1", ADMIN),
       NULL);
    ok(RUN(addr, "budget", "set", "--selector", "user:*", "--metric", "tokens", "--window", "month",
           "--limit", "100000", ADMIN),
       NULL);
    /* allowed: runs, and its reported usage is what gets charged */
    run_result r = RUN(addr, "exec", REQ, "--", "sh", "-c",
                       "echo input_tokens=11 output_tokens=22 > \"$DISCERN_USAGE_FILE\"; echo one");
    cr_assert_eq(r.code, 0, "%s", r.err);
    cr_assert_str_eq(r.out, "one\n");
    run_free(&r);
    /* the rate budget is empty now: without --wait the command does not run */
    r = RUN(addr, "exec", REQ, "--", "echo", "two");
    cr_assert_eq(r.code, 10, "%s", r.err);
    cr_assert_str_eq(r.out, "");
    run_free(&r);
    /* with --wait it runs once the bucket refilled */
    r = RUN(addr, "exec", REQ, "--wait", "--max-wait", "10", "--", "echo", "three");
    cr_assert_eq(r.code, 0, "%s", r.err);
    cr_assert_str_eq(r.out, "three\n");
    run_has(r.err, "after waiting throttles");
    run_free(&r);
    r = RUN(addr, "budget", "get", "--user", "ana", "--json");
    json_t *j = json_loads(r.out, 0, NULL);
    json_t *bs = json_object_get(j, "budgets");
    double tokens = -1;
    for (size_t i = 0; i < json_array_size(bs); i++)
        if (strcmp(json_string_value(json_object_get(json_array_get(bs, i), "metric")), "tokens") ==
            0)
            tokens = json_real_value(json_object_get(json_array_get(bs, i), "used"));
    cr_assert_float_eq(tokens, 33 + 900, 1e-9, "11 + 22 reported, then 100 + 800 from the flags");
    json_decref(j);
    run_free(&r);
    /* refused: over the team's carbon budget, the command never runs */
    ok(RUN(addr, "budget", "set", "--selector", "team:infra", "--metric", "gco2e", "--window",
           "month", "--limit", "0.000001", ADMIN),
       NULL);
    r = RUN(addr, "exec", "--provider", "openai", "--model", "gpt-4o", "--output-tokens", "800",
            "--purpose", "code-review", "--team", "infra", "--user", "bob", "--", "echo", "four");
    cr_assert_eq(r.code, 11, "%s", r.err);
    cr_assert_str_eq(r.out, "");
    run_has(r.err, "exec: refuse: ");
    run_free(&r);
    th_server_cleanup(&s);
}

/* The token printed by `key create` (line "token dsk_..."), into out. */
static void token_of(const char *out_text, char *out, size_t cap) {
    const char *t = strstr(out_text, "token ");
    cr_assert_not_null(t, "%s", out_text);
    snprintf(out, cap, "%.*s", (int)strcspn(t + 6, "\n"), t + 6);
}

Test(cli_server, keys_are_created_used_listed_revoked_and_decisions_are_shown) {
    th_server s;
    char addr[64];
    real_server(&s, addr, sizeof addr);
    run_result r = RUN(addr, "key", "create", "--role", "client", "--scope", "org:acme/team:infra",
                       "--label", "ci", ADMIN);
    cr_assert_eq(r.code, 0, "%s", r.err);
    char client[96], reader[96], id[32];
    token_of(r.out, client, sizeof client);
    cr_assert_eq(strncmp(client, "dsk_", 4), 0, "%s", r.out);
    cr_assert_eq(sscanf(r.out, "key %31s", id), 1);
    run_free(&r);
    r = RUN(addr, "key", "create", "--role", "reader", "--scope", "org:acme", ADMIN);
    token_of(r.out, reader, sizeof reader);
    run_free(&r);
    /* The key's scope names the subject: no --team needed. */
    r = RUN(addr, "check", "--provider", "openai", "--model", "gpt-4o", "--output-tokens", "100",
            "--purpose", "code-review", "--tag", "ticket=T-9", "--key", client, "--json");
    cr_assert_eq(r.code, 0, "%s", r.err);
    run_free(&r);
    r = RUN(addr, "check", "--provider", "openai", "--model", "gpt-4o", "--output-tokens", "100",
            "--purpose", "code-review", "--team", "payments", "--key", client);
    cr_assert_eq(r.code, 1, "%s", r.err);
    run_has(r.err, "(forbidden)");
    run_free(&r);
    r = RUN(addr, "decisions", "--key", reader, "--json");
    cr_assert_eq(r.code, 0, "%s", r.err);
    json_t *j = json_loads(r.out, 0, NULL);
    cr_assert_not_null(j, "%s", r.out);
    json_t *d = json_array_get(json_object_get(j, "decisions"), 0);
    cr_assert_str_eq(json_string_value(json_object_get(d, "key_id")), id);
    cr_assert_str_eq(json_string_value(json_object_get(json_object_get(d, "subject"), "team")),
                     "infra");
    cr_assert_str_eq(json_string_value(json_object_get(json_object_get(d, "tags"), "ticket")),
                     "T-9");
    cr_assert_gt(json_array_size(json_object_get(d, "verdicts")), 0);
    json_decref(j);
    run_free(&r);
    r = RUN(addr, "decisions", "--key", reader);
    cr_assert_eq(r.code, 0, "%s", r.err);
    run_has(r.out, "allow");
    run_has(r.out, "tag ticket=T-9");
    run_free(&r);
    r = RUN(addr, "key", "list", ADMIN);
    cr_assert_eq(r.code, 0, "%s", r.err);
    run_has(r.out, id);
    run_has(r.out, "org:acme/team:infra");
    cr_assert_null(strstr(r.out, "dsk_"), "key list shows no token: %s", r.out);
    run_free(&r);
    ok(RUN(addr, "key", "revoke", "--key-id", id, ADMIN), "revoked");
    r = RUN(addr, "check", "--provider", "openai", "--model", "gpt-4o", "--output-tokens", "100",
            "--purpose", "code-review", "--key", client);
    cr_assert_eq(r.code, 1, "%s", r.err);
    run_has(r.err, "(unauthorized)");
    run_free(&r);
    r = RUN(addr, "key", "create", "--role", "client", ADMIN);
    cr_assert_eq(r.code, 2);
    run_has(r.err, "--scope");
    run_free(&r);
    th_server_cleanup(&s);
}

Test(cli_server, the_admin_journal_lists_who_changed_keys_and_budgets_oldest_first_in_pages) {
    th_server s;
    char addr[64];
    real_server(&s, addr, sizeof addr);
    run_result r = RUN(addr, "key", "create", "--role", "reader", "--scope", "org:acme", ADMIN);
    cr_assert_eq(r.code, 0, "%s", r.err);
    char reader[96], id[32];
    token_of(r.out, reader, sizeof reader);
    cr_assert_eq(sscanf(r.out, "key %31s", id), 1);
    run_free(&r);
    ok(RUN(addr, "budget", "set", "--selector", "team:infra", "--metric", "gco2e", "--window",
           "month", "--limit", "1000", ADMIN),
       NULL);
    r = RUN(addr, "admin-journal", "--json", ADMIN);
    cr_assert_eq(r.code, 0, "%s", r.err);
    json_t *j = json_loads(r.out, 0, NULL);
    cr_assert_not_null(j, "%s", r.out);
    json_t *changes = json_object_get(j, "changes");
    /* the harness's own key first, then the reader key, then the budget */
    size_t n = json_array_size(changes);
    cr_assert_geq(n, 2, "%s", r.out);
    json_t *k = json_array_get(changes, n - 2), *b = json_array_get(changes, n - 1);
    cr_assert_str_eq(json_string_value(json_object_get(k, "action")), "key.create");
    cr_assert_str_eq(json_string_value(json_object_get(k, "target")), id);
    cr_assert_str_eq(json_string_value(json_object_get(k, "by_key")), "admin");
    cr_assert_str_eq(json_string_value(json_object_get(k, "detail")), "role=reader scope=org:acme");
    cr_assert_str_eq(json_string_value(json_object_get(b, "action")), "budget.set");
    cr_assert_str_eq(json_string_value(json_object_get(b, "target")), "team:infra");
    cr_assert_lt(json_integer_value(json_object_get(k, "seq")),
                 json_integer_value(json_object_get(b, "seq")));
    json_decref(j);
    run_free(&r);
    r = RUN(addr, "admin-journal", "--limit", "1", ADMIN);
    cr_assert_eq(r.code, 0, "%s", r.err);
    run_has(r.out, "key.create");
    run_has(r.out, "more: --after ");
    cr_assert_null(strstr(r.out, "budget.set"), "%s", r.out);
    long long after = 0;
    cr_assert_eq(sscanf(strstr(r.out, "more: --after ") + 14, "%lld", &after), 1);
    run_free(&r);
    char after_s[32];
    snprintf(after_s, sizeof after_s, "%lld", after);
    r = RUN(addr, "admin-journal", "--after", after_s, "--limit", "1000", ADMIN);
    cr_assert_eq(r.code, 0, "%s", r.err);
    run_has(r.out, "budget.set");
    run_has(r.out, "metric=gco2e window=month");
    run_free(&r);
    r = RUN(addr, "admin-journal", "--key", reader);
    cr_assert_eq(r.code, 1, "%s", r.out);
    run_has(r.err, "not open to a reader key (unauthorized)");
    run_free(&r);
    r = RUN(addr, "admin-journal", "--limit", "many", ADMIN);
    cr_assert_eq(r.code, 2);
    run_has(r.err, "--limit");
    run_free(&r);
    th_server_cleanup(&s);
}

/* ------------------------------------------------- common flags, error lines -- */

Test(cli_server, common_flags_work_before_the_command_between_it_and_its_subcommand_and_after) {
    th_server s;
    th_server_start(&s, SHIPPED_POLICIES);
    char addr[64];
    snprintf(addr, sizeof addr, "127.0.0.1:%d", s.port);
    ok(RUN(NULL, "--server", addr, "--admin-token", TH_ADMIN_TOKEN, "budget", "set", "--selector",
           "team:*", "--metric", "gco2e", "--window", "day", "--limit", "5"),
       "created team:* gco2e day limit 5 g");
    ok(RUN(NULL, "budget", "--server", addr, "--json", "--admin-token", TH_ADMIN_TOKEN, "list"),
       "\"selector\": \"team:*\"");
    ok(RUN(NULL, "--json", "budget", "list", "--server=" TH_ADMIN_TOKEN "x", "--server", addr,
           "--admin-token", TH_ADMIN_TOKEN),
       "\"budgets\"");
    ok(RUN(NULL, "--server", addr, "--json", "ping"), "\"pong\": true");
    ok(RUN(NULL, "--json", "zones"), "\"zones\"");
    run_result r = RUN(NULL, "--data", "/nonexistent", "ping");
    cr_assert_eq(r.code, 2, "%s", r.err);
    cr_assert_str_eq(r.err, "discern: ping: option --data is not used by this command "
                            "(bad_request)\n");
    run_free(&r);
    r = RUN(NULL, "--server", addr, "--json", "exec", "--", "true");
    cr_assert_eq(r.code, 2, "%s", r.err);
    run_has(r.err, "discern: exec: option --json is not used by this command (bad_request)");
    run_free(&r);
    th_server_cleanup(&s);
}

/* Every error is one line "discern: <command>: <message> (<code>)" and nothing on
 * stdout, whichever command, subcommand or layer (flags, client, server) fails. */
Test(cli_server, every_error_line_reads_discern_command_message_code) {
    th_server s;
    th_server_start(&s, SHIPPED_POLICIES);
    char addr[64], closed[64];
    snprintf(addr, sizeof addr, "127.0.0.1:%d", s.port);
    snprintf(closed, sizeof closed, "127.0.0.1:%d", fake_closed_port());
    const struct {
        const char *args[24];
        int code;
        const char *line;
    } cases[] = {
        {{"check", "--provider", "openai", NULL},
         2,
         "discern: check: option --model is required (bad_request)\n"},
        {{"check", REQ, "--purpose", "", NULL},
         2,
         "discern: check: field 'purpose' is required (bad_request)\n"},
        {{"estimate", "--provider", "openai", "--model", "gpt-4o", "--output-tokens", "x", NULL},
         2,
         "discern: estimate: option --output-tokens: 'x' is not a non-negative integer "
         "(bad_request)\n"},
        {{"budget", "get", "--team", "infra", "--bogus", NULL},
         2,
         "discern: budget get: unknown option '--bogus' (see --help) (bad_request)\n"},
        {{"budget", "frob", NULL}, 2, "discern: budget: unknown subcommand 'frob' (bad_request)\n"},
        {{"policy", "test", "/nonexistent-dir", NULL}, 1, "discern: policy test: "},
        {{"settle", "--reservation", "r-none", "--output-tokens", "1", "--admin-token", "t", NULL},
         2,
         "discern: settle: option --admin-token is not used by this command (bad_request)\n"},
        {{"frobnicate", NULL}, 2, "discern: unknown command 'frobnicate' (bad_request)\n"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        run_result r = run(addr, cases[i].args);
        cr_assert_eq(r.code, cases[i].code, "case %zu: exit %d: %s", i, r.code, r.err);
        cr_assert(strstr(r.err, cases[i].line), "case %zu: '%s' lacks '%s'", i, r.err,
                  cases[i].line);
        cr_assert_str_eq(r.out, "", "case %zu", i);
        run_free(&r);
    }
    char key[72];
    th_create_key(&s, "client", "*", key, NULL);
    run_result r = RUN(addr, "check", REQ, "--model", "gpt-9", "--key", key);
    cr_assert_eq(r.code, 3, "%s", r.err);
    run_has(r.err, "discern: check: field 'model': unknown model 'gpt-9'");
    run_has(r.err, "(unknown_model)\n");
    run_free(&r);
    r = RUN(closed, "budget", "list");
    cr_assert_eq(r.code, 4, "%s", r.err);
    run_has(r.err, "discern: budget list: cannot connect to");
    run_has(r.err, "(unreachable)\n");
    run_free(&r);
    th_server_cleanup(&s);
}

/* ------------------------------------- cached and reasoning tokens, method -- */

#define DREQ(user, out)                                                                            \
    "--provider", "openai", "--model", "gpt-4o", "--output-tokens", out, "--purpose", "chat",      \
        "--team", "infra", "--user", user, "--method", "discern"

/* A number at a path of keys in the JSON that r printed. */
static double json_at(run_result *r, const char *k1, const char *k2, const char *k3) {
    cr_assert_eq(r->code, 0, "exit %d: %s", r->code, r->err);
    json_t *j = json_loads(r->out, 0, NULL);
    cr_assert_not_null(j, "%s", r->out);
    json_t *v = json_object_get(json_object_get(j, k1), k2);
    if (k3) v = json_object_get(v, k3);
    cr_assert(json_is_number(v), "%s.%s.%s in %s", k1, k2, k3 ? k3 : "", r->out);
    double x = json_number_value(v);
    json_decref(j);
    run_free(r);
    return x;
}

static double check_gwp(const char *addr, const char *const *extra) {
    const char *args[40] = {"check", DREQ("ana", "100"), "--no-reserve", "--json"};
    size_t n = 0;
    while (args[n])
        n++;
    for (size_t i = 0; extra[i]; i++)
        args[n++] = extra[i];
    run_result r = run(addr, args);
    return json_at(&r, "estimate", "gwp_kgco2eq", "max");
}

Test(cli_server, check_settle_and_exec_send_cached_and_reasoning_tokens_and_the_method) {
    th_server s;
    char addr[64];
    real_server(&s, addr, sizeof addr);
    ok(RUN(addr, "budget", "set", "--selector", "user:*", "--metric", "gco2e", "--window", "month",
           "--limit", "1000000", ADMIN),
       NULL);
    /* check: reasoning tokens count as output, cached input tokens at a discount */
    double plain = check_gwp(addr, (const char *const[]){NULL});
    double reasoning = check_gwp(addr, (const char *const[]){"--reasoning-tokens", "2000", NULL});
    cr_assert_gt(reasoning, 2 * plain, "%g vs %g", reasoning, plain);
    double uncached = check_gwp(addr, (const char *const[]){"--input-tokens", "50000", NULL});
    double cached = check_gwp(
        addr, (const char *const[]){"--input-tokens", "50000", "--cached-tokens", "40000", NULL});
    cr_assert_lt(cached, uncached, "%g vs %g", cached, uncached);
    run_result r = RUN(addr, "check", DREQ("ana", "1"), "--method", "nope");
    cr_assert_eq(r.code, 2, "%s", r.err);
    run_has(r.err, "field 'method': unknown value 'nope'");
    run_free(&r);
    /* settle: the actual reasoning tokens are charged */
    double charged[2];
    for (int i = 0; i < 2; i++) {
        r = RUN(addr, "check", DREQ(i ? "sb" : "sa", "100"), "--json");
        char res[128];
        json_t *j = json_loads(r.out, 0, NULL);
        cr_assert_not_null(j, "%s %s", r.out, r.err);
        snprintf(res, sizeof res, "%s", json_string_value(json_object_get(j, "reservation")) ?: "");
        json_decref(j);
        run_free(&r);
        r = i ? RUN(addr, "settle", "--reservation", res, "--output-tokens", "100", "--method",
                    "discern", "--json")
              : RUN(addr, "settle", "--reservation", res, "--output-tokens", "100", "--method",
                    "discern", "--reasoning-tokens", "2000", "--cached-tokens", "0", "--json");
        charged[i] = json_at(&r, "charged", "gco2e", NULL);
    }
    cr_assert_gt(charged[0], 2 * charged[1], "%g vs %g", charged[0], charged[1]);
    /* exec: the usage file's reasoning tokens reach the settle, with the check's method */
    double used[2];
    for (int i = 0; i < 2; i++) {
        r = RUN(addr, "exec", DREQ(i ? "eb" : "ea", "100"), "--", "sh", "-c",
                i ? "echo output_tokens=100 > \"$DISCERN_USAGE_FILE\""
                  : "echo output_tokens=100 reasoning_tokens=2000 cached_input_tokens=0 > "
                    "\"$DISCERN_USAGE_FILE\"");
        cr_assert_eq(r.code, 0, "%s", r.err);
        cr_assert(!strstr(r.err, "ignoring"), "%s", r.err);
        run_free(&r);
        r = RUN(addr, "budget", "get", "--user", i ? "eb" : "ea", "--json");
        cr_assert_eq(r.code, 0, "%s", r.err);
        json_t *j = json_loads(r.out, 0, NULL);
        used[i] = json_real_value(
            json_object_get(json_array_get(json_object_get(j, "budgets"), 0), "used"));
        json_decref(j);
        run_free(&r);
    }
    cr_assert_gt(used[0], 2 * used[1], "%g vs %g", used[0], used[1]);
    cr_assert_float_eq(used[1], charged[1], 1e-9 + charged[1] * 1e-6);
    th_server_cleanup(&s);
}

/* ------------------------------------------------------------ counter names -- */

Test(cli_server, budget_get_with_the_checks_org_shows_the_counter_the_check_holds_on) {
    th_server s;
    char addr[64];
    real_server(&s, addr, sizeof addr);
    ok(RUN(addr, "budget", "set", "--selector", "team:*", "--metric", "gco2e", "--window", "month",
           "--limit", "50", ADMIN),
       NULL);
    ok(RUN(addr, "check", "--org", "acme", "--team", "infra", "--user", "ana", "--provider",
           "openai", "--model", "gpt-4o", "--output-tokens", "800", "--purpose", "code-review"),
       "reservation r");
    run_result r = RUN(addr, "budget", "get", "--org", "acme", "--team", "infra", "--json");
    cr_assert_eq(r.code, 0, "%s", r.err);
    json_t *j = json_loads(r.out, 0, NULL);
    json_t *b = json_array_get(json_object_get(j, "budgets"), 0);
    cr_assert_str_eq(json_string_value(json_object_get(b, "counter")), "org:acme/team:infra");
    cr_assert_gt(json_real_value(json_object_get(b, "held")), 0.5, "%s", r.out);
    json_decref(j);
    run_free(&r);
    r = RUN(addr, "budget", "get", "--org", "acme", "--team", "infra");
    cr_assert_eq(r.code, 0, "%s", r.err);
    run_has(r.out, "team:* org:acme/team:infra gco2e");
    cr_assert(!strstr(r.out, "note:"), "%s", r.out);
    run_free(&r);
    /* without the org: another counter, and the output says so */
    r = RUN(addr, "budget", "get", "--team", "infra");
    cr_assert_eq(r.code, 0, "%s", r.err);
    run_has(r.out, "team:* team:infra");
    run_has(r.out, "a check with --org O holds on org:O/team:infra instead");
    run_free(&r);
    th_server_cleanup(&s);
}

/* ------------------------------------------------ docs/client.md's example -- */

/* text with what changes from run to run (reservation ids, policy versions: runs of
 * 12 or more hex digits; "YYYY-MM-DD hh:mm:ss" times) masked, into out. */
static void mask(const char *text, char *out, size_t cap) {
    size_t o = 0;
    for (const char *p = text; *p && o + 8 < cap;) {
        size_t hex = strspn(p, "0123456789abcdef");
        int y, mo, d, h, mi, sec, n = 0;
        if (hex >= 12) {
            memcpy(out + o, "<hex>", 5), o += 5, p += hex;
        } else if (sscanf(p, "%4d-%2d-%2d %2d:%2d:%2d%n", &y, &mo, &d, &h, &mi, &sec, &n) == 6 &&
                   n == 19) {
            memcpy(out + o, "<time>", 6), o += 6, p += n;
        } else {
            do
                out[o++] = *p++;
            while (hex-- > 1 && o + 8 < cap);
        }
    }
    out[o] = '\0';
}

/* The fenced block of docs/client.md that starts with "$ discern budget set". */
static char *doc_example(void) {
    FILE *f = fopen(DISCERN_SOURCE_DIR "/docs/client.md", "r");
    cr_assert_not_null(f);
    static char doc[256 * 1024];
    size_t n = fread(doc, 1, sizeof doc - 1, f);
    fclose(f);
    doc[n] = '\0';
    char *start = strstr(doc, "```\n$ discern budget set");
    cr_assert_not_null(start, "docs/client.md has no tour example");
    start += 4;
    char *end = strstr(start, "```\n");
    cr_assert_not_null(end);
    *end = '\0';
    return start;
}

/* "$ discern a 'b c' d" into args (quotes removed), NULL-terminated. */
static void split_command(char *line, const char **args, size_t cap) {
    size_t n = 0;
    char *p = line + strlen("$ discern ");
    while (*p && n + 1 < cap) {
        while (*p == ' ')
            p++;
        if (!*p) break;
        char quote = *p == '\'' ? *p++ : 0;
        args[n++] = p;
        p += strcspn(p, quote ? "'" : " ");
        if (*p) *p++ = '\0';
    }
    args[n] = NULL;
}

Test(cli_server, the_tour_output_in_docs_client_md_is_what_the_code_prints) {
    th_server s;
    char addr[64];
    real_server(&s, addr, sizeof addr);
    char *doc = doc_example(), got[16384] = "";
    size_t used = 0;
    for (char *line = doc, *next; line && *line; line = next) {
        next = strchr(line, '\n');
        if (next) *next++ = '\0';
        if (strncmp(line, "$ discern ", 10) != 0) continue;
        char cmd[1024];
        snprintf(cmd, sizeof cmd, "%s", line);
        const char *args[40];
        split_command(cmd, args, 40);
        run_result r = run(addr, args);
        cr_assert_eq(r.code, 0, "%s: exit %d %s", line, r.code, r.err);
        used += (size_t)snprintf(got + used, sizeof got - used, "%s\n%s", line, r.out);
        run_free(&r);
    }
    char want_m[16384], got_m[16384];
    doc = doc_example();
    mask(doc, want_m, sizeof want_m);
    mask(got, got_m, sizeof got_m);
    cr_assert_str_eq(got_m, want_m, "docs/client.md's example differs from the output:\n%s", got);
    th_server_cleanup(&s);
}

Test(cli_server, the_readme_quotes_every_wildcard_selector_from_the_shell) {
    FILE *f = fopen(DISCERN_SOURCE_DIR "/README.md", "r");
    cr_assert_not_null(f);
    static char text[128 * 1024];
    size_t n = fread(text, 1, sizeof text - 1, f);
    fclose(f);
    text[n] = '\0';
    int seen = 0;
    for (const char *p = strstr(text, "--selector "); p; p = strstr(p + 1, "--selector ")) {
        const char *v = p + strlen("--selector ");
        size_t len = strcspn(v, " \n");
        bool quoted = v[0] == '\'' || v[0] == '"';
        cr_assert(quoted || !memchr(v, '*', len), "README.md: unquoted wildcard selector '%.*s'",
                  (int)len, v);
        seen++;
    }
    cr_assert_gt(seen, 0, "README.md sets no budget any more: update this test");
}
