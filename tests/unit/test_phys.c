/* phys: every rule of the contiguous allocator and the emulated machine (issue 2), one test per
 * rule, through the public API only. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include <san/san.h>

#include "common/clock.h"
#include "common/page.h"

#define KIB (UINT64_C(1) << 10)
#define MIB (UINT64_C(1) << 20)
#define GIB (UINT64_C(1) << 30)
#define ANY 0, UINT64_MAX, 0

static struct san_machine *make(const struct san_ram_range *ram, size_t nr, uint64_t ram_size,
                                bool nolowmem)
{
    struct san_machine_config cfg = {
        .ram = ram, .nr_ram = nr, .ram_size = ram_size, .nolowmem = nolowmem};
    struct san_machine *m = NULL;
    assert_int_equal(san_machine_create(&cfg, &m), 0);
    assert_non_null(m);
    return m;
}

static struct san_machine_stats stats(struct san_machine *m)
{
    struct san_machine_stats st;
    assert_int_equal(san_machine_stats(m, &st), 0);
    return st;
}

static void assert_same_stats(struct san_machine *m, const struct san_machine_stats *before)
{
    struct san_machine_stats now = stats(m);
    assert_memory_equal(&now, before, sizeof(now));
}

static san_paddr_t pa_of(struct san_machine *m, const void *va)
{
    san_paddr_t pa = 0;
    assert_int_equal(san_get_physical_address(m, va, &pa), 0);
    return pa;
}

/* Allocates or fails the test. */
static void *alloc(struct san_machine *m, size_t bytes, san_paddr_t lo, san_paddr_t hi,
                   san_paddr_t boundary)
{
    void *va = NULL;
    assert_int_equal(san_alloc_contiguous(m, bytes, lo, hi, boundary, SAN_CACHED, &va), 0);
    assert_non_null(va);
    return va;
}

static void test_rounds_to_pages(void **state)
{
    (void)state;
    struct san_machine *m = make(NULL, 0, GIB, false);
    struct san_machine_stats st0 = stats(m);

    void *a = alloc(m, 1, ANY);
    struct san_machine_stats st = stats(m);
    assert_int_equal(st0.free_bytes - st.free_bytes, PAGE);
    assert_int_equal(st.allocated_bytes, PAGE);
    assert_int_equal(st.allocations, 1);
    assert_int_equal(pa_of(m, a) % PAGE, 0);

    void *b = alloc(m, PAGE + 1, ANY);
    assert_int_equal(stats(m).allocated_bytes, 3 * PAGE);
    /* The next allocation below starts a whole page below: two pages were taken. */
    assert_int_equal(pa_of(m, a) - pa_of(m, b), 2 * PAGE);
    /* The last byte of the rounded-up page is allocated too. */
    san_paddr_t pa;
    assert_int_equal(san_get_physical_address(m, (char *)b + 2 * PAGE - 1, &pa), 0);

    /* A free names exactly the bytes asked for, not just the same pages. */
    assert_int_equal(san_free_contiguous(m, a, PAGE, SAN_CACHED), -EINVAL);
    assert_int_equal(san_free_contiguous(m, b, 2 * PAGE, SAN_CACHED), -EINVAL);
    assert_int_equal(san_free_contiguous(m, a, 1, SAN_CACHED), 0);
    assert_int_equal(san_free_contiguous(m, b, PAGE + 1, SAN_CACHED), 0);
    assert_same_stats(m, &st0);
    san_machine_destroy(m);
}

static void test_inclusive_bounds(void **state)
{
    (void)state;
    /* One RAM range: [16 MiB, 32 MiB). */
    struct san_ram_range r = {16 * MIB, 16 * MIB};
    struct san_machine *m = make(&r, 1, 0, false);
    void *va;

    /* Exactly one 64 KiB block fits in [20 MiB, 20 MiB + 64 KiB - 1]. */
    void *a = alloc(m, 64 * KIB, 20 * MIB, 20 * MIB + 64 * KIB - 1, 0);
    assert_int_equal(pa_of(m, a), 20 * MIB);
    assert_int_equal(san_free_contiguous(m, a, 64 * KIB, SAN_CACHED), 0);
    /* One byte less at either end: it does not fit. */
    assert_int_equal(
        san_alloc_contiguous(m, 64 * KIB, 20 * MIB, 20 * MIB + 64 * KIB - 2, 0, SAN_CACHED, &va),
        -ENOMEM);
    assert_int_equal(san_alloc_contiguous(m, 64 * KIB, 20 * MIB + 1, 20 * MIB + 64 * KIB - 1, 0,
                                          SAN_CACHED, &va),
                     -ENOMEM);
    /* lowest == highest is a one-byte window: no page fits, but it is a valid request. */
    assert_int_equal(san_alloc_contiguous(m, 1, 20 * MIB, 20 * MIB, 0, SAN_CACHED, &va), -ENOMEM);
    /* The last page of RAM, named by an inclusive highest. */
    a = alloc(m, PAGE, 32 * MIB - PAGE, 32 * MIB - 1, 0);
    assert_int_equal(pa_of(m, a), 32 * MIB - PAGE);
    assert_int_equal(san_free_contiguous(m, a, PAGE, SAN_CACHED), 0);

    /* Random windows: every allocation lies inside its window. */
    uint64_t seed = 42;
    for (int i = 0; i < 2000; i++) {
        seed = seed * 6364136223846793005u + 1442695040888963407u;
        uint64_t lo = 15 * MIB + (seed >> 20) % (18 * MIB);
        uint64_t hi = lo + (seed >> 40) % (4 * MIB);
        size_t bytes = 1 + (size_t)((seed >> 8) % (256 * KIB));
        int err = san_alloc_contiguous(m, bytes, lo, hi, 0, SAN_CACHED, &va);
        if (err) {
            assert_int_equal(err, -ENOMEM);
            continue;
        }
        san_paddr_t pa = pa_of(m, va);
        uint64_t len = (bytes + PAGE - 1) / PAGE * PAGE;
        assert_true(pa >= lo);
        assert_true(pa + len - 1 <= hi);
        assert_int_equal(san_free_contiguous(m, va, bytes, SAN_CACHED), 0);
    }
    san_machine_destroy(m);
}

