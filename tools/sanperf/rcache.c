/* sanperf rcache: what libsan's registration cache saves. In one run, against one private
 * sanproxyd:
 *   hit        san_register + san_deregister of a cached 64 KiB range (no round trip, no system
 *              call); timed in batches of HIT_BATCH operations, reported per operation;
 *   miss       the same through a context whose cache is disabled (SAN_RCACHE_MAX_ENTRIES=0 at
 *              san_open): two round trips, mlock/munlock and the daemon's work; timed one by one;
 *   cold       a miss on a caching context followed by san_cache_invalidate: what a first use
 *              costs with the cache on (populate, userfaultfd registration, release);
 *   rdma_idle  san_register_rdma + san_deregister of an idle cached RDMA range: the rkey is
 *              re-issued on the hit and revoked on the release (two round trips);
 *   rdma_held  the same while another reference is held (no round trip);
 *   hit_2t     hits by two threads at once, each on its own cached range (per operation of one
 *              thread: what sharing the cache's read lock costs).
 * Samples of every case are taken in alternating rounds so they see the same machine noise.
 * Every case's baseline is the miss: ratio = case p50 / miss p50, better: lower; the summary's
 * is the hit's (the target: hit <= 200 ns and ratio <= 0.02, a fiftieth of a miss). Options
 * (checked by main.c): --rounds N.
 * The daemon is a child (fork + exec of the sanproxyd next to sanperf, --ready-fd) that never
 * outlives the suite. Single-threaded. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <san/san.h>

#include "perf.h"

#define BYTES          (64 * 1024)
#define HIT_BATCH      256
#define HIT2_BATCH     8192 /* long enough for the two threads to overlap */
#define DEFAULT_ROUNDS 200
#define MISS_PER_ROUND 8

static int reg_dereg(struct san_ctx *ctx, void *buf)
{
    struct san_mr *mr;
    int err = san_register(ctx, buf, BYTES, SAN_MEM_READWRITE, &mr);
    return err ? err : san_deregister(mr);
}

static int rdma_reg_dereg(struct san_ctx *ctx, void *buf)
{
    unsigned char desc[SAN_RDMA_DESC_SIZE];
    size_t dlen = sizeof(desc);
    struct san_mr *mr;
    int err = san_register_rdma(ctx, buf, BYTES, SAN_MEM_READWRITE, desc, &dlen, &mr);
    return err ? err : san_deregister(mr);
}

enum { C_HIT, C_MISS, C_COLD, C_RDMA_IDLE, C_RDMA_HELD, C_HIT_2T, NR_CASES };
static const char *const case_names[NR_CASES] = {"hit",       "miss",      "cold",
                                                 "rdma_idle", "rdma_held", "hit_2t"};

struct hitter {
    struct san_ctx *ctx;
    char *buf;
    pthread_barrier_t *start;
    uint64_t ns;
    int err;
};

static void *hitter_main(void *arg)
{
    struct hitter *h = arg;
    pthread_barrier_wait(h->start);
    uint64_t t0 = perf_now_ns();
    for (int i = 0; i < HIT2_BATCH && !h->err; i++)
        h->err = reg_dereg(h->ctx, h->buf);
    h->ns = (perf_now_ns() - t0) / HIT2_BATCH;
    return NULL;
}

/* One sample of two threads hitting at once: the slower thread's time per operation. */
static int hit_2t(struct san_ctx *ctx, char *a, char *b, uint64_t *ns)
{
    pthread_barrier_t start;
    pthread_t t;
    struct hitter h[2] = {{.ctx = ctx, .buf = a, .start = &start},
                          {.ctx = ctx, .buf = b, .start = &start}};
    int err = pthread_barrier_init(&start, NULL, 2);
    if (err)
        return -err;
    if (pthread_create(&t, NULL, hitter_main, &h[1])) {
        pthread_barrier_destroy(&start);
        return -EAGAIN;
    }
    hitter_main(&h[0]);
    pthread_join(t, NULL);
    pthread_barrier_destroy(&start);
    *ns = h[0].ns > h[1].ns ? h[0].ns : h[1].ns;
    return h[0].err ? h[0].err : h[1].err;
}

