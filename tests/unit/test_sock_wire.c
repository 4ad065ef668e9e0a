/* sock/wire: the session protocol's messages. Every message type round-trips through its encoder
 * and the decoder with every field intact; the bytes on the wire are little-endian at the offsets
 * wire.h states; and every rejection the decoder promises happens, each with its own reason, on a
 * message that is valid except for the one thing a test breaks. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <errno.h>
#include <stdint.h>
#include <string.h>

#include <arpa/inet.h>
#include <cmocka.h>
#include <netinet/in.h>

#include "sock/wire.h"

static const struct sansock_wire_limits after = {
    .negotiated = true, .max_payload = 4096, .max_credits = 32, .features = 0};
static const struct sansock_wire_limits before = {
    .negotiated = false, .max_payload = 4096, .max_credits = 0, .features = 0};
static const struct sansock_wire_limits rdma = {.negotiated = true,
                                                .max_payload = 4096,
                                                .max_credits = 32,
                                                .features = SANSOCK_FEAT_ALL,
                                                .max_rdma = 1 << 20};

static struct sansock_wire_negotiate sample_negotiate(void)
{
    struct sansock_wire_negotiate n = {
        .recv_slots = 32, .slot_size = 4160, .rdma_threshold = 4096, .features = 0, .max_rdma = 0};
    struct sockaddr_in in = {.sin_family = AF_INET, .sin_port = htons(40001)};
    inet_pton(AF_INET, "127.0.0.1", &in.sin_addr);
    assert_int_equal(sansock_wire_addr_from(&n.src, (struct sockaddr *)&in, sizeof(in)), 0);
    struct sockaddr_in6 in6 = {
        .sin6_family = AF_INET6, .sin6_port = htons(8080), .sin6_scope_id = 3};
    inet_pton(AF_INET6, "::1", &in6.sin6_addr);
    assert_int_equal(sansock_wire_addr_from(&n.dst, (struct sockaddr *)&in6, sizeof(in6)), 0);
    return n;
}

static void test_negotiate_round_trip(void **state)
{
    (void)state;
    uint8_t buf[SANSOCK_NEGOTIATE_MAX];
    struct sansock_wire_negotiate n = sample_negotiate();
    size_t len = sansock_wire_encode_negotiate(buf, &n);
    assert_int_equal(len, SANSOCK_NEGOTIATE_SIZE);
    assert_true(len <= 256);
    /* The bytes: version, type, little-endian length and slot count at wire.h's offsets. */
    assert_int_equal(buf[0], SANSOCK_WIRE_VERSION);
    assert_int_equal(buf[1], SANSOCK_MSG_NEGOTIATE);
    assert_int_equal(buf[4], 80);
    assert_int_equal(buf[5], 0);
    assert_int_equal(buf[16], 32);
    assert_int_equal(buf[20], 4160 & 0xff);
    assert_int_equal(buf[21], 4160 >> 8);
    struct sansock_msg m;
    assert_int_equal(sansock_wire_decode(buf, len, &before, &m), SANSOCK_WERR_OK);
    assert_int_equal(m.type, SANSOCK_MSG_NEGOTIATE);
    assert_int_equal(m.u.negotiate.recv_slots, 32);
    assert_int_equal(m.u.negotiate.slot_size, 4160);
    assert_int_equal(m.u.negotiate.rdma_threshold, 4096);
    assert_memory_equal(&m.u.negotiate.src, &n.src, sizeof(n.src));
    assert_memory_equal(&m.u.negotiate.dst, &n.dst, sizeof(n.dst));

    struct sockaddr_in6 out6;
    socklen_t olen = sizeof(out6);
    sansock_wire_addr_to(&m.u.negotiate.dst, (struct sockaddr *)&out6, &olen);
    assert_int_equal(olen, sizeof(out6));
    assert_int_equal(out6.sin6_family, AF_INET6);
    assert_int_equal(ntohs(out6.sin6_port), 8080);
    assert_int_equal(out6.sin6_scope_id, 3);
    assert_true(IN6_IS_ADDR_LOOPBACK(&out6.sin6_addr));
    struct sockaddr_in out4;
    olen = 2; /* too small: truncated, full size reported, as getpeername does */
    memset(&out4, 0xee, sizeof(out4));
    sansock_wire_addr_to(&m.u.negotiate.src, (struct sockaddr *)&out4, &olen);
    assert_int_equal(olen, sizeof(out4));
    assert_int_equal(out4.sin_family, AF_INET);
    assert_int_equal(((uint8_t *)&out4)[2], 0xee);
}

