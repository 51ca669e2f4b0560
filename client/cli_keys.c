/*
 * cli_keys.c - `discern key create|list|revoke` and `discern decisions`: who may ask
 * discernd, and what it answered them.
 *
 *   discern key create --role R --scope S [--label L] [--expires-at T]   token, once
 *   discern key list [--scope S]                      the keys the caller may see
 *   discern key revoke --key-id ID
 *   discern decisions [--org --team --user --subject-key] [--since T] [--until T]
 *                     [--outcome O] [--limit N] [--after SEQ]
 *   discern admin-journal [--limit N] [--after SEQ]   who changed keys and budgets
 *
 * Flags, output (--json) and exit codes as the other server commands (cli_server.h);
 * key commands send --admin-token when given, else the --key of a manager.
 */
#include "cli_server.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

static const char key_usage[] =
    "usage: discern key create --role R --scope S [--label L] [--expires-at UNIX]\n"
    "       discern key list [--scope S]\n"
    "       discern key revoke --key-id ID\n";

static const char key_help[] =
    "\n"
    "Keys authenticate clients (auth, or HTTP Bearer). A key has a role and a scope:\n"
    "  admin    everything\n"
    "  manager  budgets and keys inside its scope, and reading\n"
    "  client   check, settle, cancel, estimate, budget get inside its scope\n"
    "  reader   budget get/list, decisions, stats inside its scope\n"
    "A scope is *, org:NAME, org:NAME/team:NAME or org:NAME/team:NAME/user:NAME; it fills\n"
    "the subject parts a request leaves out and refuses any other (forbidden).\n"
    "The token is printed once by create: only its hash is kept.\n"
    "\n"
    "  --role R              admin, manager, client or reader\n"
    "  --scope S             what the key may act on\n"
    "  --label L             a note for key list\n"
    "  --expires-at UNIX     the key stops working then (default: never)\n"
    "  --key-id ID           the key to revoke (from create or list)\n"
    "\n"
    "  --server ADDR         host:port or unix:/path (default DISCERN_SERVER, else\n"
    "                        127.0.0.1:7878)\n"
    "  --timeout MS          per call (default 2000)\n"
    "  --admin-token T       admin token (default DISCERN_ADMIN_TOKEN)\n"
    "  --key K               a manager's key token (default DISCERN_KEY)\n"
    "  --json                print JSON instead of text\n"
    "\n"
    "exit codes: 0 ok, 2 usage, 4 server unreachable, 1 other errors (forbidden,\n"
    "unauthorized, ...)\n";

static const char decisions_usage[] =
    "usage: discern decisions [--org O] [--team T] [--user U] [--subject-key K]\n"
    "                         [--since UNIX] [--until UNIX] [--outcome O]\n"
    "                         [--limit N] [--after SEQ]\n";

static const char decisions_help[] =
    "\n"
    "The decision journal: who asked (key), for whom, what for, the estimate, every\n"
    "policy's verdict (shadow ones marked), tags, and the answer. Only what the\n"
    "key's scope covers is shown; pages of --limit (default 100, at most 1000), the\n"
    "next one with --after (printed at the end when there is more).\n"
    "\n"
    "  --org --team --user --subject-key   only this subject\n"
    "  --since --until UNIX  a time range (seconds)\n"
    "  --outcome O           allow, throttle or refuse\n"
    "\n"
    "  --server ADDR --timeout MS --key K --json   as for the other commands\n"
    "\n"
    "exit codes: 0 ok, 2 usage, 4 server unreachable, 1 other errors\n";

static const char admin_journal_usage[] =
    "usage: discern admin-journal [--limit N] [--after SEQ]\n";

static const char admin_journal_help[] =
    "\n"
    "The admin journal, oldest first: every key created or revoked and every budget\n"
    "set or deleted, with when, the key id that did it (admin for the admin token)\n"
    "and what changed. Admin only. On a Redis store it lists the changes made\n"
    "through every replica. Pages of --limit (default 100, at most 1000), the next\n"
    "one with --after (printed at the end when there is more).\n"
    "\n"
    "  --server ADDR --timeout MS --admin-token T --key K --json   as for the other\n"
    "                        commands (an admin's key or the admin token)\n"
    "\n"
    "exit codes: 0 ok, 2 usage, 4 server unreachable, 1 other errors\n";

static int help(const char *usage, const char *text) {
    printf("%s%s", usage, text);
    return CLI_EXIT_OK;
}

static json_t *key_json(const dsc_client_key *k) {
    return json_pack("{s:s, s:s, s:s, s:s, s:s, s:I, s:I, s:I}", "key_id", k->key_id, "role",
                     k->role, "scope", k->scope, "label", k->label, "created_by", k->created_by,
                     "created_at", (json_int_t)k->created_at, "expires_at",
                     (json_int_t)k->expires_at, "revoked_at", (json_int_t)k->revoked_at);
}

