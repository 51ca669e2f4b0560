/*
 * redis_ledger.c - what one decision on the Redis store costs Redis: the ledger's
 * own scripts (server/redis/, through server/store_redis.c) driven like discernd
 * drives them, a reserve over three counters then the settle of its actual.
 *
 *   redis_ledger --url redis://127.0.0.1:6379 [--connections 8] [--pipeline 16]
 *                [--seconds 5] [--limit N] [--tag NAME]
 *
 * Every connection is one "replica" loop with `pipeline` decisions in flight. With
 * --limit the team counter has that limit (micro-units; each hold asks 1000..1999
 * and settles 0..the hold), so refusals happen and the check at the end is whether
 * used + held ever passed the limit. Prints one line:
 *   tag decisions=N seconds=S decisions_per_s=R refused=N used=U held=H limit=L overshoot=no
 * and its own CPU seconds; bench/redis_store.sh reads Redis's CPU time around it.
 */
#include "redis_ledger.h"
#include "store_redis.h"

#include <event2/event.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

typedef struct bench bench;

typedef struct slot {
    bench *b;
    int conn;
    char id[48];
    long long amount;
} slot;

struct bench {
    struct event_base *base;
    dsc__redis **r;
    int connections, pipeline;
    long long limit, decisions, refused, errors, seq;
    double end;
    unsigned rng;
    const char *tag;
};

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void start_decision(slot *s);

/* What discernd keeps with a hold (packed in main): subject, provider, model, zone,
 * purpose, then what the check held of each metric; a settle's hourly rollup reads it. */
static char facts[256];

/* What discernd journals with a hold: the decision's audit record, packed the way
 * discernd packs it (DSC_REDIS_JOURNAL_FIELDS, server/ledger_redis.c), 237 bytes;
 * and the hold's rollup group (dsc__redis_group_text). */
static char detail[1024];
static char *group;

