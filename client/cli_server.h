/*
 * cli_server.h - what the server-facing subcommands of `discern` share (check,
 * settle, cancel, budget, grid, reload, stats, ping, exec): their flag parser, the
 * request flags every one of them spells the same way, connecting, mapping a
 * dsc_status to an exit code, and the budgets table.
 *
 * Implemented in cli_server.c; used by cli_budget.c and cli_exec.c.
 */
#ifndef DISCERN_CLI_SERVER_H
#define DISCERN_CLI_SERVER_H

#include "cli.h"

#include "discern/client.h"

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

/* One flag: a valued one stores its text in *value, a switch sets *on. */
typedef struct cli_flag {
    const char *name;
    const char **value;
    int *on;
} cli_flag;

/* Flags every server command takes: --server, --timeout, --json, --admin-token. */
typedef struct cli_conn {
    const char *server, *timeout, *admin_token, *key;
    int json, help;
} cli_conn;

/* The request flags: --provider --model --output-tokens --input-tokens --purpose
 * --org --team --user --key --zone (and --tag K=V, --request-id, --ttl, --no-reserve). */
typedef struct cli_req {
    const char *provider, *model, *output_tokens, *input_tokens, *purpose;
    const char *org, *team, *user, *key, *zone, *request_id, *ttl;
    const char *tags[32];  /* key, value, key, value ... (split from --tag K=V) */
    char tag_keys[16][64]; /* the keys' text (values point into argv) */
    size_t n_tags;
    int no_reserve;
    bool scoped; /* a key is given: its scope may fill the whole subject */
} cli_req;

/* Parse argv[1..argc) against the flags of conn, req (may be NULL) and extra; stops
 * at "--" (its index in *rest, else argc; rest may be NULL when "--" is not
 * allowed). Returns CLI_EXIT_OK or prints and returns CLI_EXIT_USAGE. */
int cli_parse(int argc, char **argv, cli_conn *conn, cli_req *req, const cli_flag *extra,
              size_t n_extra, int *rest);
/* Build a check request from the flags (strings borrowed from req); USAGE naming the
 * flag when a required one is missing or a number is bad. Subject parts not given
 * come from DISCERN_ORG, DISCERN_TEAM, DISCERN_USER, DISCERN_KEY. */
int cli_check_request(cli_req *req, dsc_client_check_request *out);
/* Subject flags only (budget get). */
int cli_subject(cli_req *req, dsc_client_subject *out);
/* A handle for --server / DISCERN_SERVER / 127.0.0.1:7878; admin adds the token of
 * --admin-token / DISCERN_ADMIN_TOKEN. NULL after printing (exit code in *code). */
dsc_client *cli_connect(const cli_conn *conn, bool admin, int *code);
/* Print "discern: <what>: <message>" and return the exit code of st. */
int cli_fail_status(dsc_status st, const dsc_error *err, const char *what);
/* The exit code of a status: 3 unknown provider/model/zone/metric, 2 bad request,
 * 4 unreachable or timed out, 1 otherwise. */
int cli_exit_of(dsc_status st);
/* The exit code of a decision: 0, 10, 11. */
int cli_exit_of_decision(dsc_decision d);

/* A non-negative integer option; USAGE naming opt otherwise. */
int cli_parse_count(const char *opt, const char *text, int64_t *out);
/* A finite number >= min (exclusive when strict). */
int cli_parse_number(const char *opt, const char *text, double min, bool strict, double *out);

/* Human output. */
void cli_print_budgets(FILE *out, const dsc_client_budgets *b, bool with_request);
void cli_print_check(FILE *out, const dsc_client_check_result *r);
/* JSON output. */
json_t *cli_json_budgets(const dsc_client_budgets *b);
json_t *cli_json_check(const dsc_client_check_result *r);
json_t *cli_json_impacts(const dsc_client_impacts *im);
/* Print (and free) a JSON value; CLI_EXIT_OK, or FAIL when it could not be built. */
int cli_print_json(json_t *v);
/* "2026-12-01 00:00:00 UTC" */
void cli_format_time(int64_t t, char *buf, size_t cap);

#endif
