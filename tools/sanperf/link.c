/* sanperf link: endpoints across hosts, two daemons in two network namespaces joined by a veth
 * pair this suite creates (10.199.79.1/30 and .2/30, on those veths only; deleted at the end),
 * every figure next to baselines measured across the same veth in the same run.
 *
 * - rdma_lat_64b: a 64-byte RDMA-write ping-pong between a context of daemon a and one of daemon
 *   b (each side polls its own proxy memory for the other's write): the one-way latency (half a
 *   round trip) against fi_pingpong's RDM ping-pong of 64 bytes with the link's provider (ratio =
 *   ours / fi_pingpong, lower is better) and kernel TCP's 64-byte ping-pong between the namespaces
 *   (tcp_ratio).
 * - rdma_write_1m: 1 MiB RDMA writes from a to b, 4 in flight, the writer sleeping in san_wait
 *   for its completions: bandwidth against kernel TCP streaming between the namespaces (ratio =
 * ours / TCP, higher is better) and fi_pingpong's RDM ping-pong of 1 MiB messages (fi_ratio).
 * fi_pingpong (libfabric-bin) missing or failing is said in the row ("fi_pingpong"), never fails
 * the suite. Needs root and ip(8): anything else says why and fails. Not part of `sanperf all`
 * (it changes the machine's network namespaces). Options: --rounds N (ping-pongs, default 2000),
 * --mib N (bandwidth volume, default 1024), --reps N (runs of each, alternating; figures are
 * medians, default 3), --tag N.
 *
 * Several runs may share the machine (two builds' test suites, two clones): every name this suite
 * makes is its own. The namespaces are sanperf-link-TAG-a and -b, TAG being --tag (a caller that
 * checks nothing is left behind names them so) or else this process's pid; the veths, which live
 * in the machine's namespace until moved, are named by the pid; the rest (addresses, ports) is
 * inside the namespaces. Teardown removes only what this run made. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <san/san.h>

#include "perf.h"

#define MIB      (1u << 20)
#define INFLIGHT 4
#define SAN_PORT 7600
#define TCP_PORT 7601
#define LINK     7602
#define MAX_REPS 99

struct link_env {
    char ns[2][48], veth[2][16], dir[64], sock[2][96], exe_dir[PATH_MAX];
    pid_t daemon[2];
    bool ns_made[2], veth_made;
};
static const char *const ips[2] = {"10.199.79.1", "10.199.79.2"};

static int run(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int run(const char *fmt, ...)
{
    char cmd[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof(cmd), fmt, ap);
    va_end(ap);
    return system(cmd);
}

static void teardown(struct link_env *e)
{
    for (int i = 0; i < 2; i++)
        if (e->daemon[i] > 0) {
            kill(e->daemon[i], SIGTERM);
            waitpid(e->daemon[i], NULL, 0);
        }
    for (int i = 0; i < 2; i++)
        if (e->ns_made[i])
            run("ip netns del %s 2>/dev/null", e->ns[i]);
    if (e->veth_made)
        run("ip link del %s 2>/dev/null", e->veth[0]);
    if (e->dir[0])
        run("rm -rf %s", e->dir);
}

/* A daemon in namespace i, ready when it says so on its --ready-fd. */
static int start_daemon(struct link_env *e, int i)
{
    char cfg[128], path[PATH_MAX + 16], line[16] = {0};
    snprintf(cfg, sizeof(cfg), "%s/%c.ini", e->dir, 'a' + i);
    snprintf(e->sock[i], sizeof(e->sock[i]), "%s/%c.sock", e->dir, 'a' + i);
    FILE *f = fopen(cfg, "w");
    if (!f)
        return -errno;
    fprintf(f,
            "[machine]\nram_size = 256M\n[nic]\naddresses = 10.%d.0.0/16\n[link]\nlisten = "
            "%s:%d\npeers = %s:%d\nsecret = sanperf link\n",
            i + 1, ips[i], LINK, ips[!i], LINK);
    fclose(f);
    snprintf(path, sizeof(path), "%s/sanproxyd", e->exe_dir);
    int p[2];
    if (pipe(p))
        return -errno;
    pid_t pid = fork();
    if (pid < 0)
        return -errno;
    if (!pid) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        dup2(p[1], 3);
        int null = open("/dev/null", O_WRONLY);
        if (null >= 0 && !getenv("SANPERF_DAEMON_LOG"))
            dup2(null, 2);
        execlp("ip", "ip", "netns", "exec", e->ns[i], path, "--foreground", "--config", cfg,
               "--socket", e->sock[i], "--ready-fd", "3", (char *)NULL);
        _exit(127);
    }
    close(p[1]);
    e->daemon[i] = pid;
    ssize_t n = read(p[0], line, sizeof(line) - 1);
    close(p[0]);
    return n > 0 && !strncmp(line, "ready", 5) ? 0 : -EIO;
}

