/* The link protocol's decoder and message construction (wire.h). Sits on the wire structs only;
 * a pure function of its input, no locking. Checks framing first, then version and type, then
 * the exact body size, then every field with a fixed domain. */
#include "link/wire.h"

#include <errno.h>
#include <string.h>

long san_link_body_size(unsigned type)
{
    switch (type) {
    case SAN_LINK_HELLO:
        return sizeof(struct san_link_hello);
    case SAN_LINK_PROOF:
        return sizeof(struct san_link_proof);
    case SAN_LINK_HEARTBEAT:
        return sizeof(struct san_link_heartbeat);
    case SAN_LINK_BYE:
        return sizeof(struct san_link_bye);
    default:
        return -1;
    }
}

static int check_body(const struct san_link_msg *m)
{
    static const uint8_t zero[SAN_LINK_MAC];
    switch (m->hdr.type) {
    case SAN_LINK_HELLO:
        if (memcmp(m->hdr.mac, zero, SAN_LINK_MAC) || m->u.hello.reserved || m->u.hello.reserved2 ||
            m->u.hello.max_version < SAN_LINK_VERSION)
            return -EBADMSG;
        return 0;
    case SAN_LINK_PROOF: {
        const struct san_link_proof *p = &m->u.proof;
        if (p->reserved || !p->your_host_id || p->nr_nets > SAN_LINK_NETS)
            return -EBADMSG;
        for (uint32_t i = 0; i < SAN_LINK_NETS; i++) {
            const struct san_link_net *n = &p->nets[i];
            if (n->reserved || n->prefix > 128)
                return -EBADMSG;
            /* Unused entries are zero: nothing hides in them. */
            if (i >= p->nr_nets && (n->prefix || memcmp(n->ip, zero, sizeof(n->ip))))
                return -EBADMSG;
        }
        return 0;
    }
    case SAN_LINK_HEARTBEAT:
        return m->u.heartbeat.reserved ? -EBADMSG : 0;
    case SAN_LINK_BYE:
        return m->u.bye.reserved ? -EBADMSG : 0;
    default:
        return -EOPNOTSUPP;
    }
}

int san_link_decode(const void *buf, size_t len)
{
    const struct san_link_msg *m = buf;

    if (len < sizeof(struct san_link_hdr) || m->hdr.magic != SAN_LINK_MAGIC)
        return -EBADMSG;
    /* Another version may have other sizes: the header's first words are all it must share. */
    if (m->hdr.version != SAN_LINK_VERSION)
        return -EPROTO;
    if (len > sizeof(struct san_link_msg) || m->hdr.length != len)
        return -EBADMSG;
    long body = san_link_body_size(m->hdr.type);
    if (body < 0)
        return -EOPNOTSUPP;
    if (len != sizeof(struct san_link_hdr) + (size_t)body || m->hdr.reserved || !m->hdr.host_id)
        return -EBADMSG;
    return check_body(m);
}

void san_link_init(struct san_link_msg *m, unsigned type, uint64_t host_id, uint64_t seq)
{
    long body = san_link_body_size(type);
    memset(m, 0, sizeof(*m));
    m->hdr = (struct san_link_hdr){
        .magic = SAN_LINK_MAGIC,
        .version = SAN_LINK_VERSION,
        .type = (uint16_t)type,
        .length = (uint32_t)(sizeof(struct san_link_hdr) + (body > 0 ? (size_t)body : 0)),
        .host_id = host_id,
        .seq = seq,
    };
}
