/*
 * store_sqlite_schema.c - the SQLite store's tables, the views admins query, and the
 * migration of files written by older versions.
 *
 * The ledger's changes are one append-only table, `events` (one row per hold, settle,
 * cancel, expiry or decision, keyed by an INTEGER PRIMARY KEY in commit order; a
 * settle, cancel or expiry names the seq of its hold when the writer knew it; a hold
 * finished in the batch that writes it is one row with its finish, types 7 and 8), and
 * `budget_log` (one row per budget set or delete). Nothing on the hot path is ever
 * updated and `events` has no secondary index: a row is one append to one B-tree.
 * Repeated strings live once in `names` (models, purposes, outcomes, reasons, key
 * ids, ...) and subject tuples once in `subjects`; an event holds their ids.
 * `checkpoints` is written by the writer every few thousand events or minute, in the
 * transaction of a batch: a sparse index from seq to time (the running maximum of
 * at_us, so a read can start at the right row without an index on at_us), the oldest
 * hold still open then (a restart looks for open holds from there), and the point up
 * to which `rollups` holds every charge: one row per subject and hour with the sums
 * of its charges, so a new budget, a restart and a report read hours, not charges,
 * and only the events after the newest checkpoint one by one. The views `charges`, `decisions`,
 * `reservations`, `budgets` and `usage_by_team_month` give the rows their old shape back
 * (docs/operations.md); they are recreated on every open.
 *
 * A file of schema 2 to 4 gets schema 5's columns (ALTER TABLE ADD COLUMN: its rows
 * stay as they are). A file of schema 1 (the tables budgets, reservations, charges and decisions,
 * at any of their column sets since ed891d2) is migrated on open, in one transaction: its rows
 * become events in time order, its budgets budget_log rows, and its tables are dropped; keys and
 * admin_journal (server/keys.c) are not touched.
 */
#include "store_sqlite_internal.h"

#include <stdbool.h>
#include <stdio.h>
#include <string.h>

// clang-format off
#define AMOUNT_DEFS(p)                                                                             \
    p "energy_wh INTEGER, " p "gco2e INTEGER, " p "water_ml INTEGER, " p "pe_mj INTEGER, "         \
    p "cost INTEGER, " p "tokens INTEGER, " p "requests INTEGER"
#define EVENT_COLS                                                                                 \
    "at_us, type, rid, subject, state, kind, hold, energy_wh, gco2e, water_ml, pe_mj, cost, tokens," \
    " requests, owner, expires_us, request_id, provider, model, zone, purpose, decision_id,"       \
    " outcome, policy, policy_version, reason, purpose_class, verdicts, tags, warnings,"           \
    " input_tokens, output_tokens, est_energy_wh, est_gco2e, est_water_ml"

/* Schema 5's columns, last (ALTER TABLE adds them to an older file): a hold finished
 * in the batch that wrote it is one row, its finish's time as the delta from at_us
 * and what it held beside what it charged. Every row written since stores a header
 * byte for each of them, NULL or not (SQLite omits no trailing NULL). */
#define ADDED_COLS "finish_after_us INTEGER, " AMOUNT_DEFS("held_")

