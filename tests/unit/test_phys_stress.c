/* phys: fixed-seed randomized stress against a reference model.
 *
 * The model is an array of page states over the machine's RAM (small machines with holes, with
 * and without NOLOWMEM, RAM on both sides of 4 GiB). For every allocation request it computes, by
 * brute force over every page, the highest placement the rules allow (inside [lowest, highest],
 * not crossing the boundary, inside one run of RAM, above 4 GiB when NOLOWMEM says so) or that
 * there is none, and the allocator must return exactly that address, or -ENOMEM exactly when
 * nothing fits, or -EINVAL for a bad request. Frees (good and bad) follow the model too, and the
 * statistics (free bytes, low free bytes, allocations, allocated bytes) are compared after every
 * operation, the number of free extents (= maximal free runs, by a recount) after every 16th.
 * Every allocation carries a tag in its first and last bytes that must survive until it is freed:
 * an overlap would overwrite one. Some allocations of the repeated shapes are freed and asked for
 * again at once, as drivers recycle buffers (the allocator may take the freed record back). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <san/san.h>

#include "common/page.h"

#define KIB             (UINT64_C(1) << 10)
#define MIB             (UINT64_C(1) << 20)
#define GIB             (UINT64_C(1) << 30)
#define G4              (UINT64_C(1) << 32)
#define OPS_PER_MACHINE 25000
#define MAX_HELD        4096

enum { FREE = 0, USED = 1, FIRMWARE = 2 };

struct model {
    const struct san_ram_range *ram; /* sorted, not adjacent */
    size_t nr;
    bool nolowmem;
    size_t pages;
    uint64_t *first; /* index of each range's first page */
    uint8_t *state;
    uint32_t *run; /* free pages from this one up, within its range */
    uint64_t allocations, allocated_bytes, free_bytes, low_free_bytes; /* kept as pages change */
};

struct held {
    void *va;
    san_paddr_t pa;
    size_t bytes; /* as asked */
    uint64_t len; /* whole pages */
    enum san_cache_type cache;
    uint64_t tag;
};

static uint64_t rng;
static uint64_t rnd(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}

static uint64_t model_free_runs(const struct model *md, uint64_t *free_bytes, uint64_t *low_free);

static void model_init(struct model *md, const struct san_ram_range *ram, size_t nr, bool nolow)
{
    *md = (struct model){.ram = ram, .nr = nr, .nolowmem = nolow};
    md->first = calloc(nr, sizeof(*md->first));
    assert_non_null(md->first);
    for (size_t i = 0; i < nr; i++) {
        md->first[i] = md->pages;
        md->pages += ram[i].size / PAGE;
    }
    md->state = calloc(md->pages, 1);
    md->run = calloc(md->pages + 1, sizeof(*md->run));
    assert_non_null(md->state);
    assert_non_null(md->run);
    if (ram[0].base == 0)
        md->state[0] = FIRMWARE; /* physical address 0 is never handed out */
    model_free_runs(md, &md->free_bytes, &md->low_free_bytes);
}

static void model_destroy(struct model *md)
{
    free(md->first);
    free(md->state);
    free(md->run);
}

static san_paddr_t page_pa(const struct model *md, size_t r, uint64_t i)
{
    return md->ram[r].base + (i - md->first[r]) * PAGE;
}

/* Page index of pa, which lies in range r. */
static uint64_t page_index(const struct model *md, size_t r, san_paddr_t pa)
{
    return md->first[r] + (pa - md->ram[r].base) / PAGE;
}

static void model_mark(struct model *md, san_paddr_t pa, uint64_t len, uint8_t to)
{
    for (size_t r = 0; r < md->nr; r++) {
        if (pa < md->ram[r].base || pa - md->ram[r].base >= md->ram[r].size)
            continue;
        uint64_t i = page_index(md, r, pa);
        assert_true(pa + len <= md->ram[r].base + md->ram[r].size);
        for (uint64_t k = 0; k < len / PAGE; k++) {
            assert_int_equal(md->state[i + k], to == USED ? FREE : USED);
            md->state[i + k] = to;
        }
        uint64_t low = pa >= G4 ? 0 : pa + len <= G4 ? len : G4 - pa;
        if (to == USED) {
            md->free_bytes -= len;
            md->low_free_bytes -= low;
        } else {
            md->free_bytes += len;
            md->low_free_bytes += low;
        }
        return;
    }
    fail_msg("address 0x%llx is not RAM", (unsigned long long)pa);
}

