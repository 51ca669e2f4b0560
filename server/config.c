/*
 * config.c - discernd's configuration (see config.h).
 *
 * One table (config_keys) names every key, its type, where it lives in
 * dsc_server_config, its range, its flag's argument and its help line. The file
 * parser and the flags both go through dsc_server_config_set, and --help is printed
 * from the same table with the defaults read from dsc_server_config_default, so a
 * key, its flag, its check and its documented default cannot disagree.
 *
 * The file is read line by line without ever splitting a line: a line longer than
 * LINE_MAX_BYTES is refused with its number (a long comment must not turn its tail
 * into a key), a NUL byte is refused (text after it would be silently ignored), and a
 * UTF-8 byte order mark at the start is skipped.
 */
#include "config.h"

#include "store_url.h"

#include "discern/window.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <netinet/in.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/un.h>
#include <unistd.h>

#define LINE_MAX_BYTES 65536

typedef enum key_type {
    KEY_STR,      /* any string that fits */
    KEY_ADDR,     /* "" or HOST:PORT */
    KEY_UNIX,     /* "" or a path that fits a sockaddr_un */
    KEY_TZ,       /* what dsc_tz_parse accepts */
    KEY_STORE,    /* what dsc__store_url_parse accepts */
    KEY_PREFIX,   /* a Redis key prefix: printable, no braces (it becomes a hash tag) */
    KEY_ENUM_STR, /* a string, one of names */
    KEY_ENUM,     /* an int-sized enum, the index of one of names */
    KEY_UIDS,     /* unix_admin_uids */
    KEY_NUM,      /* an integer field of size bytes in [min, max] */
    KEY_BOOL,     /* a bool: true or false */
    KEY_MODE,     /* a uint32_t permission mode in octal, in [min, max] */
} key_type;

typedef struct config_key {
    const char *name;
    key_type type;
    size_t offset, size;
    int64_t min, max;
    const char *const *names; /* KEY_ENUM, KEY_ENUM_STR: NULL-terminated */
    const char *arg;          /* the flag's argument in --help */
    const char *help;
} config_key;

static const char *const level_names[] = {"debug", "info", "warn", "error", NULL};
static const char *const mode_names[] = {"closed", "open", NULL};
static const char *const durability_names[] = {"full", "batch", "off", NULL};

#define FIELD(field) offsetof(dsc_server_config, field), sizeof(((dsc_server_config *)0)->field)
#define STRING(name, type, field, arg, help)                                                       \
    { name, type, FIELD(field), 0, 0, NULL, arg, help }
#define ENUM(name, type, field, names, help)                                                       \
    { name, type, FIELD(field), 0, 0, names, "VALUE", help }
#define NUM(name, field, lo, hi, arg, help)                                                        \
    { name, KEY_NUM, FIELD(field), lo, hi, NULL, arg, help }
#define BOOL(name, field, help)                                                                    \
    { name, KEY_BOOL, FIELD(field), 0, 1, NULL, "true|false", help }

