/*
 * http.c - the operators' HTTP listener (evhttp, on the main thread's event loop):
 *
 *   GET /healthz      200 {"status":"ok",...} or 503 {"status":"store_unavailable",...}
 *   GET /metrics      Prometheus text exposition (metrics.c)
 *   GET /v1/budgets   {"budgets":[{selector, metric, window, limit, unit}]}; with
 *                     ?org=&team=&user=&key= the budgets of that subject with their
 *                     used/held/remaining instead. Needs `Authorization: Bearer <key
 *                     token or admin token>` (unless require_auth = false) and shows
 *                     only what the key's scope covers, as budget.list / budget.get.
 *
 * Read-only: nothing here changes the ledger. /metrics and /healthz are for
 * operators and take no token: bind the listener to a loopback or otherwise trusted
 * address (docs/operations.md, "Securing discernd").
 */
#include "server_internal.h"

#include <arpa/inet.h>
#include <event2/buffer.h>
#include <event2/keyvalq_struct.h>
#include <jansson.h>
#include <openssl/crypto.h>
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

static void reply_error(struct evhttp_request *req, int code, const char *reason,
                        const dsc_error *err) {
    reply_json(
        req, code, reason,
        json_pack("{s:s, s:s}", "code", dsc_status_wire(err->code), "message", err->message));
}

/* The scope of the request's Bearer token into sc; DSC_UNAUTHORIZED without a valid
 * one (none needed when require_auth is off: then everything). */
static dsc_status bearer_scope(dsc_server *srv, struct evhttp_request *req, dsc__scope *sc,
                               dsc_error *err) {
    const char *h = evhttp_find_header(evhttp_request_get_input_headers(req), "Authorization");
    memset(sc, 0, sizeof *sc);
    if (!h || strncmp(h, "Bearer ", 7) != 0)
        return srv->cfg.require_auth
                   ? dsc_error_set(err, DSC_UNAUTHORIZED,
                                   "needs an Authorization: Bearer <token> header")
                   : DSC_OK;
    const char *token = h + 7, *admin = srv->cfg.admin_token;
    if (admin[0] && strlen(token) == strlen(admin) &&
        CRYPTO_memcmp(token, admin, strlen(admin)) == 0)
        return DSC_OK;
    dsc__key_info k;
    if (dsc__keys_auth(srv->keys, token, dsc__now_us() / 1000000, &k) != DSC_OK)
        return dsc_error_set(err, DSC_UNAUTHORIZED, "the Bearer token is no valid key");
    *sc = k.scope;
    return DSC_OK;
}

static json_t *budget_definitions(dsc_server *srv, const dsc__scope *sc) {
    json_t *list = json_array();
    dsc_budget_info page[64];
    for (size_t off = 0; list;) {
        size_t got = dsc_ledger_budget_list(srv->ledger, off, page, 64, NULL);
        for (size_t i = 0; i < got; i++)
            if (dsc__scope_meets_selector(sc, page[i].selector))
                json_array_append_new(
                    list, json_pack("{s:s, s:s, s:s, s:f, s:s}", "selector", page[i].selector,
                                    "metric", dsc_metric_name(page[i].metric), "window",
                                    page[i].window, "limit", dsc_amount_to_api(page[i].limit),
                                    "unit", dsc_metric_unit(page[i].metric)));
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
    dsc__scope sc;
    if (bearer_scope(srv, req, &sc, &err) != DSC_OK) {
        evhttp_clear_headers(&q);
        reply_error(req, 401, "Unauthorized", &err);
        return;
    }
    dsc__subject_buf s;
    memset(&s, 0, sizeof s);
    const char *part[4] = {subject.org, subject.team, subject.user, subject.key};
    char *buf[4] = {s.org, s.team, s.user, s.key};
    static const char *const names[] = {"org", "team", "user", "key"};
    bool too_long = false, not_utf8 = false;
    for (int i = 0; i < 4; i++)
        if (part[i]) {
            too_long |= strlen(part[i]) >= DSC_NAME_MAX;
            /* The subject of a query, like every string a client sends, must be UTF-8. */
            if (!not_utf8 && !dsc_rpc_utf8_valid(part[i], strlen(part[i]))) {
                dsc_error_set(&err, DSC_BAD_REQUEST, "field '%s': not valid UTF-8", names[i]);
                not_utf8 = true;
            }
            snprintf(buf[i], DSC_NAME_MAX, "%s", part[i]);
        }
    evhttp_clear_headers(&q);
    if (too_long && !not_utf8) dsc_error_set(&err, DSC_BAD_REQUEST, "a subject part is too long");
    too_long |= not_utf8;
    if (by_subject && !too_long &&
        dsc__scope_apply(&sc, s.org, s.team, s.user, DSC_NAME_MAX, &err) == DSC_FORBIDDEN) {
        reply_error(req, 403, "Forbidden", &err);
        return;
    }
    s.subject = (dsc_subject){s.org, s.team, s.user, s.key};
    json_t *list = too_long     ? NULL
                   : by_subject ? budget_states(srv, &s.subject, &err)
                                : budget_definitions(srv, &sc);
    if (!list) {
        reply_error(req, 400, "Bad Request", &err);
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
