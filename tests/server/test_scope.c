/*
 * test_scope.c - key scopes: parsing, filling a subject, and which budget selectors
 * lie inside or can meet a scope.
 */
#include "scope.h"

#include <criterion/criterion.h>
#include <string.h>

static dsc__scope parse(const char *text) {
    dsc__scope sc;
    dsc_error err;
    cr_assert_eq(dsc__scope_parse(text, &sc, &err), DSC_OK, "%s: %s", text, err.message);
    return sc;
}

Test(scope, parses_every_documented_shape_and_formats_it_back) {
    const char *ok[] = {"*", "org:acme", "org:acme/team:infra", "org:acme/team:infra/user:ana",
                        "team:infra"};
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
        dsc__scope sc = parse(ok[i]);
        char out[DSC__SCOPE_TEXT_MAX];
        dsc__scope_format(&sc, out, sizeof out);
        cr_assert_str_eq(out, ok[i]);
    }
}

Test(scope, refuses_what_is_not_a_scope_naming_the_field) {
    const char *bad[] = {"",         "org:",        "org:*",          "team:a/org:b",
                         "org:a/",   "key:k1",      "org:a b",        "nope:x",
                         "org:a//x", "org:a/org:b", "user:ana/team:x"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        dsc__scope sc;
        dsc_error err;
        cr_assert_eq(dsc__scope_parse(bad[i], &sc, &err), DSC_BAD_REQUEST, "'%s' accepted", bad[i]);
        cr_assert(strstr(err.message, "scope"), "%s", err.message);
    }
}

Test(scope, fills_the_parts_a_subject_omits_and_forbids_another_value) {
    dsc__scope sc = parse("org:acme/team:infra");
    char org[64] = "", team[64] = "", user[64] = "ana";
    dsc_error err;
    cr_assert_eq(dsc__scope_apply(&sc, org, team, user, 64, &err), DSC_OK);
    cr_assert_str_eq(org, "acme");
    cr_assert_str_eq(team, "infra");
    cr_assert_str_eq(user, "ana");
    char org2[64] = "acme", team2[64] = "payments", user2[64] = "";
    cr_assert_eq(dsc__scope_apply(&sc, org2, team2, user2, 64, &err), DSC_FORBIDDEN);
    cr_assert(strstr(err.message, "subject.team"), "%s", err.message);
    dsc_subject inside = {"acme", "infra", "bob", NULL}, outside = {"acme", NULL, NULL, NULL};
    cr_assert(dsc__scope_contains(&sc, &inside));
    cr_assert_not(dsc__scope_contains(&sc, &outside));
}

Test(scope, a_selector_is_inside_only_when_it_fixes_every_level_the_scope_fixes) {
    dsc__scope acme = parse("org:acme"), all = parse("*");
    cr_assert(dsc__scope_covers_selector(&acme, "org:acme"));
    cr_assert(dsc__scope_covers_selector(&acme, "org:acme/team:*"));
    cr_assert_not(dsc__scope_covers_selector(&acme, "team:*"));
    cr_assert_not(dsc__scope_covers_selector(&acme, "org:*"));
    cr_assert_not(dsc__scope_covers_selector(&acme, "*"));
    cr_assert_not(dsc__scope_covers_selector(&acme, "org:other"));
    cr_assert(dsc__scope_covers_selector(&all, "*"));
    cr_assert(dsc__scope_covers_selector(&all, "team:*"));
    cr_assert_not(dsc__scope_covers_selector(&all, "not a selector"));
}

Test(scope, a_selector_meets_a_scope_unless_it_names_another_value) {
    dsc__scope infra = parse("org:acme/team:infra");
    cr_assert(dsc__scope_meets_selector(&infra, "*"));
    cr_assert(dsc__scope_meets_selector(&infra, "team:*"));
    cr_assert(dsc__scope_meets_selector(&infra, "org:acme"));
    cr_assert(dsc__scope_meets_selector(&infra, "org:acme/team:infra"));
    cr_assert_not(dsc__scope_meets_selector(&infra, "org:acme/team:payments"));
    cr_assert_not(dsc__scope_meets_selector(&infra, "org:other"));
    cr_assert_not(dsc__scope_meets_selector(&infra, "team:payments"));
}

Test(scope, within_orders_scopes_by_what_they_cover) {
    dsc__scope all = parse("*"), acme = parse("org:acme"), infra = parse("org:acme/team:infra");
    cr_assert(dsc__scope_within(&infra, &acme));
    cr_assert(dsc__scope_within(&acme, &all));
    cr_assert(dsc__scope_within(&acme, &acme));
    cr_assert_not(dsc__scope_within(&acme, &infra));
    cr_assert_not(dsc__scope_within(&all, &acme));
}
