/*
 * policy.c - policy sets: read a folder, compile every policy in a scratch sandbox,
 * version the set, share it between threads by reference count.
 *
 * A set is immutable once loaded, so worker threads read it without locks; each
 * worker's VM (policy_vm.c) compiles the sources again into its own lua_State. The
 * scratch compile here exists so that a broken folder is refused as a whole, with
 * file:line, before any VM sees it: the previous set stays live on reload.
 */
#include "policy_internal.h"

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SCRATCH_MEMORY (32u << 20)
#define DEFAULT_LOAD_BUDGET_NS 100000000LL

const char *dsc_policy_outcome_name(dsc_policy_outcome o) {
    switch (o) {
    case DSC_POLICY_ALLOW:
        return "allow";
    case DSC_POLICY_THROTTLE:
        return "throttle";
    case DSC_POLICY_REFUSE:
        return "refuse";
    default:
        return "abstain";
    }
}

char *dsc__read_file(const char *path, size_t *len, dsc_error *err) {
    FILE *fp = fopen(path, "rb");
    char *buf = NULL;
    if (!fp) goto fail;
    if (fseek(fp, 0, SEEK_END) != 0) goto fail;
    long n = ftell(fp);
    if (n < 0 || fseek(fp, 0, SEEK_SET) != 0) goto fail;
    buf = malloc((size_t)n + 1);
    if (!buf) {
        fclose(fp);
        dsc_error_set(err, DSC_NOMEM, "cannot read '%s': out of memory", path);
        return NULL;
    }
    if (fread(buf, 1, (size_t)n, fp) != (size_t)n) goto fail;
    buf[n] = '\0';
    *len = (size_t)n;
    fclose(fp);
    return buf;
fail:
    dsc_error_set(err, DSC_IO, "cannot read '%s': %s", path, strerror(errno ? errno : EIO));
    free(buf);
    if (fp) fclose(fp);
    return NULL;
}

int dsc__last_return_line(const char *src, size_t len) {
    int line = 1, found = 1;
    for (size_t i = 0; i < len; i++) {
        if (i == 0 || src[i - 1] == '\n') {
            if (len - i >= 6 && memcmp(src + i, "return", 6) == 0) found = line;
        }
        if (src[i] == '\n') line++;
    }
    return found;
}

static bool ends_with(const char *s, const char *suffix) {
    size_t n = strlen(s), m = strlen(suffix);
    return n >= m && strcmp(s + n - m, suffix) == 0;
}

/* Policies are *.lua files, except tests (*_test.lua) and the purposes taxonomy. */
static bool is_policy_file(const char *name) {
    return name[0] != '.' && ends_with(name, ".lua") && !ends_with(name, "_test.lua") &&
           strcmp(name, "purposes.lua") != 0;
}

