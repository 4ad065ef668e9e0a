/* libsan's endpoints: listen, connect, accept, close, and the data path on the queues the daemon's
 * NIC shares with us (proto/queue.h).
 *
 * Control (listen, connect, accept, close) is a round trip each; a connect then waits for the
 * acceptor on the region's state word (a futex the daemon wakes). The data path makes no system
 * call while the NIC is awake: posting writes an entry and publishes the tail (release), then
 * wakes the NIC's engine only if it said it sleeps; polling reads completions up to the NIC's tail
 * (acquire) and publishes the head. san_wait spins briefly, then sleeps on the completion counter.
 * Everything the daemon writes is trusted (it is the NIC); nothing here is trusted by it.
 *
 * Locking: per endpoint, sq_lock serialises posters (send and receive queues), cq_lock pollers;
 * a context's lists of endpoints and listeners have their own lock. */
#include <san/nic.h>

#include <arpa/inet.h>
#include <errno.h>
#include <linux/futex.h>
#include <poll.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <netinet/in.h>
#include <time.h>
#include <unistd.h>

#include "client/defaults.h"
#include "client/desc.h"
#include "client/ep.h"
#include "common/clock.h"
#include "common/spin.h"
#include "proto/queue.h"

#define WAIT_SPIN_NS 20000u /* san_wait polls this long before it sleeps */

struct san_listener {
    struct san_listener *next;
    struct san_ctx *ctx;
    uint64_t handle;
    int efd;
};

#define EP_MAPS 8

struct san_ep {
    struct san_ep *next;
    struct san_ctx *ctx;
    uint64_t handle;
    struct san_epq *q;
    int efd;
    pthread_mutex_t sq_lock, cq_lock;
    uint32_t sq_tail, rq_tail, cq_head; /* ours: the region's copies are for the NIC */
    /* The eventfd's users: san_ep_fd arms it for good; san_ep_wait_arm for one wait (under
     * cq_lock), so that a client that polls while nobody sleeps costs the NIC no write. */
    bool fd_given;
    uint32_t wait_arms;
    /* Made by san_connect_start and its outcome not yet taken by san_connect_finish (under
     * cq_lock): while the daemon's outcome waits for it the eventfd stays readable. */
    bool connecting;
    /* san_rdma_map's mappings of the peer's allocations (under cq_lock), until ep_free. */
    struct ep_map {
        const uint8_t *base;
        size_t bytes;
        uint64_t id;
    } maps[EP_MAPS];
    unsigned nmaps;
};

int san_nic_objs_init(struct san_nic_objs *o)
{
    o->eps = NULL;
    o->listeners = NULL;
    return -pthread_mutex_init(&o->lock, NULL);
}

static void ep_free(struct san_ep *ep)
{
    for (unsigned i = 0; i < ep->nmaps; i++)
        munmap((void *)ep->maps[i].base, ep->maps[i].bytes);
    munmap(ep->q, SAN_EPQ_SIZE);
    close(ep->efd);
    pthread_mutex_destroy(&ep->sq_lock);
    pthread_mutex_destroy(&ep->cq_lock);
    free(ep);
}

void san_nic_forget_all(struct san_ctx *ctx, struct san_nic_objs *o)
{
    (void)ctx;
    while (o->eps) {
        struct san_ep *ep = o->eps;
        o->eps = ep->next;
        ep_free(ep);
    }
    while (o->listeners) {
        struct san_listener *l = o->listeners;
        o->listeners = l->next;
        close(l->efd);
        free(l);
    }
    pthread_mutex_destroy(&o->lock);
}

