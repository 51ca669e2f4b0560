/*
 * client.c - libdiscern-client handles: addresses, connecting, and the pipelined
 * send/receive loop every call goes through (API in discern/client.h).
 *
 * One call = one pipeline: the requests are packed into one buffer (client_wire.c
 * checks them first), written while replies are read (so a long pipeline cannot
 * deadlock on full socket buffers), and replies are matched to calls by msgid.
 * Everything waits in poll() against one deadline per pipeline.
 *
 * Reconnect: before sending, a connection the server has closed (a restart, an
 * idle timeout) is noticed and replaced. When the connection breaks while calls
 * are unanswered, it is replaced once and those calls are sent again if that is
 * safe (nothing of them was written, or the method is idempotent); otherwise they
 * fail with DSC_UNREACHABLE saying the request may have been processed.
 *
 * Replies are bounded: the scanner shared with the server (discern/rpc_scan.h)
 * measures a message before msgpack-c unpacks it,
 * so a reply (or a few bytes declaring a huge array) over max_reply_bytes is
 * DSC_TOO_LARGE and allocates nothing. A timeout closes the connection: a late
 * reply must not be read as the answer to a later call.
 */
#include "client_wire.h"

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

struct dsc_client {
    char address[300]; /* as given, for messages */
    char host[256];
    char port[16];
    char unix_path[sizeof(((struct sockaddr_un *)0)->sun_path)];
    bool is_unix;
    int fd;
    int timeout_ms;
    size_t max_reply;
    char *token; /* the admin token or key sent with auth on every connect */
    bool token_is_key;
    uint32_t next_id;
    unsigned connects;
    uint64_t id_seed, id_seq; /* for generated request ids */
    unsigned char *rbuf;      /* bytes received, not yet consumed */
    size_t rlen, rcap;
    char notice[DSC_ERROR_MESSAGE_MAX]; /* last `error` notification from the server */
};

/* A byte buffer the packer writes into (msgpack_sbuffer aborts nothing either, but
 * this one remembers that an allocation failed). */
typedef struct wbuf {
    char *data;
    size_t len, cap;
    bool nomem;
} wbuf;

static int wbuf_write(void *data, const char *buf, size_t len) {
    wbuf *w = data;
    if (w->len + len > w->cap) {
        size_t cap = w->cap ? w->cap : 256;
        while (cap < w->len + len)
            cap *= 2;
        char *p = realloc(w->data, cap);
        if (!p) return w->nomem = true, -1;
        w->data = p, w->cap = cap;
    }
    memcpy(w->data + w->len, buf, len);
    w->len += len;
    return 0;
}

static int64_t now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int remaining_ms(int64_t deadline) {
    int64_t left = deadline - now_ms();
    return left < 0 ? 0 : left > 1000000 ? 1000000 : (int)left;
}

/* ----------------------------------------------------------------- handles -- */

static dsc_status parse_address(dsc_client *c, const char *addr, dsc_error *err) {
    if (!addr || !addr[0]) return dsc_error_set(err, DSC_BAD_REQUEST, "address: empty");
    if (strlen(addr) >= sizeof c->address)
        return dsc_error_set(err, DSC_BAD_REQUEST, "address: '%.40s...' is too long", addr);
    strcpy(c->address, addr);
    if (strncmp(addr, "unix:", 5) == 0) {
        if (!addr[5] || strlen(addr + 5) >= sizeof c->unix_path)
            return dsc_error_set(err, DSC_BAD_REQUEST, "address '%s': bad socket path", addr);
        strcpy(c->unix_path, addr + 5);
        c->is_unix = true;
        return DSC_OK;
    }
    const char *colon = strrchr(addr, ':');
    const char *host = addr, *host_end = colon;
    if (addr[0] == '[') { /* [v6]:port */
        host = addr + 1;
        host_end = strchr(addr, ']');
        if (!host_end || host_end[1] != ':') colon = NULL;
    }
    if (!colon || host_end <= host || (size_t)(host_end - host) >= sizeof c->host)
        return dsc_error_set(err, DSC_BAD_REQUEST,
                             "address '%s': expected host:port, [v6]:port or unix:/path", addr);
    char *end;
    long port = strtol(colon + 1, &end, 10);
    if (end == colon + 1 || *end || port < 1 || port > 65535)
        return dsc_error_set(err, DSC_BAD_REQUEST, "address '%s': bad port '%s'", addr, colon + 1);
    memcpy(c->host, host, (size_t)(host_end - host));
    c->host[host_end - host] = '\0';
    snprintf(c->port, sizeof c->port, "%ld", port);
    return DSC_OK;
}