static int cmp_names(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static void free_file(dsc__policy_file *f) {
    free(f->file);
    free(f->chunkname);
    free(f->src);
    memset(f, 0, sizeof *f);
}

static void free_set(dsc_policy_set *set) {
    for (int i = 0; i < set->n; i++)
        free_file(&set->files[i]);
    free_file(&set->purposes);
    free(set);
}

static dsc_status read_one(const char *dir, const char *name, dsc__policy_file *f, dsc_error *err) {
    char path[4096];
    if ((size_t)snprintf(path, sizeof path, "%s/%s", dir, name) >= sizeof path)
        return dsc_error_set(err, DSC_BAD_REQUEST, "path too long: '%s/%s'", dir, name);
    f->src = dsc__read_file(path, &f->len, err);
    if (!f->src) return err ? err->code : DSC_IO;
    f->file = strdup(name);
    f->chunkname = malloc(strlen(name) + 2);
    if (!f->file || !f->chunkname) return dsc_error_set(err, DSC_NOMEM, "out of memory");
    f->chunkname[0] = '@';
    strcpy(f->chunkname + 1, name);
    return DSC_OK;
}

/* The sorted policy file names of dir (caller frees each and the array). */
static char **list_policies(const char *dir, int *n, dsc_error *err) {
    DIR *d = opendir(dir);
    if (!d) {
        dsc_error_set(err, DSC_IO, "cannot open policy folder '%s': %s", dir, strerror(errno));
        return NULL;
    }
    char **names = calloc(DSC_POLICY_MAX + 1, sizeof *names);
    int k = 0;
    struct dirent *e;
    while (names && (e = readdir(d)) != NULL) {
        if (!is_policy_file(e->d_name)) continue;
        if (k == DSC_POLICY_MAX) {
            dsc_error_set(err, DSC_TOO_LARGE, "policy folder '%s' has more than %d policies", dir,
                          DSC_POLICY_MAX);
            goto fail;
        }
        if (!(names[k] = strdup(e->d_name))) goto fail;
        k++;
    }
    closedir(d);
    if (!names) dsc_error_set(err, DSC_NOMEM, "out of memory");
    if (names) qsort(names, (size_t)k, sizeof *names, cmp_names);
    *n = k;
    return names;
fail:
    if (err && err->code == DSC_OK) dsc_error_set(err, DSC_NOMEM, "out of memory");
    for (int i = 0; i < k; i++)
        free(names[i]);
    free(names);
    closedir(d);
    return NULL;
}

static uint64_t fnv1a(uint64_t h, const void *p, size_t n) {
    const unsigned char *s = p;
    for (size_t i = 0; i < n; i++)
        h = (h ^ s[i]) * 1099511628211ULL;
    return h;
}

static void compute_version(dsc_policy_set *set) {
    uint64_t h = 14695981039346656037ULL;
    for (int i = 0; i < set->n + 1; i++) {
        const dsc__policy_file *f = i < set->n ? &set->files[i] : &set->purposes;
        if (!f->src) continue;
        h = fnv1a(h, f->file, strlen(f->file) + 1);
        h = fnv1a(h, f->src, f->len + 1);
    }
    snprintf(set->version, sizeof set->version, "%016llx", (unsigned long long)h);
}

static void meta_string(lua_State *L, const dsc__policy_file *f, const char *key, char *dst,
                        size_t n) {
    int t = lua_getfield(L, -1, key);
    if (t == LUA_TSTRING) {
        size_t len;
        const char *s = lua_tolstring(L, -1, &len);
        if (len == 0 || len >= n)
            luaL_error(L, "%s:%d: field '%s' must be 1 to %d characters", f->file,
                       dsc__last_return_line(f->src, f->len), key, (int)n - 1);
        memcpy(dst, s, len + 1);
    } else if (t != LUA_TNIL) {
        luaL_error(L, "%s:%d: field '%s' must be a string, got %s", f->file,
                   dsc__last_return_line(f->src, f->len), key, luaL_typename(L, -1));
    }
    lua_pop(L, 1);
}

void dsc__policy_read_meta(lua_State *L, dsc__policy_file *f) {
    int line = dsc__last_return_line(f->src, f->len);
    char mode[16] = "enforce", on_error[16] = "refuse";
    size_t stem = strlen(f->file) - 4;
    if (stem >= sizeof f->name) stem = sizeof f->name - 1;
    memcpy(f->name, f->file, stem);
    f->name[stem] = '\0';
    meta_string(L, f, "name", f->name, sizeof f->name);
    meta_string(L, f, "mode", mode, sizeof mode);
    meta_string(L, f, "on_error", on_error, sizeof on_error);
    if (strcmp(mode, "enforce") != 0 && strcmp(mode, "shadow") != 0)
        luaL_error(L, "%s:%d: field 'mode' must be \"enforce\" or \"shadow\", got \"%s\"", f->file,
                   line, mode);
    f->shadow = strcmp(mode, "shadow") == 0;
    if (strcmp(on_error, "refuse") == 0)
        f->on_error = DSC_POLICY_REFUSE;
    else if (strcmp(on_error, "allow") == 0)
        f->on_error = DSC_POLICY_ALLOW;
    else
        luaL_error(L, "%s:%d: field 'on_error' must be \"refuse\" or \"allow\", got \"%s\"",
                   f->file, line, on_error);
    int t = lua_getfield(L, -1, "enabled");
    if (t != LUA_TNIL && t != LUA_TBOOLEAN)
        luaL_error(L, "%s:%d: field 'enabled' must be a boolean", f->file, line);
    f->enabled = t == LUA_TNIL || lua_toboolean(L, -1);
    lua_pop(L, 1);
}

static int compile_one(lua_State *L) {
    dsc__policy_file *f = lua_touserdata(L, 1);
    dsc__sandbox_load_policy(L, f, true);
    dsc__policy_read_meta(L, f);
    return 0;
}

static int compile_purposes(lua_State *L) {
    dsc__policy_file *f = lua_touserdata(L, 1);
    char default_class[32];
    dsc__sandbox_load_policy(L, f, false);
    dsc__purposes_build(L, f, default_class, sizeof default_class);
    return 0;
}

/* Compile f in the scratch state; DSC_POLICY_ERROR with Lua's file:line message. */
static dsc_status compile_in(lua_State *L, lua_CFunction fn, dsc__policy_file *f, dsc_error *err) {
    lua_pushcfunction(L, dsc__sandbox_msgh);
    lua_pushcfunction(L, fn);
    lua_pushlightuserdata(L, f);
    dsc__sandbox_arm(L, DEFAULT_LOAD_BUDGET_NS);
    int st = lua_pcall(L, 1, 0, -3);
    dsc__sandbox_disarm(L);
    dsc_status ret = DSC_OK;
    if (st == LUA_ERRMEM)
        ret =
            dsc_error_set(err, DSC_POLICY_ERROR, "%s: memory cap exceeded while loading", f->file);
    else if (st != LUA_OK)
        ret = dsc_error_set(err, DSC_POLICY_ERROR, "%s", lua_tostring(L, -1));
    lua_settop(L, 0);
    return ret;
}

static dsc_status compile_set(dsc_policy_set *set, dsc_error *err) {
    dsc__sandbox sb;
    lua_State *L = dsc__sandbox_open(&sb, SCRATCH_MEMORY);
    if (!L) return dsc_error_set(err, DSC_NOMEM, "cannot create a Lua state");
    dsc_status st = DSC_OK;
    for (int i = 0; i < set->n && st == DSC_OK; i++)
        st = compile_in(L, compile_one, &set->files[i], err);
    if (st == DSC_OK && set->purposes.src)
        st = compile_in(L, compile_purposes, &set->purposes, err);
    dsc__sandbox_close(L);
    return st;
}

static dsc_status read_purposes(const char *dir, dsc__policy_file *f, dsc_error *err) {
    char path[4096];
    snprintf(path, sizeof path, "%s/purposes.lua", dir);
    FILE *fp = fopen(path, "rb");
    if (!fp) return DSC_OK; /* optional */
    fclose(fp);
    return read_one(dir, "purposes.lua", f, err);
}

dsc_policy_set *dsc_policy_set_load(const char *dir, dsc_error *err) {
    int n = 0;
    dsc_error_clear(err);
    char **names = list_policies(dir, &n, err);
    if (!names) return NULL;
    dsc_policy_set *set = calloc(1, sizeof *set);
    dsc_status st = set ? DSC_OK : dsc_error_set(err, DSC_NOMEM, "out of memory");
    for (int i = 0; i < n && st == DSC_OK; i++, set->n++)
        st = read_one(dir, names[i], &set->files[i], err);
    if (st == DSC_OK) st = read_purposes(dir, &set->purposes, err);
    if (st == DSC_OK) st = compile_set(set, err);
    for (int i = 0; i < n; i++)
        free(names[i]);
    free(names);
    if (st != DSC_OK) goto fail;
    compute_version(set);
    atomic_init(&set->refs, 1);
    return set;
fail:
    if (set) free_set(set);
    return NULL;
}

dsc_policy_set *dsc_policy_set_ref(dsc_policy_set *set) {
    atomic_fetch_add(&set->refs, 1);
    return set;
}

void dsc_policy_set_unref(dsc_policy_set *set) {
    if (set && atomic_fetch_sub(&set->refs, 1) == 1) free_set(set);
}

const char *dsc_policy_set_version(const dsc_policy_set *set) {
    return set->version;
}

int dsc_policy_set_count(const dsc_policy_set *set) {
    return set->n;
}

const char *dsc_policy_set_name(const dsc_policy_set *set, int i) {
    return i >= 0 && i < set->n ? set->files[i].name : NULL;
}
