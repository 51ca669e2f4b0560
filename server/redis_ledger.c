/*
 * redis_ledger.c - the ledger's Redis scripts as C calls (see redis_ledger.h).
 *
 * Requests become ARGV strings in one bounded builder (numbers formatted into a
 * fixed table, so a request cannot grow it past DSC_REDIS_COUNTERS_MAX counters);
 * answers are checked element by element against the script's contract before
 * anything is copied out.
 */
#include "redis_ledger.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

_Static_assert(DSC_METRIC_COUNT == 7, "server/redis/settle.lua and sweep.lua count 7 metrics");

/* The metrics' wire names, from ledger.h's one table (this file is also linked
 * without core/ledger.c, in the TSan build's unit tests). */
#define METRIC_WIRE(name, wire, unit) wire,
static const char *const metric_wire[] = {DSC_METRIC_MAP(METRIC_WIRE)};
#undef METRIC_WIRE

#define ARGS_MAX (16 + 7 * DSC_REDIS_COUNTERS_MAX)

typedef struct args {
    int n;
    const char *v[ARGS_MAX];
    char num[ARGS_MAX][24];
} args;

static void add_str(args *a, const char *s) {
    a->v[a->n++] = s ? s : "";
}

static void add_int(args *a, int64_t x) {
    *dsc__redis_put_int(a->num[a->n], x) = '\0';
    a->v[a->n] = a->num[a->n];
    a->n++;
}

static const char *window_kind(const dsc_window *w) {
    static const char *const names[] = {"day", "week", "month", "year", "rolling", "rate"};
    return (unsigned)w->kind <= DSC_WINDOW_RATE ? names[w->kind] : NULL;
}

/* The counters' window triple (kind span rate) and, for a reserve, limit amount metric. */
static dsc_status add_counters(args *a, const dsc__redis_counter *c, size_t n, bool reserve,
                               dsc_error *err) {
    if (n > DSC_REDIS_COUNTERS_MAX)
        return dsc_error_set(err, DSC_BAD_REQUEST, "counters: %zu, at most %d", n,
                             DSC_REDIS_COUNTERS_MAX);
    for (size_t i = 0; i < n; i++) {
        const char *kind = window_kind(&c[i].window);
        if (!c[i].name || !c[i].name[0] || !kind)
            return dsc_error_set(err, DSC_BAD_REQUEST, "counters[%zu]: no name or window", i);
        if (reserve && (c[i].amount < 0 || c[i].limit < 0))
            return dsc_error_set(err, DSC_BAD_REQUEST, "counters[%zu]: negative amount or limit",
                                 i);
        if ((unsigned)c[i].metric >= DSC_METRIC_COUNT)
            return dsc_error_set(err, DSC_BAD_REQUEST, "counters[%zu]: unknown metric", i);
        add_str(a, c[i].name), add_str(a, kind);
        add_int(a, c[i].window.span_us), add_int(a, c[i].window.rate_micro);
        if (reserve) add_int(a, c[i].limit), add_int(a, c[i].amount);
        add_int(a, c[i].metric);
    }
    return DSC_OK;
}

/* ------------------------------------------------------------------ facts -- */

bool dsc__redis_facts_pack(char *out, size_t cap, const char *const *v, size_t n) {
    size_t at = 0;
    if (cap == 0) return false;
    out[0] = '\0';
    for (size_t i = 0; i < n; i++) {
        const char *s = v[i] ? v[i] : "";
        size_t len = strlen(s);
        char num[24]; /* the length in decimal and ':', without a printf */
        char *e = dsc__redis_put_int(num, (int64_t)len);
        *e++ = ':';
        size_t w = (size_t)(e - num);
        if (w >= cap - at || len >= cap - at - w) return false;
        memcpy(out + at, num, w);
        at += w;
        memcpy(out + at, s, len);
        at += len;
        out[at] = '\0';
    }
    return true;
}

/* s as a JSON string at out (room for 6 bytes per byte of s and 2); its end. */
static char *put_json_string(char *out, const char *s) {
    static const char hex[] = "0123456789ABCDEF";
    *out++ = '"';
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        const char *named = c == '"'    ? "\\\""
                            : c == '\\' ? "\\\\"
                            : c == '\b' ? "\\b"
                            : c == '\f' ? "\\f"
                            : c == '\n' ? "\\n"
                            : c == '\r' ? "\\r"
                            : c == '\t' ? "\\t"
                                        : NULL;
        if (named) {
            *out++ = named[0], *out++ = named[1];
        } else if (c < 0x20) {
            memcpy(out, "\\u00", 4);
            out[4] = hex[c >> 4], out[5] = hex[c & 15];
            out += 6;
        } else {
            *out++ = (char)c;
        }
    }
    *out++ = '"';
    return out;
}

