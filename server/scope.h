/*
 * scope.h - what part of the subject space a key may act on.
 *
 * A scope is a subject selector: "*" (everything), "org:acme", "org:acme/team:infra",
 * "org:acme/team:infra/user:ana" (levels in that order, each optional, none "*").
 * A key's scope fills the subject parts a request leaves out, refuses a subject that
 * names another value at a level the scope fixes (DSC_FORBIDDEN), and filters every
 * read (budget selectors, counters, decisions).
 *
 *   dsc__scope sc;
 *   dsc__scope_parse("org:acme/team:infra", &sc, &err);
 *   dsc__scope_apply(&sc, &subject_strings, &err);   fill, or DSC_FORBIDDEN
 *   dsc__scope_covers_selector(&sc, "org:acme/team:infra")  a budget only inside it
 */
#ifndef DISCERN_SERVER_SCOPE_H
#define DISCERN_SERVER_SCOPE_H

#include "discern/ledger.h"
#include "discern/status.h"

#include <stdbool.h>
#include <stddef.h>

#define DSC__SCOPE_FIELD_MAX 64
#define DSC__SCOPE_TEXT_MAX 200

/* A parsed scope: "" at a level = any value. */
typedef struct dsc__scope {
    char org[DSC__SCOPE_FIELD_MAX], team[DSC__SCOPE_FIELD_MAX], user[DSC__SCOPE_FIELD_MAX];
} dsc__scope;

/* Parse text into sc. DSC_BAD_REQUEST naming field 'scope' when it is not a scope. */
dsc_status dsc__scope_parse(const char *text, dsc__scope *sc, dsc_error *err);
/* The canonical text of sc ("*" when it fixes nothing) into out. */
void dsc__scope_format(const dsc__scope *sc, char *out, size_t cap);
/* Whether sc fixes no level (the whole subject space). */
bool dsc__scope_is_all(const dsc__scope *sc);
/* Whether every subject inside inner is inside outer. */
bool dsc__scope_within(const dsc__scope *inner, const dsc__scope *outer);
/* Fill the subject parts org/team/user (buffers of cap bytes) that are empty from sc;
 * DSC_FORBIDDEN naming the field when one names another value than sc fixes. */
dsc_status dsc__scope_apply(const dsc__scope *sc, char *org, char *team, char *user, size_t cap,
                            dsc_error *err);
/* Whether a subject (NULL or "" = not given) is inside sc, unchanged. */
bool dsc__scope_contains(const dsc__scope *sc, const dsc_subject *s);
/* Whether every subject a budget selector (or counter name) matches is inside sc. */
bool dsc__scope_covers_selector(const dsc__scope *sc, const char *selector);
/* Whether a budget selector can match some subject inside sc (it names no other
 * value at a level sc fixes): the budgets that may apply to the scope's subjects. */
bool dsc__scope_meets_selector(const dsc__scope *sc, const char *selector);

#endif
