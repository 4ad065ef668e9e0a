/* sanproxyd's server: the machine, the control socket, one epoll loop, clients and shutdown.
 *
 * Sits on phys (the emulated machine), dma (the NIC's adapter), mr (the registration table), proto
 * (framing and the decoder), identity.c (who a client is) and ops.c (what each request does). Each
 * client's identity is fixed at accept (identity.c); its pidfd is in the epoll set, so a client
 * whose process died is cleaned up even while a forked child keeps its socket open, and a sweep
 * every SWEEP_MS drops clients whose process exec'd another program. Every request is checked to
 * come from the client's own process and that process to still run the program accepted.
 * Garbage (no valid header) costs the sender its connection; a well-framed bad request gets an
 * error reply. A client that does not read its replies (its socket buffer is full) is
 * disconnected rather than blocking the loop.
 *
 * Descriptors: the listening socket has SO_PASSRIGHTS off, so no client can pass the daemon a
 * descriptor (whose last close could block the loop: a lingering TCP socket); where the kernel
 * lacks it, a request that carries descriptors is a protocol error and they, like the connections
 * of such kernels, are closed by closer.c's thread.
 *
 * Admission: connections are counted against what RLIMIT_NOFILE allows (four descriptors a
 * client), the last ROOT_RESERVE of them kept for root (sanctl keeps working while a user holds
 * every other connection), and per uid ([limits] per_uid_connections, not for root). A refused
 * connection gets one error reply with request id 0 before it is closed.
 *
 * Replies first: what a request leaves to do that its reply does not depend on (frames of a freed
 * allocation going back, fresh memfds for the next allocations) runs right after the reply is sent
 * (san_daemon_after_reply), while the client goes on, and before the next event.
 *
 * Polling: after handling a request the loop polls (epoll_wait with timeout 0) for spin_us before
 * it blocks again, because a wake-up costs more than a round trip's work on these machines and
 * control requests come in bursts (register then deregister, alloc then free). 0 disables it.
 *
 * Locking: single-threaded. Clients dropped while a batch of events is being handled go to a
 * graveyard freed after the batch, because a later event of the same batch may still name them.
 * SIGTERM/SIGINT arrive through a signalfd: the listener closes first, then every client is
 * released, then the machine goes. */
#include "daemon/daemon.h"

#include <san/dma.h>

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/random.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#include "common/clock.h"

#ifndef SO_PASSRIGHTS
#define SO_PASSRIGHTS 83
#endif

#define TAG_LISTEN ((uint64_t)1)
#define TAG_SIGNAL ((uint64_t)2)
#define TAG_SWEEP  ((uint64_t)3)
#define TAG_LINK   ((uint64_t)4) /* the link thread has state changes to hand over */
#define TAG_LINGER ((uint64_t)5) /* a lingering endpoint has nothing left to do */
#define TAG_PIDFD  ((uint64_t)1) /* low bit of a client pointer: its pidfd fired */

#define SWEEP_MS       1000 /* how soon a client that exec'd is dropped without a request */
#define FDS_PER_CLIENT 5    /* socket, pidfd, pagemap, maps, mem */
#define FDS_FOR_DAEMON 64   /* listener, epoll, memfds being exported, logs, ... */
#define ROOT_RESERVE   16   /* connections only root may take */

static int epoll_add(int epfd, int fd, uint64_t data)
{
    struct epoll_event ev = {.events = EPOLLIN, .data.u64 = data};
    return epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev) ? -errno : 0;
}

/* Binds and listens on path, mode 0660. A live daemon on it: -EADDRINUSE; a stale socket file is
 * replaced. Accepted connections inherit the options: every request carries its sender's
 * credentials, and none can carry descriptors (*rights: the kernel cannot refuse them). */
