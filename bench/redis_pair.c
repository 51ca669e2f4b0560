/*
 * redis_pair.c - drives Redis the way loadgen drives discernd: a reserve, then a
 * settle of the actual, per decision, as two EVALSHA calls.
 *
 *   redis_pair --port P --reserve SHA --settle SHA [-c CONNECTIONS] [-P DEPTH]
 *              [-d SECONDS] [--warmup S] [--keys N] [--server-pid PID] [--kv]
 *
 * Why: redis-benchmark sends one command shape; the settle needs the id its reserve
 * was given and must only follow an allowed reserve, which it cannot express. This
 * speaks RESP itself over N connections to 127.0.0.1, closed loop like loadgen: each
 * connection writes a batch of D pipelined calls and waits for all D replies; a call
 * is the settle of a reservation the previous batches got allowed when one waits,
 * else a new reserve (bench/redis_reserve.lua, bench/redis_settle.lua). Budgets are
 * budget:000000000000 (--keys 1) or a random one of budget:0..N-1.
 *
 * Prints calls/s, decisions (reserves) and settles per second, latency percentiles
 * (each call from its batch's write to its reply, every sample kept and sorted),
 * errors, and with --server-pid the server's CPU per call from /proc/PID/stat. --kv
 * adds one `RESULT key=value ...` line with loadgen's keys (check_rps = decisions/s).
 * Single-threaded, non-blocking sockets, epoll; it stops by itself.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include <arpa/inet.h>

#define MAX_CONNECTIONS 2000
#define MAX_DEPTH 256
#define OUT_MAX (MAX_DEPTH * 256)
#define IN_CHUNK 65536
#define QUEUE 1024 /* per connection: allowed reservations waiting for their settle */
#define DRAIN_S 10.0
#define HOLD_TTL_S 600

enum kind { K_RESERVE, K_SETTLE };

typedef struct opts {
    int port, connections, depth, keys, server_pid;
    double duration_s, warmup_s;
    const char *reserve_sha, *settle_sha;
    bool kv;
} opts;

typedef struct conn {
    int fd;
    char out[OUT_MAX];
    size_t out_len, out_off;
    char *in;
    size_t in_len, in_cap;
    unsigned char kinds[MAX_DEPTH]; /* of the calls in flight, in order */
    uint64_t seqs[MAX_DEPTH];       /* their reservations' sequence numbers */
    unsigned inflight, answered;
    uint64_t batch_ns, next_seq;
    uint64_t queue[QUEUE]; /* sequence numbers of allowed reservations */
    unsigned q_head, q_len;
    int index;
    bool dead;
} conn;

typedef struct stats {
    uint64_t reserves, settles, allowed, refused, errors;
    uint32_t *lat_ns;
    size_t n_lat, cap_lat;
    char first_error[160];
} stats;

typedef struct run {
    const opts *o;
    int epfd;
    conn *conns;
    uint64_t t_measure, t_end, nonce, rng;
    stats st;
    bool stopping;
} run;

static void die(const char *msg) {
    fprintf(stderr, "redis_pair: %s\n", msg);
    exit(2);
}

static uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static uint64_t rng_next(uint64_t *s) { /* xorshift64* */
    *s ^= *s >> 12;
    *s ^= *s << 25;
    *s ^= *s >> 27;
    return *s * 2685821657736338717ull;
}

/* ------------------------------------------------------------------ RESP out */

static void out_arg(conn *c, const char *s) {
    size_t n = strlen(s);
    if (c->out_len + n + 32 > OUT_MAX) die("batch does not fit the output buffer");
    c->out_len += (size_t)sprintf(c->out + c->out_len, "$%zu\r\n", n);
    memcpy(c->out + c->out_len, s, n);
    c->out_len += n;
    memcpy(c->out + c->out_len, "\r\n", 2);
    c->out_len += 2;
}

static void out_command(conn *c, int argc, const char *const *argv) {
    if (c->out_len + 16 > OUT_MAX) die("batch does not fit the output buffer");
    c->out_len += (size_t)sprintf(c->out + c->out_len, "*%d\r\n", argc);
    for (int i = 0; i < argc; i++)
        out_arg(c, argv[i]);
}

