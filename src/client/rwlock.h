/* rwlock: the registration cache's index lock, a reader-writer lock whose read side touches no
 * shared cache line, so that cache hits on different cores do not bounce one.
 *
 * Readers count themselves in a slot of their own (a thread always uses the same one, on its own
 * cache line), then check for a writer (both sequentially consistent: either the reader sees the
 * writer or the writer sees the reader); if a writer is there, they step back and wait on its
 * mutex. Writers take the mutex, announce themselves, wait for every slot to drain (readers hold
 * the lock only for a lookup) and keep new readers out until they leave. Writer-preferring: the
 * cache's watcher thread is never starved by hits. Not recursive; readers never block writers for
 * longer than a lookup. */
#ifndef SAN_CLIENT_RWLOCK_H
#define SAN_CLIENT_RWLOCK_H

#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>

#include "common/lockcheck.h"

#define SAN_RWLOCK_SLOTS 32

struct san_rwlock_slot {
    _Alignas(64) _Atomic long n; /* readers in this slot */
};

struct san_rwlock {
    struct san_rwlock_slot readers[SAN_RWLOCK_SLOTS];
    _Alignas(64) _Atomic int writer; /* a writer holds, or waits for, the lock */
    pthread_mutex_t wlock;           /* writers among themselves; readers wait on it */
    struct san_lock_owner holder;    /* the writer holding it (debug builds) */
};

/* 0, or the error of pthread_mutex_init (negative). */
int san_rwlock_init(struct san_rwlock *l);
void san_rwlock_destroy(struct san_rwlock *l);
/* In a forked child: the lock as new (readers and writers of the parent's other threads do not
 * exist here). Cannot fail. */
void san_rwlock_reset(struct san_rwlock *l);

/* This thread's slot (assigned on its first read lock, round robin). */
extern _Thread_local unsigned san_rwlock_my_slot;
unsigned san_rwlock_pick_slot(void);
/* The slow half of a read lock: a writer was there. */
void san_rwlock_read_wait(struct san_rwlock *l, struct san_rwlock_slot *s);

/* Takes the lock for reading; pass what it returns to san_rwlock_read_unlock. */
static inline struct san_rwlock_slot *san_rwlock_read(struct san_rwlock *l)
{
    if (san_rwlock_my_slot == UINT_MAX)
        san_rwlock_my_slot = san_rwlock_pick_slot();
    struct san_rwlock_slot *s = &l->readers[san_rwlock_my_slot];
    atomic_fetch_add_explicit(&s->n, 1, memory_order_seq_cst);
    if (atomic_load_explicit(&l->writer, memory_order_seq_cst))
        san_rwlock_read_wait(l, s);
    return s;
}

static inline void san_rwlock_read_unlock(struct san_rwlock_slot *s)
{
    atomic_fetch_sub_explicit(&s->n, 1, memory_order_release);
}

void san_rwlock_write(struct san_rwlock *l);
void san_rwlock_write_unlock(struct san_rwlock *l);

/* Debug checks for the _locked functions of the lock's owner: held for writing by this thread;
 * held at all (for writing by this thread, or for reading by a thread of this thread's slot:
 * readers are counted per slot, not per thread). */
#define san_rwlock_assert_write(l) san_assert_held(&(l)->holder)
#ifdef NDEBUG
#define san_rwlock_assert_held(l) ((void)(l))
#else
static inline bool san_rwlock_held(const struct san_rwlock *l)
{
    return san_lock_held(&l->holder) ||
           (san_rwlock_my_slot != UINT_MAX &&
            atomic_load_explicit(&l->readers[san_rwlock_my_slot].n, memory_order_relaxed) > 0);
}
#define san_rwlock_assert_held(l) assert(san_rwlock_held(l))
#endif

#endif