static const char tables_sql[] =
    "CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT);"
    "CREATE TABLE IF NOT EXISTS names(id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE);"
    "CREATE TABLE IF NOT EXISTS subjects(id INTEGER PRIMARY KEY, org TEXT NOT NULL,"
    " team TEXT NOT NULL, user TEXT NOT NULL, key TEXT NOT NULL, UNIQUE(org, team, user, key));"
    "CREATE TABLE IF NOT EXISTS event_types(id INTEGER PRIMARY KEY, name TEXT NOT NULL);"
    "INSERT OR IGNORE INTO event_types VALUES(1, 'hold'), (2, 'hold+decision'), (3, 'settle'),"
    " (4, 'cancel'), (5, 'expire'), (6, 'decision'), (7, 'hold+decision+finish'),"
    " (8, 'hold+finish');"
    /* Columns a settle row needs come first (every row stores a header byte for each
     * column, NULL or not). */
    "CREATE TABLE IF NOT EXISTS events(seq INTEGER PRIMARY KEY, at_us INTEGER NOT NULL,"
    " type INTEGER NOT NULL, rid, subject INTEGER, state INTEGER, kind INTEGER, hold INTEGER, "
    AMOUNT_DEFS("") ", owner INTEGER, expires_us INTEGER, request_id TEXT, provider INTEGER,"
    " model INTEGER, zone INTEGER, purpose INTEGER, decision_id TEXT, outcome INTEGER,"
    " policy INTEGER, policy_version INTEGER, reason INTEGER, purpose_class INTEGER,"
    " verdicts INTEGER, tags INTEGER, warnings INTEGER, input_tokens INTEGER,"
    " output_tokens INTEGER, est_energy_wh INTEGER, est_gco2e INTEGER, est_water_ml INTEGER,"
    " " ADDED_COLS ");"
    "CREATE TABLE IF NOT EXISTS budget_log(seq INTEGER PRIMARY KEY, at_us INTEGER NOT NULL,"
    " deleted INTEGER NOT NULL, budget_id INTEGER NOT NULL, selector TEXT NOT NULL,"
    " metric TEXT NOT NULL, window TEXT NOT NULL, limit_micro INTEGER NOT NULL);"
    "CREATE INDEX IF NOT EXISTS budget_log_ident ON budget_log(selector, metric, window, seq);"
    "CREATE TABLE IF NOT EXISTS checkpoints(seq INTEGER PRIMARY KEY, at_us INTEGER NOT NULL,"
    " max_at_us INTEGER NOT NULL, held_from INTEGER NOT NULL, max_rid BLOB NOT NULL DEFAULT x'');"
    "CREATE INDEX IF NOT EXISTS checkpoints_rid ON checkpoints(max_rid, seq);"
    /* the ids of unreserved settles: a repeat is refused even once memory forgot it */
    "CREATE TABLE IF NOT EXISTS unreserved(rid PRIMARY KEY) WITHOUT ROWID;"
    "CREATE TABLE IF NOT EXISTS rollups(hour_us INTEGER NOT NULL, subject INTEGER NOT NULL, "
    AMOUNT_DEFS("") ", PRIMARY KEY(hour_us, subject)) WITHOUT ROWID;";

#define RID_TEXT(x) "CASE typeof(" x ") WHEN 'blob' THEN 'r' || lower(hex(" x ")) ELSE " x " END"
#define RID(t) RID_TEXT(t ".rid")
#define NAME(alias, t, col) " LEFT JOIN names " alias " ON " alias ".id = " t "." col
#define SUBJECT_OF(t) " LEFT JOIN subjects s ON s.id = " t ".subject"
#define SUBJECT_COLS                                                                               \
    "nullif(s.org, '') AS org, nullif(s.team, '') AS team, nullif(s.user, '') AS user,"            \
    " nullif(s.key, '') AS key"
#define AMOUNTS_OF(t, p)                                                                           \
    t ".energy_wh AS " p "energy_wh, " t ".gco2e AS " p "gco2e, " t ".water_ml AS " p "water_ml, " \
    t ".pe_mj AS " p "pe_mj, " t ".cost AS " p "cost, " t ".tokens AS " p "tokens, "               \
    t ".requests AS " p "requests"
#define SUMS_OF(p)                                                                                 \
    "sum(energy_wh) AS " p "energy_wh, sum(gco2e) AS " p "gco2e, sum(water_ml) AS " p "water_ml,"  \
    " sum(pe_mj) AS " p "pe_mj, sum(cost) AS " p "cost, sum(tokens) AS " p "tokens,"               \
    " sum(requests) AS " p "requests"
#define CHARGED_OF(t)                                                                              \
    "ifnull(" t ".energy_wh, 0) AS charged_energy_wh, ifnull(" t ".gco2e, 0) AS charged_gco2e,"    \
    " ifnull(" t ".water_ml, 0) AS charged_water_ml, ifnull(" t ".pe_mj, 0) AS charged_pe_mj,"     \
    " ifnull(" t ".cost, 0) AS charged_cost, ifnull(" t ".tokens, 0) AS charged_tokens,"           \
    " ifnull(" t ".requests, 0) AS charged_requests"

