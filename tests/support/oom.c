/*
 * oom.c - the --wrap allocator of the out-of-memory tests (oom.h).
 *
 * Counters are atomic: the ledger's store writer and reader threads allocate too.
 * Once the n-th allocation is refused, later ones succeed again: the code under
 * test must cope with one failure anywhere, and a cascade would only test the first.
 */
#include "oom.h"

#include <stdatomic.h>
#include <stddef.h>
#include <string.h>

void *__real_malloc(size_t n);
void *__real_calloc(size_t k, size_t n);
void *__real_realloc(void *p, size_t n);
void *__wrap_malloc(size_t n);
void *__wrap_calloc(size_t k, size_t n);
void *__wrap_realloc(void *p, size_t n);
char *__wrap_strdup(const char *s);
char *__wrap_strndup(const char *s, size_t n);

static atomic_long countdown; /* 0 = off; the allocation that brings it to 0 fails */
static atomic_bool refused;
static atomic_long total; /* allocations seen, for oom_count */

void oom_fail_at(long n) {
    atomic_store(&refused, false);
    atomic_store(&countdown, n);
}

bool oom_stop(void) {
    atomic_store(&countdown, 0);
    return atomic_load(&refused);
}

long oom_count(void) {
    return atomic_load(&total);
}

static bool refuse(void) {
    atomic_fetch_add(&total, 1);
    long c = atomic_load(&countdown);
    while (c > 0 && !atomic_compare_exchange_weak(&countdown, &c, c - 1))
        ;
    if (c != 1) return false;
    atomic_store(&refused, true);
    return true;
}

void *__wrap_malloc(size_t n) {
    return refuse() ? NULL : __real_malloc(n);
}

void *__wrap_calloc(size_t k, size_t n) {
    return refuse() ? NULL : __real_calloc(k, n);
}

void *__wrap_realloc(void *p, size_t n) {
    return refuse() ? NULL : __real_realloc(p, n);
}

char *__wrap_strdup(const char *s) {
    size_t n = strlen(s) + 1;
    char *d = __wrap_malloc(n);
    return d ? memcpy(d, s, n) : NULL;
}

char *__wrap_strndup(const char *s, size_t n) {
    size_t len = strnlen(s, n);
    char *d = __wrap_malloc(len + 1);
    if (!d) return NULL;
    memcpy(d, s, len);
    d[len] = '\0';
    return d;
}
