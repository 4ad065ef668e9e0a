/* Copying stream bytes between a program's buffers and the switch's (receive slots, sinks,
 * staging buffers). glibc's memcpy moves a few KiB and more with `rep movsb`, which on some CPUs
 * (AMD EPYC here) runs at a fifteenth of its speed when the destination is 1 to 63 bytes past
 * the source modulo 4 KiB: 1.8 GB/s against 30. A malloc'd buffer starts 16 bytes into its page
 * and the switch's buffers on page or slot boundaries, so the switch's copies hit that case all
 * the time (a 256 KiB read from an RDMA sink into a malloc'd buffer, for one). No locking. */
#ifndef SANSOCK_COPY_H
#define SANSOCK_COPY_H

#include <stddef.h>

/* memcpy(dst, src, n) for non-overlapping buffers, in pieces small enough for glibc's vector
 * loop when the two are placed as above. */
void sansock_copy(void *dst, const void *src, size_t n);

#endif
