/* memwatch: tells its owner (the registration cache) when watched memory of this process goes away,
 * without the application's help. Built on a userfaultfd in non-cooperative event mode: every
 * watched page span is registered with the userfaultfd (missing-page mode, user faults only), and
 * the kernel reports each munmap, mremap, madvise(DONTNEED/REMOVE) and brk shrink that touches a
 * registered span as an event. The thread that unmaps blocks in the kernel until its event is read;
 * the handler thread takes the owner's lock before it reads, so the unmapping thread cannot return
 * (and map and register the same address again) before the owner has dropped what it cached there.
 *
 * Locking: every function here except init/destroy expects the owner's lock held (for writing); the
 * handler thread takes that same lock through ops->lock before it reads events and calls
 * ops->invalidate_locked with it held. The owner must never munmap or free memory while it holds
 * the lock (that would wait for the handler, which waits for the lock). */
#ifndef SAN_CLIENT_MEMWATCH_H
#define SAN_CLIENT_MEMWATCH_H

#include <linux/userfaultfd.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "common/lockcheck.h"
#include "common/range.h"

/* Why memory went away (passed to invalidate_locked). */
enum san_memwatch_why {
    SAN_MEMWATCH_UNMAP = 1, /* munmap, MAP_FIXED over it, brk shrink, free() of a large block */
    SAN_MEMWATCH_REMAP,     /* mremap moved it away */
    SAN_MEMWATCH_REMOVE,    /* madvise(MADV_DONTNEED / MADV_REMOVE ...) dropped its pages */
    SAN_MEMWATCH_FAULT,     /* a page of a watched span was missing (its contents were dropped) */
    SAN_MEMWATCH_ALL,       /* the event queue overflowed: anything may have gone */
};

struct san_memwatch_ops {
    void *arg;
    void (*lock)(void *arg); /* the owner's lock, for writing */
    void (*unlock)(void *arg);
    /* Memory in [start, start + len) is gone (SAN_MEMWATCH_ALL: start 0, len UINT64_MAX). Called
     * from the handler thread with the owner's lock held. Must not allocate or free memory, nor
     * munmap: the event path never re-enters the allocator. It usually unwatches spans. */
    void (*invalidate_locked)(void *arg, uint64_t start, uint64_t len, enum san_memwatch_why why);
    /* The holder record of the owner's lock, for the debug checks of the _locked functions
     * (common/lockcheck.h); NULL checks nothing. */
    const struct san_lock_owner *holder;
};

/* One watched span, embedded in the owner's object. Spans may overlap; a page stays registered
 * with the userfaultfd while at least one span covers it. */
struct san_memwatch_span {
    struct san_range r; /* whole pages */
    bool watched;
};

/* Counters, read with the owner's lock held. */
struct san_memwatch_stats {
    uint64_t events; /* messages read from the userfaultfd */
    uint64_t unmaps, remaps, removes, faults;
    uint64_t batches;    /* times the handler took the lock and drained the queue */
    uint64_t overflows;  /* drains whose queue overflowed (everything was invalidated) */
    uint64_t unreg_fail; /* UFFDIO_UNREGISTER failures (range already gone: harmless) */
    uint64_t watch_fail; /* spans the kernel refused (file mappings, unmapped, another uffd) */
};

/* Capacity of the pending-invalidation queue one drain fills before it processes anything. */
#define SAN_MEMWATCH_QUEUE 256
/* Messages read per read() call. */
#define SAN_MEMWATCH_BATCH 32

struct san_memwatch_item {
    uint64_t start, len;
    uint8_t kind; /* enum san_memwatch_why, or SAN_MEMWATCH_REMAP_TO (internal) */
};

struct san_memwatch {
    struct san_memwatch_ops ops;
    int uffd, stopfd; /* -1 until started */
    pid_t pid;        /* process that started it (a forked child must not touch the uffd) */
    bool started, broken;
    size_t queue_cap; /* <= SAN_MEMWATCH_QUEUE; tests lower it to provoke overflow */
    int start_err;
    pthread_t thread;
    struct san_tree spans; /* struct san_memwatch_span, overlapping allowed */
    struct san_memwatch_stats stats;
    /* Event path storage: fixed, so the handler never allocates. */
    struct uffd_msg msgs[SAN_MEMWATCH_BATCH];
    struct san_memwatch_item queue[SAN_MEMWATCH_QUEUE];
};

/* Sets mw up; nothing is opened until the first watch. Never fails. */
void san_memwatch_init(struct san_memwatch *mw, const struct san_memwatch_ops *ops);
/* Stops the handler thread (waits for it; call without the owner's lock), unregisters every span
 * still watched and closes the userfaultfd. In a forked child it only closes descriptors: the
 * userfaultfd still belongs to the parent's address space. */
void san_memwatch_destroy(struct san_memwatch *mw);
/* Starts watching [start, start + len) (whole pages; pages must be present: populate them first,
 * the kernel cannot fault in a page of a registered span for a system call). Starts the handler on
 * first use. 0; -EINVAL for memory that cannot be watched (file mappings, nothing mapped; a span
 * with holes is accepted and only its mapped parts are watched); -EBUSY when
 * another userfaultfd watches it; -ENOSYS/-EPERM when userfaultfd is unavailable (then always). */
int san_memwatch_watch_locked(struct san_memwatch *mw, struct san_memwatch_span *s, uint64_t start,
                              uint64_t len);
/* Stops watching s; pages no other span covers are unregistered (waking any faulting thread). */
void san_memwatch_unwatch_locked(struct san_memwatch *mw, struct san_memwatch_span *s);
/* Whether the handler runs (tests). */
bool san_memwatch_running_locked(const struct san_memwatch *mw);

#endif