static void test_boundary_never_crossed(void **state)
{
    (void)state;
    struct san_machine *m = make(NULL, 0, 2 * GIB, false);
    struct san_machine_stats st0 = stats(m);
    void *held[3000];
    size_t sizes[3000];
    int n = 0;
    uint64_t seed = 7;

    /* Fragment with odd sizes so that boundaries are really in the way. */
    for (int i = 0; i < 3000; i++) {
        seed = seed * 6364136223846793005u + 1442695040888963407u;
        unsigned shift = 12 + (unsigned)((seed >> 33) % 9); /* boundary 4 KiB .. 1 MiB */
        uint64_t boundary = UINT64_C(1) << shift;
        size_t bytes = 1 + (size_t)((seed >> 13) % boundary);
        void *va = alloc(m, bytes, 0, UINT64_MAX, boundary);
        san_paddr_t pa = pa_of(m, va);
        uint64_t len = (bytes + PAGE - 1) / PAGE * PAGE;
        assert_int_equal(pa / boundary, (pa + len - 1) / boundary);
        held[n] = va;
        sizes[n++] = bytes;
    }
    /* A block of exactly the boundary is aligned to it. */
    void *va = alloc(m, 256 * KIB, 0, UINT64_MAX, 256 * KIB);
    assert_int_equal(pa_of(m, va) % (256 * KIB), 0);
    assert_int_equal(san_free_contiguous(m, va, 256 * KIB, SAN_CACHED), 0);
    while (n--)
        assert_int_equal(san_free_contiguous(m, held[n], sizes[n], SAN_CACHED), 0);
    assert_same_stats(m, &st0);
    san_machine_destroy(m);
}

static void test_einval(void **state)
{
    (void)state;
    struct san_machine *m = make(NULL, 0, GIB, false);
    struct san_machine_stats st0 = stats(m);
    void *va = (void *)0x1;

    /* bytes larger than the boundary (after rounding to pages) */
    assert_int_equal(san_alloc_contiguous(m, 2 * PAGE, 0, UINT64_MAX, PAGE, SAN_CACHED, &va),
                     -EINVAL);
    assert_int_equal(san_alloc_contiguous(m, PAGE + 1, 0, UINT64_MAX, PAGE, SAN_CACHED, &va),
                     -EINVAL);
    assert_int_equal(san_alloc_contiguous(m, 1, 0, UINT64_MAX, 1024, SAN_CACHED, &va), -EINVAL);
    /* bytes 0 */
    assert_int_equal(san_alloc_contiguous(m, 0, ANY, SAN_CACHED, &va), -EINVAL);
    /* lowest > highest */
    assert_int_equal(san_alloc_contiguous(m, PAGE, 2 * MIB, 2 * MIB - 1, 0, SAN_CACHED, &va),
                     -EINVAL);
    /* boundary not a power of two */
    assert_int_equal(san_alloc_contiguous(m, PAGE, 0, UINT64_MAX, 3 * PAGE, SAN_CACHED, &va),
                     -EINVAL);
    assert_int_equal(san_alloc_contiguous(m, PAGE, 0, UINT64_MAX, 64 * KIB + PAGE, SAN_CACHED, &va),
                     -EINVAL);
    /* unknown cache types */
    assert_int_equal(san_alloc_contiguous(m, PAGE, ANY, (enum san_cache_type)3, &va), -EINVAL);
    assert_int_equal(san_alloc_contiguous(m, PAGE, ANY, (enum san_cache_type) - 1, &va), -EINVAL);
    /* no machine, nowhere to put the address */
    assert_int_equal(san_alloc_contiguous(NULL, PAGE, ANY, SAN_CACHED, &va), -EINVAL);
    assert_int_equal(san_alloc_contiguous(m, PAGE, ANY, SAN_CACHED, NULL), -EINVAL);
    assert_ptr_equal(va, (void *)0x1); /* untouched on failure */
    assert_same_stats(m, &st0);

    /* The valid neighbours of those requests work. */
    void *a = alloc(m, PAGE, 0, UINT64_MAX, PAGE);
    void *b = alloc(m, PAGE, 2 * MIB, 2 * MIB + PAGE - 1, 0);
    assert_int_equal(pa_of(m, b), 2 * MIB);
    assert_int_equal(san_alloc_contiguous(m, PAGE, ANY, SAN_WRITECOMBINED, &va), 0);
    assert_int_equal(san_free_contiguous(m, va, PAGE, SAN_WRITECOMBINED), 0);
    assert_int_equal(san_alloc_contiguous(m, PAGE, ANY, SAN_NONCACHED, &va), 0);
    assert_int_equal(san_free_contiguous(m, va, PAGE, SAN_NONCACHED), 0);
    assert_int_equal(san_free_contiguous(m, a, PAGE, SAN_CACHED), 0);
    assert_int_equal(san_free_contiguous(m, b, PAGE, SAN_CACHED), 0);
    assert_same_stats(m, &st0);
    san_machine_destroy(m);
}

static void test_enomem(void **state)
{
    (void)state;
    struct san_machine *m = make(NULL, 0, GIB, false); /* [1 MiB, 1 GiB + 1 MiB) */
    struct san_machine_stats st0 = stats(m);
    void *va = (void *)0x1;

    assert_int_equal(san_alloc_contiguous(m, GIB + PAGE, ANY, SAN_CACHED, &va), -ENOMEM);
    /* Below 1 MiB and above the RAM there is nothing. */
    assert_int_equal(san_alloc_contiguous(m, PAGE, 0, MIB - 1, 0, SAN_CACHED, &va), -ENOMEM);
    assert_int_equal(san_alloc_contiguous(m, PAGE, 2 * GIB, UINT64_MAX, 0, SAN_CACHED, &va),
                     -ENOMEM);
    assert_ptr_equal(va, (void *)0x1);
    assert_same_stats(m, &st0);

    /* All of it in one piece, then not a page more. */
    void *all = alloc(m, GIB, ANY);
    assert_int_equal(pa_of(m, all), MIB);
    assert_int_equal(stats(m).free_bytes, 0);
    struct san_machine_stats full = stats(m);
    assert_int_equal(san_alloc_contiguous(m, PAGE, ANY, SAN_CACHED, &va), -ENOMEM);
    assert_same_stats(m, &full);
    assert_int_equal(san_free_contiguous(m, all, GIB, SAN_CACHED), 0);
    assert_same_stats(m, &st0);
    san_machine_destroy(m);
}

