/*
 * server.h - discernd: listeners, worker threads, connections and their lifecycle.
 *
 *   dsc_server *srv = dsc_server_new(&cfg, &err);   binds listeners, starts workers
 *   int code = dsc_server_run(srv);                 until SIGTERM/SIGINT; 0 = clean
 *   dsc_server_free(srv);
 *
 * Threads: the main thread owns the listeners, the signals, the HTTP listener and a
 * once-a-second tick; it hands each accepted socket to a worker (round robin). Each
 * worker thread runs its own event_base and serves its connections start to end:
 * read, scan, decode, dispatch through the method table (methods.c), reply. Nothing
 * a connection does touches another worker's state; shared state (catalogue,
 * ledger, counters) is either immutable, atomic or locked by its owner.
 */
#ifndef DISCERN_SERVER_SERVER_H
#define DISCERN_SERVER_SERVER_H

#include "config.h"

#include "discern/status.h"

typedef struct dsc_server dsc_server;

/* Create the server: bind every configured listener, load what it serves, start
 * the workers. Returns NULL with err set (DSC_IO for a bind failure naming the
 * address, DSC_NOMEM, or the loader's error). */
dsc_server *dsc_server_new(const dsc_server_config *cfg, dsc_error *err);
/* Serve until SIGTERM or SIGINT, then drain: stop accepting, answer what was read,
 * flush the store. Returns 0 after a clean drain, 1 otherwise. */
int dsc_server_run(dsc_server *srv);
/* Ask a running server to drain and stop, from any thread (what SIGTERM does). */
void dsc_server_stop(dsc_server *srv);
/* Stop the workers if still running and free everything; NULL is a no-op. */
void dsc_server_free(dsc_server *srv);

#endif
