/*
 * redis_ledger.h - the ledger's Redis scripts as C calls: a request struct in, a
 * result struct out, through one completion on the connection's loop.
 *
 * This is the one place that knows each script's ARGV order and answer shape
 * (server/redis/<name>.lua); replies are read as hostile input: a reply of another
 * type, count or number format than the script's contract is DSC_STORE_UNAVAILABLE
 * ("malformed reply"), never a guess.
 *
 *   dsc__redis_counter c = {.name = "org:acme/team:infra#3", .window = w,
 *                           .limit = 50 * DSC_MICRO, .amount = 2 * DSC_MICRO,
 *                           .metric = DSC_METRIC_GCO2E};
 *   dsc__redis_reserve_req rq = {.version = v, .reservation_id = id, .ttl_us = ...,
 *                                .counters = &c, .n = 1};
 *   dsc__redis_reserve(r, &rq, on_reserved, ud);
 */
#ifndef DISCERN_SERVER_REDIS_LEDGER_H
#define DISCERN_SERVER_REDIS_LEDGER_H

#include "store_redis.h"

#include "discern/ledger.h"
#include "discern/window.h"

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#define DSC_REDIS_COUNTERS_MAX 32

/* One counter a request touches: its Redis name, window, limit and the amount of
 * its metric the request holds. */
typedef struct dsc__redis_counter {
    const char *name;
    dsc_window window;
    int64_t limit;  /* micro-units (reserve) */
    int64_t amount; /* micro-units (reserve) */
    dsc_metric metric;
} dsc__redis_counter;

typedef struct dsc__redis_counter_state {
    int64_t used, held, resets_at; /* micro-units; unix seconds */
} dsc__redis_counter_state;

typedef struct dsc__redis_reserve_req {
    int64_t version;            /* of the budget definitions the counters come from */
    const char *reservation_id; /* new, unguessable */
    const char *request_id;     /* NULL or "": none */
    const char *owner_key;      /* NULL or "": none */
    int64_t ttl_us;             /* > 0 */
    int32_t tz_offset_s;        /* calendar windows */
    const char *journal;        /* the decision's record; NULL: none */
    const char *hold_facts;     /* what the hold is for (dsc__redis_facts_pack); NULL: none */
    const char *hold_group;     /* its rollup group (dsc__redis_group_text); NULL: none */
    int64_t journal_max;        /* the journal stream's cap; 0: not journaled */
    const dsc__redis_counter *counters;
    size_t n;
} dsc__redis_reserve_req;

/* Packed fields, what Redis keeps instead of JSON (a hold's facts, a decision in the
 * journal): n strings, each as "<length>:<bytes>" one after the other (no
 * separator a field could contain, nothing escaped). */
#define DSC_REDIS_FACTS_MAX 1024
/* Pack n strings (NULL is "") into out; false when they do not fit cap. */
bool dsc__redis_facts_pack(char *out, size_t cap, const char *const *v, size_t n);
/* The hourly rollups' group (server/redis/common.lua): the 7 strings (NULL is "";
 * valid UTF-8) as a JSON array, byte for byte what jansson's compact dump writes
 * (\" \\ \b \f \n \r \t, other control bytes \u00XX, everything else as it is),
 * without building a jansson value. malloc'd; NULL when out of memory. */
#define DSC_REDIS_GROUP_PARTS 7
char *dsc__redis_group_text(const char *const *v);
/* Unpack the next field of *p (up to end) into out (cap bytes, NUL-terminated) and
 * advance *p; false when what is there is no field or does not fit. */
bool dsc__redis_facts_next(const char **p, const char *end, char *out, size_t cap);
/* The same without a copy: the field's bytes at *field, its length *len. */
bool dsc__redis_facts_span(const char **p, const char *end, const char **field, size_t *len);

/* A decision in the journal: its fields' values packed in this order (S a string, I
 * an integer in decimal), no names. reserve.lua renames the reservation of a
 * repeated check's record by its place, the 20th field: keep reservation_id there. */
