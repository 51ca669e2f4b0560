/*
 * authlimit.c - per-address and global slowdown of failed `auth` (see authlimit.h).
 *
 * Addresses live in the core's string map (strmap_internal.h), keyed by the string
 * inside each entry, and on a list ordered by last failure: when the table is full,
 * the head (the least recently failing address) makes room. Only a failure creates
 * an entry, so peers that never fail cost nothing. Turns are booked when an attempt
 * is admitted, not when it is evaluated: attempts arriving together queue one gap
 * apart instead of all being evaluated at the same moment.
 */
#include "authlimit.h"

#include "dlist_internal.h"
#include "strmap_internal.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

/* From peer.c: the uid of a Unix-socket peer; -1 when unknown. */
int dsc__peer_uid(int fd, uid_t *uid);

typedef struct entry {
    char key[DSC__AUTHLIMIT_KEY_MAX]; /* the map's key */
    uint32_t failures;                /* since the address was last clean */
    int64_t last_failure_us;
    int64_t next_us;            /* the earliest turn of its next attempt */
    uint64_t epoch;             /* the report interval its interval count belongs to */
    uint32_t interval_failures; /* failures in that interval */
    dsc__dlink link;            /* in the list by last failure */
} entry;

struct dsc__authlimit {
    pthread_mutex_t lock;
    dsc__strmap map;
    dsc__dlist by_failure; /* entries by last failure, oldest first */
    size_t n;
    int64_t global_next_us; /* the earliest turn of the next TCP attempt while over */
    int64_t second;         /* the current second of the global count */
    uint32_t this_second, last_second;
    uint64_t total;
    /* The interval being counted for the log. */
    uint64_t epoch;
    int64_t interval_start_us;
    uint64_t interval_failures, interval_addresses;
    uint32_t top_failures;
    char top_key[DSC__AUTHLIMIT_KEY_MAX];
};

dsc__authlimit *dsc__authlimit_new(void) {
    dsc__authlimit *l = calloc(1, sizeof *l);
    if (!l) return NULL;
    pthread_mutex_init(&l->lock, NULL);
    dsc__strmap_init(&l->map);
    l->epoch = 1;
    return l;
}

void dsc__authlimit_free(dsc__authlimit *l) {
    if (!l) return;
    for (dsc__dlink *n = l->by_failure.head, *next; n; n = next) {
        next = n->next;
        free(DSC__DLIST_ENTRY(n, entry, link));
    }
    dsc__strmap_destroy(&l->map);
    pthread_mutex_destroy(&l->lock);
    free(l);
}

const char *dsc__authlimit_key(int fd, char *key, size_t cap) {
    struct sockaddr_storage ss;
    socklen_t len = sizeof ss;
    char text[INET6_ADDRSTRLEN];
    uid_t uid;
    snprintf(key, cap, "unknown");
    if (getsockname(fd, (struct sockaddr *)&ss, &len) == 0 && ss.ss_family == AF_UNIX) {
        if (dsc__peer_uid(fd, &uid) == 0) snprintf(key, cap, "unix:uid=%u", (unsigned)uid);
        return key;
    }
    len = sizeof ss;
    if (getpeername(fd, (struct sockaddr *)&ss, &len) != 0) return key;
    if (ss.ss_family == AF_INET &&
        inet_ntop(AF_INET, &((struct sockaddr_in *)&ss)->sin_addr, text, sizeof text))
        snprintf(key, cap, "tcp:%s", text);
    if (ss.ss_family == AF_INET6) {
        /* One end site gets a /64: counting its addresses apart would give it 2^64. */
        struct in6_addr a = ((struct sockaddr_in6 *)&ss)->sin6_addr;
        memset(a.s6_addr + 8, 0, 8);
        if (inet_ntop(AF_INET6, &a, text, sizeof text)) snprintf(key, cap, "tcp:%s/64", text);
    }
    return key;
}

/* ------------------------------------------------------------------ entries -- */

static void drop_oldest(dsc__authlimit *l) {
    entry *e = DSC__DLIST_ENTRY(l->by_failure.head, entry, link);
    dsc__dlist_unlink(&l->by_failure, &e->link);
    dsc__strmap_del_if(&l->map, e->key, e);
    free(e);
    l->n--;
}

/* The entry of key with failures forgotten after DSC__AUTHLIMIT_FORGET_US; NULL when
 * absent. */
static entry *lookup(dsc__authlimit *l, const char *key, int64_t now_us) {
    entry *e = dsc__strmap_get(&l->map, key);
    if (e && now_us - e->last_failure_us > DSC__AUTHLIMIT_FORGET_US) e->failures = 0;
    return e;
}

/* The entry of key, created (making room) when absent; NULL when out of memory. */
static entry *lookup_or_add(dsc__authlimit *l, const char *key, int64_t now_us) {
    entry *e = lookup(l, key, now_us);
    if (e) return e;
    if (l->n >= DSC__AUTHLIMIT_ADDRESSES) drop_oldest(l);
    if (!(e = calloc(1, sizeof *e))) return NULL;
    snprintf(e->key, sizeof e->key, "%s", key);
    if (dsc__strmap_put(&l->map, e->key, e) != DSC_OK) {
        free(e);
        return NULL;
    }
    dsc__dlist_append(&l->by_failure, &e->link);
    l->n++;
    return e;
}

/* ------------------------------------------------------------------- limits -- */

