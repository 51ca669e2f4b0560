/*
 * fuzz_config.c - libFuzzer target for the discernd config file parser
 * (server/config.c): the input is written as a config file and read over the
 * defaults by dsc_server_config_load, as `discernd --config FILE` does. Whatever
 * it accepts must leave the limits within the ranges the scanner needs.
 */
#include "config.h"
#include "fuzz_util.h"

#include <stdio.h>
#include <stdlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const char *dir = fuzz_dir();
    char path[512];
    snprintf(path, sizeof path, "%s/discernd.conf", dir);
    if (!fuzz_write(dir, "discernd.conf", data, size)) abort();
    dsc_server_config cfg;
    dsc_server_config_default(&cfg);
    dsc_error err;
    if (dsc_server_config_load(&cfg, path, &err) == DSC_OK &&
        (cfg.limits.max_depth > DSC_RPC_DEPTH_CAP || cfg.limits.max_message_bytes == 0))
        abort();
    return 0;
}
