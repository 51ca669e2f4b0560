/*
 * test_integration_replicas.c - several discernd on one Redis: the budget is one
 * budget, whichever replica a client reaches.
 *
 * Each test starts its own redis-server (redis_harness.c) and three discernd on it
 * (harness.c), all on loopback: eight clients spread over the replicas cannot
 * overshoot one budget; a hold taken through one replica is settled through
 * another and every replica reports the same used, the sum charged; a budget set
 * through one replica is in effect on the others within a second; the holds of a
 * replica killed with SIGKILL expire and are charged by the others' sweep while they
 * keep serving; Redis killed under load and restarted with appendfsync always: the
 * replicas fail closed (or open, counted), /healthz says 503, they recover without a
 * restart, and no acknowledged charge is lost.
 */
#include "harness.h"
#include "redis_harness.h"

#include <criterion/criterion.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>

TestSuite(integration_replicas, .fini = th_kill_live_redis, .timeout = 120);

#define REPLICAS 3
#define SUBJECT "\"subject\": {\"org\": \"acme\", \"team\": \"infra\", \"user\": \"ana\"}"
#define CHECK_TTL(ttl)                                                                             \
    "{" SUBJECT ", \"provider\": \"openai\", \"model\": \"gpt-4o\", \"input_tokens\": 100, "       \
    "\"output_tokens\": 100, \"purpose\": \"chat\", \"ttl_s\": " #ttl "}"
#define CHECK CHECK_TTL(60)

typedef struct cluster {
    th_redis redis;
    th_server s[REPLICAS];
} cluster;

static bool healthz_becomes(const th_server *s, int want, int ms) {
    for (int64_t end = th_now_ms() + ms; th_now_ms() < end; th_sleep_ms(20)) {
        int status = 0;
        free(th_http_get(s, "/healthz", &status));
        if (status == want) return true;
    }
    return false;
}

static void start_replica(cluster *k, int i, const char *extra) {
    th_server_prepare(&k->s[i]);
    th_redis_url(&k->redis, k->s[i].store, sizeof k->s[i].store);
    th_server_restart(&k->s[i], extra);
    cr_assert(healthz_becomes(&k->s[i], 200, 5000), "replica %d never healthy", i);
}

static void cluster_start(cluster *k, const char *redis_extra, const char *extra) {
    th_redis_start(&k->redis, redis_extra);
    for (int i = 0; i < REPLICAS; i++)
        start_replica(k, i, extra);
}

static void cluster_stop(cluster *k) {
    for (int i = 0; i < REPLICAS; i++) {
        if (k->s[i].pid > 0) th_server_stop(&k->s[i]);
        th_server_cleanup(&k->s[i]);
    }
    th_redis_cleanup(&k->redis);
}

static void set_budget(th_client *a, const char *metric, double limit) {
    char params[256];
    snprintf(params, sizeof params,
             "{\"selector\": \"org:acme\", \"metric\": \"%s\", \"window\": \"day\", "
             "\"limit\": %g}",
             metric, limit);
    json_t *res, *r = th_ok(a, "budget.set", params, &res);
    json_decref(r);
}

/* The budget of metric that applies to SUBJECT, as replica c reports it; NULL when
 * it has none. The reply is kept in *keep (the caller decrefs). */
static json_t *budget_state(th_client *c, const char *metric, json_t **keep) {
    json_t *res, *b;
    *keep = th_ok(c, "budget.get", "{" SUBJECT "}", &res);
    size_t i;
    json_array_foreach(json_object_get(res, "budgets"), i, b) {
        if (strcmp(th_str(b, "metric"), metric) == 0) return b;
    }
    return NULL;
}

/* Until every replica lists n budgets (bounded by ms); how long it took, or -1. */
static int64_t budgets_everywhere(cluster *k, th_client **c, size_t n, int ms) {
    int64_t t0 = th_now_ms();
    for (; th_now_ms() - t0 < ms; th_sleep_ms(10)) {
        int seen = 0;
        for (int i = 0; i < REPLICAS; i++) {
            json_t *res, *r = th_ok(c[i], "budget.list", "{}", &res);
            seen += json_array_size(json_object_get(res, "budgets")) == n;
            json_decref(r);
        }
        if (seen == REPLICAS) return th_now_ms() - t0;
    }
    (void)k;
    return -1;
}

static void connect_all(cluster *k, th_client **c) {
    for (int i = 0; i < REPLICAS; i++)
        c[i] = th_connect_admin(&k->s[i]);
}

static void free_all(th_client **c, int n) {
    for (int i = 0; i < n; i++)
        th_client_free(c[i]);
}

