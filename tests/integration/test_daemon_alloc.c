/* Proxy allocations through the real daemon: allocate, map and use; physical addresses; LOW
 * allocations below 4 GiB on a NOLOWMEM host (where nothing else gets low memory); zeroed memory;
 * bad arguments; handles are per client, stale once freed and listed page by page; freeing returns
 * the stats to idle. */
#include "harness.h"

#define GIB (UINT64_C(1) << 30)

static void basic(void)
{
    struct test_daemon d;
    struct san_stats_rep idle, s;
    struct san_ctx *ctx;
    void *va, *low;
    san_paddr_t pa, pa2;

    test_daemon_start(&d, NULL);
    test_stats(&d, &idle);
    CHECK_EQ(san_open(NULL, &ctx), 0);

    CHECK_EQ(san_alloc(ctx, 100000, 0, &va), 0);
    unsigned char *p = va;
    for (size_t i = 0; i < 100000; i++)
        CHECK(p[i] == 0);
    memset(p, 0xab, 100000);
    CHECK_EQ(san_physical_address(ctx, p, &pa), 0);
    CHECK(pa % SAN_PAGE_SIZE == 0);
    CHECK(pa >= 4 * GIB); /* highest memory first */
    CHECK_EQ(san_physical_address(ctx, p + 5000, &pa2), 0);
    CHECK(pa2 == pa + 5000);
    test_stats(&d, &s);
    CHECK(s.allocations == 1);
    CHECK(s.allocated_bytes == 102400); /* whole pages */
    CHECK(s.free_bytes == idle.free_bytes - 102400);

    CHECK_EQ(san_alloc(ctx, 3 * SAN_PAGE_SIZE, SAN_ALLOC_LOW | SAN_ALLOC_CONTIGUOUS, &low), 0);
    CHECK_EQ(san_physical_address(ctx, low, &pa), 0);
    CHECK(pa + 3 * SAN_PAGE_SIZE <= 4 * GIB);
    test_stats(&d, &s);
    CHECK(s.low_free_bytes == idle.low_free_bytes - 3 * SAN_PAGE_SIZE);

    /* Bad arguments: clear errors, nothing changes. */
    void *x;
    CHECK_EQ(san_alloc(ctx, 0, 0, &x), -EINVAL);
    CHECK_EQ(san_alloc(ctx, 4096, 8, &x), -EINVAL); /* an unknown flag */
    CHECK_EQ(san_alloc(ctx, 4096, 0, NULL), -EINVAL);
    CHECK_EQ(san_alloc(NULL, 4096, 0, &x), -EINVAL);
    CHECK_EQ(san_alloc(ctx, (size_t)1 << 50, 0, &x), -ENOMEM);
    CHECK_EQ(san_free(ctx, p + 4096), -EINVAL);
    CHECK_EQ(san_free(ctx, NULL), -EINVAL);
    CHECK_EQ(san_free(NULL, p), -EINVAL);
    CHECK_EQ(san_physical_address(ctx, &x, &pa), -EINVAL);
    CHECK_EQ(san_physical_address(ctx, NULL, &pa), -EINVAL);

    /* Another client cannot name this client's allocation (handles are per client). */
    int fd = test_connect(&d);
    struct san_msg req, rep;
    san_proto_init(&req, SAN_OP_FREE, 0);
    req.u.free_req.handle = 1;
    CHECK_EQ(test_call(fd, &req, &rep), -EINVAL);
    close(fd);

    /* The bytes are still ours after all that. */
    for (size_t i = 0; i < 100000; i++)
        CHECK(p[i] == 0xab);
    CHECK_EQ(san_free(ctx, va), 0);
    CHECK_EQ(san_free(ctx, va), -EINVAL);
    CHECK_EQ(san_free(ctx, low), 0);
    test_stats(&d, &s);
    CHECK(s.clients == 2 && !s.allocations && !s.allocated_bytes);
    CHECK(s.free_bytes == idle.free_bytes && s.low_free_bytes == idle.low_free_bytes);

    /* Many allocations, each its own memfd and mapping; a fresh allocation is zeroed even where
     * an earlier one wrote. */
    void *v[64];
    for (int i = 0; i < 64; i++) {
        CHECK_EQ(san_alloc(ctx, 8192, i & 1 ? SAN_ALLOC_LOW : 0, &v[i]), 0);
        memset(v[i], i + 1, 8192);
    }
    for (int i = 0; i < 64; i++) {
        for (int j = 0; j < 8192; j += 512)
            CHECK(((unsigned char *)v[i])[j] == i + 1);
        CHECK_EQ(san_free(ctx, v[i]), 0);
    }
    CHECK_EQ(san_alloc(ctx, 8192, 0, &va), 0);
    CHECK(((unsigned char *)va)[100] == 0);

    /* san_close releases what is left. */
    san_close(ctx);
    test_wait_idle(&d, &idle);
    CHECK_EQ(test_daemon_stop(&d), 0);
}

