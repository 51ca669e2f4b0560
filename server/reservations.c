/*
 * reservations.c - what each open reservation was for (provider, model, zone,
 * subject), so that `settle` can re-estimate the actual usage from the tokens alone.
 *
 * The ledger keeps the amounts held, not the request; the server remembers the
 * request here, shared by all workers behind one mutex (a check and a settle each
 * touch it once). An entry is one allocation holding its strings packed (~100 bytes
 * for typical names), in a chained hash table that doubles as it fills. It lives
 * until its hold expires, or until its settle or cancel, plus a grace period (so a
 * repeated or late settle still finds it); the server's once-a-second tick prunes a
 * slice of the table each time. Finished (settled or cancelled) entries also form a
 * queue, oldest first, of at most max_finished: past that, the oldest is forgotten at
 * once, so memory under sustained load is bounded by the count, not by rate x grace.
 * A settle the server no longer knows needs provider and model in its params, as
 * after a restart, when the table is empty.
 */
#include "reservations.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#define INITIAL_BUCKETS 1024 /* a power of two */
#define PRUNE_SLICES 16      /* each tick scans 1/16 of the buckets */

enum { F_ID, F_PROVIDER, F_MODEL, F_ZONE, F_ORG, F_TEAM, F_USER, F_KEY, F_COUNT };

typedef struct node {
    struct node *next;
    struct node *fprev, *fnext; /* the finished queue, when finished */
    uint64_t hash;
    int64_t expires_at;
    bool finished;
    uint16_t off[F_COUNT]; /* where each NUL-terminated field starts in data */
    char data[];
} node;

struct dsc__resv_table {
    pthread_mutex_t lock;
    node **buckets;
    size_t n_buckets, count, cursor;
    int64_t grace_s;
    node *fhead, *ftail; /* finished entries, oldest first */
    size_t n_finished, max_finished;
};

static uint64_t hash(const char *s) {
    uint64_t h = 1469598103934665603ULL; /* FNV-1a */
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211ULL;
    return h;
}

dsc__resv_table *dsc__resv_table_new(int64_t grace_s, size_t max_finished) {
    dsc__resv_table *t = calloc(1, sizeof *t);
    if (!t) return NULL;
    t->buckets = calloc(INITIAL_BUCKETS, sizeof *t->buckets);
    if (!t->buckets) {
        free(t);
        return NULL;
    }
    t->n_buckets = INITIAL_BUCKETS;
    pthread_mutex_init(&t->lock, NULL);
    t->grace_s = grace_s;
    t->max_finished = max_finished ? max_finished : 1;
    return t;
}

void dsc__resv_table_free(dsc__resv_table *t) {
    if (!t) return;
    for (size_t i = 0; i < t->n_buckets; i++)
        for (node *n = t->buckets[i], *next; n; n = next) {
            next = n->next;
            free(n);
        }
    free(t->buckets);
    pthread_mutex_destroy(&t->lock);
    free(t);
}

static node *pack(const dsc__resv_info *info) {
    const char *f[F_COUNT] = {info->id,  info->provider, info->model, info->zone,
                              info->org, info->team,     info->user,  info->key};
    size_t len[F_COUNT], total = 0;
    for (int i = 0; i < F_COUNT; i++)
        total += (len[i] = strlen(f[i])) + 1;
    node *n = malloc(sizeof *n + total);
    if (!n) return NULL;
    size_t at = 0;
    for (int i = 0; i < F_COUNT; i++) {
        n->off[i] = (uint16_t)at;
        memcpy(n->data + at, f[i], len[i] + 1);
        at += len[i] + 1;
    }
    n->hash = hash(info->id);
    n->expires_at = info->expires_at;
    n->finished = false;
    n->fprev = n->fnext = NULL;
    return n;
}

static void unpack(const node *n, dsc__resv_info *out) {
    struct {
        char *dst;
        size_t cap;
    } f[F_COUNT] = {{out->id, sizeof out->id},       {out->provider, sizeof out->provider},
                    {out->model, sizeof out->model}, {out->zone, sizeof out->zone},
                    {out->org, sizeof out->org},     {out->team, sizeof out->team},
                    {out->user, sizeof out->user},   {out->key, sizeof out->key}};
    for (int i = 0; i < F_COUNT; i++) {
        const char *src = n->data + n->off[i];
        size_t len = strlen(src);
        if (len >= f[i].cap) len = f[i].cap - 1;
        memcpy(f[i].dst, src, len);
        f[i].dst[len] = '\0';
    }
    out->expires_at = n->expires_at;
}