static void reservation_id(run *r, conn *c, uint64_t seq, char *buf, size_t n) {
    snprintf(buf, n, "%016" PRIx64 "-%d-%" PRIu64, r->nonce, c->index, seq);
}

static void add_reserve(run *r, conn *c) {
    char id[64], hold[80], budget[32], input[16], output[16], now[24], ttl[16];
    uint64_t seq = c->next_seq++;
    reservation_id(r, c, seq, id, sizeof id);
    snprintf(hold, sizeof hold, "hold:%s", id);
    unsigned k = r->o->keys > 1 ? (unsigned)(rng_next(&r->rng) % (uint64_t)r->o->keys) : 0;
    snprintf(budget, sizeof budget, "budget:%012u", k);
    snprintf(input, sizeof input, "%d", 1200);
    snprintf(output, sizeof output, "%d", 800);
    snprintf(now, sizeof now, "%lld", (long long)time(NULL));
    snprintf(ttl, sizeof ttl, "%d", HOLD_TTL_S);
    const char *argv[] = {
        "EVALSHA", r->o->reserve_sha, "2", hold, budget, id, "gpt-4o", input, output, now, ttl};
    out_command(c, 11, argv);
    c->seqs[c->inflight] = seq; /* queued for its settle when the reply says allowed */
    c->kinds[c->inflight++] = K_RESERVE;
}

static void add_settle(run *r, conn *c) {
    char id[64], hold[80], input[16], output[16];
    uint64_t seq = c->queue[c->q_head];
    c->q_head = (c->q_head + 1) % QUEUE;
    c->q_len--;
    reservation_id(r, c, seq, id, sizeof id);
    snprintf(hold, sizeof hold, "hold:%s", id);
    snprintf(input, sizeof input, "%d", 1200);
    snprintf(output, sizeof output, "%u", 20 + (unsigned)(rng_next(&r->rng) % 780));
    const char *argv[] = {"EVALSHA", r->o->settle_sha, "1", hold, id, input, output};
    out_command(c, 7, argv);
    c->kinds[c->inflight++] = K_SETTLE;
}

/* ------------------------------------------------------------------- RESP in */

/* Length of the reply at p (n bytes available), 0 when incomplete, -1 when
 * malformed. *type is its first byte, *value its integer (for ':'). */
static long parse_reply(const char *p, size_t n, char *type, long long *value) {
    const char *eol = memchr(p, '\n', n);
    if (!eol) return 0;
    if (eol == p || eol[-1] != '\r') return -1;
    long head = (long)(eol - p) + 1;
    *type = p[0];
    char *end;
    long long v = strtoll(p + 1, &end, 10);
    *value = v;
    switch (p[0]) {
    case '+':
    case '-':
        return head;
    case ':':
        return end == eol - 1 ? head : -1;
    case '$':
        if (end != eol - 1 || v < -1) return -1;
        if (v < 0) return head;
        return (size_t)head + (size_t)v + 2 <= n ? head + (long)v + 2 : 0;
    case '*': {
        if (end != eol - 1 || v < -1) return -1;
        long off = head;
        for (long long i = 0; i < v; i++) {
            char t;
            long long iv;
            long len = parse_reply(p + off, n - (size_t)off, &t, &iv);
            if (len <= 0) return len;
            off += len;
        }
        return off;
    }
    default:
        return -1;
    }
}

static void record_latency(stats *st, uint64_t ns) {
    if (st->n_lat == st->cap_lat) {
        st->cap_lat = st->cap_lat ? 2 * st->cap_lat : 1u << 20;
        st->lat_ns = realloc(st->lat_ns, st->cap_lat * sizeof *st->lat_ns);
        if (!st->lat_ns) die("out of memory for latency samples");
    }
    st->lat_ns[st->n_lat++] = ns > UINT32_MAX ? UINT32_MAX : (uint32_t)ns;
}

static void count_error(run *r, const char *p, long len) {
    r->st.errors++;
    if (!r->st.first_error[0])
        snprintf(r->st.first_error, sizeof r->st.first_error, "%.*s", (int)(len > 2 ? len - 2 : 0),
                 p);
}

