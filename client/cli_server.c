/*
 * cli_server.c - the `discern` subcommands that talk to discernd, and what they
 * share (cli_server.h):
 *
 *   discern check  [request flags]                may this request go ahead?
 *   discern settle --reservation R --input-tokens N --output-tokens N [--latency S]
 *   discern cancel --reservation R
 *   discern grid set --zone Z --gco2e-per-kwh X (--valid-until T | --valid-for S)
 *   discern reload                                recompile and switch the policies
 *   discern stats | discern ping
 *
 * (budget in cli_budget.c, exec in cli_exec.c). Every command takes --server,
 * --timeout, --json and --help; admin ones take --admin-token. Exit codes: 0 allow
 * or success, 10 throttle, 11 refuse, 2 usage, 3 unknown provider/model/zone,
 * 4 server unreachable or timed out, 1 any other error.
 */
#include "cli_server.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* -------------------------------------------------------------------- flags -- */

#define MAX_FLAGS 48

/* --tag K=V: split into the request's tag list. */
static int add_tag(const cli_ctx *cx, void *ud, const char *text) {
    cli_req *req = ud;
    const char *eq = strchr(text, '=');
    if (!eq || eq == text)
        return cli_fail(cx, DSC_BAD_REQUEST, "option --tag: '%s' is not KEY=VALUE", text);
    if (req->n_tags >= 16) return cli_fail(cx, DSC_BAD_REQUEST, "option --tag: at most 16 tags");
    size_t n = (size_t)(eq - text);
    char *k = req->tag_keys[req->n_tags];
    if (n >= sizeof req->tag_keys[0])
        return cli_fail(cx, DSC_BAD_REQUEST, "option --tag: key '%.*s' is longer than %zu bytes",
                        (int)n, text, sizeof req->tag_keys[0] - 1);
    memcpy(k, text, n);
    k[n] = '\0';
    req->tags[2 * req->n_tags] = k;
    req->tags[2 * req->n_tags + 1] = eq + 1;
    req->n_tags++;
    return CLI_EXIT_OK;
}

static size_t add_req_flags(cli_flag *f, size_t n, cli_req *r) {
    f[n++] = (cli_flag){.name = "--provider", .value = &r->provider};
    f[n++] = (cli_flag){.name = "--model", .value = &r->model};
    f[n++] = (cli_flag){.name = "--output-tokens", .value = &r->output_tokens};
    f[n++] = (cli_flag){.name = "--input-tokens", .value = &r->input_tokens};
    f[n++] = (cli_flag){.name = "--purpose", .value = &r->purpose};
    f[n++] = (cli_flag){.name = "--org", .value = &r->org};
    f[n++] = (cli_flag){.name = "--team", .value = &r->team};
    f[n++] = (cli_flag){.name = "--user", .value = &r->user};
    f[n++] = (cli_flag){.name = "--subject-key", .value = &r->key};
    f[n++] = (cli_flag){.name = "--zone", .value = &r->zone};
    f[n++] = (cli_flag){.name = "--request-id", .value = &r->request_id};
    f[n++] = (cli_flag){.name = "--ttl", .value = &r->ttl};
    f[n++] = (cli_flag){.name = "--no-reserve", .on = &r->no_reserve};
    f[n++] = (cli_flag){.name = "--cached-tokens", .value = &r->cached_tokens};
    f[n++] = (cli_flag){.name = "--reasoning-tokens", .value = &r->reasoning_tokens};
    f[n++] = (cli_flag){.name = "--method", .value = &r->method};
    f[n++] = (cli_flag){.name = "--tag", .add = add_tag, .ud = r};
    return n;
}

static const char *env_or(const char *flag, const char *env) {
    if (flag) return flag;
    const char *v = getenv(env);
    return v && v[0] ? v : NULL;
}

int cli_parse(cli_ctx *cx, int argc, char **argv, cli_req *req, const cli_flag *extra,
              size_t n_extra, int *rest) {
    cli_flag f[MAX_FLAGS] = {0};
    size_t n = req ? add_req_flags(f, 0, req) : 0;
    for (size_t k = 0; k < n_extra && n < MAX_FLAGS; k++)
        f[n++] = extra[k];
    int rc = cli_parse_flags(cx, argc, argv, f, n, rest);
    if (req) req->scoped = env_or(cx->key, "DISCERN_KEY") != NULL;
    return rc;
}

