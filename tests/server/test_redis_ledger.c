/*
 * test_redis_ledger.c - the scripts' C calls (server/redis_ledger.c): requests
 * become the ARGV the scripts expect (shown by a real redis-server answering them),
 * and every answer that is not the script's contract - another type, count or
 * number - is refused as a malformed reply instead of being read.
 */
#include "redis_harness.h"
#include "redis_ledger.h"

#include <criterion/criterion.h>
#include <jansson.h>
#include <stdlib.h>
#include <event2/event.h>
#include <string.h>
#include <time.h>

TestSuite(redis_ledger, .fini = th_kill_live_redis, .timeout = 60);

/* ------------------------------------------------------- hand-made replies -- */

static redisReply *s_(const char *text) {
    static redisReply pool[64];
    static int next;
    redisReply *r = &pool[next++ % 64];
    memset(r, 0, sizeof *r);
    r->type = REDIS_REPLY_STRING;
    r->str = (char *)text;
    r->len = strlen(text);
    return r;
}

static redisReply *i_(long long v) {
    redisReply *r = s_("");
    r->type = REDIS_REPLY_INTEGER;
    r->integer = v;
    return r;
}

static redisReply arr(redisReply **els, size_t n) {
    redisReply r = {.type = REDIS_REPLY_ARRAY, .elements = n, .element = els};
    return r;
}

Test(redis_ledger, a_held_answer_gives_the_id_expiry_and_every_counter) {
    redisReply *e[] = {s_("ok"), s_("r1"), s_("1800000000000000"),
                       s_("5"),  s_("7"),  s_("1801000000"),
                       s_("0"),  s_("2"),  s_("1802000000")};
    redisReply rep = arr(e, 9);
    dsc__redis_reserve_out out;
    dsc_error err;
    cr_assert_eq(dsc__redis_parse_reserve(&rep, 2, &out, &err), DSC_OK, "%s", err.message);
    cr_assert_eq(out.kind, DSC_REDIS_HELD);
    cr_assert_str_eq(out.reservation_id, "r1");
    cr_assert_eq(out.expires_us, 1800000000000000LL);
    cr_assert_eq(out.n, 2);
    cr_assert_eq(out.counters[0].held, 7);
    cr_assert_eq(out.counters[1].resets_at, 1802000000);
}

Test(redis_ledger, a_refusal_names_the_counter_that_would_exceed) {
    redisReply *e[] = {s_("refused"), i_(2), s_("990"), s_("5"), s_("1801000000")};
    redisReply rep = arr(e, 5);
    dsc__redis_reserve_out out;
    cr_assert_eq(dsc__redis_parse_reserve(&rep, 3, &out, NULL), DSC_OK);
    cr_assert_eq(out.kind, DSC_REDIS_REFUSED);
    cr_assert_eq(out.refused, 1);
    cr_assert_eq(out.counters[0].used, 990);
}

static void expect_malformed(redisReply *rep, size_t n) {
    dsc__redis_reserve_out out;
    dsc_error err = {0};
    cr_expect_eq(dsc__redis_parse_reserve(rep, n, &out, &err), DSC_STORE_UNAVAILABLE);
    cr_expect(strstr(err.message, "malformed reply"), "%s", err.message);
}

