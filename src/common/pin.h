/* Pinning pages of this process: mlock and munlock as system calls. munlock of a range with a hole
 * in it (part of it unmapped since it was locked) unlocks exactly what is still mapped.
 * No state, no locking: callers that nest pins (mlock does not count) keep their own ranges. */
#ifndef SAN_COMMON_PIN_H
#define SAN_COMMON_PIN_H

#include <stdint.h>

/* Unlocks every page of [start, start + len) (page-aligned) that is mapped. One munlock when the
 * range is whole; with holes, one more per mapped run (found in /proc/self/maps). Never fails:
 * pages that are gone are not locked any more. Allocates nothing (safe on the cache's watcher
 * thread). Returns the number of munlock calls made (tests check that holes cost no more). */
unsigned san_pin_unlock(uint64_t start, uint64_t len);

#endif
