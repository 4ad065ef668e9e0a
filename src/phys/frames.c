/* The frame allocator of the emulated machine: constrained, highest-first searches over the free
 * extents, carving, release with coalescing, and the frame records.
 *
 * Free extents and frame records are the same object (struct san_frames; a free extent is a record
 * of kind 0 in free_tree), drawn from one pool, so releasing frames never allocates: the record
 * becomes the free extent or goes back to the pool when it coalesces. Searches descend the free
 * tree from the highest address, pruning subtrees whose longest extent is too short or which lie
 * outside the window: O(log n) for the usual request.
 * Locking: every function here expects m->lock held for writing (see machine.h). */
#include "phys/machine.h"

#include <errno.h>
#include <sys/mman.h>

#define PAGE ((uint64_t)SAN_PAGE_SIZE)

struct window {
    uint64_t lo, hi; /* [lo, hi), page-aligned */
    uint64_t bytes;  /* wanted, whole pages */
    uint64_t boundary;
};

/* Highest placement of w->bytes in e within the window and boundary, if any. */
static bool place(const struct san_range *e, const struct window *w, uint64_t *at)
{
    uint64_t s = e->start > w->lo ? e->start : w->lo;
    uint64_t end = san_range_end(e) < w->hi ? san_range_end(e) : w->hi;

    if (end <= s || end - s < w->bytes)
        return false;
    uint64_t a = end - w->bytes;
    if (w->boundary) {
        uint64_t mask = ~(w->boundary - 1), last = a + w->bytes - 1;
        if ((a & mask) != (last & mask)) {
            /* Crossing: end the block at the multiple of boundary inside it (which is >= bytes). */
            a = (last & mask) - w->bytes;
            if (a < s)
                return false;
        }
    }
    *at = a;
    return true;
}

static struct san_range *search(struct san_tree_node *n, const struct window *w, uint64_t *at)
{
    while (n) {
        struct san_range *r = san_range_of(n);
        if (r->max_len < w->bytes)
            return NULL;
        if (r->start < w->hi && n->right) {
            struct san_range *found = search(n->right, w, at);
            if (found)
                return found;
        }
        if (r->len >= w->bytes && place(r, w, at))
            return r;
        if (r->start <= w->lo)
            return NULL; /* everything to the left ends at or below r->start */
        n = n->left;
    }
    return NULL;
}

/* Window of a request: [lowest, highest] inclusive to page-aligned [lo, hi), NOLOWMEM applied. */
static bool make_window(const struct san_machine *m, san_paddr_t lowest, san_paddr_t highest,
                        struct window *w)
{
    uint64_t lo = (lowest + PAGE - 1) & ~(PAGE - 1);
    uint64_t hi = highest == UINT64_MAX ? UINT64_MAX & ~(PAGE - 1) : (highest + 1) & ~(PAGE - 1);

    if (lowest > UINT64_MAX - PAGE)
        return false;
    if (m->nolowmem && highest >= SAN_4G && lo < SAN_4G)
        lo = SAN_4G; /* a request that may go high never gets low frames */
    if (lo >= hi)
        return false;
    w->lo = lo;
    w->hi = hi;
    return true;
}

static void account(struct san_machine *m, const struct san_frames *f, int sign)
{
    uint64_t len = f->r.len, low = san_low_part(f->r.start, f->r.len);
    if (sign > 0) {
        m->free_bytes -= len;
        m->low_free_bytes -= low;
    } else {
        m->free_bytes += len;
        m->low_free_bytes += low;
    }
    switch (f->kind) {
    case SAN_FRAMES_CONTIG:
    case SAN_FRAMES_COMMON:
        m->allocations += sign;
        m->allocated_bytes += sign * (int64_t)len;
        break;
    case SAN_FRAMES_LOCKED:
        m->locked_bytes += sign * (int64_t)len;
        break;
    default:
        break;
    }
}

/* Takes [at, at+len) out of free extent e and records it as a frame record of kind. The pool must
 * hold two spare objects. */
