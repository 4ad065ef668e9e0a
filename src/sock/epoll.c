/* epoll on sets that mix SAN sockets and kernel descriptors (docs/sock.md, "epoll").
 *
 * The program's epoll descriptor stays the kernel's instance: kernel members are added to it with
 * the kernel's epoll_ctl and reported by the kernel, untouched. A SAN socket cannot be one (the
 * kernel sees its placeholder, an unconnected TCP socket), so SAN members live in a set object
 * of the descriptor table at the epoll descriptor, made at the first ADD of a SAN socket. A set
 * without SAN members ever added has no object: every call is the kernel's, with no allocation.
 *
 * A wait takes a snapshot of the members (a reference each), evaluates them from their state
 * (sansock_conn_watch for connections; the kernel socket and the SAN listeners' descriptors for
 * listeners), claims what it reports under the set's lock (so an edge or a one-shot event goes to
 * one thread only), and collects the kernel members from the program's descriptor with timeout 0.
 * When nothing is ready it sleeps in the kernel's ppoll on the program's epoll descriptor, the
 * SAN members' completion and listener descriptors and its own wake-up eventfd (linked as a
 * waiter on every connection, so progress another thread makes wakes it, and as a sleeper on the
 * set, so epoll_ctl and close wake it), then looks again. No thread of its own.
 *
 * Edge-triggered: a member is reported when it is ready and it changed since it was last
 * reported: for a connection its change count moved (every completion taken, shutdown, reset),
 * for a listener an accept was called on it. EPOLLONESHOT: disarmed once reported, until MOD.
 *
 * Locking: all_lock guards the list of sets and their creation; a set's lock guards its members
 * and sleepers. Order: all_lock, then a set's lock, then the table's and a connection's locks.
 * Sets inherited through fork (gen differs) are never locked: in the child they have no SAN
 * members (the parent's connections are dead there) and their kernel half is the kernel's. */
#include <errno.h>
#include <sched.h>
#include <limits.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "common/clock.h"
#include "sock/real.h"
#include "sock/san.h"
#include "sock/session.h"
#include "sock/sock.h"
#include "sock/wait.h"

struct member {
    int fd;
    struct sansock_obj *o; /* a reference */
    struct epoll_event ev; /* as the program gave it */
    unsigned ver;          /* bumped by MOD: a claim made on an older version is void */
    unsigned seen;         /* edge-triggered: the change count last reported */
    bool fresh;            /* added or modified and not reported since */
    bool disarmed;         /* EPOLLONESHOT fired */
};

struct sansock_ep {
    struct sansock_obj obj;
    pthread_mutex_t lock;
    struct member *m;
    size_t n, cap;
    size_t rr;         /* where the next snapshot starts, so every member gets its turn */
    bool kernel_first; /* alternates who fills a wait's array first */
    struct sansock_waiter *sleepers;
    int kick;       /* an eventfd in the program's instance: wakes threads asleep in the kernel */
    dev_t kick_dev; /* which file it is: a program that closes descriptors it does not know */
    ino_t kick_ino; /* (closefrom) may give its number to a file of its own */
    struct sansock_ep *next, *prev; /* all sets, under all_lock */
};

/* What one wait knows of a member. */
struct snap {
    int fd;
    size_t idx; /* where it was in the set (a hint: members move when one is removed) */
    struct sansock_obj *o;
    uint32_t events;
    unsigned ver, seen, seq;
    bool fresh, linked;
    bool handed; /* a connect that went to the kernel: the member moves to the kernel's instance */
    uint32_t ready;
    struct sansock_waiter w;
};

static pthread_mutex_t all_lock = PTHREAD_MUTEX_INITIALIZER;
static struct sansock_ep *all;
static _Atomic unsigned nsets;
static pthread_once_t fork_once = PTHREAD_ONCE_INIT;
/* The kick's tag in the program's instance: the address of a byte of ours, which no pointer the
 * program keeps in epoll_data can equal. Threads in the kernel's epoll_wait (on a descriptor
 * without a set): how many, so that one woken by a kick passes it on while others may sleep. */
static char kick_tag;
#define KICK ((uint64_t)(uintptr_t)&kick_tag)
static _Atomic unsigned kernel_waiters;

