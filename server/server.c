/*
 * server.c - discernd's sockets and threads (see server.h).
 *
 * Threads and lifecycle: the listeners and signals on the main thread, one event
 * loop per worker thread, the hand-over of sockets and JSON API calls to workers,
 * draining at stop, the ledger's tick. A connection's I/O is in conn.c.
 */
#include "conn.h"
#include "http.h"
#include "store_url.h"

#include <arpa/inet.h>
#include <errno.h>
#include <event2/thread.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define DRAIN_DEADLINE_S 10

int64_t dsc__now_us(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* -------------------------------------------------------------------- workers -- */

bool dsc__worker_idle(const dsc__worker *w) {
    return !w->conns && w->jobs == 0;
}

static void worker_drain(dsc__worker *w) {
    if (w->draining) return;
    w->draining = true;
    struct timeval deadline = {DRAIN_DEADLINE_S, 0};
    event_add(w->drain_timer, &deadline);
    if (dsc__worker_idle(w)) {
        event_base_loopexit(w->base, NULL);
        return;
    }
    /* Answer what was already read, flush, then close; pump frees finished ones. */
    dsc__conn *c = w->conns;
    while (c) {
        dsc__conn *next = c->next;
        dsc__conn_pump(c);
        c = next;
    }
}

static void on_drain_deadline(evutil_socket_t fd, short what, void *arg) {
    (void)fd;
    (void)what;
    dsc__worker *w = arg;
    while (w->conns)
        dsc__conn_close(w->conns, "drain_deadline");
    event_base_loopexit(w->base, NULL);
}

/* A JSON API call: run it like a request of a connection, unless stopping. */
static void run_call(dsc__worker *w, dsc__http_call *call, bool stop) {
    if (!stop) {
        dsc__http_call_run(w, call);
        return;
    }
    dsc_error err;
    dsc_error_set(&err, DSC_STORE_UNAVAILABLE, "the server is stopping");
    dsc__http_call_refuse(w->srv, call, &err);
}

static void on_notify(evutil_socket_t fd, short what, void *arg) {
    (void)fd;
    (void)what;
    dsc__worker *w = arg;
    dsc__jobs_run_completed(w);
    for (;;) {
        pthread_mutex_lock(&w->lock);
        bool stop = w->stop;
        dsc__handoff h = {.fd = -1};
        if (w->n_queue > 0) h = w->queue[--w->n_queue];
        pthread_mutex_unlock(&w->lock);
        if (h.call) {
            run_call(w, h.call, stop);
            continue;
        }
        if (h.fd < 0) {
            if (stop) worker_drain(w);
            return;
        }
        if (stop) {
            close(h.fd);
            dsc__accept_release(w->srv, h.addr);
        } else {
            dsc__conn_open(w, &h);
        }
    }
}

static void *worker_main(void *arg) {
    dsc__worker *w = arg;
    event_base_loop(w->base, EVLOOP_NO_EXIT_ON_EMPTY);
    dsc__ledger_redis_worker_stop(w); /* its calls in flight complete, unavailable */
    while (w->conns)
        dsc__conn_close(w->conns, "shutdown");
    dsc__worker_release_state(w);
    return NULL;
}

static dsc_status worker_init(dsc_server *srv, dsc__worker *w, int index, dsc_error *err) {
    w->srv = srv;
    w->index = index;
    pthread_mutex_init(&w->lock, NULL);
    pthread_mutex_init(&w->labels_lock, NULL);
    dsc__context_cache_init(&w->context_cache);
    if (!msgpack_zone_init(&w->zone, 8192)) return dsc_error_set(err, DSC_NOMEM, "worker zone");
    w->rcap = srv->cfg.limits.max_message_bytes + DSC__READ_CHUNK;
    if (!(w->rbuf = malloc(w->rcap))) return dsc_error_set(err, DSC_NOMEM, "worker read buffer");
    w->base = event_base_new();
    if (!w->base) return dsc_error_set(err, DSC_INTERNAL, "cannot create an event loop");
    w->notify = event_new(w->base, -1, EV_PERSIST, on_notify, w);
    w->drain_timer = evtimer_new(w->base, on_drain_deadline, w);
    if (!w->notify || !w->drain_timer) return dsc_error_set(err, DSC_NOMEM, "worker events");
    event_add(w->notify, NULL);
    dsc_status st = dsc__ledger_redis_worker_start(w, err);
    if (st != DSC_OK) return st;
    if (pthread_create(&w->thread, NULL, worker_main, w) != 0)
        return dsc_error_set(err, DSC_INTERNAL, "cannot start worker thread %d", index);
    w->started = true;
    return DSC_OK;
}

static void worker_post(dsc__worker *w, const dsc__handoff *h, bool stop) {
    pthread_mutex_lock(&w->lock);
    bool ok = true;
    if (h) {
        if (w->n_queue == w->cap_queue) {
            size_t cap = w->cap_queue ? w->cap_queue * 2 : 64;
            dsc__handoff *q = realloc(w->queue, cap * sizeof *q);
            if (q)
                w->queue = q, w->cap_queue = cap;
            else
                ok = false;
        }
        if (ok) w->queue[w->n_queue++] = *h;
    }
    if (stop) w->stop = true;
    pthread_mutex_unlock(&w->lock);
    if (!ok && h->call) {
        dsc_error err;
        dsc_error_set(&err, DSC_NOMEM, "out of memory queueing the call");
        dsc__http_call_refuse(w->srv, h->call, &err);
        return;
    }
    if (!ok) {
        close(h->fd);
        dsc__accept_release(w->srv, h->addr);
        return;
    }
    event_active(w->notify, EV_READ, 0);
}

void dsc__worker_post_call(dsc_server *srv, dsc__http_call *call) {
    dsc__handoff h = {.fd = -1, .call = call};
    worker_post(&srv->workers[srv->next_worker++ % (unsigned)srv->n_workers], &h, false);
}

static void worker_join(dsc__worker *w) {
    if (w->started) {
        worker_post(w, NULL, true);
        pthread_join(w->thread, NULL);
        w->started = false;
    }
}

static void worker_destroy(dsc__worker *w) {
    dsc__ledger_redis_worker_stop(w);
    if (w->notify) event_free(w->notify);
    if (w->drain_timer) event_free(w->drain_timer);
    if (w->base) event_base_free(w->base);
    msgpack_zone_destroy(&w->zone);
    dsc__jobs_cache_free(w);
    free(w->spare_out);
    free(w->rbuf);
    free(w->queue);
    pthread_mutex_destroy(&w->lock);
    pthread_mutex_destroy(&w->labels_lock);
}

/* ------------------------------------------------------------------ listeners -- */

static void on_accept(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *addr, int len,
                      void *arg) {
    (void)l;
    (void)len;
    dsc_server *srv = arg;
    dsc__handoff h = {.fd = fd, .is_unix = addr->sa_family == AF_UNIX};
    if (!dsc__accept_admit(srv, addr, h.addr)) {
        close(fd);
        return;
    }
    if (!h.is_unix) {
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    }
    dsc__worker *w = &srv->workers[srv->next_worker++ % (unsigned)srv->n_workers];
    worker_post(w, &h, false);
}

static int bound_port(evutil_socket_t fd) {
    struct sockaddr_storage ss;
    socklen_t len = sizeof ss;
    if (getsockname(fd, (struct sockaddr *)&ss, &len) != 0) return 0;
    if (ss.ss_family == AF_INET) return ntohs(((struct sockaddr_in *)&ss)->sin_port);
    if (ss.ss_family == AF_INET6) return ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
    return 0;
}

static dsc_status listen_tcp(dsc_server *srv, dsc_error *err) {
    struct sockaddr_storage ss;
    socklen_t len = 0;
    dsc_status st = dsc__parse_hostport("listen", srv->cfg.listen, &ss, &len, err);
    if (st != DSC_OK) return st;
    srv->tcp =
        evconnlistener_new_bind(srv->base, on_accept, srv,
                                LEV_OPT_CLOSE_ON_FREE | LEV_OPT_REUSEABLE | LEV_OPT_CLOSE_ON_EXEC,
                                1024, (struct sockaddr *)&ss, (int)len);
    if (!srv->tcp)
        return dsc_error_set(err, DSC_IO, "listen: cannot bind %s: %s", srv->cfg.listen,
                             strerror(errno));
    evconnlistener_set_error_cb(srv->tcp, dsc__accept_error_cb);
    srv->tcp_port = bound_port(evconnlistener_get_fd(srv->tcp));
    dsc_log_write(&srv->log, DSC_LOG_INFO, "listening", "transport=tcp addr=%s port=%d",
                  srv->cfg.listen, srv->tcp_port);
    return DSC_OK;
}

static void make_parent_dir(const char *path);

/* Make path free for a new socket. Nothing there, or a socket of ours that nobody
 * listens on (left by a crash): fine, the stale one is removed. Anything else is
 * reported with its path and left alone, never followed: a symbolic link, a file
 * that is not a socket, a socket of another user, a socket with a live listener. */
static dsc_status clear_unix_path(dsc_server *srv, const struct sockaddr_un *sun, dsc_error *err) {
    const char *path = sun->sun_path;
    struct stat st;
    if (lstat(path, &st) != 0)
        return errno == ENOENT ? DSC_OK
                               : dsc_error_set(err, DSC_IO, "unix: cannot inspect %s: %s", path,
                                               strerror(errno));
    if (S_ISLNK(st.st_mode))
        return dsc_error_set(err, DSC_IO,
                             "unix: %s is a symbolic link; refusing to follow or remove it", path);
    if (!S_ISSOCK(st.st_mode))
        return dsc_error_set(err, DSC_IO,
                             "unix: %s exists and is not a socket; refusing to remove it", path);
    if (st.st_uid != geteuid())
        return dsc_error_set(err, DSC_IO,
                             "unix: %s is a socket of uid %u, not ours (%u); refusing to remove it",
                             path, (unsigned)st.st_uid, (unsigned)geteuid());
    /* Non-blocking: a listener with a full backlog answers EAGAIN instead of making
     * the start wait. */
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0) return dsc_error_set(err, DSC_IO, "unix: socket: %s", strerror(errno));
    int rc = connect(fd, (const struct sockaddr *)sun, sizeof *sun), e = errno;
    close(fd);
    if (rc == 0 || e == EAGAIN)
        return dsc_error_set(err, DSC_IO,
                             "unix: %s is in use by a running server (another discernd?)", path);
    if (e != ECONNREFUSED)
        return dsc_error_set(err, DSC_IO, "unix: cannot probe %s: %s", path, strerror(e));
    if (unlink(path) != 0)
        return dsc_error_set(err, DSC_IO, "unix: cannot remove the stale socket %s: %s", path,
                             strerror(errno));
    dsc_log_write(&srv->log, DSC_LOG_INFO, "unix_stale_removed", "path=%s", path);
    return DSC_OK;
}

