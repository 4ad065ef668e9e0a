/* Endpoints across hosts: a connection whose other end is an endpoint of another host's daemon,
 * reached over a link (nic.h's transport, link/link.h). This daemon is the NIC of its own
 * endpoint in every role: as initiator it checks the local pieces of its client's requests and
 * ships their bytes; as target it checks every access of the peer to its client's memory, rkey,
 * owner, access and range, as engine.c does, before a byte moves, and tells the initiator the
 * outcome (SAN_XMSG_DONE), never relying on the transport for any of it.
 *
 * One thread per connection (as engine.c), which owns the connection's state: it reads its
 * endpoint's queues, executes one request of each direction at a time (a send, write or read of
 * its own; a send, write or read of the peer), and processes the messages the transport delivered
 * into its inbox. Every message of the peer is checked against the connection's state: a message
 * out of order, beyond a credit or of an operation not in flight is a protocol violation and
 * resets the connection (the peer is told with CLOSE); it never costs anything else. Uses of
 * registrations are taken and dropped within one message (a registration deregistered between two
 * chunks of a transfer fails the rest of it), so nothing is held across a wait on the network.
 *
 * A connector of another host waits in a listener's backlog as a stub endpoint (no region, not
 * listed) with its connection in the table; accept turns it into a connection with a thread.
 *
 * Locking: nic->xlock covers the table of connections (and a stub's fate); a connection's lock its
 * inbox; its run lock is held by its thread during a pass and by the loop when it closes the
 * endpoint, so the endpoint's registrations are never looked at after its owner let go. The
 * transport is called under nic->xport_lock (read), never with xlock or a connection's lock
 * held; the transport delivers with its own lock held and takes xlock (nic.h's order). */
#include "nic/nic.h"

#include <san/client.h>

#include <errno.h>
#include <linux/futex.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "common/clock.h"
#include "common/spin.h"

#ifndef SYS_futex_waitv
#define SYS_futex_waitv 449
#endif
#define FUTEX2_U32 0x02

#define INBOX_MAX (2 * SAN_XMSG_WINDOW + 2 * SAN_EPQ_RQ) /* messages a peer may have waiting */

enum phase { X_PENDING, X_CONNECTING, X_RUNNING };

struct xin {
    struct xin *next;
    struct san_xmsg m;
    _Alignas(8) uint8_t data[];
};

struct san_xconn {
    struct san_nic *nic;
    struct san_list node; /* nic->xconns */
    uint64_t id;
    _Atomic uint64_t peer_conn; /* the peer's number for it; 0 until accepted */
    unsigned link;
    uint64_t session, host;
    struct san_nic_ep *ep;   /* NULL while a stub */
    struct san_nic_ep *stub; /* the backlog entry while pending */
    enum phase phase;        /* pending: under xlock; after: the thread's */
    bool acceptor;
    bool peer_gone; /* pending: the connector gave up (under xlock) */
    pthread_mutex_t lock, run;
    struct xin *in_head, **in_tail;
    unsigned in_count;
    bool overflow;
    _Atomic uint32_t wake, sleeping;
    _Atomic bool reset;
    uint8_t *buf; /* SAN_XMSG_CHUNK */
    /* the thread's */
    bool dead; /* reset: nothing more goes to the peer */
    bool peer_closed;
    int32_t peer_err; /* the peer endpoint's error (STATE) */
    bool state_sent;
    uint32_t credits;      /* data messages we may still send */
    uint32_t to_return;    /* the peer's data messages taken, not yet credited back */
    uint32_t recv_credits; /* the peer's posted receives we may still consume */
    uint32_t rq_adv;       /* our receive queue advertised up to here */
    uint32_t seen[4];      /* sq_tail, rq_tail, cq_head, wake when the last pass found nothing */
    /* our request in flight */
    bool busy;
    struct san_epq_wqe w;
    uint64_t out_seq, total, sent, got;
    uint64_t dropped_seq; /* an RDMA read given up here: its late data is dropped */
    /* the peer's request in progress here */
    uint64_t in_seq;
    uint32_t in_op;
    bool in_failed;
    uint64_t in_total, in_got, in_va, in_host;
    uint32_t in_rkey;
    struct san_epq_wqe in_recv;
    /* the peer's RDMA read being answered */
    bool rd_busy;
    uint64_t rd_seq, rd_va, rd_total, rd_sent;
    uint32_t rd_rkey;
    int32_t rd_status; /* refused: the answer is this status alone */
};

static void futex_wake(_Atomic uint32_t *word)
{
    syscall(SYS_futex, word, FUTEX_WAKE, INT32_MAX, NULL, NULL, 0);
}

static void wake(struct san_xconn *xc)
{
    atomic_fetch_add(&xc->wake, 1);
    if (atomic_load(&xc->sleeping))
        futex_wake(&xc->wake);
}

static int xsend(struct san_xconn *xc, struct san_xmsg *m, const void *payload, size_t len)
{
    struct san_nic *nic = xc->nic;
    int err = -ECONNRESET;
    if (xc->dead)
        return err;
    m->from = xc->id;
    m->len = (uint32_t)len;
    pthread_rwlock_rdlock(&nic->xport_lock);
    if (nic->xport.send)
        err = nic->xport.send(nic->xport.ctx, xc->link, xc->session, m, payload, len);
    pthread_rwlock_unlock(&nic->xport_lock);
    return err;
}

