/* sanrun: runs a program with the sockets switch (libsansock.so) preloaded, so that its TCP
 * connections to programs also under sanrun travel over the SAN (docs/sock.md).
 *
 *   sanrun [--socket PATH] PROGRAM ARGS...
 *
 * Finds libsansock.so relative to its own executable (../lib in the build tree, ../LIBDIR when
 * installed), puts it first in LD_PRELOAD (keeping what was there), sets SANPROXY_SOCKET when
 * --socket is given, and execs the program (searched in PATH). */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#ifndef SANRUN_LIBDIR
#define SANRUN_LIBDIR "lib"
#endif

static void usage(FILE *f)
{
    fprintf(f,
            "usage: sanrun [--socket PATH] PROGRAM ARGS...\n"
            "Runs PROGRAM with libsansock.so preloaded: its TCP connections to programs also run\n"
            "under sanrun go over the SAN of sanproxyd; everything else stays TCP.\n"
            "  --socket PATH  sanproxyd's socket (sets SANPROXY_SOCKET)\n"
            "  --help         this text\n"
            "  --version      the version\n"
            "Environment: SANSOCK_DISABLE=1 (all TCP), SANSOCK_RDMA_THRESHOLD (bytes: larger\n"
            "writes by RDMA, 262144), SANSOCK_RDMA=0 (no RDMA), SANSOCK_RDMA_WRITE=1|2 (write\n"
            "mode, sinks in staging memory|the program's buffer; default 0: read mode only),\n"
            "SANSOCK_CONNECT_TIMEOUT_MS (5000).\n");
}

/* The library next to this program: 0 and its absolute path in out. */
static int find_library(char *out, size_t size)
{
    char self[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
    if (n <= 0)
        return -errno;
    self[n] = '\0';
    char *slash = strrchr(self, '/');
    if (!slash)
        return -ENOENT;
    *slash = '\0';
    const char *dirs[] = {"../lib", "../" SANRUN_LIBDIR};
    for (size_t i = 0; i < sizeof(dirs) / sizeof(dirs[0]); i++) {
        char path[PATH_MAX + 64];
        snprintf(path, sizeof(path), "%s/%s/libsansock.so", self, dirs[i]);
        if (realpath(path, out) && strlen(out) < size && !access(out, R_OK))
            return 0;
    }
    return -ENOENT;
}

int main(int argc, char **argv)
{
    const char *socket_path = NULL;
    int i = 1;
    for (; i < argc && argv[i][0] == '-'; i++) {
        if (!strcmp(argv[i], "--")) {
            i++;
            break;
        } else if (!strcmp(argv[i], "--socket")) {
            if (++i == argc) {
                fprintf(stderr, "sanrun: --socket needs a path\n");
                return 2;
            }
            socket_path = argv[i];
        } else if (!strcmp(argv[i], "--help")) {
            usage(stdout);
            return 0;
        } else if (!strcmp(argv[i], "--version")) {
            printf("sanrun (sanproxy) %s\n", SAN_VERSION);
            return 0;
        } else {
            fprintf(stderr, "sanrun: unknown option %s\n", argv[i]);
            usage(stderr);
            return 2;
        }
    }
    if (i == argc) {
        fprintf(stderr, "sanrun: no program to run\n");
        usage(stderr);
        return 2;
    }
    char lib[PATH_MAX];
    int err = find_library(lib, sizeof(lib));
    if (err) {
        fprintf(stderr, "sanrun: libsansock.so not found next to sanrun: %s\n", strerror(-err));
        return 1;
    }
    const char *old = getenv("LD_PRELOAD");
    size_t len = strlen(lib) + (old ? strlen(old) + 2 : 1);
    char *preload = malloc(len);
    if (!preload) {
        perror("sanrun");
        return 1;
    }
    snprintf(preload, len, "%s%s%s", lib, old && *old ? " " : "", old ? old : "");
    if (setenv("LD_PRELOAD", preload, 1) ||
        (socket_path && setenv("SANPROXY_SOCKET", socket_path, 1))) {
        perror("sanrun");
        return 1;
    }
    execvp(argv[i], argv + i);
    fprintf(stderr, "sanrun: %s: %s\n", argv[i], strerror(errno));
    return errno == ENOENT ? 127 : 126;
}
