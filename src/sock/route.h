/* Which addresses are on the SAN for this process: the networks the daemon serves
 * (san_nic_networks: its own [nic] addresses and those its links learned), cached per process and
 * refreshed at most once a second (a round trip that costs the daemon nothing when the generation
 * is unchanged), at once in a forked child. No daemon: nothing is on the SAN (everything TCP).
 * Locking: route_lock (route.c) guards the cache; the lookups take it for a few comparisons and,
 * at most once a second, for the round trip. */
#ifndef SANSOCK_ROUTE_H
#define SANSOCK_ROUTE_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/socket.h>

/* Whether sa (AF_INET or AF_INET6 with its exact size, as san.c's sansock_on_san makes it) is in
 * a network the daemon serves, its own or a linked host's. Opens the context on first use. */
bool sansock_route_served(const struct sockaddr *sa, socklen_t len);
/* Whether sa is in one of the daemon's own networks ([nic] addresses): san_listen may listen
 * there. */
bool sansock_route_local(const struct sockaddr *sa, socklen_t len);
/* This host's interface addresses of family (AF_INET or AF_INET6; not link-local) that are in the
 * daemon's own networks, with port: where a wildcard listener listens on the SAN. How many
 * (at most max). */
size_t sansock_route_local_addrs(int family, unsigned short port, struct sockaddr_storage *out,
                                 size_t max);
/* The address a socket of family connecting to dst binds to (port 0) before it is a SAN
 * connection, so that its name is the one TCP would give it: the loopback address for loopback
 * destinations, else the kernel's choice of source address for dst (asked of a UDP socket, which
 * sends nothing). 0 or -errno. */
int sansock_route_source(int family, const struct sockaddr *dst, socklen_t len,
                         struct sockaddr_storage *out, socklen_t *out_len);

/* fork: the child's lock is new, its cache is refreshed with its own context. */
void sansock_route_atfork_child(void);

#endif