int cli_subject(const cli_ctx *cx, cli_req *req, dsc_client_subject *out) {
    out->org = req->org = env_or(req->org, "DISCERN_ORG");
    out->team = req->team = env_or(req->team, "DISCERN_TEAM");
    out->user = req->user = env_or(req->user, "DISCERN_USER");
    out->key = req->key = env_or(req->key, "DISCERN_SUBJECT_KEY");
    if (out->org || out->team || out->user || out->key || req->scoped) return CLI_EXIT_OK;
    return cli_fail(cx, DSC_BAD_REQUEST,
                    "who asks? give --org, --team, --user or --subject-key (or DISCERN_ORG, "
                    "DISCERN_TEAM, DISCERN_USER, DISCERN_SUBJECT_KEY), or a key whose scope "
                    "names them (--key)");
}

int cli_check_request(const cli_ctx *cx, cli_req *req, dsc_client_check_request *out) {
    int rc;
    memset(out, 0, sizeof *out);
    if ((rc = cli_required(cx, "--provider", req->provider)) ||
        (rc = cli_required(cx, "--model", req->model)) ||
        (rc = cli_required(cx, "--output-tokens", req->output_tokens)) ||
        (rc = cli_required(cx, "--purpose", req->purpose)) ||
        (rc = cli_subject(cx, req, &out->subject)))
        return rc;
    if ((rc = cli_parse_count(cx, "--output-tokens", req->output_tokens, &out->output_tokens)))
        return rc;
    if ((req->input_tokens &&
         (rc = cli_parse_count(cx, "--input-tokens", req->input_tokens, &out->input_tokens))) ||
        (req->cached_tokens && (rc = cli_parse_count(cx, "--cached-tokens", req->cached_tokens,
                                                     &out->cached_input_tokens))) ||
        (req->reasoning_tokens &&
         (rc = cli_parse_count(cx, "--reasoning-tokens", req->reasoning_tokens,
                               &out->reasoning_tokens))))
        return rc;
    out->method = req->method;
    if (req->ttl) {
        int64_t ttl = 0;
        if ((rc = cli_parse_count(cx, "--ttl", req->ttl, &ttl))) return rc;
        if (ttl < 1 || ttl > 86400)
            return cli_fail(cx, DSC_BAD_REQUEST, "option --ttl: %s is not in 1..86400", req->ttl);
        out->ttl_s = (int)ttl;
    }
    out->provider = req->provider, out->model = req->model, out->purpose = req->purpose;
    out->zone = req->zone, out->request_id = req->request_id;
    out->tags = req->tags, out->n_tags = req->n_tags;
    out->no_reserve = req->no_reserve;
    return CLI_EXIT_OK;
}

/* --------------------------------------------------------------- connecting -- */

dsc_client *cli_connect(const cli_ctx *cx, bool admin, int *code) {
    const char *server = env_or(cx->server, "DISCERN_SERVER");
    dsc_client_options o = {0};
    if (cx->timeout) {
        double ms = 0;
        if ((*code = cli_parse_number(cx, "--timeout", cx->timeout, 0, true, &ms))) return NULL;
        o.timeout_ms = ms > 3600000 ? 3600000 : (int)ceil(ms);
    }
    /* an admin command falls back on DISCERN_ADMIN_TOKEN; a read of an admin-capable
     * command (budget get, key list) uses the token only when it is given */
    o.admin_token = admin ? env_or(cx->admin_token, "DISCERN_ADMIN_TOKEN") : cx->admin_token;
    o.key = env_or(cx->key, "DISCERN_KEY"); /* used when there is no admin token */
    dsc_error err;
    dsc_client *c = dsc_client_new(server ? server : "127.0.0.1:7878", &o, &err);
    if (!c) *code = cli_fail(cx, err.code, "--server: %s", err.message);
    return c;
}

int cli_exit_of_decision(dsc_decision d) {
    return d == DSC_DECISION_ALLOW      ? CLI_EXIT_OK
           : d == DSC_DECISION_THROTTLE ? CLI_EXIT_THROTTLE
                                        : CLI_EXIT_REFUSE;
}

/* ------------------------------------------------------------------- output -- */

