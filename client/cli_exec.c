/*
 * cli_exec.c - `discern exec [request flags] [--wait] -- CMD ARGS...`: gate any
 * command that calls an AI API.
 *
 * 1. check the request (with --wait, sleep retry_after_s and check again on
 *    throttle while the total wait stays within --max-wait);
 * 2. run CMD only when allowed, with these in its environment:
 *      DISCERN_USAGE_FILE   an empty file (in $TMPDIR, else /tmp) CMD may write its
 *                           real usage to:
 *                           "input_tokens=N output_tokens=N [latency_s=S]
 *                            [cached_input_tokens=N] [reasoning_tokens=N]"
 *                           (whitespace or newlines between the pairs)
 *      DISCERN_RESERVATION  the reservation id ("" when nothing was reserved)
 *      DISCERN_DECISION_ID  the journal key of the decision
 * 3. when CMD exits 0, settle with the usage it wrote (missing values default to
 *    --input-tokens and --output-tokens); when it fails, cancel the hold.
 *
 * Exit status: CMD's own (128 + signal when killed; 127 when it cannot be run) when
 * it ran; otherwise 10 throttle, 11 refuse, 2 usage, 3 unknown provider/model/zone,
 * 4 server unreachable (unless --fallback allow). The guard (guard.c) does the
 * check/settle/cancel; this file only runs the command.
 */
#include "cli_server.h"

#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static const char exec_help[] =
    "usage: discern exec [request flags] [--wait] [--max-wait S] [--fallback allow|refuse]\n"
    "                    -- CMD [ARGS...]\n"
    "\n"
    "Check the request with discernd and run CMD only if it is allowed; then settle\n"
    "with the tokens CMD reports, or cancel the hold if CMD fails. CMD may write its\n"
    "real usage to the file named by $DISCERN_USAGE_FILE, as\n"
    "    input_tokens=N output_tokens=N [cached_input_tokens=N] [reasoning_tokens=N]\n"
    "    [latency_s=S]\n"
    "otherwise --input-tokens, --output-tokens, --cached-tokens and --reasoning-tokens\n"
    "are charged (with the check's --method). CMD also sees\n"
    "$DISCERN_RESERVATION and $DISCERN_DECISION_ID.\n"
    "\n"
    "  --wait                on throttle, wait retry_after and check again\n"
    "  --max-wait S          longest total wait (default 300 s)\n"
    "  --fallback F          when discernd is unreachable or times out: refuse (default,\n"
    "                        exit 4) or allow (run CMD unmetered, with a warning)\n"
    "  --quiet               no decision line on stderr\n";

/* Runs argv; returns its exit status as a shell reports it. */
static int run_command(const cli_ctx *cx, char **argv) {
    struct sigaction ign = {.sa_handler = SIG_IGN}, old_int, old_quit;
    sigemptyset(&ign.sa_mask);
    sigaction(SIGINT, &ign, &old_int);
    sigaction(SIGQUIT, &ign, &old_quit);
    pid_t pid = fork();
    if (pid == 0) {
        sigaction(SIGINT, &old_int, NULL);
        sigaction(SIGQUIT, &old_quit, NULL);
        execvp(argv[0], argv);
        cli_fail(cx, DSC_IO, "cannot run '%s': %s", argv[0], strerror(errno));
        _exit(127);
    }
    int status = 0, rc;
    if (pid < 0) {
        rc = cli_fail(cx, DSC_INTERNAL, "cannot fork: %s", strerror(errno));
    } else {
        while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
        }
        rc = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    }
    sigaction(SIGINT, &old_int, NULL);
    sigaction(SIGQUIT, &old_quit, NULL);
    return rc;
}

/* Read "key=value" pairs from the usage file into u; a bad or unknown pair is
 * reported and ignored. */
static void read_usage(const cli_ctx *cx, const char *path, dsc_guard_usage *u) {
    FILE *f = fopen(path, "r");
    if (!f) return;
    char word[128];
    while (fscanf(f, "%127s", word) == 1) {
        char *eq = strchr(word, '=');
        int64_t n;
        if (eq) *eq = '\0';
        const char *v = eq ? eq + 1 : "";
        int ok = 0;
        if (strcmp(word, "input_tokens") == 0)
            ok = cli_parse_count(cx, "input_tokens", v, &n) == CLI_EXIT_OK &&
                 (u->input_tokens = n, 1);
        else if (strcmp(word, "output_tokens") == 0)
            ok = cli_parse_count(cx, "output_tokens", v, &n) == CLI_EXIT_OK &&
                 (u->output_tokens = n, 1);
        else if (strcmp(word, "cached_input_tokens") == 0)
            ok = cli_parse_count(cx, "cached_input_tokens", v, &n) == CLI_EXIT_OK &&
                 (u->cached_input_tokens = n, 1);
        else if (strcmp(word, "reasoning_tokens") == 0)
            ok = cli_parse_count(cx, "reasoning_tokens", v, &n) == CLI_EXIT_OK &&
                 (u->reasoning_tokens = n, 1);
        else if (strcmp(word, "latency_s") == 0)
            ok = cli_parse_number(cx, "latency_s", v, 0, true, &u->latency_s) == CLI_EXIT_OK;
        if (!ok)
            fprintf(stderr, "discern: exec: ignoring '%s%s%s' in $DISCERN_USAGE_FILE\n", word,
                    eq ? "=" : "", v);
    }
    fclose(f);
}