Test(integration_replicas, three_replicas_and_eight_clients_cannot_overshoot_one_budget) {
    cluster k;
    cluster_start(&k, NULL, "workers = 2\n");
    th_client *admin[REPLICAS];
    connect_all(&k, admin);
    set_budget(admin[0], "requests", 20);
    cr_assert_geq(budgets_everywhere(&k, admin, 1, 2000), 0);
    enum { CLIENTS = 8, ROUNDS = 10 };
    th_client *c[CLIENTS];
    for (int i = 0; i < CLIENTS; i++)
        c[i] = th_connect_admin(&k.s[i % REPLICAS]);
    int allowed = 0, refused = 0;
    uint32_t msgid = 1000;
    for (int round = 0; round < ROUNDS; round++) {
        for (int i = 0; i < CLIENTS; i++)
            th_send_request(c[i], msgid + (uint32_t)i, "check", CHECK);
        for (int i = 0; i < CLIENTS; i++) {
            json_t *r = th_read(c[i], 5000);
            cr_assert_not_null(r, "client %d: no reply", i);
            json_t *res = th_result(r);
            cr_assert_not_null(res, "client %d: %s", i, th_error_message(r));
            if (strcmp(th_str(res, "decision"), "allow") == 0)
                allowed++;
            else
                refused++;
            json_decref(r);
        }
        msgid += CLIENTS;
    }
    cr_assert_eq(allowed, 20, "%d allowed over a budget of 20 requests (%d refused)", allowed,
                 refused);
    for (int i = 0; i < REPLICAS; i++) {
        json_t *keep, *b = budget_state(admin[i], "requests", &keep);
        cr_assert_not_null(b);
        cr_assert_eq(th_num(b, "held"), 20, "replica %d sees %g held", i, th_num(b, "held"));
        json_decref(keep);
    }
    free_all(c, CLIENTS);
    free_all(admin, REPLICAS);
    cluster_stop(&k);
}

Test(integration_replicas,
     holds_settled_through_another_replica_leave_every_replica_the_same_used) {
    cluster k;
    cluster_start(&k, NULL, NULL);
    th_client *c[REPLICAS];
    connect_all(&k, c);
    set_budget(c[0], "tokens", 1e6);
    cr_assert_geq(budgets_everywhere(&k, c, 1, 2000), 0);
    double charged = 0;
    for (int i = 0; i < 6; i++) {
        json_t *res, *r = th_ok(c[i % REPLICAS], "check", CHECK, &res);
        cr_assert_str_eq(th_str(res, "decision"), "allow");
        char params[256];
        int out = 10 * (i + 1);
        snprintf(params, sizeof params,
                 "{\"reservation\": \"%s\", \"input_tokens\": 100, \"output_tokens\": %d}",
                 th_str(res, "reservation"), out);
        json_decref(r);
        r = th_ok(c[(i + 1) % REPLICAS], "settle", params, &res);
        cr_assert_str_eq(th_str(res, "settled"), "reserved", "settled through another replica");
        charged += th_num(json_object_get(res, "charged"), "tokens");
        json_decref(r);
        r = th_ok(c[(i + 2) % REPLICAS], "settle", params, &res);
        cr_assert_str_eq(th_str(res, "settled"), "repeated", "a third replica sees the settle");
        json_decref(r);
    }
    cr_assert_eq(charged, 6 * 100 + 10 * (1 + 2 + 3 + 4 + 5 + 6));
    for (int i = 0; i < REPLICAS; i++) {
        json_t *keep, *b = budget_state(c[i], "tokens", &keep);
        cr_assert_not_null(b);
        cr_assert_eq(th_num(b, "used"), charged, "replica %d: used %g, charged %g", i,
                     th_num(b, "used"), charged);
        cr_assert_eq(th_num(b, "held"), 0);
        json_decref(keep);
    }
    free_all(c, REPLICAS);
    cluster_stop(&k);
}

Test(integration_replicas, a_budget_change_through_one_replica_is_in_effect_on_all_within_1s) {
    cluster k;
    cluster_start(&k, NULL, NULL);
    th_client *c[REPLICAS];
    connect_all(&k, c);
    set_budget(c[1], "requests", 5);
    int64_t ms = budgets_everywhere(&k, c, 1, 1000);
    cr_assert_geq(ms, 0, "a new budget did not reach every replica within 1 s");
    /* a lower limit set through replica 2 refuses on replica 0 within a second */
    json_t *res, *r = th_ok(c[0], "check", CHECK, &res);
    cr_assert_str_eq(th_str(res, "decision"), "allow");
    json_decref(r);
    set_budget(c[2], "requests", 1);
    bool refused = false;
    int64_t t0 = th_now_ms();
    while (!refused && th_now_ms() - t0 < 1000) {
        r = th_call(c[0], "check", CHECK);
        res = th_result(r);
        refused = res && strcmp(th_str(res, "decision"), "refuse") == 0;
        json_decref(r);
        if (!refused) th_sleep_ms(10);
    }
    cr_assert(refused, "the lower limit was not in effect on replica 0 within 1 s");
    free_all(c, REPLICAS);
    cluster_stop(&k);
}

