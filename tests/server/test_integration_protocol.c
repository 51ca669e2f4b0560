/*
 * test_integration_protocol.c - a real discernd on an ephemeral port and a Unix
 * socket: framing, pipelining, errors, auth, limits, hostile clients, shutdown.
 * (Method semantics that need the catalogue and the ledger are in
 * test_integration_methods.c.)
 */
#include "harness.h"

#include <criterion/criterion.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static th_server srv;

static void start(void) {
    th_server_start(&srv, NULL);
}
static void stop(void) {
    th_server_cleanup(&srv);
}

TestSuite(protocol, .init = start, .fini = stop, .timeout = 60);

static void assert_ping_works(th_client *c) {
    json_t *r = th_call(c, "ping", NULL);
    cr_assert_not_null(th_result(r), "ping failed: %s", th_error_message(r));
    cr_assert(json_is_true(json_object_get(th_result(r), "pong")));
    json_decref(r);
}

Test(protocol, ping_answers_over_tcp_and_unix_socket) {
    th_client *t = th_connect_tcp(&srv);
    th_client *u = th_connect_unix(&srv);
    assert_ping_works(t);
    assert_ping_works(u);
    json_t *r = th_call(u, "ping", "{}");
    cr_assert_str_eq(json_string_value(json_object_get(th_result(r), "version")), "0.1.0");
    json_decref(r);
    th_client_free(t);
    th_client_free(u);
}

Test(protocol, unknown_method_is_a_bad_request_naming_it) {
    th_client *c = th_connect_tcp(&srv);
    json_t *r = th_call(c, "frobnicate", "{}");
    cr_assert_str_eq(th_error_code(r), "bad_request");
    cr_assert(strstr(th_error_message(r), "'frobnicate'"), "%s", th_error_message(r));
    cr_assert(json_is_null(json_array_get(r, 3)));
    json_decref(r);
    assert_ping_works(c);
    th_client_free(c);
}

Test(protocol, params_given_as_a_bare_map_get_an_error_with_the_msgid) {
    th_client *c = th_connect_tcp(&srv);
    /* [0, 77, "ping", {}] */
    const unsigned char bad[] = {0x94, 0x00, 0x4d, 0xa4, 'p', 'i', 'n', 'g', 0x80};
    th_send_raw(c, bad, sizeof bad);
    json_t *r = th_read(c, 5000);
    cr_assert_not_null(r);
    cr_assert_eq(json_integer_value(json_array_get(r, 1)), 77);
    cr_assert_str_eq(th_error_code(r), "bad_request");
    cr_assert(strstr(th_error_message(r), "params"), "%s", th_error_message(r));
    json_decref(r);
    assert_ping_works(c);
    th_client_free(c);
}

Test(protocol, wrong_param_type_names_the_field) {
    th_client *c = th_connect_unix(&srv);
    json_t *r = th_call(c, "auth", "{\"token\": 12}");
    cr_assert_str_eq(th_error_code(r), "bad_request");
    cr_assert_str_eq(th_error_message(r), "field 'token': expected a string, got integer");
    json_decref(r);
    th_client_free(c);
}

Test(protocol, auth_with_a_wrong_token_is_unauthorized_and_the_right_one_grants_admin) {
    th_client *c = th_connect_tcp(&srv);
    json_t *r = th_call(c, "auth", "{\"token\": \"guess\"}");
    cr_assert_str_eq(th_error_code(r), "unauthorized");
    json_decref(r);
    r = th_call(c, "auth", "{\"token\": \"" TH_ADMIN_TOKEN "\"}");
    cr_assert(json_is_true(json_object_get(th_result(r), "admin")), "%s", th_error_message(r));
    json_decref(r);
    th_client_free(c);
    /* The token never reaches the log. */
    FILE *f = fopen(srv.log, "r");
    char line[2048];
    while (f && fgets(line, sizeof line, f))
        cr_assert_null(strstr(line, TH_ADMIN_TOKEN), "%s", line);
    if (f) fclose(f);
}