static int64_t gap_of(uint32_t failures) {
    uint32_t extra = failures - DSC__AUTHLIMIT_FREE;
    int64_t gap = DSC__AUTHLIMIT_DELAY_US;
    while (extra-- > 0 && gap < DSC__AUTHLIMIT_DELAY_MAX_US)
        gap *= 2;
    return gap < DSC__AUTHLIMIT_DELAY_MAX_US ? gap : DSC__AUTHLIMIT_DELAY_MAX_US;
}

static void roll_second(dsc__authlimit *l, int64_t now_us) {
    int64_t s = now_us / 1000000;
    if (s == l->second) return;
    l->last_second = s == l->second + 1 ? l->this_second : 0;
    l->this_second = 0;
    l->second = s;
}

static bool global_over(dsc__authlimit *l, const char *key, int64_t now_us) {
    if (strncmp(key, "unix:", 5) == 0) return false;
    roll_second(l, now_us);
    return l->this_second + l->last_second > DSC__AUTHLIMIT_GLOBAL_FREE;
}

static int64_t max64(int64_t a, int64_t b) {
    return a > b ? a : b;
}

int64_t dsc__authlimit_admit(dsc__authlimit *l, const char *key, int64_t now_us, dsc_error *err) {
    pthread_mutex_lock(&l->lock);
    entry *e = lookup(l, key, now_us);
    bool local = e && e->failures >= DSC__AUTHLIMIT_FREE;
    bool global = global_over(l, key, now_us);
    int64_t at = now_us;
    if (local) at = max64(now_us + DSC__AUTHLIMIT_DELAY_US, e->next_us);
    if (global) at = max64(at, max64(now_us + DSC__AUTHLIMIT_DELAY_US, l->global_next_us));
    int64_t wait = at - now_us;
    if (wait > DSC__AUTHLIMIT_WAIT_MAX_US) {
        long retry_s = (long)((wait - DSC__AUTHLIMIT_WAIT_MAX_US) / 1000000 + 1);
        pthread_mutex_unlock(&l->lock);
        dsc_error_set(err, DSC_UNAUTHORIZED,
                      "too many failed auth attempts from %s%s; retry in %ld s", local ? key : "",
                      local ? "" : "all addresses", retry_s);
        return -1;
    }
    if (local) e->next_us = at + gap_of(e->failures);
    if (global) l->global_next_us = at + DSC__AUTHLIMIT_GLOBAL_GAP_US;
    pthread_mutex_unlock(&l->lock);
    return wait;
}

/* Count e's failure in the interval being reported. */
static void count_interval(dsc__authlimit *l, entry *e) {
    if (e->epoch != l->epoch) {
        e->epoch = l->epoch;
        e->interval_failures = 0;
        l->interval_addresses++;
    }
    l->interval_failures++;
    if (++e->interval_failures > l->top_failures) {
        l->top_failures = e->interval_failures;
        snprintf(l->top_key, sizeof l->top_key, "%s", e->key);
    }
}

void dsc__authlimit_failed(dsc__authlimit *l, const char *key, int64_t now_us) {
    pthread_mutex_lock(&l->lock);
    l->total++;
    if (strncmp(key, "unix:", 5) != 0) {
        roll_second(l, now_us);
        l->this_second++;
    }
    if (l->interval_failures == 0) l->interval_start_us = now_us;
    entry *e = lookup_or_add(l, key, now_us);
    if (e) {
        e->failures++;
        e->last_failure_us = now_us;
        dsc__dlist_unlink(&l->by_failure, &e->link);
        dsc__dlist_append(&l->by_failure, &e->link);
        /* The first failure over the free ones starts the waiting. */
        if (e->failures >= DSC__AUTHLIMIT_FREE)
            e->next_us = max64(e->next_us, now_us + gap_of(e->failures));
        count_interval(l, e);
    } else {
        l->interval_failures++;
    }
    pthread_mutex_unlock(&l->lock);
}

void dsc__authlimit_report(dsc__authlimit *l, const dsc_log *log, int64_t now_us) {
    pthread_mutex_lock(&l->lock);
    if (l->interval_failures == 0 || now_us - l->interval_start_us < DSC__AUTHLIMIT_REPORT_US) {
        pthread_mutex_unlock(&l->lock);
        return;
    }
    uint64_t n = l->interval_failures, addrs = l->interval_addresses;
    uint32_t top = l->top_failures;
    char top_key[DSC__AUTHLIMIT_KEY_MAX];
    snprintf(top_key, sizeof top_key, "%s", l->top_key);
    double seconds = (double)(now_us - l->interval_start_us) / 1e6;
    l->epoch++;
    l->interval_failures = l->interval_addresses = 0;
    l->top_failures = 0;
    l->top_key[0] = '\0';
    pthread_mutex_unlock(&l->lock);
    dsc_log_write(log, DSC_LOG_WARN, "auth_failed",
                  "count=%llu addresses=%llu top=%s top_count=%u seconds=%.1f",
                  (unsigned long long)n, (unsigned long long)addrs, top_key[0] ? top_key : "-", top,
                  seconds);
}

uint64_t dsc__authlimit_total(dsc__authlimit *l) {
    pthread_mutex_lock(&l->lock);
    uint64_t n = l->total;
    pthread_mutex_unlock(&l->lock);
    return n;
}

size_t dsc__authlimit_size(dsc__authlimit *l) {
    pthread_mutex_lock(&l->lock);
    size_t n = l->n;
    pthread_mutex_unlock(&l->lock);
    return n;
}
