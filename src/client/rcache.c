/* rcache: the registration cache (see rcache.h, docs/rcache.md). Sits on the range tree (entries
 * keyed by the exact registered range; overlapping entries allowed), on memwatch (automatic
 * invalidation), the LRU (lru.c), the index lock (rwlock.c), the fork registry (forkreg.c) and on
 * the caller's register/deregister/set_remote callbacks.
 *
 * Locking, outermost first:
 *   miss_lock  (mutex)   serialises registrations: one do_register at a time, so two misses on the
 *                        same range do not both register it, and a registration that memory changes
 *                        under (a doomed entry) is released before the next one starts.
 *   the index lock (a reader-writer lock, rwlock.h) protects the tree, the LRU
 *              list, the graveyard and orphan lists, the memwatch spans and the counters. Hits take
 *              it for reading, touching no shared cache line; everything that changes the index
 *              takes it for writing (writer-preferring), and so does the memwatch handler while it
 *              reads and applies events. do_deregister runs under it (the daemon registration is
 *              gone before it is released, so the address cannot be registered anew in between).
 *   remote_lock (per RDMA entry) exposure transitions (set_remote), taken after the index lock or
 *              alone.
 * Reference counts are atomic; bit 31 (DEAD) is set, under the write lock, when an entry leaves the
 * index. Whoever drops the last reference of a DEAD entry frees it; the handler never frees (idle
 * dead entries go to the graveyard, which API calls empty outside the lock). Nothing allocates,
 * frees or unmaps memory while holding the index lock: an unmap of watched memory waits for the
 * handler, which waits for the index lock. */
#include "client/rcache.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include <san/types.h>

#include "client/forkreg.h"
#include "client/lru.h"
#include "client/memwatch.h"
#include "client/rwlock.h"
#include "common/list.h"
#include "common/page.h"
#include "common/pin.h"
#include "common/range.h"
#include "common/size.h"

#define DEAD (UINT32_C(1) << 31)

enum entry_state { E_PENDING = 1, E_READY, E_DEAD, E_UNCACHED };

struct san_rcache_entry {
    struct san_range r; /* exact range; in the tree while PENDING or READY */
    struct san_memwatch_span span;
    struct san_lru_node lru; /* READY: LRU; DEAD with references: orphans; UNCACHED: passed */
    struct san_rcache_entry *grave_next; /* graveyard (idle dead entries) */
    unsigned access;
    bool rdma, uncached;
    uint8_t state;
    bool doomed;  /* PENDING, and its memory changed while it was being registered */
    bool exposed; /* RDMA: reachable by peers; under remote_lock */
    pthread_mutex_t remote_lock;
    struct san_rcache *rc;
    struct san_mr pub; /* what the application holds: the registration */
    /* Written by every hit and release: on a cache line of their own, away from the tree node and
     * the fields lookups read (other threads walk through this entry to reach theirs). */
    _Alignas(64) _Atomic uint32_t refs; /* references | DEAD */
    _Atomic uint64_t stamp;             /* LRU clock at the last put */
};

struct san_rcache {
    struct san_rwlock index; /* the index lock */
    pthread_mutex_t miss_lock;
    struct san_tree tree;
    struct san_lru lru;      /* READY entries; lru.count is how many are cached */
    struct san_list orphans; /* dead entries still referenced */
    struct san_list passed;  /* registrations served uncached, until their put */
    struct san_rcache_entry *graveyard;
    _Atomic size_t graves;
    uint64_t bytes;
    size_t max_entries;
    uint64_t max_bytes;
    bool disabled;
    _Atomic uint64_t remote_toggles;
    struct san_forkreg_node fork;
    struct san_rcache_ops ops;
    void *ctx;
    struct san_rcache_stats st; /* misses, uncached, evictions, invalidations, doomed */
    struct san_memwatch mw;
};

static void write_lock(struct san_rcache *rc)
{
    san_rwlock_write(&rc->index);
}

static void write_unlock(struct san_rcache *rc)
{
    san_rwlock_write_unlock(&rc->index);
}

