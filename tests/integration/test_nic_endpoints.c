/* The NIC's endpoint listing (ENDPOINTS, `sanctl endpoints`) against the real daemon: connected
 * pairs with traffic, posted receives and an unpolled completion, a pair on IPv6, one endpoint in
 * error, one still connecting, one closed by its owner while its peer stays (closing; the peer in
 * error, its receives flushed), one whose client scribbled on its ring indexes (fills clamped to
 * the rings, the garbled rings flagged): every field of every entry checked exactly, the listing
 * paged (more endpoints than one reply holds, none missing, none twice), another user (nobody, when
 * running as root) sees only its own endpoints while root sees everyone's, and sanctl's table and
 * JSON (parsed by python3) show the same. */
#include "harness.h"
#include "nic_pair.h"

#include <pwd.h>
#include <stdatomic.h>
#include <sys/mman.h>

#include "proto/queue.h"

#define MAX_EPS 64

struct listing {
    size_t n;
    struct san_ep_info e[MAX_EPS];
    unsigned pages;
};

/* The whole listing over a raw connection, page by page. */
static void list_all(int fd, struct listing *l)
{
    struct san_msg req, rep;
    uint64_t cursor = 0;
    l->n = l->pages = 0;
    do {
        san_proto_init(&req, SAN_OP_ENDPOINTS, 0);
        req.u.list_req.cursor = cursor;
        CHECK_EQ(test_call(fd, &req, &rep), 0);
        const struct san_endpoints_rep *r = &rep.u.endpoints_rep;
        CHECK(r->nr <= SAN_LIST_MAX);
        for (uint32_t i = 0; i < r->nr; i++) {
            CHECK(l->n < MAX_EPS);
            CHECK(!l->n || r->e[i].id > l->e[l->n - 1].id); /* in id order, none twice */
            l->e[l->n++] = r->e[i];
        }
        CHECK(!r->next || r->next > l->e[l->n - 1].id);
        cursor = r->next;
        l->pages++;
    } while (cursor);
}

/* The entry of client with the given local or remote port (the one side of a pair that has it). */
static const struct san_ep_info *find(const struct listing *l, uint32_t client, uint16_t port)
{
    const struct san_ep_info *found = NULL;
    for (size_t i = 0; i < l->n; i++)
        if (l->e[i].client_id == client &&
            (l->e[i].local.port == port || l->e[i].remote.port == port)) {
            CHECK(!found);
            found = &l->e[i];
        }
    CHECK(found);
    return found;
}

static bool is_v4(const struct san_wire_addr *a, const char *ip, uint16_t port)
{
    struct san_wire_addr w = {.ip = {[10] = 0xff, [11] = 0xff}, .port = port};
    CHECK(inet_pton(AF_INET, ip, w.ip + 12) == 1);
    return !memcmp(a, &w, sizeof(w));
}

static bool is_none(const struct san_wire_addr *a)
{
    static const struct san_wire_addr none;
    return !memcmp(a, &none, sizeof(none));
}

static void check_entry(const struct san_ep_info *e, uint32_t peer, uint32_t state, int32_t err,
                        uint32_t sq, uint32_t rq, uint32_t cq, uint64_t ops, uint64_t bytes)
{
    if (e->peer_client_id != peer || e->state != state || e->error != err || e->sq_fill != sq ||
        e->rq_fill != rq || e->cq_fill != cq || e->ops != ops || e->bytes != bytes ||
        e->bad_rings || e->pid != getpid() || e->uid != geteuid() || !e->handle)
        test_fail(__FILE__, __LINE__,
                  "endpoint %" PRIu64 " of client %u: peer %u state %u error %d fills %u/%u/%u ops "
                  "%" PRIu64 " bytes %" PRIu64 " pid %d uid %u; want peer %u state %u error %d "
                  "fills %u/%u/%u ops %" PRIu64 " bytes %" PRIu64,
                  e->id, e->client_id, e->peer_client_id, e->state, e->error, e->sq_fill,
                  e->rq_fill, e->cq_fill, e->ops, e->bytes, e->pid, e->uid, peer, state, err, sq,
                  rq, cq, ops, bytes);
}

