/* Memory descriptor lists: locking a buffer of the calling process (MmProbeAndLockPages) and
 * reading its page list. */
#ifndef SAN_MDL_H
#define SAN_MDL_H

#include <stddef.h>

#include <san/phys.h>
#include <san/types.h>

#ifdef __cplusplus
extern "C" {
#endif

struct san_mdl;

/* Locks [va, va+len) of the calling process: pins the pages (mlock) and gives each page a frame of
 * m (highest memory first, NOLOWMEM honoured). Whole pages are locked when va or len is unaligned.
 * Devices may always read the buffer; they may write it only with SAN_MEM_WRITE in access.
 * len 0 or unknown access bits: -EINVAL; an unmapped page: -EFAULT; no frames: -ENOMEM. On failure
 * nothing is held. The MDL must be unlocked before m is destroyed. */
int san_mdl_lock(struct san_machine *m, void *va, size_t len, unsigned access, struct san_mdl **out);
/* Unpins the pages and frees the frames. NULL is a no-op. */
void san_mdl_unlock(struct san_mdl *mdl);
/* Number of pages the lock covers. */
size_t san_mdl_page_count(const struct san_mdl *mdl);
/* Physical address of page i (0-based); 0 when i is out of range (0 is never RAM). */
san_paddr_t san_mdl_page(const struct san_mdl *mdl, size_t i);

#ifdef __cplusplus
}
#endif

#endif
