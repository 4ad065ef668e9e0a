/* The NIC's endpoints and listeners, as the daemon's loop thread sees them: SAN addresses served
 * here, listening, connecting, accepting, closing, and each endpoint's shared region.
 *
 * Sits on proto/queue.h (the region's layout) and engine.c (one engine thread per connection,
 * started at accept). A connection is made entirely on the loop's thread: connect puts a new
 * CONNECTING endpoint in the listener's backlog and signals its eventfd; accept pairs it with a
 * new endpoint of the acceptor, starts their engine and tells the connector (state CONNECTED, a
 * futex wake on it). A listener that closes refuses what waits (state REFUSED).
 *
 * Listing: every endpoint is in nic->eps from its creation until its last reference goes, in the
 * order of its id, so a listing pages by id; what it reads of an endpoint is the owner copied in
 * at creation, atomics the engine writes, and the region's indexes, taken as untrusted numbers.
 *
 * Locking: nic->lock covers the listener table and nic->eps; everything else here runs on the
 * loop's thread. Endpoints are shared with their engine from accept on, through refs
 * (san_nic_ep_put frees, after taking the endpoint out of nic->eps). */
#include "nic/nic.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/futex.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "common/tree.h"

static void to_v6(const void *v4, uint8_t ip[16])
{
    memset(ip, 0, 10);
    ip[10] = ip[11] = 0xff;
    memcpy(ip + 12, v4, 4);
}

int san_nic_addr_from(const struct sockaddr *sa, socklen_t len, struct san_nic_addr *out)
{
    if (!sa)
        return -EINVAL;
    memset(out, 0, sizeof(*out));
    if (sa->sa_family == AF_INET && len == sizeof(struct sockaddr_in)) {
        const struct sockaddr_in *s4 = (const void *)sa;
        to_v6(&s4->sin_addr, out->ip);
        out->port = ntohs(s4->sin_port);
        return 0;
    }
    if (sa->sa_family == AF_INET6 && len == sizeof(struct sockaddr_in6)) {
        const struct sockaddr_in6 *s6 = (const void *)sa;
        memcpy(out->ip, &s6->sin6_addr, 16);
        out->port = ntohs(s6->sin6_port);
        return 0;
    }
    return -EINVAL;
}

int san_nic_parse_nets(const char *s, struct san_nic_net *out, size_t max, size_t *n, size_t *bad)
{
    const char *p = s;
    *n = 0;
    for (;;) {
        p += strspn(p, " \t,");
        if (!*p)
            return 0;
        size_t len = strcspn(p, " \t,");
        char word[64];
        *bad = (size_t)(p - s);
        if (len >= sizeof(word) || *n == max)
            return -EINVAL;
        memcpy(word, p, len);
        word[len] = 0;
        char *slash = strchr(word, '/');
        if (!slash)
            return -EINVAL;
        *slash = 0;
        struct san_nic_net net;
        unsigned char v4[4];
        unsigned max_prefix;
        if (inet_pton(AF_INET, word, v4) == 1) {
            to_v6(v4, net.ip);
            max_prefix = 32;
        } else if (inet_pton(AF_INET6, word, net.ip) == 1) {
            max_prefix = 128;
        } else {
            return -EINVAL;
        }
        char *end;
        unsigned long bits = strtoul(slash + 1, &end, 10);
        if (end == slash + 1 || *end || bits > max_prefix)
            return -EINVAL;
        net.prefix = (unsigned)bits + (max_prefix == 32 ? 96 : 0);
        out[(*n)++] = net;
        p += len;
    }
}

bool san_nic_net_has(const struct san_nic_net *net, const struct san_nic_addr *a)
{
    unsigned full = net->prefix / 8, rest = net->prefix % 8;
    if (net->prefix > 128 || memcmp(a->ip, net->ip, full))
        return false;
    return !rest || !((a->ip[full] ^ net->ip[full]) & (0xff00 >> rest));
}

static bool served(const struct san_nic *nic, const struct san_nic_addr *a)
{
    for (size_t i = 0; i < nic->cfg.nr_nets; i++)
        if (san_nic_net_has(&nic->nets[i], a))
            return true;
    return false;
}

