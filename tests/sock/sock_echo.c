/* An echo server and client using nothing but the socket API (no libsan): the programs the
 * sockets switch's tests run under sanrun, and without it.
 *
 *   sock_echo server [ADDR]         listens on ADDR (default 127.0.0.1) port 0, prints "port P",
 *                                   then echoes every connection (read to EOF, written back,
 *                                   shutdown) until it reads a connection that sends "quit"
 *   sock_echo client ADDR PORT SIZE sends SIZE pseudo-random bytes (non-blocking, poll on
 *                                   POLLIN|POLLOUT), shutdown(SHUT_WR), reads the echo to EOF;
 *                                   prints "ok SIZE SUM local=ADDR:PORT peer=ADDR:PORT"
 *   sock_echo quit ADDR PORT        tells the server to stop
 * The sum is a 64-bit FNV-1a of the bytes; the client checks the echo against what it sent. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/select.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static void die(const char *what)
{
    fprintf(stderr, "sock_echo: %s: %s\n", what, strerror(errno));
    exit(1);
}

static socklen_t parse(const char *host, int port, struct sockaddr_storage *ss)
{
    memset(ss, 0, sizeof(*ss));
    struct sockaddr_in *in = (struct sockaddr_in *)ss;
    struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)ss;
    if (inet_pton(AF_INET, host, &in->sin_addr) == 1) {
        in->sin_family = AF_INET;
        in->sin_port = htons((uint16_t)port);
        return sizeof(*in);
    }
    if (inet_pton(AF_INET6, host, &in6->sin6_addr) == 1) {
        in6->sin6_family = AF_INET6;
        in6->sin6_port = htons((uint16_t)port);
        return sizeof(*in6);
    }
    fprintf(stderr, "sock_echo: bad address %s\n", host);
    exit(2);
}

static const char *name(const struct sockaddr_storage *ss, char *buf, size_t len)
{
    char ip[INET6_ADDRSTRLEN] = "?";
    int port = 0;
    if (ss->ss_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)ss;
        inet_ntop(AF_INET, &in->sin_addr, ip, sizeof(ip));
        port = ntohs(in->sin_port);
    } else if (ss->ss_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)ss;
        inet_ntop(AF_INET6, &in6->sin6_addr, ip, sizeof(ip));
        port = ntohs(in6->sin6_port);
    }
    snprintf(buf, len, "%s:%d", ip, port);
    return buf;
}

static uint64_t fnv(uint64_t h, const uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        h = (h ^ p[i]) * 0x100000001b3ull;
    return h;
}

static uint8_t byte_at(uint64_t i)
{
    uint64_t x = (i + 1) * 0x9e3779b97f4a7c15ull;
    return (uint8_t)(x >> 56);
}

static int serve(const char *host)
{
    struct sockaddr_storage ss;
    socklen_t len = parse(host, 0, &ss);
    int l = socket(ss.ss_family, SOCK_STREAM, 0);
    if (l < 0)
        die("socket");
    int one = 1;
    setsockopt(l, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (bind(l, (struct sockaddr *)&ss, len) || listen(l, 16))
        die("bind/listen");
    len = sizeof(ss);
    if (getsockname(l, (struct sockaddr *)&ss, &len))
        die("getsockname");
    printf("port %d\n", ntohs(((struct sockaddr_in *)&ss)->sin_port));
    fflush(stdout);
    static uint8_t buf[1 << 16];
    for (;;) {
        struct sockaddr_storage peer;
        socklen_t plen = sizeof(peer);
        int c = accept(l, (struct sockaddr *)&peer, &plen);
        if (c < 0) {
            if (errno == EINTR || errno == ECONNABORTED)
                continue;
            die("accept");
        }
        struct sockaddr_storage local;
        socklen_t llen = sizeof(local);
        char np[80], nl[80];
        if (getsockname(c, (struct sockaddr *)&local, &llen))
            die("getsockname");
        printf("conn peer=%s local=%s\n", name(&peer, np, sizeof(np)),
               name(&local, nl, sizeof(nl)));
        fflush(stdout);
        bool quit = false;
        size_t total = 0;
        for (;;) {
            ssize_t n = read(c, buf, sizeof(buf));
            if (n < 0 && errno == EINTR)
                continue;
            if (n <= 0) {
                if (n < 0)
                    fprintf(stderr, "sock_echo server: read: %s\n", strerror(errno));
                break;
            }
            if (!total && n == 4 && !memcmp(buf, "quit", 4))
                quit = true;
            total += (size_t)n;
            for (ssize_t off = 0; off < n;) {
                ssize_t w = send(c, buf + off, (size_t)(n - off), MSG_NOSIGNAL);
                if (w < 0 && errno == EINTR)
                    continue;
                if (w <= 0) {
                    fprintf(stderr, "sock_echo server: send: %s\n", strerror(errno));
                    n = -1;
                    break;
                }
                off += w;
            }
            if (n < 0)
                break;
        }
        shutdown(c, SHUT_WR);
        close(c);
        if (quit)
            break;
    }
    close(l);
    return 0;
}

/* Waits up to 30 s for p->fd to be ready as p->events asks: poll, or select with the same sets. */
static int ready(struct pollfd *p, bool use_select)
{
    if (!use_select)
        return poll(p, 1, 30000);
    fd_set r, w;
    FD_ZERO(&r);
    FD_ZERO(&w);
    FD_SET(p->fd, &r);
    if (p->events & POLLOUT)
        FD_SET(p->fd, &w);
    struct timeval tv = {30, 0};
    int n = select(p->fd + 1, &r, &w, NULL, &tv);
    p->revents = (short)((FD_ISSET(p->fd, &r) ? POLLIN : 0) | (FD_ISSET(p->fd, &w) ? POLLOUT : 0));
    return n;
}

