/*
 * test_integration_hostile.c - discernd in a hostile environment: a bad config file
 * or flag (exit 2 naming file, line and key), the policy caps set from the config,
 * running out of descriptors, a full disk, slow and trickling peers. Each test
 * starts its own server through harness.c.
 */
#include "harness.h"

#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <criterion/logging.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

/* The tmpfs a disk-full test mounted, unmounted even when the test fails. */
static char mounted[64];

static void teardown(void) {
    th_kill_live_server();
    if (mounted[0]) umount2(mounted, MNT_DETACH), rmdir(mounted);
    mounted[0] = '\0';
}

TestSuite(hostile, .fini = teardown, .timeout = 120);

#define CONFIG_FIXTURES DISCERN_SOURCE_DIR "/tests/server/fixtures/config"

#define CHECK_PARAMS                                                                               \
    "{\"subject\": {\"org\": \"acme\", \"team\": \"infra\"}, \"provider\": \"openai\", "           \
    "\"model\": \"gpt-4o\","                                                                       \
    " \"input_tokens\": 100, \"output_tokens\": 800, \"purpose\": \"code-review\"}"

static void ping_ok(th_client *c) {
    json_t *r = th_call(c, "ping", "{}");
    cr_assert_not_null(r, "no answer to ping");
    cr_assert_str_eq(th_error_code(r), "", "ping failed: %s", th_error_message(r));
    json_decref(r);
}

/* ------------------------------------------------------------------- config -- */

Test(hostile, every_bad_config_file_exits_2_naming_the_file_and_line) {
    DIR *d = opendir(CONFIG_FIXTURES "/bad");
    cr_assert_not_null(d);
    int files = 0;
    for (struct dirent *e; (e = readdir(d)) != NULL;) {
        if (e->d_name[0] == '.') continue;
        char file[512], out[4096], want[600];
        snprintf(file, sizeof file, CONFIG_FIXTURES "/bad/%s", e->d_name);
        const char *args[] = {"--config", file, NULL};
        int code = th_run_discernd(args, out, sizeof out);
        snprintf(want, sizeof want, "discernd: config '%s' line ", file);
        cr_expect_eq(code, 2, "%s: exit %d: %s", e->d_name, code, out);
        cr_expect(strstr(out, want), "%s: %s", e->d_name, out);
        files++;
    }
    closedir(d);
    cr_assert_geq(files, 20);
}

Test(hostile, a_bad_flag_value_exits_2_naming_the_key) {
    char out[4096];
    const char *tz[] = {"--timezone", "Mars", NULL};
    cr_assert_eq(th_run_discernd(tz, out, sizeof out), 2, "%s", out);
    cr_assert(strstr(out, "timezone: 'Mars'"), "%s", out);
    const char *listen[] = {"--listen", "localhost:1", NULL};
    cr_assert_eq(th_run_discernd(listen, out, sizeof out), 2, "%s", out);
    cr_assert(strstr(out, "listen: 'localhost'"), "%s", out);
    const char *help[] = {"--help", NULL};
    cr_assert_eq(th_run_discernd(help, out, sizeof out), 0, "%s", out);
}

/* ------------------------------------------------------------ policy caps -- */

/* A policy that burns about 20 ms of CPU on every call. */
/* The value of an unlabelled metric from /metrics. */
static double metric(const th_server *s, const char *name) {
    int status = 0;
    char *body = th_http_get(s, "/metrics", &status);
    cr_assert_eq(status, 200);
    char want[128];
    snprintf(want, sizeof want, "\n%s ", name);
    const char *p = strstr(body, want);
    cr_assert_not_null(p, "no %s in /metrics", name);
    double v = strtod(p + strlen(want), NULL);
    free(body);
    return v;
}

static const char slow_policy[] = "return { name = 'slow', decide = function(req, ctx)\n"
                                  "  local x = 0\n"
                                  "  for i = 1, 2000000 do x = x + i % 7 end\n"
                                  "  return allow('took its time ' .. x)\n"
                                  "end }\n";