static int setup(struct link_env *e, unsigned tag)
{
    ssize_t n = readlink("/proc/self/exe", e->exe_dir, sizeof(e->exe_dir) - 1);
    if (n <= 0)
        return -errno;
    e->exe_dir[n] = 0;
    *strrchr(e->exe_dir, '/') = 0;
    int pid = (int)getpid(); /* at most 7 digits (pid_max): a veth's name is 15 bytes at most */
    for (int i = 0; i < 2; i++) {
        snprintf(e->ns[i], sizeof(e->ns[i]), "sanperf-link-%u-%c", tag ? tag : (unsigned)pid,
                 'a' + i);
        snprintf(e->veth[i], sizeof(e->veth[i]), "spl%d%c", pid, 'a' + i);
    }
    snprintf(e->dir, sizeof(e->dir), "/tmp/sanperf-link.XXXXXX");
    if (!mkdtemp(e->dir)) {
        e->dir[0] = 0;
        return -errno;
    }
    for (int i = 0; i < 2; i++) {
        if (run("ip netns add %s", e->ns[i]))
            return -EIO;
        e->ns_made[i] = true;
    }
    if (run("ip link add %s type veth peer name %s", e->veth[0], e->veth[1]))
        return -EIO;
    e->veth_made = true;
    for (int i = 0; i < 2; i++)
        if (run("ip link set %s netns %s && ip -n %s addr add %s/30 dev %s && ip -n %s link set "
                "lo up && ip -n %s link set %s up",
                e->veth[i], e->ns[i], e->ns[i], ips[i], e->veth[i], e->ns[i], e->ns[i], e->veth[i]))
            return -EIO;
    for (int i = 0; i < 2; i++)
        if (start_daemon(e, i))
            return -EIO;
    return 0;
}

/* --- ours ------------------------------------------------------------------------------------ */

struct side {
    struct san_ctx *ctx;
    struct san_ep *ep;
    uint8_t *mem; /* proxy memory: 64 bytes polled, then INFLIGHT MiB written */
    struct san_mr *mr;
    uint8_t desc[SAN_RDMA_DESC_SIZE];
};

struct pong {
    struct side *s;
    const uint8_t *peer_desc;
    unsigned rounds;
    _Atomic bool *go;
};

static int wait_wc(struct san_ep *ep)
{
    struct san_wc wc;
    int n;
    while (!(n = san_poll(ep, &wc, 1)))
        sched_yield();
    return n < 0 ? n : wc.status;
}

/* A completion of ep, waited for as a streaming program would: san_wait (a short spin, then
 * sleep), as kernel TCP's sender sleeps in send(); a poller spinning here would take the CPU
 * from the daemons' threads on a machine with fewer cores than threads. */
static int wait_wc_sleeping(struct san_ep *ep)
{
    struct san_wc wc;
    int n;
    while (!(n = san_poll(ep, &wc, 1)))
        if ((n = san_wait(ep, -1)) < 0)
            return n;
    return n < 0 ? n : wc.status;
}

