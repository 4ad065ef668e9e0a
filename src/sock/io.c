/* Vectored and message I/O on SAN sockets: readv, writev, sendmsg, recvmsg, sendmmsg, recvmmsg
 * (docs/sock.md). A call's pieces are one stream (session.c's sendv/recvv): a writev of many small
 * pieces travels in as few messages as their total needs. Descriptors that are no SAN socket go to
 * the real call untouched.
 *
 * What TCP does and the switch does too: a connected stream socket ignores the destination of
 * sendmsg and returns no source (msg_namelen 0); recvmsg returns no ancillary data
 * (msg_controllen 0) and msg_flags 0. sendmsg's ancillary data is checked as Linux's TCP checks
 * it: a malformed header is EINVAL, SOL_SOCKET messages other than the few the kernel knows are
 * EINVAL, and the rest (SCM_RIGHTS and SCM_CREDENTIALS among them, which belong to Unix sockets)
 * is ignored: no descriptor travels over TCP, and none over the SAN. */
#include <limits.h>
#include <stdint.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>

#include "sock/export.h"
#include "sock/real.h"

#ifndef UIO_MAXIOV
#define UIO_MAXIOV 1024 /* the kernel's limit on pieces and on messages per mmsg call */
#endif

/* Checks an iovec array as the kernel does: too many pieces is bad_count's error (readv/writev:
 * EINVAL, sendmsg/recvmsg: EMSGSIZE), a total beyond SSIZE_MAX EINVAL. */
static int check_iov(const struct iovec *iov, size_t cnt, int bad_count)
{
    if (cnt > UIO_MAXIOV)
        return -bad_count;
    if (cnt && !iov)
        return -EFAULT;
    size_t total = 0;
    for (size_t i = 0; i < cnt; i++) {
        if (iov[i].iov_len > (size_t)SSIZE_MAX - total)
            return -EINVAL;
        total += iov[i].iov_len;
    }
    return 0;
}

static ssize_t conn_readv(struct sansock_conn *c, int fd, const struct iovec *iov, int cnt)
{
    int err = cnt < 0 ? -EINVAL : check_iov(iov, (size_t)cnt, EINVAL);
    return sansock_fail(err ? err : sansock_conn_recvv(c, fd, iov, cnt, 0));
}

static ssize_t conn_writev(struct sansock_conn *c, int fd, const struct iovec *iov, int cnt)
{
    int err = cnt < 0 ? -EINVAL : check_iov(iov, (size_t)cnt, EINVAL);
    return sansock_send_result(err ? err : sansock_conn_sendv(c, fd, iov, cnt, 0), 0);
}

EXPORT ssize_t readv(int fd, const struct iovec *iov, int cnt)
{
    ON_CONN(fd, conn_readv(c, fd, iov, cnt), REAL(readv)(fd, iov, cnt));
}

EXPORT ssize_t writev(int fd, const struct iovec *iov, int cnt)
{
    ON_CONN(fd, conn_writev(c, fd, iov, cnt), REAL(writev)(fd, iov, cnt));
}

/* sendmsg's ancillary data, walked as Linux's TCP walks it (see the top of this file). */
static int check_control(const struct msghdr *m)
{
    if (!m->msg_controllen)
        return 0;
    if (m->msg_controllen > INT_MAX)
        return -ENOBUFS;
    if (!m->msg_control)
        return -EFAULT;
    const uint8_t *p = m->msg_control;
    size_t off = 0, len = m->msg_controllen;
    while (len - off >= sizeof(struct cmsghdr)) {
        struct cmsghdr h;
        memcpy(&h, p + off, sizeof(h)); /* the program's buffer need not be aligned */
        if (h.cmsg_len < sizeof(h) || h.cmsg_len > len - off)
            return -EINVAL;
        if (h.cmsg_level == SOL_SOCKET && h.cmsg_type != SCM_RIGHTS &&
            h.cmsg_type != SCM_CREDENTIALS && h.cmsg_type != SO_MARK &&
            h.cmsg_type != SO_TIMESTAMPING && h.cmsg_type != SO_TXTIME &&
            h.cmsg_type != SO_PRIORITY)
            return -EINVAL;
        size_t step = CMSG_ALIGN(h.cmsg_len);
        if (step > len - off)
            break;
        off += step;
    }
    return 0;
}

