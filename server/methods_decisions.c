/*
 * methods_decisions.c - decisions.list: the decision journal, read back by scope.
 *
 * Reads the `decisions` view of the store file on a connection of its own per call
 * (WAL: a reader never blocks the ledger's writer; the call is a reader's or a
 * manager's, not on the hot path), filtered in SQL by the caller's scope and the
 * request's subject, time range and outcome, paged by the journal's seq: `next` is
 * the `after` of the following page. A memory-only server journals nothing, so it
 * answers store_unavailable.
 *
 * With a Redis store the journal is the stream <tag>journal that every replica
 * appends to (capped near a million entries): one query answers for all replicas.
 * It is read on the worker's Redis connection, a chunk of entries per call, and
 * filtered here the same way; `seq` and `next` are the stream's entry ids as one
 * integer (milliseconds << 20 | sequence).
 */
#include "methods.h"
#include "redis_ledger.h"

#include <jansson.h>
#include <sqlite3.h>
#include <stdio.h>
#include <string.h>

#define LIMIT_DEFAULT 100
#define LIMIT_MAX 1000

// clang-format off
static const char list_sql[] =
    "SELECT seq, decision_id, at_us, key_id, org, team, user, key, purpose, purpose_class,"
    " provider, model, input_tokens, output_tokens, est_energy_wh, est_gco2e, est_water_ml,"
    " outcome, policy, policy_version, reason, verdicts, tags, reservation_id, zone"
    " FROM decisions"
    " WHERE seq > max(?1, (SELECT coalesce(max(seq), 0) FROM checkpoints WHERE max_at_us < ?2))"
    " AND at_us >= ?2 AND at_us < ?3 AND (?4 IS NULL OR outcome = ?4)"
    " AND (?5 IS NULL OR org = ?5) AND (?6 IS NULL OR team = ?6)"
    " AND (?7 IS NULL OR user = ?7) AND (?8 IS NULL OR key = ?8)"
    " ORDER BY seq LIMIT ?9";
// clang-format on

typedef struct list_args {
    dsc__subject_buf subject;
    char outcome[16];
    int64_t since, until, after, limit;
} list_args;

static dsc_status read_list_args(dsc__call *c, const msgpack_object *p, list_args *a,
                                 dsc_error *err) {
    double since = 0, until = 0;
    dsc_status st;
    a->after = 0;
    a->limit = LIMIT_DEFAULT;
    a->outcome[0] = '\0';
    if ((st = dsc__read_subject(p, false, c->scope, &a->subject, err)) ||
        (st = dsc_rpc_get_num(p, "since", false, 0, 1e11, &since, err)) ||
        (st = dsc_rpc_get_num(p, "until", false, 0, 1e11, &until, err)) ||
        (st = dsc_rpc_get_str(p, "outcome", false, a->outcome, sizeof a->outcome, err)) ||
        (st = dsc_rpc_get_int(p, "after", false, 0, INT64_MAX, &a->after, err)) ||
        (st = dsc_rpc_get_int(p, "limit", false, 1, LIMIT_MAX, &a->limit, err)))
        return st;
    if (a->outcome[0] && strcmp(a->outcome, "allow") && strcmp(a->outcome, "throttle") &&
        strcmp(a->outcome, "refuse"))
        return dsc_error_set(err, DSC_BAD_REQUEST,
                             "field 'outcome': '%s' is not allow, throttle or refuse", a->outcome);
    a->since = (int64_t)(since * 1e6);
    a->until = until > 0 ? (int64_t)(until * 1e6) : INT64_MAX;
    return DSC_OK;
}

static void bind_opt(sqlite3_stmt *st, int i, const char *v) {
    if (v && *v)
        sqlite3_bind_text(st, i, v, -1, SQLITE_TRANSIENT);
    else
        sqlite3_bind_null(st, i);
}

static const char *col(sqlite3_stmt *st, int i) {
    const unsigned char *t = sqlite3_column_text(st, i);
    return t ? (const char *)t : "";
}

