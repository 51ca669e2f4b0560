/*
 * test_client.c - libdiscern-client against a real discernd (started by the
 * server test harness on an ephemeral port and a Unix socket) and against fake
 * peers for the faults a real server does not produce on demand: silence, a
 * close in the middle of a reply, oversized and malformed replies.
 */
#include "discern/client.h"
#include "fake_server.h"
#include "harness.h"

#include <criterion/criterion.h>
#include <sys/wait.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

/* The discernd of the running test: the suite's fini kills it even when an
 * assertion failed before th_server_cleanup (it would hold the test's pipes). */
static th_server *live_server;

static void kill_live_server(void) {
    if (live_server && live_server->pid > 0) {
        kill(live_server->pid, SIGKILL);
        waitpid(live_server->pid, NULL, 0);
        live_server->pid = 0;
    }
}

TestSuite(client, .fini = kill_live_server);

static void start_server(th_server *s, const char *extra) {
    th_server_start(s, extra);
    live_server = s;
}

static int64_t ms_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static dsc_client *tcp_client(const th_server *s, const dsc_client_options *o) {
    char addr[64];
    snprintf(addr, sizeof addr, "127.0.0.1:%d", s->port);
    dsc_error err;
    dsc_client *c = dsc_client_new(addr, o, &err);
    cr_assert_not_null(c, "%s", err.message);
    return c;
}

static dsc_client *client_at(const char *addr, int timeout_ms) {
    dsc_error err;
    dsc_client_options o = {.timeout_ms = timeout_ms};
    dsc_client *c = dsc_client_new(addr, &o, &err);
    cr_assert_not_null(c, "%s", err.message);
    return c;
}

/* A TCP port nothing listens on. */
static int closed_port(void) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    cr_assert(bind(fd, (struct sockaddr *)&a, sizeof a) == 0);
    socklen_t len = sizeof a;
    getsockname(fd, (struct sockaddr *)&a, &len);
    close(fd);
    return ntohs(a.sin_port);
}

/* ------------------------------------------------------------ real server -- */

Test(client, ping_over_tcp_returns_the_server_version_and_clock) {
    th_server s;
    start_server(&s, NULL);
    dsc_client *c = tcp_client(&s, NULL);
    dsc_client_ping_result r;
    dsc_error err;
    cr_assert_eq(dsc_client_ping(c, &r, &err), DSC_OK, "%s", err.message);
    cr_assert_str_eq(r.version, "0.1.0");
    cr_assert_lt(abs((int)(r.time - (double)time(NULL))), 5);
    cr_assert_eq(dsc_client_connects(c), 1);
    dsc_client_free(c);
    th_server_cleanup(&s);
}

Test(client, ping_over_the_unix_socket) {
    th_server s;
    start_server(&s, NULL);
    char addr[400];
    snprintf(addr, sizeof addr, "unix:%s", s.unix_path);
    dsc_client *c = client_at(addr, 2000);
    dsc_error err;
    cr_assert_eq(dsc_client_ping(c, NULL, &err), DSC_OK, "%s", err.message);
    dsc_client_free(c);
    th_server_cleanup(&s);
}

Test(client, stats_count_the_requests_served) {
    th_server s;
    start_server(&s, NULL);
    dsc_client *c = tcp_client(&s, NULL);
    dsc_error err;
    for (int i = 0; i < 5; i++) cr_assert_eq(dsc_client_ping(c, NULL, &err), DSC_OK);
    dsc_client_stats_result st;
    cr_assert_eq(dsc_client_stats(c, &st, &err), DSC_OK, "%s", err.message);
    cr_assert_str_eq(st.version, "0.1.0");
    cr_assert_geq(st.requests, 5);
    cr_assert_eq(st.workers, 2);
    cr_assert_geq(st.connections, 1);
    dsc_client_free(c);
    th_server_cleanup(&s);
}

