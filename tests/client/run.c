/*
 * run.c - run a program in a child process and capture its output (see run.h).
 */
#include "run.h"

#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

/* Everything in fd from its start, NUL-terminated (caller frees); closes fd. */
static char *slurp(int fd) {
    size_t cap = 1 << 16, len = 0;
    char *buf = malloc(cap);
    cr_assert_not_null(buf);
    lseek(fd, 0, SEEK_SET);
    ssize_t n;
    while ((n = read(fd, buf + len, cap - len - 1)) > 0) {
        len += (size_t)n;
        if (len + 1 == cap) buf = realloc(buf, cap *= 2);
        cr_assert_not_null(buf);
    }
    buf[len] = '\0';
    close(fd);
    return buf;
}

/* A read-write descriptor on an anonymous temporary file. */
static int scratch_fd(void) {
    char path[] = "/tmp/discern-run-XXXXXX";
    int fd = mkstemp(path);
    cr_assert_geq(fd, 0);
    unlink(path);
    return fd;
}

/* In the child: apply the environment edits of run_program. */
static void edit_env(const char *const *env) {
    for (size_t i = 0; env && env[i]; i++) {
        const char *eq = strchr(env[i], '=');
        if (!eq) {
            unsetenv(env[i]);
            continue;
        }
        char name[128];
        snprintf(name, sizeof name, "%.*s", (int)(eq - env[i]), env[i]);
        setenv(name, eq + 1, 1);
    }
}

run_result run_program(const char *const *argv, const char *const *env) {
    int out = scratch_fd(), err = scratch_fd();
    pid_t pid = fork();
    cr_assert_geq(pid, 0);
    if (pid == 0) {
        dup2(out, 1);
        dup2(err, 2);
        edit_env(env);
        execvp(argv[0], (char *const *)argv);
        _exit(127);
    }
    int status = 0;
    waitpid(pid, &status, 0);
    cr_assert(WIFEXITED(status), "%s did not exit normally (status %d)", argv[0], status);
    return (run_result){WEXITSTATUS(status), slurp(out), slurp(err)};
}

run_result run_discern(const char *const *args, const char *const *env) {
    const char *argv[64] = {DISCERN_BINARY_DIR "/bin/discern"};
    size_t n = 1;
    for (; args[n - 1]; n++) {
        cr_assert_lt(n, sizeof argv / sizeof argv[0] - 1, "too many arguments for discern");
        argv[n] = args[n - 1];
    }
    argv[n] = NULL;
    return run_program(argv, env);
}

void run_free(run_result *r) {
    free(r->out);
    free(r->err);
    r->out = r->err = NULL; /* freeing twice is harmless */
}

void run_has(const char *text, const char *frag) {
    cr_assert_not_null(strstr(text, frag), "'%s' not in:\n%s", frag, text);
}
