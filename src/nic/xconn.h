/* Endpoints across hosts, inside the NIC: a connection's state, shared by xconn.c (its life, its
 * thread, the loop's and the transport's calls) and xops.c (what the connection does with its
 * endpoint's requests and the peer's messages). Not for other modules: nic.h is the interface.
 *
 * Everything but the inbox (lock), the reset flag and the wake word is the connection thread's,
 * under its run lock; a stub's fate is decided under nic->xlock. */
#ifndef SAN_NIC_XCONN_H
#define SAN_NIC_XCONN_H

#include "nic/nic.h"

#define INBOX_MAX (2 * SAN_XMSG_WINDOW + 2 * SAN_EPQ_RQ) /* messages a peer may have waiting */

enum phase { X_PENDING, X_CONNECTING, X_RUNNING };

struct xin {
    struct xin *next;
    struct san_xmsg m;
    _Alignas(8) uint8_t data[];
};

#define SAN_XCONN_PIPE  16 /* requests of one endpoint in flight at a time */
#define SAN_XCONN_READS 4  /* of them reads not yet answered in full: the target holds as many */

/* A read of the peer's, as the target answers it. */
struct xread {
    uint64_t seq, va, total;
    uint32_t rkey;
    int32_t status; /* refused: the answer is this status alone */
};

/* One of this endpoint's requests in flight. */
struct xop {
    struct san_epq_wqe w;
    uint64_t seq, total, sent, got;
    int32_t status; /* it failed here part way: completes with this when its turn comes */
};

struct san_xconn {
    struct san_nic *nic;
    struct san_list node; /* nic->xconns */
    uint64_t id;
    _Atomic uint64_t peer_conn; /* the peer's number for it; 0 until accepted */
    unsigned link;
    uint64_t session, host;
    struct san_nic_ep *ep;   /* NULL while a stub */
    struct san_nic_ep *stub; /* the backlog entry while pending */
    enum phase phase;        /* pending: under xlock; after: the thread's */
    bool acceptor;
    bool peer_gone; /* pending: the connector gave up (under xlock) */
    pthread_mutex_t lock, run;
    struct xin *in_head, **in_tail;
    unsigned in_count;
    bool overflow;
    _Atomic uint32_t wake, sleeping;
    _Atomic bool reset;
    uint8_t *buf; /* SAN_XMSG_CHUNK */
    /* under the run lock: the first message (CONNECT or ACCEPT) went, so the transport's thread
     * may run the connection (san_nic_xdeliver) */
    bool greeted;
    /* the thread's (or the transport thread's, holding the run lock) */
    bool dead; /* reset: nothing more goes to the peer */
    bool peer_closed;
    int32_t peer_err; /* the peer endpoint's error (STATE) */
    bool state_sent;
    uint32_t credits;      /* data messages we may still send */
    uint32_t to_return;    /* the peer's data messages taken, not yet credited back */
    uint32_t recv_credits; /* the peer's posted receives we may still consume */
    uint32_t rq_adv;       /* our receive queue advertised up to here */
    uint32_t seen[4];      /* sq_tail, rq_tail, cq_head, wake when the last pass found nothing */
    /* our requests in flight (xops.c) */
    struct xop ops[SAN_XCONN_PIPE];
    uint32_t op_head, op_ship, op_tail;
    uint64_t out_seq;
    uint64_t done_seq;    /* requests up to here have ended: late answers of them are dropped */
    int32_t flush_status; /* after a failure: what the rest of the ring completes with */
    bool ship_stopped;    /* a request failed part way here: nothing after it goes */
    /* the peer's request in progress here */
    uint64_t in_seq;
    uint32_t in_op;
    bool in_failed;
    bool in_dead; /* a request of the peer failed (or it gave one up): the later ones are dropped */
    uint64_t in_total, in_got, in_va, in_host;
    uint32_t in_rkey;
    struct san_epq_wqe in_recv;
    /* the peer's RDMA read being answered, and those that came after it, in order */
    bool rd_busy;
    struct xread rd, rd_next[SAN_XCONN_READS - 1];
    uint32_t rd_queued;
    uint64_t rd_sent;
};

enum { TAKEN, STALL }; /* what handling a message did: STALL leaves it first in the inbox */

/* xconn.c */
void san_xconn_fail_all(struct san_xconn *xc);
void san_xconn_violation(struct san_xconn *xc);
void san_xconn_send_or_fail(struct san_xconn *xc, struct san_xmsg *m, const void *payload,
                            size_t len);
/* Sends m with len payload bytes taken from byte off of the request pc (n pieces, uses held by
 * the caller) straight into the message (the transport's send_fill). 0; -EFAULT: the pieces
 * failed, nothing went (the caller aborts the request); else the connection failed (as
 * san_xconn_send_or_fail). */
int san_xconn_send_from(struct san_xconn *xc, struct san_xmsg *m, const struct san_nic_piece *pc,
                        unsigned n, uint64_t off, size_t len);
void san_xconn_done(struct san_xconn *xc, uint64_t seq, int32_t status, uint64_t total);

/* xops.c */
int san_xconn_handle(struct san_xconn *xc, const struct san_xmsg *m, const void *data);
bool san_xconn_start(struct san_xconn *xc);
bool san_xconn_ship(struct san_xconn *xc);
bool san_xconn_answer(struct san_xconn *xc);
/* lazy: data messages taken are credited back only once a quarter of the window is (the
 * transport's thread runs passes message by message: a credit for each would double them). */
bool san_xconn_credit(struct san_xconn *xc, bool lazy);
/* Whether none of this endpoint's requests is in flight. */
bool san_xconn_idle(const struct san_xconn *xc);
/* Completes what must complete without an answer (a request that failed here, the flushed ones),
 * as the completion queue has room. Whether it completed any. */
bool san_xconn_flush_ring(struct san_xconn *xc);
/* A receive the peer's send was filling, when the connection ends: completed with -ECONNRESET
 * (every receive taken completes), once the completion queue has room. Whether it was. */
bool san_xconn_abandon(struct san_xconn *xc);

#endif
