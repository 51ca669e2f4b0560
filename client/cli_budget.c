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

/* budget get: the states, and when the subject names no org, a word on why a check
 * that names one holds on another counter (org:acme/team:infra, not team:infra). */
static void print_states(const dsc_client_subject *subject, const dsc_client_budgets *b) {
    cli_print_budgets(stdout, b, false);
    if (subject->org || (!subject->team && !subject->user)) return;
    for (size_t i = 0; i < b->count; i++)
        if (strncmp(b->items[i].counter, "org:", 4) == 0) return; /* a key's scope named it */
    printf("note: counters are kept per full subject: these are for a request that names no\n"
           "org; a check with --org O holds on org:O/%s:%s instead (give the same --org, or\n"
           "DISCERN_ORG, to see it)\n",
           subject->team ? "team" : "user", subject->team ? subject->team : subject->user);
}

/* list and get: a budgets array, printed as definitions or states. */
static int read_budgets(cli_ctx *cx, int argc, char **argv, bool get) {
    cli_req req = {0};
    const char *selector = NULL;
    cli_flag f[] = {{.name = "--selector", .value = &selector},
                    {.name = "--org", .value = &req.org},
                    {.name = "--team", .value = &req.team},
                    {.name = "--user", .value = &req.user},
                    {.name = "--subject-key", .value = &req.key}};
    int rc = get ? cli_parse(cx, argc, argv, NULL, f + 1, 4, NULL)
                 : cli_parse(cx, argc, argv, NULL, f, 1, NULL);
    if (rc != CLI_EXIT_OK) return rc;
    if (cx->help) return show_help();
    dsc_client_subject subject;
    if (get && (rc = cli_subject(cx, &req, &subject))) return rc;
    dsc_client *c = cli_connect(cx, false, &rc);
    if (!c) return rc;
    dsc_client_budgets b;
    dsc_error err;
    dsc_status st = get ? dsc_client_budget_get(c, &subject, &b, &err)
                        : dsc_client_budget_list(c, selector, &b, &err);
    if (st != DSC_OK)
        rc = cli_fail_status(cx, st, &err);
    else if (cx->json)
        rc = cli_print_json(cx, json_pack("{s:o}", "budgets", cli_json_budgets(&b)));
    else if (get)
        print_states(&subject, &b);
    else
        print_definitions(&b);
    dsc_client_budgets_clear(&b);
    dsc_client_free(c);
    return rc;
}

/* set and delete (admin). */
static int write_budget(cli_ctx *cx, int argc, char **argv, bool set) {
    const char *limit = NULL;
    dsc_client_budget_set_request rq = {0};
    cli_flag f[] = {{.name = "--selector", .value = &rq.selector},
                    {.name = "--metric", .value = &rq.metric},
                    {.name = "--window", .value = &rq.window},
                    {.name = "--limit", .value = &limit}};
    int rc = cli_parse(cx, argc, argv, NULL, f, set ? 4 : 3, NULL);
    if (rc != CLI_EXIT_OK) return rc;
    if (cx->help) return show_help();
    if ((rc = cli_required(cx, "--selector", rq.selector)) ||
        (rc = cli_required(cx, "--metric", rq.metric)) ||
        (rc = cli_required(cx, "--window", rq.window)) ||
        (set && (rc = cli_required(cx, "--limit", limit))) ||
        (set && (rc = cli_parse_number(cx, "--limit", limit, 0, false, &rq.limit))))
        return rc;
    dsc_client *c = cli_connect(cx, true, &rc);
    if (!c) return rc;
    dsc_client_budget_set_result r;
    dsc_error err;
    dsc_status st = set ? dsc_client_budget_set(c, &rq, &r, &err)
                        : dsc_client_budget_delete(c, rq.selector, rq.metric, rq.window, &err);
    if (st != DSC_OK) {
        rc = cli_fail_status(cx, st, &err);
    } else if (cx->json && set) {
        dsc_client_budgets one = {&r.budget, 1};
        json_t *arr = cli_json_budgets(&one);
        json_t *item = json_incref(json_array_get(arr, 0));
        json_decref(arr);
        rc = cli_print_json(cx, json_pack("{s:o,s:b}", "budget", item, "created", r.created));
    } else if (cx->json) {
        rc = cli_print_json(cx, json_pack("{s:b}", "deleted", 1));
    } else if (set) {
        printf("%s %s %s %s limit %g %s\n", r.created ? "created" : "updated", r.budget.selector,
               r.budget.metric, r.budget.window, r.budget.limit, r.budget.unit);
    } else {
        printf("deleted %s %s %s\n", rq.selector, rq.metric, rq.window);
    }
    dsc_client_free(c);
    return rc;
}

int cli_budget(cli_ctx *cx, int argc, char **argv) {
    const char *sub = argc >= 2 ? argv[1] : "";
    bool known = !strcmp(sub, "list") || !strcmp(sub, "get") || !strcmp(sub, "set") ||
                 !strcmp(sub, "delete");
    if (known) cli_subcommand(cx, sub);
    if (strcmp(sub, "list") == 0) return read_budgets(cx, argc - 1, argv + 1, false);
    if (strcmp(sub, "get") == 0) return read_budgets(cx, argc - 1, argv + 1, true);
    if (strcmp(sub, "set") == 0) return write_budget(cx, argc - 1, argv + 1, true);
    if (strcmp(sub, "delete") == 0) return write_budget(cx, argc - 1, argv + 1, false);
    if (cx->help || strcmp(sub, "--help") == 0 || strcmp(sub, "-h") == 0) return show_help();
    fputs(budget_usage, stderr);
    return cli_fail(cx, DSC_BAD_REQUEST, "%s '%s'",
                    sub[0] ? "unknown subcommand" : "missing subcommand", sub);
}
