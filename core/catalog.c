/*
 * catalog.c - load the EcoLogits-format catalogue and answer lookups fast.
 *
 * Why: every estimate resolves (provider, model), the provider's datacentre and a
 * zone's electricity mix. Those lookups must cost nanoseconds, so the catalogue is
 * parsed once (JSON with jansson; the five-column mixes CSV by hand, it has no
 * quoting) into flat arrays with open-addressing hash tables over them. The optional
 * prices.json attaches a list price to some models (for the ledger's cost metric);
 * the optional serving.json holds what the discern method assumes (accelerators,
 * serving profiles per provider, model overrides, lifecycle, images, embeddings).
 *
 * Layout: models are sorted by (provider, name), so one provider's models are
 * contiguous (dsc_catalog_provider_models). The model table maps both model names
 * and aliases to model indices. All strings are owned by the catalogue.
 *
 * API: see discern/catalog.h.
 */
#include "discern/catalog.h"

#include <ctype.h>
#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define NONE UINT32_MAX
#define PATH_MAX_LEN 4096
#define MIXES_MAX_BYTES (16u << 20)
/* Parameter counts accepted, in billions: positive, and small enough that the GPU
 * count of the estimate (about 0.03 per billion) stays a small integer. */
#define PARAMS_MIN_B 1e-9
#define PARAMS_MAX_B 1e6
#define PARAMS_RULE "a number of billions in (0, 1e6] or {\"min\",\"max\"} of them"

/* ---- hash table: open addressing, linear probing, keys are (a, b) string pairs ---- */

typedef struct slot {
    uint64_t hash;
    const char *a, *b; /* a == NULL: empty */
    uint32_t value;
} slot;

typedef struct table {
    slot *slots;
    size_t mask;
} table;

static uint64_t hash_pair(const char *a, const char *b) {
    uint64_t h = 1469598103934665603ull; /* FNV-1a 64 */
    for (const unsigned char *p = (const unsigned char *)a; *p; p++)
        h = (h ^ *p) * 1099511628211ull;
    h = (h ^ 0xffu) * 1099511628211ull; /* separator: ("ab","c") != ("a","bc") */
    for (const unsigned char *p = (const unsigned char *)b; *p; p++)
        h = (h ^ *p) * 1099511628211ull;
    return h;
}

static int table_init(table *t, size_t n) {
    size_t cap = 16;
    while (cap < 2 * n)
        cap <<= 1;
    t->slots = calloc(cap, sizeof *t->slots);
    t->mask = cap - 1;
    return t->slots ? 0 : -1;
}

/* Insert (a, b) -> value; returns the value already stored for that key, or NONE. */
static uint32_t table_put(table *t, const char *a, const char *b, uint32_t value) {
    uint64_t h = hash_pair(a, b);
    for (size_t i = h & t->mask;; i = (i + 1) & t->mask) {
        slot *s = &t->slots[i];
        if (!s->a) {
            *s = (slot){h, a, b, value};
            return NONE;
        }
        if (s->hash == h && strcmp(s->a, a) == 0 && strcmp(s->b, b) == 0) return s->value;
    }
}

static uint32_t table_get(const table *t, const char *a, const char *b) {
    if (!t->slots) return NONE;
    uint64_t h = hash_pair(a, b);
    for (size_t i = h & t->mask;; i = (i + 1) & t->mask) {
        const slot *s = &t->slots[i];
        if (!s->a) return NONE;
        if (s->hash == h && strcmp(s->a, a) == 0 && strcmp(s->b, b) == 0) return s->value;
    }
}

/* ---- the catalogue ---- */

struct dsc_catalog {
    dsc_model *models;
    size_t n_models;
    dsc_alias *aliases;
    size_t n_aliases;
    dsc_zone *zones;
    size_t n_zones;
    dsc_provider *providers;
    size_t n_providers;
    dsc_price *prices;
    size_t n_prices;
    uint32_t *price_of_model; /* per model index: index into prices, or NONE */
    char currency[16];        /* "" without prices.json */
    char **strings;           /* every string the records point to */
    size_t n_strings, cap_strings;
    table model_index, zone_index, provider_index;
    /* serving.json (optional) */
    int has_method_data;
    dsc_method_data method;
    dsc_accelerator *accelerators;
    size_t n_accelerators;
    dsc_serving_provider *serving_providers;
    size_t n_serving_providers;
    dsc_serving_model *serving_models;
    size_t n_serving_models;
    dsc_lifecycle lifecycle_default;
    dsc_lifecycle *lifecycles;
    size_t n_lifecycles;
    table serving_provider_index, serving_model_index, lifecycle_index;
};

/* A copy of s owned by cat; NULL on out of memory. */
static const char *own(dsc_catalog *cat, const char *s) {
    if (cat->n_strings == cat->cap_strings) {
        size_t cap = cat->cap_strings ? 2 * cat->cap_strings : 256;
        char **grown = realloc(cat->strings, cap * sizeof *grown);
        if (!grown) return NULL;
        cat->strings = grown;
        cat->cap_strings = cap;
    }
    size_t len = strlen(s);
    char *copy = malloc(len + 1);
    if (!copy) return NULL;
    memcpy(copy, s, len + 1);
    cat->strings[cat->n_strings++] = copy;
    return copy;
}

void dsc_catalog_free(dsc_catalog *cat) {
    if (!cat) return;
    for (size_t i = 0; i < cat->n_strings; i++)
        free(cat->strings[i]);
    free(cat->strings);
    free(cat->models);
    free(cat->aliases);
    free(cat->zones);
    free(cat->providers);
    free(cat->prices);
    free(cat->price_of_model);
    free(cat->model_index.slots);
    free(cat->zone_index.slots);
    free(cat->provider_index.slots);
    free(cat->accelerators);
    free(cat->serving_providers);
    free(cat->serving_models);
    free(cat->lifecycles);
    free(cat->serving_provider_index.slots);
    free(cat->serving_model_index.slots);
    free(cat->lifecycle_index.slots);
    free(cat);
}

static dsc_status nomem(dsc_error *err, const char *path) {
    return dsc_error_set(err, DSC_NOMEM, "%s: out of memory while loading", path);
}

static void join_path(char *out, size_t cap, const char *dir, const char *file) {
    snprintf(out, cap, "%s/%s", (dir && *dir) ? dir : ".", file);
}

/* Parse path with jansson; NULL with err naming the file and line:column on failure. */
static json_t *load_json(const char *path, dsc_error *err) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        dsc_error_set(err, DSC_IO, "cannot read '%s': %s", path, strerror(errno));
        return NULL;
    }
    json_error_t je;
    json_t *root = json_loadf(f, JSON_REJECT_DUPLICATES, &je);
    fclose(f);
    if (!root) dsc_error_set(err, DSC_PARSE, "%s:%d:%d: %s", path, je.line, je.column, je.text);
    return root;
}

/* A finite number in [floor_value, ceiling], or {min, max} of them with min <= max. */
static int parse_range(const json_t *v, dsc_range *out, double floor_value, double ceiling) {
    if (json_is_number(v)) {
        out->min = out->max = json_number_value(v);
    } else if (json_is_object(v) && json_is_number(json_object_get(v, "min")) &&
               json_is_number(json_object_get(v, "max"))) {
        out->min = json_number_value(json_object_get(v, "min"));
        out->max = json_number_value(json_object_get(v, "max"));
    } else {
        return -1;
    }
    if (!isfinite(out->min) || !isfinite(out->max) || out->min > out->max) return -1;
    if (out->min < floor_value || out->max > ceiling) return -1;
    return 0;
}