static struct san_xconn *xconn_new(struct san_nic *nic, unsigned link, uint64_t session,
                                   uint64_t host)
{
    struct san_xconn *xc = calloc(1, sizeof(*xc));
    if (!xc)
        return NULL;
    xc->buf = malloc(SAN_XMSG_CHUNK);
    if (!xc->buf || pthread_mutex_init(&xc->lock, NULL)) {
        free(xc->buf);
        free(xc);
        return NULL;
    }
    if (pthread_mutex_init(&xc->run, NULL)) {
        pthread_mutex_destroy(&xc->lock);
        free(xc->buf);
        free(xc);
        return NULL;
    }
    xc->nic = nic;
    xc->link = link;
    xc->session = session;
    xc->host = host;
    xc->in_tail = &xc->in_head;
    xc->credits = SAN_XMSG_WINDOW;
    return xc;
}

static void xconn_free(struct san_xconn *xc)
{
    while (xc->in_head) {
        struct xin *i = xc->in_head;
        xc->in_head = i->next;
        free(i);
    }
    pthread_mutex_destroy(&xc->run);
    pthread_mutex_destroy(&xc->lock);
    free(xc->stub);
    free(xc->buf);
    free(xc);
}

/* Into the table with a new number; under xlock. */
static void table_add_locked(struct san_nic *nic, struct san_xconn *xc)
{
    xc->id = ++nic->last_xconn;
    san_list_append(&nic->xconns, &xc->node);
}

/* --- the peer's misbehaviour, and the end of the session ------------------------------------ */

/* Everything outstanding and later completes with -ECONNRESET; the peer hears nothing more. */
static void fail_all(struct san_xconn *xc)
{
    struct san_nic_ep *ep = xc->ep;
    xc->dead = true;
    xc->rd_busy = false;
    if (xc->phase == X_CONNECTING) {
        san_nic_set_state(ep, SAN_EPQ_REFUSED, -ECONNREFUSED);
        return;
    }
    if (xc->busy && san_nic_cq_room(ep)) {
        san_nic_complete(ep, xc->w.wr_id, -ECONNRESET, xc->w.opcode, 0);
        xc->busy = false;
    }
    san_nic_enter_error(ep, -ECONNRESET);
}

/* The peer broke the protocol of this connection: it ends here, and the peer is told. */
static void violation(struct san_xconn *xc)
{
    if (xc->dead)
        return;
    struct san_xmsg m = {
        .op = SAN_XMSG_CLOSE, .conn = atomic_load(&xc->peer_conn), .status = -EPROTO};
    xsend(xc, &m, NULL, 0);
    fail_all(xc);
}

static void send_or_fail(struct san_xconn *xc, struct san_xmsg *m, const void *payload, size_t len)
{
    m->conn = atomic_load(&xc->peer_conn);
    if (xsend(xc, m, payload, len) && !xc->dead)
        fail_all(xc); /* the session is over, or the transport is overwhelmed */
}

static void done(struct san_xconn *xc, uint64_t seq, int32_t status, uint64_t total)
{
    struct san_xmsg m = {.op = SAN_XMSG_DONE, .seq = seq, .status = status, .total = total};
    send_or_fail(xc, &m, NULL, 0);
}

/* --- the target: the peer's requests on this endpoint's memory ------------------------------ */

enum { TAKEN, STALL };

/* A new operation of the peer: it must be the next one. */
static bool next_op(struct san_xconn *xc, const struct san_xmsg *m)
{
    if (m->seq != xc->in_seq + 1)
        return false;
    xc->in_seq = m->seq;
    xc->in_op = m->op;
    xc->in_failed = false;
    xc->in_total = m->total;
    xc->in_got = 0;
    return true;
}

/* A later message of the operation in progress: in order, inside it. */
static bool same_op(struct san_xconn *xc, const struct san_xmsg *m)
{
    return m->seq == xc->in_seq && m->op == xc->in_op && m->total == xc->in_total &&
           (xc->in_failed || (m->offset == xc->in_got && m->len <= m->total - m->offset));
}

