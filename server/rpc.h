/*
 * rpc.h - MessagePack-RPC framing for discernd: a bounded, resumable scanner for
 * incoming bytes, request decoding, response packing and typed parameter getters.
 *
 * Incoming bytes are never handed to msgpack-c before the scanner of
 * discern/rpc_scan.h (shared with the client library) has walked them. Only then is
 * the message unpacked, into a zone, with strings pointing into the caller's buffer
 * (zero copy). The decoded tree costs at most max_objects * sizeof(msgpack_object)
 * bytes.
 *
 *   dsc_rpc_scanner sc; dsc_rpc_scanner_reset(&sc);
 *   switch (dsc_rpc_scan(&sc, &lim, buf, len, &size, &err)) {
 *   case DSC_RPC_NEED_MORE:  read more, call again with the longer buffer
 *   case DSC_RPC_FRAME:      dsc_rpc_decode(buf, size, zone, &obj) then
 *                            dsc_rpc_request_parse(&obj, &req, &err)
 *   case DSC_RPC_SKIP:       complete but over a limit: answer err, drop size bytes
 *   case DSC_RPC_BROKEN:     cannot resynchronise: send err, close
 *   }
 *   (reset the scanner after every FRAME or SKIP)
 */
#ifndef DISCERN_SERVER_RPC_H
#define DISCERN_SERVER_RPC_H

#include "discern/rpc_scan.h"
#include "discern/status.h"

#include <msgpack.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

typedef enum dsc_rpc_kind {
    DSC_RPC_REQUEST = 0,
    DSC_RPC_RESPONSE = 1,
    DSC_RPC_NOTIFICATION = 2,
} dsc_rpc_kind;

/* A decoded request or notification; pointers refer to the decoded tree. */
typedef struct dsc_rpc_request {
    dsc_rpc_kind kind;
    bool has_msgid; /* set as soon as a msgid could be read, even on error */
    uint32_t msgid;
    const char *method;
    size_t method_len;
    const msgpack_object *params; /* the single map, or NULL for [] */
} dsc_rpc_request;

/* Unpack a message the scanner accepted into zone; strings point into buf, which
 * must outlive obj. Returns DSC_OK or DSC_NOMEM / DSC_PARSE. */
dsc_status dsc_rpc_decode(const uint8_t *buf, size_t size, msgpack_zone *zone, msgpack_object *obj);
/* Check that obj is [0, msgid, method, [map]] or [2, method, [map]] and fill req.
 * Returns DSC_OK or DSC_BAD_REQUEST naming what is wrong. */
dsc_status dsc_rpc_request_parse(const msgpack_object *obj, dsc_rpc_request *req, dsc_error *err);

/* Where replies are packed: a msgpack write callback over an sbuffer that reports
 * running out of memory (or past cap bytes). Once a write fails every later one
 * fails too, so a reply is either packed whole or known to be broken, never sent
 * with a piece missing:
 *
 *   dsc_rpc_out o = {&sbuf, SIZE_MAX, false};
 *   msgpack_packer_init(&pk, &o, dsc_rpc_out_write);
 *   ... pack ...; if (o.failed) drop what was packed and answer out_of_memory */
typedef struct dsc_rpc_out {
    msgpack_sbuffer *sb;
    size_t cap; /* the largest size sb may reach (SIZE_MAX: memory decides) */
    bool failed;
} dsc_rpc_out;
int dsc_rpc_out_write(void *out, const char *buf, size_t len);

/* Pack [1, msgid, nil, (one write) then the caller packs the result map. Returns 0
 * or -1. */
int dsc_rpc_pack_result_begin(msgpack_packer *pk, uint32_t msgid);
/* Pack [1, msgid, {code, message}, nil]. */
int dsc_rpc_pack_error(msgpack_packer *pk, uint32_t msgid, const dsc_error *err);
/* Pack the notification [2, "error", [{code, message}]] (no msgid to answer). */
int dsc_rpc_pack_error_notification(msgpack_packer *pk, const dsc_error *err);
/* Pack s[0..n) as str: the bytes of msgpack_pack_str + _str_body, written with one
 * call of the packer's callback when n < 32. Returns 0 or -1. */
int dsc_rpc_pack_strn(msgpack_packer *pk, const char *s, size_t n);
/* Pack a NUL-terminated string as str (inline: a literal's length is known when
 * compiled). */