char *dsc__redis_group_text(const char *const *v) {
    size_t cap = 3;
    for (int i = 0; i < DSC_REDIS_GROUP_PARTS; i++)
        cap += 6 * strlen(v[i] ? v[i] : "") + 3;
    char *out = malloc(cap), *p = out;
    if (!out) return NULL;
    *p++ = '[';
    for (int i = 0; i < DSC_REDIS_GROUP_PARTS; i++) {
        if (i) *p++ = ',';
        p = put_json_string(p, v[i] ? v[i] : "");
    }
    *p++ = ']';
    *p = '\0';
    return out;
}

bool dsc__redis_facts_span(const char **p, const char *end, const char **field, size_t *len) {
    const char *s = *p;
    size_t n = 0;
    if (s >= end || *s < '0' || *s > '9') return false;
    for (; s < end && *s >= '0' && *s <= '9'; s++) {
        n = n * 10 + (size_t)(*s - '0');
        if (n > (size_t)(end - s)) return false; /* longer than what is left: no overflow */
    }
    if (s >= end || *s != ':' || n > (size_t)(end - s - 1)) return false;
    *field = s + 1, *len = n;
    *p = s + 1 + n;
    return true;
}

bool dsc__redis_facts_next(const char **p, const char *end, char *out, size_t cap) {
    const char *at = *p, *f;
    size_t len;
    if (!dsc__redis_facts_span(&at, end, &f, &len) || len >= cap || memchr(f, '\0', len))
        return false;
    memcpy(out, f, len);
    out[len] = '\0';
    *p = at;
    return true;
}

/* A packed integer field: decimal digits, an optional '-' first. */
static json_t *journal_int(const char *f, size_t n) {
    char num[24];
    if (n == 0 || n >= sizeof num) return NULL;
    memcpy(num, f, n);
    num[n] = '\0';
    char *stop;
    errno = 0;
    long long x = strtoll(num, &stop, 10);
    return errno || *stop != '\0' ? NULL : json_integer(x);
}

json_t *dsc__redis_journal_load(const char *text, size_t len) {
    if (len > 0 && text[0] == '{') return json_loadb(text, len, 0, NULL);
#define JOURNAL_IS_I 1
#define JOURNAL_IS_S 0
#define JOURNAL_NAME(name, kind) #name,
#define JOURNAL_INT(name, kind) JOURNAL_IS_##kind,
    static const char *const names[] = {DSC_REDIS_JOURNAL_FIELDS(JOURNAL_NAME)};
    static const bool ints[] = {DSC_REDIS_JOURNAL_FIELDS(JOURNAL_INT)};
#undef JOURNAL_NAME
#undef JOURNAL_INT
#undef JOURNAL_IS_I
#undef JOURNAL_IS_S
    json_t *o = json_object();
    const char *p = text, *end = text + len;
    for (size_t i = 0; o && i < sizeof names / sizeof *names; i++) {
        const char *f;
        size_t n;
        json_t *v = NULL;
        if (dsc__redis_facts_span(&p, end, &f, &n))
            v = ints[i] ? journal_int(f, n) : json_stringn_nocheck(f, n);
        if (!v || json_object_set_new(o, names[i], v) != 0) {
            json_decref(o);
            return NULL;
        }
    }
    if (o && p != end) { /* more than the fields: not a record of this version */
        json_decref(o);
        return NULL;
    }
    return o;
}

/* ---------------------------------------------------------------- replies -- */

static dsc_status malformed(dsc_error *err, const char *what) {
    return dsc_error_set(err, DSC_STORE_UNAVAILABLE, "redis: malformed reply (%s)", what);
}

/* An integer reply, or a string of decimal digits (what the scripts' int() makes). */
static bool num(const redisReply *e, int64_t *out) {
    if (e->type == REDIS_REPLY_INTEGER) {
        *out = e->integer;
        return true;
    }
    if (e->type != REDIS_REPLY_STRING || e->len == 0 || e->len > 20) return false;
    char *end;
    errno = 0;
    long long v = strtoll(e->str, &end, 10);
    if (errno || end != e->str + e->len) return false;
    *out = v;
    return true;
}