Test(client, the_admin_token_is_sent_on_connect_and_a_wrong_one_is_unauthorized) {
    th_server s;
    start_server(&s, NULL);
    dsc_error err;
    dsc_client *good = tcp_client(&s, &(dsc_client_options){.admin_token = TH_ADMIN_TOKEN});
    cr_assert_eq(dsc_client_connect(good, &err), DSC_OK, "%s", err.message);
    cr_assert_eq(dsc_client_ping(good, NULL, &err), DSC_OK, "%s", err.message);
    dsc_client *bad = tcp_client(&s, &(dsc_client_options){.admin_token = "wrong"});
    cr_assert_eq(dsc_client_ping(bad, NULL, &err), DSC_UNAUTHORIZED);
    cr_assert_not_null(strstr(err.message, "admin token was refused"), "%s", err.message);
    dsc_client_free(good);
    dsc_client_free(bad);
    th_server_cleanup(&s);
}

Test(client, a_server_error_comes_back_as_its_status_and_message) {
    th_server s;
    start_server(&s, NULL);
    /* a model no catalogue has: unknown_model from check and estimate, or
     * bad_request "unknown method" while the server does not serve them yet */
    dsc_client *c = tcp_client(&s, NULL);
    dsc_client_estimate_result r;
    dsc_error err;
    dsc_status st = dsc_client_estimate(
        c, &(dsc_client_estimate_request){.provider = "openai", .model = "gpt-9", .output_tokens = 5},
        &r, &err);
    cr_assert(st == DSC_UNKNOWN_MODEL || st == DSC_BAD_REQUEST, "status %d: %s", st, err.message);
    cr_assert_eq(err.code, st);
    cr_assert(strstr(err.message, "gpt-9") || strstr(err.message, "estimate"), "%s", err.message);
    /* the connection stays usable */
    cr_assert_eq(dsc_client_ping(c, NULL, &err), DSC_OK, "%s", err.message);
    cr_assert_eq(dsc_client_connects(c), 1);
    dsc_client_free(c);
    th_server_cleanup(&s);
}

Test(client, pipeline_of_1000_calls_matches_every_reply_to_its_call) {
    th_server s;
    start_server(&s, NULL);
    dsc_client *c = tcp_client(&s, &(dsc_client_options){.timeout_ms = 10000});
    enum { N = 1000 };
    dsc_client_call *calls = calloc(N, sizeof *calls);
    dsc_client_ping_result *pings = calloc(N, sizeof *pings);
    dsc_client_stats_result *stats = calloc(N, sizeof *stats);
    for (int i = 0; i < N; i++) {
        calls[i].method = i % 2 ? DSC_CALL_STATS : DSC_CALL_PING;
        calls[i].result = i % 2 ? (void *)&stats[i] : (void *)&pings[i];
    }
    dsc_error err;
    cr_assert_eq(dsc_client_pipeline(c, calls, N, &err), DSC_OK, "%s", err.message);
    for (int i = 0; i < N; i++) {
        cr_assert_eq(calls[i].status, DSC_OK);
        if (i % 2) cr_assert_str_eq(stats[i].version, "0.1.0");
        else cr_assert_gt(pings[i].time, 1e9);
    }
    /* requests counted by the server increase along the pipeline */
    cr_assert_lt(stats[1].requests, stats[N - 1].requests);
    free(calls);
    free(pings);
    free(stats);
    dsc_client_free(c);
    th_server_cleanup(&s);
}

Test(client, an_invalid_call_in_a_pipeline_fails_alone_and_is_not_sent) {
    th_server s;
    start_server(&s, NULL);
    dsc_client *c = tcp_client(&s, NULL);
    dsc_client_check_request bad = {.provider = "openai", .model = "gpt-4o", .purpose = "x"};
    dsc_client_call calls[3] = {{.method = DSC_CALL_PING},
                                {.method = DSC_CALL_CHECK, .request = &bad},
                                {.method = DSC_CALL_PING}};
    dsc_error err;
    cr_assert_eq(dsc_client_pipeline(c, calls, 3, &err), DSC_BAD_REQUEST);
    cr_assert_eq(calls[0].status, DSC_OK);
    cr_assert_eq(calls[2].status, DSC_OK);
    cr_assert_eq(calls[1].status, DSC_BAD_REQUEST);
    cr_assert_not_null(strstr(calls[1].err.message, "subject"), "%s", calls[1].err.message);
    cr_assert_not_null(strstr(err.message, "subject"));
    dsc_client_free(c);
    th_server_cleanup(&s);
}