static const char *check_decision(th_client *c, char *reason, size_t cap) {
    json_t *r = th_call(c, "check", CHECK_PARAMS);
    cr_assert_not_null(r);
    json_t *res = th_result(r);
    cr_assert_not_null(res, "check failed: %s", th_error_message(r));
    static char decision[32];
    snprintf(decision, sizeof decision, "%s", json_string_value(json_object_get(res, "decision")));
    snprintf(reason, cap, "%s", json_string_value(json_object_get(res, "reason")));
    json_decref(r);
    return decision;
}

static void start_with_slow_policy(th_server *s, const char *extra) {
    th_server_start(s, extra);
    th_write_policy(s, "slow.lua", slow_policy);
    th_client *u = th_connect_tcp(s);
    json_t *r = th_call(u, "auth", "{\"token\": \"" TH_ADMIN_TOKEN "\"}");
    json_decref(r);
    r = th_call(u, "policy.reload", "{}");
    cr_assert_str_eq(th_error_code(r), "", "%s", th_error_message(r));
    json_decref(r);
    th_client_free(u);
}

Test(hostile, the_policy_time_budget_is_the_configured_one) {
    th_server s;
    start_with_slow_policy(&s, NULL); /* default: 1 ms per call */
    th_client *c = th_connect_admin(&s);
    ping_ok(c);
    char reason[512];
    const char *d = check_decision(c, reason, sizeof reason);
    cr_assert_str_eq(d, "refuse", "a 20 ms policy ran under the 1 ms default: %s", reason);
    th_client_free(c);
    th_server_cleanup(&s);

    th_server_start(&s, "policy_time_budget_us = 2000000");
    th_write_policy(&s, "slow.lua", slow_policy);
    th_client *u = th_connect_tcp(&s);
    json_decref(th_call(u, "auth", "{\"token\": \"" TH_ADMIN_TOKEN "\"}"));
    json_decref(th_call(u, "policy.reload", "{}"));
    d = check_decision(u, reason, sizeof reason);
    cr_assert_str_eq(d, "allow", "with 2 s per call: %s", reason);
    /* the 20 ms evaluation outlived the watchdog's tick: counted in /metrics */
    double slow = metric(&s, "discern_policy_watchdog_signals_total");
#ifdef TH_SERVER_TSAN
    cr_assert_eq(slow, 0, "a ThreadSanitizer server counts every instruction instead");
#else
    cr_assert_geq(slow, 1, "%g evaluations outlived a tick", slow);
#endif
    th_client_free(u);
    th_server_cleanup(&s);
}

/* A policy that keeps 8 MiB alive while it decides. */
static const char big_policy[] = "return { name = 'big', decide = function(req, ctx)\n"
                                 "  local t = {}\n"
                                 "  for i = 1, 64 do t[i] = string.rep('x', 131072 + i) end\n"
                                 "  return allow('held ' .. #t)\n"
                                 "end }\n";

Test(hostile, the_policy_memory_cap_is_the_configured_one) {
    th_server s;
    th_server_start(&s, "policy_memory_mb = 4");
    th_write_policy(&s, "big.lua", big_policy);
    th_client *u = th_connect_tcp(&s);
    json_decref(th_call(u, "auth", "{\"token\": \"" TH_ADMIN_TOKEN "\"}"));
    json_t *r = th_call(u, "policy.reload", "{}");
    cr_assert_str_eq(th_error_code(r), "", "%s", th_error_message(r));
    json_decref(r);
    char reason[512];
    const char *d = check_decision(u, reason, sizeof reason);
    cr_assert_str_eq(d, "refuse", "8 MiB under a 4 MiB cap: %s", reason);
    th_client_free(u);
    th_server_cleanup(&s);

    th_server_start(&s, "policy_memory_mb = 64");
    th_write_policy(&s, "big.lua", big_policy);
    u = th_connect_tcp(&s);
    json_decref(th_call(u, "auth", "{\"token\": \"" TH_ADMIN_TOKEN "\"}"));
    json_decref(th_call(u, "policy.reload", "{}"));
    d = check_decision(u, reason, sizeof reason);
    cr_assert_str_eq(d, "allow", "8 MiB under a 64 MiB cap: %s", reason);
    th_client_free(u);
    th_server_cleanup(&s);
}

/* -------------------------------------------------------------- descriptors -- */