/* bind, chmod, then listen: until listen nobody can connect, so the socket is never
 * reachable with the mode the umask gave it. The umask itself is left alone (it is
 * the process's, and other threads create files). */
static dsc_status bind_unix(dsc_server *srv, const struct sockaddr_un *sun, dsc_error *err) {
    const char *path = sun->sun_path;
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0) return dsc_error_set(err, DSC_IO, "unix: socket: %s", strerror(errno));
    if (bind(fd, (const struct sockaddr *)sun, sizeof *sun) != 0) {
        dsc_error_set(err, DSC_IO, "unix: cannot bind %s: %s", path, strerror(errno));
        goto fail;
    }
    if (chmod(path, (mode_t)srv->cfg.unix_mode) != 0 || listen(fd, 1024) != 0) {
        dsc_error_set(err, DSC_IO, "unix: cannot set up %s: %s", path, strerror(errno));
        unlink(path);
        goto fail;
    }
    srv->unix_listener = evconnlistener_new(srv->base, on_accept, srv,
                                            LEV_OPT_CLOSE_ON_FREE | LEV_OPT_CLOSE_ON_EXEC, 0, fd);
    if (srv->unix_listener) return DSC_OK;
    dsc_error_set(err, DSC_NOMEM, "unix: listener");
    unlink(path);
