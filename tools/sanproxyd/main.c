/* sanproxyd: the SAN proxy daemon. Parses the command line, $SANPROXY_LOG and the config, then
 * runs the server (src/daemon). `sanproxyd [--config FILE] [--socket PATH] [--foreground]
 * [--ready-fd FD] [--spin-us N] [-v]`. Without --foreground it detaches once the socket is ready
 * (the parent exits 0 then, or 1 when start-up failed). Exit status: 0 after SIGTERM, 1 on a
 * start-up failure, 2 on a usage or config error (a bad $SANPROXY_LOG among them). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "daemon/daemon.h"

static void usage(FILE *f)
{
    fprintf(f, "usage: sanproxyd [--config FILE] [--socket PATH] [--foreground] [--ready-fd FD] "
               "[--spin-us N] [-v|--verbose]\n"
               "  --config FILE   INI file (keys in docs/daemon.md); none: built-in defaults\n"
               "  --socket PATH   control socket (default $XDG_RUNTIME_DIR/sanproxy.sock, else "
               "/tmp/sanproxy.sock)\n"
               "  --foreground    stay attached (logs on stderr)\n"
               "  --ready-fd FD   write \"ready\\n\" to FD once the socket accepts connections\n"
               "  --spin-us N     poll N microseconds after a request before sleeping (default "
               "50, 0: never)\n"
               "  -v, --verbose   debug logging (else $SANPROXY_LOG: error, warn, info or debug)\n"
               "  --version       print the version and exit\n"
               "  -h, --help      this text\n");
}

/* $SANPROXY_LOG: unset or empty keeps the default; anything but a level name is an error (a typo
 * would otherwise silently log at the default level). */
static int log_level_from_env(void)
{
    const char *s = getenv("SANPROXY_LOG");
    static const char *const names[] = {"error", "warn", "info", "debug"};
    if (!s || !*s)
        return 0;
    for (int i = 0; i < 4; i++)
        if (!strcmp(s, names[i])) {
            san_log_threshold = (enum san_log_level)i;
            return 0;
        }
    fprintf(stderr, "sanproxyd: SANPROXY_LOG: error, warn, info or debug (got \"%s\")\n", s);
    return -EINVAL;
}

/* Detaches: the parent waits for the child's "ready" and exits with the child's verdict. */
static int detach(int *ready_fd)
{
    int p[2];
    if (pipe(p))
        return -errno;
    pid_t pid = fork();
    if (pid < 0)
        return -errno;
    if (pid > 0) {
        char buf[8];
        close(p[1]);
        ssize_t n = read(p[0], buf, sizeof(buf));
        if (n > 0) {
            if (*ready_fd >= 0 && write(*ready_fd, "ready\n", 6) < 0)
                _exit(1);
            _exit(0);
        }
        int st;
        waitpid(pid, &st, 0);
        _exit(WIFEXITED(st) ? WEXITSTATUS(st) : 1);
    }
    close(p[0]);
    if (*ready_fd >= 0)
        close(*ready_fd);
    *ready_fd = p[1];
    setsid();
    return 0;
}

int main(int argc, char **argv)
{
    struct san_daemon_config cfg;
    const char *config = NULL, *sock = NULL;
    bool foreground = false;
    int ready_fd = -1;
    unsigned spin_us = SAN_DAEMON_SPIN_US;

    san_config_defaults(&cfg);
    int env_err = log_level_from_env(); /* before the options: -v wins over it */
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        bool more = i + 1 < argc;
        if (!strcmp(a, "--config") && more) {
            config = argv[++i];
        } else if (!strcmp(a, "--socket") && more) {
            sock = argv[++i];
        } else if (!strcmp(a, "--foreground") || !strcmp(a, "-f")) {
            foreground = true;
        } else if (!strcmp(a, "--ready-fd") && more) {
            char *end;
            long fd = strtol(argv[++i], &end, 10);
            if (*end || fd < 0 || fd > 1 << 20) {
                fprintf(stderr, "sanproxyd: --ready-fd: not a descriptor: %s\n", argv[i]);
                return 2;
            }
            ready_fd = (int)fd;
        } else if (!strcmp(a, "--spin-us") && more) {
            char *end;
            unsigned long v = strtoul(argv[++i], &end, 10);
            if (*end || v > 1000000) {
                fprintf(stderr, "sanproxyd: --spin-us: 0 to 1000000: %s\n", argv[i]);
                return 2;
            }
            spin_us = (unsigned)v;
        } else if (!strcmp(a, "-v") || !strcmp(a, "--verbose")) {
            san_log_threshold = SAN_LOG_DEBUG;
        } else if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            usage(stdout);
            return 0;
        } else if (!strcmp(a, "--version")) {
            printf("sanproxyd (sanproxy) %s\n", SAN_VERSION);
            return 0;
        } else {
            bool takes_value = !strcmp(a, "--config") || !strcmp(a, "--socket") ||
                               !strcmp(a, "--ready-fd") || !strcmp(a, "--spin-us");
            fprintf(stderr, "sanproxyd: %s: %s\n", a,
                    takes_value ? "needs a value" : "unknown option");
            usage(stderr);
            return 2;
        }
    }
    if (env_err)
        return 2;
    if (config) {
        char err[512];
        if (san_config_load(&cfg, config, err, sizeof(err))) {
            fprintf(stderr, "sanproxyd: config error: %s\n", err);
            return 2;
        }
    }
    if (sock) {
        if (!*sock || strlen(sock) >= sizeof(cfg.socket)) {
            fprintf(stderr, "sanproxyd: --socket: path empty or longer than %zu bytes\n",
                    sizeof(cfg.socket) - 1);
            return 2;
        }
        strcpy(cfg.socket, sock);
    }
    if (!foreground && detach(&ready_fd)) {
        fprintf(stderr, "sanproxyd: cannot detach: %s\n", strerror(errno));
        return 1;
    }
    return san_daemon_run(&cfg, ready_fd, spin_us);
}
