/* sanperf sock: the sockets switch (libsansock under sanrun) against kernel TCP on loopback, both
 * measured in the same run with the same programs.
 *
 * Both ends are separate processes, and they are this binary re-executed as `sanperf sock-peer`
 * (the peer below: plain socket calls, no libsan), once plainly (TCP) and once under sanrun with
 * a private sanproxyd: the path unmodified programs take, LD_PRELOAD of libsansock.so, is the one
 * measured. A SAN run counts only when the daemon's nic_bytes grew by the bytes it moved.
 *
 * - stream_1m: a client writes --mib MiB in 1 MiB writes, shuts down its side and waits for the
 *   server's count of bytes read: gb_per_s against TCP's (ratio = ours / TCP, higher is better;
 *   target >= 2).
 * - pingpong_64b: --rounds 64-byte ping-pongs (after a tenth as many unmeasured): the median
 *   one-way latency (half a round trip) against TCP's (ratio, lower is better; target <= 0.5).
 * - stream_1m also gives the copy bound (copybound.c): the rate of three plain memcpys in three
 *   processes through rings like the switch's (copy3_bound_gb_per_s: writer, NIC, reader, the
 *   path with SANSOCK_MAP=0 or across hosts) and of two (copy2_bound_gb_per_s: read mode on one
 *   host, where the reader maps the writer's staging; TCP's path is two copies too), and
 *   bound_ratio = the two-copy bound / TCP: an estimate of the highest ratio the switch could
 *   reach in this run.
 * - stream_1m also runs in write mode (SANSOCK_RDMA_WRITE=1: staging sinks, 2: the program's
 *   buffer): write_staged_gb_per_s and write_program_gb_per_s beside read mode's gb_per_s.
 * - pingpong_big (--case bigpong): --size-byte ping-pongs (default 1 MiB), where each reader waits
 *   in its read before the data comes (write mode's receiver-initiated case): the median round
 *   trip in each RDMA mode against TCP's (one_way_ns: half of it; ratio = read mode / TCP, lower
 *   is better).
 * - crossover_<size>: stream bandwidth of size-byte writes with the data inline (threshold at
 *   the size, SANSOCK_RDMA=0) and by RDMA (threshold one byte below it), through the switch both
 *   times with the same receive slots, the median of three runs each taken in turns: ratio =
 *   RDMA / inline, higher is better. The smallest size from which RDMA
 *   wins is where SANSOCK_RDMA_THRESHOLD's default belongs (docs/sock.md).
 * - iperf3 (select) and sockperf ping-pong (64 B, one-way latency) and throughput (1 KiB messages)
 *   with -F p (poll) and -F s (select; -F needs a feed file) under sanrun against the same programs
 *   on TCP, when installed ("not installed" otherwise; a missing program never
 *   fails the suite).
 * --case picks one of stream, pingpong, bigpong, crossover, programs, or switch (all but the
 * programs: what a sanitizer build can run, its libsansock.so being instrumented); default: all. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "perf.h"
#include "proto/proto.h"

#define MIB       (1u << 20)
#define PEER_WAIT 60 /* seconds a peer may take before it is killed */
#define PROGRAM_S 3  /* seconds iperf3 and sockperf run, each */
#define WARM_DIV  10 /* unmeasured ping-pongs: rounds / WARM_DIV */
#define HDR_MAGIC 0x6b636f73u

/* --- the peer: `sanperf sock-peer server` | `client PORT stream|pingpong SIZE COUNT` ---------- */

struct peer_hdr { /* what the client tells the server first */
    uint32_t magic, pingpong, size, pad;
    uint64_t count;
};

static int read_full(int fd, void *buf, size_t len)
{
    for (size_t got = 0; got < len;) {
        ssize_t n = read(fd, (char *)buf + got, len - got);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return n < 0 ? -errno : -EPIPE;
        got += (size_t)n;
    }
    return 0;
}

static int write_full(int fd, const void *buf, size_t len)
{
    for (size_t put = 0; put < len;) {
        ssize_t n = write(fd, (const char *)buf + put, len - put);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return n < 0 ? -errno : -EPIPE;
        put += (size_t)n;
    }
    return 0;
}

