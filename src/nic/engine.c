/* The NIC's engines: one thread per connection executes the work requests of both its endpoints.
 *
 * A pass over an endpoint reads its send queue in order (receives are taken when a send from the
 * peer needs one), copies each entry out of the shared region before looking at it, checks it,
 * and executes it: every local piece by lkey (the endpoint's owner, inside the registration,
 * device writes only into memory registered for writing: else -EFAULT), the remote side by rkey
 * (current, registered by this endpoint's peer, access covering the operation, inside the
 * registration: else -EACCES), all of it before any byte moves. Bytes move through the NIC's DMA
 * adapter, a piece of at most max_length at a time: a scatter-gather list of the registration's
 * MDL (map registers bounce what a 32-bit NIC cannot reach), then the bus's read or write of each
 * element, which reaches proxy memory in the RAM image and a client's own pages through its
 * process (mdl/owner). Uses of the registrations are held from the check to the last byte, so the
 * last deregistration of memory in flight is -EBUSY.
 *
 * Errors are one-way: the failing request completes with its status, the endpoint enters the
 * error state, and every later request completes with -ECANCELED (-ECONNRESET when the peer went
 * away). Completions are posted only where the completion queue has room: an endpoint whose
 * owner does not poll stops, and a send to it waits. A send waits for a receive, never dropped.
 *
 * Sleeping: an idle engine polls (common/spin.h: bursts of reads, then a yield) for spin_us, then
 * sets engine_sleeping in both regions and sleeps on both doorbells at once (futex_waitv); posters
 * wake it only when they see the flag. The loop thread wakes it the same way (close, state
 * changes).
 *
 * Locking: pair->lock is held by the engine while it services the pair and by the loop when it
 * closes an endpoint, so an endpoint's registrations are never looked at after its owner closed
 * it. Uses of registrations go through the registration table's lock (mr). */
#include "nic/nic.h"

#include <san/dma.h>

#include <errno.h>
#include <linux/futex.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "common/clock.h"
#include "common/spin.h"
#include "dma/dma.h"

#ifndef SYS_futex_waitv
#define SYS_futex_waitv 449
#endif
#define FUTEX2_U32 0x02

#define BATCH 16         /* work requests of one endpoint per pass */
#define CHUNK (64 << 10) /* bytes moved per step of a transfer */

struct futex_waiter {
    uint64_t val;
    uint64_t uaddr;
    uint32_t flags;
    uint32_t reserved;
};

struct san_nic_pair {
    struct san_nic *nic;
    struct san_nic_ep *ep[2];
    pthread_t thread;
    pthread_mutex_t lock;
    bool done[2];          /* the engine has let go of ep[i] */
    uint32_t seen[2][3];   /* sq_tail, rq_tail, cq_head when the engine last found nothing */
    unsigned char *bounce; /* CHUNK bytes */
};

static void futex_wake(_Atomic uint32_t *word)
{
    syscall(SYS_futex, word, FUTEX_WAKE, INT32_MAX, NULL, NULL, 0);
}

void san_nic_kick(struct san_nic_ep *ep)
{
    atomic_fetch_add(&ep->q->doorbell, 1);
    futex_wake(&ep->q->doorbell);
}

uint32_t san_nic_cq_room(struct san_nic_ep *ep)
{
    if (atomic_load_explicit(&ep->lingering, memory_order_relaxed))
        return SAN_EPQ_CQ; /* nobody polls it: its completions are dropped */
    uint32_t head = atomic_load_explicit(&ep->q->cq_head, memory_order_acquire);
    uint32_t used = ep->cq_tail - head;
    return used > SAN_EPQ_CQ ? 0 : SAN_EPQ_CQ - used;
}

void san_nic_complete(struct san_nic_ep *ep, uint64_t wr_id, int32_t status, uint32_t op,
                      uint32_t len)
{
    san_nic_complete_flags(ep, wr_id, status, op, len, 0);
}

