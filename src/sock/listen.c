/* listen on both TCP and the SAN, and accept from either (docs/sock.md, "Listen on both"). The
 * kernel's listen always happens first and decides; the SAN half is added when the address is one
 * the daemon serves itself ([nic] addresses), or a wildcard: then on every address of this host
 * that the daemon serves (route.h). A listener object holds up to LSN_MAX SAN listeners.
 *
 * Accept never waits on a peer. A SAN connection is taken from the daemon as soon as the listener
 * is looked at (accept, poll, epoll) and set up at once (buffers, receives, our NEGOTIATE), then
 * held as an embryo until the connector's NEGOTIATE arrives; accept returns only connections whose
 * NEGOTIATE arrived. At most EMBRYO_MAX embryos: when full, the oldest still silent is dropped once
 * it is EMBRYO_EVICT_MS old (until then new ones wait in the daemon's backlog); any silent one is
 * dropped after EMBRYO_MAX_MS. A peer that sends garbage or closes is dropped unseen. What to sleep
 * on is one descriptor per listener (an epoll instance of our own holding the SAN listeners'
 * descriptors, the embryos' completion descriptors and a timer for the limits above), readable
 * when the listener should be looked at again.
 *
 * Locking: a listener's fixed fields are written before it is in the table and only read
 * afterwards; lock guards the embryos and is taken before a connection's lock. libsan's listener
 * calls are thread-safe. An inherited listener (another gen) is never locked. */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <stdatomic.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#include "common/clock.h"
#include "sock/log.h"
#include "sock/real.h"
#include "sock/route.h"
#include "sock/san.h"
#include "sock/session.h"
#include "sock/sock.h"
#include "sock/wait.h"

#define EMBRYO_MAX      64
#define EMBRYO_EVICT_MS 100
#define EMBRYO_MAX_MS   30000
#define EMBRYO_PER_LOOK 16 /* set-ups per look (a few round trips each): a look stays short */

struct embryo {
    struct sansock_conn *c; /* a reference */
    int i;                  /* which SAN listener */
    uint64_t born;          /* taken from the daemon (monotonic ns) */
    int efd;                /* its completion descriptor, in the listener's epoll instance */
    bool complete;          /* its NEGOTIATE arrived */
    struct sansock_waiter w;
};

#define LSN_MAX 8

struct sansock_lsn {
    struct sansock_obj obj;
    struct san_listener *l[LSN_MAX];
    struct sansock_wire_addr addr[LSN_MAX]; /* the SAN addresses listened on */
    int n;
    int family;                /* of the kernel socket */
    _Atomic unsigned accepts;  /* accept calls: epoll's edge-triggered mode (epoll.c) */
    _Atomic unsigned arrivals; /* embryos that completed: likewise */
    int epfd, timerfd, wake;   /* what to sleep on (above); wake: the embryos' waiter descriptor */
    bool lfds_in;              /* the SAN listeners' descriptors are in epfd (not while full) */
    pthread_mutex_t lock;
    struct embryo *emb[EMBRYO_MAX]; /* oldest first; each allocated: its waiter is linked */
    int nemb;
    struct sansock_lsn *next_local; /* in locals (below) while it has SAN listeners */
};

/* This process's listener objects with SAN listeners, for a connect to one of them from a thread
 * that would otherwise wait for its own accept (sansock_listen_tend_for). locals_lock is taken
 * before a listener's lock, never while one is held. */
static pthread_mutex_t locals_lock = PTHREAD_MUTEX_INITIALIZER;
static struct sansock_lsn *locals;

static bool ours(const struct sansock_lsn *s)
{
    return s->obj.gen == sansock_fork_gen;
}

/* Takes embryo k out of the list; its connection (a reference) comes back to the caller. */
static struct sansock_conn *embryo_take_locked(struct sansock_lsn *s, int k)
{
    struct embryo *e = s->emb[k];
    struct sansock_conn *c = e->c;
    if (e->efd >= 0)
        REAL(epoll_ctl)(s->epfd, EPOLL_CTL_DEL, e->efd, NULL);
    sansock_conn_unwait(c, &e->w);
    free(e);
    memmove(&s->emb[k], &s->emb[k + 1], (size_t)(s->nemb - k - 1) * sizeof(s->emb[0]));
    s->nemb--;
    return c;
}

