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
 * baseline makes no system calls. --scaling builds a 1 GiB, a 64 GiB and a 1 TiB machine and
 * interleaves their batches too, so that their p50 ratios do not depend on when each ran.
 *
 * Threads: the four cases run in the process's one thread, where the allocator skips its lock
 * (as glibc's malloc skips its arena lock); every row says so ("lock"). --threads runs the any
 * case in 1 and then 2 worker threads on one machine, each thread alternating its own allocator
 * and malloc batches: the lock is taken there (and malloc's arena locks too), and with 2 threads
 * both contend for the same machine. */
#include <errno.h>
#include <inttypes.h>
#include <malloc.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/single_threaded.h>

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
    uint64_t ram_bytes, ops, p50_ns, p99_ns, p999_ns, baseline_p50_ns, baseline_p99_ns,
        baseline_p999_ns, free_extents;
    double ratio_p50;
    int threads; /* allocating threads */
    bool locked; /* the process had more than one thread: the allocator took its lock */
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
static uint64_t time_batch(const struct subject *s)
{
    const struct contig_case *c = s->c;
    int err = 0;
    uint64_t t0 = perf_now_ns();
    for (int k = 0; k < batch; k++) {
        void *va = NULL;
        int e = san_alloc_contiguous(s->m, PAIR_BYTES, c->lowest, c->highest, c->boundary,
                                     SAN_CACHED, &va);
        err |= e ? e : san_free_contiguous(s->m, va, PAIR_BYTES, SAN_CACHED);
    }
    uint64_t t1 = perf_now_ns();
    uint64_t ns = (t1 - t0 + batch / 2) / batch;
    return err ? 0 : ns ? ns : 1;
}

/* Times one batch of malloc+free pairs: the per-pair time. */
static uint64_t time_malloc_batch(void)
{
    uint64_t t0 = perf_now_ns();
    for (int k = 0; k < batch; k++) {
        void *p = malloc(PAIR_BYTES);
        escape(p);
        free(p);
    }
    uint64_t ns = (perf_now_ns() - t0 + batch / 2) / batch;
    return ns ? ns : 1;
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

/* The result of sorted samples s (the allocator's) and tb (the baseline's), nb of each. */
static struct result summarise(const struct subject *s, const uint64_t *sa, const uint64_t *tb,
                               size_t nb, int threads, bool locked)
{
    struct result r = {
        .ram_bytes = s->st.ram_bytes,
        .ops = nb * batch,
        .p50_ns = quantile_sorted(sa, nb, 0.50),
        .p99_ns = quantile_sorted(sa, nb, 0.99),
        .p999_ns = quantile_sorted(sa, nb, 0.999),
        .baseline_p50_ns = quantile_sorted(tb, nb, 0.50),
        .baseline_p99_ns = quantile_sorted(tb, nb, 0.99),
        .baseline_p999_ns = quantile_sorted(tb, nb, 0.999),
        .free_extents = s->st.free_extents,
        .threads = threads,
        .locked = locked,
    };
    r.ratio_p50 = (double)r.p50_ns / (double)(r.baseline_p50_ns ? r.baseline_p50_ns : 1);
    return r;
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
    for (int i = 0; i < 1000 / batch; i++)
        time_malloc_batch();

    bool locked = !__libc_single_threaded;
    snprintf(what, sizeof(what), "contig %s: timing", subj[0].c->name);
    for (size_t i = 0; i < nb; i++) {
        for (size_t k = 0; k < n; k++)
            if (!(subj[k].samples[i] = time_batch(&subj[k]))) {
                err = -EIO; /* a timed pair failed: the run is meaningless */
                goto out;
            }
        tb[i] = time_malloc_batch();
        if ((i & 1023) == 0)
            perf_progress(what, i, nb);
    }
    perf_progress(what, nb, nb);

    qsort(tb, nb, sizeof(*tb), cmp_u64);
    for (size_t k = 0; k < n; k++) {
        struct subject *s = &subj[k];
        qsort(s->samples, nb, sizeof(*s->samples), cmp_u64);
        s->res = summarise(s, s->samples, tb, nb, 1, locked);
    }
out:
    for (size_t k = 0; k < n; k++)
        release(&subj[k]);
    free(tb);
    return err;
}

/* One worker of --threads: its own allocator and malloc samples, batches alternating. */
struct worker {
    pthread_t thread;
    const struct subject *s;
    size_t nb;
    uint64_t *sa, *tb; /* this worker's part of the shared sample arrays */
    pthread_barrier_t *start;
    atomic_int *failed;
};

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    for (int i = 0; i < 1000 / batch; i++)
        time_malloc_batch();
    pthread_barrier_wait(w->start);
    for (size_t i = 0; i < w->nb; i++) {
        if (!(w->sa[i] = time_batch(w->s))) {
            atomic_store(w->failed, 1);
            break;
        }
        w->tb[i] = time_malloc_batch();
    }
    return NULL;
}

/* ops pairs in each of threads workers on s's (fragmented) machine, all started together. */
static int measure_threads(struct subject *s, int threads, uint64_t ops)
{
    size_t nb = (size_t)((ops + (uint64_t)batch - 1) / (uint64_t)batch), all = nb * threads;
    uint64_t *sa = malloc(all * sizeof(*sa)), *tb = malloc(all * sizeof(*tb));
    struct worker w[2];
    pthread_barrier_t start;
    atomic_int failed = 0;
    int err = 0, started = 0;

    if (!sa || !tb || threads < 1 || threads > 2) {
        err = -ENOMEM;
        goto out;
    }
    pthread_barrier_init(&start, NULL, (unsigned)threads);
    for (; started < threads; started++) {
        w[started] = (struct worker){.s = s,
                                     .nb = nb,
                                     .sa = sa + (size_t)started * nb,
                                     .tb = tb + (size_t)started * nb,
                                     .start = &start,
                                     .failed = &failed};
        if (pthread_create(&w[started].thread, NULL, worker_main, &w[started])) {
            err = -EAGAIN; /* the barrier would never open: the run cannot go on */
            break;
        }
    }
    if (err) {
        fprintf(stderr, "sanperf contig: cannot start a thread\n");
        exit(1);
    }
    for (int k = 0; k < started; k++)
        pthread_join(w[k].thread, NULL);
    pthread_barrier_destroy(&start);
    if (atomic_load(&failed)) {
        err = -EIO;
        goto out;
    }
    qsort(sa, all, sizeof(*sa), cmp_u64);
    qsort(tb, all, sizeof(*tb), cmp_u64);
    s->res = summarise(s, sa, tb, all, threads, true);
out:
    free(sa);
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
                  ", \"batch\": %d, \"p999_ns\": %" PRIu64 ", \"baseline_p999_ns\": %" PRIu64
                  ", \"threads\": %d, \"lock\": \"%s\", \"ratio\": %.2f, \"better\": \"lower\"",
                  name, r->ram_bytes, r->ops, r->p50_ns, r->p99_ns, r->baseline_p50_ns,
                  r->ratio_p50, r->baseline_p99_ns, r->free_extents, batch, r->p999_ns,
                  r->baseline_p999_ns, r->threads, r->locked ? "taken" : "skipped", r->ratio_p50);
    } else {
        printf("%-10s %8" PRIu64 " GiB %7d %9" PRIu64 " %9" PRIu64 " %9" PRIu64 " %9" PRIu64
               " %12" PRIu64 " %9.2f %12" PRIu64 "\n",
               name, r->ram_bytes / GIB, r->threads, r->ops, r->p50_ns, r->p99_ns, r->p999_ns,
               r->baseline_p50_ns, r->ratio_p50, r->free_extents);
    }
}

