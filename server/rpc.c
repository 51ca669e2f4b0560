/*
 * rpc.c - MessagePack-RPC framing: request decoding, response packing and parameter
 * getters (see rpc.h). The bounded scanner in front of all this is core/rpc_scan.c,
 * shared with the client library.
 *
 * Every string a handler takes from a client goes through dsc_rpc_get_str (or, for
 * map keys and values read directly, dsc_rpc_utf8_valid): invalid UTF-8 is refused
 * there, naming the field, so it never reaches a budget, the journal, /metrics or a
 * reply.
 */
#include "rpc.h"

#include <string.h>

dsc_status dsc_rpc_decode(const uint8_t *buf, size_t size, msgpack_zone *zone,
                          msgpack_object *obj) {
    size_t off = 0;
    msgpack_unpack_return r = msgpack_unpack((const char *)buf, size, &off, zone, obj);
    if (r == MSGPACK_UNPACK_NOMEM_ERROR) return DSC_NOMEM;
    if (r != MSGPACK_UNPACK_SUCCESS || off != size) return DSC_PARSE;
    return DSC_OK;
}

const char *dsc_rpc_type_name(const msgpack_object *o) {
    switch (o->type) {
    case MSGPACK_OBJECT_NIL:
        return "nil";
    case MSGPACK_OBJECT_BOOLEAN:
        return "boolean";
    case MSGPACK_OBJECT_POSITIVE_INTEGER:
    case MSGPACK_OBJECT_NEGATIVE_INTEGER:
        return "integer";
    case MSGPACK_OBJECT_FLOAT32:
    case MSGPACK_OBJECT_FLOAT64:
        return "float";
    case MSGPACK_OBJECT_STR:
        return "string";
    case MSGPACK_OBJECT_BIN:
        return "binary";
    case MSGPACK_OBJECT_ARRAY:
        return "array";
    case MSGPACK_OBJECT_MAP:
        return "map";
    case MSGPACK_OBJECT_EXT:
        return "extension";
    }
    return "unknown";
}

static dsc_status parse_params(const msgpack_object *o, dsc_rpc_request *req, dsc_error *err) {
    if (o->type != MSGPACK_OBJECT_ARRAY)
        return dsc_error_set(err, DSC_BAD_REQUEST,
                             "params: expected an array holding one map, got %s",
                             dsc_rpc_type_name(o));
    if (o->via.array.size == 0) return DSC_OK;
    const msgpack_object *m = &o->via.array.ptr[0];
    if (o->via.array.size != 1 || m->type != MSGPACK_OBJECT_MAP)
        return dsc_error_set(
            err, DSC_BAD_REQUEST,
            "params: expected an array holding one map, got %u element(s), the first a %s",
            o->via.array.size, dsc_rpc_type_name(m));
    req->params = m;
    return DSC_OK;
}

/* The length of the UTF-8 sequence starting at p[0..n), 0 when it is not one: no
 * overlong forms, no surrogates, nothing past U+10FFFF (RFC 3629). */
static size_t utf8_seq(const unsigned char *p, size_t n) {
    unsigned char b = p[0];
    size_t len = b < 0x80                 ? 1
                 : b >= 0xc2 && b <= 0xdf ? 2
                 : b >= 0xe0 && b <= 0xef ? 3
                 : b >= 0xf0 && b <= 0xf4 ? 4
                                          : 0;
    if (len == 0 || len > n) return 0;
    for (size_t i = 1; i < len; i++)
        if ((p[i] & 0xc0) != 0x80) return 0;
    if (len == 3 && ((b == 0xe0 && p[1] < 0xa0) || (b == 0xed && p[1] > 0x9f))) return 0;
    if (len == 4 && ((b == 0xf0 && p[1] < 0x90) || (b == 0xf4 && p[1] > 0x8f))) return 0;
    return len;
}

bool dsc_rpc_utf8_valid(const char *s, size_t n) {
    const unsigned char *p = (const unsigned char *)s;
    for (size_t i = 0, k; i < n; i += k)
        if ((k = utf8_seq(p + i, n - i)) == 0) return false;
    return true;
}