static uint64_t random_seed(void) {
    uint64_t seed = 0;
    int fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);
    if (fd >= 0) {
        if (read(fd, &seed, sizeof seed) != (ssize_t)sizeof seed) seed = 0;
        close(fd);
    }
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return seed ^ ((uint64_t)ts.tv_nsec << 20) ^ (uint64_t)ts.tv_sec ^ ((uint64_t)getpid() << 40);
}

dsc_client *dsc_client_new(const char *address, const dsc_client_options *opts, dsc_error *err) {
    dsc_client *c = calloc(1, sizeof *c);
    if (!c) return dsc_error_set(err, DSC_NOMEM, "out of memory for a client"), NULL;
    c->fd = -1;
    c->next_id = 1;
    c->timeout_ms = opts && opts->timeout_ms > 0 ? opts->timeout_ms : DSC_CLIENT_DEFAULT_TIMEOUT_MS;
    c->max_reply =
        opts && opts->max_reply_bytes ? opts->max_reply_bytes : DSC_CLIENT_DEFAULT_MAX_REPLY;
    c->id_seed = random_seed();
    if (parse_address(c, address, err) != DSC_OK) goto fail;
    const char *token = opts ? (opts->admin_token ? opts->admin_token : opts->key) : NULL;
    c->token_is_key = token && !opts->admin_token;
    if (token && !(c->token = strdup(token))) {
        dsc_error_set(err, DSC_NOMEM, "out of memory for a client");
        goto fail;
    }
    return c;
fail:
    dsc_client_free(c);
    return NULL;
}

static void drop_connection(dsc_client *c) {
    if (c->fd >= 0) close(c->fd);
    c->fd = -1;
    c->rlen = 0;
}

void dsc_client_free(dsc_client *c) {
    if (!c) return;
    drop_connection(c);
    free(c->rbuf);
    free(c->token);
    free(c);
}

void dsc_client_set_timeout(dsc_client *c, int timeout_ms) {
    if (c && timeout_ms > 0) c->timeout_ms = timeout_ms;
}

unsigned dsc_client_connects(const dsc_client *c) {
    return c ? c->connects : 0;
}

/* -------------------------------------------------------------- connecting -- */

/* Wait for a non-blocking connect on fd: 0 connected, else an errno (ETIMEDOUT). */
static int finish_connect(int fd, int64_t deadline) {
    struct pollfd p = {.fd = fd, .events = POLLOUT};
    int r;
    while ((r = poll(&p, 1, remaining_ms(deadline))) < 0 && errno == EINTR) {
    }
    if (r == 0) return ETIMEDOUT;
    if (r < 0) return errno;
    int soerr = 0;
    socklen_t len = sizeof soerr;
    if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &len) != 0) return errno;
    return soerr;
}

/* A connected non-blocking socket to addr, or -1 with *e the errno. */
static int connect_one(int family, int type, int proto, const struct sockaddr *addr, socklen_t len,
                       int64_t deadline, int *e) {
    int fd = socket(family, type | SOCK_CLOEXEC, proto);
    if (fd < 0) return *e = errno, -1;
    if (fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK) != 0) goto fail;
    if (connect(fd, addr, len) != 0) {
        if (errno != EINPROGRESS && errno != EAGAIN) goto fail;
        if ((*e = finish_connect(fd, deadline)) != 0) {
            close(fd);
            return -1;
        }
    }
    if (family != AF_UNIX) {
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    }
    return fd;
