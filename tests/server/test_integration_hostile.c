/*
 * test_integration_hostile.c - discernd in a hostile environment: a bad config file
 * or flag (exit 2 naming file, line and key), the policy caps set from the config,
 * running out of descriptors, a full disk, slow and trickling peers. Each test
 * starts its own server through harness.c.
 */
#include "harness.h"

#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <criterion/logging.h>
#include <dirent.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

TestSuite(hostile, .fini = th_kill_live_server, .timeout = 120);

#define CONFIG_FIXTURES DISCERN_SOURCE_DIR "/tests/server/fixtures/config"

#define CHECK_PARAMS                                                                               \
    "{\"subject\": {\"org\": \"acme\", \"team\": \"infra\"}, \"provider\": \"openai\", "           \
    "\"model\": \"gpt-4o\","                                                                       \
    " \"input_tokens\": 100, \"output_tokens\": 800, \"purpose\": \"code-review\"}"

static void ping_ok(th_client *c) {
    json_t *r = th_call(c, "ping", "{}");
    cr_assert_not_null(r, "no answer to ping");
    cr_assert_str_eq(th_error_code(r), "", "ping failed: %s", th_error_message(r));
    json_decref(r);
}

/* ------------------------------------------------------------------- config -- */

Test(hostile, every_bad_config_file_exits_2_naming_the_file_and_line) {
    DIR *d = opendir(CONFIG_FIXTURES "/bad");
    cr_assert_not_null(d);
    int files = 0;
    for (struct dirent *e; (e = readdir(d)) != NULL;) {
        if (e->d_name[0] == '.') continue;
        char file[512], out[4096], want[600];
        snprintf(file, sizeof file, CONFIG_FIXTURES "/bad/%s", e->d_name);
        const char *args[] = {"--config", file, NULL};
        int code = th_run_discernd(args, out, sizeof out);
        snprintf(want, sizeof want, "discernd: config '%s' line ", file);
        cr_expect_eq(code, 2, "%s: exit %d: %s", e->d_name, code, out);
        cr_expect(strstr(out, want), "%s: %s", e->d_name, out);
        files++;
    }
    closedir(d);
    cr_assert_geq(files, 19);
}

Test(hostile, a_bad_flag_value_exits_2_naming_the_key) {
    char out[4096];
    const char *tz[] = {"--timezone", "Mars", NULL};
    cr_assert_eq(th_run_discernd(tz, out, sizeof out), 2, "%s", out);
    cr_assert(strstr(out, "timezone: 'Mars'"), "%s", out);
    const char *listen[] = {"--listen", "localhost:1", NULL};
    cr_assert_eq(th_run_discernd(listen, out, sizeof out), 2, "%s", out);
    cr_assert(strstr(out, "listen: 'localhost'"), "%s", out);
    const char *help[] = {"--help", NULL};
    cr_assert_eq(th_run_discernd(help, out, sizeof out), 0, "%s", out);
}

/* ------------------------------------------------------------ policy caps -- */

/* A policy that burns about 20 ms of CPU on every call. */
static const char slow_policy[] = "return { name = 'slow', decide = function(req, ctx)\n"
                                  "  local x = 0\n"
                                  "  for i = 1, 2000000 do x = x + i % 7 end\n"
                                  "  return allow('took its time ' .. x)\n"
                                  "end }\n";

static const char *check_decision(th_client *c, char *reason, size_t cap) {
    json_t *r = th_call(c, "check", CHECK_PARAMS);
    cr_assert_not_null(r);
    json_t *res = th_result(r);
    cr_assert_not_null(res, "check failed: %s", th_error_message(r));
    static char decision[32];
    snprintf(decision, sizeof decision, "%s", json_string_value(json_object_get(res, "decision")));
    snprintf(reason, cap, "%s", json_string_value(json_object_get(res, "reason")));
    json_decref(r);
    return decision;
}

static void start_with_slow_policy(th_server *s, const char *extra) {
    th_server_start(s, extra);
    th_write_policy(s, "slow.lua", slow_policy);
    th_client *u = th_connect_tcp(s);
    json_t *r = th_call(u, "auth", "{\"token\": \"" TH_ADMIN_TOKEN "\"}");
    json_decref(r);
    r = th_call(u, "policy.reload", "{}");
    cr_assert_str_eq(th_error_code(r), "", "%s", th_error_message(r));
    json_decref(r);
    th_client_free(u);
}

Test(hostile, the_policy_time_budget_is_the_configured_one) {
    th_server s;
    start_with_slow_policy(&s, NULL); /* default: 1 ms per call */
    th_client *c = th_connect_tcp(&s);
    ping_ok(c);
    char reason[512];
    const char *d = check_decision(c, reason, sizeof reason);
    cr_assert_str_eq(d, "refuse", "a 20 ms policy ran under the 1 ms default: %s", reason);
    th_client_free(c);
    th_server_cleanup(&s);

    th_server_start(&s, "policy_time_budget_us = 2000000");
    th_write_policy(&s, "slow.lua", slow_policy);
    th_client *u = th_connect_tcp(&s);
    json_decref(th_call(u, "auth", "{\"token\": \"" TH_ADMIN_TOKEN "\"}"));
    json_decref(th_call(u, "policy.reload", "{}"));
    d = check_decision(u, reason, sizeof reason);
    cr_assert_str_eq(d, "allow", "with 2 s per call: %s", reason);
    th_client_free(u);
    th_server_cleanup(&s);
}

/* A policy that keeps 8 MiB alive while it decides. */
static const char big_policy[] = "return { name = 'big', decide = function(req, ctx)\n"
                                 "  local t = {}\n"
                                 "  for i = 1, 64 do t[i] = string.rep('x', 131072 + i) end\n"
                                 "  return allow('held ' .. #t)\n"
                                 "end }\n";

Test(hostile, the_policy_memory_cap_is_the_configured_one) {
    th_server s;
    th_server_start(&s, "policy_memory_mb = 4");
    th_write_policy(&s, "big.lua", big_policy);
    th_client *u = th_connect_tcp(&s);
    json_decref(th_call(u, "auth", "{\"token\": \"" TH_ADMIN_TOKEN "\"}"));
    json_t *r = th_call(u, "policy.reload", "{}");
    cr_assert_str_eq(th_error_code(r), "", "%s", th_error_message(r));
    json_decref(r);
    char reason[512];
    const char *d = check_decision(u, reason, sizeof reason);
    cr_assert_str_eq(d, "refuse", "8 MiB under a 4 MiB cap: %s", reason);
    th_client_free(u);
    th_server_cleanup(&s);

    th_server_start(&s, "policy_memory_mb = 64");
    th_write_policy(&s, "big.lua", big_policy);
    u = th_connect_tcp(&s);
    json_decref(th_call(u, "auth", "{\"token\": \"" TH_ADMIN_TOKEN "\"}"));
    json_decref(th_call(u, "policy.reload", "{}"));
    d = check_decision(u, reason, sizeof reason);
    cr_assert_str_eq(d, "allow", "8 MiB under a 64 MiB cap: %s", reason);
    th_client_free(u);
    th_server_cleanup(&s);
}
