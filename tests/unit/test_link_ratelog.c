/* link/ratelog: at most one line per second per kind of event, the first at once, each line
 * counting the events held back since the one before; a quiet second lets the next go at once. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "link/ratelog.h"

#define S SAN_LINK_RATELOG_NS

static void test_flood(void **state)
{
    (void)state;
    struct san_link_ratelog r = {0};
    uint64_t held = 99, lines = 0, t0 = 5 * S;
    assert_true(san_link_ratelog_take(&r, t0, &held)); /* the first event: at once */
    assert_int_equal(held, 0);
    /* 10,000 events over 2.5 s (one every 250 us): a line at t0, t0+1s, t0+2s */
    uint64_t events = 0, told = 1;
    for (uint64_t i = 1; i <= 10000; i++) {
        events++;
        if (san_link_ratelog_take(&r, t0 + i * (S / 4000), &held)) {
            lines++;
            told += held + 1; /* this one and those held back */
        }
    }
    assert_int_equal(lines, 2);
    assert_int_equal(r.held, events + 1 - told); /* the rest waits for the next line */
    assert_true(san_link_ratelog_take(&r, t0 + 4 * S, &held));
    assert_int_equal(told + held + 1, events + 2); /* every event counted in some line */
}

static void test_spacing(void **state)
{
    (void)state;
    struct san_link_ratelog r = {0};
    uint64_t held;
    assert_true(san_link_ratelog_take(&r, 1, &held));
    assert_false(san_link_ratelog_take(&r, S, &held)); /* 1 ns short of a second */
    assert_true(san_link_ratelog_take(&r, S + 1, &held));
    assert_int_equal(held, 1);
    /* events a second or more apart are each logged, none held */
    for (uint64_t t = 3 * S; t < 10 * S; t += S) {
        assert_true(san_link_ratelog_take(&r, t, &held));
        assert_int_equal(held, 0);
    }
    /* two kinds of event do not share a limit */
    struct san_link_ratelog other = {0};
    assert_false(san_link_ratelog_take(&r, 9 * S + 1, &held));
    assert_true(san_link_ratelog_take(&other, 9 * S + 1, &held));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_flood),
        cmocka_unit_test(test_spacing),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
