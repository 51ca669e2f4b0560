/*
 * test_rpc_out.c - the reply buffer of server/rpc.c (dsc_rpc_out): a reply is packed
 * whole or reported broken, never sent with a piece missing.
 */
#include "rpc.h"

#include <criterion/criterion.h>
#include <stdint.h>
#include <string.h>

Test(rpc_out, a_reply_that_fits_is_packed_whole) {
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    dsc_rpc_out o = {&sb, SIZE_MAX, false};
    msgpack_packer pk;
    msgpack_packer_init(&pk, &o, dsc_rpc_out_write);
    cr_assert_eq(dsc_rpc_pack_result_begin(&pk, 7), 0);
    cr_assert_eq(dsc_rpc_pack_cstr(&pk, "pong"), 0);
    cr_assert_not(o.failed);
    msgpack_zone zone;
    msgpack_zone_init(&zone, 256);
    msgpack_object obj;
    cr_assert_eq(dsc_rpc_decode((const uint8_t *)sb.data, sb.size, &zone, &obj), DSC_OK);
    cr_assert_eq(obj.via.array.size, 4);
    msgpack_zone_destroy(&zone);
    msgpack_sbuffer_destroy(&sb);
}

Test(rpc_out, after_one_failed_write_every_later_write_fails_too) {
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    dsc_rpc_out o = {&sb, 16, false}; /* room for 16 bytes: a stand-in for memory */
    msgpack_packer pk;
    msgpack_packer_init(&pk, &o, dsc_rpc_out_write);
    cr_assert_eq(dsc_rpc_pack_result_begin(&pk, 1), 0);
    char big[64];
    memset(big, 'x', sizeof big);
    cr_assert_neq(msgpack_pack_str_with_body(&pk, big, sizeof big), 0);
    cr_assert(o.failed);
    size_t at_failure = sb.size;
    /* A small value would fit, but the frame already lacks a piece: refused. */
    cr_assert_neq(msgpack_pack_nil(&pk), 0);
    cr_assert_neq(msgpack_pack_true(&pk), 0);
    cr_assert_eq(sb.size, at_failure, "bytes written after the failure: %zu", sb.size - at_failure);
    cr_assert(o.failed);
    msgpack_sbuffer_destroy(&sb);
}

/* What msgpack-c itself writes for the same values, through a plain sbuffer. */
static void reference_pack(msgpack_sbuffer *sb, const char *s, size_t n, double d) {
    msgpack_packer pk;
    msgpack_packer_init(&pk, sb, msgpack_sbuffer_write);
    msgpack_pack_str_with_body(&pk, s, n);
    msgpack_pack_str_with_body(&pk, s, n);
    msgpack_pack_double(&pk, d);
    msgpack_pack_map(&pk, 2);
    msgpack_pack_str_with_body(&pk, "min", 3);
    msgpack_pack_double(&pk, d);
    msgpack_pack_str_with_body(&pk, "max", 3);
    msgpack_pack_double(&pk, -d);
}

Test(rpc_out, one_write_strings_keys_and_ranges_are_the_bytes_msgpack_c_packs) {
    char s[301];
    for (size_t i = 0; i < sizeof s; i++)
        s[i] = (char)('a' + i % 26);
    const double ds[] = {0.0, -0.0, 1.5, -3.25e-12, 6.02e23, 1.0 / 0.0, 123456789.125};
    const size_t lens[] = {0, 1, 3, 30, 31, 32, 33, 255, 256, 300};
    for (size_t li = 0; li < sizeof lens / sizeof lens[0]; li++) {
        for (size_t di = 0; di < sizeof ds / sizeof ds[0]; di++) {
            size_t n = lens[li];
            char key[301];
            memcpy(key, s, n);
            key[n] = '\0';
            msgpack_sbuffer want, got;
            msgpack_sbuffer_init(&want);
            msgpack_sbuffer_init(&got);
            reference_pack(&want, s, n, ds[di]);
            dsc_rpc_out o = {&got, SIZE_MAX, false};
            msgpack_packer pk;
            msgpack_packer_init(&pk, &o, dsc_rpc_out_write);
            cr_assert_eq(dsc_rpc_pack_strn(&pk, s, n), 0);
            cr_assert_eq(dsc_rpc_pack_key_double(&pk, key, ds[di]), 0);
            cr_assert_eq(dsc_rpc_pack_range(&pk, ds[di], -ds[di]), 0);
            cr_assert_not(o.failed);
            cr_assert_eq(got.size, want.size, "length %zu, value %g: %zu bytes, msgpack-c %zu", n,
                         ds[di], got.size, want.size);
            cr_assert_eq(memcmp(got.data, want.data, want.size), 0,
                         "length %zu, value %g: bytes differ from msgpack-c's", n, ds[di]);
            /* through another packer's callback (not built in place): the same */
            msgpack_sbuffer plain;
            msgpack_sbuffer_init(&plain);
            msgpack_packer_init(&pk, &plain, msgpack_sbuffer_write);
            dsc_rpc_pack_strn(&pk, s, n);
            dsc_rpc_pack_key_double(&pk, key, ds[di]);
            dsc_rpc_pack_range(&pk, ds[di], -ds[di]);
            cr_assert_eq(plain.size, want.size);
            cr_assert_eq(memcmp(plain.data, want.data, want.size), 0,
                         "length %zu, value %g: a plain sbuffer's bytes differ", n, ds[di]);
            msgpack_sbuffer_destroy(&plain);
            msgpack_sbuffer_destroy(&want);
            msgpack_sbuffer_destroy(&got);
        }
    }
}

