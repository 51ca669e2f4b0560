/*
 * cli.h - the `discern` command-line tool: shared pieces of its subcommands.
 *
 * cli.c holds main() and the command table; each subcommand lives in its own
 * cli_<name>.c and exports one int cli_<name>(int argc, char **argv) that returns
 * the process exit code (CLI_EXIT_*). argv[0] is the subcommand's name.
 */
#ifndef DISCERN_CLI_H
#define DISCERN_CLI_H

/* Exit codes a shell script can branch on (documented in docs/client.md). */
enum {
    CLI_EXIT_OK = 0,
    CLI_EXIT_FAIL = 1,    /* tests failed, or an error not listed below */
    CLI_EXIT_USAGE = 2,   /* bad flags or values */
    CLI_EXIT_UNKNOWN = 3, /* unknown provider/model/zone */
    CLI_EXIT_UNREACHABLE = 4,
    CLI_EXIT_THROTTLE = 10,
    CLI_EXIT_REFUSE = 11,
};

/* Print "discern: <message>" to stderr; returns code. */
int cli_fail(int code, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

int cli_estimate(int argc, char **argv);
int cli_models(int argc, char **argv);
int cli_zones(int argc, char **argv);
int cli_policy(int argc, char **argv);
int cli_check(int argc, char **argv);
int cli_settle(int argc, char **argv);
int cli_cancel(int argc, char **argv);
int cli_budget(int argc, char **argv);
int cli_grid(int argc, char **argv);
int cli_reload(int argc, char **argv);
int cli_stats(int argc, char **argv);
int cli_ping(int argc, char **argv);
int cli_exec(int argc, char **argv);
int cli_key(int argc, char **argv);
int cli_decisions(int argc, char **argv);
int cli_report(int argc, char **argv);

#endif
