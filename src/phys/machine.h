/* Internals of the emulated machine, shared by phys, mdl and dma.
 *
 * Memory: one MAP_NORESERVE anonymous image holds all RAM; segment i (a maximal run of RAM in the
 * map) lives at image + seg[i].host_off, linearly. Metadata: one range tree, m->frames, holds every
 * free extent (struct san_frames of kind 0) and every frame record (kind != 0, marked
 * SAN_RANGE_INERT so that the tree's max_len summary is the longest free extent below a node), in
 * address order. Free extents are never adjacent (freed neighbours coalesce) and never span a hole
 * (segments are never adjacent), so a record's neighbours in the tree are the extents it carves
 * from and coalesces with: allocating and freeing need no second search. Records are also indexed
 * by start address in a hash table (m->index), for the exact lookups of frees. Everything grows
 * with the number of extents and records, never with the number of frames.
 *
 * Locking: m->lock is a reader-writer lock. Allocation and release of frames take it for writing;
 * device accesses (dma) take it for reading for the whole copy, so a frame cannot be freed while a
 * device writes it and devices do not serialise each other. Counters that devices bump are atomic.
 * Functions ending in _locked expect the write lock held (debug builds check that the calling
 * thread took it: common/lockcheck.h); san_phys_frames_at needs either. The public allocation,
 * free, statistics and address calls take it through san_phys_wrlock and san_phys_rdlock, which
 * skip it while the process has one thread (and still count as holding it for the checks). */
#ifndef SAN_PHYS_MACHINE_H
#define SAN_PHYS_MACHINE_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <sys/single_threaded.h>
#include <sys/types.h>

#include <san/phys.h>

#include "common/lockcheck.h"
#include "common/pool.h"
#include "common/range.h"

#define SAN_4G (UINT64_C(1) << 32)

struct san_ram_seg {
    san_paddr_t base;
    uint64_t size;
    uint64_t host_off; /* offset of base in the image */
};

enum san_frames_kind {
    SAN_FRAMES_CONTIG = 1, /* san_alloc_contiguous */
    SAN_FRAMES_COMMON,     /* a DMA adapter's common buffer */
    SAN_FRAMES_LOCKED,     /* pages of a locked buffer; the bytes live in the owner's memory */
    SAN_FRAMES_BOUNCE,     /* map registers of a DMA adapter */
    SAN_FRAMES_FREED,      /* freed frames whose record still sits in the tree and the index: the
                            * deferred free (frames.c); free memory to everyone else */
};

/* Whose pages locked frames are (a process: mdl/owner.h). Opaque here. */
struct san_page_owner;

/* A frame record: a run of frames in use (kind 0: a free extent). Records are recycled: a new
 * field must also be cleared in reinit (frames.c). */
struct san_frames {
    struct san_range r;  /* physical range, whole pages */
    uint8_t kind;        /* enum san_frames_kind */
    uint8_t cache;       /* enum san_cache_type */
    uint8_t access;      /* SAN_MEM_* the device has; reads are always allowed */
    uint16_t last_bytes; /* CONTIG, COMMON: bytes asked for in the last page (1..4096) */
    void *tag;           /* who asked: the adapter (COMMON, BOUNCE), the MDL (LOCKED) */
    const struct san_page_owner *owner; /* LOCKED: whose pages */
    uint64_t owner_va;                  /* LOCKED: owner's address of r.start */
};

/* A slot of the record index; the start is kept here so that probing never touches a record. */
struct san_index_slot {
    san_paddr_t start;
    struct san_frames *f; /* NULL: empty */
};

struct san_machine {
    pthread_rwlock_t lock;
    struct san_lock_owner writer; /* who holds lock for writing (debug builds) */
    uint8_t *image;
    uint64_t image_size;
    struct san_ram_seg *seg;
    size_t nr_seg;
    bool nolowmem;

    struct san_tree frames; /* struct san_frames: free extents and frame records, by address */
    struct san_pool pool;   /* both kinds of struct san_frames */
    struct san_index_slot *index; /* frame records by start: open addressing, linear probing */
    unsigned index_shift;         /* 64 - log2(slots); slots = 0 until the first record */
    size_t index_count;

    struct san_frames *pending; /* a free extent whose shrink its ancestors do not know yet */
    /* The deferred free (frames.c): a freed CONTIG or COMMON record left in place, and the free
     * extents its frames would join (NULL: none on that side). */
    struct san_frames *freed;
    struct san_range *freed_prev, *freed_next;
    /* The record carved or taken back last, while the tree has not changed since, and the free
     * extents it would join (what neighbours() in frames.c would find): its free needs no walk. */
    struct san_frames *carved;
    struct san_range *carved_prev, *carved_next;
    /* The search hint (frames.c): the free extent the last full search found, and its request. */
    struct san_frames *hint;
    uint64_t hint_lo, hint_hi, hint_bytes, hint_boundary;

    uint64_t ram_bytes, free_bytes, low_free_bytes, free_extents;
    uint64_t allocations, allocated_bytes, locked_bytes;
    atomic_uint_fast64_t dma_faults, bounce_bytes, map_registers_in_use;
};

