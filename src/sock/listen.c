/* listen on both TCP and the SAN, and accept from either (docs/sock.md, "Listen on both"). The
 * kernel's listen always happens first and decides; the SAN half is added when the address is
 * loopback or a wildcard and the daemon lets us listen there. A listener object holds up to two SAN
 * listeners (a [::] socket listens on ::1 and 127.0.0.1).
 * Locking: a listener's fields are written before it is in the table and only read afterwards;
 * libsan's listener calls are thread-safe. */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <stdatomic.h>
#include <time.h>

#include "sock/real.h"
#include "sock/san.h"
#include "sock/session.h"
#include "sock/sock.h"

#define NEGOTIATE_MS 2000

struct sansock_lsn {
    struct sansock_obj obj;
    struct san_listener *l[2];
    struct sansock_wire_addr addr[2]; /* the SAN addresses listened on */
    int n;
    int family;               /* of the kernel socket */
    _Atomic unsigned accepts; /* accept calls: epoll's edge-triggered mode (epoll.c) */
};

static void lsn_destroy(struct sansock_obj *o)
{
    struct sansock_lsn *s = (struct sansock_lsn *)o;
    if (s->obj.gen == sansock_fork_gen)
        for (int i = 0; i < s->n; i++)
            san_listener_close(s->l[i]);
    free(s);
}

static int san_listen_at(struct san_ctx *ctx, struct sansock_lsn *s, const struct sockaddr *sa,
                         socklen_t len, int backlog)
{
    if (san_listen(ctx, sa, len, backlog, &s->l[s->n]))
        return -1;
    sansock_wire_addr_from(&s->addr[s->n], sa, len);
    s->n++;
    return 0;
}

int sansock_listen(int fd, int backlog)
{
    if (REAL(listen)(fd, backlog) < 0)
        return -1;
    if (sansock_cfg.disabled)
        return 0;
    int saved = errno;
    struct sansock_obj *o = sansock_fd_get(fd);
    if (o) { /* listening again (a new backlog) or a SAN connection: nothing more to do */
        sansock_obj_put(o);
        return 0;
    }
    struct sockaddr_storage ss;
    socklen_t len = sizeof(ss);
    int type = 0, proto = 0, v6only = 0;
    socklen_t tl = sizeof(type), pl = sizeof(proto), vl = sizeof(v6only);
    if (REAL(getsockname)(fd, (struct sockaddr *)&ss, &len) ||
        getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &tl) || type != SOCK_STREAM ||
        getsockopt(fd, SOL_SOCKET, SO_PROTOCOL, &proto, &pl) || proto != IPPROTO_TCP)
        goto out;
    struct sockaddr_in in4 = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    struct sockaddr_in6 in6 = {.sin6_family = AF_INET6, .sin6_addr = IN6ADDR_LOOPBACK_INIT};
    bool want4 = false, want6 = false;
    if (ss.ss_family == AF_INET) {
        struct sockaddr_in *a = (struct sockaddr_in *)&ss;
        in4.sin_port = a->sin_port;
        if ((ntohl(a->sin_addr.s_addr) >> 24) == 127)
            in4.sin_addr = a->sin_addr;
        want4 = a->sin_addr.s_addr == htonl(INADDR_ANY) || (ntohl(a->sin_addr.s_addr) >> 24) == 127;
    } else if (ss.ss_family == AF_INET6) {
        struct sockaddr_in6 *a = (struct sockaddr_in6 *)&ss;
        in6.sin6_port = in4.sin_port = a->sin6_port;
        bool any = IN6_IS_ADDR_UNSPECIFIED(&a->sin6_addr);
        getsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &v6only, &vl);
        want6 = any || IN6_IS_ADDR_LOOPBACK(&a->sin6_addr);
        want4 = any && !v6only;
        if (IN6_IS_ADDR_V4MAPPED(&a->sin6_addr) && a->sin6_addr.s6_addr[12] == 127) {
            want4 = true;
            memcpy(&in4.sin_addr, &a->sin6_addr.s6_addr[12], 4);
        }
    }
    if (!want4 && !want6)
        goto out;
    struct san_ctx *ctx;
    if (sansock_ctx(&ctx))
        goto out;
    struct sansock_lsn *s = calloc(1, sizeof(*s));
    if (!s)
        goto out;
    s->obj = (struct sansock_obj){
        .kind = SANSOCK_LISTENER, .refs = 1, .gen = sansock_fork_gen, .destroy = lsn_destroy};
    s->family = ss.ss_family;
    int bl = backlog < 1 ? 1 : backlog;
    if (want6)
        san_listen_at(ctx, s, (struct sockaddr *)&in6, sizeof(in6), bl);
    if (want4)
        san_listen_at(ctx, s, (struct sockaddr *)&in4, sizeof(in4), bl);
    if (s->n)
        sansock_fd_set(fd, &s->obj);
    sansock_obj_put(&s->obj);
