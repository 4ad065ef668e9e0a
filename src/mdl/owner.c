/* Reaching an owner's pages (see owner.h): the copies device accesses and bounce buffers make to
 * and from locked memory. Sits on the client's /proc/PID/mem, or process_vm_readv/writev. No
 * locking: the caller keeps the pages locked (their frames held under m->lock for reading) for
 * the copy. */
#include "mdl/owner.h"

#include <errno.h>
#include <stdbool.h>
#include <string.h>
#include <sys/uio.h>
#include <unistd.h>

/* A client's pages through its /proc/PID/mem: that address space only (after an exec or exit the
 * access fails), and a page under the client's userfaultfd fails instead of waiting for it. */
static int mem_io(int fd, void *buf, size_t len, uint64_t va, bool write)
{
    for (size_t done = 0; done < len;) {
        ssize_t n = write ? pwrite(fd, (char *)buf + done, len - done, (off_t)(va + done))
                          : pread(fd, (char *)buf + done, len - done, (off_t)(va + done));
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return -EFAULT;
        done += (size_t)n;
    }
    return 0;
}

int san_owner_read(const struct san_page_owner *o, uint64_t va, void *dst, size_t len)
{
    if (o->pid == 0) {
        memcpy(dst, (const void *)(uintptr_t)va, len);
        return 0;
    }
    if (o->mem_fd >= 0)
        return mem_io(o->mem_fd, dst, len, va, false);
    struct iovec local = {dst, len}, remote = {(void *)(uintptr_t)va, len};
    ssize_t n;
    while ((n = process_vm_readv(o->pid, &local, 1, &remote, 1, 0)) < 0 && errno == EINTR)
        ;
    return n == (ssize_t)len ? 0 : -EFAULT;
}

int san_owner_write(const struct san_page_owner *o, uint64_t va, const void *src, size_t len)
{
    if (o->pid == 0) {
        memcpy((void *)(uintptr_t)va, src, len);
        return 0;
    }
    if (o->mem_fd >= 0)
        return mem_io(o->mem_fd, (void *)src, len, va, true);
    struct iovec local = {(void *)src, len}, remote = {(void *)(uintptr_t)va, len};
    ssize_t n;
    while ((n = process_vm_writev(o->pid, &local, 1, &remote, 1, 0)) < 0 && errno == EINTR)
        ;
    return n == (ssize_t)len ? 0 : -EFAULT;
}
