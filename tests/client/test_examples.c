/*
 * test_examples.c - the two examples of docs/client.md run as a user would run
 * them: examples/gate_chat.c (built with the library) and examples/python/gate.py
 * (python3-msgpack over a plain socket, no library). Each gates a simulated chat
 * completion: settled when allowed, cancelled when the completion fails, never made
 * when refused, throttled or (by default) when discernd is unreachable.
 *
 * python3 and python3-msgpack are build dependencies (scripts/deps.sh installs
 * them): when they are missing these tests fail, they are not skipped.
 */
#include "fake_server.h"
#include "harness.h"
#include "run.h"

#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Kills a discernd left running by a test that failed before its cleanup. */
TestSuite(examples, .fini = th_kill_live_server);

#define GATE_CHAT DISCERN_BINARY_DIR "/bin/gate_chat"
#define GATE_PY DISCERN_SOURCE_DIR "/examples/python/gate.py"
/* Debian's interpreter: python3-msgpack installs into it (another python3 first
 * on PATH, e.g. a pyenv one, would not have the package). */
#define PYTHON "/usr/bin/python3"

#define RUN(...) run_program((const char *const[]){__VA_ARGS__, NULL}, NULL)

/* ------------------------------------------------------------------ C example -- */

Test(examples, c_example_answers_and_settles_when_allowed) {
    fake_server f;
    fake_start(&f, FAKE_SCRIPT, "allow");
    run_result r = RUN(GATE_CHAT, "--server", f.address, "--max-tokens", "100", "hello there");
    cr_assert_eq(r.code, 0, "%s", r.err);
    cr_assert_str_eq(r.out, "You said: \"hello there\". Noted.\n");
    /* input 11/4+1 = 3, output 31/4+1 = 8 */
    fake_expect_log(&f, "check chat 100\nsettle r-1 3 8\n");
    run_free(&r);
    fake_stop(&f);
}

Test(examples, c_example_cancels_a_failed_completion_and_makes_no_refused_one) {
    fake_server f;
    fake_start(&f, FAKE_SCRIPT, "allow,refuse,throttle:3");
    run_result r = RUN(GATE_CHAT, "--server", f.address, "--fail", "hi");
    cr_assert_eq(r.code, 5, "%s", r.err);
    run_free(&r);
    r = RUN(GATE_CHAT, "--server", f.address, "hi");
    cr_assert_eq(r.code, 11, "%s", r.err);
    cr_assert_str_eq(r.out, "");
    run_has(r.err, "refuse: team:* gco2e month exhausted");
    run_free(&r);
    r = RUN(GATE_CHAT, "--server", f.address, "hi");
    cr_assert_eq(r.code, 10, "%s", r.err);
    run_free(&r);
    fake_expect_log(&f, "check chat 256\ncancel r-1\ncheck chat 256\ncheck chat 256\n");
    fake_stop(&f);
}

Test(examples, c_example_applies_its_fallback_when_discernd_is_unreachable) {
    char addr[64];
    snprintf(addr, sizeof addr, "127.0.0.1:%d", fake_closed_port());
    run_result r = RUN(GATE_CHAT, "--server", addr, "hi");
    cr_assert_eq(r.code, 4, "%s", r.err);
    run_has(r.err, "fallback: refuse");
    run_free(&r);
    r = RUN(GATE_CHAT, "--server", addr, "--fallback", "allow", "hi");
    cr_assert_eq(r.code, 0, "%s", r.err);
    run_has(r.out, "You said");
    run_has(r.err, "fallback: allow");
    run_free(&r);
}

/* ------------------------------------------------------------- Python example -- */

Test(examples, python3_msgpack_is_installed) {
    run_result r = RUN(PYTHON, "-c", "import msgpack; print(msgpack.version >= (0, 5))");
    cr_assert_eq(r.code, 0, "python3-msgpack is missing (scripts/deps.sh installs it): %s", r.err);
    cr_assert_str_eq(r.out, "True\n");
    run_free(&r);
}

Test(examples, python_example_pings_a_real_server_over_tcp_and_unix) {
    th_server s;
    th_server_start(&s, NULL);
    char addr[400];
    snprintf(addr, sizeof addr, "127.0.0.1:%d", s.port);
    run_result r = RUN(PYTHON, GATE_PY, "--server", addr, "--ping");
    cr_assert_eq(r.code, 0, "%s", r.err);
    cr_assert_str_eq(r.out, "pong from discernd 0.1.0\n");
    run_free(&r);
    snprintf(addr, sizeof addr, "unix:%s", s.unix_path);
    r = RUN(PYTHON, GATE_PY, "--server", addr, "--ping");
    cr_assert_eq(r.code, 0, "%s", r.err);
    run_free(&r);
    th_server_cleanup(&s);
}

