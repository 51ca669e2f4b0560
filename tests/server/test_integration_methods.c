/*
 * test_integration_methods.c - every method of a real discernd, success and error
 * paths, over TCP and the Unix socket; the check -> settle journal; policy reload
 * under load; SIGTERM under load; the HTTP listener.
 */
#include "harness.h"

#include <criterion/criterion.h>
#include <pthread.h>
#include <signal.h>
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

TestSuite(methods, .init = start, .fini = stop, .timeout = 60);

#define SUBJECT "\"subject\": {\"org\": \"acme\", \"team\": \"infra\", \"user\": \"ana\"}"
#define CHECK(extra)                                                                               \
    "{" SUBJECT ", \"provider\": \"openai\", \"model\": \"gpt-4o\", \"input_tokens\": 100,"        \
    " \"output_tokens\": 800, \"purpose\": \"code-review\"" extra "}"

static th_client *admin(const th_server *s) {
    th_client *c = th_connect_admin(s);
    json_t *res, *r = th_ok(c, "auth", "{\"token\": \"" TH_ADMIN_TOKEN "\"}", &res);
    json_decref(r);
    return c;
}

/* ------------------------------------------------------------------ estimate -- */

Test(methods, estimate_answers_ranges_over_tcp_and_unix) {
    th_client *clients[2] = {th_connect_admin(&srv), th_connect_unix(&srv)};
    for (int i = 0; i < 2; i++) {
        json_t *res,
            *r = th_ok(clients[i], "estimate",
                       "{\"provider\": \"openai\", \"model\": \"gpt-4o\", \"output_tokens\": 500}",
                       &res);
        json_t *energy = json_object_get(json_object_get(res, "estimate"), "energy_kwh");
        cr_assert_gt(th_num(energy, "min"), 0);
        cr_assert_geq(th_num(energy, "max"), th_num(energy, "min"));
        cr_assert_str_eq(th_str(res, "method"), "ecologits");
        cr_assert(json_is_array(json_object_get(res, "warnings")));
        cr_assert_eq(strlen(th_str(res, "zone")), 3);
        json_decref(r);
        th_client_free(clients[i]);
    }
}

Test(methods, estimate_errors_name_the_field) {
    th_client *c = th_connect_admin(&srv);
    th_fails(c, "estimate",
             "{\"provider\": \"openai\", \"model\": \"gpt-9\", \"output_tokens\": 1}",
             "unknown_model", "'gpt-9'");
    th_fails(c, "estimate",
             "{\"provider\": \"opnai\", \"model\": \"gpt-4o\", \"output_tokens\": 1}",
             "unknown_provider", "'opnai'");
    th_fails(c, "estimate",
             "{\"provider\": \"openai\", \"model\": \"gpt-4o\", \"output_tokens\": 1, \"zone\": "
             "\"XXX\"}",
             "unknown_zone", "XXX");
    th_fails(c, "estimate", "{\"provider\": \"openai\", \"model\": \"gpt-4o\"}", "bad_request",
             "field 'output_tokens' is required");
    th_fails(c, "estimate",
             "{\"provider\": \"openai\", \"model\": \"gpt-4o\", \"output_tokens\": -5}",
             "bad_request", "field 'output_tokens': -5 is out of range");
    th_fails(c, "estimate", "{\"provider\": 7, \"model\": \"gpt-4o\", \"output_tokens\": 1}",
             "bad_request", "field 'provider': expected a string, got integer");
    th_client_free(c);
}

/* ------------------------------------------------------- the discern method -- */

#define DISCERN_EST(extra)                                                                         \
    "{\"provider\": \"openai\", \"model\": \"gpt-4o\", \"input_tokens\": 1000, "                   \
    "\"output_tokens\": 400, \"method\": \"discern\"" extra "}"

static double energy_max(json_t *res) {
    return th_num(json_object_get(json_object_get(res, "estimate"), "energy_kwh"), "max");
}

Test(methods, estimate_with_method_discern_states_its_scope_and_assumptions) {
    th_client *c = th_connect_tcp(&srv);
    json_t *res, *r = th_ok(c, "estimate",
                            DISCERN_EST(", \"scope\": \"lifecycle\", "
                                        "\"water\": \"total\""),
                            &res);
    cr_assert_str_eq(th_str(res, "method"), "discern");
    json_t *scope = json_object_get(res, "scope");
    cr_assert_str_eq(th_str(scope, "boundary"), "lifecycle");
    cr_assert_str_eq(th_str(scope, "carbon"), "location");
    cr_assert_str_eq(th_str(scope, "water"), "total");
    cr_assert(json_array_size(json_object_get(scope, "includes")) >= 6);
    json_t *a = json_object_get(res, "assumptions");
    cr_assert_str_eq(th_str(a, "accelerator"), "H100");
    cr_assert_eq(th_num(json_object_get(a, "batch"), "max"), 256);
    cr_assert_str_eq(th_str(a, "params_source"), "catalogue");
    cr_assert_str_eq(th_str(a, "zone_source"), "provider");
    cr_assert_str_eq(th_str(a, "grid_source"), "annual");
    cr_assert(json_is_string(json_object_get(a, "lifecycle_source")));
    cr_assert_str_eq(json_string_value(json_array_get(json_object_get(res, "warnings"), 2)),
                     "lifecycle-class-value");
    json_decref(r);
    r = th_ok(c, "estimate",
              "{\"provider\": \"openai\", \"model\": \"gpt-4o\", \"output_tokens\": 1}", &res);
    json_t *eco = json_object_get(res, "scope");
    cr_assert_str_eq(th_str(eco, "boundary"), "inference");
    cr_assert_str_eq(th_str(eco, "water"), "total");
    json_decref(r);
    th_client_free(c);
}

Test(methods, discern_estimates_an_unknown_model_and_counts_reasoning_and_cached_tokens) {
    th_client *c = th_connect_tcp(&srv);
    json_t *res,
        *r = th_ok(c, "estimate",
                   "{\"provider\": \"openai\", \"model\": \"gpt-9\", \"output_tokens\": 10, "
                   "\"method\": \"discern\"}",
                   &res);
    json_t *w = json_object_get(res, "warnings");
    cr_assert_str_eq(json_string_value(json_array_get(w, 0)), "model-not-in-catalogue");
    cr_assert_str_eq(json_string_value(json_array_get(w, 1)), "model-fallback-class");
    cr_assert_str_eq(th_str(json_object_get(res, "assumptions"), "params_source"),
                     "fallback-class");
    json_decref(r);
    r = th_ok(c, "estimate", DISCERN_EST(""), &res);
    double plain = energy_max(res);
    json_decref(r);
    r = th_ok(c, "estimate", DISCERN_EST(", \"reasoning_tokens\": 2000"), &res);
    cr_assert_gt(energy_max(res), 2 * plain);
    json_decref(r);
    r = th_ok(c, "estimate", DISCERN_EST(", \"cached_input_tokens\": 1000"), &res);
    cr_assert_lt(energy_max(res), plain);
    json_decref(r);
    th_client_free(c);
}

Test(methods, discern_params_errors_name_the_field) {
    th_client *c = th_connect_tcp(&srv);
    th_fails(c, "estimate", DISCERN_EST(", \"scope\": \"all\""), "bad_request", "field 'scope'");
    th_fails(c, "estimate", DISCERN_EST(", \"carbon\": \"green\""), "bad_request",
             "field 'carbon'");
    th_fails(c, "estimate", DISCERN_EST(", \"water\": \"sea\""), "bad_request", "field 'water'");
    th_fails(c, "estimate", DISCERN_EST(", \"method\": \"magic\""), "bad_request",
             "field 'method'");
    th_fails(c, "estimate", DISCERN_EST(", \"image_size\": \"big\""), "bad_request",
             "field 'image_size'");
    th_fails(c, "estimate", DISCERN_EST(", \"cached_input_tokens\": 5000"), "bad_request",
             "cached_input_tokens");
    th_fails(c, "estimate", DISCERN_EST(", \"parameters_b\": -3"), "bad_request", "parameters_b");
    th_client_free(c);
}

