/*
 * ledger.h - budgets, windows and the reserve -> settle -> cancel protocol.
 *
 * Shared vocabulary (used by the policy engine and the server too):
 *   dsc_metric        what a budget counts (energy_wh, gco2e, water_ml, pe_mj, cost,
 *                     tokens, requests)
 *   dsc_subject       who asks: org / team / user / key (any may be NULL)
 *   dsc_amounts       one integer per metric, in micro-units of the metric's API unit
 *                     (1 gco2e = 1 000 000 µg; amounts reconcile exactly)
 *   dsc_budget_state  one budget as seen by one subject: limit, used, held,
 *                     remaining, when it resets, and what a request would add
 *
 * The ledger (dsc_ledger, opaque, shared by all threads):
 *   budgets      (selector, metric, window) -> limit; set/get/delete/list, persisted.
 *                Selectors: "*", "org:acme", "org:*", "team:infra", "team:*",
 *                "user:ana", "user:*", "key:k1", "key:*", and org-qualified
 *                "org:acme/team:infra", "org:acme/user:*". Counters below the org
 *                level are scoped by the subject's org: "team:*" keeps one counter
 *                per (org, team), named "org:acme/team:infra" ("team:infra" when the
 *                subject names no org). "team:infra" matches team infra of every org,
 *                each with its own counter.
 *   preview      every budget that applies to a subject, with what a request would do
 *   counter_list every counter of every budget as of now (one per concrete subject seen)
 *   reserve      hold an upper bound on every matching budget, all or nothing;
 *                idempotent by request_id; reservation ids are "r" + 12 hex digits
 *                in order + 24 hex digits from the OS (96 random bits), so they
 *                cannot be guessed
 *   settle       replace the hold with the actual usage; idempotent
 *   cancel       release the hold
 *   tick         expire holds past their ttl (charged or released, as configured)
 *   record       the audit journal of every decision (a check's shares its hold's
 *                record: dsc_reserve_req.decision)
 *
 * With a store (SQLite, WAL), settles, expiries, cancels, reservations and decisions
 * are written by one writer thread that commits them in batches (group commit); a
 * caller of a durable operation waits for its batch (durability "full"), only for the
 * queue ("batch"), or not at all ("off"). With "full", usage reaches the in-memory
 * counters only after it is committed; a failed commit leaves them as they were and
 * returns DSC_STORE_UNAVAILABLE. With "batch" and "off" a reservation, settle, cancel
 * or decision is acknowledged once queued: the counters change at once and a failed
 * commit only counts (store_failures). A reservation is acknowledged once queued
 * under every durability while the store is healthy (after a failed commit it waits
 * for its own under "full"): its hold is in memory at once, and the log is ordered, so
 * the settle that waits for its own commit carries it; a crash before that commit
 * loses the hold, and its settle after the restart is charged as unreserved usage
 * (one commit wait per decision, not two). Reopening the store rebuilds every counter.
 * Every durable call has one shape, (l, request, reply, done, err): with done NULL it
 * waits; with a done it returns once the record is queued and calls done(ud, st, err)
 * from the writer thread when it is committed ("full"), or before it returns
 * ("batch", "off"): a server's event loop never waits for an fsync
 * (docs/internals.md). DSC_STORE_UNAVAILABLE always
 * means "nothing happened, retry": also for a retry racing its own first attempt.
 * Schema, queries and durability trade-offs: docs/operations.md.
 *
 *   dsc_ledger_config cfg = {.store_path = "var/discern.db"};
 *   dsc_ledger *l = dsc_ledger_new(&cfg, &err);
 *   dsc_budget_req b = {"team:*", DSC_METRIC_GCO2E, "month", 50000.0, false};
 *   dsc_ledger_budget(l, &b, NULL, NULL, &err);
 *   dsc_reserve_out out = {.exceeded = ex, .max_exceeded = 8};
 *   st = dsc_ledger_reserve(l, &(dsc_reserve_req){&subj, &amounts, 60, "req-1", NULL},
 *                           &out, NULL, &err);
 *   st = dsc_ledger_settle(l, &(dsc_settle_req){out.reservation_id, &actual, NULL},
 *                          NULL, NULL, &err);
 *   dsc_ledger_free(l);
 */
