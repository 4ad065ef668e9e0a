/* The session protocol's codec (wire.h): little-endian byte-by-byte encoding of the fixed layouts,
 * and the one validating decoder every received message goes through. Sits on nothing but libc;
 * no state, no locking. */
#include "sock/wire.h"

#include <errno.h>
#include <netinet/in.h>
#include <string.h>

static void put16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
}

static void put32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static void put64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static uint16_t get16(const uint8_t *p)
{
    return (uint16_t)(p[0] | p[1] << 8);
}

static uint32_t get32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint64_t get64(const uint8_t *p)
{
    return (uint64_t)get32(p) | (uint64_t)get32(p + 4) << 32;
}

#define OFF(type, field) offsetof(struct type, field)

size_t sansock_wire_encode_hdr(void *buf, uint8_t type, uint16_t flags, uint32_t len,
                               uint32_t credits)
{
    uint8_t *p = buf;
    p[OFF(sansock_wire_hdr, version)] = SANSOCK_WIRE_VERSION;
    p[OFF(sansock_wire_hdr, type)] = type;
    put16(p + OFF(sansock_wire_hdr, flags), flags);
    put32(p + OFF(sansock_wire_hdr, len), len);
    put32(p + OFF(sansock_wire_hdr, credits), credits);
    put32(p + OFF(sansock_wire_hdr, reserved), 0);
    return SANSOCK_HDR_SIZE + len;
}

static void put_addr(uint8_t *p, const struct sansock_wire_addr *a)
{
    put16(p + OFF(sansock_wire_addr, family), a->family);
    put16(p + OFF(sansock_wire_addr, port), a->port);
    put32(p + OFF(sansock_wire_addr, flowinfo), a->flowinfo);
    memcpy(p + OFF(sansock_wire_addr, addr), a->addr, sizeof(a->addr));
    put32(p + OFF(sansock_wire_addr, scope_id), a->scope_id);
}

static void get_addr(const uint8_t *p, struct sansock_wire_addr *a)
{
    a->family = get16(p + OFF(sansock_wire_addr, family));
    a->port = get16(p + OFF(sansock_wire_addr, port));
    a->flowinfo = get32(p + OFF(sansock_wire_addr, flowinfo));
    memcpy(a->addr, p + OFF(sansock_wire_addr, addr), sizeof(a->addr));
    a->scope_id = get32(p + OFF(sansock_wire_addr, scope_id));
}

size_t sansock_wire_encode_negotiate(void *buf, const struct sansock_wire_negotiate *n)
{
    uint8_t *p = (uint8_t *)buf + SANSOCK_HDR_SIZE;
    sansock_wire_encode_hdr(buf, SANSOCK_MSG_NEGOTIATE, 0, sizeof(*n), 0);
    put32(p + OFF(sansock_wire_negotiate, recv_slots), n->recv_slots);
    put32(p + OFF(sansock_wire_negotiate, slot_size), n->slot_size);
    put32(p + OFF(sansock_wire_negotiate, rdma_threshold), n->rdma_threshold);
    put32(p + OFF(sansock_wire_negotiate, features), n->features);
    put32(p + OFF(sansock_wire_negotiate, max_rdma), n->max_rdma);
    put32(p + OFF(sansock_wire_negotiate, reserved), 0);
    put_addr(p + OFF(sansock_wire_negotiate, src), &n->src);
    put_addr(p + OFF(sansock_wire_negotiate, dst), &n->dst);
    return SANSOCK_NEGOTIATE_SIZE;
}

size_t sansock_wire_encode_data(void *buf, uint16_t flags, uint32_t len, uint32_t credits)
{
    return sansock_wire_encode_hdr(buf, SANSOCK_MSG_DATA, flags, len, credits);
}

size_t sansock_wire_encode_rdma(void *buf, uint8_t type, uint16_t flags, uint32_t credits,
                                const struct sansock_wire_rdma *r, uint32_t inline_len)
{
    uint8_t *p = (uint8_t *)buf + SANSOCK_HDR_SIZE;
    size_t n =
        sansock_wire_encode_hdr(buf, type, flags, (uint32_t)sizeof(*r) + inline_len, credits);
    put64(p + OFF(sansock_wire_rdma, total_len), r->total_len);
    put32(p + OFF(sansock_wire_rdma, cookie), r->cookie);
    put32(p + OFF(sansock_wire_rdma, desc_len), r->desc_len);
    memcpy(p + OFF(sansock_wire_rdma, desc), r->desc, sizeof(r->desc));
    return n;
}

