/* The sockets switch against the real daemon, both ends in separate processes: the echo server
 * and client of tests/sock/sock_echo.c (plain socket calls, no libsan) run under sanrun.
 * - Round trips from 1 byte to 4 MiB, checksummed by the client, really over the SAN: the
 *   daemon's NIC (san_carried: its bytes, and 128 KiB an operation for transfers the reader maps)
 * carries at least twice the bytes echoed; each side's getsockname is the other's getpeername; a
 * client that sends nothing and shuts down reads EOF; MSG_PEEK shows the same first bytes twice and
 * MSG_WAITALL then takes the whole echo in one call; a client that waits with select instead of
 * poll.
 * - A plain TCP client (not under sanrun) reaches the sanrun'd server, and moves nothing on the
 * SAN.
 * - A sanrun'd client with no daemon at its socket falls back to TCP without noticing; one with
 *   SANSOCK_DISABLE=1 uses TCP.
 * - fork: a child's inherited SAN connection fails with ECONNRESET, the parent's goes on.
 * - Hostile raw-libsan peers: one that sends garbage instead of its negotiation, one that
 *   negotiates and then sends credits it never got: each loses its connection (its NIC reports
 *   ECONNRESET), and the server goes on serving the next client. */
#include <pthread.h>

#include "harness.h"
#include "nic_pair.h"
#include "sock_spawn.h"
#include "sock/wire.h"

static char sanrun[512], echo[512];

/* Runs the client (under sanrun or not) for size bytes; its "ok" line goes to line. */
static void client_as(const char *mode, bool under_sanrun, const char *sock, int port, size_t size,
                      char *line, size_t len)
{
    char ps[16], ss[32], m[16];
    snprintf(ps, sizeof(ps), "%d", port);
    snprintf(ss, sizeof(ss), "%zu", size);
    snprintf(m, sizeof(m), "%s", mode);
    char *with[] = {sanrun, echo, m, "127.0.0.1", ps, ss, NULL};
    char *without[] = {echo, m, "127.0.0.1", ps, ss, NULL};
    FILE *out;
    pid_t pid = spawn(under_sanrun ? with : without, sock, &out);
    line[0] = '\0';
    if (!fgets(line, (int)len, out))
        line[0] = '\0';
    fclose(out);
    CHECK_EQ(wait_exit(pid), 0);
    char want[64];
    snprintf(want, sizeof(want), "ok %zu ", size);
    if (strncmp(line, want, strlen(want)))
        test_fail(__FILE__, __LINE__, "client %zu: '%s'", size, line);
}

static void client(bool under_sanrun, const char *sock, int port, size_t size, char *line,
                   size_t len)
{
    client_as("client", under_sanrun, sock, port, size, line, len);
}

/* The server's "conn peer=... local=..." line for the connection just served (a hostile peer's,
 * which claims 127.0.0.1:1, is skipped: whether its accept completes before the reset is a race).
 */
static void server_conn(FILE *srv, char *peer, char *local)
{
    char line[256];
    do {
        CHECK(fgets(line, sizeof(line), srv));
        CHECK(sscanf(line, "conn peer=%79s local=%79s", peer, local) == 2);
    } while (!strcmp(peer, "127.0.0.1:1"));
}

/* A raw libsan peer at port: connects, posts one receive, sends msg (len bytes) after an optional
 * valid negotiation, and waits for its connection to die: the status of the first error. */
