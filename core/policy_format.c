/*
 * policy_format.c - the sandbox's string.format: Lua's, with the conversions policies
 * use on every request done without printf.
 *
 * right-size.lua's reason ("... would need %.3g g CO2e instead of %.3g g") cost 17% of
 * an evaluation of the shipped set, most of it in glibc's printf_fp. dsc__format
 * handles a format made only of text, %%, %s, %d and %.<n>g (n < 16) itself, with the
 * same checks of its arguments as Lua's (luaL_tolstring, luaL_checkinteger,
 * luaL_checknumber); any other format goes to Lua's string.format unchanged.
 *
 * %.<n>g is rounded by scaling the number by an exact power of ten (one rounding) and
 * checking that the scaled value is not so close to a half that this rounding could
 * have moved it across: when it is (or the number is not finite, or the decimal point
 * is not '.'), snprintf formats it, as Lua would. So the text is printf's, always.
 */
#include "policy_internal.h"

#include <locale.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#define MAX_PREC 15 /* significant digits formatted here; more go to snprintf */

static const double pow10[23] = {1e0,  1e1,  1e2,  1e3,  1e4,  1e5,  1e6,  1e7,
                                 1e8,  1e9,  1e10, 1e11, 1e12, 1e13, 1e14, 1e15,
                                 1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22};

/* The prec significant digits of x > 0 as an integer in [10^(prec-1), 10^prec), and its
 * decimal exponent in *e; -1 when this cannot be sure of the rounding. */
static int64_t digits_of(double x, int prec, int *e) {
    int x10 = (int)floor(log10(x));
    for (int tries = 0; tries < 3; tries++) {
        int scale = prec - 1 - x10;
        if (scale > 22 || scale < -22) return -1;
        double s = scale >= 0 ? x * pow10[scale] : x / pow10[-scale];
        double r = floor(s), frac = s - r;
        if (r >= pow10[prec]) { /* log10 was one short */
            x10++;
            continue;
        }
        if (r < pow10[prec - 1]) { /* or one over */
            x10--;
            continue;
        }
        if (fabs(frac - 0.5) <= s * 0x1p-50) return -1; /* a half, within the error */
        int64_t d = (int64_t)r + (frac > 0.5);
        if (d == (int64_t)pow10[prec]) { /* 9.995 -> 10.0 */
            d /= 10;
            x10++;
        }
        *e = x10;
        return d;
    }
    return -1;
}

/* digits (n of them) with the trailing zeros after position keep dropped. */
static int trim_zeros(const char *digits, int n, int keep) {
    while (n > keep && digits[n - 1] == '0')
        n--;
    return n;
}

/* Write x as "%.<prec>g" writes it into out (64 bytes); the length, or -1. The caller
 * checks that the decimal point is '.' (once per format: localeconv is not free). */
static int format_g(char *out, double x, int prec) {
    if (!isfinite(x)) return -1;
    if (prec == 0) prec = 1;
    if (prec > MAX_PREC) return -1;
    int k = 0;
    if (signbit(x)) out[k++] = '-';
    x = fabs(x);
    if (x == 0) {
        out[k++] = '0';
        return k;
    }
    int e;
    int64_t d = digits_of(x, prec, &e);
    if (d < 0) return -1;
    char dig[MAX_PREC + 1] = {0};
    for (int i = prec - 1; i >= 0; i--, d /= 10)
        dig[i] = (char)('0' + d % 10);
    if (e < -4 || e >= prec) { /* d.ddde+XX */
        int n = trim_zeros(dig, prec, 1);
        out[k++] = dig[0];
        if (n > 1) out[k++] = '.';
        memcpy(out + k, dig + 1, (size_t)(n - 1));
        k += n - 1;
        k += snprintf(out + k, 8, "e%c%02d", e < 0 ? '-' : '+', e < 0 ? -e : e);
        return k;
    }
    int whole = e >= 0 ? e + 1 : 0; /* digits before the point */
    int n = trim_zeros(dig, prec, whole);
    if (whole) {
        memcpy(out + k, dig, (size_t)whole);
        k += whole;
    } else {
        out[k++] = '0';
    }
    if (n > whole) {
        out[k++] = '.';
        for (int z = 0; z < -e - 1; z++)
            out[k++] = '0';
        memcpy(out + k, dig + whole, (size_t)(n - whole));
        k += n - whole;
    }
    return k;
}

