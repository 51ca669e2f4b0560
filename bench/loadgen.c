/*
 * loadgen.c - a MessagePack-RPC load generator for discernd.
 *
 *   loadgen [--port P] [-c CONNECTIONS] [-P DEPTH] [-d SECONDS | -n REQUESTS]
 *           [--method check|estimate|ping] [--settle FRACTION] [--server-pid PID] ...
 *   loadgen --setup-budgets one|users --admin-token TOKEN [--port P]
 *   loadgen --ack-log FILE ...   (bench/crash.sh: which settles were acknowledged)
 *
 * Why: discernd must add nothing noticeable in front of an AI call, so we measure
 * it the way redis-benchmark measures Redis: N connections to 127.0.0.1, each
 * sending a batch of D pipelined requests and waiting for all D replies before
 * sending the next batch (closed loop), for a fixed time or a fixed count.
 *
 * The default workload is `check` with reserve for varied subjects (10 000 users
 * u<i> in 100 teams t<i/100> in 5 orgs o<team/20>), a few models and purposes, and
 * a `settle` for each reservation an allowed check returned (--settle FRACTION of
 * them), sent in the connection's next batch. It reports requests/s, latency
 * percentiles from a log-linear (HDR-style, <1% error) histogram, decisions by kind,
 * errors by wire code, and with --server-pid the server's CPU per request from
 * /proc/PID/stat. --kv appends one `key=value` line for scripts. --setup-budgets
 * creates budgets through the admin API (budget.set, 256 in flight) and exits.
 * With --admin-token, every load connection authenticates first (auth), so the load
 * also runs against a server that requires it. --ack-log FILE writes the reservation
 * of every settle the server acknowledged, one per line, and the report counts the
 * settles that were sent but never answered (in flight when the server died).
 *
 * Single-threaded, non-blocking sockets, epoll. It always stops by itself: after
 * the duration, or after the count but at most --timeout seconds, then at most
 * DRAIN_S seconds waiting for replies still in flight.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include <arpa/inet.h>

#include <msgpack.h>

#define DRAIN_S 10.0
#define MAX_DURATION_S 3600.0
#define MAX_CONNECTIONS 10000
#define MAX_DEPTH 1024
#define READ_CHUNK 65536
#define SETTLE_QUEUE 2048  /* per connection: reservations waiting to be settled */
#define RES_MAX 128        /* longest reservation id kept */
#define MAX_CODES 32       /* distinct error codes counted */
#define SETUP_INFLIGHT 256 /* budget.set requests in flight during --setup-budgets */

/* ------------------------------------------------------------------ options */

enum method { M_CHECK, M_ESTIMATE, M_PING };
enum kind { K_CHECK, K_SETTLE, K_ESTIMATE, K_PING, K_SETUP, N_KINDS };
static const char *const kind_names[N_KINDS] = {"check", "settle", "estimate", "ping", "setup"};

typedef struct opts {
    int port;
    int connections;
    int depth;
    double duration_s;
    double warmup_s;
    long requests; /* 0 = run for duration_s */
    double timeout_s;
    enum method method;
    double settle;
    int users, teams, orgs;
    int server_pid;
    unsigned long seed;
    bool kv;
    bool sequential; /* users u0, u1, ... in turn instead of at random */
    const char *setup;
    const char *admin_token;
    const char *key; /* every load connection authenticates with it first */
    double budget_limit;
    const char *budget_metric;
    const char *budget_window;
    const char *ack_log;
} opts;

/* ------------------------------------------------------------- histogram */

/* Log-linear histogram of nanoseconds: values below 2*SUB are exact, above that each
 * power of two is split into SUB equal buckets (relative error below 1/SUB). */
#define SUB_BITS 7
#define SUB (1u << SUB_BITS)
#define HIST_BUCKETS ((64 - SUB_BITS + 1) * SUB)

typedef struct histogram {
    uint64_t count[HIST_BUCKETS];
    uint64_t total;
    uint64_t max;
} histogram;

static unsigned hist_index(uint64_t v) {
    if (v < SUB) return (unsigned)v;
    unsigned msb = 63u - (unsigned)__builtin_clzll(v);
    unsigned e = msb - SUB_BITS;
    return (e + 1) * SUB + (unsigned)((v >> e) - SUB);
}

/* The highest value that lands in bucket i (what HdrHistogram reports). */
static uint64_t hist_upper(unsigned i) {
    if (i < 2 * SUB) return i;
    unsigned e = i / SUB - 1;
    uint64_t low = ((uint64_t)(i % SUB) + SUB) << e;
    return low + ((uint64_t)1 << e) - 1;
}

static void hist_record(histogram *h, uint64_t v) {
    h->count[hist_index(v)]++;
    h->total++;
    if (v > h->max) h->max = v;
}

static uint64_t hist_percentile(const histogram *h, double p) {
    if (h->total == 0) return 0;
    uint64_t want = (uint64_t)ceil(p / 100.0 * (double)h->total), seen = 0;
    if (want == 0) want = 1;
    for (unsigned i = 0; i < HIST_BUCKETS; i++) {
        seen += h->count[i];
        if (seen >= want) return hist_upper(i) < h->max ? hist_upper(i) : h->max;
    }
    return h->max;
}

/* --------------------------------------------------------------- workload */

