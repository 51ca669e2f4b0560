/*
 * policy.h - the sandboxed Lua policy engine.
 *
 * A policy is a Lua 5.4 file returning {name=, mode="enforce"|"shadow",
 * on_error="refuse"|"allow", decide=function(req, ctx) ... end}. A *set* is every
 * policy of one folder, compiled once, immutable, versioned by a hash of its files and
 * shared by all threads. A *VM* is one sandboxed lua_State per worker thread that
 * runs a set for one request at a time. See docs/policies.md for the Lua API.
 *
 *   dsc_policy_set *set = dsc_policy_set_load("policies", &err);      (once, any thread)
 *   dsc_policy_vm *vm = dsc_policy_vm_new(set, cat, grid, NULL, &err); (per thread)
 *   dsc_policy_vm_decide(vm, &input, &decision);                       (per request)
 *   dsc_policy_vm_free(vm); dsc_policy_set_unref(set);
 *
 * All policies run in file-name order; the most restrictive enforced outcome wins
 * (refuse > throttle > allow), ties keep the first, nil abstains; shadow policies are
 * recorded but never change the outcome. A policy that errors, loops past its time
 * budget or exceeds the memory cap gets its on_error outcome, with file:line in the
 * reason, and is counted in dsc_policy_vm_stats.
 */
#ifndef DISCERN_POLICY_H
#define DISCERN_POLICY_H

#include "discern/export.h"

#include "discern/estimate.h"
#include "discern/grid.h"
#include "discern/ledger.h"
#include "discern/status.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

DSC_API_BEGIN

typedef struct dsc_policy_set dsc_policy_set;
typedef struct dsc_policy_vm dsc_policy_vm;

#define DSC_POLICY_MAX 32        /* policies in one set */
#define DSC_POLICY_NAME_MAX 64   /* policy name, provider */
#define DSC_POLICY_MODEL_MAX 128 /* model name */
#define DSC_POLICY_REASON_MAX 256
#define DSC_POLICY_VERSION_MAX 17 /* 16 hex digits + NUL */

typedef enum dsc_policy_outcome {
    DSC_POLICY_ABSTAIN = 0, /* nil: no opinion */
    DSC_POLICY_ALLOW = 1,
    DSC_POLICY_THROTTLE = 2,
    DSC_POLICY_REFUSE = 3,
} dsc_policy_outcome;

/* Limits of one VM; a zero field takes its default. */
typedef struct dsc_policy_limits {
    size_t memory_bytes;    /* cap on the Lua state's memory; default 32 MiB */
    int64_t time_budget_ns; /* per policy evaluation; default 1 ms */
    int64_t load_budget_ns; /* per policy file's top-level chunk; default 100 ms */
} dsc_policy_limits;

/* One model of a provider, as ctx.models(provider) shows it. */
typedef struct dsc_policy_model {
    const char *name;
    double params_b; /* active parameters, billions (upper bound); 0 = unknown */
} dsc_policy_model;

/* Where ctx.estimate{...} (what-if) and ctx.models(provider) get their answers.
 * dsc_policy_vm_new binds it to the catalogue; tests and `discern policy test` may
 * substitute their own. Both calls must be thread-safe for their ud. */
typedef struct dsc_policy_oracle {
    void *ud;
    /* Compute the footprint of in into out; errors as dsc_estimate_compute. */
    dsc_status (*estimate)(void *ud, const dsc_estimate_input *in, dsc_estimate *out,
                           dsc_error *err);
    /* Write up to max models of provider into out (names stay valid as long as the
     * oracle); returns how many the provider has (may exceed max), -1 if unknown. */
    int (*models)(void *ud, const char *provider, dsc_policy_model *out, int max);
    /* The name models lists for name (an alias resolves to its model), NULL when
     * unknown. May be NULL: names are then taken as given. */
    const char *(*canonical)(void *ud, const char *provider, const char *name);
} dsc_policy_oracle;

/* A free-form tag of the request: key/value strings. */
typedef struct dsc_policy_tag {
    const char *key, *value;
} dsc_policy_tag;

/* One request under review: what decide(req, ctx) sees. */
typedef struct dsc_policy_input {
    dsc_subject subject;
    const char *provider, *model;
    int64_t input_tokens, output_tokens;
    const char *purpose; /* free text; NULL = none */
    const char *zone;    /* NULL = provider default (estimate->zone is used) */
    const dsc_policy_tag *tags;
    int n_tags;
    const dsc_estimate *estimate;    /* NULL = all zero */
    const dsc_budget_state *budgets; /* every budget that applies to the request */
    int n_budgets;
    int64_t now; /* unix seconds; ctx.now() returns it */
} dsc_policy_input;

/* One policy's answer, for the decision record. */
typedef struct dsc_policy_verdict {
    char policy[DSC_POLICY_NAME_MAX];
    dsc_policy_outcome outcome;
    bool shadow; /* evaluated, recorded, never decisive */
    bool error;  /* the outcome is on_error after a failure */
    int64_t retry_after_s;
    char reason[DSC_POLICY_REASON_MAX];
    char suggest_provider[DSC_POLICY_NAME_MAX];
    char suggest_model[DSC_POLICY_MODEL_MAX];
} dsc_policy_verdict;

