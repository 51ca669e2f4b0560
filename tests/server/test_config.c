/*
 * test_config.c - discernd's configuration (server/config.c): defaults, the file
 * format, flags over file over defaults, the admin token's environment variable,
 * and errors that name the line, key and value.
 */
#include "config.h"

#include <criterion/criterion.h>
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char path[64];

static void write_file(const char *text) {
    strcpy(path, "/tmp/discernd-conf-XXXXXX");
    int fd = mkstemp(path);
    cr_assert_geq(fd, 0);
    FILE *f = fdopen(fd, "w");
    fputs(text, f);
    fclose(f);
}

static void cleanup(void) {
    if (path[0]) unlink(path);
    path[0] = '\0';
    unsetenv("DISCERN_ADMIN_TOKEN");
}

TestSuite(config, .fini = cleanup);

static dsc_status from_args(dsc_server_config *cfg, int argc, const char **argv, bool *help,
                            dsc_error *err) {
    dsc_server_config_default(cfg);
    return dsc_server_config_from_args(cfg, argc, (char **)argv, help, err);
}

Test(config, defaults_are_the_documented_ones) {
    dsc_server_config cfg;
    dsc_server_config_default(&cfg);
    cr_assert_str_eq(cfg.listen, "127.0.0.1:7878");
    cr_assert_str_eq(cfg.http, "127.0.0.1:7879");
    cr_assert_str_eq(cfg.unix_path, "var/discernd.sock");
    cr_assert_eq(cfg.unix_mode, 0660);
    cr_assert(cfg.require_auth);
    cr_assert_not(cfg.allow_insecure_bind);
    cr_assert_eq(cfg.limits.max_message_bytes, 65536);
    cr_assert_eq(cfg.limits.max_depth, 16);
    cr_assert_eq(cfg.max_inflight, 256);
    cr_assert_eq(cfg.failure_mode, DSC_FAIL_CLOSED);
    cr_assert_eq(cfg.n_unix_admin_uids, 1);
    cr_assert_eq(cfg.unix_admin_uids[0], getuid());
}

Test(config, the_shipped_file_loads_and_says_what_the_defaults_say) {
    dsc_server_config cfg, def;
    dsc_server_config_default(&cfg);
    dsc_server_config_default(&def);
    dsc_error err;
    cr_assert_eq(dsc_server_config_load(&cfg, DISCERN_SOURCE_DIR "/server/discernd.conf", &err),
                 DSC_OK, "%s", err.message);
    cr_assert_eq(memcmp(&cfg, &def, sizeof cfg), 0,
                 "discernd.conf and the built-in defaults disagree");
}

Test(config, file_values_with_comments_quotes_and_spaces) {
    write_file("# a comment\n\n  listen = \"0.0.0.0:9000\"   # trailing comment\n"
               "workers=3\nfailure_mode = open\nunix_admin_uids = \"0, 1000\"\n"
               "admin_token = \"has # hash\"\n");
    dsc_server_config cfg;
    dsc_server_config_default(&cfg);
    dsc_error err;
    cr_assert_eq(dsc_server_config_load(&cfg, path, &err), DSC_OK, "%s", err.message);
    cr_assert_str_eq(cfg.listen, "0.0.0.0:9000");
    cr_assert_eq(cfg.workers, 3);
    cr_assert_eq(cfg.failure_mode, DSC_FAIL_OPEN);
    cr_assert_eq(cfg.n_unix_admin_uids, 2);
    cr_assert_eq(cfg.unix_admin_uids[1], 1000);
    cr_assert_str_eq(cfg.admin_token, "has # hash");
}

