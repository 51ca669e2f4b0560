/*
 * ledger_internal.h - the ledger's in-memory structures, shared by ledger.c
 * (requests: preview, reserve, settle, cancel, expiry), ledger_budget.c (budgets,
 * selectors, counters) and ledger_store.c (store records, apply after commit,
 * rebuild on open). Not public.
 *
 * Locking (the order is written down once, in ledger.c's header comment):
 * reservations in DSC__SHARDS shards with a mutex each (budgets: read under any one,
 * changed under all), the counters' index in DSC__CMAP_SHARDS shards, the counters
 * under DSC__COUNTER_LOCKS locks chosen by their address.
 */
#ifndef DISCERN_LEDGER_INTERNAL_H
#define DISCERN_LEDGER_INTERNAL_H

#include "discern/ledger.h"
#include "discern/window.h"
#include "dlist_internal.h"
#include "store.h"
#include "strmap_internal.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>

typedef enum dsc__level { LV_ALL, LV_ORG, LV_TEAM, LV_USER, LV_KEY, LV_COUNT } dsc__level;

typedef struct dsc__counter dsc__counter;

typedef struct dsc__budget {
    int64_t id;
    const char *selector; /* into the allocation's tail, after ident */
    dsc_metric metric;
    const char *window_text; /* the same */
    dsc_window win;
    int64_t limit;
    dsc__level level;
    bool qualified;               /* "org:<org>/<level>:..." */
    bool any;                     /* "<level>:*" */
    struct dsc__budget *next_sel; /* budgets sharing one selector */
    struct dsc__budget *next_dead;
    dsc__counter *counters; /* this budget's counters (grown under counters_new_mu) */
    size_t n_counters;      /* how many */
    char ident[];           /* selector|metric|window, the budgets map's key; then the selector and
                               the window text, each with its NUL */
} dsc__budget;

struct dsc__counter { /* held and wc are guarded by its lock (dsc__counter_lock) */
    dsc__budget *b;
    int64_t held;
    dsc_window_counter wc;
    dsc__counter *next; /* in b->counters */
    size_t name_off;    /* the counter's name inside key */
    char key[];         /* "<budget id>#<name>", the counters map's key */
};

#define DSC__COUNTER_KEY_MAX 192

typedef struct dsc__sel_slot {
    dsc__budget *head;
    char selector[];
} dsc__sel_slot;

typedef enum dsc__rstate {
    RS_NONE, /* created by a settle of an unknown reservation, not yet committed */
    RS_HELD,
    RS_SETTLING,
    RS_SETTLED,
    RS_CANCELLING,
    RS_CANCELLED,
    RS_EXPIRING,
    RS_EXPIRED, /* expired and charged */
    RS_RELEASED /* expired and released */
} dsc__rstate;

typedef struct dsc__shard dsc__shard;

typedef struct dsc__reservation {
    dsc__shard *shard; /* the shard that indexes it: its mutex guards every field */
    char id[DSC_RESERVATION_ID_MAX];
    dsc__rstate state, prev;
    uint64_t epoch;  /* budget_epoch when counters[] was resolved */
    bool committing; /* its reserve record is not committed yet (and waited for) */
    int64_t created_us, expires_us, finished_us;
    dsc_amounts held, charged;
    size_t heap_idx;                     /* SIZE_MAX when not in the expiry heap */
    dsc__dlink finished_link;            /* in its shard's finished list */
    const char *request_id;              /* into the allocation's tail ("" = none) */
    const char *owner;                   /* the key id that took the hold ("" = none), the same */
    const char *org, *team, *user, *key; /* the same */
    const char *provider, *model, *zone, *purpose; /* what the hold was for, the same */
    size_t n;
    dsc__counter *counters[]; /* then the subject strings */
} dsc__reservation;

/* A budget that applies to a subject, and its counter (NULL until first charged). */
typedef struct dsc__hit {
    dsc__budget *b;
    dsc__counter *c;
} dsc__hit;

/* An optional completion for the calls with a dsc_done; queued = the store will call it. */
typedef struct dsc__done {
    dsc_ledger_done_fn fn;
    void *ud;
    bool queued;
} dsc__done;

/* Report a call with a done that needed no write at once: calls done when st is DSC_OK and
 * nothing was queued. Returns st. */
dsc_status dsc__done_now(dsc_status st, const dsc__done *done);

#define DSC__HITS_MAX 256 /* budgets that may apply to one subject */
#define DSC__SHAPES 15    /* "*", "org:*", "org:x", then 4 per team/user/key level */

#define DSC__SHARDS 16            /* reservation shards (a power of two: an id names its own) */
#define DSC__CMAP_SHARDS 64       /* shards of the counters' index */
#define DSC__SHARD_CACHE_MAX 2048 /* counters a shard's cache holds before it starts afresh */

