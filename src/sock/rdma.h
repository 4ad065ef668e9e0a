/* RDMA read and write modes of the sockets switch (docs/sock.md, "Large writes by RDMA"): the
 * state one connection keeps for them and the steps the session takes, under the connection's lock.
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
#define RDMA_NBUF 4u /* staging buffers per sender, sinks per receiver (a power of two) */
#endif
#ifndef RDMA_CHUNK
#define RDMA_CHUNK (1024u << 10) /* bytes of each: the largest offer (NEGOTIATE's max_rdma) */
#endif
#define RDMA_TAG 0x200u /* wr_id of a read: RDMA_TAG | sink */

/* Write mode (receiver-initiated; announced only with SANSOCK_RDMA_WRITE). Receiver: a blocking
 * receive with nothing to read and more than the threshold left to fill advertises a sink: its
 * staging sink (proxy memory registered for remote write once), or the program's buffer
 * registered for remote write through libsan's cache (RDMA_SINK: descriptor, length, cookie, and
 * pos: the stream bytes received so far). Sender: holds at most one sink; if the next byte it sends
 * is at pos (it sent nothing the receiver had not received when it advertised), its next send goes
 * into the sink (RDMA writes from WRITE_NBUF staging buffers, then SINK_DONE with the bytes: the
 * NIC makes the data visible before the later message); else, and before SHUTDOWN, it answers
 * SINK_DONE with 0 bytes. The program's buffer is reachable by the peer only while the sink is out:
 * the receive returns only after SINK_DONE, or after it deregistered the sink (then the peer's late
 * write fails at the NIC); a staging sink is copied out after SINK_DONE. A SINK while one is held,
 * a cookie out of order, a SINK_DONE for no sink, with more bytes than the sink, after other stream
 * bytes arrived, or bytes for an abandoned sink: -EPROTO. */
#ifndef WRITE_NBUF
#define WRITE_NBUF 4u /* staging buffers of RDMA_CHUNK bytes a writer has in flight */
#endif
#define SINK_MAX   (4u << 20) /* bytes of the program's buffer one sink registers at most */
#define SINK_STAGE (2u << 20) /* bytes of a staging sink (proxy memory, registered once) */
#define WRITE_TAG  0x400u     /* wr_id of a write: WRITE_TAG | staging buffer */

enum sansock_sink_state {
    SINK_IDLE = 0, /* none out */
    SINK_OUT,      /* advertised, registered, not answered */
    SINK_FILLED,   /* SINK_DONE with bytes: the owner takes them */
    SINK_DECLINED, /* SINK_DONE with 0 bytes */
    SINK_DOOMED,   /* given up by the owner (deregistered): a SINK_DONE of 0 bytes is due */
};

struct sansock_rdma_stage {
    struct san_mr *mr;
    uint8_t desc[SANSOCK_DESC_MAX];
    uint32_t desc_len;
    uint32_t len; /* bytes offered from it (busy until DONE) */
};

struct sansock_rdma_sink {
    uint32_t len;       /* bytes of the transfer */
    bool fetched;       /* the read completed */
    const uint8_t *src; /* or the bytes are in the peer's staging, mapped here (not in sink_mem) */
};

/* A staging buffer of a same-host peer, mapped (san_rdma_map): its descriptor and its bytes. */
struct sansock_rdma_mapped {
    uint8_t desc[SANSOCK_DESC_MAX];
    uint32_t desc_len;
    const uint8_t *bytes;
    size_t len;
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
    /* share: stage in SHARED memory; map: read a peer's through a mapping of it (SANSOCK_MAP) */
    bool share, map;
    /* the peer's staging buffers mapped so far; no_map: it cannot be (another host, not shared) */
    struct sansock_rdma_mapped mapped[RDMA_NBUF];
    uint32_t nr_mapped;
    bool no_map;
    uint64_t mapped_bytes; /* received through a mapping (a counter for tests and docs) */

