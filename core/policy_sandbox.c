/*
 * policy_sandbox.c - one sandboxed Lua 5.4 state for policies (see policy_internal.h).
 *
 * Why each piece exists:
 * - a capped lua_Alloc: a policy that allocates without end gets "not enough memory"
 *   instead of taking the process down;
 * - a time budget: a watchdog thread switches on, by a signal, a count hook on an
 *   evaluation that outlives a tick; the hook checks its CPU time and on expiry re-arms
 *   itself to fire on every instruction before raising, so a pcall inside the policy
 *   cannot swallow the kill (see "the watchdog" below);
 * - a whitelisted environment: base (without dofile, loadfile, load, require,
 *   collectgarbage, rawset, print), and read-only views of string, table, math, utf8;
 *   string.dump is gone and the string metatable is hidden; setmetatable refuses __gc
 *   (a finalizer could run outside any time budget) and protected metatables;
 * - chunks are loaded as text only, each with its own _ENV that is frozen after the
 *   top-level chunk ran: a write to a global inside decide raises, so nothing written
 *   by one request can be seen by the next;
 * - allow/throttle/refuse build decision userdata the engine can trust.
 */
#include "policy_internal.h"

#include <errno.h>
#include <lualib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define HOOK_EVERY 1000 /* instructions between time budget checks */

dsc__sandbox *dsc__sandbox_of(lua_State *L) {
    return *(dsc__sandbox **)lua_getextraspace(L);
}

static void *capped_alloc(void *ud, void *ptr, size_t osize, size_t nsize) {
    dsc__sandbox *sb = ud;
    size_t old = ptr ? osize : 0;
    if (nsize == 0) {
        free(ptr);
        sb->used -= old;
        return NULL;
    }
    if (nsize > old && sb->used - old + nsize > sb->cap) return NULL;
    void *p = realloc(ptr, nsize);
    /* Lua assumes a shrinking block never fails: keep the old, larger one. */
    if (!p && ptr && nsize <= old) return ptr;
    if (p) sb->used = sb->used - old + nsize;
    return p;
}

/* CPU time of the calling thread: a worker preempted by the OS does not burn the
 * policy's budget. */
static int64_t thread_cpu_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

/* Every HOOK_EVERY instructions, once the watchdog switched it on (an evaluation that
 * outlived a tick): compare the thread's CPU time with the evaluation's start as the
 * watchdog saw it. On expiry the hook fires on every instruction and raises each
 * time. */
static void count_hook(lua_State *L, lua_Debug *ar) {
    (void)ar;
    dsc__sandbox *sb = dsc__sandbox_of(L);
    if (!sb->armed) return;
    if (!sb->expired) {
        int64_t t = thread_cpu_ns();
        if (sb->start_ns < 0) sb->start_ns = t; /* a hook always set (see WD_SIGNALS) */
        if (t - sb->start_ns < sb->budget_ns) return;
        sb->expired = true;
        lua_sethook(L, count_hook, LUA_MASKCOUNT, 1);
    }
    char msg[64];
    snprintf(msg, sizeof msg, "time budget of %g ms exceeded", (double)sb->budget_ns / 1e6);
    luaL_where(L, 0); /* in a hook, level 0 is the interrupted Lua function */
    lua_pushstring(L, msg);
    lua_concat(L, 2);
    lua_error(L);
}

/* --- the watchdog ---
 *
 * The time budget used to be a count hook on every state, always set: Lua then runs
 * luaG_traceexec before every instruction (7% of an evaluation of the shipped set).
 * Now no hook is set while policies run normally. A thread per sandbox looks at it
 * every tick; an evaluation it sees twice in a row (it ran for more than a tick of
 * wall time) gets a signal on its thread, whose handler switches on the count hook
 * (lua_sethook may be called from a signal handler: ldebug.c, lua.c's Ctrl-C), and
 * the hook measures the CPU time from the watchdog's first sight, as before. So a
 * runaway policy is cut at most a tick of CPU time late, and a policy that finishes
 * within a tick costs two atomic stores and never sees a signal.
 *
 * A signal is only ever sent to a thread inside an evaluation: the watchdog moves the
 * state from RUNNING to SIGNALLING before sending, and disarm, finding SIGNALLING,
 * waits for the handler (DELIVERED) before it returns. The handler finds the sandboxes
 * of its thread in a thread-local list, because a signal handler has no other way to
 * reach them; with the handler's process-wide installation (once) and a per-thread
 * "signal unblocked" flag, these are the only mutable statics of the policy engine. */