static void test_bad_frees_change_nothing(void **state)
{
    (void)state;
    struct san_machine *m = make(NULL, 0, GIB, false);
    void *a = alloc(m, 3 * PAGE, ANY);
    void *b = alloc(m, PAGE, ANY);
    struct san_machine_stats st = stats(m);
    int local;

    /* wrong bytes (other page counts), wrong cache type */
    assert_int_equal(san_free_contiguous(m, a, 2 * PAGE, SAN_CACHED), -EINVAL);
    assert_int_equal(san_free_contiguous(m, a, 4 * PAGE, SAN_CACHED), -EINVAL);
    assert_int_equal(san_free_contiguous(m, a, 3 * PAGE + 1, SAN_CACHED), -EINVAL);
    assert_int_equal(san_free_contiguous(m, a, 0, SAN_CACHED), -EINVAL);
    assert_int_equal(san_free_contiguous(m, a, 3 * PAGE, SAN_NONCACHED), -EINVAL);
    assert_int_equal(san_free_contiguous(m, a, 3 * PAGE, SAN_WRITECOMBINED), -EINVAL);
    assert_int_equal(san_free_contiguous(m, a, 3 * PAGE, (enum san_cache_type)7), -EINVAL);
    /* unknown pointers: outside the machine, free machine memory, NULL */
    assert_int_equal(san_free_contiguous(m, &local, PAGE, SAN_CACHED), -EINVAL);
    assert_int_equal(san_free_contiguous(m, (char *)b - 16 * PAGE, PAGE, SAN_CACHED), -EINVAL);
    assert_int_equal(san_free_contiguous(m, NULL, PAGE, SAN_CACHED), -EINVAL);
    assert_int_equal(san_free_contiguous(NULL, a, 3 * PAGE, SAN_CACHED), -EINVAL);
    /* interior pointers, page-aligned or not */
    assert_int_equal(san_free_contiguous(m, (char *)a + PAGE, 2 * PAGE, SAN_CACHED), -EINVAL);
    assert_int_equal(san_free_contiguous(m, (char *)a + 1, 3 * PAGE, SAN_CACHED), -EINVAL);
    assert_same_stats(m, &st);

    /* Both allocations are intact: their bytes still work and they free normally, once. */
    memset(a, 0x5a, 3 * PAGE);
    assert_int_equal(san_free_contiguous(m, a, 3 * PAGE, SAN_CACHED), 0);
    struct san_machine_stats after = stats(m);
    assert_int_equal(san_free_contiguous(m, a, 3 * PAGE, SAN_CACHED), -EINVAL); /* double free */
    assert_same_stats(m, &after);
    assert_int_equal(san_free_contiguous(m, b, PAGE, SAN_CACHED), 0);
    assert_int_equal(san_free_contiguous(m, b, PAGE, SAN_CACHED), -EINVAL);
    assert_int_equal(stats(m).allocations, 0);
    san_machine_destroy(m);
}

static void test_never_spans_a_hole(void **state)
{
    (void)state;
    /* 512 KiB of RAM, a one-page hole, 512 KiB more. */
    struct san_ram_range r[2] = {{MIB, 512 * KIB}, {MIB + 512 * KIB + PAGE, 512 * KIB}};
    struct san_machine *m = make(r, 2, 0, false);
    void *va;

    assert_int_equal(stats(m).free_bytes, MIB);
    assert_int_equal(san_alloc_contiguous(m, 512 * KIB + PAGE, ANY, SAN_CACHED, &va), -ENOMEM);
    /* Two halves fit, one on each side. */
    void *hi = alloc(m, 512 * KIB, ANY), *lo = alloc(m, 512 * KIB, ANY);
    assert_int_equal(pa_of(m, hi), MIB + 512 * KIB + PAGE);
    assert_int_equal(pa_of(m, lo), MIB);
    assert_int_equal(san_free_contiguous(m, hi, 512 * KIB, SAN_CACHED), 0);
    assert_int_equal(san_free_contiguous(m, lo, 512 * KIB, SAN_CACHED), 0);
    /* Freed neighbours across the hole do not coalesce into something that spans it. */
    assert_int_equal(san_alloc_contiguous(m, 768 * KIB, ANY, SAN_CACHED, &va), -ENOMEM);
    assert_int_equal(stats(m).free_extents, 2);
    san_machine_destroy(m);

    /* Adjacent ranges are one run of RAM, not a hole. */
    struct san_ram_range adj[2] = {{2 * MIB, MIB}, {MIB, MIB}};
    m = make(adj, 2, 0, false);
    void *both = alloc(m, 2 * MIB, ANY);
    assert_int_equal(pa_of(m, both), MIB);
    assert_int_equal(san_free_contiguous(m, both, 2 * MIB, SAN_CACHED), 0);
    san_machine_destroy(m);
}

static void test_memory_is_real(void **state)
{
    (void)state;
    struct san_machine *m = make(NULL, 0, GIB, false);
    unsigned char *a = alloc(m, 256 * KIB, ANY), *b = alloc(m, 256 * KIB, ANY);

    memset(a, 0xa1, 256 * KIB);
    memset(b, 0xb2, 256 * KIB);
    for (size_t i = 0; i < 256 * KIB; i += 511) {
        assert_int_equal(a[i], 0xa1);
        assert_int_equal(b[i], 0xb2);
    }
    /* Physically adjacent allocations are adjacent in the image too. */
    assert_int_equal(pa_of(m, a) - pa_of(m, b), 256 * KIB);
    assert_ptr_equal(b + 256 * KIB, a);
    assert_int_equal(san_free_contiguous(m, a, 256 * KIB, SAN_CACHED), 0);
    assert_int_equal(san_free_contiguous(m, b, 256 * KIB, SAN_CACHED), 0);
    san_machine_destroy(m);
}

