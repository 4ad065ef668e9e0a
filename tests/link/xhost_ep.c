/* Endpoints across hosts, the programs test_link_netns.sh runs against two linked daemons: a
 * server on one host's daemon and clients on the other's.
 *
 *   xhost_ep server SOCK IP PORT DIR    listens on IP:PORT; writes its RDMA descriptors into DIR
 *                                       (rw: 1 MiB read-write, ro: read-only, wo: write-only, each
 *                                       filled with a pattern), then DIR/ready; echoes every
 *                                       message back, on any number of connections, until killed
 *   xhost_ep client SOCK IP PORT DIR    the endpoint checks across hosts (see main_client)
 *   xhost_ep stream SOCK IP PORT DIR    RDMA writes and sends until one fails: prints its status
 *                                       and how long after the last success it came; exit 0 when
 *                                       it was -ECONNRESET
 *   xhost_ep stale SOCK IP PORT DIR OLD old descriptors (DIR OLD, of a server since restarted) are
 *                                       refused, the new ones work
 *   xhost_ep unreach SOCK IP PORT       connecting to an address nobody serves: -ENETUNREACH
 *   xhost_ep bench SOCK IP PORT DIR     one-shot figures, not a test: 64 B RDMA write round trips
 *                                       (write, then its completion) and 1 MiB writes in a row
 *
 * Prints "ok: ..." per check; exits 1 with a reason at the first failure. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <san/san.h>

#define REGION  (1u << 20)
#define SMALL   (64u << 10)
#define SLOTS   4
#define SLOT    (2u << 20) /* the server's receives */
#define TIMEOUT 20000

static const char *sock_path;
static struct sockaddr_in target;

#define FAIL(...)                                                                                  \
    do {                                                                                           \
        fprintf(stderr, "xhost_ep: " __VA_ARGS__);                                                 \
        fprintf(stderr, " (line %d)\n", __LINE__);                                                 \
        exit(1);                                                                                   \
    } while (0)
#define CHECK_EQ(a, b)                                                                             \
    do {                                                                                           \
        long long a_ = (long long)(a), b_ = (long long)(b);                                        \
        if (a_ != b_)                                                                              \
            FAIL("%s = %lld, expected %s = %lld", #a, a_, #b, b_);                                 \
    } while (0)

static double now_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static void *buffer(size_t len, uint8_t seed)
{
    uint8_t *p = aligned_alloc(4096, len);
    if (!p)
        FAIL("out of memory");
    for (size_t i = 0; i < len; i++)
        p[i] = (uint8_t)(i * 7 + seed);
    return p;
}

static struct san_mr *reg(struct san_ctx *ctx, void *p, size_t len, unsigned access, void *desc)
{
    struct san_mr *mr;
    size_t dl = SAN_RDMA_DESC_SIZE;
    int err = desc ? san_register_rdma(ctx, p, len, access, desc, &dl, &mr)
                   : san_register(ctx, p, len, access, &mr);
    if (err)
        FAIL("register: %s", san_strerror(err));
    return mr;
}

static void save(const char *dir, const char *name, const void *p, size_t len)
{
    char path[512];
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(p, 1, len, f) != len || fclose(f))
        FAIL("writing %s", path);
}

static void load(const char *dir, const char *name, void *p, size_t len)
{
    char path[512];
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    FILE *f = fopen(path, "rb");
    if (!f || fread(p, 1, len, f) != len)
        FAIL("reading %s", path);
    fclose(f);
}

static struct san_wc wait_one(struct san_ep *ep, int timeout_ms)
{
    struct san_wc wc;
    double until = now_s() + timeout_ms / 1000.0;
    while (now_s() < until) {
        if (san_poll(ep, &wc, 1) == 1)
            return wc;
        san_wait(ep, 50);
    }
    FAIL("no completion within %d ms", timeout_ms);
}

/* --- the server ------------------------------------------------------------------------------ */

struct conn {
    struct san_ep *ep;
    bool dead;
};

