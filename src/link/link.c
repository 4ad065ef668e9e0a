/* The link layer: this daemon's libfabric RDM endpoint, its thread, and every link's handshake,
 * heartbeats, loss and re-link (link.h, the protocol in wire.h, the keys and MACs in auth.h).
 *
 * Sits on libfabric (the provider of [link] provider, FI_MSG | FI_RMA | FI_SOURCE; RMA is asked
 * for now so that the provider chosen can carry endpoints later, and the registration mode it
 * returns is branched on: local buffers are registered only under FI_MR_LOCAL, and bound to the
 * endpoint under FI_MR_ENDPOINT), and on the daemon's log.
 *
 * A message's sender is the address vector entry libfabric names for it (FI_SOURCE): a message
 * from no configured peer is dropped. A message that fails the decoder costs its peer's link (the
 * session goes, the handshake starts again with a new nonce); one with a bad MAC is dropped, and
 * FORGED_MAX of them end the session (bad_mac): a forger gets that many tries per session. Sends
 * are bounded per peer (TX_PER_PEER in flight): a peer that does not take its messages gets no more
 * until it does, and the link times out.
 *
 * Threads and locking: link_thread owns the libfabric objects after san_link_create; it waits in
 * fi_cq_sreadfrom (which drives the provider's progress) for at most TICK_MS, then handles the
 * completions and the timers under l->lock. The loop's calls take l->lock for a snapshot. */
#include "link/link.h"

#include <errno.h>
#include <netdb.h>
#include <pthread.h>
#include <rdma/fabric.h>
#include <rdma/fi_cm.h>
#include <rdma/fi_domain.h>
#include <rdma/fi_endpoint.h>
#include <rdma/fi_errno.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/random.h>
#include <unistd.h>

#include "common/clock.h"
#include "daemon/daemon.h"
#include "link/auth.h"
#include "link/ratelog.h"
#include "link/rxm_env.h"
#include "link/wire.h"

#define FI_API      FI_VERSION(1, 17)
#define NR_RX       SAN_LINK_RXM_MSG_RX /* RxM posts as many per connection (rxm_env.h) */
#define NR_TX       64
#define TX_PER_PEER 8  /* link protocol messages in flight to one peer */
#define EP_PER_PEER 48 /* endpoint messages in flight to one peer (the rest wait in its queue) */
#define RX_SIZE     SAN_LINK_RXM_EAGER /* above SAN_LINK_MSG_MAX: an oversized one is refused */
#define EPQ_MAX     (64ULL << 20)      /* bytes of endpoint messages waiting for one peer */
#define TICK_MS     50
#define SPIN_NS     (1000 * 1000ULL) /* see link_thread */
#define BACKOFF_MIN (100 * 1000000ULL)
#define NR_EVENTS   64
#define BYE_WAIT_NS (200 * 1000000ULL)
/* Messages of one session whose MAC fails before the session ends. A peer of the same secret never
 * sends one (TCP's checksum would have to miss a corruption), so each is a forgery, a message of
 * another session, or a broken path: 16 is more than a healthy link sees in its life and bounds a
 * forger to 16 tries at a 64-bit tag per session, each session costing a handshake after a
 * backoff of at least BACKOFF_MIN (so at most 160 tries a second, 2^-52 a second to succeed). */
#define FORGED_MAX 16

static_assert(SAN_LINK_MSG_MAX < RX_SIZE, "receive buffers");

/* The link whose thread this is: endpoint messages it queues itself (the NIC runs connections on
 * it, san_nic_xdeliver) go in the same round, without signalling it. */
static _Thread_local const struct san_link *own_thread;

/* A buffer libfabric works on: the context first, as FI_CONTEXT2 asks. */
struct link_buf {
    struct fi_context2 ctx;
    int peer; /* tx: the peer it goes to */
    bool busy;
    bool rx;
    bool ep; /* tx: an endpoint message */
    _Alignas(8) uint8_t data[RX_SIZE];
};

struct link_peer {
    struct sockaddr_storage addr;
    socklen_t addr_len;
    char name[64];
    fi_addr_t fa;
    uint8_t raw[128]; /* the provider's address of the peer, to insert it again */
    size_t raw_len;
    unsigned state;
    uint8_t my_nonce[SAN_LINK_NONCE]; /* ours for the session we offer this peer */
    /* the session, while state is SAN_LINK_UP */
    uint64_t peer_host;
    uint8_t peer_nonce[SAN_LINK_NONCE];
    uint8_t tx_key[SAN_LINK_KEY], rx_key[SAN_LINK_KEY];
    struct umac64_ctx tx_umac, rx_umac; /* endpoint messages' MACs, keyed from those */
    uint64_t rx_seq;
    /* The previous session's receive keys: the peer may still send under them for a round trip
     * after this side started a new one (it learns of the new session from our PROOF), and such a
     * late message is no forgery. old_rx: they are set. */
    uint8_t old_rx_key[SAN_LINK_KEY];
    struct umac64_ctx old_rx_umac;
    bool old_rx;
    unsigned forged;       /* messages of this session whose MAC failed (FORGED_MAX ends it) */
    uint64_t mac_failures; /* every message from the peer's address whose MAC failed */
    struct san_link_ratelog droplog;    /* the lines about those */
    struct san_link_ratelog uplog;      /* the "up" lines of a link that comes back */
    struct san_link_ratelog restartlog; /* and of a restarted peer: one limit each, so that a
                                         * restart right after the link came back is logged */
    uint64_t last_host;                 /* of the last session: another one is a restarted peer */
    struct san_nic_net nets[SAN_LINK_NETS];
    size_t nr_nets;
    uint64_t tx_seq;
    uint64_t last_heard, next_hello, next_heartbeat, backoff;
    unsigned inflight, ep_inflight;
    uint64_t bytes_tx, bytes_rx, msgs_tx, msgs_rx, sessions;
    char last_error[88];
    /* endpoint messages waiting to be sent (txlock); live: sessions while up, else 0 */
    struct epq_node *epq_head, **epq_tail;
    uint64_t epq_bytes;
    _Atomic uint64_t live;
    /* what link_route sees (routelock): a copy of state, sessions, peer_host and nets */
    bool rt_up;
    uint64_t rt_session, rt_host;
    struct san_nic_net rt_nets[SAN_LINK_NETS];
    size_t rt_nr_nets;
};

/* An endpoint message waiting for a send buffer: its session, the message without MAC or seq. */
struct epq_node {
    struct epq_node *next;
    uint64_t session;
    size_t len;
    _Alignas(8) uint8_t msg[];
};

