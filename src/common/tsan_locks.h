/* ThreadSanitizer builds only: force-included into every file (CMakeLists.txt, SAN_TSAN).
 *
 * A program's call of epoll_wait, poll, read... reaches ThreadSanitizer's interceptor of it
 * first (the runtime is in the program), which calls the next definition, the sockets switch's,
 * inside its "blocking call" scope, where TSan ignores every interceptor, pthread_mutex_lock
 * included. Locks the switch and libsan take in there would be invisible, and accesses under
 * them would look unlocked against a thread of the switch's own (the finisher, finish.c) that
 * takes the same locks outside: false races. So every lock operation also tells TSan directly
 * (its acquire and release of the lock's address, which are not interceptors): the ordering a
 * lock gives is always seen, and where the interceptor saw it too this only repeats it. */
#ifndef SAN_COMMON_TSAN_LOCKS_H
#define SAN_COMMON_TSAN_LOCKS_H

#include <pthread.h>

void __tsan_acquire(void *addr);
void __tsan_release(void *addr);

static inline int san_tsan_mutex_lock(pthread_mutex_t *m)
{
    int r = (pthread_mutex_lock)(m);
    if (!r)
        __tsan_acquire(m);
    return r;
}

static inline int san_tsan_mutex_trylock(pthread_mutex_t *m)
{
    int r = (pthread_mutex_trylock)(m);
    if (!r)
        __tsan_acquire(m);
    return r;
}

static inline int san_tsan_mutex_unlock(pthread_mutex_t *m)
{
    __tsan_release(m);
    return (pthread_mutex_unlock)(m);
}

static inline int san_tsan_rwlock_rdlock(pthread_rwlock_t *l)
{
    int r = (pthread_rwlock_rdlock)(l);
    if (!r)
        __tsan_acquire(l);
    return r;
}

static inline int san_tsan_rwlock_wrlock(pthread_rwlock_t *l)
{
    int r = (pthread_rwlock_wrlock)(l);
    if (!r)
        __tsan_acquire(l);
    return r;
}

static inline int san_tsan_rwlock_unlock(pthread_rwlock_t *l)
{
    __tsan_release(l);
    return (pthread_rwlock_unlock)(l);
}

static inline int san_tsan_cond_wait(pthread_cond_t *c, pthread_mutex_t *m)
{
    __tsan_release(m);
    int r = (pthread_cond_wait)(c, m);
    __tsan_acquire(m);
    return r;
}

static inline int san_tsan_cond_timedwait(pthread_cond_t *c, pthread_mutex_t *m,
                                          const struct timespec *t)
{
    __tsan_release(m);
    int r = (pthread_cond_timedwait)(c, m, t);
    __tsan_acquire(m);
    return r;
}

#define pthread_mutex_lock(m)           san_tsan_mutex_lock(m)
#define pthread_mutex_trylock(m)        san_tsan_mutex_trylock(m)
#define pthread_mutex_unlock(m)         san_tsan_mutex_unlock(m)
#define pthread_rwlock_rdlock(l)        san_tsan_rwlock_rdlock(l)
#define pthread_rwlock_wrlock(l)        san_tsan_rwlock_wrlock(l)
#define pthread_rwlock_unlock(l)        san_tsan_rwlock_unlock(l)
#define pthread_cond_wait(c, m)         san_tsan_cond_wait(c, m)
#define pthread_cond_timedwait(c, m, t) san_tsan_cond_timedwait(c, m, t)

#endif
