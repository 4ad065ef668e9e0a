/* sanperf contig: the contiguous allocator (san_alloc_contiguous + san_free_contiguous of 64 KiB)
 * against glibc malloc + free of 64 KiB, measured in the same run.
 *
 * Each case builds a machine of --ram bytes (default map), fragments it with a fixed seed (allocate
 * 4 KiB..1 MiB blocks until RAM runs out, then free every other one: about half full, one free
 * extent per freed block) and then times alloc+free pairs under the case's constraint.
 *
 * Timing: a single pair costs tens of nanoseconds, the same order as clock_gettime itself, so
 * pairs are timed in batches of BATCH (16) consecutive pairs and each batch's time divided by
 * BATCH is one sample; p50 and p99 are taken over those samples. Batches of the allocator and of
 * the malloc baseline alternate, so that both see the same machine noise; the ratio is
 * p50(allocator) / p50(malloc). glibc is told never to trim and never to mmap 64 KiB, so the
 * baseline makes no system calls.
 *
 * No locking concerns: single-threaded. */
#include <errno.h>
#include <inttypes.h>
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <san/san.h>

#include "perf.h"

#define KIB         (UINT64_C(1) << 10)
#define MIB         (UINT64_C(1) << 20)
#define GIB         (UINT64_C(1) << 30)
#define BATCH       16
#define PAIR_BYTES  (64 * KIB)
#define DEFAULT_OPS 200000

struct contig_case {
    const char *name;
    san_paddr_t lowest, highest, boundary;
};

static const struct contig_case cases[] = {
    {"any", 0, UINT64_MAX, 0},
    {"below4g", 0, 4 * GIB - 1, 0},
    {"boundary", 0, UINT64_MAX, 64 * KIB},
    {"window", 16 * MIB, GIB - 1, 0},
};

struct result {
    uint64_t ram_bytes, ops, p50_ns, p99_ns, baseline_p50_ns, baseline_p99_ns, free_extents;
    double ratio_p50;
};