/* Round r: wait for the peer's write of r into mem[0], then write r back (b's side), or write
 * first (a's side). */
static int pingpong(struct side *s, const uint8_t *peer_desc, unsigned rounds, bool first)
{
    volatile uint8_t *flag = s->mem;
    uint8_t *out = s->mem + 64;
    for (unsigned r = 1; r <= rounds; r++) {
        if (!first)
            while (*flag != (uint8_t)r)
                sched_yield();
        out[0] = (uint8_t)r;
        struct san_sge sge = {out, 64, san_mr_lkey(s->mr)};
        int err = san_rdma_write(s->ep, r, &sge, 1, peer_desc, SAN_RDMA_DESC_SIZE, 0, 0);
        if (err || (err = wait_wc(s->ep)))
            return err;
        if (first)
            while (*flag != (uint8_t)r)
                sched_yield();
    }
    return 0;
}

static void *pong_main(void *arg)
{
    struct pong *p = arg;
    while (!atomic_load(p->go))
        sched_yield();
    return (void *)(intptr_t)pingpong(p->s, p->peer_desc, p->rounds, false);
}

struct acc {
    struct san_listener *l;
    struct san_ep *ep;
    int err;
};

static void *accept_main(void *arg)
{
    struct acc *a = arg;
    a->err = san_accept(a->l, 20000, &a->ep);
    return NULL;
}

static int open_side(struct side *s, const char *sock, size_t bytes)
{
    int err = san_open(sock, &s->ctx);
    size_t dl = sizeof(s->desc);
    if (!err)
        err = san_alloc(s->ctx, bytes, 0, (void **)&s->mem);
    if (!err)
        err = san_register_rdma(s->ctx, s->mem, bytes, SAN_MEM_READWRITE, s->desc, &dl, &s->mr);
    return err;
}

/* a's connection to b's listener, retried while the link comes up (-ENETUNREACH). */
static int connect_sides(struct side *a, struct side *b)
{
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(SAN_PORT)};
    inet_pton(AF_INET, "10.2.0.1", &sa.sin_addr);
    struct acc acc = {0};
    int err = san_listen(b->ctx, (struct sockaddr *)&sa, sizeof(sa), 4, &acc.l);
    if (err)
        return err;
    pthread_t t;
    if (pthread_create(&t, NULL, accept_main, &acc)) {
        san_listener_close(acc.l);
        return -ENOMEM;
    }
    for (int i = 0; i < 300; i++) {
        err = san_connect(a->ctx, (struct sockaddr *)&sa, sizeof(sa), 10000, &a->ep);
        if (err != -ENETUNREACH)
            break;
        usleep(50000);
    }
    if (err) /* the acceptor times out */
        fprintf(stderr, "sanperf link: connect across the link: %s\n", san_strerror(err));
    pthread_join(t, NULL);
    san_listener_close(acc.l);
    if (!err && acc.err)
        err = acc.err;
    b->ep = acc.ep;
    return err;
}