static dsc_status parse_method(const msgpack_object *o, dsc_rpc_request *req, dsc_error *err) {
    if (o->type != MSGPACK_OBJECT_STR && o->type != MSGPACK_OBJECT_BIN)
        return dsc_error_set(err, DSC_BAD_REQUEST, "method: expected a string, got %s",
                             dsc_rpc_type_name(o));
    if (!dsc_rpc_utf8_valid(o->via.str.ptr, o->via.str.size))
        return dsc_error_set(err, DSC_BAD_REQUEST, "method: not valid UTF-8");
    req->method = o->via.str.ptr;
    req->method_len = o->via.str.size;
    return DSC_OK;
}

dsc_status dsc_rpc_request_parse(const msgpack_object *obj, dsc_rpc_request *req, dsc_error *err) {
    memset(req, 0, sizeof *req);
    if (obj->type != MSGPACK_OBJECT_ARRAY)
        return dsc_error_set(err, DSC_BAD_REQUEST,
                             "message: expected an array [0, msgid, method, params], got %s",
                             dsc_rpc_type_name(obj));
    const msgpack_object *a = obj->via.array.ptr;
    uint32_t n = obj->via.array.size;
    if (n == 0 || a[0].type != MSGPACK_OBJECT_POSITIVE_INTEGER || a[0].via.u64 > 2)
        return dsc_error_set(err, DSC_BAD_REQUEST,
                             "message: the first element must be 0 (request) or 2 (notification)");
    req->kind = (dsc_rpc_kind)a[0].via.u64;
    if (req->kind == DSC_RPC_NOTIFICATION) {
        if (n != 3)
            return dsc_error_set(err, DSC_BAD_REQUEST, "notification: expected 3 elements, got %u",
                                 n);
        dsc_status st = parse_method(&a[1], req, err);
        return st != DSC_OK ? st : parse_params(&a[2], req, err);
    }
    if (n >= 2 && a[1].type == MSGPACK_OBJECT_POSITIVE_INTEGER && a[1].via.u64 <= UINT32_MAX) {
        req->has_msgid = true;
        req->msgid = (uint32_t)a[1].via.u64;
    }
    if (req->kind == DSC_RPC_RESPONSE)
        return dsc_error_set(err, DSC_BAD_REQUEST, "message: the server does not take responses");
    if (n != 4)
        return dsc_error_set(err, DSC_BAD_REQUEST, "request: expected 4 elements, got %u", n);
    if (!req->has_msgid)
        return dsc_error_set(err, DSC_BAD_REQUEST,
                             "msgid: expected an unsigned 32-bit integer, got %s",
                             dsc_rpc_type_name(&a[1]));
    dsc_status st = parse_method(&a[2], req, err);
    return st != DSC_OK ? st : parse_params(&a[3], req, err);
}

/* A reply is mostly short keys and doubles: msgpack-c hands the packer's callback a
 * short string's header and body as two writes and every value as one. These pack
 * a short string, a key with its double, and a {min, max} range as one piece each,
 * the same bytes, built in place in the reply buffer when the packer writes through
 * dsc_rpc_out_write and there is room (no call through the callback), else in a
 * stack buffer handed to the callback (profile and measurements: docs/benchmarks.md,
 * "The rest of the request: the worker"). */
#define FIXSTR_MAX 31

/* Where the next n bytes of pk's output are built: in place at the end of the reply
 * buffer when they fit under its cap, else tmp. */
static unsigned char *piece_begin(msgpack_packer *pk, size_t n, unsigned char *tmp) {
    if (pk->callback != dsc_rpc_out_write) return tmp;
    dsc_rpc_out *o = pk->data;
    msgpack_sbuffer *sb = o->sb;
    if (o->failed || n > sb->alloc - sb->size || n > o->cap || sb->size > o->cap - n) return tmp;
    return (unsigned char *)sb->data + sb->size;
}