Test(methods, a_live_grid_value_changes_discern_estimates_while_valid_and_not_ecologits_ones) {
    th_client *c = th_connect_tcp(&srv), *a = admin(&srv);
    const char *deu_discern = "{\"provider\": \"openai\", \"model\": \"gpt-4o\", "
                              "\"output_tokens\": 400, \"zone\": \"DEU\", \"method\": \"discern\"}";
    const char *deu_eco = "{\"provider\": \"openai\", \"model\": \"gpt-4o\", "
                          "\"output_tokens\": 400, \"zone\": \"DEU\"}";
    json_t *res, *r = th_ok(c, "estimate", deu_discern, &res);
    double before = th_num(json_object_get(json_object_get(res, "usage"), "gwp_kgco2eq"), "max");
    json_decref(r);
    r = th_ok(c, "estimate", deu_eco, &res);
    double eco_before =
        th_num(json_object_get(json_object_get(res, "usage"), "gwp_kgco2eq"), "max");
    json_decref(r);
    char params[200];
    snprintf(params, sizeof params,
             "{\"zone\": \"DEU\", \"gco2e_per_kwh\": 688.28, \"valid_until\": %lld}",
             (long long)time(NULL) + 3600);
    json_decref(th_ok(a, "grid.set", params, &res));
    r = th_ok(c, "estimate", deu_discern, &res);
    json_t *as = json_object_get(res, "assumptions");
    cr_assert_str_eq(th_str(as, "grid_source"), "live");
    cr_assert_eq(th_num(as, "gco2e_per_kwh"), 688.28);
    double after = th_num(json_object_get(json_object_get(res, "usage"), "gwp_kgco2eq"), "max");
    cr_assert_float_eq(after, 2 * before, 1e-12);
    json_decref(r);
    r = th_ok(c, "estimate", deu_eco, &res);
    cr_assert_str_eq(th_str(json_object_get(res, "assumptions"), "grid_source"), "annual");
    cr_assert_eq(th_num(json_object_get(json_object_get(res, "usage"), "gwp_kgco2eq"), "max"),
                 eco_before);
    json_decref(r);
    th_client_free(a);
    th_client_free(c);
}

Test(methods, check_and_settle_under_discern_carry_scope_assumptions_and_reasoning_tokens) {
    th_client *c = th_connect_admin(&srv);
    json_t *res, *r = th_ok(c, "check",
                            "{" SUBJECT ", \"provider\": \"openai\", \"model\": \"gpt-9\", "
                            "\"input_tokens\": 100, \"output_tokens\": 100, \"reasoning_tokens\": "
                            "500, \"purpose\": \"code-review\", \"method\": \"discern\"}",
                            &res);
    cr_assert_str_eq(th_str(res, "method"), "discern");
    cr_assert_str_eq(th_str(json_object_get(res, "scope"), "boundary"), "inference");
    cr_assert_str_eq(th_str(json_object_get(res, "assumptions"), "params_source"),
                     "fallback-class");
    cr_assert(json_array_size(json_object_get(res, "warnings")) >= 2);
    char resv[64], params[300];
    snprintf(resv, sizeof resv, "%s", th_str(res, "reservation"));
    json_decref(r);
    snprintf(params, sizeof params,
             "{\"reservation\": \"%s\", \"input_tokens\": 100, \"output_tokens\": 100, "
             "\"reasoning_tokens\": 3000, \"method\": \"discern\"}",
             resv);
    r = th_ok(c, "settle", params, &res);
    cr_assert_str_eq(th_str(res, "method"), "discern");
    double with_reasoning = th_num(json_object_get(res, "charged"), "energy_wh");
    json_decref(r);
    r = th_ok(c, "estimate",
              "{\"provider\": \"openai\", \"model\": \"gpt-9\", \"input_tokens\": 100, "
              "\"output_tokens\": 100, \"method\": \"discern\"}",
              &res);
    cr_assert_gt(with_reasoning, 10 * energy_max(res) * 1e3,
                 "settle charged %g Wh: the reasoning tokens were not counted", with_reasoning);
    json_decref(r);
    th_client_free(c);
}

Test(estimate_method, a_server_configured_for_discern_uses_it_when_a_request_names_none,
     .timeout = 30) {
    th_server s;
    th_server_start(&s, "estimate_method = \"discern\"\n");
    th_client *c = th_connect_tcp(&s);
    json_t *res,
        *r = th_ok(c, "estimate",
                   "{\"provider\": \"openai\", \"model\": \"gpt-9\", \"output_tokens\": 1}", &res);
    cr_assert_str_eq(th_str(res, "method"), "discern");
    json_decref(r);
    r = th_ok(c, "estimate",
              "{\"provider\": \"openai\", \"model\": \"gpt-4o\", \"output_tokens\": 1, \"method\": "
              "\"ecologits\"}",
              &res);
    cr_assert_str_eq(th_str(res, "method"), "ecologits");
    json_decref(r);
    th_client_free(c);
    th_server_cleanup(&s);
}

Test(methods, models_list_lists_all_or_one_provider_and_names_an_unknown_one) {
    th_client *c = th_connect_unix(&srv);
    json_t *res, *all = th_ok(c, "models.list", NULL, &res);
    size_t n_all = json_array_size(json_object_get(res, "models"));
    cr_assert_gt(n_all, 10);
    json_t *one = th_ok(c, "models.list", "{\"provider\": \"openai\"}", &res);
    json_t *models = json_object_get(res, "models");
    cr_assert_gt(json_array_size(models), 0);
    cr_assert_lt(json_array_size(models), n_all);
    size_t i;
    json_t *m;
    bool has_4o = false;
    json_array_foreach(models, i, m) {
        cr_assert_str_eq(th_str(m, "provider"), "openai");
        if (strcmp(th_str(m, "model"), "gpt-4o") == 0) has_4o = true;
    }
    cr_assert(has_4o);
    json_decref(all);
    json_decref(one);
    th_fails(c, "models.list", "{\"provider\": \"opnai\"}", "unknown_provider",
             "did you mean 'openai'");
    th_client_free(c);
}

/* ------------------------------------------------------------- zones & grid -- */

static json_t *find_zone(json_t *res, const char *zone) {
    size_t i;
    json_t *z;
    json_array_foreach(json_object_get(res, "zones"), i,
                       z) if (strcmp(th_str(z, "zone"), zone) == 0) return z;
    return NULL;
}

Test(methods, grid_set_needs_admin_and_then_shows_in_zones_list_as_live) {
    char token[72];
    th_create_key(&srv, "client", "*", token, NULL);
    th_client *c = th_connect_as(&srv, token);
    json_t *res, *r = th_ok(c, "zones.list", "{}", &res);
    json_t *fra = find_zone(res, "FRA");
    cr_assert_not_null(fra);
    cr_assert_str_eq(th_str(fra, "source"), "annual");
    double annual = th_num(fra, "gco2e_per_kwh");
    json_decref(r);
    char params[200];
    snprintf(params, sizeof params,
             "{\"zone\": \"FRA\", \"gco2e_per_kwh\": 123.5, \"valid_until\": %lld}",
             (long long)time(NULL) + 3600);
    th_fails(c, "grid.set", params, "unauthorized", "not open to a client key");
    th_client *a = admin(&srv);
    r = th_ok(a, "grid.set", params, &res);
    cr_assert_eq(th_num(res, "gco2e_per_kwh"), 123.5);
    json_decref(r);
    r = th_ok(c, "zones.list", "{}", &res);
    fra = find_zone(res, "FRA");
    cr_assert_str_eq(th_str(fra, "source"), "live");
    cr_assert_eq(th_num(fra, "current_gco2e_per_kwh"), 123.5);
    cr_assert_eq(th_num(fra, "gco2e_per_kwh"), annual);
    json_decref(r);
    th_fails(a, "grid.set",
             "{\"zone\": \"ZZZ\", \"gco2e_per_kwh\": 1, \"valid_until\": 4000000000}",
             "unknown_zone", "'ZZZ'");
    th_fails(a, "grid.set", "{\"zone\": \"FRA\", \"gco2e_per_kwh\": 1, \"valid_until\": 1000}",
             "bad_request", "valid_until");
    th_fails(a, "grid.set",
             "{\"zone\": \"FRA\", \"gco2e_per_kwh\": -1, \"valid_until\": 4000000000}",
             "bad_request", "gco2e_per_kwh");
    th_client_free(a);
    th_client_free(c);
}

