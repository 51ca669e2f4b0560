/*
 * cli.c - main() of the `discern` tool, and what every subcommand shares: the
 * command table, the one flag parser, the one exit-code map, the one error line.
 *
 * The command table below is the one place that lists the subcommands; each row
 * names the handler (in cli_<name>.c), the common flags it reads and the line shown
 * by `discern --help`. Error lines are always
 *     discern: <command>: <message> (<code>)
 * with <code> the wire code of a dsc_status (bad_request for bad flags).
 */
#include "cli.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct cli_command {
    const char *name;
    int (*run)(cli_ctx *cx, int argc, char **argv);
    unsigned uses;
    const char *summary;
} cli_command;

#define SRV (CLI_USES_SERVER | CLI_USES_JSON)
#define ADM (CLI_USES_SERVER | CLI_USES_JSON | CLI_USES_ADMIN)
#define OFF (CLI_USES_JSON | CLI_USES_DATA)

static const cli_command commands[] = {
    {"estimate", cli_estimate, OFF, "footprint of one request, offline (energy, CO2e, water, ...)"},
    {"models", cli_models, OFF, "the model catalogue, with parameter counts"},
    {"zones", cli_zones, OFF, "the electricity mixes known"},
    {"check", cli_check, SRV, "ask discernd whether an AI request may go ahead"},
    {"exec", cli_exec, CLI_USES_SERVER, "run a command only if discernd allows it, then settle"},
    {"settle", cli_settle, SRV, "report the real usage of an allowed request"},
    {"cancel", cli_cancel, SRV, "release the hold of a request that did not happen"},
    {"budget", cli_budget, ADM, "list, show, set and delete budgets (list|get|set|delete)"},
    {"grid", cli_grid, ADM, "push a live grid carbon intensity (grid set)"},
    {"reload", cli_reload, ADM, "recompile and switch the server's policies"},
    {"stats", cli_stats, SRV, "the server's counters"},
    {"key", cli_key, ADM, "create, list and revoke API keys (key create|list|revoke)"},
    {"decisions", cli_decisions, SRV, "the decision journal: who asked, what was answered, why"},
    {"admin-journal", cli_admin_journal, ADM,
     "who created and revoked keys, set and deleted budgets, and when"},
    {"report", cli_report, ADM, "usage by team, user, model or purpose per day, week, month"},
    {"ping", cli_ping, SRV, "is discernd there?"},
    {"policy", cli_policy, CLI_USES_DATA,
     "test and check a policy folder (discern policy test [DIR])"},
};

#define COMMAND_COUNT (sizeof commands / sizeof commands[0])

/* ------------------------------------------------------------ error lines -- */

int cli_exit_of(dsc_status st) {
    switch (st) {
    case DSC_OK:
        return CLI_EXIT_OK;
    case DSC_BAD_REQUEST:
        return CLI_EXIT_USAGE;
    case DSC_UNKNOWN_PROVIDER:
    case DSC_UNKNOWN_MODEL:
    case DSC_UNKNOWN_ZONE:
    case DSC_UNKNOWN_METRIC:
        return CLI_EXIT_UNKNOWN;
    case DSC_UNREACHABLE:
    case DSC_TIMEOUT:
        return CLI_EXIT_UNREACHABLE;
    default:
        return CLI_EXIT_FAIL;
    }
}

int cli_fail(const cli_ctx *cx, dsc_status st, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, cx->command[0] ? "discern: %s: " : "discern: ", cx->command);
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, " (%s)\n", dsc_status_wire(st));
    va_end(ap);
    return cli_exit_of(st);
}

int cli_fail_status(const cli_ctx *cx, dsc_status st, const dsc_error *err) {
    return cli_fail(cx, st, "%s", err && err->message[0] ? err->message : dsc_status_message(st));
}

void cli_subcommand(cli_ctx *cx, const char *sub) {
    size_t n = strlen(cx->command);
    snprintf(cx->command + n, sizeof cx->command - n, " %s", sub);
}

/* ------------------------------------------------------------------ flags -- */

#define MAX_FLAGS 64