/* A JSON value of the journal (verdicts, tags) as MessagePack. */
static void pack_json(msgpack_packer *pk, const json_t *v) {
    size_t i;
    const char *k;
    json_t *x;
    switch (json_typeof(v)) {
    case JSON_OBJECT:
        msgpack_pack_map(pk, json_object_size(v));
        json_object_foreach((json_t *)v, k, x) {
            dsc_rpc_pack_cstr(pk, k);
            pack_json(pk, x);
        }
        return;
    case JSON_ARRAY:
        msgpack_pack_array(pk, json_array_size(v));
        json_array_foreach(v, i, x) pack_json(pk, x);
        return;
    case JSON_STRING:
        msgpack_pack_str_with_body(pk, json_string_value(v), json_string_length(v));
        return;
    case JSON_INTEGER:
        msgpack_pack_int64(pk, json_integer_value(v));
        return;
    case JSON_REAL:
        msgpack_pack_double(pk, json_real_value(v));
        return;
    case JSON_TRUE:
        msgpack_pack_true(pk);
        return;
    case JSON_FALSE:
        msgpack_pack_false(pk);
        return;
    default:
        msgpack_pack_nil(pk);
    }
}

/* A stored JSON column, or empty (an array or a map) when it holds none. */
static void pack_json_text(msgpack_packer *pk, const char *text, bool array) {
    json_t *v = text[0] ? json_loads(text, 0, NULL) : NULL;
    if (v)
        pack_json(pk, v);
    else if (array)
        msgpack_pack_array(pk, 0);
    else
        msgpack_pack_map(pk, 0);
    json_decref(v);
}

static void pack_str_field(msgpack_packer *pk, const char *key, const char *v) {
    dsc__pack_key(pk, key);
    dsc_rpc_pack_cstr(pk, v);
}

static void pack_subject(msgpack_packer *pk, sqlite3_stmt *st, int first) {
    static const char *const names[] = {"org", "team", "user", "key"};
    int n = 0;
    for (int i = 0; i < 4; i++)
        n += col(st, first + i)[0] != '\0';
    msgpack_pack_map(pk, (size_t)n);
    for (int i = 0; i < 4; i++)
        if (col(st, first + i)[0]) pack_str_field(pk, names[i], col(st, first + i));
}

static void pack_row(msgpack_packer *pk, sqlite3_stmt *st) {
    bool resv = col(st, 23)[0] != '\0';
    msgpack_pack_map(pk, 19 + resv);
    pack_str_field(pk, "decision_id", col(st, 1));
    dsc__pack_key(pk, "at");
    msgpack_pack_double(pk, (double)sqlite3_column_int64(st, 2) / 1e6);
    pack_str_field(pk, "key_id", col(st, 3));
    dsc__pack_key(pk, "subject");
    pack_subject(pk, st, 4);
    pack_str_field(pk, "purpose", col(st, 8));
    pack_str_field(pk, "purpose_class", col(st, 9));
    pack_str_field(pk, "provider", col(st, 10));
    pack_str_field(pk, "model", col(st, 11));
    dsc__pack_key(pk, "input_tokens");
    msgpack_pack_int64(pk, sqlite3_column_int64(st, 12));
    dsc__pack_key(pk, "output_tokens");
    msgpack_pack_int64(pk, sqlite3_column_int64(st, 13));
    dsc__pack_key(pk, "estimate");
    msgpack_pack_map(pk, 3);
    static const char *const est[] = {"energy_wh", "gco2e", "water_ml"};
    for (int i = 0; i < 3; i++) {
        dsc__pack_key(pk, est[i]);
        msgpack_pack_double(pk, dsc_amount_to_api(sqlite3_column_int64(st, 14 + i)));
    }
    pack_str_field(pk, "outcome", col(st, 17));
    pack_str_field(pk, "policy", col(st, 18));
    pack_str_field(pk, "policy_version", col(st, 19));
    pack_str_field(pk, "reason", col(st, 20));
    dsc__pack_key(pk, "verdicts");
    pack_json_text(pk, col(st, 21), true);
    dsc__pack_key(pk, "tags");
    pack_json_text(pk, col(st, 22), false);
    pack_str_field(pk, "zone", col(st, 24));
    dsc__pack_key(pk, "seq");
    msgpack_pack_int64(pk, sqlite3_column_int64(st, 0));
    if (resv) pack_str_field(pk, "reservation", col(st, 23));
}