static void test_data_round_trip(void **state)
{
    (void)state;
    static uint8_t buf[SANSOCK_HDR_SIZE + 4096];
    for (uint32_t len = 1; len <= 4096; len = len * 3 + 1) {
        size_t n = sansock_wire_encode_data(buf, SANSOCK_F_CREDIT_LOW, len, 7);
        assert_int_equal(n, SANSOCK_HDR_SIZE + len);
        for (uint32_t i = 0; i < len; i++)
            buf[SANSOCK_HDR_SIZE + i] = (uint8_t)(i * 7 + len);
        struct sansock_msg m;
        assert_int_equal(sansock_wire_decode(buf, n, &after, &m), SANSOCK_WERR_OK);
        assert_int_equal(m.type, SANSOCK_MSG_DATA);
        assert_int_equal(m.flags, SANSOCK_F_CREDIT_LOW);
        assert_int_equal(m.credits, 7);
        assert_int_equal(m.payload_len, len);
        assert_ptr_equal(m.payload, buf + SANSOCK_HDR_SIZE);
    }
    /* The largest payload a slot holds. */
    size_t n = sansock_wire_encode_data(buf, 0, 4096, 0);
    struct sansock_msg m;
    assert_int_equal(sansock_wire_decode(buf, n, &after, &m), SANSOCK_WERR_OK);
}

static void test_control_round_trip(void **state)
{
    (void)state;
    uint8_t buf[256];
    struct sansock_msg m;
    size_t n = sansock_wire_encode_hdr(buf, SANSOCK_MSG_CREDIT, 0, 0, 32);
    assert_int_equal(sansock_wire_decode(buf, n, &after, &m), SANSOCK_WERR_OK);
    assert_int_equal(m.type, SANSOCK_MSG_CREDIT);
    assert_int_equal(m.credits, 32);
    n = sansock_wire_encode_hdr(buf, SANSOCK_MSG_SHUTDOWN, 0, 0, 0);
    assert_int_equal(sansock_wire_decode(buf, n, &after, &m), SANSOCK_WERR_OK);
    assert_int_equal(m.type, SANSOCK_MSG_SHUTDOWN);

    struct sansock_wire_rdma r = {.total_len = 1 << 20, .cookie = 0xabcdef01, .desc_len = 40};
    for (unsigned i = 0; i < sizeof(r.desc); i++)
        r.desc[i] = (uint8_t)(i + 1);
    n = sansock_wire_encode_rdma(buf, SANSOCK_MSG_RDMA_OFFER, 0, 1, &r, 100);
    assert_int_equal(n, SANSOCK_HDR_SIZE + 64 + 100);
    assert_int_equal(sansock_wire_decode(buf, n, &rdma, &m), SANSOCK_WERR_OK);
    assert_int_equal(m.u.rdma.total_len, 1 << 20);
    assert_int_equal(m.u.rdma.cookie, 0xabcdef01);
    assert_int_equal(m.u.rdma.desc_len, 40);
    assert_memory_equal(m.u.rdma.desc, r.desc, sizeof(r.desc));
    assert_int_equal(m.payload_len, 100);
    assert_ptr_equal(m.payload, buf + SANSOCK_HDR_SIZE + 64);
    struct sansock_wire_sink k = {
        .pos = 0x123456789abcull, .len = 3u << 20, .cookie = 0x10203, .desc_len = 40};
    memcpy(k.desc, r.desc, sizeof(k.desc));
    n = sansock_wire_encode_sink(buf, SANSOCK_F_CREDIT_LOW, 3, &k);
    assert_int_equal(n, SANSOCK_HDR_SIZE + 72);
    assert_int_equal(sansock_wire_decode(buf, n, &rdma, &m), SANSOCK_WERR_OK);
    assert_int_equal(m.type, SANSOCK_MSG_RDMA_SINK);
    assert_int_equal(m.flags, SANSOCK_F_CREDIT_LOW);
    assert_int_equal(m.credits, 3);
    assert_true(m.u.sink.pos == 0x123456789abcull);
    assert_int_equal(m.u.sink.len, 3u << 20);
    assert_int_equal(m.u.sink.cookie, 0x10203);
    assert_int_equal(m.u.sink.desc_len, 40);
    assert_memory_equal(m.u.sink.desc, k.desc, sizeof(k.desc));
    assert_int_equal(m.payload_len, 0);

    struct sansock_wire_done d = {.cookie = 5, .status = -105, .bytes = 12345};
    for (uint8_t type = SANSOCK_MSG_DONE; type <= SANSOCK_MSG_SINK_DONE; type++) {
        n = sansock_wire_encode_done(buf, type, 0, 2, &d);
        assert_int_equal(sansock_wire_decode(buf, n, &rdma, &m), SANSOCK_WERR_OK);
        assert_int_equal(m.type, type);
        assert_int_equal(m.u.done.cookie, 5);
        assert_int_equal(m.u.done.status, -105);
        assert_int_equal(m.u.done.bytes, 12345);
        assert_int_equal(m.credits, 2);
    }
}