/* Finish the piece b..e begun by piece_begin. Returns 0 or -1 (the callback's). */
static int piece_end(msgpack_packer *pk, unsigned char *b, unsigned char *e, unsigned char *tmp) {
    if (b == tmp) return pk->callback(pk->data, (const char *)tmp, (size_t)(e - tmp));
    ((dsc_rpc_out *)pk->data)->sb->size += (size_t)(e - b);
    return 0;
}

/* The 9 bytes of msgpack's float 64 (0xcb, big-endian IEEE 754), as
 * msgpack_pack_double writes them. */
static unsigned char *put_double(unsigned char *b, double d) {
    uint64_t u;
    memcpy(&u, &d, sizeof u);
    *b++ = 0xcb;
    for (int i = 7; i >= 0; i--)
        *b++ = (unsigned char)(u >> (i * 8));
    return b;
}

static unsigned char *put_fixstr(unsigned char *b, const char *s, size_t n) {
    *b++ = (unsigned char)(0xa0 | n);
    memcpy(b, s, n);
    return b + n;
}

int dsc_rpc_pack_strn(msgpack_packer *pk, const char *s, size_t n) {
    if (n <= FIXSTR_MAX) {
        unsigned char tmp[1 + FIXSTR_MAX];
        unsigned char *b = piece_begin(pk, 1 + n, tmp);
        return piece_end(pk, b, put_fixstr(b, s, n), tmp);
    }
    if (msgpack_pack_str(pk, n) != 0) return -1;
    return msgpack_pack_str_body(pk, s, n);
}

int dsc_rpc_pack_keyn_double(msgpack_packer *pk, const char *key, size_t n, double d) {
    if (n > FIXSTR_MAX) {
        int r = dsc_rpc_pack_strn(pk, key, n);
        return r | msgpack_pack_double(pk, d);
    }
    unsigned char tmp[1 + FIXSTR_MAX + 9];
    unsigned char *b = piece_begin(pk, 1 + n + 9, tmp);
    return piece_end(pk, b, put_double(put_fixstr(b, key, n), d), tmp);
}

int dsc_rpc_pack_range(msgpack_packer *pk, double min, double max) {
    unsigned char tmp[1 + 2 * (4 + 9)];
    unsigned char *b = piece_begin(pk, sizeof tmp, tmp), *e = b;
    *e++ = 0x82; /* fixmap of 2 */
    e = put_double(put_fixstr(e, "min", 3), min);
    e = put_double(put_fixstr(e, "max", 3), max);
    return piece_end(pk, b, e, tmp);
}

/* msgid as msgpack_pack_uint32 writes it: the shortest unsigned form. */
static unsigned char *put_uint32(unsigned char *b, uint32_t v) {
    int bytes = v < 0x80 ? 0 : v <= 0xff ? 1 : v <= 0xffff ? 2 : 4;
    if (bytes == 0) {
        *b++ = (unsigned char)v;
        return b;
    }
    *b++ = bytes == 1 ? 0xcc : bytes == 2 ? 0xcd : 0xce;
    for (int i = bytes - 1; i >= 0; i--)
        *b++ = (unsigned char)(v >> (i * 8));
    return b;
}

int dsc_rpc_pack_result_begin(msgpack_packer *pk, uint32_t msgid) {
    unsigned char tmp[1 + 1 + 5 + 1];
    unsigned char *b = piece_begin(pk, sizeof tmp, tmp), *e = b;
    *e++ = 0x94; /* fixarray of 4 */
    *e++ = 0x01; /* response */
    e = put_uint32(e, msgid);
    *e++ = 0xc0; /* no error */
    return piece_end(pk, b, e, tmp) ? -1 : 0;
}

static int pack_error_map(msgpack_packer *pk, const dsc_error *err) {
    int r = msgpack_pack_map(pk, 2);
    r |= dsc_rpc_pack_cstr(pk, "code");
    r |= dsc_rpc_pack_cstr(pk, dsc_status_wire(err->code));
    r |= dsc_rpc_pack_cstr(pk, "message");
    r |= dsc_rpc_pack_cstr(pk, err->message[0] ? err->message : dsc_status_message(err->code));
    return r ? -1 : 0;
}

