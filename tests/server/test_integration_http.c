/*
 * test_integration_http.c - the JSON API (POST /v1/<method>), the console's static
 * files and usage reports, against a real discernd: requests are written as raw
 * HTTP over a socket, the way curl sends them.
 */
#include "harness.h"

#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

TestSuite(http, .fini = th_kill_live_server);

#define ADMIN TH_ADMIN_TOKEN
#define REQ "\"provider\": \"openai\", \"model\": \"gpt-4o\", \"output_tokens\": 100"
#define CHECK_FOR(team)                                                                            \
    "{\"subject\": {\"org\": \"acme\", \"team\": \"" team "\"}, " REQ                              \
    ", \"purpose\": \"code-review\"}"

/* POST as token, assert the status, return the result (or error) object; the reply
 * is kept in *reply for the caller to decref. */
static json_t *post(const th_server *s, const char *method, const char *token, const char *body,
                    int want, json_t **reply) {
    char path[128];
    snprintf(path, sizeof path, "/v1/%s", method);
    int status = 0;
    *reply = th_http_post(s, path, token, body, &status);
    cr_assert_not_null(*reply, "%s: the reply is not JSON (status %d)", method, status);
    char *text = json_dumps(*reply, JSON_COMPACT);
    cr_assert_eq(status, want, "%s: status %d, want %d: %s", method, status, want, text);
    free(text);
    json_t *r = json_object_get(*reply, want == 200 ? "result" : "error");
    cr_assert_not_null(r, "%s: no %s", method, want == 200 ? "result" : "error");
    return r;
}

static const char *code_of(json_t *error) {
    const char *c = json_string_value(json_object_get(error, "code"));
    return c ? c : "";
}

/* ---------------------------------------------------------------- the methods -- */

