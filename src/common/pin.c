/* Pinning pages of this process (see pin.h). Sits on the system calls only: mlock, mlock2 and
 * munlock go to the kernel directly because sanitizer runtimes replace the libc mlock and munlock
 * with no-ops (not mlock2), and the pin is part of what registration means.
 *
 * Faulting in: MADV_POPULATE_READ/_WRITE (5.14) faults the range in with the access asked and
 * fails on what lacks it, before anything is locked; whether the kernel has it is probed once, on a
 * page of our own. Then mlock2(MLOCK_ONFAULT) locks the resident pages without a second walk.
 * A refused mlock is told apart (RLIMIT_MEMLOCK, or part of the range gone meanwhile) with
 * mincore, a call per 16 MiB, never per page.
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
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <unistd.h>

#include "common/page.h"

#ifndef MADV_POPULATE_READ
#define MADV_POPULATE_READ 22
#endif
#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23
#endif
#ifndef MLOCK_ONFAULT
#define MLOCK_ONFAULT 0x01
#endif

/* Pages read per process_vm_readv where MADV_POPULATE_* is missing. */
enum { TOUCH_BATCH = 512 };

/* 1: MADV_POPULATE_* works, 0: it does not (kernel before 5.14), -1: not probed yet. */
static atomic_int populate_ok = -1;
static _Alignas(4096) unsigned char probe_page[4096];

static bool have_populate(void)
{
    int ok = atomic_load_explicit(&populate_ok, memory_order_relaxed);
    if (ok < 0) {
        ok = madvise(probe_page, sizeof(probe_page), MADV_POPULATE_WRITE) == 0;
        atomic_store_explicit(&populate_ok, ok, memory_order_relaxed);
    }
    return ok;
}

/* Reads one byte of every page of [start, start + len), a batch per call: faults them in, or fails
 * on the first that is not mapped readable. */
static int touch_pages(uint64_t start, uint64_t len)
{
    struct iovec remote[TOUCH_BATCH];
    unsigned char sink[TOUCH_BATCH];

    for (uint64_t at = start, end = start + len; at < end;) {
        size_t n = 0;
        for (; n < TOUCH_BATCH && at < end; n++, at += PAGE)
            remote[n] = (struct iovec){(void *)(uintptr_t)at, 1};
        struct iovec local = {sink, n};
        ssize_t got;
        while ((got = process_vm_readv(getpid(), &local, 1, remote, n, 0)) < 0 && errno == EINTR)
            ;
        if (got < 0)
            return errno == EFAULT || errno == ENOMEM ? -EFAULT : -errno;
        if ((size_t)got != n)
            return -EFAULT;
    }
    return 0;
}

int san_pin_populate(uint64_t start, uint64_t len, bool write)
{
    if (!have_populate())
        return touch_pages(start, len);
    int advice = write ? MADV_POPULATE_WRITE : MADV_POPULATE_READ;
    while (madvise((void *)(uintptr_t)start, (size_t)len, advice)) {
        switch (errno) {
        case EINTR:
        case EAGAIN:
            continue;
        case ENOMEM: /* not mapped */
        case EINVAL: /* mapped without the access (or not populatable, like VM_IO) */
        case EFAULT: /* would SIGBUS */
        case EHWPOISON:
            return -EFAULT;
        default:
            return -errno;
        }
    }
    return 0;
}

/* True when every page of [start, start + len) is mapped. */
static bool range_mapped(uint64_t start, uint64_t len)
{
    unsigned char vec[4096];
    for (uint64_t done = 0; done < len; done += sizeof(vec) * PAGE) {
        uint64_t n = len - done < sizeof(vec) * PAGE ? len - done : sizeof(vec) * PAGE;
        if (mincore((void *)(uintptr_t)(start + done), n, vec) && errno == ENOMEM)
            return false;
    }
    return true;
}

int san_pin_lock(uint64_t start, uint64_t len)
{
    void *p = (void *)(uintptr_t)start;
    long rc;
    if (have_populate()) {
        rc = syscall(SYS_mlock2, p, (size_t)len, MLOCK_ONFAULT);
        if (rc && (errno == ENOSYS || errno == EINVAL))
            rc = syscall(SYS_mlock, p, (size_t)len); /* no mlock2 or no MLOCK_ONFAULT */
    } else {
        rc = syscall(SYS_mlock, p,
                     (size_t)len); /* faults the pages in (writable ones for writing) */
    }
    if (!rc)
        return 0;
    switch (errno) {
    case EPERM: /* no CAP_IPC_LOCK and RLIMIT_MEMLOCK is 0 */
        return -EPERM;
    case ENOMEM: /* part of the range went away since it was populated, or RLIMIT_MEMLOCK */
        return range_mapped(start, len) ? -ENOBUFS : -EFAULT;
    case EAGAIN:
        return -ENOMEM;
    default:
        return -errno;
    }
}

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
