/* The software SAN NIC inside sanproxyd: listeners, endpoints (reliable connected queue pairs)
 * and the engines that execute their work requests.
 *
 * The daemon's loop thread creates and closes listeners and endpoints (san_nic_* below, called
 * from ops.c); one engine thread per connection (engine.c) executes the work requests both ends
 * post in their shared queues (proto/queue.h), checks every access as a target NIC does, moves the
 * bytes through the NIC's DMA adapter and posts completions. A connection's thread sleeps when
 * both ends are idle and is woken by a poster. One engine per connection means that a peer whose
 * memory cannot be reached quickly (docs/nic.md) slows only that connection.
 *
 * Locking: nic->lock protects the listener table, the table of every endpoint (the listing) and
 * the counts; an endpoint's engine-side state is its engine thread's, except `closing`, an atomic
 * the loop sets, and what a listing reads (state, err, ops, bytes: atomics the engine alone
 * writes). An endpoint's memory (its region, its struct) goes when both the loop and the engine
 * have let go of it (refs), after it left the table. */
#ifndef SAN_NIC_NIC_H
#define SAN_NIC_NIC_H

#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

#include "common/list.h"
#include "mdl/mdl.h"
#include "mr/mr.h"
#include "nic/xmsg.h"
#include "proto/queue.h"

struct san_dma_adapter;
struct san_nic;
struct san_nic_pair;
struct san_xconn;

/* A SAN address: family, port, address bytes (IPv4 mapped into IPv6 form for comparison). */
struct san_nic_addr {
    uint8_t ip[16]; /* IPv6, or ::ffff:a.b.c.d */
    uint16_t port;
};

/* One network this host serves ([nic] addresses): ip/prefix over the IPv6 form. */
struct san_nic_net {
    uint8_t ip[16];
    unsigned prefix; /* bits, 0..128 */
};

#define SAN_NIC_DEFAULT_NETS "127.0.0.0/8, ::1/128"
/* Parses "127.0.0.0/8, ::1/128" (commas or spaces between networks). -EINVAL with *bad set to
 * the offending word's offset. */
int san_nic_parse_nets(const char *s, struct san_nic_net *out, size_t max, size_t *n, size_t *bad);
/* Whether a is inside net. */
bool san_nic_net_has(const struct san_nic_net *net, const struct san_nic_addr *a);
/* A socket address (AF_INET or AF_INET6 with its exact size) as a SAN address, -EINVAL. */
int san_nic_addr_from(const struct sockaddr *sa, socklen_t len, struct san_nic_addr *out);

struct san_nic_config {
    const struct san_nic_net *nets;
    size_t nr_nets;
    unsigned backlog_max; /* a listener's backlog is capped here */
    unsigned spin_us;     /* an idle engine spins this long before it sleeps */
    size_t max_length;    /* the adapter's bytes per transfer */
    bool manual;          /* no engine threads: the caller drives pairs with san_nic_step (fuzz) */
    uint64_t host_id;     /* this daemon's: the host of every descriptor its NIC honours */
};

/* Who holds a listener or an endpoint, copied in when it is made: a listing names an endpoint's
 * owner even after the owner let go (a closed endpoint lives until its engine lets go too). */
struct san_nic_owner {
    uint32_t client; /* the daemon's client id */
    int32_t pid;
    uint32_t uid;
    uint64_t handle; /* the owner's handle for it */
};

/* A daemon-side endpoint. */
struct san_nic_ep {
    struct san_nic *nic;
    struct san_nic_pair *pair; /* NULL while connecting */
    struct san_nic_ep *peer;
    struct san_epq *q;          /* the shared region, mapped here */
    int memfd, efd;             /* the region; the eventfd of san_ep_fd */
    struct san_regtab_set *set; /* the owner's registrations (lkeys) */
    struct san_nic_owner owner; /* for listings */
    uint32_t peer_client;       /* the peer's owner (0 until accepted) */
    uint64_t id;                /* the NIC's number for it: listing order, never reused */
    struct san_list link;       /* in nic->eps, under nic->lock */
    _Atomic int refs;           /* the loop's and the engine's */
    _Atomic bool closing;       /* the owner closed it (or went away) */
    /* the engine's own copies of what it owns in the region */
    uint32_t sq_head, rq_head, cq_tail;
    _Atomic uint32_t state; /* err is stored before state: read state first */
    _Atomic int32_t err;
    _Atomic uint64_t ops, bytes;     /* completed work requests and bytes moved */
    struct san_nic_ep *next_pending; /* in a listener's backlog */
    struct san_xconn *xc;            /* its peer is on another host (xconn.c), else NULL */
    struct san_nic_addr local, remote;
    /* Lingering (san_nic_pair_linger): its owner went away and asked the NIC to finish it. Set
     * by the loop under the pair's lock; the engine then drops its completions, still executes
     * what it posted, tells the peer -EPIPE once its send queue is empty (eof_sent, the
     * engine's), and sets linger_over (and signals nic->linger_efd) once nothing is left to do:
     * the peer closed or failed. The loop closes it then, or at [nic] linger (its owner's
     * deadline, daemon.h). */
    _Atomic bool lingering, linger_over;
    bool eof_sent;
};

