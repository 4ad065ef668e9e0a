/* nic/xconn, xops: a connection across hosts as its target daemon sees it, the peer daemon played
 * by the test through the NIC's transport interface (san_nic_xdeliver in, a recording transport
 * out; the connection's own thread runs). A CONNECT queues in the listener's backlog and accept
 * answers it; the target checks every RDMA access itself: a write and a read of this endpoint's
 * registration are done, a registration of another client of this host, a descriptor of a third
 * host and a range past the end are -EACCES with the memory untouched, and after a refusal the
 * peer's later requests are dropped (its queue is flushed at home); a hostile peer's message
 * out of order, beyond its credits or a write while a read of its is held resets that
 * connection (CLOSE -EPROTO to the peer, the endpoint in error with -ECONNRESET), a message for
 * a connection not known here is answered with CLOSE, a CONNECT nobody listens for with a
 * refusal, and a session that ends resets its connections. */
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "nic/xconn.h"
#include "nic_test.h"

#define BUF     (64 * 1024)
#define HOST    0xb0b0u /* this daemon's host_id */
#define PEER    0xa0a0u /* the peer daemon's */
#define LINK    0
#define SESSION 1
#define MAXMSG  1024

static struct {
    struct san_machine *m;
    struct san_dma_adapter *adapter;
    struct san_regtab *reg;
    struct san_nic *nic;
    struct san_regtab_set sb, sc;
    struct san_page_owner self;
    char *bbuf, *cbuf;
    uint32_t blkey, brkey, clkey, crkey;
    struct san_nic_listener *l;
    pthread_mutex_t lock;
    struct san_xmsg sent[MAXMSG];
    uint8_t data[MAXMSG][64];
    unsigned nr_sent;
} t;

static int fake_route(void *ctx, const struct san_nic_addr *a, unsigned *link, uint64_t *session,
                      uint64_t *host)
{
    (void)ctx, (void)a, (void)link, (void)session, (void)host;
    return -ENETUNREACH;
}

static int fake_send(void *ctx, unsigned link, uint64_t session, const struct san_xmsg *m,
                     const void *payload, size_t len)
{
    (void)ctx;
    if (link != LINK || session != SESSION)
        return -ECONNRESET;
    pthread_mutex_lock(&t.lock);
    if (t.nr_sent < MAXMSG) {
        t.sent[t.nr_sent] = *m;
        if (len)
            memcpy(t.data[t.nr_sent], payload, len < 64 ? len : 64);
        t.nr_sent++;
    }
    pthread_mutex_unlock(&t.lock);
    return 0;
}

/* The first message of op the daemon sent at or after *from, waited for up to 5 s; *from moves
 * past it. */
static struct san_xmsg wait_sent(unsigned op, unsigned *from, uint8_t *data)
{
    for (int i = 0; i < 5000; i++) {
        pthread_mutex_lock(&t.lock);
        for (unsigned j = *from; j < t.nr_sent; j++)
            if (t.sent[j].op == op) {
                struct san_xmsg m = t.sent[j];
                if (data)
                    memcpy(data, t.data[j], 64);
                *from = j + 1;
                pthread_mutex_unlock(&t.lock);
                return m;
            }
        pthread_mutex_unlock(&t.lock);
        usleep(1000);
    }
    fail_msg("no message of op %u sent", op);
    return (struct san_xmsg){0};
}

static unsigned nr_sent(void)
{
    pthread_mutex_lock(&t.lock);
    unsigned n = t.nr_sent;
    pthread_mutex_unlock(&t.lock);
    return n;
}

/* How many messages of op the daemon sent at or after from. */
static unsigned count_sent(unsigned op, unsigned from)
{
    unsigned n = 0;
    pthread_mutex_lock(&t.lock);
    for (unsigned j = from; j < t.nr_sent; j++)
        n += t.sent[j].op == op;
    pthread_mutex_unlock(&t.lock);
    return n;
}

static int deliver(const struct san_xmsg *m, const void *payload, struct san_xmsg *reply)
{
    return san_nic_xdeliver(t.nic, LINK, SESSION, PEER, m, payload, reply);
}

static struct san_nic_addr listen_addr(void)
{
    struct san_nic_addr a = {.ip = {[10] = 0xff, [11] = 0xff, 10, 2, 0, 1}, .port = 5000};
    return a;
}

