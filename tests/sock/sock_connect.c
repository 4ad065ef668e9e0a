/* Non-blocking connect and an accept that never waits, as a plain socket program: run under sanrun
 * (over the SAN) and without it (the kernel's TCP: the expectations are TCP's). Driven by
 * tests/integration/test_sock_connect.c.
 *   server echo [ADDR]          accepts one connection (on ADDR, default 127.0.0.1), echoes it
 *                               until EOF
 *   client nb HOST PORT MUX     non-blocking connect: EINPROGRESS, writable by MUX (poll, select,
 *                               epoll), SO_ERROR 0, connect again (0 then EISCONN), 100000 bytes
 *                               echoed and checked
 *   client refused HOST PORT MUX  the same to a port nobody listens on: writable, SO_ERROR
 *                               ECONNREFUSED, once
 *   server idle                 listens and never accepts until stdin closes
 *   client late HOST PORT MUX   a non-blocking connect to it: with SANSOCK_CONNECT_TIMEOUT_MS
 *                               short, the SAN connect times out and the kernel's completes it
 *                               (the kernel's backlog): EALREADY and getpeername ENOTCONN
 *                               meanwhile, writable, SO_ERROR 0, getpeername
 *   client arrive HOST PORT     a blocking connect: "ok arrive ms=T" once it returned
 *   server order                accepts ORDER_N connections, then reads one byte from each in
 *                               the order accepted: byte i on the i-th ("ok order"), closes them
 *   client order HOST PORT      connects ORDER_N times one after the other (blocking), writing
 *                               byte i on the i-th as soon as it is connected, then waits for
 *                               each one's end of file ("ok order")
 *   server accept [MUX]         a non-blocking listener (waited on by poll or epoll): reads "go" on
 * stdin, then one accept4 (EAGAIN, timed), prints "ready", then takes the first connection that
 * completes (poll, accept4) and reads "hello" from it */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/select.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static const char *role = "?";
#define FAIL(...)                                                                                  \
    do {                                                                                           \
        fprintf(stderr, "sock_connect %s:%d: ", role, __LINE__);                                   \
        fprintf(stderr, __VA_ARGS__);                                                              \
        fprintf(stderr, " (errno %s)\n", strerror(errno));                                         \
        printf("fail\n");                                                                          \
        exit(1);                                                                                   \
    } while (0)

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

/* Waits until s is writable by mux: the events seen (poll bits). */
static short wait_writable(int s, const char *mux, int ms)
{
    if (!strcmp(mux, "poll")) {
        struct pollfd p = {.fd = s, .events = POLLOUT};
        if (poll(&p, 1, ms) != 1)
            FAIL("poll: not writable in %d ms", ms);
        return p.revents;
    }
    if (!strcmp(mux, "select")) {
        fd_set w, x;
        FD_ZERO(&w);
        FD_ZERO(&x);
        FD_SET(s, &w);
        FD_SET(s, &x);
        struct timeval tv = {.tv_sec = ms / 1000, .tv_usec = ms % 1000 * 1000};
        if (select(s + 1, NULL, &w, &x, &tv) < 1 || !FD_ISSET(s, &w))
            FAIL("select: not writable in %d ms", ms);
        return POLLOUT;
    }
    int ep = epoll_create1(0);
    struct epoll_event ev = {.events = EPOLLOUT, .data.fd = s}, got;
    if (ep < 0 || epoll_ctl(ep, EPOLL_CTL_ADD, s, &ev))
        FAIL("epoll_ctl");
    if (epoll_wait(ep, &got, 1, ms) != 1 || got.data.fd != s)
        FAIL("epoll: not writable in %d ms", ms);
    /* The program's later epoll_ctl on the member works: MOD, then DEL. */
    ev.events = EPOLLIN;
    if (epoll_ctl(ep, EPOLL_CTL_MOD, s, &ev) || epoll_ctl(ep, EPOLL_CTL_DEL, s, NULL))
        FAIL("epoll_ctl MOD/DEL after the connect");
    close(ep);
    return (short)got.events;
}

