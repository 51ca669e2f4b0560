/*
 * harness.c - integration-test helpers (see harness.h).
 *
 * _GNU_SOURCE: prlimit(2), to lift the file-size limit of a running server, and
 * prctl(PR_SET_PDEATHSIG).
 */
#define _GNU_SOURCE
#include "harness.h"

#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <msgpack.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static void start_server(th_server *s, const char *extra, long long fsize, long nofile);

struct th_client {
    int fd;
    uint32_t next_id;
    msgpack_unpacker up;
    size_t last_size; /* bytes of the message th_read returned last */
};

/* The server started last and not yet cleaned up, for th_kill_live_server. */
static th_server *live_server;

int64_t th_now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void th_sleep_ms(int ms) {
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

static void write_config(const th_server *s, const char *extra) {
    char path[400];
    snprintf(path, sizeof path, "%s/discernd.conf", s->dir);
    FILE *f = fopen(path, "w");
    cr_assert_not_null(f);
    fprintf(f,
            "listen = \"127.0.0.1:0\"\nunix = \"%s\"\nhttp = \"127.0.0.1:0\"\n"
            "port_file = \"%s/ports\"\nstore = \"%s\"\nadmin_token = \"%s\"\n"
            "unix_admin_uids = \"none\"\nworkers = 2\n"
            "data = \"%s/core/data\"\npolicies = \"%s\"\n%s\n",
            s->unix_path, s->dir, s->store, TH_ADMIN_TOKEN, DISCERN_SOURCE_DIR, s->policies,
            extra ? extra : "");
    fclose(f);
}

static void dump_log(const th_server *s) {
    FILE *f = fopen(s->log, "r");
    if (!f) return;
    char line[1024];
    while (fgets(line, sizeof line, f))
        fprintf(stderr, "discernd: %s", line);
    fclose(f);
}

static bool read_ports(th_server *s) {
    char path[400];
    snprintf(path, sizeof path, "%s/ports", s->dir);
    FILE *f = fopen(path, "r");
    if (!f) return false;
    int ok = fscanf(f, "%d %d", &s->port, &s->http_port);
    fclose(f);
    return ok == 2;
}

static void spawn(th_server *s, const char *extra) {
    char conf[400], ports[400];
    write_config(s, extra);
    snprintf(conf, sizeof conf, "%s/discernd.conf", s->dir);
    snprintf(ports, sizeof ports, "%s/ports", s->dir);
    unlink(ports);
    pid_t pid = fork();
    cr_assert(pid >= 0);
    if (pid == 0) {
        int fd = open(s->log, O_WRONLY | O_CREAT | O_APPEND, 0644);
        if (fd >= 0) dup2(fd, 2);
        prctl(PR_SET_PDEATHSIG, SIGKILL); /* a test killed by its timeout leaves no server */
        if (s->fsize_limit > 0) {
            struct rlimit rl = {(rlim_t)s->fsize_limit, RLIM_INFINITY};
            setrlimit(RLIMIT_FSIZE, &rl);
        }
        if (s->nofile_limit > 0) {
            struct rlimit rl = {(rlim_t)s->nofile_limit, (rlim_t)s->nofile_limit};
            setrlimit(RLIMIT_NOFILE, &rl);
        }
        execl(DISCERND_PATH, "discernd", "--config", conf, (char *)NULL);
        _exit(127);
    }
    s->pid = pid;
    for (int64_t deadline = th_now_ms() + 10000; th_now_ms() < deadline;) {
        if (read_ports(s)) return;
        int status;
        if (waitpid(pid, &status, WNOHANG) == pid) {
            s->pid = 0;
            dump_log(s);
            cr_assert_fail("discernd exited at start with status %d", status);
        }
        th_sleep_ms(10);
    }
    dump_log(s);
    cr_assert_fail("discernd did not write its port file within 10 s");
}

void th_server_start_fsize(th_server *s, const char *extra, long long bytes) {
    start_server(s, extra, bytes, 0);
}

void th_server_start_nofile(th_server *s, const char *extra, long n) {
    start_server(s, extra, 0, n);
}

double th_server_cpu_s(const th_server *s) {
    char path[64], line[1024];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)s->pid);
    FILE *f = fopen(path, "r");
    cr_assert_not_null(f, "%s: %s", path, strerror(errno));
    const char *p = fgets(line, sizeof line, f) ? strrchr(line, ')') : NULL;
    fclose(f);
    cr_assert_not_null(p);
    unsigned long long utime = 0, stime = 0; /* fields 14 and 15; p is before field 3 */
    cr_assert_eq(
        sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &utime, &stime), 2);
    return (double)(utime + stime) / (double)sysconf(_SC_CLK_TCK);
}