int cli_print_json(const cli_ctx *cx, json_t *v) {
    char *text = v ? json_dumps(v, JSON_INDENT(2) | JSON_REAL_PRECISION(15)) : NULL;
    json_decref(v);
    if (!text) return cli_fail(cx, DSC_NOMEM, "out of memory while writing JSON");
    puts(text);
    free(text);
    return CLI_EXIT_OK;
}

void cli_format_time(int64_t t, char *buf, size_t cap) {
    time_t tt = (time_t)t;
    struct tm tm;
    if (t <= 0 || !gmtime_r(&tt, &tm) || !strftime(buf, cap, "%Y-%m-%d %H:%M:%S UTC", &tm))
        snprintf(buf, cap, "-");
}

static json_t *json_range(dsc_client_range r) {
    return json_pack("{s:f,s:f}", "min", r.min, "max", r.max);
}

json_t *cli_json_impacts(const dsc_client_impacts *im) {
    return json_pack("{s:o,s:o,s:o,s:o,s:o}", "energy_kwh", json_range(im->energy_kwh),
                     "gwp_kgco2eq", json_range(im->gwp_kgco2eq), "adpe_kgsbeq",
                     json_range(im->adpe_kgsbeq), "pe_mj", json_range(im->pe_mj), "wcf_l",
                     json_range(im->wcf_l));
}

json_t *cli_json_budgets(const dsc_client_budgets *b) {
    json_t *a = json_array();
    for (size_t i = 0; a && i < b->count; i++) {
        const dsc_client_budget *x = &b->items[i];
        json_t *o =
            json_pack("{s:s,s:s,s:s,s:f,s:f,s:f,s:f,s:f,s:I,s:b}", "selector", x->selector,
                      "metric", x->metric, "window", x->window, "limit", x->limit, "used", x->used,
                      "held", x->held, "remaining", x->remaining, "request", x->request,
                      "resets_at", (json_int_t)x->resets_at, "would_exceed", x->would_exceed);
        if (o && x->counter[0]) json_object_set_new(o, "counter", json_string(x->counter));
        if (o && x->unit[0]) json_object_set_new(o, "unit", json_string(x->unit));
        json_array_append_new(a, o);
    }
    return a;
}

json_t *cli_json_check(const dsc_client_check_result *r) {
    json_t *o = json_pack("{s:s,s:s,s:s,s:s,s:s,s:s,s:o,s:o,s:b}", "decision",
                          dsc_decision_name(r->decision), "reason", r->reason, "policy", r->policy,
                          "policy_version", r->policy_version, "decision_id", r->decision_id,
                          "zone", r->zone, "estimate", cli_json_impacts(&r->estimate), "budgets",
                          cli_json_budgets(&r->budgets), "unenforced", r->unenforced);
    if (!o) return NULL;
    if (r->decision == DSC_DECISION_THROTTLE)
        json_object_set_new(o, "retry_after_s", json_real(r->retry_after_s));
    if (r->suggest_model[0])
        json_object_set_new(
            o, "suggest",
            json_pack("{s:s,s:s}", "provider", r->suggest_provider, "model", r->suggest_model));
    if (r->reservation[0]) {
        json_object_set_new(o, "reservation", json_string(r->reservation));
        json_object_set_new(o, "expires_at", json_integer(r->expires_at));
    }
    return o;
}

/* [####++......] used, held, remaining of limit in width cells. */
static void bar(char *out, int width, const dsc_client_budget *b) {
    double lim = b->limit > 0 ? b->limit : 1;
    int used = (int)lround(fmin(1, b->used / lim) * width);
    int held = (int)lround(fmin(1, (b->used + b->held) / lim) * width) - used;
    if (held < 0) held = 0;
    int i = 0;
    out[i++] = '[';
    for (int k = 0; k < width; k++)
        out[i++] = k < used ? '#' : k < used + held ? '+' : '.';
    out[i++] = ']';
    out[i] = '\0';
}

static int widest(int width, const char *s) {
    int n = (int)strlen(s);
    return n > width ? n : width;
}

