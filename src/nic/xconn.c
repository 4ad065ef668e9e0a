/* Endpoints across hosts: a connection whose other end is an endpoint of another host's daemon,
 * reached over a link (nic.h's transport, link/link.h). This daemon is the NIC of its own
 * endpoint in every role: as initiator it checks the local pieces of its client's requests and
 * ships their bytes; as target it checks every access of the peer to its client's memory, rkey,
 * owner, access and range, as engine.c does, before a byte moves, and tells the initiator the
 * outcome (SAN_XMSG_DONE), never relying on the transport for any of it.
 *
 * One thread per connection (as engine.c), which owns the connection's state: it reads its
 * endpoint's queues, ships its own requests in order (up to SAN_XCONN_PIPE in flight), executes
 * the peer's in order (holding up to SAN_XCONN_READS of its reads while it answers one), and
 * processes the messages the transport delivered into its inbox. Every message of the peer is
 * checked against the connection's state: a message out of order, beyond a credit or of an
 * operation not in flight is a protocol violation and resets the connection (the peer is told with
 * CLOSE); it never costs anything else. Uses of registrations are taken and dropped within one
 * message (a registration deregistered between two chunks of a transfer fails the rest of it), so
 * nothing is held across a wait on the network.
 *
 * The transport's thread runs a connection itself when the connection's thread is between
 * passes (its run lock free): a message of the peer is handled as it arrives, its bytes moved
 * from the transport's buffer straight into place, and the passes that follow (answers,
 * completions, credits, the next chunks, the client's next requests: san_nic_xpoll) go out on
 * the thread that sends them, with no wake-up between the threads. Every check is the same code
 * under the same lock; only which thread runs it differs. While the transport's thread polls
 * (san_nic_xwatch), a connection's thread with nothing to do does not poll at all: it sleeps
 * without asking its client to ring the doorbell, and is woken when the polling stops.
 *
 * A connector of another host waits in a listener's backlog as a stub endpoint (no region, not
 * listed) with its connection in the table; accept turns it into a connection with a thread.
 *
 * Locking: nic->xlock covers the table of connections (and a stub's fate); a connection's lock its
 * inbox; its run lock is held by its thread during a pass and by the loop when it closes the
 * endpoint, so the endpoint's registrations are never looked at after its owner let go. The
 * transport is called under nic->xport_lock (read), never with xlock or a connection's lock
 * held; the transport delivers with its own lock held and takes xlock (nic.h's order). */
#include "nic/xconn.h"

#include <san/client.h>

#include <errno.h>
#include <linux/futex.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "common/clock.h"
#include "common/spin.h"

#ifndef SYS_futex_waitv
#define SYS_futex_waitv 449
#endif
#define FUTEX2_U32 0x02

static void futex_wake(_Atomic uint32_t *word)
{
    syscall(SYS_futex, word, FUTEX_WAKE, INT32_MAX, NULL, NULL, 0);
}

static void wake(struct san_xconn *xc)
{
    atomic_fetch_add(&xc->wake, 1);
    if (atomic_load(&xc->sleeping))
        futex_wake(&xc->wake);
}

static int xsend(struct san_xconn *xc, struct san_xmsg *m, const void *payload, size_t len)
{
    struct san_nic *nic = xc->nic;
    int err = -ECONNRESET;
    if (xc->dead)
        return err;
    m->from = xc->id;
    m->len = (uint32_t)len;
    pthread_rwlock_rdlock(&nic->xport_lock);
    if (nic->xport.send)
        err = nic->xport.send(nic->xport.ctx, xc->link, xc->session, m, payload, len);
    pthread_rwlock_unlock(&nic->xport_lock);
    return err;
}

static struct san_xconn *xconn_new(struct san_nic *nic, unsigned link, uint64_t session,
                                   uint64_t host)
{
    struct san_xconn *xc = calloc(1, sizeof(*xc));
    if (!xc)
        return NULL;
    xc->buf = malloc(SAN_XMSG_CHUNK);
    if (!xc->buf || pthread_mutex_init(&xc->lock, NULL)) {
        free(xc->buf);
        free(xc);
        return NULL;
    }
    if (pthread_mutex_init(&xc->run, NULL)) {
        pthread_mutex_destroy(&xc->lock);
        free(xc->buf);
        free(xc);
        return NULL;
    }
    xc->nic = nic;
    xc->link = link;
    xc->session = session;
    xc->host = host;
    xc->in_tail = &xc->in_head;
    xc->credits = SAN_XMSG_WINDOW;
    return xc;
}