int th_run_discernd(const char *const *args, char *out, size_t cap) {
    int p[2];
    cr_assert_eq(pipe(p), 0);
    pid_t pid = fork();
    cr_assert(pid >= 0);
    if (pid == 0) {
        dup2(p[1], 2);
        close(p[0]);
        int null = open("/dev/null", O_WRONLY);
        if (null >= 0) dup2(null, 1);
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        const char *argv[32] = {"discernd"};
        for (int i = 0; args[i] && i < 30; i++)
            argv[i + 1] = args[i];
        execv(DISCERND_PATH, (char **)argv);
        _exit(127);
    }
    close(p[1]);
    size_t len = 0;
    int64_t deadline = th_now_ms() + 10000;
    for (;;) {
        struct pollfd pf = {.fd = p[0], .events = POLLIN};
        int left = (int)(deadline - th_now_ms());
        if (left <= 0 || poll(&pf, 1, left) <= 0) break;
        ssize_t n = read(p[0], out + len, cap - 1 - len);
        if (n <= 0) break;
        len += (size_t)n;
        if (len + 1 >= cap) break;
    }
    out[len] = '\0';
    close(p[0]);
    int status = 0;
    for (; th_now_ms() < deadline; th_sleep_ms(5))
        if (waitpid(pid, &status, WNOHANG) == pid)
            return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    kill(pid, SIGKILL);
    waitpid(pid, &status, 0);
    return -1;
}

void th_server_set_fsize(th_server *s, long long bytes) {
    struct rlimit rl = {bytes > 0 ? (rlim_t)bytes : RLIM_INFINITY, RLIM_INFINITY};
    cr_assert_eq(prlimit(s->pid, RLIMIT_FSIZE, &rl, NULL), 0, "prlimit: %s", strerror(errno));
}

