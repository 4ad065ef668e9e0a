/* close of a SAN socket never waits, and no byte a write accepted is lost when the writer goes
 * away (docs/sock.md, "Close"; docs/nic.md, "Lingering endpoints"), both ends under sanrun
 * (tests/sock/sock_close.c checks every byte, then EOF):
 * - write, close, _exit at once; at 4 KiB, 300 KiB and 2.5 MiB, inline (SANSOCK_RDMA=0) and by
 *   RDMA read mode (SANSOCK_RDMA_THRESHOLD=1024), each ROUNDS times with two pairs running at
 *   once (the load that made a finisher of the process alone lose the last bytes);
 * - the same with SIGKILL right after the write returned (the writer says so through its stdout,
 *   the test kills it), with exit() after close, and with _exit without any close;
 * - a reader that never reads: close returns in under 50 ms; with the writer alive its finisher
 *   lets go at SANSOCK_LINGER_MS, with the writer gone the daemon's lingering endpoint goes at
 *   [nic] linger: the daemon's endpoints and registrations come back, nothing leaks;
 * - orphans: a server (SANSOCK_MAX_ORPHANS=4, [limits] endpoints = 16) writes 300 KiB by RDMA to
 *   each of 24 connections of two peers that never read (12 each) and closes it: its finisher
 *   would hold every one for SANSOCK_LINGER_MS (60 s here) and the server could accept nothing
 *   past 16; with the cap its open endpoints stay at most 4 + 2, a good client is then served over
 *   the SAN (nic_bytes), and when the peers read, the newest connections (the cap's, less the good
 *   client's if it was still held) deliver every byte and EOF and the dropped ones ECONNRESET
 *   (or EOF, when every byte had reached the peer before the drop);
 * - at the end the daemon is idle. */
#include "harness.h"
#include "sock_spawn.h"

#define ROUNDS 20 /* SAN_SOCK_CLOSE_ROUNDS overrides (a quick run under ThreadSanitizer) */

static char sanrun[512], prog[512];

struct pair {
    pid_t rd, wr;
    FILE *rout, *wout;
};

static int read_port(FILE *f)
{
    char line[64] = "";
    int port = 0;
    if (!fgets(line, sizeof(line), f) || sscanf(line, "port %d", &port) != 1)
        test_fail(__FILE__, __LINE__, "reader said '%s'", line);
    return port;
}

static void start_pair(const struct test_daemon *d, struct pair *p, size_t size, const char *how)
{
    char ss[24], ps[16];
    snprintf(ss, sizeof(ss), "%zu", size);
    char *rargv[] = {sanrun, prog, "reader", ss, NULL};
    p->rd = spawn(rargv, d->sock, &p->rout);
    snprintf(ps, sizeof(ps), "%d", read_port(p->rout));
    char *wargv[] = {sanrun, prog, "writer", ps, ss, (char *)how, NULL};
    p->wr = spawn(wargv, d->sock, &p->wout);
}

/* The writer's part of how: SIGKILL once it said the write returned. */
static void writer_done(struct pair *p, const char *how)
{
    if (!strcmp(how, "kill")) {
        char line[64] = "";
        if (!fgets(line, sizeof(line), p->wout) || strcmp(line, "written\n"))
            test_fail(__FILE__, __LINE__, "writer said '%s'", line);
        CHECK(!kill(p->wr, SIGKILL));
        CHECK_EQ(wait_exit(p->wr), 128 + SIGKILL);
    } else {
        CHECK_EQ(wait_exit(p->wr), 0);
    }
    fclose(p->wout);
}

static void reader_done(struct pair *p, size_t size, const char *how, const char *mode)
{
    char line[128] = "", want[64];
    if (!fgets(line, sizeof(line), p->rout))
        line[0] = 0;
    fclose(p->rout);
    int st = wait_exit(p->rd);
    snprintf(want, sizeof(want), "ok %zu eof\n", size);
    if (st || strcmp(line, want))
        test_fail(__FILE__, __LINE__, "%s %zu bytes, %s: reader exit %d, said '%s'", mode, size,
                  how, st, line);
}

