/*
 * accept.h - who gets a connection: the descriptor budget, accept errors, the
 * per-address cap and the Unix reserve (accept.c). Main thread, except where a
 * prototype says otherwise.
 *
 *   dsc__accept_init(srv, &err)            after the listeners: fixes max_connections
 *   dsc__accept_admit(srv, addr, key)      on every accept: may this peer have a slot?
 *   dsc__accept_release(srv, key)          when a connection closes (any thread)
 *   dsc__accept_failed(srv, err)           a listener's accept failed (EMFILE, ...)
 *   dsc__accept_free(srv)
 */
#ifndef DISCERN_SERVER_ACCEPT_H
#define DISCERN_SERVER_ACCEPT_H

#include "discern/status.h"

#include <event2/listener.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <sys/socket.h>

typedef struct dsc_server dsc_server;

/* Room for an address key ("127.0.0.1", an IPv6 address) plus its NUL. */
#define DSC__ADDR_KEY_MAX 48

/* Raise the soft RLIMIT_NOFILE to the hard one. Call first, before files open. */
void dsc__accept_raise_nofile(dsc_server *srv);
/* Set up the guard (timers, the address table) and, when max_connections is 0, set
 * it from the descriptors left once everything else is open; logs the figure.
 * DSC_NOMEM on failure. */
dsc_status dsc__accept_init(dsc_server *srv, dsc_error *err);
/* Whether a new connection from addr gets a slot (max_connections, the Unix reserve,
 * max_connections_per_address). On yes the slot is taken: srv->connections and the
 * address count (key is filled: "" for Unix peers) grow; dsc__accept_release gives it
 * back. On no, the refusal is counted. Also ends an accept back-off. */
bool dsc__accept_admit(dsc_server *srv, const struct sockaddr *addr, char key[DSC__ADDR_KEY_MAX]);
/* Give back the slot taken by dsc__accept_admit (any thread); wakes accepting when
 * it was paused for lack of descriptors. */
void dsc__accept_release(dsc_server *srv, const char *key);
/* The error callback of every listener (arg: the server). */
void dsc__accept_error_cb(struct evconnlistener *l, void *arg);
/* The error callback of the HTTP listener (whose arg libevent owns): pauses it alone
 * for a back-off. */
void dsc__accept_http_error_cb(struct evconnlistener *l, void *arg);
/* Accept errors so far (discern_accept_errors_total). */
uint64_t dsc__accept_errors(const dsc_server *srv);
/* Free what dsc__accept_init made; NULL-safe on a partly made server. */
void dsc__accept_free(dsc_server *srv);

#endif
