/* libFuzzer target: the emulated machine and the contiguous allocator under operation sequences.
 *
 * The input decodes to a small RAM map (up to four ranges of up to 64 pages, below or above
 * 4 GiB, possibly overlapping or touching), a NOLOWMEM flag, then operations: allocate with
 * decoded bytes, window, boundary and cache type; free (correctly or wrongly); free and ask
 * again at once with the same request (a driver's recycling); the pattern check; statistics. A page
 * map of the RAM shadows the allocator, which must:
 * - accept exactly the maps without overlap;
 * - return -EINVAL exactly for bad requests, and for a good one the highest placement the rules
 *   allow (window, boundary, one run of RAM, NOLOWMEM), or -ENOMEM exactly when there is none;
 * - refuse every bad free with -EINVAL; change nothing on any failure;
 * - keep free bytes, low free bytes, allocations and allocated bytes equal to the shadow's, the
 *   bytes of every allocation intact until it is freed, and free low memory clean.
 * Any violation aborts. */
#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <san/san.h>

#include "common/page.h"

#define G4         (UINT64_C(1) << 32)
#define MAX_RANGES 4
#define MAX_PAGES  64
#define MAX_HELD   64

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "fuzz_phys: %s:%d: %s\n", __FILE__, __LINE__, #cond);                  \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

struct input {
    const uint8_t *p;
    size_t left;
};

static uint8_t byte(struct input *in)
{
    if (!in->left)
        return 0;
    in->left--;
    return *in->p++;
}

struct shadow {
    struct san_ram_range ram[MAX_RANGES]; /* sorted by base */
    size_t nr;
    bool nolowmem;
    uint8_t used[MAX_RANGES][MAX_RANGES * MAX_PAGES]; /* per merged run */
    uint64_t free_bytes, low_free_bytes, allocations, allocated_bytes;
};

struct held {
    uint64_t *va;
    san_paddr_t pa;
    size_t bytes;
    uint64_t len;
    enum san_cache_type cache;
    uint64_t tag;
    san_paddr_t lo, hi; /* the request, for asking again */
    uint64_t boundary;
};

static uint64_t low_part(san_paddr_t pa, uint64_t len)
{
    return pa >= G4 ? 0 : pa + len <= G4 ? len : G4 - pa;
}

/* Decodes an address near the map: an edge of a range, 4 GiB, 0, the top, or anything. */
static san_paddr_t addr(struct input *in, const struct shadow *s)
{
    uint8_t b = byte(in), r = byte(in) % s->nr;
    switch (b % 6) {
    case 0:
        return 0;
    case 1:
        return UINT64_MAX;
    case 2:
        return G4 - 1 + (b >> 3) % 3;
    case 3:
        return s->ram[r].base + (uint64_t)(b >> 3) * PAGE / 4;
    case 4:
        return s->ram[r].base + s->ram[r].size - 1 - (uint64_t)(b >> 3) * PAGE / 4;
    default:
        return (uint64_t)b << 24 | (uint64_t)r << 12;
    }
}

static bool place(struct shadow *s, uint64_t len, san_paddr_t lo, san_paddr_t hi, uint64_t boundary,
                  san_paddr_t *out)
{
    for (size_t r = s->nr; r-- > 0;) {
        uint64_t pages = s->ram[r].size / PAGE;
        for (uint64_t i = pages; i-- > 0;) {
            san_paddr_t a = s->ram[r].base + i * PAGE, last = a + len - 1;
            if (a == 0 || i + len / PAGE > pages || a < lo || last > hi)
                continue;
            if (boundary && a / boundary != last / boundary)
                continue;
            if (s->nolowmem && hi >= G4 && a < G4)
                continue;
            bool free_run = true;
            for (uint64_t k = 0; k < len / PAGE && free_run; k++)
                free_run = !s->used[r][i + k];
            if (free_run) {
                *out = a;
                return true;
            }
        }
    }
    return false;
}

static void mark(struct shadow *s, san_paddr_t pa, uint64_t len, bool used)
{
    for (size_t r = 0; r < s->nr; r++) {
        if (pa < s->ram[r].base || pa - s->ram[r].base >= s->ram[r].size)
            continue;
        CHECK(pa + len <= s->ram[r].base + s->ram[r].size); /* never spans a hole */
        for (uint64_t k = 0; k < len / PAGE; k++) {
            uint8_t *u = &s->used[r][(pa - s->ram[r].base) / PAGE + k];
            CHECK(*u != used);
            *u = used;
        }
        uint64_t low = low_part(pa, len);
        if (used) {
            s->free_bytes -= len;
            s->low_free_bytes -= low;
            s->allocations++;
            s->allocated_bytes += len;
        } else {
            s->free_bytes += len;
            s->low_free_bytes += low;
            s->allocations--;
            s->allocated_bytes -= len;
        }
        return;
    }
    CHECK(!"allocation outside RAM");
}