#define FIN_AT(t) DSC__SQ_FIN_AT(t)
/* what a hold held: a row finished with its hold keeps it in held_*, beside the charge */
#define HELD_OF(t)                                                                                 \
    "ifnull(" t ".held_energy_wh, " t ".energy_wh) AS held_energy_wh, ifnull(" t ".held_gco2e, "    \
    t ".gco2e) AS held_gco2e, ifnull(" t ".held_water_ml, " t ".water_ml) AS held_water_ml,"       \
    " ifnull(" t ".held_pe_mj, " t ".pe_mj) AS held_pe_mj, ifnull(" t ".held_cost, " t ".cost)"    \
    " AS held_cost, ifnull(" t ".held_tokens, " t ".tokens) AS held_tokens, ifnull(" t            \
    ".held_requests, " t ".requests) AS held_requests"

/* a decision's estimate: NULL when it is what the row's hold holds (held_* in a row
 * finished with its hold, else the row's amounts) */
#define EST_OF(t, m) "coalesce(" t ".est_" m ", " t ".held_" m ", " t "." m ") AS est_" m

static const char views_sql[] =
    "DROP VIEW IF EXISTS charges; DROP VIEW IF EXISTS decisions;"
    "DROP VIEW IF EXISTS reservations; DROP VIEW IF EXISTS budgets;"
    "DROP VIEW IF EXISTS usage_by_team_month;"
    "CREATE VIEW charges AS SELECT e.seq AS seq, " FIN_AT("e") " AS at_us, k.name AS kind, "
    RID_TEXT(DSC__SQ_RID_OF("e", "h")) " AS reservation_id, " SUBJECT_COLS ", " AMOUNTS_OF("e", "")
    " FROM events e JOIN names k ON k.id = e.kind LEFT JOIN events h ON h.seq = e.hold"
    SUBJECT_OF("e") " WHERE e.type IN (" DSC__SQ_CHARGE_TYPES ") AND e.kind IS NOT NULL;"
    "CREATE VIEW decisions AS SELECT e.seq AS seq, e.decision_id AS decision_id,"
    " e.request_id AS request_id, e.at_us AS at_us, " SUBJECT_COLS ", pu.name AS purpose,"
    " pr.name AS provider, mo.name AS model, e.input_tokens AS input_tokens,"
    " e.output_tokens AS output_tokens, " EST_OF("e", "energy_wh") ", " EST_OF("e", "gco2e") ","
    " " EST_OF("e", "water_ml") ", oc.name AS outcome,"
    " po.name AS policy, pv.name AS policy_version, re.name AS reason, "
    RID("e") " AS reservation_id, ow.name AS key_id, zo.name AS zone,"
    " pc.name AS purpose_class, ve.name AS verdicts, ta.name AS tags, wa.name AS warnings"
    " FROM events e" SUBJECT_OF("e") NAME("pu", "e", "purpose") NAME("pr", "e", "provider")
    NAME("mo", "e", "model") NAME("oc", "e", "outcome") NAME("po", "e", "policy")
    NAME("pv", "e", "policy_version") NAME("re", "e", "reason") NAME("ow", "e", "owner")
    NAME("zo", "e", "zone") NAME("pc", "e", "purpose_class") NAME("ve", "e", "verdicts")
    NAME("ta", "e", "tags") NAME("wa", "e", "warnings")
    " WHERE e.type IN (" DSC__SQ_DECISION_TYPES ");"
    /* A reservation's state is that of its newest settle, cancel or expiry event. */
    "CREATE VIEW reservations AS WITH fe AS (SELECT " DSC__SQ_RID_OF("e", "h") " AS rid,"
    " e.seq AS seq, " AMOUNTS_OF("e", "") " FROM events e LEFT JOIN events h ON h.seq = e.hold"
    " WHERE e.type IN (" DSC__SQ_FINISH_TYPES ")), fin AS (SELECT rid, max(seq) AS last, "
    SUMS_OF("") " FROM fe GROUP BY rid)"
    " SELECT " RID("r") " AS id, r.request_id AS request_id, " SUBJECT_COLS ","
    " r.at_us AS created_us, r.expires_us AS expires_us, ifnull(st.name, 'held') AS state,"
    " " FIN_AT("f") " AS finished_us, " HELD_OF("r") ", " CHARGED_OF("fin") ","
    " ow.name AS owner, pr.name AS provider, mo.name AS model, zo.name AS zone,"
    " pu.name AS purpose"
    " FROM events r LEFT JOIN fin ON fin.rid = r.rid LEFT JOIN events f ON f.seq = fin.last"
    NAME("st", "f", "state") SUBJECT_OF("r") NAME("ow", "r", "owner")
    NAME("pr", "r", "provider") NAME("mo", "r", "model") NAME("zo", "r", "zone")
    NAME("pu", "r", "purpose") " WHERE r.type IN (" DSC__SQ_HOLD_TYPES ")"
    " UNION ALL SELECT " RID("fin") ", NULL, " SUBJECT_COLS ", " FIN_AT("f") ", NULL, st.name, "
    FIN_AT("f") ", 0, 0, 0, 0, 0, 0, 0, " CHARGED_OF("fin") ", ow.name, pr.name, mo.name,"
    " zo.name, pu.name"
    " FROM fin JOIN events f ON f.seq = fin.last" NAME("st", "f", "state") SUBJECT_OF("f")
    NAME("ow", "f", "owner") NAME("pr", "f", "provider") NAME("mo", "f", "model")
    NAME("zo", "f", "zone") NAME("pu", "f", "purpose")
    " WHERE fin.rid NOT IN (SELECT rid FROM events WHERE type IN (" DSC__SQ_HOLD_TYPES "));"
    "CREATE VIEW budgets AS SELECT b.budget_id AS id, b.selector AS selector,"
    " b.metric AS metric, b.window AS window, b.limit_micro AS limit_micro,"
    " b.at_us AS updated_us FROM budget_log b WHERE b.deleted = 0 AND b.seq ="
    " (SELECT max(x.seq) FROM budget_log x WHERE x.selector = b.selector"
    " AND x.metric = b.metric AND x.window = b.window);"
    /* the hours rolled up, then the charges after the newest checkpoint */
    "CREATE VIEW usage_by_team_month AS SELECT " SUBJECT_COLS ","
    " strftime('%Y-%m', u.at_us / 1000000, 'unixepoch') AS month, " SUMS_OF("")
    " FROM (SELECT hour_us AS at_us, subject, " AMOUNTS_OF("r", "") " FROM rollups r"
    " UNION ALL SELECT " FIN_AT("e") ", e.subject, " AMOUNTS_OF("e", "") " FROM events e"
    " WHERE e.type IN (" DSC__SQ_CHARGE_TYPES ") AND e.kind IS NOT NULL"
    " AND e.seq > (SELECT coalesce(max(seq), 0) FROM checkpoints)) u"
    " LEFT JOIN subjects s ON s.id = u.subject GROUP BY s.org, s.team, month;";

