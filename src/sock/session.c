/* A SAN connection (session.h): buffers, the session protocol, progress and waiting.
 *
 * Buffers: one region of proxy memory (san_alloc, so the NIC moves it with one memcpy), registered
 * once: NRECV receive slots, then NSEND send slots, of slot_size bytes each. Receive slot i is
 * posted with wr_id i, send slot j is sent with wr_id SEND_TAG | j. A DATA message stays in its
 * receive slot until the program has read it all; the slot is then reposted and its credit owed
 * back to the peer (sent in the header of the next message, or in a CREDIT).
 *
 * Credits (docs/sock.md): credits + our messages the peer has not reposted yet + what the peer
 * owes us == the peer's receive count, so a peer that returns more is lying (the decoder's
 * max_credits). Data never takes the last credit: it is kept for CREDIT and SHUTDOWN.
 *
 * Coalescing: a write that finds no credit for data, or a DATA message of ours the NIC has not
 * delivered yet (outq), copies its bytes into the pending send slot (one send slot taken out of
 * send_free and not posted) and returns, as TCP's send buffer takes bytes its window cannot carry
 * yet; later writes append to it, and it is posted as one DATA message once the credit is there
 * and the message before it delivered (control_locked, run by whoever makes progress: the send's
 * completion comes within the NIC's turnaround), or at once when it is full. A write that finds
 * the connection idle posts at once (TCP_NODELAY: latency first). SHUTDOWN and offers come after
 * the pending bytes, which count in SIOCOUTQ.
 *
 * Locking: c->lock guards everything here and every libsan call on c->ep. Objects inherited
 * through fork (gen differs) are never locked or passed to libsan: their lock may be held by a
 * thread that does not exist in the child, and their endpoint is the parent's. */
#include "common/clock.h"
#include "sock/session.h"

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/timerfd.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include "client/ep.h" /* san_ep_wait_arm: libsan's, for the switch only */
#include "sock/copy.h"
#include "sock/finish.h"
#include "sock/log.h"
#include "sock/rdma.h"
#include "sock/real.h"
#include "sock/san.h"
#include "sock/sock.h"

#define NRECV     32u
#define NSEND     32u
#define SEND_TAG  0x100u
#define NREADY    (NRECV + RDMA_NBUF) /* DATA slots held, and RDMA transfers (rdma.h) */
#define SLOT_DATA (16u << 10)         /* the most data one receive slot holds */
/* An embryo (an accepted connection before the peer's NEGOTIATE: listen.c) holds only EMB_RECV
 * bytes of proxy memory, one receive (wr_id EMB_TAG) for that NEGOTIATE. When it arrives the
 * slots (about 1 MiB) are set up and our NEGOTIATE sent, and the small region goes at once
 * (nothing posted names it any more), so that silent connectors cannot make a listener hold
 * 64 MiB. Sending our NEGOTIATE only then keeps the protocol: the peer has no credit before it,
 * so its NEGOTIATE is the one message it can send (a hostile peer's others wait in its own send
 * queue: the NIC holds a send until a receive is posted, docs/nic.md). */
#define EMB_TAG  0x800u
#define EMB_RECV SANSOCK_NEGOTIATE_MAX

struct ready {
    uint16_t slot;     /* DATA: its receive slot; RDMA: its sink (the offer's slot is reposted) */
    bool rdma;         /* an RDMA transfer, read once the sink's read completed */
    uint32_t off, len; /* bytes of the payload already read, and its length */
};

/* A connection's phase: a non-blocking connect's SAN half is under way (no buffers yet), done
 * (everything below), or it failed and the descriptor went to the kernel's connect. */
enum { PHASE_READY, PHASE_CONNECTING, PHASE_KERNEL };

struct sansock_conn {
    struct sansock_obj obj;
    pthread_mutex_t lock;
    int phase;
    /* PHASE_CONNECTING: the program's descriptor and destination (for the kernel's connect if
     * the SAN's fails), the deadline's timer (SANSOCK_CONNECT_TIMEOUT_MS), and whether connect
     * was told of the completion (Linux: the first connect after it returns 0, later EISCONN). */
    int kfd, timerfd;
    dev_t kdev; /* which file kfd is: a number the program closed may name another later */
    ino_t kino;
    struct sockaddr_storage to;
    socklen_t tolen;
    bool connect_told;
    struct san_ctx *ctx;
    struct san_ep *ep; /* NULL once closed (reset) */
    struct san_mr *mr;
    uint8_t *mem; /* the slots; NULL while an embryo */
    uint32_t slot_size, lkey, max_inline;
    struct san_mr *emb_mr; /* an embryo's memory (EMB_TAG above), until its NEGOTIATE came */
    uint8_t *emb_mem;

    struct ready ready[NREADY]; /* DATA messages and RDMA transfers in arrival order */
    uint32_t rhead, rcount;
    uint64_t send_free; /* bit j: send slot j is free */
    uint32_t sends_posted;
    uint32_t send_bytes[NSEND]; /* data bytes in posted send slot j */
    uint64_t outq;              /* data bytes in posted sends not completed yet */
    int32_t pend_slot;          /* the send slot holding written bytes not posted yet, or -1 */
    uint32_t pend_len;          /* data bytes in it */

    uint32_t credits;    /* receives the peer has posted for us */
    uint32_t owed;       /* receives we reposted and have not told the peer about */
    uint32_t peer_slots; /* the peer's receive count (its NEGOTIATE) */
    bool negotiated;     /* the peer's NEGOTIATE arrived */
    bool peer_low;       /* the peer said it has at most one credit left */
    bool peer_eof;       /* the peer's SHUTDOWN arrived */
    bool peer_gone;      /* the peer's endpoint is closed */
    bool rd_shut, wr_shut, shut_sent;
    bool exiting;     /* the process exits: SHUTDOWN after the pending bytes (sansock_conn_exit) */
    int err;          /* reset: -ECONNRESET (or the NIC's error); 0 while healthy */
    int so_error;     /* err until reported once (SO_ERROR, or a call that failed with it) */
    bool abort_close; /* SO_LINGER {1, 0}: close resets instead of delivering */
    bool closed;      /* the program closed it: data that comes now resets, as TCP's RST */

    uint32_t features;      /* RDMA modes both sides announced */
    uint32_t peer_max_rdma; /* the largest offer the peer reads */
    struct sansock_rdma rdma;

    struct sansock_wire_negotiate peer_neg;
    struct sansock_wire_addr local, peer;
    struct sansock_waiter *waiters;
    unsigned seq; /* bumped by every change of state: epoll's edge-triggered mode (epoll.c) */
};

/* The RDMA modes this side announces (SANSOCK_RDMA, SANSOCK_RDMA_WRITE). */
static uint32_t own_features(void)
{
    if (!sansock_cfg.rdma)
        return 0;
    return SANSOCK_FEAT_RDMA_READ | (sansock_cfg.rdma_write ? SANSOCK_FEAT_RDMA_WRITE : 0);
}

static bool inherited(const struct sansock_conn *c)
{
    return c->obj.gen != sansock_fork_gen;
}

static uint8_t *recv_slot(struct sansock_conn *c, uint32_t i)
{
    return c->mem + (size_t)i * c->slot_size;
}

static uint8_t *send_slot(struct sansock_conn *c, uint32_t j)
{
    return c->mem + (size_t)(NRECV + j) * c->slot_size;
}

/* Whether our NEGOTIATE (send slot 0, the connection's first send) was delivered, or never will
 * be (reset, the peer gone). */
static bool negotiate_delivered_locked(const struct sansock_conn *c)
{
    return (c->send_free & 1) || c->err || c->peer_gone || !c->ep;
}

/* Closes the endpoint of a reset connection once no thread waits on its descriptor. */
static void close_ep_locked(struct sansock_conn *c)
{
    if (c->waiters)
        return;
    if (c->ep && (c->err || c->phase == PHASE_KERNEL)) {
        san_ep_close(c->ep);
        c->ep = NULL;
    }
    if (c->timerfd >= 0 && c->phase != PHASE_CONNECTING) {
        REAL(close)(c->timerfd);
        c->timerfd = -1;
    }
}

static void reset_locked(struct sansock_conn *c, int err)
{
    c->seq++;
    if (!c->err) {
        c->err = err ? err : -ECONNRESET;
        c->so_error = -ECONNRESET; /* what reads and writes say too, whatever the NIC said */
    }
    close_ep_locked(c);
}

