/* The NIC under load and under death, against the real daemon:
 * - 8 threads posting RDMA writes and sends on one endpoint: every byte lands where it was aimed;
 * - PAIRS endpoint pairs, OPS mixed operations each (send/receive, RDMA write, RDMA read) with the
 *   data verified and the stats consistent afterwards;
 * - a peer process killed with SIGKILL in the middle of a stream, swept over when the kill lands:
 *   the survivor's receives complete with -ECONNRESET (no hang), its later posts are refused, and
 *   the daemon returns to idle. */
#include "harness.h"
#include "nic_pair.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <sys/mman.h>

#define KIB     1024u
#define PAIRS   32
#define THREADS 8

static unsigned ops_per_pair(void)
{
    const char *s = getenv("SAN_NIC_STRESS_OPS");
    unsigned n = s ? (unsigned)strtoul(s, NULL, 10) : 0;
    return n > 2000 ? n : 2000;
}

/* Takes completions until n arrived; all must be successful. */
static void reap(struct san_ep *ep, unsigned n)
{
    struct san_wc wc[16];
    while (n) {
        int got = san_poll(ep, wc, n < 16 ? n : 16);
        CHECK(got >= 0);
        for (int i = 0; i < got; i++)
            if (wc[i].status)
                test_fail(__FILE__, __LINE__, "wr %llu op %u: %s", (unsigned long long)wc[i].wr_id,
                          wc[i].opcode, san_strerror(wc[i].status));
        n -= (unsigned)got;
        if (!got)
            CHECK(san_wait(ep, 10000) == 0);
    }
}

/* --- 8 threads on one endpoint -------------------------------------------------------------- */

struct poster {
    struct san_ep *ep;
    char *local;
    uint32_t lkey;
    const void *desc;
    unsigned id, n;
    _Atomic unsigned *posted;
};

static void *poster_main(void *arg)
{
    struct poster *p = arg;
    for (unsigned i = 0; i < p->n; i++) {
        uint64_t off = ((uint64_t)p->id * p->n + i) * 512;
        memset(p->local + off, (int)(p->id * 31 + i), 512);
        struct san_sge s = {p->local + off, 512, p->lkey};
        int err;
        while ((err = san_rdma_write(p->ep, off, &s, 1, p->desc, SAN_RDMA_DESC_SIZE, off, 0)) ==
               -EAGAIN)
            sched_yield();
        CHECK_EQ(err, 0);
        atomic_fetch_add(p->posted, 1);
    }
    return NULL;
}

static void threads_on_one_endpoint(struct san_ctx *ca, struct san_ctx *cb)
{
    struct san_ep *a, *b;
    connect_pair(ca, cb, 7000, &a, &b);
    unsigned per = 200;
    size_t len = (size_t)THREADS * per * 512;
    char *local = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    char *remote = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    struct san_mr *lmr, *rmr;
    char desc[SAN_RDMA_DESC_SIZE];
    size_t dl = sizeof(desc);
    CHECK_EQ(san_register(ca, local, len, SAN_MEM_READ, &lmr), 0);
    CHECK_EQ(san_register_rdma(cb, remote, len, SAN_MEM_WRITE, desc, &dl, &rmr), 0);
    _Atomic unsigned posted = 0;
    struct poster p[THREADS];
    pthread_t t[THREADS];
    for (unsigned i = 0; i < THREADS; i++) {
        p[i] = (struct poster){a, local, san_mr_lkey(lmr), desc, i, per, &posted};
        CHECK(!pthread_create(&t[i], NULL, poster_main, &p[i]));
    }
    /* Reap while they post: the queue is only 64 deep. */
    unsigned done = 0;
    struct san_wc wc[16];
    while (done < THREADS * per) {
        int got = san_poll(a, wc, 16);
        for (int i = 0; i < got; i++)
            CHECK_EQ(wc[i].status, 0);
        done += (unsigned)(got > 0 ? got : 0);
        if (got <= 0)
            san_wait(a, 100);
    }
    for (unsigned i = 0; i < THREADS; i++)
        CHECK(!pthread_join(t[i], NULL));
    CHECK(!memcmp(local, remote, len));
    san_ep_close(a);
    san_ep_close(b);
    CHECK_EQ(san_deregister(lmr), 0);
    CHECK_EQ(san_deregister(rmr), 0);
    munmap(local, len);
    munmap(remote, len);
}

/* --- many pairs, mixed operations ----------------------------------------------------------- */

struct pair {
    struct san_ep *a, *b;
    char *abuf, *bbuf; /* 64 KiB each */
    struct san_mr *amr, *bmr;
    char bdesc[SAN_RDMA_DESC_SIZE];
    uint64_t seed;
};

static uint64_t next(uint64_t *s)
{
    *s = *s * 6364136223846793005u + 1442695040888963407u;
    return *s >> 33;
}