fail:
    close(fd);
    return err->code;
}

static dsc_status listen_unix(dsc_server *srv, dsc_error *err) {
    struct sockaddr_un sun;
    memset(&sun, 0, sizeof sun);
    sun.sun_family = AF_UNIX;
    if (strlen(srv->cfg.unix_path) >= sizeof sun.sun_path)
        return dsc_error_set(err, DSC_BAD_REQUEST, "unix: path longer than %zu bytes",
                             sizeof sun.sun_path - 1);
    strcpy(sun.sun_path, srv->cfg.unix_path);
    make_parent_dir(sun.sun_path);
    dsc_status st = clear_unix_path(srv, &sun, err);
    if (st == DSC_OK) st = bind_unix(srv, &sun, err);
    if (st != DSC_OK) return st;
    evconnlistener_set_error_cb(srv->unix_listener, dsc__accept_error_cb);
    dsc_log_write(&srv->log, DSC_LOG_INFO, "listening", "transport=unix path=%s mode=%04o",
                  sun.sun_path, (unsigned)srv->cfg.unix_mode);
    return DSC_OK;
}

static void write_port_file(dsc_server *srv) {
    if (!srv->cfg.port_file[0]) return;
    char tmp[DSC_CONFIG_STR_MAX + 8];
    snprintf(tmp, sizeof tmp, "%s.tmp", srv->cfg.port_file);
    FILE *f = fopen(tmp, "w");
    if (!f) return;
    fprintf(f, "%d\n%d\n", srv->tcp_port, srv->http_port);
    fclose(f);
    rename(tmp, srv->cfg.port_file); /* atomic: readers never see half a file */
}