int san_nic_create(const struct san_nic_config *cfg, struct san_regtab *reg,
                   struct san_dma_adapter *adapter, struct san_nic **out)
{
    if (!cfg || cfg->nr_nets > 16)
        return -EINVAL;
    struct san_nic *nic = calloc(1, sizeof(*nic));
    if (!nic)
        return -ENOMEM;
    if (pthread_mutex_init(&nic->lock, NULL)) {
        free(nic);
        return -ENOMEM;
    }
    if (pthread_mutex_init(&nic->xlock, NULL)) {
        pthread_mutex_destroy(&nic->lock);
        free(nic);
        return -ENOMEM;
    }
    if (pthread_rwlock_init(&nic->xport_lock, NULL)) {
        pthread_mutex_destroy(&nic->xlock);
        pthread_mutex_destroy(&nic->lock);
        free(nic);
        return -ENOMEM;
    }
    nic->linger_efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (nic->linger_efd < 0) {
        pthread_rwlock_destroy(&nic->xport_lock);
        pthread_mutex_destroy(&nic->xlock);
        pthread_mutex_destroy(&nic->lock);
        free(nic);
        return -ENOMEM;
    }
    san_list_init(&nic->xconns);
    nic->cfg = *cfg;
    memcpy(nic->nets, cfg->nets, cfg->nr_nets * sizeof(cfg->nets[0]));
    nic->cfg.nets = nic->nets;
    nic->reg = reg;
    nic->adapter = adapter;
    san_list_init(&nic->eps);
    *out = nic;
    return 0;
}

void san_nic_destroy(struct san_nic *nic)
{
    if (!nic)
        return;
    /* Engines of closed endpoints finish on their own: wait for the last to let go. */
    for (int i = 0; i < 5000 && atomic_load(&nic->endpoints); i++) {
        struct timespec ms = {0, 1000000};
        nanosleep(&ms, NULL);
    }
    if (atomic_load(&nic->endpoints))
        return; /* an engine still runs: leave it what it uses */
    close(nic->linger_efd);
    pthread_rwlock_destroy(&nic->xport_lock);
    pthread_mutex_destroy(&nic->xlock);
    pthread_mutex_destroy(&nic->lock);
    free(nic);
}

void san_nic_stats(struct san_nic *nic, struct san_nic_stats *out)
{
    out->endpoints = atomic_load(&nic->endpoints);
    out->ops = atomic_load(&nic->ops);
    out->bytes = atomic_load(&nic->bytes);
}

static void futex_wake_all(_Atomic uint32_t *word)
{
    syscall(SYS_futex, word, FUTEX_WAKE, INT32_MAX, NULL, NULL, 0);
}

/* A new endpoint with its region and eventfd; one reference (the loop's). */
int san_nic_ep_new(struct san_nic *nic, const struct san_nic_owner *owner,
                   struct san_regtab_set *set, struct san_nic_ep **out)
{
    struct san_nic_ep *ep = calloc(1, sizeof(*ep));
    if (!ep)
        return -ENOMEM;
    int err = -ENOMEM;
    ep->memfd = memfd_create("sanproxy-ep", MFD_CLOEXEC | MFD_ALLOW_SEALING);
    ep->efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (ep->memfd < 0 || ep->efd < 0 || ftruncate(ep->memfd, (off_t)SAN_EPQ_SIZE) ||
        fcntl(ep->memfd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL)) {
        err = errno == EMFILE || errno == ENFILE ? -ENOBUFS : -ENOMEM;
        goto fail;
    }
    ep->q = mmap(NULL, SAN_EPQ_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, ep->memfd, 0);
    if (ep->q == MAP_FAILED) {
        ep->q = NULL;
        goto fail;
    }
    *ep->q = (struct san_epq){
        .magic = SAN_EPQ_MAGIC,
        .version = SAN_EPQ_VERSION,
        .size = SAN_EPQ_SIZE,
        .sq_depth = SAN_EPQ_SQ,
        .rq_depth = SAN_EPQ_RQ,
        .cq_depth = SAN_EPQ_CQ,
        .sge_max = SAN_EPQ_SGE,
        .sq_off = SAN_EPQ_SQ_OFF,
        .rq_off = SAN_EPQ_RQ_OFF,
        .cq_off = SAN_EPQ_CQ_OFF,
    };
    atomic_store(&ep->q->state, SAN_EPQ_CONNECTING);
    ep->state = SAN_EPQ_CONNECTING;
    ep->nic = nic;
    ep->set = set;
    if (owner)
        ep->owner = *owner;
    atomic_init(&ep->refs, 1);
    atomic_fetch_add(&nic->endpoints, 1);
    pthread_mutex_lock(&nic->lock);
    ep->id = ++nic->last_ep_id;
    san_list_append(&nic->eps, &ep->link);
    pthread_mutex_unlock(&nic->lock);
    *out = ep;
    return 0;
fail:
    if (ep->memfd >= 0)
        close(ep->memfd);
    if (ep->efd >= 0)
        close(ep->efd);
    free(ep);
    return err;
}

