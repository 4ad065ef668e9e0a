/* The finisher (finish.h): one thread per process finishes the connections the program closed.
 *
 * The thread starts with the process's first SAN connection (a close never pays for its creation).
 * Why a thread and not a wait in close: a peer that does not read would make close wait, where
 * TCP's close returns at once and the kernel delivers. Why not only the daemon: while the process
 * lives, the connection's buffers are its own memory, freed by the switch once the peer is done
 * with them. When the process goes away while the finisher still holds a connection, the thread
 * goes with it and nothing is freed: the daemon finds the endpoint asking to linger and finishes
 * it (docs/nic.md). exit() waits a bounded time for the thread (sansock_finish_wait_idle), so that
 * the peer reads EOF from our SHUTDOWN, as from TCP's FIN; _exit and signals do not.
 *
 * The thread sleeps in poll on the endpoints' completion descriptors (each armed from its first
 * step until it is freed) and an eventfd that sansock_finish_add signals; a wake-up steps only
 * the connections whose descriptor fired (and new ones), so its cost does not grow with the
 * number held beyond building the poll's array.
 *
 * The number held is capped (SANSOCK_MAX_ORPHANS, default 64: a quarter of the daemon's default
 * [limits] endpoints per client), as Linux caps orphans (tcp_max_orphans): a peer that never
 * reads would otherwise make a server that closes each connection hold every one of them, its
 * endpoint and buffers, for SANSOCK_LINGER_MS, until it can accept or connect nothing. Over the
 * cap the oldest is reset and freed at once (drop_oldest).
 *
 * Locking: lock covers the hand-over queue (incoming); the connections taken off it are the
 * thread's alone (their own lock is taken by the session calls). work_lock is held while the
 * thread calls into them and by fork (pthread_atfork), so that a forked child never inherits a
 * lock of libsan's or the switch's that the thread held. */
#include "common/clock.h"
#include "sock/finish.h"

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include "sock/log.h"
#include "sock/real.h"
#include "sock/session.h"

/* A safety net: completions wake the thread, and each wake-up steps only the connections whose
 * descriptor fired; every connection is stepped at least this often. */
#define SWEEP_MS 1000

struct item {
    struct sansock_conn *c;
    uint64_t deadline; /* CLOCK_MONOTONIC ns: freed then at the latest */
    int fd;            /* its completion descriptor, armed while it is held; -1 before */
    int pi;            /* its place in the last poll's array, or -1 */
    bool fired;        /* that poll saw its descriptor readable */
};

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
/* Held by the thread while it works on connections (libsan calls that take libsan's and the
 * switch's locks), and by fork (pthread_atfork): a child never inherits a lock the thread held. */
static pthread_mutex_t work_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_once_t fork_once = PTHREAD_ONCE_INIT;
static struct item *incoming;
static size_t nr_in, cap_in;
static int kick_fd = -1;
static _Atomic bool started;
static _Atomic size_t unfinished; /* connections added and not freed yet */
static bool stopped;              /* exit() is past its wait: no more work (work_lock) */

static bool grow(struct item **a, size_t *cap, size_t need)
{
    if (need <= *cap)
        return true;
    size_t n = *cap ? *cap * 2 : 16;
    while (n < need)
        n *= 2;
    struct item *m = realloc(*a, n * sizeof(**a));
    if (!m)
        return false;
    *a = m;
    *cap = n;
    return true;
}

static void release(struct item *it)
{
    sansock_conn_free(it->c); /* closes the endpoint: its descriptor and arming go with it */
    atomic_fetch_sub(&unfinished, 1);
}

/* Over SANSOCK_MAX_ORPHANS: the oldest connection is reset (its endpoint closed without more
 * ado, so the peer's next look says ECONNRESET unless everything reached it already) and its
 * buffers freed now, as Linux drops an orphan over tcp_max_orphans with a RST. */
static void drop_oldest(struct item *it)
{
    if (sansock_logging())
        sansock_log("a closed connection reset: more than SANSOCK_MAX_ORPHANS=%u closed "
                    "connections were still being finished",
                    sansock_cfg.max_orphans);
    sansock_conn_set_abort(it->c, true);
    release(it);
}

