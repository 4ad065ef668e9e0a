/* lru: the registration cache's eviction order, an exact LRU that hits never write to. A release
 * only stamps its entry (on the entry's own cache line: no shared write); the list is ordered by
 * the stamp each node had when it was queued (qstamp), and the victim search moves nodes used
 * since then to their place before it picks one. The head is thus the least recently released
 * idle node; a node in use is requeued as if released now.
 *
 * Locking: every _locked function expects the owner's lock (the cache's index lock, for writing;
 * checked in debug builds). san_lru_now reads no shared state. */
#ifndef SAN_CLIENT_LRU_H
#define SAN_CLIENT_LRU_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/clock.h"
#include "common/list.h"
#include "common/lockcheck.h"

struct san_lru_node {
    struct san_list link; /* also usable for other lists while the node is not queued */
    uint64_t qstamp;      /* the node's stamp when it was placed where it is */
};

struct san_lru {
    struct san_list head; /* oldest qstamp first */
    size_t count;
    const struct san_lock_owner *lock; /* the owner's lock, checked in debug builds; or NULL */
};

/* The node's state, as the victim search asks it: idle (no reference) or not, and the stamp of
 * its last release. */
typedef bool (*san_lru_idle_fn)(struct san_lru_node *n, uint64_t *stamp);

/* LRU time, without a shared write: the TSC on x86, else the monotonic clock (vDSO). */
static inline uint64_t san_lru_now(void)
{
#if defined(__x86_64__) || defined(__i386__)
    return __builtin_ia32_rdtsc();
#else
    return san_now_ns();
#endif
}

/* lock: the holder record of the owner's lock, for the debug checks (NULL: none). */
void san_lru_init(struct san_lru *l, const struct san_lock_owner *lock);
/* Queues n at the tail, released at stamp (a fresh entry: now). */
void san_lru_push_locked(struct san_lru *l, struct san_lru_node *n, uint64_t stamp);
void san_lru_remove_locked(struct san_lru *l, struct san_lru_node *n);
/* The least recently released idle node (left queued), or NULL when every node is in use. Looks
 * at each node at most twice. */
struct san_lru_node *san_lru_victim_locked(struct san_lru *l, san_lru_idle_fn idle);

#endif
