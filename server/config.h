/*
 * config.h - discernd's configuration: defaults, the config file, command-line flags.
 *
 * The file is a list of `key = value` lines (`#` starts a comment; strings in double
 * quotes, integers bare, booleans true/false); server/discernd.conf is the commented
 * default. Precedence: flags, then the DISCERN_ADMIN_TOKEN environment variable (for
 * the admin token), then the file, then the defaults.
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
    char store[DSC_CONFIG_STR_MAX];     /* SQLite file; "" = memory only */
    char durability[16];                /* "full", "batch", "off" */
    char policies[DSC_CONFIG_STR_MAX];  /* policy folder */
    char data[DSC_CONFIG_STR_MAX];      /* catalogue folder; "" = the installed one */
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
    uint32_t max_connections;
    uint32_t idle_timeout_s;
    uid_t unix_admin_uids[DSC_CONFIG_UIDS_MAX];
    int n_unix_admin_uids;
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
/* Print the --help text. */
void dsc_server_config_usage(FILE *out);
/* The name of a log level ("info"). */
const char *dsc_log_level_name(dsc_log_level level);

#endif