static void set_mode(const char *mode)
{
    unsetenv("SANSOCK_RDMA");
    unsetenv("SANSOCK_RDMA_THRESHOLD");
    if (!strcmp(mode, "inline"))
        setenv("SANSOCK_RDMA", "0", 1);
    else
        setenv("SANSOCK_RDMA_THRESHOLD", "1024", 1);
}

static void rounds(const struct test_daemon *d, size_t size, const char *mode, const char *how,
                   int n)
{
    set_mode(mode);
    for (int r = 0; r < n; r++) {
        struct pair p[2];
        for (int k = 0; k < 2; k++)
            start_pair(d, &p[k], size, how);
        for (int k = 0; k < 2; k++)
            writer_done(&p[k], how);
        for (int k = 0; k < 2; k++)
            reader_done(&p[k], size, how, mode);
    }
    printf("%s %zu bytes, write then %s, %d x 2 at once: every byte, then EOF\n", mode, size, how,
           n);
}

static struct san_stats_rep stats(const struct test_daemon *d)
{
    struct san_stats_rep s;
    test_stats(d, &s);
    return s;
}

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* Polls until the daemon shows at most eps endpoints, regs registrations and allocs
 * allocations: the ms it took, failing past limit_ms. */
static uint64_t wait_down(const struct test_daemon *d, uint64_t eps, uint64_t regs, uint64_t allocs,
                          uint64_t limit_ms, const char *what)
{
    uint64_t t0 = now_ms();
    struct san_stats_rep s;
    for (;;) {
        s = stats(d);
        if (s.endpoints <= eps && s.registrations <= regs && s.allocations <= allocs)
            return now_ms() - t0;
        if (now_ms() - t0 > limit_ms)
            test_fail(__FILE__, __LINE__,
                      "%s: %" PRIu64 " endpoints, %" PRIu64 " registrations, %" PRIu64
                      " allocations after %" PRIu64 " ms",
                      what, s.endpoints, s.registrations, s.allocations, limit_ms);
        struct timespec ms = {0, 5000000};
        nanosleep(&ms, NULL);
    }
}

/* Allocations and registrations the daemon holds for anyone but the client of process pid (a
 * client gone holds none, but what its lingering endpoints keep is still counted in the stats). */
static uint64_t held_except(const struct test_daemon *d, pid_t pid)
{
    struct san_stats_rep st = stats(d);
    uint64_t held = st.allocations + st.registrations, cursor = 0;
    int fd = test_connect(d);
    do {
        struct san_msg req, rep;
        san_proto_init(&req, SAN_OP_CLIENTS, 0);
        req.u.list_req.cursor = cursor;
        CHECK_EQ(test_call(fd, &req, &rep), 0);
        for (uint32_t i = 0; i < rep.u.clients_rep.nr; i++)
            if (rep.u.clients_rep.c[i].pid == pid)
                held -= rep.u.clients_rep.c[i].allocations + rep.u.clients_rep.c[i].registrations;
        cursor = rep.u.clients_rep.next;
    } while (cursor);
    close(fd);
    return held;
}

/* Polls until no client but the one of process pid holds memory: the ms it took, failing past
 * limit_ms. */
static uint64_t wait_others_free(const struct test_daemon *d, pid_t pid, uint64_t limit_ms,
                                 const char *what)
{
    uint64_t t0 = now_ms(), held;
    while ((held = held_except(d, pid))) {
        if (now_ms() - t0 > limit_ms)
            test_fail(__FILE__, __LINE__,
                      "%s: %" PRIu64 " allocations and registrations besides the reader's after "
                      "%" PRIu64 " ms",
                      what, held, limit_ms);
        struct timespec ms = {0, 5000000};
        nanosleep(&ms, NULL);
    }
    return now_ms() - t0;
}