#define WD_SIGNAL SIGURG              /* ignored by default: a stray one is harmless */
#define WD_TICK_NS 1000000LL          /* how often the watchdog looks */
#define WD_PARK_TICKS 100             /* idle ticks before it sleeps until an arm */
#define WD_DELIVERY_WAIT_NS 100000000 /* disarm's wait for a signal in flight, at most */

/* ThreadSanitizer defers an asynchronous signal to the thread's next intercepted call,
 * which a Lua loop never makes: a runaway policy would never be cut. Under it the count
 * hook stays set on every state, as before the watchdog. */
#if defined(__SANITIZE_THREAD__)
#define WD_SIGNALS 0
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define WD_SIGNALS 0
#endif
#endif
#ifndef WD_SIGNALS
#define WD_SIGNALS 1
#endif

static _Thread_local dsc__sandbox *volatile armed_here;

static uint64_t wd_phase(uint64_t s) {
    return s & 3;
}

static void on_watchdog_signal(int sig, siginfo_t *si, void *uc) {
    (void)sig, (void)si, (void)uc;
    int saved = errno;
    for (dsc__sandbox *sb = armed_here; sb; sb = sb->next_armed) {
        uint64_t s = atomic_load(&sb->wd.state);
        if (wd_phase(s) != DSC__WD_SIGNALLING) continue;
        sb->start_ns = (int64_t)atomic_load(&sb->wd.start_ns);
        lua_sethook(sb->L, count_hook, LUA_MASKCOUNT, HOOK_EVERY);
        sb->hooked = 1;
        atomic_store(&sb->wd.state, (s & ~(uint64_t)3) | DSC__WD_DELIVERED);
    }
    errno = saved;
}

static void install_handler(void) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_watchdog_signal;
    sa.sa_flags = SA_SIGINFO | SA_RESTART;
    sigemptyset(&sa.sa_mask);
    sigaction(WD_SIGNAL, &sa, NULL);
}