static void test_highest_first(void **state)
{
    (void)state;
    struct san_machine *m = make(NULL, 0, 8 * GIB, false);
    uint64_t top = 4 * GIB + (8 * GIB - (3 * GIB - MIB)); /* end of RAM above 4 GiB */

    void *a = alloc(m, 64 * KIB, ANY);
    assert_int_equal(pa_of(m, a), top - 64 * KIB);
    void *b = alloc(m, PAGE, ANY);
    assert_int_equal(pa_of(m, b), top - 64 * KIB - PAGE);
    /* Limited to below 4 GiB: the top of low RAM (3 GiB, below the hole). */
    void *c = alloc(m, MIB, 0, 4 * GIB - 1, 0);
    assert_int_equal(pa_of(m, c), 3 * GIB - MIB);
    /* A window: its top. */
    void *d = alloc(m, 64 * KIB, 16 * MIB, GIB - 1, 0);
    assert_int_equal(pa_of(m, d), GIB - 64 * KIB);
    /* Freed memory is the highest again. */
    assert_int_equal(san_free_contiguous(m, a, 64 * KIB, SAN_CACHED), 0);
    void *e = alloc(m, PAGE, ANY);
    assert_int_equal(pa_of(m, e), top - PAGE);
    san_machine_destroy(m);

    /* Boundary: the highest block that does not cross, ending right at a multiple. */
    m = make(NULL, 0, 8 * GIB, false);
    void *f = alloc(m, 48 * KIB, 0, top - 32 * KIB - 1, 64 * KIB);
    assert_int_equal(pa_of(m, f), top - 64 * KIB - 48 * KIB);
    san_machine_destroy(m);
}

/* The same request again and again is answered from a hint (frames.c); whatever changes the
 * answer must still be seen: a free tail left above by another request, a free above, a merge. */
static void test_repeated_requests(void **state)
{
    (void)state;
    struct san_machine *m = make(NULL, 0, 8 * GIB, false);
    uint64_t top = 4 * GIB + (8 * GIB - (3 * GIB - MIB));

    void *a = alloc(m, 64 * KIB, ANY);
    assert_int_equal(pa_of(m, a), top - 64 * KIB);
    assert_int_equal(san_free_contiguous(m, a, 64 * KIB, SAN_CACHED), 0);
    /* Another request takes a block from the middle of the top extent: a free tail above it. */
    void *b = alloc(m, 64 * KIB, 0, top - MIB - 1, 0);
    assert_int_equal(pa_of(m, b), top - MIB - 64 * KIB);
    void *c = alloc(m, 64 * KIB, ANY);
    assert_int_equal(pa_of(m, c), top - 64 * KIB);
    void *d = alloc(m, 64 * KIB, ANY);
    assert_int_equal(pa_of(m, d), top - 128 * KIB);
    /* A free above the last answer: the freed block is the highest again. */
    assert_int_equal(san_free_contiguous(m, c, 64 * KIB, SAN_CACHED), 0);
    c = alloc(m, 64 * KIB, ANY);
    assert_int_equal(pa_of(m, c), top - 64 * KIB);
    /* Fill the tail completely, then free in an order that merges extents. */
    void *t[14];
    for (int i = 0; i < 14; i++) {
        t[i] = alloc(m, 64 * KIB, ANY);
        assert_int_equal(pa_of(m, t[i]), top - (uint64_t)(3 + i) * 64 * KIB);
    }
    void *e = alloc(m, 64 * KIB, ANY); /* the tail is full: below b */
    assert_int_equal(pa_of(m, e), top - MIB - 128 * KIB);
    assert_int_equal(san_free_contiguous(m, b, 64 * KIB, SAN_CACHED), 0);
    void *f = alloc(m, 64 * KIB, ANY);
    assert_int_equal(pa_of(m, f), top - MIB - 64 * KIB);
    assert_int_equal(san_free_contiguous(m, f, 64 * KIB, SAN_CACHED), 0);
    assert_int_equal(san_free_contiguous(m, t[13], 64 * KIB, SAN_CACHED), 0);
    assert_int_equal(san_free_contiguous(m, t[12], 64 * KIB, SAN_CACHED), 0);
    f = alloc(m, 64 * KIB, ANY);
    assert_int_equal(pa_of(m, f), top - 15 * 64 * KIB); /* the top of the merged extent */
    san_machine_destroy(m);
}

/* A freed allocation's record may wait in place until the next change to the allocator (the
 * deferred free, frames.c). Meanwhile its frames are free memory to everyone: the statistics
 * (free extents included) are those of the released frames, its address is no longer allocated,
 * it cannot be freed again, and a device reaching into it faults. */
static void test_freed_record_is_free(void **state)
{
    (void)state;
    struct san_machine *m = make(NULL, 0, 8 * GIB, false);
    uint64_t top = 4 * GIB + (8 * GIB - (3 * GIB - MIB));
    struct san_machine_stats st0 = stats(m);

    void *a = alloc(m, 64 * KIB, ANY), *b = alloc(m, 64 * KIB, ANY);
    assert_int_equal(pa_of(m, a), top - 64 * KIB);
    assert_int_equal(pa_of(m, b), top - 128 * KIB);
    assert_int_equal(san_free_contiguous(m, a, 64 * KIB, SAN_CACHED), 0);
    /* a's frames are a free extent of their own now (b is between them and the rest). */
    struct san_machine_stats st = stats(m);
    assert_int_equal(st.free_bytes, st0.free_bytes - 64 * KIB);
    assert_int_equal(st.low_free_bytes, st0.low_free_bytes);
    assert_int_equal(st.allocations, 1);
    assert_int_equal(st.allocated_bytes, 64 * KIB);
    assert_int_equal(st.free_extents, st0.free_extents + 1);
    san_paddr_t pa;
    assert_int_equal(san_get_physical_address(m, a, &pa), -EFAULT);
    assert_int_equal(san_get_physical_address(m, (char *)a + PAGE, &pa), -EFAULT);
    assert_int_equal(san_free_contiguous(m, a, 64 * KIB, SAN_CACHED), -EINVAL);
    assert_same_stats(m, &st);

    /* A device may read b, not on into a's freed frames. */
    struct san_device_description d = {.version = 2, .master = true, .dma64 = true};
    struct san_dma_adapter *dev;
    uint32_t regs = 0;
    assert_int_equal(san_get_dma_adapter(m, &d, &regs, &dev), 0);
    static unsigned char buf[128 * KIB];
    assert_int_equal(san_dma_read(dev, top - 128 * KIB, buf, 64 * KIB), 0);
    assert_int_equal(san_dma_read(dev, top - 128 * KIB, buf, 128 * KIB), -EFAULT);
    assert_int_equal(san_dma_read(dev, top - 64 * KIB, buf, 1), -EFAULT);
    dev->ops->put_dma_adapter(dev);
    assert_int_equal(stats(m).dma_faults, 2);
    st0.dma_faults = 2;

    /* b joins the free frames on both sides: back to one extent per RAM segment, exactly. */
    assert_int_equal(san_free_contiguous(m, b, 64 * KIB, SAN_CACHED), 0);
    assert_same_stats(m, &st0);
    /* And the highest placement is the top again, not b's frames. */
    void *c = alloc(m, 64 * KIB, ANY);
    assert_int_equal(pa_of(m, c), top - 64 * KIB);
    assert_int_equal(san_free_contiguous(m, c, 64 * KIB, SAN_CACHED), 0);
    assert_same_stats(m, &st0);
    san_machine_destroy(m);
}

