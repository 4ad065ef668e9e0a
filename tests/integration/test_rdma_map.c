/* san_rdma_map against the real daemon: a peer's SHARED proxy memory, registered for reading and
 * named by its descriptor, mapped read-only (the bytes, the peer's later writes showing through,
 * an offset range, no write possible); every refusal (memory not SHARED or the peer's own pages
 * -EOPNOTSUPP; a write-only registration, a third context's, the caller's own, a forged host, a
 * range past the registration, a deregistered one -EACCES; garbage -EINVAL; a closed peer
 * -ENOTCONN); the mapping after the peer freed the memory (the old bytes, never the frames' next
 * user's); the per-client limit of SHARED allocations; the daemon idle after. */
#include "harness.h"
#include "nic_pair.h"

#include "client/desc.h" /* to forge a descriptor's host */

#include <sys/mman.h>

#define KIB 1024u
#define MIB (1024u * KIB)

static int map(struct san_ep *ep, const void *desc, const void **addr, size_t *len)
{
    return san_rdma_map(ep, desc, SAN_RDMA_DESC_SIZE, addr, len);
}

static void maps_and_refusals(struct san_ctx *ca, struct san_ctx *cb, struct san_ctx *cc)
{
    struct san_ep *a, *b;
    connect_pair(ca, cb, 7001, &a, &b);
    size_t len = 1 * MIB;
    uint8_t *shared, *plain, *own, *third;
    CHECK_EQ(san_alloc(ca, len, SAN_ALLOC_SHARED, (void **)&shared), 0);
    CHECK_EQ(san_alloc(ca, len, 0, (void **)&plain), 0);
    CHECK_EQ(san_alloc(cc, len, SAN_ALLOC_SHARED, (void **)&third), 0);
    own = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    CHECK(own != MAP_FAILED);
    for (size_t i = 0; i < len; i++)
        shared[i] = (uint8_t)(i * 7 + 3);

    uint8_t desc[SAN_RDMA_DESC_SIZE], part[SAN_RDMA_DESC_SIZE], wo[SAN_RDMA_DESC_SIZE],
        pdesc[SAN_RDMA_DESC_SIZE], odesc[SAN_RDMA_DESC_SIZE], tdesc[SAN_RDMA_DESC_SIZE];
    size_t dl = sizeof(desc);
    struct san_mr *mr, *pmr, *wmr, *plmr, *omr, *tmr;
    CHECK_EQ(san_register_rdma(ca, shared, len, SAN_MEM_READ, desc, &dl, &mr), 0);
    /* A range starting inside a page, in the second half. */
    CHECK_EQ(san_register_rdma(ca, shared + 512 * KIB + 100, 4000, SAN_MEM_READ, part, &dl, &pmr),
             0);
    CHECK_EQ(san_register_rdma(ca, shared, 64 * KIB, SAN_MEM_WRITE, wo, &dl, &wmr), 0);
    CHECK_EQ(san_register_rdma(ca, plain, len, SAN_MEM_READ, pdesc, &dl, &plmr), 0);
    CHECK_EQ(san_register_rdma(ca, own, len, SAN_MEM_READ, odesc, &dl, &omr), 0);
    CHECK_EQ(san_register_rdma(cc, third, len, SAN_MEM_READ, tdesc, &dl, &tmr), 0);

    /* b (cb's end, whose peer is a in ca) maps ca's registration: the bytes, read-only. */
    const uint8_t *m, *mp, *again;
    size_t ml;
    CHECK_EQ(map(b, desc, (const void **)&m, &ml), 0);
    CHECK_EQ(ml, len);
    CHECK(!memcmp(m, shared, len));
    CHECK(mprotect((void *)m, len, PROT_READ | PROT_WRITE) == -1 && errno == EACCES);
    shared[12345] ^= 0xff; /* the peer's later writes show through */
    CHECK_EQ(m[12345], shared[12345]);
    CHECK_EQ(map(b, part, (const void **)&mp, &ml), 0);
    CHECK_EQ(ml, 4000);
    CHECK(mp == m + 512 * KIB + 100); /* one mapping of the allocation serves both */
    CHECK(!memcmp(mp, shared + 512 * KIB + 100, 4000));
    CHECK_EQ(map(b, desc, (const void **)&again, &ml), 0);
    CHECK(again == m);

    /* Refusals, none of which costs the endpoint. */
    CHECK_EQ(map(b, pdesc, (const void **)&again, &ml), -EOPNOTSUPP); /* not SHARED */
    CHECK_EQ(map(b, odesc, (const void **)&again, &ml), -EOPNOTSUPP); /* the peer's own pages */
    CHECK_EQ(map(b, wo, (const void **)&again, &ml), -EACCES);        /* not for reading */
    CHECK_EQ(map(b, tdesc, (const void **)&again, &ml), -EACCES);     /* a third context's */
    CHECK_EQ(map(a, desc, (const void **)&again, &ml), -EACCES);      /* a's own, through a */
    struct san_rdma_desc forged;
    memcpy(&forged, desc, sizeof(forged));
    forged.host_id ^= 1;
    CHECK_EQ(map(b, &forged, (const void **)&again, &ml), -EACCES); /* another host's */
    memcpy(&forged, desc, sizeof(forged));
    forged.len = len + SAN_PAGE_SIZE;
    CHECK_EQ(map(b, &forged, (const void **)&again, &ml), -EACCES); /* past the registration */
    forged.len = len;
    forged.rkey ^= 0x5a5a;
    CHECK_EQ(map(b, &forged, (const void **)&again, &ml), -EACCES); /* no such rkey */
    memcpy(&forged, desc, sizeof(forged));
    forged.magic ^= 1;
    CHECK_EQ(map(b, &forged, (const void **)&again, &ml), -EINVAL);
    CHECK_EQ(san_rdma_map(b, desc, SAN_RDMA_DESC_SIZE - 1, (const void **)&again, &ml), -EINVAL);
    CHECK_EQ(san_rdma_map(b, desc, SAN_RDMA_DESC_SIZE, NULL, &ml), -EINVAL);
    CHECK_EQ(san_deregister(wmr), 0);
    CHECK_EQ(san_deregister(pmr), 0);
    CHECK_EQ(map(b, part, (const void **)&again, &ml), -EACCES); /* deregistered */
    /* The endpoint still works after all of it: an RDMA read of the same range. */
    uint8_t *sink;
    struct san_mr *smr;
    CHECK_EQ(san_alloc(cb, 64 * KIB, 0, (void **)&sink), 0);
    CHECK_EQ(san_register(cb, sink, 64 * KIB, SAN_MEM_READWRITE, &smr), 0);
    struct san_sge sg = {sink, 64 * KIB, san_mr_lkey(smr)};
    CHECK_EQ(san_rdma_read(b, 1, &sg, 1, desc, sizeof(desc), 0, 0), 0);
    struct san_wc wc = wait_one(b);
    CHECK(wc.wr_id == 1 && wc.status == 0);
    CHECK(!memcmp(sink, m, 64 * KIB));

    /* The peer frees the memory: the mapping keeps the old bytes; the frames' next user (a fresh
     * allocation of the same size, likely the same frames) never shows through. */
    uint8_t keep[256];
    memcpy(keep, m + 4096, sizeof(keep));
    CHECK_EQ(san_deregister(mr), 0);
    CHECK_EQ(san_free(ca, shared), 0);
    uint8_t *next;
    CHECK_EQ(san_alloc(ca, len, 0, (void **)&next), 0);
    memset(next, 0xee, len);
    CHECK(!memcmp(m + 4096, keep, sizeof(keep)));
    CHECK_EQ(san_free(ca, next), 0);

    /* A peer that closed: -ENOTCONN. */
    san_ep_close(a);
    struct san_ep *c, *d;
    connect_pair(cc, cb, 7002, &c, &d);
    CHECK_EQ(map(d, tdesc, (const void **)&again, &ml), 0);
    san_ep_close(c);
    for (int i = 0; i < 200 && map(d, tdesc, (const void **)&again, &ml) != -ENOTCONN; i++)
        usleep(10000);
    CHECK_EQ(map(d, tdesc, (const void **)&again, &ml), -ENOTCONN);
    san_ep_close(d);
    san_ep_close(b); /* its mappings go with it */

    CHECK_EQ(san_deregister(plmr), 0);
    CHECK_EQ(san_deregister(omr), 0);
    CHECK_EQ(san_deregister(tmr), 0);
    CHECK_EQ(san_deregister(smr), 0);
    CHECK_EQ(san_free(ca, plain), 0);
    CHECK_EQ(san_free(cc, third), 0);
    CHECK_EQ(san_free(cb, sink), 0);
    munmap(own, len);
}

