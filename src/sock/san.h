/* The process's side of the SAN: its libsan context (opened at the first SAN connect or listen,
 * reopened in a forked child), the fork generation, and which addresses are on the SAN.
 * Locking: ctx_lock (san.c) guards the context's opening; the context itself is thread-safe. */
#ifndef SANSOCK_SAN_H
#define SANSOCK_SAN_H

#include <stdatomic.h>
#include <stdbool.h>
#include <sys/socket.h>

#include <san/san.h>

/* Bumped in every forked child: objects made under another value belong to an ancestor. */
extern _Atomic unsigned sansock_fork_gen;

/* The context of this process (opened on first use): 0 or libsan's error (no daemon...). */
int sansock_ctx(struct san_ctx **out);

/* Whether addr is a destination on the SAN: in a network the daemon serves, its own or a linked
 * host's (route.h; no daemon: none is). Writes the address libsan is given (a v4-mapped address as
 * plain IPv4) to *out / *out_len. */
bool sansock_on_san(const struct sockaddr *addr, socklen_t len, struct sockaddr_storage *out,
                    socklen_t *out_len);

/* Installs the fork handlers (once, from the constructor). */
void sansock_san_init(void);

#endif
