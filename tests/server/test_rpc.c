/*
 * test_rpc.c - the MessagePack-RPC scanner, request decoding and parameter getters
 * (server/rpc.c): valid frames, truncation at every byte, garbage, bombs, limits,
 * resynchronisation after an over-limit message.
 */
#include "rpc.h"

#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

typedef struct buf {
    msgpack_sbuffer sb;
    msgpack_packer pk;
} buf;

static void buf_init(buf *b) {
    msgpack_sbuffer_init(&b->sb);
    msgpack_packer_init(&b->pk, &b->sb, msgpack_sbuffer_write);
}

static void pack_str(msgpack_packer *pk, const char *s) {
    dsc_rpc_pack_cstr(pk, s);
}

/* [0, msgid, "estimate", [{"model": "gpt-4o", "output_tokens": 500}]] */
static void pack_request(buf *b, uint32_t msgid) {
    msgpack_pack_array(&b->pk, 4);
    msgpack_pack_uint8(&b->pk, 0);
    msgpack_pack_uint32(&b->pk, msgid);
    pack_str(&b->pk, "estimate");
    msgpack_pack_array(&b->pk, 1);
    msgpack_pack_map(&b->pk, 2);
    pack_str(&b->pk, "model");
    pack_str(&b->pk, "gpt-4o");
    pack_str(&b->pk, "output_tokens");
    msgpack_pack_int(&b->pk, 500);
}

static dsc_rpc_scan_result scan_all(const void *data, size_t len, size_t *size, dsc_error *err) {
    dsc_rpc_limits lim;
    dsc_rpc_limits_default(&lim);
    dsc_rpc_scanner sc;
    dsc_rpc_scanner_reset(&sc);
    return dsc_rpc_scan(&sc, &lim, data, len, size, err);
}

Test(rpc, valid_request_is_one_frame_and_decodes_to_its_msgid_method_and_params) {
    buf b;
    buf_init(&b);
    pack_request(&b, 42);
    size_t size = 0;
    dsc_error err;
    cr_assert_eq(scan_all(b.sb.data, b.sb.size, &size, &err), DSC_RPC_FRAME);
    cr_assert_eq(size, b.sb.size);
    msgpack_zone *zone = msgpack_zone_new(4096);
    msgpack_object obj;
    cr_assert_eq(dsc_rpc_decode((const uint8_t *)b.sb.data, size, zone, &obj), DSC_OK);
    dsc_rpc_request req;
    cr_assert_eq(dsc_rpc_request_parse(&obj, &req, &err), DSC_OK);
    cr_assert_eq(req.kind, DSC_RPC_REQUEST);
    cr_assert_eq(req.msgid, 42);
    cr_assert_eq(req.method_len, 8);
    cr_assert_eq(memcmp(req.method, "estimate", 8), 0);
    char model[32];
    cr_assert_eq(dsc_rpc_get_str(req.params, "model", true, model, sizeof model, &err), DSC_OK);
    cr_assert_str_eq(model, "gpt-4o");
    msgpack_zone_free(zone);
    msgpack_sbuffer_destroy(&b.sb);
}

Test(rpc, pipelined_messages_are_split_at_the_first_message_end) {
    buf b;
    buf_init(&b);
    pack_request(&b, 1);
    size_t first = b.sb.size;
    pack_request(&b, 2);
    size_t size = 0;
    cr_assert_eq(scan_all(b.sb.data, b.sb.size, &size, NULL), DSC_RPC_FRAME);
    cr_assert_eq(size, first);
    cr_assert_eq(scan_all(b.sb.data + first, b.sb.size - first, &size, NULL), DSC_RPC_FRAME);
    cr_assert_eq(size, b.sb.size - first);
    msgpack_sbuffer_destroy(&b.sb);
}

Test(rpc, truncation_at_every_byte_needs_more_and_resumes_to_the_same_frame) {
    buf b;
    buf_init(&b);
    pack_request(&b, 7);
    dsc_rpc_limits lim;
    dsc_rpc_limits_default(&lim);
    for (size_t cut = 0; cut < b.sb.size; cut++) {
        size_t size = 0;
        cr_assert_eq(scan_all(b.sb.data, cut, &size, NULL), DSC_RPC_NEED_MORE, "cut at %zu", cut);
    }
    /* One scanner fed one more byte at a time, as a slow sender would. */
    dsc_rpc_scanner sc;
    dsc_rpc_scanner_reset(&sc);
    size_t size = 0;
    for (size_t have = 0; have < b.sb.size; have++)
        cr_assert_eq(dsc_rpc_scan(&sc, &lim, (const uint8_t *)b.sb.data, have, &size, NULL),
                     DSC_RPC_NEED_MORE);
    cr_assert_eq(dsc_rpc_scan(&sc, &lim, (const uint8_t *)b.sb.data, b.sb.size, &size, NULL),
                 DSC_RPC_FRAME);
    cr_assert_eq(size, b.sb.size);
    msgpack_sbuffer_destroy(&b.sb);
}

