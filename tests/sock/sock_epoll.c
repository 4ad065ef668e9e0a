/* epoll, ppoll and pselect on SAN sockets, with plain socket calls (run under sanrun by
 * tests/integration/test_sock_epoll.c).
 *
 *   sock_epoll   listens on 127.0.0.1 port 0 and starts a peer process (sock_epoll peer PORT)
 *                that connects to it and obeys one-byte commands: 'w' writes 1000 bytes, 'c' shuts
 * its writing down, 'n' opens one more connection and writes 10 bytes on it. Then, step by step:
 *                listener readiness (edge-triggered, reported again after accept), a pipe in the
 *                same set, level-triggered, edge-triggered, EPOLLONESHOT, EPOLLOUT, both kinds in
 *                one answer, a dup of the epoll descriptor, the kernel's errors, two threads on
 *                one epoll descriptor (a one-shot event goes to one of them; a member added
 *                while a thread waits wakes it), a closed member leaving the set, ppoll, pselect,
 *                epoll_pwait and epoll_pwait2 with a signal mask (a pending signal the mask
 *                unblocks interrupts the wait at once; one it keeps blocked does not), fork (the
 *                child's inherited set has none of the parent's SAN members; the parent's set
 *                goes on), EOF with
 *                EPOLLRDHUP, and a peer killed (EPOLLERR|EPOLLHUP). Prints "ok san=N" (N: how many
 *                accepted connections the kernel sees unconnected, i.e. were SAN sockets). */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/select.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define CHECK(c)                                                                                   \
    do {                                                                                           \
        if (!(c)) {                                                                                \
            fprintf(stderr, "sock_epoll:%d: %s failed (errno %s)\n", __LINE__, #c,                 \
                    strerror(errno));                                                              \
            exit(1);                                                                               \
        }                                                                                          \
    } while (0)

static struct sockaddr_in lsn_addr;
static int san_count;

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void msleep(int ms)
{
    struct timespec ts = {ms / 1000, ms % 1000 * 1000000L};
    nanosleep(&ts, NULL);
}

static int dial(void)
{
    int s = socket(AF_INET, SOCK_STREAM, 0);
    CHECK(s >= 0);
    CHECK(connect(s, (struct sockaddr *)&lsn_addr, sizeof(lsn_addr)) == 0);
    return s;
}

static void peer(void)
{
    int c = dial(), extra[8], ne = 0;
    char buf[1000];
    memset(buf, 'x', sizeof(buf));
    for (;;) {
        char cmd;
        ssize_t r = read(c, &cmd, 1);
        if (r <= 0)
            _exit(r == 0 ? 0 : 3);
        if (cmd == 'w')
            CHECK(write(c, buf, sizeof(buf)) == (ssize_t)sizeof(buf));
        else if (cmd == 'c')
            CHECK(shutdown(c, SHUT_WR) == 0);
        else if (cmd == 'n' && ne < 8) {
            extra[ne] = dial();
            CHECK(write(extra[ne], buf, 10) == 10);
            ne++;
        }
    }
}

static void send_cmd(int c, char cmd)
{
    CHECK(write(c, &cmd, 1) == 1);
}

/* Reads exactly n bytes from the non-blocking socket c. */
static void read_exact(int c, size_t n)
{
    char buf[4096];
    while (n) {
        ssize_t r = read(c, buf, n < sizeof(buf) ? n : sizeof(buf));
        if (r < 0 && errno == EAGAIN) {
            struct pollfd p = {.fd = c, .events = POLLIN};
            CHECK(poll(&p, 1, 5000) == 1);
            continue;
        }
        CHECK(r > 0);
        n -= (size_t)r;
    }
}

