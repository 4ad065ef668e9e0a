/* The emulated machine: RAM map, the RAM image, statistics and the NOLOWMEM pattern check.
 * Sits on common/range (free extents, frame records) and one anonymous MAP_NORESERVE mapping.
 * Locking: see machine.h; this file takes m->lock for reading in stats, physical addresses and
 * the pattern check (the first two through san_phys_rdlock: not in a process with one thread). */
#include "phys/machine.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "common/page.h"
#include "common/search.h"

#define MIB (UINT64_C(1) << 20)
#define GIB (UINT64_C(1) << 30)

static int cmp_range(const void *a, const void *b)
{
    const struct san_ram_range *x = a, *y = b;
    return x->base < y->base ? -1 : x->base > y->base;
}

/* Builds the sorted, merged segment list from cfg; -EINVAL for a bad map. */
static int build_segments(struct san_machine *m, const struct san_machine_config *cfg)
{
    struct san_ram_range def[2], *r;
    size_t n;

    if (cfg && cfg->ram && cfg->nr_ram) {
        n = cfg->nr_ram;
        r = malloc(n * sizeof(*r));
        if (!r)
            return -ENOMEM;
        memcpy(r, cfg->ram, n * sizeof(*r));
    } else {
        if (cfg && (cfg->ram || cfg->nr_ram))
            return -EINVAL;
        /* Like an x86 host: RAM from 1 MiB to 3 GiB, a hole up to 4 GiB, the rest above. */
        uint64_t total = cfg && cfg->ram_size ? cfg->ram_size : 4 * GIB;
        if (total % PAGE)
            return -EINVAL;
        uint64_t low = 3 * GIB - MIB;
        def[0] = (struct san_ram_range){MIB, total < low ? total : low};
        def[1] = (struct san_ram_range){4 * GIB, total > low ? total - low : 0};
        n = def[1].size ? 2 : 1;
        r = malloc(n * sizeof(*r));
        if (!r)
            return -ENOMEM;
        memcpy(r, def, n * sizeof(*r));
    }

    qsort(r, n, sizeof(*r), cmp_range);
    m->seg = calloc(n, sizeof(*m->seg));
    if (!m->seg) {
        free(r);
        return -ENOMEM;
    }
    uint64_t off = 0;
    for (size_t i = 0; i < n; i++) {
        if (!r[i].size || r[i].base % PAGE || r[i].size % PAGE || r[i].base + r[i].size < r[i].base)
            goto bad;
        if (i && r[i].base < r[i - 1].base + r[i - 1].size)
            goto bad; /* overlap */
        if (m->nr_seg && m->seg[m->nr_seg - 1].base + m->seg[m->nr_seg - 1].size == r[i].base) {
            m->seg[m->nr_seg - 1].size += r[i].size; /* adjacent: one segment */
        } else {
            m->seg[m->nr_seg++] = (struct san_ram_seg){r[i].base, r[i].size, off};
        }
        off += r[i].size;
    }
    free(r);
    m->image_size = off;
    return 0;
bad:
    free(r);
    return -EINVAL;
}

