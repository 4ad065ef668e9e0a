/* 64 client processes doing 10,000 mixed operations each (allocate, write, verify, free, register,
 * deregister with reference counts, physical addresses, bad arguments) against one daemon, with a
 * fixed seed per client. At the end every client reports what it holds; the daemon's stats must be
 * the sum; then half the clients close cleanly and half just exit, and the daemon must be idle.
 * SAN_STRESS_OPS raises the operation count for longer runs; it never lowers it (a developer's
 * environment must not weaken the test). The count is scaled down under sanitizers. */
#include "harness.h"

#include <sys/mman.h>

enum { CLIENTS = 64, MAX_ALLOCS = 8, MAX_REGS = 16, BUF = 1 << 20 };

struct holding {
    uint64_t allocs, alloc_bytes, regs; /* regs: distinct registrations */
};

static uint64_t rnd(uint64_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

#define CFAIL(...)                                                                                 \
    do {                                                                                           \
        fprintf(stderr, "client %d: ", id);                                                        \
        fprintf(stderr, __VA_ARGS__);                                                              \
        fputc('\n', stderr);                                                                       \
        _exit(1);                                                                                  \
    } while (0)

static void client(int id, long ops, int report_fd, int go_fd)
{
    struct san_ctx *ctx;
    struct {
        void *va;
        size_t len;
        unsigned char fill;
    } al[MAX_ALLOCS];
    struct {
        struct san_mr *mr;
        size_t off, len;
        unsigned access;
    } rg[MAX_REGS];
    int na = 0, nr = 0, err = 0;
    uint64_t seed = 0x9e3779b97f4a7c15u * (uint64_t)(id + 1);
    char *buf = mmap(NULL, BUF, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

    if (buf == MAP_FAILED || (err = san_open(NULL, &ctx)))
        CFAIL("open: %s", san_strerror(err));
    for (long i = 0; i < ops; i++) {
        unsigned op = (unsigned)(rnd(&seed) % 100);
        if (op < 12 && na < MAX_ALLOCS) {
            size_t len = (1 + rnd(&seed) % 16) * 4096;
            unsigned flags = rnd(&seed) % 4 == 0 ? SAN_ALLOC_LOW : 0;
            if ((err = san_alloc(ctx, len, flags, &al[na].va)))
                CFAIL("alloc %zu: %s", len, san_strerror(err));
            unsigned char *p = al[na].va;
            if (p[0] || p[len - 1])
                CFAIL("fresh allocation not zeroed");
            al[na].fill = (unsigned char)(1 + rnd(&seed) % 255);
            memset(p, al[na].fill, len);
            al[na].len = len;
            san_paddr_t pa;
            if ((err = san_physical_address(ctx, p + len - 1, &pa)) ||
                ((flags & SAN_ALLOC_LOW) && pa >= (UINT64_C(1) << 32)))
                CFAIL("physical address: %s", san_strerror(err));
            na++;
        } else if (op < 22 && na) {
            int k = (int)(rnd(&seed) % (uint64_t)na);
            unsigned char *p = al[k].va;
            for (size_t j = 0; j < al[k].len; j += 1024)
                if (p[j] != al[k].fill)
                    CFAIL("allocation lost its bytes");
            if ((err = san_free(ctx, al[k].va)))
                CFAIL("free: %s", san_strerror(err));
            al[k] = al[--na];
        } else if (op < 52 && nr < MAX_REGS) {
            /* Few distinct ranges, so that the same range and access recur (reference counts). */
            size_t off = (rnd(&seed) % 4) * 65536 + (rnd(&seed) % 2) * 100;
            size_t len = (1 + rnd(&seed) % 2) * 16384;
            unsigned access = 1 + (unsigned)(rnd(&seed) % 3);
            if ((err = san_register(ctx, buf + off, len, access, &rg[nr].mr)))
                CFAIL("register: %s", san_strerror(err));
            rg[nr].off = off;
            rg[nr].len = len;
            rg[nr].access = access;
            for (int j = 0; j < nr; j++)
                if ((rg[j].off == off && rg[j].len == len && rg[j].access == access) !=
                    (san_mr_lkey(rg[j].mr) == san_mr_lkey(rg[nr].mr)))
                    CFAIL("keys of the same range and access differ, or of others coincide");
            nr++;
        } else if (op < 80 && nr) {
            int k = (int)(rnd(&seed) % (uint64_t)nr);
            if ((err = san_deregister(rg[k].mr)))
                CFAIL("deregister: %s", san_strerror(err));
            rg[k] = rg[--nr];
        } else if (op < 88 && nr) {
            san_paddr_t pa;
            if ((err = san_physical_address(ctx, buf + rg[0].off, &pa)) ||
                pa % 4096 != rg[0].off % 4096)
                CFAIL("physical address of registered memory: %s", san_strerror(err));
        } else if (op < 97 && na) {
            /* Proxy memory: answered locally, and the bytes are still ours. */
            int k = (int)(rnd(&seed) % (uint64_t)na);
            san_paddr_t pa, pb;
            if ((err = san_physical_address(ctx, al[k].va, &pa)) ||
                (err = san_physical_address(ctx, (char *)al[k].va + al[k].len - 1, &pb)) ||
                pb != pa + al[k].len - 1 ||
                ((unsigned char *)al[k].va)[al[k].len / 2] != al[k].fill)
                CFAIL("proxy memory: %s", san_strerror(err));
        } else {
            struct san_mr *bad;
            if (san_register(ctx, buf, 0, 1, &bad) != -EINVAL)
                CFAIL("len 0 accepted");
        }
    }
    /* Report what we hold: distinct registrations by (off, len, access). */
    struct holding h = {.allocs = (uint64_t)na};
    for (int k = 0; k < na; k++)
        h.alloc_bytes += al[k].len;
    for (int k = 0; k < nr; k++) {
        bool first = true;
        for (int j = 0; j < k; j++)
            if (san_mr_lkey(rg[j].mr) == san_mr_lkey(rg[k].mr))
                first = false;
        h.regs += first;
    }
    if (write(report_fd, &h, sizeof(h)) != sizeof(h))
        _exit(1);
    char c;
    if (read(go_fd, &c, 1) < 0)
        _exit(1);
    if (id % 2)
        san_close(ctx); /* the other half leaves it to the daemon's cleanup */
    _exit(0);
}

int main(void)
{
    struct test_daemon d;
    struct san_stats_rep idle, s;
    int rep[2], go[2];
    pid_t pids[CLIENTS];
    long ops = 10000;

#ifdef SAN_UNDER_SANITIZER
    ops = 5000;
#endif
    const char *more = getenv("SAN_STRESS_OPS");
    if (more && atol(more) > ops)
        ops = atol(more);
    test_init();
    test_daemon_start(&d, NULL);
    test_stats(&d, &idle);
    CHECK(!pipe(rep) && !pipe(go));
    for (int i = 0; i < CLIENTS; i++) {
        pids[i] = fork();
        CHECK(pids[i] >= 0);
        if (!pids[i]) {
            close(rep[0]);
            close(go[1]);
            client(i, ops, rep[1], go[0]);
        }
    }
    close(rep[1]);
    close(go[0]);
    struct holding sum = {0}, h;
    for (int i = 0; i < CLIENTS; i++) {
        ssize_t n = read(rep[0], &h, sizeof(h));
        if (n != sizeof(h)) {
            close(go[1]);
            for (int j = 0; j < CLIENTS; j++) {
                int st;
                waitpid(pids[j], &st, 0);
            }
            CHECK(!"a client failed");
        }
        sum.allocs += h.allocs;
        sum.alloc_bytes += h.alloc_bytes;
        sum.regs += h.regs;
    }
    test_stats(&d, &s);
    CHECK(s.clients == CLIENTS + 1);
    CHECK_EQ(s.allocations, sum.allocs);
    CHECK_EQ(s.allocated_bytes, sum.alloc_bytes);
    CHECK_EQ(s.registrations, sum.regs);
    CHECK(s.free_bytes < idle.free_bytes);
    close(go[1]);
    for (int i = 0; i < CLIENTS; i++) {
        int st;
        CHECK(waitpid(pids[i], &st, 0) == pids[i]);
        CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    }
    test_wait_idle(&d, &idle);
    CHECK_EQ(test_daemon_stop(&d), 0);
    printf("ok: %d clients x %ld operations\n", CLIENTS, ops);
    return 0;
}