Test(protocol, thousand_pipelined_requests_are_answered_once_each_with_their_msgid) {
    th_client *c = th_connect_admin(&srv);
    enum { N = 1000 };
    for (uint32_t i = 0; i < N; i++)
        th_send_request(c, 5000 + i, i % 2 ? "ping" : "stats", "{}");
    static int seen[N];
    memset(seen, 0, sizeof seen);
    for (int k = 0; k < N; k++) {
        json_t *r = th_read(c, 5000);
        cr_assert_not_null(r, "only %d of %d answered", k, N);
        json_int_t id = json_integer_value(json_array_get(r, 1));
        cr_assert(id >= 5000 && id < 5000 + N, "unexpected msgid %lld", (long long)id);
        cr_assert_not_null(th_result(r), "%s", th_error_message(r));
        seen[id - 5000]++;
        json_decref(r);
    }
    for (int i = 0; i < N; i++)
        cr_assert_eq(seen[i], 1, "msgid %d answered %d times", 5000 + i, seen[i]);
    cr_assert_null(th_read(c, 200), "no extra replies");
    th_client_free(c);
}

Test(protocol, notifications_are_executed_without_a_reply) {
    th_client *c = th_connect_admin(&srv);
    th_send_notification(c, "ping", "{}");
    th_send_notification(c, "no-such-method", "{}");
    json_t *r = th_call(c, "stats", "{}");
    /* The first thing read is the stats reply: the notifications got none. */
    cr_assert_not_null(th_result(r));
    cr_assert_geq(json_integer_value(json_object_get(th_result(r), "requests")), 3);
    json_decref(r);
    th_client_free(c);
}

Test(protocol, garbage_bytes_get_an_error_and_a_close_while_another_client_is_served) {
    th_client *bad = th_connect_tcp(&srv);
    th_client *good = th_connect_unix(&srv);
    const unsigned char garbage[] = {0xc1, 0xde, 0xad, 0xbe, 0xef};
    th_send_raw(bad, garbage, sizeof garbage);
    json_t *n = th_read(bad, 5000);
    cr_assert_not_null(n);
    cr_assert_str_eq(json_string_value(json_array_get(n, 1)), "error");
    cr_assert_str_eq(
        json_string_value(json_object_get(json_array_get(json_array_get(n, 2), 0), "code")),
        "bad_request");
    json_decref(n);
    cr_assert(th_closed(bad, 5000));
    assert_ping_works(good);
    th_client_free(bad);
    th_client_free(good);
}

Test(protocol, a_few_bytes_declaring_huge_containers_are_closed_and_memory_stays_bounded) {
    long before = th_server_rss_kib(&srv);
    const unsigned char bombs[][6] = {
        {0xdd, 0xff, 0xff, 0xff, 0xff},       /* array32 of 4G elements */
        {0xdf, 0xff, 0xff, 0xff, 0xff},       /* map32 of 4G pairs */
        {0xdb, 0x7f, 0xff, 0xff, 0xff},       /* str32 of 2 GB */
        {0x94, 0x00, 0x01, 0xdc, 0xff, 0xff}, /* a 64K-element array inside a request */
    };
    for (int i = 0; i < 4; i++) {
        for (int k = 0; k < 25; k++) {
            th_client *c = th_connect_tcp(&srv);
            th_send_raw(c, bombs[i], i == 3 ? 6 : 5);
            json_t *n = th_read(c, 5000);
            cr_assert_not_null(n, "bomb %d: no error notification", i);
            cr_assert_str_eq(
                json_string_value(json_object_get(json_array_get(json_array_get(n, 2), 0), "code")),
                "too_large");
            json_decref(n);
            cr_assert(th_closed(c, 5000), "bomb %d: not closed", i);
            th_client_free(c);
        }
    }
    long after = th_server_rss_kib(&srv);
    cr_assert_lt(after - before, 16 * 1024, "RSS grew from %ld to %ld KiB", before, after);
    th_client *c = th_connect_tcp(&srv);
    assert_ping_works(c);
    th_client_free(c);
}

