/* IRP_MJ_CLEANUP: a client killed with SIGKILL while holding allocations and registrations leaves
 * the daemon at its idle figures; so does one that exits without san_close, and one whose process
 * dies while a forked child (with no death signal: it outlives the client) still holds its socket
 * open: the daemon learns of the death through the pidfd and releases everything at once, while the
 * socket is still open. The low memory every client wrote is scrubbed when it goes back. */
#include "harness.h"

#include <poll.h>
#include <sys/mman.h>
#include <sys/stat.h>

#define LOW_LEN (64 << 10)

/* The one socket among this process's descriptors (libsan's connection), or -1. */
static int find_socket(void)
{
    struct stat st;
    int found = -1;
    for (int fd = 3; fd < 1024; fd++)
        if (!fstat(fd, &st) && S_ISSOCK(st.st_mode))
            found = found < 0 ? fd : -2;
    return found;
}

/* The socket holder: a child of the client that keeps the client's socket open after the client is
 * gone (no death signal). It waits for the test (hold_fd; end of file: the test died, so go) and
 * then reports through its exit status whether the daemon had closed the other end: 0 yes. */
static void socket_holder(int hold_fd)
{
    int s = find_socket();
    char c;
    if (s < 0)
        _exit(3);
    if (read(hold_fd, &c, 1) != 1)
        _exit(4);
    struct pollfd p = {.fd = s, .events = POLLIN};
    if (poll(&p, 1, 0) != 1 || !(p.revents & (POLLHUP | POLLIN)))
        _exit(5);
    char buf[64];
    ssize_t n = recv(s, buf, sizeof(buf), MSG_DONTWAIT);
    _exit(n == 0 || (n < 0 && errno == ECONNRESET) ? 0 : 6);
}

/* In a child: opens a context, takes memory of every kind (writing its proxy memory, low memory
 * included), tells the parent, optionally forks a socket holder, then waits to be killed (or exits
 * when exit_now). */
static void holder(int ready_fd, int go_fd, int hold_fd, bool fork_holder, bool exit_now)
{
    struct san_ctx *ctx;
    void *p, *low;
    struct san_mr *mr, *rmr;
    unsigned char desc[SAN_RDMA_DESC_SIZE];
    size_t dlen = sizeof(desc);
    size_t len = 1 << 20;
    san_paddr_t pa;
    char *buf = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

    if (buf == MAP_FAILED || san_open(NULL, &ctx) || san_alloc(ctx, 1 << 20, 0, &p) ||
        san_alloc(ctx, LOW_LEN, SAN_ALLOC_LOW, &low) ||
        san_register(ctx, buf, len, SAN_MEM_READWRITE, &mr) ||
        san_register_rdma(ctx, p, 1 << 20, SAN_MEM_READ, desc, &dlen, &rmr) ||
        san_register(ctx, buf, len, SAN_MEM_READWRITE, &mr))
        _exit(2);
    memset(p, 7, 1 << 20);
    /* Low frames of a NOLOWMEM machine, dirtied: cleanup must scrub them. */
    if (san_physical_address(ctx, low, &pa) || pa + LOW_LEN > (UINT64_C(1) << 32))
        _exit(5);
    memset(low, 0xa5, LOW_LEN);
    pid_t socket_holder_pid = 0;
    if (fork_holder && (socket_holder_pid = fork()) == 0)
        socket_holder(hold_fd);
    if (write(ready_fd, &socket_holder_pid, sizeof(socket_holder_pid)) != sizeof(socket_holder_pid))
        _exit(3);
    if (exit_now) {
        char c;
        if (read(go_fd, &c, 1) < 0) /* the parent has looked at the stats */
            _exit(4);
        _exit(0);
    }
    for (;;)
        pause();
}

static void run(const struct test_daemon *d, const struct san_stats_rep *idle, bool fork_holder,
                bool exit_now)
{
    int p[2], go[2], hold[2];
    struct san_stats_rep s;

    CHECK(!pipe(p) && !pipe(go) && !pipe(hold));
    pid_t pid = fork();
    CHECK(pid >= 0);
    if (!pid) {
        prctl(PR_SET_PDEATHSIG, SIGKILL); /* a failing test does not leave it waiting */
        close(p[0]);
        close(go[1]);
        close(hold[1]);
        holder(p[1], go[0], hold[0], fork_holder, exit_now);
    }
    close(p[1]);
    close(go[0]);
    close(hold[0]);
    pid_t socket_holder;
    CHECK(read(p[0], &socket_holder, sizeof(socket_holder)) == sizeof(socket_holder));
    close(p[0]);
    test_stats(d, &s);
    CHECK(s.allocations == 2 && s.registrations == 2);
    CHECK(s.allocated_bytes == (1 << 20) + LOW_LEN);
    CHECK(s.locked_bytes == idle->locked_bytes + (1 << 20)); /* buf; proxy memory is not locked */
    if (!exit_now)
        kill(pid, SIGKILL);
    close(go[1]);
    int st;
    CHECK(waitpid(pid, &st, 0) == pid);
    CHECK(exit_now ? WIFEXITED(st) && !WEXITSTATUS(st) : WIFSIGNALED(st));
    /* Everything goes, even while the socket holder (if any) keeps the socket open, and at once:
     * the client's pidfd became readable before waitpid returned, so the daemon handles that
     * event before our next connection's, and the first request after the death must find the
     * client released (not later, by the daemon's periodic sweep of its clients). */
    if (socket_holder > 0) {
        test_stats(d, &s);
        if (!test_is_idle(&s, idle))
            test_fail(__FILE__, __LINE__,
                      "not released at once: clients %" PRIu64 " allocations %" PRIu64
                      " registrations %" PRIu64,
                      s.clients, s.allocations, s.registrations);
    }
    test_wait_idle(d, idle);
    test_stats(d, &s);
    CHECK(s.clients == 1);
    if (socket_holder > 0) {
        /* We are its subreaper. It must still live, holding the socket, and find it closed by the
         * daemon. */
        CHECK_EQ(waitpid(socket_holder, &st, WNOHANG), 0);
        CHECK(write(hold[1], "x", 1) == 1);
        CHECK(waitpid(socket_holder, &st, 0) == socket_holder);
        CHECK(WIFEXITED(st));
        CHECK_EQ(WEXITSTATUS(st), 0);
    }
    close(hold[1]);
}

int main(void)
{
    struct test_daemon d;
    struct san_stats_rep idle;

    test_init();
    prctl(PR_SET_CHILD_SUBREAPER, 1);
    test_daemon_start(&d, "[machine]\nram_size = 6G\nnolowmem = true\n");
    test_stats(&d, &idle);
    for (int i = 0; i < 5; i++)
        run(&d, &idle, false, false);
    run(&d, &idle, false, true);
    run(&d, &idle, true, false);
    run(&d, &idle, true, true);
    /* Low memory that the clients wrote was scrubbed when it was released. */
    int fd = test_connect(&d);
    struct san_msg req, rep;
    san_proto_init(&req, SAN_OP_CHECK_LOWMEM, 0);
    CHECK_EQ(test_call(fd, &req, &rep), 0);
    CHECK(rep.u.lowmem_rep.dirty_frames == 0);
    close(fd);
    CHECK_EQ(test_daemon_stop(&d), 0);
    printf("ok\n");
    return 0;
}
