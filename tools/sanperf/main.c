/* sanperf: benchmarks. `sanperf <suite> [--json] [suite options]`, `sanperf all [--json]`.
 *
 * The table below is the one list of suites and of every option each accepts: --help prints it,
 * and the command line is checked against it before a suite runs (an unknown option, a missing or
 * malformed value is named, and sanperf exits 2), so a suite only ever sees options it knows with
 * values in their domain. Exit status: 0, 1 when a suite fails, 2 for a usage error.
 * Before any suite runs, the soft RLIMIT_MEMLOCK is raised to the hard limit (the dma suite locks
 * what it measures). Single-threaded here. */
#include <errno.h>
#include <linux/capability.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "perf.h"

#define MIB (UINT64_C(1) << 20)
#define TIB (UINT64_C(1) << 40)

static const struct perf_option contig_options[] = {
    {"--ram", PERF_SIZE, 64 * MIB, 64 * TIB, NULL, "machine RAM (default 64G)"},
    {"--ops", PERF_COUNT, 1, UINT32_MAX, NULL, "alloc+free pairs per case (default 200000)"},
    {"--case", PERF_CHOICE, 0, 0, "any|below4g|boundary|window", "run that case only"},
    {"--batch", PERF_COUNT, 1, 1024, NULL, "pairs per timed sample (default 16)"},
    {"--scaling", PERF_FLAG, 0, 0, NULL, "the any case on 1 GiB, 64 GiB and 1 TiB machines"},
    {"--threads", PERF_FLAG, 0, 0, NULL, "the any case in 1, then 2 threads on one machine"},
    {0},
};
static const struct perf_option dma_options[] = {
    {"--rounds", PERF_COUNT, 1, 99999, NULL, "buffer passes per side of direct and bounced (15)"},
    {"--ops", PERF_COUNT, 1, 99999999, NULL, "sg iterations (20000); lock does a tenth"},
    {0},
};
static const struct perf_option reg_options[] = {
    {"--ops", PERF_COUNT, 1, UINT32_MAX, NULL, "operations per case (default 20000)"},
    {"--spin-us", PERF_COUNT, 0, 1000000, NULL,
     "the private daemon's --spin-us (default: the daemon's own)"},
    {0},
};
static const struct perf_option rcache_options[] = {
    {"--rounds", PERF_COUNT, 1, 1000000, NULL, "rounds of every case (default 200)"},
    {0},
};
static const struct perf_option nic_options[] = {
    {"--mib", PERF_COUNT, 1, 1048576, NULL, "MiB each bandwidth case writes (default 256)"},
    {"--memory", PERF_CHOICE, 0, 0, "proxy|client|mixed|both|all",
     "the bandwidth cases: proxy memory, the clients' own pages, proxy into own pages, proxy and "
     "client (default: both), or all three"},
    {"--rounds", PERF_COUNT, 1, 100000000, NULL, "ping-pongs of each latency case (default 20000)"},
    {0},
};

static const struct perf_option sock_options[] = {
    {"--mib", PERF_COUNT, 16, 1048576, NULL, "MiB the stream case writes (default 1024)"},
    {"--rounds", PERF_COUNT, 10, 100000000, NULL, "ping-pongs of the latency case (default 20000)"},
    {"--size", PERF_COUNT, 4096, 64u << 20, NULL,
     "bytes each side of the bigpong case writes (default 1048576)"},
    {"--case", PERF_CHOICE, 0, 0, "stream|pingpong|bigpong|crossover|programs|switch",
     "run that case only (switch: all but the programs)"},
    {0},
};

static const struct perf_option link_options[] = {
    {"--rounds", PERF_COUNT, 1, 100000000, NULL, "ping-pongs of the latency case (default 2000)"},
    {"--mib", PERF_COUNT, 1, 1048576, NULL, "MiB the bandwidth case writes (default 1024)"},
    {"--reps", PERF_COUNT, 1, 99, NULL,
     "runs of every case and baseline, alternating; each figure their median (default 3)"},
    {"--tag", PERF_COUNT, 1, 99999999, NULL,
     "names the namespaces sanperf-link-TAG-a and -b (default: this process's pid)"},
    {0},
};

static const struct perf_suite suites[] = {
    {"contig", "contiguous allocator against glibc malloc+free", contig_options, perf_contig},
    {"dma", "DMA direct and bounced against memcpy, SG lists, MDL locking against mlock",
     dma_options, perf_dma},
    {"reg", "register/alloc through a private sanproxyd against socket round trips", reg_options,
     perf_reg},
    {"rcache", "registration cache: hit (and more) against miss through a private sanproxyd",
     rcache_options, perf_rcache},
    {"nic", "the NIC: RDMA write bandwidth against memcpy, send and RDMA latency against TCP",
     nic_options, perf_nic},
    {"sock",
     "sockets under sanrun (libsansock) against kernel TCP: stream, ping-pong, RDMA "
     "crossover, iperf3, sockperf",
     sock_options, perf_sock},
    /* Last, and not in `all`: it needs root and makes network namespaces. */
    {"link", "endpoints across hosts (root: two namespaces): against fi_pingpong and kernel TCP",
     link_options, perf_link},
};
#define NR_IN_ALL (NR_SUITES - 1)
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

static const char *arg_name(const struct perf_option *p)
{
    static const char *const names[] = {"", " N", " SIZE", " NAME"};
    return names[p->arg];
}

static void usage_suite(FILE *f, const struct perf_suite *s)
{
    fprintf(f, "  %-8s %s\n", s->name, s->help);
    for (const struct perf_option *p = s->options; p->name; p++) {
        char left[32];
        snprintf(left, sizeof(left), "%s%s", p->name, arg_name(p));
        fprintf(f, "             %-16s %s", left, p->help);
        if (p->arg == PERF_CHOICE)
            fprintf(f, ": %s", p->choices);
        fputc('\n', f);
    }
}