static int setup(void **state)
{
    (void)state;
    struct san_nic_net net = {.ip = {[10] = 0xff, [11] = 0xff, 10, 2}, .prefix = 96 + 16};
    struct san_nic_config nc = {.nets = &net,
                                .nr_nets = 1,
                                .backlog_max = 4,
                                .spin_us = 20,
                                .max_length = 1 << 20,
                                .host_id = HOST};
    uint32_t refs;
    pthread_mutex_init(&t.lock, NULL);
    assert_int_equal(nic_test_create(256u << 20, &nc, &t.m, &t.adapter, &t.reg, &t.nic), 0);
    t.self = nic_test_self();
    san_regtab_set_init(&t.sb, &t.self);
    san_regtab_set_init(&t.sc, &t.self);
    san_paddr_t bpa;
    assert_int_equal(san_alloc_contiguous(t.m, BUF, 0, UINT64_MAX, 0, SAN_CACHED, (void **)&t.bbuf),
                     0);
    assert_int_equal(san_get_physical_address(t.m, t.bbuf, &bpa), 0);
    memset(t.bbuf, 0x11, BUF);
    struct san_regtab_backing proxy = {.pa = bpa};
    assert_int_equal(san_regtab_register_backed(t.reg, &t.sb, (uintptr_t)t.bbuf, BUF,
                                                SAN_MEM_READWRITE, true, NULL, &proxy, &t.blkey,
                                                &t.brkey, &refs),
                     0);
    t.cbuf = aligned_alloc(4096, BUF);
    memset(t.cbuf, 0x22, BUF);
    assert_int_equal(san_regtab_register(t.reg, &t.sc, (uintptr_t)t.cbuf, BUF, SAN_MEM_READWRITE,
                                         true, NULL, &t.clkey, &t.crkey, &refs),
                     0);
    struct san_nic_xport x = {.route = fake_route, .send = fake_send};
    san_nic_set_xport(t.nic, &x);
    struct san_nic_addr a = listen_addr();
    assert_int_equal(san_nic_listen(t.nic, NULL, &a, 4, &t.l), 0);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    san_nic_listener_close(t.l);
    san_nic_set_xport(t.nic, NULL);
    san_regtab_set_release(t.reg, &t.sb);
    san_regtab_set_release(t.reg, &t.sc);
    nic_test_destroy(t.m, t.adapter, t.reg, t.nic);
    free(t.cbuf);
    return 0;
}

/* A connection of the peer's half `from`, accepted here: the local endpoint, and our half's
 * number in *conn. */
static struct san_nic_ep *connection(uint64_t from, uint64_t *conn)
{
    struct san_nic_addr a = listen_addr();
    struct san_xmsg m = {.op = SAN_XMSG_CONNECT, .from = from, .port = a.port}, reply;
    memcpy(m.ip, a.ip, 16);
    unsigned at = nr_sent();
    assert_int_equal(deliver(&m, NULL, &reply), 0);
    struct san_nic_ep *ep;
    assert_int_equal(san_nic_accept(t.l, NULL, &t.sb, &ep), 0);
    struct san_xmsg acc = wait_sent(SAN_XMSG_ACCEPT, &at, NULL);
    assert_int_equal(acc.conn, from);
    assert_int_equal(acc.status, 0);
    assert_true(acc.from != 0);
    *conn = acc.from;
    return ep;
}

static struct san_xmsg write_msg(uint64_t conn, uint64_t from, uint64_t seq, uint32_t rkey,
                                 uint64_t va, uint64_t host, uint32_t len)
{
    return (struct san_xmsg){.op = SAN_XMSG_WRITE,
                             .conn = conn,
                             .from = from,
                             .seq = seq,
                             .total = len,
                             .len = len,
                             .rkey = rkey,
                             .va = va,
                             .host = host};
}

static void wait_error(struct san_nic_ep *ep, int32_t err)
{
    for (int i = 0; i < 5000 && atomic_load(&ep->q->state) != SAN_EPQ_ERROR; i++)
        usleep(1000);
    assert_int_equal(atomic_load(&ep->q->state), SAN_EPQ_ERROR);
    assert_int_equal(atomic_load(&ep->q->state_err), err);
}