/* Whether the daemon finishes the endpoint if this process goes away (exit, _exit, SIGKILL):
 * yes unless the program has data it has not read, or asked for an abortive close (SO_LINGER
 * {1, 0}): TCP resets then. Data the NIC delivered and nobody polled yet the daemon sees itself. */
static void linger_locked(struct sansock_conn *c)
{
    if (c->ep)
        san_ep_set_linger(c->ep, !c->abort_close && !c->rcount);
}

/* A post failed. -ENOTCONN: the peer closed its endpoint (its SHUTDOWN, if it sent one, is in our
 * completion queue already: the NIC completes in order), so the next progress tells an orderly
 * close from a reset. Anything else is a broken endpoint. */
static void post_failed_locked(struct sansock_conn *c, int err)
{
    c->seq++;
    if (err == -ENOTCONN)
        c->peer_gone = true;
    else
        reset_locked(c, -ECONNRESET);
}

static int repost_locked(struct sansock_conn *c, uint32_t slot)
{
    struct san_sge sge = {.addr = recv_slot(c, slot), .length = c->slot_size, .lkey = c->lkey};
    int err = c->ep ? san_post_recv(c->ep, slot, &sge, 1) : -ENOTCONN;
    if (err) {
        post_failed_locked(c, err);
        return err;
    }
    c->owed++;
    return 0;
}

/* A position in the program's iovec array: a vectored call copies across its pieces as if they
 * were one buffer, so many small pieces fill one message. */
struct cursor {
    const struct iovec *iov;
    int cnt;
    size_t off;   /* into iov[0] */
    bool discard; /* a receive with MSG_TRUNC: the bytes are consumed, not copied (as TCP's) */
};

static void cursor_skip_empty(struct cursor *u)
{
    while (u->cnt && u->off == u->iov->iov_len) {
        u->iov++;
        u->cnt--;
        u->off = 0;
    }
}

/* Copies len bytes between the cursor's pieces and flat (to flat if out), advancing it. The caller
 * checked that the pieces hold len bytes. */
static void cursor_copy(struct cursor *u, uint8_t *flat, size_t len, bool out)
{
    if (u->discard)
        return;
    while (len) {
        cursor_skip_empty(u);
        size_t n = u->iov->iov_len - u->off;
        if (n > len)
            n = len;
        uint8_t *p = (uint8_t *)u->iov->iov_base + u->off;
        if (out)
            sansock_copy(flat, p, n);
        else
            sansock_copy(p, flat, n);
        flat += n;
        len -= n;
        u->off += n;
    }
}

/* Posts send slot j (taken out of send_free by the caller) as a message of type whose len payload
 * bytes are in place, the credits owed in its header. The caller checked that a credit is free. */
static int post_slot_locked(struct sansock_conn *c, uint32_t j, uint8_t type, uint32_t len)
{
    uint8_t *s = send_slot(c, j);
    uint16_t flags = c->credits <= 2 ? SANSOCK_F_CREDIT_LOW : 0;
    size_t n = sansock_wire_encode_hdr(s, type, flags, len, c->owed);
    struct san_sge sge = {.addr = s, .length = (uint32_t)n, .lkey = c->lkey};
    /* Protocol messages say so: a peer that dies with only those unread still delivers what it
     * sent (TCP resets only for unread data). */
    unsigned wr = type == SANSOCK_MSG_DATA || type == SANSOCK_MSG_RDMA_OFFER ? 0 : SAN_EP_WR_NODATA;
    int err = c->ep ? san_post_send(c->ep, SEND_TAG | j, &sge, 1, wr) : -ENOTCONN;
    if (err) {
        post_failed_locked(c, err);
        return err;
    }
    c->sends_posted++;
    c->send_bytes[j] = len;
    c->outq += len;
    c->credits--;
    c->owed = 0;
    c->peer_low = false;
    return 0;
}

/* Sends one message of type with len payload bytes from src (NULL: none) from a free send slot.
 * The caller checked that a credit and a slot are free. */
static int send_locked(struct sansock_conn *c, uint8_t type, struct cursor *src, uint32_t len)
{
    uint32_t j = (uint32_t)__builtin_ctzll(c->send_free);
    struct cursor before = len ? *src : (struct cursor){0};
    if (len)
        cursor_copy(src, send_slot(c, j) + SANSOCK_HDR_SIZE, len, true);
    c->send_free &= ~(1ull << j);
    int err = post_slot_locked(c, j, type, len);
    if (err) {
        c->send_free |= 1ull << j;
        if (len)
            *src = before;
    }
    return err;
}

/* Posts the pending bytes as one DATA message if a credit for data is there and no data message
 * is still in flight (unless force: a full slot goes at once): 0 (posted, or nothing pending),
 * -EAGAIN (not yet), or the post's error. */
static int flush_pending_locked(struct sansock_conn *c, bool force)
{
    if (c->pend_slot < 0)
        return 0;
    /* A sink held is answered first (control_locked): the peer places its bytes there. */
    if (c->err || c->peer_gone || !c->negotiated || c->credits < 2 || c->rdma.psink_held ||
        (c->outq && !force))
        return -EAGAIN;
    int err = post_slot_locked(c, (uint32_t)c->pend_slot, SANSOCK_MSG_DATA, c->pend_len);
    if (!err) {
        c->pend_slot = -1;
        c->pend_len = 0;
    }
    return err;
}

/* Sends a protocol message whose payload (len bytes at payload) is not stream data: it does not
 * count in outq (an offer's bytes count until its DONE: sansock_rdma_outstanding_bytes). */
static int send_ctl_locked(struct sansock_conn *c, uint8_t type, const void *payload, uint32_t len)
{
    uint32_t j = (uint32_t)__builtin_ctzll(c->send_free);
    struct iovec v = {.iov_base = (void *)payload, .iov_len = len};
    struct cursor u = {.iov = &v, .cnt = 1};
    int err = send_locked(c, type, &u, len);
    if (!err) {
        c->outq -= len;
        c->send_bytes[j] = 0;
    }
    return err;
}

/* Answers the peer's sink held (SINK_DONE with the bytes written into it, 0 if none): the peer's
 * receive waits for it. Any credit. With none, psink_due leaves it to control_locked. */
static void sink_answer_locked(struct sansock_conn *c)
{
    if (!c->credits || !c->send_free || c->err) {
        c->rdma.psink_due = true;
        return;
    }
    struct sansock_wire_done d;
    uint8_t msg[SANSOCK_HDR_SIZE + sizeof(d)];
    sansock_rdma_sink_answer(&c->rdma, &d);
    sansock_wire_encode_done(msg, SANSOCK_MSG_SINK_DONE, 0, 0, &d);
    send_ctl_locked(c, SANSOCK_MSG_SINK_DONE, msg + SANSOCK_HDR_SIZE, sizeof(d));
}

/* The control messages that are due: a pending SHUTDOWN, and credits owed when half the receives
 * are owed or the peer said it runs low. Both may use the last credit. */
static void control_locked(struct sansock_conn *c)
{
    if (c->err || !c->negotiated || c->peer_gone)
        return;
    /* A sink held is answered before SHUTDOWN and before pending bytes (with pending bytes it is
     * never usable: tx_pos counts them): the peer's receive waits on it. */
    if (c->rdma.psink_held && (c->wr_shut || c->exiting || c->pend_slot >= 0))
        sink_answer_locked(c);
    /* After shutdown, close or exit nothing more can join the pending bytes: they go at once. */
    if (!c->rdma.psink_held && flush_pending_locked(c, c->wr_shut || c->exiting) &&
        (c->err || c->peer_gone))
        return;
    /* SHUTDOWN comes after every byte written, pending ones too. */
    if ((c->wr_shut || c->exiting) && !c->shut_sent && !c->rdma.psink_held && c->pend_slot < 0 &&
        c->credits && c->send_free) {
        if (send_locked(c, SANSOCK_MSG_SHUTDOWN, NULL, 0))
            return;
        c->shut_sent = true;
    }
    /* DONE frees a staging buffer the peer's sender waits for: due at once, any credit. */
    while (c->rdma.dones_due && c->credits && c->send_free && !c->err) {
        struct sansock_wire_done d;
        uint8_t msg[SANSOCK_HDR_SIZE + sizeof(d)];
        sansock_rdma_next_done(&c->rdma, &d);
        sansock_wire_encode_done(msg, SANSOCK_MSG_DONE, 0, 0, &d);
        if (send_ctl_locked(c, SANSOCK_MSG_DONE, msg + SANSOCK_HDR_SIZE, sizeof(d)))
            return;
    }
    if (c->rdma.psink_held &&
        (c->rdma.psink_due || !sansock_rdma_sink_usable(&c->rdma) || c->wr_shut))
        sink_answer_locked(c);
    if (c->owed && (c->owed >= NRECV / 2 || c->peer_low) && c->credits && c->send_free)
        send_locked(c, SANSOCK_MSG_CREDIT, NULL, 0);
}

