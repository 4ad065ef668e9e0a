/* memwatch: the userfaultfd watcher behind the registration cache (see memwatch.h and
 * docs/rcache.md). Sits on the range tree (watched spans, which may overlap) and on one handler
 * thread per watcher.
 *
 * Locking: the owner's lock (ops->lock, a write lock; debug builds check it is held, when
 * ops->holder says how) protects everything in struct san_memwatch after init. The handler thread
 * polls without it, then takes it, reads every pending event into a fixed queue, invalidates, and
 * only then releases it: a thread blocked in munmap is released by the read, but whatever it does
 * next with the cache waits for the lock, so it never sees the entry that its munmap made stale.
 * The event path allocates nothing and frees nothing. */
#include "client/memwatch.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "common/page.h"

/* Internal queue kind: the destination of an mremap, which carries its registration along. */
#define SAN_MEMWATCH_REMAP_TO 100
/* Highest user address we ever ask the kernel to wake (x86-64 and arm64 47/48-bit user space). */
#define USER_TOP (UINT64_C(1) << 47)

#ifndef UFFD_USER_MODE_ONLY
#define UFFD_USER_MODE_ONLY 1
#endif

void san_memwatch_init(struct san_memwatch *mw, const struct san_memwatch_ops *ops)
{
    memset(mw, 0, sizeof(*mw));
    mw->ops = *ops;
    mw->uffd = mw->stopfd = -1;
    mw->queue_cap = SAN_MEMWATCH_QUEUE;
    san_range_tree_init(&mw->spans);
}

bool san_memwatch_running_locked(const struct san_memwatch *mw)
{
    san_assert_held_if(mw->ops.holder);
    return mw->started;
}

static int uffd_range_op(int fd, unsigned long op, uint64_t start, uint64_t len)
{
    struct uffdio_range r = {.start = start, .len = len};
    return ioctl(fd, op, &r) ? -errno : 0;
}

/* Unregisters the parts of [start, end) that no span in the tree covers. */
static void unregister_uncovered_locked(struct san_memwatch *mw, uint64_t start, uint64_t end)
{
    san_assert_held_if(mw->ops.holder);
    struct san_range_gaps g;
    for (san_range_gaps_init(&g, &mw->spans, start, end); san_range_gaps_next(&g);)
        if (uffd_range_op(mw->uffd, UFFDIO_UNREGISTER, g.start, g.len) < 0)
            mw->stats.unreg_fail++;
}

static bool covered_locked(struct san_memwatch *mw, uint64_t page)
{
    san_assert_held_if(mw->ops.holder);
    return san_range_first_overlap(&mw->spans, page, PAGE) != NULL;
}

static void queue_item(struct san_memwatch *mw, size_t *n, bool *overflow, uint64_t start,
                       uint64_t len, int kind)
{
    if (*n >= mw->queue_cap) {
        *overflow = true;
        return;
    }
    mw->queue[*n] = (struct san_memwatch_item){.start = start, .len = len, .kind = (uint8_t)kind};
    (*n)++;
}

/* Reads every pending event (the kernel releases each blocked unmapper as its event is read), then
 * acts on them. Reading everything before acting means no unmapper waits for an invalidation's
 * round trip to the daemon. Overflow of the fixed queue loses no invalidation: the owner drops
 * everything, and every faulting thread is woken (it faults again if it must, and is queued then).
 */
static void drain_locked(struct san_memwatch *mw)
{
    san_assert_held_if(mw->ops.holder);
    size_t n = 0;
    bool overflow = false;

    for (;;) {
        ssize_t got = read(mw->uffd, mw->msgs, sizeof(mw->msgs));
        if (got < 0) {
            if (errno == EINTR)
                continue;
            break; /* EAGAIN: drained */
        }
        size_t nr = (size_t)got / sizeof(mw->msgs[0]);
        for (size_t i = 0; i < nr; i++) {
            const struct uffd_msg *m = &mw->msgs[i];
            mw->stats.events++;
            switch (m->event) {
            case UFFD_EVENT_PAGEFAULT:
                mw->stats.faults++;
                queue_item(mw, &n, &overflow, m->arg.pagefault.address & ~(PAGE - 1), PAGE,
                           SAN_MEMWATCH_FAULT);
                break;
            case UFFD_EVENT_UNMAP:
                mw->stats.unmaps++;
                queue_item(mw, &n, &overflow, m->arg.remove.start,
                           m->arg.remove.end - m->arg.remove.start, SAN_MEMWATCH_UNMAP);
                break;
            case UFFD_EVENT_REMOVE:
                mw->stats.removes++;
                queue_item(mw, &n, &overflow, m->arg.remove.start,
                           m->arg.remove.end - m->arg.remove.start, SAN_MEMWATCH_REMOVE);
                break;
            case UFFD_EVENT_REMAP:
                mw->stats.remaps++;
                queue_item(mw, &n, &overflow, m->arg.remap.from, m->arg.remap.len,
                           SAN_MEMWATCH_REMAP);
                queue_item(mw, &n, &overflow, m->arg.remap.to, m->arg.remap.len,
                           SAN_MEMWATCH_REMAP_TO);
                break;
            default:
                break;
            }
        }
    }
    mw->stats.batches++;

    if (overflow) {
        mw->stats.overflows++;
        mw->ops.invalidate_locked(mw->ops.arg, 0, UINT64_MAX, SAN_MEMWATCH_ALL);
        uffd_range_op(mw->uffd, UFFDIO_WAKE, PAGE, USER_TOP - PAGE);
        return;
    }
    for (size_t i = 0; i < n; i++) {
        struct san_memwatch_item *it = &mw->queue[i];
        if (!it->len)
            continue;
        if (it->kind == SAN_MEMWATCH_REMAP_TO) {
            /* The moved vma kept its registration at its new address; nothing we cache lives
             * there (what was there was unmapped, and is reported), so drop what nobody covers. */
            unregister_uncovered_locked(mw, it->start, it->start + it->len);
            continue;
        }
        mw->ops.invalidate_locked(mw->ops.arg, it->start, it->len, it->kind);
        if (it->kind == SAN_MEMWATCH_FAULT && !covered_locked(mw, it->start)) {
            /* The faulting thread sleeps until the page is resolved or unregistered. */
            unregister_uncovered_locked(mw, it->start, it->start + PAGE);
            uffd_range_op(mw->uffd, UFFDIO_WAKE, it->start, PAGE);
        }
    }
}

