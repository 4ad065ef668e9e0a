/* The process's finisher: connections the program closed with work left (SHUTDOWN not sent yet,
 * sends not completed, offers the peer has not DONE'd) are finished by one thread of the process,
 * started at the first need, so close never waits on the peer (docs/sock.md, "Close"). If the
 * process goes away first (exit, _exit, a signal), its daemon finishes them: the endpoint
 * lingers (docs/nic.md). */
#ifndef SANSOCK_FINISH_H
#define SANSOCK_FINISH_H

#include <stdbool.h>
#include <stdint.h>

struct sansock_conn;

/* Takes over c (no descriptor names it any more): finished in the background, then freed, or
 * freed at SANSOCK_LINGER_MS at the latest; if that makes more than SANSOCK_MAX_ORPHANS held, the
 * oldest held is reset and freed at the thread's next step (at once: the add wakes it). Never
 * blocks; any thread. */
void sansock_finish_add(struct sansock_conn *c);
/* Starts the thread if it does not run yet (at a connection's creation, so that no close pays
 * for a thread's creation). Blocks briefly; any thread. */
void sansock_finish_prepare(void);
/* exit(): waits until the finisher has no connection left, or deadline_ns (CLOCK_MONOTONIC);
 * then stops the thread's work for good (what it holds goes to the daemon, as at _exit). */
void sansock_finish_wait_idle(uint64_t deadline_ns);
/* In a forked child: the parent's connections and thread are not the child's. */
void sansock_finish_atfork_child(void);

/* session.c's side. A step of finishing c: progress, SHUTDOWN when a credit allows; true once
 * nothing is left to do (or nothing can be done: reset, peer gone, abortive close); else, with
 * wait_fd, the endpoint's descriptor, armed from now until c is freed. */
bool sansock_conn_finish_step(struct sansock_conn *c, int *wait_fd);
/* Closes c's endpoint and frees c. */
void sansock_conn_free(struct sansock_conn *c);

#endif
