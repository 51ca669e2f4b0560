/*
 * cli_policy.c - `discern policy test [DIR]` and `discern policy check [DIR]`.
 *
 *   discern policy test [DIR] [--data DIR]   run DIR's *_test.lua files (default DIR:
 *                                            policies); one line per failure, then
 *                                            "N passed, N failed"; exit 1 on failure
 *   discern policy check [DIR]               compile and lint DIR's policies without
 *                                            running them; exit 1 on any finding
 *
 * Both refuse a folder whose policies do not compile, naming file:line.
 */
#include "cli.h"

#include "discern/catalog.h"
#include "discern/paths.h"
#include "discern/policy.h"

#include <stdio.h>
#include <string.h>

static const char policy_usage[] =
    "usage: discern policy test [DIR] [--data DIR]\n"
    "       discern policy check [DIR]\n\n"
    "  test    run the *_test.lua files next to the policies of DIR (default: policies)\n"
    "          with fake budgets and a fake clock; prints one line per failure, then\n"
    "          'N passed, N failed'; exits 1 when any test fails\n"
    "  check   compile and lint the policies of DIR without running them: unknown ctx\n"
    "          and req fields, unknown globals, global writes; exits 1 on any finding\n\n"
    "  --data DIR   catalogue directory for estimates in tests (default: $DISCERN_DATA_DIR,\n"
    "               then the data installed next to this program; tests that declare\n"
    "               their models with model{} do not need it)\n";

static void print_line(void *ud, const char *line) {
    (void)ud;
    printf("%s\n", line);
}

/* The catalogue when one can be found; an explicit --data that fails is an error. */
static int open_catalog(const char *flag, dsc_catalog **out) {
    char dir[DSC_PATH_MAX];
    dsc_error err = {0};
    *out = NULL;
    if (dsc_paths_data_dir(flag, dir, sizeof dir, &err) == DSC_OK)
        *out = dsc_catalog_load(dir, &err);
    if (!*out && flag) return cli_fail(CLI_EXIT_FAIL, "%s", err.message);
    return CLI_EXIT_OK;
}

static int run_tests(const char *dir, const char *data) {
    dsc_catalog *cat;
    int rc = open_catalog(data, &cat);
    if (rc != CLI_EXIT_OK) return rc;
    dsc_policy_test_report rep;
    dsc_error err = {0};
    dsc_status st = dsc_policy_run_tests(dir, cat, print_line, NULL, &rep, &err);
    dsc_catalog_free(cat);
    if (st != DSC_OK) return cli_fail(CLI_EXIT_FAIL, "%s", err.message);
    printf("%d passed, %d failed\n", rep.passed, rep.failed);
    return rep.failed ? CLI_EXIT_FAIL : CLI_EXIT_OK;
}

static int run_check(const char *dir) {
    dsc_error err = {0};
    int n = dsc_policy_check(dir, print_line, NULL, &err);
    if (n < 0) return cli_fail(CLI_EXIT_FAIL, "%s", err.message);
    dsc_policy_set *set = dsc_policy_set_load(dir, &err);
    if (!set) return cli_fail(CLI_EXIT_FAIL, "%s", err.message);
    if (n == 0)
        printf("%d policies compiled, no findings (version %s)\n", dsc_policy_set_count(set),
               dsc_policy_set_version(set));
    else
        printf("%d finding%s\n", n, n == 1 ? "" : "s");
    dsc_policy_set_unref(set);
    return n ? CLI_EXIT_FAIL : CLI_EXIT_OK;
}

int cli_policy(int argc, char **argv) {
    const char *action = argc > 1 ? argv[1] : NULL, *dir = NULL, *data = NULL;
    if (!action || !strcmp(action, "--help") || !strcmp(action, "-h")) {
        fputs(policy_usage, action ? stdout : stderr);
        return action ? CLI_EXIT_OK : CLI_EXIT_USAGE;
    }
    for (int i = 2; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            fputs(policy_usage, stdout);
            return CLI_EXIT_OK;
        } else if (!strcmp(argv[i], "--data") && i + 1 < argc) {
            data = argv[++i];
        } else if (argv[i][0] == '-' || dir) {
            return cli_fail(CLI_EXIT_USAGE, "policy: unexpected argument '%s' (see --help)",
                            argv[i]);
        } else {
            dir = argv[i];
        }
    }
    if (!dir) dir = "policies";
    if (!strcmp(action, "test")) return run_tests(dir, data);
    if (!strcmp(action, "check")) {
        if (data) return cli_fail(CLI_EXIT_USAGE, "policy check: --data is not used");
        return run_check(dir);
    }
    return cli_fail(CLI_EXIT_USAGE, "policy: unknown action '%s' (test or check)", action);
}
