/* sock/rdma: the RDMA modes' bookkeeping, the rules a peer must keep that the decoder cannot
 * see (they depend on the connection's history): a DONE must name the oldest offer outstanding,
 * with its bytes and status 0; an offer must carry the next cookie and find a sink free; cookie k
 * uses buffer k % RDMA_NBUF. Each broken rule is -EPROTO with nothing changed (the session then
 * resets the connection); nothing here reaches libsan before the rules pass (no daemon runs).
 * Write mode: a sender holds one sink at a time, with the next cookie, and writes into it only at
 * its own stream position; a receiver takes a SINK_DONE only for the sink it has out, with no more
 * bytes than it holds, no other stream bytes arrived since it advertised, and no bytes at all for
 * a sink it gave up. */
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

static struct sansock_wire_sink sink(uint32_t cookie, uint64_t pos, uint32_t len)
{
    return (struct sansock_wire_sink){.pos = pos, .len = len, .cookie = cookie, .desc_len = 40};
}

static void test_sender_sinks(void **state)
{
    (void)state;
    struct sansock_rdma r = {0};
    assert_false(sansock_rdma_sink_usable(&r)); /* none held */
    struct sansock_wire_sink k = sink(1, 0, 1000);
    assert_int_equal(sansock_rdma_on_sink(&r, &k), -EPROTO); /* the first sink is cookie 0 */
    assert_false(r.psink_held);
    k = sink(0, 0, 1000);
    assert_int_equal(sansock_rdma_on_sink(&r, &k), 0);
    assert_true(sansock_rdma_sink_usable(&r));
    k = sink(1, 0, 1000);
    assert_int_equal(sansock_rdma_on_sink(&r, &k), -EPROTO); /* two at once */
    assert_int_equal(r.psink.cookie, 0);                     /* the first one still held */
    /* Room: what is left of the sink, at most a staging buffer. */
    assert_int_equal(sansock_rdma_sink_room(&r, 5000), 1000);
    assert_int_equal(sansock_rdma_sink_room(&r, 10), 10);
    /* Writing advances both the sink and the stream: still usable until full. */
    r.psink_filled = 400;
    r.tx_pos = 400;
    assert_true(sansock_rdma_sink_usable(&r));
    assert_int_equal(sansock_rdma_sink_room(&r, 5000), 600);
    r.psink_filled = 1000;
    r.tx_pos = 1000;
    assert_false(sansock_rdma_sink_usable(&r)); /* full */
    struct sansock_wire_done d;
    sansock_rdma_sink_answer(&r, &d);
    assert_int_equal(d.cookie, 0);
    assert_int_equal(d.bytes, 1000);
    assert_int_equal(d.status, 0);
    assert_false(r.psink_held);
    /* A sink at a position behind ours (we sent bytes it had not seen): declined, 0 bytes. */
    k = sink(1, 500, 1u << 20);
    assert_int_equal(sansock_rdma_on_sink(&r, &k), 0);
    assert_false(sansock_rdma_sink_usable(&r));
    sansock_rdma_sink_answer(&r, &d);
    assert_int_equal(d.cookie, 1);
    assert_int_equal(d.bytes, 0);
    /* Large sinks are written a staging buffer at a time. */
    k = sink(2, 1000, 1u << 20);
    assert_int_equal(sansock_rdma_on_sink(&r, &k), 0);
    assert_true(sansock_rdma_sink_usable(&r));
    assert_int_equal(sansock_rdma_sink_room(&r, 4u << 20), RDMA_CHUNK);
}

static void test_receiver_sinks(void **state)
{
    (void)state;
    struct sansock_rdma r = {0};
    struct sansock_wire_done d = {.cookie = 0, .bytes = 0};
    assert_int_equal(sansock_rdma_on_sink_done(&r, &d), -EPROTO); /* no sink out */
    /* A sink out (as sansock_rdma_sink_open leaves it): cookie 0, 3000 bytes at position 100. */
    r.rx_pos = 100;
    r.sinks_out = 1;
    r.sink_state = SINK_OUT;
    r.ksink_pos = 100;
    r.ksink_len = 3000;
    d = (struct sansock_wire_done){.cookie = 1, .bytes = 10};
    assert_int_equal(sansock_rdma_on_sink_done(&r, &d), -EPROTO); /* another cookie */
    d = (struct sansock_wire_done){.cookie = 0, .bytes = 3001};
    assert_int_equal(sansock_rdma_on_sink_done(&r, &d), -EPROTO); /* more than the sink */
    d = (struct sansock_wire_done){.cookie = 0, .status = -EIO, .bytes = 10};
    assert_int_equal(sansock_rdma_on_sink_done(&r, &d), -EPROTO); /* a status */
    r.rx_pos = 150; /* other stream bytes came after the sink was advertised */
    d = (struct sansock_wire_done){.cookie = 0, .bytes = 10};
    assert_int_equal(sansock_rdma_on_sink_done(&r, &d), -EPROTO);
    assert_int_equal(r.sink_state, SINK_OUT); /* nothing changed */
    r.rx_pos = 100;
    d.bytes = 3000;
    assert_int_equal(sansock_rdma_on_sink_done(&r, &d), 0);
    assert_int_equal(r.sink_state, SINK_FILLED);
    assert_true(r.rx_pos == 3100);
    assert_int_equal(sansock_rdma_on_sink_done(&r, &d), -EPROTO); /* the same one twice */
    const uint8_t *staged;
    assert_int_equal(sansock_rdma_sink_take(&r, &staged), 3000);
    assert_null(staged);
    assert_int_equal(r.sink_state, SINK_IDLE);
    assert_int_equal(sansock_rdma_on_sink_done(&r, &d), -EPROTO); /* none out any more */
    /* Declined: 0 bytes, the owner takes nothing. */
    r.sinks_out = 2;
    r.sink_state = SINK_OUT;
    r.ksink_pos = r.rx_pos;
    d = (struct sansock_wire_done){.cookie = 1, .bytes = 0};
    assert_int_equal(sansock_rdma_on_sink_done(&r, &d), 0);
    assert_int_equal(r.sink_state, SINK_DECLINED);
    assert_int_equal(sansock_rdma_sink_take(&r, &staged), 0);
    /* Given up by its owner: only a 0-byte answer is taken, then the next sink may go. */
    r.sinks_out = 3;
    r.sink_state = SINK_OUT;
    r.ksink_pos = r.rx_pos;
    sansock_rdma_sink_abandon(&r);
    assert_int_equal(r.sink_state, SINK_DOOMED);
    d = (struct sansock_wire_done){.cookie = 2, .bytes = 1};
    assert_int_equal(sansock_rdma_on_sink_done(&r, &d), -EPROTO);
    d.bytes = 0;
    assert_int_equal(sansock_rdma_on_sink_done(&r, &d), 0);
    assert_int_equal(r.sink_state, SINK_IDLE);
    assert_true(r.rx_pos == 3100);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_done_rules),   cmocka_unit_test(test_offer_limit),
        cmocka_unit_test(test_offer_rules),  cmocka_unit_test(test_dones_in_order),
        cmocka_unit_test(test_sender_sinks), cmocka_unit_test(test_receiver_sinks),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
