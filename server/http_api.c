/*
 * http_api.c - the JSON API: POST /v1/<method> for every method of the table
 * (methods.c), answered by the same handlers as MessagePack-RPC.
 *
 * Main thread: the body (at most max_message_bytes, evhttp enforces it) is parsed by
 * jansson (valid UTF-8, no NUL, no duplicate keys), packed as the MessagePack params
 * map and scanned by the RPC scanner against the same limits as a frame (depth,
 * items, objects, string bytes). The call goes to a worker with the Bearer token and
 * the peer's failed-auth key.
 *
 * Worker thread: the call runs on a connection without a socket (conn->http): the
 * token binds it like `auth` would (through the failed-auth limiter), then
 * dsc__dispatch runs the method exactly as for a frame; a call that waits for the
 * store finishes through its job like any other. The packed reply frame comes back
 * to the main thread (http_done, under http_lock), which converts it to
 * {"result": ...} or {"error": {code, message}} with the HTTP status of the code.
 * Neither thread ever waits for the store.
 */
#include "conn.h"
#include "http.h"

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/keyvalq_struct.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>

#define METHOD_MAX 64

struct dsc__http_call {
    struct evhttp_request *req; /* main thread only */
    char method[METHOD_MAX];
    char token[DSC_CONFIG_STR_MAX]; /* "" = no Authorization header */
    char peer[DSC__AUTHLIMIT_KEY_MAX];
    msgpack_sbuffer params; /* the packed params map */
    msgpack_sbuffer reply;  /* the packed reply frame [1, 0, error, result] */
    bool limited;           /* refused by the failed-auth limiter: 429 */
    bool bare;              /* GET /v1/budgets: the result (or error) map alone */
    struct dsc__http_call *next;
};

/* ------------------------------------------------------------- HTTP statuses -- */

/* The HTTP status of a wire code (docs/protocol.md, "HTTP/JSON API"). */
static int http_status(dsc_status st) {
    switch (st) {
    case DSC_OK:
        return 200;
    case DSC_BAD_REQUEST:
    case DSC_PARSE:
        return 400;
    case DSC_UNAUTHORIZED:
        return 401;
    case DSC_FORBIDDEN:
        return 403;
    case DSC_UNKNOWN_PROVIDER:
    case DSC_UNKNOWN_MODEL:
    case DSC_UNKNOWN_ZONE:
    case DSC_UNKNOWN_METRIC:
    case DSC_UNKNOWN_RESERVATION:
    case DSC_UNKNOWN_BUDGET:
        return 404;
    case DSC_BUDGET_EXCEEDED:
        return 409;
    case DSC_TOO_LARGE:
        return 413;
    case DSC_STORE_UNAVAILABLE:
    case DSC_NOMEM:
        return 503;
    case DSC_TIMEOUT:
        return 504;
    default:
        return 500;
    }
}

/* --------------------------------------------------------------- main thread -- */

/* A JSON API answer: not cached, not sniffed. */
static void send_json(struct evhttp_request *req, int status, json_t *body) {
    dsc__http_reply_json(req, status, body, true);
}

static void send_error(struct evhttp_request *req, int status, dsc_status code,
                       const char *message) {
    send_json(
        req, status,
        json_pack("{s:{s:s, s:s}}", "error", "code", dsc_status_wire(code), "message", message));
}

/* Pack v (a jansson value) as MessagePack; -1 past max_depth (the scanner names the
 * limit afterwards) or when packing fails. */