#ifndef DISCERN_LEDGER_H
#define DISCERN_LEDGER_H

#include "discern/export.h"

#include "discern/estimate.h"
#include "discern/status.h"

#include <stdbool.h>
#include <stdint.h>

DSC_API_BEGIN

/* XX(name, wire name, API unit) */
#define DSC_METRIC_MAP(XX)                                                                         \
    XX(ENERGY_WH, "energy_wh", "Wh")                                                               \
    XX(GCO2E, "gco2e", "g")                                                                        \
    XX(WATER_ML, "water_ml", "mL")                                                                 \
    XX(PE_MJ, "pe_mj", "MJ")                                                                       \
    XX(COST, "cost", "currency")                                                                   \
    XX(TOKENS, "tokens", "tokens")                                                                 \
    XX(REQUESTS, "requests", "requests")

typedef enum dsc_metric {
#define DSC_METRIC_ENUM(name, wire, unit) DSC_METRIC_##name,
    DSC_METRIC_MAP(DSC_METRIC_ENUM)
#undef DSC_METRIC_ENUM
        DSC_METRIC_COUNT
} dsc_metric;

/* Micro-units per API unit: every amount inside the ledger is an integer. */
#define DSC_MICRO 1000000LL

#define DSC_SELECTOR_MAX 128
#define DSC_WINDOW_MAX 32

typedef struct dsc_subject {
    const char *org, *team, *user, *key; /* NULL or "" = not given */
} dsc_subject;

typedef struct dsc_amounts {
    int64_t v[DSC_METRIC_COUNT]; /* micro-units, indexed by dsc_metric */
} dsc_amounts;

typedef struct dsc_budget_state {
    char selector[DSC_SELECTOR_MAX]; /* as configured: "team:*" */
    char counter[DSC_SELECTOR_MAX];  /* the concrete counter it resolved to: "team:infra" */
    dsc_metric metric;
    char window[DSC_WINDOW_MAX];          /* "month", "rolling:1h", "rate:100/1m" */
    int64_t limit, used, held, remaining; /* micro-units; remaining = limit - used - held, >= 0 */
    int64_t resets_at;                    /* unix seconds */
    int64_t request;                      /* what the request under review would add */
    bool would_exceed;                    /* used + held + request > limit */
    int64_t retry_after_s;                /* seconds until the request fits, 0 when it does
                                             (dsc_window_wait_s: a rate window's next token) */
} dsc_budget_state;

/* The wire name of a metric ("gco2e"); NULL when out of range. */
const char *dsc_metric_name(dsc_metric m);
/* The API unit of a metric ("g"). */
const char *dsc_metric_unit(dsc_metric m);
/* Parse a metric's wire name; DSC_UNKNOWN_METRIC when it names none. */
dsc_status dsc_metric_parse(const char *name, dsc_metric *out);

/* The amounts a request would cost, from the upper bound of its estimate: energy,
 * gco2e, water, pe from est (may be NULL: zero), tokens = input + output,
 * requests = 1, cost = cost_micro (micro-currency, 0 when unknown). */
void dsc_amounts_from_estimate(const dsc_estimate *est, int64_t input_tokens, int64_t output_tokens,
                               int64_t cost_micro, dsc_amounts *out);

/* --- amounts on the API boundary ------------------------------------------------ */

/* Largest amount or limit accepted on the API, in API units (keeps sums in int64). */
#define DSC_AMOUNT_API_MAX 1e12

/* Convert an API amount (>= 0, finite, <= DSC_AMOUNT_API_MAX) to micro-units;
 * DSC_BAD_REQUEST naming field and value otherwise. */
