/* Locked memory of this process as the kernel counts it (VmLck in /proc/self/status): what mlock
 * holds. Shared by unit and integration tests. Header-only. */
#ifndef SAN_TEST_VMLCK_H
#define SAN_TEST_VMLCK_H

#include <stdint.h>
#include <stdio.h>

/* In KiB; -1 when it cannot be read. */
static inline long test_vm_locked_kib(void)
{
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    long kib = -1;
    if (!f)
        return -1;
    while (fgets(line, sizeof(line), f))
        if (sscanf(line, "VmLck: %ld kB", &kib) == 1)
            break;
    fclose(f);
    return kib;
}

#endif
