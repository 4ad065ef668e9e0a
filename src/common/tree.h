/* An intrusive, augmented red-black tree: the one balanced tree of the project.
 *
 * The caller embeds struct san_tree_node in its own struct, finds the insertion link itself (it
 * knows its key), and may keep per-subtree summaries (the augment callback recomputes a node's
 * summary from its children; the tree calls it on every node whose subtree changed). Every
 * operation is O(log n) worst case and allocates nothing; rebalancing after an insert or erase is
 * O(1) amortised (red-black, not AVL: an AVL tree can rebalance up to the root on every one of a
 * repeated insert/erase at the same place, the allocator's commonest pattern). No locking: the
 * owner of the tree serialises. */
#ifndef SAN_COMMON_TREE_H
#define SAN_COMMON_TREE_H

#include <stdbool.h>
#include <stddef.h>

struct san_tree_node {
    struct san_tree_node *left, *right, *parent;
    unsigned char red;  /* colour: the tree's own */
    unsigned char user; /* free for the layer above (the range layer: SAN_RANGE_INERT) */
};

struct san_tree {
    struct san_tree_node *root;
    /* Recomputes n's summary from n and its children (which are up to date) and says whether it
     * changed: updates stop at the first ancestor whose summary came out unchanged. May be NULL. */
    bool (*augment)(struct san_tree_node *n);
    size_t count;
};

#define san_container_of(ptr, type, member) ((type *)((char *)(ptr)-offsetof(type, member)))

static inline void san_tree_init(struct san_tree *t, bool (*augment)(struct san_tree_node *))
{
    t->root = NULL;
    t->augment = augment;
    t->count = 0;
}

/* Links n at *link (a NULL child pointer of parent, or &t->root when parent is NULL) and
 * rebalances. */
void san_tree_link(struct san_tree *t, struct san_tree_node *n, struct san_tree_node *parent,
                   struct san_tree_node **link);
/* Like san_tree_link, for a node whose summary the caller has set and which changes no
 * ancestor's summary (a range that does not count in it): rebalances without the summary walk. */
void san_tree_link_quiet(struct san_tree *t, struct san_tree_node *n, struct san_tree_node *parent,
                         struct san_tree_node **link);
/* Unlinks n and rebalances. */
void san_tree_erase(struct san_tree *t, struct san_tree_node *n);
/* Like san_tree_erase, for a leaf whose removal changes no ancestor's summary. */
void san_tree_erase_quiet(struct san_tree *t, struct san_tree_node *n);
/* After the caller changed n's own summary inputs in place (not its order): refreshes the
 * summaries from n up to the root. */
void san_tree_propagate(struct san_tree *t, struct san_tree_node *n);

struct san_tree_node *san_tree_first(const struct san_tree *t);
struct san_tree_node *san_tree_last(const struct san_tree *t);
struct san_tree_node *san_tree_next(const struct san_tree_node *n);
struct san_tree_node *san_tree_prev(const struct san_tree_node *n);

#endif
