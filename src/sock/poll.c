/* poll and ppoll on sets that mix SAN sockets and kernel descriptors (docs/sock.md, "Waiting and
 * readiness"). Without SAN sockets in the set it is the kernel's poll or ppoll, untouched.
 * Otherwise: the SAN sockets' readiness comes from their state; if nothing is ready the thread
 * looks again, yielding between looks, for up to SANSOCK_SPIN_NS (wait.h: the peer's answer often
 * comes sooner than a sleep and a wake-up would take; the kernel descriptors are looked at with a
 * zero-timeout ppoll in each look), then sleeps in the kernel's ppoll (with the caller's signal
 * mask, which the kernel applies for the sleep only) on the kernel descriptors, the SAN sockets'
 * completion descriptors, the SAN listeners' descriptors and its own wake-up eventfd, then looks
 * again.
 * Locking: none of its own (sansock_conn_events takes each connection's lock). */
#include <errno.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/clock.h"
#include "sock/real.h"
#include "sock/session.h"
#include "sock/sock.h"
#include "sock/wait.h"

struct entry {
    struct sansock_obj *o;
    struct sansock_waiter w;
    int linked;
    short san_ev; /* a listener: a complete SAN connection waits (its POLLIN) */
    int kfd[3];   /* indexes into the kernel set: the descriptor (or completion fd), listeners */
};

static int64_t now_ns(void) /* signed: deadlines here are compared by difference */
{
    return (int64_t)san_now_ns();
}

int sansock_poll(struct pollfd *fds, nfds_t n, int timeout)
{
    struct timespec ts = {.tv_sec = timeout / 1000, .tv_nsec = timeout % 1000 * 1000000L};
    return sansock_ppoll(fds, n, timeout < 0 ? NULL : &ts, NULL, true);
}

/* The kernel's call for a set without SAN sockets: poll when that is what the program called. */
static int kernel_poll(struct pollfd *fds, nfds_t n, const struct timespec *to,
                       const sigset_t *mask, bool as_poll)
{
    if (as_poll)
        return REAL(poll)(fds, n, to ? (int)(to->tv_sec * 1000 + to->tv_nsec / 1000000) : -1);
    return REAL(ppoll)(fds, n, to, mask);
}