static void on_reply(run *r, conn *c, const char *p, long len, char type, long long v, uint64_t t) {
    uint64_t seq = c->seqs[c->answered];
    enum kind k = (enum kind)c->kinds[c->answered++];
    bool measured = t >= r->t_measure && t <= r->t_end;
    if (type == '-') {
        if (measured) count_error(r, p, len);
    } else if (k == K_RESERVE && type == ':' && v == 1) {
        if (c->q_len < QUEUE && !r->stopping) c->queue[(c->q_head + c->q_len++) % QUEUE] = seq;
        if (measured) r->st.allowed++;
    } else if (k == K_RESERVE && type == ':' && v == 0) {
        if (measured) r->st.refused++;
    } else if (k == K_RESERVE) {
        if (measured) count_error(r, p, len);
    }
    if (!measured) return;
    if (k == K_RESERVE)
        r->st.reserves++;
    else
        r->st.settles++;
    record_latency(&r->st, t - c->batch_ns);
}

/* ------------------------------------------------------------- connections */

static void conn_close(run *r, conn *c, const char *why) {
    if (c->dead) return;
    fprintf(stderr, "redis_pair: connection %d: %s\n", c->index, why);
    epoll_ctl(r->epfd, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    c->dead = true;
    r->st.errors++;
}

static void want_out(run *r, conn *c, bool on) {
    struct epoll_event ev = {.events = EPOLLIN | (on ? EPOLLOUT : 0u), .data.ptr = c};
    epoll_ctl(r->epfd, EPOLL_CTL_MOD, c->fd, &ev);
}

static void conn_flush(run *r, conn *c) {
    while (c->out_off < c->out_len) {
        ssize_t n = write(c->fd, c->out + c->out_off, c->out_len - c->out_off);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && errno == EAGAIN) {
            want_out(r, c, true);
            return;
        }
        if (n <= 0) {
            conn_close(r, c, "write failed");
            return;
        }
        c->out_off += (size_t)n;
    }
    want_out(r, c, false);
}

/* A new batch: settles first (oldest allowed reservations), then reserves. */
static void conn_batch(run *r, conn *c) {
    c->out_len = c->out_off = 0;
    c->inflight = c->answered = 0;
    for (int i = 0; i < r->o->depth; i++) {
        if (c->q_len > 0)
            add_settle(r, c);
        else
            add_reserve(r, c);
    }
    c->batch_ns = now_ns();
    conn_flush(r, c);
}

static void conn_read(run *r, conn *c) {
    for (;;) {
        if (c->in_cap - c->in_len < IN_CHUNK / 4) {
            c->in_cap = c->in_cap ? 2 * c->in_cap : IN_CHUNK;
            c->in = realloc(c->in, c->in_cap);
            if (!c->in) die("out of memory");
        }
        ssize_t n = read(c->fd, c->in + c->in_len, c->in_cap - c->in_len);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && errno == EAGAIN) break;
        if (n <= 0) {
            conn_close(r, c, n == 0 ? "closed by the server" : "read failed");
            return;
        }
        c->in_len += (size_t)n;
    }
    uint64_t t = now_ns();
    size_t off = 0;
    while (c->answered < c->inflight) {
        char type;
        long long v;
        long len = parse_reply(c->in + off, c->in_len - off, &type, &v);
        if (len < 0) {
            conn_close(r, c, "unparsable reply");
            return;
        }
        if (len == 0) break;
        on_reply(r, c, c->in + off, len, type, v, t);
        off += (size_t)len;
    }
    memmove(c->in, c->in + off, c->in_len - off);
    c->in_len -= off;
    if (c->answered == c->inflight && !r->stopping) conn_batch(r, c);
}

static void conn_open(run *r, conn *c) {
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)r->o->port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    c->fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (c->fd < 0 || connect(c->fd, (struct sockaddr *)&sa, sizeof sa) < 0)
        die("cannot connect to 127.0.0.1");
    int one = 1;
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    fcntl(c->fd, F_SETFL, fcntl(c->fd, F_GETFL) | O_NONBLOCK);
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
    if (epoll_ctl(r->epfd, EPOLL_CTL_ADD, c->fd, &ev) < 0) die("epoll_ctl failed");
}

/* ------------------------------------------------------------------- report */