static node **find(dsc__resv_table *t, const char *id, uint64_t h) {
    node **p = &t->buckets[h & (t->n_buckets - 1)];
    while (*p && ((*p)->hash != h || strcmp((*p)->data, id) != 0))
        p = &(*p)->next;
    return p;
}

/* Take n off the finished queue if it is on it. */
static void unqueue(dsc__resv_table *t, node *n) {
    if (!n->finished) return;
    *(n->fprev ? &n->fprev->fnext : &t->fhead) = n->fnext;
    *(n->fnext ? &n->fnext->fprev : &t->ftail) = n->fprev;
    n->finished = false;
    t->n_finished--;
}

/* Unlink the entry *p points to from its chain (and the queue) and free it. */
static void drop(dsc__resv_table *t, node **p) {
    node *dead = *p;
    *p = dead->next;
    unqueue(t, dead);
    free(dead);
    t->count--;
}

/* Double the buckets when chains would grow past two on average. */
static void grow(dsc__resv_table *t) {
    if (t->count < 2 * t->n_buckets) return;
    size_t n = t->n_buckets * 2;
    node **b = calloc(n, sizeof *b);
    if (!b) return; /* keep the longer chains */
    for (size_t i = 0; i < t->n_buckets; i++)
        for (node *e = t->buckets[i], *next; e; e = next) {
            next = e->next;
            e->next = b[e->hash & (n - 1)];
            b[e->hash & (n - 1)] = e;
        }
    free(t->buckets);
    t->buckets = b;
    t->n_buckets = n;
    t->cursor = 0;
}

dsc_status dsc__resv_put(dsc__resv_table *t, const dsc__resv_info *info) {
    node *n = pack(info);
    if (!n) return DSC_NOMEM;
    pthread_mutex_lock(&t->lock);
    node **p = find(t, info->id, n->hash);
    if (*p) { /* an idempotent repeat of the same reservation: refresh it */
        n->next = (*p)->next;
        unqueue(t, *p);
        free(*p);
        *p = n;
    } else {
        n->next = t->buckets[n->hash & (t->n_buckets - 1)];
        t->buckets[n->hash & (t->n_buckets - 1)] = n;
        t->count++;
        grow(t);
    }
    pthread_mutex_unlock(&t->lock);
    return DSC_OK;
}

bool dsc__resv_get(dsc__resv_table *t, const char *id, dsc__resv_info *out) {
    uint64_t h = hash(id);
    pthread_mutex_lock(&t->lock);
    node **p = find(t, id, h);
    bool found = *p != NULL;
    if (found) unpack(*p, out);
    pthread_mutex_unlock(&t->lock);
    return found;
}

void dsc__resv_finish(dsc__resv_table *t, const char *id, int64_t now) {
    uint64_t h = hash(id);
    pthread_mutex_lock(&t->lock);
    node *n = *find(t, id, h);
    if (n && !n->finished) {
        if (n->expires_at > now) n->expires_at = now;
        n->finished = true;
        n->fnext = NULL;
        n->fprev = t->ftail;
        *(t->ftail ? &t->ftail->fnext : &t->fhead) = n;
        t->ftail = n;
        if (++t->n_finished > t->max_finished) {
            node *old = t->fhead;
            drop(t, find(t, old->data, old->hash));
        }
    }
    pthread_mutex_unlock(&t->lock);
}

size_t dsc__resv_prune(dsc__resv_table *t, int64_t now) {
    size_t removed = 0;
    pthread_mutex_lock(&t->lock);
    size_t slice = t->n_buckets / PRUNE_SLICES ? t->n_buckets / PRUNE_SLICES : 1;
    for (size_t k = 0; k < slice; k++, t->cursor = (t->cursor + 1) & (t->n_buckets - 1)) {
        for (node **p = &t->buckets[t->cursor]; *p;) {
            if ((*p)->expires_at + t->grace_s < now) {
                drop(t, p);
                removed++;
            } else {
                p = &(*p)->next;
            }
        }
    }
    pthread_mutex_unlock(&t->lock);
    return removed;
}

size_t dsc__resv_count(dsc__resv_table *t) {
    pthread_mutex_lock(&t->lock);
    size_t n = t->count;
    pthread_mutex_unlock(&t->lock);
    return n;
}
