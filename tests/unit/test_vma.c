/* mdl/vma: a client's protections and file mappings from its maps descriptor, answered by the
 * PROCMAP_QUERY ioctl and by the text of the file (kernels before 6.11), which must agree: this
 * process's own mappings (a shared memfd as proxy memory is mapped, a private one, anonymous and
 * read-only memory, a gap), and a process that has exited. */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include <san/mdl.h>

#include "mdl/vma.h"

#define PG 4096u

static void both_ways(void (*check)(void))
{
    san_vma_text_only = false;
    check();
    san_vma_text_only = true;
    check();
    san_vma_text_only = false;
}

static void protections(void)
{
    int fd = open("/proc/self/maps", O_RDONLY | O_CLOEXEC);
    assert_true(fd >= 0);
    char *p = mmap(NULL, 4 * PG, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    assert_true(p != MAP_FAILED);
    assert_int_equal(mprotect(p + PG, PG, PROT_READ), 0);
    assert_int_equal(munmap(p + 3 * PG, PG), 0); /* a gap after the third page */
    uint64_t at = (uintptr_t)p;
    assert_int_equal(san_vma_check(fd, at, PG, SAN_MEM_READWRITE), 0);
    assert_int_equal(san_vma_check(fd, at, 2 * PG, SAN_MEM_READ), 0);
    assert_int_equal(san_vma_check(fd, at, 2 * PG, SAN_MEM_WRITE), -EFAULT);
    assert_int_equal(san_vma_check(fd, at + 2 * PG, PG, SAN_MEM_READWRITE), 0);
    assert_int_equal(san_vma_check(fd, at + 2 * PG, PG + 1, SAN_MEM_READ), -EFAULT);
    assert_int_equal(san_vma_check(fd, at + 3 * PG, 1, SAN_MEM_READ), -EFAULT);
    assert_int_equal(san_vma_check(fd, at, 0, SAN_MEM_READ), -EFAULT);
    munmap(p, 3 * PG);
    close(fd);
}

static void test_protections(void **state)
{
    (void)state;
    both_ways(protections);
}

static void files(void)
{
    int fd = open("/proc/self/maps", O_RDONLY | O_CLOEXEC);
    int mfd = memfd_create("test-vma", MFD_CLOEXEC);
    assert_true(fd >= 0 && mfd >= 0);
    assert_int_equal(ftruncate(mfd, 8 * PG), 0);
    struct stat st;
    assert_int_equal(fstat(mfd, &st), 0);
    /* Mapped from the file's second page on, as a client might map part of an allocation. */
    char *p = mmap(NULL, 6 * PG, PROT_READ | PROT_WRITE, MAP_SHARED, mfd, PG);
    char *q = mmap(NULL, 2 * PG, PROT_READ, MAP_PRIVATE, mfd, 0);
    char *anon = mmap(NULL, PG, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    assert_true(p != MAP_FAILED && q != MAP_FAILED && anon != MAP_FAILED);

    struct san_vma_file f;
    assert_int_equal(san_vma_file(fd, (uintptr_t)p + 2 * PG, 3 * PG, &f), 0);
    assert_int_equal(f.inode, st.st_ino);
    assert_int_equal(f.dev_major, major(st.st_dev));
    assert_int_equal(f.dev_minor, minor(st.st_dev));
    assert_int_equal(f.offset, 3 * PG);
    assert_true(f.shared && f.readable && f.writable);
    assert_int_equal(san_vma_file(fd, (uintptr_t)q, 2 * PG, &f), 0);
    assert_true(!f.shared && f.readable && !f.writable && f.offset == 0);
    /* Past the mapping's end, anonymous memory, nothing mapped: not one file mapping. */
    assert_int_equal(san_vma_file(fd, (uintptr_t)p + 5 * PG, 2 * PG, &f), -ENOENT);
    assert_int_equal(san_vma_file(fd, (uintptr_t)anon, PG, &f), -ENOENT);
    munmap(anon, PG);
    assert_int_equal(san_vma_file(fd, (uintptr_t)anon, PG, &f), -ENOENT);
    munmap(p, 6 * PG);
    munmap(q, 2 * PG);
    close(mfd);
    close(fd);
}

static void test_files(void **state)
{
    (void)state;
    both_ways(files);
}

static int gone_fd;

static void gone(void)
{
    struct san_vma_file f;
    assert_int_equal(san_vma_check(gone_fd, 0x400000, PG, SAN_MEM_READ), -ESRCH);
    assert_int_equal(san_vma_file(gone_fd, 0x400000, PG, &f), -ESRCH);
}

/* A maps descriptor of a process that has exited answers -ESRCH, never about another process. */
static void test_exited(void **state)
{
    (void)state;
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (!pid) {
        pause();
        _exit(0);
    }
    char path[64];
    snprintf(path, sizeof(path), "/proc/%d/maps", (int)pid);
    gone_fd = open(path, O_RDONLY | O_CLOEXEC);
    assert_true(gone_fd >= 0);
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
    both_ways(gone);
    close(gone_fd);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_protections),
        cmocka_unit_test(test_files),
        cmocka_unit_test(test_exited),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