static int client(const char *host, int port, size_t size, bool use_select)
{
    struct sockaddr_storage ss;
    socklen_t len = parse(host, port, &ss);
    int s = socket(ss.ss_family, SOCK_STREAM, 0);
    if (s < 0)
        die("socket");
    if (connect(s, (struct sockaddr *)&ss, len))
        die("connect");
    struct sockaddr_storage a, b;
    socklen_t la = sizeof(a), lb = sizeof(b);
    char na[80], nb[80];
    if (getsockname(s, (struct sockaddr *)&a, &la) || getpeername(s, (struct sockaddr *)&b, &lb))
        die("getsockname/getpeername");
    if (fcntl(s, F_SETFL, fcntl(s, F_GETFL) | O_NONBLOCK))
        die("fcntl");
    static uint8_t out[1 << 16], in[1 << 16];
    size_t sent = 0, got = 0;
    uint64_t sum_out = 0xcbf29ce484222325ull, sum_in = sum_out;
    bool shut = false;
    if (!size) {
        shutdown(s, SHUT_WR);
        shut = true;
    }
    for (;;) {
        struct pollfd p = {.fd = s, .events = POLLIN | (shut ? 0 : POLLOUT)};
        if (ready(&p, use_select) <= 0) {
            fprintf(stderr, "sock_echo client: %s: timeout or error (sent %zu got %zu)\n",
                    use_select ? "select" : "poll", sent, got);
            return 1;
        }
        if (!shut && (p.revents & POLLOUT)) {
            size_t n = size - sent < sizeof(out) ? size - sent : sizeof(out);
            for (size_t i = 0; i < n; i++)
                out[i] = byte_at(sent + i);
            ssize_t w = send(s, out, n, MSG_DONTWAIT | MSG_NOSIGNAL);
            if (w < 0 && errno != EAGAIN)
                die("send");
            if (w > 0) {
                sum_out = fnv(sum_out, out, (size_t)w);
                sent += (size_t)w;
                if (sent == size) {
                    if (shutdown(s, SHUT_WR))
                        die("shutdown");
                    shut = true;
                }
            }
        }
        if (p.revents & (POLLIN | POLLHUP | POLLERR)) {
            ssize_t n = recv(s, in, sizeof(in), MSG_DONTWAIT);
            if (n < 0 && errno != EAGAIN)
                die("recv");
            if (n == 0)
                break;
            if (n > 0) {
                for (ssize_t i = 0; i < n; i++)
                    if (in[i] != byte_at(got + (size_t)i)) {
                        fprintf(stderr, "sock_echo client: byte %zu differs\n", got + (size_t)i);
                        return 1;
                    }
                sum_in = fnv(sum_in, in, (size_t)n);
                got += (size_t)n;
            }
        }
    }
    if (got != size || sum_in != sum_out || sent != size) {
        fprintf(stderr, "sock_echo client: sent %zu, got %zu back\n", sent, got);
        return 1;
    }
    printf("ok %zu %016llx local=%s peer=%s\n", size, (unsigned long long)sum_in,
           name(&a, na, sizeof(na)), name(&b, nb, sizeof(nb)));
    close(s);
    return 0;
}

