/*
 * paths.h - where the catalogue data lives.
 *
 * Every program (CLI, server, benchmarks) finds the catalogue the same way, first
 * match wins:
 *   1. an explicit directory (the --data DIR flag),
 *   2. the DISCERN_DATA_DIR environment variable,
 *   3. <directory of the running executable>/../share/discern/data, which the build
 *      fills (build/bin -> build/share/discern/data) and `make install` mirrors.
 *
 *   char dir[DSC_PATH_MAX];
 *   if (dsc_paths_data_dir(flag, dir, sizeof dir, &err) != DSC_OK) ...
 */
#ifndef DISCERN_PATHS_H
#define DISCERN_PATHS_H

#include "discern/export.h"

#include "discern/status.h"

#include <stddef.h>

DSC_API_BEGIN

#define DSC_PATH_MAX 4096
#define DSC_DATA_DIR_ENV "DISCERN_DATA_DIR"

/* Write the catalogue directory into out (cap bytes), from flag (NULL or "" = not
 * given), the environment, or the executable's location. Returns DSC_OK, or DSC_IO
 * when the executable's path cannot be found or the result does not fit. */
dsc_status dsc_paths_data_dir(const char *flag, char *out, size_t cap, dsc_error *err);

/* Write the directory of the running executable into out. DSC_IO on failure. */
dsc_status dsc_paths_exe_dir(char *out, size_t cap, dsc_error *err);

DSC_API_END

#endif