static const struct {
    const char *provider, *model;
} models[] = {
    {"openai", "gpt-4o"},
    {"openai", "gpt-4o-mini"},
    {"anthropic", "claude-3-haiku-20240307"},
    {"mistralai", "mistral-small-latest"},
    {"mistralai", "mistral-large-latest"},
};
#define N_MODELS (sizeof models / sizeof models[0])

static const char *const purposes[] = {"code-review", "support", "translation", "analysis", "chat"};
#define N_PURPOSES (sizeof purposes / sizeof purposes[0])

static uint64_t rng_next(uint64_t *s) { /* xorshift64* */
    uint64_t x = *s;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *s = x;
    return x * 0x2545F4914F6CDD1DULL;
}

static unsigned rng_below(uint64_t *s, unsigned n) {
    return (unsigned)(rng_next(s) % n);
}

/* ------------------------------------------------------------ connections */

typedef struct slot {
    uint32_t msgid;
    uint8_t kind;
    bool busy;
    char res[RES_MAX]; /* a settle: its reservation, for --ack-log */
} slot;

typedef struct conn {
    int fd;
    char *out;
    size_t out_len, out_off, out_cap;
    bool want_out;
    msgpack_unpacker up;
    msgpack_unpacked msg;
    slot *slots; /* indexed by msgid % slot_cap */
    unsigned slot_cap;
    unsigned inflight;
    uint32_t next_msgid;
    uint64_t batch_ns; /* when the current batch was written */
    char (*settles)[RES_MAX];
    unsigned settle_head, settle_len;
    bool dead;
} conn;

typedef struct stats {
    uint64_t done[N_KINDS];
    uint64_t decisions[3]; /* allow, throttle, refuse */
    uint64_t settle_dropped;
    uint64_t settle_unanswered; /* sent, then the connection died before the reply */
    char codes[MAX_CODES][48];
    uint64_t code_count[MAX_CODES];
    uint64_t errors;
    histogram hist;
} stats;

typedef struct run {
    const opts *o;
    long long server_ticks_end; /* server CPU when measurement ended (-1: unknown) */
    double self_cpu_end;
    conn *conns;
    int epfd;
    uint64_t rng;
    uint64_t next_user; /* --sequential: the next user's index */
    uint64_t sent;
    uint64_t t_start, t_measure, t_end; /* ns, monotonic */
    bool stopping;
    FILE *ack; /* --ack-log */
    stats st;
} run;

static uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void die(const char *what) {
    fprintf(stderr, "loadgen: %s\n", what);
    exit(2);
}

static int out_write(void *data, const char *buf, size_t len) {
    conn *c = data;
    if (c->out_len + len > c->out_cap) {
        size_t cap = c->out_cap ? c->out_cap : 4096;
        while (cap < c->out_len + len)
            cap *= 2;
        char *p = realloc(c->out, cap);
        if (!p) return -1;
        c->out = p;
        c->out_cap = cap;
    }
    memcpy(c->out + c->out_len, buf, len);
    c->out_len += len;
    return 0;
}

static void pack_str(msgpack_packer *pk, const char *s) {
    size_t n = strlen(s);
    msgpack_pack_str(pk, n);
    msgpack_pack_str_body(pk, s, n);
}

static void pack_kv_str(msgpack_packer *pk, const char *k, const char *v) {
    pack_str(pk, k);
    pack_str(pk, v);
}

static void pack_kv_int(msgpack_packer *pk, const char *k, int64_t v) {
    pack_str(pk, k);
    msgpack_pack_int64(pk, v);
}

/* Starts [0, msgid, method, [ {...npairs} ]] and books the msgid in a slot. */
static void begin_request(conn *c, msgpack_packer *pk, enum kind k, const char *method,
                          size_t npairs) {
    uint32_t id = c->next_msgid++;
    slot *s = &c->slots[id % c->slot_cap];
    if (s->busy) die("internal: msgid slot reused while in flight");
    *s = (slot){.msgid = id, .kind = (uint8_t)k, .busy = true};
    c->inflight++;
    msgpack_pack_array(pk, 4);
    msgpack_pack_int(pk, 0);
    msgpack_pack_uint32(pk, id);
    pack_str(pk, method);
    msgpack_pack_array(pk, 1);
    msgpack_pack_map(pk, npairs);
}

static void pack_subject(run *r, msgpack_packer *pk) {
    char org[16], team[16], user[16];
    unsigned u = r->o->sequential ? (unsigned)(r->next_user++ % (uint64_t)r->o->users)
                                  : rng_below(&r->rng, (unsigned)r->o->users);
    unsigned per_team = (unsigned)(r->o->users / r->o->teams);
    unsigned t = u / (per_team ? per_team : 1);
    unsigned teams_per_org = (unsigned)(r->o->teams / r->o->orgs);
    unsigned g = t / (teams_per_org ? teams_per_org : 1);
    snprintf(org, sizeof org, "o%u", g);
    snprintf(team, sizeof team, "t%u", t);
    snprintf(user, sizeof user, "u%u", u);
    pack_str(pk, "subject");
    msgpack_pack_map(pk, 3);
    pack_kv_str(pk, "org", org);
    pack_kv_str(pk, "team", team);
    pack_kv_str(pk, "user", user);
}

