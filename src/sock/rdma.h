/* RDMA read mode of the sockets switch (docs/sock.md, "Large writes by RDMA"): the state one
 * connection keeps for it and the steps the session takes, under the connection's lock.
 *
 * Sender: a write larger than the threshold is copied into one of RDMA_NBUF staging buffers of
 * proxy memory, each registered for RDMA once (libsan's registration cache), and offered
 * (RDMA_OFFER: the buffer's descriptor, the length, a cookie); the buffer is busy until the
 * peer's DONE for that cookie. Receiver: an offer is read at once (san_rdma_read) into one of
 * RDMA_NBUF sinks of its own proxy memory, which the program then reads like a receive slot;
 * DONE goes back when it has read all of it. Cookies count offers from 0 in each direction, and
 * cookie k uses buffer k % RDMA_NBUF on both sides, so a sender never has more offers out than
 * the receiver has sinks. A peer that breaks any of this (a cookie out of order, an offer while
 * its sinks are full, a DONE for nothing offered or with other bytes, a descriptor the NIC
 * refuses) gets its connection reset: the NIC checks every byte the read touches against the
 * peer's registration and the sink's length, so a lie never reaches outside either buffer. */
#ifndef SANSOCK_RDMA_H
#define SANSOCK_RDMA_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <san/san.h>

#include "sock/wire.h"

#ifndef RDMA_NBUF
#define RDMA_NBUF 8u /* staging buffers per sender, sinks per receiver (a power of two) */
#endif
#ifndef RDMA_CHUNK
#define RDMA_CHUNK (256u << 10) /* bytes of each: the largest offer (NEGOTIATE's max_rdma) */
#endif
#define RDMA_TAG 0x200u /* wr_id of a read: RDMA_TAG | sink */

struct sansock_rdma_stage {
    struct san_mr *mr;
    uint8_t desc[SANSOCK_DESC_MAX];
    uint32_t desc_len;
    uint32_t len; /* bytes offered from it (busy until DONE) */
};

struct sansock_rdma_sink {
    uint32_t len; /* bytes of the transfer */
    bool fetched; /* the read completed */
};

struct sansock_rdma {
    /* sender */
    uint8_t *stage_mem; /* RDMA_NBUF * RDMA_CHUNK, or NULL until the first offer */
    struct sansock_rdma_stage stage[RDMA_NBUF];
    uint32_t tx_next, tx_acked; /* cookies offered, and DONE'd */
    /* receiver */
    uint8_t *sink_mem; /* RDMA_NBUF * RDMA_CHUNK, or NULL until the first offer arrives */
    struct san_mr *sink_mr;
    struct sansock_rdma_sink sink[RDMA_NBUF];
    uint32_t rx_next, rx_done; /* cookies received, and DONE'd */
    uint32_t dones_due;        /* transfers read by the program, DONE not sent yet */
    uint32_t reads_posted;
};

/* Whether a sender may offer now (a staging buffer is free). */
bool sansock_rdma_can_offer(const struct sansock_rdma *r);
/* Offers the peer has not DONE'd yet. */
uint32_t sansock_rdma_outstanding(const struct sansock_rdma *r);
/* How many of len bytes the next offer takes: at most RDMA_CHUNK and the peer's max_rdma. */
size_t sansock_rdma_room(const struct sansock_rdma *r, size_t len, size_t peer_max);
/* The next staging buffer (allocated and registered at the first call), for the caller to copy
 * the offer's bytes into: 0, or -ENOBUFS when the memory cannot be allocated or registered. The
 * caller checked sansock_rdma_can_offer. */
int sansock_rdma_stage_buf(struct sansock_rdma *r, struct san_ctx *ctx, uint8_t **buf);
/* Records the offer of len bytes in that buffer and fills offer; the caller sends it (a failure
 * to send resets the connection). */
void sansock_rdma_staged(struct sansock_rdma *r, uint32_t len, struct sansock_wire_rdma *offer);
/* Bytes offered and not DONE'd yet. */
uint64_t sansock_rdma_outstanding_bytes(const struct sansock_rdma *r);
/* The peer's DONE: 0, or -EPROTO for one that matches no offer (cookie, bytes, a status). */
int sansock_rdma_on_done(struct sansock_rdma *r, const struct sansock_wire_done *d);

/* An RDMA_OFFER (decoded: total within RDMA_CHUNK): puts its inline bytes into the next sink and
 * posts the read of the rest on ep. 0 and the sink in *sink; -EPROTO for an offer out of order
 * or with no sink free, -ENOBUFS without sink memory, or the read's posting error. */
int sansock_rdma_on_offer(struct sansock_rdma *r, struct san_ctx *ctx, struct san_ep *ep,
                          const struct sansock_msg *m, uint32_t *sink);
/* The completion of the read into sink (status 0 or the NIC's error). */
void sansock_rdma_on_read(struct sansock_rdma *r, uint32_t sink, int32_t status);
bool sansock_rdma_fetched(const struct sansock_rdma *r, uint32_t sink);
const uint8_t *sansock_rdma_sink_data(const struct sansock_rdma *r, uint32_t sink);
/* The program has read all of sink's transfer: a DONE is due. */
void sansock_rdma_consumed(struct sansock_rdma *r, uint32_t sink);
/* The next DONE due (dones_due > 0), counted as sent. */
void sansock_rdma_next_done(struct sansock_rdma *r, struct sansock_wire_done *d);

/* Releases the buffers (after the endpoint is closed: no read is in flight any more). */
void sansock_rdma_free(struct sansock_rdma *r, struct san_ctx *ctx);

/* Serialises the switch's buffer allocation plus registration against deregistration plus
 * release (connections' buffers, RDMA staging buffers and sinks): libsan's registration cache
 * lets a range freed and deregistered in one thread meet a new allocation registered in another
 * (-EFAULT/-EACCES). Taken after a connection's lock, never before. */
void sansock_buffers_lock(void);
void sansock_buffers_unlock(void);

#endif