Test(http, every_method_of_the_table_answers_over_http_through_the_rpc_handlers) {
    th_server s;
    th_server_start(&s, NULL);
    json_t *rep, *r;
    char body[512];
    r = post(&s, "ping", NULL, "{}", 200, &rep);
    cr_assert(json_is_true(json_object_get(r, "pong")));
    json_decref(rep);
    r = post(&s, "auth", NULL, "{\"token\": \"" ADMIN "\"}", 200, &rep);
    cr_assert_str_eq(th_str_or_empty(r, "role"), "admin");
    json_decref(rep);
    r = post(&s, "estimate", NULL, "{" REQ ", \"input_tokens\": 10}", 200, &rep);
    cr_assert_not_null(json_object_get(json_object_get(r, "estimate"), "energy_kwh"));
    json_decref(rep);
    r = post(&s, "models.list", NULL, "{}", 200, &rep);
    cr_assert_gt(json_array_size(json_object_get(r, "models")), 0);
    json_decref(rep);
    r = post(&s, "zones.list", NULL, "{}", 200, &rep);
    cr_assert_gt(json_array_size(json_object_get(r, "zones")), 0);
    json_decref(rep);
    snprintf(body, sizeof body, "{\"zone\": \"FRA\", \"gco2e_per_kwh\": 40, \"valid_until\": %lld}",
             (long long)time(NULL) + 3600);
    r = post(&s, "grid.set", ADMIN, body, 200, &rep);
    cr_assert_str_eq(th_str_or_empty(r, "zone"), "FRA");
    json_decref(rep);
    r = post(&s, "policy.reload", ADMIN, "{}", 200, &rep);
    cr_assert_neq(th_str_or_empty(r, "policy_version")[0], '\0');
    json_decref(rep);
    r = post(&s, "budget.set", ADMIN,
             "{\"selector\": \"org:acme/team:a\", \"metric\": \"tokens\", \"window\": \"day\", "
             "\"limit\": 100000}",
             200, &rep);
    cr_assert(json_is_true(json_object_get(r, "created")));
    json_decref(rep);
    r = post(&s, "budget.list", ADMIN, "{}", 200, &rep);
    cr_assert_eq(json_array_size(json_object_get(r, "budgets")), 1);
    json_decref(rep);
    r = post(&s, "budget.get", ADMIN, "{\"subject\": {\"org\": \"acme\", \"team\": \"a\"}}", 200,
             &rep);
    cr_assert_eq(json_array_size(json_object_get(r, "budgets")), 1);
    json_decref(rep);
    r = post(&s, "check", ADMIN, CHECK_FOR("a"), 200, &rep);
    cr_assert_str_eq(th_str_or_empty(r, "decision"), "allow");
    char rid[128];
    snprintf(rid, sizeof rid, "%s", th_str_or_empty(r, "reservation"));
    json_decref(rep);
    snprintf(body, sizeof body,
             "{\"reservation\": \"%s\", \"input_tokens\": 5, \"output_tokens\": 40}", rid);
    r = post(&s, "settle", ADMIN, body, 200, &rep);
    cr_assert_str_eq(th_str_or_empty(r, "settled"), "reserved");
    json_decref(rep);
    r = post(&s, "check", ADMIN, CHECK_FOR("a"), 200, &rep);
    snprintf(body, sizeof body, "{\"reservation\": \"%s\"}", th_str_or_empty(r, "reservation"));
    json_decref(rep);
    r = post(&s, "cancel", ADMIN, body, 200, &rep);
    cr_assert(json_is_true(json_object_get(r, "released")));
    json_decref(rep);
    r = post(&s, "decisions.list", ADMIN, "{}", 200, &rep);
    cr_assert_eq(json_array_size(json_object_get(r, "decisions")), 2);
    json_decref(rep);
    r = post(&s, "report", ADMIN, "{\"by\": \"team\", \"metric\": \"tokens\"}", 200, &rep);
    cr_assert_eq(json_array_size(json_object_get(r, "rows")), 1);
    json_decref(rep);
    r = post(&s, "stats", ADMIN, "{}", 200, &rep);
    cr_assert_geq(json_integer_value(json_object_get(r, "ledger_writes")), 4);
    json_decref(rep);
    r = post(&s, "key.create", ADMIN, "{\"role\": \"reader\", \"scope\": \"org:acme\"}", 200, &rep);
    snprintf(body, sizeof body, "{\"key_id\": \"%s\"}", th_str_or_empty(r, "key_id"));
    json_decref(rep);
    r = post(&s, "key.list", ADMIN, "{}", 200, &rep);
    cr_assert_eq(json_array_size(json_object_get(r, "keys")), 1);
    json_decref(rep);
    r = post(&s, "key.revoke", ADMIN, body, 200, &rep);
    cr_assert(json_is_true(json_object_get(r, "revoked")));
    json_decref(rep);
    r = post(&s, "budget.delete", ADMIN,
             "{\"selector\": \"org:acme/team:a\", \"metric\": \"tokens\", \"window\": \"day\"}",
             200, &rep);
    json_decref(rep);
    th_server_cleanup(&s);
}

Test(http, a_reply_over_http_is_the_rpc_reply_as_json) {
    th_server s;
    th_server_start(&s, NULL);
    json_t *rep;
    post(&s, "budget.set", ADMIN,
         "{\"selector\": \"org:acme\", \"metric\": \"gco2e\", \"window\": \"month\", \"limit\": 5}",
         200, &rep);
    json_decref(rep);
    json_t *over_http = post(&s, "budget.list", ADMIN, "{}", 200, &rep);
    th_client *c = th_connect_admin(&s);
    json_t *rpc = th_call(c, "budget.list", "{}");
    cr_assert(json_equal(over_http, th_result(rpc)));
    json_decref(rpc);
    json_decref(rep);
    th_client_free(c);
    th_server_cleanup(&s);
}

/* ------------------------------------------------------------------- statuses -- */