Test(client, missing_fields_fail_before_anything_is_sent) {
    dsc_client *c = client_at("127.0.0.1:1", 500);
    dsc_error err;
    dsc_client_check_request rq = {.subject = {.user = "ana"}, .provider = "openai",
                                   .model = "gpt-4o", .output_tokens = 10};
    cr_assert_eq(dsc_client_check(c, &rq, NULL, &err), DSC_BAD_REQUEST);
    cr_assert_str_eq(err.message, "field 'purpose' is required");
    rq.purpose = "chat";
    rq.output_tokens = -1;
    cr_assert_eq(dsc_client_check(c, &rq, NULL, &err), DSC_BAD_REQUEST);
    cr_assert_not_null(strstr(err.message, "output_tokens"));
    cr_assert_eq(dsc_client_settle(c, &(dsc_client_settle_request){0}, NULL, &err), DSC_BAD_REQUEST);
    cr_assert_str_eq(err.message, "field 'reservation' is required");
    cr_assert_eq(dsc_client_cancel(c, "", NULL, &err), DSC_BAD_REQUEST);
    cr_assert_eq(dsc_client_budget_get(c, &(dsc_client_subject){0}, NULL, &err), DSC_BAD_REQUEST);
    cr_assert_eq(dsc_client_budget_delete(c, "team:*", NULL, "month", &err), DSC_BAD_REQUEST);
    cr_assert_str_eq(err.message, "field 'metric' is required");
    cr_assert_eq(dsc_client_connects(c), 0, "nothing may be sent");
    dsc_client_free(c);
}

Test(client, bad_addresses_are_refused_with_the_address_in_the_message) {
    const char *bad[] = {"", "localhost", "host:", "host:0", "host:70000", "host:12x", "[::1]",
                         "unix:"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        dsc_error err = {0};
        cr_assert_null(dsc_client_new(bad[i], NULL, &err), "'%s' accepted", bad[i]);
        cr_assert_eq(err.code, DSC_BAD_REQUEST);
        cr_assert_not_null(strstr(err.message, "address"), "%s", err.message);
    }
    dsc_error err;
    dsc_client *c = dsc_client_new("[::1]:7878", NULL, &err);
    cr_assert_not_null(c, "%s", err.message);
    dsc_client_free(c);
    dsc_client_free(NULL);
}

Test(client, a_port_nobody_listens_on_is_unreachable_at_once) {
    char addr[64];
    snprintf(addr, sizeof addr, "127.0.0.1:%d", closed_port());
    dsc_client *c = client_at(addr, 5000);
    dsc_error err;
    int64_t t0 = ms_now();
    cr_assert_eq(dsc_client_ping(c, NULL, &err), DSC_UNREACHABLE);
    cr_assert_lt(ms_now() - t0, 1000);
    cr_assert_not_null(strstr(err.message, addr), "%s", err.message);
    cr_assert_not_null(strstr(err.message, "refused"), "%s", err.message);
    dsc_client_free(c);
}

Test(client, a_stopped_server_times_out_and_the_next_call_works_once_it_resumes) {
    th_server s;
    start_server(&s, NULL);
    dsc_client *c = tcp_client(&s, &(dsc_client_options){.timeout_ms = 300});
    dsc_error err;
    cr_assert_eq(dsc_client_ping(c, NULL, &err), DSC_OK, "%s", err.message);
    kill(s.pid, SIGSTOP);
    int64_t t0 = ms_now();
    cr_assert_eq(dsc_client_ping(c, NULL, &err), DSC_TIMEOUT);
    int64_t took = ms_now() - t0;
    cr_assert(took >= 290 && took < 1500, "timed out after %lld ms", (long long)took);
    cr_assert_not_null(strstr(err.message, "no reply to ping within the timeout"), "%s",
                       err.message);
    kill(s.pid, SIGCONT);
    cr_assert_eq(dsc_client_ping(c, NULL, &err), DSC_OK, "%s", err.message);
    cr_assert_eq(dsc_client_connects(c), 2, "a timed-out connection is replaced");
    dsc_client_free(c);
    th_server_cleanup(&s);
}

