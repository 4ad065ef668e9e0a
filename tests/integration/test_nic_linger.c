/* Lingering endpoints (docs/nic.md) against the real daemon, with raw libsan clients: a child
 * process connects to this one, asks its endpoint to linger (as the sockets switch does), posts
 * sends and goes away (_exit) before they could be delivered.
 * - Delivered: its two messages arrive after its death, then a receive completes with -EPIPE
 *   (EOF); its 4 MiB RDMA registration is still readable, every byte right. Meanwhile its
 *   allocation still counts for its uid ([limits] per_uid_allocated_bytes): another client of the
 *   uid is refused what would exceed it, until this side closes and the lingering ends.
 * - Bounded: this side never closes: at [nic] linger the child's endpoint and memory go anyway
 *   (the daemon's allocations come back) and a read of its registration fails.
 * - Unread data: this side's message reached the child, which never polled it: its death resets
 *   the connection (-ECONNRESET, no EOF), as TCP's close with unread data does.
 * - Without the linger request the endpoint closes with its owner, as before (-ECONNRESET). */
#include "harness.h"
#include "nic_pair.h"

#include "client/ep.h"

#define REG   (4u << 20)
#define LIMIT "[nic]\nlinger = 3s\n[limits]\nper_uid_allocated_bytes = 12M\n"

static uint8_t byte_at(uint64_t i)
{
    return (uint8_t)((i * 2654435761u) >> 13);
}