void san_nic_complete_flags(struct san_nic_ep *ep, uint64_t wr_id, int32_t status, uint32_t op,
                            uint32_t len, uint32_t flags)
{
    if (atomic_load_explicit(&ep->lingering, memory_order_relaxed))
        return; /* its owner is gone */
    struct san_epq_cqe *c = &san_epq_cq(ep->q)[ep->cq_tail & (SAN_EPQ_CQ - 1)];
    *c = (struct san_epq_cqe){
        .wr_id = wr_id, .status = status, .opcode = op, .byte_len = len, .flags = flags};
    ep->cq_tail++;
    atomic_store_explicit(&ep->q->cq_tail, ep->cq_tail, memory_order_release);
    atomic_fetch_add_explicit(&ep->q->cq_seq, 1, memory_order_seq_cst);
    if (atomic_load_explicit(&ep->q->client_waiting, memory_order_seq_cst))
        futex_wake(&ep->q->cq_seq);
    if (atomic_load_explicit(&ep->q->notify_armed, memory_order_seq_cst) &&
        !atomic_exchange_explicit(&ep->q->efd_signaled, 1, memory_order_seq_cst)) {
        uint64_t one = 1;
        if (write(ep->efd, &one, sizeof(one)) < 0) {
        }
    }
}

/* The first error: the endpoint stops; its client learns it from the region. */
void san_nic_enter_error(struct san_nic_ep *ep, int32_t err)
{
    if (ep->state == SAN_EPQ_ERROR)
        return;
    ep->err = err; /* before the state: a listing reads them in the other order */
    ep->state = SAN_EPQ_ERROR;
    atomic_store(&ep->q->state_err, err);
    atomic_store_explicit(&ep->q->state, SAN_EPQ_ERROR, memory_order_release);
    futex_wake(&ep->q->state);
}

/* How many entries the client says it posted past head, or -1 for a lie. */
int san_nic_posted(_Atomic uint32_t *tail, uint32_t head, uint32_t depth)
{
    uint32_t n = atomic_load_explicit(tail, memory_order_acquire) - head;
    return n > depth ? -1 : (int)n;
}

void san_nic_put_pieces(struct san_nic *nic, struct san_nic_piece *p, unsigned n)
{
    for (unsigned i = 0; i < n; i++)
        san_regtab_put(nic->reg, p[i].e);
}

/* Checks the local pieces of a request against ep's owner: lkey its own, the range inside the
 * registration, write access when the NIC writes them. Takes a use of each. 0 or -EFAULT. */
int san_nic_local_pieces(struct san_nic_ep *ep, const struct san_epq_wqe *w, bool write,
                         struct san_nic_piece *out, uint64_t *total)
{
    *total = 0;
    for (uint32_t i = 0; i < w->nsge; i++) {
        const struct san_epq_sge *s = &w->sge[i];
        struct san_regtab_entry *e =
            s->len ? san_regtab_get_lkey(ep->nic->reg, ep->set, s->lkey) : NULL;
        if (s->len &&
            (!e || s->va < e->r.start || s->va - e->r.start > e->r.len ||
             s->len > e->r.len - (s->va - e->r.start) || (write && !(e->access & SAN_MEM_WRITE)))) {
            san_regtab_put(ep->nic->reg, e);
            san_nic_put_pieces(ep->nic, out, i);
            return -EFAULT;
        }
        out[i] = (struct san_nic_piece){.e = e, .va = s->va, .len = s->len};
        *total += s->len;
    }
    return 0;
}

int san_nic_remote(struct san_nic *nic, const struct san_regtab_set *owner, uint32_t rkey,
                   uint64_t va, uint64_t len, bool write, struct san_nic_piece *out)
{
    struct san_regtab_entry *e = san_regtab_get_rkey(nic->reg, rkey);
    unsigned need = write ? SAN_MEM_WRITE : SAN_MEM_READ;
    if (!e || e->set != owner || !e->rdma || (e->access & need) != need || va < e->r.start ||
        va - e->r.start > e->r.len || len > e->r.len - (va - e->r.start)) {
        san_regtab_put(nic->reg, e);
        return -EACCES;
    }
    *out = (struct san_nic_piece){.e = e, .va = va, .len = len};
    return 0;
}

/* The remote side of an RDMA request: a descriptor of this host, the rkey current and the
 * peer's, access, range. -EACCES. */
static int remote_piece(struct san_nic_ep *ep, const struct san_epq_wqe *w, uint64_t len,
                        bool write, struct san_nic_piece *out)
{
    if (w->remote_host != ep->nic->cfg.host_id)
        return -EACCES; /* a descriptor of another host: not this NIC's to honour */
    return san_nic_remote(ep->nic, ep->peer->set, w->rkey, w->remote_va, len, write, out);
}

