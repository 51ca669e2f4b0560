/*
 * rpc_scan.c - the bounded MessagePack scanner that both discernd (requests) and
 * libdiscern-client (replies) put in front of msgpack-c (see discern/rpc_scan.h).
 *
 * The scanner reads MessagePack headers only. Each header says how many bytes
 * follow (str/bin/ext/numbers) or how many items (arrays, maps); since every item
 * takes at least one byte, a message that declares more pending items than the
 * bytes its limit still allows can never be valid and is refused at once. This is
 * what keeps memory bounded: msgpack-c sizes its arrays from declared counts, and it
 * only ever sees messages whose counts the scanner has checked.
 */
#include "discern/rpc_scan.h"

#include <string.h>

void dsc_rpc_limits_default(dsc_rpc_limits *lim) {
    lim->max_message_bytes = 64 * 1024;
    lim->max_depth = 16;
    lim->max_items = 1024;
    lim->max_objects = 2048;
    lim->max_string_bytes = 4096;
}

void dsc_rpc_scanner_reset(dsc_rpc_scanner *sc) {
    sc->pos = 0;
    sc->pending = 1;
    sc->objects = 0;
    sc->depth = 0;
    sc->skipping = false;
    dsc_error_clear(&sc->violation);
}

/* One MessagePack header: its own length, payload bytes after it, and the number of
 * items it opens (array elements, or keys + values of a map). */
typedef struct header {
    size_t head;
    uint64_t payload;
    uint64_t items; /* what the scan must still read: count, or 2 * count for a map */
    uint64_t count; /* declared elements or pairs */
    bool container;
    bool text; /* str, bin or ext: payload is checked against max_string_bytes */
} header;

static uint64_t be(const uint8_t *p, int n) {
    uint64_t v = 0;
    for (int i = 0; i < n; i++)
        v = (v << 8) | p[i];
    return v;
}

/* Sizes of a header with an n-byte big-endian length at p[1]; extra = type byte. */
static int sized(const uint8_t *p, size_t avail, int n, int extra, header *h) {
    if (avail < (size_t)(1 + n + extra)) return 0;
    h->head = (size_t)(1 + n + extra);
    h->payload = be(p + 1, n);
    h->text = true;
    return 1;
}

static int counted(const uint8_t *p, size_t avail, int n, int per, header *h) {
    if (avail < (size_t)(1 + n)) return 0;
    h->head = (size_t)(1 + n);
    h->count = be(p + 1, n);
    h->items = h->count * (uint64_t)per;
    h->container = true;
    return 1;
}

static int fixed(size_t avail, size_t head, uint64_t payload, header *h) {
    if (avail < head) return 0;
    h->head = head;
    h->payload = payload;
    return 1;
}

/* Parse the header at p: 1 parsed, 0 need more bytes, -1 not MessagePack (0xc1). */
static int parse_header(const uint8_t *p, size_t avail, header *h) {
    memset(h, 0, sizeof *h);
    if (avail == 0) return 0;
    uint8_t b = p[0];
    if (b <= 0x7f || b >= 0xe0 || b == 0xc0 || b == 0xc2 || b == 0xc3) return fixed(avail, 1, 0, h);
    if (b >= 0x80 && b <= 0x8f)
        return h->head = 1, h->count = b & 0x0f, h->items = 2u * h->count, h->container = true, 1;
    if (b >= 0x90 && b <= 0x9f)
        return h->head = 1, h->count = h->items = b & 0x0f, h->container = true, 1;
    if (b >= 0xa0 && b <= 0xbf) return h->head = 1, h->payload = b & 0x1f, h->text = true, 1;
    switch (b) {
    case 0xc4:
        return sized(p, avail, 1, 0, h);
    case 0xc5:
        return sized(p, avail, 2, 0, h);
    case 0xc6:
        return sized(p, avail, 4, 0, h);
    case 0xc7:
        return sized(p, avail, 1, 1, h);
    case 0xc8:
        return sized(p, avail, 2, 1, h);
    case 0xc9:
        return sized(p, avail, 4, 1, h);
    case 0xca:
        return fixed(avail, 1, 4, h);
    case 0xcb:
        return fixed(avail, 1, 8, h);
    case 0xcc:
    case 0xd0:
        return fixed(avail, 1, 1, h);
    case 0xcd:
    case 0xd1:
        return fixed(avail, 1, 2, h);
    case 0xce:
    case 0xd2:
        return fixed(avail, 1, 4, h);
    case 0xcf:
    case 0xd3:
        return fixed(avail, 1, 8, h);
    case 0xd4:
        return fixed(avail, 2, 1, h);
    case 0xd5:
        return fixed(avail, 2, 2, h);
    case 0xd6:
        return fixed(avail, 2, 4, h);
    case 0xd7:
        return fixed(avail, 2, 8, h);
    case 0xd8:
        return fixed(avail, 2, 16, h);
    case 0xd9:
        return sized(p, avail, 1, 0, h);
    case 0xda:
        return sized(p, avail, 2, 0, h);
    case 0xdb:
        return sized(p, avail, 4, 0, h);
    case 0xdc:
        return counted(p, avail, 2, 1, h);
    case 0xdd:
        return counted(p, avail, 4, 1, h);
    case 0xde:
        return counted(p, avail, 2, 2, h);
    case 0xdf:
        return counted(p, avail, 4, 2, h);
    default:
        return -1; /* 0xc1: never used */
    }
}