fail:
    *e = errno;
    close(fd);
    return -1;
}

static dsc_status connect_error(dsc_client *c, int e, dsc_error *err) {
    if (e == ETIMEDOUT)
        return dsc_error_set(err, DSC_TIMEOUT, "connecting to %s timed out", c->address);
    return dsc_error_set(err, DSC_UNREACHABLE, "cannot connect to %s: %s", c->address, strerror(e));
}

static dsc_status open_socket(dsc_client *c, int64_t deadline, dsc_error *err) {
    int e = 0;
    if (c->is_unix) {
        struct sockaddr_un a = {.sun_family = AF_UNIX};
        memcpy(a.sun_path, c->unix_path, strlen(c->unix_path) + 1);
        c->fd = connect_one(AF_UNIX, SOCK_STREAM, 0, (struct sockaddr *)&a, sizeof a, deadline, &e);
        return c->fd >= 0 ? DSC_OK : connect_error(c, e, err);
    }
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
    struct addrinfo *res = NULL;
    int gai = getaddrinfo(c->host, c->port, &hints, &res);
    if (gai != 0)
        return dsc_error_set(err, DSC_UNREACHABLE, "cannot resolve '%s': %s", c->host,
                             gai_strerror(gai));
    for (struct addrinfo *ai = res; ai && c->fd < 0; ai = ai->ai_next)
        c->fd = connect_one(ai->ai_family, ai->ai_socktype, ai->ai_protocol, ai->ai_addr,
                            ai->ai_addrlen, deadline, &e);
    freeaddrinfo(res);
    return c->fd >= 0 ? DSC_OK : connect_error(c, e, err);
}

static dsc_status run_pipeline(dsc_client *c, dsc_client_call *calls, size_t n, int64_t deadline,
                               bool internal);

/* Connect, then authenticate when an admin token or a key is configured. */
static dsc_status connect_now(dsc_client *c, int64_t deadline, dsc_error *err) {
    dsc_status st = open_socket(c, deadline, err);
    if (st != DSC_OK) return st;
    c->connects++;
    c->notice[0] = '\0';
    if (!c->token) return DSC_OK;
    dsc_client_call auth = {.method = (dsc_client_method)DSC__CALL_AUTH, .request = c->token};
    st = run_pipeline(c, &auth, 1, deadline, true);
    if (st == DSC_OK) return DSC_OK;
    drop_connection(c);
    if (st == DSC_UNAUTHORIZED)
        return dsc_error_set(err, st, "the %s was refused: %s",
                             c->token_is_key ? "key" : "admin token", auth.err.message);
    return dsc_error_set(err, st, "%s", auth.err.message);
}

/* True when the open connection is still usable; reads what the server sent
 * unasked (an `error` notification) into the buffer, notices a close. */
static bool connection_alive(dsc_client *c) {
    struct pollfd p = {.fd = c->fd, .events = POLLIN};
    if (poll(&p, 1, 0) <= 0) return true;
    if (p.revents & (POLLERR | POLLNVAL)) return false;
    unsigned char tmp[4096];
    ssize_t r = recv(c->fd, tmp, sizeof tmp, MSG_PEEK | MSG_DONTWAIT);
    return r > 0 || (r < 0 && (errno == EAGAIN || errno == EINTR));
}

static dsc_status ensure_connected(dsc_client *c, int64_t deadline, dsc_error *err) {
    if (c->fd >= 0 && connection_alive(c)) return DSC_OK;
    drop_connection(c);
    return connect_now(c, deadline, err);
}

