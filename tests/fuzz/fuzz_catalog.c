/*
 * fuzz_catalog.c - libFuzzer target for the catalogue loaders (core/catalog.c): the
 * first input byte picks one of models.json, providers.json, electricity_mixes.csv,
 * prices.json and serving.json, the rest of the input becomes that file, and the
 * others are small valid files (tests/fuzz/catalog_base). Then dsc_catalog_load reads the
 * folder as the daemon does at start; a catalogue that loads is looked up, so that
 * what the loaders accept is usable.
 */
#include "fuzz_util.h"

#include "discern/catalog.h"

#include <stdio.h>
#include <stdlib.h>

static const char *const files[] = {"models.json", "providers.json", "electricity_mixes.csv",
                                    "prices.json", "serving.json"};
#define N_FILES (sizeof files / sizeof files[0])

static char *base[N_FILES];
static size_t base_len[N_FILES];

static char *slurp(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    char *buf = malloc(1 << 16);
    *len = buf ? fread(buf, 1, 1 << 16, f) : 0;
    fclose(f);
    return buf;
}

/* Read the valid files once, and check that they load: a broken base would make
 * every input fail the same way and hide the loader behind it. */
static void setup(const char *dir) {
    char path[512];
    for (size_t i = 0; i < N_FILES; i++) {
        snprintf(path, sizeof path, "%s/%s", DISCERN_FUZZ_CATALOG_BASE, files[i]);
        if (!(base[i] = slurp(path, &base_len[i]))) abort();
        if (!fuzz_write(dir, files[i], base[i], base_len[i])) abort();
    }
    dsc_error err;
    dsc_catalog *cat = dsc_catalog_load(dir, &err);
    if (!cat) {
        fprintf(stderr, "fuzz_catalog: the base catalogue does not load: %s\n", err.message);
        abort();
    }
    dsc_catalog_free(cat);
}

static void look_up(const dsc_catalog *cat) {
    for (size_t i = 0; i < dsc_catalog_model_count(cat); i++) {
        const dsc_model *m = dsc_catalog_model_at(cat, i);
        if (!m) abort();
    }
    for (size_t i = 0; i < dsc_catalog_zone_count(cat); i++)
        if (!dsc_catalog_zone_at(cat, i)) abort();
    (void)dsc_catalog_model(cat, "openai", "gpt-4o");
    (void)dsc_catalog_zone(cat, "FRA");
    (void)dsc_catalog_price(cat, "openai", "gpt-4o");
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const char *dir = fuzz_dir();
    if (!base[0]) setup(dir);
    if (size < 1) return 0;
    size_t which = data[0] % N_FILES;
    if (!fuzz_write(dir, files[which], data + 1, size - 1)) abort();
    dsc_error err;
    dsc_catalog *cat = dsc_catalog_load(dir, &err);
    if (cat) look_up(cat);
    dsc_catalog_free(cat);
    if (!fuzz_write(dir, files[which], base[which], base_len[which])) abort();
    return 0;
}