Test(rpc, reserved_byte_c1_breaks_the_stream_with_bad_request) {
    const uint8_t bytes[] = {0x94, 0x00, 0x01, 0xc1};
    size_t size;
    dsc_error err;
    cr_assert_eq(scan_all(bytes, sizeof bytes, &size, &err), DSC_RPC_BROKEN);
    cr_assert_eq(err.code, DSC_BAD_REQUEST);
    cr_assert(strstr(err.message, "0xc1"), "%s", err.message);
}

Test(rpc, five_bytes_declaring_four_billion_elements_are_refused_before_any_allocation) {
    const uint8_t arr[] = {0xdd, 0xff, 0xff, 0xff, 0xff};
    const uint8_t map[] = {0xdf, 0xff, 0xff, 0xff, 0xff};
    const uint8_t str[] = {0xdb, 0xff, 0xff, 0xff, 0xff};
    const uint8_t nested[] = {0x91, 0x91, 0xde, 0xff, 0xff};
    const uint8_t *bombs[] = {arr, map, str, nested};
    for (int i = 0; i < 4; i++) {
        size_t size;
        dsc_error err;
        cr_assert_eq(scan_all(bombs[i], 5, &size, &err), DSC_RPC_BROKEN, "bomb %d", i);
        cr_assert_eq(err.code, DSC_TOO_LARGE);
    }
}

Test(rpc, array_of_nils_just_over_the_byte_limit_is_refused_from_its_header) {
    /* 65535 nils need 65535 bytes plus the 3-byte header: over 64 KiB. */
    const uint8_t hdr[] = {0xdc, 0xff, 0xff};
    size_t size;
    dsc_error err;
    cr_assert_eq(scan_all(hdr, sizeof hdr, &size, &err), DSC_RPC_BROKEN);
    cr_assert_eq(err.code, DSC_TOO_LARGE);
}

Test(rpc, many_strings_adding_up_past_the_limit_break_the_stream) {
    buf b;
    buf_init(&b);
    msgpack_pack_array(&b.pk, 20);
    char s[4000];
    memset(s, 'x', sizeof s);
    for (int i = 0; i < 20; i++) {
        msgpack_pack_str(&b.pk, sizeof s);
        msgpack_pack_str_body(&b.pk, s, sizeof s);
    }
    size_t size;
    dsc_error err;
    cr_assert_eq(scan_all(b.sb.data, b.sb.size, &size, &err), DSC_RPC_BROKEN);
    cr_assert_eq(err.code, DSC_TOO_LARGE);
    msgpack_sbuffer_destroy(&b.sb);
}

/* Pack a complete message over one limit, then a valid request: the first must be
 * skipped whole (SKIP with its exact size) and the second must still scan. */
static void assert_skipped_then_resynchronised(buf *b, size_t bad_size, const char *what) {
    pack_request(b, 9);
    size_t size = 0;
    dsc_error err;
    cr_assert_eq(scan_all(b->sb.data, b->sb.size, &size, &err), DSC_RPC_SKIP, "%s", what);
    cr_assert_eq(err.code, DSC_TOO_LARGE);
    cr_assert(strstr(err.message, what), "%s", err.message);
    cr_assert_eq(size, bad_size);
    cr_assert_eq(scan_all(b->sb.data + size, b->sb.size - size, &size, &err), DSC_RPC_FRAME);
    msgpack_sbuffer_destroy(&b->sb);
}

Test(rpc, nesting_deeper_than_the_limit_is_skipped_and_the_stream_resynchronises) {
    buf b;
    buf_init(&b);
    for (int i = 0; i < 17; i++)
        msgpack_pack_array(&b.pk, 1);
    msgpack_pack_nil(&b.pk);
    assert_skipped_then_resynchronised(&b, b.sb.size, "nesting depth");
}

Test(rpc, thousands_of_nested_arrays_do_not_overrun_the_scanner) {
    buf b;
    buf_init(&b);
    for (int i = 0; i < 5000; i++)
        msgpack_pack_array(&b.pk, 1);
    msgpack_pack_nil(&b.pk);
    assert_skipped_then_resynchronised(&b, b.sb.size, "nesting depth");
}

Test(rpc, array_over_max_items_is_skipped) {
    buf b;
    buf_init(&b);
    msgpack_pack_array(&b.pk, 1025);
    for (int i = 0; i < 1025; i++)
        msgpack_pack_nil(&b.pk);
    assert_skipped_then_resynchronised(&b, b.sb.size, "container size");
}

