/* The emulated host physical memory: a RAM map with holes, backed by real memory, and the
 * range-constrained contiguous allocator (MmAllocateContiguousMemorySpecifyCache). */
#ifndef SAN_PHYS_H
#define SAN_PHYS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <san/export.h>
#include <san/types.h>

#ifdef __cplusplus
extern "C" {
#endif

struct san_machine;

/* One range of RAM: page-aligned base and size, no overlap with another range. */
struct san_ram_range {
    san_paddr_t base;
    uint64_t size;
};

struct san_machine_config {
    const struct san_ram_range *ram; /* NULL/0: the default x86-like map */
    size_t nr_ram;
    uint64_t ram_size; /* default map only: total RAM; 0 means 4 GiB */
    bool nolowmem;     /* never hand frames below 4 GiB to requests that may go above */
};

/* Creates a machine. cfg may be NULL (default map, 4 GiB, no NOLOWMEM). The RAM is reserved address
 * space; it costs memory only when touched. Overlapping or unaligned ranges, or no RAM: -EINVAL. */
SAN_API int san_machine_create(const struct san_machine_config *cfg, struct san_machine **out);
/* Destroys the machine and its RAM. Every pointer into its memory becomes invalid. NULL is a no-op.
 */
SAN_API void san_machine_destroy(struct san_machine *m);

struct san_machine_stats {
    uint64_t ram_bytes;       /* all RAM of the map */
    uint64_t free_bytes;      /* RAM not in use */
    uint64_t low_free_bytes;  /* free RAM below 4 GiB */
    uint64_t dma_faults;      /* device accesses the emulated bus refused */
    uint64_t allocations;     /* contiguous allocations and common buffers outstanding */
    uint64_t allocated_bytes; /* their bytes */
    uint64_t locked_bytes;    /* frames given to locked buffers */
    uint64_t bounce_bytes;    /* bytes copied through map registers, ever */
    uint64_t map_registers_in_use;
    uint64_t free_extents; /* allocator metadata: number of free extents */
};
SAN_API int san_machine_stats(struct san_machine *m, struct san_machine_stats *out);

/* NOLOWMEM pattern check: counts free frames below 4 GiB whose bytes were written since they were
 * last scrubbed (they should never be). Frees below 4 GiB are scrubbed on a NOLOWMEM machine. */
SAN_API int san_machine_check_lowmem(struct san_machine *m, uint64_t *dirty_frames);

/* Allocates physically contiguous memory of bytes (rounded up to whole pages) lying entirely in
 * [lowest, highest] (inclusive) and not crossing a multiple of boundary (0: none; else a power of
 * two at least bytes). Highest suitable memory first. *va is the CPU address of the real bytes.
 * Bad arguments: -EINVAL; nothing fits: -ENOMEM. Thread-safe; does not block on I/O. */
SAN_API int san_alloc_contiguous(struct san_machine *m, size_t bytes, san_paddr_t lowest,
                                 san_paddr_t highest, san_paddr_t boundary,
                                 enum san_cache_type cache, void **va);
/* Frees what san_alloc_contiguous returned; bytes (exactly as asked) and cache must match (-EINVAL
 * otherwise, as for an unknown or interior pointer or a double free; nothing changes then). */
SAN_API int san_free_contiguous(struct san_machine *m, void *va, size_t bytes,
                                enum san_cache_type cache);
/* Physical address of a byte of allocated machine memory; -EINVAL for an address outside the
 * machine's RAM, -EFAULT for a frame that is not allocated. */
SAN_API int san_get_physical_address(struct san_machine *m, const void *va, san_paddr_t *pa);

#ifdef __cplusplus
}
#endif

#endif
