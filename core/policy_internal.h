/*
 * policy_internal.h - what the files of the policy engine share (not public).
 *
 *   policy.c          the set: loading, compiling in a scratch state, version, refs
 *   policy_sandbox.c  one sandboxed lua_State: capped allocator, time budget hook, the
 *                     whitelisted environment, decision constructors, read-only tables
 *   policy_vm.c       the per-thread VM: policies loaded, decide, combination, purposes
 *   policy_ctx.c      the req and ctx tables handed to decide: lazy views refilled per request
 *   policy_format.c   the sandbox's string.format (%s %d %.<n>g without printf)
 *   policy_runner.c   `discern policy test`: *_test.lua files with fake budgets and clock
 *   policy_lint.c     `discern policy check`: static lint of policy sources
 */
#ifndef DISCERN_POLICY_INTERNAL_H
#define DISCERN_POLICY_INTERNAL_H

#include "discern/policy.h"

#include <lauxlib.h>
#include <lua.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>

/* One file of a set, as read from disk and validated. */
typedef struct dsc__policy_file {
    char *file;      /* "budgets.lua" */
    char *chunkname; /* "@budgets.lua": Lua's messages then read "budgets.lua:12: ..." */
    char *src;
    size_t len;
    char name[DSC_POLICY_NAME_MAX];
    bool shadow;
    bool enabled;
    dsc_policy_outcome on_error;
} dsc__policy_file;

struct dsc_policy_set {
    atomic_int refs;
    char version[DSC_POLICY_VERSION_MAX];
    int n;
    dsc__policy_file files[DSC_POLICY_MAX];
    dsc__policy_file purposes; /* src == NULL when the folder has no purposes.lua */
};

/* The watchdog of one sandbox (policy_sandbox.c): a thread that looks at the
 * evaluation running every tick and, when one is still the same a tick later, asks
 * the evaluating thread by a signal to switch on the count hook that measures it.
 * state = evaluation number << 2 | phase (DSC__WD_*); only the watchdog moves it from
 * RUNNING to SIGNALLING, only the signal handler from SIGNALLING to DELIVERED. */
enum { DSC__WD_IDLE, DSC__WD_RUNNING, DSC__WD_SIGNALLING, DSC__WD_DELIVERED };
typedef struct dsc__watchdog {
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool stop;          /* under mu: the thread exits */
    atomic_bool parked; /* the thread sleeps until the next evaluation */
    atomic_uint_fast64_t state;
    _Atomic(pthread_t) target; /* the thread evaluating */
    atomic_int clock;          /* its CPU clock (a clockid_t) */
    atomic_llong start_ns;     /* its CPU time when the watchdog first saw the evaluation */
    atomic_ullong signals;     /* signals sent, for tests */
} dsc__watchdog;

/* The sandbox of one lua_State; its address is in the state's extra space. */
typedef struct dsc__sandbox {
    size_t used, cap;             /* bytes held by the state, and the cap */
    int64_t budget_ns;            /* CPU time allowed to the evaluation running */
    int64_t start_ns;             /* its thread CPU time when the count hook was switched on */
    bool armed;                   /* an evaluation runs under a budget */
    bool expired;                 /* the budget ran out: every instruction raises until disarmed */
    volatile sig_atomic_t hooked; /* the signal handler switched the count hook on */
    uint64_t seq;                 /* evaluations armed so far */
    int base_ref;                 /* registry ref of the whitelisted environment */
    int decision_mt_ref;          /* registry ref of the decision userdata's metatable */
    lua_State *L;
    struct dsc__sandbox *volatile next_armed; /* the thread's other armed sandboxes */
    dsc__watchdog wd;
} dsc__sandbox;

/* A decision made by allow()/throttle()/refuse(): a userdata of this shape. */
typedef struct dsc__decision {
    dsc_policy_outcome outcome;
    int64_t retry_after_s;
    char reason[DSC_POLICY_REASON_MAX];
    char suggest_provider[DSC_POLICY_NAME_MAX];
    char suggest_model[DSC_POLICY_MODEL_MAX];
} dsc__decision;

/* --- policy_sandbox.c --- */