#define EXCLUSIVE_OK                                                                               \
    (EPOLLIN | EPOLLOUT | EPOLLERR | EPOLLHUP | EPOLLWAKEUP | EPOLLET | EPOLLEXCLUSIVE)
#define MAX_EVENTS ((int)(INT_MAX / sizeof(struct epoll_event)))

static void atfork_child(void)
{
    pthread_mutex_init(&all_lock, NULL);
}

static void install_atfork(void)
{
    pthread_atfork(NULL, NULL, atfork_child);
}

static bool inherited(const struct sansock_ep *ep)
{
    return ep->obj.gen != sansock_fork_gen;
}

static struct sansock_ep *set_of(struct sansock_obj *o)
{
    return o && o->kind == SANSOCK_EPOLL && !inherited((struct sansock_ep *)o)
               ? (struct sansock_ep *)o
               : NULL;
}

static int fail(int err)
{
    errno = err;
    return -1;
}

static int64_t now_ns(void) /* signed: deadlines here are compared by difference */
{
    return (int64_t)san_now_ns();
}

static bool kick_ours(const struct sansock_ep *ep);
static void kick(struct sansock_ep *ep);

static void set_destroy(struct sansock_obj *o)
{
    struct sansock_ep *ep = (struct sansock_ep *)o;
    pthread_mutex_lock(&all_lock);
    if (ep->prev)
        ep->prev->next = ep->next;
    else if (all == ep)
        all = ep->next;
    if (ep->next)
        ep->next->prev = ep->prev;
    atomic_fetch_sub(&nsets, 1);
    pthread_mutex_unlock(&all_lock);
    for (size_t i = 0; i < ep->n; i++)
        sansock_obj_put(ep->m[i].o);
    if (kick_ours(ep))
        REAL(close)(ep->kick); /* which takes it out of the kernel's instance */
    if (!inherited(ep))
        pthread_mutex_destroy(&ep->lock);
    free(ep->m);
    free(ep);
}

/* The set at epfd, made if there is none (or only one inherited from a parent), with a reference
 * for the caller; NULL with errno set. */
static struct sansock_ep *set_make(int epfd)
{
    pthread_once(&fork_once, install_atfork);
    struct sansock_obj *o;
    struct sansock_ep *ep;
    for (;;) {
        pthread_mutex_lock(&all_lock);
        o = sansock_fd_get(epfd);
        if ((ep = set_of(o)) || !o)
            break;
        /* An inherited set (or a stale entry) at epfd: dropped first, without all_lock, which
         * its destruction takes. */
        pthread_mutex_unlock(&all_lock);
        sansock_obj_put(o);
        sansock_obj_put(sansock_fd_take(epfd));
    }
    if (ep) {
        pthread_mutex_unlock(&all_lock);
        return ep;
    }
    ep = calloc(1, sizeof(*ep));
    if (!ep || pthread_mutex_init(&ep->lock, NULL)) {
        pthread_mutex_unlock(&all_lock);
        free(ep);
        errno = ENOMEM;
        return NULL;
    }
    ep->obj = (struct sansock_obj){
        .kind = SANSOCK_EPOLL, .refs = 1, .gen = sansock_fork_gen, .destroy = set_destroy};
    /* Threads already asleep in the kernel's epoll_wait on epfd would not see SAN members: the
     * kick (edge-triggered) wakes one, which moves to the set and passes the kick on. */
    ep->kick = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    struct epoll_event kev = {.events = EPOLLIN | EPOLLET, .data.u64 = KICK};
    struct stat st;
    if (ep->kick >= 0 &&
        (fstat(ep->kick, &st) || REAL(epoll_ctl)(epfd, EPOLL_CTL_ADD, ep->kick, &kev))) {
        REAL(close)(ep->kick);
        ep->kick = -1;
    } else if (ep->kick >= 0) {
        ep->kick_dev = st.st_dev;
        ep->kick_ino = st.st_ino;
    }
    ep->next = all;
    if (all)
        all->prev = ep;
    all = ep;
    atomic_fetch_add(&nsets, 1);
    int err = sansock_fd_set(epfd, &ep->obj);
    pthread_mutex_unlock(&all_lock);
    if (err) {
        sansock_obj_put(&ep->obj);
        errno = ENOMEM; /* an epoll descriptor numbered beyond the table */
        return NULL;
    }
    kick(ep);
    return ep;
}

