/* Internals of DMA adapters, shared by adapter.c (description, map registers, common buffers),
 * sg.c (scatter-gather lists) and bus.c (the device's bus-master accesses).
 *
 * Map registers are bounce pages reserved when the adapter is created: runs of frames the adapter
 * reaches, each run one SAN_FRAMES_BOUNCE record (tag = the adapter). Register r is page
 * r - piece.first of the piece holding it. Which registers are in use is a bitmap of atomic words:
 * written under the adapter's mutex, read without it by device accesses (a bounce page is a valid
 * DMA target only while its register is in use).
 *
 * Locking: a->lock (a mutex) guards register allocation (free_regs and bitmap writes). Common
 * buffer bookkeeping (a->common) is guarded by m->lock held for writing, as the frames are.
 * Device accesses take m->lock for reading for the whole copy (phys/machine.h). a->lock and
 * m->lock are never held together. */
#ifndef SAN_DMA_DMA_H
#define SAN_DMA_DMA_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include <san/dma.h>

#include "mdl/mdl.h"
#include "phys/machine.h"

/* Map registers one adapter may hold at most (64 MiB of bounce pages): a description with a huge
 * max_length must not take all the memory its device reaches. Bounced transfers needing more
 * fail with -ENOMEM; direct transfers need none. */
#define SAN_DMA_MAX_MAP_REGISTERS 16384u

/* A run of map registers: physically contiguous bounce pages. */
struct san_bounce_piece {
    struct san_frames *f; /* f->r.start: physical address of register first */
    uint32_t first;       /* index of its first register */
    uint32_t nr;          /* registers (pages) in the run */
};

struct san_adapter {
    struct san_dma_adapter pub; /* what the driver holds */
    struct san_machine *m;
    uint32_t width;      /* address bits the device drives */
    uint64_t limit;      /* highest address it reaches: 2^width - 1 */
    bool scatter_gather; /* else every list has one element */
    uint32_t max_length; /* bytes per transfer */
    uint32_t nr_regs;    /* map registers granted */
    uint32_t max_run;    /* registers in the longest piece */
    uint32_t nr_pieces;  /* pieces, sorted by descending physical address */
    struct san_bounce_piece *pieces;
    _Atomic uint64_t *busy; /* bitmap of registers in use */

    struct san_mutex lock;
    uint32_t free_regs;            /* a->lock */
    atomic_uint lists;             /* scatter-gather lists outstanding */
    uint64_t common;               /* common buffers outstanding; m->lock */
    struct san_adapter *leak_next; /* put while in use: kept on a list, never freed */
};

static inline struct san_adapter *san_adapter_of(struct san_dma_adapter *a)
{
    return san_container_of(a, struct san_adapter, pub);
}

/* A run of registers an SG list holds. */
struct san_reg_run {
    uint32_t first, nr;
};

/* One bounce copy of an SG list: bytes [off, off+len) of the MDL's page-aligned range, mirrored
 * in the bounce pages at host. */
struct san_bounce_copy {
    uint64_t off;
    uint8_t *host;
    size_t len;
};

/* What an SG list carries besides the elements the driver sees. One allocation: this header,
 * the elements, then the runs and the copies. */
struct san_sg_priv {
    struct san_adapter *a;
    struct san_mdl *mdl;
    bool to_device;
    uint32_t nr_regs; /* registers held, in runs */
    uint32_t nr_runs;
    uint32_t nr_copies;
    struct san_reg_run *runs;
    struct san_bounce_copy *copies;
    uint64_t bounce_bytes;  /* bytes the copies move */
    struct san_sg_list pub; /* must stay last: elem[] follows */
};

/* Map register allocation (adapter.c). Takes a->lock. contiguous: one run inside one piece.
 * Fills runs (room for n runs) and *nr_runs. 0, -EAGAIN (not enough free now) or -ENOMEM (more
 * than the adapter could ever give). */
int san_regs_get(struct san_adapter *a, uint32_t n, bool contiguous, struct san_reg_run *runs,
                 uint32_t *nr_runs);
void san_regs_put(struct san_adapter *a, const struct san_reg_run *runs, uint32_t nr_runs);
/* Physical address of register r. */
san_paddr_t san_reg_paddr(const struct san_adapter *a, uint32_t r);
/* True when every register backing [pa, pa+len) inside bounce record f is in use. No lock. */
bool san_bounce_busy(const struct san_frames *f, san_paddr_t pa, uint64_t len);

/* sg.c: the DMA_OPERATIONS entries. */
/* The host bytes of [off, off+len) of an MDL's page range (off from its page_va) when the device
 * reaches them directly: an allocated MDL (proxy memory, a contiguous allocation) whose frames lie
 * within the device's address width, so no map register is needed. NULL otherwise (a locked MDL's
 * pages are the owner's; memory beyond the reach is bounced): use a scatter-gather list. The
 * caller holds the MDL (a use of its registration), which keeps the frames allocated. */
void *san_dma_direct(struct san_dma_adapter *a, const struct san_mdl *mdl, uint64_t off,
                     uint64_t len);

int san_sg_get(struct san_dma_adapter *a, struct san_mdl *mdl, size_t offset, size_t len,
               bool to_device, struct san_sg_list **out);
void san_sg_put(struct san_dma_adapter *a, struct san_sg_list *sg, bool to_device);

#endif