static double cpu_s(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
           (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
}

static void on_settled(void *ud, dsc_status st, const redisReply *rep, const char *msg) {
    slot *s = ud;
    (void)msg;
    if (st != DSC_OK || !rep || rep->type != REDIS_REPLY_ARRAY)
        s->b->errors++;
    else
        s->b->decisions++;
    start_decision(s);
}

static void send_settle(slot *s) {
    char actual[24];
    snprintf(actual, sizeof actual, "%lld",
             s->amount ? (long long)(rand_r(&s->b->rng) % s->amount) : 0);
    const char *argv[] = {s->id, "bench", "60", "",  "1000000", "0", actual,
                          "0",   "0",     "0",  "0", "0",       "0", "0"};
    if (dsc__redis_eval(s->b->r[s->conn], DSC_REDIS_SETTLE, 14, argv, on_settled, s) != DSC_OK) {
        s->b->errors++;
        start_decision(s);
    }
}

static void on_reserved(void *ud, dsc_status st, const redisReply *rep, const char *msg) {
    slot *s = ud;
    (void)msg;
    if (st != DSC_OK || !rep || rep->type != REDIS_REPLY_ARRAY || rep->elements < 1) {
        s->b->errors++;
        start_decision(s);
    } else if (strcmp(rep->element[0]->str, "ok") == 0) {
        send_settle(s);
    } else {
        s->b->refused++;
        s->b->decisions++;
        start_decision(s);
    }
}

static void start_decision(slot *s) {
    bench *b = s->b;
    if (now_s() >= b->end) return;
    snprintf(s->id, sizeof s->id, "%s-%d-%lld", b->tag, s->conn, ++b->seq);
    s->amount = 1000 + rand_r(&b->rng) % 1000;
    char amount[24], limit[24];
    snprintf(amount, sizeof amount, "%lld", s->amount);
    snprintf(limit, sizeof limit, "%lld", b->limit);
    const char *argv[] = {"0",
                          s->id,
                          "",
                          "60000000",
                          "0",
                          "bench",
                          detail,
                          facts,
                          group,
                          "1000000",
                          "3",
                          "org:bench/team:t/1",
                          "month",
                          "0",
                          "0",
                          limit,
                          amount,
                          "1",
                          "org:bench/2",
                          "day",
                          "0",
                          "0",
                          "9000000000000",
                          amount,
                          "1",
                          "org:bench/user:u/3",
                          "rolling",
                          "3600000000",
                          "0",
                          "9000000000000",
                          amount,
                          "1"};
    if (dsc__redis_eval(b->r[s->conn], DSC_REDIS_RESERVE, 32, argv, on_reserved, s) != DSC_OK)
        b->errors++;
}

/* A number of state.lua's answer: an integer reply, or digits from older scripts. */
static long long reply_number(const redisReply *r) {
    if (r->type == REDIS_REPLY_INTEGER) return r->integer;
    return r->type == REDIS_REPLY_STRING && r->str ? atoll(r->str) : 0;
}

static void on_state(void *ud, dsc_status st, const redisReply *rep, const char *msg) {
    long long *out = ud;
    (void)msg;
    if (st == DSC_OK && rep && rep->type == REDIS_REPLY_ARRAY && rep->elements == 4) {
        out[0] = reply_number(rep->element[1]);
        out[1] = reply_number(rep->element[2]);
    }
    out[2] = 1;
}

static void on_tick(evutil_socket_t fd, short what, void *arg) {
    (void)fd;
    (void)what;
    bench *b = arg;
    if (now_s() > b->end + 2) event_base_loopbreak(b->base);
}

static long long arg_int(int argc, char **argv, const char *name, long long dflt) {
    for (int i = 1; i + 1 < argc; i++)
        if (strcmp(argv[i], name) == 0) return atoll(argv[i + 1]);
    return dflt;
}

static const char *arg_str(int argc, char **argv, const char *name, const char *dflt) {
    for (int i = 1; i + 1 < argc; i++)
        if (strcmp(argv[i], name) == 0) return argv[i + 1];
    return dflt;
}

int main(int argc, char **argv) {
    for (int i = 1; i < argc; i++)
        if (strcmp(argv[i], "--help") == 0) {
            puts("usage: redis_ledger --url redis://HOST:PORT [--connections N] [--pipeline N]\n"
                 "                    [--seconds S] [--limit MICRO] [--tag NAME]");
            return 0;
        }
    bench b = {0};
    b.connections = (int)arg_int(argc, argv, "--connections", 8);
    b.pipeline = (int)arg_int(argc, argv, "--pipeline", 16);
    b.limit = arg_int(argc, argv, "--limit", 9000000000000LL);
    b.tag = arg_str(argc, argv, "--tag", "run");
    b.rng = (unsigned)time(NULL) ^ (unsigned)b.connections;
    double seconds = (double)arg_int(argc, argv, "--seconds", 5);
    static const char *const fv[] = {"org:bench", "team:t", "user:u",      "bench", "openai",
                                     "gpt-4o",    "FR",     "code-review", "1834",  "712",
                                     "0",         "5",      "2210",        "800",   "1"};
    if (!dsc__redis_facts_pack(facts, sizeof facts, fv, sizeof fv / sizeof *fv)) return 1;
    static const char *const jv[] = {"d-0123456789abcdef",
                                     "",
                                     "1764633600000000",
                                     "org:bench",
                                     "team:t",
                                     "user:u",
                                     "bench",
                                     "code-review",
                                     "openai",
                                     "gpt-4o",
                                     "1200",
                                     "800",
                                     "1834",
                                     "712",
                                     "2210",
                                     "allow",
                                     "budgets",
                                     "3f2a9c",
                                     "within every budget",
                                     "r-0123456789abcdef",
                                     "bench",
                                     "FR",
                                     "engineering",
                                     "[]",
                                     "[]",
                                     "0"};
    if (!dsc__redis_facts_pack(detail, sizeof detail, jv, sizeof jv / sizeof *jv)) return 1;
    const char *gv[DSC_REDIS_GROUP_PARTS] = {"org:bench", "team:t", "user:u",     "bench",
                                             "openai",    "gpt-4o", "code-review"};
    if (!(group = dsc__redis_group_text(gv))) return 1;
    dsc__store_url url;
    dsc_error err;
    if (dsc__store_url_parse("--url", arg_str(argc, argv, "--url", ""), &url, &err) != DSC_OK ||
        url.kind < DSC_STORE_REDIS_TCP || b.connections < 1 || b.pipeline < 1) {
        fprintf(stderr, "redis_ledger: %s\n",
                url.kind < DSC_STORE_REDIS_TCP ? "--url must be redis://" : err.message);
        return 2;
    }
    b.base = event_base_new();
    b.r = calloc((size_t)b.connections, sizeof *b.r);
    slot *slots = calloc((size_t)(b.connections * b.pipeline), sizeof *slots);
    if (!b.base || !b.r || !slots) return 1;
    dsc__redis_config cfg = {.url = &url, .timeout_ms = 5000};
    for (int c = 0; c < b.connections; c++)
        if (!(b.r[c] = dsc__redis_new(b.base, &cfg, &err))) {
            fprintf(stderr, "redis_ledger: %s\n", err.message);
            return 1;
        }
    for (double t0 = now_s(); now_s() - t0 < 5;) {
        event_base_loop(b.base, EVLOOP_NONBLOCK);
        int ready = 0;
        for (int c = 0; c < b.connections; c++)
            ready += dsc__redis_ready(b.r[c]);
        if (ready == b.connections) break;
    }
    double t0 = now_s(), cpu0 = cpu_s();
    b.end = t0 + seconds;
    for (int c = 0; c < b.connections; c++)
        for (int p = 0; p < b.pipeline; p++) {
            slot *s = &slots[c * b.pipeline + p];
            s->b = &b, s->conn = c;
            start_decision(s);
        }
    struct event *tick = event_new(b.base, -1, EV_PERSIST, on_tick, &b);
    struct timeval ms100 = {0, 100000};
    event_add(tick, &ms100);
    event_base_dispatch(b.base);
    double took = now_s() - t0, cpu = cpu_s() - cpu0;
    long long st[3] = {0, 0, 0};
    const char *sargv[] = {"0", "1", "org:bench/team:t/1", "month", "0", "0"};
    dsc__redis_eval(b.r[0], DSC_REDIS_STATE, 6, sargv, on_state, st);
    while (!st[2])
        event_base_loop(b.base, EVLOOP_ONCE);
    printf("%s decisions=%lld seconds=%.2f decisions_per_s=%.0f refused=%lld errors=%lld "
           "used=%lld held=%lld limit=%lld overshoot=%s client_cpu_s=%.3f\n",
           b.tag, b.decisions, took > seconds ? seconds : took,
           (double)b.decisions / (took > seconds ? seconds : took), b.refused, b.errors, st[0],
           st[1], b.limit, st[0] + st[1] > b.limit ? "YES" : "no", cpu);
    event_free(tick);
    for (int c = 0; c < b.connections; c++)
        dsc__redis_free(b.r[c]);
    free(b.r);
    free(slots);
    event_base_free(b.base);
    free(group);
    return b.errors ? 1 : 0;
}
