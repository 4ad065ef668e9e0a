/* Stale keys in reused slots, through the real daemon. A key is a slot index and a generation:
 * once a registration is gone its slot is issued again, to the next registration, under a new
 * generation. The old key must then name nothing, and the registration now in the slot is left
 * alone:
 * - lkeys (raw protocol): DEREGISTER, PADDR and SET_REMOTE with the old key fail with -EINVAL, and
 *   the new registration keeps its references, its rkey and its frames;
 * - rkeys: a revoked rkey's slot goes to the next RDMA registration, and re-exposing the first one
 *   issues a third key, never the second one's;
 * - through the NIC: an RDMA write or read with a peer's stale descriptor (its rkey's slot now
 *   holds a registration of the same memory) completes with -EACCES and leaves that memory
 *   untouched; a stale lkey in a local element is -EFAULT, and the new registration in its slot
 *   still works. */
#include "harness.h"
#include "nic_pair.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <sys/mman.h>

#include "mr/mr.h"

#define KIB 1024u
#define LEN (64 * KIB)

static char *map(size_t len)
{
    char *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    CHECK(p != MAP_FAILED);
    memset(p, 3, len); /* present: the daemon refuses absent pages */
    return p;
}

struct keys {
    uint32_t lkey, rkey, refs;
};

static int reg(int fd, const void *va, size_t len, unsigned access, bool rdma, struct keys *k)
{
    struct san_msg req, rep;
    san_proto_init(&req, SAN_OP_REGISTER, 0);
    req.u.register_req = (struct san_register_req){
        .va = (uintptr_t)va, .len = len, .access = access, .flags = rdma ? SAN_REG_RDMA : 0};
    int err = test_call(fd, &req, &rep);
    if (!err)
        *k = (struct keys){rep.u.register_rep.lkey, rep.u.register_rep.rkey,
                           rep.u.register_rep.refs};
    return err;
}

static int dereg(int fd, uint32_t lkey, uint32_t *refs)
{
    struct san_msg req, rep;
    san_proto_init(&req, SAN_OP_DEREGISTER, 0);
    req.u.deregister_req.lkey = lkey;
    int err = test_call(fd, &req, &rep);
    if (!err)
        *refs = rep.u.deregister_rep.refs;
    return err;
}

static int paddr(int fd, uint32_t lkey, uint64_t offset, uint64_t *pa)
{
    struct san_msg req, rep;
    san_proto_init(&req, SAN_OP_PADDR, 0);
    req.u.paddr_req = (struct san_paddr_req){.lkey = lkey, .offset = offset};
    int err = test_call(fd, &req, &rep);
    if (!err)
        *pa = rep.u.paddr_rep.paddr;
    return err;
}

static int set_remote(int fd, uint32_t lkey, bool exposed, uint32_t *rkey)
{
    struct san_msg req, rep;
    san_proto_init(&req, SAN_OP_SET_REMOTE, 0);
    req.u.set_remote_req = (struct san_set_remote_req){.lkey = lkey, .exposed = exposed};
    int err = test_call(fd, &req, &rep);
    if (!err)
        *rkey = rep.u.set_remote_rep.rkey;
    return err;
}