/* Schema 3's settle, cancel and expiry rows carried their hold's id as well as its seq:
 * the id goes (schema 4), the views take it from the hold. */
#define SHRINK_SQL "UPDATE events SET rid = NULL WHERE type IN (3, 4, 5) AND hold IS NOT NULL;"

/* --- migrating schema 1 ------------------------------------------------------------- */

/* Columns the old tables gained over time: a file made before gets them first, so
 * that one set of statements migrates every old file. */
static const char *const old_added[] = {
    "old_reservations ADD COLUMN owner TEXT",    "old_decisions ADD COLUMN key_id TEXT",
    "old_reservations ADD COLUMN provider TEXT", "old_reservations ADD COLUMN model TEXT",
    "old_reservations ADD COLUMN zone TEXT",     "old_reservations ADD COLUMN purpose TEXT",
    "old_decisions ADD COLUMN zone TEXT",        "old_decisions ADD COLUMN purpose_class TEXT",
    "old_decisions ADD COLUMN verdicts TEXT",    "old_decisions ADD COLUMN tags TEXT",
    "old_decisions ADD COLUMN warnings TEXT",
};

#define N(x) "(SELECT id FROM names WHERE name = " x ")"
#define SUBJ(t)                                                                                    \
    "(SELECT id FROM subjects WHERE org = ifnull(" t ".org, '') AND team = ifnull(" t ".team, '')" \
    " AND user = ifnull(" t ".user, '') AND key = ifnull(" t ".key, ''))"
#define FIRST_DECISION(r) "(SELECT min(x.seq) FROM old_decisions x WHERE x.reservation_id = " r ".id)"
#define DECISION_OF(d)                                                                             \
    d ".decision_id, " N(d ".outcome") ", " N(d ".policy") ", " N(d ".policy_version") ", "        \
    N(d ".reason") ", " N(d ".purpose_class") ", " N(d ".verdicts") ", " N(d ".tags") ", "         \
    N(d ".warnings") ", " d ".input_tokens, " d ".output_tokens, " d ".est_energy_wh, "            \
    d ".est_gco2e, " d ".est_water_ml"
