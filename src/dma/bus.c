/* The emulated bus: a device's own bus-master accesses by logical address (san_dma_read,
 * san_dma_write).
 *
 * An access is checked in full before any byte moves: the whole range within the adapter's
 * address width, and every byte in a frame record a device may touch: allocated memory
 * (SAN_FRAMES_CONTIG, SAN_FRAMES_COMMON), locked pages (SAN_FRAMES_LOCKED; writes only with
 * SAN_MEM_WRITE) or map registers in use (SAN_FRAMES_BOUNCE). Anything else is what real hardware
 * would corrupt (a truncated address landing in free low memory, a freed buffer): -EFAULT and a
 * DMA fault counted. One tree lookup finds the first record; the others are its in-order
 * successors, so the cost is per record, never per page, and each record's bytes move in one copy:
 * to the RAM image for allocated memory and map registers, to the owner for locked pages (mdl's
 * san_owner_read/write: memcpy in this process, its /proc/PID/mem for a client, whose pages it
 * pinned itself, or process_vm_readv/writev where no such file is open).
 *
 * Locking: m->lock is held for reading across check and copy, so no frame is freed under a device
 * and devices do not serialise each other. Counters are atomic. */
#include "dma/dma.h"

#include <errno.h>
#include <string.h>

#include "mdl/mdl.h"
#include "mdl/owner.h"

/* May a device touch [pa, pa+n) of record f (n within f)? 0, -EFAULT or -EACCES. */
static int check_record(const struct san_frames *f, san_paddr_t pa, uint64_t n, bool write)
{
    switch (f->kind) {
    case SAN_FRAMES_CONTIG:
    case SAN_FRAMES_COMMON:
        return 0;
    case SAN_FRAMES_LOCKED:
        return !write || (f->access & SAN_MEM_WRITE) ? 0 : -EACCES;
    case SAN_FRAMES_BOUNCE:
        return san_bounce_busy(f, pa, n) ? 0 : -EFAULT;
    default:
        return -EFAULT;
    }
}

static int copy_record(struct san_machine *m, const struct san_frames *f, san_paddr_t pa,
                       uint8_t *buf, uint64_t n, bool write)
{
    if (f->kind == SAN_FRAMES_LOCKED) {
        uint64_t va = f->owner_va + (pa - f->r.start);
        return write ? san_owner_write(f->owner, va, buf, n) : san_owner_read(f->owner, va, buf, n);
    }
    uint8_t *host = san_phys_to_host(m, pa); /* a record never spans a hole */
    if (write)
        memcpy(host, buf, n);
    else
        memcpy(buf, host, n);
    return 0;
}

static int bus_access(struct san_dma_adapter *pub, san_laddr_t addr, uint8_t *buf, size_t len,
                      bool write)
{
    if (!pub || (!buf && len))
        return -EINVAL;
    if (!len)
        return 0;
    struct san_adapter *a = san_adapter_of(pub);
    struct san_machine *m = a->m;
    int err = 0;

    if (addr > a->limit || len - 1 > a->limit - addr) {
        err = -EFAULT; /* the device cannot drive these address lines */
        goto fault;
    }
    uint64_t last = addr + (len - 1);

    pthread_rwlock_rdlock(&m->lock);
    struct san_frames *first = san_phys_frames_at(m, addr), *f = first;
    for (san_paddr_t pa = addr;;) {
        if (!f || f->r.start > pa) {
            err = -EFAULT;
            break;
        }
        uint64_t f_last = san_range_end(&f->r) - 1;
        uint64_t n = (last < f_last ? last : f_last) - pa + 1;
        if ((err = check_record(f, pa, n, write)) || last <= f_last)
            break;
        pa = f_last + 1;
        struct san_range *next = san_range_next(&f->r);
        f = next ? san_container_of(next, struct san_frames, r) : NULL;
    }
    if (!err) {
        f = first;
        for (san_paddr_t pa = addr; !err;) {
            uint64_t f_last = san_range_end(&f->r) - 1;
            uint64_t n = (last < f_last ? last : f_last) - pa + 1;
            err = copy_record(m, f, pa, buf + (pa - addr), n, write);
            if (last <= f_last)
                break;
            pa = f_last + 1;
            f = san_container_of(san_range_next(&f->r), struct san_frames, r);
        }
    }
    pthread_rwlock_unlock(&m->lock);
    if (!err)
        return 0;
fault:
    atomic_fetch_add(&m->dma_faults, 1);
    return err;
}

void *san_dma_direct(struct san_dma_adapter *pub, const struct san_mdl *mdl, uint64_t off,
                     uint64_t len)
{
    if (!pub || !mdl || !mdl->allocated || !len || off > UINT64_MAX - len)
        return NULL;
    const struct san_adapter *a = san_adapter_of(pub);
    san_paddr_t pa = mdl->pieces[0].pa + off;
    if (off + len > (uint64_t)mdl->nr_pages * SAN_PAGE_SIZE || pa > a->limit ||
        len - 1 > a->limit - pa)
        return NULL;
    return san_phys_to_host(a->m, pa);
}

int san_dma_read(struct san_dma_adapter *a, san_laddr_t src, void *dst, size_t len)
{
    return bus_access(a, src, dst, len, false);
}

int san_dma_write(struct san_dma_adapter *a, san_laddr_t dst, const void *src, size_t len)
{
    return bus_access(a, dst, (uint8_t *)(uintptr_t)src, len, true);
}