Test(protocol, an_oversized_frame_is_closed_with_too_large) {
    th_client *c = th_connect_unix(&srv);
    /* [0, 1, "auth", [{"token": <100 000 bytes>}]] */
    size_t n = 100000;
    unsigned char head[] = {0x94, 0x00, 0x01, 0xa4, 'a', 'u',  't',  'h',  0x91, 0x81, 0xa5,
                            't',  'o',  'k',  'e',  'n', 0xdb, 0x00, 0x01, 0x86, 0xa0};
    th_send_raw(c, head, sizeof head);
    char *body = malloc(n);
    memset(body, 'x', n);
    th_send_raw(c, body, n);
    free(body);
    json_t *r = th_read(c, 5000);
    cr_assert_not_null(r);
    cr_assert_str_eq(
        json_string_value(json_object_get(json_array_get(json_array_get(r, 2), 0), "code")),
        "too_large");
    json_decref(r);
    cr_assert(th_closed(c, 5000));
    th_client_free(c);
}

Test(protocol, a_request_over_the_nesting_limit_gets_too_large_and_the_connection_goes_on) {
    th_client *c = th_connect_tcp(&srv);
    /* [0, 9, "ping", [[[[ ... 20 deep ... ]]]]] */
    unsigned char msg[64] = {0x94, 0x00, 0x09, 0xa4, 'p', 'i', 'n', 'g'};
    size_t n = 8;
    for (int i = 0; i < 20; i++)
        msg[n++] = 0x91;
    msg[n++] = 0xc0;
    th_send_raw(c, msg, n);
    json_t *r = th_read(c, 5000);
    cr_assert_not_null(r);
    cr_assert_eq(json_integer_value(json_array_get(r, 1)), 9);
    cr_assert_str_eq(th_error_code(r), "too_large");
    cr_assert(strstr(th_error_message(r), "nesting depth"), "%s", th_error_message(r));
    json_decref(r);
    assert_ping_works(c);
    th_client_free(c);
}

Test(protocol, a_one_byte_per_interval_sender_is_answered_and_does_not_block_others) {
    th_client *slow = th_connect_tcp(&srv);
    th_client *fast = th_connect_unix(&srv);
    const unsigned char ping[] = {0x94, 0x00, 0x2a, 0xa4, 'p', 'i', 'n', 'g', 0x90};
    for (size_t i = 0; i < sizeof ping; i++) {
        th_send_raw(slow, ping + i, 1);
        struct timespec t0, t1;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        assert_ping_works(fast); /* served meanwhile, promptly */
        clock_gettime(CLOCK_MONOTONIC, &t1);
        double ms = (double)(t1.tv_sec - t0.tv_sec) * 1e3 + (double)(t1.tv_nsec - t0.tv_nsec) / 1e6;
        cr_assert_lt(ms, 1000.0, "the other client waited %.0f ms", ms);
        th_sleep_ms(250);
    }
    json_t *r = th_read(slow, 5000);
    cr_assert_not_null(r);
    cr_assert_eq(json_integer_value(json_array_get(r, 1)), 42);
    cr_assert_not_null(th_result(r));
    json_decref(r);
    th_client_free(slow);
    th_client_free(fast);
}

Test(protocol, sigterm_drains_answers_what_was_read_and_exits_zero) {
    th_client *c = th_connect_tcp(&srv);
    /* 100 pings in one send, so the server reads them in one go. */
    unsigned char burst[100 * 9];
    for (int i = 0; i < 100; i++) {
        const unsigned char ping[] = {0x94, 0x00, (unsigned char)i, 0xa4, 'p', 'i', 'n', 'g', 0x90};
        memcpy(burst + 9 * i, ping, 9);
    }
    th_send_raw(c, burst, sizeof burst);
    json_t *first = th_read(c, 5000); /* the server has read the burst */
    cr_assert_not_null(first);
    json_decref(first);
    cr_assert_eq(th_server_stop(&srv), 0);
    int answered = 1;
    json_t *r;
    while ((r = th_read(c, 1000)) != NULL) {
        answered++;
        json_decref(r);
    }
    cr_assert_eq(answered, 100, "only %d of 100 pipelined requests were answered", answered);
    struct stat st;
    cr_assert_neq(stat(srv.unix_path, &st), 0, "the Unix socket file is removed");
    th_client_free(c);
}

