/*
 * random.h - unpredictable bytes from the operating system, for what must not be
 * guessed: key tokens, key ids, reservation ids.
 *
 *   uint8_t b[12];
 *   if (dsc_random_bytes(b, sizeof b, &err) != DSC_OK) ...
 *   dsc_random_hex(b, sizeof b, out);    2 * n lowercase hex digits and a NUL
 */
#ifndef DISCERN_RANDOM_H
#define DISCERN_RANDOM_H

#include "discern/status.h"

#include <stddef.h>
#include <stdint.h>

/* Fill buf with n bytes from getrandom(2) (blocking until the kernel's pool is
 * seeded, retried on EINTR). Up to 32 bytes come from a per-thread buffer of kernel
 * bytes refilled 256 at a time (each byte handed out once, wiped as it goes, dropped
 * in a forked child); more go to the kernel directly. DSC_IO naming the reason when
 * the kernel refuses. */
dsc_status dsc_random_bytes(void *buf, size_t n, dsc_error *err);
/* Write the n bytes of b as 2 * n lowercase hex digits plus a NUL into out. */
void dsc_random_hex(const uint8_t *b, size_t n, char *out);

#endif
