/* connect: SAN first for destinations on the SAN, else (or when the SAN connect fails before a
 * connection exists) the kernel's connect on the same, untouched socket (docs/sock.md, "Connect").
 * The program's descriptor stays its kernel TCP socket: bound to the source address TCP would use
 * and an ephemeral port so that getsockname is real, never connected. */
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <string.h>
#include <unistd.h>

#include "client/ep.h" /* san_ep_wait_arm: libsan's, for the switch only */
#include "common/clock.h"
#include "sock/log.h"
#include "sock/real.h"
#include "sock/route.h"
#include "sock/san.h"
#include "sock/session.h"
#include "sock/sock.h"

/* Whether fd is a kernel TCP stream socket. */
static bool is_tcp(int fd)
{
    int type = 0, proto = 0;
    socklen_t l1 = sizeof(type), l2 = sizeof(proto);
    return !getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &l1) && type == SOCK_STREAM &&
           !getsockopt(fd, SOL_SOCKET, SO_PROTOCOL, &proto, &l2) && proto == IPPROTO_TCP;
}

/* Binds an unbound socket to the address TCP would give it for dst (route.h), port 0; returns
 * its name. */
static int local_name(int fd, const struct sockaddr *dst, socklen_t dlen,
                      struct sansock_wire_addr *w)
{
    struct sockaddr_storage ss;
    socklen_t len = sizeof(ss);
    if (REAL(getsockname)(fd, (struct sockaddr *)&ss, &len))
        return -errno;
    bool unbound = (ss.ss_family == AF_INET && !((struct sockaddr_in *)&ss)->sin_port) ||
                   (ss.ss_family == AF_INET6 && !((struct sockaddr_in6 *)&ss)->sin6_port);
    if (unbound) {
        struct sockaddr_storage src;
        socklen_t slen;
        int err = sansock_route_source(ss.ss_family, dst, dlen, &src, &slen);
        if (err)
            return err;
        if (bind(fd, (struct sockaddr *)&src, slen) < 0)
            return -errno;
        len = sizeof(ss);
        if (REAL(getsockname)(fd, (struct sockaddr *)&ss, &len))
            return -errno;
    }
    return sansock_wire_addr_from(w, (struct sockaddr *)&ss, len);
}

/* A blocking SAN connect, at most SANSOCK_CONNECT_TIMEOUT_MS: libsan's san_connect, which
 * completes when the listener's switch takes the connection from the daemon (its accept, poll or
 * epoll look). When that listener is this process's own, the thread may be the one that would
 * look: it looks itself (sansock_listen_tend_for) between short waits, so a program that connects
 * to itself before it accepts does not wait for the timeout and TCP. */
static int blocking_connect(struct san_ctx *ctx, const struct sockaddr *dst, socklen_t dlen,
                            struct san_ep **out)
{
    struct sansock_wire_addr to;
    if (sansock_wire_addr_from(&to, dst, dlen) || !sansock_listen_local(&to))
        return san_connect(ctx, dst, dlen, sansock_cfg.connect_timeout_ms, out);
    struct san_ep *ep;
    int err = san_connect_start(ctx, dst, dlen, &ep);
    if (err)
        return err;
    uint64_t deadline = san_now_ns() + (uint64_t)sansock_cfg.connect_timeout_ms * 1000000u;
    for (;;) {
        sansock_listen_tend_for(&to);
        if ((err = san_connect_finish(ep)) != -EINPROGRESS || san_now_ns() >= deadline)
            break;
        /* The outcome makes the endpoint's descriptor readable; the listener is looked at again
         * every 10 ms (a look takes 16 connections at most). */
        struct pollfd p = {.fd = san_ep_wait_arm(ep), .events = POLLIN};
        REAL(poll)(&p, 1, 10);
        san_ep_wait_disarm(ep);
    }
    if (!err) {
        *out = ep;
        return 0;
    }
    san_ep_close(ep);
    return err == -EINPROGRESS ? -ETIMEDOUT : -ECONNREFUSED; /* as san_connect's */
}

/* The SAN attempt on a socket that is no SAN socket yet: 0 with fd in the table (connected),
 * -EINPROGRESS (a non-blocking socket: in the table, connecting), or a negative errno and fd
 * untouched except maybe bound (a bound, unconnected socket still connects over TCP). */
static int san_attempt(int fd, const struct sockaddr *addr, socklen_t len, const char **why)
{
    struct sockaddr_storage dst;
    socklen_t dlen;
    if (!sansock_on_san(addr, len, &dst, &dlen) || !is_tcp(fd)) {
        *why = "not a SAN destination";
        return -ENETUNREACH;
    }
    struct san_ctx *ctx;
    int err = sansock_ctx(&ctx);
    if (err)
        return err;
    bool nonblock = sansock_nonblocking(fd, 0);
    struct san_ep *ep;
    err = nonblock ? san_connect_start(ctx, (struct sockaddr *)&dst, dlen, &ep)
                   : blocking_connect(ctx, (struct sockaddr *)&dst, dlen, &ep);
    if (err)
        return err;
    struct sansock_wire_addr src, to;
    err = local_name(fd, addr, len, &src);
    if (!err)
        err = sansock_wire_addr_from(&to, addr, len);
    if (err) {
        san_ep_close(ep);
        return err;
    }
    struct sansock_conn *c;
    if (nonblock)
        err = sansock_conn_create_connecting(ctx, ep, fd, addr, len, &src, &to, &c);
    else
        err = sansock_conn_create(ctx, ep, &src, &to, &c);
    if (err)
        return err;
    /* SOCK_NONBLOCK at socket(), or an fcntl before connect: what the kernel said above. */
    sansock_obj_set_nonblock(sansock_conn_obj(c), nonblock);
    err = sansock_fd_set(fd, sansock_conn_obj(c));
    sansock_obj_put(sansock_conn_obj(c));
    return err ? err : nonblock ? -EINPROGRESS : 0;
}

/* SANSOCK_LOG: where a connect to an IPv4 or IPv6 address went, and why not the SAN. */
static void log_connect(const struct sockaddr *addr, socklen_t len, int err, const char *why)
{
    if (!addr || len < (socklen_t)sizeof(sa_family_t) ||
        (addr->sa_family != AF_INET && addr->sa_family != AF_INET6))
        return;
    char a[64];
    sansock_log_addr(addr, len, a, sizeof(a));
    if (!err)
        sansock_log("connect to %s: over the SAN", a);
    else if (err == -EINPROGRESS)
        sansock_log("connect to %s: over the SAN, under way", a);
    else
        sansock_log("connect to %s: over TCP (%s)", a, why ? why : strerror(-err));
}

int sansock_connect(int fd, const struct sockaddr *addr, socklen_t len)
{
    if (!sansock_cfg.disabled) {
        struct sansock_obj *o = sansock_fd_get(fd);
        struct sansock_conn *c = sansock_obj_conn(o);
        /* A SAN connection: under way, done (TCP's answers); a listener: the kernel says. */
        int r = c ? sansock_conn_connect_again(c) : 1;
        sansock_obj_put(o);
        if (r <= 0) {
            if (!r)
                return 0;
            errno = -r;
            return -1;
        }
        if (!o) {
            int saved = errno;
            const char *why = NULL;
            int err = san_attempt(fd, addr, len, &why);
            if (sansock_logging())
                log_connect(addr, len, err, why);
            if (!err)
                return 0;
            if (err == -EINPROGRESS) {
                errno = EINPROGRESS;
                return -1;
            }
            errno = saved;
        }
    }
    return REAL(connect)(fd, addr, len);
}