static int64_t cpu_of(clockid_t clock) {
    struct timespec ts;
    if (clock_gettime(clock, &ts) != 0) return -1;
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static void deadline_in(struct timespec *ts, int64_t ns) {
    clock_gettime(CLOCK_MONOTONIC, ts);
    ns += ts->tv_nsec;
    ts->tv_sec += ns / 1000000000LL;
    ts->tv_nsec = ns % 1000000000LL;
}

/* One look (under wd->mu). *last is the state seen at the previous tick. */
static void wd_look(dsc__watchdog *wd, uint64_t *last, int *idle) {
    uint64_t s = atomic_load(&wd->state);
    if (wd_phase(s) != DSC__WD_RUNNING) {
        ++*idle;
        return;
    }
    *idle = 0;
    if (s != *last) { /* a new evaluation: its clock starts now */
        *last = s;
        atomic_store(&wd->start_ns, cpu_of((clockid_t)atomic_load(&wd->clock)));
        return;
    }
    uint64_t want = (s & ~(uint64_t)3) | DSC__WD_SIGNALLING;
    if (atomic_compare_exchange_strong(&wd->state, &s, want)) {
        atomic_fetch_add(&wd->signals, 1);
        pthread_kill(atomic_load(&wd->target), WD_SIGNAL);
    }
}

/* Sleep until an arm (or close) once idle for WD_PARK_TICKS; see dsc__sandbox_arm. */
static void wd_park(dsc__watchdog *wd) {
    atomic_store(&wd->parked, true);
    while (!wd->stop && wd_phase(atomic_load(&wd->state)) != DSC__WD_RUNNING)
        pthread_cond_wait(&wd->cv, &wd->mu);
    atomic_store(&wd->parked, false);
}

static void *wd_main(void *arg) {
    dsc__watchdog *wd = arg;
    uint64_t last = 0;
    int idle = 0;
    pthread_mutex_lock(&wd->mu);
    while (!wd->stop) {
        wd_look(wd, &last, &idle);
        if (idle > WD_PARK_TICKS) {
            wd_park(wd);
            idle = 0;
            continue;
        }
        struct timespec ts;
        deadline_in(&ts, WD_TICK_NS);
        pthread_cond_timedwait(&wd->cv, &wd->mu, &ts);
    }
    pthread_mutex_unlock(&wd->mu);
    return NULL;
}

static int wd_start(dsc__watchdog *wd) {
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    pthread_once(&once, install_handler);
    pthread_condattr_t ca;
    pthread_attr_t ta;
    int rc = pthread_condattr_init(&ca);
    if (rc) return rc;
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    rc = pthread_cond_init(&wd->cv, &ca);
    pthread_condattr_destroy(&ca);
    if (rc) return rc;
    pthread_mutex_init(&wd->mu, NULL);
    sigset_t all, old;
    sigfillset(&all); /* the watchdog takes no signal meant for the process */
    pthread_sigmask(SIG_SETMASK, &all, &old);
    pthread_attr_init(&ta);
    pthread_attr_setstacksize(&ta, 64 * 1024);
    rc = pthread_create(&wd->thread, &ta, wd_main, wd);
    pthread_attr_destroy(&ta);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (rc) {
        pthread_cond_destroy(&wd->cv);
        pthread_mutex_destroy(&wd->mu);
    }
    return rc;
}

static void wd_stop(dsc__watchdog *wd) {
    pthread_mutex_lock(&wd->mu);
    wd->stop = true;
    pthread_cond_signal(&wd->cv);
    pthread_mutex_unlock(&wd->mu);
    pthread_join(wd->thread, NULL);
    pthread_cond_destroy(&wd->cv);
    pthread_mutex_destroy(&wd->mu);
}

/* The first arm on a thread unblocks the signal there (a thread may have inherited a
 * mask that blocks it). */
static void unblock_here(void) {
    static _Thread_local bool done;
    if (done) return;
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, WD_SIGNAL);
    pthread_sigmask(SIG_UNBLOCK, &set, NULL);
    done = true;
}

/* Make the state IDLE: after this no signal is sent for the evaluation that ran. */
static void wd_quiesce(dsc__watchdog *wd) {
    int64_t waited = 0;
    for (;;) {
        uint64_t s = atomic_load(&wd->state);
        uint64_t idle = (s & ~(uint64_t)3) | DSC__WD_IDLE;
        if (wd_phase(s) == DSC__WD_SIGNALLING && waited < WD_DELIVERY_WAIT_NS) {
            /* the signal is on its way: a sleep lets it in */
            nanosleep(&(struct timespec){0, 10000}, NULL);
            waited += 10000;
            continue;
        }
        if (wd_phase(s) == DSC__WD_IDLE || atomic_compare_exchange_strong(&wd->state, &s, idle))
            return;
    }
}

static void unlist(dsc__sandbox *sb) {
    for (dsc__sandbox *volatile *p = &armed_here; *p; p = &(*p)->next_armed)
        if (*p == sb) {
            *p = sb->next_armed;
            break;
        }
    sb->next_armed = NULL;
}

void dsc__sandbox_arm(lua_State *L, int64_t budget_ns) {
    dsc__sandbox *sb = dsc__sandbox_of(L);
    if (sb->armed) dsc__sandbox_disarm(L);
    if (WD_SIGNALS) unblock_here();
    sb->budget_ns = budget_ns;
    sb->start_ns = -1;
    sb->armed = true;
    if (!WD_SIGNALS) return;
    sb->next_armed = armed_here;
    atomic_signal_fence(memory_order_seq_cst);
    armed_here = sb;
    pthread_t self = pthread_self();
    if (!pthread_equal(atomic_load_explicit(&sb->wd.target, memory_order_relaxed), self)) {
        clockid_t c;
        pthread_getcpuclockid(self, &c);
        atomic_store(&sb->wd.clock, (int)c);
        atomic_store(&sb->wd.target, self);
    }
    atomic_store(&sb->wd.state, ++sb->seq << 2 | DSC__WD_RUNNING);
    if (atomic_load(&sb->wd.parked)) { /* seq_cst on both sides: one of us sees the other */
        pthread_mutex_lock(&sb->wd.mu);
        pthread_cond_signal(&sb->wd.cv);
        pthread_mutex_unlock(&sb->wd.mu);
    }
}

