/* sanperf nic: the NIC's data path through a private sanproxyd, every figure next to a baseline
 * measured in the same run.
 *
 * - rdma_write_1m: 1 MiB RDMA writes, 16 in flight, between two contexts' proxy memory
 *   (memory "proxy": san_alloc, the NIC's memcpy path) and between their own pages (memory
 *   "client": fewer in flight when RLIMIT_MEMLOCK does not allow 2 x 16 MiB locked, reported in
 *   inflight), and with --memory mixed or all from proxy memory into the target's own pages (what
 *   an RDMA read straight into a receiving program's buffer would cost): bandwidth against memcpy
 * of 1 MiB in this process cycling over the same number of 1 MiB slots (baseline, ratio = ours /
 * memcpy, higher is better: the same bytes copied over the same working set) and against memcpy of
 * one 1 MiB buffer that stays in the caches (hot_ratio). The target's bytes are compared with the
 * source's after each run.
 * - send_lat_64b: 64-byte send/receive ping-pong between two processes through completions
 *   (buffers in proxy memory, as a sockets switch's control buffers are);
 *   rdma_lat_64b: 64-byte RDMA-write ping-pong where each side polls its own memory. Both give the
 *   one-way latency (half a round trip) against a plain shared-memory ping-pong between two
 *   processes (the floor) and kernel TCP on loopback (what the SAN replaces): ratio = ours / TCP,
 *   floor_ratio = ours / shared memory, lower is better (one_way_ns against baseline_one_way_ns,
 *   sanperf's one convention).
 * - UCX baselines, when ucx_perftest (Debian's ucx-utils) is installed: a server and a client on
 *   loopback, run in this suite with UCX_TLS=posix,self (UCX's shared-memory transport), killed
 *   after UCX_TIMEOUT_S. ucp_put_bw with 1 MiB messages, as many as the NIC case writes, gives
 *   rdma_write_1m's ucx_gb_per_s and ucx_ratio = ours / UCX (higher is better); ucp_put_lat with
 *   64 bytes, as many rounds, gives the latency rows' ucx_one_way_ns and ucx_ratio = ours / UCX
 *   (lower is better). "ucx" says "ok", "not installed" or what went wrong (also on stderr): a
 *   missing or failing UCX never fails the suite.
 * Waiting: every waiter here yields the CPU between polls, as the NIC's engine does; these
 * machines may have two cores for three spinners. Options: --mib N (bandwidth volume, default
 * 256), --memory proxy|client|mixed|both|all (bandwidth cases, default both: proxy and client),
 * --rounds N (ping-pongs,
 * default 20000). */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <san/san.h>

#include "perf.h"

#define MIB      (1u << 20)
#define INFLIGHT 16 /* 1 MiB writes in flight, each into its own slot of the target */
#define PORT     7480

/* The bandwidth cases' memory: source and target in proxy memory, both the contexts' own pages,
 * or a proxy source into a target's own pages (what an RDMA read from a sender's staging buffer
 * straight into a receiving program's buffer would cost). */
enum mem_kind { MEM_PROXY, MEM_CLIENT, MEM_MIXED, MEM_KINDS };
static const char *const mem_names[MEM_KINDS] = {"proxy", "client", "mixed"};

struct nic_opts {
    unsigned mib, rounds;
    bool mem[MEM_KINDS]; /* which bandwidth cases run (--memory) */
};

static int parse(const struct perf_opts *o, struct nic_opts *n)
{
    *n = (struct nic_opts){.mib = 256, .rounds = 20000, .mem = {true, true, false}};
    for (int i = 0; i < o->argc; i++) {
        if (!strcmp(o->argv[i], "--json"))
            continue;
        if (i + 1 < o->argc && !strcmp(o->argv[i], "--mib")) {
            n->mib = (unsigned)strtoul(o->argv[++i], NULL, 10);
        } else if (i + 1 < o->argc && !strcmp(o->argv[i], "--memory")) {
            const char *m = o->argv[++i];
            bool all = !strcmp(m, "all"), both = all || !strcmp(m, "both"), any = false;
            for (int k = 0; k < MEM_KINDS; k++) {
                n->mem[k] = !strcmp(m, mem_names[k]) || (both && k != MEM_MIXED) || all;
                any |= n->mem[k];
            }
            if (!any) {
                fprintf(stderr, "sanperf nic: --memory takes proxy, client, mixed, both (proxy and "
                                "client) or all\n");
                return -EINVAL;
            }
        } else if (i + 1 < o->argc && !strcmp(o->argv[i], "--rounds")) {
            n->rounds = (unsigned)strtoul(o->argv[++i], NULL, 10);
        } else {
            fprintf(stderr, "sanperf nic: unknown option '%s'\n", o->argv[i]);
            return -EINVAL;
        }
    }
    if (!n->mib || !n->rounds) {
        fprintf(stderr, "sanperf nic: --mib and --rounds must be at least 1\n");
        return -EINVAL;
    }
    return 0;
}