static void pack_check(run *r, conn *c, msgpack_packer *pk) {
    unsigned m = rng_below(&r->rng, N_MODELS);
    begin_request(c, pk, K_CHECK, "check", 7);
    pack_subject(r, pk);
    pack_kv_str(pk, "provider", models[m].provider);
    pack_kv_str(pk, "model", models[m].model);
    pack_kv_int(pk, "input_tokens", 100 + rng_below(&r->rng, 2000));
    pack_kv_int(pk, "output_tokens", 50 + rng_below(&r->rng, 1000));
    pack_kv_str(pk, "purpose", purposes[rng_below(&r->rng, N_PURPOSES)]);
    pack_str(pk, "reserve");
    msgpack_pack_true(pk);
}

static void pack_estimate(run *r, conn *c, msgpack_packer *pk) {
    unsigned m = rng_below(&r->rng, N_MODELS);
    begin_request(c, pk, K_ESTIMATE, "estimate", 4);
    pack_kv_str(pk, "provider", models[m].provider);
    pack_kv_str(pk, "model", models[m].model);
    pack_kv_int(pk, "input_tokens", 100 + rng_below(&r->rng, 2000));
    pack_kv_int(pk, "output_tokens", 50 + rng_below(&r->rng, 1000));
}

static void pack_settle(run *r, conn *c, msgpack_packer *pk) {
    const char *res = c->settles[c->settle_head];
    begin_request(c, pk, K_SETTLE, "settle", 3);
    snprintf(c->slots[(c->next_msgid - 1) % c->slot_cap].res, RES_MAX, "%s", res);
    pack_kv_str(pk, "reservation", res);
    pack_kv_int(pk, "input_tokens", 100 + rng_below(&r->rng, 2000));
    pack_kv_int(pk, "output_tokens", 20 + rng_below(&r->rng, 500));
    c->settle_head = (c->settle_head + 1) % SETTLE_QUEUE;
    c->settle_len--;
}

/* One request of the workload: a waiting settle first, else the chosen method. */
static void pack_one(run *r, conn *c, msgpack_packer *pk) {
    if (c->settle_len > 0) {
        pack_settle(r, c, pk);
    } else if (r->o->method == M_CHECK) {
        pack_check(r, c, pk);
    } else if (r->o->method == M_ESTIMATE) {
        pack_estimate(r, c, pk);
    } else {
        begin_request(c, pk, K_PING, "ping", 0);
    }
}

static void conn_want_out(run *r, conn *c, bool want) {
    if (c->want_out == want) return;
    struct epoll_event ev = {.events = EPOLLIN | (want ? EPOLLOUT : 0u), .data.ptr = c};
    if (epoll_ctl(r->epfd, EPOLL_CTL_MOD, c->fd, &ev) < 0) die("epoll_ctl failed");
    c->want_out = want;
}

static void conn_close(run *r, conn *c, const char *why);

static void conn_flush(run *r, conn *c) {
    while (c->out_off < c->out_len) {
        ssize_t n = write(c->fd, c->out + c->out_off, c->out_len - c->out_off);
        if (n > 0) {
            c->out_off += (size_t)n;
        } else if (n < 0 && errno == EINTR) {
            continue;
        } else if (n < 0 && errno == EAGAIN) {
            conn_want_out(r, c, true);
            return;
        } else {
            conn_close(r, c, "write_failed");
            return;
        }
    }
    c->out_off = c->out_len = 0;
    conn_want_out(r, c, false);
}

static bool may_send(run *r) {
    if (r->stopping) return false;
    if (r->o->requests > 0 && r->sent >= (uint64_t)r->o->requests) return false;
    return true;
}

/* Sends the next batch of up to `depth` requests when the previous one is answered. */
static void conn_send_batch(run *r, conn *c) {
    if (c->dead || c->inflight > 0) return;
    msgpack_packer pk;
    msgpack_packer_init(&pk, c, out_write);
    for (int i = 0; i < r->o->depth && may_send(r); i++) {
        pack_one(r, c, &pk);
        r->sent++;
    }
    if (c->inflight == 0) return;
    c->batch_ns = now_ns();
    conn_flush(r, c);
}

/* ---------------------------------------------------------------- replies */

static const msgpack_object *map_get(const msgpack_object *map, const char *key) {
    if (map->type != MSGPACK_OBJECT_MAP) return NULL;
    size_t n = strlen(key);
    for (uint32_t i = 0; i < map->via.map.size; i++) {
        const msgpack_object *k = &map->via.map.ptr[i].key;
        if (k->type == MSGPACK_OBJECT_STR && k->via.str.size == n &&
            memcmp(k->via.str.ptr, key, n) == 0)
            return &map->via.map.ptr[i].val;
    }
    return NULL;
}

static bool str_is(const msgpack_object *o, const char *s) {
    size_t n = strlen(s);
    return o && o->type == MSGPACK_OBJECT_STR && o->via.str.size == n &&
           memcmp(o->via.str.ptr, s, n) == 0;
}

static void count_error(run *r, const char *code, size_t len) {
    stats *st = &r->st;
    st->errors++;
    if (len >= sizeof st->codes[0]) len = sizeof st->codes[0] - 1;
    for (int i = 0; i < MAX_CODES; i++) {
        if (st->code_count[i] == 0) {
            memcpy(st->codes[i], code, len);
            st->codes[i][len] = '\0';
        }
        if (strncmp(st->codes[i], code, len) == 0 && st->codes[i][len] == '\0') {
            st->code_count[i]++;
            return;
        }
    }
}

static void count_error_obj(run *r, const msgpack_object *err) {
    const msgpack_object *code = map_get(err, "code");
    if (code && code->type == MSGPACK_OBJECT_STR)
        count_error(r, code->via.str.ptr, code->via.str.size);
    else
        count_error(r, "malformed_error", 15);
}