Test(integration_replicas, a_killed_replicas_holds_expire_charged_by_the_others_sweep) {
    cluster k;
    cluster_start(&k, NULL, NULL);
    th_client *c[REPLICAS];
    connect_all(&k, c);
    set_budget(c[0], "requests", 100);
    cr_assert_geq(budgets_everywhere(&k, c, 1, 2000), 0);
    for (int i = 0; i < 3; i++) {
        json_t *res, *r = th_ok(c[0], "check", CHECK_TTL(1), &res);
        cr_assert_str_eq(th_str(res, "decision"), "allow");
        json_decref(r);
    }
    th_client_free(c[0]);
    kill(k.s[0].pid, SIGKILL);
    waitpid(k.s[0].pid, NULL, 0);
    k.s[0].pid = 0;
    json_t *keep, *b = budget_state(c[1], "requests", &keep);
    cr_assert_eq(th_num(b, "held"), 3, "the dead replica's holds are still held");
    json_decref(keep);
    bool swept = false;
    for (int64_t end = th_now_ms() + 4000; !swept && th_now_ms() < end; th_sleep_ms(50)) {
        b = budget_state(c[2], "requests", &keep);
        swept = th_num(b, "held") == 0 && th_num(b, "used") == 3;
        json_decref(keep);
    }
    cr_assert(swept, "the holds of the killed replica were not expired and charged");
    json_t *res, *r = th_ok(c[1], "check", CHECK, &res);
    cr_assert_str_eq(th_str(res, "decision"), "allow", "the others keep serving");
    json_decref(r);
    th_client_free(c[1]);
    th_client_free(c[2]);
    cluster_stop(&k);
}

/* check + settle of tokens through c until Redis fails; the acknowledged total. */
static double charge_until_failure(th_client *c, int max, int *failures) {
    double acked = 0;
    for (int i = 0; i < max && *failures == 0; i++) {
        json_t *r = th_call(c, "check", CHECK);
        json_t *res = th_result(r);
        if (!res || !json_object_get(res, "reservation")) {
            cr_assert_str_eq(th_error_code(r), "store_unavailable", "%s", th_error_message(r));
            (*failures)++;
            json_decref(r);
            break;
        }
        char params[256];
        snprintf(params, sizeof params,
                 "{\"reservation\": \"%s\", \"input_tokens\": 100, \"output_tokens\": 100}",
                 th_str(res, "reservation"));
        json_decref(r);
        r = th_call(c, "settle", params);
        if (th_result(r))
            acked += th_num(json_object_get(th_result(r), "charged"), "tokens");
        else
            (*failures)++;
        json_decref(r);
    }
    return acked;
}

Test(integration_replicas, redis_killed_under_load_fails_closed_then_recovers_losing_no_charge) {
    cluster k;
    cluster_start(&k, "appendonly yes\nappendfsync always\n", NULL);
    th_client *c[REPLICAS];
    connect_all(&k, c);
    set_budget(c[0], "tokens", 1e9);
    cr_assert_geq(budgets_everywhere(&k, c, 1, 2000), 0);
    int failures = 0;
    double acked = charge_until_failure(c[1], 50, &failures);
    cr_assert_eq(failures, 0);
    th_redis_kill9(&k.redis);
    double more = charge_until_failure(c[1], 20, &failures);
    cr_assert_gt(failures, 0, "no call failed with Redis dead");
    acked += more;
    json_t *r = th_call(c[2], "check", CHECK);
    cr_assert_str_eq(th_error_code(r), "store_unavailable", "fail closed: %s", th_error_message(r));
    json_decref(r);
    cr_assert(healthz_becomes(&k.s[2], 503, 3000), "/healthz did not say 503 with Redis down");
    th_redis_restart(&k.redis);
    for (int i = 0; i < REPLICAS; i++)
        cr_assert(healthz_becomes(&k.s[i], 200, 8000), "replica %d did not recover", i);
    failures = 0;
    acked += charge_until_failure(c[1], 10, &failures);
    cr_assert_eq(failures, 0, "serving again after the restart");
    json_t *keep, *b = budget_state(c[0], "tokens", &keep);
    cr_assert_not_null(b, "the budget definition survived the restart");
    /* a settle whose reply was lost may have been applied: at most one such */
    cr_assert_geq(th_num(b, "used"), acked, "used %g < acknowledged %g", th_num(b, "used"), acked);
    cr_assert_leq(th_num(b, "used"), acked + 200, "used %g, acknowledged %g", th_num(b, "used"),
                  acked);
    json_decref(keep);
    free_all(c, REPLICAS);
    cluster_stop(&k);
}

