/* DMA adapters: IoGetDmaAdapter (the DEVICE_DESCRIPTION rules), map registers, common buffers
 * (AllocateCommonBuffer / FreeCommonBuffer) and PutDmaAdapter.
 *
 * Sits on the frame allocator of phys: map registers are SAN_FRAMES_BOUNCE records reserved at
 * creation below the adapter's reach (low memory for a 32-bit device, highest first; contiguous
 * when possible, else in pieces), common buffers are SAN_FRAMES_COMMON records.
 * Locking: see dma.h. Frame allocation and release take m->lock for writing; register allocation
 * takes a->lock only. */
#include "dma/dma.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/page.h"
#include "common/search.h"

static pthread_mutex_t leak_lock = PTHREAD_MUTEX_INITIALIZER;
static struct san_adapter *leaked; /* adapters put while still in use: reachable, never freed */

static const struct san_dma_ops adapter_ops;

/* ---- map registers ---- */

static uint64_t piece_first(const void *pieces, size_t i)
{
    return ((const struct san_bounce_piece *)pieces)[i].first;
}

/* Pieces are sorted by descending address: searched by the complement. */
static uint64_t piece_start_desc(const void *pieces, size_t i)
{
    return ~((const struct san_bounce_piece *)pieces)[i].f->r.start;
}

san_paddr_t san_reg_paddr(const struct san_adapter *a, uint32_t r)
{
    /* Pieces are in register order: the last one whose first register is <= r. */
    const struct san_bounce_piece *p =
        &a->pieces[san_search_last(a->pieces, a->nr_pieces, piece_first, r)];
    return p->f->r.start + (uint64_t)(r - p->first) * PAGE;
}

static bool reg_busy(const struct san_adapter *a, uint32_t r)
{
    return atomic_load_explicit(&a->busy[r / 64], memory_order_acquire) >> (r % 64) & 1;
}

/* Marks registers [first, first+n) busy or free. a->lock held. */
static void mark_locked(struct san_adapter *a, uint32_t first, uint32_t n, bool busy)
{
    san_assert_mutex_held(&a->lock);
    for (uint32_t r = first; r < first + n;) {
        uint32_t w = r / 64, b = r % 64, k = 64 - b < first + n - r ? 64 - b : first + n - r;
        uint64_t mask = (k == 64 ? ~UINT64_C(0) : ((UINT64_C(1) << k) - 1)) << b;
        if (busy)
            atomic_fetch_or_explicit(&a->busy[w], mask, memory_order_release);
        else
            atomic_fetch_and_explicit(&a->busy[w], ~mask, memory_order_release);
        r += k;
    }
}

/* Length of the run of free registers at r, not past end. a->lock held. Whole free words are
 * skipped 64 at a time. */
static uint32_t free_run(const struct san_adapter *a, uint32_t r, uint32_t end)
{
    uint32_t s = r;
    while (r < end) {
        if (r % 64 == 0 && end - r >= 64 &&
            atomic_load_explicit(&a->busy[r / 64], memory_order_relaxed) == 0) {
            r += 64;
            continue;
        }
        if (reg_busy(a, r))
            break;
        r++;
    }
    return r - s;
}

/* Skips busy registers from r: the next register at or after r that is free, or end. */
static uint32_t skip_busy(const struct san_adapter *a, uint32_t r, uint32_t end)
{
    while (r < end) {
        if (r % 64 == 0 && end - r >= 64 &&
            atomic_load_explicit(&a->busy[r / 64], memory_order_relaxed) == ~UINT64_C(0)) {
            r += 64;
            continue;
        }
        if (!reg_busy(a, r))
            break;
        r++;
    }
    return r;
}

int san_regs_get(struct san_adapter *a, uint32_t n, bool contiguous, struct san_reg_run *runs,
                 uint32_t *nr_runs)
{
    uint32_t got = 0, k = 0;

    if (n > (contiguous ? a->max_run : a->nr_regs))
        return -ENOMEM; /* could never be satisfied: not a transient shortage */
    san_mutex_lock(&a->lock);
    if (a->free_regs < n) {
        san_mutex_unlock(&a->lock);
        return -EAGAIN;
    }
    for (uint32_t i = 0; i < a->nr_pieces && got < n; i++) {
        const struct san_bounce_piece *p = &a->pieces[i];
        uint32_t end = p->first + p->nr;
        for (uint32_t r = p->first; r < end && got < n;) {
            uint32_t len = free_run(a, r, end);
            if (!len) {
                r = skip_busy(a, r, end);
                continue;
            }
            if (contiguous) {
                if (len >= n) {
                    runs[0] = (struct san_reg_run){r, n};
                    k = 1;
                    got = n;
                }
            } else {
                uint32_t take = len < n - got ? len : n - got;
                runs[k++] = (struct san_reg_run){r, take};
                got += take;
            }
            r += len;
        }
    }
    if (got < n) { /* fragmented: enough free registers, but no run long enough */
        san_mutex_unlock(&a->lock);
        return -EAGAIN;
    }
    for (uint32_t i = 0; i < k; i++)
        mark_locked(a, runs[i].first, runs[i].nr, true);
    a->free_regs -= n;
    san_mutex_unlock(&a->lock);
    atomic_fetch_add(&a->m->map_registers_in_use, n);
    *nr_runs = k;
    return 0;
}

