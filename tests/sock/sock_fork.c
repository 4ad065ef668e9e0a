/* fork with a connection open, as docs/sock.md defines it, using plain socket calls:
 *
 *   sock_fork ADDR PORT   connects to a sock_echo server and forks. The child finds the inherited
 *                         connection dead for use under sanrun (send and recv: ECONNRESET, poll:
 *                         POLLERR|POLLHUP) or alive without it (plain TCP), closes its copy and
 *                         exits. The parent then echoes 100000 bytes on the same connection.
 *                         Prints "ok child=san" or "ok child=tcp". */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: sock_fork ADDR PORT\n");
        return 2;
    }
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(argv[2]))};
    int s = socket(AF_INET, SOCK_STREAM, 0);
    if (s < 0 || inet_pton(AF_INET, argv[1], &sa.sin_addr) != 1 ||
        connect(s, (struct sockaddr *)&sa, sizeof(sa))) {
        perror("sock_fork: connect");
        return 1;
    }
    pid_t pid = fork();
    if (pid == 0) {
        char b = 'x';
        ssize_t w = send(s, &b, 1, MSG_NOSIGNAL | MSG_DONTWAIT);
        int werr = errno;
        ssize_t r = recv(s, &b, 1, MSG_DONTWAIT);
        int rerr = errno;
        struct pollfd p = {.fd = s, .events = POLLIN};
        int pr = poll(&p, 1, 0);
        int code = 3;
        if (w < 0 && werr == ECONNRESET && r < 0 && rerr == ECONNRESET && pr == 1 &&
            (p.revents & (POLLERR | POLLHUP)) == (POLLERR | POLLHUP))
            code = 10; /* dead for use: the SAN rule */
        else if (w == 1 && r < 0 && rerr == EAGAIN)
            code = 11; /* TCP: the child shares the connection (its byte is echoed to the parent) */
        else if (w == 1 && r == 1)
            code = 12; /* TCP, and the child read its own byte's echo already */
        else
            fprintf(stderr, "sock_fork child: send %zd (%s) recv %zd (%s) poll %d revents %#x\n", w,
                    strerror(werr), r, strerror(rerr), pr, p.revents);
        if (close(s))
            code = 4;
        _exit(code);
    }
    int st;
    if (pid < 0 || waitpid(pid, &st, 0) != pid || !WIFEXITED(st) || WEXITSTATUS(st) < 10 ||
        WEXITSTATUS(st) > 12) {
        fprintf(stderr, "sock_fork: child failed\n");
        return 1;
    }
    bool san = WEXITSTATUS(st) == 10;
    static char out[100000], in[100001];
    for (size_t i = 0; i < sizeof(out); i++)
        out[i] = (char)(i * 31 + 7);
    bool echo_pending = WEXITSTATUS(st) == 11;
    size_t sent = 0, got = 0, want = sizeof(out) + echo_pending;
    while (sent < sizeof(out)) {
        ssize_t w = send(s, out + sent, sizeof(out) - sent, MSG_NOSIGNAL);
        if (w <= 0) {
            perror("sock_fork: send");
            return 1;
        }
        sent += (size_t)w;
    }
    shutdown(s, SHUT_WR);
    for (;;) {
        ssize_t r = recv(s, in + got, sizeof(in) - got, 0);
        if (r < 0) {
            perror("sock_fork: recv");
            return 1;
        }
        if (r == 0)
            break;
        got += (size_t)r;
    }
    if (got != want || memcmp(in + echo_pending, out, sizeof(out))) {
        fprintf(stderr, "sock_fork: echo: %zu bytes, want %zu\n", got, want);
        return 1;
    }
    printf("ok child=%s\n", san ? "san" : "tcp");
    close(s);
    return 0;
}
