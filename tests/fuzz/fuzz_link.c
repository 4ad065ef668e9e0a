/* Fuzz target: the link protocol's decoder (san_link_decode) and the MAC check behind it. Most
 * inputs get a valid magic, version, length and a known type patched in, so that the fuzzer spends
 * its time past the framing checks, in the body checks. Whatever the decoder accepts must be
 * self-consistent: a known type, the exact size for it, a sender, its fields in their domains; and
 * a MAC check of it never reads past its length. Whatever it rejects carries a code wire.h
 * promises. */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "link/auth.h"
#include "link/wire.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_accepted(const struct san_link_msg *m, size_t len)
{
    static const uint8_t zero[SAN_LINK_MAC];
    long body = san_link_body_size(m->hdr.type);
    if (m->hdr.magic != SAN_LINK_MAGIC || m->hdr.version != SAN_LINK_VERSION || body < 0 ||
        len != sizeof(m->hdr) + (size_t)body || m->hdr.length != len || !m->hdr.host_id ||
        m->hdr.reserved)
        abort();
    if (m->hdr.type == SAN_LINK_HELLO && memcmp(m->hdr.mac, zero, sizeof(zero)))
        abort();
    if (m->hdr.type == SAN_LINK_PROOF) {
        if (m->u.proof.nr_nets > SAN_LINK_NETS || !m->u.proof.your_host_id)
            abort();
        for (unsigned i = 0; i < SAN_LINK_NETS; i++)
            if (m->u.proof.nets[i].prefix > 128)
                abort();
    }
    /* A message with a MAC someone computed is never refused by the check, nor the same with a
     * bit of the MAC flipped accepted. */
    static const uint8_t key[SAN_LINK_KEY] = {1, 2, 3};
    struct san_link_msg c = *m;
    san_link_mac(key, &c);
    if (!san_link_mac_ok(key, &c))
        abort();
    c.hdr.mac[len % SAN_LINK_MAC] ^= 1;
    if (san_link_mac_ok(key, &c))
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static struct san_link_msg m;
    static uint8_t big[2 * sizeof(struct san_link_msg)];

    if (size < 1)
        return 0;
    unsigned mode = data[0];
    data++;
    size--;
    if (size > sizeof(m)) {
        /* Oversized: never accepted, whatever its header says. */
        memcpy(big, data, size < sizeof(big) ? size : sizeof(big));
        if (size >= sizeof(struct san_link_hdr) && (mode & 1)) {
            struct san_link_hdr h;
            memcpy(&h, big, sizeof(h));
            h.magic = SAN_LINK_MAGIC;
            h.version = SAN_LINK_VERSION;
            h.length = (uint32_t)size;
            memcpy(big, &h, sizeof(h));
        }
        if (!san_link_decode(big, size))
            abort();
        return 0;
    }
    memset(&m, 0, sizeof(m));
    memcpy(&m, data, size);
    if ((mode & 1) && size >= sizeof(m.hdr)) {
        m.hdr.magic = SAN_LINK_MAGIC;
        m.hdr.version = SAN_LINK_VERSION;
        m.hdr.length = (uint32_t)size;
        m.hdr.type = (uint16_t)(m.hdr.type % (SAN_LINK_TYPE_MAX + 2));
        if (mode & 2)
            m.hdr.reserved = 0;
        if (mode & 4)
            memset(m.hdr.mac, 0, sizeof(m.hdr.mac));
    }
    int err = san_link_decode(&m, size);
    if (!err)
        check_accepted(&m, size);
    else if (err != -EBADMSG && err != -EPROTO && err != -EOPNOTSUPP)
        abort();
    else if (err == -EPROTO && (size < sizeof(m.hdr) || m.hdr.magic != SAN_LINK_MAGIC ||
                                m.hdr.version == SAN_LINK_VERSION))
        abort();
    return 0;
}