static int listen_on(const char *path, bool *rights)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    int fd, err;

    if (strlen(path) >= sizeof(sa.sun_path))
        return -ENAMETOOLONG;
    strcpy(sa.sun_path, path);
    fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0)
        return -errno;
    struct stat st;
    if (!lstat(path, &st)) {
        if (!S_ISSOCK(st.st_mode)) {
            err = -EEXIST;
            goto fail;
        }
        int probe = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
        if (probe >= 0 && !connect(probe, (struct sockaddr *)&sa, sizeof(sa))) {
            close(probe);
            err = -EADDRINUSE;
            goto fail;
        }
        if (probe >= 0)
            close(probe);
        unlink(path);
    }
    mode_t old = umask(0117);
    err = bind(fd, (struct sockaddr *)&sa, sizeof(sa)) ? -errno : 0;
    umask(old);
    if (err)
        goto fail;
    int on = 1, off = 0;
    const char *test = getenv("SANPROXY_TEST_PASS_RIGHTS"); /* tests of the fallback only */
    *rights = (test && !strcmp(test, "1")) ||
              setsockopt(fd, SOL_SOCKET, SO_PASSRIGHTS, &off, sizeof(off));
    if (setsockopt(fd, SOL_SOCKET, SO_PASSCRED, &on, sizeof(on)) || chmod(path, 0660) ||
        listen(fd, 128)) {
        err = -errno;
        unlink(path);
        goto fail;
    }
    return fd;
fail:
    close(fd);
    return err;
}

/* Out of descriptors: a pending connection would keep the listener readable and the loop
 * spinning. Stop listening until a client goes away (drop_client resumes). */
static void pause_accepting(struct san_daemon *d, int err)
{
    log_warn("out of descriptors (%s): not accepting until a client leaves", strerror(err));
    epoll_ctl(d->epfd, EPOLL_CTL_DEL, d->lfd, NULL);
    d->accept_paused = true;
}

/* Closes a client connection. The peer is stopped from sending and what it queued is drained
 * first: a Unix socket closed with messages unread resets its peer, whose next recv then fails
 * with ECONNRESET before it reads what we sent last (a refused client would not learn why).
 * Without SO_PASSRIGHTS the queue may also hold passed descriptors whose release could block:
 * they go to the closer thread. Then the socket, empty, is closed here at once. */
static void close_connection(struct san_daemon *d, int fd)
{
    static struct san_msg junk;
    static struct san_proto_sender from;
    size_t len;
    shutdown(fd, SHUT_RDWR);
    while (!san_proto_recv_request(fd, &junk, &len, &from, MSG_DONTWAIT))
        for (unsigned i = 0; i < from.nr_fds; i++) /* only where d->fds_can_arrive */
            san_closer_close(from.fds[i]);
    close(fd);
}

/* Tells a connection it is refused (one error reply, request id 0), then closes it. */
static void refuse(struct san_daemon *d, int fd, int status)
{
    struct san_msg rep;
    struct san_msg_hdr hello = {.opcode = SAN_OP_HELLO};
    san_proto_reply(&rep, &hello, status);
    san_proto_send(fd, &rep, -1, MSG_DONTWAIT);
    close_connection(d, fd);
}

static struct san_uid_usage *usage_of(struct san_daemon *d, uid_t uid)
{
    struct san_uid_usage *u;
    for (u = d->usage; u; u = u->next)
        if (u->uid == uid)
            return u;
    u = calloc(1, sizeof(*u));
    if (u) {
        u->uid = uid;
        u->next = d->usage;
        d->usage = u;
    }
    return u;
}

static void usage_put(struct san_daemon *d, struct san_uid_usage *u)
{
    if (--u->clients)
        return;
    for (struct san_uid_usage **p = &d->usage; *p; p = &(*p)->next) {
        if (*p == u) {
            *p = u->next;
            break;
        }
    }
    free(u);
}

/* Why a new connection of uid is refused, or NULL. */
static const char *admission(const struct san_daemon *d, uid_t uid, const struct san_uid_usage *u)
{
    /* Gone clients whose endpoints linger still hold their descriptors (pidfd, maps...). */
    uint64_t held = d->nr_clients + d->nr_lingering;
    if (held >= d->max_clients)
        return "the daemon's connection limit is reached";
    if (uid != 0 && held + ROOT_RESERVE >= d->max_clients)
        return "the last connections are kept for root";
    if (uid != 0 && d->cfg.limit_uid_connections && u->clients >= d->cfg.limit_uid_connections)
        return "[limits] per_uid_connections is reached for its uid";
    return NULL;
}