void san_nic_ep_put(struct san_nic_ep *ep)
{
    if (atomic_fetch_sub(&ep->refs, 1) != 1)
        return;
    pthread_mutex_lock(&ep->nic->lock);
    san_list_del(&ep->link);
    pthread_mutex_unlock(&ep->nic->lock);
    atomic_fetch_sub(&ep->nic->endpoints, 1);
    munmap(ep->q, SAN_EPQ_SIZE);
    close(ep->memfd);
    close(ep->efd);
    free(ep);
}

/* Tells a connector what became of it. */
void san_nic_set_state(struct san_nic_ep *ep, uint32_t state, int32_t err)
{
    ep->err = err;
    ep->state = state;
    atomic_store(&ep->q->state_err, err);
    atomic_store_explicit(&ep->q->state, state, memory_order_release);
    /* The eventfd too, armed or not: a connector that polls for its outcome (san_connect_finish)
     * may have armed it before the outcome or may arm it after; the flag makes a second write a
     * no-op and libsan drains it only once the outcome was taken. After the state, so a waiter
     * woken by it reads the outcome; before the futex wakes, so a connector woken by those finds
     * it signalled and drains it. */
    if (!atomic_exchange_explicit(&ep->q->efd_signaled, 1, memory_order_seq_cst)) {
        uint64_t one = 1;
        if (write(ep->efd, &one, sizeof(one)) < 0) {
        }
    }
    futex_wake_all(&ep->q->state);
    atomic_fetch_add(&ep->q->cq_seq, 1);
    futex_wake_all(&ep->q->cq_seq);
}

static struct san_nic_listener *find_listener(struct san_nic *nic, const struct san_nic_addr *a)
{
    for (struct san_nic_listener *l = nic->listeners; l; l = l->next)
        if (!memcmp(&l->addr, a, sizeof(*a)))
            return l;
    return NULL;
}

int san_nic_listen(struct san_nic *nic, const struct san_nic_owner *owner,
                   const struct san_nic_addr *addr, int backlog, struct san_nic_listener **out)
{
    if (backlog < 1 || !addr->port)
        return -EINVAL;
    if (!served(nic, addr))
        return -EADDRNOTAVAIL;
    struct san_nic_listener *l = calloc(1, sizeof(*l));
    if (!l)
        return -ENOMEM;
    l->efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (l->efd < 0) {
        free(l);
        return -ENOBUFS;
    }
    l->nic = nic;
    l->addr = *addr;
    if (owner)
        l->owner = *owner;
    l->backlog =
        (unsigned)backlog < nic->cfg.backlog_max ? (unsigned)backlog : nic->cfg.backlog_max;
    l->pending_tail = &l->pending;
    pthread_mutex_lock(&nic->lock);
    int err = find_listener(nic, addr) ? -EADDRINUSE : 0;
    if (!err) {
        l->next = nic->listeners;
        nic->listeners = l;
    }
    pthread_mutex_unlock(&nic->lock);
    if (err) {
        close(l->efd);
        free(l);
        return err;
    }
    *out = l;
    return 0;
}

/* Takes ep out of l's backlog (it is there). Under nic->lock: the link thread adds connectors
 * of other hosts to backlogs. */
static void unqueue(struct san_nic_listener *l, struct san_nic_ep *ep)
{
    for (struct san_nic_ep **p = &l->pending; *p; p = &(*p)->next_pending) {
        if (*p == ep) {
            *p = ep->next_pending;
            if (l->pending_tail == &ep->next_pending)
                l->pending_tail = p;
            break;
        }
    }
    ep->next_pending = NULL;
    if (!--l->nr_pending) {
        uint64_t n;
        if (read(l->efd, &n, sizeof(n)) < 0) { /* not readable: nothing waits */
        }
    }
}

static struct san_nic_listener *waiting_on(struct san_nic *nic, struct san_nic_ep *ep)
{
    for (struct san_nic_listener *l = nic->listeners; l; l = l->next)
        for (struct san_nic_ep *p = l->pending; p; p = p->next_pending)
            if (p == ep)
                return l;
    return NULL;
}

