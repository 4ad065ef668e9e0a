/* Pinning pages of this process, the one way libsan (its own registrations) and mdl (buffers this
 * process locks on the emulated machine) do it: fault the range in with the access a device will
 * have, lock it, unlock what is still mapped of it. All three are system calls underneath.
 * No locking: mlock does not count, so callers that let pins overlap keep their own ranges and
 * unlock only what no other pin covers (common/range's gap walk). */
#ifndef SAN_COMMON_PIN_H
#define SAN_COMMON_PIN_H

#include <stdbool.h>
#include <stdint.h>

/* Faults in [start, start + len) (page-aligned) for reading, or for writing when write is set
 * (MADV_POPULATE_READ / _WRITE). 0; -EFAULT when a page is not mapped, is mapped without that
 * access (read-only memory for writing, PROT_NONE) or would SIGBUS; another -errno. Kernels
 * without MADV_POPULATE_* (before 5.14): one byte of each page is read (process_vm_readv on
 * ourselves, a batch of pages per call), which faults the pages in or fails on what is not mapped
 * readable; write access is then left to san_pin_lock's mlock, which faults writable pages in for
 * writing. Blocks in page faults. */
int san_pin_populate(uint64_t start, uint64_t len, bool write);

/* Locks [start, start + len) (page-aligned) in memory. After san_pin_populate it locks the pages
 * just faulted in without walking them again (mlock2(MLOCK_ONFAULT); plain mlock where there is no
 * MADV_POPULATE_* or no mlock2). 0; -EPERM (no privilege and RLIMIT_MEMLOCK is 0); -ENOBUFS
 * (RLIMIT_MEMLOCK would be exceeded); -EFAULT (part of the range is not mapped); -ENOMEM. On
 * failure a prefix of the range may be locked: the caller unlocks what no other pin covers. */
int san_pin_lock(uint64_t start, uint64_t len);

/* Unlocks every page of [start, start + len) (page-aligned) that is mapped. One munlock when the
 * range is whole; with holes, one more per mapped run (found in /proc/self/maps). Never fails:
 * pages that are gone are not locked any more. Allocates nothing (safe on the cache's watcher
 * thread). Returns the number of munlock calls made (tests check that holes cost no more). */
unsigned san_pin_unlock(uint64_t start, uint64_t len);

#endif