Test(integration_replicas, with_failure_mode_open_a_dead_redis_allows_unenforced_and_counts_it) {
    cluster k;
    th_redis_start(&k.redis, NULL);
    start_replica(&k, 0, "failure_mode = \"open\"\n");
    th_client *c = th_connect_admin(&k.s[0]);
    json_t *res, *r = th_ok(c, "budget.set",
                            "{\"selector\": \"org:acme\", \"metric\": \"requests\", "
                            "\"window\": \"day\", \"limit\": 5}",
                            &res);
    json_decref(r);
    th_redis_kill9(&k.redis);
    cr_assert(healthz_becomes(&k.s[0], 503, 3000));
    r = th_ok(c, "check", CHECK, &res);
    cr_assert_str_eq(th_str(res, "decision"), "allow");
    cr_assert(json_is_true(json_object_get(res, "unenforced")), "an allow without the store");
    json_decref(r);
    int status = 0;
    char *metrics = th_http_get(&k.s[0], "/metrics", &status);
    cr_assert(strstr(metrics, "discern_store_up 0"), "%s", metrics);
    const char *u = strstr(metrics, "\ndiscern_unenforced_total ");
    cr_assert_not_null(u, "no unenforced counter in /metrics");
    cr_assert_eq(atoi(u + strlen("\ndiscern_unenforced_total ")), 1);
    cr_assert_null(strstr(metrics, "discern_budget_used{"),
                   "a replica exported counters it cannot know: %s", metrics);
    free(metrics);
    th_client_free(c);
    th_server_stop(&k.s[0]);
    th_server_cleanup(&k.s[0]);
    th_redis_cleanup(&k.redis);
}

/* auth with token on s, retried for up to ms (a key reaches the others by pub/sub). */
static th_client *auth_within(const th_server *s, const char *token, int ms) {
    char params[160];
    snprintf(params, sizeof params, "{\"token\": \"%s\"}", token);
    for (int64_t end = th_now_ms() + ms; th_now_ms() < end; th_sleep_ms(10)) {
        th_client *c = th_connect_tcp(s);
        json_t *r = th_call(c, "auth", params);
        bool ok = th_result(r) != NULL;
        json_decref(r);
        if (ok) return c;
        th_client_free(c);
    }
    return NULL;
}

Test(integration_replicas, a_key_made_through_one_replica_works_on_another_until_revoked) {
    cluster k;
    cluster_start(&k, NULL, NULL);
    char token[72], id[24];
    th_create_key(&k.s[0], "client", "org:acme", token, id);
    redisContext *rc = th_redis_connect(&k.redis);
    cr_assert_eq(th_redis_int(rc, "HLEN {discern:}keys"), 1, "the key is in Redis");
    redisFree(rc);
    th_client *c = auth_within(&k.s[1], token, 1000);
    cr_assert_not_null(c, "a key made on replica 0 did not authenticate on replica 1 in 1 s");
    json_t *res, *r = th_ok(c, "check", CHECK, &res);
    cr_assert_str_eq(th_str(res, "decision"), "allow");
    json_decref(r);
    th_client *a = th_connect_admin(&k.s[2]);
    char params[96];
    snprintf(params, sizeof params, "{\"key_id\": \"%s\"}", id);
    json_decref(th_ok(a, "key.revoke", params, &res));
    bool refused = false;
    for (int64_t end = th_now_ms() + 1000; !refused && th_now_ms() < end; th_sleep_ms(10)) {
        r = th_call(c, "check", CHECK);
        refused = strcmp(th_error_code(r), "unauthorized") == 0;
        json_decref(r);
    }
    cr_assert(refused, "a key revoked on replica 2 still worked on replica 1 after 1 s");
    th_client_free(a);
    th_client_free(c);
    cluster_stop(&k);
}

static size_t decisions_count(th_client *c, const char *params, json_t **next) {
    json_t *res, *r = th_ok(c, "decisions.list", params, &res);
    size_t n = json_array_size(json_object_get(res, "decisions"));
    if (next) *next = json_incref(json_object_get(res, "next"));
    json_decref(r);
    return n;
}

