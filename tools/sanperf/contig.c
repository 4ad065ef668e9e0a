/* sanperf contig: the contiguous allocator (san_alloc_contiguous + san_free_contiguous of 64 KiB)
 * against glibc malloc + free of 64 KiB, measured in the same run.
 *
 * Each case builds a machine of --ram bytes (default map), fragments it with a fixed seed (allocate
 * 4 KiB..1 MiB blocks until RAM runs out, then free every other one: about half full, one free
 * extent per freed block) and then times alloc+free pairs under the case's constraint.
 *
 * Timing: a single pair costs tens of nanoseconds, the same order as clock_gettime itself, so
 * pairs are timed in batches of 16 (--batch N) consecutive pairs and each batch's time divided by
 * the batch size is one sample; p50 and p99 are taken over those samples. Batches of the allocator
 * and of the malloc baseline alternate, so that both see the same machine noise; the ratio is
 * p50(allocator) / p50(malloc). glibc is told never to trim and never to mmap 64 KiB, so the
 * baseline makes no system calls. --scaling builds a 1 GiB and a 1 TiB machine and interleaves
 * their batches too, so that their p50 ratio does not depend on when each ran.
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

#define KIB   (UINT64_C(1) << 10)
#define MIB   (UINT64_C(1) << 20)
#define GIB   (UINT64_C(1) << 30)
#define BATCH 16 /* default pairs per sample (--batch) */

static int batch = BATCH;
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

/* One machine under test: its case, its size, and what it measured. */
struct subject {
    const struct contig_case *c;
    uint64_t ram;
    struct san_machine *m;
    uint64_t *samples;
    struct san_machine_stats st;
    struct result res;
};

/* Times one batch of pairs on s: the per-pair time, or 0 when a pair failed. */
static uint64_t time_batch(struct subject *s)
{
    const struct contig_case *c = s->c;
    int err = 0;
    uint64_t t0 = perf_now_ns();
    for (int k = 0; k < batch; k++) {
        void *va;
        err |= san_alloc_contiguous(s->m, PAIR_BYTES, c->lowest, c->highest, c->boundary,
                                    SAN_CACHED, &va);
        err |= san_free_contiguous(s->m, va, PAIR_BYTES, SAN_CACHED);
    }
    uint64_t t1 = perf_now_ns();
    uint64_t ns = (t1 - t0 + batch / 2) / batch;
    return err ? 0 : ns ? ns : 1;
}

/* Builds and fragments s's machine, and makes sure its case can be served at all. */
static int prepare(struct subject *s, size_t nb)
{
    struct san_machine_config cfg = {.ram_size = s->ram};
    char what[64];
    int err;

    s->samples = malloc(nb * sizeof(*s->samples));
    if (!s->samples)
        return -ENOMEM;
    if ((err = san_machine_create(&cfg, &s->m)))
        return err;
    snprintf(what, sizeof(what), "contig %s: fragmenting", s->c->name);
    if ((err = fragment(s->m, s->ram, what)))
        return err;
    san_machine_stats(s->m, &s->st);
    for (int i = 0; i < 1000 / batch; i++)
        if (!time_batch(s))
            return -EIO;
    return 0;
}

static void release(struct subject *s)
{
    san_machine_destroy(s->m);
    free(s->samples);
    s->m = NULL;
    s->samples = NULL;
}

/* Times ops alloc+free pairs on each subject, their batches interleaved with each other's and
 * with the malloc baseline's, so that all of them see the same machine noise. */