static int key_create(cli_ctx *cx, int argc, char **argv) {
    dsc_client_key_request rq = {0};
    const char *expires = NULL;
    cli_flag f[] = {{.name = "--role", .value = &rq.role},
                    {.name = "--scope", .value = &rq.scope},
                    {.name = "--label", .value = &rq.label},
                    {.name = "--expires-at", .value = &expires}};
    int rc = cli_parse(cx, argc, argv, NULL, f, 4, NULL);
    if (rc != CLI_EXIT_OK) return rc;
    if (cx->help) return help(key_usage, key_help);
    if ((rc = cli_required(cx, "--role", rq.role)) ||
        (rc = cli_required(cx, "--scope", rq.scope)) ||
        (expires && (rc = cli_parse_count(cx, "--expires-at", expires, &rq.expires_at))))
        return rc;
    dsc_client *c = cli_connect(cx, true, &rc);
    if (!c) return rc;
    dsc_client_key k;
    dsc_error err;
    dsc_status st = dsc_client_key_create(c, &rq, &k, &err);
    if (st != DSC_OK) {
        rc = cli_fail_status(cx, st, &err);
    } else if (cx->json) {
        json_t *j = key_json(&k);
        json_object_set_new(j, "token", json_string(k.token));
        rc = cli_print_json(cx, j);
    } else {
        printf("key %s (%s, scope %s)\ntoken %s\n", k.key_id, k.role, k.scope, k.token);
        fputs("the token is shown only now: keep it secret (DISCERN_KEY or --key)\n", stderr);
    }
    memset(&k, 0, sizeof k);
    dsc_client_free(c);
    return rc;
}

static void print_keys(const dsc_client_keys *keys) {
    if (keys->count == 0) {
        puts("no keys");
        return;
    }
    printf("%-20s %-8s %-32s %-8s %s\n", "KEY", "ROLE", "SCOPE", "STATE", "LABEL");
    for (size_t i = 0; i < keys->count; i++) {
        const dsc_client_key *k = &keys->items[i];
        const char *state = k->revoked_at                                  ? "revoked"
                            : k->expires_at && k->expires_at <= time(NULL) ? "expired"
                                                                           : "active";
        printf("%-20s %-8s %-32s %-8s %s\n", k->key_id, k->role, k->scope, state, k->label);
    }
}

static int key_list(cli_ctx *cx, int argc, char **argv) {
    const char *scope = NULL;
    cli_flag f[] = {{.name = "--scope", .value = &scope}};
    int rc = cli_parse(cx, argc, argv, NULL, f, 1, NULL);
    if (rc != CLI_EXIT_OK) return rc;
    if (cx->help) return help(key_usage, key_help);
    dsc_client *c = cli_connect(cx, true, &rc);
    if (!c) return rc;
    dsc_client_keys keys;
    dsc_error err;
    dsc_status st = dsc_client_key_list(c, scope, &keys, &err);
    if (st != DSC_OK) {
        rc = cli_fail_status(cx, st, &err);
    } else if (cx->json) {
        json_t *arr = json_array();
        for (size_t i = 0; i < keys.count; i++)
            json_array_append_new(arr, key_json(&keys.items[i]));
        rc = cli_print_json(cx, json_pack("{s:o}", "keys", arr));
    } else {
        print_keys(&keys);
    }
    dsc_client_keys_clear(&keys);
    dsc_client_free(c);
    return rc;
}

static int key_revoke(cli_ctx *cx, int argc, char **argv) {
    const char *id = NULL;
    cli_flag f[] = {{.name = "--key-id", .value = &id}};
    int rc = cli_parse(cx, argc, argv, NULL, f, 1, NULL);
    if (rc != CLI_EXIT_OK) return rc;
    if (cx->help) return help(key_usage, key_help);
    if ((rc = cli_required(cx, "--key-id", id))) return rc;
    dsc_client *c = cli_connect(cx, true, &rc);
    if (!c) return rc;
    dsc_error err;
    dsc_status st = dsc_client_key_revoke(c, id, &err);
    if (st != DSC_OK)
        rc = cli_fail_status(cx, st, &err);
    else if (cx->json)
        rc = cli_print_json(cx, json_pack("{s:s, s:b}", "key_id", id, "revoked", 1));
    else
        printf("revoked %s\n", id);
    dsc_client_free(c);
    return rc;
}

