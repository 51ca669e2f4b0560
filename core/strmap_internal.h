/*
 * strmap_internal.h - a string-keyed hash map for the ledger's indexes (not public).
 *
 * Open addressing with linear probing and tombstones. The map does not copy keys:
 * each key must stay valid and unchanged while its entry exists (the ledger keys
 * entries by strings stored inside the values themselves).
 *
 *   dsc__strmap m; dsc__strmap_init(&m);
 *   dsc__strmap_put(&m, budget->name, budget);   DSC_NOMEM when it cannot grow
 *   void *v = dsc__strmap_get(&m, "org:acme");   NULL when absent
 *   dsc__strmap_del(&m, "org:acme");
 *   dsc__strmap_destroy(&m);
 */
#ifndef DISCERN_STRMAP_INTERNAL_H
#define DISCERN_STRMAP_INTERNAL_H

#include "discern/status.h"

#include <stddef.h>
#include <stdint.h>

typedef struct dsc__strmap_entry {
    const char *key; /* NULL = empty; the map's tombstone marker = deleted */
    uint64_t hash;
    void *val;
} dsc__strmap_entry;

typedef struct dsc__strmap {
    dsc__strmap_entry *slots;
    size_t cap, len, used; /* used = live + tombstones */
} dsc__strmap;

/* A 64-bit hash of s. */
uint64_t dsc__strmap_hash(const char *s);
/* An empty map (allocates on first put). */
void dsc__strmap_init(dsc__strmap *m);
/* Free the slots (not the keys or values). */
void dsc__strmap_destroy(dsc__strmap *m);
/* The value stored under key, or NULL. */
void *dsc__strmap_get(const dsc__strmap *m, const char *key);
/* Store val under key (replacing an existing value); DSC_NOMEM when it cannot grow. */
dsc_status dsc__strmap_put(dsc__strmap *m, const char *key, void *val);
/* Remove key; returns its value or NULL. */
void *dsc__strmap_del(dsc__strmap *m, const char *key);
/* Remove key only when it maps to val (NULL: whatever it maps to); returns the value
 * removed or NULL. */
void *dsc__strmap_del_if(dsc__strmap *m, const char *key, const void *val);
/* Visit every value (order unspecified); fn must not change the map. */
void dsc__strmap_each(const dsc__strmap *m, void (*fn)(void *val, void *ud), void *ud);

#endif
