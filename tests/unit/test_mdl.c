/* mdl: locking buffers of this process and of another one (san_mdl_lock, san_mdl_lock_for), page
 * lists, frame records and their owners, pinning as the kernel sees it (VmLck, also with part of
 * the buffer unmapped before the unlock), every error with nothing held, NOLOWMEM, frames running
 * out swept over the amount left, mlock limits. */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>
#include <linux/capability.h>

#include <san/san.h>

#include "mdl/mdl.h"
#include "phys/machine.h"
#include "skip.h"

#include "../vmlck.h"
#include "common/page.h"

#define GIB (UINT64_C(1) << 30)
#define MIB (UINT64_C(1) << 20)

/* Locked memory of this process as the kernel counts it, in bytes. */
static uint64_t vm_locked(void)
{
    long kib = test_vm_locked_kib();
    assert_true(kib >= 0);
    return (uint64_t)kib * 1024;
}

static void *map_pages(size_t n, int prot)
{
    void *p = mmap(NULL, n * PAGE, prot, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    assert_true(p != MAP_FAILED);
    return p;
}

static struct san_machine *machine(uint64_t ram, bool nolowmem)
{
    struct san_machine *m;
    struct san_machine_config cfg = {.ram_size = ram, .nolowmem = nolowmem};
    assert_int_equal(san_machine_create(&cfg, &m), 0);
    return m;
}

static struct san_machine_stats stats(struct san_machine *m)
{
    struct san_machine_stats s;
    assert_int_equal(san_machine_stats(m, &s), 0);
    return s;
}

static void assert_same_stats(struct san_machine *m, const struct san_machine_stats *before)
{
    struct san_machine_stats s = stats(m);
    assert_int_equal(s.free_bytes, before->free_bytes);
    assert_int_equal(s.low_free_bytes, before->low_free_bytes);
    assert_int_equal(s.locked_bytes, before->locked_bytes);
    assert_int_equal(s.free_extents, before->free_extents);
}

static void test_lock_basic(void **state)
{
    struct san_machine *m = machine(8 * GIB, false);
    struct san_machine_stats s0 = stats(m);
    uint8_t *buf = map_pages(8, PROT_READ | PROT_WRITE);
    uint64_t locked0 = vm_locked();
    struct san_mdl *mdl;

    /* Unaligned start and length: whole pages 1..4 of buf. */
    assert_int_equal(san_mdl_lock(m, buf + PAGE + 100, 3 * PAGE, SAN_MEM_READWRITE, &mdl), 0);
    assert_int_equal(san_mdl_page_count(mdl), 4);
    assert_int_equal(san_mdl_va(mdl), (uint64_t)(uintptr_t)(buf + PAGE + 100));
    assert_int_equal(san_mdl_len(mdl), 3 * PAGE);
    assert_int_equal(san_mdl_access(mdl), SAN_MEM_READWRITE);
    assert_int_equal(vm_locked() - locked0, 4 * PAGE);
    struct san_machine_stats s = stats(m);
    assert_int_equal(s.locked_bytes, 4 * PAGE);
    assert_int_equal(s0.free_bytes - s.free_bytes, 4 * PAGE);

    /* Highest memory first: one piece at the very top of RAM, in buffer order. */
    uint64_t top = 4 * GIB + (8 * GIB - (3 * GIB - MIB));
    for (size_t i = 0; i < 4; i++) {
        san_paddr_t pa = san_mdl_page(mdl, i);
        assert_int_equal(pa, top - 4 * PAGE + i * PAGE);
        struct san_frames *f = san_phys_frames_at(m, pa);
        assert_non_null(f);
        assert_int_equal(f->kind, SAN_FRAMES_LOCKED);
        assert_ptr_equal(f->tag, mdl);
        assert_int_equal(f->owner->pid, 0);
        assert_int_equal(f->access, SAN_MEM_READWRITE);
        assert_int_equal(f->owner_va + (pa - f->r.start),
                         (uint64_t)(uintptr_t)(buf + PAGE + i * PAGE));
    }
    assert_int_equal(san_mdl_page(mdl, 4), 0);
    assert_int_equal(san_mdl_page(mdl, SIZE_MAX), 0);

    san_mdl_unlock(mdl);
    assert_int_equal(vm_locked(), locked0);
    assert_same_stats(m, &s0);
    san_mdl_unlock(NULL);
    assert_int_equal(san_mdl_page_count(NULL), 0);
    munmap(buf, 8 * PAGE);
    san_machine_destroy(m);
}

static void test_lock_invalid(void **state)
{
    struct san_machine *m = machine(0, false);
    struct san_machine_stats s0 = stats(m);
    uint8_t *buf = map_pages(2, PROT_READ | PROT_WRITE);
    struct san_mdl *mdl = (struct san_mdl *)1;

    assert_int_equal(san_mdl_lock(m, buf, 0, SAN_MEM_READ, &mdl), -EINVAL);
    assert_null(mdl);
    assert_int_equal(san_mdl_lock(m, buf, PAGE, 0, &mdl), -EINVAL);
    assert_int_equal(san_mdl_lock(m, buf, PAGE, 4, &mdl), -EINVAL);
    assert_int_equal(san_mdl_lock(m, buf, PAGE, 7, &mdl), -EINVAL);
    assert_int_equal(san_mdl_lock(NULL, buf, PAGE, SAN_MEM_READ, &mdl), -EINVAL);
    assert_int_equal(san_mdl_lock(m, buf, PAGE, SAN_MEM_READ, NULL), -EINVAL);
    struct san_page_owner self = {0, -1, -1, -1, -1};
    assert_int_equal(san_mdl_lock_for(m, NULL, (uintptr_t)buf, PAGE, SAN_MEM_READ, &mdl), -EINVAL);
    assert_int_equal(san_mdl_lock_for(m, &self, (uintptr_t)buf, 0, SAN_MEM_READ, &mdl), -EINVAL);
    assert_same_stats(m, &s0);
    munmap(buf, 2 * PAGE);
    san_machine_destroy(m);
}

static void test_lock_fault(void **state)
{
    struct san_machine *m = machine(0, false);
    struct san_machine_stats s0 = stats(m);
    uint64_t locked0 = vm_locked();
    struct san_mdl *mdl;

    /* A hole in the middle: nothing pinned, not even the mapped first page. */
    uint8_t *buf = map_pages(3, PROT_READ | PROT_WRITE);
    munmap(buf + PAGE, PAGE);
    assert_int_equal(san_mdl_lock(m, buf, 3 * PAGE, SAN_MEM_READ, &mdl), -EFAULT);
    assert_null(mdl);
    assert_int_equal(san_mdl_lock(m, buf + PAGE, 1, SAN_MEM_READWRITE, &mdl), -EFAULT);
    assert_int_equal(vm_locked(), locked0);
    assert_same_stats(m, &s0);
    /* The mapped neighbours alone are fine. */
    assert_int_equal(san_mdl_lock(m, buf, PAGE, SAN_MEM_READWRITE, &mdl), 0);
    san_mdl_unlock(mdl);
    assert_int_equal(san_mdl_lock(m, buf + 2 * PAGE, PAGE, SAN_MEM_READWRITE, &mdl), 0);
    san_mdl_unlock(mdl);
    munmap(buf, 3 * PAGE);

    /* NULL, wrapping ranges. */
    assert_int_equal(san_mdl_lock(m, NULL, PAGE, SAN_MEM_READ, &mdl), -EFAULT);
    assert_int_equal(
        san_mdl_lock(m, (void *)(uintptr_t)(UINT64_MAX - PAGE), 2 * PAGE, SAN_MEM_READ, &mdl),
        -EFAULT);

    /* Access is probed: read-only memory can be locked for reading only; PROT_NONE not at all. */
    uint8_t *ro = map_pages(2, PROT_READ);
    assert_int_equal(san_mdl_lock(m, ro, 2 * PAGE, SAN_MEM_WRITE, &mdl), -EFAULT);
    assert_int_equal(san_mdl_lock(m, ro, 2 * PAGE, SAN_MEM_READWRITE, &mdl), -EFAULT);
    assert_int_equal(vm_locked(), locked0);
    assert_int_equal(san_mdl_lock(m, ro, 2 * PAGE, SAN_MEM_READ, &mdl), 0);
    san_mdl_unlock(mdl);
    munmap(ro, 2 * PAGE);
    uint8_t *none = map_pages(1, PROT_NONE);
    assert_int_equal(san_mdl_lock(m, none, PAGE, SAN_MEM_READ, &mdl), -EFAULT);
    munmap(none, PAGE);

    assert_int_equal(vm_locked(), locked0);
    assert_same_stats(m, &s0);
    san_machine_destroy(m);
}

/* mlock is not counted by the kernel: overlapping MDLs keep shared pages pinned. */
static void test_overlapping_pins(void **state)
{
    struct san_machine *m = machine(0, false);
    uint8_t *buf = map_pages(8, PROT_READ | PROT_WRITE);
    uint64_t locked0 = vm_locked();
    struct san_mdl *a, *b, *c;

    assert_int_equal(san_mdl_lock(m, buf, 4 * PAGE, SAN_MEM_READ, &a), 0);
    assert_int_equal(san_mdl_lock(m, buf + 2 * PAGE, 4 * PAGE, SAN_MEM_READ, &b), 0);
    assert_int_equal(san_mdl_lock(m, buf + 3 * PAGE, 10, SAN_MEM_READ, &c), 0);
    assert_int_equal(vm_locked() - locked0, 6 * PAGE);
    san_mdl_unlock(a); /* pages 0, 1 only */
    assert_int_equal(vm_locked() - locked0, 4 * PAGE);
    san_mdl_unlock(b); /* pages 2, 4, 5: page 3 is c's */
    assert_int_equal(vm_locked() - locked0, PAGE);
    /* Frames are per MDL: a failed lock over c's page leaves it pinned. */
    assert_int_equal(san_mdl_lock(m, buf + 3 * PAGE, 100 * GIB, SAN_MEM_READ, &a), -EFAULT);
    assert_int_equal(vm_locked() - locked0, PAGE);
    san_mdl_unlock(c);
    assert_int_equal(vm_locked(), locked0);
    munmap(buf, 8 * PAGE);
    san_machine_destroy(m);
}

/* Part of a locked buffer unmapped before the unlock (the first page, a middle one): what is still
 * mapped is unlocked (munlock would stop at the hole), and a page another MDL covers stays. */
static void test_unmapped_before_unlock(void **state)
{
    struct san_machine *m = machine(0, false);
    uint64_t locked0 = vm_locked();
    struct san_mdl *a, *b;

    for (int hole = 0; hole < 3; hole++) {
        uint8_t *buf = map_pages(4, PROT_READ | PROT_WRITE);
        assert_int_equal(san_mdl_lock(m, buf, 4 * PAGE, SAN_MEM_READWRITE, &a), 0);
        assert_int_equal(san_mdl_lock(m, buf + 3 * PAGE, PAGE, SAN_MEM_READ, &b), 0);
        assert_int_equal(munmap(buf + hole * PAGE, PAGE), 0);
        san_mdl_unlock(a);
        assert_int_equal(vm_locked() - locked0, PAGE); /* b's page only */
        san_mdl_unlock(b);
        assert_int_equal(vm_locked(), locked0);
        for (int i = 0; i < 4; i++)
            if (i != hole)
                munmap(buf + i * PAGE, PAGE);
    }
    san_machine_destroy(m);
}

/* RAM map: a little low memory and a little high memory, in pages. */
static struct san_machine *small_machine(uint64_t low_pages, uint64_t high_pages, bool nolowmem)
{
    struct san_ram_range ram[2] = {{MIB, low_pages * PAGE}, {4 * GIB, high_pages * PAGE}};
    struct san_machine_config cfg = {.ram = ram, .nr_ram = 2, .nolowmem = nolowmem};
    struct san_machine *m;
    assert_int_equal(san_machine_create(&cfg, &m), 0);
    return m;
}

static void test_nolowmem_and_enomem(void **state)
{
    uint8_t *buf = map_pages(24, PROT_READ | PROT_WRITE);
    uint64_t locked0 = vm_locked();
    struct san_mdl *mdl;

    /* NOLOWMEM: 16 high pages are all a lock may get. */
    struct san_machine *m = small_machine(64, 16, true);
    struct san_machine_stats s0 = stats(m);
    assert_int_equal(san_mdl_lock(m, buf, 17 * PAGE, SAN_MEM_READ, &mdl), -ENOMEM);
    assert_null(mdl);
    assert_same_stats(m, &s0);
    assert_int_equal(vm_locked(), locked0);
    assert_int_equal(san_mdl_lock(m, buf, 16 * PAGE, SAN_MEM_READ, &mdl), 0);
    for (size_t i = 0; i < 16; i++)
        assert_true(san_mdl_page(mdl, i) >= 4 * GIB);
    assert_int_equal(stats(m).low_free_bytes, s0.low_free_bytes);
    san_mdl_unlock(mdl);
    san_machine_destroy(m);

    /* Without NOLOWMEM, high memory first, then low. */
    m = small_machine(64, 16, false);
    assert_int_equal(san_mdl_lock(m, buf, 20 * PAGE, SAN_MEM_READ, &mdl), 0);
    for (size_t i = 0; i < 16; i++)
        assert_int_equal(san_mdl_page(mdl, i), 4 * GIB + i * PAGE);
    for (size_t i = 16; i < 20; i++)
        assert_int_equal(san_mdl_page(mdl, i), MIB + (60 + i - 16) * PAGE);
    san_mdl_unlock(mdl);
    san_machine_destroy(m);
    munmap(buf, 24 * PAGE);
}

/* Frames in pieces over fragmented memory; running out swept over every amount left. */
static void test_pieces_and_exhaustion_sweep(void **state)
{
    enum { PAGES = 64, WANT = 24 };
    uint8_t *buf = map_pages(WANT, PROT_READ | PROT_WRITE);
    uint64_t locked0 = vm_locked();

    for (unsigned left = 0; left <= WANT + 2; left++) {
        struct san_machine *m = small_machine(PAGES, PAGES, true);
        void *va[PAGES];
        size_t nr = 0;
        /* Take every high page, then give back `left` of them, every other one, so that free
         * memory is fragmented into single pages (then runs at the bottom). */
        for (unsigned i = 0; i < PAGES; i++)
            assert_int_equal(
                san_alloc_contiguous(m, PAGE, 4 * GIB, UINT64_MAX, 0, SAN_CACHED, &va[nr++]), 0);
        unsigned freed = 0;
        for (unsigned i = 0; i < PAGES && freed < left; i += 2, freed++)
            assert_int_equal(san_free_contiguous(m, va[i], PAGE, SAN_CACHED), 0), va[i] = NULL;
        for (unsigned i = 1; i < PAGES && freed < left; i += 2, freed++)
            assert_int_equal(san_free_contiguous(m, va[i], PAGE, SAN_CACHED), 0), va[i] = NULL;
        struct san_machine_stats s0 = stats(m);
        struct san_mdl *mdl;
        int rc = san_mdl_lock(m, buf, WANT * PAGE, SAN_MEM_READWRITE, &mdl);
        if (left < WANT) {
            assert_int_equal(rc, -ENOMEM);
            assert_same_stats(m, &s0);
            assert_int_equal(vm_locked(), locked0);
        } else {
            assert_int_equal(rc, 0);
            /* Every page has its own frame, each inside a LOCKED record of this MDL whose owner
             * address matches, and pieces come from the highest free memory first. */
            san_paddr_t prev_piece = UINT64_MAX;
            for (size_t i = 0; i < WANT; i++) {
                san_paddr_t pa = san_mdl_page(mdl, i);
                struct san_frames *f = san_phys_frames_at(m, pa);
                assert_non_null(f);
                assert_int_equal(f->kind, SAN_FRAMES_LOCKED);
                assert_ptr_equal(f->tag, mdl);
                assert_int_equal(f->owner_va + (pa - f->r.start), (uintptr_t)(buf + i * PAGE));
                if (pa == f->r.start) {
                    assert_true(pa < prev_piece);
                    prev_piece = pa;
                }
                for (size_t j = 0; j < i; j++)
                    assert_int_not_equal(san_mdl_page(mdl, j), pa);
            }
            assert_int_equal(stats(m).locked_bytes, WANT * PAGE);
            san_mdl_unlock(mdl);
            assert_same_stats(m, &s0);
        }
        for (unsigned i = 0; i < PAGES; i++)
            if (va[i])
                assert_int_equal(san_free_contiguous(m, va[i], PAGE, SAN_CACHED), 0);
        san_machine_destroy(m);
    }
    munmap(buf, WANT * PAGE);
}

/* Page lookups over many pieces agree with a linear model. */
static void test_many_pieces_lookup(void **state)
{
    enum { PAGES = 2048 };
    struct san_machine *m = small_machine(16, PAGES, true);
    void *va[PAGES];
    for (unsigned i = 0; i < PAGES; i++)
        assert_int_equal(san_alloc_contiguous(m, PAGE, 4 * GIB, UINT64_MAX, 0, SAN_CACHED, &va[i]),
                         0);
    for (unsigned i = 0; i < PAGES; i += 2) /* every other page free: PAGES/2 pieces of one page */
        assert_int_equal(san_free_contiguous(m, va[i], PAGE, SAN_CACHED), 0);
    uint8_t *buf = map_pages(PAGES / 2, PROT_READ | PROT_WRITE);
    struct san_mdl *mdl;
    assert_int_equal(san_mdl_lock(m, buf, PAGES / 2 * PAGE, SAN_MEM_READ, &mdl), 0);
    assert_int_equal(mdl->nr_pieces, PAGES / 2);
    for (size_t i = 0; i < PAGES / 2; i++) /* highest first: page i gets frame PAGES-1-2i */
        assert_int_equal(san_mdl_page(mdl, i), 4 * GIB + (PAGES - 1 - 2 * i) * PAGE);
    san_mdl_unlock(mdl);
    for (unsigned i = 1; i < PAGES; i += 2)
        assert_int_equal(san_free_contiguous(m, va[i], PAGE, SAN_CACHED), 0);
    munmap(buf, PAGES / 2 * PAGE);
    san_machine_destroy(m);
}

/* Another process's buffer (the daemon's case): validated through process_vm_readv, not pinned
 * here, frames owned by that pid. */
static void test_lock_for_client(void **state)
{
    struct san_machine *m = machine(0, false);
    uint8_t *buf = map_pages(4, PROT_READ | PROT_WRITE);
    int go[2];
    assert_int_equal(pipe(go), 0);
    pid_t child = fork();
    assert_true(child >= 0);
    if (child == 0) {
        char c;
        munmap(buf + 3 * PAGE, PAGE); /* the child's layout differs from the parent's */
        if (read(go[0], &c, 1) != 1)
            _exit(1);
        _exit(0);
    }
    /* Wait until the child has unmapped its last page. */
    for (int i = 0; i < 1000; i++) {
        struct san_page_owner o = {child, -1, -1, -1, -1};
        struct san_mdl *mdl;
        int rc = san_mdl_lock_for(m, &o, (uintptr_t)(buf + 3 * PAGE), PAGE, SAN_MEM_READ, &mdl);
        if (rc == -EFAULT)
            break;
        assert_int_equal(rc, 0);
        san_mdl_unlock(mdl);
        usleep(1000);
    }
    uint64_t locked0 = vm_locked();
    struct san_machine_stats s0 = stats(m);
    struct san_page_owner owner = {child, -1, -1, -1, -1};
    struct san_mdl *mdl;
    assert_int_equal(san_mdl_lock_for(m, &owner, (uintptr_t)buf, 4 * PAGE, SAN_MEM_READWRITE, &mdl),
                     -EFAULT);
    assert_same_stats(m, &s0);
    assert_int_equal(
        san_mdl_lock_for(m, &owner, (uintptr_t)buf + 10, 3 * PAGE - 10, SAN_MEM_READWRITE, &mdl),
        0);
    assert_int_equal(vm_locked(), locked0); /* the client pins its own pages */
    assert_int_equal(san_mdl_page_count(mdl), 3);
    struct san_frames *f = san_phys_frames_at(m, san_mdl_page(mdl, 0));
    assert_int_equal(f->kind, SAN_FRAMES_LOCKED);
    assert_int_equal(f->owner->pid, child);
    assert_int_equal(stats(m).locked_bytes, 3 * PAGE);
    san_mdl_unlock(mdl);
    assert_same_stats(m, &s0);
    assert_int_equal(write(go[1], "x", 1), 1);
    int status;
    assert_int_equal(waitpid(child, &status, 0), child);
    assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    /* A pid that is gone. */
    assert_int_equal(san_mdl_lock_for(m, &owner, (uintptr_t)buf, PAGE, SAN_MEM_READ, &mdl), -ESRCH);
    close(go[0]);
    close(go[1]);
    munmap(buf, 4 * PAGE);
    san_machine_destroy(m);
}

/* With the client's pagemap (the daemon's case): present pages are validated from it; pages it
 * shows absent (mapped but never touched, or not mapped) are refused without being touched (the
 * client populates before it asks; faulting in a client's page could block the daemon on the
 * client's userfaultfd). */
static void test_lock_for_client_pagemap(void **state)
{
    struct san_machine *m = machine(0, false);
    uint8_t *buf = map_pages(8, PROT_READ | PROT_WRITE); /* untouched here */
    int ready[2], go[2];
    assert_int_equal(pipe(ready), 0);
    assert_int_equal(pipe(go), 0);
    pid_t child = fork();
    assert_true(child >= 0);
    if (child == 0) {
        char c;
        for (int i = 0; i < 4; i++)
            buf[i * PAGE] = 1;        /* pages 0-3 present, 4-5 mapped but absent */
        munmap(buf + 6 * PAGE, PAGE); /* page 6: a hole */
        buf[7 * PAGE] = 1;
        if (write(ready[1], "r", 1) != 1 || read(go[0], &c, 1) != 1)
            _exit(1);
        _exit(0);
    }
    char c;
    assert_int_equal(read(ready[0], &c, 1), 1);
    char path[64];
    snprintf(path, sizeof(path), "/proc/%d/pagemap", (int)child);
    struct san_page_owner owner = {child, -1, open(path, O_RDONLY | O_CLOEXEC), -1, -1};
    assert_true(owner.pagemap_fd >= 0);
    struct san_machine_stats s0 = stats(m);
    struct san_mdl *mdl;
    uintptr_t base = (uintptr_t)buf;

    assert_int_equal(san_mdl_lock_for(m, &owner, base, 4 * PAGE, SAN_MEM_READ, &mdl), 0);
    san_mdl_unlock(mdl);
    assert_int_equal(san_mdl_lock_for(m, &owner, base, 6 * PAGE, SAN_MEM_READ, &mdl), -EFAULT);
    assert_int_equal(san_mdl_lock_for(m, &owner, base + 4 * PAGE, PAGE, SAN_MEM_READ, &mdl),
                     -EFAULT);
    assert_int_equal(san_mdl_lock_for(m, &owner, base, 8 * PAGE, SAN_MEM_READ, &mdl), -EFAULT);
    assert_int_equal(san_mdl_lock_for(m, &owner, base + 6 * PAGE, PAGE, SAN_MEM_READ, &mdl),
                     -EFAULT);
    assert_same_stats(m, &s0);
    assert_int_equal(san_mdl_lock_for(m, &owner, base + 7 * PAGE, PAGE, SAN_MEM_READ, &mdl), 0);
    san_mdl_unlock(mdl);
    assert_same_stats(m, &s0);

    assert_int_equal(write(go[1], "x", 1), 1);
    int status;
    assert_int_equal(waitpid(child, &status, 0), child);
    assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    close(owner.pagemap_fd);
    close(ready[0]);
    close(ready[1]);
    close(go[0]);
    close(go[1]);
    munmap(buf, 8 * PAGE);
    san_machine_destroy(m);
}

static int drop_ipc_lock(void)
{
    struct __user_cap_header_struct h = {_LINUX_CAPABILITY_VERSION_3, 0};
    struct __user_cap_data_struct d[2];
    if (syscall(SYS_capget, &h, d))
        return -1;
    d[CAP_IPC_LOCK / 32].effective &= ~(1u << (CAP_IPC_LOCK % 32));
    d[CAP_IPC_LOCK / 32].permitted &= ~(1u << (CAP_IPC_LOCK % 32));
    return (int)syscall(SYS_capset, &h, d);
}

/* mlock refused for limit reasons: -EPERM without privilege and a zero limit, -ENOBUFS over a
 * non-zero limit; nothing held either way. Runs in a child without CAP_IPC_LOCK. */
static void test_mlock_limits(void **state)
{
    pid_t child = fork();
    assert_true(child >= 0);
    if (child == 0) {
        struct san_machine *m = machine(0, false);
        uint8_t *buf =
            mmap(NULL, 16 * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        struct san_mdl *mdl;
        if (buf == MAP_FAILED)
            _exit(1);
        if (drop_ipc_lock())
            _exit(77); /* the reasons: see the parent */
        struct rlimit zero = {0, 16 * PAGE}, small = {4 * PAGE, 16 * PAGE};
        if (setrlimit(RLIMIT_MEMLOCK, &zero))
            _exit(78);
        if (san_mdl_lock(m, buf, PAGE, SAN_MEM_READ, &mdl) != -EPERM)
            _exit(2);
        struct san_machine_stats s;
        san_machine_stats(m, &s);
        if (s.locked_bytes)
            _exit(3);
        if (setrlimit(RLIMIT_MEMLOCK, &small))
            _exit(79);
        if (san_mdl_lock(m, buf, 8 * PAGE, SAN_MEM_READ, &mdl) != -ENOBUFS)
            _exit(4);
        san_machine_stats(m, &s);
        if (s.locked_bytes || vm_locked())
            _exit(5);
        if (san_mdl_lock(m, buf, 4 * PAGE, SAN_MEM_READ, &mdl))
            _exit(6);
        san_mdl_unlock(mdl);
        san_machine_destroy(m);
        _exit(0);
    }
    int status;
    assert_int_equal(waitpid(child, &status, 0), child);
    assert_true(WIFEXITED(status));
    if (WEXITSTATUS(status) == 77)
        test_skip("test_mlock_limits: cannot drop CAP_IPC_LOCK (capset refused)");
    if (WEXITSTATUS(status) == 78 || WEXITSTATUS(status) == 79)
        test_skip("test_mlock_limits: cannot set RLIMIT_MEMLOCK to %s with a hard limit of 64 KiB "
                  "(the hard limit here is lower)",
                  WEXITSTATUS(status) == 78 ? "0" : "16 KiB");
    assert_int_equal(WEXITSTATUS(status), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_lock_basic),
        cmocka_unit_test(test_lock_invalid),
        cmocka_unit_test(test_lock_fault),
        cmocka_unit_test(test_overlapping_pins),
        cmocka_unit_test(test_unmapped_before_unlock),
        cmocka_unit_test(test_nolowmem_and_enomem),
        cmocka_unit_test(test_pieces_and_exhaustion_sweep),
        cmocka_unit_test(test_many_pieces_lookup),
        cmocka_unit_test(test_lock_for_client),
        cmocka_unit_test(test_lock_for_client_pagemap),
        cmocka_unit_test(test_mlock_limits),
    };
    return test_result(cmocka_run_group_tests(tests, NULL, NULL));
}