/* [limits] endpoints bounds a client's SHARED allocations (each holds a descriptor in the
 * daemon); freeing one makes room. */
static void shared_limit(void)
{
    struct test_daemon d;
    struct san_stats_rep idle;
    test_daemon_start(&d, "[limits]\nendpoints = 3\n");
    test_stats(&d, &idle);
    struct san_ctx *ctx;
    CHECK_EQ(san_open(NULL, &ctx), 0);
    void *p[4];
    for (int i = 0; i < 3; i++)
        CHECK_EQ(san_alloc(ctx, 4096, SAN_ALLOC_SHARED, &p[i]), 0);
    CHECK_EQ(san_alloc(ctx, 4096, SAN_ALLOC_SHARED, &p[3]), -ENOBUFS);
    CHECK_EQ(san_alloc(ctx, 4096, 0, &p[3]), 0);
    CHECK_EQ(san_free(ctx, p[3]), 0);
    CHECK_EQ(san_free(ctx, p[0]), 0);
    CHECK_EQ(san_alloc(ctx, 4096, SAN_ALLOC_SHARED, &p[0]), 0);
    san_close(ctx);
    test_wait_idle(&d, &idle);
    CHECK_EQ(test_daemon_stop(&d), 0);
}

int main(void)
{
    struct test_daemon d;
    struct san_stats_rep idle;
    struct san_ctx *ca, *cb, *cc;

    test_init();
    test_daemon_start(&d, NULL);
    test_stats(&d, &idle);
    /* Uncached contexts: a deregistration ends the registration at once. */
    setenv("SAN_RCACHE_MAX_ENTRIES", "0", 1);
    CHECK_EQ(san_open(NULL, &ca), 0);
    CHECK_EQ(san_open(NULL, &cb), 0);
    CHECK_EQ(san_open(NULL, &cc), 0);
    unsetenv("SAN_RCACHE_MAX_ENTRIES");
    maps_and_refusals(ca, cb, cc);
    san_close(ca);
    san_close(cb);
    san_close(cc);
    test_wait_idle(&d, &idle);
    CHECK_EQ(test_daemon_stop(&d), 0);
    shared_limit();
    printf("ok\n");
    return 0;
}
