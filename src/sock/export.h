/* What every file that defines exported libc names shares: the visibility of an export (the
 * version script sansock.map lists exactly those names) and the way results become libc's
 * (-1 and errno). */
#ifndef SANSOCK_EXPORT_H
#define SANSOCK_EXPORT_H

#include <errno.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/types.h>

#include "sock/fdtab.h"
#include "sock/session.h"

#define EXPORT __attribute__((visibility("default")))

/* A negative errno as libc returns it: -1 with errno set. */
static inline ssize_t sansock_fail(ssize_t r)
{
    if (r >= 0)
        return r;
    errno = (int)-r;
    return -1;
}

/* EPIPE on a stream socket raises SIGPIPE unless MSG_NOSIGNAL, as the kernel does. */
static inline ssize_t sansock_send_result(ssize_t r, int flags)
{
    if (r == -EPIPE && !(flags & MSG_NOSIGNAL))
        raise(SIGPIPE);
    return sansock_fail(r);
}

/* Runs expr with c bound to fd's connection, else falls through to the kernel. */
#define ON_CONN(fd, expr, kernel)                                                                  \
    do {                                                                                           \
        struct sansock_obj *o_ = sansock_fd_get(fd);                                               \
        struct sansock_conn *c = sansock_obj_conn(o_);                                             \
        if (!c) {                                                                                  \
            sansock_obj_put(o_);                                                                   \
            return kernel;                                                                         \
        }                                                                                          \
        ssize_t r_ = (expr);                                                                       \
        sansock_obj_put(o_);                                                                       \
        return r_;                                                                                 \
    } while (0)

#endif
