/*
 * test_reservations.c - the server's memory of open reservations
 * (server/reservations.c): lookups, refresh, forgetting after settle or expiry plus
 * the grace period, the cap on finished entries, growth to many entries.
 */
#include "reservations.h"

#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>

static dsc__resv_info info(const char *id, int64_t expires_at) {
    dsc__resv_info i;
    memset(&i, 0, sizeof i);
    snprintf(i.id, sizeof i.id, "%s", id);
    snprintf(i.provider, sizeof i.provider, "openai");
    snprintf(i.model, sizeof i.model, "gpt-4o");
    snprintf(i.zone, sizeof i.zone, "FRA");
    snprintf(i.team, sizeof i.team, "infra");
    i.expires_at = expires_at;
    return i;
}

/* Prune every slice once. */
static size_t prune_all(dsc__resv_table *t, int64_t now) {
    size_t n = 0;
    for (int i = 0; i < 16; i++)
        n += dsc__resv_prune(t, now);
    return n;
}

Test(reservations, a_stored_reservation_comes_back_field_by_field) {
    dsc__resv_table *t = dsc__resv_table_new(60, 100000);
    dsc__resv_info in = info("r-1", 1000), out;
    cr_assert_eq(dsc__resv_put(t, &in), DSC_OK);
    cr_assert(dsc__resv_get(t, "r-1", &out));
    cr_assert_str_eq(out.provider, "openai");
    cr_assert_str_eq(out.model, "gpt-4o");
    cr_assert_str_eq(out.zone, "FRA");
    cr_assert_str_eq(out.team, "infra");
    cr_assert_str_eq(out.org, "");
    cr_assert_eq(out.expires_at, 1000);
    cr_assert_not(dsc__resv_get(t, "r-2", &out));
    dsc__resv_table_free(t);
}

Test(reservations, putting_the_same_id_again_refreshes_it_without_a_second_entry) {
    dsc__resv_table *t = dsc__resv_table_new(60, 100000);
    dsc__resv_info a = info("r-1", 1000), b = info("r-1", 2000), out;
    dsc__resv_put(t, &a);
    dsc__resv_put(t, &b);
    cr_assert_eq(dsc__resv_count(t), 1);
    cr_assert(dsc__resv_get(t, "r-1", &out));
    cr_assert_eq(out.expires_at, 2000);
    dsc__resv_table_free(t);
}

Test(reservations, entries_are_forgotten_a_grace_period_after_expiry_or_settle) {
    dsc__resv_table *t = dsc__resv_table_new(60, 100000);
    dsc__resv_info a = info("r-open", 1000), b = info("r-settled", 5000);
    dsc__resv_put(t, &a);
    dsc__resv_put(t, &b);
    dsc__resv_finish(t, "r-settled", 900);
    cr_assert_eq(prune_all(t, 950), 0, "both still within their grace");
    cr_assert_eq(prune_all(t, 961), 1, "the settled one goes 60 s after its settle");
    dsc__resv_info out;
    cr_assert_not(dsc__resv_get(t, "r-settled", &out));
    cr_assert(dsc__resv_get(t, "r-open", &out));
    cr_assert_eq(prune_all(t, 1061), 1, "the open one goes 60 s after it expires");
    cr_assert_eq(dsc__resv_count(t), 0);
    dsc__resv_table_free(t);
}

Test(reservations, a_hundred_thousand_entries_stay_reachable_as_the_table_grows) {
    dsc__resv_table *t = dsc__resv_table_new(60, 100000);
    char id[40];
    for (int i = 0; i < 100000; i++) {
        snprintf(id, sizeof id, "r%016x", i * 7919);
        dsc__resv_info in = info(id, i);
        cr_assert_eq(dsc__resv_put(t, &in), DSC_OK);
    }
    cr_assert_eq(dsc__resv_count(t), 100000);
    for (int i = 0; i < 100000; i += 997) {
        dsc__resv_info out;
        snprintf(id, sizeof id, "r%016x", i * 7919);
        cr_assert(dsc__resv_get(t, id, &out), "%s lost", id);
        cr_assert_eq(out.expires_at, i);
    }
    cr_assert_eq(prune_all(t, 100000 + 61), 100000);
    dsc__resv_table_free(t);
}

Test(reservations, past_the_cap_the_oldest_finished_entries_are_forgotten_at_once) {
    dsc__resv_table *t = dsc__resv_table_new(60, 3);
    dsc__resv_info in, out;
    char id[16];
    for (int i = 0; i < 8; i++) {
        snprintf(id, sizeof id, "r-%d", i);
        in = info(id, 5000);
        dsc__resv_put(t, &in);
    }
    for (int i = 0; i < 5; i++) { /* r-0 .. r-4 settle, in that order */
        snprintf(id, sizeof id, "r-%d", i);
        dsc__resv_finish(t, id, 1000);
    }
    cr_assert_not(dsc__resv_get(t, "r-0", &out), "oldest finished: forgotten");
    cr_assert_not(dsc__resv_get(t, "r-1", &out));
    for (int i = 2; i < 8; i++) {
        snprintf(id, sizeof id, "r-%d", i);
        cr_assert(dsc__resv_get(t, id, &out), "%s is kept: finished recently or still open", id);
    }
    cr_assert_eq(dsc__resv_count(t), 6);
    dsc__resv_finish(t, "r-4", 1001); /* a repeated settle does not count twice */
    cr_assert(dsc__resv_get(t, "r-2", &out));
    in = info("r-2", 9000); /* the same reservation taken again is open once more */
    dsc__resv_put(t, &in);
    for (int i = 5; i < 8; i++) {
        snprintf(id, sizeof id, "r-%d", i);
        dsc__resv_finish(t, id, 1002);
    }
    cr_assert(dsc__resv_get(t, "r-2", &out), "open again: not subject to the cap");
    cr_assert_not(dsc__resv_get(t, "r-3", &out));
    cr_assert_not(dsc__resv_get(t, "r-4", &out));
    cr_assert_eq(dsc__resv_count(t), 4, "r-2 open, r-5 .. r-7 finished");
    cr_assert_eq(prune_all(t, 1002 + 61), 3, "the finished ones still go after the grace");
    cr_assert(dsc__resv_get(t, "r-2", &out));
    cr_assert_eq(dsc__resv_count(t), 1);
    for (int i = 0; i < 8; i++) { /* the queue stays consistent after prunes */
        snprintf(id, sizeof id, "s-%d", i);
        in = info(id, 5000);
        dsc__resv_put(t, &in);
        dsc__resv_finish(t, id, 2000);
    }
    cr_assert_eq(dsc__resv_count(t), 4);
    dsc__resv_table_free(t);
}