static void main_server(const char *dir)
{
    struct san_ctx *ctx;
    int err = san_open(sock_path, &ctx);
    if (err)
        FAIL("san_open: %s", san_strerror(err));
    uint8_t desc[SAN_RDMA_DESC_SIZE];
    void *rw = buffer(REGION, 1), *ro = buffer(SMALL, 2), *wo = buffer(SMALL, 3);
    reg(ctx, rw, REGION, SAN_MEM_READWRITE, desc);
    save(dir, "rw", desc, sizeof(desc));
    reg(ctx, ro, SMALL, SAN_MEM_READ, desc);
    save(dir, "ro", desc, sizeof(desc));
    reg(ctx, wo, SMALL, SAN_MEM_WRITE, desc);
    save(dir, "wo", desc, sizeof(desc));
    uint8_t *slots = buffer((size_t)SLOTS * SLOT, 0);
    struct san_mr *smr = reg(ctx, slots, (size_t)SLOTS * SLOT, SAN_MEM_READWRITE, NULL);
    struct san_listener *l;
    if ((err = san_listen(ctx, (struct sockaddr *)&target, sizeof(target), 16, &l)))
        FAIL("san_listen: %s", san_strerror(err));
    save(dir, "ready", "1", 1);
    struct conn c[64] = {0};
    size_t nc = 0;
    for (;;) {
        struct san_ep *ep;
        bool idle = true;
        if (nc < 64 && !san_accept(l, 0, &ep)) {
            c[nc++] = (struct conn){.ep = ep};
            /* Each connection echoes through slot (i % SLOTS): one message at a time. */
            struct san_sge s = {slots + (nc - 1) % SLOTS * (size_t)SLOT, SLOT, san_mr_lkey(smr)};
            if (san_post_recv(ep, 1, &s, 1)) {
                /* Reset before we took it (its client refused an access of its own and went):
                 * no receive, so no completion would ever tell us to close it. */
                c[nc - 1].dead = true;
                san_ep_close(ep);
            }
            idle = false;
        }
        for (size_t i = 0; i < nc; i++) {
            struct san_wc wc;
            if (c[i].dead || san_poll(c[i].ep, &wc, 1) != 1)
                continue;
            idle = false;
            struct san_sge s = {slots + i % SLOTS * (size_t)SLOT, SLOT, san_mr_lkey(smr)};
            if (wc.status) {
                c[i].dead = true; /* its client's checks put it in error, or it went */
                san_ep_close(c[i].ep);
                continue;
            }
            s.length = wc.byte_len;
            if ((wc.opcode == SAN_WC_RECV && san_post_send(c[i].ep, 2, &s, 1, 0)) ||
                (wc.opcode == SAN_WC_SEND && (s.length = SLOT, san_post_recv(c[i].ep, 1, &s, 1)))) {
                c[i].dead = true; /* its peer went before the echo ended */
                san_ep_close(c[i].ep);
            }
        }
        if (idle)
            usleep(200);
    }
}

/* --- the clients ----------------------------------------------------------------------------- */

struct client {
    struct san_ctx *ctx;
    uint8_t *buf, *back;
    struct san_mr *mr, *bmr;
    uint8_t rw[SAN_RDMA_DESC_SIZE], ro[SAN_RDMA_DESC_SIZE], wo[SAN_RDMA_DESC_SIZE];
};

static struct san_ep *connect_to(struct client *cl)
{
    struct san_ep *ep;
    int err = san_connect(cl->ctx, (struct sockaddr *)&target, sizeof(target), TIMEOUT, &ep);
    if (err)
        FAIL("san_connect: %s", san_strerror(err));
    return ep;
}

static void client_open(struct client *cl, const char *dir)
{
    int err = san_open(sock_path, &cl->ctx);
    if (err)
        FAIL("san_open: %s", san_strerror(err));
    cl->buf = buffer(4 * REGION, 9);
    cl->back = buffer(2 * REGION, 0);
    cl->mr = reg(cl->ctx, cl->buf, 4 * REGION, SAN_MEM_READWRITE, NULL);
    cl->bmr = reg(cl->ctx, cl->back, 2 * REGION, SAN_MEM_READWRITE, NULL);
    load(dir, "rw", cl->rw, sizeof(cl->rw));
    load(dir, "ro", cl->ro, sizeof(cl->ro));
    load(dir, "wo", cl->wo, sizeof(cl->wo));
}

static void client_close(struct client *cl)
{
    san_close(cl->ctx); /* its registrations go with it */
    free(cl->buf);
    free(cl->back);
}

/* One echo of len bytes: sent from buf, received into back, equal. */
static void echo(struct client *cl, struct san_ep *ep, uint32_t len)
{
    struct san_sge r = {cl->back, 2 * REGION, san_mr_lkey(cl->bmr)};
    struct san_sge s = {cl->buf, len, san_mr_lkey(cl->mr)};
    for (uint32_t i = 0; i < len; i++)
        cl->buf[i] = (uint8_t)(i * 13 + len);
    CHECK_EQ(san_post_recv(ep, 10, &r, 1), 0);
    CHECK_EQ(san_post_send(ep, 11, &s, 1, 0), 0);
    for (int got = 0; got < 2; got++) {
        struct san_wc wc = wait_one(ep, TIMEOUT);
        CHECK_EQ(wc.status, 0);
        CHECK_EQ(wc.byte_len, len);
        CHECK_EQ(wc.wr_id, wc.opcode == SAN_WC_SEND ? 11 : 10);
    }
    if (memcmp(cl->buf, cl->back, len))
        FAIL("echo of %u bytes differs", len);
}

