/*
 * test_store_redis.c - the Redis ledger store: the scripts of server/redis/ run by a
 * real redis-server (tests/server/redis_harness.c) through server/store_redis.c,
 * each "replica" a connection on its own event loop.
 *
 * What is shown: a hold is all or nothing over every counter; request ids and
 * repeated settles answer the same through any replica; eight clients on their own
 * loops cannot overshoot one budget; expired holds are finished exactly once by
 * competing sweepers; calendar windows reset at the instants core/window.c
 * computes, by Redis's clock; a stale budgets version is refused; budget changes
 * reach every subscriber within 1 s; NOSCRIPT reloads; Redis killed, paused or
 * refusing the password fails calls with store_unavailable and the connection
 * comes back without a restart; with appendfsync always, kill -9 of Redis loses no
 * acknowledged charge.
 */
#include "redis_harness.h"
#include "store_redis.h"

#include "discern/window.h"

#include <criterion/criterion.h>
#include <event2/event.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

TestSuite(store_redis, .fini = th_kill_live_redis, .timeout = 120);

#define KEY0 "{discern:}ver"

/* ------------------------------------------------------------------ helpers -- */

static long long mono_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

typedef struct replica {
    struct event_base *base;
    dsc__redis *r;
    dsc__store_url url;
    int ready_changes;      /* on_ready calls */
    long long budgets_seen; /* last version from the subscription */
} replica;

static void on_ready(void *ud, bool ready) {
    (void)ready;
    ((replica *)ud)->ready_changes++;
}

static void on_budgets(void *ud, int64_t version) {
    if (version > 0) ((replica *)ud)->budgets_seen = version;
}

