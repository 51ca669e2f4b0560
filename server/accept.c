/*
 * accept.c - who gets a connection (see accept.h).
 *
 * Descriptors. At start the soft RLIMIT_NOFILE is raised to the hard one, and when
 * max_connections is 0 it becomes what is left once the listeners, the workers'
 * loops and the store are open, minus a headroom for what opens later (the store's
 * reader, HTTP clients, a reload's files) and minus the Unix reserve. So the
 * connection limit, not the kernel, is what a crowd of clients meets first.
 *
 * Accept errors. When accept(2) fails for lack of descriptors or memory (EMFILE,
 * ENFILE, ENOBUFS, ENOMEM) the pending connection stays in the kernel's queue and the
 * listening socket stays readable: retrying at once is a busy loop (one core at 100%
 * and a log line per try). Instead every listener is disabled, and accepting resumes
 * when a connection closes (a descriptor is free) or after a back-off of 10 ms
 * doubling to 1 s. Errors are counted (discern_accept_errors_total) and logged as one
 * aggregated line per ACCEPT_LOG_INTERVAL_S.
 *
 * Slots. A TCP peer is admitted while fewer than max_connections are open and its
 * address holds fewer than max_connections_per_address; a Unix peer (the admins'
 * way in) while fewer than max_connections + unix_reserved_connections are open, so
 * a server full of TCP clients can still be administered. The per-address counts
 * live in a dsc__strmap under a mutex: taken on the main thread, given back on the
 * worker that closes the connection.
 */
#include "accept.h"

#include "server_internal.h"
#include "strmap_internal.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/un.h>

#define ACCEPT_LOG_INTERVAL_S 10
#define BACKOFF_MIN_MS 10
#define BACKOFF_MAX_MS 1000
#define HTTP_BACKOFF_MS 100

typedef struct addr_count {
    char key[DSC__ADDR_KEY_MAX];
    uint32_t n;
} addr_count;

struct dsc__accept {
    struct event *resume; /* back-off timer, also activated by a release */
    atomic_bool paused;
    int backoff_ms;
    atomic_uint_fast64_t errors;
    uint64_t unlogged;
    int64_t logged_us;
    pthread_mutex_t lock; /* guards addrs */
    dsc__strmap addrs;    /* address key -> addr_count */
    bool lock_made;
};

void dsc__accept_raise_nofile(dsc_server *srv) {
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur >= rl.rlim_max) return;
    rlim_t was = rl.rlim_cur;
    rl.rlim_cur = rl.rlim_max;
    if (setrlimit(RLIMIT_NOFILE, &rl) == 0)
        dsc_log_write(&srv->log, DSC_LOG_INFO, "nofile_raised", "from=%llu to=%llu",
                      (unsigned long long)was, (unsigned long long)rl.rlim_max);
}

/* Descriptors open now (/proc/self/fd less the one reading it); -1 if unknown. */
static int open_fds(void) {
    DIR *d = opendir("/proc/self/fd");
    if (!d) return -1;
    int n = 0;
    for (struct dirent *e; (e = readdir(d)) != NULL;)
        if (e->d_name[0] != '.') n++;
    closedir(d);
    return n - 1;
}

/* Descriptors kept beside the connections for what opens after start. */
static long headroom(long nofile) {
    long h = nofile / 16;
    return h < 16 ? 16 : h > 256 ? 256 : h;
}

