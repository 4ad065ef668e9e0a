/* Memory descriptor lists: locking a buffer of the calling process (MmProbeAndLockPages) and
 * reading its page list. */
#ifndef SAN_MDL_H
#define SAN_MDL_H

#include <stddef.h>

#include <san/phys.h>
#include <san/export.h>
#include <san/types.h>

#ifdef __cplusplus
extern "C" {
#endif

struct san_mdl;

/* Locks [va, va+len) of the calling process (MmProbeAndLockPages): checks that every page is
 * mapped with the access asked for (readable; writable too with SAN_MEM_WRITE), pins the pages
 * (mlock) and gives each page a frame of m (highest memory first, NOLOWMEM honoured). Whole pages
 * are locked when va or len is unaligned. Devices may always read the buffer; they may write it
 * only with SAN_MEM_WRITE in access. Overlapping locks nest: a page stays pinned while any MDL
 * covers it.
 * Errors (nothing is held after any of them): len 0, access not 1..3 or NULL arguments: -EINVAL;
 * a page unmapped or without the access: -EFAULT; no frames left: -ENOMEM; mlock refused for lack
 * of privilege with RLIMIT_MEMLOCK 0: -EPERM, or over RLIMIT_MEMLOCK: -ENOBUFS.
 * The MDL must be unlocked before m is destroyed. Blocks in page faults; thread-safe. */
SAN_API int san_mdl_lock(struct san_machine *m, void *va, size_t len, unsigned access,
                         struct san_mdl **out);
/* Unpins the pages (those no other MDL covers) and frees the frames. NULL is a no-op. An MDL
 * that a scatter-gather list still maps is logged and leaked, pages and frames kept: a device may
 * still write them. */
SAN_API void san_mdl_unlock(struct san_mdl *mdl);
/* Number of pages the lock covers. */
SAN_API size_t san_mdl_page_count(const struct san_mdl *mdl);
/* Physical address of page i (0-based); 0 when i is out of range (0 is never RAM). */
SAN_API san_paddr_t san_mdl_page(const struct san_mdl *mdl, size_t i);

#ifdef __cplusplus
}
#endif

#endif
