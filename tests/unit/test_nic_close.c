/* nic/engine: an endpoint whose owner closed it is never touched again, not even by its peer's
 * requests. The owner may free what its receives and registrations name as soon as the close
 * returns, so a request of the peer that the engine takes after the close, but in the same pass
 * or before the closed side's turn, must fail with -ECONNRESET and move no byte: a send that
 * would land in a receive of the closed side (whose registration is gone), an RDMA write into
 * its still registered buffer, an RDMA read from it. Each case with the closed endpoint on
 * either side of the pair (the engine serves side 0 first). The engine is driven by hand. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>

#include <cmocka.h>

#include "nic_test.h"

#define BUF 4096

static struct {
    struct san_machine *m;
    struct san_dma_adapter *adapter;
    struct san_regtab *reg;
    struct san_nic *nic;
    struct san_page_owner self;
} f;

static int setup(void **state)
{
    (void)state;
    struct san_nic_net net = {.prefix = 0};
    struct san_nic_config nc = {
        .nets = &net, .nr_nets = 1, .backlog_max = 4, .max_length = 1 << 20, .manual = true};
    assert_int_equal(nic_test_create(64u << 20, &nc, &f.m, &f.adapter, &f.reg, &f.nic), 0);
    f.self = nic_test_self();
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    nic_test_destroy(f.m, f.adapter, f.reg, f.nic);
    return 0;
}

/* One side of a pair: its endpoint, its client's registrations, its buffer. */
struct side {
    struct san_nic_ep *ep;
    struct san_regtab_set set;
    uint8_t *buf;
    uint32_t lkey, rkey;
};

enum op { OP_SEND, OP_WRITE, OP_READ };

static void post(struct san_nic_ep *ep, bool recv, const struct san_epq_wqe *w)
{
    struct san_epq_wqe *ring = recv ? san_epq_rq(ep->q) : san_epq_sq(ep->q);
    _Atomic uint32_t *tail = recv ? &ep->q->rq_tail : &ep->q->sq_tail;
    uint32_t t = atomic_load(tail);
    ring[t & (SAN_EPQ_SQ - 1)] = *w;
    atomic_store(tail, t + 1);
}

/* A pair whose side `closer` closes (and deregisters its buffer, as a client that closes its
 * socket frees its memory) after the other side posted op against it and before the engine ran. */
static void closed_peer(enum op op, int closer)
{
    struct san_nic_listener *l;
    struct side s[2];
    struct san_nic_addr addr = {.ip = {[10] = 0xff, [11] = 0xff, [12] = 127, [15] = 1}, .port = 9};
    for (int i = 0; i < 2; i++) {
        san_regtab_set_init(&s[i].set, &f.self);
        s[i].buf = mmap(NULL, BUF, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        assert_ptr_not_equal(s[i].buf, MAP_FAILED);
        memset(s[i].buf, i ? 0xbb : 0xaa, BUF);
        uint32_t refs;
        assert_int_equal(san_regtab_register(f.reg, &s[i].set, (uintptr_t)s[i].buf, BUF,
                                             SAN_MEM_READWRITE, true, NULL, &s[i].lkey, &s[i].rkey,
                                             &refs),
                         0);
    }
    assert_int_equal(san_nic_listen(f.nic, NULL, &addr, 1, &l), 0);
    assert_int_equal(san_nic_connect(f.nic, NULL, &s[0].set, &addr, &s[0].ep), 0);
    assert_int_equal(san_nic_accept(l, NULL, &s[1].set, &s[1].ep), 0);
    san_nic_listener_close(l);
    struct san_nic_pair *p = s[0].ep->pair;
    struct side *c = &s[closer], *o = &s[!closer];

    if (op == OP_SEND) {
        struct san_epq_wqe r = {.wr_id = 1, .opcode = SAN_EPQ_RECV, .nsge = 1};
        r.sge[0] = (struct san_epq_sge){.va = (uintptr_t)c->buf, .len = BUF, .lkey = c->lkey};
        post(c->ep, true, &r);
    }
    struct san_epq_wqe w = {.wr_id = 7,
                            .opcode = op == OP_SEND    ? SAN_EPQ_SEND
                                      : op == OP_WRITE ? SAN_EPQ_WRITE
                                                       : SAN_EPQ_READ,
                            .nsge = 1,
                            .remote_va = (uintptr_t)c->buf,
                            .rkey = c->rkey};
    w.sge[0] = (struct san_epq_sge){.va = (uintptr_t)o->buf, .len = 64, .lkey = o->lkey};
    post(o->ep, false, &w);

    uint8_t cbyte = c->buf[0], obyte = o->buf[0];
    san_nic_ep_close(c->ep);
    uint32_t refs;
    if (op == OP_SEND) /* what the receive names is gone: the engine must not look for it */
        assert_int_equal(san_regtab_deregister(f.reg, &c->set, c->lkey, &refs), 0);

    assert_true(san_nic_step(p) >= 0);
    uint32_t head = atomic_load(&o->ep->q->cq_head), tail = atomic_load(&o->ep->q->cq_tail);
    assert_true(tail - head >= 1);
    const struct san_epq_cqe *cqe = &san_epq_cq(o->ep->q)[head & (SAN_EPQ_CQ - 1)];
    assert_int_equal(cqe->wr_id, 7);
    assert_int_equal(cqe->status, -ECONNRESET);
    atomic_store(&o->ep->q->cq_head, tail);
    /* No byte moved either way. */
    for (size_t i = 0; i < BUF; i++) {
        assert_int_equal(c->buf[i], cbyte);
        assert_int_equal(o->buf[i], obyte);
    }

    san_nic_ep_close(o->ep);
    while (san_nic_step(p) >= 0) {
    }
    for (int i = 0; i < 2; i++) {
        san_regtab_set_release(f.reg, &s[i].set);
        munmap(s[i].buf, BUF);
    }
}

/* One case: the request, and the side whose owner closed. */
struct close_case {
    enum op op;
    int closer;
};

static void closed_case(void **state)
{
    const struct close_case *c = *state;
    closed_peer(c->op, c->closer);
}

#define CASE(name, op, closer)                                                                     \
    {                                                                                              \
        name, closed_case, NULL, NULL, &(struct close_case)                                        \
        {                                                                                          \
            op, closer                                                                             \
        }                                                                                          \
    }

int main(void)
{
    const struct CMUnitTest tests[] = {
        CASE("send to a closed acceptor", OP_SEND, 1),
        CASE("send to a closed connector", OP_SEND, 0),
        CASE("RDMA write to a closed acceptor", OP_WRITE, 1),
        CASE("RDMA write to a closed connector", OP_WRITE, 0),
        CASE("RDMA read from a closed acceptor", OP_READ, 1),
        CASE("RDMA read from a closed connector", OP_READ, 0),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
