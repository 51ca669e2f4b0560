/*
 * store.c - the ledger's store: the table of backends and the calls that dispatch
 * through a store's operations (store.h). The ledger calls only these.
 */
#include "store.h"

#include <string.h>

const dsc__store_type *const dsc__store_types[] = {&dsc__store_sqlite, NULL};

dsc__store *dsc__store_open(const char *target, const dsc__store_options *o, dsc_error *err) {
    for (size_t i = 0; dsc__store_types[i]; i++)
        if (dsc__store_types[i]->accepts(target)) return dsc__store_types[i]->open(target, o, err);
    dsc_error_set(err, DSC_BAD_REQUEST, "store: no backend opens \"%.200s\"", target);
    return NULL;
}

dsc_status dsc__store_load(dsc__store *s, dsc__store_loader *loader, dsc_error *err) {
    return s->type->load(s, loader, err);
}

dsc_status dsc__store_find_reservation(dsc__store *s, const char *id, dsc__rec *out,
                                       const char **state) {
    return s->type->find_reservation(s, id, out, state);
}

dsc_status dsc__store_replay(dsc__store *s, int64_t since_us, const dsc__replay_filter *filter,
                             dsc__replay_fn fn, void *ud, int64_t *last_seq) {
    return s->type->history_tail(s, since_us, filter, fn, ud, last_seq);
}

dsc_status dsc__store_replay_read(dsc__store *s, int64_t since_us, const dsc__replay_filter *filter,
                                  dsc__replay_fn fn, void *ud, int64_t *last_seq) {
    return s->type->history(s, since_us, filter, fn, ud, last_seq);
}

int64_t dsc__store_charge_seq(dsc__store *s) {
    return s->type->charge_seq(s);
}

dsc_status dsc__store_start(dsc__store *s, dsc__store_apply_fn apply, void *ud, dsc_error *err) {
    return s->type->start(s, apply, ud, err);
}

dsc_status dsc__store_enqueue(dsc__store *s, dsc__rec *rec, bool wait) {
    return s->type->append(s, rec, wait);
}

void dsc__store_room(dsc__store *s) {
    if (s->type->room) s->type->room(s);
}

dsc_status dsc__store_wait(dsc__store *s, dsc__rec *rec) {
    return s->type->wait(s, rec);
}

bool dsc__store_healthy(dsc__store *s) {
    return s->type->healthy(s);
}

void dsc__store_counts(dsc__store *s, uint64_t *batches, uint64_t *records, uint64_t *failures) {
    s->type->counts(s, batches, records, failures);
}

dsc_status dsc__store_exec(dsc__store *s, const char *sql, dsc_error *err) {
    if (!s->type->exec)
        return dsc_error_set(err, DSC_BAD_REQUEST, "the %s store runs no statements",
                             s->type->name);
    return s->type->exec(s, sql, err);
}

void dsc__store_close(dsc__store *s) {
    if (s) s->type->close(s);
}