/* Whether the kick's descriptor is still the kick (rare calls: its creation, a pass-on, the end).
 */
static bool kick_ours(const struct sansock_ep *ep)
{
    struct stat st;
    return ep->kick >= 0 && !fstat(ep->kick, &st) && st.st_dev == ep->kick_dev &&
           st.st_ino == ep->kick_ino;
}

static void kick(struct sansock_ep *ep)
{
    uint64_t one = 1;
    int e = errno;
    if (kick_ours(ep) && REAL(write)(ep->kick, &one, sizeof(one)) < 0) {
    }
    errno = e;
}

/* Takes the kicks out of what the kernel's epoll_wait returned (n events): how many are left. */
static int drop_kicks(struct epoll_event *ev, int n, bool *kicked)
{
    if (n <= 0 || !atomic_load_explicit(&nsets, memory_order_relaxed))
        return n;
    int j = 0;
    for (int i = 0; i < n; i++) {
        if (ev[i].data.u64 == KICK)
            *kicked = true;
        else
            ev[j++] = ev[i];
    }
    return j;
}

static struct member *find_locked(struct sansock_ep *ep, int fd)
{
    for (size_t i = 0; i < ep->n; i++)
        if (ep->m[i].fd == fd)
            return &ep->m[i];
    return NULL;
}

/* Removes a member; its reference comes back to the caller (who drops it outside the lock). */
static struct sansock_obj *remove_locked(struct sansock_ep *ep, struct member *m)
{
    struct sansock_obj *o = m->o;
    *m = ep->m[--ep->n];
    return o;
}

int sansock_epoll_create(int fd)
{
    if (fd >= 0) {
        /* The kernel handed out fd, so whatever the table says of that number is stale. */
        int e = errno;
        sansock_obj_put(sansock_fd_take(fd));
        errno = e;
    }
    return fd;
}

/* epoll_ctl with a SAN socket as target: its checks in the kernel's order. */
static int ctl_san(int epfd, int op, int fd, struct sansock_obj *t, struct epoll_event *ev)
{
    bool has_event = op == EPOLL_CTL_ADD || op == EPOLL_CTL_MOD;
    if (has_event && !ev)
        return fail(EFAULT);
    /* The kernel checks epfd (EBADF, EINVAL when it is no epoll instance). A placeholder that
     * was added as a kernel member before it became a SAN socket leaves the kernel's set: it is
     * this set's member from now on. */
    int e = errno;
    bool was_kernel = REAL(epoll_ctl)(epfd, EPOLL_CTL_DEL, fd, NULL) == 0;
    if (!was_kernel && errno != ENOENT)
        return -1;
    errno = e;
    if (op != EPOLL_CTL_ADD && op != EPOLL_CTL_MOD && op != EPOLL_CTL_DEL)
        return fail(EINVAL);
    if (has_event && (ev->events & EPOLLEXCLUSIVE) &&
        (op == EPOLL_CTL_MOD || (ev->events & ~(uint32_t)EXCLUSIVE_OK)))
        return fail(EINVAL);
    struct sansock_obj *eo = sansock_fd_get(epfd);
    struct sansock_ep *ep = set_of(eo);
    if (!ep) {
        sansock_obj_put(eo);
        if (op == EPOLL_CTL_DEL && was_kernel)
            return 0;
        if (op == EPOLL_CTL_MOD && was_kernel)
            op = EPOLL_CTL_ADD;
        if (op != EPOLL_CTL_ADD)
            return fail(ENOENT);
        if (!(ep = set_make(epfd)))
            return -1;
        eo = &ep->obj;
    }
    struct sansock_obj *drop = NULL;
    int err = 0;
    pthread_mutex_lock(&ep->lock);
    struct member *m = find_locked(ep, fd);
    if (m && m->o != t) { /* a stale member (its descriptor was reused without our close) */
        drop = remove_locked(ep, m);
        m = NULL;
    }
    if (op == EPOLL_CTL_MOD && !m && was_kernel)
        op = EPOLL_CTL_ADD;
    switch (op) {
    case EPOLL_CTL_ADD:
        if (m) {
            err = EEXIST;
            break;
        }
        if (ep->n == ep->cap) {
            size_t cap = ep->cap ? ep->cap * 2 : 8;
            struct member *nm = realloc(ep->m, cap * sizeof(*nm));
            if (!nm) {
                err = ENOMEM;
                break;
            }
            ep->m = nm;
            ep->cap = cap;
        }
        sansock_obj_ref(t);
        ep->m[ep->n++] = (struct member){.fd = fd, .o = t, .ev = *ev, .fresh = true};
        break;
    case EPOLL_CTL_MOD:
        if (!m)
            err = ENOENT;
        else if (m->ev.events & EPOLLEXCLUSIVE)
            err = EINVAL;
        else {
            m->ev = *ev;
            m->ver++;
            m->fresh = true;
            m->disarmed = false;
        }
        break;
    default:
        if (!m && !was_kernel)
            err = ENOENT;
        else if (m)
            drop = remove_locked(ep, m);
        break;
    }
    if (!err)
        sansock_waiters_wake(ep->sleepers);
    pthread_mutex_unlock(&ep->lock);
    sansock_obj_put(drop);
    sansock_obj_put(eo);
    return err ? fail(err) : 0;
}