static void xconn_free(struct san_xconn *xc)
{
    while (xc->in_head) {
        struct xin *i = xc->in_head;
        xc->in_head = i->next;
        free(i);
    }
    pthread_mutex_destroy(&xc->run);
    pthread_mutex_destroy(&xc->lock);
    free(xc->stub);
    free(xc->buf);
    free(xc);
}

/* Into the table with a new number; under xlock. */
static void table_add_locked(struct san_nic *nic, struct san_xconn *xc)
{
    xc->id = ++nic->last_xconn;
    san_list_append(&nic->xconns, &xc->node);
}

/* --- the peer's misbehaviour, and the end of the session ------------------------------------ */

/* Everything outstanding and later completes with -ECONNRESET; the peer hears nothing more. */
void san_xconn_fail_all(struct san_xconn *xc)
{
    struct san_nic_ep *ep = xc->ep;
    xc->dead = true;
    xc->rd_busy = false;
    xc->rd_queued = 0;
    if (xc->phase == X_CONNECTING) {
        san_nic_set_state(ep, SAN_EPQ_REFUSED, -ECONNREFUSED);
        return;
    }
    if (!xc->flush_status)
        xc->flush_status = -ECONNRESET;
    san_xconn_flush_ring(xc);
    san_xconn_abandon(xc);
    san_nic_enter_error(ep, -ECONNRESET);
}

/* The peer broke the protocol of this connection: it ends here, and the peer is told. */
void san_xconn_violation(struct san_xconn *xc)
{
    if (xc->dead)
        return;
    struct san_xmsg m = {
        .op = SAN_XMSG_CLOSE, .conn = atomic_load(&xc->peer_conn), .status = -EPROTO};
    xsend(xc, &m, NULL, 0);
    san_xconn_fail_all(xc);
}

void san_xconn_send_or_fail(struct san_xconn *xc, struct san_xmsg *m, const void *payload,
                            size_t len)
{
    m->conn = atomic_load(&xc->peer_conn);
    if (xsend(xc, m, payload, len) && !xc->dead)
        san_xconn_fail_all(xc); /* the session is over, or the transport is overwhelmed */
}

/* The source of a chunk: len bytes at byte off of the request the pieces make up. */
struct chunk_src {
    struct san_nic *nic;
    const struct san_nic_piece *pc;
    unsigned n;
    uint64_t off;
};

static int fill_chunk(void *arg, void *dst, size_t off, size_t n)
{
    const struct chunk_src *s = arg;
    return san_nic_pieces_io(s->nic, s->pc, s->n, s->off + off, dst, n, false) ? -EFAULT : 0;
}

int san_xconn_send_from(struct san_xconn *xc, struct san_xmsg *m, const struct san_nic_piece *pc,
                        unsigned n, uint64_t off, size_t len)
{
    struct san_nic *nic = xc->nic;
    struct chunk_src src = {.nic = nic, .pc = pc, .n = n, .off = off};
    int err = -ECONNRESET;
    if (xc->dead)
        return err;
    m->conn = atomic_load(&xc->peer_conn);
    m->from = xc->id;
    m->len = (uint32_t)len;
    pthread_rwlock_rdlock(&nic->xport_lock);
    if (nic->xport.send_fill) {
        err = nic->xport.send_fill(nic->xport.ctx, xc->link, xc->session, m, len, fill_chunk, &src);
    } else if (nic->xport.send) {
        err = len ? fill_chunk(&src, xc->buf, 0, len) : 0;
        if (!err)
            err = nic->xport.send(nic->xport.ctx, xc->link, xc->session, m, xc->buf, len);
    }
    pthread_rwlock_unlock(&nic->xport_lock);
    if (err && err != -EFAULT && !xc->dead)
        san_xconn_fail_all(xc); /* the session is over, or the transport is overwhelmed */
    return err;
}

