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
