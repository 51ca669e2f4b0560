/*
 * status.h - the one status enum of discern, and a small error carrier.
 *
 * Every status has a C name, a stable wire code (what clients switch on, sent in
 * MessagePack-RPC errors and printed by the CLI) and a default message, all from
 * the single table DSC_STATUS_MAP below. 0 is success, errors are negative.
 *
 *   dsc_status_wire(st)      -> "unknown_model"
 *   dsc_status_message(st)   -> "unknown model"
 *   dsc_status_from_wire(s)  -> DSC_UNKNOWN_MODEL (DSC_INTERNAL when unknown)
 *   dsc_error_set(err, st, fmt, ...) fills an optional dsc_error and returns st.
 */
#ifndef DISCERN_STATUS_H
#define DISCERN_STATUS_H

#include "discern/export.h"

#include <stddef.h>

DSC_API_BEGIN

/* XX(name, value, wire code, default message) */
#define DSC_STATUS_MAP(XX)                                                                         \
    XX(OK, 0, "ok", "success")                                                                     \
    XX(BAD_REQUEST, -1, "bad_request", "invalid request")                                          \
    XX(UNKNOWN_PROVIDER, -2, "unknown_provider", "unknown provider")                               \
    XX(UNKNOWN_MODEL, -3, "unknown_model", "unknown model")                                        \
    XX(UNKNOWN_ZONE, -4, "unknown_zone", "unknown zone")                                           \
    XX(UNKNOWN_METRIC, -5, "unknown_metric", "unknown metric")                                     \
    XX(UNKNOWN_RESERVATION, -6, "unknown_reservation", "unknown reservation")                      \
    XX(UNKNOWN_BUDGET, -7, "unknown_budget", "unknown budget")                                     \
    XX(BUDGET_EXCEEDED, -8, "budget_exceeded", "budget exceeded")                                  \
    XX(UNAUTHORIZED, -9, "unauthorized", "unauthorized")                                           \
    XX(TOO_LARGE, -10, "too_large", "too large")                                                   \
    XX(STORE_UNAVAILABLE, -11, "store_unavailable", "store unavailable")                           \
    XX(POLICY_ERROR, -12, "policy_error", "policy error")                                          \
    XX(NOMEM, -13, "out_of_memory", "out of memory")                                               \
    XX(IO, -14, "io_error", "input/output error")                                                  \
    XX(PARSE, -15, "parse_error", "cannot parse")                                                  \
    XX(TIMEOUT, -16, "timeout", "timed out")                                                       \
    XX(UNREACHABLE, -17, "unreachable", "server unreachable")                                      \
    XX(INTERNAL, -18, "internal", "internal error")                                                \
    XX(FORBIDDEN, -19, "forbidden", "outside the caller's scope")

typedef enum dsc_status {
#define DSC_STATUS_ENUM(name, value, wire, msg) DSC_##name = value,
    DSC_STATUS_MAP(DSC_STATUS_ENUM)
#undef DSC_STATUS_ENUM
} dsc_status;

#define DSC_ERROR_MESSAGE_MAX 256

/* An error with a human message that names the offending field or value. */
typedef struct dsc_error {
    dsc_status code;
    char message[DSC_ERROR_MESSAGE_MAX];
} dsc_error;

/* The stable wire code of st ("internal" for values outside the table). */
const char *dsc_status_wire(dsc_status st);
/* The default message of st. */
const char *dsc_status_message(dsc_status st);
/* The status whose wire code is wire; DSC_INTERNAL when none matches. */
dsc_status dsc_status_from_wire(const char *wire);
/* Fill err (may be NULL) with st and a printf-style message; returns st. */
dsc_status dsc_error_set(dsc_error *err, dsc_status st, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Reset err (may be NULL) to DSC_OK with an empty message. */
void dsc_error_clear(dsc_error *err);

DSC_API_END

#endif