Test(config, errors_name_the_file_line_key_and_value) {
    dsc_server_config cfg;
    dsc_error err;
    write_file("workers = 2\nworkerz = 3\n");
    dsc_server_config_default(&cfg);
    cr_assert_eq(dsc_server_config_load(&cfg, path, &err), DSC_BAD_REQUEST);
    cr_assert(strstr(err.message, "line 2: unknown key 'workerz'"), "%s", err.message);
    cleanup();
    write_file("max_depth = 1000\n");
    cr_assert_eq(dsc_server_config_load(&cfg, path, &err), DSC_BAD_REQUEST);
    cr_assert(strstr(err.message, "max_depth: '1000' is not an integer in [2, 64]"), "%s",
              err.message);
    cleanup();
    write_file("listen = \"unterminated\n");
    cr_assert_eq(dsc_server_config_load(&cfg, path, &err), DSC_BAD_REQUEST);
    cr_assert(strstr(err.message, "line 1: expected key = value"), "%s", err.message);
    cleanup();
    write_file("failure_mode = ajar\n");
    cr_assert_eq(dsc_server_config_load(&cfg, path, &err), DSC_BAD_REQUEST);
    cr_assert(strstr(err.message, "failure_mode: unknown value 'ajar'"), "%s", err.message);
    cr_assert_eq(dsc_server_config_load(&cfg, "/nonexistent/discernd.conf", &err), DSC_IO);
    cr_assert(strstr(err.message, "/nonexistent/discernd.conf"), "%s", err.message);
}

Test(config, flags_override_the_file_wherever_config_appears) {
    write_file("workers = 2\nlisten = \"127.0.0.1:1\"\n");
    dsc_server_config cfg;
    dsc_error err;
    bool help;
    const char *argv[] = {"discernd", "--workers", "5", "--config", path, "--listen=127.0.0.1:0"};
    cr_assert_eq(from_args(&cfg, 6, argv, &help, &err), DSC_OK, "%s", err.message);
    cr_assert_eq(cfg.workers, 5);
    cr_assert_str_eq(cfg.listen, "127.0.0.1:0");
    cr_assert_not(help);
}

Test(config, the_environment_token_overrides_the_file_and_the_flag_overrides_both) {
    write_file("admin_token = \"from-file\"\n");
    setenv("DISCERN_ADMIN_TOKEN", "from-env", 1);
    dsc_server_config cfg;
    dsc_error err;
    bool help;
    const char *a1[] = {"discernd", "--config", path};
    cr_assert_eq(from_args(&cfg, 3, a1, &help, &err), DSC_OK);
    cr_assert_str_eq(cfg.admin_token, "from-env");
    const char *a2[] = {"discernd", "--config", path, "--admin-token", "from-flag"};
    cr_assert_eq(from_args(&cfg, 5, a2, &help, &err), DSC_OK);
    cr_assert_str_eq(cfg.admin_token, "from-flag");
}

Test(config, bad_flags_are_refused_and_help_is_reported) {
    dsc_server_config cfg;
    dsc_error err;
    bool help;
    const char *unknown[] = {"discernd", "--listne", "x"};
    cr_assert_eq(from_args(&cfg, 3, unknown, &help, &err), DSC_BAD_REQUEST);
    cr_assert_str_eq(err.message, "unknown flag '--listne' (see --help)");
    const char *missing[] = {"discernd", "--workers"};
    cr_assert_eq(from_args(&cfg, 2, missing, &help, &err), DSC_BAD_REQUEST);
    cr_assert_str_eq(err.message, "--workers needs a value");
    const char *bad[] = {"discernd", "--workers", "many"};
    cr_assert_eq(from_args(&cfg, 3, bad, &help, &err), DSC_BAD_REQUEST);
    cr_assert(strstr(err.message, "workers: 'many'"), "%s", err.message);
    const char *h[] = {"discernd", "--help"};
    cr_assert_eq(from_args(&cfg, 2, h, &help, &err), DSC_OK);
    cr_assert(help);
}

Test(config, unix_admin_uids_take_self_none_or_numbers) {
    dsc_server_config cfg;
    dsc_server_config_default(&cfg);
    dsc_error err;
    cr_assert_eq(dsc_server_config_set(&cfg, "unix_admin_uids", "none", &err), DSC_OK);
    cr_assert_eq(cfg.n_unix_admin_uids, 0);
    cr_assert_eq(dsc_server_config_set(&cfg, "unix_admin_uids", "self,42", &err), DSC_OK);
    cr_assert_eq(cfg.n_unix_admin_uids, 2);
    cr_assert_eq(cfg.unix_admin_uids[0], getuid());
    cr_assert_eq(cfg.unix_admin_uids[1], 42);
    cr_assert_eq(dsc_server_config_set(&cfg, "unix_admin_uids", "root", &err), DSC_BAD_REQUEST);
    cr_assert(strstr(err.message, "'root'"), "%s", err.message);
}

