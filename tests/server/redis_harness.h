/*
 * redis_harness.h - tests start their own redis-server: a free loopback port, a
 * Unix socket and its data in a temporary folder, stopped by its pid.
 *
 *   th_redis r;
 *   th_redis_start(&r, "appendonly yes\nappendfsync always\n");   extra config lines
 *   redisContext *c = th_redis_connect(&r);                       a blocking client
 *   th_redis_kill9(&r); th_redis_restart(&r);                      same port and data
 *   th_redis_cleanup(&r);                                          stop, remove folder
 *
 * A suite declares TestSuite(name, .fini = th_kill_live_redis) so that a failing
 * test leaves no redis-server behind (the server also dies with the test process).
 */
#ifndef DISCERN_TEST_REDIS_HARNESS_H
#define DISCERN_TEST_REDIS_HARNESS_H

#include <hiredis/hiredis.h>
#include <sys/types.h>

typedef struct th_redis {
    pid_t pid;
    int port;
    char dir[256];
    char conf[300];
    char log[300];
    char unix_path[300];
} th_redis;

/* Start redis-server with the test config plus extra (config lines, may be NULL);
 * aborts the test when it does not answer PING within 10 s. */
void th_redis_start(th_redis *r, const char *extra);
/* Start it again on the same port, folder and config (after a stop or kill). */
void th_redis_restart(th_redis *r);
/* SIGKILL and reap: what a crash of the Redis host looks like to discern. */
void th_redis_kill9(th_redis *r);
/* SIGSTOP / SIGCONT: a Redis that stops answering without closing connections. */
void th_redis_pause(th_redis *r);
void th_redis_resume(th_redis *r);
/* SIGTERM and wait (bounded, then SIGKILL). */
void th_redis_stop(th_redis *r);
/* Stop if running and remove the folder. */
void th_redis_cleanup(th_redis *r);
/* SIGKILL the redis-server started last, if it still runs (a suite's .fini). */
void th_kill_live_redis(void);
/* A blocking client on the TCP port (1 s timeouts); aborts the test on failure. */
redisContext *th_redis_connect(const th_redis *r);
/* "redis://127.0.0.1:<port>" into out. */
void th_redis_url(const th_redis *r, char *out, size_t cap);
/* Run one command (printf-style, hiredis's format) and return its integer reply
 * (a string reply is converted; -1 for nil). Aborts the test on an error reply. */
long long th_redis_int(redisContext *c, const char *fmt, ...);

#endif