static void add_integer(luaL_Buffer *b, lua_Integer n) {
    char buf[24];
    int k = (int)sizeof buf;
    unsigned long long u = n < 0 ? 0ULL - (unsigned long long)n : (unsigned long long)n;
    do {
        buf[--k] = (char)('0' + u % 10);
        u /= 10;
    } while (u);
    if (n < 0) buf[--k] = '-';
    luaL_addlstring(b, buf + k, sizeof buf - (size_t)k);
}

/* The precision of "%.<n>g" at p (after the '%'), or -1 when p is not one. */
static int g_precision(const char *p, const char *end, int *len) {
    if (end - p < 3 || p[0] != '.' || p[1] < '0' || p[1] > '9') return -1;
    int prec = p[1] - '0', i = 2;
    if (p[2] >= '0' && p[2] <= '9') prec = prec * 10 + p[i++] - '0';
    if (i >= end - p || p[i] != 'g') return -1;
    *len = i + 1;
    return prec;
}

/* Whether every conversion of fmt is one dsc__format does. */
static bool simple(const char *p, const char *end) {
    while ((p = memchr(p, '%', (size_t)(end - p))) != NULL) {
        int len = 1;
        if (++p == end) return false;
        if (*p != '%' && *p != 's' && *p != 'd' && g_precision(p, end, &len) < 0) return false;
        p += len;
    }
    return true;
}

/* Append argument arg formatted by the conversion at p; returns its length in fmt.
 * dot: the locale's decimal point is '.'. */
static int add_conversion(lua_State *L, luaL_Buffer *b, const char *p, const char *end, int arg,
                          bool dot) {
    int len = 1;
    if (*p == 's' && lua_type(L, arg) == LUA_TSTRING) {
        /* what luaL_tolstring gives for a string (the sandbox's string metatable has no
         * __tostring), without its metatable lookups: they cost some 700 of the 2 500
         * instructions of right_size.lua's format call */
        size_t sl;
        const char *s = lua_tolstring(L, arg, &sl);
        luaL_addlstring(b, s, sl);
    } else if (*p == 's') {
        luaL_tolstring(L, arg, NULL);
        luaL_addvalue(b);
    } else if (*p == 'd') {
        add_integer(b, luaL_checkinteger(L, arg));
    } else {
        int prec = g_precision(p, end, &len);
        double x = (double)luaL_checknumber(L, arg);
        char out[64];
        int n = dot ? format_g(out, x, prec) : -1;
        if (n < 0) n = snprintf(out, sizeof out, "%.*g", prec, x);
        luaL_addlstring(b, out, (size_t)n);
    }
    return len;
}

int dsc__format(lua_State *L) {
    size_t fl;
    const char *fmt = luaL_checklstring(L, 1, &fl), *end = fmt + fl;
    int top = lua_gettop(L), arg = 1;
    if (!simple(fmt, end)) { /* Lua's, upvalue 1 */
        lua_pushvalue(L, lua_upvalueindex(1));
        lua_insert(L, 1);
        lua_call(L, top, 1);
        return 1;
    }
    bool dot = lua_getlocaledecpoint() == '.';
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    for (const char *p = fmt; p < end;) {
        const char *pct = memchr(p, '%', (size_t)(end - p));
        if (!pct) pct = end;
        luaL_addlstring(&b, p, (size_t)(pct - p));
        if (pct == end) break;
        p = pct + 1;
        if (*p == '%') {
            luaL_addchar(&b, '%');
            p++;
            continue;
        }
        if (++arg > top) return luaL_argerror(L, arg, "no value");
        p += add_conversion(L, &b, p, end, arg, dot);
    }
    luaL_pushresult(&b);
    return 1;
}