int san_machine_create(const struct san_machine_config *cfg, struct san_machine **out)
{
    struct san_machine *m;
    int err;

    if (!out)
        return -EINVAL;
    *out = NULL;
    m = calloc(1, sizeof(*m));
    if (!m)
        return -ENOMEM;
    err = build_segments(m, cfg);
    if (err)
        goto fail_segs;
    m->nolowmem = cfg && cfg->nolowmem;
    m->image = mmap(NULL, m->image_size, PROT_READ | PROT_WRITE,
                    MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (m->image == MAP_FAILED) {
        err = -ENOMEM;
        goto fail_segs;
    }
    if ((err = -pthread_rwlock_init(&m->lock, NULL)))
        goto fail_map;
    san_range_tree_init_disjoint(&m->frames);
    san_pool_init(&m->pool, sizeof(struct san_frames));

    for (size_t i = 0; i < m->nr_seg; i++) {
        struct san_frames *f = san_pool_get(&m->pool);
        if (!f) {
            err = -ENOMEM;
            goto fail_pools;
        }
        *f = (struct san_frames){.kind = 0}; /* a free extent */
        struct san_range *e = &f->r;
        e->start = m->seg[i].base;
        e->len = m->seg[i].size;
        if (e->start == 0) {
            /* Page 0 stays firmware's: a physical address of 0 always means "none". */
            e->start += PAGE;
            e->len -= PAGE;
        }
        m->ram_bytes += m->seg[i].size;
        if (!e->len) {
            san_pool_put(&m->pool, f);
            continue;
        }
        m->free_bytes += e->len;
        m->low_free_bytes += san_low_part(e->start, e->len);
        m->free_extents++;
        san_range_insert(&m->frames, e);
    }
    *out = m;
    return 0;

fail_pools:
    san_pool_destroy(&m->pool);
    pthread_rwlock_destroy(&m->lock);
fail_map:
    munmap(m->image, m->image_size);
fail_segs:
    free(m->seg);
    free(m);
    return err;
}

void san_machine_destroy(struct san_machine *m)
{
    if (!m)
        return;
    munmap(m->image, m->image_size);
    san_pool_destroy(&m->pool);
    pthread_rwlock_destroy(&m->lock);
    free(m->index);
    free(m->seg);
    free(m);
}

int san_machine_stats(struct san_machine *m, struct san_machine_stats *out)
{
    if (!m || !out)
        return -EINVAL;
    bool locked = san_phys_rdlock(m);
    *out = (struct san_machine_stats){
        .ram_bytes = m->ram_bytes,
        .free_bytes = m->free_bytes,
        .low_free_bytes = m->low_free_bytes,
        .dma_faults = atomic_load(&m->dma_faults),
        .allocations = m->allocations,
        .allocated_bytes = m->allocated_bytes,
        .locked_bytes = m->locked_bytes,
        .bounce_bytes = atomic_load(&m->bounce_bytes),
        .map_registers_in_use = atomic_load(&m->map_registers_in_use),
        .free_extents = m->free_extents,
    };
    san_phys_unlock(m, locked);
    return 0;
}

static uint64_t seg_base(const void *seg, size_t i)
{
    return ((const struct san_ram_seg *)seg)[i].base;
}

static uint64_t seg_host_off(const void *seg, size_t i)
{
    return ((const struct san_ram_seg *)seg)[i].host_off;
}

const struct san_ram_seg *san_phys_seg(const struct san_machine *m, san_paddr_t pa)
{
    if (!m->nr_seg)
        return NULL;
    const struct san_ram_seg *s = &m->seg[san_search_last(m->seg, m->nr_seg, seg_base, pa)];
    return pa >= s->base && pa - s->base < s->size ? s : NULL;
}

void *san_phys_to_host(const struct san_machine *m, san_paddr_t pa)
{
    const struct san_ram_seg *s = san_phys_seg(m, pa);
    return s ? san_phys_host(m, s, pa) : NULL;
}

int san_phys_from_host(const struct san_machine *m, const void *va, san_paddr_t *pa)
{
    uintptr_t p = (uintptr_t)va, base = (uintptr_t)m->image;
    if (p < base || p - base >= m->image_size)
        return -EINVAL;
    uint64_t off = p - base;
    const struct san_ram_seg *s = &m->seg[san_search_last(m->seg, m->nr_seg, seg_host_off, off)];
    *pa = s->base + (off - s->host_off);
    return 0;
}

int san_get_physical_address(struct san_machine *m, const void *va, san_paddr_t *pa)
{
    san_paddr_t p;
    int err;

    if (!m || !pa)
        return -EINVAL;
    if ((err = san_phys_from_host(m, va, &p)))
        return err;
    bool locked = san_phys_rdlock(m);
    bool used = san_phys_frames_at(m, p) != NULL;
    san_phys_unlock(m, locked);
    if (!used)
        return -EFAULT;
    *pa = p;
    return 0;
}

static bool page_is_zero(const unsigned char *p)
{
    const uint64_t *w = (const uint64_t *)p;
    for (size_t i = 0; i < PAGE / sizeof(*w); i++)
        if (w[i])
            return false;
    return true;
}

/* Free low memory is scrubbed by dropping its pages (MADV_DONTNEED), so the pattern is "not
 * resident, or resident and all zero". mincore finds the resident pages; only those are read. */
int san_machine_check_lowmem(struct san_machine *m, uint64_t *dirty_frames)
{
    enum { CHUNK_PAGES = 16384 };
    unsigned char vec[CHUNK_PAGES];
    uint64_t dirty = 0;
    int err = 0;

    if (!m || !dirty_frames)
        return -EINVAL;
    if (!m->nolowmem)
        return -EINVAL; /* only a NOLOWMEM machine keeps free low memory scrubbed */
    pthread_rwlock_rdlock(&m->lock);
    for (struct san_range *e = san_range_first(&m->frames); e && e->start < SAN_4G;
         e = san_range_next(e)) {
        if (san_phys_is_record(san_container_of(e, struct san_frames, r)))
            continue;
        uint64_t len = san_low_part(e->start, e->len);
        unsigned char *host = san_phys_to_host(m, e->start);
        for (uint64_t done = 0; done < len; done += (uint64_t)CHUNK_PAGES * PAGE) {
            uint64_t n = (len - done) / PAGE;
            if (n > CHUNK_PAGES)
                n = CHUNK_PAGES;
            if (mincore(host + done, n * PAGE, vec)) {
                err = -errno;
                goto out;
            }
            for (uint64_t i = 0; i < n; i++)
                if ((vec[i] & 1) && !page_is_zero(host + done + i * PAGE))
                    dirty++;
        }
    }
    *dirty_frames = dirty;
out:
    pthread_rwlock_unlock(&m->lock);
    return err;
}