/* One request on a connection of its own whose answer must be a refusal of status. */
static void refused(struct san_xmsg m, const void *payload, unsigned answer, uint64_t peer)
{
    uint64_t conn;
    struct san_nic_ep *ep = connection(peer, &conn);
    struct san_xmsg reply;
    unsigned at = nr_sent();
    m.conn = conn;
    m.from = peer;
    assert_int_equal(deliver(&m, payload, &reply), 0);
    struct san_xmsg d = wait_sent(answer, &at, NULL);
    assert_int_equal(d.seq, 1);
    assert_int_equal(d.status, -EACCES);
    assert_int_equal(d.len, 0);
    assert_int_equal(atomic_load(&ep->q->state), SAN_EPQ_CONNECTED); /* the peer's error */
    san_nic_ep_close(ep);
}

static void test_target_checks(void **state)
{
    (void)state;
    uint64_t conn;
    struct san_nic_ep *ep = connection(101, &conn);
    uint8_t payload[16], data[64];
    memset(payload, 0x5a, sizeof(payload));
    unsigned at = nr_sent();
    struct san_xmsg reply;

    /* This endpoint's own registration: written, then read. */
    struct san_xmsg m = write_msg(conn, 101, 1, t.brkey, (uintptr_t)t.bbuf + 100, HOST, 16);
    assert_int_equal(deliver(&m, payload, &reply), 0);
    struct san_xmsg d = wait_sent(SAN_XMSG_DONE, &at, NULL);
    assert_int_equal(d.seq, 1);
    assert_int_equal(d.status, 0);
    assert_int_equal(d.total, 16);
    assert_memory_equal(t.bbuf + 100, payload, 16);
    struct san_xmsg r = {.op = SAN_XMSG_READ,
                         .conn = conn,
                         .from = 101,
                         .seq = 2,
                         .total = 16,
                         .rkey = t.brkey,
                         .va = (uintptr_t)t.bbuf + 100,
                         .host = HOST};
    assert_int_equal(deliver(&r, NULL, &reply), 0);
    d = wait_sent(SAN_XMSG_RDATA, &at, data);
    assert_int_equal(d.seq, 2);
    assert_int_equal(d.status, 0);
    assert_int_equal(d.len, 16);
    assert_memory_equal(data, payload, 16);

    /* Another client's registration of this host: refused, untouched; and once the target has
     * refused a request, the peer's later ones are dropped (flushed at the initiator). */
    m = write_msg(conn, 101, 3, t.crkey, (uintptr_t)t.cbuf, HOST, 16);
    assert_int_equal(deliver(&m, payload, &reply), 0);
    d = wait_sent(SAN_XMSG_DONE, &at, NULL);
    assert_int_equal(d.seq, 3);
    assert_int_equal(d.status, -EACCES);
    assert_int_equal((uint8_t)t.cbuf[0], 0x22);
    m = write_msg(conn, 101, 4, t.brkey, (uintptr_t)t.bbuf, HOST, 16);
    assert_int_equal(deliver(&m, payload, &reply), 0);
    usleep(200000);
    assert_int_equal(count_sent(SAN_XMSG_DONE, at), 0); /* no answer but its credit back */
    assert_int_equal((uint8_t)t.bbuf[0], 0x11);
    assert_int_equal(atomic_load(&ep->q->state), SAN_EPQ_CONNECTED);
    san_nic_ep_close(ep);

    /* A descriptor of a third host, though the rkey and range are right; past the end; a read
     * of another client's registration. */
    refused(write_msg(0, 0, 1, t.brkey, (uintptr_t)t.bbuf, 0xc0c0, 16), payload, SAN_XMSG_DONE,
            102);
    assert_int_equal((uint8_t)t.bbuf[0], 0x11);
    refused(write_msg(0, 0, 1, t.brkey, (uintptr_t)t.bbuf + BUF - 8, HOST, 16), payload,
            SAN_XMSG_DONE, 103);
    assert_int_equal((uint8_t)t.bbuf[BUF - 8], 0x11);
    r = (struct san_xmsg){.op = SAN_XMSG_READ,
                          .seq = 1,
                          .total = 16,
                          .rkey = t.crkey,
                          .va = (uintptr_t)t.cbuf,
                          .host = HOST};
    refused(r, NULL, SAN_XMSG_RDATA, 104);

    /* Out of order (seq 9 after 1): a violation. The connection resets; the peer is told. */
    ep = connection(105, &conn);
    at = nr_sent();
    m = write_msg(conn, 105, 1, t.brkey, (uintptr_t)t.bbuf + 200, HOST, 16);
    assert_int_equal(deliver(&m, payload, &reply), 0);
    d = wait_sent(SAN_XMSG_DONE, &at, NULL);
    assert_int_equal(d.status, 0);
    m = write_msg(conn, 105, 9, t.brkey, (uintptr_t)t.bbuf, HOST, 16);
    assert_int_equal(deliver(&m, payload, &reply), 0);
    d = wait_sent(SAN_XMSG_CLOSE, &at, NULL);
    assert_int_equal(d.status, -EPROTO);
    assert_int_equal(d.conn, 105);
    wait_error(ep, -ECONNRESET);
    assert_int_equal((uint8_t)t.bbuf[0], 0x11);
    san_nic_ep_close(ep);
}

