/*
 * test_integration_security.c - a real discernd defending itself: failed logins cost
 * turns per address and in all, strings must be valid UTF-8, the Unix socket's mode
 * and the file at its path, and the refusal to serve unauthenticated TCP beyond
 * loopback.
 */
#include "harness.h"

#include <criterion/criterion.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

static th_server srv;

static void start(void) {
    th_server_start(&srv, NULL);
}
static void stop(void) {
    th_server_cleanup(&srv);
}

TestSuite(security, .init = start, .fini = stop, .timeout = 60);

#define WRONG "{\"token\": \"guess\"}"
#define RIGHT "{\"token\": \"" TH_ADMIN_TOKEN "\"}"

/* auth on c; returns the milliseconds its reply took and asserts its outcome. */
static int64_t timed_auth(th_client *c, const char *params, bool want_admin) {
    int64_t t0 = th_now_ms();
    json_t *r = th_call(c, "auth", params);
    int64_t ms = th_now_ms() - t0;
    if (want_admin)
        cr_assert(json_is_true(json_object_get(th_result(r), "admin")), "auth: %s %s",
                  th_error_code(r), th_error_message(r));
    else
        cr_assert_str_eq(th_error_code(r), "unauthorized", "%s", th_error_message(r));
    json_decref(r);
    return ms;
}

/* The value of metric name in /metrics (-1 when absent). */
static long long metric(const char *name) {
    int status;
    char *body = th_http_get(&srv, "/metrics", &status);
    cr_assert_eq(status, 200);
    char pat[128];
    snprintf(pat, sizeof pat, "\n%s ", name);
    const char *at = strstr(body, pat);
    long long v = at ? atoll(at + strlen(pat)) : -1;
    free(body);
    return v;
}

/* ------------------------------------------------------------ failed logins -- */

Test(security, after_three_wrong_tokens_every_attempt_of_that_address_waits_100_ms) {
    th_client *a = th_connect_tcp_from(&srv, "127.0.0.1");
    for (int i = 0; i < 3; i++)
        timed_auth(a, WRONG, false);
    cr_assert(th_closed(a, 5000));
    th_client_free(a);
    th_client *a2 = th_connect_tcp_from(&srv, "127.0.0.1");
    int64_t ms = timed_auth(a2, WRONG, false);
    cr_assert_geq(ms, 100, "the fourth wrong token was answered after %lld ms", (long long)ms);
    th_client_free(a2);
    /* Even the right token waits its turn there: an early answer would tell a guesser. */
    th_client *a3 = th_connect_tcp_from(&srv, "127.0.0.1");
    ms = timed_auth(a3, RIGHT, true);
    cr_assert_geq(ms, 100, "a right token from a slowed address waits too (%lld ms)",
                  (long long)ms);
    th_client_free(a3);
    th_client *b = th_connect_tcp_from(&srv, "127.0.0.2");
    timed_auth(b, RIGHT, true);
    th_client_free(b);
    cr_assert_eq(metric("discern_auth_failures_total"), 4);
}

Test(security, parallel_guesses_from_one_address_queue_one_turn_apart) {
    enum { N = 5 };
    th_client *warm = th_connect_tcp(&srv);
    for (int i = 0; i < 3; i++)
        timed_auth(warm, WRONG, false);
    th_client_free(warm);
    th_client *c[N];
    for (int i = 0; i < N; i++) {
        c[i] = th_connect_tcp(&srv);
        th_send_request(c[i], 1, "auth", WRONG);
    }
    int64_t t0 = th_now_ms();
    for (int i = 0; i < N; i++) {
        json_t *r = th_read(c[i], 5000);
        cr_assert_not_null(r, "no reply on connection %d", i);
        json_decref(r);
    }
    int64_t ms = th_now_ms() - t0;
    cr_assert_geq(ms, N * 100, "%d parallel guesses were all answered within %lld ms", N,
                  (long long)ms);
    for (int i = 0; i < N; i++)
        th_client_free(c[i]);
}

Test(security, failed_logins_are_not_logged_one_line_each) {
    for (int k = 0; k < 2; k++) {
        th_client *c = th_connect_tcp_from(&srv, k ? "127.0.0.3" : "127.0.0.4");
        for (int i = 0; i < 3; i++)
            timed_auth(c, WRONG, false);
        th_client_free(c);
    }
    FILE *f = fopen(srv.log, "r");
    cr_assert_not_null(f);
    char line[2048];
    int lines = 0;
    while (fgets(line, sizeof line, f))
        lines += strstr(line, "auth") != NULL;
    fclose(f);
    cr_assert_leq(lines, 1, "six failures wrote %d log lines", lines);
    cr_assert_eq(metric("discern_auth_failures_total"), 6);
}

/* --------------------------------------------------------------------- UTF-8 -- */

#define BAD "@@BAD@@"                        /* replaced in the packed request by: */
#define NOT_UTF8 "\xff\xfe\xc3(\xed\xa0\x80" /* 7 bytes, none of it UTF-8 */
#define SUBJ(org) "\"subject\": {\"org\": \"" org "\", \"team\": \"infra\"}"
#define CHECK_P(subj, model, purpose, tags)                                                        \
    "{" subj ", \"provider\": \"openai\", \"model\": \"" model "\", \"output_tokens\": 10,"        \
    " \"purpose\": \"" purpose "\", \"tags\": " tags "}"

#define FIELD(name) "field '" name "': not valid UTF-8"

static void refused_naming(th_client *c, const char *method, const char *params, const char *want) {
    json_t *r = th_call_mangled(c, method, params, BAD, NOT_UTF8);
    cr_assert_str_eq(th_error_code(r), "bad_request", "%s %s: %s", method, params,
                     th_error_message(r));
    cr_assert(strstr(th_error_message(r), want), "'%s' lacks \"%s\"", th_error_message(r), want);
    json_decref(r);
}

Test(security, strings_that_are_not_utf8_are_refused_naming_the_field_and_charge_nothing) {
    th_client *c = th_connect_tcp(&srv);
    refused_naming(c, "check", CHECK_P(SUBJ(BAD), "gpt-4o", "code-review", "{}"), FIELD("org"));
    refused_naming(c, "check", CHECK_P(SUBJ("acme"), BAD, "code-review", "{}"), FIELD("model"));
    refused_naming(c, "check", CHECK_P(SUBJ("acme"), "gpt-4o", BAD, "{}"), FIELD("purpose"));
    refused_naming(c, "check", CHECK_P(SUBJ("acme"), "gpt-4o", "x", "{\"" BAD "\": \"v\"}"),
                   "field 'tags': a key is not valid UTF-8");
    refused_naming(c, "check", CHECK_P(SUBJ("acme"), "gpt-4o", "x", "{\"k\": \"" BAD "\"}"),
                   "field 'tags': a value is not valid UTF-8");
    refused_naming(c, "estimate", "{\"provider\": \"" BAD "\", \"model\": \"gpt-4o\"}",
                   FIELD("provider"));
    refused_naming(c, "budget.get", "{" SUBJ(BAD) "}", FIELD("org"));
    refused_naming(c, "auth", "{\"token\": \"" BAD "\"}", FIELD("token"));
    cr_assert_eq(th_sql_int(&srv, "SELECT count(*) FROM reservations"), 0);
    /* The connection goes on, and /metrics still parses. */
    json_t *r = th_call(c, "ping", NULL);
    cr_assert_not_null(th_result(r));
    json_decref(r);
    th_client_free(c);
}
