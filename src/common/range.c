/* Range tree on top of the red-black tree (see range.h). */
#include "common/range.h"

bool san_range_augment(struct san_tree_node *n)
{
    return san_range_summarise(n, true);
}

bool san_range_augment_disjoint(struct san_tree_node *n)
{
    return san_range_summarise(n, false);
}

void san_range_insert(struct san_tree *t, struct san_range *r)
{
    struct san_tree_node **link = &t->root, *parent = NULL;

    while (*link) {
        parent = *link;
        link = r->start < san_range_of(parent)->start ? &parent->left : &parent->right;
    }
    r->node.user = 0;
    san_tree_link(t, &r->node, parent, link);
}

/* An inert range in a tree of disjoint ranges adds nothing to any summary. */
static inline bool neutral(const struct san_tree *t, const struct san_range *r)
{
    return (r->node.user & SAN_RANGE_INERT) && san_range_tree_is_disjoint(t);
}

static void link_at(struct san_tree *t, struct san_range *r, struct san_tree_node *parent,
                    struct san_tree_node **link)
{
    if (neutral(t, r)) {
        r->max_len = 0;
        san_tree_link_quiet(t, &r->node, parent, link);
    } else {
        san_tree_link(t, &r->node, parent, link);
    }
}

void san_range_insert_after(struct san_tree *t, struct san_range *pos, struct san_range *r)
{
    struct san_tree_node *n = &pos->node;

    if (!n->right) {
        link_at(t, r, n, &n->right);
        return;
    }
    for (n = n->right; n->left;)
        n = n->left;
    link_at(t, r, n, &n->left);
}

void san_range_insert_before(struct san_tree *t, struct san_range *pos, struct san_range *r)
{
    struct san_tree_node *n = &pos->node;

    if (!n->left) {
        link_at(t, r, n, &n->left);
        return;
    }
    for (n = n->left; n->right;)
        n = n->right;
    link_at(t, r, n, &n->right);
}

void san_range_erase(struct san_tree *t, struct san_range *r)
{
    if (neutral(t, r))
        san_tree_erase_quiet(t, &r->node);
    else
        san_tree_erase(t, &r->node);
}

struct san_range *san_range_floor(const struct san_tree *t, uint64_t addr)
{
    struct san_tree_node *n = t->root;
    struct san_range *best = NULL;

    while (n) {
        struct san_range *r = san_range_of(n);
        if (r->start <= addr) {
            best = r;
            n = n->right;
        } else {
            n = n->left;
        }
    }
    return best;
}

struct san_range *san_range_lookup(const struct san_tree *t, uint64_t addr)
{
    struct san_range *r = san_range_floor(t, addr);
    return r && addr - r->start < r->len ? r : NULL;
}

/* Lowest-start range in the subtree at n that overlaps [start, end). */
static struct san_range *first_overlap_in(struct san_tree_node *n, uint64_t start, uint64_t end)
{
    while (n) {
        struct san_range *r = san_range_of(n);
        struct san_range *l = san_range_of(n->left);
        if (r->max_end <= start)
            return NULL;
        if (l && l->max_end > start) {
            /* Something on the left ends after start; it overlaps unless it begins at or after
             * end, and every left range begins before r does. */
            struct san_range *found = first_overlap_in(n->left, start, end);
            if (found)
                return found;
        }
        if (r->start >= end)
            return NULL;
        if (san_range_end(r) > start)
            return r;
        n = n->right;
    }
    return NULL;
}

struct san_range *san_range_first_overlap(const struct san_tree *t, uint64_t start, uint64_t len)
{
    if (len == 0)
        return NULL;
    if (san_range_tree_is_disjoint(t)) {
        /* Only the range at or below start can reach into the query from below. */
        struct san_range *r = san_range_floor(t, start);
        if (r && san_range_end(r) > start)
            return r;
        r = r ? san_range_next(r) : san_range_first(t);
        return r && r->start < start + len ? r : NULL;
    }
    return first_overlap_in(t->root, start, start + len);
}

struct san_range *san_range_next_overlap(const struct san_range *r, uint64_t start, uint64_t len)
{
    uint64_t end = start + len;
    for (r = san_range_next(r); r && r->start < end; r = san_range_next(r))
        if (san_range_end(r) > start)
            return (struct san_range *)r;
    return NULL;
}

void san_range_gaps_init(struct san_range_gaps *g, const struct san_tree *t, uint64_t start,
                         uint64_t end)
{
    uint64_t len = end > start ? end - start : 0;
    *g = (struct san_range_gaps){.next = san_range_first_overlap(t, start, len),
                                 .at = start,
                                 .end = start + len,
                                 .qstart = start,
                                 .qlen = len};
}

bool san_range_gaps_next(struct san_range_gaps *g)
{
    /* Ranges that begin at or before the cursor cover it: move past them (they may nest). */
    while (g->next && g->next->start <= g->at) {
        if (san_range_end(g->next) > g->at)
            g->at = san_range_end(g->next);
        g->next = san_range_next_overlap(g->next, g->qstart, g->qlen);
    }
    if (g->at >= g->end)
        return false;
    uint64_t stop = g->next ? g->next->start : g->end; /* an overlapping range starts before end */
    g->start = g->at;
    g->len = stop - g->at;
    g->at = stop;
    return true;
}
