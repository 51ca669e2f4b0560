/*
 * test_integration_redis.c - discernd with a Redis store.
 *
 * The ledger does not route holds through Redis yet (docs/operations.md, "Many
 * replicas"): until it does, a discernd given a Redis URL must stop at start with a
 * message naming the store, and never take the URL for a SQLite file name (which
 * would give each replica counters of its own: the budget multiplied silently).
 */
#include "harness.h"
#include "redis_harness.h"

#include <criterion/criterion.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

TestSuite(integration_redis, .fini = th_kill_live_redis, .timeout = 60);

Test(integration_redis, a_redis_store_stops_discernd_at_start_and_creates_no_file) {
    th_redis srv;
    th_redis_start(&srv, NULL);
    char url[128], out[4096];
    th_redis_url(&srv, url, sizeof url);
    const char *args[] = {"--store",    url,
                          "--policies", DISCERN_SOURCE_DIR "/tests/server/fixtures/policies",
                          "--data",     DISCERN_SOURCE_DIR "/core/data",
                          "--listen",   "127.0.0.1:0",
                          "--http",     "",
                          "--unix",     "",
                          NULL};
    int code = th_run_discernd(args, out, sizeof out);
    cr_assert_eq(code, 3, "exit %d: %s", code, out);
    cr_assert(strstr(out, "store: this discernd has no Redis ledger backend yet"), "%s", out);
    struct stat st;
    cr_assert_neq(stat("redis:", &st), 0, "a file or folder named after the URL was created");
    redisContext *c = th_redis_connect(&srv);
    cr_assert_eq(th_redis_int(c, "DBSIZE"), 0);
    redisFree(c);
    th_redis_cleanup(&srv);
}

Test(integration_redis, a_malformed_redis_url_is_a_config_error_naming_the_part) {
    char out[4096];
    const char *args[] = {"--store", "redis://:s3cret@127.0.0.1:70000", NULL};
    int code = th_run_discernd(args, out, sizeof out);
    cr_assert_eq(code, 2, "exit %d: %s", code, out);
    cr_assert(strstr(out, "store: the port is not in [1, 65535]"), "%s", out);
    cr_assert(!strstr(out, "s3cret"), "the password was printed: %s", out);
}