/* Moves len bytes between a registration's memory at va and buf through the adapter: from
 * memory (to the device) when reading, else into memory. */
static int dma_move(struct san_nic *nic, struct san_regtab_entry *e, uint64_t va, void *buf,
                    size_t len, bool reading)
{
    struct san_dma_adapter *a = nic->adapter;
    size_t off = (size_t)(va - san_mdl_va(e->mdl)), done = 0;
    while (done < len) {
        size_t n = len - done;
        if (n > nic->cfg.max_length)
            n = nic->cfg.max_length;
        struct san_sg_list *sg;
        int err;
        while ((err = a->ops->get_scatter_gather_list(a, e->mdl, off + done, n, reading, &sg)) ==
               -EAGAIN)
            sched_yield();
        if (err)
            return err;
        size_t at = 0;
        for (uint32_t i = 0; i < sg->nr && !err; i++) {
            char *p = (char *)buf + done + at;
            err = reading ? san_dma_read(a, sg->elem[i].addr, p, sg->elem[i].length)
                          : san_dma_write(a, sg->elem[i].addr, p, sg->elem[i].length);
            at += sg->elem[i].length;
        }
        a->ops->put_scatter_gather_list(a, sg, reading);
        if (err)
            return err;
        done += n;
    }
    return 0;
}

/* The host bytes of [va, va+n) of a piece's registration when the NIC reaches them directly
 * (proxy memory within its address width), else NULL. */
static uint8_t *direct(struct san_nic *nic, const struct san_nic_piece *pc, uint64_t va, uint64_t n)
{
    const struct san_mdl *mdl = pc->e->mdl;
    return san_dma_direct(nic->adapter, mdl, va - mdl->page_va, n);
}

/* Copies total bytes from the src pieces to the dst pieces. Where both sides are proxy memory the
 * NIC reaches directly, one memcpy moves a whole run; where one side is, the other side's DMA
 * reads or writes it in place; otherwise bytes go through the engine's bounce buffer, CHUNK at a
 * time. 0, or -EFAULT with *src_failed saying which side failed. */
static int transfer(struct san_nic_pair *p, const struct san_nic_piece *src,
                    const struct san_nic_piece *dst, uint64_t total, bool *src_failed)
{
    struct san_nic *nic = p->nic;
    unsigned si = 0, di = 0;
    uint64_t so = 0, doff = 0;
    *src_failed = false;
    for (uint64_t moved = 0; moved < total;) {
        while (src[si].len == so) {
            si++;
            so = 0;
        }
        while (dst[di].len == doff) {
            di++;
            doff = 0;
        }
        uint64_t n = src[si].len - so < dst[di].len - doff ? src[si].len - so : dst[di].len - doff;
        if (n > total - moved)
            n = total - moved;
        uint64_t sva = src[si].va + so, dva = dst[di].va + doff;
        uint8_t *s = direct(nic, &src[si], sva, n), *d = direct(nic, &dst[di], dva, n);
        if (s && d) {
            memcpy(d, s, n);
        } else if (d) {
            if (dma_move(nic, src[si].e, sva, d, (size_t)n, true))
                return *src_failed = true, -EFAULT;
        } else if (s) {
            if (dma_move(nic, dst[di].e, dva, s, (size_t)n, false))
                return -EFAULT;
        } else {
            if (n > CHUNK)
                n = CHUNK;
            if (dma_move(nic, src[si].e, sva, p->bounce, (size_t)n, true))
                return *src_failed = true, -EFAULT;
            if (dma_move(nic, dst[di].e, dva, p->bounce, (size_t)n, false))
                return -EFAULT;
        }
        so += n;
        doff += n;
        moved += n;
    }
    return 0;
}