/* ---- fork: every cache is locked across fork(); in a child its locks start afresh and its calls
 * fail with -ECHILD (forkreg.h), without a system call on the hit path. */

static void fork_prepare(void *arg)
{
    struct san_rcache *rc = arg;
    pthread_mutex_lock(&rc->miss_lock);
    write_lock(rc);
}

static void fork_parent(void *arg)
{
    struct san_rcache *rc = arg;
    write_unlock(rc);
    pthread_mutex_unlock(&rc->miss_lock);
}

static void fork_child(void *arg)
{
    /* The child never uses the cache again (it only frees it). */
    struct san_rcache *rc = arg;
    san_rwlock_reset(&rc->index);
    rc->miss_lock = (pthread_mutex_t)PTHREAD_MUTEX_INITIALIZER;
}

static const struct san_forkreg_ops fork_ops = {
    .prepare = fork_prepare, .parent = fork_parent, .child = fork_child};

bool san_rcache_forked(const struct san_rcache *rc)
{
    return san_forkreg_forked(&rc->fork);
}

static struct san_rcache_entry *entry_of_lru(struct san_list *l)
{
    return san_container_of(l, struct san_rcache_entry, lru.link);
}

static bool entry_idle(struct san_lru_node *n, uint64_t *stamp)
{
    struct san_rcache_entry *e = san_container_of(n, struct san_rcache_entry, lru);
    uint32_t refs = atomic_load_explicit(&e->refs, memory_order_acquire);
    *stamp = atomic_load_explicit(&e->stamp, memory_order_relaxed);
    return !refs;
}

/* ---- entries */

static struct san_rcache_entry *entry_new(void)
{
    size_t size = (sizeof(struct san_rcache_entry) + 63) & ~(size_t)63;
    struct san_rcache_entry *e = aligned_alloc(64, size);
    if (!e)
        return NULL;
    memset(e, 0, size);
    if (pthread_mutex_init(&e->remote_lock, NULL)) {
        free(e);
        return NULL;
    }
    san_list_init(&e->lru.link);
    return e;
}

static void entry_free(struct san_rcache_entry *e, bool child)
{
    if (!child)
        pthread_mutex_destroy(&e->remote_lock);
    free(e);
}

/* Frees idle dead entries; called by API paths, without the lock (never by the handler). */
static void reap(struct san_rcache *rc)
{
    if (!atomic_load_explicit(&rc->graves, memory_order_acquire))
        return;
    write_lock(rc);
    struct san_rcache_entry *list = rc->graveyard;
    rc->graveyard = NULL;
    atomic_store(&rc->graves, 0);
    write_unlock(rc);
    while (list) {
        struct san_rcache_entry *next = list->grave_next;
        entry_free(list, false);
        list = next;
    }
}

/* Takes e out of the index and releases its registration now. A PENDING entry (its registration
 * in flight) is only marked doomed: the miss path releases it when the registration returns. */
static void kill_locked(struct san_rcache *rc, struct san_rcache_entry *e)
{
    san_rwlock_assert_write(&rc->index);
    if (e->state == E_PENDING) {
        if (!e->doomed)
            rc->st.doomed++;
        e->doomed = true;
        return;
    }
    san_range_erase(&rc->tree, &e->r);
    san_lru_remove_locked(&rc->lru, &e->lru);
    san_memwatch_unwatch_locked(&rc->mw, &e->span);
    rc->bytes -= e->r.len;
    e->state = E_DEAD;

    if (e->rdma)
        pthread_mutex_lock(&e->remote_lock);
    /* Copied under remote_lock: a put of an RDMA entry revokes or re-issues its rkey under it. */
    struct san_rcache_reg reg = e->pub.reg;
    uint32_t old = atomic_fetch_or_explicit(&e->refs, DEAD, memory_order_acq_rel);
    if (old) /* still referenced: the last put frees it; until then it is an orphan */
        san_list_insert_after(&rc->orphans, &e->lru.link);
    if (e->rdma)
        pthread_mutex_unlock(&e->remote_lock);
    /* From here e may be freed by a concurrent last put unless it was idle. */
    if (rc->ops.do_deregister(rc->ctx, &reg))
        rc->st.release_fail++;
    if (!old) {
        e->grave_next = rc->graveyard;
        rc->graveyard = e;
        atomic_fetch_add_explicit(&rc->graves, 1, memory_order_release);
    }
}