static int hostile(int port, bool negotiate_first, const void *msg, size_t len)
{
    struct san_ctx *ctx;
    CHECK_EQ(san_open(NULL, &ctx), 0);
    struct sockaddr_in sa = addr4("127.0.0.1", (uint16_t)port);
    struct san_ep *ep;
    CHECK_EQ(san_connect(ctx, (struct sockaddr *)&sa, sizeof(sa), 10000, &ep), 0);
    void *buf;
    CHECK_EQ(san_alloc(ctx, 65536, 0, &buf), 0);
    struct san_mr *mr;
    CHECK_EQ(san_register(ctx, buf, 65536, SAN_MEM_READWRITE, &mr), 0);
    uint8_t *b = buf;
    /* Two receives: the server's negotiation takes one, the reset flushes the other. */
    for (int i = 0; i < 2; i++) {
        struct san_sge r = {.addr = b + 16384 * (i + 2), .length = 16384, .lkey = san_mr_lkey(mr)};
        CHECK_EQ(san_post_recv(ep, 1, &r, 1), 0);
    }
    if (negotiate_first) {
        struct sansock_wire_negotiate n = {.recv_slots = 1, .slot_size = 4160};
        struct sockaddr_in me = addr4("127.0.0.1", 1);
        CHECK_EQ(sansock_wire_addr_from(&n.src, (struct sockaddr *)&me, sizeof(me)), 0);
        CHECK_EQ(sansock_wire_addr_from(&n.dst, (struct sockaddr *)&sa, sizeof(sa)), 0);
        size_t nl = sansock_wire_encode_negotiate(b, &n);
        struct san_sge s = {.addr = b, .length = (uint32_t)nl, .lkey = san_mr_lkey(mr)};
        CHECK_EQ(san_post_send(ep, 2, &s, 1, 0), 0);
    }
    memcpy(b + 8192, msg, len);
    struct san_sge s = {.addr = b + 8192, .length = (uint32_t)len, .lkey = san_mr_lkey(mr)};
    CHECK_EQ(san_post_send(ep, 3, &s, 1, 0), 0);
    int status = 0;
    for (int i = 0; i < 200 && !status; i++) {
        struct san_wc wc;
        while (!status && san_poll(ep, &wc, 1) == 1)
            status = wc.status;
        if (!status)
            san_wait(ep, 100);
    }
    san_ep_close(ep);
    san_close(ctx);
    return status;
}