size_t sansock_wire_encode_sink(void *buf, uint16_t flags, uint32_t credits,
                                const struct sansock_wire_sink *k)
{
    uint8_t *p = (uint8_t *)buf + SANSOCK_HDR_SIZE;
    size_t n = sansock_wire_encode_hdr(buf, SANSOCK_MSG_RDMA_SINK, flags, sizeof(*k), credits);
    put64(p + OFF(sansock_wire_sink, pos), k->pos);
    put32(p + OFF(sansock_wire_sink, len), k->len);
    put32(p + OFF(sansock_wire_sink, cookie), k->cookie);
    put32(p + OFF(sansock_wire_sink, desc_len), k->desc_len);
    put32(p + OFF(sansock_wire_sink, reserved), 0);
    memcpy(p + OFF(sansock_wire_sink, desc), k->desc, sizeof(k->desc));
    return n;
}

size_t sansock_wire_encode_done(void *buf, uint8_t type, uint16_t flags, uint32_t credits,
                                const struct sansock_wire_done *d)
{
    uint8_t *p = (uint8_t *)buf + SANSOCK_HDR_SIZE;
    size_t n = sansock_wire_encode_hdr(buf, type, flags, sizeof(*d), credits);
    put32(p + OFF(sansock_wire_done, cookie), d->cookie);
    put32(p + OFF(sansock_wire_done, status), (uint32_t)d->status);
    put64(p + OFF(sansock_wire_done, bytes), d->bytes);
    return n;
}

static bool addr_valid(const struct sansock_wire_addr *a)
{
    static const uint8_t zero[12];
    if (a->family == SANSOCK_WIRE_AF_INET)
        return !a->flowinfo && !a->scope_id && !memcmp(a->addr + 4, zero, sizeof(zero));
    return a->family == SANSOCK_WIRE_AF_INET6;
}

static enum sansock_wire_err decode_negotiate(const uint8_t *p, struct sansock_msg *m)
{
    struct sansock_wire_negotiate *n = &m->u.negotiate;
    n->recv_slots = get32(p + OFF(sansock_wire_negotiate, recv_slots));
    n->slot_size = get32(p + OFF(sansock_wire_negotiate, slot_size));
    n->rdma_threshold = get32(p + OFF(sansock_wire_negotiate, rdma_threshold));
    n->features = get32(p + OFF(sansock_wire_negotiate, features));
    n->max_rdma = get32(p + OFF(sansock_wire_negotiate, max_rdma));
    n->reserved = get32(p + OFF(sansock_wire_negotiate, reserved));
    get_addr(p + OFF(sansock_wire_negotiate, src), &n->src);
    get_addr(p + OFF(sansock_wire_negotiate, dst), &n->dst);
    if (n->reserved)
        return SANSOCK_WERR_RESERVED;
    if (!n->recv_slots || n->recv_slots > SANSOCK_MAX_SLOTS || n->slot_size < SANSOCK_MIN_SLOT ||
        n->slot_size > SANSOCK_MAX_SLOT || n->rdma_threshold > SANSOCK_MAX_RDMA ||
        (n->features & ~SANSOCK_FEAT_ALL) || n->max_rdma > SANSOCK_MAX_RDMA ||
        (!n->features && n->max_rdma) || !addr_valid(&n->src) || !addr_valid(&n->dst))
        return SANSOCK_WERR_FIELD;
    return SANSOCK_WERR_OK;
}

static enum sansock_wire_err decode_rdma(const uint8_t *p, uint32_t len,
                                         const struct sansock_wire_limits *lim,
                                         struct sansock_msg *m)
{
    struct sansock_wire_rdma *r = &m->u.rdma;
    if (len < sizeof(*r))
        return SANSOCK_WERR_SHORT;
    r->total_len = get64(p + OFF(sansock_wire_rdma, total_len));
    r->cookie = get32(p + OFF(sansock_wire_rdma, cookie));
    r->desc_len = get32(p + OFF(sansock_wire_rdma, desc_len));
    memcpy(r->desc, p + OFF(sansock_wire_rdma, desc), sizeof(r->desc));
    m->payload = p + sizeof(*r);
    m->payload_len = len - (uint32_t)sizeof(*r);
    if (!r->desc_len || r->desc_len > SANSOCK_DESC_MAX || !r->total_len ||
        r->total_len > SANSOCK_MAX_RDMA)
        return SANSOCK_WERR_FIELD;
    /* The receiver reads an offer into a buffer of its own of max_rdma bytes: no more. */
    if (m->type == SANSOCK_MSG_RDMA_OFFER && r->total_len > lim->max_rdma)
        return SANSOCK_WERR_FIELD;
    /* An offer's inline part is the start of the transfer: never all of it, never beyond a slot. */
    if (m->payload_len >= r->total_len || len > lim->max_payload)
        return SANSOCK_WERR_LENGTH;
    return SANSOCK_WERR_OK;
}