/* Kills every entry overlapping [start, start + len); returns how many it found. */
static size_t invalidate_range_locked(struct san_rcache *rc, uint64_t start, uint64_t len)
{
    san_rwlock_assert_write(&rc->index);
    size_t n = 0;
    struct san_range *r = san_range_first_overlap(&rc->tree, start, len);
    while (r) {
        struct san_range *next = san_range_next_overlap(r, start, len);
        kill_locked(rc, san_container_of(r, struct san_rcache_entry, r));
        n++;
        r = next;
    }
    return n;
}

static void mw_lock(void *arg)
{
    write_lock(arg);
}

static void mw_unlock(void *arg)
{
    write_unlock(arg);
}

static void mw_invalidate_locked(void *arg, uint64_t start, uint64_t len, enum san_memwatch_why why)
{
    struct san_rcache *rc = arg;
    san_rwlock_assert_write(&rc->index);
    if (why == SAN_MEMWATCH_ALL)
        len = UINT64_MAX - start;
    rc->st.invalidations += invalidate_range_locked(rc, start, len);
}

/* Evicts idle entries (LRU first) until one more entry of len bytes fits. False if it cannot. */
static bool make_room_locked(struct san_rcache *rc, uint64_t len)
{
    san_rwlock_assert_write(&rc->index);
    if (len > rc->max_bytes)
        return false;
    while (rc->lru.count + 1 > rc->max_entries || rc->bytes + len > rc->max_bytes) {
        struct san_lru_node *v = san_lru_victim_locked(&rc->lru, entry_idle);
        if (!v)
            return false;
        kill_locked(rc, san_container_of(v, struct san_rcache_entry, lru));
        rc->st.evictions++;
    }
    return true;
}

/* Evicts every idle entry (the daemon refused a registration for lack of room). */
static size_t evict_idle(struct san_rcache *rc)
{
    size_t n = 0;
    write_lock(rc);
    struct san_list *l = rc->lru.head.next;
    while (l != &rc->lru.head) {
        struct san_list *next = l->next;
        struct san_rcache_entry *e = entry_of_lru(l);
        if (!atomic_load_explicit(&e->refs, memory_order_acquire)) {
            kill_locked(rc, e);
            rc->st.evictions++;
            n++;
        }
        l = next;
    }
    write_unlock(rc);
    reap(rc);
    return n;
}

static uint64_t page_down(uint64_t a)
{
    return a & ~(uint64_t)(PAGE - 1);
}

static uint64_t page_up(uint64_t a)
{
    return (a + PAGE - 1) & ~(uint64_t)(PAGE - 1);
}

static struct san_rcache_entry *lookup_locked(struct san_rcache *rc, uint64_t start, uint64_t len,
                                              unsigned access, bool rdma)
{
    san_rwlock_assert_held(&rc->index);
    uint64_t end = start + len;
    for (struct san_range *r = san_range_first_overlap(&rc->tree, start, len);
         r && r->start <= start; r = san_range_next_overlap(r, start, len)) {
        struct san_rcache_entry *e = san_container_of(r, struct san_rcache_entry, r);
        /* An RDMA hit gives the peer a key to the whole entry: only one of exactly the pages
         * asked for serves, or a peer given a descriptor of a small buffer could reach the rest
         * of a larger registration cached around it. */
        bool fits = rdma ? page_down(r->start) == page_down(start) &&
                               page_up(san_range_end(r)) == page_up(end)
                         : san_range_end(r) >= end;
        if (e->state == E_READY && fits && (e->access & access) == access && e->rdma == rdma)
            return e;
    }
    return NULL;
}

static struct san_rcache_entry *lookup_get(struct san_rcache *rc, uint64_t start, uint64_t len,
                                           unsigned access, bool rdma)
{
    struct san_rwlock_slot *slot = san_rwlock_read(&rc->index);
    struct san_rcache_entry *e = lookup_locked(rc, start, len, access, rdma);
    if (e)
        atomic_fetch_add_explicit(&e->refs, 1, memory_order_relaxed);
    san_rwlock_read_unlock(slot);
    return e;
}