int cli_key(cli_ctx *cx, int argc, char **argv) {
    const char *sub = argc >= 2 ? argv[1] : "";
    if (strcmp(sub, "create") == 0)
        return cli_subcommand(cx, sub), key_create(cx, argc - 1, argv + 1);
    if (strcmp(sub, "list") == 0) return cli_subcommand(cx, sub), key_list(cx, argc - 1, argv + 1);
    if (strcmp(sub, "revoke") == 0)
        return cli_subcommand(cx, sub), key_revoke(cx, argc - 1, argv + 1);
    if (cx->help || strcmp(sub, "--help") == 0 || strcmp(sub, "-h") == 0)
        return help(key_usage, key_help);
    fputs(key_usage, stderr);
    return cli_fail(cx, DSC_BAD_REQUEST, "%s '%s'",
                    sub[0] ? "unknown subcommand" : "missing subcommand", sub);
}

/* ------------------------------------------------------------------ decisions -- */

static json_t *decision_json(const dsc_client_decision *d) {
    json_t *verdicts = json_array(), *tags = json_object();
    for (size_t i = 0; i < d->n_verdicts; i++)
        json_array_append_new(verdicts,
                              json_pack("{s:s, s:s, s:s, s:b}", "policy", d->verdicts[i].policy,
                                        "outcome", d->verdicts[i].outcome, "reason",
                                        d->verdicts[i].reason, "shadow", d->verdicts[i].shadow));
    for (size_t i = 0; i < d->n_tags; i++)
        json_object_set_new(tags, d->tags[i][0], json_string(d->tags[i][1]));
    json_t *j = json_pack(
        "{s:s, s:f, s:s, s:{s:s, s:s, s:s, s:s}, s:s, s:s, s:s, s:s, s:I, s:I,"
        " s:{s:f, s:f, s:f}, s:s, s:s, s:s, s:s, s:s, s:o, s:o, s:I}",
        "decision_id", d->decision_id, "at", d->at, "key_id", d->key_id, "subject", "org", d->org,
        "team", d->team, "user", d->user, "key", d->key, "purpose", d->purpose, "purpose_class",
        d->purpose_class, "provider", d->provider, "model", d->model, "input_tokens",
        (json_int_t)d->input_tokens, "output_tokens", (json_int_t)d->output_tokens, "estimate",
        "energy_wh", d->est_energy_wh, "gco2e", d->est_gco2e, "water_ml", d->est_water_ml,
        "outcome", d->outcome, "policy", d->policy, "policy_version", d->policy_version, "reason",
        d->reason, "zone", d->zone, "verdicts", verdicts, "tags", tags, "seq", (json_int_t)d->seq);
    if (j && d->reservation[0]) json_object_set_new(j, "reservation", json_string(d->reservation));
    return j;
}

static void print_decision(const dsc_client_decision *d) {
    char when[32];
    time_t t = (time_t)d->at;
    struct tm tm;
    strftime(when, sizeof when, "%Y-%m-%d %H:%M:%S", gmtime_r(&t, &tm));
    char who[3 * sizeof d->org + 32];
    snprintf(who, sizeof who, "%s%s%s%s%s%s", d->org[0] ? "org:" : "", d->org,
             d->team[0] ? " team:" : "", d->team, d->user[0] ? " user:" : "", d->user);
    printf("%s  %-8s %-12s %-28s %s/%s %s: %s\n", when, d->outcome, d->key_id, who, d->provider,
           d->model, d->purpose, d->reason);
    for (size_t i = 0; i < d->n_verdicts; i++)
        printf("    %s%s: %s (%s)\n", d->verdicts[i].policy,
               d->verdicts[i].shadow ? " [shadow]" : "", d->verdicts[i].outcome,
               d->verdicts[i].reason);
    for (size_t i = 0; i < d->n_tags; i++)
        printf("    tag %s=%s\n", d->tags[i][0], d->tags[i][1]);
}

static int print_decisions(const cli_ctx *cx, const dsc_client_decisions *ds) {
    if (cx->json) {
        json_t *arr = json_array();
        for (size_t i = 0; i < ds->count; i++)
            json_array_append_new(arr, decision_json(&ds->items[i]));
        json_t *j = json_pack("{s:o}", "decisions", arr);
        if (ds->next) json_object_set_new(j, "next", json_integer(ds->next));
        return cli_print_json(cx, j);
    }
    if (ds->count == 0) puts("no decisions");
    for (size_t i = 0; i < ds->count; i++)
        print_decision(&ds->items[i]);
    if (ds->next) printf("more: --after %lld\n", (long long)ds->next);
    return CLI_EXIT_OK;
}

