/*
 * fuzz_util.h - what the libFuzzer targets of tests/fuzz share: a private scratch
 * folder per process, writing an input into a file there, and a NUL-terminated
 * copy of an input (parsers that take C strings).
 *
 *   const char *dir = fuzz_dir();                 mkdtemp'd once, removed at exit
 *   fuzz_write(dir, "models.json", data, size);   false when it cannot be written
 *   char *s = fuzz_cstr(data, size); ... free(s); NULL when out of memory
 */
#ifndef DISCERN_FUZZ_UTIL_H
#define DISCERN_FUZZ_UTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

const char *fuzz_dir(void);
bool fuzz_write(const char *dir, const char *name, const void *data, size_t size);
char *fuzz_cstr(const uint8_t *data, size_t size);

#endif
