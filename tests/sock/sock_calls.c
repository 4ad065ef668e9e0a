/* The socket calls beyond read and write, with plain socket calls (no libsan): the programs
 * test_sock_calls runs under sanrun, and without it (the kernel's TCP, which the expectations
 * here are TCP's). One connection per run, both ends in separate processes:
 *
 *   sock_calls server ROLE         listens on 127.0.0.1 port 0, prints "port P", accepts one
 *                                  connection, plays ROLE's server side, prints "ok ..." and exits
 *   sock_calls client ROLE ADDR PORT [ARG]   plays ROLE's client side, prints "ok ..."
 *
 * Roles (the stream's bytes are byte_at(offset) everywhere, checked at the receiving end):
 *   vec       writev of 1000 pieces of 7 bytes and of pieces across message boundaries, sendmsg
 *             with SCM_RIGHTS (ignored, as TCP ignores it) echoed back by writev/sendmsg in small
 *             pieces, read with readv and recvmsg into odd pieces (msg_namelen, msg_controllen,
 *             msg_flags come back 0)
 *   pack      one writev of ARG pieces making 7000 bytes (the test counts the NIC's operations)
 *   peek      recvmsg MSG_PEEK twice (same bytes), recv MSG_TRUNC (discards), then MSG_WAITALL
 *             across pieces, then EOF
 *   nonblock  FIONBIO on and off, EAGAIN from readv/recvmsg, FIONREAD exact, filling the
 *             connection until EAGAIN, a blocking write after FIONBIO off, SIOCOUTQ 0 at the end
 *   nbcache   O_NONBLOCK as the switch caches it, each change followed at once by a read that
 *             must fail with EAGAIN or must wait for a byte the server sends 30 ms later: FIONBIO,
 *             fcntl(F_SETFL), a dup/F_DUPFD/dup2/dup3 changing the flag for every descriptor of
 *             the socket (one open file), fcntl through syscall() (behind the switch's back: a
 *             set flag is seen at once, a cleared one within 1 ms), a second connection from
 *             socket(SOCK_NONBLOCK) accepted with accept4(SOCK_NONBLOCK)
 *   coalesce  10000 one-byte writes while the server sleeps, the first 30 each delivered before
 *             the next; ARG "san": SIOCOUTQ and SIOCOUTQNSD count the 9970 bytes waiting for
 *             credit; close at once (ARG "exit", "san-exit": exit without closing); the server
 *             reads every byte in order, then EOF (the test counts the NIC's operations)
 *   epipe     after shutdown(SHUT_WR): writev, sendmmsg and sendfile fail with EPIPE and raise
 *             SIGPIPE, sendmsg with MSG_NOSIGNAL does not; after the peer closed, writes end in
 *             EPIPE (with SIGPIPE) or ECONNRESET
 *   sendfile  with an offset (it advances, the file position stays), without (the position
 *             advances), at end of file, count 0, a SAN socket as source (EINVAL, ARG "san"),
 *             non-blocking (the position advances by exactly what was sent)
 *   sockopt   SO_TYPE/SO_DOMAIN/SO_PROTOCOL, SO_ERROR 0, buffer sizes, TCP_NODELAY, SO_KEEPALIVE,
 *             SO_REUSEADDR read back, TCP_INFO says established, MSG_OOB and MSG_ERRQUEUE as
 *             TCP's without urgent data (ARG "san": a MSG_OOB send is EOPNOTSUPP),
 *             sendmmsg/recvmmsg; then SO_LINGER {1, 0} and close: the server's read fails with
 *             ECONNRESET
 *   closed    the server shuts its side and exits: the client's writes end in EPIPE or ECONNRESET
 *   unread    the server closes with the client's 1000 bytes unread (and lives on): the client's
 *             read fails with ECONNRESET, TCP's RST instead of FIN
 *   afterclose the server writes 1 MiB and closes (and lives on) while the client reads none of
 *             it: the client's writes end in EPIPE or ECONNRESET within 2 s (TCP answers data
 *             for a closed socket with RST), not when the close gives up
 *   reset     the client writes 10 bytes the server never reads; the test SIGKILLs the server;
 *             the client's poll sees POLLERR, SO_ERROR is ECONNRESET once, then 0
 *   killsend  the client writes until the test SIGKILLs the reading server: EPIPE or ECONNRESET
 *   killrecv  the client reads until the test SIGKILLs the writing server: EOF or ECONNRESET
 *   fortify   read, recv, recvfrom and poll built with _FORTIFY_SOURCE (__read_chk...)
 *
 * unread and afterclose keep the server alive after its close: a second connection, accepted
 * after it, tells the client the server closed (a byte) and the server that the client is done
 * (end of file). */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/sockios.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#define FAIL(...)                                                                                  \
    do {                                                                                           \
        fprintf(stderr, "sock_calls %s:%d: ", role, __LINE__);                                     \
        fprintf(stderr, __VA_ARGS__);                                                              \
        fprintf(stderr, " (errno %s)\n", strerror(errno));                                         \
        exit(1);                                                                                   \
    } while (0)
#define EXPECT(cond)                                                                               \
    do {                                                                                           \
        if (!(cond))                                                                               \
            FAIL("%s", #cond);                                                                     \
    } while (0)

static const char *role = "?";

static uint8_t byte_at(uint64_t i)
{
    uint64_t x = (i + 1) * 0x9e3779b97f4a7c15ull;
    return (uint8_t)(x >> 56);
}

static void fill(uint8_t *p, size_t n, uint64_t from)
{
    for (size_t i = 0; i < n; i++)
        p[i] = byte_at(from + i);
}

/* Checks n received bytes against the stream at offset at. */
static void check(const uint8_t *p, size_t n, uint64_t at)
{
    for (size_t i = 0; i < n; i++)
        if (p[i] != byte_at(at + i))
            FAIL("byte %llu differs", (unsigned long long)(at + i));
}

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000};
    nanosleep(&ts, NULL);
}

static int sigpipes;
static void on_sigpipe(int sig)
{
    (void)sig;
    sigpipes++;
}

/* Reads n bytes exactly (blocking): false at EOF first. */
static bool read_full(int s, void *buf, size_t n)
{
    for (size_t got = 0; got < n;) {
        ssize_t r = read(s, (uint8_t *)buf + got, n - got);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            FAIL("read");
        if (r == 0)
            return false;
        got += (size_t)r;
    }
    return true;
}

