/*
 * rpc.h - MessagePack-RPC framing for discernd: a bounded, resumable scanner for
 * incoming bytes, request decoding, response packing and typed parameter getters.
 *
 * Incoming bytes are never handed to msgpack-c before the scanner has walked them:
 * the scanner finds where one message ends, checks every declared count and length
 * against the bytes the message limit still allows (so a few bytes declaring a
 * 4-billion-element array are refused before anything is allocated), and checks
 * depth, item, object and string limits. Only then is the message unpacked, into a
 * zone, with strings pointing into the caller's buffer (zero copy). The decoded tree
 * costs at most max_objects * sizeof(msgpack_object) bytes.
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

#include "discern/status.h"

#include <msgpack.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* The deepest nesting the scanner can track; max_depth is capped at this. */
#define DSC_RPC_DEPTH_CAP 64

typedef struct dsc_rpc_limits {
    size_t max_message_bytes;  /* one message, all nesting included */
    uint32_t max_depth;        /* arrays and maps; the request array is depth 1 */
    uint32_t max_items;        /* elements of one array, pairs of one map */
    uint32_t max_objects;      /* objects in one message, all levels */
    uint32_t max_string_bytes; /* one str, bin or ext payload */
} dsc_rpc_limits;

typedef enum dsc_rpc_scan_result {
    DSC_RPC_NEED_MORE, /* the message is not complete yet */
    DSC_RPC_FRAME,     /* one complete message of *size bytes, within every limit */
    DSC_RPC_SKIP,      /* complete (*size bytes) but over a limit: err says which */
    DSC_RPC_BROKEN,    /* not MessagePack or over the size limit: the stream is lost */
} dsc_rpc_scan_result;

/* Where the scan of one message stands; embedded by the caller, no allocation. */
typedef struct dsc_rpc_scanner {
    size_t pos;       /* offset of the next unread item, from the message start */
    uint64_t pending; /* items still to read, all levels */
    uint32_t objects;
    uint32_t depth;
    bool skipping; /* a limit was crossed: only look for the end */
    dsc_error violation;
    uint32_t left[DSC_RPC_DEPTH_CAP + 1]; /* items left per open container */
} dsc_rpc_scanner;

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

/* Fill lim with the documented defaults (64 KiB, depth 16, 1024 items, 2048 objects,
 * 4096-byte strings). */
void dsc_rpc_limits_default(dsc_rpc_limits *lim);
/* Prepare sc for the next message. */
void dsc_rpc_scanner_reset(dsc_rpc_scanner *sc);
/* Continue scanning the message at buf[0..len) (buf holds the same bytes as before,
 * perhaps more). Never allocates; resumes where the previous call stopped. */
dsc_rpc_scan_result dsc_rpc_scan(dsc_rpc_scanner *sc, const dsc_rpc_limits *lim, const uint8_t *buf,
                                 size_t len, size_t *size, dsc_error *err);
/* Unpack a message the scanner accepted into zone; strings point into buf, which
 * must outlive obj. Returns DSC_OK or DSC_NOMEM / DSC_PARSE. */
dsc_status dsc_rpc_decode(const uint8_t *buf, size_t size, msgpack_zone *zone, msgpack_object *obj);
/* Check that obj is [0, msgid, method, [map]] or [2, method, [map]] and fill req.
 * Returns DSC_OK or DSC_BAD_REQUEST naming what is wrong. */
dsc_status dsc_rpc_request_parse(const msgpack_object *obj, dsc_rpc_request *req, dsc_error *err);

/* Pack [1, msgid, nil, then the caller packs the result map. Returns 0 or -1. */
int dsc_rpc_pack_result_begin(msgpack_packer *pk, uint32_t msgid);
/* Pack [1, msgid, {code, message}, nil]. */
int dsc_rpc_pack_error(msgpack_packer *pk, uint32_t msgid, const dsc_error *err);
/* Pack the notification [2, "error", [{code, message}]] (no msgid to answer). */
int dsc_rpc_pack_error_notification(msgpack_packer *pk, const dsc_error *err);
/* Pack a NUL-terminated string as str. */
int dsc_rpc_pack_cstr(msgpack_packer *pk, const char *s);
/* Pack a {min, max} map. */
int dsc_rpc_pack_range(msgpack_packer *pk, double min, double max);

/* DSC_OK when every key of map (a MAP object; anything else passes) is one of
 * allowed (NULL-terminated); else DSC_BAD_REQUEST naming the first unknown key and
 * where it was ("the params of 'check'", "subject"), so that a misspelt key is
 * never silently ignored. */
dsc_status dsc_rpc_check_keys(const msgpack_object *map, const char *const *allowed,
                              const char *where, dsc_error *err);
/* The value of key in map (a MAP object), or NULL when absent. */
const msgpack_object *dsc_rpc_field(const msgpack_object *map, const char *key);
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