Test(client, a_server_restart_is_survived_by_a_transparent_reconnect) {
    th_server s;
    start_server(&s, NULL);
    dsc_client *c = tcp_client(&s, NULL);
    char unix_addr[400];
    snprintf(unix_addr, sizeof unix_addr, "unix:%s", s.unix_path);
    dsc_client *u = client_at(unix_addr, 2000);
    dsc_error err;
    cr_assert_eq(dsc_client_ping(c, NULL, &err), DSC_OK, "%s", err.message);
    cr_assert_eq(dsc_client_ping(u, NULL, &err), DSC_OK, "%s", err.message);
    int port = s.port;
    cr_assert_eq(th_server_stop(&s), 0);
    cr_assert_eq(dsc_client_ping(c, NULL, &err), DSC_UNREACHABLE);
    char listen[64];
    snprintf(listen, sizeof listen, "listen = \"127.0.0.1:%d\"", port);
    th_server_restart(&s, listen);
    cr_assert_eq(s.port, port);
    cr_assert_eq(dsc_client_ping(c, NULL, &err), DSC_OK, "%s", err.message);
    cr_assert_eq(dsc_client_ping(u, NULL, &err), DSC_OK, "%s", err.message);
    cr_assert_eq(dsc_client_connects(u), 2);
    dsc_client_free(c);
    dsc_client_free(u);
    th_server_cleanup(&s);
}

Test(client, repeated_restarts_between_calls_need_no_caller_action) {
    /* the server restarts while the client holds an idle connection: the next
     * call finds it closed and reconnects before sending */
    th_server s;
    start_server(&s, NULL);
    char unix_addr[400];
    snprintf(unix_addr, sizeof unix_addr, "unix:%s", s.unix_path);
    dsc_client *u = client_at(unix_addr, 2000);
    dsc_error err;
    for (int round = 0; round < 3; round++) {
        cr_assert_eq(dsc_client_ping(u, NULL, &err), DSC_OK, "round %d: %s", round, err.message);
        cr_assert_eq(th_server_stop(&s), 0);
        th_server_restart(&s, NULL);
    }
    cr_assert_eq(dsc_client_ping(u, NULL, &err), DSC_OK, "%s", err.message);
    cr_assert_eq(dsc_client_connects(u), 4);
    dsc_client_free(u);
    th_server_cleanup(&s);
}

/* ------------------------------------------------------------- fake peers -- */

Test(client, a_peer_that_never_answers_times_out_within_the_timeout) {
    fake_server f;
    fake_start(&f, FAKE_SILENT, NULL);
    dsc_client *c = client_at(f.address, 250);
    dsc_error err;
    int64_t t0 = ms_now();
    cr_assert_eq(dsc_client_ping(c, NULL, &err), DSC_TIMEOUT);
    int64_t took = ms_now() - t0;
    cr_assert(took >= 240 && took < 1500, "took %lld ms", (long long)took);
    dsc_client_free(c);
    fake_stop(&f);
}

Test(client, a_listener_that_never_accepts_times_out) {
    fake_server f;
    fake_start(&f, FAKE_NO_ACCEPT, NULL);
    dsc_client *c = client_at(f.address, 250);
    dsc_error err;
    cr_assert_eq(dsc_client_stats(c, NULL, &err), DSC_TIMEOUT);
    dsc_client_free(c);
    fake_stop(&f);
}

Test(client, a_close_in_the_middle_of_a_reply_is_retried_once_then_reported) {
    fake_server f;
    fake_start(&f, FAKE_HALF_REPLY, NULL);
    dsc_client *c = client_at(f.address, 2000);
    dsc_error err;
    cr_assert_eq(dsc_client_ping(c, NULL, &err), DSC_UNREACHABLE);
    cr_assert_not_null(strstr(err.message, "broke before the reply to ping"), "%s", err.message);
    cr_assert_eq(dsc_client_connects(c), 2, "one reconnect");
    cr_assert_eq(fake_accepts(&f), 2);
    dsc_client_free(c);
    fake_stop(&f);
}