/* MOD or DEL of fd that the kernel does not know: a member whose connect went to the kernel
 * while no wait looked at it (a disarmed one-shot member) moves now. -1 with ENOENT if none. */
static int ctl_handed(int epfd, int op, int fd, struct epoll_event *ev)
{
    struct sansock_obj *eo = sansock_fd_get(epfd), *drop = NULL;
    struct sansock_ep *ep = set_of(eo);
    if (ep) {
        pthread_mutex_lock(&ep->lock);
        struct member *m = find_locked(ep, fd);
        struct sansock_conn *c = m ? sansock_obj_conn(m->o) : NULL;
        if (c && sansock_conn_handed_to(c, fd))
            drop = remove_locked(ep, m);
        pthread_mutex_unlock(&ep->lock);
    }
    sansock_obj_put(eo);
    if (!drop)
        return fail(ENOENT);
    sansock_obj_put(drop);
    return op == EPOLL_CTL_DEL ? 0 : REAL(epoll_ctl)(epfd, EPOLL_CTL_ADD, fd, ev);
}

int sansock_epoll_ctl(int epfd, int op, int fd, struct epoll_event *ev)
{
    struct sansock_obj *t = sansock_fd_get(fd);
    if (!t || t->kind == SANSOCK_EPOLL) {
        /* A kernel descriptor (an epoll descriptor among them: nested, its kernel members only). */
        sansock_obj_put(t);
        int r = REAL(epoll_ctl)(epfd, op, fd, ev);
        if (r && errno == ENOENT && !t && (op == EPOLL_CTL_MOD || op == EPOLL_CTL_DEL) &&
            atomic_load_explicit(&nsets, memory_order_relaxed))
            return ctl_handed(epfd, op, fd, ev);
        return r;
    }
    int r = ctl_san(epfd, op, fd, t, ev);
    int e = errno;
    sansock_obj_put(t);
    errno = e;
    return r;
}

void sansock_epoll_forget(int fd, struct sansock_obj *o)
{
    if (!atomic_load_explicit(&nsets, memory_order_relaxed))
        return;
    pthread_mutex_lock(&all_lock);
    for (struct sansock_ep *ep = all; ep; ep = ep->next) {
        if (inherited(ep))
            continue;
        pthread_mutex_lock(&ep->lock);
        struct member *m = find_locked(ep, fd);
        struct sansock_obj *drop = NULL;
        if (m && m->o == o) {
            drop = remove_locked(ep, m);
            sansock_waiters_wake(ep->sleepers); /* they drop their references to it */
        }
        pthread_mutex_unlock(&ep->lock);
        /* Never the last reference: the caller holds the table's. */
        sansock_obj_put(drop);
    }
    pthread_mutex_unlock(&all_lock);
}

