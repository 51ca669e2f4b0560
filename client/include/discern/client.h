/*
 * client.h - libdiscern-client: ask discernd before every AI call.
 *
 * A blocking MessagePack-RPC client for the protocol of docs/protocol.md. Every
 * call takes the handle's timeout (connect + send + receive), reconnects once
 * when it finds the connection broken, and reports any failure as a dsc_status
 * (status.h) plus a message. Requests and results are plain C structs: nothing of
 * MessagePack shows here.
 *
 *   dsc_client *c = dsc_client_new("127.0.0.1:7878", NULL, &err);   or "unix:/path"
 *   dsc_client_check_request rq = {.subject = {.team = "infra", .user = "ana"},
 *       .provider = "openai", .model = "gpt-4o", .output_tokens = 800,
 *       .purpose = "code-review"};
 *   dsc_client_check_result r;
 *   if (dsc_client_check(c, &rq, &r, &err) == DSC_OK && r.decision == DSC_DECISION_ALLOW) {
 *       ... call the AI ...
 *       dsc_client_settle_request s = {.reservation = r.reservation, .input_tokens = 1200,
 *                                      .output_tokens = 640};
 *       dsc_client_settle(c, &s, NULL, &err);
 *   }
 *   dsc_client_check_result_clear(&r);
 *   dsc_client_free(c);
 *
 * Pipelining: dsc_client_pipeline() sends many calls in one write and matches the
 * replies by msgid; every single-call function is a pipeline of one.
 *
 * Threads: a handle is NOT thread-safe. Use one handle per thread (handles are
 * cheap: one socket each); distinct handles never share state.
 *
 * Ownership: strings in requests are borrowed for the duration of the call.
 * Results are filled by the call; the arrays inside them (budgets, policies) are
 * heap-allocated and released by the matching *_clear function. A result is
 * always left valid to clear, also on failure.
 */
#ifndef DISCERN_CLIENT_H
#define DISCERN_CLIENT_H

#include "discern/export.h"

#include "discern/status.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

DSC_API_BEGIN

