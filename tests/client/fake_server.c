/*
 * fake_server.c - a misbehaving or scripted MessagePack-RPC peer (see fake_server.h).
 *
 * The listening socket is bound in the test process (so the port is known at
 * once), then a child serves it with poll() until it is killed. The child dies
 * with its parent (PR_SET_PDEATHSIG) so a failed test leaves nothing running.
 */
#include "fake_server.h"

#include <criterion/criterion.h>
#include <errno.h>
#include <msgpack.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#define MAX_CONNS 32

typedef struct child {
    fake_mode mode;
    const char *script;
    int step;         /* checks answered */
    int reservations; /* reservations made */
    int accepts;
    char dir[64];
} child;

static void write_file(const child *ch, const char *name, const char *text, const char *how) {
    char path[128];
    snprintf(path, sizeof path, "%s/%s", ch->dir, name);
    FILE *f = fopen(path, how);
    if (!f) return;
    fputs(text, f);
    fclose(f);
}

static void send_all(int fd, const void *data, size_t n) {
    const char *p = data;
    while (n > 0) {
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
        if (w <= 0) return;
        p += w, n -= (size_t)w;
    }
}

static void pk_str(msgpack_packer *pk, const char *s) {
    msgpack_pack_str_with_body(pk, s, strlen(s));
}

/* The decision of the step-th check from the script: "allow", "refuse", "throttle:S". */
static void script_step(const child *ch, int step, char *word, size_t cap) {
    const char *p = ch->script ? ch->script : "allow";
    for (int i = 0; i < step; i++) {
        const char *comma = strchr(p, ',');
        if (!comma) break;
        p = comma + 1;
    }
    size_t n = strcspn(p, ",");
    snprintf(word, cap, "%.*s", (int)n, p);
}

static void str_field(const msgpack_object *params, const char *key, char *out, size_t cap) {
    out[0] = '\0';
    if (params->type != MSGPACK_OBJECT_ARRAY || params->via.array.size < 1) return;
    const msgpack_object *m = &params->via.array.ptr[0];
    if (m->type != MSGPACK_OBJECT_MAP) return;
    for (uint32_t i = 0; i < m->via.map.size; i++) {
        const msgpack_object_kv *kv = &m->via.map.ptr[i];
        if (kv->key.via.str.size != strlen(key) || memcmp(kv->key.via.str.ptr, key, strlen(key)))
            continue;
        if (kv->val.type == MSGPACK_OBJECT_STR)
            snprintf(out, cap, "%.*s", (int)kv->val.via.str.size, kv->val.via.str.ptr);
        else if (kv->val.type == MSGPACK_OBJECT_POSITIVE_INTEGER)
            snprintf(out, cap, "%llu", (unsigned long long)kv->val.via.u64);
        else if (kv->val.type == MSGPACK_OBJECT_BOOLEAN)
            snprintf(out, cap, "%s", kv->val.via.boolean ? "true" : "false");
    }
}

static void pack_budget(msgpack_packer *pk) {
    msgpack_pack_map(pk, 11);
    pk_str(pk, "selector"), pk_str(pk, "team:*");
    pk_str(pk, "counter"), pk_str(pk, "team:infra");
    pk_str(pk, "metric"), pk_str(pk, "gco2e");
    pk_str(pk, "window"), pk_str(pk, "month");
    pk_str(pk, "limit"), msgpack_pack_double(pk, 100.0);
    pk_str(pk, "used"), msgpack_pack_double(pk, 40.0);
    pk_str(pk, "held"), msgpack_pack_double(pk, 10.0);
    pk_str(pk, "remaining"), msgpack_pack_double(pk, 50.0);
    pk_str(pk, "resets_at"), msgpack_pack_int64(pk, 1798761600);
    pk_str(pk, "request"), msgpack_pack_double(pk, 2.5);
    pk_str(pk, "would_exceed"), msgpack_pack_false(pk);
}

static void pack_check(child *ch, msgpack_packer *pk, const msgpack_object *params) {
    char word[32], purpose[64], out_tokens[32], budgets[8], line[160];
    script_step(ch, ch->step++, word, sizeof word);
    str_field(params, "purpose", purpose, sizeof purpose);
    str_field(params, "budgets", budgets, sizeof budgets);
    bool with_budgets = strcmp(budgets, "true") == 0; /* like discernd: only when asked */
    str_field(params, "output_tokens", out_tokens, sizeof out_tokens);
    snprintf(line, sizeof line, "check %s %s\n", purpose, out_tokens);
    write_file(ch, "log", line, "a");
    bool allow = strcmp(word, "allow") == 0, throttle = strncmp(word, "throttle", 8) == 0;
    msgpack_pack_map(pk, (allow || throttle ? 5 : 4) + with_budgets);
    pk_str(pk, "decision"), pk_str(pk, allow ? "allow" : throttle ? "throttle" : "refuse");
    pk_str(pk, "reason"), pk_str(pk, allow ? "within budgets" : "team:* gco2e month exhausted");
    pk_str(pk, "policy"), pk_str(pk, "budgets");
    pk_str(pk, "zone"), pk_str(pk, "USA");
    if (with_budgets) pk_str(pk, "budgets"), msgpack_pack_array(pk, 1), pack_budget(pk);
    if (allow) {
        char id[32];
        snprintf(id, sizeof id, "r-%d", ++ch->reservations);
        pk_str(pk, "reservation"), pk_str(pk, id);
    } else if (throttle) {
        pk_str(pk, "retry_after_s"), msgpack_pack_double(pk, atof(word + 9));
    }
}