/* Lines of the server's log holding word. */
static int log_lines_with(const th_server *s, const char *word, long *bytes) {
    FILE *f = fopen(s->log, "r");
    cr_assert_not_null(f);
    char line[4096];
    int n = 0;
    while (fgets(line, sizeof line, f))
        if (strstr(line, word)) n++;
    if (bytes) *bytes = ftell(f);
    fclose(f);
    return n;
}

#define NOFILE 64
#define CROWD 150

Test(hostile, out_of_descriptors_accepting_pauses_without_spinning_and_resumes_once_others_close) {
    th_server s;
    th_server_start_nofile(&s, "max_connections = 10000\nmax_connections_per_address = 0", NOFILE);
    th_client *first = th_connect_tcp(&s);
    ping_ok(first);
    th_client *crowd[CROWD];
    for (int i = 0; i < CROWD; i++)
        crowd[i] = th_connect_tcp(&s); /* the kernel queues what the server cannot take */
    th_sleep_ms(500);
    double cpu0 = th_server_cpu_s(&s);
    th_sleep_ms(3000);
    double cpu = th_server_cpu_s(&s) - cpu0;
    long log_bytes = 0;
    int lines = log_lines_with(&s, "accept_failed", &log_bytes);
    cr_log_info("out of descriptors for 3 s: %.3f s of server CPU, %d accept_failed lines, "
                "log %ld bytes",
                cpu, lines, log_bytes);
    cr_assert_lt(cpu, 0.5, "the server used %.2f s of CPU in 3 s out of descriptors", cpu);
    cr_assert_geq(lines, 1, "the accept failures were not logged");
    cr_assert_leq(lines, 2, "%d accept_failed lines in 3.5 s", lines);
    cr_assert_lt(log_bytes, 64 * 1024);
    ping_ok(first); /* connections it has are served meanwhile */
    for (int i = 0; i < CROWD; i++)
        th_client_free(crowd[i]);
    th_sleep_ms(300);
    int status = 0;
    char *body = th_http_get(&s, "/healthz", &status);
    cr_assert_eq(status, 200, "%s", body);
    free(body);
    th_client *late = th_connect_tcp(&s);
    ping_ok(late);
    cr_assert_gt(metric(&s, "discern_accept_errors_total"), 0);
    th_client_free(late);
    th_client_free(first);
    th_server_cleanup(&s);
}

Test(hostile, max_connections_defaults_to_what_the_descriptors_allow_and_says_so) {
    th_server s;
    th_server_start_nofile(&s, "max_connections_per_address = 0", NOFILE);
    FILE *f = fopen(s.log, "r");
    cr_assert_not_null(f);
    char line[4096];
    unsigned max = 0;
    while (fgets(line, sizeof line, f)) {
        const char *p = strstr(line, "event=connection_limit max_connections=");
        if (p && strstr(p, "source=descriptors"))
            sscanf(p, "event=connection_limit max_connections=%u", &max);
    }
    fclose(f);
    cr_assert(max >= 1 && max < NOFILE, "max_connections=%u under a limit of %d", max, NOFILE);
    th_client *held[NOFILE];
    for (unsigned i = 0; i < max; i++) {
        held[i] = th_connect_tcp(&s);
        ping_ok(held[i]);
    }
    th_client *over = th_connect_tcp(&s);
    cr_assert(th_closed(over, 3000), "connection %u past max_connections=%u stayed open", max + 1,
              max);
    th_client_free(over);
    int status = 0;
    char *body = th_http_get(&s, "/healthz", &status); /* HTTP has its own headroom */
    cr_assert_eq(status, 200, "%s", body);
    free(body);
    cr_assert_eq(metric(&s, "discern_accept_errors_total"), 0, "the limit came after EMFILE");
    for (unsigned i = 0; i < max; i++)
        th_client_free(held[i]);
    th_server_cleanup(&s);
}

