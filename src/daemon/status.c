/* The daemon's status page (proto.h, struct san_status_page): one page of a memfd that this
 * process maps read-write and every client maps read-only from the descriptor HELLO's reply
 * carries.
 *
 * Clients cannot write it: the memfd is sealed against growing, shrinking and any write but
 * through the mapping made before the seals (F_SEAL_FUTURE_WRITE), so neither write(2) nor a
 * writable mapping of any descriptor of it succeeds, and the descriptor handed out is a read-only
 * open of the file besides. What the page says is a hint a client acts on (ask the daemon again),
 * never something the daemon trusts back. No locking: its words are atomics with one writer each
 * (the link thread bumps networks_changes). */
#include "daemon/daemon.h"

#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdio.h>
#include <sys/mman.h>
#include <unistd.h>

int san_status_create(struct san_daemon_status *s)
{
    s->page = NULL;
    s->fd = -1;
    int fd = memfd_create("sanproxy-status", MFD_CLOEXEC | MFD_ALLOW_SEALING);
    if (fd < 0)
        return -errno;
    int err = 0;
    void *p = MAP_FAILED;
    if (ftruncate(fd, SAN_STATUS_BYTES) || (p = mmap(NULL, SAN_STATUS_BYTES, PROT_READ | PROT_WRITE,
                                                     MAP_SHARED, fd, 0)) == MAP_FAILED) {
        err = -errno;
        goto fail;
    }
    struct san_status_page *page = p;
    page->version = 1;
    atomic_store(&page->networks_changes, 1);
    page->magic = SAN_STATUS_MAGIC;
    if (fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_FUTURE_WRITE | F_SEAL_SEAL)) {
        err = -errno;
        goto fail;
    }
    /* The descriptor clients get: a read-only open of the same file where /proc allows it. */
    char path[64];
    snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
    int ro = open(path, O_RDONLY | O_CLOEXEC);
    if (ro >= 0) {
        close(fd);
        fd = ro;
    }
    s->page = page;
    s->fd = fd;
    return 0;

fail:
    if (p != MAP_FAILED)
        munmap(p, SAN_STATUS_BYTES);
    close(fd);
    return err;
}

void san_status_destroy(struct san_daemon_status *s)
{
    if (s->page)
        munmap(s->page, SAN_STATUS_BYTES);
    if (s->fd >= 0)
        close(s->fd);
    s->page = NULL;
    s->fd = -1;
}

int san_status_fd(const struct san_daemon_status *s)
{
    return s->fd >= 0 ? fcntl(s->fd, F_DUPFD_CLOEXEC, 0) : -1;
}