static void test_hostile(void **state)
{
    (void)state;
    struct san_xmsg reply, m;
    uint64_t conn;

    /* A message for a connection nobody has here: answered with CLOSE. */
    m = (struct san_xmsg){.op = SAN_XMSG_DONE, .conn = 987654, .from = 55, .seq = 1};
    assert_int_equal(deliver(&m, NULL, &reply), 1);
    assert_int_equal(reply.op, SAN_XMSG_CLOSE);
    assert_int_equal(reply.conn, 55);
    assert_int_equal(reply.from, 987654);

    /* A CONNECT to an address nobody listens on: refused at once. */
    m = (struct san_xmsg){.op = SAN_XMSG_CONNECT, .from = 56, .port = 6000};
    struct san_nic_addr a = listen_addr();
    memcpy(m.ip, a.ip, 16);
    assert_int_equal(deliver(&m, NULL, &reply), 1);
    assert_int_equal(reply.op, SAN_XMSG_ACCEPT);
    assert_int_equal(reply.conn, 56);
    assert_int_equal(reply.status, -ECONNREFUSED);

    /* Credits beyond the window: a violation. */
    struct san_nic_ep *ep = connection(202, &conn);
    unsigned at = nr_sent();
    m = (struct san_xmsg){.op = SAN_XMSG_CREDIT, .conn = conn, .from = 202, .chunks = 1};
    assert_int_equal(deliver(&m, NULL, &reply), 0);
    struct san_xmsg d = wait_sent(SAN_XMSG_CLOSE, &at, NULL);
    assert_int_equal(d.status, -EPROTO);
    wait_error(ep, -ECONNRESET);
    san_nic_ep_close(ep);

    /* A send without a receive advertised: a violation. */
    ep = connection(203, &conn);
    at = nr_sent();
    uint8_t byte = 1;
    m = (struct san_xmsg){
        .op = SAN_XMSG_SEND, .conn = conn, .from = 203, .seq = 1, .total = 1, .len = 1};
    assert_int_equal(deliver(&m, &byte, &reply), 0);
    d = wait_sent(SAN_XMSG_CLOSE, &at, NULL);
    assert_int_equal(d.status, -EPROTO);
    wait_error(ep, -ECONNRESET);
    san_nic_ep_close(ep);

    /* Another peer's message for this connection (another link): not delivered, told CLOSE. */
    ep = connection(204, &conn);
    m = write_msg(conn, 204, 1, t.brkey, (uintptr_t)t.bbuf, HOST, 1);
    assert_int_equal(san_nic_xdeliver(t.nic, LINK + 1, SESSION, PEER, &m, &byte, &reply), 1);
    assert_int_equal(reply.op, SAN_XMSG_CLOSE);
    assert_int_equal((uint8_t)t.bbuf[0], 0x11);

    /* The session ends: the connection resets. */
    san_nic_xreset(t.nic, LINK, SESSION);
    wait_error(ep, -ECONNRESET);
    san_nic_ep_close(ep);
}

static void post_sq(struct san_nic_ep *ep, struct san_epq_wqe w)
{
    uint32_t tail = atomic_load(&ep->q->sq_tail);
    san_epq_sq(ep->q)[tail & (SAN_EPQ_SQ - 1)] = w;
    atomic_store(&ep->q->sq_tail, tail + 1);
    san_nic_kick(ep);
}

/* The initiator: reads follow reads, and nothing else goes while one is not answered in full
 * (the target answers its reads one after the other, and answers must come in the order of the
 * requests): of a read, a read, a write and a read posted at once,
 * the two reads go; the write waits for both answers, the last read goes with it; every
 * completion in order with its bytes. */