/* One epoll_wait; the events of the member tagged tag (0 if not reported). */
static uint32_t wait_tag(int ep, int timeout, uint64_t tag, int *count)
{
    struct epoll_event ev[8];
    int n = epoll_wait(ep, ev, 8, timeout);
    CHECK(n >= 0);
    uint32_t got = 0;
    for (int i = 0; i < n; i++)
        if (ev[i].data.u64 == tag)
            got |= ev[i].events;
    if (count)
        *count = n;
    return got;
}

static void add(int ep, int op, int fd, uint32_t events, uint64_t tag)
{
    struct epoll_event ev = {.events = events, .data.u64 = tag};
    CHECK(epoll_ctl(ep, op, fd, &ev) == 0);
}

static int ctl_err(int ep, int op, int fd, uint32_t events)
{
    struct epoll_event ev = {.events = events};
    return epoll_ctl(ep, op, fd, &ev) == 0 ? 0 : errno;
}

/* The kernel sees a SAN socket's placeholder unconnected. */
static int accept_one(int lsn)
{
    int c;
    for (int i = 0; (c = accept4(lsn, NULL, NULL, SOCK_NONBLOCK)) < 0 && errno == EAGAIN; i++) {
        CHECK(i < 500);
        msleep(10);
    }
    CHECK(c >= 0);
    struct sockaddr_storage ss;
    socklen_t len = sizeof(ss);
    if (syscall(SYS_getpeername, c, &ss, &len) < 0 && errno == ENOTCONN)
        san_count++;
    return c;
}

struct waiter {
    int ep, timeout, count;
    uint64_t tag;
    uint32_t got;
    int64_t took;
};

/* Waits with epoll_pwait2: ThreadSanitizer intercepts epoll_wait itself and ignores the locks
 * taken inside its blocking interceptors (the switch's, here), not epoll_pwait2's. */
static void *wait_thread(void *arg)
{
    struct waiter *w = arg;
    int64_t t0 = now_ms();
    struct epoll_event ev[8];
    struct timespec to = {w->timeout / 1000, w->timeout % 1000 * 1000000L};
    int n = epoll_pwait2(w->ep, ev, 8, &to, NULL);
    CHECK(n >= 0);
    w->count = n;
    w->got = 0;
    for (int i = 0; i < n; i++)
        if (ev[i].data.u64 == w->tag)
            w->got |= ev[i].events;
    w->took = now_ms() - t0;
    return NULL;
}

/* glibc declares it only under _FORTIFY_SOURCE. */
int __ppoll_chk(struct pollfd *fds, nfds_t n, const struct timespec *to, const sigset_t *mask,
                size_t fdslen);

static volatile sig_atomic_t signals;

static void on_usr1(int sig)
{
    (void)sig;
    signals++;
}

/* A wait with a signal mask: kind 0 ppoll, 1 pselect, 2 epoll_pwait, 3 epoll_pwait2. c is a SAN
 * socket with nothing to read. A pending SIGUSR1 the mask unblocks ends the wait at once with
 * EINTR; one the mask keeps blocked leaves it to its timeout. */
static void masked_wait(int kind, int c, int ep)
{
    sigset_t blocked, open;
    sigemptyset(&blocked);
    sigaddset(&blocked, SIGUSR1);
    CHECK(pthread_sigmask(SIG_BLOCK, &blocked, &open) == 0);
    sigdelset(&open, SIGUSR1);
    for (int pass = 0; pass < 2; pass++) {
        const sigset_t *mask = pass == 0 ? &open : &blocked;
        int before = signals;
        raise(SIGUSR1); /* pending: blocked */
        struct timespec to = {pass == 0 ? 3 : 0, pass == 0 ? 0 : 200000000};
        int64_t t0 = now_ms();
        int r;
        if (kind == 0) {
            struct pollfd p = {.fd = c, .events = POLLIN};
            r = ppoll(&p, 1, &to, mask);
        } else if (kind == 1) {
            fd_set rs;
            FD_ZERO(&rs);
            FD_SET(c, &rs);
            r = pselect(c + 1, &rs, NULL, NULL, &to, mask);
        } else {
            struct epoll_event ev[4];
            r = kind == 2
                    ? epoll_pwait(ep, ev, 4, (int)(to.tv_sec * 1000 + to.tv_nsec / 1000000), mask)
                    : epoll_pwait2(ep, ev, 4, &to, mask);
        }
        int e = errno;
        int64_t took = now_ms() - t0;
        if (pass == 0) {
            if (!(r == -1 && e == EINTR && signals == before + 1 && took < 1500))
                fprintf(stderr, "kind %d: r=%d errno=%d signals=%d took=%lld\n", kind, r, e,
                        signals - before, (long long)took);
            CHECK(r == -1 && e == EINTR && signals == before + 1 && took < 1500);
        } else {
            CHECK(r == 0 && signals == before && took >= 150);
            int sig;
            CHECK(sigwait(&blocked, &sig) == 0 && sig == SIGUSR1); /* consume it */
        }
    }
    CHECK(pthread_sigmask(SIG_UNBLOCK, &blocked, NULL) == 0);
}

