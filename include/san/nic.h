/* Endpoints of the software SAN NIC: reliable connected queue pairs between libsan contexts,
 * with send/receive, RDMA write/read and completions (WSPSend/WSPRecv, WSPRdmaWrite/WSPRdmaRead).
 *
 * An endpoint's send, receive and completion queues live in memory shared with sanproxyd's NIC:
 * posting and polling make no system call while the NIC is awake. The NIC checks every access as
 * a target NIC does (docs/nic.md). An endpoint belongs to the context that made it; everything
 * here is thread-safe. */
#ifndef SAN_NIC_H
#define SAN_NIC_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include <san/client.h>
#include <san/export.h>

#ifdef __cplusplus
extern "C" {
#endif

struct san_listener;
struct san_ep;

/* Listens on addr (IPv4 or IPv6 socket address with a port) on the SAN. -EADDRINUSE when a
 * listener has it; -EADDRNOTAVAIL when this host does not serve it ([nic] addresses); -EINVAL for
 * a malformed address or backlog < 1. A backlog of connections waiting for san_accept, capped by
 * the daemon; connections beyond it are refused. Blocks for one round trip. */
SAN_API int san_listen(struct san_ctx *ctx, const struct sockaddr *addr, socklen_t addrlen,
                       int backlog, struct san_listener **out);
/* Readable (poll/epoll) while a connection waits for san_accept. */
SAN_API int san_listener_fd(const struct san_listener *l);
/* Takes a waiting connection. timeout_ms: 0 polls, -1 waits forever. -EAGAIN (nothing waits and
 * timeout 0), -ETIMEDOUT, -ENOBUFS over the per-client endpoint limit. */
SAN_API int san_accept(struct san_listener *l, int timeout_ms, struct san_ep **out);
/* Stops listening; connections still waiting are refused. NULL is a no-op. */
SAN_API void san_listener_close(struct san_listener *l);

/* Connects to the listener at addr. -ECONNREFUSED (nobody listens there, its backlog is full, it
 * closed), -ENETUNREACH (nobody serves addr), -ETIMEDOUT (not accepted within timeout_ms; -1
 * waits forever), -ENOBUFS over the per-client endpoint limit. */
SAN_API int san_connect(struct san_ctx *ctx, const struct sockaddr *addr, socklen_t addrlen,
                        int timeout_ms, struct san_ep **out);
/* san_connect in two halves, for a caller that must not wait. start: one round trip (the errors
 * known at once: -ECONNREFUSED nobody listens or the backlog is full, -ENETUNREACH, -ENOBUFS),
 * then *out is connecting. finish never blocks: -EINPROGRESS while the listener has not
 * accepted, then 0 (connected) or the refusal (-ECONNREFUSED: the listener closed, a remote
 * host refused). The endpoint's eventfd (san_ep_fd, readable in poll/epoll) becomes readable
 * when the outcome is known and stays so until finish has taken it. The endpoint is the
 * caller's to close in every case (san_ep_close: a connect given up leaves the backlog). */
SAN_API int san_connect_start(struct san_ctx *ctx, const struct sockaddr *addr, socklen_t addrlen,
                              struct san_ep **out);
SAN_API int san_connect_finish(struct san_ep *ep);
/* Closes the endpoint: its queues are flushed, the peer's outstanding and later operations
 * complete with -ECONNRESET. Completions not yet polled are lost. NULL is a no-op. */
SAN_API void san_ep_close(struct san_ep *ep);
/* Readable (poll/epoll) while completions wait to be polled. */
SAN_API int san_ep_fd(const struct san_ep *ep);

/* A network the daemon serves on the SAN: its address (AF_INET or AF_INET6, port 0) and prefix. */
enum { SAN_NETWORK_LOCAL = 1, SAN_NETWORK_LINKED = 2 };
struct san_network {
    struct sockaddr_storage addr;
    unsigned prefix; /* bits of addr's family: 0..32 (IPv4), 0..128 (IPv6) */
    unsigned flags;  /* SAN_NETWORK_LOCAL: [nic] addresses, this host listens there;
                        SAN_NETWORK_LINKED: a linked host's, reached over a link that is up */
};
/* The networks the daemon serves: san_connect reaches an address in one of them (anything else is
 * -ENETUNREACH), san_listen listens on an address in a LOCAL one. *gen: on entry the generation
 * the caller holds (0: none); on return the current one (never 0; it changes whenever the set
 * does: a link up or down, a peer's new session). When the caller's is still current nothing is
 * written and *nr is 0: what it holds is right. Otherwise up to max networks go to nets (LOCAL
 * ones first) and *nr is how many there are (more than max: call again with room for them).
 * -EINVAL for a NULL argument (nets may be NULL with max 0). Blocks for one round trip per 64
 * networks. */
SAN_API int san_nic_networks(struct san_ctx *ctx, uint64_t *gen, struct san_network *nets,
                             size_t max, size_t *nr);
/* A count that grows whenever the set san_nic_networks lists changes, read from a page the daemon
 * shares read-only with its clients: no round trip, never blocks. Read it before san_nic_networks;
 * while it stays, that answer stays right. 0 when the daemon shares no such page (or ctx is NULL):
 * then ask san_nic_networks again from time to time instead. */
SAN_API uint64_t san_nic_networks_changes(const struct san_ctx *ctx);

#define SAN_MAX_SGE 4
struct san_sge {
    void *addr;
    uint32_t length;
    uint32_t lkey; /* from san_mr_lkey of a registration covering [addr, addr+length) */
};
enum { SAN_WR_UNSIGNALED = 1 }; /* no completion on success (errors always complete) */

/* Posting: 0; -EAGAIN (queue full, nothing posted); -EINVAL (arguments, nsge > SAN_MAX_SGE, a
 * malformed descriptor); -ENOTCONN (the endpoint is in error or its peer is gone). Never blocks. */
SAN_API int san_post_recv(struct san_ep *ep, uint64_t wr_id, const struct san_sge *sge,
                          unsigned nsge);
/* A send waits (never dropped) until the peer has a receive posted; one too small for it completes
 * with -EMSGSIZE on both sides. */
SAN_API int san_post_send(struct san_ep *ep, uint64_t wr_id, const struct san_sge *sge,
                          unsigned nsge, unsigned flags);
/* WSPRdmaWrite / WSPRdmaRead: the remote side is the peer's descriptor (from its
 * san_register_rdma) plus a byte offset into the registered range. */
SAN_API int san_rdma_write(struct san_ep *ep, uint64_t wr_id, const struct san_sge *sge,
                           unsigned nsge, const void *desc, size_t desc_len, uint64_t offset,
                           unsigned flags);
SAN_API int san_rdma_read(struct san_ep *ep, uint64_t wr_id, const struct san_sge *sge,
                          unsigned nsge, const void *desc, size_t desc_len, uint64_t offset,
                          unsigned flags);

/* An RDMA read without a copy by the NIC, on one host: maps the range of the peer's descriptor
 * read-only into this process and sets *addr to its first byte and *len to its length (the
 * descriptor's). The mapping is the peer's memory itself, valid until san_ep_close(ep): the
 * peer's later writes show through it, and the peer deregistering or freeing the memory does not
 * take it back (its pages stay, no other memory ever appears there). So a peer shares only memory
 * whose contents this side may see for as long as the connection lasts; it agrees to by
 * allocating it SAN_ALLOC_SHARED and giving the descriptor. Checked as the NIC checks an RDMA
 * read (-EACCES: not a registration of the peer's for reading, or out of its range); -ENOTCONN
 * not connected; -EOPNOTSUPP the peer is on another host or the range is not in its SHARED
 * proxy memory (san_rdma_read works there); -ENOBUFS more than 8 allocations mapped for ep; bad
 * arguments -EINVAL. One round trip, unless a mapping of the same allocation serves it. */
SAN_API int san_rdma_map(struct san_ep *ep, const void *desc, size_t desc_len, const void **addr,
                         size_t *len);

enum { SAN_WC_SEND = 1, SAN_WC_RECV = 2, SAN_WC_RDMA_WRITE = 3, SAN_WC_RDMA_READ = 4 };
struct san_wc {
    uint64_t wr_id;
    int32_t status;    /* 0; -EFAULT local access; -EACCES remote access; -EMSGSIZE receive too
                          small; -ECONNRESET peer gone; -ECANCELED flushed after an error/close;
                          -EPIPE (a receive) the peer's process went away after everything it
                          posted was delivered (its endpoint lingered: docs/nic.md) */
    uint32_t opcode;   /* SAN_WC_* */
    uint32_t byte_len; /* bytes moved (RECV: bytes received) */
    uint32_t reserved;
};
/* Takes up to max completions, oldest first: the number taken (>= 0). Never blocks. */
SAN_API int san_poll(struct san_ep *ep, struct san_wc *wc, unsigned max);
/* Waits until a completion waits to be polled: 0; -ETIMEDOUT after timeout_ms (-1: forever).
 * Spins briefly, then sleeps. */
SAN_API int san_wait(struct san_ep *ep, int timeout_ms);

#ifdef __cplusplus
}
#endif

#endif