struct san_nic_listener {
    struct san_nic_listener *next;
    struct san_nic *nic;
    struct san_nic_addr addr;
    struct san_nic_owner owner;
    int efd; /* readable while a connection waits */
    unsigned backlog, nr_pending;
    struct san_nic_ep *pending, **pending_tail;
};

int san_nic_create(const struct san_nic_config *cfg, struct san_regtab *reg,
                   struct san_dma_adapter *adapter, struct san_nic **out);
/* Every endpoint and listener must be closed. NULL is a no-op. */
void san_nic_destroy(struct san_nic *nic);

/* The loop's calls. Each returns 0 or a negative errno (the errors of include/san/nic.h). */
int san_nic_listen(struct san_nic *nic, const struct san_nic_owner *owner,
                   const struct san_nic_addr *addr, int backlog, struct san_nic_listener **out);
void san_nic_listener_close(struct san_nic_listener *l);
/* A new endpoint of set's owner connecting to addr; *out is CONNECTING until accepted. */
int san_nic_connect(struct san_nic *nic, const struct san_nic_owner *owner,
                    struct san_regtab_set *set, const struct san_nic_addr *addr,
                    struct san_nic_ep **out);
/* Takes the oldest waiting connection of l: -EAGAIN when none waits. */
int san_nic_accept(struct san_nic_listener *l, const struct san_nic_owner *owner,
                   struct san_regtab_set *set, struct san_nic_ep **out);
/* The owner lets go of ep: flushed, the peer reset, freed once its engine lets go too. */
void san_nic_ep_close(struct san_nic_ep *ep);
/* The owner of ep went away: if ep asked for it (its region's linger word), is connected on this
 * host, its peer is connected and not closing or lingering, and no receive holding data of the
 * peer waits unpolled in its completion queue (TCP resets when a socket with unread data
 * closes), ep lingers and true is returned: the owner still holds it (and its registrations);
 * close it once linger_over is set or at its deadline. Else false: close it now. */
bool san_nic_ep_linger(struct san_nic_ep *ep);
/* The registrations of ep's peer (the owner whose memory ep's RDMA reaches), for the loop: 0 while
 * ep is connected to an endpoint of this host, -EOPNOTSUPP when its peer is on another host,
 * -ENOTCONN otherwise. */
int san_nic_ep_peer_set(const struct san_nic_ep *ep, const struct san_regtab_set **set);
/* Readable when a lingering endpoint's linger_over was set (the loop drains it, then looks). */
int san_nic_linger_fd(const struct san_nic *nic);

struct san_nic_stats {
    uint64_t endpoints, ops, bytes;
};
void san_nic_stats(struct san_nic *nic, struct san_nic_stats *out);

/* What a listing shows of one endpoint. Ring fills are the entries posted and not yet taken,
 * computed from the indexes in the shared region, which its client can scribble on: a fill past
 * the ring's depth is shown as the depth with the ring's bit set in bad_rings (1 send, 2 receive,
 * 4 completion). */
#define SAN_NIC_CLOSING 5 /* state shown for an endpoint its owner closed */
struct san_nic_ep_info {
    uint64_t id;
    struct san_nic_owner owner;
    uint32_t peer_client;
    uint32_t state; /* enum san_epq_state, or SAN_NIC_CLOSING */
    int32_t err;    /* the first error (SAN_EPQ_ERROR, REFUSED), else 0 */
    uint32_t bad_rings;
    struct san_nic_addr local, remote; /* port 0: none */
    uint32_t sq_fill, rq_fill, cq_fill;
    uint64_t ops, bytes;
};
/* Fills out with up to max endpoints whose id is at least from, in id order, only those of
 * owners with uid unless all; *next gets the id to start the next page at, 0 when there is none.
 * Returns how many were filled. Takes nic->lock only (held by engines for a list update, never
 * across a wait): the loop never waits on an engine or a client here, and an endpoint closed
 * between two pages is simply not in the second. */