void san_xconn_done(struct san_xconn *xc, uint64_t seq, int32_t status, uint64_t total)
{
    struct san_xmsg m = {.op = SAN_XMSG_DONE, .seq = seq, .status = status, .total = total};
    if (status)
        xc->in_dead = true; /* the peer's later requests are flushed there: dropped here */
    san_xconn_send_or_fail(xc, &m, NULL, 0);
}

static bool drain_inbox(struct san_xconn *xc)
{
    bool did = false;
    for (;;) {
        pthread_mutex_lock(&xc->lock);
        struct xin *in = xc->in_head;
        bool overflow = xc->overflow;
        pthread_mutex_unlock(&xc->lock);
        if (overflow && !xc->dead) {
            san_xconn_violation(xc); /* the peer sent beyond every credit it had */
            did = true;
        }
        if (!in)
            return did;
        if (san_xconn_handle(xc, &in->m, in->data) == STALL)
            return did;
        pthread_mutex_lock(&xc->lock);
        xc->in_head = in->next;
        if (!xc->in_head)
            xc->in_tail = &xc->in_head;
        xc->in_count--;
        pthread_mutex_unlock(&xc->lock);
        free(in);
        did = true;
    }
}

static bool pass(struct san_xconn *xc, bool lazy)
{
    struct san_nic_ep *ep = xc->ep;
    bool did = false;
    if (atomic_load(&xc->reset) && !xc->dead) {
        san_xconn_fail_all(xc);
        did = true;
    }
    /* What a failure or the reset found the completion queue too full for completes as room
     * comes. */
    did |= san_xconn_flush_ring(xc);
    if (xc->dead)
        did |= san_xconn_abandon(xc);
    did |= drain_inbox(xc);
    did |= san_xconn_start(xc);
    did |= san_xconn_ship(xc);
    did |= san_xconn_answer(xc);
    did |= san_xconn_credit(xc, lazy);
    if (ep->state == SAN_EPQ_ERROR && xc->phase == X_RUNNING) {
        if (!xc->state_sent && !xc->dead) {
            struct san_xmsg m = {.op = SAN_XMSG_STATE, .status = ep->err};
            xc->state_sent = true;
            san_xconn_send_or_fail(xc, &m, NULL, 0);
        }
        if (san_xconn_idle(xc))
            did |= san_nic_flush(ep);
    }
    return did;
}

static void snapshot(struct san_xconn *xc, uint32_t out[4])
{
    struct san_epq *q = xc->ep->q;
    out[0] = atomic_load_explicit(&q->sq_tail, memory_order_seq_cst);
    out[1] = atomic_load_explicit(&q->rq_tail, memory_order_seq_cst);
    out[2] = atomic_load_explicit(&q->cq_head, memory_order_seq_cst);
    out[3] = atomic_load_explicit(&xc->wake, memory_order_seq_cst);
}

static bool pending(void *arg)
{
    struct san_xconn *xc = arg;
    uint32_t now[4];
    snapshot(xc, now);
    return atomic_load(&xc->ep->closing) || memcmp(now, xc->seen, sizeof(now)) != 0;
}

struct futex_waiter {
    uint64_t val;
    uint64_t uaddr;
    uint32_t flags;
    uint32_t reserved;
};

static void sleep_on(struct san_xconn *xc)
{
    struct san_epq *q = xc->ep->q;
    struct futex_waiter w[2] = {
        {.val = atomic_load(&q->doorbell), .uaddr = (uintptr_t)&q->doorbell, .flags = FUTEX2_U32},
        {.val = xc->seen[3], .uaddr = (uintptr_t)&xc->wake, .flags = FUTEX2_U32},
    };
    atomic_store_explicit(&q->engine_sleeping, 1, memory_order_seq_cst);
    atomic_store_explicit(&xc->sleeping, 1, memory_order_seq_cst);
    if (!pending(xc)) {
        struct timespec to;
        clock_gettime(CLOCK_MONOTONIC, &to);
        to.tv_sec += 1; /* a safety net only */
        if (syscall(SYS_futex_waitv, w, 2, 0, &to, CLOCK_MONOTONIC) < 0 && errno == ENOSYS) {
            struct timespec ms = {0, 1000000};
            nanosleep(&ms, NULL);
        }
    }
    atomic_store_explicit(&xc->sleeping, 0, memory_order_relaxed);
    atomic_store_explicit(&q->engine_sleeping, 0, memory_order_relaxed);
}