static int to_wire(const struct sockaddr *sa, socklen_t len, struct san_wire_addr *w)
{
    memset(w, 0, sizeof(*w));
    if (!sa)
        return -EINVAL;
    if (sa->sa_family == AF_INET && len == sizeof(struct sockaddr_in)) {
        const struct sockaddr_in *s4 = (const void *)sa;
        w->ip[10] = w->ip[11] = 0xff;
        memcpy(w->ip + 12, &s4->sin_addr, 4);
        w->port = ntohs(s4->sin_port);
    } else if (sa->sa_family == AF_INET6 && len == sizeof(struct sockaddr_in6)) {
        const struct sockaddr_in6 *s6 = (const void *)sa;
        memcpy(w->ip, &s6->sin6_addr, 16);
        w->port = ntohs(s6->sin6_port);
    } else {
        return -EINVAL;
    }
    return w->port ? 0 : -EINVAL;
}

static void futex_wake(_Atomic uint32_t *word)
{
    syscall(SYS_futex, word, FUTEX_WAKE, INT32_MAX, NULL, NULL, 0);
}

/* Sleeps while *word == val, at most until deadline (ns, 0: forever). */
static void futex_wait_until(_Atomic uint32_t *word, uint32_t val, uint64_t deadline)
{
    struct timespec ts, *tp = NULL;
    if (deadline) {
        uint64_t now = san_now_ns();
        if (now >= deadline)
            return;
        uint64_t left = deadline - now;
        ts.tv_sec = (time_t)(left / 1000000000u);
        ts.tv_nsec = (long)(left % 1000000000u);
        tp = &ts;
    }
    syscall(SYS_futex, word, FUTEX_WAIT, val, tp, NULL, 0);
}

static uint64_t deadline_of(int timeout_ms)
{
    return timeout_ms < 0 ? 0 : san_now_ns() + (uint64_t)timeout_ms * 1000000u;
}

int san_listen(struct san_ctx *ctx, const struct sockaddr *addr, socklen_t addrlen, int backlog,
               struct san_listener **out)
{
    struct san_msg req, rep;
    int fd;
    unsigned n;

    if (!ctx || !out || backlog < 1)
        return -EINVAL;
    *out = NULL;
    san_proto_init(&req, SAN_OP_LISTEN, 0);
    if (to_wire(addr, addrlen, &req.u.listen_req.addr))
        return -EINVAL;
    req.u.listen_req.backlog = (uint32_t)backlog;
    int err = san_ctx_call(ctx, &req, &rep, &fd, 1, &n);
    if (err)
        return err;
    if (n != 1)
        return -EPROTO;
    struct san_listener *l = calloc(1, sizeof(*l));
    if (!l) {
        close(fd);
        return -ENOMEM; /* the daemon's listener goes with the context */
    }
    l->ctx = ctx;
    l->handle = rep.u.handle_rep.handle;
    l->efd = fd;
    struct san_nic_objs *o = san_ctx_nic(ctx);
    pthread_mutex_lock(&o->lock);
    l->next = o->listeners;
    o->listeners = l;
    pthread_mutex_unlock(&o->lock);
    *out = l;
    return 0;
}

int san_listener_fd(const struct san_listener *l)
{
    return l ? l->efd : -EINVAL;
}

void san_listener_close(struct san_listener *l)
{
    if (!l)
        return;
    struct san_nic_objs *o = san_ctx_nic(l->ctx);
    pthread_mutex_lock(&o->lock);
    for (struct san_listener **p = &o->listeners; *p; p = &(*p)->next) {
        if (*p == l) {
            *p = l->next;
            break;
        }
    }
    pthread_mutex_unlock(&o->lock);
    struct san_msg req, rep;
    unsigned n;
    san_proto_init(&req, SAN_OP_LISTEN_CLOSE, 0);
    req.u.handle_req.handle = l->handle;
    san_ctx_call(l->ctx, &req, &rep, NULL, 0, &n);
    close(l->efd);
    free(l);
}