int dsc_rpc_pack_error(msgpack_packer *pk, uint32_t msgid, const dsc_error *err) {
    int r = msgpack_pack_array(pk, 4);
    r |= msgpack_pack_uint8(pk, 1);
    r |= msgpack_pack_uint32(pk, msgid);
    r |= pack_error_map(pk, err);
    r |= msgpack_pack_nil(pk);
    return r ? -1 : 0;
}

int dsc_rpc_pack_error_notification(msgpack_packer *pk, const dsc_error *err) {
    int r = msgpack_pack_array(pk, 3);
    r |= msgpack_pack_uint8(pk, 2);
    r |= dsc_rpc_pack_cstr(pk, "error");
    r |= msgpack_pack_array(pk, 1);
    r |= pack_error_map(pk, err);
    return r ? -1 : 0;
}

const msgpack_object *dsc_rpc_field(const msgpack_object *map, const char *key) {
    if (!map || map->type != MSGPACK_OBJECT_MAP || map->via.map.size == 0) return NULL;
    size_t klen = strlen(key);
    /* Most fields a handler asks for are absent: the first byte rules out nearly every
     * key of the same length without a call to memcmp. */
    for (uint32_t i = 0; i < map->via.map.size; i++) {
        const msgpack_object *k = &map->via.map.ptr[i].key;
        if (k->type == MSGPACK_OBJECT_STR && k->via.str.size == klen &&
            (klen == 0 || k->via.str.ptr[0] == key[0]) && memcmp(k->via.str.ptr, key, klen) == 0)
            return &map->via.map.ptr[i].val;
    }
    return NULL;
}

/* A key's bit in a pick's filter: its length and first byte, so that most keys of
 * the params are passed over without a comparison with each name. */
static uint64_t name_bit(const char *s, size_t len) {
    return 1ull << ((len * 7u + (unsigned char)s[0]) & 63u);
}

static bool name_listed(const dsc_rpc_name *names, size_t n, const msgpack_object *k) {
    for (size_t j = 0; j < n; j++)
        if (names[j].len == k->via.str.size && names[j].s[0] == k->via.str.ptr[0] &&
            memcmp(names[j].s, k->via.str.ptr, names[j].len) == 0)
            return true;
    return false;
}

const msgpack_object *dsc_rpc_pick(const msgpack_object *map, const dsc_rpc_name *names, size_t n,
                                   msgpack_object_kv *kv, msgpack_object *out) {
    if (!map || map->type != MSGPACK_OBJECT_MAP) return map;
    uint64_t filter = 0;
    for (size_t j = 0; j < n; j++)
        filter |= name_bit(names[j].s, names[j].len);
    uint32_t got = 0;
    for (uint32_t i = 0; i < map->via.map.size; i++) {
        const msgpack_object *k = &map->via.map.ptr[i].key;
        if (k->type != MSGPACK_OBJECT_STR || k->via.str.size == 0 ||
            !(filter & name_bit(k->via.str.ptr, k->via.str.size)) || !name_listed(names, n, k))
            continue;
        if (got == n) return map; /* a key repeated: the whole map answers the same */
        kv[got++] = map->via.map.ptr[i];
    }
    out->type = MSGPACK_OBJECT_MAP;
    out->via.map.size = got;
    out->via.map.ptr = kv;
    return out;
}

static bool is_allowed(const char *const *allowed, const char *k, size_t n) {
    for (; *allowed; allowed++)
        if ((n == 0 || (*allowed)[0] == k[0]) && strlen(*allowed) == n &&
            memcmp(*allowed, k, n) == 0)
            return true;
    return false;
}

