/*
 * conn.c - a client connection of a worker: socket I/O, framing, deadlines (see
 * conn.h).
 *
 * I/O: each connection has a read event and a write event on its worker's
 * event_base, and plain read(2)/send(2) on a non-blocking socket rather than a
 * bufferevent. One read is followed by scanning and answering every complete
 * message in it, the replies packed into one output buffer and sent with one
 * send(2); the write event is armed only when the socket is full. That is two
 * syscalls per read-reply cycle, where bufferevents toggle the write event through
 * epoll_ctl on every reply (measured on this design's echo floor: 15% more server CPU
 * per request at pipeline 1, 40% at pipeline 16).
 *
 * Bounded memory per connection: reads land in the worker's shared buffer and only a
 * partial message is copied to the connection's own buffer, which never grows past
 * max_message_bytes + READ_CHUNK (the scanner refuses longer messages) and is freed
 * when empty; the output buffer is freed once sent, and reading pauses while more
 * than OUT_HIGH bytes of replies wait for the peer. An idle connection costs its
 * struct and its socket.
 *
 * Deadlines: a connection is closed when it completes no message for idle_timeout_s
 * (bytes of a message still arriving are not activity: one byte every half second
 * must not hold a slot forever) or when a message is still incomplete frame_timeout_s
 * after its first byte. One timer per connection, armed lazily: a read only notes
 * the time, and the timer, when it fires early, re-arms itself for the real deadline,
 * so a busy connection costs no timer operation per request.
 */
#include "conn.h"
#include "http.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define IN_INITIAL (4 * 1024)
#define OUT_HIGH (1024 * 1024)

/* From peer.c: the uid of a Unix-socket peer; -1 when unknown. */
int dsc__peer_uid(int fd, uid_t *uid);

/* ---------------------------------------------------------------- connections -- */

/* Close c's socket and unlink it; the struct itself goes when its last job does. */
static void conn_free(dsc__conn *c) {
    dsc__worker *w = c->w;
    if (c->prev)
        c->prev->next = c->next;
    else
        w->conns = c->next;
    if (c->next) c->next->prev = c->prev;
    c->prev = c->next = NULL;
    if (c->rev) event_free(c->rev);
    if (c->wev) event_free(c->wev);
    if (c->timer) event_free(c->timer);
    c->rev = c->wev = c->timer = NULL;
    if (c->fd >= 0) close(c->fd);
    c->fd = -1;
    if (!c->borrowed) free(c->in);
    c->in = NULL;
    c->borrowed = false;
    msgpack_sbuffer_destroy(&c->out);
    msgpack_sbuffer_init(&c->out);
    dsc__accept_release(w->srv, c->addr);
    if (c->jobs == 0) free(c);
    if (w->draining && dsc__worker_idle(w)) event_base_loopexit(w->base, NULL);
}

void dsc__conn_close(dsc__conn *c, const char *why) {
    dsc_log_write(&c->w->srv->log, DSC_LOG_DEBUG, "close", "conn=%llu reason=%s",
                  (unsigned long long)c->id, why);
    conn_free(c);
}

/* Send what is pending. Returns 0 when everything went out, 1 when the socket is
 * full (the write event is armed), -1 when the connection failed. */
static int conn_flush(dsc__conn *c) {
    while (c->out_off < c->out.size) {
        ssize_t n = send(c->fd, c->out.data + c->out_off, c->out.size - c->out_off, MSG_NOSIGNAL);
        if (n > 0) {
            c->out_off += (size_t)n;
        } else if (n < 0 && errno == EINTR) {
            continue;
        } else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            /* A peer that stops reading its replies is dropped after the idle time. */
            struct timeval idle = {(time_t)c->w->srv->cfg.idle_timeout_s, 0};
            event_add(c->wev, &idle);
            return 1;
        } else {
            return -1;
        }
    }
    /* All sent: an idle connection holds no output memory. The worker keeps one
     * buffer (up to DSC__SPARE_OUT_MAX) for the next reply of any of its connections,
     * so that answering a request does not allocate one. */
    dsc__worker *w = c->w;
    if (!w->spare_out && c->out.alloc <= DSC__SPARE_OUT_MAX) {
        w->spare_out = c->out.data;
        w->spare_out_cap = c->out.alloc;
    } else {
        msgpack_sbuffer_destroy(&c->out);
    }
    msgpack_sbuffer_init(&c->out);
    c->out_off = 0;
    return 0;
}

void dsc__conn_out_ready(dsc__conn *c) {
    dsc__worker *w = c->w;
    if (c->out.data || !w->spare_out) return;
    c->out.data = w->spare_out;
    c->out.alloc = w->spare_out_cap;
    c->out.size = 0;
    w->spare_out = NULL;
}

