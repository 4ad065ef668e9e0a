/* select and pselect on sets that hold SAN sockets, as the switch's ppoll (poll.c): the sets
 * become a poll set (read: POLLIN, write: POLLOUT, except: POLLPRI), its answer goes back into the
 * sets; select's timeout is updated to the time left as Linux does (pselect's is not: glibc's
 * pselect leaves it alone); pselect's signal mask is the kernel's ppoll's. A set with no SAN
 * socket is the kernel's select or pselect, untouched.
 * Locking: none of its own. */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/select.h>
#include <time.h>

#include "sock/real.h"
#include "sock/sock.h"

static bool has_san_socket(int n, fd_set *r, fd_set *w, fd_set *x)
{
    for (int fd = 0; fd < n; fd++) {
        if (!(r && FD_ISSET(fd, r)) && !(w && FD_ISSET(fd, w)) && !(x && FD_ISSET(fd, x)))
            continue;
        struct sansock_obj *o = sansock_fd_get(fd);
        sansock_obj_put(o);
        if (o)
            return true;
    }
    return false;
}

static int64_t now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* The common part: to NULL waits forever; left (select only) gets the time not waited. */
static int select_core(int n, fd_set *r, fd_set *w, fd_set *x, const struct timespec *to,
                       const sigset_t *mask, struct timespec *left)
{
    struct pollfd stack[64], *p = stack;
    nfds_t np = 0;
    if (n > 64 && !(p = calloc((size_t)n, sizeof(*p)))) {
        errno = ENOMEM;
        return -1;
    }
    for (int fd = 0; fd < n; fd++) {
        short ev =
            (short)((r && FD_ISSET(fd, r) ? POLLIN : 0) | (w && FD_ISSET(fd, w) ? POLLOUT : 0) |
                    (x && FD_ISSET(fd, x) ? POLLPRI : 0));
        if (ev)
            p[np++] = (struct pollfd){.fd = fd, .events = ev};
    }
    int64_t start = now_us(), total = 0;
    if (to)
        total = (int64_t)to->tv_sec * 1000000 + to->tv_nsec / 1000;
    int ret = sansock_ppoll(p, np, to, mask, false);
    if (ret >= 0) {
        ret = 0;
        for (nfds_t i = 0; i < np; i++)
            if (p[i].revents & POLLNVAL) {
                errno = EBADF;
                ret = -1;
            }
    }
    if (ret == 0) {
        if (r)
            FD_ZERO(r);
        if (w)
            FD_ZERO(w);
        if (x)
            FD_ZERO(x);
        for (nfds_t i = 0; i < np; i++) {
            short got = p[i].revents, want = p[i].events;
            if ((want & POLLIN) && (got & (POLLIN | POLLHUP | POLLERR)))
                FD_SET(p[i].fd, r), ret++;
            if ((want & POLLOUT) && (got & (POLLOUT | POLLERR)))
                FD_SET(p[i].fd, w), ret++;
            if ((want & POLLPRI) && (got & POLLPRI))
                FD_SET(p[i].fd, x), ret++;
        }
    }
    if (to && left) {
        /* Timed out: none left (the wait's deadline may end a little early). */
        int64_t l = ret == 0 ? 0 : total - (now_us() - start);
        if (l < 0)
            l = 0;
        *left = (struct timespec){.tv_sec = l / 1000000, .tv_nsec = l % 1000000 * 1000};
    }
    if (p != stack)
        free(p);
    return ret;
}

int sansock_select(int n, fd_set *r, fd_set *w, fd_set *x, struct timeval *tv)
{
    if (n < 0 || n > FD_SETSIZE || (tv && (tv->tv_sec < 0 || tv->tv_usec < 0))) {
        errno = EINVAL;
        return -1;
    }
    if (!has_san_socket(n, r, w, x))
        return REAL(select)(n, r, w, x, tv);
    struct timespec to, left;
    if (tv) {
        /* Linux takes a tv_usec of a second or more as whole seconds plus the rest */
        int64_t us = tv->tv_usec;
        to = (struct timespec){.tv_sec = tv->tv_sec + us / 1000000, .tv_nsec = us % 1000000 * 1000};
    }
    int ret = select_core(n, r, w, x, tv ? &to : NULL, NULL, &left);
    if (tv) {
        tv->tv_sec = left.tv_sec;
        tv->tv_usec = left.tv_nsec / 1000;
    }
    return ret;
}

int sansock_pselect(int n, fd_set *r, fd_set *w, fd_set *x, const struct timespec *to,
                    const sigset_t *mask)
{
    if (n < 0 || n > FD_SETSIZE ||
        (to && (to->tv_sec < 0 || to->tv_nsec < 0 || to->tv_nsec >= 1000000000))) {
        errno = EINVAL;
        return -1;
    }
    if (!has_san_socket(n, r, w, x))
        return REAL(pselect)(n, r, w, x, to, mask);
    return select_core(n, r, w, x, to, mask, NULL);
}
