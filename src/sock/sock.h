/* The socket calls the switch implements for SAN sockets, called by interpose.c: connect
 * (connect.c), listen and accept (listen.c), poll and ppoll (poll.c), select and pselect
 * (select.c), epoll (epoll.c). Each takes the
 * descriptor as the program gave it and returns what the libc call returns (-1 with errno on
 * failure). */
#ifndef SANSOCK_SOCK_H
#define SANSOCK_SOCK_H

#include <poll.h>
#include <stdbool.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/select.h>
#include <sys/socket.h>

#include "sock/fdtab.h"

int sansock_connect(int fd, const struct sockaddr *addr, socklen_t len);
int sansock_listen(int fd, int backlog);
struct sansock_wire_addr;
/* Whether this process has a SAN listener at to (in the wire's form). */
bool sansock_listen_local(const struct sansock_wire_addr *to);
/* For a connect to one of this process's own SAN listeners: looks at the listeners at to as accept
 * would (takes the daemon's backlog into embryos), so that the connect completes even when the
 * thread that would accept is the one connecting. */
void sansock_listen_tend_for(const struct sansock_wire_addr *to);
void sansock_listen_atfork_child(void);
/* accept4 on a listener of the switch. */
int sansock_accept(int fd, struct sansock_obj *lsn, struct sockaddr *addr, socklen_t *len,
                   int flags);
/* What to sleep on for a listener object's SAN half besides its kernel socket (none in a forked
 * child): how many descriptors. Readable means "look again" (sansock_listener_ready), not ready. */
int sansock_listener_fds(struct sansock_obj *lsn, int fds[2]);
/* Looks at the SAN half without waiting (takes new connections, tends the ones whose NEGOTIATE has
 * not come): whether a complete SAN connection waits for accept. */
bool sansock_listener_ready(struct sansock_obj *lsn);
/* Accept calls plus SAN connections completed on a listener object so far (epoll's edge-triggered
 * mode: a listener that changed since it was reported may be reported again). */
unsigned sansock_listener_accepts(struct sansock_obj *lsn);
int sansock_poll(struct pollfd *fds, nfds_t n, int timeout);
/* ppoll (poll.c); poll is this with as_poll (a set without SAN sockets goes to the kernel's poll
 * then, else to its ppoll). */
int sansock_ppoll(struct pollfd *fds, nfds_t n, const struct timespec *timeout,
                  const sigset_t *mask, bool as_poll);
/* select and pselect (select.c), as sansock_ppoll. */
int sansock_select(int n, fd_set *r, fd_set *w, fd_set *x, struct timeval *tv);
int sansock_pselect(int n, fd_set *r, fd_set *w, fd_set *x, const struct timespec *timeout,
                    const sigset_t *mask);

/* epoll (epoll.c). The program's epoll descriptor stays the kernel's instance for its kernel
 * members; SAN members live in an object of the descriptor table at the epoll descriptor. */
int sansock_epoll_create(int fd);
int sansock_epoll_ctl(int epfd, int op, int fd, struct epoll_event *ev);
int sansock_epoll_wait(int epfd, struct epoll_event *events, int max,
                       const struct timespec *timeout, const sigset_t *mask, int kind);
/* The kernel call sansock_epoll_wait stands for (its kind argument). */
enum { SANSOCK_EPOLL_WAIT, SANSOCK_EPOLL_PWAIT, SANSOCK_EPOLL_PWAIT2 };
/* fd, which named the socket o, is closed or reused: o leaves every epoll set it was added to
 * under that number. */
void sansock_epoll_forget(int fd, struct sansock_obj *o);

#endif