struct san_link {
    struct san_link_config cfg;
    uint64_t host_id;
    struct san_link_net nets[SAN_LINK_NETS];
    uint32_t nr_nets;
    struct fi_info *info;
    struct fid_fabric *fabric;
    struct fid_domain *domain;
    struct fid_ep *ep;
    struct fid_av *av;
    struct fid_cq *cq;
    struct fid_mr *mr;
    void *desc;
    struct link_buf *bufs; /* NR_RX receive buffers, then NR_TX send buffers */
    pthread_t thread;
    bool started;
    _Atomic bool stop;
    pthread_mutex_t lock;
    struct link_peer peers[SAN_LINK_MAX_PEERS];
    size_t nr_peers;
    uint64_t strays;                            /* messages from no configured peer */
    struct san_link_ratelog straylog, rxerrlog; /* lines about strays, failed receives */
    struct san_nic *nic;                        /* where endpoint messages go (san_nic_xdeliver) */
    pthread_mutex_t txlock;                     /* the peers' endpoint message queues */
    /* The peers' routes: the NIC calls link_route holding its transport lock, which this thread
     * takes (sending for the connections it runs) while it holds l->lock; so routes are read
     * under a lock of their own, taken last. */
    pthread_mutex_t routelock;
    _Atomic uint64_t routes_gen; /* bumped at every route published: san_link_routes_gen */
    _Atomic uint64_t *changes;   /* bumped with it: the daemon's status page (NULL: none) */
    struct san_link_event events[NR_EVENTS];
    unsigned ev_head, ev_count;
    int evfd;
    _Atomic uint64_t up;
    unsigned ep_inflight; /* endpoint messages in flight, every peer */
    _Atomic bool kicked;  /* the thread was signalled for queued endpoint messages */
    _Atomic bool waiting; /* the thread waits (or is about to) in the provider: signal it */
};

const char *san_link_state_name(unsigned state)
{
    switch (state) {
    case SAN_LINK_CONNECTING:
        return "connecting";
    case SAN_LINK_UP:
        return "up";
    case SAN_LINK_DOWN:
        return "down";
    default:
        return "?";
    }
}

static int fi_err(int r)
{
    return r < 0 ? (r <= -FI_ERRNO_OFFSET ? -EIO : r) : -r;
}

static void new_nonce(uint8_t n[SAN_LINK_NONCE])
{
    if (getrandom(n, SAN_LINK_NONCE, 0) != SAN_LINK_NONCE) {
        /* Never seen on Linux; a nonce that repeats weakens only replay protection across
         * sessions, still under the secret. */
        uint64_t t = san_now_ns();
        memcpy(n, &t, sizeof(t));
        memcpy(n + 8, &n, sizeof(void *));
    }
}

/* Records why a link is not (or no longer) well; logged once per new reason. */
static void peer_error(struct link_peer *p, enum san_log_level level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void peer_error(struct link_peer *p, enum san_log_level level, const char *fmt, ...)
{
    char why[sizeof(p->last_error)];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, sizeof(why), fmt, ap);
    va_end(ap);
    if (strcmp(why, p->last_error))
        san_log(level, "link %s: %s", p->name, why);
    memcpy(p->last_error, why, sizeof(why));
}

static void push_event(struct san_link *l, struct link_peer *p, bool restarted)
{
    struct san_link_event ev = {.peer = (unsigned)(p - l->peers),
                                .state = p->state,
                                .host_id = p->peer_host,
                                .restarted = restarted};
    if (l->ev_count == NR_EVENTS) { /* the loop is behind: the oldest change goes */
        l->ev_head = (l->ev_head + 1) % NR_EVENTS;
        l->ev_count--;
    }
    l->events[(l->ev_head + l->ev_count++) % NR_EVENTS] = ev;
    uint64_t one = 1;
    ssize_t w = write(l->evfd, &one, sizeof(one));
    (void)w;
}

static struct link_buf *tx_buf(struct san_link *l)
{
    for (unsigned i = NR_RX; i < NR_RX + NR_TX; i++)
        if (!l->bufs[i].busy)
            return &l->bufs[i];
    return NULL;
}

/* A send buffer for a message of the link protocol to p, its message area to build in (link
 * messages are never built on the stack: the message type is the size of the largest, 64 KiB).
 * NULL when p has TX_PER_PEER in flight or no buffer is free: the message is dropped, and every
 * one is resent or superseded by the timers (a peer that takes nothing times out). */
static struct link_buf *ctl_buf(struct san_link *l, struct link_peer *p)
{
    if (p->fa == FI_ADDR_NOTAVAIL || p->inflight >= TX_PER_PEER)
        return NULL;
    return tx_buf(l);
}

/* Sends b's message (its MAC already set, or a HELLO) to p. Dropped as in ctl_buf when the
 * provider is not ready yet (-FI_EAGAIN: RxM connects lazily). */
static void ctl_send(struct san_link *l, struct link_peer *p, struct link_buf *b)
{
    const struct san_link_msg *m = (const struct san_link_msg *)b->data;
    ssize_t r = fi_send(l->ep, b->data, m->hdr.length, l->desc, p->fa, &b->ctx);
    if (r) {
        if (r != -FI_EAGAIN)
            peer_error(p, SAN_LOG_DEBUG, "send: %s", fi_strerror((int)-r));
        return;
    }
    b->busy = true;
    b->peer = (int)(p - l->peers);
    p->inflight++;
    p->msgs_tx++;
    p->bytes_tx += m->hdr.length;
}

static void send_hello(struct san_link *l, struct link_peer *p)
{
    struct link_buf *b = ctl_buf(l, p);
    if (!b)
        return;
    struct san_link_msg *m = (struct san_link_msg *)b->data;
    san_link_init(m, SAN_LINK_HELLO, l->host_id, ++p->tx_seq);
    memcpy(m->u.hello.nonce, p->my_nonce, SAN_LINK_NONCE);
    m->u.hello.max_version = SAN_LINK_VERSION;
    ctl_send(l, p, b);
}

/* The answer to a HELLO of (host, nonce), and what a side sends once its session is up. */
static void send_proof(struct san_link *l, struct link_peer *p, uint64_t host,
                       const uint8_t nonce[SAN_LINK_NONCE])
{
    struct link_buf *b = ctl_buf(l, p);
    if (!b)
        return;
    struct san_link_msg *m = (struct san_link_msg *)b->data;
    uint8_t key[SAN_LINK_KEY];
    san_link_init(m, SAN_LINK_PROOF, l->host_id, ++p->tx_seq);
    memcpy(m->u.proof.your_nonce, nonce, SAN_LINK_NONCE);
    memcpy(m->u.proof.my_nonce, p->my_nonce, SAN_LINK_NONCE);
    m->u.proof.your_host_id = host;
    m->u.proof.nr_nets = l->nr_nets;
    memcpy(m->u.proof.nets, l->nets, sizeof(l->nets));
    san_link_key(l->cfg.secret, l->cfg.secret_len, l->host_id, p->my_nonce, host, nonce, key);
    san_link_mac(key, m);
    ctl_send(l, p, b);
}

static void send_session(struct san_link *l, struct link_peer *p, unsigned type)
{
    struct link_buf *b = ctl_buf(l, p);
    if (!b)
        return;
    struct san_link_msg *m = (struct san_link_msg *)b->data;
    san_link_init(m, type, l->host_id, ++p->tx_seq);
    if (type == SAN_LINK_HEARTBEAT)
        m->u.heartbeat.sent_ns = san_now_ns();
    san_link_mac(p->tx_key, m);
    ctl_send(l, p, b);
}

/* The endpoints across p's session reset; what waits to be sent in it goes. */
static void end_session(struct san_link *l, struct link_peer *p)
{
    atomic_store(&p->live, 0);
    if (l->nic)
        san_nic_xreset(l->nic, (unsigned)(p - l->peers), p->sessions);
    pthread_mutex_lock(&l->txlock);
    struct epq_node *n = p->epq_head;
    p->epq_head = NULL;
    p->epq_tail = &p->epq_head;
    p->epq_bytes = 0;
    pthread_mutex_unlock(&l->txlock);
    while (n) {
        struct epq_node *next = n->next;
        free(n);
        n = next;
    }
}