/* -------------------------------------------------------------------- signals -- */

static void begin_stop(dsc_server *srv) {
    if (srv->stopping) return;
    srv->stopping = true;
    dsc_log_write(&srv->log, DSC_LOG_INFO, "draining", "connections=%d",
                  atomic_load(&srv->connections));
    if (srv->tcp) evconnlistener_free(srv->tcp), srv->tcp = NULL;
    if (srv->unix_listener) {
        evconnlistener_free(srv->unix_listener);
        srv->unix_listener = NULL;
        unlink(srv->cfg.unix_path);
    }
    event_base_loopexit(srv->base, NULL);
}

static void on_signal(evutil_socket_t sig, short what, void *arg) {
    (void)what;
    dsc_server *srv = arg;
    if (sig == SIGHUP) {
        dsc_error err;
        dsc_log_write(&srv->log, DSC_LOG_INFO, "sighup", "action=reload");
        dsc__server_reload(srv, &err); /* logs its outcome; the old state stays on failure */
        return;
    }
    begin_stop(srv);
}

static void on_stop_request(evutil_socket_t fd, short what, void *arg) {
    (void)fd;
    (void)what;
    begin_stop(arg);
}

void dsc_server_stop(dsc_server *srv) {
    event_active(srv->sig_stop_request, EV_READ, 0);
}

/* --------------------------------------------------------------------- ledger -- */

/* Bytes free on the store's file system (-1: memory store or unknown), exported as
 * discern_store_free_bytes; a warning when it falls below store_free_warn_bytes, a
 * line when it is above again. A full disk is seen here before a commit fails. */
static void watch_store_disk(dsc_server *srv) {
    if (!srv->cfg.store[0] || dsc__store_url_is_redis(srv->cfg.store)) return;
    char dir[DSC_CONFIG_STR_MAX];
    snprintf(dir, sizeof dir, "%s", srv->cfg.store);
    char *slash = strrchr(dir, '/');
    if (!slash)
        strcpy(dir, ".");
    else if (slash == dir)
        dir[1] = '\0';
    else
        *slash = '\0';
    struct statvfs vfs;
    if (statvfs(dir, &vfs) != 0) return;
    int64_t free_bytes = (int64_t)vfs.f_bavail * (int64_t)vfs.f_frsize;
    atomic_store(&srv->store_free_bytes, free_bytes);
    int64_t warn = srv->cfg.store_free_warn_bytes;
    bool low = warn > 0 && free_bytes < warn;
    if (low == srv->store_disk_low) return;
    srv->store_disk_low = low;
    dsc_log_write(&srv->log, low ? DSC_LOG_WARN : DSC_LOG_INFO,
                  low ? "store_disk_low" : "store_disk_ok",
                  "free_bytes=%lld store_free_warn_bytes=%lld dir=%s", (long long)free_bytes,
                  (long long)warn, dir);
}

static void on_tick(evutil_socket_t fd, short what, void *arg) {
    (void)fd;
    (void)what;
    dsc_server *srv = arg;
    watch_store_disk(srv);
    size_t expired = dsc_ledger_tick(srv->ledger);
    if (expired) dsc_log_write(&srv->log, DSC_LOG_INFO, "holds_expired", "count=%zu", expired);
    dsc__authlimit_report(srv->authlimit, &srv->log, dsc__now_us());
}

/* Create the folder of the store or the Unix socket (one level: "var/" of
 * "var/discern.db") when missing. */
static void make_parent_dir(const char *path) {
    char dir[DSC_CONFIG_STR_MAX];
    snprintf(dir, sizeof dir, "%s", path);
    char *slash = strrchr(dir, '/');
    if (!slash || slash == dir) return;
    *slash = '\0';
    if (mkdir(dir, 0755) != 0 && errno != EEXIST) return; /* the store's open reports it */
}

