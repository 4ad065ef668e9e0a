/* Non-blocking connect and an accept that never waits, against the real daemon: tests/sock/
 * sock_connect.c, server and client in separate processes, each case both under sanrun (over the
 * SAN: nic_bytes grows) and without it (the kernel's TCP: the expectations are TCP's).
 * - nb (poll, select, epoll): EINPROGRESS, EALREADY while under way, writable, SO_ERROR 0, connect
 *   again 0 then EISCONN, data echoed. Over the SAN the connect is always EINPROGRESS.
 * - no daemon: the kernel's non-blocking connect, untouched.
 * - refused: a port nobody listens on: the SAN refuses at once, the kernel's non-blocking connect
 *   takes over: writable with POLLERR, SO_ERROR ECONNREFUSED once (as TCP).
 * - late: a sanrun'd listener that never accepts: connect again says EALREADY, the SAN connect
 *   times out (SANSOCK_CONNECT_TIMEOUT_MS=300) and the kernel's connect, started then, completes
 *   it.
 * - arrival: a raw libsan listener takes the connection (san_accept) and posts its first receive
 *   only 300 ms later; the sanrun'd client's blocking connect returns only after that, its
 *   NEGOTIATE in that receive. So a connect that returned has arrived at the listener's side, and
 *   the switch accepts in the order connects returned (one client connecting twice is accepted
 *   in that order, as from TCP's backlog; before, a busy machine could deliver the second
 *   connection's NEGOTIATE first). A non-blocking connect is writable only once the listener's
 *   NEGOTIATE answered its own, which this raw listener never sends.
 * - order (over the SAN and TCP): a client connects 16 times one after the other, writing its
 *   index on each; the server accepts all 16, then finds index i on the i-th accepted (nic_bytes
 *   grows by at least those bytes over the SAN, not at all over TCP). Run five times; the
 *   arrival case above is what makes it hold on a loaded machine.
 * - silent peers: raw libsan connectors (san_connect_start) that never send NEGOTIATE: with 1 and
 *   with 100 of them (the listener waited on by poll; 100 also by edge-triggered epoll), a
 * non-blocking accept4 returns EAGAIN at once (< 50 ms for each peer its look sets up, 16 at most)
 * and a good client connecting after them is accepted (within 3 s: they are dropped, 64 held at
 * most, the oldest after 100 ms when full). Both bounds are the plain build's, scaled by
 * TEST_SLOWDOWN under the sanitizers, and kept by one of five tries (a loaded machine can stall
 * one). While it holds them (as many embryos as peers, 64 at most: its endpoints in the daemon's
 * listing) the server's proxy memory (its client's allocated_bytes) stays under 1 MiB: an embryo
 * holds one receive for the NEGOTIATE, not a connection's buffers (about 1 MiB each). */
#include <fcntl.h>
#include <poll.h>
#include <san/nic.h>

#include "harness.h"
#include "nic_pair.h"
#include "sock_spawn.h"

static char sanrun[512], prog[512];
static const char *daemon_sock;

static int read_port(FILE *out)
{
    char line[64];
    int port;
    CHECK(fgets(line, sizeof(line), out));
    CHECK(sscanf(line, "port %d", &port) == 1);
    return port;
}

/* The server's verdict (a line starting with want), then both ends' exit status 0. */
static void pair_done(FILE *so, FILE *si, FILE *co, pid_t srv, pid_t cli, const char *who,
                      const char *want)
{
    char line[256];
    expect_line(so, who, want, line, sizeof(line));
    fclose(si);
    fclose(so);
    fclose(co);
    CHECK_EQ(wait_exit(cli), 0);
    CHECK_EQ(wait_exit(srv), 0);
}

static void echo_done(FILE *so, FILE *si, FILE *co, pid_t srv, pid_t cli)
{
    pair_done(so, si, co, srv, cli, "echo server", "ok echo");
}

/* The server role srole (under sanrun if san) with stdin from a pipe (*in), its port in *port. */
static pid_t start_server_arg(const char *srole, const char *arg, bool san, FILE **out, FILE **in,
                              int *port)
{
    int p[2];
    CHECK(!pipe2(p, O_CLOEXEC)); /* only the server's stdin (a dup) outlives exec */
    char *argv[] = {sanrun, prog, "server", (char *)srole, (char *)arg, NULL};
    int saved = dup(0);
    dup2(p[0], 0);
    pid_t pid = spawn(san ? argv : argv + 1, daemon_sock, out);
    dup2(saved, 0);
    close(saved);
    close(p[0]);
    *in = fdopen(p[1], "w");
    CHECK(*in);
    *port = read_port(*out);
    return pid;
}

static pid_t start_server(const char *srole, bool san, FILE **out, FILE **in, int *port)
{
    return start_server_arg(srole, NULL, san, out, in, port);
}