/* A reader that never reads; the writer closes (timed), then stays (gone: false) or exits. */
static void never_read(const struct test_daemon *d, size_t size, const char *mode, bool gone)
{
    set_mode(mode);
    char ss[24], ps[16], line[64] = "";
    snprintf(ss, sizeof(ss), "%zu", size);
    char *rargv[] = {sanrun, prog, "noread", NULL};
    FILE *rout, *wout;
    pid_t rd = spawn(rargv, d->sock, &rout);
    snprintf(ps, sizeof(ps), "%d", read_port(rout));
    char *wargv[] = {sanrun, prog, "writer", ps, ss, gone ? "close_fork" : "close_stay", NULL};
    spawn_unscanned_exit = gone; /* its forked child exits with the parent's connection */
    pid_t wr = spawn(wargv, d->sock, &wout);
    spawn_unscanned_exit = false;
    CHECK(fgets(line, sizeof(line), rout) && !strcmp(line, "accepted\n"));
    unsigned long us = 0;
    if (!fgets(line, sizeof(line), wout) || sscanf(line, "closed %lu", &us) != 1)
        test_fail(__FILE__, __LINE__, "writer said '%s'", line);
    if (us >= 50000)
        test_fail(__FILE__, __LINE__, "close took %lu us with a peer that does not read", us);
    /* The writer's buffers go once its connection is finished or the bound is reached: inline
     * data sits in the reader's receives, so that is at once; an RDMA offer is never DONE'd, so
     * the writer's staging buffers are kept until the bound, the peer could still read them. The
     * reader holds its connection's buffers, and its sinks too when its accept took the offer
     * (the writer's NEGOTIATE and offer arrived together): only the others' holdings count. */
    struct san_stats_rep s = stats(d);
    CHECK(s.endpoints == 2);
    uint64_t took;
    if (gone) {
        /* A forked child's exit does not wait for the parent's unfinished connection. */
        unsigned long cus = 0;
        if (!fgets(line, sizeof(line), wout) || sscanf(line, "child exit %lu", &cus) != 1)
            test_fail(__FILE__, __LINE__, "writer said '%s'", line);
        if (cus >= 300000)
            test_fail(__FILE__, __LINE__, "a forked child's exit took %lu us", cus);
        CHECK_EQ(wait_exit(wr), 0); /* from here the daemon finishes ([nic] linger = 1s) */
        took = wait_others_free(d, rd, 3500, "writer gone");
    } else {
        took = wait_others_free(d, rd, 3500, "writer alive"); /* SANSOCK_LINGER_MS=1000 */
    }
    if (!strcmp(mode, "rdma") && took < 500)
        test_fail(__FILE__, __LINE__, "the unread offer's buffers went after %" PRIu64 " ms", took);
    if (!gone) {
        CHECK(!kill(wr, SIGKILL));
        CHECK_EQ(wait_exit(wr), 128 + SIGKILL);
    }
    fclose(wout);
    CHECK(!kill(rd, SIGKILL));
    CHECK_EQ(wait_exit(rd), 128 + SIGKILL);
    fclose(rout);
    wait_down(d, 0, 0, 0, 2000, "both gone");
    printf("%s %zu bytes to a peer that never reads, writer %s: close %lu us, its buffers gone "
           "after %" PRIu64 " ms\n",
           mode, size, gone ? "gone" : "alive", us, took);
}

static void tell(FILE *f, const char *what)
{
    fprintf(f, "%s\n", what);
    fflush(f);
}

#define ORPH_CAP   4
#define ORPH_PEERS 2
#define ORPH_EACH  12