dsc_status dsc_amount_from_api(const char *field, double v, int64_t *micro, dsc_error *err);
/* Micro-units back to API units. */
double dsc_amount_to_api(int64_t micro);

/* --- the ledger ----------------------------------------------------------------- */

typedef struct dsc_ledger dsc_ledger;

typedef enum dsc_durability {
    DSC_DURABILITY_FULL = 0, /* wait until the batch is committed with synchronous=FULL */
    DSC_DURABILITY_BATCH,    /* wait until queued; committed within batch_ms */
    DSC_DURABILITY_OFF       /* no wait, synchronous=OFF: an OS crash may lose data */
} dsc_durability;

typedef enum dsc_expired_policy {
    DSC_EXPIRED_CHARGE = 0, /* an expired hold is charged as usage (default) */
    DSC_EXPIRED_RELEASE     /* an expired hold is released */
} dsc_expired_policy;

typedef struct dsc_ledger_config {
    const char *store_path;      /* SQLite file; NULL = memory only (nothing persists) */
    dsc_durability durability;   /* default FULL */
    dsc_expired_policy expired;  /* default CHARGE */
    const char *timezone;        /* calendar windows: NULL/"UTC", "+02:00", "local" */
    int64_t (*now_us)(void *ud); /* the clock (unix µs); NULL = CLOCK_REALTIME */
    void *clock_ud;
    int batch_ms;      /* BATCH: longest commit delay; FULL: longest delay of a
                          commit nobody waits on (a hold); 0 = 10 ms */
    int64_t retain_s;  /* finished reservations kept in memory for idempotent
                          replies; 0 = 600 s (a store answers older ones) */
    size_t retain_max; /* and at most this many of them; 0 = 100 000 */
    /* The store drops raw events older than this once they are rolled up into hours;
     * 0 = it keeps them forever. */
    int64_t journal_retention_s;
} dsc_ledger_config;

/* Open a ledger: parse cfg, open (create) the store and rebuild counters from it.
 * Returns NULL with err set (DSC_BAD_REQUEST for a bad field, DSC_STORE_UNAVAILABLE
 * when the store cannot be opened, DSC_NOMEM). The caller owns the ledger. */
dsc_ledger *dsc_ledger_new(const dsc_ledger_config *cfg, dsc_error *err);
/* Flush the store queue, stop the writer and free everything; NULL is a no-op. */
void dsc_ledger_free(dsc_ledger *l);

/* Called exactly once when a call's record with a done is committed (st DSC_OK) or
 * its batch failed (st and err->message say why; DSC_STORE_UNAVAILABLE for the disk).
 * It runs on the store's writer thread, or inside the call itself when nothing had to
 * be written (a repeated settle, a memory-only ledger) or the call is acknowledged
 * once queued (durability batch and off). It may call into the ledger, but should
 * only hand the result over (to an event loop) and return: the next batch waits for
 * it. When the call returns an error, done is never called. */
typedef void (*dsc_ledger_done_fn)(void *ud, dsc_status st, const dsc_error *err);

/* How a durable call completes: NULL = the call waits for its commit (durability
 * full) or its queue (batch, off); else it returns once queued and fn(ud, ...)
 * reports the commit. A server's event loop never waits for an fsync
 * (docs/internals.md). */
typedef struct dsc_done {
    dsc_ledger_done_fn fn;
    void *ud;
} dsc_done;

/* --- budgets -------------------------------------------------------------------- */

typedef struct dsc_budget_info {
    int64_t id;                      /* stable while the budget exists */
    char selector[DSC_SELECTOR_MAX]; /* normalised: "org:acme/team:*" */
    dsc_metric metric;
    char window[DSC_WINDOW_MAX]; /* as given: "month", "rolling:1h", "rate:10/s" */
    int64_t limit;               /* micro-units */
} dsc_budget_info;