void dsc__sandbox_disarm(lua_State *L) {
    dsc__sandbox *sb = dsc__sandbox_of(L);
    if (WD_SIGNALS) {
        wd_quiesce(&sb->wd);
        if (sb->armed) unlist(sb);
    }
    sb->armed = false;
    sb->expired = false;
    if (sb->hooked && WD_SIGNALS) {
        lua_sethook(L, NULL, 0, 0);
        sb->hooked = 0;
    } else if (sb->hooked) {
        lua_sethook(L, count_hook, LUA_MASKCOUNT, HOOK_EVERY); /* as it was before expiry */
    }
}

/* The watchdog's signals so far (tests). */
uint64_t dsc__sandbox_signals(lua_State *L) {
    return atomic_load(&dsc__sandbox_of(L)->wd.signals);
}

int dsc__sandbox_msgh(lua_State *L) {
    if (lua_type(L, 1) == LUA_TSTRING) return 1;
    /* Never call __tostring here: it would run policy code outside its time budget. */
    lua_pushfstring(L, "error object is a %s value", luaL_typename(L, 1));
    return 1;
}

/* Raise "where: message" at the level of the Lua code that called the C function. */
static int raise_here(lua_State *L, const char *msg) {
    luaL_where(L, 1);
    lua_pushstring(L, msg);
    lua_concat(L, 2);
    return lua_error(L);
}

static int l_readonly_write(lua_State *L) {
    lua_pushfstring(L, "attempt to modify read-only table '%s'",
                    lua_tostring(L, lua_upvalueindex(1)));
    return raise_here(L, lua_tostring(L, -1));
}

static int l_readonly_len(lua_State *L) {
    lua_pushinteger(L, (lua_Integer)lua_rawlen(L, lua_upvalueindex(1)));
    return 1;
}

static int l_readonly_pairs(lua_State *L) {
    lua_getglobal(L, "next"); /* the state's own global table, never seen by policies */
    lua_pushvalue(L, lua_upvalueindex(1));
    lua_pushnil(L);
    return 3;
}

void dsc__sandbox_readonly(lua_State *L, int idx, const char *name) {
    idx = lua_absindex(L, idx);
    lua_createtable(L, 0, 0); /* the proxy */
    lua_createtable(L, 0, 6); /* its metatable */
    lua_pushvalue(L, idx);
    lua_setfield(L, -2, "__index");
    lua_pushstring(L, name);
    lua_pushcclosure(L, l_readonly_write, 1);
    lua_setfield(L, -2, "__newindex");
    lua_pushvalue(L, idx);
    lua_pushcclosure(L, l_readonly_len, 1);
    lua_setfield(L, -2, "__len");
    lua_pushvalue(L, idx);
    lua_pushcclosure(L, l_readonly_pairs, 1);
    lua_setfield(L, -2, "__pairs");
    lua_pushliteral(L, "read-only");
    lua_setfield(L, -2, "__metatable");
    lua_setmetatable(L, -2);
}

/* setmetatable without __gc (finalizers would run outside any time budget). */
static int l_setmetatable(lua_State *L) {
    luaL_checktype(L, 1, LUA_TTABLE);
    int t = lua_type(L, 2);
    luaL_argexpected(L, t == LUA_TNIL || t == LUA_TTABLE, 2, "nil or table");
    if (t == LUA_TTABLE && lua_getfield(L, 2, "__gc") != LUA_TNIL)
        return raise_here(L, "__gc metamethods are not allowed in policies");
    if (luaL_getmetafield(L, 1, "__metatable") != LUA_TNIL)
        return raise_here(L, "cannot change a protected metatable");
    lua_settop(L, 2);
    lua_setmetatable(L, 1);
    return 1;
}

/* --- decisions --- */

/* The option names, interned once: upvalues of allow, throttle and refuse (a getfield
 * by C string looks the string up on every call). */
