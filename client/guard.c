/*
 * guard.c - the discern guard: check -> the caller's AI call -> settle, or cancel.
 *
 * API in discern/client.h (dsc_guard_begin, dsc_guard_end, dsc_guard_run). The guard
 * adds two things to plain calls: a fallback decision when discernd cannot be
 * reached within the timeout (so an outage neither blocks every AI call nor lets
 * them through silently: the ticket says the fallback was applied and why), and
 * waiting out throttles up to a limit.
 */
#include "discern/client.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

static void sleep_s(double s) {
    struct timespec ts = {(time_t)s, (long)((s - (double)(time_t)s) * 1e9)};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

static bool server_silent(dsc_status st) {
    return st == DSC_UNREACHABLE || st == DSC_TIMEOUT;
}

static void apply_fallback(dsc_guard_ticket *t, const dsc_guard_options *opts, dsc_status st,
                           const dsc_error *why) {
    dsc_client_check_result_clear(&t->check);
    t->fallback_applied = true;
    t->allowed = opts->fallback == DSC_GUARD_FALLBACK_ALLOW;
    t->status = st;
    snprintf(t->message, sizeof t->message, "%.220s; fallback: %s", why->message,
             t->allowed ? "allow" : "refuse");
}

static void copy(char *dst, size_t cap, const char *src) {
    snprintf(dst, cap, "%s", src ? src : "");
}

static void keep_request(dsc_guard_ticket *t, const dsc_client_check_request *rq) {
    if (!rq) return;
    copy(t->provider, sizeof t->provider, rq->provider);
    copy(t->model, sizeof t->model, rq->model);
    copy(t->zone, sizeof t->zone, rq->zone);
    copy(t->org, sizeof t->org, rq->subject.org);
    copy(t->team, sizeof t->team, rq->subject.team);
    copy(t->user, sizeof t->user, rq->subject.user);
    copy(t->key, sizeof t->key, rq->subject.key);
    copy(t->method, sizeof t->method, rq->method);
}

/* The wait before the next check, or a negative number when the guard stops. */
static double next_wait(const dsc_guard_ticket *t, const dsc_guard_options *opts) {
    if (t->check.decision != DSC_DECISION_THROTTLE || !(opts->max_wait_s > 0)) return -1;
    double w = t->check.retry_after_s > 0 ? t->check.retry_after_s : 1.0;
    return t->waited_s + w <= opts->max_wait_s ? w : -1;
}

dsc_status dsc_guard_begin(dsc_client *c, const dsc_client_check_request *rq,
                           const dsc_guard_options *opts, dsc_guard_ticket *t, dsc_error *err) {
    static const dsc_guard_options defaults;
    if (!opts) opts = &defaults;
    if (!t) return dsc_error_set(err, DSC_BAD_REQUEST, "no ticket");
    memset(t, 0, sizeof *t);
    keep_request(t, rq);
    for (;;) {
        dsc_error e = {0};
        dsc_client_check_result_clear(&t->check);
        dsc_status st = dsc_client_check(c, rq, &t->check, &e);
        t->checks++;
        if (server_silent(st)) {
            apply_fallback(t, opts, st, &e);
            dsc_error_clear(err);
            return DSC_OK;
        }
        if (st != DSC_OK) {
            t->status = st;
            snprintf(t->message, sizeof t->message, "%s", e.message);
            if (err) *err = e;
            return st;
        }
        double w = next_wait(t, opts);
        if (w < 0) break;
        sleep_s(w);
        t->waited_s += w;
    }
    t->allowed = t->check.decision == DSC_DECISION_ALLOW;
    t->status = DSC_OK;
    snprintf(t->message, sizeof t->message, "%.255s", t->check.reason);
    dsc_error_clear(err);
    return DSC_OK;
}

dsc_status dsc_guard_end(dsc_client *c, dsc_guard_ticket *t, const dsc_guard_usage *usage,
                         dsc_error *err) {
    if (!t) return dsc_error_set(err, DSC_BAD_REQUEST, "no ticket");
    if (t->finished || !t->allowed || t->fallback_applied || !t->check.reservation[0]) {
        t->finished = true;
        dsc_error_clear(err);
        return DSC_OK;
    }
    t->finished = true;
    if (!usage) return dsc_client_cancel(c, t->check.reservation, NULL, err);
    dsc_client_settle_request s = {.reservation = t->check.reservation,
                                   .input_tokens = usage->input_tokens,
                                   .output_tokens = usage->output_tokens,
                                   .latency_s = usage->latency_s,
                                   .provider = t->provider,
                                   .model = t->model,
                                   .zone = t->zone,
                                   .subject = {t->org, t->team, t->user, t->key},
                                   .cached_input_tokens = usage->cached_input_tokens,
                                   .reasoning_tokens = usage->reasoning_tokens,
                                   .method = t->method};
    return dsc_client_settle(c, &s, NULL, err);
}

dsc_status dsc_guard_run(dsc_client *c, const dsc_client_check_request *rq,
                         const dsc_guard_options *opts, dsc_guard_fn fn, void *ud,
                         dsc_guard_ticket *t, int *fn_result, dsc_error *err) {
    if (fn_result) *fn_result = -1;
    if (!fn) return dsc_error_set(err, DSC_BAD_REQUEST, "no function to guard");
    dsc_status st = dsc_guard_begin(c, rq, opts, t, err);
    if (st != DSC_OK || !t->allowed) return st;
    dsc_guard_usage usage = {0};
    int rc = fn(ud, &usage);
    if (fn_result) *fn_result = rc;
    return dsc_guard_end(c, t, rc == 0 ? &usage : NULL, err);
}

void dsc_guard_ticket_clear(dsc_guard_ticket *t) {
    if (!t) return;
    dsc_client_check_result_clear(&t->check);
    memset(t, 0, sizeof *t);
}