static void accept_client(struct san_daemon *d)
{
    struct san_client *c;
    int fd, err;

    fd = accept4(d->lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) {
        if (errno == EMFILE || errno == ENFILE)
            pause_accepting(d, errno);
        else if (errno != EAGAIN && errno != EINTR) {
            log_warn("accept: %s", strerror(errno));
        }
        return;
    }
    c = calloc(1, sizeof(*c));
    if (!c) {
        log_error("out of memory accepting a client");
        refuse(d, fd, -ENOMEM);
        return;
    }
    if ((err = san_identity_take(c, fd))) {
        if (err == -ESRCH)
            log_warn("pid %d exited before its connection was accepted: refused", (int)c->pid);
        else
            log_warn("pid %d: no identity (%s): refused", (int)c->pid, strerror(-err));
        if (err == -EMFILE || err == -ENFILE)
            pause_accepting(d, -err);
        refuse(d, fd, err == -EMFILE || err == -ENFILE ? -ENOBUFS : -EPERM);
        free(c);
        return;
    }
    struct san_uid_usage *u = usage_of(d, c->uid);
    const char *why = u ? admission(d, c->uid, u) : "out of memory";
    if (why) {
        log_warn("pid %d uid %u refused: %s", (int)c->pid, (unsigned)c->uid, why);
        if (u && !u->clients) {
            u->clients = 1;
            usage_put(d, u);
        }
        san_identity_drop(c);
        refuse(d, fd, -ENOBUFS);
        free(c);
        return;
    }
    u->clients++;
    c->usage = u;
    c->d = d;
    c->fd = fd;
    c->id = ++d->next_client_id;
    san_regtab_set_init(&c->mrs, &c->owner);
    c->mrs.account_locked = &u->locked_bytes;
    san_keytab_init(&c->allocs, 0);
    san_keytab_init(&c->nic_objs, 0);
    if (epoll_add(d->epfd, fd, (uint64_t)(uintptr_t)c) ||
        epoll_add(d->epfd, c->pidfd, (uint64_t)(uintptr_t)c | TAG_PIDFD)) {
        log_error("epoll: %s", strerror(errno));
        epoll_ctl(d->epfd, EPOLL_CTL_DEL, fd, NULL);
        usage_put(d, u);
        san_identity_drop(c);
        free(c);
        close_connection(d, fd);
        return;
    }
    c->prev = d->clients.prev;
    c->next = &d->clients;
    d->clients.prev->next = c;
    d->clients.prev = c;
    d->nr_clients++;
    log_debug("client %u connected: pid %d uid %u", c->id, (int)c->pid, (unsigned)c->uid);
}

/* The end of a gone client: what it still holds goes, and it is freed after the batch. */
static void bury_client(struct san_daemon *d, struct san_client *c)
{
    san_daemon_release_client(c);
    san_identity_drop(c);
    usage_put(d, c->usage);
    c->usage = NULL;
    c->next = d->graveyard;
    d->graveyard = c;
    if (d->accept_paused && d->lfd >= 0 && !epoll_add(d->epfd, d->lfd, TAG_LISTEN))
        d->accept_paused = false;
}

/* IRP_MJ_CLEANUP: the client is gone; everything it held is released now, but for endpoints
 * that linger (docs/daemon.md): until the last of them closes, the client keeps what they may
 * use (its registrations, allocations, their charges to its uid) in d->lingering. */
static void drop_client(struct san_daemon *d, struct san_client *c, const char *why)
{
    if (c->dead)
        return;
    c->dead = true;
    epoll_ctl(d->epfd, EPOLL_CTL_DEL, c->fd, NULL);
    epoll_ctl(d->epfd, EPOLL_CTL_DEL, c->pidfd, NULL);
    close_connection(d, c->fd);
    c->fd = -1;
    c->prev->next = c->next;
    c->next->prev = c->prev;
    d->nr_clients--;
    if (!d->stopping && d->cfg.linger_ns && san_daemon_linger_client(c)) {
        log_debug("client %u (pid %d) %s: its connected endpoints linger", c->id, (int)c->pid, why);
        c->linger_deadline = san_now_ns() + d->cfg.linger_ns;
        c->linger_next = d->lingering;
        d->lingering = c;
        d->nr_lingering++;
        return;
    }
    if (c->nr_allocs || c->mrs.registrations)
        log_info("client %u (pid %d) %s: releasing %llu allocations, %llu registrations", c->id,
                 (int)c->pid, why, (unsigned long long)c->nr_allocs,
                 (unsigned long long)c->mrs.registrations);
    else
        log_debug("client %u (pid %d) %s", c->id, (int)c->pid, why);
    bury_client(d, c);
}