size_t san_nic_list(struct san_nic *nic, uint64_t from, bool all, uint32_t uid,
                    struct san_nic_ep_info *out, size_t max, uint64_t *next);

/* Endpoints across hosts (xconn.c). The NIC reaches other hosts through a transport the daemon
 * sets (the links, link/link.h); the NIC never depends on how messages travel. Every call of the
 * transport may come from any thread and never blocks on the network. */
struct san_nic_xport {
    void *ctx;
    /* Which up link serves a: its index, session and peer host_id. -ENETUNREACH. */
    int (*route)(void *ctx, const struct san_nic_addr *a, unsigned *link, uint64_t *session,
                 uint64_t *host);
    /* Queues m (and len payload bytes) to the peer of link, in session. -ECONNRESET when that
     * session is over, -ENOBUFS when the transport holds too much already. */
    int (*send)(void *ctx, unsigned link, uint64_t session, const struct san_xmsg *m,
                const void *payload, size_t len);
    /* As send, but the payload is written by fill straight where the transport builds the
     * message (its n bytes from offset off of the payload to dst, in order, possibly in several
     * calls): the bytes of a chunk go from the endpoint's memory into the message with no copy in
     * between. fill's error (-EFAULT) is returned as it is, and then nothing was queued. NULL:
     * the NIC fills a chunk buffer of its own and calls send. */
    int (*send_fill)(void *ctx, unsigned link, uint64_t session, const struct san_xmsg *m,
                     size_t len, int (*fill)(void *arg, void *dst, size_t off, size_t n),
                     void *arg);
};
/* Sets (or, with NULL, detaches: every connection across hosts resets) the transport. Detach
 * before the transport goes: afterwards no call of it is made or in progress. */
void san_nic_set_xport(struct san_nic *nic, const struct san_nic_xport *x);
/* A message from the peer of link in session: delivered to its connection (or, CONNECT, to a
 * listener's backlog). When the message needs an answer the transport must send at once (a
 * refused CONNECT, a message for a connection not known here), *reply is filled and 1 returned;
 * else 0. Called on the transport's thread; never blocks (takes nic locks briefly). */
int san_nic_xdeliver(struct san_nic *nic, unsigned link, uint64_t session, uint64_t host,
                     const struct san_xmsg *m, const void *payload, struct san_xmsg *reply);
/* Called by the transport's thread as it polls the network: it runs the connections whose
 * client posted requests or receives while their thread is between passes (so that a request
 * goes out on the thread that sends, without a wake-up in between); a connection busy on its
 * own thread is left to it. Never blocks. Whether it ran any. */
bool san_nic_xpoll(struct san_nic *nic);
/* The transport's thread says whether it polls (calls san_nic_xpoll again within microseconds).
 * While it does, a connection's thread with nothing to do sleeps without asking its client to
 * ring the doorbell: the transport's thread takes the client's requests, and nobody pays a
 * wake-up. Turning it off wakes those threads, which then sleep as before. */
void san_nic_xwatch(struct san_nic *nic, bool on);
/* The session of link is over (the link went down, or the peer restarted): every connection
 * across it completes what is outstanding and everything later with -ECONNRESET. */
void san_nic_xreset(struct san_nic *nic, unsigned link, uint64_t session);
/* The loop's side (nic.c): connect across a link, accept a pending remote connector, close. */
int san_xconn_connect(struct san_nic *nic, struct san_nic_ep *ep, unsigned link, uint64_t session,
                      uint64_t host);
int san_xconn_accept(struct san_nic_ep *stub, struct san_nic_ep *ep);
void san_xconn_refuse(struct san_nic_ep *stub);
void san_xconn_close(struct san_nic_ep *ep);

