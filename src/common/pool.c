/* Object pool (see pool.h). */
#include "common/pool.h"

#include <errno.h>
#include <stdlib.h>

struct chunk {
    struct chunk *next;
    max_align_t objs[];
};

void san_pool_init(struct san_pool *p, size_t obj_size)
{
    size_t a = _Alignof(max_align_t);
    if (obj_size < sizeof(void *))
        obj_size = sizeof(void *);
    p->obj_size = (obj_size + a - 1) / a * a;
    p->next_chunk = 64;
    p->free = NULL;
    p->chunks = NULL;
    p->in_use = p->capacity = 0;
}

void san_pool_destroy(struct san_pool *p)
{
    struct chunk *c = p->chunks;
    while (c) {
        struct chunk *next = c->next;
        free(c);
        c = next;
    }
    p->chunks = p->free = NULL;
    p->in_use = p->capacity = 0;
}

int san_pool_grow(struct san_pool *p)
{
    size_t n = p->next_chunk;
    struct chunk *c = malloc(sizeof(*c) + n * p->obj_size);
    if (!c)
        return -ENOMEM;
    c->next = p->chunks;
    p->chunks = c;
    char *base = (char *)c->objs;
    for (size_t i = n; i-- > 0;) {
        void **obj = (void **)(base + i * p->obj_size);
        *obj = p->free;
        p->free = obj;
    }
    p->capacity += n;
    if (p->next_chunk < 65536)
        p->next_chunk *= 2;
    return 0;
}