/* ---- models.json ---- */

typedef struct model_ctx {
    const char *path;
    size_t i;
    const char *name;
    dsc_error *err;
} model_ctx;

static dsc_status model_bad(const model_ctx *c, const char *what) {
    return dsc_error_set(c->err, DSC_PARSE, "%s: models[%zu] ('%s'): %s", c->path, c->i,
                         c->name ? c->name : "?", what);
}

static dsc_status parse_architecture(const model_ctx *c, const json_t *arch, dsc_model *m) {
    const char *type = json_string_value(json_object_get(arch, "type"));
    const json_t *params = json_object_get(arch, "parameters");
    if (!type) return model_bad(c, "field 'architecture.type' must be \"dense\" or \"moe\"");
    if (strcmp(type, "dense") == 0) {
        m->arch = DSC_ARCH_DENSE;
        if (parse_range(params, &m->total_params_b, PARAMS_MIN_B, PARAMS_MAX_B) != 0)
            return model_bad(c, "field 'architecture.parameters' must be " PARAMS_RULE);
        m->active_params_b = m->total_params_b;
        return DSC_OK;
    }
    if (strcmp(type, "moe") != 0)
        return model_bad(c, "field 'architecture.type' must be \"dense\" or \"moe\"");
    m->arch = DSC_ARCH_MOE;
    if (parse_range(json_object_get(params, "total"), &m->total_params_b, PARAMS_MIN_B,
                    PARAMS_MAX_B) != 0)
        return model_bad(c, "field 'architecture.parameters.total' must be " PARAMS_RULE);
    if (parse_range(json_object_get(params, "active"), &m->active_params_b, PARAMS_MIN_B,
                    PARAMS_MAX_B) != 0)
        return model_bad(c, "field 'architecture.parameters.active' must be " PARAMS_RULE);
    return DSC_OK;
}

/* "deployment": {"tps": x|null, "ttft": y|null}, or null / absent. */
static dsc_status parse_deployment(const model_ctx *c, const json_t *dep, dsc_model *m) {
    if (!dep || json_is_null(dep)) return DSC_OK;
    if (!json_is_object(dep)) return model_bad(c, "field 'deployment' must be an object");
    const json_t *tps = json_object_get(dep, "tps"), *ttft = json_object_get(dep, "ttft");
    if (tps && !json_is_null(tps)) {
        if (!json_is_number(tps) || !(json_number_value(tps) > 0) ||
            !isfinite(json_number_value(tps)))
            return model_bad(c, "field 'deployment.tps' must be a positive number or null");
        m->tps = json_number_value(tps);
    }
    if (ttft && !json_is_null(ttft)) {
        if (!json_is_number(ttft) || !(json_number_value(ttft) >= 0) ||
            !isfinite(json_number_value(ttft)))
            return model_bad(c, "field 'deployment.ttft' must be a number >= 0 or null");
        m->ttft_s = json_number_value(ttft);
    }
    return DSC_OK;
}

/* Known warning codes become bits; unknown codes are ignored (they carry no math). */
static dsc_status parse_warnings(const model_ctx *c, const json_t *w, dsc_model *m) {
    if (!w || json_is_null(w)) return DSC_OK;
    if (!json_is_array(w)) return model_bad(c, "field 'warnings' must be an array or null");
    size_t i;
    const json_t *code;
    json_array_foreach(w, i, code) {
        const char *s = json_string_value(code);
        if (!s) return model_bad(c, "field 'warnings' must hold strings");
        if (strcmp(s, "model-arch-not-released") == 0) m->warnings |= DSC_WARN_ARCH_NOT_RELEASED;
        if (strcmp(s, "model-arch-multimodal") == 0) m->warnings |= DSC_WARN_ARCH_MULTIMODAL;
    }
    return DSC_OK;
}

static dsc_status parse_model(dsc_catalog *cat, model_ctx *c, const json_t *rec, dsc_model *m) {
    if (!json_is_object(rec)) return model_bad(c, "must be an object");
    const char *provider = json_string_value(json_object_get(rec, "provider"));
    c->name = json_string_value(json_object_get(rec, "name"));
    if (!provider || !*provider) return model_bad(c, "field 'provider' must be a non-empty string");
    if (!c->name || !*c->name) return model_bad(c, "field 'name' must be a non-empty string");
    const json_t *arch = json_object_get(rec, "architecture");
    if (!json_is_object(arch)) return model_bad(c, "field 'architecture' must be an object");
    dsc_status st = parse_architecture(c, arch, m);
    if (st == DSC_OK) st = parse_deployment(c, json_object_get(rec, "deployment"), m);
    if (st == DSC_OK) st = parse_warnings(c, json_object_get(rec, "warnings"), m);
    if (st != DSC_OK) return st;
    m->provider = own(cat, provider);
    m->name = own(cat, c->name);
    if (!m->provider || !m->name) return nomem(c->err, c->path);
    return DSC_OK;
}

static int model_cmp(const void *pa, const void *pb) {
    const dsc_model *a = pa, *b = pb;
    int c = strcmp(a->provider, b->provider);
    return c ? c : strcmp(a->name, b->name);
}

static dsc_status parse_models(dsc_catalog *cat, const char *path, const json_t *arr,
                               size_t n_aliases, dsc_error *err) {
    if (!json_is_array(arr))
        return dsc_error_set(err, DSC_PARSE, "%s: field 'models' must be an array", path);
    size_t n = json_array_size(arr);
    cat->models = calloc(n ? n : 1, sizeof *cat->models);
    if (!cat->models) return nomem(err, path);
    for (size_t i = 0; i < n; i++) {
        model_ctx c = {path, i, NULL, err};
        dsc_status st = parse_model(cat, &c, json_array_get(arr, i), &cat->models[i]);
        if (st != DSC_OK) return st;
        cat->n_models++;
    }
    qsort(cat->models, cat->n_models, sizeof *cat->models, model_cmp);
    if (table_init(&cat->model_index, n + n_aliases) != 0) return nomem(err, path);
    for (size_t i = 0; i < n; i++) {
        const dsc_model *m = &cat->models[i];
        if (table_put(&cat->model_index, m->provider, m->name, (uint32_t)i) != NONE)
            return dsc_error_set(err, DSC_PARSE, "%s: duplicate model '%s/%s'", path, m->provider,
                                 m->name);
    }
    return DSC_OK;
}

static dsc_status parse_alias(dsc_catalog *cat, const char *path, size_t i, const json_t *rec,
                              dsc_error *err) {
    const char *provider = json_string_value(json_object_get(rec, "provider"));
    const char *name = json_string_value(json_object_get(rec, "name"));
    const char *target = json_string_value(json_object_get(rec, "alias"));
    if (!provider || !name || !target || !*name)
        return dsc_error_set(err, DSC_PARSE,
                             "%s: aliases[%zu]: fields 'provider', 'name' and 'alias' must be "
                             "non-empty strings",
                             path, i);
    uint32_t idx = table_get(&cat->model_index, provider, target);
    if (idx == NONE)
        return dsc_error_set(err, DSC_PARSE,
                             "%s: aliases[%zu] ('%s'): points to unknown model '%s/%s'", path, i,
                             name, provider, target);
    dsc_alias *a = &cat->aliases[cat->n_aliases];
    a->provider = own(cat, provider);
    a->name = own(cat, name);
    a->target = &cat->models[idx];
    if (!a->provider || !a->name) return nomem(err, path);
    if (table_put(&cat->model_index, a->provider, a->name, idx) != NONE)
        return dsc_error_set(err, DSC_PARSE,
                             "%s: aliases[%zu]: '%s/%s' is already a model or alias", path, i,
                             provider, name);
    cat->n_aliases++;
    return DSC_OK;
}

