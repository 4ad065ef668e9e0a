/* The two ends of tests of close (integration/test_sock_close), plain socket calls only, run
 * under sanrun:
 *
 *   sock_close reader SIZE      listens on 127.0.0.1 port 0, prints "port P", accepts one
 *                               connection, reads it to EOF in pieces of odd sizes, checks every
 *                               byte against the pattern, prints "ok SIZE eof" (or what went
 *                               wrong) and exits 0 when all SIZE bytes came, then EOF
 *   sock_close noread           the same, but never reads: prints "accepted" and sleeps
 *   sock_close writer PORT SIZE HOW
 *                               connects, writes SIZE bytes of the pattern (one blocking write,
 *                               checked complete), then HOW:
 *                               close_exit  close, then _exit(0) at once
 *                               exit        close, then exit(0)
 *                               noclose     _exit(0) without closing
 *                               kill        prints "written" and waits for the test's SIGKILL
 *                               close_stay  close, prints "closed US" (microseconds close took),
 *                                           then sleeps until killed
 *                               close_gone  the same, then _exit(0)
 *                               close_fork  the same, then forks a child that calls exit(0), prints
 *                                           "child exit US", then _exit(0)
 *   sock_close serve SIZE       listens as reader does, then forever: accepts a connection, writes
 *                               SIZE bytes of the pattern (one blocking write), closes it, prints
 *                               "served K" (K connections so far)
 *   sock_close hostile PORT     a peer that does not read: each "connect" line on stdin connects
 *                               once more and prints "connected K", never touching the connection
 *                               again; "read" then reads each to its end in order and prints "eof
 *                               BYTES" (every byte checked), "reset BYTES" (ECONNRESET after them)
 *                               or "error E BYTES", then "done"
 *   sock_close fetch PORT       connects, reads to EOF checking every byte, prints "ok BYTES eof"
 */
#include <sys/wait.h>
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static uint8_t byte_at(uint64_t i)
{
    uint64_t x = (i + 7) * 0x9e3779b97f4a7c15ull;
    return (uint8_t)(x >> 56);
}

static void die(const char *what)
{
    printf("fail %s: %s\n", what, strerror(errno));
    fflush(stdout);
    _exit(1);
}

static int lsn = -1;

static int accept_one(void)
{
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t sl = sizeof(sa);
    int l = socket(AF_INET, SOCK_STREAM, 0);
    if (l < 0 || bind(l, (struct sockaddr *)&sa, sizeof(sa)) || listen(l, 1) ||
        getsockname(l, (struct sockaddr *)&sa, &sl))
        die("listen");
    printf("port %u\n", ntohs(sa.sin_port));
    fflush(stdout);
    int s = accept(l, NULL, NULL);
    if (s < 0)
        die("accept");
    lsn = l;
    return s;
}

static int reader(size_t size)
{
    int s = accept_one();
    static uint8_t buf[70000];
    static const size_t piece[] = {1000, 65536, 4097, 31, 70000};
    uint64_t got = 0;
    for (unsigned k = 0;; k++) {
        ssize_t r = read(s, buf, piece[k % 5]);
        if (r < 0)
            die("read");
        if (!r)
            break;
        for (ssize_t i = 0; i < r; i++)
            if (buf[i] != byte_at(got + (uint64_t)i)) {
                printf("bad byte %llu\n", (unsigned long long)(got + (uint64_t)i));
                return 1;
            }
        got += (uint64_t)r;
    }
    printf("ok %llu eof\n", (unsigned long long)got);
    close(s);
    close(lsn);
    return got == size ? 0 : 1;
}

static uint64_t now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000;
}