static int on_send(struct san_xconn *xc, const struct san_xmsg *m, const void *data)
{
    struct san_nic_ep *ep = xc->ep;
    if (!san_nic_cq_room(ep))
        return STALL; /* a send waits for the receiver's completion queue, as on one host */
    xc->to_return++;
    if (m->offset == 0 && m->seq == xc->in_seq + 1) {
        next_op(xc, m);
        if (m->status < 0) {
            /* The sender's own pieces failed: the receive it would have filled is reset. */
            xc->in_failed = true;
            if (san_nic_posted(&ep->q->rq_tail, ep->rq_head, SAN_EPQ_RQ) > 0 &&
                ep->state != SAN_EPQ_ERROR) {
                struct san_epq_wqe r = san_epq_rq(ep->q)[ep->rq_head & (SAN_EPQ_RQ - 1)];
                ep->rq_head++;
                atomic_store_explicit(&ep->q->rq_head, ep->rq_head, memory_order_release);
                san_nic_complete(ep, r.wr_id, -ECONNRESET, SAN_EPQ_RECV, 0);
            }
            san_nic_enter_error(ep, -ECONNRESET);
            return TAKEN;
        }
        if (ep->state == SAN_EPQ_ERROR || atomic_load(&ep->closing)) {
            xc->in_failed = true;
            done(xc, m->seq, -ECONNRESET, 0);
            return TAKEN;
        }
        int n = san_nic_posted(&ep->q->rq_tail, ep->rq_head, SAN_EPQ_RQ);
        if (n < 0) {
            san_nic_enter_error(ep, -EFAULT); /* our client's queue is garbage */
            xc->in_failed = true;
            done(xc, m->seq, -ECONNRESET, 0);
            return TAKEN;
        }
        if (!n) {
            violation(xc); /* a send without a receive we advertised */
            return TAKEN;
        }
        xc->in_recv = san_epq_rq(ep->q)[ep->rq_head & (SAN_EPQ_RQ - 1)];
        ep->rq_head++;
        atomic_store_explicit(&ep->q->rq_head, ep->rq_head, memory_order_release);
        struct san_nic_piece dst[SAN_EPQ_SGE];
        uint64_t room;
        if (!san_nic_valid_wqe(&xc->in_recv, true) ||
            san_nic_local_pieces(ep, &xc->in_recv, true, dst, &room)) {
            san_nic_complete(ep, xc->in_recv.wr_id, -EFAULT, SAN_EPQ_RECV, 0);
            san_nic_enter_error(ep, -EFAULT);
            xc->in_failed = true;
            done(xc, m->seq, -EACCES, 0);
            return TAKEN;
        }
        san_nic_put_pieces(xc->nic, dst, xc->in_recv.nsge);
        if (m->total > room || m->total > UINT32_MAX) {
            san_nic_complete(ep, xc->in_recv.wr_id, -EMSGSIZE, SAN_EPQ_RECV, 0);
            san_nic_enter_error(ep, -EMSGSIZE);
            xc->in_failed = true;
            done(xc, m->seq, -EMSGSIZE, 0);
            return TAKEN;
        }
    } else if (!same_op(xc, m) || xc->in_op != SAN_XMSG_SEND) {
        violation(xc);
        return TAKEN;
    }
    if (xc->in_failed)
        return TAKEN;
    if (m->status < 0) { /* the sender failed part way */
        xc->in_failed = true;
        san_nic_complete(ep, xc->in_recv.wr_id, -ECONNRESET, SAN_EPQ_RECV, 0);
        san_nic_enter_error(ep, -ECONNRESET);
        return TAKEN;
    }
    if (m->offset != xc->in_got || m->len > xc->in_total - m->offset) {
        violation(xc);
        return TAKEN;
    }
    struct san_nic_piece dst[SAN_EPQ_SGE];
    uint64_t room;
    int err = san_nic_local_pieces(ep, &xc->in_recv, true, dst, &room);
    if (!err) {
        err = san_nic_pieces_io(xc->nic, dst, xc->in_recv.nsge, m->offset, (void *)data, m->len,
                                true);
        san_nic_put_pieces(xc->nic, dst, xc->in_recv.nsge);
    }
    if (err) {
        san_nic_complete(ep, xc->in_recv.wr_id, -EFAULT, SAN_EPQ_RECV, 0);
        san_nic_enter_error(ep, -EFAULT);
        xc->in_failed = true;
        done(xc, m->seq, -EACCES, 0);
        return TAKEN;
    }
    xc->in_got += m->len;
    if (xc->in_got == xc->in_total) {
        san_nic_complete(ep, xc->in_recv.wr_id, 0, SAN_EPQ_RECV, (uint32_t)xc->in_total);
        done(xc, m->seq, 0, xc->in_total);
    }
    return TAKEN;
}

/* The checks of an RDMA access of the peer to this endpoint's memory, for the whole request:
 * a descriptor of this host, the endpoint not reset, the rkey its owner's, access, range. */
static int check_remote(struct san_xconn *xc, uint64_t host, uint32_t rkey, uint64_t va,
                        uint64_t total, bool write)
{
    struct san_nic_ep *ep = xc->ep;
    struct san_nic_piece pc;
    if ((ep->state == SAN_EPQ_ERROR && ep->err == -ECONNRESET) || atomic_load(&ep->closing))
        return -ECONNRESET;
    if (host != xc->nic->cfg.host_id || total > UINT32_MAX)
        return -EACCES; /* a descriptor of another host is not this NIC's to honour */
    if (san_nic_remote(xc->nic, ep->set, rkey, va, total, write, &pc))
        return -EACCES;
    san_nic_put_pieces(xc->nic, &pc, 1);
    return 0;
}

/* Moves len bytes between buf and the registration of rkey at va + off, checked again (the
 * registration may have gone since the request's first message). -EACCES. */
static int remote_io(struct san_xconn *xc, uint32_t rkey, uint64_t va, uint64_t total, uint64_t off,
                     void *buf, uint64_t len, bool write)
{
    struct san_nic_piece pc;
    if (san_nic_remote(xc->nic, xc->ep->set, rkey, va, total, write, &pc))
        return -EACCES;
    int err = san_nic_pieces_io(xc->nic, &pc, 1, off, buf, len, write);
    san_nic_put_pieces(xc->nic, &pc, 1);
    return err ? -EACCES : 0;
}

static int on_write(struct san_xconn *xc, const struct san_xmsg *m, const void *data)
{
    xc->to_return++;
    if (m->offset == 0 && m->seq == xc->in_seq + 1) {
        next_op(xc, m);
        xc->in_rkey = m->rkey;
        xc->in_va = m->va;
        xc->in_host = m->host;
        if (m->status < 0) {
            xc->in_failed = true; /* the writer's own pieces failed: nothing to answer */
            return TAKEN;
        }
        int st = check_remote(xc, m->host, m->rkey, m->va, m->total, true);
        if (st) {
            xc->in_failed = true;
            done(xc, m->seq, st, 0);
            return TAKEN;
        }
    } else if (!same_op(xc, m) || xc->in_op != SAN_XMSG_WRITE) {
        violation(xc);
        return TAKEN;
    }
    if (xc->in_failed)
        return TAKEN;
    if (m->status < 0) {
        xc->in_failed = true;
        return TAKEN;
    }
    if (remote_io(xc, xc->in_rkey, xc->in_va, xc->in_total, m->offset, (void *)data, m->len,
                  true)) {
        xc->in_failed = true;
        done(xc, m->seq, -EACCES, 0);
        return TAKEN;
    }
    xc->in_got += m->len;
    if (xc->in_got == xc->in_total)
        done(xc, m->seq, 0, xc->in_total);
    return TAKEN;
}