/* Whether the connection's thread may leave the connection to the transport's thread while that
 * one polls: only a running connection with nothing waiting in its inbox (the transport's thread
 * does not run a connection with messages waiting there) and nothing to finish (an error, a
 * reset). Under the run lock. */
static bool leavable(struct san_xconn *xc)
{
    if (xc->dead || xc->phase != X_RUNNING || xc->ep->state == SAN_EPQ_ERROR ||
        atomic_load(&xc->reset))
        return false;
    pthread_mutex_lock(&xc->lock);
    bool empty = !xc->in_head && !xc->overflow;
    pthread_mutex_unlock(&xc->lock);
    return empty;
}

/* Sleeps on the wake word only, the client not asked to ring (engine_sleeping stays 0): the
 * transport's thread polls and takes the client's requests (san_nic_xpoll). It wakes this thread
 * when it stops polling (san_nic_xwatch), as do a message for the inbox, a reset and a close. */
static void sleep_watched(struct san_xconn *xc)
{
    atomic_store_explicit(&xc->sleeping, 1, memory_order_seq_cst);
    if (atomic_load(&xc->nic->xwatched) && !atomic_load(&xc->ep->closing) &&
        atomic_load(&xc->wake) == xc->seen[3]) {
        struct timespec to = {1, 0}; /* a safety net only */
        syscall(SYS_futex, &xc->wake, FUTEX_WAIT, xc->seen[3], &to, NULL, 0);
    }
    atomic_store_explicit(&xc->sleeping, 0, memory_order_relaxed);
}

static void *xconn_main(void *arg)
{
    struct san_xconn *xc = arg;
    struct san_nic_ep *ep = xc->ep;
    uint64_t spin_ns = (uint64_t)xc->nic->cfg.spin_us * 1000;
    struct san_xmsg first = {.op = xc->acceptor ? SAN_XMSG_ACCEPT : SAN_XMSG_CONNECT};
    if (!xc->acceptor) {
        memcpy(first.ip, ep->remote.ip, 16);
        first.port = ep->remote.port;
    }
    pthread_mutex_lock(&xc->run);
    san_xconn_send_or_fail(xc, &first, NULL, 0);
    xc->greeted = true;
    pthread_mutex_unlock(&xc->run);
    for (;;) {
        pthread_mutex_lock(&xc->run);
        if (atomic_load(&ep->closing)) {
            pthread_mutex_unlock(&xc->run);
            break;
        }
        uint32_t before[4];
        snapshot(xc, before);
        bool did = pass(xc, false);
        bool leave = !did && atomic_load(&xc->nic->xwatched) && leavable(xc);
        pthread_mutex_unlock(&xc->run);
        if (did)
            continue;
        memcpy(xc->seen, before, sizeof(before));
        if (leave) {
            sleep_watched(xc);
            continue;
        }
        uint64_t idle_since = san_now_ns();
        bool ready;
        do
            ready = san_spin_look(pending, xc);
        while (!ready && san_now_ns() - idle_since < spin_ns);
        if (!ready)
            sleep_on(xc);
    }
    /* The owner let go: the peer's end is reset, as on one host. */
    struct san_xmsg bye = {.op = SAN_XMSG_CLOSE, .conn = atomic_load(&xc->peer_conn)};
    if (!xc->peer_closed)
        xsend(xc, &bye, NULL, 0);
    pthread_mutex_lock(&xc->nic->xlock);
    san_list_del(&xc->node);
    pthread_mutex_unlock(&xc->nic->xlock);
    xconn_free(xc);
    san_nic_ep_put(ep);
    return NULL;
}

static int start_thread(struct san_xconn *xc)
{
    pthread_t t;
    pthread_attr_t attr;
    sigset_t all, old;
    int err = pthread_attr_init(&attr);
    if (err)
        return -ENOBUFS;
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    pthread_attr_setstacksize(&attr, 256 << 10);
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old); /* signals stay with the loop's signalfd */
    atomic_fetch_add(&xc->ep->refs, 1);
    err = pthread_create(&t, &attr, xconn_main, xc);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    pthread_attr_destroy(&attr);
    if (err) {
        atomic_fetch_sub(&xc->ep->refs, 1);
        return -ENOBUFS;
    }
    return 0;
}

