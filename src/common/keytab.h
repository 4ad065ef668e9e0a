/* Key tables: handles that name objects by 32-bit keys, a slot index (low SAN_KEY_INDEX_BITS,
 * XOR a per-table salt) and a generation (the rest, never 0). A freed slot gets a new generation
 * before reuse, free slots are reused oldest first, and a slot whose generation would wrap is
 * retired, so a stale key is refused and never names a later object. Used for the registration
 * table's lkeys and rkeys (mr) and for the daemon's allocation handles.
 * No locking: the owner of the table serialises. */
#ifndef SAN_COMMON_KEYTAB_H
#define SAN_COMMON_KEYTAB_H

#include <stdint.h>

#define SAN_KEY_INDEX_BITS 20u
#define SAN_KEY_GEN_BITS   12u
#define SAN_KEY_SLOTS      (1u << SAN_KEY_INDEX_BITS)
#define SAN_KEY_GEN_MAX    ((1u << SAN_KEY_GEN_BITS) - 1u)

static inline uint32_t san_key_index(uint32_t key)
{
    return key & (SAN_KEY_SLOTS - 1u);
}
static inline uint32_t san_key_gen(uint32_t key)
{
    return key >> SAN_KEY_INDEX_BITS;
}

struct san_key_slot {
    void *obj;     /* NULL when free */
    uint32_t gen;  /* current generation, 1..SAN_KEY_GEN_MAX */
    uint32_t next; /* free list link (index), UINT32_MAX ends it */
};
struct san_keytab {
    struct san_key_slot *slots;
    uint32_t nr, cap; /* slots ever created, array size */
    uint32_t free_head, free_tail;
    uint32_t in_use, retired;
    uint32_t salt; /* XORed into the index bits of every key: keys are not slot numbers */
};
/* salt (low SAN_KEY_INDEX_BITS used) scrambles which key names which slot, so that keys are hard
 * to guess and two tables do not hand out the same numbers; 0 for none. */
void san_keytab_init(struct san_keytab *t, uint32_t salt);
void san_keytab_destroy(struct san_keytab *t);
/* Issues a key naming obj (not NULL): 0, -ENOBUFS when every slot is taken or retired, -ENOMEM. */
int san_keytab_alloc(struct san_keytab *t, void *obj, uint32_t *key);
/* The object key names, or NULL for a free slot, a stale generation or an index never issued. */
void *san_keytab_lookup(const struct san_keytab *t, uint32_t key);
/* Frees key's slot (key must be current). */
void san_keytab_free(struct san_keytab *t, uint32_t key);
/* Walks the objects in slot order: the first one at slot *slot or after it, with its key, or
 * NULL when there is none; *slot is set to its slot (continue from *slot + 1). The slot of a key
 * of this table is san_key_index(key) ^ salt. */
void *san_keytab_next(const struct san_keytab *t, uint32_t *slot, uint32_t *key);

#endif