Test(redis_ledger, answers_outside_the_contract_are_malformed_not_read) {
    redisReply *short_ok[] = {s_("ok"), s_("r1"), s_("1")};
    redisReply r1 = arr(short_ok, 3);
    expect_malformed(&r1, 1); /* one counter promised, none given */
    redisReply *bad_num[] = {s_("ok"), s_("r1"), s_("12x"), s_("1"), s_("1"), s_("1")};
    redisReply r2 = arr(bad_num, 6);
    expect_malformed(&r2, 1);
    redisReply *bad_idx[] = {s_("refused"), i_(4), s_("1"), s_("1"), s_("1")};
    redisReply r3 = arr(bad_idx, 5);
    expect_malformed(&r3, 3); /* index past the request's counters */
    redisReply *zero_idx[] = {s_("refused"), i_(0), s_("1"), s_("1"), s_("1")};
    redisReply r4 = arr(zero_idx, 5);
    expect_malformed(&r4, 3);
    char long_id[80];
    memset(long_id, 'a', sizeof long_id - 1);
    long_id[sizeof long_id - 1] = '\0';
    redisReply *too_long[] = {s_("repeat"), s_(long_id), s_("held"), s_("1")};
    redisReply r5 = arr(too_long, 4);
    expect_malformed(&r5, 1);
    redisReply *what[] = {s_("maybe")};
    redisReply r6 = arr(what, 1);
    expect_malformed(&r6, 1);
    redisReply r7 = {.type = REDIS_REPLY_INTEGER, .integer = 1};
    expect_malformed(&r7, 1);
    redisReply *huge[] = {s_("stale"), s_("99999999999999999999999")};
    redisReply r8 = arr(huge, 2);
    expect_malformed(&r8, 1);
}

Test(redis_ledger, rollup_and_admin_pages_are_read_only_in_their_shape) {
    dsc__redis_answer a;
    dsc_error err = {0};
    redisReply *page[] = {s_("7200"), s_("0"),          s_("1800000000"),
                          s_("3600"), s_("[\"acme\"]"), s_("1,2,3,4,5,6,7")};
    redisReply r1 = arr(page, 6);
    cr_assert_eq(dsc__redis_parse_answer(DSC_REDIS_ROLLUPS, &r1, 0, &a, &err), DSC_OK, "%s",
                 err.message);
    cr_assert_eq(a.next_hour, 7200);
    cr_assert_eq(a.n, 1);
    cr_assert_str_eq(a.rows[2]->str, "1,2,3,4,5,6,7");
    redisReply r2 = arr(page, 5); /* a row cut short */
    cr_assert_eq(dsc__redis_parse_answer(DSC_REDIS_ROLLUPS, &r2, 0, &a, &err),
                 DSC_STORE_UNAVAILABLE);
    redisReply *num_row[] = {s_("7200"), s_("0"), s_("1"), i_(3600), s_("[]"), s_("1")};
    redisReply r3 = arr(num_row, 6);
    cr_assert_eq(dsc__redis_parse_answer(DSC_REDIS_ROLLUPS, &r3, 0, &a, &err),
                 DSC_STORE_UNAVAILABLE);
    redisReply *change[] = {s_("1-0"),        s_("1-0"),    s_("5"), s_("admin"),
                            s_("budget.set"), s_("team:*"), s_("")};
    redisReply r4 = arr(change, 7);
    cr_assert_eq(dsc__redis_parse_answer(DSC_REDIS_ADMIN, &r4, 0, &a, &err), DSC_OK);
    cr_assert_eq(a.n, 1);
    redisReply r5 = arr(change, 6);
    cr_assert_eq(dsc__redis_parse_answer(DSC_REDIS_ADMIN, &r5, 0, &a, &err), DSC_STORE_UNAVAILABLE);
    int64_t v = 0;
    cr_assert(dsc__redis_rollup_sum("1,2,3,4,5,6,7", DSC_METRIC_COUNT - 1, &v));
    cr_assert_eq(v, 7);
    cr_assert_not(dsc__redis_rollup_sum("1,2,3", 0, &v), "fewer than 7 sums");
    cr_assert_not(dsc__redis_rollup_sum("1,2,3,4,5,6,7,8", 0, &v), "more than 7 sums");
    cr_assert_not(dsc__redis_rollup_sum("1,x,3,4,5,6,7", 0, &v));
    cr_assert_eq(dsc__redis_seq_of_id("5-3"), (5LL << 20) | 3);
    char id[48];
    dsc__redis_id_of_seq((5LL << 20) | 3, id, sizeof id);
    cr_assert_str_eq(id, "5-3");
}