/* A share of the reservations, by id (see dsc__shard_of): its mutex guards the maps,
 * the expiry heap, the finished list, the id orders and every reservation in it. */
struct dsc__shard {
    pthread_mutex_t mu;
    dsc__strmap reservations; /* id -> reservation */
    dsc__strmap requests;     /* request id -> reservation (a request's shard is its hold's) */
    dsc__reservation **heap;  /* expiry min-heap */
    size_t heap_n, heap_cap;
    _Atomic int64_t next_expiry;   /* the heap's earliest expires_us (INT64_MAX: empty),
                                      read without the lock to skip a shard with none due */
    dsc__dlist finished;           /* finished reservations, oldest first */
    dsc__strmap counters;          /* the counters its holds have used: key -> counter (a cache of
                                      the counters' index, dropped with a budget, at most
                                      DSC__SHARD_CACHE_MAX) */
    size_t n_held, n_reservations; /* this shard's share of the stats */
    _Atomic size_t n_finished;     /* written under mu, read by any (forget_old) */
    uint64_t settles, expired;
    char pad[64]; /* no false sharing with the next shard's mutex */
};

#define DSC__COUNTER_LOCKS 1024 /* the counters' locks (a power of two), chosen by address */

/* One of the counters' locks, alone on its cache line. */
typedef union dsc__lock_line {
    pthread_mutex_t mu;
    char line[64];
} dsc__lock_line;

/* A share of the counters' index, by the hash of a counter's key. */
typedef struct dsc__cmap {
    pthread_mutex_t mu;
    dsc__strmap map; /* key -> counter */
    char pad[64];
} dsc__cmap;

struct dsc_ledger {
    pthread_mutex_t counters_new_mu; /* a budget's counter list while a counter is added */
    pthread_mutex_t reader_mu;       /* starting the reader thread */
    dsc_durability durability;
    dsc_expired_policy expired;
    dsc_tz tz;
    int64_t (*now_us)(void *ud);
    void *clock_ud;
    int64_t retain_us;
    size_t retain_max;
    /* The budgets: read under any one shard's lock, changed under all of them
     * (dsc__budgets_write). */
    dsc__strmap budgets; /* ident -> budget */
    dsc__strmap sels;    /* selector -> dsc__sel_slot */
    dsc__budget **live;  /* ordered by id */
    size_t n_live, cap_live;
    dsc__budget *dead;               /* deleted budgets: their counters may still be held */
    size_t shape_count[DSC__SHAPES]; /* live budgets per selector shape */
    uint64_t budget_epoch;           /* bumped whenever a budget appears or goes */
    int64_t next_budget_id;
    dsc__cmap cmap[DSC__CMAP_SHARDS];
    dsc__shard shards[DSC__SHARDS];
    /* A counter's holds and window are guarded by the lock its address picks: a mutex
     * in each of 100 000 counters cost 4 MB, these 64 KB. */
    dsc__lock_line counter_locks[DSC__COUNTER_LOCKS];
    /* ids loaded from a store written before ids named their shard, whose request id
     * lives in another one: id -> its shard. Built at open, read-only after. */
    dsc__strmap moved;
    /* With a store, a new hold's id order is taken and its record queued under
     * journal_mu, so ids reach the log in the order of their counters (lost_hold and
     * the store's search for a forgotten hold count on it). */
    pthread_mutex_t journal_mu;
    _Atomic uint64_t next_rid;       /* orders reservation ids (see new_rid in ledger.c) */
    uint64_t durable_rid;            /* the newest id order the store gave back at open */
    uint64_t start_rid;              /* the id order this ledger began with: ids between the
                                        two can only be holds lost in a crash (lost_hold) */
    bool have_durable_rid, lost_gap; /* fixed at open, read-only after */
    _Atomic size_t n_counters;
    _Atomic uint64_t decisions;
    dsc__store *store;
    struct dsc__reader *reader; /* reads new budgets' history for the async calls (lazy) */
};

typedef struct dsc__reader dsc__reader;

/* Before an entry point takes any lock: wait while the store's queue is full. */
static inline void dsc__ledger_room(dsc_ledger *l) {
    if (l->store) dsc__store_room(l->store);
}

/* --- ledger_budget.c -------------------------------------------------------- */
/* Persist a budget change (no lock held): wait for it, or with done->fn queue it and
 * let the store call done once it is committed and applied (done->queued is then
 * set). Consumes rec (NULL: DSC_NOMEM) and, if it never reaches the store, its
 * history. */
dsc_status dsc__budget_persist(dsc_ledger *l, dsc__rec *rec, dsc__done *done, dsc_error *err);
/* A new budget for (selector, metric, window), parsed and validated, not indexed;
 * DSC_BAD_REQUEST / DSC_UNKNOWN_METRIC naming the field, DSC_NOMEM. */
