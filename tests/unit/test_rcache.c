/* The registration cache with fake register/deregister callbacks and the real kernel underneath:
 * hits, misses, covering hits, access upgrade, LRU eviction by count and by bytes, environment
 * bounds, explicit invalidation, automatic invalidation (munmap, mremap, free of a large block,
 * brk shrink, madvise), munmap + mmap at the same address, RDMA hide/expose, fork, and a
 * multi-threaded churn stress test that checks no stale registration is ever returned.
 *
 * Staleness is checked with generations: every test mapping writes a fresh generation number at
 * the start of each of its pages; the fake do_register records the generation it saw; a reference
 * whose recorded generation differs from the memory's is a stale registration. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include <cmocka.h>

#include <errno.h>
#include <inttypes.h>
#include <malloc.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <san/types.h>

#include "client/rcache.h"
#include "skip.h"
#include "common/pin.h"

#define PG 4096u

#ifdef SAN_UNDER_SANITIZER
/* ASan keeps freed blocks in quarantine instead of unmapping them; the free() test needs the unmap.
 */
const char *__asan_default_options(void);
const char *__asan_default_options(void)
{
    return "quarantine_size_mb=0:thread_local_quarantine_size_kb=0";
}
#endif

/* Counts what threads other than the test's own allocate or free while counting is on (the
 * memwatch handler must do neither). The plain build interposes the allocator; under the
 * sanitizers, which own malloc, their allocation hooks report every malloc and free instead. */
static _Atomic bool counting;
static pthread_t test_thread;
static _Atomic int foreign_allocs;
static void count_foreign(void)
{
    if (atomic_load_explicit(&counting, memory_order_relaxed) &&
        !pthread_equal(pthread_self(), test_thread))
        atomic_fetch_add(&foreign_allocs, 1);
}
#ifdef SAN_UNDER_SANITIZER
#include <sanitizer/allocator_interface.h>
static void malloc_hook(const volatile void *p, size_t n)
{
    (void)p;
    (void)n;
    count_foreign();
}
static void free_hook(const volatile void *p)
{
    (void)p;
    count_foreign();
}
static void count_allocations(void)
{
    static bool installed;
    if (!installed)
        assert_int_not_equal(__sanitizer_install_malloc_and_free_hooks(malloc_hook, free_hook), 0);
    installed = true;
}
#else
void *__libc_malloc(size_t);
void *__libc_calloc(size_t, size_t);
void *__libc_realloc(void *, size_t);
void __libc_free(void *);
void *malloc(size_t n)
{
    count_foreign();
    return __libc_malloc(n);
}
void *calloc(size_t n, size_t m)
{
    count_foreign();
    return __libc_calloc(n, m);
}
void *realloc(void *p, size_t n)
{
    count_foreign();
    return __libc_realloc(p, n);
}
void free(void *p)
{
    if (p)
        count_foreign();
    __libc_free(p);
}
static void count_allocations(void) {}
#endif

static _Atomic uint64_t next_gen = 1;

struct fake {
    _Atomic int regs, deregs, toggles;
    _Atomic int live;       /* registrations not released */
    _Atomic int fail_next;  /* error for the next do_register */
    _Atomic int fail_dereg; /* error for the next do_deregister */
    bool mlock;             /* pin like libsan does */
};

static int fake_register(void *ctx, void *addr, size_t len, unsigned access, bool rdma,
                         struct san_rcache_reg *out)
{
    struct fake *f = ctx;
    uint64_t va = (uintptr_t)addr;
    uint64_t start = va & ~(uint64_t)(PG - 1), end = (va + len + PG - 1) & ~(uint64_t)(PG - 1);
    int inj = atomic_exchange(&f->fail_next, 0);
    if (inj)
        return inj;
    /* Pinned as libsan pins (common/pin). */
    if (f->mlock && san_pin_lock(start, end - start))
        return -EFAULT;
    int n = atomic_fetch_add(&f->regs, 1) + 1;
    atomic_fetch_add(&f->live, 1);
    *out = (struct san_rcache_reg){.handle = (uint64_t)n,
                                   .lkey = (uint32_t)n,
                                   .rkey = rdma ? (uint32_t)n | 0x80000000u : 0,
                                   .addr = va,
                                   .len = len,
                                   .cookie = *(volatile uint64_t *)(uintptr_t)start};
    (void)access;
    return 0;
}

static int fake_deregister(void *ctx, const struct san_rcache_reg *reg)
{
    struct fake *f = ctx;
    int inj = atomic_exchange(&f->fail_dereg, 0);
    if (inj)
        return inj;
    atomic_fetch_add(&f->deregs, 1);
    atomic_fetch_sub(&f->live, 1);
    if (f->mlock) {
        uint64_t start = reg->addr & ~(uint64_t)(PG - 1);
        uint64_t end = (reg->addr + reg->len + PG - 1) & ~(uint64_t)(PG - 1);
        san_pin_unlock(start, end - start);
    }
    return 0;
}

static int fake_set_remote(void *ctx, struct san_rcache_reg *reg, bool exposed)
{
    struct fake *f = ctx;
    (void)reg;
    (void)exposed;
    atomic_fetch_add(&f->toggles, 1);
    return 0;
}

static const struct san_rcache_ops fake_ops = {fake_register, fake_deregister, fake_set_remote};

static struct san_rcache *cache(struct fake *f, size_t entries, uint64_t bytes)
{
    struct san_rcache *rc;
    struct san_rcache_opts o = {.max_entries = entries, .max_bytes = bytes};
    assert_int_equal(san_rcache_create(&o, &fake_ops, f, &rc), 0);
    return rc;
}