Test(client, a_cancel_that_may_have_been_processed_is_not_sent_twice) {
    fake_server f;
    fake_start(&f, FAKE_CLOSE, NULL);
    dsc_client *c = client_at(f.address, 2000);
    dsc_error err;
    cr_assert_eq(dsc_client_cancel(c, "r-1", NULL, &err), DSC_UNREACHABLE);
    cr_assert_not_null(strstr(err.message, "may have been processed"), "%s", err.message);
    cr_assert_eq(fake_accepts(&f), 1);
    dsc_client_free(c);
    fake_stop(&f);
}

Test(client, a_reply_over_the_limit_is_too_large) {
    fake_server f;
    fake_start(&f, FAKE_HUGE_STRING, NULL);
    dsc_client *c = client_at(f.address, 5000);
    dsc_error err;
    cr_assert_eq(dsc_client_ping(c, NULL, &err), DSC_TOO_LARGE);
    cr_assert_not_null(strstr(err.message, "larger than the reply limit"), "%s", err.message);
    dsc_client_free(c);
    fake_stop(&f);
}

Test(client, a_few_bytes_declaring_a_huge_array_are_too_large_without_allocating) {
    fake_server f;
    fake_start(&f, FAKE_BOMB, NULL);
    dsc_client *c = client_at(f.address, 2000);
    dsc_error err;
    cr_assert_eq(dsc_client_ping(c, NULL, &err), DSC_TOO_LARGE);
    dsc_client_free(c);
    fake_stop(&f);
}

Test(client, bytes_that_are_not_msgpack_are_a_parse_error) {
    fake_server f;
    fake_start(&f, FAKE_GARBAGE, NULL);
    dsc_client *c = client_at(f.address, 2000);
    dsc_error err;
    cr_assert_eq(dsc_client_ping(c, NULL, &err), DSC_PARSE);
    dsc_client_free(c);
    fake_stop(&f);
}

Test(client, check_results_are_decoded_into_plain_structs) {
    fake_server f;
    fake_start(&f, FAKE_SCRIPT, "allow,throttle:2.5,refuse");
    dsc_client *c = client_at(f.address, 2000);
    dsc_client_check_request rq = {.subject = {.team = "infra", .user = "ana"},
                                   .provider = "openai", .model = "gpt-4o",
                                   .output_tokens = 800, .purpose = "code-review"};
    dsc_client_check_result r;
    dsc_error err;
    cr_assert_eq(dsc_client_check(c, &rq, &r, &err), DSC_OK, "%s", err.message);
    cr_assert_eq(r.decision, DSC_DECISION_ALLOW);
    cr_assert_str_eq(r.reason, "within budgets");
    cr_assert_str_eq(r.reservation, "r-1");
    cr_assert_eq(r.budgets.count, 1);
    cr_assert_str_eq(r.budgets.items[0].counter, "team:infra");
    cr_assert_float_eq(r.budgets.items[0].remaining, 50.0, 1e-9);
    cr_assert_eq(r.budgets.items[0].resets_at, 1798761600);
    dsc_client_check_result_clear(&r);
    cr_assert_eq(dsc_client_check(c, &rq, &r, &err), DSC_OK);
    cr_assert_eq(r.decision, DSC_DECISION_THROTTLE);
    cr_assert_float_eq(r.retry_after_s, 2.5, 1e-9);
    cr_assert_str_eq(r.reservation, "");
    dsc_client_check_result_clear(&r);
    cr_assert_eq(dsc_client_check(c, &rq, &r, &err), DSC_OK);
    cr_assert_eq(r.decision, DSC_DECISION_REFUSE);
    cr_assert_str_eq(dsc_decision_name(r.decision), "refuse");
    dsc_client_check_result_clear(&r);
    char *log = fake_log(&f);
    cr_assert_str_eq(log, "check code-review 800\ncheck code-review 800\ncheck code-review 800\n");
    free(log);
    dsc_client_free(c);
    fake_stop(&f);
}