/* Whether the oldest ready bytes can be read now (an RDMA transfer once its read completed). */
static bool readable_locked(const struct sansock_conn *c)
{
    if (!c->rcount)
        return false;
    const struct ready *r = &c->ready[c->rhead];
    return !r->rdma || sansock_rdma_fetched(&c->rdma, r->slot);
}

/* Drops what is ready (after SHUT_RD), as TCP discards it: slots reposted, transfers DONE'd;
 * stops at a transfer whose read is still in flight (its completion drops it). */
static void drop_ready_locked(struct sansock_conn *c)
{
    while (readable_locked(c) && !c->err) {
        struct ready r = c->ready[c->rhead];
        c->rhead = (c->rhead + 1) % NREADY;
        c->rcount--;
        if (r.rdma)
            sansock_rdma_consumed(&c->rdma, r.slot);
        else
            repost_locked(c, r.slot);
    }
}

static int setup_locked(struct sansock_conn *c);
static void emb_release_locked(struct sansock_conn *c);

static void on_recv_locked(struct sansock_conn *c, uint32_t slot, uint32_t byte_len)
{
    bool emb = slot == EMB_TAG; /* the embryo's one receive: only a NEGOTIATE passes */
    struct sansock_wire_limits lim = {
        .negotiated = c->negotiated,
        .max_payload = (emb ? EMB_RECV : c->slot_size) - SANSOCK_HDR_SIZE,
        .max_credits = c->negotiated ? c->peer_slots - c->credits : 0,
        .features = c->features,
        .max_rdma = RDMA_CHUNK,
    };
    struct sansock_msg m;
    enum sansock_wire_err werr =
        sansock_wire_decode(emb ? c->emb_mem : recv_slot(c, slot), byte_len, &lim, &m);
    if (werr != SANSOCK_WERR_OK) {
        if (sansock_logging())
            sansock_log("a connection reset: its peer broke the session protocol (%s)",
                        sansock_wire_strerror(werr));
        reset_locked(c, -ECONNRESET);
        return;
    }
    c->credits += m.credits;
    if (m.flags & SANSOCK_F_CREDIT_LOW)
        c->peer_low = true;
    if (c->closed && (m.type == SANSOCK_MSG_DATA || m.type == SANSOCK_MSG_RDMA_OFFER)) {
        /* Stream bytes nobody will read: TCP answers data for a closed socket with RST. */
        reset_locked(c, -ECONNRESET);
        return;
    }
    switch (m.type) {
    case SANSOCK_MSG_NEGOTIATE:
        c->peer_neg = m.u.negotiate;
        c->peer_slots = m.u.negotiate.recv_slots;
        /* Our own NEGOTIATE took one of the peer's receives already. */
        c->credits = c->peer_slots - 1;
        c->max_inline = m.u.negotiate.slot_size - SANSOCK_HDR_SIZE;
        if (c->max_inline > c->slot_size - SANSOCK_HDR_SIZE)
            c->max_inline = c->slot_size - SANSOCK_HDR_SIZE;
        c->features = m.u.negotiate.features & own_features();
        c->peer_max_rdma = m.u.negotiate.max_rdma;
        c->negotiated = true;
        if (!emb) {
            repost_locked(c, slot);
            break;
        }
        /* The embryo grows its slots and sends our NEGOTIATE; the peer will count the receive
         * its NEGOTIATE took as one of the NRECV announced, owed back to it as a reposted slot
         * would be. */
        if (setup_locked(c)) {
            reset_locked(c, -ECONNRESET);
            return;
        }
        emb_release_locked(c); /* after our NEGOTIATE went: the peer waits for it */
        c->owed = 1;
        break;
    case SANSOCK_MSG_DATA:
        c->rdma.rx_pos += m.payload_len; /* the stream's position, for write mode's sinks */
        if (c->rd_shut || c->peer_eof) { /* dropped, as TCP drops data after SHUT_RD */
            repost_locked(c, slot);
            break;
        }
        c->ready[(c->rhead + c->rcount) % NREADY] =
            (struct ready){.slot = (uint16_t)slot, .off = 0, .len = m.payload_len};
        c->rcount++;
        break;
    case SANSOCK_MSG_RDMA_OFFER: {
        /* Read at once into a sink (even after SHUT_RD: the DONE frees the peer's buffer). */
        uint32_t sink;
        int err = sansock_rdma_on_offer(&c->rdma, c->ctx, c->ep, &m, &sink);
        if (err) {
            reset_locked(c, err == -EPROTO || err == -EINVAL ? -ECONNRESET : err);
            return;
        }
        c->ready[(c->rhead + c->rcount) % NREADY] = (struct ready){
            .slot = (uint16_t)sink, .rdma = true, .off = 0, .len = (uint32_t)m.u.rdma.total_len};
        c->rcount++;
        repost_locked(c, slot);
        break;
    }
    case SANSOCK_MSG_DONE:
        if (sansock_rdma_on_done(&c->rdma, &m.u.done)) {
            reset_locked(c, -ECONNRESET);
            return;
        }
        repost_locked(c, slot);
        break;
    case SANSOCK_MSG_RDMA_SINK: /* write mode: held until a send uses or declines it */
    case SANSOCK_MSG_SINK_DONE:
        if (m.type == SANSOCK_MSG_RDMA_SINK ? sansock_rdma_on_sink(&c->rdma, &m.u.sink)
                                            : sansock_rdma_on_sink_done(&c->rdma, &m.u.done)) {
            reset_locked(c, -ECONNRESET);
            return;
        }
        repost_locked(c, slot);
        break;
    case SANSOCK_MSG_SHUTDOWN:
        c->peer_eof = true;
        repost_locked(c, slot);
        break;
    default: /* CREDIT (RDMA types never pass the decoder without the feature) */
        repost_locked(c, slot);
        break;
    }
}

static bool complete_locked(struct sansock_conn *c);

/* Takes the completions waiting: true if anything changed. Wakes the other waiters then. */
static bool progress_locked(struct sansock_conn *c)
{
    struct san_wc wc[16];
    bool changed = false;
    int n;
    if (c->phase != PHASE_READY) {
        changed = complete_locked(c);
        if (c->phase != PHASE_READY)
            return changed;
    }
    while (c->ep && (n = san_poll(c->ep, wc, 16)) > 0) {
        changed = true;
        for (int i = 0; i < n; i++) {
            if (wc[i].wr_id & WRITE_TAG) {
                /* A write the NIC refused (the peer's sink lied: its key, its length) resets. */
                sansock_rdma_on_write(&c->rdma, (uint32_t)(wc[i].wr_id & (WRITE_NBUF - 1)));
                if (wc[i].status)
                    reset_locked(c, -ECONNRESET);
            } else if (wc[i].wr_id & RDMA_TAG) {
                /* A read the NIC refused (the peer's descriptor or length lied) resets us. */
                sansock_rdma_on_read(&c->rdma, (uint32_t)(wc[i].wr_id & (RDMA_NBUF - 1)),
                                     wc[i].status);
                if (wc[i].status)
                    reset_locked(c, -ECONNRESET);
                else if (c->rd_shut)
                    drop_ready_locked(c);
            } else if (wc[i].wr_id & SEND_TAG) {
                uint32_t j = (uint32_t)(wc[i].wr_id & (NSEND - 1));
                c->send_free |= 1ull << j;
                c->sends_posted--;
                c->outq -= c->send_bytes[j];
                c->send_bytes[j] = 0;
                if (wc[i].status)
                    reset_locked(c, wc[i].status);
            } else if (wc[i].status == -EPIPE) {
                /* The peer's process went away and its daemon delivered everything it had
                 * written (its endpoint lingers: docs/nic.md): end of file, as TCP's FIN; the
                 * offers that arrived before can still be read. */
                c->peer_gone = true;
                c->peer_eof = true;
            } else if (wc[i].status) {
                /* A flushed receive: the peer closed its endpoint (or ours is in error). After
                 * its SHUTDOWN that is an orderly close. */
                c->peer_gone = true;
                if (!c->peer_eof || wc[i].status != -ECONNRESET)
                    reset_locked(c, -ECONNRESET);
            } else if (wc[i].wr_id < NRECV || wc[i].wr_id == EMB_TAG) {
                on_recv_locked(c, (uint32_t)wc[i].wr_id, wc[i].byte_len);
            }
            if (!c->ep)
                break;
        }
    }
    if (changed) {
        c->seq++;
        control_locked(c);
        linger_locked(c);
        sansock_waiters_wake(c->waiters);
    }
    return changed;
}

