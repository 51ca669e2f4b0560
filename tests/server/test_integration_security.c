/*
 * test_integration_security.c - a real discernd defending itself: failed logins cost
 * turns per address and in all, strings must be valid UTF-8, the Unix socket's mode
 * and the file at its path, and the refusal to serve unauthenticated TCP beyond
 * loopback.
 */
#include "harness.h"

#include <criterion/criterion.h>
#include <errno.h>
#include <signal.h>
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
    int64_t t0 = th_now_ms();
    for (int i = 0; i < N; i++) {
        c[i] = th_connect_tcp(&srv);
        th_send_request(c[i], 1, "auth", WRONG);
    }
    for (int i = 0; i < N; i++) {
        json_t *r = th_read(c[i], 5000);
        cr_assert_not_null(r, "no reply on connection %d", i);
        json_decref(r);
    }
    int64_t ms = th_now_ms() - t0;
    /* N turns one gap (>= 100 ms) apart: N * 100 ms, less a few ms because the server
     * books turns on its loop's cached clock, read a little before this one. */
    cr_assert_geq(ms, N * 100 - 20, "%d parallel guesses were all answered within %lld ms", N,
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

Test(security, sigterm_answers_an_auth_still_waiting_for_its_turn_then_exits_zero) {
    th_client *warm = th_connect_tcp(&srv);
    for (int i = 0; i < 3; i++)
        timed_auth(warm, WRONG, false);
    th_client_free(warm);
    th_client *c = th_connect_tcp(&srv);
    th_send_request(c, 7, "auth", RIGHT);
    th_sleep_ms(20);
    cr_assert_eq(kill(srv.pid, SIGTERM), 0);
    json_t *r = th_read(c, 5000);
    cr_assert_not_null(r, "the waiting auth was not answered before the exit");
    cr_assert(json_is_true(json_object_get(th_result(r), "admin")));
    json_decref(r);
    th_client_free(c);
    cr_assert_eq(th_server_stop(&srv), 0);
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
    th_client *c = th_connect_admin(&srv);
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
    int status;
    char *body = th_http_get_auth(&srv, "/v1/budgets?org=%FFacme", TH_ADMIN_TOKEN, &status);
    cr_assert_eq(status, 400, "%s", body);
    cr_assert(strstr(body, "field 'org': not valid UTF-8"), "%s", body);
    free(body);
    /* The connection goes on. */
    json_t *r = th_call(c, "ping", NULL);
    cr_assert_not_null(th_result(r));
    json_decref(r);
    th_client_free(c);
}

/* --------------------------------------------------------------- Unix socket -- */

TestSuite(unix_socket, .fini = th_kill_live_server, .timeout = 60);

static void ping_over_unix(const th_server *s) {
    th_client *c = th_connect_unix(s);
    json_t *r = th_call(c, "ping", NULL);
    cr_assert_not_null(th_result(r), "ping over the Unix socket: %s", th_error_message(r));
    json_decref(r);
    th_client_free(c);
}

static unsigned socket_mode(const th_server *s) {
    struct stat st;
    cr_assert_eq(lstat(s->unix_path, &st), 0, "%s: %s", s->unix_path, strerror(errno));
    cr_assert(S_ISSOCK(st.st_mode));
    return (unsigned)(st.st_mode & 07777);
}

Test(unix_socket, is_created_0660_under_umask_0_or_as_unix_mode_says) {
    mode_t old = umask(0);
    th_server s;
    th_server_prepare(&s);
    th_server_restart(&s, NULL);
    umask(old);
    cr_assert_eq(socket_mode(&s), 0660, "mode %04o under umask 0", socket_mode(&s));
    ping_over_unix(&s);
    cr_assert_eq(th_server_stop(&s), 0);
    umask(0);
    th_server_restart(&s, "unix_mode = 0600");
    umask(old);
    cr_assert_eq(socket_mode(&s), 0600);
    th_server_cleanup(&s);
}

static struct sockaddr_un unix_addr(const char *path) {
    struct sockaddr_un a = {.sun_family = AF_UNIX};
    cr_assert_lt(strlen(path), sizeof a.sun_path);
    memcpy(a.sun_path, path, strlen(path) + 1);
    return a;
}

/* A socket file at path that nobody listens on (as a crash leaves it), or with a
 * listener whose fd goes to *fd_out. */
static void make_stale_socket(const char *path, bool keep_listening, int *fd_out) {
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    struct sockaddr_un a = unix_addr(path);
    cr_assert_eq(bind(fd, (struct sockaddr *)&a, sizeof a), 0, "%s", strerror(errno));
    if (keep_listening) {
        cr_assert_eq(listen(fd, 4), 0);
        *fd_out = fd;
        return;
    }
    close(fd);
}

Test(unix_socket, a_stale_socket_at_the_path_is_replaced) {
    th_server s;
    th_server_prepare(&s);
    make_stale_socket(s.unix_path, false, NULL);
    th_server_restart(&s, NULL);
    ping_over_unix(&s);
    cr_assert(th_log_contains(&s, "event=unix_stale_removed path="));
    th_server_cleanup(&s);
}

static void refused_start(th_server *s, const char *why) {
    cr_assert_eq(th_server_expect_exit(s, NULL), 3);
    char want[512];
    snprintf(want, sizeof want, "unix: %s %s", s->unix_path, why);
    cr_assert(th_log_contains(s, want), "the log lacks \"%s\"", want);
}

static void assert_file_holds(const char *path, const char *text) {
    char buf[64] = "";
    FILE *f = fopen(path, "r");
    cr_assert_not_null(f, "%s is gone", path);
    cr_assert_not_null(fgets(buf, sizeof buf, f));
    fclose(f);
    cr_assert_str_eq(buf, text);
}

Test(unix_socket, a_file_that_is_not_a_socket_is_reported_and_left_alone) {
    th_server s;
    th_server_prepare(&s);
    FILE *f = fopen(s.unix_path, "w");
    fputs("keep me", f);
    fclose(f);
    refused_start(&s, "exists and is not a socket; refusing to remove it");
    assert_file_holds(s.unix_path, "keep me");
    th_server_cleanup(&s);
}

Test(unix_socket, a_symbolic_link_is_reported_and_neither_followed_nor_removed) {
    th_server s;
    th_server_prepare(&s);
    char target[400];
    snprintf(target, sizeof target, "%s/target", s.dir);
    FILE *f = fopen(target, "w");
    fputs("victim", f);
    fclose(f);
    cr_assert_eq(symlink(target, s.unix_path), 0);
    refused_start(&s, "is a symbolic link; refusing to follow or remove it");
    struct stat st;
    cr_assert_eq(lstat(s.unix_path, &st), 0);
    cr_assert(S_ISLNK(st.st_mode), "the link is still there");
    assert_file_holds(target, "victim");
    th_server_cleanup(&s);
}

Test(unix_socket, another_users_socket_is_reported_and_left_alone) {
    if (geteuid() != 0) cr_skip_test("needs root to give a socket to another uid");
    th_server s;
    th_server_prepare(&s);
    make_stale_socket(s.unix_path, false, NULL);
    cr_assert_eq(lchown(s.unix_path, 12345, 12345), 0);
    refused_start(&s, "is a socket of uid 12345, not ours (0); refusing to remove it");
    struct stat st;
    cr_assert_eq(lstat(s.unix_path, &st), 0);
    cr_assert_eq(st.st_uid, 12345);
    th_server_cleanup(&s);
}

Test(unix_socket, a_socket_with_a_live_listener_is_reported_and_keeps_working) {
    th_server s;
    th_server_prepare(&s);
    int fd = -1;
    make_stale_socket(s.unix_path, true, &fd);
    refused_start(&s, "is in use by a running server (another discernd?)");
    int c = socket(AF_UNIX, SOCK_STREAM, 0);
    struct sockaddr_un a = unix_addr(s.unix_path);
    cr_assert_eq(connect(c, (struct sockaddr *)&a, sizeof a), 0, "the other listener still works");
    close(c);
    close(fd);
    th_server_cleanup(&s);
}

/* ------------------------------------------------------------- insecure bind -- */

TestSuite(startup, .fini = th_kill_live_server, .timeout = 60);

Test(startup, tcp_beyond_loopback_without_require_auth_refuses_to_start_saying_why) {
    th_server s;
    th_server_prepare(&s);
    cr_assert_eq(th_server_expect_exit(&s, "listen = \"0.0.0.0:0\"\nrequire_auth = false"), 3);
    cr_assert(th_log_contains(&s, "listen: refusing 0.0.0.0:0 with require_auth = false: not "
                                  "loopback, so anyone reaching it could call every method "
                                  "without a key"));
    cr_assert(th_log_contains(&s, "--insecure-bind"));
    th_server_cleanup(&s);
}
