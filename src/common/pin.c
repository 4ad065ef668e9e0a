/* Pinning pages of this process (see pin.h). Sits on the system calls only: sanitizer runtimes
 * replace the libc mlock and munlock with no-ops, and the pin is part of what registration means.
 *
 * munlock stops at the first hole of its range (ENOMEM) and leaves the pages after it locked: a
 * registered range of which the application unmapped the first or a middle page would keep the
 * rest locked, counting against RLIMIT_MEMLOCK until registrations fail. The mapped runs of such a
 * range are read from /proc/self/maps (sorted by address; read with a buffer on the stack, since
 * the cache's watcher thread must not allocate) and unlocked one by one. Without /proc the range
 * is split in halves until each part unlocks or is one unmapped page. No locking, no state. */
#include "common/pin.h"

#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <san/types.h>

#include "common/page.h"

static int sys_munlock(uint64_t start, uint64_t len)
{
    return (int)syscall(SYS_munlock, (void *)(uintptr_t)start, (size_t)len);
}

/* Parses "START-END " (hex) at s, which holds at least one whole line or 64 bytes. */
static bool parse_vma(const char *s, uint64_t *lo, uint64_t *hi)
{
    char *e;
    errno = 0;
    *lo = strtoull(s, &e, 16);
    if (errno || *e != '-')
        return false;
    *hi = strtoull(e + 1, &e, 16);
    return !errno && *e == ' ' && *hi > *lo;
}

/* munlocks the mapped runs of [start, end) as /proc/self/maps lists them, counting the calls in
 * *calls. -errno when it cannot be read or makes no sense (the caller falls back). */
static int unlock_by_maps(uint64_t start, uint64_t end, unsigned *calls)
{
    int fd = open("/proc/self/maps", O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    char buf[4096];
    size_t have = 0;
    bool skip = false, eof = false;
    uint64_t run_lo = 0, run_hi = 0; /* mapped run being gathered; empty when equal */
    int err = 0;

    while (!eof && !err) {
        ssize_t n = read(fd, buf + have, sizeof(buf) - 1 - have);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            err = -errno;
            break;
        }
        eof = n == 0;
        have += (size_t)n;
        buf[have] = '\0';
        size_t pos = 0;
        while (pos < have) {
            char *nl = memchr(buf + pos, '\n', have - pos);
            if (skip) { /* the rest of a line longer than the buffer */
                pos = nl ? (size_t)(nl - buf) + 1 : have;
                skip = !nl;
                continue;
            }
            if (!nl && !eof && have - pos < 64)
                break; /* the addresses may continue in the next read */
            uint64_t lo, hi;
            if (!parse_vma(buf + pos, &lo, &hi)) {
                err = -EINVAL;
                break;
            }
            if (lo >= end) {
                eof = true;
                break;
            }
            if (hi > start) {
                lo = lo < start ? start : lo;
                hi = hi > end ? end : hi;
                if (run_hi != lo) { /* not adjacent to the run: unlock that one first */
                    if (run_hi > run_lo) {
                        sys_munlock(run_lo, run_hi - run_lo);
                        ++*calls;
                    }
                    run_lo = lo;
                }
                run_hi = hi;
            }
            pos = nl ? (size_t)(nl - buf) + 1 : have;
            skip = !nl;
        }
        memmove(buf, buf + pos, have - pos);
        have -= pos;
    }
    close(fd);
    if (run_hi > run_lo) {
        sys_munlock(run_lo, run_hi - run_lo);
        ++*calls;
    }
    return err;
}

/* Without /proc: halves until each part unlocks or is a single unmapped page. */
static unsigned unlock_halves(uint64_t start, uint64_t len)
{
    if (!sys_munlock(start, len) || errno != ENOMEM || len <= PAGE)
        return 1;
    uint64_t half = len / PAGE / 2 * PAGE;
    return 1 + unlock_halves(start, half) + unlock_halves(start + half, len - half);
}

unsigned san_pin_unlock(uint64_t start, uint64_t len)
{
    unsigned calls = 1;
    if (!len)
        return 0;
    if (!sys_munlock(start, len) || errno != ENOMEM)
        return calls;
    /* A hole (or nothing mapped at all): unlock each mapped run. */
    if (unlock_by_maps(start, start + len, &calls))
        calls += unlock_halves(start, len);
    return calls;
}
