/* Fuzz target: the control protocol's decoder (san_proto_decode), both directions. Half of the
 * inputs get a valid magic, version and length patched in, so that the fuzzer spends its time past
 * the framing checks, in the opcode, size and field validation. Whatever the decoder accepts must
 * be self-consistent: a known opcode, the exact size for it, and the fields it promises to check.
 * Whatever it rejects carries the code proto.h promises: -EINVAL only for a well-formed request
 * (its arguments), -EBADMSG for a well-sized request only when a reserved word is set.
 */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "proto/proto.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_accepted(const struct san_msg *m, size_t len, bool reply)
{
    if (len < sizeof(m->hdr) || m->hdr.magic != SAN_PROTO_MAGIC || m->hdr.length != len ||
        m->hdr.version != SAN_PROTO_VERSION || !!(m->hdr.opcode & SAN_OP_REPLY) != reply)
        abort();
    if (reply && m->hdr.status) {
        if (m->hdr.status > 0 || len != sizeof(m->hdr))
            abort();
        return;
    }
    long body = san_proto_body_size(m->hdr.opcode);
    if (body < 0 || len != sizeof(m->hdr) + (size_t)body || m->hdr.status)
        abort();
    if (!reply && m->hdr.opcode == SAN_OP_REGISTER) {
        const struct san_register_req *r = &m->u.register_req;
        if (!r->len || r->va + r->len < r->va || !r->access ||
            (r->access & ~(SAN_WIRE_MEM_READ | SAN_WIRE_MEM_WRITE)) || (r->flags & ~SAN_REG_RDMA))
            abort();
    }
    if (!reply && m->hdr.opcode == SAN_OP_ALLOC && (m->u.alloc_req.flags & ~SAN_ALLOC_FLAGS_ALL))
        abort();
    if (reply && m->hdr.opcode == (SAN_OP_CLIENTS | SAN_OP_REPLY) &&
        m->u.clients_rep.nr > SAN_LIST_MAX)
        abort();
    if (reply && m->hdr.opcode == (SAN_OP_NETWORKS | SAN_OP_REPLY)) {
        const struct san_networks_rep *r = &m->u.networks_rep;
        if (!r->gen || r->nr > SAN_NETWORKS_MAX || r->unchanged > 1 || (r->unchanged && r->nr))
            abort();
        for (uint32_t i = 0; i < r->nr; i++)
            if (r->n[i].prefix > 128 ||
                (r->n[i].flags != SAN_WIRE_NET_LOCAL && r->n[i].flags != SAN_WIRE_NET_LINKED))
                abort();
    }
    if (reply && m->hdr.opcode == (SAN_OP_ENDPOINTS | SAN_OP_REPLY)) {
        const struct san_endpoints_rep *r = &m->u.endpoints_rep;
        if (r->nr > SAN_LIST_MAX)
            abort();
        for (uint32_t i = 0; i < r->nr; i++)
            if (r->e[i].state < SAN_WIRE_EP_CONNECTING || r->e[i].state > SAN_WIRE_EP_CLOSING ||
                r->e[i].error > 0 || r->e[i].sq_fill > SAN_WIRE_EP_FILL_MAX ||
                r->e[i].cq_fill > SAN_WIRE_EP_FILL_MAX ||
                (r->e[i].bad_rings & ~SAN_WIRE_EP_BAD_ALL))
                abort();
    }
}

/* A rejected request that passed framing, version, direction, opcode, status and size. */
static void check_rejected(const struct san_msg *m, size_t len, bool reply, int err)
{
    bool framed = len >= sizeof(m->hdr) && m->hdr.magic == SAN_PROTO_MAGIC &&
                  m->hdr.length == len && m->hdr.version == SAN_PROTO_VERSION;
    long body = framed ? san_proto_body_size(m->hdr.opcode) : -1;
    bool well_formed = framed && !reply && !(m->hdr.opcode & SAN_OP_REPLY) && body >= 0 &&
                       !m->hdr.status && len == sizeof(m->hdr) + (size_t)body;
    if (err != -EPROTO && err != -EOPNOTSUPP && err != -EBADMSG && err != -EINVAL)
        abort();
    if (err == -EINVAL && (!well_formed || san_proto_request_reserved(m)))
        abort();
    if (err == -EBADMSG && well_formed && !san_proto_request_reserved(m))
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static struct san_msg m;
    static uint8_t big[2 * sizeof(struct san_msg)];
    int err;

    if (size < 1)
        return 0;
    bool patch = data[0] & 1, reply = data[0] & 2;
    data++;
    size--;
    /* Oversized datagrams are judged on their length alone (as recvmsg with MSG_TRUNC reports). */
    if (size > sizeof(m)) {
        memcpy(big, data, size < sizeof(big) ? size : sizeof(big));
        if (san_proto_decode(big, size, reply, &err) != SAN_DECODE_GARBAGE)
            abort();
        return 0;
    }
    memset(&m, 0, sizeof(m));
    memcpy(&m, data, size);
    if (patch && size >= sizeof(m.hdr)) {
        m.hdr.magic = SAN_PROTO_MAGIC;
        m.hdr.version = SAN_PROTO_VERSION;
        m.hdr.length = (uint32_t)size;
        /* Every opcode (ENDPOINTS' the last), 0 and one past the last (unknown). */
        m.hdr.opcode = (uint16_t)((m.hdr.opcode % (SAN_OP_MAX + 2)) | (reply ? SAN_OP_REPLY : 0));
        if (data[0] & 4)
            m.hdr.status = 0;
    }
    switch (san_proto_decode(&m, size, reply, &err)) {
    case SAN_DECODE_OK:
        if (err)
            abort();
        check_accepted(&m, size, reply);
        break;
    case SAN_DECODE_REJECT:
        check_rejected(&m, size, reply, err);
        break;
    case SAN_DECODE_GARBAGE:
        break;
    default:
        abort();
    }
    return 0;
}