static int on_read(struct san_xconn *xc, const struct san_xmsg *m)
{
    if (xc->rd_busy || !next_op(xc, m)) {
        violation(xc);
        return TAKEN;
    }
    xc->rd_status = check_remote(xc, m->host, m->rkey, m->va, m->total, false);
    xc->rd_busy = true; /* answered as credits allow */
    xc->rd_seq = m->seq;
    xc->rd_rkey = m->rkey;
    xc->rd_va = m->va;
    xc->rd_total = m->total;
    xc->rd_sent = 0;
    return TAKEN;
}

/* Answers the peer's RDMA read, a chunk per credit. */
static bool read_progress(struct san_xconn *xc)
{
    bool did = false;
    while (xc->rd_busy && xc->credits && !xc->dead) {
        uint64_t n = xc->rd_total - xc->rd_sent;
        if (n > SAN_XMSG_CHUNK)
            n = SAN_XMSG_CHUNK;
        struct san_xmsg r = {.op = SAN_XMSG_RDATA,
                             .seq = xc->rd_seq,
                             .total = xc->rd_total,
                             .offset = xc->rd_sent,
                             .status = xc->rd_status};
        if (r.status) {
            n = 0;
            xc->rd_busy = false;
        } else if (remote_io(xc, xc->rd_rkey, xc->rd_va, xc->rd_total, xc->rd_sent, xc->buf, n,
                             false)) {
            r.status = -EACCES;
            n = 0;
            xc->rd_busy = false;
        }
        xc->credits--;
        send_or_fail(xc, &r, xc->buf, n);
        xc->rd_sent += n;
        if (xc->rd_sent == xc->rd_total)
            xc->rd_busy = false;
        did = true;
    }
    return did;
}

/* --- the initiator: this endpoint's own requests -------------------------------------------- */

static void finish(struct san_xconn *xc, int32_t status, uint64_t bytes)
{
    struct san_nic_ep *ep = xc->ep;
    xc->busy = false;
    if (status) {
        san_nic_complete(ep, xc->w.wr_id, status, xc->w.opcode, 0);
        san_nic_enter_error(ep, status);
        return;
    }
    san_nic_count(ep, bytes);
    if (!(xc->w.flags & SAN_EPQ_UNSIGNALED))
        san_nic_complete(ep, xc->w.wr_id, 0, xc->w.opcode, (uint32_t)bytes);
}

static int on_done(struct san_xconn *xc, const struct san_xmsg *m)
{
    if (!xc->busy || m->seq != xc->out_seq) {
        if (m->seq <= xc->out_seq)
            return TAKEN; /* of a request this side already gave up */
        violation(xc);
        return TAKEN;
    }
    if (xc->w.opcode == SAN_EPQ_READ ||
        (!m->status && (xc->sent != xc->total || m->total != xc->total))) {
        violation(xc);
        return TAKEN;
    }
    if (!san_nic_cq_room(xc->ep))
        return STALL;
    finish(xc, m->status, xc->total);
    return TAKEN;
}

static int on_rdata(struct san_xconn *xc, const struct san_xmsg *m, const void *data)
{
    struct san_nic_ep *ep = xc->ep;
    if (!xc->busy || xc->w.opcode != SAN_EPQ_READ || m->seq != xc->out_seq) {
        if (m->seq && m->seq == xc->dropped_seq) {
            xc->to_return++;
            return TAKEN;
        }
        violation(xc);
        return TAKEN;
    }
    if (m->total != xc->total ||
        (!m->status && (m->offset != xc->got || m->len > xc->total - m->offset))) {
        violation(xc);
        return TAKEN;
    }
    if (!san_nic_cq_room(ep))
        return STALL; /* every answer may complete the read */
    xc->to_return++;
    if (m->status) {
        finish(xc, m->status, 0);
        return TAKEN;
    }
    struct san_nic_piece dst[SAN_EPQ_SGE];
    uint64_t total;
    int err = san_nic_local_pieces(ep, &xc->w, true, dst, &total);
    if (!err) {
        err = san_nic_pieces_io(xc->nic, dst, xc->w.nsge, m->offset, (void *)data, m->len, true);
        san_nic_put_pieces(xc->nic, dst, xc->w.nsge);
    }
    if (err) {
        xc->dropped_seq = m->seq; /* the rest of its answer is dropped */
        finish(xc, -EFAULT, 0);
        return TAKEN;
    }
    xc->got += m->len;
    if (xc->got == xc->total)
        finish(xc, 0, xc->total);
    return TAKEN;
}

