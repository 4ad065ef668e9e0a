/* common/lockcheck: in debug builds a _locked function called without its lock stops the program
 * (the frame allocator's, a mutex's holder check), and holding the lock, or having released it and
 * taken it again, passes. Release builds compile the checks out: the test says so and skips. */
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include <san/san.h>

#include "common/lockcheck.h"
#include "phys/machine.h"

#ifndef NDEBUG
/* Runs fn in a child; true when the child died of SIGABRT (a failed assertion). */
static bool aborts(void (*fn)(void *), void *arg)
{
    fflush(NULL);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        fn(arg);
        _exit(0);
    }
    int st;
    assert_int_equal(waitpid(pid, &st, 0), pid);
    return WIFSIGNALED(st) && WTERMSIG(st) == SIGABRT;
}

static void check_mutex(void *arg)
{
    san_assert_mutex_held((struct san_mutex *)arg);
}

static void *hold(void *arg)
{
    san_mutex_lock(arg);
    return NULL; /* exits holding it */
}

static void test_mutex(void **state)
{
    (void)state;
    struct san_mutex m;
    assert_int_equal(san_mutex_init(&m), 0);
    assert_true(aborts(check_mutex, &m)); /* not held */
    san_mutex_lock(&m);
    assert_false(aborts(check_mutex, &m)); /* held by this thread (the child is a copy of it) */
    san_mutex_unlock(&m);
    assert_true(aborts(check_mutex, &m));

    struct san_mutex other = SAN_MUTEX_INITIALIZER;
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, hold, &other), 0);
    pthread_join(t, NULL);
    assert_true(aborts(check_mutex, &other)); /* held, but by another thread */
    san_mutex_destroy(&m);
}

struct freeing {
    struct san_machine *m;
    struct san_frames *f;
};

static void free_unlocked(void *arg)
{
    struct freeing *x = arg;
    san_phys_free_locked(x->m, x->f); /* without m's write lock */
}

static void free_locked(void *arg)
{
    struct freeing *x = arg;
    san_machine_write_lock(x->m);
    san_phys_free_locked(x->m, x->f);
    san_machine_write_unlock(x->m);
}

static void test_machine(void **state)
{
    (void)state;
    struct san_machine_config cfg = {.ram_size = UINT64_C(64) << 20};
    struct freeing x;
    int err;
    assert_int_equal(san_machine_create(&cfg, &x.m), 0);
    san_machine_write_lock(x.m);
    x.f = san_phys_alloc_locked(x.m, 4 * SAN_PAGE_SIZE, 0, UINT64_MAX, 0, SAN_FRAMES_CONTIG, &err);
    san_machine_write_unlock(x.m);
    assert_non_null(x.f);
    assert_true(aborts(free_unlocked, &x));
    assert_false(aborts(free_locked, &x));
    free_locked(&x);
    san_machine_destroy(x.m);
}
#else
static void test_mutex(void **state)
{
    (void)state;
    skip(); /* NDEBUG: the checks are compiled out */
}

static void test_machine(void **state)
{
    (void)state;
    skip();
}
#endif

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_mutex),
        cmocka_unit_test(test_machine),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
