/*
 * methods_ledger.c - handlers over the ledger: check, settle, cancel, budget.get,
 * budget.list, budget.set (admin), budget.delete (admin).
 *
 * check = estimate -> amounts -> ledger preview -> policy VM -> reserve when allowed
 * -> decision journal -> reply. The journal write comes before the reply; with the
 * store unavailable, failure_mode decides: "closed" answers store_unavailable (and
 * releases a hold already taken), "open" lets an allow through flagged unenforced.
 *
 * Every ledger call goes through the server's ledger operations (ledger_ops.h): the
 * process's own ledger, or a Redis shared by many replicas. A read that a Redis
 * store answers later (a check's budget states, a settle's hold) splits its handler
 * in two: the part after the read runs on the worker's loop when it arrives, from a
 * copy of the call kept in the job.
 */
#include "methods.h"

#include <inttypes.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#define PREVIEW_MAX 64
#define TAGS_MAX 16
#define FIELD_MAX 64 /* subject parts, purpose, request_id, tag keys and values (with NUL) */

/* ------------------------------------------------------------------- packing -- */

static void pack_api(msgpack_packer *pk, const char *key, int64_t micro) {
    dsc_rpc_pack_key_double(pk, key, dsc_amount_to_api(micro));
}

static void pack_budget_state(msgpack_packer *pk, const dsc_budget_state *b) {
    msgpack_pack_map(pk, 11);
    dsc__pack_key(pk, "selector");
    dsc_rpc_pack_cstr(pk, b->selector);
    dsc__pack_key(pk, "counter");
    dsc_rpc_pack_cstr(pk, b->counter);
    dsc__pack_key(pk, "metric");
    dsc_rpc_pack_cstr(pk, dsc_metric_name(b->metric));
    dsc__pack_key(pk, "window");
    dsc_rpc_pack_cstr(pk, b->window);
    pack_api(pk, "limit", b->limit);
    pack_api(pk, "used", b->used);
    pack_api(pk, "held", b->held);
    pack_api(pk, "remaining", b->remaining);
    dsc__pack_key(pk, "resets_at");
    msgpack_pack_int64(pk, b->resets_at);
    pack_api(pk, "request", b->request);
    dsc__pack_key(pk, "would_exceed");
    if (b->would_exceed)
        msgpack_pack_true(pk);
    else
        msgpack_pack_false(pk);
}

static void pack_budget_states(msgpack_packer *pk, const dsc_budget_state *s, size_t n) {
    dsc__pack_key(pk, "budgets");
    msgpack_pack_array(pk, n);
    for (size_t i = 0; i < n; i++)
        pack_budget_state(pk, &s[i]);
}

static void pack_budget_info(msgpack_packer *pk, const dsc_budget_info *b) {
    msgpack_pack_map(pk, 5);
    dsc__pack_key(pk, "selector");
    dsc_rpc_pack_cstr(pk, b->selector);
    dsc__pack_key(pk, "metric");
    dsc_rpc_pack_cstr(pk, dsc_metric_name(b->metric));
    dsc__pack_key(pk, "window");
    dsc_rpc_pack_cstr(pk, b->window);
    pack_api(pk, "limit", b->limit);
    dsc__pack_key(pk, "unit");
    dsc_rpc_pack_cstr(pk, dsc_metric_unit(b->metric));
}

static void pack_amounts(msgpack_packer *pk, const dsc_amounts *a) {
    msgpack_pack_map(pk, DSC_METRIC_COUNT);
    for (int m = 0; m < DSC_METRIC_COUNT; m++)
        pack_api(pk, dsc_metric_name((dsc_metric)m), a->v[m]);
}

/* ------------------------------------------------------------------ params -- */

typedef dsc__subject_buf subject_buf;

dsc_status dsc__read_subject(const msgpack_object *p, bool required, const dsc__scope *scope,
                             subject_buf *s, dsc_error *err) {
    const msgpack_object *m;
    memset(s, 0, sizeof *s);
    bool fills = scope && !dsc__scope_is_all(scope);
    static const char *const parts[] = {"org", "team", "user", "key", NULL};
    dsc_status st = dsc_rpc_get_map(p, "subject", required && !fills, &m, err);
    if (st == DSC_OK) st = dsc_rpc_check_keys(m, parts, "subject", err);
    if (st != DSC_OK) return st;
    if (m && ((st = dsc_rpc_get_str(m, "org", false, s->org, FIELD_MAX, err)) ||
              (st = dsc_rpc_get_str(m, "team", false, s->team, FIELD_MAX, err)) ||
              (st = dsc_rpc_get_str(m, "user", false, s->user, FIELD_MAX, err)) ||
              (st = dsc_rpc_get_str(m, "key", false, s->key, FIELD_MAX, err)))) {
        char msg[DSC_ERROR_MESSAGE_MAX];
        snprintf(msg, sizeof msg, "%s", err->message);
        return dsc_error_set(err, st, "subject: %s", msg);
    }
    if (scope && (st = dsc__scope_apply(scope, s->org, s->team, s->user, FIELD_MAX, err)))
        return st;
    s->subject = (dsc_subject){s->org, s->team, s->user, s->key};
    if (!m && !fills) return DSC_OK;
    if (!s->org[0] && !s->team[0] && !s->user[0] && !s->key[0])
        return dsc_error_set(err, DSC_BAD_REQUEST,
                             "field 'subject': needs at least one of org, team, user, key");
    return DSC_OK;
}

typedef struct tags_buf {
    char keys[TAGS_MAX][FIELD_MAX], values[TAGS_MAX][FIELD_MAX];
    dsc_policy_tag tags[TAGS_MAX];
    int n;
} tags_buf;

static dsc_status copy_tag_str(const msgpack_object *o, char *out, const char *what,
                               dsc_error *err) {
    if (o->type != MSGPACK_OBJECT_STR)
        return dsc_error_set(err, DSC_BAD_REQUEST, "field 'tags': %s must be a string, got %s",
                             what, dsc_rpc_type_name(o));
    if (o->via.str.size >= FIELD_MAX || memchr(o->via.str.ptr, '\0', o->via.str.size))
        return dsc_error_set(err, DSC_BAD_REQUEST,
                             "field 'tags': a %s is longer than %d bytes or holds NUL", what,
                             FIELD_MAX - 1);
    if (!dsc_rpc_utf8_valid(o->via.str.ptr, o->via.str.size))
        return dsc_error_set(err, DSC_BAD_REQUEST, "field 'tags': a %s is not valid UTF-8", what);
    memcpy(out, o->via.str.ptr, o->via.str.size);
    out[o->via.str.size] = '\0';
    return DSC_OK;
}