void dsc__conn_out_check(dsc__conn *c, const dsc_rpc_out *o, size_t mark) {
    if (!o->failed) return;
    o->sb->size = mark;
    c->closing = true;
    dsc_log_write(&c->w->srv->log, DSC_LOG_WARN, "reply_failed", "conn=%llu reason=out_of_memory",
                  (unsigned long long)c->id);
}

static void send_broken(dsc__conn *c, const dsc_error *err) {
    msgpack_packer pk;
    size_t mark = c->out.size;
    dsc_rpc_out o = {&c->out, SIZE_MAX, false};
    msgpack_packer_init(&pk, &o, dsc_rpc_out_write);
    dsc_rpc_pack_error_notification(&pk, err);
    dsc__conn_out_check(c, &o, mark);
    atomic_fetch_add_explicit(&c->w->counters.closed_broken, 1, memory_order_relaxed);
    dsc_log_write(&c->w->srv->log, DSC_LOG_INFO, "broken_stream", "conn=%llu code=%s",
                  (unsigned long long)c->id, dsc_status_wire(err->code));
    c->closing = true;
}

/* The msgid of a complete message that starts [0, <uint>, ...], read from its bytes
 * (for over-limit messages, which are never decoded). */
static bool peek_msgid(const uint8_t *p, size_t n, uint32_t *msgid) {
    if (n < 3 || p[0] != 0x94 || p[1] != 0x00) return false;
    uint8_t b = p[2];
    if (b <= 0x7f) return *msgid = b, true;
    size_t len = b == 0xcc ? 1 : b == 0xcd ? 2 : b == 0xce ? 4 : 0;
    if (!len || n < 3 + len) return false;
    uint32_t v = 0;
    for (size_t i = 0; i < len; i++)
        v = (v << 8) | p[3 + i];
    return *msgid = v, true;
}

static void reply_error(dsc__conn *c, bool has_msgid, uint32_t msgid, const dsc_error *err) {
    msgpack_packer pk;
    size_t mark = c->out.size;
    dsc_rpc_out o = {&c->out, SIZE_MAX, false};
    msgpack_packer_init(&pk, &o, dsc_rpc_out_write);
    if (has_msgid)
        dsc_rpc_pack_error(&pk, msgid, err);
    else
        dsc_rpc_pack_error_notification(&pk, err);
    dsc__conn_out_check(c, &o, mark);
    atomic_fetch_add_explicit(&c->w->counters.errors, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&c->w->counters.protocol_errors, 1, memory_order_relaxed);
}

static void handle_frame(dsc__conn *c, const uint8_t *msg, size_t size) {
    dsc__worker *w = c->w;
    msgpack_object obj;
    dsc_error err;
    dsc_rpc_request req;
    dsc_status st = dsc_rpc_decode(msg, size, &w->zone, &obj);
    if (st != DSC_OK) {
        dsc_error_set(&err, st == DSC_NOMEM ? DSC_INTERNAL : DSC_BAD_REQUEST,
                      st == DSC_NOMEM ? "out of memory decoding the message"
                                      : "message cannot be decoded");
        uint32_t id = 0;
        bool has = peek_msgid(msg, size, &id);
        reply_error(c, has, id, &err);
    } else if (dsc_rpc_request_parse(&obj, &req, &err) != DSC_OK) {
        reply_error(c, req.has_msgid, req.msgid, &err);
    } else {
        dsc__dispatch(c, &req);
    }
    msgpack_zone_clear(&w->zone);
}

/* After answering in[0..off): keep the rest in the connection's own buffer. Bytes read
 * into the worker's shared buffer are copied out (only a partial message or messages
 * held back usually remain); an emptied own buffer is freed, so that an idle
 * connection holds no input memory. -1 when out of memory. */
static int keep_rest(dsc__conn *c, size_t off) {
    size_t rest = c->in_len - off;
    if (c->borrowed) {
        uint8_t *own = NULL;
        size_t cap = rest < IN_INITIAL ? IN_INITIAL : rest + DSC__READ_CHUNK;
        if (rest && !(own = malloc(cap))) return -1;
        if (rest) memcpy(own, c->in + off, rest);
        c->in = own;
        c->in_cap = rest ? cap : 0;
        c->in_len = rest;
        c->borrowed = false;
        return 0;
    }
    if (rest == 0) {
        free(c->in);
        c->in = NULL;
        c->in_cap = c->in_len = 0;
    } else if (off > 0) {
        memmove(c->in, c->in + off, rest);
        c->in_len = rest;
    }
    return 0;
}