/* The same request after a free takes the freed frames back only when they are its highest
 * placement: here free frames right above them (too few for the request on their own) make
 * the highest placement straddle both. */
static void test_freed_record_taken_back_only_when_highest(void **state)
{
    (void)state;
    struct san_machine *m = make(NULL, 0, 8 * GIB, false);
    uint64_t top = 4 * GIB + (8 * GIB - (3 * GIB - MIB));
    struct san_machine_stats st0 = stats(m);

    void *r = alloc(m, 16 * KIB, ANY), *f = alloc(m, 64 * KIB, ANY);
    assert_int_equal(pa_of(m, r), top - 16 * KIB);
    assert_int_equal(pa_of(m, f), top - 80 * KIB);
    assert_int_equal(san_free_contiguous(m, r, 16 * KIB, SAN_CACHED), 0);
    void *g = alloc(m, 64 * KIB, ANY); /* r's frames are too few: below f */
    assert_int_equal(pa_of(m, g), top - 144 * KIB);
    assert_int_equal(san_free_contiguous(m, g, 64 * KIB, SAN_CACHED), 0);
    /* The same request as g, right after g's free: g's frames, the highest placement. */
    g = alloc(m, 64 * KIB, ANY);
    assert_int_equal(pa_of(m, g), top - 144 * KIB);
    assert_int_equal(san_free_contiguous(m, g, 64 * KIB, SAN_CACHED), 0);
    /* f's frames join those below and r's above: the highest placement is the top. */
    assert_int_equal(san_free_contiguous(m, f, 64 * KIB, SAN_CACHED), 0);
    assert_same_stats(m, &st0);
    void *h = alloc(m, 64 * KIB, ANY);
    assert_int_equal(pa_of(m, h), top - 64 * KIB);
    assert_int_equal(san_free_contiguous(m, h, 64 * KIB, SAN_CACHED), 0);

    /* Freed low frames are the highest placement of their own run, not of the request: an
     * unconstrained request after their free still goes to the top of RAM. */
    void *lo = alloc(m, 64 * KIB, 0, 4 * GIB - 1, 0), *y = alloc(m, 64 * KIB, ANY);
    assert_int_equal(pa_of(m, lo), 3 * GIB - 64 * KIB);
    assert_int_equal(pa_of(m, y), top - 64 * KIB);
    assert_int_equal(san_free_contiguous(m, lo, 64 * KIB, SAN_CACHED), 0);
    void *z = alloc(m, 64 * KIB, ANY);
    assert_int_equal(pa_of(m, z), top - 128 * KIB);
    assert_int_equal(san_free_contiguous(m, z, 64 * KIB, SAN_CACHED), 0);
    assert_int_equal(san_free_contiguous(m, y, 64 * KIB, SAN_CACHED), 0);
    assert_same_stats(m, &st0);

    /* Under a window's end and a boundary the freed frames come back too, exactly as found. */
    for (int i = 0; i < 3; i++) {
        void *w = alloc(m, 64 * KIB, 0, top - MIB - 1, 0);
        assert_int_equal(pa_of(m, w), top - MIB - 64 * KIB);
        assert_int_equal(san_free_contiguous(m, w, 64 * KIB, SAN_CACHED), 0);
        void *bd = alloc(m, 48 * KIB, 0, top - 32 * KIB - 1, 64 * KIB);
        assert_int_equal(pa_of(m, bd), top - 64 * KIB - 48 * KIB);
        assert_int_equal(san_free_contiguous(m, bd, 48 * KIB, SAN_CACHED), 0);
        assert_same_stats(m, &st0);
    }
    san_machine_destroy(m);
}

/* On a NOLOWMEM machine a freed low allocation waiting in place is scrubbed and checked like
 * any free low memory, counted as free low memory, and never goes to a request that may go
 * above 4 GiB. */
static void test_freed_low_record_nolowmem(void **state)
{
    (void)state;
    struct san_machine *m = make(NULL, 0, 8 * GIB, true);
    struct san_machine_stats st0 = stats(m);
    uint64_t dirty = 99;

    unsigned char *low = alloc(m, 64 * KIB, 0, 4 * GIB - 1, 0);
    assert_true(pa_of(m, low) < 4 * GIB);
    memset(low, 0xee, 64 * KIB);
    assert_int_equal(san_free_contiguous(m, low, 64 * KIB, SAN_CACHED), 0);
    assert_same_stats(m, &st0);
    assert_int_equal(san_machine_check_lowmem(m, &dirty), 0);
    assert_int_equal(dirty, 0); /* scrubbed at the free */
    volatile unsigned char *stale = low;
    stale[5 * PAGE + 1] = 1; /* a buggy driver's late write */
    assert_int_equal(san_machine_check_lowmem(m, &dirty), 0);
    assert_int_equal(dirty, 1);

    void *high = alloc(m, 64 * KIB, ANY);
    assert_true(pa_of(m, high) >= 4 * GIB);
    assert_int_equal(san_free_contiguous(m, high, 64 * KIB, SAN_CACHED), 0);
    assert_int_equal(san_machine_check_lowmem(m, &dirty), 0);
    assert_int_equal(dirty, 1); /* the write is still seen once the frames are released */
    void *again = alloc(m, 64 * KIB, 0, 4 * GIB - 1, 0);
    assert_ptr_equal(again, low);
    assert_int_equal(san_free_contiguous(m, again, 64 * KIB, SAN_CACHED), 0);
    assert_int_equal(san_machine_check_lowmem(m, &dirty), 0);
    assert_int_equal(dirty, 0);
    assert_same_stats(m, &st0);
    san_machine_destroy(m);
}

