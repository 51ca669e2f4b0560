/*
 * cli_report.c - `discern report`: what the store's charges add up to, by team,
 * user, model or purpose, per hour, day, week or month.
 *
 *   discern report --by team|user|model|purpose [--period hour|day|week|month]
 *                  [--metric M] [--since D] [--until D] [--org --team --user]
 *                  [--csv | --json]
 *
 * D is a date (YYYY-MM-DD, UTC midnight) or unix seconds. Flags, connecting and exit
 * codes as the other server commands (cli_server.h).
 */
#define _DEFAULT_SOURCE /* timegm */
#include "cli_server.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

static const char usage[] =
    "usage: discern report --by team|user|model|purpose [--period hour|day|week|month]\n"
    "                      [--metric M] [--since D] [--until D] [--org O] [--team T]\n"
    "                      [--user U] [--csv | --json]\n";

static const char help_text[] =
    "\n"
    "Usage summed from the store's charges (settles, late and unreserved settles,\n"
    "expiry charges) per period (UTC; weeks start on Monday) and group, inside the\n"
    "key's scope. Needs a reader, manager or admin key (or the Unix socket).\n"
    "\n"
    "  --by B                team (org:O/team:T), user (.../user:U), model\n"
    "                        (provider/model) or purpose\n"
    "  --period P            hour, day (default), week or month\n"
    "  --metric M            gco2e (default), energy_wh, water_ml, pe_mj, cost,\n"
    "                        tokens or requests\n"
    "  --since D --until D   YYYY-MM-DD (UTC) or unix seconds; until is exclusive\n"
    "                        (default: the last 30 days)\n"
    "  --org --team --user   only this part of the subject space\n"
    "  --csv                 period_start,group,value rows (period_start ISO 8601)\n"
    "\n"
    "  --server ADDR --timeout MS --key K --admin-token T --json   as for the other\n"
    "                        commands\n"
    "\n"
    "exit codes: 0 ok, 2 usage, 4 server unreachable, 1 other errors (forbidden,\n"
    "unauthorized, store_unavailable, ...)\n";

/* A date YYYY-MM-DD (UTC) or unix seconds; USAGE naming opt otherwise. */
static int parse_day(const cli_ctx *cx, const char *opt, const char *text, double *out) {
    int y, m, d;
    char tail;
    if (sscanf(text, "%4d-%2d-%2d%c", &y, &m, &d, &tail) == 3) {
        struct tm tm = {.tm_year = y - 1900, .tm_mon = m - 1, .tm_mday = d};
        time_t t = timegm(&tm);
        if (m < 1 || m > 12 || d < 1 || d > 31 || t < 0 || tm.tm_mday != d)
            return cli_fail(cx, DSC_BAD_REQUEST, "option %s: '%s' is not a date", opt, text);
        *out = (double)t;
        return CLI_EXIT_OK;
    }
    int64_t v = 0;
    int rc = cli_parse_count(cx, opt, text, &v);
    *out = (double)v;
    return rc;
}

static void iso(int64_t t, char *buf, size_t cap) {
    time_t tt = (time_t)t;
    struct tm tm;
    gmtime_r(&tt, &tm);
    strftime(buf, cap, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

static json_t *report_json(const dsc_client_report *r) {
    json_t *rows = json_array();
    for (size_t i = 0; i < r->count; i++)
        json_array_append_new(rows, json_pack("{s:I, s:s, s:f}", "period_start",
                                              (json_int_t)r->rows[i].period_start, "group",
                                              r->rows[i].group, "value", r->rows[i].value));
    return json_pack("{s:s, s:s, s:s, s:s, s:I, s:I, s:o, s:b}", "by", r->by, "period", r->period,
                     "metric", r->metric, "unit", r->unit, "since", (json_int_t)r->since, "until",
                     (json_int_t)r->until, "rows", rows, "truncated", r->truncated);
}

/* A CSV field: quoted when it holds a comma, a quote or a line break. */
static void csv_field(const char *s) {
    if (!strpbrk(s, ",\"\r\n")) {
        fputs(s, stdout);
        return;
    }
    putchar('"');
    for (; *s; s++) {
        if (*s == '"') putchar('"');
        putchar(*s);
    }
    putchar('"');
}

static void print_csv(const dsc_client_report *r) {
    puts("period_start,group,value");
    for (size_t i = 0; i < r->count; i++) {
        char t[32];
        iso(r->rows[i].period_start, t, sizeof t);
        printf("%s,", t);
        csv_field(r->rows[i].group);
        printf(",%.15g\n", r->rows[i].value);
    }
}

static void print_table(const dsc_client_report *r) {
    char since[32], until[32];
    iso(r->since, since, sizeof since);
    iso(r->until, until, sizeof until);
    printf("%s by %s and %s, %s .. %s\n", r->metric, r->by, r->period, since, until);
    if (r->count == 0) {
        puts("no charges");
        return;
    }
    printf("%-20s  %-40s  %16s %s\n", "PERIOD", "GROUP", "VALUE", "UNIT");
    for (size_t i = 0; i < r->count; i++) {
        char t[32];
        iso(r->rows[i].period_start, t, sizeof t);
        printf("%-20s  %-40s  %16.6f %s\n", t, r->rows[i].group[0] ? r->rows[i].group : "-",
               r->rows[i].value, r->unit);
    }
    if (r->truncated) puts("(truncated: narrow the range or the scope)");
}

int cli_report(cli_ctx *cx, int argc, char **argv) {
    dsc_client_report_request rq = {0};
    const char *since = NULL, *until = NULL;
    int csv = 0;
    cli_flag f[] = {{.name = "--by", .value = &rq.by},
                    {.name = "--period", .value = &rq.period},
                    {.name = "--metric", .value = &rq.metric},
                    {.name = "--since", .value = &since},
                    {.name = "--until", .value = &until},
                    {.name = "--org", .value = &rq.subject.org},
                    {.name = "--team", .value = &rq.subject.team},
                    {.name = "--user", .value = &rq.subject.user},
                    {.name = "--csv", .on = &csv}};
    int rc = cli_parse(cx, argc, argv, NULL, f, sizeof f / sizeof f[0], NULL);
    if (rc != CLI_EXIT_OK) return rc;
    if (cx->help) {
        printf("%s%s", usage, help_text);
        return CLI_EXIT_OK;
    }
    if ((rc = cli_required(cx, "--by", rq.by))) return rc;
    if (csv && cx->json) return cli_fail(cx, DSC_BAD_REQUEST, "--csv and --json exclude each other");
    if ((since && (rc = parse_day(cx, "--since", since, &rq.since))) ||
        (until && (rc = parse_day(cx, "--until", until, &rq.until))))
        return rc;
    dsc_client *c = cli_connect(cx, true, &rc);
    if (!c) return rc;
    dsc_client_report r = {0};
    dsc_error err;
    dsc_status st = dsc_client_report_get(c, &rq, &r, &err);
    if (st != DSC_OK)
        rc = cli_fail_status(cx, st, &err);
    else if (cx->json)
        rc = cli_print_json(cx, report_json(&r));
    else if (csv)
        print_csv(&r);
    else
        print_table(&r);
    dsc_client_report_clear(&r);
    dsc_client_free(c);
    return rc;
}