/* ------------------------------------------------------------------ budgets -- */

#define TEAM_BUDGET "\"selector\": \"team:*\", \"metric\": \"gco2e\", \"window\": \"month\""

Test(methods, budget_set_list_get_delete_with_admin_rights) {
    th_client *c = th_connect_unix(&srv);
    th_fails(c, "budget.set", "{" TEAM_BUDGET ", \"limit\": 50}", "unauthorized", "budget.set");
    th_client *a = admin(&srv);
    json_t *res, *r = th_ok(a, "budget.set", "{" TEAM_BUDGET ", \"limit\": 50}", &res);
    cr_assert(json_is_true(json_object_get(res, "created")));
    cr_assert_eq(th_num(json_object_get(res, "budget"), "limit"), 50);
    cr_assert_str_eq(th_str(json_object_get(res, "budget"), "unit"), "g");
    json_decref(r);
    r = th_ok(a, "budget.set", "{" TEAM_BUDGET ", \"limit\": 60.5}", &res);
    cr_assert(json_is_false(json_object_get(res, "created")));
    json_decref(r);
    r = th_ok(c, "budget.list", "{}", &res);
    cr_assert_eq(json_array_size(json_object_get(res, "budgets")), 1);
    cr_assert_eq(th_num(json_array_get(json_object_get(res, "budgets"), 0), "limit"), 60.5);
    json_decref(r);
    r = th_ok(c, "budget.list", "{\"selector\": \"org:*\"}", &res);
    cr_assert_eq(json_array_size(json_object_get(res, "budgets")), 0);
    json_decref(r);
    r = th_ok(c, "budget.get", "{" SUBJECT "}", &res);
    json_t *b = json_array_get(json_object_get(res, "budgets"), 0);
    cr_assert_str_eq(th_str(b, "counter"), "org:acme/team:infra");
    cr_assert_eq(th_num(b, "remaining"), 60.5);
    json_decref(r);
    th_fails(
        a, "budget.set",
        "{\"selector\": \"team:*\", \"metric\": \"carbon\", \"window\": \"month\", \"limit\": 1}",
        "unknown_metric", "'carbon'");
    th_fails(a, "budget.set", "{" TEAM_BUDGET "}", "bad_request", "field 'limit' is required");
    th_fails(c, "budget.get", "{\"subject\": {}}", "bad_request", "subject");
    r = th_ok(a, "budget.delete", "{" TEAM_BUDGET "}", &res);
    json_decref(r);
    th_fails(a, "budget.delete", "{" TEAM_BUDGET "}", "unknown_budget", NULL);
    th_client_free(a);
    th_client_free(c);
}

/* -------------------------------------------------------- check and settle -- */

Test(methods, check_then_settle_lands_in_the_journal_with_its_decision_record) {
    th_client *c = th_connect_admin(&srv);
    json_t *res, *r = th_ok(c, "check", CHECK(""), &res);
    cr_assert_str_eq(th_str(res, "decision"), "allow");
    cr_assert_str_eq(th_str(res, "policy"), "budgets");
    cr_assert_eq(strlen(th_str(res, "policy_version")), 16);
    char resv[64], decision_id[64];
    snprintf(resv, sizeof resv, "%s", th_str(res, "reservation"));
    snprintf(decision_id, sizeof decision_id, "%s", th_str(res, "decision_id"));
    cr_assert_gt(th_num(res, "expires_at"), (double)time(NULL));
    json_decref(r);
    char params[256], sql[512];
    snprintf(params, sizeof params,
             "{\"reservation\": \"%s\", \"input_tokens\": 100, \"output_tokens\": 300}", resv);
    r = th_ok(c, "settle", params, &res);
    cr_assert_str_eq(th_str(res, "settled"), "reserved");
    double charged = th_num(json_object_get(res, "charged"), "gco2e");
    cr_assert_gt(charged, 0);
    cr_assert_eq(th_num(json_object_get(res, "charged"), "tokens"), 400);
    json_decref(r);
    /* The decision record and the charge are in the store once the replies are out. */
    snprintf(sql, sizeof sql,
             "SELECT count(*) FROM decisions WHERE decision_id = '%s' AND reservation_id = '%s'"
             " AND outcome = 'allow' AND purpose = 'code-review' AND team = 'infra' AND model = "
             "'gpt-4o'",
             decision_id, resv);
    cr_assert_eq(th_sql_int(&srv, sql), 1);
    snprintf(sql, sizeof sql,
             "SELECT gco2e FROM charges WHERE reservation_id = '%s' AND kind = 'settle'", resv);
    cr_assert_eq(th_sql_int(&srv, sql), (long long)(charged * 1e6 + 0.5));
    /* A repeat charges nothing more, and its reply claims no charge. */
    r = th_ok(c, "settle", params, &res);
    cr_assert_str_eq(th_str(res, "settled"), "repeated");
    json_t *again = json_object_get(res, "charged");
    const char *key;
    json_t *v;
    cr_assert_gt(json_object_size(again), 0);
    json_object_foreach(again, key, v) cr_assert_eq(json_number_value(v), 0, "charged.%s", key);
    json_decref(r);
    snprintf(sql, sizeof sql, "SELECT count(*) FROM charges WHERE reservation_id = '%s'", resv);
    cr_assert_eq(th_sql_int(&srv, sql), 1);
    th_client_free(c);
}

/* "d-<time in µs>-<worker>-<seq>", hex: the worker's sequence counts up by one. */
static void split_decision_id(const char *id, unsigned long long *us, unsigned *worker,
                              unsigned long long *seq) {
    char tail;
    cr_assert_eq(sscanf(id, "d-%llx-%x-%llx%c", us, worker, seq, &tail), 3, "decision_id '%s'", id);
    for (const char *p = id + 2; *p; p++)
        cr_assert(*p == '-' || (*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'f'),
                  "decision_id '%s': not lower-case hex", id);
}

Test(methods, decision_ids_are_hex_time_worker_and_a_sequence_counting_up) {
    th_client *c = th_connect_admin(&srv);
    unsigned long long us[2], seq[2];
    unsigned worker[2];
    for (int i = 0; i < 2; i++) {
        json_t *res, *r = th_ok(c, "check", CHECK(", \"reserve\": false"), &res);
        split_decision_id(th_str(res, "decision_id"), &us[i], &worker[i], &seq[i]);
        json_decref(r);
    }
    double now_us = (double)time(NULL) * 1e6;
    cr_assert((double)us[1] > now_us - 60e6 && (double)us[1] < now_us + 60e6,
              "time %llu us is not now", us[1]);
    cr_assert_geq(us[1], us[0]);
    cr_assert_eq(worker[1], worker[0], "one connection, one worker");
    cr_assert_eq(seq[1], seq[0] + 1);
    th_client_free(c);
}

