/* The endpoint queues in shared memory: the layout both libsan and the daemon's NIC map.
 *
 * One region per endpoint, created by the daemon (a memfd, sealed at its size) and mapped by the
 * daemon and by the endpoint's client, nobody else. It starts with a header (magic, version, size,
 * depths, offsets), then each party's indexes on cache lines of their own, then three power-of-two
 * rings of fixed-size entries: send queue and receive queue (the client produces, the NIC
 * consumes) and completion queue (the NIC produces, the client consumes). Entries hold virtual
 * addresses of the client, lengths and keys: never a pointer of the daemon. Indexes are free
 * running 32-bit counters (slot = index & (depth - 1)) published with release stores and read
 * with acquire loads.
 *
 * Trust: the daemon writes what the client reads (state, NIC-owned indexes, completions) and keeps
 * its own copy of every index it owns; it reads what the client writes (client-owned indexes and
 * entries) once, into private memory, and validates it there. A client scribbling on its region
 * can only break its own endpoint.
 *
 * Sleeping: the NIC sets engine_sleeping before it sleeps on doorbell; a poster that sees it set
 * bumps doorbell and wakes it (futex). A client about to sleep sets client_waiting and sleeps on
 * cq_seq, which the NIC bumps and wakes after posting a completion if client_waiting is set. When
 * notify_armed is set (the client asked for a pollable descriptor), the NIC also signals the
 * endpoint's eventfd, when efd_signaled says it is not signalled already. */
#ifndef SAN_PROTO_QUEUE_H
#define SAN_PROTO_QUEUE_H

#include <assert.h>
#include <stdatomic.h>
#include <stdint.h>

#define SAN_EPQ_MAGIC   0x51504e53u /* "SNPQ" */
#define SAN_EPQ_VERSION 1u
#define SAN_EPQ_SQ      64u  /* send queue depth */
#define SAN_EPQ_RQ      64u  /* receive queue depth */
#define SAN_EPQ_CQ      128u /* completion queue depth: room for every send and receive */
#define SAN_EPQ_SGE     4u   /* SAN_MAX_SGE */

enum san_epq_op { SAN_EPQ_SEND = 1, SAN_EPQ_RECV = 2, SAN_EPQ_WRITE = 3, SAN_EPQ_READ = 4 };
/* NODATA: the message carries none of the sender's stream data (a protocol message of the
 * client's own), so an owner that dies with it unread still lingers (docs/nic.md). */
enum san_epq_flag { SAN_EPQ_UNSIGNALED = 1, SAN_EPQ_NODATA = 2 };
/* Completion flags: the send that filled this receive had SAN_EPQ_NODATA. */
enum san_epq_cqe_flag { SAN_EPQ_CQE_NODATA = 1 };

/* Endpoint states, written by the daemon. */
enum san_epq_state {
    SAN_EPQ_CONNECTING = 1, /* connect asked, not accepted yet */
    SAN_EPQ_CONNECTED = 2,
    SAN_EPQ_REFUSED = 3, /* the listener closed or refused before accepting */
    SAN_EPQ_ERROR = 4,   /* an operation failed, or the peer is gone: state_err says which */
};

struct san_epq_sge {
    uint64_t va;
    uint32_t len;
    uint32_t lkey;
};
static_assert(sizeof(struct san_epq_sge) == 16, "sge layout");

/* A work request: send, receive, RDMA write or read. */
struct san_epq_wqe {
    uint64_t wr_id;
    uint32_t opcode; /* enum san_epq_op */
    uint32_t flags;  /* enum san_epq_flag */
    uint32_t nsge;
    uint32_t rkey;      /* RDMA: the peer's remote key */
    uint64_t remote_va; /* RDMA: the peer's address (descriptor's va + offset) */
    uint64_t remote_host;
    uint64_t reserved;
    struct san_epq_sge sge[SAN_EPQ_SGE];
};
static_assert(sizeof(struct san_epq_wqe) == 112, "wqe layout");