/* The highest placement of len bytes the rules allow, by brute force over every page: true and
 * *out, or false when none exists. */
static bool model_place(struct model *md, uint64_t len, san_paddr_t lowest, san_paddr_t highest,
                        uint64_t boundary, san_paddr_t *out)
{
    uint64_t npages = len / PAGE;
    for (size_t r = md->nr; r-- > 0;) {
        uint64_t end = md->first[r] + md->ram[r].size / PAGE;
        md->run[end] = 0;
        for (uint64_t i = end; i-- > md->first[r];)
            md->run[i] = md->state[i] == FREE ? md->run[i + 1] + 1 : 0;
        for (uint64_t i = end; i-- > md->first[r];) {
            if (md->run[i] < npages)
                continue;
            san_paddr_t a = page_pa(md, r, i), last = a + len - 1;
            if (a < lowest || last > highest)
                continue;
            if (boundary && a / boundary != last / boundary)
                continue;
            if (md->nolowmem && highest >= G4 && a < G4)
                continue;
            *out = a;
            return true;
        }
    }
    return false;
}

/* Maximal free runs: what the allocator's free extents must be after coalescing. */
static uint64_t model_free_runs(const struct model *md, uint64_t *free_bytes, uint64_t *low_free)
{
    uint64_t runs = 0;
    *free_bytes = *low_free = 0;
    for (size_t r = 0; r < md->nr; r++) {
        uint64_t end = md->first[r] + md->ram[r].size / PAGE;
        for (uint64_t i = md->first[r]; i < end; i++) {
            if (md->state[i] != FREE)
                continue;
            *free_bytes += PAGE;
            if (page_pa(md, r, i) < G4)
                *low_free += PAGE;
            if (i == md->first[r] || md->state[i - 1] != FREE)
                runs++;
        }
    }
    return runs;
}

/* The counters after every operation; the free extents against a recount of the pages (which
 * also recounts the bytes) when full is set. */
static void check_stats(struct san_machine *m, const struct model *md, bool full)
{
    struct san_machine_stats st;
    assert_int_equal(san_machine_stats(m, &st), 0);
    assert_int_equal(st.free_bytes, md->free_bytes);
    assert_int_equal(st.low_free_bytes, md->low_free_bytes);
    assert_int_equal(st.allocations, md->allocations);
    assert_int_equal(st.allocated_bytes, md->allocated_bytes);
    if (full) {
        uint64_t free_bytes, low_free;
        assert_int_equal(st.free_extents, model_free_runs(md, &free_bytes, &low_free));
        assert_int_equal(free_bytes, md->free_bytes);
        assert_int_equal(low_free, md->low_free_bytes);
    }
}

/* Interesting addresses for window ends: range edges, 4 GiB, their neighbours, anything. */
static san_paddr_t pick_addr(const struct model *md)
{
    size_t r = rnd() % md->nr;
    switch (rnd() % 8) {
    case 0:
        return 0;
    case 1:
        return UINT64_MAX;
    case 2:
        return G4 - 1 + rnd() % 3;
    case 3:
        return md->ram[r].base + (rnd() % 3) * PAGE - PAGE;
    case 4:
        return md->ram[r].base + md->ram[r].size - 1 + (rnd() % 3) - 1;
    default: {
        uint64_t span = md->ram[md->nr - 1].base + md->ram[md->nr - 1].size + MIB;
        return rnd() % span;
    }
    }
}

static void tag_write(const struct held *h)
{
    memcpy(h->va, &h->tag, sizeof(h->tag));
    memcpy((char *)h->va + h->bytes - sizeof(h->tag), &h->tag, sizeof(h->tag));
}

