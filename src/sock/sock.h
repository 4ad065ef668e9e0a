/* The socket calls the switch implements for SAN sockets, called by interpose.c: connect
 * (connect.c), listen and accept (listen.c), poll (poll.c), select (select.c). Each takes the
 * descriptor as the program gave it and returns what the libc call returns (-1 with errno on
 * failure). */
#ifndef SANSOCK_SOCK_H
#define SANSOCK_SOCK_H

#include <poll.h>
#include <stdbool.h>
#include <sys/select.h>
#include <sys/socket.h>

#include "sock/fdtab.h"

int sansock_connect(int fd, const struct sockaddr *addr, socklen_t len);
int sansock_listen(int fd, int backlog);
/* accept4 on a listener of the switch. */
int sansock_accept(int fd, struct sansock_obj *lsn, struct sockaddr *addr, socklen_t *len,
                   int flags);
/* The SAN listeners' descriptors of a listener object (none in a forked child): how many. */
int sansock_listener_fds(struct sansock_obj *lsn, int fds[2]);
int sansock_poll(struct pollfd *fds, nfds_t n, int timeout);
/* select (select.c), as sansock_poll. */
int sansock_select(int n, fd_set *r, fd_set *w, fd_set *x, struct timeval *tv);

#endif