static void bind_args(sqlite3_stmt *st, const list_args *a) {
    sqlite3_bind_int64(st, 1, a->after);
    sqlite3_bind_int64(st, 2, a->since);
    sqlite3_bind_int64(st, 3, a->until);
    bind_opt(st, 4, a->outcome);
    bind_opt(st, 5, a->subject.org);
    bind_opt(st, 6, a->subject.team);
    bind_opt(st, 7, a->subject.user);
    bind_opt(st, 8, a->subject.key);
    sqlite3_bind_int64(st, 9, a->limit + 1); /* one more: is there a next page? */
}

/* Pack the page's rows; *more when a row beyond the limit exists, *last its seq. */
static dsc_status pack_rows(sqlite3_stmt *st, const list_args *a, msgpack_packer *pk, bool *more,
                            int64_t *last, dsc_error *err) {
    int64_t n = 0;
    int rc;
    msgpack_sbuffer rows;
    msgpack_sbuffer_init(&rows);
    msgpack_packer rp;
    msgpack_packer_init(&rp, &rows, msgpack_sbuffer_write);
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        if (n == a->limit) {
            *more = true;
            break;
        }
        pack_row(&rp, st);
        *last = sqlite3_column_int64(st, 0);
        n++;
    }
    dsc_status res = DSC_OK;
    if (rc != SQLITE_ROW && rc != SQLITE_DONE)
        res = dsc_error_set(err, DSC_STORE_UNAVAILABLE, "decision journal: %s", sqlite3_errstr(rc));
    if (res == DSC_OK) {
        msgpack_pack_array(pk, (size_t)n);
        pk->callback(pk->data, rows.data, rows.size); /* through the reply buffer */
    }
    msgpack_sbuffer_destroy(&rows);
    return res;
}

static dsc_status query(const char *store, const list_args *a, msgpack_packer *pk, dsc_error *err) {
    sqlite3 *db = NULL;
    sqlite3_stmt *st = NULL;
    bool more = false;
    int64_t last = 0;
    dsc_status res = DSC_STORE_UNAVAILABLE;
    if (sqlite3_open_v2(store, &db, SQLITE_OPEN_READONLY, NULL) != SQLITE_OK ||
        sqlite3_busy_timeout(db, 2000) != SQLITE_OK ||
        sqlite3_prepare_v2(db, list_sql, -1, &st, NULL) != SQLITE_OK) {
        dsc_error_set(err, res, "decision journal: %s", db ? sqlite3_errmsg(db) : "cannot open");
        goto out;
    }
    bind_args(st, a);
    msgpack_pack_map(pk, 2);
    dsc__pack_key(pk, "decisions");
    if ((res = pack_rows(st, a, pk, &more, &last, err)) != DSC_OK) goto out;
    dsc__pack_key(pk, "next");
    if (more)
        msgpack_pack_int64(pk, last);
    else
        msgpack_pack_nil(pk);
out:
    sqlite3_finalize(st);
    sqlite3_close(db);
    return res;
}

/* ------------------------------------------------------------ Redis stream -- */

#define CHUNK 1000   /* stream entries read per call */
#define CHUNKS_MAX 8 /* per page: then `next` says where to go on */

typedef struct journal_job {
    dsc__job job;
    list_args a;
    msgpack_sbuffer rows;
    msgpack_packer pk;
    int64_t n, next;
    int reads;
} journal_job;

static const char *jstr(json_t *o, const char *k) {
    const char *v = json_string_value(json_object_get(o, k));
    return v ? v : "";
}

static bool row_matches(const list_args *a, json_t *o, const char *outcome) {
    static const char *const parts[] = {"org", "team", "user", "key"};
    const dsc__subject_buf *s = &a->subject;
    const char *want[] = {s->org, s->team, s->user, s->key};
    int64_t at = json_integer_value(json_object_get(o, "at_us"));
    for (int i = 0; i < 4; i++)
        if (want[i][0] && strcmp(want[i], jstr(o, parts[i])) != 0) return false;
    return at >= a->since && at < a->until && (!a->outcome[0] || strcmp(a->outcome, outcome) == 0);
}