static void test_reads_in_order(void **state)
{
    (void)state;
    uint64_t conn;
    struct san_nic_ep *ep = connection(301, &conn);
    unsigned at = nr_sent();
    struct san_epq_wqe rd = {
        .opcode = SAN_EPQ_READ, .nsge = 1, .rkey = 77, .remote_va = 0x10000, .remote_host = PEER};
    rd.sge[0] = (struct san_epq_sge){.va = (uintptr_t)t.bbuf + 1000, .len = 16, .lkey = t.blkey};
    struct san_epq_wqe wr = rd;
    wr.opcode = SAN_EPQ_WRITE;
    wr.sge[0].va = (uintptr_t)t.bbuf + 2000;
    rd.wr_id = 1;
    post_sq(ep, rd);
    rd.wr_id = 2;
    rd.sge[0].va = (uintptr_t)t.bbuf + 1500;
    post_sq(ep, rd);
    wr.wr_id = 3;
    post_sq(ep, wr);
    rd.wr_id = 4;
    rd.sge[0].va = (uintptr_t)t.bbuf + 3000;
    post_sq(ep, rd);
    struct san_xmsg r1 = wait_sent(SAN_XMSG_READ, &at, NULL);
    struct san_xmsg r2 = wait_sent(SAN_XMSG_READ, &at, NULL);
    assert_true(r1.seq < r2.seq);
    usleep(200000);
    assert_int_equal(count_sent(SAN_XMSG_READ, at) + count_sent(SAN_XMSG_WRITE, at), 0);

    uint8_t payload[16], reply_data[64];
    memset(payload, 0x6b, sizeof(payload));
    struct san_xmsg reply,
        m = {
            .op = SAN_XMSG_RDATA, .conn = conn, .from = 301, .seq = r1.seq, .total = 16, .len = 16};
    assert_int_equal(deliver(&m, payload, &reply), 0);
    usleep(100000);
    assert_int_equal(count_sent(SAN_XMSG_READ, at) + count_sent(SAN_XMSG_WRITE, at), 0);
    m.seq = r2.seq;
    assert_int_equal(deliver(&m, payload, &reply), 0);
    struct san_xmsg w = wait_sent(SAN_XMSG_WRITE, &at, reply_data);
    struct san_xmsg r4 = wait_sent(SAN_XMSG_READ, &at, NULL);
    assert_true(r2.seq < w.seq && w.seq < r4.seq);
    m = (struct san_xmsg){
        .op = SAN_XMSG_DONE, .conn = conn, .from = 301, .seq = w.seq, .total = 16};
    assert_int_equal(deliver(&m, NULL, &reply), 0);
    m = (struct san_xmsg){
        .op = SAN_XMSG_RDATA, .conn = conn, .from = 301, .seq = r4.seq, .total = 16, .len = 16};
    assert_int_equal(deliver(&m, payload, &reply), 0);

    for (int i = 0; i < 5000 && atomic_load(&ep->q->cq_tail) - atomic_load(&ep->q->cq_head) < 4;
         i++)
        usleep(1000);
    uint32_t head = atomic_load(&ep->q->cq_head);
    assert_int_equal(atomic_load(&ep->q->cq_tail) - head, 4);
    for (uint32_t i = 0; i < 4; i++) {
        const struct san_epq_cqe *c = &san_epq_cq(ep->q)[(head + i) & (SAN_EPQ_CQ - 1)];
        assert_int_equal(c->wr_id, i + 1);
        assert_int_equal(c->status, 0);
        assert_int_equal(c->byte_len, 16);
    }
    atomic_store(&ep->q->cq_head, head + 4);
    assert_memory_equal(t.bbuf + 1000, payload, 16);
    assert_memory_equal(t.bbuf + 1500, payload, 16);
    assert_memory_equal(t.bbuf + 3000, payload, 16);
    assert_int_equal(atomic_load(&ep->q->state), SAN_EPQ_CONNECTED);
    san_nic_ep_close(ep);
}

/* The seqs of the answers (RDATA, DONE) the daemon sent at or after from, up to max; the payload
 * of the last in last_data. */
static unsigned answers_sent(unsigned from, uint64_t *out, unsigned max, uint8_t last_data[64])
{
    unsigned n = 0;
    pthread_mutex_lock(&t.lock);
    for (unsigned j = from; j < t.nr_sent && n < max; j++)
        if (t.sent[j].op == SAN_XMSG_RDATA || t.sent[j].op == SAN_XMSG_DONE) {
            out[n++] = t.sent[j].seq;
            memcpy(last_data, t.data[j], 64);
        }
    pthread_mutex_unlock(&t.lock);
    return n;
}