Test(examples, python_example_settles_an_allowed_completion) {
    fake_server f;
    fake_start(&f, FAKE_SCRIPT, "allow");
    run_result r =
        RUN(PYTHON, GATE_PY, "--server", f.address, "--max-tokens", "100", "hello there");
    cr_assert_eq(r.code, 0, "%s", r.err);
    cr_assert_str_eq(r.out, "You said: \"hello there\". Noted.\n");
    run_has(r.err, "settled r-1: 11 tokens");
    fake_expect_log(&f, "check chat 100\nsettle r-1 3 8\n");
    run_free(&r);
    fake_stop(&f);
}

Test(examples, python_example_cancels_fails_and_refuses_like_the_cli) {
    fake_server f;
    fake_start(&f, FAKE_SCRIPT, "allow,refuse,throttle:3");
    run_result r = RUN(PYTHON, GATE_PY, "--server", f.address, "--fail", "hi");
    cr_assert_eq(r.code, 5, "%s", r.err);
    run_free(&r);
    r = RUN(PYTHON, GATE_PY, "--server", f.address, "hi");
    cr_assert_eq(r.code, 11, "%s", r.err);
    run_free(&r);
    r = RUN(PYTHON, GATE_PY, "--server", f.address, "hi");
    cr_assert_eq(r.code, 10, "%s", r.err);
    run_has(r.err, "retry after 3");
    run_free(&r);
    fake_expect_log(&f, "check chat 256\ncancel r-1\ncheck chat 256\ncheck chat 256\n");
    fake_stop(&f);
    char addr[64];
    snprintf(addr, sizeof addr, "127.0.0.1:%d", fake_closed_port());
    r = RUN(PYTHON, GATE_PY, "--server", addr, "hi");
    cr_assert_eq(r.code, 4, "%s", r.err);
    run_free(&r);
}

/* ------------------------------------------------ both against a real server -- */

#define DISCERN DISCERN_BINARY_DIR "/bin/discern"

Test(examples, both_examples_gate_a_completion_on_a_real_server) {
    th_server s;
    th_server_start(&s, NULL);
    char addr[64];
    snprintf(addr, sizeof addr, "127.0.0.1:%d", s.port);
    run_result r =
        RUN(DISCERN, "budget", "set", "--server", addr, "--admin-token", TH_ADMIN_TOKEN,
            "--selector", "user:*", "--metric", "tokens", "--window", "day", "--limit", "1000");
    cr_assert_eq(r.code, 0, "%s", r.err);
    run_free(&r);
    char key[72], reader[72];
    th_create_key(&s, "client", "*", key, NULL);
    th_create_key(&s, "reader", "*", reader, NULL);
    r = RUN(PYTHON, GATE_PY, "--server", addr, "--key", key, "--max-tokens", "100", "hello there");
    cr_assert_eq(r.code, 0, "%s", r.err);
    cr_assert_str_eq(r.out, "You said: \"hello there\". Noted.\n");
    run_has(r.err, ": 11 tokens");
    run_free(&r);
    r = RUN(GATE_CHAT, "--server", addr, "--key", key, "--max-tokens", "100", "hello there");
    cr_assert_eq(r.code, 0, "%s", r.err);
    run_free(&r);
    /* both settled 3 + 8 tokens */
    r = RUN(DISCERN, "budget", "get", "--server", addr, "--key", reader, "--user", "demo",
            "--json");
    cr_assert_eq(r.code, 0, "%s", r.err);
    run_has(r.out, "\"used\": 22.0");
    run_free(&r);
    /* over the budget, the fixture policy refuses: neither makes the call */
    r = RUN(PYTHON, GATE_PY, "--server", addr, "--key", key, "--max-tokens", "5000", "hi");
    cr_assert_eq(r.code, 11, "%s", r.err);
    cr_assert_str_eq(r.out, "");
    run_free(&r);
    r = RUN(GATE_CHAT, "--server", addr, "--key", key, "--max-tokens", "5000", "hi");
    cr_assert_eq(r.code, 11, "%s", r.err);
    run_free(&r);
    th_server_cleanup(&s);
}