Test(rpc, message_over_max_objects_is_skipped) {
    buf b;
    buf_init(&b);
    msgpack_pack_array(&b.pk, 3);
    for (int i = 0; i < 3; i++) {
        msgpack_pack_array(&b.pk, 1000);
        for (int j = 0; j < 1000; j++)
            msgpack_pack_nil(&b.pk);
    }
    assert_skipped_then_resynchronised(&b, b.sb.size, "object count");
}

Test(rpc, string_over_max_string_bytes_is_skipped) {
    buf b;
    buf_init(&b);
    char s[5000];
    memset(s, 'y', sizeof s);
    msgpack_pack_str(&b.pk, sizeof s);
    msgpack_pack_str_body(&b.pk, s, sizeof s);
    assert_skipped_then_resynchronised(&b, b.sb.size, "string length");
}

Test(rpc, random_garbage_never_reads_past_its_buffer) {
    srand(12345);
    uint8_t bytes[256];
    for (int round = 0; round < 20000; round++) {
        size_t len = (size_t)(rand() % (int)sizeof bytes);
        for (size_t i = 0; i < len; i++)
            bytes[i] = (uint8_t)rand();
        uint8_t *copy = malloc(len ? len : 1); /* exact-size copy so ASan sees overreads */
        memcpy(copy, bytes, len);
        size_t size = 0;
        dsc_rpc_scan_result r = scan_all(copy, len, &size, NULL);
        if (r == DSC_RPC_FRAME || r == DSC_RPC_SKIP) cr_assert(size > 0 && size <= len);
        if (r == DSC_RPC_FRAME) {
            msgpack_zone *zone = msgpack_zone_new(1024);
            msgpack_object obj;
            cr_assert_eq(dsc_rpc_decode(copy, size, zone, &obj), DSC_OK);
            dsc_rpc_request req;
            (void)dsc_rpc_request_parse(&obj, &req, NULL);
            msgpack_zone_free(zone);
        }
        free(copy);
    }
}

/* --- the decoder against msgpack_unpack ----------------------------------------- */

/* Whether two trees are the same: types, values, and strings at the same place (an
 * empty one's pointer is never read). */
static bool same_tree(const msgpack_object *a, const msgpack_object *b) {
    if (a->type != b->type) return false;
    switch (a->type) {
    case MSGPACK_OBJECT_NIL:
        return true;
    case MSGPACK_OBJECT_BOOLEAN:
        return a->via.boolean == b->via.boolean;
    case MSGPACK_OBJECT_POSITIVE_INTEGER:
        return a->via.u64 == b->via.u64;
    case MSGPACK_OBJECT_NEGATIVE_INTEGER:
        return a->via.i64 == b->via.i64;
    case MSGPACK_OBJECT_FLOAT32:
    case MSGPACK_OBJECT_FLOAT64:
        return memcmp(&a->via.f64, &b->via.f64, sizeof a->via.f64) == 0;
    case MSGPACK_OBJECT_STR:
    case MSGPACK_OBJECT_BIN:
        return a->via.str.size == b->via.str.size &&
               (a->via.str.size == 0 || a->via.str.ptr == b->via.str.ptr);
    case MSGPACK_OBJECT_EXT:
        return a->via.ext.type == b->via.ext.type && a->via.ext.size == b->via.ext.size &&
               (a->via.ext.size == 0 || a->via.ext.ptr == b->via.ext.ptr);
    case MSGPACK_OBJECT_ARRAY:
        if (a->via.array.size != b->via.array.size) return false;
        for (uint32_t i = 0; i < a->via.array.size; i++)
            if (!same_tree(&a->via.array.ptr[i], &b->via.array.ptr[i])) return false;
        return true;
    case MSGPACK_OBJECT_MAP:
        if (a->via.map.size != b->via.map.size) return false;
        for (uint32_t i = 0; i < a->via.map.size; i++)
            if (!same_tree(&a->via.map.ptr[i].key, &b->via.map.ptr[i].key) ||
                !same_tree(&a->via.map.ptr[i].val, &b->via.map.ptr[i].val))
                return false;
        return true;
    }
    return false;
}