/* Drops embryo k: closed at once (no delivery: nothing was sent), the peer sees a reset. */
static void embryo_drop_locked(struct sansock_lsn *s, int k)
{
    struct sansock_conn *c = embryo_take_locked(s, k);
    sansock_conn_set_abort(c, true);
    sansock_obj_put(sansock_conn_obj(c));
}

/* 0, or -ENOMEM (c is dropped). */
static int embryo_add_locked(struct sansock_lsn *s, int i, struct sansock_conn *c, uint64_t now)
{
    struct embryo *e = malloc(sizeof(*e));
    if (!e) {
        sansock_conn_set_abort(c, true);
        sansock_obj_put(sansock_conn_obj(c));
        return -ENOMEM;
    }
    s->emb[s->nemb++] = e;
    *e = (struct embryo){.c = c, .i = i, .born = now, .efd = -1, .w = {.fd = s->wake}};
    struct pollfd cw[2];
    sansock_conn_watch(c, POLLOUT, &e->w, true, cw, NULL);
    if (cw[0].fd >= 0) {
        struct epoll_event ev = {.events = EPOLLIN, .data.fd = cw[0].fd};
        if (!REAL(epoll_ctl)(s->epfd, EPOLL_CTL_ADD, cw[0].fd, &ev))
            e->efd = cw[0].fd;
    }
    return 0;
}

/* The oldest embryo still silent, or -1. */
static int oldest_silent_locked(struct sansock_lsn *s)
{
    for (int k = 0; k < s->nemb; k++)
        if (!s->emb[k]->complete)
            return k;
    return -1;
}

/* Looks at the listener without waiting: new SAN connections become embryos, embryos whose
 * NEGOTIATE arrived become complete, broken or too old ones are dropped; the timer and the
 * listeners' place in epfd follow. Whether a complete one waits for accept. */
static bool any_complete_locked(const struct sansock_lsn *s)
{
    for (int j = 0; j < s->nemb; j++)
        if (s->emb[j]->complete)
            return true;
    return false;
}

static bool tend_locked(struct sansock_lsn *s)
{
    /* Nothing new (no connection in the daemon's backlog, no embryo's completion, no timer) and
     * no room made since the listeners left epfd: one system call, no round trip. */
    struct pollfd p = {.fd = s->epfd, .events = POLLIN};
    if ((s->lfds_in || s->nemb == EMBRYO_MAX) && REAL(poll)(&p, 1, 0) == 0)
        return any_complete_locked(s);
    uint64_t now = san_now_ns(), v;
    if (REAL(read)(s->wake, &v, sizeof(v)) < 0) { /* nothing to drain */
    }
    if (REAL(read)(s->timerfd, &v, sizeof(v)) < 0) {
    }
    for (int k = 0; k < s->nemb;) {
        struct embryo *e = s->emb[k];
        if (!e->complete) {
            int r = sansock_conn_negotiation(e->c);
            if (r < 0 || now - e->born >= (uint64_t)EMBRYO_MAX_MS * 1000000u) {
                embryo_drop_locked(s, k);
                continue;
            }
            if (r > 0) {
                e->complete = true;
                atomic_fetch_add_explicit(&s->arrivals, 1, memory_order_relaxed);
            }
        }
        k++;
    }
    struct san_ctx *ctx;
    bool full = false;
    int budget = EMBRYO_PER_LOOK;
    if (!sansock_ctx(&ctx)) {
        for (int i = 0; i < s->n; i++) {
            while (budget-- > 0) {
                if (s->nemb == EMBRYO_MAX) {
                    int k = oldest_silent_locked(s);
                    if (k < 0 || now - s->emb[k]->born < (uint64_t)EMBRYO_EVICT_MS * 1000000u) {
                        full = true;
                        break;
                    }
                    embryo_drop_locked(s, k);
                }
                struct san_ep *ep;
                if (san_accept(s->l[i], 0, &ep))
                    break;
                /* The peer's address comes in its negotiation: set when it completes. */
                struct sansock_wire_addr none = s->addr[i];
                struct sansock_conn *c;
                if (sansock_conn_create_embryo(ctx, ep, &s->addr[i], &none, &c))
                    continue; /* ep closed: the peer sees a reset */
                if (embryo_add_locked(s, i, c, now))
                    continue;
                struct embryo *e = s->emb[s->nemb - 1];
                int r = sansock_conn_negotiation(c);
                if (r < 0) {
                    embryo_drop_locked(s, s->nemb - 1);
                } else if (r > 0) {
                    e->complete = true;
                    atomic_fetch_add_explicit(&s->arrivals, 1, memory_order_relaxed);
                }
            }
        }
    }
    /* Full: the listeners' descriptors stay readable, so they leave epfd until there is room. */
    if (full == s->lfds_in) {
        for (int i = 0; i < s->n; i++) {
            int lfd = san_listener_fd(s->l[i]);
            struct epoll_event ev = {.events = EPOLLIN, .data.fd = lfd};
            REAL(epoll_ctl)(s->epfd, full ? EPOLL_CTL_DEL : EPOLL_CTL_ADD, lfd, &ev);
        }
        s->lfds_in = !full;
    }
    /* The timer: when the oldest silent embryo may be evicted (full) or must be dropped. */
    int k = oldest_silent_locked(s);
    struct itimerspec its = {{0, 0}, {0, 0}};
    if (k >= 0) {
        uint64_t at = s->emb[k]->born + (full ? (uint64_t)EMBRYO_EVICT_MS * 1000000u
                                              : (uint64_t)EMBRYO_MAX_MS * 1000000u);
        uint64_t d = at > now ? at - now : 1;
        its.it_value = (struct timespec){.tv_sec = (time_t)(d / 1000000000u),
                                         .tv_nsec = (long)(d % 1000000000u)};
    }
    timerfd_settime(s->timerfd, 0, &its, NULL);
    return any_complete_locked(s);
}