/* The kernel's call the program made, for an epoll descriptor with no set of ours. */
static int kernel_wait(int epfd, struct epoll_event *ev, int max, const struct timespec *to,
                       const sigset_t *mask, int kind)
{
    int ms = to ? (int)(to->tv_sec * 1000 + to->tv_nsec / 1000000) : -1;
    switch (kind) {
    case SANSOCK_EPOLL_WAIT:
        return REAL(epoll_wait)(epfd, ev, max, ms);
    case SANSOCK_EPOLL_PWAIT:
        return REAL(epoll_pwait)(epfd, ev, max, ms, mask);
    default:
        if (sansock_real_fns.epoll_pwait2)
            return sansock_real_fns.epoll_pwait2(epfd, ev, max, to, mask);
        return (int)syscall(SYS_epoll_pwait2, epfd, ev, max, to, mask, _NSIG / 8);
    }
}

/* A member's readiness (poll bits) and change count. With w, the member is also watched: a
 * connection links w and adds its completion descriptor to k, a listener adds its descriptors. */
static uint32_t evaluate(struct snap *s, struct sansock_waiter *w, struct pollfd *k, nfds_t *nk)
{
    short want = (short)(s->events & 0xffff);
    struct sansock_conn *c = sansock_obj_conn(s->o);
    if (c) {
        struct pollfd cw[2];
        short ev = sansock_conn_watch(c, want, w, true, cw, &s->seq);
        s->linked = w && s->o->gen == sansock_fork_gen; /* an inherited one is never linked */
        s->handed = sansock_conn_handed_over(c);
        for (int j = 0; j < 2; j++)
            if (w && cw[j].fd >= 0)
                k[(*nk)++] = cw[j];
        return (uint16_t)ev;
    }
    /* A listener: its kernel socket, or a complete SAN connection; its SAN descriptors only say
     * when to look again. */
    struct pollfd p[3] = {{.fd = s->fd, .events = POLLIN}};
    int lfd[2];
    int nl = sansock_listener_fds(s->o, lfd);
    for (int j = 0; j < nl; j++)
        p[1 + j] = (struct pollfd){.fd = lfd[j], .events = POLLIN};
    uint32_t ev = nl && sansock_listener_ready(s->o) ? POLLIN | POLLRDNORM : 0;
    s->seq = sansock_listener_accepts(s->o);
    if (REAL(poll)(p, 1, 0) > 0 && (p[0].revents & POLLIN))
        ev |= POLLIN | POLLRDNORM;
    if (w)
        for (int j = 0; j <= nl; j++)
            k[(*nk)++] = p[j];
    return ev & (uint32_t)(want | POLLERR | POLLHUP);
}

/* A member whose connect went to the kernel (the descriptor is the kernel's connecting socket
 * now) leaves the set for the kernel's instance, with the program's events and data, so that
 * the kernel reports it and the program's later epoll_ctl calls on it are the kernel's. */
static void to_kernel(struct sansock_ep *ep, int epfd, struct snap *s)
{
    struct sansock_obj *drop = NULL;
    pthread_mutex_lock(&ep->lock);
    struct member *m = find_locked(ep, s->fd);
    if (m && m->o == s->o) {
        struct epoll_event ev = m->ev;
        int e = errno;
        /* Unless the program closed it meanwhile (the number may name another file now). */
        if (sansock_conn_handed_to(sansock_obj_conn(s->o), s->fd) &&
            REAL(epoll_ctl)(epfd, EPOLL_CTL_ADD, s->fd, &ev) && errno == EEXIST)
            REAL(epoll_ctl)(epfd, EPOLL_CTL_MOD, s->fd, &ev);
        errno = e;
        drop = remove_locked(ep, m);
    }
    pthread_mutex_unlock(&ep->lock);
    sansock_obj_put(drop); /* never the last: the snapshot holds one */
}

static bool reportable(const struct snap *s)
{
    return s->ready && (!(s->events & EPOLLET) || s->fresh || s->seq != s->seen);
}

/* Claims the reportable members of the snapshot into out (room entries): each member once, an
 * edge or a one-shot event to one thread only. How many. */
