/* sanperf: shared pieces of the benchmark suites. Every timing is printed next to a baseline
 * measured in the same run; suites print one JSON object per case with --json, a table otherwise.
 * One ratio convention in every JSON object: "ratio" = ours / the baseline's value of the same
 * quantity, and "better": "lower" for times (p50_ns against baseline_p50_ns, or one_way_ns
 * against baseline_one_way_ns) or "higher" for throughputs (gb_per_s against baseline_gb_per_s).
 */
#ifndef SANPERF_PERF_H
#define SANPERF_PERF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <time.h>

#include "common/clock.h" /* san_now_ns */
#include "common/size.h"  /* san_parse_size */

struct perf_opts {
    bool json;
    int argc; /* the suite's own arguments (after the suite name) */
    char **argv;
};

/* One option of a suite and the domain of its value; main.c checks the command line against
 * these before the suite runs. */
enum perf_arg {
    PERF_FLAG,   /* no value */
    PERF_COUNT,  /* a decimal number in [min, max] */
    PERF_SIZE,   /* bytes, K/M/G/T suffixes allowed, in [min, max] */
    PERF_CHOICE, /* one of choices, "a|b|c" */
};
struct perf_option {
    const char *name; /* "--rounds"; NULL ends a table */
    enum perf_arg arg;
    uint64_t min, max;
    const char *choices;
    const char *help;
};

/* One suite: name, one-line help, its options, entry point: 0 on success, PERF_USAGE for a usage
 * error (sanperf exits 2), anything else for a failure (exit 1). */
#define PERF_USAGE 2
struct perf_suite {
    const char *name;
    const char *help;
    const struct perf_option *options;
    int (*run)(const struct perf_opts *o);
};

/* The suites' clock is libsan's (common/clock.h). */
static inline uint64_t perf_now_ns(void)
{
    return san_now_ns();
}

/* Bytes this process may lock: UINT64_MAX with CAP_IPC_LOCK or an unlimited RLIMIT_MEMLOCK, else
 * the soft limit (main.c raised it to the hard one). Suites size what they lock to fit it. */
uint64_t perf_memlock_allowance(void);

/* The copy bound (copybound.c): GB/s at which `stages` processes (2 to 4) pass `bytes` along a
 * chain of that many memcpys through shared rings of 8 slots of 256 KiB, with nothing else
 * running; 0 if it could not run. */
double perf_copy_bound(int stages, uint64_t bytes);

/* Sorts samples in place and returns the q-quantile (0..1). */
uint64_t perf_quantile(uint64_t *samples, size_t n, double q);
/* Progress on stderr when it is a terminal; silent otherwise. done == total ends the line. */
void perf_progress(const char *what, uint64_t done, uint64_t total);
/* Prints a JSON line from printf-style "key": value pairs the caller formats. */
void perf_json(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* A private sanproxyd (daemon.c): the binary next to sanperf, on a socket in a temporary
 * directory, pinned to cpu unless it is -1, with --spin-us spin_us unless NULL. */
struct perf_daemon {
    pid_t pid;
    char dir[64], sock[96];
};
int perf_start_daemon(struct perf_daemon *d, const char *suite, const char *spin_us, int cpu);
void perf_stop_daemon(struct perf_daemon *d);
/* Opens a libsan context on sock whose registration cache is off, leaving the environment as it
 * was. */
struct san_ctx;
int perf_open_uncached(const char *sock, struct san_ctx **out);
/* Pins the calling process to one CPU (-1: leaves it alone). */
void perf_pin_to_cpu(int cpu);

/* Suites (one file each). */
int perf_contig(const struct perf_opts *o);
int perf_dma(const struct perf_opts *o);
int perf_reg(const struct perf_opts *o);
int perf_rcache(const struct perf_opts *o);
int perf_nic(const struct perf_opts *o);
int perf_link(const struct perf_opts *o);
int perf_sock(const struct perf_opts *o);
/* `sanperf sock-peer ...`: one end of a sock case (sock.c), not a suite. */
int perf_sock_peer(int argc, char **argv);

#endif
