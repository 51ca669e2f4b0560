/*
 * cli.h - the `discern` command-line tool: what every subcommand shares.
 *
 * cli.c holds main(), the command table, the one flag parser, the one map from a
 * dsc_status to an exit code and the one error-line printer. Each subcommand lives
 * in its own cli_<name>.c and exports one int cli_<name>(cli_ctx *cx, int argc,
 * char **argv) that returns the process exit code (CLI_EXIT_*); argv[0] is the
 * subcommand's name and cx carries the common flags (--server, --key, --json,
 * --data, ...), which may stand anywhere on the command line.
 */
#ifndef DISCERN_CLI_H
#define DISCERN_CLI_H

#include "discern/status.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Exit codes a shell script can branch on (documented in docs/client.md). */
enum {
    CLI_EXIT_OK = 0,
    CLI_EXIT_FAIL = 1,    /* tests failed, or an error not listed below */
    CLI_EXIT_USAGE = 2,   /* bad flags or values (bad_request) */
    CLI_EXIT_UNKNOWN = 3, /* unknown provider/model/zone/metric */
    CLI_EXIT_UNREACHABLE = 4,
    CLI_EXIT_THROTTLE = 10,
    CLI_EXIT_REFUSE = 11,
};

/* Which common flags a command reads (the command table's uses column). */
enum {
    CLI_USES_SERVER = 1 << 0, /* --server, --timeout, --key */
    CLI_USES_ADMIN = 1 << 1,  /* --admin-token */
    CLI_USES_JSON = 1 << 2,   /* --json */
    CLI_USES_DATA = 1 << 3,   /* --data */
};

/* One invocation: the command's name for error lines and the common flags. */
typedef struct cli_ctx {
    char command[48]; /* "budget set": the <command> of "discern: <command>: ..." */
    unsigned uses;    /* CLI_USES_* of the command */
    const char *server, *timeout, *admin_token, *key, *data;
    int json, help;
} cli_ctx;

/* One flag of a command. name NULL: the command's one positional argument. A valued
 * flag stores its text in *value, a switch sets *on, a repeatable flag calls
 * add(ud, text) (which prints and returns the exit code on a bad value). */
typedef struct cli_flag {
    const char *name;
    const char **value;
    int *on;
    int (*add)(const cli_ctx *cx, void *ud, const char *text);
    void *ud;
} cli_flag;

/* Parse argv[1..argc) against flags and the common flags cx->uses names; stops at
 * "--" (its index in *rest, else argc; rest NULL: "--" is an unknown option).
 * Returns CLI_EXIT_OK, or prints and returns CLI_EXIT_USAGE naming the option. */
int cli_parse_flags(cli_ctx *cx, int argc, char **argv, const cli_flag *flags, size_t n, int *rest);

/* Take the common flags (and --help) that stand at argv[1..] off argv, into cx (any
 * common flag, whether the command reads it or not: main checks that after). argv
 * keeps argv[0] and its NULL end; *argc shrinks. Returns CLI_EXIT_OK or USAGE. */
int cli_leading_flags(cli_ctx *cx, int *argc, char **argv);

/* Print "discern: <command>: <message> (<wire code of st>)" to stderr; returns the
 * exit code of st. */
int cli_fail(const cli_ctx *cx, dsc_status st, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* The error line of a failed call (err's message, st's wire code); its exit code. */
int cli_fail_status(const cli_ctx *cx, dsc_status st, const dsc_error *err);
/* The exit code of a status: 0 ok, 2 bad request, 3 unknown provider/model/zone/
 * metric, 4 unreachable or timed out, 1 otherwise. */
int cli_exit_of(dsc_status st);
/* Set cx->command to "<cx->command> <sub>" (a subcommand's error lines). */
void cli_subcommand(cli_ctx *cx, const char *sub);

/* A non-negative integer option; USAGE naming opt otherwise. */
int cli_parse_count(const cli_ctx *cx, const char *opt, const char *text, int64_t *out);
/* A finite number >= min (exclusive when strict). */
int cli_parse_number(const cli_ctx *cx, const char *opt, const char *text, double min, bool strict,
                     double *out);
/* USAGE "option <flag> is required" unless val is set. */
int cli_required(const cli_ctx *cx, const char *flag, const char *val);

int cli_estimate(cli_ctx *cx, int argc, char **argv);
int cli_models(cli_ctx *cx, int argc, char **argv);
int cli_zones(cli_ctx *cx, int argc, char **argv);
int cli_policy(cli_ctx *cx, int argc, char **argv);
int cli_check(cli_ctx *cx, int argc, char **argv);
int cli_settle(cli_ctx *cx, int argc, char **argv);
int cli_cancel(cli_ctx *cx, int argc, char **argv);
int cli_budget(cli_ctx *cx, int argc, char **argv);
int cli_grid(cli_ctx *cx, int argc, char **argv);
int cli_reload(cli_ctx *cx, int argc, char **argv);
int cli_stats(cli_ctx *cx, int argc, char **argv);
int cli_ping(cli_ctx *cx, int argc, char **argv);
int cli_exec(cli_ctx *cx, int argc, char **argv);
int cli_key(cli_ctx *cx, int argc, char **argv);
int cli_decisions(cli_ctx *cx, int argc, char **argv);
int cli_admin_journal(cli_ctx *cx, int argc, char **argv);
int cli_report(cli_ctx *cx, int argc, char **argv);

#endif