static bool str_into(const redisReply *e, char *out, size_t cap) {
    if (e->type != REDIS_REPLY_STRING || e->len == 0 || e->len >= cap ||
        memchr(e->str, '\0', e->len))
        return false;
    memcpy(out, e->str, e->len + 1);
    return true;
}

static bool states_into(redisReply **e, size_t n, dsc__redis_counter_state *out) {
    for (size_t i = 0; i < n; i++)
        if (!num(e[3 * i], &out[i].used) || !num(e[3 * i + 1], &out[i].held) ||
            !num(e[3 * i + 2], &out[i].resets_at))
            return false;
    return true;
}

/* A script's error reply ("bad_request ...") or an answer that is no array of strings. */
static dsc_status answer_head(const redisReply *rep, const char **kind, dsc_error *err) {
    if (rep->type == REDIS_REPLY_ERROR)
        return dsc_error_set(err,
                             strncmp(rep->str, "bad_request", 11) == 0 ? DSC_BAD_REQUEST
                                                                       : DSC_STORE_UNAVAILABLE,
                             "redis: %.200s", rep->str);
    if (rep->type != REDIS_REPLY_ARRAY || rep->elements < 1 ||
        rep->element[0]->type != REDIS_REPLY_STRING)
        return malformed(err, "not an answer");
    *kind = rep->element[0]->str;
    return DSC_OK;
}

dsc_status dsc__redis_parse_reserve(const redisReply *rep, size_t n, dsc__redis_reserve_out *out,
                                    dsc_error *err) {
    const char *kind = "";
    dsc_status st = answer_head(rep, &kind, err);
    if (st != DSC_OK) return st;
    memset(out, 0, sizeof *out);
    redisReply **e = rep->element;
    size_t ne = rep->elements;
    int64_t idx;
    if (strcmp(kind, "ok") == 0) {
        out->kind = DSC_REDIS_HELD, out->n = n;
        if (n > DSC_REDIS_COUNTERS_MAX || ne != 3 + 3 * n ||
            !str_into(e[1], out->reservation_id, sizeof out->reservation_id) ||
            !num(e[2], &out->expires_us) || !states_into(e + 3, n, out->counters))
            return malformed(err, "ok");
    } else if (strcmp(kind, "refused") == 0) {
        out->kind = DSC_REDIS_REFUSED, out->n = 1;
        if (ne != 5 || !num(e[1], &idx) || idx < 1 || (uint64_t)idx > n ||
            !states_into(e + 2, 1, out->counters))
            return malformed(err, "refused");
        out->refused = (size_t)idx - 1;
    } else if (strcmp(kind, "stale") == 0) {
        out->kind = DSC_REDIS_STALE;
        if (ne != 2 || !num(e[1], &out->version)) return malformed(err, "stale");
    } else if (strcmp(kind, "repeat") == 0) {
        out->kind = DSC_REDIS_REPEAT;
        if (ne != 4 || !str_into(e[1], out->reservation_id, sizeof out->reservation_id) ||
            !str_into(e[2], out->state, sizeof out->state) || !num(e[3], &out->expires_us))
            return malformed(err, "repeat");
    } else {
        return malformed(err, "unknown answer");
    }
    return DSC_OK;
}

dsc_status dsc__redis_parse_settle(const redisReply *rep, size_t n, dsc__redis_settle_out *out,
                                   dsc_error *err) {
    static const char *const kinds[] = {"settle",     "repeated", "late",
                                        "unreserved", "unknown",  "forbidden"};
    const char *kind = "";
    dsc_status st = answer_head(rep, &kind, err);
    if (st != DSC_OK) return st;
    memset(out, 0, sizeof *out);
    int k = -1;
    for (int i = 0; i < 6 && k < 0; i++)
        if (strcmp(kind, kinds[i]) == 0) k = i;
    if (k < 0) return malformed(err, "unknown answer");
    out->kind = (dsc__redis_settle_kind)k;
    bool charges = out->kind <= DSC_REDIS_UNRESERVED;
    if (!charges) return rep->elements == 1 ? DSC_OK : malformed(err, kind);
    if (n > DSC_REDIS_COUNTERS_MAX || rep->elements != 1 + DSC_METRIC_COUNT + 3 * n)
        return malformed(err, kind);
    for (int m = 0; m < DSC_METRIC_COUNT; m++)
        if (!num(rep->element[1 + m], &out->charged.v[m])) return malformed(err, kind);
    out->n = n;
    if (!states_into(rep->element + 1 + DSC_METRIC_COUNT, n, out->counters))
        return malformed(err, kind);
    return DSC_OK;
}