int perf_rcache(const struct perf_opts *o)
{
    uint64_t rounds = DEFAULT_ROUNDS;
    struct perf_daemon d;
    struct san_ctx *cached = NULL, *uncached = NULL;
    struct san_mr *held = NULL;
    uint64_t *samples[NR_CASES] = {0};
    size_t nr[NR_CASES] = {0};
    char *mem = MAP_FAILED;
    int err;

    for (int i = 0; i + 1 < o->argc; i++) /* values checked by main.c */
        if (!strcmp(o->argv[i], "--rounds"))
            rounds = strtoull(o->argv[++i], NULL, 10);
    for (int c = 0; c < NR_CASES; c++)
        if (!(samples[c] = calloc(rounds * MISS_PER_ROUND, sizeof(uint64_t)))) {
            err = -ENOMEM;
            goto out_samples;
        }
    if ((err = perf_start_daemon(&d, "rcache", NULL, -1))) {
        fprintf(stderr, "sanperf rcache: cannot start sanproxyd: %s\n", san_strerror(err));
        goto out_samples;
    }
    if ((err = san_open(d.sock, &cached)) || (err = perf_open_uncached(d.sock, &uncached)))
        goto out_ctx;
    /* Separate 64 KiB buffers per case (two contexts must not pin the same pages). */
    mem = mmap(NULL, 7 * BYTES, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (mem == MAP_FAILED) {
        err = -ENOMEM;
        goto out_ctx;
    }
    memset(mem, 1, 7 * BYTES);
    char *hit_buf = mem, *miss_buf = mem + BYTES, *cold_buf = mem + 2 * BYTES;
    char *rdma_idle_buf = mem + 3 * BYTES, *rdma_held_buf = mem + 4 * BYTES;
    char *hit2_buf = mem + 5 * BYTES;
    /* Warm up: the first use of each cached buffer is a miss. */
    unsigned char desc[SAN_RDMA_DESC_SIZE];
    size_t dlen = sizeof(desc);
    if ((err = reg_dereg(cached, hit_buf)) || (err = reg_dereg(cached, hit2_buf)) ||
        (err = rdma_reg_dereg(cached, rdma_idle_buf)) ||
        (err = san_register_rdma(cached, rdma_held_buf, BYTES, SAN_MEM_READWRITE, desc, &dlen,
                                 &held)))
        goto out_mem;

    for (uint64_t r = 0; r < rounds; r++) {
        uint64_t t0 = perf_now_ns();
        for (int i = 0; i < HIT_BATCH; i++)
            if ((err = reg_dereg(cached, hit_buf)))
                goto out_held;
        samples[C_HIT][nr[C_HIT]++] = (perf_now_ns() - t0) / HIT_BATCH;

        t0 = perf_now_ns();
        for (int i = 0; i < HIT_BATCH; i++)
            if ((err = rdma_reg_dereg(cached, rdma_held_buf)))
                goto out_held;
        samples[C_RDMA_HELD][nr[C_RDMA_HELD]++] = (perf_now_ns() - t0) / HIT_BATCH;

        if ((err = hit_2t(cached, hit_buf, hit2_buf, &samples[C_HIT_2T][nr[C_HIT_2T]])))
            goto out_held;
        nr[C_HIT_2T]++;

        for (int i = 0; i < MISS_PER_ROUND; i++) {
            t0 = perf_now_ns();
            if ((err = reg_dereg(uncached, miss_buf)))
                goto out_held;
            uint64_t t1 = perf_now_ns();
            samples[C_MISS][nr[C_MISS]++] = t1 - t0;

            if ((err = reg_dereg(cached, cold_buf)) ||
                (err = san_cache_invalidate(cached, cold_buf, BYTES)))
                goto out_held;
            uint64_t t2 = perf_now_ns();
            samples[C_COLD][nr[C_COLD]++] = t2 - t1;

            if ((err = rdma_reg_dereg(cached, rdma_idle_buf)))
                goto out_held;
            samples[C_RDMA_IDLE][nr[C_RDMA_IDLE]++] = perf_now_ns() - t2;
        }
        perf_progress("rcache", r + 1, rounds);
    }

    uint64_t p50[NR_CASES], p99[NR_CASES];
    for (int c = 0; c < NR_CASES; c++) {
        p50[c] = perf_quantile(samples[c], nr[c], 0.5);
        p99[c] = perf_quantile(samples[c], nr[c], 0.99);
    }
    double miss = (double)p50[C_MISS];
    double ratio = miss ? (double)p50[C_HIT] / miss : 0;
    bool ok = p50[C_HIT] <= 200 && ratio <= 0.02;
    if (o->json) {
        for (int c = 0; c < NR_CASES; c++)
            perf_json("\"suite\": \"rcache\", \"case\": \"%s\", \"bytes\": %d, \"samples\": %zu"
                      ", \"per_sample_ops\": %d, \"p50_ns\": %" PRIu64 ", \"p99_ns\": %" PRIu64
                      ", \"baseline\": \"miss\", \"baseline_p50_ns\": %" PRIu64
                      ", \"ratio\": %.4f, \"better\": \"lower\"",
                      case_names[c], BYTES, nr[c],
                      c == C_HIT_2T                    ? HIT2_BATCH
                      : c == C_HIT || c == C_RDMA_HELD ? HIT_BATCH
                                                       : 1,
                      p50[c], p99[c], p50[C_MISS], miss ? (double)p50[c] / miss : 0.0);
        perf_json("\"suite\": \"rcache\", \"case\": \"summary\", \"p50_ns\": %" PRIu64
                  ", \"baseline\": \"miss\", \"baseline_p50_ns\": %" PRIu64
                  ", \"ratio\": %.4f, \"better\": \"lower\", \"target_hit_ns\": 200"
                  ", \"target_ratio\": 0.02, \"pass\": %s",
                  p50[C_HIT], p50[C_MISS], ratio, ok ? "true" : "false");
    } else {
        printf("%-10s %9s %9s %10s\n", "case", "p50_ns", "p99_ns", "case/miss");
        for (int c = 0; c < NR_CASES; c++)
            printf("%-10s %9" PRIu64 " %9" PRIu64 " %10.4f\n", case_names[c], p50[c], p99[c],
                   miss ? (double)p50[c] / miss : 0.0);
        printf("hit %" PRIu64 " ns, miss %" PRIu64
               " ns, ratio %.4f (targets: <= 200 ns, <= 0.02): %s\n",
               p50[C_HIT], p50[C_MISS], ratio, ok ? "met" : "NOT met");
    }

out_held:
    if (held)
        san_deregister(held);
out_mem:
    munmap(mem, 7 * BYTES);
out_ctx:
    san_close(uncached);
    san_close(cached);
    perf_stop_daemon(&d);
out_samples:
    for (int c = 0; c < NR_CASES; c++)
        free(samples[c]);
    if (err)
        fprintf(stderr, "sanperf rcache: %s\n", san_strerror(err));
    return err ? 1 : 0;
}