/* Takes every free page in [lo, hi] with decreasing sizes; returns how many bytes it took. */
static uint64_t exhaust(struct san_machine *m, san_paddr_t lo, san_paddr_t hi, void **held,
                        size_t *sizes, size_t *n, size_t cap)
{
    static const uint64_t steps[] = {GIB, 64 * MIB, 4 * MIB, 256 * KIB, 16 * KIB, PAGE};
    uint64_t took = 0;
    for (size_t i = 0; i < sizeof(steps) / sizeof(steps[0]); i++) {
        uint64_t size = steps[i];
        void *va;
        while (*n < cap && !san_alloc_contiguous(m, size, lo, hi, 0, SAN_CACHED, &va)) {
            held[*n] = va;
            sizes[(*n)++] = size;
            took += size;
        }
    }
    return took;
}

static void test_nolowmem(void **state)
{
    (void)state;
    static void *held[4096];
    static size_t sizes[4096];

    for (int nolow = 0; nolow < 2; nolow++) {
        struct san_machine *m = make(NULL, 0, 8 * GIB, nolow);
        struct san_machine_stats st0 = stats(m);
        size_t n = 0;
        assert_int_equal(st0.low_free_bytes, 3 * GIB - MIB);

        /* High memory first, either way: nothing low is used while high memory lasts. */
        uint64_t high = st0.free_bytes - st0.low_free_bytes;
        void *va = alloc(m, high - 64 * KIB, ANY);
        assert_true(pa_of(m, va) >= 4 * GIB);
        held[n] = va;
        sizes[n++] = high - 64 * KIB;
        assert_int_equal(stats(m).low_free_bytes, st0.low_free_bytes);

        /* Now requests that may go above 4 GiB exhaust high memory. */
        void *last = alloc(m, 64 * KIB, 0, UINT64_MAX, 0);
        assert_true(pa_of(m, last) >= 4 * GIB);
        held[n] = last;
        sizes[n++] = 64 * KIB;
        assert_int_equal(stats(m).free_bytes, st0.low_free_bytes);

        struct san_machine_stats st = stats(m);
        int err = san_alloc_contiguous(m, PAGE, 0, UINT64_MAX, 0, SAN_CACHED, &va);
        san_paddr_t windows[][2] = {{0, UINT64_MAX}, {MIB, 4 * GIB}, {2 * GIB, 5 * GIB}};
        if (nolow) {
            /* Reaching above 4 GiB: no low frames, even with low memory all free. */
            assert_int_equal(err, -ENOMEM);
            for (size_t w = 0; w < 3; w++)
                assert_int_equal(
                    san_alloc_contiguous(m, PAGE, windows[w][0], windows[w][1], 0, SAN_CACHED, &va),
                    -ENOMEM);
            assert_same_stats(m, &st);
        } else {
            assert_int_equal(err, 0);
            assert_true(pa_of(m, va) < 4 * GIB);
            held[n] = va;
            sizes[n++] = PAGE;
        }
        /* Requests that stay below 4 GiB get low frames on both machines. */
        void *low = alloc(m, MIB, 0, 4 * GIB - 1, 0);
        assert_true(pa_of(m, low) + MIB <= 3 * GIB);
        held[n] = low;
        sizes[n++] = MIB;
        void *low32 = alloc(m, PAGE, 0, UINT32_MAX, 0);
        held[n] = low32;
        sizes[n++] = PAGE;
        if (nolow)
            assert_int_equal(stats(m).low_free_bytes, st0.low_free_bytes - MIB - PAGE);
        /* All of low memory can be had by low requests. */
        exhaust(m, 0, 4 * GIB - 1, held, sizes, &n, 4096);
        assert_int_equal(stats(m).free_bytes, 0);
        assert_int_equal(stats(m).low_free_bytes, 0);

        while (n--)
            assert_int_equal(san_free_contiguous(m, held[n], sizes[n], SAN_CACHED), 0);
        assert_same_stats(m, &st0);
        san_machine_destroy(m);
    }
}

static void test_lowmem_pattern_check(void **state)
{
    (void)state;
    struct san_machine *m = make(NULL, 0, 8 * GIB, true);
    uint64_t dirty = 99;

    assert_int_equal(san_machine_check_lowmem(m, &dirty), 0);
    assert_int_equal(dirty, 0);
    assert_int_equal(san_machine_check_lowmem(m, NULL), -EINVAL);
    assert_int_equal(san_machine_check_lowmem(NULL, &dirty), -EINVAL);

    /* Written while allocated: fine. Freed: scrubbed, so clean again. */
    unsigned char *low = alloc(m, 64 * KIB, 0, 4 * GIB - 1, 0);
    unsigned char *high = alloc(m, 64 * KIB, ANY);
    assert_true(pa_of(m, high) >= 4 * GIB);
    memset(low, 0xee, 64 * KIB);
    memset(high, 0xee, 64 * KIB);
    assert_int_equal(san_machine_check_lowmem(m, &dirty), 0);
    assert_int_equal(dirty, 0);
    assert_int_equal(san_free_contiguous(m, low, 64 * KIB, SAN_CACHED), 0);
    assert_int_equal(san_free_contiguous(m, high, 64 * KIB, SAN_CACHED), 0);
    assert_int_equal(san_machine_check_lowmem(m, &dirty), 0);
    assert_int_equal(dirty, 0);

    /* A buggy driver writes through its stale pointer after the free: one dirty frame per page
     * written, reads do not count. Free high memory is not part of the check. */
    volatile unsigned char *stale = low;
    stale[10] = 1;
    assert_int_equal(san_machine_check_lowmem(m, &dirty), 0);
    assert_int_equal(dirty, 1);
    stale[3 * PAGE + 7] = 2;
    stale[3 * PAGE + 9] = 3;
    unsigned sum = 0;
    for (size_t i = 0; i < 64 * KIB; i += PAGE)
        sum += stale[i + 100];
    assert_int_equal(sum, 0);
    ((volatile unsigned char *)high)[0] = 4;
    assert_int_equal(san_machine_check_lowmem(m, &dirty), 0);
    assert_int_equal(dirty, 2);

    /* Allocating those frames again takes them out of the check; freeing scrubs them. */
    void *again = alloc(m, 64 * KIB, 0, 4 * GIB - 1, 0);
    assert_ptr_equal(again, low);
    assert_int_equal(san_machine_check_lowmem(m, &dirty), 0);
    assert_int_equal(dirty, 0);
    assert_int_equal(san_free_contiguous(m, again, 64 * KIB, SAN_CACHED), 0);
    assert_int_equal(san_machine_check_lowmem(m, &dirty), 0);
    assert_int_equal(dirty, 0);
    san_machine_destroy(m);

    /* Only a NOLOWMEM machine keeps free low memory scrubbed and checks it. */
    m = make(NULL, 0, 8 * GIB, false);
    assert_int_equal(san_machine_check_lowmem(m, &dirty), -EINVAL);
    san_machine_destroy(m);
}

