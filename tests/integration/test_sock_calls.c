/* The switch's call families beyond read and write (readv/writev/sendmsg/recvmsg/sendmmsg/
 * recvmmsg, sendfile, ioctl, getsockopt/setsockopt, the fortified entry points) against the real
 * daemon: tests/sock/sock_calls.c, server and client in separate processes, each role run twice:
 * both ends under sanrun (over the SAN: san_carried grows by the bytes moved), and
 * both without it (the kernel's TCP on loopback: the expectations are TCP's, so the same program
 * passing on TCP shows they are not the switch's inventions).
 * - vec, peek, nonblock, epipe, closed, unread, afterclose, sendfile, sockopt, fortify: see
 *   sock_calls.c.
 * - pack: one writev of 1000 pieces of 7 bytes costs the NIC about as many operations as one of
 *   a single 7000-byte piece (the pieces share messages; one message each would be 1000 more).
 * - coalesce: 10000 one-byte writes to a reader that sleeps cost the NIC at most 1000 operations
 *   (the writes that find no credit share the pending message), every byte arrives in order
 *   before EOF although the writer closes at once (or exits without closing), and SIOCOUTQ
 *   counts the waiting bytes.
 * - reset, killsend, killrecv: the test SIGKILLs the server; the client sees POLLERR and
 *   SO_ERROR ECONNRESET once, or its write/read ends in EPIPE/ECONNRESET/EOF, and never hangs.
 * - At the end the daemon is idle: every connection's resources went with its process. */
#include "harness.h"
#include "sock_spawn.h"

static char sanrun[512], prog[512];
static const char *daemon_sock;

struct pair {
    pid_t srv, cli;
    FILE *srv_out, *cli_out;
};

/* Starts role's server, then its client (ARG arg) at the server's port; san: both under sanrun. */
static void start_pair(struct pair *p, const char *role, const char *arg, bool san)
{
    char *srv_argv[] = {sanrun, prog, "server", (char *)role, NULL};
    p->srv = spawn(san ? srv_argv : srv_argv + 1, daemon_sock, &p->srv_out);
    char line[128], port[16];
    int n;
    CHECK(fgets(line, sizeof(line), p->srv_out));
    CHECK(sscanf(line, "port %d", &n) == 1);
    snprintf(port, sizeof(port), "%d", n);
    char *cli_argv[] = {sanrun, prog, "client", (char *)role, "127.0.0.1", port, (char *)arg, NULL};
    p->cli = spawn(san ? cli_argv : cli_argv + 1, daemon_sock, &p->cli_out);
}

/* expect_line (sock_spawn.h) with the role in the name. */
static void expect_role_line(FILE *out, const char *who, const char *role, const char *want,
                             char *line, size_t len)
{
    char name[128];
    snprintf(name, sizeof(name), "%s %s", role, who);
    expect_line(out, name, want, line, len);
}

static void finish(struct pair *p, const char *role, int srv_status)
{
    fclose(p->cli_out);
    fclose(p->srv_out);
    int c = wait_exit(p->cli), s = wait_exit(p->srv);
    if (c != 0 || s != srv_status)
        test_fail(__FILE__, __LINE__, "%s: client exit %d, server %d (want %d)", role, c, s,
                  srv_status);
}

/* A role whose two ends run to completion: both print "ok" lines. */
static void run(const struct test_daemon *d, const char *role, const char *arg, bool san,
                uint64_t min_bytes)
{
    struct pair p;
    char line[256];
    uint64_t before = san_carried(d);
    start_pair(&p, role, arg, san);
    expect_role_line(p.cli_out, "client", role, "ok ", line, sizeof(line));
    printf("%s %s: client %s", san ? "SAN" : "TCP", role, line);
    expect_role_line(p.srv_out, "server", role, "ok ", line, sizeof(line));
    finish(&p, role, 0);
    uint64_t moved = san_carried(d) - before;
    if (san && moved < min_bytes)
        test_fail(__FILE__, __LINE__, "%s: san_carried +%" PRIu64 ", want >= %" PRIu64, role, moved,
                  min_bytes);
    if (!san && moved)
        test_fail(__FILE__, __LINE__, "%s over TCP moved %" PRIu64 " bytes on the SAN", role,
                  moved);
}

/* A role whose server the test SIGKILLs once it printed ready (and the client, if cli_ready). */
static void run_kill(const char *role, bool san, const char *srv_ready, const char *cli_ready)
{
    struct pair p;
    char line[256];
    start_pair(&p, role, "", san);
    if (cli_ready)
        expect_role_line(p.cli_out, "client", role, cli_ready, line, sizeof(line));
    expect_role_line(p.srv_out, "server", role, srv_ready, line, sizeof(line));
    CHECK(!kill(p.srv, SIGKILL));
    expect_role_line(p.cli_out, "client", role, "ok ", line, sizeof(line));
    printf("%s %s: client %s", san ? "SAN" : "TCP", role, line);
    finish(&p, role, 128 + SIGKILL);
}