static void nodelay(int fd)
{
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

static int peer_server(void)
{
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t sl = sizeof(sa);
    int l = socket(AF_INET, SOCK_STREAM, 0);
    if (l < 0 || bind(l, (struct sockaddr *)&sa, sizeof(sa)) || listen(l, 4) ||
        getsockname(l, (struct sockaddr *)&sa, &sl))
        return 1;
    printf("port %d\n", ntohs(sa.sin_port));
    fflush(stdout);
    int c = accept(l, NULL, NULL);
    struct peer_hdr h;
    if (c < 0 || read_full(c, &h, sizeof(h)) || h.magic != HDR_MAGIC || !h.size ||
        h.size > 64 * MIB)
        return 1;
    nodelay(c);
    char *buf = malloc(h.size);
    if (!buf)
        return 1;
    if (h.pingpong) {
        for (;;) {
            int err = read_full(c, buf, h.size);
            if (err == -EPIPE)
                break;
            if (err || write_full(c, buf, h.size))
                return 1;
        }
    } else {
        uint64_t total = 0;
        ssize_t n;
        while ((n = read(c, buf, h.size)) > 0 || (n < 0 && errno == EINTR))
            total += n > 0 ? (uint64_t)n : 0;
        if (n < 0 || write_full(c, &total, sizeof(total)))
            return 1;
    }
    close(c);
    close(l);
    free(buf);
    return 0;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static int peer_client(int port, bool pingpong, uint32_t size, uint64_t count)
{
    struct sockaddr_in sa = {.sin_family = AF_INET,
                             .sin_port = htons((uint16_t)port),
                             .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    int s = socket(AF_INET, SOCK_STREAM, 0);
    if (s < 0 || connect(s, (struct sockaddr *)&sa, sizeof(sa)))
        return 1;
    nodelay(s);
    struct peer_hdr h = {.magic = HDR_MAGIC, .pingpong = pingpong, .size = size, .count = count};
    char *buf = calloc(1, size);
    if (!buf || write_full(s, &h, sizeof(h)))
        return 1;
    for (uint32_t i = 0; i < size; i++)
        buf[i] = (char)(i * 7 + 1);
    if (pingpong) {
        uint64_t warm = count / WARM_DIV, *rtt = calloc(count, sizeof(*rtt));
        if (!rtt)
            return 1;
        for (uint64_t i = 0; i < warm + count; i++) {
            uint64_t t0 = perf_now_ns();
            if (write_full(s, buf, size) || read_full(s, buf, size))
                return 1;
            if (i >= warm)
                rtt[i - warm] = perf_now_ns() - t0;
        }
        qsort(rtt, count, sizeof(*rtt), cmp_u64);
        printf("pingpong %llu %llu\n", (unsigned long long)rtt[count / 2],
               (unsigned long long)rtt[count * 99 / 100]);
        free(rtt);
    } else {
        uint64_t t0 = perf_now_ns(), total;
        for (uint64_t i = 0; i < count; i++)
            if (write_full(s, buf, size))
                return 1;
        if (shutdown(s, SHUT_WR) || read_full(s, &total, sizeof(total)))
            return 1;
        uint64_t ns = perf_now_ns() - t0;
        if (total != (uint64_t)size * count)
            return 1;
        printf("stream %llu %llu\n", (unsigned long long)total, (unsigned long long)ns);
    }
    fflush(stdout);
    close(s);
    free(buf);
    return 0;
}

int perf_sock_peer(int argc, char **argv)
{
    if (argc == 1 && !strcmp(argv[0], "server"))
        return peer_server();
    if (argc == 5 && !strcmp(argv[0], "client"))
        return peer_client(atoi(argv[1]), !strcmp(argv[2], "pingpong"),
                           (uint32_t)strtoul(argv[3], NULL, 10), strtoull(argv[4], NULL, 10));
    fprintf(stderr, "sanperf sock-peer: internal use (sanperf sock)\n");
    return 2;
}

/* --- the suite ------------------------------------------------------------------------------- */

struct sock_opts {
    unsigned mib, rounds, size;
    const char *only; /* --case, or NULL */
};

static char self[PATH_MAX], sanrun[PATH_MAX + 16];

static int find_tools(void)
{
    ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
    if (n <= 0)
        return -errno;
    self[n] = 0;
    char dir[PATH_MAX];
    snprintf(dir, sizeof(dir), "%s", self);
    char *slash = strrchr(dir, '/');
    if (!slash)
        return -ENOENT;
    *slash = 0;
    snprintf(sanrun, sizeof(sanrun), "%s/sanrun", dir);
    if (access(sanrun, X_OK)) {
        fprintf(stderr, "sanperf sock: no sanrun next to sanperf (%s)\n", sanrun);
        return -ENOENT;
    }
    return 0;
}

/* How a run's two ends are started: plainly (TCP) or under sanrun with env set. */
struct transport {
    bool san;
    const char *sock;      /* the daemon's socket (san) */
    const char *threshold; /* SANSOCK_RDMA_THRESHOLD for both ends, or NULL */
    bool no_rdma;          /* SANSOCK_RDMA=0: everything inline */
    const char *write;     /* SANSOCK_RDMA_WRITE for both ends ("0" read mode only, "1" write
                              mode into staging sinks, "2" into the program's buffer), or NULL */
};

/* Starts argv (prefixed with sanrun for a SAN transport), its stdout on *out (NULL: discarded). */
static pid_t spawn(const struct transport *t, char *const argv[], FILE **out)
{
    int p[2];
    if (pipe2(p, O_CLOEXEC))
        return -1;
    pid_t parent = getpid(), pid = fork();
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != parent)
            _exit(127);
        int null = open("/dev/null", O_WRONLY | O_CLOEXEC);
        dup2(out ? p[1] : null, 1);
        if (t->threshold)
            setenv("SANSOCK_RDMA_THRESHOLD", t->threshold, 1);
        if (t->no_rdma)
            setenv("SANSOCK_RDMA", "0", 1);
        if (t->write)
            setenv("SANSOCK_RDMA_WRITE", t->write, 1);
        char *args[16];
        int n = 0;
        if (t->san) {
            args[n++] = sanrun;
            args[n++] = "--socket";
            args[n++] = (char *)t->sock;
        }
        for (int i = 0; argv[i] && n < 15; i++)
            args[n++] = argv[i];
        args[n] = NULL;
        execvp(args[0], args);
        _exit(127);
    }
    close(p[1]);
    if (pid < 0 || !out) {
        close(p[0]);
        return pid;
    }
    *out = fdopen(p[0], "r");
    return pid;
}

/* Waits for pid up to PEER_WAIT seconds (then kills it): its exit status, -1 when killed. */
static int reap(pid_t pid)
{
    uint64_t deadline = perf_now_ns() + PEER_WAIT * 1000000000ull;
    int st;
    pid_t r;
    while ((r = waitpid(pid, &st, WNOHANG)) == 0) {
        if (perf_now_ns() > deadline) {
            kill(pid, SIGKILL);
            waitpid(pid, NULL, 0);
            return -1;
        }
        struct timespec ms = {0, 2000000};
        nanosleep(&ms, NULL);
    }
    return r == pid && WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/* The daemon's nic_bytes (the SAN's bytes moved, ever) and nic_ops in *ops, or 0 when it cannot
 * be asked. */
static uint64_t nic_bytes(const char *sock, uint64_t *ops)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", sock);
    int fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
    struct san_msg req, rep;
    size_t len;
    int err;
    uint64_t v = 0;
    *ops = 0;
    san_proto_init(&req, SAN_OP_STATS, 1);
    if (fd >= 0 && !connect(fd, (struct sockaddr *)&sa, sizeof(sa)) &&
        !san_proto_send(fd, &req, -1, 0) && !san_proto_recv(fd, &rep, &len, NULL, 0) &&
        san_proto_decode(&rep, len, true, &err) == SAN_DECODE_OK && !rep.hdr.status)
        v = rep.u.stats_rep.nic_bytes, *ops = rep.u.stats_rep.nic_ops;
    if (fd >= 0)
        close(fd);
    return v;
}

/* One server/client run: the client's result line parsed into a and b. 0 or -1. */
static int run_pair(const struct transport *t, bool pingpong, uint32_t size, uint64_t count,
                    uint64_t *a, uint64_t *b)
{
    FILE *so, *co;
    char *srv[] = {self, "sock-peer", "server", NULL};
    pid_t sp = spawn(t, srv, &so);
    if (sp < 0)
        return -1;
    int port = 0, rc = -1;
    char line[128];
    if (fgets(line, sizeof(line), so) && sscanf(line, "port %d", &port) == 1) {
        char ps[16], ss[16], cs[24];
        snprintf(ps, sizeof(ps), "%d", port);
        snprintf(ss, sizeof(ss), "%u", size);
        snprintf(cs, sizeof(cs), "%llu", (unsigned long long)count);
        char *cli[] = {self, "sock-peer", "client", ps, pingpong ? "pingpong" : "stream",
                       ss,   cs,          NULL};
        uint64_t ops0 = 0, ops1 = 0, before = t->san ? nic_bytes(t->sock, &ops0) : 0;
        pid_t cp = spawn(t, cli, &co);
        if (cp > 0) {
            unsigned long long x, y;
            const char *want = pingpong ? "pingpong %llu %llu" : "stream %llu %llu";
            bool got = fgets(line, sizeof(line), co) && sscanf(line, want, &x, &y) == 2;
            fclose(co);
            int crc = reap(cp);
            int src = reap(sp);
            sp = -1;
            uint64_t moved = t->san ? nic_bytes(t->sock, &ops1) - before : 0;
            uint64_t need = (uint64_t)size * count / (pingpong ? 1 : 2);
            /* The bytes of a transfer the reader mapped (the writer's staging, san_rdma_map) do
             * not go through the NIC, but its offer and DONE do: two operations for at most
             * 1 MiB. So the SAN carried at most the NIC's bytes and 512 KiB an operation. */
            moved += (ops1 - ops0) * (512u << 10);
            if (got && !crc && !src && (!t->san || moved >= need)) {
                *a = x;
                *b = y;
                rc = 0;
            } else if (got && t->san && moved < need) {
                fprintf(stderr,
                        "sanperf sock: the SAN moved %llu bytes of %llu: not over the SAN\n",
                        (unsigned long long)moved, (unsigned long long)need);
            } else {
                fprintf(stderr, "sanperf sock: %s %s run failed (client %d, server %d)\n",
                        t->san ? "SAN" : "TCP", pingpong ? "ping-pong" : "stream", crc, src);
            }
        }
    }
    fclose(so);
    if (sp > 0) {
        kill(sp, SIGKILL);
        waitpid(sp, NULL, 0);
    }
    return rc;
}

static double gbps(uint64_t bytes, uint64_t ns)
{
    return ns ? (double)bytes / (double)ns : 0; /* bytes per ns = GB/s */
}

/* The RDMA modes side by side (SANSOCK_RDMA_WRITE): read mode only, write mode into a staging
 * sink, write mode into the program's buffer. */
static const char *const mode_env[3] = {"0", "1", "2"};

/* stream_1m: 1 MiB writes read by 1 MiB reads, kernel TCP, then each RDMA mode. */
static int case_stream(const struct sock_opts *o, const struct transport *san, bool json)
{
    struct transport tcp = {0};
    uint64_t tb, tns, b[3], ns[3];
    if (run_pair(&tcp, false, MIB, o->mib, &tb, &tns))
        return -1;
    double t = gbps(tb, tns), g[3];
    for (int k = 0; k < 3; k++) {
        struct transport m = *san;
        m.write = mode_env[k];
        if (run_pair(&m, false, MIB, o->mib, &b[k], &ns[k]))
            return -1;
        g[k] = gbps(b[k], ns[k]);
    }
    /* What three copies in three processes (the switch's path through the NIC) and two (read
     * mode's on one host, and TCP's) can do here. */
    double c3 = perf_copy_bound(3, (uint64_t)o->mib << 20),
           c2 = perf_copy_bound(2, (uint64_t)o->mib << 20);
    if (json)
        perf_json("\"suite\": \"sock\", \"case\": \"stream_1m\", \"mib\": %u, \"gb_per_s\": %.3f, "
                  "\"baseline\": \"tcp_loopback\", \"baseline_gb_per_s\": %.3f, \"ratio\": %.3f, "
                  "\"better\": \"higher\", \"target\": 2, \"write_staged_gb_per_s\": %.3f, "
                  "\"write_program_gb_per_s\": %.3f, \"copy3_bound_gb_per_s\": %.3f, "
                  "\"copy2_bound_gb_per_s\": %.3f, \"bound_ratio\": %.3f",
                  o->mib, g[0], t, t > 0 ? g[0] / t : 0, g[1], g[2], c3, c2, t > 0 ? c2 / t : 0);
    else
        printf(
            "stream_1m: under sanrun %.2f GB/s by read mode (the default), %.2f by write mode "
            "into staging sinks, %.2f into the program's buffer; TCP loopback %.2f GB/s (ratio "
            "%.2f, target >= 2); the copy bound: two copies in two processes (read mode on one "
            "host) %.2f GB/s (%.2f x TCP: about the best ratio it can reach now), three (through "
            "the NIC) %.2f\n",
            g[0], g[1], g[2], t, t > 0 ? g[0] / t : 0, c2, t > 0 ? c2 / t : 0, c3);
    return 0;
}

static int case_pingpong(const struct sock_opts *o, const struct transport *san, bool json)
{
    struct transport tcp = {0};
    uint64_t t50, t99, s50, s99;
    if (run_pair(&tcp, true, 64, o->rounds, &t50, &t99) ||
        run_pair(san, true, 64, o->rounds, &s50, &s99))
        return -1;
    /* one way: half a round trip */
    double t = (double)t50 / 2, s = (double)s50 / 2;
    if (json)
        perf_json("\"suite\": \"sock\", \"case\": \"pingpong_64b\", \"rounds\": %u, "
                  "\"one_way_ns\": %.0f, \"p99_one_way_ns\": %.0f, \"baseline\": "
                  "\"tcp_loopback_64b\", \"baseline_one_way_ns\": %.0f, "
                  "\"baseline_p99_one_way_ns\": %.0f, \"ratio\": %.3f, \"better\": \"lower\", "
                  "\"target\": 0.5",
                  o->rounds, s, (double)s99 / 2, t, (double)t99 / 2, t > 0 ? s / t : 0);
    else
        printf("pingpong_64b: one way %.0f ns (p99 %.0f) under sanrun; TCP loopback %.0f ns (p99 "
               "%.0f; ratio %.2f, target <= 0.5)\n",
               s, (double)s99 / 2, t, (double)t99 / 2, t > 0 ? s / t : 0);
    return 0;
}

/* Receiver-first transfers: --size ping-pongs (each side writes that, then reads it: the reader
 * waits in its read before the data comes, write mode's case), the median round trip, on TCP and
 * in each RDMA mode. */
static int case_bigpong(const struct sock_opts *o, const struct transport *san, bool json)
{
    struct transport tcp = {0};
    unsigned rounds = o->rounds / 40 ? o->rounds / 40 : 1;
    uint64_t t50, t99, v50[3], v99[3];
    if (run_pair(&tcp, true, o->size, rounds, &t50, &t99))
        return -1;
    for (int k = 0; k < 3; k++) {
        struct transport m = *san;
        m.write = mode_env[k];
        if (run_pair(&m, true, o->size, rounds, &v50[k], &v99[k]))
            return -1;
    }
    if (json)
        perf_json("\"suite\": \"sock\", \"case\": \"pingpong_big\", \"size\": %u, \"rounds\": %u, "
                  "\"one_way_ns\": %.0f, \"write_staged_one_way_ns\": %.0f, "
                  "\"write_program_one_way_ns\": %.0f, \"baseline\": \"tcp_loopback\", "
                  "\"baseline_one_way_ns\": %.0f, \"ratio\": %.3f, \"better\": \"lower\"",
                  o->size, rounds, (double)v50[0] / 2, (double)v50[1] / 2, (double)v50[2] / 2,
                  (double)t50 / 2, t50 ? (double)v50[0] / (double)t50 : 0);
    else
        printf("pingpong_%u: median round trip under sanrun %.0f us by read mode (the default), "
               "%.0f by write mode into staging sinks, %.0f into the program's buffer; TCP "
               "loopback %.0f us (ratio %.2f)\n",
               o->size, (double)v50[0] / 1e3, (double)v50[1] / 1e3, (double)v50[2] / 1e3,
               (double)t50 / 1e3, t50 ? (double)v50[0] / (double)t50 : 0);
    return 0;
}

/* The median of CROSS_TRIES stream runs of each transport, taken in turns so that whatever else
 * runs on the machine disturbs both alike (a best-of would favour the more variable mode): GB/s
 * in med[0] and med[1], or -1. */
#define CROSS_TRIES 3
static int median_streams(const struct transport *t[2], uint32_t size, uint64_t count,
                          double med[2])
{
    double v[2][CROSS_TRIES];
    for (int i = 0; i < CROSS_TRIES; i++)
        for (int k = 0; k < 2; k++) {
            uint64_t b, ns;
            if (run_pair(t[k], false, size, count, &b, &ns))
                return -1;
            v[k][i] = gbps(b, ns);
        }
    for (int k = 0; k < 2; k++) { /* three values: the one neither above nor below both others */
        double a = v[k][0], b = v[k][1], c = v[k][2];
        med[k] = a > b ? (b > c ? b : (a > c ? c : a)) : (a > c ? a : (b > c ? c : b));
    }
    return 0;
}

/* Copy against RDMA by write size, both through the switch, with the same receive slots: inline
 * (SANSOCK_RDMA=0, threshold = the size: writes in control messages, cut to a slot's 16 KiB)
 * against RDMA (threshold one byte below the size). */
static int case_crossover(const struct sock_opts *o, const struct transport *san, bool json)
{
    static const uint32_t sizes[] = {4096,   8192,   16384,   32768,   65536,  131072,
                                     262144, 524288, 1048576, 2097152, 4194304};
    uint64_t budget = (uint64_t)o->mib * MIB / 8; /* bytes per run */
    if (budget < 16 * MIB)
        budget = 16 * MIB;
    uint32_t first_win = 0;
    for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
        uint32_t size = sizes[i];
        char at[16], below[16];
        snprintf(at, sizeof(at), "%u", size);
        snprintf(below, sizeof(below), "%u", size - 1);
        struct transport copy = *san, rdma = *san;
        copy.threshold = at;
        copy.no_rdma = true;
        rdma.threshold = below;
        uint64_t count = budget / size;
        const struct transport *both[2] = {&copy, &rdma};
        double med[2];
        if (median_streams(both, size, count, med))
            return -1;
        double c = med[0], r = med[1];
        if (!first_win && r > c)
            first_win = size;
        char name[32];
        snprintf(name, sizeof(name), "crossover_%u", size);
        if (json)
            perf_json("\"suite\": \"sock\", \"case\": \"%s\", \"size\": %u, \"gb_per_s\": %.3f, "
                      "\"baseline\": \"inline_copy\", \"baseline_gb_per_s\": %.3f, \"ratio\": "
                      "%.3f, \"better\": \"higher\"",
                      name, size, r, c, c > 0 ? r / c : 0);
        else
            printf("%s: %u-byte writes: RDMA %.2f GB/s, inline copy %.2f GB/s (ratio %.2f)\n", name,
                   size, r, c, c > 0 ? r / c : 0);
    }
    if (!json)
        printf("crossover: RDMA first wins at %u bytes\n", first_win);
    return 0;
}