static pid_t start_client(const char *crole, int port, const char *mux, bool san, FILE **out)
{
    char ps[16];
    snprintf(ps, sizeof(ps), "%d", port);
    char *argv[] = {sanrun, prog, "client", (char *)crole, "127.0.0.1", ps, (char *)mux, NULL};
    return spawn(san ? argv : argv + 1, daemon_sock, out);
}

static void nb(const struct test_daemon *d, const char *mux, bool san)
{
    FILE *so, *si, *co;
    int port;
    uint64_t before = san_carried(d);
    pid_t srv = start_server("echo", san, &so, &si, &port);
    pid_t cli = start_client("nb", port, mux, san, &co);
    char line[256];
    expect_line(co, "nb client", "ok nb", line, sizeof(line));
    printf("%s %s", san ? "SAN" : "TCP", line);
    if (san && !strstr(line, "inprogress=1"))
        test_fail(__FILE__, __LINE__, "SAN connect was not EINPROGRESS: %s", line);
    echo_done(so, si, co, srv, cli);
    uint64_t moved = san_carried(d) - before;
    if (san ? moved < 200000 : moved != 0)
        test_fail(__FILE__, __LINE__, "nb %s: san_carried +%" PRIu64, mux, moved);
}

/* No daemon: the switch's non-blocking connect is the kernel's (EINPROGRESS, data over TCP). */
static void nb_no_daemon(const struct test_daemon *d)
{
    FILE *so, *si, *co;
    int port;
    uint64_t before = nic_bytes(d);
    pid_t srv = start_server("echo", false, &so, &si, &port);
    const char *saved = daemon_sock;
    daemon_sock = "/nonexistent/sanproxy.sock";
    pid_t cli = start_client("nb", port, "poll", true, &co);
    daemon_sock = saved;
    char line[256];
    expect_line(co, "nb client", "ok nb", line, sizeof(line));
    printf("no daemon: %s", line);
    echo_done(so, si, co, srv, cli);
    CHECK_EQ(nic_bytes(d) - before, 0);
}

/* A loopback port nobody listens on (bound by the kernel, then released). */
static int free_port(void)
{
    struct sockaddr_in sa = addr4("127.0.0.1", 0);
    socklen_t len = sizeof(sa);
    int s = socket(AF_INET, SOCK_STREAM, 0);
    CHECK(s >= 0);
    CHECK(!bind(s, (struct sockaddr *)&sa, sizeof(sa)));
    CHECK(!getsockname(s, (struct sockaddr *)&sa, &len));
    close(s);
    return ntohs(sa.sin_port);
}

static void refused(const char *mux, bool san)
{
    FILE *co;
    pid_t cli = start_client("refused", free_port(), mux, san, &co);
    char line[256];
    expect_line(co, "refused client", "ok refused", line, sizeof(line));
    printf("%s %s", san ? "SAN" : "TCP", line);
    fclose(co);
    CHECK_EQ(wait_exit(cli), 0);
}

static void late(const char *mux)
{
    FILE *so, *si, *co;
    int port;
    pid_t srv = start_server("idle", true, &so, &si, &port);
    setenv("SANSOCK_CONNECT_TIMEOUT_MS", "300", 1);
    pid_t cli = start_client("late", port, mux, true, &co);
    unsetenv("SANSOCK_CONNECT_TIMEOUT_MS");
    char line[256];
    expect_line(co, "late client", "ok late", line, sizeof(line));
    printf("SAN timed out, TCP took over: %s", line);
    double ms = 0;
    CHECK(sscanf(strstr(line, "ms="), "ms=%lf", &ms) == 1);
    if (ms < 250)
        test_fail(__FILE__, __LINE__, "connected in %.0f ms: the SAN's timeout did not run", ms);
    fclose(co);
    CHECK_EQ(wait_exit(cli), 0);
    fclose(si);
    expect_line(so, "idle server", "ok idle", line, sizeof(line));
    fclose(so);
    CHECK_EQ(wait_exit(srv), 0);
}

