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

static size_t add_conn_flags(cli_flag *f, size_t n, cli_conn *c) {
    f[n++] = (cli_flag){"--server", &c->server, NULL};
    f[n++] = (cli_flag){"--timeout", &c->timeout, NULL};
    f[n++] = (cli_flag){"--admin-token", &c->admin_token, NULL};
    f[n++] = (cli_flag){"--key", &c->key, NULL};
    f[n++] = (cli_flag){"--json", NULL, &c->json};
    return n;
}

static size_t add_req_flags(cli_flag *f, size_t n, cli_req *r) {
    f[n++] = (cli_flag){"--provider", &r->provider, NULL};
    f[n++] = (cli_flag){"--model", &r->model, NULL};
    f[n++] = (cli_flag){"--output-tokens", &r->output_tokens, NULL};
    f[n++] = (cli_flag){"--input-tokens", &r->input_tokens, NULL};
    f[n++] = (cli_flag){"--purpose", &r->purpose, NULL};
    f[n++] = (cli_flag){"--org", &r->org, NULL};
    f[n++] = (cli_flag){"--team", &r->team, NULL};
    f[n++] = (cli_flag){"--user", &r->user, NULL};
    f[n++] = (cli_flag){"--subject-key", &r->key, NULL};
    f[n++] = (cli_flag){"--zone", &r->zone, NULL};
    f[n++] = (cli_flag){"--request-id", &r->request_id, NULL};
    f[n++] = (cli_flag){"--ttl", &r->ttl, NULL};
    f[n++] = (cli_flag){"--no-reserve", NULL, &r->no_reserve};
    return n;
}

static const cli_flag *find_flag(const cli_flag *f, size_t n, const char *arg, size_t len) {
    for (size_t k = 0; k < n; k++)
        if (strncmp(arg, f[k].name, len) == 0 && f[k].name[len] == '\0') return &f[k];
    return NULL;
}

/* --tag K=V: split into the request's tag list. */
static int add_tag(cli_req *req, const char *text) {
    const char *eq = strchr(text, '=');
    if (!eq || eq == text)
        return cli_fail(CLI_EXIT_USAGE, "option --tag: '%s' is not KEY=VALUE", text);
    if (req->n_tags >= 16) return cli_fail(CLI_EXIT_USAGE, "option --tag: at most 16 tags");
    size_t n = (size_t)(eq - text);
    char *k = req->tag_keys[req->n_tags];
    if (n >= sizeof req->tag_keys[0])
        return cli_fail(CLI_EXIT_USAGE, "option --tag: key '%.*s' is longer than %zu bytes", (int)n,
                        text, sizeof req->tag_keys[0] - 1);
    memcpy(k, text, n);
    k[n] = '\0';
    req->tags[2 * req->n_tags] = k;
    req->tags[2 * req->n_tags + 1] = eq + 1;
    req->n_tags++;
    return CLI_EXIT_OK;
}

static int take_value(int argc, char **argv, int *i, const char *eq, const cli_flag *f,
                      const char **out) {
    if (eq) return *out = eq + 1, CLI_EXIT_OK;
    if (*i + 1 >= argc) return cli_fail(CLI_EXIT_USAGE, "option %s needs a value", f->name);
    *out = argv[++*i];
    return CLI_EXIT_OK;
}

static const char *env_or(const char *flag, const char *env) {
    if (flag) return flag;
    const char *v = getenv(env);
    return v && v[0] ? v : NULL;
}

static int parse_args(int argc, char **argv, cli_conn *conn, cli_req *req, const cli_flag *extra,
                      size_t n_extra, int *rest) {
    cli_flag f[MAX_FLAGS];
    size_t n = add_conn_flags(f, 0, conn);
    if (req) n = add_req_flags(f, n, req);
    for (size_t k = 0; k < n_extra && n < MAX_FLAGS; k++)
        f[n++] = extra[k];
    if (rest) *rest = argc;
    for (int i = 1; i < argc; i++) {
        const char *arg = argv[i], *eq = strchr(arg, '='), *val = NULL;
        if (strcmp(arg, "--help") == 0 || strcmp(arg, "-h") == 0) {
            conn->help = 1;
            continue;
        }
        if (strcmp(arg, "--") == 0 && rest) return *rest = i, CLI_EXIT_OK;
        size_t len = eq ? (size_t)(eq - arg) : strlen(arg);
        if (req && strncmp(arg, "--tag", len) == 0 && len == 5) {
            cli_flag tag = {"--tag", NULL, NULL};
            int rc = take_value(argc, argv, &i, eq, &tag, &val);
            if (rc == CLI_EXIT_OK) rc = add_tag(req, val);
            if (rc != CLI_EXIT_OK) return rc;
            continue;
        }
        const cli_flag *fl = find_flag(f, n, arg, len);
        if (!fl)
            return cli_fail(CLI_EXIT_USAGE, "unknown option '%s' for 'discern %s' (see --help)",
                            arg, argv[0]);
        if (!fl->value) {
            if (eq) return cli_fail(CLI_EXIT_USAGE, "option %s takes no value", fl->name);
            *fl->on = 1;
            continue;
        }
        int rc = take_value(argc, argv, &i, eq, fl, fl->value);
        if (rc != CLI_EXIT_OK) return rc;
    }
    return CLI_EXIT_OK;
}