/* The NIC operations one pack run costs. */
static uint64_t pack_ops(const struct test_daemon *d, const char *pieces)
{
    uint64_t before = nic_ops(d);
    run(d, "pack", pieces, true, 7000);
    return nic_ops(d) - before;
}

int main(void)
{
    test_init();
    const char *bin = getenv("SAN_BIN"), *build = getenv("SAN_BUILD");
    CHECK(bin && build);
    snprintf(sanrun, sizeof(sanrun), "%s/sanrun", bin);
    snprintf(prog, sizeof(prog), "%s/tests/sock_calls", build);
    /* The fortify role tests something only if the program calls the fortified names. glibc
     * leaves _FORTIFY_SOURCE off under AddressSanitizer: there the role reads with plain read,
     * recv and recvfrom, and the fortified names are tested by the plain build. */
#ifndef SAN_UNDER_SANITIZER
    char cmd[700];
    static const char *chk[] = {"__read_chk", "__recv_chk", "__recvfrom_chk", "__poll_chk"};
    for (size_t i = 0; i < sizeof(chk) / sizeof(chk[0]); i++) {
        snprintf(cmd, sizeof(cmd), "nm -D --undefined-only '%s' | grep -qw %s", prog, chk[i]);
        if (system(cmd))
            test_fail(__FILE__, __LINE__, "sock_calls does not call %s: not built fortified",
                      chk[i]);
    }
#endif
    struct test_daemon d;
    test_daemon_start(&d, NULL);
    daemon_sock = d.sock;
    struct san_stats_rep idle;
    test_stats(&d, &idle);

    for (int san = 1; san >= 0; san--) {
        run(&d, "vec", "", san, 2 * 86106);
        run(&d, "peek", "", san, 10000);
        run(&d, "nonblock", "", san, 1234 + 65536);
        run(&d, "nbcache", "", san, 12);
        run(&d, "epipe", "", san, 0);
        run(&d, "closed", "", san, 0);
        run(&d, "unread", "", san, 1000);
        /* The client reads none of the 1 MiB it is offered: how much of it its switch pulled
         * into sinks before the reset depends on timing (787 KB once under load). That the
         * connection was the SAN's is what the count shows. */
        run(&d, "afterclose", "", san, 1);
        run(&d, "sendfile", san ? "san" : "", san, 300000 + (1u << 20) + 2 * (8u << 20));
        run(&d, "sockopt", san ? "san" : "", san, 600);
        run(&d, "fortify", "7", san, 10000);
        run(&d, "fortify", "4099", san, 10000);
        run_kill("reset", san, "accepted", "connected");
        run_kill("killsend", san, "got", NULL);
        run_kill("killrecv", san, "sent", NULL);
    }

    /* Coalescing (SANSOCK_COALESCE=1, off by default): 10000 one-byte writes to a sleeping
     * reader share messages. The environment reaches both ends through sanrun. */
    setenv("SANSOCK_COALESCE", "1", 1);
    uint64_t before = nic_ops(&d);
    run(&d, "coalesce", "san", true, 10000);
    uint64_t writes_ops = nic_ops(&d) - before;
    printf("coalesce: NIC operations for 10000 one-byte writes: %" PRIu64 "\n", writes_ops);
    if (writes_ops > 1000)
        test_fail(__FILE__, __LINE__, "10000 one-byte writes cost %" PRIu64 " NIC operations",
                  writes_ops);
    run(&d, "coalesce", "", false, 0);
    spawn_unscanned_exit = true; /* these exit with a connection open (sock_spawn.h) */
    run(&d, "coalesce", "san-exit", true, 10000);
    run(&d, "coalesce", "exit", false, 0);
    spawn_unscanned_exit = false;
    unsetenv("SANSOCK_COALESCE");

    /* Packing: 1000 pieces cost about what one piece costs (one message each: >= 1000 more). */
    uint64_t one = pack_ops(&d, "1"), many = pack_ops(&d, "1000");
    printf("pack: NIC operations for 7000 bytes: 1 piece %" PRIu64 ", 1000 pieces %" PRIu64 "\n",
           one, many);
    if (many > one + 20)
        test_fail(__FILE__, __LINE__,
                  "1000 pieces cost %" PRIu64 " NIC operations, 1 piece %" PRIu64, many, one);

    test_wait_idle(&d, &idle);
    CHECK_EQ(test_daemon_stop(&d), 0);
    printf("sock calls: ok\n");
    return 0;
}