Test(http, each_error_code_has_its_http_status) {
    th_server s;
    th_server_start(&s, NULL);
    char client[80], reader[80];
    th_create_key(&s, "client", "org:acme/team:a", client, NULL);
    th_create_key(&s, "reader", "org:acme/team:a", reader, NULL);
    json_t *rep, *e;
    e = post(&s, "check", client, "{\"subject\": {\"org\": \"acme\"}}", 400, &rep);
    cr_assert_str_eq(code_of(e), "bad_request");
    cr_assert_not_null(strstr(th_str_or_empty(e, "message"), "field '"));
    json_decref(rep);
    e = post(&s, "check", NULL, CHECK_FOR("a"), 401, &rep);
    cr_assert_str_eq(code_of(e), "unauthorized");
    json_decref(rep);
    e = post(&s, "check", client, CHECK_FOR("b"), 403, &rep);
    cr_assert_str_eq(code_of(e), "forbidden");
    json_decref(rep);
    e = post(&s, "cancel", client, "{\"reservation\": \"r000000000000aaaaaaaaaaaaaaaaaaaaaaaa\"}",
             404, &rep);
    cr_assert_str_eq(code_of(e), "unknown_reservation");
    json_decref(rep);
    e = post(&s, "estimate", NULL,
             "{\"provider\": \"openai\", \"model\": \"gpt-9\", "
             "\"output_tokens\": 1, \"method\": \"ecologits\"}",
             404, &rep);
    cr_assert_str_eq(code_of(e), "unknown_model");
    json_decref(rep);
    e = post(&s, "no.such.method", ADMIN, "{}", 404, &rep);
    cr_assert_str_eq(code_of(e), "bad_request");
    json_decref(rep);
    /* A reader may read, never write. */
    e = post(&s, "budget.set", reader,
             "{\"selector\": \"org:acme/team:a\", \"metric\": \"tokens\", \"window\": \"day\", "
             "\"limit\": 1}",
             401, &rep);
    cr_assert_str_eq(code_of(e), "unauthorized");
    json_decref(rep);
    e = post(&s, "check", reader, CHECK_FOR("a"), 401, &rep);
    json_decref(rep);
    post(&s, "budget.list", reader, "{}", 200, &rep);
    json_decref(rep);
    th_server_cleanup(&s);
}

Test(http, a_revoked_key_is_refused_at_its_next_call) {
    th_server s;
    th_server_start(&s, NULL);
    char token[80], id[32];
    th_create_key(&s, "reader", "org:acme", token, id);
    json_t *rep;
    post(&s, "budget.list", token, "{}", 200, &rep);
    json_decref(rep);
    char body[96];
    snprintf(body, sizeof body, "{\"key_id\": \"%s\"}", id);
    post(&s, "key.revoke", ADMIN, body, 200, &rep);
    json_decref(rep);
    json_t *e = post(&s, "budget.list", token, "{}", 401, &rep);
    cr_assert_str_eq(code_of(e), "unauthorized");
    json_decref(rep);
    th_server_cleanup(&s);
}

Test(http, without_require_auth_an_anonymous_call_acts_as_a_client) {
    th_server s;
    th_server_start(&s, "require_auth = false\n");
    json_t *rep, *r = post(&s, "check", NULL, CHECK_FOR("a"), 200, &rep);
    cr_assert_str_eq(th_str_or_empty(r, "decision"), "allow");
    json_decref(rep);
    /* Still no admin method without the admin token. */
    post(&s, "policy.reload", NULL, "{}", 401, &rep);
    json_decref(rep);
    th_server_cleanup(&s);
}

Test(http, a_server_without_a_store_answers_reports_with_503) {
    th_server s;
    th_server_prepare(&s);
    s.store[0] = '\0';
    th_server_restart(&s, NULL);
    json_t *rep, *e = post(&s, "report", ADMIN, "{\"by\": \"team\"}", 503, &rep);
    cr_assert_str_eq(code_of(e), "store_unavailable");
    json_decref(rep);
    th_server_cleanup(&s);
}