/* One journaled decision as decisions.list answers it. A 'refuse' entry is a hold
 * the counters refused after the policies allowed: the ledger's refusal. A 'reserve'
 * names its hold, and so does the 'decision' of a repeated request_id (the first). */
static void pack_detail(msgpack_packer *pk, json_t *o, const char *event, int64_t seq) {
    bool refused = strcmp(event, "refuse") == 0;
    bool resv = !refused && jstr(o, "reservation_id")[0] != '\0';
    static const char *const parts[] = {"org", "team", "user", "key"};
    msgpack_pack_map(pk, 19 + resv);
    pack_str_field(pk, "decision_id", jstr(o, "decision_id"));
    dsc__pack_key(pk, "at");
    msgpack_pack_double(pk, (double)json_integer_value(json_object_get(o, "at_us")) / 1e6);
    pack_str_field(pk, "key_id", jstr(o, "key_id"));
    dsc__pack_key(pk, "subject");
    int n = 0;
    for (int i = 0; i < 4; i++)
        n += jstr(o, parts[i])[0] != '\0';
    msgpack_pack_map(pk, (size_t)n);
    for (int i = 0; i < 4; i++)
        if (jstr(o, parts[i])[0]) pack_str_field(pk, parts[i], jstr(o, parts[i]));
    static const char *const strs[] = {"purpose", "purpose_class", "provider", "model"};
    for (int i = 0; i < 4; i++)
        pack_str_field(pk, strs[i], jstr(o, strs[i]));
    dsc__pack_key(pk, "input_tokens");
    msgpack_pack_int64(pk, json_integer_value(json_object_get(o, "input_tokens")));
    dsc__pack_key(pk, "output_tokens");
    msgpack_pack_int64(pk, json_integer_value(json_object_get(o, "output_tokens")));
    dsc__pack_key(pk, "estimate");
    msgpack_pack_map(pk, 3);
    static const char *const est[] = {"energy_wh", "gco2e", "water_ml"};
    static const char *const est_keys[] = {"est_energy_wh", "est_gco2e", "est_water_ml"};
    for (int i = 0; i < 3; i++) {
        dsc__pack_key(pk, est[i]);
        msgpack_pack_double(pk,
                            dsc_amount_to_api(json_integer_value(json_object_get(o, est_keys[i]))));
    }
    pack_str_field(pk, "outcome", refused ? "refuse" : jstr(o, "outcome"));
    pack_str_field(pk, "policy", refused ? "ledger" : jstr(o, "policy"));
    pack_str_field(pk, "policy_version", jstr(o, "policy_version"));
    pack_str_field(pk, "reason",
                   refused ? "a budget would be exceeded (the counters refused the hold)"
                           : jstr(o, "reason"));
    dsc__pack_key(pk, "verdicts");
    pack_json_text(pk, jstr(o, "verdicts"), true);
    dsc__pack_key(pk, "tags");
    pack_json_text(pk, jstr(o, "tags"), false);
    pack_str_field(pk, "zone", jstr(o, "zone"));
    dsc__pack_key(pk, "seq");
    msgpack_pack_int64(pk, seq);
    if (resv) pack_str_field(pk, "reservation", jstr(o, "reservation_id"));
}

static dsc_status finish_journal(dsc__job *job, dsc_status st, const dsc_error *st_err,
                                 msgpack_packer *pk, dsc_error *err) {
    journal_job *j = (journal_job *)job;
    if (st == DSC_OK)
        dsc__pack_page(pk, "decisions", j->n, &j->rows, j->next);
    else
        *err = *st_err;
    msgpack_sbuffer_destroy(&j->rows);
    return st;
}

static dsc_status read_chunk(journal_job *j, int64_t after, dsc_error *err);

