/* IRP_MJ_CLEANUP: a client killed with SIGKILL while holding allocations and registrations leaves
 * the daemon at its idle figures; so does one that exits without san_close, and one whose process
 * dies while a forked child still holds its socket open (the daemon watches the pidfd). */
#include "harness.h"

#include <sys/mman.h>

/* In a child: opens a context, takes memory of every kind, tells the parent, optionally forks a
 * socket holder, then waits to be killed (or exits when exit_now). */
static void holder(int ready_fd, int go_fd, bool fork_holder, bool exit_now)
{
    struct san_ctx *ctx;
    void *p, *low;
    struct san_mr *mr, *rmr;
    unsigned char desc[SAN_RDMA_DESC_SIZE];
    size_t dlen = sizeof(desc);
    size_t len = 1 << 20;
    char *buf = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

    if (buf == MAP_FAILED || san_open(NULL, &ctx) || san_alloc(ctx, 1 << 20, 0, &p) ||
        san_alloc(ctx, 64 << 10, SAN_ALLOC_LOW, &low) ||
        san_register(ctx, buf, len, SAN_MEM_READWRITE, &mr) ||
        san_register_rdma(ctx, p, 1 << 20, SAN_MEM_READ, desc, &dlen, &rmr) ||
        san_register(ctx, buf, len, SAN_MEM_READWRITE, &mr))
        _exit(2);
    memset(p, 7, 1 << 20);
    pid_t self = getpid(), socket_holder = 0;
    if (fork_holder && (socket_holder = fork()) == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != self) /* the parent died before the death signal was armed */
            _exit(0);
        pause(); /* keeps the socket open after the parent dies */
        _exit(0);
    }
    if (write(ready_fd, &socket_holder, sizeof(socket_holder)) != sizeof(socket_holder))
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
    int p[2], go[2];
    struct san_stats_rep s;

    CHECK(!pipe(p) && !pipe(go));
    pid_t pid = fork();
    CHECK(pid >= 0);
    if (!pid) {
        close(p[0]);
        close(go[1]);
        holder(p[1], go[0], fork_holder, exit_now);
    }
    close(p[1]);
    close(go[0]);
    pid_t socket_holder;
    CHECK(read(p[0], &socket_holder, sizeof(socket_holder)) == sizeof(socket_holder));
    close(p[0]);
    test_stats(d, &s);
    CHECK(s.allocations == 2 && s.registrations == 2);
    CHECK(s.allocated_bytes == (1 << 20) + (64 << 10));
    CHECK(s.locked_bytes == idle->locked_bytes + (2 << 20));
    if (!exit_now)
        kill(pid, SIGKILL);
    close(go[1]);
    int st;
    CHECK(waitpid(pid, &st, 0) == pid);
    CHECK(exit_now ? WIFEXITED(st) && !WEXITSTATUS(st) : WIFSIGNALED(st));
    test_wait_idle(d, idle);
    test_stats(d, &s);
    /* The forked holder (if any) still has the socket; the client itself is gone. */
    CHECK(s.clients == 1);
    if (socket_holder > 0) /* we are its subreaper: it dies with its parent, we reap it */
        CHECK(waitpid(socket_holder, &st, 0) == socket_holder);
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
    /* Low memory that the killed clients wrote was scrubbed when it was released. */
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