static enum sansock_wire_err decode_sink(const uint8_t *p, uint32_t len, struct sansock_msg *m)
{
    struct sansock_wire_sink *k = &m->u.sink;
    if (len != sizeof(*k))
        return len < sizeof(*k) ? SANSOCK_WERR_SHORT : SANSOCK_WERR_LENGTH;
    k->pos = get64(p + OFF(sansock_wire_sink, pos));
    k->len = get32(p + OFF(sansock_wire_sink, len));
    k->cookie = get32(p + OFF(sansock_wire_sink, cookie));
    k->desc_len = get32(p + OFF(sansock_wire_sink, desc_len));
    k->reserved = get32(p + OFF(sansock_wire_sink, reserved));
    memcpy(k->desc, p + OFF(sansock_wire_sink, desc), sizeof(k->desc));
    if (k->reserved)
        return SANSOCK_WERR_RESERVED;
    if (!k->desc_len || k->desc_len > SANSOCK_DESC_MAX || !k->len || k->len > SANSOCK_MAX_RDMA)
        return SANSOCK_WERR_FIELD;
    return SANSOCK_WERR_OK;
}

static enum sansock_wire_err decode_done(const uint8_t *body, uint32_t len, struct sansock_msg *m)
{
    if (len != sizeof(struct sansock_wire_done))
        return len < sizeof(struct sansock_wire_done) ? SANSOCK_WERR_SHORT : SANSOCK_WERR_LENGTH;
    m->u.done.cookie = get32(body + OFF(sansock_wire_done, cookie));
    m->u.done.status = (int32_t)get32(body + OFF(sansock_wire_done, status));
    m->u.done.bytes = get64(body + OFF(sansock_wire_done, bytes));
    if (m->u.done.status > 0 || m->u.done.status < -4095 || m->u.done.bytes > SANSOCK_MAX_RDMA)
        return SANSOCK_WERR_FIELD;
    return SANSOCK_WERR_OK;
}

enum sansock_wire_err sansock_wire_decode(const void *buf, size_t n,
                                          const struct sansock_wire_limits *lim,
                                          struct sansock_msg *out)
{
    const uint8_t *p = buf;
    memset(out, 0, sizeof(*out));
    if (n < SANSOCK_HDR_SIZE)
        return SANSOCK_WERR_SHORT;
    if (p[OFF(sansock_wire_hdr, version)] != SANSOCK_WIRE_VERSION)
        return SANSOCK_WERR_VERSION;
    out->type = p[OFF(sansock_wire_hdr, type)];
    out->flags = get16(p + OFF(sansock_wire_hdr, flags));
    out->len = get32(p + OFF(sansock_wire_hdr, len));
    out->credits = get32(p + OFF(sansock_wire_hdr, credits));
    if (!out->type || out->type > SANSOCK_MSG_TYPE_MAX)
        return SANSOCK_WERR_TYPE;
    if ((out->flags & ~SANSOCK_F_ALL) || (out->type == SANSOCK_MSG_NEGOTIATE && out->flags))
        return SANSOCK_WERR_FLAGS;
    if (get32(p + OFF(sansock_wire_hdr, reserved)))
        return SANSOCK_WERR_RESERVED;
    if (out->len != n - SANSOCK_HDR_SIZE)
        return SANSOCK_WERR_LENGTH;
    if ((out->type == SANSOCK_MSG_NEGOTIATE) == lim->negotiated)
        return SANSOCK_WERR_ORDER;
    /* The peer holds at most the receives it was told about: credits beyond them are a lie. */
    if (out->credits > lim->max_credits || (out->type == SANSOCK_MSG_NEGOTIATE && out->credits) ||
        (out->type == SANSOCK_MSG_CREDIT && !out->credits))
        return SANSOCK_WERR_CREDITS;