void san_regs_put(struct san_adapter *a, const struct san_reg_run *runs, uint32_t nr_runs)
{
    uint32_t n = 0;
    san_mutex_lock(&a->lock);
    for (uint32_t i = 0; i < nr_runs; i++) {
        mark_locked(a, runs[i].first, runs[i].nr, false);
        n += runs[i].nr;
    }
    a->free_regs += n;
    san_mutex_unlock(&a->lock);
    atomic_fetch_sub(&a->m->map_registers_in_use, n);
}

bool san_bounce_busy(const struct san_frames *f, san_paddr_t pa, uint64_t len)
{
    const struct san_adapter *a = f->tag;
    /* The last piece (descending addresses) whose start is >= f's. */
    const struct san_bounce_piece *p =
        &a->pieces[san_search_last(a->pieces, a->nr_pieces, piece_start_desc, ~f->r.start)];
    if (p->f != f)
        return false;
    uint32_t first = p->first + (uint32_t)((pa - f->r.start) / PAGE);
    uint32_t last = p->first + (uint32_t)((pa + len - 1 - f->r.start) / PAGE);
    for (uint32_t r = first; r <= last; r++)
        if (!reg_busy(a, r))
            return false;
    return true;
}

/* ---- adapter ---- */

/* Reserves up to want registers below a->limit: one contiguous run when possible (a device
 * without scatter-gather needs contiguous registers), else the highest free runs. m->lock held. */
static int reserve_regs_locked(struct san_adapter *a, uint32_t want)
{
    struct san_machine *m = a->m;
    int err = 0;

    san_assert_machine_locked(m);
    a->pieces = calloc(want ? want : 1, sizeof(*a->pieces));
    a->busy = calloc((want + 63) / 64 + 1, sizeof(*a->busy));
    if (!a->pieces || !a->busy)
        return -ENOMEM;
    if (!want)
        return 0;
    struct san_frames *f =
        san_phys_alloc_locked(m, (uint64_t)want * PAGE, 0, a->limit, 0, SAN_FRAMES_BOUNCE, &err);
    while (f || a->nr_regs < want) {
        if (!f) {
            f = san_phys_alloc_piece_locked(m, (uint64_t)(want - a->nr_regs) * PAGE, 0, a->limit,
                                            SAN_FRAMES_BOUNCE);
            if (!f)
                break; /* granted fewer */
        }
        f->tag = a;
        uint32_t n = (uint32_t)(f->r.len / PAGE);
        a->pieces[a->nr_pieces++] = (struct san_bounce_piece){f, a->nr_regs, n};
        a->nr_regs += n;
        if (n > a->max_run)
            a->max_run = n;
        f = NULL;
    }
    a->free_regs = a->nr_regs;
    return 0;
}

static void release_regs(struct san_adapter *a)
{
    if (a->nr_pieces) {
        san_machine_write_lock(a->m);
        for (uint32_t i = 0; i < a->nr_pieces; i++)
            san_phys_free_locked(a->m, a->pieces[i].f);
        san_machine_write_unlock(a->m);
    }
    free(a->pieces);
    free(a->busy);
}

