/*
 * test_client_oom.c - libdiscern-client out of memory: for every n, the n-th
 * allocation of a call is refused (tests/support/oom.c, linked with --wrap) while a
 * real discernd answers. The call returns an error (never aborts), leaks nothing
 * (ASan's leak check at exit), and the next call on the same handle works.
 */
#include "harness.h"
#include "oom.h"

#include "discern/client.h"

#include <criterion/criterion.h>
#include <stdio.h>

TestSuite(client_oom, .fini = th_kill_live_server);

#define MAX_N 10000

typedef dsc_status (*call_fn)(dsc_client *c, dsc_error *err);

static dsc_status ping(dsc_client *c, dsc_error *err) {
    return dsc_client_ping(c, NULL, err);
}

static dsc_status check_and_settle(dsc_client *c, dsc_error *err) {
    dsc_client_check_request rq = {.subject = {.org = "o", .team = "t", .user = "u"},
                                   .provider = "openai",
                                   .model = "gpt-4o",
                                   .input_tokens = 100,
                                   .output_tokens = 200,
                                   .purpose = "chat"};
    dsc_client_check_result r;
    dsc_status st = dsc_client_check(c, &rq, &r, err);
    if (st != DSC_OK) return st;
    dsc_client_settle_request s = {
        .reservation = r.reservation, .input_tokens = 90, .output_tokens = 150};
    if (r.reservation[0]) st = dsc_client_settle(c, &s, NULL, err);
    dsc_client_check_result_clear(&r);
    return st;
}

static dsc_status models(dsc_client *c, dsc_error *err) {
    dsc_client_models m;
    dsc_status st = dsc_client_models_list(c, "openai", &m, err);
    if (st == DSC_OK) dsc_client_models_clear(&m);
    return st;
}

static dsc_client *open_client(const th_server *s) {
    char addr[64];
    snprintf(addr, sizeof addr, "127.0.0.1:%d", s->port);
    dsc_error err;
    dsc_client_options o = {.admin_token = TH_ADMIN_TOKEN};
    dsc_client *c = dsc_client_new(addr, &o, &err);
    cr_assert_not_null(c, "%s", err.message);
    return c;
}

/* Refuse allocation n = 1, 2, ... of one call until the call no longer reaches n. */
static long refuse_each(dsc_client *c, call_fn call, const char *what) {
    long n;
    for (n = 1; n < MAX_N; n++) {
        dsc_error err;
        oom_fail_at(n);
        dsc_status st = call(c, &err);
        if (!oom_stop()) {
            cr_assert_eq(st, DSC_OK, "%s: %s", what, err.message);
            break;
        }
        if (st != DSC_OK)
            cr_assert(st == DSC_NOMEM || st == DSC_UNREACHABLE, "%s, allocation %ld: %s (%s)", what,
                      n, dsc_status_wire(st), err.message);
        cr_assert_eq(call(c, &err), DSC_OK, "%s after allocation %ld was refused: %s", what, n,
                     err.message);
    }
    return n;
}

Test(client_oom, every_allocation_of_a_call_can_fail_and_the_next_call_works) {
    th_server s;
    th_server_start(&s, NULL);
    dsc_client *c = open_client(&s);
    cr_assert_gt(refuse_each(c, ping, "ping"), 1);
    cr_assert_gt(refuse_each(c, check_and_settle, "check+settle"), 1);
    cr_assert_gt(refuse_each(c, models, "models.list"), 1);
    dsc_client_free(c);
    th_server_cleanup(&s);
}

Test(client_oom, opening_a_handle_fails_with_nomem_and_then_opens) {
    th_server s;
    th_server_start(&s, NULL);
    char addr[64];
    snprintf(addr, sizeof addr, "127.0.0.1:%d", s.port);
    long n;
    for (n = 1; n < MAX_N; n++) {
        dsc_error err;
        oom_fail_at(n);
        dsc_client *c = dsc_client_new(addr, NULL, &err);
        dsc_status st = c ? dsc_client_ping(c, NULL, &err) : err.code;
        bool hit = oom_stop();
        if (c) dsc_client_free(c);
        if (!hit) {
            cr_assert_eq(st, DSC_OK, "%s", err.message);
            break;
        }
        cr_assert(st == DSC_OK || st == DSC_NOMEM, "allocation %ld: %s", n, err.message);
    }
    cr_assert_gt(n, 1);
    th_server_cleanup(&s);
}