int san_nic_pieces_io(struct san_nic *nic, const struct san_nic_piece *pc, unsigned n, uint64_t off,
                      void *buf, uint64_t len, bool to_memory)
{
    uint64_t at = 0; /* where piece i starts in the request */
    for (unsigned i = 0; i < n && len; at += pc[i].len, i++) {
        if (off >= at + pc[i].len)
            continue;
        uint64_t in = off - at, k = pc[i].len - in < len ? pc[i].len - in : len;
        uint8_t *d = direct(nic, &pc[i], pc[i].va + in, k);
        if (d) {
            if (to_memory)
                memcpy(d, buf, k);
            else
                memcpy(buf, d, k);
        } else if (dma_move(nic, pc[i].e, pc[i].va + in, buf, (size_t)k, !to_memory)) {
            return -EFAULT;
        }
        buf = (char *)buf + k;
        off += k;
        len -= k;
    }
    return len ? -EFAULT : 0;
}

bool san_nic_valid_wqe(const struct san_epq_wqe *w, bool recv)
{
    if (w->nsge > SAN_EPQ_SGE || (w->flags & ~(uint32_t)(SAN_EPQ_UNSIGNALED | SAN_EPQ_NODATA)))
        return false;
    if (recv)
        return w->opcode == SAN_EPQ_RECV;
    return w->opcode == SAN_EPQ_SEND || w->opcode == SAN_EPQ_WRITE || w->opcode == SAN_EPQ_READ;
}

void san_nic_count(struct san_nic_ep *ep, uint64_t bytes)
{
    atomic_fetch_add_explicit(&ep->nic->ops, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&ep->nic->bytes, bytes, memory_order_relaxed);
    /* The engine alone writes them; a listing reads them on the loop's thread. */
    atomic_store_explicit(&ep->ops, atomic_load_explicit(&ep->ops, memory_order_relaxed) + 1,
                          memory_order_relaxed);
    atomic_store_explicit(&ep->bytes,
                          atomic_load_explicit(&ep->bytes, memory_order_relaxed) + bytes,
                          memory_order_relaxed);
}

/* A lingering endpoint has nothing left to do: the loop closes it. */
static void linger_over(struct san_nic_ep *ep)
{
    if (atomic_exchange(&ep->linger_over, true))
        return;
    uint64_t one = 1;
    if (write(ep->nic->linger_efd, &one, sizeof(one)) < 0) {
    }
}

