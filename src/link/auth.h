/* The links' authentication: keys derived from the shared secret and both sides' nonces, and the
 * MAC every link message but HELLO carries (HMAC-SHA256, nettle).
 *
 * The key of a direction is HMAC(secret, label | from host_id | from nonce | to host_id | to
 * nonce): each direction of each session has its own key, so a message is never valid in another
 * direction (no reflection) or in another session (fresh nonces), and proving knowledge of it
 * needs the secret. Pure functions, no locking. */
#ifndef SAN_LINK_AUTH_H
#define SAN_LINK_AUTH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <nettle/umac.h>

#include "link/wire.h"

#define SAN_LINK_KEY 32

void san_link_key(const uint8_t *secret, size_t secret_len, uint64_t from_host,
                  const uint8_t from_nonce[SAN_LINK_NONCE], uint64_t to_host,
                  const uint8_t to_nonce[SAN_LINK_NONCE], uint8_t key[SAN_LINK_KEY]);
/* Writes m's MAC (over its hdr.length bytes, the MAC field zero) into m->hdr.mac. */
void san_link_mac(const uint8_t key[SAN_LINK_KEY], struct san_link_msg *m);
/* Whether m (already decoded: its length is right) carries the MAC of key; constant time. */
bool san_link_mac_ok(const uint8_t key[SAN_LINK_KEY], const struct san_link_msg *m);

/* Endpoint messages (SAN_LINK_EP) carry the endpoints' data: they are MAC'd with UMAC-64 (RFC
 * 4418, AES-based; the tag of OpenSSH's umac-64 MAC: forgery about 2^-60 per attempt, and a
 * message that fails is dropped, never accepted), keyed from the direction's key (its own
 * derivation: no key serves two algorithms) and with the message's sequence number as the nonce,
 * unique within a direction's key. UMAC-64 hashes each byte twice where UMAC-128 does four times:
 * the MAC was the largest cost of bulk data on the link threads. The 8-byte tag fills the start
 * of the MAC field, the rest is zero. A context per direction is kept for the session (its key
 * schedule is the costly part). */
void san_link_umac_key(const uint8_t key[SAN_LINK_KEY], struct umac64_ctx *ctx);
void san_link_umac(struct umac64_ctx *ctx, struct san_link_msg *m);
bool san_link_umac_ok(struct umac64_ctx *ctx, const struct san_link_msg *m);
/* The same tag as san_link_umac, computed as the message is written (the sender hashes each
 * slice of the payload right after it copied it there, while it is in the cache): begin over
 * m's header (its seq the nonce; the MAC field counts as zero), update over the rest of the
 * message in order, end writes the tag into m's MAC field. */
void san_link_umac_begin(struct umac64_ctx *ctx, const struct san_link_msg *m);
void san_link_umac_update(struct umac64_ctx *ctx, const void *data, size_t len);
void san_link_umac_end(struct umac64_ctx *ctx, struct san_link_msg *m);

#endif
