/* The software SAN NIC against the real daemon: connection errors, send/receive (a send waits for
 * a receive; a receive too small is -EMSGSIZE), RDMA write and read through descriptors, the
 * target's checks (local lkeys -EFAULT, remote rkeys -EACCES: a third context's registration, a
 * read-only one for a write, out of range, a revoked one), the error state (later requests
 * flushed with -ECANCELED), close (the peer's requests -ECONNRESET, posting -ENOTCONN), in-order
 * execution with write-then-send visibility, san_ep_fd with poll, the split connect
 * (san_connect_start/finish: its eventfd signalled with the outcome), listener handles per client
 * and stale once closed, and the stats back to idle. */
#include "harness.h"
#include "nic_pair.h"

#include "client/ep.h" /* san_ep_wait_arm: libsan's, for the switch */

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <sys/mman.h>

#define KIB 1024u
#define MIB (1024u * KIB)

static void connection_errors(struct san_ctx *ca, struct san_ctx *cb)
{
    struct san_ep *ep;
    struct san_listener *l, *l2;
    struct sockaddr_in far = addr4("10.1.2.3", 5000), none = addr4("127.0.0.1", 5999);
    CHECK_EQ(san_connect(ca, (struct sockaddr *)&far, sizeof(far), 100, &ep), -ENETUNREACH);
    CHECK_EQ(san_connect(ca, (struct sockaddr *)&none, sizeof(none), 100, &ep), -ECONNREFUSED);
    CHECK_EQ(san_listen(cb, (struct sockaddr *)&far, sizeof(far), 4, &l), -EADDRNOTAVAIL);
    struct sockaddr_in here = addr4("127.0.0.2", 5001);
    CHECK_EQ(san_listen(cb, (struct sockaddr *)&here, sizeof(here), 4, &l), 0);
    CHECK_EQ(san_listen(ca, (struct sockaddr *)&here, sizeof(here), 4, &l2), -EADDRINUSE);
    CHECK_EQ(san_accept(l, 0, &ep), -EAGAIN);
    CHECK_EQ(san_accept(l, 50, &ep), -ETIMEDOUT);
    CHECK_EQ(san_connect(ca, (struct sockaddr *)&here, sizeof(here), 50, &ep), -ETIMEDOUT);
    struct pollfd p = {.fd = san_listener_fd(l), .events = POLLIN};
    CHECK_EQ(poll(&p, 1, 0), 0); /* the timed-out connection no longer waits */
    struct sockaddr_in6 six = {
        .sin6_family = AF_INET6, .sin6_port = htons(5002), .sin6_addr = IN6ADDR_LOOPBACK_INIT};
    CHECK_EQ(san_listen(cb, (struct sockaddr *)&six, sizeof(six), 4, &l2), 0);
    san_listener_close(l2);
    CHECK_EQ(san_listen(cb, (struct sockaddr *)&six, sizeof(six) - 1, 4, &l2), -EINVAL);
    san_listener_close(l);
}

static bool readable(int fd, int ms)
{
    struct pollfd p = {.fd = fd, .events = POLLIN};
    return poll(&p, 1, ms) == 1 && (p.revents & POLLIN);
}

/* san_connect_start/san_connect_finish: never blocking, the endpoint's eventfd readable once the
 * outcome is known (armed before it or after it) until finish took it, whatever polls and arms
 * happen between; a refusal by a closing listener; the errors known at once. */
