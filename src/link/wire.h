/* The link protocol between two sanproxyd: its messages and their one decoder.
 *
 * Messages travel as libfabric messages on the daemons' RDM endpoints. Each is a fixed header and
 * a fixed-size body whose size the type decides; integers are little-endian (the link is between
 * hosts: link.c writes and reads them as little-endian, which the static_assert below pins to the
 * hosts we build for). The layout is pinned with static_assert.
 *
 * A link's life: each side sends HELLO (its host_id and a fresh nonce) until it has a session;
 * the answer to a HELLO is a PROOF: the answerer's nonce, the nonce it answers, the networks it
 * serves, under a MAC keyed by the shared secret and both nonces (auth.h). A side whose own nonce
 * comes back in a valid PROOF has a session and answers with its own PROOF; then both send
 * HEARTBEATs, and BYE when they stop. Every message but HELLO carries a MAC under the session's
 * key for its direction and a sequence number that only grows, so nothing of another session or
 * of the past is accepted.
 *
 * san_link_decode is the only place that validates a received message; nothing reads a body
 * before it passed. Pure: no state, no allocation. */
#ifndef SAN_LINK_WIRE_H
#define SAN_LINK_WIRE_H

#include <assert.h>
#include <stddef.h>
#include <stdint.h>

#include "nic/xmsg.h"

/* Version 3: up to SAN_XCONN_READS reads in flight at once (version 2: one). */
#define SAN_LINK_MAGIC   0x4c4e4153u /* "SANL" */
#define SAN_LINK_VERSION 3u
#define SAN_LINK_NONCE   16
#define SAN_LINK_MAC     32 /* HMAC-SHA256 */
#define SAN_LINK_NETS    16 /* as [nic] addresses */

#if __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "the link protocol is little-endian: add byte swapping for this host"
#endif

enum san_link_type {
    SAN_LINK_HELLO = 1,
    SAN_LINK_PROOF = 2,
    SAN_LINK_HEARTBEAT = 3,
    SAN_LINK_BYE = 4,
    SAN_LINK_EP = 5, /* an endpoint message (nic/xmsg.h) and its payload */
    SAN_LINK_TYPE_MAX = SAN_LINK_EP,
};

struct san_link_hdr {
    uint32_t magic;   /* SAN_LINK_MAGIC */
    uint16_t version; /* SAN_LINK_VERSION */
    uint16_t type;    /* enum san_link_type */
    uint32_t length;  /* whole message: header + body */
    uint32_t reserved;
    uint64_t host_id;          /* the sender's, never 0 */
    uint64_t seq;              /* grows with every message a daemon sends to a peer */
    uint8_t mac[SAN_LINK_MAC]; /* HELLO: zero; else over the message with this field zero */
};
static_assert(sizeof(struct san_link_hdr) == 64, "wire layout");
static_assert(offsetof(struct san_link_hdr, mac) == 32, "wire layout");

struct san_link_hello {
    uint8_t nonce[SAN_LINK_NONCE]; /* the sender's, fresh for each session it tries */
    uint32_t max_version;          /* the highest version the sender speaks */
    uint32_t reserved;
    uint64_t reserved2;
};

struct san_link_net {
    uint8_t ip[16];  /* IPv6, or ::ffff:a.b.c.d */
    uint32_t prefix; /* 0..128 */
    uint32_t reserved;
};

struct san_link_proof {
    uint8_t your_nonce[SAN_LINK_NONCE]; /* the HELLO's nonce it answers */
    uint8_t my_nonce[SAN_LINK_NONCE];   /* the sender's current nonce */
    uint64_t your_host_id;              /* the HELLO's host_id */
    uint32_t nr_nets;                   /* the networks the sender serves */
    uint32_t reserved;
    struct san_link_net nets[SAN_LINK_NETS];
};

struct san_link_heartbeat {
    uint64_t sent_ns; /* the sender's monotonic clock, for the record */
    uint64_t reserved;
};

struct san_link_bye {
    uint32_t reason; /* 0: the daemon stops */
    uint32_t reserved;
};

static_assert(sizeof(struct san_link_hello) == 32, "wire layout");
static_assert(sizeof(struct san_link_net) == 24, "wire layout");
static_assert(sizeof(struct san_link_proof) == 48 + 24 * SAN_LINK_NETS, "wire layout");
static_assert(sizeof(struct san_link_heartbeat) == 16, "wire layout");
static_assert(sizeof(struct san_link_bye) == 8, "wire layout");

struct san_link_msg {
    struct san_link_hdr hdr;
    union {
        struct san_link_hello hello;
        struct san_link_proof proof;
        struct san_link_heartbeat heartbeat;
        struct san_link_bye bye;
        struct {
            struct san_xmsg x;
            uint8_t data[SAN_XMSG_CHUNK];
        } ep;
    } u;
};
#define SAN_LINK_MSG_MAX sizeof(struct san_link_msg)

/* Size of the body of type, -1 for an unknown type (EP: its fixed part, without payload). */
long san_link_body_size(unsigned type);

/* Validates a received message of len bytes at buf. 0 when it may be used (its MAC is the
 * caller's to check: auth.h), else:
 *   -EBADMSG     not ours or malformed: too short or too long, bad magic, a length that lies, a
 *                body of another size than its type's, a reserved field set, host_id 0, a HELLO
 *                with a MAC, a network out of its domain; an endpoint message whose payload is
 *                not the length it says, larger than a chunk, on an operation that carries none,
 *                an unknown operation, a status that is no negative errno, a connection 0 where
 *                one is needed;
 *   -EPROTO      another version of the link protocol (the header is ours: a peer to upgrade);
 *   -EOPNOTSUPP  an unknown type. */
int san_link_decode(const void *buf, size_t len);

/* Fills the header of a message of type (length from the type, MAC zero) and zeroes its body; the
 * bytes past its length (an endpoint message's payload) are left as they are. */
void san_link_init(struct san_link_msg *m, unsigned type, uint64_t host_id, uint64_t seq);

#endif