int cli_parse(int argc, char **argv, cli_conn *conn, cli_req *req, const cli_flag *extra,
              size_t n_extra, int *rest) {
    int rc = parse_args(argc, argv, conn, req, extra, n_extra, rest);
    if (req) req->scoped = env_or(conn->key, "DISCERN_KEY") != NULL;
    return rc;
}

int cli_parse_count(const char *opt, const char *text, int64_t *out) {
    char *end;
    errno = 0;
    long long v = strtoll(text, &end, 10);
    if (end == text || *end || errno == ERANGE || v < 0 || text[0] == '-')
        return cli_fail(CLI_EXIT_USAGE, "option %s: '%s' is not a non-negative integer", opt, text);
    *out = v;
    return CLI_EXIT_OK;
}

int cli_parse_number(const char *opt, const char *text, double min, bool strict, double *out) {
    char *end;
    errno = 0;
    double v = strtod(text, &end);
    if (end == text || *end || errno == ERANGE || !isfinite(v) || v < min || (strict && v == min))
        return cli_fail(CLI_EXIT_USAGE, "option %s: '%s' is not a number %s %g", opt, text,
                        strict ? ">" : ">=", min);
    *out = v;
    return CLI_EXIT_OK;
}

int cli_subject(cli_req *req, dsc_client_subject *out) {
    out->org = req->org = env_or(req->org, "DISCERN_ORG");
    out->team = req->team = env_or(req->team, "DISCERN_TEAM");
    out->user = req->user = env_or(req->user, "DISCERN_USER");
    out->key = req->key = env_or(req->key, "DISCERN_SUBJECT_KEY");
    if (out->org || out->team || out->user || out->key || req->scoped) return CLI_EXIT_OK;
    return cli_fail(CLI_EXIT_USAGE,
                    "who asks? give --org, --team, --user or --subject-key (or DISCERN_ORG, "
                    "DISCERN_TEAM, DISCERN_USER, DISCERN_SUBJECT_KEY), or a key whose scope "
                    "names them (--key)");
}

static int required(const char *flag, const char *val) {
    return val ? CLI_EXIT_OK : cli_fail(CLI_EXIT_USAGE, "option %s is required", flag);
}

int cli_check_request(cli_req *req, dsc_client_check_request *out) {
    int rc;
    memset(out, 0, sizeof *out);
    if ((rc = required("--provider", req->provider)) || (rc = required("--model", req->model)) ||
        (rc = required("--output-tokens", req->output_tokens)) ||
        (rc = required("--purpose", req->purpose)) || (rc = cli_subject(req, &out->subject)))
        return rc;
    if ((rc = cli_parse_count("--output-tokens", req->output_tokens, &out->output_tokens)))
        return rc;
    if (req->input_tokens &&
        (rc = cli_parse_count("--input-tokens", req->input_tokens, &out->input_tokens)))
        return rc;
    if (req->ttl) {
        int64_t ttl = 0;
        if ((rc = cli_parse_count("--ttl", req->ttl, &ttl))) return rc;
        if (ttl < 1 || ttl > 86400)
            return cli_fail(CLI_EXIT_USAGE, "option --ttl: %s is not in 1..86400", req->ttl);
        out->ttl_s = (int)ttl;
    }
    out->provider = req->provider, out->model = req->model, out->purpose = req->purpose;
    out->zone = req->zone, out->request_id = req->request_id;
    out->tags = req->tags, out->n_tags = req->n_tags;
    out->no_reserve = req->no_reserve;
    return CLI_EXIT_OK;
}

/* --------------------------------------------------------------- connecting -- */