Test(http, a_missing_or_wrong_bearer_is_401_and_repeated_guesses_are_429) {
    th_server s;
    th_server_start(&s, NULL);
    json_t *rep, *e;
    e = post(&s, "budget.list", NULL, "{}", 401, &rep);
    cr_assert_not_null(strstr(th_str_or_empty(e, "message"), "needs a key"));
    json_decref(rep);
    /* The first wrong tokens of an address are evaluated at once, then it must wait. */
    for (int i = 0; i < 3; i++) {
        e = post(&s, "budget.list", "dsk_wrong", "{}", 401, &rep);
        cr_assert_not_null(strstr(th_str_or_empty(e, "message"), "Bearer"));
        json_decref(rep);
    }
    e = post(&s, "budget.list", "dsk_wrong", "{}", 429, &rep);
    cr_assert_str_eq(code_of(e), "unauthorized");
    json_decref(rep);
    /* The admin token is refused too while the address waits: guessing is not faster. */
    e = post(&s, "budget.list", ADMIN, "{}", 429, &rep);
    json_decref(rep);
    int status = 0;
    char *resp = th_http_raw(&s,
                             "POST /v1/ping HTTP/1.0\r\nContent-Type: application/json\r\n"
                             "Authorization: Basic eDp5\r\nContent-Length: 2\r\n\r\n{}",
                             strlen("POST /v1/ping HTTP/1.0\r\nContent-Type: application/json\r\n"
                                    "Authorization: Basic eDp5\r\nContent-Length: 2\r\n\r\n{}"),
                             &status);
    cr_assert(status == 401 || status == 429, "a non-Bearer Authorization: %d", status);
    free(resp);
    th_server_cleanup(&s);
}

Test(http, get_v1_budgets_goes_through_the_method_layer_and_its_auth_limiter) {
    th_server s;
    th_server_start(&s, NULL);
    json_t *rep;
    post(&s, "budget.set", ADMIN,
         "{\"selector\": \"org:acme\", \"metric\": \"tokens\", \"window\": \"day\", "
         "\"limit\": 10}",
         200, &rep);
    json_decref(rep);
    int status = 0;
    char *body = th_http_get_auth(&s, "/v1/budgets?org=acme", ADMIN, &status);
    cr_assert_eq(status, 200, "%s", body);
    cr_assert_not_null(strstr(body, "\"remaining\":10"), "%s", body);
    free(body);
    /* Guessing tokens here costs turns as on POST and auth. */
    for (int i = 0; i < 3; i++) {
        free(th_http_get_auth(&s, "/v1/budgets", "dsk_guess", &status));
        cr_assert_eq(status, 401);
    }
    body = th_http_get_auth(&s, "/v1/budgets", "dsk_guess", &status);
    cr_assert_eq(status, 429, "%s", body);
    free(body);
    th_server_cleanup(&s);
}

/* ------------------------------------------------------------------- hostile -- */

static int raw_status(const th_server *s, const char *raw, size_t n, char **out) {
    int status = 0;
    char *resp = th_http_raw(s, raw, n, &status);
    if (out)
        *out = resp;
    else
        free(resp);
    return status;
}

static int post_bytes(const th_server *s, const char *ctype, const char *body, size_t len,
                      char **out) {
    size_t cap = len + 512;
    char *req = malloc(cap);
    int n = snprintf(req, cap,
                     "POST /v1/ping HTTP/1.0\r\nContent-Type: %s\r\nContent-Length: %zu\r\n\r\n",
                     ctype, len);
    memcpy(req + n, body, len);
    int st = raw_status(s, req, (size_t)n + len, out);
    free(req);
    return st;
}

static void assert_body_refused(const th_server *s, const char *body, int want, const char *code) {
    char *out = NULL;
    int st = post_bytes(s, "application/json", body, strlen(body), &out);
    cr_assert_eq(st, want, "%.80s: status %d, want %d: %s", body, st, want, out);
    cr_assert_not_null(strstr(out, code), "%.80s: %s", body, out);
    free(out);
}