static void tag_check(const struct held *h)
{
    uint64_t a, b;
    memcpy(&a, h->va, sizeof(a));
    memcpy(&b, (char *)h->va + h->bytes - sizeof(b), sizeof(b));
    assert_int_equal(a, h->tag);
    assert_int_equal(b, h->tag);
}

/* A few request shapes that come back again and again, as a driver's do (the allocator keeps
 * a hint for a repeated request; the model checks that it still answers with the highest
 * placement). */
struct shape {
    size_t bytes;
    san_paddr_t lowest, highest;
    uint64_t boundary;
};
static struct shape shapes[4];

static void do_alloc(struct san_machine *m, struct model *md, struct held *held, size_t *n)
{
    if (rnd() % 2) {
        const struct shape *sh = &shapes[rnd() % 4];
        enum san_cache_type cache = (enum san_cache_type)(rnd() % 3);
        uint64_t len = (sh->bytes + PAGE - 1) / PAGE * PAGE;
        san_paddr_t want_pa = 0;
        bool fits = model_place(md, len, sh->lowest, sh->highest, sh->boundary, &want_pa);
        void *va = NULL;
        int err =
            san_alloc_contiguous(m, sh->bytes, sh->lowest, sh->highest, sh->boundary, cache, &va);
        assert_int_equal(err, fits ? 0 : -ENOMEM);
        if (err)
            return;
        san_paddr_t pa;
        assert_int_equal(san_get_physical_address(m, va, &pa), 0);
        assert_int_equal(pa, want_pa);
        model_mark(md, want_pa, len, USED);
        md->allocations++;
        md->allocated_bytes += len;
        /* Now and then a driver's recycling: free it and ask again at once (the allocator may
         * take the freed record back; the answer must still be the model's). */
        for (int again = rnd() % 4 == 0 ? 1 + (int)(rnd() % 3) : 0; again > 0; again--) {
            assert_int_equal(san_free_contiguous(m, va, sh->bytes, cache), 0);
            model_mark(md, want_pa, len, FREE);
            md->allocations--;
            md->allocated_bytes -= len;
            check_stats(m, md, true);
            assert_true(model_place(md, len, sh->lowest, sh->highest, sh->boundary, &want_pa));
            assert_int_equal(san_alloc_contiguous(m, sh->bytes, sh->lowest, sh->highest,
                                                  sh->boundary, cache, &va),
                             0);
            assert_int_equal(san_get_physical_address(m, va, &pa), 0);
            assert_int_equal(pa, want_pa);
            model_mark(md, want_pa, len, USED);
            md->allocations++;
            md->allocated_bytes += len;
        }
        if (*n == MAX_HELD) {
            assert_int_equal(san_free_contiguous(m, va, sh->bytes, cache), 0);
            model_mark(md, want_pa, len, FREE);
            md->allocations--;
            md->allocated_bytes -= len;
            return;
        }
        struct held *h = &held[(*n)++];
        *h = (struct held){va, want_pa, sh->bytes, len, cache, rnd()};
        tag_write(h);
        return;
    }
    uint64_t pages = rnd() % 4 ? 1 + rnd() % 16 : 1 + rnd() % 512;
    size_t bytes = (size_t)(pages * PAGE - (rnd() % 2 ? rnd() % PAGE : 0));
    if (bytes < 2 * sizeof(uint64_t))
        bytes = 2 * sizeof(uint64_t); /* room for both tags */
    uint64_t len = (bytes + PAGE - 1) / PAGE * PAGE;
    san_paddr_t lowest = 0, highest = UINT64_MAX;
    switch (rnd() % 4) {
    case 0:
        break;
    case 1:
        highest = pick_addr(md);
        break;
    case 2:
        lowest = pick_addr(md);
        break;
    default:
        lowest = pick_addr(md);
        highest = pick_addr(md);
        if (lowest > highest && rnd() % 8) {
            san_paddr_t t = lowest;
            lowest = highest;
            highest = t;
        }
    }
    uint64_t boundary = 0;
    if (rnd() % 3 == 0)
        boundary = rnd() % 16 ? UINT64_C(1) << (10 + rnd() % 14) : PAGE * (3 + rnd() % 5);
    enum san_cache_type cache = (enum san_cache_type)(rnd() % 64 ? rnd() % 3 : 3);

    int want;
    san_paddr_t want_pa = 0;
    if (lowest > highest || cache > SAN_WRITECOMBINED ||
        (boundary && ((boundary & (boundary - 1)) || len > boundary)))
        want = -EINVAL;
    else
        want = model_place(md, len, lowest, highest, boundary, &want_pa) ? 0 : -ENOMEM;

    struct san_machine_stats before;
    assert_int_equal(san_machine_stats(m, &before), 0);
    void *va = NULL;
    int err = san_alloc_contiguous(m, bytes, lowest, highest, boundary, cache, &va);
    assert_int_equal(err, want);
    if (err) {
        struct san_machine_stats after;
        assert_int_equal(san_machine_stats(m, &after), 0);
        assert_memory_equal(&after, &before, sizeof(after));
        return;
    }
    san_paddr_t pa;
    assert_int_equal(san_get_physical_address(m, va, &pa), 0);
    assert_int_equal(pa, want_pa);
    assert_int_equal(san_get_physical_address(m, (char *)va + len - 1, &pa), 0);
    assert_int_equal(pa, want_pa + len - 1);
    model_mark(md, want_pa, len, USED);
    md->allocations++;
    md->allocated_bytes += len;
    if (*n == MAX_HELD) { /* keep the held list bounded: drop the oldest from our side too */
        struct held *h = &held[0];
        tag_check(h);
        assert_int_equal(san_free_contiguous(m, h->va, h->bytes, h->cache), 0);
        model_mark(md, h->pa, h->len, FREE);
        md->allocations--;
        md->allocated_bytes -= h->len;
        held[0] = held[--*n];
    }
    struct held *h = &held[(*n)++];
    *h = (struct held){va, want_pa, bytes, len, cache, rnd()};
    tag_write(h);
}