static void write_full(int s, const void *buf, size_t n)
{
    for (size_t off = 0; off < n;) {
        ssize_t w = send(s, (const uint8_t *)buf + off, n - off, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            FAIL("send");
        off += (size_t)w;
    }
}

/* Reads to EOF checking the stream from 0: the byte count. */
static uint64_t drain_checked(int s, uint64_t at)
{
    static uint8_t buf[1 << 16];
    for (;;) {
        ssize_t r = read(s, buf, sizeof(buf));
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            FAIL("read after %llu bytes", (unsigned long long)at);
        if (r == 0)
            return at;
        check(buf, (size_t)r, at);
        at += (uint64_t)r;
    }
}

/* ---- vec ---- */

enum { VEC_SMALL = 1000, VEC_PIECE = 7 };
static const size_t vec_big[] = {5000, 1, 70000};
static const size_t vec_msg[] = {3, 0, 4093, 9};

static size_t vec_total(void)
{
    size_t t = VEC_SMALL * VEC_PIECE;
    for (size_t i = 0; i < 3; i++)
        t += vec_big[i];
    for (size_t i = 0; i < 4; i++)
        t += vec_msg[i];
    return t;
}

/* Writes the pieces with writev until all went (a blocking writev may take less on a signal). */
static void writev_all(int s, struct iovec *v, int n)
{
    while (n) {
        ssize_t w = writev(s, v, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            FAIL("writev");
        for (size_t left = (size_t)w; left;) {
            size_t k = left < v->iov_len ? left : v->iov_len;
            v->iov_base = (uint8_t *)v->iov_base + k;
            v->iov_len -= k;
            left -= k;
            if (!v->iov_len) {
                v++;
                n--;
            }
        }
        while (n && !v->iov_len) {
            v++;
            n--;
        }
    }
}

static void vec_client(int s)
{
    size_t total = vec_total(), at = 0;
    uint8_t *out = malloc(total), *in = malloc(total);
    EXPECT(out && in);
    fill(out, total, 0);
    static struct iovec v[VEC_SMALL];
    for (int i = 0; i < VEC_SMALL; i++)
        v[i] = (struct iovec){out + at + (size_t)i * VEC_PIECE, VEC_PIECE};
    writev_all(s, v, VEC_SMALL);
    at += VEC_SMALL * VEC_PIECE;
    for (int i = 0; i < 3; i++) {
        v[i] = (struct iovec){out + at, vec_big[i]};
        at += vec_big[i];
    }
    writev_all(s, v, 3);
    /* sendmsg with a descriptor attached: TCP ignores SCM_RIGHTS, and so does the SAN. */
    struct iovec mv[4];
    size_t mlen = 0;
    for (int i = 0; i < 4; i++) {
        mv[i] = (struct iovec){out + at + mlen, vec_msg[i]};
        mlen += vec_msg[i];
    }
    union {
        char buf[CMSG_SPACE(sizeof(int))];
        struct cmsghdr align;
    } ctl;
    memset(&ctl, 0, sizeof(ctl));
    struct msghdr m = {
        .msg_iov = mv, .msg_iovlen = 4, .msg_control = ctl.buf, .msg_controllen = sizeof(ctl.buf)};
    struct cmsghdr *h = CMSG_FIRSTHDR(&m);
    h->cmsg_level = SOL_SOCKET;
    h->cmsg_type = SCM_RIGHTS;
    h->cmsg_len = CMSG_LEN(sizeof(int));
    int zero = 0;
    memcpy(CMSG_DATA(h), &zero, sizeof(zero));
    EXPECT(sendmsg(s, &m, MSG_NOSIGNAL) == (ssize_t)mlen);
    at += mlen;
    EXPECT(at == total);
    /* A malformed control header is EINVAL, and sends nothing. */
    h->cmsg_len = 2;
    errno = 0;
    EXPECT(sendmsg(s, &m, MSG_NOSIGNAL) == -1 && errno == EINVAL);
    EXPECT(shutdown(s, SHUT_WR) == 0);

    /* The echo, alternately by recvmsg into pieces of 1..13 bytes and readv into 3 pieces. */
    size_t got = 0;
    for (int round = 0;; round++) {
        struct iovec r[13];
        size_t room = 0;
        int n = 0;
        if (round % 2 == 0) {
            for (n = 0; n < 13; n++) {
                r[n] = (struct iovec){in + got + room, (size_t)n + 1};
                room += (size_t)n + 1;
            }
        } else {
            size_t sz[3] = {1, 4095, 10000};
            for (n = 0; n < 3; n++) {
                r[n] = (struct iovec){in + got + room, sz[n]};
                room += sz[n];
            }
        }
        if (room > total - got) { /* the last pieces: no further than the buffer */
            r[0] = (struct iovec){in + got, total - got};
            n = 1;
        }
        ssize_t k;
        if (round % 2 == 0) {
            struct sockaddr_storage ss;
            char cbuf[64];
            struct msghdr rm = {.msg_name = &ss,
                                .msg_namelen = sizeof(ss),
                                .msg_iov = r,
                                .msg_iovlen = (size_t)n,
                                .msg_control = cbuf,
                                .msg_controllen = sizeof(cbuf),
                                .msg_flags = -1};
            k = recvmsg(s, &rm, 0);
            if (k > 0)
                EXPECT(rm.msg_namelen == 0 && rm.msg_controllen == 0 && rm.msg_flags == 0);
        } else {
            k = readv(s, r, n);
        }
        if (k < 0 && errno == EINTR)
            continue;
        if (k < 0)
            FAIL("recvmsg/readv after %zu", got);
        if (k == 0)
            break;
        got += (size_t)k;
        if (got == total) { /* then end of file */
            char b;
            EXPECT(read(s, &b, 1) == 0);
            break;
        }
    }
    EXPECT(got == total);
    check(in, total, 0);
    free(in);
    free(out);
    printf("ok vec %zu\n", total);
}

static void vec_server(int s)
{
    size_t total = vec_total(), got = 0;
    uint8_t *in = malloc(total + 1);
    EXPECT(in);
    for (;;) {
        size_t sz[3] = {1, 4095, 10000};
        struct iovec r[3];
        size_t room = 0;
        for (int i = 0; i < 3; i++) {
            size_t k = sz[i] < total + 1 - got - room ? sz[i] : total + 1 - got - room;
            r[i] = (struct iovec){in + got + room, k};
            room += k;
        }
        char cbuf[64];
        struct msghdr rm = {
            .msg_iov = r, .msg_iovlen = 3, .msg_control = cbuf, .msg_controllen = sizeof(cbuf)};
        ssize_t k = recvmsg(s, &rm, 0);
        if (k < 0 && errno == EINTR)
            continue;
        if (k < 0)
            FAIL("recvmsg");
        if (k == 0)
            break;
        EXPECT(rm.msg_controllen == 0); /* the SCM_RIGHTS did not travel */
        got += (size_t)k;
        EXPECT(got <= total);
    }
    EXPECT(got == total);
    check(in, total, 0);
    /* Back in pieces of 1..13 bytes, writev and sendmsg in turns of 100 pieces. */
    static struct iovec v[100];
    size_t at = 0;
    for (int turn = 0; at < total; turn++) {
        int n = 0;
        size_t start = at;
        while (n < 100 && at < total) {
            size_t k = (size_t)(n % 13) + 1;
            if (k > total - at)
                k = total - at;
            v[n++] = (struct iovec){in + at, k};
            at += k;
        }
        if (turn % 2) {
            writev_all(s, v, n);
        } else {
            struct msghdr m = {.msg_iov = v, .msg_iovlen = (size_t)n};
            ssize_t w = sendmsg(s, &m, MSG_NOSIGNAL);
            if (w <= 0)
                FAIL("sendmsg");
            at = start + (size_t)w;
        }
    }
    shutdown(s, SHUT_WR);
    free(in);
    printf("ok vec %zu\n", total);
}

/* ---- pack ---- */

static void pack_client(int s, int pieces)
{
    static uint8_t out[7000];
    static struct iovec v[7000];
    fill(out, sizeof(out), 0);
    if (pieces < 1 || pieces > 7000 || 7000 % pieces)
        FAIL("pieces %d", pieces);
    size_t each = 7000 / (size_t)pieces;
    for (int i = 0; i < pieces; i++)
        v[i] = (struct iovec){out + (size_t)i * each, each};
    writev_all(s, v, pieces);
    EXPECT(shutdown(s, SHUT_WR) == 0);
    uint64_t n;
    EXPECT(read_full(s, &n, sizeof(n)) && n == 7000);
    printf("ok pack %d\n", pieces);
}

static void count_server(int s)
{
    uint64_t n = drain_checked(s, 0);
    write_full(s, &n, sizeof(n));
    shutdown(s, SHUT_WR);
    printf("ok count %llu\n", (unsigned long long)n);
}

/* ---- peek ---- */

static void send_pattern_server(int s, size_t len)
{
    uint8_t *out = malloc(len);
    EXPECT(out);
    fill(out, len, 0);
    struct iovec v = {out, len};
    struct msghdr m = {.msg_iov = &v, .msg_iovlen = 1};
    EXPECT(sendmsg(s, &m, MSG_NOSIGNAL) == (ssize_t)len);
    free(out);
    EXPECT(shutdown(s, SHUT_WR) == 0);
    char b;
    EXPECT(read(s, &b, 1) == 0);
    printf("ok sent %zu\n", len);
}

static void peek_client(int s)
{
    enum { LEN = 10000 };
    static uint8_t in[LEN];
    struct pollfd p = {.fd = s, .events = POLLIN};
    EXPECT(poll(&p, 1, 10000) == 1);
    for (int round = 0; round < 2; round++) {
        memset(in, 0, 60);
        struct iovec v[3] = {{in, 10}, {in + 10, 20}, {in + 30, 30}};
        struct msghdr m = {.msg_iov = v, .msg_iovlen = 3};
        ssize_t n = recvmsg(s, &m, MSG_PEEK);
        EXPECT(n > 0 && n <= 60);
        check(in, (size_t)n, 0);
    }
    /* MSG_TRUNC: TCP consumes the bytes without copying them (no buffer needed). */
    EXPECT(recv(s, NULL, 100, MSG_TRUNC | MSG_WAITALL) == 100);
    memset(in, 0, LEN);
    struct iovec v[3] = {{in, 1}, {in + 1, 4899}, {in + 4900, 5000}};
    struct msghdr m = {.msg_iov = v, .msg_iovlen = 3};
    EXPECT(recvmsg(s, &m, MSG_WAITALL) == LEN - 100);
    check(in, LEN - 100, 100);
    EXPECT(recvmsg(s, &m, 0) == 0);
    printf("ok peek\n");
}

/* ---- nonblock ---- */

static int inq(int s)
{
    int n = -1;
    EXPECT(ioctl(s, FIONREAD, &n) == 0);
    return n;
}

static void nonblock_client(int s)
{
    int on = 1, off = 0;
    EXPECT(ioctl(s, FIONBIO, &on) == 0);
    EXPECT(fcntl(s, F_GETFL) & O_NONBLOCK);
    uint8_t buf[4096];
    struct iovec v = {buf, sizeof(buf)};
    struct msghdr m = {.msg_iov = &v, .msg_iovlen = 1};
    errno = 0;
    EXPECT(readv(s, &v, 1) == -1 && errno == EAGAIN);
    EXPECT(ioctl(s, FIONBIO, &off) == 0);
    errno = 0;
    EXPECT(recvmsg(s, &m, MSG_DONTWAIT) == -1 && errno == EAGAIN);
    EXPECT(inq(s) == 0);
    write_full(s, "g", 1); /* the server sends 1234 bytes in one write */
    struct pollfd p = {.fd = s, .events = POLLIN};
    EXPECT(poll(&p, 1, 10000) == 1);
    for (int i = 0; i < 100 && inq(s) < 1234; i++) /* TCP may take a moment more */
        sleep_ms(10);
    EXPECT(inq(s) == 1234);
    EXPECT(read(s, buf, 1000) == 1000);
    EXPECT(inq(s) == 234);
    EXPECT(read(s, buf + 1000, 234) == 234);
    check(buf, 1234, 0);
    EXPECT(inq(s) == 0);

    /* Fill the connection while the server sleeps, until EAGAIN. */
    write_full(s, "f", 1);
    EXPECT(ioctl(s, FIONBIO, &on) == 0);
    static uint8_t chunk[1 << 16];
    uint64_t sent = 0;
    bool full = false;
    for (int i = 0; i < 1000 && !full; i++) { /* TCP's buffers take a few MiB */
        fill(chunk, sizeof(chunk), sent);
        struct iovec w[2] = {{chunk, 100}, {chunk + 100, sizeof(chunk) - 100}};
        ssize_t n = writev(s, w, 2);
        if (n < 0 && errno == EAGAIN)
            full = true;
        else if (n <= 0)
            FAIL("writev while filling");
        else
            sent += (uint64_t)n;
    }
    if (!full)
        FAIL("%llu bytes written without EAGAIN", (unsigned long long)sent);
    /* POLLOUT means a write takes bytes (room may come back meanwhile: a credit, the kernel's
     * buffers): never POLLOUT then EAGAIN, on which an event loop would spin. */
    for (int i = 0; i < 1000; i++) {
        struct pollfd pw = {.fd = s, .events = POLLOUT};
        int r = poll(&pw, 1, 20);
        EXPECT(r >= 0);
        if (!r)
            break; /* full, and said so */
        fill(chunk, sizeof(chunk), sent);
        ssize_t n = write(s, chunk, sizeof(chunk));
        if (n < 0 && errno == EAGAIN)
            FAIL("poll said POLLOUT (%#x), then write said EAGAIN", pw.revents);
        if (n <= 0)
            FAIL("write after POLLOUT");
        sent += (uint64_t)n;
    }
    /* Blocking again: this write waits for the server instead of failing. */
    EXPECT(ioctl(s, FIONBIO, &off) == 0);
    EXPECT(!(fcntl(s, F_GETFL) & O_NONBLOCK));
    fill(chunk, sizeof(chunk), sent);
    write_full(s, chunk, sizeof(chunk));
    sent += sizeof(chunk);
    EXPECT(shutdown(s, SHUT_WR) == 0);
    uint64_t n;
    EXPECT(read_full(s, &n, sizeof(n)));
    if (n != sent)
        FAIL("server read %llu of %llu", (unsigned long long)n, (unsigned long long)sent);
    int outq = -1;
    EXPECT(ioctl(s, SIOCOUTQ, &outq) == 0 && outq == 0);
    printf("ok nonblock filled=%llu\n", (unsigned long long)sent);
}

static void nonblock_server(int s)
{
    char c;
    EXPECT(read_full(s, &c, 1) && c == 'g');
    uint8_t out[1234];
    fill(out, sizeof(out), 0);
    write_full(s, out, sizeof(out));
    EXPECT(read_full(s, &c, 1) && c == 'f');
    sleep_ms(500); /* the client fills the connection meanwhile */
    uint64_t n = drain_checked(s, 0);
    write_full(s, &n, sizeof(n));
    shutdown(s, SHUT_WR);
    printf("ok nonblock %llu\n", (unsigned long long)n);
}

/* ---- nbcache ---- */

static int get_int(int s, int level, int opt);

static void expect_eagain(int fd)
{
    char c;
    errno = 0;
    EXPECT(read(fd, &c, 1) == -1 && errno == EAGAIN);
}

/* Asks the server (on ctl) for one byte 30 ms from now and reads it with a read on fd that must
 * wait for it. */
static void expect_blocks(int ctl, int fd)
{
    write_full(ctl, "d", 1);
    char c = 0;
    EXPECT(read(fd, &c, 1) == 1 && c == 'D');
}

static void set_fionbio(int fd, int on)
{
    EXPECT(ioctl(fd, FIONBIO, &on) == 0);
}

static void nbcache_second(int ctl)
{
    write_full(ctl, "n", 1); /* the server accept4s it with SOCK_NONBLOCK */
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(sa);
    EXPECT(getpeername(ctl, (struct sockaddr *)&sa, &len) == 0);
    int s2 = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    EXPECT(s2 >= 0);
    if (connect(s2, (struct sockaddr *)&sa, sizeof(sa))) { /* TCP: in progress; the SAN: 0 */
        EXPECT(errno == EINPROGRESS);
        struct pollfd p = {.fd = s2, .events = POLLOUT};
        EXPECT(poll(&p, 1, 10000) == 1);
        EXPECT(get_int(s2, SOL_SOCKET, SO_ERROR) == 0);
    }
    EXPECT(fcntl(s2, F_GETFL) & O_NONBLOCK);
    expect_eagain(s2);
    set_fionbio(s2, 0);
    char c = 0;
    EXPECT(read(s2, &c, 1) == 1 && c == 'E'); /* waits: the server sends it 30 ms later */
    sleep_ms(30);
    write_full(s2, "F", 1);
    EXPECT(read(s2, &c, 1) == 0);
    close(s2);
}

static void nbcache_client(int s)
{
    int fl = fcntl(s, F_GETFL);
    EXPECT(fl >= 0 && !(fl & O_NONBLOCK));
    expect_blocks(s, s);
    set_fionbio(s, 1);
    expect_eagain(s);
    set_fionbio(s, 0);
    expect_blocks(s, s);
    EXPECT(fcntl(s, F_SETFL, fl | O_NONBLOCK) == 0);
    expect_eagain(s);
    EXPECT(fcntl(s, F_SETFL, fl) == 0);
    expect_blocks(s, s);

    /* A dup shares the open file, so its flag: a change through one is the other's. */
    int d = dup(s);
    EXPECT(d >= 0);
    EXPECT(fcntl(d, F_SETFL, fl | O_NONBLOCK) == 0);
    EXPECT(fcntl(s, F_GETFL) & O_NONBLOCK);
    expect_eagain(s);
    expect_eagain(d);
    EXPECT(fcntl(s, F_SETFL, fl) == 0);
    expect_blocks(s, d);
    int d2 = fcntl(s, F_DUPFD_CLOEXEC, 100);
    EXPECT(d2 >= 100);
    set_fionbio(d2, 1);
    expect_eagain(s);
    EXPECT(dup2(d, 200) == 200);
    set_fionbio(200, 0);
    expect_blocks(s, d2);
    EXPECT(dup3(s, 150, O_CLOEXEC) == 150);
    set_fionbio(s, 1);
    expect_eagain(150);
    set_fionbio(150, 0);
    expect_blocks(s, s);
    close(d);
    close(d2);
    close(200);
    close(150);
    expect_blocks(s, s);

    /* Behind the switch's back: the set flag holds before any wait sleeps; the cleared one after
     * the cached "non-blocking" grew older than 1 ms. */
    EXPECT(syscall(SYS_fcntl, s, F_SETFL, fl | O_NONBLOCK) == 0);
    expect_eagain(s);
    EXPECT(syscall(SYS_fcntl, s, F_SETFL, fl) == 0);
    sleep_ms(5);
    expect_blocks(s, s);

    nbcache_second(s);
    write_full(s, "q", 1);
    printf("ok nbcache\n");
}

static void nbcache_server(int s, int l)
{
    char cmd;
    while (read_full(s, &cmd, 1) && cmd != 'q') {
        if (cmd == 'd') {
            sleep_ms(30);
            write_full(s, "D", 1);
            continue;
        }
        EXPECT(cmd == 'n');
        int c2 = accept4(l, NULL, NULL, SOCK_NONBLOCK);
        EXPECT(c2 >= 0);
        EXPECT(fcntl(c2, F_GETFL) & O_NONBLOCK);
        expect_eagain(c2);
        sleep_ms(30);
        write_full(c2, "E", 1);
        EXPECT(fcntl(c2, F_SETFL, fcntl(c2, F_GETFL) & ~O_NONBLOCK) == 0);
        char c = 0;
        EXPECT(read(c2, &c, 1) == 1 && c == 'F'); /* waits: the client sends it 30 ms later */
        close(c2);
    }
    close(l);
    printf("ok nbcache\n");
}

/* ---- coalesce ---- */

enum { COALESCE_N = 10000 };

static int outq_of(int s, unsigned long req)
{
    int n = -1;
    EXPECT(ioctl(s, req, &n) == 0);
    return n;
}

static void coalesce_client(int s, bool san, bool leave)
{
    /* The server sleeps. Over the SAN: 30 bytes in 30 messages, each delivered (SIOCOUTQ 0)
     * before the next write, take the credits of the server's receives but the last (kept for
     * control messages); every later byte waits for credit in the pending message. (TCP's
     * receive buffer takes them all, so its figures say nothing: its waits are bounded.) */
    uint64_t i = 0;
    for (; i < 30; i++) {
        uint8_t b = byte_at(i);
        EXPECT(write(s, &b, 1) == 1);
        for (int t = 0; t < (san ? 2000 : 200) && outq_of(s, SIOCOUTQ); t++)
            sleep_ms(1);
    }
    for (; i < COALESCE_N; i++) {
        uint8_t b = byte_at(i);
        EXPECT(write(s, &b, 1) == 1);
    }
    int outq = outq_of(s, SIOCOUTQ), unsent = outq_of(s, SIOCOUTQNSD);
    if (san && (outq != COALESCE_N - 30 || unsent != outq))
        FAIL("SIOCOUTQ %d, SIOCOUTQNSD %d, want %d", outq, unsent, COALESCE_N - 30);
    printf("ok coalesce outq=%d unsent=%d\n", outq, unsent);
    if (leave)
        exit(0); /* the connection still open: exit delivers its bytes, then EOF */
}

static void coalesce_server(int s)
{
    sleep_ms(1000);
    uint64_t n = drain_checked(s, 0); /* every byte in order, then EOF */
    if (n != COALESCE_N)
        FAIL("read %llu bytes of %d", (unsigned long long)n, COALESCE_N);
    printf("ok coalesce %llu\n", (unsigned long long)n);
}

/* ---- epipe ---- */

static void expect_epipe(const char *what, ssize_t r, int pipes_before, bool signalled)
{
    if (r != -1 || errno != EPIPE)
        FAIL("%s gave %zd, want EPIPE", what, r);
    if (sigpipes != pipes_before + (signalled ? 1 : 0))
        FAIL("%s: %d SIGPIPEs, want %d", what, sigpipes - pipes_before, signalled ? 1 : 0);
}

static void epipe_client(int s)
{
    signal(SIGPIPE, on_sigpipe);
    EXPECT(shutdown(s, SHUT_WR) == 0);
    char b[100] = {0};
    struct iovec v = {b, sizeof(b)};
    int p0 = sigpipes;
    expect_epipe("writev", writev(s, &v, 1), p0, true);
    struct msghdr m = {.msg_iov = &v, .msg_iovlen = 1};
    p0 = sigpipes;
    expect_epipe("sendmsg MSG_NOSIGNAL", sendmsg(s, &m, MSG_NOSIGNAL), p0, false);
    p0 = sigpipes;
    expect_epipe("sendmsg", sendmsg(s, &m, 0), p0, true);
    struct mmsghdr mm[2] = {{.msg_hdr = m}, {.msg_hdr = m}};
    p0 = sigpipes;
    expect_epipe("sendmmsg", sendmmsg(s, mm, 2, 0), p0, true);
    char path[] = "/tmp/sock_calls.XXXXXX";
    int f = mkstemp(path);
    EXPECT(f >= 0 && write(f, b, sizeof(b)) == sizeof(b));
    unlink(path);
    off_t off = 0;
    p0 = sigpipes;
    expect_epipe("sendfile", sendfile(s, f, &off, sizeof(b)), p0, true);
    EXPECT(off == 0);
    close(f);
    /* The server closes once it read our EOF: writes then end in EPIPE (SIGPIPE) or ECONNRESET
     * (TCP's reset may come first); the shutdown side never changes, so EPIPE here too. */
    EXPECT(read(s, b, 1) == 0);
    printf("ok epipe sigpipes=%d\n", sigpipes);
}

static void epipe_server(int s)
{
    char b;
    EXPECT(read(s, &b, 1) == 0);
    shutdown(s, SHUT_WR);
    printf("ok epipe\n");
}

/* The client writes until the server that closed makes writes fail. */
static void closed_peer_client(int s)
{
    signal(SIGPIPE, on_sigpipe);
    char b[100] = {0};
    EXPECT(read(s, b, 1) == 0); /* the server closed */
    struct iovec v = {b, sizeof(b)};
    for (int i = 0; i < 1000; i++) {
        int p0 = sigpipes;
        ssize_t w = writev(s, &v, 1);
        if (w == -1 && errno == EPIPE) {
            EXPECT(sigpipes == p0 + 1);
            printf("ok closed-peer EPIPE after %d writes\n", i);
            return;
        }
        if (w == -1 && errno == ECONNRESET) {
            printf("ok closed-peer ECONNRESET after %d writes\n", i);
            return;
        }
        EXPECT(w == (ssize_t)sizeof(b));
        sleep_ms(10);
    }
    FAIL("writes to a closed peer kept succeeding");
}

static void close_server(int s)
{
    shutdown(s, SHUT_WR);
    printf("ok closed\n");
}

/* ---- unread, afterclose: close of a live process, the read side (TCP's RST) ---- */

#define UNREAD_BYTES 1000
/* Above the RDMA threshold (256 KiB): offers the client never reads. */
#define AFTER_BYTES (1u << 20)

/* A second connection, accepted once the server closed the first: a byte on it tells the client
 * so, and its end of file that the client is done. The server lives until then (its closed
 * connection is its process's to finish, not the daemon's). */
static void hold_after_close(int l)
{
    int d = accept(l, NULL, NULL);
    char b = 1;
    EXPECT(d >= 0);
    EXPECT(write(d, &b, 1) == 1);
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    ssize_t r = read(d, &b, 1);
    if (r != 0) { /* a byte of 0 came once: the connections were accepted swapped (docs/sock.md) */
        int e = r < 0 ? errno : 0, fl = fcntl(d, F_GETFL);
        clock_gettime(CLOCK_MONOTONIC, &t1);
        double ms = (double)(t1.tv_sec - t0.tv_sec) * 1e3 + (double)(t1.tv_nsec - t0.tv_nsec) / 1e6;
        errno = e;
        FAIL("the rendezvous's read returned %zd (byte %d) after %.0f ms (descriptor %d, "
             "O_NONBLOCK %s, listener %d)",
             r, r == 1 ? b : -1, ms, d, fl >= 0 && (fl & O_NONBLOCK) ? "set" : "clear", l);
    }
    close(d);
    close(l);
}

static int connect_to(const char *host, int port);

/* The client's side of it: returns once the server closed; close the descriptor when done. */
static int await_close(const char *host, int port)
{
    int d = connect_to(host, port);
    char b;
    EXPECT(read(d, &b, 1) == 1);
    return d;
}

/* Closes with bytes unread: the client's read fails with ECONNRESET (RST, not FIN). */
static void unread_server(int s, int l)
{
    int n = 0;
    for (int i = 0; i < 5000 && n < UNREAD_BYTES; i++) {
        EXPECT(ioctl(s, FIONREAD, &n) == 0);
        if (n < UNREAD_BYTES)
            sleep_ms(1);
    }
    EXPECT(n == UNREAD_BYTES);
    close(s);
    hold_after_close(l);
    printf("ok unread\n");
}

static void unread_client(int s, const char *host, int port)
{
    uint8_t b[UNREAD_BYTES];
    fill(b, sizeof(b), 0);
    write_full(s, b, sizeof(b));
    int d = await_close(host, port);
    ssize_t r = read(s, b, 1);
    EXPECT(r == -1 && errno == ECONNRESET);
    close(d);
    printf("ok unread: read ECONNRESET\n");
}

/* Writes AFTER_BYTES and closes while the client reads none of them, so the close is not over
 * (the client has not taken the bytes): the client's writes to it must fail soon (TCP answers
 * data for a closed socket with RST), not once the close gives up. */
static void afterclose_server(int s, int l)
{
    static uint8_t b[AFTER_BYTES];
    fill(b, sizeof(b), 0);
    write_full(s, b, sizeof(b));
    close(s);
    hold_after_close(l);
    printf("ok afterclose\n");
}

static void afterclose_client(int s, const char *host, int port)
{
    signal(SIGPIPE, on_sigpipe);
    int d = await_close(host, port);
    char b[100] = {0};
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (int i = 0; i < 1000; i++) {
        ssize_t w = write(s, b, sizeof(b));
        clock_gettime(CLOCK_MONOTONIC, &t1);
        double ms = (double)(t1.tv_sec - t0.tv_sec) * 1e3 + (double)(t1.tv_nsec - t0.tv_nsec) / 1e6;
        if (w == -1 && (errno == EPIPE || errno == ECONNRESET)) {
            const char *e = errno == EPIPE ? "EPIPE" : "ECONNRESET";
            if (ms > 2000)
                FAIL("writes to a closed peer failed only after %.0f ms", ms);
            close(d);
            printf("ok afterclose: %s after %d writes, %.0f ms\n", e, i, ms);
            return;
        }
        EXPECT(w == (ssize_t)sizeof(b));
        if (ms > 2000)
            FAIL("writes to a closed peer still succeed after %.0f ms", ms);
        sleep_ms(5);
    }
    FAIL("writes to a closed peer kept succeeding");
}

/* ---- sendfile ---- */

#define SF_SIZE   ((1u << 20) + 123)
#define SF_OFF    1000
#define SF_COUNT  300000
#define SF_BIG    (8u << 20)
#define SF_STREAM ((uint64_t)SF_COUNT + SF_SIZE + 2ull * SF_BIG)

static int make_file(size_t size)
{
    char path[] = "/tmp/sock_calls.XXXXXX";
    int f = mkstemp(path);
    EXPECT(f >= 0);
    unlink(path);
    static uint8_t buf[1 << 16];
    for (size_t at = 0; at < size;) {
        size_t n = size - at < sizeof(buf) ? size - at : sizeof(buf);
        fill(buf, n, at);
        EXPECT(write(f, buf, n) == (ssize_t)n);
        at += n;
    }
    return f;
}

static void sendfile_client(int s, bool san)
{
    int f = make_file(SF_SIZE);
    /* With an offset: *offset advances, the file position stays. */
    EXPECT(lseek(f, 5, SEEK_SET) == 5);
    off_t off = SF_OFF;
    EXPECT(sendfile(s, f, &off, SF_COUNT) == SF_COUNT);
    EXPECT(off == SF_OFF + SF_COUNT);
    EXPECT(lseek(f, 0, SEEK_CUR) == 5);
    /* Without: from the position, which advances. */
    EXPECT(lseek(f, 0, SEEK_SET) == 0);
    EXPECT(sendfile64(s, f, NULL, SF_SIZE + 1000) == SF_SIZE);
    EXPECT(lseek(f, 0, SEEK_CUR) == SF_SIZE);
    EXPECT(sendfile(s, f, NULL, 100) == 0); /* end of file */
    EXPECT(sendfile(s, f, NULL, 0) == 0);
    off = -1;
    errno = 0;
    EXPECT(sendfile(s, f, &off, 10) == -1 && errno == EINVAL);
    close(f);
    /* Non-blocking, from a big file: what fits each time, the position (or offset) advancing by
     * exactly that (the server checks every byte). */
    f = make_file(SF_BIG);
    int fl = fcntl(s, F_GETFL);
    EXPECT(fcntl(s, F_SETFL, fl | O_NONBLOCK) == 0);
    unsigned shorts = 0, eagains = 0;
    for (int with_off = 0; with_off < 2; with_off++) {
        EXPECT(lseek(f, 0, SEEK_SET) == 0);
        off = 0;
        for (off_t done = 0; done < (off_t)SF_BIG;) {
            ssize_t n = with_off ? sendfile(s, f, &off, SF_BIG - (size_t)done)
                                 : sendfile(s, f, NULL, SF_BIG - (size_t)done);
            if (n < 0 && errno == EAGAIN) {
                eagains++;
                struct pollfd p = {.fd = s, .events = POLLOUT};
                EXPECT(poll(&p, 1, 10000) == 1);
                continue;
            }
            if (n <= 0)
                FAIL("non-blocking sendfile");
            if (n < (ssize_t)(SF_BIG - (size_t)done))
                shorts++;
            done += n;
            EXPECT(with_off ? off == done && lseek(f, 0, SEEK_CUR) == 0
                            : lseek(f, 0, SEEK_CUR) == done);
        }
    }
    close(f);
    EXPECT(fcntl(s, F_SETFL, fl) == 0);
    if (san) { /* a SAN socket as the source: EINVAL (the kernel's TCP socket may splice) */
        int p[2];
        EXPECT(pipe(p) == 0);
        errno = 0;
        EXPECT(sendfile(p[1], s, NULL, 10) == -1 && errno == EINVAL);
        close(p[0]);
        close(p[1]);
    }
    EXPECT(shutdown(s, SHUT_WR) == 0);
    uint64_t n;
    EXPECT(read_full(s, &n, sizeof(n)) && n == SF_STREAM);
    printf("ok sendfile short=%u eagain=%u\n", shorts, eagains);
}

static void sendfile_server(int s)
{
    /* The stream: [SF_OFF, SF_OFF + SF_COUNT), [0, SF_SIZE), [0, SF_BIG) twice. */
    static uint8_t buf[1 << 16];
    uint64_t at = 0;
    for (;;) {
        ssize_t r = read(s, buf, sizeof(buf));
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            FAIL("read");
        if (r == 0)
            break;
        for (ssize_t i = 0; i < r; i++, at++) {
            uint64_t want = at < SF_COUNT                      ? SF_OFF + at
                            : at < SF_COUNT + SF_SIZE          ? at - SF_COUNT
                            : at < SF_COUNT + SF_SIZE + SF_BIG ? at - SF_COUNT - SF_SIZE
                                                               : at - SF_COUNT - SF_SIZE - SF_BIG;
            if (buf[i] != byte_at(want))
                FAIL("byte %llu of the stream differs", (unsigned long long)at);
        }
    }
    write_full(s, &at, sizeof(at));
    shutdown(s, SHUT_WR);
    printf("ok sendfile %llu\n", (unsigned long long)at);
}

/* ---- sockopt ---- */

static int get_int(int s, int level, int opt)
{
    int v = -12345;
    socklen_t len = sizeof(v);
    if (getsockopt(s, level, opt, &v, &len) || len != sizeof(v))
        FAIL("getsockopt %d/%d", level, opt);
    return v;
}

static void set_int(int s, int level, int opt, int v)
{
    if (setsockopt(s, level, opt, &v, sizeof(v)))
        FAIL("setsockopt %d/%d", level, opt);
}

static void sockopt_client(int s, bool san)
{
    char c;
    EXPECT(read_full(s, &c, 1) && c == 'r');
    EXPECT(get_int(s, SOL_SOCKET, SO_TYPE) == SOCK_STREAM);
    EXPECT(get_int(s, SOL_SOCKET, SO_DOMAIN) == AF_INET);
    EXPECT(get_int(s, SOL_SOCKET, SO_PROTOCOL) == IPPROTO_TCP);
    EXPECT(get_int(s, SOL_SOCKET, SO_ERROR) == 0);
    EXPECT(get_int(s, SOL_SOCKET, SO_ACCEPTCONN) == 0);
    int rcv = get_int(s, SOL_SOCKET, SO_RCVBUF), snd = get_int(s, SOL_SOCKET, SO_SNDBUF);
    EXPECT(rcv >= 4096 && snd >= 4096);
    set_int(s, SOL_SOCKET, SO_RCVBUF, 1 << 16);
    set_int(s, SOL_SOCKET, SO_SNDBUF, 1 << 16);
    EXPECT(get_int(s, SOL_SOCKET, SO_RCVBUF) > 0);
    EXPECT(get_int(s, IPPROTO_TCP, TCP_NODELAY) == 0);
    set_int(s, IPPROTO_TCP, TCP_NODELAY, 1);
    EXPECT(get_int(s, IPPROTO_TCP, TCP_NODELAY) == 1);
    set_int(s, SOL_SOCKET, SO_KEEPALIVE, 1);
    EXPECT(get_int(s, SOL_SOCKET, SO_KEEPALIVE) == 1);
    set_int(s, SOL_SOCKET, SO_REUSEADDR, 1);
    EXPECT(get_int(s, SOL_SOCKET, SO_REUSEADDR) == 1);
    int mss = get_int(s, IPPROTO_TCP, TCP_MAXSEG);
    EXPECT(mss > 500);
    struct tcp_info ti;
    socklen_t len = sizeof(ti);
    memset(&ti, 0xff, sizeof(ti));
    EXPECT(getsockopt(s, IPPROTO_TCP, TCP_INFO, &ti, &len) == 0 && len > 0);
    EXPECT(ti.tcpi_state == TCP_ESTABLISHED);
    int v = 0;
    len = sizeof(v);
    errno = 0;
    EXPECT(getsockopt(s, SOL_SOCKET, 12345, &v, &len) == -1 && errno == ENOPROTOOPT);
    /* No urgent data, an empty error queue: TCP's answers. */
    char urg;
    errno = 0;
    EXPECT(recv(s, &urg, 1, MSG_OOB) == -1 && errno == EINVAL);
    errno = 0;
    EXPECT(recv(s, &urg, 1, MSG_ERRQUEUE | MSG_DONTWAIT) == -1 && errno == EAGAIN);
    if (san) { /* urgent data cannot travel: refused, never sent inline */
        errno = 0;
        EXPECT(send(s, "u", 1, MSG_OOB | MSG_NOSIGNAL) == -1 && errno == EOPNOTSUPP);
    }

    /* sendmmsg and recvmmsg: the server echoes the two messages' 300 bytes. */
    uint8_t out[300], in[300];
    fill(out, sizeof(out), 0);
    struct iovec ov[2] = {{out, 100}, {out + 100, 200}};
    struct mmsghdr om[2] = {{.msg_hdr = {.msg_iov = &ov[0], .msg_iovlen = 1}},
                            {.msg_hdr = {.msg_iov = &ov[1], .msg_iovlen = 1}}};
    EXPECT(sendmmsg(s, om, 2, MSG_NOSIGNAL) == 2);
    EXPECT(om[0].msg_len == 100 && om[1].msg_len == 200);
    size_t got = 0;
    while (got < sizeof(in)) {
        struct iovec iv[2] = {
            {in + got, (sizeof(in) - got) / 2},
            {in + got + (sizeof(in) - got) / 2, sizeof(in) - got - (sizeof(in) - got) / 2}};
        struct mmsghdr im[2] = {{.msg_hdr = {.msg_iov = &iv[0], .msg_iovlen = 1}},
                                {.msg_hdr = {.msg_iov = &iv[1], .msg_iovlen = 1}}};
        struct timespec tmo = {5, 0};
        int n = recvmmsg(s, im, 2, MSG_WAITFORONE, &tmo);
        EXPECT(n >= 1 && n <= 2);
        /* Each message took what had arrived: the second's bytes follow the first's. */
        size_t a = im[0].msg_len, b = n == 2 ? im[1].msg_len : 0;
        EXPECT(a >= 1 && a <= iv[0].iov_len && b <= iv[1].iov_len);
        memmove(in + got + a, iv[1].iov_base, b);
        got += a + b;
        EXPECT(tmo.tv_sec <= 5);
    }
    check(in, sizeof(in), 0);
    EXPECT(get_int(s, SOL_SOCKET, SO_ERROR) == 0);

    /* An abortive close: the server's read fails with ECONNRESET. */
    struct linger l = {1, 0};
    EXPECT(setsockopt(s, SOL_SOCKET, SO_LINGER, &l, sizeof(l)) == 0);
    memset(&l, 0, sizeof(l));
    len = sizeof(l);
    EXPECT(getsockopt(s, SOL_SOCKET, SO_LINGER, &l, &len) == 0 && l.l_onoff && !l.l_linger);
    close(s);
    printf("ok sockopt rcvbuf=%d sndbuf=%d mss=%d\n", rcv, snd, mss);
}

static void sockopt_server(int s)
{
    /* The accepting side's descriptor is the switch's own socket there: the same answers. */
    EXPECT(get_int(s, SOL_SOCKET, SO_TYPE) == SOCK_STREAM);
    EXPECT(get_int(s, SOL_SOCKET, SO_DOMAIN) == AF_INET);
    EXPECT(get_int(s, SOL_SOCKET, SO_PROTOCOL) == IPPROTO_TCP);
    EXPECT(get_int(s, SOL_SOCKET, SO_ERROR) == 0);
    struct tcp_info ti;
    socklen_t len = sizeof(ti);
    EXPECT(getsockopt(s, IPPROTO_TCP, TCP_INFO, &ti, &len) == 0);
    EXPECT(ti.tcpi_state == TCP_ESTABLISHED);
    write_full(s, "r", 1);
    uint8_t in[300];
    EXPECT(read_full(s, in, sizeof(in)));
    check(in, sizeof(in), 0);
    write_full(s, in, sizeof(in));
    char b;
    errno = 0;
    ssize_t r = read(s, &b, 1);
    if (r != -1 || errno != ECONNRESET)
        FAIL("read after the peer's abortive close gave %zd", r);
    printf("ok sockopt reset\n");
}

/* ---- reset (the server is SIGKILLed) ---- */

static void reset_client(int s)
{
    EXPECT(get_int(s, SOL_SOCKET, SO_ERROR) == 0);
    write_full(s, "0123456789", 10); /* never read: the kernel resets when the server dies */
    printf("connected\n");
    fflush(stdout);
    struct pollfd p = {.fd = s, .events = POLLIN};
    EXPECT(poll(&p, 1, 20000) == 1);
    if (!(p.revents & POLLERR))
        FAIL("poll after the peer died: revents %#x, want POLLERR", p.revents);
    int e = get_int(s, SOL_SOCKET, SO_ERROR);
    if (e != ECONNRESET)
        FAIL("SO_ERROR %d (%s), want ECONNRESET", e, strerror(e));
    EXPECT(get_int(s, SOL_SOCKET, SO_ERROR) == 0); /* reported once */
    char b;
    ssize_t r = read(s, &b, 1);
    EXPECT(r == 0 || (r == -1 && errno == ECONNRESET));
    printf("ok reset\n");
}

static void hang_server(int s)
{
    printf("accepted\n");
    fflush(stdout);
    for (;;)
        pause();
}

/* ---- killsend / killrecv ---- */

static void killsend_client(int s)
{
    signal(SIGPIPE, SIG_IGN);
    static uint8_t buf[1 << 16];
    uint64_t sent = 0;
    for (;;) {
        fill(buf, sizeof(buf), sent);
        struct iovec v[2] = {{buf, 1000}, {buf + 1000, sizeof(buf) - 1000}};
        ssize_t w = writev(s, v, 2);
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0) {
            if (errno != EPIPE && errno != ECONNRESET)
                FAIL("writev to a killed peer");
            printf("ok killsend %s after %llu bytes\n", errno == EPIPE ? "EPIPE" : "ECONNRESET",
                   (unsigned long long)sent);
            return;
        }
        sent += (uint64_t)w;
    }
}

static void slow_reader_server(int s)
{
    static uint8_t buf[1 << 16];
    uint64_t at = 0;
    bool told = false;
    for (;;) {
        struct iovec v[2] = {{buf, 3}, {buf + 3, sizeof(buf) - 3}};
        ssize_t r = readv(s, v, 2);
        if (r <= 0)
            FAIL("readv before being killed");
        check(buf, (size_t)r, at);
        at += (uint64_t)r;
        if (!told && at >= (1u << 20)) {
            printf("got\n");
            fflush(stdout);
            told = true;
        }
        if (told)
            sleep_ms(1);
    }
}

static void killrecv_client(int s)
{
    static uint8_t buf[1 << 16];
    uint64_t at = 0;
    for (;;) {
        struct iovec v[2] = {{buf, 5}, {buf + 5, sizeof(buf) - 5}};
        ssize_t r = readv(s, v, 2);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0 && errno != ECONNRESET)
            FAIL("readv from a killed peer");
        if (r <= 0) {
            printf("ok killrecv %s after %llu bytes\n", r ? "ECONNRESET" : "EOF",
                   (unsigned long long)at);
            return;
        }
        check(buf, (size_t)r, at);
        at += (uint64_t)r;
    }
}

