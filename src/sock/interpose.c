/* The libc names libsansock.so exports (the version script sansock.map lists exactly these).
 * Each looks the descriptor up (lock-free when it is not a SAN socket) and either goes to the
 * switch or to the real function. Errors follow libc: -1 and errno. The constructor resolves the
 * real functions, reads the environment and installs the fork handler. */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#include "common/clock.h"
#include "sock/export.h"
#include "sock/finish.h"
#include "sock/real.h"
#include "sock/san.h"
#include "sock/session.h"
#include "sock/sock.h"

/* With _GNU_SOURCE glibc declares the address parameters as transparent unions. */
#if defined __USE_GNU && !defined __cplusplus
#define SA(a) ((a).__sockaddr__)
#else
#define SA(a) (a)
#endif

static void sansock_exit(void);

__attribute__((constructor)) static void sansock_init(void)
{
    sansock_real_resolve();
    sansock_config_load();
    sansock_san_init();
    atexit(sansock_exit);
}

#define EXIT_MS 1000 /* the most exit waits for the connections' last bytes */

static void exit_conn(struct sansock_obj *o, void *deadline)
{
    struct sansock_conn *c = sansock_obj_conn(o);
    if (c)
        sansock_conn_exit(c, *(uint64_t *)deadline);
}

/* exit() with SAN connections open: the kernel would deliver a TCP socket's last bytes and FIN;
 * here nothing runs after the process, so its connections send theirs now (bounded), and the
 * finisher then stops. An exit handler rather than a destructor: registered after the program's
 * runtime started, it runs before the handlers registered earlier (LeakSanitizer's check among
 * them, which must not find the finisher at work: sansock_finish_wait_idle) and before any
 * library's destructor. */
static void sansock_exit(void)
{
    int e = errno;
    uint64_t deadline = san_now_ns() + EXIT_MS * 1000000ull;
    sansock_fd_each(exit_conn, &deadline);
    sansock_finish_wait_idle(deadline);
    errno = e;
}

#define fail        sansock_fail
#define send_result sansock_send_result

EXPORT int connect(int fd, __CONST_SOCKADDR_ARG addr, socklen_t len)
{
    return sansock_connect(fd, SA(addr), len);
}

EXPORT int listen(int fd, int backlog)
{
    return sansock_listen(fd, backlog);
}

EXPORT int accept4(int fd, __SOCKADDR_ARG addr, socklen_t *len, int flags)
{
    struct sansock_obj *o = sansock_fd_get(fd);
    if (!o || o->kind != SANSOCK_LISTENER) {
        sansock_obj_put(o);
        return REAL(accept4)(fd, SA(addr), len, flags);
    }
    int r = sansock_accept(fd, o, SA(addr), len, flags);
    int e = errno;
    sansock_obj_put(o);
    errno = e;
    return r;
}

EXPORT int accept(int fd, __SOCKADDR_ARG addr, socklen_t *len)
{
    return accept4(fd, addr, len, 0);
}

EXPORT ssize_t read(int fd, void *buf, size_t n)
{
    ON_CONN(fd, fail(sansock_conn_recv(c, fd, buf, n, 0)), REAL(read)(fd, buf, n));
}

EXPORT ssize_t recv(int fd, void *buf, size_t n, int flags)
{
    ON_CONN(fd, fail(sansock_conn_recv(c, fd, buf, n, flags)), REAL(recv)(fd, buf, n, flags));
}

EXPORT ssize_t recvfrom(int fd, void *buf, size_t n, int flags, __SOCKADDR_ARG addr, socklen_t *len)
{
    /* A connected stream socket names no source: the length comes back 0. */
    ON_CONN(fd, (len ? (void)(*len = 0) : (void)0, fail(sansock_conn_recv(c, fd, buf, n, flags))),
            REAL(recvfrom)(fd, buf, n, flags, SA(addr), len));
}

