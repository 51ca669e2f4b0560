/*
 * http.c - the operators' HTTP listener (evhttp, on the main thread's event loop):
 *
 *   GET /healthz      200 {"status":"ok",...} or 503 {"status":"store_unavailable",...}
 *   GET /metrics      Prometheus text exposition (metrics.c)
 *   GET /v1/budgets   {"budgets":[{selector, metric, window, limit, unit}]}; with
 *                     ?org=&team=&user=&key= the budgets of that subject with their
 *                     used/held/remaining instead. Needs `Authorization: Bearer <key
 *                     token or admin token>` (unless require_auth = false): answered by
 *                     budget.list / budget.get through the method layer (roles,
 *                     scope, the failed-auth limiter), the result map alone.
 *
 *   POST /v1/<method> the JSON API: every method of the table (http_api.c)
 *   GET /, /<file>    the console's files from the www folder (http_static.c)
 *
 * /metrics and /healthz are for operators and take no token: bind the listener to
 * a loopback or otherwise trusted address (docs/operations.md, "Securing discernd").
 */
#include "http.h"
#include "methods.h"

#include <arpa/inet.h>
#include <event2/buffer.h>
#include <event2/keyvalq_struct.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>

static const char *http_reason(int status) {
    switch (status) {
    case 200:
        return "OK";
    case 400:
        return "Bad Request";
    case 401:
        return "Unauthorized";
    case 403:
        return "Forbidden";
    case 404:
        return "Not Found";
    case 409:
        return "Conflict";
    case 413:
        return "Payload Too Large";
    case 415:
        return "Unsupported Media Type";
    case 429:
        return "Too Many Requests";
    case 503:
        return "Service Unavailable";
    case 504:
        return "Gateway Timeout";
    default:
        return "Internal Server Error";
    }
}

void dsc__http_reply_json(struct evhttp_request *req, int status, json_t *body, bool api) {
    char *text = body ? json_dumps(body, JSON_COMPACT) : NULL;
    json_decref(body);
    struct evbuffer *out = evbuffer_new();
    if (!out || !text) {
        free(text);
        if (out) evbuffer_free(out);
        evhttp_send_error(req, 500, "out of memory");
        return;
    }
    evbuffer_add(out, text, strlen(text));
    evbuffer_add(out, "\n", 1);
    free(text);
    struct evkeyvalq *h = evhttp_request_get_output_headers(req);
    evhttp_add_header(h, "Content-Type", "application/json");
    if (api) {
        evhttp_add_header(h, "Cache-Control", "no-store");
        evhttp_add_header(h, "X-Content-Type-Options", "nosniff");
    }
    evhttp_send_reply(req, status, http_reason(status), out);
    evbuffer_free(out);
}

static void on_healthz(struct evhttp_request *req, void *arg) {
    dsc_server *srv = arg;
    bool ok = srv->lops->healthy(srv);
    json_t *body = json_pack("{s:s, s:b, s:i, s:s, s:s}", "status", ok ? "ok" : "store_unavailable",
                             "store_ok", ok, "connections", atomic_load(&srv->connections),
                             "version", DISCERN_VERSION, "store", srv->lops->name);
    dsc__http_reply_json(req, ok ? 200 : 503, body, false);
}

static void on_metrics(struct evhttp_request *req, void *arg) {
    size_t len = 0;
    char *text = dsc__metrics_render(arg, &len);
    struct evbuffer *out = evbuffer_new();
    if (!text || !out) {
        free(text);
        if (out) evbuffer_free(out);
        evhttp_send_error(req, 500, "out of memory");
        return;
    }
    evbuffer_add(out, text, len);
    free(text);
    evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type",
                      "text/plain; version=0.0.4; charset=utf-8");
    evhttp_send_reply(req, 200, "OK", out);
    evbuffer_free(out);
}

/* The budgets of the Bearer key's scope, through the method layer (http_api.c). */
static void on_budgets(struct evhttp_request *req, void *arg) {
    dsc__http_api_budgets(arg, req);
}

/* POST /v1/<method>: the JSON API (http_api.c); any other path: the console's files
 * (http_static.c). */
static void on_other(struct evhttp_request *req, void *arg) {
    dsc_server *srv = arg;
    const char *path = evhttp_uri_get_path(evhttp_request_get_evhttp_uri(req));
    if (!path) path = "/";
    if (strncmp(path, "/v1/", 4) == 0) {
        dsc__http_api_call(srv, req, path + 4);
        return;
    }
    dsc__http_static(srv, req, path);
}

dsc_status dsc__http_start(dsc_server *srv, dsc_error *err) {
    struct sockaddr_storage ss;
    socklen_t len = 0;
    dsc_status st = dsc__parse_hostport("http", srv->cfg.http, &ss, &len, err);
    if (st != DSC_OK) return st;
    char host[64];
    snprintf(host, sizeof host, "%.*s", (int)(strrchr(srv->cfg.http, ':') - srv->cfg.http),
             srv->cfg.http);
    if (host[0] == '[') {
        memmove(host, host + 1, strlen(host));
        host[strlen(host) - 1] = '\0';
    }
    int port = atoi(strrchr(srv->cfg.http, ':') + 1);
    srv->http = evhttp_new(srv->base);
    if (!srv->http) return dsc_error_set(err, DSC_NOMEM, "http listener");
    if (dsc__http_api_init(srv, err) != DSC_OK || dsc__http_www_resolve(srv, err) != DSC_OK)
        return err->code;
    evhttp_set_allowed_methods(srv->http, EVHTTP_REQ_GET | EVHTTP_REQ_HEAD | EVHTTP_REQ_POST);
    /* Bodies are JSON API params: bounded like a MessagePack message. */
    evhttp_set_max_body_size(srv->http, (ev_ssize_t)srv->cfg.limits.max_message_bytes);
    evhttp_set_max_headers_size(srv->http, 16 * 1024);
    evhttp_set_cb(srv->http, "/healthz", on_healthz, srv);
    evhttp_set_cb(srv->http, "/metrics", on_metrics, srv);
    evhttp_set_cb(srv->http, "/v1/budgets", on_budgets, srv);
    evhttp_set_gencb(srv->http, on_other, srv);
    evhttp_set_timeout(srv->http, 30);
    struct evhttp_bound_socket *sock =
        evhttp_bind_socket_with_handle(srv->http, host, (ev_uint16_t)port);
    if (!sock) return dsc_error_set(err, DSC_IO, "http: cannot bind %s", srv->cfg.http);
    /* Out of descriptors, libevent would retry accept at once, forever (accept.c). */
    srv->http_listener = evhttp_bound_socket_get_listener(sock);
    evconnlistener_set_error_cb(srv->http_listener, dsc__accept_http_error_cb);
    struct sockaddr_storage bound;
    socklen_t blen = sizeof bound;
    evutil_socket_t fd = evhttp_bound_socket_get_fd(sock);
    if (getsockname(fd, (struct sockaddr *)&bound, &blen) == 0)
        srv->http_port = bound.ss_family == AF_INET6
                             ? ntohs(((struct sockaddr_in6 *)&bound)->sin6_port)
                             : ntohs(((struct sockaddr_in *)&bound)->sin_port);
    dsc_log_write(&srv->log, DSC_LOG_INFO, "listening", "transport=http addr=%s port=%d",
                  srv->cfg.http, srv->http_port);
    return DSC_OK;
}
