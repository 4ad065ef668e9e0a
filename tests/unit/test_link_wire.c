/* link/wire and link/auth: the decoder accepts each well-formed message and refuses every way a
 * message can be wrong with the code wire.h promises, one case each; the keys differ by secret,
 * direction and nonce, and a MAC fails on any change of the message it covers. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include <nettle/hmac.h>

#include "link/auth.h"
#include "link/wire.h"

static struct san_link_msg msg(unsigned type)
{
    struct san_link_msg m;
    san_link_init(&m, type, 0x1234, 7);
    if (type == SAN_LINK_HELLO)
        m.u.hello.max_version = SAN_LINK_VERSION;
    if (type == SAN_LINK_PROOF) {
        m.u.proof.your_host_id = 0x5678;
        m.u.proof.nr_nets = 1;
        m.u.proof.nets[0].ip[15] = 1;
        m.u.proof.nets[0].prefix = 128;
    }
    if (type == SAN_LINK_EP) {
        m.u.ep.x.op = SAN_XMSG_CREDIT;
        m.u.ep.x.conn = 5;
        m.u.ep.x.from = 6;
    }
    return m;
}

/* An endpoint message carrying len payload bytes of operation op. */
static struct san_link_msg ep_data(unsigned op, uint32_t len)
{
    struct san_link_msg m = msg(SAN_LINK_EP);
    m.u.ep.x.op = op;
    m.u.ep.x.seq = 1;
    m.u.ep.x.total = 2 * SAN_XMSG_CHUNK;
    m.u.ep.x.offset = SAN_XMSG_CHUNK;
    m.u.ep.x.len = len;
    m.hdr.length += len;
    return m;
}

static int decode(const struct san_link_msg *m)
{
    return san_link_decode(m, m->hdr.length);
}

static void test_valid(void **state)
{
    (void)state;
    for (unsigned t = SAN_LINK_HELLO; t <= SAN_LINK_TYPE_MAX; t++) {
        struct san_link_msg m = msg(t);
        assert_int_equal(decode(&m), 0);
        assert_int_equal(m.hdr.length, sizeof(m.hdr) + (size_t)san_link_body_size(t));
    }
}

static void test_framing(void **state)
{
    (void)state;
    struct san_link_msg m = msg(SAN_LINK_HEARTBEAT);
    uint8_t big[2 * sizeof(m)] = {0};
    assert_int_equal(san_link_decode(&m, sizeof(m.hdr) - 1), -EBADMSG); /* too short */
    assert_int_equal(san_link_decode(&m, 0), -EBADMSG);
    memcpy(big, &m, sizeof(m));
    ((struct san_link_hdr *)big)->length = sizeof(big);
    assert_int_equal(san_link_decode(big, sizeof(big)), -EBADMSG); /* oversized */
    m.hdr.magic ^= 1;
    assert_int_equal(decode(&m), -EBADMSG); /* not ours */
    m = msg(SAN_LINK_HEARTBEAT);
    assert_int_equal(san_link_decode(&m, m.hdr.length + 8), -EBADMSG); /* length lies */
    m.hdr.length += 8;
    assert_int_equal(decode(&m), -EBADMSG); /* body of the wrong size */
}

static void test_version_and_type(void **state)
{
    (void)state;
    struct san_link_msg m = msg(SAN_LINK_HELLO);
    m.hdr.version = SAN_LINK_VERSION + 1;
    assert_int_equal(decode(&m), -EPROTO);
    m.hdr.length = 4000; /* another version may have other sizes: still -EPROTO */
    assert_int_equal(san_link_decode(&m, sizeof(m)), -EPROTO);
    m = msg(SAN_LINK_HELLO);
    m.hdr.type = 0;
    assert_int_equal(decode(&m), -EOPNOTSUPP);
    m.hdr.type = SAN_LINK_TYPE_MAX + 1;
    assert_int_equal(decode(&m), -EOPNOTSUPP);
}

