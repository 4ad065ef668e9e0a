/* Exporting contiguous allocations through a memfd (see export.c). Internal to sanproxy. */
#ifndef SAN_PHYS_EXPORT_H
#define SAN_PHYS_EXPORT_H

#include <stddef.h>

#include <san/phys.h>

/* Re-backs the san_alloc_contiguous allocation [va, va+len) (exactly; len whole pages) with a new,
 * zeroed memfd, sealed at its size (no shrink, no grow, no further seals), and returns it in *fd
 * (close-on-exec; the caller owns it and may pass it to another process). fresh: an empty memfd
 * made earlier (memfd_create with MFD_ALLOW_SEALING, size 0, never mapped), which the call
 * takes over even when it fails; -1: one is created here. The allocation's previous bytes are
 * dropped. -EINVAL when [va, va+len) is not exactly one contiguous allocation. Takes m->lock for
 * writing. */
int san_phys_export(struct san_machine *m, void *va, size_t len, int fresh, int *fd);
/* Puts private anonymous memory back under an exported allocation (before it is freed), so that
 * the memfd, wherever it is still mapped, no longer reaches the frames. Takes m->lock for writing.
 */
int san_phys_unexport(struct san_machine *m, void *va, size_t len);

#endif
