/*
 * state.c - what a reload replaces as one: the catalogue and the policy set.
 *
 * A dsc__state is immutable and refcounted. The server keeps the current one under
 * a mutex and bumps an atomic generation on every swap; a worker compares that
 * generation before each request and, when it moved, takes the new state and builds
 * a new policy VM for it. A request therefore always runs on one consistent pair
 * (catalogue, policies), and a reload that fails leaves the old pair live.
 *
 *   dsc__state_load(srv, &err)        compile a new state (no lock held)
 *   dsc__server_reload(srv, &err)     load + swap; the old state dies with its last user
 *   dsc__worker_sync(w)               per request: pick up a new state and VM
 */
#include "server_internal.h"

#include "discern/paths.h"

#include <stdlib.h>
#include <string.h>

static void on_test_failure(void *ud, const char *line) {
    char *first = ud;
    if (!first[0]) snprintf(first, DSC_ERROR_MESSAGE_MAX, "%s", line);
}

/* Run the policy folder's tests against cat; a failing test refuses the set. */
static dsc_status run_policy_tests(const char *dir, const dsc_catalog *cat, dsc_error *err) {
    char first[DSC_ERROR_MESSAGE_MAX] = "";
    dsc_policy_test_report report = {0, 0};
    dsc_status st = dsc_policy_run_tests(dir, cat, on_test_failure, first, &report, err);
    if (st != DSC_OK) return st;
    if (report.failed > 0)
        return dsc_error_set(err, DSC_POLICY_ERROR, "%d policy test(s) failed, first: %s",
                             report.failed, first);
    return DSC_OK;
}

dsc__state *dsc__state_load(dsc_server *srv, dsc_error *err) {
    char dir[DSC_PATH_MAX];
    dsc__state *s = calloc(1, sizeof *s);
    if (!s) {
        dsc_error_set(err, DSC_NOMEM, "out of memory loading the state");
        return NULL;
    }
    atomic_init(&s->refs, 1);
    if (dsc_paths_data_dir(srv->cfg.data, dir, sizeof dir, err) != DSC_OK) goto fail;
    if (!(s->catalog = dsc_catalog_load(dir, err))) goto fail;
    if (!(s->policies = dsc_policy_set_load(srv->cfg.policies, err))) goto fail;
    if (run_policy_tests(srv->cfg.policies, s->catalog, err) != DSC_OK) goto fail;
    return s;
fail:
    dsc__state_unref(s);
    return NULL;
}

dsc__state *dsc__state_ref(dsc__state *s) {
    atomic_fetch_add_explicit(&s->refs, 1, memory_order_relaxed);
    return s;
}

void dsc__state_unref(dsc__state *s) {
    if (!s || atomic_fetch_sub_explicit(&s->refs, 1, memory_order_acq_rel) != 1) return;
    dsc_policy_set_unref(s->policies);
    dsc_catalog_free(s->catalog);
    free(s);
}

/* Seed the grid's annual averages from a catalogue (gCO2e/kWh). */
static void seed_grid(dsc_grid *grid, const dsc_catalog *cat) {
    size_t n = dsc_catalog_zone_count(cat);
    for (size_t i = 0; i < n; i++) {
        const dsc_zone *z = dsc_catalog_zone_at(cat, i);
        dsc_grid_set_annual(grid, z->name, z->gwp_kgco2eq_per_kwh * 1000.0, NULL);
    }
}

/* Take a reference to the current state. */
static dsc__state *current_state(dsc_server *srv) {
    pthread_mutex_lock(&srv->state_lock);
    dsc__state *s = dsc__state_ref(srv->state);
    pthread_mutex_unlock(&srv->state_lock);
    return s;
}

dsc_status dsc__server_reload(dsc_server *srv, dsc_error *err) {
    dsc__state *fresh = dsc__state_load(srv, err);
    if (!fresh) {
        dsc_log_write(&srv->log, DSC_LOG_ERROR, "reload_failed", "code=%s message=\"%s\"",
                      dsc_status_wire(err->code), err->message);
        return err->code;
    }
    seed_grid(srv->grid, fresh->catalog);
    pthread_mutex_lock(&srv->state_lock);
    dsc__state *old = srv->state;
    fresh->generation = old ? old->generation + 1 : 1;
    srv->state = fresh;
    atomic_store(&srv->generation, fresh->generation);
    pthread_mutex_unlock(&srv->state_lock);
    dsc_log_write(&srv->log, DSC_LOG_INFO, "reloaded", "policy_version=%s policies=%d models=%zu",
                  dsc_policy_set_version(fresh->policies), dsc_policy_set_count(fresh->policies),
                  dsc_catalog_model_count(fresh->catalog));
    dsc__state_unref(old);
    return DSC_OK;
}

static void policy_log(void *ud, const char *policy, const char *line) {
    dsc__worker *w = ud;
    dsc_log_write(&w->srv->log, DSC_LOG_INFO, "policy_log", "policy=%s line=\"%s\"", policy, line);
}

dsc_status dsc__worker_sync(dsc__worker *w, dsc_error *err) {
    dsc_server *srv = w->srv;
    if (w->state && w->state->generation == atomic_load(&srv->generation)) return DSC_OK;
    dsc__state *s = current_state(srv);
    dsc_policy_limits limits = {
        .memory_bytes = (size_t)srv->cfg.policy_memory_mb * 1024 * 1024,
        .time_budget_ns = (int64_t)srv->cfg.policy_time_budget_us * 1000,
    };
    dsc_policy_vm *vm = dsc_policy_vm_new(s->policies, s->catalog, srv->grid, &limits, err);
    if (!vm) {
        dsc__state_unref(s);
        dsc_log_write(&srv->log, DSC_LOG_ERROR, "policy_vm_failed", "worker=%d code=%s", w->index,
                      dsc_status_wire(err->code));
        /* Keep serving with the previous pair when there is one. */
        return w->state ? DSC_OK : err->code;
    }
    dsc_policy_vm_set_log(vm, policy_log, w);
    dsc_policy_vm_free(w->vm);
    dsc__state_unref(w->state);
    w->vm = vm;
    w->state = s;
    return DSC_OK;
}

void dsc__worker_release_state(dsc__worker *w) {
    dsc_policy_vm_free(w->vm);
    w->vm = NULL;
    dsc__state_unref(w->state);
    w->state = NULL;
}