/* --- programs: iperf3 and sockperf ------------------------------------------------------------ */

static bool installed(const char *prog)
{
    const char *path = getenv("PATH");
    char buf[4096];
    for (const char *p = path ? path : "/usr/bin:/bin"; *p;) {
        size_t n = strcspn(p, ":");
        if (n && n + strlen(prog) + 2 < sizeof(buf)) {
            snprintf(buf, sizeof(buf), "%.*s/%s", (int)n, p, prog);
            if (!access(buf, X_OK))
                return true;
        }
        p += n + (p[n] == ':');
    }
    return false;
}

static int free_port(void)
{
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t sl = sizeof(sa);
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), port = -1;
    if (fd >= 0 && !bind(fd, (struct sockaddr *)&sa, sizeof(sa)) &&
        !getsockname(fd, (struct sockaddr *)&sa, &sl))
        port = ntohs(sa.sin_port);
    if (fd >= 0)
        close(fd);
    return port;
}

/* Whether something listens on TCP port of loopback (IPv4 or IPv6), from /proc/net/tcp*. */
static bool listening(int port)
{
    const char *files[] = {"/proc/net/tcp", "/proc/net/tcp6"};
    bool found = false;
    for (int i = 0; i < 2 && !found; i++) {
        FILE *f = fopen(files[i], "r");
        char line[256];
        while (f && !found && fgets(line, sizeof(line), f)) {
            unsigned lport, st;
            if (sscanf(line, " %*d: %*[0-9A-Fa-f]:%x %*[0-9A-Fa-f]:%*x %x", &lport, &st) == 2)
                found = (int)lport == port && st == 0x0A;
        }
        if (f)
            fclose(f);
    }
    return found;
}