static dsc_status parse_aliases(dsc_catalog *cat, const char *path, const json_t *arr,
                                dsc_error *err) {
    if (!arr || json_is_null(arr)) return DSC_OK;
    if (!json_is_array(arr))
        return dsc_error_set(err, DSC_PARSE, "%s: field 'aliases' must be an array", path);
    size_t n = json_array_size(arr);
    cat->aliases = calloc(n ? n : 1, sizeof *cat->aliases);
    if (!cat->aliases) return nomem(err, path);
    for (size_t i = 0; i < n; i++) {
        dsc_status st = parse_alias(cat, path, i, json_array_get(arr, i), err);
        if (st != DSC_OK) return st;
    }
    return DSC_OK;
}

static dsc_status load_models(dsc_catalog *cat, const char *dir, dsc_error *err) {
    char path[PATH_MAX_LEN];
    join_path(path, sizeof path, dir, DSC_CATALOG_MODELS_FILE);
    json_t *root = load_json(path, err);
    if (!root) return err ? err->code : DSC_PARSE;
    dsc_status st;
    if (!json_is_object(root))
        st = dsc_error_set(err, DSC_PARSE, "%s: the top level must be an object", path);
    else
        st = parse_models(cat, path, json_object_get(root, "models"),
                          json_array_size(json_object_get(root, "aliases")), err);
    if (st == DSC_OK) st = parse_aliases(cat, path, json_object_get(root, "aliases"), err);
    json_decref(root);
    return st;
}

/* ---- electricity_mixes.csv ---- */

enum { COL_NAME, COL_ADPE, COL_PE, COL_GWP, COL_WUE, COL_COUNT };
static const char *const mix_columns[COL_COUNT] = {"name", "adpe", "pe", "gwp", "wue"};
#define CSV_FIELDS_MAX 32

typedef struct csv_ctx {
    const char *path;
    int line;
    int col[COL_COUNT]; /* field index of each known column */
    int n_fields;       /* fields per row, from the header */
    dsc_error *err;
} csv_ctx;

/* Split line (modified in place) at commas, trimming blanks; returns the field count. */
static int csv_split(char *line, char **fields) {
    int n = 0;
    for (char *p = line;;) {
        while (*p == ' ' || *p == '\t')
            p++;
        if (n == CSV_FIELDS_MAX) return CSV_FIELDS_MAX + 1;
        fields[n++] = p;
        char *comma = strchr(p, ',');
        char *end = comma ? comma : p + strlen(p);
        while (end > p && (end[-1] == ' ' || end[-1] == '\t'))
            end--;
        if (!comma) {
            *end = '\0';
            return n;
        }
        *end = '\0';
        p = comma + 1;
    }
}

static dsc_status csv_header(csv_ctx *c, char *line) {
    char *fields[CSV_FIELDS_MAX + 1];
    c->n_fields = csv_split(line, fields);
    if (c->n_fields > CSV_FIELDS_MAX)
        return dsc_error_set(c->err, DSC_PARSE, "%s:%d: too many columns", c->path, c->line);
    for (int k = 0; k < COL_COUNT; k++) {
        c->col[k] = -1;
        for (int f = 0; f < c->n_fields; f++)
            if (strcmp(fields[f], mix_columns[k]) == 0) c->col[k] = f;
        if (c->col[k] < 0)
            return dsc_error_set(c->err, DSC_PARSE, "%s:%d: missing column '%s' in the header",
                                 c->path, c->line, mix_columns[k]);
    }
    return DSC_OK;
}

static dsc_status csv_number(const csv_ctx *c, const char *text, int k, double *out) {
    char *end;
    errno = 0;
    double v = strtod(text, &end);
    if (end == text || *end != '\0' || errno == ERANGE || !isfinite(v) || v < 0)
        return dsc_error_set(c->err, DSC_PARSE,
                             "%s:%d: column '%s': '%s' is not a non-negative number", c->path,
                             c->line, mix_columns[k], text);
    *out = v;
    return DSC_OK;
}

static dsc_status csv_zone_name(const csv_ctx *c, const char *text, dsc_zone *z) {
    size_t len = strlen(text);
    int ok = len > 0 && len < DSC_ZONE_MAX;
    for (size_t i = 0; ok && i < len; i++)
        ok = isalnum((unsigned char)text[i]) || text[i] == '_';
    if (!ok)
        return dsc_error_set(c->err, DSC_PARSE,
                             "%s:%d: column 'name': '%s' is not a zone code (1-%d letters/digits)",
                             c->path, c->line, text, DSC_ZONE_MAX - 1);
    for (size_t i = 0; i <= len; i++)
        z->name[i] = (char)toupper((unsigned char)text[i]);
    return DSC_OK;
}

static dsc_status csv_row(csv_ctx *c, char *line, dsc_zone *z) {
    char *fields[CSV_FIELDS_MAX + 1];
    int n = csv_split(line, fields);
    if (n != c->n_fields)
        return dsc_error_set(c->err, DSC_PARSE, "%s:%d: expected %d fields, found %d", c->path,
                             c->line, c->n_fields, n);
    dsc_status st = csv_zone_name(c, fields[c->col[COL_NAME]], z);
    if (st == DSC_OK)
        st = csv_number(c, fields[c->col[COL_ADPE]], COL_ADPE, &z->adpe_kgsbeq_per_kwh);
    if (st == DSC_OK) st = csv_number(c, fields[c->col[COL_PE]], COL_PE, &z->pe_mj_per_kwh);
    if (st == DSC_OK) st = csv_number(c, fields[c->col[COL_GWP]], COL_GWP, &z->gwp_kgco2eq_per_kwh);
    if (st == DSC_OK) st = csv_number(c, fields[c->col[COL_WUE]], COL_WUE, &z->wue_l_per_kwh);
    return st;
}

/* Read all of path into a NUL-terminated buffer (caller frees). */
static char *read_text(const char *path, size_t *lines_hint, dsc_error *err) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        dsc_error_set(err, DSC_IO, "cannot read '%s': %s", path, strerror(errno));
        return NULL;
    }
    size_t cap = 4096, len = 0;
    char *buf = malloc(cap);
    while (buf) {
        len += fread(buf + len, 1, cap - len - 1, f);
        if (len < cap - 1 || cap >= MIXES_MAX_BYTES) break;
        char *grown = realloc(buf, cap * 2);
        if (!grown) free(buf);
        buf = grown;
        cap *= 2;
    }
    int failed = ferror(f);
    fclose(f);
    if (!buf) {
        nomem(err, path);
        return NULL;
    }
    if (failed || len >= MIXES_MAX_BYTES - 1) {
        free(buf);
        dsc_error_set(err, DSC_IO, "cannot read '%s': %s", path,
                      failed ? "read error" : "file larger than 16 MiB");
        return NULL;
    }
    buf[len] = '\0';
    *lines_hint = 1;
    for (size_t i = 0; i < len; i++)
        *lines_hint += buf[i] == '\n';
    return buf;
}