void cli_print_budgets(FILE *out, const dsc_client_budgets *b, bool with_request) {
    if (b->count == 0) {
        fputs("no budget applies\n", out);
        return;
    }
    int wsel = 6, wcnt = 7, wwin = 6; /* widths of BUDGET, COUNTER, WINDOW: the widest value */
    for (size_t i = 0; i < b->count; i++) {
        wsel = widest(wsel, b->items[i].selector);
        wcnt = widest(wcnt, b->items[i].counter);
        wwin = widest(wwin, b->items[i].window);
    }
    fprintf(out, "%-*s %-*s %-9s %-*s %-22s %12s %12s %12s %12s%s  %s\n", wsel, "BUDGET", wcnt,
            "COUNTER", "METRIC", wwin, "WINDOW", "USED # HELD + FREE .", "USED", "HELD",
            "REMAINING", "LIMIT", with_request ? "      REQUEST" : "", "RESETS");
    for (size_t i = 0; i < b->count; i++) {
        const dsc_client_budget *x = &b->items[i];
        char cells[24], when[32], req[32] = "";
        bar(cells, 20, x);
        cli_format_time(x->resets_at, when, sizeof when);
        if (with_request)
            snprintf(req, sizeof req, " %12.6g%s", x->request, x->would_exceed ? "!" : " ");
        fprintf(out, "%-*s %-*s %-9s %-*s %-22s %12.6g %12.6g %12.6g %12.6g%s  %s\n", wsel,
                x->selector, wcnt, x->counter, x->metric, wwin, x->window, cells, x->used, x->held,
                x->remaining, x->limit, req, when);
    }
}

/* An allow that carries a suggestion reads as an allow plus a suggestion: the
 * reason is the suggestion's, not a doubt about the allow. */
void cli_print_check(FILE *out, const dsc_client_check_result *r) {
    bool advice = r->decision == DSC_DECISION_ALLOW && r->suggest_model[0];
    const char *reason = r->reason[0] ? r->reason : "-";
    if (advice)
        fputs("allow, with a suggestion", out);
    else
        fprintf(out, "%s: %s", dsc_decision_name(r->decision), reason);
    if (r->policy[0])
        fprintf(out, " [policy %s%s%s]", r->policy, r->policy_version[0] ? " " : "",
                r->policy_version);
    fputc('\n', out);
    if (r->decision == DSC_DECISION_THROTTLE) fprintf(out, "retry after %g s\n", r->retry_after_s);
    if (advice)
        fprintf(out, "suggestion: %s/%s (%s)\n", r->suggest_provider, r->suggest_model, reason);
    else if (r->suggest_model[0])
        fprintf(out, "suggested instead: %s/%s\n", r->suggest_provider, r->suggest_model);
    if (r->reservation[0]) {
        char when[32];
        cli_format_time(r->expires_at, when, sizeof when);
        fprintf(out, "reservation %s (expires %s)\n", r->reservation, when);
    }
    if (r->unenforced) fputs("unenforced: the ledger store was unavailable\n", out);
    const dsc_client_impacts *e = &r->estimate;
    fprintf(out, "estimate (zone %s): energy %.4g-%.4g Wh, %.4g-%.4g gCO2e, water %.4g-%.4g mL\n",
            r->zone[0] ? r->zone : "-", e->energy_kwh.min * 1e3, e->energy_kwh.max * 1e3,
            e->gwp_kgco2eq.min * 1e3, e->gwp_kgco2eq.max * 1e3, e->wcf_l.min * 1e3,
            e->wcf_l.max * 1e3);
    cli_print_budgets(out, &r->budgets, true);
}

/* -------------------------------------------------------------------- check -- */

static const char request_flags_help[] =
    "request flags:\n"
    "  --provider P          provider: openai, anthropic, mistralai, ...\n"
    "  --model M             model name or alias\n"
    "  --output-tokens N     expected output tokens (the upper bound, e.g. max_tokens)\n"
    "  --input-tokens N      prompt tokens (default 0)\n"
    "  --purpose P           why: code-review, chat, summarise, ...\n"
    "  --org O --team T --user U --subject-key K\n"
    "                        who asks (default from DISCERN_ORG, DISCERN_TEAM,\n"
    "                        DISCERN_USER, DISCERN_SUBJECT_KEY; with --key, what the\n"
    "                        key's scope leaves out)\n"
    "  --zone Z              electricity mix (ISO 3166-1 alpha-3 or WOR)\n"
    "  --tag K=V             passed to policies and kept in the journal (repeatable)\n"
    "  --request-id ID       idempotency key (default: a fresh one)\n"
    "  --ttl S               how long the hold lives (1..86400 s)\n"
    "  --no-reserve          decide only, hold nothing\n"
    "  --cached-tokens N     of the input tokens, how many a prompt cache serves\n"
    "  --reasoning-tokens N  hidden reasoning tokens expected besides the answer\n"
    "  --method M            estimation method: ecologits or discern (default: the\n"
    "                        server's estimate_method)\n";