/* Runs a server and a client program (port substituted for "PORT" in their arguments) over t; the
 * client's whole output in text. 0, or -1 when either failed. */
static int run_programs(const struct transport *t, char **srv, char **cli, char *text, size_t size)
{
    int port = free_port();
    char ps[16];
    snprintf(ps, sizeof(ps), "%d", port);
    /* sockperf takes its address from a feed file when -F is given: one line, "T:ip:port". */
    char feed[64];
    snprintf(feed, sizeof(feed), "/tmp/sanperf-sock.%d.feed", (int)getpid());
    FILE *f = fopen(feed, "w");
    if (!f)
        return -1;
    fprintf(f, "T:127.0.0.1:%d\n", port);
    fclose(f);
    char *sa[16], *ca[16];
    int n = 0;
    for (; srv[n] && n < 15; n++)
        sa[n] = !strcmp(srv[n], "PORT") ? ps : !strcmp(srv[n], "FEED") ? feed : srv[n];
    sa[n] = NULL;
    for (n = 0; cli[n] && n < 15; n++)
        ca[n] = !strcmp(cli[n], "PORT") ? ps : !strcmp(cli[n], "FEED") ? feed : cli[n];
    ca[n] = NULL;
    FILE *co;
    pid_t sp = spawn(t, sa, NULL);
    if (sp < 0)
        return -1;
    uint64_t start = perf_now_ns();
    while (!listening(port) && perf_now_ns() - start < 5000000000ull) {
        struct timespec ms = {0, 10000000};
        nanosleep(&ms, NULL);
    }
    int rc = -1;
    pid_t cp = listening(port) ? spawn(t, ca, &co) : -1;
    if (cp > 0) {
        size_t got = fread(text, 1, size - 1, co);
        text[got] = 0;
        fclose(co);
        rc = reap(cp) ? -1 : 0;
    }
    kill(sp, SIGTERM);
    reap(sp);
    unlink(feed);
    return rc;
}

