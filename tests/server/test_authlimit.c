/*
 * test_authlimit.c - the slowdown of failed auth (server/authlimit.c) on a fake
 * clock: free failures, turns of at least 100 ms that queue and double, refusal
 * past the wait limit, the global limit and its Unix exemption, the bound on
 * remembered addresses, forgetting, and the aggregated log line.
 */
#include "authlimit.h"

#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define T0 1700000000000000LL /* µs */
#define A "tcp:192.0.2.1"
#define B "tcp:192.0.2.2"

static dsc__authlimit *l;

static void setup(void) {
    l = dsc__authlimit_new();
    cr_assert_not_null(l);
}
static void teardown(void) {
    dsc__authlimit_free(l);
}

TestSuite(authlimit, .init = setup, .fini = teardown);

static int64_t admit(const char *key, int64_t now) {
    dsc_error err;
    return dsc__authlimit_admit(l, key, now, &err);
}

static void fail_n(const char *key, int n, int64_t now) {
    for (int i = 0; i < n; i++)
        dsc__authlimit_failed(l, key, now);
}

Test(authlimit, the_first_failures_are_free_then_attempts_wait_at_least_100_ms_in_turn) {
    for (int i = 0; i < DSC__AUTHLIMIT_FREE; i++) {
        cr_assert_eq(admit(A, T0), 0, "attempt %d must not wait", i + 1);
        dsc__authlimit_failed(l, A, T0);
    }
    int64_t first = admit(A, T0);
    cr_assert_geq(first, 100000, "after %d failures the next attempt waits >= 100 ms, got %lld",
                  DSC__AUTHLIMIT_FREE, (long long)first);
    /* A second connection of the same address queues behind the first. */
    cr_assert_geq(admit(A, T0), first + 100000);
    cr_assert_eq(admit(B, T0), 0, "another address is not slowed");
}

Test(authlimit, each_further_failure_doubles_the_gap_up_to_its_cap) {
    fail_n(A, DSC__AUTHLIMIT_FREE, T0);
    int64_t now = T0, prev = 0;
    for (int i = 0; i < 8; i++) {
        int64_t wait = admit(A, now);
        cr_assert_gt(wait, 0);
        now += wait; /* evaluated at its turn, and wrong again */
        dsc__authlimit_failed(l, A, now);
        int64_t gap = admit(A, now);
        cr_assert_geq(gap, prev, "gaps never shrink while failures go on");
        cr_assert_leq(gap, DSC__AUTHLIMIT_DELAY_MAX_US * 2);
        prev = gap;
        now += gap;
        dsc__authlimit_failed(l, A, now);
    }
    cr_assert_geq(prev, DSC__AUTHLIMIT_DELAY_MAX_US, "the gap reaches its cap");
}

Test(authlimit, an_attempt_whose_turn_is_too_far_away_is_refused_saying_when_to_retry) {
    fail_n(A, DSC__AUTHLIMIT_FREE, T0);
    dsc_error err;
    int64_t wait = 0;
    int admitted = 0;
    while ((wait = dsc__authlimit_admit(l, A, T0, &err)) >= 0) {
        cr_assert_leq(wait, DSC__AUTHLIMIT_WAIT_MAX_US);
        cr_assert_lt(++admitted, 1000);
    }
    cr_assert_eq(err.code, DSC_UNAUTHORIZED);
    cr_assert(strstr(err.message, "too many failed auth attempts from " A "; retry in"), "%s",
              err.message);
    cr_assert_eq(admitted, DSC__AUTHLIMIT_WAIT_MAX_US / DSC__AUTHLIMIT_DELAY_US);
    cr_assert_eq(dsc__authlimit_total(l), DSC__AUTHLIMIT_FREE, "a refusal is not a failure");
}

Test(authlimit, many_failing_addresses_slow_every_tcp_peer_but_not_unix_peers) {
    char key[32];
    for (int i = 0; i <= DSC__AUTHLIMIT_GLOBAL_FREE; i++) {
        snprintf(key, sizeof key, "tcp:198.51.100.%d", i);
        dsc__authlimit_failed(l, key, T0 + i);
    }
    int64_t w1 = admit("tcp:203.0.113.9", T0 + 100);
    int64_t w2 = admit("tcp:203.0.113.10", T0 + 100);
    cr_assert_geq(w1, 100000, "a fresh address waits while failures pile up globally");
    cr_assert_geq(w2, w1 + DSC__AUTHLIMIT_GLOBAL_GAP_US, "and queues behind the others");
    cr_assert_eq(admit("unix:uid=1000", T0 + 100), 0, "a Unix peer is outside the global limit");
    /* Two quiet seconds later it is over. */
    cr_assert_eq(admit("tcp:203.0.113.11", T0 + 2000000 + 100), 0);
}

