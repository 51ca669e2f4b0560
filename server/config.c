/*
 * config.c - discernd's configuration (see config.h).
 *
 * One table (config_keys) names every key, its type, where it lives in
 * dsc_server_config and its range; the file parser and the flags both go through
 * dsc_server_config_set, so a value means the same wherever it comes from.
 */
#include "config.h"

#include <ctype.h>
#include <errno.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef enum key_type { KEY_STR, KEY_INT, KEY_U32, KEY_SIZE } key_type;

typedef struct config_key {
    const char *name;
    key_type type;
    size_t offset;
    size_t size; /* KEY_STR: buffer size */
    int64_t min, max;
} config_key;

#define STR(name, field)                                                                           \
    {                                                                                              \
        name, KEY_STR, offsetof(dsc_server_config, field),                                         \
            sizeof(((dsc_server_config *)0)->field), 0, 0                                          \
    }
#define NUM(name, type, field, lo, hi)                                                             \
    { name, type, offsetof(dsc_server_config, field), 0, lo, hi }

static const config_key config_keys[] = {
    STR("listen", listen),
    STR("unix", unix_path),
    STR("http", http),
    STR("store", store),
    STR("durability", durability),
    STR("policies", policies),
    STR("data", data),
    STR("admin_token", admin_token),
    STR("port_file", port_file),
    STR("timezone", timezone),
    NUM("workers", KEY_INT, workers, 0, 256),
    NUM("hold_ttl_s", KEY_INT, hold_ttl_s, 1, 86400),
    NUM("max_message_bytes", KEY_SIZE, limits.max_message_bytes, 256, 16 * 1024 * 1024),
    NUM("max_depth", KEY_U32, limits.max_depth, 2, DSC_RPC_DEPTH_CAP),
    NUM("max_items", KEY_U32, limits.max_items, 1, 1 << 20),
    NUM("max_objects", KEY_U32, limits.max_objects, 8, 1 << 22),
    NUM("max_string_bytes", KEY_U32, limits.max_string_bytes, 16, 16 * 1024 * 1024),
    NUM("max_inflight", KEY_U32, max_inflight, 1, 1 << 20),
    NUM("max_connections", KEY_U32, max_connections, 1, 1 << 24),
    NUM("idle_timeout_s", KEY_U32, idle_timeout_s, 1, 86400 * 7),
};

#define N_CONFIG_KEYS (sizeof config_keys / sizeof config_keys[0])

static const char *const level_names[] = {"debug", "info", "warn", "error"};

const char *dsc_log_level_name(dsc_log_level level) {
    return level >= DSC_LOG_DEBUG && level <= DSC_LOG_ERROR ? level_names[level] : "info";
}

void dsc_server_config_default(dsc_server_config *cfg) {
    memset(cfg, 0, sizeof *cfg);
    strcpy(cfg->listen, "127.0.0.1:7878");
    strcpy(cfg->unix_path, "/tmp/discernd.sock");
    strcpy(cfg->http, "127.0.0.1:7879");
    strcpy(cfg->store, "var/discern.db");
    strcpy(cfg->durability, "full");
    strcpy(cfg->policies, "policies");
    strcpy(cfg->timezone, "UTC");
    cfg->log_level = DSC_LOG_INFO;
    cfg->failure_mode = DSC_FAIL_CLOSED;
    cfg->hold_ttl_s = 300;
    cfg->estimate_method = DSC_METHOD_ECOLOGITS;
    dsc_rpc_limits_default(&cfg->limits);
    cfg->max_inflight = 256;
    cfg->max_connections = 10000;
    cfg->idle_timeout_s = 300;
    cfg->unix_admin_uids[0] = getuid();
    cfg->n_unix_admin_uids = 1;
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
    switch (k->type) {
    case KEY_INT: {
        if (k->offset == offsetof(dsc_server_config, hold_ttl_s))
            *(int64_t *)p = v;
        else
            *(int *)p = (int)v;
        break;
    }
    case KEY_U32:
        *(uint32_t *)p = (uint32_t)v;
        break;
    case KEY_SIZE:
        *(size_t *)p = (size_t)v;
        break;
    case KEY_STR:
        break;
    }
    return DSC_OK;
}