static dsc_status parse_mix_lines(dsc_catalog *cat, csv_ctx *c, char *text) {
    int have_header = 0;
    char *next;
    for (char *line = text; line; line = next) {
        c->line++;
        next = strchr(line, '\n');
        if (next) *next++ = '\0';
        size_t len = strlen(line);
        if (len && line[len - 1] == '\r') line[--len] = '\0';
        if (len == 0) continue;
        if (!have_header) {
            dsc_status st = csv_header(c, line);
            if (st != DSC_OK) return st;
            have_header = 1;
            continue;
        }
        dsc_status st = csv_row(c, line, &cat->zones[cat->n_zones]);
        if (st != DSC_OK) return st;
        if (table_put(&cat->zone_index, cat->zones[cat->n_zones].name, "",
                      (uint32_t)cat->n_zones) != NONE)
            return dsc_error_set(c->err, DSC_PARSE, "%s:%d: duplicate zone '%s'", c->path, c->line,
                                 cat->zones[cat->n_zones].name);
        cat->n_zones++;
    }
    if (!have_header)
        return dsc_error_set(c->err, DSC_PARSE, "%s: empty file (expected a header line)", c->path);
    return DSC_OK;
}

static int zone_cmp(const void *pa, const void *pb) {
    return strcmp(((const dsc_zone *)pa)->name, ((const dsc_zone *)pb)->name);
}

static dsc_status load_mixes(dsc_catalog *cat, const char *dir, dsc_error *err) {
    char path[PATH_MAX_LEN];
    join_path(path, sizeof path, dir, DSC_CATALOG_MIXES_FILE);
    size_t lines = 0;
    char *text = read_text(path, &lines, err);
    if (!text) return err ? err->code : DSC_IO;
    csv_ctx c = {.path = path, .err = err};
    dsc_status st = DSC_OK;
    cat->zones = calloc(lines, sizeof *cat->zones);
    if (!cat->zones || table_init(&cat->zone_index, lines) != 0) st = nomem(err, path);
    if (st == DSC_OK) st = parse_mix_lines(cat, &c, text);
    free(text);
    if (st != DSC_OK) return st;
    /* Sort for listing, then re-point the index at the sorted positions. */
    qsort(cat->zones, cat->n_zones, sizeof *cat->zones, zone_cmp);
    memset(cat->zone_index.slots, 0, (cat->zone_index.mask + 1) * sizeof(slot));
    for (size_t i = 0; i < cat->n_zones; i++)
        table_put(&cat->zone_index, cat->zones[i].name, "", (uint32_t)i);
    return DSC_OK;
}

/* ---- providers.json ---- */

static dsc_status provider_bad(dsc_error *err, const char *path, const char *name,
                               const char *what) {
    return dsc_error_set(err, DSC_PARSE, "%s: provider '%s': %s", path, name, what);
}

static dsc_status parse_provider(dsc_catalog *cat, const char *path, const char *name,
                                 const json_t *rec, dsc_error *err) {
    dsc_provider *p = &cat->providers[cat->n_providers];
    if (!json_is_object(rec)) return provider_bad(err, path, name, "must be an object");
    const json_t *loc = json_object_get(rec, "datacenter_location");
    const char *zone = json_is_null(loc) || !loc ? "WOR" : json_string_value(loc);
    if (!zone || !*zone || strlen(zone) >= DSC_ZONE_MAX)
        return provider_bad(err, path, name,
                            "field 'datacenter_location' must be a zone code or null");
    for (size_t i = 0; i <= strlen(zone); i++)
        p->zone[i] = (char)toupper((unsigned char)zone[i]);
    if (!dsc_catalog_zone(cat, p->zone))
        return dsc_error_set(err, DSC_PARSE,
                             "%s: provider '%s': field 'datacenter_location': zone '%s' is not in "
                             "%s",
                             path, name, zone, DSC_CATALOG_MIXES_FILE);
    if (parse_range(json_object_get(rec, "datacenter_pue"), &p->pue, 1.0, HUGE_VAL) != 0)
        return provider_bad(err, path, name,
                            "field 'datacenter_pue' must be a number >= 1 or {\"min\",\"max\"}");
    if (parse_range(json_object_get(rec, "datacenter_wue"), &p->wue_l_per_kwh, 0.0, HUGE_VAL) != 0)
        return provider_bad(err, path, name,
                            "field 'datacenter_wue' must be a number >= 0 or {\"min\",\"max\"}");
    p->name = own(cat, name);
    if (!p->name) return nomem(err, path);
    cat->n_providers++;
    return DSC_OK;
}

static int provider_cmp(const void *pa, const void *pb) {
    return strcmp(((const dsc_provider *)pa)->name, ((const dsc_provider *)pb)->name);
}

static dsc_status parse_providers(dsc_catalog *cat, const char *path, const json_t *root,
                                  dsc_error *err) {
    if (!json_is_object(root))
        return dsc_error_set(err, DSC_PARSE, "%s: the top level must be an object", path);
    size_t n = json_object_size(root);
    cat->providers = calloc(n ? n : 1, sizeof *cat->providers);
    if (!cat->providers || table_init(&cat->provider_index, n) != 0) return nomem(err, path);
    const char *key;
    const json_t *rec;
    json_object_foreach((json_t *)root, key, rec) {
        if (key[0] == '_') continue; /* "_about" and other comments */
        dsc_status st = parse_provider(cat, path, key, rec, err);
        if (st != DSC_OK) return st;
    }
    qsort(cat->providers, cat->n_providers, sizeof *cat->providers, provider_cmp);
    for (size_t i = 0; i < cat->n_providers; i++)
        table_put(&cat->provider_index, cat->providers[i].name, "", (uint32_t)i);
    return DSC_OK;
}

static dsc_status load_providers(dsc_catalog *cat, const char *dir, dsc_error *err) {
    char path[PATH_MAX_LEN];
    join_path(path, sizeof path, dir, DSC_CATALOG_PROVIDERS_FILE);
    json_t *root = load_json(path, err);
    if (!root) return err ? err->code : DSC_PARSE;
    dsc_status st = parse_providers(cat, path, root, err);
    json_decref(root);
    return st;
}

/* ---- prices.json (optional) ---- */

#define PRICE_MAX_PER_MTOK 1e4

static dsc_status price_bad(dsc_error *err, const char *path, size_t i, const char *what) {
    return dsc_error_set(err, DSC_PARSE, "%s: prices[%zu]: %s", path, i, what);
}

static int price_number(const json_t *v, double *out) {
    if (!json_is_number(v)) return -1;
    *out = json_number_value(v);
    return isfinite(*out) && *out >= 0 && *out <= PRICE_MAX_PER_MTOK ? 0 : -1;
}

static dsc_status parse_price(dsc_catalog *cat, const char *path, size_t i, const json_t *rec,
                              dsc_error *err) {
    const char *provider = json_string_value(json_object_get(rec, "provider"));
    const char *model = json_string_value(json_object_get(rec, "model"));
    const char *as_of = json_string_value(json_object_get(rec, "as_of"));
    const char *source = json_string_value(json_object_get(rec, "source"));
    if (!provider || !model)
        return price_bad(err, path, i, "fields 'provider' and 'model' must be strings");
    uint32_t idx = table_get(&cat->model_index, provider, model);
    if (idx == NONE)
        return dsc_error_set(err, DSC_PARSE, "%s: prices[%zu]: unknown model '%s/%s'", path, i,
                             provider, model);
    if (cat->price_of_model[idx] != NONE)
        return dsc_error_set(err, DSC_PARSE, "%s: prices[%zu]: model '%s/%s' is priced twice", path,
                             i, provider, model);
    dsc_price *p = &cat->prices[cat->n_prices];
    if (price_number(json_object_get(rec, "input"), &p->input_per_mtok) != 0 ||
        price_number(json_object_get(rec, "output"), &p->output_per_mtok) != 0)
        return price_bad(err, path, i,
                         "fields 'input' and 'output' must be numbers in [0, 10000] per million "
                         "tokens");
    if (!as_of || !*as_of || !source || !*source)
        return price_bad(err, path, i, "fields 'as_of' and 'source' must be non-empty strings");
    p->provider = cat->models[idx].provider;
    p->model = cat->models[idx].name;
    p->as_of = own(cat, as_of);
    p->source = own(cat, source);
    if (!p->as_of || !p->source) return nomem(err, path);
    cat->price_of_model[idx] = (uint32_t)cat->n_prices++;
    return DSC_OK;
}

