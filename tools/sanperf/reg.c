/* sanperf reg: the control path's cost. Uncached san_register + san_deregister of 64 KiB (libsan's
 * registration cache is turned off: SAN_RCACHE_MAX_ENTRIES=0), and
 * san_alloc + san_free of 64 KiB, each against a 64-byte round trip on a Unix SOCK_SEQPACKET
 * socket pair to an echo process, measured in the same run.
 *
 * The suite starts its own sanproxyd (the binary next to sanperf, fork + exec, on a socket in a
 * temporary directory, readiness through --ready-fd) and stops it with SIGTERM at the end; the echo
 * process is a fork of sanperf. Samples of the operation and of the baseline are taken in
 * alternating batches of BATCH, so both see the same machine noise; each sample is one operation
 * (tens of microseconds, far above clock_gettime's cost). Two baselines: the plain round trip
 * (a blocking echo server, a blocking receive: what a socket round trip costs any service), which
 * ratio_p50 uses, and the polled round trip, which gets every advantage the daemon has: its server
 * polls after each message exactly as long as the daemon does (--spin-us) and the client polls for
 * the reply as long as libsan does ($SANPROXY_SPIN_US); polled_ratio uses it. On a machine
 * with two CPUs or more the client runs on one CPU and every server (the daemon, the echo
 * processes) on another, so no round trip depends on where the scheduler happens to put a process.
 * ratio = p50(op) / p50(plain round trip), better: lower:
 * how many socket round trips one operation costs (the target for register+deregister is <= 3:
 * two round trips are unavoidable, plus mlock/munlock and the daemon's work). Options (checked by
 * main.c): --ops N, --spin-us N.
 * Single-threaded; the daemon and the echo process are children that never outlive the suite. */
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <inttypes.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <san/san.h>

#include "client/defaults.h" /* SAN_CLIENT_SPIN_US, libsan's default */
#include "daemon/daemon.h"   /* SAN_DAEMON_SPIN_US, the daemon's default */
#include "perf.h"

#define BATCH       64
#define DEFAULT_OPS 20000
#define OP_BYTES    (64 * 1024)

/* The CPU the client runs on and the one the servers run on; -1: leave placement alone. */
static int client_cpu = -1, server_cpu = -1;

static void choose_cpus(void)
{
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof(set), &set))
        return;
    for (int cpu = 0; cpu < CPU_SETSIZE; cpu++) {
        if (!CPU_ISSET(cpu, &set))
            continue;
        if (client_cpu < 0) {
            client_cpu = cpu;
        } else {
            server_cpu = cpu;
            return;
        }
    }
    client_cpu = -1; /* one CPU: nothing to place */
}

static uint64_t spin_ns(const char *env, unsigned dflt_us)
{
    const char *v = getenv(env);
    return (v && *v ? strtoull(v, NULL, 10) : dflt_us) * 1000;
}

/* Receives a datagram, polling for up to spin nanoseconds before blocking. */
static ssize_t recv_polling(int fd, void *buf, size_t len, uint64_t spin)
{
    if (spin) {
        uint64_t deadline = perf_now_ns() + spin;
        do {
            ssize_t n = recv(fd, buf, len, MSG_DONTWAIT);
            if (n >= 0 || errno != EAGAIN)
                return n;
        } while (perf_now_ns() < deadline);
    }
    return recv(fd, buf, len, 0);
}

static uint64_t client_spin_ns;

/* The baseline's other end: echoes every datagram until the socket closes, polling for the next
 * one for spin_us after each, as the daemon does. */
static pid_t start_echo(int *fd, unsigned spin_us)
{
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv))
        return -1;
    pid_t pid = fork();
    if (pid < 0)
        return -1;
    if (!pid) {
        char buf[64];
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        perf_pin_to_cpu(server_cpu);
        /* Keep only its own end: an inherited end of another echo's pair (or of this one) would
         * keep that echo from ever seeing the suite close its socket. */
        close_range(3, (unsigned)sv[1] - 1, 0);
        close_range((unsigned)sv[1] + 1, ~0u, 0);
        for (;;) {
            ssize_t n = recv_polling(sv[1], buf, sizeof(buf), (uint64_t)spin_us * 1000);
            if (n <= 0 || send(sv[1], buf, (size_t)n, MSG_NOSIGNAL) != n)
                _exit(0);
        }
    }
    close(sv[1]);
    *fd = sv[0];
    return pid;
}

