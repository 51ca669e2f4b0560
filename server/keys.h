/*
 * keys.h - who is asking: API keys with a role and a scope, and the journal of what
 * keys changed.
 *
 * A key is created by an admin or a manager (key.create), authenticates a connection
 * (auth) or an HTTP request (Bearer), and is revoked (key.revoke). Its token (32
 * bytes from the OS, "dsk_" + 64 hex digits) is returned once; only its SHA-256 is
 * kept, in memory and in the `keys` table of the store file, so keys survive a
 * restart. Every revocation bumps a generation number that connections compare on
 * each call: a revoked key stops working at its next call.
 *
 *   dsc__keys *k = dsc__keys_open("var/discern.db", &err);   "" = memory only
 *   dsc__keys_create(k, &spec, "admin", &info, token, &err);
 *   dsc__keys_auth(k, token, now, &info);                  DSC_UNAUTHORIZED if not valid
 *   dsc__keys_journal(k, "k_1a2b...", "budget.set", "team:*", "gco2e month 50");
 *   dsc__keys_free(k);
 *
 * Thread-safe (one mutex); auth and create are rare, per-call checks read one atomic.
 */
#ifndef DISCERN_SERVER_KEYS_H
#define DISCERN_SERVER_KEYS_H

#include "scope.h"

#include "discern/status.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* XX(name, wire name): the roles, least to most powerful. */
#define DSC__ROLE_MAP(XX)                                                                          \
    XX(READER, "reader")                                                                           \
    XX(CLIENT, "client")                                                                           \
    XX(MANAGER, "manager")                                                                         \
    XX(ADMIN, "admin")

typedef enum dsc__role {
    DSC__ROLE_NONE = 0, /* an unauthenticated connection */
#define DSC__ROLE_ENUM(name, wire) DSC__ROLE_##name,
    DSC__ROLE_MAP(DSC__ROLE_ENUM)
#undef DSC__ROLE_ENUM
} dsc__role;

#define DSC__KEY_ID_MAX 24 /* "k_" + 16 hex + NUL */
#define DSC__TOKEN_MAX 72  /* "dsk_" + 64 hex + NUL */
#define DSC__KEY_LABEL_MAX 64
#define DSC__KEYS_MAX 10000 /* keys kept (revoked ones included) */

typedef struct dsc__key_info {
    char id[DSC__KEY_ID_MAX];
    dsc__role role;
    dsc__scope scope;
    char label[DSC__KEY_LABEL_MAX];
    int64_t created_at, expires_at, revoked_at; /* unix seconds; 0 = never / not revoked */
    char created_by[DSC__KEY_ID_MAX];           /* a key id, or "admin" */
} dsc__key_info;

typedef struct dsc__keys dsc__keys;

/* Open the key table of the store at path (created when missing; "" = memory only)
 * and load every key. NULL with err (DSC_STORE_UNAVAILABLE naming the file). */
dsc__keys *dsc__keys_open(const char *path, dsc_error *err);
/* Close; NULL is a no-op. */
void dsc__keys_free(dsc__keys *k);

/* The wire name of a role ("client"; "none" for DSC__ROLE_NONE). */
const char *dsc__role_name(dsc__role r);
/* Parse a role's wire name; DSC_BAD_REQUEST naming field 'role'. */
dsc_status dsc__role_parse(const char *name, dsc__role *out, dsc_error *err);

/* Create a key like spec (role, scope, label, expires_at) made by key id `by`;
 * persisted and journaled before it returns. Fills out and token (shown once).
 * DSC_TOO_LARGE past DSC__KEYS_MAX, DSC_STORE_UNAVAILABLE, DSC_IO (no randomness). */
dsc_status dsc__keys_create(dsc__keys *k, const dsc__key_info *spec, const char *by,
                            dsc__key_info *out, char token[DSC__TOKEN_MAX], dsc_error *err);
/* The valid (not revoked, not expired at now) key whose token this is, into out.
 * DSC_UNAUTHORIZED otherwise. Compares hashes, never tokens. */
dsc_status dsc__keys_auth(dsc__keys *k, const char *token, int64_t now, dsc__key_info *out);
/* The key with this id, whatever its state; DSC_BAD_REQUEST naming field 'key_id'
 * when there is none. */
dsc_status dsc__keys_get(dsc__keys *k, const char *id, dsc__key_info *out, dsc_error *err);
/* Whether a key is valid at now (not revoked, not expired). */
bool dsc__key_valid(const dsc__key_info *info, int64_t now);
/* Revoke a key (persisted, journaled with `by`); revoking twice is a no-op. */
dsc_status dsc__keys_revoke(dsc__keys *k, const char *id, const char *by, int64_t now,
                            dsc_error *err);
/* Copy up to max keys from the offset-th, in creation order; returns how many. */
size_t dsc__keys_list(dsc__keys *k, size_t offset, dsc__key_info *out, size_t max);
/* Bumped by every revocation: a connection re-checks its key when it moved. */
uint64_t dsc__keys_generation(dsc__keys *k);
/* Journal a change made by key `by` (action "budget.set", target, detail): one row
 * of the admin_journal table. DSC_STORE_UNAVAILABLE when it cannot be written. */
dsc_status dsc__keys_journal(dsc__keys *k, const char *by, const char *action, const char *target,
                             const char *detail, dsc_error *err);

/* A shared key store (Redis): the key with this id as text (JSON: its hash, never
 * a token), malloc'd; NULL when there is none or out of memory. */
char *dsc__keys_entry_text(dsc__keys *k, const char *id);
/* Add a key read from a shared store, or take its revocation (bumping the
 * generation); DSC_STORE_UNAVAILABLE for malformed text, DSC_TOO_LARGE, DSC_NOMEM. */
dsc_status dsc__keys_entry_put(dsc__keys *k, const char *text, dsc_error *err);

#endif
