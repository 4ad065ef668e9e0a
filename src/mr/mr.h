/* Memory registrations (the NIC's memory table, struct san_regtab): keys, access rights,
 * reference counts. The daemon's side of a registration; libsan's handle for one is struct san_mr
 * (<san/client.h>), a different thing, hence the prefix san_regtab_ here.
 *
 * A registration is a locked MDL of an owner plus access rights plus keys. Keys are 32 bits, from
 * key tables (common/keytab.h): a stale key is detected and never names a later registration.
 * Local keys (lkey) and remote keys (rkey, RDMA registrations only) come from two tables: an rkey
 * can be revoked or re-issued without touching the lkey.
 *
 * Each owner (a daemon client) has a struct san_regtab_set: its registrations by virtual range, so
 * that the same range and access registered again finds the existing registration and adds a
 * reference, and its counts against the per-client limits. One owner can never name another's
 * registration: lkey operations check the set.
 *
 * Locking: the table's mutex protects both key tables, every set and every entry. Operations in
 * flight (the NIC) hold a use count on an entry (san_regtab_get_* / san_regtab_put); the last
 * deregistration of an entry in use fails with -EBUSY, and releasing a whole set waits for its
 * entries' uses to drain (the table's condition variable). */
#ifndef SAN_MR_MR_H
#define SAN_MR_MR_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include <san/types.h>

#include "common/keytab.h"
#include "common/range.h"
#include "mdl/owner.h"
#include "phys/machine.h"

struct san_regtab;
struct san_mdl;

struct san_regtab_set {
    struct san_tree by_va; /* struct san_regtab_entry, by the owner's virtual start (may overlap) */
    const struct san_page_owner *owner;
    uint64_t registrations; /* distinct registrations */
    uint64_t locked_bytes;  /* their whole pages */
    /* NULL, or a count of locked bytes this set shares with others (the daemon: every client of
     * one uid), kept under the table's lock and checked against lim->account_locked_bytes. */
    uint64_t *account_locked;
};

struct san_regtab_entry {
    struct san_range r; /* owner's range as asked */
    struct san_regtab_set *set;
    struct san_mdl *mdl;
    uint64_t pages_bytes; /* whole pages the lock covers */
    uint32_t lkey, rkey;  /* rkey 0: local registration */
    uint32_t refs;        /* registrations of this range+access by the owner */
    uint32_t uses;        /* operations in flight */
    uint8_t access;       /* SAN_MEM_* */
    bool rdma;
    void (*release)(void *arg); /* a backed registration's (san_regtab_backing) */
    void *release_arg;
};

/* What backs a registration other than the owner's own pages: memory the machine already gave the
 * owner, mapped at the registered range (a daemon client's proxy memory), physically contiguous
 * from pa (the frame of the range's first page). Nothing is locked (the entry counts no locked
 * bytes); devices reach the frames directly. release(arg) runs once the registration is gone,
 * under the table's lock: the owner of the memory keeps it allocated until then. */
struct san_regtab_backing {
    san_paddr_t pa;
    void (*release)(void *arg);
    void *arg;
};

struct san_regtab_limits {
    uint64_t locked_bytes;         /* per set; 0: none */
    uint64_t registrations;        /* per set; 0: none */
    uint64_t account_locked_bytes; /* per shared account (set->account_locked); 0: none */
};

int san_regtab_create(struct san_machine *m, struct san_regtab **out);
/* Every set must have been released. NULL is a no-op. */
void san_regtab_destroy(struct san_regtab *reg);
/* Registrations and locked bytes over every set. */
void san_regtab_counts(struct san_regtab *reg, uint64_t *registrations, uint64_t *locked_bytes);

void san_regtab_set_init(struct san_regtab_set *set, const struct san_page_owner *owner);
/* Drops every registration of set (the owner went away), waiting for operations in flight on them
 * to finish. Blocks only while the NIC uses one. */
void san_regtab_set_release(struct san_regtab *reg, struct san_regtab_set *set);

/* Registers [va, va+len) of set's owner with access (SAN_MEM_*), as RDMA memory when rdma. The same
 * range, access and kind again adds a reference to the existing registration (*refs > 1).
 * -EINVAL (arguments), -EFAULT (unmapped), -ENOMEM (frames), -ENOBUFS (a limit, or keys run out).
 * Blocks in the owner validation (process_vm_readv). */
int san_regtab_register(struct san_regtab *reg, struct san_regtab_set *set, uint64_t va,
                        uint64_t len, unsigned access, bool rdma,
                        const struct san_regtab_limits *lim, uint32_t *lkey, uint32_t *rkey,
                        uint32_t *refs);
/* san_regtab_register for memory that backing describes (NULL: the owner's pages, as above). The
 * same range, access and kind finds an existing registration only when it has the same backing. */
int san_regtab_register_backed(struct san_regtab *reg, struct san_regtab_set *set, uint64_t va,
                               uint64_t len, unsigned access, bool rdma,
                               const struct san_regtab_limits *lim,
                               const struct san_regtab_backing *backing, uint32_t *lkey,
                               uint32_t *rkey, uint32_t *refs);
/* Drops one reference of set's registration lkey; *refs gets what is left (0: it is gone).
 * -EINVAL for a key that set does not hold (stale, foreign, never issued); -EBUSY when this is the
 * last reference and an operation still uses it (nothing changes then). */
int san_regtab_deregister(struct san_regtab *reg, struct san_regtab_set *set, uint32_t lkey,
                          uint32_t *refs);
/* RDMA registrations only: revokes the rkey of set's registration lkey (exposed false: peers can no
 * longer name it; operations in flight finish) or issues a new one if it is revoked (exposed true);
 * *rkey gets the current rkey (0 when revoked). -EINVAL for a key set does not hold or a local
 * registration; -ENOBUFS when keys run out. Used by libsan's registration cache for idle entries.
 */
int san_regtab_set_remote(struct san_regtab *reg, struct san_regtab_set *set, uint32_t lkey,
                          bool exposed, uint32_t *rkey);
/* Physical address of byte offset of set's registration lkey. -EINVAL (key, offset). */
int san_regtab_paddr(struct san_regtab *reg, struct san_regtab_set *set, uint32_t lkey,
                     uint64_t offset, san_paddr_t *pa);

/* For operations (the NIC): take a use of the registration a key names, or NULL. An lkey is only
 * good with its owner's set; an rkey with any set (the connected peer). san_regtab_put ends the
 * use. */
struct san_regtab_entry *san_regtab_get_lkey(struct san_regtab *reg,
                                             const struct san_regtab_set *set, uint32_t lkey);
struct san_regtab_entry *san_regtab_get_rkey(struct san_regtab *reg, uint32_t rkey);
void san_regtab_put(struct san_regtab *reg, struct san_regtab_entry *e);

#endif