static void test_fields(void **state)
{
    (void)state;
    struct san_link_msg m = msg(SAN_LINK_BYE);
    m.hdr.reserved = 1;
    assert_int_equal(decode(&m), -EBADMSG);
    m = msg(SAN_LINK_BYE);
    m.hdr.host_id = 0;
    assert_int_equal(decode(&m), -EBADMSG);
    m = msg(SAN_LINK_BYE);
    m.u.bye.reserved = 1;
    assert_int_equal(decode(&m), -EBADMSG);
    m = msg(SAN_LINK_HEARTBEAT);
    m.u.heartbeat.reserved = 1;
    assert_int_equal(decode(&m), -EBADMSG);
    m = msg(SAN_LINK_HELLO);
    m.hdr.mac[3] = 1; /* a HELLO carries no MAC */
    assert_int_equal(decode(&m), -EBADMSG);
    m = msg(SAN_LINK_HELLO);
    m.u.hello.max_version = 0;
    assert_int_equal(decode(&m), -EBADMSG);
    m = msg(SAN_LINK_HELLO);
    m.u.hello.reserved2 = 1;
    assert_int_equal(decode(&m), -EBADMSG);
}

static void test_proof(void **state)
{
    (void)state;
    struct san_link_msg m = msg(SAN_LINK_PROOF);
    m.u.proof.nr_nets = SAN_LINK_NETS + 1;
    assert_int_equal(decode(&m), -EBADMSG);
    m = msg(SAN_LINK_PROOF);
    m.u.proof.nets[0].prefix = 129;
    assert_int_equal(decode(&m), -EBADMSG);
    m = msg(SAN_LINK_PROOF);
    m.u.proof.nets[0].reserved = 1;
    assert_int_equal(decode(&m), -EBADMSG);
    m = msg(SAN_LINK_PROOF);
    m.u.proof.nets[5].ip[0] = 1; /* past nr_nets: must be zero */
    assert_int_equal(decode(&m), -EBADMSG);
    m = msg(SAN_LINK_PROOF);
    m.u.proof.your_host_id = 0;
    assert_int_equal(decode(&m), -EBADMSG);
    m = msg(SAN_LINK_PROOF);
    m.u.proof.reserved = 1;
    assert_int_equal(decode(&m), -EBADMSG);
}

static void test_ep(void **state)
{
    (void)state;
    struct san_link_msg m = ep_data(SAN_XMSG_WRITE, SAN_XMSG_CHUNK);
    assert_int_equal(decode(&m), 0); /* a full chunk, the last of its request */
    assert_int_equal(san_link_decode(&m, m.hdr.length - 1), -EBADMSG); /* length lies */
    m.hdr.length -= 1;
    assert_int_equal(decode(&m), -EBADMSG); /* payload shorter than it says */
    m = ep_data(SAN_XMSG_SEND, SAN_XMSG_CHUNK);
    m.u.ep.x.offset = SAN_XMSG_CHUNK + 1;
    assert_int_equal(decode(&m), -EBADMSG); /* past the request's end */
    m = ep_data(SAN_XMSG_RDATA, 16);
    m.u.ep.x.status = -EACCES;
    assert_int_equal(decode(&m), -EBADMSG); /* a refusal carries no data */
    m = ep_data(SAN_XMSG_RDATA, 16);
    m.u.ep.x.seq = 0;
    assert_int_equal(decode(&m), -EBADMSG);
    m = ep_data(SAN_XMSG_DONE, 16);
    assert_int_equal(decode(&m), -EBADMSG); /* no payload on a DONE */
    m = msg(SAN_LINK_EP);
    m.u.ep.x.op = SAN_XMSG_OP_MAX + 1;
    assert_int_equal(decode(&m), -EBADMSG);
    m = msg(SAN_LINK_EP);
    m.u.ep.x.op = 0;
    assert_int_equal(decode(&m), -EBADMSG);
    m = msg(SAN_LINK_EP);
    m.u.ep.x.status = 1;
    assert_int_equal(decode(&m), -EBADMSG);
    m = msg(SAN_LINK_EP);
    m.u.ep.x.status = -5000;
    assert_int_equal(decode(&m), -EBADMSG);
    m = msg(SAN_LINK_EP);
    m.u.ep.x.reserved = 1;
    assert_int_equal(decode(&m), -EBADMSG);
    m = msg(SAN_LINK_EP);
    m.u.ep.x.reserved2 = 1;
    assert_int_equal(decode(&m), -EBADMSG);
    m = msg(SAN_LINK_EP);
    m.u.ep.x.conn = 0;
    assert_int_equal(decode(&m), -EBADMSG); /* a credit names a connection */
    m = msg(SAN_LINK_EP);
    m.u.ep.x.from = 0;
    assert_int_equal(decode(&m), -EBADMSG);
    m = msg(SAN_LINK_EP);
    m.u.ep.x.port = 80;
    assert_int_equal(decode(&m), -EBADMSG); /* an address only on a CONNECT */
    m = msg(SAN_LINK_EP);
    m.u.ep.x.op = SAN_XMSG_CONNECT;
    m.u.ep.x.conn = 0;
    m.u.ep.x.port = 80;
    assert_int_equal(decode(&m), 0);
    m.u.ep.x.port = 0;
    assert_int_equal(decode(&m), -EBADMSG);
    m.u.ep.x.port = 80;
    m.u.ep.x.conn = 3;
    assert_int_equal(decode(&m), -EBADMSG);
    m = msg(SAN_LINK_EP);
    m.u.ep.x.op = SAN_XMSG_ACCEPT;
    m.u.ep.x.from = 0;
    assert_int_equal(decode(&m), -EBADMSG); /* an accept names the acceptor's half */
    m.u.ep.x.status = -ECONNREFUSED;
    assert_int_equal(decode(&m), 0); /* a refusal names none */
}