Test(methods, check_reply_carries_budget_states_only_when_asked_for) {
    th_client *a = admin(&srv);
    const char *budgets[] = {
        "{" TEAM_BUDGET ", \"limit\": 1000}",
        "{\"selector\": \"org:*\", \"metric\": \"energy_wh\", \"window\": \"year\", "
        "\"limit\": 1000000}",
        "{\"selector\": \"user:*\", \"metric\": \"requests\", \"window\": \"rate:100/1m\", "
        "\"limit\": 100}"};
    json_t *res, *r;
    for (int i = 0; i < 3; i++)
        json_decref(th_ok(a, "budget.set", budgets[i], &res));
    th_client *c = th_connect_admin(&srv);
    r = th_ok(c, "check", CHECK(""), &res);
    size_t lean = th_last_size(c);
    cr_assert_str_eq(th_str(res, "decision"), "allow");
    cr_assert_null(json_object_get(res, "budgets"));
    cr_assert_gt(strlen(th_str(res, "reservation")), 0);
    cr_assert_gt(th_num(json_object_get(json_object_get(res, "estimate"), "gwp_kgco2eq"), "max"),
                 0);
    json_decref(r);
    r = th_ok(c, "check", CHECK(", \"budgets\": true"), &res);
    size_t full = th_last_size(c);
    cr_assert_eq(json_array_size(json_object_get(res, "budgets")), 3);
    cr_assert_gt(strlen(th_str(res, "reservation")), 0);
    json_decref(r);
    cr_log_info("check reply: %zu bytes, %zu with budgets: true (3 budgets)", lean, full);
    /* Three budget states are ~180 bytes each; the rest of the reply is the same. */
    cr_assert_gt(full, lean + 3 * 150, "%zu bytes without budgets, %zu with", lean, full);
    th_fails(c, "check", CHECK(", \"budgets\": 1"), "bad_request", "budgets");
    th_client_free(c);
    th_client_free(a);
}

Test(methods, check_over_budget_is_refused_holds_nothing_and_is_journaled) {
    th_client *a = admin(&srv);
    json_t *res, *r = th_ok(a, "budget.set", "{" TEAM_BUDGET ", \"limit\": 0.001}", &res);
    json_decref(r);
    th_client *u = th_connect_unix(&srv);
    r = th_ok(u, "check", CHECK(", \"budgets\": true"), &res);
    cr_assert_str_eq(th_str(res, "decision"), "refuse");
    cr_assert(strstr(th_str(res, "reason"), "org:acme/team:infra"), "%s", th_str(res, "reason"));
    cr_assert_null(json_object_get(res, "reservation"));
    json_t *b = json_array_get(json_object_get(res, "budgets"), 0);
    cr_assert(json_is_true(json_object_get(b, "would_exceed")));
    cr_assert_eq(th_num(b, "held"), 0);
    char sql[256];
    snprintf(sql, sizeof sql,
             "SELECT count(*) FROM decisions WHERE decision_id = '%s' AND outcome = 'refuse'",
             th_str(res, "decision_id"));
    cr_assert_eq(th_sql_int(&srv, sql), 1);
    json_decref(r);
    th_client_free(u);
    th_client_free(a);
}

Test(methods, throttle_carries_retry_after_and_a_suggestion_and_no_reservation) {
    th_client *c = th_connect_admin(&srv);
    json_t *res,
        *r = th_ok(c, "check",
                   "{" SUBJECT
                   ", \"provider\": \"openai\", \"model\": \"gpt-4o\", \"output_tokens\": 10,"
                   " \"purpose\": \"batch\", \"tags\": {\"app\": \"nightly\"}}",
                   &res);
    cr_assert_str_eq(th_str(res, "decision"), "throttle");
    cr_assert_eq(th_num(res, "retry_after_s"), 30);
    cr_assert_str_eq(th_str(json_object_get(res, "suggest"), "model"), "gpt-4o-mini");
    cr_assert_str_eq(th_str(json_object_get(res, "suggest"), "provider"), "openai");
    cr_assert_null(json_object_get(res, "reservation"));
    json_decref(r);
    th_client_free(c);
}

Test(methods, check_without_reserve_holds_nothing) {
    th_client *c = th_connect_admin(&srv);
    json_t *res, *r = th_ok(c, "check", CHECK(", \"reserve\": false"), &res);
    cr_assert_str_eq(th_str(res, "decision"), "allow");
    cr_assert_null(json_object_get(res, "reservation"));
    json_decref(r);
    th_client_free(c);
}

Test(methods, check_with_the_same_request_id_returns_the_same_reservation) {
    th_client *c = th_connect_admin(&srv);
    json_t *res, *r1 = th_ok(c, "check", CHECK(", \"request_id\": \"req-42\""), &res);
    char first[64];
    snprintf(first, sizeof first, "%s", th_str(res, "reservation"));
    json_t *r2 = th_ok(c, "check", CHECK(", \"request_id\": \"req-42\""), &res);
    cr_assert_str_eq(th_str(res, "reservation"), first);
    json_decref(r1);
    json_decref(r2);
    th_client_free(c);
}

Test(methods, check_errors_name_the_field_and_charge_nothing) {
    th_client *c = th_connect_unix(&srv);
    th_fails(c, "check",
             "{\"provider\": \"openai\", \"model\": \"gpt-4o\", \"output_tokens\": 1, \"purpose\": "
             "\"x\"}",
             "bad_request", "field 'subject' is required");
    th_fails(c, "check",
             "{\"subject\": {\"team\": 5}, \"provider\": \"openai\", \"model\": \"gpt-4o\","
             " \"output_tokens\": 1, \"purpose\": \"x\"}",
             "bad_request", "field 'team'");
    th_fails(c, "check",
             "{" SUBJECT ", \"provider\": \"openai\", \"model\": \"gpt-4o\", \"output_tokens\": 1}",
             "bad_request", "field 'purpose' is required");
    th_fails(c, "check",
             "{" SUBJECT ", \"provider\": \"openai\", \"model\": \"nope\", \"output_tokens\": 1,"
             " \"purpose\": \"x\"}",
             "unknown_model", "'nope'");
    th_fails(c, "check", CHECK(", \"ttl_s\": 0"), "bad_request", "field 'ttl_s'");
    th_fails(c, "check", CHECK(", \"reserve\": \"yes\""), "bad_request",
             "field 'reserve': expected a boolean");
    th_fails(c, "check", CHECK(", \"tags\": {\"a\": 1}"), "bad_request", "field 'tags'");
    cr_assert_eq(th_sql_int(&srv, "SELECT count(*) FROM reservations"), 0);
    th_client_free(c);
}

Test(methods, an_unknown_param_is_refused_naming_it_and_holds_nothing) {
    th_client *c = th_connect_admin(&srv);
    th_fails(c, "check", CHECK(", \"reserv\": false"), "bad_request",
             "field 'reserv': unknown in the params of 'check'");
    th_fails(c, "check", CHECK(", \"ttl\": 5"), "bad_request", "field 'ttl': unknown");
    cr_assert_eq(th_sql_int(&srv, "SELECT count(*) FROM reservations"), 0);
    th_fails(c, "check",
             "{\"subject\": {\"teem\": \"infra\"}, \"provider\": \"openai\", \"model\": "
             "\"gpt-4o\", \"output_tokens\": 1, \"purpose\": \"x\"}",
             "bad_request", "field 'teem': unknown in subject");
    th_fails(c, "estimate",
             "{\"provider\": \"openai\", \"model\": \"gpt-4o\", \"output_tokens\": 1, \"purpose\": "
             "\"x\"}",
             "bad_request", "field 'purpose': unknown in the params of 'estimate'");
    th_fails(c, "settle", "{\"reservation\": \"r-x\", \"output_tokens\": 1, \"charge\": true}",
             "bad_request", "field 'charge'");
    th_fails(c, "ping", "{\"verbose\": true}", "bad_request", "field 'verbose'");
    th_fails(c, "budget.set",
             "{\"selector\": \"team:x\", \"metric\": \"gco2e\", \"window\": \"day\", "
             "\"limit\": 1, \"limt\": 2}",
             "bad_request", "field 'limt'");
    th_fails(c, "grid.set",
             "{\"zone\": \"FRA\", \"gco2e_per_kwh\": 50, \"valid_until\": 99999999999, "
             "\"forecast\": [{\"from\": 1, \"gco2e\": 3}]}",
             "bad_request", "field 'gco2e': unknown in a forecast point");
    json_t *res, *r = th_ok(c, "budget.list", "{}", &res);
    cr_assert_eq(json_array_size(json_object_get(res, "budgets")), 0);
    json_decref(r);
    th_client_free(c);
}

