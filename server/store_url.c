/*
 * store_url.c - parse the `store` config key (see store_url.h).
 *
 * Every byte of the value is checked: a URL with a part that does not parse is
 * refused rather than half-read (a typo in a port must not connect elsewhere), and a
 * text that merely looks like a URL ("redis:/x") is refused rather than taken as a
 * SQLite file name. Error messages name the key and the part, never the password.
 */
#include "store_url.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/un.h>

#define TCP_SCHEME "redis://"
#define UNIX_SCHEME "redis+unix://"

static bool starts_with(const char *s, const char *prefix) {
    return strncmp(s, prefix, strlen(prefix)) == 0;
}

bool dsc__store_url_is_redis(const char *text) {
    return starts_with(text, TCP_SCHEME) || starts_with(text, UNIX_SCHEME);
}

static int hex_value(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    c = (char)tolower((unsigned char)c);
    return c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

/* Percent-decode src[0..n) into out[cap]; false when malformed, too long or NUL. */
static bool decode(const char *src, size_t n, char *out, size_t cap) {
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        char c = src[i];
        if (c == '%') {
            int hi = i + 2 < n ? hex_value(src[i + 1]) : -1;
            int lo = hi >= 0 ? hex_value(src[i + 2]) : -1;
            if (lo < 0 || (hi << 4 | lo) == 0) return false;
            c = (char)(hi << 4 | lo);
            i += 2;
        }
        if (o + 1 >= cap) return false;
        out[o++] = c;
    }
    out[o] = '\0';
    return true;
}

/* An integer in [lo, hi] spelt by all of s[0..n). */
static bool parse_int(const char *s, size_t n, long lo, long hi, int *out) {
    if (n == 0 || n > 9) return false;
    long v = 0;
    for (size_t i = 0; i < n; i++) {
        if (!isdigit((unsigned char)s[i])) return false;
        v = v * 10 + (s[i] - '0');
    }
    if (v < lo || v > hi) return false;
    *out = (int)v;
    return true;
}

/* "[user]:password@" before the host, when there is one. */
static dsc_status parse_userinfo(const char *key, const char *s, size_t n, dsc__store_url *u,
                                 dsc_error *err) {
    const char *colon = memchr(s, ':', n);
    if (!colon)
        return dsc_error_set(err, DSC_BAD_REQUEST,
                             "%s: the part before '@' must be [user]:password", key);
    size_t ulen = (size_t)(colon - s);
    if (!decode(s, ulen, u->user, sizeof u->user))
        return dsc_error_set(err, DSC_BAD_REQUEST, "%s: the user is malformed or too long", key);
    if (!decode(colon + 1, n - ulen - 1, u->password, sizeof u->password))
        return dsc_error_set(err, DSC_BAD_REQUEST, "%s: the password is malformed or too long",
                             key);
    if (u->user[0] && !u->password[0])
        return dsc_error_set(err, DSC_BAD_REQUEST, "%s: a user needs a password", key);
    return DSC_OK;
}

/* HOST[:PORT] or [V6][:PORT]. */
static dsc_status parse_hostport(const char *key, const char *s, size_t n, dsc__store_url *u,
                                 dsc_error *err) {
    const char *host = s, *port = NULL;
    size_t hlen = n;
    if (n > 0 && s[0] == '[') {
        const char *close = memchr(s, ']', n);
        if (!close) return dsc_error_set(err, DSC_BAD_REQUEST, "%s: '[' without ']'", key);
        host = s + 1, hlen = (size_t)(close - s - 1);
        if (close + 1 < s + n) {
            if (close[1] != ':')
                return dsc_error_set(err, DSC_BAD_REQUEST, "%s: expected ':' after ']'", key);
            port = close + 2;
        }
    } else {
        const char *colon = memchr(s, ':', n);
        if (colon) hlen = (size_t)(colon - s), port = colon + 1;
    }
    if (hlen == 0 || hlen >= sizeof u->host)
        return dsc_error_set(err, DSC_BAD_REQUEST, "%s: the host is missing or too long", key);
    for (size_t i = 0; i < hlen; i++)
        if (!isalnum((unsigned char)host[i]) && !strchr(".-_:", host[i]))
            return dsc_error_set(err, DSC_BAD_REQUEST, "%s: the host holds '%c'", key,
                                 isprint((unsigned char)host[i]) ? host[i] : '?');
    memcpy(u->host, host, hlen);
    u->host[hlen] = '\0';
    u->port = 6379;
    if (port && !parse_int(port, (size_t)(s + n - port), 1, 65535, &u->port))
        return dsc_error_set(err, DSC_BAD_REQUEST, "%s: the port is not in [1, 65535]", key);
    return DSC_OK;
}

