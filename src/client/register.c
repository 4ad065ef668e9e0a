/* libsan's registrations with the daemon (WSPRegisterMemory's round trip), as a context holds them:
 * one struct client_reg per daemon registration, by page range in ctx->regs (they may overlap),
 * and one struct client_ref per reference the daemon counted (the registration cache holds one
 * per entry). The same range, access and kind registered again is the same daemon registration
 * with its count raised.
 *
 * Proxy memory (a range inside one of our allocations) is registered as the allocation's frames,
 * which are resident: nothing is pinned for it.
 *
 * Registration of other memory is MmProbeAndLockPages, our half first: the pages are pinned
 * (pins.c), then the daemon validates the range through our pidfd, gives it frames and registers
 * it. Pinning before the request also keeps our mlock (which holds our mm's lock for writing) from
 * stalling the daemon's validation of the same range. The last deregistration unpins while the
 * daemon drops the registration, and pins again if the daemon refuses.
 *
 * Locking: see ctx.h. san_ctx_release with defer runs on the cache's watcher thread, under the
 * cache's lock: it frees nothing (released references wait on ctx->dead). */
#include <errno.h>
#include <stdlib.h>

#include "client/ctx.h"
#include "common/page.h"
#include "common/pin.h"

static struct client_reg *reg_of(struct san_range *r)
{
    return r ? san_container_of(r, struct client_reg, r) : NULL;
}

/* The registration of ctx whose asked range holds va, or NULL. */
static struct client_reg *reg_at_locked(struct san_ctx *ctx, uint64_t va)
{
    san_assert_mutex_held(&ctx->lock);
    for (struct san_range *r = san_range_first_overlap(&ctx->regs, va, 1); r;
         r = san_range_next_overlap(r, va, 1)) {
        struct client_reg *g = reg_of(r);
        if (va >= g->va && va - g->va < g->len)
            return g;
    }
    return NULL;
}

/* The same registration (range, access, kind) that ctx already holds, or NULL. */
static struct client_reg *reg_same_locked(struct san_ctx *ctx, uint64_t va, uint64_t len,
                                          unsigned access, bool rdma)
{
    san_assert_mutex_held(&ctx->lock);
    for (struct san_range *r = san_range_first_overlap(&ctx->regs, va, len); r;
         r = san_range_next_overlap(r, va, len)) {
        struct client_reg *g = reg_of(r);
        if (g->va == va && g->len == len && g->access == access && g->rdma == rdma)
            return g;
    }
    return NULL;
}

int san_ctx_reg_paddr_locked(struct san_ctx *ctx, uint64_t va, san_paddr_t *pa)
{
    struct san_msg req, rep;
    struct client_reg *g = reg_at_locked(ctx, va);
    if (!g)
        return -EINVAL;
    san_proto_init(&req, SAN_OP_PADDR, 0);
    req.u.paddr_req.lkey = g->lkey;
    req.u.paddr_req.offset = va - g->va;
    int err = san_ctx_call_locked(ctx, &req, &rep, NULL);
    if (!err)
        *pa = rep.u.paddr_rep.paddr;
    return err;
}

int san_ctx_register(struct san_ctx *ctx, void *addr, size_t len, unsigned access, bool rdma,
                     struct client_ref **out)
{
    struct san_msg req, rep;
    struct client_reg *g, *fresh = NULL;
    struct client_ref *ref;
    uint64_t va = (uintptr_t)addr;
    int err;

    if (!ctx || !addr || !len || !out || va + len < va || va + len > UINT64_MAX - PAGE)
        return -EINVAL;
    if (access != SAN_MEM_READ && access != SAN_MEM_WRITE && access != SAN_MEM_READWRITE)
        return -EINVAL;
    uint64_t start = san_page_down(va), end = san_page_up(va + len);
    ref = calloc(1, sizeof(*ref));
    if (!ref)
        return -ENOMEM;