/* A send: needs a receive of the peer. 1 done, 0 must wait. */
static int do_send(struct san_nic_pair *p, struct san_nic_ep *ep, const struct san_epq_wqe *w)
{
    struct san_nic_ep *peer = ep->peer;
    bool signaled = !(w->flags & SAN_EPQ_UNSIGNALED);
    if (peer->state == SAN_EPQ_ERROR) {
        san_nic_enter_error(ep, -ECONNRESET);
        san_nic_complete(ep, w->wr_id, -ECONNRESET, SAN_EPQ_SEND, 0);
        return 1;
    }
    if (atomic_load_explicit(&peer->lingering, memory_order_relaxed) &&
        !(w->flags & SAN_EPQ_NODATA)) {
        /* Data for an owner that is gone: nobody will read it. TCP answers data arriving after
         * close with a reset, and so does the NIC: the lingering ends. */
        linger_over(peer);
        san_nic_enter_error(ep, -ECONNRESET);
        san_nic_complete(ep, w->wr_id, -ECONNRESET, SAN_EPQ_SEND, 0);
        return 1;
    }
    int n = san_nic_posted(&peer->q->rq_tail, peer->rq_head, SAN_EPQ_RQ);
    if (n < 0) {
        san_nic_enter_error(peer, -EFAULT); /* the peer's own queue is garbage */
        return 0;
    }
    if (!n || !san_nic_cq_room(peer))
        return 0;
    struct san_epq_wqe r = san_epq_rq(peer->q)[peer->rq_head & (SAN_EPQ_RQ - 1)];
    peer->rq_head++;
    atomic_store_explicit(&peer->q->rq_head, peer->rq_head, memory_order_release);
    struct san_nic_piece src[SAN_EPQ_SGE], dst[SAN_EPQ_SGE];
    uint64_t total, room;
    if (!san_nic_valid_wqe(&r, true) || san_nic_local_pieces(peer, &r, true, dst, &room)) {
        san_nic_complete(peer, r.wr_id, -EFAULT, SAN_EPQ_RECV, 0);
        san_nic_enter_error(peer, -EFAULT);
        san_nic_complete(ep, w->wr_id, -EACCES, SAN_EPQ_SEND, 0);
        san_nic_enter_error(ep, -EACCES);
        return 1;
    }
    if (san_nic_local_pieces(ep, w, false, src, &total)) {
        san_nic_put_pieces(p->nic, dst, r.nsge);
        san_nic_complete(ep, w->wr_id, -EFAULT, SAN_EPQ_SEND, 0);
        san_nic_enter_error(ep, -EFAULT);
        /* The receive it took goes back to the peer as flushed by a failed sender? No: it
         * completes with the sender's reset, and the peer's endpoint goes on. */
        san_nic_complete(peer, r.wr_id, -ECONNRESET, SAN_EPQ_RECV, 0);
        san_nic_enter_error(peer, -ECONNRESET);
        return 1;
    }
    int status = 0;
    bool src_failed = false;
    if (total > room || total > UINT32_MAX)
        status = -EMSGSIZE;
    else if (transfer(p, src, dst, total, &src_failed))
        status = -EFAULT;
    san_nic_put_pieces(p->nic, src, w->nsge);
    san_nic_put_pieces(p->nic, dst, r.nsge);
    if (status == -EMSGSIZE) {
        san_nic_complete(peer, r.wr_id, -EMSGSIZE, SAN_EPQ_RECV, 0);
        san_nic_enter_error(peer, -EMSGSIZE);
        san_nic_complete(ep, w->wr_id, -EMSGSIZE, SAN_EPQ_SEND, 0);
        san_nic_enter_error(ep, -EMSGSIZE);
        return 1;
    }
    if (status) {
        san_nic_complete(peer, r.wr_id, src_failed ? -ECONNRESET : -EFAULT, SAN_EPQ_RECV, 0);
        san_nic_enter_error(peer, src_failed ? -ECONNRESET : -EFAULT);
        san_nic_complete(ep, w->wr_id, src_failed ? -EFAULT : -EACCES, SAN_EPQ_SEND, 0);
        san_nic_enter_error(ep, src_failed ? -EFAULT : -EACCES);
        return 1;
    }
    san_nic_count(ep, total);
    san_nic_complete_flags(peer, r.wr_id, 0, SAN_EPQ_RECV, (uint32_t)total,
                           w->flags & SAN_EPQ_NODATA ? SAN_EPQ_CQE_NODATA : 0);
    if (signaled)
        san_nic_complete(ep, w->wr_id, 0, SAN_EPQ_SEND, (uint32_t)total);
    return 1;
}

static void do_rdma(struct san_nic_pair *p, struct san_nic_ep *ep, const struct san_epq_wqe *w)
{
    bool write = w->opcode == SAN_EPQ_WRITE, signaled = !(w->flags & SAN_EPQ_UNSIGNALED);
    struct san_nic_piece local[SAN_EPQ_SGE], remote;
    uint64_t total;
    int status = 0;
    bool src_failed = false;
    if (ep->peer->state == SAN_EPQ_ERROR && ep->peer->err == -ECONNRESET) {
        status = -ECONNRESET;
    } else if (san_nic_local_pieces(ep, w, !write, local, &total)) {
        status = -EFAULT;
    } else if (total > UINT32_MAX || remote_piece(ep, w, total, write, &remote)) {
        san_nic_put_pieces(p->nic, local, w->nsge);
        status = -EACCES;
    } else {
        if (write && transfer(p, local, &remote, total, &src_failed))
            status = src_failed ? -EFAULT : -EACCES;
        else if (!write && transfer(p, &remote, local, total, &src_failed))
            status = src_failed ? -EACCES : -EFAULT;
        san_nic_put_pieces(p->nic, local, w->nsge);
        san_regtab_put(p->nic->reg, remote.e);
    }
    uint32_t op = write ? SAN_EPQ_WRITE : SAN_EPQ_READ;
    if (status) {
        san_nic_complete(ep, w->wr_id, status, op, 0);
        san_nic_enter_error(ep, status);
        return;
    }
    san_nic_count(ep, total);
    if (signaled)
        san_nic_complete(ep, w->wr_id, 0, op, (uint32_t)total);
}