static double cpu_seconds(int pid) {
    char path[64], buf[1024];
    snprintf(path, sizeof path, "/proc/%d/stat", pid);
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    char *p = strrchr(buf, ')');
    unsigned long long ut = 0, stt = 0;
    /* after ") ": state, then fields 4..13; utime and stime are fields 14 and 15 */
    if (!p ||
        sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &ut, &stt) != 2)
        return -1;
    return (double)(ut + stt) / (double)sysconf(_SC_CLK_TCK);
}

static int cmp_u32(const void *a, const void *b) {
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return (x > y) - (x < y);
}

static double percentile_us(const stats *st, double q) {
    if (!st->n_lat) return 0;
    size_t i = (size_t)(q * (double)(st->n_lat - 1));
    return (double)st->lat_ns[i] / 1e3;
}

static void report(run *r, double secs, double server_cpu_s) {
    stats *st = &r->st;
    const opts *o = r->o;
    qsort(st->lat_ns, st->n_lat, sizeof *st->lat_ns, cmp_u32);
    uint64_t n = st->reserves + st->settles;
    double rps = (double)n / secs;
    double cpu_us = server_cpu_s >= 0 && n ? server_cpu_s * 1e6 / (double)n : -1;
    printf("redis_pair: %d connections, depth %d, %.1f s measured\n", o->connections, o->depth,
           secs);
    printf("calls      %12" PRIu64 "  %10.0f/s\n", n, rps);
    printf("  reserve  %12" PRIu64 "  %10.0f/s (allowed %" PRIu64 ", refused %" PRIu64 ")\n",
           st->reserves, (double)st->reserves / secs, st->allowed, st->refused);
    printf("  settle   %12" PRIu64 "  %10.0f/s\n", st->settles, (double)st->settles / secs);
    printf("latency us p50 %.1f  p90 %.1f  p99 %.1f  max %.1f\n", percentile_us(st, 0.5),
           percentile_us(st, 0.9), percentile_us(st, 0.99), percentile_us(st, 1.0));
    printf("errors     %" PRIu64 "%s%s\n", st->errors, st->first_error[0] ? "  first: " : "",
           st->first_error);
    if (cpu_us >= 0) printf("server cpu %.2f us/call (pid %d)\n", cpu_us, o->server_pid);
    if (o->kv)
        printf("RESULT rps=%.0f check_rps=%.0f settle_rps=%.0f p50_us=%.1f p90_us=%.1f "
               "p99_us=%.1f errors=%" PRIu64 " server_cpu_us=%.2f allow=%" PRIu64 " refuse=%" PRIu64
               "\n",
               rps, (double)st->reserves / secs, (double)st->settles / secs, percentile_us(st, 0.5),
               percentile_us(st, 0.9), percentile_us(st, 0.99), st->errors, cpu_us, st->allowed,
               st->refused);
}

/* ---------------------------------------------------------------------- main */

static void usage(FILE *f) {
    fputs("usage: redis_pair --port P --reserve SHA --settle SHA [-c CONNECTIONS] [-P DEPTH]\n"
          "                  [-d SECONDS] [--warmup S] [--keys N] [--server-pid PID] [--kv]\n"
          "  --reserve SHA, --settle SHA  the SCRIPT LOAD hashes of bench/redis_reserve.lua\n"
          "                       and bench/redis_settle.lua\n"
          "  -c N                 connections (default 50, at most 2000)\n"
          "  -P D                 calls in flight per connection (default 1, at most 256)\n"
          "  -d S                 measured seconds (default 10), after --warmup S (default 1)\n"
          "  --keys N             budgets: budget:000000000000 (1, default) or a random one\n"
          "                       of budget:0..N-1\n"
          "  --server-pid PID     report the server's CPU per call from /proc/PID/stat\n"
          "  --kv                 also print one 'RESULT key=value ...' line\n",
          f);
}

static long parse_long(const char *flag, const char *v, long lo, long hi) {
    char *end;
    long x = v ? strtol(v, &end, 10) : 0;
    if (!v || *end || x < lo || x > hi) {
        fprintf(stderr, "redis_pair: %s expects an integer in %ld..%ld\n", flag, lo, hi);
        exit(2);
    }
    return x;
}

static double parse_secs(const char *flag, const char *v) {
    char *end;
    double x = v ? strtod(v, &end) : 0;
    if (!v || *end || !(x >= 0 && x <= 3600)) {
        fprintf(stderr, "redis_pair: %s expects seconds in 0..3600\n", flag);
        exit(2);
    }
    return x;
}

