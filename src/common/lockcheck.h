/* Debug checks that a lock is held where a function says it must be: the functions ending in
 * _locked. In the spirit of the kernel's lockdep_assert_held: a lock records the thread that holds
 * it (for writing) right after taking it and forgets it right before releasing it, and
 * san_assert_held(owner) checks that the calling thread is the one. Debug builds only: with NDEBUG
 * the recording and the checks compile to nothing (the owner field stays, so that struct layouts
 * do not depend on the build).
 *
 * struct san_mutex is a pthread mutex that does this; other locks (the machine's rwlock, the
 * cache's index lock) embed a struct san_lock_owner next to themselves. */
#ifndef SAN_COMMON_LOCKCHECK_H
#define SAN_COMMON_LOCKCHECK_H

#include <assert.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>

struct san_lock_owner {
    _Atomic(const void *) thread; /* san_this_thread() of the holder, or NULL */
};

/* One byte per thread: its address names the thread (pthread_t is opaque). */
extern _Thread_local char san_lock_self;

static inline const void *san_this_thread(void)
{
    return &san_lock_self;
}

#ifdef NDEBUG
#define san_lock_acquired(o) ((void)(o))
#define san_lock_released(o) ((void)(o))
#define san_assert_held(o)   ((void)(o))
#else
static inline void san_lock_acquired(struct san_lock_owner *o)
{
    atomic_store_explicit(&o->thread, san_this_thread(), memory_order_relaxed);
}
static inline void san_lock_released(struct san_lock_owner *o)
{
    atomic_store_explicit(&o->thread, NULL, memory_order_relaxed);
}
static inline bool san_lock_held(const struct san_lock_owner *o)
{
    return atomic_load_explicit(&o->thread, memory_order_relaxed) == san_this_thread();
}
#define san_assert_held(o) assert(san_lock_held(o))
#endif

/* For code handed its owner's lock (an optional owner: NULL checks nothing). */
#define san_assert_held_if(o)                                                                      \
    do {                                                                                           \
        if (o)                                                                                     \
            san_assert_held(o);                                                                    \
    } while (0)

/* A mutex that knows its holder (debug builds). */
struct san_mutex {
    pthread_mutex_t m;
    struct san_lock_owner owner;
};

#define SAN_MUTEX_INITIALIZER                                                                      \
    {                                                                                              \
        .m = PTHREAD_MUTEX_INITIALIZER                                                             \
    }

/* 0, or the error of pthread_mutex_init (negative). */
static inline int san_mutex_init(struct san_mutex *m)
{
    atomic_init(&m->owner.thread, NULL);
    return -pthread_mutex_init(&m->m, NULL);
}

/* In a forked child, for a mutex a thread of the parent may have held: as new. Cannot fail. */
static inline void san_mutex_reset(struct san_mutex *m)
{
    *m = (struct san_mutex)SAN_MUTEX_INITIALIZER;
}

static inline void san_mutex_destroy(struct san_mutex *m)
{
    pthread_mutex_destroy(&m->m);
}

static inline void san_mutex_lock(struct san_mutex *m)
{
    pthread_mutex_lock(&m->m);
    san_lock_acquired(&m->owner);
}

static inline void san_mutex_unlock(struct san_mutex *m)
{
    san_lock_released(&m->owner);
    pthread_mutex_unlock(&m->m);
}

/* pthread_cond_wait on m (held): the holder is forgotten while the thread waits. */
static inline void san_mutex_wait(struct san_mutex *m, pthread_cond_t *cond)
{
    san_lock_released(&m->owner);
    pthread_cond_wait(cond, &m->m);
    san_lock_acquired(&m->owner);
}

#define san_assert_mutex_held(mx) san_assert_held(&(mx)->owner)

#endif