out:
    errno = saved;
    return 0;
}

int sansock_listener_fds(struct sansock_obj *o, int fds[2])
{
    struct sansock_lsn *s = (struct sansock_lsn *)o;
    if (o->kind != SANSOCK_LISTENER || s->obj.gen != sansock_fork_gen)
        return 0;
    for (int i = 0; i < s->n; i++)
        fds[i] = san_listener_fd(s->l[i]);
    return s->n;
}

unsigned sansock_listener_accepts(struct sansock_obj *o)
{
    struct sansock_lsn *s = (struct sansock_lsn *)o;
    return atomic_load_explicit(&s->accepts, memory_order_relaxed);
}

/* A SAN connection just accepted on listener i: its descriptor, or -1 (the connection is gone). */
static int accept_san(struct sansock_lsn *s, int i, struct san_ep *ep, struct sockaddr *addr,
                      socklen_t *len, int flags)
{
    struct san_ctx *ctx;
    if (sansock_ctx(&ctx)) {
        san_ep_close(ep);
        return -1;
    }
    /* The peer's address comes in its negotiation: set afterwards. */
    struct sansock_wire_addr none = s->addr[i];
    struct sansock_conn *c;
    if (sansock_conn_create(ctx, ep, &s->addr[i], &none, &c))
        return -1;
    struct sansock_wire_addr src, dst;
    int fd = -1;
    if (sansock_conn_wait_negotiated(c, NEGOTIATE_MS))
        goto out;
    sansock_conn_peer_addrs(c, &src, &dst);
    sansock_conn_set_names(c, &s->addr[i], &src);
    fd = socket(s->addr[i].family == SANSOCK_WIRE_AF_INET6 ? AF_INET6 : s->family,
                SOCK_STREAM | (flags & (SOCK_NONBLOCK | SOCK_CLOEXEC)), IPPROTO_TCP);
    if (fd < 0)
        goto out;
    if (sansock_fd_set(fd, sansock_conn_obj(c))) {
        REAL(close)(fd);
        fd = -1;
        goto out;
    }
    if (addr && len)
        sansock_wire_addr_to(&src, addr, len);
out:
    sansock_obj_put(sansock_conn_obj(c));
    return fd;
}

int sansock_accept(int fd, struct sansock_obj *o, struct sockaddr *addr, socklen_t *len, int flags)
{
    struct sansock_lsn *s = (struct sansock_lsn *)o;
    int n = s->obj.gen == sansock_fork_gen ? s->n : 0; /* in a child: the kernel half only */
    int saved = errno;
    atomic_fetch_add_explicit(&s->accepts, 1, memory_order_relaxed);
    for (;;) {
        for (int i = 0; i < n; i++) {
            struct san_ep *ep;
            if (san_accept(s->l[i], 0, &ep))
                continue;
            int nfd = accept_san(s, i, ep, addr, len, flags);
            if (nfd >= 0) {
                errno = saved;
                return nfd;
            }
        }
        bool nonblock = sansock_nonblocking(fd, 0);
        if (nonblock || !n)
            return REAL(accept4)(fd, addr, len, flags);
        struct pollfd p[3] = {{.fd = fd, .events = POLLIN}};
        for (int i = 0; i < n; i++)
            p[i + 1] = (struct pollfd){.fd = san_listener_fd(s->l[i]), .events = POLLIN};
        int r = REAL(poll)(p, (nfds_t)n + 1, -1);
        if (r < 0)
            return -1; /* EINTR, as accept */
        if (p[0].revents) {
            /* Another thread may take it first: then this waits in the kernel, as TCP would. */
            bool san_waits = false;
            for (int i = 0; i < n; i++)
                san_waits |= p[i + 1].revents != 0;
            if (!san_waits)
                return REAL(accept4)(fd, addr, len, flags);
        }
    }
}