/* p's route as it is now, for link_route; under l->lock. */
static void publish_route(struct san_link *l, struct link_peer *p)
{
    pthread_mutex_lock(&l->routelock);
    p->rt_up = p->state == SAN_LINK_UP;
    p->rt_session = p->sessions;
    p->rt_host = p->peer_host;
    p->rt_nr_nets = p->nr_nets;
    memcpy(p->rt_nets, p->nets, sizeof(p->nets));
    atomic_fetch_add(&l->routes_gen, 1);
    if (l->changes)
        atomic_fetch_add_explicit(l->changes, 1, memory_order_release);
    pthread_mutex_unlock(&l->routelock);
}

/* The session of p is over: down (if it was up), a new nonce, hellos again soon. */
/* A fresh provider connection to p: its address out of the address vector and in again, so that
 * the provider drops the connection it had (and whatever it still held queued in it: after a
 * network outage, TCP's retransmissions of a lost session's backlog would delay the next
 * session's messages past the timeout). */
static void reconnect(struct san_link *l, struct link_peer *p)
{
    if (p->fa == FI_ADDR_NOTAVAIL || !p->raw_len)
        return;
    fi_av_remove(l->av, &p->fa, 1, 0);
    p->fa = FI_ADDR_NOTAVAIL;
    if (fi_av_insert(l->av, p->raw, 1, &p->fa, 0, NULL) != 1) {
        p->fa = FI_ADDR_NOTAVAIL;
        peer_error(p, SAN_LOG_ERROR, "cannot be addressed again after a loss");
    }
}

static void lose(struct san_link *l, struct link_peer *p, uint64_t now)
{
    if (p->state == SAN_LINK_UP) {
        p->state = SAN_LINK_DOWN;
        publish_route(l, p);
        atomic_fetch_sub(&l->up, 1);
        end_session(l, p);
        reconnect(l, p);
        push_event(l, p, false);
    }
    new_nonce(p->my_nonce);
    p->backoff = BACKOFF_MIN;
    p->next_hello = now + BACKOFF_MIN;
}

/* A valid PROOF from p that answers our current nonce: a session, or the one we have. */
static void proven(struct san_link *l, struct link_peer *p, const struct san_link_msg *m,
                   const uint8_t rx_key[SAN_LINK_KEY], uint64_t now)
{
    const struct san_link_proof *pr = &m->u.proof;
    if (p->state == SAN_LINK_UP && p->peer_host == m->hdr.host_id &&
        !memcmp(p->peer_nonce, pr->my_nonce, SAN_LINK_NONCE)) {
        if (m->hdr.seq > p->rx_seq) {
            p->rx_seq = m->hdr.seq;
            p->last_heard = now;
        }
        return;
    }
    bool restarted = p->last_host && p->last_host != m->hdr.host_id;
    bool was_up = p->state == SAN_LINK_UP;
    if (was_up)
        end_session(l, p); /* a new session replaces it: nothing of the old one goes on */
    p->peer_host = p->last_host = m->hdr.host_id;
    memcpy(p->peer_nonce, pr->my_nonce, SAN_LINK_NONCE);
    if (p->sessions) { /* the keys of the session before: see bad_mac */
        memcpy(p->old_rx_key, p->rx_key, SAN_LINK_KEY);
        p->old_rx_umac = p->rx_umac;
        p->old_rx = true;
    }
    p->forged = 0;
    memcpy(p->rx_key, rx_key, SAN_LINK_KEY);
    san_link_key(l->cfg.secret, l->cfg.secret_len, l->host_id, p->my_nonce, p->peer_host,
                 p->peer_nonce, p->tx_key);
    san_link_umac_key(p->tx_key, &p->tx_umac);
    san_link_umac_key(p->rx_key, &p->rx_umac);
    p->rx_seq = m->hdr.seq;
    p->nr_nets = pr->nr_nets;
    for (uint32_t i = 0; i < pr->nr_nets; i++) {
        memcpy(p->nets[i].ip, pr->nets[i].ip, 16);
        p->nets[i].prefix = pr->nets[i].prefix;
    }
    if (!was_up)
        atomic_fetch_add(&l->up, 1);
    p->state = SAN_LINK_UP;
    p->sessions++;
    publish_route(l, p);
    atomic_store(&p->live, p->sessions);
    p->last_heard = now;
    p->next_heartbeat = now + l->cfg.timeout_ns / 4;
    p->last_error[0] = 0;
    uint64_t held = 0;
    if (san_link_ratelog_take(restarted ? &p->restartlog : &p->uplog, now, &held)) {
        char more[64] = "";
        if (held)
            snprintf(more, sizeof(more), " (%llu more %s since the last line)",
                     (unsigned long long)held, restarted ? "restarts" : "sessions");
        san_log(SAN_LOG_INFO, "link %s: up, peer host_id %016llx, %u networks%s%s%s", p->name,
                (unsigned long long)p->peer_host, (unsigned)p->nr_nets,
                restarted ? " (the peer restarted)" : "", was_up ? " (new session)" : "", more);
    }
    push_event(l, p, restarted);
    send_proof(l, p, p->peer_host, p->peer_nonce);
}

/* An endpoint message's payload: len bytes at data, or written by the NIC's fill (send_fill). */
struct payload {
    const uint8_t *data;
    int (*fill)(void *arg, void *dst, size_t off, size_t n);
    void *arg;
    size_t len;
};

/* n bytes of pl from off to dst. fill's error. */
static int payload_copy(const struct payload *pl, uint8_t *dst, size_t off, size_t n)
{
    if (pl->fill)
        return pl->fill(pl->arg, dst, off, n);
    memcpy(dst, pl->data + off, n);
    return 0;
}

/* Queues an endpoint message for p in session: sent by the link thread in order, under that
 * session's key. -ENOBUFS past EPQ_MAX bytes waiting; fill's error. */
static int ep_queue(struct san_link *l, struct link_peer *p, uint64_t session,
                    const struct san_xmsg *x, const struct payload *pl)
{
    size_t size = sizeof(struct san_link_hdr) + sizeof(*x) + pl->len;
    struct epq_node *n = malloc(sizeof(*n) + size);
    if (!n)
        return -ENOBUFS;
    struct san_link_hdr *h = (struct san_link_hdr *)n->msg;
    *h = (struct san_link_hdr){.magic = SAN_LINK_MAGIC,
                               .version = SAN_LINK_VERSION,
                               .type = SAN_LINK_EP,
                               .length = (uint32_t)size,
                               .host_id = l->host_id};
    memcpy(n->msg + sizeof(*h), x, sizeof(*x));
    int ferr = pl->len ? payload_copy(pl, n->msg + sizeof(*h) + sizeof(*x), 0, pl->len) : 0;
    if (ferr) {
        free(n);
        return ferr;
    }
    n->next = NULL;
    n->session = session;
    n->len = size;
    pthread_mutex_lock(&l->txlock);
    int err = p->epq_bytes + size > EPQ_MAX ? -ENOBUFS : 0;
    if (!err) {
        *p->epq_tail = n;
        p->epq_tail = &n->next;
        p->epq_bytes += size;
    }
    pthread_mutex_unlock(&l->txlock);
    if (err)
        free(n);
    return err;
}

