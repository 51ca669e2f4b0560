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
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* Kills a discernd left running by a test that failed before its cleanup. */
TestSuite(client, .fini = th_kill_live_server);

/* A TCP client of s with options o (may be NULL); without a token in o it
 * authenticates with a fresh key of role (scope "*"). */
static dsc_client *keyed_client(const th_server *s, const dsc_client_options *o, const char *role) {
    char addr[64], key[72];
    snprintf(addr, sizeof addr, "127.0.0.1:%d", s->port);
    dsc_client_options opts = o ? *o : (dsc_client_options){0};
    if (!opts.admin_token && !opts.key) {
        th_create_key(s, role, "*", key, NULL);
        opts.key = key;
    }
    dsc_error err;
    dsc_client *c = dsc_client_new(addr, &opts, &err);
    cr_assert_not_null(c, "%s", err.message);
    return c;
}

static dsc_client *tcp_client(const th_server *s, const dsc_client_options *o) {
    return keyed_client(s, o, "client");
}

static dsc_client *client_at(const char *addr, int timeout_ms) {
    dsc_error err;
    dsc_client_options o = {.timeout_ms = timeout_ms};
    dsc_client *c = dsc_client_new(addr, &o, &err);
    cr_assert_not_null(c, "%s", err.message);
    return c;
}

/* ------------------------------------------------------------ real server -- */

Test(client, ping_over_tcp_returns_the_server_version_and_clock) {
    th_server s;
    th_server_start(&s, NULL);
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
    th_server_start(&s, NULL);
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
    th_server_start(&s, NULL);
    dsc_client *c = keyed_client(&s, NULL, "reader");
    dsc_error err;
    for (int i = 0; i < 5; i++)
        cr_assert_eq(dsc_client_ping(c, NULL, &err), DSC_OK);
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
    th_server_start(&s, NULL);
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
    th_server_start(&s, NULL);
    dsc_client *c = tcp_client(&s, NULL);
    dsc_client_check_request rq = {.subject = {.user = "ana"},
                                   .provider = "openai",
                                   .model = "gpt-9",
                                   .output_tokens = 5,
                                   .purpose = "chat"};
    dsc_error err;
    cr_assert_eq(dsc_client_check(c, &rq, NULL, &err), DSC_UNKNOWN_MODEL, "%s", err.message);
    cr_assert_eq(err.code, DSC_UNKNOWN_MODEL);
    cr_assert_not_null(strstr(err.message, "gpt-9"), "%s", err.message);
    /* the connection stays usable */
    cr_assert_eq(dsc_client_ping(c, NULL, &err), DSC_OK, "%s", err.message);
    cr_assert_eq(dsc_client_connects(c), 1);
    dsc_client_free(c);
    th_server_cleanup(&s);
}

Test(client, pipeline_of_1000_calls_matches_every_reply_to_its_call) {
    th_server s;
    th_server_start(&s, NULL);
    dsc_client *c = keyed_client(&s, &(dsc_client_options){.timeout_ms = 10000}, "reader");
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
        if (i % 2)
            cr_assert_str_eq(stats[i].version, "0.1.0");
        else
            cr_assert_gt(pings[i].time, 1e9);
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
    th_server_start(&s, NULL);
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
    dsc_client_check_request rq = {
        .subject = {.user = "ana"}, .provider = "openai", .model = "gpt-4o", .output_tokens = 10};
    cr_assert_eq(dsc_client_check(c, &rq, NULL, &err), DSC_BAD_REQUEST);
    cr_assert_str_eq(err.message, "field 'purpose' is required");
    rq.purpose = "chat";
    rq.output_tokens = -1;
    cr_assert_eq(dsc_client_check(c, &rq, NULL, &err), DSC_BAD_REQUEST);
    cr_assert_not_null(strstr(err.message, "output_tokens"));
    cr_assert_eq(dsc_client_settle(c, &(dsc_client_settle_request){0}, NULL, &err),
                 DSC_BAD_REQUEST);
    cr_assert_str_eq(err.message, "field 'reservation' is required");
    cr_assert_eq(dsc_client_cancel(c, "", NULL, &err), DSC_BAD_REQUEST);
    cr_assert_eq(dsc_client_budget_get(c, &(dsc_client_subject){0}, NULL, &err), DSC_BAD_REQUEST);
    cr_assert_eq(dsc_client_budget_delete(c, "team:*", NULL, "month", &err), DSC_BAD_REQUEST);
    cr_assert_str_eq(err.message, "field 'metric' is required");
    cr_assert_eq(dsc_client_connects(c), 0, "nothing may be sent");
    dsc_client_free(c);
}

