/* HMAC-SHA256 keys and MACs of the link protocol, and UMAC-64 for endpoint messages (auth.h),
 * on nettle. No state but the callers' UMAC contexts; no locking. */
#include "link/auth.h"

#include <nettle/hmac.h>
#include <nettle/memops.h>
#include <nettle/sha2.h>
#include <string.h>

static const char label[] = "sanproxy link v1 key";

static void put64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

void san_link_key(const uint8_t *secret, size_t secret_len, uint64_t from_host,
                  const uint8_t from_nonce[SAN_LINK_NONCE], uint64_t to_host,
                  const uint8_t to_nonce[SAN_LINK_NONCE], uint8_t key[SAN_LINK_KEY])
{
    struct hmac_sha256_ctx ctx;
    uint8_t h[8];

    hmac_sha256_set_key(&ctx, secret_len, secret);
    hmac_sha256_update(&ctx, sizeof(label) - 1, (const uint8_t *)label);
    put64(h, from_host);
    hmac_sha256_update(&ctx, 8, h);
    hmac_sha256_update(&ctx, SAN_LINK_NONCE, from_nonce);
    put64(h, to_host);
    hmac_sha256_update(&ctx, 8, h);
    hmac_sha256_update(&ctx, SAN_LINK_NONCE, to_nonce);
    hmac_sha256_digest(&ctx, SAN_LINK_KEY, key);
}

/* The HMAC of m: its header with the MAC field zero, then the rest, streamed from m itself (a copy
 * of the message would put a whole link message, 64 KiB, on the caller's stack). */
static void compute(const uint8_t key[SAN_LINK_KEY], const struct san_link_msg *m,
                    uint8_t out[SAN_LINK_MAC])
{
    struct san_link_hdr h = m->hdr;
    struct hmac_sha256_ctx ctx;
    size_t len = m->hdr.length <= sizeof(*m) ? m->hdr.length : sizeof(*m);

    memset(h.mac, 0, SAN_LINK_MAC);
    hmac_sha256_set_key(&ctx, SAN_LINK_KEY, key);
    hmac_sha256_update(&ctx, len < sizeof(h) ? len : sizeof(h), (const uint8_t *)&h);
    if (len > sizeof(h))
        hmac_sha256_update(&ctx, len - sizeof(h), (const uint8_t *)m + sizeof(h));
    hmac_sha256_digest(&ctx, SAN_LINK_MAC, out);
}

void san_link_mac(const uint8_t key[SAN_LINK_KEY], struct san_link_msg *m)
{
    compute(key, m, m->hdr.mac);
}

bool san_link_mac_ok(const uint8_t key[SAN_LINK_KEY], const struct san_link_msg *m)
{
    uint8_t want[SAN_LINK_MAC];
    compute(key, m, want);
    return memeql_sec(want, m->hdr.mac, SAN_LINK_MAC);
}

static const char umac_label[] = "sanproxy link v1 umac64";

void san_link_umac_key(const uint8_t key[SAN_LINK_KEY], struct umac64_ctx *ctx)
{
    struct hmac_sha256_ctx h;
    uint8_t k[SHA256_DIGEST_SIZE];
    hmac_sha256_set_key(&h, SAN_LINK_KEY, key);
    hmac_sha256_update(&h, sizeof(umac_label) - 1, (const uint8_t *)umac_label);
    hmac_sha256_digest(&h, sizeof(k), k);
    umac64_set_key(ctx, k); /* its first UMAC_KEY_SIZE bytes */
}

void san_link_umac_begin(struct umac64_ctx *ctx, const struct san_link_msg *m)
{
    struct san_link_hdr h = m->hdr;
    uint8_t nonce[8];
    memset(h.mac, 0, SAN_LINK_MAC);
    put64(nonce, m->hdr.seq);
    umac64_set_nonce(ctx, sizeof(nonce), nonce);
    umac64_update(ctx, sizeof(h), (const uint8_t *)&h);
}

void san_link_umac_update(struct umac64_ctx *ctx, const void *data, size_t len)
{
    umac64_update(ctx, len, data);
}

void san_link_umac_end(struct umac64_ctx *ctx, struct san_link_msg *m)
{
    memset(m->hdr.mac, 0, SAN_LINK_MAC);
    umac64_digest(ctx, UMAC64_DIGEST_SIZE, m->hdr.mac);
}

/* The tag of m: the header with its MAC field zero, then the body, the nonce its seq. */
static void umac_compute(struct umac64_ctx *ctx, const struct san_link_msg *m,
                         uint8_t out[UMAC64_DIGEST_SIZE])
{
    size_t len = m->hdr.length <= sizeof(*m) ? m->hdr.length : sizeof(*m);
    san_link_umac_begin(ctx, m);
    if (len > sizeof(m->hdr))
        umac64_update(ctx, len - sizeof(m->hdr), (const uint8_t *)m + sizeof(m->hdr));
    umac64_digest(ctx, UMAC64_DIGEST_SIZE, out);
}

void san_link_umac(struct umac64_ctx *ctx, struct san_link_msg *m)
{
    memset(m->hdr.mac, 0, SAN_LINK_MAC);
    umac_compute(ctx, m, m->hdr.mac);
}

bool san_link_umac_ok(struct umac64_ctx *ctx, const struct san_link_msg *m)
{
    static const uint8_t zero[SAN_LINK_MAC - UMAC64_DIGEST_SIZE];
    uint8_t want[UMAC64_DIGEST_SIZE];
    umac_compute(ctx, m, want);
    return memeql_sec(want, m->hdr.mac, UMAC64_DIGEST_SIZE) &
           memeql_sec(zero, m->hdr.mac + UMAC64_DIGEST_SIZE, sizeof(zero));
}
