/*
 * http.c - the operators' HTTP listener (evhttp, on the main thread's event loop):
 *
 *   GET /healthz      200 {"status":"ok",...} or 503 {"status":"store_unavailable",...}
 *   GET /metrics      Prometheus text exposition (metrics.c)
 *   GET /v1/budgets   {"budgets":[{selector, metric, window, limit, unit}]}; with
 *                     ?org=&team=&user=&key= the budgets of that subject with their
 *                     used/held/remaining instead
 *
 * Read-only: nothing here changes the ledger, so it needs no token; bind it to a
 * loopback or otherwise trusted address.
 */
#include "server_internal.h"

#include <arpa/inet.h>
#include <event2/buffer.h>
#include <event2/keyvalq_struct.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>

static void reply_json(struct evhttp_request *req, int code, const char *reason, json_t *body) {
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
    evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type", "application/json");
    evhttp_send_reply(req, code, reason, out);
    evbuffer_free(out);
}

static void on_healthz(struct evhttp_request *req, void *arg) {
    dsc_server *srv = arg;
    dsc_ledger_stats ls;
    dsc_ledger_stats_get(srv->ledger, &ls);
    json_t *body = json_pack(
        "{s:s, s:b, s:i, s:s}", "status", ls.store_ok ? "ok" : "store_unavailable", "store_ok",
        ls.store_ok, "connections", atomic_load(&srv->connections), "version", DISCERN_VERSION);
    reply_json(req, ls.store_ok ? 200 : 503, ls.store_ok ? "OK" : "Service Unavailable", body);
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

static json_t *budget_definitions(dsc_server *srv) {
    json_t *list = json_array();
    dsc_budget_info page[64];
    for (size_t off = 0; list;) {
        size_t got = dsc_ledger_budget_list(srv->ledger, off, page, 64, NULL);
        for (size_t i = 0; i < got; i++)
            json_array_append_new(
                list, json_pack("{s:s, s:s, s:s, s:f, s:s}", "selector", page[i].selector, "metric",
                                dsc_metric_name(page[i].metric), "window", page[i].window, "limit",
                                dsc_amount_to_api(page[i].limit), "unit",
                                dsc_metric_unit(page[i].metric)));
        if (got < 64) break;
        off += got;
    }
    return list;
}

static json_t *budget_states(dsc_server *srv, const dsc_subject *subject, dsc_error *err) {
    dsc_budget_state states[64];
    size_t n = 0;
    if (dsc_ledger_preview(srv->ledger, subject, NULL, states, 64, &n, err) != DSC_OK) return NULL;
    if (n > 64) n = 64;
    json_t *list = json_array();
    for (size_t i = 0; list && i < n; i++) {
        const dsc_budget_state *b = &states[i];
        json_array_append_new(
            list,
            json_pack("{s:s, s:s, s:s, s:s, s:f, s:f, s:f, s:f, s:I}", "selector", b->selector,
                      "counter", b->counter, "metric", dsc_metric_name(b->metric), "window",
                      b->window, "limit", dsc_amount_to_api(b->limit), "used",
                      dsc_amount_to_api(b->used), "held", dsc_amount_to_api(b->held), "remaining",
                      dsc_amount_to_api(b->remaining), "resets_at", (json_int_t)b->resets_at));
    }
    return list;
}

int dsc__http_query_subject(const char *query, struct evkeyvalq *q, dsc_subject *subject) {
    TAILQ_INIT(q);
    if (query && evhttp_parse_query_str(query, q) != 0) return -1;
    *subject = (dsc_subject){evhttp_find_header(q, "org"), evhttp_find_header(q, "team"),
                             evhttp_find_header(q, "user"), evhttp_find_header(q, "key")};
    return subject->org || subject->team || subject->user || subject->key;
}

static void on_budgets(struct evhttp_request *req, void *arg) {
    dsc_server *srv = arg;
    struct evkeyvalq q;
    dsc_subject subject;
    const char *query = evhttp_uri_get_query(evhttp_request_get_evhttp_uri(req));
    int by_subject = dsc__http_query_subject(query, &q, &subject);
    if (by_subject < 0) {
        evhttp_clear_headers(&q);
        reply_json(req, 400, "Bad Request",
                   json_pack("{s:s, s:s}", "code", "bad_request", "message", "bad query"));
        return;
    }
    dsc_error err;
    dsc_error_clear(&err);
    json_t *list = by_subject ? budget_states(srv, &subject, &err) : budget_definitions(srv);
    evhttp_clear_headers(&q);
    if (!list) {
        reply_json(
            req, 400, "Bad Request",
            json_pack("{s:s, s:s}", "code", dsc_status_wire(err.code), "message", err.message));
        return;
    }
    reply_json(req, 200, "OK", json_pack("{s:o}", "budgets", list));
}

static void on_other(struct evhttp_request *req, void *arg) {
    (void)arg;
    reply_json(req, 404, "Not Found",
               json_pack("{s:s, s:s}", "code", "not_found", "message",
                         "try /healthz, /metrics or /v1/budgets"));
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
    evhttp_set_allowed_methods(srv->http, EVHTTP_REQ_GET | EVHTTP_REQ_HEAD);
    evhttp_set_cb(srv->http, "/healthz", on_healthz, srv);
    evhttp_set_cb(srv->http, "/metrics", on_metrics, srv);
    evhttp_set_cb(srv->http, "/v1/budgets", on_budgets, srv);
    evhttp_set_gencb(srv->http, on_other, srv);
    evhttp_set_timeout(srv->http, 30);
    struct evhttp_bound_socket *sock =
        evhttp_bind_socket_with_handle(srv->http, host, (ev_uint16_t)port);
    if (!sock) return dsc_error_set(err, DSC_IO, "http: cannot bind %s", srv->cfg.http);
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
