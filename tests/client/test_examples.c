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

#include <criterion/criterion.h>
#include <signal.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

/* The discernd of the running test: the suite's fini kills it even when an
 * assertion failed before th_server_cleanup (it would hold the test's pipes). */
static th_server *live_server;

static void kill_live_server(void) {
    if (live_server && live_server->pid > 0) {
        kill(live_server->pid, SIGKILL);
        waitpid(live_server->pid, NULL, 0);
        live_server->pid = 0;
    }
}

TestSuite(examples, .fini = kill_live_server);

static void start_server(th_server *s, const char *extra) {
    th_server_start(s, extra);
    live_server = s;
}

#define GATE_CHAT DISCERN_BINARY_DIR "/bin/gate_chat"
#define GATE_PY DISCERN_SOURCE_DIR "/examples/python/gate.py"
/* Debian's interpreter: python3-msgpack installs into it (another python3 first
 * on PATH, e.g. a pyenv one, would not have the package). */
#define PYTHON "/usr/bin/python3"

typedef struct run_result {
    int code;
    char *out, *err;
} run_result;

static char *slurp(int fd) {
    size_t cap = 1 << 16, len = 0;
    char *buf = malloc(cap);
    cr_assert_not_null(buf);
    lseek(fd, 0, SEEK_SET);
    ssize_t n;
    while ((n = read(fd, buf + len, cap - len - 1)) > 0)
        len += (size_t)n;
    buf[len] = '\0';
    close(fd);
    return buf;
}

static int scratch_fd(void) {
    char path[] = "/tmp/discern-example-XXXXXX";
    int fd = mkstemp(path);
    cr_assert_geq(fd, 0);
    unlink(path);
    return fd;
}

static run_result run(const char *const *argv) {
    int out = scratch_fd(), err = scratch_fd();
    pid_t pid = fork();
    cr_assert_geq(pid, 0);
    if (pid == 0) {
        dup2(out, 1);
        dup2(err, 2);
        execvp(argv[0], (char *const *)argv);
        _exit(127);
    }
    int status = 0;
    waitpid(pid, &status, 0);
    cr_assert(WIFEXITED(status), "%s did not exit normally (status %d)", argv[0], status);
    return (run_result){WEXITSTATUS(status), slurp(out), slurp(err)};
}

#define RUN(...) run((const char *const[]){__VA_ARGS__, NULL})

static void done(run_result *r) {
    free(r->out);
    free(r->err);
}

static void has(const char *text, const char *frag) {
    cr_assert_not_null(strstr(text, frag), "'%s' not in:\n%s", frag, text);
}

static void expect_log(const fake_server *f, const char *want) {
    char *log = fake_log(f);
    cr_assert_str_eq(log, want);
    free(log);
}

static int closed_port(void) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    cr_assert(bind(fd, (struct sockaddr *)&a, sizeof a) == 0);
    socklen_t len = sizeof a;
    getsockname(fd, (struct sockaddr *)&a, &len);
    close(fd);
    return ntohs(a.sin_port);
}

/* ------------------------------------------------------------------ C example -- */

Test(examples, c_example_answers_and_settles_when_allowed) {
    fake_server f;
    fake_start(&f, FAKE_SCRIPT, "allow");
    run_result r = RUN(GATE_CHAT, "--server", f.address, "--max-tokens", "100", "hello there");
    cr_assert_eq(r.code, 0, "%s", r.err);
    cr_assert_str_eq(r.out, "You said: \"hello there\". Noted.\n");
    /* input 11/4+1 = 3, output 31/4+1 = 8 */
    expect_log(&f, "check chat 100\nsettle r-1 3 8\n");
    done(&r);
    fake_stop(&f);
}

Test(examples, c_example_cancels_a_failed_completion_and_makes_no_refused_one) {
    fake_server f;
    fake_start(&f, FAKE_SCRIPT, "allow,refuse,throttle:3");
    run_result r = RUN(GATE_CHAT, "--server", f.address, "--fail", "hi");
    cr_assert_eq(r.code, 5, "%s", r.err);
    done(&r);
    r = RUN(GATE_CHAT, "--server", f.address, "hi");
    cr_assert_eq(r.code, 11, "%s", r.err);
    cr_assert_str_eq(r.out, "");
    has(r.err, "refuse: team:* gco2e month exhausted");
    done(&r);
    r = RUN(GATE_CHAT, "--server", f.address, "hi");
    cr_assert_eq(r.code, 10, "%s", r.err);
    done(&r);
    expect_log(&f, "check chat 256\ncancel r-1\ncheck chat 256\ncheck chat 256\n");
    fake_stop(&f);
}

Test(examples, c_example_applies_its_fallback_when_discernd_is_unreachable) {
    char addr[64];
    snprintf(addr, sizeof addr, "127.0.0.1:%d", closed_port());
    run_result r = RUN(GATE_CHAT, "--server", addr, "hi");
    cr_assert_eq(r.code, 4, "%s", r.err);
    has(r.err, "fallback: refuse");
    done(&r);
    r = RUN(GATE_CHAT, "--server", addr, "--fallback", "allow", "hi");
    cr_assert_eq(r.code, 0, "%s", r.err);
    has(r.out, "You said");
    has(r.err, "fallback: allow");
    done(&r);
}