void san_nic_listener_close(struct san_nic_listener *l)
{
    if (!l)
        return;
    struct san_nic *nic = l->nic;
    pthread_mutex_lock(&nic->lock);
    for (struct san_nic_listener **p = &nic->listeners; *p; p = &(*p)->next) {
        if (*p == l) {
            *p = l->next;
            break;
        }
    }
    struct san_nic_ep *refused = NULL, **tail = &refused;
    while (l->pending) {
        struct san_nic_ep *ep = l->pending;
        unqueue(l, ep);
        *tail = ep;
        tail = &ep->next_pending;
    }
    pthread_mutex_unlock(&nic->lock);
    while (refused) {
        struct san_nic_ep *ep = refused;
        refused = ep->next_pending;
        ep->next_pending = NULL;
        if (ep->xc)
            san_xconn_refuse(ep); /* a connector of another host */
        else
            san_nic_set_state(ep, SAN_EPQ_REFUSED, -ECONNREFUSED);
    }
    close(l->efd);
    free(l);
}

/* Puts ep at the end of the backlog of the listener on addr, under nic->lock. -ECONNREFUSED. */
static int backlog_add_locked(struct san_nic *nic, const struct san_nic_addr *addr,
                              struct san_nic_ep *ep)
{
    struct san_nic_listener *l = find_listener(nic, addr);
    if (!l || l->nr_pending >= l->backlog)
        return -ECONNREFUSED;
    *l->pending_tail = ep;
    l->pending_tail = &ep->next_pending;
    if (!l->nr_pending++) {
        uint64_t one = 1;
        if (write(l->efd, &one, sizeof(one)) < 0) {
        }
    }
    return 0;
}

int san_nic_backlog_add(struct san_nic *nic, const struct san_nic_addr *addr, struct san_nic_ep *ep)
{
    if (!addr->port || !served(nic, addr))
        return -ECONNREFUSED;
    pthread_mutex_lock(&nic->lock);
    int err = backlog_add_locked(nic, addr, ep);
    pthread_mutex_unlock(&nic->lock);
    return err;
}

bool san_nic_backlog_remove(struct san_nic *nic, struct san_nic_ep *ep)
{
    pthread_mutex_lock(&nic->lock);
    struct san_nic_listener *l = waiting_on(nic, ep);
    if (l)
        unqueue(l, ep);
    pthread_mutex_unlock(&nic->lock);
    return l != NULL;
}

int san_nic_connect(struct san_nic *nic, const struct san_nic_owner *owner,
                    struct san_regtab_set *set, const struct san_nic_addr *addr,
                    struct san_nic_ep **out)
{
    if (!addr->port)
        return -EINVAL;
    if (!served(nic, addr)) {
        /* Another host's, if a linked daemon serves it. */
        unsigned link;
        uint64_t session, host;
        int err = -ENETUNREACH;
        pthread_rwlock_rdlock(&nic->xport_lock);
        if (nic->xport.route)
            err = nic->xport.route(nic->xport.ctx, addr, &link, &session, &host);
        pthread_rwlock_unlock(&nic->xport_lock);
        if (err)
            return err;
        struct san_nic_ep *ep;
        if ((err = san_nic_ep_new(nic, owner, set, &ep)))
            return err;
        ep->remote = *addr;
        if ((err = san_xconn_connect(nic, ep, link, session, host))) {
            san_nic_ep_put(ep);
            return err;
        }
        *out = ep;
        return 0;
    }
    pthread_mutex_lock(&nic->lock);
    struct san_nic_listener *l = find_listener(nic, addr);
    bool full = !l || l->nr_pending >= l->backlog;
    pthread_mutex_unlock(&nic->lock);
    if (full)
        return -ECONNREFUSED;
    struct san_nic_ep *ep;
    int err = san_nic_ep_new(nic, owner, set, &ep);
    if (err)
        return err;
    ep->remote = *addr;
    pthread_mutex_lock(&nic->lock);
    err = backlog_add_locked(nic, addr, ep);
    pthread_mutex_unlock(&nic->lock);
    if (err) {
        san_nic_ep_put(ep);
        return err;
    }
    *out = ep;
    return 0;
}

int san_nic_accept(struct san_nic_listener *l, const struct san_nic_owner *owner,
                   struct san_regtab_set *set, struct san_nic_ep **out)
{
    pthread_mutex_lock(&l->nic->lock);
    bool none = !l->pending;
    pthread_mutex_unlock(&l->nic->lock);
    if (none)
        return -EAGAIN;
    struct san_nic_ep *a, *b;
    int err = san_nic_ep_new(l->nic, owner, set, &b);
    if (err)
        return err;
    b->local = l->addr;
    pthread_mutex_lock(&l->nic->lock);
    a = l->pending; /* the oldest: only this thread takes from a backlog */
    unqueue(l, a);
    pthread_mutex_unlock(&l->nic->lock);
    if (a->xc) {
        /* A connector of another host: its daemon learns of the accept over the link. */
        if ((err = san_xconn_accept(a, b))) {
            san_nic_ep_put(b);
            return err;
        }
        *out = b;
        return 0;
    }
    a->peer = b;
    b->peer = a;
    a->peer_client = b->owner.client;
    b->peer_client = a->owner.client;
    /* Connected before the engine starts: from then on the state is the engine's. */
    san_nic_set_state(b, SAN_EPQ_CONNECTED, 0);
    san_nic_set_state(a, SAN_EPQ_CONNECTED, 0);
    if ((err = san_nic_pair_start(l->nic, a, b))) {
        a->peer = NULL;
        a->peer_client = 0;
        san_nic_set_state(a, SAN_EPQ_REFUSED, -ECONNREFUSED);
        san_nic_ep_put(b);
        return err;
    }
    *out = b;
    return 0;
}

