/*
 * run.h - run a program in a child process for the client tests, with stdout and
 * stderr sent to temporary files, and hand back both and the exit status.
 *
 *   const char *env[] = {"DISCERN_SERVER=127.0.0.1:1", "DISCERN_USER", NULL};
 *   run_result r = run_program((const char *const[]){DISCERN, "ping", NULL}, env);
 *   run_has(r.out, "pong");
 *   run_free(&r);
 *
 * The test fails (Criterion assertion) when the program cannot be started or does
 * not exit normally.
 */
#ifndef DISCERN_TEST_RUN_H
#define DISCERN_TEST_RUN_H

typedef struct run_result {
    int code;        /* exit status */
    char *out, *err; /* everything written to stdout and stderr, NUL-terminated, owned */
} run_result;

/* Run argv[0] (searched on PATH when it has no '/') with argv (NULL-terminated);
 * env (NULL-terminated, may be NULL) edits the child's environment first:
 * "NAME=value" sets NAME, a bare "NAME" removes it. */
run_result run_program(const char *const *argv, const char *const *env);
/* Run the `discern` binary of this build with args (NULL-terminated, at most 62)
 * and env as for run_program. */
run_result run_discern(const char *const *args, const char *const *env);
/* Free r's output buffers and clear them (a second call is a no-op). */
void run_free(run_result *r);
/* Fail the test unless frag occurs in text (the message shows text). */
void run_has(const char *text, const char *frag);

#endif
