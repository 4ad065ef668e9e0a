/* The sockets switch's RDMA read mode against the real daemon, both ends in separate processes.
 * - Streams of blocking writes around a 4 KiB threshold and the size of an offer (256 KiB),
 *   read back in pieces of other sizes with MSG_PEEK between them (tests/sock/sock_stream.c
 *   checks every byte, and that two peeks see the same bytes): each arrives whole. Writes of
 *   64 KiB and more travel by RDMA (the NIC's operation count stays far below one per 4 KiB);
 *   with SANSOCK_RDMA=0 the same stream travels inline (at least one operation per 16 KiB), and
 *   so do writes of the default threshold (256 KiB), one byte more going by RDMA.
 * - Raw libsan peers speaking the session protocol to a sanrun'd echo server: a valid offer
 *   (the control: the server reads it and answers DONE with the cookie and the bytes), then
 *   offers that lie: a garbage descriptor, a length beyond the registration it names, a cookie
 *   out of order, a length beyond the server's max_rdma, and a DONE for nothing offered. Each
 *   liar's connection is reset (its NIC reports ECONNRESET), and the server goes on serving. */
#include "harness.h"
#include "nic_pair.h"
#include "sock_spawn.h"
#include "sock/wire.h"

static char sanrun[512], stream[512], echo[512];

static uint64_t nic_ops(const struct test_daemon *d)
{
    struct san_stats_rep s;
    test_stats(d, &s);
    return s.nic_ops;
}

/* sock_stream SIZE COUNT READ under sanrun: checks its "ok TOTAL". */
static void run_stream(const struct test_daemon *d, size_t size, unsigned count, size_t rd)
{
    char ss[24], cs[16], rs[24];
    snprintf(ss, sizeof(ss), "%zu", size);
    snprintf(cs, sizeof(cs), "%u", count);
    snprintf(rs, sizeof(rs), "%zu", rd);
    char *argv[] = {sanrun, stream, ss, cs, rs, NULL};
    FILE *out;
    pid_t pid = spawn(argv, d->sock, &out);
    char line[128] = "", want[64];
    if (!fgets(line, sizeof(line), out))
        line[0] = 0;
    fclose(out);
    CHECK_EQ(wait_exit(pid), 0);
    snprintf(want, sizeof(want), "ok %llu\n", (unsigned long long)size * count);
    if (strcmp(line, want))
        test_fail(__FILE__, __LINE__, "sock_stream %zu x %u: '%s'", size, count, line);
}

enum lie { HONEST, BAD_DESC, TOO_LONG, BAD_COOKIE, OVER_MAX, DONE_NOTHING };
#define OFFER_LEN 5000u

/* The first message of type in the receive completions of ep (decoded with lim), or a status:
 * 1 when found (into *m, from buf), else the first error status, or -ETIMEDOUT. */
static int await(struct san_ep *ep, uint8_t *slots, uint32_t slot, uint8_t type,
                 const struct sansock_wire_limits *lim, struct sansock_msg *m)
{
    for (int i = 0; i < 500; i++) {
        struct san_wc wc;
        while (san_poll(ep, &wc, 1) == 1) {
            if (wc.status)
                return wc.status;
            if (wc.opcode != SAN_WC_RECV)
                continue;
            uint8_t *b = slots + wc.wr_id * slot;
            if (sansock_wire_decode(b, wc.byte_len, lim, m) == SANSOCK_WERR_OK && m->type == type)
                return 1;
        }
        san_wait(ep, 20);
    }
    return -ETIMEDOUT;
}

/* A raw libsan peer at port that negotiates RDMA read mode and then offers OFFER_LEN bytes of a
 * 64 KiB registration of its own, honestly or with the lie given. HONEST: 0 when the server's
 * DONE names the offer (cookie 0, the bytes, status 0). A lie: the first error status its
 * endpoint sees (the server reset the connection: -ECONNRESET). */