/* Maps the region of a CONNECT or ACCEPT reply; the descriptors are consumed. */
static int ep_make(struct san_ctx *ctx, const struct san_ep_rep *r, int *fds, struct san_ep **out)
{
    struct san_ep *ep = calloc(1, sizeof(*ep));
    if (!ep) {
        close(fds[0]);
        close(fds[1]);
        return -ENOMEM;
    }
    void *q = r->region_size == SAN_EPQ_SIZE
                  ? mmap(NULL, SAN_EPQ_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, fds[0], 0)
                  : MAP_FAILED;
    close(fds[0]);
    if (q == MAP_FAILED) {
        close(fds[1]);
        free(ep);
        return -EPROTO;
    }
    ep->q = q;
    if (ep->q->magic != SAN_EPQ_MAGIC || ep->q->version != SAN_EPQ_VERSION ||
        ep->q->size != SAN_EPQ_SIZE || ep->q->sq_depth != SAN_EPQ_SQ ||
        ep->q->rq_depth != SAN_EPQ_RQ || ep->q->cq_depth != SAN_EPQ_CQ) {
        munmap(q, SAN_EPQ_SIZE);
        close(fds[1]);
        free(ep);
        return -EPROTO;
    }
    ep->ctx = ctx;
    ep->handle = r->handle;
    ep->efd = fds[1];
    int err = -pthread_mutex_init(&ep->sq_lock, NULL);
    if (err || (err = -pthread_mutex_init(&ep->cq_lock, NULL))) {
        if (!err)
            pthread_mutex_destroy(&ep->sq_lock);
        munmap(q, SAN_EPQ_SIZE);
        close(fds[1]);
        free(ep);
        return err;
    }
    struct san_nic_objs *o = san_ctx_nic(ctx);
    pthread_mutex_lock(&o->lock);
    ep->next = o->eps;
    o->eps = ep;
    pthread_mutex_unlock(&o->lock);
    *out = ep;
    return 0;
}

static int ep_call(struct san_ctx *ctx, struct san_msg *req, struct san_ep **out)
{
    struct san_msg rep;
    int fds[2];
    unsigned n;
    int err = san_ctx_call(ctx, req, &rep, fds, 2, &n);
    if (err)
        return err;
    if (n != 2) {
        while (n)
            close(fds[--n]);
        return -EPROTO;
    }
    return ep_make(ctx, &rep.u.ep_rep, fds, out);
}

int san_accept(struct san_listener *l, int timeout_ms, struct san_ep **out)
{
    if (!l || !out)
        return -EINVAL;
    *out = NULL;
    uint64_t deadline = deadline_of(timeout_ms);
    for (;;) {
        struct san_msg req;
        san_proto_init(&req, SAN_OP_ACCEPT, 0);
        req.u.handle_req.handle = l->handle;
        int err = ep_call(l->ctx, &req, out);
        if (err != -EAGAIN)
            return err;
        if (!timeout_ms)
            return -EAGAIN;
        struct pollfd p = {.fd = l->efd, .events = POLLIN};
        int wait = -1;
        if (deadline) {
            uint64_t now = san_now_ns();
            if (now >= deadline)
                return -ETIMEDOUT;
            wait = (int)((deadline - now + 999999) / 1000000);
        }
        if (poll(&p, 1, wait) == 0)
            return -ETIMEDOUT;
    }
}

void san_ep_close(struct san_ep *ep)
{
    if (!ep)
        return;
    struct san_nic_objs *o = san_ctx_nic(ep->ctx);
    pthread_mutex_lock(&o->lock);
    for (struct san_ep **p = &o->eps; *p; p = &(*p)->next) {
        if (*p == ep) {
            *p = ep->next;
            break;
        }
    }
    pthread_mutex_unlock(&o->lock);
    struct san_msg req, rep;
    unsigned n;
    san_proto_init(&req, SAN_OP_EP_CLOSE, 0);
    req.u.handle_req.handle = ep->handle;
    san_ctx_call(ep->ctx, &req, &rep, NULL, 0, &n);
    ep_free(ep);
}

int san_connect_start(struct san_ctx *ctx, const struct sockaddr *addr, socklen_t addrlen,
                      struct san_ep **out)
{
    struct san_msg req;
    if (!ctx || !out)
        return -EINVAL;
    *out = NULL;
    san_proto_init(&req, SAN_OP_CONNECT, 0);
    if (to_wire(addr, addrlen, &req.u.connect_req.addr))
        return -EINVAL;
    struct san_ep *ep;
    int err = ep_call(ctx, &req, &ep);
    if (err)
        return err;
    pthread_mutex_lock(&ep->cq_lock);
    ep->connecting = true;
    pthread_mutex_unlock(&ep->cq_lock);
    *out = ep;
    return 0;
}

