/* san_alloc_contiguous / san_free_contiguous: MmAllocateContiguousMemorySpecifyCache and
 * MmFreeContiguousMemorySpecifyCache on the emulated machine. Sits on the frame allocator
 * (frames.c); takes m->lock for writing around each call (san_phys_wrlock: not in a process
 * with one thread). */
#include "phys/machine.h"

#include <errno.h>

#include "common/page.h"

static bool cache_type_ok(enum san_cache_type c)
{
    return c == SAN_NONCACHED || c == SAN_CACHED || c == SAN_WRITECOMBINED;
}

int san_alloc_contiguous(struct san_machine *m, size_t bytes, san_paddr_t lowest,
                         san_paddr_t highest, san_paddr_t boundary, enum san_cache_type cache,
                         void **va)
{
    struct san_frames *f;
    int err = 0;

    if (!m || !va || !bytes || bytes > UINT64_MAX - PAGE || lowest > highest ||
        !cache_type_ok(cache))
        return -EINVAL;
    uint64_t len = ((uint64_t)bytes + PAGE - 1) & ~(PAGE - 1);
    if (boundary && ((boundary & (boundary - 1)) || len > boundary))
        return -EINVAL;

    bool locked = san_phys_wrlock(m);
    f = san_phys_alloc_locked(m, len, lowest, highest, boundary, SAN_FRAMES_CONTIG, &err);
    if (f) {
        f->cache = (uint8_t)cache;
        san_phys_set_asked(f, bytes);
    }
    san_phys_unlock(m, locked);
    if (!f)
        return err;
    *va = san_phys_to_host(m, f->r.start);
    return 0;
}

int san_free_contiguous(struct san_machine *m, void *va, size_t bytes, enum san_cache_type cache)
{
    san_paddr_t pa;
    int err = -EINVAL;

    if (!m || !va || !bytes || bytes > UINT64_MAX - PAGE || san_phys_from_host(m, va, &pa))
        return -EINVAL;
    uint64_t len = ((uint64_t)bytes + PAGE - 1) & ~(PAGE - 1);

    bool locked = san_phys_wrlock(m);
    struct san_frames *f = san_phys_frames_at(m, pa);
    if (f && f->kind == SAN_FRAMES_CONTIG && f->r.start == pa && f->r.len == len &&
        san_phys_is_asked(f, bytes) && f->cache == (uint8_t)cache) {
        san_phys_free_locked(m, f);
        err = 0;
    }
    san_phys_unlock(m, locked);
    return err;
}
