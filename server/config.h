/*
 * config.h - discernd's configuration: defaults, the config file, command-line flags.
 *
 * The file is a list of `key = value` lines (`#` starts a comment; strings in double
 * quotes, integers bare); server/discernd.conf is the commented default. Every key
 * is also a flag (`max_connections` is `--max-connections`), from one table, so the
 * two cannot drift. Precedence: flags, then the DISCERN_ADMIN_TOKEN environment
 * variable (for the admin token), then the file, then the defaults. Every value is
 * checked here (addresses, timezone, ranges), so a bad one is reported with its file,
 * line and key before anything starts.
 *
 *   dsc_server_config cfg;
 *   dsc_server_config_default(&cfg);
 *   if (dsc_server_config_from_args(&cfg, argc, argv, &err) != DSC_OK) ...
 */
#ifndef DISCERN_SERVER_CONFIG_H
#define DISCERN_SERVER_CONFIG_H

#include "rpc.h"

#include "discern/estimate.h"
#include "discern/status.h"

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/socket.h>
#include <sys/types.h>

#define DSC_CONFIG_STR_MAX 512
#define DSC_CONFIG_UIDS_MAX 16

typedef enum dsc_log_level {
    DSC_LOG_DEBUG = 0,
    DSC_LOG_INFO,
    DSC_LOG_WARN,
    DSC_LOG_ERROR,
} dsc_log_level;

typedef enum dsc_failure_mode {
    DSC_FAIL_CLOSED = 0, /* store unavailable: refuse with store_unavailable */
    DSC_FAIL_OPEN,       /* store unavailable: allow, flagged unenforced, counted */
} dsc_failure_mode;

typedef struct dsc_server_config {
    char listen[DSC_CONFIG_STR_MAX];    /* "host:port"; "" = no TCP listener */
    char unix_path[DSC_CONFIG_STR_MAX]; /* "" = no Unix listener */
    char http[DSC_CONFIG_STR_MAX];      /* "host:port"; "" = no HTTP listener */
    char store[DSC_CONFIG_STR_MAX];     /* SQLite file or Redis URL; "" = memory only */
    char redis_prefix[64];              /* a Redis store's keys: "{<prefix>}..." */
    int64_t redis_state_max_age_ms;     /* a check's budget states may be this old (Redis) */
    char durability[16];                /* "full", "batch", "off" */
    char policies[DSC_CONFIG_STR_MAX];  /* policy folder */
    char data[DSC_CONFIG_STR_MAX];      /* catalogue folder; "" = the installed one */
    char www[DSC_CONFIG_STR_MAX];       /* the console's files; "" = the installed ones */
    char admin_token[DSC_CONFIG_STR_MAX];
    char port_file[DSC_CONFIG_STR_MAX]; /* where to write the bound ports; "" = none */
    char timezone[32];                  /* calendar windows */
    int workers;                        /* 0 = one per core */
    dsc_log_level log_level;
    dsc_failure_mode failure_mode;
    int64_t hold_ttl_s;
    dsc_method estimate_method; /* for requests that name none (default ecologits) */
    dsc_rpc_limits limits;
    uint32_t max_inflight;
    uint32_t max_connections;             /* 0 = what the descriptor limit allows */
    uint32_t max_connections_per_address; /* TCP connections from one IP; 0 = no cap */
    uint32_t unix_reserved_connections;   /* Unix peers may exceed max_connections by this */
    uint32_t idle_timeout_s;              /* since the last complete message */
    uint32_t frame_timeout_s;             /* a message must complete within this */
    int64_t journal_retention_days;       /* drop raw events older, once rolled up (0 = keep) */
    int64_t store_free_warn_bytes;        /* warn below this free on the store's disk */
    uint32_t policy_time_budget_us;       /* per policy evaluation */
    uint32_t policy_memory_mb;            /* cap of each worker's Lua state */
    uid_t unix_admin_uids[DSC_CONFIG_UIDS_MAX];
    int n_unix_admin_uids;
    uint32_t unix_mode;       /* permission bits of the Unix socket (0660) */
    bool require_auth;        /* TCP/HTTP callers need a key for more than the basics */
    bool allow_insecure_bind; /* serve a non-loopback address with require_auth off */
} dsc_server_config;

/* Fill cfg with the documented defaults (unix_admin_uids = the current uid). */
void dsc_server_config_default(dsc_server_config *cfg);
/* Read a config file over cfg. DSC_IO when it cannot be read, DSC_BAD_REQUEST naming
 * the line, key and value otherwise. */
dsc_status dsc_server_config_load(dsc_server_config *cfg, const char *path, dsc_error *err);
/* Set one key from its text value (as in the file). DSC_BAD_REQUEST naming it. */
dsc_status dsc_server_config_set(dsc_server_config *cfg, const char *key, const char *value,
                                 dsc_error *err);
/* Apply argv: --config first, then DISCERN_ADMIN_TOKEN, then every other flag. Sets
 * *help when --help was given. DSC_BAD_REQUEST on a bad flag, DSC_IO on a bad file. */
dsc_status dsc_server_config_from_args(dsc_server_config *cfg, int argc, char **argv, bool *help,
                                       dsc_error *err);
/* Refuse what the values allow together but is unsafe: a TCP or HTTP listener on a
 * non-loopback address while require_auth is false, unless allow_insecure_bind.
 * DSC_BAD_REQUEST naming the key and saying why. */
dsc_status dsc_server_config_check(const dsc_server_config *cfg, dsc_error *err);
/* Print the --help text: every flag, its config key and its default. */
void dsc_server_config_usage(FILE *out);
/* Parse "host:port" / "[v6]:port" (port 0 = any free port) for config key;
 * DSC_BAD_REQUEST naming it. */
dsc_status dsc__parse_hostport(const char *key, const char *text, struct sockaddr_storage *ss,
                               socklen_t *len, dsc_error *err);
/* The name of a log level ("info"). */
const char *dsc_log_level_name(dsc_log_level level);

#endif