static dsc_status parse_tcp(const char *key, const char *rest, dsc__store_url *u, dsc_error *err) {
    const char *slash = strchr(rest, '/');
    size_t auth_end = slash ? (size_t)(slash - rest) : strlen(rest);
    const char *at = NULL; /* the last '@': a password may hold one, percent-encoded or not */
    for (size_t i = 0; i < auth_end; i++)
        if (rest[i] == '@') at = rest + i;
    dsc_status st = DSC_OK;
    if (at) st = parse_userinfo(key, rest, (size_t)(at - rest), u, err);
    const char *hp = at ? at + 1 : rest;
    if (st == DSC_OK) st = parse_hostport(key, hp, (size_t)(rest + auth_end - hp), u, err);
    if (st == DSC_OK && slash && slash[1] != '\0' &&
        !parse_int(slash + 1, strlen(slash + 1), 0, DSC_STORE_URL_DB_MAX, &u->db))
        st = dsc_error_set(err, DSC_BAD_REQUEST, "%s: the database after '/' is not in [0, %d]",
                           key, DSC_STORE_URL_DB_MAX);
    u->kind = DSC_STORE_REDIS_TCP;
    return st;
}

static dsc_status parse_unix(const char *key, const char *rest, dsc__store_url *u, dsc_error *err) {
    if (rest[0] != '/')
        return dsc_error_set(err, DSC_BAD_REQUEST,
                             "%s: redis+unix:// needs an absolute socket path "
                             "(redis+unix:///run/redis.sock)",
                             key);
    const char *q = strchr(rest, '?');
    size_t plen = q ? (size_t)(q - rest) : strlen(rest);
    if (plen >= sizeof(((struct sockaddr_un *)0)->sun_path))
        return dsc_error_set(err, DSC_BAD_REQUEST, "%s: socket path longer than %zu bytes", key,
                             sizeof(((struct sockaddr_un *)0)->sun_path) - 1);
    memcpy(u->path, rest, plen);
    u->path[plen] = '\0';
    if (q && (!starts_with(q, "?db=") ||
              !parse_int(q + 4, strlen(q + 4), 0, DSC_STORE_URL_DB_MAX, &u->db)))
        return dsc_error_set(err, DSC_BAD_REQUEST, "%s: after the path only ?db=N (N in [0, %d])",
                             key, DSC_STORE_URL_DB_MAX);
    u->kind = DSC_STORE_REDIS_UNIX;
    return DSC_OK;
}

dsc_status dsc__store_url_parse(const char *key, const char *text, dsc__store_url *out,
                                dsc_error *err) {
    memset(out, 0, sizeof *out);
    if (strlen(text) >= DSC_STORE_URL_MAX)
        return dsc_error_set(err, DSC_BAD_REQUEST, "%s: longer than %d bytes", key,
                             DSC_STORE_URL_MAX - 1);
    if (starts_with(text, TCP_SCHEME)) return parse_tcp(key, text + strlen(TCP_SCHEME), out, err);
    if (starts_with(text, UNIX_SCHEME))
        return parse_unix(key, text + strlen(UNIX_SCHEME), out, err);
    if (starts_with(text, "redis") || strstr(text, "://"))
        return dsc_error_set(err, DSC_BAD_REQUEST,
                             "%s: '%.40s' is neither a file nor redis://HOST:PORT[/DB] "
                             "nor redis+unix:///PATH",
                             key, text);
    out->kind = text[0] ? DSC_STORE_SQLITE : DSC_STORE_MEMORY;
    strcpy(out->path, text);
    return DSC_OK;
}

dsc_status dsc__store_url_env(dsc__store_url *u, const char *password_env, dsc_error *err) {
    if (u->kind < DSC_STORE_REDIS_TCP || u->password[0] || !password_env || !*password_env)
        return DSC_OK;
    if (strlen(password_env) >= sizeof u->password)
        return dsc_error_set(err, DSC_BAD_REQUEST, "DISCERN_REDIS_PASSWORD: longer than %zu bytes",
                             sizeof u->password - 1);
    strcpy(u->password, password_env);
    return DSC_OK;
}

void dsc__store_url_describe(const dsc__store_url *u, char *out, size_t cap) {
    const char *auth = u->password[0] ? "(password)@" : "";
    switch (u->kind) {
    case DSC_STORE_REDIS_TCP:
        snprintf(out, cap, "redis://%s%s%s%s:%d/%d", auth, strchr(u->host, ':') ? "[" : "", u->host,
                 strchr(u->host, ':') ? "]" : "", u->port, u->db);
        break;
    case DSC_STORE_REDIS_UNIX:
        snprintf(out, cap, "redis+unix://%s?db=%d", u->path, u->db);
        break;
    default:
        snprintf(out, cap, "%s", u->kind == DSC_STORE_SQLITE ? u->path : "(memory)");
        break;
    }
}