    if (!(fresh = calloc(1, sizeof(*fresh)))) {
        free(ref);
        return -ENOMEM;
    }
    san_mutex_lock(&ctx->lock);
    g = reg_same_locked(ctx, va, len, access, rdma);
    /* Proxy memory (one of our allocations) is resident and never pinned: the daemon registers
     * its frames. Other memory is pinned even when a registration of ours names the same range:
     * that one may be stale (the range unmapped and mapped again by another thread before the
     * cache's watcher dropped it), and mlock does not nest. */
    struct san_range *in = san_range_lookup(&ctx->allocs, va);
    bool proxy = in && end <= san_range_end(in);
    if (!proxy && (err = san_ctx_pin_locked(ctx, start, end - start, access)))
        goto fail;
    san_proto_init(&req, SAN_OP_REGISTER, 0);
    req.u.register_req = (struct san_register_req){
        .va = va, .len = len, .access = access, .flags = rdma ? SAN_REG_RDMA : 0};
    if ((err = san_ctx_call_locked(ctx, &req, &rep, NULL)))
        goto fail_unpin;
    /* The daemon says whether it is the same registration: its key. Another key means other
     * memory behind the range now, and g (still held, until its references go) is not it. */
    if (g && g->lkey != rep.u.register_rep.lkey)
        g = NULL;
    if (!g) {
        g = fresh;
        fresh = NULL;
        *g = (struct client_reg){.r = {.start = start, .len = end - start},
                                 .va = va,
                                 .len = len,
                                 .lkey = rep.u.register_rep.lkey,
                                 .rkey = rep.u.register_rep.rkey,
                                 .access = access,
                                 .rdma = rdma,
                                 .proxy = proxy};
        san_range_insert(&ctx->regs, &g->r);
    }
    g->refs = rep.u.register_rep.refs;
    ref->ctx = ctx;
    ref->reg = g;
    san_list_insert_after(&ctx->refs, &ref->link);
    san_mutex_unlock(&ctx->lock);
    free(fresh);
    *out = ref;
    return 0;

fail_unpin:
    if (!proxy) /* what no registration of ours covers */
        san_ctx_unpin_uncovered_locked(ctx, start, end - start);
fail:
    san_mutex_unlock(&ctx->lock);
    free(fresh);
    free(ref);
    return err;
}

int san_ctx_release(struct client_ref *ref, bool defer)
{
    struct san_msg req, rep;
    int err;

    if (!ref || !ref->ctx)
        return -EINVAL;
    struct san_ctx *ctx = ref->ctx;
    san_mutex_lock(&ctx->lock);
    struct client_reg *g = ref->reg;
    san_proto_init(&req, SAN_OP_DEREGISTER, 0);
    req.u.deregister_req.lkey = g->lkey;
    if ((err = san_ctx_send_locked(ctx, &req)))
        goto out;
    /* The unpin overlaps the daemon's work on the request. */
    bool last = g->refs == 1;
    if (last) {
        san_range_erase(&ctx->regs, &g->r);
        if (!g->proxy)
            san_ctx_unpin_uncovered_locked(ctx, g->r.start, g->r.len);
    }
    err = san_ctx_recv_locked(ctx, &req, &rep, NULL);
    if (err == -EINVAL) {
        /* The daemon no longer knows it (it cannot happen while the connection lives): forget it
         * here as if it had been the last reference. */
        rep.u.deregister_rep.refs = 0;
        err = 0;
    }
    if (last && (err || rep.u.deregister_rep.refs)) {
        /* Still registered: pin it again. */
        san_range_insert(&ctx->regs, &g->r);
        if (!g->proxy)
            san_pin_lock(g->r.start, g->r.len);
        last = false;
    }
    if (!err) {
        g->refs = rep.u.deregister_rep.refs;
        if (last && !defer)
            free(g);
        san_list_del(&ref->link);
        ref->ctx = NULL;
        if (defer) {
            ref->free_reg = last;
            ref->dead_next = ctx->dead;
            ctx->dead = ref;
        } else {
            free(ref);
        }
    }
out:
    san_mutex_unlock(&ctx->lock);
    return err;
}

static void free_dead(struct client_ref *list)
{
    while (list) {
        struct client_ref *next = list->dead_next;
        if (list->free_reg)
            free(list->reg);
        free(list);
        list = next;
    }
}

void san_ctx_reap_dead(struct san_ctx *ctx)
{
    struct client_ref *list;
    if (san_ctx_forked(ctx)) { /* the child may not take a lock the fork caught held */
        list = ctx->dead;
        ctx->dead = NULL;
    } else {
        /* Taken and emptied under the lock: another thread's release may be adding to it. */
        san_mutex_lock(&ctx->lock);
        list = ctx->dead;
        ctx->dead = NULL;
        san_mutex_unlock(&ctx->lock);
    }
    free_dead(list);
}

void san_ctx_free_dead(struct san_ctx *ctx)
{
    free_dead(ctx->dead);
    ctx->dead = NULL;
}

void san_ctx_drop_regs(struct san_ctx *ctx, bool child)
{
    /* A forked child holds no pins (memory locks are not inherited) and may not take a lock the
     * fork caught held: it only frees its copies. */
    struct san_range *r;
    if (!child)
        san_mutex_lock(&ctx->lock);
    while ((r = san_range_first(&ctx->regs))) {
        san_range_erase(&ctx->regs, r);
        if (!child && !reg_of(r)->proxy)
            san_ctx_unpin_uncovered_locked(ctx, r->start, r->len);
        free(reg_of(r));
    }
    while (!san_list_empty(&ctx->refs)) {
        struct client_ref *ref = san_container_of(ctx->refs.next, struct client_ref, link);
        san_list_del(&ref->link);
        free(ref);
    }
    if (!child)
        san_mutex_unlock(&ctx->lock);
}
