/*
 * test_cli_report.c - `discern report` against a real discernd: known charges
 * summed in the table, --csv and --json, the reader's scope, usage errors.
 */
#include "harness.h"
#include "run.h"

#include <criterion/criterion.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

TestSuite(cli_report, .fini = th_kill_live_server);

/* Run discern report against s as token with args (NULL-terminated). */
static run_result report(const th_server *s, const char *token, const char *const *args) {
    char server[64], key[128];
    snprintf(server, sizeof server, "DISCERN_SERVER=127.0.0.1:%d", s->port);
    snprintf(key, sizeof key, "DISCERN_KEY=%s", token);
    const char *argv[32] = {"report"};
    size_t n = 1;
    for (; args[n - 1] && n < 31; n++)
        argv[n] = args[n - 1];
    argv[n] = NULL;
    return run_discern(argv,
                       (const char *const[]){server, key, "DISCERN_ADMIN_TOKEN", "DISCERN_ORG",
                                             "DISCERN_TEAM", "DISCERN_USER", NULL});
}

#define REPORT(s, token, ...) report(s, token, (const char *const[]){__VA_ARGS__, NULL})

/* An unreserved settle of out output tokens for acme/team (one charge). */
static void charge(th_client *c, const char *team, int n, int out) {
    char params[256];
    snprintf(params, sizeof params,
             "{\"reservation\": \"u-%s-%d\", \"subject\": {\"org\": \"acme\", \"team\": \"%s\"}, "
             "\"provider\": \"openai\", \"model\": \"gpt-4o\", \"input_tokens\": 0, "
             "\"output_tokens\": %d}",
             team, n, team, out);
    json_t *r = th_call(c, "settle", params);
    cr_assert_str_eq(th_error_code(r), "", "%s", th_error_message(r));
    json_decref(r);
}

static void start(th_server *s, char *reader) {
    th_server_start(s, NULL);
    th_client *c = th_connect_admin(s);
    charge(c, "a", 1, 100);
    charge(c, "a", 2, 23);
    charge(c, "b", 3, 1000);
    th_client_free(c);
    th_create_key(s, "reader", "org:acme/team:a", reader, NULL);
}

Test(cli_report, the_table_sums_known_charges_of_the_readers_scope) {
    th_server s;
    char reader[80];
    start(&s, reader);
    run_result r = REPORT(&s, reader, "--by", "team", "--metric", "tokens");
    cr_assert_eq(r.code, 0, "%s", r.err);
    run_has(r.out, "org:acme/team:a");
    run_has(r.out, "123.000000 tokens");
    cr_assert_null(strstr(r.out, "team:b"), "outside the reader's scope: %s", r.out);
    run_free(&r);
    th_server_cleanup(&s);
}

Test(cli_report, csv_and_json_carry_the_same_rows) {
    th_server s;
    char reader[80], admin[80];
    start(&s, reader);
    th_create_key(&s, "admin", "*", admin, NULL);
    run_result r = REPORT(&s, admin, "--by", "team", "--metric", "requests", "--csv");
    cr_assert_eq(r.code, 0, "%s", r.err);
    char today[16];
    time_t now = time(NULL);
    strftime(today, sizeof today, "%Y-%m-%d", gmtime(&now));
    char row[128];
    snprintf(row, sizeof row, "period_start,group,value\n%sT00:00:00Z,org:acme/team:a,2\n", today);
    run_has(r.out, row);
    run_has(r.out, "org:acme/team:b,1\n");
    run_free(&r);
    r = REPORT(&s, admin, "--by", "team", "--metric", "tokens", "--period", "month", "--json");
    cr_assert_eq(r.code, 0, "%s", r.err);
    json_t *j = json_loads(r.out, 0, NULL);
    cr_assert_not_null(j, "%s", r.out);
    json_t *rows = json_object_get(j, "rows");
    cr_assert_eq(json_array_size(rows), 2);
    cr_assert_float_eq(json_number_value(json_object_get(json_array_get(rows, 1), "value")), 1000.0,
                       1e-9);
    cr_assert_str_eq(json_string_value(json_object_get(j, "period")), "month");
    json_decref(j);
    run_free(&r);
    th_server_cleanup(&s);
}

Test(cli_report, bad_flags_are_usage_errors_naming_the_flag) {
    th_server s;
    char reader[80];
    start(&s, reader);
    run_result r = REPORT(&s, reader, "--metric", "tokens");
    cr_assert_eq(r.code, 2);
    run_has(r.err, "--by");
    run_free(&r);
    r = REPORT(&s, reader, "--by", "team", "--since", "2026-02-30");
    cr_assert_eq(r.code, 2);
    run_has(r.err, "--since");
    run_free(&r);
    r = REPORT(&s, reader, "--by", "team", "--csv", "--json");
    cr_assert_eq(r.code, 2);
    run_free(&r);
    r = REPORT(&s, reader, "--by", "planet");
    cr_assert_eq(r.code, 2, "%s", r.err);
    run_has(r.err, "field 'by'");
    run_free(&r);
    r = REPORT(&s, reader, "--help");
    cr_assert_eq(r.code, 0);
    run_has(r.out, "--period");
    run_free(&r);
    th_server_cleanup(&s);
}
