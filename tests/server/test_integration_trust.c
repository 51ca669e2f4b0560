/*
 * test_integration_trust.c - who may do what, against a real discernd: keys, roles,
 * scopes, holds owned by their key, scoped reads (RPC and HTTP), revocation, keys
 * across a restart, and the audit trail in decisions.list.
 */
#include "harness.h"

#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static th_server srv;

static void start(void) {
    th_server_start(&srv, NULL);
}
static void stop(void) {
    th_server_cleanup(&srv);
}

TestSuite(trust, .init = start, .fini = stop, .timeout = 60);

#define REQ "\"provider\": \"openai\", \"model\": \"gpt-4o\", \"output_tokens\": 100"
#define CHECK_FOR(team)                                                                            \
    "{\"subject\": {\"org\": \"acme\", \"team\": \"" team "\"}, " REQ                              \
    ", \"purpose\": \"code-review\"}"
#define CHECK_NO_SUBJECT "{" REQ ", \"purpose\": \"code-review\", \"budgets\": true}"

/* used of the first budget state of subject team (admin view). */
static double used_of(th_client *admin, const char *team) {
    char params[160];
    snprintf(params, sizeof params, "{\"subject\": {\"org\": \"acme\", \"team\": \"%s\"}}", team);
    json_t *res, *r = th_ok(admin, "budget.get", params, &res);
    json_t *b = json_array_get(json_object_get(res, "budgets"), 0);
    cr_assert_not_null(b, "no budget applies to team %s", team);
    double v = json_number_value(json_object_get(b, "used"));
    json_decref(r);
    return v;
}

static void set_team_budgets(th_client *admin) {
    json_t *res, *r;
    const char *teams[] = {"a", "b"};
    for (int i = 0; i < 2; i++) {
        char params[200];
        snprintf(params, sizeof params,
                 "{\"selector\": \"org:acme/team:%s\", \"metric\": \"requests\", \"window\": "
                 "\"day\", \"limit\": 1000}",
                 teams[i]);
        r = th_ok(admin, "budget.set", params, &res);
        json_decref(r);
    }
}

Test(trust, without_a_key_tcp_offers_only_ping_auth_estimate_and_the_catalogue) {
    th_client *c = th_connect_tcp(&srv);
    const char *refused[][2] = {
        {"check", CHECK_FOR("a")},
        {"settle", "{\"reservation\": \"x-1\", " REQ ", \"input_tokens\": 1}"},
        {"cancel", "{\"reservation\": \"x-1\"}"},
        {"budget.get", "{\"subject\": {\"team\": \"a\"}}"},
        {"budget.list", "{}"},
        {"budget.set", "{\"selector\": \"*\", \"metric\": \"requests\", \"window\": \"day\", "
                       "\"limit\": 1}"},
        {"budget.delete", "{\"selector\": \"*\", \"metric\": \"requests\", \"window\": \"day\"}"},
        {"decisions.list", "{}"},
        {"key.create", "{\"role\": \"client\", \"scope\": \"*\"}"},
        {"stats", "{}"},
    };
    for (size_t i = 0; i < sizeof refused / sizeof refused[0]; i++)
        th_fails(c, refused[i][0], refused[i][1], "unauthorized", NULL);
    json_t *res, *r = th_ok(c, "ping", "{}", &res);
    json_decref(r);
    r = th_ok(c, "estimate", "{" REQ "}", &res);
    json_decref(r);
    r = th_ok(c, "models.list", "{}", &res);
    json_decref(r);
    r = th_ok(c, "zones.list", "{}", &res);
    json_decref(r);
    th_client_free(c);
}

