/*
 * store.h - the ledger's durable store: records, one table of operations per backend.
 *
 * The ledger turns every durable change into a dsc__rec and appends it to the store;
 * it calls nothing of a backend but the operations below (a table of function
 * pointers, like SQLite's VFS or Redis's dictType). A backend takes whatever is
 * queued, makes it durable as one batch (group commit), then hands the batch, each
 * record with its status, to the ledger's apply callback, which moves committed usage
 * into the in-memory counters (or rolls back what failed). Submitters of a waited
 * record block until its batch is done.
 *
 *   dsc__store_options o = {.durability = DSC_DURABILITY_FULL, .batch_ms = 10};
 *   dsc__store *s = dsc__store_open("var/discern.db", &o, &err);   picks the backend
 *   dsc__store_load(s, &loader, &err);          budgets, open holds, charges
 *   dsc__store_start(s, apply, ledger, &err);   the backend's completions begin
 *   dsc__store_enqueue(s, rec, true);           appended (ledger mutex held)
 *   dsc__store_wait(s, rec);                    DSC_OK once committed and applied
 *   dsc__store_close(s);                        drain, stop, close
 *
 * Backends (dsc__store_types in store.c, tried in order, the first whose accepts()
 * says yes opens the target): "sqlite" (store_sqlite.c, one file; any target that is
 * not a URI). A ledger with no store target keeps everything in memory and opens no
 * backend. A new backend (for example a shared Redis) fills a dsc__store_type, embeds
 * dsc__store as the first member of its own struct and adds one line to the table.
 */
#ifndef DISCERN_STORE_H
#define DISCERN_STORE_H

#include "discern/ledger.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

typedef struct dsc__store dsc__store;

typedef enum dsc__rec_type {
    DSC__REC_RESERVE,       /* a new hold: reservations row (+ decisions row: with_decision;
                               its key_id is the hold's owner and provider, model, zone,
                               purpose what it was for, also when loading held ones) */
    DSC__REC_SETTLE,        /* a charge (kind settle/late/unreserved) + reservation state */
    DSC__REC_CANCEL,        /* reservation state cancelled */
    DSC__REC_EXPIRE,        /* reservation expired: charge (expire) or released */
    DSC__REC_DECISION,      /* a decisions row */
    DSC__REC_BUDGET_SET,    /* budgets row upsert */
    DSC__REC_BUDGET_DELETE, /* budgets row delete */
    DSC__REC_SYNC           /* nothing to write: done once the records before it are */
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
    unsigned warnings; /* DSC_WARN_* */
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
    unsigned char carried;      /* batches the writer kept this hold back (store_sqlite.c) */
    int64_t carried_at;         /* when the writer first kept it back (its monotonic µs) */
    pthread_cond_t cv;          /* a waited record's own wake-up: no thundering herd */
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
    /* Charges before this time may be given as one sum per subject and hour, at the
     * hour's start (every budget counts an hour's charges alike: see
     * dsc__replay_filter.hourly_before_us); 0 = each charge on its own. Set by
     * budgets_done. */
    int64_t hourly_before_us;
} dsc__store_loader;

/* Which charges a replay can skip before they are read: per subject level (org,
 * team, user, key) NULL = any, "" = the level must be present, else it must be
 * equal; and only charges with a non-zero amount of metric. A pre-filter: the caller
 * still decides on each charge it is given. */
typedef struct dsc__replay_filter {
    const char *subject[4];
    dsc_metric metric;
    int64_t after_seq; /* > 0: only charges committed after the one with this seq */
    /* Charges before this time may come as one sum per subject and hour, at the hour's
     * start (with seq 0), when the budget counts all charges of an hour alike (a
     * calendar window in an hour-aligned timezone, a rolling one of whole-hour
     * buckets); 0 = each charge on its own. */
    int64_t hourly_before_us;
    /* 1-4 (org, team, user, key): the budget counts every value of that level apart
     * and alike (team:*), so the rolled-up hours may come as one sum per value (with
     * its org, the only other level set) and span: the hours in [by_from_us,
     * by_until_us) by spans of by_span_us from by_from_us, each at its start, the
     * hours before by_from_us as one sum at the first hour read (a calendar period
     * before the current one). 0 = per subject and hour. Only with hourly_before_us. */
    int by_level;
    int64_t by_from_us, by_span_us, by_until_us;
} dsc__replay_filter;

/* Called for each charge a replay reads, in commit order; non-OK stops it. */
typedef dsc_status (*dsc__replay_fn)(void *ud, const dsc__rec *charge);

/* How a store is opened: the ledger's durability and its longest commit delay. */
typedef struct dsc__store_options {
    dsc_durability durability;
    int batch_ms; /* 0 = 10 ms */
    /* > 0: raw events older than this (µs) may be dropped once they are summed up
     * elsewhere (the SQLite store's hourly rollups); open holds are kept */
    int64_t retention_us;
} dsc__store_options;

/* One backend: its operations. Every operation but accepts and open receives the
 * dsc__store that open returned (the backend's own struct starts with it). */
