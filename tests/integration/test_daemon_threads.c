/* One libsan context shared by 8 threads: allocations, registrations (each thread its own buffer,
 * and one buffer all of them register with the same access, so references are taken and dropped
 * concurrently), physical addresses. Every call must succeed, keys of the shared registration must
 * agree, and the daemon must end idle. */
#include "harness.h"

#include <pthread.h>
#include <stdatomic.h>
#include <sys/mman.h>

enum { THREADS = 8, OPS = 1000, BUF = 256 * 1024 };

static struct san_ctx *ctx;
static char *shared;
static uint32_t shared_lkey; /* written before the threads start */
static _Atomic int failures;

#define TFAIL(what, err)                                                                           \
    do {                                                                                           \
        fprintf(stderr, "thread: %s: %s\n", what, san_strerror(err));                              \
        failures++;                                                                                \
        return NULL;                                                                               \
    } while (0)

static void *worker(void *arg)
{
    uint64_t seed = (uintptr_t)arg * 0x9e3779b97f4a7c15u + 1;
    char *own = mmap(NULL, BUF, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    int err;

    if (own == MAP_FAILED)
        TFAIL("mmap", -ENOMEM);
    memset(own, 1, BUF);
    for (int i = 0; i < OPS; i++) {
        seed ^= seed << 13, seed ^= seed >> 7, seed ^= seed << 17;
        struct san_mr *mr;
        void *va;
        san_paddr_t pa;
        switch (seed % 3) {
        case 0:
            if ((err = san_alloc(ctx, 4096 * (1 + seed % 8), seed & 8 ? SAN_ALLOC_LOW : 0, &va)))
                TFAIL("alloc", err);
            memset(va, 0x5a, 4096);
            if ((err = san_physical_address(ctx, va, &pa)))
                TFAIL("physical address", err);
            if ((err = san_free(ctx, va)))
                TFAIL("free", err);
            break;
        case 1: {
            size_t off = (seed >> 8) % 32 * 4096;
            if ((err = san_register(ctx, own + off, 8192, SAN_MEM_READWRITE, &mr)))
                TFAIL("register", err);
            if ((err = san_physical_address(ctx, own + off + 5, &pa)) || pa % 4096 != 5)
                TFAIL("physical address of registered memory", err);
            if ((err = san_deregister(mr)))
                TFAIL("deregister", err);
            break;
        }
        default: {
            if ((err = san_register(ctx, shared, BUF, SAN_MEM_READ, &mr)))
                TFAIL("register shared", err);
            if (san_mr_lkey(mr) != shared_lkey) /* the anchor holds it: always the same one */
                TFAIL("keys of the shared registration differ", -EINVAL);
            if ((err = san_deregister(mr)))
                TFAIL("deregister shared", err);
            break;
        }
        }
    }
    munmap(own, BUF);
    return NULL;
}

int main(void)
{
    struct test_daemon d;
    struct san_stats_rep idle;
    pthread_t t[THREADS];

    test_init();
    test_daemon_start(&d, NULL);
    test_stats(&d, &idle);
    shared = mmap(NULL, BUF, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    CHECK(shared != MAP_FAILED);
    memset(shared, 2, BUF);
    CHECK_EQ(san_open(NULL, &ctx), 0);
    /* Held for the whole run: every thread's registration of it is a reference to this one. */
    struct san_mr *anchor;
    CHECK_EQ(san_register(ctx, shared, BUF, SAN_MEM_READ, &anchor), 0);
    shared_lkey = san_mr_lkey(anchor);
    for (long i = 0; i < THREADS; i++)
        CHECK(!pthread_create(&t[i], NULL, worker, (void *)i));
    for (int i = 0; i < THREADS; i++)
        pthread_join(t[i], NULL);
    CHECK_EQ(failures, 0);
    struct san_stats_rep s;
    test_stats(&d, &s);
    CHECK(s.allocations == 0);
    CHECK_EQ(san_deregister(anchor), 0);
    san_close(ctx);
    test_wait_idle(&d, &idle);
    CHECK_EQ(test_daemon_stop(&d), 0);
    printf("ok: %d threads x %d operations on one context\n", THREADS, OPS);
    return 0;
}