/* A new sandboxed state whose allocator and watchdog use sb (which must outlive it and
 * not move), with the whitelisted environment built. NULL when out of memory or when
 * the watchdog thread cannot start. Close it with dsc__sandbox_close. */
lua_State *dsc__sandbox_open(dsc__sandbox *sb, size_t cap);
/* Close L (NULL: no-op) and stop its watchdog. */
void dsc__sandbox_close(lua_State *L);
/* The sandbox of L. */
dsc__sandbox *dsc__sandbox_of(lua_State *L);
/* Give the evaluation that starts budget_ns of CPU time; disarm ends it (and the
 * count hook, if the watchdog switched it on). Arming an armed state disarms it first.
 * Between the two, and only then, the watchdog may signal the calling thread. */
void dsc__sandbox_arm(lua_State *L, int64_t budget_ns);
void dsc__sandbox_disarm(lua_State *L);
/* How many signals L's watchdog has sent (for tests). */
uint64_t dsc__sandbox_signals(lua_State *L);
/* Message handler for lua_pcall: turns any error value into a string. */
int dsc__sandbox_msgh(lua_State *L);
/* Protected: load f as text with its own environment, run it, check the table it
 * returns, freeze the environment. Pushes the policy table. Raises "file:line: ..." */
int dsc__sandbox_load_policy(lua_State *L, const dsc__policy_file *f, bool want_decide);
/* Protected: push a read-only proxy of the table at idx (name appears in errors). */
void dsc__sandbox_readonly(lua_State *L, int idx, const char *name);
/* The decision at idx when it is one made by allow/throttle/refuse, else NULL. */
dsc__decision *dsc__sandbox_todecision(lua_State *L, int idx);

/* --- policy_format.c --- */

/* string.format for policies (upvalue 1: Lua's, which it calls for formats it does not
 * do itself); the same text and errors as Lua's. */
int dsc__format(lua_State *L);

/* --- policy.c --- */

/* Read path into a NUL-terminated buffer (*len without the NUL); NULL with err. */
char *dsc__read_file(const char *path, size_t *len, dsc_error *err);
/* The 1-based line of the last line starting with "return" in src (1 when none). */
int dsc__last_return_line(const char *src, size_t len);
/* Protected: fill f's fields from the policy table at the top of L (name, mode,
 * on_error, enabled); raises "file:line: ..." for a bad value. */
void dsc__policy_read_meta(lua_State *L, dsc__policy_file *f);
/* Protected: replace the purposes table at the top of L (as returned by purposes.lua)
 * by a map normalised purpose -> class, checking its shape; the default class goes
 * into default_class (n bytes). Raises "purposes.lua:line: ..." for a bad shape. */
void dsc__purposes_build(lua_State *L, const dsc__policy_file *f, char *default_class, size_t n);

/* --- policy_vm.c / policy_ctx.c --- */

#define DSC__BUDGET_POOL_MAX 64
/* What-if results reused per request; further calls in one request get fresh tables. */
#define DSC__WHATIF_POOL_MAX 16
/* The lazy views of policy_ctx.c: req, req.subject, then per estimate (the request's,
 * then each pooled what-if result) its table and its 5 metric tables. */
#define DSC__VIEW_REQ 0
#define DSC__VIEW_SUBJECT 1
#define DSC__VIEW_EST 2
#define DSC__VIEW_COUNT (DSC__VIEW_EST + 6 * (1 + DSC__WHATIF_POOL_MAX))
/* budget_shown_state[i].metric of a fresh pool entry: its table holds no field yet */
#define DSC__METRIC_NONE ((dsc_metric)-1)

/* The last answer of the oracle's canonical model name (policy_ctx.c). */
typedef struct dsc__canon_cache {
    bool valid, found;
    char provider[DSC_POLICY_NAME_MAX], name[DSC_POLICY_MODEL_MAX], result[DSC_POLICY_MODEL_MAX];
} dsc__canon_cache;

/* The strings of the last request that req's view was filled from (policy_ctx.c). */
typedef struct dsc__req_prev {
    bool valid; /* false: compare nothing (a new VM, a new oracle) */
    bool ok[3]; /* each string below holds the last request's (it fitted) */
    char provider[DSC_POLICY_NAME_MAX], model[DSC_POLICY_MODEL_MAX], purpose[256];
} dsc__req_prev;