static dsc_status parse_prices(dsc_catalog *cat, const char *path, const json_t *root,
                               dsc_error *err) {
    const char *currency = json_string_value(json_object_get(root, "currency"));
    const json_t *arr = json_object_get(root, "prices");
    if (!currency || !*currency || strlen(currency) >= sizeof cat->currency)
        return dsc_error_set(err, DSC_PARSE, "%s: field 'currency' must be a short string", path);
    if (!json_is_array(arr))
        return dsc_error_set(err, DSC_PARSE, "%s: field 'prices' must be an array", path);
    size_t n = json_array_size(arr);
    cat->prices = calloc(n ? n : 1, sizeof *cat->prices);
    cat->price_of_model = malloc((cat->n_models ? cat->n_models : 1) * sizeof(uint32_t));
    if (!cat->prices || !cat->price_of_model) return nomem(err, path);
    for (size_t i = 0; i < cat->n_models; i++)
        cat->price_of_model[i] = NONE;
    for (size_t i = 0; i < n; i++) {
        dsc_status st = parse_price(cat, path, i, json_array_get(arr, i), err);
        if (st != DSC_OK) return st;
    }
    memcpy(cat->currency, currency, strlen(currency) + 1);
    return DSC_OK;
}

static dsc_status load_prices(dsc_catalog *cat, const char *dir, dsc_error *err) {
    char path[PATH_MAX_LEN];
    join_path(path, sizeof path, dir, DSC_CATALOG_PRICES_FILE);
    if (access(path, F_OK) != 0 && errno == ENOENT) return DSC_OK; /* prices are optional */
    json_t *root = load_json(path, err);
    if (!root) return err ? err->code : DSC_PARSE;
    dsc_status st =
        json_is_object(root)
            ? parse_prices(cat, path, root, err)
            : dsc_error_set(err, DSC_PARSE, "%s: the top level must be an object", path);
    json_decref(root);
    return st;
}

/* ---- serving.json (optional): the discern method's data ---- */

#define SERVING_ACCELERATORS_MAX 32
#define SERVING_MODELS_MAX 4096
#define FACTOR_MAX 1e6

typedef struct serving_ctx {
    dsc_catalog *cat;
    const char *path;
    dsc_error *err;
} serving_ctx;

static dsc_status serving_bad(const serving_ctx *c, const char *where, const char *what) {
    return dsc_error_set(c->err, DSC_PARSE, "%s: %s: %s", c->path, where, what);
}

/* A finite number in [lo, hi] at key of obj. */
static int get_number(const json_t *obj, const char *key, double lo, double hi, double *out) {
    const json_t *v = json_object_get(obj, key);
    if (!json_is_number(v)) return -1;
    *out = json_number_value(v);
    return isfinite(*out) && *out >= lo && *out <= hi ? 0 : -1;
}

static int get_criteria(const json_t *obj, const char *key, double out[3]) {
    const json_t *v = json_object_get(obj, key);
    return get_number(v, "gwp", 0, FACTOR_MAX, &out[DSC_CRIT_GWP]) ||
                   get_number(v, "adpe", 0, FACTOR_MAX, &out[DSC_CRIT_ADPE]) ||
                   get_number(v, "pe", 0, FACTOR_MAX, &out[DSC_CRIT_PE])
               ? -1
               : 0;
}

static dsc_status parse_constants(serving_ctx *c, const json_t *k) {
    dsc_method_data *d = &c->cat->method;
    double years = 0;
    if (!json_is_object(k)) return serving_bad(c, "constants", "must be an object");
    if (get_number(k, "bandwidth_efficiency", 0.01, 1, &d->bandwidth_efficiency) ||
        get_number(k, "prefill_mfu", 0.01, 1, &d->prefill_mfu) ||
        get_number(k, "cached_input_factor", 0, 1, &d->cached_input_factor) ||
        get_number(k, "host_overhead", 1, 10, &d->host_overhead) ||
        get_number(k, "lifetime_years", 0.1, 50, &years))
        return serving_bad(c, "constants",
                           "bandwidth_efficiency and prefill_mfu in (0, 1], cached_input_factor "
                           "in [0, 1], host_overhead in [1, 10] and lifetime_years in [0.1, 50] "
                           "are required");
    d->lifetime_s = years * 365 * 24 * 3600;
    return DSC_OK;
}

static dsc_status parse_accelerator(serving_ctx *c, size_t i, const json_t *a) {
    dsc_accelerator *x = &c->cat->accelerators[i];
    const char *name = json_string_value(json_object_get(a, "name"));
    double gb_s = 0, tflops = 0;
    if (!name || !*name) return serving_bad(c, "accelerators", "each needs a 'name'");
    if (get_number(a, "memory_gb", 1, 1e5, &x->memory_gb) ||
        get_number(a, "power_w", 1, 1e5, &x->power_w) ||
        get_number(a, "bandwidth_gb_s", 1, 1e7, &gb_s) ||
        get_number(a, "peak_tflops", 1, 1e7, &tflops) ||
        get_number(a, "per_server", 1, 1024, &x->per_server) ||
        get_criteria(a, "embodied", x->embodied) ||
        get_criteria(a, "server_embodied", x->server_embodied))
        return serving_bad(c, name,
                           "memory_gb, power_w, bandwidth_gb_s, peak_tflops, per_server (numbers "
                           "> 0) and embodied, server_embodied ({gwp, adpe, pe}) are required");
    x->bandwidth_bytes_s = gb_s * 1e9;
    x->peak_flops = tflops * 1e12;
    if (!(x->name = own(c->cat, name))) return nomem(c->err, c->path);
    if (dsc_catalog_accelerator(c->cat, name))
        return serving_bad(c, name, "accelerator listed twice");
    c->cat->n_accelerators = i + 1;
    return DSC_OK;
}

static dsc_status parse_accelerators(serving_ctx *c, const json_t *arr) {
    size_t n = json_array_size(arr);
    if (!json_is_array(arr) || n == 0 || n > SERVING_ACCELERATORS_MAX)
        return serving_bad(c, "accelerators", "must be an array of 1 to 32 accelerators");
    c->cat->accelerators = calloc(n, sizeof *c->cat->accelerators);
    if (!c->cat->accelerators) return nomem(c->err, c->path);
    for (size_t i = 0; i < n; i++) {
        dsc_status st = parse_accelerator(c, i, json_array_get(arr, i));
        if (st != DSC_OK) return st;
    }
    return DSC_OK;
}

/* accelerator, precision_bits and batch of rec into s; absent keys are left as they are
 * unless required. */