enum { OPT_REASON = 1, OPT_RETRY_AFTER, OPT_SUGGEST, OPT_PROVIDER, OPT_MODEL, OPT_COUNT };
static const char *const opt_names[OPT_COUNT] = {NULL,      "reason",   "retry_after",
                                                 "suggest", "provider", "model"};

/* Push field opt of the table at t (metamethods apply, as with getfield). */
static int opt_field(lua_State *L, int t, int opt) {
    lua_pushvalue(L, lua_upvalueindex(opt));
    return lua_gettable(L, t);
}

/* Copy the string at the top of the stack into dst (n bytes), cut to fit. */
static void copy_top(lua_State *L, char *dst, size_t n) {
    size_t len;
    const char *s = lua_tolstring(L, -1, &len);
    if (len >= n) len = n - 1;
    memcpy(dst, s, len);
    dst[len] = '\0';
}

static void copy_field(lua_State *L, int t, int opt, char *dst, size_t n) {
    if (opt_field(L, t, opt) == LUA_TSTRING)
        copy_top(L, dst, n);
    else if (!lua_isnil(L, -1))
        luaL_error(L, "field '%s' must be a string, got %s", opt_names[opt], luaL_typename(L, -1));
    lua_pop(L, 1);
}

/* suggest = "model" (of the request's provider) or {provider=, model=}. The string
 * form spares a policy a table per answer. */
static void read_suggest(lua_State *L, int t, dsc__decision *d) {
    int st = opt_field(L, t, OPT_SUGGEST);
    if (st == LUA_TSTRING) {
        copy_top(L, d->suggest_model, sizeof d->suggest_model);
    } else if (st == LUA_TTABLE) {
        int s = lua_gettop(L);
        copy_field(L, s, OPT_PROVIDER, d->suggest_provider, sizeof d->suggest_provider);
        copy_field(L, s, OPT_MODEL, d->suggest_model, sizeof d->suggest_model);
    } else if (st != LUA_TNIL) {
        luaL_error(L, "field 'suggest' must be a model name or a table {provider=, model=}, got %s",
                   luaL_typename(L, -1));
    }
    if (st != LUA_TNIL && !d->suggest_model[0]) luaL_error(L, "field 'suggest' needs a 'model'");
    lua_pop(L, 1);
}

static void read_options(lua_State *L, int t, dsc__decision *d) {
    copy_field(L, t, OPT_REASON, d->reason, sizeof d->reason);
    if (opt_field(L, t, OPT_RETRY_AFTER) != LUA_TNIL) {
        int isnum;
        lua_Number v = lua_tonumberx(L, -1, &isnum);
        if (!isnum || !(v >= 0 && v < 1e12))
            luaL_error(L, "field 'retry_after' must be a number of seconds >= 0");
        d->retry_after_s = (int64_t)(v + 0.999999);
    }
    lua_pop(L, 1);
    read_suggest(L, t, d);
}

/* allow(reason [, opts]) / allow{reason=, ...}: likewise refuse and throttle. */
static int make_decision(lua_State *L, dsc_policy_outcome outcome) {
    lua_settop(L, 2);
    dsc__decision *d = lua_newuserdatauv(L, sizeof *d, 0);
    d->outcome = outcome; /* the strings are read up to their NUL: no memset of 460 bytes */
    d->retry_after_s = 0;
    d->reason[0] = d->suggest_provider[0] = d->suggest_model[0] = '\0';
    int ud = lua_gettop(L);
    if (lua_type(L, 1) == LUA_TTABLE) {
        read_options(L, 1, d);
    } else {
        if (!lua_isnoneornil(L, 1)) {
            size_t len;
            const char *s = luaL_checklstring(L, 1, &len);
            if (len >= sizeof d->reason) len = sizeof d->reason - 1;
            memcpy(d->reason, s, len);
            d->reason[len] = '\0';
        }
        if (lua_type(L, 2) == LUA_TTABLE)
            read_options(L, 2, d);
        else if (!lua_isnoneornil(L, 2))
            luaL_typeerror(L, 2, "table of options");
    }
    lua_rawgeti(L, LUA_REGISTRYINDEX, dsc__sandbox_of(L)->decision_mt_ref);
    lua_setmetatable(L, ud);
    lua_settop(L, ud);
    return 1;
}

