/*
 * reservations.c - what each open reservation was for (provider, model, zone,
 * subject), so that `settle` can re-estimate the actual usage from the tokens alone.
 *
 * The ledger keeps the amounts held, not the request; the server remembers the
 * request here, shared by all workers behind one mutex (a settle touches it once).
 * Entries live until their hold expires plus a grace period (so a late or repeated
 * settle still finds them) and are pruned by the server's once-a-second tick. After
 * a restart the table is empty: a settle then needs provider and model in its params.
 */
#include "reservations.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#define BUCKETS 4096 /* power of two */

typedef struct node {
    dsc__resv_info info;
    struct node *next;
} node;

struct dsc__resv_table {
    pthread_mutex_t lock;
    node *buckets[BUCKETS];
    size_t count;
    int64_t grace_s;
};

static size_t hash(const char *s) {
    uint64_t h = 1469598103934665603ULL; /* FNV-1a */
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211ULL;
    return (size_t)(h & (BUCKETS - 1));
}

dsc__resv_table *dsc__resv_table_new(int64_t grace_s) {
    dsc__resv_table *t = calloc(1, sizeof *t);
    if (!t) return NULL;
    pthread_mutex_init(&t->lock, NULL);
    t->grace_s = grace_s;
    return t;
}

void dsc__resv_table_free(dsc__resv_table *t) {
    if (!t) return;
    for (size_t i = 0; i < BUCKETS; i++)
        for (node *n = t->buckets[i], *next; n; n = next) {
            next = n->next;
            free(n);
        }
    pthread_mutex_destroy(&t->lock);
    free(t);
}

static node **find(dsc__resv_table *t, const char *id) {
    node **p = &t->buckets[hash(id)];
    while (*p && strcmp((*p)->info.id, id) != 0)
        p = &(*p)->next;
    return p;
}

dsc_status dsc__resv_put(dsc__resv_table *t, const dsc__resv_info *info) {
    node *n = malloc(sizeof *n);
    if (!n) return DSC_NOMEM;
    n->info = *info;
    pthread_mutex_lock(&t->lock);
    node **p = find(t, info->id);
    if (*p) { /* an idempotent repeat of the same reservation: refresh it */
        (*p)->info = *info;
        free(n);
    } else {
        n->next = t->buckets[hash(info->id)];
        t->buckets[hash(info->id)] = n;
        t->count++;
    }
    pthread_mutex_unlock(&t->lock);
    return DSC_OK;
}

bool dsc__resv_get(dsc__resv_table *t, const char *id, dsc__resv_info *out) {
    pthread_mutex_lock(&t->lock);
    node **p = find(t, id);
    bool found = *p != NULL;
    if (found) *out = (*p)->info;
    pthread_mutex_unlock(&t->lock);
    return found;
}

size_t dsc__resv_prune(dsc__resv_table *t, int64_t now) {
    size_t removed = 0;
    pthread_mutex_lock(&t->lock);
    for (size_t i = 0; i < BUCKETS; i++) {
        for (node **p = &t->buckets[i]; *p;) {
            if ((*p)->info.expires_at + t->grace_s < now) {
                node *dead = *p;
                *p = dead->next;
                free(dead);
                removed++;
            } else {
                p = &(*p)->next;
            }
        }
    }
    t->count -= removed;
    pthread_mutex_unlock(&t->lock);
    return removed;
}

size_t dsc__resv_count(dsc__resv_table *t) {
    pthread_mutex_lock(&t->lock);
    size_t n = t->count;
    pthread_mutex_unlock(&t->lock);
    return n;
}
