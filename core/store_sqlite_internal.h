/*
 * store_sqlite_internal.h - what the SQLite store's files share (not public).
 *
 * The store is an append-only event log (store_sqlite_schema.c has the tables, the
 * views admins query and the migration of older files; store_sqlite.c the writer and
 * the reads). An event's type is one of DSC__EV_*; a reservation id is stored packed
 * (dsc__sq_bind_rid) and the views unpack it.
 */
#ifndef DISCERN_STORE_SQLITE_INTERNAL_H
#define DISCERN_STORE_SQLITE_INTERNAL_H

#include "dlist_internal.h"
#include "store.h"
#include "strmap_internal.h"

#include <pthread.h>
#include <sqlite3.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* events.type: the numbers are in the file, never renumber them. */
enum {
    DSC__EV_HOLD = 1,          /* a new hold without a decision */
    DSC__EV_HOLD_DECISION = 2, /* a new hold and the decision of its check */
    DSC__EV_SETTLE = 3,        /* a charge of kind settle, late or unreserved */
    DSC__EV_CANCEL = 4,        /* a hold released by its client */
    DSC__EV_EXPIRE = 5,        /* a hold past its ttl: charged (expire) or released */
    DSC__EV_DECISION = 6,      /* a decision that took no new hold */
    /* a hold finished (settled, cancelled, expired) in the batch that wrote it, as one
     * row: the finish's state, kind and charge, its time as finish_after_us, what it
     * held in held_* */
    DSC__EV_HOLD_DECISION_FINISH = 7,
    DSC__EV_HOLD_FINISH = 8 /* the same without a decision */
};

/* SQL: the event types that are a hold, a finish of one, a charge (with a kind), a
 * decision; and the time of a finish on row t (a hold finished in its batch has it as
 * a delta). */
#define DSC__SQ_HOLD_TYPES "1, 2, 7, 8"
#define DSC__SQ_FINISH_TYPES "3, 4, 5, 7, 8"
#define DSC__SQ_CHARGE_TYPES "3, 5, 7, 8"
#define DSC__SQ_DECISION_TYPES "2, 6, 7"
#define DSC__SQ_FIN_AT(t) "(" t ".at_us + ifnull(" t ".finish_after_us, 0))"

/* The writer's prepared statements. */
enum {
    ST_EVENT,
    ST_FINISH,
    ST_BUDGET,
    ST_NAME_GET,
    ST_NAME_ADD,
    ST_SUBJECT_GET,
    ST_SUBJECT_ADD,
    ST_CHECKPOINT,
    ST_ROLLUP,
    ST_ROLLUP_MANY,
    ST_PURGE,
    ST_PURGED,
    ST_UNRESERVED,
    ST_BEGIN,
    ST_COMMIT,
    ST_ROLLBACK,
    ST_COUNT
};

/* The reader's statements for the recall of a forgotten reservation, prepared once. */
enum {
    DSC__SQ_RD_FIND,      /* the events of a hold */
    DSC__SQ_RD_FIND_HOLD, /* its hold's seq, within the range of the two below */
    DSC__SQ_RD_BELOW,     /* the checkpoint after the last one below an id's counter */
    DSC__SQ_RD_ABOVE,     /* the first one at or above it */
    DSC__SQ_RD_FIRST,     /* the first checkpoint (ids of an older shape precede it) */
    DSC__SQ_RD_COUNT
};

/* Strings (or subject tuples) interned by the writer: text -> id, in memory, so the
 * hot path finds every id it has used before without a SELECT. */
#define DSC__SQ_MEMO 64     /* the last name of each column (by its parameter number) */
#define DSC__SQ_WARNINGS 64 /* the warnings' JSON of each set of DSC_WARN_* bits below it */
typedef struct dsc__sq_intern {
    dsc__strmap map;                         /* key -> dsc__sq_name (its key points into it) */
    struct dsc__sq_name *memo[DSC__SQ_MEMO]; /* entries of map, or NULL */
    struct dsc__sq_name *warnings[DSC__SQ_WARNINGS]; /* names: entries of map by bits, or NULL */
    struct dsc__sq_name **added; /* this batch's new entries: forgotten if it rolls back */
    size_t n_added, cap_added;
} dsc__sq_intern;

