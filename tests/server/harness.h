/*
 * harness.h - integration-test helpers: start a real discernd on an ephemeral port
 * and a Unix socket in a temporary folder, and talk MessagePack-RPC to it.
 *
 *   th_server s;
 *   th_server_start(&s, "workers = 2\n");            extra config lines (may be NULL)
 *   th_client *c = th_connect_tcp(&s);               or th_connect_unix(&s)
 *   json_t *r = th_call(c, "ping", "{}");            [1, msgid, error, result] as JSON
 *   th_client_free(c);
 *   int code = th_server_stop(&s);                   SIGTERM, wait, exit status
 *
 * A suite whose tests may fail with a server still running (it would hold the test's
 * pipes) declares TestSuite(name, .fini = th_kill_live_server).
 *
 * Params are written as JSON text and sent as MessagePack; replies are converted to
 * jansson values, which keeps the assertions short. Every wait is bounded.
 */
#ifndef DISCERN_TEST_HARNESS_H
#define DISCERN_TEST_HARNESS_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

typedef struct th_server {
    pid_t pid;
    int port, http_port;
    char dir[256];
    char unix_path[300];
    char store[300];
    char policies[300];    /* a copy of fixtures/policies the test may change */
    long long fsize_limit; /* > 0: RLIMIT_FSIZE soft limit of the server (bytes) */
    long nofile_limit;     /* > 0: RLIMIT_NOFILE soft and hard limit of the server */
    char log[300];
} th_server;

typedef struct th_client th_client;

#define TH_ADMIN_TOKEN "test-admin-token"

/* Start discernd with the test config plus extra (config lines, may be NULL).
 * Aborts the test when it does not come up within 10 s. */
void th_server_start(th_server *s, const char *extra);
/* SIGKILL and reap the server started last, unless th_server_cleanup already ran
 * on it: a suite's .fini, for a test that failed before its cleanup. */
void th_kill_live_server(void);
/* Start with a soft file-size limit (a disk that fills up); the hard limit stays
 * unlimited so th_server_set_fsize can lift it while the server runs. */
void th_server_start_fsize(th_server *s, const char *extra, long long bytes);
/* Start with RLIMIT_NOFILE (soft and hard) set to n descriptors. */
void th_server_start_nofile(th_server *s, const char *extra, long n);
/* CPU time (user + system) the server has used so far, in seconds (from /proc). */
double th_server_cpu_s(const th_server *s);
/* Run discernd with args (NULL-terminated) to its end (bounded: 10 s); its stderr
 * goes to out (NUL-terminated). Returns its exit status, -1 if killed. */
int th_run_discernd(const char *const *args, char *out, size_t cap);
/* Change the running server's soft file-size limit (0 = unlimited). */
void th_server_set_fsize(th_server *s, long long bytes);
/* SIGSTOP the server and wait until every one of its threads is stopped (kill()
 * returns before they are: a request sent right after it may still be answered). */
void th_server_pause(th_server *s);
/* SIGCONT. */
void th_server_resume(th_server *s);
/* Make the temporary folder and paths of s without starting anything: a test may
 * put files there, then th_server_restart or th_server_expect_exit. */
void th_server_prepare(th_server *s);
/* Run discernd on s's folder with extra config expecting it to exit (refuse to
 * start) within 10 s; returns its exit status, its stderr is in s->log. */
int th_server_expect_exit(th_server *s, const char *extra);
/* True when a line of the server's log contains text. */
bool th_log_contains(const th_server *s, const char *text);
/* Start again on the same folder and store (after a stop). */
void th_server_restart(th_server *s, const char *extra);
/* SIGTERM and wait (bounded); returns the exit status, or -1 if it had to be killed. */
int th_server_stop(th_server *s);
/* Stop if running and remove the temporary folder. */
void th_server_cleanup(th_server *s);
/* The server's resident memory in KiB (from /proc). */
long th_server_rss_kib(const th_server *s);

