/* The endpoint messages two linked daemons exchange for a connection whose ends live on different
 * hosts (xconn.c): the body of a link message of type SAN_LINK_EP (link/wire.h), optionally
 * followed by payload bytes.
 *
 * Each daemon names its half of a connection by a number of its own (conn); a message names the
 * receiver's half (conn) and the sender's (from). Operations of one direction of a connection
 * are numbered (seq) and executed in order (reads pipeline among themselves, xops.c); the data of
 * a send, an RDMA write or an RDMA read's answer travels as DATA-like messages of at most
 * SAN_XMSG_CHUNK bytes each, at most SAN_XMSG_WINDOW of them unacknowledged per direction
 * (CREDIT returns them), so a peer can make a daemon hold at most a window of chunks per
 * connection. A send needs one of the peer's posted receives, which the peer advertises in
 * CREDIT (recvs).
 *
 * The layout is pinned with static_assert; link/wire.c's decoder checks every field's domain
 * before anything reads a body. Little-endian, as the rest of the link protocol. */
#ifndef SAN_NIC_XMSG_H
#define SAN_NIC_XMSG_H

#include <assert.h>
#include <stdint.h>

#define SAN_XMSG_CHUNK  65024u
#define SAN_XMSG_WINDOW 16u /* data messages unacknowledged per direction of a connection */

enum san_xmsg_op {
    SAN_XMSG_CONNECT = 1, /* from: the connector's half; ip, port: the address it connects to */
    SAN_XMSG_ACCEPT = 2,  /* conn: the connector's; from: the acceptor's; status 0 or refused */
    SAN_XMSG_SEND = 3,    /* data of send seq: offset, total, payload; status < 0: aborted */
    SAN_XMSG_WRITE = 4,   /* data of RDMA write seq: rkey, va, host, offset, total, payload */
    SAN_XMSG_READ = 5,    /* RDMA read seq: rkey, va, host, total; answered by RDATA */
    SAN_XMSG_RDATA = 6,   /* data of the answer to read seq: offset, total; status < 0: refused */
    SAN_XMSG_DONE = 7,    /* the target's outcome of send or write seq: status, total (bytes) */
    SAN_XMSG_CREDIT = 8,  /* credits: data messages taken, receives newly posted */
    SAN_XMSG_STATE = 9,   /* the sender's endpoint entered the error state: status */
    SAN_XMSG_CLOSE = 10,  /* the sender's endpoint is gone (closed, or it never knew conn) */
    SAN_XMSG_OP_MAX = SAN_XMSG_CLOSE,
};

struct san_xmsg {
    uint32_t op;  /* enum san_xmsg_op */
    uint32_t len; /* payload bytes after this body: 0 but for SEND, WRITE, RDATA */
    uint64_t conn;
    uint64_t from;
    uint64_t seq;
    uint64_t offset;
    uint64_t total;
    uint64_t va;
    uint64_t host; /* WRITE, READ: the descriptor's host_id */
    uint32_t rkey;
    int32_t status;  /* 0 or a negative errno */
    uint32_t chunks; /* CREDIT */
    uint32_t recvs;  /* CREDIT */
    uint8_t ip[16];  /* CONNECT */
    uint16_t port;   /* CONNECT */
    uint16_t reserved;
    uint32_t reserved2;
};
static_assert(sizeof(struct san_xmsg) == 104, "wire layout");

#endif
