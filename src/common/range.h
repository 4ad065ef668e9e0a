/* Ranges [start, start+len) in a san_tree, keyed by start: the range/interval tree every module
 * uses (free extents and frame records in phys, registrations in mr, the client's registration
 * cache). Each node keeps two subtree summaries: the longest range (allocator searches prune on it)
 * and the highest end (overlap queries on trees whose ranges may overlap prune on it). A tree
 * made with san_range_tree_init_disjoint keeps only the first (max_end is then unused).
 * No locking: the owner of the tree serialises. */
#ifndef SAN_COMMON_RANGE_H
#define SAN_COMMON_RANGE_H

#include <stdbool.h>
#include <stdint.h>

#include "common/tree.h"

/* In node.user: the range is ordered and found like any other but does not count in max_len
 * (phys keeps its frame records among the free extents this way; searches prune on the longest
 * free one). Set it before inserting, or call san_range_changed after setting or clearing it. */
#define SAN_RANGE_INERT 1u

struct san_range {
    struct san_tree_node node;
    uint64_t start, len;
    uint64_t max_len; /* longest len in this subtree */
    uint64_t max_end; /* highest start + len in this subtree */
};

static inline uint64_t san_range_end(const struct san_range *r)
{
    return r->start + r->len;
}

static inline struct san_range *san_range_of(const struct san_tree_node *n)
{
    return n ? san_container_of(n, struct san_range, node) : NULL;
}

/* Summary callbacks: san_range_augment keeps max_len and max_end (trees whose ranges may
 * overlap); san_range_augment_disjoint keeps max_len only (trees whose ranges never overlap: free
 * extents, frame records), where max_end would only be the last range's end, changing along the
 * whole right spine whenever that range does. Queries work on both kinds. */
bool san_range_augment(struct san_tree_node *n);
bool san_range_augment_disjoint(struct san_tree_node *n);

/* Both, inline: recomputes n's summary and says whether it changed. */
static inline bool san_range_summarise(struct san_tree_node *n, bool with_end)
{
    struct san_range *r = san_range_of(n), *c;
    uint64_t max_len = n->user & SAN_RANGE_INERT ? 0 : r->len, max_end = san_range_end(r);

    if (n->left) {
        c = san_range_of(n->left);
        max_len = c->max_len > max_len ? c->max_len : max_len;
        max_end = c->max_end > max_end ? c->max_end : max_end;
    }
    if (n->right) {
        c = san_range_of(n->right);
        max_len = c->max_len > max_len ? c->max_len : max_len;
        max_end = c->max_end > max_end ? c->max_end : max_end;
    }
    if (!with_end) {
        if (r->max_len == max_len)
            return false;
        r->max_len = max_len;
        return true;
    }
    bool changed = r->max_len != max_len || r->max_end != max_end;
    r->max_len = max_len;
    r->max_end = max_end;
    return changed;
}

static inline void san_range_tree_init(struct san_tree *t)
{
    san_tree_init(t, san_range_augment);
}

static inline void san_range_tree_init_disjoint(struct san_tree *t)
{
    san_tree_init(t, san_range_augment_disjoint);
}

static inline bool san_range_tree_is_disjoint(const struct san_tree *t)
{
    return t->augment == san_range_augment_disjoint;
}

/* Inserts r (start and len set) as a plain range (node.user cleared). Equal starts go after the
 * existing ones. */
void san_range_insert(struct san_tree *t, struct san_range *r);
void san_range_erase(struct san_tree *t, struct san_range *r);
/* After changing r->len, or r->start without passing a neighbour's start. Call it before any
 * other insert or erase in the tree: their rotations recompute summaries locally and would hide
 * the change from the ancestors. */
static inline void san_range_changed(struct san_tree *t, struct san_range *r)
{
    san_tree_propagate(t, &r->node);
}

/* Links r (start, len and node.user set) right after pos in the order, or right before it: the
 * caller knows that r belongs there. No search: O(1) amortised plus the rebalancing. */
void san_range_insert_after(struct san_tree *t, struct san_range *pos, struct san_range *r);
void san_range_insert_before(struct san_tree *t, struct san_range *pos, struct san_range *r);

/* The range with the greatest start <= addr, or NULL. */
struct san_range *san_range_floor(const struct san_tree *t, uint64_t addr);
/* In a tree of disjoint ranges: the range that contains addr, or NULL. */
struct san_range *san_range_lookup(const struct san_tree *t, uint64_t addr);
/* In any tree (either kind): the range with the lowest start that overlaps [start, start+len), or
 * NULL. */
struct san_range *san_range_first_overlap(const struct san_tree *t, uint64_t start, uint64_t len);
/* The next range in start order that overlaps [start, start+len) after r, or NULL. */
struct san_range *san_range_next_overlap(const struct san_range *r, uint64_t start, uint64_t len);

/* The parts of [start, end) that no range of a tree covers, in address order (what a nested pin,
 * a watched span or a registration leaves uncovered when it goes):
 *
 *     struct san_range_gaps g;
 *     for (san_range_gaps_init(&g, t, start, end); san_range_gaps_next(&g);)
 *         release(g.start, g.len);
 *
 * Works on either kind of tree; the tree must not change during the walk. O(log n + ranges met). */
struct san_range_gaps {
    uint64_t start, len;          /* the current gap, after san_range_gaps_next returned true */
    const struct san_range *next; /* the next range overlapping [at, end), or NULL */
    uint64_t at, end;             /* what is left to walk */
    uint64_t qstart, qlen;        /* the whole query, for the overlap walk */
};
void san_range_gaps_init(struct san_range_gaps *g, const struct san_tree *t, uint64_t start,
                         uint64_t end);
/* Moves to the next gap: true with g->start and g->len set, false when the walk is over. */
bool san_range_gaps_next(struct san_range_gaps *g);

static inline struct san_range *san_range_first(const struct san_tree *t)
{
    return san_range_of(san_tree_first(t));
}
static inline struct san_range *san_range_last(const struct san_tree *t)
{
    return san_range_of(san_tree_last(t));
}
static inline struct san_range *san_range_next(const struct san_range *r)
{
    return san_range_of(san_tree_next(&r->node));
}
static inline struct san_range *san_range_prev(const struct san_range *r)
{
    return san_range_of(san_tree_prev(&r->node));
}

#endif