/* An open hold the writer knows: its hold event's seq, keyed by its id, on a list in
 * seq order (holds open in the order they are written, so the oldest is the first). */
struct dsc__sq_open {
    int64_t seq;
    dsc__dlink link; /* in the list in seq order; link.next: also the free list */
    char key[DSC_RESERVATION_ID_MAX];
};

/* What the writer knows of each record of a batch. */
typedef struct dsc__sq_slot {
    int64_t seq, subject; /* its event's seq and subject id (0: none) */
    int32_t finish;       /* a hold: the index of its finish in the batch (-1: none) */
    uint32_t pos;         /* a hold: its place in dsc__sq_store.holds */
    bool with_hold;       /* a finish written in its hold's row */
} dsc__sq_slot;

/* The page size of a new file. A commit appends every page it changed to the WAL
 * (usually the last leaf of events, a few rows), so with few records per commit the
 * page, not the rows, is what a decision writes: 2 KiB pages write about a quarter
 * less than SQLite's 4 KiB for 2-3 % more file (docs/benchmarks.md). */
#define DSC__SQ_PAGE_SIZE 2048

/* The stored length of an id the ledger makes ("r" + 36 hex digits): its first 6
 * bytes are its counter, which grows in the log's order. */
#define DSC__SQ_RID_BYTES 18
#define DSC__SQ_COUNTER_BYTES 6

/* Write a checkpoint row after this many events, or when the last is this old (in a
 * batch's transaction). */
#define DSC__SQ_CHECKPOINT_EVERY 65536
#define DSC__SQ_CHECKPOINT_US (60 * 1000000LL)
#define DSC__SQ_HOUR_US (3600 * 1000000LL)
/* The start of the hour of t (µs); times a hostile file holds far outside any real
 * one are clamped first, so that nothing overflows. */
static inline int64_t dsc__sq_hour_of(int64_t t) {
    const int64_t lim = INT64_C(1) << 61;
    if (t < -lim) t = -lim;
    if (t > lim) t = lim;
    int64_t r = t % DSC__SQ_HOUR_US;
    return t - (r < 0 ? r + DSC__SQ_HOUR_US : r);
}

/* a + b, saturated (amounts summed from a file may be anything). */
static inline int64_t dsc__sq_add(int64_t a, int64_t b) {
    int64_t v;
    if (!__builtin_add_overflow(a, b, &v)) return v;
    return b > 0 ? INT64_MAX : INT64_MIN;
}

/* At most this many old events dropped per batch (a checkpoint's worth of them goes
 * over the batches after it). */
#define DSC__SQ_PURGE_CHUNK 8192