Test(integration_replicas, one_decisions_query_answers_for_the_decisions_of_every_replica) {
    cluster k;
    cluster_start(&k, NULL, NULL);
    th_client *c[REPLICAS];
    connect_all(&k, c);
    json_t *res, *r = th_ok(c[0], "check", CHECK, &res);
    char resv[64];
    snprintf(resv, sizeof resv, "%s", th_str(res, "reservation"));
    json_decref(r);
    json_decref(th_ok(c[1], "check", CHECK, &res));
    json_decref(th_ok(c[1], "check",
                      "{" SUBJECT ", \"provider\": \"openai\", \"model\": \"gpt-4o\", "
                      "\"output_tokens\": 10, \"purpose\": \"spam\"}",
                      &res));
    cr_assert_eq(decisions_count(c[2], "{}", NULL), 3, "replica 2 lists every replica's");
    cr_assert_eq(decisions_count(c[2], "{\"outcome\": \"refuse\"}", NULL), 1);
    cr_assert_eq(decisions_count(c[2], "{\"subject\": {\"team\": \"other\"}}", NULL), 0);
    r = th_ok(c[2], "decisions.list", "{\"limit\": 1}", &res);
    json_t *first = json_array_get(json_object_get(res, "decisions"), 0);
    cr_assert_str_eq(th_str(first, "reservation"), resv, "oldest first, with its hold");
    cr_assert_str_eq(th_str(first, "model"), "gpt-4o");
    char params[96];
    snprintf(params, sizeof params, "{\"after\": %lld}",
             (long long)json_integer_value(json_object_get(res, "next")));
    json_decref(r);
    json_t *next;
    cr_assert_eq(decisions_count(c[2], params, &next), 2, "the next page has the other two");
    cr_assert(json_is_null(next));
    json_decref(next);
    free_all(c, REPLICAS);
    cluster_stop(&k);
}

Test(integration_replicas, checks_on_one_replica_never_see_store_unavailable_for_budget_changes) {
    cluster k;
    cluster_start(&k, NULL, "workers = 2\n");
    th_client *c[REPLICAS];
    connect_all(&k, c);
    set_budget(c[0], "requests", 30);
    cr_assert_geq(budgets_everywhere(&k, c, 1, 2000), 0);
    enum { CLIENTS = 4, ROUNDS = 40 };
    th_client *b[CLIENTS];
    for (int i = 0; i < CLIENTS; i++)
        b[i] = th_connect_admin(&k.s[1]);
    int allowed = 0;
    uint32_t msgid = 5000;
    for (int round = 0; round < ROUNDS; round++) {
        /* a change through replica 0 while replica 1's clients check: every check
         * races the definitions' reload */
        char params[256];
        snprintf(params, sizeof params,
                 "{\"selector\": \"user:*\", \"metric\": \"gco2e\", \"window\": \"day\", "
                 "\"limit\": %d}",
                 1000 + round);
        th_send_request(c[0], msgid, "budget.set", params);
        for (int i = 0; i < CLIENTS; i++)
            th_send_request(b[i], msgid + 1 + (uint32_t)i, "check", CHECK);
        json_t *r = th_read(c[0], 5000);
        cr_assert_not_null(th_result(r), "budget.set: %s", th_error_message(r));
        json_decref(r);
        for (int i = 0; i < CLIENTS; i++) {
            r = th_read(b[i], 5000);
            cr_assert_not_null(r, "client %d: no reply", i);
            json_t *res = th_result(r);
            cr_assert_not_null(res, "round %d client %d: %s %s", round, i, th_error_code(r),
                               th_error_message(r));
            allowed += strcmp(th_str(res, "decision"), "allow") == 0;
            json_decref(r);
        }
        msgid += CLIENTS + 1;
    }
    cr_assert_eq(allowed, 30, "%d allowed over a budget of 30 requests", allowed);
    json_t *keep, *st = budget_state(c[2], "requests", &keep);
    cr_assert_not_null(st);
    cr_assert_eq(th_num(st, "held") + th_num(st, "used"), 30);
    json_decref(keep);
    free_all(b, CLIENTS);
    free_all(c, REPLICAS);
    cluster_stop(&k);
}

#define CHECK_REQ                                                                                  \
    "{" SUBJECT ", \"provider\": \"openai\", \"model\": \"gpt-4o\", \"input_tokens\": 100, "       \
    "\"output_tokens\": 100, \"purpose\": \"chat\", \"request_id\": \"req-7\"}"

/* The same check (one request_id) through a then b: how many decisions the journal
 * lists through b afterwards, each of them naming the first reservation. */
static size_t repeated_request_journal(th_client *a, th_client *b) {
    json_t *res, *r = th_ok(a, "check", CHECK_REQ, &res);
    char first[64];
    snprintf(first, sizeof first, "%s", th_str(res, "reservation"));
    json_decref(r);
    r = th_ok(b, "check", CHECK_REQ, &res);
    cr_assert_str_eq(th_str(res, "reservation"), first, "a repeat answers the first hold");
    json_decref(r);
    r = th_ok(b, "decisions.list", "{}", &res);
    json_t *d, *list = json_object_get(res, "decisions");
    size_t i, n = json_array_size(list);
    json_array_foreach(list, i, d) {
        cr_assert_str_eq(th_str(d, "outcome"), "allow");
        cr_assert_str_eq(th_str(d, "reservation"), first, "decision %zu names the first hold", i);
    }
    json_decref(r);
    return n;
}