static const char conn_help[] =
    "connection (common flags: they may also stand before the command):\n"
    "  --server ADDR         host:port or unix:/path (default DISCERN_SERVER, else\n"
    "                        127.0.0.1:7878)\n"
    "  --timeout MS          per call (default 2000)\n"
    "  --json                print JSON instead of text\n";

static const char admin_help[] =
    "  --admin-token T       admin token (default DISCERN_ADMIN_TOKEN)\n"
    "  --key K               API key token dsk_... (default DISCERN_KEY)\n";

static int help(const char *usage, const char *body, bool req, bool admin) {
    printf("%s\n%s\n", usage, body);
    if (req) printf("%s\n", request_flags_help);
    printf("%s", conn_help);
    if (admin) printf("%s", admin_help);
    printf("\nexit codes: 0 ok/allow, 10 throttle, 11 refuse, 2 usage, 3 unknown\n"
           "provider/model/zone, 4 server unreachable or timed out, 1 other errors\n");
    return CLI_EXIT_OK;
}

int cli_check(cli_ctx *cx, int argc, char **argv) {
    cli_req req = {0};
    int rc = cli_parse(cx, argc, argv, &req, NULL, 0, NULL);
    if (rc != CLI_EXIT_OK) return rc;
    if (cx->help)
        return help("usage: discern check --provider P --model M --output-tokens N --purpose P "
                    "--user U [options]",
                    "Ask discernd whether this AI request may go ahead. Prints the decision\n"
                    "and its reason, the footprint estimate and every budget that applies;\n"
                    "an allowed request holds a reservation to settle or cancel.",
                    true, false);
    dsc_client_check_request rq;
    if ((rc = cli_check_request(cx, &req, &rq))) return rc;
    rq.budgets = true; /* it shows every budget that applies */
    dsc_client *c = cli_connect(cx, false, &rc);
    if (!c) return rc;
    dsc_client_check_result r;
    dsc_error err;
    dsc_status st = dsc_client_check(c, &rq, &r, &err);
    if (st != DSC_OK)
        rc = cli_fail_status(cx, st, &err);
    else if (cx->json)
        rc = cli_print_json(cx, cli_json_check(&r));
    else
        cli_print_check(stdout, &r);
    if (st == DSC_OK && rc == CLI_EXIT_OK) rc = cli_exit_of_decision(r.decision);
    dsc_client_check_result_clear(&r);
    dsc_client_free(c);
    return rc;
}

/* ----------------------------------------------------------- settle, cancel -- */

static json_t *json_amounts(const dsc_client_amounts *a) {
    return json_pack("{s:f,s:f,s:f,s:f,s:f,s:f,s:f}", "energy_wh", a->energy_wh, "gco2e", a->gco2e,
                     "water_ml", a->water_ml, "pe_mj", a->pe_mj, "cost", a->cost, "tokens",
                     a->tokens, "requests", a->requests);
}