static void lsn_destroy(struct sansock_obj *o)
{
    struct sansock_lsn *s = (struct sansock_lsn *)o;
    if (ours(s)) {
        pthread_mutex_lock(&locals_lock);
        for (struct sansock_lsn **p = &locals; *p; p = &(*p)->next_local)
            if (*p == s) {
                *p = s->next_local;
                break;
            }
        pthread_mutex_unlock(&locals_lock);
        pthread_mutex_lock(&s->lock);
        while (s->nemb)
            embryo_drop_locked(s, s->nemb - 1);
        pthread_mutex_unlock(&s->lock);
        for (int i = 0; i < s->n; i++)
            san_listener_close(s->l[i]);
        pthread_mutex_destroy(&s->lock);
    } else {
        for (int k = 0; k < s->nemb; k++) { /* the parent's: forgotten, never touched */
            sansock_obj_put(sansock_conn_obj(s->emb[k]->c));
            free(s->emb[k]);
        }
    }
    REAL(close)(s->epfd);
    REAL(close)(s->timerfd);
    REAL(close)(s->wake);
    free(s);
}

static int san_listen_at(struct san_ctx *ctx, struct sansock_lsn *s, const struct sockaddr *sa,
                         socklen_t len, int backlog)
{
    int err = s->n == LSN_MAX ? -ENOSPC : san_listen(ctx, sa, len, backlog, &s->l[s->n]);
    if (err) {
        char a[64];
        if (sansock_logging())
            sansock_log("listen at %s: not on the SAN (%s)",
                        sansock_log_addr(sa, len, a, sizeof(a)), strerror(-err));
        return err;
    }
    sansock_wire_addr_from(&s->addr[s->n], sa, len);
    int lfd = san_listener_fd(s->l[s->n]);
    struct epoll_event ev = {.events = EPOLLIN, .data.fd = lfd};
    REAL(epoll_ctl)(s->epfd, EPOLL_CTL_ADD, lfd, &ev);
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
    /* Where on the SAN: the bound address if the daemon serves it, every served address of this
     * host for a wildcard ([::] without IPV6_V6ONLY: IPv4 ones too). */
    struct sockaddr_storage at[LSN_MAX];
    size_t nat = 0;
    if (ss.ss_family == AF_INET) {
        struct sockaddr_in *a = (struct sockaddr_in *)&ss;
        if (a->sin_addr.s_addr == htonl(INADDR_ANY))
            nat = sansock_route_local_addrs(AF_INET, a->sin_port, at, LSN_MAX);
        else if (sansock_route_local((struct sockaddr *)a, sizeof(*a)))
            memcpy(&at[nat++], a, sizeof(*a));
    } else if (ss.ss_family == AF_INET6) {
        struct sockaddr_in6 *a = (struct sockaddr_in6 *)&ss;
        getsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &v6only, &vl);
        if (IN6_IS_ADDR_UNSPECIFIED(&a->sin6_addr)) {
            nat = sansock_route_local_addrs(AF_INET6, a->sin6_port, at, LSN_MAX);
            if (!v6only)
                nat += sansock_route_local_addrs(AF_INET, a->sin6_port, at + nat, LSN_MAX - nat);
        } else if (IN6_IS_ADDR_V4MAPPED(&a->sin6_addr)) {
            struct sockaddr_in in4 = {.sin_family = AF_INET, .sin_port = a->sin6_port};
            memcpy(&in4.sin_addr, &a->sin6_addr.s6_addr[12], 4);
            if (sansock_route_local((struct sockaddr *)&in4, sizeof(in4)))
                memcpy(&at[nat++], &in4, sizeof(in4));
        } else if (!IN6_IS_ADDR_LINKLOCAL(&a->sin6_addr)) {
            struct sockaddr_in6 in6 = {
                .sin6_family = AF_INET6, .sin6_port = a->sin6_port, .sin6_addr = a->sin6_addr};
            if (sansock_route_local((struct sockaddr *)&in6, sizeof(in6)))
                memcpy(&at[nat++], &in6, sizeof(in6));
        }
    }
    if (!nat)
        goto out;
    unsigned port = ntohs(((struct sockaddr_in *)&ss)->sin_port); /* sin6_port sits there too */
    struct san_ctx *ctx;
    int err = sansock_ctx(&ctx);
    if (err) {
        if (sansock_logging())
            sansock_log("listen on port %u: TCP only (the SAN: %s)", port, strerror(-err));
        goto out;
    }
    struct sansock_lsn *s = calloc(1, sizeof(*s));
    if (!s)
        goto out;
    s->epfd = REAL(epoll_create1)(EPOLL_CLOEXEC);
    s->timerfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
    s->wake = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    /* wake is what the embryos' waiters write when their connection progresses: only the
     * listener's own looks make progress on them, so it is not slept on. */
    struct epoll_event tev = {.events = EPOLLIN, .data.fd = s->timerfd};
    if (s->epfd < 0 || s->timerfd < 0 || s->wake < 0 || pthread_mutex_init(&s->lock, NULL) ||
        REAL(epoll_ctl)(s->epfd, EPOLL_CTL_ADD, s->timerfd, &tev)) {
        if (s->epfd >= 0)
            REAL(close)(s->epfd);
        if (s->timerfd >= 0)
            REAL(close)(s->timerfd);
        if (s->wake >= 0)
            REAL(close)(s->wake);
        free(s);
        goto out;
    }
    s->lfds_in = true;
    s->obj = (struct sansock_obj){
        .kind = SANSOCK_LISTENER, .refs = 1, .gen = sansock_fork_gen, .destroy = lsn_destroy};
    s->family = ss.ss_family;
    int bl = backlog < 1 ? 1 : backlog;
    for (size_t i = 0; i < nat; i++)
        san_listen_at(ctx, s, (struct sockaddr *)&at[i],
                      at[i].ss_family == AF_INET ? sizeof(struct sockaddr_in)
                                                 : sizeof(struct sockaddr_in6),
                      bl);
    if (s->n) {
        pthread_mutex_lock(&locals_lock);
        s->next_local = locals;
        locals = s;
        pthread_mutex_unlock(&locals_lock);
        sansock_fd_set(fd, &s->obj);
    }
    if (sansock_logging())
        sansock_log("listen on port %u: TCP and %d SAN address%s", port, s->n,
                    s->n == 1 ? "" : "es");
    sansock_obj_put(&s->obj);