static int claim(struct sansock_ep *ep, struct snap *s, size_t ns, struct epoll_event *out,
                 int room)
{
    int got = 0;
    pthread_mutex_lock(&ep->lock);
    for (size_t i = 0; i < ns && got < room; i++) {
        if (!reportable(&s[i]))
            continue;
        struct member *m = s[i].idx < ep->n && ep->m[s[i].idx].fd == s[i].fd
                               ? &ep->m[s[i].idx]
                               : find_locked(ep, s[i].fd);
        if (!m || m->o != s[i].o || m->ver != s[i].ver || m->disarmed)
            continue;
        if ((m->ev.events & EPOLLET) && !m->fresh && m->seen == s[i].seq)
            continue; /* another thread reported this edge */
        m->fresh = false;
        m->seen = s[i].seq;
        if (m->ev.events & EPOLLONESHOT)
            m->disarmed = true;
        out[got++] = (struct epoll_event){.events = s[i].ready, .data = m->ev.data};
    }
    pthread_mutex_unlock(&ep->lock);
    return got;
}

int sansock_epoll_wait(int epfd, struct epoll_event *events, int max, const struct timespec *to,
                       const sigset_t *mask, int kind)
{
    struct sansock_obj *o;
    struct sansock_ep *ep;
    struct timespec rest;
    int64_t start = 0;
    while (!(ep = set_of(o = sansock_fd_get(epfd)))) {
        sansock_obj_put(o);
        if (to && (to->tv_sec || to->tv_nsec) && !start)
            start = now_ns();
        atomic_fetch_add_explicit(&kernel_waiters, 1, memory_order_relaxed);
        int r = kernel_wait(epfd, events, max, to, mask, kind);
        int e = errno;
        atomic_fetch_sub_explicit(&kernel_waiters, 1, memory_order_relaxed);
        bool kicked = false;
        r = drop_kicks(events, r, &kicked);
        if (kicked) {
            /* A set was made at epfd while this thread slept: others may sleep there too. */
            struct sansock_obj *ko = sansock_fd_get(epfd);
            if (set_of(ko) && atomic_load_explicit(&kernel_waiters, memory_order_relaxed))
                kick(set_of(ko));
            sansock_obj_put(ko);
        }
        if (r || !kicked) {
            errno = e;
            return r;
        }
        if (to && start) { /* the time left, for the set's wait */
            int64_t d = (int64_t)to->tv_sec * 1000000000 + to->tv_nsec - (now_ns() - start);
            d = d < 0 ? 0 : d;
            rest = (struct timespec){.tv_sec = d / 1000000000, .tv_nsec = d % 1000000000};
            to = &rest;
            start = now_ns();
        }
    }
    int ret = 0, err = 0;
    if (max <= 0 || max > MAX_EVENTS)
        err = EINVAL;
    else if (!events)
        err = EFAULT;
    else if (to && (to->tv_sec < 0 || to->tv_nsec < 0 || to->tv_nsec >= 1000000000))
        err = EINVAL;
    int wfd = err ? -1 : sansock_wakefd();
    if (!err && wfd < 0)
        err = -wfd;
    if (err) {
        sansock_obj_put(o);
        return fail(err);
    }
    bool forever = !to, look = to && !to->tv_sec && !to->tv_nsec;
    int64_t deadline = 0;
    if (!forever && !look)
        deadline = to->tv_sec > (INT64_MAX - now_ns()) / 1000000000 - 1
                       ? INT64_MAX
                       : now_ns() + to->tv_sec * 1000000000 + to->tv_nsec;

    struct snap stack_s[16], *s = stack_s;
    struct pollfd stack_k[16 * 3 + 2], *k = stack_k;
    size_t cap = 16;
    struct sansock_waiter sleeper = {.fd = wfd};
    /* Before the first sleep, rounds that only look, with a yield between them, for up to
     * SANSOCK_SPIN_NS (wait.h): an answer usually comes sooner than a sleep and a wake-up. */
    int64_t spin_end = look ? 0 : now_ns() + SANSOCK_SPIN_NS;
    for (;;) {
        /* The snapshot: a reference to every armed member; this thread becomes a sleeper. */
        pthread_mutex_lock(&ep->lock);
        if (ep->n > cap) {
            size_t ncap = ep->n * 2;
            struct snap *ns = malloc(ncap * sizeof(*ns));
            struct pollfd *nk = malloc((ncap * 3 + 2) * sizeof(*nk));
            if (!ns || !nk) {
                pthread_mutex_unlock(&ep->lock);
                free(ns);
                free(nk);
                ret = -1;
                err = ENOMEM;
                break;
            }
            if (s != stack_s) {
                free(s);
                free(k);
            }
            s = ns;
            k = nk;
            cap = ncap;
        }
        size_t ns = 0, n = ep->n;
        for (size_t j = 0; j < n; j++) {
            size_t i = (ep->rr + j) % n;
            struct member *m = &ep->m[i];
            if (m->disarmed)
                continue;
            sansock_obj_ref(m->o);
            s[ns++] = (struct snap){.fd = m->fd,
                                    .idx = i,
                                    .o = m->o,
                                    .events = m->ev.events,
                                    .ver = m->ver,
                                    .seen = m->seen,
                                    .fresh = m->fresh};
        }
        ep->rr = n ? (ep->rr + 1) % n : 0;
        /* Spinning pays only for connections (a listener's look is a system call of its own). */
        bool conns = false;
        for (size_t i = 0; i < ns && !conns; i++)
            conns = sansock_obj_conn(s[i].o) != NULL;
        int64_t now = spin_end && conns ? now_ns() : 0;
        bool spin = now && now < spin_end && (forever || now < deadline);
        bool kernel_first = ep->kernel_first;
        ep->kernel_first = !kernel_first;
        sansock_waiter_link(&ep->sleepers, &sleeper);
        pthread_mutex_unlock(&ep->lock);

        /* Look at the SAN members from their state, watching them at the same time (unless
         * this is only a look) so that a change after the look ends the sleep below; then at
         * the kernel's members without waiting. */
        nfds_t nk = 0;
        for (size_t i = 0; i < ns; i++) {
            s[i].w.fd = wfd;
            s[i].ready = evaluate(&s[i], look || spin ? NULL : &s[i].w, k, &nk);
            if (s[i].handed) {
                to_kernel(ep, epfd, &s[i]);
                s[i].ready = 0; /* the kernel reports it from now on */
            }
        }
        int got = 0;
        bool kicked = false;
        if (kernel_first) {
            got = drop_kicks(events, REAL(epoll_wait)(epfd, events, max, 0), &kicked);
            got = got < 0 ? 0 : got;
            got += claim(ep, s, ns, events + got, max - got);
        } else {
            got = claim(ep, s, ns, events, max);
            if (got < max) {
                int kg = drop_kicks(events + got,
                                    REAL(epoll_wait)(epfd, events + got, max - got, 0), &kicked);
                got += kg < 0 ? 0 : kg;
            }
        }
        bool expired = look || (!forever && now_ns() >= deadline);
        bool woken = false;
        int r = 0, perr = 0;
        if (!got && !expired && !spin) {
            /* Nothing (or only what other threads claimed): sleep until a change. */
            k[nk++] = (struct pollfd){.fd = epfd, .events = POLLIN};
            k[nk++] = (struct pollfd){.fd = wfd, .events = POLLIN};
            struct timespec left, *lp = NULL;
            if (!forever) {
                int64_t d = deadline - now_ns();
                d = d < 0 ? 0 : d;
                left = (struct timespec){.tv_sec = d / 1000000000, .tv_nsec = d % 1000000000};
                lp = &left;
            }
            r = REAL(ppoll)(k, nk, lp, mask);
            perr = errno;
            woken = r > 0 && (k[nk - 1].revents & POLLIN);
        }
        for (size_t i = 0; i < ns; i++) {
            struct sansock_conn *c = sansock_obj_conn(s[i].o);
            if (c && s[i].linked)
                sansock_conn_unwait(c, &s[i].w);
            s[i].linked = false;
        }
        pthread_mutex_lock(&ep->lock);
        sansock_waiter_unlink(&ep->sleepers, &sleeper);
        pthread_mutex_unlock(&ep->lock);
        if (woken)
            sansock_wakefd_drain(wfd);
        for (size_t i = 0; i < ns; i++)
            sansock_obj_put(s[i].o);
        if (got || expired) {
            ret = got;
            break;
        }
        if (r < 0) {
            ret = -1;
            err = perr; /* EINTR: a signal, as the kernel's epoll_wait */
            break;
        }
        if (spin)
            sched_yield();
        /* Woken (progress, a ctl, the kernel's members, the deadline): look again. */
    }
    if (s != stack_s) {
        free(s);
        free(k);
    }
    sansock_obj_put(o);
    if (ret < 0)
        errno = err;
    return ret;
}
