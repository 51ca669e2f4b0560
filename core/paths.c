/*
 * paths.c - locate the catalogue directory (flag, environment, next to the binary).
 *
 * The executable's own path comes from /proc/self/exe (Linux), so the build tree and
 * an installed prefix both work without configuration. See discern/paths.h.
 */
#include "discern/paths.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static dsc_status copy_out(const char *dir, char *out, size_t cap, dsc_error *err) {
    size_t len = strlen(dir);
    if (len >= cap)
        return dsc_error_set(err, DSC_IO, "data directory path is too long (%zu bytes)", len);
    memcpy(out, dir, len + 1);
    return DSC_OK;
}

dsc_status dsc_paths_exe_dir(char *out, size_t cap, dsc_error *err) {
    char exe[DSC_PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n <= 0)
        return dsc_error_set(err, DSC_IO, "cannot find the running executable: %s",
                             n < 0 ? strerror(errno) : "empty path");
    exe[n] = '\0';
    char *slash = strrchr(exe, '/');
    if (!slash) return dsc_error_set(err, DSC_IO, "executable path '%s' has no directory", exe);
    *slash = '\0';
    return copy_out(*exe ? exe : "/", out, cap, err);
}

dsc_status dsc_paths_data_dir(const char *flag, char *out, size_t cap, dsc_error *err) {
    if (flag && *flag) return copy_out(flag, out, cap, err);
    const char *env = getenv(DSC_DATA_DIR_ENV);
    if (env && *env) return copy_out(env, out, cap, err);
    char dir[DSC_PATH_MAX];
    dsc_status st = dsc_paths_exe_dir(dir, sizeof dir, err);
    if (st != DSC_OK) return st;
    int w = snprintf(out, cap, "%s/../share/discern/data", dir);
    if (w < 0 || (size_t)w >= cap)
        return dsc_error_set(err, DSC_IO, "data directory path is too long");
    return DSC_OK;
}