/* Servers with their own configuration. */

Test(limits, a_silent_partial_message_is_closed_after_the_idle_timeout, .timeout = 30) {
    th_server s;
    th_server_start(&s, "idle_timeout_s = 1");
    th_client *c = th_connect_tcp(&s);
    const unsigned char partial[] = {0x94, 0x00, 0x01};
    th_send_raw(c, partial, sizeof partial);
    cr_assert(th_closed(c, 4000), "not closed after the 1 s idle timeout");
    th_client_free(c);
    th_server_cleanup(&s);
}

Test(limits, connections_over_max_connections_are_closed_at_once, .timeout = 30) {
    th_server s;
    th_server_start(&s, "max_connections = 2");
    th_client *a = th_connect_tcp(&s), *b = th_connect_unix(&s);
    assert_ping_works(a);
    assert_ping_works(b);
    th_client *c = th_connect_tcp(&s);
    cr_assert(th_closed(c, 5000));
    th_client_free(c);
    assert_ping_works(a);
    th_client_free(a);
    th_client_free(b);
    th_server_cleanup(&s);
}

Test(limits, a_peer_that_never_reads_its_replies_is_dropped_after_the_idle_timeout, .timeout = 30) {
    th_server s;
    th_server_start(&s, "idle_timeout_s = 1");
    th_client *hog = th_connect_tcp(&s);
    /* 20000 pipelined stats requests (~4 MB of replies) that are never read:
     * [0, <uint16 msgid>, "stats", []] is 12 bytes. */
    static unsigned char msgs[20000 * 12];
    for (int i = 0; i < 20000; i++) {
        const unsigned char stats[12] = {
            0x94, 0x00, 0xcd, (unsigned char)(i >> 8), (unsigned char)i, 0xa5, 's', 't', 'a',
            't',  's',  0x90};
        memcpy(msgs + 12 * i, stats, 12);
    }
    th_send_raw(hog, msgs, sizeof msgs);
    th_client *probe = th_connect_unix(&s);
    json_t *r = NULL;
    long connections = -1;
    for (int tries = 0; tries < 40 && connections != 1; tries++) {
        th_sleep_ms(250);
        r = th_call(probe, "stats", "{}");
        connections = (long)json_integer_value(json_object_get(th_result(r), "connections"));
        json_decref(r);
    }
    cr_assert_eq(connections, 1, "the non-reading peer is still connected");
    th_client_free(hog);
    th_client_free(probe);
    th_server_cleanup(&s);
}

Test(limits, a_paused_server_answers_nothing_until_resumed, .timeout = 30) {
    th_server s;
    th_server_start(&s, NULL);
    th_client *c = th_connect_tcp(&s);
    assert_ping_works(c);
    th_server_pause(&s);
    th_send_request(c, 7, "ping", NULL);
    cr_assert_null(th_read(c, 300), "answered while every thread was stopped");
    th_server_resume(&s);
    json_t *r = th_read(c, 5000);
    cr_assert_not_null(r);
    cr_assert_eq(json_integer_value(json_array_get(r, 1)), 7);
    json_decref(r);
    th_client_free(c);
    th_server_cleanup(&s);
}

Test(protocol, three_wrong_tokens_close_the_connection) {
    th_client *c = th_connect_tcp(&srv);
    for (int i = 0; i < 2; i++) {
        json_t *r = th_call(c, "auth", "{\"token\": \"guess\"}");
        cr_assert_str_eq(th_error_code(r), "unauthorized");
        json_decref(r);
    }
    assert_ping_works(c); /* still open after two */
    json_t *r = th_call(c, "auth", "{\"token\": \"guess\"}");
    cr_assert_str_eq(th_error_code(r), "unauthorized");
    json_decref(r);
    cr_assert(th_closed(c, 5000), "the third wrong token must close the connection");
    th_client_free(c);
}
