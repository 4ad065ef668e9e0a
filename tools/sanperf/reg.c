/* sanperf reg: the control path's cost. Uncached san_register + san_deregister of 64 KiB (libsan's
 * registration cache is turned off: SAN_RCACHE_MAX_ENTRIES=0), and
 * san_alloc + san_free of 64 KiB, each against a 64-byte round trip on a Unix SOCK_SEQPACKET
 * socket pair to an echo process, measured in the same run.
 *
 * The suite starts its own sanproxyd (the binary next to sanperf, fork + exec, on a socket in a
 * temporary directory, readiness through --ready-fd) and stops it with SIGTERM at the end; the echo
 * process is a fork of sanperf. Samples of the operation and of the baseline are taken in
 * alternating batches of BATCH, so both see the same machine noise; each sample is one operation
 * (tens of microseconds, far above clock_gettime's cost). ratio_p50 = p50(op) / p50(round trip):
 * how many socket round trips one operation costs (the target for register+deregister is <= 3:
 * two round trips are unavoidable, plus mlock/munlock and the daemon's work).
 * Single-threaded; the daemon and the echo process are children that never outlive the suite. */
#include <errno.h>
#include <fcntl.h>
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

#include "daemon/daemon.h" /* SAN_DAEMON_SPIN_US, the daemon's default */
#include "perf.h"

#define BATCH       64
#define DEFAULT_OPS 20000
#define OP_BYTES    (64 * 1024)

struct daemon {
    pid_t pid;
    char dir[64], sock[96];
};

static int start_daemon(struct daemon *d, const char *spin_us)
{
    char exe[PATH_MAX], path[PATH_MAX + 16], fdbuf[16];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
    int p[2];

    if (n <= 0)
        return -errno;
    exe[n] = 0;
    char *slash = strrchr(exe, '/');
    if (!slash)
        return -ENOENT;
    *slash = 0;
    snprintf(path, sizeof(path), "%s/sanproxyd", exe);
    if (access(path, X_OK)) {
        fprintf(stderr, "sanperf reg: no sanproxyd next to sanperf (%s)\n", path);
        return -ENOENT;
    }
    strcpy(d->dir, "/tmp/sanperf.XXXXXX");
    if (!mkdtemp(d->dir))
        return -errno;
    snprintf(d->sock, sizeof(d->sock), "%s/sock", d->dir);
    if (pipe(p))
        return -errno;
    pid_t parent = getpid();
    d->pid = fork();
    if (d->pid < 0)
        return -errno;
    if (!d->pid) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != parent)
            _exit(127);
        close(p[0]);
        int null = open("/dev/null", O_WRONLY);
        if (null >= 0 && !getenv("SANPERF_DAEMON_LOG"))
            dup2(null, 2);
        snprintf(fdbuf, sizeof(fdbuf), "%d", p[1]);
        if (spin_us)
            execl(path, path, "--foreground", "--socket", d->sock, "--ready-fd", fdbuf, "--spin-us",
                  spin_us, (char *)NULL);
        else
            execl(path, path, "--foreground", "--socket", d->sock, "--ready-fd", fdbuf,
                  (char *)NULL);
        _exit(127);
    }
    close(p[1]);
    char buf[8] = {0};
    n = read(p[0], buf, sizeof(buf));
    close(p[0]);
    if (n <= 0) {
        waitpid(d->pid, NULL, 0);
        rmdir(d->dir);
        return -ECHILD;
    }
    return 0;
}

static void stop_daemon(struct daemon *d)
{
    kill(d->pid, SIGTERM);
    waitpid(d->pid, NULL, 0);
    rmdir(d->dir);
}

/* The baseline's other end: echoes every datagram until the socket closes. */
static pid_t start_echo(int *fd)
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
        close(sv[0]);
        for (;;) {
            ssize_t n = recv(sv[1], buf, sizeof(buf), 0);
            if (n <= 0 || send(sv[1], buf, (size_t)n, MSG_NOSIGNAL) != n)
                _exit(0);
        }
    }
    close(sv[1]);
    *fd = sv[0];
    return pid;
}

static int round_trip(int fd)
{
    char buf[64] = {1};
    if (send(fd, buf, sizeof(buf), 0) != sizeof(buf) || recv(fd, buf, sizeof(buf), 0) != 64)
        return -EIO;
    return 0;
}

enum op { OP_REGISTER, OP_ALLOC };

