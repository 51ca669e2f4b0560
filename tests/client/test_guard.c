/*
 * test_guard.c - the guard: an allowed call is settled with its real usage, a failed
 * one cancelled, a refused or throttled one never made; throttles are waited out
 * up to the limit; an unreachable or silent discernd gets the configured fallback
 * and the ticket says so; a server error is reported, never turned into a fallback.
 *
 * Decisions come from a scripted peer (fake_server.c) so that every path is chosen
 * by the test; errors and reachability also from a real discernd.
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
TestSuite(guard, .fini = th_kill_live_server);

static const dsc_client_check_request request = {
    .subject = {.team = "infra", .user = "ana"},
    .provider = "openai",
    .model = "gpt-4o",
    .input_tokens = 100,
    .output_tokens = 800,
    .purpose = "code-review",
};

static dsc_client *client_at(const char *addr, int timeout_ms) {
    dsc_error err;
    dsc_client *c = dsc_client_new(addr, &(dsc_client_options){.timeout_ms = timeout_ms}, &err);
    cr_assert_not_null(c, "%s", err.message);
    return c;
}

typedef struct ai_call {
    int calls;
    int fail;
} ai_call;

static int fake_completion(void *ud, dsc_guard_usage *usage) {
    ai_call *a = ud;
    a->calls++;
    if (a->fail) return -1;
    usage->input_tokens = 120;
    usage->output_tokens = 345;
    usage->latency_s = 1.5;
    return 0;
}

Test(guard, an_allowed_call_runs_and_is_settled_with_its_real_usage) {
    fake_server f;
    fake_start(&f, FAKE_SCRIPT, "allow");
    dsc_client *c = client_at(f.address, 2000);
    ai_call ai = {0};
    dsc_guard_ticket t;
    int fn_rc;
    dsc_error err;
    cr_assert_eq(dsc_guard_run(c, &request, NULL, fake_completion, &ai, &t, &fn_rc, &err), DSC_OK,
                 "%s", err.message);
    cr_assert(t.allowed);
    cr_assert_not(t.fallback_applied);
    cr_assert_eq(ai.calls, 1);
    cr_assert_eq(fn_rc, 0);
    cr_assert(t.finished);
    cr_assert_str_eq(t.check.reservation, "r-1");
    fake_expect_log(&f, "check code-review 800\nsettle r-1 120 345\n");
    dsc_guard_ticket_clear(&t);
    dsc_client_free(c);
    fake_stop(&f);
}

Test(guard, a_failed_call_cancels_its_hold) {
    fake_server f;
    fake_start(&f, FAKE_SCRIPT, "allow");
    dsc_client *c = client_at(f.address, 2000);
    ai_call ai = {.fail = 1};
    dsc_guard_ticket t;
    int fn_rc;
    dsc_error err;
    cr_assert_eq(dsc_guard_run(c, &request, NULL, fake_completion, &ai, &t, &fn_rc, &err), DSC_OK,
                 "%s", err.message);
    cr_assert_eq(fn_rc, -1);
    fake_expect_log(&f, "check code-review 800\ncancel r-1\n");
    /* ending twice does nothing more */
    cr_assert_eq(dsc_guard_end(c, &t, NULL, &err), DSC_OK);
    fake_expect_log(&f, "check code-review 800\ncancel r-1\n");
    dsc_guard_ticket_clear(&t);
    dsc_client_free(c);
    fake_stop(&f);
}

Test(guard, a_refused_call_is_never_made) {
    fake_server f;
    fake_start(&f, FAKE_SCRIPT, "refuse");
    dsc_client *c = client_at(f.address, 2000);
    ai_call ai = {0};
    dsc_guard_ticket t;
    int fn_rc;
    cr_assert_eq(dsc_guard_run(c, &request, NULL, fake_completion, &ai, &t, &fn_rc, NULL), DSC_OK);
    cr_assert_not(t.allowed);
    cr_assert_eq(t.check.decision, DSC_DECISION_REFUSE);
    cr_assert_str_eq(t.message, "team:* gco2e month exhausted");
    cr_assert_eq(ai.calls, 0);
    cr_assert_eq(fn_rc, -1);
    fake_expect_log(&f, "check code-review 800\n");
    dsc_guard_ticket_clear(&t);
    dsc_client_free(c);
    fake_stop(&f);
}

Test(guard, a_throttle_is_waited_out_when_allowed_to_wait) {
    fake_server f;
    fake_start(&f, FAKE_SCRIPT, "throttle:0.2,throttle:0.1,allow");
    dsc_client *c = client_at(f.address, 2000);
    dsc_guard_options go = {.max_wait_s = 5};
    dsc_guard_ticket t;
    dsc_error err;
    cr_assert_eq(dsc_guard_begin(c, &request, &go, &t, &err), DSC_OK, "%s", err.message);
    cr_assert(t.allowed);
    cr_assert_eq(t.checks, 3);
    cr_assert_float_eq(t.waited_s, 0.3, 1e-9);
    cr_assert_eq(dsc_guard_end(c, &t, &(dsc_guard_usage){.input_tokens = 1, .output_tokens = 2}, &err), DSC_OK, "%s",
                 err.message);
    fake_expect_log(&f, "check code-review 800\ncheck code-review 800\ncheck code-review 800\n"
                        "settle r-1 1 2\n");
    dsc_guard_ticket_clear(&t);
    dsc_client_free(c);
    fake_stop(&f);
}