/* An RDMA request of len bytes at off of desc; its completion's status. */
static int rdma(struct client *cl, struct san_ep *ep, bool write, const void *desc, uint64_t off,
                uint32_t len, uint8_t *local, struct san_mr *mr)
{
    struct san_sge s = {local, len, san_mr_lkey(mr)};
    int err = write ? san_rdma_write(ep, 20, &s, 1, desc, SAN_RDMA_DESC_SIZE, off, 0)
                    : san_rdma_read(ep, 21, &s, 1, desc, SAN_RDMA_DESC_SIZE, off, 0);
    if (err)
        return err;
    struct san_wc wc = wait_one(ep, TIMEOUT);
    CHECK_EQ(wc.wr_id, write ? 20 : 21);
    if (!wc.status)
        CHECK_EQ(wc.byte_len, len);
    return wc.status;
    (void)cl;
}

/* A refused request on a connection of its own: -EACCES, and the endpoint stays in error (the
 * next request is flushed, nothing succeeds). */
static void refused(struct client *cl, const char *what, bool write, const void *desc, uint64_t off,
                    uint32_t len)
{
    struct san_ep *ep = connect_to(cl);
    CHECK_EQ(rdma(cl, ep, write, desc, off, len, cl->back, cl->bmr), -EACCES);
    int st = rdma(cl, ep, false, cl->rw, 0, 16, cl->back, cl->bmr);
    if (st != -ECANCELED && st != -ENOTCONN)
        FAIL("%s: the request after the refusal: %s", what, san_strerror(st));
    san_ep_close(ep);
    printf("ok: %s refused (-EACCES)\n", what);
}