static bool cacheable(const struct san_rcache *rc, uint64_t len, bool rdma)
{
    return !rc->disabled && len <= rc->max_bytes && (!rdma || rc->ops.set_remote);
}

/* The slow path: registers, and caches when it can. *hit tells that another thread cached the
 * range meanwhile (the reference is taken; RDMA exposure is the caller's). */
static int miss(struct san_rcache *rc, void *addr, size_t len, unsigned access, bool rdma,
                struct san_rcache_entry **out, bool *hit)
{
    uint64_t start = (uint64_t)(uintptr_t)addr;
    uint64_t pstart = start & ~(PAGE - 1), pend = (start + len + PAGE - 1) & ~(PAGE - 1);
    bool can_cache = cacheable(rc, len, rdma) && pend > pstart;
    int err;

    struct san_rcache_entry *e = entry_new();
    if (!e)
        return -ENOMEM;
    e->rc = rc;
    *hit = false;
    pthread_mutex_lock(&rc->miss_lock);
    for (int attempt = 0;; attempt++) {
        if (can_cache) {
            struct san_rcache_entry *h = lookup_get(rc, start, len, access, rdma);
            if (h) {
                *hit = true;
                *out = h;
                err = 0;
                break;
            }
        }
        /* Pages must be present before the span is watched: the kernel cannot fault in a page of a
         * watched span for a system call (mlock, the daemon's process_vm_readv). */
        bool watched = false;
        if (can_cache && !san_pin_populate(pstart, pend - pstart, false)) {
            write_lock(rc);
            e->r.start = start;
            e->r.len = len;
            e->state = E_PENDING;
            e->doomed = false;
            if (!san_memwatch_watch_locked(&rc->mw, &e->span, pstart, pend - pstart)) {
                san_range_insert(&rc->tree, &e->r);
                watched = true;
            }
            write_unlock(rc);
        }

        err = rc->ops.do_register(rc->ctx, addr, len, access, rdma, &e->pub.reg);
        if (err == -ENOBUFS && evict_idle(rc))
            err = rc->ops.do_register(rc->ctx, addr, len, access, rdma, &e->pub.reg);

        write_lock(rc);
        if (watched && (err || e->doomed)) {
            san_range_erase(&rc->tree, &e->r);
            san_memwatch_unwatch_locked(&rc->mw, &e->span);
        }
        if (err) {
            write_unlock(rc);
            break;
        }
        if (watched && e->doomed) {
            /* The memory was unmapped or changed during the registration: release it before anyone
             * can register that address again, then start over (it may be a new mapping now). */
            if (rc->ops.do_deregister(rc->ctx, &e->pub.reg))
                rc->st.release_fail++;
            write_unlock(rc);
            if (attempt < 3)
                continue;
            err = -EAGAIN;
            break;
        }
        if (watched && !make_room_locked(rc, len)) {
            san_range_erase(&rc->tree, &e->r);
            san_memwatch_unwatch_locked(&rc->mw, &e->span);
            watched = false;
        }
        e->access = access;
        e->rdma = rdma;
        e->exposed = rdma;
        atomic_store_explicit(&e->refs, 1, memory_order_relaxed);
        rc->st.misses++;
        if (watched) {
            e->state = E_READY;
            uint64_t now = san_lru_now();
            atomic_store_explicit(&e->stamp, now, memory_order_relaxed);
            san_lru_push_locked(&rc->lru, &e->lru, now);
            rc->bytes += len;
        } else {
            e->state = E_UNCACHED;
            e->uncached = true;
            san_list_insert_after(&rc->passed, &e->lru.link); /* so that destroy finds it */
            rc->st.uncached++;
        }
        write_unlock(rc);
        *out = e;
        e = NULL;
        break;
    }
    pthread_mutex_unlock(&rc->miss_lock);
    if (e)
        entry_free(e, false);
    reap(rc);
    return err;
}

