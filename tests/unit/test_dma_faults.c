/* Fault injection for mdl and dma: the Nth memory allocation fails (malloc, calloc and realloc are
 * interposed over glibc's), swept over N until a whole sequence (lock a buffer in many pieces,
 * create adapters, allocate a common buffer, map bounced and direct lists, move data, release)
 * runs without hitting the injected failure. Every failure must come back as -ENOMEM with nothing
 * held: the machine's figures back to idle and no allocation outstanding.
 * Under the sanitizers ASan owns malloc: the sequence then runs once, for its leak check. */
#include "dma_test.h"

#ifndef SAN_UNDER_SANITIZER
extern void *__libc_malloc(size_t);
extern void *__libc_calloc(size_t, size_t);
extern void *__libc_realloc(void *, size_t);
extern void __libc_free(void *);

static long countdown = -1; /* allocations left before one fails; -1: never */
static long live;           /* allocations outstanding while counting */
static bool counting;

static bool inject(void)
{
    if (countdown < 0)
        return false;
    if (countdown == 0) {
        countdown = -1;
        return true;
    }
    countdown--;
    return false;
}

void *malloc(size_t n)
{
    if (inject())
        return NULL;
    void *p = __libc_malloc(n);
    if (p && counting)
        live++;
    return p;
}

void *calloc(size_t n, size_t size)
{
    if (inject())
        return NULL;
    void *p = __libc_calloc(n, size);
    if (p && counting)
        live++;
    return p;
}

void *realloc(void *old, size_t n)
{
    if (inject())
        return NULL;
    void *p = __libc_realloc(old, n);
    if (p && !old && counting)
        live++;
    return p;
}

void free(void *p)
{
    if (p && counting)
        live--;
    __libc_free(p);
}
#endif

#define PIECES 12

/* Everything mdl and dma allocate, in order; undoes what it did when a step fails. */
static int sequence(struct san_machine *m, uint8_t *buf, uint8_t *dev)
{
    struct san_mdl *mdl;
    struct san_dma_adapter *a32, *a64;
    struct san_sg_list *sg;
    san_laddr_t l;
    void *va;
    uint32_t nr = 0;
    int err;

    struct san_device_description d32 = {.version = 2,
                                         .master = true,
                                         .scatter_gather = true,
                                         .dma32 = true,
                                         .max_length = 64 * KIB};
    struct san_device_description d64 = d32;
    d64.dma32 = false;
    d64.dma64 = true;

    if ((err = san_mdl_lock(m, buf, PIECES * PAGE, SAN_MEM_READWRITE, &mdl)))
        goto out;
    if ((err = san_get_dma_adapter(m, &d32, &nr, &a32)))
        goto out_mdl;
    if ((err = san_get_dma_adapter(m, &d64, &nr, &a64)))
        goto out_a32;
    if ((err = a32->ops->allocate_common_buffer(a32, 3 * PAGE, &l, true, &va)))
        goto out_a64;
    if ((err = a32->ops->get_scatter_gather_list(a32, mdl, 5, 10 * PAGE, false, &sg)))
        goto out_common;
    for (uint32_t i = 0; i < sg->nr; i++)
        if ((err = san_dma_write(a32, sg->elem[i].addr, dev, sg->elem[i].length)))
            break;
    a32->ops->put_scatter_gather_list(a32, sg, false);
    if (err)
        goto out_common;
    if ((err = a64->ops->get_scatter_gather_list(a64, mdl, 0, PIECES * PAGE, true, &sg)))
        goto out_common;
    for (uint32_t i = 0, done = 0; i < sg->nr && !err; done += sg->elem[i].length, i++)
        err = san_dma_read(a64, sg->elem[i].addr, dev + done, sg->elem[i].length);
    a64->ops->put_scatter_gather_list(a64, sg, true);
out_common:
    a32->ops->free_common_buffer(a32, 3 * PAGE, l, va, true);
out_a64:
    a64->ops->put_dma_adapter(a64);
out_a32:
    a32->ops->put_dma_adapter(a32);
out_mdl:
    san_mdl_unlock(mdl);
out:
    return err;
}

static void test_nth_allocation_fails(void **state)
{
    /* High memory in single free pages: the lock takes PIECES pieces (its piece array grows). */
    struct san_machine *m = small_machine(64, 2 * PIECES + 40, true);
    void *hold[2 * PIECES + 40];
    unsigned nr_hold = 0;
    while (san_alloc_contiguous(m, PAGE, 4 * GIB, UINT64_MAX, 0, SAN_CACHED, &hold[nr_hold]) == 0)
        nr_hold++;
    for (unsigned i = 0; i < 2 * PIECES + 4; i += 2) {
        assert_int_equal(san_free_contiguous(m, hold[i], PAGE, SAN_CACHED), 0);
        hold[i] = NULL;
    }
    uint8_t *buf = map_pages(PIECES), dev[PIECES * PAGE];
    memset(dev, 0x5a, sizeof(dev));
    struct san_machine_stats idle = stats(m);
    assert_int_equal(sequence(m, buf, dev), 0); /* grows phys's object pool once, for good */

#ifndef SAN_UNDER_SANITIZER /* the sanitizer run checks the sequence for leaks only */
    unsigned failures = 0;
    for (long n = 0;; n++) {
        counting = true;
        live = 0;
        countdown = n;
        int err = sequence(m, buf, dev);
        bool hit = countdown < 0;
        countdown = -1;
        counting = false;
        assert_int_equal(live, 0);
        struct san_machine_stats s = stats(m);
        assert_int_equal(s.free_bytes, idle.free_bytes);
        assert_int_equal(s.low_free_bytes, idle.low_free_bytes);
        assert_int_equal(s.locked_bytes, 0);
        assert_int_equal(s.allocations, idle.allocations);
        assert_int_equal(s.map_registers_in_use, 0);
        if (!hit) {
            assert_int_equal(err, 0);
            break;
        }
        /* Failures the pool absorbs (spare objects) may still succeed. */
        if (err) {
            assert_int_equal(err, -ENOMEM);
            failures++;
        }
        assert_true(n < 10000);
    }
    assert_true(failures >= 8); /* every step allocates: the sweep did reach them */
    print_message("%u injected failures, all -ENOMEM with nothing held\n", failures);
#endif
    assert_int_equal(sequence(m, buf, dev), 0);
    struct san_machine_stats end = stats(m);
    assert_int_equal(end.free_bytes, idle.free_bytes);
    assert_int_equal(end.allocations, idle.allocations);
    for (unsigned i = 0; i < nr_hold; i++)
        if (hold[i])
            assert_int_equal(san_free_contiguous(m, hold[i], PAGE, SAN_CACHED), 0);
    munmap(buf, PIECES * PAGE);
    san_machine_destroy(m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_nth_allocation_fails),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