dsc_status dsc_client_connect(dsc_client *c, dsc_error *err) {
    if (!c) return dsc_error_set(err, DSC_BAD_REQUEST, "no client");
    return ensure_connected(c, now_ms() + c->timeout_ms, err);
}

/* ------------------------------------------------------------ one exchange -- */

/* One call in flight. */
typedef struct slot {
    dsc_client_call *call;
    uint32_t msgid;
    size_t start, end; /* its bytes in the write buffer */
    bool done;
} slot;

typedef enum { X_DONE, X_BROKEN, X_TIMEOUT, X_FATAL } xresult;

static void fail_call(dsc_client_call *call, dsc_status st, const char *fmt, const char *a,
                      const char *b) {
    call->status = st;
    call->err.code = st;
    snprintf(call->err.message, sizeof call->err.message, fmt, a, b);
}

/* Decode a response [1, msgid, error, result] into its call. */
static void deliver(slot *s, const msgpack_object *error, const msgpack_object *result) {
    dsc_client_call *call = s->call;
    const dsc__method *m = dsc__method_get((int)call->method);
    s->done = true;
    if (error->type != MSGPACK_OBJECT_NIL) {
        char code[48] = "", msg[DSC_ERROR_MESSAGE_MAX] = "";
        dsc__obj_str(dsc__map_get(error, "code"), code, sizeof code);
        dsc__obj_str(dsc__map_get(error, "message"), msg, sizeof msg);
        dsc_status st = dsc_status_from_wire(code);
        call->status = st == DSC_OK ? DSC_INTERNAL : st;
        call->err.code = call->status;
        if (st == DSC_INTERNAL && strcmp(code, "internal") != 0)
            snprintf(call->err.message, sizeof call->err.message, "server error '%.40s': %.190s",
                     code, msg);
        else
            snprintf(call->err.message, sizeof call->err.message, "%s", msg[0] ? msg : code);
        return;
    }
    if (result->type != MSGPACK_OBJECT_MAP) {
        fail_call(call, DSC_PARSE, "malformed reply to %s: result is not a map%s", m->name, "");
        return;
    }
    union {
        dsc_client_check_result check;
        dsc_client_settle_result settle;
        dsc_client_cancel_result cancel;
        dsc_client_estimate_result estimate;
        dsc_client_budgets budgets;
        dsc_client_budget_set_result budget_set;
        dsc_client_grid_result grid;
        dsc_client_reload_result reload;
        dsc_client_ping_result ping;
        dsc_client_stats_result stats;
        dsc_client_models models;
        dsc_client_zones zones;
    } scratch; /* where a result goes that the caller did not ask for */
    void *out = call->result ? call->result : (void *)&scratch;
    if (m->result_size) memset(out, 0, m->result_size);
    dsc_error_clear(&call->err);
    call->status = m->decode(result, out, &call->err);
    if (call->status != DSC_OK && m->clear)
        m->clear(out);
    else if (!call->result && m->clear)
        m->clear(out);
}

/* Handle one complete message from the server. */
static void on_message(dsc_client *c, const msgpack_object *o, slot *slots, size_t n,
                       size_t *open) {
    if (o->type != MSGPACK_OBJECT_ARRAY || o->via.array.size < 3) return;
    const msgpack_object *a = o->via.array.ptr;
    if (a[0].type != MSGPACK_OBJECT_POSITIVE_INTEGER) return;
    if (a[0].via.u64 == 2) { /* [2, "error", [{code, message}]] */
        const msgpack_object *p = &a[2];
        if (p->type == MSGPACK_OBJECT_ARRAY && p->via.array.size > 0)
            dsc__obj_str(dsc__map_get(&p->via.array.ptr[0], "message"), c->notice,
                         sizeof c->notice);
        return;
    }
    if (a[0].via.u64 != 1 || o->via.array.size != 4) return;
    if (a[1].type != MSGPACK_OBJECT_POSITIVE_INTEGER) return;
    for (size_t i = 0; i < n; i++)
        if (!slots[i].done && slots[i].msgid == a[1].via.u64) {
            deliver(&slots[i], &a[2], &a[3]);
            (*open)--;
            return;
        }
}