static int writer(int port, size_t size, const char *how)
{
    struct sockaddr_in sa = {.sin_family = AF_INET,
                             .sin_port = htons((uint16_t)port),
                             .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    int s = socket(AF_INET, SOCK_STREAM, 0);
    if (s < 0 || connect(s, (struct sockaddr *)&sa, sizeof(sa)))
        die("connect");
    uint8_t *p = malloc(size);
    if (!p)
        die("malloc");
    for (size_t i = 0; i < size; i++)
        p[i] = byte_at(i);
    ssize_t w = write(s, p, size);
    if (w != (ssize_t)size)
        die("write");
    if (!strcmp(how, "kill")) {
        printf("written\n");
        fflush(stdout);
        for (;;)
            pause();
    }
    if (!strcmp(how, "noclose"))
        _exit(0);
    uint64_t t0 = now_us();
    if (close(s))
        die("close");
    uint64_t t1 = now_us();
    if (!strcmp(how, "close_exit"))
        _exit(0);
    if (!strcmp(how, "exit"))
        exit(0);
    printf("closed %llu\n", (unsigned long long)(t1 - t0));
    fflush(stdout);
    if (!strcmp(how, "close_fork")) {
        /* A forked child's exit: the parent's finisher holds the connection, the child's does
         * not, so its exit must not wait for it. */
        uint64_t f0 = now_us();
        pid_t c = fork();
        if (c == 0)
            exit(0);
        int st;
        if (c < 0 || waitpid(c, &st, 0) != c || !WIFEXITED(st) || WEXITSTATUS(st))
            die("fork");
        printf("child exit %llu\n", (unsigned long long)(now_us() - f0));
        fflush(stdout);
        _exit(0);
    }
    if (!strcmp(how, "close_gone"))
        _exit(0);
    for (;;)
        pause();
}

static _Noreturn void serve(size_t size)
{
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t sl = sizeof(sa);
    int l = socket(AF_INET, SOCK_STREAM, 0);
    if (l < 0 || bind(l, (struct sockaddr *)&sa, sizeof(sa)) || listen(l, 64) ||
        getsockname(l, (struct sockaddr *)&sa, &sl))
        die("listen");
    printf("port %u\n", ntohs(sa.sin_port));
    uint8_t *p = malloc(size);
    if (!p)
        die("malloc");
    for (size_t i = 0; i < size; i++)
        p[i] = byte_at(i);
    for (unsigned k = 1;; k++) {
        int s = accept(l, NULL, NULL);
        if (s < 0)
            die("accept");
        if (write(s, p, size) != (ssize_t)size)
            die("write");
        if (close(s))
            die("close");
        printf("served %u\n", k);
    }
}

static int dial(int port)
{
    struct sockaddr_in sa = {.sin_family = AF_INET,
                             .sin_port = htons((uint16_t)port),
                             .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    int s = socket(AF_INET, SOCK_STREAM, 0);
    if (s < 0 || connect(s, (struct sockaddr *)&sa, sizeof(sa)))
        die("connect");
    return s;
}

/* Reads s to its end, checking the pattern: 0 at EOF, else the errno; *got the bytes. */
static int drain(int s, uint64_t *got)
{
    static uint8_t buf[65536];
    *got = 0;
    for (;;) {
        ssize_t r = read(s, buf, sizeof(buf));
        if (r < 0)
            return errno;
        if (!r)
            return 0;
        for (ssize_t i = 0; i < r; i++)
            if (buf[i] != byte_at(*got + (uint64_t)i))
                return EILSEQ;
        *got += (uint64_t)r;
    }
}

static int hostile(int port)
{
    int s[256], n = 0;
    char line[32];
    while (fgets(line, sizeof(line), stdin)) {
        if (!strcmp(line, "connect\n") && n < 256) {
            s[n++] = dial(port);
            printf("connected %d\n", n);
        } else if (!strcmp(line, "read\n")) {
            for (int i = 0; i < n; i++) {
                uint64_t got;
                int e = drain(s[i], &got);
                if (!e)
                    printf("eof %llu\n", (unsigned long long)got);
                else if (e == ECONNRESET)
                    printf("reset %llu\n", (unsigned long long)got);
                else
                    printf("error %s %llu\n", strerror(e), (unsigned long long)got);
            }
            printf("done\n");
            return 0;
        }
    }
    return 1;
}

int main(int argc, char **argv)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (argc == 3 && !strcmp(argv[1], "reader"))
        return reader(strtoul(argv[2], NULL, 10));
    if (argc == 2 && !strcmp(argv[1], "noread")) {
        accept_one();
        printf("accepted\n");
        fflush(stdout);
        for (;;)
            pause();
    }
    if (argc == 3 && !strcmp(argv[1], "serve"))
        serve(strtoul(argv[2], NULL, 10));
    if (argc == 3 && !strcmp(argv[1], "hostile"))
        return hostile(atoi(argv[2]));
    if (argc == 3 && !strcmp(argv[1], "fetch")) {
        uint64_t got;
        int e = drain(dial(atoi(argv[2])), &got);
        if (e)
            printf("fail %s after %llu\n", strerror(e), (unsigned long long)got);
        else
            printf("ok %llu eof\n", (unsigned long long)got);
        return e ? 1 : 0;
    }
    if (argc == 5 && !strcmp(argv[1], "writer"))
        return writer(atoi(argv[2]), strtoul(argv[3], NULL, 10), argv[4]);
    fprintf(stderr, "usage: see tests/sock/sock_close.c\n");
    return 2;
}
