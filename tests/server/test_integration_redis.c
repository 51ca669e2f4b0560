/*
 * test_integration_redis.c - discernd on a Redis store: one replica serves check,
 * settle, cancel and budget.* with the SQLite store's semantics, with every counter,
 * hold and budget definition in Redis (it creates no file named after the URL); a
 * malformed URL is a config error naming the part. The many-replica behaviours are in
 * test_integration_replicas.c.
 */
#include "harness.h"
#include "redis_harness.h"

#include <criterion/criterion.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

TestSuite(integration_redis, .fini = th_kill_live_redis, .timeout = 60);

#define SUBJECT "\"subject\": {\"org\": \"acme\", \"team\": \"infra\", \"user\": \"ana\"}"
#define CHECK                                                                                      \
    "{" SUBJECT ", \"provider\": \"openai\", \"model\": \"gpt-4o\", \"input_tokens\": 100, "       \
    "\"output_tokens\": 100, \"purpose\": \"chat\", \"budgets\": true}"

#define COUNTER "{discern:}c:team:*|tokens|day#org:acme/team:infra"

/* A discernd on the Redis at r (extra config lines may be NULL). */
static void start_on(th_server *s, const th_redis *r, const char *extra) {
    th_server_prepare(s);
    th_redis_url(r, s->store, sizeof s->store);
    th_server_restart(s, extra);
}

static json_t *budget_named(json_t *res, const char *metric) {
    json_t *b;
    size_t i;
    json_array_foreach(json_object_get(res, "budgets"), i, b) {
        if (strcmp(th_str(b, "metric"), metric) == 0) return b;
    }
    cr_assert_fail("no %s budget in the reply", metric);
    return NULL;
}

/* Wait (bounded) until /healthz answers want. */
static bool healthz_becomes(const th_server *s, int want, int ms) {
    for (int64_t end = th_now_ms() + ms; th_now_ms() < end; th_sleep_ms(20)) {
        int status = 0;
        free(th_http_get(s, "/healthz", &status));
        if (status == want) return true;
    }
    return false;
}

/* A fresh Redis r, a discernd s on it (extra config lines may be NULL) once /healthz
 * says it is connected, and an admin client of s. */
static th_client *serve_on_redis(th_redis *r, th_server *s, const char *extra) {
    th_redis_start(r, NULL);
    start_on(s, r, extra);
    cr_assert(healthz_becomes(s, 200, 5000), "never healthy on Redis");
    return th_connect_admin(s);
}

Test(integration_redis, one_replica_holds_settles_and_cancels_with_every_counter_in_redis) {
    th_redis r;
    th_server s;
    th_client *a = serve_on_redis(&r, &s, NULL);
    json_t *res, *resp = th_ok(a, "budget.set",
                               "{\"selector\": \"team:*\", \"metric\": \"tokens\", "
                               "\"window\": \"day\", \"limit\": 500}",
                               &res);
    cr_assert(json_is_true(json_object_get(res, "created")));
    json_decref(resp);
    resp = th_ok(a, "check", CHECK, &res);
    cr_assert_str_eq(th_str(res, "decision"), "allow");
    char id[64];
    snprintf(id, sizeof id, "%s", th_str(res, "reservation"));
    json_decref(resp);
    resp = th_ok(a, "budget.get", "{" SUBJECT "}", &res);
    cr_assert_eq(th_num(budget_named(res, "tokens"), "held"), 200, "the hold is in Redis");
    json_decref(resp);
    redisContext *rc = th_redis_connect(&r);
    long long held = th_redis_int(rc, "HGET %s h", COUNTER);
    cr_assert_eq(held, 200000000, "%lld µ held in Redis (micro-units)", held);
    char params[256];
    snprintf(params, sizeof params,
             "{\"reservation\": \"%s\", \"input_tokens\": 100, \"output_tokens\": 50}", id);
    resp = th_ok(a, "settle", params, &res);
    cr_assert_str_eq(th_str(res, "settled"), "reserved");
    cr_assert_eq(th_num(budget_named(res, "tokens"), "used"), 150);
    cr_assert_eq(th_num(budget_named(res, "tokens"), "held"), 0);
    json_decref(resp);
    resp = th_ok(a, "settle", params, &res);
    cr_assert_str_eq(th_str(res, "settled"), "repeated", "idempotent through Redis");
    json_decref(resp);
    /* the next two checks: one fits (150 + 200 <= 500), the next is refused */
    resp = th_ok(a, "check", CHECK, &res);
    cr_assert_str_eq(th_str(res, "decision"), "allow");
    snprintf(params, sizeof params, "{\"reservation\": \"%s\"}", th_str(res, "reservation"));
    json_decref(resp);
    resp = th_ok(a, "check", CHECK, &res);
    cr_assert_str_eq(th_str(res, "decision"), "refuse", "150 used + 200 held + 200 > 500");
    json_decref(resp);
    resp = th_ok(a, "cancel", params, &res);
    cr_assert(json_is_true(json_object_get(res, "released")));
    json_decref(resp);
    cr_assert_eq(th_redis_int(rc, "HGET %s h", COUNTER), 0,
                 "the cancel released the hold in Redis");
    cr_assert_eq(th_redis_int(rc, "HLEN {discern:}budgets"), 1, "the definition is in Redis");
    cr_assert_geq(th_redis_int(rc, "XLEN {discern:}journal"), 3, "decisions are journaled");
    struct stat st;
    cr_assert_neq(stat("redis:", &st), 0, "a file or folder named after the URL was created");
    redisFree(rc);
    th_client_free(a);
    cr_assert_eq(th_server_stop(&s), 0);
    th_server_cleanup(&s);
    th_redis_cleanup(&r);
}

