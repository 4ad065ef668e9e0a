/* rcache: libsan's registration cache (how and why: docs/rcache.md). Keyed by virtual range,
 * access and kind (local or RDMA): a cached registration that covers a request with at least the
 * access asked serves it, reference counted. At reference count 0 an entry stays cached (its pages
 * locked and registered) until LRU eviction or invalidation; an idle RDMA entry has its rkey
 * revoked (ops->set_remote) and a new one issued on its next hit. Entries are invalidated when the
 * memory goes away (memwatch: munmap, mremap, madvise, brk shrink, free of large blocks) and
 * explicitly.
 *
 * The cache never talks to the daemon itself: it calls do_register / do_deregister / set_remote,
 * which libsan wires to daemon round trips and unit tests to fakes. */
#ifndef SAN_CLIENT_RCACHE_H
#define SAN_CLIENT_RCACHE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* What the registering layer returns for one registration; the cache stores it inline. */
struct san_rcache_reg {
    uint64_t handle; /* the registering layer's handle */
    uint32_t lkey, rkey;
    uint64_t addr, len; /* what was registered */
    uint64_t cookie; /* free for the registering layer (the fakes of the tests keep a generation) */
};

/* The application's registration handle (struct san_mr of <san/client.h>): every cache entry
 * embeds one, holding its registration, and libsan hands out its address. */
struct san_mr {
    struct san_rcache_reg reg;
};

struct san_rcache_ops {
    /* Registers (locks and registers) [addr, addr + len); 0 or a negative errno. May block. */
    int (*do_register)(void *ctx, void *addr, size_t len, unsigned access, bool rdma,
                       struct san_rcache_reg *out);
    /* Releases a registration: 0 or a negative errno (-EBUSY: an operation still uses it). Runs
     * under the cache lock, possibly on the memwatch handler thread: must not allocate or free
     * memory, munmap, nor call back into the cache. For a cached registration the cache cannot act
     * on a failure (it is counted); for one served uncached, san_rcache_put returns it. */
    int (*do_deregister)(void *ctx, const struct san_rcache_reg *reg);
    /* RDMA registrations: makes reg reachable by peers (exposed) or not, updating reg->rkey (a
     * re-exposed registration gets a new rkey). Called with the entry's exposure lock held, not the
     * cache lock. NULL: RDMA registrations are not cached. */
    int (*set_remote)(void *ctx, struct san_rcache_reg *reg, bool exposed);
};

/* Bounds. A zero field takes the environment ($SAN_RCACHE_MAX_ENTRIES, $SAN_RCACHE_MAX_BYTES with
 * an optional K/M/G/T suffix), else the default. $SAN_RCACHE_MAX_ENTRIES=0 disables the cache. */
struct san_rcache_opts {
    size_t max_entries; /* default SAN_RCACHE_DEFAULT_ENTRIES */
    uint64_t max_bytes; /* default SAN_RCACHE_DEFAULT_BYTES */
    bool disable;       /* every call goes through to do_register / do_deregister */
};
#define SAN_RCACHE_DEFAULT_ENTRIES 1024u
#define SAN_RCACHE_DEFAULT_BYTES   (UINT64_C(256) << 20)

struct san_rcache_stats {
    uint64_t entries, bytes; /* cached now (READY entries) */
    uint64_t in_use;         /* cached entries with a reference */
    uint64_t misses;         /* calls that registered (cached or not) */
    uint64_t uncached;       /* of those, registrations served without caching */
    uint64_t evictions, invalidations, doomed;
    uint64_t remote_toggles; /* set_remote round trips */
    uint64_t release_fail;   /* do_deregister failures on cached entries */
    bool watching;           /* memwatch handler running */
    /* memwatch counters */
    uint64_t events, unmaps, remaps, removes, faults, overflows, watch_fail;
};

struct san_rcache;
struct san_rcache_entry;

/* Creates a cache calling ops with ctx. Reads the environment. -EINVAL for a malformed
 * environment value; -ENOMEM. The userfaultfd and its handler thread start on the first miss. */
int san_rcache_create(const struct san_rcache_opts *opts, const struct san_rcache_ops *ops,
                      void *ctx, struct san_rcache **out);
/* Releases every registration (entries still referenced become invalid: their handles must not be
 * used afterwards), stops the watcher and frees the cache. Blocks for the round trips. In a forked
 * child it releases nothing remotely (the registrations are the parent's): it frees local memory.
 */
void san_rcache_destroy(struct san_rcache *rc);

/* Returns a reference to a registration covering [addr, addr + len) with at least `access`
 * (SAN_MEM_*), local or RDMA as asked. A hit takes no system call and no exclusive lock (an RDMA
 * hit on an idle entry costs one set_remote round trip); a miss registers. -EINVAL for bad
 * arguments; -ECHILD in a forked child; the registering layer's error otherwise. */
int san_rcache_get(struct san_rcache *rc, void *addr, size_t len, unsigned access, bool rdma,
                   struct san_rcache_entry **out);
/* Drops a reference. At 0 the entry stays cached (RDMA: hidden from peers), or is released if it
 * was invalidated or never cached. Fails for a registration served uncached whose release fails
 * (do_deregister's error, e.g. -EBUSY: the reference stays, try again); -EINVAL for NULL or a
 * cached entry nobody holds (one put too many; a freed entry cannot be detected). */
int san_rcache_put(struct san_rcache *rc, struct san_rcache_entry *e);
/* The registration behind a reference. Valid while the reference is held. */
const struct san_rcache_reg *san_rcache_entry_reg(const struct san_rcache_entry *e);
/* The handle embedded in an entry, and the entry a handle is embedded in. */
struct san_mr *san_rcache_entry_handle(struct san_rcache_entry *e);
struct san_rcache_entry *san_rcache_handle_entry(struct san_mr *mr);
/* The cache an entry belongs to. */
struct san_rcache *san_rcache_entry_cache(const struct san_rcache_entry *e);
/* False once the entry was invalidated (its registration released: the keys no longer work). */
bool san_rcache_entry_valid(const struct san_rcache_entry *e);

/* WSPMemoryRegistrationCacheCallback: drops every cached registration that overlaps
 * [addr, addr + len) and releases it now (references still held become invalid). -EINVAL when
 * nothing was cached there (or bad arguments); -ECHILD in a forked child. */
int san_rcache_invalidate(struct san_rcache *rc, void *addr, size_t len);

/* True in a process forked after the cache was created (every call there returns -ECHILD). */
bool san_rcache_forked(const struct san_rcache *rc);
void san_rcache_stats(struct san_rcache *rc, struct san_rcache_stats *out);
/* Effective bounds (after the environment); max_entries 0 when disabled. */
void san_rcache_bounds(const struct san_rcache *rc, size_t *max_entries, uint64_t *max_bytes);

#endif
