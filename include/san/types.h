/* Basic types shared by every sanproxy interface: address kinds and cache types. */
#ifndef SAN_TYPES_H
#define SAN_TYPES_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Emulated physical (CPU-side) address. */
typedef uint64_t san_paddr_t;
/* Logical (device-side) address, as a DMA adapter hands it to its device. */
typedef uint64_t san_laddr_t;

/* Cache attribute of contiguous memory (MEMORY_CACHING_TYPE). Recorded and checked at free. */
enum san_cache_type { SAN_NONCACHED = 0, SAN_CACHED = 1, SAN_WRITECOMBINED = 2 };

/* Page size of the emulated machine. */
#define SAN_PAGE_SIZE  4096u
#define SAN_PAGE_SHIFT 12u

/* Access rights of locked and registered memory (WSD MEM_* values). */
enum { SAN_MEM_READ = 1, SAN_MEM_WRITE = 2, SAN_MEM_READWRITE = 3 };

#ifdef __cplusplus
}
#endif

#endif