static dsc_status read_tags(const msgpack_object *p, tags_buf *t, dsc_error *err) {
    const msgpack_object *m;
    t->n = 0;
    dsc_status st = dsc_rpc_get_map(p, "tags", false, &m, err);
    if (st != DSC_OK || !m) return st;
    if (m->via.map.size > TAGS_MAX)
        return dsc_error_set(err, DSC_BAD_REQUEST, "field 'tags': %u pairs, at most %d",
                             m->via.map.size, TAGS_MAX);
    for (uint32_t i = 0; i < m->via.map.size; i++) {
        if ((st = copy_tag_str(&m->via.map.ptr[i].key, t->keys[i], "key", err)) ||
            (st = copy_tag_str(&m->via.map.ptr[i].val, t->values[i], "value", err)))
            return st;
        t->tags[i] = (dsc_policy_tag){t->keys[i], t->values[i]};
    }
    t->n = (int)m->via.map.size;
    return DSC_OK;
}

typedef struct check_args {
    dsc__estimate_args est;
    subject_buf subject;
    tags_buf tags;
    char purpose[FIELD_MAX], request_id[FIELD_MAX];
    bool reserve;
    bool budgets; /* the reply lists every matching budget's state (opt-in: large) */
    bool context; /* the reply carries the estimate context (opt-out: large) */
    int64_t ttl_s;
} check_args;

/* The check's own fields (the subject and the estimate's are read by their readers),
 * picked from the params in one pass. */
static const dsc_rpc_name check_names[] = {DSC_RPC_NAME("purpose"), DSC_RPC_NAME("tags"),
                                           DSC_RPC_NAME("reserve"), DSC_RPC_NAME("budgets"),
                                           DSC_RPC_NAME("context"), DSC_RPC_NAME("request_id"),
                                           DSC_RPC_NAME("ttl_s")};
#define CHECK_NAMES (sizeof check_names / sizeof check_names[0])

static dsc_status read_check_args(dsc__call *c, const msgpack_object *params, check_args *a,
                                  dsc_error *err) {
    dsc_status st;
    msgpack_object_kv kv[CHECK_NAMES];
    msgpack_object picked;
    const msgpack_object *p = dsc_rpc_pick(params, check_names, CHECK_NAMES, kv, &picked);
    a->reserve = true;
    a->context = true;
    a->ttl_s = c->srv->cfg.hold_ttl_s;
    if ((st = dsc__read_subject(params, true, c->scope, &a->subject, err)) ||
        (st = dsc__read_estimate_args(c, params, &a->est, true, err)) ||
        (st = dsc_rpc_get_str(p, "purpose", true, a->purpose, sizeof a->purpose, err)) ||
        (st = read_tags(p, &a->tags, err)) ||
        (st = dsc_rpc_get_bool(p, "reserve", false, &a->reserve, err)) ||
        (st = dsc_rpc_get_bool(p, "budgets", false, &a->budgets, err)) ||
        (st = dsc_rpc_get_bool(p, "context", false, &a->context, err)) ||
        (st = dsc_rpc_get_str(p, "request_id", false, a->request_id, sizeof a->request_id, err)) ||
        (st = dsc_rpc_get_int(p, "ttl_s", false, 1, 86400, &a->ttl_s, err)))
        return st;
    return DSC_OK;
}

/* ------------------------------------------------------------------- check -- */

/* What a reply needs of a dsc_decision (which also holds every policy's verdict and
 * stays on the worker: tens of KiB that a waiting job should not carry). */
typedef struct decision_summary {
    dsc_policy_outcome outcome;
    char reason[DSC_POLICY_REASON_MAX];
    char policy[DSC_POLICY_NAME_MAX];
    char version[DSC_POLICY_VERSION_MAX];
    int64_t retry_after_s;
    char suggest_provider[DSC_POLICY_NAME_MAX];
    char suggest_model[DSC_POLICY_MODEL_MAX];
} decision_summary;

/* Filled piece by piece as the check runs (never zeroed whole: states is large and
 * mostly unused). */
typedef struct check_out {
    dsc_estimate est;
    dsc_amounts amounts;
    dsc_budget_state states[PREVIEW_MAX];
    size_t n_states;
    decision_summary decision;
    char reservation[DSC_RESERVATION_ID_MAX];
    char decision_id[48];
    int64_t expires_at;
    bool unenforced;
} check_out;

/* A check waiting for its hold and its decision record to be committed. */
typedef struct check_job {
    dsc__job job; /* first: the job machinery sees only this */
    check_args a;
    check_out o;
    dsc_decision_record rec;
    char purpose_class[32];
    char verdicts[2048], tags_json[1536]; /* JSON text for the journal */
    dsc__call call;                       /* for the part after the budget states */
    char key_id[DSC__KEY_ID_MAX];
    bool priced;
    dsc_budget_state exceeded[4]; /* a refused hold's budgets (the store may say so later) */
    dsc_reserve_out rout;
} check_job;

/* Keep what the rest of a call needs after its handler returned. */
static void keep_call(dsc__call *copy, char *key_id, size_t cap, const dsc__call *c) {
    *copy = *c;
    dsc__copy_str(key_id, cap, c->key_id);
    copy->key_id = key_id;
    copy->scope = NULL; /* read with the params, before the wait */
}

static void ignore_done(void *ud, dsc_status st, const dsc_error *err) {
    (void)ud;
    (void)st;
    (void)err;
}

static bool fail_open(const dsc__call *c, dsc_status st) {
    return st == DSC_STORE_UNAVAILABLE && c->srv->cfg.failure_mode == DSC_FAIL_OPEN;
}

/* The ledger is the last word: when the hold finds a budget used up by a concurrent
 * request after the policies allowed, the answer becomes a refusal naming it. */
static void refuse_exceeded(check_out *o, const dsc_budget_state *b, size_t n) {
    decision_summary *d = &o->decision;
    d->outcome = DSC_POLICY_REFUSE;
    snprintf(d->policy, sizeof d->policy, "ledger");
    snprintf(d->reason, sizeof d->reason, "budget %s %s %s would be exceeded", n ? b->counter : "?",
             n ? dsc_metric_name(b->metric) : "?", n ? b->window : "?");
    o->reservation[0] = '\0';
}

/* The decision record of a check as it stands (its reservation_id, when it has a hold,
 * is filled by the ledger). */