#define NO_DECISION "NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL"
#define WHAT_OF(r) N(r ".provider") ", " N(r ".model") ", " N(r ".zone") ", " N(r ".purpose")

/* Schema 1's tables: a file with only some of them gets the others first. */
#define OLD_METRICS(p)                                                                             \
    p "energy_wh INTEGER NOT NULL DEFAULT 0, " p "gco2e INTEGER NOT NULL DEFAULT 0, " p            \
    "water_ml INTEGER NOT NULL DEFAULT 0, " p "pe_mj INTEGER NOT NULL DEFAULT 0, " p               \
    "cost INTEGER NOT NULL DEFAULT 0, " p "tokens INTEGER NOT NULL DEFAULT 0, " p                  \
    "requests INTEGER NOT NULL DEFAULT 0"
static const char migrate_sql[] =
    "CREATE TABLE IF NOT EXISTS budgets(id INTEGER PRIMARY KEY, selector TEXT NOT NULL,"
    " metric TEXT NOT NULL, window TEXT NOT NULL, limit_micro INTEGER NOT NULL,"
    " updated_us INTEGER NOT NULL, UNIQUE(selector, metric, window));"
    "CREATE TABLE IF NOT EXISTS reservations(id TEXT PRIMARY KEY, request_id TEXT,"
    " org TEXT, team TEXT, user TEXT, key TEXT, created_us INTEGER, expires_us INTEGER,"
    " state TEXT NOT NULL, finished_us INTEGER, " OLD_METRICS("held_") ", "
    OLD_METRICS("charged_") ");"
    "CREATE TABLE IF NOT EXISTS charges(seq INTEGER PRIMARY KEY, at_us INTEGER NOT NULL,"
    " kind TEXT NOT NULL, reservation_id TEXT, org TEXT, team TEXT, user TEXT, key TEXT, "
    OLD_METRICS("") ");"
    "CREATE TABLE IF NOT EXISTS decisions(seq INTEGER PRIMARY KEY, decision_id TEXT,"
    " request_id TEXT, at_us INTEGER NOT NULL, org TEXT, team TEXT, user TEXT, key TEXT,"
    " purpose TEXT, provider TEXT, model TEXT, input_tokens INTEGER, output_tokens INTEGER,"
    " est_energy_wh INTEGER, est_gco2e INTEGER, est_water_ml INTEGER, outcome TEXT,"
    " policy TEXT, policy_version TEXT, reason TEXT, reservation_id TEXT);"
    "ALTER TABLE budgets RENAME TO old_budgets;"
    "ALTER TABLE reservations RENAME TO old_reservations;"
    "ALTER TABLE charges RENAME TO old_charges;"
    "ALTER TABLE decisions RENAME TO old_decisions;";