static dsc_status open_ledger(dsc_server *srv, dsc_error *err) {
    static const dsc_durability durabilities[] = {DSC_DURABILITY_FULL, DSC_DURABILITY_BATCH,
                                                  DSC_DURABILITY_OFF};
    static const char *const names[] = {"full", "batch", "off"};
    dsc_ledger_config lc;
    memset(&lc, 0, sizeof lc);
    /* A Redis URL is never taken for a file name: with a Redis store the process's
     * ledger is memory-only and keeps the budget definitions read from Redis, and
     * every counter and hold lives in Redis (ledger_redis.c). */
    bool redis = dsc__store_url_is_redis(srv->cfg.store);
    srv->lops = redis ? &dsc__ledger_redis : &dsc__ledger_local;
    if (redis && dsc__ledger_redis_open(srv, err) != DSC_OK) return err->code;
    lc.store_path = srv->cfg.store[0] && !redis ? srv->cfg.store : NULL;
    if (!redis) make_parent_dir(srv->cfg.store);
    for (int i = 0; i < 3; i++)
        if (strcmp(srv->cfg.durability, names[i]) == 0) lc.durability = durabilities[i];
    lc.timezone = srv->cfg.timezone;
    lc.journal_retention_s = srv->cfg.journal_retention_days * 86400;
    srv->ledger = dsc_ledger_new(&lc, err);
    if (!srv->ledger) return err->code;
    struct timeval second = {1, 0};
    atomic_init(&srv->store_free_bytes, -1);
    watch_store_disk(srv);
    srv->tick = event_new(srv->base, -1, EV_PERSIST, on_tick, srv);
    if (!srv->tick) return dsc_error_set(err, DSC_NOMEM, "tick event");
    event_add(srv->tick, &second);
    char where[DSC_CONFIG_STR_MAX];
    snprintf(where, sizeof where, "%s", lc.store_path ? lc.store_path : "(memory)");
    if (redis) dsc__ledger_redis_describe(srv, where, sizeof where);
    dsc_log_write(&srv->log, DSC_LOG_INFO, "ledger_open", "store=%s durability=%s", where,
                  srv->cfg.durability);
    return DSC_OK;
}

/* --------------------------------------------------------------------- server -- */

static int default_workers(void) {
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n < 1 ? 1 : n > 64 ? 64 : (int)n;
}

static dsc_status setup_signals(dsc_server *srv, dsc_error *err) {
    srv->sig_term = evsignal_new(srv->base, SIGTERM, on_signal, srv);
    srv->sig_int = evsignal_new(srv->base, SIGINT, on_signal, srv);
    srv->sig_hup = evsignal_new(srv->base, SIGHUP, on_signal, srv);
    srv->sig_stop_request = event_new(srv->base, -1, EV_PERSIST, on_stop_request, srv);
    if (!srv->sig_term || !srv->sig_int || !srv->sig_hup || !srv->sig_stop_request)
        return dsc_error_set(err, DSC_NOMEM, "signal events");
    event_add(srv->sig_term, NULL);
    event_add(srv->sig_int, NULL);
    event_add(srv->sig_hup, NULL);
    event_add(srv->sig_stop_request, NULL);
    return DSC_OK;
}

static dsc_status start_workers(dsc_server *srv, dsc_error *err) {
    srv->n_workers = srv->cfg.workers > 0 ? srv->cfg.workers : default_workers();
    srv->workers = calloc((size_t)srv->n_workers, sizeof *srv->workers);
    if (!srv->workers) return dsc_error_set(err, DSC_NOMEM, "workers");
    for (int i = 0; i < srv->n_workers; i++) {
        dsc_status st = worker_init(srv, &srv->workers[i], i, err);
        if (st != DSC_OK) return st;
    }
    return DSC_OK;
}