/* RDMA hit: make the registration reachable by peers again. -ESTALE when it died meanwhile. */
static int expose(struct san_rcache *rc, struct san_rcache_entry *e)
{
    int err = 0;
    pthread_mutex_lock(&e->remote_lock);
    if (atomic_load_explicit(&e->refs, memory_order_acquire) & DEAD) {
        err = -ESTALE;
    } else if (!e->exposed) {
        err = rc->ops.set_remote(rc->ctx, &e->pub.reg, true);
        atomic_fetch_add_explicit(&rc->remote_toggles, 1, memory_order_relaxed);
        if (!err)
            e->exposed = true;
    }
    pthread_mutex_unlock(&e->remote_lock);
    return err;
}

static bool args_ok(const void *addr, size_t len)
{
    return addr && len && (uint64_t)(uintptr_t)addr + len > (uint64_t)(uintptr_t)addr;
}

int san_rcache_get(struct san_rcache *rc, void *addr, size_t len, unsigned access, bool rdma,
                   struct san_rcache_entry **out)
{
    if (!rc || !out || !args_ok(addr, len) || access < SAN_MEM_READ || access > SAN_MEM_READWRITE)
        return -EINVAL;
    if (san_rcache_forked(rc))
        return -ECHILD;
    uint64_t start = (uint64_t)(uintptr_t)addr;

    for (;;) {
        struct san_rcache_entry *e = NULL;
        bool hit = true;
        if (cacheable(rc, len, rdma))
            e = lookup_get(rc, start, len, access, rdma);
        if (!e) {
            int err = miss(rc, addr, len, access, rdma, &e, &hit);
            if (err)
                return err;
        }
        if (hit && rdma) {
            int err = expose(rc, e);
            if (err) {
                san_rcache_put(rc, e);
                if (err == -ESTALE)
                    continue;
                return err;
            }
        }
        *out = e;
        return 0;
    }
}

static void free_orphan(struct san_rcache *rc, struct san_rcache_entry *e)
{
    write_lock(rc);
    san_list_del(&e->lru.link);
    write_unlock(rc);
    entry_free(e, false);
}

int san_rcache_put(struct san_rcache *rc, struct san_rcache_entry *e)
{
    if (!rc || !e)
        return -EINVAL;
    if (san_rcache_forked(rc))
        return -ECHILD;
    uint32_t old;

    if (e->uncached) {
        /* Exactly one reference (every uncached get makes its own entry). */
        int err = rc->ops.do_deregister(rc->ctx, &e->pub.reg);
        if (err)
            return err;
        free_orphan(rc, e); /* off the list of passed-through entries, and freed */
        return 0;
    }
    uint64_t now = san_lru_now();
    if (!e->rdma) {
        atomic_store_explicit(&e->stamp, now, memory_order_relaxed);
        /* A decrement that refuses to go below zero: deregistering an idle cached handle once too
         * often is an error, not a corrupted count. */
        old = atomic_load_explicit(&e->refs, memory_order_relaxed);
        do {
            if (!(old & ~DEAD))
                return -EINVAL;
        } while (!atomic_compare_exchange_weak_explicit(
            &e->refs, &old, old - 1, memory_order_acq_rel, memory_order_relaxed));
        if (old == (DEAD | 1))
            free_orphan(rc, e);
        return 0;
    }

    /* RDMA: hide the registration from peers when the last reference goes, deciding under
     * remote_lock so that a concurrent hit exposes it again after us, never before. */
    bool failed = false;
    pthread_mutex_lock(&e->remote_lock);
    if (!(atomic_load_explicit(&e->refs, memory_order_acquire) & ~DEAD)) {
        pthread_mutex_unlock(&e->remote_lock);
        return -EINVAL; /* not held: deregistered once too often */
    }
    atomic_store_explicit(&e->stamp, now, memory_order_relaxed);
    if (atomic_load_explicit(&e->refs, memory_order_acquire) == 1 && e->exposed) {
        atomic_fetch_add_explicit(&rc->remote_toggles, 1, memory_order_relaxed);
        if (rc->ops.set_remote(rc->ctx, &e->pub.reg, false))
            failed = true;
        else
            e->exposed = false;
    }
    if (!failed)
        old = atomic_fetch_sub_explicit(&e->refs, 1, memory_order_acq_rel);
    pthread_mutex_unlock(&e->remote_lock);
    if (failed) {
        /* It cannot be hidden: it must not stay cached. Our reference keeps e alive. */
        write_lock(rc);
        if (!(atomic_load(&e->refs) & DEAD)) {
            kill_locked(rc, e);
            rc->st.invalidations++;
        }
        write_unlock(rc);
        old = atomic_fetch_sub_explicit(&e->refs, 1, memory_order_acq_rel);
    }
    if (old == (DEAD | 1))
        free_orphan(rc, e);
    reap(rc);
    return 0;
}