/* Closes the lingering endpoints that are over (all of them with all, or at their client's
 * deadline) and buries the clients left with none. */
static void linger_scan(struct san_daemon *d, bool all)
{
    uint64_t now = san_now_ns();
    for (struct san_client **p = &d->lingering; *p;) {
        struct san_client *c = *p;
        if (!san_daemon_linger_step(c, all || now >= c->linger_deadline)) {
            p = &c->linger_next;
            continue;
        }
        *p = c->linger_next;
        d->nr_lingering--;
        log_debug("client %u (pid %d): lingering over", c->id, (int)c->pid);
        bury_client(d, c);
    }
}

static void linger_event(struct san_daemon *d)
{
    uint64_t n;
    if (read(san_nic_linger_fd(d->nic), &n, sizeof(n)) < 0 && errno == EAGAIN)
        return;
    linger_scan(d, false);
}

static void client_readable(struct san_daemon *d, struct san_client *c)
{
    struct san_msg req, rep;
    struct san_proto_sender from;
    size_t len;
    int err, fds[SAN_PROTO_SEND_FDS];
    unsigned nfds = 0;

    err = san_proto_recv_request(c->fd, &req, &len, &from, MSG_DONTWAIT);
    if (err == -EAGAIN)
        return;
    if (err) {
        drop_client(d, c, err == -ECONNRESET ? "disconnected" : "lost");
        return;
    }
    if (from.nr_fds || from.truncated) {
        log_warn("client %u (pid %d): descriptors passed with a request: disconnected", c->id,
                 (int)c->pid);
        for (unsigned i = 0; i < from.nr_fds; i++)
            san_closer_close(from.fds[i]);
        drop_client(d, c, "passed descriptors");
        return;
    }
    /* The program accepted must still be the one asking: after an exec the pid and the socket
     * live on, but its memory, and so everything it registered, is gone. */
    if (!san_identity_current(c)) {
        drop_client(d, c, "exec'd another program");
        return;
    }
    if (!from.has_cred || from.pid != c->pid) {
        log_debug("client %u (pid %d): request written by pid %d refused", c->id, (int)c->pid,
                  from.has_cred ? (int)from.pid : 0);
        san_proto_reply(&rep, &req.hdr, -EPERM);
        if (san_proto_decode(&req, len, false, &err) == SAN_DECODE_GARBAGE) {
            drop_client(d, c, "sent garbage");
            return;
        }
        goto send;
    }
    switch (san_proto_decode(&req, len, false, &err)) {
    case SAN_DECODE_GARBAGE:
        log_warn("client %u (pid %d): garbage on the socket (%zu bytes): disconnected", c->id,
                 (int)c->pid, len);
        drop_client(d, c, "sent garbage");
        return;
    case SAN_DECODE_REJECT:
        log_debug("client %u: request refused: %s", c->id, strerror(-err));
        san_proto_reply(&rep, &req.hdr, err);
        break;
    case SAN_DECODE_OK:
        san_daemon_handle(c, &req, &rep, fds, &nfds);
        break;
    }
send:
    err = san_proto_send_fds(c->fd, &rep, fds, nfds, MSG_DONTWAIT);
    while (nfds)
        close(fds[--nfds]);
    san_daemon_after_reply(d);
    if (err) {
        /* The reply could not go out: -EAGAIN means the client does not read its replies. A
         * failed allocation reply leaves an allocation the client never learnt of; cleanup
         * releases it with the rest. */
        drop_client(d, c, err == -EAGAIN ? "not reading replies" : "unreachable");
    }
}