static void one_op(struct pair *p, unsigned i)
{
    uint32_t len = 1 + (uint32_t)(next(&p->seed) % 8192);
    uint32_t off = (uint32_t)(next(&p->seed) % (24 * KIB)); /* off + len stays below 32 KiB */
    for (uint32_t k = 0; k < len; k++)
        p->abuf[off + k] = (char)(i + k);
    struct san_sge s = {p->abuf + off, len, san_mr_lkey(p->amr)};
    switch (next(&p->seed) % 3) {
    case 0: { /* send into b's upper half */
        struct san_sge r = {p->bbuf + 32 * KIB, 32 * KIB, san_mr_lkey(p->bmr)};
        CHECK_EQ(san_post_recv(p->b, i, &r, 1), 0);
        CHECK_EQ(san_post_send(p->a, i, &s, 1, 0), 0);
        reap(p->b, 1);
        reap(p->a, 1);
        CHECK(!memcmp(p->bbuf + 32 * KIB, p->abuf + off, len));
        break;
    }
    case 1: /* write, then read back into a's upper half */
        CHECK_EQ(san_rdma_write(p->a, i, &s, 1, p->bdesc, sizeof(p->bdesc), off, 0), 0);
        struct san_sge r = {p->abuf + 32 * KIB, len, san_mr_lkey(p->amr)};
        CHECK_EQ(san_rdma_read(p->a, i, &r, 1, p->bdesc, sizeof(p->bdesc), off, 0), 0);
        reap(p->a, 2);
        CHECK(!memcmp(p->abuf + 32 * KIB, p->abuf + off, len));
        CHECK(!memcmp(p->bbuf + off, p->abuf + off, len));
        break;
    default: /* unsignaled write, then a signaled send that proves it landed */
        CHECK_EQ(san_rdma_write(p->a, i, &s, 1, p->bdesc, sizeof(p->bdesc), off, SAN_WR_UNSIGNALED),
                 0);
        struct san_sge r2 = {p->bbuf + 60 * KIB, 16, san_mr_lkey(p->bmr)};
        struct san_sge s2 = {p->abuf, 16, san_mr_lkey(p->amr)};
        CHECK_EQ(san_post_recv(p->b, i, &r2, 1), 0);
        CHECK_EQ(san_post_send(p->a, i, &s2, 1, 0), 0);
        reap(p->b, 1);
        CHECK(!memcmp(p->bbuf + off, p->abuf + off, len));
        reap(p->a, 1);
        break;
    }
}