static int pack_json(msgpack_packer *pk, const json_t *v, uint32_t depth, uint32_t max_depth) {
    if (depth > max_depth) return -1;
    switch (json_typeof(v)) {
    case JSON_OBJECT: {
        const char *k;
        json_t *x;
        if (msgpack_pack_map(pk, (uint32_t)json_object_size(v)) != 0) return -1;
        json_object_foreach((json_t *)v, k, x) {
            if (dsc_rpc_pack_cstr(pk, k) != 0 || pack_json(pk, x, depth + 1, max_depth) != 0)
                return -1;
        }
        return 0;
    }
    case JSON_ARRAY: {
        size_t i;
        json_t *x;
        if (msgpack_pack_array(pk, (uint32_t)json_array_size(v)) != 0) return -1;
        json_array_foreach(v, i, x) {
            if (pack_json(pk, x, depth + 1, max_depth) != 0) return -1;
        }
        return 0;
    }
    case JSON_STRING:
        return msgpack_pack_str_with_body(pk, json_string_value(v), json_string_length(v));
    case JSON_INTEGER:
        return msgpack_pack_int64(pk, (int64_t)json_integer_value(v));
    case JSON_REAL:
        return msgpack_pack_double(pk, json_real_value(v));
    case JSON_TRUE:
        return msgpack_pack_true(pk);
    case JSON_FALSE:
        return msgpack_pack_false(pk);
    default:
        return msgpack_pack_nil(pk);
    }
}

/* The request body as packed params in call->params; an HTTP status and err when it
 * is not a JSON object within the RPC limits. */
static int read_params(dsc_server *srv, struct evhttp_request *req, dsc__http_call *call,
                       dsc_error *err) {
    struct evbuffer *in = evhttp_request_get_input_buffer(req);
    size_t len = evbuffer_get_length(in);
    const dsc_rpc_limits *lim = &srv->cfg.limits;
    if (len > lim->max_message_bytes) {
        dsc_error_set(err, DSC_TOO_LARGE, "body: %zu bytes exceed max_message_bytes %u", len,
                      (unsigned)lim->max_message_bytes);
        return 413;
    }
    json_t *body = json_object();
    if (len > 0) {
        json_decref(body);
        json_error_t je;
        body = json_loadb((const char *)evbuffer_pullup(in, -1), len, JSON_REJECT_DUPLICATES, &je);
        if (!body) {
            dsc_error_set(err, DSC_BAD_REQUEST, "body: not JSON: %s (at byte %d)", je.text,
                          je.position);
            return 400;
        }
    }
    if (!json_is_object(body)) {
        json_decref(body);
        dsc_error_set(err, DSC_BAD_REQUEST, "body: the params must be a JSON object");
        return 400;
    }
    /* In a frame the params map sits two levels down ([0, id, method, [params]]): the
     * body gets what is left of max_depth there. */
    dsc_rpc_limits body_lim = *lim;
    body_lim.max_depth = lim->max_depth > 3 ? lim->max_depth - 2 : 1;
    msgpack_packer pk;
    msgpack_packer_init(&pk, &call->params, msgpack_sbuffer_write);
    int r = pack_json(&pk, body, 1, body_lim.max_depth);
    json_decref(body);
    if (r != 0) {
        dsc_error_set(err, DSC_TOO_LARGE, "body: nesting deeper than %u levels",
                      (unsigned)body_lim.max_depth);
        return 413;
    }
    dsc_rpc_scanner sc;
    dsc_rpc_scanner_reset(&sc);
    size_t size = 0;
    dsc_rpc_scan_result sr = dsc_rpc_scan(&sc, &body_lim, (const uint8_t *)call->params.data,
                                          call->params.size, &size, err);
    if (sr == DSC_RPC_FRAME) return 200;
    if (err->code == DSC_OK) dsc_error_set(err, DSC_BAD_REQUEST, "body: cannot be packed");
    return err->code == DSC_TOO_LARGE ? 413 : 400;
}

/* Whether the request says its body is JSON (a browser form cannot, without a CORS
 * preflight that discernd never grants). */
static bool is_json(struct evhttp_request *req) {
    const char *ct = evhttp_find_header(evhttp_request_get_input_headers(req), "Content-Type");
    if (!ct) return evbuffer_get_length(evhttp_request_get_input_buffer(req)) == 0;
    size_t n = strlen("application/json");
    return strncasecmp(ct, "application/json", n) == 0 && (ct[n] == '\0' || ct[n] == ';');
}

