/* Key tables: 32-bit keys made of a slot index and a generation (see keytab.h).
 *
 * Free slots form a FIFO list, so a slot rests as long as possible before its next generation is
 * issued, and a slot whose generation would wrap is retired for good: a stale key can be refused
 * but can never name a later object. The slot array grows geometrically up to SAN_KEY_SLOTS.
 * The index bits of a key are the slot number XOR a per-table salt. Sits on malloc only. No
 * locking: the owner (the registration table, a daemon client) serialises. */
#include "common/keytab.h"

#include <errno.h>
#include <stdlib.h>

#define NIL UINT32_MAX

void san_keytab_init(struct san_keytab *t, uint32_t salt)
{
    *t = (struct san_keytab){
        .free_head = NIL, .free_tail = NIL, .salt = salt & (SAN_KEY_SLOTS - 1u)};
}

void san_keytab_destroy(struct san_keytab *t)
{
    free(t->slots);
    san_keytab_init(t, t->salt);
}

static uint32_t key_of(const struct san_keytab *t, uint32_t i)
{
    return t->slots[i].gen << SAN_KEY_INDEX_BITS | (i ^ t->salt);
}

static int grow(struct san_keytab *t)
{
    uint32_t cap = t->cap ? t->cap * 2 : 64;
    if (cap > SAN_KEY_SLOTS)
        cap = SAN_KEY_SLOTS;
    if (cap == t->cap)
        return -ENOBUFS;
    struct san_key_slot *s = realloc(t->slots, (size_t)cap * sizeof(*s));
    if (!s)
        return -ENOMEM;
    t->slots = s;
    t->cap = cap;
    return 0;
}

int san_keytab_alloc(struct san_keytab *t, void *obj, uint32_t *key)
{
    uint32_t i;

    if (t->free_head != NIL) {
        i = t->free_head;
        t->free_head = t->slots[i].next;
        if (t->free_head == NIL)
            t->free_tail = NIL;
    } else {
        if (t->nr == t->cap) {
            int err = grow(t);
            if (err)
                return err;
        }
        i = t->nr++;
        t->slots[i].gen = 1;
    }
    t->slots[i].obj = obj;
    t->slots[i].next = NIL;
    t->in_use++;
    *key = key_of(t, i);
    return 0;
}

void *san_keytab_lookup(const struct san_keytab *t, uint32_t key)
{
    uint32_t i = san_key_index(key) ^ t->salt;
    if (i >= t->nr || !t->slots[i].obj || t->slots[i].gen != san_key_gen(key))
        return NULL;
    return t->slots[i].obj;
}

void san_keytab_free(struct san_keytab *t, uint32_t key)
{
    uint32_t i = san_key_index(key) ^ t->salt;
    struct san_key_slot *s = &t->slots[i];

    s->obj = NULL;
    t->in_use--;
    if (s->gen == SAN_KEY_GEN_MAX) {
        t->retired++; /* never reissued: its keys stay stale forever */
        return;
    }
    s->gen++;
    s->next = NIL;
    if (t->free_tail == NIL)
        t->free_head = i;
    else
        t->slots[t->free_tail].next = i;
    t->free_tail = i;
}

void *san_keytab_next(const struct san_keytab *t, uint32_t *slot, uint32_t *key)
{
    for (uint32_t i = *slot; i < t->nr; i++) {
        if (t->slots[i].obj) {
            *slot = i;
            *key = key_of(t, i);
            return t->slots[i].obj;
        }
    }
    return NULL;
}