static void fill_record(dsc__call *c, check_job *j) {
    check_args *a = &j->a;
    check_out *o = &j->o;
    if (!o->decision_id[0]) dsc__new_decision_id(c->w, o->decision_id, sizeof o->decision_id);
    j->rec = (dsc_decision_record){
        .decision_id = o->decision_id,
        .request_id = a->request_id[0] ? a->request_id : NULL,
        .subject = a->subject.subject,
        .purpose = a->purpose,
        .provider = a->est.provider,
        .model = a->est.model,
        .input_tokens = a->est.in.input_tokens,
        .output_tokens = a->est.in.output_tokens,
        .est_energy_wh = o->amounts.v[DSC_METRIC_ENERGY_WH],
        .est_gco2e = o->amounts.v[DSC_METRIC_GCO2E],
        .est_water_ml = o->amounts.v[DSC_METRIC_WATER_ML],
        .outcome = dsc_policy_outcome_name(o->decision.outcome),
        .policy = o->decision.policy,
        .policy_version = o->decision.version,
        .reason = o->decision.reason,
        .reservation_id = o->reservation[0] ? o->reservation : NULL,
        .key_id = c->key_id[0] ? c->key_id : NULL,
        .zone = a->est.in.zone,
        .purpose_class = j->purpose_class,
        .verdicts = j->verdicts,
        .tags = j->tags_json,
        .warnings = o->est.warnings,
    };
}

/* Hold the estimate and journal the allowing decision in one store record (one commit
 * slot). When the hold is refused, or the store is down in fail-open mode, nothing is
 * held or journaled and the caller journals the decision as it now stands. */
static dsc_status reserve(dsc__call *c, check_job *j, dsc_error *err) {
    check_args *a = &j->a;
    check_out *o = &j->o;
    dsc_reserve_out *out = &j->rout;
    *out = (dsc_reserve_out){.exceeded = j->exceeded, .max_exceeded = 4};
    fill_record(c, j);
    dsc_reserve_req req = {&a->subject.subject, &o->amounts, a->ttl_s,
                           a->request_id[0] ? a->request_id : NULL, &j->rec};
    dsc_done done = {dsc__job_done, dsc__job_slot(&j->job, 0)};
    dsc_status st = c->srv->lops->reserve(c->w, &req, out, &done, err);
    dsc__copy_str(o->reservation, sizeof o->reservation, st == DSC_OK ? out->reservation_id : "");
    if (st == DSC_OK) {
        o->expires_at = dsc__now_us() / 1000000 + a->ttl_s;
        return DSC_OK;
    }
    dsc__job_unslot(&j->job);
    o->reservation[0] = '\0';
    if (st == DSC_BUDGET_EXCEEDED)
        refuse_exceeded(o, j->exceeded, out->n_exceeded);
    else if (fail_open(c, st))
        o->unenforced = true;
    else
        return st;
    dsc_error_clear(err);
    return DSC_OK;
}

/* Journal a decision that holds nothing (throttle, refuse, reserve = false). */
static void journal(dsc__call *c, check_job *j) {
    check_out *o = &j->o;
    fill_record(c, j);
    dsc_error err;
    dsc_done done = {dsc__job_done, dsc__job_slot(&j->job, 0)};
    dsc_status st = c->srv->lops->record(c->w, &j->rec, &done, &err);
    if (st == DSC_OK) return;
    dsc__job_unslot(&j->job);
    if (fail_open(c, st)) {
        o->unenforced = true;
        return;
    }
    j->job.st = st;
    j->job.err = err;
}

static dsc_status decide(dsc__call *c, const check_args *a, check_out *o, dsc_error *err) {
    dsc_policy_input in = {
        .subject = a->subject.subject,
        .provider = a->est.provider,
        .model = a->est.model,
        .input_tokens = a->est.in.input_tokens,
        .output_tokens = a->est.in.output_tokens,
        .purpose = a->purpose,
        .zone = a->est.in.zone,
        .tags = a->tags.tags,
        .n_tags = a->tags.n,
        .estimate = &o->est,
        .budgets = o->states,
        .n_budgets = (int)o->n_states,
        .now = dsc__now_us() / 1000000,
    };
    dsc_decision *d = &c->w->decision;
    dsc_status st = dsc_policy_vm_decide(c->w->vm, &in, d);
    dsc__count_policy(c->w);
    if (st != DSC_OK) return dsc_error_set(err, st, "%s", d->reason);
    decision_summary *sum = &o->decision;
    sum->outcome = d->outcome;
    sum->retry_after_s = d->retry_after_s;
    memcpy(sum->reason, d->reason, sizeof sum->reason);
    memcpy(sum->policy, d->policy, sizeof sum->policy);
    memcpy(sum->version, d->version, sizeof sum->version);
    memcpy(sum->suggest_provider, d->suggest_provider, sizeof sum->suggest_provider);
    memcpy(sum->suggest_model, d->suggest_model, sizeof sum->suggest_model);
    return DSC_OK;
}

/* The list price of the request's model (aliases share it); NULL when unpriced. */
/* The list price of the model est was computed for (by the worker's catalogue, just
 * before): the estimate names its record, so no second look-up by name. */
static const dsc_price *request_price(dsc__call *c, const dsc_estimate *est) {
    return dsc_catalog_model_price(c->w->state->catalog, est->model);
}

/* A cost budget cannot be kept for a model without a list price: rather than hold
 * nothing and let the budget leak, the ledger refuses the check (over an allow or a
 * throttle of the policies), naming the model and the budget (docs/protocol.md). */
static void refuse_unpriced(const check_args *a, check_out *o) {
    for (size_t i = 0; i < o->n_states; i++) {
        const dsc_budget_state *b = &o->states[i];
        if (b->metric != DSC_METRIC_COST) continue;
        decision_summary *d = &o->decision;
        d->outcome = DSC_POLICY_REFUSE;
        d->retry_after_s = 0;
        d->suggest_provider[0] = d->suggest_model[0] = '\0';
        snprintf(d->policy, sizeof d->policy, "ledger");
        snprintf(d->reason, sizeof d->reason,
                 "model %.32s/%.48s has no list price, so cost budget %.64s cost %.24s "
                 "cannot be kept",
                 a->est.provider, a->est.model, b->counter, b->window);
        return;
    }
}

/* JSON text for the journal, written straight into a fixed buffer: a check builds
 * two of these, and through jansson (a node and a malloc per value, then a dump) they
 * cost about 12 us of server CPU per check + settle at pipeline 1; this writer
 * allocates nothing. Reading them back (decisions.list) goes through jansson. */
typedef struct jbuf {
    char *p;
    size_t cap, len;
    bool full; /* something did not fit: the text is dropped, never cut */
} jbuf;