/* --- the loop's calls (nic.c) --------------------------------------------------------------- */

int san_xconn_connect(struct san_nic *nic, struct san_nic_ep *ep, unsigned link, uint64_t session,
                      uint64_t host)
{
    struct san_xconn *xc = xconn_new(nic, link, session, host);
    if (!xc)
        return -ENOMEM;
    xc->ep = ep;
    xc->phase = X_CONNECTING;
    ep->xc = xc;
    pthread_mutex_lock(&nic->xlock);
    table_add_locked(nic, xc);
    pthread_mutex_unlock(&nic->xlock);
    int err = start_thread(xc);
    if (err) {
        pthread_mutex_lock(&nic->xlock);
        san_list_del(&xc->node);
        pthread_mutex_unlock(&nic->xlock);
        ep->xc = NULL;
        xconn_free(xc);
    }
    return err;
}

int san_xconn_accept(struct san_nic_ep *stub, struct san_nic_ep *ep)
{
    struct san_xconn *xc = stub->xc;
    struct san_nic *nic = xc->nic;
    pthread_mutex_lock(&nic->xlock);
    bool gone = xc->peer_gone;
    xc->ep = ep;
    xc->phase = X_RUNNING;
    xc->acceptor = true;
    pthread_mutex_unlock(&nic->xlock);
    ep->xc = xc;
    ep->remote = (struct san_nic_addr){0};
    if (gone)
        atomic_store(&xc->reset, true); /* the connector gave up meanwhile: reset at once */
    san_nic_set_state(ep, SAN_EPQ_CONNECTED, 0);
    int err = start_thread(xc);
    if (err) {
        ep->xc = NULL;
        pthread_mutex_lock(&nic->xlock);
        xc->ep = NULL;
        pthread_mutex_unlock(&nic->xlock);
        san_xconn_refuse(stub);
        return err;
    }
    return 0;
}

void san_xconn_refuse(struct san_nic_ep *stub)
{
    struct san_xconn *xc = stub->xc;
    struct san_nic *nic = xc->nic;
    struct san_xmsg m = {
        .op = SAN_XMSG_ACCEPT, .conn = atomic_load(&xc->peer_conn), .status = -ECONNREFUSED};
    /* Out of the table first: a CLOSE of the connector (the link thread) no longer finds it. */
    pthread_mutex_lock(&nic->xlock);
    san_list_del(&xc->node);
    pthread_mutex_unlock(&nic->xlock);
    xsend(xc, &m, NULL, 0);
    xconn_free(xc); /* and the stub */
}

void san_xconn_close(struct san_nic_ep *ep)
{
    struct san_xconn *xc = ep->xc;
    pthread_mutex_lock(&xc->run);
    atomic_store(&ep->closing, true);
    wake(xc); /* under the run lock: once it is released, the thread may end and free xc */
    pthread_mutex_unlock(&xc->run);
}

/* --- the transport's calls ------------------------------------------------------------------ */

static struct san_xconn *find_locked(struct san_nic *nic, uint64_t id)
{
    for (struct san_list *n = nic->xconns.next; n != &nic->xconns; n = n->next) {
        struct san_xconn *xc = san_container_of(n, struct san_xconn, node);
        if (xc->id == id)
            return xc;
    }
    return NULL;
}

/* A stub leaves the table and the backlog, unless accept took it from the backlog already. */
static void drop_stub_locked(struct san_nic *nic, struct san_xconn *xc)
{
    if (san_nic_backlog_remove(nic, xc->stub)) {
        san_list_del(&xc->node);
        xconn_free(xc);
    } else {
        xc->peer_gone = true;
    }
}

static int on_connect(struct san_nic *nic, unsigned link, uint64_t session, uint64_t host,
                      const struct san_xmsg *m, struct san_xmsg *reply)
{
    struct san_nic_addr a = {.port = m->port};
    memcpy(a.ip, m->ip, 16);
    struct san_xconn *xc = xconn_new(nic, link, session, host);
    struct san_nic_ep *stub = xc ? calloc(1, sizeof(*stub)) : NULL;
    int err = -ECONNREFUSED;
    if (stub) {
        stub->nic = nic;
        stub->xc = xc;
        stub->local = a;
        xc->stub = stub;
        xc->phase = X_PENDING;
        atomic_store(&xc->peer_conn, m->from);
        pthread_mutex_lock(&nic->xlock);
        table_add_locked(nic, xc);
        pthread_mutex_unlock(&nic->xlock);
        if (!(err = san_nic_backlog_add(nic, &a, stub)))
            return 0;
        pthread_mutex_lock(&nic->xlock);
        san_list_del(&xc->node);
        pthread_mutex_unlock(&nic->xlock);
    }
    if (xc)
        xconn_free(xc);
    *reply = (struct san_xmsg){.op = SAN_XMSG_ACCEPT, .conn = m->from, .status = err};
    return 1;
}