/* Decodes buf[0, n) and expects the reason. */
static void expect(const uint8_t *buf, size_t n, const struct sansock_wire_limits *lim,
                   enum sansock_wire_err want)
{
    struct sansock_msg m;
    enum sansock_wire_err got = sansock_wire_decode(buf, n, lim, &m);
    if (got != want)
        fail_msg("decode: %s, want %s", sansock_wire_strerror(got), sansock_wire_strerror(want));
}

static void test_header_rejections(void **state)
{
    (void)state;
    uint8_t buf[SANSOCK_HDR_SIZE + 4097];
    size_t n = sansock_wire_encode_data(buf, 0, 10, 0);
    expect(buf, n, &after, SANSOCK_WERR_OK);
    expect(buf, 0, &after, SANSOCK_WERR_SHORT);
    expect(buf, SANSOCK_HDR_SIZE - 1, &after, SANSOCK_WERR_SHORT);
    expect(buf, n - 1, &after, SANSOCK_WERR_LENGTH); /* fewer bytes than len says */
    expect(buf, n + 1, &after, SANSOCK_WERR_LENGTH); /* more */
    buf[0] = 2;
    expect(buf, n, &after, SANSOCK_WERR_VERSION);
    buf[0] = 0;
    expect(buf, n, &after, SANSOCK_WERR_VERSION);
    buf[0] = SANSOCK_WIRE_VERSION;
    buf[1] = 0;
    expect(buf, n, &after, SANSOCK_WERR_TYPE);
    buf[1] = SANSOCK_MSG_TYPE_MAX + 1;
    expect(buf, n, &after, SANSOCK_WERR_TYPE);
    buf[1] = 0xff;
    expect(buf, n, &after, SANSOCK_WERR_TYPE);
    buf[1] = SANSOCK_MSG_DATA;
    buf[2] = 2; /* unknown flag */
    expect(buf, n, &after, SANSOCK_WERR_FLAGS);
    buf[2] = 0;
    buf[3] = 0x80;
    expect(buf, n, &after, SANSOCK_WERR_FLAGS);
    buf[3] = 0;
    buf[15] = 1; /* reserved */
    expect(buf, n, &after, SANSOCK_WERR_RESERVED);
    buf[15] = 0;
    expect(buf, n, &after, SANSOCK_WERR_OK);
    /* A length whose header-plus-payload wraps must not pass as short or long by accident. */
    sansock_wire_encode_data(buf, 0, UINT32_MAX, 0);
    expect(buf, n, &after, SANSOCK_WERR_LENGTH);
}