Test(trust, a_client_key_of_team_a_is_forbidden_for_team_b_and_nothing_is_charged) {
    th_client *admin = th_connect_admin(&srv);
    set_team_budgets(admin);
    char token[72];
    th_create_key(&srv, "client", "org:acme/team:a", token, NULL);
    th_client *c = th_connect_as(&srv, token);
    th_fails(c, "check", CHECK_FOR("b"), "forbidden", NULL);
    th_fails(c, "settle",
             "{\"reservation\": \"mine-1\", \"subject\": {\"org\": \"acme\", \"team\": \"b\"}, " REQ
             ", \"input_tokens\": 1}",
             "forbidden", NULL);
    cr_assert_eq(used_of(admin, "b"), 0);
    /* The scope fills what the request leaves out: the hold lands on team a. */
    json_t *res, *r = th_ok(c, "check", CHECK_NO_SUBJECT, &res);
    json_t *b = json_array_get(json_object_get(res, "budgets"), 0);
    cr_assert_str_eq(th_str_or_empty(b, "counter"), "org:acme/team:a");
    json_decref(r);
    th_fails(c, "budget.set",
             "{\"selector\": \"org:acme/team:a\", \"metric\": \"requests\", \"window\": \"day\", "
             "\"limit\": 1}",
             "unauthorized", NULL);
    th_client_free(c);
    th_client_free(admin);
}

static void settle_params(char *out, size_t cap, const char *resv) {
    snprintf(out, cap, "{\"reservation\": \"%s\", \"input_tokens\": 10, \"output_tokens\": 10}",
             resv);
}

Test(trust, a_key_cannot_settle_or_cancel_another_keys_hold) {
    char ta[72], tb[72], ida[24];
    th_create_key(&srv, "client", "org:acme/team:a", ta, ida);
    th_create_key(&srv, "client", "org:acme/team:a", tb, NULL);
    th_client *a = th_connect_as(&srv, ta), *b = th_connect_as(&srv, tb);
    json_t *res, *r = th_ok(a, "check", CHECK_NO_SUBJECT, &res);
    char resv[64], params[200];
    snprintf(resv, sizeof resv, "%s", th_str_or_empty(res, "reservation"));
    json_decref(r);
    settle_params(params, sizeof params, resv);
    th_fails(b, "settle", params, "forbidden", NULL);
    char cancel[100];
    snprintf(cancel, sizeof cancel, "{\"reservation\": \"%s\"}", resv);
    th_fails(b, "cancel", cancel, "forbidden", NULL);
    r = th_ok(a, "settle", params, &res);
    cr_assert_str_eq(th_str_or_empty(res, "settled"), "reserved");
    json_decref(r);
    /* An admin may release anyone's hold. */
    r = th_ok(a, "check", CHECK_NO_SUBJECT, &res);
    snprintf(cancel, sizeof cancel, "{\"reservation\": \"%s\"}",
             th_str_or_empty(res, "reservation"));
    json_decref(r);
    th_client *admin = th_connect_admin(&srv);
    r = th_ok(admin, "cancel", cancel, &res);
    json_decref(r);
    th_client_free(admin);
    th_client_free(a);
    th_client_free(b);
}

Test(trust, a_made_up_or_future_reservation_id_charges_no_other_team_nor_fails_a_later_check) {
    th_client *admin = th_connect_admin(&srv);
    set_team_budgets(admin);
    char token[72];
    th_create_key(&srv, "client", "org:acme/team:a", token, NULL);
    th_client *c = th_connect_as(&srv, token);
    /* An id of the ledger's own shape that it never made is a guess, not a settle. */
    for (int i = 0; i < 20; i++) {
        char params[256];
        snprintf(params, sizeof params,
                 "{\"reservation\": \"r%036x\", \"subject\": {\"org\": \"acme\", \"team\": "
                 "\"a\"}, " REQ ", \"input_tokens\": 1}",
                 i);
        th_fails(c, "settle", params, "unknown_reservation", NULL);
        snprintf(params, sizeof params,
                 "{\"reservation\": \"r%016x\", " REQ ", \"input_tokens\": 1}", i);
        th_fails(c, "settle", params, "unknown_reservation", NULL);
    }
    th_fails(c, "settle",
             "{\"reservation\": \"own-1\", \"subject\": {\"org\": \"acme\", \"team\": \"b\"}, " REQ
             ", \"input_tokens\": 1}",
             "forbidden", NULL);
    cr_assert_eq(used_of(admin, "b"), 0);
    /* An id of its own, without a subject: charged inside the caller's scope. */
    json_t *res,
        *r = th_ok(c, "settle", "{\"reservation\": \"own-2\", " REQ ", \"input_tokens\": 1}", &res);
    cr_assert_str_eq(th_str_or_empty(res, "settled"), "unreserved");
    json_decref(r);
    cr_assert_eq(used_of(admin, "a"), 1);
    char prev[64] = "";
    for (int i = 0; i < 50; i++) {
        r = th_ok(c, "check", CHECK_NO_SUBJECT, &res);
        const char *id = th_str_or_empty(res, "reservation");
        cr_assert_eq(strlen(id), 37, "reservation id '%s'", id);
        cr_assert_eq(id[0], 'r');
        cr_assert_str_neq(id, prev);
        snprintf(prev, sizeof prev, "%s", id);
        json_decref(r);
    }
    th_client_free(c);
    th_client_free(admin);
}

