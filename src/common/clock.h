/* The monotonic clock in nanoseconds (CLOCK_MONOTONIC: through the vDSO, no system call). Used for
 * reply polling deadlines, the daemon's spin window, the registration cache's LRU where the TSC is
 * not available, and the benchmarks. */
#ifndef SAN_COMMON_CLOCK_H
#define SAN_COMMON_CLOCK_H

#include <stdint.h>
#include <time.h>

static inline uint64_t san_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

#endif