/* Writes a fresh generation at the start of every page; returns it. */
static uint64_t stamp(char *p, size_t len)
{
    uint64_t g = atomic_fetch_add(&next_gen, 1);
    for (size_t off = 0; off < len; off += PG)
        memcpy(p + off, &g, sizeof(g));
    return g;
}

static char *map(size_t len)
{
    char *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    assert_true(p != MAP_FAILED);
    stamp(p, len);
    return p;
}

/* The registration a reference holds matches the memory now there. */
static bool fresh(const struct san_rcache_entry *e)
{
    const struct san_rcache_reg *r = san_rcache_entry_reg(e);
    uint64_t page = r->addr & ~(uint64_t)(PG - 1);
    return *(volatile uint64_t *)(uintptr_t)page == r->cookie;
}

static struct san_rcache_entry *get(struct san_rcache *rc, void *p, size_t len, unsigned access)
{
    struct san_rcache_entry *e = NULL;
    assert_int_equal(san_rcache_get(rc, p, len, access, false, &e), 0);
    assert_non_null(e);
    assert_true(fresh(e));
    return e;
}

static struct san_rcache_stats stats(struct san_rcache *rc)
{
    struct san_rcache_stats s;
    san_rcache_stats(rc, &s);
    return s;
}

static void test_hit_and_miss(void **state)
{
    (void)state;
    struct fake f = {.mlock = true};
    struct san_rcache *rc = cache(&f, 16, 0);
    char *p = map(64 * 1024);

    struct san_rcache_entry *a = get(rc, p, 64 * 1024, SAN_MEM_READWRITE);
    assert_int_equal(f.regs, 1);
    assert_int_equal(san_rcache_put(rc, a), 0);
    assert_int_equal(f.deregs, 0); /* stays cached at reference count 0 */
    struct san_rcache_entry *b = get(rc, p, 64 * 1024, SAN_MEM_READWRITE);
    assert_ptr_equal(a, b);
    assert_int_equal(f.regs, 1);
    struct san_rcache_entry *c = get(rc, p, 64 * 1024, SAN_MEM_READWRITE);
    assert_ptr_equal(b, c);
    struct san_rcache_stats s = stats(rc);
    assert_int_equal(s.entries, 1);
    assert_int_equal(s.bytes, 64 * 1024);
    assert_int_equal(s.in_use, 1);
    assert_int_equal(s.misses, 1);
    assert_true(s.watching);
    san_rcache_put(rc, b);
    assert_int_equal(san_rcache_put(rc, c), 0);
    assert_int_equal(san_rcache_put(rc, c), -EINVAL); /* one too many: refused, count intact */
    assert_int_equal(stats(rc).in_use, 0);
    /* A range nothing covers: a miss. */
    struct san_rcache_entry *d = get(rc, p + 64 * 1024 - PG, PG + 0, SAN_MEM_READ);
    assert_ptr_equal(d, a); /* inside: covered */
    san_rcache_put(rc, d);
    san_rcache_destroy(rc);
    assert_int_equal(f.deregs, 1);
    assert_int_equal(f.live, 0);
    munmap(p, 64 * 1024);
}

static void test_covering_hit(void **state)
{
    (void)state;
    struct fake f = {.mlock = true};
    struct san_rcache *rc = cache(&f, 16, 0);
    char *p = map(16 * PG);

    struct san_rcache_entry *wide = get(rc, p + 100, 8 * PG, SAN_MEM_READ);
    san_rcache_put(rc, wide);
    struct san_rcache_entry *in = get(rc, p + 200, 3 * PG, SAN_MEM_READ);
    assert_ptr_equal(in, wide);
    san_rcache_put(rc, in);
    assert_int_equal(f.regs, 1);
    /* Sticks out on either side: not covered. */
    struct san_rcache_entry *left = get(rc, p + 50, PG, SAN_MEM_READ);
    assert_ptr_not_equal(left, wide);
    struct san_rcache_entry *right = get(rc, p + 100 + 8 * PG - 10, 20, SAN_MEM_READ);
    assert_ptr_not_equal(right, wide);
    assert_int_equal(f.regs, 3);
    san_rcache_put(rc, left);
    san_rcache_put(rc, right);
    /* A wider range than anything cached. */
    struct san_rcache_entry *wider = get(rc, p, 16 * PG, SAN_MEM_READ);
    assert_int_equal(f.regs, 4);
    san_rcache_put(rc, wider);
    /* Now the widest serves a request nothing else covers. */
    struct san_rcache_entry *mid = get(rc, p + 40, 12 * PG, SAN_MEM_READ);
    assert_ptr_equal(mid, wider);
    san_rcache_put(rc, mid);
    san_rcache_destroy(rc);
    assert_int_equal(f.live, 0);
    munmap(p, 16 * PG);
}