static struct epq_node *epq_pop(struct san_link *l, struct link_peer *p, bool pop)
{
    pthread_mutex_lock(&l->txlock);
    struct epq_node *n = p->epq_head;
    if (n && pop) {
        p->epq_head = n->next;
        if (!p->epq_head)
            p->epq_tail = &p->epq_head;
        p->epq_bytes -= n->len;
    }
    pthread_mutex_unlock(&l->txlock);
    return n;
}

#define MAC_SLICE (16 << 10) /* payload bytes copied, then hashed while still in the cache */

/* Writes the endpoint message of header h (its seq set) and x with pl's payload into b, and its
 * UMAC: the payload is copied a slice at a time and each slice hashed right after, so the MAC
 * reads the bytes from the cache the copy left them in. fill's error (b unused, the MAC context
 * ready for the next message). */
static int ep_build(struct link_peer *p, struct link_buf *b, const struct san_link_hdr *h,
                    const struct san_xmsg *x, const struct payload *pl)
{
    struct san_link_msg *m = (struct san_link_msg *)b->data;
    m->hdr = *h;
    m->u.ep.x = *x;
    san_link_umac_begin(&p->tx_umac, m);
    san_link_umac_update(&p->tx_umac, &m->u.ep.x, sizeof(m->u.ep.x));
    /* Slices end at multiples of MAC_SLICE from the message's start: the hash then takes each
     * one in whole blocks of its own (a slice that ended inside a block would be buffered). */
    const size_t head = sizeof(m->hdr) + sizeof(m->u.ep.x);
    for (size_t off = 0, n; off < pl->len; off += n) {
        n = MAC_SLICE - (head + off) % MAC_SLICE;
        if (n > pl->len - off)
            n = pl->len - off;
        int err = payload_copy(pl, m->u.ep.data + off, off, n);
        if (err) {
            san_link_umac_end(&p->tx_umac, m); /* resets the context; b is not sent */
            return err;
        }
        san_link_umac_update(&p->tx_umac, m->u.ep.data + off, n);
    }
    san_link_umac_end(&p->tx_umac, m);
    return 0;
}

/* Sends what waits for p, as send buffers and p's share of them allow. A send that fails for
 * another reason than a busy provider loses a message of the endpoints' stream: the session
 * ends (its endpoints reset), and the handshake starts again. */
static void ep_drain(struct san_link *l, struct link_peer *p, uint64_t now)
{
    struct epq_node *n;
    while (p->ep_inflight < EP_PER_PEER && l->ep_inflight < NR_TX - TX_PER_PEER &&
           (n = epq_pop(l, p, false))) {
        if (p->state != SAN_LINK_UP || n->session != p->sessions) {
            free(epq_pop(l, p, true)); /* of a session that is over */
            continue;
        }
        struct link_buf *b = tx_buf(l);
        if (!b)
            return;
        struct san_link_hdr h = *(const struct san_link_hdr *)n->msg;
        const size_t head = sizeof(h) + sizeof(struct san_xmsg);
        struct payload pl = {.data = n->msg + head, .len = n->len - head};
        h.seq = ++p->tx_seq;
        ep_build(p, b, &h, (const struct san_xmsg *)(n->msg + sizeof(h)), &pl);
        ssize_t r = fi_send(l->ep, b->data, n->len, l->desc, p->fa, &b->ctx);
        if (r == -FI_EAGAIN)
            return; /* the provider is busy: again after its next completion */
        if (r) {
            peer_error(p, SAN_LOG_WARN, "send: %s: the session ends", fi_strerror((int)-r));
            lose(l, p, now);
            return;
        }
        b->busy = true;
        b->ep = true;
        b->peer = (int)(p - l->peers);
        p->ep_inflight++;
        l->ep_inflight++;
        p->msgs_tx++;
        p->bytes_tx += n->len;
        free(epq_pop(l, p, true));
    }
}

static const char *type_name(unsigned type)
{
    switch (type) {
    case SAN_LINK_PROOF:
        return "a PROOF";
    case SAN_LINK_HEARTBEAT:
        return "a HEARTBEAT";
    case SAN_LINK_BYE:
        return "a BYE";
    default:
        return "an endpoint";
    }
}

/* m claims to be of p's session (its host_id, a sequence number ahead, a PROOF of our nonce) and
 * failed the session's MAC. One the previous session's key passes is the peer's, late (it sent it
 * before it learnt of this session): dropped, no forgery. Any other is counted against the
 * session, and the FORGED_MAXth ends it as a dead link would (its endpoints reset, the handshake
 * again after the backoff), so that a forger gets FORGED_MAX tries per session. The provider
 * cannot tell a forger on the path from the peer (the same address): ending the session is what
 * such a forger can make happen, as it could by cutting the path (docs/link.md, Trust). At most
 * one line a second per link says so (ratelog.h), with the count of those not logged. */
static void bad_mac(struct san_link *l, struct link_peer *p, const struct san_link_msg *m,
                    uint64_t now)
{
    if (p->old_rx && (m->hdr.type == SAN_LINK_EP ? san_link_umac_ok(&p->old_rx_umac, m)
                                                 : san_link_mac_ok(p->old_rx_key, m)))
        return;
    p->mac_failures++;
    p->forged++;
    uint64_t held = 0;
    bool line = san_link_ratelog_take(&p->droplog, now, &held);
    if (p->forged >= FORGED_MAX) {
        snprintf(p->last_error, sizeof(p->last_error),
                 "%u messages with a bad MAC in one session: it ended", FORGED_MAX);
        if (line)
            san_log(SAN_LOG_WARN, "link %s: %s (%llu more dropped since the last line)", p->name,
                    p->last_error, (unsigned long long)held);
        lose(l, p, now);
        return;
    }
    snprintf(p->last_error, sizeof(p->last_error), "a message with a bad MAC was dropped");
    if (line)
        san_log(SAN_LOG_WARN,
                "link %s: %s message with a bad MAC was dropped (%u in this session, which "
                "ends at %u; %llu more dropped since the last line)",
                p->name, type_name(m->hdr.type), p->forged, FORGED_MAX, (unsigned long long)held);
}