int cli_settle(cli_ctx *cx, int argc, char **argv) {
    const char *res = NULL, *in = NULL, *out = NULL, *lat = NULL, *cached = NULL, *reasoning = NULL;
    dsc_client_settle_request rq = {0};
    cli_flag f[] = {{.name = "--reservation", .value = &res},
                    {.name = "--input-tokens", .value = &in},
                    {.name = "--output-tokens", .value = &out},
                    {.name = "--latency", .value = &lat},
                    {.name = "--cached-tokens", .value = &cached},
                    {.name = "--reasoning-tokens", .value = &reasoning},
                    {.name = "--method", .value = &rq.method}};
    int rc = cli_parse(cx, argc, argv, NULL, f, sizeof f / sizeof f[0], NULL);
    if (rc != CLI_EXIT_OK) return rc;
    if (cx->help)
        return help("usage: discern settle --reservation R --output-tokens N [--input-tokens N] "
                    "[--latency S] [--cached-tokens N] [--reasoning-tokens N] [--method M]",
                    "Report what an allowed request really used: the hold is replaced by the\n"
                    "actual usage. Repeating a settle charges nothing more.\n\n"
                    "  --reservation R       from check\n"
                    "  --output-tokens N     actual output tokens\n"
                    "  --input-tokens N      actual input tokens (default 0)\n"
                    "  --latency S           measured latency in seconds\n"
                    "  --cached-tokens N     actual input tokens served from a prompt cache\n"
                    "  --reasoning-tokens N  actual hidden reasoning tokens\n"
                    "  --method M            ecologits or discern: as given to check (the\n"
                    "                        server does not remember the check's method)\n",
                    false, false);
    rq.reservation = res;
    if ((rc = cli_required(cx, "--reservation", res)) ||
        (rc = cli_required(cx, "--output-tokens", out)) ||
        (rc = cli_parse_count(cx, "--output-tokens", out, &rq.output_tokens)) ||
        (in && (rc = cli_parse_count(cx, "--input-tokens", in, &rq.input_tokens))) ||
        (lat && (rc = cli_parse_number(cx, "--latency", lat, 0, true, &rq.latency_s))) ||
        (cached &&
         (rc = cli_parse_count(cx, "--cached-tokens", cached, &rq.cached_input_tokens))) ||
        (reasoning &&
         (rc = cli_parse_count(cx, "--reasoning-tokens", reasoning, &rq.reasoning_tokens))))
        return rc;
    dsc_client *c = cli_connect(cx, false, &rc);
    if (!c) return rc;
    dsc_client_settle_result r;
    dsc_error err;
    dsc_status st = dsc_client_settle(c, &rq, &r, &err);
    if (st != DSC_OK) {
        rc = cli_fail_status(cx, st, &err);
    } else if (cx->json) {
        rc = cli_print_json(cx, json_pack("{s:s,s:s,s:o,s:o,s:o}", "reservation", r.reservation,
                                          "settled", r.settled, "charged", json_amounts(&r.charged),
                                          "estimate", cli_json_impacts(&r.estimate), "budgets",
                                          cli_json_budgets(&r.budgets)));
    } else {
        if (strcmp(r.settled, "repeated") == 0)
            printf("settled %s (repeated): already settled, nothing more charged\n", r.reservation);
        else
            printf("settled %s (%s): %.4g Wh, %.4g gCO2e, %.4g mL water, %.0f tokens\n",
                   r.reservation, r.settled[0] ? r.settled : "-", r.charged.energy_wh,
                   r.charged.gco2e, r.charged.water_ml, r.charged.tokens);
        cli_print_budgets(stdout, &r.budgets, false);
    }
    dsc_client_settle_result_clear(&r);
    dsc_client_free(c);
    return rc;
}

int cli_cancel(cli_ctx *cx, int argc, char **argv) {
    const char *res = NULL;
    cli_flag f[] = {{.name = "--reservation", .value = &res}};
    int rc = cli_parse(cx, argc, argv, NULL, f, 1, NULL);
    if (rc != CLI_EXIT_OK) return rc;
    if (cx->help)
        return help("usage: discern cancel --reservation R",
                    "Release the hold of an allowed request that did not happen; nothing is\n"
                    "charged.\n\n  --reservation R       from check\n",
                    false, false);
    if ((rc = cli_required(cx, "--reservation", res))) return rc;
    dsc_client *c = cli_connect(cx, false, &rc);
    if (!c) return rc;
    dsc_client_cancel_result r;
    dsc_error err;
    dsc_status st = dsc_client_cancel(c, res, &r, &err);
    if (st != DSC_OK)
        rc = cli_fail_status(cx, st, &err);
    else if (cx->json)
        rc =
            cli_print_json(cx, json_pack("{s:s,s:b}", "reservation", r.reservation, "released", 1));
    else
        printf("released %s\n", r.reservation);
    dsc_client_free(c);
    return rc;
}

/* ------------------------------------------------------------- grid, reload -- */