EXPORT ssize_t write(int fd, const void *buf, size_t n)
{
    ON_CONN(fd, send_result(sansock_conn_send(c, fd, buf, n, 0), 0), REAL(write)(fd, buf, n));
}

EXPORT ssize_t send(int fd, const void *buf, size_t n, int flags)
{
    ON_CONN(fd, send_result(sansock_conn_send(c, fd, buf, n, flags), flags),
            REAL(send)(fd, buf, n, flags));
}

EXPORT ssize_t sendto(int fd, const void *buf, size_t n, int flags, __CONST_SOCKADDR_ARG addr,
                      socklen_t len)
{
    ON_CONN(fd, send_result(sansock_conn_send(c, fd, buf, n, flags), flags),
            REAL(sendto)(fd, buf, n, flags, SA(addr), len));
}

EXPORT int shutdown(int fd, int how)
{
    ON_CONN(fd, (int)fail(sansock_conn_shutdown(c, how)), REAL(shutdown)(fd, how));
}

/* A connect under way has no peer yet (ENOTCONN, as TCP); one handed to the kernel meanwhile is
 * the kernel's to name. */
static int name_of(struct sansock_conn *c, int fd, bool peer, struct sockaddr *addr, socklen_t *len)
{
    struct sansock_wire_addr local, remote;
    if (!len) {
        errno = EFAULT;
        return -1;
    }
    int r = sansock_conn_names(c, &local, &remote);
    if (r > 0)
        return peer ? REAL(getpeername)(fd, addr, len) : REAL(getsockname)(fd, addr, len);
    if (r < 0 && peer) {
        errno = -r;
        return -1;
    }
    sansock_wire_addr_to(peer ? &remote : &local, addr, len);
    return 0;
}

EXPORT int getsockname(int fd, __SOCKADDR_ARG addr, socklen_t *len)
{
    ON_CONN(fd, name_of(c, fd, false, SA(addr), len), REAL(getsockname)(fd, SA(addr), len));
}

EXPORT int getpeername(int fd, __SOCKADDR_ARG addr, socklen_t *len)
{
    ON_CONN(fd, name_of(c, fd, true, SA(addr), len), REAL(getpeername)(fd, SA(addr), len));
}

EXPORT int poll(struct pollfd *fds, nfds_t n, int timeout)
{
    return sansock_poll(fds, n, timeout);
}

EXPORT int select(int n, fd_set *r, fd_set *w, fd_set *x, struct timeval *tv)
{
    return sansock_select(n, r, w, x, tv);
}

EXPORT int close(int fd)
{
    struct sansock_obj *o = sansock_fd_take(fd);
    int r = REAL(close)(fd);
    int e = errno;
    sansock_obj_put(o);
    errno = e;
    return r;
}

/* newfd now names what oldfd names (after a successful dup of any kind). */
static void dup_entry(int oldfd, int newfd)
{
    struct sansock_obj *o = sansock_fd_get(oldfd);
    if (o) {
        int e = errno;
        sansock_fd_set(newfd, o);
        sansock_obj_put(o);
        errno = e;
    }
}

EXPORT int dup(int fd)
{
    int r = REAL(dup)(fd);
    if (r >= 0)
        dup_entry(fd, r);
    return r;
}

static int dup_over(int oldfd, int newfd, int flags, bool three)
{
    if (oldfd == newfd)
        return three ? REAL(dup3)(oldfd, newfd, flags) : REAL(dup2)(oldfd, newfd);
    int r = three ? REAL(dup3)(oldfd, newfd, flags) : REAL(dup2)(oldfd, newfd);
    if (r < 0)
        return r;
    int e = errno;
    sansock_obj_put(sansock_fd_take(newfd)); /* the kernel closed what newfd was */
    dup_entry(oldfd, newfd);
    errno = e;
    return r;
}

EXPORT int dup2(int oldfd, int newfd)
{
    return dup_over(oldfd, newfd, 0, false);
}

EXPORT int dup3(int oldfd, int newfd, int flags)
{
    return dup_over(oldfd, newfd, flags, true);
}