Test(redis_ledger, a_script_error_reply_is_a_bad_request_or_unavailable) {
    redisReply rep = {.type = REDIS_REPLY_ERROR, .str = "bad_request counter 1", .len = 21};
    dsc__redis_reserve_out out;
    dsc_error err;
    cr_assert_eq(dsc__redis_parse_reserve(&rep, 1, &out, &err), DSC_BAD_REQUEST);
    redisReply oom = {.type = REDIS_REPLY_ERROR, .str = "ERR something", .len = 13};
    cr_assert_eq(dsc__redis_parse_reserve(&oom, 1, &out, &err), DSC_STORE_UNAVAILABLE);
}

Test(redis_ledger, settle_answers_carry_seven_charges_and_others_none) {
    redisReply *e[] = {s_("late"), s_("0"), s_("40"), s_("0"), s_("0"), s_("0"), s_("0"), s_("0")};
    redisReply rep = arr(e, 8);
    dsc__redis_settle_out out;
    cr_assert_eq(dsc__redis_parse_settle(&rep, 0, &out, NULL), DSC_OK);
    cr_assert_eq(out.kind, DSC_REDIS_LATE);
    cr_assert_eq(out.charged.v[DSC_METRIC_GCO2E], 40);
    redisReply *f[] = {s_("forbidden")};
    redisReply rf = arr(f, 1);
    cr_assert_eq(dsc__redis_parse_settle(&rf, 0, &out, NULL), DSC_OK);
    cr_assert_eq(out.kind, DSC_REDIS_FORBIDDEN);
    redisReply *missing[] = {s_("settle"), s_("1")};
    redisReply rm = arr(missing, 2);
    cr_assert_eq(dsc__redis_parse_settle(&rm, 0, &out, NULL), DSC_STORE_UNAVAILABLE);
}

Test(redis_ledger, settle_answers_carry_each_counters_state_after_the_charges) {
    redisReply *e[] = {s_("settle"), s_("0"), s_("40"), s_("0"), s_("0"),         s_("0"),
                       s_("0"),      s_("0"), s_("90"), s_("5"), s_("1700000000")};
    redisReply rep = arr(e, 11);
    dsc__redis_settle_out out;
    cr_assert_eq(dsc__redis_parse_settle(&rep, 1, &out, NULL), DSC_OK);
    cr_assert_eq(out.n, 1);
    cr_assert_eq(out.counters[0].used, 90);
    cr_assert_eq(out.counters[0].held, 5);
    cr_assert_eq(out.counters[0].resets_at, 1700000000);
    /* a counter more or less than the request named is a malformed reply */
    cr_assert_eq(dsc__redis_parse_settle(&rep, 0, &out, NULL), DSC_STORE_UNAVAILABLE);
    cr_assert_eq(dsc__redis_parse_settle(&rep, 2, &out, NULL), DSC_STORE_UNAVAILABLE);
}

/* -------------------------------------------------------- against Redis -- */

typedef struct done {
    bool done;
    dsc_status st;
    dsc__redis_reserve_out r;
    dsc__redis_settle_out s;
    char message[256];
} done;

static void on_reserved(void *ud, dsc_status st, const dsc__redis_reserve_out *out,
                        const dsc_error *err) {
    done *d = ud;
    d->done = true, d->st = st;
    if (out) d->r = *out;
    snprintf(d->message, sizeof d->message, "%s", err->message);
}

static void on_settled(void *ud, dsc_status st, const dsc__redis_settle_out *out,
                       const dsc_error *err) {
    done *d = ud;
    d->done = true, d->st = st;
    if (out) d->s = *out;
    snprintf(d->message, sizeof d->message, "%s", err->message);
}

static void run_until(struct event_base *b, const bool *flag) {
    for (time_t end = time(NULL) + 5; !*flag && time(NULL) <= end;)
        event_base_loop(b, EVLOOP_ONCE | EVLOOP_NONBLOCK);
    cr_assert(*flag, "no answer within 5 s");
}