dsc_client *cli_connect(const cli_conn *conn, bool admin, int *code) {
    const char *server = env_or(conn->server, "DISCERN_SERVER");
    dsc_client_options o = {0};
    if (conn->timeout) {
        double ms = 0;
        if ((*code = cli_parse_number("--timeout", conn->timeout, 0, true, &ms))) return NULL;
        o.timeout_ms = ms > 3600000 ? 3600000 : (int)ceil(ms);
    }
    if (admin) {
        o.admin_token = env_or(conn->admin_token, "DISCERN_ADMIN_TOKEN");
    } else if (conn->admin_token) {
        *code = cli_fail(CLI_EXIT_USAGE, "option --admin-token is for admin commands only");
        return NULL;
    }
    o.key = env_or(conn->key, "DISCERN_KEY"); /* used when there is no admin token */
    dsc_error err;
    dsc_client *c = dsc_client_new(server ? server : "127.0.0.1:7878", &o, &err);
    if (!c)
        *code = cli_fail(err.code == DSC_BAD_REQUEST ? CLI_EXIT_USAGE : CLI_EXIT_FAIL,
                         "--server: %s", err.message);
    return c;
}

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

int cli_exit_of_decision(dsc_decision d) {
    return d == DSC_DECISION_ALLOW      ? CLI_EXIT_OK
           : d == DSC_DECISION_THROTTLE ? CLI_EXIT_THROTTLE
                                        : CLI_EXIT_REFUSE;
}

int cli_fail_status(dsc_status st, const dsc_error *err, const char *what) {
    return cli_fail(cli_exit_of(st), "%s: %s (%s)", what, err->message, dsc_status_wire(st));
}

/* ------------------------------------------------------------------- output -- */

