/*
 * status.c - lookups over DSC_STATUS_MAP and the dsc_error helpers.
 *
 * The table lives in status.h so that names, wire codes and messages cannot drift
 * apart; this file only walks it.
 */
#include "discern/status.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

typedef struct status_row {
    dsc_status code;
    const char *wire;
    const char *message;
} status_row;

static const status_row status_rows[] = {
#define DSC_STATUS_ROW(name, value, wire, msg) {DSC_##name, wire, msg},
    DSC_STATUS_MAP(DSC_STATUS_ROW)
#undef DSC_STATUS_ROW
};

#define STATUS_ROW_COUNT (sizeof status_rows / sizeof status_rows[0])

static const status_row *find_row(dsc_status st) {
    for (size_t i = 0; i < STATUS_ROW_COUNT; i++)
        if (status_rows[i].code == st) return &status_rows[i];
    return NULL;
}

const char *dsc_status_wire(dsc_status st) {
    const status_row *row = find_row(st);
    return row ? row->wire : "internal";
}

const char *dsc_status_message(dsc_status st) {
    const status_row *row = find_row(st);
    return row ? row->message : "internal error";
}

dsc_status dsc_status_from_wire(const char *wire) {
    if (!wire) return DSC_INTERNAL;
    for (size_t i = 0; i < STATUS_ROW_COUNT; i++)
        if (strcmp(status_rows[i].wire, wire) == 0) return status_rows[i].code;
    return DSC_INTERNAL;
}

dsc_status dsc_error_set(dsc_error *err, dsc_status st, const char *fmt, ...) {
    if (!err) return st;
    err->code = st;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err->message, sizeof err->message, fmt, ap);
    va_end(ap);
    return st;
}

void dsc_error_clear(dsc_error *err) {
    if (!err) return;
    err->code = DSC_OK;
    err->message[0] = '\0';
}
