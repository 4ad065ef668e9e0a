/* The sockets switch's session protocol: the messages two libsansock peers exchange over a SAN
 * endpoint (docs/sock.md, "The session protocol"). Versioned, fixed layout, little-endian on the
 * wire whatever the host; the structs below are the layout (checked with static_assert) and the
 * codec in wire.c writes and reads them byte by byte. A message is a 16-byte header and a payload
 * whose size the header states; one receive slot holds one message.
 *
 * Everything received is untrusted: sansock_wire_decode is the only place that reads a received
 * message, and it rejects anything malformed with a reason, given what the connection negotiated
 * (struct sansock_wire_limits). No locking: pure functions. */
#ifndef SANSOCK_WIRE_H
#define SANSOCK_WIRE_H

#include <assert.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#define SANSOCK_WIRE_VERSION 1

enum sansock_msg_type {
    SANSOCK_MSG_NEGOTIATE = 1,  /* first message each way: receives posted, sizes, features */
    SANSOCK_MSG_DATA = 2,       /* payload: stream bytes (1..max_payload) */
    SANSOCK_MSG_CREDIT = 3,     /* no payload: returns credits only */
    SANSOCK_MSG_SHUTDOWN = 4,   /* no payload: the sender writes no more (the peer reads EOF) */
    SANSOCK_MSG_RDMA_OFFER = 5, /* read mode: descriptor of the sender's data, then inline bytes */
    SANSOCK_MSG_RDMA_SINK = 6,  /* write mode: descriptor of the receiver's sink, its position */
    SANSOCK_MSG_DONE = 7,       /* read mode: the receiver read an offer: cookie, status, bytes */
    SANSOCK_MSG_SINK_DONE = 8,  /* write mode: the sender wrote bytes (0: none) into a sink */
};
#define SANSOCK_MSG_TYPE_MAX SANSOCK_MSG_SINK_DONE

/* Header flags. */
enum { SANSOCK_F_CREDIT_LOW = 1 }; /* the sender has at most one credit left: return credits */
#define SANSOCK_F_ALL SANSOCK_F_CREDIT_LOW

/* Negotiated features (both sides must announce one to use it). */
enum { SANSOCK_FEAT_RDMA_READ = 1, SANSOCK_FEAT_RDMA_WRITE = 2 };
#define SANSOCK_FEAT_ALL (SANSOCK_FEAT_RDMA_READ | SANSOCK_FEAT_RDMA_WRITE)

/* Bounds a negotiation must respect. */
#define SANSOCK_MAX_SLOTS     64u            /* receives one side may post */
#define SANSOCK_MIN_SLOT      (16u + 64u)    /* header + 64 bytes of data */
#define SANSOCK_MAX_SLOT      (16u + 65536u) /* header + 64 KiB */
#define SANSOCK_MAX_RDMA      (1u << 30)     /* bytes one RDMA offer or sink may name */
#define SANSOCK_DESC_MAX      48u            /* an RDMA descriptor (opaque) */
#define SANSOCK_NEGOTIATE_MAX 256u           /* WSD: a negotiation message fits 256 B */
enum { SANSOCK_WIRE_AF_INET = 4, SANSOCK_WIRE_AF_INET6 = 6 }; /* address families on the wire */