static void jb_raw(jbuf *b, const char *s, size_t n) {
    if (b->full || b->len + n >= b->cap) {
        b->full = true;
        return;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
}

/* A JSON string of at most max bytes of s: quotes, backslashes and control bytes
 * escaped, the runs between them copied whole. */
static void jb_str(jbuf *b, const char *s, size_t max) {
    static const char hex[] = "0123456789abcdef";
    jb_raw(b, "\"", 1);
    size_t i = 0, run = 0;
    for (; s[i] && i < max; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (ch != '"' && ch != '\\' && ch >= 0x20) continue;
        jb_raw(b, s + run, i - run);
        char esc[6] = {'\\', 'u', '0', '0', hex[ch >> 4], hex[ch & 15]};
        if (ch == '"' || ch == '\\') esc[1] = (char)ch;
        jb_raw(b, esc, ch < 0x20 ? 6 : 2);
        run = i + 1;
    }
    jb_raw(b, s + run, i - run);
    jb_raw(b, "\"", 1);
}

static void jb_cstr(jbuf *b, const char *s) {
    jb_raw(b, s, strlen(s));
}

static void jb_end(jbuf *b) {
    if (b->full) b->len = 0;
    b->p[b->len] = '\0';
}

/* Every policy's verdict, reasons shortened until they fit the journal's column:
 * [{"policy":..,"outcome":..,"reason":..,"shadow":bool}, ...]. */
static void verdicts_json(const dsc_decision *d, char *out, size_t cap) {
    static const size_t reason_max[] = {DSC_POLICY_REASON_MAX, 160, 48, 0};
    for (size_t r = 0; r < sizeof reason_max / sizeof reason_max[0]; r++) {
        jbuf b = {out, cap, 0, false};
        jb_raw(&b, "[", 1);
        for (int i = 0; i < d->n_verdicts; i++) {
            const dsc_policy_verdict *v = &d->verdicts[i];
            const char *o = dsc_policy_outcome_name(v->outcome);
            jb_cstr(&b, i ? ",{\"policy\":" : "{\"policy\":");
            jb_str(&b, v->policy, sizeof v->policy);
            jb_cstr(&b, ",\"outcome\":");
            jb_str(&b, o, strlen(o));
            jb_cstr(&b, ",\"reason\":");
            jb_str(&b, v->reason, reason_max[r]);
            jb_cstr(&b, v->shadow ? ",\"shadow\":true}" : ",\"shadow\":false}");
        }
        jb_raw(&b, "]", 1);
        jb_end(&b);
        if (b.len) return;
    }
}

static void tags_json(const tags_buf *t, char *out, size_t cap) {
    jbuf b = {out, cap, 0, false};
    jb_raw(&b, "{", 1);
    for (int i = 0; i < t->n; i++) {
        if (i) jb_raw(&b, ",", 1);
        jb_str(&b, t->keys[i], FIELD_MAX);
        jb_raw(&b, ":", 1);
        jb_str(&b, t->values[i], FIELD_MAX);
    }
    jb_raw(&b, "}", 1);
    jb_end(&b);
}

/* What the journal keeps of a check beyond its answer: purpose class, every verdict,
 * tags. Shadow verdicts are counted and a shadow refusal logged. */
static void audit(dsc__call *c, check_job *j) {
    const dsc_decision *d = &c->w->decision;
    dsc__copy_str(j->purpose_class, sizeof j->purpose_class,
                  dsc_policy_vm_purpose_class(c->w->vm, j->a.purpose));
    verdicts_json(d, j->verdicts, sizeof j->verdicts);
    tags_json(&j->a.tags, j->tags_json, sizeof j->tags_json);
    for (int i = 0; i < d->n_verdicts; i++) {
        const dsc_policy_verdict *v = &d->verdicts[i];
        if (!v->shadow) continue;
        dsc__count_shadow(c->w, v->policy, v->outcome);
        if (v->outcome == DSC_POLICY_REFUSE)
            dsc_log_write(&c->srv->log, DSC_LOG_INFO, "shadow_refuse",
                          "policy=%s key=%s reason=\"%.200s\"", v->policy,
                          c->key_id[0] ? c->key_id : "-", v->reason);
    }
}

/* The part of a check after its budget states: policies, then hold or journal. */
static dsc_status check_decide(dsc__call *c, check_job *j, dsc_error *err) {
    check_args *a = &j->a;
    check_out *o = &j->o;
    dsc_status st;
    if (o->n_states > PREVIEW_MAX) o->n_states = PREVIEW_MAX;
    if ((st = decide(c, a, o, err)) != DSC_OK) return st;
    if (!j->priced && o->decision.outcome != DSC_POLICY_REFUSE) refuse_unpriced(a, o);
    audit(c, j);
    if (o->decision.outcome == DSC_POLICY_ALLOW && a->reserve) {
        if ((st = reserve(c, j, err)) != DSC_OK) return st;
        if (o->reservation[0]) return DSC_OK; /* journaled with its hold */
    }
    journal(c, j);
    return DSC_OK;
}

/* The budget states arrived from the store (slot 1): decide. With the store down,
 * fail-open decides on the budgets as matched (their usage unknown). */
static void on_check_states(void *ud, dsc_status st, const dsc_error *st_err) {
    check_job *j = ud;
    dsc_error err = st == DSC_OK ? (dsc_error){0} : *st_err;
    if (st == DSC_OK || fail_open(&j->call, st)) st = check_decide(&j->call, j, &err);
    dsc__job_done(&j->job.slots[1], st, &err);
}

/* Everything a check does before it waits for the store. */
static dsc_status run_check(dsc__call *c, check_job *j, dsc_error *err) {
    check_args *a = &j->a;
    check_out *o = &j->o;
    dsc_status st = dsc_estimate_compute(c->w->state->catalog, &a->est.in, &o->est, err);
    if (st != DSC_OK) return st;
    const dsc_price *price = request_price(c, &o->est);
    j->priced = price != NULL;
    dsc_amounts_from_estimate(
        &o->est, a->est.in.input_tokens, a->est.in.output_tokens,
        dsc_price_cost_micro(price, a->est.in.input_tokens, a->est.in.output_tokens), &o->amounts);
    bool later = false;
    dsc_done done = {on_check_states, j};
    keep_call(&j->call, j->key_id, sizeof j->key_id, c);
    dsc__job_slot(&j->job, 1);
    st = c->srv->lops->preview(c->w, &a->subject.subject, &o->amounts, true, o->states, PREVIEW_MAX,
                               &o->n_states, &done, &later, err);
    if (later) return DSC_OK;
    dsc__job_unslot(&j->job);
    if (fail_open(c, st))
        dsc_error_clear(err); /* decide on the budgets as matched */
    else if (st != DSC_OK)
        return st;
    return check_decide(c, j, err);
}

/* The budget states only when the client asked (`budgets: true`): with three
 * budgets they are two thirds of the reply's bytes, and a client that goes ahead
 * needs only the outcome, the reservation and the estimate. */
static void pack_check_budgets(msgpack_packer *pk, const check_out *o, bool wanted) {
    if (wanted) pack_budget_states(pk, o->states, o->n_states);
}

/* The estimate context (method, scope, assumptions, warnings) unless the client
 * declined it (`context: false`): under the discern method it is 527 of a check
 * reply's 920 bytes, and a client that only goes ahead or not reads none of it. */
static size_t context_keys(bool wanted) {
    return wanted ? DSC__ESTIMATE_CONTEXT_KEYS : 0;
}

static void pack_context(msgpack_packer *pk, dsc__worker *w, const dsc_estimate *est, bool wanted) {
    if (wanted) dsc__context_pack(pk, &w->context_cache, est);
}

static void pack_check(msgpack_packer *pk, dsc__worker *w, const check_out *o,
                       const check_args *a) {
    bool with_budgets = a->budgets;
    const decision_summary *d = &o->decision;
    bool retry = d->outcome == DSC_POLICY_THROTTLE && d->retry_after_s > 0;
    bool suggest = d->suggest_model[0] != '\0';
    bool resv = o->reservation[0] != '\0';
    msgpack_pack_map(pk, 7 + with_budgets + context_keys(a->context) + retry + suggest + 2 * resv +
                             o->unenforced);
    dsc__pack_key(pk, "decision");
    dsc_rpc_pack_cstr(pk, dsc_policy_outcome_name(d->outcome));
    dsc__pack_key(pk, "reason");
    dsc_rpc_pack_cstr(pk, d->reason);
    dsc__pack_key(pk, "policy");
    dsc_rpc_pack_cstr(pk, d->policy);
    dsc__pack_key(pk, "policy_version");
    dsc_rpc_pack_cstr(pk, d->version);
    dsc__pack_key(pk, "decision_id");
    dsc_rpc_pack_cstr(pk, o->decision_id);
    dsc__pack_key(pk, "estimate");
    dsc__pack_impacts(pk, &o->est.total);
    dsc__pack_key(pk, "zone");
    dsc_rpc_pack_cstr(pk, o->est.zone);
    pack_context(pk, w, &o->est, a->context);
    pack_check_budgets(pk, o, with_budgets);
    if (retry) {
        dsc__pack_key(pk, "retry_after_s");
        msgpack_pack_double(pk, (double)d->retry_after_s);
    }
    if (suggest) {
        dsc__pack_key(pk, "suggest");
        msgpack_pack_map(pk, 2);
        dsc__pack_key(pk, "provider");
        dsc_rpc_pack_cstr(pk, d->suggest_provider);
        dsc__pack_key(pk, "model");
        dsc_rpc_pack_cstr(pk, d->suggest_model);
    }
    if (resv) {
        dsc__pack_key(pk, "reservation");
        dsc_rpc_pack_cstr(pk, o->reservation);
        dsc__pack_key(pk, "expires_at");
        msgpack_pack_int64(pk, o->expires_at);
    }
    if (o->unenforced) {
        dsc__pack_key(pk, "unenforced");
        msgpack_pack_true(pk);
    }
}

/* The hold and the record are committed (or failed): reply. */
static dsc_status finish_check(dsc__job *job, dsc_status st, const dsc_error *st_err,
                               msgpack_packer *pk, dsc_error *err) {
    check_job *j = (check_job *)job;
    dsc_server *srv = job->w->srv;
    if (st == DSC_BUDGET_EXCEEDED) {
        /* the store's counters refused the hold the policies allowed (it journaled
         * the refusal with it) */
        refuse_exceeded(&j->o, j->exceeded, j->rout.n_exceeded);
        st = DSC_OK;
    } else if (st == DSC_OK && j->o.reservation[0]) {
        /* a repeated request_id: the store names the first hold */
        dsc__copy_str(j->o.reservation, sizeof j->o.reservation, j->rout.reservation_id);
    }
    if (st == DSC_STORE_UNAVAILABLE && srv->cfg.failure_mode == DSC_FAIL_OPEN) {
        /* A failed commit released the hold: allowed, but nothing enforces it. */
        j->o.unenforced = true;
        j->o.reservation[0] = '\0';
        st = DSC_OK;
    }
    if (st != DSC_OK) {
        if (j->o.reservation[0])
            srv->lops->cancel(job->w, &(dsc_cancel_req){j->o.reservation, NULL},
                              &(dsc_done){ignore_done, NULL}, NULL);
        *err = *st_err;
        return st;
    }
    pack_check(pk, job->w, &j->o, &j->a);
    dsc__count_decision(job->w, j->o.decision.outcome, j->o.decision.policy, j->a.purpose,
                        j->o.unenforced, dsc__now_us() - job->started_us);
    return DSC_OK;
}

dsc_status dsc__m_check(dsc__call *c, const msgpack_object *p, msgpack_packer *pk, dsc_error *err) {
    (void)pk;
    check_job *j = (check_job *)dsc__job_defer(c, sizeof *j, finish_check);
    if (!j) return dsc_error_set(err, DSC_NOMEM, "out of memory for a check");
    memset(&j->a, 0, sizeof j->a);
    j->o.n_states = 0;
    j->o.reservation[0] = j->o.decision_id[0] = '\0';
    j->o.expires_at = 0;
    j->o.unenforced = false;
    dsc_status st = read_check_args(c, p, &j->a, err);
    if (st == DSC_OK) st = run_check(c, j, err);
    return st;
}

/* ------------------------------------------------------------------ settle -- */

typedef struct settle_args {
    char reservation[DSC_RESERVATION_ID_MAX];
    dsc__estimate_args est;
    subject_buf subject;
    bool context; /* the reply carries the estimate context (`context: false` drops it) */
} settle_args;

typedef struct settle_job {
    dsc__job job;
    settle_args a;
    dsc_estimate est;
    dsc_amounts actual;
    dsc_settle_out out; /* the ledger fills it by the time done runs */
    bool has_subject;
    bool charge_fields; /* the params name provider/model: charge so when the hold is unknown */
    dsc_hold_info hold;
    dsc__call call; /* for the part after the hold's lookup */
    char key_id[DSC__KEY_ID_MAX];
    dsc__settle_states sts;    /* the states after the settle, when the store's call read them */
    dsc_budget_state states[]; /* settle_room(srv) of them */
} settle_job;

/* The budget states a settle's job has room for: as many as the store's settle call
 * may fill (a Redis store reads them in its call). The local ledger never fills them
 * (finish_settle reads its memory when the reply is packed), so its jobs carry none:
 * 64 states are 22 KiB, and a server waiting for a commit keeps hundreds of settles. */
static size_t settle_room(const dsc_server *srv) {
    return srv->lops == &dsc__ledger_local ? 0 : PREVIEW_MAX;
}

static void subject_from_hold(subject_buf *s, const dsc_hold_info *h) {
    dsc__copy_str(s->org, FIELD_MAX, h->org);
    dsc__copy_str(s->team, FIELD_MAX, h->team);
    dsc__copy_str(s->user, FIELD_MAX, h->user);
    dsc__copy_str(s->key, FIELD_MAX, h->key);
    s->subject = (dsc_subject){s->org, s->team, s->user, s->key};
}

/* A hold belongs to the key that took it: the ledger refuses another key's settle or
 * cancel (an admin's excepted), also of a hold it recalls from the store. */
static const char *caller_key(const dsc__call *c) {
    return c->role == DSC__ROLE_ADMIN ? NULL : c->key_id;
}

/* What the reservation was for comes from the ledger, which keeps every hold (and
 * reloads them on a restart); a reservation it does not know (an id of the client's
 * own, or one finished long ago) is charged by provider/model/zone/subject in the
 * params. The params are read before the hold is looked up (a Redis store answers
 * later, when they are gone): the usage always, what to charge when they name a
 * model. */
static dsc_status read_settle_args(dsc__call *c, const msgpack_object *p, settle_job *j,
                                   dsc_error *err) {
    settle_args *a = &j->a;
    dsc_status st;
    a->context = true;
    if ((st =
             dsc_rpc_get_str(p, "reservation", true, a->reservation, sizeof a->reservation, err)) ||
        (st = dsc_rpc_get_bool(p, "context", false, &a->context, err)))
        return st;
    j->charge_fields = dsc_rpc_field(p, "model") != NULL;
    if (!j->charge_fields)
        return (st = dsc_rpc_get_int(p, "input_tokens", true, 0, DSC__TOKENS_MAX,
                                     &a->est.in.input_tokens, err)) ||
                       (st = dsc_rpc_get_int(p, "output_tokens", true, 0, DSC__TOKENS_MAX,
                                             &a->est.in.output_tokens, err)) ||
                       (st = dsc_rpc_get_num(p, "latency_s", false, 0, 86400, &a->est.in.latency_s,
                                             err)) ||
                       (st = dsc__read_estimate_extras(c, p, &a->est.in, err))
                   ? st
                   : DSC_OK;
    if (!dsc_rpc_field(p, "input_tokens"))
        return dsc_error_set(err, DSC_BAD_REQUEST, "field 'input_tokens' is required");
    if ((st = dsc__read_estimate_args(c, p, &a->est, true, err))) return st;
    return dsc__read_subject(p, false, c->scope, &a->subject, err);
}

/* The hold is known (or not): charge it by what it was for, or by the params. */
static dsc_status settle_hold(dsc__call *c, settle_job *j, bool known, dsc_error *err) {
    settle_args *a = &j->a;
    const dsc_hold_info *h = &j->hold;
    known = known && h->model[0];
    if (known && caller_key(c) && strcmp(h->owner, c->key_id) != 0)
        return dsc_error_set(err, DSC_FORBIDDEN,
                             "field 'reservation': '%.40s' is held by another key", a->reservation);
    if (!known && !j->charge_fields)
        return dsc_error_set(
            err, DSC_UNKNOWN_RESERVATION,
            "field 'reservation': '%s' is not known to this server; give provider and "
            "model to charge it",
            a->reservation);
    if (known) {
        dsc__copy_str(a->est.provider, sizeof a->est.provider, h->provider);
        dsc__copy_str(a->est.model, sizeof a->est.model, h->model);
        dsc__copy_str(a->est.zone, sizeof a->est.zone, h->zone);
        a->est.in.provider = a->est.provider;
        a->est.in.model = a->est.model;
        a->est.in.zone = a->est.zone[0] ? a->est.zone : NULL;
        subject_from_hold(&a->subject, h);
    }
    dsc_status st = dsc_estimate_compute(c->w->state->catalog, &a->est.in, &j->est, err);
    if (st != DSC_OK) return st;
    dsc_amounts_from_estimate(&j->est, a->est.in.input_tokens, a->est.in.output_tokens,
                              dsc_price_cost_micro(request_price(c, &j->est),
                                                   a->est.in.input_tokens, a->est.in.output_tokens),
                              &j->actual);
    const subject_buf *s = &a->subject;
    j->has_subject = s->org[0] || s->team[0] || s->user[0] || s->key[0];
    dsc_settle_req req = {a->reservation, &j->actual, j->has_subject ? &s->subject : NULL,
                          caller_key(c)};
    dsc_done done = {dsc__job_done, dsc__job_slot(&j->job, 0)};
    j->sts = (dsc__settle_states){j->states, settle_room(c->srv), 0, false};
    st = c->srv->lops->settle(c->w, &req, &j->out, &j->sts, &done, err);
    if (st != DSC_OK) dsc__job_unslot(&j->job);
    return st;
}

static void on_settle_hold(void *ud, dsc_status st, const dsc_error *st_err) {
    settle_job *j = ud;
    dsc_error err = st == DSC_OK ? (dsc_error){0} : *st_err;
    if (st == DSC_OK || st == DSC_UNKNOWN_RESERVATION)
        st = settle_hold(&j->call, j, st == DSC_OK, &err);
    dsc__job_done(&j->job.slots[1], st, &err);
}

static const char *settle_kind_name(dsc_settle_kind k) {
    switch (k) {
    case DSC_SETTLE_RESERVED:
        return "reserved";
    case DSC_SETTLE_REPEATED:
        return "repeated";
    case DSC_SETTLE_LATE:
        return "late";
    case DSC_SETTLE_UNRESERVED:
        return "unreserved";
    }
    return "reserved";
}

static dsc_status finish_settle(dsc__job *job, dsc_status st, const dsc_error *st_err,
                                msgpack_packer *pk, dsc_error *err) {
    settle_job *j = (settle_job *)job;
    if (st != DSC_OK) {
        *err = *st_err;
        return st;
    }
    /* the states the store's call filled in the job, else the ledger's read here */
    dsc_budget_state mine[PREVIEW_MAX], *states = j->sts.filled ? j->states : mine;
    size_t n = j->sts.n, max = j->sts.filled ? j->sts.max : PREVIEW_MAX;
    if (!j->sts.filled &&
        (!j->has_subject || dsc_ledger_preview(job->w->srv->ledger, &j->a.subject.subject, NULL,
                                               states, max, &n, NULL) != DSC_OK))
        n = 0;
    if (n > max) n = max;
    msgpack_pack_map(pk, 5 + context_keys(j->a.context));
    dsc__pack_key(pk, "reservation");
    dsc_rpc_pack_cstr(pk, j->a.reservation);
    dsc__pack_key(pk, "settled");
    dsc_rpc_pack_cstr(pk, settle_kind_name(j->out.kind));
    /* a repeated settle charged nothing: its reply must not claim the caller's amounts */
    static const dsc_amounts nothing;
    dsc__pack_key(pk, "charged");
    pack_amounts(pk, j->out.kind == DSC_SETTLE_REPEATED ? &nothing : &j->actual);
    dsc__pack_key(pk, "estimate");
    dsc__pack_impacts(pk, &j->est.total);
    pack_context(pk, job->w, &j->est, j->a.context);
    pack_budget_states(pk, states, n);
    return DSC_OK;
}

dsc_status dsc__m_settle(dsc__call *c, const msgpack_object *p, msgpack_packer *pk,
                         dsc_error *err) {
    (void)pk;
    settle_job *j = (settle_job *)dsc__job_defer(
        c, sizeof *j + settle_room(c->srv) * sizeof j->states[0], finish_settle);
    if (!j) return dsc_error_set(err, DSC_NOMEM, "out of memory for a settle");
    memset((char *)j + sizeof j->job, 0, offsetof(settle_job, states) - sizeof j->job);
    dsc_status st = read_settle_args(c, p, j, err);
    if (st != DSC_OK) return st;
    bool later = false;
    keep_call(&j->call, j->key_id, sizeof j->key_id, c);
    dsc__job_slot(&j->job, 1);
    st = c->srv->lops->hold_get(c->w, j->a.reservation, &j->hold, &(dsc_done){on_settle_hold, j},
                                &later, err);
    if (later) return DSC_OK;
    if (st != DSC_OK && st != DSC_UNKNOWN_RESERVATION) {
        dsc__job_unslot(&j->job);
        return st;
    }
    dsc_error_clear(err);
    st = settle_hold(c, j, st == DSC_OK, err);
    dsc__job_unslot(&j->job);
    return st;
}

/* ------------------------------------------------------------------ cancel -- */

typedef struct cancel_job {
    dsc__job job;
    char id[DSC_RESERVATION_ID_MAX];
} cancel_job;

static dsc_status finish_cancel(dsc__job *job, dsc_status st, const dsc_error *st_err,
                                msgpack_packer *pk, dsc_error *err) {
    cancel_job *j = (cancel_job *)job;
    if (st != DSC_OK) {
        *err = *st_err;
        return st;
    }
    msgpack_pack_map(pk, 2);
    dsc__pack_key(pk, "reservation");
    dsc_rpc_pack_cstr(pk, j->id);
    dsc__pack_key(pk, "released");
    msgpack_pack_true(pk);
    return DSC_OK;
}

dsc_status dsc__m_cancel(dsc__call *c, const msgpack_object *p, msgpack_packer *pk,
                         dsc_error *err) {
    (void)pk;
    cancel_job *j = (cancel_job *)dsc__job_defer(c, sizeof *j, finish_cancel);
    if (!j) return dsc_error_set(err, DSC_NOMEM, "out of memory for a cancel");
    j->id[0] = '\0';
    dsc_status st = dsc_rpc_get_str(p, "reservation", true, j->id, sizeof j->id, err);
    if (st == DSC_OK)
        st = c->srv->lops->cancel(c->w, &(dsc_cancel_req){j->id, caller_key(c)},
                                  &(dsc_done){dsc__job_done, dsc__job_slot(&j->job, 0)}, err);
    if (st != DSC_OK && j->job.waiting > 0) dsc__job_unslot(&j->job);
    return st;
}

/* ----------------------------------------------------------------- budgets -- */

/* budget.get: the states come from the ledger at once, or from a Redis store later. */
typedef struct budget_get_job {
    dsc__job job;
    subject_buf s;
    size_t n;
    dsc_budget_state states[PREVIEW_MAX];
} budget_get_job;

static dsc_status finish_budget_get(dsc__job *job, dsc_status st, const dsc_error *st_err,
                                    msgpack_packer *pk, dsc_error *err) {
    budget_get_job *j = (budget_get_job *)job;
    if (st != DSC_OK) {
        *err = *st_err;
        return st;
    }
    msgpack_pack_map(pk, 1);
    pack_budget_states(pk, j->states, j->n > PREVIEW_MAX ? PREVIEW_MAX : j->n);
    return DSC_OK;
}

dsc_status dsc__m_budget_get(dsc__call *c, const msgpack_object *p, msgpack_packer *pk,
                             dsc_error *err) {
    (void)pk;
    budget_get_job *j = (budget_get_job *)dsc__job_defer(c, sizeof *j, finish_budget_get);
    if (!j) return dsc_error_set(err, DSC_NOMEM, "out of memory for budget.get");
    j->n = 0;
    dsc_status st = dsc__read_subject(p, true, c->scope, &j->s, err);
    if (st != DSC_OK) return st;
    bool later = false;
    dsc_done done = {dsc__job_done, dsc__job_slot(&j->job, 0)};
    st = c->srv->lops->preview(c->w, &j->s.subject, NULL, false, j->states, PREVIEW_MAX, &j->n,
                               &done, &later, err);
    if (!later) dsc__job_unslot(&j->job);
    return st;
}

dsc_status dsc__m_budget_list(dsc__call *c, const msgpack_object *p, msgpack_packer *pk,
                              dsc_error *err) {
    char selector[DSC_SELECTOR_MAX];
    dsc_status st = dsc_rpc_get_str(p, "selector", false, selector, sizeof selector, err);
    if (st != DSC_OK) return st;
    size_t total = 0, matched = 0;
    dsc_budget_info page[64];
    dsc_ledger_budget_list(c->srv->ledger, 0, page, 0, &total);
    /* Two passes over the pages: count, then pack (the map header needs the count). */
    for (int pass = 0; pass < 2; pass++) {
        if (pass == 1) {
            msgpack_pack_map(pk, 1);
            dsc__pack_key(pk, "budgets");
            msgpack_pack_array(pk, matched);
        }
        size_t seen = 0;
        for (size_t off = 0; off < total; off += 64) {
            size_t got = dsc_ledger_budget_list(c->srv->ledger, off, page, 64, NULL);
            for (size_t i = 0; i < got; i++) {
                if (selector[0] && strcmp(page[i].selector, selector) != 0) continue;
                if (!dsc__scope_meets_selector(c->scope, page[i].selector)) continue;
                if (pass == 0)
                    matched++;
                else if (seen++ < matched)
                    pack_budget_info(pk, &page[i]);
            }
            if (got < 64) break;
        }
        if (pass == 1)
            for (; seen < matched; seen++)
                msgpack_pack_nil(pk); /* budgets deleted meanwhile */
    }
    return DSC_OK;
}

static dsc_status read_budget_key(const msgpack_object *p, char *selector, dsc_metric *metric,
                                  char *window, dsc_error *err) {
    char metric_name[32];
    dsc_status st;
    if ((st = dsc_rpc_get_str(p, "selector", true, selector, DSC_SELECTOR_MAX, err)) ||
        (st = dsc_rpc_get_str(p, "metric", true, metric_name, sizeof metric_name, err)) ||
        (st = dsc_rpc_get_str(p, "window", true, window, DSC_WINDOW_MAX, err)))
        return st;
    if (dsc_metric_parse(metric_name, metric) != DSC_OK)
        return dsc_error_set(err, DSC_UNKNOWN_METRIC,
                             "field 'metric': unknown metric '%s' (energy_wh, gco2e, water_ml, "
                             "pe_mj, cost, tokens, requests)",
                             metric_name);
    return DSC_OK;
}

/* budget.set and budget.delete wait for their commit (and a new budget's replay of
 * its window) without holding up the worker's other connections. */
typedef struct budget_job {
    dsc__job job;
    char by[DSC__KEY_ID_MAX]; /* the key that made the change, for the journal */
    char selector[DSC_SELECTOR_MAX], window[DSC_WINDOW_MAX];
    dsc_metric metric;
    double limit;
    bool created;
} budget_job;

/* The admin journal row of a committed budget change (a failure is logged: the change
 * itself is in effect and its reply must not lie about it); with a Redis store, the
 * journal every replica shares. */
static void journal_budget(dsc__worker *w, const budget_job *j, const char *action) {
    dsc_server *srv = w->srv;
    char detail[96];
    dsc_error err;
    snprintf(detail, sizeof detail, "metric=%s window=%s limit=%g", dsc_metric_name(j->metric),
             j->window, j->limit);
    if (srv->redis)
        dsc__ledger_redis_admin(w, j->by, action, j->selector, detail);
    else if (dsc__keys_journal(srv->keys, j->by, action, j->selector, detail, &err) != DSC_OK)
        dsc_log_write(&srv->log, DSC_LOG_ERROR, "journal_failed", "action=%s message=\"%s\"",
                      action, err.message);
}

static dsc_status finish_budget_set(dsc__job *job, dsc_status st, const dsc_error *st_err,
                                    msgpack_packer *pk, dsc_error *err) {
    budget_job *j = (budget_job *)job;
    dsc_server *srv = job->w->srv;
    dsc_budget_info info;
    if (st != DSC_OK) {
        *err = *st_err;
        return st;
    }
    if (dsc_ledger_budget_get(srv->ledger, j->selector, j->metric, j->window, &info, NULL) !=
        DSC_OK)
        return dsc_error_set(err, DSC_UNKNOWN_BUDGET,
                             "budget '%s' on %s over '%s' was committed but is not in effect "
                             "(deleted by another call since, or out of memory)",
                             j->selector, dsc_metric_name(j->metric), j->window);
    dsc_log_write(&srv->log, DSC_LOG_INFO, "budget_set",
                  "selector=%s metric=%s window=%s limit=%g by=%s", info.selector,
                  dsc_metric_name(j->metric), info.window, j->limit, j->by);
    journal_budget(job->w, j, "budget.set");
    msgpack_pack_map(pk, 2);
    dsc__pack_key(pk, "budget");
    pack_budget_info(pk, &info);
    dsc__pack_key(pk, "created");
    if (j->created)
        msgpack_pack_true(pk);
    else
        msgpack_pack_false(pk);
    return DSC_OK;
}

static dsc_status finish_budget_delete(dsc__job *job, dsc_status st, const dsc_error *st_err,
                                       msgpack_packer *pk, dsc_error *err) {
    budget_job *j = (budget_job *)job;
    if (st != DSC_OK) {
        *err = *st_err;
        return st;
    }
    dsc_log_write(&job->w->srv->log, DSC_LOG_INFO, "budget_delete",
                  "selector=%s metric=%s window=%s by=%s", j->selector, dsc_metric_name(j->metric),
                  j->window, j->by);
    journal_budget(job->w, j, "budget.delete");
    msgpack_pack_map(pk, 1);
    dsc__pack_key(pk, "deleted");
    msgpack_pack_true(pk);
    return DSC_OK;
}

static budget_job *budget_job_new(dsc__call *c, const msgpack_object *p, dsc__job_finish_fn finish,
                                  dsc_status *st, dsc_error *err) {
    budget_job *j = (budget_job *)dsc__job_defer(c, sizeof *j, finish);
    if (!j) {
        *st = dsc_error_set(err, DSC_NOMEM, "out of memory for a budget change");
        return NULL;
    }
    snprintf(j->by, sizeof j->by, "%s", c->key_id[0] ? c->key_id : "anonymous");
    *st = read_budget_key(p, j->selector, &j->metric, j->window, err);
    if (*st == DSC_OK && !dsc__scope_covers_selector(c->scope, j->selector)) {
        char scope[DSC__SCOPE_TEXT_MAX];
        dsc__scope_format(c->scope, scope, sizeof scope);
        *st = dsc_error_set(err, DSC_FORBIDDEN,
                            "field 'selector': '%s' reaches outside this key's scope '%s'",
                            j->selector, scope);
    }
    return j;
}

dsc_status dsc__m_budget_set(dsc__call *c, const msgpack_object *p, msgpack_packer *pk,
                             dsc_error *err) {
    (void)pk;
    dsc_status st;
    budget_job *j = budget_job_new(c, p, finish_budget_set, &st, err);
    if (!j) return st;
    if (st == DSC_OK) st = dsc_rpc_get_num(p, "limit", true, 0, DSC_AMOUNT_API_MAX, &j->limit, err);
    if (st != DSC_OK) return st;
    j->created = dsc_ledger_budget_get(c->srv->ledger, j->selector, j->metric, j->window, NULL,
                                       NULL) != DSC_OK;
    dsc_budget_req req = {j->selector, j->metric, j->window, j->limit, false};
    dsc_done done = {dsc__job_done, dsc__job_slot(&j->job, 0)};
    st = c->srv->lops->budget(c->w, &req, &done, err);
    if (st != DSC_OK) dsc__job_unslot(&j->job);
    return st;
}

dsc_status dsc__m_budget_delete(dsc__call *c, const msgpack_object *p, msgpack_packer *pk,
                                dsc_error *err) {
    (void)pk;
    dsc_status st;
    budget_job *j = budget_job_new(c, p, finish_budget_delete, &st, err);
    if (!j || st != DSC_OK) return st;
    dsc_budget_req req = {j->selector, j->metric, j->window, 0, true};
    dsc_done done = {dsc__job_done, dsc__job_slot(&j->job, 0)};
    st = c->srv->lops->budget(c->w, &req, &done, err);
    if (st != DSC_OK) dsc__job_unslot(&j->job);
    return st;
}