/* Ships what the request in flight still has to send, a chunk per credit. */
static bool ship(struct san_xconn *xc)
{
    bool did = false;
    unsigned op = xc->w.opcode;
    if (!xc->busy || (op != SAN_EPQ_SEND && op != SAN_EPQ_WRITE))
        return false;
    while (xc->busy && xc->credits && !xc->dead &&
           (xc->sent < xc->total || (!xc->total && !xc->got))) {
        uint64_t n = xc->total - xc->sent;
        if (n > SAN_XMSG_CHUNK)
            n = SAN_XMSG_CHUNK;
        struct san_xmsg m = {.op = op == SAN_EPQ_SEND ? SAN_XMSG_SEND : SAN_XMSG_WRITE,
                             .seq = xc->out_seq,
                             .offset = xc->sent,
                             .total = xc->total,
                             .rkey = xc->w.rkey,
                             .va = op == SAN_EPQ_WRITE ? xc->w.remote_va : 0,
                             .host = op == SAN_EPQ_WRITE ? xc->w.remote_host : 0};
        if (op == SAN_EPQ_SEND)
            m.rkey = 0;
        struct san_nic_piece src[SAN_EPQ_SGE];
        uint64_t total;
        int err = san_nic_local_pieces(xc->ep, &xc->w, false, src, &total);
        if (!err) {
            err = san_nic_pieces_io(xc->nic, src, xc->w.nsge, xc->sent, xc->buf, n, false);
            san_nic_put_pieces(xc->nic, src, xc->w.nsge);
        }
        xc->credits--;
        if (err) {
            m.status = -EFAULT; /* tells the target to drop what it has of this request */
            send_or_fail(xc, &m, NULL, 0);
            if (xc->busy)
                finish(xc, -EFAULT, 0);
            return true;
        }
        send_or_fail(xc, &m, xc->buf, n);
        xc->sent += n;
        xc->got = 1; /* something went: a request of 0 bytes goes once */
        did = true;
    }
    return did;
}

/* Takes the next request of the send queue, when nothing of ours is in flight. */
static bool start_next(struct san_xconn *xc)
{
    struct san_nic_ep *ep = xc->ep;
    if (xc->busy || xc->dead || xc->phase != X_RUNNING || ep->state == SAN_EPQ_ERROR)
        return false;
    int n = san_nic_posted(&ep->q->sq_tail, ep->sq_head, SAN_EPQ_SQ);
    if (n < 0) {
        san_nic_enter_error(ep, -EFAULT);
        return true;
    }
    if (!n || !san_nic_cq_room(ep))
        return false;
    struct san_epq_wqe w = san_epq_sq(ep->q)[ep->sq_head & (SAN_EPQ_SQ - 1)];
    bool is_send = w.opcode == SAN_EPQ_SEND;
    if (san_nic_valid_wqe(&w, false) && is_send && !xc->peer_closed && !xc->peer_err &&
        (!xc->recv_credits || !xc->credits))
        return false; /* a send waits for the peer's receive */
    ep->sq_head++;
    atomic_store_explicit(&ep->q->sq_head, ep->sq_head, memory_order_release);
    xc->w = w;
    if (!san_nic_valid_wqe(&w, false)) {
        xc->w.opcode = 0;
        finish(xc, -EINVAL, 0);
        return true;
    }
    bool write = w.opcode == SAN_EPQ_WRITE;
    if (xc->peer_closed || (is_send && xc->peer_err) || (!is_send && xc->peer_err == -ECONNRESET)) {
        finish(xc, -ECONNRESET, 0);
        return true;
    }
    struct san_nic_piece local[SAN_EPQ_SGE];
    uint64_t total;
    if (san_nic_local_pieces(ep, &w, w.opcode == SAN_EPQ_READ, local, &total)) {
        if (is_send) {
            /* The receive it takes over there completes with the reset, as on one host. */
            struct san_xmsg m = {.op = SAN_XMSG_SEND, .seq = ++xc->out_seq, .status = -EFAULT};
            xc->recv_credits--;
            xc->credits--;
            send_or_fail(xc, &m, NULL, 0);
        }
        finish(xc, -EFAULT, 0);
        return true;
    }
    san_nic_put_pieces(xc->nic, local, w.nsge);
    if (!is_send && (total > UINT32_MAX || w.remote_host != xc->host)) {
        finish(xc, -EACCES, 0); /* a descriptor of neither end of this connection */
        return true;
    }
    xc->busy = true;
    xc->out_seq++;
    xc->total = total;
    xc->sent = xc->got = 0;
    if (is_send) {
        xc->recv_credits--;
    } else if (!write) {
        struct san_xmsg m = {.op = SAN_XMSG_READ,
                             .seq = xc->out_seq,
                             .total = total,
                             .rkey = w.rkey,
                             .va = w.remote_va,
                             .host = w.remote_host};
        send_or_fail(xc, &m, NULL, 0);
    }
    return true;
}

/* --- the connection's thread ---------------------------------------------------------------- */

