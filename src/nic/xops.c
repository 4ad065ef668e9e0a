/* Endpoints across hosts: what a connection does (xconn.h), on its thread under its run lock.
 *
 * As target it executes the peer's requests on this endpoint's memory: a send into the receive at
 * the head of the receive queue (advertised to the peer in CREDIT), an RDMA write or read checked
 * as engine.c checks it (a descriptor of this host, rkey current and registered by this
 * endpoint's owner for RDMA, access covering the operation, the whole range inside) before a byte
 * moves, again for each chunk, and the outcome sent back (DONE, or RDATA's status); once it
 * refused one, it drops the peer's later requests (they are flushed at home, as a NIC in error
 * flushes). As initiator it takes up to SAN_XCONN_PIPE of its own requests at a time, checks
 * their local pieces, ships their messages in order, data a chunk per credit, and completes them
 * in order with the target's outcomes. Every message of the peer is checked
 * against the operation in flight: anything out of order or beyond a credit is a protocol
 * violation (the connection resets, the peer is told). */
#include "nic/xconn.h"

#include <errno.h>
#include <string.h>

/* --- the target: the peer's requests on this endpoint's memory ------------------------------ */

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
        if (xc->in_dead) {
            xc->in_failed = true; /* after a failure of the peer's: dropped, as flushed there */
            return TAKEN;
        }
        if (m->status < 0) {
            /* The sender's own pieces failed: the receive it would have filled is reset. */
            xc->in_dead = true;
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
            san_xconn_done(xc, m->seq, -ECONNRESET, 0);
            return TAKEN;
        }
        int n = san_nic_posted(&ep->q->rq_tail, ep->rq_head, SAN_EPQ_RQ);
        if (n < 0) {
            san_nic_enter_error(ep, -EFAULT); /* our client's queue is garbage */
            xc->in_failed = true;
            san_xconn_done(xc, m->seq, -ECONNRESET, 0);
            return TAKEN;
        }
        if (!n) {
            xc->in_failed = true;
            san_xconn_violation(xc); /* a send without a receive we advertised */
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
            san_xconn_done(xc, m->seq, -EACCES, 0);
            return TAKEN;
        }
        san_nic_put_pieces(xc->nic, dst, xc->in_recv.nsge);
        if (m->total > room || m->total > UINT32_MAX) {
            san_nic_complete(ep, xc->in_recv.wr_id, -EMSGSIZE, SAN_EPQ_RECV, 0);
            san_nic_enter_error(ep, -EMSGSIZE);
            xc->in_failed = true;
            san_xconn_done(xc, m->seq, -EMSGSIZE, 0);
            return TAKEN;
        }
    } else if (!same_op(xc, m) || xc->in_op != SAN_XMSG_SEND) {
        san_xconn_violation(xc);
        return TAKEN;
    }
    if (xc->in_failed)
        return TAKEN;
    if (m->status < 0) { /* the sender failed part way */
        xc->in_dead = true;
        xc->in_failed = true;
        san_nic_complete(ep, xc->in_recv.wr_id, -ECONNRESET, SAN_EPQ_RECV, 0);
        san_nic_enter_error(ep, -ECONNRESET);
        return TAKEN;
    }
    if (m->offset != xc->in_got || m->len > xc->in_total - m->offset) {
        san_xconn_violation(xc);
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
        san_xconn_done(xc, m->seq, -EACCES, 0);
        return TAKEN;
    }
    xc->in_got += m->len;
    if (xc->in_got == xc->in_total) {
        san_nic_complete(ep, xc->in_recv.wr_id, 0, SAN_EPQ_RECV, (uint32_t)xc->in_total);
        san_xconn_done(xc, m->seq, 0, xc->in_total);
    }
    return TAKEN;
}

