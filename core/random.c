/*
 * random.c - unpredictable bytes from the kernel (see discern/random.h).
 *
 * getrandom(2) rather than /dev/urandom: no descriptor to run out of, and it waits
 * for the pool to be seeded at boot instead of returning guessable bytes.
 */
#include "discern/random.h"

#include <errno.h>
#include <string.h>
#include <sys/random.h>

dsc_status dsc_random_bytes(void *buf, size_t n, dsc_error *err) {
    uint8_t *p = buf;
    while (n > 0) {
        ssize_t got = getrandom(p, n, 0);
        if (got < 0 && errno == EINTR) continue;
        if (got <= 0)
            return dsc_error_set(err, DSC_IO, "getrandom: %s",
                                 got < 0 ? strerror(errno) : "no bytes");
        p += got;
        n -= (size_t)got;
    }
    return DSC_OK;
}

void dsc_random_hex(const uint8_t *b, size_t n, char *out) {
    static const char hex[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = hex[b[i] >> 4];
        out[2 * i + 1] = hex[b[i] & 15];
    }
    out[2 * n] = '\0';
}