static void on_journal(void *ud, dsc_status st, const dsc__redis_answer *ans,
                       const dsc_error *st_err) {
    journal_job *j = ud;
    dsc_error err = st == DSC_OK ? (dsc_error){0} : *st_err;
    for (size_t i = 0; st == DSC_OK && i < ans->n && j->n < j->a.limit; i++) {
        const char *event = ans->defs[3 * i]->str, *id = ans->defs[3 * i + 1]->str;
        json_t *o = dsc__redis_journal_load(ans->defs[3 * i + 2]->str, ans->defs[3 * i + 2]->len);
        const char *outcome = strcmp(event, "refuse") == 0 ? "refuse" : jstr(o, "outcome");
        if (o && row_matches(&j->a, o, outcome)) {
            pack_detail(&j->pk, o, event, dsc__redis_seq_of_id(id));
            j->n++;
            if (j->n == j->a.limit) j->next = dsc__redis_seq_of_id(id);
        }
        json_decref(o);
    }
    bool go_on = st == DSC_OK && j->n < j->a.limit && ans->last[0];
    if (go_on && ++j->reads < CHUNKS_MAX &&
        read_chunk(j, dsc__redis_seq_of_id(ans->last), &err) == DSC_OK)
        return;
    if (go_on) j->next = dsc__redis_seq_of_id(ans->last); /* scanned enough for one page */
    dsc__job_done(&j->job.slots[0], st, &err);
}

static dsc_status read_chunk(journal_job *j, int64_t after, dsc_error *err) {
    char start[48];
    dsc__redis_id_of_seq(after, start, sizeof start);
    if (!j->job.w->redis) return dsc_error_set(err, DSC_STORE_UNAVAILABLE, "redis: no connection");
    return dsc__redis_journal(j->job.w->redis, start, CHUNK, on_journal, j, err);
}

static dsc_status query_stream(dsc__call *c, const list_args *a, dsc_error *err) {
    journal_job *j = (journal_job *)dsc__job_defer(c, sizeof *j, finish_journal);
    if (!j) return dsc_error_set(err, DSC_NOMEM, "out of memory for decisions.list");
    j->a = *a;
    j->n = j->next = 0;
    j->reads = 0;
    msgpack_sbuffer_init(&j->rows);
    msgpack_packer_init(&j->pk, &j->rows, msgpack_sbuffer_write);
    int64_t after = a->after;
    int64_t since = a->since / 1000 > 0 ? (a->since / 1000 - 1) << 20 | 0xfffff : 0;
    if (since > after) after = since;
    dsc__job_slot(&j->job, 0);
    dsc_status st = read_chunk(j, after, err);
    if (st != DSC_OK) dsc__job_unslot(&j->job);
    return st;
}

/* A check's hold is acknowledged before its commit: the journal is read once what was
 * queued before this call is committed (dsc_ledger_sync), so a caller lists its own
 * decisions. */
typedef struct synced_job {
    dsc__job job; /* first */
    list_args a;
} synced_job;

static dsc_status finish_synced(dsc__job *job, dsc_status st, const dsc_error *st_err,
                                msgpack_packer *pk, dsc_error *err) {
    if (st != DSC_OK) {
        *err = *st_err;
        return st;
    }
    return query(job->w->srv->cfg.store, &((synced_job *)job)->a, pk, err);
}

static dsc_status query_synced(dsc__call *c, const list_args *a, dsc_error *err) {
    synced_job *j = (synced_job *)dsc__job_defer(c, sizeof *j, finish_synced);
    if (!j) return dsc_error_set(err, DSC_NOMEM, "out of memory for decisions.list");
    j->a = *a;
    dsc_done done = {dsc__job_done, dsc__job_slot(&j->job, 0)};
    dsc_status st = dsc_ledger_sync(c->srv->ledger, &done, err);
    if (st != DSC_OK) dsc__job_unslot(&j->job);
    return st;
}

dsc_status dsc__m_decisions_list(dsc__call *c, const msgpack_object *p, msgpack_packer *pk,
                                 dsc_error *err) {
    list_args a;
    dsc_status st = read_list_args(c, p, &a, err);
    if (st != DSC_OK) return st;
    if (!c->srv->cfg.store[0])
        return dsc_error_set(err, DSC_STORE_UNAVAILABLE,
                             "this server has no store: decisions are not journaled");
    (void)pk;
    if (c->srv->redis) return query_stream(c, &a, err);
    return query_synced(c, &a, err);
}
