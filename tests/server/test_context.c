/*
 * test_context.c - the estimate context of a reply (server/context.c): what a worker's
 * cache hands out is byte for byte what packing the estimate gives, whichever
 * contexts came before, and a context the cache cannot keep is still packed whole.
 */
#include "context.h"

#include "discern/catalog.h"

#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>

#define SHIPPED DISCERN_SOURCE_DIR "/core/data"

static dsc_catalog *cat;

static void load(void) {
    dsc_error err;
    cat = dsc_catalog_load(SHIPPED, &err);
    cr_assert_not_null(cat, "catalogue failed to load: %s", err.message);
}

static void unload(void) {
    dsc_catalog_free(cat);
    cat = NULL;
}

TestSuite(context, .init = load, .fini = unload);

/* The context's bytes through cache (NULL: packed directly). */
static void packed(dsc__context_cache *cache, const dsc_estimate *est, msgpack_sbuffer *sb) {
    msgpack_sbuffer_init(sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, sb, msgpack_sbuffer_write);
    dsc__context_pack(&pk, cache, est);
}

static void same_as_direct(dsc__context_cache *cache, const dsc_estimate *est, const char *what) {
    msgpack_sbuffer got, want;
    packed(cache, est, &got);
    packed(NULL, est, &want);
    cr_assert_eq(got.size, want.size, "%s: %zu bytes, packed directly %zu", what, got.size,
                 want.size);
    cr_assert_eq(memcmp(got.data, want.data, want.size), 0, "%s: bytes differ", what);
    /* the bytes are the four keys of an enclosing map, and nothing else */
    msgpack_zone zone;
    msgpack_zone_init(&zone, 4096);
    size_t off = 0;
    msgpack_object key;
    for (int i = 0; i < 2 * DSC__ESTIMATE_CONTEXT_KEYS; i++) {
        msgpack_unpack_return r = msgpack_unpack(got.data, got.size, &off, &zone, &key);
        cr_assert(r == MSGPACK_UNPACK_SUCCESS || r == MSGPACK_UNPACK_EXTRA_BYTES, "%s: item %d",
                  what, i);
    }
    cr_assert_eq(off, got.size, "%s", what);
    msgpack_zone_destroy(&zone);
    msgpack_sbuffer_destroy(&got);
    msgpack_sbuffer_destroy(&want);
}

Test(context, the_cache_gives_the_bytes_of_packing_each_estimate_as_contexts_alternate) {
    static const char *const models[][2] = {
        {"openai", "gpt-4o"},
        {"openai", "gpt-4o-mini"},
        {"anthropic", "claude-3-haiku-20240307"},
        {"mistralai", "mistral-large-latest"},
    };
    static const char *const zones[] = {NULL, "FRA", "USA"};
    dsc__context_cache cache;
    dsc__context_cache_init(&cache);
    int distinct = 0;
    for (int round = 0; round < 3; round++)
        for (size_t m = 0; m < sizeof models / sizeof models[0]; m++)
            for (size_t z = 0; z < sizeof zones / sizeof zones[0]; z++)
                for (int method = 0; method < 2; method++)
                    for (int scope = 0; scope < 2; scope++) {
                        dsc_estimate_input in = {.provider = models[m][0],
                                                 .model = models[m][1],
                                                 .input_tokens = 100,
                                                 .output_tokens = 800,
                                                 .zone = zones[z],
                                                 .method = (dsc_method)method,
                                                 .scope = (dsc_scope)scope};
                        dsc_estimate est;
                        dsc_error err;
                        cr_assert_eq(dsc_estimate_compute(cat, &in, &est, &err), DSC_OK, "%s",
                                     err.message);
                        char what[128];
                        snprintf(what, sizeof what, "%s/%s zone %s method %d scope %d round %d",
                                 models[m][0], models[m][1], zones[z] ? zones[z] : "-", method,
                                 scope, round);
                        same_as_direct(&cache, &est, what);
                        distinct += round == 0;
                    }
    /* 48 contexts in turn through 8 entries: the cache replaced entries all along */
    cr_assert_gt(distinct, DSC__CONTEXT_CACHE_N);
    cr_assert_gt(cache.misses, (uint64_t)DSC__CONTEXT_CACHE_N);
    /* one context asked for again and again is packed once */
    dsc_estimate_input in = {.provider = "openai", .model = "gpt-4o", .output_tokens = 10};
    dsc_estimate est;
    dsc_error err;
    cr_assert_eq(dsc_estimate_compute(cat, &in, &est, &err), DSC_OK);
    uint64_t misses = cache.misses;
    for (int i = 0; i < 10; i++)
        same_as_direct(&cache, &est, "repeated");
    cr_assert_eq(cache.misses, misses + 1);
    cr_assert_eq(cache.hits >= 9, true);
}

Test(context, a_number_that_differs_only_in_its_sign_bit_is_another_context) {
    dsc__context_cache cache;
    dsc__context_cache_init(&cache);
    dsc_estimate_input in = {.provider = "openai", .model = "gpt-4o", .output_tokens = 10};
    dsc_estimate est;
    dsc_error err;
    cr_assert_eq(dsc_estimate_compute(cat, &in, &est, &err), DSC_OK);
    est.assumptions.gco2e_per_kwh = 0.0;
    same_as_direct(&cache, &est, "0.0");
    est.assumptions.gco2e_per_kwh = -0.0;
    same_as_direct(&cache, &est, "-0.0");
    est.assumptions.gco2e_per_kwh = 0.0;
    same_as_direct(&cache, &est, "0.0 again");
}

Test(context, strings_the_cache_cannot_keep_are_packed_whole_every_time) {
    dsc__context_cache cache;
    dsc__context_cache_init(&cache);
    dsc_estimate_input in = {.provider = "openai", .model = "gpt-4o", .output_tokens = 10};
    dsc_estimate est;
    dsc_error err;
    cr_assert_eq(dsc_estimate_compute(cat, &in, &est, &err), DSC_OK);
    char accelerator[200];
    memset(accelerator, 'A', sizeof accelerator - 1);
    accelerator[sizeof accelerator - 1] = '\0';
    est.assumptions.accelerator = accelerator; /* longer than the key keeps */
    same_as_direct(&cache, &est, "long accelerator");
    accelerator[40] = '\0';
    same_as_direct(&cache, &est, "shorter, still too long for the key");
    cr_assert_eq(cache.n, 0, "nothing was kept");
    /* the largest context whose strings fit the key (every warning, a lifecycle
     * source of 63 bytes) fits an entry, and is kept */
    char source[64];
    memset(source, 's', sizeof source - 1);
    source[sizeof source - 1] = '\0';
    est.assumptions.accelerator = "H100";
    est.assumptions.lifecycle_source = source;
    est.warnings = ~0u;
    msgpack_sbuffer sb;
    packed(NULL, &est, &sb);
    cr_assert_leq(sb.size, DSC__CONTEXT_BYTES_MAX, "%zu bytes", sb.size);
    msgpack_sbuffer_destroy(&sb);
    same_as_direct(&cache, &est, "every warning");
    same_as_direct(&cache, &est, "every warning again");
    cr_assert_eq(cache.n, 1);
    cr_assert_eq(cache.hits, 1);
}