static size_t count_array(json_t *res, const char *key) {
    return json_array_size(json_object_get(res, key));
}

/* decisions.list waits for the commit of every decision answered before it, so a
 * check's decision is listed by the very next call, though the check was answered
 * before its record committed. */
static void expect_decisions(th_client *c, size_t n) {
    json_t *res, *r = th_ok(c, "decisions.list", "{\"limit\": 100}", &res);
    size_t got = count_array(res, "decisions");
    json_decref(r);
    cr_assert_geq(got, n, "%zu of %zu decisions listed", got, n);
}

static bool has_selector(json_t *list, const char *sel) {
    size_t i;
    json_t *b;
    json_array_foreach(list, i,
                       b) if (strcmp(th_str_or_empty(b, "selector"), sel) == 0) return true;
    return false;
}

Test(trust, a_reader_key_sees_only_its_scope_in_every_read_path) {
    th_client *admin = th_connect_admin(&srv);
    set_team_budgets(admin);
    json_t *res, *r = th_ok(admin, "budget.set",
                            "{\"selector\": \"org:other\", \"metric\": \"requests\", \"window\": "
                            "\"day\", \"limit\": 5}",
                            &res);
    json_decref(r);
    r = th_ok(admin, "check", CHECK_FOR("a"), &res);
    json_decref(r);
    r = th_ok(admin, "check", CHECK_FOR("b"), &res);
    json_decref(r);
    char token[72];
    th_create_key(&srv, "reader", "org:acme/team:a", token, NULL);
    th_client *c = th_connect_as(&srv, token);
    r = th_ok(c, "budget.list", "{}", &res);
    json_t *list = json_object_get(res, "budgets");
    cr_assert_eq(json_array_size(list), 1, "%s", json_dumps(res, 0));
    cr_assert(has_selector(list, "org:acme/team:a"));
    json_decref(r);
    th_fails(c, "budget.get", "{\"subject\": {\"org\": \"acme\", \"team\": \"b\"}}", "forbidden",
             NULL);
    r = th_ok(c, "budget.get", "{}", &res);
    cr_assert_eq(count_array(res, "budgets"), 1);
    json_decref(r);
    expect_decisions(c, 1);
    r = th_ok(c, "decisions.list", "{}", &res);
    list = json_object_get(res, "decisions");
    cr_assert_eq(json_array_size(list), 1, "%s", json_dumps(res, 0));
    cr_assert_str_eq(th_str_or_empty(json_object_get(json_array_get(list, 0), "subject"), "team"),
                     "a");
    json_decref(r);
    th_fails(c, "decisions.list", "{\"subject\": {\"team\": \"b\"}}", "forbidden", NULL);
    th_fails(c, "check", CHECK_NO_SUBJECT, "unauthorized", NULL);
    int status = 0;
    char *body = th_http_get_auth(&srv, "/v1/budgets", token, &status);
    cr_assert_eq(status, 200, "%s", body);
    cr_assert(strstr(body, "org:acme/team:a") && !strstr(body, "team:b") &&
                  !strstr(body, "org:other"),
              "%s", body);
    free(body);
    body = th_http_get_auth(&srv, "/v1/budgets?team=b", token, &status);
    cr_assert_eq(status, 403, "%s", body);
    free(body);
    body = th_http_get_auth(&srv, "/v1/budgets", NULL, &status);
    cr_assert_eq(status, 401, "%s", body);
    free(body);
    body = th_http_get_auth(&srv, "/v1/budgets", "dsk_0000", &status);
    cr_assert_eq(status, 401, "%s", body);
    free(body);
    th_client_free(c);
    th_client_free(admin);
}