/* The lkey slot of a deregistered RDMA registration goes to the next one, of the same client. */
static void stale_lkey(const struct test_daemon *d, const struct san_stats_rep *idle)
{
    int fd = test_connect(d);
    char *a = map(LEN), *b = map(LEN);
    struct keys old, cur, again;
    uint32_t refs, rkey;
    uint64_t pa, pa_before;
    struct san_stats_rep s;

    CHECK_EQ(reg(fd, a, LEN, SAN_MEM_READWRITE, true, &old), 0);
    CHECK_EQ(dereg(fd, old.lkey, &refs), 0);
    CHECK_EQ(refs, 0);
    CHECK_EQ(reg(fd, b, LEN, SAN_MEM_READWRITE, true, &cur), 0);
    /* The test means something only if the slot was reused: same index, another generation. */
    CHECK_EQ(san_key_index(cur.lkey), san_key_index(old.lkey));
    CHECK(cur.lkey != old.lkey);
    CHECK(cur.rkey && cur.rkey != old.rkey);
    CHECK_EQ(paddr(fd, cur.lkey, 100, &pa_before), 0);

    /* The stale key, through every request that takes an lkey. */
    CHECK_EQ(paddr(fd, old.lkey, 100, &pa), -EINVAL);
    CHECK_EQ(set_remote(fd, old.lkey, false, &rkey), -EINVAL);
    CHECK_EQ(set_remote(fd, old.lkey, true, &rkey), -EINVAL);
    CHECK_EQ(dereg(fd, old.lkey, &refs), -EINVAL);

    /* The registration in the slot is untouched: still one reference (now two), still its rkey,
     * still its frames. */
    test_stats(d, &s);
    CHECK_EQ(s.registrations, 1);
    CHECK_EQ(s.locked_bytes, idle->locked_bytes + LEN);
    CHECK_EQ(paddr(fd, cur.lkey, 100, &pa), 0);
    CHECK_EQ(pa, pa_before);
    CHECK_EQ(reg(fd, b, LEN, SAN_MEM_READWRITE, true, &again), 0);
    CHECK_EQ(again.lkey, cur.lkey);
    CHECK_EQ(again.rkey, cur.rkey);
    CHECK_EQ(again.refs, 2);
    CHECK_EQ(dereg(fd, cur.lkey, &refs), 0);
    CHECK_EQ(refs, 1);
    CHECK_EQ(dereg(fd, cur.lkey, &refs), 0);
    CHECK_EQ(refs, 0);

    /* Reused by another client: the old key is not that client's either. */
    CHECK_EQ(reg(fd, a, LEN, SAN_MEM_READ, false, &old), 0);
    CHECK_EQ(dereg(fd, old.lkey, &refs), 0);
    int other = test_connect(d);
    CHECK_EQ(reg(other, b, LEN, SAN_MEM_READ, false, &cur), 0);
    CHECK_EQ(san_key_index(cur.lkey), san_key_index(old.lkey));
    CHECK_EQ(paddr(fd, old.lkey, 0, &pa), -EINVAL);
    CHECK_EQ(dereg(fd, old.lkey, &refs), -EINVAL);
    CHECK_EQ(dereg(other, old.lkey, &refs), -EINVAL);
    CHECK_EQ(dereg(other, cur.lkey, &refs), 0);
    CHECK_EQ(refs, 0);

    close(other);
    close(fd);
    test_wait_idle(d, idle);
    munmap(a, LEN);
    munmap(b, LEN);
}

/* A revoked rkey's slot goes to the next RDMA registration; re-exposing the first one takes a
 * fresh slot or generation, never the key now in use, and leaves the second registration alone. */
static void stale_rkey(const struct test_daemon *d, const struct san_stats_rep *idle)
{
    int fd = test_connect(d);
    char *a = map(LEN), *b = map(LEN);
    struct keys ka, kb, again;
    uint32_t rkey, refs;

    CHECK_EQ(reg(fd, a, LEN, SAN_MEM_READWRITE, true, &ka), 0);
    CHECK_EQ(set_remote(fd, ka.lkey, false, &rkey), 0);
    CHECK_EQ(rkey, 0);
    CHECK_EQ(reg(fd, b, LEN, SAN_MEM_READWRITE, true, &kb), 0);
    CHECK_EQ(san_key_index(kb.rkey), san_key_index(ka.rkey));
    CHECK(kb.rkey != ka.rkey);
    CHECK_EQ(set_remote(fd, ka.lkey, true, &rkey), 0);
    CHECK(rkey && rkey != ka.rkey && rkey != kb.rkey);
    /* b still has its own rkey and one reference. */
    CHECK_EQ(reg(fd, b, LEN, SAN_MEM_READWRITE, true, &again), 0);
    CHECK_EQ(again.rkey, kb.rkey);
    CHECK_EQ(again.refs, 2);
    CHECK_EQ(dereg(fd, kb.lkey, &refs), 0);
    CHECK_EQ(dereg(fd, kb.lkey, &refs), 0);
    CHECK_EQ(refs, 0);
    CHECK_EQ(dereg(fd, ka.lkey, &refs), 0);
    CHECK_EQ(refs, 0);
    close(fd);
    test_wait_idle(d, idle);
    munmap(a, LEN);
    munmap(b, LEN);
}

/* ---- through the NIC ---- */

static uint32_t desc_rkey(const unsigned char *desc)
{
    uint32_t rkey;
    memcpy(&rkey, desc + 32, sizeof(rkey)); /* struct san_rdma_desc: rkey at offset 32 */
    return rkey;
}

/* One RDMA operation on a fresh pair (an error ends an endpoint); its completion status. */
static int rdma_once(struct san_ctx *ca, struct san_ctx *cb, uint16_t port, bool write,
                     const struct san_sge *sge, const unsigned char *desc)
{
    struct san_ep *a, *b;
    connect_pair(ca, cb, port, &a, &b);
    if (write)
        CHECK_EQ(san_rdma_write(a, 7, sge, 1, desc, SAN_RDMA_DESC_SIZE, 0, 0), 0);
    else
        CHECK_EQ(san_rdma_read(a, 7, sge, 1, desc, SAN_RDMA_DESC_SIZE, 0, 0), 0);
    struct san_wc wc = wait_one(a);
    CHECK_EQ(wc.wr_id, 7);
    san_ep_close(a);
    san_ep_close(b);
    return wc.status;
}

