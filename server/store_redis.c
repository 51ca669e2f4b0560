/*
 * store_redis.c - one event loop's connection to the Redis ledger store (see
 * store_redis.h).
 *
 * Two hiredis async contexts per loop: `cmd` carries the script calls, `sub` the
 * budgets subscription (a subscribed connection can send nothing else). Each goes
 * DOWN -> CONNECTING -> LOADING (AUTH, SELECT, SCRIPT LOAD / SUBSCRIBE) -> READY,
 * and back to DOWN on any fault, retried after a backoff that doubles from
 * backoff_min_ms to backoff_max_ms. Calls in flight are kept oldest first so that
 * one periodic watch can tell a Redis that stopped answering (SIGSTOP, a network
 * partition, a long fork) from a busy one: the oldest call older than timeout_ms
 * drops the connection. hiredis completes every call of a dropped context with a
 * NULL reply, which becomes DSC_STORE_UNAVAILABLE: no call is ever left without
 * an answer, and none is answered twice.
 */
#include "store_redis.h"

#include "dlist_internal.h"

#include <event2/event.h>
#include <hiredis/adapters/libevent.h>
#include <hiredis/async.h>
#include <netdb.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

typedef enum conn_state { DOWN, CONNECTING, LOADING, READY } conn_state;

typedef struct conn {
    dsc__redis *r;
    redisAsyncContext *ac;
    conn_state state;
    bool subscriber;
    int failures;   /* in a row, for the backoff */
    int loading;    /* handshake replies still awaited */
    bool announced; /* on_ready(true) was the last word to the owner */
    int64_t since_us;
    struct event *retry;
} conn;

typedef struct call {
    dsc__dlink link; /* in the owner's calls in flight */
    dsc__redis *r;
    dsc__redis_script script;
    dsc__redis_reply_fn fn;
    void *ud;
    int64_t sent_us;
    bool retried;   /* sent again after NOSCRIPT */
    size_t sha_at;  /* where the script's sha is in cmd (40 bytes), 0: none there */
    size_t cmd_len; /* the whole EVALSHA in the protocol's own form, formatted once */
    char cmd[];
} call;

struct dsc__redis {
    struct event_base *base;
    dsc__store_url url;
    char key0[80], channel[80];
    char sha[DSC_REDIS_SCRIPT_COUNT][41];
    int timeout_ms, backoff_min_ms, backoff_max_ms;
    void (*on_ready)(void *ud, bool ready);
    void (*on_budgets)(void *ud, int64_t version);
    void *ud;
    conn cmd, sub;
    dsc__dlist calls; /* in flight, oldest first */
    struct event *watch;
    char last_error[256];
    uint64_t connects;
    bool closing;
};