#define DSC_REDIS_JOURNAL_FIELDS(XX)                                                               \
    XX(decision_id, S)                                                                             \
    XX(request_id, S)                                                                              \
    XX(at_us, I)                                                                                   \
    XX(org, S)                                                                                     \
    XX(team, S)                                                                                    \
    XX(user, S)                                                                                    \
    XX(key, S)                                                                                     \
    XX(purpose, S)                                                                                 \
    XX(provider, S)                                                                                \
    XX(model, S)                                                                                   \
    XX(input_tokens, I)                                                                            \
    XX(output_tokens, I)                                                                           \
    XX(est_energy_wh, I)                                                                           \
    XX(est_gco2e, I)                                                                               \
    XX(est_water_ml, I)                                                                            \
    XX(outcome, S)                                                                                 \
    XX(policy, S)                                                                                  \
    XX(policy_version, S)                                                                          \
    XX(reason, S)                                                                                  \
    XX(reservation_id, S)                                                                          \
    XX(key_id, S)                                                                                  \
    XX(zone, S)                                                                                    \
    XX(purpose_class, S)                                                                           \
    XX(verdicts, S)                                                                                \
    XX(tags, S)                                                                                    \
    XX(warnings, I)
/* A journaled decision as a JSON object of those names (a record journaled as JSON
 * text by an earlier version is read as it is); NULL when text is neither. */
json_t *dsc__redis_journal_load(const char *text, size_t len);

typedef enum dsc__redis_reserve_kind {
    DSC_REDIS_HELD,    /* every counter holds amount now */
    DSC_REDIS_REFUSED, /* nothing held: counters[refused] would exceed its limit */
    DSC_REDIS_STALE,   /* nothing held: Redis has budgets version `version` */
    DSC_REDIS_REPEAT,  /* request_id seen: its first reservation, in state `state` */
} dsc__redis_reserve_kind;

typedef struct dsc__redis_reserve_out {
    dsc__redis_reserve_kind kind;
    char reservation_id[DSC_RESERVATION_ID_MAX];               /* HELD, REPEAT */
    char state[16];                                            /* REPEAT: held, settled, ... */
    int64_t expires_us;                                        /* HELD, REPEAT */
    int64_t version;                                           /* STALE */
    size_t refused;                                            /* REFUSED: index into the request */
    dsc__redis_counter_state counters[DSC_REDIS_COUNTERS_MAX]; /* HELD: each counter;
                                                    REFUSED: [0] is the refusing one */
    size_t n;
} dsc__redis_reserve_out;

typedef struct dsc__redis_settle_req {
    const char *reservation_id;
    const char *owner_key; /* NULL or "": none */
    dsc_amounts actual;    /* micro-units, >= 0 */
    int64_t retain_s;      /* how long the finished reservation answers repeats */
    int32_t tz_offset_s;
    const char *journal;
    int64_t journal_max;
    const dsc__redis_counter *counters; /* charged directly for an unknown id (n may be 0) */
    size_t n;
} dsc__redis_settle_req;

typedef enum dsc__redis_settle_kind {
    DSC_REDIS_SETTLED,    /* the hold was replaced by actual */
    DSC_REDIS_REPEATED,   /* settled before: charged is the first settle's */
    DSC_REDIS_LATE,       /* cancelled or expired before: the difference was charged */
    DSC_REDIS_UNRESERVED, /* unknown id: the given counters were charged */
    DSC_REDIS_UNKNOWN,    /* unknown id and no counters given: nothing charged */
    DSC_REDIS_FORBIDDEN,  /* another owner key's reservation: nothing charged */
} dsc__redis_settle_kind;

typedef struct dsc__redis_settle_out {
    dsc__redis_settle_kind kind;
    dsc_amounts charged; /* what the reservation is charged in total now */
    dsc__redis_counter_state counters[DSC_REDIS_COUNTERS_MAX]; /* SETTLED .. UNRESERVED: the
                                               request's counters after the settle */
    size_t n;
} dsc__redis_settle_out;

/* Completions: st DSC_OK with out filled, or an error (out NULL) with err. */
typedef void (*dsc__redis_reserve_fn)(void *ud, dsc_status st, const dsc__redis_reserve_out *out,
                                      const dsc_error *err);
typedef void (*dsc__redis_settle_fn)(void *ud, dsc_status st, const dsc__redis_settle_out *out,
                                     const dsc_error *err);

