/* Registration through the real daemon: keys, reference counts for the same range and access,
 * RDMA registrations and descriptor probing, stale and foreign keys, unmapped memory, physical
 * addresses of registered memory, and the client's mlock bookkeeping (VmLck). */
#include "harness.h"

#include <sys/mman.h>

#define KIB 1024u

static void *map(size_t len)
{
    void *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    CHECK(p != MAP_FAILED);
    memset(p, 1, len);
    return p;
}

static void keys_and_refs(struct test_daemon *d, const struct san_stats_rep *idle)
{
    struct san_ctx *ctx;
    struct san_mr *a, *b, *c, *r;
    struct san_stats_rep s;
    char *buf = map(256 * KIB);

    CHECK_EQ(san_open(NULL, &ctx), 0);
    CHECK_EQ(test_vm_locked_kib(), 0);
    CHECK_EQ(san_register(ctx, buf, 64 * KIB, SAN_MEM_READWRITE, &a), 0);
    CHECK(san_mr_lkey(a) != 0);
    CHECK_EQ(san_mr_rkey(a), 0);
    CHECK_EQ(test_vm_locked_kib(), 64);
    test_stats(d, &s);
    CHECK(s.registrations == 1 && s.locked_bytes == idle->locked_bytes + 64 * KIB);

    /* Same range and access: same keys, one registration with two references. */
    CHECK_EQ(san_register(ctx, buf, 64 * KIB, SAN_MEM_READWRITE, &b), 0);
    CHECK(b != a);
    CHECK_EQ(san_mr_lkey(b), san_mr_lkey(a));
    test_stats(d, &s);
    CHECK(s.registrations == 1);
    /* Other access or other range: another registration. */
    CHECK_EQ(san_register(ctx, buf, 64 * KIB, SAN_MEM_READ, &c), 0);
    CHECK(san_mr_lkey(c) != san_mr_lkey(a));
    /* Unaligned: whole pages are locked (and overlap the others). */
    CHECK_EQ(san_register(ctx, buf + 60 * KIB + 10, 8 * KIB, SAN_MEM_WRITE, &r), 0);
    test_stats(d, &s);
    CHECK(s.registrations == 3);
    CHECK(s.locked_bytes == idle->locked_bytes + (64 + 64 + 12) * KIB);
    CHECK_EQ(test_vm_locked_kib(), 72);

    /* Physical addresses of registered memory: same offset in the page, frames assigned. */
    san_paddr_t pa;
    CHECK_EQ(san_physical_address(ctx, buf + 4096 + 123, &pa), 0);
    CHECK(pa % 4096 == 123);
    CHECK_EQ(san_physical_address(ctx, buf + 100 * KIB, &pa), -EINVAL);

    CHECK_EQ(san_deregister(a), 0);
    test_stats(d, &s);
    CHECK(s.registrations == 3);
    CHECK_EQ(san_deregister(b), 0);
    test_stats(d, &s);
    CHECK(s.registrations == 2);
    CHECK_EQ(test_vm_locked_kib(), 72); /* c covers [0,64K), r covers [60K,72K) */
    CHECK_EQ(san_deregister(c), 0);
    CHECK_EQ(test_vm_locked_kib(), 12);
    CHECK_EQ(san_deregister(r), 0);
    CHECK_EQ(test_vm_locked_kib(), 0);

    /* RDMA: descriptor probing as WSPRegisterRdmaMemory does it. */
    unsigned char desc[64];
    size_t dlen = 0;
    CHECK_EQ(san_register_rdma(ctx, buf, 64 * KIB, SAN_MEM_READWRITE, NULL, &dlen, &r), -EFAULT);
    CHECK_EQ(dlen, SAN_RDMA_DESC_SIZE);
    dlen = 8;
    CHECK_EQ(san_register_rdma(ctx, buf, 64 * KIB, SAN_MEM_READWRITE, desc, &dlen, &r), -EFAULT);
    CHECK_EQ(dlen, SAN_RDMA_DESC_SIZE);
    test_stats(d, &s);
    CHECK(s.registrations == 0); /* probing registers nothing */
    CHECK_EQ(san_register_rdma(ctx, buf, 64 * KIB, SAN_MEM_READWRITE, desc, NULL, &r), -EINVAL);
    /* No handle to return: refused, and nothing registered behind the caller's back. */
    dlen = sizeof(desc);
    CHECK_EQ(san_register_rdma(ctx, buf, 64 * KIB, SAN_MEM_READWRITE, desc, &dlen, NULL), -EINVAL);
    test_stats(d, &s);
    CHECK(s.registrations == 0);
    dlen = sizeof(desc);
    memset(desc, 0xee, sizeof(desc));
    CHECK_EQ(san_register_rdma(ctx, buf, 64 * KIB, SAN_MEM_READWRITE, desc, &dlen, &r), 0);
    CHECK_EQ(dlen, SAN_RDMA_DESC_SIZE);
    CHECK(san_mr_rkey(r) != 0 && san_mr_lkey(r) != 0);
    uint32_t rkey;
    memcpy(&rkey, desc + 32, 4);
    CHECK_EQ(rkey, san_mr_rkey(r));
    CHECK(desc[SAN_RDMA_DESC_SIZE] == 0xee); /* nothing written past the descriptor */
    /* A local registration of the same range is another registration (no rkey). */
    CHECK_EQ(san_register(ctx, buf, 64 * KIB, SAN_MEM_READWRITE, &a), 0);
    CHECK(san_mr_lkey(a) != san_mr_lkey(r) && san_mr_rkey(a) == 0);
    struct san_mr *r2;
    dlen = SAN_RDMA_DESC_SIZE;
    CHECK_EQ(san_register_rdma(ctx, buf, 64 * KIB, SAN_MEM_READWRITE, desc, &dlen, &r2), 0);
    CHECK_EQ(san_mr_rkey(r2), san_mr_rkey(r));
    CHECK_EQ(san_deregister(r2), 0);
    CHECK_EQ(san_deregister(r), 0);
    CHECK_EQ(san_deregister(a), 0);

    /* Bad arguments. */
    CHECK_EQ(san_register(ctx, buf, 0, SAN_MEM_READ, &a), -EINVAL);
    CHECK_EQ(san_register(ctx, NULL, 4096, SAN_MEM_READ, &a), -EINVAL);
    CHECK_EQ(san_register(ctx, buf, 4096, 0, &a), -EINVAL);
    CHECK_EQ(san_register(ctx, buf, 4096, 4, &a), -EINVAL);
    CHECK_EQ(san_register(ctx, buf, 4096, SAN_MEM_READ, NULL), -EINVAL);
    CHECK_EQ(san_register(NULL, buf, 4096, SAN_MEM_READ, &a), -EINVAL);
    CHECK_EQ(san_register(ctx, (void *)-4096, 8192, SAN_MEM_READ, &a), -EINVAL);
    CHECK_EQ(san_deregister(NULL), -EINVAL);
    CHECK_EQ(san_mr_lkey(NULL), 0);
    CHECK_EQ(san_cache_invalidate(ctx, buf, 4096), -EINVAL);

    /* Unmapped memory and memory the daemon cannot read: -EFAULT, nothing held. */
    char *hole = map(64 * KIB);
    munmap(hole, 64 * KIB);
    CHECK_EQ(san_register(ctx, hole, 4096, SAN_MEM_READ, &a), -EFAULT);
    char *none = mmap(NULL, 8192, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    CHECK(none != MAP_FAILED);
    CHECK_EQ(san_register(ctx, none, 8192, SAN_MEM_READ, &a), -EFAULT);
    test_stats(d, &s);
    CHECK(s.registrations == 0 && s.locked_bytes == idle->locked_bytes);
    CHECK_EQ(test_vm_locked_kib(), 0);

    /* Proxy memory can be registered too. */
    void *pm;
    CHECK_EQ(san_alloc(ctx, 64 * KIB, 0, &pm), 0);
    CHECK_EQ(san_register(ctx, pm, 64 * KIB, SAN_MEM_READWRITE, &a), 0);
    CHECK_EQ(san_cache_invalidate(ctx, pm, 1), 0);
    CHECK_EQ(san_deregister(a), 0);
    CHECK_EQ(san_free(ctx, pm), 0);

    /* san_close drops registrations still held. */
    CHECK_EQ(san_register(ctx, buf, 128 * KIB, SAN_MEM_READ, &a), 0);
    san_close(ctx);
    CHECK_EQ(test_vm_locked_kib(), 0);
    test_wait_idle(d, idle);
    munmap(buf, 256 * KIB);
    munmap(none, 8192);
}

/* Keys at the protocol level: stale keys are refused, never aliased; one client cannot use
 * another's keys. */
static void raw_keys(struct test_daemon *d)
{
    struct san_msg req, rep;
    char *buf = map(16 * KIB);
    CHECK(!mlock(buf, 16 * KIB));
    int fd = test_connect(d), other = test_connect(d);

    uint32_t seen[200];
    for (int i = 0; i < 200; i++) {
        san_proto_init(&req, SAN_OP_REGISTER, 0);
        req.u.register_req = (struct san_register_req){
            .va = (uintptr_t)buf, .len = 16 * KIB, .access = SAN_MEM_READ, .flags = i & 1};
        CHECK_EQ(test_call(fd, &req, &rep), 0);
        uint32_t lkey = rep.u.register_rep.lkey;
        CHECK(rep.u.register_rep.refs == 1);
        CHECK((rep.u.register_rep.rkey != 0) == (i & 1));
        for (int j = 0; j < i; j++)
            CHECK(seen[j] != lkey); /* never aliased */
        seen[i] = lkey;
        /* The other client cannot deregister or look it up. */
        san_proto_init(&req, SAN_OP_DEREGISTER, 0);
        req.u.deregister_req.lkey = lkey;
        CHECK_EQ(test_call(other, &req, &rep), -EINVAL);
        san_proto_init(&req, SAN_OP_PADDR, 0);
        req.u.paddr_req.lkey = lkey;
        CHECK_EQ(test_call(other, &req, &rep), -EINVAL);
        san_proto_init(&req, SAN_OP_DEREGISTER, 0);
        req.u.deregister_req.lkey = lkey;
        CHECK_EQ(test_call(fd, &req, &rep), 0);
        CHECK(rep.u.deregister_rep.refs == 0);
        CHECK_EQ(test_call(fd, &req, &rep), -EINVAL); /* stale now */
    }
    /* Every old key stays stale. */
    for (int i = 0; i < 200; i++) {
        san_proto_init(&req, SAN_OP_DEREGISTER, 0);
        req.u.deregister_req.lkey = seen[i];
        CHECK_EQ(test_call(fd, &req, &rep), -EINVAL);
    }
    close(fd);
    close(other);
    munlock(buf, 16 * KIB);
    munmap(buf, 16 * KIB);
}

int main(void)
{
    struct test_daemon d;
    struct san_stats_rep idle;

    test_init();
    test_daemon_start(&d, NULL);
    test_stats(&d, &idle);
    keys_and_refs(&d, &idle);
    raw_keys(&d);
    test_wait_idle(&d, &idle);
    CHECK_EQ(test_daemon_stop(&d), 0);
    printf("ok\n");
    return 0;
}