Test(integration_replicas, a_repeated_request_id_is_journaled_naming_the_first_hold_as_on_sqlite) {
    th_server sq;
    th_server_start(&sq, NULL);
    th_client *a = th_connect_admin(&sq), *b = th_connect_admin(&sq);
    size_t on_sqlite = repeated_request_journal(a, b);
    th_client_free(a);
    th_client_free(b);
    th_server_stop(&sq);
    th_server_cleanup(&sq);
    cr_assert_eq(on_sqlite, 2, "the SQLite store journals both decisions");
    cluster k;
    cluster_start(&k, NULL, NULL);
    th_client *c[REPLICAS];
    connect_all(&k, c);
    cr_assert_eq(repeated_request_journal(c[0], c[1]), on_sqlite,
                 "the Redis store journals what the SQLite store does");
    free_all(c, REPLICAS);
    cluster_stop(&k);
}

/* A check of user (team) for model and purpose through c; its reservation into resv. */
static void check_for(th_client *c, const char *team, const char *user, const char *model,
                      const char *purpose, int ttl_s, char resv[64]) {
    char params[512];
    snprintf(params, sizeof params,
             "{\"subject\": {\"org\": \"acme\", \"team\": \"%s\", \"user\": \"%s\"}, "
             "\"provider\": \"openai\", \"model\": \"%s\", \"input_tokens\": 100, "
             "\"output_tokens\": 200, \"purpose\": \"%s\", \"ttl_s\": %d}",
             team, user, model, purpose, ttl_s);
    json_t *res, *r = th_ok(c, "check", params, &res);
    cr_assert_str_eq(th_str(res, "decision"), "allow");
    snprintf(resv, 64, "%s", th_str(res, "reservation"));
    json_decref(r);
}

/* Settle resv with output_tokens through c; the kind of settle it was into kind. */
static void settle_kind(th_client *c, const char *resv, int output_tokens, char kind[16]) {
    char params[256];
    snprintf(params, sizeof params,
             "{\"reservation\": \"%s\", \"input_tokens\": 100, \"output_tokens\": %d}", resv,
             output_tokens);
    json_t *res, *r = th_ok(c, "settle", params, &res);
    snprintf(kind, 16, "%s", th_str(res, "settled"));
    json_decref(r);
}

static void settle_out(th_client *c, const char *resv, int output_tokens) {
    char kind[16];
    settle_kind(c, resv, output_tokens, kind);
}

/* The charges of the report comparison, through a and b (two replicas, or one
 * server twice), and two one-second holds that expire: the first one's reservation
 * is in late. */
static void report_charges(th_client *a, th_client *b, char late[64]) {
    char resv[64];
    check_for(a, "infra", "ana", "gpt-4o", "chat", 60, resv);
    settle_out(b, resv, 50);
    check_for(b, "infra", "bob", "gpt-4o-mini", "code-review", 60, resv);
    settle_out(a, resv, 120);
    check_for(a, "data", "cy", "gpt-4o", "chat", 60, resv);
    settle_out(a, resv, 300);
    json_t *res; /* an unreserved settle: charged to the subject given */
    json_decref(th_ok(b, "settle",
                      "{\"reservation\": \"own-1\", \"subject\": {\"org\": \"acme\", \"team\": "
                      "\"data\", \"user\": \"cy\"}, \"provider\": \"openai\", \"model\": "
                      "\"gpt-4o\", \"input_tokens\": 10, \"output_tokens\": 20}",
                      &res));
    check_for(b, "infra", "dan", "gpt-4o", "chat", 1, late);     /* expires, charged */
    check_for(a, "data", "eve", "gpt-4o-mini", "chat", 1, resv); /* expires, never settled */
}

static json_t *report_rows(th_client *c, const char *by, const char *metric) {
    char params[128];
    snprintf(params, sizeof params, "{\"by\": \"%s\", \"period\": \"day\", \"metric\": \"%s\"}", by,
             metric);
    json_t *res, *r = th_ok(c, "report", params, &res);
    json_t *rows = json_incref(json_object_get(res, "rows"));
    json_decref(r);
    return rows;
}