/* How many EVALSHA the Redis at c ran since its last CONFIG RESETSTAT. */
static long long evalsha_calls(redisContext *c) {
    redisReply *rep = redisCommand(c, "INFO commandstats");
    cr_assert(rep && rep->type == REDIS_REPLY_STRING, "INFO commandstats");
    const char *at = strstr(rep->str, "cmdstat_evalsha:calls=");
    long long n = at ? strtoll(at + strlen("cmdstat_evalsha:calls="), NULL, 10) : 0;
    freeReplyObject(rep);
    return n;
}

/* Checks until one is allowed (the first may meet the definitions' first load). */
static void first_allowed_check(th_client *a) {
    bool allowed = false;
    char why[256] = "";
    for (int tries = 0; !allowed && tries < 200; tries++) {
        json_t *res, *resp = th_ok(a, "check", CHECK, &res);
        allowed = th_str_or_empty(res, "reservation")[0] != '\0';
        snprintf(why, sizeof why, "%s", th_str_or_empty(res, "reason"));
        json_decref(resp);
        if (!allowed) th_sleep_ms(10);
    }
    cr_assert(allowed, "no check was allowed: %s", why);
}

#define SETTLES 40

Test(integration_redis, a_settle_reply_reads_its_budget_states_in_the_settle_script) {
    th_redis r;
    th_server s;
    th_client *a = serve_on_redis(&r, &s, NULL);
    json_t *res, *resp = th_ok(a, "budget.set",
                               "{\"selector\": \"team:*\", \"metric\": \"tokens\", "
                               "\"window\": \"day\", \"limit\": 100000}",
                               &res);
    json_decref(resp);
    static char ids[SETTLES][64];
    /* the first checks may meet the definitions' first load (a 'stale' answer) */
    for (int i = 0, tries = 0; i < SETTLES && tries < 200; tries++) {
        resp = th_ok(a, "check", CHECK, &res);
        snprintf(ids[i], sizeof ids[i], "%s", th_str_or_empty(res, "reservation"));
        json_decref(resp);
        if (ids[i][0])
            i++;
        else
            th_sleep_ms(10);
    }
    cr_assert(ids[SETTLES - 1][0], "the checks were not all allowed");
    redisContext *rc = th_redis_connect(&r);
    th_redis_int(rc, "CONFIG RESETSTAT");
    int64_t t0 = th_now_ms();
    for (int i = 0; i < SETTLES; i++) {
        char params[256];
        snprintf(params, sizeof params,
                 "{\"reservation\": \"%.63s\", \"input_tokens\": 100, \"output_tokens\": 50}",
                 ids[i]);
        resp = th_ok(a, "settle", params, &res);
        json_t *b = budget_named(res, "tokens");
        cr_assert_eq(th_num(b, "used"), 150 * (i + 1), "the reply shows this settle's charge");
        cr_assert_eq(th_num(b, "held"), 200 * (SETTLES - i - 1));
        json_decref(resp);
    }
    long long calls = evalsha_calls(rc), sweeps = (th_now_ms() - t0) / 1000 + 2;
    /* one call per settle, and worker 0's once-a-second sweep meanwhile; a state read
     * of its own after each settle would make it 2 per settle */
    cr_assert(calls >= SETTLES && calls <= SETTLES + sweeps, "%lld script calls for %d settles",
              calls, SETTLES);
    redisFree(rc);
    th_client_free(a);
    cr_assert_eq(th_server_stop(&s), 0);
    th_server_cleanup(&s);
    th_redis_cleanup(&r);
}

