/*
 * idle_conns.c - open many connections to discernd, ping each, hold them idle.
 *
 *   idle_conns --port P [-c N] [--hold S] [--window W] [--timeout S]
 *              [--ready-file PATH] [--kv]
 *
 * Why: the memory target counts connections as well as budgets ("10 000 connections
 * in under 200 MB RSS"). A connection only costs the server what it keeps for it
 * once it is accepted, handed to a worker and has answered a request, so this
 * program opens N TCP connections to 127.0.0.1:P (at most W connecting or waiting
 * for their first reply at a time, so the listen backlog never overflows), sends one
 * `ping` on each and checks its reply, then holds them all idle for S seconds and
 * finally pings every one again: a connection the server closed, or one that does
 * not answer, is counted as a failure. When all N have answered their first ping it
 * writes N to --ready-file, so a script can read the server's memory while they are
 * held.
 *
 * It raises its own open-file limit to the hard limit, and stops by itself: opening
 * and each round of pings are bounded by --timeout, the hold by --hold.
 * Exit status 0 when every connection answered both pings, 1 otherwise, 2 on bad
 * usage or when the file limit is too low.
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
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include <arpa/inet.h>

#include <msgpack.h>

#define MAX_CONNS 100000
#define READ_CHUNK 4096

enum state { S_NEW, S_CONNECTING, S_WAIT_PONG, S_IDLE, S_DEAD };

typedef struct conn {
    int fd;
    enum state state;
    uint32_t msgid; /* of the ping in flight */
    unsigned pongs; /* good ping replies */
    msgpack_unpacker up;
    bool up_init;
} conn;

typedef struct opts {
    int port;
    int n;
    double hold_s;
    int window;
    double timeout_s;
    const char *ready_file;
    bool kv;
} opts;

typedef struct run {
    const opts *o;
    conn *c;
    int epfd;
    int pending; /* connecting or waiting for a reply */
    uint64_t closed_by_server, bad_reply, connect_failed;
} run;

static uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void die(const char *what) {
    fprintf(stderr, "idle_conns: %s\n", what);
    exit(2);
}

/* Closes a connection for good, counting why in *counter. */
static void conn_kill(run *r, conn *c, uint64_t *counter) {
    if (c->state == S_DEAD)
        return;
    if (c->state == S_CONNECTING || c->state == S_WAIT_PONG)
        r->pending--;
    epoll_ctl(r->epfd, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    c->state = S_DEAD;
    (*counter)++;
}

/* Writes [0, msgid, "ping", [{}]] (14 bytes: one write on an empty socket buffer). */
static void conn_ping(run *r, conn *c) {
    uint8_t b[14] = {0x94, 0x00, 0xce, 0, 0, 0, 0, 0xa4, 'p', 'i', 'n', 'g', 0x91, 0x80};
    c->msgid++;
    b[3] = (uint8_t)(c->msgid >> 24);
    b[4] = (uint8_t)(c->msgid >> 16);
    b[5] = (uint8_t)(c->msgid >> 8);
    b[6] = (uint8_t)c->msgid;
    ssize_t n = write(c->fd, b, sizeof b);
    if (n != (ssize_t)sizeof b) {
        conn_kill(r, c, &r->connect_failed);
        return;
    }
    if (c->state != S_CONNECTING)
        r->pending++;
    c->state = S_WAIT_PONG;
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
    epoll_ctl(r->epfd, EPOLL_CTL_MOD, c->fd, &ev);
}

static const msgpack_object *map_get(const msgpack_object *m, const char *key) {
    if (m->type != MSGPACK_OBJECT_MAP)
        return NULL;
    size_t n = strlen(key);
    for (uint32_t i = 0; i < m->via.map.size; i++) {
        const msgpack_object_kv *kv = &m->via.map.ptr[i];
        if (kv->key.type == MSGPACK_OBJECT_STR && kv->key.via.str.size == n &&
            memcmp(kv->key.via.str.ptr, key, n) == 0)
            return &kv->val;
    }
    return NULL;
}

/* True when m is [1, msgid, nil, {pong: true, ...}]. */
static bool is_pong(const msgpack_object *m, uint32_t msgid) {
    if (m->type != MSGPACK_OBJECT_ARRAY || m->via.array.size != 4)
        return false;
    const msgpack_object *a = m->via.array.ptr;
    const msgpack_object *pong = map_get(&a[3], "pong");
    return a[0].type == MSGPACK_OBJECT_POSITIVE_INTEGER && a[0].via.u64 == 1 &&
           a[1].type == MSGPACK_OBJECT_POSITIVE_INTEGER && a[1].via.u64 == msgid &&
           a[2].type == MSGPACK_OBJECT_NIL && pong && pong->type == MSGPACK_OBJECT_BOOLEAN &&
           pong->via.boolean;
}

/* Reads what arrived; a reply to the ping in flight makes the connection idle. */
static void conn_read(run *r, conn *c) {
    if (!msgpack_unpacker_reserve_buffer(&c->up, READ_CHUNK))
        die("out of memory");
    ssize_t n = read(c->fd, msgpack_unpacker_buffer(&c->up), READ_CHUNK);
    if (n < 0 && (errno == EAGAIN || errno == EINTR))
        return;
    if (n <= 0) {
        conn_kill(r, c, &r->closed_by_server);
        return;
    }
    msgpack_unpacker_buffer_consumed(&c->up, (size_t)n);
    msgpack_unpacked msg;
    msgpack_unpacked_init(&msg);
    msgpack_unpack_return ret;
    while ((ret = msgpack_unpacker_next(&c->up, &msg)) == MSGPACK_UNPACK_SUCCESS) {
        if (c->state != S_WAIT_PONG || !is_pong(&msg.data, c->msgid)) {
            conn_kill(r, c, &r->bad_reply);
            break;
        }
        c->pongs++;
        c->state = S_IDLE;
        r->pending--;
    }
    msgpack_unpacked_destroy(&msg);
    if (ret == MSGPACK_UNPACK_PARSE_ERROR)
        conn_kill(r, c, &r->bad_reply);
}

/* Starts a non-blocking connect; the ping goes out when it completes. */
static void conn_start(run *r, conn *c) {
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)r->o->port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (c->fd < 0) {
        perror("idle_conns: socket");
        exit(2);
    }
    if (!msgpack_unpacker_init(&c->up, 256))
        die("out of memory");
    c->up_init = true;
    int one = 1;
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    c->state = S_CONNECTING;
    r->pending++;
    struct epoll_event ev = {.events = EPOLLOUT | EPOLLIN, .data.ptr = c};
    if (epoll_ctl(r->epfd, EPOLL_CTL_ADD, c->fd, &ev) < 0)
        die("epoll_ctl failed");
    if (connect(c->fd, (struct sockaddr *)&sa, sizeof sa) < 0 && errno != EINPROGRESS)
        conn_kill(r, c, &r->connect_failed);
}