/* The daemon's outcome of a connect: 0, -EINPROGRESS (none yet), or the refusal. */
static int outcome(const struct san_ep *ep)
{
    uint32_t st = atomic_load_explicit(&ep->q->state, memory_order_acquire);
    if (st == SAN_EPQ_CONNECTING)
        return -EINPROGRESS;
    if (st == SAN_EPQ_CONNECTED)
        return 0;
    int32_t err = atomic_load_explicit(&ep->q->state_err, memory_order_relaxed);
    return err < 0 && err > -4096 ? err : -ECONNREFUSED;
}

static void settle_efd_locked(struct san_ep *ep);

int san_connect_finish(struct san_ep *ep)
{
    if (!ep)
        return -EINVAL;
    int err = outcome(ep);
    if (err == -EINPROGRESS)
        return err;
    pthread_mutex_lock(&ep->cq_lock);
    if (ep->connecting) {
        ep->connecting = false;
        /* The outcome's signal is taken: drained unless a completion waits (one the daemon
         * writes after this look is drained by the next arm or empty poll). */
        settle_efd_locked(ep);
    }
    pthread_mutex_unlock(&ep->cq_lock);
    return err;
}

int san_connect(struct san_ctx *ctx, const struct sockaddr *addr, socklen_t addrlen, int timeout_ms,
                struct san_ep **out)
{
    if (!out)
        return -EINVAL;
    *out = NULL;
    struct san_ep *ep;
    int err = san_connect_start(ctx, addr, addrlen, &ep);
    if (err)
        return err;
    uint64_t deadline = deadline_of(timeout_ms);
    while ((err = san_connect_finish(ep)) == -EINPROGRESS) {
        if (deadline && san_now_ns() >= deadline)
            break;
        futex_wait_until(&ep->q->state, SAN_EPQ_CONNECTING, deadline);
    }
    if (!err) {
        *out = ep;
        return 0;
    }
    san_ep_close(ep);
    return err == -EINPROGRESS ? -ETIMEDOUT : -ECONNREFUSED;
}

/* Under cq_lock, with the queue looked at: when it is empty and the eventfd signalled, drains it
 * (clearing the word first and looking again after, so a completion that raced is signalled
 * again: the NIC may have found the word set and not written). */
static void settle_efd_locked(struct san_ep *ep)
{
    struct san_epq *q = ep->q;
    if (atomic_load_explicit(&q->cq_tail, memory_order_seq_cst) != ep->cq_head ||
        !atomic_load_explicit(&q->efd_signaled, memory_order_seq_cst))
        return;
    /* A connect's outcome not yet taken keeps it readable, whatever the queue says. */
    if (ep->connecting && outcome(ep) != -EINPROGRESS)
        return;
    uint64_t v;
    atomic_store_explicit(&q->efd_signaled, 0, memory_order_seq_cst);
    if (read(ep->efd, &v, sizeof(v)) < 0) {
    }
    if (atomic_load_explicit(&q->cq_tail, memory_order_seq_cst) != ep->cq_head) {
        uint64_t one = 1;
        atomic_store_explicit(&q->efd_signaled, 1, memory_order_seq_cst);
        if (write(ep->efd, &one, sizeof(one)) < 0) {
        }
    }
}

/* Under cq_lock: tells the NIC to signal the eventfd, and signals completions already there. */
static void arm_locked(struct san_ep *ep)
{
    struct san_epq *q = ep->q;
    if (atomic_exchange(&q->notify_armed, 1))
        return;
    if (atomic_load_explicit(&q->cq_tail, memory_order_seq_cst) != ep->cq_head ||
        (ep->connecting && outcome(ep) != -EINPROGRESS)) {
        uint64_t one = 1;
        atomic_store(&q->efd_signaled, 1);
        if (write(ep->efd, &one, sizeof(one)) < 0) {
        }
    } else {
        settle_efd_locked(ep); /* signalled while disarmed, drained since: not readable now */
    }
}