static void *handler_main(void *arg)
{
    struct san_memwatch *mw = arg;
    struct pollfd pfd[2] = {{.fd = mw->uffd, .events = POLLIN},
                            {.fd = mw->stopfd, .events = POLLIN}};

    for (;;) {
        pfd[0].revents = pfd[1].revents = 0;
        if (poll(pfd, 2, -1) < 0) {
            if (errno == EINTR)
                continue;
            break;
        }
        if (pfd[1].revents)
            break;
        if (pfd[0].revents & (POLLERR | POLLNVAL))
            break;
        if (pfd[0].revents & POLLIN) {
            mw->ops.lock(mw->ops.arg);
            drain_locked(mw);
            mw->ops.unlock(mw->ops.arg);
        }
    }
    return NULL;
}

static int start_locked(struct san_memwatch *mw)
{
    san_assert_held_if(mw->ops.holder);
    int fd, err;

    fd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK | UFFD_USER_MODE_ONLY);
    if (fd < 0)
        return -errno;
    struct uffdio_api api = {
        .api = UFFD_API,
        .features = UFFD_FEATURE_EVENT_UNMAP | UFFD_FEATURE_EVENT_REMOVE | UFFD_FEATURE_EVENT_REMAP,
    };
    if (ioctl(fd, UFFDIO_API, &api)) {
        err = -errno;
        goto fail_fd;
    }
    mw->uffd = fd;
    mw->stopfd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (mw->stopfd < 0) {
        err = -errno;
        goto fail_fd;
    }

    /* The handler must never run the application's signal handlers. */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    err = -pthread_create(&mw->thread, NULL, handler_main, mw);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (err)
        goto fail_stop;
    mw->pid = getpid();
    mw->started = true;
    return 0;

fail_stop:
    close(mw->stopfd);
    mw->stopfd = -1;
fail_fd:
    close(fd);
    mw->uffd = -1;
    return err;
}

int san_memwatch_watch_locked(struct san_memwatch *mw, struct san_memwatch_span *s, uint64_t start,
                              uint64_t len)
{
    san_assert_held_if(mw->ops.holder);
    if (!len || (start | len) & (PAGE - 1) || start + len < start)
        return -EINVAL;
    if (mw->broken)
        return mw->start_err;
    if (!mw->started) {
        int err = start_locked(mw);
        if (err) {
            mw->broken = true;
            mw->start_err = err;
            return err;
        }
    }
    struct uffdio_register reg = {
        .range = {.start = start, .len = len},
        .mode = UFFDIO_REGISTER_MODE_MISSING,
    };
    if (ioctl(mw->uffd, UFFDIO_REGISTER, &reg)) {
        int err = -errno;
        /* The kernel checks every vma before it registers any: nothing to undo. */
        mw->stats.watch_fail++;
        return err == -ENOMEM ? -EINVAL : err;
    }
    s->r.start = start;
    s->r.len = len;
    san_range_insert(&mw->spans, &s->r);
    s->watched = true;
    return 0;
}

void san_memwatch_unwatch_locked(struct san_memwatch *mw, struct san_memwatch_span *s)
{
    san_assert_held_if(mw->ops.holder);
    if (!s->watched)
        return;
    s->watched = false;
    san_range_erase(&mw->spans, &s->r);
    unregister_uncovered_locked(mw, s->r.start, san_range_end(&s->r));
}

void san_memwatch_destroy(struct san_memwatch *mw)
{
    if (!mw->started)
        return;
    if (getpid() == mw->pid) {
        uint64_t one = 1;
        if (write(mw->stopfd, &one, sizeof(one)) == (ssize_t)sizeof(one))
            pthread_join(mw->thread, NULL);
        /* Closing the userfaultfd unregisters everything only when no forked child still holds a
         * copy of it: unregister what is left ourselves, or an unmap there would wait forever. */
        for (struct san_range *r = san_range_first(&mw->spans); r; r = san_range_next(r))
            uffd_range_op(mw->uffd, UFFDIO_UNREGISTER, r->start, r->len);
    }
    /* In a forked child the descriptors are copies: closing them leaves the parent's watcher alone
     * (its handler thread does not exist here, and the eventfd is shared, so it is not written). */
    close(mw->stopfd);
    close(mw->uffd);
    mw->uffd = mw->stopfd = -1;
    mw->started = false;
}