Test(rpc_out, a_one_write_range_past_the_cap_fails_whole_and_leaves_no_bytes) {
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    dsc_rpc_out o = {&sb, 20, false}; /* a range is 27 bytes */
    msgpack_packer pk;
    msgpack_packer_init(&pk, &o, dsc_rpc_out_write);
    cr_assert_eq(dsc_rpc_pack_key_double(&pk, "min", 1.0), 0); /* 13 bytes: fits */
    cr_assert_eq(sb.size, 13);
    cr_assert_neq(dsc_rpc_pack_range(&pk, 1.0, 2.0), 0);
    cr_assert(o.failed);
    cr_assert_eq(sb.size, 13, "a refused write left %zu bytes", sb.size - 13);
    cr_assert_neq(dsc_rpc_pack_strn(&pk, "x", 1), 0); /* fits, but the reply is broken */
    cr_assert_eq(sb.size, 13);
    msgpack_sbuffer_destroy(&sb);
}

Test(rpc_out, a_result_header_is_the_bytes_msgpack_c_packs_for_every_size_of_msgid) {
    const uint32_t ids[] = {0, 1, 127, 128, 255, 256, 65535, 65536, 16777216, UINT32_MAX};
    for (size_t i = 0; i < sizeof ids / sizeof ids[0]; i++) {
        msgpack_sbuffer want, got, plain;
        msgpack_sbuffer_init(&want);
        msgpack_sbuffer_init(&got);
        msgpack_sbuffer_init(&plain);
        msgpack_packer pk;
        msgpack_packer_init(&pk, &want, msgpack_sbuffer_write);
        msgpack_pack_array(&pk, 4);
        msgpack_pack_uint8(&pk, 1);
        msgpack_pack_uint32(&pk, ids[i]);
        msgpack_pack_nil(&pk);
        dsc_rpc_out o = {&got, SIZE_MAX, false};
        msgpack_packer_init(&pk, &o, dsc_rpc_out_write);
        cr_assert_eq(dsc_rpc_pack_result_begin(&pk, ids[i]), 0);
        msgpack_packer_init(&pk, &plain, msgpack_sbuffer_write); /* not built in place */
        cr_assert_eq(dsc_rpc_pack_result_begin(&pk, ids[i]), 0);
        cr_assert_eq(got.size, want.size, "msgid %u: %zu bytes, msgpack-c %zu", ids[i], got.size,
                     want.size);
        cr_assert_eq(memcmp(got.data, want.data, want.size), 0, "msgid %u: bytes differ", ids[i]);
        cr_assert_eq(plain.size, want.size);
        cr_assert_eq(memcmp(plain.data, want.data, want.size), 0, "msgid %u: plain differs",
                     ids[i]);
        msgpack_sbuffer_destroy(&want);
        msgpack_sbuffer_destroy(&got);
        msgpack_sbuffer_destroy(&plain);
    }
}

Test(rpc_out, a_result_header_past_the_cap_fails_and_leaves_no_bytes) {
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    dsc_rpc_out o = {&sb, 5, false}; /* msgid 70000 makes a 8-byte header */
    msgpack_packer pk;
    msgpack_packer_init(&pk, &o, dsc_rpc_out_write);
    cr_assert_neq(dsc_rpc_pack_result_begin(&pk, 70000), 0);
    cr_assert(o.failed);
    cr_assert_eq(sb.size, 0);
    msgpack_sbuffer_destroy(&sb);
}