/* utc(ts): "2026-02-01T00:00:00Z" for unix seconds ts (os.date is not in the sandbox). */
static int l_utc(lua_State *L) {
    time_t t = (time_t)luaL_checkinteger(L, 1);
    struct tm tm;
    char buf[32];
    if (!gmtime_r(&t, &tm) || !strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm))
        return luaL_argerror(L, 1, "time out of range");
    lua_pushstring(L, buf);
    return 1;
}

static int l_allow(lua_State *L) {
    return make_decision(L, DSC_POLICY_ALLOW);
}
static int l_throttle(lua_State *L) {
    return make_decision(L, DSC_POLICY_THROTTLE);
}
static int l_refuse(lua_State *L) {
    return make_decision(L, DSC_POLICY_REFUSE);
}

dsc__decision *dsc__sandbox_todecision(lua_State *L, int idx) {
    if (lua_type(L, idx) != LUA_TUSERDATA || !lua_getmetatable(L, idx)) return NULL;
    lua_rawgeti(L, LUA_REGISTRYINDEX, dsc__sandbox_of(L)->decision_mt_ref);
    int same = lua_rawequal(L, -1, -2);
    lua_pop(L, 2);
    return same ? lua_touserdata(L, idx) : NULL;
}

static int l_decision_index(lua_State *L) {
    const dsc__decision *d = lua_touserdata(L, 1);
    const char *k = luaL_checkstring(L, 2);
    if (strcmp(k, "outcome") == 0)
        lua_pushstring(L, dsc_policy_outcome_name(d->outcome));
    else if (strcmp(k, "reason") == 0)
        lua_pushstring(L, d->reason);
    else if (strcmp(k, "retry_after") == 0)
        lua_pushinteger(L, d->retry_after_s);
    else if (strcmp(k, "suggest") == 0 && d->suggest_model[0]) {
        lua_createtable(L, 0, 2);
        lua_pushstring(L, d->suggest_provider);
        lua_setfield(L, -2, "provider");
        lua_pushstring(L, d->suggest_model);
        lua_setfield(L, -2, "model");
    } else
        lua_pushnil(L);
    return 1;
}

static int l_decision_tostring(lua_State *L) {
    const dsc__decision *d = lua_touserdata(L, 1);
    lua_pushfstring(L, "%s(%s)", dsc_policy_outcome_name(d->outcome), d->reason);
    return 1;
}

/* --- the environment --- */

static const char *const base_names[] = {
    "assert",   "error",    "getmetatable", "ipairs",   "next",   "pairs",
    "pcall",    "rawequal", "rawget",       "rawlen",   "select", "tonumber",
    "tostring", "type",     "xpcall",       "_VERSION", NULL,
};

static const char *const lib_names[] = {"string", "table", "math", "utf8", NULL};

static void build_decision_mt(lua_State *L, dsc__sandbox *sb) {
    lua_createtable(L, 0, 3);
    lua_pushcfunction(L, l_decision_index);
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, l_decision_tostring);
    lua_setfield(L, -2, "__tostring");
    lua_pushliteral(L, "decision");
    lua_setfield(L, -2, "__metatable");
    sb->decision_mt_ref = luaL_ref(L, LUA_REGISTRYINDEX);
}

/* Hide the string metatable and drop string.dump (bytecode must not leave or enter). */
static void harden_strings(lua_State *L) {
    lua_getglobal(L, "string");
    lua_pushnil(L);
    lua_setfield(L, -2, "dump");
    lua_pop(L, 1);
    lua_pushliteral(L, "");
    lua_getmetatable(L, -1);
    lua_pushboolean(L, 0);
    lua_setfield(L, -2, "__metatable");
    lua_pop(L, 2);
}

static void copy_into(lua_State *L, int from, int to);

/* Replace the string library at the top by a copy whose format is dsc__format (with
 * Lua's as its upvalue, for the formats it leaves to it). */
static void string_lib(lua_State *L) {
    int lib = lua_gettop(L);
    lua_createtable(L, 0, 24);
    copy_into(L, lib, lib + 1);
    lua_getfield(L, lib, "format");
    lua_pushcclosure(L, dsc__format, 1);
    lua_setfield(L, lib + 1, "format");
    lua_replace(L, lib);
}

