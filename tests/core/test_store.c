/* test_store.c - the store's table of backends: a target goes to the backend that
 * accepts it, one no backend accepts is refused naming it, and every call reaches
 * the backend through its operations. */
#include "discern/ledger.h"

#include "../../core/store.h"

#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

static void temp_db(char *path, size_t len) {
    char dir[512];
    snprintf(dir, sizeof dir, "%s/ledger-tests", DISCERN_BINARY_DIR);
    mkdir(dir, 0755);
    snprintf(dir, sizeof dir, "%s/ledger-tests/XXXXXX", DISCERN_BINARY_DIR);
    cr_assert(mkdtemp(dir), "mkdtemp");
    snprintf(path, len, "%s/discern.db", dir);
}

Test(store, a_target_no_backend_accepts_is_refused_naming_it) {
    dsc_ledger_config cfg = {.store_path = "nosuch://db.example/x"};
    dsc_error err;
    cr_assert_null(dsc_ledger_new(&cfg, &err));
    cr_assert_eq(err.code, DSC_BAD_REQUEST);
    cr_assert(strstr(err.message, "nosuch://db.example/x"), "%s", err.message);
}

Test(store, a_file_path_opens_the_sqlite_backend) {
    char path[600];
    temp_db(path, sizeof path);
    dsc__store_options o = {.durability = DSC_DURABILITY_FULL};
    dsc_error err;
    dsc__store *s = dsc__store_open(path, &o, &err);
    cr_assert(s, "%s", err.message);
    cr_assert_eq(s->type, &dsc__store_sqlite);
    cr_assert_str_eq(s->type->name, "sqlite");
    cr_assert(dsc__store_healthy(s));
    dsc__store_close(s);
    struct stat sb;
    cr_assert_eq(stat(path, &sb), 0, "the sqlite backend made no file at %s", path);
}

/* Every backend in the table fills every operation the ledger calls (exec may be
 * absent: dsc__store_exec then refuses). */
Test(store, every_backend_fills_the_operations_the_ledger_calls) {
    size_t n = 0;
    for (const dsc__store_type *const *t = dsc__store_types; *t; t++, n++) {
        const dsc__store_type *b = *t;
        cr_assert(b->name && b->accepts && b->open && b->load && b->start && b->append && b->wait &&
                      b->history && b->history_tail && b->charge_seq && b->find_reservation &&
                      b->healthy && b->counts && b->close,
                  "backend %s misses an operation", b->name ? b->name : "?");
    }
    cr_assert_geq(n, 1);
}