/* A completion: the layout of struct san_wc. */
struct san_epq_cqe {
    uint64_t wr_id;
    int32_t status;
    uint32_t opcode; /* SAN_WC_*: the same numbers as enum san_epq_op */
    uint32_t byte_len;
    uint32_t flags; /* enum san_epq_cqe_flag (the NIC's own: san_poll reports 0) */
};
static_assert(sizeof(struct san_epq_cqe) == 24, "cqe layout");

#define SAN_EPQ_LINE 64
struct san_epq {
    uint32_t magic, version;
    uint64_t size;
    uint32_t sq_depth, rq_depth, cq_depth, sge_max;
    uint64_t sq_off, rq_off, cq_off;
    /* daemon-written */
    _Alignas(SAN_EPQ_LINE) _Atomic uint32_t state;   /* enum san_epq_state; futex on changes */
    _Atomic int32_t state_err;                       /* SAN_EPQ_ERROR: the first error */
    _Alignas(SAN_EPQ_LINE) _Atomic uint32_t sq_head; /* NIC consumed up to here */
    _Alignas(SAN_EPQ_LINE) _Atomic uint32_t rq_head;
    _Alignas(SAN_EPQ_LINE) _Atomic uint32_t cq_tail; /* NIC produced up to here */
    _Alignas(SAN_EPQ_LINE) _Atomic uint32_t engine_sleeping;
    _Alignas(SAN_EPQ_LINE) _Atomic uint32_t cq_seq; /* bumped with every completion */
    /* client-written */
    _Alignas(SAN_EPQ_LINE) _Atomic uint32_t sq_tail;
    _Alignas(SAN_EPQ_LINE) _Atomic uint32_t rq_tail;
    _Alignas(SAN_EPQ_LINE) _Atomic uint32_t cq_head;
    _Alignas(SAN_EPQ_LINE) _Atomic uint32_t doorbell; /* futex the NIC sleeps on */
    _Alignas(SAN_EPQ_LINE) _Atomic uint32_t client_waiting;
    _Atomic uint32_t notify_armed;
    /* Written by both: 1 while the eventfd has been signalled and not drained. The NIC signals
     * only on 0 -> 1 and the client drains only when it is 1, so a stream of completions costs
     * one write and one read of the eventfd per wake-up, not one per completion and per poll.
     * A client that scribbles on it only loses its own notifications. */
    _Atomic uint32_t efd_signaled;
    /* Client-written: 1 asks the NIC to finish the endpoint when its owner goes away (lingering,
     * docs/nic.md): what it posted is still delivered and its RDMA memory stays readable for the
     * peer, bounded by [nic] linger. 0 (the default): the endpoint closes with its owner. */
    _Atomic uint32_t linger;
};
static_assert(sizeof(struct san_epq) % SAN_EPQ_LINE == 0, "header layout");

/* The region's size and its rings' offsets (the same on both sides). */
#define SAN_EPQ_SQ_OFF ((uint64_t)sizeof(struct san_epq))
#define SAN_EPQ_RQ_OFF (SAN_EPQ_SQ_OFF + SAN_EPQ_SQ * sizeof(struct san_epq_wqe))
#define SAN_EPQ_CQ_OFF (SAN_EPQ_RQ_OFF + SAN_EPQ_RQ * sizeof(struct san_epq_wqe))
#define SAN_EPQ_END    (SAN_EPQ_CQ_OFF + SAN_EPQ_CQ * sizeof(struct san_epq_cqe))
#define SAN_EPQ_SIZE   ((SAN_EPQ_END + 4095) & ~(uint64_t)4095)

static inline struct san_epq_wqe *san_epq_sq(struct san_epq *q)
{
    return (struct san_epq_wqe *)((char *)q + SAN_EPQ_SQ_OFF);
}
static inline struct san_epq_wqe *san_epq_rq(struct san_epq *q)
{
    return (struct san_epq_wqe *)((char *)q + SAN_EPQ_RQ_OFF);
}
static inline struct san_epq_cqe *san_epq_cq(struct san_epq *q)
{
    return (struct san_epq_cqe *)((char *)q + SAN_EPQ_CQ_OFF);
}

#endif