/* Waits until pred holds of the listing (the engine works on its own schedule), up to 10 s. */
static void settle(int fd, struct listing *l, bool (*pred)(const struct listing *, uint32_t),
                   uint32_t arg)
{
    for (int i = 0; i < 10000; i++) {
        list_all(fd, l);
        if (pred(l, arg))
            return;
        usleep(1000);
    }
    test_fail(__FILE__, __LINE__, "the listing never settled");
}

struct connector {
    struct san_ctx *ctx;
    struct sockaddr_in sa;
    struct san_ep *ep;
    int err;
};

static void *connect_main(void *arg)
{
    struct connector *c = arg;
    c->err = san_connect(c->ctx, (struct sockaddr *)&c->sa, sizeof(c->sa), 10000, &c->ep);
    return NULL;
}

static bool has_connecting(const struct listing *l, uint32_t client)
{
    for (size_t i = 0; i < l->n; i++)
        if (l->e[i].client_id == client && l->e[i].state == SAN_WIRE_EP_CONNECTING)
            return true;
    return false;
}

/* b1's peer closed: b1 in error, its three receives flushed into completions. */
static bool b1_flushed(const struct listing *l, uint32_t cb)
{
    for (size_t i = 0; i < l->n; i++)
        if (l->e[i].client_id == cb && l->e[i].local.port == 6500)
            return l->e[i].state == SAN_WIRE_EP_ERROR && l->e[i].cq_fill == 3;
    return false;
}

/* sanctl's JSON of the listing parses, and says what the protocol says. */
static void check_sanctl(const struct test_daemon *d, const struct listing *l, uint32_t ca)
{
    char cmd[1024];
    const char *bin = getenv("SAN_BIN");
    CHECK(bin);
    unsigned connected = 0, errors = 0;
    for (size_t i = 0; i < l->n; i++) {
        connected += l->e[i].state == SAN_WIRE_EP_CONNECTED;
        errors += l->e[i].state == SAN_WIRE_EP_ERROR;
    }
    snprintf(
        cmd, sizeof(cmd),
        "'%s/sanctl' --socket '%s' endpoints --json | python3 -c '"
        "import json, sys\n"
        "eps = json.load(sys.stdin)\n"
        "assert len(eps) == %zu, len(eps)\n"
        "assert sum(e[\"state\"] == \"connected\" for e in eps) == %u\n"
        "assert sum(e[\"state\"] == \"error\" for e in eps) == %u\n"
        "a1 = [e for e in eps if e[\"client\"] == %u and e[\"remote\"] == \"127.0.0.1:6500\"]\n"
        "assert len(a1) == 1 and a1[0][\"ops\"] == 3 and a1[0][\"bytes\"] == 5104, a1\n"
        "assert a1[0][\"local\"] is None and a1[0][\"cq_fill\"] == 1, a1\n"
        "assert all(e[\"error\"] == 0 or e[\"error_text\"] for e in eps)\n"
        "'",
        bin, d->sock, l->n, connected, errors, ca);
    CHECK_EQ(system(cmd), 0);
    snprintf(cmd, sizeof(cmd),
             "'%s/sanctl' --socket '%s' endpoints | grep -q '127.0.0.1:6500.*connected'", bin,
             d->sock);
    CHECK_EQ(system(cmd), 0);
}

/* A client that scribbles on its region's indexes: a raw CONNECT (it waits in cb's backlog, no
 * engine looks at it), then garbage tails and heads. The listing shows fills no deeper than the
 * rings, with the garbled rings said, and nothing else of the entry changes. */
