/* forkreg: what libsan does across fork(). Every registered object (a registration cache) is
 * locked before the fork and unlocked after it in the parent; in the child it is reset (its locks
 * start afresh: threads that held them do not exist there) and the fork generation moves on, so
 * that the object tells in one load, without a system call, that it lives in a forked child.
 *
 * Locking: a process-wide mutex protects the registry; the handlers run with it held, in
 * registration order before the fork and after it. */
#ifndef SAN_CLIENT_FORKREG_H
#define SAN_CLIENT_FORKREG_H

#include <stdatomic.h>
#include <stdbool.h>

struct san_forkreg_ops {
    void (*prepare)(void *arg); /* before fork: take every lock the object has */
    void (*parent)(void *arg);  /* after fork, in the parent: release them */
    void (*child)(void *arg);   /* after fork, in the child: reset them (must not fail) */
};

struct san_forkreg_node {
    struct san_forkreg_node *prev, *next;
    const struct san_forkreg_ops *ops;
    void *arg;
    unsigned gen; /* fork generation at registration */
};

extern _Atomic unsigned san_fork_generation;

/* Registers n (ops and arg set) and records the current generation. 0, or -ENOMEM when the fork
 * handlers cannot be installed. */
int san_forkreg_add(struct san_forkreg_node *n);
void san_forkreg_del(struct san_forkreg_node *n);

/* True in a process forked after n was registered. */
static inline bool san_forkreg_forked(const struct san_forkreg_node *n)
{
    return atomic_load_explicit(&san_fork_generation, memory_order_relaxed) != n->gen;
}

#endif
