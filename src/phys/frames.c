/* The frame allocator of the emulated machine: constrained, highest-first searches over the free
 * extents, carving, release with coalescing, and the frame records with their index.
 *
 * Free extents and frame records are the same object (struct san_frames, kind 0 for a free
 * extent), drawn from one pool and kept in one address-ordered range tree (see machine.h), so:
 * - a search descends from the highest address, pruning subtrees whose longest free extent is too
 *   short (max_len ignores the records, which are SAN_RANGE_INERT) or which lie outside the
 *   window: O(log n) for the usual request;
 * - carving links the new record next to the extent it came from, without a search; a request
 *   that takes a whole extent turns the extent into the record;
 * - freeing finds the record through the index (O(1)) and its free neighbours as its tree
 *   neighbours; releasing never allocates (the record becomes a free extent or goes back to the
 *   pool when it coalesces);
 * - exact memos make the commonest sequence (a free, then the same request again) cheap: a
 *   repeated request is answered from the last search's extent (the search hint); a shrink from
 *   carving is told to the tree only at the next change, which often merges the record straight
 *   back (the pending shrink); a freed CONTIG or COMMON record stays in place until the next
 *   change and the same request takes it back when it is exactly the highest placement (the
 *   deferred free); and the record carved last remembers the free extents it would join, so its
 *   free needs no walk while the tree stays as it was.
 * Locking: every function here expects m->lock held for writing (see machine.h), except
 * san_phys_frames_at, which only reads. */
#include "phys/machine.h"

#include <assert.h>
#include <errno.h>
#include <stdlib.h>
#include <sys/mman.h>

#include "common/page.h"

static inline struct san_frames *frames_of(struct san_range *r)
{
    return r ? san_container_of(r, struct san_frames, r) : NULL;
}

static inline bool is_free(const struct san_range *r)
{
    return !(r->node.user & SAN_RANGE_INERT);
}

/* ---- the index: frame records by start address ------------------------------------------- */

static inline size_t slot_of(const struct san_machine *m, san_paddr_t pa)
{
    return (size_t)(((pa >> 12) * UINT64_C(0x9e3779b97f4a7c15)) >> m->index_shift);
}

static inline size_t index_slots(const struct san_machine *m)
{
    return m->index ? (size_t)1 << (64 - m->index_shift) : 0;
}

static struct san_frames *index_find(const struct san_machine *m, san_paddr_t pa)
{
    if (!m->index)
        return NULL;
    size_t mask = index_slots(m) - 1;
    for (size_t i = slot_of(m, pa);; i = (i + 1) & mask) {
        const struct san_index_slot *s = &m->index[i];
        if (!s->f || s->start == pa)
            return s->f;
    }
}

static void index_put(struct san_machine *m, struct san_frames *f)
{
    size_t mask = index_slots(m) - 1, i = slot_of(m, f->r.start);
    while (m->index[i].f)
        i = (i + 1) & mask;
    m->index[i] = (struct san_index_slot){f->r.start, f};
    m->index_count++;
}

/* Makes room for one more record (load at most one half): 0 or -ENOMEM, nothing changed. */
static int index_reserve(struct san_machine *m)
{
    size_t slots = index_slots(m);
    if (m->index_count + 1 <= slots / 2)
        return 0;
    unsigned shift = slots ? m->index_shift - 1 : 64 - 6;
    struct san_index_slot *old = m->index,
                          *fresh = calloc((size_t)1 << (64 - shift), sizeof(*fresh));
    if (!fresh)
        return -ENOMEM;
    m->index = fresh;
    m->index_shift = shift;
    m->index_count = 0;
    for (size_t i = 0; i < slots; i++)
        if (old[i].f)
            index_put(m, old[i].f);
    free(old);
    return 0;
}

/* Removes f, closing the gap so that every probe sequence stays unbroken. */
static void index_del(struct san_machine *m, const struct san_frames *f)
{
    size_t mask = index_slots(m) - 1, i = slot_of(m, f->r.start);
    while (m->index[i].f != f)
        i = (i + 1) & mask;
    for (size_t j = (i + 1) & mask; m->index[j].f; j = (j + 1) & mask) {
        size_t home = slot_of(m, m->index[j].start);
        /* Move j back into the hole at i unless its home lies cyclically in (i, j]. */
        if (((j - home) & mask) >= ((j - i) & mask)) {
            m->index[i] = m->index[j];
            i = j;
        }
    }
    m->index[i] = (struct san_index_slot){0, NULL};
    m->index_count--;
}