static int grid_set(cli_ctx *cx, int argc, char **argv) {
    const char *zone = NULL, *g = NULL, *until = NULL, *vfor = NULL;
    cli_flag f[] = {{.name = "--zone", .value = &zone},
                    {.name = "--gco2e-per-kwh", .value = &g},
                    {.name = "--valid-until", .value = &until},
                    {.name = "--valid-for", .value = &vfor}};
    int rc = cli_parse(cx, argc, argv, NULL, f, 4, NULL);
    if (rc != CLI_EXIT_OK) return rc;
    if (cx->help)
        return help("usage: discern grid set --zone Z --gco2e-per-kwh X "
                    "(--valid-until T | --valid-for S)",
                    "Push a live grid carbon intensity for a zone (admin). Until it expires\n"
                    "it replaces the zone's annual average for policies (ctx.grid) and in\n"
                    "the server's estimates by the discern method (estimate, check, settle\n"
                    "with method discern, or estimate_method = discern). Estimates by the\n"
                    "ecologits method stay on annual averages, as EcoLogits does.\n\n"
                    "  --zone Z              ISO 3166-1 alpha-3 or WOR\n"
                    "  --gco2e-per-kwh X     intensity, >= 0\n"
                    "  --valid-until T       unix seconds\n"
                    "  --valid-for S         seconds from now\n",
                    false, true);
    dsc_client_grid_request rq = {.zone = zone};
    double secs = 0;
    if ((rc = cli_required(cx, "--zone", zone)) || (rc = cli_required(cx, "--gco2e-per-kwh", g)) ||
        (rc = cli_parse_number(cx, "--gco2e-per-kwh", g, 0, false, &rq.gco2e_per_kwh)))
        return rc;
    if (!until == !vfor)
        return cli_fail(cx, DSC_BAD_REQUEST, "give one of --valid-until, --valid-for");
    if (until && (rc = cli_parse_count(cx, "--valid-until", until, &rq.valid_until))) return rc;
    if (vfor) {
        if ((rc = cli_parse_number(cx, "--valid-for", vfor, 0, true, &secs))) return rc;
        rq.valid_until = (int64_t)time(NULL) + (int64_t)ceil(secs);
    }
    dsc_client *c = cli_connect(cx, true, &rc);
    if (!c) return rc;
    dsc_client_grid_result r;
    dsc_error err;
    dsc_status st = dsc_client_grid_set(c, &rq, &r, &err);
    char when[32];
    cli_format_time(r.valid_until, when, sizeof when);
    if (st != DSC_OK)
        rc = cli_fail_status(cx, st, &err);
    else if (cx->json)
        rc = cli_print_json(cx,
                            json_pack("{s:s,s:f,s:I}", "zone", r.zone, "gco2e_per_kwh",
                                      r.gco2e_per_kwh, "valid_until", (json_int_t)r.valid_until));
    else
        printf("grid %s: %g gCO2e/kWh until %s\n", r.zone, r.gco2e_per_kwh, when);
    dsc_client_free(c);
    return rc;
}

int cli_grid(cli_ctx *cx, int argc, char **argv) {
    if (argc >= 2 && strcmp(argv[1], "set") == 0) {
        cli_subcommand(cx, "set");
        return grid_set(cx, argc - 1, argv + 1);
    }
    if (cx->help || (argc >= 2 && (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0))) {
        puts("usage: discern grid set --zone Z --gco2e-per-kwh X (--valid-until T | --valid-for S)"
             "\n\nRun 'discern grid set --help' for the options.");
        return CLI_EXIT_OK;
    }
    return cli_fail(cx, DSC_BAD_REQUEST, "usage: discern grid set ... (see discern grid --help)");
}