static const config_key config_keys[] = {
    STRING("listen", KEY_ADDR, listen, "HOST:PORT",
           "MessagePack-RPC over TCP (port 0 picks a free one; \"\" disables)"),
    STRING("unix", KEY_UNIX, unix_path, "PATH",
           "MessagePack-RPC over a Unix socket (\"\" disables)"),
    {"unix_mode", KEY_MODE, FIELD(unix_mode), 0, 0777, NULL, "MODE",
     "permission bits of the Unix socket, octal, whatever the umask"},
    STRING("http", KEY_ADDR, http, "HOST:PORT",
           "HTTP: the console, the JSON API, /metrics, /healthz (\"\" disables)"),
    STRING("port_file", KEY_STR, port_file, "PATH",
           "write the bound TCP and HTTP ports there, one per line (\"\" = none)"),
    STRING("policies", KEY_STR, policies, "DIR", "policy folder"),
    STRING("data", KEY_STR, data, "DIR",
           "catalogue folder (\"\" = $DISCERN_DATA_DIR, else the installed catalogue)"),
    STRING("www", KEY_STR, www, "DIR",
           "the console's files served at / over HTTP (\"\" = the installed share/discern/www)"),
    STRING("store", KEY_STORE, store, "PATH|URL",
           "SQLite file, redis://[:password@]HOST:PORT[/DB] or redis+unix:///PATH "
           "(\"\" = memory only)"),
    STRING("redis_prefix", KEY_PREFIX, redis_prefix, "PREFIX",
           "prefix of every Redis key (a Redis store; password: DISCERN_REDIS_PASSWORD)"),
    NUM("redis_state_max_age_ms", redis_state_max_age_ms, 0, 10000, "MILLISECONDS",
        "a Redis store: the usage a check's policies see may be this old (0 = read each "
        "time); holds are still checked exactly"),
    ENUM("durability", KEY_ENUM_STR, durability, durability_names,
         "full: committed before the reply (a check's hold: queued); batch: queued; off: no fsync"),
    STRING("timezone", KEY_TZ, timezone, "TZ",
           "timezone of calendar windows: UTC, +02:00 or local"),
    NUM("hold_ttl_s", hold_ttl_s, 1, 86400, "SECONDS",
        "life of a check's hold when the client gives no ttl_s"),
    ENUM("estimate_method", KEY_ENUM, estimate_method, dsc_method_names,
         "estimation method of requests that name none: ecologits or discern"),
    ENUM("failure_mode", KEY_ENUM, failure_mode, mode_names,
         "store unavailable: closed refuses checks, open allows them unenforced"),
    NUM("journal_retention_days", journal_retention_days, 0, 36500, "DAYS",
        "drop raw store events older than this once rolled up into hours (0 = keep forever)"),
    NUM("store_free_warn_bytes", store_free_warn_bytes, 0, INT64_C(1) << 50, "BYTES",
        "warn when the store's file system has less free (0 = never)"),
    NUM("workers", workers, 0, 256, "N", "worker threads (0 = one per core)"),
    NUM("policy_time_budget_us", policy_time_budget_us, 10, 10000000, "MICROSECONDS",
        "time one policy may run per call before it is stopped (on_error)"),
    NUM("policy_memory_mb", policy_memory_mb, 1, 4096, "MIB",
        "memory cap of each worker's Lua state (on_error when hit)"),
    STRING("admin_token", KEY_STR, admin_token, "TOKEN",
           "admin token for the auth method (or DISCERN_ADMIN_TOKEN)"),
    BOOL("require_auth", require_auth,
         "TCP and HTTP callers need a key for more than ping, auth, estimate and the catalogue"),
    BOOL("allow_insecure_bind", allow_insecure_bind,
         "serve a non-loopback address even with require_auth = false (or --insecure-bind)"),
    {"unix_admin_uids", KEY_UIDS, FIELD(unix_admin_uids), 0, 0, NULL, "UIDS",
     "Unix peers that are admin: comma-separated uids, self or none"},
    NUM("max_message_bytes", limits.max_message_bytes, 256, 16 * 1024 * 1024, "BYTES",
        "largest MessagePack message"),
    NUM("max_depth", limits.max_depth, 2, DSC_RPC_DEPTH_CAP, "N", "nesting of arrays and maps"),
    NUM("max_items", limits.max_items, 1, 1 << 20, "N", "elements of one array or map"),
    NUM("max_objects", limits.max_objects, 8, 1 << 22, "N", "objects in one message"),
    NUM("max_string_bytes", limits.max_string_bytes, 16, 16 * 1024 * 1024, "BYTES",
        "one string, binary or extension value"),
    NUM("max_inflight", max_inflight, 1, 1 << 20, "N",
        "requests per connection before its replies must drain"),
    NUM("max_connections", max_connections, 0, 1 << 24, "N",
        "open client connections (0 = what the descriptor limit allows)"),
    NUM("max_connections_per_address", max_connections_per_address, 0, 1 << 24, "N",
        "TCP connections from one IP address (0 = no cap)"),
    NUM("unix_reserved_connections", unix_reserved_connections, 0, 4096, "N",
        "Unix-socket peers accepted beyond max_connections (room for admins)"),
    NUM("idle_timeout_s", idle_timeout_s, 1, 86400 * 7, "SECONDS",
        "close a connection that completes no message for this long"),
    NUM("frame_timeout_s", frame_timeout_s, 1, 86400, "SECONDS",
        "close a connection whose message is not complete this long after its first byte"),
    ENUM("log_level", KEY_ENUM, log_level, level_names, "debug, info, warn or error"),
};

#define N_CONFIG_KEYS (sizeof config_keys / sizeof config_keys[0])