#define ARRIVE_DELAY_MS 300
static void arrival(void)
{
    struct san_ctx *ctx;
    CHECK_EQ(san_open(daemon_sock, &ctx), 0);
    int port = free_port();
    struct sockaddr_in sa = addr4("127.0.0.1", (uint16_t)port);
    struct san_listener *l;
    CHECK_EQ(san_listen(ctx, (struct sockaddr *)&sa, sizeof(sa), 4, &l), 0);
    FILE *co;
    pid_t cli = start_client("arrive", port, "", true, &co);
    struct san_ep *ep;
    CHECK_EQ(san_accept(l, 10000, &ep), 0);
    struct timespec t = {0, ARRIVE_DELAY_MS * 1000000L};
    nanosleep(&t, NULL);
    /* Connected at the daemon, the NEGOTIATE not delivered: the client's connect is under way. */
    struct pollfd p = {.fd = fileno(co), .events = POLLIN};
    if (poll(&p, 1, 0) != 0)
        test_fail(__FILE__, __LINE__, "connect returned before the listener took its NEGOTIATE");
    void *buf;
    struct san_mr *mr;
    CHECK_EQ(san_alloc(ctx, 4096, 0, &buf), 0);
    CHECK_EQ(san_register(ctx, buf, 4096, SAN_MEM_READWRITE, &mr), 0);
    struct san_sge sge = {.addr = buf, .length = 4096, .lkey = san_mr_lkey(mr)};
    CHECK_EQ(san_post_recv(ep, 1, &sge, 1), 0);
    struct san_wc wc = wait_one(ep);
    CHECK_EQ(wc.status, 0);
    CHECK(wc.byte_len > 0);
    char line[256];
    expect_line(co, "arrive client", "ok arrive", line, sizeof(line));
    printf("arrival: the NEGOTIATE taken %d ms after the accept, %s", ARRIVE_DELAY_MS, line);
    double ms = 0;
    CHECK(sscanf(line, "ok arrive ms=%lf", &ms) == 1);
    CHECK(ms >= ARRIVE_DELAY_MS * 0.9);
    fclose(co);
    CHECK_EQ(wait_exit(cli), 0);
    san_ep_close(ep);
    san_deregister(mr);
    san_free(ctx, buf);
    san_listener_close(l);
    san_close(ctx);
}

static void order(const struct test_daemon *d, bool san)
{
    for (int round = 0; round < 5; round++) {
        FILE *so, *si, *co;
        int port;
        uint64_t before = nic_bytes(d);
        pid_t srv = start_server("order", san, &so, &si, &port);
        pid_t cli = start_client("order", port, "", san, &co);
        char line[256];
        expect_line(co, "order client", "ok order", line, sizeof(line));
        pair_done(so, si, co, srv, cli, "order server", "ok order");
        uint64_t moved = nic_bytes(d) - before;
        if (san ? moved < 16 : moved != 0)
            test_fail(__FILE__, __LINE__, "order (%s): nic_bytes +%" PRIu64, san ? "SAN" : "TCP",
                      moved);
    }
    printf("%s order: 5 x 16 connections accepted in the order they connected\n",
           san ? "SAN" : "TCP");
}

/* One try of the silent peers' case: every check but the two times, which go to *eagain_ms (the
 * non-blocking accept4's) and *accepted_ms (the good client's wait). */
static void silent_try(const struct test_daemon *d, int npeers, const char *mux, double *eagain_ms,
                       double *accepted_ms)
{
    FILE *so, *si, *co;
    int port;
    pid_t srv = start_server_arg("accept", mux, true, &so, &si, &port);
    struct san_ctx *ctx;
    CHECK_EQ(san_open(daemon_sock, &ctx), 0);
    struct sockaddr_in sa = addr4("127.0.0.1", (uint16_t)port);
    struct san_ep *ep[100];
    for (int i = 0; i < npeers; i++)
        CHECK_EQ(san_connect_start(ctx, (struct sockaddr *)&sa, sizeof(sa), &ep[i]), 0);
    fprintf(si, "go\n");
    fflush(si);
    char line[256];
    expect_line(so, "accept server", "eagain ms=", line, sizeof(line));
    CHECK(sscanf(line, "eagain ms=%lf", eagain_ms) == 1);
    printf("%d silent peers (%s): accept4 EAGAIN in %.2f ms\n", npeers, mux, *eagain_ms);
    expect_line(so, "accept server", "ready", line, sizeof(line));
    /* The server waits on the listener now: each look takes more silent peers as embryos. */
    /* The most embryos seen at once, and the proxy memory then (an embryo evicted when the
     * table is full is replaced at the next look, so a single sample may find one fewer). Every
     * sample must stay under 1 MiB. */
    uint64_t want = npeers < 64 ? (uint64_t)npeers : 64, most = 0, most_bytes = 0;
    for (int k = 0; k < 400 && most < want; k++) {
        uint64_t eps = 0, bytes = 0;
        client_usage(d, srv, &eps, &bytes);
        if (bytes >= 1u << 20)
            test_fail(__FILE__, __LINE__, "%" PRIu64 " embryos hold %" PRIu64 " bytes", eps, bytes);
        if (eps > most) {
            most = eps;
            most_bytes = bytes;
        }
        struct timespec t = {0, 5000000};
        nanosleep(&t, NULL);
    }
    printf("%d silent peers (%s): %" PRIu64 " embryos hold %" PRIu64 " bytes of proxy memory\n",
           npeers, mux, most, most_bytes);
    if (most < want)
        test_fail(__FILE__, __LINE__, "%" PRIu64 " embryos at most, want %" PRIu64, most, want);
    pid_t cli = start_client("hello", port, "", true, &co);
    expect_line(so, "accept server", "ok accepted", line, sizeof(line));
    CHECK(sscanf(line, "ok accepted ms=%lf", accepted_ms) == 1);
    printf("%d silent peers (%s): the good client accepted after %.1f ms\n", npeers, mux,
           *accepted_ms);
    expect_line(co, "hello client", "ok hello", line, sizeof(line));
    fclose(co);
    CHECK_EQ(wait_exit(cli), 0);
    fclose(si);
    fclose(so);
    CHECK_EQ(wait_exit(srv), 0);
    /* The silent peers were accepted (or refused when the listener closed), never left waiting
     * on a listener that is gone. */
    int pending = 0;
    for (int i = 0; i < npeers; i++) {
        int r = san_connect_finish(ep[i]);
        pending += r == -EINPROGRESS;
        san_ep_close(ep[i]);
    }
    CHECK_EQ(pending, 0);
    san_close(ctx);
}

