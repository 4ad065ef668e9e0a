/* lru: the cache's eviction order (see lru.h). Sits on common/list. Locking: the owner's. */
#include "client/lru.h"

void san_lru_init(struct san_lru *l, const struct san_lock_owner *lock)
{
    san_list_init(&l->head);
    l->count = 0;
    l->lock = lock;
}

static struct san_lru_node *node_of(struct san_list *l)
{
    return (struct san_lru_node *)((char *)l - offsetof(struct san_lru_node, link));
}

void san_lru_push_locked(struct san_lru *l, struct san_lru_node *n, uint64_t stamp)
{
    san_assert_held_if(l->lock);
    n->qstamp = stamp;
    san_list_append(&l->head, &n->link);
    l->count++;
}

void san_lru_remove_locked(struct san_lru *l, struct san_lru_node *n)
{
    san_assert_held_if(l->lock);
    san_list_del(&n->link);
    l->count--;
}

/* Keeps the list sorted by qstamp: walks back from the tail (requeued nodes are recent). */
static void insert_sorted_locked(struct san_lru *l, struct san_lru_node *n)
{
    san_assert_held_if(l->lock);
    struct san_list *pos = l->head.prev;
    while (pos != &l->head && node_of(pos)->qstamp > n->qstamp)
        pos = pos->prev;
    san_list_insert_after(pos, &n->link);
}

struct san_lru_node *san_lru_victim_locked(struct san_lru *l, san_lru_idle_fn idle)
{
    san_assert_held_if(l->lock);
    for (size_t i = 0; i <= 2 * l->count && !san_list_empty(&l->head); i++) {
        struct san_lru_node *n = node_of(l->head.next);
        uint64_t stamp;
        bool is_idle = idle(n, &stamp);
        if (is_idle && stamp == n->qstamp)
            return n;
        san_list_del(&n->link);
        n->qstamp = is_idle ? stamp : san_lru_now();
        insert_sorted_locked(l, n);
    }
    return NULL;
}
