/* The protection check of a client's range (vma.h), from its /proc/PID/maps descriptor.
 *
 * Linux 6.11 and later answer one query per mapping through the PROCMAP_QUERY ioctl of the maps
 * file: the mapping that covers an address, with its start, end and protection. Older kernels
 * (ENOTTY) get the text of the file parsed instead. Either way the answer describes the address
 * space the descriptor was opened on, and a range is accepted only when mappings with the access
 * cover it without a gap. The client may change a protection right after the check; that gains it
 * nothing, because the kernel checks the protection again on every access the daemon makes
 * (process_vm_writev does not force writes). No state, no locking. */
#include "mdl/vma.h"

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <san/mdl.h>

/* The kernel's ABI (linux/fs.h, 6.11), spelled here for older headers. */
struct vma_query {
    uint64_t size;
    uint64_t query_flags;
    uint64_t query_addr;
    uint64_t vma_start;
    uint64_t vma_end;
    uint64_t vma_flags;
    uint64_t vma_page_size;
    uint64_t vma_offset;
    uint64_t inode;
    uint32_t dev_major;
    uint32_t dev_minor;
    uint32_t vma_name_size;
    uint32_t build_id_size;
    uint64_t vma_name_addr;
    uint64_t build_id_addr;
};
_Static_assert(sizeof(struct vma_query) == 104, "PROCMAP_QUERY argument layout");
#define VMA_QUERY_IOCTL    _IOWR('f', 17, struct vma_query)
#define VMA_QUERY_READABLE 0x01u
#define VMA_QUERY_WRITABLE 0x02u
#define VMA_QUERY_SHARED   0x08u

bool san_vma_text_only;

static bool allows(bool readable, bool writable, unsigned access)
{
    return readable && (writable || !(access & SAN_MEM_WRITE));
}

/* -ENOTTY when the kernel has no PROCMAP_QUERY. */
static int check_by_query(int fd, uint64_t start, uint64_t end, unsigned access)
{
    for (uint64_t at = start; at < end;) {
        struct vma_query q = {.size = sizeof(q), .query_addr = at};
        if (ioctl(fd, VMA_QUERY_IOCTL, &q)) {
            if (errno == ENOENT)
                return -EFAULT; /* no mapping covers at */
            return errno == ENOTTY ? -ENOTTY : -errno;
        }
        if (q.vma_start > at || q.vma_end <= at)
            return -EFAULT;
        if (!allows(q.vma_flags & VMA_QUERY_READABLE, q.vma_flags & VMA_QUERY_WRITABLE, access))
            return -EFAULT;
        at = q.vma_end;
    }
    return 0;
}

/* Reads the whole file from offset 0. NULL with *err set on failure; *size 0 means the address
 * space is gone (a live process always has mappings). */
static char *read_maps(int fd, size_t *size, int *err)
{
    size_t cap = 16384, len = 0;
    char *buf = malloc(cap);
    if (!buf) {
        *err = -ENOMEM;
        return NULL;
    }
    for (;;) {
        if (len + 4096 > cap) {
            char *more = realloc(buf, cap * 2);
            if (!more) {
                free(buf);
                *err = -ENOMEM;
                return NULL;
            }
            buf = more;
            cap *= 2;
        }
        ssize_t n = pread(fd, buf + len, cap - len - 1, (off_t)len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            *err = -errno;
            free(buf);
            return NULL;
        }
        if (n == 0)
            break;
        len += (size_t)n;
    }
    buf[len] = 0;
    *size = len;
    return buf;
}

/* Lines "START-END PERMS ...", in address order. */
static int check_by_text(int fd, uint64_t start, uint64_t end, unsigned access)
{
    size_t size;
    int err = 0;
    char *text = read_maps(fd, &size, &err);
    if (!text)
        return err;
    if (!size) {
        free(text);
        return -ESRCH;
    }
    uint64_t at = start;
    for (char *line = text; line && *line && at < end;) {
        char *next = strchr(line, '\n');
        if (next)
            *next++ = 0;
        char *p;
        uint64_t lo = strtoull(line, &p, 16), hi = 0;
        if (*p == '-')
            hi = strtoull(p + 1, &p, 16);
        if (*p == ' ' && hi > lo && hi > at) {
            if (lo > at)
                break; /* a gap before this mapping */
            if (!allows(p[1] == 'r', p[2] == 'w', access))
                break;
            at = hi;
        }
        line = next;
    }
    free(text);
    return at >= end ? 0 : -EFAULT;
}

static int file_by_query(int fd, uint64_t start, uint64_t end, struct san_vma_file *out)
{
    struct vma_query q = {.size = sizeof(q), .query_addr = start};
    if (ioctl(fd, VMA_QUERY_IOCTL, &q))
        return errno == ENOENT ? -ENOENT : errno == ENOTTY ? -ENOTTY : -errno;
    if (q.vma_start > start || q.vma_end < end || !q.inode)
        return -ENOENT;
    *out = (struct san_vma_file){.dev_major = q.dev_major,
                                 .dev_minor = q.dev_minor,
                                 .inode = q.inode,
                                 .offset = q.vma_offset + (start - q.vma_start),
                                 .shared = q.vma_flags & VMA_QUERY_SHARED,
                                 .readable = q.vma_flags & VMA_QUERY_READABLE,
                                 .writable = q.vma_flags & VMA_QUERY_WRITABLE};
    return 0;
}

/* A line "START-END PERMS OFFSET MAJOR:MINOR INODE [PATH]" covering [start, end). */
static int file_by_text(int fd, uint64_t start, uint64_t end, struct san_vma_file *out)
{
    size_t size;
    int err = 0;
    char *text = read_maps(fd, &size, &err);
    if (!text)
        return err;
    err = size ? -ENOENT : -ESRCH;
    for (char *line = text; line && *line;) {
        char *next = strchr(line, '\n');
        if (next)
            *next++ = 0;
        unsigned long long lo, hi, off, ino;
        unsigned maj, min;
        char perms[5];
        if (sscanf(line, "%llx-%llx %4s %llx %x:%x %llu", &lo, &hi, perms, &off, &maj, &min,
                   &ino) == 7 &&
            lo <= start && start < hi) {
            if (end <= hi && ino)
                *out = (struct san_vma_file){.dev_major = maj,
                                             .dev_minor = min,
                                             .inode = ino,
                                             .offset = off + (start - lo),
                                             .shared = perms[3] == 's',
                                             .readable = perms[0] == 'r',
                                             .writable = perms[1] == 'w'};
            err = end <= hi && ino ? 0 : -ENOENT;
            break;
        }
        line = next;
    }
    free(text);
    return err;
}

int san_vma_file(int maps_fd, uint64_t start, uint64_t len, struct san_vma_file *out)
{
    if (maps_fd < 0)
        return -EPERM;
    if (!len || start + len < start)
        return -ENOENT;
    int err = san_vma_text_only ? -ENOTTY : file_by_query(maps_fd, start, start + len, out);
    if (err == -ENOTTY)
        err = file_by_text(maps_fd, start, start + len, out);
    return err;
}

int san_vma_check(int maps_fd, uint64_t start, uint64_t len, unsigned access)
{
    if (maps_fd < 0)
        return -EPERM;
    if (!len || start + len < start)
        return -EFAULT;
    int err = san_vma_text_only ? -ENOTTY : check_by_query(maps_fd, start, start + len, access);
    if (err == -ENOTTY)
        err = check_by_text(maps_fd, start, start + len, access);
    return err;
}