static dsc_status parse_serving(serving_ctx *c, const char *where, const json_t *rec, int required,
                                dsc_serving *s) {
    const json_t *acc = json_object_get(rec, "accelerator");
    const json_t *bits = json_object_get(rec, "precision_bits");
    const json_t *batch = json_object_get(rec, "batch");
    if (acc || required) {
        s->accelerator = dsc_catalog_accelerator(c->cat, json_string_value(acc));
        if (!s->accelerator)
            return serving_bad(c, where, "field 'accelerator' must name one of 'accelerators'");
    }
    if ((bits || required) && get_number(rec, "precision_bits", 1, 64, &s->precision_bits))
        return serving_bad(c, where, "field 'precision_bits' must be a number in [1, 64]");
    if ((batch || required) && parse_range(batch, &s->batch, 1, 100000) != 0)
        return serving_bad(c, where, "field 'batch' must be a number or {min, max} in [1, 100000]");
    return DSC_OK;
}

static dsc_status parse_serving_provider(serving_ctx *c, const char *name, const json_t *rec,
                                         dsc_serving_provider *p) {
    const json_t *market = json_object_get(rec, "market_gwp_kgco2eq_per_kwh");
    const json_t *fb = json_object_get(rec, "fallback");
    if (!json_is_object(rec)) return serving_bad(c, name, "must be an object");
    dsc_status st = parse_serving(c, name, rec, 1, &p->serving);
    if (st != DSC_OK) return st;
    p->market_gwp_kgco2eq_per_kwh = -1;
    if (market && !json_is_null(market) &&
        get_number(rec, "market_gwp_kgco2eq_per_kwh", 0, 10, &p->market_gwp_kgco2eq_per_kwh))
        return serving_bad(c, name,
                           "field 'market_gwp_kgco2eq_per_kwh' must be null or in [0, 10]");
    if (parse_range(json_object_get(fb, "active_b"), &p->fallback_active_b, PARAMS_MIN_B,
                    PARAMS_MAX_B) != 0 ||
        parse_range(json_object_get(fb, "total_b"), &p->fallback_total_b, PARAMS_MIN_B,
                    PARAMS_MAX_B) != 0)
        return serving_bad(c, name, "field 'fallback' needs active_b and total_b, " PARAMS_RULE);
    if (!(p->name = own(c->cat, name))) return nomem(c->err, c->path);
    return DSC_OK;
}

static dsc_status parse_serving_providers(serving_ctx *c, const json_t *obj) {
    dsc_catalog *cat = c->cat;
    size_t n = json_object_size(obj);
    if (!json_is_object(obj) || !json_object_get(obj, "*"))
        return serving_bad(c, "providers", "must be an object with a \"*\" default");
    cat->serving_providers = calloc(n, sizeof *cat->serving_providers);
    if (!cat->serving_providers || table_init(&cat->serving_provider_index, n) != 0)
        return nomem(c->err, c->path);
    const char *key;
    const json_t *rec;
    json_object_foreach((json_t *)obj, key, rec) {
        if (key[0] == '_') continue;
        dsc_serving_provider *p = &cat->serving_providers[cat->n_serving_providers];
        dsc_status st = parse_serving_provider(c, key, rec, p);
        if (st != DSC_OK) return st;
        table_put(&cat->serving_provider_index, p->name, "", (uint32_t)cat->n_serving_providers++);
    }
    return DSC_OK;
}

/* A model override: its serving fields and, optionally, its size. */
static dsc_status parse_serving_model(serving_ctx *c, const json_t *rec, dsc_serving_model *m) {
    const char *provider = json_string_value(json_object_get(rec, "provider"));
    const char *model = json_string_value(json_object_get(rec, "model"));
    const json_t *act = json_object_get(rec, "active_b"), *tot = json_object_get(rec, "total_b");
    if (!provider || !*provider || !model || !*model)
        return serving_bad(c, "models", "each needs 'provider' and 'model'");
    dsc_status st = parse_serving(c, model, rec, 0, &m->serving);
    if (st != DSC_OK) return st;
    if ((act || tot) &&
        (parse_range(act, &m->active_b, PARAMS_MIN_B, PARAMS_MAX_B) != 0 ||
         parse_range(tot ? tot : act, &m->total_b, PARAMS_MIN_B, PARAMS_MAX_B) != 0 ||
         m->active_b.max > m->total_b.max))
        return serving_bad(
            c, model, "fields 'active_b' and 'total_b' must be " PARAMS_RULE ", active <= total");
    m->provider = own(c->cat, provider);
    m->model = own(c->cat, model);
    if (!m->provider || !m->model) return nomem(c->err, c->path);
    if (table_put(&c->cat->serving_model_index, m->provider, m->model,
                  (uint32_t)c->cat->n_serving_models) != NONE)
        return serving_bad(c, model, "model listed twice");
    c->cat->n_serving_models++;
    return DSC_OK;
}

static dsc_status parse_serving_models(serving_ctx *c, const json_t *arr) {
    size_t n = json_array_size(arr);
    if (arr && (!json_is_array(arr) || n > SERVING_MODELS_MAX))
        return serving_bad(c, "models", "must be an array of at most 4096 overrides");
    c->cat->serving_models = calloc(n ? n : 1, sizeof *c->cat->serving_models);
    if (!c->cat->serving_models || table_init(&c->cat->serving_model_index, n) != 0)
        return nomem(c->err, c->path);
    for (size_t i = 0; i < n; i++) {
        dsc_status st = parse_serving_model(c, json_array_get(arr, i),
                                            &c->cat->serving_models[c->cat->n_serving_models]);
        if (st != DSC_OK) return st;
    }
    return DSC_OK;
}

static dsc_status parse_lifecycle_record(serving_ctx *c, const char *where, const json_t *rec,
                                         dsc_lifecycle *l) {
    const json_t *mult = json_object_get(rec, "usage_multiplier");
    const json_t *kwh = json_object_get(rec, "per_kwh_it");
    const char *source = json_string_value(json_object_get(rec, "source"));
    if (!source || !*source) return serving_bad(c, where, "field 'source' is required");
    if (mult && parse_range(mult, &l->usage_multiplier, 0, 1000) != 0)
        return serving_bad(c, where, "field 'usage_multiplier' must be a number or {min, max}");
    if (kwh && (get_number(kwh, "gwp", 0, FACTOR_MAX, &l->per_kwh_it_gwp) ||
                get_number(kwh, "wcf", 0, FACTOR_MAX, &l->per_kwh_it_wcf) ||
                get_number(kwh, "adpe", 0, FACTOR_MAX, &l->per_kwh_it_adpe) ||
                get_number(kwh, "pe", 0, FACTOR_MAX, &l->per_kwh_it_pe)))
        return serving_bad(c, where, "field 'per_kwh_it' needs gwp, wcf, adpe and pe >= 0");
    if (!(l->source = own(c->cat, source))) return nomem(c->err, c->path);
    return DSC_OK;
}

static dsc_status parse_lifecycle(serving_ctx *c, const json_t *obj) {
    dsc_catalog *cat = c->cat;
    const json_t *models = json_object_get(obj, "models");
    size_t n = json_array_size(models);
    dsc_status st = parse_lifecycle_record(c, "lifecycle.default", json_object_get(obj, "default"),
                                           &cat->lifecycle_default);
    if (st != DSC_OK) return st;
    cat->lifecycles = calloc(n ? n : 1, sizeof *cat->lifecycles);
    if (!cat->lifecycles || table_init(&cat->lifecycle_index, n) != 0)
        return nomem(c->err, c->path);
    for (size_t i = 0; i < n; i++) {
        const json_t *rec = json_array_get(models, i);
        const char *provider = json_string_value(json_object_get(rec, "provider"));
        const char *model = json_string_value(json_object_get(rec, "model"));
        if (!provider || !model)
            return serving_bad(c, "lifecycle.models", "each needs 'provider' and 'model'");
        dsc_lifecycle *l = &cat->lifecycles[cat->n_lifecycles];
        if ((st = parse_lifecycle_record(c, model, rec, l)) != DSC_OK) return st;
        l->per_model = 1;
        const char *p = own(cat, provider), *m = own(cat, model);
        if (!p || !m) return nomem(c->err, c->path);
        if (table_put(&cat->lifecycle_index, p, m, (uint32_t)cat->n_lifecycles++) != NONE)
            return serving_bad(c, model, "lifecycle listed twice");
    }
    return DSC_OK;
}

