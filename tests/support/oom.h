/*
 * oom.h - a failing allocator for the out-of-memory tests: the test binary is linked
 * with -Wl,--wrap=malloc,--wrap=calloc,--wrap=realloc,--wrap=strdup,--wrap=strndup
 * (tests/CMakeLists.txt), so every allocation our static libraries make goes through
 * the counters here, and the n-th one after oom_fail_at(n) returns NULL.
 * Libraries linked as shared objects (SQLite, Lua, jansson, msgpack-c) are not
 * wrapped: what is tested is our handling of our own allocations.
 *
 *   for (long n = 1;; n++) {
 *       oom_fail_at(n);
 *       st = operation();                  must fail cleanly or succeed
 *       bool hit = oom_stop();             true when allocation n was refused
 *       if (!hit) break;                   the operation needs fewer than n
 *       ... check st is an error and the next call works ...
 *   }
 */
#ifndef DISCERN_TESTS_OOM_H
#define DISCERN_TESTS_OOM_H

#include <stdbool.h>

/* Refuse the n-th allocation from now (n >= 1), and every later one when sticky. */
void oom_fail_at(long n);
/* Allocations seen since the process started (refused ones included). */
long oom_count(void);
/* Stop refusing; true when an allocation was refused since oom_fail_at. */
bool oom_stop(void);

#endif