Test(trust, revocation_cuts_an_open_connection_at_its_next_call) {
    char token[72], id[24];
    th_create_key(&srv, "client", "org:acme/team:a", token, id);
    th_client *c = th_connect_as(&srv, token);
    json_t *res, *r = th_ok(c, "check", CHECK_NO_SUBJECT, &res);
    json_decref(r);
    th_client *admin = th_connect_admin(&srv);
    char params[100];
    snprintf(params, sizeof params, "{\"key_id\": \"%s\"}", id);
    r = th_ok(admin, "key.revoke", params, &res);
    json_decref(r);
    th_fails(c, "check", CHECK_NO_SUBJECT, "unauthorized", NULL);
    th_fails(c, "check", CHECK_NO_SUBJECT, "unauthorized", NULL);
    snprintf(params, sizeof params, "{\"token\": \"%s\"}", token);
    th_fails(c, "auth", params, "unauthorized", NULL);
    r = th_ok(admin, "key.list", "{}", &res);
    json_t *k = json_array_get(json_object_get(res, "keys"), 0);
    cr_assert_str_eq(th_str_or_empty(k, "key_id"), id);
    cr_assert_gt(json_integer_value(json_object_get(k, "revoked_at")), 0);
    cr_assert_null(json_object_get(k, "token"));
    json_decref(r);
    th_client_free(admin);
    th_client_free(c);
}

Test(trust, keys_the_owner_of_a_hold_and_what_it_was_for_survive_a_restart) {
    char ta[72], tb[72], tr[72], idr[24];
    th_create_key(&srv, "client", "org:acme/team:a", ta, NULL);
    th_create_key(&srv, "client", "org:acme/team:a", tb, NULL);
    th_create_key(&srv, "reader", "*", tr, idr);
    th_client *a = th_connect_as(&srv, ta);
    json_t *res, *r = th_ok(a, "check", CHECK_NO_SUBJECT, &res);
    char resv[64], params[200];
    snprintf(resv, sizeof resv, "%s", th_str_or_empty(res, "reservation"));
    json_decref(r);
    th_client_free(a);
    th_client *admin = th_connect_admin(&srv);
    snprintf(params, sizeof params, "{\"key_id\": \"%s\"}", idr);
    r = th_ok(admin, "key.revoke", params, &res);
    json_decref(r);
    th_client_free(admin);
    cr_assert_eq(th_server_stop(&srv), 0);
    th_server_restart(&srv, NULL);
    th_client *b = th_connect_as(&srv, tb);
    a = th_connect_as(&srv, ta);
    /* The ledger reloads the hold with what it was for: the settle gives only tokens. */
    settle_params(params, sizeof params, resv);
    th_fails(b, "settle", params, "forbidden", NULL);
    r = th_ok(a, "settle", params, &res);
    cr_assert_str_eq(th_str_or_empty(res, "settled"), "reserved");
    json_decref(r);
    th_client *c = th_connect_tcp(&srv);
    snprintf(params, sizeof params, "{\"token\": \"%s\"}", tr);
    th_fails(c, "auth", params, "unauthorized", NULL);
    th_client_free(c);
    th_client_free(a);
    th_client_free(b);
}