static void pack_settle(child *ch, msgpack_packer *pk, const msgpack_object *params) {
    char r[64], in[32], out[32], line[200];
    str_field(params, "reservation", r, sizeof r);
    str_field(params, "input_tokens", in, sizeof in);
    str_field(params, "output_tokens", out, sizeof out);
    snprintf(line, sizeof line, "settle %s %s %s\n", r, in, out);
    write_file(ch, "log", line, "a");
    msgpack_pack_map(pk, 3);
    pk_str(pk, "reservation"), pk_str(pk, r);
    pk_str(pk, "charged"), msgpack_pack_map(pk, 1), pk_str(pk, "tokens"),
        msgpack_pack_double(pk, atof(in) + atof(out));
    pk_str(pk, "budgets"), msgpack_pack_array(pk, 0);
}

static void pack_cancel(child *ch, msgpack_packer *pk, const msgpack_object *params) {
    char r[64], line[100];
    str_field(params, "reservation", r, sizeof r);
    snprintf(line, sizeof line, "cancel %s\n", r);
    write_file(ch, "log", line, "a");
    msgpack_pack_map(pk, 2);
    pk_str(pk, "reservation"), pk_str(pk, r);
    pk_str(pk, "released"), msgpack_pack_true(pk);
}

/* Answer one request in FAKE_SCRIPT mode. */
static void answer(child *ch, int fd, const msgpack_object *req) {
    const msgpack_object *a = req->via.array.ptr;
    char method[32];
    snprintf(method, sizeof method, "%.*s", (int)a[2].via.str.size, a[2].via.str.ptr);
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_array(&pk, 4);
    msgpack_pack_int(&pk, 1);
    msgpack_pack_uint64(&pk, a[1].via.u64);
    if (strcmp(method, "check") == 0 || strcmp(method, "settle") == 0 ||
        strcmp(method, "cancel") == 0 || strcmp(method, "ping") == 0) {
        msgpack_pack_nil(&pk);
        if (method[0] == 'c' && method[1] == 'h')
            pack_check(ch, &pk, &a[3]);
        else if (method[0] == 's')
            pack_settle(ch, &pk, &a[3]);
        else if (method[0] == 'c')
            pack_cancel(ch, &pk, &a[3]);
        else
            msgpack_pack_map(&pk, 1), pk_str(&pk, "pong"), msgpack_pack_true(&pk);
    } else {
        msgpack_pack_map(&pk, 2);
        pk_str(&pk, "code"), pk_str(&pk, "bad_request");
        pk_str(&pk, "message"), pk_str(&pk, "unknown method");
        msgpack_pack_nil(&pk);
    }
    send_all(fd, sb.data, sb.size);
    msgpack_sbuffer_destroy(&sb);
}

/* React to one request according to the mode; false = close the connection. */
static bool on_request(child *ch, int fd, const msgpack_object *req) {
    if (req->type != MSGPACK_OBJECT_ARRAY || req->via.array.size != 4) return true;
    switch (ch->mode) {
    case FAKE_SILENT:
    case FAKE_NO_ACCEPT:
        return true;
    case FAKE_CLOSE:
        return false;
    case FAKE_HALF_REPLY: {
        static const unsigned char half[] = {0x94, 0x01, 0x01, 0xc0, 0x83, 0xa4, 'p', 'o'};
        send_all(fd, half, sizeof half);
        return false;
    }
    case FAKE_HUGE_STRING: {
        size_t n = 2u << 20;
        char *big = calloc(1, n + 16);
        unsigned char hdr[] = {0x94,
                               0x01,
                               0x01,
                               0xc0,
                               0x81,
                               0xa1,
                               'x',
                               0xdb,
                               (unsigned char)(n >> 24),
                               (unsigned char)(n >> 16),
                               (unsigned char)(n >> 8),
                               (unsigned char)n};
        send_all(fd, hdr, sizeof hdr);
        if (big) send_all(fd, big, n);
        free(big);
        return true;
    }
    case FAKE_BOMB: {
        static const unsigned char bomb[] = {0xdd, 0xff, 0xff, 0xff, 0xff};
        send_all(fd, bomb, sizeof bomb);
        return true;
    }
    case FAKE_DEEP: {
        unsigned char deep[101];
        memset(deep, 0x91, 100);
        deep[100] = 0xc0;
        send_all(fd, deep, sizeof deep);
        return true;
    }
    case FAKE_GARBAGE: {
        static const unsigned char junk[] = {0xc1, 0xc1, 0xc1};
        send_all(fd, junk, sizeof junk);
        return true;
    }
    case FAKE_SCRIPT:
        answer(ch, fd, req);
        return true;
    }
    return true;
}