static void nap_ms(int ms) {
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static void spin(replica *p, int ms) {
    for (long long end = mono_ms() + ms; mono_ms() < end; nap_ms(1))
        event_base_loop(p->base, EVLOOP_NONBLOCK);
}

static bool wait_ready(replica *p, int ms) {
    for (long long end = mono_ms() + ms; mono_ms() < end; nap_ms(1)) {
        event_base_loop(p->base, EVLOOP_NONBLOCK);
        if (dsc__redis_ready(p->r)) return true;
    }
    return false;
}

static void replica_open_url(replica *p, const char *url, int timeout_ms, bool subscribe) {
    memset(p, 0, sizeof *p);
    dsc_error err = {0};
    cr_assert_eq(dsc__store_url_parse("store", url, &p->url, &err), DSC_OK, "%s", err.message);
    p->base = event_base_new();
    cr_assert_not_null(p->base);
    dsc__redis_config cfg = {.url = &p->url,
                             .timeout_ms = timeout_ms,
                             .backoff_min_ms = 20,
                             .backoff_max_ms = 200,
                             .on_ready = on_ready,
                             .on_budgets = subscribe ? on_budgets : NULL,
                             .ud = p};
    p->r = dsc__redis_new(p->base, &cfg, &err);
    cr_assert_not_null(p->r, "%s", err.message);
}

static void replica_open(replica *p, const th_redis *srv) {
    char url[128];
    th_redis_url(srv, url, sizeof url);
    replica_open_url(p, url, 1000, false);
    cr_assert(wait_ready(p, 5000), "not ready: %s", dsc__redis_last_error(p->r));
}

static void replica_close(replica *p) {
    dsc__redis_free(p->r);
    event_base_free(p->base);
}

/* An answer, copied out of the borrowed reply. */
typedef struct answer {
    bool done;
    dsc_status st;
    bool error;
    char message[256];
    int n;
    char el[48][48];
} answer;

static void on_answer(void *ud, dsc_status st, const redisReply *rep, const char *message) {
    answer *a = ud;
    a->done = true;
    a->st = st;
    snprintf(a->message, sizeof a->message, "%s", message);
    if (!rep) return;
    a->error = rep->type == REDIS_REPLY_ERROR;
    if (a->error) snprintf(a->message, sizeof a->message, "%s", rep->str);
    for (size_t i = 0; rep->type == REDIS_REPLY_ARRAY && i < rep->elements && i < 48; i++) {
        const redisReply *e = rep->element[i];
        if (e->type == REDIS_REPLY_INTEGER)
            snprintf(a->el[i], sizeof a->el[i], "%lld", e->integer);
        else if (e->type == REDIS_REPLY_STRING || e->type == REDIS_REPLY_STATUS)
            snprintf(a->el[i], sizeof a->el[i], "%s", e->str);
        a->n = (int)i + 1;
    }
}

/* Arguments built with printf formats. */
typedef struct args {
    int n;
    char buf[96][96];
    const char *v[96];
} args;

static void arg(args *a, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(a->buf[a->n], sizeof a->buf[a->n], fmt, ap);
    va_end(ap);
    a->v[a->n] = a->buf[a->n];
    a->n++;
}

static answer call(replica *p, dsc__redis_script s, args *a) {
    answer ans = {0};
    dsc_status st = dsc__redis_eval(p->r, s, a->n, a->v, on_answer, &ans);
    if (st != DSC_OK) {
        ans.done = true;
        ans.st = st;
        return ans;
    }
    for (long long end = mono_ms() + 5000; !ans.done && mono_ms() < end;)
        event_base_loop(p->base, EVLOOP_ONCE);
    cr_assert(ans.done, "no answer within 5 s");
    return ans;
}

/* A counter of a reserve: name, window (kind span_us rate_micro), limit, amount, metric. */
typedef struct counter {
    const char *name, *kind;
    long long span, rate, limit, amount;
    int metric;
} counter;

static answer reserve(replica *p, const char *version, const char *id, const char *request_id,
                      long long ttl_us, const counter *c, int n) {
    args a = {0};
    arg(&a, "%s", version), arg(&a, "%s", id), arg(&a, "%s", request_id);
    arg(&a, "%lld", ttl_us), arg(&a, "0"), arg(&a, "key-1"), arg(&a, ""), arg(&a, "");
    arg(&a, ""), arg(&a, "1000");
    arg(&a, "%d", n);
    for (int i = 0; i < n; i++) {
        arg(&a, "%s", c[i].name), arg(&a, "%s", c[i].kind), arg(&a, "%lld", c[i].span);
        arg(&a, "%lld", c[i].rate), arg(&a, "%lld", c[i].limit), arg(&a, "%lld", c[i].amount);
        arg(&a, "%d", c[i].metric);
    }
    return call(p, DSC_REDIS_RESERVE, &a);
}

/* Settle id with actual (metric 1, gco2e) through p; n counters for an unknown id. */
static answer settle(replica *p, const char *id, long long actual) {
    args a = {0};
    arg(&a, "%s", id), arg(&a, "key-1"), arg(&a, "600"), arg(&a, ""), arg(&a, "1000");
    for (int m = 0; m < 7; m++)
        arg(&a, "%lld", m == 1 ? actual : 0);
    arg(&a, "0"), arg(&a, "0");
    return call(p, DSC_REDIS_SETTLE, &a);
}

static answer cancel(replica *p, const char *id) {
    args a = {0};
    arg(&a, "%s", id), arg(&a, "key-1"), arg(&a, "600"), arg(&a, "1000");
    return call(p, DSC_REDIS_CANCEL, &a);
}

static answer sweep(replica *p, const char *policy, int max) {
    args a = {0};
    arg(&a, "%s", policy), arg(&a, "%d", max), arg(&a, "600"), arg(&a, "1000");
    return call(p, DSC_REDIS_SWEEP, &a);
}

/* used and held of one counter, through the state script. */
static void state(replica *p, const counter *c, long long *used, long long *held,
                  long long *resets) {
    args a = {0};
    arg(&a, "0"), arg(&a, "1"), arg(&a, "%s", c->name), arg(&a, "%s", c->kind);
    arg(&a, "%lld", c->span), arg(&a, "%lld", c->rate);
    answer s = call(p, DSC_REDIS_STATE, &a);
    cr_assert_eq(s.st, DSC_OK, "%s", s.message);
    cr_assert(!s.error && s.n == 4, "state: %s", s.message);
    *used = atoll(s.el[1]), *held = atoll(s.el[2]);
    if (resets) *resets = atoll(s.el[3]);
}

static const counter TEAM = {"org:acme/team:infra/1", "month", 0, 0, 1000, 600, 1};
static const counter ORG = {"org:acme/2", "day", 0, 0, 5000, 600, 1};

/* -------------------------------------------------------------------- holds -- */

Test(store_redis, a_hold_takes_every_counter_or_none) {
    th_redis srv;
    th_redis_start(&srv, NULL);
    replica p;
    replica_open(&p, &srv);
    counter both[2] = {ORG, TEAM};
    answer a = reserve(&p, "0", "r1", "", 60000000, both, 2);
    cr_assert_str_eq(a.el[0], "ok", "%s", a.message);
    counter big[2] = {ORG, TEAM};
    big[0].amount = big[1].amount = 500; /* org fits (600 + 500), team does not */
    a = reserve(&p, "0", "r2", "", 60000000, big, 2);
    cr_assert_str_eq(a.el[0], "refused");
    cr_assert_str_eq(a.el[1], "2", "the refusing counter is the team's");
    long long used, held;
    state(&p, &ORG, &used, &held, NULL);
    cr_assert_eq(held, 600, "a refused hold left %lld held on the org", held);
    state(&p, &TEAM, &used, &held, NULL);
    cr_assert_eq(held, 600);
    replica_close(&p);
    th_redis_cleanup(&srv);
}

Test(store_redis, a_request_id_seen_before_answers_the_first_hold_on_any_replica) {
    th_redis srv;
    th_redis_start(&srv, NULL);
    replica a, b;
    replica_open(&a, &srv);
    replica_open(&b, &srv);
    answer x = reserve(&a, "0", "r1", "req-7", 60000000, &TEAM, 1);
    cr_assert_str_eq(x.el[0], "ok");
    answer y = reserve(&b, "0", "r2", "req-7", 60000000, &TEAM, 1);
    cr_assert_str_eq(y.el[0], "repeat");
    cr_assert_str_eq(y.el[1], "r1");
    cr_assert_str_eq(y.el[2], "held");
    cr_assert_str_eq(y.el[3], x.el[2], "the repeat gives the first hold's expiry");
    long long used, held;
    state(&b, &TEAM, &used, &held, NULL);
    cr_assert_eq(held, 600, "held twice: %lld", held);
    replica_close(&a);
    replica_close(&b);
    th_redis_cleanup(&srv);
}

/* Calls of one command since the last CONFIG RESETSTAT (0 when it was not called). */
static int calls_of(redisContext *c, const char *command) {
    redisReply *info = redisCommand(c, "INFO commandstats");
    cr_assert(info && info->type == REDIS_REPLY_STRING);
    char field[64];
    snprintf(field, sizeof field, "cmdstat_%s:calls=", command);
    const char *at = strstr(info->str, field);
    int n = at ? atoi(at + strlen(field)) : 0;
    freeReplyObject(info);
    return n;
}

static void reset_stats(redisContext *c) {
    redisReply *ok = redisCommand(c, "CONFIG RESETSTAT");
    freeReplyObject(ok);
}

/* A reserve looks its request id up and claims it in one SET; a reserve that holds
 * nothing (refused, stale) gives the claim back, so the request may be asked again. */
Test(store_redis, a_request_id_is_claimed_in_one_call_and_given_back_when_nothing_is_held) {
    th_redis srv;
    th_redis_start(&srv, NULL);
    replica p;
    replica_open(&p, &srv);
    redisContext *c = th_redis_connect(&srv);
    reset_stats(c);
    cr_assert_str_eq(reserve(&p, "0", "r1", "q1", 60000000, &TEAM, 1).el[0], "ok");
    cr_assert_eq(calls_of(c, "get"), 1, "only the budgets version is read with GET");
    cr_assert_eq(calls_of(c, "set"), 2,
                 "the request id is looked up and claimed at once, the hold written in one SET NX");
    cr_assert_eq(calls_of(c, "exists"), 0, "the hold's SET NX tells an id in use");
    cr_assert_eq(th_redis_int(c, "EXISTS {discern:}rq:q1"), 1);
    counter big = TEAM;
    big.amount = 500; /* 600 held + 500 > 1000 */
    cr_assert_str_eq(reserve(&p, "0", "r2", "q2", 60000000, &big, 1).el[0], "refused");
    cr_assert_eq(th_redis_int(c, "EXISTS {discern:}rq:q2"), 0, "a refusal keeps no claim");
    cr_assert_str_eq(reserve(&p, "7", "r3", "q3", 60000000, &TEAM, 1).el[0], "stale");
    cr_assert_eq(th_redis_int(c, "EXISTS {discern:}rq:q3"), 0, "a stale answer keeps no claim");
    big.amount = 100;
    answer again = reserve(&p, "0", "r4", "q2", 60000000, &big, 1);
    cr_assert_str_eq(again.el[0], "ok", "the refused request asked again is held: %s", again.el[0]);
    answer rep = reserve(&p, "0", "r5", "q1", 60000000, &TEAM, 1);
    cr_assert_str_eq(rep.el[0], "repeat");
    cr_assert_str_eq(rep.el[1], "r1");
    redisReply *first = redisCommand(c, "GET {discern:}rq:q1");
    cr_assert(first && first->type == REDIS_REPLY_STRING);
    cr_assert_str_eq(first->str, "r1", "a repeat leaves the first claim");
    freeReplyObject(first);
    redisFree(c);
    replica_close(&p);
    th_redis_cleanup(&srv);
}

Test(store_redis, a_settle_through_another_replica_charges_once_and_repeats_answer_the_same) {
    th_redis srv;
    th_redis_start(&srv, NULL);
    replica a, b;
    replica_open(&a, &srv);
    replica_open(&b, &srv);
    cr_assert_str_eq(reserve(&a, "0", "r1", "", 60000000, &TEAM, 1).el[0], "ok");
    answer s = settle(&b, "r1", 250);
    cr_assert_str_eq(s.el[0], "settle", "%s", s.message);
    cr_assert_str_eq(s.el[2], "250");
    answer again = settle(&a, "r1", 999);
    cr_assert_str_eq(again.el[0], "repeated");
    cr_assert_str_eq(again.el[2], "250", "a repeated settle answers the first charge");
    long long used, held;
    state(&a, &TEAM, &used, &held, NULL);
    cr_assert_eq(used, 250);
    cr_assert_eq(held, 0);
    cr_assert_str_eq(cancel(&b, "r1").el[0], "settled", "a settled hold cannot be cancelled");
    replica_close(&a);
    replica_close(&b);
    th_redis_cleanup(&srv);
}

/* Fields of the record a finished hold is kept as ({discern:}hd:<id>, a packed array). */
static long long record_fields(redisContext *c, const char *id) {
    redisReply *r = redisCommand(c, "EVAL %s 1 {discern:}hd:%s",
                                 "return #cmsgpack.unpack(redis.call('GET', KEYS[1]))", id);
    cr_assert(r && r->type == REDIS_REPLY_INTEGER, "%s", r ? r->str : "no reply");
    long long n = r->integer;
    freeReplyObject(r);
    return n;
}

/* A settled hold is kept without its counters (state, owner, expiry, request id,
 * offset, group, facts, charges): a repeated settle, a cancel and hold.lua answer
 * from those as before. A cancelled one keeps its counters for a late settle. */
Test(store_redis, a_settled_hold_kept_without_its_counters_answers_a_repeated_settle_the_same) {
    th_redis srv;
    th_redis_start(&srv, NULL);
    replica p;
    replica_open(&p, &srv);
    redisContext *c = th_redis_connect(&srv);
    const counter both[] = {TEAM, ORG};
    cr_assert_str_eq(reserve(&p, "0", "r1", "", 60000000, both, 2).el[0], "ok");
    cr_assert_eq(record_fields(c, "r1"), 8 + 2 * 6, "a held hold keeps its counters");
    answer s = settle(&p, "r1", 250);
    cr_assert_str_eq(s.el[0], "settle", "%s", s.message);
    cr_assert_eq(record_fields(c, "r1"), 8, "a settled one keeps 8 fields");
    answer again = settle(&p, "r1", 999);
    cr_assert_str_eq(again.el[0], "repeated");
    for (int m = 1; m <= 7; m++)
        cr_assert_str_eq(again.el[m], s.el[m], "charge %d as the first settle answered", m);
    cr_assert_str_eq(cancel(&p, "r1").el[0], "settled");
    args a = {0};
    arg(&a, "r1");
    answer h = call(&p, DSC_REDIS_HOLD, &a);
    cr_assert_str_eq(h.el[0], "settled", "%s", h.message);
    cr_assert_str_eq(h.el[1], "key-1", "its owner");
    long long used, held;
    state(&p, &ORG, &used, &held, NULL);
    cr_assert_eq(used, 250);
    cr_assert_eq(held, 0);
    cr_assert_str_eq(reserve(&p, "0", "r2", "", 60000000, both, 2).el[0], "ok");
    cr_assert_str_eq(cancel(&p, "r2").el[0], "cancelled");
    cr_assert_eq(record_fields(c, "r2"), 8 + 2 * 6, "a cancelled hold keeps its counters");
    redisFree(c);
    replica_close(&p);
    th_redis_cleanup(&srv);
}

/* A reserve of amount on TEAM for group, then its settle of seven actual amounts. */
static void charge_group(replica *p, const char *id, const char *group, const long long *actual) {
    args a = {0};
    arg(&a, "0"), arg(&a, "%s", id), arg(&a, ""), arg(&a, "60000000"), arg(&a, "0");
    arg(&a, "key-1"), arg(&a, ""), arg(&a, ""), arg(&a, "%s", group), arg(&a, "1000");
    arg(&a, "1"), arg(&a, "%s", TEAM.name), arg(&a, "month"), arg(&a, "0"), arg(&a, "0");
    arg(&a, "1000000"), arg(&a, "10"), arg(&a, "1");
    answer r = call(p, DSC_REDIS_RESERVE, &a);
    cr_assert_str_eq(r.el[0], "ok", "%s", r.message);
    args b = {0};
    arg(&b, "%s", id), arg(&b, "key-1"), arg(&b, "600"), arg(&b, ""), arg(&b, "1000");
    for (int m = 0; m < 7; m++)
        arg(&b, "%lld", actual[m]);
    arg(&b, "0"), arg(&b, "0");
    answer s = call(p, DSC_REDIS_SETTLE, &b);
    cr_assert_str_eq(s.el[0], "settle", "%s", s.message);
}

/* An hour's rollup of a group is the sum of each of its charges, metric by metric
 * (a correction included); another group has its own sums. */
Test(store_redis, an_hours_rollup_adds_each_charge_metric_by_metric) {
    th_redis srv;
    th_redis_start(&srv, NULL);
    replica p;
    replica_open(&p, &srv);
    redisContext *c = th_redis_connect(&srv);
    const long long a1[7] = {1, 20, 300, 4000, 50000, 600000, 7000000};
    const long long a2[7] = {7, 6, 5, 4, 3, 2, 1};
    charge_group(&p, "g1", "[\"a\"]", a1);
    charge_group(&p, "g2", "[\"a\"]", a2);
    charge_group(&p, "g3", "[\"b\"]", a2);
    answer late = settle(&p, "g1", 5); /* settled already: repeats, adds nothing */
    cr_assert_str_eq(late.el[0], "repeated");
    redisReply *keys = redisCommand(c, "KEYS {discern:}ru:*");
    cr_assert(keys && keys->type == REDIS_REPLY_ARRAY && keys->elements == 1);
    redisReply *v = redisCommand(c, "HMGET %s [\"a\"] [\"b\"]", keys->element[0]->str);
    cr_assert(v && v->type == REDIS_REPLY_ARRAY && v->elements == 2);
    cr_assert_str_eq(v->element[0]->str, "8,26,305,4004,50003,600002,7000001");
    cr_assert_str_eq(v->element[1]->str, "7,6,5,4,3,2,1");
    freeReplyObject(v);
    cr_assert_gt(th_redis_int(c, "TTL %s", keys->element[0]->str), 300 * 86400,
                 "an hour is kept for a year's window and more");
    freeReplyObject(keys);
    redisFree(c);
    replica_close(&p);
    th_redis_cleanup(&srv);
}

/* A hold keeps its facts, not the decision's journal text: that is written once, to
 * the journal stream. */
Test(store_redis, the_journal_text_is_written_once_and_the_hold_keeps_its_facts) {
    th_redis srv;
    th_redis_start(&srv, NULL);
    replica p;
    replica_open(&p, &srv);
    args a = {0};
    arg(&a, "0"), arg(&a, "r1"), arg(&a, ""), arg(&a, "60000000"), arg(&a, "0"), arg(&a, "k");
    arg(&a, "{\"decision_id\":\"d1\",\"verdicts\":\"[]\"}"), arg(&a, "3:acm0:"), arg(&a, "[]");
    arg(&a, "1000");
    arg(&a, "1"), arg(&a, "%s", TEAM.name), arg(&a, "month"), arg(&a, "0"), arg(&a, "0");
    arg(&a, "1000"), arg(&a, "600"), arg(&a, "1");
    answer r = call(&p, DSC_REDIS_RESERVE, &a);
    cr_assert_str_eq(r.el[0], "ok", "%s", r.message);
    redisContext *c = th_redis_connect(&srv);
    redisReply *j = redisCommand(c, "TYPE {discern:}hd:r1");
    cr_assert(j && j->type == REDIS_REPLY_STATUS);
    cr_assert_str_eq(j->str, "string", "the hold is one string key");
    freeReplyObject(j);
    cr_assert_eq(th_redis_int(c, "EXISTS {discern:}h:r1"), 0, "nothing in the previous form");
    redisReply *x = redisCommand(c, "XRANGE {discern:}journal - +");
    cr_assert(x && x->type == REDIS_REPLY_ARRAY && x->elements == 1);
    redisReply *f = x->element[0]->element[1];
    cr_assert_eq(f->elements, 6, "event, id, detail");
    cr_assert_str_eq(f->element[5]->str, "{\"decision_id\":\"d1\",\"verdicts\":\"[]\"}");
    freeReplyObject(x);
    args h = {0};
    arg(&h, "r1");
    answer held = call(&p, DSC_REDIS_HOLD, &h);
    cr_assert_str_eq(held.el[0], "held");
    cr_assert_str_eq(held.el[3], "3:acm0:", "hold.lua answers the facts");
    redisFree(c);
    replica_close(&p);
    th_redis_cleanup(&srv);
}

/* dsc__redis_eval formats the protocol itself: arguments that look like the
 * protocol, empty ones and long ones arrive as they were given. */
Test(store_redis, arguments_reach_the_script_byte_for_byte) {
    th_redis srv;
    th_redis_start(&srv, NULL);
    replica p;
    replica_open(&p, &srv);
    static char big[70000];
    memset(big, 'x', sizeof big - 1);
    const char *details[] = {"a\r\n$3\r\nGET\r\n*1\r\n", "", big};
    redisContext *c = th_redis_connect(&srv);
    for (int i = 0; i < 3; i++) {
        const char *argv[] = {"d1", details[i], "1000"};
        answer a = {0};
        cr_assert_eq(dsc__redis_eval(p.r, DSC_REDIS_RECORD, 3, argv, on_answer, &a), DSC_OK);
        for (long long end = mono_ms() + 5000; !a.done && mono_ms() < end;)
            event_base_loop(p.base, EVLOOP_ONCE);
        cr_assert_str_eq(a.el[0], "ok", "%s", a.message);
        redisReply *x = redisCommand(c, "XREVRANGE {discern:}journal + - COUNT 1");
        cr_assert(x && x->type == REDIS_REPLY_ARRAY && x->elements == 1);
        redisReply *f = x->element[0]->element[1];
        if (details[i][0]) {
            cr_assert_eq(f->elements, 6);
            cr_assert_eq(f->element[5]->len, strlen(details[i]));
            cr_assert(memcmp(f->element[5]->str, details[i], strlen(details[i])) == 0);
        } else {
            cr_assert_eq(f->elements, 4, "an empty detail is left out");
        }
        freeReplyObject(x);
    }
    redisFree(c);
    replica_close(&p);
    th_redis_cleanup(&srv);
}

/* settle.lua answers the states of the counters it has just charged from what it
 * wrote, without reading them again: one HMGET of the hold, one per counter. */
Test(store_redis, a_settle_reads_each_counter_it_charges_once) {
    th_redis srv;
    th_redis_start(&srv, NULL);
    replica p;
    replica_open(&p, &srv);
    cr_assert_str_eq(reserve(&p, "0", "r1", "", 60000000, &TEAM, 1).el[0], "ok");
    redisContext *c = th_redis_connect(&srv);
    reset_stats(c);
    args a = {0};
    arg(&a, "r1"), arg(&a, "key-1"), arg(&a, "600"), arg(&a, ""), arg(&a, "1000");
    for (int m = 0; m < 7; m++)
        arg(&a, "%d", m == 1 ? 250 : 0);
    arg(&a, "0"), arg(&a, "1"), arg(&a, "%s", TEAM.name), arg(&a, "month"), arg(&a, "0");
    arg(&a, "0"), arg(&a, "1");
    answer s = call(&p, DSC_REDIS_SETTLE, &a);
    cr_assert_str_eq(s.el[0], "settle", "%s", s.message);
    cr_assert_eq(s.n, 1 + 7 + 3);
    cr_assert_str_eq(s.el[8], "250", "used after the settle");
    cr_assert_str_eq(s.el[9], "0", "held after the settle");
    cr_assert_eq(calls_of(c, "get"), 1, "the hold and its facts in one GET");
    cr_assert_eq(calls_of(c, "hmget"), 1, "the counter once");
    cr_assert_eq(calls_of(c, "hget"), 0, "the hold's facts come with it");
    cr_assert_eq(calls_of(c, "hincrby"), 0, "held and used are written from what was read");
    cr_assert_eq(calls_of(c, "hset"), 1, "one HSET of the counter");
    cr_assert_eq(calls_of(c, "set"), 1, "the finished hold with its expiry in one SET");
    cr_assert_eq(calls_of(c, "expire"), 0, "no EXPIRE of its own");
    long long used, held, resets;
    state(&p, &TEAM, &used, &held, &resets);
    cr_assert_eq(used, 250);
    cr_assert_eq(held, 0);
    cr_assert_eq(atoll(s.el[10]), resets, "the settle's reset time is the state's");
    redisFree(c);
    replica_close(&p);
    th_redis_cleanup(&srv);
}

/* A hold on TEAM's counter as the previous scripts wrote it: a hash (state, the hold
 * as JSON, its check's facts as JSON; charged: g, or NULL while held) in the sorted
 * set {discern:}exp by its expiry (unix µs), its 600 held counted on the counter. */
static void old_hold(redisContext *c, const char *id, const char *state, const char *expires,
                     const char *charged) {
    char d[512];
    snprintf(d, sizeof d,
             "{\"c\":[{\"n\":\"org:acme/team:infra/1\",\"k\":\"month\",\"s\":\"0\","
             "\"r\":\"0\",\"m\":1,\"a\":\"600\"}],\"tz\":0,\"rq\":\"\",\"ow\":\"key-1\","
             "\"ex\":\"%s\"}",
             expires);
    const char *j = "{\"org\":\"org:acme\",\"team\":\"team:infra\",\"user\":\"\",\"key\":\"key-1\","
                    "\"provider\":\"openai\",\"model\":\"gpt-4o\",\"purpose\":\"code-review\"}";
    redisReply *r = redisCommand(c, "HSET {discern:}h:%s st %s d %s j %s", id, state, d, j);
    cr_assert(r && r->type == REDIS_REPLY_INTEGER);
    freeReplyObject(r);
    if (charged) {
        r = redisCommand(c, "HSET {discern:}h:%s g %s", id, charged);
        freeReplyObject(r);
        return;
    }
    r = redisCommand(c, "HINCRBY {discern:}c:org:acme/team:infra/1 h 600");
    freeReplyObject(r);
    r = redisCommand(c, "ZADD {discern:}exp %s %s", expires, id);
    freeReplyObject(r);
}

/* The same for a rolling window: the settle answers its used, held and reset time
 * from the buckets it wrote, the same as a state read after it, with one HGETALL. */
Test(store_redis, a_settle_reads_a_rolling_counter_once_and_answers_its_state) {
    th_redis srv;
    th_redis_start(&srv, NULL);
    replica p;
    replica_open(&p, &srv);
    const counter roll = {"org:acme/user:u/3", "rolling", 3600000000LL, 0, 1000000, 600, 1};
    cr_assert_str_eq(reserve(&p, "0", "r1", "", 60000000, &roll, 1).el[0], "ok");
    redisContext *c = th_redis_connect(&srv);
    reset_stats(c);
    args a = {0};
    arg(&a, "r1"), arg(&a, "key-1"), arg(&a, "600"), arg(&a, ""), arg(&a, "1000");
    for (int m = 0; m < 7; m++)
        arg(&a, "%d", m == 1 ? 250 : 0);
    arg(&a, "0"), arg(&a, "1"), arg(&a, "%s", roll.name), arg(&a, "rolling");
    arg(&a, "%lld", roll.span), arg(&a, "0"), arg(&a, "1");
    answer s = call(&p, DSC_REDIS_SETTLE, &a);
    cr_assert_str_eq(s.el[0], "settle", "%s", s.message);
    cr_assert_eq(s.n, 1 + 7 + 3);
    cr_assert_eq(calls_of(c, "hgetall"), 1, "the counter read once");
    long long used, held, resets;
    state(&p, &roll, &used, &held, &resets);
    cr_assert_eq(used, 250);
    cr_assert_eq(held, 0);
    cr_assert_eq(atoll(s.el[8]), used, "the settle's used is the state's");
    cr_assert_eq(atoll(s.el[9]), held, "the settle's held is the state's");
    cr_assert_eq(atoll(s.el[10]), resets, "the settle's reset time is the state's");
    redisFree(c);
    replica_close(&p);
    th_redis_cleanup(&srv);
}

/* A rolling upgrade: a hold as the previous scripts wrote it (a hash: state, the
 * hold as JSON, its check's facts as JSON; held counted on its counter) is settled
 * by these, charged once and rolled up under its check's group. */
Test(store_redis, a_hold_written_by_the_previous_scripts_settles_and_is_rolled_up) {
    th_redis srv;
    th_redis_start(&srv, NULL);
    replica p;
    replica_open(&p, &srv);
    redisContext *c = th_redis_connect(&srv);
    old_hold(c, "old1", "held", "99999999999999999", NULL);
    answer s = settle(&p, "old1", 250);
    cr_assert_str_eq(s.el[0], "settle", "%s", s.message);
    cr_assert_str_eq(s.el[2], "250");
    cr_assert_eq(th_redis_int(c, "EXISTS {discern:}h:old1"), 0, "the old form is gone");
    cr_assert_eq(th_redis_int(c, "ZCARD {discern:}exp"), 0, "and out of its expiry set");
    cr_assert_str_eq(settle(&p, "old1", 250).el[0], "repeated");
    long long used, held;
    state(&p, &TEAM, &used, &held, NULL);
    cr_assert_eq(used, 250);
    cr_assert_eq(held, 0);
    redisReply *keys = redisCommand(c, "KEYS {discern:}ru:*");
    cr_assert(keys && keys->type == REDIS_REPLY_ARRAY && keys->elements == 1);
    redisReply *all = redisCommand(c, "HGETALL %s", keys->element[0]->str);
    cr_assert(all && all->type == REDIS_REPLY_ARRAY && all->elements == 2);
    cr_assert_str_eq(all->element[0]->str,
                     "[\"org:acme\",\"team:infra\",\"\",\"key-1\",\"openai\",\"gpt-4o\","
                     "\"code-review\"]");
    cr_assert_str_eq(all->element[1]->str, "0,250,0,0,0,0,0");
    freeReplyObject(all);
    freeReplyObject(keys);
    redisFree(c);
    replica_close(&p);
    th_redis_cleanup(&srv);
}

/* A rolling upgrade: holds the previous scripts wrote are cancelled and expired by
 * these (the sweep reads their expiry set too), and a record they finished answers
 * a repeated settle with what it was charged. */
Test(store_redis, holds_written_by_the_previous_scripts_cancel_expire_and_repeat) {
    th_redis srv;
    th_redis_start(&srv, NULL);
    replica p;
    replica_open(&p, &srv);
    redisContext *c = th_redis_connect(&srv);
    old_hold(c, "old1", "held", "99999999999999999", NULL);
    old_hold(c, "old2", "held", "1", NULL);
    old_hold(c, "old3", "settled", "1", "[\"0\",\"300\",\"0\",\"0\",\"0\",\"0\",\"0\"]");
    long long used, held;
    state(&p, &TEAM, &used, &held, NULL);
    cr_assert_eq(held, 1200);
    cr_assert_str_eq(cancel(&p, "old1").el[0], "cancelled");
    cr_assert_str_eq(cancel(&p, "old1").el[0], "cancelled", "a second cancel changes nothing");
    answer sw = sweep(&p, "charge", 10);
    cr_assert_str_eq(sw.el[0], "1", "the expired old hold is swept: %s", sw.message);
    cr_assert_str_eq(sw.el[1], "old2");
    cr_assert_str_eq(sweep(&p, "charge", 10).el[0], "0", "exactly once");
    state(&p, &TEAM, &used, &held, NULL);
    cr_assert_eq(held, 0, "both holds released");
    cr_assert_eq(used, 600, "the expired one charged what it held");
    answer late = settle(&p, "old2", 250);
    cr_assert_str_eq(late.el[0], "late", "%s", late.message);
    state(&p, &TEAM, &used, &held, NULL);
    cr_assert_eq(used, 250, "a late settle of it charges the difference");
    answer rep = settle(&p, "old3", 999);
    cr_assert_str_eq(rep.el[0], "repeated", "%s", rep.message);
    cr_assert_str_eq(rep.el[2], "300", "the old record's charge");
    cr_assert_eq(th_redis_int(c, "ZCARD {discern:}exp"), 0);
    cr_assert_eq(th_redis_int(c, "EXISTS {discern:}h:old1 {discern:}h:old2"), 0);
    redisFree(c);
    replica_close(&p);
    th_redis_cleanup(&srv);
}

Test(store_redis, a_cancel_releases_and_a_late_settle_charges_the_actual) {
    th_redis srv;
    th_redis_start(&srv, NULL);
    replica p;
    replica_open(&p, &srv);
    cr_assert_str_eq(reserve(&p, "0", "r1", "", 60000000, &TEAM, 1).el[0], "ok");
    cr_assert_str_eq(cancel(&p, "r1").el[0], "cancelled");
    cr_assert_str_eq(cancel(&p, "r1").el[0], "cancelled", "a second cancel changes nothing");
    long long used, held;
    state(&p, &TEAM, &used, &held, NULL);
    cr_assert_eq(held, 0);
    cr_assert_eq(used, 0);
    answer late = settle(&p, "r1", 100);
    cr_assert_str_eq(late.el[0], "late");
    state(&p, &TEAM, &used, &held, NULL);
    cr_assert_eq(used, 100);
    cr_assert_str_eq(settle(&p, "nope", 5).el[0], "unknown");
    replica_close(&p);
    th_redis_cleanup(&srv);
}

Test(store_redis, a_hold_of_another_key_cannot_be_settled_or_cancelled) {
    th_redis srv;
    th_redis_start(&srv, NULL);
    replica p;
    replica_open(&p, &srv);
    cr_assert_str_eq(reserve(&p, "0", "r1", "", 60000000, &TEAM, 1).el[0], "ok");
    args a = {0};
    arg(&a, "r1"), arg(&a, "key-2"), arg(&a, "600"), arg(&a, "0");
    cr_assert_str_eq(call(&p, DSC_REDIS_CANCEL, &a).el[0], "forbidden");
    long long used, held;
    state(&p, &TEAM, &used, &held, NULL);
    cr_assert_eq(held, 600);
    replica_close(&p);
    th_redis_cleanup(&srv);
}

Test(store_redis, a_stale_budgets_version_is_refused_with_the_current_one) {
    th_redis srv;
    th_redis_start(&srv, NULL);
    replica p;
    replica_open(&p, &srv);
    args b = {0};
    arg(&b, ""), arg(&b, "{\"selector\":\"team:*\",\"metric\":\"gco2e\"}");
    answer set = call(&p, DSC_REDIS_BUDGET, &b);
    cr_assert_eq(set.n, 2, "%s", set.message);
    cr_assert_str_eq(set.el[1], "1");
    answer a = reserve(&p, "0", "r1", "", 60000000, &TEAM, 1);
    cr_assert_str_eq(a.el[0], "stale");
    cr_assert_str_eq(a.el[1], "1");
    cr_assert_str_eq(reserve(&p, "1", "r1", "", 60000000, &TEAM, 1).el[0], "ok");
    replica_close(&p);
    th_redis_cleanup(&srv);
}

Test(store_redis, malformed_arguments_are_an_error_reply_not_a_charge) {
    th_redis srv;
    th_redis_start(&srv, NULL);
    replica p;
    replica_open(&p, &srv);
    counter neg = TEAM;
    neg.amount = -5;
    answer a = reserve(&p, "0", "r1", "", 60000000, &neg, 1);
    cr_assert(a.error && strstr(a.message, "bad_request"), "%s", a.message);
    args short_args = {0};
    arg(&short_args, "0"), arg(&short_args, "r2");
    a = call(&p, DSC_REDIS_RESERVE, &short_args);
    cr_assert(a.error && strstr(a.message, "bad_request"), "%s", a.message);
    long long used, held;
    state(&p, &TEAM, &used, &held, NULL);
    cr_assert_eq(held + used, 0);
    replica_close(&p);
    th_redis_cleanup(&srv);
}

/* ------------------------------------------------------------- concurrency -- */

typedef struct racer {
    const th_redis *srv;
    int thread, ok;
} racer;

/* One client on its own loop and connection: reserve until the budget refuses. */
static void *race(void *arg) {
    racer *x = arg;
    replica p;
    replica_open(&p, x->srv);
    counter c = TEAM;
    c.amount = 7;
    for (int i = 0, refusals = 0; refusals < 3; i++) {
        char id[32];
        snprintf(id, sizeof id, "t%d-%d", x->thread, i);
        answer a = reserve(&p, "0", id, "", 60000000, &c, 1);
        if (strcmp(a.el[0], "ok") == 0)
            x->ok++;
        else
            refusals++;
    }
    replica_close(&p);
    return NULL;
}

Test(store_redis, eight_clients_on_their_own_loops_cannot_overshoot_one_budget) {
    th_redis srv;
    th_redis_start(&srv, NULL);
    pthread_t t[8];
    racer x[8];
    for (int i = 0; i < 8; i++) {
        x[i] = (racer){&srv, i, 0};
        cr_assert_eq(pthread_create(&t[i], NULL, race, &x[i]), 0);
    }
    int ok = 0;
    for (int i = 0; i < 8; i++) {
        pthread_join(t[i], NULL);
        ok += x[i].ok;
    }
    cr_assert_eq(ok, 1000 / 7, "%d holds of 7 against a limit of 1000", ok);
    replica p;
    replica_open(&p, &srv);
    long long used, held;
    state(&p, &TEAM, &used, &held, NULL);
    cr_assert_eq(held, 7LL * ok);
    cr_assert_leq(used + held, 1000);
    replica_close(&p);
    th_redis_cleanup(&srv);
}

Test(store_redis, expired_holds_are_charged_exactly_once_by_competing_sweepers) {
    th_redis srv;
    th_redis_start(&srv, NULL);
    replica a, b;
    replica_open(&a, &srv);
    replica_open(&b, &srv);
    counter c = TEAM;
    c.amount = 10;
    for (int i = 0; i < 50; i++) {
        char id[16];
        snprintf(id, sizeof id, "r%d", i);
        cr_assert_str_eq(reserve(i % 2 ? &a : &b, "0", id, "", 1000, &c, 1).el[0], "ok");
    }
    cr_assert_str_eq(reserve(&a, "0", "live", "", 60000000, &c, 1).el[0], "ok");
    nap_ms(20);
    int finished = 0;
    for (int round = 0; round < 20; round++) {
        finished += atoi(sweep(&a, "charge", 7).el[0]);
        finished += atoi(sweep(&b, "charge", 7).el[0]);
    }
    cr_assert_eq(finished, 50, "%d holds finished", finished);
    long long used, held;
    state(&a, &c, &used, &held, NULL);
    cr_assert_eq(used, 500);
    cr_assert_eq(held, 10, "the live hold stays held");
    answer late = settle(&b, "r3", 4);
    cr_assert_str_eq(late.el[0], "late");
    state(&a, &c, &used, &held, NULL);
    cr_assert_eq(used, 494, "a late settle replaces the expired charge by the actual");
    replica_close(&a);
    replica_close(&b);
    th_redis_cleanup(&srv);
}

Test(store_redis, expired_holds_are_released_when_configured) {
    th_redis srv;
    th_redis_start(&srv, NULL);
    replica p;
    replica_open(&p, &srv);
    cr_assert_str_eq(reserve(&p, "0", "r1", "", 1000, &TEAM, 1).el[0], "ok");
    nap_ms(10);
    answer s = sweep(&p, "release", 10);
    cr_assert_str_eq(s.el[0], "1");
    cr_assert_str_eq(s.el[1], "r1");
    long long used, held;
    state(&p, &TEAM, &used, &held, NULL);
    cr_assert_eq(used + held, 0);
    cr_assert_str_eq(settle(&p, "r1", 5).el[0], "late");
    replica_close(&p);
    th_redis_cleanup(&srv);
}

/* ------------------------------------------------------------------ windows -- */

Test(store_redis, calendar_windows_reset_at_the_instants_core_window_computes) {
    th_redis srv;
    th_redis_start(&srv, NULL);
    replica p;
    replica_open(&p, &srv);
    static const char *const kinds[] = {"day", "week", "month", "year"};
    static const char *const zones[] = {"UTC", "+02:00", "-05:30", "+14:00", "-12:00"};
    for (int k = 0; k < 4; k++)
        for (int z = 0; z < 5; z++) {
            dsc_window w;
            dsc_tz tz;
            cr_assert_eq(dsc_window_parse(kinds[k], &w, NULL), DSC_OK);
            cr_assert_eq(dsc_tz_parse(zones[z], &tz, NULL), DSC_OK);
            args a = {0};
            arg(&a, "%d", tz.offset_s), arg(&a, "1"), arg(&a, "c:%s:%s", kinds[k], zones[z]);
            arg(&a, "%s", kinds[k]), arg(&a, "0"), arg(&a, "0");
            answer s = call(&p, DSC_REDIS_STATE, &a);
            int64_t start, end;
            dsc_window_period(&w, &tz, (int64_t)time(NULL), &start, &end);
            cr_expect_eq(atoll(s.el[3]), end, "%s in %s: Redis says %s, core/window.c %lld",
                         kinds[k], zones[z], s.el[3], (long long)end);
        }
    replica_close(&p);
    th_redis_cleanup(&srv);
}

/* The scripts' period() (server/redis/common.lua) against core/window.c at every
 * day boundary from 1968 to 2104 and a second either side, in five offsets: run as
 * one EVAL of the scripts' shared text with a loop of its own. */
Test(store_redis, calendar_periods_match_core_window_on_every_day_boundary_of_136_years) {
    th_redis srv;
    th_redis_start(&srv, NULL);
    redisContext *c = th_redis_connect(&srv);
    /* each EVAL below runs ~150 000 periods: seconds on a loaded machine, not 1 */
    redisSetTimeout(c, (struct timeval){30, 0});
    const char *text = dsc__redis_script_texts[DSC_REDIS_STATE];
    const char *own = strstr(text, "-- state.lua");
    cr_assert_not_null(own);
    static const char loop[] = "local out = {}\n"
                               "for t = tonumber(ARGV[3]), tonumber(ARGV[4]), 86400 do\n"
                               "  for dt = -1, 1 do\n"
                               "    local s, e = period(ARGV[1], tonumber(ARGV[2]), t + dt)\n"
                               "    out[#out + 1] = s\n"
                               "    out[#out + 1] = e\n"
                               "  end\n"
                               "end\n"
                               "return out\n";
    size_t n = (size_t)(own - text);
    char *script = malloc(n + sizeof loop);
    cr_assert_not_null(script);
    memcpy(script, text, n);
    memcpy(script + n, loop, sizeof loop);
    static const char *const kinds[] = {"day", "week", "month", "year"};
    static const int offsets[] = {0, 7200, -19800, 50400, -43200};
    const long long from = -2 * 365 * 86400LL, to = 134LL * 365 * 86400;
    long long checked = 0;
    for (int k = 0; k < 4; k++)
        for (int z = 0; z < 5; z++) {
            dsc_window w;
            cr_assert_eq(dsc_window_parse(kinds[k], &w, NULL), DSC_OK);
            dsc_tz tz = {.offset_s = offsets[z]};
            long long first = from - offsets[z];
            redisReply *rep = redisCommand(c, "EVAL %s 1 %s %s %d %lld %lld", script, KEY0,
                                           kinds[k], offsets[z], first, to);
            cr_assert(rep && rep->type == REDIS_REPLY_ARRAY, "%s",
                      rep && rep->str ? rep->str : "no reply");
            size_t i = 0;
            for (long long t = first; t <= to; t += 86400)
                for (int dt = -1; dt <= 1; dt++, i += 2) {
                    int64_t start, end;
                    dsc_window_period(&w, &tz, t + dt, &start, &end);
                    cr_assert(i + 1 < rep->elements);
                    cr_assert(rep->element[i]->integer == start &&
                                  rep->element[i + 1]->integer == end,
                              "%s at %lld (offset %d): Redis [%lld, %lld), core [%lld, %lld)",
                              kinds[k], t + dt, offsets[z], rep->element[i]->integer,
                              rep->element[i + 1]->integer, (long long)start, (long long)end);
                    checked++;
                }
            cr_assert_eq(i, rep->elements);
            freeReplyObject(rep);
        }
    cr_assert_gt(checked, 900000);
    free(script);
    redisFree(c);
    th_redis_cleanup(&srv);
}

Test(store_redis, a_token_bucket_refills_by_redis_time) {
    th_redis srv;
    th_redis_start(&srv, NULL);
    replica p;
    replica_open(&p, &srv);
    /* rate 1000 µ per 100 ms, bucket 1000: a full bucket refills in 100 ms */
    counter c = {"rate", "rate", 100000, 1000, 1000, 1000, 1};
    cr_assert_str_eq(reserve(&p, "0", "r1", "", 60000000, &c, 1).el[0], "ok");
    cr_assert_str_eq(settle(&p, "r1", 1000).el[0], "settle");
    cr_assert_str_eq(reserve(&p, "0", "r2", "", 60000000, &c, 1).el[0], "refused");
    nap_ms(150);
    long long used, held;
    state(&p, &c, &used, &held, NULL);
    cr_assert_eq(used, 0, "the bucket did not refill: %lld", used);
    cr_assert_str_eq(reserve(&p, "0", "r3", "", 60000000, &c, 1).el[0], "ok");
    replica_close(&p);
    th_redis_cleanup(&srv);
}

Test(store_redis, a_rolling_window_forgets_a_charge_once_its_bucket_has_left) {
    th_redis srv;
    th_redis_start(&srv, NULL);
    replica p;
    replica_open(&p, &srv);
    counter c = {"roll", "rolling", 300000, 0, 1000, 800, 1}; /* 300 ms, 10 ms buckets */
    cr_assert_str_eq(reserve(&p, "0", "r1", "", 60000000, &c, 1).el[0], "ok");
    cr_assert_str_eq(settle(&p, "r1", 800).el[0], "settle");
    long long used, held;
    state(&p, &c, &used, &held, NULL);
    cr_assert_eq(used, 800);
    nap_ms(200);
    state(&p, &c, &used, &held, NULL);
    cr_assert_eq(used, 800, "forgotten before the window passed");
    nap_ms(200);
    state(&p, &c, &used, &held, NULL);
    cr_assert_eq(used, 0, "still counted after the window passed");
    replica_close(&p);
    th_redis_cleanup(&srv);
}

/* ------------------------------------------------------------ budgets, news -- */

Test(store_redis, a_budget_change_reaches_every_subscribed_replica_within_a_second) {
    th_redis srv;
    th_redis_start(&srv, NULL);
    char url[128];
    th_redis_url(&srv, url, sizeof url);
    replica a, b;
    replica_open_url(&a, url, 1000, true);
    replica_open_url(&b, url, 1000, true);
    cr_assert(wait_ready(&a, 5000) && wait_ready(&b, 5000));
    spin(&a, 100), spin(&b, 100); /* both subscriptions confirmed */
    args set = {0};
    arg(&set, ""), arg(&set, "{\"selector\":\"org:*\"}");
    long long t0 = mono_ms();
    answer r = call(&a, DSC_REDIS_BUDGET, &set);
    cr_assert_eq(r.n, 2, "%s", r.message);
    while ((a.budgets_seen < 1 || b.budgets_seen < 1) && mono_ms() - t0 < 1000) {
        event_base_loop(a.base, EVLOOP_NONBLOCK);
        event_base_loop(b.base, EVLOOP_NONBLOCK);
        nap_ms(1);
    }
    cr_assert_eq(a.budgets_seen, 1);
    cr_assert_eq(b.budgets_seen, 1, "replica b saw version %lld", b.budgets_seen);
    replica_close(&a);
    replica_close(&b);
    th_redis_cleanup(&srv);
}

/* ------------------------------------------------------------------- faults -- */

Test(store_redis, a_script_redis_forgot_is_loaded_again) {
    th_redis srv;
    th_redis_start(&srv, NULL);
    replica p;
    replica_open(&p, &srv);
    redisContext *c = th_redis_connect(&srv);
    freeReplyObject(redisCommand(c, "SCRIPT FLUSH"));
    answer a = reserve(&p, "0", "r1", "", 60000000, &TEAM, 1);
    cr_assert_eq(a.st, DSC_OK, "%s", a.message);
    cr_assert_str_eq(a.el[0], "ok", "%s", a.message);
    redisFree(c);
    replica_close(&p);
    th_redis_cleanup(&srv);
}

Test(store_redis, redis_killed_fails_calls_and_the_connection_returns_without_a_restart) {
    th_redis srv;
    th_redis_start(&srv, NULL);
    replica p;
    replica_open(&p, &srv);
    cr_assert_str_eq(reserve(&p, "0", "r1", "", 60000000, &TEAM, 1).el[0], "ok");
    th_redis_kill9(&srv);
    answer a = reserve(&p, "0", "r2", "", 60000000, &TEAM, 1);
    cr_assert_eq(a.st, DSC_STORE_UNAVAILABLE);
    spin(&p, 50);
    cr_assert(!dsc__redis_ready(p.r));
    cr_assert_eq(reserve(&p, "0", "r3", "", 60000000, &TEAM, 1).st, DSC_STORE_UNAVAILABLE,
                 "a call while down fails at once");
    th_redis_restart(&srv);
    cr_assert(wait_ready(&p, 3000), "no reconnect: %s", dsc__redis_last_error(p.r));
    cr_assert_eq(dsc__redis_connects(p.r), 2);
    cr_assert_geq(p.ready_changes, 3, "ready, lost, ready again: %d", p.ready_changes);
    cr_assert_str_eq(reserve(&p, "0", "r4", "", 60000000, &TEAM, 1).el[0], "ok");
    replica_close(&p);
    th_redis_cleanup(&srv);
}

Test(store_redis, a_redis_that_stops_answering_is_dropped_after_the_timeout) {
    th_redis srv;
    th_redis_start(&srv, NULL);
    char url[128];
    th_redis_url(&srv, url, sizeof url);
    replica p;
    replica_open_url(&p, url, 200, false);
    cr_assert(wait_ready(&p, 5000));
    th_redis_pause(&srv);
    long long t0 = mono_ms();
    answer a = reserve(&p, "0", "r1", "", 60000000, &TEAM, 1);
    long long took = mono_ms() - t0;
    cr_assert_eq(a.st, DSC_STORE_UNAVAILABLE);
    cr_assert(strstr(a.message, "no reply in time"), "%s", a.message);
    cr_assert_leq(took, 1000, "the timeout of 200 ms took %lld ms", took);
    th_redis_resume(&srv);
    cr_assert(wait_ready(&p, 3000), "no reconnect: %s", dsc__redis_last_error(p.r));
    replica_close(&p);
    th_redis_cleanup(&srv);
}

Test(store_redis, a_node_turned_replica_is_left_and_found_again_once_it_is_master) {
    th_redis master, node;
    th_redis_start(&master, NULL);
    th_redis_start(&node, NULL);
    replica p;
    replica_open(&p, &node);
    redisContext *c = th_redis_connect(&node);
    th_redis_int(c, "REPLICAOF 127.0.0.1 %d", master.port);
    answer a = reserve(&p, "0", "r1", "", 60000000, &TEAM, 1);
    cr_assert_eq(a.st, DSC_STORE_UNAVAILABLE);
    cr_assert(strstr(a.message, "READONLY"), "%s", a.message);
    spin(&p, 20);
    cr_assert_eq(reserve(&p, "0", "r2", "", 60000000, &TEAM, 1).st, DSC_STORE_UNAVAILABLE);
    th_redis_int(c, "REPLICAOF NO ONE");
    answer ok = {0};
    for (long long end = mono_ms() + 5000; mono_ms() < end; spin(&p, 20)) {
        if (!dsc__redis_ready(p.r)) continue;
        ok = reserve(&p, "0", "r3", "", 60000000, &TEAM, 1);
        if (ok.st == DSC_OK) break;
    }
    cr_assert_eq(ok.st, DSC_OK, "not back: %s", ok.message);
    cr_assert_str_eq(ok.el[0], "ok");
    cr_assert_geq(dsc__redis_connects(p.r), 2, "the connection to the replica was kept");
    redisFree(c);
    replica_close(&p);
    th_redis_cleanup(&node);
    th_redis_cleanup(&master);
}

Test(store_redis, a_wrong_password_is_reported_and_the_right_one_connects) {
    th_redis srv;
    th_redis_start(&srv, "requirepass pw-123\n");
    char url[400];
    snprintf(url, sizeof url, "redis://:wrong@127.0.0.1:%d", srv.port);
    replica bad;
    replica_open_url(&bad, url, 1000, false);
    cr_assert(!wait_ready(&bad, 300));
    cr_assert(strstr(dsc__redis_last_error(bad.r), "AUTH"), "%s", dsc__redis_last_error(bad.r));
    replica_close(&bad);
    /* over the Unix socket, database 2, the password from the environment's value */
    snprintf(url, sizeof url, "redis+unix://%s?db=2", srv.unix_path);
    dsc__store_url u;
    cr_assert_eq(dsc__store_url_parse("store", url, &u, NULL), DSC_OK);
    cr_assert_eq(dsc__store_url_env(&u, "pw-123", NULL), DSC_OK);
    struct event_base *base = event_base_new();
    dsc__redis_config cfg = {.url = &u};
    dsc__redis *r = dsc__redis_new(base, &cfg, NULL);
    cr_assert_not_null(r);
    for (long long end = mono_ms() + 3000; !dsc__redis_ready(r) && mono_ms() < end; nap_ms(1))
        event_base_loop(base, EVLOOP_NONBLOCK);
    cr_assert(dsc__redis_ready(r), "%s", dsc__redis_last_error(r));
    answer ans = {0};
    const char *argv[] = {"", "{}"};
    cr_assert_eq(dsc__redis_eval(r, DSC_REDIS_BUDGET, 2, argv, on_answer, &ans), DSC_OK);
    for (long long end = mono_ms() + 3000; !ans.done && mono_ms() < end;)
        event_base_loop(base, EVLOOP_ONCE);
    cr_assert_eq(ans.n, 2, "%s", ans.message);
    dsc__redis_free(r);
    event_base_free(base);
    redisContext *c = th_redis_connect(&srv);
    freeReplyObject(redisCommand(c, "AUTH pw-123"));
    cr_assert_eq(th_redis_int(c, "EXISTS %s", KEY0), 0, "database 0 was written");
    freeReplyObject(redisCommand(c, "SELECT 2"));
    cr_assert_eq(th_redis_int(c, "GET %s", KEY0), 1, "database 2 holds the budget");
    redisFree(c);
    th_redis_cleanup(&srv);
}

Test(store_redis, with_appendfsync_always_kill_9_of_redis_loses_no_acknowledged_charge) {
    th_redis srv;
    th_redis_start(&srv, "appendonly yes\nappendfsync always\n");
    replica p;
    replica_open(&p, &srv);
    counter c = {"aof", "year", 0, 0, 1000000000, 3, 1};
    int acked = 0;
    for (int i = 0; i < 200; i++) {
        char id[16];
        snprintf(id, sizeof id, "r%d", i);
        if (strcmp(reserve(&p, "0", id, "", 60000000, &c, 1).el[0], "ok") != 0) continue;
        if (strcmp(settle(&p, id, 3).el[0], "settle") == 0) acked++;
    }
    cr_assert_eq(acked, 200);
    th_redis_kill9(&srv);
    th_redis_restart(&srv);
    cr_assert(wait_ready(&p, 5000), "%s", dsc__redis_last_error(p.r));
    long long used, held;
    state(&p, &c, &used, &held, NULL);
    cr_assert_eq(used, 3LL * acked, "after kill -9: %lld of %d acknowledged", used, 3 * acked);
    cr_assert_str_eq(settle(&p, "r7", 3).el[0], "repeated", "the settle's id survived too");
    replica_close(&p);
    th_redis_cleanup(&srv);
}

Test(store_redis, the_journal_stream_holds_each_event_once_and_stays_capped) {
    th_redis srv;
    th_redis_start(&srv, NULL);
    replica p;
    replica_open(&p, &srv);
    cr_assert_str_eq(reserve(&p, "0", "r1", "", 60000000, &TEAM, 1).el[0], "ok");
    cr_assert_str_eq(settle(&p, "r1", 10).el[0], "settle");
    cr_assert_str_eq(settle(&p, "r1", 10).el[0], "repeated");
    cr_assert_str_eq(reserve(&p, "0", "r2", "", 60000000, &TEAM, 1).el[0], "ok");
    cr_assert_str_eq(cancel(&p, "r2").el[0], "cancelled");
    redisContext *c = th_redis_connect(&srv);
    cr_assert_eq(th_redis_int(c, "XLEN {discern:}journal"), 4,
                 "reserve, settle, reserve, cancel: a repeat adds nothing");
    for (int i = 0; i < 1500; i++) {
        char id[16];
        snprintf(id, sizeof id, "x%d", i);
        cr_assert_str_eq(cancel(&p, id).el[0], "unknown");
        counter tiny = TEAM;
        tiny.amount = 0;
        reserve(&p, "0", id, "", 60000000, &tiny, 1);
    }
    long long len = th_redis_int(c, "XLEN {discern:}journal");
    cr_assert_leq(len, 1000 + 200, "MAXLEN ~ 1000 left %lld entries", len);
    redisFree(c);
    replica_close(&p);
    th_redis_cleanup(&srv);
}

/* ------------------------------------------------------ reply objects in a block -- */

static void same_reply(const redisReply *a, const redisReply *b) {
    cr_assert_eq(a->type, b->type);
    cr_assert_eq(a->integer, b->integer);
    cr_assert_eq(a->len, b->len);
    cr_assert_eq(a->elements, b->elements);
    if (a->str)
        cr_assert_eq(memcmp(a->str, b->str, a->len + 1), 0);
    else
        cr_assert_null(b->str);
    for (size_t i = 0; i < a->elements; i++)
        same_reply(a->element[i], b->element[i]);
}

static void *read_reply(redisReplyObjectFunctions *fn, const char *buf, size_t len) {
    redisReader *rd = fn ? redisReaderCreateWithFunctions(fn) : redisReaderCreate();
    cr_assert_not_null(rd);
    void *reply = NULL;
    cr_assert_eq(redisReaderFeed(rd, buf, len), REDIS_OK);
    cr_assert_eq(redisReaderGetReply(rd, &reply), REDIS_OK);
    cr_assert_not_null(reply);
    redisReaderFree(rd);
    return reply;
}

Test(store_redis, a_reply_built_in_one_block_reads_as_hiredis_builds_it) {
    static char big[20000];
    memset(big, 'x', sizeof big - 1);
    char buf[40000];
    int n = snprintf(buf, sizeof buf,
                     "*7\r\n$2\r\nok\r\n:-42\r\n$-1\r\n*0\r\n+OK\r\n-ERR no\r\n"
                     "*3\r\n*2\r\n$0\r\n\r\n:7\r\n$%zu\r\n%s\r\n$3\r\nend\r\n",
                     sizeof big - 1, big);
    cr_assert(n > 0 && (size_t)n < sizeof buf);
    redisReply *want = read_reply(NULL, buf, (size_t)n);
    redisReply *got = read_reply(&dsc__redis_reply_functions, buf, (size_t)n);
    same_reply(want, got);
    cr_assert_eq(got->element[6]->element[1]->len, sizeof big - 1);
    freeReplyObject(want);
    dsc__redis_reply_functions.freeObject(got);

    /* one element at a time, a reply at a time: each reply its own block */
    redisReader *rd = redisReaderCreateWithFunctions(&dsc__redis_reply_functions);
    for (int i = 0; i < n; i++)
        cr_assert_eq(redisReaderFeed(rd, buf + i, 1), REDIS_OK);
    cr_assert_eq(redisReaderFeed(rd, ":1\r\n", 4), REDIS_OK);
    void *a = NULL, *b = NULL;
    cr_assert_eq(redisReaderGetReply(rd, &a), REDIS_OK);
    cr_assert_eq(redisReaderGetReply(rd, &b), REDIS_OK);
    want = read_reply(NULL, buf, (size_t)n);
    same_reply(want, a);
    cr_assert_eq(((redisReply *)b)->type, REDIS_REPLY_INTEGER);
    cr_assert_eq(((redisReply *)b)->integer, 1);
    freeReplyObject(want);
    dsc__redis_reply_functions.freeObject(a);
    dsc__redis_reply_functions.freeObject(b);
    redisReaderFree(rd);
}

Test(store_redis, a_malformed_reply_is_an_error_and_its_partial_block_is_freed) {
    redisReader *rd = redisReaderCreateWithFunctions(&dsc__redis_reply_functions);
    const char *bad = "*3\r\n$2\r\nok\r\n*2\r\n:1\r\n?what\r\n";
    cr_assert_eq(redisReaderFeed(rd, bad, strlen(bad)), REDIS_OK);
    void *reply = NULL;
    cr_assert_eq(redisReaderGetReply(rd, &reply), REDIS_ERR);
    cr_assert_null(reply);
    cr_assert(strstr(rd->errstr, "Protocol error") != NULL, "errstr: %s", rd->errstr);
    redisReaderFree(rd); /* ASan: the partial reply's block freed once, nothing leaked */
}
