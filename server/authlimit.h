/*
 * authlimit.h - what a failed `auth` costs: per-address and global slowdown of token
 * guessing, failures logged in aggregate (server/authlimit.c).
 *
 * Measured before it existed (docs/benchmarks.md): a client reconnecting every three
 * wrong tokens had ~24 000 guesses a second evaluated, and each wrote a log line. Now:
 *   - an address (IPv4 address, IPv6 /64, or the uid of a Unix-socket peer) gets
 *     DSC__AUTHLIMIT_FREE failures for free; after that every auth attempt from it,
 *     right or wrong, is evaluated only at its turn: at least 100 ms after it
 *     arrives, and one gap after the previous turn, the gap starting at 100 ms and
 *     doubling with each further failure (up to 3.2 s). Attempts on parallel
 *     connections queue behind one another, so the rate per address is bounded, not
 *     only the wait per connection. An attempt whose turn is more than 8 s away is
 *     refused unevaluated.
 *   - globally (TCP only), more than DSC__AUTHLIMIT_GLOBAL_FREE failures within the
 *     last one to two seconds make every TCP auth attempt wait at least 100 ms and
 *     queue for one of 20 turns a second, whatever its address.
 *   - failures are counted (discern_auth_failures_total) and logged as one line per
 *     10 s with the count, the number of addresses and the busiest one.
 * Forgetting: an address with no failure for 15 minutes starts clean; the table holds
 * at most DSC__AUTHLIMIT_ADDRESSES addresses, the least recently failing goes first.
 * All functions are thread-safe (one mutex; only auth calls and the tick take it).
 *
 *   dsc__authlimit *l = dsc__authlimit_new();
 *   dsc__authlimit_key(fd, key, sizeof key);
 *   int64_t wait = dsc__authlimit_admit(l, key, now, &err);  -1: refused, err says why
 *   ... after wait µs, evaluate the token; when wrong: dsc__authlimit_failed(l, key, now)
 *   dsc__authlimit_report(l, &log, now);                       once a second
 */
#ifndef DISCERN_SERVER_AUTHLIMIT_H
#define DISCERN_SERVER_AUTHLIMIT_H

#include "log.h"

#include "discern/status.h"

#include <stddef.h>
#include <stdint.h>

#define DSC__AUTHLIMIT_FREE 3                /* failures per address before waits */
#define DSC__AUTHLIMIT_DELAY_US 100000       /* the first wait, doubled per failure */
#define DSC__AUTHLIMIT_DELAY_MAX_US 3200000  /* the longest gap between two turns */
#define DSC__AUTHLIMIT_WAIT_MAX_US 8000000   /* later turns are refused (< drain deadline) */
#define DSC__AUTHLIMIT_FORGET_US 900000000LL /* 15 min without failure: start clean */
#define DSC__AUTHLIMIT_GLOBAL_FREE 20        /* failures per second, all TCP peers */
#define DSC__AUTHLIMIT_GLOBAL_GAP_US 50000   /* 20 turns a second in all while over it */
#define DSC__AUTHLIMIT_ADDRESSES 4096        /* addresses remembered */
#define DSC__AUTHLIMIT_REPORT_US 10000000    /* one aggregated log line per 10 s */
#define DSC__AUTHLIMIT_KEY_MAX 64

typedef struct dsc__authlimit dsc__authlimit;

/* An empty limiter; NULL when out of memory. */
dsc__authlimit *dsc__authlimit_new(void);
/* Free l (NULL is a no-op). */
void dsc__authlimit_free(dsc__authlimit *l);
/* Write the limiter's key of the peer of socket fd into key: "tcp:192.0.2.1",
 * "tcp:2001:db8:1:2::/64" or "unix:uid=1000" ("unknown" when the kernel cannot
 * tell). Returns key. */
const char *dsc__authlimit_key(int fd, char *key, size_t cap);
/* When may an auth attempt from key be evaluated: 0 = now, > 0 = after that many µs
 * (its turn is booked), -1 = refused unevaluated (err: DSC_UNAUTHORIZED saying when
 * to retry). Keys starting "unix:" are outside the global limit. */
int64_t dsc__authlimit_admit(dsc__authlimit *l, const char *key, int64_t now_us, dsc_error *err);
/* Count a failed attempt of key (a wrong or unknown token). */
void dsc__authlimit_failed(dsc__authlimit *l, const char *key, int64_t now_us);
/* Log the failures counted since the last line, at most one line per
 * DSC__AUTHLIMIT_REPORT_US and none when there were none. */
void dsc__authlimit_report(dsc__authlimit *l, const dsc_log *log, int64_t now_us);
/* Failed attempts since start. */
uint64_t dsc__authlimit_total(dsc__authlimit *l);
/* Addresses remembered now (bounded by DSC__AUTHLIMIT_ADDRESSES). */
size_t dsc__authlimit_size(dsc__authlimit *l);

#endif
