/* common/search: "the last element whose key is <= x" against a linear scan, over random sorted
 * arrays with repeated keys, queries below, between, on and above the keys, and the complemented
 * keys a descending array is searched by. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include <cmocka.h>

#include "common/search.h"

/* libc's generator, seeded in main: the same arrays every run. */
static uint64_t rnd(void)
{
    return (uint64_t)random();
}

static uint64_t key_of(const void *arr, size_t i)
{
    return ((const uint64_t *)arr)[i];
}

static uint64_t key_desc(const void *arr, size_t i)
{
    return ~((const uint64_t *)arr)[i];
}

static void test_against_scan(void **state)
{
    (void)state;
    uint64_t a[64];
    for (int round = 0; round < 2000; round++) {
        size_t n = 1 + rnd() % 64;
        uint64_t k = rnd() % 8;
        for (size_t i = 0; i < n; i++)
            a[i] = k += rnd() % 4; /* ascending, with repeats */
        for (int q = 0; q < 16; q++) {
            uint64_t x = rnd() % (k + 8);
            size_t want = 0;
            for (size_t i = 0; i < n; i++)
                if (a[i] <= x)
                    want = i;
            assert_int_equal(san_search_last(a, n, key_of, x), want);
        }
    }
}

static void test_descending(void **state)
{
    (void)state;
    uint64_t a[] = {900, 700, 700, 300, 100}; /* last element whose value is >= x */
    assert_int_equal(san_search_last(a, 5, key_desc, ~(uint64_t)1000), 0); /* none: 0 */
    assert_int_equal(san_search_last(a, 5, key_desc, ~(uint64_t)900), 0);
    assert_int_equal(san_search_last(a, 5, key_desc, ~(uint64_t)701), 0);
    assert_int_equal(san_search_last(a, 5, key_desc, ~(uint64_t)700), 2);
    assert_int_equal(san_search_last(a, 5, key_desc, ~(uint64_t)100), 4);
    assert_int_equal(san_search_last(a, 5, key_desc, ~(uint64_t)0), 4);
    assert_int_equal(san_search_last(a, 1, key_desc, 0), 0);
}

int main(void)
{
    srandom(12345);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_against_scan),
        cmocka_unit_test(test_descending),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