static void handle_msg(struct san_link *l, struct link_peer *p, const void *buf, size_t len,
                       uint64_t now)
{
    const struct san_link_msg *m = buf;
    int err = san_link_decode(buf, len);

    if (!err && m->hdr.host_id == l->host_id)
        err = -EBADMSG; /* our own host_id: a reflection, or a clash to refuse anyway */
    if (err) {
        if (err == -EPROTO)
            peer_error(p, SAN_LOG_WARN,
                       "refused: the peer speaks link protocol version %u, this "
                       "daemon %u",
                       (unsigned)m->hdr.version, SAN_LINK_VERSION);
        else
            peer_error(p, SAN_LOG_WARN, "refused: a malformed message (%zu bytes: %s)", len,
                       err == -EOPNOTSUPP ? "unknown type" : "not the link protocol");
        lose(l, p, now);
        return;
    }
    p->msgs_rx++;
    p->bytes_rx += len;
    switch (m->hdr.type) {
    case SAN_LINK_HELLO:
        send_proof(l, p, m->hdr.host_id, m->u.hello.nonce);
        return;
    case SAN_LINK_PROOF: {
        const struct san_link_proof *pr = &m->u.proof;
        uint8_t key[SAN_LINK_KEY];
        if (pr->your_host_id != l->host_id || memcmp(pr->your_nonce, p->my_nonce, SAN_LINK_NONCE))
            return; /* answers a hello of an older session of ours */
        san_link_key(l->cfg.secret, l->cfg.secret_len, m->hdr.host_id, pr->my_nonce, l->host_id,
                     p->my_nonce, key);
        if (!san_link_mac_ok(key, m)) {
            if (p->state == SAN_LINK_UP) { /* of our session's nonce: a forgery */
                bad_mac(l, p, m, now);
                return;
            }
            p->mac_failures++; /* logged once per reason: no line per message */
            peer_error(p, SAN_LOG_WARN,
                       "authentication failed: bad MAC (the peer has another [link] secret?)");
            return;
        }
        proven(l, p, m, key, now);
        return;
    }
    case SAN_LINK_EP: {
        if (p->state != SAN_LINK_UP || m->hdr.host_id != p->peer_host || m->hdr.seq <= p->rx_seq)
            return;
        if (!san_link_umac_ok(&p->rx_umac, m)) {
            bad_mac(l, p, m, now);
            return;
        }
        p->rx_seq = m->hdr.seq;
        p->last_heard = now;
        struct san_xmsg reply;
        if (l->nic && san_nic_xdeliver(l->nic, (unsigned)(p - l->peers), p->sessions, p->peer_host,
                                       &m->u.ep.x, m->u.ep.data, &reply) == 1) {
            ep_queue(l, p, p->sessions, &reply, &(struct payload){0});
        }
        return;
    }
    case SAN_LINK_HEARTBEAT:
    case SAN_LINK_BYE:
        /* Of another session, a replay or a forgery: dropped, the session stays as it is. */
        if (p->state != SAN_LINK_UP || m->hdr.host_id != p->peer_host || m->hdr.seq <= p->rx_seq)
            return;
        if (!san_link_mac_ok(p->rx_key, m)) {
            bad_mac(l, p, m, now);
            return;
        }
        p->rx_seq = m->hdr.seq;
        p->last_heard = now;
        if (m->hdr.type == SAN_LINK_BYE) {
            san_log(SAN_LOG_INFO, "link %s: the peer stopped", p->name);
            snprintf(p->last_error, sizeof(p->last_error), "the peer stopped");
            lose(l, p, now);
        }
        return;
    }
}

static struct link_peer *peer_of(struct san_link *l, fi_addr_t fa)
{
    for (size_t i = 0; i < l->nr_peers; i++)
        if (l->peers[i].fa == fa && fa != FI_ADDR_NOTAVAIL)
            return &l->peers[i];
    return NULL;
}

static void repost(struct san_link *l, struct link_buf *b)
{
    ssize_t r;
    /* A receive is posted on an endpoint with room for NR_RX of them: -FI_EAGAIN only while the
     * provider is busy; try a few times, then leave the buffer unposted (logged). */
    for (int i = 0; i < 100 && (r = fi_recv(l->ep, b->data, RX_SIZE, l->desc, FI_ADDR_UNSPEC,
                                            &b->ctx)) == -FI_EAGAIN;
         i++)
        ;
    if (r)
        san_log(SAN_LOG_ERROR, "link: a receive buffer cannot be posted: %s", fi_strerror((int)-r));
}

static void tx_done(struct san_link *l, struct link_buf *b)
{
    b->busy = false;
    if (b->ep) {
        b->ep = false;
        l->peers[b->peer].ep_inflight--;
        l->ep_inflight--;
    } else {
        l->peers[b->peer].inflight--;
    }
}

static void completion(struct san_link *l, struct fi_cq_tagged_entry *e, fi_addr_t src,
                       uint64_t now)
{
    struct link_buf *b = (struct link_buf *)e->op_context;
    if (!b)
        return;
    if (b->rx) {
        struct link_peer *p = peer_of(l, src);
        if (p)
            handle_msg(l, p, b->data, e->len, now);
        else {
            uint64_t held;
            l->strays++;
            if (san_link_ratelog_take(&l->straylog, now, &held))
                san_log(SAN_LOG_WARN,
                        "link: a message from no configured peer dropped (%llu in "
                        "all, %llu more since the last line)",
                        (unsigned long long)l->strays, (unsigned long long)held);
        }
        repost(l, b);
        return;
    }
    tx_done(l, b);
}

static void completion_error(struct san_link *l, uint64_t now)
{
    struct fi_cq_err_entry e = {0};
    if (fi_cq_readerr(l->cq, &e, 0) != 1)
        return;
    struct link_buf *b = (struct link_buf *)e.op_context;
    if (!b)
        return;
    if (b->rx) {
        /* Unattributed (no FI_SOURCE_ERR): a message too large for a receive buffer or one the
         * provider could not deliver. The sender's link learns nothing: log and go on. */
        uint64_t held;
        if (san_link_ratelog_take(&l->rxerrlog, now, &held))
            san_log(SAN_LOG_WARN,
                    "link: a receive failed: %s (%zu bytes over; %llu more since the "
                    "last line)",
                    fi_strerror(e.err), (size_t)e.olen, (unsigned long long)held);
        repost(l, b);
        return;
    }
    struct link_peer *p = &l->peers[b->peer];
    bool ep = b->ep;
    tx_done(l, b);
    if (ep && p->state == SAN_LINK_UP) {
        /* An endpoint message that did not go: the endpoints' stream has a hole. */
        peer_error(p, SAN_LOG_WARN, "send failed: %s: the session ends", fi_strerror(e.err));
        lose(l, p, now);
        return;
    }
    if (e.err != FI_ECANCELED)
        peer_error(p, p->state == SAN_LINK_UP ? SAN_LOG_WARN : SAN_LOG_DEBUG, "send failed: %s",
                   fi_strerror(e.err));
}

static void timers(struct san_link *l, uint64_t now)
{
    for (size_t i = 0; i < l->nr_peers; i++) {
        struct link_peer *p = &l->peers[i];
        if (p->state == SAN_LINK_UP) {
            if (now - p->last_heard > l->cfg.timeout_ns) {
                peer_error(p, SAN_LOG_WARN, "no answer for %llu ms: down",
                           (unsigned long long)(l->cfg.timeout_ns / 1000000));
                lose(l, p, now);
            } else if (now >= p->next_heartbeat) {
                send_session(l, p, SAN_LINK_HEARTBEAT);
                p->next_heartbeat = now + l->cfg.timeout_ns / 4;
            }
        } else if (now >= p->next_hello) {
            send_hello(l, p);
            uint64_t cap = l->cfg.timeout_ns > BACKOFF_MIN ? l->cfg.timeout_ns : BACKOFF_MIN;
            p->next_hello = now + p->backoff;
            p->backoff = p->backoff * 2 < cap ? p->backoff * 2 : cap;
        }
    }
}

/* One batch of completions (waiting up to timeout_ms for one; 0: a look only), the timers, and
 * the endpoint messages waiting. Whether anything came or went. */
