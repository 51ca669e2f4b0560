/*
 * auth_guess.c - how fast can a client guess discernd's admin token?
 *
 *   auth_guess --port P [-c N] [-d S] [--sources K] [--kv]
 *
 * Why: the token is the only thing between a TCP peer and the admin methods, so the
 * number that matters is how many wrong tokens the server evaluates per second for
 * someone who keeps trying. This program opens N connections to 127.0.0.1:P (each
 * bound to one of the K loopback source addresses 127.0.0.1 ... 127.0.0.K, to play
 * an attacker with several addresses), sends `auth` with a fresh wrong token on each,
 * one at a time per connection, and reconnects whenever the server closes one. For S
 * seconds it counts the replies: a wrong-token reply is a guess the server evaluated;
 * a reply refusing the attempt unevaluated ("too many failed auth attempts") is not.
 * It prints guesses/s, refusals/s and reconnects. Exit status 0 when it ran, 2 on bad
 * usage or when nothing could connect.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <msgpack.h>

#define MAX_CONNS 4096

typedef struct conn {
    int fd;
    int source; /* 127.0.0.(1 + source) */
    uint32_t msgid;
    msgpack_unpacker up;
} conn;

typedef struct counts {
    uint64_t guesses, refused, other, reconnects;
} counts;

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int open_conn(int port, int source) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return -1;
    struct sockaddr_in a = {.sin_family = AF_INET};
    a.sin_addr.s_addr = htonl(0x7f000001u + (uint32_t)source);
    if (bind(fd, (struct sockaddr *)&a, sizeof a) != 0) goto fail;
    a.sin_addr.s_addr = htonl(0x7f000001u);
    a.sin_port = htons((uint16_t)port);
    if (connect(fd, (struct sockaddr *)&a, sizeof a) != 0) goto fail;
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    return fd;
fail:
    close(fd);
    return -1;
}

static bool send_guess(conn *c) {
    char token[40];
    snprintf(token, sizeof token, "guess-%08x-%08x", (unsigned)c->msgid, (unsigned)rand());
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_array(&pk, 4);
    msgpack_pack_uint8(&pk, 0);
    msgpack_pack_uint32(&pk, ++c->msgid);
    msgpack_pack_str_with_body(&pk, "auth", 4);
    msgpack_pack_array(&pk, 1);
    msgpack_pack_map(&pk, 1);
    msgpack_pack_str_with_body(&pk, "token", 5);
    msgpack_pack_str_with_body(&pk, token, strlen(token));
    bool ok = send(c->fd, sb.data, sb.size, MSG_NOSIGNAL) == (ssize_t)sb.size;
    msgpack_sbuffer_destroy(&sb);
    return ok;
}

/* Classify one reply [1, msgid, {code, message}, nil]. */
static void count_reply(const msgpack_object *o, counts *n) {
    if (o->type != MSGPACK_OBJECT_ARRAY || o->via.array.size != 4 ||
        o->via.array.ptr[2].type != MSGPACK_OBJECT_MAP) {
        n->other++;
        return;
    }
    const msgpack_object_map *m = &o->via.array.ptr[2].via.map;
    for (uint32_t i = 0; i < m->size; i++) {
        const msgpack_object *k = &m->ptr[i].key, *v = &m->ptr[i].val;
        if (k->type != MSGPACK_OBJECT_STR || v->type != MSGPACK_OBJECT_STR) continue;
        if (k->via.str.size != 7 || memcmp(k->via.str.ptr, "message", 7) != 0) continue;
        if (memmem(v->via.str.ptr, v->via.str.size, "too many", 8))
            n->refused++;
        else
            n->guesses++;
        return;
    }
    n->other++;
}

static void reconnect(conn *c, int port, counts *n) {
    if (c->fd >= 0) close(c->fd);
    msgpack_unpacker_destroy(&c->up);
    msgpack_unpacker_init(&c->up, 4096);
    c->fd = open_conn(port, c->source);
    n->reconnects++;
    if (c->fd >= 0 && !send_guess(c)) {
        close(c->fd);
        c->fd = -1;
    }
}

