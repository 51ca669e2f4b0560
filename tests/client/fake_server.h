/*
 * fake_server.h - a misbehaving or scripted MessagePack-RPC peer for client tests.
 *
 * Faults a real discernd does not produce on demand (never answering, closing in
 * the middle of a reply, replies that are too large), and a scripted `check` whose
 * decisions a test chooses, run in a child process on an ephemeral TCP port:
 *
 *   fake_server f;
 *   fake_start(&f, FAKE_SCRIPT, "throttle:0.2,allow");
 *   ... point a client at f.address ...
 *   fake_accepts(&f)          connections accepted so far
 *   fake_log(&f)              every request seen, one line each: "settle r-1 12 34"
 *   fake_expect_log(&f, "check chat 100\n")   the same, asserted
 *   fake_stop(&f);
 */
#ifndef DISCERN_FAKE_SERVER_H
#define DISCERN_FAKE_SERVER_H

#include <sys/types.h>

typedef enum fake_mode {
    FAKE_SILENT,      /* accepts and reads, never answers */
    FAKE_NO_ACCEPT,   /* listens but never accepts (connections wait in the backlog) */
    FAKE_HALF_REPLY,  /* answers half of a reply, then closes the connection */
    FAKE_CLOSE,       /* closes every connection as soon as a request arrives */
    FAKE_HUGE_STRING, /* answers with a 2 MiB string */
    FAKE_BOMB,        /* answers with 5 bytes declaring an array of 2^32-1 elements */
    FAKE_GARBAGE,     /* answers with the reserved byte 0xc1 */
    FAKE_DEEP,        /* answers with 100 nested one-element arrays around a nil */
    FAKE_SCRIPT,      /* answers ping, check (scripted), settle and cancel */
} fake_mode;

typedef struct fake_server {
    pid_t pid;
    int port;
    char address[64]; /* "127.0.0.1:<port>" */
    char dir[64];     /* temporary folder: the log and the accept counter */
} fake_server;

/* Start a fake peer. script (FAKE_SCRIPT only) lists the decisions of successive
 * checks, comma separated: "allow", "refuse", "throttle:<retry_after_s>"; the last
 * one repeats. An allowed check reserves "r-<n>". */
void fake_start(fake_server *f, fake_mode mode, const char *script);
/* Connections accepted so far. */
int fake_accepts(const fake_server *f);
/* The request log (malloc'd, NUL-terminated): "<method> [details]\n" per request:
 * check <purpose> <output_tokens>, settle <reservation> <input> <output>,
 * cancel <reservation>. */
char *fake_log(const fake_server *f);
/* Fail the test unless the request log is exactly want. */
void fake_expect_log(const fake_server *f, const char *want);
/* A loopback TCP port nothing listens on (bound, read back, closed). */
int fake_closed_port(void);
/* Kill the child and remove its folder. */
void fake_stop(fake_server *f);

#endif
