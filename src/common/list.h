/* An intrusive circular doubly linked list: the caller embeds struct san_list in its object and
 * keeps a head of the same type (empty when it points at itself). O(1) everything, no allocation.
 * No locking: the owner of the list serialises. */
#ifndef SAN_COMMON_LIST_H
#define SAN_COMMON_LIST_H

#include <stdbool.h>

struct san_list {
    struct san_list *prev, *next;
};

/* An empty head, or an unlinked node (san_list_del leaves nodes so: deleting one twice is safe). */
static inline void san_list_init(struct san_list *l)
{
    l->prev = l->next = l;
}

static inline bool san_list_empty(const struct san_list *head)
{
    return head->next == head;
}

/* Links l right after pos (pos may be the head: l becomes the first). */
static inline void san_list_insert_after(struct san_list *pos, struct san_list *l)
{
    l->prev = pos;
    l->next = pos->next;
    pos->next->prev = l;
    pos->next = l;
}

/* Links l at the end of the list. */
static inline void san_list_append(struct san_list *head, struct san_list *l)
{
    san_list_insert_after(head->prev, l);
}

static inline void san_list_del(struct san_list *l)
{
    l->prev->next = l->next;
    l->next->prev = l->prev;
    san_list_init(l);
}

#endif