static void endless_writer_server(int s)
{
    static uint8_t buf[1 << 16];
    uint64_t sent = 0;
    bool told = false;
    for (;;) {
        fill(buf, sizeof(buf), sent);
        struct iovec v[2] = {{buf, 7}, {buf + 7, sizeof(buf) - 7}};
        ssize_t w = writev(s, v, 2);
        if (w <= 0)
            FAIL("writev before being killed");
        sent += (uint64_t)w;
        if (!told && sent >= (1u << 20)) {
            printf("sent\n");
            fflush(stdout);
            told = true;
        }
    }
}

/* ---- fortify ---- */

static void fortify_client(int s, size_t step)
{
    /* Lengths the compiler cannot see, into buffers whose sizes it can: glibc's fortified
     * read/recv/recvfrom/poll call __read_chk, __recv_chk, __recvfrom_chk, __poll_chk. */
    enum { LEN = 10000 };
    static uint8_t in[LEN];
    uint8_t tmp[8192]; /* ARG (the step) must fit: a larger one ends in __chk_fail */
    struct pollfd p[1] = {{.fd = s, .events = POLLIN}};
    volatile nfds_t one = 1;
    size_t got = 0;
    for (int turn = 0;; turn++) {
        size_t n = step < LEN - got ? step : LEN - got;
        if (!n)
            n = 1 + (step & 1); /* the EOF read, with a length still unknown to the compiler */
        EXPECT(poll(p, one, 10000) == 1);
        ssize_t r;
        if (turn % 3 == 0) {
            r = read(s, tmp, n);
        } else if (turn % 3 == 1) {
            r = recv(s, tmp, n, 0);
        } else {
            struct sockaddr_storage ss;
            socklen_t sl = sizeof(ss);
            r = recvfrom(s, tmp, n, 0, (struct sockaddr *)&ss, &sl);
            EXPECT(r <= 0 || sl == 0);
        }
        if (r > 0 && got + (size_t)r <= LEN)
            memcpy(in + got, tmp, (size_t)r);
        if (r < 0)
            FAIL("fortified read, turn %d", turn);
        if (r == 0)
            break;
        EXPECT(got + (size_t)r <= LEN);
        got += (size_t)r;
    }
    EXPECT(got == LEN);
    check(in, LEN, 0);
    printf("ok fortify\n");
}