/* ------------------------------------------------------- the corpus of bad files -- */

#define FIXTURES DISCERN_SOURCE_DIR "/tests/server/fixtures/config"

/* Every file in fixtures/config/bad/, the line it fails on and what the message must
 * name (the key, or what is wrong with the line). */
static const struct bad_file {
    const char *file;
    int line;
    const char *names;
} bad_files[] = {
    {"unknown_key.conf", 3, "unknown key 'workerz'"},
    {"bad_timezone.conf", 2, "timezone: 'Mars'"},
    {"listen_not_an_address.conf", 1, "listen: 'localhost'"},
    {"listen_port_out_of_range.conf", 1, "listen: '127.0.0.1:99999'"},
    {"http_without_port.conf", 1, "http: '127.0.0.1' is not HOST:PORT"},
    {"unknown_durability.conf", 1, "durability: unknown value 'sometimes'"},
    {"negative_number.conf", 1, "max_connections: '-1'"},
    {"number_with_a_unit.conf", 1, "idle_timeout_s: '10s'"},
    {"number_overflow.conf", 1, "hold_ttl_s: '99999999999999999999'"},
    {"missing_equals.conf", 2, "expected key = value"},
    {"unterminated_quote.conf", 1, "expected key = value"},
    {"text_after_the_quote.conf", 1, "expected key = value"},
    {"uid_not_a_number.conf", 1, "unix_admin_uids: 'root'"},
    {"unix_path_too_long.conf", 1, "unix: path longer than"},
    {"unknown_log_level.conf", 1, "log_level: unknown value 'loud'"},
    {"unknown_failure_mode.conf", 1, "failure_mode: unknown value 'ajar'"},
    {"policy_memory_too_large.conf", 1, "policy_memory_mb: '100000'"},
    {"frame_timeout_zero.conf", 1, "frame_timeout_s: '0'"},
    {"nul_byte.conf", 2, "holds a NUL byte"},
    {"store_redis_bad_port.conf", 1, "store: the port is not in [1, 65535]"},
    {"store_unknown_scheme.conf", 1, "store: 'rediss://10.0.0.1:6379' is neither"},
    {"redis_prefix_with_brace.conf", 1, "redis_prefix: only printable bytes"},
    {"long_line.conf", 2, "longer than 65536 bytes"},
};

#define N_BAD_FILES (sizeof bad_files / sizeof bad_files[0])

Test(config, every_file_of_the_bad_corpus_is_refused_naming_its_file_line_and_key) {
    for (size_t i = 0; i < N_BAD_FILES; i++) {
        char file[512], want[600];
        snprintf(file, sizeof file, FIXTURES "/bad/%s", bad_files[i].file);
        snprintf(want, sizeof want, "config '%s' line %d: %s", file, bad_files[i].line,
                 bad_files[i].names);
        dsc_server_config cfg;
        dsc_server_config_default(&cfg);
        dsc_error err;
        cr_expect_eq(dsc_server_config_load(&cfg, file, &err), DSC_BAD_REQUEST, "%s loaded",
                     bad_files[i].file);
        cr_expect(strncmp(err.message, want, strlen(want)) == 0, "%s:\n got  %s\n want %s...",
                  bad_files[i].file, err.message, want);
    }
}

Test(config, the_bad_corpus_and_its_table_hold_the_same_files) {
    DIR *d = opendir(FIXTURES "/bad");
    cr_assert_not_null(d);
    size_t files = 0;
    for (struct dirent *e; (e = readdir(d)) != NULL;) {
        if (e->d_name[0] == '.') continue;
        files++;
        bool listed = false;
        for (size_t i = 0; i < N_BAD_FILES; i++)
            listed = listed || strcmp(bad_files[i].file, e->d_name) == 0;
        cr_expect(listed, "fixtures/config/bad/%s has no expected error here", e->d_name);
    }
    closedir(d);
    cr_assert_eq(files, N_BAD_FILES);
}