/* Send a reserve. DSC_OK: fn is called once. DSC_BAD_REQUEST (naming the field),
 * DSC_STORE_UNAVAILABLE or DSC_NOMEM: fn is not called. */
dsc_status dsc__redis_reserve(dsc__redis *r, const dsc__redis_reserve_req *req,
                              dsc__redis_reserve_fn fn, void *ud, dsc_error *err);
/* Send a settle; as dsc__redis_reserve. */
dsc_status dsc__redis_settle(dsc__redis *r, const dsc__redis_settle_req *req,
                             dsc__redis_settle_fn fn, void *ud, dsc_error *err);

/* Read reserve.lua's answer for a request of n counters (exposed for tests). */
dsc_status dsc__redis_parse_reserve(const redisReply *rep, size_t n, dsc__redis_reserve_out *out,
                                    dsc_error *err);
/* Read settle.lua's answer for a request of n counters (exposed for tests). */
dsc_status dsc__redis_parse_settle(const redisReply *rep, size_t n, dsc__redis_settle_out *out,
                                   dsc_error *err);

/* ------------------------------------------------- the other scripts' calls -- */

/* cancel.lua's answer. */
typedef enum dsc__redis_cancel_kind {
    DSC_REDIS_CANCELLED,      /* the hold was released now */
    DSC_REDIS_CANCEL_UNKNOWN, /* Redis does not know the id */
    DSC_REDIS_CANCEL_FORBIDDEN,
    DSC_REDIS_CANCEL_FINISHED /* no longer held (settled, cancelled, expired): no change */
} dsc__redis_cancel_kind;

/* A hold as hold.lua reads it: its state, owner key, expiry and its facts (or, for a
 * hold taken by an earlier version, the journal text of the check that took it). */
typedef struct dsc__redis_hold_out {
    bool known;
    char state[16], owner[DSC_NAME_MAX];
    int64_t expires_us;
    const char *detail; /* borrowed for the completion ("" when none) */
    size_t detail_len;
} dsc__redis_hold_out;

/* What a call of the scripts below answers, for the completion (st DSC_OK). */
typedef struct dsc__redis_answer {
    dsc__redis_cancel_kind cancel; /* cancel */
    int64_t version;               /* state, budget, defs, key, keyring */
    int64_t count;                 /* sweep: holds finished */
    dsc__redis_counter_state counters[DSC_REDIS_COUNTERS_MAX]; /* state */
    size_t n;                                                  /* state: counters */
    const redisReply *const *defs; /* defs, keyring: n pairs id, text (borrowed) */
    const char *last;              /* journal: the last entry read ("" when none); defs holds n
                                      triples event, id, detail (borrowed) */
    dsc__redis_hold_out hold;      /* hold */
    /* rollups: n triples hour, group, sums in rows (borrowed); where the next page
     * starts (next_hour >= to: done) and Redis's clock (unix seconds) */
    const redisReply *const *rows;
    int64_t next_hour, now_s;
    const char *cursor;
} dsc__redis_answer;

typedef void (*dsc__redis_answer_fn)(void *ud, dsc_status st, const dsc__redis_answer *out,
                                     const dsc_error *err);

/* Release a hold (cancel.lua); as dsc__redis_reserve. */
dsc_status dsc__redis_cancel(dsc__redis *r, const char *id, const char *owner_key, int64_t retain_s,
                             int64_t journal_max, dsc__redis_answer_fn fn, void *ud,
                             dsc_error *err);
/* Read n counters as of now (state.lua): out->counters, out->version. */
dsc_status dsc__redis_state(dsc__redis *r, int32_t tz_offset_s, const dsc__redis_counter *c,
                            size_t n, dsc__redis_answer_fn fn, void *ud, dsc_error *err);
/* Finish at most max expired holds of any replica (sweep.lua): out->count. */
dsc_status dsc__redis_sweep(dsc__redis *r, bool charge, int64_t max, int64_t retain_s,
                            int64_t journal_max, dsc__redis_answer_fn fn, void *ud, dsc_error *err);
/* Set (definition non-empty) or delete one budget definition (budget.lua):
 * out->version is the budgets version after it. */