static void build_base(lua_State *L, dsc__sandbox *sb) {
    lua_createtable(L, 0, 24);
    int env = lua_gettop(L);
    for (const char *const *n = base_names; *n; n++) {
        lua_getglobal(L, *n);
        lua_setfield(L, env, *n);
    }
    for (const char *const *n = lib_names; *n; n++) {
        lua_getglobal(L, *n);
        if (strcmp(*n, "string") == 0) string_lib(L);
        dsc__sandbox_readonly(L, -1, *n);
        lua_setfield(L, env, *n);
        lua_pop(L, 1);
    }
    static const luaL_Reg fns[] = {{"setmetatable", l_setmetatable}, {"utc", l_utc}, {NULL, NULL}};
    luaL_setfuncs(L, fns, 0);
    static const luaL_Reg decisions[] = {
        {"allow", l_allow}, {"throttle", l_throttle}, {"refuse", l_refuse}, {NULL, NULL}};
    for (int k = 1; k < OPT_COUNT; k++)
        lua_pushstring(L, opt_names[k]);
    luaL_setfuncs(L, decisions, OPT_COUNT - 1);
    sb->base_ref = luaL_ref(L, LUA_REGISTRYINDEX);
}

static int open_sandbox(lua_State *L) {
    dsc__sandbox *sb = dsc__sandbox_of(L);
    static const luaL_Reg libs[] = {
        {LUA_GNAME, luaopen_base},       {LUA_STRLIBNAME, luaopen_string},
        {LUA_TABLIBNAME, luaopen_table}, {LUA_MATHLIBNAME, luaopen_math},
        {LUA_UTF8LIBNAME, luaopen_utf8}, {NULL, NULL}};
    for (const luaL_Reg *l = libs; l->name; l++) {
        luaL_requiref(L, l->name, l->func, 1);
        lua_pop(L, 1);
    }
    harden_strings(L);
    build_decision_mt(L, sb);
    build_base(L, sb);
    return 0;
}

lua_State *dsc__sandbox_open(dsc__sandbox *sb, size_t cap) {
    memset(sb, 0, sizeof *sb);
    sb->cap = cap;
    sb->base_ref = sb->decision_mt_ref = LUA_NOREF;
    lua_State *L = lua_newstate(capped_alloc, sb);
    if (!L) return NULL;
    *(dsc__sandbox **)lua_getextraspace(L) = sb;
    sb->L = L;
    lua_pushcfunction(L, open_sandbox);
    if (lua_pcall(L, 0, 0, 0) != LUA_OK || (WD_SIGNALS && wd_start(&sb->wd) != 0)) {
        lua_close(L);
        return NULL;
    }
    if (!WD_SIGNALS) {
        lua_sethook(L, count_hook, LUA_MASKCOUNT, HOOK_EVERY);
        sb->hooked = 1;
    }
    lua_gc(L, LUA_GCGEN, 0, 0); /* most garbage is per-request and dies young */
    return L;
}

void dsc__sandbox_close(lua_State *L) {
    if (!L) return;
    dsc__sandbox *sb = dsc__sandbox_of(L);
    dsc__sandbox_disarm(L);
    lua_close(L);
    if (WD_SIGNALS) wd_stop(&sb->wd);
}

/* --- loading a policy chunk --- */

static int l_global_write(lua_State *L) {
    const char *k = lua_type(L, 2) == LUA_TSTRING ? lua_tostring(L, 2) : "?";
    lua_pushfstring(L,
                    "assignment to global '%s' (policies keep no globals between requests: "
                    "declare it local)",
                    k);
    return raise_here(L, lua_tostring(L, -1));
}

/* Copy every pair of table from into table to (raw). */
static void copy_into(lua_State *L, int from, int to) {
    for (lua_pushnil(L); lua_next(L, from);) {
        lua_pushvalue(L, -2);
        lua_insert(L, -2);
        lua_rawset(L, to); /* leaves the key for lua_next */
    }
}

/* Push a read-only view of the table at idx whose nested tables are read-only too;
 * seen (at index seen) maps tables already frozen to their view, for cycles. */
