/*
 * test_store_url.c - the `store` key's values (server/store_url.c): SQLite files,
 * Redis over TCP and Unix sockets, passwords from the URL or the environment, and
 * errors that name the key and the part without echoing a password.
 */
#include "store_url.h"

#include <criterion/criterion.h>
#include <string.h>

static dsc__store_url parse_ok(const char *text) {
    dsc__store_url u;
    dsc_error err = {0};
    cr_assert_eq(dsc__store_url_parse("store", text, &u, &err), DSC_OK, "%s: %s", text,
                 err.message);
    return u;
}

static void expect_refused(const char *text, const char *names) {
    dsc__store_url u;
    dsc_error err = {0};
    cr_expect_eq(dsc__store_url_parse("store", text, &u, &err), DSC_BAD_REQUEST, "%s parsed", text);
    cr_expect(strstr(err.message, names), "%s: got '%s', want '%s'", text, err.message, names);
    cr_expect(strncmp(err.message, "store: ", 7) == 0, "%s: '%s' does not name the key", text,
              err.message);
    cr_expect(!strstr(err.message, "s3cret"), "%s: the message shows the password", text);
}

Test(store_url, a_plain_path_is_a_sqlite_file_and_empty_is_memory) {
    dsc__store_url u = parse_ok("var/discern.db");
    cr_assert_eq(u.kind, DSC_STORE_SQLITE);
    cr_assert_str_eq(u.path, "var/discern.db");
    cr_assert_eq(parse_ok("").kind, DSC_STORE_MEMORY);
    cr_assert(!dsc__store_url_is_redis("var/discern.db"));
    cr_assert(dsc__store_url_is_redis("redis://h"));
    cr_assert(dsc__store_url_is_redis("redis+unix:///s"));
}

Test(store_url, a_redis_url_gives_host_port_database_and_password) {
    dsc__store_url u = parse_ok("redis://:s3cret@10.1.2.3:6380/4");
    cr_assert_eq(u.kind, DSC_STORE_REDIS_TCP);
    cr_assert_str_eq(u.host, "10.1.2.3");
    cr_assert_eq(u.port, 6380);
    cr_assert_eq(u.db, 4);
    cr_assert_str_eq(u.user, "");
    cr_assert_str_eq(u.password, "s3cret");
    u = parse_ok("redis://redis.internal");
    cr_assert_str_eq(u.host, "redis.internal");
    cr_assert_eq(u.port, 6379);
    cr_assert_eq(u.db, 0);
    cr_assert_str_eq(u.password, "");
    u = parse_ok("redis://[::1]:7000/");
    cr_assert_str_eq(u.host, "::1");
    cr_assert_eq(u.port, 7000);
}

Test(store_url, an_acl_user_and_a_percent_encoded_password_are_decoded) {
    dsc__store_url u = parse_ok("redis://discern:p%40ss%3Aw@127.0.0.1:6379");
    cr_assert_str_eq(u.user, "discern");
    cr_assert_str_eq(u.password, "p@ss:w");
    u = parse_ok("redis://:a@b@127.0.0.1"); /* the last '@' ends the password */
    cr_assert_str_eq(u.password, "a@b");
    cr_assert_str_eq(u.host, "127.0.0.1");
}

Test(store_url, a_unix_socket_url_gives_its_path_and_database) {
    dsc__store_url u = parse_ok("redis+unix:///run/redis/redis.sock");
    cr_assert_eq(u.kind, DSC_STORE_REDIS_UNIX);
    cr_assert_str_eq(u.path, "/run/redis/redis.sock");
    cr_assert_eq(u.db, 0);
    cr_assert_eq(parse_ok("redis+unix:///tmp/r.sock?db=3").db, 3);
}

Test(store_url, malformed_urls_are_refused_naming_the_part) {
    expect_refused("redis://127.0.0.1:0", "the port is not in [1, 65535]");
    expect_refused("redis://127.0.0.1:6379x", "the port is not in [1, 65535]");
    expect_refused("redis://127.0.0.1:", "the port is not in [1, 65535]");
    expect_refused("redis://:6379", "the host is missing");
    expect_refused("redis://h/x", "the database after '/' is not in [0, 65535]");
    expect_refused("redis://h/65536", "the database after '/' is not in [0, 65535]");
    expect_refused("redis://s3cret@h", "the part before '@' must be [user]:password");
    expect_refused("redis://user:@h", "a user needs a password");
    expect_refused("redis://:s3%zzcret@h", "the password is malformed");
    expect_refused("redis://:s3cret%00@h", "the password is malformed");
    expect_refused("redis://ho st", "the host holds ' '");
    expect_refused("redis://[::1", "'[' without ']'");
    expect_refused("redis+unix://relative.sock", "needs an absolute socket path");
    expect_refused("redis+unix:///tmp/r.sock?database=1", "only ?db=N");
    expect_refused("rediss://h:6379", "is neither a file nor");
    expect_refused("http://h:6379", "is neither a file nor");
}

Test(store_url, a_socket_path_longer_than_sun_path_is_refused) {
    char text[200] = "redis+unix:///";
    memset(text + strlen(text), 'a', 120);
    expect_refused(text, "socket path longer than");
}

Test(store_url, the_environment_password_fills_only_a_url_without_one) {
    dsc__store_url u = parse_ok("redis://127.0.0.1:6379");
    dsc_error err;
    cr_assert_eq(dsc__store_url_env(&u, "from-env", &err), DSC_OK);
    cr_assert_str_eq(u.password, "from-env");
    u = parse_ok("redis://:in-url@127.0.0.1:6379");
    cr_assert_eq(dsc__store_url_env(&u, "from-env", &err), DSC_OK);
    cr_assert_str_eq(u.password, "in-url");
    u = parse_ok("var/discern.db");
    cr_assert_eq(dsc__store_url_env(&u, "from-env", &err), DSC_OK);
    cr_assert_str_eq(u.password, "");
    char huge[400];
    memset(huge, 'p', sizeof huge - 1);
    huge[sizeof huge - 1] = '\0';
    u = parse_ok("redis://127.0.0.1");
    cr_assert_eq(dsc__store_url_env(&u, huge, &err), DSC_BAD_REQUEST);
    cr_assert(strstr(err.message, "DISCERN_REDIS_PASSWORD"), "%s", err.message);
}

Test(store_url, the_description_for_logs_never_shows_the_password) {
    char out[256];
    dsc__store_url u = parse_ok("redis://:s3cret@127.0.0.1:6380/2");
    dsc__store_url_describe(&u, out, sizeof out);
    cr_assert_str_eq(out, "redis://(password)@127.0.0.1:6380/2");
    u = parse_ok("redis://[::1]");
    dsc__store_url_describe(&u, out, sizeof out);
    cr_assert_str_eq(out, "redis://[::1]:6379/0");
}
