/* The link protocol's decoder and message construction (wire.h). Sits on the wire structs only;
 * a pure function of its input, no locking. Checks framing first, then version and type, then
 * the exact body size, then every field with a fixed domain. */
#include "link/wire.h"

#include <errno.h>
#include <stdbool.h>
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
    case SAN_LINK_EP:
        return sizeof(struct san_xmsg);
    default:
        return -1;
    }
}

/* An endpoint message's fixed part: what every receiver may rely on before it looks further. */
static int check_ep(const struct san_xmsg *x)
{
    static const uint8_t zero[16];
    bool data = x->op == SAN_XMSG_SEND || x->op == SAN_XMSG_WRITE || x->op == SAN_XMSG_RDATA;
    if (x->op < 1 || x->op > SAN_XMSG_OP_MAX || x->reserved || x->reserved2 || x->status > 0 ||
        x->status < -4095 || (x->len && !data))
        return -EBADMSG;
    if (!x->from && !(x->op == SAN_XMSG_ACCEPT && x->status))
        return -EBADMSG; /* only a refusal names no connection of its sender */
    if (x->op == SAN_XMSG_CONNECT)
        return x->conn || !x->port ? -EBADMSG : 0;
    if (x->port || memcmp(x->ip, zero, sizeof(x->ip)))
        return -EBADMSG;
    if (!x->conn && x->op != SAN_XMSG_CLOSE && x->op != SAN_XMSG_ACCEPT)
        return -EBADMSG;
    if (data && (!x->seq || x->len > SAN_XMSG_CHUNK || x->offset > x->total ||
                 x->len > x->total - x->offset || (x->status && x->len)))
        return -EBADMSG;
    return 0;
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
    case SAN_LINK_EP:
        return check_ep(&m->u.ep.x);
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
    size_t want = sizeof(struct san_link_hdr) + (size_t)body;
    if (m->hdr.type == SAN_LINK_EP && len >= want)
        want += m->u.ep.x.len; /* its payload: at most a chunk, checked below */
    if (len != want || m->hdr.reserved || !m->hdr.host_id)
        return -EBADMSG;
    return check_body(m);
}

void san_link_init(struct san_link_msg *m, unsigned type, uint64_t host_id, uint64_t seq)
{
    long body = san_link_body_size(type);
    size_t len = sizeof(struct san_link_hdr) + (body > 0 ? (size_t)body : 0);
    memset(m, 0, len); /* not a whole san_link_msg: 64 KiB for the few bytes a message has */
    m->hdr = (struct san_link_hdr){
        .magic = SAN_LINK_MAGIC,
        .version = SAN_LINK_VERSION,
        .type = (uint16_t)type,
        .length = (uint32_t)len,
        .host_id = host_id,
        .seq = seq,
    };
}
