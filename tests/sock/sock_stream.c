/* A one-way stream between two processes, with plain socket calls only (no libsan): the program
 * the RDMA-mode tests of the sockets switch run under sanrun.
 *
 *   sock_stream SIZE COUNT READ [PACE_US [FLAGS]]
 *
 * forks before any socket call (the child gets its own libsan context when it makes one). The
 * child listens on 127.0.0.1 port 0 (the port goes to the parent through a pipe), accepts one
 * connection and reads it to EOF with recv of READ bytes at a time; before every third recv it
 * peeks (MSG_PEEK) at up to 17 bytes, twice, and checks the same bytes come back, not consumed.
 * Every byte is checked against the pattern at its stream offset. It then writes back the number
 * of bytes it read. The parent connects, sends COUNT blocking writes of SIZE bytes (each one
 * call, checked to be complete), shuts down its side and reads the count back.
 * Prints "ok TOTAL" and exits 0 when the count is SIZE * COUNT and every byte was right.
 * PACE_US: the writer sleeps that long before each write, so that the reader waits in its recv
 * first (the switch's write mode: the receiver's buffer is offered before the data comes).
 * FLAGS: 'w' reads with MSG_WAITALL (every recv but the last returns READ bytes, checked), 'n'
 * makes no peeks, 's' paces by the reader: the writer's pause before write k > 0 starts once the
 * reader has read and checked the k writes before it (it says so on a pipe), so that the pause
 * covers only the reader's way back into its recv, not its checks, however slow the machine. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static uint8_t byte_at(uint64_t i)
{
    uint64_t x = (i + 1) * 0x9e3779b97f4a7c15ull;
    return (uint8_t)(x >> 56);
}

static void die(const char *what)
{
    fprintf(stderr, "sock_stream: %s: %s\n", what, strerror(errno));
    exit(1);
}

static bool pattern_ok(const uint8_t *p, size_t n, uint64_t at)
{
    for (size_t i = 0; i < n; i++)
        if (p[i] != byte_at(at + i)) {
            fprintf(stderr, "sock_stream: byte %llu is %u, want %u\n", (unsigned long long)(at + i),
                    p[i], byte_at(at + i));
            return false;
        }
    return true;
}

static bool waitall, nopeek;
static int sync_fd[2] = {-1, -1}; /* 's': the reader's word per write read, to the writer */

/* 's': one byte to the writer for every whole write of size bytes that total now covers. */
static void tell_writer(uint64_t total, size_t size, uint64_t *told)
{
    for (; sync_fd[1] >= 0 && size && total >= (*told + 1) * size; ++*told)
        if (write(sync_fd[1], "r", 1) != 1)
            die("sync pipe");
}