static int decisions_flags(const cli_ctx *cx, const char *since, const char *until,
                           const char *limit, const char *after, dsc_client_decisions_request *rq) {
    int rc = CLI_EXIT_OK;
    if ((since && (rc = cli_parse_number(cx, "--since", since, 0, false, &rq->since))) ||
        (until && (rc = cli_parse_number(cx, "--until", until, 0, false, &rq->until))) ||
        (limit && (rc = cli_parse_count(cx, "--limit", limit, &rq->limit))) ||
        (after && (rc = cli_parse_count(cx, "--after", after, &rq->after))))
        return rc;
    return CLI_EXIT_OK;
}

int cli_decisions(cli_ctx *cx, int argc, char **argv) {
    cli_req req = {0};
    dsc_client_decisions_request rq = {0};
    const char *since = NULL, *until = NULL, *limit = NULL, *after = NULL;
    cli_flag f[] = {
        {.name = "--org", .value = &req.org},        {.name = "--team", .value = &req.team},
        {.name = "--user", .value = &req.user},      {.name = "--subject-key", .value = &req.key},
        {.name = "--since", .value = &since},        {.name = "--until", .value = &until},
        {.name = "--outcome", .value = &rq.outcome}, {.name = "--limit", .value = &limit},
        {.name = "--after", .value = &after}};
    int rc = cli_parse(cx, argc, argv, NULL, f, sizeof f / sizeof f[0], NULL);
    if (rc != CLI_EXIT_OK) return rc;
    if (cx->help) return help(decisions_usage, decisions_help);
    if ((rc = decisions_flags(cx, since, until, limit, after, &rq))) return rc;
    rq.subject = (dsc_client_subject){req.org, req.team, req.user, req.key};
    dsc_client *c = cli_connect(cx, false, &rc);
    if (!c) return rc;
    dsc_client_decisions ds;
    dsc_error err;
    dsc_status st = dsc_client_decisions_list(c, &rq, &ds, &err);
    rc = st != DSC_OK ? cli_fail_status(cx, st, &err) : print_decisions(cx, &ds);
    dsc_client_decisions_clear(&ds);
    dsc_client_free(c);
    return rc;
}

/* -------------------------------------------------------------- admin journal -- */

static json_t *change_json(const dsc_client_admin_change *c) {
    return json_pack("{s:I, s:f, s:s, s:s, s:s, s:s}", "seq", (json_int_t)c->seq, "at", c->at,
                     "by_key", c->by_key, "action", c->action, "target", c->target, "detail",
                     c->detail);
}

static int print_changes(const cli_ctx *cx, const dsc_client_admin_journal *aj) {
    if (cx->json) {
        json_t *arr = json_array();
        for (size_t i = 0; i < aj->count; i++)
            json_array_append_new(arr, change_json(&aj->items[i]));
        json_t *j = json_pack("{s:o}", "changes", arr);
        if (aj->next) json_object_set_new(j, "next", json_integer(aj->next));
        return cli_print_json(cx, j);
    }
    if (aj->count == 0) puts("no changes");
    for (size_t i = 0; i < aj->count; i++) {
        const dsc_client_admin_change *c = &aj->items[i];
        char when[32];
        time_t t = (time_t)c->at;
        struct tm tm;
        strftime(when, sizeof when, "%Y-%m-%d %H:%M:%S", gmtime_r(&t, &tm));
        printf("%s  %-13s %-12s %s%s%s\n", when, c->action, c->by_key, c->target,
               c->detail[0] ? "  " : "", c->detail);
    }
    if (aj->next) printf("more: --after %lld\n", (long long)aj->next);
    return CLI_EXIT_OK;
}

int cli_admin_journal(cli_ctx *cx, int argc, char **argv) {
    dsc_client_admin_journal_request rq = {0};
    const char *limit = NULL, *after = NULL;
    cli_flag f[] = {{.name = "--limit", .value = &limit}, {.name = "--after", .value = &after}};
    int rc = cli_parse(cx, argc, argv, NULL, f, sizeof f / sizeof f[0], NULL);
    if (rc != CLI_EXIT_OK) return rc;
    if (cx->help) return help(admin_journal_usage, admin_journal_help);
    if ((limit && (rc = cli_parse_count(cx, "--limit", limit, &rq.limit))) ||
        (after && (rc = cli_parse_count(cx, "--after", after, &rq.after))))
        return rc;
    dsc_client *c = cli_connect(cx, true, &rc);
    if (!c) return rc;
    dsc_client_admin_journal aj = {0};
    dsc_error err;
    dsc_status st = dsc_client_admin_journal_list(c, &rq, &aj, &err);
    rc = st != DSC_OK ? cli_fail_status(cx, st, &err) : print_changes(cx, &aj);
    dsc_client_admin_journal_clear(&aj);
    dsc_client_free(c);
    return rc;
}