static dsc_status set_uids(dsc_server_config *cfg, const char *value, dsc_error *err) {
    cfg->n_unix_admin_uids = 0;
    if (strcmp(value, "none") == 0 || value[0] == '\0') return DSC_OK;
    char copy[DSC_CONFIG_STR_MAX];
    snprintf(copy, sizeof copy, "%s", value);
    for (char *save = NULL, *tok = strtok_r(copy, ", ", &save); tok;
         tok = strtok_r(NULL, ", ", &save)) {
        if (cfg->n_unix_admin_uids == DSC_CONFIG_UIDS_MAX)
            return dsc_error_set(err, DSC_BAD_REQUEST, "unix_admin_uids: more than %d uids",
                                 DSC_CONFIG_UIDS_MAX);
        char *end;
        long v = strtol(tok, &end, 10);
        if (strcmp(tok, "self") == 0)
            v = (long)getuid();
        else if (*end || end == tok || v < 0)
            return dsc_error_set(err, DSC_BAD_REQUEST,
                                 "unix_admin_uids: '%s' is not a uid, 'self' or 'none'", tok);
        cfg->unix_admin_uids[cfg->n_unix_admin_uids++] = (uid_t)v;
    }
    return DSC_OK;
}

static dsc_status set_enum(const char *key, const char *value, const char *const *names, int n,
                           int *out, dsc_error *err) {
    for (int i = 0; i < n; i++)
        if (strcmp(value, names[i]) == 0) return *out = i, DSC_OK;
    return dsc_error_set(err, DSC_BAD_REQUEST, "%s: unknown value '%s'", key, value);
}

