/* Skipping a cmocka case so that CTest sees it. cmocka counts a skipped case as passed and the
 * program exits 0, so a case that cannot run here calls test_skip("why", ...) instead of skip():
 * the reason is printed ("SKIPPED: why") and appended to $SAN_SKIP_LOG (CTest sets it; the list of
 * reasons is printed after the run by tests/skipped.sh), and the case is left. main returns
 * test_result(cmocka_run_group_tests(...)): 1 if a case failed, else 77 if one was skipped (the
 * tests' SKIP_RETURN_CODE: CTest shows the program as Skipped), else 0. */
#ifndef SAN_TEST_SKIP_H
#define SAN_TEST_SKIP_H

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

static bool test_skipped;

__attribute__((format(printf, 1, 2))) static inline void test_skip_note(const char *fmt, ...)
{
    char why[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, sizeof(why), fmt, ap);
    va_end(ap);
    fprintf(stderr, "SKIPPED: %s\n", why);
    const char *log = getenv("SAN_SKIP_LOG");
    int fd = log && *log ? open(log, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644) : -1;
    if (fd >= 0) {
        dprintf(fd, "%s: %s\n", program_invocation_short_name, why);
        close(fd);
    }
    test_skipped = true;
}

#define test_skip(...)                                                                             \
    do {                                                                                           \
        test_skip_note(__VA_ARGS__);                                                               \
        skip();                                                                                    \
    } while (0)

static inline int test_result(int failed)
{
    return failed ? 1 : test_skipped ? 77 : 0;
}

#endif
