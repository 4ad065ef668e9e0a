/* libsan: the client side of sanproxyd (the SAN service provider's calls into its proxy).
 *
 * Sits on proto (one request, one reply on the SOCK_SEQPACKET control socket) and the shared range
 * tree: the context keeps its allocations by address and its registrations by page range. Proxy
 * memory arrives as a memfd (SCM_RIGHTS) and is mapped here. Registration pins the pages with mlock
 * before the daemon is asked (the daemon cannot pin another process's pages; it validates the range
 * through the pidfd and gives it frames); the last deregistration unpins while the daemon drops
 * the registration. mlock does not nest, so only pages no other registration of this context still
 * covers are unpinned.
 *
 * Waiting: a reply is polled for up to $SANPROXY_SPIN_US (default 20) microseconds before the
 * thread sleeps in recv; a sleep and wake-up costs more than most requests take.
 *
 * Locking: ctx->lock serialises everything on a context (the socket round trip and both trees), so
 * a context may be shared by threads. A struct san_mr belongs to its context and is freed by
 * san_deregister or san_close. Contexts do not know each other: two contexts of one process that
 * register overlapping pages each unlock their own (documented limitation). */
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <unistd.h>

#include <san/client.h>

#include "client/defaults.h"
#include "client/rcache.h"
#include "common/clock.h"
#include "common/page.h"
#include "common/pin.h"
#include "common/range.h"
#include "client/desc.h"
#include "client/ep.h"
#include "proto/proto.h"

struct client_alloc {
    struct san_range r; /* mapped address, bytes */
    uint64_t handle;
    san_paddr_t pa;
};

/* One registration of the daemon, as this context sees it. */
struct client_reg {
    struct san_range r; /* whole pages */
    uint64_t va, len;   /* as asked */
    uint32_t lkey, rkey;
    uint32_t refs;
    unsigned access;
    bool rdma;
};

/* A registration as the daemon gave it. The application's handles are registration cache entries
 * (see the end of this file); the cache holds one of these per daemon registration it keeps. */
struct san_mr {
    struct san_ctx *ctx;
    struct client_reg *reg;
    struct san_mr *next, *prev;
    bool free_reg; /* released by the cache: reg goes with it when it is freed */
};

struct san_ctx {
    pthread_mutex_t lock;
    int fd;
    uint64_t next_id;
    uint64_t host_id;
    uint32_t client_id;
    uint64_t spin_ns; /* poll for a reply this long before sleeping ($SANPROXY_SPIN_US) */
    struct san_tree allocs;
    struct san_tree regs;
    struct san_mr mrs; /* list head of outstanding handles */
    struct san_rcache *rc;
    struct san_mr *dead; /* released by the cache, freed later (the cache's thread never frees) */
    bool closing;        /* san_close: the socket's end releases everything at once */
    struct san_nic_objs nic; /* endpoints and listeners (ep.c) */
};

/* The registration cache's side (at the end of this file). */
static const struct san_rcache_ops rcache_ops;
static bool forked(const struct san_ctx *ctx);
static void reap_dead(struct san_ctx *ctx);

/* Sends req with a fresh id. Caller holds ctx->lock. */
static int send_req(struct san_ctx *ctx, struct san_msg *req)
{
    req->hdr.id = ++ctx->next_id;
    int err = san_proto_send(ctx->fd, req, -1, 0);
    return err == -EPIPE ? -ECONNRESET : err;
}

/* Receives one message, polling for up to ctx->spin_ns before sleeping: a reply usually comes
 * within microseconds (the daemon polls too), and a sleep plus wake-up costs more than that on
 * these machines. sched_yield between polls lets a daemon that shares our CPU run. */
