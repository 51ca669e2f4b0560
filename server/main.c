/*
 * main.c - the discernd executable: configuration, then dsc_server_run.
 *
 * Exit codes: 0 after a clean drain (SIGTERM/SIGINT) or --help, 1 when the server
 * could not drain cleanly, 2 for a bad flag or config, 3 when it could not start
 * (a listener could not bind, the catalogue or policies could not load).
 */
#include "server.h"

#include <signal.h>
#include <sqlite3.h>
#include <stdio.h>

int main(int argc, char **argv) {
    /* A full disk or a file-size limit must fail the store's write (the ledger then
     * reports store_unavailable and retries), not kill the server; a peer that went
     * away is seen by send() returning EPIPE. */
    signal(SIGXFSZ, SIG_IGN);
    signal(SIGPIPE, SIG_IGN);
    /* Nothing reads SQLite's allocation statistics; without them each of its mallocs
     * skips a process-wide mutex. Only before SQLite's first use. */
    sqlite3_config(SQLITE_CONFIG_MEMSTATUS, 0);
    dsc_server_config cfg;
    dsc_server_config_default(&cfg);
    dsc_error err;
    bool help = false;
    if (dsc_server_config_from_args(&cfg, argc, argv, &help, &err) != DSC_OK) {
        fprintf(stderr, "discernd: %s\n", err.message);
        return 2;
    }
    if (help) {
        dsc_server_config_usage(stdout);
        return 0;
    }
    dsc_server *srv = dsc_server_new(&cfg, &err);
    if (!srv) {
        fprintf(stderr, "discernd: %s: %s\n", dsc_status_wire(err.code), err.message);
        return 3;
    }
    int code = dsc_server_run(srv);
    dsc_server_free(srv);
    return code;
}