out:
    errno = saved;
    return 0;
}

int sansock_listener_fds(struct sansock_obj *o, int fds[2])
{
    struct sansock_lsn *s = (struct sansock_lsn *)o;
    if (o->kind != SANSOCK_LISTENER || !ours(s) || !s->n)
        return 0;
    fds[0] = s->epfd;
    return 1;
}

bool sansock_listener_ready(struct sansock_obj *o)
{
    struct sansock_lsn *s = (struct sansock_lsn *)o;
    if (o->kind != SANSOCK_LISTENER || !ours(s) || !s->n)
        return false;
    pthread_mutex_lock(&s->lock);
    bool ready = tend_locked(s);
    pthread_mutex_unlock(&s->lock);
    return ready;
}

/* Whether s is this process's and listens on the SAN at to. */
static bool local_at(const struct sansock_lsn *s, const struct sansock_wire_addr *to)
{
    for (int i = 0; i < s->n; i++)
        if (s->addr[i].family == to->family && s->addr[i].port == to->port &&
            !memcmp(s->addr[i].addr, to->addr, sizeof(to->addr)))
            return ours(s);
    return false;
}

/* The listeners of this process at to, each looked at when tend: whether there is one. */
static bool locals_at(const struct sansock_wire_addr *to, bool tend)
{
    bool found = false;
    pthread_mutex_lock(&locals_lock);
    for (struct sansock_lsn *s = locals; s && (tend || !found); s = s->next_local) {
        if (!local_at(s, to))
            continue;
        found = true;
        if (tend) {
            pthread_mutex_lock(&s->lock);
            tend_locked(s);
            pthread_mutex_unlock(&s->lock);
        }
    }
    pthread_mutex_unlock(&locals_lock);
    return found;
}