static const char copy_sql[] =
    "CREATE INDEX old_decisions_rid ON old_decisions(reservation_id);"
    "CREATE INDEX old_charges_rid ON old_charges(reservation_id);"
    "INSERT OR IGNORE INTO names(name) SELECT v FROM (SELECT kind AS v FROM old_charges"
    " UNION SELECT state FROM old_reservations UNION SELECT owner FROM old_reservations"
    " UNION SELECT provider FROM old_reservations UNION SELECT model FROM old_reservations"
    " UNION SELECT zone FROM old_reservations UNION SELECT purpose FROM old_reservations"
    " UNION SELECT purpose FROM old_decisions UNION SELECT provider FROM old_decisions"
    " UNION SELECT model FROM old_decisions UNION SELECT outcome FROM old_decisions"
    " UNION SELECT policy FROM old_decisions UNION SELECT policy_version FROM old_decisions"
    " UNION SELECT reason FROM old_decisions UNION SELECT key_id FROM old_decisions"
    " UNION SELECT zone FROM old_decisions UNION SELECT purpose_class FROM old_decisions"
    " UNION SELECT verdicts FROM old_decisions UNION SELECT tags FROM old_decisions"
    " UNION SELECT warnings FROM old_decisions UNION SELECT 'settled' UNION SELECT 'expired')"
    " WHERE v IS NOT NULL AND v <> '' ORDER BY v;"
    "INSERT OR IGNORE INTO subjects(org, team, user, key) SELECT ifnull(org, ''),"
    " ifnull(team, ''), ifnull(user, ''), ifnull(key, '') FROM (SELECT org, team, user, key"
    " FROM old_reservations UNION SELECT org, team, user, key FROM old_charges"
    " UNION SELECT org, team, user, key FROM old_decisions);"
    "INSERT INTO events(" EVENT_COLS ") SELECT " EVENT_COLS " FROM ("
    /* holds, each with the first decision that names it */
    " SELECT r.created_us AS at_us, 0 AS ord, 0 AS oseq,"
    " CASE WHEN d.seq IS NULL THEN 1 ELSE 2 END AS type, dsc_rid(r.id) AS rid,"
    " " SUBJ("r") " AS subject, NULL AS state, NULL AS kind, NULL AS hold,"
    " r.held_energy_wh AS energy_wh,"
    " r.held_gco2e AS gco2e, r.held_water_ml AS water_ml, r.held_pe_mj AS pe_mj,"
    " r.held_cost AS cost, r.held_tokens AS tokens, r.held_requests AS requests,"
    " " N("coalesce(r.owner, d.key_id)") " AS owner, r.expires_us AS expires_us,"
    " r.request_id AS request_id, " N("coalesce(r.provider, d.provider)") " AS provider,"
    " " N("coalesce(r.model, d.model)") " AS model, " N("coalesce(r.zone, d.zone)") " AS zone,"
    " " N("coalesce(r.purpose, d.purpose)") " AS purpose, d.decision_id AS decision_id,"
    " " N("d.outcome") " AS outcome, " N("d.policy") " AS policy,"
    " " N("d.policy_version") " AS policy_version, " N("d.reason") " AS reason,"
    " " N("d.purpose_class") " AS purpose_class, " N("d.verdicts") " AS verdicts,"
    " " N("d.tags") " AS tags, " N("d.warnings") " AS warnings, d.input_tokens AS input_tokens,"
    " d.output_tokens AS output_tokens, d.est_energy_wh AS est_energy_wh,"
    " d.est_gco2e AS est_gco2e, d.est_water_ml AS est_water_ml"
    " FROM old_reservations r LEFT JOIN old_decisions d ON d.seq = " FIRST_DECISION("r")
    " WHERE r.expires_us IS NOT NULL"
    /* decisions that are not a hold's */
    " UNION ALL SELECT d.at_us, 1, d.seq, 6, dsc_rid(d.reservation_id), " SUBJ("d") ", NULL,"
    " NULL, NULL, 0, 0, 0, 0, 0, 0, 0, " N("d.key_id") ", NULL, d.request_id, " WHAT_OF("d") ", "
    DECISION_OF("d") " FROM old_decisions d WHERE NOT EXISTS (SELECT 1 FROM old_reservations r"
    " WHERE r.id = d.reservation_id AND r.expires_us IS NOT NULL AND d.seq = "
    FIRST_DECISION("r") ")"
    /* charges: settles, late and unreserved settles, charged expiries */
    " UNION ALL SELECT c.at_us, 2, c.seq, CASE c.kind WHEN 'expire' THEN 5 ELSE 3 END,"
    " dsc_rid(c.reservation_id), " SUBJ("c") ", " N("CASE c.kind WHEN 'expire' THEN 'expired'"
    " ELSE 'settled' END") ", " N("c.kind") ", NULL, c.energy_wh, c.gco2e, c.water_ml, c.pe_mj,"
    " c.cost, c.tokens, c.requests, " N("coalesce(r.owner, d.key_id)") ", NULL, NULL,"
    " " N("coalesce(r.provider, d.provider)") ", " N("coalesce(r.model, d.model)") ","
    " " N("coalesce(r.zone, d.zone)") ", " N("coalesce(r.purpose, d.purpose)") ", " NO_DECISION
    " FROM old_charges c LEFT JOIN old_reservations r ON r.id = c.reservation_id"
    " LEFT JOIN old_decisions d ON d.seq = " FIRST_DECISION("r")
    /* the end of holds that no charge accounts for: cancelled, released */
    " UNION ALL SELECT coalesce(r.finished_us, r.created_us), 3, 0,"
    " CASE r.state WHEN 'cancelled' THEN 4 ELSE 5 END, dsc_rid(r.id), " SUBJ("r") ","
    " " N("r.state") ", NULL, NULL, 0, 0, 0, 0, 0, 0, 0, " N("r.owner") ", NULL, NULL, " WHAT_OF("r")
    ", " NO_DECISION " FROM old_reservations r WHERE r.state IN ('cancelled', 'released')"
    " OR (r.state = 'expired' AND NOT EXISTS (SELECT 1 FROM old_charges c"
    " WHERE c.reservation_id = r.id))"
    ") ORDER BY at_us, ord, oseq;"
    "INSERT OR IGNORE INTO unreserved SELECT rid FROM events WHERE type = 3"
    " AND kind = (SELECT id FROM names WHERE name = 'unreserved') AND rid IS NOT NULL;"
    /* each settle, cancel and expiry names the seq of its hold */
    "CREATE INDEX temp_events_rid ON events(rid);"
    "UPDATE events SET hold = (SELECT h.seq FROM events h WHERE h.rid = events.rid"
    " AND h.type IN (1, 2)) WHERE type IN (3, 4, 5);"
    "DROP INDEX temp_events_rid;"
    /* every charge copied is rolled up; the checkpoint says so */
    "INSERT INTO rollups SELECT at_us / 3600000000 * 3600000000, subject, sum(energy_wh),"
    " sum(gco2e), sum(water_ml), sum(pe_mj), sum(cost), sum(tokens), sum(requests)"
    " FROM events WHERE type IN (3, 5) AND kind IS NOT NULL GROUP BY 1, 2;"
    "INSERT INTO checkpoints SELECT * FROM (SELECT max(seq) AS seq, max(at_us), max(at_us),"
    " coalesce((SELECT min(seq) FROM events WHERE type IN (1, 2) AND rid NOT IN (SELECT rid"
    " FROM events WHERE type IN (3, 4, 5) AND rid IS NOT NULL)), max(seq) + 1),"
    " (SELECT coalesce(max(substr(rid, 1, 6)), x'') FROM events WHERE type IN (1, 2)"
    " AND length(rid) = 18) FROM events) WHERE seq IS NOT NULL;"
    "INSERT INTO budget_log(at_us, deleted, budget_id, selector, metric, window, limit_micro)"
    " SELECT updated_us, 0, id, selector, metric, window, limit_micro FROM old_budgets"
    " ORDER BY id;"
    "DROP TABLE old_budgets; DROP TABLE old_reservations; DROP TABLE old_charges;"
    "DROP TABLE old_decisions;" SHRINK_SQL;