Test(trust, a_manager_manages_keys_and_budgets_only_inside_its_scope_and_is_journaled) {
    char tm[72], idm[24], other[72], ido[24];
    th_create_key(&srv, "manager", "org:acme", tm, idm);
    th_create_key(&srv, "client", "org:other", other, ido);
    th_client *m = th_connect_as(&srv, tm);
    json_t *res,
        *r = th_ok(m, "key.create", "{\"role\": \"client\", \"scope\": \"org:acme/team:a\"}", &res);
    cr_assert_eq(strncmp(th_str_or_empty(res, "token"), "dsk_", 4), 0);
    cr_assert_eq(strlen(th_str_or_empty(res, "token")), 68);
    json_decref(r);
    th_fails(m, "key.create", "{\"role\": \"client\", \"scope\": \"org:other\"}", "forbidden",
             NULL);
    th_fails(m, "key.create", "{\"role\": \"client\", \"scope\": \"*\"}", "forbidden", NULL);
    th_fails(m, "key.create", "{\"role\": \"admin\", \"scope\": \"org:acme\"}", "forbidden", NULL);
    th_fails(m, "key.create", "{\"role\": \"boss\", \"scope\": \"org:acme\"}", "bad_request", NULL);
    th_fails(m, "key.create", "{\"role\": \"client\", \"scope\": \"org:acme/user:x/team:y\"}",
             "bad_request", NULL);
    char params[100];
    snprintf(params, sizeof params, "{\"key_id\": \"%s\"}", ido);
    th_fails(m, "key.revoke", params, "forbidden", NULL);
    r = th_ok(m, "key.list", "{}", &res);
    json_t *keys = json_object_get(res, "keys");
    cr_assert_eq(json_array_size(keys), 2, "%s", json_dumps(res, 0)); /* itself and its client */
    json_decref(r);
    r = th_ok(m, "budget.set",
              "{\"selector\": \"org:acme/team:*\", \"metric\": \"requests\", \"window\": \"day\", "
              "\"limit\": 9}",
              &res);
    json_decref(r);
    th_fails(
        m, "budget.set",
        "{\"selector\": \"team:*\", \"metric\": \"requests\", \"window\": \"day\", \"limit\": 9}",
        "forbidden", NULL);
    th_fails(m, "check", CHECK_NO_SUBJECT, "unauthorized", NULL);
    th_client_free(m);
    char sql[200];
    snprintf(sql, sizeof sql,
             "SELECT count(*) FROM admin_journal WHERE by_key = '%s' AND action IN"
             " ('budget.set', 'key.create')",
             idm);
    cr_assert_eq(th_sql_int(&srv, sql), 2);
}

static const char *const SHADOW =
    "return { name = 'watch', mode = 'shadow', decide = function(req, ctx)\n"
    "  return refuse('would refuse ' .. req.purpose) end }\n";

Test(trust, shadow_verdicts_and_tags_are_journaled_and_listed) {
    th_write_policy(&srv, "watch.lua", SHADOW);
    th_client *admin = th_connect_admin(&srv);
    json_t *res, *r = th_ok(admin, "policy.reload", "{}", &res);
    json_decref(r);
    th_client_free(admin);
    char token[72], id[24];
    th_create_key(&srv, "client", "org:acme/team:a", token, id);
    th_client *c = th_connect_as(&srv, token);
    r = th_ok(c, "check",
              "{" REQ ", \"purpose\": \"code-review\", \"zone\": \"FRA\", \"tags\": {\"ticket\": "
              "\"T-\\\"1\\\\ \\u0001\\t end\"}}",
              &res);
    cr_assert_str_eq(th_str_or_empty(res, "decision"), "allow");
    json_decref(r);
    th_client_free(c);
    char tr[72];
    th_create_key(&srv, "reader", "org:acme", tr, NULL);
    th_client *rd = th_connect_as(&srv, tr);
    expect_decisions(rd, 1);
    r = th_ok(rd, "decisions.list", "{\"outcome\": \"allow\"}", &res);
    json_t *d = json_array_get(json_object_get(res, "decisions"), 0);
    cr_assert_not_null(d, "%s", json_dumps(res, 0));
    cr_assert_str_eq(th_str_or_empty(d, "key_id"), id);
    cr_assert_str_eq(th_str_or_empty(d, "zone"), "FRA");
    cr_assert_str_eq(th_str_or_empty(json_object_get(d, "tags"), "ticket"), "T-\"1\\ \x01\t end");
    cr_assert_str_eq(th_str_or_empty(d, "purpose_class"), "productive");
    json_t *v, *verdicts = json_object_get(d, "verdicts");
    size_t i;
    bool shadow_seen = false, enforce_seen = false;
    json_array_foreach(verdicts, i, v) {
        if (strcmp(th_str_or_empty(v, "policy"), "watch") == 0) {
            shadow_seen = json_is_true(json_object_get(v, "shadow")) &&
                          strcmp(th_str_or_empty(v, "outcome"), "refuse") == 0 &&
                          strcmp(th_str_or_empty(v, "reason"), "would refuse code-review") == 0;
        } else if (strcmp(th_str_or_empty(v, "policy"), "budgets") == 0) {
            enforce_seen = json_is_false(json_object_get(v, "shadow"));
        }
    }
    cr_assert(shadow_seen && enforce_seen, "%s", json_dumps(verdicts, 0));
    cr_assert(json_is_string(json_object_get(d, "reservation")));
    json_decref(r);
    th_client_free(rd);
    int status = 0;
    char *body = th_http_get(&srv, "/metrics", &status);
    cr_assert(
        strstr(body, "discern_shadow_verdicts_total{policy=\"watch\",outcome=\"refuse\"} 1\n"),
        "%s", body);
    free(body);
    /* A shadow refusal is logged at info, naming the policy and the key. */
    FILE *f = fopen(srv.log, "r");
    cr_assert_not_null(f);
    char line[1024];
    bool logged = false;
    while (!logged && fgets(line, sizeof line, f))
        logged = strstr(line, "shadow_refuse") && strstr(line, "policy=watch") && strstr(line, id);
    fclose(f);
    cr_assert(logged, "no shadow_refuse line for key %s in %s", id, srv.log);
}

