/* phys under threads: four threads allocate (with and without constraints), write a pattern
 * unique to the thread and the allocation into every page, check it and free, while the main
 * thread reads statistics (which must always be a consistent snapshot: allocated + free = RAM)
 * and runs the low-memory pattern check (which must stay clean: nobody writes free memory). Two
 * threads holding overlapping frames would overwrite each other's patterns. At the end the
 * machine is back to its idle statistics. And once the process has threads, every call waits
 * for the machine's lock (it skips it only while the process has one thread). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <string.h>

#include <cmocka.h>

#include <san/san.h>

#include "common/page.h"
#include "phys/machine.h" /* m->lock, for the test that calls wait for it */

#define KIB      (UINT64_C(1) << 10)
#define MIB      (UINT64_C(1) << 20)
#define GIB      (UINT64_C(1) << 30)
#define THREADS  4
#define OPS      20000
#define MAX_HELD 64

struct held {
    uint64_t *va;
    size_t bytes;
    uint64_t tag;
    enum san_cache_type cache;
};

struct worker {
    pthread_t thread;
    struct san_machine *m;
    unsigned id;
    uint64_t seed;
    int failures; /* checked by the main thread: cmocka asserts are not thread-safe */
    uint64_t allocs, enomem;
};

static atomic_bool stop;