Test(methods, token_counts_are_capped_at_one_billion_as_documented) {
    th_client *c = th_connect_admin(&srv);
    json_t *res, *r = th_ok(c, "estimate",
                            "{\"provider\": \"openai\", \"model\": \"gpt-4o\", \"output_tokens\": "
                            "1000000000}",
                            &res);
    json_decref(r);
    const char *fields[] = {"output_tokens", "input_tokens", "reasoning_tokens",
                            "cached_input_tokens"};
    for (size_t i = 0; i < 4; i++) {
        char params[256];
        snprintf(params, sizeof params,
                 "{\"provider\": \"openai\", \"model\": \"gpt-4o\", \"output_tokens\": 1, "
                 "\"input_tokens\": 1, \"%s\": 1000000001}",
                 fields[i]);
        json_t *e = th_call(c, "estimate", params);
        cr_assert_str_eq(th_error_code(e), "bad_request", "%s", fields[i]);
        cr_assert(strstr(th_error_message(e), fields[i]), "%s", th_error_message(e));
        cr_assert(strstr(th_error_message(e), "1000000000"), "%s", th_error_message(e));
        json_decref(e);
    }
    th_client_free(c);
}

Test(methods, an_empty_required_string_is_refused_naming_the_field) {
    th_client *c = th_connect_admin(&srv);
    th_fails(c, "check",
             "{" SUBJECT ", \"provider\": \"openai\", \"model\": \"gpt-4o\","
             " \"output_tokens\": 1, \"purpose\": \"\"}",
             "bad_request", "field 'purpose' is required and is empty");
    th_fails(c, "estimate", "{\"provider\": \"\", \"model\": \"gpt-4o\", \"output_tokens\": 1}",
             "bad_request", "field 'provider' is required and is empty");
    cr_assert_eq(th_sql_int(&srv, "SELECT count(*) FROM reservations"), 0);
    th_client_free(c);
}

Test(methods, settle_and_cancel_errors_and_cancel_releases_the_hold) {
    th_client *c = th_connect_admin(&srv);
    th_fails(c, "settle",
             "{\"reservation\": \"r-unknown\", \"input_tokens\": 1, \"output_tokens\": 1}",
             "unknown_reservation", "'r-unknown'");
    th_fails(c, "cancel", "{\"reservation\": \"r-unknown\"}", "unknown_reservation", NULL);
    th_fails(c, "cancel", "{}", "bad_request", "field 'reservation' is required");
    th_client *a = admin(&srv);
    json_t *res, *r = th_ok(a, "budget.set", "{" TEAM_BUDGET ", \"limit\": 1000}", &res);
    json_decref(r);
    r = th_ok(c, "check", CHECK(""), &res);
    char params[128];
    snprintf(params, sizeof params, "{\"reservation\": \"%s\"}", th_str(res, "reservation"));
    json_decref(r);
    r = th_ok(c, "budget.get", "{" SUBJECT "}", &res);
    cr_assert_gt(th_num(json_array_get(json_object_get(res, "budgets"), 0), "held"), 0);
    json_decref(r);
    r = th_ok(c, "cancel", params, &res);
    cr_assert(json_is_true(json_object_get(res, "released")));
    json_decref(r);
    r = th_ok(c, "budget.get", "{" SUBJECT "}", &res);
    cr_assert_eq(th_num(json_array_get(json_object_get(res, "budgets"), 0), "held"), 0);
    cr_assert_eq(th_num(json_array_get(json_object_get(res, "budgets"), 0), "used"), 0);
    json_decref(r);
    th_client_free(a);
    th_client_free(c);
}

Test(methods, thousand_pipelined_checks_are_answered_once_each_with_their_msgid) {
    th_client *c = th_connect_admin(&srv);
    enum { N = 1000 };
    for (uint32_t i = 0; i < N; i++)
        th_send_request(c, 100 + i, "check", CHECK(", \"reserve\": false"));
    static int seen[N];
    memset(seen, 0, sizeof seen);
    for (int k = 0; k < N; k++) {
        json_t *r = th_read(c, 10000);
        cr_assert_not_null(r, "only %d of %d answered", k, N);
        json_int_t id = json_integer_value(json_array_get(r, 1));
        cr_assert(id >= 100 && id < 100 + N);
        cr_assert_not_null(th_result(r), "%s", th_error_message(r));
        cr_assert_str_eq(th_str(th_result(r), "decision"), "allow");
        seen[id - 100]++;
        json_decref(r);
    }
    for (int i = 0; i < N; i++)
        cr_assert_eq(seen[i], 1, "msgid %d answered %d times", 100 + i, seen[i]);
    th_client_free(c);
}

/* budget.set waits for its commit off the worker: many in flight on one connection
 * are each answered once, and every budget is in effect when its reply arrives. */
Test(methods, pipelined_budget_sets_are_answered_once_each_and_in_effect) {
    th_client *a = admin(&srv);
    enum { N = 300 };
    char params[160];
    for (uint32_t i = 0; i < N; i++) {
        snprintf(params, sizeof params,
                 "{\"selector\": \"user:u%u\", \"metric\": \"tokens\", \"window\": "
                 "\"day\", \"limit\": %u}",
                 i, 1000 + i);
        th_send_request(a, 10 + i, "budget.set", params);
    }
    static int seen[N];
    memset(seen, 0, sizeof seen);
    for (int k = 0; k < N; k++) {
        json_t *r = th_read(a, 10000);
        cr_assert_not_null(r, "only %d of %d answered", k, N);
        json_int_t id = json_integer_value(json_array_get(r, 1));
        cr_assert(id >= 10 && id < 10 + N);
        json_t *res = th_result(r);
        cr_assert_not_null(res, "%s", th_error_message(r));
        cr_assert(json_is_true(json_object_get(res, "created")));
        cr_assert_eq(th_num(json_object_get(res, "budget"), "limit"), 1000 + (id - 10));
        seen[id - 10]++;
        json_decref(r);
    }
    for (int i = 0; i < N; i++)
        cr_assert_eq(seen[i], 1, "msgid %d answered %d times", 10 + i, seen[i]);
    json_t *res, *r = th_ok(a, "budget.list", "{}", &res);
    cr_assert_eq(json_array_size(json_object_get(res, "budgets")), N);
    json_decref(r);
    r = th_ok(a, "budget.get", "{\"subject\": {\"user\": \"u7\"}}", &res);
    json_t *b = json_array_get(json_object_get(res, "budgets"), 0);
    cr_assert_eq(th_num(b, "limit"), 1007);
    json_decref(r);
    th_client_free(a);
}

/* ------------------------------------------------------------------- stats -- */