#ifdef __cplusplus
extern "C" {
#endif

typedef struct dsc_client dsc_client;

/* Connection settings; a zeroed struct (or NULL) means the defaults. */
typedef struct dsc_client_options {
    int timeout_ms;          /* per call, connect included; default 2000 */
    size_t max_reply_bytes;  /* a larger reply is DSC_TOO_LARGE; default 1 MiB */
    const char *admin_token; /* sent with `auth` after every (re)connect; NULL = none */
    const char *key;         /* an API key token ("dsk_..."), sent with `auth` after every
                                (re)connect when admin_token is NULL; NULL = none */
} dsc_client_options;

#define DSC_CLIENT_DEFAULT_TIMEOUT_MS 2000
#define DSC_CLIENT_DEFAULT_MAX_REPLY (1u << 20)

/* ------------------------------------------------------------- shared shapes -- */

typedef struct dsc_client_subject {
    const char *org, *team, *user, *key; /* NULL or "" = not given; one at least */
} dsc_client_subject;

typedef struct dsc_client_range {
    double min, max;
} dsc_client_range;

/* kWh, kgCO2eq, kgSbeq, MJ, L, as the protocol's "impacts". */
typedef struct dsc_client_impacts {
    dsc_client_range energy_kwh, gwp_kgco2eq, adpe_kgsbeq, pe_mj, wcf_l;
} dsc_client_impacts;

/* One budget: a budget_state (check, settle, budget.get) or a definition
 * (budget.list, budget.set: counter is "", amounts other than limit are 0). */
typedef struct dsc_client_budget {
    char selector[128]; /* "team:*" */
    char counter[128];  /* "team:infra" */
    char metric[16];    /* "gco2e" */
    char window[40];    /* "month", "rolling:1h", "rate:100/1m" */
    char unit[16];      /* definitions only: "g" */
    double limit, used, held, remaining, request;
    int64_t resets_at; /* unix seconds; 0 when not given */
    bool would_exceed;
} dsc_client_budget;

typedef struct dsc_client_budgets {
    dsc_client_budget *items; /* owned; release with dsc_client_budgets_clear */
    size_t count;
} dsc_client_budgets;

/* Free the array and reset to empty; NULL is a no-op. */
void dsc_client_budgets_clear(dsc_client_budgets *b);

/* --------------------------------------------------------------------- check -- */

typedef enum dsc_decision {
    DSC_DECISION_ALLOW = 0,
    DSC_DECISION_THROTTLE = 1,
    DSC_DECISION_REFUSE = 2,
} dsc_decision;

/* "allow", "throttle" or "refuse" ("?" for any other value). */
const char *dsc_decision_name(dsc_decision d);

typedef struct dsc_client_check_request {
    dsc_client_subject subject; /* required */
    const char *provider;       /* required: "openai" */
    const char *model;          /* required */
    int64_t input_tokens;       /* >= 0 */
    int64_t output_tokens;      /* >= 0, the expected upper bound */
    const char *purpose;        /* required: "code-review" */
    const char *zone;           /* NULL = the provider's */
    const char *const *tags;    /* n_tags key/value pairs: {"k1","v1","k2","v2"} */
    size_t n_tags;
    bool no_reserve;        /* true: decide only, hold nothing (reserve = false) */
    const char *request_id; /* idempotency key; NULL = the library makes one, so
                               that a retried check never reserves twice */
    int ttl_s;              /* hold lifetime 1..86400; 0 = the server's default */
    bool budgets;           /* true: the result lists every matching budget's state
                               (the server leaves them out unless asked) */
    /* Estimate inputs (docs/methodology.md); 0 / NULL = not sent. */
    int64_t cached_input_tokens; /* of input_tokens, served from a prompt cache */
    int64_t reasoning_tokens;    /* hidden reasoning tokens, counted as output */
    const char *method;          /* "ecologits" or "discern"; NULL = the server's */
} dsc_client_check_request;

typedef struct dsc_client_check_result {
    dsc_decision decision;
    char reason[512];
    char policy[128];
    char policy_version[64];
    char decision_id[128];
    char zone[8];
    dsc_client_impacts estimate;
    dsc_client_budgets budgets;
    double retry_after_s;      /* with throttle; 0 otherwise */
    char suggest_provider[64]; /* "" when no suggestion */
    char suggest_model[128];
    char reservation[128]; /* "" when nothing was reserved */
    int64_t expires_at;    /* with reservation */
    bool unenforced;       /* the store was down and failure_mode = open */
} dsc_client_check_result;

/* Release what a check result owns and zero it; NULL is a no-op. */
void dsc_client_check_result_clear(dsc_client_check_result *r);

/* ------------------------------------------------------------ settle, cancel -- */

typedef struct dsc_client_settle_request {
    const char *reservation; /* required, from check */
    int64_t input_tokens;    /* actual, >= 0 */
    int64_t output_tokens;   /* actual, >= 0 */
    double latency_s;        /* measured; <= 0 = not given */
    /* Optional, used only when the server no longer knows the reservation (restart,
     * long expired): what to estimate and whom to charge. NULL/empty = not sent. */
    const char *provider, *model, *zone;
    dsc_client_subject subject;
    /* As in the check (the server does not remember its method); 0 / NULL = not sent. */
    int64_t cached_input_tokens, reasoning_tokens;
    const char *method;
} dsc_client_settle_request;

/* What a settle charged, one field per metric, in the metric's unit. */
typedef struct dsc_client_amounts {
    double energy_wh, gco2e, water_ml, pe_mj, cost, tokens, requests;
} dsc_client_amounts;

typedef struct dsc_client_settle_result {
    char reservation[128];
    char settled[16]; /* "reserved", "repeated" (nothing charged), "late", "unreserved" */
    dsc_client_amounts charged;
    dsc_client_impacts estimate;
    dsc_client_budgets budgets;
} dsc_client_settle_result;

void dsc_client_settle_result_clear(dsc_client_settle_result *r);

typedef struct dsc_client_cancel_result {
    char reservation[128];
    bool released;
} dsc_client_cancel_result;

/* ------------------------------------------------------------------ estimate -- */

typedef struct dsc_client_estimate_request {
    const char *provider, *model; /* required */
    int64_t input_tokens, output_tokens;
    const char *zone; /* NULL = the provider's */
    double latency_s; /* <= 0 = not given */
} dsc_client_estimate_request;

typedef struct dsc_client_estimate_result {
    dsc_client_impacts estimate, usage, embodied;
    char zone[8];
    char method[32];
    char warnings[8][48]; /* codes such as "model-arch-not-released" */
    size_t n_warnings;
} dsc_client_estimate_result;

/* ------------------------------------------------------------------- budgets -- */

typedef struct dsc_client_budget_set_request {
    const char *selector; /* "team:*", "org:acme", ... */
    const char *metric;   /* "gco2e", ... */
    const char *window;   /* "month", "rolling:1h", "rate:100/1m" */
    double limit;         /* >= 0 */
} dsc_client_budget_set_request;

typedef struct dsc_client_budget_set_result {
    dsc_client_budget budget; /* the definition as stored */
    bool created;
} dsc_client_budget_set_result;

/* -------------------------------------------------------- admin and service -- */

typedef struct dsc_client_grid_request {
    const char *zone;
    double gco2e_per_kwh; /* >= 0 */
    int64_t valid_until;  /* unix seconds, in the future */
} dsc_client_grid_request;

typedef struct dsc_client_grid_result {
    char zone[8];
    double gco2e_per_kwh;
    int64_t valid_until;
} dsc_client_grid_result;

typedef struct dsc_client_reload_result {
    char policy_version[64];
    char **policies; /* owned: dsc_client_reload_result_clear */
    size_t n_policies;
} dsc_client_reload_result;

void dsc_client_reload_result_clear(dsc_client_reload_result *r);

typedef struct dsc_client_ping_result {
    char version[32];
    double time; /* the server's clock, unix seconds */
} dsc_client_ping_result;

typedef struct dsc_client_stats_result {
    char version[32];
    char policy_version[64];
    double uptime_s;
    uint64_t workers, connections, connections_rejected, requests, errors, protocol_errors;
    uint64_t ledger_writes, unenforced;
    uint64_t allow, throttle, refuse; /* decisions */
} dsc_client_stats_result;

typedef struct dsc_client_model {
    char provider[64];
    char model[128];
} dsc_client_model;

typedef struct dsc_client_models {
    dsc_client_model *items; /* owned: dsc_client_models_clear */
    size_t count;
} dsc_client_models;

void dsc_client_models_clear(dsc_client_models *m);

typedef struct dsc_client_zone {
    char zone[8];
    double gco2e_per_kwh;         /* the catalogue's annual average */
    double current_gco2e_per_kwh; /* what policies see now (live value while valid) */
    char source[8];               /* "annual" or "live" */
} dsc_client_zone;

typedef struct dsc_client_zones {
    dsc_client_zone *items; /* owned: dsc_client_zones_clear */
    size_t count;
} dsc_client_zones;

void dsc_client_zones_clear(dsc_client_zones *z);

/* ----------------------------------------------------------------- handles -- */

/* A handle for address ("host:port", "[v6]:port" or "unix:/path"); it connects on
 * the first call. NULL with err set (DSC_BAD_REQUEST for a bad address, DSC_NOMEM). */
dsc_client *dsc_client_new(const char *address, const dsc_client_options *opts, dsc_error *err);
/* Close the connection and free the handle; NULL is a no-op. */
void dsc_client_free(dsc_client *c);
/* Connect now (calls connect on demand anyway): DSC_OK, DSC_UNREACHABLE, DSC_TIMEOUT,
 * DSC_UNAUTHORIZED when the admin token is refused. */
dsc_status dsc_client_connect(dsc_client *c, dsc_error *err);
/* Change the per-call timeout (milliseconds, > 0). */
void dsc_client_set_timeout(dsc_client *c, int timeout_ms);
/* How many connections this handle has opened (1 after the first call; more after
 * reconnects). */
unsigned dsc_client_connects(const dsc_client *c);

/* ------------------------------------------------------------------- calls -- *
 * Each returns DSC_OK and fills out (out may be NULL where the result is not
 * needed), or a status with err (may be NULL) holding a message:
 *   DSC_UNREACHABLE  connect refused, or the connection broke and a reconnect
 *                    did not help
 *   DSC_TIMEOUT      no complete reply within the timeout (the connection is
 *                    closed so that a late reply cannot be mistaken for another)
 *   DSC_TOO_LARGE    the reply exceeded max_reply_bytes
 *   DSC_PARSE        the reply is not a protocol response
 *   DSC_BAD_REQUEST  a required request field is missing (nothing was sent)
 *   any other        the server's error code, mapped with dsc_status_from_wire,
 *                    and its message
 */

dsc_status dsc_client_check(dsc_client *c, const dsc_client_check_request *rq,
                            dsc_client_check_result *out, dsc_error *err);
dsc_status dsc_client_settle(dsc_client *c, const dsc_client_settle_request *rq,
                             dsc_client_settle_result *out, dsc_error *err);
/* Cancelling a reservation already settled, cancelled or expired succeeds and
 * changes nothing; DSC_UNKNOWN_RESERVATION for an id never issued. */
dsc_status dsc_client_cancel(dsc_client *c, const char *reservation, dsc_client_cancel_result *out,
                             dsc_error *err);
dsc_status dsc_client_estimate(dsc_client *c, const dsc_client_estimate_request *rq,
                               dsc_client_estimate_result *out, dsc_error *err);
dsc_status dsc_client_budget_get(dsc_client *c, const dsc_client_subject *subject,
                                 dsc_client_budgets *out, dsc_error *err);
/* selector NULL = every budget. */
dsc_status dsc_client_budget_list(dsc_client *c, const char *selector, dsc_client_budgets *out,
                                  dsc_error *err);
/* Admin. */
dsc_status dsc_client_budget_set(dsc_client *c, const dsc_client_budget_set_request *rq,
                                 dsc_client_budget_set_result *out, dsc_error *err);
/* Admin; not retried after the request was sent. */
dsc_status dsc_client_budget_delete(dsc_client *c, const char *selector, const char *metric,
                                    const char *window, dsc_error *err);
/* Admin. */
dsc_status dsc_client_grid_set(dsc_client *c, const dsc_client_grid_request *rq,
                               dsc_client_grid_result *out, dsc_error *err);
/* Admin. */
dsc_status dsc_client_policy_reload(dsc_client *c, dsc_client_reload_result *out, dsc_error *err);
dsc_status dsc_client_ping(dsc_client *c, dsc_client_ping_result *out, dsc_error *err);
dsc_status dsc_client_stats(dsc_client *c, dsc_client_stats_result *out, dsc_error *err);
/* The models of the catalogue, sorted by provider then model; provider NULL = all. */
dsc_status dsc_client_models_list(dsc_client *c, const char *provider, dsc_client_models *out,
                                  dsc_error *err);
/* The zones of the catalogue with their annual and current grid intensity. */
dsc_status dsc_client_zones_list(dsc_client *c, dsc_client_zones *out, dsc_error *err);

/* ------------------------------------------------- keys and the decision journal -- */

typedef struct dsc_client_key_request {
    const char *role;   /* admin, manager, client, reader */
    const char *scope;  /* "*", "org:acme", "org:acme/team:infra", ... */
    const char *label;  /* NULL = none */
    int64_t expires_at; /* unix seconds; 0 = never */
} dsc_client_key_request;

typedef struct dsc_client_key {
    char key_id[24], role[16], scope[200], label[64], created_by[24];
    int64_t created_at, expires_at, revoked_at; /* 0 = never / not revoked */
    char token[80];                             /* key.create only: the secret, shown once */
} dsc_client_key;

typedef struct dsc_client_keys {
    dsc_client_key *items; /* owned; release with dsc_client_keys_clear */
    size_t count;
} dsc_client_keys;

void dsc_client_keys_clear(dsc_client_keys *k);

typedef struct dsc_client_decisions_request {
    dsc_client_subject subject; /* parts NULL = any (the key's scope still applies) */
    double since, until;        /* unix seconds; 0 = unbounded */
    const char *outcome;        /* "allow", "throttle", "refuse"; NULL = any */
    int64_t limit, after;       /* 0 = server default (100) / from the start */
} dsc_client_decisions_request;

#define DSC_CLIENT_VERDICTS_MAX 16
#define DSC_CLIENT_TAGS_MAX 16

typedef struct dsc_client_verdict {
    char policy[64], outcome[16], reason[256];
    bool shadow;
} dsc_client_verdict;

typedef struct dsc_client_decision {
    char decision_id[64], key_id[24], purpose[64], purpose_class[32], provider[64], model[64];
    char org[64], team[64], user[64], key[64], zone[16], reservation[40];
    char outcome[16], policy[64], policy_version[32], reason[512];
    double at; /* unix seconds */
    int64_t input_tokens, output_tokens, seq;
    double est_energy_wh, est_gco2e, est_water_ml; /* upper bounds */
    dsc_client_verdict verdicts[DSC_CLIENT_VERDICTS_MAX];
    size_t n_verdicts;
    char tags[DSC_CLIENT_TAGS_MAX][2][64]; /* key, value */
    size_t n_tags;
} dsc_client_decision;

typedef struct dsc_client_decisions {
    dsc_client_decision *items; /* owned; release with dsc_client_decisions_clear */
    size_t count;
    int64_t next; /* the `after` of the next page; 0 = this was the last */
} dsc_client_decisions;

void dsc_client_decisions_clear(dsc_client_decisions *d);

typedef struct dsc_client_admin_journal_request {
    int64_t limit, after; /* 0 = server default (100) / from the start */
} dsc_client_admin_journal_request;

/* One admin change: a key created or revoked, a budget set or deleted. */
typedef struct dsc_client_admin_change {
    int64_t seq;
    double at;        /* unix seconds */
    char by_key[24];  /* the key id that made it; "admin" or "anonymous" */
    char action[24];  /* key.create, key.revoke, budget.set, budget.delete */
    char target[200]; /* the key id or the budget's selector */
    char detail[256]; /* "role=R scope=S" or "metric=M window=W limit=L" */
} dsc_client_admin_change;

typedef struct dsc_client_admin_journal {
    dsc_client_admin_change *items; /* owned; release with dsc_client_admin_journal_clear */
    size_t count;
    int64_t next; /* the `after` of the next page; 0 = this was the last */
} dsc_client_admin_journal;

void dsc_client_admin_journal_clear(dsc_client_admin_journal *j);

/* Create a key (admin, or a manager inside its scope); out->token is its secret. */
dsc_status dsc_client_key_create(dsc_client *c, const dsc_client_key_request *rq,
                                 dsc_client_key *out, dsc_error *err);
/* The keys the caller may see, inside scope (NULL = all of them); no tokens. */
dsc_status dsc_client_key_list(dsc_client *c, const char *scope, dsc_client_keys *out,
                               dsc_error *err);
/* Revoke a key: it stops working at its connections' next call. */
dsc_status dsc_client_key_revoke(dsc_client *c, const char *key_id, dsc_error *err);
/* One page of the decision journal, inside the caller's scope. */
dsc_status dsc_client_decisions_list(dsc_client *c, const dsc_client_decisions_request *rq,
                                     dsc_client_decisions *out, dsc_error *err);
/* One page of the admin journal, oldest first (admin only). */
dsc_status dsc_client_admin_journal_list(dsc_client *c, const dsc_client_admin_journal_request *rq,
                                         dsc_client_admin_journal *out, dsc_error *err);

typedef struct dsc_client_report_request {
    const char *by;             /* "team", "user", "model" or "purpose" (required) */
    const char *period;         /* "hour", "day", "week", "month"; NULL = day */
    const char *metric;         /* "gco2e", "energy_wh", ...; NULL = gco2e */
    double since, until;        /* unix seconds; 0 = the server's default (30 days) */
    dsc_client_subject subject; /* parts NULL = all of the caller's scope */
} dsc_client_report_request;

typedef struct dsc_client_report_row {
    int64_t period_start; /* unix seconds, UTC */
    char group[200];
    double value; /* in unit */
} dsc_client_report_row;

typedef struct dsc_client_report {
    char by[16], period[16], metric[16], unit[16];
    int64_t since, until;
    dsc_client_report_row *rows; /* owned; release with dsc_client_report_clear */
    size_t count;
    bool truncated; /* the server had more rows than it sends */
} dsc_client_report;

void dsc_client_report_clear(dsc_client_report *r);
/* Usage summed by group and period from the store's charges, inside the caller's
 * scope (reader, manager, admin). */
dsc_status dsc_client_report_get(dsc_client *c, const dsc_client_report_request *rq,
                                 dsc_client_report *out, dsc_error *err);

/* ---------------------------------------------------------------- pipelining -- */

typedef enum dsc_client_method {
    DSC_CALL_CHECK,          /* request dsc_client_check_request,  result dsc_client_check_result */
    DSC_CALL_SETTLE,         /* dsc_client_settle_request          dsc_client_settle_result */
    DSC_CALL_CANCEL,         /* const char (reservation)           dsc_client_cancel_result */
    DSC_CALL_ESTIMATE,       /* dsc_client_estimate_request        dsc_client_estimate_result */
    DSC_CALL_BUDGET_GET,     /* dsc_client_subject                 dsc_client_budgets */
    DSC_CALL_BUDGET_LIST,    /* const char (selector) or NULL      dsc_client_budgets */
    DSC_CALL_BUDGET_SET,     /* dsc_client_budget_set_request      dsc_client_budget_set_result */
    DSC_CALL_BUDGET_DELETE,  /* dsc_client_budget_set_request (limit unused)  none */
    DSC_CALL_GRID_SET,       /* dsc_client_grid_request            dsc_client_grid_result */
    DSC_CALL_POLICY_RELOAD,  /* none                               dsc_client_reload_result */
    DSC_CALL_PING,           /* none                               dsc_client_ping_result */
    DSC_CALL_STATS,          /* none                               dsc_client_stats_result */
    DSC_CALL_MODELS_LIST,    /* const char (provider) or NULL      dsc_client_models */
    DSC_CALL_ZONES_LIST,     /* none                               dsc_client_zones */
    DSC_CALL_KEY_CREATE,     /* dsc_client_key_request             dsc_client_key */
    DSC_CALL_KEY_LIST,       /* const char (scope) or NULL         dsc_client_keys */
    DSC_CALL_KEY_REVOKE,     /* const char (key id)                none */
    DSC_CALL_DECISIONS_LIST, /* dsc_client_decisions_request      dsc_client_decisions */
    DSC_CALL_REPORT,         /* dsc_client_report_request         dsc_client_report */
    DSC_CALL_ADMIN_JOURNAL_LIST, /* dsc_client_admin_journal_request  dsc_client_admin_journal */
} dsc_client_method;

/* One call of a pipeline: the caller sets method, request and result (result may
 * be NULL); the pipeline sets status and err. */
typedef struct dsc_client_call {
    dsc_client_method method;
    const void *request;
    void *result;
    dsc_status status;
    dsc_error err;
} dsc_client_call;

/* Send every call in one go and collect the replies, matched by msgid, within one
 * timeout for the whole batch. Each call gets its own status; the return value is
 * DSC_OK when every call succeeded, otherwise the status of the first that did
 * not (with err a copy of its message). */
dsc_status dsc_client_pipeline(dsc_client *c, dsc_client_call *calls, size_t n, dsc_error *err);

/* --------------------------------------------------------------------- guard -- *
 * The common shape in three calls (guard.c):
 *
 *   dsc_guard_options go = {.fallback = DSC_GUARD_FALLBACK_ALLOW};
 *   dsc_guard_ticket t;
 *   dsc_guard_begin(c, &rq, &go, &t, &err);        check (waits out throttles if asked)
 *   if (t.allowed) {
 *       ok = call_the_ai(&usage);
 *       dsc_guard_end(c, &t, ok ? &usage : NULL, &err);   settle, or cancel on failure
 *   }
 *   dsc_guard_ticket_clear(&t);
 *
 * or dsc_guard_run(c, &rq, &go, callback, ud, &t, &err) which does all of it.
 */

typedef enum dsc_guard_fallback {
    DSC_GUARD_FALLBACK_REFUSE = 0, /* discernd unreachable: do not make the AI call */
    DSC_GUARD_FALLBACK_ALLOW = 1,  /* discernd unreachable: go ahead, unmetered */
} dsc_guard_fallback;

typedef struct dsc_guard_options {
    dsc_guard_fallback fallback; /* applied on DSC_UNREACHABLE and DSC_TIMEOUT only */
    double max_wait_s;           /* > 0: on throttle, sleep retry_after_s and check again
                                    while the total wait stays within this; 0 = no wait */
} dsc_guard_options;

typedef struct dsc_guard_ticket {
    bool allowed;          /* make the AI call */
    bool fallback_applied; /* discernd did not answer: `allowed` is the fallback */
    dsc_status status;     /* DSC_OK, or what went wrong (also when fallback applied) */
    char message[DSC_ERROR_MESSAGE_MAX];
    int checks;                    /* how many checks were sent (more than 1 after throttles) */
    double waited_s;               /* time slept on throttles */
    dsc_client_check_result check; /* the last decision (zeroed when fallback applied) */
    bool finished;                 /* dsc_guard_end was called */
    /* copied from the request, sent with settle so that it is charged even when the
     * server has forgotten the reservation (restart) */
    char provider[64], model[128], zone[8], org[64], team[64], user[64], key[64];
    char method[16]; /* the check's method, so that settle estimates the same way */
} dsc_guard_ticket;

/* What the AI call really used. */
typedef struct dsc_guard_usage {
    int64_t input_tokens, output_tokens;
    double latency_s;                              /* <= 0 = not measured */
    int64_t cached_input_tokens, reasoning_tokens; /* actual; 0 = none */
} dsc_guard_usage;

/* Check rq; fills t. Returns DSC_OK when t holds a decision (the server's, or the
 * fallback when the server was unreachable or timed out: then t->fallback_applied is
 * set and t->status says why); any other status (unknown model, bad request, ...)
 * with err, and t->allowed false. */
dsc_status dsc_guard_begin(dsc_client *c, const dsc_client_check_request *rq,
                           const dsc_guard_options *opts, dsc_guard_ticket *t, dsc_error *err);
/* Finish a ticket: settle its reservation with usage, or cancel it when usage is NULL
 * (the AI call failed). Does nothing (DSC_OK) when there is no reservation (fallback,
 * not allowed, no_reserve, unenforced) or the ticket is already finished. Returns the
 * settle/cancel status; a hold left unsettled expires on the server. */
dsc_status dsc_guard_end(dsc_client *c, dsc_guard_ticket *t, const dsc_guard_usage *usage,
                         dsc_error *err);

/* The caller's AI call: returns 0 on success with *usage filled, non-zero on failure. */
typedef int (*dsc_guard_fn)(void *ud, dsc_guard_usage *usage);

/* begin; when allowed run fn; end with its usage (or cancel when it failed).
 * Returns begin's status when it failed, else end's; *fn_result gets fn's return
 * value (or -1 when fn did not run; fn_result may be NULL). */
dsc_status dsc_guard_run(dsc_client *c, const dsc_client_check_request *rq,
                         const dsc_guard_options *opts, dsc_guard_fn fn, void *ud,
                         dsc_guard_ticket *t, int *fn_result, dsc_error *err);

/* Release what a ticket owns; NULL is a no-op. */
void dsc_guard_ticket_clear(dsc_guard_ticket *t);

#ifdef __cplusplus
}
#endif

DSC_API_END

#endif