/* The script calls of n checks in a row on one discernd (extra config) on r. */
static long long script_calls_of_checks(th_redis *r, const char *extra, int n,
                                        long long *elapsed_ms) {
    th_server s;
    start_on(&s, r, extra);
    cr_assert(healthz_becomes(&s, 200, 5000), "never healthy on Redis");
    th_client *a = th_connect_admin(&s);
    json_t *res;
    json_decref(th_ok(a, "budget.set",
                      "{\"selector\": \"team:*\", \"metric\": \"tokens\", "
                      "\"window\": \"day\", \"limit\": 1000000}",
                      &res));
    first_allowed_check(a);
    redisContext *rc = th_redis_connect(r);
    th_redis_int(rc, "CONFIG RESETSTAT");
    int64_t t0 = th_now_ms();
    for (int i = 0; i < n; i++) {
        json_t *resp = th_ok(a, "check", CHECK, &res);
        cr_assert_str_eq(th_str(res, "decision"), "allow", "%s", th_str_or_empty(res, "reason"));
        json_decref(resp);
    }
    long long calls = evalsha_calls(rc);
    *elapsed_ms = th_now_ms() - t0;
    redisFree(rc);
    th_client_free(a);
    cr_assert_eq(th_server_stop(&s), 0);
    th_server_cleanup(&s);
    return calls;
}

#define CHECKS 30

Test(integration_redis, checks_in_a_row_take_their_budget_states_from_the_last_reply) {
    th_redis r;
    th_redis_start(&r, NULL);
    long long ms, calls = script_calls_of_checks(&r, NULL, CHECKS, &ms);
    /* one reserve per check; the states come from the previous check's reserve reply
     * (younger than 100 ms), plus worker 0's sweep once a second */
    cr_assert(calls >= CHECKS && calls <= CHECKS + ms / 1000 + 2,
              "%lld script calls for %d checks in %lld ms", calls, CHECKS, ms);
    calls = script_calls_of_checks(&r, "redis_state_max_age_ms = 0", CHECKS, &ms);
    cr_assert_geq(calls, 2 * CHECKS, "with 0 every check reads its states: %lld calls", calls);
    th_redis_cleanup(&r);
}

Test(integration_redis, usage_charged_elsewhere_reaches_the_policies_within_the_max_age) {
    th_redis r;
    th_server s;
    th_client *a = serve_on_redis(&r, &s, "redis_state_max_age_ms = 200");
    json_t *res, *resp;
    json_decref(th_ok(a, "budget.set",
                      "{\"selector\": \"team:*\", \"metric\": \"tokens\", "
                      "\"window\": \"day\", \"limit\": 1000000}",
                      &res));
    first_allowed_check(a);
    /* another replica's charge, as Redis sees it: 5000 tokens used */
    redisContext *rc = th_redis_connect(&r);
    th_redis_int(rc, "HSET %s u 5000000000", COUNTER);
    resp = th_ok(a, "budget.get", "{" SUBJECT "}", &res);
    cr_assert_eq(th_num(budget_named(res, "tokens"), "used"), 5000, "budget.get reads now");
    json_decref(resp);
    th_sleep_ms(250);
    resp = th_ok(a, "check", CHECK, &res);
    cr_assert_eq(th_num(budget_named(res, "tokens"), "used"), 5000,
                 "a check's states older than the max age are read again: %g",
                 th_num(budget_named(res, "tokens"), "used"));
    json_decref(resp);
    redisFree(rc);
    th_client_free(a);
    cr_assert_eq(th_server_stop(&s), 0);
    th_server_cleanup(&s);
    th_redis_cleanup(&r);
}