/* A client's process may exec without a request or an event: look at every one. */
static void sweep(struct san_daemon *d)
{
    uint64_t ticks;
    if (read(d->sweepfd, &ticks, sizeof(ticks)) < 0 && errno == EAGAIN)
        return;
    for (struct san_client *c = d->clients.next, *next; c != &d->clients; c = next) {
        next = c->next;
        if (!san_identity_current(c))
            drop_client(d, c, "exec'd another program");
    }
    linger_scan(d, false); /* deadlines */
}

/* The link thread's news: links up, down, peers restarted. Endpoints across hosts need nothing
 * of the loop here (the link thread resets them when a session ends): the loop logs them. */
static void link_events(struct san_daemon *d)
{
    struct san_link_event ev[16];
    size_t n;
    while ((n = san_link_events(d->link, ev, 16)))
        for (size_t i = 0; i < n; i++)
            log_debug("link %u: %s, peer host_id %016llx%s", ev[i].peer,
                      san_link_state_name(ev[i].state), (unsigned long long)ev[i].host_id,
                      ev[i].restarted ? ", restarted" : "");
}

static void reap(struct san_daemon *d)
{
    while (d->graveyard) {
        struct san_client *c = d->graveyard;
        d->graveyard = c->next;
        free(c);
    }
}

