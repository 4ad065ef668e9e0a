/* One SAN connection of the sockets switch: its registered buffers, the session protocol
 * (negotiation, credits, data inline, shutdown) over one libsan endpoint, and waiting for
 * progress (docs/sock.md). Everything the peer sends goes through sansock_wire_decode; a message
 * it rejects, or a NIC error, resets the connection and closes the endpoint (the peer's NIC tells
 * it ECONNRESET).
 * Locking: conn->lock guards all of a connection's state and every libsan call on its endpoint;
 * it is dropped while waiting. Any thread may call any function here. */
#ifndef SANSOCK_SESSION_H
#define SANSOCK_SESSION_H

#include <poll.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/uio.h>

#include <san/san.h>

#include "sock/fdtab.h"
#include "sock/wait.h"
#include "sock/wire.h"

struct sansock_conn;

/* Sets up a connection on ep (consumed: closed on failure): allocates and registers its buffers,
 * posts its receives and sends NEGOTIATE naming src (the connector's local address) and dst (the
 * address connected to). The object has one reference (the caller's). Blocks for a few round
 * trips to the daemon, and until the NEGOTIATE is delivered (the listener's side holds it, so its
 * accept sees this connection before any connected after it), SANSOCK_CONNECT_TIMEOUT_MS at most.
 */
int sansock_conn_create(struct san_ctx *ctx, struct san_ep *ep, const struct sansock_wire_addr *src,
                        const struct sansock_wire_addr *dst, struct sansock_conn **out);
/* An accepted connection (listen.c's embryo) on ep (consumed: closed on failure): holds only what
 * receiving the peer's NEGOTIATE needs (one receive of 256 bytes of proxy memory); when that
 * arrives, the buffers are set up and our NEGOTIATE sent as sansock_conn_create does (a failure
 * then resets it: sansock_conn_negotiation says -ECONNRESET). Blocks for a few round trips to
 * the daemon, here and at the peer's NEGOTIATE. */
int sansock_conn_create_embryo(struct san_ctx *ctx, struct san_ep *ep,
                               const struct sansock_wire_addr *src,
                               const struct sansock_wire_addr *dst, struct sansock_conn **out);
/* A non-blocking connect's connection while its SAN connect is under way (san_connect_start done,
 * ep consumed): no buffers yet. Whatever call looks at it first once the daemon's outcome is
 * known (poll, epoll, send, recv, SO_ERROR, connect) sets it up and sends NEGOTIATE; a refusal,
 * SANSOCK_CONNECT_TIMEOUT_MS without an outcome, or a failed setup hands fd to the kernel's
 * connect to `to` (every descriptor naming it leaves the table). */
int sansock_conn_create_connecting(struct san_ctx *ctx, struct san_ep *ep, int fd,
                                   const struct sockaddr *to, socklen_t tolen,
                                   const struct sansock_wire_addr *src,
                                   const struct sansock_wire_addr *dst, struct sansock_conn **out);
/* connect on a connection: -EALREADY while its SAN connect is under way, 0 the first time after a
 * non-blocking one completed (Linux's answer), -EISCONN after, 1 when it went to the kernel. */
int sansock_conn_connect_again(struct sansock_conn *c);
/* Whether its connect went to the kernel (epoll moves such a member to its kernel instance). */
bool sansock_conn_handed_over(struct sansock_conn *c);
/* ... and fd is still that kernel socket (not a number the program closed and reused). */
bool sansock_conn_handed_to(struct sansock_conn *c, int fd);
struct sansock_obj *sansock_conn_obj(struct sansock_conn *c);
struct sansock_conn *sansock_obj_conn(struct sansock_obj *o);

/* Whether the peer's NEGOTIATE arrived, without waiting (accept's embryos): 1 yes, 0 not yet,
 * -ECONNRESET never will (the peer sent garbage or closed). */
int sansock_conn_negotiation(struct sansock_conn *c);
/* The peer's addresses from its negotiation (the acceptor's view): src and dst. */
void sansock_conn_peer_addrs(struct sansock_conn *c, struct sansock_wire_addr *src,
                             struct sansock_wire_addr *dst);
/* Sets the addresses getsockname and getpeername report. */
void sansock_conn_set_names(struct sansock_conn *c, const struct sansock_wire_addr *local,
                            const struct sansock_wire_addr *peer);
/* The addresses they report: 0; -ENOTCONN while a non-blocking connect is under way (no peer
 * yet); 1 when the connect went to the kernel (its socket says). */
int sansock_conn_names(struct sansock_conn *c, struct sansock_wire_addr *local,
                       struct sansock_wire_addr *peer);