/* A budget change: create (selector, metric, window) or change its limit (API units,
 * >= 0), or with remove delete it (holds already placed on it are released with
 * their reservations). */
typedef struct dsc_budget_req {
    const char *selector;
    dsc_metric metric;
    const char *window;
    double limit; /* ignored by remove */
    bool remove;
} dsc_budget_req;

/* Apply a budget change. done NULL: persisted before it returns, and out (may be
 * NULL) filled with the budget now in effect. With done: returns once queued and done
 * reports the commit, after which the change is in effect (a new budget with its
 * window's past usage counted; read it back with dsc_ledger_budget_get); out is not
 * filled. DSC_BAD_REQUEST naming the field for a bad selector, window or limit;
 * DSC_UNKNOWN_BUDGET removing none; DSC_STORE_UNAVAILABLE; DSC_NOMEM. */
dsc_status dsc_ledger_budget(dsc_ledger *l, const dsc_budget_req *req, dsc_budget_info *out,
                             const dsc_done *done, dsc_error *err);
/* Look a budget up; DSC_UNKNOWN_BUDGET when there is none. */
dsc_status dsc_ledger_budget_get(dsc_ledger *l, const char *selector, dsc_metric metric,
                                 const char *window, dsc_budget_info *out, dsc_error *err);
/* Copy up to max budgets, ordered by id, starting at the offset-th; *total is the
 * number of budgets (either pointer may be NULL). Returns how many were copied. */
size_t dsc_ledger_budget_list(dsc_ledger *l, size_t offset, dsc_budget_info *out, size_t max,
                              size_t *total);

/* --- requests ------------------------------------------------------------------- */

#define DSC_RESERVATION_ID_MAX 40
#define DSC_NAME_MAX 64 /* longest subject field, request id, decision field */

/* Every budget that applies to subject, its state now, and what request (may be NULL:
 * zero) would do to it. Fills up to max states; *n is how many apply (may exceed
 * max). DSC_BAD_REQUEST naming a bad subject field. Allocates nothing lasting. */
dsc_status dsc_ledger_preview(dsc_ledger *l, const dsc_subject *subject, const dsc_amounts *request,
                              dsc_budget_state *out, size_t max, size_t *n, dsc_error *err);

/* Every counter of every live budget, its state now (request 0), ordered by budget id
 * then counter name: copies up to max from the offset-th; *n copied, *total how many
 * there are (either may be NULL). Under the ledger's lock; DSC_NOMEM (nothing copied). */
dsc_status dsc_ledger_counter_list(dsc_ledger *l, size_t offset, dsc_budget_state *out, size_t max,
                                   size_t *n, size_t *total, dsc_error *err);

typedef struct dsc_decision_record dsc_decision_record;

/* Hold amounts on every budget that applies to subject, for ttl_s seconds (> 0), or
 * on none. A request_id already reserved returns the same reservation id and holds
 * nothing more; a refused request holds nothing, so its retry is evaluated afresh.
 * decision (may be NULL) is a check's decision journaled in the same store record as
 * its hold (one commit slot, one done call); it is validated as by dsc_ledger_record
 * before anything is held, its reservation_id and at_us are replaced by the hold's,
 * and its key_id owns the hold. A request_id already reserved journals the decision
 * alone, naming that reservation. */
typedef struct dsc_reserve_req {
    const dsc_subject *subject; /* NULL: none */
    const dsc_amounts *amounts;
    int64_t ttl_s;
    const char *request_id; /* NULL: not idempotent */
    const dsc_decision_record *decision;
} dsc_reserve_req;

typedef struct dsc_reserve_out {
    char reservation_id[DSC_RESERVATION_ID_MAX]; /* filled on DSC_OK */
    dsc_budget_state *exceeded;                  /* in: room for max_exceeded states, or NULL */
    size_t max_exceeded;
    size_t n_exceeded; /* budgets that would be exceeded (may exceed max_exceeded) */
} dsc_reserve_out;

