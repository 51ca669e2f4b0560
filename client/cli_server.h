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

/* The request flags: --provider --model --output-tokens --input-tokens --purpose
 * --org --team --user --key --zone (and --tag K=V, --request-id, --ttl, --no-reserve). */
typedef struct cli_req {
    const char *provider, *model, *output_tokens, *input_tokens, *purpose;
    const char *org, *team, *user, *key, *zone, *request_id, *ttl;
    const char *cached_tokens, *reasoning_tokens, *method;
    const char *tags[32];  /* key, value, key, value ... (split from --tag K=V) */
    char tag_keys[16][64]; /* the keys' text (values point into argv) */
    size_t n_tags;
    int no_reserve;
    bool scoped; /* a key is given: its scope may fill the whole subject */
} cli_req;

/* Parse argv[1..argc) against the common flags, those of req (may be NULL) and
 * extra; as cli_parse_flags. */
int cli_parse(cli_ctx *cx, int argc, char **argv, cli_req *req, const cli_flag *extra,
              size_t n_extra, int *rest);
/* Build a check request from the flags (strings borrowed from req); USAGE naming the
 * flag when a required one is missing or a number is bad. Subject parts not given
 * come from DISCERN_ORG, DISCERN_TEAM, DISCERN_USER, DISCERN_SUBJECT_KEY. */
int cli_check_request(const cli_ctx *cx, cli_req *req, dsc_client_check_request *out);
/* Subject flags only (budget get). */
int cli_subject(const cli_ctx *cx, cli_req *req, dsc_client_subject *out);
/* A handle for --server / DISCERN_SERVER / 127.0.0.1:7878; admin adds the token of
 * --admin-token / DISCERN_ADMIN_TOKEN. NULL after printing (exit code in *code). */
dsc_client *cli_connect(const cli_ctx *cx, bool admin, int *code);
/* The exit code of a decision: 0, 10, 11. */
int cli_exit_of_decision(dsc_decision d);

/* Human output. */
void cli_print_budgets(FILE *out, const dsc_client_budgets *b, bool with_request);
void cli_print_check(FILE *out, const dsc_client_check_result *r);
/* JSON output. */
json_t *cli_json_budgets(const dsc_client_budgets *b);
json_t *cli_json_check(const dsc_client_check_result *r);
json_t *cli_json_impacts(const dsc_client_impacts *im);
/* Print (and free) a JSON value; CLI_EXIT_OK, or FAIL when it could not be built. */
int cli_print_json(const cli_ctx *cx, json_t *v);
/* "2026-12-01 00:00:00 UTC" */
void cli_format_time(int64_t t, char *buf, size_t cap);

#endif