static void nolowmem(void)
{
    struct test_daemon d;
    struct san_stats_rep idle, s;
    struct san_ctx *ctx;
    void *va;
    san_paddr_t pa;

    /* 4 GiB of RAM: 3 GiB below 4 GiB, 1 GiB above. */
    test_daemon_start(&d, "[machine]\nram_size = 4G\nnolowmem = true\n");
    test_stats(&d, &idle);
    CHECK(idle.nolowmem);
    CHECK_EQ(san_open(NULL, &ctx), 0);

    /* Ordinary allocations never get low memory, even when high memory runs out. */
    CHECK_EQ(san_alloc(ctx, 512 << 20, 0, &va), 0);
    CHECK_EQ(san_physical_address(ctx, va, &pa), 0);
    CHECK(pa >= 4 * GIB);
    void *big;
    CHECK_EQ(san_alloc(ctx, 768 << 20, 0, &big), -ENOMEM);
    test_stats(&d, &s);
    CHECK(s.low_free_bytes == idle.low_free_bytes);

    /* LOW allocations do get it. */
    void *low;
    CHECK_EQ(san_alloc(ctx, 1 << 20, SAN_ALLOC_LOW, &low), 0);
    CHECK_EQ(san_physical_address(ctx, low, &pa), 0);
    CHECK(pa < 4 * GIB);
    memset(low, 0x5a, 1 << 20);
    CHECK_EQ(san_free(ctx, low), 0);

    /* The pattern check: freed low memory is clean again. */
    int fd = test_connect(&d);
    struct san_msg req, rep;
    san_proto_init(&req, SAN_OP_CHECK_LOWMEM, 0);
    CHECK_EQ(test_call(fd, &req, &rep), 0);
    CHECK(rep.u.lowmem_rep.nolowmem == 1);
    CHECK(rep.u.lowmem_rep.dirty_frames == 0);
    close(fd);

    CHECK_EQ(san_free(ctx, va), 0);
    san_close(ctx);
    test_wait_idle(&d, &idle);
    CHECK_EQ(test_daemon_stop(&d), 0);
}

/* A 32-bit NIC: proxy memory is memory the NIC reaches, so below 4 GiB even without LOW, and on
 * a NOLOWMEM host too. */
static void nic32(void)
{
    struct test_daemon d;
    struct san_stats_rep idle;
    struct san_ctx *ctx;
    void *va;
    san_paddr_t pa;

    test_daemon_start(&d, "[machine]\nnolowmem = true\n[nic]\ndma_address_width = 32\n");
    test_stats(&d, &idle);
    CHECK_EQ(san_open(NULL, &ctx), 0);
    CHECK_EQ(san_alloc(ctx, 1 << 20, 0, &va), 0);
    CHECK_EQ(san_physical_address(ctx, va, &pa), 0);
    CHECK(pa + (1 << 20) <= 4 * GIB);
    CHECK_EQ(san_free(ctx, va), 0);
    san_close(ctx);
    test_wait_idle(&d, &idle);
    CHECK_EQ(test_daemon_stop(&d), 0);
}

static int raw_alloc(int fd, uint64_t *handle)
{
    struct san_msg req, rep;
    san_proto_init(&req, SAN_OP_ALLOC, 0);
    req.u.alloc_req.bytes = 4096;
    int err = test_call(fd, &req, &rep); /* the memfd is refused and closed */
    *handle = rep.u.alloc_rep.handle;
    return err;
}