static int ours(const char *const sock[2], unsigned rounds, unsigned mib, uint64_t *one_way_ns,
                double *gb_per_s)
{
    struct side a = {0}, b = {0};
    size_t bytes = (size_t)(INFLIGHT + 1) * MIB;
    int err = open_side(&a, sock[0], bytes);
    if (!err)
        err = open_side(&b, sock[1], bytes);
    if (!err)
        err = connect_sides(&a, &b);
    if (!err) {
        _Atomic bool go = false;
        struct pong p = {.s = &b, .peer_desc = a.desc, .rounds = rounds, .go = &go};
        pthread_t t;
        if (pthread_create(&t, NULL, pong_main, &p))
            err = -ENOMEM;
        if (!err) {
            atomic_store(&go, true);
            uint64_t t0 = perf_now_ns();
            err = pingpong(&a, b.desc, rounds, true);
            *one_way_ns = (perf_now_ns() - t0) / rounds / 2;
            void *rv;
            pthread_join(t, &rv);
            if (!err)
                err = (int)(intptr_t)rv;
        }
    }
    if (!err) {
        /* Bandwidth: 1 MiB writes from a's slots into b's, INFLIGHT at a time. */
        unsigned posted = 0, done = 0;
        uint64_t t0 = perf_now_ns();
        while (!err && done < mib) {
            while (posted < mib && posted - done < INFLIGHT) {
                unsigned slot = posted % INFLIGHT;
                struct san_sge sge = {a.mem + MIB + (size_t)slot * MIB, MIB, san_mr_lkey(a.mr)};
                if ((err = san_rdma_write(a.ep, posted, &sge, 1, b.desc, SAN_RDMA_DESC_SIZE,
                                          MIB + (uint64_t)slot * MIB, 0)))
                    break;
                posted++;
            }
            if (!err && !(err = wait_wc_sleeping(a.ep)))
                done++;
            perf_progress("link: 1 MiB writes", done, mib);
        }
        *gb_per_s = (double)mib * MIB / (double)(perf_now_ns() - t0);
    }
    san_ep_close(a.ep);
    san_ep_close(b.ep);
    if (a.ctx)
        san_close(a.ctx);
    if (b.ctx)
        san_close(b.ctx);
    return err;
}

/* --- the baselines --------------------------------------------------------------------------- */

/* fi_pingpong of size bytes, iterations times: its one-way microseconds and its MB/s. */
static int fi_pingpong(const struct link_env *e, unsigned size, unsigned iterations, double *usec,
                       double *mbps, char *why, size_t whysize)
{
    char cmd[512], line[256], last[256] = "";
    if (run("command -v fi_pingpong >/dev/null 2>&1")) {
        snprintf(why, whysize, "not installed");
        return -ENOENT;
    }
    snprintf(cmd, sizeof(cmd),
             "ip netns exec %s timeout 60 fi_pingpong -p 'tcp;ofi_rxm' -e rdm -S %u -I %u "
             ">/dev/null 2>&1 & sleep 1; ip netns exec %s timeout 60 fi_pingpong -p "
             "'tcp;ofi_rxm' -e rdm -S %u -I %u %s 2>&1; wait",
             e->ns[1], size, iterations, e->ns[0], size, iterations, ips[1]);
    FILE *p = popen(cmd, "r");
    if (!p) {
        snprintf(why, whysize, "popen failed");
        return -EIO;
    }
    while (fgets(line, sizeof(line), p))
        if (line[0] >= '0' && line[0] <= '9')
            memcpy(last, line, sizeof(line));
    pclose(p);
    /* bytes #sent #ack total time MB/sec usec/xfer Mxfers/sec */
    char f[8][32];
    if (sscanf(last, "%31s %31s %31s %31s %31s %31s %31s %31s", f[0], f[1], f[2], f[3], f[4], f[5],
               f[6], f[7]) != 8) {
        snprintf(why, whysize, "no result line");
        return -EIO;
    }
    *mbps = atof(f[5]);
    *usec = atof(f[6]);
    return 0;
}

struct tcp_args {
    unsigned rounds, mib;
    int out;
};

/* Runs fn in namespace ns in a child, which writes its result to arg->out; returns the child's
 * pid with the pipe's reading end in *result_fd. */
static int in_ns(const char *ns, int (*fn)(void *), struct tcp_args *arg, int *result_fd)
{
    int p[2];
    if (pipe(p))
        return -errno;
    pid_t pid = fork();
    if (pid < 0)
        return -errno;
    if (!pid) {
        char path[128];
        snprintf(path, sizeof(path), "/var/run/netns/%s", ns);
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        close(p[0]);
        if (fd < 0 || setns(fd, CLONE_NEWNET))
            _exit(1);
        arg->out = p[1];
        _exit(fn(arg) ? 1 : 0);
    }
    close(p[1]);
    *result_fd = p[0];
    return pid;
}