static int recv_spin(struct san_ctx *ctx, struct san_msg *m, size_t *len, int *fds, unsigned max,
                     unsigned *n)
{
    if (ctx->spin_ns) {
        uint64_t deadline = san_now_ns() + ctx->spin_ns;
        do {
            int err = san_proto_recv_fds(ctx->fd, m, len, fds, max, n, MSG_DONTWAIT);
            if (err != -EAGAIN)
                return err;
            sched_yield();
        } while (san_now_ns() < deadline);
    }
    return san_proto_recv_fds(ctx->fd, m, len, fds, max, n, 0);
}

static void close_all(int *fds, unsigned *n)
{
    while (*n)
        close(fds[--*n]);
}

/* Waits for the reply to req (replies to requests given up on are dropped). Returns the reply's
 * status or a transport error. Up to max descriptors that came with a successful reply land in
 * fds (*n of them). Caller holds ctx->lock. */
static int recv_rep_fds(struct san_ctx *ctx, const struct san_msg *req, struct san_msg *rep,
                        int *fds, unsigned max, unsigned *n)
{
    size_t len;
    int err, derr;

    for (;;) {
        err = recv_spin(ctx, rep, &len, fds, max, n);
        if (err)
            return err;
        if (san_proto_decode(rep, len, true, &derr) != SAN_DECODE_OK ||
            (rep->hdr.opcode & ~SAN_OP_REPLY) != (req->hdr.opcode & ~SAN_OP_REPLY)) {
            close_all(fds, n);
            return -EPROTO;
        }
        if (rep->hdr.id == req->hdr.id)
            break;
        close_all(fds, n);
        if (!rep->hdr.id && rep->hdr.status)
            return rep->hdr.status; /* the daemon refused the connection (a limit), then ends */
    }
    if (rep->hdr.status) {
        close_all(fds, n);
        return rep->hdr.status;
    }
    return 0;
}

static int recv_rep(struct san_ctx *ctx, const struct san_msg *req, struct san_msg *rep, int *fd)
{
    int got = -1;
    unsigned n = 0;
    int err = recv_rep_fds(ctx, req, rep, &got, fd ? 1 : 0, &n);
    if (fd)
        *fd = err || !n ? -1 : got;
    return err;
}

struct san_nic_objs *san_ctx_nic(struct san_ctx *ctx)
{
    return &ctx->nic;
}

int san_ctx_call(struct san_ctx *ctx, struct san_msg *req, struct san_msg *rep, int *fds,
                 unsigned max, unsigned *n)
{
    *n = 0;
    if (forked(ctx))
        return -ECHILD;
    pthread_mutex_lock(&ctx->lock);
    int err = ctx->closing ? -ECONNRESET : send_req(ctx, req);
    if (!err)
        err = recv_rep_fds(ctx, req, rep, fds, max, n);
    pthread_mutex_unlock(&ctx->lock);
    return err;
}

/* One round trip. Caller holds ctx->lock. */
static int call(struct san_ctx *ctx, struct san_msg *req, struct san_msg *rep, int *fd)
{
    int err = send_req(ctx, req);
    return err ? err : recv_rep(ctx, req, rep, fd);
}