/* Reserve. DSC_OK: out->reservation_id filled and the hold in place, its record
 * queued (not yet committed, whatever the durability); with done, done runs before
 * the call returns. After a failed commit, under durability full, it waits for its
 * own commit (with done: done reports it, and on failure the hold is released before
 * done runs); "batch" and "off" refuse at once. DSC_BUDGET_EXCEEDED: nothing held (or journaled),
 * the budgets that would be exceeded are in out->exceeded[0..min(n_exceeded, max_exceeded)):
 * journal the refusal with dsc_ledger_record. DSC_BAD_REQUEST naming a bad field;
 * DSC_STORE_UNAVAILABLE; DSC_NOMEM. */
dsc_status dsc_ledger_reserve(dsc_ledger *l, const dsc_reserve_req *req, dsc_reserve_out *out,
                              const dsc_done *done, dsc_error *err);

typedef enum dsc_settle_kind {
    DSC_SETTLE_RESERVED = 0, /* the hold was replaced by the actual usage */
    DSC_SETTLE_REPEATED,     /* already settled: nothing charged again */
    DSC_SETTLE_LATE,         /* the reservation had expired or was cancelled: the
                                actual replaces whatever its expiry charged */
    DSC_SETTLE_UNRESERVED    /* no such reservation: charged as unreserved usage to
                                subject (or only to "*" budgets when none is given) */
} dsc_settle_kind;

typedef struct dsc_settle_req {
    const char *reservation_id;
    const dsc_amounts *actual;
    const dsc_subject *subject_if_unknown; /* charged when the id is unknown (may be NULL) */
    const char *key_id; /* the caller's key: a hold another key took is refused with
                           DSC_FORBIDDEN; NULL = any key may (an admin) */
} dsc_settle_req;

typedef struct dsc_settle_out {
    dsc_settle_kind kind;
} dsc_settle_out;

/* Charge actual usage for a reservation, replacing its hold. Idempotent: a repeat
 * charges nothing and reports DSC_SETTLE_REPEATED. An unknown reservation is still
 * recorded and charged to subject_if_unknown, unless its id has the ledger's shape:
 * then it is DSC_UNKNOWN_RESERVATION, but for an id made after the newest one the
 * store kept and before this ledger opened (a hold a crash lost), charged as
 * unreserved. Usage is durable before DSC_OK with
 * durability full and no done; with done the in-memory counters change at the commit
 * (full) or at once (batch, off). out may be NULL; with done it must stay valid until
 * done runs (the kind may be written then). A finished reservation the ledger
 * no longer keeps in memory is recalled from the store, never under the ledger's
 * lock: with done on the ledger's reader thread (the caller's thread reads nothing),
 * without on the calling thread. DSC_BAD_REQUEST (negative amount, bad id),
 * DSC_FORBIDDEN (another key's hold), DSC_STORE_UNAVAILABLE (nothing charged: retry),
 * DSC_NOMEM. */
dsc_status dsc_ledger_settle(dsc_ledger *l, const dsc_settle_req *req, dsc_settle_out *out,
                             const dsc_done *done, dsc_error *err);

typedef struct dsc_cancel_req {
    const char *reservation_id;
    const char *key_id; /* the caller's key, as for dsc_settle_req */
} dsc_cancel_req;

/* Release a reservation's hold and journal it (done: as for settle). Cancelling a
 * finished reservation is a no-op returning DSC_OK; DSC_UNKNOWN_RESERVATION when the
 * id is unknown; DSC_FORBIDDEN for another key's hold. */
dsc_status dsc_ledger_cancel(dsc_ledger *l, const dsc_cancel_req *req, const dsc_done *done,
                             dsc_error *err);

