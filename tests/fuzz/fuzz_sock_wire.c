/* Fuzz target: the sockets switch's session-protocol decoder (sock/wire.c). The first 4 bytes of
 * an input choose the receiving side's limits (negotiated or not, slot size, credits it may still
 * get back, features); half of the inputs get a valid version, a known type and a length equal to
 * the bytes received patched in, so the fuzzer spends its time in the per-type checks. Whatever the
 * decoder accepts must keep every promise wire.h makes: a known type in the right order, the exact
 * length, credits within the limit, data within the slot, each RDMA message only in the mode
 * negotiated (offers and DONE: read mode; sinks and SINK_DONE: write mode), offers within the
 * receiver's max_rdma, sinks of a sane length and descriptor, sane
 * negotiation fields; and an accepted message re-encodes to the same bytes. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "sock/wire.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_accepted(const uint8_t *buf, size_t n, const struct sansock_wire_limits *lim,
                           const struct sansock_msg *m)
{
    if (n < SANSOCK_HDR_SIZE || m->len != n - SANSOCK_HDR_SIZE || !m->type ||
        m->type > SANSOCK_MSG_TYPE_MAX || (m->flags & ~SANSOCK_F_ALL) ||
        m->credits > lim->max_credits || (m->type == SANSOCK_MSG_NEGOTIATE) == lim->negotiated)
        abort();
    uint8_t again[SANSOCK_HDR_SIZE + SANSOCK_MAX_SLOT];
    size_t len = 0;
    switch (m->type) {
    case SANSOCK_MSG_NEGOTIATE: {
        const struct sansock_wire_negotiate *g = &m->u.negotiate;
        if (m->credits || !g->recv_slots || g->recv_slots > SANSOCK_MAX_SLOTS ||
            g->slot_size < SANSOCK_MIN_SLOT || g->slot_size > SANSOCK_MAX_SLOT ||
            (g->features & ~SANSOCK_FEAT_ALL) || g->reserved)
            abort();
        len = sansock_wire_encode_negotiate(again, g);
        break;
    }
    case SANSOCK_MSG_DATA:
        if (!m->payload_len || m->payload_len > lim->max_payload || m->payload != buf + 16)
            abort();
        len = sansock_wire_encode_data(again, m->flags, m->len, m->credits);
        memcpy(again + SANSOCK_HDR_SIZE, m->payload, m->payload_len);
        break;
    case SANSOCK_MSG_CREDIT:
    case SANSOCK_MSG_SHUTDOWN:
        if (m->len || (m->type == SANSOCK_MSG_CREDIT && !m->credits))
            abort();
        len = sansock_wire_encode_hdr(again, m->type, m->flags, 0, m->credits);
        break;
    case SANSOCK_MSG_RDMA_SINK: {
        const struct sansock_wire_sink *k = &m->u.sink;
        if (!(lim->features & SANSOCK_FEAT_RDMA_WRITE) || m->len != sizeof(*k) || m->payload_len ||
            !k->desc_len || k->desc_len > SANSOCK_DESC_MAX || !k->len ||
            k->len > SANSOCK_MAX_RDMA || k->reserved)
            abort();
        len = sansock_wire_encode_sink(again, m->flags, m->credits, k);
        break;
    }
    case SANSOCK_MSG_RDMA_OFFER:
        if (!(lim->features & SANSOCK_FEAT_RDMA_READ) || !m->u.rdma.desc_len ||
            m->u.rdma.desc_len > SANSOCK_DESC_MAX || m->payload_len >= m->u.rdma.total_len ||
            m->u.rdma.total_len > SANSOCK_MAX_RDMA || m->u.rdma.total_len > lim->max_rdma ||
            m->len > lim->max_payload)
            abort();
        len = sansock_wire_encode_rdma(again, m->type, m->flags, m->credits, &m->u.rdma,
                                       m->payload_len);
        memcpy(again + SANSOCK_HDR_SIZE + sizeof(struct sansock_wire_rdma), m->payload,
               m->payload_len);
        break;
    default: /* DONE answers an offer (read mode), SINK_DONE a sink (write mode) */
        if (!(lim->features &
              (m->type == SANSOCK_MSG_DONE ? SANSOCK_FEAT_RDMA_READ : SANSOCK_FEAT_RDMA_WRITE)) ||
            m->u.done.status > 0 || m->u.done.bytes > SANSOCK_MAX_RDMA)
            abort();
        len = sansock_wire_encode_done(again, m->type, m->flags, m->credits, &m->u.done);
        break;
    }
    if (len != n || memcmp(again, buf, n))
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static uint8_t buf[SANSOCK_HDR_SIZE + SANSOCK_MAX_SLOT];
    if (size < 4)
        return 0;
    struct sansock_wire_limits lim = {
        .negotiated = data[0] & 1,
        .max_payload = 64u + (uint32_t)(data[1] % 8) * 512u,
        .max_credits = data[2] % (SANSOCK_MAX_SLOTS + 1),
        .features = data[3] & SANSOCK_FEAT_ALL,
        .max_rdma = (uint32_t)(data[3] >> 2) << 12, /* 0 to 252 KiB */
    };
    bool patch = data[0] & 2;
    uint8_t type = (uint8_t)(data[0] >> 2);
    data += 4;
    size -= 4;
    if (size > sizeof(buf))
        size = sizeof(buf);
    memcpy(buf, data, size);
    if (patch && size >= SANSOCK_HDR_SIZE) {
        buf[0] = SANSOCK_WIRE_VERSION;
        buf[1] = (uint8_t)(1 + type % SANSOCK_MSG_TYPE_MAX);
        uint32_t len = (uint32_t)(size - SANSOCK_HDR_SIZE);
        for (int i = 0; i < 4; i++)
            buf[4 + i] = (uint8_t)(len >> (8 * i));
        buf[12] = buf[13] = buf[14] = buf[15] = 0;
    }
    struct sansock_msg m;
    if (sansock_wire_decode(buf, size, &lim, &m) == SANSOCK_WERR_OK)
        check_accepted(buf, size, &lim, &m);
    return 0;
}
