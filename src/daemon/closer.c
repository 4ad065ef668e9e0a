/* Closing descriptors the daemon did not want, off its event loop's thread.
 *
 * The last close of a descriptor runs the file's release, and some releases block: a TCP socket
 * with SO_LINGER and unsent data waits in close() until the peer reads or the linger ends. On
 * kernels with SO_PASSRIGHTS the daemon never receives a descriptor (server.c turns it off on the
 * listening socket, and a client's sendmsg with SCM_RIGHTS fails). Elsewhere a client may pass
 * descriptors with a request, or leave them queued on its connection when it is dropped (server.c
 * drains such a connection before closing it); those descriptors are closed here by a thread of
 * their own, started at the first need, so a release that blocks stalls only that thread.
 *
 * Locking: lock protects the queue; the loop's thread pushes, the closer thread pops. */
#include "daemon/daemon.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t work = PTHREAD_COND_INITIALIZER;
static int *queue;
static size_t nr, cap;
static bool started;

static void *closer_main(void *arg)
{
    (void)arg;
    pthread_mutex_lock(&lock);
    for (;;) {
        while (!nr)
            pthread_cond_wait(&work, &lock);
        int fd = queue[--nr];
        pthread_mutex_unlock(&lock);
        close(fd);
        pthread_mutex_lock(&lock);
    }
    return NULL;
}

void san_closer_close(int fd)
{
    if (fd < 0)
        return;
    pthread_mutex_lock(&lock);
    if (!started) {
        pthread_t t;
        pthread_attr_t attr;
        sigset_t all, old;
        bool ok = !pthread_attr_init(&attr);
        ok = ok && !pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        /* Signals stay with the loop's signalfd. */
        sigfillset(&all);
        pthread_sigmask(SIG_SETMASK, &all, &old);
        started = ok && !pthread_create(&t, &attr, closer_main, NULL);
        pthread_sigmask(SIG_SETMASK, &old, NULL);
        if (ok)
            pthread_attr_destroy(&attr);
        if (!started)
            log_error("cannot start the closer thread: descriptors are closed on the loop");
    }
    if (started && nr == cap) {
        size_t ncap = cap ? cap * 2 : 64;
        int *more = realloc(queue, ncap * sizeof(*queue));
        if (more) {
            queue = more;
            cap = ncap;
        }
    }
    if (started && nr < cap) {
        queue[nr++] = fd;
        pthread_cond_signal(&work);
        fd = -1;
    }
    pthread_mutex_unlock(&lock);
    if (fd >= 0)
        close(fd); /* no thread, no memory: better a stall than a leak */
}
