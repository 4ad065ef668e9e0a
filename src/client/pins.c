/* The context's pins of its own pages. Registration pins the pages before the daemon is asked
 * (the daemon cannot pin another process's pages; it validates the range through the pidfd and
 * gives it frames), and the last deregistration unpins them. mlock does not nest, so only pages
 * that no other registration of this context still covers are unpinned (the gap walk over
 * ctx->regs), and of those only what is still mapped (common/pin: a range the application
 * partly unmapped is unlocked run by mapped run).
 *
 * Locking: ctx->lock held (ctx->regs is the set of pins). */
#include "client/ctx.h"
#include "common/pin.h"

void san_ctx_unpin_uncovered_locked(struct san_ctx *ctx, uint64_t start, uint64_t len)
{
    san_assert_mutex_held(&ctx->lock);
    struct san_range_gaps g;
    for (san_range_gaps_init(&g, &ctx->regs, start, start + len); san_range_gaps_next(&g);)
        san_pin_unlock(g.start, g.len);
}

int san_ctx_pin_locked(struct san_ctx *ctx, uint64_t start, uint64_t len, unsigned access)
{
    san_assert_mutex_held(&ctx->lock);
    /* The daemon only accepts pages it sees present (it never faults in a client's page): fault
     * them in with the access a device will have (read-only stays read-only: -EFAULT). */
    int err = san_pin_populate(start, len, access & SAN_MEM_WRITE);
    if (err)
        return err;
    err = san_pin_lock(start, len);
    if (err)
        san_ctx_unpin_uncovered_locked(ctx, start, len); /* mlock may have pinned a prefix */
    return err;
}