th_client *th_connect_tcp(const th_server *s);
/* th_connect_tcp, then auth with token (asserted to succeed). */
th_client *th_connect_as(const th_server *s, const char *token);
/* th_connect_as with the admin token. */
th_client *th_connect_admin(const th_server *s);
/* key.create {role, scope} over an admin connection; the token into out (72 bytes)
 * and the key id into id (24 bytes, may be NULL). */
void th_create_key(const th_server *s, const char *role, const char *scope, char *out, char *id);
th_client *th_connect_unix(const th_server *s);
/* Connect over TCP from source_ip (a loopback address such as "127.0.0.2"). */
th_client *th_connect_tcp_from(const th_server *s, const char *source_ip);
void th_client_free(th_client *c);
/* Send raw bytes. */
void th_send_raw(th_client *c, const void *data, size_t n);
/* Send [0, msgid, method, [params]] (params JSON text; NULL = []) without waiting. */
void th_send_request(th_client *c, uint32_t msgid, const char *method, const char *params);
/* Send [2, method, [params]]. */
void th_send_notification(th_client *c, const char *method, const char *params);
/* The next message from the server as JSON, or NULL on close or after timeout_ms. */
json_t *th_read(th_client *c, int timeout_ms);
/* True when the server closes the connection within timeout_ms (replies before the
 * close are skipped). */
bool th_closed(th_client *c, int timeout_ms);
/* The size in bytes of the message th_read (or th_call) returned last. */
size_t th_last_size(const th_client *c);
/* Send a request with a fresh msgid and wait (5 s) for its response. */
json_t *th_call(th_client *c, const char *method, const char *params);
/* th_call with every occurrence of from in the packed request replaced by to (the
 * same length): how a test sends bytes JSON cannot carry, like invalid UTF-8. */
json_t *th_call_mangled(th_client *c, const char *method, const char *params, const char *from,
                        const char *to);
/* The result map of a response (NULL when it is an error); borrowed. */
json_t *th_result(json_t *response);
/* The error code of a response ("" when it succeeded); borrowed. */
const char *th_error_code(json_t *response);
/* Write (replace) file name in the server's policy folder. */
void th_write_policy(th_server *s, const char *name, const char *text);
/* GET path from the HTTP listener; returns the body (caller frees) and the status. */
char *th_http_get(const th_server *s, const char *path, int *status);
/* th_http_get with an Authorization: Bearer token header (token NULL = none). */
char *th_http_get_auth(const th_server *s, const char *path, const char *token, int *status);
/* Send raw bytes (a whole HTTP request) to the HTTP listener; the whole response
 * (status line, headers, body; caller frees) and its status in *status. */
char *th_http_raw(const th_server *s, const char *raw, size_t n, int *status);
/* POST body (JSON text) to path as application/json with a Bearer token (NULL =
 * none): the reply parsed as JSON (NULL when it is not; caller decrefs). */
json_t *th_http_post(const th_server *s, const char *path, const char *token, const char *body,
                     int *status);
/* The first column of the first row of sql run on the server's store (-1 if none). */
long long th_sql_int(const th_server *s, const char *sql);
/* Sleep for ms milliseconds. */
void th_sleep_ms(int ms);
/* Milliseconds of CLOCK_MONOTONIC. */
int64_t th_now_ms(void);
/* The error message of a response ("" when it succeeded); borrowed. */
const char *th_error_message(json_t *response);
/* Call and expect success: the response (the caller owns it), its result via *res. */
json_t *th_ok(th_client *c, const char *method, const char *params, json_t **res);
/* Call and expect the error code, with a null result and, unless needle is NULL, a
 * message containing needle. */
void th_fails(th_client *c, const char *method, const char *params, const char *code,
              const char *needle);
/* The string key of obj; fails the test when there is none. */
const char *th_str(json_t *obj, const char *key);
/* The string key of obj, or "" when there is none. */
const char *th_str_or_empty(json_t *obj, const char *key);
/* The number key of obj; fails the test when there is none. */
double th_num(json_t *obj, const char *key);

#endif