static void count_decision(run *r, const msgpack_object *res) {
    const msgpack_object *d = map_get(res, "decision");
    if (str_is(d, "allow"))
        r->st.decisions[0]++;
    else if (str_is(d, "throttle"))
        r->st.decisions[1]++;
    else if (str_is(d, "refuse"))
        r->st.decisions[2]++;
    else
        count_error(r, "malformed_check_result", 22);
}

/* Counts the decision (in the measured window) and queues the settle of its hold. */
static void on_check_result(run *r, conn *c, const msgpack_object *res, bool measured) {
    if (measured) count_decision(r, res);
    const msgpack_object *rv = map_get(res, "reservation");
    if (!rv || rv->type != MSGPACK_OBJECT_STR || rv->via.str.size >= RES_MAX) return;
    double u = (double)(rng_next(&r->rng) >> 11) / 9007199254740992.0;
    if (r->o->settle <= 0 || u >= r->o->settle || r->stopping) return;
    if (c->settle_len == SETTLE_QUEUE) {
        r->st.settle_dropped++;
        return;
    }
    char *dst = c->settles[(c->settle_head + c->settle_len) % SETTLE_QUEUE];
    memcpy(dst, rv->via.str.ptr, rv->via.str.size);
    dst[rv->via.str.size] = '\0';
    c->settle_len++;
}

static void on_message(run *r, conn *c, const msgpack_object *m, uint64_t t) {
    if (m->type != MSGPACK_OBJECT_ARRAY || m->via.array.size < 3) {
        count_error(r, "malformed_reply", 15);
        return;
    }
    const msgpack_object *a = m->via.array.ptr;
    if (a[0].type == MSGPACK_OBJECT_POSITIVE_INTEGER && a[0].via.u64 == 2) {
        /* [2, "error", [{code, message}]]: the server could not answer a request */
        const msgpack_object *p = &a[2];
        if (p->type == MSGPACK_OBJECT_ARRAY && p->via.array.size == 1)
            count_error_obj(r, &p->via.array.ptr[0]);
        else
            count_error(r, "notification", 12);
        return;
    }
    if (m->via.array.size != 4 || a[1].type != MSGPACK_OBJECT_POSITIVE_INTEGER) {
        count_error(r, "malformed_reply", 15);
        return;
    }
    uint32_t id = (uint32_t)a[1].via.u64;
    slot *s = &c->slots[id % c->slot_cap];
    if (!s->busy || s->msgid != id) {
        count_error(r, "unknown_msgid", 13);
        return;
    }
    s->busy = false;
    c->inflight--;
    bool measured = t >= r->t_measure && (r->o->requests > 0 || t <= r->t_end);
    if (a[2].type != MSGPACK_OBJECT_NIL) {
        count_error_obj(r, &a[2]);
    } else if (s->kind == K_CHECK) {
        on_check_result(r, c, &a[3], measured);
    } else if (s->kind == K_SETTLE && r->ack) {
        fprintf(r->ack, "%s\n", s->res);
    }
    if (measured || s->kind == K_SETUP) {
        r->st.done[s->kind]++;
        hist_record(&r->st.hist, t - c->batch_ns);
    }
}

static void conn_read(run *r, conn *c) {
    for (;;) {
        if (msgpack_unpacker_buffer_capacity(&c->up) < READ_CHUNK / 4 &&
            !msgpack_unpacker_reserve_buffer(&c->up, READ_CHUNK))
            die("out of memory");
        size_t cap = msgpack_unpacker_buffer_capacity(&c->up);
        ssize_t n = read(c->fd, msgpack_unpacker_buffer(&c->up), cap);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && errno == EAGAIN) break;
        if (n <= 0) {
            conn_close(r, c, n == 0 ? "closed_by_server" : "read_failed");
            return;
        }
        msgpack_unpacker_buffer_consumed(&c->up, (size_t)n);
        if ((size_t)n < cap) break; /* short read: the socket is drained */
    }
    uint64_t t = now_ns();
    msgpack_unpack_return ret;
    while ((ret = msgpack_unpacker_next(&c->up, &c->msg)) == MSGPACK_UNPACK_SUCCESS)
        on_message(r, c, &c->msg.data, t);
    if (ret == MSGPACK_UNPACK_PARSE_ERROR) conn_close(r, c, "unparsable_reply");
}