/* Scan and answer every complete message in c->in. Stops early (leaving the rest
 * buffered) when max_inflight messages were answered and the output did not drain,
 * or when the stream broke. Sets *done (messages were answered) and *partial (what
 * is left ends in an incomplete message). Returns -1 when the connection failed. */
static int process_input(dsc__conn *c, bool *done, bool *partial) {
    const dsc_server_config *cfg = &c->w->srv->cfg;
    size_t off = 0, batch = 0;
    int rc = 0;
    *partial = false;
    while (!c->closing && off < c->in_len && c->jobs < cfg->max_inflight) {
        size_t size = 0;
        dsc_error err;
        dsc_rpc_scan_result r =
            dsc_rpc_scan(&c->sc, &cfg->limits, c->in + off, c->in_len - off, &size, &err);
        if (r == DSC_RPC_NEED_MORE) {
            *partial = true;
            break;
        }
        if (r == DSC_RPC_BROKEN) {
            send_broken(c, &err);
            break;
        }
        if (r == DSC_RPC_FRAME)
            handle_frame(c, c->in + off, size);
        else {
            uint32_t id = 0;
            bool has = peek_msgid(c->in + off, size, &id);
            reply_error(c, has, id, &err);
        }
        off += size;
        dsc_rpc_scanner_reset(&c->sc);
        if (++batch >= cfg->max_inflight || c->out.size - c->out_off > OUT_HIGH) {
            batch = 0;
            if ((rc = conn_flush(c)) != 0) break;
        }
    }
    *done = off > 0;
    rc = keep_rest(c, off) < 0 ? -1 : rc;
    return rc < 0 ? -1 : 0;
}

static void pause_reading(dsc__conn *c, bool pause) {
    if (pause == c->paused) return;
    c->paused = pause;
    if (pause)
        event_del(c->rev);
    else
        event_add(c->rev, NULL);
}

/* ------------------------------------------------------------------ deadlines -- */

static int64_t mono_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* When c is to be closed if nothing happens: idle_timeout_s after its last complete
 * message, or frame_timeout_s after the first byte of a partial one if sooner. */
static int64_t conn_deadline(const dsc__conn *c, bool *frame) {
    const dsc_server_config *cfg = &c->w->srv->cfg;
    int64_t idle = c->last_frame_ms + (int64_t)cfg->idle_timeout_s * 1000;
    int64_t whole = c->frame_start_ms + (int64_t)cfg->frame_timeout_s * 1000;
    *frame = c->in_frame && whole < idle;
    return *frame ? whole : idle;
}

static void arm_timer(dsc__conn *c, int64_t due, int64_t now) {
    int64_t ms = due > now ? due - now : 1;
    struct timeval tv = {(time_t)(ms / 1000), (suseconds_t)(ms % 1000) * 1000};
    event_add(c->timer, &tv);
    c->armed_ms = due;
}

/* After input was processed: note the time, and arm the timer when the deadline came
 * nearer than the one it is set for (only a message that starts arriving in pieces
 * does that; every other case is caught when the timer fires). */
static void note_input(dsc__conn *c, bool done, bool partial) {
    int64_t now = mono_ms();
    if (done) c->last_frame_ms = now, c->in_frame = false;
    if (partial && !c->in_frame) c->in_frame = true, c->frame_start_ms = now;
    if (!partial) c->in_frame = false;
    bool frame;
    int64_t due = conn_deadline(c, &frame);
    if (due < c->armed_ms) arm_timer(c, due, now);
}

static void on_timer(evutil_socket_t fd, short what, void *arg) {
    (void)fd;
    (void)what;
    dsc__conn *c = arg;
    int64_t now = mono_ms();
    if (c->paused || c->jobs > 0) {
        /* Not reading, for the server's own reasons (replies waiting for the store or
         * for the socket, whose write event has its own timeout): no clock runs. */
        c->last_frame_ms = now;
        c->frame_start_ms = now;
    }
    bool frame;
    int64_t due = conn_deadline(c, &frame);
    if (now >= due) {
        dsc__conn_close(c, frame ? "frame_timeout" : "idle_timeout");
        return;
    }
    arm_timer(c, due, now);
}

/* After reading or writing: answer what is buffered, send, and decide whether to keep
 * reading. Frees c (and returns) when the connection is over. */
void dsc__conn_pump(dsc__conn *c) {
    bool done = false, partial = false;
    if (process_input(c, &done, &partial) < 0) {
        dsc__conn_close(c, "send_failed");
        return;
    }
    note_input(c, done, partial);
    int f = conn_flush(c);
    if (f < 0) {
        dsc__conn_close(c, "send_failed");
        return;
    }
    if (c->closing && f == 0) {
        dsc__conn_close(c, "closed_by_server");
        return;
    }
    bool full = c->jobs >= c->w->srv->cfg.max_inflight;
    pause_reading(c, f == 1 || full || c->closing || c->w->draining);
    if (c->w->draining && f == 0 && c->jobs == 0) {
        dsc__conn_close(c, "draining");
        return;
    }
}

