/* Augmented AVL tree with parent pointers (see tree.h). Rebalancing walks from the changed node
 * towards the root, recomputing height and summary on the way. When the summary callback can say
 * whether it changed (the range layer's can), the walk stops at the first node whose height and
 * summary came out as they were and where no rotation happened: its ancestors saw exactly those
 * values, so they are still exact. Otherwise every walk goes to the root. Either way O(log n). */
#include "common/tree.h"
#include "common/range.h"

static inline int height(const struct san_tree_node *n)
{
    return n ? n->height : 0;
}

/* Recomputes n's summary; true when it may have changed. The range layer's summaries are
 * inlined here and say whether they changed; another callback is assumed to change. */
static inline bool summarise(struct san_tree *t, struct san_tree_node *n)
{
    if (t->augment == san_range_augment_disjoint)
        return san_range_summarise(n, false);
    if (t->augment == san_range_augment)
        return san_range_summarise(n, true);
    if (t->augment) {
        t->augment(n);
        return true;
    }
    return false;
}

/* Recomputes n's height and summary; true when either may have changed. */
static inline bool pull(struct san_tree *t, struct san_tree_node *n)
{
    int l = height(n->left), r = height(n->right);
    int h = 1 + (l > r ? l : r);
    bool changed = h != n->height;

    n->height = h;
    return summarise(t, n) || changed;
}

static inline void replace_child(struct san_tree *t, struct san_tree_node *parent,
                                 struct san_tree_node *old, struct san_tree_node *new)
{
    if (!parent)
        t->root = new;
    else if (parent->left == old)
        parent->left = new;
    else
        parent->right = new;
}

static struct san_tree_node *rotate_left(struct san_tree *t, struct san_tree_node *x)
{
    struct san_tree_node *y = x->right, *p = x->parent;

    x->right = y->left;
    if (y->left)
        y->left->parent = x;
    y->left = x;
    x->parent = y;
    y->parent = p;
    replace_child(t, p, x, y);
    pull(t, x);
    pull(t, y);
    return y;
}

static struct san_tree_node *rotate_right(struct san_tree *t, struct san_tree_node *x)
{
    struct san_tree_node *y = x->left, *p = x->parent;

    x->left = y->right;
    if (y->right)
        y->right->parent = x;
    y->right = x;
    x->parent = y;
    y->parent = p;
    replace_child(t, p, x, y);
    pull(t, x);
    pull(t, y);
    return y;
}

/* Restores n's balance; returns the root of the subtree that was n's and sets *changed when that
 * subtree's height or summary may differ from what n's parent last saw. */
static struct san_tree_node *rebalance(struct san_tree *t, struct san_tree_node *n, bool *changed)
{
    *changed = pull(t, n);
    int bf = height(n->left) - height(n->right);
    if (bf > 1) {
        if (height(n->left->left) < height(n->left->right))
            rotate_left(t, n->left);
        *changed = true;
        return rotate_right(t, n);
    }
    if (bf < -1) {
        if (height(n->right->right) < height(n->right->left))
            rotate_right(t, n->right);
        *changed = true;
        return rotate_left(t, n);
    }
    return n;
}

/* Rebalances from n upwards. force is a node whose stored height and summary mean nothing to its
 * parent (a new leaf, or a node moved into an erased node's place): the walk goes at least
 * through it, and counts it as changed. */
static void fix_up(struct san_tree *t, struct san_tree_node *n, struct san_tree_node *force)
{
    while (n) {
        bool forced = n == force, changed;
        n = rebalance(t, n, &changed);
        if (forced) {
            force = NULL;
            changed = true;
        }
        if (!changed && !force)
            return;
        n = n->parent;
    }
}

void san_tree_link(struct san_tree *t, struct san_tree_node *n, struct san_tree_node *parent,
                   struct san_tree_node **link)
{
    n->left = n->right = NULL;
    n->parent = parent;
    n->height = 1;
    *link = n;
    t->count++;
    fix_up(t, n, n);
}

void san_tree_erase(struct san_tree *t, struct san_tree_node *n)
{
    struct san_tree_node *fix, *force = NULL;

    t->count--;
    if (n->left && n->right) {
        /* Put the in-order successor s where n was. */
        struct san_tree_node *s = n->right;
        while (s->left)
            s = s->left;
        if (s->parent == n) {
            fix = s;
        } else {
            fix = s->parent;
            fix->left = s->right;
            if (s->right)
                s->right->parent = fix;
            s->right = n->right;
            n->right->parent = s;
        }
        s->left = n->left;
        n->left->parent = s;
        s->parent = n->parent;
        s->height = n->height;
        replace_child(t, n->parent, n, s);
        force = s;
    } else {
        struct san_tree_node *child = n->left ? n->left : n->right;
        fix = n->parent;
        if (child)
            child->parent = fix;
        replace_child(t, fix, n, child);
    }
    fix_up(t, fix, force);
}

void san_tree_propagate(struct san_tree *t, struct san_tree_node *n)
{
    /* n's stored summary is what its parent saw: once one comes out unchanged, stop. */
    for (; n && summarise(t, n); n = n->parent)
        ;
}

struct san_tree_node *san_tree_first(const struct san_tree *t)
{
    struct san_tree_node *n = t->root;
    while (n && n->left)
        n = n->left;
    return n;
}

struct san_tree_node *san_tree_last(const struct san_tree *t)
{
    struct san_tree_node *n = t->root;
    while (n && n->right)
        n = n->right;
    return n;
}

struct san_tree_node *san_tree_next(const struct san_tree_node *n)
{
    if (n->right) {
        n = n->right;
        while (n->left)
            n = n->left;
        return (struct san_tree_node *)n;
    }
    while (n->parent && n->parent->right == n)
        n = n->parent;
    return n->parent;
}

struct san_tree_node *san_tree_prev(const struct san_tree_node *n)
{
    if (n->left) {
        n = n->left;
        while (n->right)
            n = n->right;
        return (struct san_tree_node *)n;
    }
    while (n->parent && n->parent->left == n)
        n = n->parent;
    return n->parent;
}