bool san_xconn_abandon(struct san_xconn *xc)
{
    if (xc->in_op != SAN_XMSG_SEND || xc->in_failed || xc->in_got >= xc->in_total ||
        !san_nic_cq_room(xc->ep))
        return false;
    xc->in_failed = true;
    san_nic_complete(xc->ep, xc->in_recv.wr_id, -ECONNRESET, SAN_EPQ_RECV, 0);
    return true;
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
        if (xc->in_dead || m->status < 0) {
            /* Dropped after a failure of the peer's, or the writer's own pieces failed: nothing
             * to answer. */
            xc->in_dead = true;
            xc->in_failed = true;
            return TAKEN;
        }
        int st = check_remote(xc, m->host, m->rkey, m->va, m->total, true);
        if (st) {
            xc->in_failed = true;
            san_xconn_done(xc, m->seq, st, 0);
            return TAKEN;
        }
    } else if (!same_op(xc, m) || xc->in_op != SAN_XMSG_WRITE) {
        san_xconn_violation(xc);
        return TAKEN;
    }
    if (xc->in_failed)
        return TAKEN;
    if (m->status < 0) {
        xc->in_dead = true;
        xc->in_failed = true;
        return TAKEN;
    }
    if (remote_io(xc, xc->in_rkey, xc->in_va, xc->in_total, m->offset, (void *)data, m->len,
                  true)) {
        xc->in_failed = true;
        san_xconn_done(xc, m->seq, -EACCES, 0);
        return TAKEN;
    }
    xc->in_got += m->len;
    if (xc->in_got == xc->in_total)
        san_xconn_done(xc, m->seq, 0, xc->in_total);
    return TAKEN;
}

/* A read of the peer's comes while one is answered: it waits behind it, up to SAN_XCONN_READS in
 * all (the initiator ships no more, and nothing else until they are answered). */
static int on_read(struct san_xconn *xc, const struct san_xmsg *m)
{
    if ((xc->rd_busy && xc->rd_queued == SAN_XCONN_READS - 1) || !next_op(xc, m)) {
        san_xconn_violation(xc);
        return TAKEN;
    }
    if (xc->in_dead)
        return TAKEN; /* after a failure of the peer's: dropped, as flushed there */
    struct xread rd = {.seq = m->seq,
                       .va = m->va,
                       .total = m->total,
                       .rkey = m->rkey,
                       .status = check_remote(xc, m->host, m->rkey, m->va, m->total, false)};
    if (xc->rd_busy) {
        xc->rd_next[xc->rd_queued++] = rd;
        return TAKEN;
    }
    xc->rd = rd;
    xc->rd_busy = true; /* answered as credits allow */
    xc->rd_sent = 0;
    return TAKEN;
}

/* The read answered in full: the next one waiting, if any, is answered now. */
static void next_read(struct san_xconn *xc)
{
    xc->rd_busy = xc->rd_queued > 0;
    if (!xc->rd_busy)
        return;
    xc->rd = xc->rd_next[0];
    xc->rd_queued--;
    memmove(xc->rd_next, xc->rd_next + 1, xc->rd_queued * sizeof(xc->rd_next[0]));
    xc->rd_sent = 0;
}

/* Answers the peer's RDMA reads in order, a chunk per credit. */
bool san_xconn_answer(struct san_xconn *xc)
{
    bool did = false;
    while (xc->rd_busy && xc->credits && !xc->dead) {
        struct xread *rd = &xc->rd;
        uint64_t n = rd->total - xc->rd_sent;
        if (n > SAN_XMSG_CHUNK)
            n = SAN_XMSG_CHUNK;
        struct san_xmsg r = {.op = SAN_XMSG_RDATA,
                             .seq = rd->seq,
                             .total = rd->total,
                             .offset = xc->rd_sent,
                             .status = rd->status};
        xc->credits--;
        did = true;
        if (!r.status) {
            /* Checked again (the registration may have gone since the request came), and the
             * chunk goes from the memory straight into the message. */
            struct san_nic_piece pc;
            int err = san_nic_remote(xc->nic, xc->ep->set, rd->rkey, rd->va, rd->total, false, &pc);
            if (!err) {
                err = san_xconn_send_from(xc, &r, &pc, 1, xc->rd_sent, n);
                san_nic_put_pieces(xc->nic, &pc, 1);
            }
            if (!err) {
                xc->rd_sent += n;
                if (xc->rd_sent == rd->total)
                    next_read(xc);
                continue;
            }
            if (xc->dead)
                break; /* the connection failed */
            r.status = -EACCES;
        }
        /* Refused: the reads behind it are dropped with the peer's later requests. */
        xc->rd_busy = false;
        xc->rd_queued = 0;
        xc->in_dead = true;
        san_xconn_send_or_fail(xc, &r, NULL, 0);
    }
    return did;
}

/* --- the initiator: this endpoint's own requests -------------------------------------------- */