dsc_status dsc__budget_new(const char *selector, dsc_metric metric, const char *window,
                           dsc__budget **out, dsc_error *err);
/* Check one subject field: NULL/"" or 1..63 chars without ':', '/', '*', spaces. */
dsc_status dsc__check_name(const char *field, const char *v, dsc_error *err);
/* The ident key of (selector, metric, window) into buf. */
void dsc__budget_ident(char *buf, size_t len, const char *selector, dsc_metric m,
                       const char *window);
/* Which of the DSC__SHAPES selector shapes b has. */
int dsc__budget_shape(const dsc__budget *b);
/* Whether b applies to subject s. */
bool dsc__budget_applies(const dsc__budget *b, const dsc_subject *s);
/* b's counter for s, found or created in map (the ledger's, or a private one while a
 * new budget is replayed); NULL when out of memory. *created tells which. */
dsc__counter *dsc__budget_counter(dsc__strmap *map, dsc__budget *b, const dsc_subject *s,
                                  bool *created);
/* Insert a new budget (id, limit, parsed fields set; its counters, if any, built in
 * a private map) into the indexes. */
dsc_status dsc__budget_insert(dsc_ledger *l, dsc__budget *b);
/* Remove b from the indexes and keep it on the dead list. */
void dsc__budget_remove(dsc_ledger *l, dsc__budget *b);
/* The budgets that apply to subject (validated), with counters; create: make the
 * missing counters. sh: the shard whose lock the caller holds (its cache of counters is
 * looked in first and filled), NULL while opening. DSC_TOO_LARGE beyond DSC__HITS_MAX,
 * DSC_NOMEM. */
dsc_status dsc__match(dsc_ledger *l, dsc__shard *sh, const dsc_subject *s, bool create,
                      dsc__hit *hits, size_t *n, dsc_error *err);
/* The counter key "<id>#<name>" of b for subject s into key; returns the name's
 * offset in key. */
size_t dsc__counter_key(const dsc__budget *b, const dsc_subject *s, char *key, size_t len);
/* Free b's counters (a budget that was never indexed). */
void dsc__budget_drop_counters(dsc__budget *b);
/* How far back from now b's window can reach (µs): the charges that can count. */
int64_t dsc__window_reach(const dsc__budget *b);
/* Free every budget and counter. */
void dsc__budgets_free(dsc_ledger *l);

/* What a hold was for (any field may be NULL): its check's provider, model, zone and
 * purpose, and the key id that took it (its owner). */
typedef struct dsc__hold_what {
    const char *provider, *model, *zone, *purpose, *owner;
} dsc__hold_what;

/* --- ledger.c ------------------------------------------------------------------ */
int64_t dsc__ledger_now(dsc_ledger *l);
/* The index of c's lock in l->counter_locks (a hash of its address). */
size_t dsc__counter_lock_of(const dsc__counter *c);
/* Lock and unlock c alone (no other counter's lock held: two counters may share one). */
void dsc__counter_lock(dsc_ledger *l, const dsc__counter *c);
void dsc__counter_unlock(dsc_ledger *l, const dsc__counter *c);
/* A reservation object for subject over the given counters (not indexed yet); what
 * may be NULL. */
dsc__reservation *dsc__reservation_new(const char *id, const char *request_id, const dsc_subject *s,
                                       const dsc__hold_what *what, const dsc__hit *hits, size_t n);
/* Bring a finished reservation the ledger forgot back from the store (no lock held:
 * the store is read on the calling thread, then its shard is locked to index it). DSC_OK when
 * it is in memory afterwards; DSC_UNKNOWN_RESERVATION when the store has none. */
dsc_status dsc__reservation_recall(dsc_ledger *l, const char *id);
/* Whether id has the shape of a reservation id made by a ledger. */
bool dsc__ledger_made(const char *id);
/* Note a reservation read back from the store while opening, before it is indexed:
 * its id bounds the ids of its shard a crash may have lost, and its shard is chosen
 * (see place_loaded in ledger.c). DSC_NOMEM. */
dsc_status dsc__ledger_loaded(dsc_ledger *l, dsc__reservation *r);
/* A settle or cancel of a forgotten reservation, with its request copied: the reader
 * thread recalls it from the store and then runs it with done. */
typedef struct dsc__recall {
    bool cancel;
    char id[DSC_RESERVATION_ID_MAX], key_id[DSC_NAME_MAX];
    bool check_key;
    dsc_amounts actual;
    bool has_subject;
    dsc__rec_subject subject;
    dsc_settle_kind *kind;
} dsc__recall;
/* Run a recalled settle or cancel (the reader thread, no lock held). */
dsc_status dsc__recall_run(dsc_ledger *l, const dsc__recall *rc, dsc__done *done, dsc_error *err);
/* Index r by id and request id in its shard (r->shard, else the id's), whose lock
 * the caller holds; DSC_NOMEM. */