static struct san_frames *carve(struct san_machine *m, struct san_range *e, uint64_t at,
                                uint64_t len, enum san_frames_kind kind)
{
    uint64_t end = at + len, e_end = san_range_end(e);

    if (at == e->start && end == e_end) {
        san_range_erase(&m->free_tree, e);
        san_pool_put(&m->pool, e);
    } else if (at == e->start) {
        e->start = end; /* its order among disjoint extents is unchanged */
        e->len = e_end - end;
        san_range_changed(&m->free_tree, e);
    } else {
        e->len = at - e->start;
        san_range_changed(&m->free_tree, e);
        if (end != e_end) {
            struct san_range *tail = san_pool_get(&m->pool);
            tail->start = end;
            tail->len = e_end - end;
            san_range_insert(&m->free_tree, tail);
        }
    }

    struct san_frames *f = san_pool_get(&m->pool);
    *f = (struct san_frames){.r = {.start = at, .len = len}, .kind = (uint8_t)kind};
    san_range_insert(&m->used_tree, &f->r);
    account(m, f, +1);
    return f;
}

struct san_frames *san_phys_alloc_locked(struct san_machine *m, uint64_t bytes, san_paddr_t lowest,
                                         san_paddr_t highest, uint64_t boundary,
                                         enum san_frames_kind kind, int *err)
{
    struct window w = {.bytes = bytes, .boundary = boundary};
    uint64_t at;
    struct san_range *e;

    if (!bytes || bytes % PAGE || (boundary && (boundary & (boundary - 1) || boundary < bytes))) {
        *err = -EINVAL;
        return NULL;
    }
    if (san_pool_reserve(&m->pool, 2)) {
        *err = -ENOMEM;
        return NULL;
    }
    if (!make_window(m, lowest, highest, &w) || !(e = search(m->free_tree.root, &w, &at))) {
        *err = -ENOMEM;
        return NULL;
    }
    return carve(m, e, at, bytes, kind);
}

struct san_frames *san_phys_alloc_piece_locked(struct san_machine *m, uint64_t bytes,
                                               san_paddr_t lowest, san_paddr_t highest,
                                               enum san_frames_kind kind)
{
    struct window w = {.bytes = PAGE};
    uint64_t at;
    struct san_range *e;

    if (!bytes || bytes % PAGE || san_pool_reserve(&m->pool, 2))
        return NULL;
    if (!make_window(m, lowest, highest, &w) || !(e = search(m->free_tree.root, &w, &at)))
        return NULL;
    /* e has at least a page in the window, ending at at + PAGE: take up to bytes below that. */
    uint64_t end = at + PAGE, s = e->start > w.lo ? e->start : w.lo;
    uint64_t len = end - s < bytes ? end - s : bytes;
    return carve(m, e, end - len, len, kind);
}

/* Drops the bytes of free low frames so that the pattern check finds them clean. */
static void scrub(struct san_machine *m, const struct san_frames *f)
{
    uint64_t low = san_low_part(f->r.start, f->r.len);
    if (!m->nolowmem || !low || f->kind == SAN_FRAMES_LOCKED)
        return;
    madvise(san_phys_to_host(m, f->r.start), low, MADV_DONTNEED);
}

void san_phys_free_locked(struct san_machine *m, struct san_frames *f)
{
    uint64_t start = f->r.start, end = san_range_end(&f->r);

    san_range_erase(&m->used_tree, &f->r);
    account(m, f, -1);
    scrub(m, f);

    struct san_range *prev = san_range_floor(&m->free_tree, start);
    struct san_range *next = prev ? san_range_next(prev) : san_range_first(&m->free_tree);
    bool join_prev = prev && san_range_end(prev) == start;
    bool join_next = next && next->start == end;

    if (join_prev && join_next) {
        /* Erase first: a change not yet propagated would be lost in the erase's rotations. */
        uint64_t next_len = next->len;
        san_range_erase(&m->free_tree, next);
        san_pool_put(&m->pool, next);
        prev->len += next_len + (end - start);
        san_range_changed(&m->free_tree, prev);
    } else if (join_prev) {
        prev->len += end - start;
        san_range_changed(&m->free_tree, prev);
    } else if (join_next) {
        next->start = start;
        next->len += end - start;
        san_range_changed(&m->free_tree, next);
    } else {
        /* The record itself becomes the free extent. */
        *f = (struct san_frames){.r = {.start = start, .len = end - start}};
        san_range_insert(&m->free_tree, &f->r);
        return;
    }
    san_pool_put(&m->pool, f);
}