static uint64_t rng_next(uint64_t *s) {
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

/* A header with an n-byte big-endian value, in the widest form when wide. */
static void raw_header(buf *b, uint8_t type, uint64_t v, int n) {
    uint8_t h[9] = {type};
    for (int i = 0; i < n; i++)
        h[1 + i] = (uint8_t)(v >> (8 * (n - 1 - i)));
    msgpack_sbuffer_write(&b->sb, (const char *)h, (size_t)(1 + n));
}

static void pack_random(buf *b, uint64_t *s, int depth) {
    static const char bytes[300] = "some text that is long enough for every string we pack here";
    uint64_t r = rng_next(s), v = rng_next(s);
    size_t len = (size_t)(v % (v & 1 ? 40 : 300));
    int kind = (int)(r % (depth > 6 ? 14 : 18));
    switch (kind) {
    case 0:
        msgpack_pack_nil(&b->pk);
        break;
    case 1:
        (v & 1 ? msgpack_pack_true : msgpack_pack_false)(&b->pk);
        break;
    case 2:
        msgpack_pack_uint64(&b->pk, v >> (r % 64));
        break;
    case 3:
        msgpack_pack_int64(&b->pk, (int64_t)v >> (r % 64));
        break;
    case 4: /* every width of signed and unsigned, non-negative values included */
        raw_header(b, (uint8_t)(0xcc + r % 8), v, 1 << (r % 4));
        break;
    case 5:
        msgpack_pack_float(&b->pk, (float)((int64_t)v % 100000) / 7.0f);
        break;
    case 6:
        msgpack_pack_double(&b->pk, (double)(int64_t)v / 3.0);
        break;
    case 7:
        msgpack_pack_str_with_body(&b->pk, bytes, len);
        break;
    case 8:
        msgpack_pack_bin_with_body(&b->pk, bytes, len);
        break;
    case 9:
        msgpack_pack_ext_with_body(&b->pk, bytes, len % 20, (int8_t)v);
        break;
    case 10: /* str32, bin32, ext32 */
        raw_header(b, (uint8_t)(r & 2 ? 0xdb : 0xc6), len, 4);
        msgpack_sbuffer_write(&b->sb, bytes, len);
        break;
    case 11:
        raw_header(b, 0xc9, len, 4);
        msgpack_sbuffer_write(&b->sb, (const char *)&v, 1);
        msgpack_sbuffer_write(&b->sb, bytes, len);
        break;
    case 12:
        msgpack_pack_int8(&b->pk, (int8_t)v);
        break;
    case 13:
        msgpack_pack_fix_int16(&b->pk, (int16_t)v);
        break;
    default: { /* containers, in every header form */
        uint32_t n = (uint32_t)(v % (r & 8 ? 4 : 20));
        bool map = kind & 1;
        if (r & 16)
            raw_header(b, (uint8_t)(map ? 0xdf : 0xdd), n, 4);
        else if (r & 32)
            raw_header(b, (uint8_t)(map ? 0xde : 0xdc), n, 2);
        else
            (map ? msgpack_pack_map : msgpack_pack_array)(&b->pk, n);
        for (uint32_t i = 0; i < n * (map ? 2u : 1u); i++)
            pack_random(b, s, depth + 1);
    }
    }
}

typedef struct decoded {
    dsc_status ours;
    msgpack_unpack_return theirs;
    bool same; /* both decoded and the trees are the same */
} decoded;

static decoded decode_both(const uint8_t *data, size_t len) {
    msgpack_zone *za = msgpack_zone_new(1024), *zb = msgpack_zone_new(1024);
    msgpack_object a, b;
    size_t off = 0;
    decoded d = {dsc_rpc_decode(data, len, za, &a),
                 msgpack_unpack((const char *)data, len, &off, zb, &b), false};
    if (d.theirs == MSGPACK_UNPACK_SUCCESS && off != len) d.theirs = MSGPACK_UNPACK_EXTRA_BYTES;
    d.same = d.ours == DSC_OK && d.theirs == MSGPACK_UNPACK_SUCCESS && same_tree(&a, &b);
    msgpack_zone_free(za);
    msgpack_zone_free(zb);
    return d;
}

/* Where both decode, the trees are the same; a message msgpack-c refuses is refused,
 * and out of memory only where msgpack-c runs out too (its 32 open containers; for a
 * count that cannot fit in the bytes left it allocates and fails, the decoder says
 * DSC_PARSE at once). */
static void expect_as_msgpack_c(const uint8_t *data, size_t len, const char *what, int round) {
    uint8_t *copy = malloc(len ? len : 1); /* exact size, so ASan sees an overread */
    memcpy(copy, data, len);
    decoded d = decode_both(copy, len);
    free(copy);
    bool theirs_ok = d.theirs == MSGPACK_UNPACK_SUCCESS;
    cr_assert_eq(d.ours == DSC_OK, theirs_ok, "%s %d: ours %d, msgpack-c %d", what, round, d.ours,
                 d.theirs);
    if (theirs_ok) cr_assert(d.same, "%s %d: the trees differ", what, round);
    if (d.ours == DSC_NOMEM)
        cr_assert_eq(d.theirs, MSGPACK_UNPACK_NOMEM_ERROR, "%s %d", what, round);
    if (!theirs_ok && d.theirs != MSGPACK_UNPACK_NOMEM_ERROR)
        cr_assert_eq(d.ours, DSC_PARSE, "%s %d", what, round);
}

Test(rpc, the_decoder_builds_msgpack_c_s_tree_for_every_type_and_refuses_what_it_refuses) {
    uint64_t s = 0x9e3779b97f4a7c15ull;
    for (int round = 0; round < 3000; round++) {
        buf b;
        buf_init(&b);
        pack_random(&b, &s, 0);
        const uint8_t *data = (const uint8_t *)b.sb.data;
        expect_as_msgpack_c(data, b.sb.size, "whole", round);
        for (int cut = 0; cut < 4; cut++) /* truncated */
            expect_as_msgpack_c(data, rng_next(&s) % (b.sb.size + 1), "truncated", round);
        uint8_t *bent = malloc(b.sb.size + 1); /* a byte changed, and one byte too many */
        memcpy(bent, data, b.sb.size);
        bent[b.sb.size] = 0;
        expect_as_msgpack_c(bent, b.sb.size + 1, "trailing byte", round);
        for (int flip = 0; flip < 4; flip++) {
            size_t at = rng_next(&s) % b.sb.size;
            uint8_t was = bent[at];
            bent[at] = (uint8_t)rng_next(&s);
            expect_as_msgpack_c(bent, b.sb.size, "bent", round);
            bent[at] = was;
        }
        free(bent);
        msgpack_sbuffer_destroy(&b.sb);
    }
}

/* 32 open containers fit, the 33rd (an empty one too) is out of room, as in msgpack-c. */
Test(rpc, the_decoder_runs_out_of_room_past_32_open_containers_as_msgpack_c_does) {
    for (int depth = 28; depth <= 36; depth++)
        for (int inner = 0; inner < 3; inner++) { /* [[...[x]...]] with x nil, [] or {} */
            uint8_t msg[64];
            size_t n = 0;
            for (int i = 0; i < depth; i++)
                msg[n++] = 0x91;
            msg[n++] = inner == 0 ? 0xc0 : inner == 1 ? 0x90 : 0x80;
            decoded d = decode_both(msg, n);
            bool fits = inner == 0 ? depth <= 32 : depth <= 31;
            cr_assert_eq(d.ours, fits ? DSC_OK : DSC_NOMEM, "depth %d inner %d", depth, inner);
            cr_assert_eq(d.theirs, fits ? MSGPACK_UNPACK_SUCCESS : MSGPACK_UNPACK_NOMEM_ERROR,
                         "depth %d inner %d", depth, inner);
            cr_assert_eq(d.same, fits);
        }
}

static dsc_status parse_bytes(const void *data, size_t len, dsc_rpc_request *req, dsc_error *err) {
    size_t size = 0;
    cr_assert_eq(scan_all(data, len, &size, err), DSC_RPC_FRAME);
    msgpack_zone *zone = msgpack_zone_new(1024);
    msgpack_object obj;
    cr_assert_eq(dsc_rpc_decode(data, size, zone, &obj), DSC_OK);
    dsc_status st = dsc_rpc_request_parse(&obj, req, err);
    msgpack_zone_free(zone);
    return st;
}

Test(rpc, a_map_instead_of_a_request_array_is_a_bad_request_without_msgid) {
    const uint8_t bytes[] = {0x81, 0xa1, 'a', 0x01};
    dsc_rpc_request req;
    dsc_error err;
    cr_assert_eq(parse_bytes(bytes, sizeof bytes, &req, &err), DSC_BAD_REQUEST);
    cr_assert_not(req.has_msgid);
    cr_assert(strstr(err.message, "expected an array"), "%s", err.message);
}

Test(rpc, params_that_are_a_bare_map_keep_the_msgid_for_the_error_reply) {
    /* [0, 5, "ping", {}] */
    const uint8_t bytes[] = {0x94, 0x00, 0x05, 0xa4, 'p', 'i', 'n', 'g', 0x80};
    dsc_rpc_request req;
    dsc_error err;
    cr_assert_eq(parse_bytes(bytes, sizeof bytes, &req, &err), DSC_BAD_REQUEST);
    cr_assert(req.has_msgid);
    cr_assert_eq(req.msgid, 5);
    cr_assert(strstr(err.message, "params"), "%s", err.message);
}

Test(rpc, empty_params_array_and_notifications_are_accepted) {
    const uint8_t ping[] = {0x94, 0x00, 0x05, 0xa4, 'p', 'i', 'n', 'g', 0x90};
    const uint8_t note[] = {0x93, 0x02, 0xa6, 'c', 'a', 'n', 'c', 'e', 'l', 0x91, 0x80};
    dsc_rpc_request req;
    cr_assert_eq(parse_bytes(ping, sizeof ping, &req, NULL), DSC_OK);
    cr_assert_null(req.params);
    cr_assert_eq(parse_bytes(note, sizeof note, &req, NULL), DSC_OK);
    cr_assert_eq(req.kind, DSC_RPC_NOTIFICATION);
    cr_assert_not_null(req.params);
}

Test(rpc, a_response_sent_to_the_server_is_refused_with_its_msgid) {
    const uint8_t bytes[] = {0x94, 0x01, 0x03, 0xc0, 0x80};
    dsc_rpc_request req;
    dsc_error err;
    cr_assert_eq(parse_bytes(bytes, sizeof bytes, &req, &err), DSC_BAD_REQUEST);
    cr_assert(req.has_msgid);
    cr_assert_eq(req.msgid, 3);
}

Test(rpc, getters_name_the_field_and_what_was_wrong) {
    buf b;
    buf_init(&b);
    msgpack_pack_map(&b.pk, 4);
    pack_str(&b.pk, "output_tokens");
    pack_str(&b.pk, "many");
    pack_str(&b.pk, "input_tokens");
    msgpack_pack_int(&b.pk, -3);
    pack_str(&b.pk, "purpose");
    pack_str(&b.pk, "a-purpose-that-is-too-long");
    pack_str(&b.pk, "reserve");
    msgpack_pack_true(&b.pk);
    msgpack_zone *zone = msgpack_zone_new(1024);
    msgpack_object map;
    cr_assert_eq(dsc_rpc_decode((const uint8_t *)b.sb.data, b.sb.size, zone, &map), DSC_OK);
    dsc_error err;
    int64_t n = 0;
    cr_assert_eq(dsc_rpc_get_int(&map, "output_tokens", true, 0, 1000, &n, &err), DSC_BAD_REQUEST);
    cr_assert_str_eq(err.message, "field 'output_tokens': expected an integer, got string");
    cr_assert_eq(dsc_rpc_get_int(&map, "input_tokens", false, 0, 1000, &n, &err), DSC_BAD_REQUEST);
    cr_assert_str_eq(err.message, "field 'input_tokens': -3 is out of range [0, 1000]");
    char small[8];
    cr_assert_eq(dsc_rpc_get_str(&map, "purpose", true, small, sizeof small, &err),
                 DSC_BAD_REQUEST);
    cr_assert_str_eq(err.message, "field 'purpose': longer than 7 bytes");
    cr_assert_eq(dsc_rpc_get_str(&map, "model", true, small, sizeof small, &err), DSC_BAD_REQUEST);
    cr_assert_str_eq(err.message, "field 'model' is required");
    bool reserve = false;
    cr_assert_eq(dsc_rpc_get_bool(&map, "reserve", false, &reserve, &err), DSC_OK);
    cr_assert(reserve);
    double x = 1.5;
    cr_assert_eq(dsc_rpc_get_num(&map, "latency_s", false, 0, 10, &x, &err), DSC_OK);
    cr_assert_eq(x, 1.5, "an absent optional field leaves the default");
    msgpack_zone_free(zone);
    msgpack_sbuffer_destroy(&b.sb);
}

Test(rpc, error_reply_carries_the_wire_code_and_message) {
    buf b;
    buf_init(&b);
    dsc_error e;
    dsc_error_set(&e, DSC_UNKNOWN_MODEL, "field 'model': unknown model 'x'");
    cr_assert_eq(dsc_rpc_pack_error(&b.pk, 77, &e), 0);
    msgpack_zone *zone = msgpack_zone_new(1024);
    msgpack_object o;
    cr_assert_eq(dsc_rpc_decode((const uint8_t *)b.sb.data, b.sb.size, zone, &o), DSC_OK);
    cr_assert_eq(o.via.array.size, 4);
    cr_assert_eq(o.via.array.ptr[1].via.u64, 77);
    char code[32];
    cr_assert_eq(dsc_rpc_get_str(&o.via.array.ptr[2], "code", true, code, sizeof code, NULL),
                 DSC_OK);
    cr_assert_str_eq(code, "unknown_model");
    cr_assert_eq(o.via.array.ptr[3].type, MSGPACK_OBJECT_NIL);
    msgpack_zone_free(zone);
    msgpack_sbuffer_destroy(&b.sb);
}

Test(rpc, utf8_check_takes_well_formed_text_and_refuses_every_malformed_kind) {
    const char *good[] = {"",
                          "ascii",
                          "caf\xc3\xa9",
                          "\xe2\x82\xac",
                          "\xf0\x9f\x8c\x8d",
                          "\xef\xbf\xbf",
                          "\xf4\x8f\xbf\xbf"};
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++)
        cr_assert(dsc_rpc_utf8_valid(good[i], strlen(good[i])), "good[%zu] refused", i);
    const char *bad[] = {
        "\xff",             /* never a UTF-8 byte */
        "caf\xe9",          /* Latin-1 */
        "\xc3",             /* truncated */
        "\xc0\xaf",         /* overlong '/' */
        "\xe0\x80\xaf",     /* overlong, three bytes */
        "\xed\xa0\x80",     /* a UTF-16 surrogate */
        "\xf4\x90\x80\x80", /* past U+10FFFF */
        "\x80",             /* a lone continuation byte */
        "ok\xe2\x82",       /* truncated at the end */
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        cr_assert_not(dsc_rpc_utf8_valid(bad[i], strlen(bad[i])), "bad[%zu] accepted", i);
}

Test(rpc, a_string_field_that_is_not_utf8_is_refused_naming_the_field) {
    buf b;
    buf_init(&b);
    msgpack_pack_map(&b.pk, 1);
    pack_str(&b.pk, "purpose");
    msgpack_pack_str_with_body(&b.pk, "caf\xe9", 4);
    msgpack_zone *zone = msgpack_zone_new(1024);
    msgpack_object map;
    cr_assert_eq(dsc_rpc_decode((const uint8_t *)b.sb.data, b.sb.size, zone, &map), DSC_OK);
    dsc_error err;
    char out[64];
    cr_assert_eq(dsc_rpc_get_str(&map, "purpose", true, out, sizeof out, &err), DSC_BAD_REQUEST);
    cr_assert_str_eq(err.message, "field 'purpose': not valid UTF-8");
    cr_assert_str_eq(out, "", "nothing of the bad string is copied out");
    msgpack_zone_free(zone);
    msgpack_sbuffer_destroy(&b.sb);
}

Test(rpc, a_method_name_that_is_not_utf8_is_a_bad_request_with_the_msgid) {
    buf b;
    buf_init(&b);
    msgpack_pack_array(&b.pk, 4);
    msgpack_pack_uint8(&b.pk, 0);
    msgpack_pack_uint32(&b.pk, 9);
    msgpack_pack_str_with_body(&b.pk, "pi\xffng", 5);
    msgpack_pack_array(&b.pk, 0);
    msgpack_zone *zone = msgpack_zone_new(1024);
    msgpack_object obj;
    cr_assert_eq(dsc_rpc_decode((const uint8_t *)b.sb.data, b.sb.size, zone, &obj), DSC_OK);
    dsc_rpc_request req;
    dsc_error err;
    cr_assert_eq(dsc_rpc_request_parse(&obj, &req, &err), DSC_BAD_REQUEST);
    cr_assert(req.has_msgid);
    cr_assert_eq(req.msgid, 9);
    cr_assert_str_eq(err.message, "method: not valid UTF-8");
    msgpack_zone_free(zone);
    msgpack_sbuffer_destroy(&b.sb);
}

Test(rpc, check_keys_names_the_first_key_not_listed_and_passes_a_map_of_listed_ones) {
    buf b;
    buf_init(&b);
    msgpack_pack_map(&b.pk, 3);
    pack_str(&b.pk, "purpose");
    pack_str(&b.pk, "");
    pack_str(&b.pk, "reserve");
    msgpack_pack_true(&b.pk);
    pack_str(&b.pk, "reserv");
    msgpack_pack_false(&b.pk);
    msgpack_zone *zone = msgpack_zone_new(1024);
    msgpack_object map;
    cr_assert_eq(dsc_rpc_decode((const uint8_t *)b.sb.data, b.sb.size, zone, &map), DSC_OK);
    dsc_error err;
    static const char *const known[] = {"purpose", "reserve", NULL};
    static const char *const more[] = {"purpose", "reserve", "reserv", NULL};
    cr_assert_eq(dsc_rpc_check_keys(&map, known, "the params of 'check'", &err), DSC_BAD_REQUEST);
    cr_assert_str_eq(err.message, "field 'reserv': unknown in the params of 'check'");
    cr_assert_eq(dsc_rpc_check_keys(&map, more, "x", &err), DSC_OK);
    char s[8];
    cr_assert_eq(dsc_rpc_get_str(&map, "purpose", false, s, sizeof s, &err), DSC_OK,
                 "an optional string may be empty");
    cr_assert_eq(dsc_rpc_get_str(&map, "purpose", true, s, sizeof s, &err), DSC_BAD_REQUEST);
    cr_assert_str_eq(err.message, "field 'purpose' is required and is empty");
    msgpack_zone_free(zone);
    msgpack_sbuffer_destroy(&b.sb);
}

static const dsc_rpc_name picked_names[] = {DSC_RPC_NAME("images"), DSC_RPC_NAME("scope"),
                                            DSC_RPC_NAME("image")};

Test(rpc, a_pick_keeps_the_listed_fields_in_order_and_the_getters_answer_as_on_the_whole_map) {
    buf b;
    buf_init(&b);
    msgpack_pack_map(&b.pk, 5);
    pack_str(&b.pk, "model");
    pack_str(&b.pk, "gpt-4o");
    pack_str(&b.pk, "scope");
    msgpack_pack_int(&b.pk, 3);
    pack_str(&b.pk, "imagez");
    msgpack_pack_int(&b.pk, 1);
    pack_str(&b.pk, "images");
    msgpack_pack_int(&b.pk, 2);
    pack_str(&b.pk, "");
    msgpack_pack_int(&b.pk, 4);
    msgpack_zone *zone = msgpack_zone_new(1024);
    msgpack_object map, picked;
    cr_assert_eq(dsc_rpc_decode((const uint8_t *)b.sb.data, b.sb.size, zone, &map), DSC_OK);
    msgpack_object_kv kv[3];
    const msgpack_object *p = dsc_rpc_pick(&map, picked_names, 3, kv, &picked);
    cr_assert_eq(p, &picked);
    cr_assert_eq(p->via.map.size, 2,
                 "only scope and images: 'imagez', model and '' are not listed");
    cr_assert_eq(p->via.map.ptr[0].key.via.str.size, 5); /* scope first, as in the map */
    int64_t n = 0;
    cr_assert_eq(dsc_rpc_get_int(p, "images", false, 0, 9, &n, NULL), DSC_OK);
    cr_assert_eq(n, 2);
    dsc_error err;
    char text[8];
    cr_assert_eq(dsc_rpc_get_str(p, "scope", false, text, sizeof text, &err), DSC_BAD_REQUEST);
    cr_assert_str_eq(err.message, "field 'scope': expected a string, got integer");
    cr_assert_eq(dsc_rpc_get_str(p, "image", false, text, sizeof text, &err), DSC_OK);
    cr_assert_str_eq(text, "", "absent stays absent");
    msgpack_zone_free(zone);
    msgpack_sbuffer_destroy(&b.sb);
}

Test(rpc, a_pick_with_a_repeated_key_past_its_room_answers_with_the_whole_map) {
    buf b;
    buf_init(&b);
    msgpack_pack_map(&b.pk, 4);
    for (int i = 0; i < 3; i++) {
        pack_str(&b.pk, "images");
        msgpack_pack_int(&b.pk, 10 + i);
    }
    pack_str(&b.pk, "scope");
    pack_str(&b.pk, "all");
    msgpack_zone *zone = msgpack_zone_new(1024);
    msgpack_object map, picked;
    cr_assert_eq(dsc_rpc_decode((const uint8_t *)b.sb.data, b.sb.size, zone, &map), DSC_OK);
    msgpack_object_kv kv[3];
    const msgpack_object *p = dsc_rpc_pick(&map, picked_names, 3, kv, &picked);
    cr_assert_eq(p, &map, "the scope would not have fitted");
    char text[8];
    cr_assert_eq(dsc_rpc_get_str(p, "scope", false, text, sizeof text, NULL), DSC_OK);
    cr_assert_str_eq(text, "all");
    int64_t n = 0;
    cr_assert_eq(dsc_rpc_get_int(p, "images", false, 0, 99, &n, NULL), DSC_OK);
    cr_assert_eq(n, 10, "the first of a repeated key, as dsc_rpc_field answers");
    msgpack_object nil = {.type = MSGPACK_OBJECT_NIL};
    cr_assert_eq(dsc_rpc_pick(&nil, picked_names, 3, kv, &picked), &nil);
    msgpack_zone_free(zone);
    msgpack_sbuffer_destroy(&b.sb);
}

Test(rpc, a_key_is_known_only_when_all_its_bytes_are_a_listed_name) {
    static const char *const known[] = {"reserve", "purpose", NULL};
    static const char *const keys[] = {"reserv", "reservee", "reserve\0x", "", "purposf"};
    static const size_t lens[] = {6, 8, 9, 0, 7};
    for (size_t i = 0; i < sizeof lens / sizeof lens[0]; i++) {
        buf b;
        buf_init(&b);
        msgpack_pack_map(&b.pk, 1);
        dsc_rpc_pack_strn(&b.pk, keys[i], lens[i]);
        msgpack_pack_true(&b.pk);
        msgpack_zone *zone = msgpack_zone_new(1024);
        msgpack_object map;
        cr_assert_eq(dsc_rpc_decode((const uint8_t *)b.sb.data, b.sb.size, zone, &map), DSC_OK);
        cr_assert_not(dsc_rpc_keys_known(&map, known), "key %zu taken as known", i);
        msgpack_zone_free(zone);
        msgpack_sbuffer_destroy(&b.sb);
    }
    buf b;
    buf_init(&b);
    msgpack_pack_map(&b.pk, 2);
    pack_str(&b.pk, "purpose");
    msgpack_pack_true(&b.pk);
    pack_str(&b.pk, "reserve");
    msgpack_pack_true(&b.pk);
    msgpack_zone *zone = msgpack_zone_new(1024);
    msgpack_object map;
    cr_assert_eq(dsc_rpc_decode((const uint8_t *)b.sb.data, b.sb.size, zone, &map), DSC_OK);
    cr_assert(dsc_rpc_keys_known(&map, known));
    msgpack_zone_free(zone);
    msgpack_sbuffer_destroy(&b.sb);
}
