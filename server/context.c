/*
 * context.c - the estimate context of a reply and a worker's cache of its packed
 * bytes (see context.h).
 *
 * Why a cache: the context is about 40 strings, ranges and numbers, packed for every
 * estimate, check and settle (the client asks for it unless it sends `context:
 * false`); packing it cost about 3 800 instructions, twice per decision, while a
 * workload asks about a handful of provider, model and zone combinations, whose
 * contexts repeat byte for byte. The key is every field pack_context reads, copied
 * (numbers compared bit for bit: -0.0 and 0.0 pack differently), so equal keys give
 * equal bytes; comparing one costs a few hundred instructions. A context whose
 * strings do not fit the key is packed every time (so is one whose bytes would not
 * fit an entry, which no context of key-sized strings reaches: about 700 bytes at
 * most). Measured in docs/benchmarks.md, "The rest of the request: the worker".
 */
#include "context.h"
#include "rpc.h"

#include <string.h>

/* --------------------------------------------------------------- packing -- */

static void pack_str_or_nil(msgpack_packer *pk, const char *s) {
    if (s)
        dsc_rpc_pack_cstr(pk, s);
    else
        msgpack_pack_nil(pk);
}

/* The n names as an array of strings. */
static void pack_names(msgpack_packer *pk, const char *const *names, int n) {
    msgpack_pack_array(pk, (size_t)n);
    for (int i = 0; i < n; i++)
        dsc_rpc_pack_cstr(pk, names[i]);
}

static void pack_scope(msgpack_packer *pk, const dsc_estimate *est) {
    const char *names[8];
    int n = dsc_estimate_includes(est, names, 8);
    msgpack_pack_map(pk, 4);
    dsc_rpc_pack_cstr(pk, "boundary");
    dsc_rpc_pack_cstr(pk, dsc_scope_name(est->scope));
    dsc_rpc_pack_cstr(pk, "carbon");
    dsc_rpc_pack_cstr(pk, dsc_carbon_name(est->carbon));
    dsc_rpc_pack_cstr(pk, "water");
    dsc_rpc_pack_cstr(pk, dsc_water_name(est->water));
    dsc_rpc_pack_cstr(pk, "includes");
    pack_names(pk, names, n);
}

static void pack_assumptions(msgpack_packer *pk, const dsc_estimate *est) {
    const dsc_estimate_assumptions *a = &est->assumptions;
    msgpack_pack_map(pk, 13);
    dsc_rpc_pack_cstr(pk, "modality");
    dsc_rpc_pack_cstr(pk, dsc_modality_name(a->modality));
    dsc_rpc_pack_cstr(pk, "accelerator");
    dsc_rpc_pack_cstr(pk, a->accelerator);
    dsc_rpc_pack_key_double(pk, "precision_bits", a->precision_bits);
    dsc_rpc_pack_cstr(pk, "batch");
    dsc_rpc_pack_range(pk, a->batch.min, a->batch.max);
    dsc_rpc_pack_cstr(pk, "active_params_b");
    dsc_rpc_pack_range(pk, a->active_params_b.min, a->active_params_b.max);
    dsc_rpc_pack_cstr(pk, "total_params_b");
    dsc_rpc_pack_range(pk, a->total_params_b.min, a->total_params_b.max);
    dsc_rpc_pack_cstr(pk, "params_source");
    dsc_rpc_pack_cstr(pk, a->params_source);
    dsc_rpc_pack_cstr(pk, "zone");
    dsc_rpc_pack_cstr(pk, est->zone);
    dsc_rpc_pack_cstr(pk, "zone_source");
    dsc_rpc_pack_cstr(pk, a->zone_source);
    dsc_rpc_pack_cstr(pk, "grid_source");
    dsc_rpc_pack_cstr(pk, a->grid_source);
    dsc_rpc_pack_key_double(pk, "gco2e_per_kwh", a->gco2e_per_kwh);
    dsc_rpc_pack_cstr(pk, "pue");
    dsc_rpc_pack_range(pk, a->pue.min, a->pue.max);
    dsc_rpc_pack_cstr(pk, "lifecycle_source");
    pack_str_or_nil(pk, a->lifecycle_source);
}