static void deep_readonly(lua_State *L, int idx, int seen, int depth) {
    if (depth > 64) luaL_error(L, "a global table is nested more than 64 levels deep");
    luaL_checkstack(L, 8, "global table too deep");
    idx = lua_absindex(L, idx);
    lua_pushvalue(L, idx);
    if (lua_rawget(L, seen) != LUA_TNIL) return;
    lua_pop(L, 1);
    dsc__sandbox_readonly(L, idx, "global table");
    lua_pushvalue(L, idx);
    lua_pushvalue(L, -2);
    lua_rawset(L, seen);
    for (lua_pushnil(L); lua_next(L, idx); lua_pop(L, 1)) {
        if (!lua_istable(L, -1)) continue;
        deep_readonly(L, -1, seen,
                      depth + 1); /* replacing the value of an existing key is allowed */
        lua_pushvalue(L, -3);
        lua_insert(L, -2);
        lua_rawset(L, idx);
    }
}

/* Copy the policy's globals into frozen, tables as deep read-only views: a policy
 * cannot keep state in a global table between requests either. */
static void copy_frozen(lua_State *L, int env, int frozen) {
    lua_newtable(L);
    int seen = lua_gettop(L);
    for (lua_pushnil(L); lua_next(L, env);) {
        if (lua_istable(L, -1)) {
            deep_readonly(L, -1, seen, 0);
            lua_remove(L, -2);
        }
        lua_pushvalue(L, -2);
        lua_insert(L, -2);
        lua_rawset(L, frozen);
    }
    lua_pop(L, 1);
}

/* After the top-level chunk ran: move its globals next to the whitelisted ones in a
 * table the environment reads through, and make every further write raise. */
static void freeze_env(lua_State *L, int env) {
    dsc__sandbox *sb = dsc__sandbox_of(L);
    lua_createtable(L, 0, 32);
    int frozen = lua_gettop(L);
    lua_rawgeti(L, LUA_REGISTRYINDEX, sb->base_ref);
    copy_into(L, lua_gettop(L), frozen);
    lua_pop(L, 1);
    copy_frozen(L, env, frozen);
    for (lua_pushnil(L); lua_next(L, frozen);) { /* clear env, keys taken from frozen */
        lua_pop(L, 1);
        lua_pushvalue(L, -1);
        lua_pushnil(L);
        lua_rawset(L, env);
    }
    lua_createtable(L, 0, 3);
    lua_pushvalue(L, frozen);
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, l_global_write);
    lua_setfield(L, -2, "__newindex");
    lua_pushliteral(L, "environment");
    lua_setfield(L, -2, "__metatable");
    lua_setmetatable(L, env);
    lua_settop(L, frozen - 1);
}

/* A fresh environment reading through to the whitelisted one; writable while loading. */
static void push_load_env(lua_State *L) {
    lua_createtable(L, 0, 8);
    lua_createtable(L, 0, 1);
    lua_rawgeti(L, LUA_REGISTRYINDEX, dsc__sandbox_of(L)->base_ref);
    lua_setfield(L, -2, "__index");
    lua_setmetatable(L, -2);
}

int dsc__sandbox_load_policy(lua_State *L, const dsc__policy_file *f, bool want_decide) {
    if (luaL_loadbufferx(L, f->src, f->len, f->chunkname, "t") != LUA_OK) return lua_error(L);
    push_load_env(L);
    int env = lua_gettop(L);
    lua_pushvalue(L, env);
    if (!lua_setupvalue(L, env - 1, 1)) lua_pop(L, 1);
    lua_pushvalue(L, env - 1);
    lua_call(L, 0, 1);
    int line = dsc__last_return_line(f->src, f->len);
    if (!lua_istable(L, -1))
        return luaL_error(L, "%s:%d: a policy file must return a table, got %s", f->file, line,
                          luaL_typename(L, -1));
    if (want_decide && lua_getfield(L, -1, "decide") != LUA_TFUNCTION)
        return luaL_error(L, "%s:%d: the policy table has no 'decide' function", f->file, line);
    if (want_decide) lua_pop(L, 1);
    freeze_env(L, env);
    lua_replace(L, env - 1);
    lua_settop(L, env - 1);
    return 1;
}