void dsc__conn_after_job(dsc__conn *c) {
    dsc__worker *w = c->w;
    if (c->http) {
        if (c->jobs == 0) dsc__http_conn_done(c);
        if (w->draining && dsc__worker_idle(w)) event_base_loopexit(w->base, NULL);
        return;
    }
    if (c->fd >= 0) {
        dsc__conn_pump(c);
        return;
    }
    if (c->jobs == 0) free(c);
    if (w->draining && dsc__worker_idle(w)) event_base_loopexit(w->base, NULL);
}

static bool grow_input(dsc__conn *c) {
    size_t max = c->w->srv->cfg.limits.max_message_bytes + DSC__READ_CHUNK;
    if (c->in_cap - c->in_len >= DSC__READ_CHUNK / 4 || c->in_cap >= max) return true;
    size_t cap = c->in_cap ? c->in_cap * 2 : IN_INITIAL;
    if (cap > max) cap = max;
    uint8_t *p = realloc(c->in, cap);
    if (!p) return false;
    c->in = p;
    c->in_cap = cap;
    return true;
}

/* Read what arrived. A connection with nothing buffered reads into its worker's
 * shared buffer (most reads hold whole requests); one with a partial message appends
 * to its own. */
static void on_read(evutil_socket_t fd, short what, void *arg) {
    dsc__conn *c = arg;
    dsc__worker *w = c->w;
    (void)what;
    bool shared = c->in_len == 0;
    if (!shared && !grow_input(c)) {
        dsc__conn_close(c, "out_of_memory");
        return;
    }
    uint8_t *buf = shared ? w->rbuf : c->in;
    size_t len = shared ? 0 : c->in_len, cap = shared ? w->rcap : c->in_cap;
    if (len == cap) { /* only while jobs hold back complete messages */
        pause_reading(c, true);
        return;
    }
    ssize_t n = read(fd, buf + len, cap - len);
    if (n == 0) {
        dsc__conn_close(c, "peer_closed");
        return;
    }
    if (n < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) return;
        dsc__conn_close(c, "read_failed");
        return;
    }
    if (shared) {
        free(c->in); /* an emptied own buffer */
        c->in = w->rbuf;
        c->in_cap = w->rcap;
        c->borrowed = true;
    }
    c->in_len = len + (size_t)n;
    dsc__conn_pump(c);
}

static void on_write(evutil_socket_t fd, short what, void *arg) {
    (void)fd;
    if (what & EV_TIMEOUT) {
        dsc__conn_close(arg, "write_timeout");
        return;
    }
    dsc__conn_pump(arg);
}

void dsc__conn_open(dsc__worker *w, const dsc__handoff *h) {
    dsc_server *srv = w->srv;
    dsc__conn *c = calloc(1, sizeof *c);
    if (!c) {
        close(h->fd);
        dsc__accept_release(srv, h->addr);
        return;
    }
    c->w = w;
    memcpy(c->addr, h->addr, sizeof c->addr);
    c->fd = h->fd;
    c->id = ((uint64_t)w->index << 48) | ++w->next_conn_id;
    c->is_unix = h->is_unix;
    msgpack_sbuffer_init(&c->out);
    dsc_rpc_scanner_reset(&c->sc);
    c->next = w->conns;
    if (w->conns) w->conns->prev = c;
    w->conns = c;
    if (c->is_unix && dsc__peer_uid(c->fd, &c->peer_uid) == 0)
        for (int i = 0; i < srv->cfg.n_unix_admin_uids; i++)
            if (srv->cfg.unix_admin_uids[i] == c->peer_uid) dsc__conn_make_admin(c);
    c->rev = event_new(w->base, c->fd, EV_READ | EV_PERSIST, on_read, c);
    c->wev = event_new(w->base, c->fd, EV_WRITE, on_write, c);
    c->timer = evtimer_new(w->base, on_timer, c);
    if (!c->rev || !c->wev || !c->timer) {
        dsc__conn_close(c, "out_of_memory");
        return;
    }
    c->paused = true;
    pause_reading(c, false);
    c->last_frame_ms = mono_ms();
    c->armed_ms = INT64_MAX;
    bool frame;
    arm_timer(c, conn_deadline(c, &frame), c->last_frame_ms);
    dsc_log_write(&srv->log, DSC_LOG_DEBUG, "accept", "conn=%llu transport=%s admin=%d",
                  (unsigned long long)c->id, c->is_unix ? "unix" : "tcp",
                  c->role == DSC__ROLE_ADMIN);
}