static void test_access_upgrade_and_kind(void **state)
{
    (void)state;
    struct fake f = {.mlock = true};
    struct san_rcache *rc = cache(&f, 16, 0);
    char *p = map(4 * PG);

    struct san_rcache_entry *r = get(rc, p, 4 * PG, SAN_MEM_READ);
    san_rcache_put(rc, r);
    struct san_rcache_entry *rw = get(rc, p, 4 * PG, SAN_MEM_READWRITE); /* upgrade: a miss */
    assert_ptr_not_equal(rw, r);
    assert_int_equal(f.regs, 2);
    san_rcache_put(rc, rw);
    struct san_rcache_entry *w = get(rc, p, 2 * PG, SAN_MEM_WRITE); /* served by READWRITE */
    assert_ptr_equal(w, rw);
    san_rcache_put(rc, w);
    struct san_rcache_entry *r2 = get(rc, p, 4 * PG, SAN_MEM_READ);
    assert_true(r2 == r || r2 == rw);
    san_rcache_put(rc, r2);
    assert_int_equal(f.regs, 2);

    /* A local registration never serves an RDMA request (peers would reach it). */
    struct san_rcache_entry *x;
    assert_int_equal(san_rcache_get(rc, p, 4 * PG, SAN_MEM_READ, true, &x), 0);
    assert_int_equal(f.regs, 3);
    assert_int_equal(san_rcache_entry_reg(x)->rkey >> 31, 1);
    assert_int_equal(f.toggles, 0);
    san_rcache_put(rc, x); /* idle: hidden from peers */
    assert_int_equal(f.toggles, 1);
    struct san_rcache_entry *y;
    assert_int_equal(san_rcache_get(rc, p + 100, 4 * PG - 200, SAN_MEM_READ, true, &y), 0);
    assert_ptr_equal(x, y); /* the same pages: hit, exposed again */
    assert_int_equal(f.toggles, 2);
    struct san_rcache_entry *z;
    assert_int_equal(san_rcache_get(rc, p, 4 * PG, SAN_MEM_READ, true, &z), 0);
    assert_int_equal(f.toggles, 2); /* already exposed: no round trip */
    san_rcache_put(rc, z);
    assert_int_equal(f.toggles, 2); /* still referenced */
    san_rcache_put(rc, y);
    assert_int_equal(f.toggles, 3);
    assert_int_equal(f.regs, 3);
    /* An RDMA request for fewer pages than an entry is not served by it: its key would give the
     * peer the entry's other pages too. */
    struct san_rcache_entry *one;
    assert_int_equal(san_rcache_get(rc, p + PG, PG, SAN_MEM_READ, true, &one), 0);
    assert_ptr_not_equal(one, x);
    assert_int_equal(f.regs, 4);
    san_rcache_put(rc, one);

    assert_int_equal(san_rcache_get(rc, p, 0, SAN_MEM_READ, false, &x), -EINVAL);
    assert_int_equal(san_rcache_get(rc, p, PG, 0, false, &x), -EINVAL);
    assert_int_equal(san_rcache_get(rc, p, PG, 4, false, &x), -EINVAL);
    assert_int_equal(san_rcache_get(rc, NULL, PG, 1, false, &x), -EINVAL);
    assert_int_equal(san_rcache_get(rc, (void *)(UINTPTR_MAX - PG + 1), 2 * PG, 1, false, &x),
                     -EINVAL);
    san_rcache_destroy(rc);
    assert_int_equal(f.live, 0);
    munmap(p, 4 * PG);
}

static void test_lru_by_count(void **state)
{
    (void)state;
    struct fake f = {.mlock = true};
    struct san_rcache *rc = cache(&f, 3, 0);
    char *p = map(8 * PG);
    struct san_rcache_entry *e[4];

    for (int i = 0; i < 3; i++) {
        e[i] = get(rc, p + i * PG, PG, SAN_MEM_READ);
        san_rcache_put(rc, e[i]);
    }
    /* Use 0 again: 1 is now the least recently used. */
    san_rcache_put(rc, get(rc, p, PG, SAN_MEM_READ));
    e[3] = get(rc, p + 3 * PG, PG, SAN_MEM_READ);
    san_rcache_put(rc, e[3]);
    assert_int_equal(f.deregs, 1);
    assert_int_equal(stats(rc).entries, 3);
    assert_int_equal(stats(rc).evictions, 1);
    int regs = f.regs;
    san_rcache_put(rc, get(rc, p, PG, SAN_MEM_READ));
    san_rcache_put(rc, get(rc, p + 2 * PG, PG, SAN_MEM_READ));
    san_rcache_put(rc, get(rc, p + 3 * PG, PG, SAN_MEM_READ));
    assert_int_equal(f.regs, regs); /* 0, 2, 3 were kept */
    san_rcache_put(rc, get(rc, p + PG, PG, SAN_MEM_READ));
    assert_int_equal(f.regs, regs + 1); /* 1 was the one evicted; now 0 goes (oldest use) */
    assert_int_equal(f.deregs, 2);
    san_rcache_put(rc, get(rc, p + 2 * PG, PG, SAN_MEM_READ));
    assert_int_equal(f.regs, regs + 1);

    /* Entries in use are never evicted: with all of them held, a new range is not cached. */
    struct san_rcache_entry *h[3];
    h[0] = get(rc, p + PG, PG, SAN_MEM_READ);
    h[1] = get(rc, p + 2 * PG, PG, SAN_MEM_READ);
    h[2] = get(rc, p + 3 * PG, PG, SAN_MEM_READ);
    assert_int_equal(stats(rc).in_use, 3);
    int deregs = f.deregs;
    struct san_rcache_entry *u = get(rc, p + 5 * PG, PG, SAN_MEM_READ);
    assert_int_equal(stats(rc).uncached, 1);
    assert_int_equal(f.deregs, deregs);
    san_rcache_put(rc, u); /* uncached: released at once */
    assert_int_equal(f.deregs, deregs + 1);
    for (int i = 0; i < 3; i++)
        san_rcache_put(rc, h[i]);
    san_rcache_destroy(rc);
    assert_int_equal(f.live, 0);
    munmap(p, 8 * PG);
}