static int wait_exit_status(pid_t pid)
{
    int st;
    CHECK(waitpid(pid, &st, 0) == pid);
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

enum child_kind { SEND_AND_GO, UNREAD_DATA, NO_LINGER };

/* The child's side: connects to port; SEND_AND_GO and NO_LINGER post two sends (its RDMA
 * descriptor, then 1000 bytes) and _exit at once (NO_LINGER once the parent says on sync that its
 * receives are posted: without linger the child's exit resets the connection, and a receive posted
 * after that would fail at once instead of telling how it ended); UNREAD_DATA posts a receive, says
 * so on sync, waits for the parent's message to be delivered (sleep), and _exits without polling.
 * sync is one end of a socket pair, the parent's other. */
static void child_main(uint16_t port, enum child_kind kind, int sync)
{
    struct san_ctx *ctx;
    struct san_ep *ep;
    if (san_open(NULL, &ctx))
        _exit(10);
    struct sockaddr_in sa = addr4("127.0.0.1", port);
    if (san_connect(ctx, (struct sockaddr *)&sa, sizeof(sa), 10000, &ep))
        _exit(11);
    void *mem, *msg;
    struct san_mr *mr, *mmr;
    uint8_t desc[SAN_RDMA_DESC_SIZE];
    size_t dl = sizeof(desc);
    if (san_alloc(ctx, REG, 0, &mem) || san_alloc(ctx, 4096, 0, &msg))
        _exit(12);
    for (uint32_t i = 0; i < REG; i++)
        ((uint8_t *)mem)[i] = byte_at(i);
    if (san_register_rdma(ctx, mem, REG, SAN_MEM_READ, desc, &dl, &mr) ||
        san_register(ctx, msg, 4096, SAN_MEM_READWRITE, &mmr))
        _exit(13);
    if (kind != NO_LINGER)
        san_ep_set_linger(ep, true);
    if (kind == UNREAD_DATA) {
        struct san_sge r = {.addr = msg, .length = 4096, .lkey = san_mr_lkey(mmr)};
        if (san_post_recv(ep, 1, &r, 1) || write(sync, "r", 1) != 1)
            _exit(14);
        struct timespec t = {0, 300000000};
        nanosleep(&t, NULL);
        _exit(0);
    }
    memcpy(msg, desc, dl);
    for (uint32_t i = 0; i < 1000; i++)
        ((uint8_t *)msg)[1024 + i] = byte_at(i + 7);
    struct san_sge s1 = {.addr = msg, .length = (uint32_t)dl, .lkey = san_mr_lkey(mmr)};
    struct san_sge s2 = {.addr = (uint8_t *)msg + 1024, .length = 1000, .lkey = san_mr_lkey(mmr)};
    if (san_post_send(ep, 1, &s1, 1, 0) || san_post_send(ep, 2, &s2, 1, 0))
        _exit(15);
    char go;
    if (kind == NO_LINGER && read(sync, &go, 1) != 1)
        _exit(16);
    _exit(0); /* SEND_AND_GO: before the parent even posted its receives */
}

struct side {
    struct san_ctx *ctx;
    struct san_ep *ep;
    pid_t child;
    int sync;
    uint8_t *buf; /* 3 receive slots of 4 KiB, then REG bytes for the read */
    struct san_mr *mr;
};

static void start(struct side *s, uint16_t port, enum child_kind kind)
{
    struct sockaddr_in sa = addr4("127.0.0.1", port);
    struct san_listener *l;
    CHECK_EQ(san_open(NULL, &s->ctx), 0);
    CHECK_EQ(san_listen(s->ctx, (struct sockaddr *)&sa, sizeof(sa), 4, &l), 0);
    int p[2];
    CHECK(!socketpair(AF_UNIX, SOCK_STREAM, 0, p));
    s->child = fork();
    CHECK(s->child >= 0);
    if (!s->child) {
        close(p[0]);
        child_main(port, kind, p[1]);
    }
    close(p[1]);
    s->sync = p[0];
    CHECK_EQ(san_accept(l, 10000, &s->ep), 0);
    san_listener_close(l);
    CHECK_EQ(san_alloc(s->ctx, 3 * 4096 + REG, 0, (void **)&s->buf), 0);
    CHECK_EQ(san_register(s->ctx, s->buf, 3 * 4096 + REG, SAN_MEM_READWRITE, &s->mr), 0);
}

static struct san_sge slot(struct side *s, unsigned i)
{
    return (struct san_sge){.addr = s->buf + i * 4096, .length = 4096, .lkey = san_mr_lkey(s->mr)};
}

static void finish(struct side *s)
{
    san_ep_close(s->ep);
    san_deregister(s->mr);
    san_free(s->ctx, s->buf);
    san_close(s->ctx);
    close(s->sync);
}

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* The child's two messages, then EOF: its descriptor is copied to desc. When it was seen gone. */
static uint64_t expect_delivered(struct side *s, uint8_t *desc, size_t *dl)
{
    for (unsigned i = 0; i < 3; i++) {
        struct san_sge g = slot(s, i);
        CHECK_EQ(san_post_recv(s->ep, 10 + i, &g, 1), 0);
    }
    CHECK_EQ(wait_exit_status(s->child), 0);
    uint64_t gone = now_ms();
    struct san_wc wc = wait_one(s->ep);
    CHECK(wc.status == 0 && wc.wr_id == 10 && wc.byte_len <= SAN_RDMA_DESC_SIZE);
    memcpy(desc, s->buf, wc.byte_len);
    *dl = wc.byte_len;
    wc = wait_one(s->ep);
    CHECK(wc.status == 0 && wc.wr_id == 11 && wc.byte_len == 1000);
    for (uint32_t i = 0; i < 1000; i++)
        CHECK(s->buf[4096 + i] == byte_at(i + 7));
    wc = wait_one(s->ep);
    CHECK(wc.wr_id == 12 && wc.opcode == SAN_WC_RECV);
    CHECK_EQ(wc.status, -EPIPE);
    return gone;
}

static int read_reg(struct side *s, const uint8_t *desc, size_t dl)
{
    struct san_sge g = {.addr = s->buf + 3 * 4096, .length = REG, .lkey = san_mr_lkey(s->mr)};
    if (san_rdma_read(s->ep, 20, &g, 1, desc, dl, 0, 0))
        return -ENOTCONN;
    struct san_wc wc = wait_one(s->ep);
    CHECK(wc.wr_id == 20);
    return wc.status;
}

static uint64_t allocations(const struct test_daemon *d)
{
    struct san_stats_rep st;
    test_stats(d, &st);
    return st.allocations;
}

int main(void)
{
    test_init();
    struct test_daemon d;
    test_daemon_start(&d, LIMIT);
    struct san_stats_rep idle;
    test_stats(&d, &idle);
    setenv("SANPROXY_SOCKET", d.sock, 1);

    /* Delivered after death, then EOF; the registration readable; the uid still charged. */
    struct side s;
    uint8_t desc[SAN_RDMA_DESC_SIZE];
    size_t dl;
    start(&s, 7701, SEND_AND_GO);
    expect_delivered(&s, desc, &dl);
    CHECK_EQ(read_reg(&s, desc, dl), 0);
    for (uint32_t i = 0; i < REG; i++)
        if (s.buf[3 * 4096 + i] != byte_at(i))
            test_fail(__FILE__, __LINE__, "byte %u of the gone client's memory", i);
    struct san_ctx *other;
    void *big;
    CHECK_EQ(san_open(NULL, &other), 0);
    CHECK_EQ(san_alloc(other, 5u << 20, 0, &big), -ENOBUFS); /* 4 MiB still the uid's: 12M */
    finish(&s);                                              /* the lingering ends with its peer */
    int err = -ENOBUFS;
    for (int i = 0; i < 200 && err == -ENOBUFS; i++) {
        err = san_alloc(other, 5u << 20, 0, &big);
        if (err == -ENOBUFS) {
            struct timespec t = {0, 10000000};
            nanosleep(&t, NULL);
        }
    }
    CHECK_EQ(err, 0);
    CHECK_EQ(san_free(other, big), 0);
    san_close(other);
    test_wait_idle(&d, &idle);
    printf("delivered after death, then EOF; its memory readable and charged: ok\n");

    /* Bounded: this side never closes, the child's side goes at [nic] linger (3 s) anyway. */
    start(&s, 7702, SEND_AND_GO);
    uint64_t gone = expect_delivered(&s, desc, &dl);
    uint64_t ours = 1; /* this side's buffer */
    while (allocations(&d) > ours && now_ms() - gone < 8000) {
        struct timespec t = {0, 10000000};
        nanosleep(&t, NULL);
    }
    uint64_t waited = now_ms() - gone;
    CHECK(allocations(&d) == ours);
    CHECK(waited >= 2500); /* not before the bound */
    CHECK(read_reg(&s, desc, dl) != 0);
    finish(&s);
    test_wait_idle(&d, &idle);
    printf("a peer that never closes: gone at the bound (%" PRIu64 " ms): ok\n", waited);

    /* Unread data at death: reset. */
    start(&s, 7703, UNREAD_DATA);
    struct san_sge g = slot(&s, 0);
    CHECK_EQ(san_post_recv(s.ep, 10, &g, 1), 0);
    char c;
    CHECK(read(s.sync, &c, 1) == 1);
    memset(s.buf + 4096, 'x', 100);
    struct san_sge m = {.addr = s.buf + 4096, .length = 100, .lkey = san_mr_lkey(s.mr)};
    CHECK_EQ(san_post_send(s.ep, 30, &m, 1, 0), 0);
    struct san_wc wc = wait_one(s.ep);
    CHECK(wc.wr_id == 30 && wc.status == 0);
    CHECK_EQ(wait_exit_status(s.child), 0);
    wc = wait_one(s.ep);
    CHECK(wc.wr_id == 10);
    CHECK_EQ(wc.status, -ECONNRESET);
    finish(&s);
    test_wait_idle(&d, &idle);
    printf("unread data at death: reset: ok\n");

    /* No linger asked: closed with its owner. */
    start(&s, 7704, NO_LINGER);
    for (unsigned i = 0; i < 3; i++) {
        struct san_sge r = slot(&s, i);
        CHECK_EQ(san_post_recv(s.ep, 10 + i, &r, 1), 0);
    }
    CHECK(write(s.sync, "p", 1) == 1);
    CHECK_EQ(wait_exit_status(s.child), 0);
    bool reset = false;
    for (int i = 0; i < 3 && !reset; i++) {
        wc = wait_one(s.ep);
        CHECK(wc.status != -EPIPE);
        reset = wc.status == -ECONNRESET;
    }
    CHECK(reset);
    finish(&s);
    test_wait_idle(&d, &idle);
    printf("no linger asked: reset: ok\n");

    CHECK_EQ(test_daemon_stop(&d), 0);
    printf("ok\n");
    return 0;
}