static void set_connection_limit(dsc_server *srv) {
    struct rlimit rl;
    long nofile = getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY
                      ? (long)rl.rlim_cur
                      : 1L << 20;
    int open = open_fds();
    long left = nofile - (open < 0 ? 64 : open) - headroom(nofile) -
                (long)srv->cfg.unix_reserved_connections;
    if (left < 1) left = 1;
    if (left > 1 << 24) left = 1 << 24;
    const char *source = "descriptors";
    if (srv->cfg.max_connections == 0) {
        srv->cfg.max_connections = (uint32_t)left;
    } else {
        source = "config";
        if (srv->cfg.max_connections > (uint32_t)left)
            dsc_log_write(&srv->log, DSC_LOG_WARN, "max_connections_above_nofile",
                          "max_connections=%u descriptors_allow=%ld nofile=%ld: accepts past "
                          "the limit fail and pause",
                          srv->cfg.max_connections, left, nofile);
    }
    dsc_log_write(&srv->log, DSC_LOG_INFO, "connection_limit",
                  "max_connections=%u source=%s nofile=%ld open_fds=%d headroom=%ld "
                  "unix_reserved=%u per_address=%u",
                  srv->cfg.max_connections, source, nofile, open, headroom(nofile),
                  srv->cfg.unix_reserved_connections, srv->cfg.max_connections_per_address);
}

static void set_listeners(dsc_server *srv, bool on) {
    struct evconnlistener *ls[3] = {srv->tcp, srv->unix_listener, srv->http_listener};
    for (int i = 0; i < 3; i++)
        if (ls[i]) on ? evconnlistener_enable(ls[i]) : evconnlistener_disable(ls[i]);
}

static void on_resume(evutil_socket_t fd, short what, void *arg) {
    (void)fd;
    (void)what;
    dsc_server *srv = arg;
    if (!atomic_exchange(&srv->accept->paused, false) || srv->stopping) return;
    set_listeners(srv, true);
}

dsc_status dsc__accept_init(dsc_server *srv, dsc_error *err) {
    struct dsc__accept *a = calloc(1, sizeof *a);
    if (!a) return dsc_error_set(err, DSC_NOMEM, "accept guard");
    srv->accept = a;
    dsc__strmap_init(&a->addrs);
    pthread_mutex_init(&a->lock, NULL);
    a->lock_made = true;
    a->resume = event_new(srv->base, -1, 0, on_resume, srv);
    if (!a->resume) return dsc_error_set(err, DSC_NOMEM, "accept timer");
    set_connection_limit(srv);
    return DSC_OK;
}

static void addr_key(const struct sockaddr *addr, char key[DSC__ADDR_KEY_MAX]) {
    key[0] = '\0';
    if (addr->sa_family == AF_INET)
        inet_ntop(AF_INET, &((const struct sockaddr_in *)addr)->sin_addr, key, DSC__ADDR_KEY_MAX);
    else if (addr->sa_family == AF_INET6)
        inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)addr)->sin6_addr, key,
                  DSC__ADDR_KEY_MAX);
}

/* Count one more connection from key; false when its cap is reached (or no memory). */
static bool addr_take(struct dsc__accept *a, const char *key, uint32_t cap) {
    pthread_mutex_lock(&a->lock);
    addr_count *c = dsc__strmap_get(&a->addrs, key);
    if (!c && (c = calloc(1, sizeof *c)) != NULL) {
        snprintf(c->key, sizeof c->key, "%s", key);
        if (dsc__strmap_put(&a->addrs, c->key, c) != DSC_OK) {
            free(c);
            c = NULL;
        }
    }
    bool ok = c && (cap == 0 || c->n < cap);
    if (ok) c->n++;
    pthread_mutex_unlock(&a->lock);
    return ok;
}

bool dsc__accept_admit(dsc_server *srv, const struct sockaddr *addr, char key[DSC__ADDR_KEY_MAX]) {
    struct dsc__accept *a = srv->accept;
    a->backoff_ms = 0; /* an accept succeeded: descriptors are there again */
    bool is_unix = addr->sa_family == AF_UNIX;
    uint32_t max = srv->cfg.max_connections + (is_unix ? srv->cfg.unix_reserved_connections : 0);
    key[0] = '\0';
    if (srv->stopping || (uint32_t)atomic_load(&srv->connections) >= max) goto refuse;
    if (!is_unix) {
        addr_key(addr, key);
        if (!addr_take(a, key, srv->cfg.max_connections_per_address)) {
            key[0] = '\0';
            goto refuse;
        }
    }
    atomic_fetch_add(&srv->connections, 1);
    return true;
refuse:
    atomic_fetch_add(&srv->rejected, 1);
    return false;
}