/* The common flags cx->uses names, appended to f. */
static size_t common_flags(cli_ctx *cx, cli_flag *f, size_t n) {
    if (cx->uses & CLI_USES_SERVER) {
        f[n++] = (cli_flag){.name = "--server", .value = &cx->server};
        f[n++] = (cli_flag){.name = "--timeout", .value = &cx->timeout};
        f[n++] = (cli_flag){.name = "--key", .value = &cx->key};
    }
    if (cx->uses & CLI_USES_ADMIN)
        f[n++] = (cli_flag){.name = "--admin-token", .value = &cx->admin_token};
    if (cx->uses & CLI_USES_JSON) f[n++] = (cli_flag){.name = "--json", .on = &cx->json};
    if (cx->uses & CLI_USES_DATA) f[n++] = (cli_flag){.name = "--data", .value = &cx->data};
    return n;
}

static const cli_flag *find_flag(const cli_flag *f, size_t n, const char *arg, size_t len) {
    for (size_t k = 0; k < n; k++)
        if (f[k].name && strncmp(arg, f[k].name, len) == 0 && f[k].name[len] == '\0') return &f[k];
    return NULL;
}

static const cli_flag *positional(const cli_flag *f, size_t n) {
    for (size_t k = 0; k < n; k++)
        if (!f[k].name) return &f[k];
    return NULL;
}

static bool is_common(const char *arg, size_t len) {
    static const char *const names[] = {"--server", "--timeout",     "--key",
                                        "--json",   "--admin-token", "--data"};
    for (size_t k = 0; k < sizeof names / sizeof names[0]; k++)
        if (strlen(names[k]) == len && strncmp(arg, names[k], len) == 0) return true;
    return false;
}

/* One argument (and its value, at argv[*i + 1] unless given as --name=value). */
static int take(cli_ctx *cx, int argc, char **argv, int *i, const cli_flag *f, size_t n) {
    const char *arg = argv[*i], *eq = strchr(arg, '='), *val;
    if (arg[0] != '-' || !arg[1]) {
        const cli_flag *p = positional(f, n);
        if (!p || *p->value)
            return cli_fail(cx, DSC_BAD_REQUEST, "unexpected argument '%s' (see --help)", arg);
        *p->value = arg;
        return CLI_EXIT_OK;
    }
    size_t len = eq ? (size_t)(eq - arg) : strlen(arg);
    const cli_flag *fl = find_flag(f, n, arg, len);
    if (!fl && is_common(arg, len))
        return cli_fail(cx, DSC_BAD_REQUEST, "option %.*s is not used by this command", (int)len,
                        arg);
    if (!fl) return cli_fail(cx, DSC_BAD_REQUEST, "unknown option '%s' (see --help)", arg);
    if (fl->on) {
        if (eq) return cli_fail(cx, DSC_BAD_REQUEST, "option %s takes no value", fl->name);
        *fl->on = 1;
        return CLI_EXIT_OK;
    }
    if (eq)
        val = eq + 1;
    else if (*i + 1 < argc)
        val = argv[++*i];
    else
        return cli_fail(cx, DSC_BAD_REQUEST, "option %s needs a value", fl->name);
    if (fl->add) return fl->add(cx, fl->ud, val);
    *fl->value = val;
    return CLI_EXIT_OK;
}

int cli_parse_flags(cli_ctx *cx, int argc, char **argv, const cli_flag *flags, size_t n,
                    int *rest) {
    cli_flag f[MAX_FLAGS] = {0};
    size_t m = 0;
    for (size_t k = 0; k < n && m < MAX_FLAGS - 8; k++)
        f[m++] = flags[k];
    m = common_flags(cx, f, m);
    if (rest) *rest = argc;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            cx->help = 1;
            continue;
        }
        if (strcmp(argv[i], "--") == 0 && rest) return *rest = i, CLI_EXIT_OK;
        int rc = take(cx, argc, argv, &i, f, m);
        if (rc != CLI_EXIT_OK) return rc;
    }
    return CLI_EXIT_OK;
}

/* The common flags given before the command that it does not read: refused, so that a
 * flag never silently does nothing. */
static int check_uses(const cli_ctx *cx) {
    const struct {
        const char *name;
        bool given;
        unsigned use;
    } g[] = {{"--server", cx->server != NULL, CLI_USES_SERVER},
             {"--timeout", cx->timeout != NULL, CLI_USES_SERVER},
             {"--key", cx->key != NULL, CLI_USES_SERVER},
             {"--admin-token", cx->admin_token != NULL, CLI_USES_ADMIN},
             {"--json", cx->json != 0, CLI_USES_JSON},
             {"--data", cx->data != NULL, CLI_USES_DATA}};
    for (size_t i = 0; i < sizeof g / sizeof g[0]; i++)
        if (g[i].given && !(cx->uses & g[i].use))
            return cli_fail(cx, DSC_BAD_REQUEST, "option %s is not used by this command",
                            g[i].name);
    return CLI_EXIT_OK;
}