Test(integration_replicas, a_report_through_any_replica_gives_what_the_sqlite_store_gives) {
    th_server sq;
    th_server_start(&sq, NULL);
    th_client *sa = th_connect_admin(&sq), *sb = th_connect_admin(&sq);
    cluster k;
    cluster_start(&k, NULL, NULL);
    th_client *c[REPLICAS];
    connect_all(&k, c);
    char late_sq[64], late_rd[64];
    report_charges(sa, sb, late_sq);
    report_charges(c[0], c[1], late_rd);
    th_sleep_ms(2600); /* both one-second holds expire and are charged */
    json_t *res;
    json_decref(th_ok(sa, "check", CHECK, &res)); /* the SQLite ledger expires on its calls */
    json_decref(th_ok(c[0], "check", CHECK, &res));
    char kind[2][16]; /* late: the difference to what the expiry charged */
    settle_kind(sb, late_sq, 10, kind[0]);
    settle_kind(c[1], late_rd, 10, kind[1]);
    cr_assert_str_eq(kind[0], "late", "the SQLite store expired the hold");
    cr_assert_str_eq(kind[1], "late", "the Redis store expired the hold");
    th_sleep_ms(300); /* the SQLite writer's last commit */
    static const char *const bys[] = {"team", "user", "model", "purpose"};
    static const char *const metrics[] = {"tokens", "gco2e", "requests", "energy_wh"};
    for (int i = 0; i < 4; i++)
        for (int m = 0; m < 4; m++) {
            json_t *want = report_rows(sa, bys[i], metrics[m]);
            json_t *got = report_rows(c[2], bys[i], metrics[m]);
            char *w = json_dumps(want, JSON_COMPACT), *g = json_dumps(got, JSON_COMPACT);
            cr_assert(json_array_size(want) > 0);
            cr_assert(json_equal(want, got), "by %s of %s: SQLite %s, Redis %s", bys[i], metrics[m],
                      w, g);
            free(w);
            free(g);
            json_decref(want);
            json_decref(got);
        }
    th_client_free(sa);
    th_client_free(sb);
    th_server_stop(&sq);
    th_server_cleanup(&sq);
    free_all(c, REPLICAS);
    cluster_stop(&k);
}

/* The used of the budget of window that applies to ana of team infra, through c,
 * once c has it (bounded: 1 s, then -1). */
static double used_of(th_client *c, const char *window) {
    double used = -1;
    for (int64_t end = th_now_ms() + 1000; used < 0 && th_now_ms() < end;) {
        json_t *res, *b, *r = th_ok(c, "budget.get", "{" SUBJECT "}", &res);
        size_t i;
        json_array_foreach(json_object_get(res, "budgets"), i, b) {
            if (strcmp(th_str(b, "window"), window) == 0) used = th_num(b, "used");
        }
        json_decref(r);
        if (used < 0) th_sleep_ms(10);
    }
    return used;
}

/* Charges through a and b, then two new budgets of team infra through b: what they
 * count as used, as used[0] (day) and used[1] (rolling:2h). */
static void new_budgets_after_charges(th_client *a, th_client *b, double used[2]) {
    char resv[64];
    check_for(a, "infra", "ana", "gpt-4o", "chat", 60, resv);
    settle_out(b, resv, 50);
    check_for(b, "infra", "bob", "gpt-4o-mini", "chat", 60, resv);
    settle_out(a, resv, 120);
    check_for(a, "data", "cy", "gpt-4o", "chat", 60, resv); /* another team: not counted */
    settle_out(a, resv, 300);
    th_sleep_ms(300); /* the SQLite writer's commit: a new budget replays what is stored */
    json_t *res;
    json_decref(th_ok(b, "budget.set",
                      "{\"selector\": \"team:infra\", \"metric\": \"tokens\", \"window\": "
                      "\"day\", \"limit\": 1000000}",
                      &res));
    json_decref(th_ok(b, "budget.set",
                      "{\"selector\": \"team:infra\", \"metric\": \"tokens\", \"window\": "
                      "\"rolling:2h\", \"limit\": 1000000}",
                      &res));
    used[0] = used_of(a, "day");
    used[1] = used_of(a, "rolling:2h");
}

Test(integration_replicas, a_new_budget_counts_its_windows_usage_so_far_as_on_sqlite) {
    th_server sq;
    th_server_start(&sq, NULL);
    th_client *sa = th_connect_admin(&sq), *sb = th_connect_admin(&sq);
    double want[2];
    new_budgets_after_charges(sa, sb, want);
    th_client_free(sa);
    th_client_free(sb);
    th_server_stop(&sq);
    th_server_cleanup(&sq);
    cr_assert_eq(want[0], 100 + 50 + 100 + 120, "SQLite counts the day so far: %g", want[0]);
    cr_assert_eq(want[1], want[0]);
    cluster k;
    cluster_start(&k, NULL, NULL);
    th_client *c[REPLICAS];
    connect_all(&k, c);
    double got[2];
    new_budgets_after_charges(c[0], c[1], got);
    cr_assert_eq(got[0], want[0], "day: Redis %g, SQLite %g", got[0], want[0]);
    cr_assert_eq(got[1], want[1], "rolling:2h: Redis %g, SQLite %g", got[1], want[1]);
    cr_assert_eq(used_of(c[2], "day"), want[0], "every replica reads the same counter");
    free_all(c, REPLICAS);
    cluster_stop(&k);
}