struct result {
    uint64_t ops, p50_ns, p99_ns, base_p50_ns, base_p99_ns;
    double ratio;
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

static int run_case(struct san_ctx *ctx, int echo, enum op op, uint64_t ops, struct result *r)
{
    uint64_t *s = calloc(ops, sizeof(*s)), *b = calloc(ops, sizeof(*b));
    void *buf = mmap(NULL, OP_BYTES, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    int err = -ENOMEM;

    if (!s || !b || buf == MAP_FAILED)
        goto out;
    memset(buf, 1, OP_BYTES);
    for (int i = 0; i < 100; i++) /* warm up both paths */
        if ((err = one_op(ctx, op, buf)) || (err = round_trip(echo)))
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
            if ((err = round_trip(echo)))
                goto out;
            b[done + i] = perf_now_ns() - t0;
        }
        done += n;
        perf_progress(op == OP_REGISTER ? "reg register" : "reg alloc", done, ops);
    }
    r->ops = ops;
    r->p50_ns = perf_quantile(s, ops, 0.5);
    r->p99_ns = perf_quantile(s, ops, 0.99);
    r->base_p50_ns = perf_quantile(b, ops, 0.5);
    r->base_p99_ns = perf_quantile(b, ops, 0.99);
    r->ratio = r->base_p50_ns ? (double)r->p50_ns / (double)r->base_p50_ns : 0;
    err = 0;
out:
    free(s);
    free(b);
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
                  ", \"baseline_p99_ns\": %" PRIu64 ", \"ratio_p50\": %.2f",
                  name, spin_us, OP_BYTES, r->ops, r->p50_ns, r->p99_ns, r->base_p50_ns,
                  r->base_p99_ns, r->ratio);
    else
        printf("%-22s %8" PRIu64 " %9" PRIu64 " %9" PRIu64 " %12" PRIu64 " %7.2f\n", name, r->ops,
               r->p50_ns, r->p99_ns, r->base_p50_ns, r->ratio);
}

int perf_reg(const struct perf_opts *o)
{
    uint64_t ops = DEFAULT_OPS;
    struct daemon d;
    struct san_ctx *ctx = NULL;
    struct result r;
    int echo = -1, err;
    pid_t echo_pid;
    const char *spin_us = NULL;

    for (int i = 0; i < o->argc; i++) {
        const char *a = o->argv[i];
        if (!strcmp(a, "--json"))
            continue;
        if (!strcmp(a, "--spin-us") && i + 1 < o->argc) {
            spin_us = o->argv[++i];
            continue;
        }
        if (!strcmp(a, "--ops") && i + 1 < o->argc) {
            char *end;
            errno = 0;
            ops = strtoull(o->argv[++i], &end, 10);
            if (!errno && !*end && ops >= 1)
                continue;
        }
        fprintf(stderr,
                "usage: sanperf reg [--json] [--ops N]\n"
                "  uncached register+deregister and alloc+free of 64 KiB through a private\n"
                "  sanproxyd, against a 64-byte Unix socket round trip (default %d ops)\n",
                DEFAULT_OPS);
        return 1;
    }
    unsigned spin = spin_us ? (unsigned)strtoul(spin_us, NULL, 10) : SAN_DAEMON_SPIN_US;
    if ((err = start_daemon(&d, spin_us))) {
        fprintf(stderr, "sanperf reg: cannot start sanproxyd: %s\n", san_strerror(err));
        return 1;
    }
    if ((echo_pid = start_echo(&echo)) < 0) {
        err = -errno;
        goto out_daemon;
    }
    /* Uncached: every register is a miss that goes to the daemon (libsan's cache off). */
    setenv("SAN_RCACHE_MAX_ENTRIES", "0", 1);
    if ((err = san_open(d.sock, &ctx)))
        goto out_echo;
    if (!o->json)
        printf("%-22s %8s %9s %9s %12s %7s\n", "case", "ops", "p50_ns", "p99_ns", "rtt_p50_ns",
               "ratio");
    if ((err = run_case(ctx, echo, OP_REGISTER, ops, &r)))
        goto out_ctx;
    print_result(o, "register_deregister", &r, spin);
    if ((err = run_case(ctx, echo, OP_ALLOC, ops, &r)))
        goto out_ctx;
    print_result(o, "alloc_free", &r, spin);
out_ctx:
    san_close(ctx);
out_echo:
    close(echo);
    waitpid(echo_pid, NULL, 0);
out_daemon:
    stop_daemon(&d);
    if (err)
        fprintf(stderr, "sanperf reg: %s\n", san_strerror(err));
    return err ? 1 : 0;
}