static uint64_t rng_next(uint64_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

/* Keeps the compiler from eliding a malloc/free pair. */
static inline void escape(void *p)
{
    __asm__ volatile("" : : "r"(p) : "memory");
}

/* Allocates 4 KiB..1 MiB blocks (fixed seed) until RAM runs out, then frees every other one. */
static int fragment(struct san_machine *m, uint64_t ram, const char *what)
{
    size_t cap = (size_t)(ram / (256 * KIB)) + 1024, n = 0;
    struct blk {
        void *va;
        size_t bytes;
    } *b = malloc(cap * sizeof(*b));
    uint64_t seed = 0x5eed5eed12345678u, done = 0;
    int err = 0;

    if (!b)
        return -ENOMEM;
    for (;;) {
        size_t bytes = (size_t)(1 + rng_next(&seed) % 256) * SAN_PAGE_SIZE;
        void *va;
        if (n == cap) {
            cap *= 2;
            struct blk *nb = realloc(b, cap * sizeof(*b));
            if (!nb) {
                err = -ENOMEM;
                goto out;
            }
            b = nb;
        }
        err = san_alloc_contiguous(m, bytes, 0, UINT64_MAX, 0, SAN_CACHED, &va);
        if (err == -ENOMEM)
            break;
        if (err)
            goto out;
        b[n++] = (struct blk){va, bytes};
        done += bytes;
        if ((n & 4095) == 0)
            perf_progress(what, done < ram ? done : ram - 1, ram);
    }
    perf_progress(what, ram, ram);
    err = 0;
    for (size_t i = 0; i < n; i += 2)
        if ((err = san_free_contiguous(m, b[i].va, b[i].bytes, SAN_CACHED)))
            goto out;
out:
    free(b);
    return err;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static uint64_t quantile_sorted(const uint64_t *s, size_t n, double q)
{
    size_t i = (size_t)(q * (double)(n - 1) + 0.5);
    return s[i < n ? i : n - 1];
}

/* Times ops alloc+free pairs of the case on a fragmented machine of ram bytes, next to malloc. */
static int run_case(const struct contig_case *c, uint64_t ram, uint64_t ops, struct result *res)
{
    struct san_machine_config cfg = {.ram_size = ram};
    struct san_machine *m;
    struct san_machine_stats st;
    char what[64];
    size_t nb = (size_t)((ops + BATCH - 1) / BATCH);
    uint64_t *ts = malloc(nb * sizeof(*ts)), *tb = malloc(nb * sizeof(*tb));
    int err;

    if (!ts || !tb) {
        err = -ENOMEM;
        goto out_free;
    }
    if ((err = san_machine_create(&cfg, &m)))
        goto out_free;
    snprintf(what, sizeof(what), "contig %s: fragmenting", c->name);
    if ((err = fragment(m, ram, what)))
        goto out_machine;
    san_machine_stats(m, &st);

    /* Warm up both sides (and make sure the case can be served at all). */
    for (int i = 0; i < 1000; i++) {
        void *va, *p = malloc(PAIR_BYTES);
        escape(p);
        free(p);
        if ((err = san_alloc_contiguous(m, PAIR_BYTES, c->lowest, c->highest, c->boundary,
                                        SAN_CACHED, &va)))
            goto out_machine;
        if ((err = san_free_contiguous(m, va, PAIR_BYTES, SAN_CACHED)))
            goto out_machine;
    }

    snprintf(what, sizeof(what), "contig %s: timing", c->name);
    for (size_t i = 0; i < nb; i++) {
        uint64_t t0 = perf_now_ns();
        for (int k = 0; k < BATCH; k++) {
            void *va;
            err = san_alloc_contiguous(m, PAIR_BYTES, c->lowest, c->highest, c->boundary,
                                       SAN_CACHED, &va);
            err |= san_free_contiguous(m, va, PAIR_BYTES, SAN_CACHED);
        }
        uint64_t t1 = perf_now_ns();
        for (int k = 0; k < BATCH; k++) {
            void *p = malloc(PAIR_BYTES);
            escape(p);
            free(p);
        }
        uint64_t t2 = perf_now_ns();
        if (err) {
            err = -EIO; /* a timed pair failed: the run is meaningless */
            goto out_machine;
        }
        ts[i] = (t1 - t0 + BATCH / 2) / BATCH;
        tb[i] = (t2 - t1 + BATCH / 2) / BATCH;
        if ((i & 1023) == 0)
            perf_progress(what, i, nb);
    }
    perf_progress(what, nb, nb);

    qsort(ts, nb, sizeof(*ts), cmp_u64);
    qsort(tb, nb, sizeof(*tb), cmp_u64);
    *res = (struct result){
        .ram_bytes = st.ram_bytes,
        .ops = nb * BATCH,
        .p50_ns = quantile_sorted(ts, nb, 0.50),
        .p99_ns = quantile_sorted(ts, nb, 0.99),
        .baseline_p50_ns = quantile_sorted(tb, nb, 0.50),
        .baseline_p99_ns = quantile_sorted(tb, nb, 0.99),
        .free_extents = st.free_extents,
    };
    res->ratio_p50 =
        (double)res->p50_ns / (double)(res->baseline_p50_ns ? res->baseline_p50_ns : 1);
out_machine:
    san_machine_destroy(m);
out_free:
    free(ts);
    free(tb);
    return err;
}

static void print_result(const struct perf_opts *o, const char *name, const struct result *r)
{
    if (o->json) {
        perf_json("\"suite\": \"contig\", \"case\": \"%s\", \"ram_bytes\": %" PRIu64
                  ", \"ops\": %" PRIu64 ", \"p50_ns\": %" PRIu64 ", \"p99_ns\": %" PRIu64
                  ", \"baseline_p50_ns\": %" PRIu64 ", \"ratio_p50\": %.2f"
                  ", \"baseline_p99_ns\": %" PRIu64 ", \"free_extents\": %" PRIu64
                  ", \"batch\": %d",
                  name, r->ram_bytes, r->ops, r->p50_ns, r->p99_ns, r->baseline_p50_ns,
                  r->ratio_p50, r->baseline_p99_ns, r->free_extents, BATCH);
    } else {
        printf("%-10s %8" PRIu64 " GiB %9" PRIu64 " %9" PRIu64 " %9" PRIu64 " %12" PRIu64
               " %9.2f %12" PRIu64 "\n",
               name, r->ram_bytes / GIB, r->ops, r->p50_ns, r->p99_ns, r->baseline_p50_ns,
               r->ratio_p50, r->free_extents);
    }
}

static void print_header(const struct perf_opts *o)
{
    if (!o->json)
        printf("%-10s %12s %9s %9s %9s %12s %9s %12s\n", "case", "ram", "ops", "p50_ns", "p99_ns",
               "malloc_p50", "ratio", "free_extents");
}

static void usage(void)
{
    fprintf(stderr,
            "usage: sanperf contig [--json] [--ram SIZE] [--ops N] [--case NAME] [--scaling]\n"
            "  times alloc+free of 64 KiB (cases any, below4g, boundary, window) on a\n"
            "  fragmented machine of SIZE (default 64G) against glibc malloc+free;\n"
            "  --case NAME: only that case\n"
            "  --scaling: the any case on 1 GiB and 1 TiB machines and their p50 ratio\n");
}

int perf_contig(const struct perf_opts *o)
{
    uint64_t ram = 64 * GIB, ops = DEFAULT_OPS;
    bool scaling = false;
    const char *only = NULL;
    int err;

    for (int i = 0; i < o->argc; i++) {
        const char *a = o->argv[i];
        if (!strcmp(a, "--json")) {
            continue;
        } else if (!strcmp(a, "--scaling")) {
            scaling = true;
        } else if (!strcmp(a, "--ram") && i + 1 < o->argc) {
            if (perf_parse_size(o->argv[++i], &ram) || ram < 64 * MIB) {
                fprintf(stderr, "sanperf contig: bad --ram '%s' (at least 64M)\n", o->argv[i]);
                return 1;
            }
        } else if (!strcmp(a, "--case") && i + 1 < o->argc) {
            only = o->argv[++i];
        } else if (!strcmp(a, "--ops") && i + 1 < o->argc) {
            char *end;
            errno = 0;
            ops = strtoull(o->argv[++i], &end, 10);
            if (errno || *end || ops < BATCH) {
                fprintf(stderr, "sanperf contig: bad --ops '%s' (at least %d)\n", o->argv[i],
                        BATCH);
                return 1;
            }
        } else {
            usage();
            return 1;
        }
    }
    /* The baseline must make no system calls: no trimming, no mmap for 64 KiB blocks. */
    mallopt(M_TRIM_THRESHOLD, INT32_MAX);
    mallopt(M_MMAP_THRESHOLD, (int)(4 * MIB));
    mallopt(M_TOP_PAD, (int)(16 * MIB));

    print_header(o);
    if (scaling) {
        struct result small, big;
        if ((err = run_case(&cases[0], GIB, ops, &small)))
            goto fail;
        print_result(o, "any", &small);
        if ((err = run_case(&cases[0], 1024 * GIB, ops, &big)))
            goto fail;
        print_result(o, "any", &big);
        double r = (double)big.p50_ns / (double)(small.p50_ns ? small.p50_ns : 1);
        if (o->json)
            perf_json("\"suite\": \"contig\", \"case\": \"scaling\", \"small_ram_bytes\": %" PRIu64
                      ", \"big_ram_bytes\": %" PRIu64 ", \"small_p50_ns\": %" PRIu64
                      ", \"big_p50_ns\": %" PRIu64 ", \"ratio_p50\": %.2f",
                      small.ram_bytes, big.ram_bytes, small.p50_ns, big.p50_ns, r);
        else
            printf("scaling: p50 on %" PRIu64 " GiB / p50 on %" PRIu64 " GiB = %.2f\n",
                   big.ram_bytes / GIB, small.ram_bytes / GIB, r);
        return 0;
    }
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct result r;
        if (only && strcmp(only, cases[i].name))
            continue;
        if ((err = run_case(&cases[i], ram, ops, &r)))
            goto fail;
        print_result(o, cases[i].name, &r);
    }
    return 0;
fail:
    fprintf(stderr, "sanperf contig: %s\n", san_strerror(err));
    return 1;
}