static int handle(struct san_xconn *xc, const struct xin *in)
{
    const struct san_xmsg *m = &in->m;
    struct san_nic_ep *ep = xc->ep;
    if (xc->phase == X_CONNECTING) {
        if (m->op == SAN_XMSG_ACCEPT && !m->status && m->from) {
            pthread_mutex_lock(&xc->nic->xlock);
            atomic_store(&xc->peer_conn, m->from);
            pthread_mutex_unlock(&xc->nic->xlock);
            xc->phase = X_RUNNING;
            san_nic_set_state(ep, SAN_EPQ_CONNECTED, 0);
        } else if (m->op == SAN_XMSG_ACCEPT || m->op == SAN_XMSG_CLOSE) {
            xc->dead = true;
            san_nic_set_state(ep, SAN_EPQ_REFUSED, -ECONNREFUSED);
        }
        return TAKEN; /* anything else before the accept: nothing to act on */
    }
    if (xc->dead)
        return TAKEN;
    switch (m->op) {
    case SAN_XMSG_SEND:
        return on_send(xc, m, in->data);
    case SAN_XMSG_WRITE:
        return on_write(xc, m, in->data);
    case SAN_XMSG_READ:
        return on_read(xc, m);
    case SAN_XMSG_RDATA:
        return on_rdata(xc, m, in->data);
    case SAN_XMSG_DONE:
        return on_done(xc, m);
    case SAN_XMSG_CREDIT:
        if (m->chunks > SAN_XMSG_WINDOW - xc->credits || m->recvs > SAN_EPQ_RQ - xc->recv_credits) {
            violation(xc);
            return TAKEN;
        }
        xc->credits += m->chunks;
        xc->recv_credits += m->recvs;
        return TAKEN;
    case SAN_XMSG_STATE:
        if (!xc->peer_err)
            xc->peer_err = m->status;
        return TAKEN;
    case SAN_XMSG_CLOSE:
        /* The peer's endpoint is gone: as on one host, this one is reset. */
        xc->peer_closed = true;
        if (xc->busy && san_nic_cq_room(ep))
            finish(xc, -ECONNRESET, 0);
        san_nic_enter_error(ep, -ECONNRESET);
        xc->dead = true;
        return TAKEN;
    default:
        violation(xc);
        return TAKEN;
    }
}

static bool drain_inbox(struct san_xconn *xc)
{
    bool did = false;
    for (;;) {
        pthread_mutex_lock(&xc->lock);
        struct xin *in = xc->in_head;
        bool overflow = xc->overflow;
        pthread_mutex_unlock(&xc->lock);
        if (overflow && !xc->dead) {
            violation(xc); /* the peer sent beyond every credit it had */
            did = true;
        }
        if (!in)
            return did;
        if (handle(xc, in) == STALL)
            return did;
        pthread_mutex_lock(&xc->lock);
        xc->in_head = in->next;
        if (!xc->in_head)
            xc->in_tail = &xc->in_head;
        xc->in_count--;
        pthread_mutex_unlock(&xc->lock);
        free(in);
        did = true;
    }
}

/* Tells the peer of receives newly posted and of data messages taken. */
static bool credit(struct san_xconn *xc)
{
    struct san_nic_ep *ep = xc->ep;
    struct san_xmsg m = {.op = SAN_XMSG_CREDIT};
    if (xc->dead || xc->phase != X_RUNNING)
        return false;
    if (ep->state != SAN_EPQ_ERROR) {
        uint32_t tail = atomic_load_explicit(&ep->q->rq_tail, memory_order_acquire);
        if (tail - ep->rq_head <= SAN_EPQ_RQ && tail - xc->rq_adv <= SAN_EPQ_RQ) {
            m.recvs = tail - xc->rq_adv;
            xc->rq_adv = tail;
        }
    }
    m.chunks = xc->to_return;
    if (!m.recvs && !m.chunks)
        return false;
    xc->to_return = 0;
    send_or_fail(xc, &m, NULL, 0);
    return true;
}

static bool pass(struct san_xconn *xc)
{
    struct san_nic_ep *ep = xc->ep;
    bool did = false;
    if (atomic_load(&xc->reset) && !xc->dead) {
        fail_all(xc);
        did = true;
    }
    if (xc->dead && xc->busy && san_nic_cq_room(ep)) {
        finish(xc, -ECONNRESET, 0); /* what the reset found the completion queue too full for */
        did = true;
    }
    did |= drain_inbox(xc);
    did |= start_next(xc);
    did |= ship(xc);
    did |= read_progress(xc);
    did |= credit(xc);
    if (ep->state == SAN_EPQ_ERROR && xc->phase == X_RUNNING) {
        if (!xc->state_sent && !xc->dead) {
            struct san_xmsg m = {.op = SAN_XMSG_STATE, .status = ep->err};
            xc->state_sent = true;
            send_or_fail(xc, &m, NULL, 0);
        }
        if (!xc->busy)
            did |= san_nic_flush(ep);
    }
    return did;
}

static void snapshot(struct san_xconn *xc, uint32_t out[4])
{
    struct san_epq *q = xc->ep->q;
    out[0] = atomic_load_explicit(&q->sq_tail, memory_order_seq_cst);
    out[1] = atomic_load_explicit(&q->rq_tail, memory_order_seq_cst);
    out[2] = atomic_load_explicit(&q->cq_head, memory_order_seq_cst);
    out[3] = atomic_load_explicit(&xc->wake, memory_order_seq_cst);
}

static bool pending(void *arg)
{
    struct san_xconn *xc = arg;
    uint32_t now[4];
    snapshot(xc, now);
    return atomic_load(&xc->ep->closing) || memcmp(now, xc->seen, sizeof(now)) != 0;
}

struct futex_waiter {
    uint64_t val;
    uint64_t uaddr;
    uint32_t flags;
    uint32_t reserved;
};

static void sleep_on(struct san_xconn *xc)
{
    struct san_epq *q = xc->ep->q;
    struct futex_waiter w[2] = {
        {.val = atomic_load(&q->doorbell), .uaddr = (uintptr_t)&q->doorbell, .flags = FUTEX2_U32},
        {.val = xc->seen[3], .uaddr = (uintptr_t)&xc->wake, .flags = FUTEX2_U32},
    };
    atomic_store_explicit(&q->engine_sleeping, 1, memory_order_seq_cst);
    atomic_store_explicit(&xc->sleeping, 1, memory_order_seq_cst);
    if (!pending(xc)) {
        struct timespec to;
        clock_gettime(CLOCK_MONOTONIC, &to);
        to.tv_sec += 1; /* a safety net only */
        if (syscall(SYS_futex_waitv, w, 2, 0, &to, CLOCK_MONOTONIC) < 0 && errno == ENOSYS) {
            struct timespec ms = {0, 1000000};
            nanosleep(&ms, NULL);
        }
    }
    atomic_store_explicit(&xc->sleeping, 0, memory_order_relaxed);
    atomic_store_explicit(&q->engine_sleeping, 0, memory_order_relaxed);
}