static void split_connect(struct san_ctx *ca, struct san_ctx *cb)
{
    struct sockaddr_in here = addr4("127.0.0.2", 5003), none = addr4("127.0.0.1", 5998);
    struct san_listener *l;
    struct san_ep *ep, *acc;
    struct san_wc wc;
    CHECK_EQ(san_connect_start(ca, (struct sockaddr *)&none, sizeof(none), &ep), -ECONNREFUSED);
    CHECK(ep == NULL);
    CHECK_EQ(san_listen(cb, (struct sockaddr *)&here, sizeof(here), 4, &l), 0);
    /* Armed before the outcome (san_ep_fd). */
    CHECK_EQ(san_connect_start(ca, (struct sockaddr *)&here, sizeof(here), &ep), 0);
    CHECK_EQ(san_connect_finish(ep), -EINPROGRESS);
    int efd = san_ep_fd(ep);
    CHECK(!readable(efd, 0));
    CHECK_EQ(san_accept(l, 1000, &acc), 0);
    CHECK(readable(efd, 1000));
    CHECK_EQ(san_poll(ep, &wc, 1), 0); /* an empty poll does not eat the outcome's signal */
    CHECK(readable(efd, 0));
    CHECK_EQ(san_connect_finish(ep), 0);
    CHECK(!readable(efd, 0)); /* taken: drained */
    CHECK_EQ(san_connect_finish(ep), 0);
    san_ep_close(acc);
    san_ep_close(ep);
    /* Armed after the outcome, for one wait (the switch's way). */
    CHECK_EQ(san_connect_start(ca, (struct sockaddr *)&here, sizeof(here), &ep), 0);
    CHECK_EQ(san_accept(l, 1000, &acc), 0);
    int wfd = san_ep_wait_arm(ep);
    CHECK(readable(wfd, 1000));
    san_ep_wait_disarm(ep);
    wfd = san_ep_wait_arm(ep); /* a second arm with the outcome still not taken: readable */
    CHECK(readable(wfd, 0));
    san_ep_wait_disarm(ep);
    CHECK_EQ(san_connect_finish(ep), 0);
    san_ep_close(acc);
    san_ep_close(ep);
    /* Refused while waiting: the listener closes. */
    CHECK_EQ(san_connect_start(ca, (struct sockaddr *)&here, sizeof(here), &ep), 0);
    wfd = san_ep_wait_arm(ep);
    CHECK(!readable(wfd, 0));
    san_listener_close(l);
    CHECK(readable(wfd, 1000));
    san_ep_wait_disarm(ep);
    CHECK_EQ(san_connect_finish(ep), -ECONNREFUSED);
    san_ep_close(ep);
    /* Given up: closing a connecting endpoint takes it out of the backlog. */
    CHECK_EQ(san_listen(cb, (struct sockaddr *)&here, sizeof(here), 4, &l), 0);
    CHECK_EQ(san_connect_start(ca, (struct sockaddr *)&here, sizeof(here), &ep), 0);
    CHECK(readable(san_listener_fd(l), 1000));
    san_ep_close(ep);
    CHECK(!readable(san_listener_fd(l), 0));
    CHECK_EQ(san_accept(l, 0, &acc), -EAGAIN);
    san_listener_close(l);
}