static struct sockaddr_in addr_of(uint16_t port)
{
    return (struct sockaddr_in){
        .sin_family = AF_INET, .sin_port = htons(port), .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
}

#define WAIT_NS (10ull * 1000000000u) /* a peer that does not answer in 10 s is gone */

static int wait_wc(struct san_ep *ep, struct san_wc *wc)
{
    int n;
    uint64_t deadline = perf_now_ns() + WAIT_NS;
    while ((n = san_poll(ep, wc, 1)) == 0) {
        if (perf_now_ns() > deadline)
            return -ETIMEDOUT;
        sched_yield();
    }
    return n < 0 ? n : wc->status;
}

/* --- UCX baselines ------------------------------------------------------------------------ */

#define UCX_PERFTEST  "ucx_perftest"
#define UCX_TIMEOUT_S 10 /* a server and client pair still running then is killed */
#define UCX_START_S   5  /* a server not listening by then has failed */

struct ucx {
    bool ok;
    double lat_us; /* overall one-way latency (put_lat), or per message (put_bw) */
    double mib_s;  /* overall bandwidth, MiB/s */
    char why[128]; /* "ok", "not installed" or the failure */
};

/* Whether ucx_perftest is somewhere on $PATH. */
static bool ucx_installed(void)
{
    const char *path = getenv("PATH");
    char buf[4096];
    for (const char *p = path ? path : "/usr/bin:/bin"; *p;) {
        size_t n = strcspn(p, ":");
        if (n && n + sizeof(UCX_PERFTEST) + 1 < sizeof(buf)) {
            snprintf(buf, sizeof(buf), "%.*s/%s", (int)n, p, UCX_PERFTEST);
            if (!access(buf, X_OK))
                return true;
        }
        p += n + (p[n] == ':');
    }
    return false;
}

/* A TCP port on loopback that nobody uses right now (ucx_perftest's out-of-band exchange). */
static int free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in sa = addr_of(0);
    socklen_t sl = sizeof(sa);
    int port = -1;
    if (fd >= 0 && !bind(fd, (struct sockaddr *)&sa, sizeof(sa)) &&
        !getsockname(fd, (struct sockaddr *)&sa, &sl))
        port = ntohs(sa.sin_port);
    if (fd >= 0)
        close(fd);
    return port;
}

/* Whether something listens on TCP port (IPv4) of this host, from /proc/net/tcp. */
static bool listening(int port)
{
    FILE *f = fopen("/proc/net/tcp", "r");
    char line[256];
    bool found = false;
    if (!f)
        return false;
    while (!found && fgets(line, sizeof(line), f)) {
        unsigned lport, st;
        if (sscanf(line, " %*d: %*x:%x %*x:%*x %x", &lport, &st) == 2)
            found = (int)lport == port && st == 0x0A; /* TCP_LISTEN */
    }
    fclose(f);
    return found;
}

/* Starts ucx_perftest with args (server when host is NULL), its output to out_fd (-1: none),
 * UCX restricted to its shared-memory transport. */