int cli_leading_flags(cli_ctx *cx, int *argc, char **argv) {
    cli_flag f[8] = {0};
    unsigned uses = cx->uses;
    cx->uses = CLI_USES_SERVER | CLI_USES_ADMIN | CLI_USES_JSON | CLI_USES_DATA;
    size_t n = common_flags(cx, f, 0);
    cx->uses = uses;
    int i = 1, rc = CLI_EXIT_OK;
    for (; i < *argc && rc == CLI_EXIT_OK; i++) {
        const char *arg = argv[i], *eq = strchr(arg, '=');
        if (strcmp(arg, "--help") == 0 || strcmp(arg, "-h") == 0) {
            cx->help = 1;
            continue;
        }
        if (!find_flag(f, n, arg, eq ? (size_t)(eq - arg) : strlen(arg))) break;
        rc = take(cx, *argc, argv, &i, f, n);
    }
    if (rc != CLI_EXIT_OK) return rc;
    memmove(argv + 1, argv + i, (size_t)(*argc - i + 1) * sizeof *argv); /* with the NULL */
    *argc -= i - 1;
    return CLI_EXIT_OK;
}

int cli_required(const cli_ctx *cx, const char *flag, const char *val) {
    return val ? CLI_EXIT_OK : cli_fail(cx, DSC_BAD_REQUEST, "option %s is required", flag);
}

int cli_parse_count(const cli_ctx *cx, const char *opt, const char *text, int64_t *out) {
    char *end;
    errno = 0;
    long long v = strtoll(text, &end, 10);
    if (end == text || *end || errno == ERANGE || v < 0 || text[0] == '-')
        return cli_fail(cx, DSC_BAD_REQUEST, "option %s: '%s' is not a non-negative integer", opt,
                        text);
    *out = v;
    return CLI_EXIT_OK;
}

int cli_parse_number(const cli_ctx *cx, const char *opt, const char *text, double min, bool strict,
                     double *out) {
    char *end;
    errno = 0;
    double v = strtod(text, &end);
    if (end == text || *end || errno == ERANGE || !isfinite(v) || v < min || (strict && v == min))
        return cli_fail(cx, DSC_BAD_REQUEST, "option %s: '%s' is not a number %s %g", opt, text,
                        strict ? ">" : ">=", min);
    *out = v;
    return CLI_EXIT_OK;
}

/* ------------------------------------------------------------------- main -- */

static void usage(FILE *out) {
    fputs("usage: discern [common flags] <command> [options]\n\n"
          "discern gates AI usage by its environmental footprint and its purpose.\n\n"
          "commands:\n",
          out);
    for (size_t i = 0; i < COMMAND_COUNT; i++)
        fprintf(out, "  %-10s %s\n", commands[i].name, commands[i].summary);
    fputs("\nRun 'discern <command> --help' for a command's options.\n", out);
}

static const cli_command *find_command(const char *name) {
    for (size_t i = 0; i < COMMAND_COUNT; i++)
        if (strcmp(name, commands[i].name) == 0) return &commands[i];
    return NULL;
}

int main(int argc, char **argv) {
    cli_ctx cx = {.command = ""};
    int rc = cli_leading_flags(&cx, &argc, argv);
    if (rc != CLI_EXIT_OK) return rc;
    if (argc < 2 || strcmp(argv[1], "help") == 0) {
        usage(cx.help || argc >= 2 ? stdout : stderr);
        return cx.help || argc >= 2 ? CLI_EXIT_OK : CLI_EXIT_USAGE;
    }
    const cli_command *cmd = find_command(argv[1]);
    if (!cmd) {
        usage(stderr);
        return cli_fail(&cx, DSC_BAD_REQUEST, "unknown command '%s'", argv[1]);
    }
    snprintf(cx.command, sizeof cx.command, "%s", cmd->name);
    cx.uses = cmd->uses;
    int n = argc - 1; /* common flags between the command and its own arguments */
    if ((rc = cli_leading_flags(&cx, &n, argv + 1)) || (rc = check_uses(&cx))) return rc;
    return cmd->run(&cx, n, argv + 1);
}