/* The layout. Integers are little-endian on the wire. */
struct sansock_wire_hdr {
    uint8_t version;   /* SANSOCK_WIRE_VERSION */
    uint8_t type;      /* enum sansock_msg_type */
    uint16_t flags;    /* SANSOCK_F_* */
    uint32_t len;      /* payload bytes after the header */
    uint32_t credits;  /* receives the sender reposted since its last message (credits returned) */
    uint32_t reserved; /* 0 */
};
struct sansock_wire_addr {
    uint16_t family; /* SANSOCK_WIRE_AF_INET or _INET6 */
    uint16_t port;   /* host order value, little-endian on the wire */
    uint32_t flowinfo;
    uint8_t addr[16]; /* IPv4: 4 bytes, the rest 0 */
    uint32_t scope_id;
};
struct sansock_wire_negotiate {
    uint32_t recv_slots; /* receives posted: the peer's initial credits (1..SANSOCK_MAX_SLOTS) */
    uint32_t slot_size;  /* bytes of each receive (header included) */
    uint32_t rdma_threshold; /* the sender's threshold (informative: each side decides its sends) */
    uint32_t features;       /* SANSOCK_FEAT_* the sender supports */
    uint32_t max_rdma;       /* largest RDMA transfer the sender accepts (0 without RDMA) */
    uint32_t reserved;       /* 0 */
    struct sansock_wire_addr src; /* the connector's local address (the acceptor's getpeername) */
    struct sansock_wire_addr dst; /* the address the connector connected to */
};
struct sansock_wire_rdma {          /* RDMA_OFFER (then inline data) and RDMA_SINK */
    uint64_t total_len;             /* bytes of the whole transfer */
    uint32_t cookie;                /* the sender's tag, echoed in DONE */
    uint32_t desc_len;              /* bytes of desc used (1..SANSOCK_DESC_MAX) */
    uint8_t desc[SANSOCK_DESC_MAX]; /* san_register_rdma's descriptor */
};
/* RDMA_SINK: the receiver's buffer the sender may write the stream's next bytes into, if the
 * stream's next byte is at pos (the bytes the receiver had received when it advertised it): a
 * sender that sent more since answers SINK_DONE with 0 bytes. */
struct sansock_wire_sink {
    uint64_t pos;                   /* stream offset of the sink's first byte */
    uint32_t len;                   /* bytes the sink holds (1..SANSOCK_MAX_RDMA) */
    uint32_t cookie;                /* the receiver's tag (counts sinks from 0), echoed */
    uint32_t desc_len;              /* bytes of desc used (1..SANSOCK_DESC_MAX) */
    uint32_t reserved;              /* 0 */
    uint8_t desc[SANSOCK_DESC_MAX]; /* san_register_rdma's descriptor (remote write) */
};
struct sansock_wire_done { /* DONE and SINK_DONE */
    uint32_t cookie;
    int32_t status; /* 0 or a negative errno */
    uint64_t bytes;
};

static_assert(sizeof(struct sansock_wire_hdr) == 16, "header layout");
static_assert(offsetof(struct sansock_wire_hdr, len) == 4, "header layout");
static_assert(offsetof(struct sansock_wire_hdr, credits) == 8, "header layout");
static_assert(offsetof(struct sansock_wire_hdr, reserved) == 12, "header layout");
static_assert(sizeof(struct sansock_wire_addr) == 28, "address layout");
static_assert(offsetof(struct sansock_wire_addr, addr) == 8, "address layout");
static_assert(offsetof(struct sansock_wire_addr, scope_id) == 24, "address layout");
static_assert(sizeof(struct sansock_wire_negotiate) == 80, "negotiation layout");
static_assert(offsetof(struct sansock_wire_negotiate, src) == 24, "negotiation layout");
static_assert(offsetof(struct sansock_wire_negotiate, dst) == 52, "negotiation layout");
static_assert(sizeof(struct sansock_wire_hdr) + sizeof(struct sansock_wire_negotiate) <=
                  SANSOCK_NEGOTIATE_MAX,
              "WSD: a negotiation message is at most 256 bytes");
static_assert(sizeof(struct sansock_wire_rdma) == 64, "RDMA layout");
static_assert(offsetof(struct sansock_wire_rdma, desc) == 16, "RDMA layout");
static_assert(sizeof(struct sansock_wire_sink) == 72, "sink layout");
static_assert(offsetof(struct sansock_wire_sink, desc) == 24, "sink layout");
static_assert(sizeof(struct sansock_wire_done) == 16, "done layout");

#define SANSOCK_HDR_SIZE       ((uint32_t)sizeof(struct sansock_wire_hdr))
#define SANSOCK_NEGOTIATE_SIZE (SANSOCK_HDR_SIZE + (uint32_t)sizeof(struct sansock_wire_negotiate))