Test(client, bad_addresses_are_refused_with_the_address_in_the_message) {
    const char *bad[] = {"",           "localhost", "host:", "host:0",
                         "host:70000", "host:12x",  "[::1]", "unix:"};
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
    snprintf(addr, sizeof addr, "127.0.0.1:%d", fake_closed_port());
    dsc_client *c = client_at(addr, 5000);
    dsc_error err;
    int64_t t0 = th_now_ms();
    cr_assert_eq(dsc_client_ping(c, NULL, &err), DSC_UNREACHABLE);
    cr_assert_lt(th_now_ms() - t0, 1000);
    cr_assert_not_null(strstr(err.message, addr), "%s", err.message);
    cr_assert_not_null(strstr(err.message, "refused"), "%s", err.message);
    dsc_client_free(c);
}

Test(client, a_stopped_server_times_out_and_the_next_call_works_once_it_resumes) {
    th_server s;
    th_server_start(&s, NULL);
    dsc_client *c = tcp_client(&s, &(dsc_client_options){.timeout_ms = 300});
    dsc_error err;
    cr_assert_eq(dsc_client_ping(c, NULL, &err), DSC_OK, "%s", err.message);
    th_server_pause(&s); /* returns once every thread has stopped */
    int64_t t0 = th_now_ms();
    cr_assert_eq(dsc_client_ping(c, NULL, &err), DSC_TIMEOUT);
    int64_t took = th_now_ms() - t0;
    cr_assert(took >= 290 && took < 1500, "timed out after %lld ms", (long long)took);
    cr_assert_not_null(strstr(err.message, "no reply to ping within the timeout"), "%s",
                       err.message);
    th_server_resume(&s);
    cr_assert_eq(dsc_client_ping(c, NULL, &err), DSC_OK, "%s", err.message);
    cr_assert_eq(dsc_client_connects(c), 2, "a timed-out connection is replaced");
    dsc_client_free(c);
    th_server_cleanup(&s);
}