/* Record the first limit crossed; from then on the scan only looks for the end. */
static void violate(dsc_rpc_scanner *sc, const char *what, uint64_t got, uint64_t max) {
    if (sc->skipping) return;
    sc->skipping = true;
    dsc_error_set(&sc->violation, DSC_TOO_LARGE,
                  "message too large: %s %llu exceeds the limit %llu", what,
                  (unsigned long long)got, (unsigned long long)max);
}

/* Track nesting for one consumed item (only while no limit has been crossed). */
static void track_depth(dsc_rpc_scanner *sc, const dsc_rpc_limits *lim, const header *h) {
    uint32_t max_depth = lim->max_depth < DSC_RPC_DEPTH_CAP ? lim->max_depth : DSC_RPC_DEPTH_CAP;
    if (sc->depth > 0) sc->left[sc->depth]--;
    if (h->container) {
        uint64_t count = h->items;
        if (sc->depth + 1 > max_depth) {
            violate(sc, "nesting depth", sc->depth + 1, max_depth);
            return;
        }
        if (count > 0) sc->left[++sc->depth] = (uint32_t)count;
    }
    while (sc->depth > 0 && sc->left[sc->depth] == 0)
        sc->depth--;
}

static void check_item(dsc_rpc_scanner *sc, const dsc_rpc_limits *lim, const header *h) {
    if (++sc->objects > lim->max_objects)
        violate(sc, "object count", sc->objects, lim->max_objects);
    if (h->text && h->payload > lim->max_string_bytes)
        violate(sc, "string length", h->payload, lim->max_string_bytes);
    if (h->container && h->count > lim->max_items)
        violate(sc, "container size", h->count, lim->max_items);
    if (!sc->skipping) track_depth(sc, lim, h);
}

static dsc_rpc_scan_result broken(dsc_error *err, dsc_status st, const char *msg, size_t at) {
    dsc_error_set(err, st, "%s (at byte %zu); closing the connection", msg, at);
    return DSC_RPC_BROKEN;
}

dsc_rpc_scan_result dsc_rpc_scan(dsc_rpc_scanner *sc, const dsc_rpc_limits *lim, const uint8_t *buf,
                                 size_t len, size_t *size, dsc_error *err) {
    size_t max = lim->max_message_bytes;
    while (sc->pending > 0) {
        header h;
        size_t avail = len - sc->pos;
        int r = parse_header(buf + sc->pos, avail, &h);
        if (r < 0)
            return broken(err, DSC_BAD_REQUEST, "not MessagePack: reserved byte 0xc1", sc->pos);
        if (r == 0) return DSC_RPC_NEED_MORE;
        uint64_t end = (uint64_t)sc->pos + h.head + h.payload;
        if (end > max)
            return broken(err, DSC_TOO_LARGE, "message exceeds max_message_bytes", sc->pos);
        /* Every pending item needs at least one more byte within the limit. */
        if (sc->pending - 1 + h.items > max - end)
            return broken(err, DSC_TOO_LARGE, "declared counts exceed max_message_bytes", sc->pos);
        if (end > len) return DSC_RPC_NEED_MORE;
        check_item(sc, lim, &h);
        sc->pending = sc->pending - 1 + h.items;
        sc->pos = (size_t)end;
    }
    *size = sc->pos;
    if (!sc->skipping) return DSC_RPC_FRAME;
    if (err) *err = sc->violation;
    return DSC_RPC_SKIP;
}
