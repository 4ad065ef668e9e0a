/* Internals of memory descriptor lists, shared by mdl, dma and the daemon.
 *
 * An MDL describes a locked buffer: its owner (this process, pid 0, or a client process), the
 * owner's virtual range, the access a device has, and its page list. The page list is a short
 * array of pieces: each piece is one SAN_FRAMES_LOCKED frame record of the machine (a run of
 * physically contiguous frames), or for an allocated MDL the frames of an allocation, covering
 * consecutive pages of the buffer, so page i is found by a
 * binary search over the pieces (O(log pieces)) and a transfer walks whole pieces, never pages.
 *
 * Locking: an MDL is immutable between lock and unlock; any thread may read it. Locking and
 * unlocking take m->lock for writing (frames) and, for this process, a process-wide mutex that
 * makes mlock/munlock of overlapping MDLs nest (a page stays pinned while any MDL covers it). */
#ifndef SAN_MDL_MDL_H
#define SAN_MDL_MDL_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <san/mdl.h>

#include "common/range.h"
#include "mdl/owner.h"
#include "phys/machine.h"

/* Pieces held inline; more go to a separately allocated array. */
#define SAN_MDL_INLINE_PIECES 4

struct san_mdl_piece {
    size_t first_page;    /* index of the buffer page the piece starts at */
    size_t nr_pages;      /* pages in the piece */
    san_paddr_t pa;       /* the physical address of its first page */
    struct san_frames *f; /* the frame record the MDL gave it, or NULL (an allocated MDL's) */
};

struct san_mdl {
    struct san_machine *m;
    struct san_page_owner owner; /* frames' owner points here; pidfd is the caller's, not dup'd */
    uint64_t va;                 /* as asked: first byte of the buffer in the owner's space */
    size_t len;                  /* as asked: bytes */
    unsigned access;             /* SAN_MEM_* */
    bool allocated;              /* describes allocated frames (san_mdl_build): nothing locked */
    uint64_t page_va;            /* va rounded down to a page */
    size_t nr_pages;
    atomic_uint maps;     /* scatter-gather lists outstanding on this MDL (dma) */
    struct san_range pin; /* pid 0: the pinned page range, in the process-wide pin tree */
    size_t nr_pieces, cap_pieces;
    struct san_mdl_piece *pieces; /* inline_pieces or a heap array */
    struct san_mdl_piece inline_pieces[SAN_MDL_INLINE_PIECES];
    struct san_mdl *leak_next; /* unlocked while still mapped: kept on a list, never freed */
};

/* Locks [va, va+len) of owner's address space, as san_mdl_lock does, for the daemon.
 * owner->pid == 0: this process; the range is checked (mapped, and readable, or writable when
 * access has SAN_MEM_WRITE) and pinned with mlock.
 * owner->pid != 0: a client that has already mlocked its pages; nothing is pinned here. With a
 * pagemap the range is checked present from it (absent pages are refused, never faulted in), with
 * maps its protection is checked (vma.h); without a pagemap (tests) the pages are read with
 * process_vm_readv on owner->pid. owner is copied; its descriptors must stay open until the MDL is
 * unlocked. Devices reach the pages with process_vm_readv/writev.
 * Errors: len 0, access not 1..3, NULL arguments: -EINVAL; a range that is not mapped (or wraps,
 * or lacks the access): -EFAULT; frames running out: -ENOMEM; mlock refused: -EPERM (no
 * privilege, RLIMIT_MEMLOCK 0) or -ENOBUFS (RLIMIT_MEMLOCK reached); the client's address space
 * gone (exec, exit): -ESRCH; process_vm_readv refused: -EPERM or -ESRCH. On failure nothing is
 * held. Blocks in mlock (page faults) for this process; never on a client with a pagemap. */
int san_mdl_lock_for(struct san_machine *m, const struct san_page_owner *owner, uint64_t va,
                     size_t len, unsigned access, struct san_mdl **out);

/* MmBuildMdlForNonPagedPool: an MDL for [va, va+len) of owner's space where the owner maps memory
 * the machine already gave out, physically contiguous from pa (the physical address of va's page):
 * a daemon client's proxy memory. Nothing is checked, locked or pinned (the memory is resident and
 * the caller has checked the mapping); the MDL's one piece is those frames, so devices reach them
 * in the RAM image, never through the owner. The caller keeps the frames allocated until
 * san_mdl_unlock, which frees nothing of them. -EINVAL, -ENOMEM. */
int san_mdl_build(struct san_machine *m, const struct san_page_owner *owner, uint64_t va,
                  size_t len, unsigned access, san_paddr_t pa, struct san_mdl **out);

/* Copies between buf and [off, off+len) of the MDL's page range (off from page_va): its frames in
 * the RAM image for an allocated MDL, the owner's pages (san_owner_read/write) otherwise. 0 or
 * -EFAULT. */
int san_mdl_read(const struct san_mdl *mdl, uint64_t off, void *buf, size_t len);
int san_mdl_write(const struct san_mdl *mdl, uint64_t off, const void *buf, size_t len);

/* Whether owner's address space is still the one its pagemap was opened on: false once the process
 * exec'd or exited (the pagemap then reads nothing), or when there is no pagemap. Owner pid 0 (this
 * process) is always alive. One read of 8 bytes; never blocks on the client. */
bool san_owner_alive(const struct san_page_owner *o);

/* The range and access the MDL was locked with (va and len as asked, not rounded to pages). */
uint64_t san_mdl_va(const struct san_mdl *mdl);
size_t san_mdl_len(const struct san_mdl *mdl);
unsigned san_mdl_access(const struct san_mdl *mdl);

/* The index of the piece holding buffer page i (i < nr_pages). O(log pieces). */
size_t san_mdl_piece_of(const struct san_mdl *mdl, size_t page);

#endif