static void main_client(const char *dir)
{
    struct client cl;
    client_open(&cl, dir);
    struct san_ep *ep = connect_to(&cl);
    printf("ok: connected across hosts\n");
    static const uint32_t sizes[] = {0, 1, 100, 15872, 15873, 65536, 1000000, REGION};
    for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++)
        echo(&cl, ep, sizes[i]);
    printf("ok: send/recv echoes, 0 B to 1 MiB\n");

    /* RDMA read of the read-only region: the server's pattern. */
    CHECK_EQ(rdma(&cl, ep, false, cl.ro, 0, SMALL, cl.back, cl.bmr), 0);
    for (uint32_t i = 0; i < SMALL; i++)
        if (cl.back[i] != (uint8_t)(i * 7 + 2))
            FAIL("RDMA read: byte %u", i);
    /* RDMA write 1 MiB into rw, read it back. */
    for (uint32_t i = 0; i < REGION; i++)
        cl.buf[i] = (uint8_t)(i * 31 + 5);
    CHECK_EQ(rdma(&cl, ep, true, cl.rw, 0, REGION, cl.buf, cl.mr), 0);
    memset(cl.back, 0, REGION);
    CHECK_EQ(rdma(&cl, ep, false, cl.rw, 0, REGION, cl.back, cl.bmr), 0);
    if (memcmp(cl.buf, cl.back, REGION))
        FAIL("RDMA write then read: differs");
    /* At an offset, with several pieces. */
    struct san_sge two[2] = {{cl.buf + 100, 3000, san_mr_lkey(cl.mr)},
                             {cl.buf + 70000, 40000, san_mr_lkey(cl.mr)}};
    CHECK_EQ(san_rdma_write(ep, 30, two, 2, cl.rw, SAN_RDMA_DESC_SIZE, 5000, 0), 0);
    struct san_wc wc = wait_one(ep, TIMEOUT);
    CHECK_EQ(wc.status, 0);
    CHECK_EQ(wc.byte_len, 43000);
    CHECK_EQ(rdma(&cl, ep, false, cl.rw, 5000, 43000, cl.back, cl.bmr), 0);
    if (memcmp(cl.back, cl.buf + 100, 3000) || memcmp(cl.back + 3000, cl.buf + 70000, 40000))
        FAIL("RDMA write of two pieces at an offset: differs");
    /* A write-only region takes writes. */
    CHECK_EQ(rdma(&cl, ep, true, cl.wo, 0, SMALL, cl.buf, cl.mr), 0);
    printf("ok: RDMA write and read across hosts (1 MiB, pieces, offsets, ro/wo access)\n");
    echo(&cl, ep, 5000); /* still well */
    san_ep_close(ep);

    /* What the target must refuse, before a byte moves. */
    refused(&cl, "a write to a read-only region", true, cl.ro, 0, 16);
    refused(&cl, "a read of a write-only region", false, cl.wo, 0, 16);
    refused(&cl, "a write past the region's end", true, cl.rw, REGION - 10, 100);
    refused(&cl, "a read past the region's end", false, cl.rw, REGION - 10, 100);
    uint8_t bad[SAN_RDMA_DESC_SIZE];
    memcpy(bad, cl.rw, sizeof(bad));
    bad[32] ^= 0x5a; /* the rkey */
    refused(&cl, "a bad rkey", true, bad, 0, 16);
    memcpy(bad, cl.rw, sizeof(bad));
    bad[8] ^= 0x01; /* host_id: a descriptor of a third host */
    refused(&cl, "a descriptor of a third host", true, bad, 0, 16);
    uint8_t mine[SAN_RDMA_DESC_SIZE];
    reg(cl.ctx, cl.back + REGION, SMALL, SAN_MEM_READWRITE, mine);
    refused(&cl, "a descriptor of the initiator's own host", true, mine, 0, 16);
    /* Requests pipelined behind a refused one: flushed, and none of them ran at the target. */
    ep = connect_to(&cl);
    memset(cl.buf + 3 * REGION, 0xe7, 4096);
    struct san_sge good = {cl.buf + 3 * REGION, 4096, san_mr_lkey(cl.mr)};
    CHECK_EQ(san_rdma_write(ep, 50, &good, 1, cl.rw, SAN_RDMA_DESC_SIZE, 8192, 0), 0);
    CHECK_EQ(san_rdma_write(ep, 51, &good, 1, cl.ro, SAN_RDMA_DESC_SIZE, 0, 0), 0);
    for (int i = 0; i < 4; i++)
        CHECK_EQ(san_rdma_write(ep, 52 + i, &good, 1, cl.rw, SAN_RDMA_DESC_SIZE,
                                100000 + 4096 * (uint64_t)i, 0),
                 0);
    static const int want[] = {0, -EACCES, -ECANCELED, -ECANCELED, -ECANCELED, -ECANCELED};
    for (int i = 0; i < 6; i++) {
        struct san_wc w = wait_one(ep, TIMEOUT);
        CHECK_EQ(w.wr_id, 50 + i);
        CHECK_EQ(w.status, want[i]);
    }
    san_ep_close(ep);
    ep = connect_to(&cl);
    CHECK_EQ(rdma(&cl, ep, false, cl.rw, 8192, 4096, cl.back, cl.bmr), 0);
    if (memcmp(cl.back, cl.buf + 3 * REGION, 4096))
        FAIL("the write before the refused one did not land");
    CHECK_EQ(rdma(&cl, ep, false, cl.rw, 100000, 4 * 4096, cl.back, cl.bmr), 0);
    if (memcmp(cl.back, cl.buf + 100000, 4 * 4096)) /* still the 1 MiB write's bytes */
        FAIL("a write flushed behind a refused one ran at the target");
    san_ep_close(ep);
    printf("ok: writes pipelined behind a refused one are flushed, none ran at the target\n");

    /* Nothing of the refused write past the end reached the region. */
    ep = connect_to(&cl);
    CHECK_EQ(rdma(&cl, ep, false, cl.rw, REGION - 10, 10, cl.back, cl.bmr), 0);
    if (memcmp(cl.back, cl.buf + REGION - 10, 10))
        FAIL("the refused write changed the region");
    printf("ok: the refused writes left the target's memory as it was\n");

    /* A send larger than the receive: -EMSGSIZE on both sides. */
    struct san_sge big = {cl.buf, SLOT + 1, san_mr_lkey(cl.mr)};
    memset(cl.buf, 1, SLOT + 1);
    struct san_ep *e2 = connect_to(&cl);
    big.length = SLOT + 1;
    CHECK_EQ(san_post_send(e2, 40, &big, 1, 0), 0);
    wc = wait_one(e2, TIMEOUT);
    CHECK_EQ(wc.status, -EMSGSIZE);
    san_ep_close(e2);
    printf("ok: a send larger than the peer's receive: -EMSGSIZE\n");
    san_ep_close(ep);
    client_close(&cl);
}