static int so_error(int s)
{
    int e = -1;
    socklen_t l = sizeof(e);
    if (getsockopt(s, SOL_SOCKET, SO_ERROR, &e, &l))
        FAIL("getsockopt SO_ERROR");
    return e;
}

/* connect on a non-blocking socket: whether it was EINPROGRESS (else it succeeded at once). */
static bool start_connect(int s, const char *host, int port, bool refused_ok)
{
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    inet_pton(AF_INET, host, &sa.sin_addr);
    if (!connect(s, (struct sockaddr *)&sa, sizeof(sa)))
        return false;
    if (errno == EINPROGRESS)
        return true;
    if (refused_ok && errno == ECONNREFUSED)
        return false;
    FAIL("connect");
}

static int again(int s, const char *host, int port)
{
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    inet_pton(AF_INET, host, &sa.sin_addr);
    return connect(s, (struct sockaddr *)&sa, sizeof(sa)) ? errno : 0;
}

static void nb_client(const char *host, int port, const char *mux)
{
    int s = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    if (s < 0)
        FAIL("socket");
    bool inprogress = start_connect(s, host, port, false);
    int a = inprogress ? again(s, host, port) : EISCONN;
    /* Under way: EALREADY; done meanwhile: 0 (Linux's first answer after completion). */
    if (a != EALREADY && a != 0)
        FAIL("connect again while connecting: %s", strerror(a));
    short ev = wait_writable(s, mux, 10000);
    if (ev & (POLLERR | POLLHUP))
        FAIL("writable with error bits %#x", ev);
    int e = so_error(s);
    if (e)
        FAIL("SO_ERROR %s", strerror(e));
    int a2 = again(s, host, port);
    if (a == EALREADY && a2 != 0 && a2 != EISCONN)
        FAIL("connect again after completion: %s", strerror(a2));
    if (again(s, host, port) != EISCONN)
        FAIL("connect a third time: not EISCONN");
    /* Data both ways: 100000 bytes written as the socket allows, the echo read and checked. */
    enum { LEN = 100000 };
    static uint8_t out[LEN], in[LEN];
    for (size_t i = 0; i < LEN; i++)
        out[i] = (uint8_t)(i * 7 + 3);
    size_t sent = 0, got = 0;
    while (got < LEN) {
        struct pollfd p = {.fd = s, .events = POLLIN | (sent < LEN ? POLLOUT : 0)};
        if (poll(&p, 1, 10000) != 1)
            FAIL("no progress: sent %zu got %zu", sent, got);
        if ((p.revents & POLLOUT) && sent < LEN) {
            ssize_t n = send(s, out + sent, LEN - sent, 0);
            if (n < 0 && errno != EAGAIN)
                FAIL("send");
            sent += n > 0 ? (size_t)n : 0;
        }
        if (p.revents & POLLIN) {
            ssize_t n = recv(s, in + got, LEN - got, 0);
            if (n <= 0 && !(n < 0 && errno == EAGAIN))
                FAIL("recv");
            got += n > 0 ? (size_t)n : 0;
        }
    }
    if (memcmp(in, out, LEN))
        FAIL("echo differs");
    close(s);
    printf("ok nb %s inprogress=%d again=%s\n", mux, inprogress, a ? "EALREADY" : "0");
}

static void refused_client(const char *host, int port, const char *mux)
{
    int s = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    if (s < 0)
        FAIL("socket");
    bool inprogress = start_connect(s, host, port, true);
    if (inprogress) {
        short ev = wait_writable(s, mux, 10000);
        if (strcmp(mux, "select") && !(ev & POLLERR))
            FAIL("writable without POLLERR: %#x", ev);
        int e = so_error(s);
        if (e != ECONNREFUSED)
            FAIL("SO_ERROR %s, want ECONNREFUSED", strerror(e));
        if (so_error(s))
            FAIL("SO_ERROR reported twice");
    }
    close(s);
    printf("ok refused %s inprogress=%d\n", mux, inprogress);
}

static const char *bind_addr = "127.0.0.1";

