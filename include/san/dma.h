/* DMA adapters (DEVICE_DESCRIPTION, IoGetDmaAdapter, DMA_OPERATIONS): common buffers,
 * scatter-gather lists with map registers (bounce buffers), the device's bus-master accesses. */
#ifndef SAN_DMA_H
#define SAN_DMA_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <san/mdl.h>
#include <san/phys.h>
#include <san/export.h>
#include <san/types.h>

#ifdef __cplusplus
extern "C" {
#endif

struct san_device_description {
    uint32_t version; /* 0..3 */
    bool master, scatter_gather, dma32, dma64;
    uint32_t dma_address_width; /* version 3 only: 1..64 */
    uint32_t max_length;        /* bytes per transfer */
};

struct san_sg_element {
    san_laddr_t addr;
    uint32_t length;
};
struct san_sg_list {
    uint32_t nr;
    struct san_sg_element elem[];
};

struct san_dma_ops;
struct san_dma_adapter {
    uint32_t version;
    const struct san_dma_ops *ops;
};

struct san_dma_ops {
    /* Releases the adapter. Common buffers or scatter-gather lists still outstanding are logged
     * and leaked, never freed: the device might still use them. */
    void (*put_dma_adapter)(struct san_dma_adapter *a);
    /* Physically contiguous whole pages the device reaches (below 2^width: low memory for a
     * 32-bit device, even on a NOLOWMEM host); *logical == physical address. len 0: -EINVAL;
     * nothing fits: -ENOMEM. */
    int (*allocate_common_buffer)(struct san_dma_adapter *a, uint32_t len, san_laddr_t *logical,
                                  bool cache_enabled, void **va);
    /* Every argument must match the allocation (len exactly as asked, the adapter, logical, va,
     * cache_enabled): -EINVAL otherwise, nothing freed. */
    int (*free_common_buffer)(struct san_dma_adapter *a, uint32_t len, san_laddr_t logical,
                              void *va, bool cache_enabled);
    /* Maps bytes [offset, offset+len) of a locked MDL (offset 0 is the MDL's first byte) for one
     * transfer; adjacent frames coalesce into one element; pages the device cannot reach are
     * bounced through map registers (copied in now when to_device). Without scatter-gather:
     * exactly one element. len 0, past the MDL or above max_length: -EINVAL; a device write
     * (!to_device) into an MDL locked without SAN_MEM_WRITE: -EACCES; map registers busy now:
     * -EAGAIN; more map registers (or, without scatter-gather, a longer run) than the adapter
     * was granted: -ENOMEM; a client's pages unreadable while copying in: -EFAULT. Nothing is
     * held on failure. */
    int (*get_scatter_gather_list)(struct san_dma_adapter *a, struct san_mdl *mdl, size_t offset,
                                   size_t len, bool to_device, struct san_sg_list **out);
    /* Ends the transfer: bounced data from the device is copied back, map registers released.
     * The direction recorded at get decides; to_device is accepted for the Windows signature. */
    void (*put_scatter_gather_list)(struct san_dma_adapter *a, struct san_sg_list *sg,
                                    bool to_device);
};

/* IoGetDmaAdapter: reads a zeroed-then-filled description. Versions 0..3 (else -EINVAL); version 3
 * uses dma_address_width (1..64, else -EINVAL); otherwise dma64 gives 64 bits (over dma32), else 32
 * bits. *nr_map_registers (may be NULL) is in/out: the number wanted (0 or
 * more than needed: the pages of max_length + 1) and the number granted, which is lower when
 * memory the device reaches runs short. Map registers are bounce pages reserved now. */
SAN_API int san_get_dma_adapter(struct san_machine *m, const struct san_device_description *desc,
                                uint32_t *nr_map_registers, struct san_dma_adapter **out);

/* The device's own bus-master accesses by logical address. Beyond the adapter's address width, or
 * to a frame that is not allocated, locked or a bounce page in use: -EFAULT; a device write into
 * memory locked without SAN_MEM_WRITE: -EACCES; either counts a DMA fault. The whole range is
 * checked before a byte moves (nothing is copied on failure; the one exception is a client process
 * whose pages vanish mid-copy). len 0: 0. Thread-safe; devices do not serialise each other. */
SAN_API int san_dma_read(struct san_dma_adapter *a, san_laddr_t src, void *dst, size_t len);
SAN_API int san_dma_write(struct san_dma_adapter *a, san_laddr_t dst, const void *src, size_t len);

#ifdef __cplusplus
}
#endif

#endif