static int fcntl_common(int (*real)(int, int, ...), int fd, int cmd, void *arg)
{
    struct sansock_obj *o = cmd == F_SETFL ? sansock_fd_get(fd) : NULL;
    if (o) { /* the switch's cached O_NONBLOCK follows (fdtab.h) */
        sansock_nonblock_lock();
        int r = real(fd, cmd, arg);
        int e = errno;
        if (r >= 0)
            sansock_obj_set_nonblock(o, (int)(intptr_t)arg & O_NONBLOCK);
        sansock_nonblock_unlock();
        sansock_obj_put(o);
        errno = e;
        return r;
    }
    int r = real(fd, cmd, arg);
    if (r >= 0 && (cmd == F_DUPFD || cmd == F_DUPFD_CLOEXEC))
        dup_entry(fd, r);
    return r;
}

EXPORT int fcntl(int fd, int cmd, ...)
{
    va_list ap;
    va_start(ap, cmd);
    void *arg = va_arg(ap, void *); /* as glibc's own fcntl reads it, whatever the command */
    va_end(ap);
    return fcntl_common(REAL(fcntl), fd, cmd, arg);
}

EXPORT int fcntl64(int fd, int cmd, ...)
{
    va_list ap;
    va_start(ap, cmd);
    void *arg = va_arg(ap, void *);
    va_end(ap);
    return fcntl_common(REAL(fcntl64), fd, cmd, arg);
}

EXPORT int close_range(unsigned first, unsigned last, int flags)
{
    int r = REAL(close_range)(first, last, flags);
    if (!r && !(flags & CLOSE_RANGE_CLOEXEC)) {
        int e = errno;
        sansock_fd_drop_range(first, last);
        errno = e;
    }
    return r;
}

EXPORT void closefrom(int lowfd)
{
    REAL(closefrom)(lowfd);
    int e = errno;
    if (lowfd >= 0)
        sansock_fd_drop_range((unsigned)lowfd, ~0u);
    errno = e;
}

EXPORT int ppoll(struct pollfd *fds, nfds_t n, const struct timespec *to, const sigset_t *mask)
{
    return sansock_ppoll(fds, n, to, mask, false);
}

EXPORT int pselect(int n, fd_set *r, fd_set *w, fd_set *x, const struct timespec *to,
                   const sigset_t *mask)
{
    return sansock_pselect(n, r, w, x, to, mask);
}

EXPORT int epoll_create(int size)
{
    return sansock_epoll_create(REAL(epoll_create)(size));
}

EXPORT int epoll_create1(int flags)
{
    return sansock_epoll_create(REAL(epoll_create1)(flags));
}

EXPORT int epoll_ctl(int epfd, int op, int fd, struct epoll_event *ev)
{
    return sansock_epoll_ctl(epfd, op, fd, ev);
}

static struct timespec *ms_to_ts(int ms, struct timespec *ts)
{
    if (ms < 0)
        return NULL;
    *ts = (struct timespec){.tv_sec = ms / 1000, .tv_nsec = ms % 1000 * 1000000L};
    return ts;
}

EXPORT int epoll_wait(int epfd, struct epoll_event *ev, int max, int timeout)
{
    struct timespec ts;
    return sansock_epoll_wait(epfd, ev, max, ms_to_ts(timeout, &ts), NULL, SANSOCK_EPOLL_WAIT);
}

EXPORT int epoll_pwait(int epfd, struct epoll_event *ev, int max, int timeout, const sigset_t *mask)
{
    struct timespec ts;
    return sansock_epoll_wait(epfd, ev, max, ms_to_ts(timeout, &ts), mask, SANSOCK_EPOLL_PWAIT);
}

EXPORT int epoll_pwait2(int epfd, struct epoll_event *ev, int max, const struct timespec *to,
                        const sigset_t *mask)
{
    return sansock_epoll_wait(epfd, ev, max, to, mask, SANSOCK_EPOLL_PWAIT2);
}