static int64_t mono_us(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static void set_state(conn *c, conn_state s) {
    c->state = s;
    c->since_us = mono_us();
}

static void conn_start(conn *c);

static void schedule_retry(conn *c) {
    dsc__redis *r = c->r;
    if (r->closing) return;
    int64_t ms = r->backoff_min_ms;
    for (int i = 0; i < c->failures && ms < r->backoff_max_ms; i++)
        ms *= 2;
    if (ms > r->backoff_max_ms) ms = r->backoff_max_ms;
    if (c->failures < 30) c->failures++;
    struct timeval tv = {(time_t)(ms / 1000), (suseconds_t)(ms % 1000) * 1000};
    evtimer_add(c->retry, &tv);
}

/* The context of c is gone (freed by hiredis or by drop): go DOWN, retry later. */
static void lost(conn *c) {
    c->ac = NULL;
    set_state(c, DOWN);
    if (c->announced && c->r->on_ready) c->r->on_ready(c->r->ud, false);
    c->announced = false;
    schedule_retry(c);
}

static void set_error(dsc__redis *r, const char *what, const char *why) {
    snprintf(r->last_error, sizeof r->last_error, "redis %s: %s", what, why);
}

/* Drop c's connection now (not from inside a hiredis callback of c). */
static void drop(conn *c, const char *why) {
    redisAsyncContext *ac = c->ac;
    set_error(c->r, c->subscriber ? "subscription" : "connection", why);
    c->state = DOWN; /* calls completed by the free below must not send on it */
    redisAsyncFree(ac);
    if (c->ac == ac) lost(c); /* no disconnect callback when it never connected */
}

/* ------------------------------------------------------------------- calls -- */

static void call_free(call *k) {
    free(k);
}

/* Error replies that mean "Redis cannot serve right now", not "the script said no". */
static bool unavailable_error(const redisReply *reply) {
    static const char *const prefixes[] = {"LOADING",     "READONLY", "MASTERDOWN", "BUSY",
                                           "CLUSTERDOWN", "TRYAGAIN", "OOM",        "NOREPLICAS",
                                           "MISCONF",     NULL};
    if (reply->type != REDIS_REPLY_ERROR) return false;
    for (int i = 0; prefixes[i]; i++)
        if (strncmp(reply->str, prefixes[i], strlen(prefixes[i])) == 0) return true;
    return false;
}

/* A node that cannot take writes (a replica after a failover behind a moving
 * address): leave it, so that the reconnect reaches whatever the address names now. */
static void leave_if_readonly(dsc__redis *r, const redisReply *reply) {
    if (reply->type != REDIS_REPLY_ERROR || r->cmd.state != READY ||
        (strncmp(reply->str, "READONLY", 8) != 0 && strncmp(reply->str, "MASTERDOWN", 10) != 0))
        return;
    set_error(r, "connection", reply->str);
    r->cmd.state = DOWN;
    redisAsyncDisconnect(r->cmd.ac);
}

static void complete(call *k, const redisReply *reply) {
    dsc__redis *r = k->r;
    dsc__dlist_unlink(&r->calls, &k->link);
    if (reply) leave_if_readonly(r, reply);
    if (reply && reply->type != REDIS_REPLY_ERROR) r->cmd.failures = 0;
    if (!reply)
        k->fn(k->ud, DSC_STORE_UNAVAILABLE, NULL,
              r->last_error[0] ? r->last_error : "redis connection lost");
    else if (unavailable_error(reply))
        k->fn(k->ud, DSC_STORE_UNAVAILABLE, NULL, reply->str);
    else
        k->fn(k->ud, DSC_OK, reply, "");
    call_free(k);
}

static void on_call_reply(redisAsyncContext *ac, void *reply, void *privdata);

static bool send_call(call *k) {
    dsc__redis *r = k->r;
    if (k->sha_at && strlen(r->sha[k->script]) == 40) /* as loaded last */
        memcpy(k->cmd + k->sha_at, r->sha[k->script], 40);
    k->sent_us = mono_us();
    return r->cmd.state == READY && r->cmd.ac &&
           redisAsyncFormattedCommand(r->cmd.ac, on_call_reply, k, k->cmd, k->cmd_len) == REDIS_OK;
}

static void on_reload(redisAsyncContext *ac, void *reply, void *privdata) {
    conn *c = ac->data;
    redisReply *rp = reply;
    intptr_t script = (intptr_t)privdata;
    if (rp && rp->type == REDIS_REPLY_STRING && rp->len == 40)
        memcpy(c->r->sha[script], rp->str, 41);
}

static void on_call_reply(redisAsyncContext *ac, void *reply, void *privdata) {
    (void)ac;
    call *k = privdata;
    redisReply *rp = reply;
    dsc__redis *r = k->r;
    if (rp && rp->type == REDIS_REPLY_ERROR && strncmp(rp->str, "NOSCRIPT", 8) == 0 &&
        !k->retried) {
        /* Redis forgot the script: load it again; the call, pipelined behind the load,
         * then finds it. Once only: a second NOSCRIPT is an answer. */
        k->retried = true;
        const char *argv[] = {"SCRIPT", "LOAD", dsc__redis_script_texts[k->script]};
        if (r->cmd.state == READY &&
            redisAsyncCommandArgv(r->cmd.ac, on_reload, (void *)(intptr_t)k->script, 3, argv,
                                  NULL) == REDIS_OK &&
            send_call(k))
            return;
        rp = NULL;
    }
    complete(k, rp);
}

/* Two decimal digits at a time (one division per pair): every argument's length and
 * every number of a call is written here. */
static const char pairs[] = "00010203040506070809101112131415161718192021222324252627282930313233"
                            "34353637383940414243444546474849505152535455565758596061626364656667"
                            "6869707172737475767778798081828384858687888990919293949596979899";

char *dsc__redis_put_int(char *p, int64_t v) {
    uint64_t u = v < 0 ? 0 - (uint64_t)v : (uint64_t)v;
    if (v < 0) *p++ = '-';
    if (u < 10) {
        *p++ = (char)('0' + u);
        return p;
    }
    if (u < 100) { /* most: the lengths of a call's arguments */
        *p++ = pairs[u * 2], *p++ = pairs[u * 2 + 1];
        return p;
    }
    char tmp[20];
    int n = 20;
    while (u >= 100) {
        unsigned d = (unsigned)(u % 100) * 2;
        u /= 100;
        tmp[--n] = pairs[d + 1], tmp[--n] = pairs[d];
    }
    if (u >= 10)
        tmp[--n] = pairs[u * 2 + 1], tmp[--n] = pairs[u * 2];
    else
        tmp[--n] = (char)('0' + u);
    while (n < 20)
        *p++ = tmp[n++];
    return p;
}

/* One bulk string of the protocol ("$<len>\r\n<bytes>\r\n") at p; its end. */
static char *put_bulk(char *p, const char *s, size_t n) {
    *p++ = '$';
    p = dsc__redis_put_int(p, (int64_t)n);
    *p++ = '\r', *p++ = '\n';
    memcpy(p, s, n);
    p[n] = '\r', p[n + 1] = '\n';
    return p + n + 2;
}

/* Arguments whose lengths dsc__redis_eval keeps from sizing the call to writing it
 * (a reserve over 32 counters has 235); the rest are measured twice. */
#define EVAL_LENGTHS 256

/* The call is formatted here, once, into the block that holds it: EVALSHA sha 1
 * key0 argv..., as the protocol sends it (the same bytes go again after a
 * NOSCRIPT, with the sha as loaded then). One allocation, no copy of the arguments
 * beside it. */
dsc_status dsc__redis_eval(dsc__redis *r, dsc__redis_script script, int argc,
                           const char *const *argv, dsc__redis_reply_fn fn, void *ud) {
    if (r->cmd.state != READY || (unsigned)script >= DSC_REDIS_SCRIPT_COUNT || argc < 0)
        return DSC_STORE_UNAVAILABLE;
    const char *head[] = {"EVALSHA", r->sha[script], "1", r->key0};
    size_t hlen[4], alen[EVAL_LENGTHS], bytes = 24 + 4 * 26;
    for (int i = 0; i < 4; i++)
        bytes += hlen[i] = strlen(head[i]);
    for (int i = 0; i < argc; i++) { /* "$" <= 20 digits "\r\n" <bytes> "\r\n" */
        size_t n = strlen(argv[i]);
        if (i < EVAL_LENGTHS) alen[i] = n;
        bytes += n + 26;
    }
    call *k = malloc(sizeof *k + bytes);
    if (!k) return DSC_NOMEM;
    memset(k, 0, sizeof *k); /* the header; the command is written below */
    char *p = k->cmd;
    *p++ = '*';
    p = dsc__redis_put_int(p, argc + 4);
    *p++ = '\r', *p++ = '\n';
    for (int i = 0; i < 4; i++) {
        p = put_bulk(p, head[i], hlen[i]);
        if (i == 1 && hlen[i] == 40) k->sha_at = (size_t)(p - k->cmd) - 42;
    }
    for (int i = 0; i < argc; i++)
        p = put_bulk(p, argv[i], i < EVAL_LENGTHS ? alen[i] : strlen(argv[i]));
    k->cmd_len = (size_t)(p - k->cmd);
    k->r = r, k->script = script, k->fn = fn, k->ud = ud;
    if (!send_call(k)) {
        call_free(k);
        return DSC_STORE_UNAVAILABLE;
    }
    dsc__dlist_append(&r->calls, &k->link);
    return DSC_OK;
}

/* -------------------------------------------------------------- connection -- */

static void became_ready(conn *c) {
    dsc__redis *r = c->r;
    set_state(c, READY);
    /* c->failures is reset by the first call that succeeds, not here: a node that
     * accepts connections but fails every call (READONLY) must not be retried at
     * the shortest backoff forever. */
    if (c->subscriber) {
        c->failures = 0;
        if (r->on_budgets) r->on_budgets(r->ud, -1); /* messages may have been missed */
        return;
    }
    r->connects++;
    r->last_error[0] = '\0';
    c->announced = true;
    if (r->on_ready) r->on_ready(r->ud, true);
}

static bool send_after_auth(conn *c);

/* A reply of the handshake: privdata is 1 + the script index, 0 for SELECT, -1 for
 * AUTH (the rest is sent once AUTH has succeeded: Redis drops an unauthenticated
 * connection that sends a bulk longer than 16 KiB, as a SCRIPT LOAD is). */
static void on_handshake(redisAsyncContext *ac, void *reply, void *privdata) {
    conn *c = ac->data;
    redisReply *rp = reply;
    intptr_t which = (intptr_t)privdata;
    if (!rp || c->state != LOADING) return; /* the connection is going away */
    if (rp->type == REDIS_REPLY_ERROR) {
        set_error(c->r, which > 0 ? "SCRIPT LOAD" : "AUTH/SELECT", rp->str);
        c->state = DOWN;
        redisAsyncDisconnect(ac);
        return;
    }
    if (which < 0) {
        c->loading--;
        if (!send_after_auth(c)) {
            set_error(c->r, "handshake", "cannot queue commands");
            c->state = DOWN;
            redisAsyncDisconnect(ac);
        }
        return;
    }
    if (which > 0 && rp->type == REDIS_REPLY_STRING && rp->len == 40)
        memcpy(c->r->sha[which - 1], rp->str, 41);
    if (--c->loading == 0 && !c->subscriber) became_ready(c);
}

static void on_sub(redisAsyncContext *ac, void *reply, void *privdata) {
    (void)privdata;
    conn *c = ac->data;
    redisReply *rp = reply;
    if (!rp || rp->type != REDIS_REPLY_ARRAY || rp->elements != 3) return;
    const redisReply *kind = rp->element[0], *value = rp->element[2];
    if (kind->type != REDIS_REPLY_STRING) return;
    if (strcmp(kind->str, "subscribe") == 0 && c->state == LOADING && c->loading == 0) {
        became_ready(c);
    } else if (strcmp(kind->str, "message") == 0 && value->type == REDIS_REPLY_STRING &&
               c->r->on_budgets) {
        char *end;
        long long v = strtoll(value->str, &end, 10);
        /* a budgets version, or another change (an API key's 'k<n>'): re-read all */
        c->r->on_budgets(c->r->ud, *end == '\0' && v > 0 ? v : -1);
    }
}

/* SELECT, the scripts (or SUBSCRIBE), once the connection may send them. */
static bool send_after_auth(conn *c) {
    dsc__redis *r = c->r;
    redisAsyncContext *ac = c->ac;
    bool ok = true;
    if (r->url.db > 0 && !c->subscriber) {
        char db[16];
        snprintf(db, sizeof db, "%d", r->url.db);
        const char *argv[] = {"SELECT", db};
        ok = redisAsyncCommandArgv(ac, on_handshake, 0, 2, argv, NULL) == REDIS_OK;
        c->loading++;
    }
    for (int i = 0; ok && !c->subscriber && i < DSC_REDIS_SCRIPT_COUNT; i++) {
        const char *argv[] = {"SCRIPT", "LOAD", dsc__redis_script_texts[i]};
        ok = redisAsyncCommandArgv(ac, on_handshake, (void *)(intptr_t)(i + 1), 3, argv, NULL) ==
             REDIS_OK;
        c->loading++;
    }
    if (ok && c->subscriber) {
        const char *argv[] = {"SUBSCRIBE", r->channel};
        ok = redisAsyncCommandArgv(ac, on_sub, NULL, 2, argv, NULL) == REDIS_OK;
    }
    return ok;
}

/* AUTH first when there is a password, the rest from its reply (on_handshake). */
static bool send_handshake(conn *c) {
    dsc__redis *r = c->r;
    c->loading = 0;
    if (!r->url.password[0]) return send_after_auth(c);
    bool user = r->url.user[0] != '\0';
    const char *argv[] = {"AUTH", user ? r->url.user : r->url.password, r->url.password};
    c->loading++;
    return redisAsyncCommandArgv(c->ac, on_handshake, (void *)(intptr_t)-1, user ? 3 : 2, argv,
                                 NULL) == REDIS_OK;
}

static void on_connect(const redisAsyncContext *ac, int status) {
    conn *c = ac->data;
    if (status != REDIS_OK) {
        set_error(c->r, "connect", ac->errstr);
        lost(c); /* hiredis frees the context after this callback */
        return;
    }
    set_state(c, LOADING);
    if (!send_handshake(c)) {
        set_error(c->r, "handshake", "cannot queue commands");
        c->state = DOWN;
        redisAsyncDisconnect(c->ac);
    }
}

static void on_disconnect(const redisAsyncContext *ac, int status) {
    conn *c = ac->data;
    if (status != REDIS_OK && ac->errstr[0]) set_error(c->r, "connection", ac->errstr);
    lost(c);
}

/* Reply objects in one block. A reply's first chunk starts with its root; tail is
 * the chunk allocated from (in the first chunk), next the chain to free. */
typedef struct rchunk {
    struct rchunk *next, *tail;
    size_t used, cap;
    max_align_t data[];
} rchunk;

#define RALIGN(n) (((n) + sizeof(max_align_t) - 1) & ~(sizeof(max_align_t) - 1))
#define RCHUNK_MIN 512

static rchunk *rchunk_of(void *root) {
    return (rchunk *)((char *)root - offsetof(rchunk, data));
}

static rchunk *rchunk_new(size_t cap) {
    rchunk *c = malloc(sizeof *c + cap);
    if (!c) return NULL;
    c->next = NULL;
    c->tail = c;
    c->used = 0;
    c->cap = cap;
    return c;
}

static void *rchunk_alloc(rchunk *first, size_t n) {
    rchunk *t = first->tail;
    n = RALIGN(n);
    if (t->cap - t->used < n) {
        rchunk *c = rchunk_new(n > 2 * t->cap ? n : 2 * t->cap);
        if (!c) return NULL;
        t->next = c;
        first->tail = t = c;
    }
    void *p = (unsigned char *)t->data + t->used;
    t->used += n;
    return p;
}

/* The block of the reply a nested task belongs to: its root's (set on the root's
 * task before any element is read). */
static rchunk *reply_block(const redisReadTask *task) {
    while (task->parent)
        task = task->parent;
    return rchunk_of(task->obj);
}

/* A new element of type: the root of a new reply (in a new block with extra bytes
 * more for its text or elements), or one more in the block of its reply. */
static redisReply *reply_element(const redisReadTask *task, int type, size_t extra,
                                 rchunk **block) {
    rchunk *first;
    if (task->parent) {
        first = reply_block(task);
    } else {
        size_t want = RALIGN(sizeof(redisReply)) + RALIGN(extra);
        if (!(first = rchunk_new(want < RCHUNK_MIN ? RCHUNK_MIN : want))) return NULL;
    }
    redisReply *r = rchunk_alloc(first, sizeof *r); /* a root: at the block's start */
    if (!r) return NULL;
    memset(r, 0, sizeof *r);
    r->type = type;
    if (task->parent) ((redisReply *)task->parent->obj)->element[task->idx] = r;
    *block = first;
    return r;
}

static void *reply_string(const redisReadTask *task, char *str, size_t len) {
    rchunk *block;
    redisReply *r = reply_element(task, task->type, len + 1, &block);
    char *buf = r ? rchunk_alloc(block, len + 1) : NULL;
    if (!buf) return NULL;
    memcpy(buf, str, len);
    buf[len] = '\0';
    r->str = buf;
    r->len = len;
    return r;
}

static void *reply_array(const redisReadTask *task, int elements) {
    size_t n = elements > 0 ? (size_t)elements : 0;
    rchunk *block;
    redisReply *r = reply_element(task, REDIS_REPLY_ARRAY,
                                  n * (sizeof(redisReply) + sizeof(redisReply *) + 16), &block);
    if (!r || !n) return r;
    if (!(r->element = rchunk_alloc(block, n * sizeof *r->element))) return NULL;
    memset(r->element, 0, n * sizeof *r->element);
    r->elements = n;
    return r;
}

static void *reply_integer(const redisReadTask *task, long long value) {
    rchunk *block;
    redisReply *r = reply_element(task, REDIS_REPLY_INTEGER, 0, &block);
    if (r) r->integer = value;
    return r;
}

static void *reply_nil(const redisReadTask *task) {
    rchunk *block;
    return reply_element(task, REDIS_REPLY_NIL, 0, &block);
}

static void reply_free(void *root) {
    for (rchunk *c = root ? rchunk_of(root) : NULL, *next; c; c = next) {
        next = c->next;
        free(c);
    }
}

redisReplyObjectFunctions dsc__redis_reply_functions = {reply_string, reply_array, reply_integer,
                                                        reply_nil, reply_free};

static void conn_start(conn *c) {
    dsc__redis *r = c->r;
    redisAsyncContext *ac = r->url.kind == DSC_STORE_REDIS_UNIX
                                ? redisAsyncConnectUnix(r->url.path)
                                : redisAsyncConnect(r->url.host, r->url.port);
    if (!ac || ac->err) {
        set_error(r, "connect", ac ? ac->errstr : "out of memory");
        if (ac) redisAsyncFree(ac);
        set_state(c, DOWN);
        schedule_retry(c);
        return;
    }
    ac->data = c;
    ac->c.reader->fn = &dsc__redis_reply_functions;
    c->ac = ac;
    set_state(c, CONNECTING);
    if (redisLibeventAttach(ac, r->base) != REDIS_OK ||
        redisAsyncSetConnectCallback(ac, on_connect) != REDIS_OK ||
        redisAsyncSetDisconnectCallback(ac, on_disconnect) != REDIS_OK)
        drop(c, "cannot attach to the event loop");
}

static void on_retry(evutil_socket_t fd, short what, void *arg) {
    (void)fd;
    (void)what;
    conn_start(arg);
}

/* Drop a connection that waits too long: for its handshake, or for the oldest call. */
static void watch_conn(conn *c, int64_t now) {
    dsc__redis *r = c->r;
    int64_t limit = (int64_t)r->timeout_ms * 1000;
    if ((c->state == CONNECTING || c->state == LOADING) && now - c->since_us > limit)
        drop(c, "no answer to the handshake in time");
    else if (c->state == READY && !c->subscriber && r->calls.head &&
             now - DSC__DLIST_ENTRY(r->calls.head, call, link)->sent_us > limit)
        drop(c, "no reply in time");
}

static void on_watch(evutil_socket_t fd, short what, void *arg) {
    (void)fd;
    (void)what;
    dsc__redis *r = arg;
    int64_t now = mono_us();
    watch_conn(&r->cmd, now);
    if (r->on_budgets) watch_conn(&r->sub, now);
}

/* A TCP host name is resolved once, here, so that no reconnect blocks on DNS. */
static dsc_status resolve(dsc__store_url *u, dsc_error *err) {
    if (u->kind != DSC_STORE_REDIS_TCP) return DSC_OK;
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *res = NULL;
    int rc = getaddrinfo(u->host, NULL, &hints, &res);
    if (rc != 0 || !res)
        return dsc_error_set(err, DSC_BAD_REQUEST, "store: cannot resolve '%s': %s", u->host,
                             gai_strerror(rc));
    char host[256]; /* NI_MAXHOST is not POSIX */
    rc = getnameinfo(res->ai_addr, res->ai_addrlen, host, sizeof host, NULL, 0, NI_NUMERICHOST);
    freeaddrinfo(res);
    if (rc != 0 || strlen(host) >= sizeof u->host)
        return dsc_error_set(err, DSC_BAD_REQUEST, "store: cannot resolve '%s'", u->host);
    strcpy(u->host, host);
    return DSC_OK;
}

static void conn_init(conn *c, dsc__redis *r, bool subscriber) {
    c->r = r;
    c->subscriber = subscriber;
    c->retry = evtimer_new(r->base, on_retry, c);
}

dsc__redis *dsc__redis_new(struct event_base *base, const dsc__redis_config *cfg, dsc_error *err) {
    const char *prefix = cfg->prefix ? cfg->prefix : "discern:";
    if (cfg->url->kind != DSC_STORE_REDIS_TCP && cfg->url->kind != DSC_STORE_REDIS_UNIX) {
        dsc_error_set(err, DSC_BAD_REQUEST, "store: not a Redis URL");
        return NULL;
    }
    if (strlen(prefix) > 60) {
        dsc_error_set(err, DSC_BAD_REQUEST, "redis_prefix: longer than 60 bytes");
        return NULL;
    }
    dsc__redis *r = calloc(1, sizeof *r);
    if (!r) {
        dsc_error_set(err, DSC_NOMEM, "out of memory for the Redis connection");
        return NULL;
    }
    r->base = base;
    r->url = *cfg->url;
    snprintf(r->key0, sizeof r->key0, "{%s}ver", prefix);
    snprintf(r->channel, sizeof r->channel, "{%s}budgets", prefix);
    r->timeout_ms = cfg->timeout_ms > 0 ? cfg->timeout_ms : 1000;
    r->backoff_min_ms = cfg->backoff_min_ms > 0 ? cfg->backoff_min_ms : 50;
    r->backoff_max_ms = cfg->backoff_max_ms > 0 ? cfg->backoff_max_ms : 2000;
    r->on_ready = cfg->on_ready, r->on_budgets = cfg->on_budgets, r->ud = cfg->ud;
    conn_init(&r->cmd, r, false);
    conn_init(&r->sub, r, true);
    int period = r->timeout_ms / 4 > 10 ? r->timeout_ms / 4 : 10;
    struct timeval tv = {period / 1000, (period % 1000) * 1000};
    r->watch = event_new(base, -1, EV_PERSIST, on_watch, r);
    if (!r->cmd.retry || !r->sub.retry || !r->watch) {
        dsc__redis_free(r);
        dsc_error_set(err, DSC_NOMEM, "out of memory for the Redis connection");
        return NULL;
    }
    if (resolve(&r->url, err) != DSC_OK) {
        dsc__redis_free(r);
        return NULL;
    }
    event_add(r->watch, &tv);
    conn_start(&r->cmd);
    if (r->on_budgets) conn_start(&r->sub);
    return r;
}

void dsc__redis_flush(dsc__redis *r) {
    if (r->cmd.state == READY && r->cmd.ac) redisAsyncHandleWrite(r->cmd.ac);
}

bool dsc__redis_ready(const dsc__redis *r) {
    return r->cmd.state == READY;
}

const char *dsc__redis_last_error(const dsc__redis *r) {
    return r->cmd.state == READY ? "" : r->last_error[0] ? r->last_error : "connecting";
}

uint64_t dsc__redis_connects(const dsc__redis *r) {
    return r->connects;
}

static void conn_close(conn *c) {
    if (c->ac) {
        c->state = DOWN;
        redisAsyncFree(c->ac);
        c->ac = NULL;
    }
    if (c->retry) event_free(c->retry);
}

void dsc__redis_free(dsc__redis *r) {
    if (!r) return;
    r->closing = true;
    if (r->watch) event_free(r->watch);
    conn_close(&r->cmd);
    conn_close(&r->sub);
    free(r);
}