Test(authlimit, the_table_is_bounded_and_drops_the_least_recently_failing_address) {
    fail_n(A, DSC__AUTHLIMIT_FREE, T0);
    cr_assert_gt(admit(A, T0 + 1), 0);
    char key[32];
    for (int i = 0; i < DSC__AUTHLIMIT_ADDRESSES; i++) {
        snprintf(key, sizeof key, "unix:uid=%d", i); /* outside the global limit */
        dsc__authlimit_failed(l, key, T0 + 10 + i);
    }
    cr_assert_eq(dsc__authlimit_size(l), DSC__AUTHLIMIT_ADDRESSES);
    cr_assert_eq(admit(A, T0 + 10000000), 0, "A, the oldest, made room and starts clean");
    fail_n("unix:uid=7", DSC__AUTHLIMIT_FREE, T0 + 10000000);
    cr_assert_gt(admit("unix:uid=7", T0 + 10000000), 0, "a remembered address still waits");
    cr_assert_eq(dsc__authlimit_size(l), DSC__AUTHLIMIT_ADDRESSES);
}

Test(authlimit, an_address_without_failures_for_fifteen_minutes_starts_clean) {
    fail_n(A, DSC__AUTHLIMIT_FREE + 2, T0);
    int64_t later = T0 + 60000000;
    dsc__authlimit_failed(l, A, later);
    cr_assert_geq(admit(A, later), 800000, "a minute later its failures still count");
    int64_t clean = later + DSC__AUTHLIMIT_FORGET_US + 1;
    dsc__authlimit_failed(l, A, clean);
    cr_assert_eq(admit(A, clean), 0, "fifteen quiet minutes later one failure is free again");
}

static char *read_all(int fd) {
    static char buf[8192];
    ssize_t n = read(fd, buf, sizeof buf - 1);
    buf[n > 0 ? n : 0] = '\0';
    return buf;
}

Test(authlimit, failures_are_logged_as_one_line_per_interval_with_their_count) {
    int p[2];
    cr_assert_eq(pipe(p), 0);
    dsc_log log = {DSC_LOG_INFO, p[1]};
    fail_n(A, 5, T0);
    fail_n(B, 2, T0 + 1000);
    dsc__authlimit_report(l, &log, T0 + 1000000);
    dsc__authlimit_report(l, &log, T0 + DSC__AUTHLIMIT_REPORT_US);
    dsc__authlimit_report(l, &log, T0 + DSC__AUTHLIMIT_REPORT_US + 1000000);
    close(p[1]);
    char *text = read_all(p[0]);
    close(p[0]);
    cr_assert_eq(strchr(text, '\n') - text + 1, (long)strlen(text), "one line: %s", text);
    cr_assert(
        strstr(text, "level=warn event=auth_failed count=7 addresses=2 top=" A " top_count=5"),
        "%s", text);
    cr_assert_eq(dsc__authlimit_total(l), 7);
}

Test(authlimit, the_key_of_a_peer_is_its_ipv4_address_or_its_unix_uid) {
    char key[DSC__AUTHLIMIT_KEY_MAX], want[64];
    int sv[2];
    cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    snprintf(want, sizeof want, "unix:uid=%u", (unsigned)getuid());
    cr_assert_str_eq(dsc__authlimit_key(sv[0], key, sizeof key), want);
    close(sv[0]);
    close(sv[1]);
    int ls = socket(AF_INET, SOCK_STREAM, 0), c = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof a;
    cr_assert_eq(bind(ls, (struct sockaddr *)&a, sizeof a), 0);
    cr_assert_eq(listen(ls, 1), 0);
    cr_assert_eq(getsockname(ls, (struct sockaddr *)&a, &len), 0);
    cr_assert_eq(connect(c, (struct sockaddr *)&a, sizeof a), 0);
    int s = accept(ls, NULL, NULL);
    cr_assert_str_eq(dsc__authlimit_key(s, key, sizeof key), "tcp:127.0.0.1");
    cr_assert_str_eq(dsc__authlimit_key(-1, key, sizeof key), "unknown");
    close(s);
    close(c);
    close(ls);
}