/* ------------------------------------------------------------------ calls -- */

typedef struct pending {
    void (*fn)(void);
    void *ud;
    size_t n;
} pending;

static void on_reserve_reply(void *ud, dsc_status st, const redisReply *rep, const char *msg) {
    pending *p = ud;
    dsc__redis_reserve_fn fn = (dsc__redis_reserve_fn)p->fn;
    dsc__redis_reserve_out out;
    dsc_error err = {0};
    if (st != DSC_OK)
        dsc_error_set(&err, st, "%s", msg);
    else
        st = dsc__redis_parse_reserve(rep, p->n, &out, &err);
    fn(p->ud, st, st == DSC_OK ? &out : NULL, &err);
    free(p);
}

static void on_settle_reply(void *ud, dsc_status st, const redisReply *rep, const char *msg) {
    pending *p = ud;
    dsc__redis_settle_fn fn = (dsc__redis_settle_fn)p->fn;
    dsc__redis_settle_out out;
    dsc_error err = {0};
    if (st != DSC_OK)
        dsc_error_set(&err, st, "%s", msg);
    else
        st = dsc__redis_parse_settle(rep, p->n, &out, &err);
    fn(p->ud, st, st == DSC_OK ? &out : NULL, &err);
    free(p);
}

/* Call script with a's arguments, on_reply getting p (malloc'd, NULL: out of memory),
 * which is freed here when the call cannot be sent. */
static dsc_status eval_with(dsc__redis *r, dsc__redis_script script, const args *a,
                            dsc__redis_reply_fn on_reply, void *p, dsc_error *err) {
    if (!p) return dsc_error_set(err, DSC_NOMEM, "out of memory for a Redis call");
    dsc_status st = dsc__redis_eval(r, script, a->n, a->v, on_reply, p);
    if (st == DSC_OK) return DSC_OK;
    free(p);
    return dsc_error_set(err, st, "%s",
                         st == DSC_NOMEM ? "out of memory for a Redis call"
                                         : dsc__redis_last_error(r));
}

static dsc_status send(dsc__redis *r, dsc__redis_script script, args *a, void (*fn)(void), void *ud,
                       size_t n, dsc__redis_reply_fn on_reply, dsc_error *err) {
    pending *p = malloc(sizeof *p);
    if (p) *p = (pending){fn, ud, n};
    return eval_with(r, script, a, on_reply, p, err);
}

dsc_status dsc__redis_reserve(dsc__redis *r, const dsc__redis_reserve_req *req,
                              dsc__redis_reserve_fn fn, void *ud, dsc_error *err) {
    if (!req->reservation_id || !req->reservation_id[0] || req->ttl_us <= 0)
        return dsc_error_set(err, DSC_BAD_REQUEST, "reserve: needs a reservation_id and ttl");
    args a = {0};
    add_int(&a, req->version), add_str(&a, req->reservation_id), add_str(&a, req->request_id);
    add_int(&a, req->ttl_us), add_int(&a, req->tz_offset_s), add_str(&a, req->owner_key);
    add_str(&a, req->journal), add_str(&a, req->hold_facts), add_str(&a, req->hold_group);
    add_int(&a, req->journal_max);
    add_int(&a, (int64_t)req->n);
    dsc_status st = add_counters(&a, req->counters, req->n, true, err);
    if (st != DSC_OK) return st;
    return send(r, DSC_REDIS_RESERVE, &a, (void (*)(void))fn, ud, req->n, on_reserve_reply, err);
}