/* The combined answer. */
typedef struct dsc_decision {
    dsc_policy_outcome outcome; /* ALLOW, THROTTLE or REFUSE, never ABSTAIN */
    char reason[DSC_POLICY_REASON_MAX];
    char policy[DSC_POLICY_NAME_MAX]; /* the winning policy; "" when none decided */
    char version[DSC_POLICY_VERSION_MAX];
    int64_t retry_after_s;
    char suggest_provider[DSC_POLICY_NAME_MAX]; /* "" = no suggestion */
    char suggest_model[DSC_POLICY_MODEL_MAX];
    int n_verdicts;
    dsc_policy_verdict verdicts[DSC_POLICY_MAX];
} dsc_decision;

/* Counters of one VM since its creation (read by the server's /metrics). */
typedef struct dsc_policy_stats {
    uint64_t decisions;        /* dsc_policy_vm_decide calls */
    uint64_t evaluations;      /* policy calls */
    uint64_t errors;           /* policy calls that raised (all causes below included) */
    uint64_t timeouts;         /* ... because the time budget ran out */
    uint64_t memory;           /* ... because the memory cap was hit */
    uint64_t watchdog_signals; /* evaluations that outlived a watchdog tick (~1 ms): the
                                  time budget's hook was switched on by a signal */
    size_t memory_in_use;      /* bytes held by the Lua state now */
} dsc_policy_stats;

/* Compile every policy of dir (every *.lua except *_test.lua and purposes.lua, in
 * file-name order) plus dir/purposes.lua when present. Returns a set with one
 * reference, or NULL with err naming file:line (DSC_POLICY_ERROR) or the I/O error. */
dsc_policy_set *dsc_policy_set_load(const char *dir, dsc_error *err);
/* Take one more reference to set (thread-safe); returns set. */
dsc_policy_set *dsc_policy_set_ref(dsc_policy_set *set);
/* Drop one reference; the last one frees the set. NULL is a no-op. */
void dsc_policy_set_unref(dsc_policy_set *set);
/* The set's version: 16 hex digits of a hash of its files' names and contents. */
const char *dsc_policy_set_version(const dsc_policy_set *set);
/* How many policies the set has, and the name of the i-th (NULL when out of range). */
int dsc_policy_set_count(const dsc_policy_set *set);
const char *dsc_policy_set_name(const dsc_policy_set *set, int i);

/* A new VM running set (takes its own reference). cat may be NULL (what-if estimates
 * then fail in Lua unless an oracle is set); grid may be NULL (ctx.grid is then nil);
 * limits may be NULL (defaults). Returns NULL with err on failure. */
dsc_policy_vm *dsc_policy_vm_new(dsc_policy_set *set, const dsc_catalog *cat, dsc_grid *grid,
                                 const dsc_policy_limits *limits, dsc_error *err);
/* Free vm and its Lua state; NULL is a no-op. */
void dsc_policy_vm_free(dsc_policy_vm *vm);
/* Replace the what-if oracle (copied); NULL restores the catalogue's. */
void dsc_policy_vm_set_oracle(dsc_policy_vm *vm, const dsc_policy_oracle *oracle);
/* Where ctx.log(...) lines go (one call per line, without newline); NULL = dropped. */
void dsc_policy_vm_set_log(dsc_policy_vm *vm,
                           void (*log)(void *ud, const char *policy, const char *line), void *ud);
/* Run every policy of the VM's set on in and combine their answers into out. Returns
 * DSC_OK (policy failures are outcomes, not errors), DSC_BAD_REQUEST for an invalid
 * input (err in out->reason), DSC_NOMEM when the request itself cannot be built. */
dsc_status dsc_policy_vm_decide(dsc_policy_vm *vm, const dsc_policy_input *in, dsc_decision *out);
/* The VM's counters. */
void dsc_policy_vm_stats(const dsc_policy_vm *vm, dsc_policy_stats *out);
/* The VM's set (borrowed). */
dsc_policy_set *dsc_policy_vm_set(const dsc_policy_vm *vm);
/* The class of a free-text purpose under the VM's purposes.lua ("essential",
 * "productive", "discretionary", ...); never NULL, valid until the next call (the VM
 * remembers the classes of its last few purposes). */
const char *dsc_policy_vm_purpose_class(dsc_policy_vm *vm, const char *purpose);

/* "allow", "throttle", "refuse" or "abstain". */
const char *dsc_policy_outcome_name(dsc_policy_outcome o);

/* The result of running a folder's policy tests. */
typedef struct dsc_policy_test_report {
    int passed, failed;
} dsc_policy_test_report;

/* Run every *_test.lua of dir against the policies of dir, with fake budgets and a
 * fake clock. cat may be NULL. Each failure is passed to on_failure as "file:line:
 * message" (may be NULL). Returns DSC_OK when the tests ran (see report for their
 * result), or the load error of the policies with err filled. */
dsc_status dsc_policy_run_tests(const char *dir, const dsc_catalog *cat,
                                void (*on_failure)(void *ud, const char *line), void *ud,
                                dsc_policy_test_report *report, dsc_error *err);

/* Compile dir's policies and lint them without running anything: unknown ctx fields,
 * writes to globals inside functions. Each finding goes to on_finding as "file:line:
 * message". Returns the number of findings, or -1 with err when loading fails. */
int dsc_policy_check(const char *dir, void (*on_finding)(void *ud, const char *line), void *ud,
                     dsc_error *err);

DSC_API_END

#endif