static void test_lru_by_bytes(void **state)
{
    (void)state;
    struct fake f = {.mlock = true};
    struct san_rcache *rc = cache(&f, 100, 64 * 1024);
    char *p = map(256 * 1024);

    struct san_rcache_entry *a = get(rc, p, 32 * 1024, SAN_MEM_READ);
    san_rcache_put(rc, a);
    struct san_rcache_entry *b = get(rc, p + 32 * 1024, 32 * 1024, SAN_MEM_READ);
    san_rcache_put(rc, b);
    assert_int_equal(stats(rc).bytes, 64 * 1024);
    struct san_rcache_entry *c = get(rc, p + 64 * 1024, 16 * 1024, SAN_MEM_READ);
    san_rcache_put(rc, c);
    assert_int_equal(f.deregs, 1); /* a went */
    assert_int_equal(stats(rc).bytes, 48 * 1024);
    int regs = f.regs;
    san_rcache_put(rc, get(rc, p + 32 * 1024, 32 * 1024, SAN_MEM_READ)); /* b still there */
    assert_int_equal(f.regs, regs);
    /* Larger than the whole cache: served, never cached. */
    struct san_rcache_entry *big = get(rc, p, 128 * 1024, SAN_MEM_READ);
    assert_int_equal(stats(rc).uncached, 1);
    assert_int_equal(stats(rc).bytes, 48 * 1024);
    (void)big; /* still held: destroy releases it (and frees it: the leak checker watches) */
    san_rcache_destroy(rc);
    assert_int_equal(f.live, 0);
    munmap(p, 256 * 1024);
}

static void test_bounds_from_environment(void **state)
{
    (void)state;
    struct fake f = {0};
    struct san_rcache *rc;
    size_t n;
    uint64_t b;

    setenv("SAN_RCACHE_MAX_ENTRIES", "7", 1);
    setenv("SAN_RCACHE_MAX_BYTES", "3M", 1);
    assert_int_equal(san_rcache_create(NULL, &fake_ops, &f, &rc), 0);
    san_rcache_bounds(rc, &n, &b);
    assert_int_equal(n, 7);
    assert_int_equal(b, 3u << 20);
    san_rcache_destroy(rc);

    struct san_rcache_opts o = {.max_entries = 5};
    assert_int_equal(san_rcache_create(&o, &fake_ops, &f, &rc), 0);
    san_rcache_bounds(rc, &n, &b);
    assert_int_equal(n, 5); /* the options win */
    assert_int_equal(b, 3u << 20);
    san_rcache_destroy(rc);

    /* 0 disables: every get registers, every put releases. */
    setenv("SAN_RCACHE_MAX_ENTRIES", "0", 1);
    assert_int_equal(san_rcache_create(NULL, &fake_ops, &f, &rc), 0);
    san_rcache_bounds(rc, &n, &b);
    assert_int_equal(n, 0);
    char *p = map(PG);
    for (int i = 0; i < 3; i++)
        san_rcache_put(rc, get(rc, p, PG, SAN_MEM_READ));
    assert_int_equal(f.regs, 3);
    assert_int_equal(f.deregs, 3);
    assert_false(stats(rc).watching);
    san_rcache_destroy(rc);

    setenv("SAN_RCACHE_MAX_ENTRIES", "lots", 1);
    assert_int_equal(san_rcache_create(NULL, &fake_ops, &f, &rc), -EINVAL);
    setenv("SAN_RCACHE_MAX_ENTRIES", "10", 1);
    setenv("SAN_RCACHE_MAX_BYTES", "12Q", 1);
    assert_int_equal(san_rcache_create(NULL, &fake_ops, &f, &rc), -EINVAL);
    unsetenv("SAN_RCACHE_MAX_ENTRIES");
    unsetenv("SAN_RCACHE_MAX_BYTES");
    assert_int_equal(san_rcache_create(NULL, &fake_ops, &f, &rc), 0);
    san_rcache_bounds(rc, &n, &b);
    assert_int_equal(n, SAN_RCACHE_DEFAULT_ENTRIES);
    assert_int_equal(b, SAN_RCACHE_DEFAULT_BYTES);
    san_rcache_destroy(rc);
    munmap(p, PG);
}

static void test_explicit_invalidate(void **state)
{
    (void)state;
    struct fake f = {.mlock = true};
    struct san_rcache *rc = cache(&f, 16, 0);
    char *p = map(8 * PG);

    assert_int_equal(san_rcache_invalidate(rc, p, PG), -EINVAL); /* nothing cached */
    san_rcache_put(rc, get(rc, p, 2 * PG, SAN_MEM_READ));
    san_rcache_put(rc, get(rc, p + 4 * PG, 2 * PG, SAN_MEM_READ));
    assert_int_equal(san_rcache_invalidate(rc, p + 2 * PG, 2 * PG), -EINVAL); /* the gap */
    assert_int_equal(san_rcache_invalidate(rc, p + PG, 4 * PG), 0);           /* overlaps both */
    assert_int_equal(f.deregs, 2);
    assert_int_equal(stats(rc).entries, 0);
    assert_int_equal(san_rcache_invalidate(rc, p, 8 * PG), -EINVAL);
    assert_int_equal(san_rcache_invalidate(rc, p, 0), -EINVAL);

    /* In use: released now, the reference becomes invalid; its put frees it. */
    struct san_rcache_entry *e = get(rc, p, PG, SAN_MEM_READ);
    assert_true(san_rcache_entry_valid(e));
    assert_int_equal(san_rcache_invalidate(rc, p, 1), 0);
    assert_false(san_rcache_entry_valid(e));
    assert_int_equal(f.live, 0);
    struct san_rcache_entry *e2 = get(rc, p, PG, SAN_MEM_READ); /* a new registration */
    assert_ptr_not_equal(e2, e);
    assert_int_equal(san_rcache_put(rc, e), 0);
    assert_int_equal(san_rcache_put(rc, e2), 0);
    san_rcache_destroy(rc);
    assert_int_equal(f.live, 0);
    munmap(p, 8 * PG);
}