static void on_event(run *r, conn *c, uint32_t events) {
    if (c->state == S_CONNECTING) {
        int err = 0;
        socklen_t len = sizeof err;
        getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len);
        if (err || (events & (EPOLLERR | EPOLLHUP))) {
            conn_kill(r, c, &r->connect_failed);
            return;
        }
        if (events & EPOLLOUT)
            conn_ping(r, c);
        return;
    }
    if (c->state != S_DEAD && (events & (EPOLLIN | EPOLLHUP | EPOLLERR)))
        conn_read(r, c);
}

static void poll_once(run *r, int timeout_ms) {
    struct epoll_event evs[512];
    int n = epoll_wait(r->epfd, evs, 512, timeout_ms);
    for (int i = 0; i < n; i++)
        on_event(r, evs[i].data.ptr, evs[i].events);
}

static int count_pongs(const run *r, unsigned at_least) {
    int n = 0;
    for (int i = 0; i < r->o->n; i++)
        n += r->c[i].state != S_DEAD && r->c[i].pongs >= at_least;
    return n;
}

/* Opens all connections, at most --window pending at a time; returns seconds taken. */
static double open_all(run *r) {
    uint64_t t0 = now_ns(), deadline = t0 + (uint64_t)(r->o->timeout_s * 1e9);
    int next = 0;
    while ((next < r->o->n || r->pending > 0) && now_ns() < deadline) {
        while (next < r->o->n && r->pending < r->o->window)
            conn_start(r, &r->c[next++]);
        poll_once(r, 10);
    }
    return (double)(now_ns() - t0) / 1e9;
}

/* Holds: any byte or close from the server on an idle connection is a failure. */
static void hold(run *r) {
    uint64_t end = now_ns() + (uint64_t)(r->o->hold_s * 1e9);
    for (uint64_t t; (t = now_ns()) < end;)
        poll_once(r, (int)((end - t) / 1000000 + 1));
}

/* Pings every live connection once more and waits for the replies. */
static void ping_all(run *r) {
    for (int i = 0; i < r->o->n; i++)
        if (r->c[i].state == S_IDLE)
            conn_ping(r, &r->c[i]);
    uint64_t deadline = now_ns() + (uint64_t)(r->o->timeout_s * 1e9);
    while (r->pending > 0 && now_ns() < deadline)
        poll_once(r, 10);
}

static void write_ready(const char *path, int n) {
    char tmp[4096];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    FILE *f = fopen(tmp, "w");
    if (!f || fprintf(f, "%d\n", n) < 0 || fclose(f) != 0 || rename(tmp, path) != 0)
        die("cannot write --ready-file");
}

