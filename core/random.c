/*
 * random.c - unpredictable bytes from the kernel (see discern/random.h).
 *
 * getrandom(2) rather than /dev/urandom: no descriptor to run out of, and it waits
 * for the pool to be seeded at boot instead of returning guessable bytes.
 *
 * A check draws 12 bytes for its reservation id; one system call per id was a
 * measurable share of a decision. Small draws therefore come from a per-thread
 * buffer of kernel bytes refilled RANDOM_CHUNK at a time: the bytes are the kernel's
 * all the same (nothing is derived or stretched), each is handed out once and wiped
 * from the buffer as it goes, and a forked child drops what its parent had buffered
 * so that the two never hand out the same bytes. Draws larger than RANDOM_SMALL_MAX
 * (none on the hot path) go to the kernel directly.
 */
#include "discern/random.h"

#include <errno.h>
#include <pthread.h>
#include <string.h>
#include <sys/random.h>

#define RANDOM_CHUNK 256
#define RANDOM_SMALL_MAX 32

typedef struct dsc__random_pool {
    uint8_t bytes[RANDOM_CHUNK];
    size_t used; /* bytes[used..] not handed out yet; RANDOM_CHUNK when empty */
} dsc__random_pool;

static _Thread_local dsc__random_pool pool = {.used = RANDOM_CHUNK};
static pthread_once_t atfork_once = PTHREAD_ONCE_INIT;

/* In a forked child (only the forking thread survives): forget the parent's bytes. */
static void pool_drop_in_child(void) {
    memset(pool.bytes, 0, sizeof pool.bytes);
    pool.used = RANDOM_CHUNK;
}

static void pool_register_atfork(void) {
    (void)pthread_atfork(NULL, NULL, pool_drop_in_child);
}

static dsc_status kernel_bytes(uint8_t *p, size_t n, dsc_error *err) {
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

dsc_status dsc_random_bytes(void *buf, size_t n, dsc_error *err) {
    if (n > RANDOM_SMALL_MAX) return kernel_bytes(buf, n, err);
    if (RANDOM_CHUNK - pool.used < n) {
        pthread_once(&atfork_once, pool_register_atfork);
        dsc_status st = kernel_bytes(pool.bytes, sizeof pool.bytes, err);
        if (st != DSC_OK) return st;
        pool.used = 0;
    }
    memcpy(buf, pool.bytes + pool.used, n);
    memset(pool.bytes + pool.used, 0, n);
    pool.used += n;
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
