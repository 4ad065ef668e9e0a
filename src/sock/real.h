/* The real libc functions under the interposer (resolved with dlsym(RTLD_NEXT)), and the
 * switch's settings from the environment. Resolution happens in the library's constructor; a call
 * that comes earlier (another library's constructor) resolves on first use. No locking: pointers
 * are written once with the same value by whoever resolves (relaxed atomics). */
#ifndef SANSOCK_REAL_H
#define SANSOCK_REAL_H

#include <poll.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/select.h>
#include <stdbool.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/uio.h>

struct sansock_real {
    int (*connect)(int, const struct sockaddr *, socklen_t);
    int (*listen)(int, int);
    int (*accept)(int, struct sockaddr *, socklen_t *);
    int (*accept4)(int, struct sockaddr *, socklen_t *, int);
    ssize_t (*read)(int, void *, size_t);
    ssize_t (*write)(int, const void *, size_t);
    ssize_t (*readv)(int, const struct iovec *, int);
    ssize_t (*writev)(int, const struct iovec *, int);
    ssize_t (*send)(int, const void *, size_t, int);
    ssize_t (*recv)(int, void *, size_t, int);
    ssize_t (*sendto)(int, const void *, size_t, int, const struct sockaddr *, socklen_t);
    ssize_t (*recvfrom)(int, void *, size_t, int, struct sockaddr *, socklen_t *);
    ssize_t (*sendmsg)(int, const struct msghdr *, int);
    ssize_t (*recvmsg)(int, struct msghdr *, int);
    int (*sendmmsg)(int, struct mmsghdr *, unsigned, int);
    int (*recvmmsg)(int, struct mmsghdr *, unsigned, int, struct timespec *);
    ssize_t (*sendfile)(int, int, off_t *, size_t);
    ssize_t (*sendfile64)(int, int, off_t *, size_t);
    int (*close)(int);
    int (*shutdown)(int, int);
    int (*getsockname)(int, struct sockaddr *, socklen_t *);
    int (*getpeername)(int, struct sockaddr *, socklen_t *);
    int (*getsockopt)(int, int, int, void *, socklen_t *);
    int (*setsockopt)(int, int, int, const void *, socklen_t);
    int (*ioctl)(int, unsigned long, ...);
    int (*poll)(struct pollfd *, nfds_t, int);
    int (*select)(int, fd_set *, fd_set *, fd_set *, struct timeval *);
    int (*dup)(int);
    int (*dup2)(int, int);
    int (*dup3)(int, int, int);
    int (*fcntl)(int, int, ...);
    int (*fcntl64)(int, int, ...);
    int (*close_range)(unsigned, unsigned, int);
    void (*closefrom)(int);
    int (*ppoll)(struct pollfd *, nfds_t, const struct timespec *, const sigset_t *);
    int (*pselect)(int, fd_set *, fd_set *, fd_set *, const struct timespec *, const sigset_t *);
    int (*epoll_create)(int);
    int (*epoll_create1)(int);
    int (*epoll_ctl)(int, int, int, struct epoll_event *);
    int (*epoll_wait)(int, struct epoll_event *, int, int);
    int (*epoll_pwait)(int, struct epoll_event *, int, int, const sigset_t *);
    int (*epoll_pwait2)(int, struct epoll_event *, int, const struct timespec *, const sigset_t *);
};

extern struct sansock_real sansock_real_fns;
void sansock_real_resolve(void);

/* The real function `name`, resolved if nothing resolved it yet. */
#define REAL(name)                                                                                 \
    (__atomic_load_n(&sansock_real_fns.name, __ATOMIC_RELAXED)                                     \
         ? sansock_real_fns.name                                                                   \
         : (sansock_real_resolve(), sansock_real_fns.name))

struct sansock_config {
    bool disabled;           /* SANSOCK_DISABLE=1: everything to the kernel */
    unsigned rdma_threshold; /* SANSOCK_RDMA_THRESHOLD: larger writes go by RDMA */
    bool rdma;               /* SANSOCK_RDMA (default 1): 0 announces no RDMA mode (all inline) */
    unsigned rdma_write;     /* SANSOCK_RDMA_WRITE: 0 announces read mode only; write mode's sinks
                                are the staging sink (SANSOCK_SINK_STAGED) or the program's
                                buffer (SANSOCK_SINK_PROGRAM) */
    int connect_timeout_ms;  /* SANSOCK_CONNECT_TIMEOUT_MS */
    bool map;                /* SANSOCK_MAP=0 off: read mode reads a same-host peer's staging
                              * through a mapping of it (san_rdma_map), without the NIC's copy */
    bool coalesce;           /* SANSOCK_COALESCE=1: a write without a credit joins the pending slot
                              * and returns (docs/sock.md, coalescing: lost if the process dies
                              * by _exit or a signal before the slot is posted) */
    unsigned linger_ms;      /* SANSOCK_LINGER_MS: the most a closed connection is finished */
    unsigned max_orphans;    /* SANSOCK_MAX_ORPHANS: the most closed connections the finisher
                              * holds (0: no cap); over it the oldest is reset (finish.c) */
    bool log;                /* SANSOCK_LOG=1: the switch says what it did on stderr (log.h) */
};
enum { SANSOCK_SINK_STAGED = 1, SANSOCK_SINK_PROGRAM = 2 };
extern struct sansock_config sansock_cfg;
void sansock_config_load(void);

/* Whether a blocking call on fd would have to wait: MSG_DONTWAIT in flags, or the file's
 * O_NONBLOCK (read from the kernel, so fcntl and FIONBIO by anyone are seen). */
bool sansock_nonblocking(int fd, int flags);

#endif