    const uint8_t *body = p + SANSOCK_HDR_SIZE;
    switch (out->type) {
    case SANSOCK_MSG_NEGOTIATE:
        if (out->len != sizeof(struct sansock_wire_negotiate))
            return out->len < sizeof(struct sansock_wire_negotiate) ? SANSOCK_WERR_SHORT
                                                                    : SANSOCK_WERR_LENGTH;
        return decode_negotiate(body, out);
    case SANSOCK_MSG_DATA:
        if (!out->len || out->len > lim->max_payload)
            return SANSOCK_WERR_LENGTH;
        out->payload = body;
        out->payload_len = out->len;
        return SANSOCK_WERR_OK;
    case SANSOCK_MSG_CREDIT:
    case SANSOCK_MSG_SHUTDOWN:
        return out->len ? SANSOCK_WERR_LENGTH : SANSOCK_WERR_OK;
    case SANSOCK_MSG_RDMA_OFFER:
        if (!(lim->features & SANSOCK_FEAT_RDMA_READ))
            return SANSOCK_WERR_FEATURE;
        return decode_rdma(body, out->len, lim, out);
    case SANSOCK_MSG_RDMA_SINK:
        if (!(lim->features & SANSOCK_FEAT_RDMA_WRITE))
            return SANSOCK_WERR_FEATURE;
        return decode_sink(body, out->len, out);
    case SANSOCK_MSG_DONE: /* answers an offer: read mode */
        if (!(lim->features & SANSOCK_FEAT_RDMA_READ))
            return SANSOCK_WERR_FEATURE;
        return decode_done(body, out->len, out);
    default: /* SANSOCK_MSG_SINK_DONE: answers a sink, write mode */
        if (!(lim->features & SANSOCK_FEAT_RDMA_WRITE))
            return SANSOCK_WERR_FEATURE;
        return decode_done(body, out->len, out);
    }
}

const char *sansock_wire_strerror(enum sansock_wire_err e)
{
    static const char *const names[] = {
        [SANSOCK_WERR_OK] = "ok",
        [SANSOCK_WERR_SHORT] = "message too short",
        [SANSOCK_WERR_LENGTH] = "bad length",
        [SANSOCK_WERR_VERSION] = "unknown version",
        [SANSOCK_WERR_TYPE] = "unknown type",
        [SANSOCK_WERR_FLAGS] = "unknown flag",
        [SANSOCK_WERR_RESERVED] = "reserved field set",
        [SANSOCK_WERR_ORDER] = "negotiation out of order",
        [SANSOCK_WERR_CREDITS] = "credits beyond what was negotiated",
        [SANSOCK_WERR_FIELD] = "field out of range",
        [SANSOCK_WERR_FEATURE] = "feature not negotiated",
    };
    return (unsigned)e < sizeof(names) / sizeof(names[0]) ? names[e] : "unknown error";
}

int sansock_wire_addr_from(struct sansock_wire_addr *w, const struct sockaddr *sa, socklen_t len)
{
    memset(w, 0, sizeof(*w));
    if (!sa || len < (socklen_t)sizeof(sa_family_t))
        return -EINVAL;
    if (sa->sa_family == AF_INET) {
        struct sockaddr_in in;
        if (len < (socklen_t)sizeof(in))
            return -EINVAL;
        memcpy(&in, sa, sizeof(in));
        w->family = SANSOCK_WIRE_AF_INET;
        w->port = ntohs(in.sin_port);
        memcpy(w->addr, &in.sin_addr, 4);
        return 0;
    }
    if (sa->sa_family == AF_INET6) {
        struct sockaddr_in6 in6;
        if (len < (socklen_t)sizeof(in6))
            return -EINVAL;
        memcpy(&in6, sa, sizeof(in6));
        w->family = SANSOCK_WIRE_AF_INET6;
        w->port = ntohs(in6.sin6_port);
        w->flowinfo = ntohl(in6.sin6_flowinfo);
        memcpy(w->addr, &in6.sin6_addr, 16);
        w->scope_id = in6.sin6_scope_id;
        return 0;
    }
    return -EAFNOSUPPORT;
}

void sansock_wire_addr_to(const struct sansock_wire_addr *w, struct sockaddr *sa, socklen_t *len)
{
    union {
        struct sockaddr_in in;
        struct sockaddr_in6 in6;
    } u;
    socklen_t full;
    memset(&u, 0, sizeof(u));
    if (w->family == SANSOCK_WIRE_AF_INET) {
        u.in.sin_family = AF_INET;
        u.in.sin_port = htons(w->port);
        memcpy(&u.in.sin_addr, w->addr, 4);
        full = sizeof(u.in);
    } else {
        u.in6.sin6_family = AF_INET6;
        u.in6.sin6_port = htons(w->port);
        u.in6.sin6_flowinfo = htonl(w->flowinfo);
        memcpy(&u.in6.sin6_addr, w->addr, 16);
        u.in6.sin6_scope_id = w->scope_id;
        full = sizeof(u.in6);
    }
    if (sa && len)
        memcpy(sa, &u, *len < full ? *len : full);
    if (len)
        *len = full;
}