/* The peer's reads on a connection of its own answered in full, one at a time, until they took
 * every credit (their answers are not credited back): the seq of the last. */
static uint64_t take_credits(uint64_t conn, uint64_t from)
{
    struct san_xmsg reply, r = {.op = SAN_XMSG_READ,
                                .conn = conn,
                                .from = from,
                                .total = BUF, /* two chunks */
                                .rkey = t.brkey,
                                .va = (uintptr_t)t.bbuf,
                                .host = HOST};
    unsigned at = nr_sent();
    for (r.seq = 1; r.seq <= SAN_XMSG_WINDOW / 2; r.seq++) {
        assert_int_equal(deliver(&r, NULL, &reply), 0);
        for (int i = 0; i < 5000 && count_sent(SAN_XMSG_RDATA, at) < 2 * r.seq; i++)
            usleep(1000);
        assert_int_equal(count_sent(SAN_XMSG_RDATA, at), 2 * r.seq);
    }
    return r.seq - 1;
}

/* As target: reads that come while one is answered wait behind it, up to SAN_XCONN_READS in all,
 * and are answered in order with their bytes once credits come; one more is a violation. */
static void test_target_reads_wait(void **state)
{
    (void)state;
    uint64_t conn;
    struct san_nic_ep *ep = connection(401, &conn);
    uint64_t seq = take_credits(conn, 401);
    unsigned at = nr_sent();
    struct san_xmsg reply, r[SAN_XCONN_READS];
    for (unsigned i = 0; i < SAN_XCONN_READS; i++) {
        memset(t.bbuf + 200 + 16 * i, 0x20 + (int)i, 16);
        r[i] = (struct san_xmsg){.op = SAN_XMSG_READ,
                                 .conn = conn,
                                 .from = 401,
                                 .seq = ++seq,
                                 .total = 16,
                                 .rkey = t.brkey,
                                 .va = (uintptr_t)t.bbuf + 200 + 16 * i,
                                 .host = HOST};
        assert_int_equal(deliver(&r[i], NULL, &reply), 0);
    }
    usleep(100000);
    uint64_t seqs[8];
    uint8_t data[64];
    assert_int_equal(answers_sent(at, seqs, 8, data), 0); /* no credit: nothing answered */
    struct san_xmsg c = {
        .op = SAN_XMSG_CREDIT, .conn = conn, .from = 401, .chunks = SAN_XMSG_WINDOW};
    assert_int_equal(deliver(&c, NULL, &reply), 0);
    unsigned n = 0;
    for (int k = 0; k < 5000 && (n = answers_sent(at, seqs, 8, data)) < SAN_XCONN_READS; k++)
        usleep(1000);
    assert_int_equal(n, SAN_XCONN_READS);
    for (unsigned i = 0; i < SAN_XCONN_READS; i++) {
        struct san_xmsg got = wait_sent(SAN_XMSG_RDATA, &at, data);
        assert_int_equal(got.seq, r[i].seq);
        assert_int_equal(got.status, 0);
        for (unsigned b = 0; b < 16; b++)
            assert_int_equal(data[b], 0x20 + i);
    }
    assert_int_equal(atomic_load(&ep->q->state), SAN_EPQ_CONNECTED);
    san_nic_ep_close(ep);

    /* One read more than the target holds. */
    ep = connection(402, &conn);
    seq = take_credits(conn, 402);
    at = nr_sent();
    for (unsigned i = 0; i <= SAN_XCONN_READS; i++) {
        r[0].from = 402;
        r[0].conn = conn;
        r[0].seq = ++seq;
        assert_int_equal(deliver(&r[0], NULL, &reply), 0);
    }
    struct san_xmsg close = wait_sent(SAN_XMSG_CLOSE, &at, NULL);
    assert_int_equal(close.status, -EPROTO);
    wait_error(ep, -ECONNRESET);
    san_nic_ep_close(ep);
}

/* The peer's read of 16 bytes at off in this endpoint's registration (or, refused, another
 * client's). */