Test(client, a_server_restart_is_survived_by_a_transparent_reconnect) {
    th_server s;
    th_server_start(&s, NULL);
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
    th_server_start(&s, NULL);
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
    int64_t t0 = th_now_ms();
    cr_assert_eq(dsc_client_ping(c, NULL, &err), DSC_TIMEOUT);
    int64_t took = th_now_ms() - t0;
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

Test(client, a_budget_delete_that_may_have_been_processed_is_not_sent_twice) {
    fake_server f;
    fake_start(&f, FAKE_CLOSE, NULL);
    dsc_client *c = client_at(f.address, 2000);
    dsc_error err;
    cr_assert_eq(dsc_client_budget_delete(c, "team:*", "gco2e", "month", &err), DSC_UNREACHABLE);
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

Test(client, a_reply_nested_deeper_than_the_scanner_tracks_is_too_large) {
    fake_server f;
    fake_start(&f, FAKE_DEEP, NULL);
    dsc_client *c = client_at(f.address, 2000);
    dsc_error err;
    cr_assert_eq(dsc_client_ping(c, NULL, &err), DSC_TOO_LARGE, "%s", err.message);
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
                                   .provider = "openai",
                                   .model = "gpt-4o",
                                   .output_tokens = 800,
                                   .purpose = "code-review",
                                   .budgets = true};
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

Test(client, check_leaves_budget_states_out_unless_asked_and_decodes_the_short_reply) {
    fake_server f;
    fake_start(&f, FAKE_SCRIPT, "allow,allow");
    dsc_client *c = client_at(f.address, 2000);
    dsc_client_check_request rq = {.subject = {.team = "infra", .user = "ana"},
                                   .provider = "openai",
                                   .model = "gpt-4o",
                                   .output_tokens = 800,
                                   .purpose = "code-review"};
    dsc_client_check_result r;
    dsc_error err;
    cr_assert_eq(dsc_client_check(c, &rq, &r, &err), DSC_OK, "%s", err.message);
    cr_assert_eq(r.decision, DSC_DECISION_ALLOW);
    cr_assert_str_eq(r.reservation, "r-1");
    cr_assert_eq(r.budgets.count, 0);
    cr_assert_null(r.budgets.items);
    dsc_client_check_result_clear(&r);
    rq.budgets = true;
    cr_assert_eq(dsc_client_check(c, &rq, &r, &err), DSC_OK, "%s", err.message);
    cr_assert_eq(r.budgets.count, 1);
    dsc_client_check_result_clear(&r);
    dsc_client_free(c);
    fake_stop(&f);
}

/* ------------------------------------------- every method on a real server -- */

static const dsc_client_check_request ana = {
    .subject = {.org = "acme", .team = "infra", .user = "ana"},
    .provider = "openai",
    .model = "gpt-4o",
    .input_tokens = 1200,
    .output_tokens = 800,
    .purpose = "code-review",
    .budgets = true,
};

static dsc_client *admin_client(const th_server *s) {
    return tcp_client(s, &(dsc_client_options){.admin_token = TH_ADMIN_TOKEN});
}

static void set_budget(dsc_client *admin, const char *selector, const char *metric,
                       const char *window, double limit) {
    dsc_client_budget_set_request rq = {selector, metric, window, limit};
    dsc_client_budget_set_result r;
    dsc_error err;
    cr_assert_eq(dsc_client_budget_set(admin, &rq, &r, &err), DSC_OK, "%s", err.message);
}

Test(client, check_reserves_and_settle_charges_the_actual_usage) {
    th_server s;
    th_server_start(&s, NULL);
    dsc_client *admin = admin_client(&s), *c = tcp_client(&s, NULL);
    set_budget(admin, "team:*", "gco2e", "month", 1000);
    dsc_client_check_result r;
    dsc_error err;
    cr_assert_eq(dsc_client_check(c, &ana, &r, &err), DSC_OK, "%s", err.message);
    cr_assert_eq(r.decision, DSC_DECISION_ALLOW, "%s", r.reason);
    cr_assert_neq(r.reservation[0], '\0');
    cr_assert_gt(r.expires_at, time(NULL));
    cr_assert_neq(r.decision_id[0], '\0');
    cr_assert_neq(r.policy_version[0], '\0');
    cr_assert_str_eq(r.zone, "USA");
    cr_assert_gt(r.estimate.gwp_kgco2eq.max, r.estimate.gwp_kgco2eq.min);
    cr_assert_eq(r.budgets.count, 1);
    const dsc_client_budget *b = &r.budgets.items[0];
    cr_assert_str_eq(b->selector, "team:*");
    cr_assert_not_null(strstr(b->counter, "team:infra"), "%s", b->counter);
    cr_assert_float_eq(b->request, r.estimate.gwp_kgco2eq.max * 1000, 1e-5);
    dsc_client_settle_result st;
    dsc_client_settle_request srq = {
        .reservation = r.reservation, .input_tokens = 1000, .output_tokens = 300, .latency_s = 2.0};
    cr_assert_eq(dsc_client_settle(c, &srq, &st, &err), DSC_OK, "%s", err.message);
    cr_assert_str_eq(st.reservation, r.reservation);
    cr_assert_str_eq(st.settled, "reserved");
    cr_assert_float_eq(st.charged.tokens, 1300, 1e-9);
    cr_assert_float_eq(st.charged.requests, 1, 1e-9);
    cr_assert_gt(st.charged.gco2e, 0);
    cr_assert_lt(st.charged.gco2e, b->request, "300 tokens cost less than the 800 held");
    dsc_client_settle_result again;
    cr_assert_eq(dsc_client_settle(c, &srq, &again, &err), DSC_OK, "%s", err.message);
    cr_assert_str_eq(again.settled, "repeated");
    dsc_client_settle_result_clear(&again);
    dsc_client_budgets now;
    cr_assert_eq(dsc_client_budget_get(c, &ana.subject, &now, &err), DSC_OK, "%s", err.message);
    cr_assert_eq(now.count, 1);
    cr_assert_float_eq(now.items[0].used, st.charged.gco2e, 1e-6);
    cr_assert_float_eq(now.items[0].held, 0, 1e-9);
    dsc_client_budgets_clear(&now);
    dsc_client_settle_result_clear(&st);
    dsc_client_check_result_clear(&r);
    dsc_client_free(c);
    dsc_client_free(admin);
    th_server_cleanup(&s);
}

Test(client, cancel_releases_the_hold_a_second_cancel_changes_nothing_and_an_unknown_id_fails) {
    th_server s;
    th_server_start(&s, NULL);
    dsc_client *c = tcp_client(&s, NULL);
    dsc_client_check_result r;
    dsc_error err;
    cr_assert_eq(dsc_client_check(c, &ana, &r, &err), DSC_OK, "%s", err.message);
    cr_assert_eq(r.decision, DSC_DECISION_ALLOW, "%s", r.reason);
    dsc_client_cancel_result cr;
    cr_assert_eq(dsc_client_cancel(c, r.reservation, &cr, &err), DSC_OK, "%s", err.message);
    cr_assert(cr.released);
    cr_assert_str_eq(cr.reservation, r.reservation);
    memset(&cr, 0, sizeof cr);
    cr_assert_eq(dsc_client_cancel(c, r.reservation, &cr, &err), DSC_OK, "%s", err.message);
    cr_assert(cr.released);
    cr_assert_eq(dsc_client_cancel(c, "r-never-issued", &cr, &err), DSC_UNKNOWN_RESERVATION);
    cr_assert_not_null(strstr(err.message, "r-never-issued"), "%s", err.message);
    dsc_client_check_result_clear(&r);
    dsc_client_free(c);
    th_server_cleanup(&s);
}

Test(client, a_repeated_request_id_returns_the_first_decision_and_reserves_once) {
    th_server s;
    th_server_start(&s, NULL);
    dsc_client *admin = admin_client(&s), *c = tcp_client(&s, NULL);
    set_budget(admin, "user:*", "requests", "day", 10);
    dsc_client_check_request rq = ana;
    rq.request_id = "job-42";
    dsc_client_check_result a, b;
    dsc_error err;
    cr_assert_eq(dsc_client_check(c, &rq, &a, &err), DSC_OK, "%s", err.message);
    cr_assert_eq(dsc_client_check(c, &rq, &b, &err), DSC_OK, "%s", err.message);
    cr_assert_str_eq(a.reservation, b.reservation);
    dsc_client_budgets now;
    cr_assert_eq(dsc_client_budget_get(c, &ana.subject, &now, &err), DSC_OK);
    cr_assert_float_eq(now.items[0].held, 1, 1e-9, "one request held, not two");
    dsc_client_budgets_clear(&now);
    dsc_client_check_result_clear(&a);
    dsc_client_check_result_clear(&b);
    dsc_client_free(c);
    dsc_client_free(admin);
    th_server_cleanup(&s);
}

#define SHIPPED_POLICIES "policies = \"" DISCERN_SOURCE_DIR "/policies\""

Test(client, over_budget_is_refused_and_an_empty_rate_budget_throttles) {
    th_server s;
    th_server_start(&s, SHIPPED_POLICIES); /* budgets.lua throttles empty rate budgets */
    dsc_client *admin = admin_client(&s), *c = tcp_client(&s, NULL);
    set_budget(admin, "user:ana", "requests", "rate:1/2s", 1);
    dsc_client_check_result r;
    dsc_error err;
    cr_assert_eq(dsc_client_check(c, &ana, &r, &err), DSC_OK, "%s", err.message);
    cr_assert_eq(r.decision, DSC_DECISION_ALLOW, "%s", r.reason);
    dsc_client_check_result_clear(&r);
    cr_assert_eq(dsc_client_check(c, &ana, &r, &err), DSC_OK, "%s", err.message);
    cr_assert_eq(r.decision, DSC_DECISION_THROTTLE, "%s", r.reason);
    cr_assert_geq(r.retry_after_s, 1);
    cr_assert_str_eq(r.reservation, "");
    cr_assert_str_eq(r.policy, "budgets");
    cr_assert(r.budgets.items[0].would_exceed);
    dsc_client_check_result_clear(&r);
    set_budget(admin, "team:infra", "gco2e", "month", 0.001);
    dsc_client_check_request rq = ana;
    rq.subject.user = "bob";
    cr_assert_eq(dsc_client_check(c, &rq, &r, &err), DSC_OK, "%s", err.message);
    cr_assert_eq(r.decision, DSC_DECISION_REFUSE, "%s", r.reason);
    cr_assert_not_null(strstr(r.reason, "team:infra"), "%s", r.reason);
    cr_assert_str_eq(r.policy, "budgets");
    dsc_client_check_result_clear(&r);
    dsc_client_stats_result st;
    cr_assert_eq(dsc_client_stats(admin, &st, &err), DSC_OK);
    cr_assert_eq(st.allow, 1);
    cr_assert_eq(st.throttle, 1);
    cr_assert_eq(st.refuse, 1);
    dsc_client_free(c);
    dsc_client_free(admin);
    th_server_cleanup(&s);
}

Test(client, estimate_returns_the_footprint_and_unknown_names_their_codes) {
    th_server s;
    th_server_start(&s, NULL);
    dsc_client *c = tcp_client(&s, NULL);
    dsc_client_estimate_request rq = {
        .provider = "openai", .model = "gpt-4o", .output_tokens = 500, .zone = "FRA"};
    dsc_client_estimate_result r;
    dsc_error err;
    cr_assert_eq(dsc_client_estimate(c, &rq, &r, &err), DSC_OK, "%s", err.message);
    cr_assert_str_eq(r.zone, "FRA");
    cr_assert_str_eq(r.method, "ecologits");
    cr_assert_float_eq(r.estimate.energy_kwh.min * 1000, 0.801, 0.001); /* as `discern estimate` */
    cr_assert_gt(r.embodied.gwp_kgco2eq.max, 0);
    cr_assert_geq(r.n_warnings, 1);
    cr_assert_str_eq(r.warnings[0], "model-arch-not-released");
    rq.model = "gpt-9";
    cr_assert_eq(dsc_client_estimate(c, &rq, &r, &err), DSC_UNKNOWN_MODEL);
    cr_assert_not_null(strstr(err.message, "gpt-9"), "%s", err.message);
    rq.model = "gpt-4o", rq.zone = "XXX";
    cr_assert_eq(dsc_client_estimate(c, &rq, &r, &err), DSC_UNKNOWN_ZONE);
    rq.zone = NULL, rq.provider = "nobody";
    cr_assert_eq(dsc_client_estimate(c, &rq, &r, &err), DSC_UNKNOWN_PROVIDER);
    dsc_client_free(c);
    th_server_cleanup(&s);
}

Test(client, budgets_are_set_listed_read_and_deleted_with_admin_rights) {
    th_server s;
    th_server_start(&s, NULL);
    dsc_client *admin = admin_client(&s), *c = keyed_client(&s, NULL, "reader");
    dsc_client_budget_set_request rq = {"team:*", "gco2e", "month", 50};
    dsc_client_budget_set_result r;
    dsc_error err;
    cr_assert_eq(dsc_client_budget_set(c, &rq, &r, &err), DSC_UNAUTHORIZED);
    cr_assert_eq(dsc_client_budget_set(admin, &rq, &r, &err), DSC_OK, "%s", err.message);
    cr_assert(r.created);
    cr_assert_str_eq(r.budget.unit, "g");
    rq.limit = 60.5;
    cr_assert_eq(dsc_client_budget_set(admin, &rq, &r, &err), DSC_OK);
    cr_assert_not(r.created);
    cr_assert_float_eq(r.budget.limit, 60.5, 1e-9);
    rq.metric = "carbon";
    cr_assert_eq(dsc_client_budget_set(admin, &rq, &r, &err), DSC_UNKNOWN_METRIC);
    dsc_client_budgets list;
    cr_assert_eq(dsc_client_budget_list(c, NULL, &list, &err), DSC_OK, "%s", err.message);
    cr_assert_eq(list.count, 1);
    cr_assert_str_eq(list.items[0].window, "month");
    dsc_client_budgets_clear(&list);
    cr_assert_eq(dsc_client_budget_list(c, "org:*", &list, &err), DSC_OK);
    cr_assert_eq(list.count, 0);
    cr_assert_eq(dsc_client_budget_get(c, &ana.subject, &list, &err), DSC_OK);
    cr_assert_eq(list.count, 1);
    cr_assert_float_eq(list.items[0].remaining, 60.5, 1e-9);
    cr_assert_gt(list.items[0].resets_at, time(NULL));
    dsc_client_budgets_clear(&list);
    cr_assert_eq(dsc_client_budget_delete(admin, "team:*", "gco2e", "month", &err), DSC_OK, "%s",
                 err.message);
    cr_assert_eq(dsc_client_budget_delete(admin, "team:*", "gco2e", "month", &err),
                 DSC_UNKNOWN_BUDGET);
    dsc_client_free(c);
    dsc_client_free(admin);
    th_server_cleanup(&s);
}

Test(client, grid_set_and_policy_reload_need_admin_rights_and_answer) {
    th_server s;
    th_server_start(&s, NULL);
    dsc_client *admin = admin_client(&s), *c = tcp_client(&s, NULL);
    dsc_client_grid_request g = {"FRA", 25.5, (int64_t)time(NULL) + 600};
    dsc_client_grid_result gr;
    dsc_error err;
    cr_assert_eq(dsc_client_grid_set(c, &g, &gr, &err), DSC_UNAUTHORIZED);
    cr_assert_eq(dsc_client_grid_set(admin, &g, &gr, &err), DSC_OK, "%s", err.message);
    cr_assert_str_eq(gr.zone, "FRA");
    cr_assert_float_eq(gr.gco2e_per_kwh, 25.5, 1e-9);
    cr_assert_eq(gr.valid_until, g.valid_until);
    g.zone = "XXX";
    cr_assert_eq(dsc_client_grid_set(admin, &g, &gr, &err), DSC_UNKNOWN_ZONE);
    g.zone = "FRA", g.valid_until = 1000;
    cr_assert_eq(dsc_client_grid_set(admin, &g, &gr, &err), DSC_BAD_REQUEST);
    dsc_client_reload_result rr;
    cr_assert_eq(dsc_client_policy_reload(c, &rr, &err), DSC_UNAUTHORIZED);
    cr_assert_eq(dsc_client_policy_reload(admin, &rr, &err), DSC_OK, "%s", err.message);
    cr_assert_neq(rr.policy_version[0], '\0');
    bool budgets = false;
    for (size_t i = 0; i < rr.n_policies; i++)
        budgets |= strcmp(rr.policies[i], "budgets") == 0;
    cr_assert(budgets, "the shipped 'budgets' policy is loaded");
    dsc_client_reload_result_clear(&rr);
    dsc_client_free(c);
    dsc_client_free(admin);
    th_server_cleanup(&s);
}

Test(client, a_pipeline_of_checks_gets_every_decision) {
    th_server s;
    th_server_start(&s, NULL);
    dsc_client *c = tcp_client(&s, &(dsc_client_options){.timeout_ms = 20000});
    enum { N = 200 };
    dsc_client_call *calls = calloc(N, sizeof *calls);
    dsc_client_check_result *res = calloc(N, sizeof *res);
    dsc_client_check_request rq = ana;
    rq.no_reserve = true;
    for (int i = 0; i < N; i++)
        calls[i] = (dsc_client_call){.method = DSC_CALL_CHECK, .request = &rq, .result = &res[i]};
    dsc_error err;
    cr_assert_eq(dsc_client_pipeline(c, calls, N, &err), DSC_OK, "%s", err.message);
    for (int i = 0; i < N; i++) {
        cr_assert_eq(res[i].decision, DSC_DECISION_ALLOW);
        cr_assert_str_eq(res[i].reservation, "", "no_reserve holds nothing");
        dsc_client_check_result_clear(&res[i]);
    }
    free(calls);
    free(res);
    dsc_client_free(c);
    th_server_cleanup(&s);
}

Test(client, models_and_zones_are_listed_and_a_pushed_grid_value_shows_as_live) {
    th_server s;
    th_server_start(&s, NULL);
    dsc_client *admin = admin_client(&s);
    dsc_client_models models;
    dsc_error err;
    cr_assert_eq(dsc_client_models_list(admin, "openai", &models, &err), DSC_OK, "%s", err.message);
    cr_assert_gt(models.count, 5);
    bool gpt4o = false;
    for (size_t i = 0; i < models.count; i++) {
        cr_assert_str_eq(models.items[i].provider, "openai");
        gpt4o |= strcmp(models.items[i].model, "gpt-4o") == 0;
        if (i) cr_assert_leq(strcmp(models.items[i - 1].model, models.items[i].model), 0);
    }
    cr_assert(gpt4o);
    dsc_client_models_clear(&models);
    cr_assert_eq(dsc_client_models_list(admin, "nobody", &models, &err), DSC_UNKNOWN_PROVIDER, "%s",
                 err.message);
    dsc_client_grid_request g = {"FRA", 12.5, (int64_t)time(NULL) + 600};
    cr_assert_eq(dsc_client_grid_set(admin, &g, NULL, &err), DSC_OK, "%s", err.message);
    dsc_client_zones zones;
    cr_assert_eq(dsc_client_zones_list(admin, &zones, &err), DSC_OK, "%s", err.message);
    bool fra = false;
    for (size_t i = 0; i < zones.count; i++) {
        if (strcmp(zones.items[i].zone, "FRA") != 0) continue;
        fra = true;
        cr_assert_float_eq(zones.items[i].current_gco2e_per_kwh, 12.5, 1e-9);
        cr_assert_str_eq(zones.items[i].source, "live");
        cr_assert_neq(zones.items[i].gco2e_per_kwh, 12.5);
    }
    cr_assert(fra);
    dsc_client_zones_clear(&zones);
    dsc_client_free(admin);
    th_server_cleanup(&s);
}