/* A decoded message (host order). payload points into the buffer given to the decoder. */
struct sansock_msg {
    uint8_t type;
    uint16_t flags;
    uint32_t len;
    uint32_t credits;
    const uint8_t *payload; /* DATA: the bytes; RDMA_OFFER: the inline bytes after the fixed part */
    uint32_t payload_len;
    union {
        struct sansock_wire_negotiate negotiate;
        struct sansock_wire_rdma rdma;
        struct sansock_wire_sink sink;
        struct sansock_wire_done done; /* DONE and SINK_DONE */
    } u;
};

/* What the receiving side of a connection knows when a message arrives. */
struct sansock_wire_limits {
    bool negotiated;      /* the peer's NEGOTIATE was received already */
    uint32_t max_payload; /* our receive slot minus the header */
    uint32_t max_credits; /* credits the peer may still return: its receives minus ours held */
    uint32_t features;    /* features both sides announced (0 before negotiation) */
    uint32_t max_rdma;    /* largest RDMA_OFFER this side reads (its NEGOTIATE's max_rdma) */
};

/* Why a message was rejected (0: accepted). */
enum sansock_wire_err {
    SANSOCK_WERR_OK = 0,
    SANSOCK_WERR_SHORT,    /* fewer bytes than a header, or than the fixed part of its type */
    SANSOCK_WERR_LENGTH,   /* len is not the bytes received, or too long for its type or slot */
    SANSOCK_WERR_VERSION,  /* unknown version */
    SANSOCK_WERR_TYPE,     /* unknown type */
    SANSOCK_WERR_FLAGS,    /* unknown flag */
    SANSOCK_WERR_RESERVED, /* a reserved field is not 0 */
    SANSOCK_WERR_ORDER,    /* NEGOTIATE not first, or a second one */
    SANSOCK_WERR_CREDITS,  /* more credits than the peer's receives allow, or none in a CREDIT */
    SANSOCK_WERR_FIELD,    /* a field out of range (negotiation sizes, addresses, RDMA lengths,
                              an offer beyond the receiver's max_rdma) */
    SANSOCK_WERR_FEATURE,  /* an RDMA message on a connection that did not negotiate its mode
                              (read mode: RDMA_OFFER, DONE; write mode: RDMA_SINK, SINK_DONE) */
};
const char *sansock_wire_strerror(enum sansock_wire_err e);

/* Decodes the message in buf[0, n) (n: the bytes the receive completion says arrived). */
enum sansock_wire_err sansock_wire_decode(const void *buf, size_t n,
                                          const struct sansock_wire_limits *lim,
                                          struct sansock_msg *out);

/* Encoders write a whole message into buf (at least the returned size) and return its size. */
size_t sansock_wire_encode_hdr(void *buf, uint8_t type, uint16_t flags, uint32_t len,
                               uint32_t credits);
size_t sansock_wire_encode_negotiate(void *buf, const struct sansock_wire_negotiate *n);
/* DATA: the header only; the caller puts len bytes after it (buf + SANSOCK_HDR_SIZE). */
size_t sansock_wire_encode_data(void *buf, uint16_t flags, uint32_t len, uint32_t credits);
/* RDMA_OFFER (inline_len bytes at buf + SANSOCK_HDR_SIZE + 64, written by the caller). */
size_t sansock_wire_encode_rdma(void *buf, uint8_t type, uint16_t flags, uint32_t credits,
                                const struct sansock_wire_rdma *r, uint32_t inline_len);
size_t sansock_wire_encode_sink(void *buf, uint16_t flags, uint32_t credits,
                                const struct sansock_wire_sink *k);
/* type: SANSOCK_MSG_DONE or SANSOCK_MSG_SINK_DONE. */
size_t sansock_wire_encode_done(void *buf, uint8_t type, uint16_t flags, uint32_t credits,
                                const struct sansock_wire_done *d);

/* Socket addresses to and from the wire form. -EAFNOSUPPORT for other families, -EINVAL for a
 * short address. */
int sansock_wire_addr_from(struct sansock_wire_addr *w, const struct sockaddr *sa, socklen_t len);
/* Writes a sockaddr_in or sockaddr_in6 (at most *len bytes, as getpeername does) and sets *len to
 * its full size. */
void sansock_wire_addr_to(const struct sansock_wire_addr *w, struct sockaddr *sa, socklen_t *len);

#endif