static void *finisher_main(void *arg)
{
    (void)arg;
    struct item *mine = NULL; /* oldest first */
    struct pollfd *pfd = NULL;
    size_t nr = 0, cap = 0, pcap = 0, np = 0;
    uint64_t next_sweep = 0;
    for (;;) {
        /* What the last poll saw, before the array is rebuilt. */
        for (size_t i = 0; i < nr; i++)
            mine[i].fired = mine[i].pi >= 0 && (size_t)mine[i].pi < np && pfd[mine[i].pi].revents;
        size_t old = nr;
        pthread_mutex_lock(&lock);
        if (nr_in && grow(&mine, &cap, nr + nr_in)) {
            for (size_t i = 0; i < nr_in; i++)
                mine[nr++] = incoming[i];
            nr_in = 0;
        }
        pthread_mutex_unlock(&lock);
        if (pcap < nr + 1) {
            struct pollfd *m = realloc(pfd, (nr + 1) * sizeof(*pfd));
            if (m) {
                pfd = m;
                pcap = nr + 1;
            }
        }
        if (!pcap) { /* no memory for even the kick descriptor: look again in a while */
            struct timespec t = {0, 100 * 1000000L};
            nanosleep(&t, NULL);
            continue;
        }
        pthread_mutex_lock(&work_lock);
        if (stopped) { /* the process is exiting: the daemon finishes what is left */
            pthread_mutex_unlock(&work_lock);
            for (;;)
                pause();
        }
        uint64_t now = san_now_ns();
        bool sweep = now >= next_sweep;
        if (sweep)
            next_sweep = now + (uint64_t)SWEEP_MS * 1000000u;
        size_t max = sansock_cfg.max_orphans, drop = max && nr > max ? nr - max : 0;
        for (size_t i = 0; i < drop; i++)
            drop_oldest(&mine[i]);
        /* One pass, order kept: a connection is stepped when it is new, its descriptor fired, it
         * has none in the poll (no room), or at the sweep; it goes once finished or at its
         * deadline. The others cost a copy: no lock, no call. */
        uint64_t next = next_sweep;
        size_t kept = 0;
        np = 0;
        for (size_t i = drop; i < nr; i++) {
            struct item it = mine[i];
            bool step = i >= old || it.fired || it.pi < 0 || sweep;
            bool room = np + 1 < pcap;
            if (now >= it.deadline && sansock_logging())
                sansock_log("a closed connection given up after SANSOCK_LINGER_MS=%u: its peer "
                            "had not taken everything",
                            sansock_cfg.linger_ms);
            if (now >= it.deadline ||
                (step && sansock_conn_finish_step(it.c, it.fd < 0 && room ? &it.fd : NULL))) {
                release(&it); /* done, or the bound is reached */
                continue;
            }
            it.pi = -1;
            if (it.fd >= 0 && room) {
                it.pi = (int)np;
                pfd[np++] = (struct pollfd){.fd = it.fd, .events = POLLIN};
            }
            if (it.pi < 0 && now + 100 * 1000000u < next)
                next = now + 100 * 1000000u; /* not polled: looked at every 100 ms */
            if (it.deadline < next)
                next = it.deadline;
            mine[kept++] = it;
        }
        nr = kept;
        pthread_mutex_unlock(&work_lock);
        pfd[np] = (struct pollfd){.fd = kick_fd, .events = POLLIN};
        int timeout = next > now ? (int)((next - now + 999999) / 1000000) : 0;
        REAL(poll)(pfd, np + 1, timeout);
        uint64_t v;
        if (REAL(read)(kick_fd, &v, sizeof(v)) < 0) { /* not signalled */
        }
    }
    return NULL;
}

static void fork_prepare(void)
{
    pthread_mutex_lock(&work_lock);
}

static void fork_parent(void)
{
    pthread_mutex_unlock(&work_lock);
}

static void install_atfork(void)
{
    pthread_atfork(fork_prepare, fork_parent, NULL); /* the child: sansock_finish_atfork_child */
}

/* Under lock. */
static bool start_locked(void)
{
    if (started)
        return true;
    pthread_once(&fork_once, install_atfork);
    if (kick_fd < 0)
        kick_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (kick_fd < 0)
        return false;
    pthread_attr_t attr;
    if (pthread_attr_init(&attr))
        return false;
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    pthread_attr_setstacksize(&attr, 128 << 10);
    sigset_t all, old;
    sigfillset(&all); /* the program's signals are for its own threads */
    pthread_sigmask(SIG_SETMASK, &all, &old);
    pthread_t t;
    started = !pthread_create(&t, &attr, finisher_main, NULL);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    pthread_attr_destroy(&attr);
    return started;
}

void sansock_finish_prepare(void)
{
    if (atomic_load_explicit(&started, memory_order_acquire))
        return;
    pthread_mutex_lock(&lock);
    start_locked();
    pthread_mutex_unlock(&lock);
}

void sansock_finish_add(struct sansock_conn *c)
{
    uint64_t deadline = san_now_ns() + (uint64_t)sansock_cfg.linger_ms * 1000000u;
    pthread_mutex_lock(&lock);
    bool ok = start_locked() && grow(&incoming, &cap_in, nr_in + 1);
    if (ok) {
        incoming[nr_in++] = (struct item){.c = c, .deadline = deadline, .fd = -1, .pi = -1};
        atomic_fetch_add(&unfinished, 1);
        uint64_t one = 1;
        if (REAL(write)(kick_fd, &one, sizeof(one)) < 0) {
        }
    }
    pthread_mutex_unlock(&lock);
    if (!ok)
        sansock_conn_free(c); /* no thread, no memory: closed now, as an abortive close */
}

void sansock_finish_atfork_child(void)
{
    /* The parent's connections are inherited objects here (never touched); its thread and
     * its queue stay the parent's. */
    pthread_mutex_init(&lock, NULL);
    pthread_mutex_init(&work_lock, NULL); /* taken by fork_prepare in the parent's thread */
    incoming = NULL;
    nr_in = cap_in = 0;
    if (kick_fd >= 0)
        REAL(close)(kick_fd);
    kick_fd = -1;
    started = false;
    stopped = false;
    atomic_store(&unfinished, 0); /* the parent's, finished by the parent */
}

void sansock_finish_wait_idle(uint64_t deadline_ns)
{
    /* exit() ends the finisher with the process: what it still holds (bytes not yet posted, a
     * SHUTDOWN not sent) would be lost, so the exiting thread waits for it, bounded. */
    while (atomic_load(&unfinished) && san_now_ns() < deadline_ns) {
        struct timespec t = {0, 1000000L};
        nanosleep(&t, NULL);
    }
    /* Past the wait the thread calls into nothing more: the rest of exit (exit handlers, such as
     * LeakSanitizer's check, which stops every thread with ptrace) must not find it in a munmap
     * of a watched buffer, waiting for libsan's userfaultfd watcher to read the event: a stopped
     * watcher never does, and exit would hang. What it still holds the daemon finishes, as after
     * _exit (the endpoints linger). */
    pthread_mutex_lock(&work_lock);
    stopped = true;
    pthread_mutex_unlock(&work_lock);
}