/* True when every thread of pid is in state T (stopped). */
static bool all_threads_stopped(pid_t pid) {
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/task", (int)pid);
    DIR *d = opendir(path);
    if (!d) return false;
    bool all = true;
    struct dirent *e;
    while (all && (e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.') continue;
        char stat[400], line[512];
        snprintf(stat, sizeof stat, "%.63s/%.255s/stat", path, e->d_name);
        FILE *f = fopen(stat, "r");
        if (!f) continue; /* a thread that just exited */
        const char *close_paren = fgets(line, sizeof line, f) ? strrchr(line, ')') : NULL;
        all = close_paren && (close_paren[2] == 'T' || close_paren[2] == 't');
        fclose(f);
    }
    closedir(d);
    return all;
}

void th_server_pause(th_server *s) {
    cr_assert_eq(kill(s->pid, SIGSTOP), 0);
    for (int64_t deadline = th_now_ms() + 5000; th_now_ms() < deadline; th_sleep_ms(1))
        if (all_threads_stopped(s->pid)) return;
    cr_assert_fail("discernd's threads did not all stop within 5 s");
}

void th_server_resume(th_server *s) {
    cr_assert_eq(kill(s->pid, SIGCONT), 0);
}

void th_server_start(th_server *s, const char *extra) {
    start_server(s, extra, 0, 0);
}

void th_server_prepare(th_server *s) {
    memset(s, 0, sizeof *s);
    strcpy(s->dir, "/tmp/discernd-test-XXXXXX");
    cr_assert_not_null(mkdtemp(s->dir));
    snprintf(s->unix_path, sizeof s->unix_path, "%s/d.sock", s->dir);
    snprintf(s->store, sizeof s->store, "%s/discern.db", s->dir);
    snprintf(s->log, sizeof s->log, "%s/discernd.log", s->dir);
    snprintf(s->policies, sizeof s->policies, "%s/policies", s->dir);
    char cmd[800];
    snprintf(cmd, sizeof cmd, "cp -r '%s/tests/server/fixtures/policies' '%s'", DISCERN_SOURCE_DIR,
             s->policies);
    cr_assert_eq(system(cmd), 0, "cannot copy the fixture policies");
    live_server = s;
}

static void start_server(th_server *s, const char *extra, long long fsize, long nofile) {
    th_server_prepare(s);
    s->fsize_limit = fsize;
    s->nofile_limit = nofile;
    spawn(s, extra);
}

int th_server_expect_exit(th_server *s, const char *extra) {
    char conf[400];
    write_config(s, extra);
    snprintf(conf, sizeof conf, "%s/discernd.conf", s->dir);
    pid_t pid = fork();
    cr_assert(pid >= 0);
    if (pid == 0) {
        int fd = open(s->log, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (fd >= 0) dup2(fd, 2);
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        execl(DISCERND_PATH, "discernd", "--config", conf, (char *)NULL);
        _exit(127);
    }
    int status;
    for (int64_t deadline = th_now_ms() + 10000; th_now_ms() < deadline; th_sleep_ms(10))
        if (waitpid(pid, &status, WNOHANG) == pid)
            return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    kill(pid, SIGKILL);
    waitpid(pid, &status, 0);
    cr_assert_fail("discernd was expected to exit but still ran after 10 s");
    return -1;
}

bool th_log_contains(const th_server *s, const char *text) {
    FILE *f = fopen(s->log, "r");
    if (!f) return false;
    char line[2048];
    bool found = false;
    while (!found && fgets(line, sizeof line, f))
        found = strstr(line, text) != NULL;
    fclose(f);
    return found;
}

void th_kill_live_server(void) {
    if (live_server && live_server->pid > 0) {
        kill(live_server->pid, SIGKILL);
        waitpid(live_server->pid, NULL, 0);
        live_server->pid = 0;
    }
}

void th_server_restart(th_server *s, const char *extra) {
    spawn(s, extra);
}

int th_server_stop(th_server *s) {
    if (s->pid <= 0) return -1;
    kill(s->pid, SIGTERM);
    int status = 0;
    for (int64_t deadline = th_now_ms() + 15000; th_now_ms() < deadline; th_sleep_ms(5)) {
        if (waitpid(s->pid, &status, WNOHANG) == s->pid) {
            s->pid = 0;
            if (!WIFEXITED(status)) dump_log(s);
            return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
        }
    }
    kill(s->pid, SIGKILL);
    waitpid(s->pid, &status, 0);
    s->pid = 0;
    dump_log(s);
    return -1;
}

/* Fail the test when the server's log holds a sanitizer report. */
static bool log_is_clean(const th_server *s) {
    FILE *f = fopen(s->log, "r");
    if (!f) return true;
    char line[2048];
    bool bad = false;
    while (fgets(line, sizeof line, f))
        if (strstr(line, "ThreadSanitizer") || strstr(line, "AddressSanitizer") ||
            strstr(line, "LeakSanitizer") || strstr(line, "runtime error:"))
            bad = true;
    fclose(f);
    if (bad) dump_log(s);
    return !bad;
}

void th_server_cleanup(th_server *s) {
    int code = s->pid > 0 ? th_server_stop(s) : 0;
    if (live_server == s) live_server = NULL;
    bool clean = log_is_clean(s);
    if (code != 0) dump_log(s);
    char cmd[400];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", s->dir);
    if (s->dir[0] && system(cmd) != 0) fprintf(stderr, "could not remove %s\n", s->dir);
    cr_assert(clean, "discernd's log holds a sanitizer report");
    cr_assert_eq(code, 0, "discernd exited with %d", code);
}

void th_write_policy(th_server *s, const char *name, const char *text) {
    char path[400], tmp[420];
    snprintf(path, sizeof path, "%s/%s", s->policies, name);
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    FILE *f = fopen(tmp, "w");
    cr_assert_not_null(f);
    fputs(text, f);
    fclose(f);
    cr_assert_eq(rename(tmp, path), 0);
}

char *th_http_get(const th_server *s, const char *path, int *status) {
    return th_http_get_auth(s, path, NULL, status);
}

char *th_http_raw(const th_server *s, const char *raw, size_t n, int *status) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)s->http_port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    cr_assert(connect(fd, (struct sockaddr *)&a, sizeof a) == 0, "http connect: %s",
              strerror(errno));
    for (size_t off = 0; off < n;) {
        ssize_t w = send(fd, raw + off, n - off, MSG_NOSIGNAL);
        if (w <= 0) break; /* the server may answer and close before reading it all */
        off += (size_t)w;
    }
    size_t cap = 1 << 16, len = 0;
    char *buf = malloc(cap);
    for (;;) {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        cr_assert(poll(&p, 1, 5000) > 0, "http: no answer within 5 s");
        if (len + 4096 > cap) buf = realloc(buf, cap *= 2);
        ssize_t r = recv(fd, buf + len, cap - len - 1, 0);
        if (r <= 0) break;
        len += (size_t)r;
    }
    close(fd);
    buf[len] = '\0';
    *status = 0;
    sscanf(buf, "HTTP/1.%*d %d", status);
    return buf;
}