static void print_header(const struct perf_opts *o)
{
    if (!o->json)
        printf("%-10s %12s %7s %9s %9s %9s %9s %12s %9s %12s\n", "case", "ram", "threads", "ops",
               "p50_ns", "p99_ns", "p999_ns", "malloc_p50", "ratio", "free_extents");
}

static void usage(void)
{
    fprintf(stderr,
            "usage: sanperf contig [--json] [--ram SIZE] [--ops N] [--case NAME] [--batch N] "
            "[--scaling] [--threads]\n"
            "  times alloc+free of 64 KiB (cases any, below4g, boundary, window) on a\n"
            "  fragmented machine of SIZE (default 64G) against glibc malloc+free;\n"
            "  --case NAME: only that case; --batch N: pairs per timed sample (default 16; 1:\n"
            "  every pair timed alone, clock overhead included)\n"
            "  --scaling: the any case on 1 GiB, 64 GiB and 1 TiB machines, and their p50 ratio\n"
            "  --threads: the any case in 1, then 2 threads on one machine (the lock taken)\n");
}

/* --scaling: the any case on a 1 GiB, a 64 GiB and a 1 TiB machine, timed in one loop. */
static int run_scaling(const struct perf_opts *o, uint64_t ops)
{
    struct subject three[3] = {{.c = &cases[0], .ram = GIB},
                               {.c = &cases[0], .ram = 64 * GIB},
                               {.c = &cases[0], .ram = 1024 * GIB}};
    int err;

    if ((err = measure(three, 3, ops)))
        return err;
    struct result *small = &three[0].res, *mid = &three[1].res, *big = &three[2].res;
    for (int k = 0; k < 3; k++)
        print_result(o, "any", &three[k].res);
    double r = (double)big->p50_ns / (double)(small->p50_ns ? small->p50_ns : 1);
    double rm = (double)mid->p50_ns / (double)(small->p50_ns ? small->p50_ns : 1);
    if (o->json)
        perf_json("\"suite\": \"contig\", \"case\": \"scaling\", \"small_ram_bytes\": %" PRIu64
                  ", \"big_ram_bytes\": %" PRIu64 ", \"small_p50_ns\": %" PRIu64
                  ", \"big_p50_ns\": %" PRIu64 ", \"ratio_p50\": %.2f"
                  ", \"mid_ram_bytes\": %" PRIu64 ", \"mid_p50_ns\": %" PRIu64
                  ", \"mid_ratio_p50\": %.2f, \"ratio\": %.2f, \"better\": \"lower\"",
                  small->ram_bytes, big->ram_bytes, small->p50_ns, big->p50_ns, r, mid->ram_bytes,
                  mid->p50_ns, rm, r);
    else
        printf("scaling: p50 on %" PRIu64 " GiB / p50 on %" PRIu64 " GiB = %.2f, on %" PRIu64
               " GiB = %.2f\n",
               big->ram_bytes / GIB, small->ram_bytes / GIB, r, mid->ram_bytes / GIB, rm);
    return 0;
}