/* Waits (lock dropped) until progress or deadline_ns (0: forever): 0, -EINTR, -ETIMEDOUT. With
 * fd >= 0 (a socket call's descriptor), -EAGAIN instead of sleeping if the kernel says fd is
 * non-blocking after all (a flag changed behind the switch's back: fdtab.h). */
static int wait_locked(struct sansock_conn *c, uint64_t deadline_ns, int fd)
{
    uint64_t start = san_now_ns();
    while (san_now_ns() - start < SANSOCK_SPIN_NS) {
        pthread_mutex_unlock(&c->lock);
        sched_yield();
        pthread_mutex_lock(&c->lock);
        if (progress_locked(c) || c->err)
            return 0;
    }
    if (fd >= 0 && sansock_obj_nonblock_reread(&c->obj, fd))
        return -EAGAIN;
    int wfd = sansock_wakefd();
    if (wfd < 0)
        return wfd;
    struct sansock_waiter w = {.fd = wfd};
    struct pollfd p[3] = {{.fd = wfd, .events = POLLIN},
                          {.fd = -1, .events = POLLIN},
                          {.fd = c->phase == PHASE_CONNECTING ? c->timerfd : -1, .events = POLLIN}};
    if (c->ep) { /* armed for this wait only: while we spin the NIC writes no eventfd */
        w.armed = c->ep;
        p[1].fd = san_ep_wait_arm(c->ep);
    }
    sansock_waiter_link(&c->waiters, &w);
    int timeout = -1;
    if (deadline_ns) {
        uint64_t now = san_now_ns();
        timeout = now >= deadline_ns ? 0 : (int)((deadline_ns - now + 999999) / 1000000);
    }
    pthread_mutex_unlock(&c->lock);
    int r = REAL(poll)(p, 3, timeout);
    int e = errno;
    pthread_mutex_lock(&c->lock);
    if (w.armed) /* still open: linked waiters keep the endpoint */
        san_ep_wait_disarm(w.armed);
    sansock_waiter_unlink(&c->waiters, &w);
    sansock_wakefd_drain(wfd);
    progress_locked(c);
    close_ep_locked(c);
    if (r < 0 && e == EINTR)
        return -EINTR;
    if (r == 0)
        return -ETIMEDOUT;
    return 0;
}

static void conn_destroy(struct sansock_obj *o);

/* A connection's object on ep, without buffers. */
static int conn_alloc(struct san_ctx *ctx, struct san_ep *ep, const struct sansock_wire_addr *src,
                      const struct sansock_wire_addr *dst, struct sansock_conn **out)
{
    struct sansock_conn *c = calloc(1, sizeof(*c));
    if (!c)
        return -ENOMEM;
    int err = -pthread_mutex_init(&c->lock, NULL);
    if (err) {
        free(c);
        return err;
    }
    c->obj = (struct sansock_obj){
        .kind = SANSOCK_CONN, .refs = 1, .gen = sansock_fork_gen, .destroy = conn_destroy};
    c->ctx = ctx;
    c->ep = ep;
    c->kfd = c->timerfd = -1;
    c->rdma.share = c->rdma.map = sansock_cfg.map;
    /* Inline data up to the threshold, in pieces of at most SLOT_DATA: a high threshold does not
     * make every connection's slots (64 of them) large. */
    uint32_t data = sansock_cfg.rdma_threshold < SLOT_DATA ? sansock_cfg.rdma_threshold : SLOT_DATA;
    c->slot_size = (SANSOCK_HDR_SIZE + data + 63) & ~63u;
    c->pend_slot = -1;
    c->local = *src;
    c->peer = *dst;
    *out = c;
    return 0;
}

/* Allocates and registers the buffers, posts the receives and sends NEGOTIATE. On failure what
 * was made stays in c (conn_free releases it after the endpoint is closed: posted receives name
 * the memory). */
static int setup_locked(struct sansock_conn *c)
{
    size_t bytes = (size_t)(NRECV + NSEND) * c->slot_size;
    void *mem;
    int err = san_alloc(c->ctx, bytes, 0, &mem);
    if (!err) {
        c->mem = mem;
        err = san_register(c->ctx, mem, bytes, SAN_MEM_READWRITE, &c->mr);
    }
    if (err)
        return err;
    c->lkey = san_mr_lkey(c->mr);
    c->send_free = NSEND == 64 ? ~0ull : (1ull << NSEND) - 1;
    for (uint32_t i = 0; i < NRECV; i++) {
        struct san_sge sge = {.addr = recv_slot(c, i), .length = c->slot_size, .lkey = c->lkey};
        if ((err = san_post_recv(c->ep, i, &sge, 1)))
            return err;
    }
    struct sansock_wire_negotiate n = {.recv_slots = NRECV,
                                       .slot_size = c->slot_size,
                                       .rdma_threshold = sansock_cfg.rdma_threshold,
                                       .features = own_features(),
                                       .max_rdma = sansock_cfg.rdma ? RDMA_CHUNK : 0,
                                       .src = c->local,
                                       .dst = c->peer};
    uint8_t *s = send_slot(c, 0);
    size_t len = sansock_wire_encode_negotiate(s, &n);
    struct san_sge sge = {.addr = s, .length = (uint32_t)len, .lkey = c->lkey};
    if ((err = san_post_send(c->ep, SEND_TAG, &sge, 1, SAN_EP_WR_NODATA)))
        return err;
    c->send_free &= ~1ull;
    c->sends_posted = 1;
    san_ep_set_linger(c->ep, true);
    sansock_finish_prepare();
    return 0;
}

/* An embryo's set-up: the small region and its one receive (EMB_TAG above). */
static int embryo_setup_locked(struct sansock_conn *c)
{
    void *mem;
    int err = san_alloc(c->ctx, EMB_RECV, 0, &mem);
    if (!err) {
        c->emb_mem = mem;
        err = san_register(c->ctx, mem, EMB_RECV, SAN_MEM_READWRITE, &c->emb_mr);
    }
    if (err)
        return err;
    struct san_sge sge = {.addr = c->emb_mem, .length = EMB_RECV, .lkey = san_mr_lkey(c->emb_mr)};
    if ((err = san_post_recv(c->ep, EMB_TAG, &sge, 1)))
        return err;
    sansock_finish_prepare(); /* so that no close pays for the thread */
    return 0;
}

/* Frees an embryo's region once its receive completed (the NEGOTIATE is decoded). */
static void emb_release_locked(struct sansock_conn *c)
{
    if (c->emb_mr)
        san_deregister(c->emb_mr);
    if (c->emb_mem)
        san_free(c->ctx, c->emb_mem);
    c->emb_mr = NULL;
    c->emb_mem = NULL;
}

/* Frees a connection no thread uses any more: its endpoint first (before the memory its
 * receives name goes), then its buffers. */
static void conn_free(struct sansock_conn *c)
{
    if (c->ep)
        san_ep_close(c->ep);
    c->ep = NULL;
    if (c->timerfd >= 0)
        REAL(close)(c->timerfd);
    pthread_mutex_destroy(&c->lock);
    sansock_rdma_free(&c->rdma, c->ctx);
    if (c->mr)
        san_deregister(c->mr);
    if (c->mem)
        san_free(c->ctx, c->mem);
    if (c->emb_mr)
        san_deregister(c->emb_mr);
    if (c->emb_mem)
        san_free(c->ctx, c->emb_mem);
    free(c);
}