/* Unpack and hand over every complete message in the buffer. X_FATAL with st/msg
 * set when the stream is not MessagePack or a message is too large. */
static xresult consume(dsc_client *c, slot *slots, size_t n, size_t *open, dsc_status *st) {
    size_t off = 0;
    xresult xr = X_DONE;
    dsc_rpc_limits lim;
    dsc__reply_limits(c->max_reply, &lim);
    while (off < c->rlen) {
        dsc_rpc_scanner sc;
        dsc_rpc_scanner_reset(&sc);
        size_t sz = 0;
        dsc_error serr;
        dsc_rpc_scan_result sr = dsc_rpc_scan(&sc, &lim, c->rbuf + off, c->rlen - off, &sz, &serr);
        if (sr == DSC_RPC_NEED_MORE) break;
        if (sr != DSC_RPC_FRAME) { /* not MessagePack (0xc1), or over a limit */
            *st = serr.code == DSC_TOO_LARGE ? DSC_TOO_LARGE : DSC_PARSE;
            xr = X_FATAL;
            break;
        }
        msgpack_unpacked u;
        msgpack_unpacked_init(&u);
        size_t used = 0;
        msgpack_unpack_return r =
            msgpack_unpack_next(&u, (const char *)c->rbuf + off, (size_t)sz, &used);
        if (r == MSGPACK_UNPACK_SUCCESS) on_message(c, &u.data, slots, n, open);
        msgpack_unpacked_destroy(&u);
        if (r != MSGPACK_UNPACK_SUCCESS) {
            *st = r == MSGPACK_UNPACK_NOMEM_ERROR ? DSC_NOMEM : DSC_PARSE;
            xr = X_FATAL;
            break;
        }
        off += (size_t)sz;
    }
    if (off > 0) {
        memmove(c->rbuf, c->rbuf + off, c->rlen - off);
        c->rlen -= off;
    }
    return xr;
}

/* Read what is available: X_DONE (read something or nothing yet), X_BROKEN on close
 * or error, X_FATAL on out of memory. */
static xresult receive(dsc_client *c, dsc_status *st) {
    size_t want = c->rlen + 65536;
    if (want > c->rcap) {
        unsigned char *p = realloc(c->rbuf, want);
        if (!p) return *st = DSC_NOMEM, X_FATAL;
        c->rbuf = p, c->rcap = want;
    }
    ssize_t r = recv(c->fd, c->rbuf + c->rlen, c->rcap - c->rlen, MSG_DONTWAIT);
    if (r > 0) return c->rlen += (size_t)r, X_DONE;
    if (r < 0 && (errno == EAGAIN || errno == EINTR)) return X_DONE;
    return X_BROKEN;
}

/* Write buf[*woff..len) and read replies until every slot is answered. */
static xresult exchange(dsc_client *c, const wbuf *buf, size_t *woff, slot *slots, size_t n,
                        size_t *open, int64_t deadline, dsc_status *st) {
    xresult xr = consume(c, slots, n, open, st);
    while (xr == X_DONE && *open > 0) {
        struct pollfd p = {.fd = c->fd, .events = POLLIN | (*woff < buf->len ? POLLOUT : 0)};
        int r = poll(&p, 1, remaining_ms(deadline));
        if (r < 0 && errno == EINTR) continue;
        if (r == 0) return X_TIMEOUT;
        if (r < 0) return X_BROKEN;
        if (p.revents & POLLOUT) {
            ssize_t w =
                send(c->fd, buf->data + *woff, buf->len - *woff, MSG_NOSIGNAL | MSG_DONTWAIT);
            if (w > 0)
                *woff += (size_t)w;
            else if (w < 0 && errno != EAGAIN && errno != EINTR)
                return X_BROKEN;
        }
        if (p.revents & (POLLIN | POLLHUP | POLLERR)) {
            xr = receive(c, st);
            if (xr == X_DONE) xr = consume(c, slots, n, open, st);
        }
    }
    return xr;
}