int san_ep_wait_arm(struct san_ep *ep)
{
    pthread_mutex_lock(&ep->cq_lock);
    if (!ep->wait_arms++ && !ep->fd_given)
        arm_locked(ep);
    pthread_mutex_unlock(&ep->cq_lock);
    return ep->efd;
}

void san_ep_wait_disarm(struct san_ep *ep)
{
    pthread_mutex_lock(&ep->cq_lock);
    if (!--ep->wait_arms && !ep->fd_given)
        atomic_store_explicit(&ep->q->notify_armed, 0, memory_order_seq_cst);
    pthread_mutex_unlock(&ep->cq_lock);
}

void san_ep_set_linger(struct san_ep *ep, bool on)
{
    /* Called on every read of the switch: store only on a change, so the line the engine reads
     * on each completion is not taken away from it for nothing. */
    uint32_t v = on ? 1u : 0u;
    if (atomic_load_explicit(&ep->q->linger, memory_order_relaxed) != v)
        atomic_store_explicit(&ep->q->linger, v, memory_order_relaxed);
}

int san_ep_fd(const struct san_ep *cep)
{
    if (!cep)
        return -EINVAL;
    struct san_ep *ep = (struct san_ep *)cep; /* its locks and counters are ours to change */
    pthread_mutex_lock(&ep->cq_lock);
    ep->fd_given = true;
    arm_locked(ep);
    pthread_mutex_unlock(&ep->cq_lock);
    return ep->efd;
}

static void kick(struct san_epq *q)
{
    atomic_thread_fence(memory_order_seq_cst);
    if (atomic_load_explicit(&q->engine_sleeping, memory_order_relaxed)) {
        atomic_fetch_add(&q->doorbell, 1);
        futex_wake(&q->doorbell);
    }
}

static int post(struct san_ep *ep, bool recv, const struct san_epq_wqe *w)
{
    struct san_epq *q = ep->q;
    if (atomic_load_explicit(&q->state, memory_order_acquire) != SAN_EPQ_CONNECTED)
        return -ENOTCONN;
    pthread_mutex_lock(&ep->sq_lock);
    uint32_t *tail = recv ? &ep->rq_tail : &ep->sq_tail;
    uint32_t depth = recv ? SAN_EPQ_RQ : SAN_EPQ_SQ;
    uint32_t head = atomic_load_explicit(recv ? &q->rq_head : &q->sq_head, memory_order_acquire);
    if (*tail - head >= depth) {
        pthread_mutex_unlock(&ep->sq_lock);
        return -EAGAIN;
    }
    struct san_epq_wqe *ring = recv ? san_epq_rq(q) : san_epq_sq(q);
    ring[*tail & (depth - 1)] = *w;
    ++*tail;
    atomic_store_explicit(recv ? &q->rq_tail : &q->sq_tail, *tail, memory_order_release);
    pthread_mutex_unlock(&ep->sq_lock);
    kick(q);
    return 0;
}

static int fill_sges(struct san_epq_wqe *w, const struct san_sge *sge, unsigned nsge)
{
    if (nsge > SAN_MAX_SGE || (nsge && !sge))
        return -EINVAL;
    w->nsge = nsge;
    for (unsigned i = 0; i < nsge; i++)
        w->sge[i] = (struct san_epq_sge){
            .va = (uintptr_t)sge[i].addr, .len = sge[i].length, .lkey = sge[i].lkey};
    return 0;
}

int san_post_recv(struct san_ep *ep, uint64_t wr_id, const struct san_sge *sge, unsigned nsge)
{
    struct san_epq_wqe w = {.wr_id = wr_id, .opcode = SAN_EPQ_RECV};
    if (!ep || fill_sges(&w, sge, nsge))
        return -EINVAL;
    return post(ep, true, &w);
}