/* Into the inbox, for the connection's thread (woken). A peer beyond every credit it had (the
 * inbox full) is a violation the thread acts on. */
static void inbox_put(struct san_xconn *xc, const struct san_xmsg *m, const void *payload)
{
    struct xin *in = NULL;
    pthread_mutex_lock(&xc->lock);
    if (xc->in_count < INBOX_MAX && (in = malloc(sizeof(*in) + m->len))) {
        in->next = NULL;
        in->m = *m;
        if (m->len)
            memcpy(in->data, payload, m->len);
        *xc->in_tail = in;
        xc->in_tail = &in->next;
        xc->in_count++;
    } else {
        xc->overflow = true;
    }
    pthread_mutex_unlock(&xc->lock);
    wake(xc);
}

#define HERE_PASSES 4 /* passes the transport's thread makes after a message, at most */

/* Under xlock: whether the transport's thread may run the connection itself, the run lock then
 * held. Only while the connection's thread is between passes (the lock free), the endpoint not
 * closing (then the thread is still in its loop, and cannot free the connection before it has
 * the run lock back), the connection running and greeted, and nothing waiting in the inbox (the
 * peer's messages are taken in order). */
static bool take_run_locked(struct san_xconn *xc)
{
    if (pthread_mutex_trylock(&xc->run))
        return false;
    bool ok = xc->ep && xc->greeted && xc->phase == X_RUNNING && !atomic_load(&xc->ep->closing);
    if (ok) {
        pthread_mutex_lock(&xc->lock);
        ok = !xc->in_head && !xc->overflow;
        pthread_mutex_unlock(&xc->lock);
    }
    if (!ok)
        pthread_mutex_unlock(&xc->run);
    return ok;
}

/* Passes on the transport's thread, the run lock held (take_run_locked): what the connection's
 * thread would do (answer, complete, credit, ship the next chunks, take the client's next
 * requests) is done here, without waking it; it is woken only for what is left (left: a message
 * its completion queue had no room for yet; more passes than HERE_PASSES). Releases the run
 * lock. */
static void passes_here(struct san_xconn *xc, bool left)
{
    int i = 0;
    while (i < HERE_PASSES && pass(xc, true))
        i++;
    /* A thread left the connection to this one (san_nic_xwatch) only while it was leavable. */
    if (left || i == HERE_PASSES || (atomic_load(&xc->nic->xwatched) && !leavable(xc)))
        wake(xc); /* under the run lock: once it is released, the thread may end and free xc */
    pthread_mutex_unlock(&xc->run);
}

/* The peer's message m handled on the transport's thread (take_run_locked): the bytes go from
 * the transport's buffer straight into place, then passes_here. */
static void run_here(struct san_xconn *xc, const struct san_xmsg *m, const void *payload)
{
    bool left = false;
    if (san_xconn_handle(xc, m, payload) == STALL) {
        inbox_put(xc, m, payload);
        left = true;
    }
    passes_here(xc, left);
}

bool san_nic_xpoll(struct san_nic *nic)
{
    bool did = false;
    uint64_t after = 0;
    for (;;) {
        struct san_xconn *xc = NULL;
        pthread_mutex_lock(&nic->xlock);
        for (struct san_list *n = nic->xconns.next; n != &nic->xconns; n = n->next) {
            struct san_xconn *c = san_container_of(n, struct san_xconn, node);
            if (c->id > after) { /* the table is in id order */
                xc = c;
                break;
            }
        }
        if (!xc) {
            pthread_mutex_unlock(&nic->xlock);
            return did;
        }
        after = xc->id;
        bool mine = xc->ep && take_run_locked(xc);
        pthread_mutex_unlock(&nic->xlock);
        if (!mine)
            continue;
        struct san_nic_ep *ep = xc->ep;
        if (atomic_load_explicit(&ep->q->sq_tail, memory_order_acquire) != ep->sq_head ||
            atomic_load_explicit(&ep->q->rq_tail, memory_order_acquire) != xc->rq_adv) {
            did = true;
            passes_here(xc, false);
        } else {
            pthread_mutex_unlock(&xc->run);
        }
    }
}