int main(int argc, char **argv)
{
    if (argc == 3 && !strcmp(argv[1], "peer")) {
        lsn_addr = (struct sockaddr_in){.sin_family = AF_INET,
                                        .sin_addr.s_addr = htonl(0x7f000001),
                                        .sin_port = htons((uint16_t)atoi(argv[2]))};
        peer();
    }
    setvbuf(stdout, NULL, _IOLBF, 0);
    signal(SIGPIPE, SIG_IGN);
    struct sigaction sa = {.sa_handler = on_usr1};
    sigaction(SIGUSR1, &sa, NULL);

    int lsn = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    CHECK(lsn >= 0);
    lsn_addr = (struct sockaddr_in){.sin_family = AF_INET, .sin_addr.s_addr = htonl(0x7f000001)};
    socklen_t al = sizeof(lsn_addr);
    CHECK(bind(lsn, (struct sockaddr *)&lsn_addr, sizeof(lsn_addr)) == 0);
    CHECK(listen(lsn, 16) == 0);
    CHECK(getsockname(lsn, (struct sockaddr *)&lsn_addr, &al) == 0);
    int pp[2];
    CHECK(pipe2(pp, O_NONBLOCK) == 0);

    /* Listener readiness, edge-triggered, in a set with a pipe. */
    int ep = epoll_create1(EPOLL_CLOEXEC);
    CHECK(ep >= 0);
    add(ep, EPOLL_CTL_ADD, lsn, EPOLLIN | EPOLLET, 1);
    add(ep, EPOLL_CTL_ADD, pp[0], EPOLLIN, 2);
    int n;
    CHECK(wait_tag(ep, 100, 1, &n) == 0 && n == 0);
    pid_t child = fork();
    CHECK(child >= 0);
    if (child == 0) {
        /* A program of its own (exec), as a peer would be. */
        char port[16];
        snprintf(port, sizeof(port), "%d", ntohs(lsn_addr.sin_port));
        execl("/proc/self/exe", "sock_epoll", "peer", port, (char *)NULL);
        _exit(127);
    }
    CHECK(wait_tag(ep, 5000, 1, NULL) & EPOLLIN);
    int c = accept_one(lsn);
    CHECK(accept(lsn, NULL, NULL) < 0 && errno == EAGAIN);
    printf("listener: ok\n");

    /* A kernel member among SAN ones. */
    CHECK(write(pp[1], "p", 1) == 1);
    CHECK(wait_tag(ep, 2000, 2, NULL) == EPOLLIN);
    char pb;
    CHECK(read(pp[0], &pb, 1) == 1);

    /* Level-triggered: reported while anything is left to read. */
    add(ep, EPOLL_CTL_ADD, c, EPOLLIN, 3);
    CHECK(wait_tag(ep, 100, 3, &n) == 0 && n == 0);
    send_cmd(c, 'w');
    CHECK(wait_tag(ep, 5000, 3, NULL) == EPOLLIN);
    read_exact(c, 500);
    CHECK(wait_tag(ep, 0, 3, NULL) == EPOLLIN);
    read_exact(c, 500);
    CHECK(wait_tag(ep, 200, 3, NULL) == 0);
    printf("level-triggered: ok\n");

    /* Edge-triggered: once per change, however much is left to read. */
    add(ep, EPOLL_CTL_MOD, c, EPOLLIN | EPOLLET, 3);
    send_cmd(c, 'w');
    CHECK(wait_tag(ep, 5000, 3, NULL) == EPOLLIN);
    msleep(300);
    wait_tag(ep, 0, 3, NULL); /* whatever completed after that report (our send's completion) */
    CHECK(wait_tag(ep, 300, 3, NULL) == 0);
    send_cmd(c, 'w');
    CHECK(wait_tag(ep, 5000, 3, NULL) == EPOLLIN);
    read_exact(c, 2000);
    printf("edge-triggered: ok\n");

    /* EPOLLONESHOT: disarmed once reported, until MOD. */
    add(ep, EPOLL_CTL_MOD, c, EPOLLIN | EPOLLONESHOT, 3);
    send_cmd(c, 'w');
    CHECK(wait_tag(ep, 5000, 3, NULL) == EPOLLIN);
    CHECK(wait_tag(ep, 200, 3, NULL) == 0);
    add(ep, EPOLL_CTL_MOD, c, EPOLLIN, 3);
    CHECK(wait_tag(ep, 0, 3, NULL) == EPOLLIN);
    /* Both kinds in one answer, and through a dup of the epoll descriptor. */
    CHECK(write(pp[1], "p", 1) == 1);
    int ep_dup = dup(ep);
    CHECK(ep_dup >= 0);
    struct epoll_event evs[8];
    n = epoll_wait(ep_dup, evs, 8, 2000);
    CHECK(n == 2 && evs[0].data.u64 + evs[1].data.u64 == 5);
    CHECK(close(ep_dup) == 0);
    CHECK(read(pp[0], &pb, 1) == 1);
    read_exact(c, 1000);
    add(ep, EPOLL_CTL_MOD, c, EPOLLOUT, 3);
    CHECK(wait_tag(ep, 0, 3, NULL) == EPOLLOUT);
    printf("oneshot, mixed, out: ok\n");

    /* The kernel's errors. */
    struct epoll_event bad = {.events = EPOLLIN};
    CHECK(ctl_err(ep, EPOLL_CTL_ADD, c, EPOLLIN) == EEXIST);
    CHECK(ctl_err(ep, EPOLL_CTL_MOD, pp[1], EPOLLIN) == ENOENT);
    CHECK(ctl_err(ep, 77, c, EPOLLIN) == EINVAL);
    CHECK(ctl_err(ep, EPOLL_CTL_MOD, c, EPOLLIN | EPOLLEXCLUSIVE) == EINVAL);
    CHECK(epoll_ctl(ep, EPOLL_CTL_ADD, c, NULL) < 0 && errno == EFAULT);
    CHECK(ctl_err(pp[0], EPOLL_CTL_ADD, c, EPOLLIN) == EINVAL);
    CHECK(ctl_err(1000, EPOLL_CTL_ADD, c, EPOLLIN) == EBADF);
    int file = open("/etc/passwd", O_RDONLY | O_CLOEXEC); /* a regular file: not pollable */
    CHECK(file >= 0 && ctl_err(ep, EPOLL_CTL_ADD, file, EPOLLIN) == EPERM && close(file) == 0);
    CHECK(epoll_wait(ep, evs, 0, 0) < 0 && errno == EINVAL);
    CHECK(epoll_wait(c, evs, 8, 0) < 0 && errno == EINVAL);
    int ep2 = epoll_create1(0);
    CHECK(ep2 >= 0);
    CHECK(ctl_err(ep2, EPOLL_CTL_DEL, c, 0) == ENOENT);
    CHECK(ctl_err(ep2, EPOLL_CTL_ADD, c, EPOLLIN | EPOLLEXCLUSIVE | EPOLLONESHOT) == EINVAL);
    CHECK(ctl_err(ep2, EPOLL_CTL_ADD, c, EPOLLIN | EPOLLEXCLUSIVE) == 0);
    CHECK(ctl_err(ep2, EPOLL_CTL_MOD, c, EPOLLIN) == EINVAL); /* an exclusive member */
    CHECK(epoll_ctl(ep2, EPOLL_CTL_DEL, c, &bad) == 0);
    CHECK(ctl_err(ep2, EPOLL_CTL_DEL, c, 0) == ENOENT);
    printf("errors: ok\n");

    /* Two threads on one epoll descriptor: a one-shot event goes to one of them. */
    add(ep2, EPOLL_CTL_ADD, c, EPOLLIN | EPOLLONESHOT, 7);
    struct waiter w[2] = {{.ep = ep2, .timeout = 1500, .tag = 7},
                          {.ep = ep2, .timeout = 1500, .tag = 7}};
    pthread_t th[2];
    for (int i = 0; i < 2; i++)
        CHECK(pthread_create(&th[i], NULL, wait_thread, &w[i]) == 0);
    msleep(100);
    send_cmd(c, 'w');
    for (int i = 0; i < 2; i++)
        pthread_join(th[i], NULL);
    CHECK(w[0].count + w[1].count == 1 && (w[0].got | w[1].got) == EPOLLIN);
    read_exact(c, 1000);
    /* A member added while a thread waits wakes it. */
    CHECK(close(ep2) == 0);
    int ep3 = epoll_create1(0);
    CHECK(ep3 >= 0);
    add(ep3, EPOLL_CTL_ADD, pp[0], EPOLLIN, 2);
    send_cmd(c, 'w');
    struct pollfd pc = {.fd = c, .events = POLLIN};
    CHECK(poll(&pc, 1, 5000) == 1);
    struct waiter w3 = {.ep = ep3, .timeout = 4000, .tag = 9};
    CHECK(pthread_create(&th[0], NULL, wait_thread, &w3) == 0);
    msleep(150);
    add(ep3, EPOLL_CTL_ADD, c, EPOLLIN, 9);
    pthread_join(th[0], NULL);
    CHECK(w3.got == EPOLLIN && w3.took < 2000);
    /* Removed: not reported, though readable. */
    CHECK(epoll_ctl(ep3, EPOLL_CTL_DEL, c, NULL) == 0);
    CHECK(wait_tag(ep3, 100, 9, &n) == 0 && n == 0);
    read_exact(c, 1000);
    CHECK(close(ep3) == 0);
    printf("threads: ok\n");

    /* A closed member leaves the set; the next socket under its number is not in it. */
    add(ep, EPOLL_CTL_MOD, c, EPOLLIN, 3); /* nothing to read: quiet */
    send_cmd(c, 'n');
    CHECK(wait_tag(ep, 5000, 1, NULL) & EPOLLIN); /* edge-triggered: accepted since reported */
    int d = accept_one(lsn);
    add(ep, EPOLL_CTL_ADD, d, EPOLLIN, 20);
    CHECK(wait_tag(ep, 5000, 20, NULL) == EPOLLIN);
    CHECK(close(d) == 0);
    send_cmd(c, 'n');
    CHECK(wait_tag(ep, 5000, 1, NULL) & EPOLLIN);
    int d2 = accept_one(lsn);
    CHECK(poll(&(struct pollfd){.fd = d2, .events = POLLIN}, 1, 5000) == 1);
    CHECK(wait_tag(ep, 200, 20, NULL) == 0);
    read_exact(d2, 10);
    printf("closed member: ok (old fd %d, new %d)\n", d, d2);

    /* Signal masks: ppoll, pselect, epoll_pwait, epoll_pwait2. */
    CHECK(ctl_err(ep, EPOLL_CTL_DEL, pp[0], 0) == 0);
    CHECK(ctl_err(ep, EPOLL_CTL_DEL, lsn, 0) == 0);
    for (int kind = 0; kind < 4; kind++)
        masked_wait(kind, c, ep);
    send_cmd(c, 'w');
    struct timespec two = {2, 0};
    struct pollfd p = {.fd = c, .events = POLLIN};
    CHECK(ppoll(&p, 1, &two, NULL) == 1 && p.revents == POLLIN);
    /* glibc's fortified ppoll (what _FORTIFY_SOURCE makes of a ppoll) is the switch's too. */
    p.revents = 0;
    CHECK(__ppoll_chk(&p, 1, &two, NULL, sizeof(p)) == 1 && p.revents == POLLIN);
    fd_set rs;
    FD_ZERO(&rs);
    FD_SET(c, &rs);
    CHECK(pselect(c + 1, &rs, NULL, NULL, &two, NULL) == 1 && FD_ISSET(c, &rs));
    CHECK(epoll_pwait2(ep, evs, 8, &two, NULL) == 1 && evs[0].events == EPOLLIN);
    read_exact(c, 1000);
    printf("signal masks: ok\n");

    /* fork: the child's inherited set has none of the parent's SAN members (their connections
     * are dead there); one it adds itself is in a set of its own and reports the dead connection;
     * the parent's set goes on. */
    send_cmd(c, 'w');
    CHECK(poll(&p, 1, 5000) == 1);
    pid_t k = fork();
    CHECK(k >= 0);
    if (k == 0) {
        int code = 0;
        if (wait_tag(ep, 100, 3, &n) != 0 || n != 0)
            code = 1;
        else if (ctl_err(ep, EPOLL_CTL_ADD, c, EPOLLIN) != 0)
            code = 2;
        else if ((wait_tag(ep, 1000, 0, NULL) & (EPOLLERR | EPOLLHUP)) != (EPOLLERR | EPOLLHUP))
            code = 3;
        _exit(code);
    }
    CHECK(waitpid(k, &n, 0) == k && WIFEXITED(n) && WEXITSTATUS(n) == 0);
    CHECK(wait_tag(ep, 2000, 3, NULL) == EPOLLIN);
    read_exact(c, 1000);
    printf("fork: ok\n");

    /* End of file: EPOLLRDHUP (the peer shut its writing down). */
    add(ep, EPOLL_CTL_MOD, c, EPOLLIN | EPOLLRDHUP, 3);
    send_cmd(c, 'c');
    CHECK(wait_tag(ep, 5000, 3, NULL) == (EPOLLIN | EPOLLRDHUP));
    CHECK(read(c, &pb, 1) == 0);
    /* A peer killed with data it never read: its connection is reset, as TCP's (with nothing
     * unread it would end in EOF: test_sock_close). */
    CHECK(epoll_ctl(ep, EPOLL_CTL_DEL, c, NULL) == 0);
    add(ep, EPOLL_CTL_ADD, d2, EPOLLIN, 21);
    CHECK(wait_tag(ep, 100, 21, NULL) == 0);
    CHECK(write(d2, "x", 1) == 1);
    kill(child, SIGKILL);
    int st;
    waitpid(child, &st, 0);
    uint32_t got = wait_tag(ep, 5000, 21, NULL);
    CHECK((got & (EPOLLERR | EPOLLHUP)) == (EPOLLERR | EPOLLHUP));
    printf("eof, reset: ok\n");
    CHECK(close(d2) == 0 && close(c) == 0 && close(lsn) == 0 && close(ep) == 0);
    CHECK(close(pp[0]) == 0 && close(pp[1]) == 0);
    printf("ok san=%d\n", san_count);
    return 0;
}