static int setup(struct san_daemon *d, int *sigfd)
{
    struct san_machine_config mc = {.ram_size = d->cfg.ram_size, .nolowmem = d->cfg.nolowmem};
    sigset_t set;
    int err;

    if (d->cfg.socket[0]) {
        strcpy(d->path, d->cfg.socket);
    } else if ((err = san_proto_default_path(d->path, sizeof(d->path)))) {
        log_error("default socket path too long: set [daemon] socket or --socket");
        return err;
    }
    if (getrandom(&d->host_id, sizeof(d->host_id), 0) != sizeof(d->host_id))
        d->host_id = (uint64_t)getpid() << 32 ^ (uint64_t)time(NULL);
    if ((err = san_machine_create(&mc, &d->m))) {
        log_error("machine (ram_size %llu): %s", (unsigned long long)d->cfg.ram_size,
                  strerror(-err));
        return err;
    }
    /* The NIC's DMA adapter (IoGetDmaAdapter with the NIC's DEVICE_DESCRIPTION). */
    struct san_device_description desc = {
        .version = 3,
        .master = true,
        .scatter_gather = d->cfg.scatter_gather,
        .dma32 = d->cfg.dma_address_width <= 32,
        .dma64 = d->cfg.dma_address_width > 32,
        .dma_address_width = d->cfg.dma_address_width,
        .max_length = (uint32_t)d->cfg.max_length,
    };
    uint32_t map_registers = 0;
    if ((err = san_get_dma_adapter(d->m, &desc, &map_registers, &d->adapter))) {
        log_error("NIC DMA adapter (dma_address_width %u, max_length %llu): %s",
                  d->cfg.dma_address_width, (unsigned long long)d->cfg.max_length, strerror(-err));
        return err;
    }
    log_debug("NIC: %u-bit, %s, %u map registers", d->cfg.dma_address_width,
              d->cfg.scatter_gather ? "scatter-gather" : "no scatter-gather", map_registers);
    if ((err = san_regtab_create(d->m, &d->mr))) {
        log_error("registration table: %s", strerror(-err));
        return err;
    }
    struct san_nic_config nc = {.nets = d->cfg.nets,
                                .nr_nets = d->cfg.nr_nets,
                                .backlog_max = 128,
                                .spin_us = 20,
                                .max_length = d->cfg.max_length,
                                .host_id = d->host_id};
    if ((err = san_nic_create(&nc, d->mr, d->adapter, &d->nic))) {
        log_error("NIC: %s", strerror(-err));
        return err;
    }
    if ((err = san_status_create(&d->status)))
        log_warn("status page: %s (clients ask for the networks on a timer instead)",
                 strerror(-err));
    if (d->cfg.link.enabled) {
        struct san_link_params lp = {.cfg = &d->cfg.link,
                                     .host_id = d->host_id,
                                     .nets = d->cfg.nets,
                                     .nr_nets = d->cfg.nr_nets,
                                     .nic = d->nic,
                                     .changes =
                                         d->status.page ? &d->status.page->networks_changes : NULL};
        if ((err = san_link_create(&lp, &d->link))) {
            log_error("links ([link]): %s", strerror(-err));
            return err;
        }
        struct san_nic_xport x;
        san_link_xport(d->link, &x);
        san_nic_set_xport(d->nic, &x); /* endpoints across hosts */
    }
    /* FDS_PER_CLIENT descriptors per client: use all the descriptors we may. */
    struct rlimit nofile;
    if (!getrlimit(RLIMIT_NOFILE, &nofile) && nofile.rlim_cur < nofile.rlim_max) {
        nofile.rlim_cur = nofile.rlim_max;
        setrlimit(RLIMIT_NOFILE, &nofile);
    }
    if (getrlimit(RLIMIT_NOFILE, &nofile))
        nofile.rlim_cur = 1024;
    d->max_clients = nofile.rlim_cur > FDS_FOR_DAEMON + FDS_PER_CLIENT * (ROOT_RESERVE + 1)
                         ? (nofile.rlim_cur - FDS_FOR_DAEMON) / FDS_PER_CLIENT
                         : ROOT_RESERVE + 1;
    /* The daemon's signals are its own. Libraries loaded with libfabric (its PSM providers' support
     * libraries) install handlers from their constructors for SIGINT, SIGTERM and the crash
     * signals, which print a backtrace and exit: the defaults come back, so a crash leaves a core
     * and its signal to whoever supervises the daemon. */
    static const int reset[] = {SIGINT, SIGTERM, SIGILL, SIGABRT, SIGBUS, SIGFPE, SIGSEGV};
    for (size_t i = 0; i < sizeof(reset) / sizeof(reset[0]); i++)
        signal(reset[i], SIG_DFL);
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    sigprocmask(SIG_BLOCK, &set, NULL);
    signal(SIGPIPE, SIG_IGN);
    *sigfd = signalfd(-1, &set, SFD_CLOEXEC | SFD_NONBLOCK);
    d->epfd = epoll_create1(EPOLL_CLOEXEC);
    if (*sigfd < 0 || d->epfd < 0) {
        log_error("signalfd/epoll: %s", strerror(errno));
        return -errno;
    }
    d->lfd = listen_on(d->path, &d->fds_can_arrive);
    if (d->lfd < 0) {
        log_error("socket %s: %s", d->path, strerror(-d->lfd));
        return d->lfd;
    }
    if (d->fds_can_arrive)
        log_info("no SO_PASSRIGHTS: descriptors clients pass are closed on a thread of their own");
    d->sweepfd = timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC | TFD_NONBLOCK);
    struct itimerspec every = {.it_interval = {SWEEP_MS / 1000, SWEEP_MS % 1000 * 1000000},
                               .it_value = {SWEEP_MS / 1000, SWEEP_MS % 1000 * 1000000}};
    if (d->sweepfd < 0 || timerfd_settime(d->sweepfd, 0, &every, NULL)) {
        log_error("timerfd: %s", strerror(errno));
        return -errno;
    }
    if ((err = epoll_add(d->epfd, d->lfd, TAG_LISTEN)) ||
        (err = epoll_add(d->epfd, *sigfd, TAG_SIGNAL)) ||
        (err = epoll_add(d->epfd, d->sweepfd, TAG_SWEEP)) ||
        (err = epoll_add(d->epfd, san_nic_linger_fd(d->nic), TAG_LINGER)) ||
        (d->link && (err = epoll_add(d->epfd, san_link_event_fd(d->link), TAG_LINK)))) {
        log_error("epoll: %s", strerror(-err));
        return err;
    }
    return 0;
}

