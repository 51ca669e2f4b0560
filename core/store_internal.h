/*
 * store_internal.h - the ledger's durable store: records, the writer, the reload.
 *
 * The ledger turns every durable change into a dsc__rec and submits it. One writer
 * thread takes whatever is queued, writes it in one transaction (group commit),
 * then hands the batch, each record with its status, to the ledger's apply
 * callback, which moves committed usage into the in-memory counters (or rolls
 * back what failed). Submitters of a waited record block until its batch is done.
 *
 *   dsc__store *s = dsc__store_open(path, DSC_DURABILITY_FULL, 10, &err);
 *   dsc__store_load(s, &loader, &err);          budgets, open holds, charges
 *   dsc__store_start(s, apply, ledger, &err);   the writer thread
 *   dsc__store_enqueue(s, rec, true);           queued (ledger mutex held)
 *   dsc__store_wait(s, rec);                    DSC_OK once committed and applied
 *   dsc__store_close(s);                        drain, join, close
 */
#ifndef DISCERN_STORE_INTERNAL_H
#define DISCERN_STORE_INTERNAL_H

#include "discern/ledger.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

typedef struct dsc__store dsc__store;

typedef enum dsc__rec_type {
    DSC__REC_RESERVE,      /* a new hold: reservations row (+ decisions row: with_decision;
                              its key_id is the hold's owner, also when loading held ones) */
    DSC__REC_SETTLE,       /* a charge (kind settle/late/unreserved) + reservation state */
    DSC__REC_CANCEL,       /* reservation state cancelled */
    DSC__REC_EXPIRE,       /* reservation expired: charge (expire) or released */
    DSC__REC_DECISION,     /* a decisions row */
    DSC__REC_BUDGET_SET,   /* budgets row upsert */
    DSC__REC_BUDGET_DELETE /* budgets row delete */
} dsc__rec_type;

typedef struct dsc__rec_subject {
    char org[DSC_NAME_MAX], team[DSC_NAME_MAX], user[DSC_NAME_MAX], key[DSC_NAME_MAX];
} dsc__rec_subject;

typedef struct dsc__rec_decision {
    char decision_id[DSC_NAME_MAX], request_id[DSC_NAME_MAX];
    char purpose[DSC_NAME_MAX], provider[DSC_NAME_MAX], model[DSC_NAME_MAX];
    char outcome[DSC_NAME_MAX], policy[DSC_NAME_MAX], policy_version[DSC_NAME_MAX];
    char reason[512];
    char key_id[DSC_NAME_MAX], zone[DSC_NAME_MAX], purpose_class[DSC_NAME_MAX];
    char verdicts[2048], tags[1536]; /* JSON text */
    int64_t input_tokens, output_tokens, est_energy_wh, est_gco2e, est_water_ml;
} dsc__rec_decision;

struct dsc__budget_history; /* the ledger's: a new budget and the charges read so far */

typedef struct dsc__rec_budget {
    int64_t id, limit;
    char selector[DSC_SELECTOR_MAX], window[DSC_WINDOW_MAX];
    dsc_metric metric;
    struct dsc__budget_history *history; /* a new budget's past usage, read before it
                                            was queued (NULL: the writer reads it all) */
} dsc__rec_budget;

typedef struct dsc__rec {
    struct dsc__rec *next;
    dsc__rec_type type;
    bool waited, done;  /* owned by the store's queue lock */
    bool with_decision; /* a RESERVE that also carries its check's decision */
    bool acked;         /* acknowledged once queued (durability batch, off): its effect was applied
                           when it was queued and its outcome is only counted */
    pthread_cond_t cv;  /* a waited record's own wake-up: no thundering herd */
    dsc_ledger_done_fn done_fn; /* async completion, or NULL */
    void *done_ud;
    dsc_status status; /* filled when done */
    char message[DSC_ERROR_MESSAGE_MAX];
    int64_t at_us;
    char reservation_id[DSC_RESERVATION_ID_MAX];
    char request_id[DSC_NAME_MAX];
    dsc__rec_subject subject;
    int64_t expires_us;      /* reserve */
    dsc_amounts amounts;     /* reserve: held; settle/expire: charged (may be negative) */
    const char *charge_kind; /* "settle", "late", "unreserved", "expire"; NULL = none */
    const char *state;       /* the reservation's state after this record */
    union {
        dsc__rec_decision decision;
        dsc__rec_budget budget;
    } u;
} dsc__rec;

/* Called by the writer after each batch, every record's status filled. */
typedef void (*dsc__store_apply_fn)(void *ud, dsc__rec **recs, size_t n);