char *th_http_get_auth(const th_server *s, const char *path, const char *token, int *status) {
    char req[512];
    int n =
        snprintf(req, sizeof req, "GET %s HTTP/1.0\r\nHost: localhost\r\n%s%s%s\r\n", path,
                 token ? "Authorization: Bearer " : "", token ? token : "", token ? "\r\n" : "");
    char *buf = th_http_raw(s, req, (size_t)n, status);
    char *body = strstr(buf, "\r\n\r\n");
    char *out = strdup(body ? body + 4 : "");
    free(buf);
    return out;
}

json_t *th_http_post(const th_server *s, const char *path, const char *token, const char *body,
                     int *status) {
    size_t blen = strlen(body), cap = blen + 1024;
    char *req = malloc(cap);
    int n = snprintf(req, cap,
                     "POST %s HTTP/1.0\r\nHost: localhost\r\nContent-Type: application/json\r\n"
                     "Content-Length: %zu\r\n%s%s%s\r\n%s",
                     path, blen, token ? "Authorization: Bearer " : "", token ? token : "",
                     token ? "\r\n" : "", body);
    char *buf = th_http_raw(s, req, (size_t)n, status);
    free(req);
    char *text = strstr(buf, "\r\n\r\n");
    json_t *v = text ? json_loads(text + 4, 0, NULL) : NULL;
    free(buf);
    return v;
}

long long th_sql_int(const th_server *s, const char *sql) {
    sqlite3 *db;
    cr_assert_eq(sqlite3_open_v2(s->store, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
    sqlite3_busy_timeout(db, 5000);
    sqlite3_stmt *st;
    cr_assert_eq(sqlite3_prepare_v2(db, sql, -1, &st, NULL), SQLITE_OK, "%s: %s", sql,
                 sqlite3_errmsg(db));
    long long v = sqlite3_step(st) == SQLITE_ROW ? sqlite3_column_int64(st, 0) : -1;
    sqlite3_finalize(st);
    sqlite3_close(db);
    return v;
}

long th_server_rss_kib(const th_server *s) {
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/%d/status", (int)s->pid);
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    long kib = -1;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "VmRSS: %ld kB", &kib) == 1) break;
    fclose(f);
    return kib;
}

/* --------------------------------------------------------------------- client -- */

static th_client *client_new(int fd) {
    th_client *c = calloc(1, sizeof *c);
    cr_assert_not_null(c);
    c->fd = fd;
    c->next_id = 1000000;
    cr_assert(msgpack_unpacker_init(&c->up, 1 << 16));
    return c;
}