/* Completes everything posted on ep with the flush status. */
bool san_nic_flush(struct san_nic_ep *ep)
{
    int32_t st = ep->err == -ECONNRESET ? -ECONNRESET : -ECANCELED;
    bool did = false;
    int n;
    while ((n = san_nic_posted(&ep->q->sq_tail, ep->sq_head, SAN_EPQ_SQ)) > 0 &&
           san_nic_cq_room(ep)) {
        struct san_epq_wqe w = san_epq_sq(ep->q)[ep->sq_head & (SAN_EPQ_SQ - 1)];
        ep->sq_head++;
        uint32_t op = w.opcode >= SAN_EPQ_SEND && w.opcode <= SAN_EPQ_READ ? w.opcode : 0;
        san_nic_complete(ep, w.wr_id, st, op, 0);
        did = true;
    }
    while ((n = san_nic_posted(&ep->q->rq_tail, ep->rq_head, SAN_EPQ_RQ)) > 0 &&
           san_nic_cq_room(ep)) {
        struct san_epq_wqe w = san_epq_rq(ep->q)[ep->rq_head & (SAN_EPQ_RQ - 1)];
        ep->rq_head++;
        san_nic_complete(ep, w.wr_id, st, SAN_EPQ_RECV, 0);
        did = true;
    }
    atomic_store_explicit(&ep->q->sq_head, ep->sq_head, memory_order_release);
    atomic_store_explicit(&ep->q->rq_head, ep->rq_head, memory_order_release);
    return did;
}

/* A lingering endpoint's send queue is empty: its peer learns that the other side's owner is
 * gone and sent everything (a receive completes with -EPIPE, in order after the data), once it
 * has a receive posted. The peer stays connected: it may still RDMA-read what it was offered. */
static bool send_eof(struct san_nic_ep *ep)
{
    struct san_nic_ep *peer = ep->peer;
    int n = san_nic_posted(&peer->q->rq_tail, peer->rq_head, SAN_EPQ_RQ);
    if (n < 0) {
        san_nic_enter_error(peer, -EFAULT);
        return true;
    }
    if (!n || !san_nic_cq_room(peer))
        return false;
    struct san_epq_wqe r = san_epq_rq(peer->q)[peer->rq_head & (SAN_EPQ_RQ - 1)];
    peer->rq_head++;
    atomic_store_explicit(&peer->q->rq_head, peer->rq_head, memory_order_release);
    san_nic_complete(peer, r.wr_id, -EPIPE, SAN_EPQ_RECV, 0);
    ep->eof_sent = true;
    return true;
}

/* One pass over ep's send queue. Whether anything happened. */
static bool service(struct san_nic_pair *p, int side)
{
    struct san_nic_ep *ep = p->ep[side], *peer = p->ep[!side];
    if (p->done[side])
        return false;
    bool lingering = atomic_load_explicit(&ep->lingering, memory_order_relaxed);
    if (lingering &&
        (p->done[!side] || ep->state == SAN_EPQ_ERROR || peer->state == SAN_EPQ_ERROR)) {
        linger_over(ep); /* the peer closed or failed: nobody reads what is left */
        if (ep->state == SAN_EPQ_ERROR)
            san_nic_flush(ep);
        return false;
    }
    if (lingering && ep->eof_sent)
        return false; /* what its owner posted is delivered; later posts are nobody's */
    if (ep->state == SAN_EPQ_ERROR)
        return san_nic_flush(ep);
    bool did = false;
    for (int i = 0; i < BATCH; i++) {
        int n = san_nic_posted(&ep->q->sq_tail, ep->sq_head, SAN_EPQ_SQ);
        if (n < 0) {
            san_nic_enter_error(ep, -EFAULT);
            return true;
        }
        if (!n || !san_nic_cq_room(ep))
            break;
        struct san_epq_wqe w = san_epq_sq(ep->q)[ep->sq_head & (SAN_EPQ_SQ - 1)];
        if (!san_nic_valid_wqe(&w, false)) {
            ep->sq_head++;
            san_nic_complete(ep, w.wr_id, -EINVAL, 0, 0);
            san_nic_enter_error(ep, -EINVAL);
            did = true;
            break;
        }
        if (w.opcode == SAN_EPQ_SEND) {
            if (p->done[!side]) {
                ep->sq_head++;
                san_nic_complete(ep, w.wr_id, -ECONNRESET, SAN_EPQ_SEND, 0);
                san_nic_enter_error(ep, -ECONNRESET);
                did = true;
                break;
            }
            if (!do_send(p, ep, &w))
                break; /* waits for the peer's receive */
        } else {
            do_rdma(p, ep, &w);
        }
        ep->sq_head++;
        did = true;
        if (ep->state == SAN_EPQ_ERROR)
            break;
    }
    atomic_store_explicit(&ep->q->sq_head, ep->sq_head, memory_order_release);
    if (lingering && ep->state != SAN_EPQ_ERROR &&
        !san_nic_posted(&ep->q->sq_tail, ep->sq_head, SAN_EPQ_SQ))
        did |= send_eof(ep);
    return did;
}