int san_open(const char *socket_path, struct san_ctx **out)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    struct san_msg req, rep;
    struct san_ctx *ctx;
    int err;

    if (!out)
        return -EINVAL;
    *out = NULL;
    if (!socket_path || !*socket_path)
        socket_path = getenv("SANPROXY_SOCKET");
    if (socket_path && *socket_path) {
        if (strlen(socket_path) >= sizeof(sa.sun_path))
            return -ENAMETOOLONG;
        strcpy(sa.sun_path, socket_path);
    } else if ((err = san_proto_default_path(sa.sun_path, sizeof(sa.sun_path)))) {
        return err;
    }
    ctx = calloc(1, sizeof(*ctx));
    if (!ctx)
        return -ENOMEM;
    ctx->fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
    if (ctx->fd < 0) {
        err = -errno;
        goto fail_ctx;
    }
    if (connect(ctx->fd, (struct sockaddr *)&sa, sizeof(sa))) {
        err = -errno;
        goto fail_fd;
    }
    pthread_mutex_init(&ctx->lock, NULL);
    san_nic_objs_init(&ctx->nic);
    san_range_tree_init(&ctx->allocs);
    san_range_tree_init(&ctx->regs);
    ctx->mrs.next = ctx->mrs.prev = &ctx->mrs;
    const char *spin = getenv("SANPROXY_SPIN_US");
    ctx->spin_ns = (spin && *spin ? strtoull(spin, NULL, 10) : SAN_CLIENT_SPIN_US) * 1000;
    if (ctx->spin_ns > 1000000000u)
        ctx->spin_ns = 1000000000u;
    san_proto_init(&req, SAN_OP_HELLO, 0);
    req.u.hello_req.version = SAN_PROTO_VERSION;
    if ((err = call(ctx, &req, &rep, NULL)))
        goto fail_lock;
    if (rep.u.hello_rep.version != SAN_PROTO_VERSION || rep.u.hello_rep.page_size != PAGE) {
        err = -EPROTO;
        goto fail_lock;
    }
    ctx->host_id = rep.u.hello_rep.host_id;
    ctx->client_id = rep.u.hello_rep.client_id;
    if ((err = san_rcache_create(NULL, &rcache_ops, ctx, &ctx->rc)))
        goto fail_lock;
    *out = ctx;
    return 0;

fail_lock:
    pthread_mutex_destroy(&ctx->lock);
fail_fd:
    close(ctx->fd);
fail_ctx:
    free(ctx);
    return err;
}

static struct client_alloc *alloc_of(struct san_range *r)
{
    return r ? san_container_of(r, struct client_alloc, r) : NULL;
}
static struct client_reg *reg_of(struct san_range *r)
{
    return r ? san_container_of(r, struct client_reg, r) : NULL;
}

/* munlocks the pages of [start, start+len) that no registration in ctx->regs covers. What the
 * application unmapped of it meanwhile is skipped (san_pin_unlock): a plain munlock would stop at
 * the hole and leave the rest locked. */
static void unpin_uncovered(struct san_ctx *ctx, uint64_t start, uint64_t len)
{
    struct san_range_gaps g;
    for (san_range_gaps_init(&g, &ctx->regs, start, start + len); san_range_gaps_next(&g);)
        san_pin_unlock(g.start, g.len);
}

void san_close(struct san_ctx *ctx)
{
    struct san_range *r;

    if (!ctx)
        return;
    /* The cache first: it stops its watcher, and its releases are no-ops (the socket's end
     * releases everything). In a forked child it frees its copy and releases nothing. */
    if (!forked(ctx)) {
        pthread_mutex_lock(&ctx->lock);
        ctx->closing = true;
        pthread_mutex_unlock(&ctx->lock);
    }
    reap_dead(ctx);
    san_rcache_destroy(ctx->rc);
    san_nic_forget_all(ctx, &ctx->nic);
    /* Closing the socket is the cleanup request: the daemon releases everything we held. */
    close(ctx->fd);
    while ((r = san_range_first(&ctx->allocs))) {
        san_range_erase(&ctx->allocs, r);
        munmap((void *)(uintptr_t)r->start, r->len);
        free(alloc_of(r));
    }
    while ((r = san_range_first(&ctx->regs))) {
        san_range_erase(&ctx->regs, r);
        unpin_uncovered(ctx, r->start, r->len);
        free(reg_of(r));
    }
    while (ctx->mrs.next != &ctx->mrs) {
        struct san_mr *mr = ctx->mrs.next;
        ctx->mrs.next = mr->next;
        free(mr);
    }
    pthread_mutex_destroy(&ctx->lock);
    free(ctx);
}