Test(redis_ledger, a_reserve_and_its_settle_round_trip_through_redis) {
    th_redis srv;
    th_redis_start(&srv, NULL);
    char url[128];
    th_redis_url(&srv, url, sizeof url);
    dsc__store_url u;
    cr_assert_eq(dsc__store_url_parse("store", url, &u, NULL), DSC_OK);
    struct event_base *base = event_base_new();
    dsc__redis_config cfg = {.url = &u};
    dsc__redis *r = dsc__redis_new(base, &cfg, NULL);
    cr_assert_not_null(r);
    for (time_t end = time(NULL) + 5; !dsc__redis_ready(r) && time(NULL) <= end;)
        event_base_loop(base, EVLOOP_ONCE | EVLOOP_NONBLOCK);
    cr_assert(dsc__redis_ready(r), "%s", dsc__redis_last_error(r));

    dsc__redis_counter c[2] = {
        {.name = "org:acme/team:infra#1", .limit = 1000, .amount = 600, .metric = DSC_METRIC_GCO2E},
        {.name = "org:acme#2", .limit = 10, .amount = 1, .metric = DSC_METRIC_REQUESTS}};
    cr_assert_eq(dsc_window_parse("month", &c[0].window, NULL), DSC_OK);
    cr_assert_eq(dsc_window_parse("rate:5/1m", &c[1].window, NULL), DSC_OK);
    dsc__redis_reserve_req rq = {.reservation_id = "res-1",
                                 .request_id = "req-1",
                                 .owner_key = "k1",
                                 .ttl_us = 60000000,
                                 .counters = c,
                                 .n = 2};
    done d = {0};
    dsc_error err;
    cr_assert_eq(dsc__redis_reserve(r, &rq, on_reserved, &d, &err), DSC_OK, "%s", err.message);
    run_until(base, &d.done);
    cr_assert_eq(d.st, DSC_OK, "%s", d.message);
    cr_assert_eq(d.r.kind, DSC_REDIS_HELD);
    cr_assert_eq(d.r.counters[0].held, 600);
    cr_assert_eq(d.r.counters[1].held, 1);

    rq.reservation_id = "res-2";
    d = (done){0};
    cr_assert_eq(dsc__redis_reserve(r, &rq, on_reserved, &d, &err), DSC_OK);
    run_until(base, &d.done);
    cr_assert_eq(d.r.kind, DSC_REDIS_REPEAT);
    cr_assert_str_eq(d.r.reservation_id, "res-1");

    dsc__redis_settle_req sq = {
        .reservation_id = "res-1", .owner_key = "k1", .counters = c, .n = 2};
    sq.actual.v[DSC_METRIC_GCO2E] = 450;
    sq.actual.v[DSC_METRIC_REQUESTS] = 1;
    d = (done){0};
    cr_assert_eq(dsc__redis_settle(r, &sq, on_settled, &d, &err), DSC_OK, "%s", err.message);
    run_until(base, &d.done);
    cr_assert_eq(d.st, DSC_OK, "%s", d.message);
    cr_assert_eq(d.s.kind, DSC_REDIS_SETTLED);
    cr_assert_eq(d.s.charged.v[DSC_METRIC_GCO2E], 450);
    cr_assert_eq(d.s.n, 2); /* the counters after the settle, in the same answer */
    cr_assert_eq(d.s.counters[0].used, 450);
    cr_assert_eq(d.s.counters[0].held, 0);
    cr_assert_eq(d.s.counters[1].used, 1);
    cr_assert_eq(d.s.counters[1].held, 0);

    rq.reservation_id = "res-3", rq.request_id = NULL;
    c[0].amount = 551; /* 450 used + 551 > 1000 */
    d = (done){0};
    cr_assert_eq(dsc__redis_reserve(r, &rq, on_reserved, &d, &err), DSC_OK);
    run_until(base, &d.done);
    cr_assert_eq(d.r.kind, DSC_REDIS_REFUSED);
    cr_assert_eq(d.r.refused, 0);
    cr_assert_eq(d.r.counters[0].used, 450);

    c[0].amount = -1;
    cr_assert_eq(dsc__redis_reserve(r, &rq, on_reserved, &d, &err), DSC_BAD_REQUEST);
    cr_assert(strstr(err.message, "counters[0]"), "%s", err.message);
    dsc__redis_free(r);
    event_base_free(base);
    th_redis_cleanup(&srv);
}