static uint64_t rnd(uint64_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

static void fill(const struct held *h)
{
    for (uint64_t off = 0; off < h->bytes; off += PAGE)
        h->va[off / 8] = h->tag ^ off;
    h->va[h->bytes / 8 - 1] = ~h->tag;
}

static bool intact(const struct held *h)
{
    for (uint64_t off = 0; off < h->bytes; off += PAGE)
        if (h->va[off / 8] != (h->tag ^ off))
            return false;
    return h->va[h->bytes / 8 - 1] == ~h->tag;
}

static bool release(struct worker *w, struct held *h)
{
    if (!intact(h))
        return false;
    return san_free_contiguous(w->m, h->va, h->bytes, h->cache) == 0;
}

static void *work(void *arg)
{
    struct worker *w = arg;
    struct held held[MAX_HELD];
    size_t n = 0;

    for (int op = 0; op < OPS; op++) {
        if (n < MAX_HELD && (n == 0 || rnd(&w->seed) % 100 < 55)) {
            size_t bytes = (size_t)(1 + rnd(&w->seed) % 32) * PAGE;
            san_paddr_t lo = 0, hi = UINT64_MAX, boundary = 0;
            switch (rnd(&w->seed) % 4) {
            case 0:
                hi = 4 * GIB - 1;
                break; /* 32-bit device */
            case 1:    /* a window */
                lo = 16 * MIB;
                hi = GIB - 1;
                break;
            case 2:
                boundary = 128 * KIB;
                break; /* bytes <= 128 KiB */
            default:
                break;
            }
            enum san_cache_type cache = (enum san_cache_type)(rnd(&w->seed) % 3);
            void *va;
            int err = san_alloc_contiguous(w->m, bytes, lo, hi, boundary, cache, &va);
            if (err == -ENOMEM) {
                w->enomem++;
                continue;
            }
            san_paddr_t pa;
            if (err || san_get_physical_address(w->m, va, &pa) || pa < lo || pa + bytes - 1 > hi ||
                (boundary && pa / boundary != (pa + bytes - 1) / boundary)) {
                w->failures++;
                continue;
            }
            held[n] = (struct held){va, bytes, (uint64_t)w->id << 56 | (uint64_t)op << 20, cache};
            fill(&held[n++]);
            w->allocs++;
        } else {
            size_t i = rnd(&w->seed) % n;
            if (!release(w, &held[i]))
                w->failures++;
            held[i] = held[--n];
        }
        /* Now and then, every held allocation is still ours alone. */
        if (op % 512 == 0)
            for (size_t i = 0; i < n; i++)
                if (!intact(&held[i]))
                    w->failures++;
    }
    while (n)
        if (!release(w, &held[--n]))
            w->failures++;
    return NULL;
}

static void run(bool nolowmem)
{
    struct san_machine_config cfg = {.ram_size = 4 * GIB, .nolowmem = nolowmem};
    struct san_machine *m;
    struct san_machine_stats idle, st;
    struct worker w[THREADS];

    assert_int_equal(san_machine_create(&cfg, &m), 0);
    assert_int_equal(san_machine_stats(m, &idle), 0);
    atomic_store(&stop, false);
    for (unsigned i = 0; i < THREADS; i++) {
        w[i] = (struct worker){.m = m, .id = i + 1, .seed = 0x9e3779b97f4a7c15u * (i + 1)};
        assert_int_equal(pthread_create(&w[i].thread, NULL, work, &w[i]), 0);
    }
    /* Meanwhile: snapshots are consistent, the pattern check stays clean. */
    for (int k = 0; k < 2000; k++) {
        assert_int_equal(san_machine_stats(m, &st), 0);
        assert_int_equal(st.allocated_bytes + st.free_bytes, st.ram_bytes);
        assert_true(st.low_free_bytes <= st.free_bytes);
        if (nolowmem && k % 100 == 0) {
            uint64_t dirty = 1;
            assert_int_equal(san_machine_check_lowmem(m, &dirty), 0);
            assert_int_equal(dirty, 0);
        }
    }
    uint64_t allocs = 0;
    for (unsigned i = 0; i < THREADS; i++) {
        assert_int_equal(pthread_join(w[i].thread, NULL), 0);
        assert_int_equal(w[i].failures, 0);
        allocs += w[i].allocs;
    }
    assert_true(allocs > THREADS * OPS / 4);
    assert_int_equal(san_machine_stats(m, &st), 0);
    assert_memory_equal(&st, &idle, sizeof(st));
    if (nolowmem) {
        uint64_t dirty = 1;
        assert_int_equal(san_machine_check_lowmem(m, &dirty), 0);
        assert_int_equal(dirty, 0);
    }
    san_machine_destroy(m);
}

static void test_threads(void **state)
{
    (void)state;
    run(false);
}

static void test_threads_nolowmem(void **state)
{
    (void)state;
    run(true);
}

/* One call, made by a thread while the main thread holds m->lock for writing. */
enum call { ALLOC, FREE, STATS, PHYS_ADDR };
struct waiter {
    struct san_machine *m;
    enum call call;
    void *va; /* ALLOC: what it got; FREE, PHYS_ADDR: what it names */
    atomic_int done;
    int err;
};

static void *wait_main(void *arg)
{
    struct waiter *w = arg;
    struct san_machine_stats st;
    san_paddr_t pa;
    switch (w->call) {
    case ALLOC:
        w->err = san_alloc_contiguous(w->m, 64 * KIB, 0, UINT64_MAX, 0, SAN_CACHED, &w->va);
        break;
    case FREE:
        w->err = san_free_contiguous(w->m, w->va, 64 * KIB, SAN_CACHED);
        break;
    case STATS:
        w->err = san_machine_stats(w->m, &st);
        break;
    case PHYS_ADDR:
        w->err = san_get_physical_address(w->m, w->va, &pa);
        break;
    }
    atomic_store(&w->done, 1);
    return NULL;
}

/* The call must not get past the lock the main thread holds, and must complete once it is
 * released. */
static void waits_for_the_lock(struct san_machine *m, struct waiter *w)
{
    pthread_t t;
    struct timespec ms50 = {0, 50 * 1000 * 1000};

    atomic_store(&w->done, 0);
    w->err = -1;
    pthread_rwlock_wrlock(&m->lock);
    assert_int_equal(pthread_create(&t, NULL, wait_main, w), 0);
    nanosleep(&ms50, NULL);
    int early = atomic_load(&w->done);
    pthread_rwlock_unlock(&m->lock);
    assert_int_equal(pthread_join(t, NULL), 0);
    assert_int_equal(early, 0);
    assert_int_equal(atomic_load(&w->done), 1);
    assert_int_equal(w->err, 0);
}

static void test_calls_take_the_lock(void **state)
{
    (void)state;
    struct san_machine_config cfg = {.ram_size = 4 * GIB};
    struct san_machine *m;
    assert_int_equal(san_machine_create(&cfg, &m), 0);
    struct waiter w = {.m = m, .call = ALLOC};
    waits_for_the_lock(m, &w);
    assert_non_null(w.va);
    w.call = PHYS_ADDR;
    waits_for_the_lock(m, &w);
    w.call = STATS;
    waits_for_the_lock(m, &w);
    w.call = FREE;
    waits_for_the_lock(m, &w);
    san_machine_destroy(m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_calls_take_the_lock),
        cmocka_unit_test(test_threads),
        cmocka_unit_test(test_threads_nolowmem),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
