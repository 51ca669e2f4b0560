/*
 * store_redis.h - one event loop's connection to the Redis ledger store.
 *
 * Each worker owns one dsc__redis on its own event_base (hiredis's libevent
 * adapter): a call is sent and its reply arrives later as a callback on that loop,
 * so no worker ever blocks on Redis. On connect it authenticates, selects the
 * database and loads every ledger script (server/redis/, SCRIPT LOAD); a call whose
 * script Redis has forgotten (NOSCRIPT: a restart without persistence, SCRIPT
 * FLUSH, a failover) loads it again and is sent once more.
 *
 * Faults: a call made while the connection is not ready fails at once with
 * DSC_STORE_UNAVAILABLE (the caller applies its failure_mode); a call unanswered
 * for timeout_ms drops the connection, which completes every call in flight with
 * DSC_STORE_UNAVAILABLE; the connection is then retried with exponential backoff
 * (backoff_min_ms doubling up to backoff_max_ms) until it is ready again, without
 * a restart. A node answering READONLY or MASTERDOWN (a replica, after a failover
 * behind a moving address) is left the same way, so the reconnect reaches the
 * address's new master. A second connection subscribes to the budgets channel and reports
 * every new budgets version (and -1 after it reconnected, or for a change that is
 * not a budgets version, like an API key's: re-read everything).
 *
 *   dsc__redis *r = dsc__redis_new(base, &cfg, &err);
 *   const char *argv[] = {...};
 *   dsc__redis_eval(r, DSC_REDIS_RESERVE, n, argv, on_reply, ud);
 *   dsc__redis_free(r);            every call still in flight completes, unavailable
 */
#ifndef DISCERN_SERVER_STORE_REDIS_H
#define DISCERN_SERVER_STORE_REDIS_H

#include "redis_scripts.h"
#include "store_url.h"

#include "discern/status.h"

#include <hiredis/hiredis.h>
#include <stdbool.h>
#include <stdint.h>

struct event_base;
typedef struct dsc__redis dsc__redis;

/* A call's completion, on the connection's loop: st DSC_OK with Redis's reply
 * (borrowed for the callback; an error reply is given as is), or
 * DSC_STORE_UNAVAILABLE with reply NULL and why in message. */
typedef void (*dsc__redis_reply_fn)(void *ud, dsc_status st, const redisReply *reply,
                                    const char *message);

typedef struct dsc__redis_config {
    const dsc__store_url *url;                     /* a Redis URL (DSC_STORE_REDIS_TCP or _UNIX) */
    const char *prefix;                            /* keys are "{prefix}..."; NULL = "discern:" */
    int timeout_ms;                                /* 0 = 1000 */
    int backoff_min_ms;                            /* 0 = 50 */
    int backoff_max_ms;                            /* 0 = 2000 */
    void (*on_ready)(void *ud, bool ready);        /* the connection became ready / was lost */
    void (*on_budgets)(void *ud, int64_t version); /* NULL = no subscription */
    void *ud;
} dsc__redis_config;

/* The reply objects of every connection: the redisReply tree hiredis builds, in
 * one block per reply (grown in chunks when a reply is larger) instead of two
 * mallocs per element, freed at once. Set on a reader's fn; only a whole reply
 * (the tree's root) is ever freed, as hiredis does. */
extern redisReplyObjectFunctions dsc__redis_reply_functions;

/* Connect on base (a TCP host name is resolved here, once). The connection goes on
 * in the background; NULL with err (DSC_BAD_REQUEST naming the store, DSC_NOMEM). */
dsc__redis *dsc__redis_new(struct event_base *base, const dsc__redis_config *cfg, dsc_error *err);
/* EVALSHA script with KEYS[1] = "{prefix}ver" and argv[0..argc) as ARGV (copied).
 * DSC_OK: fn will be called exactly once on this loop. DSC_STORE_UNAVAILABLE: not
 * ready, fn is not called. DSC_NOMEM likewise. */
dsc_status dsc__redis_eval(dsc__redis *r, dsc__redis_script script, int argc,
                           const char *const *argv, dsc__redis_reply_fn fn, void *ud);
/* v in decimal at p (at most 20 bytes, no NUL); the end. What the calls' numbers
 * are written with: a script call's arguments are mostly numbers. */
char *dsc__redis_put_int(char *p, int64_t v);
/* Write the calls queued on r now (as far as the socket takes them without
 * blocking) rather than at the loop's next turn: a call made before a reply is then
 * in Redis's hands before the reply's reader can act on it elsewhere. */
void dsc__redis_flush(dsc__redis *r);
/* Whether calls can be sent (connected, authenticated, scripts loaded). */
bool dsc__redis_ready(const dsc__redis *r);
/* Why the connection is not ready ("" when it is). */
const char *dsc__redis_last_error(const dsc__redis *r);
/* How many times the command connection has become ready (1 after the first). */
uint64_t dsc__redis_connects(const dsc__redis *r);
/* Close both connections; calls in flight complete with DSC_STORE_UNAVAILABLE.
 * NULL is a no-op. Not from inside one of its callbacks. */
void dsc__redis_free(dsc__redis *r);

#endif