static void parse_args(int argc, char **argv, opts *o) {
    *o = (opts){.connections = 50, .depth = 1, .keys = 1, .duration_s = 10, .warmup_s = 1};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            exit(0);
        } else if (!strcmp(a, "--kv")) {
            o->kv = true;
            continue;
        } else if (!strcmp(a, "--port")) {
            o->port = (int)parse_long(a, v, 1, 65535);
        } else if (!strcmp(a, "-c")) {
            o->connections = (int)parse_long(a, v, 1, MAX_CONNECTIONS);
        } else if (!strcmp(a, "-P")) {
            o->depth = (int)parse_long(a, v, 1, MAX_DEPTH);
        } else if (!strcmp(a, "--keys")) {
            o->keys = (int)parse_long(a, v, 1, 100000000);
        } else if (!strcmp(a, "--server-pid")) {
            o->server_pid = (int)parse_long(a, v, 1, 1L << 30);
        } else if (!strcmp(a, "-d")) {
            o->duration_s = parse_secs(a, v);
        } else if (!strcmp(a, "--warmup")) {
            o->warmup_s = parse_secs(a, v);
        } else if (!strcmp(a, "--reserve") && v) {
            o->reserve_sha = v;
        } else if (!strcmp(a, "--settle") && v) {
            o->settle_sha = v;
        } else {
            fprintf(stderr, "redis_pair: unknown option or missing value: '%s'\n", a);
            usage(stderr);
            exit(2);
        }
        i++;
    }
    if (!o->port || !o->reserve_sha || !o->settle_sha)
        die("--port, --reserve and --settle are required (see --help)");
    if (strlen(o->reserve_sha) > 64 || strlen(o->settle_sha) > 64) die("a SHA is at most 64 chars");
}

static void loop(run *r, uint64_t until) {
    struct epoll_event evs[256];
    while (now_ns() < until) {
        int n = epoll_wait(r->epfd, evs, 256, 50);
        if (n < 0 && errno != EINTR) die("epoll_wait failed");
        for (int i = 0; i < n; i++) {
            conn *c = evs[i].data.ptr;
            if (c->dead) continue;
            if (evs[i].events & EPOLLOUT) conn_flush(r, c);
            if (evs[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR)) conn_read(r, c);
        }
        if (r->stopping) {
            bool busy = false;
            for (int i = 0; i < r->o->connections && !busy; i++)
                busy = !r->conns[i].dead && r->conns[i].answered < r->conns[i].inflight;
            if (!busy) return;
        }
    }
}

int main(int argc, char **argv) {
    opts o;
    parse_args(argc, argv, &o);
    run r = {.o = &o, .nonce = now_ns() ^ ((uint64_t)getpid() << 32)};
    r.rng = r.nonce | 1;
    r.epfd = epoll_create1(EPOLL_CLOEXEC);
    r.conns = calloc((size_t)o.connections, sizeof *r.conns);
    if (r.epfd < 0 || !r.conns) die("cannot set up epoll or connections");
    for (int i = 0; i < o.connections; i++) {
        r.conns[i].index = i;
        conn_open(&r, &r.conns[i]);
    }
    uint64_t t0 = now_ns();
    r.t_measure = t0 + (uint64_t)(o.warmup_s * 1e9);
    r.t_end = r.t_measure + (uint64_t)(o.duration_s * 1e9);
    for (int i = 0; i < o.connections; i++)
        conn_batch(&r, &r.conns[i]);
    loop(&r, r.t_measure);
    double cpu0 = o.server_pid ? cpu_seconds(o.server_pid) : -1;
    loop(&r, r.t_end);
    double cpu1 = o.server_pid ? cpu_seconds(o.server_pid) : -1;
    r.stopping = true;
    loop(&r, r.t_end + (uint64_t)(DRAIN_S * 1e9));
    report(&r, o.duration_s, cpu0 >= 0 && cpu1 >= 0 ? cpu1 - cpu0 : -1);
    for (int i = 0; i < o.connections; i++) {
        if (!r.conns[i].dead) close(r.conns[i].fd);
        free(r.conns[i].in);
    }
    free(r.conns);
    free(r.st.lat_ns);
    close(r.epfd);
    return r.st.errors ? 1 : 0;
}