dsc_status dsc_server_config_set(dsc_server_config *cfg, const char *key, const char *value,
                                 dsc_error *err) {
    static const char *const modes[] = {"closed", "open"};
    static const char *const durabilities[] = {"full", "batch", "off"};
    int i = 0;
    if (strcmp(key, "log_level") == 0) {
        dsc_status st = set_enum(key, value, level_names, 4, &i, err);
        if (st == DSC_OK) cfg->log_level = (dsc_log_level)i;
        return st;
    }
    if (strcmp(key, "failure_mode") == 0) {
        dsc_status st = set_enum(key, value, modes, 2, &i, err);
        if (st == DSC_OK) cfg->failure_mode = (dsc_failure_mode)i;
        return st;
    }
    if (strcmp(key, "unix_admin_uids") == 0) return set_uids(cfg, value, err);
    if (strcmp(key, "estimate_method") == 0) {
        if (dsc_method_parse(value, &cfg->estimate_method) == DSC_OK) return DSC_OK;
        return dsc_error_set(err, DSC_BAD_REQUEST,
                             "estimate_method: unknown value '%s' (ecologits or discern)", value);
    }
    if (strcmp(key, "durability") == 0 && set_enum(key, value, durabilities, 3, &i, err) != DSC_OK)
        return DSC_BAD_REQUEST;
    for (size_t k = 0; k < N_CONFIG_KEYS; k++) {
        const config_key *ck = &config_keys[k];
        if (strcmp(ck->name, key) != 0) continue;
        if (ck->type != KEY_STR) return set_number(cfg, ck, value, err);
        if (strlen(value) >= ck->size)
            return dsc_error_set(err, DSC_BAD_REQUEST, "%s: longer than %zu bytes", key,
                                 ck->size - 1);
        strcpy((char *)cfg + ck->offset, value);
        return DSC_OK;
    }
    return dsc_error_set(err, DSC_BAD_REQUEST, "unknown key '%s'", key);
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

dsc_status dsc_server_config_load(dsc_server_config *cfg, const char *path, dsc_error *err) {
    FILE *f = fopen(path, "r");
    if (!f) return dsc_error_set(err, DSC_IO, "config '%s': %s", path, strerror(errno));
    char line[2048];
    dsc_status st = DSC_OK;
    for (int lineno = 1; st == DSC_OK && fgets(line, sizeof line, f); lineno++) {
        char *key, *value;
        int r = split_line(line, &key, &value);
        if (r < 0) {
            st = dsc_error_set(err, DSC_BAD_REQUEST, "config '%s' line %d: expected key = value",
                               path, lineno);
        } else if (r > 0 && (st = dsc_server_config_set(cfg, key, value, err)) != DSC_OK) {
            char msg[DSC_ERROR_MESSAGE_MAX];
            snprintf(msg, sizeof msg, "%s", err ? err->message : "");
            dsc_error_set(err, st, "config '%s' line %d: %s", path, lineno, msg);
        }
    }
    fclose(f);
    return st;
}

/* flag -> config key; the help text documents each. */
typedef struct flag {
    const char *flag, *key, *arg, *help;
} flag;

static const flag flags[] = {
    {"--config", NULL, "FILE", "read this config file first (flags override it)"},
    {"--listen", "listen", "HOST:PORT",
     "TCP listener (default 127.0.0.1:7878; port 0 picks a free one; \"\" disables)"},
    {"--unix", "unix", "PATH", "Unix socket listener (default /tmp/discernd.sock; \"\" disables)"},
    {"--http", "http", "HOST:PORT",
     "HTTP listener for /metrics, /healthz, /v1/budgets (default 127.0.0.1:7879; \"\" disables)"},
    {"--store", "store", "PATH",
     "SQLite ledger store (default var/discern.db; \"\" keeps everything in memory)"},
    {"--policies", "policies", "DIR", "policy folder (default policies)"},
    {"--data", "data", "DIR", "catalogue folder (default: the installed catalogue)"},
    {"--workers", "workers", "N", "worker threads (default 0 = one per core)"},
    {"--admin-token", "admin_token", "TOKEN",
     "admin token for the auth method (or DISCERN_ADMIN_TOKEN)"},
    {"--log-level", "log_level", "LEVEL", "debug, info, warn or error (default info)"},
    {"--port-file", "port_file", "PATH", "write the bound TCP and HTTP ports there, one per line"},
    {"--failure-mode", "failure_mode", "MODE",
     "closed (refuse when the store is down, default) or open"},
    {"--estimate-method", "estimate_method", "NAME",
     "estimation method of requests that name none: ecologits (default) or discern"},
};

#define N_FLAGS (sizeof flags / sizeof flags[0])

void dsc_server_config_usage(FILE *out) {
    fprintf(out, "usage: discernd [flags]\n\n"
                 "The discern policy server: MessagePack-RPC over TCP and a Unix socket.\n"
                 "Flags override the config file; every config key is documented in the\n"
                 "shipped discernd.conf.\n\n");
    for (size_t i = 0; i < N_FLAGS; i++) {
        char left[48];
        snprintf(left, sizeof left, "%s %s", flags[i].flag, flags[i].arg);
        fprintf(out, "  %-24s %s\n", left, flags[i].help);
    }
    fprintf(out, "  %-24s %s\n\n", "--help", "show this help");
    fprintf(out,
            "Signals: SIGTERM/SIGINT drain and exit 0, SIGHUP reloads policies and catalogue.\n");
}

static const flag *find_flag(const char *arg, const char **inline_value) {
    for (size_t i = 0; i < N_FLAGS; i++) {
        size_t n = strlen(flags[i].flag);
        if (strncmp(arg, flags[i].flag, n) != 0) continue;
        if (arg[n] == '\0') return *inline_value = NULL, &flags[i];
        if (arg[n] == '=') return *inline_value = arg + n + 1, &flags[i];
    }
    return NULL;
}

/* Walk argv; when only_config, apply --config alone, else everything but --config. */
static dsc_status apply_flags(dsc_server_config *cfg, int argc, char **argv, bool only_config,
                              bool *help, dsc_error *err) {
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            *help = true;
            continue;
        }
        const char *value;
        const flag *f = find_flag(argv[i], &value);
        if (!f)
            return dsc_error_set(err, DSC_BAD_REQUEST, "unknown flag '%s' (see --help)", argv[i]);
        if (!value) {
            if (i + 1 >= argc)
                return dsc_error_set(err, DSC_BAD_REQUEST, "%s needs a value", f->flag);
            value = argv[++i];
        }
        bool is_config = f->key == NULL;
        if (is_config != only_config) continue;
        dsc_status st = is_config ? dsc_server_config_load(cfg, value, err)
                                  : dsc_server_config_set(cfg, f->key, value, err);
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