struct san_frames *san_phys_frames_at(const struct san_machine *m, san_paddr_t pa)
{
    struct san_frames *f = index_find(m, pa);
    if (!f) {
        struct san_range *r = san_range_lookup(&m->frames, pa);
        f = r && !is_free(r) ? frames_of(r) : NULL;
    }
    return f && san_phys_is_record(f) ? f : NULL; /* a freed record's frames are free */
}

/* ---- searching ----------------------------------------------------------------------------- */

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

/* The highest free extent in the tree with a placement, and the placement: a depth-first walk
 * from the right, pruning subtrees whose longest free extent is too short, right subtrees that
 * start above the window and left subtrees that end below it. Iterative: the stack holds the
 * nodes whose right subtree is being searched (at most the tree's height). */
static struct san_range *search(struct san_tree_node *n, const struct window *w, uint64_t *at)
{
    struct san_tree_node *stack[2 * 64];
    size_t sp = 0;

    for (;;) {
        struct san_range *r = san_range_of(n);
        if (n && r->max_len >= w->bytes) {
            if (r->start < w->hi && n->right) {
                stack[sp++] = n;
                n = n->right;
                continue;
            }
        } else {
            if (!sp)
                return NULL;
            n = stack[--sp]; /* its right subtree had nothing: n itself, then its left */
            r = san_range_of(n);
        }
        if (is_free(r) && r->len >= w->bytes && place(r, w, at))
            return r;
        /* Everything to the left ends at or below r->start. */
        n = r->start > w->lo ? n->left : NULL;
    }
}

/* The search hint. A search for window w that found extent e proves that no free extent above e
 * has a placement for w. That stays true while the extents above e only shrink or vanish, so the
 * same request again (drivers ask for the same buffer shape over and over) is answered by e
 * alone, as long as e still has a placement; otherwise a full search runs. Whatever could make an
 * extent above e appear or grow, or e stop being a free extent, drops the hint: a carve from e
 * that leaves a free tail above the record or takes all of e, a free that creates or grows an
 * extent above e, a coalesce that erases e. */
static inline bool hint_matches(const struct san_machine *m, const struct window *w)
{
    return m->hint && m->hint_bytes == w->bytes && m->hint_lo == w->lo && m->hint_hi == w->hi &&
           m->hint_boundary == w->boundary;
}

static inline void hint_set(struct san_machine *m, struct san_range *e, const struct window *w)
{
    m->hint = frames_of(e);
    m->hint_bytes = w->bytes;
    m->hint_lo = w->lo;
    m->hint_hi = w->hi;
    m->hint_boundary = w->boundary;
}