Test(methods, stats_counts_decisions_and_reports_the_policy_version) {
    th_client *c = th_connect_admin(&srv);
    json_t *res, *r = th_ok(c, "check", CHECK(", \"reserve\": false"), &res);
    char version[32];
    snprintf(version, sizeof version, "%s", th_str(res, "policy_version"));
    json_decref(r);
    r = th_ok(c, "stats", "{}", &res);
    cr_assert_eq(th_num(json_object_get(res, "decisions"), "allow"), 1);
    cr_assert_str_eq(th_str(res, "policy_version"), version);
    cr_assert_eq(th_num(res, "workers"), 2);
    json_decref(r);
    th_client_free(c);
}

/* ------------------------------------------------------------------ reload -- */

static const char *const POLICY_V2 =
    "return { name = 'budgets', decide = function(req, ctx) return allow('version two') end }\n";

Test(methods, policy_reload_needs_admin_switches_version_and_keeps_the_old_set_on_failure) {
    char token[72];
    th_create_key(&srv, "client", "*", token, NULL);
    th_client *c = th_connect_as(&srv, token);
    th_fails(c, "policy.reload", "{}", "unauthorized", NULL);
    json_t *res, *r = th_ok(c, "check", CHECK(", \"reserve\": false"), &res);
    char v1[32];
    snprintf(v1, sizeof v1, "%s", th_str(res, "policy_version"));
    json_decref(r);
    th_client *a = admin(&srv);
    th_write_policy(&srv, "budgets.lua", "return { decide = function( }\n");
    th_fails(a, "policy.reload", "{}", "policy_error", "budgets.lua");
    r = th_ok(c, "check", CHECK(", \"reserve\": false"), &res);
    cr_assert_str_eq(th_str(res, "policy_version"), v1, "the old set stays live");
    json_decref(r);
    th_write_policy(&srv, "budgets.lua", POLICY_V2);
    r = th_ok(a, "policy.reload", "{}", &res);
    char v2[32];
    snprintf(v2, sizeof v2, "%s", th_str(res, "policy_version"));
    cr_assert_str_neq(v2, v1);
    cr_assert_str_eq(json_string_value(json_array_get(json_object_get(res, "policies"), 0)),
                     "budgets");
    json_decref(r);
    r = th_ok(c, "check", CHECK(", \"reserve\": false"), &res);
    cr_assert_str_eq(th_str(res, "policy_version"), v2);
    cr_assert_str_eq(th_str(res, "reason"), "version two");
    json_decref(r);
    th_client_free(a);
    th_client_free(c);
}

typedef struct load {
    const th_server *s;
    int answered, failed, switches;
    char first[32], last[32];
    volatile int stop;
} load;

/* Pipelined checks on one connection until told to stop. Replies may overtake each
 * other, so versions are compared in request (msgid) order: the set may change only
 * once, from the first to the last. */
static void *run_load(void *arg) {
    load *l = arg;
    th_client *c = th_connect_admin(l->s);
    uint32_t id = 0;
    while (!__atomic_load_n(&l->stop, __ATOMIC_ACQUIRE)) {
        char versions[16][32];
        memset(versions, 0, sizeof versions);
        uint32_t base = id;
        for (int k = 0; k < 16; k++)
            th_send_request(c, id++, "check", CHECK(", \"reserve\": false"));
        for (int k = 0; k < 16; k++) {
            json_t *r = th_read(c, 10000);
            if (!r || !th_result(r)) {
                l->failed++;
                json_decref(r);
                continue;
            }
            uint32_t slot = (uint32_t)json_integer_value(json_array_get(r, 1)) - base;
            const char *v = json_string_value(json_object_get(th_result(r), "policy_version"));
            if (slot < 16 && v) snprintf(versions[slot], sizeof versions[slot], "%s", v);
            l->answered++;
            json_decref(r);
        }
        for (int k = 0; k < 16; k++) {
            if (!versions[k][0]) continue;
            if (!l->first[0]) snprintf(l->first, sizeof l->first, "%.31s", versions[k]);
            if (l->last[0] && strcmp(l->last, versions[k]) != 0) l->switches++;
            snprintf(l->last, sizeof l->last, "%.31s", versions[k]);
        }
    }
    th_client_free(c);
    return NULL;
}

Test(methods, reload_under_load_fails_no_request_and_switches_each_connection_once) {
    enum { CONNS = 4 };
    load loads[CONNS];
    pthread_t threads[CONNS];
    memset(loads, 0, sizeof loads);
    for (int i = 0; i < CONNS; i++) {
        loads[i].s = &srv;
        pthread_create(&threads[i], NULL, run_load, &loads[i]);
    }
    th_sleep_ms(300);
    th_write_policy(&srv, "budgets.lua", POLICY_V2);
    th_client *a = admin(&srv);
    json_t *res, *r = th_ok(a, "policy.reload", "{}", &res);
    char v2[32];
    snprintf(v2, sizeof v2, "%s", th_str(res, "policy_version"));
    json_decref(r);
    th_sleep_ms(300);
    for (int i = 0; i < CONNS; i++)
        __atomic_store_n(&loads[i].stop, 1, __ATOMIC_RELEASE);
    for (int i = 0; i < CONNS; i++)
        pthread_join(threads[i], NULL);
    for (int i = 0; i < CONNS; i++) {
        cr_assert_eq(loads[i].failed, 0, "connection %d: %d requests failed", i, loads[i].failed);
        cr_assert_gt(loads[i].answered, 0);
        cr_assert_str_neq(loads[i].first, v2, "connection %d started on the old set", i);
        cr_assert_str_eq(loads[i].last, v2, "connection %d ended on the new set", i);
        cr_assert_eq(loads[i].switches, 1, "connection %d switched %d times", i, loads[i].switches);
    }
    th_client_free(a);
}

/* ---------------------------------------------------------------- shutdown -- */

Test(methods, sigterm_under_load_loses_no_acknowledged_settle, .timeout = 90) {
    th_client *c = th_connect_admin(&srv);
    /* Take 200 reservations first. */
    enum { N = 200 };
    static char ids[N][64];
    for (int i = 0; i < N; i++) {
        json_t *res, *r = th_ok(c, "check", CHECK(""), &res);
        snprintf(ids[i], sizeof ids[i], "%s", th_str(res, "reservation"));
        json_decref(r);
    }
    /* Pipeline all the settles, stop the server while they are in flight. */
    for (int i = 0; i < N; i++) {
        char p[160];
        snprintf(p, sizeof p,
                 "{\"reservation\": \"%s\", \"input_tokens\": 10, \"output_tokens\": 20}", ids[i]);
        th_send_request(c, (uint32_t)i, "settle", p);
    }
    json_t *first = th_read(c, 10000);
    cr_assert_not_null(first);
    int acked = th_result(first) ? 1 : 0;
    static bool ok_ids[N];
    memset(ok_ids, 0, sizeof ok_ids);
    if (acked) ok_ids[json_integer_value(json_array_get(first, 1))] = true;
    json_decref(first);
    cr_assert_eq(th_server_stop(&srv), 0);
    json_t *r;
    while ((r = th_read(c, 1000)) != NULL) {
        if (th_result(r)) {
            ok_ids[json_integer_value(json_array_get(r, 1))] = true;
            acked++;
        }
        json_decref(r);
    }
    th_client_free(c);
    cr_assert_gt(acked, 0);
    for (int i = 0; i < N; i++) {
        if (!ok_ids[i]) continue;
        char sql[256];
        snprintf(sql, sizeof sql,
                 "SELECT count(*) FROM charges WHERE reservation_id = '%.63s' AND kind = 'settle'",
                 ids[i]);
        cr_assert_eq(th_sql_int(&srv, sql), 1, "acknowledged settle of %s is not in the store",
                     ids[i]);
    }
    /* And a restarted server sees the same usage. */
    th_server_restart(&srv, NULL);
    c = th_connect_admin(&srv);
    json_t *res;
    r = th_ok(c, "stats", "{}", &res);
    json_decref(r);
    th_client_free(c);
}