const char *dsc_log_level_name(dsc_log_level level) {
    return level >= DSC_LOG_DEBUG && level <= DSC_LOG_ERROR ? level_names[level] : "info";
}

void dsc_server_config_default(dsc_server_config *cfg) {
    memset(cfg, 0, sizeof *cfg);
    strcpy(cfg->listen, "127.0.0.1:7878");
    strcpy(cfg->unix_path, "var/discernd.sock");
    strcpy(cfg->http, "127.0.0.1:7879");
    strcpy(cfg->store, "var/discern.db");
    strcpy(cfg->durability, "full");
    strcpy(cfg->redis_prefix, "discern:");
    cfg->redis_state_max_age_ms = 100;
    strcpy(cfg->policies, "policies");
    strcpy(cfg->timezone, "UTC");
    cfg->log_level = DSC_LOG_INFO;
    cfg->failure_mode = DSC_FAIL_CLOSED;
    cfg->hold_ttl_s = 300;
    cfg->estimate_method = DSC_METHOD_ECOLOGITS;
    dsc_rpc_limits_default(&cfg->limits);
    cfg->max_inflight = 256;
    cfg->max_connections = 0;
    cfg->max_connections_per_address = 1000;
    cfg->unix_reserved_connections = 16;
    cfg->idle_timeout_s = 300;
    cfg->frame_timeout_s = 30;
    cfg->store_free_warn_bytes = INT64_C(64) * 1024 * 1024;
    cfg->policy_time_budget_us = 1000;
    cfg->policy_memory_mb = 32;
    cfg->unix_admin_uids[0] = getuid();
    cfg->n_unix_admin_uids = 1;
    cfg->unix_mode = 0660;
    cfg->require_auth = true;
}

/* Parse "host:port" or "[v6]:port" (port 0 = any free port) into ss. */
dsc_status dsc__parse_hostport(const char *key, const char *text, struct sockaddr_storage *ss,
                               socklen_t *len, dsc_error *err) {
    char host[256];
    const char *colon = strrchr(text, ':');
    size_t hlen = colon ? (size_t)(colon - text) : 0;
    char *end;
    long port = colon ? strtol(colon + 1, &end, 10) : -1;
    if (!colon || colon[1] == '\0' || *end || port < 0 || port > 65535 || hlen >= sizeof host)
        return dsc_error_set(err, DSC_BAD_REQUEST, "%s: '%s' is not HOST:PORT", key, text);
    memcpy(host, text, hlen);
    host[hlen] = '\0';
    memset(ss, 0, sizeof *ss);
    struct sockaddr_in *v4 = (struct sockaddr_in *)ss;
    struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)ss;
    if (hlen > 2 && host[0] == '[' && host[hlen - 1] == ']') {
        host[hlen - 1] = '\0';
        if (inet_pton(AF_INET6, host + 1, &v6->sin6_addr) == 1) {
            v6->sin6_family = AF_INET6;
            v6->sin6_port = htons((uint16_t)port);
            *len = sizeof *v6;
            return DSC_OK;
        }
    } else if (inet_pton(AF_INET, host, &v4->sin_addr) == 1) {
        v4->sin_family = AF_INET;
        v4->sin_port = htons((uint16_t)port);
        *len = sizeof *v4;
        return DSC_OK;
    }
    return dsc_error_set(err, DSC_BAD_REQUEST, "%s: '%s' is not an IPv4 or [IPv6] address", key,
                         host);
}

static dsc_status set_number(dsc_server_config *cfg, const config_key *k, const char *value,
                             dsc_error *err) {
    char *end;
    errno = 0;
    long long v = strtoll(value, &end, 10);
    if (errno || end == value || *end || v < k->min || v > k->max)
        return dsc_error_set(err, DSC_BAD_REQUEST, "%s: '%s' is not an integer in [%lld, %lld]",
                             k->name, value, (long long)k->min, (long long)k->max);
    char *p = (char *)cfg + k->offset;
    if (k->size == sizeof(int64_t)) {
        int64_t v64 = v;
        memcpy(p, &v64, sizeof v64);
    } else {
        int32_t v32 = (int32_t)v; /* every 4-byte key's range fits int32 and uint32 */
        memcpy(p, &v32, sizeof v32);
    }
    return DSC_OK;
}