static void orphans(const struct test_daemon *d)
{
    const size_t size = 300u << 10;
    char ss[24], ps[16], line[128];
    snprintf(ss, sizeof(ss), "%zu", size);
    set_mode("rdma"); /* an offer the peer never reads keeps the connection in the finisher */
    setenv("SANSOCK_MAX_ORPHANS", "4", 1);
    setenv("SANSOCK_LINGER_MS", "60000", 1);
    char *sargv[] = {sanrun, prog, "serve", ss, NULL};
    FILE *sout;
    pid_t srv = spawn(sargv, d->sock, &sout);
    unsetenv("SANSOCK_MAX_ORPHANS");
    unsetenv("SANSOCK_LINGER_MS");
    snprintf(ps, sizeof(ps), "%d", read_port(sout));
    pid_t h[ORPH_PEERS];
    FILE *hin[ORPH_PEERS], *hout[ORPH_PEERS];
    for (int k = 0; k < ORPH_PEERS; k++) {
        int p[2];
        CHECK(!pipe2(p, O_CLOEXEC));
        char *hargv[] = {sanrun, prog, "hostile", ps, NULL};
        int saved = dup(0);
        dup2(p[0], 0);
        spawn_unscanned_exit = true; /* it exits with its connections open */
        h[k] = spawn(hargv, d->sock, &hout[k]);
        spawn_unscanned_exit = false;
        dup2(saved, 0);
        close(saved);
        close(p[0]);
        CHECK(hin[k] = fdopen(p[1], "w"));
    }
    /* One at a time, so the server's closes come in a known order. */
    uint64_t eps = 0, bytes = 0, most = 0;
    for (int k = 0; k < ORPH_PEERS; k++)
        for (int i = 0; i < ORPH_EACH; i++) {
            tell(hin[k], "connect");
            expect_line(hout[k], "hostile peer", "connected", line, sizeof(line));
            expect_line(sout, "server", "served", line, sizeof(line));
            client_usage(d, srv, &eps, &bytes);
            if (eps > most)
                most = eps;
        }
    struct timespec t = {0, 50000000};
    nanosleep(&t, NULL); /* the finisher's drop follows the close it was woken for */
    client_usage(d, srv, &eps, &bytes);
    printf("orphans: %d connections closed to peers that never read, the server's endpoints at "
           "most %" PRIu64 ", now %" PRIu64 " (cap %d), %" PRIu64 " bytes of proxy memory\n",
           ORPH_PEERS * ORPH_EACH, most, eps, ORPH_CAP, bytes);
    if (most > ORPH_CAP + 2 || eps > ORPH_CAP)
        test_fail(__FILE__, __LINE__, "the server held %" PRIu64 " endpoints (now %" PRIu64 ")",
                  most, eps);
    /* A good client is served, over the SAN. */
    uint64_t before = san_carried(d), t0 = now_ms();
    char *fargv[] = {sanrun, prog, "fetch", ps, NULL};
    FILE *fout;
    spawn_unscanned_exit = true; /* it exits with its closed connection being finished */
    pid_t f = spawn(fargv, d->sock, &fout);
    spawn_unscanned_exit = false;
    char want[64];
    snprintf(want, sizeof(want), "ok %zu eof\n", size);
    if (!fgets(line, sizeof(line), fout) || strcmp(line, want))
        test_fail(__FILE__, __LINE__, "good client said '%s'", line);
    uint64_t took = now_ms() - t0, moved = san_carried(d) - before;
    CHECK_EQ(wait_exit(f), 0);
    fclose(fout);
    expect_line(sout, "server", "served", line, sizeof(line));
    printf("orphans: a good client served in %" PRIu64 " ms, san_carried +%" PRIu64 "\n", took,
           moved);
    if (moved < size || took > 3000)
        test_fail(__FILE__, __LINE__, "good client: %" PRIu64 " ms, san_carried +%" PRIu64, took,
                  moved);
    /* The peers read now. The newest connections (still held) deliver every byte and EOF. The
     * others were dropped: ECONNRESET after the bytes that reached the peer, or EOF when every
     * byte and the SHUTDOWN had reached its switch before the drop (a connect waits for its
     * NEGOTIATE's delivery and takes in what came meanwhile: the drop resets only what is left). */
    int resets = 0, eofs = 0, n = 0, last_reset = -1;
    for (int k = 0; k < ORPH_PEERS; k++) {
        tell(hin[k], "read");
        for (int i = 0; i < ORPH_EACH; i++, n++) {
            unsigned long long got = 0;
            if (!fgets(line, sizeof(line), hout[k]))
                line[0] = 0;
            if (sscanf(line, "reset %llu", &got) == 1 && got < size) {
                resets++;
                last_reset = n;
            } else if (sscanf(line, "eof %llu", &got) == 1 && got == size) {
                eofs++;
            } else {
                test_fail(__FILE__, __LINE__, "peer %d connection %d: '%s'", k, i, line);
            }
        }
        expect_line(hout[k], "hostile peer", "done", line, sizeof(line));
        fclose(hin[k]);
        CHECK_EQ(wait_exit(h[k]), 0);
        fclose(hout[k]);
    }
    printf("orphans: the peers read ECONNRESET on %d of the oldest, every byte and EOF on %d "
           "(the newest after connection %d)\n",
           resets, eofs, last_reset);
    if (!resets || last_reset >= ORPH_PEERS * ORPH_EACH - (ORPH_CAP - 1))
        test_fail(__FILE__, __LINE__,
                  "%d resets, the last on connection %d: want the %d newest "
                  "delivered and the dropped ones reset",
                  resets, last_reset, ORPH_CAP - 1);
    CHECK(!kill(srv, SIGKILL));
    CHECK_EQ(wait_exit(srv), 128 + SIGKILL);
    fclose(sout);
    wait_down(d, 0, 0, 0, 15000, "orphans: all gone");
}