static void scribbled(const struct test_daemon *d, int listfd, struct san_ctx *cb)
{
    struct sockaddr_in sa = addr4("127.0.0.1", 6504);
    struct san_listener *lis;
    CHECK_EQ(san_listen(cb, (struct sockaddr *)&sa, sizeof(sa), 4, &lis), 0);
    int fd = test_connect(d);
    struct san_msg req, rep;
    san_proto_init(&req, SAN_OP_CONNECT, 7);
    req.u.connect_req.addr = (struct san_wire_addr){
        .ip = {[10] = 0xff, [11] = 0xff, [12] = 127, [15] = 1}, .port = 6504};
    CHECK_EQ(san_proto_send(fd, &req, -1, 0), 0);
    int fds[2];
    unsigned nfds;
    size_t len;
    int err;
    CHECK_EQ(san_proto_recv_fds(fd, &rep, &len, fds, 2, &nfds, 0), 0);
    CHECK(san_proto_decode(&rep, len, true, &err) == SAN_DECODE_OK && !rep.hdr.status);
    CHECK_EQ(nfds, 2);
    struct san_epq *q =
        mmap(NULL, (size_t)rep.u.ep_rep.region_size, PROT_READ | PROT_WRITE, MAP_SHARED, fds[0], 0);
    CHECK(q != MAP_FAILED);
    atomic_store(&q->sq_tail, 5);        /* plausible: 5 posted */
    atomic_store(&q->rq_tail, 1000);     /* more than the ring holds */
    atomic_store(&q->cq_head, 0x12345u); /* ahead of the NIC's tail */
    atomic_store(&q->sq_head, 0);        /* the NIC's own index, scribbled as well */
    struct listing l;
    list_all(listfd, &l);
    const struct san_ep_info *e = NULL;
    for (size_t i = 0; i < l.n; i++)
        if (l.e[i].remote.port == 6504)
            e = &l.e[i];
    CHECK(e);
    CHECK_EQ(e->state, SAN_WIRE_EP_CONNECTING);
    CHECK_EQ(e->sq_fill, 5);
    CHECK_EQ(e->rq_fill, 64);
    CHECK_EQ(e->cq_fill, 128);
    CHECK_EQ(e->bad_rings, SAN_WIRE_EP_BAD_RQ | SAN_WIRE_EP_BAD_CQ);
    CHECK(e->ops == 0 && e->bytes == 0 && e->peer_client_id == 0);
    munmap(q, (size_t)rep.u.ep_rep.region_size);
    close(fds[0]);
    close(fds[1]);
    close(fd); /* the connection goes, and its endpoint with it */
    san_listener_close(lis);
    for (int i = 0; i < 10000; i++) {
        list_all(listfd, &l);
        if (l.n == 6)
            return;
        usleep(1000);
    }
    test_fail(__FILE__, __LINE__, "the scribbler's endpoint stays after it went");
}

/* As nobody: a pair of its own, and a listing that shows only it (run in a child that holds its
 * endpoints until the parent, root, listed them too). */