/* ------------------------------------------------------------ hold facts -- */

Test(redis_ledger, hold_facts_unpack_to_what_was_packed_whatever_the_bytes) {
    const char *const v[] = {"org:acme",
                             "",
                             "12:34",
                             NULL,
                             "a\x1f"
                             "b",
                             "x"};
    char packed[128];
    cr_assert(dsc__redis_facts_pack(packed, sizeof packed, v, 6));
    cr_assert_str_eq(packed, "8:org:acme0:5:12:340:3:a\x1f"
                             "b1:x");
    const char *p = packed, *end = packed + strlen(packed);
    for (int i = 0; i < 6; i++) {
        char out[16];
        cr_assert(dsc__redis_facts_next(&p, end, out, sizeof out), "field %d", i);
        cr_assert_str_eq(out, v[i] ? v[i] : "", "field %d", i);
    }
    cr_assert_eq(p, end);
    char small[8];
    cr_assert_not(dsc__redis_facts_pack(small, sizeof small, v, 1), "8:org:acme needs 11 bytes");
}

Test(redis_ledger, hold_facts_that_lie_about_their_length_are_not_read) {
    static const char *const bad[] = {
        "", "x", "5:abc", "3abc", ":abc", "99999999999999999999:a", "4:abcd"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        const char *p = bad[i], *end = bad[i] + strlen(bad[i]);
        char out[4]; /* "4:abcd" does not fit 4 bytes with its NUL */
        cr_assert_not(dsc__redis_facts_next(&p, end, out, sizeof out), "'%s' was read", bad[i]);
        cr_assert_eq(p, bad[i], "'%s' moved the cursor", bad[i]);
    }
    const char nul[] = "2:a\0b";
    const char *p = nul;
    char out[8];
    cr_assert_not(dsc__redis_facts_next(&p, nul + 5, out, sizeof out), "a NUL inside a field");
}

Test(redis_ledger, numbers_are_written_in_decimal_at_both_ends_of_the_range) {
    static const int64_t v[] = {0, 7, -7, 1000000, INT64_MAX, INT64_MIN};
    static const char *const want[] = {
        "0", "7", "-7", "1000000", "9223372036854775807", "-9223372036854775808"};
    for (size_t i = 0; i < sizeof v / sizeof *v; i++) {
        char out[24];
        *dsc__redis_put_int(out, v[i]) = '\0';
        cr_assert_str_eq(out, want[i]);
    }
}

/* Every width from 1 to 19 digits, and each value below 100000, as printf writes it. */
Test(redis_ledger, numbers_of_every_width_are_written_as_printf_writes_them) {
    char out[24], want[24];
    for (int64_t v = -100000; v <= 100000; v++) {
        *dsc__redis_put_int(out, v) = '\0';
        snprintf(want, sizeof want, "%lld", (long long)v);
        cr_assert_str_eq(out, want);
    }
    for (int64_t p = 10; p <= INT64_MAX / 10; p *= 10)
        for (int64_t d = -1; d <= 1; d++) {
            *dsc__redis_put_int(out, p + d) = '\0';
            snprintf(want, sizeof want, "%lld", (long long)(p + d));
            cr_assert_str_eq(out, want);
            *dsc__redis_put_int(out, -(p + d)) = '\0';
            snprintf(want, sizeof want, "%lld", (long long)-(p + d));
            cr_assert_str_eq(out, want);
        }
}