static int offer_peer(int port, enum lie lie)
{
    enum { SLOT = 8192, NSLOT = 6, REG = 65536 };
    struct san_ctx *ctx;
    CHECK_EQ(san_open(NULL, &ctx), 0);
    struct sockaddr_in sa = addr4("127.0.0.1", (uint16_t)port);
    struct san_ep *ep;
    CHECK_EQ(san_connect(ctx, (struct sockaddr *)&sa, sizeof(sa), 10000, &ep), 0);
    void *mem;
    CHECK_EQ(san_alloc(ctx, 1 << 20, 0, &mem), 0);
    uint8_t *b = mem, *slots = b, *out = b + NSLOT * SLOT, *data = b + (512 << 10);
    struct san_mr *mr, *rmr;
    CHECK_EQ(san_register(ctx, b, 1 << 20, SAN_MEM_READWRITE, &mr), 0);
    for (uint32_t i = 0; i < OFFER_LEN; i++)
        data[i] = (uint8_t)(i * 13);
    struct sansock_wire_rdma r = {.total_len = OFFER_LEN, .cookie = 0};
    size_t dl = sizeof(r.desc);
    CHECK_EQ(san_register_rdma(ctx, data, REG, SAN_MEM_READ, r.desc, &dl, &rmr), 0);
    r.desc_len = (uint32_t)dl;
    for (uint32_t i = 0; i < NSLOT; i++) {
        struct san_sge s = {.addr = slots + i * SLOT, .length = SLOT, .lkey = san_mr_lkey(mr)};
        CHECK_EQ(san_post_recv(ep, i, &s, 1), 0);
    }
    struct sansock_wire_negotiate n = {.recv_slots = NSLOT,
                                       .slot_size = SLOT,
                                       .rdma_threshold = 4096,
                                       .features = SANSOCK_FEAT_RDMA_READ,
                                       .max_rdma = 1 << 20};
    struct sockaddr_in me = addr4("127.0.0.1", 1);
    CHECK_EQ(sansock_wire_addr_from(&n.src, (struct sockaddr *)&me, sizeof(me)), 0);
    CHECK_EQ(sansock_wire_addr_from(&n.dst, (struct sockaddr *)&sa, sizeof(sa)), 0);
    size_t len = sansock_wire_encode_negotiate(out, &n);
    struct san_sge s = {.addr = out, .length = (uint32_t)len, .lkey = san_mr_lkey(mr)};
    CHECK_EQ(san_post_send(ep, 100, &s, 1, 0), 0);

    if (lie == BAD_DESC)
        memset(r.desc, 0x5a, sizeof(r.desc));
    else if (lie == TOO_LONG)
        r.total_len = 4 * REG; /* within max_rdma, beyond what the descriptor covers */
    else if (lie == BAD_COOKIE)
        r.cookie = 7;
    else if (lie == OVER_MAX)
        r.total_len = 2u << 20;
    uint8_t *msg = out + 512;
    if (lie == DONE_NOTHING) {
        struct sansock_wire_done d = {.cookie = 0, .bytes = OFFER_LEN};
        len = sansock_wire_encode_done(msg, SANSOCK_MSG_DONE, 0, 0, &d);
    } else {
        len = sansock_wire_encode_rdma(msg, SANSOCK_MSG_RDMA_OFFER, 0, 0, &r, 0);
    }
    s = (struct san_sge){.addr = msg, .length = (uint32_t)len, .lkey = san_mr_lkey(mr)};
    CHECK_EQ(san_post_send(ep, 101, &s, 1, 0), 0);
    uint8_t *shut = out + 1024;
    len = sansock_wire_encode_hdr(shut, SANSOCK_MSG_SHUTDOWN, 0, 0, 0);
    s = (struct san_sge){.addr = shut, .length = (uint32_t)len, .lkey = san_mr_lkey(mr)};
    CHECK_EQ(san_post_send(ep, 102, &s, 1, 0), 0);

    struct sansock_wire_limits lim = {.negotiated = false,
                                      .max_payload = SLOT - SANSOCK_HDR_SIZE,
                                      .max_credits = NSLOT,
                                      .features = SANSOCK_FEAT_RDMA_READ,
                                      .max_rdma = 1 << 20};
    struct sansock_msg m;
    int st = await(ep, slots, SLOT, SANSOCK_MSG_NEGOTIATE, &lim, &m);
    if (st == 1) {
        lim.negotiated = true;
        st = await(ep, slots, SLOT, SANSOCK_MSG_DONE, &lim, &m);
    }
    int ret;
    if (lie == HONEST)
        ret = st == 1 && !m.u.done.cookie && m.u.done.bytes == OFFER_LEN && !m.u.done.status
                  ? 0
                  : (st == 1 ? -EPROTO : st);
    else
        ret = st == 1 ? 0 : st; /* a DONE for a lie would be a bug: 0 then */
    san_ep_close(ep);
    san_deregister(rmr);
    san_deregister(mr);
    san_free(ctx, mem);
    san_close(ctx);
    return ret;
}