int sansock_conn_create(struct san_ctx *ctx, struct san_ep *ep, const struct sansock_wire_addr *src,
                        const struct sansock_wire_addr *dst, struct sansock_conn **out)
{
    struct sansock_conn *c;
    int err = conn_alloc(ctx, ep, src, dst, &c);
    if (err) {
        san_ep_close(ep);
        return err;
    }
    pthread_mutex_lock(&c->lock);
    err = setup_locked(c);
    /* A blocking connect returns once our NEGOTIATE is delivered: the listener's side holds it, so
     * this connection is complete there before any the program connects next, and accept (the
     * oldest complete embryo first: listen.c) takes them in that order, as from TCP's backlog.
     * (A non-blocking connect is writable only once the peer's NEGOTIATE, the answer to ours,
     * came.) Bounded by the connect's time: a listener that never takes it leaves the connection
     * to find out later. */
    uint64_t deadline = san_now_ns() + (uint64_t)sansock_cfg.connect_timeout_ms * 1000000u;
    while (!err && !negotiate_delivered_locked(c) && san_now_ns() < deadline) {
        if (!progress_locked(c))
            wait_locked(c, deadline, -1);
    }
    pthread_mutex_unlock(&c->lock);
    if (err) {
        conn_free(c);
        return err;
    }
    *out = c;
    return 0;
}

int sansock_conn_create_embryo(struct san_ctx *ctx, struct san_ep *ep,
                               const struct sansock_wire_addr *src,
                               const struct sansock_wire_addr *dst, struct sansock_conn **out)
{
    struct sansock_conn *c;
    int err = conn_alloc(ctx, ep, src, dst, &c);
    if (err) {
        san_ep_close(ep);
        return err;
    }
    pthread_mutex_lock(&c->lock);
    err = embryo_setup_locked(c);
    pthread_mutex_unlock(&c->lock);
    if (err) {
        conn_free(c);
        return err;
    }
    *out = c;
    return 0;
}

int sansock_conn_create_connecting(struct san_ctx *ctx, struct san_ep *ep, int fd,
                                   const struct sockaddr *to, socklen_t tolen,
                                   const struct sansock_wire_addr *src,
                                   const struct sansock_wire_addr *dst, struct sansock_conn **out)
{
    struct sansock_conn *c;
    if (tolen > sizeof(c->to)) {
        san_ep_close(ep);
        return -EINVAL;
    }
    int err = conn_alloc(ctx, ep, src, dst, &c);
    if (err) {
        san_ep_close(ep);
        return err;
    }
    struct stat st;
    if (fstat(fd, &st)) {
        conn_free(c);
        return -EBADF;
    }
    c->kdev = st.st_dev;
    c->kino = st.st_ino;
    c->phase = PHASE_CONNECTING;
    c->kfd = fd;
    memcpy(&c->to, to, tolen);
    c->tolen = tolen;
    /* The deadline wakes waiters through a timer of its own: the daemon never times a connect. */
    c->timerfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
    int ms = sansock_cfg.connect_timeout_ms;
    struct itimerspec its = {.it_value = {.tv_sec = ms / 1000, .tv_nsec = ms % 1000 * 1000000L}};
    if (c->timerfd < 0 || timerfd_settime(c->timerfd, 0, &its, NULL)) {
        conn_free(c);
        return -ENOMEM;
    }
    *out = c;
    return 0;
}

/* The SAN connect failed: the descriptor becomes the kernel's, which connects it (non-blocking:
 * it reports EINPROGRESS, POLLOUT and SO_ERROR itself from now on). A kernel connect that fails
 * at once leaves the connection reset with that error, reported once by SO_ERROR. */
static void handover_locked(struct sansock_conn *c)
{
    int fl = REAL(fcntl)(c->kfd, F_GETFL);
    if (fl >= 0 && !(fl & O_NONBLOCK))
        REAL(fcntl)(c->kfd, F_SETFL, fl | O_NONBLOCK);
    int r = REAL(connect)(c->kfd, (struct sockaddr *)&c->to, c->tolen);
    int e = r ? errno : 0;
    if (fl >= 0 && !(fl & O_NONBLOCK))
        REAL(fcntl)(c->kfd, F_SETFL, fl);
    if (!r || e == EINPROGRESS || e == EALREADY || e == EISCONN || e == EINTR) {
        c->phase = PHASE_KERNEL;
        sansock_fd_unmap(&c->obj);
    } else {
        c->phase = PHASE_READY;
        c->err = c->so_error = -e;
    }
    close_ep_locked(c);
}

/* A connecting connection looks at its SAN connect: completed (buffers set up, NEGOTIATE sent),
 * failed or timed out (handed to the kernel), or still under way. True if the phase changed. It
 * is writable once the peer's NEGOTIATE came (sansock_conn_watch), so after ours was delivered. */
static bool complete_locked(struct sansock_conn *c)
{
    if (c->phase != PHASE_CONNECTING)
        return false;
    int err = c->ep ? san_connect_finish(c->ep) : -ECONNREFUSED;
    if (err == -EINPROGRESS) {
        uint64_t exp = 0;
        if (REAL(read)(c->timerfd, &exp, sizeof(exp)) != sizeof(exp) || !exp)
            return false;
        err = -ETIMEDOUT;
    }
    if (!err) {
        err = setup_locked(c);
        if (!err)
            c->phase = PHASE_READY;
    }
    if (err) {
        char a[64];
        if (sansock_logging())
            sansock_log("connect to %s: over TCP (%s)",
                        sansock_log_addr((struct sockaddr *)&c->to, c->tolen, a, sizeof(a)),
                        strerror(-err));
        handover_locked(c);
    }
    close_ep_locked(c); /* the timer, unless a waiter still polls it */
    c->seq++;
    sansock_waiters_wake(c->waiters);
    return true;
}

struct sansock_obj *sansock_conn_obj(struct sansock_conn *c)
{
    return &c->obj;
}

struct sansock_conn *sansock_obj_conn(struct sansock_obj *o)
{
    return o && o->kind == SANSOCK_CONN ? (struct sansock_conn *)o : NULL;
}

/* What close leaves to do before the connection can go: SHUTDOWN, sends, offers not DONE'd.
 * False once nothing is (or nothing can be: reset, the peer gone, an abortive close). */
static bool unfinished_locked(struct sansock_conn *c)
{
    /* Before the peer's NEGOTIATE nothing was written (writes wait for credits) and no
     * SHUTDOWN can be sent: a silent peer (an accept's embryo dropped) is closed at once. */
    return c->ep && c->negotiated && !c->abort_close && !c->err && !c->peer_gone &&
           (!c->shut_sent || c->sends_posted || sansock_rdma_outstanding(&c->rdma));
}

bool sansock_conn_finish_step(struct sansock_conn *c, int *wait_fd)
{
    pthread_mutex_lock(&c->lock);
    progress_locked(c);
    control_locked(c);
    bool more = unfinished_locked(c);
    if (more && wait_fd)
        *wait_fd = san_ep_wait_arm(c->ep); /* until conn_free closes the endpoint */
    pthread_mutex_unlock(&c->lock);
    return !more;
}

void sansock_conn_free(struct sansock_conn *c)
{
    conn_free(c);
}

/* Close of the last descriptor. As TCP's close it never waits: what was written reaches the
 * peer, then the peer reads EOF, finished by the process's finisher thread (finish.c) while the
 * process lives, and by the daemon once it is gone (the endpoint lingers: docs/sock.md). */
static void conn_destroy(struct sansock_obj *o)
{
    struct sansock_conn *c = (struct sansock_conn *)o;
    if (inherited(c)) { /* the parent's: forget it, touch nothing of libsan's */
        free(c);
        return;
    }
    pthread_mutex_lock(&c->lock);
    if (c->phase != PHASE_READY) { /* never connected over the SAN: nothing to deliver */
        pthread_mutex_unlock(&c->lock);
        conn_free(c);
        return;
    }
    /* SO_LINGER {1, 0}, or data the program never read: no SHUTDOWN, the peer is reset, as by
     * TCP's close (RST instead of FIN); data that comes later resets too (on_recv_locked). */
    bool abort_close = c->abort_close || c->rcount;
    c->closed = true;
    if (!abort_close)
        c->wr_shut = true;
    c->seq++;
    pthread_mutex_unlock(&c->lock);
    if (abort_close || sansock_conn_finish_step(c, NULL))
        conn_free(c);
    else
        sansock_finish_add(c);
}