bool sansock_listen_local(const struct sansock_wire_addr *to)
{
    return locals_at(to, false);
}

void sansock_listen_tend_for(const struct sansock_wire_addr *to)
{
    locals_at(to, true);
}

void sansock_listen_atfork_child(void)
{
    /* The parent's listeners are inherited objects here (never tended: ours() fails). */
    pthread_mutex_init(&locals_lock, NULL);
    locals = NULL;
}

unsigned sansock_listener_accepts(struct sansock_obj *o)
{
    struct sansock_lsn *s = (struct sansock_lsn *)o;
    return atomic_load_explicit(&s->accepts, memory_order_relaxed) +
           atomic_load_explicit(&s->arrivals, memory_order_relaxed);
}

/* A complete SAN connection taken from the embryos: its descriptor, or -1 (dropped). */
static int accept_san(struct sansock_lsn *s, int i, struct sansock_conn *c, struct sockaddr *addr,
                      socklen_t *len, int flags)
{
    struct sansock_wire_addr src, dst;
    sansock_conn_peer_addrs(c, &src, &dst);
    sansock_conn_set_names(c, &s->addr[i], &src);
    int fd = socket(s->addr[i].family == SANSOCK_WIRE_AF_INET6 ? AF_INET6 : s->family,
                    SOCK_STREAM | (flags & (SOCK_NONBLOCK | SOCK_CLOEXEC)), IPPROTO_TCP);
    if (fd >= 0)
        sansock_obj_set_nonblock(sansock_conn_obj(c), flags & SOCK_NONBLOCK);
    if (fd >= 0 && sansock_fd_set(fd, sansock_conn_obj(c))) {
        REAL(close)(fd);
        fd = -1;
    }
    if (fd < 0)
        sansock_conn_set_abort(c, true);
    else if (addr && len)
        sansock_wire_addr_to(&src, addr, len);
    sansock_obj_put(sansock_conn_obj(c));
    return fd;
}

/* The oldest complete embryo, taken: 0 and *c, *i; -EAGAIN when none. */
static int take_complete(struct sansock_lsn *s, struct sansock_conn **c, int *i)
{
    pthread_mutex_lock(&s->lock);
    int err = -EAGAIN;
    if (tend_locked(s)) {
        for (int k = 0; k < s->nemb; k++) {
            if (s->emb[k]->complete) {
                *i = s->emb[k]->i;
                *c = embryo_take_locked(s, k);
                err = 0;
                break;
            }
        }
    }
    pthread_mutex_unlock(&s->lock);
    return err;
}

int sansock_accept(int fd, struct sansock_obj *o, struct sockaddr *addr, socklen_t *len, int flags)
{
    struct sansock_lsn *s = (struct sansock_lsn *)o;
    int n = ours(s) ? s->n : 0; /* in a child: the kernel half only */
    int saved = errno;
    atomic_fetch_add_explicit(&s->accepts, 1, memory_order_relaxed);
    for (;;) {
        struct sansock_conn *c;
        int i;
        while (n && !take_complete(s, &c, &i)) {
            int nfd = accept_san(s, i, c, addr, len, flags);
            if (nfd >= 0) {
                errno = saved;
                return nfd;
            }
        }
        bool nonblock = sansock_nonblocking(fd, 0);
        if (nonblock || !n)
            return REAL(accept4)(fd, addr, len, flags);
        /* Blocking: the first complete connection of either side, never a particular peer. */
        struct pollfd p[2] = {{.fd = fd, .events = POLLIN}, {.fd = s->epfd, .events = POLLIN}};
        int r = REAL(poll)(p, 2, -1);
        if (r < 0)
            return -1; /* EINTR, as accept */
        if (p[0].revents && !p[1].revents) {
            /* Another thread may take it first: then this waits in the kernel, as TCP would. */
            return REAL(accept4)(fd, addr, len, flags);
        }
    }
}
