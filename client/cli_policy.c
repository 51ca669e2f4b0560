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

#include <stdbool.h>
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
static int open_catalog(const cli_ctx *cx, dsc_catalog **out) {
    const char *flag = cx->data;
    char dir[DSC_PATH_MAX];
    dsc_error err = {0};
    *out = NULL;
    if (dsc_paths_data_dir(flag, dir, sizeof dir, &err) == DSC_OK)
        *out = dsc_catalog_load(dir, &err);
    if (!*out && flag) return cli_fail(cx, err.code, "%s", err.message);
    return CLI_EXIT_OK;
}

static int run_tests(const cli_ctx *cx, const char *dir) {
    dsc_catalog *cat;
    int rc = open_catalog(cx, &cat);
    if (rc != CLI_EXIT_OK) return rc;
    dsc_policy_test_report rep;
    dsc_error err = {0};
    dsc_status st = dsc_policy_run_tests(dir, cat, print_line, NULL, &rep, &err);
    dsc_catalog_free(cat);
    if (st != DSC_OK) return cli_fail_status(cx, st, &err);
    printf("%d passed, %d failed\n", rep.passed, rep.failed);
    return rep.failed ? CLI_EXIT_FAIL : CLI_EXIT_OK;
}

static int run_check(const cli_ctx *cx, const char *dir) {
    dsc_error err = {0};
    int n = dsc_policy_check(dir, print_line, NULL, &err);
    if (n < 0) return cli_fail_status(cx, err.code, &err);
    dsc_policy_set *set = dsc_policy_set_load(dir, &err);
    if (!set) return cli_fail_status(cx, err.code, &err);
    if (n == 0)
        printf("%d policies compiled, no findings (version %s)\n", dsc_policy_set_count(set),
               dsc_policy_set_version(set));
    else
        printf("%d finding%s\n", n, n == 1 ? "" : "s");
    dsc_policy_set_unref(set);
    return n ? CLI_EXIT_FAIL : CLI_EXIT_OK;
}

int cli_policy(cli_ctx *cx, int argc, char **argv) {
    const char *action = argc > 1 ? argv[1] : NULL, *dir = NULL;
    if (!action || !strcmp(action, "--help") || !strcmp(action, "-h")) {
        bool asked = action || cx->help;
        fputs(policy_usage, asked ? stdout : stderr);
        return asked ? CLI_EXIT_OK : CLI_EXIT_USAGE;
    }
    if (strcmp(action, "test") && strcmp(action, "check"))
        return cli_fail(cx, DSC_BAD_REQUEST, "unknown action '%s' (test or check)", action);
    cli_subcommand(cx, action);
    const cli_flag flags[] = {{.name = NULL, .value = &dir}};
    int rc = cli_parse_flags(cx, argc - 1, argv + 1, flags, 1, NULL);
    if (rc != CLI_EXIT_OK) return rc;
    if (cx->help) return fputs(policy_usage, stdout), CLI_EXIT_OK;
    if (!dir) dir = "policies";
    if (!strcmp(action, "test")) return run_tests(cx, dir);
    if (cx->data) return cli_fail(cx, DSC_BAD_REQUEST, "--data is not used");
    return run_check(cx, dir);
}