dsc_server *dsc_server_new(const dsc_server_config *cfg, dsc_error *err) {
    if (evthread_use_pthreads() != 0) {
        dsc_error_set(err, DSC_INTERNAL, "libevent has no pthreads support");
        return NULL;
    }
    if (dsc_server_config_check(cfg, err) != DSC_OK) return NULL;
    dsc_server *srv = calloc(1, sizeof *srv);
    if (!srv) {
        dsc_error_set(err, DSC_NOMEM, "server");
        return NULL;
    }
    srv->cfg = *cfg;
    srv->log.level = cfg->log_level;
    srv->log.fd = 2;
    srv->started_us = dsc__now_us();
    dsc__accept_raise_nofile(srv);
    pthread_mutex_init(&srv->state_lock, NULL);
    pthread_mutex_init(&srv->http_lock, NULL);
    srv->grid = dsc_grid_new();
    srv->authlimit = dsc__authlimit_new();
    if (!srv->grid || !srv->authlimit) {
        dsc_error_set(err, DSC_NOMEM, "out of memory for the grid and auth tables");
        goto fail;
    }
    if (dsc__server_reload(srv, err) != DSC_OK) goto fail;
    srv->base = event_base_new();
    if (!srv->base) {
        dsc_error_set(err, DSC_INTERNAL, "cannot create an event loop");
        goto fail;
    }
    if (setup_signals(srv, err) != DSC_OK) goto fail;
    if (open_ledger(srv, err) != DSC_OK) goto fail;
    if (!(srv->keys = dsc__keys_open(srv->redis ? "" : cfg->store, err))) goto fail;
    if (cfg->store[0] && !srv->redis && !(srv->reporter = dsc_reporter_new(cfg->store))) {
        dsc_error_set(err, DSC_NOMEM, "out of memory for the reporter");
        goto fail;
    }
    if (start_workers(srv, err) != DSC_OK) goto fail;
    if (cfg->listen[0] && listen_tcp(srv, err) != DSC_OK) goto fail;
    if (cfg->unix_path[0] && listen_unix(srv, err) != DSC_OK) goto fail;
    if (cfg->http[0] && dsc__http_start(srv, err) != DSC_OK) goto fail;
    if (dsc__accept_init(srv, err) != DSC_OK) goto fail;
    write_port_file(srv);
    dsc_log_write(&srv->log, DSC_LOG_INFO, "started", "workers=%d version=%s", srv->n_workers,
                  DISCERN_VERSION);
    return srv;
fail:
    dsc_server_free(srv);
    return NULL;
}

int dsc_server_run(dsc_server *srv) {
    event_base_dispatch(srv->base);
    begin_stop(srv);
    for (int i = 0; i < srv->n_workers; i++)
        worker_join(&srv->workers[i]);
    /* Every reply is out; now make sure everything acknowledged is in the store. */
    dsc_ledger_free(srv->ledger);
    srv->ledger = NULL;
    /* The flush reported the last commits; their connections are closed, so this
     * only frees the jobs (the worker threads are gone: no race). */
    for (int i = 0; i < srv->n_workers; i++)
        dsc__jobs_run_completed(&srv->workers[i]);
    dsc_log_write(&srv->log, DSC_LOG_INFO, "stopped", "exit_code=%d", srv->exit_code);
    return srv->exit_code;
}

void dsc_server_free(dsc_server *srv) {
    if (!srv) return;
    for (int i = 0; i < srv->n_workers && srv->workers; i++)
        worker_join(&srv->workers[i]);
    dsc_reporter_free(srv->reporter); /* the workers waited for its reports */
    for (int i = 0; i < srv->n_workers && srv->workers; i++)
        worker_destroy(&srv->workers[i]);
    free(srv->workers);
    if (srv->tcp) evconnlistener_free(srv->tcp);
    if (srv->unix_listener) {
        evconnlistener_free(srv->unix_listener);
        unlink(srv->cfg.unix_path);
    }
    if (srv->sig_term) event_free(srv->sig_term);
    if (srv->sig_int) event_free(srv->sig_int);
    if (srv->sig_hup) event_free(srv->sig_hup);
    if (srv->sig_stop_request) event_free(srv->sig_stop_request);
    /* Freeing the signal events put back the default action: a second SIGTERM (a
     * supervisor's, a test's) must not kill a stop already under way halfway
     * through the teardown below. */
    if (srv->sig_term) signal(SIGTERM, SIG_IGN), signal(SIGINT, SIG_IGN);
    if (srv->tick) event_free(srv->tick);
    dsc__http_api_free(srv);
    if (srv->http) evhttp_free(srv->http);
    dsc__accept_free(srv);
    dsc_ledger_free(srv->ledger);
    dsc__ledger_redis_free(srv);
    if (srv->base) event_base_free(srv->base);
    dsc__state_unref(srv->state);
    dsc_grid_free(srv->grid);
    dsc__authlimit_free(srv->authlimit);
    dsc__keys_free(srv->keys);
    pthread_mutex_destroy(&srv->state_lock);
    pthread_mutex_destroy(&srv->http_lock);
    free(srv);
}