Test(guard, a_throttle_longer_than_the_wait_limit_is_returned) {
    fake_server f;
    fake_start(&f, FAKE_SCRIPT, "throttle:0.2,throttle:10,allow");
    dsc_client *c = client_at(f.address, 2000);
    dsc_guard_ticket t;
    cr_assert_eq(dsc_guard_begin(c, &request, &(dsc_guard_options){.max_wait_s = 1}, &t, NULL),
                 DSC_OK);
    cr_assert_not(t.allowed);
    cr_assert_eq(t.check.decision, DSC_DECISION_THROTTLE);
    cr_assert_float_eq(t.check.retry_after_s, 10, 1e-9);
    cr_assert_eq(t.checks, 2);
    dsc_guard_ticket_clear(&t);
    /* without max_wait_s the first throttle is returned at once */
    cr_assert_eq(dsc_guard_begin(c, &request, NULL, &t, NULL), DSC_OK);
    cr_assert_eq(t.checks, 1);
    dsc_guard_ticket_clear(&t);
    dsc_client_free(c);
    fake_stop(&f);
}

Test(guard, an_unreachable_server_gets_the_fallback_and_the_ticket_says_so) {
    char addr[64];
    snprintf(addr, sizeof addr, "127.0.0.1:%d", fake_closed_port());
    dsc_client *c = client_at(addr, 500);
    for (int allow = 0; allow < 2; allow++) {
        ai_call ai = {0};
        dsc_guard_ticket t;
        dsc_guard_options go = {.fallback =
                                    allow ? DSC_GUARD_FALLBACK_ALLOW : DSC_GUARD_FALLBACK_REFUSE};
        dsc_error err;
        cr_assert_eq(dsc_guard_run(c, &request, &go, fake_completion, &ai, &t, NULL, &err), DSC_OK,
                     "%s", err.message);
        cr_assert(t.fallback_applied);
        cr_assert_eq(t.status, DSC_UNREACHABLE);
        cr_assert_eq(t.allowed, allow);
        cr_assert_eq(ai.calls, allow, "the AI call runs only with fallback allow");
        cr_assert_not_null(strstr(t.message, allow ? "fallback: allow" : "fallback: refuse"), "%s",
                           t.message);
        cr_assert_not_null(strstr(t.message, "Connection refused"), "%s", t.message);
        dsc_guard_ticket_clear(&t);
    }
    dsc_client_free(c);
}

Test(guard, a_silent_server_gets_the_fallback_within_the_timeout) {
    fake_server f;
    fake_start(&f, FAKE_SILENT, NULL);
    dsc_client *c = client_at(f.address, 200);
    dsc_guard_ticket t;
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    cr_assert_eq(dsc_guard_begin(c, &request,
                                 &(dsc_guard_options){.fallback = DSC_GUARD_FALLBACK_ALLOW}, &t,
                                 NULL),
                 DSC_OK);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double took = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
    cr_assert(took < 1.5, "took %g s", took);
    cr_assert(t.fallback_applied);
    cr_assert(t.allowed);
    cr_assert_eq(t.status, DSC_TIMEOUT);
    /* nothing to settle: end is a no-op */
    cr_assert_eq(dsc_guard_end(c, &t, &(dsc_guard_usage){.input_tokens = 1, .output_tokens = 1}, NULL), DSC_OK);
    dsc_guard_ticket_clear(&t);
    dsc_client_free(c);
    fake_stop(&f);
}

Test(guard, a_server_error_is_reported_and_not_turned_into_a_fallback) {
    th_server s;
    th_server_start(&s, NULL);
    char addr[64];
    snprintf(addr, sizeof addr, "127.0.0.1:%d", s.port);
    char key[72];
    th_create_key(&s, "client", "*", key, NULL);
    dsc_error e;
    dsc_client *c = dsc_client_new(addr, &(dsc_client_options){.timeout_ms = 2000, .key = key}, &e);
    cr_assert_not_null(c, "%s", e.message);
    dsc_client_check_request rq = request;
    rq.model = "gpt-9";
    ai_call ai = {0};
    dsc_guard_ticket t;
    dsc_error err;
    dsc_status st =
        dsc_guard_run(c, &rq, &(dsc_guard_options){.fallback = DSC_GUARD_FALLBACK_ALLOW},
                      fake_completion, &ai, &t, NULL, &err);
    cr_assert_eq(st, DSC_UNKNOWN_MODEL, "status %d: %s", st, err.message);
    cr_assert_not(t.allowed);
    cr_assert_not(t.fallback_applied);
    cr_assert_eq(t.status, st);
    cr_assert_eq(ai.calls, 0);
    dsc_guard_ticket_clear(&t);
    dsc_client_free(c);
    th_server_cleanup(&s);
}