static int listen_on(int flags, int backlog)
{
    struct sockaddr_in sa = {.sin_family = AF_INET};
    if (inet_pton(AF_INET, bind_addr, &sa.sin_addr) != 1)
        FAIL("address %s", bind_addr);
    int l = socket(AF_INET, SOCK_STREAM | flags, 0);
    socklen_t len = sizeof(sa);
    if (l < 0 || bind(l, (struct sockaddr *)&sa, sizeof(sa)) || listen(l, backlog) ||
        getsockname(l, (struct sockaddr *)&sa, &len))
        FAIL("listen");
    printf("port %d\n", ntohs(sa.sin_port));
    fflush(stdout);
    return l;
}

/* Accept order: the connections of one client that connects one after the other come out of
 * accept in the order its connects returned, as from TCP's backlog. */
#define ORDER_N 16

static void order_server(void)
{
    int l = listen_on(0, ORDER_N);
    int s[ORDER_N];
    for (int i = 0; i < ORDER_N; i++)
        if ((s[i] = accept(l, NULL, NULL)) < 0)
            FAIL("accept %d", i);
    for (int i = 0; i < ORDER_N; i++) {
        unsigned char b;
        if (read(s[i], &b, 1) != 1)
            FAIL("read from the connection accepted %d-th", i);
        if (b != i)
            FAIL("the connection accepted %d-th was the client's %d-th", i, b);
    }
    for (int i = 0; i < ORDER_N; i++)
        close(s[i]);
    close(l);
    printf("ok order\n");
}

static void order_client(const char *host, int port)
{
    int s[ORDER_N];
    for (int i = 0; i < ORDER_N; i++) {
        s[i] = socket(AF_INET, SOCK_STREAM, 0);
        unsigned char b = (unsigned char)i;
        if (s[i] < 0 || start_connect(s[i], host, port, false) || write(s[i], &b, 1) != 1)
            FAIL("connection %d", i);
    }
    for (int i = 0; i < ORDER_N; i++) {
        char c;
        if (read(s[i], &c, 1) != 0)
            FAIL("connection %d: no end of file", i);
        close(s[i]);
    }
    printf("ok order\n");
}

static void echo_server(void)
{
    int l = listen_on(0, 4);
    int s = accept(l, NULL, NULL);
    if (s < 0)
        FAIL("accept");
    char buf[65536];
    ssize_t n;
    while ((n = read(s, buf, sizeof(buf))) > 0)
        for (ssize_t off = 0; off < n;) {
            ssize_t w = write(s, buf + off, (size_t)(n - off));
            if (w <= 0)
                FAIL("write");
            off += w;
        }
    close(s);
    close(l);
    printf("ok echo\n");
}

static void accept_server(const char *mux)
{
    bool ep = !strcmp(mux, "epoll"); /* else poll */
    int l = listen_on(SOCK_NONBLOCK, 128);
    int efd = ep ? epoll_create1(0) : -1;
    struct epoll_event ev = {.events = EPOLLIN | EPOLLET, .data.fd = l};
    if (ep && (efd < 0 || epoll_ctl(efd, EPOLL_CTL_ADD, l, &ev)))
        FAIL("epoll_ctl");
    char line[16];
    if (!fgets(line, sizeof(line), stdin) || strncmp(line, "go", 2))
        FAIL("no go");
    double t0 = now_ms();
    int r = accept4(l, NULL, NULL, SOCK_NONBLOCK);
    double took = now_ms() - t0;
    if (r >= 0 || errno != EAGAIN)
        FAIL("accept4 with only silent peers: %d, want EAGAIN", r);
    printf("eagain ms=%.2f\n", took);
    printf("ready\n");
    fflush(stdout);
    t0 = now_ms();
    int s = -1;
    while (s < 0) {
        struct pollfd p = {.fd = l, .events = POLLIN};
        if (ep ? epoll_wait(efd, &ev, 1, 10000) != 1 : poll(&p, 1, 10000) != 1)
            FAIL("listener not ready in 10 s");
        s = accept4(l, NULL, NULL, 0); /* edge-triggered: one accept per report is enough here */
        if (s < 0 && errno != EAGAIN)
            FAIL("accept4");
    }
    double ms = now_ms() - t0;
    char buf[8];
    if (read(s, buf, 5) != 5 || memcmp(buf, "hello", 5))
        FAIL("not the good client's hello");
    close(s);
    close(l);
    printf("ok accepted ms=%.1f\n", ms);
}

