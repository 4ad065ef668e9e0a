/* Per-client limits from the config: over a limit, -ENOBUFS for that client only; other clients
 * are unaffected; releasing brings the client back under its limit. */
#include "harness.h"

#include <sys/mman.h>

int main(void)
{
    struct test_daemon d;
    struct san_stats_rep idle;
    struct san_ctx *a, *b;
    void *va[4], *vb[3];
    struct san_mr *mr[6], *mb;

    test_init();
    test_daemon_start(&d, "[limits]\n"
                          "locked_bytes = 64K\n"
                          "registrations = 4\n"
                          "allocations = 3\n");
    test_stats(&d, &idle);
    CHECK_EQ(san_open(NULL, &a), 0);
    CHECK_EQ(san_open(NULL, &b), 0);

    /* Allocations: three each. */
    for (int i = 0; i < 3; i++)
        CHECK_EQ(san_alloc(a, 4096, 0, &va[i]), 0);
    CHECK_EQ(san_alloc(a, 4096, 0, &va[3]), -ENOBUFS);
    CHECK_EQ(san_alloc(a, 4096, SAN_ALLOC_LOW, &va[3]), -ENOBUFS);
    for (int i = 0; i < 3; i++)
        CHECK_EQ(san_alloc(b, 4096, 0, &vb[i]), 0); /* b is not a's victim */
    CHECK_EQ(san_free(a, va[1]), 0);
    CHECK_EQ(san_alloc(a, 4096, 0, &va[1]), 0);

    /* Registrations: four, and 64 KiB locked. */
    size_t len = 256 * 1024;
    char *buf = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    CHECK(buf != MAP_FAILED);
    CHECK_EQ(san_register(a, buf, 128 * 1024, SAN_MEM_READ, &mr[0]), -ENOBUFS); /* > 64K */
    for (int i = 0; i < 4; i++)
        CHECK_EQ(san_register(a, buf + i * 8192, 8192, SAN_MEM_READ, &mr[i]), 0);
    CHECK_EQ(san_register(a, buf + 40960, 4096, SAN_MEM_READ, &mr[4]), -ENOBUFS);
    /* The same range and access again is a reference, not a registration. */
    CHECK_EQ(san_register(a, buf, 8192, SAN_MEM_READ, &mr[4]), 0);
    CHECK_EQ(san_mr_lkey(mr[4]), san_mr_lkey(mr[0]));
    CHECK_EQ(san_register(b, buf, 64 * 1024, SAN_MEM_READWRITE, &mb), 0);
    CHECK_EQ(san_deregister(mr[3]), 0);
    CHECK_EQ(san_register(a, buf + 65536, 49152, SAN_MEM_READ, &mr[3]), -ENOBUFS); /* 24K + 48K */
    CHECK_EQ(san_register(a, buf + 65536, 16384, SAN_MEM_READ, &mr[3]), 0);

    struct san_stats_rep s;
    test_stats(&d, &s);
    CHECK(s.registrations == 5 && s.allocations == 6);

    san_close(a);
    CHECK_EQ(san_deregister(mb), 0);
    for (int i = 0; i < 3; i++)
        CHECK_EQ(san_free(b, vb[i]), 0);
    san_close(b);
    test_wait_idle(&d, &idle);
    CHECK_EQ(test_daemon_stop(&d), 0);
    munmap(buf, len);
    printf("ok\n");
    return 0;
}