static void send_recv(struct san_ctx *ca, struct san_ctx *cb)
{
    struct san_ep *a, *b;
    connect_pair(ca, cb, 6000, &a, &b);
    char *sbuf = mmap(NULL, 64 * KIB, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    char *rbuf = mmap(NULL, 64 * KIB, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    struct san_mr *smr, *rmr;
    CHECK_EQ(san_register(ca, sbuf, 64 * KIB, SAN_MEM_READ, &smr), 0);
    CHECK_EQ(san_register(cb, rbuf, 64 * KIB, SAN_MEM_READWRITE, &rmr), 0);
    for (unsigned i = 0; i < 64 * KIB; i++)
        sbuf[i] = (char)(i * 7 + 1);

    /* The send first: it waits for the receive. */
    struct san_sge s = {sbuf, 40000, san_mr_lkey(smr)};
    CHECK_EQ(san_post_send(a, 11, &s, 1, 0), 0);
    struct san_wc wc;
    CHECK_EQ(san_wait(a, 100), -ETIMEDOUT);
    CHECK_EQ(san_poll(a, &wc, 1), 0);
    struct san_sge r[2] = {{rbuf, 30000, san_mr_lkey(rmr)},
                           {rbuf + 32768, 20000, san_mr_lkey(rmr)}};
    CHECK_EQ(san_post_recv(b, 21, r, 2), 0);
    wc = wait_one(b);
    CHECK(wc.wr_id == 21 && wc.status == 0 && wc.opcode == SAN_WC_RECV && wc.byte_len == 40000);
    wc = wait_one(a);
    CHECK(wc.wr_id == 11 && wc.status == 0 && wc.opcode == SAN_WC_SEND && wc.byte_len == 40000);
    CHECK(!memcmp(rbuf, sbuf, 30000) && !memcmp(rbuf + 32768, sbuf + 30000, 10000));

    /* Unsignaled: no completion on success. */
    CHECK_EQ(san_post_recv(b, 22, r, 1), 0);
    s.length = 100;
    CHECK_EQ(san_post_send(a, 12, &s, 1, SAN_WR_UNSIGNALED), 0);
    wc = wait_one(b);
    CHECK(wc.wr_id == 22 && wc.byte_len == 100);
    CHECK_EQ(san_poll(a, &wc, 1), 0);

    /* Too small: -EMSGSIZE on both sides, then both in error: flushed, posting refused. */
    r[0].length = 50;
    CHECK_EQ(san_post_recv(b, 23, r, 1), 0);
    CHECK_EQ(san_post_recv(b, 24, r, 1), 0);
    CHECK_EQ(san_post_send(a, 13, &s, 1, SAN_WR_UNSIGNALED), 0);
    wc = wait_one(b);
    CHECK(wc.wr_id == 23 && wc.status == -EMSGSIZE);
    wc = wait_one(b);
    CHECK(wc.wr_id == 24 && wc.status == -ECANCELED);
    wc = wait_one(a);
    CHECK(wc.wr_id == 13 && wc.status == -EMSGSIZE); /* errors complete even unsignaled */
    CHECK_EQ(san_post_send(a, 14, &s, 1, 0), -ENOTCONN);
    CHECK_EQ(san_post_recv(b, 25, r, 1), -ENOTCONN);
    san_ep_close(a);
    san_ep_close(b);
    CHECK_EQ(san_deregister(smr), 0);
    CHECK_EQ(san_deregister(rmr), 0);
    munmap(sbuf, 64 * KIB);
    munmap(rbuf, 64 * KIB);
}

static void rdma_and_checks(struct san_ctx *ca, struct san_ctx *cb, struct san_ctx *cc)
{
    struct san_ep *a, *b;
    connect_pair(ca, cb, 6001, &a, &b);
    size_t len = 256 * KIB;
    char *local = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    char *remote = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    char *ro = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    struct san_mr *lmr, *rmr, *romr, *cmr;
    char desc[SAN_RDMA_DESC_SIZE], rodesc[SAN_RDMA_DESC_SIZE], cdesc[SAN_RDMA_DESC_SIZE];
    size_t dl = sizeof(desc);
    CHECK_EQ(san_register(ca, local, len, SAN_MEM_READWRITE, &lmr), 0);
    CHECK_EQ(san_register_rdma(cb, remote, len, SAN_MEM_READWRITE, desc, &dl, &rmr), 0);
    CHECK_EQ(san_register_rdma(cb, ro, len, SAN_MEM_READ, rodesc, &dl, &romr), 0);
    CHECK_EQ(san_register_rdma(cc, ro, len, SAN_MEM_READWRITE, cdesc, &dl, &cmr), 0);
    for (size_t i = 0; i < len; i++)
        local[i] = (char)(i * 13 + 5);

    /* Write, then a send: the data is there when the receive completes. */
    char *msg = remote + len - 4 * KIB; /* b's receive buffer, inside its registration */
    struct san_mr *bmr;
    CHECK_EQ(san_register(cb, msg, 4 * KIB, SAN_MEM_READWRITE, &bmr), 0);
    struct san_sge rs = {msg, 64, san_mr_lkey(bmr)};
    CHECK_EQ(san_post_recv(b, 1, &rs, 1), 0);
    struct san_sge ws[2] = {{local, 100 * KIB, san_mr_lkey(lmr)},
                            {local + 128 * KIB, 28 * KIB, san_mr_lkey(lmr)}};
    CHECK_EQ(san_rdma_write(a, 2, ws, 2, desc, sizeof(desc), 4096, SAN_WR_UNSIGNALED), 0);
    struct san_sge ss = {local, 8, san_mr_lkey(lmr)};
    CHECK_EQ(san_post_send(a, 3, &ss, 1, 0), 0);
    struct san_wc wc = wait_one(b);
    CHECK(wc.wr_id == 1 && wc.status == 0 && wc.byte_len == 8);
    CHECK(!memcmp(remote + 4096, local, 100 * KIB));
    CHECK(!memcmp(remote + 4096 + 100 * KIB, local + 128 * KIB, 28 * KIB));
    wc = wait_one(a);
    CHECK(wc.wr_id == 3 && wc.status == 0); /* the write was unsignaled */

    /* Read it back elsewhere. */
    memset(local + 200 * KIB, 0, 50 * KIB);
    struct san_sge rd = {local + 200 * KIB, 50 * KIB, san_mr_lkey(lmr)};
    CHECK_EQ(san_rdma_read(a, 4, &rd, 1, desc, sizeof(desc), 4096, 0), 0);
    wc = wait_one(a);
    CHECK(wc.wr_id == 4 && wc.status == 0 && wc.opcode == SAN_WC_RDMA_READ &&
          wc.byte_len == 50 * KIB);
    CHECK(!memcmp(local + 200 * KIB, local, 50 * KIB));

    struct san_stats_rep st;
    int fd = -1;
    (void)fd;
    san_ep_close(a);
    san_ep_close(b);

    /* Each check on a fresh pair: the first error ends an endpoint. */
    struct {
        const char *what;
        const void *d;
        uint64_t off;
        uint32_t lkey_xor;
        bool write;
        int want;
    } bad[] = {
        {"a bad lkey", desc, 0, 0x5a5a, true, -EFAULT},
        {"a third context's registration", cdesc, 0, 0, true, -EACCES},
        {"a read-only registration written", rodesc, 0, 0, true, -EACCES},
        {"past the registration", desc, len - 100, 0, true, -EACCES},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        connect_pair(ca, cb, (uint16_t)(6100 + i), &a, &b);
        struct san_sge s1 = {local, 4 * KIB, san_mr_lkey(lmr) ^ bad[i].lkey_xor};
        CHECK_EQ(san_post_recv(a, 11, &rd, 1), 0); /* waiting when the error comes: flushed */
        CHECK_EQ(san_rdma_write(a, 10, &s1, 1, bad[i].d, SAN_RDMA_DESC_SIZE, bad[i].off,
                                SAN_WR_UNSIGNALED),
                 0);
        wc = wait_one(a);
        if (wc.wr_id != 10 || wc.status != bad[i].want)
            test_fail(__FILE__, __LINE__, "%s: wr %llu status %d, want %d", bad[i].what,
                      (unsigned long long)wc.wr_id, wc.status, bad[i].want);
        wc = wait_one(a);
        CHECK(wc.wr_id == 11 && wc.status == -ECANCELED && wc.opcode == SAN_WC_RECV);
        CHECK_EQ(san_rdma_read(a, 12, &s1, 1, desc, sizeof(desc), 0, 0), -ENOTCONN);
        san_ep_close(a);
        san_ep_close(b);
    }
    /* A registration read-only for the peer is readable. */
    connect_pair(ca, cb, 6200, &a, &b);
    CHECK_EQ(san_rdma_read(a, 12, &rd, 1, rodesc, sizeof(rodesc), 0, 0), 0);
    wc = wait_one(a);
    CHECK(wc.wr_id == 12 && wc.status == 0);
    /* Deregistered: its descriptor is stale, never another registration's memory. */
    CHECK_EQ(san_cache_invalidate(cb, ro, len), 0);
    CHECK_EQ(san_deregister(romr), 0);
    CHECK_EQ(san_rdma_read(a, 13, &rd, 1, rodesc, sizeof(rodesc), 0, 0), 0);
    wc = wait_one(a);
    CHECK(wc.wr_id == 13 && wc.status == -EACCES);

    /* Close: the peer's outstanding and later requests are reset. */
    san_ep_close(b);
    connect_pair(ca, cb, 6201, &a, &b);
    CHECK_EQ(san_post_recv(a, 14, &rd, 1), 0);
    int efd = san_ep_fd(a);
    struct pollfd p = {.fd = efd, .events = POLLIN};
    CHECK_EQ(poll(&p, 1, 0), 0);
    san_ep_close(b);
    CHECK_EQ(poll(&p, 1, 5000), 1); /* readable: a completion waits */
    wc = wait_one(a);
    CHECK(wc.wr_id == 14 && wc.status == -ECONNRESET);
    CHECK_EQ(san_post_send(a, 15, &ss, 1, 0), -ENOTCONN);
    san_ep_close(a);

    test_stats(test_current, &st);
    CHECK(st.nic_ops >= 4 && st.nic_bytes >= 178 * KIB);
    CHECK_EQ(san_deregister(lmr), 0);
    CHECK_EQ(san_deregister(rmr), 0);
    CHECK_EQ(san_deregister(cmr), 0);
    CHECK_EQ(san_deregister(bmr), 0);
    munmap(local, len);
    munmap(remote, len);
    munmap(ro, len);
}

/* Proxy memory (san_alloc) is registered as its frames: nothing locked, the NIC copies it
 * directly, to and from proxy memory and a context's own pages alike. A freed allocation that is
 * still registered keeps its frames (and its charge) until the registration goes. ca and cb are
 * uncached, so registrations end only when deregistered. */
static void proxy_memory(struct test_daemon *d, struct san_ctx *ca, struct san_ctx *cb)
{
    struct san_ep *a, *b;
    struct san_stats_rep before, st;
    connect_pair(ca, cb, 6500, &a, &b);
    size_t len = 4 * MIB;
    char *src, *dst, *own;
    CHECK_EQ(san_alloc(ca, len, 0, (void **)&src), 0);
    CHECK_EQ(san_alloc(cb, len, 0, (void **)&dst), 0);
    own = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    CHECK(own != MAP_FAILED);
    for (size_t i = 0; i < len; i++)
        src[i] = (char)(i * 7 + 3);
    test_stats(d, &before);
    struct san_mr *smr, *dmr, *omr;
    char desc[SAN_RDMA_DESC_SIZE], odesc[SAN_RDMA_DESC_SIZE];
    size_t dl = sizeof(desc);
    CHECK_EQ(san_register(ca, src, len, SAN_MEM_READWRITE, &smr), 0);
    CHECK_EQ(san_register_rdma(cb, dst, len, SAN_MEM_READWRITE, desc, &dl, &dmr), 0);
    test_stats(d, &st);
    CHECK_EQ(st.registrations, before.registrations + 2);
    CHECK_EQ(st.locked_bytes, before.locked_bytes); /* resident already: nothing locked */
    CHECK_EQ(san_register_rdma(cb, own, len, SAN_MEM_READWRITE, odesc, &dl, &omr), 0);
    test_stats(d, &st);
    CHECK_EQ(st.locked_bytes, before.locked_bytes + len); /* own pages are locked */

    /* Proxy to proxy, two pieces, then read back into proxy memory. */
    struct san_sge ws[2] = {{src, 3 * MIB, san_mr_lkey(smr)},
                            {src + 3 * MIB + 4096, MIB - 4096, san_mr_lkey(smr)}};
    CHECK_EQ(san_rdma_write(a, 1, ws, 2, desc, sizeof(desc), 4096, 0), 0);
    struct san_wc wc = wait_one(a);
    CHECK(wc.wr_id == 1 && wc.status == 0 && wc.byte_len == len - 4096);
    CHECK(!memcmp(dst + 4096, src, 3 * MIB));
    CHECK(!memcmp(dst + 4096 + 3 * MIB, src + 3 * MIB + 4096, MIB - 4096));
    memset(src + 2 * MIB, 0, MIB);
    struct san_sge rd = {src + 2 * MIB, MIB, san_mr_lkey(smr)};
    CHECK_EQ(san_rdma_read(a, 2, &rd, 1, desc, sizeof(desc), 4096, 0), 0);
    wc = wait_one(a);
    CHECK(wc.wr_id == 2 && wc.status == 0);
    CHECK(!memcmp(src + 2 * MIB, dst + 4096, MIB));

    /* Proxy memory into a context's own pages and back. */
    struct san_sge w1 = {src, MIB, san_mr_lkey(smr)};
    CHECK_EQ(san_rdma_write(a, 3, &w1, 1, odesc, sizeof(odesc), 100, 0), 0);
    wc = wait_one(a);
    CHECK(wc.wr_id == 3 && wc.status == 0);
    CHECK(!memcmp(own + 100, src, MIB));
    struct san_sge r1 = {src + 3 * MIB, 8192, san_mr_lkey(smr)};
    CHECK_EQ(san_rdma_read(a, 4, &r1, 1, odesc, sizeof(odesc), 100, 0), 0);
    wc = wait_one(a);
    CHECK(wc.wr_id == 4 && wc.status == 0);
    CHECK(!memcmp(src + 3 * MIB, own + 100, 8192));

    /* A read-only mapping of proxy memory is not registered for the NIC to write. */
    CHECK_EQ(mprotect(src, 4096, PROT_READ), 0);
    struct san_mr *bad;
    CHECK_EQ(san_register(ca, src, 4096, SAN_MEM_WRITE, &bad), -EFAULT);
    CHECK_EQ(san_register(ca, src, 100, SAN_MEM_READ, &bad), 0);
    CHECK_EQ(san_deregister(bad), 0);
    CHECK_EQ(mprotect(src, 4096, PROT_READ | PROT_WRITE), 0);

    /* Freed while registered: the frames stay (and stay charged) until the registration goes,
     * and a new allocation gets other frames. */
    san_paddr_t old_pa, new_pa;
    CHECK_EQ(san_physical_address(cb, dst, &old_pa), 0);
    test_stats(d, &before);
    CHECK_EQ(san_free(cb, dst), 0);
    test_stats(d, &st);
    CHECK_EQ(st.allocated_bytes, before.allocated_bytes);
    char *again;
    CHECK_EQ(san_alloc(cb, len, 0, (void **)&again), 0);
    CHECK_EQ(san_physical_address(cb, again, &new_pa), 0);
    CHECK(new_pa + len <= old_pa || old_pa + len <= new_pa);
    CHECK_EQ(san_rdma_write(a, 5, &w1, 1, desc, sizeof(desc), 0, 0), 0); /* still valid */
    wc = wait_one(a);
    CHECK(wc.wr_id == 5 && wc.status == 0);
    CHECK_EQ(san_deregister(dmr), 0);
    test_stats(d, &st);
    CHECK_EQ(st.allocated_bytes, before.allocated_bytes); /* the old one went, the new came */
    CHECK_EQ(san_rdma_write(a, 6, &w1, 1, desc, sizeof(desc), 0, 0), 0);
    wc = wait_one(a);
    CHECK(wc.wr_id == 6 && wc.status == -EACCES); /* stale */

    san_ep_close(a);
    san_ep_close(b);
    CHECK_EQ(san_deregister(smr), 0);
    CHECK_EQ(san_deregister(omr), 0);
    CHECK_EQ(san_free(ca, src), 0);
    CHECK_EQ(san_free(cb, again), 0);
    munmap(own, len);
}

static int raw_handle_op(int fd, unsigned op, uint64_t handle)
{
    struct san_msg req, rep;
    san_proto_init(&req, op, 0);
    req.u.handle_req.handle = handle;
    return test_call(fd, &req, &rep);
}

/* Listener and endpoint handles are per client and stale once closed: the raw protocol. */
static void stale_handles(struct test_daemon *d)
{
    struct san_msg req, rep;
    int a = test_connect(d), b = test_connect(d);
    uint64_t h[3];
    for (int i = 0; i < 3; i++) {
        san_proto_init(&req, SAN_OP_LISTEN, 0);
        req.u.listen_req.addr = (struct san_wire_addr){
            .ip = {[10] = 0xff, [11] = 0xff, [12] = 127, [15] = 1}, .port = (uint16_t)(6400 + i)};
        req.u.listen_req.backlog = 4;
        CHECK_EQ(test_call(a, &req, &rep), 0); /* the eventfd is refused and closed */
        h[i] = rep.u.handle_rep.handle;
        CHECK(h[i] != 0 && (i == 0 || h[i] != h[i - 1]));
    }
    CHECK_EQ(raw_handle_op(b, SAN_OP_LISTEN_CLOSE, h[1]), -EINVAL); /* not b's */
    CHECK_EQ(raw_handle_op(a, SAN_OP_EP_CLOSE, h[1]), -EINVAL);     /* a listener, not an ep */
    CHECK_EQ(raw_handle_op(a, SAN_OP_LISTEN_CLOSE, h[1]), 0);
    CHECK_EQ(raw_handle_op(a, SAN_OP_LISTEN_CLOSE, h[1]), -EINVAL); /* stale */
    CHECK_EQ(raw_handle_op(a, SAN_OP_ACCEPT, h[1]), -EINVAL);
    CHECK_EQ(raw_handle_op(a, SAN_OP_LISTEN_CLOSE, UINT64_C(1) << 40), -EINVAL);
    san_proto_init(&req, SAN_OP_LISTEN, 0); /* its slot again, under a new handle */
    req.u.listen_req.addr = (struct san_wire_addr){
        .ip = {[10] = 0xff, [11] = 0xff, [12] = 127, [15] = 1}, .port = 6401};
    req.u.listen_req.backlog = 4;
    CHECK_EQ(test_call(a, &req, &rep), 0);
    CHECK(rep.u.handle_rep.handle != h[0] && rep.u.handle_rep.handle != h[1] &&
          rep.u.handle_rep.handle != h[2]);
    CHECK_EQ(raw_handle_op(a, SAN_OP_LISTEN_CLOSE, h[1]), -EINVAL);
    CHECK_EQ(raw_handle_op(a, SAN_OP_LISTEN_CLOSE, rep.u.handle_rep.handle), 0);
    close(a);
    close(b);
}

int main(void)
{
    struct test_daemon d;
    struct san_stats_rep idle, s;
    struct san_ctx *ca, *cb, *cc;

    test_init();
    test_daemon_start(&d, NULL);
    test_stats(&d, &idle);
    CHECK_EQ(san_open(NULL, &ca), 0);
    CHECK_EQ(san_open(NULL, &cb), 0);
    CHECK_EQ(san_open(NULL, &cc), 0);
    connection_errors(ca, cb);
    split_connect(ca, cb);
    send_recv(ca, cb);
    rdma_and_checks(ca, cb, cc);
    stale_handles(&d);
    struct san_ctx *ua, *ub;
    setenv("SAN_RCACHE_MAX_ENTRIES", "0", 1);
    CHECK_EQ(san_open(NULL, &ua), 0);
    CHECK_EQ(san_open(NULL, &ub), 0);
    unsetenv("SAN_RCACHE_MAX_ENTRIES");
    proxy_memory(&d, ua, ub);
    san_close(ua);
    san_close(ub);
    /* san_close takes an open endpoint with it. */
    struct san_ep *a, *b;
    connect_pair(ca, cb, 6300, &a, &b);
    san_close(ca);
    san_close(cb);
    san_close(cc);
    test_wait_idle(&d, &idle);
    for (int i = 0; i < 1000; i++) {
        test_stats(&d, &s);
        if (!s.endpoints)
            break;
        usleep(1000);
    }
    CHECK_EQ(s.endpoints, 0);
    CHECK_EQ(test_daemon_stop(&d), 0);
    printf("ok\n");
    return 0;
}