int cli_print_json(json_t *v) {
    char *text = v ? json_dumps(v, JSON_INDENT(2) | JSON_REAL_PRECISION(15)) : NULL;
    json_decref(v);
    if (!text) return cli_fail(CLI_EXIT_FAIL, "out of memory while writing JSON");
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

void cli_print_check(FILE *out, const dsc_client_check_result *r) {
    fprintf(out, "%s: %s", dsc_decision_name(r->decision), r->reason[0] ? r->reason : "-");
    if (r->policy[0])
        fprintf(out, " [policy %s%s%s]", r->policy, r->policy_version[0] ? " " : "",
                r->policy_version);
    fputc('\n', out);
    if (r->decision == DSC_DECISION_THROTTLE) fprintf(out, "retry after %g s\n", r->retry_after_s);
    if (r->suggest_model[0])
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
    "  --no-reserve          decide only, hold nothing\n";

static const char conn_help[] =
    "connection:\n"
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

int cli_check(int argc, char **argv) {
    cli_conn conn = {0};
    cli_req req = {0};
    int rc = cli_parse(argc, argv, &conn, &req, NULL, 0, NULL);
    if (rc != CLI_EXIT_OK) return rc;
    if (conn.help)
        return help("usage: discern check --provider P --model M --output-tokens N --purpose P "
                    "--user U [options]",
                    "Ask discernd whether this AI request may go ahead. Prints the decision\n"
                    "and its reason, the footprint estimate and every budget that applies;\n"
                    "an allowed request holds a reservation to settle or cancel.",
                    true, false);
    dsc_client_check_request rq;
    if ((rc = cli_check_request(&req, &rq))) return rc;
    rq.budgets = true; /* it shows every budget that applies */
    dsc_client *c = cli_connect(&conn, false, &rc);
    if (!c) return rc;
    dsc_client_check_result r;
    dsc_error err;
    dsc_status st = dsc_client_check(c, &rq, &r, &err);
    if (st != DSC_OK)
        rc = cli_fail_status(st, &err, "check");
    else if (conn.json)
        rc = cli_print_json(cli_json_check(&r));
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

int cli_settle(int argc, char **argv) {
    cli_conn conn = {0};
    const char *res = NULL, *in = NULL, *out = NULL, *lat = NULL;
    cli_flag f[] = {{"--reservation", &res, NULL},
                    {"--input-tokens", &in, NULL},
                    {"--output-tokens", &out, NULL},
                    {"--latency", &lat, NULL}};
    int rc = cli_parse(argc, argv, &conn, NULL, f, 4, NULL);
    if (rc != CLI_EXIT_OK) return rc;
    if (conn.help)
        return help("usage: discern settle --reservation R --output-tokens N [--input-tokens N] "
                    "[--latency S]",
                    "Report what an allowed request really used: the hold is replaced by the\n"
                    "actual usage. Repeating a settle charges nothing more.\n\n"
                    "  --reservation R       from check\n"
                    "  --output-tokens N     actual output tokens\n"
                    "  --input-tokens N      actual input tokens (default 0)\n"
                    "  --latency S           measured latency in seconds\n",
                    false, false);
    dsc_client_settle_request rq = {.reservation = res};
    if ((rc = required("--reservation", res)) || (rc = required("--output-tokens", out)) ||
        (rc = cli_parse_count("--output-tokens", out, &rq.output_tokens)) ||
        (in && (rc = cli_parse_count("--input-tokens", in, &rq.input_tokens))) ||
        (lat && (rc = cli_parse_number("--latency", lat, 0, true, &rq.latency_s))))
        return rc;
    dsc_client *c = cli_connect(&conn, false, &rc);
    if (!c) return rc;
    dsc_client_settle_result r;
    dsc_error err;
    dsc_status st = dsc_client_settle(c, &rq, &r, &err);
    if (st != DSC_OK) {
        rc = cli_fail_status(st, &err, "settle");
    } else if (conn.json) {
        rc = cli_print_json(json_pack("{s:s,s:s,s:o,s:o,s:o}", "reservation", r.reservation,
                                      "settled", r.settled, "charged", json_amounts(&r.charged),
                                      "estimate", cli_json_impacts(&r.estimate), "budgets",
                                      cli_json_budgets(&r.budgets)));
    } else {
        printf("settled %s (%s): %.4g Wh, %.4g gCO2e, %.4g mL water, %.0f tokens\n", r.reservation,
               r.settled[0] ? r.settled : "-", r.charged.energy_wh, r.charged.gco2e,
               r.charged.water_ml, r.charged.tokens);
        cli_print_budgets(stdout, &r.budgets, false);
    }
    dsc_client_settle_result_clear(&r);
    dsc_client_free(c);
    return rc;
}

int cli_cancel(int argc, char **argv) {
    cli_conn conn = {0};
    const char *res = NULL;
    cli_flag f[] = {{"--reservation", &res, NULL}};
    int rc = cli_parse(argc, argv, &conn, NULL, f, 1, NULL);
    if (rc != CLI_EXIT_OK) return rc;
    if (conn.help)
        return help("usage: discern cancel --reservation R",
                    "Release the hold of an allowed request that did not happen; nothing is\n"
                    "charged.\n\n  --reservation R       from check\n",
                    false, false);
    if ((rc = required("--reservation", res))) return rc;
    dsc_client *c = cli_connect(&conn, false, &rc);
    if (!c) return rc;
    dsc_client_cancel_result r;
    dsc_error err;
    dsc_status st = dsc_client_cancel(c, res, &r, &err);
    if (st != DSC_OK)
        rc = cli_fail_status(st, &err, "cancel");
    else if (conn.json)
        rc = cli_print_json(json_pack("{s:s,s:b}", "reservation", r.reservation, "released", 1));
    else
        printf("released %s\n", r.reservation);
    dsc_client_free(c);
    return rc;
}

/* ------------------------------------------------------------- grid, reload -- */

static int grid_set(int argc, char **argv) {
    cli_conn conn = {0};
    const char *zone = NULL, *g = NULL, *until = NULL, *vfor = NULL;
    cli_flag f[] = {{"--zone", &zone, NULL},
                    {"--gco2e-per-kwh", &g, NULL},
                    {"--valid-until", &until, NULL},
                    {"--valid-for", &vfor, NULL}};
    int rc = cli_parse(argc, argv, &conn, NULL, f, 4, NULL);
    if (rc != CLI_EXIT_OK) return rc;
    if (conn.help)
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
    if ((rc = required("--zone", zone)) || (rc = required("--gco2e-per-kwh", g)) ||
        (rc = cli_parse_number("--gco2e-per-kwh", g, 0, false, &rq.gco2e_per_kwh)))
        return rc;
    if (!until == !vfor) return cli_fail(CLI_EXIT_USAGE, "give one of --valid-until, --valid-for");
    if (until && (rc = cli_parse_count("--valid-until", until, &rq.valid_until))) return rc;
    if (vfor) {
        if ((rc = cli_parse_number("--valid-for", vfor, 0, true, &secs))) return rc;
        rq.valid_until = (int64_t)time(NULL) + (int64_t)ceil(secs);
    }
    dsc_client *c = cli_connect(&conn, true, &rc);
    if (!c) return rc;
    dsc_client_grid_result r;
    dsc_error err;
    dsc_status st = dsc_client_grid_set(c, &rq, &r, &err);
    char when[32];
    cli_format_time(r.valid_until, when, sizeof when);
    if (st != DSC_OK)
        rc = cli_fail_status(st, &err, "grid set");
    else if (conn.json)
        rc = cli_print_json(json_pack("{s:s,s:f,s:I}", "zone", r.zone, "gco2e_per_kwh",
                                      r.gco2e_per_kwh, "valid_until", (json_int_t)r.valid_until));
    else
        printf("grid %s: %g gCO2e/kWh until %s\n", r.zone, r.gco2e_per_kwh, when);
    dsc_client_free(c);
    return rc;
}

int cli_grid(int argc, char **argv) {
    if (argc >= 2 && strcmp(argv[1], "set") == 0) return grid_set(argc - 1, argv + 1);
    if (argc >= 2 && (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0)) {
        puts("usage: discern grid set --zone Z --gco2e-per-kwh X (--valid-until T | --valid-for S)"
             "\n\nRun 'discern grid set --help' for the options.");
        return CLI_EXIT_OK;
    }
    return cli_fail(CLI_EXIT_USAGE, "usage: discern grid set ... (see discern grid --help)");
}

int cli_reload(int argc, char **argv) {
    cli_conn conn = {0};
    int rc = cli_parse(argc, argv, &conn, NULL, NULL, 0, NULL);
    if (rc != CLI_EXIT_OK) return rc;
    if (conn.help)
        return help("usage: discern reload [--admin-token T]",
                    "Compile every policy of the server's policy folder, run its tests, reload\n"
                    "the catalogue and switch to the new set only if all of it succeeded\n"
                    "(admin). On failure the old set stays live.\n",
                    false, true);
    dsc_client *c = cli_connect(&conn, true, &rc);
    if (!c) return rc;
    dsc_client_reload_result r;
    dsc_error err;
    dsc_status st = dsc_client_policy_reload(c, &r, &err);
    if (st != DSC_OK) {
        rc = cli_fail_status(st, &err, "reload");
    } else if (conn.json) {
        json_t *names = json_array();
        for (size_t i = 0; i < r.n_policies; i++)
            json_array_append_new(names, json_string(r.policies[i]));
        rc = cli_print_json(
            json_pack("{s:s,s:o}", "policy_version", r.policy_version, "policies", names));
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

int cli_stats(int argc, char **argv) {
    cli_conn conn = {0};
    int rc = cli_parse(argc, argv, &conn, NULL, NULL, 0, NULL);
    if (rc != CLI_EXIT_OK) return rc;
    if (conn.help)
        return help("usage: discern stats", "Counters of the server since it started.\n", false,
                    false);
    dsc_client *c = cli_connect(&conn, false, &rc);
    if (!c) return rc;
    dsc_client_stats_result s;
    dsc_error err;
    dsc_status st = dsc_client_stats(c, &s, &err);
    if (st != DSC_OK)
        rc = cli_fail_status(st, &err, "stats");
    else if (conn.json)
        rc = cli_print_json(json_pack(
            "{s:s,s:f,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:{s:I,s:I,s:I},s:I,s:s}", "version", s.version,
            "uptime_s", s.uptime_s, "workers", (json_int_t)s.workers, "connections",
            (json_int_t)s.connections, "connections_rejected", (json_int_t)s.connections_rejected,
            "requests", (json_int_t)s.requests, "errors", (json_int_t)s.errors, "protocol_errors",
            (json_int_t)s.protocol_errors, "ledger_writes", (json_int_t)s.ledger_writes,
            "decisions", "allow", (json_int_t)s.allow, "throttle", (json_int_t)s.throttle, "refuse",
            (json_int_t)s.refuse, "unenforced", (json_int_t)s.unenforced, "policy_version",
            s.policy_version));
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

int cli_ping(int argc, char **argv) {
    cli_conn conn = {0};
    int rc = cli_parse(argc, argv, &conn, NULL, NULL, 0, NULL);
    if (rc != CLI_EXIT_OK) return rc;
    if (conn.help)
        return help("usage: discern ping", "Is discernd there? Prints its version and clock.\n",
                    false, false);
    dsc_client *c = cli_connect(&conn, false, &rc);
    if (!c) return rc;
    dsc_client_ping_result p;
    dsc_error err;
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    dsc_status st = dsc_client_ping(c, &p, &err);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double ms = (double)(t1.tv_sec - t0.tv_sec) * 1e3 + (double)(t1.tv_nsec - t0.tv_nsec) / 1e6;
    if (st != DSC_OK)
        rc = cli_fail_status(st, &err, "ping");
    else if (conn.json)
        rc = cli_print_json(json_pack("{s:b,s:s,s:f,s:f}", "pong", 1, "version", p.version, "time",
                                      p.time, "rtt_ms", ms));
    else
        printf("pong from discernd %s in %.2f ms\n", p.version, ms);
    dsc_client_free(c);
    return rc;
}