static void test_custom_maps(void **state)
{
    (void)state;
    struct san_machine *m = NULL;
    struct san_machine_config cfg = {0};

    /* Unsorted input, holes, RAM at 0 (page 0 is never handed out), RAM far above 4 GiB. */
    struct san_ram_range ok[3] = {{64 * GIB, 16 * MIB}, {0, 2 * MIB}, {8 * MIB, 8 * MIB}};
    m = make(ok, 3, 0, false);
    struct san_machine_stats st = stats(m);
    assert_int_equal(st.ram_bytes, 26 * MIB);
    assert_int_equal(st.free_bytes, 26 * MIB - PAGE);
    assert_int_equal(st.low_free_bytes, 10 * MIB - PAGE);
    assert_int_equal(st.free_extents, 3);
    void *va = alloc(m, 16 * MIB, ANY);
    assert_int_equal(pa_of(m, va), 64 * GIB);
    void *z = alloc(m, 2 * MIB - PAGE, 0, 2 * MIB - 1, 0);
    assert_int_equal(pa_of(m, z), PAGE);
    assert_int_equal(san_alloc_contiguous(m, PAGE, 0, 8 * MIB - 1, 0, SAN_CACHED, &va), -ENOMEM);
    san_machine_destroy(m);

    struct {
        struct san_ram_range r[2];
        size_t n;
    } bad[] = {
        {{{MIB, 2 * MIB}, {2 * MIB, MIB}}, 2},            /* overlap */
        {{{4 * MIB, 4 * MIB}, {MIB, 3 * MIB + PAGE}}, 2}, /* overlap, unsorted */
        {{{MIB, MIB}, {MIB, MIB}}, 2},                    /* the same range twice */
        {{{MIB + 512, MIB}}, 1},                          /* base not page-aligned */
        {{{MIB, MIB + 100}}, 1},                          /* size not page-aligned */
        {{{MIB, 0}}, 1},                                  /* empty range */
        {{{UINT64_MAX - PAGE + 1, PAGE}}, 1},             /* ends past the address space */
        {{{UINT64_MAX & ~(PAGE - 1), UINT64_MAX & ~(PAGE - 1)}}, 1},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        cfg = (struct san_machine_config){.ram = bad[i].r, .nr_ram = bad[i].n};
        m = (struct san_machine *)0x1;
        assert_int_equal(san_machine_create(&cfg, &m), -EINVAL);
        assert_null(m);
    }
    /* A map pointer without a count, a count without a map, a default map of unaligned size. */
    cfg = (struct san_machine_config){.ram = ok, .nr_ram = 0};
    assert_int_equal(san_machine_create(&cfg, &m), -EINVAL);
    cfg = (struct san_machine_config){.ram = NULL, .nr_ram = 2};
    assert_int_equal(san_machine_create(&cfg, &m), -EINVAL);
    cfg = (struct san_machine_config){.ram_size = GIB + 1};
    assert_int_equal(san_machine_create(&cfg, &m), -EINVAL);
    assert_int_equal(san_machine_create(NULL, NULL), -EINVAL);
}

static void test_default_map(void **state)
{
    (void)state;
    struct san_machine *m;
    void *va;

    /* No config at all: 4 GiB, as 1 MiB..3 GiB and 4 GiB..5 GiB + 1 MiB. */
    assert_int_equal(san_machine_create(NULL, &m), 0);
    struct san_machine_stats st = stats(m);
    assert_int_equal(st.ram_bytes, 4 * GIB);
    assert_int_equal(st.free_bytes, 4 * GIB);
    assert_int_equal(st.low_free_bytes, 3 * GIB - MIB);
    assert_int_equal(st.allocations, 0);
    assert_int_equal(st.free_extents, 2);
    /* Nothing below 1 MiB, nothing in the hole from 3 GiB to 4 GiB. */
    assert_int_equal(san_alloc_contiguous(m, PAGE, 0, MIB - 1, 0, SAN_CACHED, &va), -ENOMEM);
    assert_int_equal(san_alloc_contiguous(m, PAGE, 3 * GIB, 4 * GIB - 1, 0, SAN_CACHED, &va),
                     -ENOMEM);
    va = alloc(m, PAGE, 0, MIB + PAGE - 1, 0);
    assert_int_equal(pa_of(m, va), MIB);
    va = alloc(m, PAGE, 0, 3 * GIB - 1, 0);
    assert_int_equal(pa_of(m, va), 3 * GIB - PAGE);
    va = alloc(m, PAGE, 4 * GIB, 4 * GIB + PAGE - 1, 0);
    assert_int_equal(pa_of(m, va), 4 * GIB);
    va = alloc(m, PAGE, ANY);
    assert_int_equal(pa_of(m, va), 5 * GIB + MIB - PAGE);
    san_machine_destroy(m);

    /* ram_size picks the total; small machines have only low memory. */
    const uint64_t sizes[] = {64 * MIB, 3 * GIB - MIB, 3 * GIB, 64 * GIB};
    for (size_t i = 0; i < 4; i++) {
        m = make(NULL, 0, sizes[i], false);
        st = stats(m);
        assert_int_equal(st.ram_bytes, sizes[i]);
        assert_int_equal(st.free_bytes, sizes[i]);
        uint64_t low = sizes[i] < 3 * GIB - MIB ? sizes[i] : 3 * GIB - MIB;
        assert_int_equal(st.low_free_bytes, low);
        assert_int_equal(st.free_extents, sizes[i] > low ? 2 : 1);
        va = alloc(m, PAGE, ANY);
        assert_int_equal(pa_of(m, va),
                         sizes[i] > low ? 4 * GIB + (sizes[i] - low) - PAGE : MIB + low - PAGE);
        san_machine_destroy(m);
    }
}