/* A free extent x grew or appeared. */
static inline void hint_grown(struct san_machine *m, const struct san_range *x)
{
    if (m->hint && &m->hint->r != x && x->start > m->hint->r.start)
        m->hint = NULL;
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

/* ---- carving and releasing ----------------------------------------------------------------- */

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

/* Makes f a record of kind (0: a free extent) over [start, start+len), every other field cleared,
 * keeping its links and summary (what its parent saw: san_range_changed compares with it). */
/* Every field of a record: reinit must clear them all (extend it with the struct). */
static_assert(sizeof(struct san_frames) ==
                  sizeof(struct san_range) + 3 + 1 + 2 + 2 +
                      3 * sizeof(void *), /* kind cache access, pad, last_bytes, pad */
              "struct san_frames changed: clear the new fields in reinit");

static void reinit(struct san_frames *f, uint64_t start, uint64_t len, unsigned kind)
{
    f->r.start = start;
    f->r.len = len;
    f->r.node.user = kind ? SAN_RANGE_INERT : 0;
    f->kind = (uint8_t)kind;
    f->cache = 0;
    f->access = 0;
    f->last_bytes = 0;
    f->tag = NULL;
    f->owner = NULL;
    f->owner_va = 0;
}

/* The pending shrink. Carving from the top or the bottom of a free extent shrinks it, and telling
 * its ancestors (max_len) takes a walk up the tree; the commonest next step, freeing that record
 * again, grows it back and takes the same walk. So the shrink is left pending: the extent's length
 * is already right, its ancestors still see the old one (an over-estimate: a search could only
 * look in vain, never miss). Every operation starts by settling a pending shrink (one walk, as
 * before), except a free that merges the record back into that very extent without rotations (a
 * red leaf): that regrows the extent first and then settles it, usually in one step. Nothing
 * else changes the tree while a shrink is pending, so no rotation ever sees it. */
static void settle(struct san_machine *m)
{
    if (m->pending) {
        san_range_changed(&m->frames, &m->pending->r);
        m->pending = NULL;
    }
}

/* Takes [at, at+len) out of free extent e and records it as a frame record of kind. The pool
 * must hold two spare objects and the index room for one more record; no shrink is pending. */
static struct san_frames *carve(struct san_machine *m, struct san_range *e, uint64_t at,
                                uint64_t len, enum san_frames_kind kind)
{
    uint64_t end = at + len, e_start = e->start, e_end = san_range_end(e);
    struct san_frames *f;

    if (m->hint && &m->hint->r == e && (at == e_start) == (end == e_end))
        m->hint = NULL; /* all of it, or a free tail above the record */
    /* The free extents the record will join when freed, if nothing changes meanwhile: what is
     * left of e on either side (e's own neighbours are records or RAM edges, never free: free
     * extents are never adjacent and no freed record waits while carving). */
    m->carved_prev = at != e_start ? e : NULL;
    m->carved_next = end == e_end ? NULL : at == e_start ? e : NULL; /* a tail: set below */
    if (at == e_start && end == e_end) {
        /* The whole extent: it becomes the record, in place. */
        f = frames_of(e);
        reinit(f, at, len, kind);
        san_range_changed(&m->frames, &f->r);
        m->free_extents--;
    } else if (at == e_start || end == e_end) {
        /* From the bottom or the top: link the record next to e (e unchanged so far, so the
         * rebalancing sees consistent summaries), then shrink e, pending. */
        f = san_pool_get(&m->pool);
        reinit(f, at, len, kind);
        if (at == e_start) {
            san_range_insert_before(&m->frames, e, &f->r);
            e->start = end; /* its order among disjoint ranges is unchanged */
            e->len = e_end - end;
        } else {
            san_range_insert_after(&m->frames, e, &f->r);
            e->len = at - e_start;
        }
        m->pending = frames_of(e);
    } else {
        e->len = at - e_start;
        san_range_changed(&m->frames, e);
        f = san_pool_get(&m->pool);
        reinit(f, at, len, kind);
        san_range_insert_after(&m->frames, e, &f->r);
        struct san_frames *tail = san_pool_get(&m->pool);
        reinit(tail, end, e_end - end, 0);
        san_range_insert_after(&m->frames, &f->r, &tail->r);
        m->carved_next = &tail->r;
        m->free_extents++;
    }
    m->carved = f;
    index_put(m, f);
    account(m, f, +1);
    return f;
}

/* Everything an allocation needs before anything changes: 0 or -ENOMEM. */
static int reserve(struct san_machine *m)
{
    if (san_pool_reserve(&m->pool, 2) || index_reserve(m))
        return -ENOMEM;
    return 0;
}

/* Drops the bytes of free low frames so that the pattern check finds them clean. */
static void scrub(struct san_machine *m, const struct san_frames *f)
{
    uint64_t low = san_low_part(f->r.start, f->r.len);
    if (!m->nolowmem || !low || f->kind == SAN_FRAMES_LOCKED)
        return;
    madvise(san_phys_to_host(m, f->r.start), low, MADV_DONTNEED);
}

/* The free extents f's frames join when released: prev ends where f starts, next starts where
 * f ends (NULL: none on that side). Only within f's RAM segment: at its edges there is nothing
 * to join (and the walk to the neighbour would be the longest at the top of RAM, where most
 * allocations are). */
static void neighbours(const struct san_machine *m, const struct san_frames *f,
                       struct san_range **prev, struct san_range **next)
{
    const struct san_range *r = &f->r;
    uint64_t start = r->start, end = start + r->len;
    const struct san_ram_seg *seg = san_phys_seg(m, start);
    struct san_range *p = NULL, *n = NULL;

    if (start != seg->base && (p = san_range_prev(r)) && !(is_free(p) && san_range_end(p) == start))
        p = NULL;
    if (end != seg->base + seg->size && (n = san_range_next(r)) && !(is_free(n) && n->start == end))
        n = NULL;
    *prev = p;
    *next = n;
}

/* How the number of free extents changes when frames join prev and next: one more, the same,
 * or one fewer. */
static inline int64_t join_delta(const struct san_range *prev, const struct san_range *next)
{
    return prev && next ? -1 : prev || next ? 0 : 1;
}

/* The tree part of releasing record f (already out of the index and accounted): f joins prev
 * and next (its free neighbours, from neighbours()) or becomes a free extent itself. Counts no
 * free extents (the caller does, with join_delta). */
static void release(struct san_machine *m, struct san_frames *f, struct san_range *prev,
                    struct san_range *next)
{
    struct san_range *r = &f->r;
    uint64_t start = r->start, len = r->len;
    bool join_prev = prev != NULL, join_next = next != NULL;

    m->carved = NULL; /* the tree changes */

    struct san_range *pending = m->pending ? &m->pending->r : NULL;
    if (pending && join_prev != join_next && pending == (join_prev ? prev : next) &&
        !r->node.left && !r->node.right && r->node.red) {
        /* Back into the extent it was just carved from, and erasing a red leaf rotates nothing:
         * regrow the extent, then unlink the record, then settle (see settle). */
        if (join_prev) {
            prev->len += len;
        } else {
            next->start = start;
            next->len += len;
        }
        san_range_erase(&m->frames, r);
        san_pool_put(&m->pool, f);
        settle(m);
        hint_grown(m, pending);
        return;
    }
    settle(m);

    /* Erase before growing a neighbour: a change not yet propagated would be lost in the erase's
     * rotations (see san_range_changed). */
    if (join_next && m->hint && next == &m->hint->r && join_prev)
        m->hint = NULL; /* next is about to be erased */
    if (join_prev && join_next) {
        uint64_t next_len = next->len;
        san_range_erase(&m->frames, r);
        san_range_erase(&m->frames, next);
        san_pool_put(&m->pool, f);
        san_pool_put(&m->pool, frames_of(next));
        prev->len += len + next_len;
        san_range_changed(&m->frames, prev);
        hint_grown(m, prev);
    } else if (join_prev) {
        san_range_erase(&m->frames, r);
        san_pool_put(&m->pool, f);
        prev->len += len;
        san_range_changed(&m->frames, prev);
        hint_grown(m, prev);
    } else if (join_next) {
        san_range_erase(&m->frames, r);
        san_pool_put(&m->pool, f);
        next->start = start; /* still after prev, which ends before start */
        next->len += len;
        san_range_changed(&m->frames, next);
        hint_grown(m, next);
    } else {
        /* The record itself becomes the free extent, in place. */
        reinit(f, start, len, 0);
        san_range_changed(&m->frames, r);
        hint_grown(m, r);
    }
}

/* The deferred free. The commonest sequence is a free and then the same request again (a driver
 * recycling its buffers), which would take the record out of the tree and the index, merge its
 * frames into their neighbours, and then carve the same frames out again. So a freed CONTIG or
 * COMMON record stays where it is, as kind SAN_FRAMES_FREED: accounted as free at once (every
 * counter, free extents included, says what the merge will make of it), scrubbed at once, and
 * free memory to every reader (san_phys_frames_at, san_phys_is_record). Every operation that
 * changes the tree first flushes it (the real release); only the allocation below may take it
 * back instead, when it is exactly the answer the search would give: the request is the hint's
 * (no free extent above the hint's extent has a placement for it), the hint's extent is one the
 * record would join, and the highest placement in the run the record would be part of is the
 * record itself. So placements are exactly those of an immediate release. One record at most:
 * memory stays proportional to allocations, and a flush is one release. */
static void flush(struct san_machine *m)
{
    struct san_frames *f = m->freed;
    if (!f)
        return;
    m->freed = NULL;
    index_del(m, f);
    release(m, f, m->freed_prev, m->freed_next);
}

/* The deferred record as the answer to window w (the hint's request) for a record of kind, or
 * NULL (nothing changed). */
static struct san_frames *reuse(struct san_machine *m, const struct window *w,
                                enum san_frames_kind kind)
{
    struct san_frames *f = m->freed;
    struct san_range *prev = m->freed_prev, *next = m->freed_next, *e = &m->hint->r;
    uint64_t at;

    if (f->r.len != w->bytes || (e != prev && e != next))
        return NULL;
    struct san_range run = {.start = prev ? prev->start : f->r.start};
    run.len = (next ? san_range_end(next) : san_range_end(&f->r)) - run.start;
    if (!place(&run, w, &at) || at != f->r.start)
        return NULL;
    m->freed = NULL;
    m->free_extents -= join_delta(prev, next);
    reinit(f, f->r.start, f->r.len, kind);
    account(m, f, +1);
    m->carved = f; /* the tree is as it was when f was carved or last taken back */
    m->carved_prev = prev;
    m->carved_next = next;
    return f;
}

void san_phys_free_locked(struct san_machine *m, struct san_frames *f)
{
    struct san_range *prev, *next;

    san_assert_machine_locked(m);
    flush(m);
    if (m->carved == f) {
        prev = m->carved_prev;
        next = m->carved_next;
    } else {
        neighbours(m, f, &prev, &next);
    }
    account(m, f, -1);
    scrub(m, f);
    m->free_extents += join_delta(prev, next);
    if (f->kind == SAN_FRAMES_CONTIG || f->kind == SAN_FRAMES_COMMON) {
        f->kind = SAN_FRAMES_FREED;
        m->freed = f;
        m->freed_prev = prev;
        m->freed_next = next;
        return;
    }
    index_del(m, f);
    release(m, f, prev, next);
}

struct san_frames *san_phys_alloc_locked(struct san_machine *m, uint64_t bytes, san_paddr_t lowest,
                                         san_paddr_t highest, uint64_t boundary,
                                         enum san_frames_kind kind, int *err)
{
    struct window w = {.bytes = bytes, .boundary = boundary};
    uint64_t at;
    struct san_range *e;

    san_assert_machine_locked(m);
    if (!bytes || bytes % PAGE || (boundary && (boundary & (boundary - 1) || boundary < bytes))) {
        *err = -EINVAL;
        return NULL;
    }
    if (!make_window(m, lowest, highest, &w)) {
        *err = -ENOMEM;
        return NULL;
    }
    struct san_frames *f;
    if (m->freed && hint_matches(m, &w) && (f = reuse(m, &w, kind)))
        return f;
    flush(m);
    settle(m);
    if (hint_matches(m, &w) && place(&m->hint->r, &w, &at)) {
        e = &m->hint->r;
    } else {
        e = search(m->frames.root, &w, &at);
        m->hint = NULL;
        if (!e) {
            *err = -ENOMEM;
            return NULL;
        }
        hint_set(m, e, &w);
    }
    if (reserve(m)) {
        *err = -ENOMEM;
        return NULL;
    }
    uint64_t e_start = e->start, e_end = san_range_end(e);
    f = carve(m, e, at, bytes, kind);
    if (at > e_start && at + bytes < e_end) {
        /* From the middle (a window's end or a boundary inside e): carve dropped the hint, but
         * it still holds for e, now the part below: at was the highest placement in e, so the
         * free tail above has none, and nothing else above e changed. */
        hint_set(m, e, &w);
    }
    return f;
}

struct san_frames *san_phys_alloc_piece_locked(struct san_machine *m, uint64_t bytes,
                                               san_paddr_t lowest, san_paddr_t highest,
                                               enum san_frames_kind kind)
{
    struct window w = {.bytes = PAGE};
    uint64_t at;
    struct san_range *e;

    san_assert_machine_locked(m);
    if (!bytes || bytes % PAGE)
        return NULL;
    flush(m);
    settle(m);
    if (!make_window(m, lowest, highest, &w) || !(e = search(m->frames.root, &w, &at)))
        return NULL;
    if (reserve(m))
        return NULL;
    /* e has at least a page in the window, ending at at + PAGE: take up to bytes below that. */
    uint64_t end = at + PAGE, s = e->start > w.lo ? e->start : w.lo;
    uint64_t len = end - s < bytes ? end - s : bytes;
    return carve(m, e, end - len, len, kind);
}