struct san_rcache *san_rcache_entry_cache(const struct san_rcache_entry *e)
{
    return e->rc;
}

const struct san_rcache_reg *san_rcache_entry_reg(const struct san_rcache_entry *e)
{
    return &e->pub.reg;
}

struct san_mr *san_rcache_entry_handle(struct san_rcache_entry *e)
{
    return &e->pub;
}

struct san_rcache_entry *san_rcache_handle_entry(struct san_mr *mr)
{
    return san_container_of(mr, struct san_rcache_entry, pub);
}

bool san_rcache_entry_valid(const struct san_rcache_entry *e)
{
    return !(atomic_load_explicit(&e->refs, memory_order_acquire) & DEAD);
}

int san_rcache_invalidate(struct san_rcache *rc, void *addr, size_t len)
{
    if (!rc || !args_ok(addr, len))
        return -EINVAL;
    if (san_rcache_forked(rc))
        return -ECHILD;
    write_lock(rc);
    size_t n = invalidate_range_locked(rc, (uint64_t)(uintptr_t)addr, len);
    rc->st.invalidations += n;
    write_unlock(rc);
    reap(rc);
    return n ? 0 : -EINVAL;
}

/* ---- creation, bounds, stats */

static int env_size(const char *name, uint64_t *out, bool *set)
{
    const char *s = getenv(name);
    *set = false;
    if (!s || !*s)
        return 0;
    if (san_parse_size(s, out))
        return -EINVAL;
    *set = true;
    return 0;
}

int san_rcache_create(const struct san_rcache_opts *opts, const struct san_rcache_ops *ops,
                      void *ctx, struct san_rcache **out)
{
    static const struct san_rcache_opts none;
    uint64_t v;
    bool set;
    int err;

    if (!ops || !ops->do_register || !ops->do_deregister || !out)
        return -EINVAL;
    if (!opts)
        opts = &none;
    /* Reader slots sit on their own cache lines: allocate aligned. */
    size_t size = (sizeof(struct san_rcache) + 63) & ~(size_t)63;
    struct san_rcache *rc = aligned_alloc(64, size);
    if (!rc)
        return -ENOMEM;
    memset(rc, 0, size);
    rc->max_entries = SAN_RCACHE_DEFAULT_ENTRIES;
    rc->max_bytes = SAN_RCACHE_DEFAULT_BYTES;
    if ((err = env_size("SAN_RCACHE_MAX_ENTRIES", &v, &set)))
        goto fail;
    if (set) {
        rc->max_entries = v > SIZE_MAX ? SIZE_MAX : (size_t)v;
        rc->disabled = v == 0;
    }
    if ((err = env_size("SAN_RCACHE_MAX_BYTES", &v, &set)))
        goto fail;
    if (set)
        rc->max_bytes = v;
    if (opts->max_entries) {
        rc->max_entries = opts->max_entries;
        rc->disabled = false;
    }
    if (opts->max_bytes)
        rc->max_bytes = opts->max_bytes;
    if (opts->disable || !rc->max_bytes)
        rc->disabled = true;

    rc->ops = *ops;
    rc->ctx = ctx;
    san_range_tree_init(&rc->tree);
    san_lru_init(&rc->lru, &rc->index.holder);
    san_list_init(&rc->orphans);
    san_list_init(&rc->passed);
    if ((err = san_rwlock_init(&rc->index)))
        goto fail;
    if ((err = -pthread_mutex_init(&rc->miss_lock, NULL)))
        goto fail_index;
    struct san_memwatch_ops mops = {.arg = rc,
                                    .lock = mw_lock,
                                    .unlock = mw_unlock,
                                    .invalidate_locked = mw_invalidate_locked,
                                    .holder = &rc->index.holder};
    san_memwatch_init(&rc->mw, &mops);
    rc->fork.ops = &fork_ops;
    rc->fork.arg = rc;
    if ((err = san_forkreg_add(&rc->fork)))
        goto fail_miss;
    *out = rc;
    return 0;

fail_miss:
    pthread_mutex_destroy(&rc->miss_lock);
fail_index:
    san_rwlock_destroy(&rc->index);
fail:
    free(rc);
    return err;
}

