/* forkreg: the fork handlers of libsan (see forkreg.h). Sits on pthread_atfork, installed once.
 * Locking: registry_lock, held from the prepare handler to the parent's (or reset in the child). */
#include "client/forkreg.h"

#include <errno.h>
#include <pthread.h>

_Atomic unsigned san_fork_generation;

static pthread_mutex_t registry_lock = PTHREAD_MUTEX_INITIALIZER;
static struct san_forkreg_node *registry;
static pthread_once_t atfork_once = PTHREAD_ONCE_INIT;
static int atfork_err;

static void atfork_prepare(void)
{
    pthread_mutex_lock(&registry_lock);
    for (struct san_forkreg_node *n = registry; n; n = n->next)
        n->ops->prepare(n->arg);
}

static void atfork_parent(void)
{
    for (struct san_forkreg_node *n = registry; n; n = n->next)
        n->ops->parent(n->arg);
    pthread_mutex_unlock(&registry_lock);
}

static void atfork_child(void)
{
    atomic_fetch_add(&san_fork_generation, 1);
    for (struct san_forkreg_node *n = registry; n; n = n->next)
        n->ops->child(n->arg);
    registry_lock = (pthread_mutex_t)PTHREAD_MUTEX_INITIALIZER; /* nothing to fail here */
}

static void atfork_install(void)
{
    atfork_err = pthread_atfork(atfork_prepare, atfork_parent, atfork_child);
}

int san_forkreg_add(struct san_forkreg_node *n)
{
    pthread_once(&atfork_once, atfork_install);
    if (atfork_err)
        return -atfork_err;
    pthread_mutex_lock(&registry_lock);
    n->gen = atomic_load(&san_fork_generation);
    n->prev = NULL;
    n->next = registry;
    if (registry)
        registry->prev = n;
    registry = n;
    pthread_mutex_unlock(&registry_lock);
    return 0;
}

void san_forkreg_del(struct san_forkreg_node *n)
{
    pthread_mutex_lock(&registry_lock);
    if (n->prev)
        n->prev->next = n->next;
    else
        registry = n->next;
    if (n->next)
        n->next->prev = n->prev;
    pthread_mutex_unlock(&registry_lock);
}