static void conn_close(run *r, conn *c, const char *why) {
    if (c->dead) return;
    count_error(r, why, strlen(why));
    for (unsigned i = 0; i < c->slot_cap; i++)
        if (c->slots[i].busy && c->slots[i].kind == K_SETTLE) r->st.settle_unanswered++;
    epoll_ctl(r->epfd, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    c->dead = true;
    c->inflight = 0;
}

/* Authenticate a fresh (still blocking) connection with token, before the load:
 * one auth request, one reply, which must not be an error. */
static void conn_auth(int fd, const char *token) {
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_array(&pk, 4);
    msgpack_pack_int(&pk, 0);
    msgpack_pack_uint32(&pk, 0);
    msgpack_pack_str_with_body(&pk, "auth", 4);
    msgpack_pack_array(&pk, 1);
    msgpack_pack_map(&pk, 1);
    pack_kv_str(&pk, "token", token);
    if (write(fd, sb.data, sb.size) != (ssize_t)sb.size)
        die("auth: write failed");
    msgpack_sbuffer_destroy(&sb);
    msgpack_unpacker up;
    msgpack_unpacked msg;
    if (!msgpack_unpacker_init(&up, 4096))
        die("out of memory");
    msgpack_unpacked_init(&msg);
    while (msgpack_unpacker_next(&up, &msg) != MSGPACK_UNPACK_SUCCESS) {
        msgpack_unpacker_reserve_buffer(&up, 4096);
        ssize_t n = read(fd, msgpack_unpacker_buffer(&up), msgpack_unpacker_buffer_capacity(&up));
        if (n <= 0)
            die("auth: no reply");
        msgpack_unpacker_buffer_consumed(&up, (size_t)n);
    }
    const msgpack_object *a = msg.data.via.array.ptr;
    if (msg.data.type != MSGPACK_OBJECT_ARRAY || msg.data.via.array.size != 4 ||
        a[2].type != MSGPACK_OBJECT_NIL)
        die("auth: the key was refused");
    msgpack_unpacked_destroy(&msg);
    msgpack_unpacker_destroy(&up);
}

static int conn_open(run *r, conn *c) {
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)r->o->port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    c->fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (c->fd < 0) return -1;
    if (connect(c->fd, (struct sockaddr *)&sa, sizeof sa) < 0) {
        close(c->fd);
        return -1;
    }
    int one = 1;
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    const char *token = r->o->key ? r->o->key : r->o->admin_token;
    if (token && !r->o->setup) conn_auth(c->fd, token);
    fcntl(c->fd, F_SETFL, fcntl(c->fd, F_GETFL) | O_NONBLOCK);
    c->slot_cap = 1;
    while (c->slot_cap < (unsigned)r->o->depth * 2 + 8)
        c->slot_cap *= 2;
    c->slots = calloc(c->slot_cap, sizeof *c->slots);
    c->settles = malloc(SETTLE_QUEUE * sizeof *c->settles);
    if (!c->slots || !c->settles || !msgpack_unpacker_init(&c->up, READ_CHUNK))
        die("out of memory");
    msgpack_unpacked_init(&c->msg);
    c->next_msgid = 1;
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
    return epoll_ctl(r->epfd, EPOLL_CTL_ADD, c->fd, &ev);
}

static void conn_destroy(conn *c) {
    if (!c->dead) close(c->fd);
    msgpack_unpacked_destroy(&c->msg);
    msgpack_unpacker_destroy(&c->up);
    free(c->out);
    free(c->slots);
    free(c->settles);
}

/* ------------------------------------------------------------------- loop */

static unsigned total_inflight(const run *r) {
    unsigned n = 0;
    for (int i = 0; i < r->o->connections; i++)
        n += r->conns[i].inflight;
    return n;
}

static void poll_once(run *r, int timeout_ms) {
    struct epoll_event evs[256];
    int n = epoll_wait(r->epfd, evs, 256, timeout_ms);
    for (int i = 0; i < n; i++) {
        conn *c = evs[i].data.ptr;
        if (!c->dead && (evs[i].events & EPOLLOUT)) conn_flush(r, c);
        if (!c->dead && (evs[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR))) conn_read(r, c);
        if (!c->dead && c->inflight == 0) conn_send_batch(r, c);
    }
}

static bool all_dead(const run *r) {
    for (int i = 0; i < r->o->connections; i++)
        if (!r->conns[i].dead) return false;
    return true;
}

static long long proc_cpu_ticks(int pid);
static double self_cpu_s(void);

/* CPU readings when the measured window closes, before replies in flight drain. */
static void mark_end(run *r) {
    r->server_ticks_end = r->o->server_pid ? proc_cpu_ticks(r->o->server_pid) : -1;
    r->self_cpu_end = self_cpu_s();
}

static void run_loop(run *r) {
    uint64_t hard_end =
        r->o->requests > 0 ? r->t_start + (uint64_t)(r->o->timeout_s * 1e9) : r->t_end;
    for (int i = 0; i < r->o->connections; i++)
        conn_send_batch(r, &r->conns[i]);
    while (!all_dead(r)) {
        uint64_t t = now_ns();
        if (t >= hard_end) break;
        if (r->o->requests > 0 && !may_send(r) && total_inflight(r) == 0) break;
        poll_once(r, (int)((hard_end - t) / 1000000 + 1));
    }
    r->stopping = true;
    mark_end(r);
    uint64_t drain_end = now_ns() + (uint64_t)(DRAIN_S * 1e9);
    while (total_inflight(r) > 0 && now_ns() < drain_end && !all_dead(r))
        poll_once(r, 10);
    uint64_t left = total_inflight(r);
    for (uint64_t i = 0; i < left; i++)
        count_error(r, "unanswered", 10);
}

/* ------------------------------------------------------------ server cpu */

/* utime + stime of a process in clock ticks (all its threads), -1 if unreadable. */
static long long proc_cpu_ticks(int pid) {
    char path[64], buf[4096];
    snprintf(path, sizeof path, "/proc/%d/stat", pid);
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    char *p = strrchr(buf, ')');
    if (!p) return -1;
    unsigned long long ut = 0, st = 0;
    /* after ")": state(3) ppid pgrp session tty_nr tpgid flags minflt cminflt majflt
     * cmajflt utime(14) stime(15) */
    if (sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &ut, &st) != 2)
        return -1;
    return (long long)(ut + st);
}