static dsc_status set_bool(dsc_server_config *cfg, const config_key *k, const char *value,
                           dsc_error *err) {
    bool v = strcmp(value, "true") == 0;
    if (!v && strcmp(value, "false") != 0)
        return dsc_error_set(err, DSC_BAD_REQUEST, "%s: '%s' is not true or false", k->name, value);
    *(bool *)((char *)cfg + k->offset) = v;
    return DSC_OK;
}

/* An octal mode such as 0660 (the leading 0 optional). */
static dsc_status set_mode(dsc_server_config *cfg, const config_key *k, const char *value,
                           dsc_error *err) {
    char *end;
    errno = 0;
    long v = strtol(value, &end, 8);
    if (errno || end == value || *end || value[0] == '-' || v < k->min || v > k->max)
        return dsc_error_set(err, DSC_BAD_REQUEST,
                             "%s: '%s' is not an octal permission mode like 0660", k->name, value);
    *(uint32_t *)((char *)cfg + k->offset) = (uint32_t)v;
    return DSC_OK;
}

static int64_t get_number(const dsc_server_config *cfg, const config_key *k) {
    const char *p = (const char *)cfg + k->offset;
    if (k->size == sizeof(int64_t)) {
        int64_t v;
        memcpy(&v, p, sizeof v);
        return v;
    }
    uint32_t v;
    memcpy(&v, p, sizeof v);
    return v;
}

static dsc_status set_uids(dsc_server_config *cfg, const char *value, dsc_error *err) {
    cfg->n_unix_admin_uids = 0;
    if (strcmp(value, "none") == 0 || value[0] == '\0') return DSC_OK;
    char copy[DSC_CONFIG_STR_MAX];
    if (strlen(value) >= sizeof copy)
        return dsc_error_set(err, DSC_BAD_REQUEST, "unix_admin_uids: longer than %zu bytes",
                             sizeof copy - 1);
    strcpy(copy, value);
    for (char *save = NULL, *tok = strtok_r(copy, ", ", &save); tok;
         tok = strtok_r(NULL, ", ", &save)) {
        if (cfg->n_unix_admin_uids == DSC_CONFIG_UIDS_MAX)
            return dsc_error_set(err, DSC_BAD_REQUEST, "unix_admin_uids: more than %d uids",
                                 DSC_CONFIG_UIDS_MAX);
        char *end;
        errno = 0;
        long v = strtol(tok, &end, 10);
        if (strcmp(tok, "self") == 0)
            v = (long)getuid();
        else if (errno || *end || end == tok || v < 0 || v > (long)UINT32_MAX - 1)
            return dsc_error_set(err, DSC_BAD_REQUEST,
                                 "unix_admin_uids: '%s' is not a uid, 'self' or 'none'", tok);
        cfg->unix_admin_uids[cfg->n_unix_admin_uids++] = (uid_t)v;
    }
    return DSC_OK;
}

static int find_name(const char *const *names, const char *value) {
    for (int i = 0; names[i]; i++)
        if (strcmp(value, names[i]) == 0) return i;
    return -1;
}

/* A Redis key prefix becomes the hash tag "{prefix}" of every key: it must be
 * non-empty, printable, without spaces or braces (a brace would move the tag). */
static dsc_status check_prefix(const config_key *k, const char *value, dsc_error *err) {
    if (!value[0]) return dsc_error_set(err, DSC_BAD_REQUEST, "%s: must not be empty", k->name);
    for (const char *p = value; *p; p++)
        if (!isgraph((unsigned char)*p) || *p == '{' || *p == '}')
            return dsc_error_set(err, DSC_BAD_REQUEST,
                                 "%s: only printable bytes without spaces or braces", k->name);
    return DSC_OK;
}