static void teardown(struct san_daemon *d)
{
    if (d->lfd >= 0) {
        close(d->lfd);
        unlink(d->path);
        d->lfd = -1;
    }
    while (d->clients.next != &d->clients)
        drop_client(d, d->clients.next, "released at shutdown");
    linger_scan(d, true);
    reap(d);
    san_daemon_after_reply(d); /* nothing is left to free; */
    san_daemon_drop_spares(d); /* the spares it made go too */
    if (d->nic)
        san_nic_set_xport(d->nic, NULL); /* before the links go */
    san_link_destroy(d->link);
    san_status_destroy(&d->status);
    san_regtab_destroy(d->mr);
    san_nic_destroy(d->nic);
    if (d->adapter)
        d->adapter->ops->put_dma_adapter(d->adapter);
    san_machine_destroy(d->m);
    if (d->epfd >= 0)
        close(d->epfd);
    if (d->sigfd >= 0)
        close(d->sigfd);
    if (d->sweepfd >= 0)
        close(d->sweepfd);
}

int san_daemon_run(const struct san_daemon_config *cfg, int ready_fd, unsigned spin_us)
{
    struct san_daemon d = {.cfg = *cfg,
                           .epfd = -1,
                           .lfd = -1,
                           .sigfd = -1,
                           .sweepfd = -1,
                           .status = {.fd = -1},
                           .spare_memfd = {-1, -1, -1, -1},
                           .spin_ns = (uint64_t)spin_us * 1000};
    struct epoll_event ev[64];

    san_config_resolve(&d.cfg);
    d.clients.next = d.clients.prev = &d.clients;
    if (setup(&d, &d.sigfd)) {
        teardown(&d);
        return 1;
    }
    const struct san_daemon_config *k = &d.cfg;
    log_info(
        "ready on %s: host_id %016llx, ram %llu MiB%s, limits per client: locked %llu KiB, %llu "
        "registrations, %llu allocations, allocated %llu KiB; per uid: locked %llu KiB, "
        "allocated %llu KiB, %llu connections; %llu clients",
        d.path, (unsigned long long)d.host_id, (unsigned long long)(k->ram_size >> 20),
        k->nolowmem ? " (nolowmem)" : "", (unsigned long long)(k->limit_locked_bytes >> 10),
        (unsigned long long)k->limit_registrations, (unsigned long long)k->limit_allocations,
        (unsigned long long)(k->limit_allocated_bytes >> 10),
        (unsigned long long)(k->limit_uid_locked_bytes >> 10),
        (unsigned long long)(k->limit_uid_allocated >> 10),
        (unsigned long long)k->limit_uid_connections, (unsigned long long)d.max_clients);
    if (ready_fd >= 0) {
        ssize_t w = write(ready_fd, "ready\n", 6);
        (void)w;
        close(ready_fd);
    }
    while (!d.stopping) {
        /* Spin briefly after a request before sleeping: a client's next request (deregister
         * after register, the next call of a burst) then costs no wake-up, and the daemon works
         * on its own core while the client does its half (mlock) on the other. */
        int timeout = -1;
        if (d.spin_ns && san_now_ns() - d.last_request_ns < d.spin_ns)
            timeout = 0;
        int n = epoll_wait(d.epfd, ev, 64, timeout);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            log_error("epoll_wait: %s", strerror(errno));
            break;
        }
        for (int i = 0; i < n && !d.stopping; i++) {
            uint64_t data = ev[i].data.u64;
            if (data == TAG_LISTEN) {
                accept_client(&d);
            } else if (data == TAG_SWEEP) {
                sweep(&d);
            } else if (data == TAG_LINK) {
                link_events(&d);
            } else if (data == TAG_LINGER) {
                linger_event(&d);
            } else if (data == TAG_SIGNAL) {
                struct signalfd_siginfo si;
                if (read(d.sigfd, &si, sizeof(si)) == sizeof(si)) {
                    log_info("signal %u: stopping", si.ssi_signo);
                    d.stopping = true;
                }
            } else {
                struct san_client *c = (struct san_client *)(uintptr_t)(data & ~TAG_PIDFD);
                if (c->dead)
                    continue;
                if (data & TAG_PIDFD)
                    drop_client(&d, c, "exited");
                else if (ev[i].events & EPOLLIN) {
                    client_readable(&d, c);
                    d.last_request_ns = san_now_ns();
                } else
                    drop_client(&d, c, "hung up");
            }
        }
        reap(&d);
    }
    teardown(&d);
    log_info("stopped");
    return d.stopping ? 0 : 1;
}
