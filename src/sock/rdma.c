/* RDMA read and write modes of the sockets switch (rdma.h). No locking of its own: the
 * connection's lock covers every call. Staging memory comes from san_alloc (proxy memory: the NIC
 * moves it with one memcpy, where a program's own pages cost it a copy through the process) on the
 * first large write or the first offer, so connections that never carry one never pay for it. The
 * read-mode staging is SHARED memory: a reader on the same host maps it (san_rdma_map) and the
 * program's reads copy straight out of it, with no copy by the NIC. A write-mode sink is the
 * staging sink, or the program's own receive buffer registered through libsan's cache for the time
 * the sink is out (the data lands where the program reads it, with no copy out of a sink, for two
 * round trips to the daemon: exposing and revoking its key). */
#include "sock/rdma.h"

#include <errno.h>
#include <string.h>

bool sansock_rdma_can_offer(const struct sansock_rdma *r)
{
    return r->tx_next - r->tx_acked < RDMA_NBUF;
}

uint32_t sansock_rdma_outstanding(const struct sansock_rdma *r)
{
    return r->tx_next - r->tx_acked;
}

static int stage_setup_buffers(struct sansock_rdma *r, struct san_ctx *ctx);

static int stage_setup(struct sansock_rdma *r, struct san_ctx *ctx)
{
    int err = stage_setup_buffers(r, ctx);
    return err;
}

static int stage_setup_buffers(struct sansock_rdma *r, struct san_ctx *ctx)
{
    void *mem;
    /* SHARED, so that a reader on this host may map it (san_rdma_map): it only ever holds this
     * connection's bytes, which the peer may see. Without (over the daemon's limit): plain. */
    size_t bytes = (size_t)RDMA_NBUF * RDMA_CHUNK;
    if ((!r->share || san_alloc(ctx, bytes, SAN_ALLOC_SHARED, &mem)) &&
        san_alloc(ctx, bytes, 0, &mem))
        return -ENOBUFS;
    for (uint32_t i = 0; i < RDMA_NBUF; i++) {
        struct sansock_rdma_stage *s = &r->stage[i];
        size_t dl = sizeof(s->desc);
        if (san_register_rdma(ctx, (uint8_t *)mem + (size_t)i * RDMA_CHUNK, RDMA_CHUNK,
                              SAN_MEM_READ, s->desc, &dl, &s->mr)) {
            while (i--)
                san_deregister(r->stage[i].mr);
            san_free(ctx, mem);
            return -ENOBUFS;
        }
        s->desc_len = (uint32_t)dl;
    }
    r->stage_mem = mem;
    return 0;
}

size_t sansock_rdma_room(const struct sansock_rdma *r, size_t len, size_t peer_max)
{
    (void)r;
    size_t n = len < peer_max ? len : peer_max;
    return n < RDMA_CHUNK ? n : RDMA_CHUNK;
}

int sansock_rdma_stage_buf(struct sansock_rdma *r, struct san_ctx *ctx, uint8_t **buf)
{
    if (!r->stage_mem && stage_setup(r, ctx))
        return -ENOBUFS;
    *buf = r->stage_mem + (size_t)(r->tx_next % RDMA_NBUF) * RDMA_CHUNK;
    return 0;
}

void sansock_rdma_staged(struct sansock_rdma *r, uint32_t len, struct sansock_wire_rdma *offer)
{
    struct sansock_rdma_stage *s = &r->stage[r->tx_next % RDMA_NBUF];
    s->len = len;
    *offer =
        (struct sansock_wire_rdma){.total_len = len, .cookie = r->tx_next, .desc_len = s->desc_len};
    memcpy(offer->desc, s->desc, sizeof(offer->desc));
    r->tx_next++;
    r->tx_pos += len;
}

uint64_t sansock_rdma_outstanding_bytes(const struct sansock_rdma *r)
{
    uint64_t n = 0;
    for (uint32_t k = r->tx_acked; k != r->tx_next; k++)
        n += r->stage[k % RDMA_NBUF].len;
    return n;
}

int sansock_rdma_on_done(struct sansock_rdma *r, const struct sansock_wire_done *d)
{
    if (r->tx_acked == r->tx_next || d->cookie != r->tx_acked || d->status ||
        d->bytes != r->stage[r->tx_acked % RDMA_NBUF].len)
        return -EPROTO;
    r->tx_acked++;
    return 0;
}