/* --------------------------------------------------------- journal records -- */

Test(redis_ledger, a_packed_journal_record_loads_as_named_typed_fields) {
    const char *const v[] = {"d-1",
                             "",
                             "1700000000000000",
                             "acme",
                             "infra",
                             "ana",
                             "",
                             "chat",
                             "openai",
                             "gpt-4o",
                             "100",
                             "20",
                             "5",
                             "-3",
                             "0",
                             "allow",
                             "budgets",
                             "v1",
                             "a \"quoted\" reason",
                             "r1",
                             "k1",
                             "FRA",
                             "productive",
                             "[{\"policy\":\"budgets\"}]",
                             "{}",
                             "3"};
    char text[1024];
    cr_assert(dsc__redis_facts_pack(text, sizeof text, v, sizeof v / sizeof *v));
    json_t *o = dsc__redis_journal_load(text, strlen(text));
    cr_assert_not_null(o);
    cr_assert_str_eq(json_string_value(json_object_get(o, "decision_id")), "d-1");
    cr_assert_eq(json_integer_value(json_object_get(o, "at_us")), 1700000000000000LL);
    cr_assert_eq(json_integer_value(json_object_get(o, "est_gco2e")), -3);
    cr_assert_str_eq(json_string_value(json_object_get(o, "reason")), "a \"quoted\" reason");
    cr_assert_str_eq(json_string_value(json_object_get(o, "verdicts")),
                     "[{\"policy\":\"budgets\"}]");
    cr_assert_eq(json_integer_value(json_object_get(o, "warnings")), 3);
    json_decref(o);

    const char old[] = "{\"decision_id\":\"d-0\",\"at_us\":5}";
    o = dsc__redis_journal_load(old, strlen(old));
    cr_assert_str_eq(json_string_value(json_object_get(o, "decision_id")), "d-0",
                     "a record of an earlier version, JSON, is read as it is");
    json_decref(o);

    char bad[1100];
    snprintf(bad, sizeof bad, "%s1:x", text);
    cr_assert_null(dsc__redis_journal_load(bad, strlen(bad)), "one field too many");
    cr_assert_null(dsc__redis_journal_load(text, strlen(text) - 2), "cut short");
    const char *const nonnum[] = {"d", "", "12x"};
    cr_assert(dsc__redis_facts_pack(bad, sizeof bad, nonnum, 3));
    cr_assert_null(dsc__redis_journal_load(bad, strlen(bad)), "at_us is no integer");
}

/* The group of a charge without a hold is written without jansson, and must be the
 * same hash field as jansson wrote before (a rolling upgrade adds to the same sums):
 * every byte below 0x80, quotes, backslashes and multi-byte UTF-8 compared. */
Test(redis_ledger, a_rollup_group_is_the_text_jansson_writes_for_every_byte) {
    char one[2] = {0};
    const char *samples[] = {"org:acme", "", "team \"q\" \\ /x", "caf\xc3\xa9 \xe2\x82\xac",
                             "\x7f\x1f\x01 end"};
    for (int c = 1; c < 0x80 + 5; c++) {
        const char *part = samples[0];
        if (c < 0x80) {
            one[0] = (char)c;
            part = one;
        } else {
            part = samples[c - 0x80];
        }
        const char *v[DSC_REDIS_GROUP_PARTS] = {"org:acme", part, NULL, "key-1", "", part, ""};
        json_t *a = json_pack("[s,s,s,s,s,s,s]", v[0], v[1], "", v[3], v[4], v[5], v[6]);
        cr_assert_not_null(a, "byte %d", c);
        char *want = json_dumps(a, JSON_COMPACT);
        char *got = dsc__redis_group_text(v);
        cr_assert_not_null(got);
        cr_assert_str_eq(got, want, "byte %d", c);
        free(got);
        free(want);
        json_decref(a);
    }
}