static void snapshot(struct san_nic_pair *p, uint32_t out[2][3])
{
    for (int s = 0; s < 2; s++) {
        struct san_epq *q = p->ep[s]->q;
        out[s][0] = atomic_load_explicit(&q->sq_tail, memory_order_seq_cst);
        out[s][1] = atomic_load_explicit(&q->rq_tail, memory_order_seq_cst);
        out[s][2] = atomic_load_explicit(&q->cq_head, memory_order_seq_cst);
    }
}

/* Whether anything changed since the engine last found nothing to do: a post, a poll that made
 * room, a close. */
static bool pending(struct san_nic_pair *p)
{
    uint32_t now[2][3];
    snapshot(p, now);
    for (int s = 0; s < 2; s++)
        if (!p->done[s] && atomic_load(&p->ep[s]->closing))
            return true;
    return memcmp(now, p->seen, sizeof(now)) != 0;
}

static bool pending_look(void *p)
{
    return pending(p);
}

static void sleep_on(struct san_nic_pair *p)
{
    struct futex_waiter w[2];
    unsigned n = 0;
    for (int s = 0; s < 2; s++) {
        if (p->done[s])
            continue;
        struct san_epq *q = p->ep[s]->q;
        uint32_t v = atomic_load(&q->doorbell);
        atomic_store_explicit(&q->engine_sleeping, 1, memory_order_seq_cst);
        w[n++] =
            (struct futex_waiter){.val = v, .uaddr = (uintptr_t)&q->doorbell, .flags = FUTEX2_U32};
    }
    if (!pending(p) && n) {
        struct timespec to;
        clock_gettime(CLOCK_MONOTONIC, &to);
        to.tv_sec += 1; /* a safety net only: every poster that sees the flag wakes us */
        if (syscall(SYS_futex_waitv, w, n, 0, &to, CLOCK_MONOTONIC) < 0 && errno == ENOSYS) {
            struct timespec ms = {0, 1000000};
            nanosleep(&ms, NULL);
        }
    }
    for (int s = 0; s < 2; s++)
        if (!p->done[s])
            atomic_store_explicit(&p->ep[s]->q->engine_sleeping, 0, memory_order_relaxed);
}

static void pair_free(struct san_nic_pair *p)
{
    for (int s = 0; s < 2; s++)
        san_nic_ep_put(p->ep[s]);
    pthread_mutex_destroy(&p->lock);
    free(p->bounce);
    free(p);
}

/* The closes since the last pass, both taken before either side is served: an owner that let go
 * has its peer reset, and nothing of it (its receives, its registrations, which its owner may
 * free as soon as the close returned) is touched again, not even by its peer's requests. Whether
 * there was one. */
static bool take_closes(struct san_nic_pair *p)
{
    bool did = false;
    for (int s = 0; s < 2; s++) {
        if (p->done[s] || !atomic_load(&p->ep[s]->closing))
            continue;
        p->done[s] = true;
        if (!p->done[!s])
            san_nic_enter_error(p->ep[!s], -ECONNRESET);
        did = true;
    }
    return did;
}

/* One pass over both endpoints; whether anything happened. */
static bool step(struct san_nic_pair *p, uint32_t before[2][3])
{
    snapshot(p, before);
    pthread_mutex_lock(&p->lock);
    bool did = take_closes(p);
    did |= service(p, 0);
    did |= service(p, 1);
    pthread_mutex_unlock(&p->lock);
    return did;
}

int san_nic_step(struct san_nic_pair *p)
{
    uint32_t before[2][3];
    bool did = step(p, before);
    if (p->done[0] && p->done[1]) {
        pair_free(p);
        return -1;
    }
    return did;
}

