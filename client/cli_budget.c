/*
 * cli_budget.c - `discern budget list|get|set|delete`: budgets on a discernd.
 *
 *   discern budget list [--selector S]                 every budget definition
 *   discern budget get --team T [--org --user --subject-key]  the budgets of one subject,
 *                                                      with bars and reset times
 *   discern budget set --selector S --metric M --window W --limit X    (admin)
 *   discern budget delete --selector S --metric M --window W           (admin)
 *
 * Flags, output and exit codes as the other server commands (cli_server.h).
 */
#include "cli_server.h"

#include <stdlib.h>
#include <string.h>

static const char budget_usage[] =
    "usage: discern budget list [--selector S]\n"
    "       discern budget get --org O | --team T | --user U | --subject-key K\n"
    "       discern budget set --selector S --metric M --window W --limit X\n"
    "       discern budget delete --selector S --metric M --window W\n";

static const char budget_help[] =
    "\n"
    "Budgets are (selector, metric, window, limit): a request counts against every\n"
    "budget whose selector matches its subject.\n"
    "\n"
    "  --selector S          org:<name>, team:<name>, user:<name> or key:<name>; the name\n"
    "                        may be * (every org, team, ...)\n"
    "  --metric M            energy_wh, gco2e, water_ml, pe_mj, cost, tokens, requests\n"
    "  --window W            day, week, month, year, rolling:<N><s|m|h|d>,\n"
    "                        rate:<N>/<N><s|m|h|d>\n"
    "  --limit X             in the metric's unit (Wh, g, mL, MJ, currency, ...)\n"
    "  --org --team --user --subject-key   the subject of 'get' (with --key, what\n"
    "                        the key's scope leaves out)\n"
    "\n"
    "  --server ADDR         host:port or unix:/path (default DISCERN_SERVER, else\n"
    "                        127.0.0.1:7878)\n"
    "  --timeout MS          per call (default 2000)\n"
    "  --admin-token T       for set and delete (default DISCERN_ADMIN_TOKEN)\n"
    "  --key K               API key token dsk_... (default DISCERN_KEY)\n"
    "  --json                print JSON instead of text\n"
    "\n"
    "exit codes: 0 ok, 2 usage, 3 unknown metric, 4 server unreachable, 1 other errors\n"
    "(unknown_budget, unauthorized, ...)\n";

static int show_help(void) {
    printf("%s%s", budget_usage, budget_help);
    return CLI_EXIT_OK;
}

static void print_definitions(const dsc_client_budgets *b) {
    if (b->count == 0) {
        puts("no budgets");
        return;
    }
    printf("%-24s %-10s %-16s %14s  %s\n", "SELECTOR", "METRIC", "WINDOW", "LIMIT", "UNIT");
    for (size_t i = 0; i < b->count; i++) {
        const dsc_client_budget *x = &b->items[i];
        printf("%-24s %-10s %-16s %14.6g  %s\n", x->selector, x->metric, x->window, x->limit,
               x->unit);
    }
}

/* list and get: a budgets array, printed as definitions or states. */
static int read_budgets(int argc, char **argv, bool get) {
    cli_conn conn = {0};
    cli_req req = {0};
    const char *selector = NULL;
    cli_flag f[] = {{"--selector", &selector, NULL},
                    {"--org", &req.org, NULL},
                    {"--team", &req.team, NULL},
                    {"--user", &req.user, NULL},
                    {"--subject-key", &req.key, NULL}};
    int rc = get ? cli_parse(argc, argv, &conn, NULL, f + 1, 4, NULL)
                 : cli_parse(argc, argv, &conn, NULL, f, 1, NULL);
    if (rc != CLI_EXIT_OK) return rc;
    if (conn.help) return show_help();
    dsc_client_subject subject;
    if (get && (rc = cli_subject(&req, &subject))) return rc;
    dsc_client *c = cli_connect(&conn, false, &rc);
    if (!c) return rc;
    dsc_client_budgets b;
    dsc_error err;
    dsc_status st = get ? dsc_client_budget_get(c, &subject, &b, &err)
                        : dsc_client_budget_list(c, selector, &b, &err);
    if (st != DSC_OK)
        rc = cli_fail_status(st, &err, get ? "budget get" : "budget list");
    else if (conn.json)
        rc = cli_print_json(json_pack("{s:o}", "budgets", cli_json_budgets(&b)));
    else if (get)
        cli_print_budgets(stdout, &b, false);
    else
        print_definitions(&b);
    dsc_client_budgets_clear(&b);
    dsc_client_free(c);
    return rc;
}