static int measure(struct subject *subj, size_t n, uint64_t ops)
{
    size_t nb = (size_t)((ops + (uint64_t)batch - 1) / (uint64_t)batch);
    uint64_t *tb = malloc(nb * sizeof(*tb));
    char what[64];
    int err = 0;

    if (!tb)
        return -ENOMEM;
    for (size_t k = 0; k < n && !err; k++)
        err = prepare(&subj[k], nb);
    if (err)
        goto out;
    for (int i = 0; i < 1000; i++) {
        void *p = malloc(PAIR_BYTES);
        escape(p);
        free(p);
    }

    snprintf(what, sizeof(what), "contig %s: timing", subj[0].c->name);
    for (size_t i = 0; i < nb; i++) {
        for (size_t k = 0; k < n; k++)
            if (!(subj[k].samples[i] = time_batch(&subj[k]))) {
                err = -EIO; /* a timed pair failed: the run is meaningless */
                goto out;
            }
        uint64_t t0 = perf_now_ns();
        for (int k = 0; k < batch; k++) {
            void *p = malloc(PAIR_BYTES);
            escape(p);
            free(p);
        }
        tb[i] = (perf_now_ns() - t0 + batch / 2) / batch;
        if ((i & 1023) == 0)
            perf_progress(what, i, nb);
    }
    perf_progress(what, nb, nb);

    qsort(tb, nb, sizeof(*tb), cmp_u64);
    for (size_t k = 0; k < n; k++) {
        struct subject *s = &subj[k];
        qsort(s->samples, nb, sizeof(*s->samples), cmp_u64);
        s->res = (struct result){
            .ram_bytes = s->st.ram_bytes,
            .ops = nb * batch,
            .p50_ns = quantile_sorted(s->samples, nb, 0.50),
            .p99_ns = quantile_sorted(s->samples, nb, 0.99),
            .baseline_p50_ns = quantile_sorted(tb, nb, 0.50),
            .baseline_p99_ns = quantile_sorted(tb, nb, 0.99),
            .free_extents = s->st.free_extents,
        };
        s->res.ratio_p50 =
            (double)s->res.p50_ns / (double)(s->res.baseline_p50_ns ? s->res.baseline_p50_ns : 1);
    }
out:
    for (size_t k = 0; k < n; k++)
        release(&subj[k]);
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
                  r->ratio_p50, r->baseline_p99_ns, r->free_extents, batch);
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
            "usage: sanperf contig [--json] [--ram SIZE] [--ops N] [--case NAME] [--batch N] "
            "[--scaling]\n"
            "  times alloc+free of 64 KiB (cases any, below4g, boundary, window) on a\n"
            "  fragmented machine of SIZE (default 64G) against glibc malloc+free;\n"
            "  --case NAME: only that case; --batch N: pairs per timed sample (default 16; 1:\n"
            "  every pair timed alone, clock overhead included)\n"
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
            if (san_parse_size(o->argv[++i], &ram) || ram < 64 * MIB) {
                fprintf(stderr, "sanperf contig: bad --ram '%s' (at least 64M)\n", o->argv[i]);
                return 1;
            }
        } else if (!strcmp(a, "--batch") && i + 1 < o->argc) {
            batch = atoi(o->argv[++i]);
            if (batch < 1 || batch > 1024) {
                fprintf(stderr, "sanperf contig: bad --batch '%s' (1 to 1024)\n", o->argv[i]);
                return 1;
            }
        } else if (!strcmp(a, "--case") && i + 1 < o->argc) {
            only = o->argv[++i];
        } else if (!strcmp(a, "--ops") && i + 1 < o->argc) {
            char *end;
            errno = 0;
            ops = strtoull(o->argv[++i], &end, 10);
            if (errno || *end || ops < (uint64_t)batch) {
                fprintf(stderr, "sanperf contig: bad --ops '%s' (at least %d)\n", o->argv[i],
                        batch);
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
        /* Both machines timed in the same loop: the ratio does not depend on when each ran. */
        struct subject two[2] = {{.c = &cases[0], .ram = GIB}, {.c = &cases[0], .ram = 1024 * GIB}};
        if ((err = measure(two, 2, ops)))
            goto fail;
        struct result *small = &two[0].res, *big = &two[1].res;
        print_result(o, "any", small);
        print_result(o, "any", big);
        double r = (double)big->p50_ns / (double)(small->p50_ns ? small->p50_ns : 1);
        if (o->json)
            perf_json("\"suite\": \"contig\", \"case\": \"scaling\", \"small_ram_bytes\": %" PRIu64
                      ", \"big_ram_bytes\": %" PRIu64 ", \"small_p50_ns\": %" PRIu64
                      ", \"big_p50_ns\": %" PRIu64 ", \"ratio_p50\": %.2f",
                      small->ram_bytes, big->ram_bytes, small->p50_ns, big->p50_ns, r);
        else
            printf("scaling: p50 on %" PRIu64 " GiB / p50 on %" PRIu64 " GiB = %.2f\n",
                   big->ram_bytes / GIB, small->ram_bytes / GIB, r);
        return 0;
    }
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        if (only && strcmp(only, cases[i].name))
            continue;
        struct subject one = {.c = &cases[i], .ram = ram};
        if ((err = measure(&one, 1, ops)))
            goto fail;
        print_result(o, cases[i].name, &one.res);
    }
    return 0;
fail:
    fprintf(stderr, "sanperf contig: %s\n", san_strerror(err));
    return 1;
}