static void test_order_and_credit_rejections(void **state)
{
    (void)state;
    uint8_t buf[SANSOCK_NEGOTIATE_MAX];
    struct sansock_wire_negotiate n = sample_negotiate();
    size_t len = sansock_wire_encode_negotiate(buf, &n);
    expect(buf, len, &after, SANSOCK_WERR_ORDER); /* a second negotiation */
    len = sansock_wire_encode_data(buf, 0, 1, 0);
    expect(buf, len, &before, SANSOCK_WERR_ORDER); /* data before the negotiation */
    len = sansock_wire_encode_hdr(buf, SANSOCK_MSG_SHUTDOWN, 0, 0, 0);
    expect(buf, len, &before, SANSOCK_WERR_ORDER);

    /* Credits: up to what the peer's receives allow, not one more. */
    len = sansock_wire_encode_data(buf, 0, 1, 32);
    expect(buf, len, &after, SANSOCK_WERR_OK);
    len = sansock_wire_encode_data(buf, 0, 1, 33);
    expect(buf, len, &after, SANSOCK_WERR_CREDITS);
    struct sansock_wire_limits held = after;
    held.max_credits = 3;
    len = sansock_wire_encode_hdr(buf, SANSOCK_MSG_CREDIT, 0, 0, 4);
    expect(buf, len, &held, SANSOCK_WERR_CREDITS);
    len = sansock_wire_encode_hdr(buf, SANSOCK_MSG_CREDIT, 0, 0, 3);
    expect(buf, len, &held, SANSOCK_WERR_OK);
    len = sansock_wire_encode_hdr(buf, SANSOCK_MSG_CREDIT, 0, 0, UINT32_MAX);
    expect(buf, len, &held, SANSOCK_WERR_CREDITS);
    len = sansock_wire_encode_hdr(buf, SANSOCK_MSG_CREDIT, 0, 0, 0); /* a CREDIT of nothing */
    expect(buf, len, &after, SANSOCK_WERR_CREDITS);
    /* The negotiation gives credits through recv_slots, never through the header. */
    len = sansock_wire_encode_negotiate(buf, &n);
    buf[8] = 1;
    struct sansock_wire_limits lax = before;
    lax.max_credits = 64;
    expect(buf, len, &lax, SANSOCK_WERR_CREDITS);
}

static void test_length_rejections(void **state)
{
    (void)state;
    static uint8_t buf[SANSOCK_HDR_SIZE + 8192];
    memset(buf, 0, sizeof(buf));
    size_t n = sansock_wire_encode_data(buf, 0, 0, 0); /* empty data */
    expect(buf, n, &after, SANSOCK_WERR_LENGTH);
    n = sansock_wire_encode_data(buf, 0, 4097, 0); /* beyond the receive slot */
    expect(buf, n, &after, SANSOCK_WERR_LENGTH);
    n = sansock_wire_encode_hdr(buf, SANSOCK_MSG_CREDIT, 0, 1, 1); /* payload on a CREDIT */
    expect(buf, n, &after, SANSOCK_WERR_LENGTH);
    n = sansock_wire_encode_hdr(buf, SANSOCK_MSG_SHUTDOWN, 0, 4, 0);
    expect(buf, n, &after, SANSOCK_WERR_LENGTH);
    n = sansock_wire_encode_hdr(buf, SANSOCK_MSG_NEGOTIATE, 0, 79, 0);
    expect(buf, n, &before, SANSOCK_WERR_SHORT);
    n = sansock_wire_encode_hdr(buf, SANSOCK_MSG_NEGOTIATE, 0, 81, 0);
    expect(buf, n, &before, SANSOCK_WERR_LENGTH);
    n = sansock_wire_encode_hdr(buf, SANSOCK_MSG_RDMA_OFFER, 0, 63, 0);
    expect(buf, n, &rdma, SANSOCK_WERR_SHORT);
    n = sansock_wire_encode_hdr(buf, SANSOCK_MSG_DONE, 0, 15, 0);
    expect(buf, n, &rdma, SANSOCK_WERR_SHORT);
    n = sansock_wire_encode_hdr(buf, SANSOCK_MSG_DONE, 0, 17, 0);
    expect(buf, n, &rdma, SANSOCK_WERR_LENGTH);
    n = sansock_wire_encode_hdr(buf, SANSOCK_MSG_SINK_DONE, 0, 15, 0);
    expect(buf, n, &rdma, SANSOCK_WERR_SHORT);
    n = sansock_wire_encode_hdr(buf, SANSOCK_MSG_SINK_DONE, 0, 17, 0);
    expect(buf, n, &rdma, SANSOCK_WERR_LENGTH);
    n = sansock_wire_encode_hdr(buf, SANSOCK_MSG_RDMA_SINK, 0, 71, 0);
    expect(buf, n, &rdma, SANSOCK_WERR_SHORT);
    n = sansock_wire_encode_hdr(buf, SANSOCK_MSG_RDMA_SINK, 0, 73, 0); /* data on a sink */
    expect(buf, n, &rdma, SANSOCK_WERR_LENGTH);

    struct sansock_wire_rdma r = {.total_len = 100, .cookie = 1, .desc_len = 40};
    n = sansock_wire_encode_rdma(buf, SANSOCK_MSG_RDMA_OFFER, 0, 0, &r, 100); /* inline = all */
    expect(buf, n, &rdma, SANSOCK_WERR_LENGTH);
    n = sansock_wire_encode_rdma(buf, SANSOCK_MSG_RDMA_OFFER, 0, 0, &r, 99);
    expect(buf, n, &rdma, SANSOCK_WERR_OK);
    r.total_len = 1 << 20;
    n = sansock_wire_encode_rdma(buf, SANSOCK_MSG_RDMA_OFFER, 0, 0, &r, 4096 - 63); /* > slot */
    expect(buf, n, &rdma, SANSOCK_WERR_LENGTH);
}