/* The admin journal through c once it lists n changes (bounded: 1 s); kept in *keep. */
static json_t *changes_within(th_client *c, size_t n, json_t **keep) {
    json_t *res = NULL;
    *keep = NULL;
    for (int64_t end = th_now_ms() + 1000; th_now_ms() < end; th_sleep_ms(10)) {
        json_decref(*keep);
        *keep = th_ok(c, "admin_journal.list", "{}", &res);
        if (json_array_size(json_object_get(res, "changes")) >= n) break;
    }
    return json_object_get(res, "changes");
}

/* A key made through a, a budget set through b and deleted through a again. */
static void admin_changes(const th_server *a_srv, th_client *a, th_client *b, char id[24]) {
    char token[72];
    th_create_key(a_srv, "client", "org:acme", token, id);
    json_t *res;
    json_decref(th_ok(b, "budget.set",
                      "{\"selector\": \"team:infra\", \"metric\": \"tokens\", \"window\": "
                      "\"day\", \"limit\": 1000}",
                      &res));
    size_t seen = 0; /* a replica has another's change within a second */
    for (int64_t end = th_now_ms() + 1000; seen == 0 && th_now_ms() < end; th_sleep_ms(10)) {
        json_t *r = th_ok(a, "budget.list", "{}", &res);
        seen = json_array_size(json_object_get(res, "budgets"));
        json_decref(r);
    }
    json_decref(th_ok(a, "budget.delete",
                      "{\"selector\": \"team:infra\", \"metric\": \"tokens\", \"window\": "
                      "\"day\"}",
                      &res));
}

static void assert_changes(json_t *changes, const char *key_id, const char *store) {
    static const char *const actions[] = {"key.create", "budget.set", "budget.delete"};
    const char *targets[] = {key_id, "team:infra", "team:infra"};
    cr_assert_eq(json_array_size(changes), 3, "%s: %zu changes", store, json_array_size(changes));
    for (size_t i = 0; i < 3; i++) {
        json_t *ch = json_array_get(changes, i);
        cr_assert_str_eq(th_str(ch, "action"), actions[i], "%s: change %zu", store, i);
        cr_assert_str_eq(th_str(ch, "target"), targets[i], "%s: change %zu", store, i);
        cr_assert_str_eq(th_str(ch, "by_key"), "admin", "%s: change %zu", store, i);
    }
    cr_assert_str_eq(th_str(json_array_get(changes, 1), "detail"),
                     "metric=tokens window=day limit=1000");
}

Test(integration_replicas, the_admin_journal_of_any_replica_lists_the_changes_made_through_all) {
    th_server sq;
    th_server_start(&sq, NULL);
    th_client *sa = th_connect_admin(&sq), *sb = th_connect_admin(&sq);
    char id[24];
    admin_changes(&sq, sa, sb, id);
    json_t *keep;
    assert_changes(changes_within(sa, 3, &keep), id, "SQLite");
    json_decref(keep);
    th_client_free(sa);
    th_client_free(sb);
    th_server_stop(&sq);
    th_server_cleanup(&sq);
    cluster k;
    cluster_start(&k, NULL, NULL);
    th_client *c[REPLICAS];
    connect_all(&k, c);
    admin_changes(&k.s[0], c[0], c[1], id);
    for (int i = 0; i < REPLICAS; i++) {
        assert_changes(changes_within(c[i], 3, &keep), id, "Redis");
        json_decref(keep);
    }
    json_t *res, *r = th_ok(c[2], "admin_journal.list", "{\"limit\": 2}", &res);
    cr_assert_eq(json_array_size(json_object_get(res, "changes")), 2);
    char params[64];
    snprintf(params, sizeof params, "{\"after\": %lld}",
             (long long)json_integer_value(json_object_get(res, "next")));
    json_decref(r);
    r = th_ok(c[2], "admin_journal.list", params, &res);
    json_t *rest = json_object_get(res, "changes");
    cr_assert_eq(json_array_size(rest), 1, "the next page has the last change");
    cr_assert_str_eq(th_str(json_array_get(rest, 0), "action"), "budget.delete");
    cr_assert(json_is_null(json_object_get(res, "next")));
    json_decref(r);
    free_all(c, REPLICAS);
    cluster_stop(&k);
}
