/*
 * test_dlist.c - core/dlist_internal.h: the intrusive list the ledger's finished
 * reservations, the auth limiter's addresses and the Redis store's calls share.
 */
#include "../../core/dlist_internal.h"

#include <criterion/criterion.h>
#include <stdio.h>

typedef struct item {
    int value;
    dsc__dlink link;
} item;

/* The values from head to tail, then from tail to head, as "1 2 3|3 2 1". */
static void order_of(const dsc__dlist *l, char *out, size_t cap) {
    size_t at = 0;
    for (dsc__dlink *n = l->head; n; n = n->next)
        at += (size_t)snprintf(out + at, cap - at, "%s%d", at ? " " : "",
                               DSC__DLIST_ENTRY(n, item, link)->value);
    at += (size_t)snprintf(out + at, cap - at, "|");
    size_t first = at;
    for (dsc__dlink *n = l->tail; n; n = n->prev)
        at += (size_t)snprintf(out + at, cap - at, "%s%d", at > first ? " " : "",
                               DSC__DLIST_ENTRY(n, item, link)->value);
}

Test(dlist, appended_items_keep_their_order_and_any_one_unlinks_from_either_end_or_between) {
    item it[4] = {{1, {0}}, {2, {0}}, {3, {0}}, {4, {0}}};
    dsc__dlist l = {0};
    for (int i = 0; i < 4; i++)
        dsc__dlist_append(&l, &it[i].link);
    char got[64];
    order_of(&l, got, sizeof got);
    cr_assert_str_eq(got, "1 2 3 4|4 3 2 1");
    dsc__dlist_unlink(&l, &it[1].link); /* between */
    order_of(&l, got, sizeof got);
    cr_assert_str_eq(got, "1 3 4|4 3 1");
    cr_assert_null(it[1].link.prev);
    cr_assert_null(it[1].link.next);
    dsc__dlist_unlink(&l, &it[0].link); /* the head */
    dsc__dlist_unlink(&l, &it[3].link); /* the tail */
    order_of(&l, got, sizeof got);
    cr_assert_str_eq(got, "3|3");
    dsc__dlist_append(&l, &it[0].link); /* back in, as the newest */
    order_of(&l, got, sizeof got);
    cr_assert_str_eq(got, "3 1|1 3");
    dsc__dlist_unlink(&l, &it[2].link);
    dsc__dlist_unlink(&l, &it[0].link);
    cr_assert_null(l.head);
    cr_assert_null(l.tail);
    cr_assert_null(DSC__DLIST_ENTRY(l.head, item, link), "the entry of no link is NULL");
}

Test(dlist, an_item_inserted_after_another_or_at_the_head_takes_that_place) {
    item it[4] = {{1, {0}}, {2, {0}}, {3, {0}}, {4, {0}}};
    dsc__dlist l = {0};
    dsc__dlist_insert_after(&l, NULL, &it[2].link);        /* into an empty list */
    dsc__dlist_insert_after(&l, NULL, &it[0].link);        /* at the head */
    dsc__dlist_insert_after(&l, &it[2].link, &it[3].link); /* after the tail */
    dsc__dlist_insert_after(&l, &it[0].link, &it[1].link); /* between */
    char got[64];
    order_of(&l, got, sizeof got);
    cr_assert_str_eq(got, "1 2 3 4|4 3 2 1");
}
