/*
 * reservations.h - the server's memory of what each reservation was for, so that
 * settle can re-estimate from tokens (see reservations.c). Thread-safe.
 *
 *   dsc__resv_table *t = dsc__resv_table_new(60, 100000);
 *   dsc__resv_put(t, &info);  dsc__resv_get(t, "r-...", &info);
 *   dsc__resv_finish(t, "r-...", now);  dsc__resv_prune(t, now);   (once a second)
 */
#ifndef DISCERN_SERVER_RESERVATIONS_H
#define DISCERN_SERVER_RESERVATIONS_H

#include "discern/status.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define DSC__RESV_ID_MAX 40
#define DSC__RESV_NAME_MAX 64
#define DSC__RESV_MODEL_MAX 128

typedef struct dsc__resv_info {
    char id[DSC__RESV_ID_MAX];
    char provider[DSC__RESV_NAME_MAX], model[DSC__RESV_MODEL_MAX], zone[8];
    char org[DSC__RESV_NAME_MAX], team[DSC__RESV_NAME_MAX], user[DSC__RESV_NAME_MAX],
        key[DSC__RESV_NAME_MAX];
    int64_t expires_at; /* unix seconds */
} dsc__resv_info;

typedef struct dsc__resv_table dsc__resv_table;

/* A new table whose entries outlive their expiry by grace_s, keeping at most
 * max_finished settled or cancelled ones (the oldest go first); NULL when out of
 * memory. */
dsc__resv_table *dsc__resv_table_new(int64_t grace_s, size_t max_finished);
/* Free t; NULL is a no-op. */
void dsc__resv_table_free(dsc__resv_table *t);
/* Remember info (replacing an entry with the same id). DSC_NOMEM on failure. */
dsc_status dsc__resv_put(dsc__resv_table *t, const dsc__resv_info *info);
/* Copy the entry for id into out; false when there is none. */
bool dsc__resv_get(dsc__resv_table *t, const char *id, dsc__resv_info *out);
/* The reservation was settled or cancelled: forget it after the grace period, or
 * sooner when more than max_finished others finished after it. */
void dsc__resv_finish(dsc__resv_table *t, const char *id, int64_t now);
/* Drop entries whose expiry plus grace is before now, in one slice (1/16) of the
 * table per call; returns how many. */
size_t dsc__resv_prune(dsc__resv_table *t, int64_t now);
/* How many entries the table holds. */
size_t dsc__resv_count(dsc__resv_table *t);

#endif