int san_get_dma_adapter(struct san_machine *m, const struct san_device_description *desc,
                        uint32_t *nr_map_registers, struct san_dma_adapter **out)
{
    struct san_adapter *a;
    uint32_t width;
    int err;

    if (!out)
        return -EINVAL;
    *out = NULL;
    if (!m || !desc || desc->version > 3)
        return -EINVAL;
    if (desc->version == 3) {
        if (desc->dma_address_width < 1 || desc->dma_address_width > 64)
            return -EINVAL;
        width = desc->dma_address_width;
    } else {
        width = desc->dma64 ? 64 : 32; /* dma64 wins over dma32; neither is a 32-bit master */
    }
    /* The pages max_length can span, plus one for an unaligned start (max_length 0: one map
     * register, and no list can be mapped; common buffers and bus accesses still work). */
    uint32_t needed = (uint32_t)(((uint64_t)desc->max_length + PAGE - 1) / PAGE) + 1;
    if (needed > SAN_DMA_MAX_MAP_REGISTERS)
        needed = SAN_DMA_MAX_MAP_REGISTERS;
    uint32_t want = nr_map_registers && *nr_map_registers && *nr_map_registers < needed
                        ? *nr_map_registers
                        : needed;

    a = calloc(1, sizeof(*a));
    if (!a)
        return -ENOMEM;
    a->pub.version = desc->version;
    a->pub.ops = &adapter_ops;
    a->m = m;
    a->width = width;
    a->limit = width == 64 ? UINT64_MAX : (UINT64_C(1) << width) - 1;
    a->scatter_gather = desc->scatter_gather;
    a->max_length = desc->max_length;
    if ((err = san_mutex_init(&a->lock)))
        goto fail_alloc;
    san_machine_write_lock(m);
    err = reserve_regs_locked(a, want);
    san_machine_write_unlock(m);
    if (err)
        goto fail_regs;
    if (nr_map_registers)
        *nr_map_registers = a->nr_regs;
    *out = &a->pub;
    return 0;

fail_regs:
    release_regs(a);
    san_mutex_destroy(&a->lock);
fail_alloc:
    free(a);
    return err;
}

static void put_dma_adapter(struct san_dma_adapter *pub)
{
    if (!pub)
        return;
    struct san_adapter *a = san_adapter_of(pub);
    struct san_machine *m = a->m;

    pthread_rwlock_rdlock(&m->lock);
    uint64_t common = a->common;
    pthread_rwlock_unlock(&m->lock);
    unsigned lists = atomic_load(&a->lists);
    if (common || lists) {
        /* The device may still use them: keep every frame and the adapter itself. */
        fprintf(stderr,
                "sanproxy: put_dma_adapter: %llu common buffer(s) and %u scatter-gather list(s) "
                "outstanding; leaking the adapter and its memory\n",
                (unsigned long long)common, lists);
        pthread_mutex_lock(&leak_lock);
        a->leak_next = leaked;
        leaked = a;
        pthread_mutex_unlock(&leak_lock);
        return;
    }
    release_regs(a);
    san_mutex_destroy(&a->lock);
    free(a);
}

/* ---- common buffers ---- */

static int allocate_common_buffer(struct san_dma_adapter *pub, uint32_t len, san_laddr_t *logical,
                                  bool cache_enabled, void **va)
{
    if (!pub || !logical || !va || !len)
        return -EINVAL;
    struct san_adapter *a = san_adapter_of(pub);
    struct san_machine *m = a->m;
    uint64_t bytes = ((uint64_t)len + PAGE - 1) & ~(PAGE - 1);
    int err = 0;

    san_machine_write_lock(m);
    struct san_frames *f = san_phys_alloc_locked(m, bytes, 0, a->limit, 0, SAN_FRAMES_COMMON, &err);
    if (f) {
        f->tag = a;
        f->cache = (uint8_t)(cache_enabled ? SAN_CACHED : SAN_NONCACHED);
        f->access = SAN_MEM_READWRITE;
        san_phys_set_asked(f, len);
        a->common++;
    }
    san_machine_write_unlock(m);
    if (!f)
        return err;
    *logical = f->r.start; /* no IOMMU: logical == physical */
    *va = san_phys_to_host(m, f->r.start);
    return 0;
}

static int free_common_buffer(struct san_dma_adapter *pub, uint32_t len, san_laddr_t logical,
                              void *va, bool cache_enabled)
{
    if (!pub || !len)
        return -EINVAL;
    struct san_adapter *a = san_adapter_of(pub);
    struct san_machine *m = a->m;
    uint64_t bytes = ((uint64_t)len + PAGE - 1) & ~(PAGE - 1);
    int err = -EINVAL;

    san_machine_write_lock(m);
    struct san_frames *f = san_phys_frames_at(m, logical);
    if (f && f->kind == SAN_FRAMES_COMMON && f->tag == a && f->r.start == logical &&
        f->r.len == bytes && san_phys_is_asked(f, len) &&
        f->cache == (cache_enabled ? SAN_CACHED : SAN_NONCACHED) &&
        san_phys_to_host(m, logical) == va) {
        san_phys_free_locked(m, f);
        a->common--;
        err = 0;
    }
    san_machine_write_unlock(m);
    return err;
}

static const struct san_dma_ops adapter_ops = {
    .put_dma_adapter = put_dma_adapter,
    .allocate_common_buffer = allocate_common_buffer,
    .free_common_buffer = free_common_buffer,
    .get_scatter_gather_list = san_sg_get,
    .put_scatter_gather_list = san_sg_put,
};