static void test_munmap_invalidates(void **state)
{
    (void)state;
    struct fake f = {.mlock = true};
    struct san_rcache *rc = cache(&f, 16, 0);
    char *p = map(4 * PG);

    san_rcache_put(rc, get(rc, p, 4 * PG, SAN_MEM_READ));
    struct san_rcache_entry *held = get(rc, p, 2 * PG, SAN_MEM_READ);
    assert_int_equal(munmap(p + 3 * PG, PG), 0); /* part of it */
    assert_int_equal(stats(rc).entries, 0);
    assert_int_equal(stats(rc).unmaps, 1);
    assert_int_equal(f.deregs, 1);
    assert_false(san_rcache_entry_valid(held));
    san_rcache_put(rc, held);
    /* The pages that stay mapped are no longer watched: once dropped, a system call can fill
     * them again (a watched missing page would fail it). */
    assert_int_equal(madvise(p, PG, MADV_DONTNEED), 0);
    FILE *z = fopen("/dev/zero", "r");
    assert_non_null(z);
    setvbuf(z, NULL, _IONBF, 0);
    assert_int_equal(fread(p, 1, PG, z), PG);
    fclose(z);
    assert_int_equal(stats(rc).removes, 0);
    munmap(p, 3 * PG);
    san_rcache_destroy(rc);
    assert_int_equal(f.live, 0);
}