/* -------------------------------------------------------------------- http -- */

Test(methods, http_serves_healthz_metrics_and_budgets_json) {
    th_client *a = admin(&srv);
    json_t *res, *r = th_ok(a, "budget.set", "{" TEAM_BUDGET ", \"limit\": 5}", &res);
    json_decref(r);
    r = th_ok(
        a, "budget.set",
        "{\"selector\": \"org:acme\", \"metric\": \"requests\", \"window\": \"day\", \"limit\": "
        "10}",
        &res);
    json_decref(r);
    r = th_ok(a, "check", CHECK(""), &res);
    json_decref(r);
    th_client_free(a);
    int status = 0;
    char *body = th_http_get(&srv, "/healthz", &status);
    cr_assert_eq(status, 200, "%s", body);
    cr_assert(strstr(body, "\"status\":\"ok\""), "%s", body);
    free(body);
    body = th_http_get(&srv, "/metrics", &status);
    cr_assert_eq(status, 200);
    cr_assert(strstr(body, "discern_decisions_total{outcome=\"allow\",policy=\"budgets\""), "%s",
              body);
    cr_assert(strstr(body, "discern_check_seconds_count 1"), "%s", body);
    cr_assert(strstr(body, "discern_reservations_remembered 1\n"), "%s", body);
    cr_assert(
        strstr(body,
               "discern_budget_limit{selector=\"team:*\",metric=\"gco2e\",window=\"month\"} 5"),
        "%s", body);
    cr_assert(strstr(body, "discern_budget_remaining{selector=\"org:acme\",counter=\"org:acme\","
                           "metric=\"requests\",window=\"day\"} 9.0"),
              "%s", body);
    cr_assert(strstr(body, "discern_budget_used{selector=\"team:*\",counter=\"org:acme/team:"
                           "infra\",metric=\"gco2e\",window=\"month\"} 0.0"),
              "%s", body);
    free(body);
    body = th_http_get_auth(&srv, "/v1/budgets", TH_ADMIN_TOKEN, &status);
    cr_assert_eq(status, 200);
    json_t *j = json_loads(body, 0, NULL);
    cr_assert_not_null(j, "%s", body);
    cr_assert_eq(json_array_size(json_object_get(j, "budgets")), 2, "%s", body);
    json_decref(j);
    free(body);
    body = th_http_get_auth(&srv, "/v1/budgets?org=acme&team=infra", TH_ADMIN_TOKEN, &status);
    j = json_loads(body, 0, NULL);
    cr_assert_not_null(j, "%s", body);
    json_t *b = NULL, *x;
    size_t i;
    json_array_foreach(json_object_get(j, "budgets"), i,
                       x) if (strcmp(th_str(x, "selector"), "team:*") == 0) b = x;
    cr_assert_not_null(b, "%s", body);
    cr_assert_str_eq(th_str(b, "counter"), "org:acme/team:infra");
    cr_assert_gt(th_num(b, "held"), 0);
    json_decref(j);
    free(body);
    body = th_http_get(&srv, "/nope", &status);
    cr_assert_eq(status, 404);
    free(body);
}

Test(methods, a_decision_no_policy_made_is_labelled_policy_empty_in_metrics_as_in_the_reply) {
    th_write_policy(&srv, "budgets.lua",
                    "return { name = 'quiet', decide = function(req, ctx) return nil end }\n");
    th_client *a = admin(&srv);
    json_t *res, *r = th_ok(a, "policy.reload", "{}", &res);
    json_decref(r);
    r = th_ok(a, "check", CHECK(""), &res);
    cr_assert_str_eq(th_str(res, "decision"), "allow");
    cr_assert_str_eq(th_str(res, "policy"), "");
    json_decref(r);
    th_client_free(a);
    int status = 0;
    char *body = th_http_get(&srv, "/metrics", &status);
    cr_assert_eq(status, 200);
    cr_assert(strstr(body, "discern_decisions_total{outcome=\"allow\",policy=\"\","), "%s", body);
    cr_assert(!strstr(body, "policy=\"none\""), "%s", body);
    free(body);
}

Test(methods, metrics_export_each_wildcard_counter_with_its_usage_after_a_settle) {
    th_client *a = admin(&srv);
    json_t *res, *r = th_ok(a, "budget.set",
                            "{\"selector\": \"user:*\", \"metric\": \"tokens\", \"window\": "
                            "\"month\", \"limit\": 100000}",
                            &res);
    json_decref(r);
    r = th_ok(a, "check", CHECK(""), &res);
    char params[256];
    snprintf(params, sizeof params,
             "{\"reservation\": \"%s\", \"input_tokens\": 100, \"output_tokens\": 300}",
             th_str(res, "reservation"));
    json_decref(r);
    int status = 0;
    char *body = th_http_get(&srv, "/metrics", &status);
    cr_assert_eq(status, 200);
    cr_assert(strstr(body, "discern_budget_held{selector=\"user:*\",counter=\"org:acme/user:ana\","
                           "metric=\"tokens\",window=\"month\"} 900.0"),
              "the check's hold (100 + 800 tokens) is exported:\n%s", body);
    free(body);
    r = th_ok(a, "settle", params, &res);
    json_decref(r);
    /* A subject name with a quote and a backslash is escaped in the label value. */
    r = th_ok(a, "check",
              "{\"subject\": {\"org\": \"acme\", \"user\": \"a\\\"b\\\\c\"}, \"provider\": "
              "\"openai\", \"model\": \"gpt-4o\", \"input_tokens\": 100, \"output_tokens\": 800, "
              "\"purpose\": \"code-review\"}",
              &res);
    json_decref(r);
    th_client_free(a);
    body = th_http_get(&srv, "/metrics", &status);
    cr_assert_eq(status, 200);
    cr_assert(strstr(body, "discern_budget_used{selector=\"user:*\",counter=\"org:acme/user:ana\","
                           "metric=\"tokens\",window=\"month\"} 400.0"),
              "%s", body);
    cr_assert(strstr(body, "discern_budget_held{selector=\"user:*\",counter=\"org:acme/user:ana\","
                           "metric=\"tokens\",window=\"month\"} 0.0"),
              "%s", body);
    cr_assert(strstr(body, "discern_budget_remaining{selector=\"user:*\",counter=\"org:acme/user:"
                           "ana\",metric=\"tokens\",window=\"month\"} 99600.0"),
              "%s", body);
    cr_assert(strstr(body, "discern_budget_held{selector=\"user:*\",counter=\"org:acme/user:"
                           "a\\\"b\\\\c\",metric=\"tokens\",window=\"month\"} 900.0"),
              "%s", body);
    cr_assert(strstr(body, "discern_budget_counters 2\n"), "%s", body);
    free(body);
}

/* A settle's reply carries every budget of its subject as the settle left it, the
 * states budget.get reads after it (the local ledger's states are read when the reply
 * is packed, not kept in the job). 40 budgets: a reserve holds each counter's lock at
 * once, and ThreadSanitizer follows at most 64 locks held by one thread. */