void san_nic_xwatch(struct san_nic *nic, bool on)
{
    if (atomic_exchange(&nic->xwatched, on) == on || on)
        return;
    /* A thread that saw it on sleeps, or is about to (its sleeping flag set first: wake sees
     * it, or the wake word moved before it sleeps). */
    pthread_mutex_lock(&nic->xlock);
    for (struct san_list *n = nic->xconns.next; n != &nic->xconns; n = n->next) {
        struct san_xconn *xc = san_container_of(n, struct san_xconn, node);
        if (xc->ep)
            wake(xc);
    }
    pthread_mutex_unlock(&nic->xlock);
}

int san_nic_xdeliver(struct san_nic *nic, unsigned link, uint64_t session, uint64_t host,
                     const struct san_xmsg *m, const void *payload, struct san_xmsg *reply)
{
    if (m->op == SAN_XMSG_CONNECT)
        return on_connect(nic, link, session, host, m, reply);
    pthread_mutex_lock(&nic->xlock);
    if (!m->conn) {
        /* A connector that gave up before it was accepted. */
        if (m->op == SAN_XMSG_CLOSE)
            for (struct san_list *n = nic->xconns.next; n != &nic->xconns; n = n->next) {
                struct san_xconn *xc = san_container_of(n, struct san_xconn, node);
                if (xc->stub && !xc->ep && xc->link == link && xc->session == session &&
                    atomic_load(&xc->peer_conn) == m->from) {
                    drop_stub_locked(nic, xc);
                    break;
                }
            }
        pthread_mutex_unlock(&nic->xlock);
        return 0;
    }
    struct san_xconn *xc = find_locked(nic, m->conn);
    uint64_t peer = xc ? atomic_load(&xc->peer_conn) : 0;
    if (!xc || xc->link != link || xc->session != session || (peer && peer != m->from) || !xc->ep) {
        pthread_mutex_unlock(&nic->xlock);
        if (m->op == SAN_XMSG_CLOSE || (xc && !xc->ep))
            return 0;
        /* Not a connection of this peer here (closed meanwhile): its end is told. */
        *reply = (struct san_xmsg){.op = SAN_XMSG_CLOSE, .conn = m->from, .from = m->conn};
        return 1;
    }
    if (take_run_locked(xc)) {
        pthread_mutex_unlock(&nic->xlock);
        run_here(xc, m, payload);
        return 0;
    }
    inbox_put(xc, m, payload);
    pthread_mutex_unlock(&nic->xlock);
    return 0;
}

static void reset_locked(struct san_nic *nic, bool all, unsigned link, uint64_t session)
{
    for (struct san_list *n = nic->xconns.next, *next; n != &nic->xconns; n = next) {
        next = n->next;
        struct san_xconn *xc = san_container_of(n, struct san_xconn, node);
        if (!all && (xc->link != link || xc->session != session))
            continue;
        if (xc->stub && !xc->ep) {
            drop_stub_locked(nic, xc); /* may free it */
            continue;
        }
        atomic_store(&xc->reset, true);
        wake(xc);
    }
}

void san_nic_xreset(struct san_nic *nic, unsigned link, uint64_t session)
{
    pthread_mutex_lock(&nic->xlock);
    reset_locked(nic, false, link, session);
    pthread_mutex_unlock(&nic->xlock);
}

void san_nic_set_xport(struct san_nic *nic, const struct san_nic_xport *x)
{
    pthread_rwlock_wrlock(&nic->xport_lock);
    nic->xport = x ? *x : (struct san_nic_xport){0};
    pthread_rwlock_unlock(&nic->xport_lock);
    if (!x) {
        pthread_mutex_lock(&nic->xlock);
        reset_locked(nic, true, 0, 0);
        pthread_mutex_unlock(&nic->xlock);
    }
}
