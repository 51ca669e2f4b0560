/*
 * client_wire.h - internals of libdiscern-client shared between its files.
 *
 *   client.c       handles, connecting, the pipelined send/receive loop, reconnect
 *   client_wire.c  the method table: encode each request's params, decode each
 *                  result map into its struct
 * Replies are framed by the scanner shared with the server (discern/rpc_scan.h).
 *
 * Not installed; nothing here is public API.
 */
#ifndef DISCERN_CLIENT_WIRE_H
#define DISCERN_CLIENT_WIRE_H

#include "discern/client.h"
#include "discern/rpc_scan.h"

#include <msgpack.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Internal methods after the public ones. */
enum { DSC__CALL_AUTH = DSC_CALL_ADMIN_JOURNAL_LIST + 1, DSC__CALL_COUNT };

/* Per-call context the encoders need (the generated idempotency key). */
typedef struct dsc__encode_ctx {
    char request_id[64]; /* used by check when the caller gave none */
    bool keyed;          /* the connection authenticates with a key: its scope may
                            name the whole subject, so none is required here */
} dsc__encode_ctx;

typedef struct dsc__method {
    const char *name; /* wire name */
    /* Pack the params array ([{...}]) of rq; DSC_BAD_REQUEST naming the field when a
     * required one is missing. Nothing is written to the socket before this passes. */
    dsc_status (*encode)(msgpack_packer *pk, const void *rq, const dsc__encode_ctx *ctx,
                         dsc_error *err);
    /* Decode a result map into out (never NULL here); DSC_PARSE when it lacks a key. */
    dsc_status (*decode)(const msgpack_object *result, void *out, dsc_error *err);
    size_t result_size;       /* bytes zeroed before decode */
    void (*clear)(void *out); /* release a result's heap parts (NULL = nothing to free) */
    bool retry_safe;          /* may be sent again after the connection broke */
} dsc__method;

/* The row of method m (public or DSC__CALL_AUTH); NULL when out of range. */
const dsc__method *dsc__method_get(int m);

/* The scanner limits for replies: max_reply bytes; depth, counts and strings only as
 * far as the scanner can track them (a reply is trusted no further than its size). */
void dsc__reply_limits(size_t max_reply, dsc_rpc_limits *lim);

/* The string value of o copied into dst (truncated to cap-1); false when o is not a
 * str or bin. */
bool dsc__obj_str(const msgpack_object *o, char *dst, size_t cap);
/* The value of key in map m; NULL when m is not a map or has no such key. */
const msgpack_object *dsc__map_get(const msgpack_object *m, const char *key);

#endif