static void raise_nofile(int n) {
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
        die("getrlimit failed");
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
    if (rl.rlim_cur != RLIM_INFINITY && rl.rlim_cur < (rlim_t)n + 16) {
        fprintf(stderr,
                "idle_conns: -c %d needs %d open files, the hard limit is %llu "
                "(raise it with ulimit -Hn as root)\n",
                n, n + 16, (unsigned long long)rl.rlim_cur);
        exit(2);
    }
}

static double parse_num(const char *flag, const char *v, double lo, double hi) {
    char *end;
    errno = 0;
    double d = v ? strtod(v, &end) : 0;
    if (!v || errno || end == v || *end || !(d >= lo && d <= hi)) {
        fprintf(stderr, "idle_conns: %s: expected a number in [%g, %g], got '%s'\n", flag, lo,
                hi, v ? v : "(nothing)");
        exit(2);
    }
    return d;
}

static void usage(FILE *out) {
    fprintf(out, "usage: idle_conns --port P [options]\n"
                 "Opens N connections to discernd on 127.0.0.1, pings each, holds them idle,\n"
                 "pings each again.\n\n"
                 "  --port P          discernd TCP port on 127.0.0.1 (required)\n"
                 "  -c, --connections N   connections (default 10000)\n"
                 "  --hold S          seconds held idle after the first pings (default 5)\n"
                 "  --window W        connections connecting or waiting at once (default 256)\n"
                 "  --timeout S       bound of the opening and of each round of pings (default 60)\n"
                 "  --ready-file PATH write N there once every connection answered its ping\n"
                 "  --kv              also print one 'RESULT key=value ...' line\n"
                 "Exit status: 0 when every connection answered both pings, 1 otherwise.\n");
}

static void parse_args(opts *o, int argc, char **argv) {
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            exit(0);
        } else if (!strcmp(a, "--port")) {
            o->port = (int)parse_num(a, v, 1, 65535), i++;
        } else if (!strcmp(a, "-c") || !strcmp(a, "--connections")) {
            o->n = (int)parse_num(a, v, 1, MAX_CONNS), i++;
        } else if (!strcmp(a, "--hold")) {
            o->hold_s = parse_num(a, v, 0, 3600), i++;
        } else if (!strcmp(a, "--window")) {
            o->window = (int)parse_num(a, v, 1, MAX_CONNS), i++;
        } else if (!strcmp(a, "--timeout")) {
            o->timeout_s = parse_num(a, v, 0.1, 3600), i++;
        } else if (!strcmp(a, "--ready-file")) {
            if (!v)
                die("--ready-file: missing value");
            o->ready_file = v, i++;
        } else if (!strcmp(a, "--kv")) {
            o->kv = true;
        } else {
            fprintf(stderr, "idle_conns: unknown option '%s' (see --help)\n", a);
            exit(2);
        }
    }
    if (!o->port)
        die("--port is required (see --help)");
}

int main(int argc, char **argv) {
    opts o = {.n = 10000, .hold_s = 5, .window = 256, .timeout_s = 60};
    parse_args(&o, argc, argv);
    raise_nofile(o.n);
    run r = {.o = &o, .c = calloc((size_t)o.n, sizeof(conn)), .epfd = epoll_create1(EPOLL_CLOEXEC)};
    if (!r.c || r.epfd < 0)
        die("cannot set up");
    double open_s = open_all(&r);
    int first = count_pongs(&r, 1);
    if (first == o.n && o.ready_file)
        write_ready(o.ready_file, first);
    printf("idle_conns: %d of %d connections open and answered a ping in %.2f s\n", first, o.n,
           open_s);
    fflush(stdout);
    hold(&r);
    ping_all(&r);
    int second = count_pongs(&r, 2);
    printf("idle_conns: held %.1f s; %d answered a second ping; closed by server %" PRIu64
           ", bad replies %" PRIu64 ", connect failures %" PRIu64 "\n",
           o.hold_s, second, r.closed_by_server, r.bad_reply, r.connect_failed);
    if (o.kv)
        printf("RESULT connections=%d first_pong=%d second_pong=%d open_s=%.3f closed=%" PRIu64
               " bad=%" PRIu64 " connect_failed=%" PRIu64 "\n",
               o.n, first, second, open_s, r.closed_by_server, r.bad_reply, r.connect_failed);
    for (int i = 0; i < o.n; i++) {
        if (r.c[i].state != S_DEAD && r.c[i].state != S_NEW)
            close(r.c[i].fd);
        if (r.c[i].up_init)
            msgpack_unpacker_destroy(&r.c[i].up);
    }
    free(r.c);
    close(r.epfd);
    return second == o.n ? 0 : 1;
}