/* ------------------------------------------------------------- Python example -- */

Test(examples, python3_msgpack_is_installed) {
    run_result r = RUN(PYTHON, "-c", "import msgpack; print(msgpack.version >= (0, 5))");
    cr_assert_eq(r.code, 0, "python3-msgpack is missing (scripts/deps.sh installs it): %s", r.err);
    cr_assert_str_eq(r.out, "True\n");
    done(&r);
}

Test(examples, python_example_pings_a_real_server_over_tcp_and_unix) {
    th_server s;
    start_server(&s, NULL);
    char addr[400];
    snprintf(addr, sizeof addr, "127.0.0.1:%d", s.port);
    run_result r = RUN(PYTHON, GATE_PY, "--server", addr, "--ping");
    cr_assert_eq(r.code, 0, "%s", r.err);
    cr_assert_str_eq(r.out, "pong from discernd 0.1.0\n");
    done(&r);
    snprintf(addr, sizeof addr, "unix:%s", s.unix_path);
    r = RUN(PYTHON, GATE_PY, "--server", addr, "--ping");
    cr_assert_eq(r.code, 0, "%s", r.err);
    done(&r);
    th_server_cleanup(&s);
}

Test(examples, python_example_settles_an_allowed_completion) {
    fake_server f;
    fake_start(&f, FAKE_SCRIPT, "allow");
    run_result r =
        RUN(PYTHON, GATE_PY, "--server", f.address, "--max-tokens", "100", "hello there");
    cr_assert_eq(r.code, 0, "%s", r.err);
    cr_assert_str_eq(r.out, "You said: \"hello there\". Noted.\n");
    has(r.err, "settled r-1: 11 tokens");
    expect_log(&f, "check chat 100\nsettle r-1 3 8\n");
    done(&r);
    fake_stop(&f);
}

Test(examples, python_example_cancels_fails_and_refuses_like_the_cli) {
    fake_server f;
    fake_start(&f, FAKE_SCRIPT, "allow,refuse,throttle:3");
    run_result r = RUN(PYTHON, GATE_PY, "--server", f.address, "--fail", "hi");
    cr_assert_eq(r.code, 5, "%s", r.err);
    done(&r);
    r = RUN(PYTHON, GATE_PY, "--server", f.address, "hi");
    cr_assert_eq(r.code, 11, "%s", r.err);
    done(&r);
    r = RUN(PYTHON, GATE_PY, "--server", f.address, "hi");
    cr_assert_eq(r.code, 10, "%s", r.err);
    has(r.err, "retry after 3");
    done(&r);
    expect_log(&f, "check chat 256\ncancel r-1\ncheck chat 256\ncheck chat 256\n");
    fake_stop(&f);
    char addr[64];
    snprintf(addr, sizeof addr, "127.0.0.1:%d", closed_port());
    r = RUN(PYTHON, GATE_PY, "--server", addr, "hi");
    cr_assert_eq(r.code, 4, "%s", r.err);
    done(&r);
}

/* ------------------------------------------------ both against a real server -- */

#define DISCERN DISCERN_BINARY_DIR "/bin/discern"

Test(examples, both_examples_gate_a_completion_on_a_real_server) {
    th_server s;
    start_server(&s, NULL);
    char addr[64];
    snprintf(addr, sizeof addr, "127.0.0.1:%d", s.port);
    run_result r =
        RUN(DISCERN, "budget", "set", "--server", addr, "--admin-token", TH_ADMIN_TOKEN,
            "--selector", "user:*", "--metric", "tokens", "--window", "day", "--limit", "1000");
    cr_assert_eq(r.code, 0, "%s", r.err);
    done(&r);
    r = RUN(PYTHON, GATE_PY, "--server", addr, "--max-tokens", "100", "hello there");
    cr_assert_eq(r.code, 0, "%s", r.err);
    cr_assert_str_eq(r.out, "You said: \"hello there\". Noted.\n");
    has(r.err, ": 11 tokens");
    done(&r);
    r = RUN(GATE_CHAT, "--server", addr, "--max-tokens", "100", "hello there");
    cr_assert_eq(r.code, 0, "%s", r.err);
    done(&r);
    /* both settled 3 + 8 tokens */
    r = RUN(DISCERN, "budget", "get", "--server", addr, "--user", "demo", "--json");
    cr_assert_eq(r.code, 0, "%s", r.err);
    has(r.out, "\"used\": 22.0");
    done(&r);
    /* over the budget, the fixture policy refuses: neither makes the call */
    r = RUN(PYTHON, GATE_PY, "--server", addr, "--max-tokens", "5000", "hi");
    cr_assert_eq(r.code, 11, "%s", r.err);
    cr_assert_str_eq(r.out, "");
    done(&r);
    r = RUN(GATE_CHAT, "--server", addr, "--max-tokens", "5000", "hi");
    cr_assert_eq(r.code, 11, "%s", r.err);
    done(&r);
    th_server_cleanup(&s);
}