// clang-format on

/* Whether a reservation id is one the ledger makes: "r" + an even number of lowercase
 * hex digits (16 before keys, 36 since). */
static bool packable(const char *id, size_t n) {
    if (n < 3 || id[0] != 'r' || (n - 1) % 2) return false;
    for (size_t i = 1; i < n; i++)
        if (!((id[i] >= '0' && id[i] <= '9') || (id[i] >= 'a' && id[i] <= 'f'))) return false;
    return true;
}

static int hexval(char c) {
    return c <= '9' ? c - '0' : c - 'a' + 10;
}

size_t dsc__sq_pack_rid(const char *id, unsigned char out[32]) {
    size_t n = strlen(id);
    if (n > 65 || !packable(id, n)) return 0;
    for (size_t i = 0; i < (n - 1) / 2; i++)
        out[i] = (unsigned char)(hexval(id[1 + 2 * i]) << 4 | hexval(id[2 + 2 * i]));
    return (n - 1) / 2;
}

void dsc__sq_bind_rid(sqlite3_stmt *st, int i, const char *id) {
    unsigned char b[32];
    size_t n = id ? dsc__sq_pack_rid(id, b) : 0;
    if (n)
        sqlite3_bind_blob(st, i, b, (int)n, SQLITE_TRANSIENT);
    else if (id && id[0])
        sqlite3_bind_text(st, i, id, -1, SQLITE_STATIC);
    else
        sqlite3_bind_null(st, i);
}