int cli_reload(cli_ctx *cx, int argc, char **argv) {
    int rc = cli_parse(cx, argc, argv, NULL, NULL, 0, NULL);
    if (rc != CLI_EXIT_OK) return rc;
    if (cx->help)
        return help("usage: discern reload [--admin-token T]",
                    "Compile every policy of the server's policy folder, run its tests, reload\n"
                    "the catalogue and switch to the new set only if all of it succeeded\n"
                    "(admin). On failure the old set stays live.\n",
                    false, true);
    dsc_client *c = cli_connect(cx, true, &rc);
    if (!c) return rc;
    dsc_client_reload_result r;
    dsc_error err;
    dsc_status st = dsc_client_policy_reload(c, &r, &err);
    if (st != DSC_OK) {
        rc = cli_fail_status(cx, st, &err);
    } else if (cx->json) {
        json_t *names = json_array();
        for (size_t i = 0; i < r.n_policies; i++)
            json_array_append_new(names, json_string(r.policies[i]));
        rc = cli_print_json(
            cx, json_pack("{s:s,s:o}", "policy_version", r.policy_version, "policies", names));
    } else {
        printf("policy set %s:", r.policy_version);
        for (size_t i = 0; i < r.n_policies; i++)
            printf(" %s", r.policies[i]);
        putchar('\n');
    }
    dsc_client_reload_result_clear(&r);
    dsc_client_free(c);
    return rc;
}

/* -------------------------------------------------------------- stats, ping -- */

int cli_stats(cli_ctx *cx, int argc, char **argv) {
    int rc = cli_parse(cx, argc, argv, NULL, NULL, 0, NULL);
    if (rc != CLI_EXIT_OK) return rc;
    if (cx->help)
        return help("usage: discern stats", "Counters of the server since it started.\n", false,
                    false);
    dsc_client *c = cli_connect(cx, false, &rc);
    if (!c) return rc;
    dsc_client_stats_result s;
    dsc_error err;
    dsc_status st = dsc_client_stats(c, &s, &err);
    if (st != DSC_OK)
        rc = cli_fail_status(cx, st, &err);
    else if (cx->json)
        rc = cli_print_json(
            cx,
            json_pack("{s:s,s:f,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:{s:I,s:I,s:I},s:I,s:s}", "version",
                      s.version, "uptime_s", s.uptime_s, "workers", (json_int_t)s.workers,
                      "connections", (json_int_t)s.connections, "connections_rejected",
                      (json_int_t)s.connections_rejected, "requests", (json_int_t)s.requests,
                      "errors", (json_int_t)s.errors, "protocol_errors",
                      (json_int_t)s.protocol_errors, "ledger_writes", (json_int_t)s.ledger_writes,
                      "decisions", "allow", (json_int_t)s.allow, "throttle", (json_int_t)s.throttle,
                      "refuse", (json_int_t)s.refuse, "unenforced", (json_int_t)s.unenforced,
                      "policy_version", s.policy_version));
    else
        printf("discernd %s, up %.0f s, %llu workers, %llu connections\n"
               "requests %llu, errors %llu, protocol errors %llu, ledger writes %llu\n"
               "decisions: allow %llu, throttle %llu, refuse %llu (unenforced %llu)\n"
               "policy set %s\n",
               s.version, s.uptime_s, (unsigned long long)s.workers,
               (unsigned long long)s.connections, (unsigned long long)s.requests,
               (unsigned long long)s.errors, (unsigned long long)s.protocol_errors,
               (unsigned long long)s.ledger_writes, (unsigned long long)s.allow,
               (unsigned long long)s.throttle, (unsigned long long)s.refuse,
               (unsigned long long)s.unenforced, s.policy_version[0] ? s.policy_version : "-");
    dsc_client_free(c);
    return rc;
}

int cli_ping(cli_ctx *cx, int argc, char **argv) {
    int rc = cli_parse(cx, argc, argv, NULL, NULL, 0, NULL);
    if (rc != CLI_EXIT_OK) return rc;
    if (cx->help)
        return help("usage: discern ping", "Is discernd there? Prints its version and clock.\n",
                    false, false);
    dsc_client *c = cli_connect(cx, false, &rc);
    if (!c) return rc;
    dsc_client_ping_result p;
    dsc_error err;
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    dsc_status st = dsc_client_ping(c, &p, &err);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double ms = (double)(t1.tv_sec - t0.tv_sec) * 1e3 + (double)(t1.tv_nsec - t0.tv_nsec) / 1e6;
    if (st != DSC_OK)
        rc = cli_fail_status(cx, st, &err);
    else if (cx->json)
        rc = cli_print_json(cx, json_pack("{s:b,s:s,s:f,s:f}", "pong", 1, "version", p.version,
                                          "time", p.time, "rtt_ms", ms));
    else
        printf("pong from discernd %s in %.2f ms\n", p.version, ms);
    dsc_client_free(c);
    return rc;
}