static void *xconn_main(void *arg)
{
    struct san_xconn *xc = arg;
    struct san_nic_ep *ep = xc->ep;
    uint64_t spin_ns = (uint64_t)xc->nic->cfg.spin_us * 1000;
    struct san_xmsg first = {.op = xc->acceptor ? SAN_XMSG_ACCEPT : SAN_XMSG_CONNECT};
    if (!xc->acceptor) {
        memcpy(first.ip, ep->remote.ip, 16);
        first.port = ep->remote.port;
    }
    pthread_mutex_lock(&xc->run);
    send_or_fail(xc, &first, NULL, 0);
    pthread_mutex_unlock(&xc->run);
    for (;;) {
        pthread_mutex_lock(&xc->run);
        if (atomic_load(&ep->closing)) {
            pthread_mutex_unlock(&xc->run);
            break;
        }
        uint32_t before[4];
        snapshot(xc, before);
        bool did = pass(xc);
        pthread_mutex_unlock(&xc->run);
        if (did)
            continue;
        memcpy(xc->seen, before, sizeof(before));
        uint64_t idle_since = san_now_ns();
        bool ready;
        do
            ready = san_spin_look(pending, xc);
        while (!ready && san_now_ns() - idle_since < spin_ns);
        if (!ready)
            sleep_on(xc);
    }
    /* The owner let go: the peer's end is reset, as on one host. */
    struct san_xmsg bye = {.op = SAN_XMSG_CLOSE, .conn = atomic_load(&xc->peer_conn)};
    if (!xc->peer_closed)
        xsend(xc, &bye, NULL, 0);
    pthread_mutex_lock(&xc->nic->xlock);
    san_list_del(&xc->node);
    pthread_mutex_unlock(&xc->nic->xlock);
    xconn_free(xc);
    san_nic_ep_put(ep);
    return NULL;
}

static int start_thread(struct san_xconn *xc)
{
    pthread_t t;
    pthread_attr_t attr;
    sigset_t all, old;
    int err = pthread_attr_init(&attr);
    if (err)
        return -ENOBUFS;
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    pthread_attr_setstacksize(&attr, 256 << 10);
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old); /* signals stay with the loop's signalfd */
    atomic_fetch_add(&xc->ep->refs, 1);
    err = pthread_create(&t, &attr, xconn_main, xc);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    pthread_attr_destroy(&attr);
    if (err) {
        atomic_fetch_sub(&xc->ep->refs, 1);
        return -ENOBUFS;
    }
    return 0;
}

/* --- the loop's calls (nic.c) --------------------------------------------------------------- */

int san_xconn_connect(struct san_nic *nic, struct san_nic_ep *ep, unsigned link, uint64_t session,
                      uint64_t host)
{
    struct san_xconn *xc = xconn_new(nic, link, session, host);
    if (!xc)
        return -ENOMEM;
    xc->ep = ep;
    xc->phase = X_CONNECTING;
    ep->xc = xc;
    pthread_mutex_lock(&nic->xlock);
    table_add_locked(nic, xc);
    pthread_mutex_unlock(&nic->xlock);
    int err = start_thread(xc);
    if (err) {
        pthread_mutex_lock(&nic->xlock);
        san_list_del(&xc->node);
        pthread_mutex_unlock(&nic->xlock);
        ep->xc = NULL;
        xconn_free(xc);
    }
    return err;
}

int san_xconn_accept(struct san_nic_ep *stub, struct san_nic_ep *ep)
{
    struct san_xconn *xc = stub->xc;
    struct san_nic *nic = xc->nic;
    pthread_mutex_lock(&nic->xlock);
    bool gone = xc->peer_gone;
    xc->ep = ep;
    xc->phase = X_RUNNING;
    xc->acceptor = true;
    pthread_mutex_unlock(&nic->xlock);
    ep->xc = xc;
    ep->remote = (struct san_nic_addr){0};
    if (gone)
        atomic_store(&xc->reset, true); /* the connector gave up meanwhile: reset at once */
    san_nic_set_state(ep, SAN_EPQ_CONNECTED, 0);
    int err = start_thread(xc);
    if (err) {
        ep->xc = NULL;
        xc->ep = NULL;
        san_xconn_refuse(stub);
        return err;
    }
    return 0;
}

void san_xconn_refuse(struct san_nic_ep *stub)
{
    struct san_xconn *xc = stub->xc;
    struct san_nic *nic = xc->nic;
    struct san_xmsg m = {
        .op = SAN_XMSG_ACCEPT, .conn = atomic_load(&xc->peer_conn), .status = -ECONNREFUSED};
    xc->phase = X_PENDING;
    xsend(xc, &m, NULL, 0);
    pthread_mutex_lock(&nic->xlock);
    san_list_del(&xc->node);
    pthread_mutex_unlock(&nic->xlock);
    xconn_free(xc); /* and the stub */
}

void san_xconn_close(struct san_nic_ep *ep)
{
    struct san_xconn *xc = ep->xc;
    pthread_mutex_lock(&xc->run);
    atomic_store(&ep->closing, true);
    pthread_mutex_unlock(&xc->run);
    wake(xc);
}