Test(http, malformed_bodies_are_refused_with_400_naming_what_is_wrong) {
    th_server s;
    th_server_start(&s, NULL);
    assert_body_refused(&s, "{\"a\": ", 400, "not JSON");
    assert_body_refused(&s, "[1, 2]", 400, "must be a JSON object");
    assert_body_refused(&s, "\"ping\"", 400, "bad_request");
    assert_body_refused(&s, "{\"a\": 1, \"a\": 2}", 400, "duplicate");
    assert_body_refused(&s, "{\"a\": \"\\u0000\"}", 400, "not JSON");
    assert_body_refused(&s, "{\"a\": \"\xff\xfe\"}", 400, "not JSON");
    assert_body_refused(&s, "{\"a\": \"\xc0\xaf\"}", 400, "not JSON"); /* overlong '/' */
    char *out = NULL;
    cr_assert_eq(post_bytes(&s, "text/plain", "{}", 2, &out), 415, "%s", out);
    free(out);
    cr_assert_eq(post_bytes(&s, "application/x-www-form-urlencoded", "a=1", 3, NULL), 415);
    /* An empty body is {}. */
    cr_assert_eq(post_bytes(&s, "application/json", "", 0, NULL), 200);
    /* GET of a method is not a call. */
    const char *get = "GET /v1/ping HTTP/1.0\r\n\r\n";
    cr_assert_eq(raw_status(&s, get, strlen(get), NULL), 405);
    th_server_cleanup(&s);
}

Test(http, bodies_over_the_rpc_limits_are_refused_with_413) {
    th_server s;
    th_server_start(&s, "max_message_bytes = 4096\n");
    /* Over max_message_bytes: evhttp refuses it before it is parsed. */
    size_t big = 8192;
    char *body = malloc(big + 1);
    memset(body, ' ', big);
    body[0] = '{';
    body[big - 1] = '}';
    body[big] = '\0';
    cr_assert_eq(post_bytes(&s, "application/json", body, big, NULL), 413);
    free(body);
    /* Deeper than max_depth (16, of which a frame takes 2). */
    char deep[256] = "{\"a\": ";
    for (int i = 0; i < 20; i++)
        strcat(deep, "[");
    for (int i = 0; i < 20; i++)
        strcat(deep, "]");
    strcat(deep, "}");
    assert_body_refused(&s, deep, 413, "too_large");
    /* 14 levels are within it. */
    char ok[256] = "{\"a\": ";
    for (int i = 0; i < 13; i++)
        strcat(ok, "[");
    for (int i = 0; i < 13; i++)
        strcat(ok, "]");
    strcat(ok, "}");
    /* Past the JSON limits it reaches the method layer, which refuses the key ping
     * does not take: a field error, not too_large. */
    assert_body_refused(&s, ok, 400, "field 'a': unknown");
    th_server_cleanup(&s);
}

Test(http, counts_and_string_lengths_follow_the_rpc_limits) {
    th_server s;
    th_server_start(&s, "max_items = 8\nmax_string_bytes = 32\n");
    assert_body_refused(&s, "{\"a\": [1,2,3,4,5,6,7,8,9]}", 413, "container size");
    assert_body_refused(&s, "{\"a\": \"0123456789012345678901234567890123456789\"}", 413,
                        "string length");
    assert_body_refused(&s, "{\"a\": [1,2,3]}", 400, "field 'a': unknown");
    th_server_cleanup(&s);
}

static int send_only(const th_server *s, const char *raw) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)s->http_port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    cr_assert_eq(connect(fd, (struct sockaddr *)&a, sizeof a), 0);
    cr_assert_eq(send(fd, raw, strlen(raw), 0), (ssize_t)strlen(raw));
    return fd;
}