/* Whether value is acceptable for a string key of type t. */
static dsc_status check_string(const config_key *k, const char *value, dsc_error *err) {
    struct sockaddr_storage ss;
    socklen_t len;
    dsc_tz tz;
    if (strlen(value) >= k->size)
        return dsc_error_set(err, DSC_BAD_REQUEST, "%s: longer than %zu bytes", k->name,
                             k->size - 1);
    switch (k->type) {
    case KEY_ADDR:
        return value[0] ? dsc__parse_hostport(k->name, value, &ss, &len, err) : DSC_OK;
    case KEY_UNIX:
        if (strlen(value) >= sizeof(((struct sockaddr_un *)0)->sun_path))
            return dsc_error_set(err, DSC_BAD_REQUEST, "%s: path longer than %zu bytes", k->name,
                                 sizeof(((struct sockaddr_un *)0)->sun_path) - 1);
        return DSC_OK;
    case KEY_TZ:
        if (dsc_tz_parse(value, &tz, err) != DSC_OK)
            return dsc_error_set(err, DSC_BAD_REQUEST,
                                 "%s: '%s' is not UTC, local or an offset like +02:00", k->name,
                                 value);
        return DSC_OK;
    case KEY_STORE: {
        dsc__store_url u;
        return dsc__store_url_parse(k->name, value, &u, err);
    }
    case KEY_PREFIX:
        return check_prefix(k, value, err);
    case KEY_ENUM_STR:
        if (find_name(k->names, value) < 0)
            return dsc_error_set(err, DSC_BAD_REQUEST, "%s: unknown value '%s'", k->name, value);
        return DSC_OK;
    default:
        return DSC_OK;
    }
}

static const config_key *find_key(const char *name) {
    for (size_t i = 0; i < N_CONFIG_KEYS; i++)
        if (strcmp(config_keys[i].name, name) == 0) return &config_keys[i];
    return NULL;
}

dsc_status dsc_server_config_set(dsc_server_config *cfg, const char *key, const char *value,
                                 dsc_error *err) {
    const config_key *k = find_key(key);
    if (!k) return dsc_error_set(err, DSC_BAD_REQUEST, "unknown key '%s'", key);
    switch (k->type) {
    case KEY_NUM:
        return set_number(cfg, k, value, err);
    case KEY_UIDS:
        return set_uids(cfg, value, err);
    case KEY_BOOL:
        return set_bool(cfg, k, value, err);
    case KEY_MODE:
        return set_mode(cfg, k, value, err);
    case KEY_ENUM: {
        int i = find_name(k->names, value);
        if (i < 0) return dsc_error_set(err, DSC_BAD_REQUEST, "%s: unknown value '%s'", key, value);
        memcpy((char *)cfg + k->offset, &i, sizeof i);
        return DSC_OK;
    }
    default: {
        dsc_status st = check_string(k, value, err);
        if (st == DSC_OK) strcpy((char *)cfg + k->offset, value);
        return st;
    }
    }
}

static char *trim(char *s) {
    while (isspace((unsigned char)*s))
        s++;
    char *e = s + strlen(s);
    while (e > s && isspace((unsigned char)e[-1]))
        *--e = '\0';
    return s;
}

/* Split one line into key and value; strips comments and quotes. 0 = blank line,
 * 1 = key/value, -1 = malformed. */
static int split_line(char *line, char **key, char **value) {
    char *s = trim(line);
    if (*s == '\0' || *s == '#') return 0;
    char *eq = strchr(s, '=');
    if (!eq) return -1;
    *eq = '\0';
    *key = trim(s);
    char *v = trim(eq + 1);
    if (*v == '"') {
        char *close = strchr(v + 1, '"');
        if (!close) return -1;
        *close = '\0';
        char *rest = trim(close + 1);
        if (*rest && *rest != '#') return -1;
        *value = v + 1;
        return 1;
    }
    char *hash = strchr(v, '#');
    if (hash) *hash = '\0';
    *value = trim(v);
    return 1;
}

enum { LINE_EOF = 0, LINE_OK = 1, LINE_TOO_LONG = -1, LINE_NUL = -2 };

/* Read one whole line (without its newline) into buf[cap]. */
static int read_line(FILE *f, char *buf, size_t cap) {
    size_t n = 0;
    int c;
    bool nul = false;
    while ((c = getc(f)) != EOF && c != '\n') {
        if (c == '\0') nul = true;
        if (n + 1 >= cap) return LINE_TOO_LONG;
        buf[n++] = (char)c;
    }
    buf[n] = '\0';
    if (nul) return LINE_NUL;
    return c == EOF && n == 0 ? LINE_EOF : LINE_OK;
}

/* Apply one line of the file. */
static dsc_status load_line(dsc_server_config *cfg, char *line, dsc_error *err) {
    char *key, *value;
    int r = split_line(line, &key, &value);
    if (r < 0) return dsc_error_set(err, DSC_BAD_REQUEST, "expected key = value");
    return r > 0 ? dsc_server_config_set(cfg, key, value, err) : DSC_OK;
}

