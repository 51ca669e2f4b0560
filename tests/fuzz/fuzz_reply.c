/*
 * fuzz_reply.c - libFuzzer target for libdiscern-client's reply path: the bytes a
 * server sends, framed by the scanner shared with discernd (core/rpc_scan.c) under
 * the client's reply limits, unpacked, and every [1, msgid, error, result] handed to
 * the decoder of one method (the first input byte picks it), then cleared, as
 * client.c does for a call.
 */
#include "client_wire.h"
#include "fuzz_util.h"

#include <stdlib.h>
#include <string.h>

static void decode_reply(const dsc__method *m, const msgpack_object *o) {
    if (o->type != MSGPACK_OBJECT_ARRAY || o->via.array.size != 4) return;
    const msgpack_object *result = &o->via.array.ptr[3];
    if (o->via.array.ptr[2].type != MSGPACK_OBJECT_NIL || result->type != MSGPACK_OBJECT_MAP)
        return;
    void *out = calloc(1, m->result_size ? m->result_size : 1);
    if (!out) return;
    dsc_error err;
    dsc_error_clear(&err);
    (void)m->decode(result, out, &err);
    if (m->clear) m->clear(out);
    free(out);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    const dsc__method *m = dsc__method_get(data[0] % DSC__CALL_COUNT);
    dsc_rpc_limits lim;
    dsc__reply_limits(8192, &lim);
    size_t off = 1;
    while (off < size) {
        dsc_rpc_scanner sc;
        dsc_rpc_scanner_reset(&sc);
        size_t sz = 0;
        if (dsc_rpc_scan(&sc, &lim, data + off, size - off, &sz, NULL) != DSC_RPC_FRAME) break;
        if (sz == 0 || sz > size - off) abort(); /* never claims bytes it did not see */
        msgpack_unpacked u;
        msgpack_unpacked_init(&u);
        size_t used = 0;
        msgpack_unpack_return r = msgpack_unpack_next(&u, (const char *)data + off, sz, &used);
        if (r == MSGPACK_UNPACK_SUCCESS) decode_reply(m, &u.data);
        msgpack_unpacked_destroy(&u);
        if (r != MSGPACK_UNPACK_SUCCESS) break;
        off += sz;
    }
    return 0;
}