dsc_status dsc__redis_budget(dsc__redis *r, const char *id, const char *definition,
                             dsc__redis_answer_fn fn, void *ud, dsc_error *err);
/* Set a new budget's definition as dsc__redis_budget does, and start its counters
 * from usage already in its window (budget.lua): window w (calendar or rolling) in
 * offset tz_offset_s; seed is n strings, per counter "<name> <m>" then m pairs
 * "<hour_s> <amount>" (the hourly rollups' sums of the budget's metric for the
 * subjects of that counter), each as its own string. */
dsc_status dsc__redis_budget_seeded(dsc__redis *r, const char *id, const char *definition,
                                    int32_t tz_offset_s, const dsc_window *w,
                                    const char *const *seed, size_t n, dsc__redis_answer_fn fn,
                                    void *ud, dsc_error *err);
/* Read every budget definition (defs.lua): out->version, out->n pairs in out->defs. */
dsc_status dsc__redis_defs(dsc__redis *r, dsc__redis_answer_fn fn, void *ud, dsc_error *err);
/* Store one API key's entry (key.lua): out->version is the keys version after it. */
dsc_status dsc__redis_key(dsc__redis *r, const char *id, const char *entry, dsc__redis_answer_fn fn,
                          void *ud, dsc_error *err);
/* Read every API key (keyring.lua): out->version, out->n pairs id, entry in out->defs. */
dsc_status dsc__redis_keyring(dsc__redis *r, dsc__redis_answer_fn fn, void *ud, dsc_error *err);
/* Read the journal from after entry start ("0-0": the beginning), at most count
 * entries (journal.lua): the decisions among them in out->defs, out->last. */
dsc_status dsc__redis_journal(dsc__redis *r, const char *start, int64_t count,
                              dsc__redis_answer_fn fn, void *ud, dsc_error *err);
/* Read a hold (hold.lua): out->hold. */
dsc_status dsc__redis_hold(dsc__redis *r, const char *id, dsc__redis_answer_fn fn, void *ud,
                           dsc_error *err);
/* Journal a decision that holds nothing (record.lua). */
dsc_status dsc__redis_record(dsc__redis *r, const char *decision_id, const char *journal,
                             int64_t journal_max, dsc__redis_answer_fn fn, void *ud,
                             dsc_error *err);

/* Read the hourly rollups of the hours [from_hour, to_hour) (unix seconds of hour
 * starts) from the HSCAN cursor within from_hour ("0": its start), about budget
 * fields at most (rollups.lua): out->rows, out->n, out->next_hour, out->cursor. */
dsc_status dsc__redis_rollups(dsc__redis *r, int64_t from_hour, int64_t to_hour, const char *cursor,
                              int64_t budget, dsc__redis_answer_fn fn, void *ud, dsc_error *err);

/* Append one change to the admin journal (admin.lua add), capped near max entries. */
dsc_status dsc__redis_admin_add(dsc__redis *r, const char *by, const char *action,
                                const char *target, const char *detail, int64_t max,
                                dsc__redis_answer_fn fn, void *ud, dsc_error *err);
/* Read at most count changes of the admin journal after entry start ("0-0": the
 * first) (admin.lua read): out->n rows of 6 strings in out->rows (id, at_us, by,
 * action, target, detail), out->last. */
dsc_status dsc__redis_admin_read(dsc__redis *r, const char *start, int64_t count,
                                 dsc__redis_answer_fn fn, void *ud, dsc_error *err);

/* A stream entry id "<ms>-<seq>" as one integer (ms << 20 | seq), what the journals'
 * readers call seq; 0 when malformed. */
int64_t dsc__redis_seq_of_id(const char *id);
/* The entry id of such an integer, into out. */
void dsc__redis_id_of_seq(int64_t seq, char *out, size_t cap);

/* The sum of metric m in a rollup's value "v1,...,v7" (dsc_metric order); false when
 * it is not 7 integers. */
bool dsc__redis_rollup_sum(const char *sums, dsc_metric m, int64_t *out);

/* Read one script's answer (exposed for tests). */
dsc_status dsc__redis_parse_answer(dsc__redis_script script, const redisReply *rep, size_t n,
                                   dsc__redis_answer *out, dsc_error *err);

#endif