static int need(const char *flag, const char *v) {
    return v ? CLI_EXIT_OK : cli_fail(CLI_EXIT_USAGE, "option %s is required", flag);
}

/* set and delete (admin). */
static int write_budget(int argc, char **argv, bool set) {
    cli_conn conn = {0};
    const char *limit = NULL;
    dsc_client_budget_set_request rq = {0};
    cli_flag f[] = {{"--selector", &rq.selector, NULL},
                    {"--metric", &rq.metric, NULL},
                    {"--window", &rq.window, NULL},
                    {"--limit", &limit, NULL}};
    int rc = cli_parse(argc, argv, &conn, NULL, f, set ? 4 : 3, NULL);
    if (rc != CLI_EXIT_OK) return rc;
    if (conn.help) return show_help();
    if ((rc = need("--selector", rq.selector)) || (rc = need("--metric", rq.metric)) ||
        (rc = need("--window", rq.window)) || (set && (rc = need("--limit", limit))) ||
        (set && (rc = cli_parse_number("--limit", limit, 0, false, &rq.limit))))
        return rc;
    dsc_client *c = cli_connect(&conn, true, &rc);
    if (!c) return rc;
    dsc_client_budget_set_result r;
    dsc_error err;
    dsc_status st = set ? dsc_client_budget_set(c, &rq, &r, &err)
                        : dsc_client_budget_delete(c, rq.selector, rq.metric, rq.window, &err);
    if (st != DSC_OK) {
        rc = cli_fail_status(st, &err, set ? "budget set" : "budget delete");
    } else if (conn.json && set) {
        dsc_client_budgets one = {&r.budget, 1};
        json_t *arr = cli_json_budgets(&one);
        json_t *item = json_incref(json_array_get(arr, 0));
        json_decref(arr);
        rc = cli_print_json(json_pack("{s:o,s:b}", "budget", item, "created", r.created));
    } else if (conn.json) {
        rc = cli_print_json(json_pack("{s:b}", "deleted", 1));
    } else if (set) {
        printf("%s %s %s %s limit %g %s\n", r.created ? "created" : "updated", r.budget.selector,
               r.budget.metric, r.budget.window, r.budget.limit, r.budget.unit);
    } else {
        printf("deleted %s %s %s\n", rq.selector, rq.metric, rq.window);
    }
    dsc_client_free(c);
    return rc;
}

int cli_budget(int argc, char **argv) {
    const char *sub = argc >= 2 ? argv[1] : "";
    if (strcmp(sub, "list") == 0) return read_budgets(argc - 1, argv + 1, false);
    if (strcmp(sub, "get") == 0) return read_budgets(argc - 1, argv + 1, true);
    if (strcmp(sub, "set") == 0) return write_budget(argc - 1, argv + 1, true);
    if (strcmp(sub, "delete") == 0) return write_budget(argc - 1, argv + 1, false);
    if (strcmp(sub, "--help") == 0 || strcmp(sub, "-h") == 0) return show_help();
    fputs(budget_usage, stderr);
    return cli_fail(CLI_EXIT_USAGE, "budget: %s '%s'",
                    sub[0] ? "unknown subcommand" : "missing subcommand", sub);
}