static bool on_readable(child *ch, int fd, msgpack_unpacker *up) {
    msgpack_unpacker_reserve_buffer(up, 65536);
    ssize_t n = recv(fd, msgpack_unpacker_buffer(up), msgpack_unpacker_buffer_capacity(up), 0);
    if (n <= 0) return false;
    msgpack_unpacker_buffer_consumed(up, (size_t)n);
    msgpack_unpacked u;
    msgpack_unpacked_init(&u);
    bool keep = true;
    while (keep && msgpack_unpacker_next(up, &u) == MSGPACK_UNPACK_SUCCESS)
        keep = on_request(ch, fd, &u.data);
    msgpack_unpacked_destroy(&u);
    return keep;
}

static void on_accept(child *ch, int lfd, struct pollfd *pfd, msgpack_unpacker *ups, int *n) {
    int fd = accept(lfd, NULL, NULL);
    if (fd < 0) return;
    char text[32];
    snprintf(text, sizeof text, "%d\n", ++ch->accepts);
    write_file(ch, "accepts", text, "w");
    if (*n >= MAX_CONNS) {
        close(fd);
        return;
    }
    pfd[*n] = (struct pollfd){.fd = fd, .events = POLLIN};
    msgpack_unpacker_init(&ups[*n], 65536);
    (*n)++;
}

static void serve(child *ch, int lfd) {
    struct pollfd pfd[MAX_CONNS + 1];
    msgpack_unpacker ups[MAX_CONNS + 1];
    int n = 1;
    pfd[0] = (struct pollfd){.fd = lfd, .events = POLLIN};
    if (ch->mode == FAKE_NO_ACCEPT)
        for (;;)
            pause();
    for (;;) {
        if (poll(pfd, (nfds_t)n, -1) < 0 && errno != EINTR) _exit(1);
        if (pfd[0].revents & POLLIN) on_accept(ch, lfd, pfd, ups, &n);
        for (int i = 1; i < n; i++) {
            if (!(pfd[i].revents & (POLLIN | POLLHUP | POLLERR))) continue;
            if (on_readable(ch, pfd[i].fd, &ups[i])) continue;
            close(pfd[i].fd);
            msgpack_unpacker_destroy(&ups[i]);
            pfd[i] = pfd[n - 1];
            ups[i] = ups[n - 1];
            n--, i--;
        }
    }
}

void fake_start(fake_server *f, fake_mode mode, const char *script) {
    memset(f, 0, sizeof *f);
    strcpy(f->dir, "/tmp/discern-fake-XXXXXX");
    cr_assert_not_null(mkdtemp(f->dir));
    int lfd = socket(AF_INET, SOCK_STREAM, 0);
    int one = 1;
    setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in a = {.sin_family = AF_INET};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    cr_assert(bind(lfd, (struct sockaddr *)&a, sizeof a) == 0);
    cr_assert(listen(lfd, 16) == 0);
    socklen_t len = sizeof a;
    getsockname(lfd, (struct sockaddr *)&a, &len);
    f->port = ntohs(a.sin_port);
    snprintf(f->address, sizeof f->address, "127.0.0.1:%d", f->port);
    pid_t pid = fork();
    cr_assert_geq(pid, 0);
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        child ch = {.mode = mode, .script = script};
        memcpy(ch.dir, f->dir, sizeof ch.dir);
        serve(&ch, lfd);
        _exit(0);
    }
    close(lfd);
    f->pid = pid;
}

int fake_accepts(const fake_server *f) {
    char path[128];
    snprintf(path, sizeof path, "%s/accepts", f->dir);
    FILE *fp = fopen(path, "r");
    int n = 0;
    if (fp) {
        if (fscanf(fp, "%d", &n) != 1) n = 0;
        fclose(fp);
    }
    return n;
}

char *fake_log(const fake_server *f) {
    char path[128];
    snprintf(path, sizeof path, "%s/log", f->dir);
    FILE *fp = fopen(path, "r");
    char *text = calloc(1, 65536);
    cr_assert_not_null(text);
    if (fp) {
        size_t n = fread(text, 1, 65535, fp);
        text[n] = '\0';
        fclose(fp);
    }
    return text;
}

void fake_stop(fake_server *f) {
    if (f->pid > 0) {
        kill(f->pid, SIGKILL);
        waitpid(f->pid, NULL, 0);
        f->pid = 0;
    }
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", f->dir);
    if (f->dir[0] && system(cmd) != 0) fprintf(stderr, "could not remove %s\n", f->dir);
}

void fake_expect_log(const fake_server *f, const char *want) {
    char *log = fake_log(f);
    cr_assert_str_eq(log, want);
    free(log);
}

int fake_closed_port(void) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    cr_assert(bind(fd, (struct sockaddr *)&a, sizeof a) == 0);
    socklen_t len = sizeof a;
    getsockname(fd, (struct sockaddr *)&a, &len);
    close(fd);
    return ntohs(a.sin_port);
}