Test(http, a_call_that_waits_on_a_worker_does_not_hold_up_the_http_loop) {
    th_server s;
    th_server_start(&s, NULL);
    json_t *rep;
    for (int i = 0; i < 3; i++) {
        post(&s, "auth", NULL, "{\"token\": \"dsk_wrong\"}", 401, &rep);
        json_decref(rep);
    }
    /* The next auth of this address waits its turn (>= 100 ms) as a deferred job. */
    const char *body = "{\"token\": \"dsk_wrong\"}";
    char raw[256];
    snprintf(raw, sizeof raw,
             "POST /v1/auth HTTP/1.0\r\nContent-Type: application/json\r\n"
             "Content-Length: %zu\r\n\r\n%s",
             strlen(body), body);
    int64_t t0 = th_now_ms();
    int fd = send_only(&s, raw);
    int status = 0;
    free(th_http_get(&s, "/healthz", &status));
    int64_t health_ms = th_now_ms() - t0;
    cr_assert_eq(status, 200);
    char buf[4096];
    size_t len = 0;
    for (ssize_t r; (r = recv(fd, buf + len, sizeof buf - 1 - len, 0)) > 0;)
        len += (size_t)r;
    buf[len] = '\0';
    close(fd);
    int64_t auth_ms = th_now_ms() - t0;
    cr_assert_not_null(strstr(buf, " 401 Unauthorized"), "%s", buf);
    cr_assert_geq(auth_ms, 90, "the wait was %lld ms", (long long)auth_ms);
    cr_assert_lt(health_ms, auth_ms, "/healthz %lld ms, auth %lld ms", (long long)health_ms,
                 (long long)auth_ms);
    th_server_cleanup(&s);
}

/* -------------------------------------------------------------- static files -- */

static void write_file(const char *dir, const char *name, const char *text) {
    char path[512];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "w");
    cr_assert_not_null(f, "%s", path);
    fputs(text, f);
    fclose(f);
}

static void start_with_www(th_server *s, char *www, size_t cap) {
    th_server_prepare(s);
    snprintf(www, cap, "%s/www", s->dir);
    cr_assert_eq(mkdir(www, 0755), 0);
    char sub[600];
    snprintf(sub, sizeof sub, "%s/sub", www);
    cr_assert_eq(mkdir(sub, 0755), 0);
    write_file(www, "index.html", "<!doctype html><title>discern</title>");
    write_file(www, "app.js", "console.log(1);");
    write_file(www, "style.css", "body{}");
    write_file(www, ".hidden", "secret");
    write_file(s->dir, "outside.txt", "outside the folder");
    char link[600], target[600];
    snprintf(link, sizeof link, "%s/leak.txt", www);
    snprintf(target, sizeof target, "%s/outside.txt", s->dir);
    cr_assert_eq(symlink(target, link), 0);
    char extra[700];
    snprintf(extra, sizeof extra, "www = \"%s\"\n", www);
    th_server_restart(s, extra);
}

static char *get(const th_server *s, const char *path, int *status) {
    char req[600];
    int n = snprintf(req, sizeof req, "GET %s HTTP/1.0\r\nHost: localhost\r\n\r\n", path);
    return th_http_raw(s, req, (size_t)n, status);
}

Test(http, the_console_is_served_with_a_strict_csp_and_its_mime_types) {
    th_server s;
    char www[400];
    start_with_www(&s, www, sizeof www);
    int status = 0;
    char *r = get(&s, "/", &status);
    cr_assert_eq(status, 200, "%s", r);
    cr_assert_not_null(strstr(r, "Content-Security-Policy: default-src 'self'; script-src 'self'"));
    cr_assert_null(strstr(r, "unsafe-inline"));
    cr_assert_not_null(strstr(r, "X-Content-Type-Options: nosniff"));
    cr_assert_not_null(strstr(r, "Content-Type: text/html; charset=utf-8"));
    cr_assert_not_null(strstr(r, "<title>discern</title>"));
    free(r);
    r = get(&s, "/app.js", &status);
    cr_assert_eq(status, 200);
    cr_assert_not_null(strstr(r, "Content-Type: text/javascript"));
    free(r);
    r = get(&s, "/style.css", &status);
    cr_assert_not_null(strstr(r, "Content-Type: text/css"));
    free(r);
    th_server_cleanup(&s);
}