/* ---------------------------------------------------------------- pipeline -- */

static void make_request_id(dsc_client *c, dsc__encode_ctx *ctx) {
    snprintf(ctx->request_id, sizeof ctx->request_id, "dsc-%016llx-%llu",
             (unsigned long long)c->id_seed, (unsigned long long)++c->id_seq);
}

/* Pack calls[i] as [0, msgid, method, params] into buf; false when it is refused
 * (its status set) and nothing of it remains in buf. */
static bool pack_call(dsc_client *c, dsc_client_call *call, slot *s, wbuf *buf) {
    const dsc__method *m = dsc__method_get((int)call->method);
    if (!m) {
        fail_call(call, DSC_BAD_REQUEST, "unknown method number%s%s", "", "");
        return false;
    }
    msgpack_packer pk;
    msgpack_packer_init(&pk, buf, wbuf_write);
    dsc__encode_ctx ctx;
    make_request_id(c, &ctx);
    ctx.keyed = c->token_is_key;
    s->call = call;
    s->msgid = c->next_id++;
    s->start = buf->len;
    dsc_error_clear(&call->err);
    msgpack_pack_array(&pk, 4);
    msgpack_pack_uint8(&pk, 0);
    msgpack_pack_uint32(&pk, s->msgid);
    msgpack_pack_str_with_body(&pk, m->name, strlen(m->name));
    call->status = m->encode(&pk, call->request, &ctx, &call->err);
    if (call->status == DSC_OK && buf->nomem)
        call->status = dsc_error_set(&call->err, DSC_NOMEM, "out of memory while packing");
    if (call->status != DSC_OK) {
        buf->len = s->start;
        buf->nomem = false;
        return false;
    }
    s->end = buf->len;
    return true;
}

/* Keep only the unanswered slots, repacking their bytes into a fresh buffer; true
 * when every one of them may be sent again. */
static bool requeue(slot *slots, size_t *n, wbuf *buf, size_t woff, wbuf *fresh) {
    size_t k = 0;
    bool safe = true;
    for (size_t i = 0; i < *n; i++) {
        if (slots[i].done) continue;
        const dsc__method *m = dsc__method_get((int)slots[i].call->method);
        if (slots[i].start < woff && !m->retry_safe) safe = false;
        size_t start = fresh->len;
        wbuf_write(fresh, buf->data + slots[i].start, slots[i].end - slots[i].start);
        slots[k] = slots[i];
        slots[k].start = start, slots[k].end = fresh->len;
        k++;
    }
    *n = k;
    return safe && !fresh->nomem;
}

static void fail_open(slot *slots, size_t n, dsc_status st, const char *why, const char *extra) {
    for (size_t i = 0; i < n; i++)
        if (!slots[i].done) {
            slots[i].done = true;
            fail_call(slots[i].call, st, why, dsc__method_get((int)slots[i].call->method)->name,
                      extra);
        }
}

static const char *broken_msg(xresult xr, bool sent) {
    if (xr == X_TIMEOUT) return "no reply to %s within the timeout%s";
    return sent ? "the connection broke before the reply to %s (it may have been processed)%s"
                : "the connection broke before %s was sent%s";
}

/* The body of dsc_client_pipeline; internal = the auth call of connect_now (which
 * must not connect again). */