/* Read what arrived on c; answer each reply with the next guess. */
static void on_readable(conn *c, int port, counts *n) {
    msgpack_unpacker_reserve_buffer(&c->up, 4096);
    ssize_t r =
        read(c->fd, msgpack_unpacker_buffer(&c->up), msgpack_unpacker_buffer_capacity(&c->up));
    if (r <= 0) {
        if (r < 0 && (errno == EAGAIN || errno == EINTR)) return;
        reconnect(c, port, n);
        return;
    }
    msgpack_unpacker_buffer_consumed(&c->up, (size_t)r);
    msgpack_unpacked msg;
    msgpack_unpacked_init(&msg);
    bool replied = false;
    while (msgpack_unpacker_next(&c->up, &msg) == MSGPACK_UNPACK_SUCCESS) {
        count_reply(&msg.data, n);
        replied = true;
    }
    msgpack_unpacked_destroy(&msg);
    if (replied && !send_guess(c)) reconnect(c, port, n);
}

static int usage(void) {
    fprintf(stderr, "usage: auth_guess --port P [-c N] [-d SECONDS] [--sources K] [--kv]\n");
    return 2;
}

int main(int argc, char **argv) {
    int port = 0, nconn = 50, sources = 1;
    double dur = 5;
    bool kv = false;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "--help") == 0) return usage(), 0;
        if (strcmp(a, "--kv") == 0) {
            kv = true;
            continue;
        }
        if (!v) return usage();
        if (strcmp(a, "--port") == 0)
            port = atoi(v);
        else if (strcmp(a, "-c") == 0)
            nconn = atoi(v);
        else if (strcmp(a, "-d") == 0)
            dur = atof(v);
        else if (strcmp(a, "--sources") == 0)
            sources = atoi(v);
        else
            return usage();
        i++;
    }
    if (port <= 0 || port > 65535 || nconn < 1 || nconn > MAX_CONNS || dur <= 0 || sources < 1 ||
        sources > 250)
        return usage();
    static conn conns[MAX_CONNS];
    static struct pollfd pfd[MAX_CONNS];
    counts n = {0};
    for (int i = 0; i < nconn; i++) {
        conns[i].fd = -1;
        conns[i].source = i % sources;
        msgpack_unpacker_init(&conns[i].up, 4096);
        reconnect(&conns[i], port, &n);
        if (conns[i].fd < 0) {
            fprintf(stderr, "auth_guess: cannot connect to 127.0.0.1:%d: %s\n", port,
                    strerror(errno));
            return 2;
        }
    }
    n.reconnects = 0;
    double t0 = now_s(), end = t0 + dur;
    while (now_s() < end) {
        for (int i = 0; i < nconn; i++) {
            if (conns[i].fd < 0) reconnect(&conns[i], port, &n);
            pfd[i].fd = conns[i].fd;
            pfd[i].events = POLLIN;
        }
        int r = poll(pfd, (nfds_t)nconn, 100);
        for (int i = 0; r > 0 && i < nconn; i++)
            if (pfd[i].revents) on_readable(&conns[i], port, &n);
    }
    double el = now_s() - t0;
    printf("auth_guess: %d connections from %d address(es), %.1f s\n", nconn, sources, el);
    printf("  guesses evaluated: %llu (%.0f/s)\n", (unsigned long long)n.guesses,
           (double)n.guesses / el);
    printf("  refused unevaluated: %llu (%.0f/s)\n", (unsigned long long)n.refused,
           (double)n.refused / el);
    printf("  reconnects: %llu, other replies: %llu\n", (unsigned long long)n.reconnects,
           (unsigned long long)n.other);
    if (kv)
        printf("RESULT guesses_per_s=%.1f refused_per_s=%.1f reconnects=%llu\n",
               (double)n.guesses / el, (double)n.refused / el, (unsigned long long)n.reconnects);
    for (int i = 0; i < nconn; i++) {
        if (conns[i].fd >= 0) close(conns[i].fd);
        msgpack_unpacker_destroy(&conns[i].up);
    }
    return 0;
}
