/* The page, as every module counts it: the emulated machine's page size (SAN_PAGE_SIZE), which is
 * also this host's (libsan checks the daemon's at hello; mlock, the pagemap and the userfaultfd
 * work in host pages). */
#ifndef SAN_COMMON_PAGE_H
#define SAN_COMMON_PAGE_H

#include <stdint.h>

#include <san/types.h>

#define PAGE ((uint64_t)SAN_PAGE_SIZE)

/* The page holding a. */
static inline uint64_t san_page_down(uint64_t a)
{
    return a & ~(PAGE - 1);
}

/* a rounded up to a page boundary; a must be at most UINT64_MAX - PAGE + 1. */
static inline uint64_t san_page_up(uint64_t a)
{
    return (a + PAGE - 1) & ~(PAGE - 1);
}

#endif