typedef struct dsc__sq_store {
    dsc__store base;   /* first: the operations */
    sqlite3 *db, *rdb; /* writer connection; reader for lookups (lazy) */
    sqlite3_stmt *st[ST_COUNT];
    dsc_durability durability;
    int batch_ms;
    char path[1024];
    int lock_fd; /* flock()ed "<path>.lock" while open; -1 before */
    pthread_mutex_t qmu, dbmu, rmu;
    pthread_cond_t nonempty;
    pthread_cond_t room; /* the queue fell below DSC__SQ_QUEUE_MAX (see sq_room) */
    dsc__rec *head, *tail;
    size_t waiters; /* queued records whose caller waits for the commit (waited or done) */
    size_t queued;  /* records on the queue */
    bool stop, healthy, started;
    pthread_t writer;
    dsc__store_apply_fn apply;
    void *apply_ud;
    dsc__rec **batch;
    size_t batch_cap;
    dsc__rec **carry; /* holds kept back for the next batch (batch_cap of them) */
    size_t n_carry;
    uint64_t batches, records, failures;
    bool recovering;    /* a commit failed: checkpoint and truncate the WAL (writer only) */
    int64_t charge_seq; /* the newest event committed: every charge is at or before it */
    dsc__sq_intern names, subjects;        /* the writer's */
    int64_t last_seq, max_at_us;           /* the newest event, the latest at_us written */
    int64_t checkpoint_seq, checkpoint_at; /* the newest checkpoint's seq and time */
    int64_t held_from;                     /* the newest checkpoint's: no open hold is older */
    unsigned char max_rid[DSC__SQ_COUNTER_BYTES]; /* the next checkpoint's max_rid ... */
    int max_rid_len;                              /* ... (0: x'', no hold of the ledger's) */
    bool holds_known;               /* open lists every open hold (the load filled it) */
    bool rollups_lost;              /* out of memory summing a charge: no more checkpoints */
    dsc__strmap open;               /* open holds: reservation id -> dsc__sq_open (seq) */
    dsc__dlist open_list;           /* the open holds in seq order */
    struct dsc__sq_open *open_free; /* unused entries, chained by link.next */
    size_t open_spare;              /* entries on open_free */
    dsc__strmap roll;               /* charges since the checkpoint: hour:subject -> sums */
    dsc__sq_slot *slots;            /* per record of the batch (batch_cap of them) */
    int32_t *holds;                 /* the batch's holds by id: index + 1, 0 = empty */
    size_t holds_cap;               /* a power of two, at least 2 * batch_cap */
    int64_t retention_us;           /* > 0: drop rolled-up events older than this */
    int64_t retained_from;          /* the oldest event seq that may still be there */
    bool purge_more;                /* the last purge stopped at its chunk */
    struct {                        /* the reader's prepared statements, by SQL */
        sqlite3_stmt *st;
        char *sql;
    } rcache[8];
    sqlite3_stmt *rst[DSC__SQ_RD_COUNT]; /* the reader's recall statements (lazy) */
    int rcache_next;
} dsc__sq_store;

/* SQL: the stored reservation id of event t, where k is t's hold joined on k.seq =
 * t.hold (a settle, cancel or expiry of a hold the writer knew names it by seq only). */
#define DSC__SQ_RID_OF(t, k) "ifnull(" t ".rid, " k ".rid)"

/* The schema version this code writes (meta.schema_version). */
#define DSC__SQ_SCHEMA_VERSION 5

/* Bind reservation id to st's parameter i: an id the ledger makes ("r" + an even number
 * of lowercase hex digits) as the blob of those bytes (half the size), any other id as
 * its text, "" as NULL. The views turn the blob back into the same text. */
void dsc__sq_bind_rid(sqlite3_stmt *st, int i, const char *id);
/* id packed into out as dsc__sq_bind_rid stores it (its hex digits as bytes); its
 * length, 0 when it is stored as text. */
size_t dsc__sq_pack_rid(const char *id, unsigned char out[32]);

/* Create the schema in db, or migrate a file of an older schema to it, in one
 * transaction; SQLITE_OK, or an error with msg filled. */
int dsc__sq_schema(sqlite3 *db, char *msg, size_t cap);

/* The backend's reads (store_sqlite_read.c). */
dsc_status dsc__sq_load(dsc__store *base, dsc__store_loader *ld, dsc_error *err);
dsc_status dsc__sq_find_reservation(dsc__store *base, const char *id, dsc__rec *out,
                                    const char **state);
dsc_status dsc__sq_replay(dsc__store *base, int64_t since_us, const dsc__replay_filter *filter,
                          dsc__replay_fn fn, void *ud, int64_t *last_seq);
dsc_status dsc__sq_replay_read(dsc__store *base, int64_t since_us, const dsc__replay_filter *filter,
                               dsc__replay_fn fn, void *ud, int64_t *last_seq);
/* Remember that the hold id is open since event seq (the writer's, or the load's). */
void dsc__sq_hold_open(dsc__sq_store *s, const char *id, int64_t seq);

/* The first seq that can hold an event at or after at_us (from the checkpoints: every
 * event before it is older); 1 when none says so. */
int64_t dsc__sq_first_seq_at(sqlite3 *db, int64_t at_us);
/* Open a connection to path (busy timeout set). */
dsc_status dsc__sq_open_conn(const char *path, sqlite3 **db, dsc_error *err);
dsc_status dsc__sq_db_error(sqlite3 *db, const char *what, dsc_error *err);

#endif