int main(void)
{
    test_init();
    const char *bin = getenv("SAN_BIN"), *build = getenv("SAN_BUILD");
    CHECK(bin && build);
    snprintf(sanrun, sizeof(sanrun), "%s/sanrun", bin);
    snprintf(prog, sizeof(prog), "%s/tests/sock_close", build);
    /* The rounds with the default bound ([nic] linger = 10 s: ample for a reader under a
     * sanitizer's slowness); the peers that never read with a bound of 1 s, on a daemon of
     * their own. */
    struct test_daemon d;
    test_daemon_start(&d, NULL);
    struct san_stats_rep idle = stats(&d);

    const char *env = getenv("SAN_SOCK_CLOSE_ROUNDS");
    int rounds_n = env && atoi(env) > 0 ? atoi(env) : ROUNDS, few = rounds_n < 3 ? rounds_n : 3;
    static const size_t sizes[] = {4096, 300u << 10, (5u << 20) / 2};
    static const char *const modes[] = {"inline", "rdma"};
    for (size_t m = 0; m < 2; m++) {
        for (size_t i = 0; i < 3; i++) {
            rounds(&d, sizes[i], modes[m], "close_exit", rounds_n);
            rounds(&d, sizes[i], modes[m], "kill", rounds_n);
            rounds(&d, sizes[i], modes[m], "exit", few);
            rounds(&d, sizes[i], modes[m], "noclose", few);
        }
    }
    test_wait_idle(&d, &idle);
    CHECK_EQ(test_daemon_stop(&d), 0);

    test_daemon_start(&d, "[nic]\nlinger = 1s\n[limits]\nendpoints = 16\n");
    idle = stats(&d);
    orphans(&d);
    test_wait_idle(&d, &idle);
    CHECK_EQ(test_daemon_stop(&d), 0);

    test_daemon_start(&d, "[nic]\nlinger = 1s\n");
    idle = stats(&d);
    setenv("SANSOCK_LINGER_MS", "1000", 1);
    for (size_t m = 0; m < 2; m++) {
        never_read(&d, 300u << 10, modes[m], false);
        never_read(&d, 300u << 10, modes[m], true);
    }
    test_wait_idle(&d, &idle);
    CHECK_EQ(test_daemon_stop(&d), 0);
    printf("ok\n");
    return 0;
}