/* The first number after key in text, or -1. */
static double number_after(const char *text, const char *key)
{
    const char *p = strstr(text, key);
    return p ? strtod(p + strlen(key), NULL) : -1;
}

/* One program's row: its figure under sanrun against the same program on TCP, or why there is
 * none (status). unit is gb_per_s (higher is better) or one_way_ns (lower). */
static void program_row(bool json, const char *name, const char *unit, double ours, double tcp,
                        const char *why)
{
    bool higher = !strcmp(unit, "gb_per_s");
    /* The ratio is the quotient of the figures as printed (GB/s to 3 decimals, ns whole): a
     * program's throughput on a loaded machine can be 0.05 GB/s, where the rounding alone is 1%. */
    double scale = higher ? 1000 : 1;
    ours = (double)(long long)(ours * scale + 0.5) / scale;
    tcp = (double)(long long)(tcp * scale + 0.5) / scale;
    double ratio = tcp > 0 ? ours / tcp : 0;
    if (json && why)
        perf_json("\"suite\": \"sock\", \"case\": \"%s\", \"status\": \"%s\"", name, why);
    else if (json)
        perf_json("\"suite\": \"sock\", \"case\": \"%s\", \"status\": \"ok\", \"%s\": %.3f, "
                  "\"baseline\": \"tcp\", \"baseline_%s\": %.3f, \"ratio\": %.3f, \"better\": "
                  "\"%s\"",
                  name, unit, ours, unit, tcp, ratio, higher ? "higher" : "lower");
    else if (why)
        printf("%s: %s\n", name, why);
    else if (higher)
        printf("%s: %.3f GB/s under sanrun; TCP %.3f GB/s (ratio %.2f)\n", name, ours, tcp, ratio);
    else
        printf("%s: one way %.0f ns under sanrun; TCP %.0f ns (ratio %.2f)\n", name, ours, tcp,
               ratio);
}