/* Requests in flight sit in a ring in send-queue order, [op_head, op_tail): the oldest waits for
 * its outcome, op_ship is the first whose messages have not all gone. The target answers them in
 * order, so an answer is always the oldest's. After a failure nothing later runs at the target
 * (it drops the peer's later requests once it reported one failed, as a NIC flushes a queue in
 * error) and what is still in the ring completes here, flushed. */
static struct xop *op_at(struct san_xconn *xc, uint32_t i)
{
    return &xc->ops[i % SAN_XCONN_PIPE];
}

bool san_xconn_idle(const struct san_xconn *xc)
{
    return xc->op_head == xc->op_tail;
}

static void complete_op(struct san_xconn *xc, struct xop *o, int32_t status, uint64_t bytes)
{
    struct san_nic_ep *ep = xc->ep;
    if (status) {
        san_nic_complete(ep, o->w.wr_id, status, o->w.opcode, 0);
        return;
    }
    san_nic_count(ep, bytes);
    if (!(o->w.flags & SAN_EPQ_UNSIGNALED))
        san_nic_complete(ep, o->w.wr_id, 0, o->w.opcode, (uint32_t)bytes);
}

/* The oldest request ends with status (0: bytes moved). A failure puts the endpoint in error and
 * flushes the rest of the ring. */
static void finish_head(struct san_xconn *xc, int32_t status, uint64_t bytes)
{
    struct xop *o = op_at(xc, xc->op_head++);
    xc->done_seq = o->seq;
    if (xc->op_ship < xc->op_head)
        xc->op_ship = xc->op_head;
    complete_op(xc, o, status, bytes);
    if (status) {
        san_nic_enter_error(xc->ep, status);
        if (!xc->flush_status)
            xc->flush_status = status == -ECONNRESET ? -ECONNRESET : -ECANCELED;
    }
}

bool san_xconn_flush_ring(struct san_xconn *xc)
{
    bool did = false;
    if (xc->dead && !xc->flush_status && !san_xconn_idle(xc))
        xc->flush_status = -ECONNRESET; /* the connection is gone: nothing will answer */
    while (!san_xconn_idle(xc) && san_nic_cq_room(xc->ep)) {
        struct xop *o = op_at(xc, xc->op_head);
        if (o->status) /* it failed here part way: its turn came */
            finish_head(xc, o->status, 0);
        else if (xc->flush_status)
            finish_head(xc, xc->flush_status, 0);
        else
            break;
        did = true;
    }
    return did;
}

static int on_done(struct san_xconn *xc, const struct san_xmsg *m)
{
    if (m->seq <= xc->done_seq)
        return TAKEN; /* of a request this side already ended (it failed here) */
    if (san_xconn_idle(xc) || xc->flush_status) {
        if (xc->flush_status)
            return TAKEN; /* answers after a failure: the ring completes flushed */
        san_xconn_violation(xc);
        return TAKEN;
    }
    struct xop *o = op_at(xc, xc->op_head);
    if (m->seq != o->seq || o->w.opcode == SAN_EPQ_READ ||
        (!m->status && (o->sent != o->total || m->total != o->total))) {
        san_xconn_violation(xc);
        return TAKEN;
    }
    if (!san_nic_cq_room(xc->ep))
        return STALL;
    finish_head(xc, o->status ? o->status : m->status, o->total);
    return TAKEN;
}

static int on_rdata(struct san_xconn *xc, const struct san_xmsg *m, const void *data)
{
    struct san_nic_ep *ep = xc->ep;
    if (m->seq <= xc->done_seq || xc->flush_status) {
        xc->to_return++; /* the rest of an answer given up here */
        return TAKEN;
    }
    struct xop *o = san_xconn_idle(xc) ? NULL : op_at(xc, xc->op_head);
    if (!o || o->w.opcode != SAN_EPQ_READ || m->seq != o->seq || m->total != o->total ||
        (!m->status && (m->offset != o->got || m->len > o->total - m->offset))) {
        san_xconn_violation(xc);
        return TAKEN;
    }
    if (!san_nic_cq_room(ep))
        return STALL; /* every answer may complete the read */
    xc->to_return++;
    if (m->status) {
        finish_head(xc, m->status, 0);
        return TAKEN;
    }
    struct san_nic_piece dst[SAN_EPQ_SGE];
    uint64_t total;
    int err = san_nic_local_pieces(ep, &o->w, true, dst, &total);
    if (!err) {
        err = san_nic_pieces_io(xc->nic, dst, o->w.nsge, m->offset, (void *)data, m->len, true);
        san_nic_put_pieces(xc->nic, dst, o->w.nsge);
    }
    if (err) {
        finish_head(xc, -EFAULT, 0); /* the rest of its answer is dropped (done_seq) */
        return TAKEN;
    }
    o->got += m->len;
    if (o->got == o->total)
        finish_head(xc, 0, o->total);
    return TAKEN;
}