static void read_token(struct evhttp_request *req, dsc__http_call *call) {
    const char *h = evhttp_find_header(evhttp_request_get_input_headers(req), "Authorization");
    if (h && strncasecmp(h, "Bearer ", 7) == 0)
        snprintf(call->token, sizeof call->token, "%s", h + 7);
    else if (h)
        snprintf(call->token, sizeof call->token, "%s", "\x01"); /* never a valid token */
    struct evhttp_connection *evcon = evhttp_request_get_connection(req);
    struct bufferevent *bev = evcon ? evhttp_connection_get_bufferevent(evcon) : NULL;
    dsc__authlimit_key(bev ? bufferevent_getfd(bev) : -1, call->peer, sizeof call->peer);
}

static void call_free(dsc__http_call *call) {
    if (!call) return;
    msgpack_sbuffer_destroy(&call->params);
    msgpack_sbuffer_destroy(&call->reply);
    memset(call->token, 0, sizeof call->token);
    free(call);
}

/* Hand the call with its params packed to a worker. */
static void submit(dsc_server *srv, struct evhttp_request *req, dsc__http_call *call,
                   const char *method) {
    call->req = req;
    snprintf(call->method, sizeof call->method, "%s", method);
    read_token(req, call);
    dsc__worker_post_call(srv, call);
}

static dsc__http_call *call_new(void) {
    dsc__http_call *call = calloc(1, sizeof *call);
    if (!call) return NULL;
    msgpack_sbuffer_init(&call->params);
    msgpack_sbuffer_init(&call->reply);
    return call;
}

int dsc__http_query_subject(const char *query, struct evkeyvalq *q, dsc_subject *subject) {
    TAILQ_INIT(q);
    if (query && evhttp_parse_query_str(query, q) != 0) return -1;
    *subject = (dsc_subject){evhttp_find_header(q, "org"), evhttp_find_header(q, "team"),
                             evhttp_find_header(q, "user"), evhttp_find_header(q, "key")};
    return subject->org || subject->team || subject->user || subject->key;
}

void dsc__http_api_budgets(dsc_server *srv, struct evhttp_request *req) {
    struct evkeyvalq q;
    dsc_subject subject;
    const char *query = evhttp_uri_get_query(evhttp_request_get_evhttp_uri(req));
    dsc__http_call *call = NULL;
    if (dsc__http_query_subject(query, &q, &subject) < 0) {
        evhttp_clear_headers(&q);
        send_json(req, 400, json_pack("{s:s, s:s}", "code", "bad_request", "message", "bad query"));
        return;
    }
    static const char *const names[] = {"org", "team", "user", "key"};
    const char *part[4] = {subject.org, subject.team, subject.user, subject.key};
    int n = 0;
    for (int i = 0; i < 4; i++)
        n += part[i] != NULL;
    if (!(call = call_new())) {
        evhttp_clear_headers(&q);
        send_error(req, 503, DSC_NOMEM, "out of memory");
        return;
    }
    /* The subject's parts as they came (the handler checks their UTF-8 and size). */
    msgpack_packer pk;
    msgpack_packer_init(&pk, &call->params, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, n > 0);
    if (n > 0) {
        dsc_rpc_pack_cstr(&pk, "subject");
        msgpack_pack_map(&pk, (size_t)n);
        for (int i = 0; i < 4; i++)
            if (part[i]) {
                dsc_rpc_pack_cstr(&pk, names[i]);
                msgpack_pack_str_with_body(&pk, part[i], strlen(part[i]));
            }
    }
    evhttp_clear_headers(&q);
    call->bare = true;
    submit(srv, req, call, n > 0 ? "budget.get" : "budget.list");
}

void dsc__http_api_call(dsc_server *srv, struct evhttp_request *req, const char *method) {
    size_t n = strlen(method);
    if (n == 0 || n >= METHOD_MAX || !dsc__method_exists(method, n)) {
        send_error(req, 404, DSC_BAD_REQUEST, "unknown method: see docs/protocol.md");
        return;
    }
    if (evhttp_request_get_command(req) != EVHTTP_REQ_POST) {
        evhttp_add_header(evhttp_request_get_output_headers(req), "Allow", "POST");
        send_error(req, 405, DSC_BAD_REQUEST, "call a method with POST and a JSON body");
        return;
    }
    if (!is_json(req)) {
        send_error(req, 415, DSC_BAD_REQUEST, "Content-Type: must be application/json");
        return;
    }
    dsc__http_call *call = call_new();
    if (!call) {
        send_error(req, 503, DSC_NOMEM, "out of memory");
        return;
    }
    dsc_error err;
    dsc_error_clear(&err);
    int status = read_params(srv, req, call, &err);
    if (status != 200) {
        call_free(call);
        send_error(req, status, err.code, err.message);
        return;
    }
    submit(srv, req, call, method);
}