static double self_cpu_s(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec * 1e-6 +
           (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec * 1e-6;
}

/* ---------------------------------------------------------------- report */

static uint64_t total_done(const stats *st) {
    uint64_t n = 0;
    for (int k = 0; k < N_KINDS; k++)
        n += st->done[k];
    return n;
}

static void report(const run *r, double secs, double server_cpu_s, double client_cpu_s) {
    const opts *o = r->o;
    const stats *st = &r->st;
    uint64_t n = total_done(st);
    double rps = secs > 0 ? (double)n / secs : 0;
    printf("loadgen: 127.0.0.1:%d, %d connections, pipeline %d, %.2f s measured\n", o->port,
           o->connections, o->depth, secs);
    printf("requests   %12" PRIu64 "  %10.0f/s\n", n, rps);
    for (int k = 0; k < N_KINDS; k++)
        if (st->done[k])
            printf("  %-8s %12" PRIu64 "  %10.0f/s\n", kind_names[k], st->done[k],
                   (double)st->done[k] / secs);
    if (st->done[K_CHECK])
        printf("decisions  allow %" PRIu64 "  throttle %" PRIu64 "  refuse %" PRIu64 "\n",
               st->decisions[0], st->decisions[1], st->decisions[2]);
    printf("latency us p50 %.1f  p90 %.1f  p99 %.1f  p99.9 %.1f  max %.1f\n",
           (double)hist_percentile(&st->hist, 50) / 1e3,
           (double)hist_percentile(&st->hist, 90) / 1e3,
           (double)hist_percentile(&st->hist, 99) / 1e3,
           (double)hist_percentile(&st->hist, 99.9) / 1e3, (double)st->hist.max / 1e3);
    printf("errors     %" PRIu64 "\n", st->errors);
    for (int i = 0; i < MAX_CODES && st->code_count[i]; i++)
        printf("  %-24s %" PRIu64 "\n", st->codes[i], st->code_count[i]);
    if (st->settle_dropped)
        printf("settles not sent (queue full): %" PRIu64 "\n", st->settle_dropped);
    if (st->settle_unanswered)
        printf("settles in flight when the connection died: %" PRIu64 "\n", st->settle_unanswered);
    if (server_cpu_s >= 0 && n)
        printf("server cpu %.2f us/request (pid %d, %.2f s)\n", server_cpu_s * 1e6 / (double)n,
               o->server_pid, server_cpu_s);
    if (n) printf("client cpu %.2f us/request\n", client_cpu_s * 1e6 / (double)n);
    if (o->kv)
        printf("RESULT rps=%.0f check_rps=%.0f settle_rps=%.0f p50_us=%.1f p90_us=%.1f "
               "p99_us=%.1f p999_us=%.1f errors=%" PRIu64 " server_cpu_us=%.2f "
               "client_cpu_us=%.2f allow=%" PRIu64 " refuse=%" PRIu64 " settles=%" PRIu64
               " settles_unanswered=%" PRIu64 "\n",
               rps, (double)st->done[K_CHECK] / secs, (double)st->done[K_SETTLE] / secs,
               (double)hist_percentile(&st->hist, 50) / 1e3,
               (double)hist_percentile(&st->hist, 90) / 1e3,
               (double)hist_percentile(&st->hist, 99) / 1e3,
               (double)hist_percentile(&st->hist, 99.9) / 1e3, st->errors,
               server_cpu_s >= 0 && n ? server_cpu_s * 1e6 / (double)n : -1.0,
               n ? client_cpu_s * 1e6 / (double)n : -1.0, st->decisions[0], st->decisions[2],
               st->done[K_SETTLE], st->settle_unanswered);
}

/* ----------------------------------------------------------------- setup */

/* Creates budgets through the admin API on one connection: auth, then budget.set
 * for `org:*` (one) or for user:u0 .. user:u<users-1> (users). */
static int run_setup(run *r) {
    const opts *o = r->o;
    bool per_user = strcmp(o->setup, "users") == 0;
    long total = per_user ? o->users : 1, next = 0;
    conn *c = &r->conns[0];
    r->stopping = true; /* no workload batches on this connection */
    msgpack_packer pk;
    msgpack_packer_init(&pk, c, out_write);
    begin_request(c, &pk, K_SETUP, "auth", 1);
    pack_kv_str(&pk, "token", o->admin_token);
    uint64_t deadline = now_ns() + (uint64_t)(o->timeout_s * 1e9);
    while ((next < total || c->inflight > 0) && !c->dead && now_ns() < deadline) {
        while (next < total && c->inflight < SETUP_INFLIGHT) {
            char sel[32];
            if (per_user)
                snprintf(sel, sizeof sel, "user:u%ld", next);
            else
                snprintf(sel, sizeof sel, "org:*");
            begin_request(c, &pk, K_SETUP, "budget.set", 4);
            pack_kv_str(&pk, "selector", sel);
            pack_kv_str(&pk, "metric", o->budget_metric);
            pack_kv_str(&pk, "window", o->budget_window);
            pack_str(&pk, "limit");
            msgpack_pack_double(&pk, o->budget_limit);
            next++;
        }
        conn_flush(r, c);
        poll_once(r, 100);
    }
    printf("setup: %" PRIu64 " replies (auth + %ld budget.set %s), %" PRIu64 " errors\n",
           r->st.done[K_SETUP], total, per_user ? "user:u<i>" : "org:*", r->st.errors);
    for (int i = 0; i < MAX_CODES && r->st.code_count[i]; i++)
        printf("  %-24s %" PRIu64 "\n", r->st.codes[i], r->st.code_count[i]);
    return r->st.errors == 0 && r->st.done[K_SETUP] == (uint64_t)total + 1 ? 0 : 1;
}

/* ----------------------------------------------------------------- args */

static void usage(FILE *out) {
    fprintf(out,
            "usage: loadgen [options]\n"
            "Drives discernd on 127.0.0.1 over MessagePack-RPC and reports requests/s,\n"
            "latency percentiles and errors by wire code.\n\n"
            "  --port P             discernd TCP port on 127.0.0.1 (default 7878)\n"
            "  -c, --connections N  connections (default 50)\n"
            "  -P, --pipeline D     requests per batch per connection (default 1)\n"
            "  -d, --duration S     measured seconds (default 10, at most 3600)\n"
            "  -n, --requests N     send N requests instead of running for a duration\n"
            "  --warmup S           seconds run before measuring (default 0)\n"
            "  --timeout S          bound of a -n run or of --setup-budgets (default 60)\n"
            "  --method M           check (default; with settles), estimate or ping\n"
            "  --settle F           fraction of reservations settled (default 1)\n"
            "  --users N --teams N --orgs N   subjects (default 10000 / 100 / 5)\n"
            "  --seed N             random seed (default 1)\n"
            "  --sequential         checks take users u0, u1, ... in turn (wrapping) instead\n"
            "                       of at random, so -n covers every user\n"
            "  --server-pid PID     report the server's CPU per request (/proc/PID/stat)\n"
            "  --kv                 also print one 'RESULT key=value ...' line\n"
            "  --setup-budgets one|users   create budgets and exit: 'one' = org:*,\n"
            "                       'users' = user:u0..user:u<N-1> (needs --admin-token)\n"
            "  --admin-token T      token for auth (or DISCERN_ADMIN_TOKEN); load connections\n"
            "                       authenticate with it when no --key is given\n"
            "  --key K              API key every load connection authenticates with\n"
            "                       (or DISCERN_KEY; discernd needs one over TCP)\n"
            "  --ack-log FILE       write the reservation of every acknowledged settle\n"
            "  --budget-limit X     limit of each budget (default 1e9)\n"
            "  --budget-metric M    metric of each budget (default gco2e)\n"
            "  --budget-window W    window of each budget (default month)\n"
            "  -h, --help           show this help\n"
            "Exit status: 0 when every request was answered without error, 1 otherwise,\n"
            "2 on bad usage or when the server cannot be reached.\n");
}

static double parse_num(const char *flag, const char *v, double lo, double hi) {
    char *end;
    errno = 0;
    double d = v ? strtod(v, &end) : NAN;
    if (!v || errno || end == v || *end || !(d >= lo && d <= hi)) {
        fprintf(stderr, "loadgen: %s: expected a number in [%g, %g], got '%s'\n", flag, lo, hi,
                v ? v : "(nothing)");
        exit(2);
    }
    return d;
}

static int parse_args(opts *o, int argc, char **argv) {
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
#define FLAG(s, l) (strcmp(a, s) == 0 || strcmp(a, l) == 0)
        if (FLAG("-h", "--help")) {
            usage(stdout);
            exit(0);
        } else if (FLAG("--port", "--port")) {
            o->port = (int)parse_num(a, v, 1, 65535), i++;
        } else if (FLAG("-c", "--connections")) {
            o->connections = (int)parse_num(a, v, 1, MAX_CONNECTIONS), i++;
        } else if (FLAG("-P", "--pipeline")) {
            o->depth = (int)parse_num(a, v, 1, MAX_DEPTH), i++;
        } else if (FLAG("-d", "--duration")) {
            o->duration_s = parse_num(a, v, 0.01, MAX_DURATION_S), i++;
        } else if (FLAG("-n", "--requests")) {
            o->requests = (long)parse_num(a, v, 1, 1e10), i++;
        } else if (FLAG("--warmup", "--warmup")) {
            o->warmup_s = parse_num(a, v, 0, 60), i++;
        } else if (FLAG("--timeout", "--timeout")) {
            o->timeout_s = parse_num(a, v, 0.1, MAX_DURATION_S), i++;
        } else if (FLAG("--method", "--method")) {
            if (v && strcmp(v, "check") == 0)
                o->method = M_CHECK;
            else if (v && strcmp(v, "estimate") == 0)
                o->method = M_ESTIMATE;
            else if (v && strcmp(v, "ping") == 0)
                o->method = M_PING;
            else {
                fprintf(stderr, "loadgen: --method: expected check, estimate or ping, got '%s'\n",
                        v ? v : "(nothing)");
                exit(2);
            }
            i++;
        } else if (FLAG("--settle", "--settle")) {
            o->settle = parse_num(a, v, 0, 1), i++;
        } else if (FLAG("--users", "--users")) {
            o->users = (int)parse_num(a, v, 1, 1e7), i++;
        } else if (FLAG("--teams", "--teams")) {
            o->teams = (int)parse_num(a, v, 1, 1e7), i++;
        } else if (FLAG("--orgs", "--orgs")) {
            o->orgs = (int)parse_num(a, v, 1, 1e7), i++;
        } else if (FLAG("--seed", "--seed")) {
            o->seed = (unsigned long)parse_num(a, v, 1, 4e9), i++;
        } else if (FLAG("--server-pid", "--server-pid")) {
            o->server_pid = (int)parse_num(a, v, 1, INT_MAX), i++;
        } else if (FLAG("--kv", "--kv")) {
            o->kv = true;
        } else if (FLAG("--sequential", "--sequential")) {
            o->sequential = true;
        } else if (FLAG("--setup-budgets", "--setup-budgets")) {
            if (!v || (strcmp(v, "one") != 0 && strcmp(v, "users") != 0)) {
                fprintf(stderr, "loadgen: --setup-budgets: expected one or users, got '%s'\n",
                        v ? v : "(nothing)");
                exit(2);
            }
            o->setup = v, i++;
        } else if (FLAG("--admin-token", "--admin-token")) {
            if (!v) die("--admin-token: missing value");
            o->admin_token = v, i++;
        } else if (FLAG("--ack-log", "--ack-log")) {
            if (!v) die("--ack-log: missing value");
            o->ack_log = v, i++;
        } else if (FLAG("--key", "--key")) {
            if (!v) die("--key: missing value");
            o->key = v, i++;
        } else if (FLAG("--budget-limit", "--budget-limit")) {
            o->budget_limit = parse_num(a, v, 0, 1e12), i++;
        } else if (FLAG("--budget-metric", "--budget-metric")) {
            if (!v) die("--budget-metric: missing value");
            o->budget_metric = v, i++;
        } else if (FLAG("--budget-window", "--budget-window")) {
            if (!v) die("--budget-window: missing value");
            o->budget_window = v, i++;
        } else {
            fprintf(stderr, "loadgen: unknown option '%s' (see --help)\n", a);
            exit(2);
        }
#undef FLAG
    }
    if (o->teams > o->users || o->orgs > o->teams) die("need --orgs <= --teams <= --users");
    if (o->setup && !o->admin_token)
        die("--setup-budgets needs --admin-token (or DISCERN_ADMIN_TOKEN)");
    return 0;
}