static void case_iperf3(const struct transport *san, bool json)
{
    if (!installed("iperf3")) {
        program_row(json, "iperf3", "gb_per_s", 0, 0, "not installed");
        return;
    }
    static char text[1 << 16];
    char secs[8];
    snprintf(secs, sizeof(secs), "%d", PROGRAM_S);
    char *srv[] = {"iperf3", "-s", "-1", "-B", "127.0.0.1", "-p", "PORT", NULL};
    char *cli[] = {"iperf3", "-c", "127.0.0.1", "-p", "PORT", "-t", secs, "-J", NULL};
    struct transport tcp = {0};
    double v[2] = {-1, -1};
    const struct transport *ts[2] = {&tcp, san};
    for (int i = 0; i < 2; i++)
        if (!run_programs(ts[i], srv, cli, text, sizeof(text))) {
            const char *sum = strstr(text, "\"sum_received\"");
            v[i] = sum ? number_after(sum, "\"bits_per_second\":") / 8e9 : -1; /* GB/s */
        }
    if (v[0] <= 0 || v[1] <= 0)
        program_row(json, "iperf3", "gb_per_s", 0, 0, "failed");
    else
        program_row(json, "iperf3", "gb_per_s", v[1], v[0], NULL);
}

static void case_sockperf(const struct transport *san, bool json)
{
    static const char *const muxes[] = {"p", "s"}; /* poll, select (epoll: not interposed yet) */
    static char text[1 << 16];
    char secs[8];
    snprintf(secs, sizeof(secs), "%d", PROGRAM_S);
    for (int m = 0; m < 2; m++) {
        for (int tp = 0; tp < 2; tp++) {
            char name[48];
            snprintf(name, sizeof(name), "sockperf_%s_%s", tp ? "throughput" : "pingpong",
                     muxes[m]);
            if (!installed("sockperf")) {
                program_row(json, name, tp ? "gb_per_s" : "one_way_ns", 0, 0, "not installed");
                continue;
            }
            char *srv[] = {"sockperf", "server", "-f", "FEED", "-F", (char *)muxes[m], NULL};
            char *cli[] = {"sockperf", tp ? "throughput" : "ping-pong",
                           "-f",       "FEED",
                           "-F",       (char *)muxes[m],
                           "-m",       tp ? "1024" : "64",
                           "-t",       secs,
                           NULL};
            struct transport tcp = {0};
            const struct transport *ts[2] = {&tcp, san};
            double v[2] = {-1, -1};
            for (int i = 0; i < 2; i++)
                if (!run_programs(ts[i], srv, cli, text, sizeof(text)))
                    v[i] = tp ? number_after(text, "BandWidth is ") / 1e3 /* MBps: GB/s */
                              : number_after(text, "Latency is ") * 1e3;  /* us: ns */
            const char *unit = tp ? "gb_per_s" : "one_way_ns";
            if (v[0] <= 0 || v[1] <= 0)
                program_row(json, name, unit, 0, 0, "failed");
            else
                program_row(json, name, unit, v[1], v[0], NULL);
        }
    }
}