void dsc__accept_release(dsc_server *srv, const char *key) {
    struct dsc__accept *a = srv->accept;
    atomic_fetch_sub(&srv->connections, 1);
    if (key && key[0]) {
        pthread_mutex_lock(&a->lock);
        addr_count *c = dsc__strmap_get(&a->addrs, key);
        if (c && --c->n == 0) free(dsc__strmap_del(&a->addrs, key));
        pthread_mutex_unlock(&a->lock);
    }
    if (atomic_load(&a->paused)) event_active(a->resume, EV_TIMEOUT, 0);
}

static bool out_of_descriptors(int e) {
    return e == EMFILE || e == ENFILE || e == ENOBUFS || e == ENOMEM;
}

/* One log line per interval, whatever the rate of failures. */
static void log_failure(dsc_server *srv, int e) {
    struct dsc__accept *a = srv->accept;
    a->unlogged++;
    int64_t now = dsc__now_us();
    if (a->logged_us && now - a->logged_us < ACCEPT_LOG_INTERVAL_S * 1000000LL) return;
    dsc_log_write(&srv->log, DSC_LOG_WARN, "accept_failed",
                  "error=\"%s\" count=%llu total=%llu connections=%d max_connections=%u "
                  "action=%s",
                  strerror(e), (unsigned long long)a->unlogged,
                  (unsigned long long)atomic_load(&a->errors), atomic_load(&srv->connections),
                  srv->cfg.max_connections, out_of_descriptors(e) ? "pause" : "retry");
    a->unlogged = 0;
    a->logged_us = now;
}

void dsc__accept_error_cb(struct evconnlistener *l, void *arg) {
    (void)l;
    int e = EVUTIL_SOCKET_ERROR();
    dsc_server *srv = arg;
    struct dsc__accept *a = srv->accept;
    atomic_fetch_add(&a->errors, 1);
    log_failure(srv, e);
    if (!out_of_descriptors(e)) return;
    a->backoff_ms = a->backoff_ms ? a->backoff_ms * 2 : BACKOFF_MIN_MS;
    if (a->backoff_ms > BACKOFF_MAX_MS) a->backoff_ms = BACKOFF_MAX_MS;
    set_listeners(srv, false);
    atomic_store(&a->paused, true);
    struct timeval tv = {a->backoff_ms / 1000, (a->backoff_ms % 1000) * 1000};
    event_add(a->resume, &tv);
}

static void on_http_resume(evutil_socket_t fd, short what, void *arg) {
    (void)fd;
    (void)what;
    evconnlistener_enable(arg);
}

void dsc__accept_http_error_cb(struct evconnlistener *l, void *arg) {
    (void)arg;
    if (!out_of_descriptors(EVUTIL_SOCKET_ERROR())) return;
    evconnlistener_disable(l);
    struct timeval tv = {0, HTTP_BACKOFF_MS * 1000};
    event_base_once(evconnlistener_get_base(l), -1, EV_TIMEOUT, on_http_resume, l, &tv);
}

uint64_t dsc__accept_errors(const dsc_server *srv) {
    return srv->accept ? (uint64_t)atomic_load(&srv->accept->errors) : 0;
}

static void free_count(void *val, void *ud) {
    (void)ud;
    free(val);
}

void dsc__accept_free(dsc_server *srv) {
    struct dsc__accept *a = srv->accept;
    if (!a) return;
    if (a->resume) event_free(a->resume);
    dsc__strmap_each(&a->addrs, free_count, NULL);
    dsc__strmap_destroy(&a->addrs);
    if (a->lock_made) pthread_mutex_destroy(&a->lock);
    free(a);
    srv->accept = NULL;
}