/* --threads: the any case in 1, then 2 worker threads on one fragmented machine. */
static int run_threads(const struct perf_opts *o, uint64_t ram, uint64_t ops)
{
    size_t nb = (size_t)((ops + (uint64_t)batch - 1) / (uint64_t)batch);
    struct subject s = {.c = &cases[0], .ram = ram};
    int err = prepare(&s, nb);

    for (int t = 1; !err && t <= 2; t++)
        if (!(err = measure_threads(&s, t, ops)))
            print_result(o, "any", &s.res);
    release(&s);
    return err;
}

int perf_contig(const struct perf_opts *o)
{
    uint64_t ram = 64 * GIB, ops = DEFAULT_OPS;
    bool scaling = false, threads = false;
    const char *only = NULL;
    int err;

    for (int i = 0; i < o->argc; i++) {
        const char *a = o->argv[i];
        if (!strcmp(a, "--json")) {
            continue;
        } else if (!strcmp(a, "--scaling")) {
            scaling = true;
        } else if (!strcmp(a, "--threads")) {
            threads = true;
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
    if (scaling || threads) {
        /* The thread rows last: once a thread has run, the process is no longer single-threaded
         * and every later row would take the lock. */
        if ((scaling && (err = run_scaling(o, ops))) ||
            (threads && (err = run_threads(o, ram, ops))))
            goto fail;
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