/* sendmsg on a connection: bytes sent or a negative errno. */
static ssize_t conn_sendmsg(struct sansock_conn *c, int fd, const struct msghdr *m, int flags)
{
    if (!m)
        return -EFAULT;
    int err = check_iov(m->msg_iov, m->msg_iovlen, EMSGSIZE);
    if (!err)
        err = check_control(m);
    if (err)
        return err;
    return sansock_conn_sendv(c, fd, m->msg_iov, (int)m->msg_iovlen, flags);
}

/* recvmsg on a connection: bytes received (0: end of file) or a negative errno. */
static ssize_t conn_recvmsg(struct sansock_conn *c, int fd, struct msghdr *m, int flags)
{
    if (!m)
        return -EFAULT;
    int err = check_iov(m->msg_iov, m->msg_iovlen, EMSGSIZE);
    if (err)
        return err;
    ssize_t r = sansock_conn_recvv(c, fd, m->msg_iov, (int)m->msg_iovlen, flags);
    if (r >= 0) {
        m->msg_namelen = 0;
        m->msg_controllen = 0;
        m->msg_flags = 0;
    }
    return r;
}

EXPORT ssize_t sendmsg(int fd, const struct msghdr *m, int flags)
{
    ON_CONN(fd, sansock_send_result(conn_sendmsg(c, fd, m, flags), flags),
            REAL(sendmsg)(fd, m, flags));
}

EXPORT ssize_t recvmsg(int fd, struct msghdr *m, int flags)
{
    ON_CONN(fd, sansock_fail(conn_recvmsg(c, fd, m, flags)), REAL(recvmsg)(fd, m, flags));
}

/* sendmmsg as Linux: each message in turn; an error after the first message ends the call with
 * the count sent so far (the error shows again on the next call). */
static int conn_sendmmsg(struct sansock_conn *c, int fd, struct mmsghdr *v, unsigned n, int flags)
{
    if (n > UIO_MAXIOV)
        n = UIO_MAXIOV;
    if (n && !v)
        return (int)sansock_fail(-EFAULT);
    unsigned done = 0;
    for (; done < n; done++) {
        ssize_t r = conn_sendmsg(c, fd, &v[done].msg_hdr, flags);
        if (r < 0) {
            if (r == -EPIPE && !(flags & MSG_NOSIGNAL))
                raise(SIGPIPE);
            if (!done)
                return (int)sansock_fail(r);
            break;
        }
        v[done].msg_len = (unsigned)r;
    }
    return (int)done;
}

static uint64_t mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* recvmmsg as Linux: each message in turn (MSG_WAITFORONE: only the first may wait); the timeout
 * is looked at after each message, and what is left of it is written back. */
static int conn_recvmmsg(struct sansock_conn *c, int fd, struct mmsghdr *v, unsigned n, int flags,
                         struct timespec *tmo)
{
    if (tmo && (tmo->tv_sec < 0 || tmo->tv_nsec < 0 || tmo->tv_nsec >= 1000000000))
        return (int)sansock_fail(-EINVAL);
    if (n > UIO_MAXIOV)
        n = UIO_MAXIOV;
    if (n && !v)
        return (int)sansock_fail(-EFAULT);
    uint64_t end = 0;
    if (tmo)
        end = mono_ns() + (uint64_t)tmo->tv_sec * 1000000000u + (uint64_t)tmo->tv_nsec;
    unsigned done = 0;
    int f = flags & ~MSG_WAITFORONE;
    for (; done < n; done++) {
        ssize_t r = conn_recvmsg(c, fd, &v[done].msg_hdr, f);
        if (r < 0) {
            if (!done)
                return (int)sansock_fail(r);
            break;
        }
        v[done].msg_len = (unsigned)r;
        if (flags & MSG_WAITFORONE)
            f |= MSG_DONTWAIT;
        if (tmo && mono_ns() >= end) {
            done++;
            break;
        }
    }
    if (tmo) {
        uint64_t now = mono_ns(), left = now < end ? end - now : 0;
        tmo->tv_sec = (time_t)(left / 1000000000u);
        tmo->tv_nsec = (long)(left % 1000000000u);
    }
    return (int)done;
}

EXPORT int sendmmsg(int fd, struct mmsghdr *v, unsigned n, int flags)
{
    ON_CONN(fd, conn_sendmmsg(c, fd, v, n, flags), REAL(sendmmsg)(fd, v, n, flags));
}

EXPORT int recvmmsg(int fd, struct mmsghdr *v, unsigned n, int flags, struct timespec *tmo)
{
    ON_CONN(fd, conn_recvmmsg(c, fd, v, n, flags, tmo), REAL(recvmmsg)(fd, v, n, flags, tmo));
}