/* The bounds. accept4's look sets up to EMBRYO_PER_LOOK (16) silent peers up, a few round trips
 * to the daemon each: one in 1-15 ms in the plain build (up to 38 ms with both cores busy), 16 in
 * 10-20 ms quiet, 44-280 ms busy. What the bound is for: an accept that waited on a peer would
 * wait for a NEGOTIATE that never comes (its 30 s drop), and one that waited a little for each
 * would show as much in the 1-peer case: so the bound is SILENT_SETUP_MS per peer set up, the
 * 1-peer case its witness. The good client, behind silent peers left to their drop, would wait
 * 30 s; behind 100 it waits for evictions (from 100 ms after the table is full) and set-ups:
 * 130 ms quiet, up to 1.2 s busy. The sanitizers slow everything as much (TSan quiet: 50-120 ms
 * for 16, 200 ms for the good client), so the bounds are scaled by TEST_SLOWDOWN (the server gives
 * up at 10 s, the good client's scaled bound is that); and as a loaded machine can stall one try
 * for longer still (TSan with the other core busy: 780 ms for 16 once), a case passes when one of
 * SILENT_TRIES tries keeps both bounds, where waiting on a peer breaks them in every try. */
#define SILENT_TRIES       5
#define SILENT_PER_LOOK    16
#define SILENT_SETUP_MS    (50 * TEST_SLOWDOWN)
#define SILENT_ACCEPTED_MS (3000 * TEST_SLOWDOWN)
static void silent(const struct test_daemon *d, int npeers, const char *mux)
{
    int eagain_ms = SILENT_SETUP_MS * (npeers < SILENT_PER_LOOK ? npeers : SILENT_PER_LOOK);
    char tries[SILENT_TRIES * 40] = "", *p = tries;
    for (int i = 0; i < SILENT_TRIES; i++) {
        double eagain, accepted;
        silent_try(d, npeers, mux, &eagain, &accepted);
        if (eagain < eagain_ms && accepted < SILENT_ACCEPTED_MS)
            return;
        printf("%d silent peers (%s): over the bounds (%d and %d ms): again\n", npeers, mux,
               eagain_ms, SILENT_ACCEPTED_MS);
        p += snprintf(p, sizeof(tries) - (size_t)(p - tries), " %.2f/%.1f", eagain, accepted);
    }
    test_fail(__FILE__, __LINE__,
              "%d silent peers (%s), accept4's EAGAIN / the good client's wait in ms, %d tries:%s "
              "(bounds %d / %d)",
              npeers, mux, SILENT_TRIES, tries, eagain_ms, SILENT_ACCEPTED_MS);
}

int main(void)
{
    test_init();
    setvbuf(stdout, NULL, _IOLBF, 0);
    const char *bin = getenv("SAN_BIN"), *build = getenv("SAN_BUILD");
    CHECK(bin && build);
    snprintf(sanrun, sizeof(sanrun), "%s/sanrun", bin);
    snprintf(prog, sizeof(prog), "%s/tests/sock_connect", build);
    struct test_daemon d;
    test_daemon_start(&d, NULL);
    daemon_sock = d.sock;
    struct san_stats_rep idle;
    test_stats(&d, &idle);
    static const char *mux[] = {"poll", "select", "epoll"};
    for (int san = 1; san >= 0; san--) {
        for (int i = 0; i < 3; i++) {
            nb(&d, mux[i], san);
            refused(mux[i], san);
        }
    }
    nb_no_daemon(&d);
    arrival();
    order(&d, true);
    order(&d, false);
    for (int i = 0; i < 3; i++)
        late(mux[i]);
    silent(&d, 1, "poll");
    silent(&d, 100, "poll");
    silent(&d, 100, "epoll");
    test_wait_idle(&d, &idle);
    CHECK_EQ(test_daemon_stop(&d), 0);
    printf("sock connect: ok\n");
    return 0;
}
