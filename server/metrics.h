/*
 * metrics.h - what each worker counts (relaxed atomics and a labelled table) and the
 * Prometheus exposition of it all (metrics.c).
 */
#ifndef DISCERN_SERVER_METRICS_H
#define DISCERN_SERVER_METRICS_H

#include "discern/policy.h"

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct dsc__worker dsc__worker;
typedef struct dsc_server dsc_server;

/* Upper bounds (µs) of the check-latency histogram buckets (metrics.c). */
#define DSC__LATENCY_BUCKETS 12

/* Counters one worker owns and anyone may read (relaxed atomics). */
typedef struct dsc__counters {
    atomic_uint_fast64_t requests;        /* requests and notifications dispatched */
    atomic_uint_fast64_t errors;          /* error replies, all kinds */
    atomic_uint_fast64_t protocol_errors; /* frames that were not valid requests */
    atomic_uint_fast64_t closed_broken;   /* connections closed for a broken stream */
    atomic_uint_fast64_t ledger_writes;   /* calls of M_WRITES_LEDGER methods */
    atomic_uint_fast64_t decisions[4];    /* by dsc_policy_outcome (ALLOW..REFUSE) */
    atomic_uint_fast64_t unenforced;      /* allowed with the store down, failure_mode open */
    atomic_uint_fast64_t policy_errors;   /* this worker's VMs, summed over reloads */
    atomic_uint_fast64_t policy_slow;     /* evaluations that outlived a watchdog tick, the same */
    atomic_uint_fast64_t latency[DSC__LATENCY_BUCKETS + 1]; /* checks per bucket (+Inf last) */
    atomic_uint_fast64_t latency_sum_us;
    atomic_uint_fast64_t store_ops, store_us; /* ledger calls that touch the store */
} dsc__counters;

/* Decisions counted by (outcome, policy, purpose class), for /metrics. */
#define DSC__LABELS_MAX 128
typedef struct dsc__label_count {
    bool shadow; /* a shadow policy's verdict (purpose_class ""), not a decision */
    int outcome;
    char policy[DSC_POLICY_NAME_MAX];
    char purpose_class[32];
    uint64_t count;
} dsc__label_count;

/* Metrics (metrics.c), called on the worker's thread. */
void dsc__count_decision(dsc__worker *w, dsc_policy_outcome outcome, const char *policy,
                         const char *purpose, bool unenforced, int64_t latency_us);
void dsc__count_store(dsc__worker *w, int64_t us);
/* One verdict of a shadow policy (discern_shadow_verdicts_total). */
void dsc__count_shadow(dsc__worker *w, const char *policy, dsc_policy_outcome outcome);
void dsc__count_policy(dsc__worker *w);
/* Write a fresh decision id ("d-...", unique across workers and restarts). */
void dsc__new_decision_id(dsc__worker *w, char *out, size_t cap);

/* The Prometheus text exposition of the server's metrics; caller frees. NULL on OOM. */
char *dsc__metrics_render(dsc_server *srv, size_t *len);

#endif