static void test_keys_and_macs(void **state)
{
    (void)state;
    uint8_t na[SAN_LINK_NONCE] = {1}, nb[SAN_LINK_NONCE] = {2};
    uint8_t k1[SAN_LINK_KEY], k2[SAN_LINK_KEY], k3[SAN_LINK_KEY], k4[SAN_LINK_KEY];
    const uint8_t s1[] = "secret", s2[] = "secreT";
    san_link_key(s1, 6, 10, na, 20, nb, k1);
    san_link_key(s1, 6, 20, nb, 10, na, k2); /* the other direction */
    san_link_key(s2, 6, 10, na, 20, nb, k3); /* another secret */
    nb[15] = 1;
    san_link_key(s1, 6, 10, na, 20, nb, k4); /* another nonce */
    assert_memory_not_equal(k1, k2, SAN_LINK_KEY);
    assert_memory_not_equal(k1, k3, SAN_LINK_KEY);
    assert_memory_not_equal(k1, k4, SAN_LINK_KEY);
    san_link_key(s1, 6, 10, na, 20, nb, k2);
    assert_memory_equal(k4, k2, SAN_LINK_KEY); /* deterministic */

    struct san_link_msg m = msg(SAN_LINK_PROOF);
    san_link_mac(k1, &m);
    assert_true(san_link_mac_ok(k1, &m));
    assert_false(san_link_mac_ok(k3, &m));
    for (size_t i = 0; i < m.hdr.length; i++) {
        if (i >= offsetof(struct san_link_hdr, mac) && i < sizeof(struct san_link_hdr))
            continue;
        struct san_link_msg c = m;
        ((uint8_t *)&c)[i] ^= 0x40;
        assert_false(san_link_mac_ok(k1, &c));
    }
    m.hdr.mac[0] ^= 1;
    assert_false(san_link_mac_ok(k1, &m));

    /* The MAC is HMAC-SHA256 over the message as it travels with the MAC field zero (what a
     * daemon of the same protocol version computes), however auth.c walks the message. */
    uint8_t want[SAN_LINK_MAC];
    struct hmac_sha256_ctx h;
    struct san_link_msg z = msg(SAN_LINK_PROOF);
    san_link_mac(k1, &z);
    struct san_link_msg plain = z;
    memset(plain.hdr.mac, 0, SAN_LINK_MAC);
    hmac_sha256_set_key(&h, SAN_LINK_KEY, k1);
    hmac_sha256_update(&h, plain.hdr.length, (const uint8_t *)&plain);
    hmac_sha256_digest(&h, SAN_LINK_MAC, want);
    assert_memory_equal(z.hdr.mac, want, SAN_LINK_MAC);

    /* Endpoint messages: UMAC-64 keyed from the direction's key, the nonce the seq. */
    struct umac64_ctx u1, u2;
    san_link_umac_key(k1, &u1);
    san_link_umac_key(k3, &u2);
    struct san_link_msg e = ep_data(SAN_XMSG_WRITE, 100);
    memset(e.u.ep.data, 0x33, 100);
    san_link_umac(&u1, &e);
    assert_true(san_link_umac_ok(&u1, &e));
    assert_false(san_link_umac_ok(&u2, &e)); /* another key */
    assert_false(san_link_mac_ok(k1, &e));   /* not an HMAC */
    for (size_t i = 0; i < e.hdr.length; i++) {
        struct san_link_msg c = e;
        ((uint8_t *)&c)[i] ^= 0x04;
        assert_false(san_link_umac_ok(&u1, &c)); /* any byte, the MAC field's zero rest too */
    }
    struct san_link_msg c = e;
    c.hdr.seq++;
    assert_false(san_link_umac_ok(&u1, &c)); /* another nonce */
    san_link_umac(&u1, &c);
    assert_memory_not_equal(c.hdr.mac, e.hdr.mac, 8); /* the same body: another tag */
}