static void test_munmap_mmap_same_address(void **state)
{
    (void)state;
    struct fake f = {.mlock = true};
    struct san_rcache *rc = cache(&f, 16, 0);
    char *p = map(16 * PG);
    munmap(p, 16 * PG);

    int regs = 0, same = 0;
    for (int i = 0; i < 50; i++) {
        char *q = mmap(p, 16 * PG, PROT_READ | PROT_WRITE,
                       MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
        if (q == MAP_FAILED && errno == EEXIST) {
            /* Someone (a sanitizer's allocator) took the hole meanwhile: move on elsewhere. */
            p = map(16 * PG);
            munmap(p, 16 * PG);
            continue;
        }
        same++;
        assert_ptr_equal(q, p);
        uint64_t g = stamp(q, 16 * PG);
        struct san_rcache_entry *e = get(rc, q + 8, 16 * PG - 16, SAN_MEM_READWRITE);
        assert_int_equal(san_rcache_entry_reg(e)->cookie, g);
        assert_int_equal(f.regs, ++regs); /* a new mapping is never a hit */
        san_rcache_put(rc, e);
        e = get(rc, q + PG, PG, SAN_MEM_READ); /* the same mapping is */
        assert_int_equal(f.regs, regs);
        san_rcache_put(rc, e);
        if (i % 2) {
            /* mmap(MAP_FIXED) over it replaces the mapping without a munmap call. */
            q = mmap(p, 16 * PG, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED,
                     -1, 0);
            assert_ptr_equal(q, p);
            g = stamp(q, 16 * PG);
            e = get(rc, q + 8, 16 * PG - 16, SAN_MEM_READWRITE);
            assert_int_equal(f.regs, ++regs);
            assert_int_equal(san_rcache_entry_reg(e)->cookie, g);
            san_rcache_put(rc, e);
        }
        assert_int_equal(munmap(q, 16 * PG), 0);
        assert_int_equal(stats(rc).entries, 0);
        assert_int_equal(f.live, 0);
    }
    assert_true(same >= 25);
    san_rcache_destroy(rc);
}

static void test_mremap_invalidates(void **state)
{
    (void)state;
    struct fake f = {.mlock = true};
    struct san_rcache *rc = cache(&f, 16, 0);
    char *p = map(4 * PG);
    char *dst = map(8 * PG);

    san_rcache_put(rc, get(rc, p, 4 * PG, SAN_MEM_READ));
    char *q = mremap(p, 4 * PG, 4 * PG, MREMAP_MAYMOVE | MREMAP_FIXED, dst + 2 * PG);
    assert_ptr_equal(q, dst + 2 * PG);
    struct san_rcache_stats s = stats(rc);
    assert_int_equal(s.entries, 0);
    assert_true(s.remaps >= 1);
    assert_int_equal(f.deregs, 1);
    /* Registering the moved memory is a new registration. */
    stamp(q, 4 * PG);
    san_rcache_put(rc, get(rc, q, 4 * PG, SAN_MEM_READ));
    assert_int_equal(f.regs, 2);
    munmap(dst, 8 * PG);
    assert_int_equal(stats(rc).entries, 0);
    san_rcache_destroy(rc);
    assert_int_equal(f.live, 0);
}

static void test_free_of_large_block_invalidates(void **state)
{
    (void)state;
    struct fake f = {.mlock = true};
    struct san_rcache *rc = cache(&f, 16, 0);
    size_t len = 4u << 20; /* far above the mmap threshold, which we pin (no dynamic raise) */
    mallopt(M_MMAP_THRESHOLD, 128 * 1024);
    char *m = malloc(len);
    assert_non_null(m);
    uint64_t g = stamp((char *)(((uintptr_t)m + PG - 1) & ~(uintptr_t)(PG - 1)), len - PG);
    struct san_rcache_entry *e = get(rc, m + PG, len - 2 * PG, SAN_MEM_READWRITE);
    assert_int_equal(san_rcache_entry_reg(e)->cookie, g);
    san_rcache_put(rc, e);
    free(m);
    assert_int_equal(stats(rc).entries, 0);
    assert_int_equal(f.deregs, 1);
    san_rcache_destroy(rc);
    assert_int_equal(f.live, 0);
}

static void test_brk_shrink_invalidates(void **state)
{
    (void)state;
    struct fake f = {.mlock = true};
    struct san_rcache *rc = cache(&f, 16, 0);
    /* Start the watcher and warm up the allocator first: nothing below may move the break. */
    char *w = map(PG);
    san_rcache_put(rc, get(rc, w, PG, SAN_MEM_READ));
    assert_int_equal(san_rcache_invalidate(rc, w, PG), 0);
    munmap(w, PG);

    char *base, *aligned;
    intptr_t grow;
    int ok, attempt;
    for (attempt = 0;; attempt++) {
        base = sbrk(0);
        aligned = (char *)(((uintptr_t)base + PG - 1) & ~(uintptr_t)(PG - 1));
        grow = (aligned - base) + 8 * PG;
        assert_true(sbrk(grow) == base);
        stamp(aligned, 8 * PG);
        struct san_rcache_entry *e;
        assert_int_equal(san_rcache_get(rc, aligned + 4 * PG, 4 * PG, SAN_MEM_READ, false, &e), 0);
        assert_true(fresh(e));
        san_rcache_put(rc, e);
        ok = stats(rc).entries == 1;
        if (sbrk(0) == base + grow)
            break;
        /* The allocator moved the break meanwhile: never cut into its memory. Leave ours where it
         * is (uncached) and try again above it. */
        assert_int_equal(san_rcache_invalidate(rc, aligned + 4 * PG, 4 * PG), 0);
        if (attempt == 4) {
            san_rcache_destroy(rc);
            test_skip("test_brk_shrink_invalidates: the allocator moved the break during each of "
                      "5 attempts");
        }
    }
    assert_true(sbrk(-4 * (intptr_t)PG) != (void *)-1); /* drops the upper half */
    struct san_rcache_stats s = stats(rc);
    assert_true(sbrk(-(grow - 4 * (intptr_t)PG)) != (void *)-1);
    assert_true(ok);
    assert_int_equal(s.entries, 0);
    assert_int_equal(s.unmaps, 1);
    assert_int_equal(f.deregs, 2 + attempt); /* the warm-up, each retry's, the shrunk one */
    san_rcache_destroy(rc);
    assert_int_equal(f.live, 0);
}

static void test_madvise_on_unpinned_invalidates(void **state)
{
    (void)state;
    /* While cached and pinned, madvise(DONTNEED) is refused by the kernel; a registering layer
     * that does not pin still gets the invalidation. */
    struct fake pinned = {.mlock = true}, loose = {.mlock = false};
    struct san_rcache *rc = cache(&pinned, 16, 0);
    char *p = map(4 * PG);
    san_rcache_put(rc, get(rc, p, 4 * PG, SAN_MEM_READ));
    assert_int_equal(madvise(p, PG, MADV_DONTNEED), -1);
    assert_int_equal(errno, EINVAL);
    assert_int_equal(stats(rc).entries, 1);
    san_rcache_destroy(rc);

    rc = cache(&loose, 16, 0);
    san_rcache_put(rc, get(rc, p, 4 * PG, SAN_MEM_READ));
    assert_int_equal(madvise(p + PG, PG, MADV_DONTNEED), 0);
    assert_int_equal(stats(rc).entries, 0);
    assert_int_equal(stats(rc).removes, 1);
    assert_int_equal(loose.deregs, 1);
    san_rcache_destroy(rc);
    munmap(p, 4 * PG);
}

static void test_unwatchable_memory_passes_through(void **state)
{
    (void)state;
    struct fake f = {.mlock = false};
    struct san_rcache *rc = cache(&f, 16, 0);
    FILE *t = fopen("/proc/self/exe", "r");
    assert_non_null(t);
    void *m = mmap(NULL, PG, PROT_READ, MAP_PRIVATE, fileno(t), 0);
    assert_true(m != MAP_FAILED);
    struct san_rcache_entry *e;
    for (int i = 0; i < 2; i++) {
        assert_int_equal(san_rcache_get(rc, m, PG, SAN_MEM_READ, false, &e), 0);
        san_rcache_put(rc, e);
    }
    assert_int_equal(f.regs, 2);
    assert_int_equal(f.deregs, 2);
    assert_int_equal(stats(rc).uncached, 2);
    /* An uncached release the registering layer refuses keeps the reference. */
    assert_int_equal(san_rcache_get(rc, m, PG, SAN_MEM_READ, false, &e), 0);
    f.fail_dereg = -EBUSY;
    assert_int_equal(san_rcache_put(rc, e), -EBUSY);
    assert_int_equal(f.live, 1);
    assert_int_equal(san_rcache_put(rc, e), 0);
    assert_int_equal(f.live, 0);
    munmap(m, PG);
    fclose(t);
    /* A failing registration is reported and leaves nothing behind. */
    char *p = map(PG);
    f.fail_next = -ENOBUFS;
    assert_int_equal(san_rcache_get(rc, p, PG, SAN_MEM_READ, false, &e), -ENOBUFS);
    assert_int_equal(stats(rc).entries, 0);
    assert_int_equal(san_rcache_invalidate(rc, p, PG), -EINVAL);
    munmap(p, PG);
    san_rcache_destroy(rc);
}

/* The event path (the memwatch handler: read events, invalidate, release) never allocates or
 * frees: free() could unmap or trim watched memory and wait for the handler itself. */
static void test_event_path_does_not_allocate(void **state)
{
    (void)state;
    count_allocations();
    struct fake f = {.mlock = true};
    struct san_rcache *rc = cache(&f, 16, 0);
    char *p = map(16 * PG);
    for (int i = 0; i < 8; i++)
        san_rcache_put(rc, get(rc, p + i * PG, 2 * PG - 1, SAN_MEM_READ));
    struct san_rcache_entry *held = get(rc, p, PG, SAN_MEM_READ);
    char *dst = map(4 * PG);
    /* The handler thread must be up first: what starting a thread allocates (the sanitizers' own
     * bookkeeping) is not the event path. An unmap returns once the handler has read its event. */
    char *warm = map(PG);
    san_rcache_put(rc, get(rc, warm, PG, SAN_MEM_READ));
    assert_int_equal(munmap(warm, PG), 0);
    stats(rc);

    test_thread = pthread_self();
    atomic_store(&foreign_allocs, 0);
    atomic_store(&counting, true);
    assert_int_equal(munmap(p + 12 * PG, 4 * PG), 0);             /* unmap, idle entries */
    assert_int_equal(madvise(p + 8 * PG, PG, MADV_DONTNEED), -1); /* pinned: refused */
    assert_true(mremap(p + 6 * PG, 2 * PG, 2 * PG, MREMAP_MAYMOVE | MREMAP_FIXED, dst) == dst);
    assert_int_equal(munmap(p, 2 * PG), 0); /* an entry still held */
    struct san_rcache_stats s = stats(rc);  /* waits for the handler to finish */
    atomic_store(&counting, false);
    assert_int_equal(atomic_load(&foreign_allocs), 0);
    assert_true(s.unmaps >= 2 && s.remaps >= 1);
    assert_true(s.invalidations >= 5);
    assert_false(san_rcache_entry_valid(held));
    san_rcache_put(rc, held);
    san_rcache_destroy(rc);
    assert_int_equal(f.live, 0);
    munmap(p, 16 * PG);
    munmap(dst, 4 * PG);
}

static void test_fork(void **state)
{
    (void)state;
    struct fake f = {.mlock = true};
    struct san_rcache *rc = cache(&f, 16, 0);
    char *p = map(4 * PG);
    struct san_rcache_entry *held = get(rc, p, 4 * PG, SAN_MEM_READ);
    san_rcache_put(rc, get(rc, p + 8 * 0, PG, SAN_MEM_READ));

    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        struct san_rcache_entry *e;
        int bad = 0;
        bad |= san_rcache_get(rc, p, PG, SAN_MEM_READ, false, &e) != -ECHILD;
        bad |= san_rcache_invalidate(rc, p, PG) != -ECHILD;
        bad |= san_rcache_put(rc, held) != -ECHILD;
        bad |= !san_rcache_forked(rc);
        /* The child's unmap is the child's business: the parent's cache must not notice. */
        bad |= munmap(p, 4 * PG) != 0;
        san_rcache_destroy(rc); /* frees the child's copy, releases nothing of the parent's */
        bad |= f.deregs != 0;
        _exit(bad ? 1 : 0);
    }
    int status;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);

    assert_false(san_rcache_forked(rc));
    struct san_rcache_entry *e = get(rc, p, 2 * PG, SAN_MEM_READ);
    assert_ptr_equal(e, held);
    assert_int_equal(f.regs, 1);
    assert_int_equal(f.deregs, 0);
    san_rcache_put(rc, e);
    san_rcache_put(rc, held);
    /* The parent's watcher still works after the child closed its copies. */
    munmap(p, 4 * PG);
    assert_int_equal(stats(rc).entries, 0);
    assert_int_equal(f.deregs, 1);
    /* Another fork: the child frees its copy at once, the parent goes on. */
    char *q = map(PG);
    san_rcache_put(rc, get(rc, q, PG, SAN_MEM_READ));
    pid = fork();
    if (pid == 0) {
        san_rcache_destroy(rc);
        _exit(0);
    }
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    munmap(q, PG);
    san_rcache_destroy(rc);
    assert_int_equal(f.live, 0);
}

