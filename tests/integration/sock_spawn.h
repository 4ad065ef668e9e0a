/* Starting the sockets switch's test programs (tests/sock/) from an integration test: each runs
 * with its stdout on a pipe the test reads, and dies with the test. */
#ifndef SAN_TEST_SOCK_SPAWN_H
#define SAN_TEST_SOCK_SPAWN_H

#include "harness.h"

/* Set while starting programs that exit with SAN connections open, or closed and still being
 * finished by their finisher thread: that state is named only from the switch's descriptor table
 * (mmap'd memory, which LeakSanitizer does not scan), so LeakSanitizer would call it a leak and
 * abort the program at exit. spawn then starts them without that exit check (nothing changes
 * without sanitizers). */
static bool spawn_unscanned_exit;

/* Starts argv with stdout on a pipe (*out); env_socket: SANPROXY_SOCKET for the child. */
static pid_t spawn(char *const argv[], const char *env_socket, FILE **out)
{
    int p[2];
    CHECK(!pipe(p));
    pid_t pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL); /* a failing test leaves no server behind */
        dup2(p[1], 1);
        close(p[0]);
        close(p[1]);
        if (env_socket)
            setenv("SANPROXY_SOCKET", env_socket, 1);
        if (spawn_unscanned_exit)
            setenv("ASAN_OPTIONS", "detect_leaks=0:abort_on_error=1", 1);
        execv(argv[0], argv);
        _exit(127);
    }
    close(p[1]);
    *out = fdopen(p[0], "r");
    CHECK(*out);
    return pid;
}

/* The exit status of pid (128 + the signal if one ended it). */
static int wait_exit(pid_t pid)
{
    int st;
    CHECK(waitpid(pid, &st, 0) == pid);
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

/* The next line of out into line, which must start with want (who names the program). */
static inline void expect_line(FILE *out, const char *who, const char *want, char *line, size_t len)
{
    if (!fgets(line, (int)len, out))
        line[0] = '\0';
    if (strncmp(line, want, strlen(want)))
        test_fail(__FILE__, __LINE__, "%s: '%s', want '%s...'", who, line, want);
}

/* The daemon's NIC counters: bytes moved and operations run, by every endpoint. */
static inline uint64_t nic_bytes(const struct test_daemon *d)
{
    struct san_stats_rep s;
    test_stats(d, &s);
    return s.nic_bytes;
}

static inline uint64_t nic_ops(const struct test_daemon *d)
{
    struct san_stats_rep s;
    test_stats(d, &s);
    return s.nic_ops;
}

/* The most the SAN can have carried, ever: the NIC's bytes, and 512 KiB for each of its
 * operations. On one host a reader maps the writer's staging (docs/sock.md), and the NIC then
 * moves an offer and a DONE, two operations, for each transfer of at most 1 MiB, but none of its
 * bytes. A stream that went over TCP instead grows neither. */
static inline uint64_t san_carried(const struct test_daemon *d)
{
    struct san_stats_rep s;
    test_stats(d, &s);
    return s.nic_bytes + s.nic_ops * (512u << 10);
}

/* The daemon's figures for the client of process pid: open endpoints (not closing) and bytes of
 * proxy memory allocated. */
static inline void client_usage(const struct test_daemon *d, pid_t pid, uint64_t *eps,
                                uint64_t *bytes)
{
    int fd = test_connect(d);
    struct san_msg req, rep;
    *eps = *bytes = 0;
    uint64_t cursor = 0;
    do {
        san_proto_init(&req, SAN_OP_ENDPOINTS, 0);
        req.u.list_req.cursor = cursor;
        CHECK_EQ(test_call(fd, &req, &rep), 0);
        for (uint32_t i = 0; i < rep.u.endpoints_rep.nr; i++)
            *eps += rep.u.endpoints_rep.e[i].pid == pid &&
                    rep.u.endpoints_rep.e[i].state != SAN_WIRE_EP_CLOSING;
        cursor = rep.u.endpoints_rep.next;
    } while (cursor);
    do {
        san_proto_init(&req, SAN_OP_CLIENTS, 0);
        req.u.list_req.cursor = cursor;
        CHECK_EQ(test_call(fd, &req, &rep), 0);
        for (uint32_t i = 0; i < rep.u.clients_rep.nr; i++)
            if (rep.u.clients_rep.c[i].pid == pid)
                *bytes += rep.u.clients_rep.c[i].allocated_bytes;
        cursor = rep.u.clients_rep.next;
    } while (cursor);
    close(fd);
}

#endif
