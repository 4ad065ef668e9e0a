/* Integration-test harness: starts the real sanproxyd (from $SAN_BIN) on a private socket in a
 * temporary directory, waits for its readiness line (--ready-fd, no sleeps), and makes sure it
 * never outlives the test: the daemon gets PR_SET_PDEATHSIG, CHECK failures stop it before exiting,
 * and fatal signals in the test stop it too. Also raw protocol helpers (stats, one request) so
 * tests can look at the daemon without libsan. Header-only: each test is one program. */
#ifndef SAN_TEST_HARNESS_H
#define SAN_TEST_HARNESS_H

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <san/san.h>

#include "proto/proto.h"

#include "../vmlck.h"

/* How much slower this build runs than the plain one, for the tests' upper bounds on times: a
 * bound is set for the plain build (where it is the witness of what the test checks) and scaled by
 * this. Under the sanitizers (ASan+UBSan about 2-3x, TSan 4-8x as measured by test_sock_connect's
 * accept, more on a loaded machine) only a gross regression shows. */
#ifdef SAN_UNDER_SANITIZER
#define TEST_SLOWDOWN 10
#else
#define TEST_SLOWDOWN 1
#endif

struct test_daemon {
    pid_t pid;
    char dir[128];
    char sock[160];
    char log[160];
};

static struct test_daemon *test_current;
static pid_t test_main_pid;

static inline void test_daemon_kill(void)
{
    if (test_current && test_current->pid > 0 && getpid() == test_main_pid) {
        kill(test_current->pid, SIGKILL);
        waitpid(test_current->pid, NULL, 0);
        test_current->pid = 0;
    }
}

static inline void test_dump_log(void)
{
    if (!test_current || !test_current->log[0])
        return;
    FILE *f = fopen(test_current->log, "r");
    if (!f)
        return;
    static char lines[40][256];
    int n = 0;
    while (fgets(lines[n % 40], sizeof(lines[0]), f))
        n++;
    fclose(f);
    fprintf(stderr, "--- daemon log (last lines) ---\n");
    for (int i = n > 40 ? n - 40 : 0; i < n; i++)
        fputs(lines[i % 40], stderr);
}

__attribute__((format(printf, 3, 4), noreturn)) static inline void
test_fail(const char *file, int line, const char *fmt, ...)
{
    va_list ap;
    fprintf(stderr, "FAIL %s:%d: ", file, line);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    if (getpid() == test_main_pid) {
        /* What the test printed so far is the failure's context: _exit would drop what stdout
         * still buffers (all of it when stdout is CTest's pipe). A forked child's copy of the
         * buffer is the parent's, not its own: only the test's main process writes it. */
        fflush(stdout);
        test_dump_log();
        test_daemon_kill();
    }
    _exit(1);
}

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond))                                                                               \
            test_fail(__FILE__, __LINE__, "%s", #cond);                                            \
    } while (0)
/* The name of a negative errno, or "" for any other value (a count, a key). */
static inline const char *test_errname(long long v)
{
    return v < 0 && v > -4096 ? san_strerror((int)v) : "";
}
/* An int expression that must equal an expected value (errors are negative errno). */
#define CHECK_EQ(expr, want)                                                                       \
    do {                                                                                           \
        long long got_ = (long long)(expr), want_ = (long long)(want);                             \
        if (got_ != want_)                                                                         \
            test_fail(__FILE__, __LINE__, "%s == %lld %s, want %lld %s", #expr, got_,              \
                      test_errname(got_), want_, test_errname(want_));                             \
    } while (0)

static inline void test_on_signal(int sig)
{
    test_daemon_kill();
    signal(sig, SIG_DFL);
    raise(sig);
}

/* What the code under test reads from the environment, set here so that a developer's own
 * settings (CTest unsets them too) neither weaken nor break a test run by hand: libsan's cache off
 * (these tests check the daemon call by call; the cache's own tests turn it on after test_init),
 * default polling and logging, no socket but the one test_daemon_start sets. */
static inline void test_environment(void)
{
    setenv("SAN_RCACHE_MAX_ENTRIES", "0", 1);
    unsetenv("SAN_RCACHE_MAX_BYTES");
    unsetenv("SANPROXY_SPIN_US");
    unsetenv("SANPROXY_LOG");
    unsetenv("SANPROXY_SOCKET");
    unsetenv("SANPROXY_TEST_PASS_RIGHTS");
}

static inline void test_init(void)
{
    test_environment();
    test_main_pid = getpid();
    signal(SIGABRT, test_on_signal);
    signal(SIGSEGV, test_on_signal);
    signal(SIGBUS, test_on_signal);
    signal(SIGINT, test_on_signal);
    signal(SIGTERM, test_on_signal);
    signal(SIGALRM, test_on_signal);
    atexit(test_daemon_kill);
    alarm(300); /* a hung test fails instead of hanging CI */
}

