/* Exporting an allocation through a memfd: the same bytes on both sides, sealed at its size (a
 * client cannot shrink or grow what the daemon and devices use), only exact allocations, and
 * after unexport the memfd no longer reaches the frames. */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cmocka.h>

#include <san/san.h>

#include "phys/export.h"

#define LEN (16 * SAN_PAGE_SIZE)

static void test_export_sealed_and_shared(void **state)
{
    (void)state;
    struct san_machine *m;
    struct san_machine_config cfg = {.ram_size = UINT64_C(1) << 30};
    assert_int_equal(san_machine_create(&cfg, &m), 0);
    void *va;
    assert_int_equal(san_alloc_contiguous(m, LEN, 0, UINT64_MAX, 0, SAN_CACHED, &va), 0);

    int fd = -1;
    assert_int_equal(san_phys_export(m, (char *)va + SAN_PAGE_SIZE, LEN - SAN_PAGE_SIZE, -1, &fd),
                     -EINVAL); /* not exactly the allocation */
    assert_int_equal(san_phys_export(m, va, LEN, -1, &fd), 0);
    assert_true(fd >= 0);

    /* Sealed: no shrink, no grow, no new seals. */
    int seals = fcntl(fd, F_GET_SEALS);
    assert_true(seals & F_SEAL_SHRINK);
    assert_true(seals & F_SEAL_GROW);
    assert_true(seals & F_SEAL_SEAL);
    assert_int_equal(ftruncate(fd, SAN_PAGE_SIZE), -1);
    assert_int_equal(errno, EPERM);
    assert_int_equal(ftruncate(fd, 2 * LEN), -1);
    assert_int_equal(errno, EPERM);

    /* The same bytes, both ways. */
    uint8_t *client = mmap(NULL, LEN, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    assert_true(client != MAP_FAILED);
    memset(va, 0x5a, LEN);
    assert_int_equal(client[LEN - 1], 0x5a);
    client[0] = 0xa5;
    assert_int_equal(((uint8_t *)va)[0], 0xa5);

    /* Unexported: the client's mapping no longer reaches the frames. */
    assert_int_equal(san_phys_unexport(m, va, LEN), 0);
    client[1] = 0x77;
    assert_int_not_equal(((uint8_t *)va)[1], 0x77);
    munmap(client, LEN);
    close(fd);
    assert_int_equal(san_free_contiguous(m, va, LEN, SAN_CACHED), 0);
    san_machine_destroy(m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_export_sealed_and_shared),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
