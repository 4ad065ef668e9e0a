/* libsan's proxy memory (san_alloc, san_free, san_physical_address): memory of the emulated
 * machine that the daemon allocates and passes as a memfd (SCM_RIGHTS), mapped here. The context
 * keeps its allocations by address (common/range), with their handle and physical address, so
 * that the physical address of proxy memory costs no round trip.
 *
 * Locking: see ctx.h. Unmapping happens after ctx->lock is released: unmapping memory the
 * registration cache watches waits for its watcher, which may need ctx->lock to release a
 * registration there. san_free drops the cache's registrations of the memory itself before it
 * unmaps it (the watcher's word comes too late for other threads: see there). */
#include <errno.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

#include "client/ctx.h"
#include "common/page.h"

static struct client_alloc *alloc_of(struct san_range *r)
{
    return r ? san_container_of(r, struct client_alloc, r) : NULL;
}

int san_alloc(struct san_ctx *ctx, size_t bytes, unsigned flags, void **va)
{
    struct san_msg req, rep;
    struct client_alloc *a;
    int err, fd;

    if (!ctx || !va || !bytes || (flags & ~(unsigned)SAN_ALLOC_FLAGS_ALL))
        return -EINVAL;
    if (san_ctx_forked(ctx))
        return -ECHILD;
    if (bytes > SIZE_MAX - PAGE)
        return -ENOMEM;
    a = calloc(1, sizeof(*a));
    if (!a)
        return -ENOMEM;
    san_proto_init(&req, SAN_OP_ALLOC, 0);
    req.u.alloc_req.bytes = bytes;
    req.u.alloc_req.flags = flags;
    san_mutex_lock(&ctx->lock);
    if ((err = san_ctx_call_locked(ctx, &req, &rep, &fd)))
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
    san_mutex_unlock(&ctx->lock);
    *va = p;
    return 0;

fail_free_remote:
    san_proto_init(&req, SAN_OP_FREE, 0);
    req.u.free_req.handle = rep.u.alloc_rep.handle;
    san_ctx_call_locked(ctx, &req, &rep, NULL);
fail:
    san_mutex_unlock(&ctx->lock);
    free(a);
    return err;
}

int san_free(struct san_ctx *ctx, void *va)
{
    struct san_msg req, rep;
    int err;

    if (!ctx || !va)
        return -EINVAL;
    if (san_ctx_forked(ctx))
        return -ECHILD;
    san_mutex_lock(&ctx->lock);
    struct client_alloc *a = alloc_of(san_range_lookup(&ctx->allocs, (uintptr_t)va));
    if (!a || a->r.start != (uintptr_t)va) {
        san_mutex_unlock(&ctx->lock);
        return -EINVAL;
    }
    /* What the registration cache holds on it goes first (outside ctx->lock: releasing a
     * registration takes it). The cache's watcher hears of an unmap only at the end of munmap,
     * after the address range is free for another thread's mmap: a new allocation there,
     * registered meanwhile, would have hit the old one's registration (its frames, its keys). */
    size_t len = a->r.len;
    san_mutex_unlock(&ctx->lock);
    san_rcache_invalidate(ctx->rc, va, len); /* -EINVAL: nothing cached there */
    san_mutex_lock(&ctx->lock);
    a = alloc_of(san_range_lookup(&ctx->allocs, (uintptr_t)va));
    if (!a || a->r.start != (uintptr_t)va) { /* freed by another thread meanwhile */
        san_mutex_unlock(&ctx->lock);
        return -EINVAL;
    }
    san_proto_init(&req, SAN_OP_FREE, 0);
    req.u.free_req.handle = a->handle;
    err = san_ctx_call_locked(ctx, &req, &rep, NULL);
    /* Gone on the daemon's side (or never known there): forget it here too. */
    bool gone = !err || err == -EINVAL;
    if (gone)
        san_range_erase(&ctx->allocs, &a->r);
    san_mutex_unlock(&ctx->lock);
    if (gone) {
        munmap(va, a->r.len);
        free(a);
    }
    return err;
}

int san_physical_address(struct san_ctx *ctx, const void *va, san_paddr_t *pa)
{
    uint64_t p = (uintptr_t)va;
    int err;

    if (!ctx || !va || !pa)
        return -EINVAL;
    if (san_ctx_forked(ctx))
        return -ECHILD;
    san_mutex_lock(&ctx->lock);
    struct client_alloc *a = alloc_of(san_range_lookup(&ctx->allocs, p));
    if (a) {
        *pa = a->pa + (p - a->r.start);
        err = 0;
    } else {
        err = san_ctx_reg_paddr_locked(ctx, p, pa);
    }
    san_mutex_unlock(&ctx->lock);
    return err;
}

void san_ctx_drop_allocs(struct san_ctx *ctx)
{
    struct san_range *r;
    while ((r = san_range_first(&ctx->allocs))) {
        san_range_erase(&ctx->allocs, r);
        munmap((void *)(uintptr_t)r->start, r->len);
        free(alloc_of(r));
    }
}