/* Starts sanproxyd with the given config text (NULL: no config file) and extra arguments. */
static inline void test_daemon_start_args(struct test_daemon *d, const char *config,
                                          const char *extra)
{
    const char *bin = getenv("SAN_BIN");
    char exe[512], conf[200], fdbuf[16];
    int p[2];

    memset(d, 0, sizeof(*d));
    test_current = d;
    CHECK(bin);
    snprintf(exe, sizeof(exe), "%s/sanproxyd", bin);
    strcpy(d->dir, "/tmp/santest.XXXXXX");
    CHECK(mkdtemp(d->dir));
    snprintf(d->sock, sizeof(d->sock), "%s/sock", d->dir);
    snprintf(d->log, sizeof(d->log), "%s/log", d->dir);
    snprintf(conf, sizeof(conf), "%s/sanproxyd.ini", d->dir);
    if (config) {
        FILE *f = fopen(conf, "w");
        CHECK(f);
        fputs(config, f);
        fclose(f);
    }
    CHECK(!pipe(p));
    d->pid = fork();
    CHECK(d->pid >= 0);
    if (d->pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != test_main_pid)
            _exit(127);
        close(p[0]);
        int log = open(d->log, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (log >= 0)
            dup2(log, 2);
        snprintf(fdbuf, sizeof(fdbuf), "%d", p[1]);
        const char *argv[12] = {exe, "--foreground", "--socket", d->sock, "--ready-fd", fdbuf};
        int n = 6;
        if (config) {
            argv[n++] = "--config";
            argv[n++] = conf;
        }
        if (extra)
            argv[n++] = extra;
        argv[n] = NULL;
        execv(exe, (char **)argv);
        _exit(127);
    }
    close(p[1]);
    char buf[16] = {0};
    ssize_t n, more;
    do
        n = read(p[0], buf, sizeof(buf) - 1);
    while (n < 0 && errno == EINTR);
    /* Then the end of the pipe: the daemon has closed its end, so its descriptors are settled. */
    char rest[16];
    do
        more = read(p[0], rest, sizeof(rest));
    while (more > 0 || (more < 0 && errno == EINTR));
    close(p[0]);
    if (n <= 0 || strncmp(buf, "ready", 5)) {
        int st;
        waitpid(d->pid, &st, 0);
        d->pid = 0;
        test_fail(__FILE__, __LINE__, "sanproxyd did not become ready (status %d)", st);
    }
    setenv("SANPROXY_SOCKET", d->sock, 1);
}

static inline void test_daemon_start(struct test_daemon *d, const char *config)
{
    test_daemon_start_args(d, config, NULL);
}

/* SIGTERM, wait, and return the exit status (or 128 + signal). Removes the directory. */
static inline int test_daemon_stop(struct test_daemon *d)
{
    int st = 0;
    CHECK(d->pid > 0);
    kill(d->pid, SIGTERM);
    CHECK(waitpid(d->pid, &st, 0) == d->pid);
    d->pid = 0;
    char cmd[300];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", d->dir);
    if (system(cmd)) {
    }
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

/* A raw connection to the daemon (for protocol-level tests). */
static inline int test_connect(const struct test_daemon *d)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    strcpy(sa.sun_path, d->sock);
    int fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
    CHECK(fd >= 0);
    CHECK(!connect(fd, (struct sockaddr *)&sa, sizeof(sa)));
    return fd;
}

/* One raw request: fills the header, sends, receives the reply. Returns its status. The
 * descriptor that came with the reply goes to *got (-1: none); got NULL: it is closed. */
static inline int test_call_fd(int fd, struct san_msg *req, struct san_msg *rep, int *got)
{
    size_t len;
    int err;
    req->hdr.id = (uint64_t)rand() + 1;
    CHECK_EQ(san_proto_send(fd, req, -1, 0), 0);
    CHECK_EQ(san_proto_recv(fd, rep, &len, got, 0), 0);
    CHECK(san_proto_decode(rep, len, true, &err) == SAN_DECODE_OK);
    CHECK(rep->hdr.id == req->hdr.id);
    return rep->hdr.status;
}

static inline int test_call(int fd, struct san_msg *req, struct san_msg *rep)
{
    return test_call_fd(fd, req, rep, NULL);
}

static inline void test_stats(const struct test_daemon *d, struct san_stats_rep *s)
{
    struct san_msg req, rep;
    int fd = test_connect(d);
    san_proto_init(&req, SAN_OP_STATS, 0);
    CHECK_EQ(test_call(fd, &req, &rep), 0);
    *s = rep.u.stats_rep;
    close(fd);
}

/* Whether the daemon is back at its idle figures (idle taken right after start). */
static inline bool test_is_idle(const struct san_stats_rep *s, const struct san_stats_rep *idle)
{
    return s->clients == 1 && !s->allocations && !s->allocated_bytes && !s->registrations &&
           s->locked_bytes == idle->locked_bytes && s->free_bytes == idle->free_bytes &&
           s->low_free_bytes == idle->low_free_bytes;
}

/* Polls the stats until idle (the daemon handles a hang-up on its own schedule), up to 10 s. */
static inline void test_wait_idle(const struct test_daemon *d, const struct san_stats_rep *idle)
{
    struct san_stats_rep s;
    for (int i = 0; i < 10000; i++) {
        test_stats(d, &s);
        if (test_is_idle(&s, idle))
            return;
        struct timespec ts = {0, 1000000};
        nanosleep(&ts, NULL);
    }
    test_fail(__FILE__, __LINE__,
              "not idle: clients %" PRIu64 " allocations %" PRIu64 " registrations %" PRIu64
              " locked %" PRIu64 " free %" PRIu64 " (idle %" PRIu64 ")",
              s.clients, s.allocations, s.registrations, s.locked_bytes, s.free_bytes,
              idle->free_bytes);
}

#endif