static void usage(FILE *f)
{
    fprintf(f, "usage: sanperf <suite> [--json] [options]\n"
               "       sanperf all [--json]      every suite but link, on its defaults\n"
               "       sanperf --version | --help\n"
               "Every timing is printed next to a baseline measured in the same run; --json\n"
               "prints one JSON object per case on stdout, with ratio = ours / baseline and\n"
               "better = \"lower\" (times) or \"higher\" (throughputs).\n"
               "suites and their options (N: a count, SIZE: bytes with K/M/G/T):\n");
    for (size_t i = 0; i < NR_SUITES; i++)
        usage_suite(f, &suites[i]);
}

/* Checks one value against its option's domain: 0, or -EINVAL with a message. */
static int check_value(const char *suite, const struct perf_option *p, const char *v)
{
    uint64_t n = 0;
    bool ok;
    if (p->arg == PERF_CHOICE) {
        size_t len = strlen(v);
        const char *c = strstr(p->choices, v);
        ok = len && c && (c == p->choices || c[-1] == '|') && (c[len] == '|' || !c[len]);
    } else if (p->arg == PERF_SIZE) {
        ok = !san_parse_size(v, &n) && n >= p->min && n <= p->max;
    } else {
        char *end;
        errno = 0;
        n = strtoull(v, &end, 10);
        ok = !errno && end != v && !*end && v[0] != '-' && n >= p->min && n <= p->max;
    }
    if (ok)
        return 0;
    if (p->arg == PERF_CHOICE)
        fprintf(stderr, "sanperf %s: %s: one of %s (got \"%s\")\n", suite, p->name, p->choices, v);
    else
        fprintf(stderr, "sanperf %s: %s: %s from %llu to %llu (got \"%s\")\n", suite, p->name,
                p->arg == PERF_SIZE ? "a size" : "a number", (unsigned long long)p->min,
                (unsigned long long)p->max, v);
    return -EINVAL;
}

/* Checks the suite's arguments against its table (NULL: `all`, which takes --json only). */
static int check_args(const char *name, const struct perf_suite *s, int argc, char **argv,
                      bool *json)
{
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--json")) {
            *json = true;
            continue;
        }
        const struct perf_option *p = s ? s->options : NULL;
        while (p && p->name && strcmp(p->name, a))
            p++;
        if (!p || !p->name) {
            fprintf(stderr, "sanperf %s: unknown option '%s' (sanperf --help lists them)\n", name,
                    a);
            return -EINVAL;
        }
        if (p->arg == PERF_FLAG)
            continue;
        if (i + 1 >= argc) {
            fprintf(stderr, "sanperf %s: %s needs a value\n", name, a);
            return -EINVAL;
        }
        if (check_value(name, p, argv[++i]))
            return -EINVAL;
    }
    return 0;
}

uint64_t perf_memlock_allowance(void)
{
    struct __user_cap_header_struct h = {.version = _LINUX_CAPABILITY_VERSION_3};
    struct __user_cap_data_struct d[2];
    struct rlimit r;
    if (!syscall(SYS_capget, &h, d) &&
        (d[CAP_IPC_LOCK / 32].effective & (1u << (CAP_IPC_LOCK % 32))))
        return UINT64_MAX;
    if (getrlimit(RLIMIT_MEMLOCK, &r) || r.rlim_cur == RLIM_INFINITY)
        return UINT64_MAX;
    return r.rlim_cur;
}

/* What can be locked without privilege is the soft limit; the hard limit is the most it may be
 * raised to. Raised so that the dma suite measures the size it is meant to wherever allowed. */
static void raise_memlock(void)
{
    struct rlimit r;
    if (!getrlimit(RLIMIT_MEMLOCK, &r) && r.rlim_cur < r.rlim_max) {
        r.rlim_cur = r.rlim_max;
        setrlimit(RLIMIT_MEMLOCK, &r);
    }
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        usage(stderr);
        return PERF_USAGE;
    }
    if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
        usage(stdout);
        return 0;
    }
    if (!strcmp(argv[1], "--version")) {
        printf("sanperf (sanproxy) %s\n", SAN_VERSION);
        return 0;
    }
    /* The sock suite's two ends: this binary again, run plainly or under sanrun (sock.c). */
    if (!strcmp(argv[1], "sock-peer"))
        return perf_sock_peer(argc - 2, argv + 2);
    const struct perf_suite *suite = NULL;
    for (size_t i = 0; i < NR_SUITES; i++)
        if (!strcmp(argv[1], suites[i].name))
            suite = &suites[i];
    if (!suite && strcmp(argv[1], "all")) {
        fprintf(stderr, "sanperf: unknown suite '%s'\n", argv[1]);
        usage(stderr);
        return PERF_USAGE;
    }
    struct perf_opts o = {.argc = argc - 2, .argv = argv + 2};
    for (int i = 2; i < argc; i++)
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            if (suite)
                usage_suite(stdout, suite);
            else
                usage(stdout);
            return 0;
        }
    if (check_args(argv[1], suite, o.argc, o.argv, &o.json)) {
        fprintf(stderr, "usage: sanperf %s [--json]%s\n", argv[1],
                suite && suite->options[0].name ? " [options] (sanperf --help)" : "");
        return PERF_USAGE;
    }
    raise_memlock();
    if (!suite) {
        int rc = 0;
        struct perf_opts all = {.json = o.json};
        for (size_t i = 0; i < NR_IN_ALL; i++)
            rc |= suites[i].run(&all) != 0;
        return rc;
    }
    int rc = suite->run(&o);
    return rc == PERF_USAGE ? PERF_USAGE : rc != 0;
}