/* --- the transport's calls ------------------------------------------------------------------ */

static struct san_xconn *find_locked(struct san_nic *nic, uint64_t id)
{
    for (struct san_list *n = nic->xconns.next; n != &nic->xconns; n = n->next) {
        struct san_xconn *xc = san_container_of(n, struct san_xconn, node);
        if (xc->id == id)
            return xc;
    }
    return NULL;
}

/* A stub leaves the table and the backlog, unless accept took it from the backlog already. */
static void drop_stub_locked(struct san_nic *nic, struct san_xconn *xc)
{
    if (san_nic_backlog_remove(nic, xc->stub)) {
        san_list_del(&xc->node);
        xconn_free(xc);
    } else {
        xc->peer_gone = true;
    }
}

static int on_connect(struct san_nic *nic, unsigned link, uint64_t session, uint64_t host,
                      const struct san_xmsg *m, struct san_xmsg *reply)
{
    struct san_nic_addr a = {.port = m->port};
    memcpy(a.ip, m->ip, 16);
    struct san_xconn *xc = xconn_new(nic, link, session, host);
    struct san_nic_ep *stub = xc ? calloc(1, sizeof(*stub)) : NULL;
    int err = -ECONNREFUSED;
    if (stub) {
        stub->nic = nic;
        stub->xc = xc;
        stub->local = a;
        xc->stub = stub;
        xc->phase = X_PENDING;
        atomic_store(&xc->peer_conn, m->from);
        pthread_mutex_lock(&nic->xlock);
        table_add_locked(nic, xc);
        pthread_mutex_unlock(&nic->xlock);
        if (!(err = san_nic_backlog_add(nic, &a, stub)))
            return 0;
        pthread_mutex_lock(&nic->xlock);
        san_list_del(&xc->node);
        pthread_mutex_unlock(&nic->xlock);
    }
    if (xc)
        xconn_free(xc);
    *reply = (struct san_xmsg){.op = SAN_XMSG_ACCEPT, .conn = m->from, .status = err};
    return 1;
}

int san_nic_xdeliver(struct san_nic *nic, unsigned link, uint64_t session, uint64_t host,
                     const struct san_xmsg *m, const void *payload, struct san_xmsg *reply)
{
    if (m->op == SAN_XMSG_CONNECT)
        return on_connect(nic, link, session, host, m, reply);
    pthread_mutex_lock(&nic->xlock);
    if (!m->conn) {
        /* A connector that gave up before it was accepted. */
        if (m->op == SAN_XMSG_CLOSE)
            for (struct san_list *n = nic->xconns.next; n != &nic->xconns; n = n->next) {
                struct san_xconn *xc = san_container_of(n, struct san_xconn, node);
                if (xc->stub && !xc->ep && xc->link == link && xc->session == session &&
                    atomic_load(&xc->peer_conn) == m->from) {
                    drop_stub_locked(nic, xc);
                    break;
                }
            }
        pthread_mutex_unlock(&nic->xlock);
        return 0;
    }
    struct san_xconn *xc = find_locked(nic, m->conn);
    uint64_t peer = xc ? atomic_load(&xc->peer_conn) : 0;
    if (!xc || xc->link != link || xc->session != session || (peer && peer != m->from) || !xc->ep) {
        pthread_mutex_unlock(&nic->xlock);
        if (m->op == SAN_XMSG_CLOSE || (xc && !xc->ep))
            return 0;
        /* Not a connection of this peer here (closed meanwhile): its end is told. */
        *reply = (struct san_xmsg){.op = SAN_XMSG_CLOSE, .conn = m->from, .from = m->conn};
        return 1;
    }
    struct xin *in = NULL;
    pthread_mutex_lock(&xc->lock);
    if (xc->in_count < INBOX_MAX && (in = malloc(sizeof(*in) + m->len))) {
        in->next = NULL;
        in->m = *m;
        if (m->len)
            memcpy(in->data, payload, m->len);
        *xc->in_tail = in;
        xc->in_tail = &in->next;
        xc->in_count++;
    } else {
        xc->overflow = true;
    }
    pthread_mutex_unlock(&xc->lock);
    wake(xc);
    pthread_mutex_unlock(&nic->xlock);
    return 0;
}

static void reset_locked(struct san_nic *nic, bool all, unsigned link, uint64_t session)
{
    for (struct san_list *n = nic->xconns.next, *next; n != &nic->xconns; n = next) {
        next = n->next;
        struct san_xconn *xc = san_container_of(n, struct san_xconn, node);
        if (!all && (xc->link != link || xc->session != session))
            continue;
        if (xc->stub && !xc->ep) {
            drop_stub_locked(nic, xc); /* may free it */
            continue;
        }
        atomic_store(&xc->reset, true);
        wake(xc);
    }
}

void san_nic_xreset(struct san_nic *nic, unsigned link, uint64_t session)
{
    pthread_mutex_lock(&nic->xlock);
    reset_locked(nic, false, link, session);
    pthread_mutex_unlock(&nic->xlock);
}

void san_nic_set_xport(struct san_nic *nic, const struct san_nic_xport *x)
{
    pthread_rwlock_wrlock(&nic->xport_lock);
    nic->xport = x ? *x : (struct san_nic_xport){0};
    pthread_rwlock_unlock(&nic->xport_lock);
    if (!x) {
        pthread_mutex_lock(&nic->xlock);
        reset_locked(nic, true, 0, 0);
        pthread_mutex_unlock(&nic->xlock);
    }
}