/* Why CMD does not run: print and return the exit code. */
static int not_allowed(const cli_ctx *cx, const dsc_guard_ticket *t) {
    if (t->fallback_applied) return cli_fail(cx, t->status, "%s", t->message);
    const dsc_client_check_result *r = &t->check;
    const char *name = dsc_decision_name(r->decision);
    if (r->decision == DSC_DECISION_THROTTLE)
        fprintf(stderr, "discern: %s: %s: %s (retry after %g s%s) (%s)\n", cx->command, name,
                r->reason, r->retry_after_s, t->waited_s > 0 ? "; waited the longest allowed" : "",
                name);
    else
        fprintf(stderr, "discern: %s: %s: %s (%s)\n", cx->command, name, r->reason, name);
    return cli_exit_of_decision(r->decision);
}

typedef struct exec_opts {
    const char *max_wait, *fallback;
    int wait, quiet;
} exec_opts;

static int parse_exec(cli_ctx *cx, int argc, char **argv, cli_req *req, exec_opts *o, int *rest) {
    cli_flag f[] = {{.name = "--wait", .on = &o->wait},
                    {.name = "--max-wait", .value = &o->max_wait},
                    {.name = "--fallback", .value = &o->fallback},
                    {.name = "--quiet", .on = &o->quiet}};
    int rc = cli_parse(cx, argc, argv, req, f, 4, rest);
    if (rc != CLI_EXIT_OK || cx->help) return rc;
    if (cx->json) return cli_fail(cx, DSC_BAD_REQUEST, "--json is not supported");
    if (*rest >= argc - 1) return cli_fail(cx, DSC_BAD_REQUEST, "give the command after '--'");
    if (o->fallback && strcmp(o->fallback, "allow") && strcmp(o->fallback, "refuse"))
        return cli_fail(cx, DSC_BAD_REQUEST, "option --fallback: '%s' is not allow or refuse",
                        o->fallback);
    return CLI_EXIT_OK;
}

/* Run CMD under the ticket and settle or cancel. */
static int run_allowed(const cli_ctx *cx, dsc_client *c, dsc_guard_ticket *t,
                       const dsc_client_check_request *rq, char **cmd) {
    const char *tmp = getenv("TMPDIR");
    char path[512];
    snprintf(path, sizeof path, "%s/discern-usage-XXXXXX", tmp && tmp[0] ? tmp : "/tmp");
    int fd = mkstemp(path);
    if (fd < 0)
        return cli_fail(cx, DSC_INTERNAL, "cannot create the usage file: %s", strerror(errno));
    close(fd);
    setenv("DISCERN_USAGE_FILE", path, 1);
    setenv("DISCERN_RESERVATION", t->check.reservation, 1);
    setenv("DISCERN_DECISION_ID", t->check.decision_id, 1);
    int rc = run_command(cx, cmd);
    dsc_guard_usage u = {.input_tokens = rq->input_tokens,
                         .output_tokens = rq->output_tokens,
                         .cached_input_tokens = rq->cached_input_tokens,
                         .reasoning_tokens = rq->reasoning_tokens};
    if (rc == 0) read_usage(cx, path, &u);
    unlink(path);
    dsc_error err;
    dsc_status st = dsc_guard_end(c, t, rc == 0 ? &u : NULL, &err);
    if (st != DSC_OK)
        fprintf(stderr, "discern: exec: %s failed: %s (%s)\n", rc == 0 ? "settle" : "cancel",
                err.message, dsc_status_wire(st));
    return rc;
}

int cli_exec(cli_ctx *cx, int argc, char **argv) {
    cli_req req = {0};
    exec_opts o = {0};
    int rest, rc = parse_exec(cx, argc, argv, &req, &o, &rest);
    if (rc != CLI_EXIT_OK) return rc;
    if (cx->help) {
        printf("%s\n", exec_help);
        char *help_argv[] = {"check", "--help", NULL};
        return cli_check(cx, 2, help_argv);
    }
    dsc_client_check_request rq;
    dsc_guard_options go = {.fallback = o.fallback && strcmp(o.fallback, "allow") == 0
                                            ? DSC_GUARD_FALLBACK_ALLOW
                                            : DSC_GUARD_FALLBACK_REFUSE};
    if ((rc = cli_check_request(cx, &req, &rq))) return rc;
    go.max_wait_s = 300;
    if (o.max_wait &&
        (rc = cli_parse_number(cx, "--max-wait", o.max_wait, 0, false, &go.max_wait_s)))
        return rc;
    if (!o.wait) go.max_wait_s = 0;
    dsc_client *c = cli_connect(cx, false, &rc);
    if (!c) return rc;
    dsc_guard_ticket t;
    dsc_error err;
    dsc_status st = dsc_guard_begin(c, &rq, &go, &t, &err);
    if (st != DSC_OK)
        rc = cli_fail_status(cx, st, &err);
    else if (!t.allowed)
        rc = not_allowed(cx, &t);
    else {
        if (t.fallback_applied)
            fprintf(stderr, "discern: exec: %s: running unmetered\n", t.message);
        else if (!o.quiet)
            fprintf(stderr, "discern: allow: %s%s%s\n", t.check.reason,
                    t.checks > 1 ? " (after waiting throttles)" : "",
                    t.check.reservation[0] ? "" : " (nothing reserved)");
        rc = run_allowed(cx, c, &t, &rq, argv + rest + 1);
    }
    dsc_guard_ticket_clear(&t);
    dsc_client_free(c);
    return rc;
}