dsc_status dsc__redis_settle(dsc__redis *r, const dsc__redis_settle_req *req,
                             dsc__redis_settle_fn fn, void *ud, dsc_error *err) {
    if (!req->reservation_id || !req->reservation_id[0])
        return dsc_error_set(err, DSC_BAD_REQUEST, "settle: needs a reservation_id");
    args a = {0};
    add_str(&a, req->reservation_id), add_str(&a, req->owner_key);
    add_int(&a, req->retain_s > 0 ? req->retain_s : 600), add_str(&a, req->journal);
    add_int(&a, req->journal_max);
    for (int m = 0; m < DSC_METRIC_COUNT; m++) {
        if (req->actual.v[m] < 0)
            return dsc_error_set(err, DSC_BAD_REQUEST, "actual.%s: negative", metric_wire[m]);
        add_int(&a, req->actual.v[m]);
    }
    add_int(&a, req->tz_offset_s), add_int(&a, (int64_t)req->n);
    dsc_status st = add_counters(&a, req->counters, req->n, false, err);
    if (st != DSC_OK) return st;
    return send(r, DSC_REDIS_SETTLE, &a, (void (*)(void))fn, ud, req->n, on_settle_reply, err);
}

/* ------------------------------------------------- the other scripts' calls -- */

static dsc_status parse_cancel(const redisReply *rep, dsc__redis_answer *out, dsc_error *err) {
    const char *kind = "";
    dsc_status st = answer_head(rep, &kind, err);
    if (st != DSC_OK) return st;
    if (rep->elements != 1) return malformed(err, "cancel");
    if (strcmp(kind, "cancelled") == 0)
        out->cancel = DSC_REDIS_CANCELLED;
    else if (strcmp(kind, "unknown") == 0)
        out->cancel = DSC_REDIS_CANCEL_UNKNOWN;
    else if (strcmp(kind, "forbidden") == 0)
        out->cancel = DSC_REDIS_CANCEL_FORBIDDEN;
    else
        out->cancel = DSC_REDIS_CANCEL_FINISHED;
    return DSC_OK;
}

/* An array whose first element is a number (state, budget, defs, sweep). */
static dsc_status numbered(const redisReply *rep, int64_t *first, dsc_error *err) {
    if (rep->type == REDIS_REPLY_ERROR) {
        const char *kind;
        return answer_head(rep, &kind, err);
    }
    if (rep->type != REDIS_REPLY_ARRAY || rep->elements < 1 || !num(rep->element[0], first))
        return malformed(err, "not an answer");
    return DSC_OK;
}

static dsc_status parse_hold(const redisReply *rep, dsc__redis_answer *out, dsc_error *err) {
    const char *kind = "";
    dsc_status st = answer_head(rep, &kind, err);
    if (st != DSC_OK) return st;
    dsc__redis_hold_out *h = &out->hold;
    h->detail = "";
    if (strcmp(kind, "unknown") == 0) return rep->elements == 1 ? DSC_OK : malformed(err, "hold");
    redisReply **e = rep->element;
    if (rep->elements != 4 || !str_into(e[0], h->state, sizeof h->state) ||
        e[1]->type != REDIS_REPLY_STRING || e[1]->len >= sizeof h->owner ||
        !num(e[2], &h->expires_us) || e[3]->type != REDIS_REPLY_STRING)
        return malformed(err, "hold");
    memcpy(h->owner, e[1]->str, e[1]->len + 1);
    h->detail = e[3]->str;
    h->detail_len = e[3]->len;
    h->known = true;
    return DSC_OK;
}

/* {next_hour, next_cursor, now_s, then triples hour, group, sums}: all strings. */
static dsc_status parse_rollups(const redisReply *rep, dsc__redis_answer *out, dsc_error *err) {
    if (rep->type == REDIS_REPLY_ERROR) {
        const char *kind;
        return answer_head(rep, &kind, err);
    }
    if (rep->type != REDIS_REPLY_ARRAY || rep->elements < 3 || (rep->elements - 3) % 3)
        return malformed(err, "rollups");
    for (size_t i = 0; i < rep->elements; i++)
        if (rep->element[i]->type != REDIS_REPLY_STRING) return malformed(err, "rollups");
    if (!num(rep->element[0], &out->next_hour) || !num(rep->element[2], &out->now_s) ||
        !rep->element[1]->len)
        return malformed(err, "rollups");
    out->cursor = rep->element[1]->str;
    out->n = (rep->elements - 3) / 3;
    out->rows = (const redisReply *const *)rep->element + 3;
    return DSC_OK;
}

/* {last_id, then rows of width strings}: a page of a stream (the journal, the admin
 * journal); what names the reply in errors. An admin journal add answers {'ok'}. */