/* Convert a decoded MessagePack value to jansson (NULL when out of memory). */
static json_t *to_json(const msgpack_object *o) {
    switch (o->type) {
    case MSGPACK_OBJECT_BOOLEAN:
        return json_boolean(o->via.boolean);
    case MSGPACK_OBJECT_POSITIVE_INTEGER:
        return json_integer((json_int_t)o->via.u64);
    case MSGPACK_OBJECT_NEGATIVE_INTEGER:
        return json_integer((json_int_t)o->via.i64);
    case MSGPACK_OBJECT_FLOAT32:
    case MSGPACK_OBJECT_FLOAT64:
        return isfinite(o->via.f64) ? json_real(o->via.f64) : json_null();
    case MSGPACK_OBJECT_STR:
        return json_stringn(o->via.str.ptr, o->via.str.size);
    case MSGPACK_OBJECT_ARRAY: {
        json_t *a = json_array();
        for (uint32_t i = 0; a && i < o->via.array.size; i++)
            if (json_array_append_new(a, to_json(&o->via.array.ptr[i])) != 0)
                json_decref(a), a = NULL;
        return a;
    }
    case MSGPACK_OBJECT_MAP: {
        json_t *m = json_object();
        for (uint32_t i = 0; m && i < o->via.map.size; i++) {
            const msgpack_object *k = &o->via.map.ptr[i].key;
            char key[256];
            snprintf(key, sizeof key, "%.*s",
                     k->type == MSGPACK_OBJECT_STR ? (int)k->via.str.size : 0,
                     k->type == MSGPACK_OBJECT_STR ? k->via.str.ptr : "");
            if (json_object_set_new(m, key, to_json(&o->via.map.ptr[i].val)) != 0)
                json_decref(m), m = NULL;
        }
        return m;
    }
    default:
        return json_null();
    }
}

/* The code of an error map {code, message}. */
static dsc_status error_code(const msgpack_object *e) {
    char code[64] = "internal";
    const msgpack_object *c = dsc_rpc_field(e, "code");
    if (c && c->type == MSGPACK_OBJECT_STR)
        snprintf(code, sizeof code, "%.*s", (int)c->via.str.size, c->via.str.ptr);
    return dsc_status_from_wire(code);
}

/* Send the reply frame of an answered call. */
static void answer(dsc__http_call *call) {
    msgpack_zone zone;
    msgpack_object frame;
    if (!msgpack_zone_init(&zone, 4096)) {
        send_error(call->req, 503, DSC_NOMEM, "out of memory");
        return;
    }
    dsc_status st =
        dsc_rpc_decode((const uint8_t *)call->reply.data, call->reply.size, &zone, &frame);
    if (st != DSC_OK || frame.type != MSGPACK_OBJECT_ARRAY || frame.via.array.size != 4) {
        msgpack_zone_destroy(&zone);
        send_error(call->req, 500, DSC_INTERNAL, "the reply could not be read back");
        return;
    }
    const msgpack_object *e = &frame.via.array.ptr[2], *r = &frame.via.array.ptr[3];
    bool failed = e->type != MSGPACK_OBJECT_NIL;
    int status = failed ? (call->limited ? 429 : http_status(error_code(e))) : 200;
    json_t *v = to_json(failed ? e : r);
    msgpack_zone_destroy(&zone);
    if (call->bare)
        send_json(call->req, status, v);
    else
        send_json(call->req, status, v ? json_pack("{s:o}", failed ? "error" : "result", v) : NULL);
}

