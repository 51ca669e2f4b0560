/*
 * fuzz_rpc.c - libFuzzer target for the MessagePack-RPC intake (core/rpc_scan.c and
 * server/rpc.c): the input is a byte stream as a client would send it, scanned
 * message by message with small limits (so that limit paths are hit often), each
 * complete message decoded, parsed as a request, and its params read with every
 * getter. The client's replies go through the same scanner (fuzz_reply.c).
 *
 *   cmake -S . -B build-fuzz -DCMAKE_C_COMPILER=clang -DDISCERN_FUZZ=ON
 *   cmake --build build-fuzz --target fuzz_rpc && build-fuzz/fuzz/fuzz_rpc -max_total_time=60
 */
#include "fuzz_util.h"
#include "rpc.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static void read_params(const msgpack_object *params) {
    char s[32];
    int64_t i = 0;
    double d = 0;
    bool b = false;
    const msgpack_object *m;
    dsc_error err;
    dsc_rpc_get_str(params, "model", false, s, sizeof s, &err);
    dsc_rpc_get_int(params, "output_tokens", false, 0, 1000000, &i, &err);
    dsc_rpc_get_num(params, "latency_s", false, 0, 100, &d, &err);
    dsc_rpc_get_bool(params, "reserve", false, &b, &err);
    if (dsc_rpc_get_map(params, "subject", false, &m, &err) == DSC_OK && m)
        dsc_rpc_get_str(m, "team", false, s, sizeof s, &err);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    dsc_rpc_limits lim = {.max_message_bytes = 4096,
                          .max_depth = 6,
                          .max_items = 64,
                          .max_objects = 256,
                          .max_string_bytes = 512};
    msgpack_zone *zone = msgpack_zone_new(4096);
    if (!zone) return 0;
    size_t off = 0;
    while (off < size) {
        /* Feed the scanner the way a connection does: a growing prefix. */
        dsc_rpc_scanner sc;
        dsc_rpc_scanner_reset(&sc);
        size_t msg = 0, have = 0;
        dsc_rpc_scan_result r = DSC_RPC_NEED_MORE;
        dsc_error err;
        while (r == DSC_RPC_NEED_MORE && have < size - off) {
            have += 1 + (size - off - have) / 3;
            r = dsc_rpc_scan(&sc, &lim, data + off, have, &msg, &err);
        }
        if (r == DSC_RPC_NEED_MORE || r == DSC_RPC_BROKEN) break;
        if (msg == 0 || msg > have) abort(); /* the scanner must never claim bytes it did not see */
        if (r == DSC_RPC_FRAME) {
            msgpack_object obj;
            if (dsc_rpc_decode(data + off, msg, zone, &obj) != DSC_OK) abort();
            dsc_rpc_request req;
            if (dsc_rpc_request_parse(&obj, &req, &err) == DSC_OK && req.params)
                read_params(req.params);
            msgpack_zone_clear(zone);
        }
        off += msg;
    }
    msgpack_zone_free(zone);
    return 0;
}