static void other_user(const struct test_daemon *d, int rootfd, size_t root_sees)
{
    if (geteuid() != 0) {
        printf("not root: the listing of another user's endpoints is not checked (needs a second "
               "uid)\n");
        return;
    }
    struct passwd *pw = getpwnam("nobody");
    uid_t uid = pw ? pw->pw_uid : 65534;
    CHECK(!chmod(d->dir, 0755) && !chmod(d->sock, 0666));
    int res[2], hold[2];
    CHECK(!pipe(res) && !pipe(hold));
    pid_t c = fork();
    CHECK(c >= 0);
    if (c == 0) {
        close(res[0]);
        close(hold[1]);
        char ok = 'n';
        struct san_ctx *x, *y;
        struct san_ep *a, *b;
        if (setgid(uid) || setuid(uid) || san_open(d->sock, &x) || san_open(d->sock, &y))
            _exit(10);
        connect_pair(x, y, 6600, &a, &b);
        int fd = test_connect(d);
        struct listing l;
        list_all(fd, &l);
        /* The clients listing too: its own three connections (x, y and fd), none of root's. */
        struct san_msg req, rep;
        san_proto_init(&req, SAN_OP_CLIENTS, 0);
        bool clients_ok = !test_call(fd, &req, &rep) && rep.u.clients_rep.nr == 3;
        for (uint32_t i = 0; clients_ok && i < rep.u.clients_rep.nr; i++)
            clients_ok = rep.u.clients_rep.c[i].uid == uid;
        if (clients_ok && l.n == 2 && l.e[0].uid == uid && l.e[1].uid == uid &&
            l.e[0].pid == getpid() && l.e[1].pid == getpid() &&
            l.e[0].peer_client_id == l.e[1].client_id &&
            l.e[1].peer_client_id == l.e[0].client_id && l.e[0].state == SAN_WIRE_EP_CONNECTED)
            ok = 'y';
        if (write(res[1], &ok, 1) != 1 || read(hold[0], &ok, 1) < 0) {
        }
        _exit(0);
    }
    close(res[1]);
    close(hold[0]);
    char ok = 0;
    CHECK(read(res[0], &ok, 1) == 1);
    CHECK(ok == 'y'); /* nobody sees its own two, none of root's */
    struct listing l;
    list_all(rootfd, &l);
    CHECK_EQ(l.n, root_sees + 2); /* root sees everyone's */
    unsigned theirs = 0;
    for (size_t i = 0; i < l.n; i++)
        theirs += l.e[i].uid == uid && l.e[i].pid == c;
    CHECK_EQ(theirs, 2);
    close(hold[1]);
    close(res[0]);
    CHECK(waitpid(c, NULL, 0) == c);
    printf("another user sees its own endpoints only\n");
}

