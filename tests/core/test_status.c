/* test_status.c - the status table: wire codes round-trip, errors carry messages. */
#include "discern/status.h"

#include <criterion/criterion.h>
#include <string.h>

Test(status, wire_codes_round_trip_through_the_table) {
    cr_assert_str_eq(dsc_status_wire(DSC_UNKNOWN_MODEL), "unknown_model");
    cr_assert_eq(dsc_status_from_wire("unknown_model"), DSC_UNKNOWN_MODEL);
    cr_assert_eq(dsc_status_from_wire("store_unavailable"), DSC_STORE_UNAVAILABLE);
    cr_assert_eq(dsc_status_from_wire("ok"), DSC_OK);
}

Test(status, unknown_values_map_to_internal) {
    cr_assert_str_eq(dsc_status_wire((dsc_status)-999), "internal");
    cr_assert_eq(dsc_status_from_wire("no_such_code"), DSC_INTERNAL);
    cr_assert_eq(dsc_status_from_wire(NULL), DSC_INTERNAL);
}

Test(status, error_set_formats_the_message_and_returns_the_code) {
    dsc_error err;
    dsc_status st =
        dsc_error_set(&err, DSC_BAD_REQUEST, "field '%s' must be >= %d", "output_tokens", 0);
    cr_assert_eq(st, DSC_BAD_REQUEST);
    cr_assert_eq(err.code, DSC_BAD_REQUEST);
    cr_assert_str_eq(err.message, "field 'output_tokens' must be >= 0");
    cr_assert_eq(dsc_error_set(NULL, DSC_IO, "ignored"), DSC_IO);
    dsc_error_clear(&err);
    cr_assert_eq(err.code, DSC_OK);
    cr_assert_str_eq(err.message, "");
}