dsc_status dsc_server_config_load(dsc_server_config *cfg, const char *path, dsc_error *err) {
    FILE *f = fopen(path, "r");
    if (!f) return dsc_error_set(err, DSC_IO, "config '%s': %s", path, strerror(errno));
    char *line = malloc(LINE_MAX_BYTES + 1);
    if (!line) {
        fclose(f);
        return dsc_error_set(err, DSC_NOMEM, "config '%s': out of memory", path);
    }
    dsc_status st = DSC_OK;
    dsc_error e;
    int lineno = 1, r;
    for (; st == DSC_OK && (r = read_line(f, line, LINE_MAX_BYTES + 1)) != LINE_EOF; lineno++) {
        char *text = line;
        if (lineno == 1 && strncmp(text, "\xef\xbb\xbf", 3) == 0) text += 3; /* UTF-8 BOM */
        if (r == LINE_TOO_LONG)
            st = dsc_error_set(&e, DSC_BAD_REQUEST, "longer than %d bytes", LINE_MAX_BYTES);
        else if (r == LINE_NUL)
            st = dsc_error_set(&e, DSC_BAD_REQUEST, "holds a NUL byte");
        else
            st = load_line(cfg, text, &e);
    }
    if (st == DSC_OK && ferror(f))
        st = dsc_error_set(&e, DSC_IO, "read error: %s", strerror(errno)), lineno++;
    if (st != DSC_OK)
        dsc_error_set(err, st, "config '%s' line %d: %s", path, lineno - 1, e.message);
    free(line);
    fclose(f);
    return st;
}

/* ------------------------------------------------------------------------ flags -- */

/* "max_connections" -> "--max-connections". */
static void flag_name(const config_key *k, char *out, size_t cap) {
    snprintf(out, cap, "--%s", k->name);
    for (char *p = out + 2; *p; p++)
        if (*p == '_') *p = '-';
}

/* The default of k, as it would be written in the file. */
static void default_text(const dsc_server_config *def, const config_key *k, char *out, size_t cap) {
    const char *p = (const char *)def + k->offset;
    int i;
    switch (k->type) {
    case KEY_NUM:
        snprintf(out, cap, "%lld", (long long)get_number(def, k));
        break;
    case KEY_ENUM:
        memcpy(&i, p, sizeof i);
        snprintf(out, cap, "%s", k->names[i]);
        break;
    case KEY_UIDS:
        snprintf(out, cap, "self");
        break;
    case KEY_BOOL:
        snprintf(out, cap, "%s", *(const bool *)p ? "true" : "false");
        break;
    case KEY_MODE:
        snprintf(out, cap, "%04o", (unsigned)*(const uint32_t *)p);
        break;
    case KEY_ENUM_STR:
        snprintf(out, cap, "%s", p);
        break;
    default:
        snprintf(out, cap, "\"%s\"", p);
        break;
    }
}

void dsc_server_config_usage(FILE *out) {
    dsc_server_config def;
    dsc_server_config_default(&def);
    fprintf(out, "usage: discernd [flags]\n\n"
                 "The discern policy server: MessagePack-RPC over TCP and a Unix socket.\n"
                 "Every config key is also a flag (key max_connections: --max-connections N);\n"
                 "flags override the config file, which overrides the defaults shown.\n\n");
    fprintf(out, "  %-30s %s\n", "--config FILE", "read this config file first");
    for (size_t i = 0; i < N_CONFIG_KEYS; i++) {
        const config_key *k = &config_keys[i];
        char flag[64], left[96], dflt[DSC_CONFIG_STR_MAX + 8];
        flag_name(k, flag, sizeof flag);
        snprintf(left, sizeof left, "%s %s", flag, k->arg);
        default_text(&def, k, dflt, sizeof dflt);
        fprintf(out, "  %-30s %s\n  %-30s (%s = %s)\n", left, k->help, "", k->name, dflt);
    }
    fprintf(out, "  %-30s %s\n", "--insecure-bind", "the same as --allow-insecure-bind true");
    fprintf(out, "  %-30s %s\n\n", "--help", "show this help");
    fprintf(out,
            "Signals: SIGTERM/SIGINT drain and exit 0, SIGHUP reloads policies and catalogue.\n"
            "Exit codes: 0 clean stop, 1 drain failed, 2 bad flag or config, 3 cannot start.\n");
}

/* What --config stands for in find_flag's answer. */
static const config_key config_flag = {"config", KEY_STR, 0, 0, 0, 0, NULL, "FILE", NULL};

