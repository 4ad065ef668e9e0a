/* The decoder's checks of NETWORKS (proto.c): a request of the right size is accepted whatever its
 * cursor and generation; a reply a daemon sends is accepted, and every way a reply can lie is
 * refused with -EBADMSG before libsan reads it: no generation, more entries than a page, an
 * unchanged answer with entries, an unknown kind, a prefix past 128, a stray byte in an unused
 * entry. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "proto/proto.h"

static struct san_msg good_reply(void)
{
    struct san_msg m;
    san_proto_init(&m, SAN_OP_NETWORKS | SAN_OP_REPLY, 5);
    m.u.networks_rep.gen = 42;
    m.u.networks_rep.nr = 2;
    m.u.networks_rep.n[0] = (struct san_wire_served){.prefix = 104, .flags = SAN_WIRE_NET_LOCAL};
    m.u.networks_rep.n[0].ip[10] = m.u.networks_rep.n[0].ip[11] = 0xff;
    m.u.networks_rep.n[0].ip[12] = 127;
    m.u.networks_rep.n[1] = (struct san_wire_served){.prefix = 64, .flags = SAN_WIRE_NET_LINKED};
    return m;
}

static int decode(const struct san_msg *m, bool reply)
{
    int err;
    enum san_decode d = san_proto_decode(m, m->hdr.length, reply, &err);
    return d == SAN_DECODE_OK ? 0 : d == SAN_DECODE_REJECT ? err : -1000;
}

static void request(void **state)
{
    (void)state;
    struct san_msg m;
    san_proto_init(&m, SAN_OP_NETWORKS, 1);
    assert_int_equal(m.hdr.length, sizeof(m.hdr) + sizeof(struct san_networks_req));
    assert_int_equal(decode(&m, false), 0);
    m.u.networks_req = (struct san_networks_req){.cursor = UINT64_MAX, .known_gen = UINT64_MAX};
    assert_int_equal(decode(&m, false), 0);
    m.hdr.length -= 1;
    assert_int_equal(decode(&m, false), -EBADMSG); /* a body of another size */
    struct san_msg shorter;
    san_proto_init(&shorter, SAN_OP_NETWORKS, 1);
    shorter.hdr.length = sizeof(shorter.hdr) + 8;
    int err;
    assert_int_equal(san_proto_decode(&shorter, shorter.hdr.length, false, &err),
                     SAN_DECODE_REJECT);
    assert_int_equal(err, -EBADMSG);
}

static void replies(void **state)
{
    (void)state;
    struct san_msg m = good_reply();
    assert_int_equal(decode(&m, true), 0);
    m.u.networks_rep = (struct san_networks_rep){.gen = 7, .unchanged = 1};
    assert_int_equal(decode(&m, true), 0);

    m = good_reply();
    m.u.networks_rep.gen = 0;
    assert_int_equal(decode(&m, true), -EBADMSG);
    m = good_reply();
    m.u.networks_rep.nr = SAN_NETWORKS_MAX + 1;
    assert_int_equal(decode(&m, true), -EBADMSG);
    m = good_reply();
    m.u.networks_rep.unchanged = 1;
    assert_int_equal(decode(&m, true), -EBADMSG);
    m = good_reply();
    m.u.networks_rep.unchanged = 2;
    m.u.networks_rep.nr = 0;
    memset(m.u.networks_rep.n, 0, sizeof(m.u.networks_rep.n));
    assert_int_equal(decode(&m, true), -EBADMSG);
    m = (struct san_msg){0};
    san_proto_init(&m, SAN_OP_NETWORKS | SAN_OP_REPLY, 5);
    m.u.networks_rep = (struct san_networks_rep){.gen = 7, .unchanged = 1, .next = 3};
    assert_int_equal(decode(&m, true), -EBADMSG);
    m = good_reply();
    m.u.networks_rep.n[1].flags = SAN_WIRE_NET_LOCAL | SAN_WIRE_NET_LINKED;
    assert_int_equal(decode(&m, true), -EBADMSG);
    m = good_reply();
    m.u.networks_rep.n[1].flags = 0;
    assert_int_equal(decode(&m, true), -EBADMSG);
    m = good_reply();
    m.u.networks_rep.n[0].prefix = 129;
    assert_int_equal(decode(&m, true), -EBADMSG);
    m = good_reply();
    m.u.networks_rep.n[2].ip[3] = 1; /* past nr */
    assert_int_equal(decode(&m, true), -EBADMSG);
    m = good_reply();
    m.u.networks_rep.n[SAN_NETWORKS_MAX - 1].flags = SAN_WIRE_NET_LOCAL;
    assert_int_equal(decode(&m, true), -EBADMSG);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(request),
        cmocka_unit_test(replies),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