static bool poll_once(struct san_link *l, int timeout_ms)
{
    struct fi_cq_tagged_entry e[16];
    fi_addr_t src[16];
    ssize_t n = timeout_ms ? fi_cq_sreadfrom(l->cq, e, 16, src, NULL, timeout_ms)
                           : fi_cq_readfrom(l->cq, e, 16, src);
    uint64_t now = san_now_ns();
    bool queued = false;

    pthread_mutex_lock(&l->lock);
    for (ssize_t i = 0; i < n; i++)
        completion(l, &e[i], src[i], now);
    if (n == -FI_EAVAIL)
        completion_error(l, now);
    timers(l, now);
    atomic_store(&l->kicked, false); /* what is queued from now on signals again */
    bool ran = l->nic && san_nic_xpoll(l->nic);
    for (size_t i = 0; i < l->nr_peers; i++) {
        pthread_mutex_lock(&l->txlock);
        queued |= l->peers[i].epq_head != NULL;
        pthread_mutex_unlock(&l->txlock);
        ep_drain(l, &l->peers[i], now);
    }
    pthread_mutex_unlock(&l->lock);
    return n > 0 || n == -FI_EAVAIL || queued || ran;
}

/* Whether endpoint messages wait in any peer's queue. */
static bool epq_waiting(struct san_link *l)
{
    bool any = false;
    pthread_mutex_lock(&l->txlock);
    for (size_t i = 0; i < l->nr_peers && !any; i++)
        any = l->peers[i].epq_head != NULL;
    pthread_mutex_unlock(&l->txlock);
    return any;
}

static bool tx_idle(struct san_link *l)
{
    for (unsigned i = NR_RX; i < NR_RX + NR_TX; i++)
        if (l->bufs[i].busy)
            return false;
    return true;
}

static void *link_thread(void *arg)
{
    struct san_link *l = arg;
    uint64_t spin_until = 0;
    own_thread = l;
    /* While messages flow, the thread looks without waiting for SPIN_NS after the last one (the
     * provider progresses only when called, and a wake-up costs more than a look), yielding
     * between looks; then it waits in the provider for up to TICK_MS. SPIN_NS is above a round
     * trip across the link, so that in a request-answer exchange the next request (which the
     * NIC's connections hand to this thread as it looks, san_nic_xpoll) finds it looking. */
    bool watching = false;
    while (!atomic_load(&l->stop)) {
        bool spinning = san_now_ns() < spin_until;
        if (!spinning) {
            atomic_store(&l->waiting, true);
            spinning = epq_waiting(l); /* queued before waiting was seen: not signalled */
        }
        /* While it polls, the connections' threads leave their clients' requests to it (no
         * doorbell, no wake-up per request); before it waits, they are woken to watch again. */
        if (l->nic && spinning != watching) {
            watching = spinning;
            san_nic_xwatch(l->nic, watching);
        }
        bool did = poll_once(l, spinning ? 0 : TICK_MS);
        atomic_store(&l->waiting, false);
        if (did)
            spin_until = san_now_ns() + SPIN_NS;
        else if (spinning)
            sched_yield();
    }
    if (l->nic && watching)
        san_nic_xwatch(l->nic, false);
    /* Goodbye to every up peer, so that it does not wait for the timeout; then a short while
     * for those messages to leave. */
    pthread_mutex_lock(&l->lock);
    for (size_t i = 0; i < l->nr_peers; i++)
        if (l->peers[i].state == SAN_LINK_UP)
            send_session(l, &l->peers[i], SAN_LINK_BYE);
    pthread_mutex_unlock(&l->lock);
    uint64_t until = san_now_ns() + BYE_WAIT_NS;
    while (!tx_idle(l) && san_now_ns() < until) {
        struct fi_cq_tagged_entry e[16];
        fi_addr_t src[16];
        ssize_t n = fi_cq_readfrom(l->cq, e, 16, src);
        for (ssize_t i = 0; i < n; i++)
            if (!((struct link_buf *)e[i].op_context)->rx)
                ((struct link_buf *)e[i].op_context)->busy = false;
        if (n == -FI_EAVAIL) {
            struct fi_cq_err_entry err = {0};
            if (fi_cq_readerr(l->cq, &err, 0) == 1 && err.op_context)
                ((struct link_buf *)err.op_context)->busy = false;
        }
    }
    return NULL;
}

/* host and port of sa as strings for fi_getinfo. */
static void host_port(const struct sockaddr_storage *sa, socklen_t len, char *host, size_t hsize,
                      char *port, size_t psize)
{
    if (getnameinfo((const struct sockaddr *)sa, len, host, (socklen_t)hsize, port,
                    (socklen_t)psize, NI_NUMERICHOST | NI_NUMERICSERV)) {
        snprintf(host, hsize, "?");
        snprintf(port, psize, "0");
    }
}

static struct fi_info *hints_for(const struct san_link_config *c)
{
    struct fi_info *h = fi_allocinfo();
    if (!h)
        return NULL;
    h->caps = FI_MSG | FI_RMA | FI_SOURCE;
    h->mode = FI_CONTEXT | FI_CONTEXT2;
    h->ep_attr->type = FI_EP_RDM;
    h->domain_attr->mr_mode =
        FI_MR_LOCAL | FI_MR_VIRT_ADDR | FI_MR_ALLOCATED | FI_MR_PROV_KEY | FI_MR_ENDPOINT;
    h->domain_attr->threading = FI_THREAD_DOMAIN; /* only the link thread calls in */
    /* Endpoint messages are a stream: sends to one peer arrive in the order they were sent. */
    h->tx_attr->msg_order = FI_ORDER_SAS;
    h->rx_attr->msg_order = FI_ORDER_SAS;
    h->fabric_attr->prov_name = strdup(c->provider);
    if (!h->fabric_attr->prov_name) {
        fi_freeinfo(h);
        return NULL;
    }
    return h;
}

/* Resolves the peers (numeric: no name service) and inserts them into the address vector. A peer
 * that cannot be resolved stays unreachable, with its reason. */
static void add_peers(struct san_link *l, struct fi_info *hints)
{
    for (size_t i = 0; i < l->cfg.nr_peers; i++) {
        struct link_peer *p = &l->peers[i];
        char host[64], port[16];
        struct fi_info *pi = NULL;
        p->addr = l->cfg.peers[i];
        p->addr_len = l->cfg.peer_len[i];
        p->fa = FI_ADDR_NOTAVAIL;
        san_link_format_addr((struct sockaddr *)&p->addr, p->name, sizeof(p->name));
        new_nonce(p->my_nonce);
        p->backoff = BACKOFF_MIN;
        host_port(&p->addr, p->addr_len, host, sizeof(host), port, sizeof(port));
        int r = fi_getinfo(FI_API, host, port, 0, hints, &pi);
        if (!r && pi->dest_addr && fi_av_insert(l->av, pi->dest_addr, 1, &p->fa, 0, NULL) != 1) {
            p->fa = FI_ADDR_NOTAVAIL;
            r = -FI_EINVAL;
        }
        if (!r && pi->dest_addrlen <= sizeof(p->raw)) {
            memcpy(p->raw, pi->dest_addr, pi->dest_addrlen);
            p->raw_len = pi->dest_addrlen;
        }
        if (r || p->fa == FI_ADDR_NOTAVAIL)
            peer_error(p, SAN_LOG_ERROR, "cannot be addressed with provider %s: %s",
                       l->cfg.provider, fi_strerror(r ? -r : FI_EINVAL));
        fi_freeinfo(pi);
    }
    l->nr_peers = l->cfg.nr_peers;
}