static int round_trip(int fd, uint64_t spin)
{
    char buf[64] = {1};
    if (send(fd, buf, sizeof(buf), 0) != sizeof(buf) ||
        recv_polling(fd, buf, sizeof(buf), spin) != 64)
        return -EIO;
    return 0;
}

enum op { OP_REGISTER, OP_ALLOC };

struct result {
    uint64_t ops, p50_ns, p99_ns, base_p50_ns, base_p99_ns, polled_p50_ns;
    double ratio, ratio_polled;
};

static int one_op(struct san_ctx *ctx, enum op op, void *buf)
{
    int err;
    if (op == OP_REGISTER) {
        struct san_mr *mr;
        if ((err = san_register(ctx, buf, OP_BYTES, SAN_MEM_READWRITE, &mr)))
            return err;
        return san_deregister(mr);
    }
    void *va;
    if ((err = san_alloc(ctx, OP_BYTES, 0, &va)))
        return err;
    return san_free(ctx, va);
}

/* The two echo servers of the baselines: plain (blocking) and polled (as the daemon). */
struct echoes {
    int plain, polled;
    uint64_t polled_spin; /* the client's polling on the polled one */
};

static int run_case(struct san_ctx *ctx, const struct echoes *e, enum op op, uint64_t ops,
                    struct result *r)
{
    uint64_t *s = calloc(ops, sizeof(*s)), *b = calloc(ops, sizeof(*b));
    uint64_t *p = calloc(ops, sizeof(*p));
    void *buf = mmap(NULL, OP_BYTES, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    int err = -ENOMEM;

    if (!s || !b || !p || buf == MAP_FAILED)
        goto out;
    memset(buf, 1, OP_BYTES);
    for (int i = 0; i < 100; i++) /* warm up every path */
        if ((err = one_op(ctx, op, buf)) || (err = round_trip(e->plain, 0)) ||
            (err = round_trip(e->polled, e->polled_spin)))
            goto out;
    for (uint64_t done = 0; done < ops;) {
        uint64_t n = ops - done < BATCH ? ops - done : BATCH;
        for (uint64_t i = 0; i < n; i++) {
            uint64_t t0 = perf_now_ns();
            if ((err = one_op(ctx, op, buf)))
                goto out;
            s[done + i] = perf_now_ns() - t0;
        }
        for (uint64_t i = 0; i < n; i++) {
            uint64_t t0 = perf_now_ns();
            if ((err = round_trip(e->plain, 0)))
                goto out;
            b[done + i] = perf_now_ns() - t0;
        }
        for (uint64_t i = 0; i < n; i++) {
            uint64_t t0 = perf_now_ns();
            if ((err = round_trip(e->polled, e->polled_spin)))
                goto out;
            p[done + i] = perf_now_ns() - t0;
        }
        done += n;
        perf_progress(op == OP_REGISTER ? "reg register" : "reg alloc", done, ops);
    }
    r->ops = ops;
    r->p50_ns = perf_quantile(s, ops, 0.5);
    r->p99_ns = perf_quantile(s, ops, 0.99);
    r->base_p50_ns = perf_quantile(b, ops, 0.5);
    r->base_p99_ns = perf_quantile(b, ops, 0.99);
    r->polled_p50_ns = perf_quantile(p, ops, 0.5);
    r->ratio = r->base_p50_ns ? (double)r->p50_ns / (double)r->base_p50_ns : 0;
    r->ratio_polled = r->polled_p50_ns ? (double)r->p50_ns / (double)r->polled_p50_ns : 0;
    err = 0;
out:
    free(s);
    free(b);
    free(p);
    if (buf != MAP_FAILED)
        munmap(buf, OP_BYTES);
    return err;
}

static void print_result(const struct perf_opts *o, const char *name, const struct result *r,
                         unsigned spin_us)
{
    if (o->json)
        perf_json("\"suite\": \"reg\", \"case\": \"%s\", \"daemon_spin_us\": %u, \"bytes\": %d, "
                  "\"ops\": %" PRIu64 ", \"p50_ns\": %" PRIu64 ", \"p99_ns\": %" PRIu64
                  ", \"baseline\": \"seqpacket_rtt_64b\", \"baseline_p50_ns\": %" PRIu64
                  ", \"baseline_p99_ns\": %" PRIu64 ", \"ratio\": %.3f, \"better\": \"lower\""
                  ", \"polled_rtt_p50_ns\": %" PRIu64 ", \"polled_ratio\": %.3f"
                  ", \"placement\": \"%s\"",
                  name, spin_us, OP_BYTES, r->ops, r->p50_ns, r->p99_ns, r->base_p50_ns,
                  r->base_p99_ns, r->ratio, r->polled_p50_ns, r->ratio_polled,
                  client_cpu >= 0 ? "split" : "shared");
    else
        printf("%-22s %8" PRIu64 " %9" PRIu64 " %9" PRIu64 " %12" PRIu64 " %7.2f %12" PRIu64
               " %7.2f\n",
               name, r->ops, r->p50_ns, r->p99_ns, r->base_p50_ns, r->ratio, r->polled_p50_ns,
               r->ratio_polled);
}

int perf_reg(const struct perf_opts *o)
{
    uint64_t ops = DEFAULT_OPS;
    struct perf_daemon d;
    struct san_ctx *ctx = NULL;
    struct result r;
    struct echoes e = {-1, -1, 0};
    pid_t plain_pid = -1, polled_pid = -1;
    int err;
    const char *spin_us = NULL;
    cpu_set_t all;
    bool placed = false;

    for (int i = 0; i + 1 < o->argc; i++) { /* values checked by main.c */
        if (!strcmp(o->argv[i], "--spin-us"))
            spin_us = o->argv[++i];
        else if (!strcmp(o->argv[i], "--ops"))
            ops = strtoull(o->argv[++i], NULL, 10);
    }
    unsigned spin = spin_us ? (unsigned)strtoul(spin_us, NULL, 10) : SAN_DAEMON_SPIN_US;
    client_spin_ns = spin_ns("SANPROXY_SPIN_US", SAN_CLIENT_SPIN_US);
    choose_cpus();
    if ((err = perf_start_daemon(&d, "reg", spin_us, server_cpu))) {
        fprintf(stderr, "sanperf reg: cannot start sanproxyd: %s\n", san_strerror(err));
        return 1;
    }
    e.polled_spin = client_spin_ns;
    if ((plain_pid = start_echo(&e.plain, 0)) < 0 ||
        (polled_pid = start_echo(&e.polled, spin)) < 0) {
        err = -errno;
        goto out_echo;
    }
    placed = client_cpu >= 0 && !sched_getaffinity(0, sizeof(all), &all);
    perf_pin_to_cpu(client_cpu);
    /* Uncached: every register is a miss that goes to the daemon (libsan's cache off). */
    if ((err = perf_open_uncached(d.sock, &ctx)))
        goto out_echo;
    if (!o->json)
        printf("%-22s %8s %9s %9s %12s %7s %12s %7s\n", "case", "ops", "p50_ns", "p99_ns",
               "rtt_p50_ns", "ratio", "polled_rtt", "ratio");
    if ((err = run_case(ctx, &e, OP_REGISTER, ops, &r)))
        goto out_ctx;
    print_result(o, "register_deregister", &r, spin);
    if ((err = run_case(ctx, &e, OP_ALLOC, ops, &r)))
        goto out_ctx;
    print_result(o, "alloc_free", &r, spin);
out_ctx:
    san_close(ctx);
out_echo:
    for (int i = 0; i < 2; i++) {
        int fd = i ? e.polled : e.plain;
        pid_t pid = i ? polled_pid : plain_pid;
        if (fd >= 0)
            close(fd);
        if (pid > 0)
            waitpid(pid, NULL, 0);
    }
    if (placed)
        sched_setaffinity(0, sizeof(all), &all);
    perf_stop_daemon(&d);
    if (err)
        fprintf(stderr, "sanperf reg: %s\n", san_strerror(err));
    return err ? 1 : 0;
}