Test(hostile, connections_from_one_address_are_capped_and_others_still_get_in) {
    th_server s;
    th_server_start(&s, "max_connections_per_address = 2");
    th_client *a = th_connect_tcp_from(&s, "127.0.0.1"), *b = th_connect_tcp_from(&s, "127.0.0.1");
    ping_ok(a);
    ping_ok(b);
    th_client *c = th_connect_tcp_from(&s, "127.0.0.1");
    cr_assert(th_closed(c, 3000), "a third connection from 127.0.0.1 stayed open");
    th_client_free(c);
    th_client *other = th_connect_tcp_from(&s, "127.0.0.2");
    ping_ok(other);
    th_client *local = th_connect_unix(&s);
    ping_ok(local);
    th_client_free(a);
    th_sleep_ms(200);
    c = th_connect_tcp_from(&s, "127.0.0.1"); /* a's slot is free again */
    ping_ok(c);
    th_client_free(c);
    th_client_free(b);
    th_client_free(other);
    th_client_free(local);
    th_server_cleanup(&s);
}

Test(hostile, unix_peers_are_admitted_beyond_max_connections_up_to_the_reserve) {
    th_server s;
    th_server_start(&s, "max_connections = 3\nunix_reserved_connections = 2");
    th_client *tcp[3], *uds[2];
    for (int i = 0; i < 3; i++) {
        tcp[i] = th_connect_tcp(&s);
        ping_ok(tcp[i]);
    }
    th_client *over = th_connect_tcp(&s);
    cr_assert(th_closed(over, 3000), "a TCP peer got a reserved slot");
    th_client_free(over);
    for (int i = 0; i < 2; i++) {
        uds[i] = th_connect_unix(&s);
        ping_ok(uds[i]);
    }
    over = th_connect_unix(&s);
    cr_assert(th_closed(over, 3000), "a Unix peer got in past the reserve");
    th_client_free(over);
    for (int i = 0; i < 3; i++)
        th_client_free(tcp[i]);
    for (int i = 0; i < 2; i++)
        th_client_free(uds[i]);
    th_server_cleanup(&s);
}

/* --------------------------------------------------------------- slow peers -- */

/* [0, 7, "ping", [{"pad": "<90 x>"}]]: 110 bytes that a trickler sends one at a time. */
static size_t long_ping(unsigned char *out) {
    size_t n = 0;
    const unsigned char head[] = {0x94, 0x00, 0x07, 0xa4, 'p', 'i', 'n',  'g',
                                  0x91, 0x81, 0xa3, 'p',  'a', 'd', 0xd9, 90};
    memcpy(out, head, sizeof head);
    n = sizeof head;
    memset(out + n, 'x', 90);
    return n + 90;
}

Test(hostile, a_message_trickled_in_on_time_byte_by_byte_is_closed_at_the_frame_deadline) {
    th_server s;
    th_server_start(&s, "frame_timeout_s = 2\nidle_timeout_s = 60");
    th_client *c = th_connect_tcp(&s);
    unsigned char msg[128];
    size_t n = long_ping(msg);
    int64_t t0 = th_now_ms();
    bool closed = false;
    for (size_t i = 0; i < n && !closed; i++) {
        th_send_raw(c, msg + i, 1);
        closed = th_closed(c, 250);
    }
    int64_t ms = th_now_ms() - t0;
    cr_assert(closed, "a message trickled over %lld ms was not closed", (long long)ms);
    cr_assert(ms >= 1900 && ms < 4000, "closed after %lld ms, frame_timeout_s = 2", (long long)ms);
    th_client_free(c);
    th_server_cleanup(&s);
}

Test(hostile, the_idle_timeout_counts_from_the_last_complete_message_not_from_any_byte) {
    th_server s;
    th_server_start(&s, "idle_timeout_s = 2\nframe_timeout_s = 60");
    th_client *c = th_connect_tcp(&s);
    ping_ok(c);
    int64_t t0 = th_now_ms();
    unsigned char msg[128];
    size_t n = long_ping(msg);
    bool closed = false;
    for (size_t i = 0; i < n && !closed; i++) {
        th_send_raw(c, msg + i, 1);
        closed = th_closed(c, 250);
    }
    int64_t ms = th_now_ms() - t0;
    cr_assert(closed, "bytes every 250 ms kept the connection open %lld ms", (long long)ms);
    cr_assert(ms >= 1900 && ms < 4000, "closed %lld ms after its last message, idle 2 s",
              (long long)ms);
    th_client_free(c);
    th_server_cleanup(&s);
}

#define TRICKLERS 200
#define PINGS_MAX 4096

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

typedef struct latency {
    double ms[PINGS_MAX];
    int n;
} latency;