Test(config, a_byte_order_mark_and_crlf_line_ends_are_accepted) {
    dsc_server_config cfg;
    dsc_server_config_default(&cfg);
    dsc_error err;
    cr_assert_eq(dsc_server_config_load(&cfg, FIXTURES "/good/bom_and_crlf.conf", &err), DSC_OK,
                 "%s", err.message);
    cr_assert_eq(cfg.workers, 3);
    cr_assert_str_eq(cfg.durability, "batch");
}

Test(config, a_long_comment_is_never_split_into_a_key) {
    dsc_server_config cfg;
    dsc_server_config_default(&cfg);
    dsc_error err;
    cr_assert_eq(
        dsc_server_config_load(&cfg, FIXTURES "/good/long_comment_stays_a_comment.conf", &err),
        DSC_OK, "%s", err.message);
    cr_assert_str_eq(cfg.durability, "full", "the comment's tail was read as a key");
    cr_assert_eq(cfg.workers, 3);
}

Test(config, a_line_of_exactly_the_limit_loads_and_one_byte_more_is_refused) {
    char *text = malloc(65536 + 16);
    cr_assert_not_null(text);
    memset(text, 'x', 65536);
    text[0] = '#';
    strcpy(text + 65536, "\nworkers = 4\n");
    write_file(text);
    dsc_server_config cfg;
    dsc_server_config_default(&cfg);
    dsc_error err;
    cr_assert_eq(dsc_server_config_load(&cfg, path, &err), DSC_OK, "%s", err.message);
    cr_assert_eq(cfg.workers, 4);
    cleanup();
    memset(text, 'x', 65537);
    text[0] = '#';
    strcpy(text + 65537, "\nworkers = 4\n");
    write_file(text);
    cr_assert_eq(dsc_server_config_load(&cfg, path, &err), DSC_BAD_REQUEST);
    cr_assert(strstr(err.message, "line 1: longer than 65536 bytes"), "%s", err.message);
    free(text);
}

/* ------------------------------------------------------ one table, flags and keys -- */

/* The keys of the shipped discernd.conf, in order. */
static size_t shipped_keys(char keys[][64], size_t max) {
    FILE *f = fopen(DISCERN_SOURCE_DIR "/server/discernd.conf", "r");
    cr_assert_not_null(f);
    char line[1024];
    size_t n = 0;
    while (n < max && fgets(line, sizeof line, f))
        if (line[0] != '#' && sscanf(line, "%63[a-z_] =", keys[n]) == 1) n++;
    fclose(f);
    return n;
}

static char *usage_text(void) {
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    cr_assert_not_null(f);
    dsc_server_config_usage(f);
    fclose(f);
    return buf;
}

Test(config, every_key_of_the_shipped_file_has_a_flag_listed_in_help_with_its_default) {
    char keys[64][64];
    size_t n = shipped_keys(keys, 64);
    cr_assert_geq(n, 27, "only %zu keys in discernd.conf", n);
    char *help = usage_text();
    dsc_server_config def;
    dsc_server_config_default(&def);
    for (size_t i = 0; i < n; i++) {
        char flag[80], shown[80];
        snprintf(flag, sizeof flag, "--%s ", keys[i]);
        for (char *p = flag + 2; *p; p++)
            if (*p == '_') *p = '-';
        snprintf(shown, sizeof shown, "(%s = ", keys[i]);
        cr_expect(strstr(help, flag), "--help does not list %s", flag);
        cr_expect(strstr(help, shown), "--help does not show the default of %s", keys[i]);
    }
    cr_expect(strstr(help, "(max_connections = 0)"), "%s", help);
    cr_expect(strstr(help, "(timezone = \"UTC\")"), "%s", help);
    cr_expect(strstr(help, "(durability = full)"), "%s", help);
    cr_expect(strstr(help, "(hold_ttl_s = 300)"), "%s", help);
    cr_expect(strstr(help, "(policy_time_budget_us = 1000)"), "%s", help);
    cr_expect(strstr(help, "(policy_memory_mb = 32)"), "%s", help);
    free(help);
}