/* m->lock for writing (san_phys_wrlock) or reading (san_phys_rdlock), except in a process that
 * has a single thread: nothing can contend there (the one thread is inside this call, so it is
 * not creating another), and the lock would be a third of the cost of an allocation and its
 * free (glibc's malloc skips its arena lock the same way). Returns whether it took the lock,
 * for san_phys_unlock. The functions of phys, mdl and dma that take the lock unconditionally
 * (san_machine_write_lock) stay correct beside these: while the process has one thread they
 * never overlap with them. Either way the writer is recorded for the debug checks. */
static inline bool san_phys_wrlock(struct san_machine *m)
{
    bool take = !__libc_single_threaded;
    if (take)
        pthread_rwlock_wrlock(&m->lock);
    san_lock_acquired(&m->writer);
    return take;
}
static inline bool san_phys_rdlock(struct san_machine *m)
{
    if (__libc_single_threaded)
        return false;
    pthread_rwlock_rdlock(&m->lock);
    return true;
}
static inline void san_phys_unlock(struct san_machine *m, bool locked)
{
#ifndef NDEBUG
    if (san_lock_held(&m->writer)) /* a write lock of this thread (readers record nothing) */
        san_lock_released(&m->writer);
#endif
    if (locked)
        pthread_rwlock_unlock(&m->lock);
}

static inline void san_machine_write_lock(struct san_machine *m)
{
    pthread_rwlock_wrlock(&m->lock);
    san_lock_acquired(&m->writer);
}

static inline void san_machine_write_unlock(struct san_machine *m)
{
    san_lock_released(&m->writer);
    pthread_rwlock_unlock(&m->lock);
}

#define san_assert_machine_locked(m) san_assert_held(&(m)->writer)

/* CPU address of physical address pa, which must be RAM. */
static inline void *san_phys_host(const struct san_machine *m, const struct san_ram_seg *s,
                                  san_paddr_t pa)
{
    return m->image + s->host_off + (pa - s->base);
}
/* The segment holding pa, or NULL for a hole. O(log segments). */
const struct san_ram_seg *san_phys_seg(const struct san_machine *m, san_paddr_t pa);
/* CPU address of pa, or NULL when pa is not RAM. */
void *san_phys_to_host(const struct san_machine *m, san_paddr_t pa);
/* Physical address of a CPU address inside the image: 0 or -EINVAL. */
int san_phys_from_host(const struct san_machine *m, const void *va, san_paddr_t *pa);

/* Allocates bytes (whole pages) of contiguous frames in [lowest, highest] not crossing boundary,
 * highest first, NOLOWMEM applied; records them as kind. Returns the record or NULL with *err. */
struct san_frames *san_phys_alloc_locked(struct san_machine *m, uint64_t bytes, san_paddr_t lowest,
                                         san_paddr_t highest, uint64_t boundary,
                                         enum san_frames_kind kind, int *err);
/* Allocates the highest free run of at most bytes (whole pages) in [lowest, highest], NOLOWMEM
 * applied: the piecewise allocation locked pages use. NULL with -ENOMEM when nothing is free. */
struct san_frames *san_phys_alloc_piece_locked(struct san_machine *m, uint64_t bytes,
                                               san_paddr_t lowest, san_paddr_t highest,
                                               enum san_frames_kind kind);
/* Frees a frame record and its frames (scrubbing low frames on a NOLOWMEM machine). */
void san_phys_free_locked(struct san_machine *m, struct san_frames *f);
/* The frame record containing pa, or NULL (also for free frames and holes). O(1) for the first
 * frame of a record, O(log n) otherwise. The record's successor in address order is
 * san_range_next(&f->r), which may be a free extent (kind 0) or a record that does not start
 * where f ends (a hole lies between). */
struct san_frames *san_phys_frames_at(const struct san_machine *m, san_paddr_t pa);
/* Remembers the byte count a requester asked for (r.len is it rounded up to pages). */
static inline void san_phys_set_asked(struct san_frames *f, uint64_t bytes)
{
    f->last_bytes = (uint16_t)(bytes - (f->r.len - SAN_PAGE_SIZE));
}
/* Does bytes name exactly what was asked for? Frees must (MmFreeContiguousMemorySpecifyCache,
 * FreeCommonBuffer). */
static inline bool san_phys_is_asked(const struct san_frames *f, uint64_t bytes)
{
    return f->last_bytes && bytes == f->r.len - SAN_PAGE_SIZE + f->last_bytes;
}

/* True for a frame record, false for a free extent or a freed record waiting in the tree (its
 * frames are free). */
static inline bool san_phys_is_record(const struct san_frames *f)
{
    return f->kind != 0 && f->kind != SAN_FRAMES_FREED;
}

static inline uint64_t san_low_part(uint64_t start, uint64_t len)
{
    if (start >= SAN_4G)
        return 0;
    return start + len <= SAN_4G ? len : SAN_4G - start;
}

#endif