static void ping_timed(th_client *c, latency *l) {
    struct timespec t1, t2;
    clock_gettime(CLOCK_MONOTONIC, &t1);
    ping_ok(c);
    clock_gettime(CLOCK_MONOTONIC, &t2);
    if (l->n < PINGS_MAX)
        l->ms[l->n++] =
            (double)(t2.tv_sec - t1.tv_sec) * 1e3 + (double)(t2.tv_nsec - t1.tv_nsec) / 1e6;
}

static void report(const char *what, latency *l, double *max) {
    qsort(l->ms, (size_t)l->n, sizeof l->ms[0], cmp_double);
    *max = l->ms[l->n - 1];
    cr_log_info("%s: %d pings, p50 %.3f ms, p99 %.3f ms, max %.3f ms", what, l->n, l->ms[l->n / 2],
                l->ms[l->n * 99 / 100], *max);
}

Test(hostile, two_hundred_tricklers_are_closed_while_a_normal_client_keeps_its_latency,
     .timeout = 60) {
    th_server s;
    th_server_start(&s, "frame_timeout_s = 2\nmax_connections_per_address = 0");
    th_client *normal = th_connect_tcp(&s);
    static latency alone, among;
    for (int64_t t0 = th_now_ms(); th_now_ms() - t0 < 2000; th_sleep_ms(10))
        ping_timed(normal, &alone);
    th_client *slow[TRICKLERS];
    for (int i = 0; i < TRICKLERS; i++)
        slow[i] = th_connect_tcp(&s);
    unsigned char msg[128];
    size_t n = long_ping(msg), sent = 0;
    for (int64_t t0 = th_now_ms(), next = t0; th_now_ms() - t0 < 4000; th_sleep_ms(10)) {
        if (th_now_ms() >= next && sent < n) { /* one byte each, every 250 ms */
            for (int i = 0; i < TRICKLERS; i++)
                th_send_raw(slow[i], msg + sent, 1);
            sent++;
            next += 250;
        }
        ping_timed(normal, &among);
    }
    int closed = 0;
    for (int i = 0; i < TRICKLERS; i++) {
        closed += th_closed(slow[i], 100);
        th_client_free(slow[i]);
    }
    double max_alone, max;
    report("normal client alone", &alone, &max_alone);
    report("normal client among 200 tricklers", &among, &max);
    cr_log_info("%d of %d tricklers closed by the 2 s frame deadline", closed, TRICKLERS);
    cr_assert_eq(closed, TRICKLERS, "only %d of %d tricklers were closed", closed, TRICKLERS);
    cr_assert_gt(among.n, 50);
    cr_assert_lt(max, 1000.0, "a ping waited %.0f ms among tricklers", max);
    ping_ok(normal);
    th_client_free(normal);
    th_server_cleanup(&s);
}

/* ---------------------------------------------------------------- disk full -- */

#define TMPFS_MIB 4

/* Mount a TMPFS_MIB tmpfs on a fresh folder; fails the test (never skips) when the
 * environment does not allow it. */
static void mount_small_disk(char *dir, size_t cap) {
    snprintf(dir, cap, "/tmp/discernd-disk-XXXXXX");
    cr_assert_not_null(mkdtemp(dir));
    char opts[32];
    snprintf(opts, sizeof opts, "size=%dm,mode=0755", TMPFS_MIB);
    cr_assert_eq(mount("tmpfs", dir, "tmpfs", 0, opts), 0,
                 "this test mounts a %d MiB tmpfs to fill a disk and needs the right to: "
                 "mount: %s",
                 TMPFS_MIB, strerror(errno));
    snprintf(mounted, sizeof mounted, "%s", dir);
}

static void unmount_small_disk(void) {
    umount2(mounted, MNT_DETACH);
    rmdir(mounted);
    mounted[0] = '\0';
}

/* Fill the file system of dir with a ballast file; returns its descriptor. */
static int fill_disk(const char *dir, off_t *size) {
    char path[400];
    snprintf(path, sizeof path, "%s/ballast", dir);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    cr_assert_geq(fd, 0);
    static char block[4096];
    memset(block, 'b', sizeof block);
    *size = 0;
    for (ssize_t n; (n = write(fd, block, sizeof block)) > 0;)
        *size += n;
    cr_assert_eq(errno, ENOSPC, "filling the disk: %s", strerror(errno));
    return fd;
}