Test(methods, a_settle_reply_carries_the_state_of_every_budget_of_its_subject) {
    th_client *a = admin(&srv);
    static const char *const sel[] = {"*", "org:*", "team:*", "user:*"};
    static const char *const win[] = {"day", "month"};
    static const char *const met[] = {"tokens", "requests", "gco2e", "energy_wh", "water_ml"};
    json_t *res, *r;
    for (int i = 0; i < 4 * 2 * 5; i++) {
        char p[200];
        snprintf(p, sizeof p,
                 "{\"selector\": \"%s\", \"metric\": \"%s\", \"window\": \"%s\", "
                 "\"limit\": 1000000000}",
                 sel[i % 4], met[i / 8], win[i / 4 % 2]);
        json_decref(th_ok(a, "budget.set", p, &res));
    }
    r = th_ok(a, "check", CHECK(""), &res);
    char params[256];
    snprintf(params, sizeof params,
             "{\"reservation\": \"%s\", \"input_tokens\": 100, \"output_tokens\": 300}",
             th_str(res, "reservation"));
    json_decref(r);
    r = th_ok(a, "settle", params, &res);
    json_t *budgets = json_object_get(res, "budgets"), *gres,
           *g = th_ok(a, "budget.get", "{" SUBJECT "}", &gres);
    json_t *after = json_object_get(gres, "budgets");
    cr_assert_eq(json_array_size(budgets), 40, "every budget that applies");
    cr_assert_eq(json_array_size(after), 40);
    size_t i;
    json_t *b;
    int tokens = 0;
    json_array_foreach(budgets, i, b) {
        json_t *same = json_array_get(after, i);
        cr_assert_str_eq(th_str(b, "selector"), th_str(same, "selector"));
        cr_assert_str_eq(th_str(b, "metric"), th_str(same, "metric"));
        cr_assert_str_eq(th_str(b, "window"), th_str(same, "window"));
        cr_assert_eq(th_num(b, "used"), th_num(same, "used"));
        cr_assert_eq(th_num(b, "held"), 0);
        if (strcmp(th_str(b, "metric"), "tokens") != 0) continue;
        tokens++;
        cr_assert_eq(th_num(b, "used"), 400, "%s %s", th_str(b, "selector"), th_str(b, "window"));
    }
    cr_assert_eq(tokens, 8);
    json_decref(g);
    json_decref(r);
    th_client_free(a);
}

/* ------------------------------------------------------ unix admin by uid -- */

Test(unix_admin, a_unix_peer_with_an_allowed_uid_is_admin_without_a_token, .timeout = 30) {
    th_server s;
    th_server_start(&s, "unix_admin_uids = \"self\"");
    th_client *u = th_connect_unix(&s), *t = th_connect_tcp(&s);
    json_t *res, *r = th_ok(u, "budget.set", "{" TEAM_BUDGET ", \"limit\": 5}", &res);
    json_decref(r);
    th_fails(t, "budget.set", "{" TEAM_BUDGET ", \"limit\": 5}", "unauthorized", NULL);
    th_client_free(u);
    th_client_free(t);
    th_server_cleanup(&s);
}

/* ---------------------------------------------------------- store failures -- */

/* Checks until one fails to reach the store; returns how many succeeded. Bounded by
 * time, not by a count: checks are answered before their commit, so how many pass
 * before the writer's first failing commit depends on how much CPU the writer got. */
static int check_until_store_fails(th_client *c, json_t **last) {
    int64_t deadline = th_now_ms() + 20000;
    for (int i = 0; th_now_ms() < deadline; i++) {
        json_t *r = th_call(c, "check", CHECK(""));
        if (!th_result(r) || json_object_get(th_result(r), "unenforced")) {
            *last = r;
            return i;
        }
        json_decref(r);
    }
    cr_assert_fail("the store never filled up");
    return -1;
}

Test(store_failure, closed_mode_refuses_with_store_unavailable_and_recovers_without_restart,
     .timeout = 60) {
    th_server s;
    th_server_start_fsize(&s, NULL, 512 * 1024);
    th_client *c = th_connect_admin(&s);
    json_t *r = NULL;
    check_until_store_fails(c, &r);
    cr_assert_str_eq(th_error_code(r), "store_unavailable", "%s", th_error_message(r));
    json_decref(r);
    int status = 0;
    char *body = th_http_get(&s, "/healthz", &status);
    cr_assert_eq(status, 503, "%s", body);
    free(body);
    th_server_set_fsize(&s, 0); /* the disk has room again */
    json_t *res;
    r = th_ok(c, "check", CHECK(""), &res);
    cr_assert_str_eq(th_str(res, "decision"), "allow");
    cr_assert_null(json_object_get(res, "unenforced"));
    json_decref(r);
    th_client_free(c);
    th_server_cleanup(&s);
}

Test(store_failure, open_mode_allows_unenforced_and_counts_it, .timeout = 60) {
    th_server s;
    th_server_start_fsize(&s, "failure_mode = \"open\"", 512 * 1024);
    th_client *c = th_connect_admin(&s);
    json_t *r = NULL;
    check_until_store_fails(c, &r);
    json_t *res = th_result(r);
    cr_assert_not_null(res, "%s", th_error_message(r));
    cr_assert_str_eq(th_str(res, "decision"), "allow");
    cr_assert(json_is_true(json_object_get(res, "unenforced")));
    cr_assert_null(json_object_get(res, "reservation"));
    json_decref(r);
    r = th_ok(c, "stats", "{}", &res);
    cr_assert_geq(th_num(res, "unenforced"), 1);
    json_decref(r);
    th_server_set_fsize(&s, 0);
    th_client_free(c);
    th_server_cleanup(&s);
}

Test(methods, a_client_that_leaves_with_checks_in_flight_does_not_disturb_the_server) {
    for (int round = 0; round < 5; round++) {
        th_client *c = round % 2 ? th_connect_unix(&srv) : th_connect_admin(&srv);
        for (uint32_t i = 0; i < 200; i++)
            th_send_request(c, i, "check", CHECK(""));
        th_client_free(c); /* gone before the replies, while their records commit */
    }
    th_client *c = th_connect_admin(&srv);
    json_t *res, *r = th_ok(c, "check", CHECK(""), &res);
    cr_assert_str_eq(th_str(res, "decision"), "allow");
    json_decref(r);
    double connections = -1;
    for (int tries = 0; tries < 100 && connections != 1;
         tries++) { /* closes are seen asynchronously */
        r = th_ok(c, "stats", "{}", &res);
        connections = th_num(res, "connections");
        json_decref(r);
        if (connections != 1) th_sleep_ms(50);
    }
    cr_assert_eq(connections, 1, "the departed clients are still counted");
    th_client_free(c);
    /* The fixture's stop then checks a clean exit with no sanitizer report. */
}

Test(methods, sighup_reloads_the_policies_and_a_broken_set_leaves_the_old_one_live) {
    th_client *c = th_connect_admin(&srv);
    json_t *res, *r = th_ok(c, "check", CHECK(", \"reserve\": false"), &res);
    char v1[32];
    snprintf(v1, sizeof v1, "%s", th_str(res, "policy_version"));
    json_decref(r);
    th_write_policy(&srv, "budgets.lua", "return { decide = }\n");
    kill(srv.pid, SIGHUP);
    bool failed = false;
    for (int tries = 0; tries < 100 && !failed; tries++) { /* wait for the attempt's log line */
        th_sleep_ms(50);
        FILE *f = fopen(srv.log, "r");
        char line[2048];
        while (f && fgets(line, sizeof line, f))
            failed = failed || strstr(line, "event=reload_failed");
        if (f) fclose(f);
    }
    cr_assert(failed, "no reload_failed in the log after SIGHUP");
    r = th_ok(c, "check", CHECK(", \"reserve\": false"), &res);
    cr_assert_str_eq(th_str(res, "policy_version"), v1,
                     "a broken set must not replace the live one");
    json_decref(r);
    th_write_policy(&srv, "budgets.lua", POLICY_V2);
    kill(srv.pid, SIGHUP);
    bool switched = false;
    for (int tries = 0; tries < 100 && !switched; tries++) {
        r = th_ok(c, "check", CHECK(", \"reserve\": false"), &res);
        switched = strcmp(th_str(res, "policy_version"), v1) != 0;
        if (switched) cr_assert_str_eq(th_str(res, "reason"), "version two");
        json_decref(r);
        if (!switched) th_sleep_ms(50);
    }
    cr_assert(switched, "SIGHUP did not reload the policies");
    th_client_free(c);
}
