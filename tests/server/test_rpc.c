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