/* The tag computed as a sender writes the message (begin, the payload in slices, end) is the
 * one of san_link_umac, however the slices fall; a computation abandoned part way (ep_build's
 * fill failed) leaves the context right for the next message. */
static void test_umac_streamed(void **state)
{
    (void)state;
    static struct san_link_msg whole, sliced;
    uint8_t key[SAN_LINK_KEY] = {7};
    struct umac64_ctx u;
    san_link_umac_key(key, &u);
    whole = ep_data(SAN_XMSG_WRITE, SAN_XMSG_CHUNK);
    for (size_t i = 0; i < SAN_XMSG_CHUNK; i++)
        whole.u.ep.data[i] = (uint8_t)(i * 131 + (i >> 9));
    whole.hdr.seq = 42;
    sliced = whole;
    san_link_umac(&u, &whole);

    static const size_t cuts[][4] = {{1, 1000, 16384, 0}, {16216, 16384, 16384, 0}, {0}};
    for (size_t c = 0; c < sizeof(cuts) / sizeof(cuts[0]); c++) {
        /* abandoned: begin and part of the payload, then end without a use of the tag */
        san_link_umac_begin(&u, &sliced);
        san_link_umac_update(&u, &sliced.u.ep, 5000);
        san_link_umac_end(&u, &sliced);

        memset(sliced.hdr.mac, 0xee, SAN_LINK_MAC); /* counts as zero */
        san_link_umac_begin(&u, &sliced);
        san_link_umac_update(&u, &sliced.u.ep.x, sizeof(sliced.u.ep.x));
        size_t off = 0;
        for (size_t k = 0; k < 4 && cuts[c][k]; k++) {
            san_link_umac_update(&u, sliced.u.ep.data + off, cuts[c][k]);
            off += cuts[c][k];
        }
        san_link_umac_update(&u, sliced.u.ep.data + off, SAN_XMSG_CHUNK - off);
        san_link_umac_end(&u, &sliced);
        assert_memory_equal(sliced.hdr.mac, whole.hdr.mac, SAN_LINK_MAC);
        assert_true(san_link_umac_ok(&u, &sliced));
    }
    sliced.u.ep.data[SAN_XMSG_CHUNK - 1] ^= 1;
    assert_false(san_link_umac_ok(&u, &sliced)); /* the last byte is under it too */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_valid),
        cmocka_unit_test(test_framing),
        cmocka_unit_test(test_version_and_type),
        cmocka_unit_test(test_fields),
        cmocka_unit_test(test_proof),
        cmocka_unit_test(test_ep),
        cmocka_unit_test(test_keys_and_macs),
        cmocka_unit_test(test_umac_streamed),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
