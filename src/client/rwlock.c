/* rwlock: the cache's index lock (see rwlock.h). Sits on one pthread mutex for the writers and
 * C11 atomics for the readers' slots. */
#include "client/rwlock.h"

#include <sched.h>

_Thread_local unsigned san_rwlock_my_slot = UINT_MAX;
static _Atomic unsigned next_slot;

unsigned san_rwlock_pick_slot(void)
{
    return atomic_fetch_add_explicit(&next_slot, 1, memory_order_relaxed) % SAN_RWLOCK_SLOTS;
}

int san_rwlock_init(struct san_rwlock *l)
{
    for (int i = 0; i < SAN_RWLOCK_SLOTS; i++)
        atomic_store(&l->readers[i].n, 0);
    atomic_store(&l->writer, 0);
    atomic_init(&l->holder.thread, NULL);
    return -pthread_mutex_init(&l->wlock, NULL);
}

void san_rwlock_destroy(struct san_rwlock *l)
{
    pthread_mutex_destroy(&l->wlock);
}

void san_rwlock_reset(struct san_rwlock *l)
{
    for (int i = 0; i < SAN_RWLOCK_SLOTS; i++)
        atomic_store(&l->readers[i].n, 0);
    atomic_store(&l->writer, 0);
    /* The static initialiser: nothing to fail in a fork handler. */
    l->wlock = (pthread_mutex_t)PTHREAD_MUTEX_INITIALIZER;
    san_lock_released(&l->holder);
}

void san_rwlock_read_wait(struct san_rwlock *l, struct san_rwlock_slot *s)
{
    do {
        atomic_fetch_sub_explicit(&s->n, 1, memory_order_release);
        pthread_mutex_lock(&l->wlock);
        pthread_mutex_unlock(&l->wlock);
        atomic_fetch_add_explicit(&s->n, 1, memory_order_seq_cst);
    } while (atomic_load_explicit(&l->writer, memory_order_seq_cst));
}

void san_rwlock_write(struct san_rwlock *l)
{
    pthread_mutex_lock(&l->wlock);
    atomic_store_explicit(&l->writer, 1, memory_order_seq_cst);
    for (int i = 0; i < SAN_RWLOCK_SLOTS; i++)
        while (atomic_load_explicit(&l->readers[i].n, memory_order_seq_cst))
            sched_yield();
    san_lock_acquired(&l->holder);
}

void san_rwlock_write_unlock(struct san_rwlock *l)
{
    san_lock_released(&l->holder);
    atomic_store_explicit(&l->writer, 0, memory_order_release);
    pthread_mutex_unlock(&l->wlock);
}