/* Purposes whose classes a VM remembers, and the longest purpose remembered. */
#define DSC__CLASS_MEMO_N 8
#define DSC__CLASS_MEMO_PURPOSE 64

struct dsc_policy_vm {
    dsc__sandbox sb; /* first member: the extra space points at it and at the VM */
    lua_State *L;
    dsc_policy_set *set;
    const dsc_catalog *cat;
    dsc_grid *grid;
    dsc_policy_oracle oracle;
    void (*log)(void *ud, const char *policy, const char *line);
    void *log_ud;
    dsc_policy_limits limits;
    int decide_ref[DSC_POLICY_MAX];
    int keys_ref;      /* the field names the fills use, interned (policy_ctx.c) */
    int key_index_ref; /* interned field name -> its index in keys_ref */
    int req_ref, tags_data_ref, ctx_ref;
    bool tags_shown; /* the tags' data table holds tags read this request */
    /* the lazy views (policy_ctx.c): each data table's registry ref, and which of its
     * fields policies have read (those a new request rewrites) */
    int view_ref[DSC__VIEW_COUNT];
    uint8_t view_mask[DSC__VIEW_COUNT];
    dsc_estimate whatif_est[DSC__WHATIF_POOL_MAX]; /* what the pooled what-if views show */
    dsc__req_prev prev;
    dsc__canon_cache canon;
    int budgets_ref;      /* read-only array proxy over budgets_data_ref */
    int budgets_data_ref; /* array of budget proxies, filled lazily per request */
    int budget_pool_ref;  /* data tables behind the proxies, reused */
    int budget_pool_n;    /* how many pool entries exist */
    int budgets_filled;   /* -1 = not yet this request, else how many are filled */
    int budgets_shown;    /* how many entries the array proxy holds now */
    int exceed_ref;       /* read-only array proxy over exceed_data_ref */
    int exceed_data_ref;  /* ctx.budgets("would_exceed"): the proxies of those exceeded */
    int exceed_shown;     /* how many entries exceed_data_ref holds now */
    bool exceed_filled;   /* exceed_data_ref is this request's */
    int whatif_pool_ref;  /* what-if results: {proxy, data, 5 metric data tables} each */
    int whatif_pool_n;    /* how many pool entries exist */
    int whatif_used;      /* how many this request has handed out */
    int purposes_ref;     /* normalised purpose -> class */
    int models_ref;       /* provider -> {read-only list, name -> model, sizes} */
    char default_class[32];
    char class_buf[32]; /* for dsc_policy_vm_purpose_class */
    /* The classes of the last purposes seen (a check asks for its purpose's class up
     * to three times: req.purpose_class, the journal, the metrics): the class of a
     * purpose is fixed for a VM, whose purposes map never changes. */
    struct {
        char purpose[DSC__CLASS_MEMO_PURPOSE];
        char klass[32];
    } class_memo[DSC__CLASS_MEMO_N];
    int class_memo_n, class_memo_next;
    const dsc_policy_input *in; /* the request under review, during decide */
    int current;                /* index of the policy running */
    dsc_policy_stats stats;
    /* what each budget pool entry's data table holds now: a refill writes only the
     * fields that changed since the last request */
    dsc_budget_state budget_shown_state[DSC__BUDGET_POOL_MAX];
};

/* The VM owning L (valid only for VM states). */
dsc_policy_vm *dsc__vm_of(lua_State *L);
/* Protected: build the VM's req and ctx tables once (at creation). */
int dsc__ctx_build(lua_State *L);
/* Protected: refill req and ctx in place from vm->in. */
int dsc__ctx_fill(lua_State *L);
/* Protected: push the class of the string at idx under the purposes table. */
void dsc__purpose_class(lua_State *L, dsc_policy_vm *vm, const char *purpose);
/* Run the policies of vm on in: all enabled ones (only = -1) or only the one with
 * that index, enabled or not (for tests). Same contract as dsc_policy_vm_decide. */
dsc_status dsc__vm_run(dsc_policy_vm *vm, const dsc_policy_input *in, int only, dsc_decision *out);

#endif