static dsc_status parse_page(const redisReply *rep, size_t width, const char *what,
                             dsc__redis_answer *out, const redisReply *const **rows,
                             dsc_error *err) {
    if (rep->type == REDIS_REPLY_ERROR) {
        const char *kind;
        return answer_head(rep, &kind, err);
    }
    if (rep->type != REDIS_REPLY_ARRAY || rep->elements < 1 || (rep->elements - 1) % width)
        return malformed(err, what);
    for (size_t i = 0; i < rep->elements; i++)
        if (rep->element[i]->type != REDIS_REPLY_STRING) return malformed(err, what);
    out->last = rep->element[0]->str;
    out->n = (rep->elements - 1) / width;
    *rows = (const redisReply *const *)rep->element + 1;
    return DSC_OK;
}

dsc_status dsc__redis_parse_answer(dsc__redis_script script, const redisReply *rep, size_t n,
                                   dsc__redis_answer *out, dsc_error *err) {
    memset(out, 0, sizeof *out);
    dsc_status st;
    switch (script) {
    case DSC_REDIS_CANCEL:
        return parse_cancel(rep, out, err);
    case DSC_REDIS_HOLD:
        return parse_hold(rep, out, err);
    case DSC_REDIS_RECORD: {
        const char *kind;
        return answer_head(rep, &kind, err);
    }
    case DSC_REDIS_STATE:
        if ((st = numbered(rep, &out->version, err)) != DSC_OK) return st;
        if (n > DSC_REDIS_COUNTERS_MAX || rep->elements != 1 + 3 * n ||
            !states_into(rep->element + 1, n, out->counters))
            return malformed(err, "state");
        out->n = n;
        return DSC_OK;
    case DSC_REDIS_SWEEP:
        return numbered(rep, &out->count, err);
    case DSC_REDIS_BUDGET:
        if (rep->type == REDIS_REPLY_ARRAY && rep->elements == 2 &&
            num(rep->element[1], &out->version))
            return DSC_OK;
        return numbered(rep, &out->version, err) == DSC_OK ? malformed(err, "budget") : err->code;
    case DSC_REDIS_KEY:
        return numbered(rep, &out->version, err);
    case DSC_REDIS_JOURNAL:
        return parse_page(rep, 3, "journal", out, &out->defs, err);
    case DSC_REDIS_DEFS:
    case DSC_REDIS_KEYRING:
        if ((st = numbered(rep, &out->version, err)) != DSC_OK) return st;
        if (rep->elements % 2 != 1) return malformed(err, "defs");
        for (size_t i = 1; i < rep->elements; i++)
            if (rep->element[i]->type != REDIS_REPLY_STRING) return malformed(err, "defs");
        out->n = (rep->elements - 1) / 2;
        out->defs = (const redisReply *const *)rep->element + 1;
        return DSC_OK;
    case DSC_REDIS_ROLLUPS:
        return parse_rollups(rep, out, err);
    case DSC_REDIS_ADMIN:
        return parse_page(rep, 6, "admin", out, &out->rows, err);
    default:
        return malformed(err, "no such script");
    }
}

typedef struct answer_pending {
    dsc__redis_answer_fn fn;
    void *ud;
    dsc__redis_script script;
    size_t n;
} answer_pending;

static void on_answer_reply(void *ud, dsc_status st, const redisReply *rep, const char *msg) {
    answer_pending *p = ud;
    dsc__redis_answer out;
    dsc_error err = {0};
    if (st != DSC_OK)
        dsc_error_set(&err, st, "%s", msg);
    else
        st = dsc__redis_parse_answer(p->script, rep, p->n, &out, &err);
    p->fn(p->ud, st, st == DSC_OK ? &out : NULL, &err);
    free(p);
}

static dsc_status send_answer(dsc__redis *r, dsc__redis_script script, args *a, size_t n,
                              dsc__redis_answer_fn fn, void *ud, dsc_error *err) {
    answer_pending *p = malloc(sizeof *p);
    if (p) *p = (answer_pending){fn, ud, script, n};
    return eval_with(r, script, a, on_answer_reply, p, err);
}

dsc_status dsc__redis_cancel(dsc__redis *r, const char *id, const char *owner_key, int64_t retain_s,
                             int64_t journal_max, dsc__redis_answer_fn fn, void *ud,
                             dsc_error *err) {
    if (!id || !id[0]) return dsc_error_set(err, DSC_BAD_REQUEST, "cancel: needs a reservation_id");
    args a = {0};
    add_str(&a, id), add_str(&a, owner_key), add_int(&a, retain_s > 0 ? retain_s : 600);
    add_int(&a, journal_max);
    return send_answer(r, DSC_REDIS_CANCEL, &a, 0, fn, ud, err);
}