static dsc_status run_pipeline(dsc_client *c, dsc_client_call *calls, size_t n, int64_t deadline,
                               bool internal) {
    slot *slots = calloc(n ? n : 1, sizeof *slots);
    wbuf buf = {0}, fresh = {0};
    size_t nslots = 0, open = 0, woff = 0;
    dsc_status st = DSC_OK;
    bool retried = false;
    if (!slots) {
        for (size_t i = 0; i < n; i++)
            fail_call(&calls[i], DSC_NOMEM, "out of memory for %s%s", "a pipeline", "");
        return DSC_NOMEM;
    }
    for (size_t i = 0; i < n; i++)
        if (pack_call(c, &calls[i], &slots[nslots], &buf)) nslots++;
    open = nslots;
    while (open > 0) {
        dsc_error cerr = {0};
        if (!internal && (st = ensure_connected(c, deadline, &cerr)) != DSC_OK) {
            fail_open(slots, nslots, st, "%.0s%s", cerr.message);
            break;
        }
        xresult xr = exchange(c, &buf, &woff, slots, nslots, &open, deadline, &st);
        if (xr == X_DONE) break;
        const char *notice = c->notice[0] ? c->notice : "";
        char extra[DSC_ERROR_MESSAGE_MAX + 16] = "";
        if (notice[0]) snprintf(extra, sizeof extra, " (server: %s)", notice);
        drop_connection(c);
        if (xr == X_FATAL) {
            fail_open(slots, nslots, st,
                      st == DSC_TOO_LARGE ? "the reply to %s is larger than the reply limit%s"
                                          : "the reply to %s is not a valid response%s",
                      extra);
            break;
        }
        bool sent = woff > 0;
        if (xr == X_BROKEN && !retried && !internal) {
            retried = true;
            fresh.len = 0;
            bool safe = requeue(slots, &nslots, &buf, woff, &fresh);
            wbuf tmp = buf;
            buf = fresh, fresh = tmp;
            woff = 0;
            if (safe) continue;
        }
        fail_open(slots, nslots, xr == X_TIMEOUT ? DSC_TIMEOUT : DSC_UNREACHABLE,
                  broken_msg(xr, sent), extra);
        break;
    }
    free(slots);
    free(buf.data);
    free(fresh.data);
    for (size_t i = 0; i < n; i++)
        if (calls[i].status != DSC_OK) return calls[i].status;
    return DSC_OK;
}

dsc_status dsc_client_pipeline(dsc_client *c, dsc_client_call *calls, size_t n, dsc_error *err) {
    if (!c || (n > 0 && !calls)) return dsc_error_set(err, DSC_BAD_REQUEST, "no client or calls");
    dsc_status st = run_pipeline(c, calls, n, now_ms() + c->timeout_ms, false);
    for (size_t i = 0; i < n; i++)
        if (calls[i].status != DSC_OK) {
            if (err) *err = calls[i].err;
            return st;
        }
    dsc_error_clear(err);
    return DSC_OK;
}

/* ------------------------------------------------------------ single calls -- */

static dsc_status one(dsc_client *c, dsc_client_method m, const void *rq, void *out,
                      dsc_error *err) {
    dsc_client_call call = {.method = m, .request = rq, .result = out};
    const dsc__method *row = dsc__method_get((int)m);
    if (out && row->result_size) memset(out, 0, row->result_size);
    return dsc_client_pipeline(c, &call, 1, err);
}

dsc_status dsc_client_check(dsc_client *c, const dsc_client_check_request *rq,
                            dsc_client_check_result *out, dsc_error *err) {
    return one(c, DSC_CALL_CHECK, rq, out, err);
}

dsc_status dsc_client_settle(dsc_client *c, const dsc_client_settle_request *rq,
                             dsc_client_settle_result *out, dsc_error *err) {
    return one(c, DSC_CALL_SETTLE, rq, out, err);
}

dsc_status dsc_client_cancel(dsc_client *c, const char *reservation, dsc_client_cancel_result *out,
                             dsc_error *err) {
    return one(c, DSC_CALL_CANCEL, reservation, out, err);
}

