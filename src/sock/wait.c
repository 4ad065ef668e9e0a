/* Per-thread wake-up eventfds and waiter lists (wait.h). The eventfd is made with the kernel's
 * eventfd (not interposed) and closed by a thread-specific destructor with the real close. */
#include "sock/wait.h"

#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <sys/eventfd.h>

#include "sock/real.h"

static _Thread_local int wakefd = -1;
static pthread_key_t key;
static pthread_once_t key_once = PTHREAD_ONCE_INIT;

static void thread_gone(void *arg)
{
    int fd = (int)(intptr_t)arg - 1;
    if (fd >= 0)
        REAL(close)(fd);
}

static void make_key(void)
{
    pthread_key_create(&key, thread_gone);
}

int sansock_wakefd(void)
{
    if (wakefd >= 0)
        return wakefd;
    pthread_once(&key_once, make_key);
    int fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (fd < 0)
        return -errno;
    wakefd = fd;
    pthread_setspecific(key, (void *)(intptr_t)(fd + 1));
    return fd;
}

void sansock_wakefd_drain(int fd)
{
    uint64_t v;
    int saved = errno;
    if (REAL(read)(fd, &v, sizeof(v)) < 0) {
    }
    errno = saved;
}

void sansock_waiter_link(struct sansock_waiter **head, struct sansock_waiter *w)
{
    w->prev = NULL;
    w->next = *head;
    if (*head)
        (*head)->prev = w;
    *head = w;
}

void sansock_waiter_unlink(struct sansock_waiter **head, struct sansock_waiter *w)
{
    if (w->prev)
        w->prev->next = w->next;
    else
        *head = w->next;
    if (w->next)
        w->next->prev = w->prev;
    w->next = w->prev = NULL;
}

void sansock_waiters_wake(struct sansock_waiter *head)
{
    int saved = errno;
    for (struct sansock_waiter *w = head; w; w = w->next) {
        uint64_t one = 1;
        if (REAL(write)(w->fd, &one, sizeof(one)) < 0) {
        }
    }
    errno = saved;
}

void sansock_wait_atfork_child(void)
{
    /* The forking thread's eventfd is inherited and still its own; nothing else to reset. */
}
