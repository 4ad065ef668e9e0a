/* The protection of a client's memory, read from the client's own /proc/PID/maps.
 *
 * The daemon opens the maps file once, when the client connects (server.c), after which the
 * descriptor names that process's address space for good: it cannot be redirected to another
 * process by pid reuse, and once the client execs or dies every query on it fails with -ESRCH
 * instead of answering about another image. No locking: a query is a read of the file. */
#ifndef SAN_MDL_VMA_H
#define SAN_MDL_VMA_H

#include <stdbool.h>
#include <stdint.h>

/* Tests set this to answer from the text of the file, as on kernels before 6.11. */
extern bool san_vma_text_only;

/* Checks that every byte of [start, start+len) lies in mappings that allow access (SAN_MEM_*:
 * readable always, writable too with SAN_MEM_WRITE). 0; -EFAULT when a page is unmapped or lacks
 * the access; -ESRCH when the address space is gone (the process exec'd or exited); -errno when
 * the file cannot be read. Never touches, and so never faults in, the client's memory. */
int san_vma_check(int maps_fd, uint64_t start, uint64_t len, unsigned access);

/* The file mapping that covers all of [start, start+len), as proxy memory is mapped: its file's
 * device and inode, the file offset of start, whether it is shared and its protection. */
struct san_vma_file {
    uint32_t dev_major, dev_minor;
    uint64_t inode;
    uint64_t offset; /* of start in the file */
    bool shared, readable, writable;
};

/* 0 and *out when one mapping of a file covers the whole range; -ENOENT when none does (anonymous
 * memory, a gap, several mappings); -ESRCH when the address space is gone; -errno otherwise. */
int san_vma_file(int maps_fd, uint64_t start, uint64_t len, struct san_vma_file *out);

#endif