static void test_physical_address(void **state)
{
    (void)state;
    struct san_machine *m = make(NULL, 0, GIB, false);
    unsigned char *a = alloc(m, 5 * PAGE, 0, 512 * MIB - 1, 0);
    san_paddr_t pa = 0, base = pa_of(m, a);
    int local;

    assert_int_equal(base, 512 * MIB - 5 * PAGE);
    assert_int_equal(san_get_physical_address(m, a + 3 * PAGE + 17, &pa), 0);
    assert_int_equal(pa, base + 3 * PAGE + 17);
    assert_int_equal(san_get_physical_address(m, a + 5 * PAGE - 1, &pa), 0);
    assert_int_equal(pa, base + 5 * PAGE - 1);
    /* Just past it, and just before it: free frames. */
    assert_int_equal(san_get_physical_address(m, a + 5 * PAGE, &pa), -EFAULT);
    assert_int_equal(san_get_physical_address(m, a - 1, &pa), -EFAULT);
    /* Not machine memory at all. */
    assert_int_equal(san_get_physical_address(m, &local, &pa), -EINVAL);
    assert_int_equal(san_get_physical_address(m, NULL, &pa), -EINVAL);
    assert_int_equal(san_get_physical_address(NULL, a, &pa), -EINVAL);
    assert_int_equal(san_get_physical_address(m, a, NULL), -EINVAL);
    assert_int_equal(san_free_contiguous(m, a, 5 * PAGE, SAN_CACHED), 0);
    assert_int_equal(san_get_physical_address(m, a, &pa), -EFAULT);
    san_machine_destroy(m);
}

static uint64_t rss_bytes(void)
{
    unsigned long size = 0, resident = 0;
    FILE *f = fopen("/proc/self/statm", "r");
    assert_non_null(f);
    assert_int_equal(fscanf(f, "%lu %lu", &size, &resident), 2);
    fclose(f);
    return (uint64_t)resident * (uint64_t)sysconf(_SC_PAGESIZE);
}

static void test_terabyte_machine(void **state)
{
    (void)state;
    struct san_machine *m;
    uint64_t before = rss_bytes();

    uint64_t t0 = san_now_ns();
    m = make(NULL, 0, 1024 * GIB, true);
    uint64_t t1 = san_now_ns();
    struct san_machine_stats st = stats(m);
    assert_int_equal(st.ram_bytes, 1024 * GIB);
    assert_int_equal(st.free_extents, 2);
    /* Use it: a few allocations at the very top and the bottom, touched. */
    unsigned char *top = alloc(m, 2 * MIB, ANY);
    unsigned char *low = alloc(m, 2 * MIB, 0, 4 * GIB - 1, 0);
    assert_int_equal(pa_of(m, top), 4 * GIB + (1024 * GIB - (3 * GIB - MIB)) - 2 * MIB);
    top[0] = low[0] = 1;
    top[2 * MIB - 1] = low[2 * MIB - 1] = 2;
    uint64_t grown = rss_bytes() - before;
    assert_true(grown < 8 * MIB);
    assert_true(t1 - t0 < 500000000u); /* 0.5 s */
    assert_int_equal(san_free_contiguous(m, top, 2 * MIB, SAN_CACHED), 0);
    assert_int_equal(san_free_contiguous(m, low, 2 * MIB, SAN_CACHED), 0);
    san_machine_destroy(m);
}

static void test_strerror_and_destroy_null(void **state)
{
    (void)state;
    const struct {
        int err;
        const char *name;
    } codes[] = {{EINVAL, "EINVAL"}, {ENOMEM, "ENOMEM"}, {ENOBUFS, "ENOBUFS"}, {EBUSY, "EBUSY"},
                 {EFAULT, "EFAULT"}, {EACCES, "EACCES"}, {EAGAIN, "EAGAIN"}};
    for (size_t i = 0; i < sizeof(codes) / sizeof(codes[0]); i++) {
        assert_non_null(strstr(san_strerror(-codes[i].err), codes[i].name));
        assert_string_equal(san_strerror(-codes[i].err), san_strerror(codes[i].err));
    }
    assert_string_equal(san_strerror(0), "success");
    assert_non_null(san_strerror(-123456));
    assert_non_null(san_strerror(INT32_MIN + 1));
    san_machine_destroy(NULL);
    assert_int_equal(san_machine_stats(NULL, NULL), -EINVAL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rounds_to_pages),
        cmocka_unit_test(test_inclusive_bounds),
        cmocka_unit_test(test_boundary_never_crossed),
        cmocka_unit_test(test_einval),
        cmocka_unit_test(test_enomem),
        cmocka_unit_test(test_bad_frees_change_nothing),
        cmocka_unit_test(test_never_spans_a_hole),
        cmocka_unit_test(test_memory_is_real),
        cmocka_unit_test(test_highest_first),
        cmocka_unit_test(test_repeated_requests),
        cmocka_unit_test(test_freed_record_is_free),
        cmocka_unit_test(test_freed_record_taken_back_only_when_highest),
        cmocka_unit_test(test_freed_low_record_nolowmem),
        cmocka_unit_test(test_nolowmem),
        cmocka_unit_test(test_lowmem_pattern_check),
        cmocka_unit_test(test_custom_maps),
        cmocka_unit_test(test_default_map),
        cmocka_unit_test(test_physical_address),
        cmocka_unit_test(test_terabyte_machine),
        cmocka_unit_test(test_strerror_and_destroy_null),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