Test(config, a_flag_sets_what_its_key_sets_in_the_file) {
    const char *argv[] = {"discernd",
                          "--durability",
                          "batch",
                          "--timezone=+02:00",
                          "--hold-ttl-s",
                          "60",
                          "--policy-time-budget-us",
                          "5000",
                          "--policy-memory-mb=8",
                          "--frame-timeout-s",
                          "3",
                          "--max-connections-per-address",
                          "7",
                          "--unix-admin-uids",
                          "none"};
    dsc_server_config cfg;
    dsc_error err;
    bool help;
    cr_assert_eq(from_args(&cfg, 15, argv, &help, &err), DSC_OK, "%s", err.message);
    cr_assert_str_eq(cfg.durability, "batch");
    cr_assert_str_eq(cfg.timezone, "+02:00");
    cr_assert_eq(cfg.hold_ttl_s, 60);
    cr_assert_eq(cfg.policy_time_budget_us, 5000);
    cr_assert_eq(cfg.policy_memory_mb, 8);
    cr_assert_eq(cfg.frame_timeout_s, 3);
    cr_assert_eq(cfg.max_connections_per_address, 7);
    cr_assert_eq(cfg.n_unix_admin_uids, 0);
    const char *bad[] = {"discernd", "--timezone", "Mars"};
    cr_assert_eq(from_args(&cfg, 3, bad, &help, &err), DSC_BAD_REQUEST);
    cr_assert(strstr(err.message, "timezone: 'Mars'"), "%s", err.message);
    const char *underscore[] = {"discernd", "--hold_ttl_s", "60"};
    cr_assert_eq(from_args(&cfg, 3, underscore, &help, &err), DSC_BAD_REQUEST);
}

Test(config, journal_retention_days_keeps_everything_by_default_and_takes_whole_days) {
    dsc_server_config cfg;
    dsc_server_config_default(&cfg);
    cr_assert_eq(cfg.journal_retention_days, 0);
    const char *argv[] = {"discernd", "--journal-retention-days", "90"};
    dsc_error err;
    bool help;
    cr_assert_eq(from_args(&cfg, 3, argv, &help, &err), DSC_OK, "%s", err.message);
    cr_assert_eq(cfg.journal_retention_days, 90);
    const char *bad[] = {"discernd", "--journal-retention-days", "-1"};
    cr_assert_eq(from_args(&cfg, 3, bad, &help, &err), DSC_BAD_REQUEST);
    cr_assert(strstr(err.message, "journal_retention_days"), "%s", err.message);
}

Test(config, redis_state_max_age_ms_is_100_by_default_and_bounded) {
    dsc_server_config cfg;
    dsc_server_config_default(&cfg);
    cr_assert_eq(cfg.redis_state_max_age_ms, 100);
    const char *argv[] = {"discernd", "--redis-state-max-age-ms", "0"};
    dsc_error err;
    bool help;
    cr_assert_eq(from_args(&cfg, 3, argv, &help, &err), DSC_OK, "%s", err.message);
    cr_assert_eq(cfg.redis_state_max_age_ms, 0);
    const char *bad[] = {"discernd", "--redis-state-max-age-ms", "10001"};
    cr_assert_eq(from_args(&cfg, 3, bad, &help, &err), DSC_BAD_REQUEST);
    cr_assert(strstr(err.message, "redis_state_max_age_ms"), "%s", err.message);
}

Test(config, every_key_of_the_shipped_file_is_in_the_operations_reference) {
    char keys[64][64];
    size_t n = shipped_keys(keys, 64);
    FILE *f = fopen(DISCERN_SOURCE_DIR "/docs/operations.md", "r");
    cr_assert_not_null(f);
    static char doc[1 << 20];
    size_t len = fread(doc, 1, sizeof doc - 1, f);
    fclose(f);
    doc[len] = '\0';
    for (size_t i = 0; i < n; i++) {
        char quoted[80];
        snprintf(quoted, sizeof quoted, "`%s`", keys[i]);
        cr_expect(strstr(doc, quoted), "docs/operations.md does not document %s", quoted);
    }
}