static struct san_xmsg read_msg(uint64_t conn, uint64_t from, uint64_t seq, unsigned off,
                                bool refused)
{
    return (struct san_xmsg){.op = SAN_XMSG_READ,
                             .conn = conn,
                             .from = from,
                             .seq = seq,
                             .total = 16,
                             .rkey = refused ? t.crkey : t.brkey,
                             .va = (uintptr_t)(refused ? t.cbuf : t.bbuf) + off,
                             .host = HOST};
}

/* As target, with reads held: a refused one is answered with its status in its turn and the
 * reads behind it are dropped (flushed at the initiator), the connection intact; a write that
 * comes while a read is held is a violation (the initiator ships none then), the memory
 * untouched; a session that ends with reads held resets the connection, and credits after it
 * answer none of them. */
static void test_target_reads_held(void **state)
{
    (void)state;
    uint64_t conn, seqs[8];
    uint8_t data[64], payload[16];
    struct san_xmsg reply, m;
    struct san_nic_ep *ep = connection(501, &conn);
    uint64_t seq = take_credits(conn, 501);
    unsigned at = nr_sent();
    memset(t.bbuf + 600, 0x31, 16);
    uint64_t first = seq + 1;
    for (unsigned i = 0; i < 3; i++) {
        m = read_msg(conn, 501, ++seq, 600, i == 1);
        assert_int_equal(deliver(&m, NULL, &reply), 0);
    }
    m = (struct san_xmsg){
        .op = SAN_XMSG_CREDIT, .conn = conn, .from = 501, .chunks = SAN_XMSG_WINDOW};
    assert_int_equal(deliver(&m, NULL, &reply), 0);
    for (int k = 0; k < 5000 && answers_sent(at, seqs, 8, data) < 2; k++)
        usleep(1000);
    usleep(100000);
    assert_int_equal(answers_sent(at, seqs, 8, data), 2); /* the third: dropped */
    struct san_xmsg got = wait_sent(SAN_XMSG_RDATA, &at, data);
    assert_int_equal(got.seq, first);
    assert_int_equal(got.status, 0);
    for (unsigned b = 0; b < 16; b++)
        assert_int_equal(data[b], 0x31);
    got = wait_sent(SAN_XMSG_RDATA, &at, NULL);
    assert_int_equal(got.seq, first + 1);
    assert_int_equal(got.status, -EACCES);
    assert_int_equal(got.len, 0);
    assert_int_equal(atomic_load(&ep->q->state), SAN_EPQ_CONNECTED);
    san_nic_ep_close(ep);

    /* A write while a read is held. */
    ep = connection(502, &conn);
    seq = take_credits(conn, 502);
    at = nr_sent();
    m = read_msg(conn, 502, ++seq, 0, false);
    assert_int_equal(deliver(&m, NULL, &reply), 0);
    memset(payload, 0x77, sizeof(payload));
    m = write_msg(conn, 502, ++seq, t.brkey, (uintptr_t)t.bbuf + 700, HOST, 16);
    assert_int_equal(deliver(&m, payload, &reply), 0);
    got = wait_sent(SAN_XMSG_CLOSE, &at, NULL);
    assert_int_equal(got.status, -EPROTO);
    wait_error(ep, -ECONNRESET);
    assert_int_equal((uint8_t)t.bbuf[700], 0x11);
    assert_int_equal(count_sent(SAN_XMSG_DONE, at), 0);
    san_nic_ep_close(ep);

    /* The session ends with reads held. */
    ep = connection(503, &conn);
    seq = take_credits(conn, 503);
    for (unsigned i = 0; i < SAN_XCONN_READS; i++) {
        m = read_msg(conn, 503, ++seq, 16 * i, false);
        assert_int_equal(deliver(&m, NULL, &reply), 0);
    }
    at = nr_sent();
    san_nic_xreset(t.nic, LINK, SESSION);
    wait_error(ep, -ECONNRESET);
    /* Credits that come after the reset answer none of them. */
    m = (struct san_xmsg){
        .op = SAN_XMSG_CREDIT, .conn = conn, .from = 503, .chunks = SAN_XMSG_WINDOW};
    deliver(&m, NULL, &reply);
    usleep(100000);
    assert_int_equal(count_sent(SAN_XMSG_RDATA, at), 0);
    san_nic_ep_close(ep);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_target_checks),     cmocka_unit_test(test_hostile),
        cmocka_unit_test(test_reads_in_order),    cmocka_unit_test(test_target_reads_wait),
        cmocka_unit_test(test_target_reads_held),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