/* check then settle; true when both were acknowledged, false with *code set. */
static bool check_and_settle(th_client *c, char *code, size_t cap) {
    json_t *r = th_call(c, "check", CHECK_PARAMS);
    snprintf(code, cap, "%s", th_error_code(r));
    json_t *res = th_result(r);
    if (!res) {
        json_decref(r);
        return false;
    }
    char params[256];
    snprintf(params, sizeof params,
             "{\"reservation\": \"%s\", \"input_tokens\": 100, \"output_tokens\": 300}",
             json_string_value(json_object_get(res, "reservation")));
    json_decref(r);
    r = th_call(c, "settle", params);
    snprintf(code, cap, "%s", th_error_code(r));
    bool ok = th_result(r) != NULL;
    json_decref(r);
    return ok;
}

static int healthz(const th_server *s) {
    int status = 0;
    free(th_http_get(s, "/healthz", &status));
    return status;
}

Test(hostile, a_full_disk_refuses_then_recovers_without_restart_when_1_mib_is_freed,
     .timeout = 90) {
    char disk[64], extra[256];
    mount_small_disk(disk, sizeof disk);
    snprintf(extra, sizeof extra, "store = \"%s/d.db\"\nstore_free_warn_bytes = 2097152", disk);
    th_server s;
    th_server_start(&s, extra);
    snprintf(s.store, sizeof s.store, "%s/d.db", disk);
    th_client *c = th_connect_admin(&s);
    char code[64];
    long acked = 0;
    for (int i = 0; i < 10; i++)
        acked += check_and_settle(c, code, sizeof code);
    cr_assert_eq(acked, 10, "before filling: %s", code);
    off_t ballast_size;
    int ballast = fill_disk(disk, &ballast_size);
    bool refused = false;
    for (int i = 0; i < 3000 && !refused; i++) {
        if (check_and_settle(c, code, sizeof code))
            acked++;
        else
            refused = true;
    }
    cr_assert(refused, "the store never ran out of space");
    cr_assert_str_eq(code, "store_unavailable");
    cr_assert_eq(healthz(&s), 503);
    cr_assert(!check_and_settle(c, code, sizeof code), "fail-closed let a check through");
    for (int64_t t = th_now_ms(); !log_lines_with(&s, "store_disk_low", NULL); th_sleep_ms(50))
        cr_assert_lt(th_now_ms() - t, 3000, "no low-disk warning");

    cr_assert_eq(ftruncate(ballast, ballast_size - 1024 * 1024), 0); /* free 1 MiB */
    int64_t t0 = th_now_ms(), recovered_ms = -1;
    while (th_now_ms() - t0 < 30000) {
        if (check_and_settle(c, code, sizeof code)) {
            recovered_ms = th_now_ms() - t0;
            acked++;
            break;
        }
        th_sleep_ms(20);
    }
    cr_log_info("disk full on a %d MiB tmpfs after %ld acknowledged settles; 1 MiB freed, "
                "recovered in %lld ms",
                TMPFS_MIB, acked, (long long)recovered_ms);
    cr_assert_geq(recovered_ms, 0, "no recovery within 30 s of freeing 1 MiB: %s", code);
    for (int i = 0; i < 100; i++) {
        cr_assert(check_and_settle(c, code, sizeof code), "settle %d after recovery: %s", i, code);
        acked++;
    }
    cr_assert_eq(healthz(&s), 200);
    for (int64_t t = th_now_ms(); metric(&s, "discern_store_free_bytes") <= 0; th_sleep_ms(100))
        cr_assert_lt(th_now_ms() - t, 3000, "discern_store_free_bytes stays 0 after recovery");
    th_client_free(c);
    cr_assert_eq(th_server_stop(&s), 0);
    long long stored = th_sql_int(&s, "SELECT count(*) FROM charges WHERE kind = 'settle'");
    cr_log_info("%ld settles acknowledged, %lld in the store", acked, stored);
    cr_assert_geq(stored, acked, "acknowledged settles were lost");
    close(ballast);
    th_server_cleanup(&s);
    unmount_small_disk();
}