bool dsc_rpc_keys_known(const msgpack_object *map, const char *const *allowed) {
    if (!map || map->type != MSGPACK_OBJECT_MAP) return true;
    for (uint32_t i = 0; i < map->via.map.size; i++) {
        const msgpack_object *k = &map->via.map.ptr[i].key;
        if (k->type != MSGPACK_OBJECT_STR || !is_allowed(allowed, k->via.str.ptr, k->via.str.size))
            return false;
    }
    return true;
}

dsc_status dsc_rpc_check_keys(const msgpack_object *map, const char *const *allowed,
                              const char *where, dsc_error *err) {
    if (!map || map->type != MSGPACK_OBJECT_MAP) return DSC_OK;
    for (uint32_t i = 0; i < map->via.map.size; i++) {
        const msgpack_object *k = &map->via.map.ptr[i].key;
        if (k->type != MSGPACK_OBJECT_STR)
            return dsc_error_set(err, DSC_BAD_REQUEST, "%s: a key is %s, not a string", where,
                                 dsc_rpc_type_name(k));
        if (is_allowed(allowed, k->via.str.ptr, k->via.str.size)) continue;
        int n = k->via.str.size > 64 ? 64 : (int)k->via.str.size;
        if (!dsc_rpc_utf8_valid(k->via.str.ptr, k->via.str.size))
            return dsc_error_set(err, DSC_BAD_REQUEST, "%s: a key is not valid UTF-8", where);
        return dsc_error_set(err, DSC_BAD_REQUEST, "field '%.*s': unknown in %s", n, k->via.str.ptr,
                             where);
    }
    return DSC_OK;
}

/* Absent (or nil) field: an error when required, else "leave the default". */
static const msgpack_object *lookup(const msgpack_object *map, const char *key, bool required,
                                    dsc_status *st, dsc_error *err) {
    const msgpack_object *v = dsc_rpc_field(map, key);
    *st = DSC_OK;
    if (v && v->type == MSGPACK_OBJECT_NIL) v = NULL;
    if (!v && required) *st = dsc_error_set(err, DSC_BAD_REQUEST, "field '%s' is required", key);
    return v;
}

static dsc_status wrong_type(dsc_error *err, const char *key, const char *want,
                             const msgpack_object *v) {
    return dsc_error_set(err, DSC_BAD_REQUEST, "field '%s': expected %s, got %s", key, want,
                         dsc_rpc_type_name(v));
}

dsc_status dsc_rpc_get_str(const msgpack_object *map, const char *key, bool required, char *out,
                           size_t cap, dsc_error *err) {
    dsc_status st;
    const msgpack_object *v = lookup(map, key, required, &st, err);
    out[0] = '\0';
    if (!v) return st;
    if (v->type != MSGPACK_OBJECT_STR) return wrong_type(err, key, "a string", v);
    if (required && v->via.str.size == 0)
        return dsc_error_set(err, DSC_BAD_REQUEST, "field '%s' is required and is empty", key);
    if (v->via.str.size >= cap)
        return dsc_error_set(err, DSC_BAD_REQUEST, "field '%s': longer than %zu bytes", key,
                             cap - 1);
    if (memchr(v->via.str.ptr, '\0', v->via.str.size))
        return dsc_error_set(err, DSC_BAD_REQUEST, "field '%s': contains a NUL byte", key);
    if (!dsc_rpc_utf8_valid(v->via.str.ptr, v->via.str.size))
        return dsc_error_set(err, DSC_BAD_REQUEST, "field '%s': not valid UTF-8", key);
    memcpy(out, v->via.str.ptr, v->via.str.size);
    out[v->via.str.size] = '\0';
    return DSC_OK;
}