void san_rcache_destroy(struct san_rcache *rc)
{
    if (!rc)
        return;
    bool child = san_rcache_forked(rc);
    san_forkreg_del(&rc->fork);

    /* Collect every entry: cached ones, dead ones still referenced, idle dead ones. */
    struct san_rcache_entry *all = NULL;
    if (!child)
        write_lock(rc);
    while (rc->tree.root) {
        struct san_rcache_entry *e =
            san_container_of(san_range_first(&rc->tree), struct san_rcache_entry, r);
        if (child || e->state == E_PENDING) {
            /* PENDING: a registration still in flight (a caller bug): leave it to its thread. */
            san_range_erase(&rc->tree, &e->r);
            if (!child)
                continue;
            san_list_del(&e->lru.link);
            e->grave_next = all;
            all = e;
            continue;
        }
        kill_locked(rc, e); /* releases the registration; e ends on the graveyard or orphans */
    }
    while (!san_list_empty(&rc->passed)) { /* registrations served uncached, still held */
        struct san_rcache_entry *e = entry_of_lru(rc->passed.next);
        if (!child && rc->ops.do_deregister(rc->ctx, &e->pub.reg))
            rc->st.release_fail++;
        san_list_del(&e->lru.link);
        e->grave_next = all;
        all = e;
    }
    while (!san_list_empty(&rc->orphans)) {
        struct san_rcache_entry *e = entry_of_lru(rc->orphans.next);
        san_list_del(&e->lru.link);
        e->grave_next = all;
        all = e;
    }
    while (rc->graveyard) {
        struct san_rcache_entry *e = rc->graveyard;
        rc->graveyard = e->grave_next;
        e->grave_next = all;
        all = e;
    }
    if (!child)
        write_unlock(rc);

    san_memwatch_destroy(&rc->mw); /* in a child: closes its copies of the descriptors only */
    while (all) {
        struct san_rcache_entry *next = all->grave_next;
        entry_free(all, child);
        all = next;
    }
    if (!child) {
        san_rwlock_destroy(&rc->index);
        pthread_mutex_destroy(&rc->miss_lock);
    }
    free(rc);
}

void san_rcache_bounds(const struct san_rcache *rc, size_t *max_entries, uint64_t *max_bytes)
{
    *max_entries = rc->disabled ? 0 : rc->max_entries;
    *max_bytes = rc->max_bytes;
}

void san_rcache_stats(struct san_rcache *rc, struct san_rcache_stats *out)
{
    write_lock(rc);
    *out = rc->st;
    out->entries = rc->lru.count;
    out->bytes = rc->bytes;
    out->in_use = 0;
    for (struct san_list *l = rc->lru.head.next; l != &rc->lru.head; l = l->next)
        if (atomic_load(&entry_of_lru(l)->refs))
            out->in_use++;
    out->remote_toggles = atomic_load(&rc->remote_toggles);
    out->watching = san_memwatch_running_locked(&rc->mw);
    const struct san_memwatch_stats *m = &rc->mw.stats;
    out->events = m->events;
    out->unmaps = m->unmaps;
    out->remaps = m->remaps;
    out->removes = m->removes;
    out->faults = m->faults;
    out->overflows = m->overflows;
    out->watch_fail = m->watch_fail;
    write_unlock(rc);
}