static int reader(int wfd, size_t rd, size_t size)
{
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t sl = sizeof(sa);
    int l = socket(AF_INET, SOCK_STREAM, 0);
    if (l < 0 || bind(l, (struct sockaddr *)&sa, sizeof(sa)) || listen(l, 1) ||
        getsockname(l, (struct sockaddr *)&sa, &sl))
        die("listen");
    uint16_t port = ntohs(sa.sin_port);
    if (write(wfd, &port, sizeof(port)) != sizeof(port))
        die("pipe");
    close(wfd);
    int c = accept(l, NULL, NULL);
    if (c < 0)
        die("accept");
    uint8_t *buf = malloc(rd), peek[2][17];
    if (!buf)
        die("malloc");
    uint64_t total = 0, told = 0;
    for (unsigned round = 0;; round++) {
        if (round % 3 == 0 && !nopeek) {
            ssize_t a = recv(c, peek[0], sizeof(peek[0]), MSG_PEEK);
            ssize_t b = recv(c, peek[1], sizeof(peek[1]), MSG_PEEK);
            if (a < 0 || b < 0)
                die("recv MSG_PEEK");
            /* The second peek may see more (bytes arrived), never other bytes. */
            size_t n = (size_t)(a < b ? a : b);
            if (a > b || memcmp(peek[0], peek[1], n) || !pattern_ok(peek[1], (size_t)b, total)) {
                fprintf(stderr, "sock_stream: peeks at %llu differ (%zd, %zd bytes)\n",
                        (unsigned long long)total, a, b);
                return 1;
            }
        }
        ssize_t n = recv(c, buf, rd, waitall ? MSG_WAITALL : 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            die("recv");
        if (n == 0)
            break;
        if (waitall && (size_t)n < rd) { /* short only at the end of the stream */
            uint8_t extra;
            if (recv(c, &extra, 1, 0) != 0) {
                fprintf(stderr, "sock_stream: MSG_WAITALL recv returned %zd of %zu\n", n, rd);
                return 1;
            }
            if (!pattern_ok(buf, (size_t)n, total))
                return 1;
            total += (uint64_t)n;
            break;
        }
        if (!pattern_ok(buf, (size_t)n, total))
            return 1;
        total += (uint64_t)n;
        tell_writer(total, size, &told);
    }
    if (write(c, &total, sizeof(total)) != sizeof(total))
        die("write");
    close(c);
    close(l);
    return 0;
}

static int writer(int rfd, size_t size, uint64_t count, unsigned pace_us)
{
    uint16_t port;
    if (read(rfd, &port, sizeof(port)) != sizeof(port))
        die("pipe");
    struct sockaddr_in sa = {
        .sin_family = AF_INET, .sin_port = htons(port), .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    int s = socket(AF_INET, SOCK_STREAM, 0);
    if (s < 0 || connect(s, (struct sockaddr *)&sa, sizeof(sa)))
        die("connect");
    uint8_t *buf = malloc(size ? size : 1);
    if (!buf)
        die("malloc");
    uint64_t at = 0, told = 0;
    for (uint64_t k = 0; k < count; k++) {
        for (size_t i = 0; i < size; i++)
            buf[i] = byte_at(at + i);
        for (char r; sync_fd[0] >= 0 && k && told < k; told++) /* the reader is done with k */
            if (read(sync_fd[0], &r, 1) != 1)
                die("sync pipe");
        if (pace_us) {
            struct timespec ts = {pace_us / 1000000, (long)(pace_us % 1000000) * 1000};
            nanosleep(&ts, NULL);
        }
        ssize_t n = send(s, buf, size, MSG_NOSIGNAL);
        if (n != (ssize_t)size) {
            fprintf(stderr, "sock_stream: send %llu: %zd of %zu (%s)\n", (unsigned long long)k, n,
                    size, strerror(errno));
            free(buf);
            return 1;
        }
        at += size;
    }
    free(buf);
    uint64_t total = 0;
    if (shutdown(s, SHUT_WR))
        die("shutdown");
    for (size_t got = 0; got < sizeof(total);) {
        ssize_t n = read(s, (char *)&total + got, sizeof(total) - got);
        if (n <= 0)
            die("read count");
        got += (size_t)n;
    }
    close(s);
    if (total != at) {
        fprintf(stderr, "sock_stream: the reader got %llu bytes of %llu\n",
                (unsigned long long)total, (unsigned long long)at);
        return 1;
    }
    printf("ok %llu\n", (unsigned long long)total);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc < 4 || argc > 6) {
        fprintf(stderr, "usage: sock_stream SIZE COUNT READ [PACE_US [FLAGS]]\n");
        return 2;
    }
    unsigned pace_us = argc > 4 ? (unsigned)strtoul(argv[4], NULL, 0) : 0;
    waitall = argc > 5 && strchr(argv[5], 'w');
    nopeek = argc > 5 && strchr(argv[5], 'n');
    if (argc > 5 && strchr(argv[5], 's') && pipe(sync_fd))
        die("pipe");
    size_t size = strtoull(argv[1], NULL, 0), rd = strtoull(argv[3], NULL, 0);
    uint64_t count = strtoull(argv[2], NULL, 0);
    if (!rd)
        return 2;
    int p[2];
    if (pipe(p))
        die("pipe");
    fflush(stdout);
    pid_t child = fork();
    if (child < 0)
        die("fork");
    if (child == 0) {
        close(p[0]);
        if (sync_fd[0] >= 0)
            close(sync_fd[0]);
        sync_fd[0] = -1;
        _exit(reader(p[1], rd, size));
    }
    close(p[1]);
    if (sync_fd[1] >= 0)
        close(sync_fd[1]);
    sync_fd[1] = -1;
    int rc = writer(p[0], size, count, pace_us);
    int st;
    if (waitpid(child, &st, 0) != child || !WIFEXITED(st) || WEXITSTATUS(st)) {
        fprintf(stderr, "sock_stream: the reader failed\n");
        return 1;
    }
    return rc;
}