/* Whether the next request may ship. Every answer (RDATA, DONE) must come in the order of the
 * requests, and the target answers its reads in full, one after the other: so reads follow
 * reads, up to SAN_XCONN_READS (as many as the target holds) not yet answered in full, and a send
 * or write goes only when none is (the target resets a connection whose peer breaks this). A read
 * completes with its last RDATA, so the reads shipped and not answered are those of the ring not
 * yet completed. */
static bool may_ship(struct san_xconn *xc, unsigned op)
{
    unsigned reads = 0;
    for (uint32_t i = xc->op_head; i != xc->op_ship; i++)
        reads += op_at(xc, i)->w.opcode == SAN_EPQ_READ;
    return op == SAN_EPQ_READ ? reads < SAN_XCONN_READS : reads == 0;
}

/* Ships the requests' messages in order (may_ship), data a chunk per credit. A request whose own
 * pieces fail part way tells the target to drop it, and nothing after it goes: it completes with
 * -EFAULT when its turn comes, and the rest is flushed. */
bool san_xconn_ship(struct san_xconn *xc)
{
    bool did = false;
    while (xc->op_ship != xc->op_tail && !xc->dead && !xc->flush_status && !xc->ship_stopped) {
        struct xop *o = op_at(xc, xc->op_ship);
        unsigned op = o->w.opcode;
        if (!may_ship(xc, op))
            break;
        if (op == SAN_EPQ_READ) {
            struct san_xmsg m = {.op = SAN_XMSG_READ,
                                 .seq = o->seq,
                                 .total = o->total,
                                 .rkey = o->w.rkey,
                                 .va = o->w.remote_va,
                                 .host = o->w.remote_host};
            san_xconn_send_or_fail(xc, &m, NULL, 0);
            xc->op_ship++;
            did = true;
            continue;
        }
        if (!xc->credits)
            break;
        uint64_t n = o->total - o->sent;
        if (n > SAN_XMSG_CHUNK)
            n = SAN_XMSG_CHUNK;
        struct san_xmsg m = {.op = op == SAN_EPQ_SEND ? SAN_XMSG_SEND : SAN_XMSG_WRITE,
                             .seq = o->seq,
                             .offset = o->sent,
                             .total = o->total,
                             .rkey = op == SAN_EPQ_WRITE ? o->w.rkey : 0,
                             .va = op == SAN_EPQ_WRITE ? o->w.remote_va : 0,
                             .host = op == SAN_EPQ_WRITE ? o->w.remote_host : 0};
        struct san_nic_piece src[SAN_EPQ_SGE];
        uint64_t total;
        int err = san_nic_local_pieces(xc->ep, &o->w, false, src, &total);
        if (!err) {
            /* The chunk goes from the client's memory straight into the message. */
            err = san_xconn_send_from(xc, &m, src, o->w.nsge, o->sent, n);
            san_nic_put_pieces(xc->nic, src, o->w.nsge);
        }
        xc->credits--;
        did = true;
        if (err && !xc->dead) { /* its pieces failed: nothing of this chunk went */
            m.status = -EFAULT; /* the target drops what it has of this request */
            san_xconn_send_or_fail(xc, &m, NULL, 0);
            o->status = -EFAULT;
            xc->ship_stopped = true;
            break;
        }
        if (err)
            break; /* the connection failed: its ring completes with the reset */
        o->sent += n;
        if (o->sent == o->total)
            xc->op_ship++; /* a request of 0 bytes goes once */
    }
    return did;
}

/* Takes the next requests of the send queue while the ring has room. One that fails here waits
 * until the ring is empty, so that completions keep the queue's order. */
