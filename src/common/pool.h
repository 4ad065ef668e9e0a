/* A pool of fixed-size objects: allocation and release are a pointer swap on a free list; memory
 * comes from malloc in chunks that grow geometrically and is returned only when the pool is
 * destroyed. Used for metadata that churns on hot paths (free extents, frame records). No locking:
 * the owner serialises. */
#ifndef SAN_COMMON_POOL_H
#define SAN_COMMON_POOL_H

#include <errno.h>
#include <stddef.h>

struct san_pool {
    size_t obj_size;
    size_t next_chunk; /* objects in the next chunk */
    void *free;        /* singly linked through the first word of each free object */
    void *chunks;      /* singly linked list of chunks */
    size_t in_use, capacity;
};

void san_pool_init(struct san_pool *p, size_t obj_size);
void san_pool_destroy(struct san_pool *p);
/* Adds a chunk of objects: 0 or -ENOMEM. */
int san_pool_grow(struct san_pool *p);

/* NULL when memory runs out. */
static inline void *san_pool_get(struct san_pool *p)
{
    if (!p->free && san_pool_grow(p))
        return NULL;
    void **obj = p->free;
    p->free = *obj;
    p->in_use++;
    return obj;
}

static inline void san_pool_put(struct san_pool *p, void *obj)
{
    *(void **)obj = p->free;
    p->free = obj;
    p->in_use--;
}

/* Makes sure n more objects can be got without allocating: 0 or -ENOMEM. */
static inline int san_pool_reserve(struct san_pool *p, size_t n)
{
    while (p->capacity - p->in_use < n)
        if (san_pool_grow(p))
            return -ENOMEM;
    return 0;
}

#endif