/* The bytes of offer o through a mapping of the peer's staging buffer: 0 and *src, 1 when this
 * connection cannot map (the peer is on another host, or its staging is not shared), -EPROTO
 * when the descriptor names nothing of the peer's (as the read of it would fail). */
static int mapped_src(struct sansock_rdma *r, struct san_ep *ep, const struct sansock_wire_rdma *o,
                      const uint8_t **src)
{
    for (uint32_t i = 0; i < r->nr_mapped; i++) {
        const struct sansock_rdma_mapped *p = &r->mapped[i];
        if (p->desc_len == o->desc_len && !memcmp(p->desc, o->desc, o->desc_len)) {
            if (o->total_len > p->len)
                return -EPROTO;
            *src = p->bytes;
            return 0;
        }
    }
    if (r->nr_mapped == RDMA_NBUF) /* a peer that offers more buffers than it has */
        return 1;
    struct sansock_rdma_mapped *p = &r->mapped[r->nr_mapped];
    const void *bytes;
    int err = san_rdma_map(ep, o->desc, o->desc_len, &bytes, &p->len);
    if (err == -EACCES || err == -EINVAL)
        return -EPROTO;
    if (err) {
        r->no_map = true;
        return 1;
    }
    if (o->total_len > p->len)
        return -EPROTO;
    memcpy(p->desc, o->desc, o->desc_len);
    p->desc_len = o->desc_len;
    p->bytes = bytes;
    r->nr_mapped++;
    *src = p->bytes;
    return 0;
}

int sansock_rdma_on_offer(struct sansock_rdma *r, struct san_ctx *ctx, struct san_ep *ep,
                          const struct sansock_msg *m, uint32_t *sink)
{
    const struct sansock_wire_rdma *o = &m->u.rdma;
    if (o->cookie != r->rx_next || r->rx_next - r->rx_done >= RDMA_NBUF ||
        o->total_len > RDMA_CHUNK)
        return -EPROTO;
    /* On one host the bytes are read where the peer staged them, with no copy by the NIC: the
     * program's read copies them out, and the DONE after it frees the staging buffer. */
    const uint8_t *src;
    int mapped = r->map && !r->no_map && !m->payload_len && ep ? mapped_src(r, ep, o, &src) : 1;
    if (mapped < 0)
        return mapped;
    if (!mapped) {
        uint32_t k = r->rx_next % RDMA_NBUF;
        r->sink[k] =
            (struct sansock_rdma_sink){.len = (uint32_t)o->total_len, .fetched = true, .src = src};
        r->rx_pos += o->total_len;
        r->mapped_bytes += o->total_len;
        r->rx_next++;
        *sink = k;
        return 0;
    }
    if (!r->sink_mem) {
        void *mem;
        int err = -ENOBUFS;
        if (!san_alloc(ctx, (size_t)RDMA_NBUF * RDMA_CHUNK, 0, &mem)) {
            if (!san_register(ctx, mem, (size_t)RDMA_NBUF * RDMA_CHUNK, SAN_MEM_READWRITE,
                              &r->sink_mr))
                err = 0;
            else
                san_free(ctx, mem);
        }
        if (err)
            return err;
        r->sink_mem = mem;
    }
    uint32_t k = r->rx_next % RDMA_NBUF;
    uint8_t *dst = r->sink_mem + (size_t)k * RDMA_CHUNK;
    /* The inline part is the transfer's first bytes (the decoder keeps it shorter than total). */
    memcpy(dst, m->payload, m->payload_len);
    struct san_sge sge = {.addr = dst + m->payload_len,
                          .length = (uint32_t)o->total_len - m->payload_len,
                          .lkey = san_mr_lkey(r->sink_mr)};
    int err = san_rdma_read(ep, RDMA_TAG | k, &sge, 1, o->desc, o->desc_len, m->payload_len, 0);
    if (err)
        return err;
    r->sink[k] = (struct sansock_rdma_sink){.len = (uint32_t)o->total_len};
    r->rx_pos += o->total_len;
    r->reads_posted++;
    r->rx_next++;
    *sink = k;
    return 0;
}

void sansock_rdma_on_read(struct sansock_rdma *r, uint32_t sink, int32_t status)
{
    r->reads_posted--;
    if (!status)
        r->sink[sink % RDMA_NBUF].fetched = true;
}