/* select with nothing to read times out; then it sends a known message, half-closes, select sees
 * the echo, which it reads back with MSG_PEEK (twice: the same bytes, nothing consumed) and
 * MSG_WAITALL (all of it in one blocking call), then end of file. */
static int peek(const char *host, int port)
{
    enum { LEN = 10000 };
    struct sockaddr_storage ss;
    socklen_t len = parse(host, port, &ss);
    int s = socket(ss.ss_family, SOCK_STREAM, 0);
    if (s < 0 || connect(s, (struct sockaddr *)&ss, len))
        die("connect");
    /* Nothing to read yet: select waits out its timeout and says so, then sees the echo. */
    fd_set r;
    FD_ZERO(&r);
    FD_SET(s, &r);
    struct timeval tv = {0, 200000};
    int n0 = select(s + 1, &r, NULL, NULL, &tv);
    if (n0 != 0 || FD_ISSET(s, &r) || tv.tv_sec || tv.tv_usec) {
        fprintf(stderr, "sock_echo peek: select with nothing to read gave %d\n", n0);
        return 1;
    }
    static uint8_t out[LEN], in[LEN];
    for (size_t i = 0; i < LEN; i++)
        out[i] = byte_at(i);
    if (send(s, out, LEN, MSG_NOSIGNAL) != LEN || shutdown(s, SHUT_WR))
        die("send");
    FD_SET(s, &r);
    tv = (struct timeval){10, 0};
    if (select(s + 1, &r, NULL, NULL, &tv) != 1 || !FD_ISSET(s, &r)) {
        fprintf(stderr, "sock_echo peek: select did not see the echo\n");
        return 1;
    }
    for (int round = 0; round < 2; round++) {
        memset(in, 0, 100);
        ssize_t n = recv(s, in, 100, MSG_PEEK);
        if (n <= 0 || memcmp(in, out, (size_t)n)) {
            fprintf(stderr, "sock_echo peek: MSG_PEEK round %d: %zd bytes, or not the first\n",
                    round, n);
            return 1;
        }
    }
    memset(in, 0, LEN);
    ssize_t n = recv(s, in, LEN, MSG_WAITALL);
    if (n != LEN || memcmp(in, out, LEN)) {
        fprintf(stderr, "sock_echo peek: MSG_WAITALL gave %zd of %d bytes\n", n, LEN);
        return 1;
    }
    if ((n = recv(s, in, 1, 0)) != 0) {
        fprintf(stderr, "sock_echo peek: %zd after the echo, want end of file\n", n);
        return 1;
    }
    printf("ok peek\n");
    close(s);
    return 0;
}

static int quit(const char *host, int port)
{
    struct sockaddr_storage ss;
    socklen_t len = parse(host, port, &ss);
    int s = socket(ss.ss_family, SOCK_STREAM, 0);
    if (s < 0 || connect(s, (struct sockaddr *)&ss, len))
        die("connect");
    if (write(s, "quit", 4) != 4)
        die("write");
    shutdown(s, SHUT_WR);
    char b[8];
    while (read(s, b, sizeof(b)) > 0) {
    }
    close(s);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc >= 2 && !strcmp(argv[1], "server"))
        return serve(argc > 2 ? argv[2] : "127.0.0.1");
    if (argc == 5 && (!strcmp(argv[1], "client") || !strcmp(argv[1], "client-select")))
        return client(argv[2], atoi(argv[3]), strtoull(argv[4], NULL, 0),
                      !strcmp(argv[1], "client-select"));
    if (argc == 4 && !strcmp(argv[1], "quit"))
        return quit(argv[2], atoi(argv[3]));
    if (argc == 4 && !strcmp(argv[1], "peek"))
        return peek(argv[2], atoi(argv[3]));
    fprintf(stderr,
            "usage: sock_echo server [ADDR] | client ADDR PORT SIZE | peek ADDR PORT | quit "
            "ADDR PORT\n");
    return 2;
}
