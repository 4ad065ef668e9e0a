/* The owner of locked pages: a process, this one (pid 0) or a daemon client reached through its
 * pidfd. An MDL locks a range of its owner's address space; its frame records point at the owner
 * (an opaque pointer to phys), so that a device access reaches the owner's bytes. */
#ifndef SAN_MDL_OWNER_H
#define SAN_MDL_OWNER_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* Whose pages locked frames are: this process (pid 0) or a client reached through its pidfd.
 * pagemap_fd and maps_fd are the client's /proc/PID/pagemap and /proc/PID/maps, opened while its
 * pidfd showed it alive (so they are that process's address space, whatever happens to the pid
 * later, and read nothing once it exec'd or exited), or -1. pagemap_fd makes validating a client's
 * range one read instead of a remote page walk per page; maps_fd gives the range's protection
 * (mdl.c, vma.c); mem_fd is how devices reach the pages (owner.c): bound to the address space it
 * was opened on, and never blocked by the client's userfaultfd (an access that would wait fails).
 */
struct san_page_owner {
    pid_t pid;
    int pidfd;
    int pagemap_fd;
    int maps_fd;
    int mem_fd; /* /proc/PID/mem, or -1: devices reach the pages through it (owner.c) */
};

/* Copies between a buffer and the owner's pages at va: memcpy for this process, its mem_fd for a
 * client (whose pages it pinned itself), or process_vm_readv/writev where there is none. 0 or
 * -EFAULT. */
int san_owner_read(const struct san_page_owner *o, uint64_t va, void *dst, size_t len);
int san_owner_write(const struct san_page_owner *o, uint64_t va, const void *src, size_t len);

#endif