/* What dsc__store_load reports, in this order: budgets, reservations still held,
 * recently finished reservations (for idempotent replies), then charges at or after
 * since_us in commit order. A callback returning non-OK stops the load. */
typedef struct dsc__store_loader {
    void *ud;
    dsc_status (*budget)(void *ud, const dsc__rec_budget *b);
    void (*budgets_done)(void *ud, struct dsc__store_loader *ld); /* may set since_us */
    dsc_status (*held)(void *ud, const dsc__rec *reservation, int64_t created_us);
    dsc_status (*finished)(void *ud, const dsc__rec *reservation, int64_t finished_us);
    dsc_status (*charge)(void *ud, const dsc__rec *charge);
    int64_t since_us;          /* charges older than this are not replayed */
    int64_t finished_since_us; /* finished reservations older than this are skipped */
    size_t finished_max;       /* and at most this many of the newest are reloaded */
} dsc__store_loader;

/* Open or create the SQLite file at path (WAL, schema), without a writer yet.
 * NULL with err (DSC_STORE_UNAVAILABLE naming the path and SQLite's reason). */
dsc__store *dsc__store_open(const char *path, dsc_durability durability, int batch_ms,
                            dsc_error *err);
/* Replay the stored state through the loader's callbacks (before _start). */
dsc_status dsc__store_load(dsc__store *s, dsc__store_loader *loader, dsc_error *err);
/* Look up a reservation that the ledger no longer remembers; DSC_UNKNOWN_RESERVATION
 * when the store has none. Fills out's subject, state ("held", "settled", ...) and,
 * in out->amounts, what it has been charged so far. Thread-safe. */
dsc_status dsc__store_find_reservation(dsc__store *s, const char *id, dsc__rec *out,
                                       const char **state);
/* Which charges a replay can skip in SQL, before they are read: per subject level
 * (org, team, user, key) NULL = any, "" = the level must be present, else it must be
 * equal; and only charges with a non-zero amount of metric. A pre-filter: the caller
 * still decides on each charge it is given. */
typedef struct dsc__replay_filter {
    const char *subject[4];
    dsc_metric metric;
    int64_t after_seq; /* > 0: only charges committed after the one with this seq */
} dsc__replay_filter;

/* Replay the charges at or after since_us that pass filter through fn, in commit
 * order, on the writer's connection: call it from the apply callback (the writer's
 * own thread). *last_seq (may be NULL) is set to the seq of the last charge given to
 * fn, and left alone when there is none. */
dsc_status dsc__store_replay(dsc__store *s, int64_t since_us, const dsc__replay_filter *filter,
                             dsc_status (*fn)(void *ud, const dsc__rec *charge), void *ud,
                             int64_t *last_seq);
/* The same on the store's reader connection, from any thread but the writer's: it
 * reads one consistent snapshot while the writer goes on committing, and sets
 * *last_seq to the newest charge of that snapshot (whether fn saw it or not), so the
 * charges after it are the ones it did not see. */
dsc_status dsc__store_replay_read(dsc__store *s, int64_t since_us, const dsc__replay_filter *filter,
                                  dsc_status (*fn)(void *ud, const dsc__rec *charge), void *ud,
                                  int64_t *last_seq);
/* The seq of the newest charge committed (0: none). Writer thread only. */
int64_t dsc__store_charge_seq(dsc__store *s);
/* Start the writer thread, which calls apply after every batch. */
dsc_status dsc__store_start(dsc__store *s, dsc__store_apply_fn apply, void *ud, dsc_error *err);
/* Queue rec. wait: the caller will call dsc__store_wait and then free rec. Otherwise
 * the store owns rec, calls rec->done_fn (when set) after its batch and frees it; when
 * the last batch failed and rec has no done_fn, rec is freed at once and
 * DSC_STORE_UNAVAILABLE returned. Callable with the ledger's mutex
 * held (it takes only the queue lock). */
dsc_status dsc__store_enqueue(dsc__store *s, dsc__rec *rec, bool wait);
/* Block until rec's batch is done (committed and applied, or failed); its status. */
dsc_status dsc__store_wait(dsc__store *s, dsc__rec *rec);
/* Whether the last batch committed. */
bool dsc__store_healthy(dsc__store *s);
/* Counters for dsc_ledger_stats. */
void dsc__store_counts(dsc__store *s, uint64_t *batches, uint64_t *records, uint64_t *failures);
/* Run one SQL statement on the writer's connection between batches (tests use it to
 * simulate a full disk with PRAGMA max_page_count). */
dsc_status dsc__store_exec(dsc__store *s, const char *sql, dsc_error *err);
/* Commit what is queued, stop the writer, close the database. NULL is a no-op. */
void dsc__store_close(dsc__store *s);

#endif