th_client *th_connect_tcp(const th_server *s) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)s->port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    cr_assert(connect(fd, (struct sockaddr *)&a, sizeof a) == 0, "connect: %s", strerror(errno));
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    return client_new(fd);
}

th_client *th_connect_tcp_from(const th_server *s, const char *source) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET};
    cr_assert_eq(inet_pton(AF_INET, source, &a.sin_addr), 1, "bad source address %s", source);
    cr_assert(bind(fd, (struct sockaddr *)&a, sizeof a) == 0, "bind %s: %s", source,
              strerror(errno));
    a.sin_port = htons((uint16_t)s->port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    cr_assert(connect(fd, (struct sockaddr *)&a, sizeof a) == 0, "connect: %s", strerror(errno));
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    return client_new(fd);
}

th_client *th_connect_as(const th_server *s, const char *token) {
    th_client *c = th_connect_tcp(s);
    char params[256];
    snprintf(params, sizeof params, "{\"token\": \"%s\"}", token);
    json_t *r = th_call(c, "auth", params);
    cr_assert_str_eq(th_error_code(r), "", "auth failed: %s", th_error_message(r));
    json_decref(r);
    return c;
}

th_client *th_connect_admin(const th_server *s) {
    return th_connect_as(s, TH_ADMIN_TOKEN);
}

void th_create_key(const th_server *s, const char *role, const char *scope, char *out, char *id) {
    th_client *c = th_connect_admin(s);
    char params[256];
    snprintf(params, sizeof params, "{\"role\": \"%s\", \"scope\": \"%s\"}", role, scope);
    json_t *r = th_call(c, "key.create", params);
    cr_assert_str_eq(th_error_code(r), "", "key.create: %s", th_error_message(r));
    snprintf(out, 72, "%s", json_string_value(json_object_get(th_result(r), "token")));
    if (id) snprintf(id, 24, "%s", json_string_value(json_object_get(th_result(r), "key_id")));
    json_decref(r);
    th_client_free(c);
}

th_client *th_connect_unix(const th_server *s) {
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    struct sockaddr_un a = {.sun_family = AF_UNIX};
    cr_assert_lt(strlen(s->unix_path), sizeof a.sun_path);
    memcpy(a.sun_path, s->unix_path, strlen(s->unix_path) + 1);
    cr_assert(connect(fd, (struct sockaddr *)&a, sizeof a) == 0, "connect: %s", strerror(errno));
    return client_new(fd);
}

void th_client_free(th_client *c) {
    if (!c) return;
    close(c->fd);
    msgpack_unpacker_destroy(&c->up);
    free(c);
}

void th_send_raw(th_client *c, const void *data, size_t n) {
    const char *p = data;
    while (n > 0) {
        ssize_t w = send(c->fd, p, n, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) return; /* the server may have closed: the test checks that */
        p += w;
        n -= (size_t)w;
    }
}

static void pack_json(msgpack_packer *pk, json_t *v) {
    switch (json_typeof(v)) {
    case JSON_OBJECT: {
        msgpack_pack_map(pk, json_object_size(v));
        const char *k;
        json_t *x;
        json_object_foreach(v, k, x) {
            msgpack_pack_str(pk, strlen(k));
            msgpack_pack_str_body(pk, k, strlen(k));
            pack_json(pk, x);
        }
        break;
    }
    case JSON_ARRAY: {
        msgpack_pack_array(pk, json_array_size(v));
        size_t i;
        json_t *x;
        json_array_foreach(v, i, x) pack_json(pk, x);
        break;
    }
    case JSON_STRING:
        msgpack_pack_str(pk, json_string_length(v));
        msgpack_pack_str_body(pk, json_string_value(v), json_string_length(v));
        break;
    case JSON_INTEGER:
        msgpack_pack_int64(pk, json_integer_value(v));
        break;
    case JSON_REAL:
        msgpack_pack_double(pk, json_real_value(v));
        break;
    case JSON_TRUE:
        msgpack_pack_true(pk);
        break;
    case JSON_FALSE:
        msgpack_pack_false(pk);
        break;
    case JSON_NULL:
        msgpack_pack_nil(pk);
        break;
    }
}