static void on_done(evutil_socket_t fd, short what, void *arg) {
    (void)fd;
    (void)what;
    dsc_server *srv = arg;
    pthread_mutex_lock(&srv->http_lock);
    dsc__http_call *list = srv->http_done;
    srv->http_done = NULL;
    pthread_mutex_unlock(&srv->http_lock);
    while (list) {
        dsc__http_call *call = list;
        list = call->next;
        answer(call);
        call_free(call);
    }
}

dsc_status dsc__http_api_init(dsc_server *srv, dsc_error *err) {
    srv->http_done_ev = event_new(srv->base, -1, EV_PERSIST, on_done, srv);
    if (!srv->http_done_ev) return dsc_error_set(err, DSC_NOMEM, "http reply event");
    event_add(srv->http_done_ev, NULL);
    return DSC_OK;
}

void dsc__http_api_free(dsc_server *srv) {
    /* The requests themselves go with evhttp_free. */
    while (srv->http_done) {
        dsc__http_call *call = srv->http_done;
        srv->http_done = call->next;
        call_free(call);
    }
    if (srv->http_done_ev) event_free(srv->http_done_ev);
    srv->http_done_ev = NULL;
}

/* ------------------------------------------------------------- worker thread -- */

static void post_done(dsc_server *srv, dsc__http_call *call) {
    pthread_mutex_lock(&srv->http_lock);
    call->next = srv->http_done;
    srv->http_done = call;
    pthread_mutex_unlock(&srv->http_lock);
    event_active(srv->http_done_ev, EV_READ, 0);
}

void dsc__http_call_refuse(dsc_server *srv, dsc__http_call *call, const dsc_error *err) {
    msgpack_packer pk;
    msgpack_sbuffer_clear(&call->reply);
    msgpack_packer_init(&pk, &call->reply, msgpack_sbuffer_write);
    dsc_rpc_pack_error(&pk, 0, err);
    post_done(srv, call);
}

void dsc__http_conn_done(dsc__conn *conn) {
    dsc__http_call *call = conn->http;
    dsc_server *srv = conn->w->srv;
    msgpack_sbuffer_destroy(&call->reply);
    call->reply = conn->out; /* the reply frame, moved */
    free(conn);
    if (call->reply.size == 0) {
        dsc_error err;
        dsc_error_set(&err, DSC_NOMEM, "out of memory packing the reply");
        dsc__http_call_refuse(srv, call, &err);
        return;
    }
    post_done(srv, call);
}

void dsc__http_call_run(dsc__worker *w, dsc__http_call *call) {
    dsc_error err;
    dsc_error_clear(&err);
    dsc__conn *conn = calloc(1, sizeof *conn);
    if (!conn) {
        dsc_error_set(&err, DSC_NOMEM, "out of memory");
        dsc__http_call_refuse(w->srv, call, &err);
        return;
    }
    conn->w = w;
    conn->fd = -1;
    conn->http = call;
    conn->id = ((uint64_t)w->index << 48) | ++w->next_conn_id;
    msgpack_sbuffer_init(&conn->out);
    snprintf(conn->auth_peer, sizeof conn->auth_peer, "%s", call->peer);
    if (call->token[0] &&
        dsc__conn_auth_bearer(conn, call->token, &call->limited, &err) != DSC_OK) {
        free(conn);
        dsc__http_call_refuse(w->srv, call, &err);
        return;
    }
    msgpack_object params;
    if (dsc_rpc_decode((const uint8_t *)call->params.data, call->params.size, &w->zone, &params) !=
        DSC_OK) {
        free(conn);
        dsc_error_set(&err, DSC_NOMEM, "out of memory decoding the params");
        dsc__http_call_refuse(w->srv, call, &err);
        return;
    }
    dsc_rpc_request r = {.kind = DSC_RPC_REQUEST,
                         .has_msgid = true,
                         .method = call->method,
                         .method_len = strlen(call->method),
                         .params = &params};
    dsc__dispatch(conn, &r);
    msgpack_zone_clear(&w->zone);
    if (conn->jobs == 0) dsc__http_conn_done(conn);
}