int sansock_conn_negotiation(struct sansock_conn *c)
{
    if (inherited(c))
        return -ECONNRESET;
    pthread_mutex_lock(&c->lock);
    progress_locked(c);
    int r = c->negotiated ? 1 : c->err || c->peer_gone ? -ECONNRESET : 0;
    pthread_mutex_unlock(&c->lock);
    return r;
}

void sansock_conn_peer_addrs(struct sansock_conn *c, struct sansock_wire_addr *src,
                             struct sansock_wire_addr *dst)
{
    pthread_mutex_lock(&c->lock);
    *src = c->peer_neg.src;
    *dst = c->peer_neg.dst;
    pthread_mutex_unlock(&c->lock);
}

void sansock_conn_set_names(struct sansock_conn *c, const struct sansock_wire_addr *local,
                            const struct sansock_wire_addr *peer)
{
    pthread_mutex_lock(&c->lock);
    c->local = *local;
    c->peer = *peer;
    pthread_mutex_unlock(&c->lock);
}

int sansock_conn_names(struct sansock_conn *c, struct sansock_wire_addr *local,
                       struct sansock_wire_addr *peer)
{
    if (inherited(c)) {
        *local = c->local;
        *peer = c->peer;
        return 0;
    }
    pthread_mutex_lock(&c->lock);
    progress_locked(c);
    *local = c->local;
    *peer = c->peer;
    int r = c->phase == PHASE_CONNECTING ? -ENOTCONN : c->phase == PHASE_KERNEL ? 1 : 0;
    pthread_mutex_unlock(&c->lock);
    return r;
}

/* A send or receive that cannot go on now: -EAGAIN for a non-blocking one, else it waits for
 * progress: 0 to look again, or -EINTR. */
static int block_locked(struct sansock_conn *c, int fd, int flags)
{
    if (sansock_obj_nonblocking(&c->obj, fd, flags))
        return -EAGAIN;
    int r = wait_locked(c, 0, fd);
    return r == -EINTR || r == -EAGAIN ? r : 0;
}

/* The call fails with the connection's reset: reported, so SO_ERROR no longer holds it. */
static ssize_t reported_locked(struct sansock_conn *c, ssize_t r)
{
    if (r == -ECONNRESET)
        c->so_error = 0;
    return r;
}

static size_t iov_total(const struct iovec *iov, int cnt)
{
    size_t len = 0;
    for (int i = 0; i < cnt; i++)
        len += iov[i].iov_len; /* the caller checked that this cannot overflow */
    return len;
}

ssize_t sansock_conn_send(struct sansock_conn *c, int fd, const void *buf, size_t len, int flags)
{
    struct iovec v = {.iov_base = (void *)buf, .iov_len = len};
    return sansock_conn_sendv(c, fd, &v, 1, flags);
}

ssize_t sansock_conn_sendv(struct sansock_conn *c, int fd, const struct iovec *iov, int iovcnt,
                           int flags)
{
    if (inherited(c))
        return -ECONNRESET;
    if (flags & MSG_OOB) /* no urgent data on the SAN: refused rather than sent inline */
        return -EOPNOTSUPP;
    struct cursor u = {.iov = iov, .cnt = iovcnt};
    size_t len = iov_total(iov, iovcnt), sent = 0;
    ssize_t ret = 0;
    pthread_mutex_lock(&c->lock);
    while (sent < len) {
        progress_locked(c);
        if (c->phase == PHASE_KERNEL) { /* its connect went to the kernel meanwhile */
            ret = -EAGAIN;
            break;
        }
        if (c->wr_shut || (c->peer_gone && c->peer_eof)) {
            ret = -EPIPE;
            break;
        }
        if (c->err || c->peer_gone) {
            ret = c->err ? -ECONNRESET : -EPIPE;
            break;
        }
        /* Write mode: the peer's receive waits on a sink at our position: every byte of this
         * send goes into it while it has room (the peer's buffer, whatever the size). A blocking
         * send waits for a staging buffer; a non-blocking one answers the sink and goes on. */
        if (sansock_rdma_sink_usable(&c->rdma) && c->negotiated) {
            uint32_t idx;
            uint8_t *stage;
            int e = sansock_rdma_write_buf(&c->rdma, c->ctx, &idx, &stage);
            if (!e) {
                size_t n = sansock_rdma_sink_room(&c->rdma, len - sent);
                struct cursor before = u;
                cursor_copy(&u, stage, n, true);
                if (sansock_rdma_write_post(&c->rdma, c->ep, idx, (uint32_t)n)) {
                    u = before;
                    reset_locked(c, -ECONNRESET);
                    ret = -ECONNRESET;
                    break;
                }
                sent += n;
                continue;
            }
            if (e == -EAGAIN && !sansock_obj_nonblocking(&c->obj, fd, flags)) {
                if ((ret = block_locked(c, fd, flags)))
                    break;
                continue;
            }
            sink_answer_locked(c); /* what was written so far; the rest goes otherwise */
            if (e == -ENOBUFS) {
                ret = e;
                break;
            }
        }
        /* A sink held and not usable (full, or at another position) is answered before any other
         * stream byte goes: the peer places the sink's bytes where SINK_DONE arrives. */
        if (c->rdma.psink_held) {
            sink_answer_locked(c);
            if (c->rdma.psink_held) {
                if ((ret = block_locked(c, fd, flags)))
                    break;
                continue;
            }
        }
        /* A write beyond the threshold by RDMA when the peer reads offers (but for a tail that
         * fits one message): a blocking send waits for a staging buffer, a non-blocking one goes
         * inline meanwhile (poll said writable). */
        uint32_t tail =
            c->max_inline < sansock_cfg.rdma_threshold ? c->max_inline : sansock_cfg.rdma_threshold;
        bool by_rdma = (c->features & SANSOCK_FEAT_RDMA_READ) && c->peer_max_rdma &&
                       len > sansock_cfg.rdma_threshold && len - sent > tail;
        if (by_rdma && c->pend_slot >= 0) /* an offer comes after the pending bytes */
            flush_pending_locked(c, true);
        if (by_rdma && c->negotiated && c->credits >= 2 && c->send_free && c->pend_slot < 0 &&
            sansock_rdma_can_offer(&c->rdma)) {
            uint8_t *stage;
            size_t n = sansock_rdma_room(&c->rdma, len - sent, c->peer_max_rdma);
            if ((ret = sansock_rdma_stage_buf(&c->rdma, c->ctx, &stage)))
                break;
            cursor_copy(&u, stage, n, true);
            struct sansock_wire_rdma o;
            uint8_t msg[SANSOCK_HDR_SIZE + sizeof(o)];
            sansock_rdma_staged(&c->rdma, (uint32_t)n, &o);
            sansock_wire_encode_rdma(msg, SANSOCK_MSG_RDMA_OFFER, 0, 0, &o, 0);
            if (send_ctl_locked(c, SANSOCK_MSG_RDMA_OFFER, msg + SANSOCK_HDR_SIZE, sizeof(o))) {
                reset_locked(c, -ECONNRESET); /* the stream would have a hole */
                ret = -ECONNRESET;
                break;
            }
            sent += n;
            continue;
        }
        if (by_rdma && c->negotiated && !sansock_obj_nonblocking(&c->obj, fd, flags)) {
            if ((ret = block_locked(c, fd, flags)))
                break;
            continue;
        }
        /* Inline: into the pending slot (a fresh one if none), posted at once if a credit for
         * data is there, else left for the credit to come back (the top of this file). */
        /* Without SANSOCK_COALESCE a write never returns with bytes left unposted: posted
         * sends are delivered even if the process dies by _exit or a signal right after (the
         * daemon's lingering endpoint), bytes in the pending slot would be lost. */
        bool post_now = !sansock_cfg.coalesce;
        bool room =
            !post_now || (c->credits >= 2 && !c->rdma.psink_held && !c->err && !c->peer_gone);
        if (c->negotiated && room && (c->pend_slot >= 0 || c->send_free)) {
            if (c->pend_slot < 0) {
                c->pend_slot = __builtin_ctzll(c->send_free);
                c->send_free &= ~(1ull << c->pend_slot);
                c->pend_len = 0;
            }
            size_t n = c->max_inline - c->pend_len;
            if (n > len - sent)
                n = len - sent;
            if (n) {
                uint8_t *p = send_slot(c, (uint32_t)c->pend_slot) + SANSOCK_HDR_SIZE;
                cursor_copy(&u, p + c->pend_len, n, true);
                c->pend_len += (uint32_t)n;
                c->rdma.tx_pos += n; /* the stream's position counts them: no sink fits before */
                sent += n;
            }
            int err = flush_pending_locked(c, post_now || c->pend_len == c->max_inline);
            if (err && err != -EAGAIN) {
                ret = -ECONNRESET;
                break;
            }
            if (n || !err)
                continue;
        }
        if ((ret = block_locked(c, fd, flags)))
            break;
    }
    /* What this send wrote into a sink reaches the peer's program with SINK_DONE, now. */
    if (c->rdma.psink_held && c->rdma.psink_filled && !c->err)
        sink_answer_locked(c);
    if (!sent)
        ret = reported_locked(c, ret);
    pthread_mutex_unlock(&c->lock);
    return sent ? (ssize_t)sent : ret;
}

