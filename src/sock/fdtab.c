/* The descriptor table (fdtab.h): 1024 chunks of 1024 entries (descriptors below 1M; a socket
 * numbered higher stays the kernel's), each chunk mapped when its first entry is set and never
 * unmapped, so a reader never sees a chunk go away. */
#include "sock/fdtab.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <time.h>

#include "sock/real.h"
#include "sock/sock.h"

#define CHUNK_BITS 10
#define CHUNK      (1u << CHUNK_BITS)
#define TOP        1024u

static struct sansock_obj *_Atomic *_Atomic chunks[TOP];
static unsigned entries; /* set entries, under tab_lock */
static _Atomic unsigned any_entries;
static pthread_mutex_t tab_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_mutex_t nb_lock = PTHREAD_MUTEX_INITIALIZER;

/* How long a cached "non-blocking" is believed before an EAGAIN reads the kernel again. */
#define NB_TRUST_NS 1000000u

static struct sansock_obj *_Atomic *slot_of(unsigned fd, bool make)
{
    unsigned top = fd >> CHUNK_BITS;
    if (top >= TOP)
        return NULL;
    struct sansock_obj *_Atomic *c = atomic_load_explicit(&chunks[top], memory_order_acquire);
    if (!c && make) { /* under tab_lock: only one maker */
        void *m = mmap(NULL, CHUNK * sizeof(*c), PROT_READ | PROT_WRITE,
                       MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (m == MAP_FAILED)
            return NULL;
        c = m;
        atomic_store_explicit(&chunks[top], c, memory_order_release);
    }
    return c ? &c[fd & (CHUNK - 1)] : NULL;
}

/* The slot of fd when it may hold an object, seen without the lock (the fast path for the
 * program's own descriptors: one or two atomic loads), or NULL. */
static struct sansock_obj *_Atomic *occupied_slot(int fd)
{
    if (fd < 0 || !atomic_load_explicit(&any_entries, memory_order_relaxed))
        return NULL;
    struct sansock_obj *_Atomic *s = slot_of((unsigned)fd, false);
    return s && atomic_load_explicit(s, memory_order_relaxed) ? s : NULL;
}

struct sansock_obj *sansock_fd_get(int fd)
{
    struct sansock_obj *_Atomic *s = occupied_slot(fd);
    if (!s)
        return NULL;
    pthread_mutex_lock(&tab_lock);
    struct sansock_obj *o = atomic_load_explicit(s, memory_order_relaxed);
    if (o)
        o->refs++;
    pthread_mutex_unlock(&tab_lock);
    return o;
}

void sansock_obj_ref(struct sansock_obj *o)
{
    pthread_mutex_lock(&tab_lock);
    o->refs++;
    pthread_mutex_unlock(&tab_lock);
}

void sansock_obj_put(struct sansock_obj *o)
{
    if (!o)
        return;
    pthread_mutex_lock(&tab_lock);
    bool last = --o->refs == 0;
    pthread_mutex_unlock(&tab_lock);
    if (last)
        o->destroy(o);
}

int sansock_fd_set(int fd, struct sansock_obj *o)
{
    if (fd < 0)
        return -EBADF;
    pthread_mutex_lock(&tab_lock);
    struct sansock_obj *_Atomic *s = slot_of((unsigned)fd, true);
    if (!s) {
        pthread_mutex_unlock(&tab_lock);
        return -EMFILE;
    }
    o->refs++;
    struct sansock_obj *old = atomic_exchange(s, o);
    if (!old)
        atomic_store(&any_entries, ++entries);
    bool last = old && --old->refs == 0;
    pthread_mutex_unlock(&tab_lock);
    if (last)
        old->destroy(old);
    return 0;
}

struct sansock_obj *sansock_fd_take(int fd)
{
    struct sansock_obj *_Atomic *s = occupied_slot(fd);
    if (!s)
        return NULL;
    pthread_mutex_lock(&tab_lock);
    struct sansock_obj *o = atomic_exchange(s, NULL);
    if (o)
        atomic_store(&any_entries, --entries);
    pthread_mutex_unlock(&tab_lock);
    if (o && o->kind != SANSOCK_EPOLL)
        sansock_epoll_forget(fd, o); /* outside tab_lock: epoll's locks come before it */
    return o;
}

void sansock_fd_unmap(struct sansock_obj *o)
{
    pthread_mutex_lock(&tab_lock);
    for (unsigned top = 0; top < TOP; top++) {
        struct sansock_obj *_Atomic *c = atomic_load_explicit(&chunks[top], memory_order_acquire);
        for (unsigned i = 0; c && i < CHUNK && entries; i++) {
            if (atomic_load_explicit(&c[i], memory_order_relaxed) != o)
                continue;
            atomic_store(&c[i], NULL);
            atomic_store(&any_entries, --entries);
            o->refs--; /* the caller's keeps it alive */
        }
    }
    pthread_mutex_unlock(&tab_lock);
}

void sansock_fd_each(void (*fn)(struct sansock_obj *o, void *arg), void *arg)
{
    if (!atomic_load_explicit(&any_entries, memory_order_relaxed))
        return;
    for (unsigned top = 0; top < TOP; top++) {
        if (!atomic_load_explicit(&chunks[top], memory_order_acquire))
            continue;
        for (unsigned i = 0; i < CHUNK; i++) {
            struct sansock_obj *o = sansock_fd_get((int)(top << CHUNK_BITS | i));
            if (o)
                fn(o, arg);
            sansock_obj_put(o);
        }
    }
}

void sansock_fd_drop_range(unsigned first, unsigned last)
{
    if (!atomic_load_explicit(&any_entries, memory_order_relaxed))
        return;
    for (unsigned top = first >> CHUNK_BITS; top < TOP && top <= (last >> CHUNK_BITS); top++) {
        if (!atomic_load_explicit(&chunks[top], memory_order_acquire))
            continue;
        for (unsigned i = 0; i < CHUNK; i++) {
            unsigned fd = top << CHUNK_BITS | i;
            if (fd < first || fd > last || fd > (unsigned)__INT_MAX__)
                continue;
            sansock_obj_put(sansock_fd_take((int)fd));
        }
    }
}

static uint64_t mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

void sansock_nonblock_lock(void)
{
    pthread_mutex_lock(&nb_lock);
}

void sansock_nonblock_unlock(void)
{
    pthread_mutex_unlock(&nb_lock);
}

void sansock_obj_set_nonblock(struct sansock_obj *o, bool on)
{
    atomic_store_explicit(&o->nonblock, on, memory_order_relaxed);
    atomic_store_explicit(&o->nb_read_ns, mono_ns(), memory_order_relaxed);
}

bool sansock_obj_nonblock_reread(struct sansock_obj *o, int fd)
{
    int saved = errno;
    pthread_mutex_lock(&nb_lock);
    int fl = REAL(fcntl)(fd, F_GETFL);
    if (fl >= 0)
        sansock_obj_set_nonblock(o, fl & O_NONBLOCK);
    bool on = atomic_load_explicit(&o->nonblock, memory_order_relaxed);
    pthread_mutex_unlock(&nb_lock);
    errno = saved;
    return on;
}

bool sansock_obj_nonblocking(struct sansock_obj *o, int fd, int flags)
{
    if (flags & MSG_DONTWAIT)
        return true;
    if (!atomic_load_explicit(&o->nonblock, memory_order_relaxed))
        return false; /* a waiter re-reads before it sleeps */
    if (mono_ns() - atomic_load_explicit(&o->nb_read_ns, memory_order_relaxed) < NB_TRUST_NS)
        return true;
    return sansock_obj_nonblock_reread(o, fd);
}

void sansock_fdtab_atfork_child(void)
{
    pthread_mutex_init(&tab_lock, NULL);
    pthread_mutex_init(&nb_lock, NULL);
}