static pid_t ucx_spawn(const char *host, const char *test, unsigned size, unsigned iters, int port,
                       int out_fd)
{
    pid_t p = fork();
    if (p)
        return p;
    char sz[16], it[16], warm[16], po[16];
    snprintf(sz, sizeof(sz), "%u", size);
    snprintf(it, sizeof(it), "%u", iters);
    snprintf(warm, sizeof(warm), "%u", iters / 10 + 1);
    snprintf(po, sizeof(po), "%d", port);
    int null = open("/dev/null", O_RDWR | O_CLOEXEC);
    dup2(out_fd >= 0 ? out_fd : null, 1);
    dup2(out_fd >= 0 ? out_fd : null, 2);
    dup2(null, 0);
    setenv("UCX_TLS", "posix,self", 1);
    setenv("UCX_WARN_UNUSED_ENV_VARS", "n", 1);
    const char *argv[16];
    int n = 0;
    argv[n++] = UCX_PERFTEST;
    if (host)
        argv[n++] = host;
    const char *rest[] = {"-t", test, "-s", sz, "-n", it, "-w", warm, "-p", po, "-f", "-v", NULL};
    for (int i = 0; rest[i]; i++)
        argv[n++] = rest[i];
    argv[n] = NULL;
    execvp(UCX_PERFTEST, (char *const *)argv);
    _exit(127);
}

/* Reads what fd gives until EOF or the deadline (ns); returns the bytes read, out terminated. */
static size_t read_until(int fd, char *out, size_t size, uint64_t deadline)
{
    size_t n = 0;
    while (n + 1 < size) {
        uint64_t now = perf_now_ns();
        if (now >= deadline)
            break;
        struct pollfd p = {.fd = fd, .events = POLLIN};
        int r = poll(&p, 1, (int)((deadline - now) / 1000000) + 1);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            break;
        ssize_t got = read(fd, out + n, size - 1 - n);
        if (got <= 0)
            break;
        n += (size_t)got;
    }
    out[n] = 0;
    return n;
}

