/*
 * redis_harness.c - start and stop a private redis-server for a test (see
 * redis_harness.h).
 *
 * The port is found by binding 127.0.0.1:0 and closing it; if another process
 * takes it before redis-server binds, redis-server exits and the start is retried
 * on a new port. The server never saves RDB snapshots (save ""); persistence is
 * what the test's extra lines ask for, so a test about AOF says so itself.
 */
#include "redis_harness.h"

#include <criterion/criterion.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static th_redis *live_redis;

static long long now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void sleep_ms(int ms) {
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static int free_port(void) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    cr_assert_geq(fd, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof a;
    cr_assert_eq(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
    cr_assert_eq(getsockname(fd, (struct sockaddr *)&a, &len), 0);
    close(fd);
    return ntohs(a.sin_port);
}

static void write_conf(const th_redis *r, const char *extra) {
    FILE *f = fopen(r->conf, "w");
    cr_assert_not_null(f);
    fprintf(f,
            "port %d\nbind 127.0.0.1\nprotected-mode yes\ndaemonize no\n"
            "dir %s\nlogfile %s\nunixsocket %s\nunixsocketperm 700\nsave \"\"\n"
            "appendonly no\n%s\n",
            r->port, r->dir, r->log, r->unix_path, extra ? extra : "");
    fclose(f);
}

static bool answers_ping(const th_redis *r) {
    struct timeval tv = {0, 200000};
    redisContext *c = redisConnectWithTimeout("127.0.0.1", r->port, tv);
    bool ok = false;
    if (c && !c->err) {
        redisReply *rep = redisCommand(c, "PING");
        /* a server with requirepass answers, but NOAUTH */
        ok = rep && ((rep->type == REDIS_REPLY_STATUS && strcmp(rep->str, "PONG") == 0) ||
                     (rep->type == REDIS_REPLY_ERROR && strncmp(rep->str, "NOAUTH", 6) == 0));
        if (rep) freeReplyObject(rep);
    }
    if (c) redisFree(c);
    return ok;
}

/* Spawn redis-server on r's config; true once it answers PING, false if it exited. */
static bool spawn(th_redis *r) {
    pid_t pid = fork();
    cr_assert(pid >= 0);
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL); /* a test killed by its timeout leaves no server */
        execlp("redis-server", "redis-server", r->conf, (char *)NULL);
        _exit(127);
    }
    r->pid = pid;
    for (long long deadline = now_ms() + 10000; now_ms() < deadline; sleep_ms(10)) {
        if (answers_ping(r)) return true;
        int status;
        if (waitpid(pid, &status, WNOHANG) == pid) {
            r->pid = 0;
            return false;
        }
    }
    cr_assert_fail("redis-server did not answer PING within 10 s (log %s)", r->log);
    return false;
}

void th_redis_start(th_redis *r, const char *extra) {
    memset(r, 0, sizeof *r);
    strcpy(r->dir, "/tmp/discern-redis-XXXXXX");
    cr_assert_not_null(mkdtemp(r->dir));
    snprintf(r->conf, sizeof r->conf, "%s/redis.conf", r->dir);
    snprintf(r->log, sizeof r->log, "%s/redis.log", r->dir);
    snprintf(r->unix_path, sizeof r->unix_path, "%s/redis.sock", r->dir);
    live_redis = r;
    for (int attempt = 0; attempt < 5; attempt++) {
        r->port = free_port();
        write_conf(r, extra);
        if (spawn(r)) return;
    }
    cr_assert_fail("redis-server would not start (log %s)", r->log);
}

void th_redis_restart(th_redis *r) {
    cr_assert_eq(r->pid, 0, "redis-server is still running");
    live_redis = r;
    cr_assert(spawn(r), "redis-server did not start again on port %d (log %s)", r->port, r->log);
}

static void reap(th_redis *r, int sig, int wait_ms) {
    if (r->pid <= 0) return;
    kill(r->pid, sig);
    for (long long deadline = now_ms() + wait_ms; now_ms() < deadline; sleep_ms(5))
        if (waitpid(r->pid, NULL, WNOHANG) == r->pid) {
            r->pid = 0;
            return;
        }
    kill(r->pid, SIGKILL);
    waitpid(r->pid, NULL, 0);
    r->pid = 0;
}

void th_redis_kill9(th_redis *r) {
    reap(r, SIGKILL, 5000);
}

void th_redis_stop(th_redis *r) {
    if (r->pid > 0) kill(r->pid, SIGCONT); /* a paused server cannot handle SIGTERM */
    reap(r, SIGTERM, 10000);
}

void th_redis_pause(th_redis *r) {
    cr_assert_eq(kill(r->pid, SIGSTOP), 0);
}

void th_redis_resume(th_redis *r) {
    cr_assert_eq(kill(r->pid, SIGCONT), 0);
}

void th_redis_cleanup(th_redis *r) {
    th_redis_stop(r);
    if (live_redis == r) live_redis = NULL;
    char cmd[400];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", r->dir);
    if (r->dir[0] && system(cmd) != 0) fprintf(stderr, "could not remove %s\n", r->dir);
}

void th_kill_live_redis(void) {
    if (live_redis && live_redis->pid > 0) reap(live_redis, SIGKILL, 5000);
}

redisContext *th_redis_connect(const th_redis *r) {
    struct timeval tv = {1, 0};
    redisContext *c = redisConnectWithTimeout("127.0.0.1", r->port, tv);
    cr_assert(c && !c->err, "cannot connect to redis-server on port %d", r->port);
    redisSetTimeout(c, tv);
    return c;
}

void th_redis_url(const th_redis *r, char *out, size_t cap) {
    snprintf(out, cap, "redis://127.0.0.1:%d", r->port);
}

long long th_redis_int(redisContext *c, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    redisReply *rep = redisvCommand(c, fmt, ap);
    va_end(ap);
    cr_assert_not_null(rep, "redis: %s", c->errstr);
    cr_assert_neq(rep->type, REDIS_REPLY_ERROR, "redis: %s", rep->str);
    long long v = rep->type == REDIS_REPLY_INTEGER  ? rep->integer
                  : rep->type == REDIS_REPLY_STRING ? strtoll(rep->str, NULL, 10)
                                                    : -1;
    freeReplyObject(rep);
    return v;
}