bool sansock_rdma_fetched(const struct sansock_rdma *r, uint32_t sink)
{
    return r->sink[sink % RDMA_NBUF].fetched;
}

const uint8_t *sansock_rdma_sink_data(const struct sansock_rdma *r, uint32_t sink)
{
    const struct sansock_rdma_sink *k = &r->sink[sink % RDMA_NBUF];
    return k->src ? k->src : r->sink_mem + (size_t)(sink % RDMA_NBUF) * RDMA_CHUNK;
}

void sansock_rdma_consumed(struct sansock_rdma *r, uint32_t sink)
{
    r->sink[sink % RDMA_NBUF].fetched = false;
    r->dones_due++;
}

void sansock_rdma_next_done(struct sansock_rdma *r, struct sansock_wire_done *d)
{
    *d = (struct sansock_wire_done){.cookie = r->rx_done,
                                    .bytes = r->sink[r->rx_done % RDMA_NBUF].len};
    r->rx_done++;
    r->dones_due--;
}

/* The staging sink, registered for remote write once: the peer may write into it whenever it
 * likes, which touches nothing but its own stream's bytes (placed only after a valid SINK_DONE). */
static int ssink_setup(struct sansock_rdma *r, struct san_ctx *ctx)
{
    void *mem;
    size_t dl = sizeof(r->ssink_desc);
    int err = 0;
    if (san_alloc(ctx, SINK_STAGE, 0, &mem))
        err = -ENOBUFS;
    else if (san_register_rdma(ctx, mem, SINK_STAGE, SAN_MEM_READWRITE, r->ssink_desc, &dl,
                               &r->ssink_mr)) {
        san_free(ctx, mem);
        err = -ENOBUFS;
    }
    if (err)
        return err;
    r->ssink_desc_len = (uint32_t)dl;
    r->ssink_mem = mem;
    return 0;
}

int sansock_rdma_sink_open(struct sansock_rdma *r, struct san_ctx *ctx, void *buf, size_t len,
                           bool staged, struct sansock_wire_sink *k)
{
    size_t cap = staged ? SINK_STAGE : SINK_MAX;
    if (len > cap)
        len = cap;
    *k = (struct sansock_wire_sink){.pos = r->rx_pos, .len = (uint32_t)len};
    size_t dl = sizeof(k->desc);
    r->ksink_mr = NULL;
    if (staged) {
        if (!r->ssink_mem && ssink_setup(r, ctx))
            return -ENOBUFS;
        memcpy(k->desc, r->ssink_desc, sizeof(k->desc));
        dl = r->ssink_desc_len;
    } else if (san_register_rdma(ctx, buf, len, SAN_MEM_WRITE, k->desc, &dl, &r->ksink_mr)) {
        /* Write-only: the peer may put bytes into the program's buffer, never read it. */
        return -ENOBUFS;
    }
    r->ksink_staged = staged;
    k->desc_len = (uint32_t)dl;
    k->cookie = r->sinks_out++;
    r->sink_state = SINK_OUT;
    r->ksink_pos = r->rx_pos;
    r->ksink_len = (uint32_t)len;
    r->ksink_bytes = 0;
    return 0;
}

static void sink_dereg(struct sansock_rdma *r)
{
    if (r->ksink_mr)
        san_deregister(r->ksink_mr); /* through the cache: the rkey is revoked all the same */
    r->ksink_mr = NULL;
}

int sansock_rdma_on_sink_done(struct sansock_rdma *r, const struct sansock_wire_done *d)
{
    bool out = r->sink_state == SINK_OUT, doomed = r->sink_state == SINK_DOOMED;
    if ((!out && !doomed) || d->cookie != r->sinks_out - 1 || d->status ||
        d->bytes > r->ksink_len || (d->bytes && (doomed || r->rx_pos != r->ksink_pos)))
        return -EPROTO;
    if (doomed) {
        r->sink_state = SINK_IDLE;
        return 0;
    }
    r->ksink_bytes = (uint32_t)d->bytes;
    r->rx_pos += d->bytes;
    r->sink_state = d->bytes ? SINK_FILLED : SINK_DECLINED;
    if (d->bytes)
        r->sinks_written++;
    return 0;
}