bool san_xconn_start(struct san_xconn *xc)
{
    struct san_nic_ep *ep = xc->ep;
    bool did = false;
    while (xc->op_tail - xc->op_head < SAN_XCONN_PIPE && !xc->dead && xc->phase == X_RUNNING &&
           ep->state != SAN_EPQ_ERROR && !xc->flush_status && !xc->ship_stopped) {
        int n = san_nic_posted(&ep->q->sq_tail, ep->sq_head, SAN_EPQ_SQ);
        if (n < 0) {
            if (!san_xconn_idle(xc))
                return did;
            san_nic_enter_error(ep, -EFAULT);
            return true;
        }
        if (!n || san_nic_cq_room(ep) <= xc->op_tail - xc->op_head)
            return did;
        struct san_epq_wqe w = san_epq_sq(ep->q)[ep->sq_head & (SAN_EPQ_SQ - 1)];
        bool valid = san_nic_valid_wqe(&w, false), is_send = w.opcode == SAN_EPQ_SEND;
        int32_t fail = 0;
        struct san_nic_piece local[SAN_EPQ_SGE];
        uint64_t total = 0;
        if (!valid)
            fail = -EINVAL;
        else if (xc->peer_closed || (is_send && xc->peer_err) ||
                 (!is_send && xc->peer_err == -ECONNRESET))
            fail = -ECONNRESET;
        else if (is_send && !xc->recv_credits)
            return did; /* a send waits for the peer's receive */
        else if (san_nic_local_pieces(ep, &w, w.opcode == SAN_EPQ_READ, local, &total))
            fail = -EFAULT;
        else if (san_nic_put_pieces(xc->nic, local, w.nsge),
                 !is_send && (total > UINT32_MAX || w.remote_host != xc->host))
            fail = -EACCES; /* a descriptor of neither end of this connection */
        if (fail && !san_xconn_idle(xc))
            return did;
        if (fail == -EFAULT && is_send && !xc->credits)
            return did; /* its abort needs a credit */
        ep->sq_head++;
        atomic_store_explicit(&ep->q->sq_head, ep->sq_head, memory_order_release);
        struct xop *o = op_at(xc, xc->op_tail++);
        *o = (struct xop){.w = w, .seq = ++xc->out_seq, .total = total};
        if (!valid)
            o->w.opcode = 0;
        did = true;
        if (fail) {
            if (fail == -EFAULT && is_send) {
                /* The receive it takes over there completes with the reset, as on one host. */
                struct san_xmsg m = {.op = SAN_XMSG_SEND, .seq = o->seq, .status = -EFAULT};
                xc->recv_credits--;
                xc->credits--;
                san_xconn_send_or_fail(xc, &m, NULL, 0);
            }
            xc->op_ship = xc->op_tail;
            finish_head(xc, fail, 0);
            return true;
        }
        if (is_send)
            xc->recv_credits--;
    }
    return did;
}

/* --- the peer's messages ------------------------------------------------------------------- */

int san_xconn_handle(struct san_xconn *xc, const struct san_xmsg *m, const void *data)
{
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
    if ((m->op == SAN_XMSG_SEND || m->op == SAN_XMSG_WRITE) && xc->rd_busy) {
        /* The initiator ships a send or write only once its reads are answered in full. */
        san_xconn_violation(xc);
        return TAKEN;
    }
    switch (m->op) {
    case SAN_XMSG_SEND:
        return on_send(xc, m, data);
    case SAN_XMSG_WRITE:
        return on_write(xc, m, data);
    case SAN_XMSG_READ:
        return on_read(xc, m);
    case SAN_XMSG_RDATA:
        return on_rdata(xc, m, data);
    case SAN_XMSG_DONE:
        return on_done(xc, m);
    case SAN_XMSG_CREDIT:
        if (m->chunks > SAN_XMSG_WINDOW - xc->credits || m->recvs > SAN_EPQ_RQ - xc->recv_credits) {
            san_xconn_violation(xc);
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
        if (!xc->flush_status)
            xc->flush_status = -ECONNRESET;
        san_xconn_flush_ring(xc);
        san_xconn_abandon(xc);
        san_nic_enter_error(ep, -ECONNRESET);
        xc->dead = true;
        return TAKEN;
    default:
        san_xconn_violation(xc);
        return TAKEN;
    }
}

/* Tells the peer of receives newly posted and of data messages taken. */
bool san_xconn_credit(struct san_xconn *xc, bool lazy)
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
    if (!m.recvs && (!m.chunks || (lazy && m.chunks < SAN_XMSG_WINDOW / 4)))
        return false;
    xc->to_return = 0;
    san_xconn_send_or_fail(xc, &m, NULL, 0);
    return true;
}