int main(void)
{
    test_init();
    const char *bin = getenv("SAN_BIN"), *build = getenv("SAN_BUILD");
    CHECK(bin && build);
    snprintf(sanrun, sizeof(sanrun), "%s/sanrun", bin);
    snprintf(echo, sizeof(echo), "%s/tests/sock_echo", build);
    struct test_daemon d;
    test_daemon_start(&d, NULL);

    char *srv_argv[] = {sanrun, echo, "server", NULL};
    FILE *srv;
    pid_t srv_pid = spawn(srv_argv, d.sock, &srv);
    char line[256];
    int port;
    CHECK(fgets(line, sizeof(line), srv));
    CHECK(sscanf(line, "port %d", &port) == 1);

    /* Over the SAN, both ends under sanrun. */
    static const size_t sizes[] = {0, 1, 100, 4096, 4097, 65536, 1000003, 4u << 20};
    uint64_t before = san_carried(&d), echoed = 0;
    for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
        char peer[80], local[80], cl_local[80], cl_peer[80];
        client(true, d.sock, port, sizes[i], line, sizeof(line));
        server_conn(srv, peer, local);
        CHECK(sscanf(line, "ok %*s %*s local=%79s peer=%79s", cl_local, cl_peer) == 2);
        if (strcmp(cl_local, peer) || strcmp(cl_peer, local))
            test_fail(__FILE__, __LINE__, "names: client %s -> %s, server %s <- %s", cl_local,
                      cl_peer, local, peer);
        echoed += sizes[i];
    }
    uint64_t after = san_carried(&d);
    if (after - before < 2 * echoed)
        test_fail(__FILE__, __LINE__, "san_carried grew by %" PRIu64 ", want >= %" PRIu64,
                  after - before, 2 * echoed);
    printf("SAN: %" PRIu64 " bytes echoed, san_carried +%" PRIu64 "\n", echoed, after - before);

    /* select instead of poll on a SAN socket. */
    {
        char p2[80], l2[80];
        before = san_carried(&d);
        client_as("client-select", true, d.sock, port, 1000003, line, sizeof(line));
        server_conn(srv, p2, l2);
        CHECK(san_carried(&d) - before >= 2 * 1000003);
        printf("select: ok\n");
    }

    /* select that times out and then sees data, MSG_PEEK and MSG_WAITALL on a SAN socket. */
    {
        char ps[16];
        snprintf(ps, sizeof(ps), "%d", port);
        char *peek_argv[] = {sanrun, echo, "peek", "127.0.0.1", ps, NULL};
        FILE *out;
        before = san_carried(&d);
        pid_t pid = spawn(peek_argv, d.sock, &out);
        if (!fgets(line, sizeof(line), out))
            line[0] = '\0';
        fclose(out);
        CHECK_EQ(wait_exit(pid), 0);
        CHECK(!strncmp(line, "ok peek", 7));
        char p2[80], l2[80];
        server_conn(srv, p2, l2);
        CHECK(san_carried(&d) - before >= 20000);
        printf("select timing out, MSG_PEEK, MSG_WAITALL: ok\n");
    }

    /* A plain TCP client reaches the sanrun'd server; nothing moves on the SAN. */
    char peer[80], local[80];
    before = nic_bytes(&d);
    client(false, NULL, port, 1 << 20, line, sizeof(line));
    server_conn(srv, peer, local);
    after = nic_bytes(&d);
    CHECK(after - before < 1 << 20);
    printf("plain TCP client: ok\n");

    /* No daemon where the client looks: TCP, unnoticed. */
    char nowhere[200];
    snprintf(nowhere, sizeof(nowhere), "%s/nobody.sock", d.dir);
    before = nic_bytes(&d);
    client(true, nowhere, port, 1 << 20, line, sizeof(line));
    server_conn(srv, peer, local);
    after = nic_bytes(&d);
    CHECK(after - before < 1 << 20);
    printf("no daemon: fell back to TCP\n");

    /* fork with a SAN connection open: the child gets ECONNRESET, the parent's connection works;
     * with the kernel's TCP (no daemon) the child shares the connection. */
    static char fork_prog[600];
    snprintf(fork_prog, sizeof(fork_prog), "%s/tests/sock_fork", build);
    char ps_[16];
    snprintf(ps_, sizeof(ps_), "%d", port);
    char *fork_argv[] = {sanrun, fork_prog, "127.0.0.1", ps_, NULL};
    for (int i = 0; i < 2; i++) {
        FILE *fo;
        pid_t fp = spawn(fork_argv, i ? nowhere : d.sock, &fo);
        CHECK(fgets(line, sizeof(line), fo));
        fclose(fo);
        CHECK_EQ(wait_exit(fp), 0);
        CHECK(!strcmp(line, i ? "ok child=tcp\n" : "ok child=san\n"));
        server_conn(srv, peer, local);
    }
    printf("fork: the child's inherited SAN connection is reset, the parent's works\n");

    /* SANSOCK_DISABLE=1: the kernel's TCP. */
    setenv("SANSOCK_DISABLE", "1", 1);
    before = nic_bytes(&d);
    client(true, d.sock, port, 1 << 20, line, sizeof(line));
    server_conn(srv, peer, local);
    after = nic_bytes(&d);
    unsetenv("SANSOCK_DISABLE");
    CHECK(after - before < 1 << 20);
    printf("SANSOCK_DISABLE=1: TCP\n");

    /* Hostile peers lose their connection; the server goes on. */
    uint8_t garbage[64];
    memset(garbage, 0xa5, sizeof(garbage));
    CHECK_EQ(hostile(port, false, garbage, sizeof(garbage)), -ECONNRESET);
    uint8_t lie[SANSOCK_HDR_SIZE + 8];
    sansock_wire_encode_data(lie, 0, 8, 1000); /* credits it was never given */
    CHECK_EQ(hostile(port, true, lie, sizeof(lie)), -ECONNRESET);
    client(true, d.sock, port, 70000, line, sizeof(line));
    server_conn(srv, peer, local);
    printf("hostile peers: reset, server still serves\n");

    char ps[16];
    snprintf(ps, sizeof(ps), "%d", port);
    char *quit_argv[] = {sanrun, echo, "quit", "127.0.0.1", ps, NULL};
    FILE *qo;
    pid_t q = spawn(quit_argv, d.sock, &qo);
    fclose(qo);
    CHECK_EQ(wait_exit(q), 0);
    server_conn(srv, peer, local);
    fclose(srv);
    CHECK_EQ(wait_exit(srv_pid), 0);
    CHECK_EQ(test_daemon_stop(&d), 0);
    printf("sock: ok\n");
    return 0;
}