/* dsc_rid(id): the stored form of a reservation id, for the migration's SQL. */
static void sql_rid(sqlite3_context *ctx, int argc, sqlite3_value **argv) {
    (void)argc;
    const char *id = (const char *)sqlite3_value_text(argv[0]);
    unsigned char b[32];
    size_t n = id ? dsc__sq_pack_rid(id, b) : 0;
    if (n)
        sqlite3_result_blob(ctx, b, (int)n, SQLITE_TRANSIENT);
    else if (id && id[0])
        sqlite3_result_text(ctx, id, -1, SQLITE_TRANSIENT);
    else
        sqlite3_result_null(ctx);
}

static int exec(sqlite3 *db, const char *sql, char *msg, size_t cap) {
    int rc = sqlite3_exec(db, sql, NULL, NULL, NULL);
    if (rc != SQLITE_OK) snprintf(msg, cap, "%s", sqlite3_errmsg(db));
    return rc;
}

/* Whether the file has any table of schema 1 (they are views since). */
static bool old_schema(sqlite3 *db) {
    sqlite3_stmt *st = NULL;
    bool old = false;
    if (sqlite3_prepare_v2(
            db,
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name IN ('budgets',"
            " 'reservations', 'charges', 'decisions')",
            -1, &st, NULL) == SQLITE_OK)
        old = sqlite3_step(st) == SQLITE_ROW;
    sqlite3_finalize(st);
    return old;
}

static int migrate(sqlite3 *db, char *msg, size_t cap) {
    int rc = exec(db, migrate_sql, msg, cap);
    for (size_t i = 0; rc == SQLITE_OK && i < sizeof old_added / sizeof old_added[0]; i++) {
        char sql[128];
        snprintf(sql, sizeof sql, "ALTER TABLE %s", old_added[i]);
        if (sqlite3_exec(db, sql, NULL, NULL, NULL) != SQLITE_OK &&
            !strstr(sqlite3_errmsg(db), "duplicate column"))
            rc = exec(db, sql, msg, cap); /* the error again, into msg */
    }
    if (rc == SQLITE_OK) rc = exec(db, tables_sql, msg, cap);
    if (rc == SQLITE_OK) rc = exec(db, copy_sql, msg, cap);
    return rc;
}

/* Schema 5's columns on a file of schema 2 to 4 (ALTER TABLE: the rows stay as they
 * are, and read as NULL in them). */
static int add_columns(sqlite3 *db, char *msg, size_t cap) {
    static const char *const cols[] = {"finish_after_us", "held_energy_wh", "held_gco2e",
                                       "held_water_ml",   "held_pe_mj",     "held_cost",
                                       "held_tokens",     "held_requests"};
    int rc = SQLITE_OK;
    for (size_t i = 0; rc == SQLITE_OK && i < sizeof cols / sizeof cols[0]; i++) {
        char sql[128];
        snprintf(sql, sizeof sql, "ALTER TABLE events ADD COLUMN %s INTEGER", cols[i]);
        if (sqlite3_exec(db, sql, NULL, NULL, NULL) != SQLITE_OK &&
            !strstr(sqlite3_errmsg(db), "duplicate column"))
            rc = exec(db, sql, msg, cap); /* the error again, into msg */
    }
    return rc;
}

int dsc__sq_schema(sqlite3 *db, char *msg, size_t cap) {
    int rc = sqlite3_create_function(db, "dsc_rid", 1, SQLITE_UTF8 | SQLITE_DETERMINISTIC, NULL,
                                     sql_rid, NULL, NULL);
    if (rc == SQLITE_OK) rc = exec(db, "BEGIN IMMEDIATE", msg, cap);
    if (rc != SQLITE_OK) return rc;
    rc = old_schema(db) ? migrate(db, msg, cap) : exec(db, tables_sql, msg, cap);
    if (rc == SQLITE_OK) rc = add_columns(db, msg, cap);
    if (rc == SQLITE_OK) rc = exec(db, views_sql, msg, cap);
    if (rc == SQLITE_OK) {
        char sql[96];
        snprintf(sql, sizeof sql, "INSERT OR REPLACE INTO meta VALUES('schema_version', '%d')",
                 DSC__SQ_SCHEMA_VERSION);
        rc = exec(db, sql, msg, cap);
    }
    if (rc == SQLITE_OK) rc = exec(db, "COMMIT", msg, cap);
    if (rc != SQLITE_OK) sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
    return rc;
}