static void test_field_rejections(void **state)
{
    (void)state;
    uint8_t buf[SANSOCK_NEGOTIATE_MAX];
    struct sansock_wire_negotiate base = sample_negotiate(), n;
    struct sansock_msg m;
#define BAD(stmt, want)                                                                            \
    do {                                                                                           \
        n = base;                                                                                  \
        stmt;                                                                                      \
        size_t len_ = sansock_wire_encode_negotiate(buf, &n);                                      \
        enum sansock_wire_err got_ = sansock_wire_decode(buf, len_, &before, &m);                  \
        if (got_ != (want))                                                                        \
            fail_msg("%s: %s", #stmt, sansock_wire_strerror(got_));                                \
    } while (0)
    BAD((void)0, SANSOCK_WERR_OK);
    BAD(n.recv_slots = 0, SANSOCK_WERR_FIELD);
    BAD(n.recv_slots = SANSOCK_MAX_SLOTS + 1, SANSOCK_WERR_FIELD);
    BAD(n.recv_slots = SANSOCK_MAX_SLOTS, SANSOCK_WERR_OK);
    BAD(n.slot_size = SANSOCK_MIN_SLOT - 1, SANSOCK_WERR_FIELD);
    BAD(n.slot_size = SANSOCK_MIN_SLOT, SANSOCK_WERR_OK);
    BAD(n.slot_size = SANSOCK_MAX_SLOT + 1, SANSOCK_WERR_FIELD);
    BAD(n.rdma_threshold = SANSOCK_MAX_RDMA + 1, SANSOCK_WERR_FIELD);
    BAD(n.features = 4, SANSOCK_WERR_FIELD);
    BAD(n.max_rdma = 4096, SANSOCK_WERR_FIELD); /* an RDMA size without RDMA */
    BAD((n.features = SANSOCK_FEAT_RDMA_READ, n.max_rdma = SANSOCK_MAX_RDMA + 1),
        SANSOCK_WERR_FIELD);
    BAD((n.features = SANSOCK_FEAT_RDMA_READ, n.max_rdma = 1 << 20), SANSOCK_WERR_OK);
    BAD(n.src.family = 5, SANSOCK_WERR_FIELD);
    BAD(n.dst.family = 0, SANSOCK_WERR_FIELD);
    BAD(n.src.addr[4] = 1, SANSOCK_WERR_FIELD); /* IPv4 with bytes past its 4 */
    BAD(n.src.scope_id = 1, SANSOCK_WERR_FIELD);
    BAD(n.src.flowinfo = 1, SANSOCK_WERR_FIELD);
    BAD(n.dst.scope_id = 9, SANSOCK_WERR_OK); /* IPv6 may have one */
    /* The encoder always writes 0 in the reserved word: a peer that does not is rejected. */
    size_t nlen = sansock_wire_encode_negotiate(buf, &base);
    buf[SANSOCK_HDR_SIZE + offsetof(struct sansock_wire_negotiate, reserved)] = 1;
    expect(buf, nlen, &before, SANSOCK_WERR_RESERVED);
    nlen = sansock_wire_encode_negotiate(buf, &base);
    buf[2] = SANSOCK_F_CREDIT_LOW; /* no flag on a negotiation */
    expect(buf, nlen, &before, SANSOCK_WERR_FLAGS);

    /* RDMA fields. */
    uint8_t rbuf[256];
    struct sansock_wire_rdma r = {.total_len = 1 << 20, .cookie = 1, .desc_len = 40};
    struct sansock_wire_rdma rb = r;
    size_t len;
    rb.desc_len = 0;
    len = sansock_wire_encode_rdma(rbuf, SANSOCK_MSG_RDMA_OFFER, 0, 0, &rb, 0);
    expect(rbuf, len, &rdma, SANSOCK_WERR_FIELD);
    rb.desc_len = SANSOCK_DESC_MAX + 1;
    len = sansock_wire_encode_rdma(rbuf, SANSOCK_MSG_RDMA_OFFER, 0, 0, &rb, 0);
    expect(rbuf, len, &rdma, SANSOCK_WERR_FIELD);
    rb = r;
    rb.total_len = 0;
    len = sansock_wire_encode_rdma(rbuf, SANSOCK_MSG_RDMA_OFFER, 0, 0, &rb, 0);
    expect(rbuf, len, &rdma, SANSOCK_WERR_FIELD);
    /* Sinks: a descriptor of 1..SANSOCK_DESC_MAX bytes, a length of 1..SANSOCK_MAX_RDMA, the
     * reserved word 0; any position. */
    struct sansock_wire_sink k = {.pos = ~0ull, .len = SANSOCK_MAX_RDMA, .desc_len = 40}, kb = k;
    len = sansock_wire_encode_sink(rbuf, 0, 0, &kb);
    expect(rbuf, len, &rdma, SANSOCK_WERR_OK);
    kb.desc_len = 0;
    len = sansock_wire_encode_sink(rbuf, 0, 0, &kb);
    expect(rbuf, len, &rdma, SANSOCK_WERR_FIELD);
    kb.desc_len = SANSOCK_DESC_MAX + 1;
    len = sansock_wire_encode_sink(rbuf, 0, 0, &kb);
    expect(rbuf, len, &rdma, SANSOCK_WERR_FIELD);
    kb = k;
    kb.len = 0;
    len = sansock_wire_encode_sink(rbuf, 0, 0, &kb);
    expect(rbuf, len, &rdma, SANSOCK_WERR_FIELD);
    kb.len = SANSOCK_MAX_RDMA + 1;
    len = sansock_wire_encode_sink(rbuf, 0, 0, &kb);
    expect(rbuf, len, &rdma, SANSOCK_WERR_FIELD);
    len = sansock_wire_encode_sink(rbuf, 0, 0, &k);
    rbuf[SANSOCK_HDR_SIZE + offsetof(struct sansock_wire_sink, reserved)] = 1;
    expect(rbuf, len, &rdma, SANSOCK_WERR_RESERVED);
    /* An offer beyond what the receiver said it reads (its max_rdma); exactly that is fine. */
    rb = r;
    rb.total_len = rdma.max_rdma + 1u;
    len = sansock_wire_encode_rdma(rbuf, SANSOCK_MSG_RDMA_OFFER, 0, 0, &rb, 0);
    expect(rbuf, len, &rdma, SANSOCK_WERR_FIELD);
    rb.total_len = rdma.max_rdma;
    len = sansock_wire_encode_rdma(rbuf, SANSOCK_MSG_RDMA_OFFER, 0, 0, &rb, 0);
    expect(rbuf, len, &rdma, SANSOCK_WERR_OK);
    struct sansock_wire_limits small = rdma;
    small.max_rdma = 0; /* a receiver that reads no offer */
    expect(rbuf, len, &small, SANSOCK_WERR_FIELD);
    for (uint8_t type = SANSOCK_MSG_DONE; type <= SANSOCK_MSG_SINK_DONE; type++) {
        struct sansock_wire_done d = {.cookie = 1, .status = 1, .bytes = 0};
        len = sansock_wire_encode_done(rbuf, type, 0, 0, &d);
        expect(rbuf, len, &rdma, SANSOCK_WERR_FIELD);
        d.status = -4096;
        len = sansock_wire_encode_done(rbuf, type, 0, 0, &d);
        expect(rbuf, len, &rdma, SANSOCK_WERR_FIELD);
        d.status = 0;
        d.bytes = (uint64_t)SANSOCK_MAX_RDMA + 1;
        len = sansock_wire_encode_done(rbuf, type, 0, 0, &d);
        expect(rbuf, len, &rdma, SANSOCK_WERR_FIELD);
        d.bytes = SANSOCK_MAX_RDMA;
        len = sansock_wire_encode_done(rbuf, type, 0, 0, &d);
        expect(rbuf, len, &rdma, SANSOCK_WERR_OK);
    }
}

static void test_feature_rejections(void **state)
{
    (void)state;
    uint8_t buf[256];
    struct sansock_wire_rdma r = {.total_len = 1 << 20, .cookie = 1, .desc_len = 40};
    struct sansock_wire_limits read_only = after, write_only = after;
    read_only.features = SANSOCK_FEAT_RDMA_READ;
    write_only.features = SANSOCK_FEAT_RDMA_WRITE;
    read_only.max_rdma = write_only.max_rdma = 1 << 20;
    size_t n = sansock_wire_encode_rdma(buf, SANSOCK_MSG_RDMA_OFFER, 0, 0, &r, 0);
    expect(buf, n, &after, SANSOCK_WERR_FEATURE);
    expect(buf, n, &write_only, SANSOCK_WERR_FEATURE);
    expect(buf, n, &read_only, SANSOCK_WERR_OK);
    /* Write mode's messages need write mode, read mode's read mode: a peer that did not
     * announce write mode never gets (nor gives) a sink. */
    struct sansock_wire_sink k = {.len = 1 << 20, .desc_len = 40};
    n = sansock_wire_encode_sink(buf, 0, 0, &k);
    expect(buf, n, &after, SANSOCK_WERR_FEATURE);
    expect(buf, n, &read_only, SANSOCK_WERR_FEATURE);
    expect(buf, n, &write_only, SANSOCK_WERR_OK);
    struct sansock_wire_done d = {.cookie = 1};
    n = sansock_wire_encode_done(buf, SANSOCK_MSG_DONE, 0, 0, &d);
    expect(buf, n, &after, SANSOCK_WERR_FEATURE);
    expect(buf, n, &write_only, SANSOCK_WERR_FEATURE);
    expect(buf, n, &read_only, SANSOCK_WERR_OK);
    n = sansock_wire_encode_done(buf, SANSOCK_MSG_SINK_DONE, 0, 0, &d);
    expect(buf, n, &after, SANSOCK_WERR_FEATURE);
    expect(buf, n, &read_only, SANSOCK_WERR_FEATURE);
    expect(buf, n, &write_only, SANSOCK_WERR_OK);
}

static void test_addresses(void **state)
{
    (void)state;
    struct sansock_wire_addr w;
    struct sockaddr_in in = {.sin_family = AF_INET};
    assert_int_equal(sansock_wire_addr_from(&w, (struct sockaddr *)&in, sizeof(in) - 1), -EINVAL);
    assert_int_equal(sansock_wire_addr_from(&w, NULL, 0), -EINVAL);
    struct sockaddr_in6 in6 = {.sin6_family = AF_INET6};
    assert_int_equal(sansock_wire_addr_from(&w, (struct sockaddr *)&in6, sizeof(in6) - 1), -EINVAL);
    struct sockaddr un = {.sa_family = AF_UNIX};
    assert_int_equal(sansock_wire_addr_from(&w, &un, sizeof(un)), -EAFNOSUPPORT);
    assert_string_equal(sansock_wire_strerror(SANSOCK_WERR_CREDITS),
                        "credits beyond what was negotiated");
    assert_string_equal(sansock_wire_strerror((enum sansock_wire_err)99), "unknown error");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_negotiate_round_trip),
        cmocka_unit_test(test_data_round_trip),
        cmocka_unit_test(test_control_round_trip),
        cmocka_unit_test(test_header_rejections),
        cmocka_unit_test(test_order_and_credit_rejections),
        cmocka_unit_test(test_length_rejections),
        cmocka_unit_test(test_field_rejections),
        cmocka_unit_test(test_feature_rejections),
        cmocka_unit_test(test_addresses),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
