/*
 * scope.c - scopes of keys (see scope.h): parse, fill a request's subject, and decide
 * which budgets and counters a key may see or change.
 *
 * Budget selectors and counter names share one shape ("org:acme/team:*", "team:infra",
 * "*"), read here level by level; a level the selector does not name matches any
 * value, so a selector is inside a scope only when it fixes every level the scope
 * fixes to the same value.
 */
#include "scope.h"

#include <stdio.h>
#include <string.h>

enum { L_ORG, L_TEAM, L_USER, L_KEY, L_COUNT };

static const char *const level_names[L_COUNT] = {"org", "team", "user", "key"};

static char *level(dsc__scope *sc, int l) {
    return l == L_ORG ? sc->org : l == L_TEAM ? sc->team : sc->user;
}

static const char *clevel(const dsc__scope *sc, int l) {
    return l == L_ORG ? sc->org : l == L_TEAM ? sc->team : sc->user;
}

static int level_of(const char *name, size_t n) {
    for (int l = 0; l < L_COUNT; l++)
        if (strlen(level_names[l]) == n && memcmp(level_names[l], name, n) == 0) return l;
    return -1;
}

/* A subject name: 1..63 bytes, none of ':', '/', '*', space or control. */
static bool name_ok(const char *v, size_t n) {
    if (n == 0 || n >= DSC__SCOPE_FIELD_MAX) return false;
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)v[i];
        if (ch <= ' ' || ch == ':' || ch == '/' || ch == '*' || ch == 0x7f) return false;
    }
    return true;
}

dsc_status dsc__scope_parse(const char *text, dsc__scope *sc, dsc_error *err) {
    memset(sc, 0, sizeof *sc);
    if (strcmp(text, "*") == 0) return DSC_OK;
    if (!text[0]) return dsc_error_set(err, DSC_BAD_REQUEST, "field 'scope' is empty");
    int last = -1;
    for (const char *p = text; *p;) {
        const char *colon = strchr(p, ':'), *slash = strchr(p, '/');
        if (!slash) slash = p + strlen(p);
        int l = colon && colon < slash ? level_of(p, (size_t)(colon - p)) : -1;
        if (l < 0 || l == L_KEY || l <= last || !name_ok(colon + 1, (size_t)(slash - colon - 1)))
            return dsc_error_set(err, DSC_BAD_REQUEST,
                                 "field 'scope': '%.64s' is not a scope (\"*\", \"org:NAME\", "
                                 "\"org:NAME/team:NAME\", \"org:NAME/team:NAME/user:NAME\")",
                                 text);
        memcpy(level(sc, l), colon + 1, (size_t)(slash - colon - 1));
        last = l;
        p = *slash ? slash + 1 : slash;
        if (*slash && !*p) return dsc_error_set(err, DSC_BAD_REQUEST, "field 'scope': ends in '/'");
    }
    return DSC_OK;
}

void dsc__scope_format(const dsc__scope *sc, char *out, size_t cap) {
    size_t n = 0;
    out[0] = '\0';
    for (int l = L_ORG; l <= L_USER; l++) {
        const char *v = clevel(sc, l);
        if (!v[0]) continue;
        int w =
            snprintf(out + n, n < cap ? cap - n : 0, "%s%s:%s", n ? "/" : "", level_names[l], v);
        if (w > 0) n += (size_t)w;
    }
    if (!out[0]) snprintf(out, cap, "*");
}

bool dsc__scope_is_all(const dsc__scope *sc) {
    return !sc->org[0] && !sc->team[0] && !sc->user[0];
}

bool dsc__scope_within(const dsc__scope *inner, const dsc__scope *outer) {
    for (int l = L_ORG; l <= L_USER; l++) {
        const char *o = clevel(outer, l);
        if (o[0] && strcmp(o, clevel(inner, l)) != 0) return false;
    }
    return true;
}

dsc_status dsc__scope_apply(const dsc__scope *sc, char *org, char *team, char *user, size_t cap,
                            dsc_error *err) {
    char *field[3] = {org, team, user};
    for (int l = L_ORG; l <= L_USER; l++) {
        const char *want = clevel(sc, l);
        if (!want[0]) continue;
        if (!field[l][0]) {
            snprintf(field[l], cap, "%s", want);
        } else if (strcmp(field[l], want) != 0) {
            char scope[DSC__SCOPE_TEXT_MAX];
            dsc__scope_format(sc, scope, sizeof scope);
            return dsc_error_set(err, DSC_FORBIDDEN,
                                 "field 'subject.%s': '%.63s' is outside this key's scope '%s'",
                                 level_names[l], field[l], scope);
        }
    }
    return DSC_OK;
}

bool dsc__scope_contains(const dsc__scope *sc, const dsc_subject *s) {
    const char *field[3] = {s->org, s->team, s->user};
    for (int l = L_ORG; l <= L_USER; l++) {
        const char *want = clevel(sc, l);
        if (want[0] && (!field[l] || strcmp(field[l], want) != 0)) return false;
    }
    return true;
}

/* Split a selector into its levels: "" = not named, "*" = any present value. False
 * when it is not a selector. */
static bool selector_levels(const char *sel, char out[L_COUNT][DSC__SCOPE_FIELD_MAX]) {
    memset(out, 0, sizeof(char[L_COUNT][DSC__SCOPE_FIELD_MAX]));
    if (strcmp(sel, "*") == 0) return true;
    for (const char *p = sel; *p;) {
        const char *colon = strchr(p, ':'), *slash = strchr(p, '/');
        if (!slash) slash = p + strlen(p);
        if (!colon || colon > slash) return false;
        int l = level_of(p, (size_t)(colon - p));
        size_t n = (size_t)(slash - colon - 1);
        if (l < 0 || n == 0 || n >= DSC__SCOPE_FIELD_MAX) return false;
        memcpy(out[l], colon + 1, n);
        out[l][n] = '\0';
        p = *slash ? slash + 1 : slash;
    }
    return true;
}

bool dsc__scope_covers_selector(const dsc__scope *sc, const char *selector) {
    char lv[L_COUNT][DSC__SCOPE_FIELD_MAX];
    if (!selector_levels(selector, lv)) return false;
    for (int l = L_ORG; l <= L_USER; l++) {
        const char *want = clevel(sc, l);
        if (want[0] && strcmp(lv[l], want) != 0) return false;
    }
    return true;
}

bool dsc__scope_meets_selector(const dsc__scope *sc, const char *selector) {
    char lv[L_COUNT][DSC__SCOPE_FIELD_MAX];
    if (!selector_levels(selector, lv)) return false;
    for (int l = L_ORG; l <= L_USER; l++) {
        const char *want = clevel(sc, l);
        if (want[0] && lv[l][0] && strcmp(lv[l], "*") != 0 && strcmp(lv[l], want) != 0)
            return false;
    }
    return true;
}