static dsc_status parse_modalities(serving_ctx *c, const json_t *root) {
    dsc_method_data *d = &c->cat->method;
    const json_t *img = json_object_get(root, "images"), *emb = json_object_get(root, "embeddings");
    if (parse_range(json_object_get(img, "energy_wh_per_image"), &d->image_wh, 1e-6, 1e4) != 0 ||
        get_number(img, "reference_pixels", 1, 1e9, &d->image_reference_pixels))
        return serving_bad(c, "images", "needs energy_wh_per_image and reference_pixels");
    if (parse_range(json_object_get(emb, "active_b"), &d->embedding_active_b, PARAMS_MIN_B,
                    PARAMS_MAX_B) != 0)
        return serving_bad(c, "embeddings", "field 'active_b' must be " PARAMS_RULE);
    return DSC_OK;
}

static dsc_status parse_serving_file(serving_ctx *c, const json_t *root) {
    if (!json_is_object(root)) return serving_bad(c, "top level", "must be an object");
    dsc_status st = parse_constants(c, json_object_get(root, "constants"));
    if (st == DSC_OK) st = parse_accelerators(c, json_object_get(root, "accelerators"));
    if (st == DSC_OK) st = parse_serving_providers(c, json_object_get(root, "providers"));
    if (st == DSC_OK) st = parse_serving_models(c, json_object_get(root, "models"));
    if (st == DSC_OK) st = parse_lifecycle(c, json_object_get(root, "lifecycle"));
    if (st == DSC_OK) st = parse_modalities(c, root);
    if (st == DSC_OK) c->cat->has_method_data = 1;
    return st;
}

static dsc_status load_serving(dsc_catalog *cat, const char *dir, dsc_error *err) {
    char path[PATH_MAX_LEN];
    join_path(path, sizeof path, dir, DSC_CATALOG_SERVING_FILE);
    if (access(path, F_OK) != 0 && errno == ENOENT)
        return DSC_OK; /* only the discern method needs it */
    json_t *root = load_json(path, err);
    if (!root) return err ? err->code : DSC_PARSE;
    serving_ctx c = {cat, path, err};
    dsc_status st = parse_serving_file(&c, root);
    json_decref(root);
    return st;
}

dsc_catalog *dsc_catalog_load(const char *dir, dsc_error *err) {
    dsc_error local;
    if (!err) err = &local;
    dsc_error_clear(err);
    dsc_catalog *cat = calloc(1, sizeof *cat);
    if (!cat) {
        dsc_error_set(err, DSC_NOMEM, "out of memory while loading the catalogue");
        return NULL;
    }
    if (load_models(cat, dir, err) != DSC_OK) goto fail;
    if (load_mixes(cat, dir, err) != DSC_OK) goto fail;
    if (load_providers(cat, dir, err) != DSC_OK) goto fail;
    if (load_prices(cat, dir, err) != DSC_OK) goto fail;
    if (load_serving(cat, dir, err) != DSC_OK) goto fail;
    return cat;
fail:
    dsc_catalog_free(cat);
    return NULL;
}

/* ---- lookups ---- */

const dsc_model *dsc_catalog_model(const dsc_catalog *cat, const char *provider, const char *name) {
    if (!cat || !provider || !name) return NULL;
    uint32_t i = table_get(&cat->model_index, provider, name);
    return i == NONE ? NULL : &cat->models[i];
}

const dsc_zone *dsc_catalog_zone(const dsc_catalog *cat, const char *zone) {
    if (!cat || !zone) return NULL;
    char key[DSC_ZONE_MAX];
    size_t i = 0;
    for (; zone[i]; i++) {
        if (i + 1 >= DSC_ZONE_MAX) return NULL;
        key[i] = (char)toupper((unsigned char)zone[i]);
    }
    key[i] = '\0';
    uint32_t at = table_get(&cat->zone_index, key, "");
    return at == NONE ? NULL : &cat->zones[at];
}

const dsc_provider *dsc_catalog_provider(const dsc_catalog *cat, const char *name) {
    if (!cat || !name) return NULL;
    uint32_t i = table_get(&cat->provider_index, name, "");
    return i == NONE ? NULL : &cat->providers[i];
}

