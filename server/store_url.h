/*
 * store_url.h - what the `store` config key names: a SQLite file or a Redis server.
 *
 *   ""                                    memory only (nothing persists)
 *   var/discern.db                        a SQLite file (any text that is not a URL)
 *   redis://[[user]:password@]HOST[:PORT][/DB]
 *                                         Redis over TCP (port 6379, database 0 by
 *                                         default; HOST an IPv4 address, [IPv6] or a
 *                                         name resolved once at start)
 *   redis+unix:///path/redis.sock[?db=N]  Redis over a Unix socket
 *
 * user and password are percent-decoded (a password holding '@' or ':' is written
 * %40, %3A). A URL without a password takes DISCERN_REDIS_PASSWORD (see
 * dsc__store_url_env), which keeps the secret out of config files and process lists.
 *
 *   dsc__store_url u;
 *   if (dsc__store_url_parse("store", text, &u, &err) != DSC_OK) ... err names the key
 */
#ifndef DISCERN_SERVER_STORE_URL_H
#define DISCERN_SERVER_STORE_URL_H

#include "discern/status.h"

#include <stdbool.h>

#define DSC_STORE_URL_MAX 512

typedef enum dsc__store_kind {
    DSC_STORE_MEMORY = 0,
    DSC_STORE_SQLITE,
    DSC_STORE_REDIS_TCP,
    DSC_STORE_REDIS_UNIX,
} dsc__store_kind;

typedef struct dsc__store_url {
    dsc__store_kind kind;
    char path[DSC_STORE_URL_MAX]; /* SQLite file or Redis Unix socket */
    char host[256];               /* Redis TCP: without the brackets of an IPv6 address */
    int port;                     /* Redis TCP */
    int db;                       /* Redis: SELECT db (0 = none sent) */
    char user[128];               /* Redis ACL user ("" = the default user) */
    char password[256];           /* "" = no AUTH */
} dsc__store_url;

/* The largest database number accepted (Redis's own default is 16 databases). */
#define DSC_STORE_URL_DB_MAX 65535

/* Parse text as the value of config key `key`. DSC_BAD_REQUEST naming the key and
 * the part that is wrong (never echoing a password). */
dsc_status dsc__store_url_parse(const char *key, const char *text, dsc__store_url *out,
                                dsc_error *err);
/* Whether text names a Redis store (starts with redis:// or redis+unix://). */
bool dsc__store_url_is_redis(const char *text);
/* Fill a Redis URL's empty password from password_env (the value of
 * DISCERN_REDIS_PASSWORD; NULL or "" = none). DSC_BAD_REQUEST when too long. */
dsc_status dsc__store_url_env(dsc__store_url *u, const char *password_env, dsc_error *err);
/* The URL without its password, for logs ("redis://127.0.0.1:6379/2"). */
void dsc__store_url_describe(const dsc__store_url *u, char *out, size_t cap);

#endif