/* Copies up to len ready bytes to dst (consumes them unless peek): the bytes copied. */
static size_t take_locked(struct sansock_conn *c, struct cursor *dst, size_t len, bool peek)
{
    size_t got = 0;
    uint32_t i = 0;
    while (got < len && i < c->rcount) {
        struct ready *r = &c->ready[(c->rhead + i) % NREADY];
        if (r->rdma && !sansock_rdma_fetched(&c->rdma, r->slot))
            break; /* its bytes are still on the way: the stream stops here for now */
        size_t n = r->len - r->off;
        if (n > len - got)
            n = len - got;
        uint8_t *src = r->rdma ? (uint8_t *)sansock_rdma_sink_data(&c->rdma, r->slot)
                               : recv_slot(c, r->slot) + SANSOCK_HDR_SIZE;
        cursor_copy(dst, src + r->off, n, false);
        got += n;
        if (peek) {
            i++;
            continue;
        }
        r->off += (uint32_t)n;
        if (r->off == r->len) {
            struct ready done = *r;
            c->rhead = (c->rhead + 1) % NREADY;
            c->rcount--;
            if (done.rdma)
                sansock_rdma_consumed(&c->rdma, done.slot);
            else if (repost_locked(c, done.slot))
                break;
        }
    }
    if (got && !peek) {
        control_locked(c);
        linger_locked(c);
    }
    return got;
}

static void cursor_advance(struct cursor *u, size_t len)
{
    while (len) {
        cursor_skip_empty(u);
        size_t n = u->iov->iov_len - u->off;
        n = n < len ? n : len;
        u->off += n;
        len -= n;
    }
}

/* Write mode: a blocking receive with nothing to read advertises the program's buffer (the rest
 * of the cursor's current piece, when more than the threshold) as a sink. true if it did. */
static bool sink_offer_locked(struct sansock_conn *c, struct cursor *u, size_t left, int fd,
                              int flags)
{
    if (!(c->features & SANSOCK_FEAT_RDMA_WRITE) || u->discard || (flags & MSG_PEEK) ||
        c->rdma.sink_state != SINK_IDLE || c->rcount || c->peer_eof || c->rd_shut || c->err ||
        c->peer_gone || !c->negotiated || c->credits < 2 || !c->send_free ||
        sansock_obj_nonblocking(&c->obj, fd, flags))
        return false;
    cursor_skip_empty(u);
    size_t room = u->iov->iov_len - u->off;
    room = room < left ? room : left;
    if (room <= sansock_cfg.rdma_threshold)
        return false;
    struct sansock_wire_sink k;
    bool staged = sansock_cfg.rdma_write != SANSOCK_SINK_PROGRAM;
    if (sansock_rdma_sink_open(&c->rdma, c->ctx, (uint8_t *)u->iov->iov_base + u->off, room, staged,
                               &k))
        return false; /* no registration: the data comes as offers or inline */
    uint8_t msg[SANSOCK_HDR_SIZE + sizeof(k)];
    sansock_wire_encode_sink(msg, 0, 0, &k);
    if (send_ctl_locked(c, SANSOCK_MSG_RDMA_SINK, msg + SANSOCK_HDR_SIZE, sizeof(k))) {
        sansock_rdma_sink_abandon(&c->rdma); /* never seen by the peer: nothing is due */
        c->rdma.sink_state = SINK_IDLE;
        c->rdma.sinks_out--;
        return false;
    }
    return true;
}

ssize_t sansock_conn_recv(struct sansock_conn *c, int fd, void *buf, size_t len, int flags)
{
    struct iovec v = {.iov_base = buf, .iov_len = len};
    return sansock_conn_recvv(c, fd, &v, 1, flags);
}

ssize_t sansock_conn_recvv(struct sansock_conn *c, int fd, const struct iovec *iov, int iovcnt,
                           int flags)
{
    if (inherited(c))
        return -ECONNRESET;
    /* As TCP's with no urgent data and an empty error queue (no timestamps, no ICMP). */
    if (flags & MSG_ERRQUEUE)
        return -EAGAIN;
    if (flags & MSG_OOB)
        return -EINVAL;
    size_t len = iov_total(iov, iovcnt);
    if (!len)
        return 0;
    bool discard = flags & MSG_TRUNC;
    struct cursor u = {.iov = iov, .cnt = iovcnt, .discard = discard};
    size_t got = 0;
    ssize_t ret = 0;
    bool sink = false; /* this call's sink (the program's buffer) is out */
    pthread_mutex_lock(&c->lock);
    for (;;) {
        progress_locked(c);
        if (c->phase == PHASE_KERNEL) {
            ret = -EAGAIN;
            break;
        }
        if (sink && (c->rdma.sink_state == SINK_FILLED || c->rdma.sink_state == SINK_DECLINED)) {
            const uint8_t *staged;
            size_t n = sansock_rdma_sink_take(&c->rdma, &staged);
            if (staged)
                cursor_copy(&u, (uint8_t *)staged, n, false);
            else
                cursor_advance(&u, n);
            got += n;
            sink = false;
        } else if (sink && (c->rdma.rx_pos != c->rdma.ksink_pos || c->rd_shut || c->peer_eof ||
                            c->err || c->peer_gone)) {
            /* Other bytes came first (the peer declines the sink), or none will come: the buffer
             * is the program's again before anything is copied into it. */
            sansock_rdma_sink_abandon(&c->rdma);
            sink = false;
        }
        if (c->rd_shut)
            break;
        if (flags & MSG_PEEK) { /* looks at what is there from the start, each time */
            struct cursor start = {.iov = iov, .cnt = iovcnt, .discard = discard};
            got = take_locked(c, &start, len, true);
        } else {
            got += take_locked(c, &u, len - got, false);
        }
        if (got == len || (got && !(flags & MSG_WAITALL)))
            break;
        /* A repost that found the peer gone (its SHUTDOWN may be queued), or anything else that
         * came since the top: looked at from the top again, the sink's answer included. A wait
         * below sees only what comes after it starts, so a SINK_DONE taken here and not looked
         * at would leave this receive waiting for good. */
        if (progress_locked(c))
            continue;
        if (readable_locked(c) && !(flags & MSG_PEEK))
            continue;
        if (c->peer_eof && !c->rcount) /* EOF after the last transfer, read or not */
            break;
        /* A gone peer that said EOF (SHUTDOWN, or its daemon's): transfers still being read
         * come first. */
        if (c->err || (c->peer_gone && !c->peer_eof)) {
            ret = -ECONNRESET;
            break;
        }
        if (!sink && !(flags & MSG_PEEK))
            sink = sink_offer_locked(c, &u, len - got, fd, flags);
        if (sink) {
            /* The peer may write into the buffer until it answers: no return before (a signal
             * is handled, the receive goes on, as with SA_RESTART). */
            wait_locked(c, 0, -1);
            continue;
        }
        if ((ret = block_locked(c, fd, flags)))
            break;
    }
    if (!got)
        ret = reported_locked(c, ret);
    pthread_mutex_unlock(&c->lock);
    return got ? (ssize_t)got : ret;
}

int sansock_conn_shutdown(struct sansock_conn *c, int how)
{
    if (how != SHUT_RD && how != SHUT_WR && how != SHUT_RDWR)
        return -EINVAL;
    if (inherited(c))
        return -ENOTCONN;
    pthread_mutex_lock(&c->lock);
    if (how != SHUT_WR) {
        c->rd_shut = true;
        drop_ready_locked(c);
    }
    if (how != SHUT_RD)
        c->wr_shut = true;
    progress_locked(c);
    control_locked(c);
    c->seq++;
    sansock_waiters_wake(c->waiters);
    pthread_mutex_unlock(&c->lock);
    return 0;
}