Test(http, paths_out_of_the_console_folder_are_refused) {
    th_server s;
    char www[400];
    start_with_www(&s, www, sizeof www);
    const char *bad[] = {
        "/../outside.txt",
        "/%2e%2e/outside.txt",
        "/%2E%2E/outside.txt",
        "/sub/../../outside.txt",
        "//etc/passwd",
        "/leak.txt",
        "/.hidden",
        "/%2ehidden",
        "/sub",
        "/sub/",
        "/index.html%00.js",
        "/a%2f..%2f..%2foutside.txt",
        "/nonexistent.html",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        int status = 0;
        char *r = get(&s, bad[i], &status);
        cr_assert(status == 404 || status == 400, "%s: %d", bad[i], status);
        cr_assert_null(strstr(r, "outside the folder"), "%s leaked", bad[i]);
        cr_assert_null(strstr(r, "secret"), "%s leaked", bad[i]);
        free(r);
    }
    /* An absolute path in the request line. */
    int status = 0;
    char *r = th_http_raw(&s, "GET /etc/passwd HTTP/1.0\r\n\r\n", 28, &status);
    cr_assert_eq(status, 404);
    cr_assert_null(strstr(r, "root:"));
    free(r);
    th_server_cleanup(&s);
}

Test(http, a_file_over_the_size_bound_is_not_sent) {
    th_server s;
    char www[400];
    start_with_www(&s, www, sizeof www);
    char path[600];
    snprintf(path, sizeof path, "%s/big.js", www);
    FILE *f = fopen(path, "w");
    cr_assert_not_null(f);
    cr_assert_eq(fseek(f, (5L << 20) - 1, SEEK_SET), 0);
    fputc('x', f);
    fclose(f);
    int status = 0;
    free(get(&s, "/big.js", &status));
    cr_assert_eq(status, 413);
    th_server_cleanup(&s);
}

/* ------------------------------------------------------------------- reports -- */

/* check then settle with known tokens for subject team/user, as admin over HTTP. */
static void charge(const th_server *s, const char *team, const char *user, const char *model,
                   const char *purpose, int out_tokens) {
    char body[512];
    snprintf(body, sizeof body,
             "{\"subject\": {\"org\": \"acme\", \"team\": \"%s\", \"user\": \"%s\"}, "
             "\"provider\": \"openai\", \"model\": \"%s\", \"output_tokens\": 10, "
             "\"purpose\": \"%s\"}",
             team, user, model, purpose);
    json_t *rep, *r = post(s, "check", ADMIN, body, 200, &rep);
    cr_assert_str_eq(th_str_or_empty(r, "decision"), "allow");
    snprintf(body, sizeof body,
             "{\"reservation\": \"%s\", \"input_tokens\": 0, \"output_tokens\": %d}",
             th_str_or_empty(r, "reservation"), out_tokens);
    json_decref(rep);
    post(s, "settle", ADMIN, body, 200, &rep);
    json_decref(rep);
}

static double value_of(json_t *rows, const char *group) {
    size_t i;
    json_t *row;
    json_array_foreach(rows, i, row) {
        if (strcmp(th_str_or_empty(row, "group"), group) == 0)
            return json_number_value(json_object_get(row, "value"));
    }
    return -1;
}

