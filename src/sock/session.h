/* One SAN connection of the sockets switch: its registered buffers, the session protocol
 * (negotiation, credits, data inline, shutdown) over one libsan endpoint, and waiting for
 * progress (docs/sock.md). Everything the peer sends goes through sansock_wire_decode; a message
 * it rejects, or a NIC error, resets the connection and closes the endpoint (the peer's NIC tells
 * it ECONNRESET).
 * Locking: conn->lock guards all of a connection's state and every libsan call on its endpoint;
 * it is dropped while waiting. Any thread may call any function here. */
#ifndef SANSOCK_SESSION_H
#define SANSOCK_SESSION_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include <san/san.h>

#include "sock/fdtab.h"
#include "sock/wait.h"
#include "sock/wire.h"

struct sansock_conn;

/* Sets up a connection on ep (consumed: closed on failure): allocates and registers its buffers,
 * posts its receives and sends NEGOTIATE naming src (the connector's local address) and dst (the
 * address connected to). The object has one reference (the caller's). Blocks for a few round
 * trips to the daemon. */
int sansock_conn_create(struct san_ctx *ctx, struct san_ep *ep, const struct sansock_wire_addr *src,
                        const struct sansock_wire_addr *dst, struct sansock_conn **out);
struct sansock_obj *sansock_conn_obj(struct sansock_conn *c);
struct sansock_conn *sansock_obj_conn(struct sansock_obj *o);

/* Waits up to timeout_ms for the peer's NEGOTIATE: 0, -ETIMEDOUT, -ECONNRESET. */
int sansock_conn_wait_negotiated(struct sansock_conn *c, int timeout_ms);
/* The peer's addresses from its negotiation (the acceptor's view): src and dst. */
void sansock_conn_peer_addrs(struct sansock_conn *c, struct sansock_wire_addr *src,
                             struct sansock_wire_addr *dst);
/* Sets the addresses getsockname and getpeername report. */
void sansock_conn_set_names(struct sansock_conn *c, const struct sansock_wire_addr *local,
                            const struct sansock_wire_addr *peer);
void sansock_conn_names(struct sansock_conn *c, struct sansock_wire_addr *local,
                        struct sansock_wire_addr *peer);

/* Stream I/O as the socket calls do: bytes moved or a negative errno (-EAGAIN, -EINTR, -EPIPE,
 * -ECONNRESET). fd is the descriptor the call came on (its O_NONBLOCK is read when the call would
 * wait); flags: MSG_DONTWAIT, and for receive MSG_PEEK, MSG_WAITALL. */
ssize_t sansock_conn_send(struct sansock_conn *c, int fd, const void *buf, size_t len, int flags);
ssize_t sansock_conn_recv(struct sansock_conn *c, int fd, void *buf, size_t len, int flags);
/* SHUT_RD, SHUT_WR, SHUT_RDWR: 0, -EINVAL, -ENOTCONN. Never blocks (SHUTDOWN is sent as soon as a
 * credit allows). */
int sansock_conn_shutdown(struct sansock_conn *c, int how);

/* Readiness for poll: POLLIN/POLLOUT/POLLRDHUP/POLLHUP/POLLERR from the connection's state, after
 * polling its completions. If none of events (plus POLLERR/POLLHUP) is ready and w is not NULL,
 * links w (w->fd set by the caller) as a waiter and sets *wait_fd to the endpoint's completion
 * descriptor (or -1). */
short sansock_conn_events(struct sansock_conn *c, short events, struct sansock_waiter *w,
                          int *wait_fd);
/* Unlinks a waiter linked by sansock_conn_events. */
void sansock_conn_unwait(struct sansock_conn *c, struct sansock_waiter *w);

#endif