const dsc_model *dsc_catalog_provider_models(const dsc_catalog *cat, const char *provider,
                                             size_t *count) {
    if (count) *count = 0;
    if (!cat || !provider) return NULL;
    size_t lo = 0, hi = cat->n_models;
    while (lo < hi) { /* first model whose provider is >= provider */
        size_t mid = lo + (hi - lo) / 2;
        if (strcmp(cat->models[mid].provider, provider) < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    size_t end = lo;
    while (end < cat->n_models && strcmp(cat->models[end].provider, provider) == 0)
        end++;
    if (end == lo) return NULL;
    if (count) *count = end - lo;
    return &cat->models[lo];
}

const dsc_price *dsc_catalog_price(const dsc_catalog *cat, const char *provider,
                                   const char *model) {
    if (!cat || !cat->price_of_model || !provider || !model) return NULL;
    uint32_t i = table_get(&cat->model_index, provider, model);
    if (i == NONE || cat->price_of_model[i] == NONE) return NULL;
    return &cat->prices[cat->price_of_model[i]];
}

const dsc_price *dsc_catalog_model_price(const dsc_catalog *cat, const dsc_model *m) {
    if (!cat) return NULL;
    uintptr_t at = (uintptr_t)m, first = (uintptr_t)cat->models;
    if (!cat->price_of_model || !m || at < first || at >= first + cat->n_models * sizeof *m)
        return NULL;
    uint32_t p = cat->price_of_model[(at - first) / sizeof *m];
    return p == NONE ? NULL : &cat->prices[p];
}

const char *dsc_catalog_currency(const dsc_catalog *cat) {
    return cat ? cat->currency : "";
}

int64_t dsc_price_cost_micro(const dsc_price *p, int64_t input_tokens, int64_t output_tokens) {
    if (!p || input_tokens < 0 || output_tokens < 0) return 0;
    /* tokens x (currency per million tokens) = micro-currency */
    double micro =
        (double)input_tokens * p->input_per_mtok + (double)output_tokens * p->output_per_mtok;
    return micro < 9e18 ? llround(micro) : INT64_MAX;
}

const dsc_method_data *dsc_catalog_method_data(const dsc_catalog *cat) {
    return cat && cat->has_method_data ? &cat->method : NULL;
}

const dsc_serving_provider *dsc_catalog_serving_provider(const dsc_catalog *cat,
                                                         const char *provider) {
    if (!cat || !cat->has_method_data) return NULL;
    uint32_t i = provider ? table_get(&cat->serving_provider_index, provider, "") : NONE;
    if (i == NONE) i = table_get(&cat->serving_provider_index, "*", "");
    return i == NONE ? NULL : &cat->serving_providers[i];
}

const dsc_serving_model *dsc_catalog_serving_model(const dsc_catalog *cat, const char *provider,
                                                   const char *model) {
    if (!cat || !provider || !model) return NULL;
    uint32_t i = table_get(&cat->serving_model_index, provider, model);
    return i == NONE ? NULL : &cat->serving_models[i];
}

const dsc_lifecycle *dsc_catalog_lifecycle(const dsc_catalog *cat, const char *provider,
                                           const char *model) {
    if (!cat || !cat->has_method_data) return NULL;
    uint32_t i = provider && model ? table_get(&cat->lifecycle_index, provider, model) : NONE;
    return i == NONE ? &cat->lifecycle_default : &cat->lifecycles[i];
}

const dsc_accelerator *dsc_catalog_accelerator(const dsc_catalog *cat, const char *name) {
    for (size_t i = 0; cat && name && i < cat->n_accelerators; i++)
        if (cat->accelerators[i].name && strcmp(cat->accelerators[i].name, name) == 0)
            return &cat->accelerators[i];
    return NULL;
}

size_t dsc_catalog_price_count(const dsc_catalog *cat) {
    return cat ? cat->n_prices : 0;
}

const dsc_price *dsc_catalog_price_at(const dsc_catalog *cat, size_t i) {
    return cat && i < cat->n_prices ? &cat->prices[i] : NULL;
}

size_t dsc_catalog_model_count(const dsc_catalog *cat) {
    return cat ? cat->n_models : 0;
}
size_t dsc_catalog_alias_count(const dsc_catalog *cat) {
    return cat ? cat->n_aliases : 0;
}
size_t dsc_catalog_zone_count(const dsc_catalog *cat) {
    return cat ? cat->n_zones : 0;
}
size_t dsc_catalog_provider_count(const dsc_catalog *cat) {
    return cat ? cat->n_providers : 0;
}

const dsc_model *dsc_catalog_model_at(const dsc_catalog *cat, size_t i) {
    return cat && i < cat->n_models ? &cat->models[i] : NULL;
}
const dsc_alias *dsc_catalog_alias_at(const dsc_catalog *cat, size_t i) {
    return cat && i < cat->n_aliases ? &cat->aliases[i] : NULL;
}
const dsc_zone *dsc_catalog_zone_at(const dsc_catalog *cat, size_t i) {
    return cat && i < cat->n_zones ? &cat->zones[i] : NULL;
}
const dsc_provider *dsc_catalog_provider_at(const dsc_catalog *cat, size_t i) {
    return cat && i < cat->n_providers ? &cat->providers[i] : NULL;
}

/* ---- suggestions ---- */

#define EDIT_MAX 127
#define SUGGEST_KEEP 16
#define SUGGEST_QUERY_MAX 96

int dsc_catalog_edit_distance(const char *a, const char *b) {
    size_t la = strnlen(a, EDIT_MAX), lb = strnlen(b, EDIT_MAX);
    int row[EDIT_MAX + 1];
    for (size_t j = 0; j <= lb; j++)
        row[j] = (int)j;
    for (size_t i = 1; i <= la; i++) {
        int diag = row[0];
        row[0] = (int)i;
        for (size_t j = 1; j <= lb; j++) {
            int up = row[j];
            int same = tolower((unsigned char)a[i - 1]) == tolower((unsigned char)b[j - 1]);
            int best = diag + !same;
            if (up + 1 < best) best = up + 1;
            if (row[j - 1] + 1 < best) best = row[j - 1] + 1;
            row[j] = best;
            diag = up;
        }
    }
    return row[lb];
}

static int contains_ci(const char *hay, const char *needle) {
    size_t n = strlen(needle);
    for (; *hay; hay++) {
        size_t k = 0;
        while (k < n && hay[k] &&
               tolower((unsigned char)hay[k]) == tolower((unsigned char)needle[k]))
            k++;
        if (k == n) return 1;
    }
    return 0;
}

typedef struct ranking {
    const char *query;
    const char *name[SUGGEST_KEEP];
    int score[SUGGEST_KEEP];
    size_t n, max;
} ranking;

/* Keep candidate if it is close to the query: within a third of its length in
 * edits (at least 2), or containing the query (at least 3 characters). */
static void consider(ranking *r, const char *candidate) {
    size_t ql = strlen(r->query);
    int d = dsc_catalog_edit_distance(r->query, candidate);
    int limit = ql / 3 > 2 ? (int)(ql / 3) : 2;
    if (d > limit && !(ql >= 3 && contains_ci(candidate, r->query))) return;
    for (size_t i = 0; i < r->n; i++)
        if (strcmp(r->name[i], candidate) == 0) return;
    size_t at = r->n;
    while (at > 0 && r->score[at - 1] > d)
        at--;
    if (at >= r->max) return;
    size_t last = r->n < r->max ? r->n : r->max - 1;
    for (size_t i = last; i > at; i--) {
        r->name[i] = r->name[i - 1];
        r->score[i] = r->score[i - 1];
    }
    r->name[at] = candidate;
    r->score[at] = d;
    if (r->n < r->max) r->n++;
}

static size_t ranking_out(const ranking *r, const char **out) {
    for (size_t i = 0; i < r->n; i++)
        out[i] = r->name[i];
    return r->n;
}

/* Queries longer than SUGGEST_QUERY_MAX get no suggestions: no catalogue name is
 * that long, and it bounds the work an error costs on hostile input. */
static int ranking_init(ranking *r, const char *query, const char **out, size_t max) {
    r->query = query;
    r->n = 0;
    r->max = max > SUGGEST_KEEP ? SUGGEST_KEEP : max;
    return query && out && r->max > 0 && strnlen(query, SUGGEST_QUERY_MAX + 1) <= SUGGEST_QUERY_MAX;
}

size_t dsc_catalog_suggest_models(const dsc_catalog *cat, const char *provider, const char *query,
                                  const char **out, size_t max) {
    ranking r;
    if (!cat || !ranking_init(&r, query, out, max)) return 0;
    size_t n = 0;
    const dsc_model *own_models = dsc_catalog_provider_models(cat, provider, &n);
    int all = own_models == NULL;
    for (size_t i = 0; i < cat->n_models; i++)
        if (all || strcmp(cat->models[i].provider, provider) == 0)
            consider(&r, cat->models[i].name);
    for (size_t i = 0; i < cat->n_aliases; i++)
        if (all || strcmp(cat->aliases[i].provider, provider) == 0)
            consider(&r, cat->aliases[i].name);
    return ranking_out(&r, out);
}

size_t dsc_catalog_suggest_zones(const dsc_catalog *cat, const char *query, const char **out,
                                 size_t max) {
    ranking r;
    if (!cat || !ranking_init(&r, query, out, max)) return 0;
    for (size_t i = 0; i < cat->n_zones; i++)
        consider(&r, cat->zones[i].name);
    return ranking_out(&r, out);
}

size_t dsc_catalog_suggest_providers(const dsc_catalog *cat, const char *query, const char **out,
                                     size_t max) {
    ranking r;
    if (!cat || !ranking_init(&r, query, out, max)) return 0;
    for (size_t i = 0; i < cat->n_providers; i++)
        consider(&r, cat->providers[i].name);
    return ranking_out(&r, out);
}

char *dsc_catalog_format_suggestions(const char *const *names, size_t n, char *buf, size_t cap) {
    if (!buf || cap == 0) return buf;
    buf[0] = '\0';
    size_t used = 0;
    for (size_t i = 0; i < n && used < cap; i++) {
        const char *sep = i == 0 ? "; did you mean " : (i + 1 == n ? " or " : ", ");
        int w = snprintf(buf + used, cap - used, "%s'%s'", sep, names[i]);
        if (w < 0) break;
        used += (size_t)w;
    }
    if (n > 0 && used < cap) snprintf(buf + used, cap - used, "?");
    return buf;
}
