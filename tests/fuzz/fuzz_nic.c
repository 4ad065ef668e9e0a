/* Fuzz target: the NIC engine's reading of a client's own queues. A connected pair of endpoints
 * (the engine driven by hand, no threads) gets its send and receive queues and its client-owned
 * indexes filled from the input: opcodes, flags, piece counts, addresses, lengths and keys, each
 * key either a real one of the pair (A's lkey, B's lkey, B's rkey), a third party's real key, or
 * garbage; B's buffer is proxy memory (a backed registration: the engine's direct copies), A's and
 * C's are pages. Then the engine runs. Whatever the input, nothing crashes, every completion
 * carries a status from the documented set, and the third party's registered buffer is never
 * written. */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "../unit/nic_test.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define BUF (64 * 1024)

static struct {
    struct san_machine *m;
    struct san_dma_adapter *adapter;
    struct san_regtab *reg;
    struct san_nic *nic;
    struct san_regtab_set sa, sb, sc;
    struct san_page_owner self;
    char *abuf, *bbuf, *cbuf;
    uint32_t alkey, blkey, brkey, clkey, crkey;
    bool ready;
} f;

static void setup(void)
{
    struct san_nic_net net = {.prefix = 0};
    struct san_nic_config nc = {
        .nets = &net, .nr_nets = 1, .backlog_max = 4, .max_length = 1 << 20, .manual = true};
    uint32_t refs;
    if (nic_test_create(256u << 20, &nc, &f.m, &f.adapter, &f.reg, &f.nic))
        abort();
    f.self = nic_test_self();
    san_regtab_set_init(&f.sa, &f.self);
    san_regtab_set_init(&f.sb, &f.self);
    san_regtab_set_init(&f.sc, &f.self);
    f.abuf = mmap(NULL, 3 * BUF, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (f.abuf == MAP_FAILED)
        abort();
    f.cbuf = f.abuf + 2 * BUF;
    memset(f.abuf, 0x11, 3 * BUF);
    /* B's buffer is proxy memory: the engine copies it directly (to and from A's and C's pages). */
    san_paddr_t bpa;
    if (san_alloc_contiguous(f.m, BUF, 0, UINT64_MAX, 0, SAN_CACHED, (void **)&f.bbuf) ||
        san_get_physical_address(f.m, f.bbuf, &bpa))
        abort();
    memset(f.bbuf, 0x11, BUF);
    struct san_regtab_backing proxy = {.pa = bpa};
    uint32_t unused;
    if (san_regtab_register(f.reg, &f.sa, (uintptr_t)f.abuf, BUF, SAN_MEM_READWRITE, false, NULL,
                            &f.alkey, &unused, &refs) ||
        san_regtab_register_backed(f.reg, &f.sb, (uintptr_t)f.bbuf, BUF, SAN_MEM_READWRITE, true,
                                   NULL, &proxy, &f.blkey, &f.brkey, &refs) ||
        san_regtab_register(f.reg, &f.sc, (uintptr_t)f.cbuf, BUF, SAN_MEM_READWRITE, true, NULL,
                            &f.clkey, &f.crkey, &refs))
        abort();
    f.ready = true;
}

static uint32_t pick_key(uint8_t b, uint32_t garbage)
{
    switch (b % 6) {
    case 0:
        return f.alkey;
    case 1:
        return f.blkey;
    case 2:
        return f.brkey;
    case 3:
        return f.clkey;
    case 4:
        return f.crkey;
    default:
        return garbage;
    }
}

static uint64_t pick_va(uint8_t b, uint64_t garbage)
{
    char *base = b % 4 == 0 ? f.abuf : b % 4 == 1 ? f.bbuf : b % 4 == 2 ? f.cbuf : NULL;
    return base ? (uintptr_t)base + garbage % (BUF + 64) : garbage;
}

/* An entry from 24 input bytes: mostly plausible (keys with addresses inside their own buffers,
 * small lengths), so that the checks past the first are reached, sometimes anything. */
static void fill(struct san_epq_wqe *w, const uint8_t *d)
{
    uint64_t g;
    memcpy(&g, d + 8, sizeof(g));
    memset(w, 0, sizeof(*w));
    w->wr_id = d[0];
    w->opcode = d[1] & 0x80 ? d[1] % 7 : 1 + d[1] % 4;
    w->flags = d[2] & 0x80 ? d[2] : d[2] & 1;
    w->nsge = d[3] & 0x80 ? d[3] % 6 : 1 + d[3] % 4;
    /* The remote side: the peer's registration, the third party's, or garbage. */
    switch (d[4] % 4) {
    case 0:
    case 1:
        w->rkey = f.brkey;
        w->remote_va = (uintptr_t)f.bbuf + (uint64_t)d[5] * 256;
        break;
    case 2:
        w->rkey = f.crkey;
        w->remote_va = (uintptr_t)f.cbuf + (uint64_t)d[5] * 256;
        break;
    default:
        w->rkey = pick_key(d[5], (uint32_t)g);
        w->remote_va = pick_va(d[5] >> 3, g);
    }
    for (unsigned i = 0; i < SAN_EPQ_SGE; i++) {
        uint8_t c = d[6 + i];
        uint32_t len = (uint32_t)d[16 + i] * 64 + (d[20 + (i & 3)] & 63);
        if ((c & 3) != 3) { /* the poster's own buffer, or the receiver's for receives */
            bool b_side = c & 4;
            w->sge[i].lkey = b_side ? f.blkey : f.alkey;
            w->sge[i].va = (uintptr_t)(b_side ? f.bbuf : f.abuf) + (uint64_t)(c >> 3) * 1024;
            w->sge[i].len = len;
        } else {
            w->sge[i].lkey = pick_key(c >> 2, (uint32_t)(g >> 7));
            w->sge[i].va = pick_va(c >> 4, g >> i);
            w->sge[i].len = (uint32_t)(g >> (8 * i));
        }
    }
}

static bool known_status(int32_t s)
{
    return s == 0 || s == -EFAULT || s == -EACCES || s == -EMSGSIZE || s == -ECONNRESET ||
           s == -ECANCELED || s == -EINVAL;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!f.ready)
        setup();
    struct san_nic_listener *l;
    struct san_nic_ep *a, *b;
    struct san_nic_addr addr = {.ip = {[10] = 0xff, [11] = 0xff, [12] = 127, [15] = 1}, .port = 9};
    if (san_nic_listen(f.nic, NULL, &addr, 1, &l) ||
        san_nic_connect(f.nic, NULL, &f.sa, &addr, &a) || san_nic_accept(l, NULL, &f.sb, &b))
        abort();
    san_nic_listener_close(l);
    struct san_nic_pair *p = a->pair;
    memset(f.cbuf, 0x33, BUF);

    /* The input: a header byte, then entries of 24 bytes for A's send queue, A's receive queue
     * and B's receive queue; the header's high bits may make A's tail lie. */
    uint8_t hdr = size ? data[0] : 0;
    const uint8_t *d = data + (size ? 1 : 0);
    size_t left = size ? size - 1 : 0;
    unsigned n = 0;
    while (left >= 24 && n < 48) {
        struct san_epq_wqe w;
        fill(&w, d);
        struct san_nic_ep *ep = n % 3 == 2 ? b : a;
        bool recv = n % 3 != 0;
        struct san_epq_wqe *ring = recv ? san_epq_rq(ep->q) : san_epq_sq(ep->q);
        _Atomic uint32_t *tail = recv ? &ep->q->rq_tail : &ep->q->sq_tail;
        uint32_t t = atomic_load(tail);
        ring[t & (SAN_EPQ_SQ - 1)] = w;
        atomic_store(tail, t + 1);
        d += 24;
        left -= 24;
        n++;
    }
    if (hdr & 0x80)
        atomic_store(&a->q->sq_tail, atomic_load(&a->q->sq_tail) + (hdr & 0x7f) * 3);
    if (hdr & 0x40)
        atomic_store(&a->q->cq_head, (uint32_t)hdr << 20);
    for (int i = 0; i < 64; i++) {
        if (san_nic_step(p) <= 0)
            break;
        /* The clients take their completions, as they would. */
        for (int s = 0; s < 2; s++) {
            struct san_nic_ep *ep = s ? b : a;
            uint32_t head = atomic_load(&ep->q->cq_head), tail = atomic_load(&ep->q->cq_tail);
            for (; head != tail && tail - head <= SAN_EPQ_CQ; head++)
                if (!known_status(san_epq_cq(ep->q)[head & (SAN_EPQ_CQ - 1)].status))
                    abort();
            atomic_store(&ep->q->cq_head, tail);
        }
    }
    for (size_t i = 0; i < BUF; i++)
        if (f.cbuf[i] != 0x33)
            abort(); /* a third party's memory was written */
    san_nic_ep_close(a);
    san_nic_ep_close(b);
    while (san_nic_step(p) >= 0) {
    }
    return 0;
}