static int tcp_server(void *arg)
{
    struct tcp_args *t = arg;
    int one = 1, s = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(TCP_PORT)};
    inet_pton(AF_INET, ips[1], &sa.sin_addr);
    setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (bind(s, (struct sockaddr *)&sa, sizeof(sa)) || listen(s, 2))
        return -1;
    if (write(t->out, "L", 1) != 1)
        return -1;
    int c = accept(s, NULL, NULL);
    setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    char buf[64];
    for (unsigned r = 0; r < t->rounds; r++) /* ping-pong */
        if (recv(c, buf, 64, MSG_WAITALL) != 64 || send(c, buf, 64, 0) != 64)
            return -1;
    static char big[MIB];
    uint64_t left = (uint64_t)t->mib * MIB;
    while (left) { /* the stream */
        ssize_t n = recv(c, big, left < MIB ? left : MIB, 0);
        if (n <= 0)
            return -1;
        left -= (uint64_t)n;
    }
    return send(c, "k", 1, 0) == 1 ? 0 : -1;
}

static int tcp_client(void *arg)
{
    struct tcp_args *t = arg;
    int one = 1, s = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(TCP_PORT)};
    inet_pton(AF_INET, ips[1], &sa.sin_addr);
    if (connect(s, (struct sockaddr *)&sa, sizeof(sa)))
        return -1;
    setsockopt(s, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    char buf[64] = {1};
    uint64_t t0 = perf_now_ns();
    for (unsigned r = 0; r < t->rounds; r++)
        if (send(s, buf, 64, 0) != 64 || recv(s, buf, 64, MSG_WAITALL) != 64)
            return -1;
    uint64_t lat = (perf_now_ns() - t0) / t->rounds / 2;
    static char big[MIB];
    t0 = perf_now_ns();
    for (unsigned i = 0; i < t->mib; i++)
        if (send(s, big, MIB, 0) != MIB)
            return -1;
    if (recv(s, buf, 1, 0) != 1)
        return -1;
    double gbps = (double)t->mib * MIB / (double)(perf_now_ns() - t0);
    char line[64];
    int n = snprintf(line, sizeof(line), "%llu %.6f\n", (unsigned long long)lat, gbps);
    return write(t->out, line, (size_t)n) == n ? 0 : -1;
}

/* Kernel TCP between the namespaces: 64-byte ping-pong one way, 1 MiB sends' bandwidth. */
static int tcp_baseline(const struct link_env *e, unsigned rounds, unsigned mib, uint64_t *lat,
                        double *gbps)
{
    struct tcp_args ts = {.rounds = rounds, .mib = mib}, tc = ts;
    int sfd, cfd;
    char c, line[64] = {0};
    pid_t sp = in_ns(e->ns[1], tcp_server, &ts, &sfd);
    if (sp < 0)
        return sp;
    int err = read(sfd, &c, 1) == 1 ? 0 : -EIO; /* listening */
    pid_t cp = err ? -1 : in_ns(e->ns[0], tcp_client, &tc, &cfd);
    if (cp > 0) {
        ssize_t n = read(cfd, line, sizeof(line) - 1);
        close(cfd);
        err = n > 0 && sscanf(line, "%llu %lf", (unsigned long long *)lat, gbps) == 2 ? 0 : -EIO;
        waitpid(cp, NULL, 0);
    } else {
        err = -EIO;
        kill(sp, SIGKILL);
    }
    close(sfd);
    waitpid(sp, NULL, 0);
    return err;
}

