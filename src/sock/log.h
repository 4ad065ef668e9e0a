/* The switch's own word on what it did behind the program's back, on standard error, with
 * SANSOCK_LOG=1 (docs/sock.md, "Seeing what the switch does"): a connect or listen that went to
 * the kernel and why, a closed connection the finisher reset or gave up, a connection reset for
 * breaking the session protocol. Off by default: an interposer says nothing a program did not ask
 * for. One line per event, "sansock[PID]: ...", written with one write(2) so that lines of
 * threads never mix. No locking. */
#ifndef SANSOCK_LOG_H
#define SANSOCK_LOG_H

#include <stddef.h>
#include <sys/socket.h>

#include "sock/real.h"

/* Whether SANSOCK_LOG is on (the check to make before building a message's arguments). */
#define sansock_logging() (sansock_cfg.log)
/* printf-style; a line longer than 256 bytes is cut. errno is kept. */
void sansock_log(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* "a.b.c.d:port" or "[v6]:port" of an AF_INET/AF_INET6 address into buf; "?" otherwise. */
const char *sansock_log_addr(const struct sockaddr *sa, socklen_t len, char *buf, size_t size);

#endif
