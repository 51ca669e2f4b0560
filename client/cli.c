/*
 * cli.c - main() of the `discern` tool: dispatches to one subcommand.
 *
 * The command table below is the one place that lists the subcommands; each
 * row names the handler (in cli_<name>.c) and the line shown by `discern --help`.
 */
#include "cli.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

typedef struct cli_command {
    const char *name;
    int (*run)(int argc, char **argv);
    const char *summary;
} cli_command;

static const cli_command commands[] = {
    {"estimate", cli_estimate, "footprint of one request, offline (energy, CO2e, water, ...)"},
    {"models", cli_models, "the model catalogue, with parameter counts"},
    {"zones", cli_zones, "the electricity mixes known"},
    {"check", cli_check, "ask discernd whether an AI request may go ahead"},
    {"exec", cli_exec, "run a command only if discernd allows it, then settle"},
    {"settle", cli_settle, "report the real usage of an allowed request"},
    {"cancel", cli_cancel, "release the hold of a request that did not happen"},
    {"budget", cli_budget, "list, show, set and delete budgets (list|get|set|delete)"},
    {"grid", cli_grid, "push a live grid carbon intensity (grid set)"},
    {"reload", cli_reload, "recompile and switch the server's policies"},
    {"stats", cli_stats, "the server's counters"},
    {"key", cli_key, "create, list and revoke API keys (key create|list|revoke)"},
    {"decisions", cli_decisions, "the decision journal: who asked, what was answered, why"},
    {"report", cli_report, "usage by team, user, model or purpose per day, week, month"},
    {"ping", cli_ping, "is discernd there?"},
    {"policy", cli_policy, "test and check a policy folder (discern policy test [DIR])"},
};

#define COMMAND_COUNT (sizeof commands / sizeof commands[0])

int cli_fail(int code, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fputs("discern: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    return code;
}

static void usage(FILE *out) {
    fputs("usage: discern <command> [options]\n\n"
          "discern gates AI usage by its environmental footprint and its purpose.\n\n"
          "commands:\n",
          out);
    for (size_t i = 0; i < COMMAND_COUNT; i++)
        fprintf(out, "  %-10s %s\n", commands[i].name, commands[i].summary);
    fputs("\nRun 'discern <command> --help' for a command's options.\n", out);
}

int main(int argc, char **argv) {
    if (argc < 2) {
        usage(stderr);
        return CLI_EXIT_USAGE;
    }
    if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0 ||
        strcmp(argv[1], "help") == 0) {
        usage(stdout);
        return CLI_EXIT_OK;
    }
    for (size_t i = 0; i < COMMAND_COUNT; i++)
        if (strcmp(argv[1], commands[i].name) == 0) return commands[i].run(argc - 1, argv + 1);
    usage(stderr);
    return cli_fail(CLI_EXIT_USAGE, "unknown command '%s'", argv[1]);
}
