/* Waiting for a connection's progress. Each thread that ever waits has a wake-up eventfd of its
 * own (made on first use, closed when the thread exits). A waiter links a node into every
 * connection it waits on; whoever makes progress on a connection (polls its completions, under its
 * lock) wakes every waiter linked to it, so no thread misses progress another thread made.
 * Locking: a node is linked and unlinked under its connection's lock. */
#ifndef SANSOCK_WAIT_H
#define SANSOCK_WAIT_H

/* How long a thread looks for progress (yielding between looks) before it sleeps: a wake-up from
 * sleep costs the NIC an eventfd write and the sleeper a kernel poll, more than a round trip. */
#define SANSOCK_SPIN_NS 20000u

struct san_ep;
struct sansock_waiter {
    struct sansock_waiter *next, *prev;
    int fd;               /* the waiting thread's eventfd */
    struct san_ep *armed; /* the endpoint whose eventfd it armed for its wait, or NULL */
};

/* This thread's wake-up eventfd (non-blocking, close-on-exec), or a negative errno. */
int sansock_wakefd(void);
/* Empties this thread's eventfd after a wait. */
void sansock_wakefd_drain(int fd);
void sansock_waiter_link(struct sansock_waiter **head, struct sansock_waiter *w);
void sansock_waiter_unlink(struct sansock_waiter **head, struct sansock_waiter *w);
/* Wakes every waiter on the list. */
void sansock_waiters_wake(struct sansock_waiter *head);
void sansock_wait_atfork_child(void);

#endif