static void check_stats(struct san_machine *m, const struct shadow *s)
{
    struct san_machine_stats st;
    CHECK(san_machine_stats(m, &st) == 0);
    CHECK(st.free_bytes == s->free_bytes);
    CHECK(st.low_free_bytes == s->low_free_bytes);
    CHECK(st.allocations == s->allocations);
    CHECK(st.allocated_bytes == s->allocated_bytes);
}

static bool same_stats(struct san_machine *m, const struct san_machine_stats *before)
{
    struct san_machine_stats now;
    CHECK(san_machine_stats(m, &now) == 0);
    return !memcmp(&now, before, sizeof(now));
}

static bool intact(const struct held *h)
{
    return h->va[0] == h->tag && h->va[h->len / 8 - 1] == ~h->tag;
}

static void op_alloc(struct input *in, struct san_machine *m, struct shadow *s, struct held *held,
                     size_t *n)
{
    uint8_t b = byte(in);
    size_t bytes = (size_t)((b & 0x3f) * PAGE / 2 + (b >> 6) * 100);
    san_paddr_t lo = 0, hi = UINT64_MAX;
    uint8_t w = byte(in);
    if (w & 1)
        lo = addr(in, s);
    if (w & 2)
        hi = addr(in, s);
    uint64_t boundary = 0;
    if (w & 4)
        boundary = w & 8 ? UINT64_C(1) << (10 + (w >> 4)) : (uint64_t)(w >> 4) * PAGE;
    enum san_cache_type cache = (enum san_cache_type)(byte(in) % 4);

    uint64_t len = (bytes + PAGE - 1) / PAGE * PAGE;
    int want;
    san_paddr_t want_pa = 0;
    if (!bytes || lo > hi || cache > SAN_WRITECOMBINED ||
        (boundary && ((boundary & (boundary - 1)) || len > boundary)))
        want = -EINVAL;
    else
        want = place(s, len, lo, hi, boundary, &want_pa) ? 0 : -ENOMEM;

    struct san_machine_stats before;
    CHECK(san_machine_stats(m, &before) == 0);
    void *va = NULL;
    int err = san_alloc_contiguous(m, bytes, lo, hi, boundary, cache, &va);
    CHECK(err == want);
    if (err) {
        CHECK(same_stats(m, &before));
        return;
    }
    san_paddr_t pa;
    CHECK(san_get_physical_address(m, va, &pa) == 0 && pa == want_pa);
    CHECK(san_get_physical_address(m, (char *)va + len - 1, &pa) == 0 && pa == want_pa + len - 1);
    mark(s, want_pa, len, true);
    if (*n == MAX_HELD) { /* no room to track it: give it back at once */
        CHECK(san_free_contiguous(m, va, bytes, cache) == 0);
        mark(s, want_pa, len, false);
        return;
    }
    struct held *h = &held[(*n)++];
    *h = (struct held){va, want_pa, bytes,   len, cache, want_pa * 0x9e3779b97f4a7c15u + 1,
                       lo, hi,      boundary};
    h->va[0] = h->tag;
    h->va[len / 8 - 1] = ~h->tag;
}

static void op_free(struct input *in, struct san_machine *m, struct shadow *s, struct held *held,
                    size_t *n)
{
    if (!*n)
        return;
    uint8_t b = byte(in);
    struct held *h = &held[b % *n];
    CHECK(intact(h));
    struct san_machine_stats before;
    CHECK(san_machine_stats(m, &before) == 0);
    int err;
    switch (b >> 5) {
    case 0:
        err = san_free_contiguous(m, h->va, h->len + PAGE, h->cache);
        break;
    case 1:
        err = san_free_contiguous(m, h->va, h->bytes, (enum san_cache_type)((h->cache + 1) % 4));
        break;
    case 2:
        err = san_free_contiguous(m, (char *)h->va + PAGE / 2, h->bytes, h->cache);
        break;
    case 3:
        err = h->len > PAGE ? san_free_contiguous(m, (char *)h->va + PAGE, h->len - PAGE, h->cache)
                            : san_free_contiguous(m, h->va, 0, h->cache);
        break;
    default:
        CHECK(san_free_contiguous(m, h->va, h->bytes, h->cache) == 0);
        mark(s, h->pa, h->len, false);
        CHECK(san_free_contiguous(m, h->va, h->bytes, h->cache) == -EINVAL); /* double free */
        *h = held[--*n];
        return;
    }
    CHECK(err == -EINVAL);
    CHECK(same_stats(m, &before));
}

/* A driver's recycling: frees a held allocation and asks again at once with the same request
 * (the allocator may take the freed record back); the answer must be the shadow's. */