static bool wanted(const struct sock_opts *o, const char *c)
{
    if (o->only && !strcmp(o->only, "switch")) /* all but the programs */
        return strcmp(c, "programs") != 0;
    return !o->only || !strcmp(o->only, c);
}

int perf_sock(const struct perf_opts *po)
{
    struct sock_opts o = {.mib = 1024, .rounds = 20000, .size = MIB};
    for (int i = 0; i + 1 < po->argc; i++) {
        if (!strcmp(po->argv[i], "--mib"))
            o.mib = (unsigned)strtoul(po->argv[++i], NULL, 10);
        else if (!strcmp(po->argv[i], "--size"))
            o.size = (unsigned)strtoul(po->argv[++i], NULL, 10);
        else if (!strcmp(po->argv[i], "--rounds"))
            o.rounds = (unsigned)strtoul(po->argv[++i], NULL, 10);
        else if (!strcmp(po->argv[i], "--case"))
            o.only = po->argv[++i];
    }
    if (find_tools())
        return 1;
    struct perf_daemon d;
    int err = perf_start_daemon(&d, "sock", NULL, -1);
    if (err) {
        fprintf(stderr, "sanperf sock: no private sanproxyd: %s\n", strerror(-err));
        return 1;
    }
    signal(SIGPIPE, SIG_IGN);
    struct transport san = {.san = true, .sock = d.sock};
    int rc = 0;
    if (wanted(&o, "stream"))
        rc |= case_stream(&o, &san, po->json);
    if (wanted(&o, "pingpong"))
        rc |= case_pingpong(&o, &san, po->json);
    if (wanted(&o, "bigpong"))
        rc |= case_bigpong(&o, &san, po->json);
    if (wanted(&o, "crossover"))
        rc |= case_crossover(&o, &san, po->json);
    if (wanted(&o, "programs")) {
        case_iperf3(&san, po->json);
        case_sockperf(&san, po->json);
    }
    perf_stop_daemon(&d);
    return rc ? 1 : 0;
}