dsc_status dsc_rpc_get_int(const msgpack_object *map, const char *key, bool required, int64_t min,
                           int64_t max, int64_t *out, dsc_error *err) {
    dsc_status st;
    const msgpack_object *v = lookup(map, key, required, &st, err);
    if (!v) return st;
    int64_t x;
    if (v->type == MSGPACK_OBJECT_POSITIVE_INTEGER) {
        if (v->via.u64 > (uint64_t)INT64_MAX)
            return dsc_error_set(err, DSC_BAD_REQUEST,
                                 "field '%s': %llu is out of range [%lld, %lld]", key,
                                 (unsigned long long)v->via.u64, (long long)min, (long long)max);
        x = (int64_t)v->via.u64;
    } else if (v->type == MSGPACK_OBJECT_NEGATIVE_INTEGER) {
        x = v->via.i64;
    } else {
        return wrong_type(err, key, "an integer", v);
    }
    if (x < min || x > max)
        return dsc_error_set(err, DSC_BAD_REQUEST, "field '%s': %lld is out of range [%lld, %lld]",
                             key, (long long)x, (long long)min, (long long)max);
    *out = x;
    return DSC_OK;
}

dsc_status dsc_rpc_get_num(const msgpack_object *map, const char *key, bool required, double min,
                           double max, double *out, dsc_error *err) {
    dsc_status st;
    const msgpack_object *v = lookup(map, key, required, &st, err);
    if (!v) return st;
    double x;
    switch (v->type) {
    case MSGPACK_OBJECT_POSITIVE_INTEGER:
        x = (double)v->via.u64;
        break;
    case MSGPACK_OBJECT_NEGATIVE_INTEGER:
        x = (double)v->via.i64;
        break;
    case MSGPACK_OBJECT_FLOAT32:
    case MSGPACK_OBJECT_FLOAT64:
        x = v->via.f64;
        break;
    default:
        return wrong_type(err, key, "a number", v);
    }
    if (!(x >= min && x <= max)) /* also refuses NaN */
        return dsc_error_set(err, DSC_BAD_REQUEST, "field '%s': %g is out of range [%g, %g]", key,
                             x, min, max);
    *out = x;
    return DSC_OK;
}

dsc_status dsc_rpc_get_bool(const msgpack_object *map, const char *key, bool required, bool *out,
                            dsc_error *err) {
    dsc_status st;
    const msgpack_object *v = lookup(map, key, required, &st, err);
    if (!v) return st;
    if (v->type != MSGPACK_OBJECT_BOOLEAN) return wrong_type(err, key, "a boolean", v);
    *out = v->via.boolean;
    return DSC_OK;
}

dsc_status dsc_rpc_get_array(const msgpack_object *map, const char *key, bool required,
                             uint32_t max, const msgpack_object **out, dsc_error *err) {
    dsc_status st;
    const msgpack_object *v = lookup(map, key, required, &st, err);
    *out = NULL;
    if (!v) return st;
    if (v->type != MSGPACK_OBJECT_ARRAY) return wrong_type(err, key, "an array", v);
    if (v->via.array.size > max)
        return dsc_error_set(err, DSC_TOO_LARGE, "field '%s': %u items, at most %u", key,
                             v->via.array.size, max);
    *out = v;
    return DSC_OK;
}

dsc_status dsc_rpc_get_map(const msgpack_object *map, const char *key, bool required,
                           const msgpack_object **out, dsc_error *err) {
    dsc_status st;
    const msgpack_object *v = lookup(map, key, required, &st, err);
    *out = NULL;
    if (!v) return st;
    if (v->type != MSGPACK_OBJECT_MAP) return wrong_type(err, key, "a map", v);
    *out = v;
    return DSC_OK;
}

int dsc_rpc_out_write(void *out, const char *buf, size_t len) {
    dsc_rpc_out *o = out;
    msgpack_sbuffer *sb = o->sb;
    /* Called for every value packed: the common case (room left, under cap) first. */
    if (len && !o->failed && len <= sb->alloc - sb->size && len <= o->cap &&
        sb->size <= o->cap - len) {
        memcpy(sb->data + sb->size, buf, len);
        sb->size += len;
        return 0;
    }
    if (o->failed || len > o->cap || o->sb->size > o->cap - len ||
        msgpack_sbuffer_write(o->sb, buf, len) != 0) {
        o->failed = true;
        return -1;
    }
    return 0;
}