/* Expire holds whose ttl has passed (charged or released per the config, journaled)
 * and forget finished reservations older than retain_s. Returns how many holds
 * expired. The server calls it about once a second; reserve/preview also expire
 * lazily. */
size_t dsc_ledger_tick(dsc_ledger *l);

/* --- the decision journal ------------------------------------------------------- */

/* One decision, as journaled. Strings may be NULL; longer than DSC_NAME_MAX (reason:
 * 512) is refused with DSC_BAD_REQUEST naming the field. */
struct dsc_decision_record {
    const char *decision_id, *request_id;
    int64_t at_us; /* 0 = now */
    dsc_subject subject;
    const char *purpose, *provider, *model;
    int64_t input_tokens, output_tokens;
    int64_t est_energy_wh, est_gco2e, est_water_ml; /* upper bounds, micro-units */
    const char *outcome;                            /* "allow", "throttle" or "refuse" */
    const char *policy, *policy_version;
    const char *reason;
    const char *reservation_id; /* the hold taken for an allow, or NULL */
    const char *key_id;         /* the key that asked ("admin", NULL = anonymous); it
                                   owns the hold when it rides on dsc_reserve_req */
    const char *zone, *purpose_class;
    const char *verdicts; /* every policy's verdict, JSON text (<= 2047 bytes), or NULL */
    const char *tags;     /* the request's tags, a JSON object (<= 1535 bytes), or NULL */
    unsigned warnings;    /* the estimate's DSC_WARN_* bits (journaled by name) */
};

/* A hold, as the ledger keeps it: who, which key took it, what it was for. */
typedef struct dsc_hold_info {
    char id[DSC_RESERVATION_ID_MAX];
    char org[DSC_NAME_MAX], team[DSC_NAME_MAX], user[DSC_NAME_MAX], key[DSC_NAME_MAX];
    char owner[DSC_NAME_MAX]; /* the key id that took it ("" = none) */
    char provider[DSC_NAME_MAX], model[DSC_NAME_MAX], zone[DSC_NAME_MAX], purpose[DSC_NAME_MAX];
    dsc_amounts held;   /* what it holds (or held) */
    int64_t expires_us; /* unix µs */
    bool open;          /* still held (not settled, cancelled or expired) */
} dsc_hold_info;

/* The hold reservation_id names, from memory only (held ones, and finished ones within
 * retain_s); DSC_UNKNOWN_RESERVATION otherwise. Never reads the store. */
dsc_status dsc_ledger_hold_get(dsc_ledger *l, const char *reservation_id, dsc_hold_info *out);

/* Journal one decision (done: as for settle); durable before DSC_OK with durability
 * full and no done. In memory-only ledgers it is counted and dropped.
 * DSC_BAD_REQUEST, DSC_STORE_UNAVAILABLE. */
dsc_status dsc_ledger_record(dsc_ledger *l, const dsc_decision_record *rec, const dsc_done *done,
                             dsc_error *err);

/* A barrier: done (or, without one, the return) once everything queued before this
 * call is committed, under every durability, so that a reader of the store (the
 * decision journal) sees it. Holds are acknowledged before their commit, so a reader
 * that must see the caller's own decisions syncs first. Immediate without a store.
 * DSC_STORE_UNAVAILABLE when the commit fails. */
dsc_status dsc_ledger_sync(dsc_ledger *l, const dsc_done *done, dsc_error *err);

/* --- health --------------------------------------------------------------------- */

typedef struct dsc_ledger_stats {
    size_t budgets, counters, holds, reservations; /* reservations: held + remembered */
    uint64_t decisions, settles, expired;
    uint64_t store_failures; /* batches that failed to commit */
    uint64_t store_batches, store_records;
    bool store_ok; /* the last commit succeeded (or there is no store) */
} dsc_ledger_stats;

/* A snapshot of the ledger's counts. */
void dsc_ledger_stats_get(dsc_ledger *l, dsc_ledger_stats *out);

DSC_API_END

#endif