    uint64_t tx_pos, rx_pos; /* stream bytes sent, and received (every mode) */
    /* write mode, receiver: the sink this side advertised */
    uint8_t sink_state; /* enum sansock_sink_state */
    struct san_mr *ksink_mr;
    uint64_t ksink_pos;
    uint32_t ksink_len, ksink_bytes;
    uint32_t sinks_out;     /* cookies advertised (the current one is sinks_out - 1) */
    uint32_t sinks_written; /* sinks the peer filled (a counter for tests and docs) */
    bool ksink_staged;      /* the sink out is the staging sink, not the program's buffer */
    uint8_t *ssink_mem;     /* the staging sink: SINK_STAGE bytes, or NULL until the first */
    struct san_mr *ssink_mr;
    uint8_t ssink_desc[SANSOCK_DESC_MAX];
    uint32_t ssink_desc_len;
    /* write mode, sender: the peer's sink held */
    bool psink_held;
    struct sansock_wire_sink psink;
    uint32_t psink_filled;
    uint32_t psinks_seen; /* the next cookie the peer must use */
    bool psink_due;       /* a send wrote into the held sink: SINK_DONE is due */
    uint8_t *wstage_mem;  /* WRITE_NBUF * RDMA_CHUNK, or NULL until the first write */
    struct san_mr *wstage_mr;
    uint32_t wstage_busy; /* bit i: staging buffer i has a write in flight */
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

/* An RDMA_OFFER (decoded: total within RDMA_CHUNK): the next sink is the peer's staging buffer
 * mapped here when the peer is on this host and shares it (map; fetched at once), else its
 * inline bytes go into the next sink and the read of the rest is posted on ep. 0 and the sink in
 * *sink; -EPROTO for an offer out of order, with no sink free, or naming nothing of the peer's,
 * -ENOBUFS without sink memory, or the read's posting error. */
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

/* Write mode, receiver. Registers len bytes at buf (at most SINK_MAX; the caller checked
 * sink_state is SINK_IDLE) and fills k for the SINK the caller sends: 0, or -ENOBUFS when the
 * registration fails (the receive then waits as in read mode). staged: the sink is instead this
 * side's staging sink (proxy memory registered once, allocated at the first; at most SINK_STAGE
 * of len), which the owner copies out of. */
int sansock_rdma_sink_open(struct sansock_rdma *r, struct san_ctx *ctx, void *buf, size_t len,
                           bool staged, struct sansock_wire_sink *k);
/* The peer's SINK_DONE: 0, or -EPROTO (no sink out, another cookie, a status, more bytes than the
 * sink, stream bytes arrived since it was advertised, or bytes for an abandoned sink). */
int sansock_rdma_on_sink_done(struct sansock_rdma *r, const struct sansock_wire_done *d);
/* The owner of an answered sink (SINK_FILLED or SINK_DECLINED) takes its bytes and deregisters it:
 * the bytes written (0 when declined); *staged: where they are for the owner to copy (a staging
 * sink), or NULL (they are in the program's buffer already). */
uint32_t sansock_rdma_sink_take(struct sansock_rdma *r, const uint8_t **staged);
/* The owner gives up a sink still out (other stream bytes arrived, end of file, SHUT_RD, the SINK
 * could not be sent): deregistered at once, so the program's buffer is no longer reachable. */
void sansock_rdma_sink_abandon(struct sansock_rdma *r);

/* Write mode, sender. The peer's SINK (decoded): 0, or -EPROTO (one held already, a cookie out of
 * order). */
int sansock_rdma_on_sink(struct sansock_rdma *r, const struct sansock_wire_sink *k);
/* Whether the held sink may take the stream's next bytes (its position, plus what was written
 * into it, is ours; it has room). */
bool sansock_rdma_sink_usable(const struct sansock_rdma *r);
/* Room left in the held sink for this write: at most RDMA_CHUNK. */
size_t sansock_rdma_sink_room(const struct sansock_rdma *r, size_t len);
/* A free write staging buffer (allocated and registered at the first call): 0 and its index, or
 * -EAGAIN when all have writes in flight, -ENOBUFS when the memory cannot be had. */
int sansock_rdma_write_buf(struct sansock_rdma *r, struct san_ctx *ctx, uint32_t *idx,
                           uint8_t **buf);
/* Posts the write of len bytes of staging buffer idx into the held sink: 0 or the post's error. */
int sansock_rdma_write_post(struct sansock_rdma *r, struct san_ep *ep, uint32_t idx, uint32_t len);
/* The write from staging buffer idx completed. */
void sansock_rdma_on_write(struct sansock_rdma *r, uint32_t idx);
/* The SINK_DONE answering the held sink (the bytes written into it, 0 if none); it is no longer
 * held. */
void sansock_rdma_sink_answer(struct sansock_rdma *r, struct sansock_wire_done *d);

/* Releases the buffers (after the endpoint is closed: no read is in flight any more). */
void sansock_rdma_free(struct sansock_rdma *r, struct san_ctx *ctx);

#endif
