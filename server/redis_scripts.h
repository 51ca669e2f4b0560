/*
 * redis_scripts.h - the ledger's server-side scripts for a Redis store.
 *
 * The texts are server/redis/common.lua followed by server/redis/<name>.lua,
 * embedded at build time (server/redis/embed.cmake) so a discernd never runs
 * scripts from a different version than its own. Each script's contract (KEYS,
 * ARGV, answers) is the comment at the top of its file.
 *
 *   const char *text = dsc__redis_script_texts[DSC_REDIS_RESERVE];
 */
#ifndef DISCERN_SERVER_REDIS_SCRIPTS_H
#define DISCERN_SERVER_REDIS_SCRIPTS_H

/* XX(enum name, file name) in the order of embed.cmake's list. */
#define DSC_REDIS_SCRIPT_MAP(XX)                                                                   \
    XX(RESERVE, "reserve")                                                                         \
    XX(SETTLE, "settle")                                                                           \
    XX(CANCEL, "cancel")                                                                           \
    XX(SWEEP, "sweep")                                                                             \
    XX(BUDGET, "budget")                                                                           \
    XX(STATE, "state")                                                                             \
    XX(RECORD, "record")                                                                           \
    XX(HOLD, "hold")                                                                               \
    XX(DEFS, "defs")                                                                               \
    XX(KEY, "key")                                                                                 \
    XX(KEYRING, "keyring")                                                                         \
    XX(JOURNAL, "journal")                                                                         \
    XX(ROLLUPS, "rollups")                                                                         \
    XX(ADMIN, "admin")

typedef enum dsc__redis_script {
#define DSC_REDIS_SCRIPT_ENUM(name, file) DSC_REDIS_##name,
    DSC_REDIS_SCRIPT_MAP(DSC_REDIS_SCRIPT_ENUM)
#undef DSC_REDIS_SCRIPT_ENUM
        DSC_REDIS_SCRIPT_COUNT
} dsc__redis_script;

/* The full text of each script, NUL-terminated. */
extern const char *const dsc__redis_script_texts[DSC_REDIS_SCRIPT_COUNT];

#endif