static int raw_free(int fd, uint64_t handle)
{
    struct san_msg req, rep;
    san_proto_init(&req, SAN_OP_FREE, 0);
    req.u.free_req.handle = handle;
    return test_call(fd, &req, &rep);
}

/* Handles are a per-client handle table: distinct, a freed one is stale and never comes back, and
 * the ALLOCATIONS listing pages through every live one exactly once (more than one page). */
static void handles(void)
{
    enum { N = 40, MORE = 10, OTHER = 5 };
    struct test_daemon d;
    uint64_t h[N + MORE], other[OTHER];
    bool live[N + MORE];

    test_daemon_start(&d, NULL);
    int a = test_connect(&d), b = test_connect(&d);
    for (int i = 0; i < N; i++) {
        CHECK_EQ(raw_alloc(a, &h[i]), 0);
        CHECK(h[i] != 0);
        for (int j = 0; j < i; j++)
            CHECK(h[j] != h[i]);
        live[i] = true;
    }
    for (int i = 0; i < OTHER; i++)
        CHECK_EQ(raw_alloc(b, &other[i]), 0);
    for (int i = 0; i < N; i += 3) {
        if (i >= OTHER) /* b's own handles are the same numbers as a's first ones */
            CHECK_EQ(raw_free(b, h[i]), -EINVAL);
        CHECK_EQ(raw_free(a, h[i]), 0);
        CHECK_EQ(raw_free(a, h[i]), -EINVAL); /* stale */
        live[i] = false;
    }
    for (int i = N; i < N + MORE; i++) { /* freed slots are reused under new handles */
        CHECK_EQ(raw_alloc(a, &h[i]), 0);
        for (int j = 0; j < i; j++)
            CHECK(h[j] != h[i]);
        live[i] = true;
    }
    CHECK_EQ(raw_free(a, h[0]), -EINVAL);
    CHECK_EQ(raw_free(a, UINT64_C(1) << 40), -EINVAL);

    /* The listing, page by page: every live allocation once, nothing freed. a connected first, so
     * its client id is the lower one; clients are listed in id order. */
    static struct san_alloc_info all[4 * (N + MORE)];
    int nr = 0, pages = 0;
    uint64_t cursor = 0;
    int fd = test_connect(&d);
    do {
        struct san_msg req, rep;
        san_proto_init(&req, SAN_OP_ALLOCATIONS, 0);
        req.u.list_req.cursor = cursor;
        CHECK_EQ(test_call(fd, &req, &rep), 0);
        for (uint32_t k = 0; k < rep.u.allocations_rep.nr && nr < 4 * (N + MORE); k++)
            all[nr++] = rep.u.allocations_rep.a[k];
        cursor = rep.u.allocations_rep.next;
        pages++;
    } while (cursor);
    close(fd);
    CHECK(pages >= 3);
    CHECK_EQ(nr, N - (N + 2) / 3 + MORE + OTHER);
    uint32_t id_a = all[0].client_id, id_b = all[nr - 1].client_id;
    CHECK(id_a < id_b);
    int seen[N + MORE] = {0}, seen_other[OTHER] = {0};
    for (int k = 0; k < nr; k++) {
        int found = 0;
        for (int i = 0; i < N + MORE; i++)
            if (all[k].client_id == id_a && all[k].handle == h[i] && live[i])
                seen[i]++, found++;
        for (int i = 0; i < OTHER; i++)
            if (all[k].client_id == id_b && all[k].handle == other[i])
                seen_other[i]++, found++;
        CHECK_EQ(found, 1);
    }
    for (int i = 0; i < N + MORE; i++)
        CHECK_EQ(seen[i], live[i] ? 1 : 0);
    for (int i = 0; i < OTHER; i++)
        CHECK_EQ(seen_other[i], 1);
    close(a);
    close(b);
    CHECK_EQ(test_daemon_stop(&d), 0);
}

int main(void)
{
    test_init();
    basic();
    handles();
    nolowmem();
    nic32();
    printf("ok\n");
    return 0;
}
