/* common/pin: faulting in with the access asked (-EFAULT for what lacks it) and locking; unlocking
 * a pinned range of which parts were unmapped meanwhile leaves nothing locked (VmLck back to where
 * it was), with one munlock per mapped run: the first page gone, a middle page, everything gone, a
 * range listed after hundreds of mappings in /proc/self/maps (reads that end mid-line), and a file
 * mapping whose line is longer than the reader's buffer. */
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
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cmocka.h>

#include "common/pin.h"

#include "../vmlck.h"

#define PG 4096u

static long locked_kib(void)
{
    long kib = test_vm_locked_kib();
    assert_true(kib >= 0);
    return kib;
}

/* mlock as a system call (sanitizer runtimes make the libc one a no-op). */
static void lock(void *p, size_t len)
{
    assert_int_equal(syscall(SYS_mlock, p, len), 0);
}

static char *map(size_t len, int prot)
{
    char *p = mmap(NULL, len, prot, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    assert_true(p != MAP_FAILED);
    return p;
}

static void test_holes(void **state)
{
    (void)state;
    long start = locked_kib();
    for (int hole = 0; hole < 4; hole++) {
        char *p = map(4 * PG, PROT_READ | PROT_WRITE);
        lock(p, 4 * PG);
        assert_int_equal(locked_kib(), start + 16);
        assert_int_equal(munmap(p + hole * PG, PG), 0);
        /* The failed munlock, then one per mapped run (one at either end, two in the middle). */
        unsigned runs = hole == 0 || hole == 3 ? 1 : 2;
        assert_int_equal(san_pin_unlock((uintptr_t)p, 4 * PG), 1 + runs);
        assert_int_equal(locked_kib(), start);
        for (int i = 0; i < 4; i++)
            if (i != hole)
                munmap(p + i * PG, PG);
    }
    /* Two holes, and a range that is not mapped at all. */
    char *p = map(5 * PG, PROT_READ | PROT_WRITE);
    lock(p, 5 * PG);
    munmap(p, PG);
    munmap(p + 2 * PG, PG);
    assert_int_equal(san_pin_unlock((uintptr_t)p, 5 * PG), 3);
    assert_int_equal(locked_kib(), start);
    munmap(p, 5 * PG);
    assert_int_equal(san_pin_unlock((uintptr_t)p, 5 * PG), 1);
    assert_int_equal(locked_kib(), start);
    /* Nothing mapped in a large range: not a call per page. */
    p = map(1u << 30, PROT_NONE);
    munmap(p, 1u << 30);
    assert_int_equal(san_pin_unlock((uintptr_t)p, 1u << 30), 1);
    /* A whole range: one munlock, everything unlocked. */
    p = map(8 * PG, PROT_READ | PROT_WRITE);
    lock(p, 8 * PG);
    assert_int_equal(san_pin_unlock((uintptr_t)p, 8 * PG), 1);
    assert_int_equal(locked_kib(), start);
    munmap(p, 8 * PG);
}

/* The range sits above 256 separate mappings (alternating protections, so they do not merge): its
 * line in /proc/self/maps comes after several buffers' worth of lines. */
static void test_many_mappings(void **state)
{
    (void)state;
    enum { LOW = 512, TARGET = 4 };
    long start = locked_kib();
    char *area = map((LOW + TARGET) * PG, PROT_READ | PROT_WRITE);
    for (int i = 0; i < LOW; i += 2)
        assert_int_equal(mprotect(area + i * PG, PG, PROT_READ), 0);
    char *t = area + LOW * PG;
    lock(t, TARGET * PG);
    munmap(t + PG, PG);
    assert_int_equal(san_pin_unlock((uintptr_t)t, TARGET * PG), 3);
    assert_int_equal(locked_kib(), start);
    munmap(area, (LOW + TARGET) * PG);
}

/* A page of the range maps a file whose path is longer than a page: its maps line does not fit in
 * the reader's buffer, and the mapped page after it must still be found. */
static void test_long_line(void **state)
{
    (void)state;
    char dir[] = "/tmp/sanpin.XXXXXX", name[256];
    assert_non_null(mkdtemp(dir));
    int cwd = open(".", O_RDONLY | O_DIRECTORY);
    assert_true(cwd >= 0);
    assert_int_equal(chdir(dir), 0);
    memset(name, 'd', 240);
    name[240] = '\0';
    for (int i = 0; i < 18; i++) { /* 18 * 241 bytes: beyond 4096 */
        assert_int_equal(mkdir(name, 0700), 0);
        assert_int_equal(chdir(name), 0);
    }
    int fd = open("f", O_RDWR | O_CREAT, 0600);
    assert_true(fd >= 0);
    assert_int_equal(ftruncate(fd, PG), 0);

    long start = locked_kib();
    char *p = map(4 * PG, PROT_READ | PROT_WRITE);
    assert_true(mmap(p + 2 * PG, PG, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_FIXED, fd, 0) ==
                p + 2 * PG);
    lock(p, 4 * PG);
    assert_int_equal(locked_kib(), start + 16);
    munmap(p + PG, PG);
    /* [0, 1) and [2, 4): the file page and the anonymous one after it are one run. */
    assert_int_equal(san_pin_unlock((uintptr_t)p, 4 * PG), 3);
    assert_int_equal(locked_kib(), start);
    munmap(p, 4 * PG);
    close(fd);

    unlink("f");
    for (int i = 0; i < 18; i++) {
        assert_int_equal(chdir(".."), 0);
        rmdir(name);
    }
    assert_int_equal(fchdir(cwd), 0);
    close(cwd);
    rmdir(dir);
}

/* Faulting in checks the access before anything is locked: read-only memory for writing,
 * PROT_NONE, and unmapped memory are -EFAULT; then the lock holds the pages just faulted in. */
static void test_populate_and_lock(void **state)
{
    (void)state;
    long start = locked_kib();
    char *ro = map(2 * PG, PROT_READ);
    assert_int_equal(san_pin_populate((uintptr_t)ro, 2 * PG, false), 0);
    assert_int_equal(san_pin_populate((uintptr_t)ro, 2 * PG, true), -EFAULT);
    char *none = map(PG, PROT_NONE);
    assert_int_equal(san_pin_populate((uintptr_t)none, PG, false), -EFAULT);
    munmap(none, PG);
    assert_int_equal(san_pin_populate((uintptr_t)none, PG, false), -EFAULT);
    assert_int_equal(san_pin_lock((uintptr_t)none, PG), -EFAULT);

    char *rw = map(4 * PG, PROT_READ | PROT_WRITE);
    assert_int_equal(san_pin_populate((uintptr_t)rw, 4 * PG, true), 0);
    assert_int_equal(san_pin_lock((uintptr_t)rw, 4 * PG), 0);
    assert_int_equal(locked_kib(), start + 16);
    unsigned char vec[4];
    assert_int_equal(mincore(rw, 4 * PG, vec), 0);
    for (int i = 0; i < 4; i++)
        assert_true(vec[i] & 1); /* resident: faulted in, not left for later */
    assert_int_equal(san_pin_unlock((uintptr_t)rw, 4 * PG), 1);
    assert_int_equal(locked_kib(), start);
    /* A hole: the lock fails as unmapped (not as the memlock limit). */
    munmap(rw + PG, PG);
    assert_int_equal(san_pin_lock((uintptr_t)rw, 4 * PG), -EFAULT);
    san_pin_unlock((uintptr_t)rw, 4 * PG);
    assert_int_equal(locked_kib(), start);
    munmap(rw, 4 * PG);
    munmap(ro, 2 * PG);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_populate_and_lock),
        cmocka_unit_test(test_holes),
        cmocka_unit_test(test_many_mappings),
        cmocka_unit_test(test_long_line),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