static void do_free(struct san_machine *m, struct model *md, struct held *held, size_t *n)
{
    if (!*n)
        return;
    size_t i = rnd() % *n;
    struct held *h = &held[i];
    tag_check(h);

    if (rnd() % 4 == 0) {
        /* A bad free: wrong size, wrong cache type, interior pointer, or a stale pointer. */
        struct san_machine_stats before, after;
        assert_int_equal(san_machine_stats(m, &before), 0);
        int err;
        switch (rnd() % 4) {
        case 0:
            err = san_free_contiguous(m, h->va, h->len + PAGE * (1 + rnd() % 3), h->cache);
            break;
        case 1:
            err = san_free_contiguous(m, h->va, h->bytes,
                                      (enum san_cache_type)((h->cache + 1 + rnd() % 2) % 3));
            break;
        case 2:
            err = h->len > PAGE
                      ? san_free_contiguous(m, (char *)h->va + PAGE, h->bytes - PAGE, h->cache)
                      : san_free_contiguous(m, (char *)h->va + 1, h->bytes, h->cache);
            break;
        default:
            err = h->len > PAGE ? san_free_contiguous(m, h->va, h->len - PAGE, h->cache)
                                : san_free_contiguous(m, (char *)h->va + PAGE / 2, 1, h->cache);
            break;
        }
        assert_int_equal(err, -EINVAL);
        assert_int_equal(san_machine_stats(m, &after), 0);
        assert_memory_equal(&after, &before, sizeof(after));
        return;
    }
    assert_int_equal(san_free_contiguous(m, h->va, h->bytes, h->cache), 0);
    model_mark(md, h->pa, h->len, FREE);
    md->allocations--;
    md->allocated_bytes -= h->len;
    san_paddr_t pa;
    assert_int_equal(san_get_physical_address(m, h->va, &pa), -EFAULT);
    /* A double free is refused, unless those frames went to a new allocation meanwhile (they
     * cannot have: nothing ran in between). */
    assert_int_equal(san_free_contiguous(m, h->va, h->bytes, h->cache), -EINVAL);
    held[i] = held[--*n];
}