int san_post_send(struct san_ep *ep, uint64_t wr_id, const struct san_sge *sge, unsigned nsge,
                  unsigned flags)
{
    struct san_epq_wqe w = {.wr_id = wr_id,
                            .opcode = SAN_EPQ_SEND,
                            .flags = (flags & SAN_WR_UNSIGNALED) |
                                     (flags & SAN_EP_WR_NODATA ? SAN_EPQ_NODATA : 0)};
    if (!ep || (flags & ~(unsigned)(SAN_WR_UNSIGNALED | SAN_EP_WR_NODATA)) ||
        fill_sges(&w, sge, nsge))
        return -EINVAL;
    return post(ep, false, &w);
}

static int rdma(struct san_ep *ep, unsigned op, uint64_t wr_id, const struct san_sge *sge,
                unsigned nsge, const void *desc, size_t desc_len, uint64_t offset, unsigned flags)
{
    struct san_epq_wqe w = {.wr_id = wr_id, .opcode = op, .flags = flags};
    struct san_rdma_desc d;
    if (!ep || (flags & ~(unsigned)SAN_WR_UNSIGNALED) || fill_sges(&w, sge, nsge) || !desc ||
        desc_len < sizeof(d))
        return -EINVAL;
    memcpy(&d, desc, sizeof(d));
    if (d.magic != SAN_DESC_MAGIC || d.version != SAN_DESC_VERSION || !d.rkey || offset > d.len ||
        d.va + offset < d.va)
        return -EINVAL;
    w.rkey = d.rkey;
    w.remote_va = d.va + offset;
    w.remote_host = d.host_id;
    return post(ep, false, &w);
}

int san_rdma_write(struct san_ep *ep, uint64_t wr_id, const struct san_sge *sge, unsigned nsge,
                   const void *desc, size_t desc_len, uint64_t offset, unsigned flags)
{
    return rdma(ep, SAN_EPQ_WRITE, wr_id, sge, nsge, desc, desc_len, offset, flags);
}

int san_rdma_read(struct san_ep *ep, uint64_t wr_id, const struct san_sge *sge, unsigned nsge,
                  const void *desc, size_t desc_len, uint64_t offset, unsigned flags)
{
    return rdma(ep, SAN_EPQ_READ, wr_id, sge, nsge, desc, desc_len, offset, flags);
}

/* The descriptor's fields, checked as rdma() checks them. */
static int desc_read(const void *desc, size_t desc_len, struct san_rdma_desc *d)
{
    if (!desc || desc_len < sizeof(*d))
        return -EINVAL;
    memcpy(d, desc, sizeof(*d));
    return d->magic == SAN_DESC_MAGIC && d->version == SAN_DESC_VERSION && d->rkey ? 0 : -EINVAL;
}

/* ep's mapping of allocation id, or NULL (cq_lock held). */
static const struct ep_map *map_find_locked(const struct san_ep *ep, uint64_t id)
{
    for (unsigned i = 0; i < ep->nmaps; i++)
        if (ep->maps[i].id == id)
            return &ep->maps[i];
    return NULL;
}