Test(trust, decisions_list_pages_with_next_and_filters_by_time) {
    th_client *admin = th_connect_admin(&srv);
    json_t *res, *r;
    for (int i = 0; i < 5; i++) {
        r = th_ok(admin, "check", CHECK_FOR("a"), &res);
        json_decref(r);
    }
    expect_decisions(admin, 5);
    r = th_ok(admin, "decisions.list", "{\"limit\": 2}", &res);
    cr_assert_eq(count_array(res, "decisions"), 2);
    json_int_t next = json_integer_value(json_object_get(res, "next"));
    cr_assert_gt(next, 0);
    json_decref(r);
    char params[100];
    snprintf(params, sizeof params, "{\"limit\": 10, \"after\": %lld}", (long long)next);
    r = th_ok(admin, "decisions.list", params, &res);
    cr_assert_eq(count_array(res, "decisions"), 3);
    cr_assert(json_is_null(json_object_get(res, "next")));
    json_decref(r);
    r = th_ok(admin, "decisions.list", "{\"until\": 1000}", &res);
    cr_assert_eq(count_array(res, "decisions"), 0);
    json_decref(r);
    th_fails(admin, "decisions.list", "{\"outcome\": \"maybe\"}", "bad_request", NULL);
    th_client_free(admin);
}

Test(trust, with_require_auth_off_an_anonymous_connection_is_a_client_and_reader) {
    th_server s;
    th_server_start(&s, "require_auth = false");
    th_client *c = th_connect_tcp(&s);
    json_t *res, *r = th_ok(c, "check", CHECK_FOR("a"), &res);
    char params[200];
    settle_params(params, sizeof params, th_str_or_empty(res, "reservation"));
    json_decref(r);
    r = th_ok(c, "settle", params, &res);
    json_decref(r);
    r = th_ok(c, "budget.list", "{}", &res);
    json_decref(r);
    th_fails(c, "budget.set",
             "{\"selector\": \"*\", \"metric\": \"requests\", \"window\": \"day\", \"limit\": 1}",
             "unauthorized", NULL);
    th_fails(c, "key.create", "{\"role\": \"client\", \"scope\": \"*\"}", "unauthorized", NULL);
    int status = 0;
    char *body = th_http_get(&s, "/v1/budgets", &status);
    cr_assert_eq(status, 200, "%s", body);
    free(body);
    th_client_free(c);
    th_server_cleanup(&s);
}

Test(trust, an_expired_key_stops_working_at_its_next_call) {
    th_client *admin = th_connect_admin(&srv);
    char params[160];
    snprintf(params, sizeof params,
             "{\"role\": \"client\", \"scope\": \"org:acme\", \"expires_at\": %lld}",
             (long long)time(NULL) + 2);
    json_t *res, *r = th_ok(admin, "key.create", params, &res);
    char token[72];
    snprintf(token, sizeof token, "%s", th_str_or_empty(res, "token"));
    json_decref(r);
    th_fails(admin, "key.create", "{\"role\": \"client\", \"scope\": \"*\", \"expires_at\": 1000}",
             "bad_request", NULL);
    th_client_free(admin);
    th_client *c = th_connect_as(&srv, token);
    r = th_ok(c, "budget.get", "{}", &res);
    json_decref(r);
    th_sleep_ms(2600);
    th_fails(c, "budget.get", "{}", "unauthorized", NULL);
    th_client_free(c);
}
