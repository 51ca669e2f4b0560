/*
 * test_config.c - discernd's configuration (server/config.c): defaults, the file
 * format, flags over file over defaults, the admin token's environment variable,
 * and errors that name the line, key and value.
 */
#include "config.h"

#include <criterion/criterion.h>
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
    cr_assert_str_eq(cfg.unix_path, "/tmp/discernd.sock");
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