/* Replace every occurrence of from in buf[0..n) with to (the same length). */
static void mangle(char *buf, size_t n, const char *from, const char *to) {
    size_t k = from ? strlen(from) : 0;
    for (size_t i = 0; k && i + k <= n; i++)
        if (memcmp(buf + i, from, k) == 0) memcpy(buf + i, to, k);
}

static void send_mangled(th_client *c, int kind, uint32_t msgid, const char *method,
                         const char *params, const char *from, const char *to) {
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_array(&pk, kind == 0 ? 4 : 3);
    msgpack_pack_int(&pk, kind);
    if (kind == 0) msgpack_pack_uint32(&pk, msgid);
    msgpack_pack_str(&pk, strlen(method));
    msgpack_pack_str_body(&pk, method, strlen(method));
    if (params) {
        json_error_t jerr;
        json_t *p = json_loads(params, 0, &jerr);
        cr_assert_not_null(p, "bad test params %s: %s", params, jerr.text);
        msgpack_pack_array(&pk, 1);
        pack_json(&pk, p);
        json_decref(p);
    } else {
        msgpack_pack_array(&pk, 0);
    }
    mangle(sb.data, sb.size, from, to);
    th_send_raw(c, sb.data, sb.size);
    msgpack_sbuffer_destroy(&sb);
}

static void send_message(th_client *c, int kind, uint32_t msgid, const char *method,
                         const char *params) {
    send_mangled(c, kind, msgid, method, params, NULL, NULL);
}

void th_send_request(th_client *c, uint32_t msgid, const char *method, const char *params) {
    send_message(c, 0, msgid, method, params);
}

void th_send_notification(th_client *c, const char *method, const char *params) {
    send_message(c, 2, 0, method, params);
}

static json_t *to_json(const msgpack_object *o) {
    switch (o->type) {
    case MSGPACK_OBJECT_NIL:
        return json_null();
    case MSGPACK_OBJECT_BOOLEAN:
        return json_boolean(o->via.boolean);
    case MSGPACK_OBJECT_POSITIVE_INTEGER:
        return json_integer((json_int_t)o->via.u64);
    case MSGPACK_OBJECT_NEGATIVE_INTEGER:
        return json_integer((json_int_t)o->via.i64);
    case MSGPACK_OBJECT_FLOAT32:
    case MSGPACK_OBJECT_FLOAT64:
        return json_real(o->via.f64);
    case MSGPACK_OBJECT_STR:
    case MSGPACK_OBJECT_BIN:
        return json_stringn(o->via.str.ptr, o->via.str.size);
    case MSGPACK_OBJECT_ARRAY: {
        json_t *a = json_array();
        for (uint32_t i = 0; i < o->via.array.size; i++)
            json_array_append_new(a, to_json(&o->via.array.ptr[i]));
        return a;
    }
    case MSGPACK_OBJECT_MAP: {
        json_t *m = json_object();
        for (uint32_t i = 0; i < o->via.map.size; i++) {
            const msgpack_object *k = &o->via.map.ptr[i].key;
            char key[256];
            snprintf(key, sizeof key, "%.*s", (int)k->via.str.size, k->via.str.ptr);
            json_object_set_new(m, key, to_json(&o->via.map.ptr[i].val));
        }
        return m;
    }
    default:
        return json_null();
    }
}

/* Receive more bytes into the unpacker: 1 got some, 0 closed, -1 timeout. */
static int receive(th_client *c, int64_t deadline) {
    int wait = (int)(deadline - th_now_ms());
    if (wait < 0) wait = 0;
    struct pollfd p = {.fd = c->fd, .events = POLLIN};
    if (poll(&p, 1, wait) <= 0) return -1;
    msgpack_unpacker_reserve_buffer(&c->up, 1 << 16);
    ssize_t n =
        recv(c->fd, msgpack_unpacker_buffer(&c->up), msgpack_unpacker_buffer_capacity(&c->up), 0);
    if (n <= 0) return 0;
    msgpack_unpacker_buffer_consumed(&c->up, (size_t)n);
    return 1;
}

