/*
 * policy_lint.c - `discern policy check`: compile a policy folder and lint its
 * sources without running them.
 *
 * The compile (dsc_policy_set_load) catches syntax errors and bad policy tables; the
 * lint reads the token stream of each policy for mistakes that would only show at
 * run time, on the request that takes the wrong branch:
 *   - ctx.<field> and req.<field> that do not exist (a typo reads nil);
 *   - globals that are neither the sandbox's nor defined at the file's top level
 *     (a typo, or os/io/print, which the sandbox does not have);
 *   - assignments to globals inside functions (they raise: policies keep no state
 *     between requests).
 * It is a scanner, not a parser: names declared local anywhere in the file count as
 * local everywhere, so it misses some mistakes but does not invent any.
 */
#include "policy_internal.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NAME_MAX_LEN 64
#define MAX_NAMES 512

typedef enum tok_kind { T_EOF, T_NAME, T_OTHER } tok_kind;

typedef struct token {
    tok_kind kind;
    char text[NAME_MAX_LEN]; /* the name, or the punctuation ("=", "==", ".", ...) */
    int line;
} token;

typedef struct lexer {
    const char *p, *end;
    int line;
} lexer;

typedef struct name_set {
    int n;
    char names[MAX_NAMES][NAME_MAX_LEN];
} name_set;

typedef struct linter {
    const dsc__policy_file *f;
    void (*on_finding)(void *ud, const char *line);
    void *ud;
    int findings;
    name_set locals, globals; /* globals: defined at the file's top level */
} linter;

static const char *const sandbox_globals[] = {
    "assert",   "error",    "getmetatable", "ipairs", "next",     "pairs",    "pcall",
    "rawequal", "rawget",   "rawlen",       "select", "tonumber", "tostring", "type",
    "xpcall",   "_VERSION", "string",       "table",  "math",     "utf8",     "setmetatable",
    "allow",    "throttle", "refuse",       "utc",    "_ENV",     "_G",       NULL,
};

static const char *const ctx_fields[] = {
    "estimate", "budget", "budgets",       "grid", "grid_forecast", "models", "model",
    "now",      "log",    "purpose_class", NULL,
};

static const char *const req_fields[] = {
    "subject", "provider",      "model", "input_tokens", "output_tokens",
    "purpose", "purpose_class", "zone",  "tags",         NULL,
};

static const char *const keywords[] = {
    "and",      "break",  "do",   "else", "elseif", "end",   "false", "for",
    "function", "goto",   "if",   "in",   "local",  "nil",   "not",   "or",
    "repeat",   "return", "then", "true", "until",  "while", NULL,
};

static bool in_list(const char *const *list, const char *s) {
    for (; *list; list++)
        if (strcmp(*list, s) == 0) return true;
    return false;
}

static bool in_set(const name_set *set, const char *s) {
    for (int i = 0; i < set->n; i++)
        if (strcmp(set->names[i], s) == 0) return true;
    return false;
}

static void add_name(name_set *set, const char *s) {
    if (set->n < MAX_NAMES && !in_set(set, s))
        snprintf(set->names[set->n++], NAME_MAX_LEN, "%s", s);
}

/* --- lexer --- */

/* Length of the opening of a long bracket at p ("[[" = 0, "[==[" = 2), or -1. */
static int long_bracket(const char *p, const char *end) {
    if (p >= end || *p != '[') return -1;
    int level = 0;
    for (p++; p < end && *p == '='; p++)
        level++;
    return p < end && *p == '[' ? level : -1;
}

static void skip_long(lexer *lx, int level) {
    lx->p += level + 2;
    for (; lx->p < lx->end; lx->p++) {
        if (*lx->p == '\n') lx->line++;
        if (*lx->p != ']') continue;
        const char *q = lx->p + 1;
        int k = 0;
        while (q < lx->end && *q == '=')
            q++, k++;
        if (k == level && q < lx->end && *q == ']') {
            lx->p = q + 1;
            return;
        }
    }
}

static void skip_space_and_comments(lexer *lx) {
    while (lx->p < lx->end) {
        if (*lx->p == '\n')
            lx->line++, lx->p++;
        else if (isspace((unsigned char)*lx->p))
            lx->p++;
        else if (lx->end - lx->p >= 2 && lx->p[0] == '-' && lx->p[1] == '-') {
            lx->p += 2;
            int level = long_bracket(lx->p, lx->end);
            if (level >= 0)
                skip_long(lx, level);
            else
                while (lx->p < lx->end && *lx->p != '\n')
                    lx->p++;
        } else
            break;
    }
}

