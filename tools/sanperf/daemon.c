/* sanperf: a private sanproxyd for the suites that go through the daemon (reg, rcache). The binary
 * next to sanperf is started in the foreground on a socket in a fresh temporary directory; its
 * readiness comes through --ready-fd (no polling); it dies with sanperf (PR_SET_PDEATHSIG) and is
 * stopped with SIGTERM. Its log is discarded unless $SANPERF_DAEMON_LOG is set. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <san/san.h>

#include "perf.h"

void perf_pin_to_cpu(int cpu)
{
    if (cpu < 0)
        return;
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    sched_setaffinity(0, sizeof(set), &set);
}

int perf_start_daemon(struct perf_daemon *d, const char *suite, const char *spin_us, int cpu)
{
    char exe[PATH_MAX], path[PATH_MAX + 16], fdbuf[16];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
    int p[2], err;

    if (n <= 0)
        return -errno;
    exe[n] = 0;
    char *slash = strrchr(exe, '/');
    if (!slash)
        return -ENOENT;
    *slash = 0;
    snprintf(path, sizeof(path), "%s/sanproxyd", exe);
    if (access(path, X_OK)) {
        fprintf(stderr, "sanperf %s: no sanproxyd next to sanperf (%s)\n", suite, path);
        return -ENOENT;
    }
    strcpy(d->dir, "/tmp/sanperf.XXXXXX");
    if (!mkdtemp(d->dir))
        return -errno;
    snprintf(d->sock, sizeof(d->sock), "%s/sock", d->dir);
    if (pipe(p)) {
        err = -errno;
        goto fail_dir;
    }
    pid_t parent = getpid();
    d->pid = fork();
    if (d->pid < 0) {
        err = -errno;
        close(p[0]);
        close(p[1]);
        goto fail_dir;
    }
    if (!d->pid) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != parent)
            _exit(127);
        perf_pin_to_cpu(cpu);
        close(p[0]);
        int null = open("/dev/null", O_WRONLY);
        if (null >= 0 && !getenv("SANPERF_DAEMON_LOG"))
            dup2(null, 2);
        snprintf(fdbuf, sizeof(fdbuf), "%d", p[1]);
        if (spin_us)
            execl(path, path, "--foreground", "--socket", d->sock, "--ready-fd", fdbuf, "--spin-us",
                  spin_us, (char *)NULL);
        else
            execl(path, path, "--foreground", "--socket", d->sock, "--ready-fd", fdbuf,
                  (char *)NULL);
        _exit(127);
    }
    close(p[1]);
    char buf[8] = {0};
    n = read(p[0], buf, sizeof(buf));
    close(p[0]);
    if (n <= 0) {
        waitpid(d->pid, NULL, 0);
        err = -ECHILD;
        goto fail_dir;
    }
    return 0;

fail_dir:
    rmdir(d->dir);
    return err;
}

void perf_stop_daemon(struct perf_daemon *d)
{
    kill(d->pid, SIGTERM);
    waitpid(d->pid, NULL, 0);
    rmdir(d->dir);
}

/* Opens a context whose cache is disabled, whatever the environment says. */
int perf_open_uncached(const char *sock, struct san_ctx **out)
{
    char *old = getenv("SAN_RCACHE_MAX_ENTRIES");
    char *saved = old ? strdup(old) : NULL;
    setenv("SAN_RCACHE_MAX_ENTRIES", "0", 1);
    int err = san_open(sock, out);
    if (saved)
        setenv("SAN_RCACHE_MAX_ENTRIES", saved, 1);
    else
        unsetenv("SAN_RCACHE_MAX_ENTRIES");
    free(saved);
    return err;
}
