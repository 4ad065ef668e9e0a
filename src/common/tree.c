/* Augmented red-black tree with parent pointers (see tree.h).
 *
 * Summaries are brought up to date before the colours are fixed: a change (a new leaf, a removed
 * node, a range whose length changed) is propagated from where it happened towards the root, and
 * the walk stops at the first node whose summary came out as it was, since its ancestors saw
 * exactly that value (the callback says whether the summary changed). Rotations then keep the
 * summaries exact locally: a rotation does not change which nodes a subtree holds, so only the two
 * rotated nodes are recomputed. */
#include "common/tree.h"

static inline bool is_red(const struct san_tree_node *n)
{
    return n && n->red;
}

/* Recomputes n's summary; true when it changed. */
static inline bool summarise(struct san_tree *t, struct san_tree_node *n)
{
    return t->augment && t->augment(n);
}

/* Recomputes summaries from n up. force is a node whose stored summary means nothing to its
 * parent (a new leaf, a node moved into an erased node's place), or NULL: the walk goes at least
 * through force, counting it as changed, and stops at the first unchanged node after it. */
static void update_up(struct san_tree *t, struct san_tree_node *n, struct san_tree_node *force)
{
    if (!t->augment)
        return;
    for (; n; n = n->parent) {
        bool changed = summarise(t, n);
        if (n == force) {
            force = NULL;
            changed = true;
        }
        if (!changed && !force)
            return;
    }
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

static void rotate_left(struct san_tree *t, struct san_tree_node *x)
{
    struct san_tree_node *y = x->right;

    x->right = y->left;
    if (y->left)
        y->left->parent = x;
    y->parent = x->parent;
    replace_child(t, x->parent, x, y);
    y->left = x;
    x->parent = y;
    summarise(t, x);
    summarise(t, y);
}

static void rotate_right(struct san_tree *t, struct san_tree_node *x)
{
    struct san_tree_node *y = x->left;

    x->left = y->right;
    if (y->right)
        y->right->parent = x;
    y->parent = x->parent;
    replace_child(t, x->parent, x, y);
    y->right = x;
    x->parent = y;
    summarise(t, x);
    summarise(t, y);
}

/* n is a new red leaf: repairs a red parent. */
static void insert_fixup(struct san_tree *t, struct san_tree_node *n)
{
    struct san_tree_node *p, *g, *u;
    while ((p = n->parent) && p->red) {
        g = p->parent; /* exists: the root is black */
        if (p == g->left) {
            u = g->right;
            if (is_red(u)) {
                p->red = u->red = 0;
                g->red = 1;
                n = g;
                continue;
            }
            if (n == p->right) {
                rotate_left(t, p);
                n = p;
                p = n->parent;
            }
            p->red = 0;
            g->red = 1;
            rotate_right(t, g);
        } else {
            u = g->left;
            if (is_red(u)) {
                p->red = u->red = 0;
                g->red = 1;
                n = g;
                continue;
            }
            if (n == p->left) {
                rotate_right(t, p);
                n = p;
                p = n->parent;
            }
            p->red = 0;
            g->red = 1;
            rotate_left(t, g);
        }
    }
    t->root->red = 0;
}

static inline void link_leaf(struct san_tree *t, struct san_tree_node *n,
                             struct san_tree_node *parent, struct san_tree_node **link)
{
    n->left = n->right = NULL;
    n->parent = parent;
    n->red = 1;
    *link = n;
    t->count++;
}

void san_tree_link(struct san_tree *t, struct san_tree_node *n, struct san_tree_node *parent,
                   struct san_tree_node **link)
{
    link_leaf(t, n, parent, link);
    update_up(t, n, n);
    insert_fixup(t, n);
}

void san_tree_link_quiet(struct san_tree *t, struct san_tree_node *n, struct san_tree_node *parent,
                         struct san_tree_node **link)
{
    link_leaf(t, n, parent, link);
    insert_fixup(t, n);
}

/* x (possibly NULL) under parent xp carries one black too few: restore the black heights. */
static void erase_fixup(struct san_tree *t, struct san_tree_node *x, struct san_tree_node *xp)
{
    struct san_tree_node *w;

    while (x != t->root && !is_red(x)) {
        if (x == xp->left) {
            w = xp->right; /* not NULL: its side has a black more */
            if (w->red) {
                w->red = 0;
                xp->red = 1;
                rotate_left(t, xp);
                w = xp->right;
            }
            if (!is_red(w->left) && !is_red(w->right)) {
                w->red = 1;
                x = xp;
                xp = x->parent;
                continue;
            }
            if (!is_red(w->right)) {
                w->left->red = 0;
                w->red = 1;
                rotate_right(t, w);
                w = xp->right;
            }
            w->red = xp->red;
            xp->red = 0;
            w->right->red = 0;
            rotate_left(t, xp);
        } else {
            w = xp->left;
            if (w->red) {
                w->red = 0;
                xp->red = 1;
                rotate_right(t, xp);
                w = xp->left;
            }
            if (!is_red(w->left) && !is_red(w->right)) {
                w->red = 1;
                x = xp;
                xp = x->parent;
                continue;
            }
            if (!is_red(w->left)) {
                w->right->red = 0;
                w->red = 1;
                rotate_left(t, w);
                w = xp->left;
            }
            w->red = xp->red;
            xp->red = 0;
            w->left->red = 0;
            rotate_right(t, xp);
        }
        x = t->root;
    }
    if (x)
        x->red = 0;
}

void san_tree_erase_quiet(struct san_tree *t, struct san_tree_node *z)
{
    struct san_tree_node *xp = z->parent;

    if (z->left || z->right) {
        san_tree_erase(t, z);
        return;
    }
    t->count--;
    replace_child(t, xp, z, NULL);
    if (!z->red)
        erase_fixup(t, NULL, xp);
}

void san_tree_erase(struct san_tree *t, struct san_tree_node *z)
{
    struct san_tree_node *x, *xp, *force = NULL;
    bool removed_red;

    t->count--;
    if (!z->left || !z->right) {
        x = z->left ? z->left : z->right;
        xp = z->parent;
        removed_red = z->red;
        if (x)
            x->parent = xp;
        replace_child(t, xp, z, x);
    } else {
        /* The in-order successor y takes z's place and colour; y's old place loses a node. */
        struct san_tree_node *y = z->right;
        while (y->left)
            y = y->left;
        removed_red = y->red;
        x = y->right;
        if (y->parent == z) {
            xp = y;
        } else {
            xp = y->parent;
            xp->left = x;
            if (x)
                x->parent = xp;
            y->right = z->right;
            z->right->parent = y;
        }
        y->left = z->left;
        z->left->parent = y;
        y->parent = z->parent;
        y->red = z->red;
        replace_child(t, z->parent, z, y);
        force = y;
    }
    update_up(t, xp, force);
    if (!removed_red)
        erase_fixup(t, x, xp);
}

void san_tree_propagate(struct san_tree *t, struct san_tree_node *n)
{
    /* n's stored summary is what its parent saw: once one comes out unchanged, stop. */
    update_up(t, n, NULL);
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
