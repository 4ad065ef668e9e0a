/* The fortified entry points glibc's _FORTIFY_SOURCE makes a program call instead of read, recv,
 * recvfrom and poll when it knows the buffer's size: __read_chk, __recv_chk, __recvfrom_chk and
 * __poll_chk. Without them such a program's calls would reach libc's read directly and a SAN
 * socket would look unconnected. Each checks as glibc does (a length beyond the buffer ends the
 * program in __chk_fail, before anything is read), then is the call it stands for. */
#include <poll.h>

#include "sock/export.h"
#include "sock/real.h"
#include "sock/sock.h"

/* glibc declares these only when a program is built with _FORTIFY_SOURCE. */
extern void __chk_fail(void) __attribute__((noreturn));
ssize_t __read_chk(int fd, void *buf, size_t n, size_t buflen);
ssize_t __recv_chk(int fd, void *buf, size_t n, size_t buflen, int flags);
ssize_t __recvfrom_chk(int fd, void *buf, size_t n, size_t buflen, int flags, struct sockaddr *addr,
                       socklen_t *len);
int __poll_chk(struct pollfd *fds, nfds_t n, int timeout, size_t fdslen);
int __ppoll_chk(struct pollfd *fds, nfds_t n, const struct timespec *to, const sigset_t *mask,
                size_t fdslen);

EXPORT ssize_t __read_chk(int fd, void *buf, size_t n, size_t buflen)
{
    if (n > buflen)
        __chk_fail();
    ON_CONN(fd, sansock_fail(sansock_conn_recv(c, fd, buf, n, 0)), REAL(read)(fd, buf, n));
}

EXPORT ssize_t __recv_chk(int fd, void *buf, size_t n, size_t buflen, int flags)
{
    if (n > buflen)
        __chk_fail();
    ON_CONN(fd, sansock_fail(sansock_conn_recv(c, fd, buf, n, flags)),
            REAL(recv)(fd, buf, n, flags));
}

EXPORT ssize_t __recvfrom_chk(int fd, void *buf, size_t n, size_t buflen, int flags,
                              struct sockaddr *addr, socklen_t *len)
{
    if (n > buflen)
        __chk_fail();
    /* A connected stream socket names no source: the length comes back 0 (as recvfrom). */
    ON_CONN(
        fd,
        (len ? (void)(*len = 0) : (void)0, sansock_fail(sansock_conn_recv(c, fd, buf, n, flags))),
        REAL(recvfrom)(fd, buf, n, flags, addr, len));
}

EXPORT int __poll_chk(struct pollfd *fds, nfds_t n, int timeout, size_t fdslen)
{
    if (fdslen / sizeof(*fds) < n)
        __chk_fail();
    return sansock_poll(fds, n, timeout);
}

EXPORT int __ppoll_chk(struct pollfd *fds, nfds_t n, const struct timespec *to,
                       const sigset_t *mask, size_t fdslen)
{
    if (fdslen / sizeof(*fds) < n)
        __chk_fail();
    return sansock_ppoll(fds, n, to, mask, false);
}