/* ---- main ---- */

/* Listens, prints the port, accepts one connection; the listener goes to *lsn (NULL: closed). */
static int listen_one(int *lsn)
{
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    int l = socket(AF_INET, SOCK_STREAM, 0);
    socklen_t len = sizeof(sa);
    if (l < 0 || bind(l, (struct sockaddr *)&sa, sizeof(sa)) || listen(l, 4) ||
        getsockname(l, (struct sockaddr *)&sa, &len))
        FAIL("listen");
    printf("port %d\n", ntohs(sa.sin_port));
    fflush(stdout);
    int s = accept(l, NULL, NULL);
    if (s < 0)
        FAIL("accept");
    if (lsn)
        *lsn = l;
    else
        close(l);
    return s;
}

static int connect_to(const char *host, int port)
{
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    int s = socket(AF_INET, SOCK_STREAM, 0);
    if (s < 0 || inet_pton(AF_INET, host, &sa.sin_addr) != 1 ||
        connect(s, (struct sockaddr *)&sa, sizeof(sa)))
        FAIL("connect");
    return s;
}

int main(int argc, char **argv)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (argc >= 3 && !strcmp(argv[1], "server")) {
        role = argv[2];
        alarm(60); /* a server that never hears from its client fails instead of hanging */
        int l = -1;
        bool closes = !strcmp(role, "unread") || !strcmp(role, "afterclose"); /* s, itself */
        int s = listen_one(closes || !strcmp(role, "nbcache") ? &l : NULL);
        if (!strcmp(role, "vec"))
            vec_server(s);
        else if (!strcmp(role, "nbcache"))
            nbcache_server(s, l);
        else if (!strcmp(role, "coalesce"))
            coalesce_server(s);
        else if (!strcmp(role, "pack") || !strcmp(role, "nonblock-count"))
            count_server(s);
        else if (!strcmp(role, "peek") || !strcmp(role, "fortify"))
            send_pattern_server(s, 10000);
        else if (!strcmp(role, "nonblock"))
            nonblock_server(s);
        else if (!strcmp(role, "epipe"))
            epipe_server(s);
        else if (!strcmp(role, "closed"))
            close_server(s);
        else if (!strcmp(role, "unread"))
            unread_server(s, l);
        else if (!strcmp(role, "afterclose"))
            afterclose_server(s, l);
        else if (!strcmp(role, "sendfile"))
            sendfile_server(s);
        else if (!strcmp(role, "sockopt"))
            sockopt_server(s);
        else if (!strcmp(role, "reset"))
            hang_server(s);
        else if (!strcmp(role, "killsend"))
            slow_reader_server(s);
        else if (!strcmp(role, "killrecv"))
            endless_writer_server(s);
        else
            FAIL("unknown role");
        if (!closes)
            close(s);
        return 0;
    }
    if (argc >= 5 && !strcmp(argv[1], "client")) {
        role = argv[2];
        alarm(60); /* no hang: a call that never returns fails the run */
        const char *arg = argc > 5 ? argv[5] : "";
        int s = connect_to(argv[3], atoi(argv[4]));
        if (!strcmp(role, "vec"))
            vec_client(s);
        else if (!strcmp(role, "pack"))
            pack_client(s, atoi(arg));
        else if (!strcmp(role, "peek"))
            peek_client(s);
        else if (!strcmp(role, "nonblock"))
            nonblock_client(s);
        else if (!strcmp(role, "nbcache"))
            nbcache_client(s);
        else if (!strcmp(role, "coalesce"))
            coalesce_client(s, !strncmp(arg, "san", 3), strstr(arg, "exit") != NULL);
        else if (!strcmp(role, "epipe"))
            epipe_client(s);
        else if (!strcmp(role, "closed"))
            closed_peer_client(s);
        else if (!strcmp(role, "unread"))
            unread_client(s, argv[3], atoi(argv[4]));
        else if (!strcmp(role, "afterclose"))
            afterclose_client(s, argv[3], atoi(argv[4]));
        else if (!strcmp(role, "sendfile"))
            sendfile_client(s, !strcmp(arg, "san"));
        else if (!strcmp(role, "sockopt"))
            sockopt_client(s, !strcmp(arg, "san"));
        else if (!strcmp(role, "reset"))
            reset_client(s);
        else if (!strcmp(role, "killsend"))
            killsend_client(s);
        else if (!strcmp(role, "killrecv"))
            killrecv_client(s);
        else if (!strcmp(role, "fortify"))
            fortify_client(s, (size_t)atoi(arg));
        else
            FAIL("unknown role");
        if (strcmp(role, "sockopt"))
            close(s);
        return 0;
    }
    fprintf(stderr, "usage: sock_calls server ROLE | client ROLE ADDR PORT [ARG]\n");
    return 2;
}