dsc_status dsc__reservation_index(dsc_ledger *l, dsc__reservation *r);
/* Add or remove r's holds on its counters (sign +1 / -1). */
void dsc__reservation_hold(dsc_ledger *l, dsc__reservation *r, int sign);
/* Release r's holds (release) and charge a (NULL: nothing) at at_us, each counter in
 * one step under its own lock (r's shard lock held). */
void dsc__reservation_release_charge(dsc_ledger *l, dsc__reservation *r, bool release,
                                     const dsc_amounts *a, int64_t at_us);
/* The shard that indexes (or would index) reservation id. */
dsc__shard *dsc__shard_of(dsc_ledger *l, const char *id);
/* The shard of the CPU the caller runs on: a hold without a request id goes there,
 * and a call that only reads the budgets locks it. */
dsc__shard *dsc__shard_here(dsc_ledger *l);
/* Take every shard's lock, in index order, to change the budgets; and release them. */
void dsc__budgets_write(dsc_ledger *l);
void dsc__budgets_done(dsc_ledger *l);
dsc_status dsc__heap_push(dsc_ledger *l, dsc__reservation *r);
void dsc__heap_remove(dsc_ledger *l, dsc__reservation *r);
/* Move r to a final state, onto the finished list. */
void dsc__reservation_finish(dsc_ledger *l, dsc__reservation *r, dsc__rstate st, int64_t at_us);
/* Unindex and free r (off the heap and the finished list first). */
void dsc__reservation_drop(dsc_ledger *l, dsc__reservation *r);

/* --- ledger_reader.c ----------------------------------------------------------- */
/* Hand a new budget's record to the reader thread (started on first use), which
 * reads its history and then persists it with done: done runs exactly once, as for
 * any call with a done. DSC_NOMEM / DSC_INTERNAL when it cannot (rec is then the
 * caller's). */
dsc_status dsc__reader_submit(dsc_ledger *l, dsc__rec *rec, const dsc__done *done);
/* Hand a settle or cancel of a forgotten reservation to the reader thread (rc is
 * copied), which recalls it from the store and runs it; done runs exactly once. */
dsc_status dsc__reader_recall(dsc_ledger *l, const dsc__recall *rc, const dsc__done *done);
/* Finish the reader's queue and stop its thread (ledger free, before the store). */
void dsc__reader_stop(dsc_ledger *l);

/* --- ledger_store.c ------------------------------------------------------------ */
/* Open the store at path and rebuild budgets, holds and counters from it. */
dsc_status dsc__ledger_store_open(dsc_ledger *l, const dsc_ledger_config *cfg, dsc_error *err);
/* A new budget's past usage, read from the store on the calling thread (not the
 * writer's) before its record is queued; the writer adds what was committed since.
 * NULL when out of memory (the writer then reads it all). */
struct dsc__budget_history *dsc__budget_history_read(dsc_ledger *l, const dsc__rec_budget *rb);
/* Free a history that will not be applied; NULL is a no-op. */
void dsc__budget_history_free(struct dsc__budget_history *h);
/* The writer's callback: apply a finished batch to memory (takes each record's shard
 * lock). */
void dsc__ledger_apply(void *ud, dsc__rec **recs, size_t n);
/* A record with its header (everything before u) zeroed and u left for the caller
 * to fill: calloc would clear the 5 KiB of a decision's text buffers on every
 * record. */
dsc__rec *dsc__rec_alloc(void);
/* A record of type with r's id, subject and what it was for filled, everything else
 * empty (NULL: DSC_NOMEM). */
dsc__rec *dsc__rec_for(dsc__rec_type type, const dsc__reservation *r, int64_t at_us);
/* Set rec's type, time, reservation id, request id and subject from r. */
void dsc__rec_fill(dsc__rec *rec, dsc__rec_type type, const dsc__reservation *r, int64_t at_us);
/* Apply the outcome of one record (r's shard lock held). */
void dsc__apply_settle(dsc_ledger *l, dsc__reservation *r, const dsc_amounts *delta, int64_t at_us,
                       bool ok);
void dsc__apply_cancel(dsc_ledger *l, dsc__reservation *r, int64_t at_us, bool ok);
void dsc__apply_expire(dsc_ledger *l, dsc__reservation *r, const dsc_amounts *charge, int64_t at_us,
                       bool ok);
void dsc__apply_reserve_failed(dsc_ledger *l, dsc__reservation *r);
/* Run SQL on the store's writer connection (tests: simulate a full disk). */
dsc_status dsc__ledger_store_exec(dsc_ledger *l, const char *sql, dsc_error *err);
/* State names in the store. */
const char *dsc__rstate_name(dsc__rstate st);
dsc__rstate dsc__rstate_parse(const char *name);

#endif
