/*
 * rpc_scan.h - the bounded, resumable MessagePack scanner shared by discernd (it
 * frames requests) and libdiscern-client (it frames replies). Not installed.
 *
 * The scanner finds where one message ends, checks every declared count and length
 * against the bytes the message limit still allows (so a few bytes declaring a
 * 4-billion-element array are refused before anything is allocated), and checks
 * depth, item, object and string limits, all before msgpack-c sees a byte.
 *
 *   dsc_rpc_scanner sc; dsc_rpc_scanner_reset(&sc);
 *   switch (dsc_rpc_scan(&sc, &lim, buf, len, &size, &err)) {
 *   case DSC_RPC_NEED_MORE:  read more, call again with the longer buffer
 *   case DSC_RPC_FRAME:      buf[0..size) is one message within every limit
 *   case DSC_RPC_SKIP:       complete but over a limit: err says which, drop size bytes
 *   case DSC_RPC_BROKEN:     cannot resynchronise: the stream is lost
 *   }
 *   (reset the scanner after every FRAME or SKIP)
 */
#ifndef DISCERN_RPC_SCAN_H
#define DISCERN_RPC_SCAN_H

#include "discern/status.h"

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

/* Fill lim with the documented defaults (64 KiB, depth 16, 1024 items, 2048 objects,
 * 4096-byte strings). */
void dsc_rpc_limits_default(dsc_rpc_limits *lim);
/* Prepare sc for the next message. */
void dsc_rpc_scanner_reset(dsc_rpc_scanner *sc);
/* Continue scanning the message at buf[0..len) (buf holds the same bytes as before,
 * perhaps more). Never allocates; resumes where the previous call stopped. */
dsc_rpc_scan_result dsc_rpc_scan(dsc_rpc_scanner *sc, const dsc_rpc_limits *lim, const uint8_t *buf,
                                 size_t len, size_t *size, dsc_error *err);

#endif
