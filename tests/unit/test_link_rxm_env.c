/* link/rxm_env: RxM's variables as the link leaves them for every kind of value the operator may
 * have set (none, enough, too small, not a number), and the log: one line per value overridden,
 * saying what and why, and one line of what was chosen. The log (stderr) is captured in a file. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "link/rxm_env.h"

static const char *const names[SAN_LINK_RXM_VARS] = {
    "FI_OFI_RXM_BUFFER_SIZE", "FI_OFI_RXM_EAGER_LIMIT", "FI_OFI_RXM_MSG_RX_SIZE"};

static char logbuf[8192];

/* Runs san_link_rxm_env with the environment set to env[] (NULL: unset); its log in logbuf. */
static void run(const char *const env[SAN_LINK_RXM_VARS], struct san_link_rxm_var out[])
{
    for (int i = 0; i < SAN_LINK_RXM_VARS; i++) {
        if (env[i])
            setenv(names[i], env[i], 1);
        else
            unsetenv(names[i]);
    }
    FILE *f = tmpfile();
    assert_non_null(f);
    fflush(stderr);
    int saved = dup(2);
    assert_true(saved >= 0);
    assert_int_equal(dup2(fileno(f), 2), 2);
    san_link_rxm_env(out);
    fflush(stderr);
    assert_int_equal(dup2(saved, 2), 2);
    close(saved);
    rewind(f);
    size_t n = fread(logbuf, 1, sizeof(logbuf) - 1, f);
    logbuf[n] = 0;
    fclose(f);
}

static int lines(void)
{
    int n = 0;
    for (const char *s = logbuf; *s; s++)
        n += *s == '\n';
    return n;
}

static void assert_env(const char *name, const char *want)
{
    const char *v = getenv(name);
    assert_non_null(v);
    assert_string_equal(v, want);
}

static void test_unset(void **state)
{
    (void)state;
    struct san_link_rxm_var out[SAN_LINK_RXM_VARS];
    const char *const env[] = {NULL, NULL, NULL};
    run(env, out);
    assert_env("FI_OFI_RXM_BUFFER_SIZE", "65536");
    assert_env("FI_OFI_RXM_EAGER_LIMIT", "65536");
    assert_env("FI_OFI_RXM_MSG_RX_SIZE", "64");
    for (int i = 0; i < SAN_LINK_RXM_VARS; i++) {
        assert_string_equal(out[i].name, names[i]);
        assert_int_equal(out[i].how, SAN_LINK_RXM_SET);
    }
    assert_int_equal(out[0].value, 65536);
    assert_int_equal(out[2].value, 64);
    assert_int_equal(lines(), 1); /* what was chosen; nothing overridden */
    assert_non_null(strstr(logbuf, "buffer size 65536 (set by the link)"));
    assert_non_null(strstr(logbuf, "receives per connection 64 (set by the link)"));
}

static void test_operator_enough(void **state)
{
    (void)state;
    struct san_link_rxm_var out[SAN_LINK_RXM_VARS];
    const char *const env[] = {"131072", "0x10000", "8"};
    run(env, out);
    assert_env("FI_OFI_RXM_BUFFER_SIZE", "131072"); /* untouched, as written */
    assert_env("FI_OFI_RXM_EAGER_LIMIT", "0x10000");
    assert_env("FI_OFI_RXM_MSG_RX_SIZE", "8"); /* memory: the operator's, however small */
    for (int i = 0; i < SAN_LINK_RXM_VARS; i++)
        assert_int_equal(out[i].how, SAN_LINK_RXM_KEPT);
    assert_int_equal(out[0].value, 131072);
    assert_int_equal(out[1].value, 65536);
    assert_int_equal(out[2].value, 8);
    assert_int_equal(lines(), 1);
    assert_null(strstr(logbuf, "WARN"));
    assert_non_null(strstr(logbuf, "buffer size 131072 (the environment's)"));
    assert_non_null(strstr(logbuf, "receives per connection 8 (the environment's)"));

    const char *const zero[] = {"65536", "65536", "0"}; /* 0: the core provider's default */
    run(zero, out);
    assert_env("FI_OFI_RXM_MSG_RX_SIZE", "0");
    assert_int_equal(out[2].how, SAN_LINK_RXM_KEPT);
    assert_int_equal(lines(), 1);
}

static void test_operator_too_small(void **state)
{
    (void)state;
    struct san_link_rxm_var out[SAN_LINK_RXM_VARS];
    const char *const env[] = {"16384", "65535", NULL};
    run(env, out);
    assert_env("FI_OFI_RXM_BUFFER_SIZE", "65536");
    assert_env("FI_OFI_RXM_EAGER_LIMIT", "65536");
    assert_int_equal(out[0].how, SAN_LINK_RXM_RAISED);
    assert_int_equal(out[1].how, SAN_LINK_RXM_RAISED);
    assert_int_equal(out[2].how, SAN_LINK_RXM_SET);
    assert_int_equal(lines(), 3); /* one per override, then the choice */
    assert_non_null(strstr(logbuf, "FI_OFI_RXM_BUFFER_SIZE=16384 in the environment is below the "
                                   "65536 the link needs"));
    assert_non_null(strstr(logbuf, "FI_OFI_RXM_EAGER_LIMIT=65535 in the environment"));
    assert_non_null(strstr(logbuf, "eager: RxM's segmentation"));
    assert_non_null(strstr(logbuf, "eager limit 65536 (raised)"));
}

static void test_not_a_number(void **state)
{
    (void)state;
    struct san_link_rxm_var out[SAN_LINK_RXM_VARS];
    const char *const env[] = {"64k", "", "lots"};
    run(env, out);
    assert_env("FI_OFI_RXM_BUFFER_SIZE", "65536");
    assert_env("FI_OFI_RXM_EAGER_LIMIT", "65536");
    assert_env("FI_OFI_RXM_MSG_RX_SIZE", "64");
    for (int i = 0; i < SAN_LINK_RXM_VARS; i++)
        assert_int_equal(out[i].how, SAN_LINK_RXM_REPLACED);
    assert_int_equal(lines(), 4);
    assert_non_null(strstr(logbuf, "FI_OFI_RXM_BUFFER_SIZE=\"64k\" in the environment is not a "
                                   "number: set to 65536"));
    assert_non_null(strstr(logbuf, "FI_OFI_RXM_MSG_RX_SIZE=\"lots\""));
    assert_non_null(strstr(logbuf, "receives per connection 64 (replaced)"));

    const char *const minus[] = {"-1", "70000 ", " 99999999999999999999999"};
    run(minus, out);
    assert_int_equal(out[0].how, SAN_LINK_RXM_REPLACED); /* no sign */
    assert_int_equal(out[1].how, SAN_LINK_RXM_KEPT);     /* blanks around a number are fine */
    assert_int_equal(out[2].how, SAN_LINK_RXM_REPLACED); /* out of range */
    assert_env("FI_OFI_RXM_EAGER_LIMIT", "70000 ");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_unset),
        cmocka_unit_test(test_operator_enough),
        cmocka_unit_test(test_operator_too_small),
        cmocka_unit_test(test_not_a_number),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
