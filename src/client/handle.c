/* libsan's registration API (san_register, san_register_rdma, san_deregister, the keys,
 * san_cache_invalidate): the application's handles, served by the registration cache
 * (client/rcache.h, docs/rcache.md).
 *
 * Every registration goes through the cache: a hit returns a cached registration with no round
 * trip; a miss comes back here through rc_register (register.c) and the cache keeps the result.
 * The handle the application gets is the struct san_mr embedded in the cache entry (rcache.h);
 * several calls served by one cached registration return the same handle, each still deregistered
 * once.
 *
 * Locking: the callbacks take ctx->lock, always after the cache's own locks; they never free
 * memory (rc_deregister may run on the cache's watcher thread): released references wait on
 * ctx->dead for san_ctx_reap_dead. */
#include <errno.h>
#include <string.h>

#include "client/ctx.h"
#include "client/desc.h"

static int rc_register(void *arg, void *addr, size_t len, unsigned access, bool rdma,
                       struct san_rcache_reg *out)
{
    struct san_ctx *ctx = arg;
    struct client_ref *ref;

    san_ctx_reap_dead(ctx);
    int err = san_ctx_register(ctx, addr, len, access, rdma, &ref);
    if (err)
        return err;
    *out = (struct san_rcache_reg){.handle = (uintptr_t)ref,
                                   .lkey = ref->reg->lkey,
                                   .rkey = ref->reg->rkey,
                                   .addr = (uintptr_t)addr,
                                   .len = len};
    return 0;
}

static int rc_deregister(void *arg, const struct san_rcache_reg *r)
{
    struct san_ctx *ctx = arg;
    if (ctx->closing)
        return 0;
    return san_ctx_release((struct client_ref *)(uintptr_t)r->handle, true);
}

/* SAN_OP_SET_REMOTE: an idle cached RDMA registration is hidden from peers (rkey revoked) and
 * exposed again, with a new rkey, on its next use. */
static int rc_set_remote(void *arg, struct san_rcache_reg *r, bool exposed)
{
    struct san_ctx *ctx = arg;
    struct san_msg req, rep;

    san_proto_init(&req, SAN_OP_SET_REMOTE, 0);
    req.u.set_remote_req = (struct san_set_remote_req){.lkey = r->lkey, .exposed = exposed};
    san_mutex_lock(&ctx->lock);
    int err = san_ctx_call_locked(ctx, &req, &rep, NULL);
    if (!err) {
        r->rkey = rep.u.set_remote_rep.rkey;
        ((struct client_ref *)(uintptr_t)r->handle)->reg->rkey = r->rkey;
    }
    san_mutex_unlock(&ctx->lock);
    return err;
}

const struct san_rcache_ops san_ctx_rcache_ops = {
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
        *out = san_rcache_entry_handle(e);
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
    struct san_rcache_entry *e = san_rcache_handle_entry(mr);
    return san_rcache_put(san_rcache_entry_cache(e), e);
}

uint32_t san_mr_lkey(const struct san_mr *mr)
{
    return mr ? mr->reg.lkey : 0;
}

uint32_t san_mr_rkey(const struct san_mr *mr)
{
    return mr ? mr->reg.rkey : 0;
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
    san_mutex_lock(&ctx->lock);
    bool any = san_range_first_overlap(&ctx->regs, va, len) != NULL;
    san_mutex_unlock(&ctx->lock);
    return any ? 0 : -EINVAL;
}