/* ---- churn: threads map, register, unmap and remap at the same addresses; every reference
 * handed out must match the memory there. */

#define CHURN_THREADS 4
#define CHURN_SLOTS   6
#define CHURN_PAGES   4
#define CHURN_OPS     3000

struct churn {
    struct san_rcache *rc;
    char *area; /* this thread's slots */
    uint64_t seed;
    bool mapped[CHURN_SLOTS], holed[CHURN_SLOTS], lost[CHURN_SLOTS];
    struct san_rcache_entry *held[CHURN_SLOTS];
    int stale, errors;
};

static uint64_t xorshift(uint64_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

static void *churn_main(void *arg)
{
    struct churn *c = arg;
    const size_t slot_len = CHURN_PAGES * PG;
    for (int op = 0; op < CHURN_OPS; op++) {
        int s = (int)(xorshift(&c->seed) % CHURN_SLOTS);
        char *base = c->area + (size_t)s * (slot_len + PG); /* a guard page between slots */
        unsigned r = (unsigned)(xorshift(&c->seed) % 100);
        if (c->lost[s]) {
            continue;
        } else if (!c->mapped[s]) {
            /* Over our own PROT_NONE reservation the first time; into the hole we made later, which
             * someone else (a sanitizer's allocator, a thread stack) may have taken meanwhile:
             * never clobber that, give the slot up instead. */
            char *q =
                mmap(base, slot_len, PROT_READ | PROT_WRITE,
                     MAP_PRIVATE | MAP_ANONYMOUS | (c->holed[s] ? MAP_FIXED_NOREPLACE : MAP_FIXED),
                     -1, 0);
            if (q == MAP_FAILED && errno == EEXIST) {
                c->lost[s] = true;
                continue;
            }
            if (q != base) {
                c->errors++;
                continue;
            }
            stamp(q, slot_len);
            c->mapped[s] = true;
        } else if (r < 60) {
            size_t off = (size_t)(xorshift(&c->seed) % slot_len);
            size_t len = 1 + (size_t)(xorshift(&c->seed) % (slot_len - off));
            struct san_rcache_entry *e;
            int err = san_rcache_get(c->rc, base + off, len, 1 + (unsigned)(r % 3), r % 7 == 0, &e);
            if (err) {
                c->errors++;
                continue;
            }
            if (!fresh(e))
                c->stale++;
            if (!c->held[s] && r % 2) {
                c->held[s] = e; /* kept across a possible unmap */
            } else {
                san_rcache_put(c->rc, e);
            }
        } else if (r < 80) {
            if (c->held[s]) {
                san_rcache_put(c->rc, c->held[s]);
                c->held[s] = NULL;
            }
        } else if (r < 95) {
            /* Unmap, or replace in place (MAP_FIXED unmaps too); new contents either way. */
            if (r % 2) {
                munmap(base, slot_len);
                c->mapped[s] = false;
                c->holed[s] = true;
            } else {
                char *q = mmap(base, slot_len, PROT_READ | PROT_WRITE,
                               MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
                if (q != base)
                    c->errors++;
                stamp(q, slot_len);
            }
        } else {
            san_rcache_invalidate(c->rc, base, slot_len);
        }
    }
    for (int s = 0; s < CHURN_SLOTS; s++) {
        if (c->held[s])
            san_rcache_put(c->rc, c->held[s]);
        if (c->mapped[s] || !c->holed[s]) /* ours: mapped, or still our reservation */
            munmap(c->area + (size_t)s * (CHURN_PAGES * PG + PG), CHURN_PAGES * PG);
        munmap(c->area + (size_t)s * (CHURN_PAGES * PG + PG) + CHURN_PAGES * PG, PG); /* guard */
    }
    return NULL;
}

static void test_churn_stress(void **state)
{
    (void)state;
    struct fake f = {.mlock = true};
    struct san_rcache *rc = cache(&f, 12, 40 * PG); /* small: evictions all the time */
    struct churn c[CHURN_THREADS];
    pthread_t t[CHURN_THREADS];
    size_t area_len = CHURN_SLOTS * (CHURN_PAGES * PG + PG);

    for (int i = 0; i < CHURN_THREADS; i++) {
        memset(&c[i], 0, sizeof(c[i]));
        c[i].rc = rc;
        c[i].seed = 0x9e3779b97f4a7c15u * (uint64_t)(i + 1);
        c[i].area = mmap(NULL, area_len, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        assert_true(c[i].area != MAP_FAILED);
    }
    for (int i = 0; i < CHURN_THREADS; i++)
        assert_int_equal(pthread_create(&t[i], NULL, churn_main, &c[i]), 0);
    int stale = 0, errors = 0;
    for (int i = 0; i < CHURN_THREADS; i++) {
        pthread_join(t[i], NULL);
        stale += c[i].stale;
        errors += c[i].errors;
    }
    struct san_rcache_stats s = stats(rc);
    print_message("churn: %d registrations, %" PRIu64 " evictions, %" PRIu64
                  " invalidations, %" PRIu64 " unmap events, %" PRIu64 " doomed\n",
                  f.regs, s.evictions, s.invalidations, s.unmaps, s.doomed);
    assert_int_equal(stale, 0);
    assert_int_equal(errors, 0);
    assert_true(s.evictions > 0);
    assert_true(s.unmaps > 0);
    assert_int_equal(s.entries, 0); /* everything was unmapped */
    assert_int_equal(f.live, 0);
    san_rcache_destroy(rc);
}

int main(void)
{
    /* The bounds the cases give are the bounds they get: not the developer's environment. */
    unsetenv("SAN_RCACHE_MAX_ENTRIES");
    unsetenv("SAN_RCACHE_MAX_BYTES");
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hit_and_miss),
        cmocka_unit_test(test_covering_hit),
        cmocka_unit_test(test_access_upgrade_and_kind),
        cmocka_unit_test(test_lru_by_count),
        cmocka_unit_test(test_lru_by_bytes),
        cmocka_unit_test(test_bounds_from_environment),
        cmocka_unit_test(test_explicit_invalidate),
        cmocka_unit_test(test_munmap_invalidates),
        cmocka_unit_test(test_munmap_mmap_same_address),
        cmocka_unit_test(test_mremap_invalidates),
        cmocka_unit_test(test_free_of_large_block_invalidates),
        cmocka_unit_test(test_brk_shrink_invalidates),
        cmocka_unit_test(test_madvise_on_unpinned_invalidates),
        cmocka_unit_test(test_unwatchable_memory_passes_through),
        cmocka_unit_test(test_event_path_does_not_allocate),
        cmocka_unit_test(test_fork),
        cmocka_unit_test(test_churn_stress),
    };
    return test_result(cmocka_run_group_tests(tests, NULL, NULL));
}