dsc_status dsc_client_estimate(dsc_client *c, const dsc_client_estimate_request *rq,
                               dsc_client_estimate_result *out, dsc_error *err) {
    return one(c, DSC_CALL_ESTIMATE, rq, out, err);
}

dsc_status dsc_client_budget_get(dsc_client *c, const dsc_client_subject *subject,
                                 dsc_client_budgets *out, dsc_error *err) {
    return one(c, DSC_CALL_BUDGET_GET, subject, out, err);
}

dsc_status dsc_client_key_create(dsc_client *c, const dsc_client_key_request *rq,
                                 dsc_client_key *out, dsc_error *err) {
    return one(c, DSC_CALL_KEY_CREATE, rq, out, err);
}

dsc_status dsc_client_key_list(dsc_client *c, const char *scope, dsc_client_keys *out,
                               dsc_error *err) {
    return one(c, DSC_CALL_KEY_LIST, scope, out, err);
}

dsc_status dsc_client_key_revoke(dsc_client *c, const char *key_id, dsc_error *err) {
    return one(c, DSC_CALL_KEY_REVOKE, key_id, NULL, err);
}

dsc_status dsc_client_decisions_list(dsc_client *c, const dsc_client_decisions_request *rq,
                                     dsc_client_decisions *out, dsc_error *err) {
    return one(c, DSC_CALL_DECISIONS_LIST, rq, out, err);
}

dsc_status dsc_client_admin_journal_list(dsc_client *c, const dsc_client_admin_journal_request *rq,
                                         dsc_client_admin_journal *out, dsc_error *err) {
    return one(c, DSC_CALL_ADMIN_JOURNAL_LIST, rq, out, err);
}

dsc_status dsc_client_report_get(dsc_client *c, const dsc_client_report_request *rq,
                                 dsc_client_report *out, dsc_error *err) {
    return one(c, DSC_CALL_REPORT, rq, out, err);
}

dsc_status dsc_client_budget_list(dsc_client *c, const char *selector, dsc_client_budgets *out,
                                  dsc_error *err) {
    return one(c, DSC_CALL_BUDGET_LIST, selector, out, err);
}

dsc_status dsc_client_budget_set(dsc_client *c, const dsc_client_budget_set_request *rq,
                                 dsc_client_budget_set_result *out, dsc_error *err) {
    return one(c, DSC_CALL_BUDGET_SET, rq, out, err);
}

dsc_status dsc_client_budget_delete(dsc_client *c, const char *selector, const char *metric,
                                    const char *window, dsc_error *err) {
    dsc_client_budget_set_request rq = {.selector = selector, .metric = metric, .window = window};
    return one(c, DSC_CALL_BUDGET_DELETE, &rq, NULL, err);
}

dsc_status dsc_client_grid_set(dsc_client *c, const dsc_client_grid_request *rq,
                               dsc_client_grid_result *out, dsc_error *err) {
    return one(c, DSC_CALL_GRID_SET, rq, out, err);
}

dsc_status dsc_client_policy_reload(dsc_client *c, dsc_client_reload_result *out, dsc_error *err) {
    return one(c, DSC_CALL_POLICY_RELOAD, NULL, out, err);
}

dsc_status dsc_client_ping(dsc_client *c, dsc_client_ping_result *out, dsc_error *err) {
    return one(c, DSC_CALL_PING, NULL, out, err);
}

dsc_status dsc_client_stats(dsc_client *c, dsc_client_stats_result *out, dsc_error *err) {
    return one(c, DSC_CALL_STATS, NULL, out, err);
}

dsc_status dsc_client_models_list(dsc_client *c, const char *provider, dsc_client_models *out,
                                  dsc_error *err) {
    return one(c, DSC_CALL_MODELS_LIST, provider, out, err);
}

dsc_status dsc_client_zones_list(dsc_client *c, dsc_client_zones *out, dsc_error *err) {
    return one(c, DSC_CALL_ZONES_LIST, NULL, out, err);
}