dsc_status dsc__redis_state(dsc__redis *r, int32_t tz_offset_s, const dsc__redis_counter *c,
                            size_t n, dsc__redis_answer_fn fn, void *ud, dsc_error *err) {
    args a = {0};
    add_int(&a, tz_offset_s), add_int(&a, (int64_t)n);
    if (n > DSC_REDIS_COUNTERS_MAX)
        return dsc_error_set(err, DSC_BAD_REQUEST, "counters: %zu, at most %d", n,
                             DSC_REDIS_COUNTERS_MAX);
    for (size_t i = 0; i < n; i++) {
        const char *kind = window_kind(&c[i].window);
        if (!c[i].name || !c[i].name[0] || !kind)
            return dsc_error_set(err, DSC_BAD_REQUEST, "counters[%zu]: no name or window", i);
        add_str(&a, c[i].name), add_str(&a, kind);
        add_int(&a, c[i].window.span_us), add_int(&a, c[i].window.rate_micro);
    }
    return send_answer(r, DSC_REDIS_STATE, &a, n, fn, ud, err);
}

dsc_status dsc__redis_sweep(dsc__redis *r, bool charge, int64_t max, int64_t retain_s,
                            int64_t journal_max, dsc__redis_answer_fn fn, void *ud,
                            dsc_error *err) {
    args a = {0};
    add_str(&a, charge ? "charge" : "release"), add_int(&a, max > 0 ? max : 1);
    add_int(&a, retain_s > 0 ? retain_s : 600), add_int(&a, journal_max);
    return send_answer(r, DSC_REDIS_SWEEP, &a, 0, fn, ud, err);
}

dsc_status dsc__redis_budget(dsc__redis *r, const char *id, const char *definition,
                             dsc__redis_answer_fn fn, void *ud, dsc_error *err) {
    if (!id || !id[0]) return dsc_error_set(err, DSC_BAD_REQUEST, "budget: needs an id");
    args a = {0};
    add_str(&a, id), add_str(&a, definition);
    return send_answer(r, DSC_REDIS_BUDGET, &a, 0, fn, ud, err);
}

dsc_status dsc__redis_defs(dsc__redis *r, dsc__redis_answer_fn fn, void *ud, dsc_error *err) {
    args a = {0};
    return send_answer(r, DSC_REDIS_DEFS, &a, 0, fn, ud, err);
}

dsc_status dsc__redis_keyring(dsc__redis *r, dsc__redis_answer_fn fn, void *ud, dsc_error *err) {
    args a = {0};
    return send_answer(r, DSC_REDIS_KEYRING, &a, 0, fn, ud, err);
}

dsc_status dsc__redis_key(dsc__redis *r, const char *id, const char *entry, dsc__redis_answer_fn fn,
                          void *ud, dsc_error *err) {
    if (!id || !id[0] || !entry || !entry[0])
        return dsc_error_set(err, DSC_BAD_REQUEST, "key: needs an id and an entry");
    args a = {0};
    add_str(&a, id), add_str(&a, entry);
    return send_answer(r, DSC_REDIS_KEY, &a, 0, fn, ud, err);
}

dsc_status dsc__redis_journal(dsc__redis *r, const char *start, int64_t count,
                              dsc__redis_answer_fn fn, void *ud, dsc_error *err) {
    args a = {0};
    add_str(&a, start), add_int(&a, count);
    return send_answer(r, DSC_REDIS_JOURNAL, &a, 0, fn, ud, err);
}

dsc_status dsc__redis_hold(dsc__redis *r, const char *id, dsc__redis_answer_fn fn, void *ud,
                           dsc_error *err) {
    if (!id || !id[0]) return dsc_error_set(err, DSC_BAD_REQUEST, "hold: needs a reservation_id");
    args a = {0};
    add_str(&a, id);
    return send_answer(r, DSC_REDIS_HOLD, &a, 0, fn, ud, err);
}

dsc_status dsc__redis_record(dsc__redis *r, const char *decision_id, const char *journal,
                             int64_t journal_max, dsc__redis_answer_fn fn, void *ud,
                             dsc_error *err) {
    args a = {0};
    add_str(&a, decision_id), add_str(&a, journal), add_int(&a, journal_max);
    return send_answer(r, DSC_REDIS_RECORD, &a, 0, fn, ud, err);
}