uint32_t sansock_rdma_sink_take(struct sansock_rdma *r, const uint8_t **staged)
{
    uint32_t n = r->sink_state == SINK_FILLED ? r->ksink_bytes : 0;
    *staged = r->ksink_staged ? r->ssink_mem : NULL;
    sink_dereg(r);
    r->sink_state = SINK_IDLE;
    return n;
}

void sansock_rdma_sink_abandon(struct sansock_rdma *r)
{
    sink_dereg(r);
    if (r->sink_state == SINK_OUT)
        r->sink_state = SINK_DOOMED;
    else if (r->sink_state != SINK_DOOMED)
        r->sink_state = SINK_IDLE;
}

int sansock_rdma_on_sink(struct sansock_rdma *r, const struct sansock_wire_sink *k)
{
    if (r->psink_held || k->cookie != r->psinks_seen)
        return -EPROTO;
    r->psink = *k;
    r->psink_held = true;
    r->psink_filled = 0;
    r->psinks_seen++;
    return 0;
}

bool sansock_rdma_sink_usable(const struct sansock_rdma *r)
{
    return r->psink_held && r->psink.pos + r->psink_filled == r->tx_pos &&
           r->psink_filled < r->psink.len;
}

size_t sansock_rdma_sink_room(const struct sansock_rdma *r, size_t len)
{
    size_t n = r->psink.len - r->psink_filled;
    n = n < len ? n : len;
    return n < RDMA_CHUNK ? n : RDMA_CHUNK;
}

int sansock_rdma_write_buf(struct sansock_rdma *r, struct san_ctx *ctx, uint32_t *idx,
                           uint8_t **buf)
{
    if (!r->wstage_mem) {
        void *mem;
        int err = 0;
        if (san_alloc(ctx, (size_t)WRITE_NBUF * RDMA_CHUNK, 0, &mem))
            err = -ENOBUFS;
        else if (san_register(ctx, mem, (size_t)WRITE_NBUF * RDMA_CHUNK, SAN_MEM_READ,
                              &r->wstage_mr)) {
            san_free(ctx, mem);
            err = -ENOBUFS;
        }
        if (err)
            return err;
        r->wstage_mem = mem;
    }
    uint32_t free_bits = ~r->wstage_busy & ((1u << WRITE_NBUF) - 1);
    if (!free_bits)
        return -EAGAIN;
    *idx = (uint32_t)__builtin_ctz(free_bits);
    *buf = r->wstage_mem + (size_t)*idx * RDMA_CHUNK;
    return 0;
}

int sansock_rdma_write_post(struct sansock_rdma *r, struct san_ep *ep, uint32_t idx, uint32_t len)
{
    struct san_sge sge = {.addr = r->wstage_mem + (size_t)idx * RDMA_CHUNK,
                          .length = len,
                          .lkey = san_mr_lkey(r->wstage_mr)};
    int err = ep ? san_rdma_write(ep, WRITE_TAG | idx, &sge, 1, r->psink.desc, r->psink.desc_len,
                                  r->psink_filled, 0)
                 : -ENOTCONN;
    if (err)
        return err;
    r->wstage_busy |= 1u << idx;
    r->psink_filled += len;
    r->tx_pos += len;
    return 0;
}

void sansock_rdma_on_write(struct sansock_rdma *r, uint32_t idx)
{
    r->wstage_busy &= ~(1u << (idx % WRITE_NBUF));
}

void sansock_rdma_sink_answer(struct sansock_rdma *r, struct sansock_wire_done *d)
{
    *d = (struct sansock_wire_done){.cookie = r->psink.cookie, .bytes = r->psink_filled};
    r->psink_held = false;
    r->psink_due = false;
    r->psink_filled = 0;
}

void sansock_rdma_free(struct sansock_rdma *r, struct san_ctx *ctx)
{
    sink_dereg(r);
    if (r->ssink_mem) {
        san_deregister(r->ssink_mr);
        san_free(ctx, r->ssink_mem);
    }
    if (r->wstage_mem) {
        san_deregister(r->wstage_mr);
        san_free(ctx, r->wstage_mem);
    }
    if (r->stage_mem) {
        for (uint32_t i = 0; i < RDMA_NBUF; i++)
            san_deregister(r->stage[i].mr);
        san_free(ctx, r->stage_mem);
    }
    if (r->sink_mem) {
        san_deregister(r->sink_mr);
        san_free(ctx, r->sink_mem);
    }
    memset(r, 0, sizeof(*r));
}