/* The key of flag arg ("--max-connections" or "--max-connections=5"), &config_flag,
 * or NULL when there is none (flags are spelt with '-', keys with '_'). */
static const config_key *find_flag(const char *arg, const char **inline_value) {
    *inline_value = NULL;
    if (strncmp(arg, "--", 2) != 0) return NULL;
    char name[64];
    size_t n = strcspn(arg + 2, "=");
    if (n == 0 || n >= sizeof name) return NULL;
    for (size_t i = 0; i < n; i++) {
        if (arg[2 + i] == '_') return NULL;
        name[i] = arg[2 + i] == '-' ? '_' : arg[2 + i];
    }
    name[n] = '\0';
    if (arg[2 + n] == '=') *inline_value = arg + 2 + n + 1;
    return strcmp(name, "config") == 0 ? &config_flag : find_key(name);
}

/* Walk argv; when only_config, apply --config alone, else everything but --config. */
static dsc_status apply_flags(dsc_server_config *cfg, int argc, char **argv, bool only_config,
                              bool *help, dsc_error *err) {
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            *help = true;
            continue;
        }
        if (strcmp(argv[i], "--insecure-bind") == 0) { /* a switch: no value */
            if (!only_config) cfg->allow_insecure_bind = true;
            continue;
        }
        const char *value;
        const config_key *k = find_flag(argv[i], &value);
        if (!k)
            return dsc_error_set(err, DSC_BAD_REQUEST, "unknown flag '%s' (see --help)", argv[i]);
        if (!value) {
            if (i + 1 >= argc)
                return dsc_error_set(err, DSC_BAD_REQUEST, "%.*s needs a value",
                                     (int)strcspn(argv[i], "="), argv[i]);
            value = argv[++i];
        }
        bool is_config = k == &config_flag;
        if (is_config != only_config) continue;
        dsc_status st = is_config ? dsc_server_config_load(cfg, value, err)
                                  : dsc_server_config_set(cfg, k->name, value, err);
        if (st != DSC_OK) return st;
    }
    return DSC_OK;
}

dsc_status dsc_server_config_from_args(dsc_server_config *cfg, int argc, char **argv, bool *help,
                                       dsc_error *err) {
    *help = false;
    dsc_status st = apply_flags(cfg, argc, argv, true, help, err);
    if (st != DSC_OK) return st;
    const char *env = getenv("DISCERN_ADMIN_TOKEN");
    if (env && *env && (st = dsc_server_config_set(cfg, "admin_token", env, err)) != DSC_OK)
        return st;
    return apply_flags(cfg, argc, argv, false, help, err);
}

/* The host of "host:port" / "[v6]:port" is a loopback address (127.0.0.0/8, ::1,
 * ::ffff:127.x). Anything unparsable counts as not loopback. */
static bool is_loopback(const char *hostport) {
    char host[64];
    const char *colon = strrchr(hostport, ':');
    size_t n = colon ? (size_t)(colon - hostport) : 0;
    if (n > 2 && hostport[0] == '[' && hostport[n - 1] == ']') hostport++, n -= 2;
    if (n == 0 || n >= sizeof host) return false;
    memcpy(host, hostport, n);
    host[n] = '\0';
    struct in_addr v4;
    struct in6_addr v6;
    if (inet_pton(AF_INET, host, &v4) == 1) return (ntohl(v4.s_addr) >> 24) == 127;
    if (inet_pton(AF_INET6, host, &v6) != 1) return false;
    return IN6_IS_ADDR_LOOPBACK(&v6) || (IN6_IS_ADDR_V4MAPPED(&v6) && v6.s6_addr[12] == 127);
}

dsc_status dsc_server_config_check(const dsc_server_config *cfg, dsc_error *err) {
    const char *keys[] = {"listen", "http"}, *values[] = {cfg->listen, cfg->http};
    for (int i = 0; i < 2; i++) {
        if (cfg->require_auth || cfg->allow_insecure_bind || !values[i][0] ||
            is_loopback(values[i]))
            continue;
        return dsc_error_set(err, DSC_BAD_REQUEST,
                             "%s: refusing %s with require_auth = false: not loopback, so anyone "
                             "reaching it could call every method without a key; set "
                             "require_auth = true, use 127.0.0.1, or force with --insecure-bind",
                             keys[i], values[i]);
    }
    return DSC_OK;
}
