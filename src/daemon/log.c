/* sanproxyd's log: one line per event on stderr, "sanproxyd[pid]: LEVEL: message". The threshold
 * is info by default; -v on the command line or SANPROXY_LOG=debug|info|warn|error changes it.
 * Thread-safe: each line is one fprintf on a locked stream. */
#include "daemon/daemon.h"

#include <stdio.h>
#include <unistd.h>

enum san_log_level san_log_threshold = SAN_LOG_INFO;

static const char *const names[] = {"error", "warn", "info", "debug"};

void san_log(enum san_log_level level, const char *fmt, ...)
{
    char line[1024];
    va_list ap;

    if (level > san_log_threshold)
        return;
    va_start(ap, fmt);
    vsnprintf(line, sizeof(line), fmt, ap);
    va_end(ap);
    fprintf(stderr, "sanproxyd[%d]: %s: %s\n", (int)getpid(), names[level], line);
}