int main(void)
{
    struct test_daemon d;
    struct san_stats_rep idle;
    struct san_msg req, rep;
    struct listing l;

    test_init();
    test_daemon_start(&d, NULL);
    test_stats(&d, &idle);
    /* The listing's connection; its client id tells the next two contexts'. */
    int fd = test_connect(&d);
    san_proto_init(&req, SAN_OP_HELLO, 0);
    req.u.hello_req.version = SAN_PROTO_VERSION;
    CHECK_EQ(test_call(fd, &req, &rep), 0);
    uint32_t ca_id = rep.u.hello_rep.client_id + 1, cb_id = ca_id + 1;
    list_all(fd, &l);
    CHECK_EQ(l.n, 0);
    CHECK_EQ(l.pages, 1);

    struct san_ctx *ca, *cb;
    CHECK_EQ(san_open(d.sock, &ca), 0);
    CHECK_EQ(san_open(d.sock, &cb), 0);
    struct san_ep *a1, *b1, *a2, *b2, *a3, *b3;
    connect_pair(ca, cb, 6500, &a1, &b1);

    /* Pair 1: a send of 1000 bytes, an RDMA write of 4096, a signaled write of 8 left unpolled,
     * three receives posted on b1 that nothing consumes. */
    size_t len = 64 << 10;
    char *sbuf = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    char *rbuf = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    CHECK(sbuf != MAP_FAILED && rbuf != MAP_FAILED);
    memset(sbuf, 7, len);
    struct san_mr *smr, *rmr;
    char desc[SAN_RDMA_DESC_SIZE];
    size_t dl = sizeof(desc);
    CHECK_EQ(san_register(ca, sbuf, len, SAN_MEM_READ, &smr), 0);
    CHECK_EQ(san_register_rdma(cb, rbuf, len, SAN_MEM_READWRITE, desc, &dl, &rmr), 0);
    struct san_sge r = {rbuf, 4096, san_mr_lkey(rmr)}, s = {sbuf, 1000, san_mr_lkey(smr)};
    CHECK_EQ(san_post_recv(b1, 1, &r, 1), 0);
    CHECK_EQ(san_post_send(a1, 2, &s, 1, 0), 0);
    struct san_wc wc = wait_one(b1);
    CHECK(wc.status == 0 && wc.byte_len == 1000);
    wc = wait_one(a1);
    CHECK(wc.status == 0);
    s.length = 4096;
    CHECK_EQ(san_rdma_write(a1, 3, &s, 1, desc, dl, 8192, 0), 0);
    wc = wait_one(a1);
    CHECK(wc.status == 0 && wc.byte_len == 4096);
    s.length = 8;
    CHECK_EQ(san_rdma_write(a1, 4, &s, 1, desc, dl, 16384, 0), 0);
    CHECK_EQ(san_wait(a1, 10000), 0); /* its completion waits: not polled */
    for (int i = 0; i < 3; i++)
        CHECK_EQ(san_post_recv(b1, 10 + (uint64_t)i, &r, 1), 0);

    /* Pair 2 on IPv6 with two receives posted on the acceptor; pair 3 with a1's peer's
     * registration written past its end: a3 in error (-EACCES), b3 connected. */
    struct sockaddr_in6 six = {
        .sin6_family = AF_INET6, .sin6_port = htons(6501), .sin6_addr = IN6ADDR_LOOPBACK_INIT};
    {
        struct acceptor acc = {0};
        CHECK_EQ(san_listen(cb, (struct sockaddr *)&six, sizeof(six), 4, &acc.l), 0);
        pthread_t t;
        CHECK(!pthread_create(&t, NULL, accept_main, &acc));
        CHECK_EQ(san_connect(ca, (struct sockaddr *)&six, sizeof(six), 10000, &a2), 0);
        CHECK(!pthread_join(t, NULL));
        CHECK_EQ(acc.err, 0);
        b2 = acc.ep;
        san_listener_close(acc.l);
    }
    CHECK_EQ(san_post_recv(b2, 1, &r, 1), 0);
    CHECK_EQ(san_post_recv(b2, 2, &r, 1), 0);
    connect_pair(ca, cb, 6502, &a3, &b3);
    s.length = 100;
    CHECK_EQ(san_rdma_write(a3, 5, &s, 1, desc, dl, len - 50, 0), 0);
    wc = wait_one(a3);
    CHECK_EQ(wc.status, -EACCES);

    /* One connecting: cb listens on 6503 and has not accepted yet. */
    struct connector con = {.ctx = ca, .sa = addr4("127.0.0.1", 6503)};
    struct san_listener *l4;
    CHECK_EQ(san_listen(cb, (struct sockaddr *)&con.sa, sizeof(con.sa), 4, &l4), 0);
    pthread_t ct;
    CHECK(!pthread_create(&ct, NULL, connect_main, &con));
    settle(fd, &l, has_connecting, ca_id);

    CHECK_EQ(l.n, 7);
    CHECK_EQ(l.pages, 1);
    const struct san_ep_info *e;
    e = find(&l, ca_id, 6500); /* a1: 3 operations, 1000 + 4096 + 8 bytes, one completion */
    CHECK(is_none(&e->local) && is_v4(&e->remote, "127.0.0.1", 6500));
    check_entry(e, cb_id, SAN_WIRE_EP_CONNECTED, 0, 0, 0, 1, 3, 5104);
    e = find(&l, cb_id, 6500); /* b1: three receives waiting; nothing sent */
    CHECK(is_v4(&e->local, "127.0.0.1", 6500) && is_none(&e->remote));
    check_entry(e, ca_id, SAN_WIRE_EP_CONNECTED, 0, 0, 3, 0, 0, 0);
    e = find(&l, ca_id, 6501);
    struct san_wire_addr v6 = {.ip = {[15] = 1}, .port = 6501};
    CHECK(!memcmp(&e->remote, &v6, sizeof(v6)) && is_none(&e->local));
    check_entry(e, cb_id, SAN_WIRE_EP_CONNECTED, 0, 0, 0, 0, 0, 0);
    e = find(&l, cb_id, 6501);
    CHECK(!memcmp(&e->local, &v6, sizeof(v6)));
    check_entry(e, ca_id, SAN_WIRE_EP_CONNECTED, 0, 0, 2, 0, 0, 0);
    e = find(&l, ca_id, 6502);
    check_entry(e, cb_id, SAN_WIRE_EP_ERROR, -EACCES, 0, 0, 0, 0, 0);
    e = find(&l, cb_id, 6502);
    check_entry(e, ca_id, SAN_WIRE_EP_CONNECTED, 0, 0, 0, 0, 0, 0);
    e = find(&l, ca_id, 6503);
    CHECK(is_v4(&e->remote, "127.0.0.1", 6503));
    check_entry(e, 0, SAN_WIRE_EP_CONNECTING, 0, 0, 0, 0, 0, 0);
    /* Handles are the owners': distinct within a client. */
    for (size_t i = 0; i < l.n; i++)
        for (size_t j = i + 1; j < l.n; j++)
            CHECK(l.e[i].client_id != l.e[j].client_id || l.e[i].handle != l.e[j].handle);
    check_sanctl(&d, &l, ca_id);

    /* Accepted now; then a1's owner closes it while b1 stays: a1 closing (its engine holds it
     * until b1 goes), b1 reset, its three receives flushed into completions. */
    struct san_ep *b4;
    CHECK_EQ(san_accept(l4, 10000, &b4), 0);
    CHECK(!pthread_join(ct, NULL));
    CHECK_EQ(con.err, 0);
    san_listener_close(l4);
    san_ep_close(a1);
    settle(fd, &l, b1_flushed, cb_id);
    CHECK_EQ(l.n, 8);
    e = find(&l, ca_id, 6500);
    check_entry(e, cb_id, SAN_WIRE_EP_CLOSING, 0, 0, 0, 1, 3, 5104);
    e = find(&l, cb_id, 6500);
    check_entry(e, ca_id, SAN_WIRE_EP_ERROR, -ECONNRESET, 0, 0, 3, 0, 0);
    e = find(&l, ca_id, 6503);
    check_entry(e, cb_id, SAN_WIRE_EP_CONNECTED, 0, 0, 0, 0, 0, 0);
    e = find(&l, cb_id, 6503);
    check_entry(e, ca_id, SAN_WIRE_EP_CONNECTED, 0, 0, 0, 0, 0, 0);
    san_ep_close(b1); /* both closed: both go */
    for (int i = 0; i < 10000; i++) {
        list_all(fd, &l);
        if (l.n == 6)
            break;
        usleep(1000);
    }
    CHECK_EQ(l.n, 6);

    scribbled(&d, fd, cb);
    other_user(&d, fd, 6);

    /* More endpoints than one page holds: 2 x 10 more, every one listed once, in order. */
    struct san_ep *many[20];
    for (int i = 0; i < 10; i++)
        connect_pair(ca, cb, (uint16_t)(6700 + i), &many[2 * i], &many[2 * i + 1]);
    for (int i = 0; i < 10000; i++) { /* nobody's, closed as it exited, go on their own */
        list_all(fd, &l);
        if (l.n == 26)
            break;
        usleep(1000);
    }
    CHECK_EQ(l.n, 26);
    CHECK(l.pages >= 2);
    struct san_stats_rep st;
    test_stats(&d, &st);
    CHECK_EQ(st.endpoints, 26); /* the listing counts what the stats count */

    for (int i = 0; i < 20; i++)
        san_ep_close(many[i]);
    san_ep_close(a2);
    san_ep_close(b2);
    san_ep_close(a3);
    san_ep_close(b3);
    san_ep_close(con.ep);
    san_ep_close(b4);
    CHECK_EQ(san_deregister(smr), 0);
    CHECK_EQ(san_deregister(rmr), 0);
    san_close(ca);
    san_close(cb);
    for (int i = 0; i < 10000; i++) {
        list_all(fd, &l);
        if (!l.n)
            break;
        usleep(1000);
    }
    CHECK_EQ(l.n, 0);
    close(fd);
    test_wait_idle(&d, &idle);
    CHECK_EQ(test_daemon_stop(&d), 0);
    printf("ok\n");
    return 0;
}