static inline int dsc_rpc_pack_cstr(msgpack_packer *pk, const char *s) {
    return dsc_rpc_pack_strn(pk, s, strlen(s));
}
/* Pack key[0..n) (a str) then d (float 64), one write for a key under 32 bytes. */
int dsc_rpc_pack_keyn_double(msgpack_packer *pk, const char *key, size_t n, double d);
/* The same for a NUL-terminated key (inline, as dsc_rpc_pack_cstr). */
static inline int dsc_rpc_pack_key_double(msgpack_packer *pk, const char *key, double d) {
    return dsc_rpc_pack_keyn_double(pk, key, strlen(key), d);
}
/* Pack a {min, max} map of two float 64, with one write. */
int dsc_rpc_pack_range(msgpack_packer *pk, double min, double max);

/* DSC_OK when every key of map (a MAP object; anything else passes) is one of
 * allowed (NULL-terminated); else DSC_BAD_REQUEST naming the first unknown key and
 * where it was ("the params of 'check'", "subject"), so that a misspelt key is
 * never silently ignored. */
dsc_status dsc_rpc_check_keys(const msgpack_object *map, const char *const *allowed,
                              const char *where, dsc_error *err);
/* True when dsc_rpc_check_keys would pass map: the test alone, without the text
 * of where (a caller formats it only when the answer is false). */
bool dsc_rpc_keys_known(const msgpack_object *map, const char *const *allowed);
/* The value of key in map (a MAP object), or NULL when absent. */
const msgpack_object *dsc_rpc_field(const msgpack_object *map, const char *key);
/* A field name with its length, for dsc_rpc_pick: DSC_RPC_NAME("images"). */
typedef struct dsc_rpc_name {
    const char *s;
    uint32_t len;
} dsc_rpc_name;
#define DSC_RPC_NAME(lit)                                                                          \
    { lit, sizeof lit - 1 }
/* The entries of map whose key is one of names[0..n), in map's order, as a map object
 * over kv (room for n entries) at *out; returns out, or map itself when map is not a
 * MAP or holds more than n such entries (a key repeated). One pass over map: a reader
 * of several optional fields, most of them absent, then looks each up among the few
 * present instead of scanning the whole params for every one. The getters read the
 * result as they read map, with the same answers and errors. */
const msgpack_object *dsc_rpc_pick(const msgpack_object *map, const dsc_rpc_name *names, size_t n,
                                   msgpack_object_kv *kv, msgpack_object *out);
/* Copy string field key into out (cap bytes with the NUL). Absent: out = "" and
 * DSC_OK unless required; required and empty: DSC_BAD_REQUEST. Wrong type, longer than cap - 1, a
 * NUL byte or invalid UTF-8: DSC_BAD_REQUEST naming the field. */
dsc_status dsc_rpc_get_str(const msgpack_object *map, const char *key, bool required, char *out,
                           size_t cap, dsc_error *err);
/* Read integer field key into *out, within [min, max]; absent leaves *out. */
dsc_status dsc_rpc_get_int(const msgpack_object *map, const char *key, bool required, int64_t min,
                           int64_t max, int64_t *out, dsc_error *err);
/* Read a number (integer or float) into *out, within [min, max]; absent leaves *out. */
dsc_status dsc_rpc_get_num(const msgpack_object *map, const char *key, bool required, double min,
                           double max, double *out, dsc_error *err);
/* Read a boolean field; absent leaves *out. */
dsc_status dsc_rpc_get_bool(const msgpack_object *map, const char *key, bool required, bool *out,
                            dsc_error *err);
/* Point *out at map field key, which must be a map; absent sets *out = NULL. */
dsc_status dsc_rpc_get_map(const msgpack_object *map, const char *key, bool required,
                           const msgpack_object **out, dsc_error *err);
/* True when s[0..n) is well-formed UTF-8 (RFC 3629: no overlong forms, surrogates
 * or code points past U+10FFFF). dsc_rpc_get_str checks it; a handler that reads a
 * str object itself (map keys) must too. */
bool dsc_rpc_utf8_valid(const char *s, size_t n);
/* Point *out at array field key of at most max items; absent sets *out = NULL. More
 * items: DSC_TOO_LARGE naming the field. */
dsc_status dsc_rpc_get_array(const msgpack_object *map, const char *key, bool required,
                             uint32_t max, const msgpack_object **out, dsc_error *err);
/* The MessagePack type name of o ("string", "integer", ...), for messages. */
const char *dsc_rpc_type_name(const msgpack_object *o);

#endif