/* A piece of a transfer: a registration (use held) and the range in it. */
struct san_nic_piece {
    struct san_regtab_entry *e;
    uint64_t va;
    uint64_t len;
};
/* Shared by engine.c and xconn.c: the checks and moves of docs/nic.md, on one endpoint. */
uint32_t san_nic_cq_room(struct san_nic_ep *ep);
void san_nic_complete(struct san_nic_ep *ep, uint64_t wr_id, int32_t status, uint32_t op,
                      uint32_t len);
/* The same with completion flags (enum san_epq_cqe_flag). */
void san_nic_complete_flags(struct san_nic_ep *ep, uint64_t wr_id, int32_t status, uint32_t op,
                            uint32_t len, uint32_t flags);
void san_nic_enter_error(struct san_nic_ep *ep, int32_t err);
int san_nic_posted(_Atomic uint32_t *tail, uint32_t head, uint32_t depth);
void san_nic_put_pieces(struct san_nic *nic, struct san_nic_piece *p, unsigned n);
int san_nic_local_pieces(struct san_nic_ep *ep, const struct san_epq_wqe *w, bool write,
                         struct san_nic_piece *out, uint64_t *total);
/* rkey registered for RDMA by owner, with the access, [va, va+len) inside: a use held. -EACCES. */
int san_nic_remote(struct san_nic *nic, const struct san_regtab_set *owner, uint32_t rkey,
                   uint64_t va, uint64_t len, bool write, struct san_nic_piece *out);
/* Copies len bytes between buf and the pieces at byte off of the request they make up. -EFAULT. */
int san_nic_pieces_io(struct san_nic *nic, const struct san_nic_piece *pc, unsigned n, uint64_t off,
                      void *buf, uint64_t len, bool to_memory);
bool san_nic_valid_wqe(const struct san_epq_wqe *w, bool recv);
void san_nic_count(struct san_nic_ep *ep, uint64_t bytes);
bool san_nic_flush(struct san_nic_ep *ep);
void san_nic_set_state(struct san_nic_ep *ep, uint32_t state, int32_t err);
/* A connector of another host (a stub endpoint: no region) into the backlog of the listener on
 * addr, or -ECONNREFUSED; and out of the backlog it waits in (whether it was in one). */
int san_nic_backlog_add(struct san_nic *nic, const struct san_nic_addr *addr,
                        struct san_nic_ep *ep);
bool san_nic_backlog_remove(struct san_nic *nic, struct san_nic_ep *ep);
int san_nic_ep_new(struct san_nic *nic, const struct san_nic_owner *owner,
                   struct san_regtab_set *set, struct san_nic_ep **out);

/* engine.c */
int san_nic_pair_start(struct san_nic *nic, struct san_nic_ep *a, struct san_nic_ep *b);
/* One engine pass over both endpoints of a pair (cfg.manual): 1 when something happened, 0 when
 * nothing did, -1 when both endpoints are closed and the pair is gone. */
int san_nic_step(struct san_nic_pair *p);
/* Marks a paired ep closed, between two of its engine's requests, and wakes the engine. */
void san_nic_pair_close(struct san_nic_ep *ep);
/* san_nic_ep_linger's checks and the switch to lingering, under the pair's lock. */
bool san_nic_pair_linger(struct san_nic_ep *ep);
/* Wakes ep's engine (after closing set, or new state). */
void san_nic_kick(struct san_nic_ep *ep);
void san_nic_ep_put(struct san_nic_ep *ep);

/* Internals shared by nic.c and engine.c. */
struct san_nic {
    struct san_nic_config cfg;
    struct san_nic_net nets[16];
    struct san_regtab *reg;
    struct san_dma_adapter *adapter;
    pthread_mutex_t lock;
    struct san_nic_listener *listeners;
    struct san_list eps; /* every endpoint (struct san_nic_ep.link), by id */
    uint64_t last_ep_id;
    _Atomic uint64_t endpoints, ops, bytes;
    int linger_efd; /* eventfd: a lingering endpoint has nothing left to do */
    /* Endpoints across hosts: xlock covers the connections' table; xport_lock the transport
     * (read: a call of it; write: setting it). Order: a transport's own lock, then xlock; never
     * xlock while calling the transport. */
    pthread_mutex_t xlock;
    struct san_list xconns;
    uint64_t last_xconn;
    pthread_rwlock_t xport_lock;
    struct san_nic_xport xport; /* .send NULL: none */
    _Atomic bool xwatched;      /* the transport's thread polls (san_nic_xwatch) */
};

#endif