/* Opens the fabric, domain, completion queue, address vector and endpoint on cfg.listen. */
static int open_endpoint(struct san_link *l, struct fi_info *hints)
{
    char host[64], port[16], where[96];
    int r;

    host_port(&l->cfg.listen, l->cfg.listen_len, host, sizeof(host), port, sizeof(port));
    san_link_format_addr((struct sockaddr *)&l->cfg.listen, where, sizeof(where));
    if ((r = fi_getinfo(FI_API, host, port, FI_SOURCE, hints, &l->info))) {
        san_log(SAN_LOG_ERROR,
                "link: no libfabric provider \"%s\" with RDM, FI_MSG and FI_RMA on %s: "
                "%s (fi_info -l lists the providers)",
                l->cfg.provider, where, fi_strerror(-r));
        return fi_err(r);
    }
    struct fi_cq_attr cq_attr = {
        .size = NR_RX + NR_TX + 16, .format = FI_CQ_FORMAT_TAGGED, .wait_obj = FI_WAIT_UNSPEC};
    struct fi_av_attr av_attr = {.type = FI_AV_TABLE, .count = SAN_LINK_MAX_PEERS};
    const char *step = "fabric";
    if ((r = fi_fabric(l->info->fabric_attr, &l->fabric, NULL)) ||
        (step = "domain", r = fi_domain(l->fabric, l->info, &l->domain, NULL)) ||
        (step = "completion queue", r = fi_cq_open(l->domain, &cq_attr, &l->cq, NULL)) ||
        (step = "address vector", r = fi_av_open(l->domain, &av_attr, &l->av, NULL)) ||
        (step = "endpoint", r = fi_endpoint(l->domain, l->info, &l->ep, NULL)) ||
        (step = "binding", r = fi_ep_bind(l->ep, &l->av->fid, 0)) ||
        (r = fi_ep_bind(l->ep, &l->cq->fid, FI_TRANSMIT | FI_RECV)) ||
        (step = "enabling the endpoint on the listen address", r = fi_enable(l->ep))) {
        san_log(SAN_LOG_ERROR, "link: %s (%s on %s): %s", step, l->info->fabric_attr->prov_name,
                where, fi_strerror(-r));
        return fi_err(r);
    }
    /* The registration mode the provider returned decides what local buffers need. */
    uint64_t mode = (uint64_t)l->info->domain_attr->mr_mode;
    if (mode & FI_MR_LOCAL) {
        step = "registering the message buffers";
        if ((r = fi_mr_reg(l->domain, l->bufs, sizeof(*l->bufs) * (NR_RX + NR_TX),
                           FI_SEND | FI_RECV, 0, 0, 0, &l->mr, NULL)) ||
            ((mode & FI_MR_ENDPOINT) &&
             ((r = fi_mr_bind(l->mr, &l->ep->fid, 0)) || (r = fi_mr_enable(l->mr))))) {
            san_log(SAN_LOG_ERROR, "link: %s: %s", step, fi_strerror(-r));
            return fi_err(r);
        }
        l->desc = fi_mr_desc(l->mr);
    }
    san_log(SAN_LOG_INFO, "link: listening on %s with %s (registration mode %#llx%s)", where,
            l->info->fabric_attr->prov_name, (unsigned long long)mode,
            mode & FI_MR_LOCAL ? ": local buffers registered" : "");
    return 0;
}

static int create(const struct san_link_params *prm, struct san_link **out)
{
    struct san_link *l = calloc(1, sizeof(*l));
    struct fi_info *hints = NULL;
    int err;

    if (!l)
        return -ENOMEM;
    l->cfg = *prm->cfg;
    l->host_id = prm->host_id;
    l->evfd = -1;
    l->nic = prm->nic;
    l->changes = prm->changes;
    pthread_mutex_init(&l->lock, NULL);
    pthread_mutex_init(&l->txlock, NULL);
    pthread_mutex_init(&l->routelock, NULL);
    for (size_t i = 0; i < SAN_LINK_MAX_PEERS; i++)
        l->peers[i].epq_tail = &l->peers[i].epq_head;
    for (size_t i = 0; i < prm->nr_nets && i < SAN_LINK_NETS; i++) {
        memcpy(l->nets[i].ip, prm->nets[i].ip, 16);
        l->nets[i].prefix = prm->nets[i].prefix;
        l->nr_nets++;
    }
    l->bufs = aligned_alloc(64, sizeof(*l->bufs) * (NR_RX + NR_TX));
    /* Before the first fi_getinfo of the process loads the provider, which reads them. */
    struct san_link_rxm_var rxm[SAN_LINK_RXM_VARS];
    san_link_rxm_env(rxm);
    hints = hints_for(&l->cfg);
    l->evfd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (!l->bufs || !hints || l->evfd < 0) {
        err = l->evfd < 0 ? -errno : -ENOMEM;
        goto fail;
    }
    memset(l->bufs, 0, sizeof(*l->bufs) * (NR_RX + NR_TX));
    if ((err = open_endpoint(l, hints)))
        goto fail;
    add_peers(l, hints);
    for (unsigned i = 0; i < NR_RX; i++) {
        ssize_t r;
        l->bufs[i].rx = true;
        if ((r = fi_recv(l->ep, l->bufs[i].data, RX_SIZE, l->desc, FI_ADDR_UNSPEC,
                         &l->bufs[i].ctx))) {
            san_log(SAN_LOG_ERROR, "link: posting receives: %s", fi_strerror((int)-r));
            err = fi_err((int)r);
            goto fail;
        }
    }
    if (!l->cfg.secret_len)
        san_log(SAN_LOG_WARN, "link: no [link] secret: links are unauthenticated, any program "
                              "that reaches the link address may join the SAN (docs/link.md)");
    if ((err = -pthread_create(&l->thread, NULL, link_thread, l)))
        goto fail;
    l->started = true;
    fi_freeinfo(hints);
    *out = l;
    return 0;
fail:
    fi_freeinfo(hints);
    san_link_destroy(l);
    return err;
}

/* Every thread made here (ours, and any the provider starts) blocks every signal: the daemon
 * takes SIGTERM and SIGINT through a signalfd, which a thread that does not block them would
 * defeat (the default action would kill the process). */
int san_link_create(const struct san_link_params *prm, struct san_link **out)
{
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    int err = create(prm, out);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    return err;
}