typedef struct dsc__store_type {
    const char *name; /* "sqlite" */
    /* Whether this backend opens target ("var/discern.db", "redis://host:6379"). */
    bool (*accepts)(const char *target);
    /* Open (create) the store at target, without completions yet. NULL with err
     * (DSC_STORE_UNAVAILABLE naming the target and the reason). */
    dsc__store *(*open)(const char *target, const dsc__store_options *o, dsc_error *err);
    /* Replay the stored state through the loader's callbacks (before start). */
    dsc_status (*load)(dsc__store *s, dsc__store_loader *ld, dsc_error *err);
    /* Begin making appended records durable; apply is called after every batch. */
    dsc_status (*start)(dsc__store *s, dsc__store_apply_fn apply, void *ud, dsc_error *err);
    /* Append rec (see dsc__store_enqueue). Takes only the backend's own locks. */
    dsc_status (*append)(dsc__store *s, dsc__rec *rec, bool wait);
    /* Wait, holding no lock of the ledger's, while the backend has as many records
     * queued as it keeps (NULL: no bound). */
    void (*room)(dsc__store *s);
    /* Block until a waited rec's batch is done; its status. */
    dsc_status (*wait)(dsc__store *s, dsc__rec *rec);
    /* A new budget's history: the charges at or after since_us passing filter, from
     * any thread but the one that runs apply; *last_seq = the newest charge of the
     * snapshot read (whether fn saw it or not). */
    dsc_status (*history)(dsc__store *s, int64_t since_us, const dsc__replay_filter *filter,
                          dsc__replay_fn fn, void *ud, int64_t *last_seq);
    /* The same from inside apply (the charges committed after filter->after_seq);
     * *last_seq is left alone when fn saw none. */
    dsc_status (*history_tail)(dsc__store *s, int64_t since_us, const dsc__replay_filter *filter,
                               dsc__replay_fn fn, void *ud, int64_t *last_seq);
    /* The seq of the newest charge committed (0: none); from inside apply. */
    int64_t (*charge_seq)(dsc__store *s);
    /* A reservation the ledger no longer remembers (DSC_UNKNOWN_RESERVATION: none);
     * see dsc__store_find_reservation. */
    dsc_status (*find_reservation)(dsc__store *s, const char *id, dsc__rec *out,
                                   const char **state);
    /* Whether the last batch committed. */
    bool (*healthy)(dsc__store *s);
    void (*counts)(dsc__store *s, uint64_t *batches, uint64_t *records, uint64_t *failures);
    /* A backend statement between batches (tests simulate a full disk); NULL when the
     * backend has none. */
    dsc_status (*exec)(dsc__store *s, const char *statement, dsc_error *err);
    /* Make what is appended durable, stop, release everything. */
    void (*close)(dsc__store *s);
} dsc__store_type;

/* The head of every backend's store. */
struct dsc__store {
    const dsc__store_type *type;
};

/* The backends, NULL-terminated, in the order dsc__store_open tries them. */
extern const dsc__store_type *const dsc__store_types[];
extern const dsc__store_type dsc__store_sqlite;

/* Open target with the first backend that accepts it. NULL with err. */
dsc__store *dsc__store_open(const char *target, const dsc__store_options *o, dsc_error *err);
/* Replay the stored state through the loader's callbacks (before _start). */
dsc_status dsc__store_load(dsc__store *s, dsc__store_loader *loader, dsc_error *err);
/* Look up a reservation that the ledger no longer remembers; DSC_UNKNOWN_RESERVATION
 * when the store has none. Fills out's subject, state ("held", "settled", ...), in
 * out->amounts what it has been charged so far, and in out->u.decision what the hold
 * was for (key_id = its owner, provider, model, zone, purpose). Thread-safe; never
 * called under the ledger's lock. */
dsc_status dsc__store_find_reservation(dsc__store *s, const char *id, dsc__rec *out,
                                       const char **state);
/* Replay the charges at or after since_us that pass filter through fn, in commit
 * order, from the apply callback. *last_seq (may be NULL) is set to the seq of the
 * last charge given to fn, and left alone when there is none. */
dsc_status dsc__store_replay(dsc__store *s, int64_t since_us, const dsc__replay_filter *filter,
                             dsc__replay_fn fn, void *ud, int64_t *last_seq);
/* The same from any thread but the apply callback's: one consistent snapshot while
 * the backend goes on committing; *last_seq is the newest charge of that snapshot
 * (whether fn saw it or not), so the charges after it are the ones it did not see. */
dsc_status dsc__store_replay_read(dsc__store *s, int64_t since_us, const dsc__replay_filter *filter,
                                  dsc__replay_fn fn, void *ud, int64_t *last_seq);
/* The seq of the newest charge committed (0: none). From the apply callback only. */
int64_t dsc__store_charge_seq(dsc__store *s);
/* Start the completions: apply is called after every batch. */
dsc_status dsc__store_start(dsc__store *s, dsc__store_apply_fn apply, void *ud, dsc_error *err);
/* Queue rec. wait: the caller will call dsc__store_wait and then free rec. Otherwise
 * the store owns rec, calls rec->done_fn (when set) after its batch and frees it; when
 * the last batch failed and rec has no done_fn, rec is freed at once and
 * DSC_STORE_UNAVAILABLE returned. Callable with the ledger's mutex held (a backend
 * takes only its own locks). */
dsc_status dsc__store_enqueue(dsc__store *s, dsc__rec *rec, bool wait);
/* Wait while the backend's queue is full (its writer's pace bounds the memory queued
 * records take). Called by the ledger's entry points before they take any lock; a
 * no-op on the backend's own threads. */
void dsc__store_room(dsc__store *s);
/* Block until rec's batch is done (committed and applied, or failed); its status. */
dsc_status dsc__store_wait(dsc__store *s, dsc__rec *rec);
/* Whether the last batch committed. */
bool dsc__store_healthy(dsc__store *s);
/* Counters for dsc_ledger_stats. */
void dsc__store_counts(dsc__store *s, uint64_t *batches, uint64_t *records, uint64_t *failures);
/* Run one backend statement between batches (tests: PRAGMA max_page_count to fill
 * the disk); DSC_BAD_REQUEST when the backend has none. */
dsc_status dsc__store_exec(dsc__store *s, const char *sql, dsc_error *err);
/* Commit what is queued, stop, close. NULL is a no-op. */
void dsc__store_close(dsc__store *s);

#endif