/* Waits for p until the deadline, then kills it. Its exit status, or -1 when it was killed. */
static int reap_by(pid_t p, uint64_t deadline)
{
    int st = 0;
    pid_t r;
    while ((r = waitpid(p, &st, WNOHANG)) == 0) {
        if (perf_now_ns() >= deadline) {
            kill(p, SIGKILL);
            waitpid(p, NULL, 0);
            return -1;
        }
        struct timespec ms = {0, 1000000};
        nanosleep(&ms, NULL);
    }
    return r == p && WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/* The last line of text that says something, made safe for a JSON string. */
static void last_words(const char *text, char *out, size_t size)
{
    const char *line = text, *end;
    for (const char *p = text; *p; p = end + (*end == '\n')) {
        end = p + strcspn(p, "\n");
        if (end > p)
            line = p;
    }
    size_t n = 0;
    for (const char *p = line; *p && *p != '\n' && n + 1 < size; p++)
        out[n++] = *p == '"' || *p == '\\' || (unsigned char)*p < 32 ? '\'' : *p;
    out[n] = 0;
}

/* One ucx_perftest server/client pair on loopback: test with messages of size bytes, iters of
 * them. Fills u (u->ok, or u->why), says on stderr when UCX gave no figure. */
static void ucx_measure(const char *test, unsigned size, unsigned iters, struct ucx *u)
{
    *u = (struct ucx){0};
    if (!ucx_installed()) {
        snprintf(u->why, sizeof(u->why), "not installed");
        fprintf(stderr, "sanperf nic: %s not installed (Debian's ucx-utils): no UCX baseline\n",
                UCX_PERFTEST);
        return;
    }
    int port = free_port(), out[2];
    if (port < 0 || pipe2(out, O_CLOEXEC)) {
        snprintf(u->why, sizeof(u->why), "no port or pipe: %s", strerror(errno));
        goto say;
    }
    uint64_t start = perf_now_ns(), deadline = start + UCX_TIMEOUT_S * 1000000000ull;
    pid_t server = ucx_spawn(NULL, test, size, iters, port, -1);
    siginfo_t gone;
    while (
        server > 0 && !listening(port) && perf_now_ns() < start + UCX_START_S * 1000000000ull &&
        !waitid(P_PID, (id_t)server, memset(&gone, 0, sizeof(gone)), WEXITED | WNOHANG | WNOWAIT) &&
        !gone.si_pid) { /* not exited (peeked at, reaped below) */
        struct timespec ms = {0, 5000000};
        nanosleep(&ms, NULL);
    }
    pid_t client = server > 0 ? ucx_spawn("127.0.0.1", test, size, iters, port, out[1]) : -1;
    close(out[1]);
    static char text[16384];
    read_until(out[0], text, sizeof(text), deadline);
    close(out[0]);
    int crc = client > 0 ? reap_by(client, deadline) : -1;
    int src = server > 0 ? reap_by(server, perf_now_ns() + 1000000000ull) : -1;
    /* The figures: the line after "iterations,..." (-f -v: final numbers as CSV). */
    const char *csv = strstr(text, "iterations,");
    csv = csv ? strchr(csv, '\n') : NULL;
    unsigned long long it;
    double p50, avg_lat, lat, avg_bw, bw;
    if (crc == 0 && csv &&
        sscanf(csv + 1, "%llu,%lf,%lf,%lf,%lf,%lf", &it, &p50, &avg_lat, &lat, &avg_bw, &bw) == 6 &&
        lat > 0 && bw > 0) {
        u->ok = true;
        u->lat_us = lat;
        u->mib_s = bw;
        snprintf(u->why, sizeof(u->why), "ok");
        return;
    }
    if (crc == -1 && perf_now_ns() >= deadline)
        snprintf(u->why, sizeof(u->why), "%s %s did not finish within %d s", UCX_PERFTEST, test,
                 UCX_TIMEOUT_S);
    else if (!text[0])
        snprintf(u->why, sizeof(u->why), "%s %s: exit %d, no output (server exit %d)", UCX_PERFTEST,
                 test, crc, src);
    else {
        char words[96];
        last_words(text, words, sizeof(words));
        snprintf(u->why, sizeof(u->why), "%s %s: exit %d: %s", UCX_PERFTEST, test, crc, words);
    }
say:
    fprintf(stderr, "sanperf nic: no UCX baseline: %s\n", u->why);
}

/* The JSON fields of a UCX baseline for a figure of ours (ratio = ours / UCX's). */
static void ucx_fields(char *buf, size_t size, const struct ucx *u, const char *name, int digits,
                       double ucx, double ours)
{
    if (u->ok)
        snprintf(buf, size, ", \"ucx\": \"ok\", \"ucx_%s\": %.*f, \"ucx_ratio\": %.3f", name,
                 digits, ucx, ucx > 0 ? ours / ucx : 0);
    else
        snprintf(buf, size, ", \"ucx\": \"%s\"", u->why);
}

/* --- bandwidth ------------------------------------------------------------------------------ */

/* memcpy of 1 MiB, mib times, cycling over slots pairs of 1 MiB buffers (touched first): with
 * one slot the buffers stay in the caches; with the NIC case's slots, the same working set. */
static double memcpy_gbps(unsigned mib, unsigned slots)
{
    char *a = malloc((size_t)slots * MIB), *b = malloc((size_t)slots * MIB);
    if (!a || !b) {
        free(a);
        free(b);
        return 0;
    }
    memset(a, 1, (size_t)slots * MIB);
    memset(b, 2, (size_t)slots * MIB);
    uint64_t t0 = perf_now_ns();
    for (unsigned i = 0; i < mib; i++) {
        size_t at = (size_t)(i % slots) * MIB;
        memcpy(b + at, a + at, MIB);
        __asm__ volatile("" ::"r"(b) : "memory");
    }
    uint64_t ns = perf_now_ns() - t0;
    free(a);
    free(b);
    return (double)mib * MIB / (double)ns;
}

struct acceptor {
    struct san_listener *l;
    struct san_ep *ep;
    int err;
};

static void *accept_main(void *arg)
{
    struct acceptor *a = arg;
    a->err = san_accept(a->l, 5000, &a->ep);
    return NULL;
}

/* A connected pair between two contexts of this process. */
static int pair(struct san_ctx *ca, struct san_ctx *cb, uint16_t port, struct san_ep **a,
                struct san_ep **b)
{
    struct sockaddr_in sa = addr_of(port);
    struct acceptor acc = {0};
    int err = san_listen(cb, (struct sockaddr *)&sa, sizeof(sa), 1, &acc.l);
    if (err)
        return err;
    pthread_t t;
    if (pthread_create(&t, NULL, accept_main, &acc)) {
        san_listener_close(acc.l);
        return -ENOMEM;
    }
    err = san_connect(ca, (struct sockaddr *)&sa, sizeof(sa), 5000, a);
    pthread_join(t, NULL);
    san_listener_close(acc.l);
    if (!err && acc.err) {
        san_ep_close(*a);
        err = acc.err;
    }
    *b = acc.ep;
    return err;
}

/* A buffer of len bytes in ctx: proxy memory (san_alloc) or this process's own pages. */
static int buffer(struct san_ctx *ctx, bool proxy, size_t len, char **out)
{
    if (proxy)
        return san_alloc(ctx, len, 0, (void **)out);
    *out = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    return *out == MAP_FAILED ? (*out = NULL, -ENOMEM) : 0;
}

static void buffer_free(struct san_ctx *ctx, bool proxy, char *p, size_t len)
{
    if (p && proxy)
        san_free(ctx, p);
    else if (p)
        munmap(p, len);
}

static int bandwidth(const char *sock, const struct nic_opts *n, enum mem_kind mk, bool json,
                     const struct ucx *ucx)
{
    bool src_proxy = mk != MEM_CLIENT, dst_proxy = mk == MEM_PROXY;
    struct san_ctx *ca, *cb;
    struct san_ep *a, *b;
    struct san_mr *lmr, *rmr;
    char desc[SAN_RDMA_DESC_SIZE];
    size_t dl = sizeof(desc);
    int err;
    if ((err = perf_open_uncached(sock, &ca)) || (err = perf_open_uncached(sock, &cb)))
        return err;
    if ((err = pair(ca, cb, PORT, &a, &b)))
        goto out;
    /* Client memory is locked in this process: as many slots as RLIMIT_MEMLOCK allows, after
     * 1 MiB kept for the latency cases' small buffers. Proxy memory is the daemon's: no limit. */
    uint64_t allowed = perf_memlock_allowance();
    unsigned inflight = INFLIGHT;
    unsigned own = !src_proxy + !dst_proxy; /* buffers of own pages, locked here */
    if (own && allowed < (uint64_t)(own * INFLIGHT + 1) * MIB) {
        inflight = allowed > (own + 1ull) * MIB ? (unsigned)((allowed - MIB) / (own * MIB)) : 1;
        fprintf(stderr,
                "sanperf nic: RLIMIT_MEMLOCK is %llu KiB (ulimit -l): %u writes in flight instead "
                "of %d\n",
                (unsigned long long)(allowed >> 10), inflight, INFLIGHT);
    }
    size_t len = (size_t)inflight * MIB;
    char *src = NULL, *dst = NULL;
    if ((err = buffer(ca, src_proxy, len, &src)) || (err = buffer(cb, dst_proxy, len, &dst)))
        goto out;
    memset(src, 3, len);
    memset(dst, 0, len); /* both sides present before the clock starts, as memcpy's are */
    if ((err = san_register(ca, src, len, SAN_MEM_READ, &lmr)) ||
        (err = san_register_rdma(cb, dst, len, SAN_MEM_WRITE, desc, &dl, &rmr))) {
        fprintf(stderr, "sanperf nic: registering 2 x %zu MiB: %s\n", len / MIB, san_strerror(err));
        goto out;
    }
    /* One write into each slot before the clock starts: the NIC's first access to a page through
     * its own mapping of proxy memory is slow on virtual machines that shadow page tables, as
     * memcpy's would be without the memset that touches its buffers first. */
    for (unsigned slot = 0; slot < inflight; slot++) {
        struct san_sge s = {src + (size_t)slot * MIB, MIB, san_mr_lkey(lmr)};
        struct san_wc wc;
        if ((err = san_rdma_write(a, slot, &s, 1, desc, dl, (uint64_t)slot * MIB, 0)) ||
            (err = wait_wc(a, &wc)))
            goto out;
    }
    double hot = memcpy_gbps(n->mib, 1), base = memcpy_gbps(n->mib, inflight);
    unsigned posted = 0, done = 0;
    uint64_t t0 = perf_now_ns();
    while (done < n->mib) {
        while (posted < n->mib && posted - done < inflight) {
            unsigned slot = posted % inflight;
            struct san_sge s = {src + (size_t)slot * MIB, MIB, san_mr_lkey(lmr)};
            if ((err = san_rdma_write(a, posted, &s, 1, desc, dl, (uint64_t)slot * MIB, 0)))
                goto out;
            posted++;
        }
        struct san_wc wc[INFLIGHT];
        int got = san_poll(a, wc, inflight);
        if (got < 0) {
            err = got;
            goto out;
        }
        for (int i = 0; i < got; i++)
            if (wc[i].status) {
                err = wc[i].status;
                goto out;
            }
        done += (unsigned)got;
        if (!got)
            san_wait(a, 1000);
        perf_progress("nic bandwidth", done, n->mib);
    }
    uint64_t ns = perf_now_ns() - t0;
    double gbps = (double)n->mib * MIB / (double)ns;
    /* What arrived is what was sent (the last write of each slot). */
    if (memcmp(dst, src, len)) {
        fprintf(stderr, "sanperf nic: bandwidth: the target's bytes differ from the source's\n");
        err = -EIO;
        goto out;
    }
    const char *kind = mem_names[mk];
    double ucx_gbps = ucx->ok ? ucx->mib_s * MIB / 1e9 : 0; /* ucx_perftest's MB is 2^20 bytes */
    char extra[192];
    ucx_fields(extra, sizeof(extra), ucx, "gb_per_s", 3, ucx_gbps, gbps);
    if (json)
        perf_json(
            "\"suite\": \"nic\", \"case\": \"rdma_write_1m\", \"memory\": \"%s\", "
            "\"inflight\": %u, \"bytes\": %llu, \"gb_per_s\": %.3f, \"baseline\": \"memcpy_1m\", "
            "\"baseline_slots\": %u, \"baseline_gb_per_s\": %.3f, \"ratio\": %.3f, "
            "\"hot_memcpy_gb_per_s\": %.3f, \"hot_ratio\": %.3f%s, \"better\": \"higher\"",
            kind, inflight, (unsigned long long)n->mib * MIB, gbps, inflight, base, gbps / base,
            hot, gbps / hot, extra);
    else {
        printf("rdma_write_1m (%s memory, %u in flight): %.2f GB/s; memcpy over the same %u "
               "slots %.2f GB/s (ratio %.2f); memcpy of one cached 1 MiB %.2f GB/s (ratio %.2f)",
               kind, inflight, gbps, inflight, base, gbps / base, hot, gbps / hot);
        if (ucx->ok)
            printf("; UCX posix put %.2f GB/s (ratio %.2f)\n", ucx_gbps, gbps / ucx_gbps);
        else
            printf("; UCX: %s\n", ucx->why);
    }
    san_ep_close(a);
    san_ep_close(b);
    san_deregister(lmr);
    san_deregister(rmr);
    buffer_free(ca, src_proxy, src, len);
    buffer_free(cb, dst_proxy, dst, len);
out:
    if (err)
        fprintf(stderr, "sanperf nic: bandwidth: %s\n", san_strerror(err));
    san_close(ca);
    san_close(cb);
    return err;
}

/* --- latency -------------------------------------------------------------------------------- */

/* One-way latency (ns) of a shared-memory ping-pong between two processes, each yielding while
 * it waits: the floor any software NIC between processes sits on. */
static uint64_t shm_latency(unsigned rounds)
{
    _Atomic uint32_t *w =
        mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (w == MAP_FAILED)
        return 0;
    atomic_store(&w[0], 0);
    atomic_store(&w[16], 0);
    pid_t c = fork();
    if (c == 0) {
        for (uint32_t i = 1; i <= rounds; i++) {
            while (atomic_load_explicit(&w[0], memory_order_acquire) != i)
                sched_yield();
            atomic_store_explicit(&w[16], i, memory_order_release);
        }
        _exit(0);
    }
    uint64_t t0 = perf_now_ns();
    for (uint32_t i = 1; i <= rounds; i++) {
        atomic_store_explicit(&w[0], i, memory_order_release);
        while (atomic_load_explicit(&w[16], memory_order_acquire) != i)
            sched_yield();
    }
    uint64_t ns = perf_now_ns() - t0;
    waitpid(c, NULL, 0);
    munmap((void *)w, 4096);
    return ns / rounds / 2;
}

/* One-way latency of a 64-byte ping-pong over kernel TCP on loopback. */
static uint64_t tcp_latency(unsigned rounds)
{
    int l = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), one = 1;
    struct sockaddr_in sa = addr_of(0);
    socklen_t sl = sizeof(sa);
    if (l < 0 || bind(l, (struct sockaddr *)&sa, sizeof(sa)) || listen(l, 1) ||
        getsockname(l, (struct sockaddr *)&sa, &sl))
        return 0;
    pid_t c = fork();
    if (c == 0) {
        int s = accept(l, NULL, NULL);
        char b[64];
        setsockopt(s, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        for (unsigned i = 0; i < rounds; i++)
            if (recv(s, b, 64, MSG_WAITALL) != 64 || send(s, b, 64, 0) != 64)
                _exit(1);
        _exit(0);
    }
    close(l);
    int s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    char b[64] = {0};
    if (connect(s, (struct sockaddr *)&sa, sizeof(sa)))
        return 0;
    setsockopt(s, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    uint64_t t0 = perf_now_ns();
    for (unsigned i = 0; i < rounds; i++)
        if (send(s, b, 64, 0) != 64 || recv(s, b, 64, MSG_WAITALL) != 64)
            break;
    uint64_t ns = perf_now_ns() - t0;
    close(s);
    waitpid(c, NULL, 0);
    return ns / rounds / 2;
}

/* Both sides of a NIC ping-pong: buffers registered for RDMA, descriptors traded by send. */
struct side {
    struct san_ctx *ctx;
    struct san_ep *ep;
    char *buf; /* 0: our send buffer, 4096: our receive buffer / the peer's RDMA target */
    struct san_mr *mr;
    char desc[SAN_RDMA_DESC_SIZE], peer[SAN_RDMA_DESC_SIZE];
};

static int side_setup(struct side *s)
{
    size_t dl = sizeof(s->desc);
    struct san_wc wc;
    int err;
    /* Proxy memory, as a sockets switch's control buffers are: the NIC copies it directly. */
    if ((err = san_alloc(s->ctx, 8192, 0, (void **)&s->buf)))
        return err;
    memset(s->buf, 0, 8192);
    if ((err = san_register_rdma(s->ctx, s->buf, 8192, SAN_MEM_READWRITE, s->desc, &dl, &s->mr)))
        return err;
    struct san_sge in = {s->buf + 4096, SAN_RDMA_DESC_SIZE, san_mr_lkey(s->mr)};
    struct san_sge out = {s->buf, SAN_RDMA_DESC_SIZE, san_mr_lkey(s->mr)};
    memcpy(s->buf, s->desc, sizeof(s->desc));
    if ((err = san_post_recv(s->ep, 0, &in, 1)) || (err = san_post_send(s->ep, 0, &out, 1, 0)))
        return err;
    for (int i = 0; i < 2; i++)
        if ((err = wait_wc(s->ep, &wc)))
            return err;
    /* Not cleared now: the peer may already have written its first ping there. */
    memcpy(s->peer, s->buf + 4096, sizeof(s->peer));
    return 0;
}

/* One side of the ping-pong: the initiator sends first. rdma: by RDMA write, each side polling
 * the last byte of its own buffer; else send/receive through completions. */
static int pingpong(struct side *s, unsigned rounds, bool initiator, bool rdma)
{
    struct san_sge out = {s->buf, 64, san_mr_lkey(s->mr)};
    struct san_sge in = {s->buf + 4096, 64, san_mr_lkey(s->mr)};
    volatile unsigned char *flag = (volatile unsigned char *)s->buf + 4096 + 63;
    struct san_wc wc;
    int err = 0;
    for (unsigned i = 1; i <= rounds && !err; i++) {
        unsigned char seq = (unsigned char)(i % 255 + 1);
        if (!rdma && (err = san_post_recv(s->ep, i, &in, 1)))
            break;
        for (int turn = 0; turn < 2 && !err; turn++) {
            if (turn == initiator ? 0 : 1) {
                s->buf[63] = (char)seq;
                err = rdma ? san_rdma_write(s->ep, i, &out, 1, s->peer, sizeof(s->peer), 4096,
                                            SAN_WR_UNSIGNALED)
                           : san_post_send(s->ep, i, &out, 1, SAN_WR_UNSIGNALED);
            } else if (rdma) {
                uint64_t deadline = perf_now_ns() + WAIT_NS;
                while (*flag != seq && !err) {
                    if (perf_now_ns() > deadline)
                        err = -ETIMEDOUT;
                    sched_yield();
                }
            } else {
                err = wait_wc(s->ep, &wc);
            }
        }
    }
    return err;
}

static int latency(const char *sock, const struct nic_opts *n, bool rdma, uint64_t *ns)
{
    struct sockaddr_in sa = addr_of((uint16_t)(PORT + 1 + rdma));
    struct side s = {0};
    struct san_listener *l;
    int err;
    if ((err = perf_open_uncached(sock, &s.ctx)))
        return err;
    if ((err = san_listen(s.ctx, (struct sockaddr *)&sa, sizeof(sa), 1, &l)))
        goto out;
    pid_t c = fork();
    if (c == 0) {
        struct side p = {0};
        int e;
        if ((e = perf_open_uncached(sock, &p.ctx)) ||
            (e = san_connect(p.ctx, (struct sockaddr *)&sa, sizeof(sa), 5000, &p.ep)) ||
            (e = side_setup(&p)) || (e = pingpong(&p, n->rounds, false, rdma))) {
            fprintf(stderr, "sanperf nic: the %s latency peer: %s\n", rdma ? "rdma" : "send",
                    san_strerror(e));
            _exit(1);
        }
        sleep(1); /* the last message must land before the endpoint closes */
        _exit(0);
    }
    if ((err = san_accept(l, 5000, &s.ep)) || (err = side_setup(&s)))
        goto out_child;
    uint64_t t0 = perf_now_ns();
    err = pingpong(&s, n->rounds, true, rdma);
    *ns = (perf_now_ns() - t0) / n->rounds / 2;
out_child:
    kill(c, SIGKILL);
    waitpid(c, NULL, 0);
    san_listener_close(l);
out:
    if (err)
        fprintf(stderr, "sanperf nic: %s latency: %s\n", rdma ? "rdma" : "send", san_strerror(err));
    san_close(s.ctx);
    return err;
}

int perf_nic(const struct perf_opts *o)
{
    struct nic_opts n;
    if (parse(o, &n))
        return 2;
    struct perf_daemon d;
    if (perf_start_daemon(&d, "nic", NULL, -1))
        return 1;
    struct ucx ucx_bw, ucx_lat;
    ucx_measure("ucp_put_bw", MIB, n.mib, &ucx_bw);
    int err = 0;
    for (int k = 0; k < MEM_KINDS && !err; k++)
        if (n.mem[k])
            err = bandwidth(d.sock, &n, (enum mem_kind)k, o->json, &ucx_bw);
    uint64_t floor = shm_latency(n.rounds), tcp = tcp_latency(n.rounds);
    ucx_measure("ucp_put_lat", 64, n.rounds, &ucx_lat);
    double ucx_ns = ucx_lat.ok ? ucx_lat.lat_us * 1000 : 0; /* already one way (half a round) */
    for (int rdma = 0; rdma < 2 && !err; rdma++) {
        uint64_t ns = 0;
        if ((err = latency(d.sock, &n, rdma, &ns)))
            break;
        const char *name = rdma ? "rdma_lat_64b" : "send_lat_64b";
        char extra[192];
        ucx_fields(extra, sizeof(extra), &ucx_lat, "one_way_ns", 0, ucx_ns, (double)ns);
        if (o->json)
            perf_json("\"suite\": \"nic\", \"case\": \"%s\", \"rounds\": %u, \"one_way_ns\": %llu, "
                      "\"baseline\": \"tcp_loopback_64b\", \"baseline_one_way_ns\": %llu, "
                      "\"ratio\": %.3f, \"floor\": \"shm_pingpong\", \"floor_one_way_ns\": %llu, "
                      "\"floor_ratio\": %.3f%s, "
                      "\"better\": \"lower\"",
                      name, n.rounds, (unsigned long long)ns, (unsigned long long)tcp,
                      tcp ? (double)ns / (double)tcp : 0, (unsigned long long)floor,
                      floor ? (double)ns / (double)floor : 0, extra);
        else {
            printf("%s: one way %llu ns; TCP loopback %llu ns (ratio %.2f); shared memory %llu ns "
                   "(ratio %.2f)",
                   name, (unsigned long long)ns, (unsigned long long)tcp,
                   tcp ? (double)ns / (double)tcp : 0, (unsigned long long)floor,
                   floor ? (double)ns / (double)floor : 0);
            if (ucx_lat.ok)
                printf("; UCX posix put %.0f ns (ratio %.2f)\n", ucx_ns, (double)ns / ucx_ns);
            else
                printf("; UCX: %s\n", ucx_lat.why);
        }
    }
    perf_stop_daemon(&d);
    return err ? 1 : 0;
}
