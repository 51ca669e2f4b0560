/*
 * test_random.c - core/random.c: small draws share one system call per chunk of
 * kernel bytes, never hand out a byte twice (across draws, threads or a fork), and
 * large draws still come from the kernel.
 */
#define _GNU_SOURCE /* syscall */
#include "discern/random.h"

#include <criterion/criterion.h>
#include <pthread.h>
#include <string.h>
#include <sys/random.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

/* getrandom as the library sees it: counted here, served by the kernel. */
static size_t getrandom_calls;

ssize_t getrandom(void *buf, size_t n, unsigned int flags) {
    getrandom_calls++;
    return syscall(SYS_getrandom, buf, n, flags);
}

#define DRAWS 2000
#define ID_BYTES 12

static int cmp_id(const void *a, const void *b) {
    return memcmp(a, b, ID_BYTES);
}

Test(random, small_draws_share_one_system_call_per_256_bytes) {
    uint8_t b[ID_BYTES];
    cr_assert_eq(dsc_random_bytes(b, sizeof b, NULL), DSC_OK); /* the buffer filled */
    size_t before = getrandom_calls;
    for (int i = 0; i < 210; i++)
        cr_assert_eq(dsc_random_bytes(b, sizeof b, NULL), DSC_OK);
    /* 210 draws of 12 bytes are 2 520 bytes: ten refills of 256, not 210 calls. */
    cr_assert_leq(getrandom_calls - before, 11, "%zu calls", getrandom_calls - before);
    cr_assert_geq(getrandom_calls - before, 9, "%zu calls", getrandom_calls - before);
}

Test(random, draws_never_hand_out_the_same_bytes_twice) {
    static uint8_t ids[DRAWS][ID_BYTES];
    for (int i = 0; i < DRAWS; i++)
        cr_assert_eq(dsc_random_bytes(ids[i], ID_BYTES, NULL), DSC_OK);
    qsort(ids, DRAWS, ID_BYTES, cmp_id);
    for (int i = 1; i < DRAWS; i++)
        cr_assert_neq(memcmp(ids[i - 1], ids[i], ID_BYTES), 0, "draw repeated");
    static const uint8_t zero[ID_BYTES];
    cr_assert_neq(memcmp(ids[0], zero, ID_BYTES), 0);
}

Test(random, draws_larger_than_32_bytes_go_to_the_kernel_each_time) {
    uint8_t a[64], b[64];
    size_t before = getrandom_calls;
    cr_assert_eq(dsc_random_bytes(a, sizeof a, NULL), DSC_OK);
    cr_assert_eq(dsc_random_bytes(b, sizeof b, NULL), DSC_OK);
    cr_assert_eq(getrandom_calls - before, 2);
    cr_assert_neq(memcmp(a, b, sizeof a), 0);
}

Test(random, a_forked_child_draws_other_bytes_than_its_parent) {
    uint8_t mine[ID_BYTES], childs[ID_BYTES];
    cr_assert_eq(dsc_random_bytes(mine, sizeof mine, NULL), DSC_OK); /* buffer full */
    int fd[2];
    cr_assert_eq(pipe(fd), 0);
    pid_t pid = fork();
    cr_assert_geq(pid, 0);
    if (pid == 0) {
        uint8_t b[ID_BYTES];
        int ok = dsc_random_bytes(b, sizeof b, NULL) == DSC_OK &&
                 write(fd[1], b, sizeof b) == (ssize_t)sizeof b;
        _exit(ok ? 0 : 1);
    }
    close(fd[1]);
    cr_assert_eq(read(fd[0], childs, sizeof childs), (ssize_t)sizeof childs);
    close(fd[0]);
    int status = 0;
    cr_assert_eq(waitpid(pid, &status, 0), pid);
    cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    cr_assert_eq(dsc_random_bytes(mine, sizeof mine, NULL), DSC_OK);
    cr_assert_neq(memcmp(mine, childs, sizeof mine), 0, "the child repeated the parent's bytes");
}

static void *draw_in_thread(void *out) {
    return dsc_random_bytes(out, ID_BYTES, NULL) == DSC_OK ? out : NULL;
}

Test(random, two_threads_draw_other_bytes) {
    uint8_t a[ID_BYTES], b[ID_BYTES];
    pthread_t ta, tb;
    void *ra, *rb;
    cr_assert_eq(pthread_create(&ta, NULL, draw_in_thread, a), 0);
    cr_assert_eq(pthread_create(&tb, NULL, draw_in_thread, b), 0);
    pthread_join(ta, &ra);
    pthread_join(tb, &rb);
    cr_assert(ra && rb);
    cr_assert_neq(memcmp(a, b, sizeof a), 0);
}