int san_rdma_map(struct san_ep *ep, const void *desc, size_t desc_len, const void **addr,
                 size_t *len)
{
    struct san_rdma_desc d;
    if (!ep || !addr || !len || desc_read(desc, desc_len, &d) || !d.len || d.va + d.len < d.va)
        return -EINVAL;
    struct san_msg req, rep;
    int fd = -1;
    unsigned n = 0;
    san_proto_init(&req, SAN_OP_RDMA_MAP, 0);
    req.u.rdma_map_req = (struct san_rdma_map_req){
        .handle = ep->handle, .host_id = d.host_id, .va = d.va, .len = d.len, .rkey = d.rkey};
    int err = san_ctx_call(ep->ctx, &req, &rep, &fd, 1, &n);
    if (err)
        return err;
    const struct san_rdma_map_rep *r = &rep.u.rdma_map_rep;
    if (n != 1 || r->bytes > SIZE_MAX || d.len > r->bytes - r->offset) {
        if (n)
            close(fd);
        return -EPROTO;
    }
    pthread_mutex_lock(&ep->cq_lock);
    const struct ep_map *m = map_find_locked(ep, r->id);
    pthread_mutex_unlock(&ep->cq_lock);
    void *base = NULL;
    if (!m) {
        base = mmap(NULL, (size_t)r->bytes, PROT_READ, MAP_SHARED, fd, 0);
        err = base == MAP_FAILED ? -ENOMEM : 0;
    }
    close(fd);
    if (err)
        return err;
    pthread_mutex_lock(&ep->cq_lock);
    if (!m && !(m = map_find_locked(ep, r->id)) && ep->nmaps < EP_MAPS) {
        ep->maps[ep->nmaps] = (struct ep_map){.base = base, .bytes = (size_t)r->bytes, .id = r->id};
        m = &ep->maps[ep->nmaps++];
        base = NULL;
    }
    if (m)
        *addr = m->base + r->offset;
    pthread_mutex_unlock(&ep->cq_lock);
    if (base) /* another thread mapped it meanwhile, or no room */
        munmap(base, (size_t)r->bytes);
    if (!m)
        return -ENOBUFS;
    *len = (size_t)d.len;
    return 0;
}

int san_poll(struct san_ep *ep, struct san_wc *wc, unsigned max)
{
    if (!ep || (max && !wc))
        return -EINVAL;
    struct san_epq *q = ep->q;
    pthread_mutex_lock(&ep->cq_lock);
    uint32_t tail = atomic_load_explicit(&q->cq_tail, memory_order_acquire);
    unsigned n = 0;
    for (; n < max && ep->cq_head != tail; n++, ep->cq_head++) {
        const struct san_epq_cqe *c = &san_epq_cq(q)[ep->cq_head & (SAN_EPQ_CQ - 1)];
        wc[n] = (struct san_wc){
            .wr_id = c->wr_id, .status = c->status, .opcode = c->opcode, .byte_len = c->byte_len};
    }
    if (n)
        atomic_store_explicit(&q->cq_head, ep->cq_head, memory_order_release);
    /* Empty: the descriptor stops being readable, unless a completion just came. Not
     * signalled: nothing to drain, no system call. */
    if (ep->cq_head == tail && atomic_load_explicit(&q->notify_armed, memory_order_relaxed))
        settle_efd_locked(ep);
    pthread_mutex_unlock(&ep->cq_lock);
    if (n)
        kick(q); /* room in the queue for a NIC that waits for it */
    return (int)n;
}

static bool has_completion(struct san_ep *ep)
{
    pthread_mutex_lock(&ep->cq_lock);
    bool yes = atomic_load_explicit(&ep->q->cq_tail, memory_order_acquire) != ep->cq_head;
    pthread_mutex_unlock(&ep->cq_lock);
    return yes;
}

static bool completion_look(void *ep)
{
    return has_completion(ep);
}

int san_wait(struct san_ep *ep, int timeout_ms)
{
    if (!ep)
        return -EINVAL;
    struct san_epq *q = ep->q;
    uint64_t start = san_now_ns(), deadline = deadline_of(timeout_ms);
    if (!timeout_ms)
        return has_completion(ep) ? 0 : -ETIMEDOUT;
    while (san_now_ns() - start < WAIT_SPIN_NS)
        if (san_spin_look(completion_look, ep))
            return 0;
    for (;;) {
        atomic_store_explicit(&q->client_waiting, 1, memory_order_seq_cst);
        uint32_t seq = atomic_load_explicit(&q->cq_seq, memory_order_seq_cst);
        if (has_completion(ep)) {
            atomic_store(&q->client_waiting, 0);
            return 0;
        }
        if (deadline && san_now_ns() >= deadline) {
            atomic_store(&q->client_waiting, 0);
            return -ETIMEDOUT;
        }
        futex_wait_until(&q->cq_seq, seq, deadline);
    }
}