static void stale_keys_nic(const struct test_daemon *d, const struct san_stats_rep *idle)
{
    struct san_ctx *ca, *cb;
    struct san_mr *lmr, *old, *cur, *lold;
    unsigned char old_desc[SAN_RDMA_DESC_SIZE], cur_desc[SAN_RDMA_DESC_SIZE];
    size_t dl = sizeof(old_desc);
    char *local = map(LEN), *remote = map(2 * LEN);

    /* The harness turns libsan's cache off: each deregistration reaches the daemon at once. */
    CHECK_EQ(san_open(NULL, &ca), 0);
    CHECK_EQ(san_open(NULL, &cb), 0);
    CHECK_EQ(san_register(ca, local, LEN, SAN_MEM_READWRITE, &lmr), 0);
    memset(local, 0x5a, LEN);

    /* The peer registers its memory, hands out the descriptor, deregisters, then registers the
     * same memory again (a wider range: a new registration), which takes the rkey's slot. */
    CHECK_EQ(san_register_rdma(cb, remote, LEN, SAN_MEM_READWRITE, old_desc, &dl, &old), 0);
    CHECK_EQ(san_deregister(old), 0);
    CHECK_EQ(san_register_rdma(cb, remote, 2 * LEN, SAN_MEM_READWRITE, cur_desc, &dl, &cur), 0);
    CHECK_EQ(san_key_index(desc_rkey(cur_desc)), san_key_index(desc_rkey(old_desc)));
    CHECK(desc_rkey(cur_desc) != desc_rkey(old_desc));
    memset(remote, 0x11, 2 * LEN);

    struct san_sge sge = {local, 4 * KIB, san_mr_lkey(lmr)};
    CHECK_EQ(rdma_once(ca, cb, 7001, true, &sge, old_desc), -EACCES);
    CHECK_EQ(rdma_once(ca, cb, 7002, false, &sge, old_desc), -EACCES);
    for (size_t i = 0; i < 2 * LEN; i++)
        if (remote[i] != 0x11)
            test_fail(__FILE__, __LINE__, "the stale rkey wrote byte %zu of the new registration",
                      i);
    CHECK(local[0] == 0x5a && local[4 * KIB - 1] == 0x5a); /* nor did the read land */
    /* The registration in the slot works with its own descriptor. */
    CHECK_EQ(rdma_once(ca, cb, 7003, true, &sge, cur_desc), 0);
    CHECK(remote[0] == 0x5a && remote[4 * KIB - 1] == 0x5a && remote[4 * KIB] == 0x11);

    /* A stale lkey in a local element: its slot now holds a registration of the same memory. */
    CHECK_EQ(san_register(ca, local + LEN / 2, LEN / 2, SAN_MEM_READWRITE, &lold), 0);
    uint32_t stale = san_mr_lkey(lold);
    CHECK_EQ(san_deregister(lold), 0);
    struct san_mr *lcur;
    CHECK_EQ(san_register(ca, local, LEN, SAN_MEM_READ, &lcur), 0);
    CHECK_EQ(san_key_index(san_mr_lkey(lcur)), san_key_index(stale));
    CHECK(san_mr_lkey(lcur) != stale);
    memset(remote, 0x22, 2 * LEN);
    struct san_sge bad = {local + LEN / 2, 4 * KIB, stale};
    CHECK_EQ(rdma_once(ca, cb, 7004, true, &bad, cur_desc), -EFAULT);
    CHECK(remote[0] == 0x22);
    struct san_sge good = {local + LEN / 2, 4 * KIB, san_mr_lkey(lcur)};
    CHECK_EQ(rdma_once(ca, cb, 7005, true, &good, cur_desc), 0);
    CHECK(remote[0] == 0x5a);

    CHECK_EQ(san_deregister(lcur), 0);
    CHECK_EQ(san_deregister(cur), 0);
    CHECK_EQ(san_deregister(lmr), 0);
    san_close(ca);
    san_close(cb);
    test_wait_idle(d, idle);
    munmap(local, LEN);
    munmap(remote, 2 * LEN);
}

int main(void)
{
    struct test_daemon d;
    struct san_stats_rep idle;

    test_init();
    test_daemon_start(&d, NULL);
    test_stats(&d, &idle);
    stale_lkey(&d, &idle);
    stale_rkey(&d, &idle);
    CHECK_EQ(test_daemon_stop(&d), 0);
    /* A fresh daemon: its key tables' free lists are empty, so the next registration takes
     * exactly the slot just freed (free slots are reused oldest first). */
    test_daemon_start(&d, NULL);
    test_stats(&d, &idle);
    stale_keys_nic(&d, &idle);
    CHECK_EQ(test_daemon_stop(&d), 0);
    printf("ok\n");
    return 0;
}
