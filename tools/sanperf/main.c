/* sanperf: benchmarks. `sanperf <suite> [--json] [suite options]`, `sanperf all --json`. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "perf.h"

static const struct perf_suite suites[] = {
    {"contig", "contiguous allocator (--ram SIZE, --ops N, --scaling)", perf_contig},
    {"dma", "DMA direct and bounced, SG lists, MDL locking (--rounds N, --ops N)", perf_dma},
    {"reg", "register/alloc through sanproxyd vs a socket round trip (--ops N)", perf_reg},
    {"rcache", "registration cache: hit vs miss through sanproxyd (--rounds N)", perf_rcache},
    {"nic", "NIC: RDMA write bandwidth, send and RDMA latency (--mib N, --rounds N)", perf_nic},
};
#define NR_SUITES (sizeof(suites) / sizeof(suites[0]))

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

uint64_t perf_quantile(uint64_t *samples, size_t n, double q)
{
    if (!n)
        return 0;
    qsort(samples, n, sizeof(*samples), cmp_u64);
    size_t i = (size_t)(q * (double)(n - 1) + 0.5);
    return samples[i < n ? i : n - 1];
}

void perf_progress(const char *what, uint64_t done, uint64_t total)
{
    static int tty = -1;
    if (tty < 0)
        tty = isatty(STDERR_FILENO);
    if (!tty || !total)
        return;
    fprintf(stderr, "\r%s: %3u%%", what, (unsigned)(done * 100 / total));
    if (done >= total)
        fprintf(stderr, "\r\033[K");
    fflush(stderr);
}

void perf_json(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    putchar('{');
    vprintf(fmt, ap);
    puts("}");
    fflush(stdout);
    va_end(ap);
}

static void usage(FILE *f)
{
    fprintf(f, "usage: sanperf <suite> [--json] [options]\n       sanperf all [--json]\nsuites:\n");
    for (size_t i = 0; i < NR_SUITES; i++)
        fprintf(f, "  %-8s %s\n", suites[i].name, suites[i].help);
}

int main(int argc, char **argv)
{
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    struct perf_opts o = {.argc = argc - 2, .argv = argv + 2};
    for (int i = 2; i < argc; i++)
        if (!strcmp(argv[i], "--json"))
            o.json = true;
    if (!strcmp(argv[1], "all")) {
        int rc = 0;
        struct perf_opts all = {.json = o.json};
        for (size_t i = 0; i < NR_SUITES; i++)
            rc |= suites[i].run(&all);
        return rc ? 1 : 0;
    }
    for (size_t i = 0; i < NR_SUITES; i++)
        if (!strcmp(argv[1], suites[i].name))
            return suites[i].run(&o) ? 1 : 0;
    fprintf(stderr, "sanperf: unknown suite '%s'\n", argv[1]);
    usage(stderr);
    return 2;
}