Test(http, reports_sum_the_charges_exactly_by_group_and_period) {
    th_server s;
    th_server_start(&s, NULL);
    charge(&s, "a", "ana", "gpt-4o", "code-review", 100);
    charge(&s, "a", "bob", "gpt-4o-mini", "chat", 250);
    charge(&s, "b", "cy", "gpt-4o", "chat", 1000);
    json_t *rep, *r;
    r = post(&s, "report", ADMIN, "{\"by\": \"team\", \"period\": \"day\", \"metric\": \"tokens\"}",
             200, &rep);
    json_t *rows = json_object_get(r, "rows");
    cr_assert_eq(json_array_size(rows), 2);
    cr_assert_float_eq(value_of(rows, "org:acme/team:a"), 350.0, 1e-9);
    cr_assert_float_eq(value_of(rows, "org:acme/team:b"), 1000.0, 1e-9);
    long long today = (long long)time(NULL) / 86400 * 86400;
    cr_assert_eq(json_integer_value(json_object_get(json_array_get(rows, 0), "period_start")),
                 today);
    cr_assert_str_eq(th_str_or_empty(r, "unit"), "tokens");
    json_decref(rep);
    r = post(&s, "report", ADMIN, "{\"by\": \"model\", \"metric\": \"requests\"}", 200, &rep);
    rows = json_object_get(r, "rows");
    cr_assert_float_eq(value_of(rows, "openai/gpt-4o"), 2.0, 1e-9);
    cr_assert_float_eq(value_of(rows, "openai/gpt-4o-mini"), 1.0, 1e-9);
    json_decref(rep);
    r = post(&s, "report", ADMIN, "{\"by\": \"purpose\", \"metric\": \"tokens\"}", 200, &rep);
    rows = json_object_get(r, "rows");
    cr_assert_float_eq(value_of(rows, "chat"), 1250.0, 1e-9);
    cr_assert_float_eq(value_of(rows, "code-review"), 100.0, 1e-9);
    json_decref(rep);
    r = post(&s, "report", ADMIN,
             "{\"by\": \"user\", \"period\": \"month\", \"metric\": \"tokens\"}", 200, &rep);
    rows = json_object_get(r, "rows");
    cr_assert_eq(json_array_size(rows), 3);
    cr_assert_float_eq(value_of(rows, "org:acme/team:a/user:bob"), 250.0, 1e-9);
    json_decref(rep);
    /* Outside [since, until): nothing. */
    r = post(&s, "report", ADMIN, "{\"by\": \"team\", \"since\": 1000, \"until\": 2000}", 200,
             &rep);
    cr_assert_eq(json_array_size(json_object_get(r, "rows")), 0);
    json_decref(rep);
    th_server_cleanup(&s);
}

Test(http, a_reader_reports_only_its_scope_over_http_and_rpc) {
    th_server s;
    th_server_start(&s, NULL);
    charge(&s, "a", "ana", "gpt-4o", "chat", 100);
    charge(&s, "b", "cy", "gpt-4o", "chat", 1000);
    char reader[80];
    th_create_key(&s, "reader", "org:acme/team:a", reader, NULL);
    json_t *rep,
        *r = post(&s, "report", reader, "{\"by\": \"team\", \"metric\": \"tokens\"}", 200, &rep);
    json_t *rows = json_object_get(r, "rows");
    cr_assert_eq(json_array_size(rows), 1);
    cr_assert_float_eq(value_of(rows, "org:acme/team:a"), 100.0, 1e-9);
    json_decref(rep);
    json_t *e =
        post(&s, "report", reader,
             "{\"by\": \"team\", \"subject\": {\"org\": \"acme\", \"team\": \"b\"}}", 403, &rep);
    cr_assert_str_eq(code_of(e), "forbidden");
    json_decref(rep);
    th_client *c = th_connect_as(&s, reader);
    json_t *rpc = th_call(c, "report", "{\"by\": \"team\", \"metric\": \"tokens\"}");
    cr_assert_eq(json_array_size(json_object_get(th_result(rpc), "rows")), 1);
    json_decref(rpc);
    rpc = th_call(c, "report", "{\"by\": \"team\", \"period\": \"year\"}");
    cr_assert_str_eq(th_error_code(rpc), "bad_request");
    json_decref(rpc);
    th_client_free(c);
    th_server_cleanup(&s);
}