Test(integration_redis, a_budget_and_its_usage_survive_a_replica_restart_in_redis) {
    th_redis r;
    th_server s;
    th_client *a = serve_on_redis(&r, &s, NULL);
    json_t *res, *resp = th_ok(a, "budget.set",
                               "{\"selector\": \"org:acme\", \"metric\": \"requests\", "
                               "\"window\": \"day\", \"limit\": 2}",
                               &res);
    json_decref(resp);
    json_decref(th_ok(a, "check", CHECK, &res));
    th_client_free(a);
    cr_assert_eq(th_server_stop(&s), 0);
    th_server_restart(&s, NULL);
    cr_assert(healthz_becomes(&s, 200, 5000));
    a = th_connect_admin(&s);
    bool loaded = false;
    for (int64_t end = th_now_ms() + 2000; !loaded && th_now_ms() < end; th_sleep_ms(20)) {
        resp = th_ok(a, "budget.list", "{}", &res);
        loaded = json_array_size(json_object_get(res, "budgets")) == 1;
        json_decref(resp);
    }
    cr_assert(loaded, "the definition was not read back from Redis");
    resp = th_ok(a, "budget.get", "{" SUBJECT "}", &res);
    cr_assert_eq(th_num(budget_named(res, "requests"), "held"), 1, "the hold outlived the replica");
    json_decref(resp);
    th_client_free(a);
    th_server_stop(&s);
    th_server_cleanup(&s);
    th_redis_cleanup(&r);
}

Test(integration_redis, a_malformed_redis_url_is_a_config_error_naming_the_part) {
    char out[4096];
    const char *args[] = {"--store", "redis://:s3cret@127.0.0.1:70000", NULL};
    int code = th_run_discernd(args, out, sizeof out);
    cr_assert_eq(code, 2, "exit %d: %s", code, out);
    cr_assert(strstr(out, "store: the port is not in [1, 65535]"), "%s", out);
    cr_assert(!strstr(out, "s3cret"), "the password was printed: %s", out);
}

/* The journal keeps a decision's fields packed, not as JSON (server/ledger_redis.c):
 * quotes, backslashes, control bytes and UTF-8 in them come back from
 * decisions.list as they went in, also inside the JSON text of its tags. */
Test(integration_redis, decisions_list_reads_back_every_byte_the_journal_escaped) {
    th_redis r;
    th_server s;
    th_client *a = serve_on_redis(&r, &s, NULL);
    json_t *res;
    json_decref(th_ok(a, "check",
                      "{\"subject\": {\"org\": \"acme\", \"team\": \"infra\", "
                      "\"user\": \"a\\\"n\\\\a\\u00e9\\u2713\"}, \"provider\": "
                      "\"openai\", \"model\": \"gpt-4o\", \"input_tokens\": 100, "
                      "\"output_tokens\": 100, \"purpose\": \"chat\", \"tags\": {\"ticket\": "
                      "\"T-\\\"1\\\\\\u0001\\n\\u00e9\"}}",
                      &res));
    json_t *rep = th_ok(a, "decisions.list", "{}", &res);
    json_t *row = json_array_get(json_object_get(res, "decisions"), 0);
    cr_assert_not_null(row, "no decision listed");
    cr_assert_str_eq(th_str(json_object_get(row, "subject"), "user"),
                     "a\"n\\a\xc3\xa9\xe2\x9c\x93");
    cr_assert_str_eq(th_str(json_object_get(row, "tags"), "ticket"), "T-\"1\\\x01\n\xc3\xa9");
    cr_assert_str_eq(th_str(row, "model"), "gpt-4o");
    json_decref(rep);
    th_client_free(a);
    cr_assert_eq(th_server_stop(&s), 0);
    th_server_cleanup(&s);
    th_redis_cleanup(&r);
}

/* A reserve carries at most 32 counters: a subject that 33 budgets apply to is
 * refused, naming the bound, and holds nothing. */
Test(integration_redis, a_subject_under_more_budgets_than_a_reserve_carries_is_refused) {
    th_redis r;
    th_server s;
    th_client *a = serve_on_redis(&r, &s, NULL);
    for (int i = 0; i < 33; i++) {
        char params[160];
        snprintf(params, sizeof params,
                 "{\"selector\": \"%s\", \"metric\": \"tokens\", \"window\": \"rolling:%dm\", "
                 "\"limit\": 100000}",
                 i % 2 ? "team:*" : "org:*", i + 1);
        json_t *res;
        json_decref(th_ok(a, "budget.set", params, &res));
    }
    th_fails(a, "check", CHECK, "too_large", "33 budgets apply, a Redis store takes at most 32");
    redisContext *rc = th_redis_connect(&r);
    cr_assert_eq(th_redis_int(rc, "ZCARD {discern:}hx"), 0, "nothing held");
    redisFree(rc);
    th_client_free(a);
    cr_assert_eq(th_server_stop(&s), 0);
    th_server_cleanup(&s);
    th_redis_cleanup(&r);
}