short sansock_conn_watch(struct sansock_conn *c, short events, struct sansock_waiter *w,
                         bool always, struct pollfd wait[2], unsigned *seq)
{
    if (seq)
        *seq = 0;
    wait[0] = wait[1] = (struct pollfd){.fd = -1, .events = POLLIN};
    if (inherited(c))
        return POLLERR | POLLHUP;
    short ev = 0;
    pthread_mutex_lock(&c->lock);
    progress_locked(c);
    if (c->phase != PHASE_READY) {
        if (seq)
            *seq = c->seq;
        if (c->phase == PHASE_CONNECTING) { /* nothing to report until it completes */
            if (w) {
                sansock_waiter_link(&c->waiters, w);
                w->armed = c->ep;
                wait[0].fd = c->ep ? san_ep_wait_arm(c->ep) : -1;
                wait[1].fd = c->timerfd;
            }
            pthread_mutex_unlock(&c->lock);
            return 0;
        }
        /* Handed to the kernel: its descriptor says (a look, no wait, under the lock). */
        struct pollfd p = {.fd = c->kfd, .events = events};
        if (REAL(poll)(&p, 1, 0) < 0)
            p.revents = 0;
        ev = (short)(p.revents & (events | POLLERR | POLLHUP));
        if ((!ev || always) && w) {
            sansock_waiter_link(&c->waiters, w);
            w->armed = NULL;
            wait[0] = (struct pollfd){.fd = c->kfd, .events = events};
        }
        pthread_mutex_unlock(&c->lock);
        return ev;
    }
    if (readable_locked(c) || (c->peer_eof && !c->rcount) || c->rd_shut || c->err || c->peer_gone)
        ev |= POLLIN | POLLRDNORM;
    if (c->peer_eof)
        ev |= POLLRDHUP;
    /* Writable: a write would take bytes now (posted, or into the pending slot). */
    /* Without coalescing a write takes bytes only with a credit for data, or into a sink the
     * peer holds out (write mode): else POLLOUT would send the program into EAGAIN forever. */
    bool room = c->pend_slot >= 0 ? c->pend_len < c->max_inline || c->credits >= 2
                                  : c->send_free && (sansock_cfg.coalesce || c->credits >= 2 ||
                                                     c->rdma.psink_held);
    if ((c->negotiated && room && !c->wr_shut) || c->err || c->peer_gone || c->wr_shut)
        ev |= POLLOUT | POLLWRNORM;
    if (c->err)
        ev |= POLLERR;
    if (c->err || c->peer_gone || (c->peer_eof && c->wr_shut))
        ev |= POLLHUP;
    ev &= (short)(events | POLLERR | POLLHUP);
    if ((!ev || always) && w) {
        sansock_waiter_link(&c->waiters, w);
        w->armed = c->ep;
        wait[0].fd = c->ep ? san_ep_wait_arm(c->ep) : -1;
    }
    if (seq)
        *seq = c->seq;
    pthread_mutex_unlock(&c->lock);
    return ev;
}

short sansock_conn_events(struct sansock_conn *c, short events, struct sansock_waiter *w,
                          struct pollfd wait[2])
{
    return sansock_conn_watch(c, events, w, false, wait, NULL);
}

bool sansock_conn_handed_to(struct sansock_conn *c, int fd)
{
    struct stat st;
    return sansock_conn_handed_over(c) && !fstat(fd, &st) && st.st_dev == c->kdev &&
           st.st_ino == c->kino;
}

bool sansock_conn_handed_over(struct sansock_conn *c)
{
    if (inherited(c))
        return false;
    pthread_mutex_lock(&c->lock);
    bool yes = c->phase == PHASE_KERNEL;
    pthread_mutex_unlock(&c->lock);
    return yes;
}

int sansock_conn_connect_again(struct sansock_conn *c)
{
    if (inherited(c))
        return -EISCONN;
    pthread_mutex_lock(&c->lock);
    progress_locked(c);
    int r;
    if (c->phase == PHASE_CONNECTING) {
        r = -EALREADY;
    } else if (c->phase == PHASE_KERNEL) {
        r = 1; /* the kernel's to answer */
    } else if (c->kfd >= 0 && !c->connect_told) {
        /* Linux: the first connect after a non-blocking one completed says how it ended. */
        c->connect_told = true;
        r = !c->err ? 0 : c->so_error ? c->so_error : -ECONNABORTED;
        c->so_error = 0;
    } else {
        r = -EISCONN;
    }
    pthread_mutex_unlock(&c->lock);
    return r;
}

void sansock_conn_unwait(struct sansock_conn *c, struct sansock_waiter *w)
{
    pthread_mutex_lock(&c->lock);
    if (w->armed)
        san_ep_wait_disarm(w->armed);
    w->armed = NULL;
    sansock_waiter_unlink(&c->waiters, w);
    close_ep_locked(c);
    pthread_mutex_unlock(&c->lock);
}

void sansock_conn_state(struct sansock_conn *c, struct sansock_conn_state *st)
{
    *st = (struct sansock_conn_state){.rcvbuf = NRECV * (c->slot_size - SANSOCK_HDR_SIZE)};
    if (inherited(c)) {
        st->err = -ECONNRESET;
        return;
    }
    pthread_mutex_lock(&c->lock);
    progress_locked(c);
    for (uint32_t i = 0; i < c->rcount; i++) { /* readable now: up to a transfer still read */
        const struct ready *r = &c->ready[(c->rhead + i) % NREADY];
        if (r->rdma && !sansock_rdma_fetched(&c->rdma, r->slot))
            break;
        st->inq += r->len - r->off;
    }
    /* A reset drops what was in flight, as TCP's; an offer is in flight until its DONE. */
    st->outq = c->err ? 0 : c->outq + c->pend_len + sansock_rdma_outstanding_bytes(&c->rdma);
    st->unsent = c->err ? 0 : c->pend_len;
    st->mss = c->negotiated ? c->max_inline : c->slot_size - SANSOCK_HDR_SIZE;
    /* In flight at most: a message per send slot, and per receive the peer posted. */
    st->sndbuf = (c->negotiated && c->peer_slots < NSEND ? c->peer_slots : NSEND) * st->mss;
    st->negotiated = c->negotiated;
    st->peer_eof = c->peer_eof;
    st->wr_shut = c->wr_shut;
    st->err = c->err ? c->err : c->peer_gone && !c->peer_eof ? -ECONNRESET : 0;
    pthread_mutex_unlock(&c->lock);
}

int sansock_conn_take_error(struct sansock_conn *c)
{
    if (inherited(c)) /* dead for use in this process, as its reads and writes say */
        return -ECONNRESET;
    pthread_mutex_lock(&c->lock);
    progress_locked(c);
    int e = c->so_error, kfd = c->phase == PHASE_KERNEL ? c->kfd : -1;
    c->so_error = 0;
    pthread_mutex_unlock(&c->lock);
    if (kfd >= 0) { /* handed to the kernel by this look: its connect's error */
        socklen_t l = sizeof(e);
        if (REAL(getsockopt)(kfd, SOL_SOCKET, SO_ERROR, &e, &l))
            e = errno;
        return -e;
    }
    return e;
}

void sansock_conn_set_abort(struct sansock_conn *c, bool abort_close)
{
    if (inherited(c))
        return;
    pthread_mutex_lock(&c->lock);
    c->abort_close = abort_close;
    linger_locked(c);
    pthread_mutex_unlock(&c->lock);
}

void sansock_conn_exit(struct sansock_conn *c, uint64_t deadline_ns)
{
    if (inherited(c))
        return;
    pthread_mutex_lock(&c->lock);
    /* As close's wait, without closing anything (other threads may still use the connection):
     * the pending bytes and SHUTDOWN posted and delivered, or the deadline. */
    c->exiting = true;
    while (c->phase == PHASE_READY && unfinished_locked(c)) {
        control_locked(c);
        if (!unfinished_locked(c) || wait_locked(c, deadline_ns, -1) == -ETIMEDOUT)
            break;
    }
    pthread_mutex_unlock(&c->lock);
}