/* ------------------------------------------------------------------ main */

static int run_load(run *r) {
    const opts *o = r->o;
    long long cpu0 = o->server_pid ? proc_cpu_ticks(o->server_pid) : -1;
    double self0 = self_cpu_s();
    r->t_start = now_ns();
    r->t_measure = r->t_start + (uint64_t)(o->warmup_s * 1e9);
    r->t_end = r->t_measure + (uint64_t)(o->duration_s * 1e9);
    if (o->requests > 0) r->t_measure = r->t_start;
    long long cpuw = cpu0;
    double selfw = self0;
    if (o->warmup_s > 0 && o->requests == 0) {
        /* run the warm-up, then take the CPU readings at the start of measurement */
        uint64_t keep = r->t_end;
        r->t_end = r->t_measure;
        for (int i = 0; i < o->connections; i++)
            conn_send_batch(r, &r->conns[i]);
        while (now_ns() < r->t_measure && !all_dead(r))
            poll_once(r, 1);
        r->t_end = keep;
        cpuw = o->server_pid ? proc_cpu_ticks(o->server_pid) : -1;
        selfw = self_cpu_s();
    }
    run_loop(r);
    uint64_t t_stop = now_ns();
    long long cpu1 = r->server_ticks_end;
    double secs = o->requests > 0 ? (double)(t_stop - r->t_start) / 1e9 : o->duration_s;
    double server_cpu =
        cpu1 >= 0 && cpuw >= 0 ? (double)(cpu1 - cpuw) / (double)sysconf(_SC_CLK_TCK) : -1.0;
    report(r, secs, server_cpu, r->self_cpu_end - selfw);
    return r->st.errors == 0 && total_done(&r->st) > 0 ? 0 : 1;
}