dsc_status dsc__redis_rollups(dsc__redis *r, int64_t from_hour, int64_t to_hour, const char *cursor,
                              int64_t budget, dsc__redis_answer_fn fn, void *ud, dsc_error *err) {
    if (from_hour % 3600 || !cursor || !cursor[0] || budget < 1 || budget > 10000)
        return dsc_error_set(err, DSC_BAD_REQUEST, "rollups: from an hour's start, a cursor");
    args a = {0};
    add_int(&a, from_hour), add_int(&a, to_hour), add_str(&a, cursor), add_int(&a, budget);
    return send_answer(r, DSC_REDIS_ROLLUPS, &a, 0, fn, ud, err);
}

#define SEED_ARGS_MAX 262144 /* strings of a new budget's counters' past usage */

dsc_status dsc__redis_budget_seeded(dsc__redis *r, const char *id, const char *definition,
                                    int32_t tz_offset_s, const dsc_window *w,
                                    const char *const *seed, size_t n, dsc__redis_answer_fn fn,
                                    void *ud, dsc_error *err) {
    const char *kind = window_kind(w);
    if (!id || !id[0] || !definition || !definition[0] || !kind || n > SEED_ARGS_MAX)
        return dsc_error_set(err, DSC_BAD_REQUEST, "budget: a definition, a window, a seed");
    args a = {0}; /* the fixed part; the seed's strings follow it */
    add_str(&a, id), add_str(&a, definition), add_int(&a, tz_offset_s), add_str(&a, kind);
    add_int(&a, w->span_us), add_int(&a, w->rate_micro);
    const char **v = malloc(((size_t)a.n + n) * sizeof *v);
    answer_pending *p = malloc(sizeof *p);
    if (!v || !p) {
        free(v);
        free(p);
        return dsc_error_set(err, DSC_NOMEM, "out of memory for a Redis call");
    }
    memcpy(v, a.v, (size_t)a.n * sizeof *v);
    memcpy(v + a.n, seed, n * sizeof *v);
    *p = (answer_pending){fn, ud, DSC_REDIS_BUDGET, 0};
    dsc_status st = dsc__redis_eval(r, DSC_REDIS_BUDGET, a.n + (int)n, v, on_answer_reply, p);
    free(v);
    if (st != DSC_OK) {
        free(p);
        return dsc_error_set(err, st, "%s",
                             st == DSC_NOMEM ? "out of memory for a Redis call"
                                             : dsc__redis_last_error(r));
    }
    return DSC_OK;
}

bool dsc__redis_rollup_sum(const char *sums, dsc_metric m, int64_t *out) {
    const char *s = sums;
    for (int i = 0; i < DSC_METRIC_COUNT; i++) {
        char *end;
        errno = 0;
        long long v = strtoll(s, &end, 10);
        if (end == s || errno || *end != (i + 1 < DSC_METRIC_COUNT ? ',' : '\0')) return false;
        if (i == (int)m) *out = v;
        s = end + 1;
    }
    return true;
}

dsc_status dsc__redis_admin_add(dsc__redis *r, const char *by, const char *action,
                                const char *target, const char *detail, int64_t max,
                                dsc__redis_answer_fn fn, void *ud, dsc_error *err) {
    args a = {0};
    add_str(&a, "add"), add_str(&a, by), add_str(&a, action), add_str(&a, target);
    add_str(&a, detail), add_int(&a, max > 0 ? max : 1);
    return send_answer(r, DSC_REDIS_ADMIN, &a, 0, fn, ud, err);
}

dsc_status dsc__redis_admin_read(dsc__redis *r, const char *start, int64_t count,
                                 dsc__redis_answer_fn fn, void *ud, dsc_error *err) {
    args a = {0};
    add_str(&a, "read"), add_str(&a, start), add_int(&a, count);
    return send_answer(r, DSC_REDIS_ADMIN, &a, 0, fn, ud, err);
}

int64_t dsc__redis_seq_of_id(const char *id) {
    long long ms = 0, seq = 0;
    if (sscanf(id, "%lld-%lld", &ms, &seq) != 2) return 0;
    return (int64_t)ms << 20 | (seq & 0xfffff);
}

void dsc__redis_id_of_seq(int64_t seq, char *out, size_t cap) {
    snprintf(out, cap, "%lld-%lld", (long long)(seq >> 20), (long long)(seq & 0xfffff));
}