/* Stream I/O as the socket calls do: bytes moved or a negative errno (-EAGAIN, -EINTR, -EPIPE,
 * -ECONNRESET). fd is the descriptor the call came on (its cached O_NONBLOCK is looked at when the
 * call would wait, and the kernel's before it sleeps: fdtab.h); a send returns once its bytes are
 * posted or pending (waiting for a credit, posted by later progress); flags: MSG_DONTWAIT, and for
 * receive MSG_PEEK, MSG_WAITALL, MSG_TRUNC (the bytes are consumed without being copied: the
 * buffers may be NULL). MSG_OOB: send -EOPNOTSUPP, receive -EINVAL (TCP's answer without urgent
 * data); MSG_ERRQUEUE: receive -EAGAIN. */
ssize_t sansock_conn_send(struct sansock_conn *c, int fd, const void *buf, size_t len, int flags);
ssize_t sansock_conn_recv(struct sansock_conn *c, int fd, void *buf, size_t len, int flags);
/* The same over an iovec array (the caller checked iovcnt and that the lengths' sum fits a
 * ssize_t): the pieces are one stream, so many small pieces travel in few messages. */
ssize_t sansock_conn_sendv(struct sansock_conn *c, int fd, const struct iovec *iov, int iovcnt,
                           int flags);
ssize_t sansock_conn_recvv(struct sansock_conn *c, int fd, const struct iovec *iov, int iovcnt,
                           int flags);
/* SHUT_RD, SHUT_WR, SHUT_RDWR: 0, -EINVAL, -ENOTCONN. Never blocks (SHUTDOWN is sent as soon as a
 * credit allows). */
int sansock_conn_shutdown(struct sansock_conn *c, int how);

/* Readiness for poll: POLLIN/POLLOUT/POLLRDHUP/POLLHUP/POLLERR from the connection's state, after
 * polling its completions. If none of events (plus POLLERR/POLLHUP) is ready and w is not NULL,
 * links w (w->fd set by the caller) as a waiter and fills wait with what to sleep on (fd -1:
 * unused): the endpoint's completion descriptor; while connecting also the connect's timer; once
 * handed to the kernel, the kernel socket itself with the events asked. Nothing is ready while
 * the connect is under way. */
short sansock_conn_events(struct sansock_conn *c, short events, struct sansock_waiter *w,
                          struct pollfd wait[2]);
/* sansock_conn_events for epoll (epoll.c): with always, w is linked even when something is ready
 * (an edge-triggered waiter sleeps on a ready connection); *seq (if not NULL) gets the
 * connection's change count, which moves on every progress or change of state. */
short sansock_conn_watch(struct sansock_conn *c, short events, struct sansock_waiter *w,
                         bool always, struct pollfd wait[2], unsigned *seq);
/* Unlinks a waiter linked by sansock_conn_events or sansock_conn_watch. */
void sansock_conn_unwait(struct sansock_conn *c, struct sansock_waiter *w);

/* What ioctl and getsockopt report (after polling completions). */
struct sansock_conn_state {
    size_t inq;      /* bytes readable now */
    size_t outq;     /* bytes written and not yet in the peer's receive buffers */
    size_t unsent;   /* of those, bytes waiting for a credit (not posted to the NIC yet) */
    uint32_t rcvbuf; /* bytes this side's posted receives hold */
    uint32_t sndbuf; /* bytes the peer's receives hold for us: what can be in flight */
    uint32_t mss;    /* the most data bytes one message carries */
    bool negotiated, peer_eof, wr_shut;
    int err; /* the connection is reset: -ECONNRESET (or the NIC's error) */
};
void sansock_conn_state(struct sansock_conn *c, struct sansock_conn_state *st);
/* The pending error for SO_ERROR (negative errno, or 0), cleared: TCP reports a reset once. */
int sansock_conn_take_error(struct sansock_conn *c);
/* The process exits with c open (libsansock's destructor): waits until what was written, the
 * pending bytes too, and a SHUTDOWN reached the peer, or deadline_ns (CLOCK_MONOTONIC), so that
 * the peer reads every byte and then EOF, as from TCP, rather than ECONNRESET when the daemon
 * closes the dead process's endpoint. Writes by threads still running may follow the SHUTDOWN:
 * the peer drops them. */
void sansock_conn_exit(struct sansock_conn *c, uint64_t deadline_ns);
/* SO_LINGER {1, 0}: close drops what is unsent and resets the peer instead of delivering. */
void sansock_conn_set_abort(struct sansock_conn *c, bool abort_close);

#endif