int san_nic_ep_peer_set(const struct san_nic_ep *ep, const struct san_regtab_set **set)
{
    if (ep->xc)
        return -EOPNOTSUPP;
    if (!ep->peer || atomic_load(&ep->state) != SAN_EPQ_CONNECTED ||
        atomic_load(&ep->peer->closing))
        return -ENOTCONN;
    *set = ep->peer->set;
    return 0;
}

void san_nic_ep_close(struct san_nic_ep *ep)
{
    if (!ep)
        return;
    if (ep->xc) {
        san_xconn_close(ep); /* its peer is on another host */
        san_nic_ep_put(ep);
        return;
    }
    if (!ep->pair) {
        /* Still waiting in a backlog, or refused. */
        san_nic_backlog_remove(ep->nic, ep);
        san_nic_ep_put(ep);
        return;
    }
    san_nic_pair_close(ep);
    san_nic_ep_put(ep);
}

bool san_nic_ep_linger(struct san_nic_ep *ep)
{
    /* Across hosts the peer's NIC is another daemon's: lingering is this host's only. */
    if (!ep || ep->xc || !ep->pair || !atomic_load(&ep->q->linger))
        return false;
    return san_nic_pair_linger(ep);
}

int san_nic_linger_fd(const struct san_nic *nic)
{
    return nic->linger_efd;
}

/* Entries posted on a ring and not yet taken, from two indexes of the region (either may be a
 * client's scribble): clamped to the ring's depth, *bad gets bit when it had to be. */
static uint32_t ring_fill(_Atomic uint32_t *tail, _Atomic uint32_t *head, uint32_t depth,
                          uint32_t bit, uint32_t *bad)
{
    uint32_t n = atomic_load_explicit(tail, memory_order_relaxed) -
                 atomic_load_explicit(head, memory_order_relaxed);
    if (n <= depth)
        return n;
    *bad |= bit;
    return depth;
}

static void ep_info(struct san_nic_ep *ep, struct san_nic_ep_info *o)
{
    uint32_t state = atomic_load_explicit(&ep->state, memory_order_acquire);
    *o = (struct san_nic_ep_info){
        .id = ep->id,
        .owner = ep->owner,
        .peer_client = ep->peer_client,
        .state = atomic_load(&ep->closing) || atomic_load(&ep->lingering) ? SAN_NIC_CLOSING : state,
        .err = state == SAN_EPQ_ERROR || state == SAN_EPQ_REFUSED ? atomic_load(&ep->err) : 0,
        .local = ep->local,
        .remote = ep->remote,
        .ops = atomic_load_explicit(&ep->ops, memory_order_relaxed),
        .bytes = atomic_load_explicit(&ep->bytes, memory_order_relaxed),
    };
    struct san_epq *q = ep->q;
    o->sq_fill = ring_fill(&q->sq_tail, &q->sq_head, SAN_EPQ_SQ, 1, &o->bad_rings);
    o->rq_fill = ring_fill(&q->rq_tail, &q->rq_head, SAN_EPQ_RQ, 2, &o->bad_rings);
    o->cq_fill = ring_fill(&q->cq_tail, &q->cq_head, SAN_EPQ_CQ, 4, &o->bad_rings);
}

size_t san_nic_list(struct san_nic *nic, uint64_t from, bool all, uint32_t uid,
                    struct san_nic_ep_info *out, size_t max, uint64_t *next)
{
    size_t n = 0;
    *next = 0;
    pthread_mutex_lock(&nic->lock);
    for (struct san_list *l = nic->eps.next; l != &nic->eps; l = l->next) {
        struct san_nic_ep *ep = san_container_of(l, struct san_nic_ep, link);
        if (ep->id < from || (!all && ep->owner.uid != uid))
            continue;
        if (n == max) {
            *next = ep->id;
            break;
        }
        ep_info(ep, &out[n++]);
    }
    pthread_mutex_unlock(&nic->lock);
    return n;
}
