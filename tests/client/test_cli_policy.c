/*
 * test_cli_policy.c - `discern policy test` and `discern policy check`: what they
 * print and the exit codes (0 all good, 1 failures/findings/broken folder, 2 usage).
 *
 * Each test runs build/bin/discern through run.h (stdout and stderr captured); policy folders are
 * written into a fresh temporary directory.
 */
#include "run.h"

#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SHIPPED DISCERN_SOURCE_DIR "/policies"

/* The last run's output: freed by the next run and by the suite's fini, so that
 * tests can reuse one run_result variable. */
static run_result last;

static char dir[64];

static void make_dir(void) {
    snprintf(dir, sizeof dir, "/tmp/discern-clipol-XXXXXX");
    cr_assert_not_null(mkdtemp(dir));
}

static void remove_dir(void) {
    run_free(&last);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    cr_assert_eq(system(cmd), 0);
}

TestSuite(cli_policy, .init = make_dir, .fini = remove_dir);

static void put(const char *name, const char *src) {
    char path[256];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    cr_assert_not_null(f);
    fputs(src, f);
    fclose(f);
}

static run_result run(const char *const *args) {
    run_free(&last);
    last = run_discern(args, NULL);
    return last;
}

#define RUN(...) run((const char *const[]){__VA_ARGS__, NULL})

Test(cli_policy, test_runs_the_shipped_policy_tests_and_exits_zero) {
    run_result r = RUN("policy", "test", SHIPPED);
    cr_assert_eq(r.code, 0, "exit %d\n%s%s", r.code, r.out, r.err);
    int passed = -1, failed = -1;
    cr_assert_eq(sscanf(r.out, "%d passed, %d failed", &passed, &failed), 2, "%s", r.out);
    cr_assert_geq(passed, 20);
    cr_assert_eq(failed, 0);
}

Test(cli_policy, test_prints_each_failure_with_file_line_and_exits_one) {
    put("p.lua", "return { decide = function(req, ctx)\n"
                 "  if req.purpose == 'fun' then return refuse('not for fun') end\n"
                 "end }\n");
    put("p_test.lua", "test('fun is refused', function()\n"
                      "  expect(decide{purpose = 'fun'}).to_refuse('not for fun')\n"
                      "end)\n"
                      "test('work is refused too (wrong)', function()\n"
                      "  expect(decide{purpose = 'work'}).to_refuse()\n"
                      "end)\n");
    run_result r = RUN("policy", "test", dir);
    cr_assert_eq(r.code, 1, "exit %d\n%s%s", r.code, r.out, r.err);
    cr_assert_str_eq(r.out, "p_test.lua:5: expected refuse, got abstain (in test 'work is refused "
                            "too (wrong)')\n1 passed, 1 failed\n");
}

Test(cli_policy, a_policy_that_does_not_compile_is_named_with_its_line) {
    put("p.lua", "return {\n  decide = function(req, ctx)\n    return allow(\n  end }\n");
    run_result r = RUN("policy", "test", dir);
    cr_assert_eq(r.code, 1);
    cr_assert(strstr(r.err, "discern: policy test: p.lua:4:"), "%s", r.err);
    cr_assert(strstr(r.err, "(policy_error)\n"), "%s", r.err);
    r = RUN("policy", "check", dir);
    cr_assert_eq(r.code, 1);
    cr_assert(strstr(r.err, "discern: policy check: p.lua:4:"), "%s", r.err);
}

Test(cli_policy, check_passes_the_shipped_policies) {
    run_result r = RUN("policy", "check", SHIPPED);
    cr_assert_eq(r.code, 0, "exit %d\n%s%s", r.code, r.out, r.err);
    cr_assert(strstr(r.out, "4 policies compiled, no findings (version "), "%s", r.out);
}

Test(cli_policy, check_reports_lint_findings_and_exits_one) {
    put("p.lua", "return { decide = function(req, ctx)\n"
                 "  seen = true\n"
                 "  return ctx.budgett('team')\n"
                 "end }\n");
    run_result r = RUN("policy", "check", dir);
    cr_assert_eq(r.code, 1, "exit %d\n%s%s", r.code, r.out, r.err);
    cr_assert(strstr(r.out, "p.lua:2: assignment to global 'seen'"), "%s", r.out);
    cr_assert(strstr(r.out, "p.lua:3: unknown field ctx.budgett\n2 findings\n"), "%s", r.out);
}

Test(cli_policy, usage_errors_exit_two) {
    run_result r = RUN("policy");
    cr_assert_eq(r.code, 2);
    r = RUN("policy", "frobnicate");
    cr_assert_eq(r.code, 2);
    cr_assert(strstr(r.err, "unknown action 'frobnicate'"), "%s", r.err);
    r = RUN("policy", "test", "a", "b");
    cr_assert_eq(r.code, 2);
    r = RUN("policy", "--help");
    cr_assert_eq(r.code, 0);
    cr_assert(strstr(r.out, "usage: discern policy test"), "%s", r.out);
}
