/*
 * http_static.c - the console's files at / (GET and HEAD), from the folder of the
 * `www` config key (default: the installed share/discern/www beside the binaries).
 *
 * Hostile paths: the decoded path may hold only letters, digits and "._-/", no
 * segment may start with a dot (no "..", no dotfiles) and none may be empty; the
 * file's real path (symlinks resolved) must lie inside the folder's real path; only
 * regular files up to DSC__WWW_FILE_MAX bytes are sent; a folder is never listed
 * ("/" and "/dir/" mean their index.html). Every answer carries a strict
 * Content-Security-Policy (scripts and styles from this origin only, nothing
 * inline) and X-Content-Type-Options: nosniff.
 */
#include "http.h"
#include "methods.h"

#include "discern/paths.h"

#include <errno.h>
#include <event2/buffer.h>
#include <event2/keyvalq_struct.h>
#include <fcntl.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define DSC__WWW_FILE_MAX (4u << 20)

#define CSP                                                                                        \
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "              \
    "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; "             \
    "form-action 'self'"

static void security_headers(struct evhttp_request *req) {
    struct evkeyvalq *h = evhttp_request_get_output_headers(req);
    evhttp_add_header(h, "Content-Security-Policy", CSP);
    evhttp_add_header(h, "X-Content-Type-Options", "nosniff");
    evhttp_add_header(h, "X-Frame-Options", "DENY");
    evhttp_add_header(h, "Referrer-Policy", "no-referrer");
    evhttp_add_header(h, "Cache-Control", "no-cache");
}

static void send_text(struct evhttp_request *req, int status, const char *reason,
                      const char *text) {
    struct evbuffer *out = evbuffer_new();
    security_headers(req);
    evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type",
                      "text/plain; charset=utf-8");
    if (out) evbuffer_add_printf(out, "%s\n", text);
    evhttp_send_reply(req, status, reason, out);
    if (out) evbuffer_free(out);
}

static const char *mime_type(const char *path) {
    static const char *const types[][2] = {
        {".html", "text/html; charset=utf-8"},
        {".js", "text/javascript; charset=utf-8"},
        {".css", "text/css; charset=utf-8"},
        {".svg", "image/svg+xml"},
        {".png", "image/png"},
        {".ico", "image/x-icon"},
        {".json", "application/json"},
        {".txt", "text/plain; charset=utf-8"},
        {".woff2", "font/woff2"},
    };
    const char *dot = strrchr(path, '.');
    for (size_t i = 0; dot && i < sizeof types / sizeof types[0]; i++)
        if (strcmp(dot, types[i][0]) == 0) return types[i][1];
    return "application/octet-stream";
}

/* Whether a decoded path is one the console may serve (see the file comment). */
static bool path_allowed(const char *p, size_t len) {
    if (len == 0 || p[0] != '/' || strlen(p) != len) return false; /* a NUL inside */
    for (size_t i = 0; i < len; i++) {
        char ch = p[i];
        bool ok = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
                  (ch >= '0' && ch <= '9') || ch == '.' || ch == '_' || ch == '-' || ch == '/';
        if (!ok) return false;
        if (ch == '/' && i + 1 < len && (p[i + 1] == '.' || p[i + 1] == '/')) return false;
    }
    return true;
}

/* Read the regular file at full (inside www) into out; 0, or an HTTP status. */
static int read_file(const char *www, const char *full, struct evbuffer *out) {
    char real[PATH_MAX];
    if (!realpath(full, real)) return 404;
    size_t n = strlen(www);
    if (strncmp(real, www, n) != 0 || real[n] != '/') return 404; /* a symlink out */
    int fd = open(real, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) return 404;
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        return 404;
    }
    if (st.st_size > (off_t)DSC__WWW_FILE_MAX) {
        close(fd);
        return 413;
    }
    /* evbuffer_add_file takes the descriptor and closes it. */
    return evbuffer_add_file(out, fd, 0, st.st_size) == 0 ? 0 : 500;
}

void dsc__http_static(dsc_server *srv, struct evhttp_request *req, const char *path) {
    enum evhttp_cmd_type cmd = evhttp_request_get_command(req);
    if (cmd != EVHTTP_REQ_GET && cmd != EVHTTP_REQ_HEAD) {
        send_text(req, 405, "Method Not Allowed", "the console's files are read with GET");
        return;
    }
    size_t len = 0;
    char *dec = evhttp_uridecode(path, 0, &len);
    if (!dec || !path_allowed(dec, len)) {
        free(dec);
        send_text(req, 404, "Not Found", "not found");
        return;
    }
    if (!srv->www[0]) {
        free(dec);
        send_text(req, 404, "Not Found", "the console is not installed (config key www)");
        return;
    }
    char full[PATH_MAX];
    int w = snprintf(full, sizeof full, "%s%s%s", srv->www, dec,
                     dec[len - 1] == '/' ? "index.html" : "");
    struct evbuffer *out = evbuffer_new();
    int status = w < 0 || (size_t)w >= sizeof full ? 404
                 : !out                            ? 500
                                                   : read_file(srv->www, full, out);
    if (status != 0) {
        if (out) evbuffer_free(out);
        send_text(req, status, status == 404 ? "Not Found" : "Error", "not found");
        free(dec);
        return;
    }
    security_headers(req);
    evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type",
                      mime_type(dec[len - 1] == '/' ? "index.html" : dec));
    free(dec);
    evhttp_send_reply(req, 200, "OK", out);
    evbuffer_free(out);
}

dsc_status dsc__http_www_resolve(dsc_server *srv, dsc_error *err) {
    char dir[DSC_PATH_MAX];
    const char *want = srv->cfg.www;
    if (!want[0]) {
        dsc_status st = dsc_paths_exe_dir(dir, sizeof dir, err);
        if (st != DSC_OK) return st;
        size_t n = strlen(dir);
        snprintf(dir + n, sizeof dir - n, "/../share/discern/www");
        want = dir;
    }
    char real[PATH_MAX];
    srv->www[0] = '\0';
    if (!realpath(want, real) || strlen(real) >= sizeof srv->www) {
        dsc_log_write(&srv->log, srv->cfg.www[0] ? DSC_LOG_WARN : DSC_LOG_INFO, "console",
                      "www=%s state=missing", want);
        return DSC_OK; /* the API works without the console's files */
    }
    memcpy(srv->www, real, strlen(real) + 1);
    dsc_log_write(&srv->log, DSC_LOG_INFO, "console", "www=%s", srv->www);
    return DSC_OK;
}