static void *engine_main(void *arg)
{
    struct san_nic_pair *p = arg;
    uint64_t spin_ns = (uint64_t)p->nic->cfg.spin_us * 1000, idle_since = san_now_ns();
    while (!p->done[0] || !p->done[1]) {
        uint32_t before[2][3];
        if (step(p, before)) {
            idle_since = san_now_ns();
            continue;
        }
        memcpy(p->seen, before, sizeof(before)); /* what this pass looked at */
        bool ready;
        do
            ready = san_spin_look(pending_look, p);
        while (!ready && san_now_ns() - idle_since < spin_ns);
        if (!ready)
            sleep_on(p);
        idle_since = san_now_ns();
    }
    pair_free(p);
    return NULL;
}

int san_nic_pair_start(struct san_nic *nic, struct san_nic_ep *a, struct san_nic_ep *b)
{
    struct san_nic_pair *p = calloc(1, sizeof(*p));
    if (!p)
        return -ENOMEM;
    p->bounce = malloc(CHUNK);
    if (!p->bounce || pthread_mutex_init(&p->lock, NULL)) {
        free(p->bounce);
        free(p);
        return -ENOMEM;
    }
    p->nic = nic;
    p->ep[0] = a;
    p->ep[1] = b;
    a->pair = b->pair = p;
    atomic_fetch_add(&a->refs, 1);
    atomic_fetch_add(&b->refs, 1);
    if (nic->cfg.manual)
        return 0; /* driven by san_nic_step */
    pthread_attr_t attr;
    sigset_t all, old;
    int err = pthread_attr_init(&attr);
    if (!err) {
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        pthread_attr_setstacksize(&attr, 256 << 10);
        sigfillset(&all);
        pthread_sigmask(SIG_SETMASK, &all, &old); /* signals stay with the loop's signalfd */
        err = pthread_create(&p->thread, &attr, engine_main, p);
        pthread_sigmask(SIG_SETMASK, &old, NULL);
        pthread_attr_destroy(&attr);
    }
    if (err) {
        a->pair = b->pair = NULL;
        atomic_fetch_sub(&a->refs, 1);
        atomic_fetch_sub(&b->refs, 1);
        pthread_mutex_destroy(&p->lock);
        free(p->bounce);
        free(p);
        return -ENOBUFS;
    }
    return 0;
}

bool san_nic_pair_linger(struct san_nic_ep *ep)
{
    struct san_nic_pair *p = ep->pair;
    int side = p->ep[1] == ep;
    struct san_nic_ep *peer = p->ep[!side];
    bool ok = false;
    pthread_mutex_lock(&p->lock);
    if (p->done[0] || p->done[1] || ep->state != SAN_EPQ_CONNECTED ||
        peer->state != SAN_EPQ_CONNECTED || atomic_load(&peer->closing) ||
        atomic_load(&peer->lingering))
        goto out;
    /* Data the owner never polled: TCP answers a close with unread data by a reset. The queue is
     * the owner's to scribble on, and so only its own endpoint's fate. */
    uint32_t head = atomic_load_explicit(&ep->q->cq_head, memory_order_acquire);
    if (ep->cq_tail - head > SAN_EPQ_CQ)
        goto out;
    for (uint32_t i = head; i != ep->cq_tail; i++) {
        const struct san_epq_cqe *c = &san_epq_cq(ep->q)[i & (SAN_EPQ_CQ - 1)];
        if (c->opcode == SAN_EPQ_RECV && !c->status && !(c->flags & SAN_EPQ_CQE_NODATA))
            goto out;
    }
    atomic_store(&ep->lingering, true);
    ok = true;
out:
    pthread_mutex_unlock(&p->lock);
    if (ok)
        san_nic_kick(ep);
    return ok;
}

/* The loop's side of closing a paired endpoint (nic.c): under the pair's lock, so the engine is
 * between requests and never looks at the endpoint's registrations again. */
void san_nic_pair_close(struct san_nic_ep *ep)
{
    struct san_nic_pair *p = ep->pair;
    pthread_mutex_lock(&p->lock);
    atomic_store(&ep->closing, true);
    pthread_mutex_unlock(&p->lock);
    san_nic_kick(ep);
}