int san_alloc(struct san_ctx *ctx, size_t bytes, unsigned flags, void **va)
{
    struct san_msg req, rep;
    struct client_alloc *a;
    int err, fd;

    if (!ctx || !va || !bytes || (flags & ~(unsigned)SAN_ALLOC_FLAGS_ALL))
        return -EINVAL;
    if (forked(ctx))
        return -ECHILD;
    if (bytes > SIZE_MAX - PAGE)
        return -ENOMEM;
    a = calloc(1, sizeof(*a));
    if (!a)
        return -ENOMEM;
    san_proto_init(&req, SAN_OP_ALLOC, 0);
    req.u.alloc_req.bytes = bytes;
    req.u.alloc_req.flags = flags;
    pthread_mutex_lock(&ctx->lock);
    if ((err = call(ctx, &req, &rep, &fd)))
        goto fail;
    if (fd < 0) {
        err = -EPROTO;
        goto fail_free_remote;
    }
    void *p = mmap(NULL, rep.u.alloc_rep.bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    close(fd);
    if (p == MAP_FAILED) {
        err = -ENOMEM;
        goto fail_free_remote;
    }
    a->r.start = (uintptr_t)p;
    a->r.len = rep.u.alloc_rep.bytes;
    a->handle = rep.u.alloc_rep.handle;
    a->pa = rep.u.alloc_rep.paddr;
    san_range_insert(&ctx->allocs, &a->r);
    pthread_mutex_unlock(&ctx->lock);
    *va = p;
    return 0;

fail_free_remote:
    san_proto_init(&req, SAN_OP_FREE, 0);
    req.u.free_req.handle = rep.u.alloc_rep.handle;
    call(ctx, &req, &rep, NULL);
fail:
    pthread_mutex_unlock(&ctx->lock);
    free(a);
    return err;
}

int san_free(struct san_ctx *ctx, void *va)
{
    struct san_msg req, rep;
    int err;

    if (!ctx || !va)
        return -EINVAL;
    if (forked(ctx))
        return -ECHILD;
    pthread_mutex_lock(&ctx->lock);
    struct client_alloc *a = alloc_of(san_range_lookup(&ctx->allocs, (uintptr_t)va));
    if (!a || a->r.start != (uintptr_t)va) {
        pthread_mutex_unlock(&ctx->lock);
        return -EINVAL;
    }
    san_proto_init(&req, SAN_OP_FREE, 0);
    req.u.free_req.handle = a->handle;
    err = call(ctx, &req, &rep, NULL);
    /* Gone on the daemon's side (or never known there): forget it here too. */
    bool gone = !err || err == -EINVAL;
    if (gone)
        san_range_erase(&ctx->allocs, &a->r);
    pthread_mutex_unlock(&ctx->lock);
    if (gone) {
        /* After the lock: unmapping memory the registration cache watches waits for its handler,
         * which may need ctx->lock to release the registration. */
        munmap(va, a->r.len);
        free(a);
    }
    return err;
}

/* The registration of ctx whose asked range holds va, or NULL. */
static struct client_reg *reg_at(struct san_ctx *ctx, uint64_t va)
{
    for (struct san_range *r = san_range_first_overlap(&ctx->regs, va, 1); r;
         r = san_range_next_overlap(r, va, 1)) {
        struct client_reg *g = reg_of(r);
        if (va >= g->va && va - g->va < g->len)
            return g;
    }
    return NULL;
}

int san_physical_address(struct san_ctx *ctx, const void *va, san_paddr_t *pa)
{
    struct san_msg req, rep;
    uint64_t p = (uintptr_t)va;
    int err = -EINVAL;

    if (!ctx || !va || !pa)
        return -EINVAL;
    if (forked(ctx))
        return -ECHILD;
    pthread_mutex_lock(&ctx->lock);
    struct client_alloc *a = alloc_of(san_range_lookup(&ctx->allocs, p));
    if (a) {
        *pa = a->pa + (p - a->r.start);
        err = 0;
    } else {
        struct client_reg *g = reg_at(ctx, p);
        if (g) {
            san_proto_init(&req, SAN_OP_PADDR, 0);
            req.u.paddr_req.lkey = g->lkey;
            req.u.paddr_req.offset = p - g->va;
            if (!(err = call(ctx, &req, &rep, NULL)))
                *pa = rep.u.paddr_rep.paddr;
        }
    }
    pthread_mutex_unlock(&ctx->lock);
    return err;
}

/* The same registration (range, access, kind) that ctx already holds, or NULL. */
static struct client_reg *reg_same(struct san_ctx *ctx, uint64_t va, uint64_t len, unsigned access,
                                   bool rdma)
{
    for (struct san_range *r = san_range_first_overlap(&ctx->regs, va, len); r;
         r = san_range_next_overlap(r, va, len)) {
        struct client_reg *g = reg_of(r);
        if (g->va == va && g->len == len && g->access == access && g->rdma == rdma)
            return g;
    }
    return NULL;
}

/* Registration: MmProbeAndLockPages, our half first (the daemon cannot pin another process's
 * pages): the pages are pinned, then the daemon validates the range through our pidfd, gives it
 * frames and registers it. Pinning before the request also keeps our mlock (which holds our
 * mm's lock for writing) from stalling the daemon's process_vm_readv of the same range. */
static int do_register(struct san_ctx *ctx, void *addr, size_t len, unsigned access, bool rdma,
                       struct san_mr **out)
{
    struct san_msg req, rep;
    struct client_reg *g, *fresh = NULL;
    struct san_mr *mr;
    uint64_t va = (uintptr_t)addr;
    int err;

    if (!ctx || !addr || !len || !out || va + len < va || va + len > UINT64_MAX - PAGE)
        return -EINVAL;
    if (access != SAN_MEM_READ && access != SAN_MEM_WRITE && access != SAN_MEM_READWRITE)
        return -EINVAL;
    uint64_t start = va & ~(PAGE - 1), end = (va + len + PAGE - 1) & ~(PAGE - 1);
    mr = calloc(1, sizeof(*mr));
    if (!mr)
        return -ENOMEM;

    pthread_mutex_lock(&ctx->lock);
    g = reg_same(ctx, va, len, access, rdma);
    if (!g && !(fresh = calloc(1, sizeof(*fresh)))) {
        err = -ENOMEM;
        goto fail;
    }
    /* A range we already hold registered with this access is pinned already. The daemon only
     * accepts pages it sees present (it never faults in a client's page): fault them in with the
     * access a device will have (read-only stays read-only: -EFAULT), then pin them. */
    if (!g && (err = san_pin_populate(start, end - start, access & SAN_MEM_WRITE)))
        goto fail;
    if (!g && (err = san_pin_lock(start, end - start)))
        goto fail_unpin; /* mlock may have pinned part of it */
    san_proto_init(&req, SAN_OP_REGISTER, 0);
    req.u.register_req = (struct san_register_req){
        .va = va, .len = len, .access = access, .flags = rdma ? SAN_REG_RDMA : 0};
    if ((err = call(ctx, &req, &rep, NULL)))
        goto fail_unpin;
    if (!g) {
        g = fresh;
        *g = (struct client_reg){.r = {.start = start, .len = end - start},
                                 .va = va,
                                 .len = len,
                                 .lkey = rep.u.register_rep.lkey,
                                 .rkey = rep.u.register_rep.rkey,
                                 .access = access,
                                 .rdma = rdma};
        san_range_insert(&ctx->regs, &g->r);
    }
    g->refs = rep.u.register_rep.refs;
    mr->ctx = ctx;
    mr->reg = g;
    mr->next = ctx->mrs.next;
    mr->prev = &ctx->mrs;
    ctx->mrs.next->prev = mr;
    ctx->mrs.next = mr;
    pthread_mutex_unlock(&ctx->lock);
    *out = mr;
    return 0;

fail_unpin:
    if (!g)
        unpin_uncovered(ctx, start, end - start);
fail:
    pthread_mutex_unlock(&ctx->lock);
    free(fresh);
    free(mr);
    return err;
}

/* Drops mr's daemon reference (the cache calls it with defer: mr, and its client_reg when this
 * was the last reference, go to ctx->dead instead of being freed). */
static int release_mr(struct san_mr *mr, bool defer)
{
    struct san_msg req, rep;
    int err;

    if (!mr || !mr->ctx)
        return -EINVAL;
    struct san_ctx *ctx = mr->ctx;
    pthread_mutex_lock(&ctx->lock);
    struct client_reg *g = mr->reg;
    san_proto_init(&req, SAN_OP_DEREGISTER, 0);
    req.u.deregister_req.lkey = g->lkey;
    if ((err = send_req(ctx, &req)))
        goto out;
    bool last = g->refs == 1;
    if (last) {
        san_range_erase(&ctx->regs, &g->r);
        unpin_uncovered(ctx, g->r.start, g->r.len);
    }
    err = recv_rep(ctx, &req, &rep, NULL);
    if (err == -EINVAL) {
        /* The daemon no longer knows it (it cannot happen while the connection lives): forget it
         * here as if it had been the last reference. */
        rep.u.deregister_rep.refs = 0;
        err = 0;
    }
    if (last && (err || rep.u.deregister_rep.refs)) {
        /* Still registered: pin it again. */
        san_range_insert(&ctx->regs, &g->r);
        san_pin_lock(g->r.start, g->r.len);
        last = false;
    }
    if (!err) {
        g->refs = rep.u.deregister_rep.refs;
        if (last && !defer)
            free(g);
        mr->prev->next = mr->next;
        mr->next->prev = mr->prev;
        mr->ctx = NULL;
        if (defer) {
            mr->free_reg = last;
            mr->next = ctx->dead;
            ctx->dead = mr;
        } else {
            free(mr);
        }
    }
out:
    pthread_mutex_unlock(&ctx->lock);
    return err;
}

/* ---- The registration cache (client/rcache.h, docs/rcache.md). Every registration goes through
 * it: a hit returns a cached registration with no round trip; a miss comes back here through
 * rc_register (do_register above) and the cache keeps the result. The handle the application gets
 * is the cache entry itself (struct san_mr * is an opaque pointer to it); several calls served by
 * one cached registration return the same handle, each still deregistered once. The callbacks
 * take ctx->lock, always after the cache's own locks; they never free memory (rc_deregister may
 * run on the cache's watcher thread): released handles wait on ctx->dead for reap_dead. */

static bool forked(const struct san_ctx *ctx)
{
    return san_rcache_forked(ctx->rc);
}

/* Frees what the cache released. Called without any lock held. */
static void reap_dead(struct san_ctx *ctx)
{
    struct san_mr *list;
    if (forked(ctx)) { /* the child may not take a lock the fork caught held */
        list = ctx->dead;
        ctx->dead = NULL;
    } else {
        /* Taken and emptied under the lock: another thread's release may be adding to it. */
        pthread_mutex_lock(&ctx->lock);
        list = ctx->dead;
        ctx->dead = NULL;
        pthread_mutex_unlock(&ctx->lock);
    }
    while (list) {
        struct san_mr *next = list->next;
        if (list->free_reg)
            free(list->reg);
        free(list);
        list = next;
    }
}

static int rc_register(void *arg, void *addr, size_t len, unsigned access, bool rdma,
                       struct san_rcache_reg *out)
{
    struct san_ctx *ctx = arg;
    struct san_mr *mr;

    reap_dead(ctx);
    int err = do_register(ctx, addr, len, access, rdma, &mr);
    if (err)
        return err;
    *out = (struct san_rcache_reg){.handle = (uintptr_t)mr,
                                   .lkey = mr->reg->lkey,
                                   .rkey = mr->reg->rkey,
                                   .addr = (uintptr_t)addr,
                                   .len = len};
    return 0;
}

static int rc_deregister(void *arg, const struct san_rcache_reg *r)
{
    struct san_ctx *ctx = arg;
    if (ctx->closing)
        return 0;
    return release_mr((struct san_mr *)(uintptr_t)r->handle, true);
}

/* SAN_OP_SET_REMOTE: an idle cached RDMA registration is hidden from peers (rkey revoked) and
 * exposed again, with a new rkey, on its next use. */
static int rc_set_remote(void *arg, struct san_rcache_reg *r, bool exposed)
{
    struct san_ctx *ctx = arg;
    struct san_msg req, rep;

    san_proto_init(&req, SAN_OP_SET_REMOTE, 0);
    req.u.set_remote_req = (struct san_set_remote_req){.lkey = r->lkey, .exposed = exposed};
    pthread_mutex_lock(&ctx->lock);
    int err = call(ctx, &req, &rep, NULL);
    if (!err) {
        r->rkey = rep.u.set_remote_rep.rkey;
        ((struct san_mr *)(uintptr_t)r->handle)->reg->rkey = r->rkey;
    }
    pthread_mutex_unlock(&ctx->lock);
    return err;
}

static const struct san_rcache_ops rcache_ops = {
    .do_register = rc_register,
    .do_deregister = rc_deregister,
    .set_remote = rc_set_remote,
};

static int cached_register(struct san_ctx *ctx, void *addr, size_t len, unsigned access, bool rdma,
                           struct san_mr **out)
{
    struct san_rcache_entry *e;

    if (!ctx || !out)
        return -EINVAL;
    int err = san_rcache_get(ctx->rc, addr, len, access, rdma, &e);
    if (!err)
        *out = (struct san_mr *)e;
    return err;
}

int san_register(struct san_ctx *ctx, void *addr, size_t len, unsigned access, struct san_mr **out)
{
    return cached_register(ctx, addr, len, access, false, out);
}

int san_register_rdma(struct san_ctx *ctx, void *addr, size_t len, unsigned access, void *desc,
                      size_t *desc_len, struct san_mr **out)
{
    struct san_mr *mr;
    int err;

    if (!desc_len || !out)
        return -EINVAL;
    if (*desc_len < SAN_RDMA_DESC_SIZE) {
        *desc_len = SAN_RDMA_DESC_SIZE;
        return -EFAULT;
    }
    if (!desc)
        return -EFAULT;
    if ((err = cached_register(ctx, addr, len, access, true, &mr)))
        return err;
    struct san_rdma_desc d = {
        .magic = SAN_DESC_MAGIC,
        .version = 1,
        .access = (uint16_t)access,
        .host_id = ctx->host_id,
        .va = (uintptr_t)addr,
        .len = len,
        .rkey = san_mr_rkey(mr),
        .client_id = ctx->client_id,
    };
    memcpy(desc, &d, sizeof(d));
    *desc_len = sizeof(d);
    *out = mr;
    return 0;
}

int san_deregister(struct san_mr *mr)
{
    if (!mr)
        return -EINVAL;
    struct san_rcache_entry *e = (struct san_rcache_entry *)mr;
    return san_rcache_put(san_rcache_entry_cache(e), e);
}

uint32_t san_mr_lkey(const struct san_mr *mr)
{
    return mr ? san_rcache_entry_reg((const struct san_rcache_entry *)mr)->lkey : 0;
}

uint32_t san_mr_rkey(const struct san_mr *mr)
{
    return mr ? san_rcache_entry_reg((const struct san_rcache_entry *)mr)->rkey : 0;
}

/* Drops what the cache holds there. Registrations the application still holds outside the cache
 * (served uncached) count as "something there" too: they are the application's to release. */
int san_cache_invalidate(struct san_ctx *ctx, void *addr, size_t len)
{
    uint64_t va = (uintptr_t)addr;
    if (!ctx || !addr || !len || va + len < va)
        return -EINVAL;
    int err = san_rcache_invalidate(ctx->rc, addr, len);
    if (err != -EINVAL)
        return err;
    pthread_mutex_lock(&ctx->lock);
    bool any = san_range_first_overlap(&ctx->regs, va, len) != NULL;
    pthread_mutex_unlock(&ctx->lock);
    return any ? 0 : -EINVAL;
}