/* The median of n doubles (sorts them); 0 for none. */
static double median(double *v, size_t n)
{
    for (size_t i = 1; i < n; i++) /* insertion sort: a handful of values */
        for (size_t j = i; j > 0 && v[j - 1] > v[j]; j--) {
            double t = v[j];
            v[j] = v[j - 1];
            v[j - 1] = t;
        }
    return !n ? 0 : n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

/* The smallest and the largest of n doubles. */
static void spread(const double *v, size_t n, double *lo, double *hi)
{
    for (size_t i = 0; i < n; i++) {
        if (!i || v[i] < *lo)
            *lo = v[i];
        if (!i || v[i] > *hi)
            *hi = v[i];
    }
}

/* One figure of every rep: ours, kernel TCP's, fi_pingpong's (those that ran). */
struct link_figures {
    double ns[MAX_REPS], gbps[MAX_REPS], tcp_ns[MAX_REPS], tcp_gbps[MAX_REPS];
    double fi_ns[MAX_REPS], fi_gbps[MAX_REPS];
    size_t nr, nr_fi, nr_fi_big;
    char fi_why[64], fi_big_why[64];
};

/* One rep: ours and the baselines, in the order given (reps alternate it, so that neither side
 * always runs first on a machine whose load drifts). */
static int one_rep(const struct link_env *e, unsigned rounds, unsigned mib, bool ours_first,
                   struct link_figures *f)
{
    const char *socks[2] = {e->sock[0], e->sock[1]};
    uint64_t ns = 0, tcp_ns = 0;
    double gbps = 0, tcp_gbps = 0, usec = 0, mbps = 0, big_usec = 0, big_mbps = 0;
    int err = 0;
    for (int step = 0; step < 2 && !err; step++) {
        if ((step == 0) == ours_first) {
            if ((err = ours(socks, rounds, mib, &ns, &gbps)))
                fprintf(stderr, "sanperf link: across the link: %s\n", san_strerror(err));
            continue;
        }
        if ((err = tcp_baseline(e, rounds, mib, &tcp_ns, &tcp_gbps))) {
            fprintf(stderr, "sanperf link: kernel TCP between the namespaces failed\n");
            break;
        }
        if (!fi_pingpong(e, 64, rounds, &usec, &mbps, f->fi_why, sizeof(f->fi_why)))
            f->fi_ns[f->nr_fi++] = usec * 1000;
        if (!fi_pingpong(e, MIB, mib, &big_usec, &big_mbps, f->fi_big_why, sizeof(f->fi_big_why)))
            f->fi_gbps[f->nr_fi_big++] = big_mbps / 1000; /* fi_pingpong's MB are 1e6 bytes */
    }
    if (err)
        return err;
    f->ns[f->nr] = (double)ns;
    f->gbps[f->nr] = gbps;
    f->tcp_ns[f->nr] = (double)tcp_ns;
    f->tcp_gbps[f->nr++] = tcp_gbps;
    return 0;
}

int perf_link(const struct perf_opts *o)
{
    unsigned rounds = 2000, mib = 1024, tag = 0, reps = 3;
    for (int i = 0; i + 1 < o->argc; i++) {
        if (!strcmp(o->argv[i], "--rounds"))
            rounds = (unsigned)strtoul(o->argv[++i], NULL, 10);
        else if (!strcmp(o->argv[i], "--mib"))
            mib = (unsigned)strtoul(o->argv[++i], NULL, 10);
        else if (!strcmp(o->argv[i], "--tag"))
            tag = (unsigned)strtoul(o->argv[++i], NULL, 10);
        else if (!strcmp(o->argv[i], "--reps"))
            reps = (unsigned)strtoul(o->argv[++i], NULL, 10);
    }
    if (geteuid()) {
        fprintf(stderr, "sanperf link: needs root (it makes two network namespaces)\n");
        return 1;
    }
    struct link_env e = {0};
    int err = setup(&e, tag);
    if (err) {
        fprintf(stderr, "sanperf link: setting up the namespaces and daemons failed\n");
        teardown(&e);
        return 1;
    }
    struct link_figures f = {.fi_why = "ok", .fi_big_why = "ok"};
    for (unsigned r = 0; r < reps && !err; r++) {
        err = one_rep(&e, rounds, mib, r % 2 == 0, &f);
        perf_progress("link: reps", r + 1, reps);
    }
    teardown(&e);
    if (err)
        return 1;
    /* Each figure is the median of its reps; the ratios are of the medians. A baseline that
     * never ran (fi_pingpong missing) is 0 with its ratio. */
    double lo_ns = 0, hi_ns = 0, lo_gbps = 0, hi_gbps = 0;
    spread(f.ns, f.nr, &lo_ns, &hi_ns);
    spread(f.gbps, f.nr, &lo_gbps, &hi_gbps);
    double ns = median(f.ns, f.nr), gbps = median(f.gbps, f.nr);
    double tcp_ns = median(f.tcp_ns, f.nr), tcp_gbps = median(f.tcp_gbps, f.nr);
    double fi_ns = median(f.fi_ns, f.nr_fi), fi_gbps = median(f.fi_gbps, f.nr_fi_big);
    double lat_ratio = fi_ns > 0 ? ns / fi_ns : 0, tcp_lat_ratio = tcp_ns > 0 ? ns / tcp_ns : 0;
    double bw_ratio = tcp_gbps > 0 ? gbps / tcp_gbps : 0,
           fi_bw_ratio = fi_gbps > 0 ? gbps / fi_gbps : 0;
    if (o->json) {
        perf_json("\"suite\": \"link\", \"case\": \"rdma_lat_64b\", \"rounds\": %u, \"reps\": %zu, "
                  "\"one_way_ns\": %.0f, \"one_way_ns_min\": %.0f, \"one_way_ns_max\": %.0f, "
                  "\"baseline\": \"fi_pingpong_rdm_64b\", \"baseline_one_way_ns\": %.0f, "
                  "\"ratio\": %.3f, \"better\": \"lower\", \"fi_pingpong\": \"%s\", "
                  "\"tcp_one_way_ns\": %.0f, \"tcp_ratio\": %.3f",
                  rounds, f.nr, ns, lo_ns, hi_ns, fi_ns, lat_ratio, f.fi_why, tcp_ns,
                  tcp_lat_ratio);
        perf_json("\"suite\": \"link\", \"case\": \"rdma_write_1m\", \"mib\": %u, \"reps\": %zu, "
                  "\"inflight\": %d, \"gb_per_s\": %.3f, \"gb_per_s_min\": %.3f, "
                  "\"gb_per_s_max\": %.3f, \"baseline\": \"tcp_netns_1m\", "
                  "\"baseline_gb_per_s\": %.3f, \"ratio\": %.3f, \"better\": \"higher\", "
                  "\"fi_pingpong\": \"%s\", \"fi_gb_per_s\": %.3f, \"fi_ratio\": %.3f",
                  mib, f.nr, INFLIGHT, gbps, lo_gbps, hi_gbps, tcp_gbps, bw_ratio, f.fi_big_why,
                  fi_gbps, fi_bw_ratio);
    } else {
        /* fi_pingpong's part: its figure, or why there is none. */
        char fi[96], fi_big[96];
        if (fi_ns > 0)
            snprintf(fi, sizeof(fi), "%.0f ns (ratio %.2f)", fi_ns, lat_ratio);
        else
            snprintf(fi, sizeof(fi), "none (%s)", f.fi_why);
        if (fi_gbps > 0)
            snprintf(fi_big, sizeof(fi_big), "%.3f GB/s (ratio %.2f)", fi_gbps, fi_bw_ratio);
        else
            snprintf(fi_big, sizeof(fi_big), "none (%s)", f.fi_big_why);
        printf("link rdma_lat_64b (median of %zu): one way %.0f ns (%.0f-%.0f); fi_pingpong RDM "
               "%s; kernel TCP %.0f ns (ratio %.2f)\n",
               f.nr, ns, lo_ns, hi_ns, fi, tcp_ns, tcp_lat_ratio);
        printf("link rdma_write_1m (median of %zu): %.3f GB/s (%.3f-%.3f); kernel TCP %.3f GB/s "
               "(ratio %.2f); fi_pingpong 1 MiB %s\n",
               f.nr, gbps, lo_gbps, hi_gbps, tcp_gbps, bw_ratio, fi_big);
    }
    return 0;
}