static void main_stream(const char *dir)
{
    struct client cl;
    client_open(&cl, dir);
    struct san_ep *ep = connect_to(&cl);
    save(dir, "streaming", "1", 1);
    double last = now_s();
    for (uint64_t n = 0;; n++) {
        int st = rdma(&cl, ep, true, cl.rw, 0, REGION, cl.buf, cl.mr);
        if (!st) {
            last = now_s();
            continue;
        }
        printf("stream: %llu writes, then %s %.2f s after the last one that completed\n",
               (unsigned long long)n, san_strerror(st), now_s() - last);
        /* Later requests complete too, with the reset or flushed. */
        int st2 = rdma(&cl, ep, false, cl.rw, 0, 16, cl.back, cl.bmr);
        if (st2 != -ECONNRESET && st2 != -ECANCELED && st2 != -ENOTCONN)
            FAIL("a request after the reset: %s", san_strerror(st2));
        san_ep_close(ep);
        client_close(&cl);
        exit(st == -ECONNRESET ? 0 : 1);
    }
}

static void main_stale(const char *dir, const char *old)
{
    struct client cl;
    client_open(&cl, dir);
    uint8_t o[SAN_RDMA_DESC_SIZE];
    load(old, "rw", o, sizeof(o));
    struct san_ep *ep = connect_to(&cl);
    CHECK_EQ(rdma(&cl, ep, true, o, 0, 16, cl.buf, cl.mr), -EACCES);
    san_ep_close(ep);
    printf("ok: a descriptor of the restarted daemon's old life: -EACCES\n");
    ep = connect_to(&cl);
    CHECK_EQ(rdma(&cl, ep, true, cl.rw, 0, 4096, cl.buf, cl.mr), 0);
    echo(&cl, ep, 70000);
    san_ep_close(ep);
    printf("ok: new connections and descriptors work after the restart\n");
    client_close(&cl);
}

static void main_bench(const char *dir)
{
    struct client cl;
    client_open(&cl, dir);
    struct san_ep *ep = connect_to(&cl);
    for (int i = 0; i < 100; i++)
        CHECK_EQ(rdma(&cl, ep, true, cl.rw, 0, 64, cl.buf, cl.mr), 0);
    int n = 5000;
    double t0 = now_s();
    for (int i = 0; i < n; i++)
        CHECK_EQ(rdma(&cl, ep, true, cl.rw, 0, 64, cl.buf, cl.mr), 0);
    double lat = (now_s() - t0) / n;
    int m = 300;
    t0 = now_s();
    for (int i = 0; i < m; i++)
        CHECK_EQ(rdma(&cl, ep, true, cl.rw, 0, REGION, cl.buf, cl.mr), 0);
    double bw = (double)m * REGION / (now_s() - t0);
    printf("{\"rdma_write_64B_us\": %.1f, \"rdma_write_1MiB_GB_per_s\": %.3f}\n", lat * 1e6,
           bw / 1e9);
    san_ep_close(ep);
    client_close(&cl);
}

static void main_unreach(void)
{
    struct san_ctx *ctx;
    struct san_ep *ep;
    if (san_open(sock_path, &ctx))
        FAIL("san_open");
    CHECK_EQ(san_connect(ctx, (struct sockaddr *)&target, sizeof(target), TIMEOUT, &ep),
             -ENETUNREACH);
    san_close(ctx);
    printf("ok: an address nobody serves: -ENETUNREACH\n");
}

int main(int argc, char **argv)
{
    if (argc < 5)
        FAIL("usage: xhost_ep server|client|stream|stale|unreach SOCK IP PORT [DIR [OLD]]");
    setvbuf(stdout, NULL, _IOLBF, 0);
    sock_path = argv[2];
    target =
        (struct sockaddr_in){.sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(argv[4]))};
    if (inet_pton(AF_INET, argv[3], &target.sin_addr) != 1)
        FAIL("bad address %s", argv[3]);
    if (!strcmp(argv[1], "unreach"))
        main_unreach();
    else if (argc < 6)
        FAIL("no DIR");
    else if (!strcmp(argv[1], "server"))
        main_server(argv[5]);
    else if (!strcmp(argv[1], "client"))
        main_client(argv[5]);
    else if (!strcmp(argv[1], "stream"))
        main_stream(argv[5]);
    else if (!strcmp(argv[1], "bench"))
        main_bench(argv[5]);
    else if (!strcmp(argv[1], "stale") && argc > 6)
        main_stale(argv[5], argv[6]);
    else
        FAIL("unknown mode %s", argv[1]);
    return 0;
}