int main(void)
{
    test_init();
    const char *bin = getenv("SAN_BIN"), *build = getenv("SAN_BUILD");
    CHECK(bin && build);
    snprintf(sanrun, sizeof(sanrun), "%s/sanrun", bin);
    snprintf(stream, sizeof(stream), "%s/tests/sock_stream", build);
    snprintf(echo, sizeof(echo), "%s/tests/sock_echo", build);
    struct test_daemon d;
    test_daemon_start(&d, NULL);

    /* Sizes around a 4 KiB threshold and the offer size, read in other pieces, with peeks. */
    setenv("SANSOCK_RDMA_THRESHOLD", "4096", 1);
    static const struct {
        size_t size;
        unsigned count;
        size_t rd;
    } cases[] = {
        {4095, 300, 1000},          {4096, 300, 4096},         {4097, 300, 5000},
        {65536, 40, 3000},          {(1 << 20) - 1, 3, 70000}, {1 << 20, 3, 1 << 20},
        {(1 << 20) + 1, 3, 333333}, {(5 << 19) + 7, 2, 65536},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        uint64_t before = nic_ops(&d), total = (uint64_t)cases[i].size * cases[i].count;
        run_stream(&d, cases[i].size, cases[i].count, cases[i].rd);
        uint64_t ops = nic_ops(&d) - before;
        if (cases[i].size <= 4096 && ops < total / 4096)
            test_fail(__FILE__, __LINE__,
                      "%zu-byte writes: %" PRIu64 " NIC ops for %" PRIu64 " bytes: not inline?",
                      cases[i].size, ops, total);
        if (cases[i].size >= 65536 && ops > total / 16384)
            test_fail(__FILE__, __LINE__,
                      "%zu-byte writes: %" PRIu64 " NIC ops for %" PRIu64 " bytes: not by RDMA?",
                      cases[i].size, ops, total);
        printf("%zu x %u, read by %zu: ok, %" PRIu64 " NIC ops\n", cases[i].size, cases[i].count,
               cases[i].rd, ops);
    }
    /* The default threshold (256 KiB): 256 KiB writes inline, in 16 KiB pieces; larger by RDMA. */
    unsetenv("SANSOCK_RDMA_THRESHOLD");
    uint64_t at = nic_ops(&d);
    run_stream(&d, 256u << 10, 32, 100000);
    uint64_t inline_ops = nic_ops(&d) - at;
    at = nic_ops(&d);
    run_stream(&d, (256u << 10) + 1, 32, 100000);
    uint64_t rdma_ops = nic_ops(&d) - at;
    printf("default threshold: 256 KiB writes %" PRIu64 " NIC ops, 256 KiB + 1 %" PRIu64 "\n",
           inline_ops, rdma_ops);
    CHECK(inline_ops >= 32 * 16); /* 16 messages of 16 KiB a write */
    CHECK(rdma_ops < 32 * 8);     /* an offer, a read, a DONE and the byte a write, CREDITs */
    printf("default threshold: 256 KiB writes inline, larger by RDMA\n");
    /* SANSOCK_RDMA=0 (both ends): the same large writes go inline. */
    setenv("SANSOCK_RDMA", "0", 1);
    uint64_t before = nic_ops(&d);
    run_stream(&d, 1 << 20, 3, 1 << 16);
    unsetenv("SANSOCK_RDMA");
    CHECK(nic_ops(&d) - before >= (3u << 20) / 16384); /* one message per slot of 16 KiB */
    printf("SANSOCK_RDMA=0: inline\n");

    /* Raw peers against the echo server: the honest offer is DONE'd, every lie resets. */
    char *srv_argv[] = {sanrun, echo, "server", NULL};
    FILE *srv;
    pid_t srv_pid = spawn(srv_argv, d.sock, &srv);
    char line[256];
    int port;
    CHECK(fgets(line, sizeof(line), srv));
    CHECK(sscanf(line, "port %d", &port) == 1);
    CHECK_EQ(offer_peer(port, HONEST), 0);
    static const char *const names[] = {"",
                                        "garbage descriptor",
                                        "length beyond the registration",
                                        "cookie out of order",
                                        "length beyond max_rdma",
                                        "DONE for nothing"};
    for (int lie = BAD_DESC; lie <= DONE_NOTHING; lie++) {
        int st = offer_peer(port, (enum lie)lie);
        if (st != -ECONNRESET)
            test_fail(__FILE__, __LINE__, "%s: status %d, want ECONNRESET", names[lie], st);
        printf("%s: reset\n", names[lie]);
    }
    /* The server still serves, by RDMA too. */
    char ps[16];
    snprintf(ps, sizeof(ps), "%d", port);
    char *cl_argv[] = {sanrun, echo, "client", "127.0.0.1", ps, "3000017", NULL};
    FILE *co;
    pid_t cp = spawn(cl_argv, d.sock, &co);
    CHECK(fgets(line, sizeof(line), co));
    fclose(co);
    CHECK_EQ(wait_exit(cp), 0);
    CHECK(!strncmp(line, "ok 3000017 ", 11));
    char *quit_argv[] = {sanrun, echo, "quit", "127.0.0.1", ps, NULL};
    FILE *qo;
    pid_t q = spawn(quit_argv, d.sock, &qo);
    fclose(qo);
    CHECK_EQ(wait_exit(q), 0);
    fclose(srv);
    CHECK_EQ(wait_exit(srv_pid), 0);
    CHECK_EQ(test_daemon_stop(&d), 0);
    printf("sock_rdma: ok\n");
    return 0;
}
