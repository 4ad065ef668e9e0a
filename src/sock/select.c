/* select on sets that hold SAN sockets, as the switch's poll (poll.c): the sets become a poll set
 * (read: POLLIN, write: POLLOUT, except: POLLPRI), its answer goes back into the sets, the
 * timeout is updated to the time left as Linux does. A set with no SAN socket is the kernel's
 * select, untouched. pselect is not interposed (docs/sock.md).
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

int sansock_select(int n, fd_set *r, fd_set *w, fd_set *x, struct timeval *tv)
{
    if (n < 0 || n > FD_SETSIZE || (tv && (tv->tv_sec < 0 || tv->tv_usec < 0))) {
        errno = EINVAL;
        return -1;
    }
    if (!has_san_socket(n, r, w, x))
        return REAL(select)(n, r, w, x, tv);
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
    int timeout = -1;
    int64_t start = now_us(), total = 0;
    if (tv) {
        total = (int64_t)tv->tv_sec * 1000000 + tv->tv_usec;
        timeout = total > (int64_t)INT32_MAX * 1000 ? INT32_MAX : (int)((total + 999) / 1000);
    }
    int ret = sansock_poll(p, np, timeout);
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
    if (tv) {
        /* Timed out: none left (the poll's millisecond deadline may end a little early). */
        int64_t left = ret == 0 ? 0 : total - (now_us() - start);
        if (left < 0)
            left = 0;
        tv->tv_sec = left / 1000000;
        tv->tv_usec = left % 1000000;
    }
    if (p != stack)
        free(p);
    return ret;
}