json_t *th_read(th_client *c, int timeout_ms) {
    int64_t deadline = th_now_ms() + timeout_ms;
    msgpack_unpacked u;
    msgpack_unpacked_init(&u);
    json_t *out = NULL;
    for (;;) {
        size_t before = c->up.off; /* next() moves off past the message it returns */
        if (msgpack_unpacker_next(&c->up, &u) == MSGPACK_UNPACK_SUCCESS) {
            c->last_size = c->up.off - before;
            out = to_json(&u.data);
            break;
        }
        if (receive(c, deadline) <= 0) break;
    }
    msgpack_unpacked_destroy(&u);
    return out;
}

size_t th_last_size(const th_client *c) {
    return c->last_size;
}

bool th_closed(th_client *c, int timeout_ms) {
    int64_t deadline = th_now_ms() + timeout_ms;
    msgpack_unpacked u;
    msgpack_unpacked_init(&u);
    int r;
    do {
        while (msgpack_unpacker_next(&c->up, &u) == MSGPACK_UNPACK_SUCCESS) {
        }
    } while ((r = receive(c, deadline)) == 1);
    msgpack_unpacked_destroy(&u);
    return r == 0;
}

json_t *th_call(th_client *c, const char *method, const char *params) {
    return th_call_mangled(c, method, params, NULL, NULL);
}

json_t *th_call_mangled(th_client *c, const char *method, const char *params, const char *from,
                        const char *to) {
    uint32_t id = c->next_id++;
    send_mangled(c, 0, id, method, params, from, to);
    for (;;) {
        json_t *m = th_read(c, 5000);
        cr_assert_not_null(m, "no response to %s within 5 s", method);
        if (json_is_array(m) && json_array_size(m) == 4 &&
            json_integer_value(json_array_get(m, 1)) == (json_int_t)id)
            return m;
        json_decref(m);
    }
}

json_t *th_result(json_t *response) {
    json_t *r = json_array_get(response, 3);
    return json_is_object(r) ? r : NULL;
}

const char *th_error_code(json_t *response) {
    json_t *e = json_array_get(response, 2);
    return json_is_object(e) ? json_string_value(json_object_get(e, "code")) : "";
}

const char *th_error_message(json_t *response) {
    json_t *e = json_array_get(response, 2);
    return json_is_object(e) ? json_string_value(json_object_get(e, "message")) : "";
}

json_t *th_ok(th_client *c, const char *method, const char *params, json_t **res) {
    json_t *r = th_call(c, method, params);
    cr_assert_not_null(th_result(r), "%s %s failed: %s %s", method, params, th_error_code(r),
                       th_error_message(r));
    *res = th_result(r);
    return r;
}

void th_fails(th_client *c, const char *method, const char *params, const char *code,
              const char *needle) {
    json_t *r = th_call(c, method, params);
    cr_assert_str_eq(th_error_code(r), code, "%s %s: got '%s' (%s)", method, params,
                     th_error_code(r), th_error_message(r));
    if (needle)
        cr_assert(strstr(th_error_message(r), needle), "%s: '%s' lacks '%s'", method,
                  th_error_message(r), needle);
    cr_assert(json_is_null(json_array_get(r, 3)));
    json_decref(r);
}

const char *th_str(json_t *obj, const char *key) {
    const char *v = json_string_value(json_object_get(obj, key));
    cr_assert_not_null(v, "no string '%s'", key);
    return v;
}

const char *th_str_or_empty(json_t *obj, const char *key) {
    const char *v = json_string_value(json_object_get(obj, key));
    return v ? v : "";
}

double th_num(json_t *obj, const char *key) {
    json_t *v = json_object_get(obj, key);
    cr_assert(json_is_number(v), "no number '%s'", key);
    return json_number_value(v);
}