static void skip_string(lexer *lx) {
    char q = *lx->p++;
    while (lx->p < lx->end && *lx->p != q) {
        if (*lx->p == '\\' && lx->p + 1 < lx->end) {
            if (lx->p[1] == '\n') lx->line++;
            lx->p++;
        } else if (*lx->p == '\n') {
            lx->line++;
        }
        lx->p++;
    }
    if (lx->p < lx->end) lx->p++;
}

static token next_token(lexer *lx) {
    token t = {T_OTHER, "", 0};
    skip_space_and_comments(lx);
    t.line = lx->line;
    if (lx->p >= lx->end) {
        t.kind = T_EOF;
        return t;
    }
    const char *s = lx->p;
    if (isalpha((unsigned char)*s) || *s == '_') {
        while (lx->p < lx->end && (isalnum((unsigned char)*lx->p) || *lx->p == '_'))
            lx->p++;
        size_t n = (size_t)(lx->p - s) < NAME_MAX_LEN - 1 ? (size_t)(lx->p - s) : NAME_MAX_LEN - 1;
        memcpy(t.text, s, n);
        t.text[n] = '\0';
        t.kind = T_NAME;
    } else if (*s == '"' || *s == '\'') {
        skip_string(lx);
        strcpy(t.text, "\"");
    } else if (long_bracket(s, lx->end) >= 0) {
        skip_long(lx, long_bracket(s, lx->end));
        strcpy(t.text, "\"");
    } else if (isdigit((unsigned char)*s) ||
               (*s == '.' && lx->p + 1 < lx->end && isdigit((unsigned char)s[1]))) {
        while (lx->p < lx->end &&
               (isalnum((unsigned char)*lx->p) || *lx->p == '.' ||
                ((*lx->p == '-' || *lx->p == '+') &&
                 (lx->p[-1] == 'e' || lx->p[-1] == 'E' || lx->p[-1] == 'p' || lx->p[-1] == 'P'))))
            lx->p++;
        strcpy(t.text, "0");
    } else {
        static const char *const two[] = {"==", "~=", "<=", ">=", "..",
                                          "::", "//", "<<", ">>", NULL};
        size_t n = 1;
        for (const char *const *o = two; *o; o++)
            if (lx->end - s >= 2 && s[0] == (*o)[0] && s[1] == (*o)[1]) n = 2;
        if (n == 2 && lx->end - s >= 3 && s[0] == '.' && s[1] == '.' && s[2] == '.') n = 3;
        memcpy(t.text, s, n);
        t.text[n] = '\0';
        lx->p += n;
    }
    return t;
}

/* --- the lint --- */

static void report(linter *li, int line, const char *fmt, const char *name) {
    char msg[320], body[200];
    snprintf(body, sizeof body, fmt, name);
    snprintf(msg, sizeof msg, "%s:%d: %s", li->f->file, line, body);
    li->findings++;
    if (li->on_finding) li->on_finding(li->ud, msg);
}

typedef struct block_state {
    char stack[256];
    int top;
    int functions; /* 'f' entries on the stack */
    bool loop_do;  /* a while/for header is open: its `do` is part of it */
} block_state;

static void push_block(block_state *b, char kind) {
    if (b->top < (int)sizeof b->stack) b->stack[b->top++] = kind;
    if (kind == 'f') b->functions++;
}

static void pop_block(block_state *b) {
    if (b->top > 0 && b->stack[--b->top] == 'f') b->functions--;
}

static void track_blocks(block_state *b, const token *t) {
    if (!strcmp(t->text, "function"))
        push_block(b, 'f');
    else if (!strcmp(t->text, "while") || !strcmp(t->text, "for"))
        push_block(b, 'l'), b->loop_do = true;
    else if (!strcmp(t->text, "do")) {
        if (b->loop_do)
            b->loop_do = false;
        else
            push_block(b, 'd');
    } else if (!strcmp(t->text, "if"))
        push_block(b, 'i');
    else if (!strcmp(t->text, "repeat"))
        push_block(b, 'r');
    else if (!strcmp(t->text, "end") || !strcmp(t->text, "until"))
        pop_block(b);
    else if (!strcmp(t->text, "{"))
        push_block(b, '{');
    else if (!strcmp(t->text, "}"))
        pop_block(b);
}

/* Pass 1: every name declared local (locals and loop variables; parameters come
 * from collect_params), and the globals the top level defines. */