Test(config, unix_mode_is_octal_and_booleans_are_true_or_false) {
    dsc_server_config cfg;
    dsc_server_config_default(&cfg);
    dsc_error err;
    cr_assert_eq(dsc_server_config_set(&cfg, "unix_mode", "0600", &err), DSC_OK);
    cr_assert_eq(cfg.unix_mode, 0600);
    cr_assert_eq(dsc_server_config_set(&cfg, "unix_mode", "770", &err), DSC_OK);
    cr_assert_eq(cfg.unix_mode, 0770);
    cr_assert_eq(dsc_server_config_set(&cfg, "unix_mode", "0968", &err), DSC_BAD_REQUEST);
    cr_assert_str_eq(err.message, "unix_mode: '0968' is not an octal permission mode like 0660");
    cr_assert_eq(dsc_server_config_set(&cfg, "unix_mode", "01777", &err), DSC_BAD_REQUEST);
    cr_assert_eq(dsc_server_config_set(&cfg, "require_auth", "false", &err), DSC_OK);
    cr_assert_not(cfg.require_auth);
    cr_assert_eq(dsc_server_config_set(&cfg, "require_auth", "no", &err), DSC_BAD_REQUEST);
    cr_assert_str_eq(err.message, "require_auth: 'no' is not true or false");
}

Test(config, a_non_loopback_bind_without_require_auth_is_refused_unless_forced) {
    dsc_server_config cfg;
    dsc_server_config_default(&cfg);
    dsc_error err;
    cr_assert_eq(dsc_server_config_check(&cfg, &err), DSC_OK, "the defaults are safe");
    strcpy(cfg.listen, "0.0.0.0:7878");
    cr_assert_eq(dsc_server_config_check(&cfg, &err), DSC_OK, "require_auth guards it");
    cfg.require_auth = false;
    cr_assert_eq(dsc_server_config_check(&cfg, &err), DSC_BAD_REQUEST);
    cr_assert(strstr(err.message, "listen: refusing 0.0.0.0:7878 with require_auth = false: not "
                                  "loopback"),
              "%s", err.message);
    cr_assert(strstr(err.message, "--insecure-bind"), "%s", err.message);
    const char *loopback[] = {"127.0.0.1:1", "127.8.9.10:1", "[::1]:1", "[::ffff:127.0.0.1]:1"};
    for (size_t i = 0; i < sizeof loopback / sizeof loopback[0]; i++) {
        strcpy(cfg.listen, loopback[i]);
        cr_assert_eq(dsc_server_config_check(&cfg, &err), DSC_OK, "%s is loopback", loopback[i]);
    }
    strcpy(cfg.http, "[2001:db8::1]:7879");
    cr_assert_eq(dsc_server_config_check(&cfg, &err), DSC_BAD_REQUEST);
    cr_assert(strstr(err.message, "http: refusing [2001:db8::1]:7879"), "%s", err.message);
    bool help;
    const char *argv[] = {"discernd", "--insecure-bind"};
    cr_assert_eq(from_args(&cfg, 2, argv, &help, &err), DSC_OK, "%s", err.message);
    cr_assert(cfg.allow_insecure_bind);
    cfg.require_auth = false;
    strcpy(cfg.listen, "192.0.2.7:7878");
    cr_assert_eq(dsc_server_config_check(&cfg, &err), DSC_OK, "forced");
}

Test(config, require_auth_defaults_to_true_and_takes_only_true_or_false) {
    dsc_server_config cfg;
    dsc_server_config_default(&cfg);
    cr_assert(cfg.require_auth);
    dsc_error err;
    cr_assert_eq(dsc_server_config_set(&cfg, "require_auth", "false", &err), DSC_OK);
    cr_assert_not(cfg.require_auth);
    cr_assert_eq(dsc_server_config_set(&cfg, "require_auth", "yes", &err), DSC_BAD_REQUEST);
    cr_assert(strstr(err.message, "require_auth"), "%s", err.message);
    bool help = false;
    const char *argv[] = {"discernd", "--require-auth", "true"};
    cr_assert_eq(from_args(&cfg, 3, argv, &help, &err), DSC_OK, "%s", err.message);
    cr_assert(cfg.require_auth);
}
