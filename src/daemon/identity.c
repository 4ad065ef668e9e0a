/* Who a client is: fixed once, when the daemon accepts its connection, and checked again before
 * every request.
 *
 * At accept the daemon takes the peer's SO_PEERCRED (pid, uid, gid) and a pidfd for that very
 * process (SO_PEERPIDFD: the kernel's reference to the process that connected, which a later
 * process given the same pid can never be). A client whose process has already exited is refused:
 * its connection may have waited in the backlog while another process took its pid, and any file
 * opened by that pid now would describe the other process. The client's /proc/PID/pagemap,
 * /proc/PID/maps and /proc/PID/mem are then opened and the pidfd asked once more whether the
 * process lives: if it does, the pid still named it while the files were opened, so they are its
 * address space for good. Those descriptors read nothing once the process execs (a new address
 * space, a new program) or exits, which is how the daemon tells that the program it accepted is
 * gone even while the pid and the socket live on (san_identity_current).
 *
 * Every request also carries its sender's credentials (SO_PASSCRED, set on the listening socket
 * and inherited): a request written on the connection by any other process (a forked child, a
 * process the descriptor was passed to) is refused. On kernels without SO_PEERPIDFD the pidfd is
 * opened from the credential's pid, and a pid reused before that is not detected (logged once).
 * No locking: the daemon's one thread. */
#include "daemon/daemon.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "mdl/mdl.h"

#ifndef SO_PEERPIDFD
#define SO_PEERPIDFD 77
#endif

/* Whether the process a pidfd names has exited (the pidfd is readable then). */
static bool pidfd_exited(int pidfd)
{
    struct pollfd p = {.fd = pidfd, .events = POLLIN};
    int n;
    do
        n = poll(&p, 1, 0);
    while (n < 0 && errno == EINTR);
    return n != 0;
}

static int peer_pidfd(int fd, pid_t pid)
{
    static bool warned;
    int pidfd;
    socklen_t len = sizeof(pidfd);
    if (!getsockopt(fd, SOL_SOCKET, SO_PEERPIDFD, &pidfd, &len) && len == sizeof(pidfd))
        return pidfd;
    if (errno != ENOPROTOOPT)
        return -1; /* out of descriptors, or the process that connected is gone */
    if (!warned) {
        warned = true;
        log_warn("no SO_PEERPIDFD (kernel before 6.5): client pids are not proof against reuse");
    }
    pidfd = (int)syscall(SYS_pidfd_open, pid, 0);
    if (pidfd >= 0)
        fcntl(pidfd, F_SETFD, FD_CLOEXEC);
    return pidfd;
}

static int open_proc(pid_t pid, const char *what, int mode)
{
    char path[48];
    snprintf(path, sizeof(path), "/proc/%d/%s", (int)pid, what);
    return open(path, mode | O_CLOEXEC);
}

int san_identity_take(struct san_client *c, int fd)
{
    struct ucred cred;
    socklen_t len = sizeof(cred);
    int err;

    c->pidfd = c->owner.pagemap_fd = c->owner.maps_fd = c->owner.mem_fd = -1;
    if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) || cred.pid <= 0)
        return -EPERM;
    c->pid = cred.pid;
    c->uid = cred.uid;
    c->gid = cred.gid;
    c->pidfd = peer_pidfd(fd, cred.pid);
    if (c->pidfd < 0)
        return errno == EMFILE || errno == ENFILE ? -errno : -ESRCH;
    if (pidfd_exited(c->pidfd)) {
        err = -ESRCH;
        goto fail;
    }
    /* Without these the client may allocate but not register (the daemon cannot see its memory:
     * another user's process, or a process that is not dumpable). */
    c->owner.pagemap_fd = open_proc(cred.pid, "pagemap", O_RDONLY);
    c->owner.maps_fd = c->owner.pagemap_fd >= 0 ? open_proc(cred.pid, "maps", O_RDONLY) : -1;
    c->owner.mem_fd = c->owner.maps_fd >= 0 ? open_proc(cred.pid, "mem", O_RDWR) : -1;
    if (c->owner.mem_fd < 0) {
        if (errno == EMFILE || errno == ENFILE) {
            err = -errno;
            goto fail;
        }
        if (c->owner.maps_fd >= 0)
            close(c->owner.maps_fd);
        if (c->owner.pagemap_fd >= 0)
            close(c->owner.pagemap_fd);
        c->owner.pagemap_fd = c->owner.maps_fd = -1;
    }
    if (pidfd_exited(c->pidfd)) {
        err = -ESRCH;
        goto fail;
    }
    c->owner.pid = cred.pid;
    c->owner.pidfd = c->pidfd;
    return 0;
fail:
    san_identity_drop(c);
    return err;
}

void san_identity_drop(struct san_client *c)
{
    if (c->owner.mem_fd >= 0)
        close(c->owner.mem_fd);
    if (c->owner.maps_fd >= 0)
        close(c->owner.maps_fd);
    if (c->owner.pagemap_fd >= 0)
        close(c->owner.pagemap_fd);
    if (c->pidfd >= 0)
        close(c->pidfd);
    c->pidfd = c->owner.pagemap_fd = c->owner.maps_fd = c->owner.mem_fd = -1;
}

bool san_identity_can_register(const struct san_client *c)
{
    return c->owner.pagemap_fd >= 0 && c->owner.maps_fd >= 0 && c->owner.mem_fd >= 0;
}

bool san_identity_current(const struct san_client *c)
{
    /* Without the files there is nothing of the process the client could reach. */
    return !san_identity_can_register(c) || san_owner_alive(&c->owner);
}
