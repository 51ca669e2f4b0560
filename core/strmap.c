/*
 * strmap.c - the ledger's string-keyed hash map (see strmap_internal.h).
 *
 * Linear probing over a power-of-two table, kept at most 70% full counting
 * tombstones; growing rehashes live entries only, which also drops tombstones.
 */
#include "strmap_internal.h"

#include <stdlib.h>
#include <string.h>

static const char tombstone_key[1];
#define TOMB (tombstone_key)

uint64_t dsc__strmap_hash(const char *s) {
    /* Eight bytes per multiply (byte-at-a-time FNV was a sixth of a reserve's time),
     * finished like murmur3's fmix64 so that the low bits used as index are mixed. */
    size_t n = strlen(s);
    uint64_t h = 0x9e3779b97f4a7c15ULL ^ n, w;
    for (; n >= 8; s += 8, n -= 8) {
        memcpy(&w, s, 8);
        h = (h ^ w) * 0xff51afd7ed558ccdULL;
        h ^= h >> 32;
    }
    w = 0;
    memcpy(&w, s, n);
    h = (h ^ w) * 0xc4ceb9fe1a85ec53ULL;
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdULL;
    return h ^ (h >> 33);
}

void dsc__strmap_init(dsc__strmap *m) {
    memset(m, 0, sizeof *m);
}

void dsc__strmap_destroy(dsc__strmap *m) {
    free(m->slots);
    memset(m, 0, sizeof *m);
}

static dsc__strmap_entry *find(const dsc__strmap *m, const char *key, uint64_t h) {
    if (!m->cap) return NULL;
    for (size_t i = h & (m->cap - 1);; i = (i + 1) & (m->cap - 1)) {
        dsc__strmap_entry *e = &m->slots[i];
        if (!e->key) return NULL;
        if (e->key != TOMB && e->hash == h && strcmp(e->key, key) == 0) return e;
    }
}

void *dsc__strmap_get(const dsc__strmap *m, const char *key) {
    dsc__strmap_entry *e = find(m, key, dsc__strmap_hash(key));
    return e ? e->val : NULL;
}

static void insert_fresh(dsc__strmap_entry *slots, size_t cap, const dsc__strmap_entry *src) {
    size_t i = src->hash & (cap - 1);
    while (slots[i].key)
        i = (i + 1) & (cap - 1);
    slots[i] = *src;
}

static dsc_status grow(dsc__strmap *m) {
    size_t cap = m->cap ? m->cap : 16;
    while ((m->len + 1) * 10 >= cap * 5)
        cap *= 2; /* rehash to at most 50% full */
    dsc__strmap_entry *slots = calloc(cap, sizeof *slots);
    if (!slots) return DSC_NOMEM;
    for (size_t i = 0; i < m->cap; i++)
        if (m->slots[i].key && m->slots[i].key != TOMB) insert_fresh(slots, cap, &m->slots[i]);
    free(m->slots);
    m->slots = slots;
    m->cap = cap;
    m->used = m->len;
    return DSC_OK;
}

dsc_status dsc__strmap_put(dsc__strmap *m, const char *key, void *val) {
    uint64_t h = dsc__strmap_hash(key);
    dsc__strmap_entry *e = find(m, key, h);
    if (e) {
        e->key = key;
        e->val = val;
        return DSC_OK;
    }
    if ((m->used + 1) * 10 > m->cap * 7 && grow(m) != DSC_OK) return DSC_NOMEM;
    size_t i = h & (m->cap - 1);
    while (m->slots[i].key && m->slots[i].key != TOMB)
        i = (i + 1) & (m->cap - 1);
    if (!m->slots[i].key) m->used++;
    m->slots[i] = (dsc__strmap_entry){key, h, val};
    m->len++;
    return DSC_OK;
}

void *dsc__strmap_del(dsc__strmap *m, const char *key) {
    return dsc__strmap_del_if(m, key, NULL);
}

void *dsc__strmap_del_if(dsc__strmap *m, const char *key, const void *only) {
    dsc__strmap_entry *e = find(m, key, dsc__strmap_hash(key));
    if (!e || (only && e->val != only)) return NULL;
    void *val = e->val;
    e->key = TOMB;
    e->val = NULL;
    m->len--;
    return val;
}

void dsc__strmap_each(const dsc__strmap *m, void (*fn)(void *val, void *ud), void *ud) {
    for (size_t i = 0; i < m->cap; i++)
        if (m->slots[i].key && m->slots[i].key != TOMB) fn(m->slots[i].val, ud);
}
