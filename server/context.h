/*
 * context.h - the estimate context of a reply (context.c): the keys method, scope,
 * assumptions and warnings of every estimate, check and settle result
 * (docs/protocol.md, "Shared shapes"), and a worker's cache of it packed.
 *
 *   dsc__context_cache cache;  dsc__context_cache_init(&cache);   (embedded)
 *   dsc__context_pack(pk, &cache, &est);     the four keys and their values
 *
 * Included by methods.h and server_internal.h (the worker embeds its cache).
 */
#ifndef DISCERN_SERVER_CONTEXT_H
#define DISCERN_SERVER_CONTEXT_H

#include "discern/estimate.h"

#include <msgpack.h>
#include <stdbool.h>
#include <stdint.h>

/* How many keys dsc__context_pack adds to the enclosing map. */
#define DSC__ESTIMATE_CONTEXT_KEYS 4

/* Contexts a cache keeps, and the most bytes one may pack to and be kept. */
#define DSC__CONTEXT_CACHE_N 8
#define DSC__CONTEXT_BYTES_MAX 1024

/* Everything the context's bytes are made of, strings copied (the catalogue they
 * point into is replaced by a reload): equal keys pack to equal bytes. */
typedef struct dsc__context_key {
    double numbers[10]; /* precision_bits, gco2e_per_kwh, batch, active and total params, pue */
    unsigned warnings;
    int method, scope, carbon, water, modality;
    bool lifecycle; /* lifecycle_source is set */
    char zone[8], accelerator[32], params_source[32], zone_source[16], grid_source[16],
        lifecycle_source[64];
} dsc__context_key;

typedef struct dsc__context_entry {
    dsc__context_key key;
    uint16_t len;
    unsigned char bytes[DSC__CONTEXT_BYTES_MAX];
} dsc__context_entry;

/* One worker's (its thread only): the contexts it packed last. */
typedef struct dsc__context_cache {
    dsc__context_entry entries[DSC__CONTEXT_CACHE_N];
    int n, next;
    uint64_t hits, misses; /* for tests and benchmarks */
} dsc__context_cache;

/* An empty cache. */
void dsc__context_cache_init(dsc__context_cache *cache);
/* Pack the DSC__ESTIMATE_CONTEXT_KEYS keys of est's context and their values into pk
 * (inside a map the caller opened): the bytes a cache entry of the same key holds,
 * else packed and kept. cache may be NULL (packed every time). */
void dsc__context_pack(msgpack_packer *pk, dsc__context_cache *cache, const dsc_estimate *est);

#endif
