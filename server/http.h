/*
 * http.h - the HTTP listener (http.c), its JSON API (http_api.c) and the console's
 * files (http_static.c).
 */
#ifndef DISCERN_SERVER_HTTP_H
#define DISCERN_SERVER_HTTP_H

#include "server_internal.h"

#include <jansson.h>

/* JSON API (http_api.c). Main thread: answer POST /v1/<method>. */
void dsc__http_api_call(dsc_server *srv, struct evhttp_request *req, const char *method);
/* Main thread: GET /v1/budgets[?org=&team=&user=&key=], answered as budget.list (or
 * budget.get for a subject) with the result map alone, as before the JSON API. */
void dsc__http_api_budgets(dsc_server *srv, struct evhttp_request *req);
/* Parse the query string of GET /v1/budgets (NULL = none) into q and point subject
 * at its org, team, user and key (NULL when absent): 1 when any is given, 0 when
 * none, -1 when the query is malformed. evhttp_clear_headers(q) releases it. */
struct evkeyvalq;
int dsc__http_query_subject(const char *query, struct evkeyvalq *q, dsc_subject *subject);
/* Worker thread: run a call handed over by dsc__worker_post_call. */
void dsc__http_call_run(dsc__worker *w, dsc__http_call *call);
/* Any thread: answer a call with err without running it (a stopping worker). */
void dsc__http_call_refuse(dsc_server *srv, dsc__http_call *call, const dsc_error *err);
/* Worker thread: the virtual connection of a call is done, send its reply. */
void dsc__http_conn_done(dsc__conn *conn);
/* The main thread's event for answered calls. */
dsc_status dsc__http_api_init(dsc_server *srv, dsc_error *err);
/* Free the answered calls not sent (server teardown, before evhttp_free). */
void dsc__http_api_free(dsc_server *srv);
/* server.c: hand a call to the next worker (round robin; main thread). */
void dsc__worker_post_call(dsc_server *srv, dsc__http_call *call);

/* Resolve srv->www from the www key (http_static.c); "" when the folder is missing. */
dsc_status dsc__http_www_resolve(dsc_server *srv, dsc_error *err);
/* Static files of the console (http_static.c, main thread): GET path under srv->www. */
void dsc__http_static(dsc_server *srv, struct evhttp_request *req, const char *path);
/* Main thread (http.c): send body (consumed; NULL = out of memory, a 500) as JSON with
 * status and its standard reason; api adds Cache-Control: no-store and nosniff. */
struct evhttp_request;
void dsc__http_reply_json(struct evhttp_request *req, int status, json_t *body, bool api);
/* Start the HTTP listener on srv->cfg.http (http.c). */
dsc_status dsc__http_start(dsc_server *srv, dsc_error *err);

#endif