static void run_machine(const struct san_ram_range *ram, size_t nr, bool nolow, uint64_t seed)
{
    static struct held held[MAX_HELD];
    struct san_machine_config cfg = {.ram = ram, .nr_ram = nr, .nolowmem = nolow};
    struct san_machine *m;
    struct model md;
    size_t n = 0;

    rng = seed;
    for (int i = 0; i < 4; i++) {
        shapes[i] = (struct shape){(size_t)(1 + rnd() % 8) * PAGE, 0, UINT64_MAX, 0};
        if (i == 1)
            shapes[i].highest = G4 - 1;
        if (i == 2)
            shapes[i].boundary = 4 * shapes[i].bytes;
        if (i == 3) {
            shapes[i].lowest = ram[nr / 2].base;
            shapes[i].highest = ram[nr - 1].base + ram[nr - 1].size / 2;
        }
    }
    assert_int_equal(san_machine_create(&cfg, &m), 0);
    model_init(&md, ram, nr, nolow);
    check_stats(m, &md, true);
    struct san_machine_stats idle;
    assert_int_equal(san_machine_stats(m, &idle), 0);

    for (int op = 0; op < OPS_PER_MACHINE; op++) {
        /* Phases that fill the machine up and drain it, so both ends get exercised. */
        unsigned bias = (op / 3000) % 2 ? 35 : 65;
        if (rnd() % 100 < bias)
            do_alloc(m, &md, held, &n);
        else
            do_free(m, &md, held, &n);
        check_stats(m, &md, op % 16 == 0);
        if (nolow && op % 1000 == 0) {
            uint64_t dirty = 1;
            assert_int_equal(san_machine_check_lowmem(m, &dirty), 0);
            assert_int_equal(dirty, 0);
        }
    }
    while (n) {
        tag_check(&held[n - 1]);
        struct held *h = &held[--n];
        assert_int_equal(san_free_contiguous(m, h->va, h->bytes, h->cache), 0);
    }
    struct san_machine_stats end;
    assert_int_equal(san_machine_stats(m, &end), 0);
    assert_memory_equal(&end, &idle, sizeof(end));
    model_destroy(&md);
    san_machine_destroy(m);
}

/* Low memory only, with holes and RAM at address 0. */
static void test_holes(void **state)
{
    (void)state;
    static const struct san_ram_range ram[] = {
        {0, 256 * KIB}, {MIB, 2 * MIB}, {3 * MIB + PAGE, MIB - PAGE}, {8 * MIB, 3 * MIB}};
    run_machine(ram, 4, false, 0x1234567887654321u);
}

/* RAM on both sides of 4 GiB, NOLOWMEM. */
static void test_nolowmem(void **state)
{
    (void)state;
    static const struct san_ram_range ram[] = {
        {G4 - 6 * MIB, 2 * MIB}, {G4 - 3 * MIB, 2 * MIB}, {G4, 3 * MIB}, {6 * GIB, MIB}};
    run_machine(ram, 4, true, 0x0badc0ffee15600du);
}

/* The same map without NOLOWMEM: requests may then spill into low memory. */
static void test_both_zones(void **state)
{
    (void)state;
    static const struct san_ram_range ram[] = {
        {G4 - 6 * MIB, 2 * MIB}, {G4 - 3 * MIB, 2 * MIB}, {G4, 3 * MIB}, {6 * GIB, MIB}};
    run_machine(ram, 4, false, 0xfeedfacecafebeefu);
}

/* RAM straddling 4 GiB in one range: a run that is partly low, partly high. */
static void test_straddle(void **state)
{
    (void)state;
    static const struct san_ram_range ram[] = {{G4 - 4 * MIB, 8 * MIB}, {G4 + 9 * MIB, MIB}};
    run_machine(ram, 2, true, 0x5555aaaa5555aaaau);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_holes),
        cmocka_unit_test(test_nolowmem),
        cmocka_unit_test(test_both_zones),
        cmocka_unit_test(test_straddle),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
