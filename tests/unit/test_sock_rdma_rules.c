/* sock/rdma: the RDMA read mode's bookkeeping, the rules a peer must keep that the decoder cannot
 * see (they depend on the connection's history): a DONE must name the oldest offer outstanding,
 * with its bytes and status 0; an offer must carry the next cookie and find a sink free; cookie k
 * uses buffer k % RDMA_NBUF. Each broken rule is -EPROTO with nothing changed (the session then
 * resets the connection); nothing here reaches libsan before the rules pass (no daemon runs). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <errno.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "sock/rdma.h"

/* A sender that offered n transfers of len bytes (as sansock_rdma_stage leaves it). */
static void offered(struct sansock_rdma *r, uint32_t n, uint32_t len)
{
    for (uint32_t i = 0; i < n; i++)
        r->stage[r->tx_next++ % RDMA_NBUF].len = len;
}

static void test_done_rules(void **state)
{
    (void)state;
    struct sansock_rdma r = {0};
    struct sansock_wire_done d = {.cookie = 0, .bytes = 100};
    assert_true(sansock_rdma_can_offer(&r));
    assert_int_equal(sansock_rdma_on_done(&r, &d), -EPROTO); /* nothing offered */
    offered(&r, 2, 100);
    assert_int_equal(sansock_rdma_outstanding(&r), 2);
    d.cookie = 1; /* not the oldest */
    assert_int_equal(sansock_rdma_on_done(&r, &d), -EPROTO);
    d.cookie = 0;
    d.bytes = 99; /* other bytes */
    assert_int_equal(sansock_rdma_on_done(&r, &d), -EPROTO);
    d.bytes = 100;
    d.status = -EIO; /* the peer could not read it: the stream has a hole */
    assert_int_equal(sansock_rdma_on_done(&r, &d), -EPROTO);
    assert_int_equal(sansock_rdma_outstanding(&r), 2); /* nothing changed */
    d.status = 0;
    assert_int_equal(sansock_rdma_on_done(&r, &d), 0);
    assert_int_equal(sansock_rdma_on_done(&r, &d), -EPROTO); /* the same one twice */
    d.cookie = 1;
    assert_int_equal(sansock_rdma_on_done(&r, &d), 0);
    assert_int_equal(sansock_rdma_outstanding(&r), 0);
    assert_int_equal(sansock_rdma_on_done(&r, &d), -EPROTO);
}

static void test_offer_limit(void **state)
{
    (void)state;
    struct sansock_rdma r = {0};
    offered(&r, RDMA_NBUF - 1, 10);
    assert_true(sansock_rdma_can_offer(&r));
    offered(&r, 1, 10);
    assert_false(sansock_rdma_can_offer(&r)); /* every staging buffer waits for its DONE */
    struct sansock_wire_done d = {.cookie = 0, .bytes = 10};
    assert_int_equal(sansock_rdma_on_done(&r, &d), 0);
    assert_true(sansock_rdma_can_offer(&r));
}

static struct sansock_msg offer(uint32_t cookie, uint64_t total)
{
    struct sansock_msg m = {.type = SANSOCK_MSG_RDMA_OFFER};
    m.u.rdma = (struct sansock_wire_rdma){.total_len = total, .cookie = cookie, .desc_len = 40};
    return m;
}

static void test_offer_rules(void **state)
{
    (void)state;
    struct sansock_rdma r = {0};
    uint32_t sink = 99;
    struct sansock_msg m = offer(1, 100); /* the first offer is cookie 0 */
    assert_int_equal(sansock_rdma_on_offer(&r, NULL, NULL, &m, &sink), -EPROTO);
    m = offer(0, (uint64_t)RDMA_CHUNK + 1); /* longer than a sink */
    assert_int_equal(sansock_rdma_on_offer(&r, NULL, NULL, &m, &sink), -EPROTO);
    /* All sinks hold transfers the program has not read: one more offer is a lie. */
    r.rx_next = RDMA_NBUF;
    m = offer(RDMA_NBUF, 100);
    assert_int_equal(sansock_rdma_on_offer(&r, NULL, NULL, &m, &sink), -EPROTO);
    assert_int_equal(sink, 99);
    assert_null(r.sink_mem); /* nothing allocated for a refused offer */
    assert_int_equal(r.rx_next, RDMA_NBUF);
}

static void test_dones_in_order(void **state)
{
    (void)state;
    struct sansock_rdma r = {0};
    /* Two transfers arrived and were read (as on_offer and the reader leave them). */
    r.rx_next = 2;
    r.sink[0] = (struct sansock_rdma_sink){.len = 300, .fetched = true};
    r.sink[1] = (struct sansock_rdma_sink){.len = 400, .fetched = true};
    assert_true(sansock_rdma_fetched(&r, 0));
    sansock_rdma_consumed(&r, 0);
    assert_false(sansock_rdma_fetched(&r, 0));
    sansock_rdma_consumed(&r, 1);
    assert_int_equal(r.dones_due, 2);
    struct sansock_wire_done d;
    sansock_rdma_next_done(&r, &d);
    assert_int_equal(d.cookie, 0);
    assert_int_equal(d.bytes, 300);
    assert_int_equal(d.status, 0);
    sansock_rdma_next_done(&r, &d);
    assert_int_equal(d.cookie, 1);
    assert_int_equal(d.bytes, 400);
    assert_int_equal(r.dones_due, 0);
    /* A failed read leaves its sink unfetched (the session resets the connection). */
    r.reads_posted = 1;
    sansock_rdma_on_read(&r, 0, -EACCES);
    assert_false(sansock_rdma_fetched(&r, 0));
    assert_int_equal(r.reads_posted, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_done_rules),
        cmocka_unit_test(test_offer_limit),
        cmocka_unit_test(test_offer_rules),
        cmocka_unit_test(test_dones_in_order),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