/* Reads only what make_key copies: keep the two in step. */
static void pack_context(msgpack_packer *pk, const dsc_estimate *est) {
    const char *warnings[8];
    int nw = dsc_estimate_warning_names(est->warnings, warnings, 8);
    dsc_rpc_pack_cstr(pk, "method");
    dsc_rpc_pack_cstr(pk, dsc_method_name(est->method));
    dsc_rpc_pack_cstr(pk, "scope");
    pack_scope(pk, est);
    dsc_rpc_pack_cstr(pk, "assumptions");
    pack_assumptions(pk, est);
    dsc_rpc_pack_cstr(pk, "warnings");
    pack_names(pk, warnings, nw);
}

/* ----------------------------------------------------------------- cache -- */

/* Copy s (NULL as "") into dst of cap bytes; false when it does not fit. */
static bool key_str(char *dst, size_t cap, const char *s) {
    size_t n = s ? strnlen(s, cap) : 0;
    if (n == cap) return false;
    if (n) memcpy(dst, s, n);
    return true; /* the rest of dst is zero (make_key cleared the key) */
}

static bool make_key(dsc__context_key *k, const dsc_estimate *est) {
    const dsc_estimate_assumptions *a = &est->assumptions;
    memset(k, 0, sizeof *k);
    const double numbers[10] = {a->precision_bits,
                                a->gco2e_per_kwh,
                                a->batch.min,
                                a->batch.max,
                                a->active_params_b.min,
                                a->active_params_b.max,
                                a->total_params_b.min,
                                a->total_params_b.max,
                                a->pue.min,
                                a->pue.max};
    memcpy(k->numbers, numbers, sizeof numbers);
    k->warnings = est->warnings;
    k->method = (int)est->method;
    k->scope = (int)est->scope;
    k->carbon = (int)est->carbon;
    k->water = (int)est->water;
    k->modality = (int)a->modality;
    k->lifecycle = a->lifecycle_source != NULL;
    return key_str(k->zone, sizeof k->zone, est->zone) &&
           key_str(k->accelerator, sizeof k->accelerator, a->accelerator) &&
           key_str(k->params_source, sizeof k->params_source, a->params_source) &&
           key_str(k->zone_source, sizeof k->zone_source, a->zone_source) &&
           key_str(k->grid_source, sizeof k->grid_source, a->grid_source) &&
           key_str(k->lifecycle_source, sizeof k->lifecycle_source, a->lifecycle_source);
}

/* A packer's callback into an entry's bytes; a context too large fails it. */
typedef struct fixed_out {
    unsigned char *b;
    size_t n, cap;
    bool over;
} fixed_out;

static int fixed_write(void *data, const char *buf, size_t len) {
    fixed_out *f = data;
    if (f->over || len > f->cap - f->n) {
        f->over = true;
        return -1;
    }
    memcpy(f->b + f->n, buf, len);
    f->n += len;
    return 0;
}

void dsc__context_cache_init(dsc__context_cache *cache) {
    cache->n = cache->next = 0;
    cache->hits = cache->misses = 0;
}

static const dsc__context_entry *find(const dsc__context_cache *cache, const dsc__context_key *k) {
    for (int i = 0; i < cache->n; i++)
        if (memcmp(&cache->entries[i].key, k, sizeof *k) == 0) return &cache->entries[i];
    return NULL;
}

/* Pack est into the next entry (the oldest gives way); NULL when its bytes do not fit
 * an entry (then no entry changes). */
static const dsc__context_entry *add(dsc__context_cache *cache, const dsc__context_key *k,
                                     const dsc_estimate *est) {
    unsigned char bytes[DSC__CONTEXT_BYTES_MAX];
    fixed_out f = {bytes, 0, sizeof bytes, false};
    msgpack_packer pk;
    msgpack_packer_init(&pk, &f, fixed_write);
    pack_context(&pk, est);
    if (f.over) return NULL;
    dsc__context_entry *e = &cache->entries[cache->next];
    e->key = *k;
    e->len = (uint16_t)f.n;
    memcpy(e->bytes, bytes, f.n);
    cache->next = (cache->next + 1) % DSC__CONTEXT_CACHE_N;
    if (cache->n < DSC__CONTEXT_CACHE_N) cache->n++;
    return e;
}

void dsc__context_pack(msgpack_packer *pk, dsc__context_cache *cache, const dsc_estimate *est) {
    dsc__context_key k;
    if (!cache || !make_key(&k, est)) {
        pack_context(pk, est);
        return;
    }
    const dsc__context_entry *e = find(cache, &k);
    if (e)
        cache->hits++;
    else
        cache->misses++, e = add(cache, &k, est);
    if (e)
        pk->callback(pk->data, (const char *)e->bytes, e->len);
    else
        pack_context(pk, est);
}
