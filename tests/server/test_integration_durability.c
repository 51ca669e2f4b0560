/*
 * test_integration_durability.c - what a real discernd (durability full, SQLite)
 * promises across kill -9: a check is answered once its hold is queued, without
 * waiting for the commit; an acknowledged settle survives; a hold lost with the last
 * uncommitted batch is charged by its settle after the restart, once; a made-up id of
 * the ledger's shape stays unknown.
 */
#include "harness.h"

#include <criterion/criterion.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>

TestSuite(durability, .fini = th_kill_live_server, .timeout = 60);

#define ANA "\"subject\": {\"org\": \"acme\", \"team\": \"infra\", \"user\": \"ana\"}"
#define REQ "\"provider\": \"openai\", \"model\": \"gpt-4o\""
#define CHECK                                                                                      \
    "{" ANA ", " REQ ", \"input_tokens\": 100, \"output_tokens\": 800, \"purpose\": \"x\"}"

/* A settle of resv with what the server needs when it does not know the hold. */
static void settle_params(char *out, size_t cap, const char *resv) {
    snprintf(out, cap,
             "{\"reservation\": \"%s\", " ANA ", " REQ
             ", \"input_tokens\": 100, \"output_tokens\": 500}",
             resv);
}

/* What ana has used of the budget on gco2e. */
static double used(th_client *c) {
    json_t *res, *r = th_ok(c, "budget.get", "{" ANA "}", &res);
    double u = th_num(json_array_get(json_object_get(res, "budgets"), 0), "used");
    json_decref(r);
    return u;
}

static const char *settled(th_client *c, const char *resv, json_t **keep) {
    char params[300];
    settle_params(params, sizeof params, resv);
    json_t *res;
    *keep = th_ok(c, "settle", params, &res);
    return th_str(res, "settled");
}

Test(durability, a_check_answered_before_its_commit_and_lost_to_kill_9_is_charged_by_its_settle) {
    th_server s;
    th_server_start(&s, NULL);
    th_client *c = th_connect_admin(&s);
    json_t *res, *r = th_ok(c, "budget.set",
                            "{\"selector\": \"*\", \"metric\": \"gco2e\", \"window\": \"year\", "
                            "\"limit\": 1000000}",
                            &res);
    json_decref(r);
    r = th_ok(c, "check", CHECK, &res);
    char durable[64];
    snprintf(durable, sizeof durable, "%s", th_str(res, "reservation"));
    json_decref(r);
    json_t *keep;
    cr_assert_str_eq(settled(c, durable, &keep), "reserved");
    json_decref(keep);
    double before = used(c);
    cr_assert_gt(before, 0);

    /* another connection holds the store's write lock: nothing can commit */
    sqlite3 *db;
    cr_assert_eq(sqlite3_open(s.store, &db), SQLITE_OK);
    cr_assert_eq(sqlite3_exec(db, "BEGIN IMMEDIATE", NULL, NULL, NULL), SQLITE_OK, "%s",
                 sqlite3_errmsg(db));
    int64_t t0 = th_now_ms();
    r = th_ok(c, "check", CHECK, &res);
    cr_assert_lt(th_now_ms() - t0, 2000, "the check waited for a commit");
    cr_assert_str_eq(th_str(res, "decision"), "allow");
    char lost[64];
    snprintf(lost, sizeof lost, "%s", th_str(res, "reservation"));
    json_decref(r);
    th_client_free(c);
    kill(s.pid, SIGKILL);
    waitpid(s.pid, NULL, 0);
    s.pid = 0;
    sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
    sqlite3_close(db);

    th_server_restart(&s, NULL);
    c = th_connect_admin(&s);
    cr_assert_eq(used(c), before, "the acknowledged settle survived, the lost hold holds nothing");
    cr_assert_str_eq(settled(c, durable, &keep), "repeated");
    json_decref(keep);
    cr_assert_str_eq(settled(c, lost, &keep), "unreserved", "the lost hold's settle is charged");
    json_decref(keep);
    double after = used(c);
    cr_assert_gt(after, before);
    cr_assert_str_eq(settled(c, lost, &keep), "repeated", "once");
    json_decref(keep);
    cr_assert_eq(used(c), after);
    /* an id of the ledger's shape that no ledger made before this start */
    char params[300];
    settle_params(params, sizeof params, "rffffffffffff0123456789abcdef01234567");
    th_fails(c, "settle", params, "unknown_reservation", NULL);
    th_client_free(c);
    th_server_cleanup(&s);
}
