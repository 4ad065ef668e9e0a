/* epoll, ppoll and pselect in the sockets switch against the real daemon: tests/sock/sock_epoll
 * under sanrun, its peer a separate process, every step over the SAN (each of its three accepted
 * connections is a SAN socket, and the daemon's nic_bytes grows by at least the bytes its peer
 * wrote). The steps (sock_epoll.c): listener readiness, a pipe in the same set, level- and
 * edge-triggered, EPOLLONESHOT, EPOLLOUT, a dup of the epoll descriptor, the kernel's errors, two
 * threads on one epoll descriptor, a member added while a thread waits, a closed member leaving the
 * set, signal masks (ppoll, pselect, epoll_pwait, epoll_pwait2), fork, EOF with EPOLLRDHUP, a
 * reset. */
#include "harness.h"
#include "sock_spawn.h"

int main(void)
{
    test_init();
    const char *bin = getenv("SAN_BIN"), *build = getenv("SAN_BUILD");
    CHECK(bin && build);
    char sanrun[512], prog[512];
    snprintf(sanrun, sizeof(sanrun), "%s/sanrun", bin);
    snprintf(prog, sizeof(prog), "%s/tests/sock_epoll", build);
    struct test_daemon d;
    test_daemon_start(&d, NULL);
    struct san_stats_rep before, after;
    test_stats(&d, &before);

    char *argv[] = {sanrun, prog, NULL};
    FILE *out;
    pid_t pid = spawn(argv, d.sock, &out);
    char line[256], last[256] = "";
    while (fgets(line, sizeof(line), out)) {
        fputs(line, stdout);
        snprintf(last, sizeof(last), "%s", line);
    }
    fclose(out);
    CHECK_EQ(wait_exit(pid), 0);
    if (strcmp(last, "ok san=3\n"))
        test_fail(__FILE__, __LINE__, "sock_epoll ended with '%s', want 'ok san=3'", last);
    test_stats(&d, &after);
    /* The peer wrote 1000 bytes eight times and 10 twice, all over the SAN. */
    if (after.nic_bytes - before.nic_bytes < 8020)
        test_fail(__FILE__, __LINE__, "nic_bytes grew by %" PRIu64 " only",
                  after.nic_bytes - before.nic_bytes);
    printf("sock epoll: ok, nic_bytes +%" PRIu64 "\n", after.nic_bytes - before.nic_bytes);
    CHECK_EQ(test_daemon_stop(&d), 0);
    return 0;
}