int main(int argc, char **argv) {
    opts o = {.port = 7878,
              .connections = 50,
              .depth = 1,
              .duration_s = 10,
              .timeout_s = 60,
              .method = M_CHECK,
              .settle = 1,
              .users = 10000,
              .teams = 100,
              .orgs = 5,
              .seed = 1,
              .budget_limit = 1e9,
              .budget_metric = "gco2e",
              .budget_window = "month"};
    o.admin_token = getenv("DISCERN_ADMIN_TOKEN");
    o.key = getenv("DISCERN_KEY");
    parse_args(&o, argc, argv);
    if (o.setup) {
        o.connections = 1;
        o.depth = SETUP_INFLIGHT;
    }
    run r = {.o = &o, .rng = o.seed * 0x9E3779B97F4A7C15ULL + 1};
    r.epfd = epoll_create1(EPOLL_CLOEXEC);
    r.conns = calloc((size_t)o.connections, sizeof *r.conns);
    if (r.epfd < 0 || !r.conns) die("cannot set up epoll");
    for (int i = 0; i < o.connections; i++) {
        if (conn_open(&r, &r.conns[i]) < 0) {
            fprintf(stderr, "loadgen: cannot connect to 127.0.0.1:%d: %s\n", o.port,
                    strerror(errno));
            for (int j = 0; j < i; j++)
                conn_destroy(&r.conns[j]);
            free(r.conns);
            close(r.epfd);
            return 2;
        }
    }
    if (o.ack_log && !(r.ack = fopen(o.ack_log, "w"))) die("--ack-log: cannot open the file");
    int rc = o.setup ? run_setup(&r) : run_load(&r);
    if (r.ack && fclose(r.ack) != 0) die("--ack-log: cannot write the file");
    for (int i = 0; i < o.connections; i++)
        conn_destroy(&r.conns[i]);
    free(r.conns);
    close(r.epfd);
    return rc;
}