static void collect(linter *li) {
    lexer lx = {li->f->src, li->f->src + li->f->len, 1};
    block_state b = {.top = 0};
    token prev = {T_OTHER, "", 0}, t;
    bool in_local = false, in_for = false;
    while ((t = next_token(&lx)).kind != T_EOF) {
        if (t.kind == T_NAME && !in_list(keywords, t.text)) {
            if (in_local || in_for) {
                add_name(&li->locals, t.text);
            } else if (!strcmp(prev.text, "function")) {
                if (b.functions == 1) add_name(&li->globals, t.text); /* function name() */
            } else if (b.functions == 0 && strcmp(prev.text, ".") && strcmp(prev.text, ":")) {
                lexer peek = lx;
                token nx = next_token(&peek);
                bool key = b.top > 0 && b.stack[b.top - 1] == '{';
                if (!strcmp(nx.text, "=") && !key) add_name(&li->globals, t.text); /* name = */
            }
        }
        if (!strcmp(t.text, "local"))
            in_local = true;
        else if (in_local && t.kind != T_NAME && strcmp(t.text, ",") && strcmp(t.text, "<") &&
                 strcmp(t.text, ">"))
            in_local = false;
        if (!strcmp(t.text, "for"))
            in_for = true;
        else if (!strcmp(t.text, "in") || !strcmp(t.text, "="))
            in_for = false;
        track_blocks(&b, &t);
        prev = t;
    }
}

/* Parameters: after `function` [name[.name|:name]] comes "(", names, ")". */
static void collect_params(linter *li) {
    lexer lx = {li->f->src, li->f->src + li->f->len, 1};
    token t;
    bool after_function = false, in_params = false;
    while ((t = next_token(&lx)).kind != T_EOF) {
        if (in_params) {
            if (!strcmp(t.text, ")"))
                in_params = false;
            else if (t.kind == T_NAME)
                add_name(&li->locals, t.text);
            continue;
        }
        if (!strcmp(t.text, "function"))
            after_function = true;
        else if (after_function && !strcmp(t.text, "("))
            in_params = true, after_function = false;
        else if (after_function && t.kind != T_NAME && strcmp(t.text, ".") && strcmp(t.text, ":"))
            after_function = false;
    }
}

static void check_name(linter *li, const block_state *b, const token *prev, const token *t,
                       const token *next) {
    if (!strcmp(prev->text, ".") || !strcmp(prev->text, ":") || !strcmp(prev->text, "::") ||
        !strcmp(prev->text, "goto") || in_list(keywords, t->text))
        return;
    bool field_key =
        b->top > 0 && b->stack[b->top - 1] == '{' && !strcmp(next->text, "=") &&
        (!strcmp(prev->text, "{") || !strcmp(prev->text, ",") || !strcmp(prev->text, ";"));
    if (field_key || in_set(&li->locals, t->text)) return;
    if (!strcmp(next->text, "=") && b->functions > 0)
        report(li, t->line,
               "assignment to global '%s' inside a function (it raises at run time: "
               "declare it local)",
               t->text);
    else if (!in_list(sandbox_globals, t->text) && !in_set(&li->globals, t->text))
        report(li, t->line, "unknown global '%s'", t->text);
}

static void check_field(linter *li, const token *base, const token *field) {
    if (!strcmp(base->text, "ctx") && !in_list(ctx_fields, field->text))
        report(li, field->line, "unknown field ctx.%s", field->text);
    if (!strcmp(base->text, "req") && !in_list(req_fields, field->text))
        report(li, field->line, "unknown field req.%s", field->text);
}

static void lint_pass(linter *li) {
    lexer lx = {li->f->src, li->f->src + li->f->len, 1};
    block_state b = {.top = 0};
    token prev2 = {T_OTHER, "", 0}, prev = {T_OTHER, "", 0}, t = next_token(&lx), next;
    while (t.kind != T_EOF) {
        next = next_token(&lx);
        if (t.kind == T_NAME) {
            if (!strcmp(prev.text, ".") && prev2.kind == T_NAME) check_field(li, &prev2, &t);
            check_name(li, &b, &prev, &t, &next);
        }
        track_blocks(&b, &t);
        prev2 = prev;
        prev = t;
        t = next;
    }
}

static int lint_file(const dsc__policy_file *f, void (*on_finding)(void *, const char *),
                     void *ud) {
    linter *li = calloc(1, sizeof *li);
    if (!li) return 0;
    li->f = f;
    li->on_finding = on_finding;
    li->ud = ud;
    collect(li);
    collect_params(li);
    lint_pass(li);
    int n = li->findings;
    free(li);
    return n;
}

int dsc_policy_check(const char *dir, void (*on_finding)(void *ud, const char *line), void *ud,
                     dsc_error *err) {
    dsc_policy_set *set = dsc_policy_set_load(dir, err);
    if (!set) return -1;
    int n = 0;
    for (int i = 0; i < set->n; i++)
        n += lint_file(&set->files[i], on_finding, ud);
    dsc_policy_set_unref(set);
    return n;
}