void san_link_destroy(struct san_link *l)
{
    if (!l)
        return;
    if (l->started) {
        atomic_store(&l->stop, true);
        fi_cq_signal(l->cq);
        pthread_join(l->thread, NULL);
    }
    if (l->ep)
        fi_close(&l->ep->fid);
    if (l->mr)
        fi_close(&l->mr->fid);
    if (l->av)
        fi_close(&l->av->fid);
    if (l->cq)
        fi_close(&l->cq->fid);
    if (l->domain)
        fi_close(&l->domain->fid);
    if (l->fabric)
        fi_close(&l->fabric->fid);
    fi_freeinfo(l->info);
    if (l->evfd >= 0)
        close(l->evfd);
    for (size_t i = 0; i < SAN_LINK_MAX_PEERS; i++)
        while (l->peers[i].epq_head) {
            struct epq_node *n = l->peers[i].epq_head;
            l->peers[i].epq_head = n->next;
            free(n);
        }
    pthread_mutex_destroy(&l->txlock);
    pthread_mutex_destroy(&l->routelock);
    pthread_mutex_destroy(&l->lock);
    free(l->bufs);
    free(l);
}

int san_link_event_fd(const struct san_link *l)
{
    return l->evfd;
}

size_t san_link_events(struct san_link *l, struct san_link_event *ev, size_t max)
{
    size_t n = 0;
    pthread_mutex_lock(&l->lock);
    uint64_t v;
    ssize_t r = read(l->evfd, &v, sizeof(v));
    (void)r;
    while (n < max && l->ev_count) {
        ev[n++] = l->events[l->ev_head];
        l->ev_head = (l->ev_head + 1) % NR_EVENTS;
        l->ev_count--;
    }
    if (l->ev_count) { /* more than max: readable again */
        uint64_t one = 1;
        ssize_t w = write(l->evfd, &one, sizeof(one));
        (void)w;
    }
    pthread_mutex_unlock(&l->lock);
    return n;
}

size_t san_link_nr_peers(const struct san_link *l)
{
    return l->nr_peers;
}

int san_link_peer_info(struct san_link *l, size_t i, struct san_link_peer_info *out)
{
    if (i >= l->nr_peers)
        return -ENOENT;
    pthread_mutex_lock(&l->lock);
    const struct link_peer *p = &l->peers[i];
    *out = (struct san_link_peer_info){
        .addr = p->addr,
        .state = p->state,
        .host_id = p->last_host,
        .nr_nets = p->state == SAN_LINK_UP ? p->nr_nets : 0,
        .bytes_tx = p->bytes_tx,
        .bytes_rx = p->bytes_rx,
        .msgs_tx = p->msgs_tx,
        .msgs_rx = p->msgs_rx,
        .sessions = p->sessions,
        .mac_failures = p->mac_failures,
    };
    memcpy(out->nets, p->nets, sizeof(p->nets[0]) * out->nr_nets);
    memcpy(out->last_error, p->last_error, sizeof(out->last_error));
    pthread_mutex_unlock(&l->lock);
    return 0;
}

uint64_t san_link_up(struct san_link *l)
{
    return atomic_load(&l->up);
}

uint64_t san_link_routes_gen(struct san_link *l)
{
    return atomic_load(&l->routes_gen);
}

/* The NIC's transport (nic.h): which link serves an address, and queueing endpoint messages. */
static int link_route(void *ctx, const struct san_nic_addr *a, unsigned *link, uint64_t *session,
                      uint64_t *host)
{
    struct san_link *l = ctx;
    int err = -ENETUNREACH;
    pthread_mutex_lock(&l->routelock);
    for (size_t i = 0; i < l->nr_peers && err; i++) {
        const struct link_peer *p = &l->peers[i];
        if (!p->rt_up)
            continue;
        for (size_t j = 0; j < p->rt_nr_nets; j++) {
            if (san_nic_net_has(&p->rt_nets[j], a)) {
                *link = (unsigned)i;
                *session = p->rt_session;
                *host = p->rt_host;
                err = 0;
                break;
            }
        }
    }
    pthread_mutex_unlock(&l->routelock);
    return err;
}

/* On the link thread, under l->lock (it runs connections only inside poll_once's locked part):
 * m goes to the provider at once, built in a send buffer, when nothing of p waits before it and
 * p's share of the buffers allows; else 1 (queue it). 0 when sent; a send that fails for another
 * reason than a busy provider ends the session, as in ep_drain; fill's error: nothing went. */
static int ep_send_now(struct san_link *l, struct link_peer *p, uint64_t session,
                       const struct san_xmsg *x, const struct payload *pl)
{
    if (p->state != SAN_LINK_UP || p->sessions != session || p->ep_inflight >= EP_PER_PEER ||
        l->ep_inflight >= NR_TX - TX_PER_PEER)
        return 1;
    pthread_mutex_lock(&l->txlock);
    bool waiting = p->epq_head != NULL;
    pthread_mutex_unlock(&l->txlock);
    struct link_buf *b = waiting ? NULL : tx_buf(l);
    if (!b)
        return 1;
    size_t size = sizeof(struct san_link_hdr) + sizeof(*x) + pl->len;
    struct san_link_hdr h = {.magic = SAN_LINK_MAGIC,
                             .version = SAN_LINK_VERSION,
                             .type = SAN_LINK_EP,
                             .length = (uint32_t)size,
                             .host_id = l->host_id,
                             .seq = p->tx_seq + 1};
    int err = ep_build(p, b, &h, x, pl);
    if (err)
        return err;
    ssize_t r = fi_send(l->ep, b->data, size, l->desc, p->fa, &b->ctx);
    if (r == -FI_EAGAIN)
        return 1;
    if (r) {
        peer_error(p, SAN_LOG_WARN, "send: %s: the session ends", fi_strerror((int)-r));
        lose(l, p, san_now_ns());
        return -ECONNRESET;
    }
    p->tx_seq++;
    b->busy = true;
    b->ep = true;
    b->peer = (int)(p - l->peers);
    p->ep_inflight++;
    l->ep_inflight++;
    p->msgs_tx++;
    p->bytes_tx += size;
    return 0;
}

static int ep_send(struct san_link *l, unsigned link, uint64_t session, const struct san_xmsg *m,
                   const struct payload *pl)
{
    if (link >= l->nr_peers || pl->len > SAN_XMSG_CHUNK)
        return -EINVAL;
    struct link_peer *p = &l->peers[link];
    if (!session || atomic_load(&p->live) != session)
        return -ECONNRESET;
    int err = own_thread == l ? ep_send_now(l, p, session, m, pl) : 1;
    if (err <= 0)
        return err;
    err = ep_queue(l, p, session, m, pl);
    /* A thread that is looking finds the message at its next look; one that waits is signalled
     * (waiting is set before it looks at the queues a last time: one of the two sees the other). */
    if (!err && own_thread != l && atomic_load(&l->waiting) && !atomic_exchange(&l->kicked, true))
        fi_cq_signal(l->cq); /* out of its wait: the link thread sends it */
    return err;
}

static int link_send(void *ctx, unsigned link, uint64_t session, const struct san_xmsg *m,
                     const void *payload, size_t len)
{
    return ep_send(ctx, link, session, m, &(struct payload){.data = payload, .len = len});
}

static int link_send_fill(void *ctx, unsigned link, uint64_t session, const struct san_xmsg *m,
                          size_t len, int (*fill)(void *arg, void *dst, size_t off, size_t n),
                          void *arg)
{
    return ep_send(ctx, link, session, m, &(struct payload){.fill = fill, .arg = arg, .len = len});
}

void san_link_xport(struct san_link *l, struct san_nic_xport *out)
{
    *out = (struct san_nic_xport){
        .ctx = l, .route = link_route, .send = link_send, .send_fill = link_send_fill};
}
