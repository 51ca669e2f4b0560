/*
 * dlist_internal.h - an intrusive doubly-linked list kept in the order elements were
 * appended: each element embeds a dsc__dlink, its owner a dsc__dlist (head = the
 * oldest). Unlinking is O(1) from the element alone, which is what the ledger's
 * finished reservations, the auth limiter's addresses and the Redis store's calls in
 * flight need (each drops its oldest, or any one it holds). No allocation, no locks:
 * the owner's lock, if any, covers its list.
 *
 *   dsc__dlist_append(&owner->list, &e->link);
 *   e = DSC__DLIST_ENTRY(owner->list.head, elem, link);   NULL-safe: NULL stays NULL
 *   dsc__dlist_unlink(&owner->list, &e->link);
 */
#ifndef DISCERN_DLIST_INTERNAL_H
#define DISCERN_DLIST_INTERNAL_H

#include <stddef.h>

typedef struct dsc__dlink {
    struct dsc__dlink *prev, *next; /* NULL at the ends */
} dsc__dlink;

typedef struct dsc__dlist {
    dsc__dlink *head, *tail; /* oldest, newest; both NULL when empty */
} dsc__dlist;

/* The element of type holding link n as its member (NULL when n is NULL). */
#define DSC__DLIST_ENTRY(n, type, member) ((type *)dsc__dlist_base((n), offsetof(type, member)))

static inline void *dsc__dlist_base(dsc__dlink *n, size_t offset) {
    return n ? (char *)n - offset : NULL;
}

/* Append n (not in any list) as the newest. */
static inline void dsc__dlist_append(dsc__dlist *l, dsc__dlink *n) {
    n->prev = l->tail;
    n->next = NULL;
    if (l->tail)
        l->tail->next = n;
    else
        l->head = n;
    l->tail = n;
}

/* Insert n (not in any list) right after at, which is in l; at NULL: as the head. */
static inline void dsc__dlist_insert_after(dsc__dlist *l, dsc__dlink *at, dsc__dlink *n) {
    n->prev = at;
    n->next = at ? at->next : l->head;
    if (n->next)
        n->next->prev = n;
    else
        l->tail = n;
    if (at)
        at->next = n;
    else
        l->head = n;
}

/* Take n (in l) out of l; n's links are cleared. */
static inline void dsc__dlist_unlink(dsc__dlist *l, dsc__dlink *n) {
    if (n->prev)
        n->prev->next = n->next;
    else
        l->head = n->next;
    if (n->next)
        n->next->prev = n->prev;
    else
        l->tail = n->prev;
    n->prev = n->next = NULL;
}

#endif