int sansock_ppoll(struct pollfd *fds, nfds_t n, const struct timespec *to, const sigset_t *mask,
                  bool as_poll)
{
    struct entry stack_e[16];
    struct pollfd stack_k[16 * 3 + 1];
    struct entry *e = stack_e;
    struct pollfd *k = stack_k;
    bool any = false;
    if (n <= 16) {
        for (nfds_t i = 0; i < n; i++) {
            e[i].o = sansock_fd_get(fds[i].fd);
            any |= e[i].o != NULL;
        }
    } else {
        /* Large sets: look first, allocate only if a SAN socket is among them. */
        for (nfds_t i = 0; i < n && !any; i++) {
            struct sansock_obj *o = sansock_fd_get(fds[i].fd);
            any = o != NULL;
            sansock_obj_put(o);
        }
        if (!any)
            return kernel_poll(fds, n, to, mask, as_poll);
        e = calloc(n, sizeof(*e));
        k = calloc(n * 3 + 1, sizeof(*k));
        if (!e || !k) {
            free(e);
            free(k);
            errno = ENOMEM;
            return -1;
        }
        for (nfds_t i = 0; i < n; i++)
            e[i].o = sansock_fd_get(fds[i].fd);
    }
    if (!any)
        return kernel_poll(fds, n, to, mask, as_poll);
    if (to && (to->tv_sec < 0 || to->tv_nsec < 0 || to->tv_nsec >= 1000000000)) {
        for (nfds_t i = 0; i < n; i++)
            sansock_obj_put(e[i].o);
        if (e != stack_e) {
            free(e);
            free(k);
        }
        errno = EINVAL;
        return -1;
    }

    /* timeout: -1 forever, 0 a look, else the deadline on the monotonic clock */
    int timeout = !to ? -1 : (to->tv_sec || to->tv_nsec) ? 1 : 0;
    int64_t deadline = 0;
    if (timeout > 0)
        deadline = to->tv_sec > (INT64_MAX - now_ns()) / 1000000000 - 1
                       ? INT64_MAX
                       : now_ns() + to->tv_sec * 1000000000 + to->tv_nsec;
    int wfd = sansock_wakefd();
    int ret;
    bool conns = false;
    for (nfds_t i = 0; i < n; i++)
        conns |= sansock_obj_conn(e[i].o) != NULL;
    int64_t spin_end = timeout && conns ? now_ns() + SANSOCK_SPIN_NS : 0;
    for (;;) {
        int ready = 0, lready = 0;
        nfds_t nk = 0;
        /* A spinning look links no waiter and arms no completion descriptor. */
        bool spin = spin_end && now_ns() < spin_end && (timeout < 0 || now_ns() < deadline);
        for (nfds_t i = 0; i < n; i++) {
            fds[i].revents = 0;
            e[i].linked = 0;
            e[i].san_ev = 0;
            e[i].kfd[0] = e[i].kfd[1] = e[i].kfd[2] = -1;
            struct sansock_conn *c = sansock_obj_conn(e[i].o);
            if (c) {
                struct pollfd cw[2];
                e[i].w.fd = wfd;
                fds[i].revents =
                    sansock_conn_events(c, fds[i].events, wfd >= 0 && !spin ? &e[i].w : NULL, cw);
                if (fds[i].revents) {
                    ready++;
                } else if (wfd >= 0 && !spin) {
                    e[i].linked = 1;
                    for (int j = 0; j < 2; j++) {
                        if (cw[j].fd >= 0) {
                            e[i].kfd[j] = (int)nk;
                            k[nk++] = cw[j];
                        }
                    }
                }
                continue;
            }
            e[i].kfd[0] = (int)nk;
            k[nk++] = (struct pollfd){.fd = fds[i].fd, .events = fds[i].events};
            if (e[i].o) {
                int lfd[2];
                int nl = sansock_listener_fds(e[i].o, lfd);
                for (int j = 0; j < nl; j++) {
                    e[i].kfd[1 + j] = (int)nk;
                    k[nk++] = (struct pollfd){.fd = lfd[j], .events = POLLIN};
                }
                if (nl && sansock_listener_ready(e[i].o)) {
                    e[i].san_ev = (short)(fds[i].events & (POLLIN | POLLRDNORM));
                    lready += e[i].san_ev != 0;
                }
            }
        }
        /* wait: whether this round sleeps; left: for how long (NULL: forever) */
        bool wait = false;
        struct timespec left = {0, 0}, *lp = &left;
        if (spin) {
            /* a look: zero timeout */
        } else if (!ready && !lready && timeout < 0) {
            wait = true;
            lp = NULL;
        } else if (!ready && !lready && timeout > 0) {
            int64_t d = deadline - now_ns();
            wait = d > 0;
            if (wait)
                left = (struct timespec){.tv_sec = d / 1000000000, .tv_nsec = d % 1000000000};
        }
        nfds_t nwait = nk;
        if (wait && wfd >= 0)
            k[nwait++] = (struct pollfd){.fd = wfd, .events = POLLIN};
        /* A spinning look at SAN connections only needs no system call. */
        int r = spin && !nk ? 0 : REAL(ppoll)(k, nwait, lp, wait ? mask : NULL);
        int err = errno;
        for (nfds_t i = 0; i < n; i++) {
            struct sansock_conn *c = sansock_obj_conn(e[i].o);
            if (c) {
                if (e[i].linked)
                    sansock_conn_unwait(c, &e[i].w);
                continue;
            }
            /* A listener's own descriptors only say "look again": the next round does. */
            fds[i].revents = (short)((r > 0 ? k[e[i].kfd[0]].revents : 0) | e[i].san_ev);
            if (fds[i].revents)
                ready++;
        }
        if (wait && wfd >= 0)
            sansock_wakefd_drain(wfd);
        if (r < 0 && !ready) {
            ret = -1;
            errno = err;
            break;
        }
        if (spin && !ready && r >= 0) {
            sched_yield();
            continue;
        }
        if (ready || !wait || (timeout > 0 && now_ns() >= deadline)) {
            if (ready) {
                ret = ready;
                break;
            }
            if (!wait) {
                ret = 0;
                break;
            }
        }
        /* Woken by a completion or a wake-up: look at the SAN sockets again. */
    }
    for (nfds_t i = 0; i < n; i++)
        sansock_obj_put(e[i].o);
    if (e != stack_e) {
        free(e);
        free(k);
    }
    return ret;
}