static void many_pairs(const struct test_daemon *d, struct san_ctx *ca, struct san_ctx *cb)
{
    static struct pair pairs[PAIRS];
    unsigned ops = ops_per_pair();
    for (int i = 0; i < PAIRS; i++) {
        struct pair *p = &pairs[i];
        connect_pair(ca, cb, (uint16_t)(7100 + i), &p->a, &p->b);
        p->abuf = mmap(NULL, 64 * KIB, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        p->bbuf = mmap(NULL, 64 * KIB, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        size_t dl = sizeof(p->bdesc);
        CHECK_EQ(san_register(ca, p->abuf, 64 * KIB, SAN_MEM_READWRITE, &p->amr), 0);
        CHECK_EQ(
            san_register_rdma(cb, p->bbuf, 64 * KIB, SAN_MEM_READWRITE, p->bdesc, &dl, &p->bmr), 0);
        p->seed = (uint64_t)i + 1;
    }
    struct san_stats_rep before, after;
    test_stats(d, &before);
    CHECK_EQ(before.endpoints, 2 * PAIRS);
    for (unsigned i = 0; i < ops; i++)
        for (int k = 0; k < PAIRS; k++)
            one_op(&pairs[k], i);
    test_stats(d, &after);
    CHECK(after.nic_ops > before.nic_ops && after.nic_bytes > before.nic_bytes);
    for (int i = 0; i < PAIRS; i++) {
        struct pair *p = &pairs[i];
        san_ep_close(p->a);
        san_ep_close(p->b);
        CHECK_EQ(san_deregister(p->amr), 0);
        CHECK_EQ(san_deregister(p->bmr), 0);
        munmap(p->abuf, 64 * KIB);
        munmap(p->bbuf, 64 * KIB);
    }
}

/* --- SIGKILL mid-stream --------------------------------------------------------------------- */

/* The child connects and streams RDMA writes and sends into the parent until it is killed. */
static void streamer(uint16_t port, const char *desc)
{
    struct san_ctx *ctx;
    struct san_ep *ep;
    if (san_open(NULL, &ctx))
        _exit(2);
    struct sockaddr_in sa = addr4("127.0.0.1", port);
    if (san_connect(ctx, (struct sockaddr *)&sa, sizeof(sa), 10000, &ep))
        _exit(3);
    char *buf = mmap(NULL, 256 * KIB, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    memset(buf, 7, 256 * KIB);
    struct san_mr *mr;
    if (san_register(ctx, buf, 256 * KIB, SAN_MEM_READ, &mr))
        _exit(4);
    struct san_sge w = {buf, 256 * KIB, san_mr_lkey(mr)}, s = {buf, 64, san_mr_lkey(mr)};
    for (uint64_t i = 0;; i++) {
        struct san_wc wc[8];
        san_rdma_write(ep, i, &w, 1, desc, SAN_RDMA_DESC_SIZE, 0, SAN_WR_UNSIGNALED);
        san_post_send(ep, i, &s, 1, SAN_WR_UNSIGNALED);
        san_poll(ep, wc, 8);
    }
}

static void killed_mid_stream(const struct test_daemon *d, const struct san_stats_rep *idle)
{
    for (int round = 0; round < 8; round++) {
        struct san_ctx *ctx;
        CHECK_EQ(san_open(NULL, &ctx), 0);
        uint16_t port = (uint16_t)(7300 + round);
        struct sockaddr_in sa = addr4("127.0.0.1", port);
        struct san_listener *l;
        CHECK_EQ(san_listen(ctx, (struct sockaddr *)&sa, sizeof(sa), 1, &l), 0);
        char *sink =
            mmap(NULL, 256 * KIB, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        struct san_mr *mr, *rmr;
        char desc[SAN_RDMA_DESC_SIZE];
        size_t dl = sizeof(desc);
        CHECK_EQ(san_register_rdma(ctx, sink, 256 * KIB, SAN_MEM_READWRITE, desc, &dl, &mr), 0);
        CHECK_EQ(san_register(ctx, sink, 4 * KIB, SAN_MEM_READWRITE, &rmr), 0);
        pid_t c = fork();
        CHECK(c >= 0);
        if (c == 0)
            streamer(port, desc);
        struct san_ep *ep;
        CHECK_EQ(san_accept(l, 10000, &ep), 0);
        struct san_sge r = {sink, 4 * KIB, san_mr_lkey(rmr)};
        for (int i = 0; i < 32; i++)
            CHECK_EQ(san_post_recv(ep, (uint64_t)i, &r, 1), 0);
        /* Let the stream run for a while (a different moment each round), then kill it. */
        unsigned received = 0;
        struct timespec ts = {0, (long)(round * 3 + 1) * 1000000};
        nanosleep(&ts, NULL);
        kill(c, SIGKILL);
        CHECK(waitpid(c, NULL, 0) == c);
        /* Every receive completes: data (posted again while the endpoint lives), or the reset.
         * None hangs. */
        int outstanding = 32, resets = 0;
        while (outstanding) {
            struct san_wc wc;
            int n = san_poll(ep, &wc, 1);
            if (n == 1) {
                outstanding--;
                if (wc.status == 0) {
                    received++;
                    int err = san_post_recv(ep, 100, &r, 1);
                    CHECK(err == 0 || err == -ENOTCONN);
                    outstanding += !err;
                } else {
                    CHECK_EQ(wc.status, -ECONNRESET);
                    resets++;
                }
            } else if (san_wait(ep, 10000)) {
                test_fail(__FILE__, __LINE__, "round %d: the survivor's receives hang", round);
            }
        }
        (void)resets; /* all 32 may have been filled before the kill */
        (void)received;
        struct san_sge s = {sink, 8, san_mr_lkey(rmr)};
        CHECK_EQ(san_post_send(ep, 1, &s, 1, 0), -ENOTCONN);
        san_ep_close(ep);
        san_listener_close(l);
        CHECK_EQ(san_deregister(rmr), 0);
        CHECK_EQ(san_deregister(mr), 0);
        san_close(ctx);
        munmap(sink, 256 * KIB);
        test_wait_idle(d, idle);
    }
}

int main(void)
{
    struct test_daemon d;
    struct san_stats_rep idle, s;
    struct san_ctx *ca, *cb;

    test_init();
    setvbuf(stdout, NULL, _IOLBF, 0);
    test_daemon_start(&d, NULL);
    test_stats(&d, &idle);
    CHECK_EQ(san_open(NULL, &ca), 0);
    CHECK_EQ(san_open(NULL, &cb), 0);
    printf("threads on one endpoint\n");
    threads_on_one_endpoint(ca, cb);
    printf("%d pairs x %u operations\n", PAIRS, ops_per_pair());
    many_pairs(&d, ca, cb);
    san_close(ca);
    san_close(cb);
    printf("killed mid-stream\n");
    killed_mid_stream(&d, &idle);
    test_wait_idle(&d, &idle);
    for (int i = 0; i < 2000; i++) {
        test_stats(&d, &s);
        if (!s.endpoints)
            break;
        usleep(1000);
    }
    CHECK_EQ(s.endpoints, 0);
    CHECK_EQ(test_daemon_stop(&d), 0);
    printf("ok\n");
    return 0;
}