static void op_again(struct input *in, struct san_machine *m, struct shadow *s, struct held *held,
                     size_t *n)
{
    if (!*n)
        return;
    struct held *h = &held[byte(in) % *n];
    CHECK(intact(h));
    CHECK(san_free_contiguous(m, h->va, h->bytes, h->cache) == 0);
    mark(s, h->pa, h->len, false);
    check_stats(m, s);
    san_paddr_t want_pa = 0, pa;
    CHECK(place(s, h->len, h->lo, h->hi, h->boundary, &want_pa)); /* its own frames fit */
    void *va = NULL;
    CHECK(san_alloc_contiguous(m, h->bytes, h->lo, h->hi, h->boundary, h->cache, &va) == 0);
    CHECK(san_get_physical_address(m, va, &pa) == 0 && pa == want_pa);
    mark(s, want_pa, h->len, true);
    h->va = va;
    h->pa = want_pa;
    h->tag = want_pa * 0x9e3779b97f4a7c15u + 1;
    h->va[0] = h->tag;
    h->va[h->len / 8 - 1] = ~h->tag;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct input in = {data, size};
    static struct shadow s;
    static struct held held[MAX_HELD];
    size_t n = 0;

    memset(&s, 0, sizeof(s));
    uint8_t head = byte(&in);
    s.nolowmem = head & 1;
    s.nr = 1 + (head >> 1) % MAX_RANGES;
    for (size_t i = 0; i < s.nr; i++) {
        uint8_t b0 = byte(&in), b1 = byte(&in), b2 = byte(&in);
        uint64_t base = ((uint64_t)b0 << 2 | (b1 & 3)) * PAGE * 16 + (uint64_t)(b1 >> 2) * PAGE;
        if (b2 & 0x80)
            base += G4 - 4 * 1024 * PAGE; /* near or across 4 GiB */
        s.ram[i] = (struct san_ram_range){base, (1 + (uint64_t)(b2 % MAX_PAGES)) * PAGE};
    }
    struct san_machine_config cfg = {.ram = s.ram, .nr_ram = s.nr, .nolowmem = s.nolowmem};
    struct san_machine *m = NULL;
    int err = san_machine_create(&cfg, &m);

    /* Valid exactly when no two ranges overlap (touching ranges merge into one run). */
    bool valid = true;
    for (size_t i = 0; i < s.nr; i++)
        for (size_t j = i + 1; j < s.nr; j++)
            if (s.ram[i].base < s.ram[j].base + s.ram[j].size &&
                s.ram[j].base < s.ram[i].base + s.ram[i].size)
                valid = false;
    CHECK(valid ? err == 0 : err == -EINVAL);
    if (err)
        return 0;

    /* The shadow works on sorted, merged runs, as the machine does. */
    for (size_t i = 1; i < s.nr; i++)
        for (size_t j = i; j > 0 && s.ram[j].base < s.ram[j - 1].base; j--) {
            struct san_ram_range t = s.ram[j];
            s.ram[j] = s.ram[j - 1];
            s.ram[j - 1] = t;
        }
    size_t runs = 0;
    for (size_t i = 0; i < s.nr; i++) {
        if (runs && s.ram[runs - 1].base + s.ram[runs - 1].size == s.ram[i].base)
            s.ram[runs - 1].size += s.ram[i].size;
        else
            s.ram[runs++] = s.ram[i];
    }
    s.nr = runs;
    for (size_t i = 0; i < s.nr; i++) {
        uint64_t usable =
            s.ram[i].size - (s.ram[i].base == 0 ? PAGE : 0); /* page 0 is never free */
        s.free_bytes += usable;
        s.low_free_bytes += low_part(s.ram[i].base ? s.ram[i].base : PAGE, usable);
    }
    check_stats(m, &s);

    while (in.left) {
        switch (byte(&in) % 8) {
        case 0:
        case 1:
        case 2:
            op_alloc(&in, m, &s, held, &n);
            break;
        case 3:
        case 4:
            op_free(&in, m, &s, held, &n);
            break;
        case 5: {
            uint64_t dirty = 1;
            err = san_machine_check_lowmem(m, &dirty);
            CHECK(s.nolowmem ? err == 0 && dirty == 0 : err == -EINVAL);
            break;
        }
        case 6:
            op_again(&in, m, &s, held, &n);
            break;
        default:
            for (size_t i = 0; i < n; i++)
                CHECK(intact(&held[i]));
            break;
        }
        check_stats(m, &s);
    }
    while (n) {
        struct held *h = &held[--n];
        CHECK(intact(h));
        CHECK(san_free_contiguous(m, h->va, h->bytes, h->cache) == 0);
        mark(&s, h->pa, h->len, false);
    }
    check_stats(m, &s);
    san_machine_destroy(m);
    return 0;
}