static void idle_server(void)
{
    int l = listen_on(0, 4);
    char line[16];
    while (fgets(line, sizeof(line), stdin)) {
    }
    close(l);
    printf("ok idle\n");
}

static void late_client(const char *host, int port, const char *mux)
{
    int s = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    if (s < 0)
        FAIL("socket");
    double t0 = now_ms();
    bool inprogress = start_connect(s, host, port, false);
    if (inprogress && again(s, host, port) != EALREADY)
        FAIL("connect again while under way: not EALREADY");
    struct sockaddr_in early;
    socklen_t el = sizeof(early);
    if (inprogress && (!getpeername(s, (struct sockaddr *)&early, &el) || errno != ENOTCONN))
        FAIL("getpeername while under way: not ENOTCONN");
    if (inprogress) {
        short ev = wait_writable(s, mux, 10000);
        if (ev & (POLLERR | POLLHUP))
            FAIL("writable with error bits %#x", ev);
    }
    int e = so_error(s);
    if (e)
        FAIL("SO_ERROR %s", strerror(e));
    struct sockaddr_in peer;
    socklen_t pl = sizeof(peer);
    if (getpeername(s, (struct sockaddr *)&peer, &pl) || ntohs(peer.sin_port) != port)
        FAIL("getpeername");
    if (send(s, "x", 1, MSG_NOSIGNAL) != 1)
        FAIL("send on the connection");
    close(s);
    printf("ok late %s ms=%.0f\n", mux, now_ms() - t0);
}

static void hello_client(const char *host, int port)
{
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    inet_pton(AF_INET, host, &sa.sin_addr);
    int s = socket(AF_INET, SOCK_STREAM, 0);
    if (s < 0 || connect(s, (struct sockaddr *)&sa, sizeof(sa)) || write(s, "hello", 5) != 5)
        FAIL("hello");
    char c;
    if (read(s, &c, 1) != 0) /* the server closes after reading */
        FAIL("no EOF");
    close(s);
    printf("ok hello\n");
}

static void arrive_client(const char *host, int port)
{
    int s = socket(AF_INET, SOCK_STREAM, 0);
    if (s < 0)
        FAIL("socket");
    double t0 = now_ms();
    if (start_connect(s, host, port, false))
        FAIL("a blocking connect said EINPROGRESS");
    printf("ok arrive ms=%.1f\n", now_ms() - t0);
    close(s);
}

int main(int argc, char **argv)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    alarm(60); /* nothing hangs: a call that never returns fails the run */
    if (argc >= 3 && !strcmp(argv[1], "server")) {
        role = argv[2];
        const char *arg = argc > 3 ? argv[3] : NULL;
        if (arg && !strcmp(role, "echo"))
            bind_addr = arg;
        if (!strcmp(role, "echo"))
            echo_server();
        else if (!strcmp(role, "accept"))
            accept_server(arg ? arg : "poll");
        else if (!strcmp(role, "idle"))
            idle_server();
        else if (!strcmp(role, "order"))
            order_server();
        else
            FAIL("unknown role");
        return 0;
    }
    if (argc >= 5 && !strcmp(argv[1], "client")) {
        role = argv[2];
        const char *mux = argc > 5 ? argv[5] : "poll";
        if (!strcmp(role, "nb"))
            nb_client(argv[3], atoi(argv[4]), mux);
        else if (!strcmp(role, "refused"))
            refused_client(argv[3], atoi(argv[4]), mux);
        else if (!strcmp(role, "late"))
            late_client(argv[3], atoi(argv[4]), mux);
        else if (!strcmp(role, "hello"))
            hello_client(argv[3], atoi(argv[4]));
        else if (!strcmp(role, "arrive"))
            arrive_client(argv[3], atoi(argv[4]));
        else if (!strcmp(role, "order"))
            order_client(argv[3], atoi(argv[4]));
        else
            FAIL("unknown role");
        return 0;
    }
    fprintf(stderr, "usage: sock_connect server ROLE [ADDR] | client ROLE HOST PORT [MUX]\n");
    return 2;
}
