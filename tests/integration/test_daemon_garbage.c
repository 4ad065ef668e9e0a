/* Garbage on the control socket: malformed framing disconnects that client only; well-framed bad
 * requests (version, opcode, size, fields) get error replies and the connection stays usable;
 * descriptors cannot be passed; a client that never reads its replies is dropped without
 * blocking others; random bytes never stop the daemon. */
#include "harness.h"

#include <dirent.h>
#include <poll.h>

/* Whether the daemon closed fd: a recv that returns end of stream. */
static bool closed_by_daemon(int fd)
{
    struct pollfd p = {.fd = fd, .events = POLLIN};
    CHECK(poll(&p, 1, 5000) == 1);
    char b[64];
    ssize_t n = recv(fd, b, sizeof(b), 0);
    return n == 0 || (n < 0 && errno == ECONNRESET);
}

static void send_raw(int fd, const void *buf, size_t len)
{
    CHECK(send(fd, buf, len, MSG_NOSIGNAL) == (ssize_t)len);
}

/* Sends a raw datagram and expects an error reply with status want (connection kept). */
static void expect_reply(int fd, const struct san_msg *m, size_t len, int want)
{
    struct san_msg rep;
    size_t rlen;
    int err;
    send_raw(fd, m, len);
    CHECK_EQ(san_proto_recv(fd, &rep, &rlen, NULL, 0), 0);
    CHECK(san_proto_decode(&rep, rlen, true, &err) == SAN_DECODE_OK);
    CHECK(rep.hdr.id == m->hdr.id);
    CHECK_EQ(rep.hdr.status, want);
}

/* The daemon's descriptors, not counting the fresh memfds it keeps for the next allocations. */
static int count_fds(pid_t pid)
{
    char path[64], link[384], target[256];
    snprintf(path, sizeof(path), "/proc/%d/fd", (int)pid);
    DIR *d = opendir(path);
    struct dirent *e;
    int n = 0;
    CHECK(d);
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.')
            continue;
        snprintf(link, sizeof(link), "%s/%s", path, e->d_name);
        ssize_t len = readlink(link, target, sizeof(target) - 1);
        if (len > 0) {
            target[len] = 0;
            if (!strncmp(target, "/memfd:", 7))
                continue;
        }
        n++;
    }
    closedir(d);
    return n;
}

/* Waits (up to 5 s) until the daemon has handled the hang-ups of closed connections. */
static bool fds_settle(pid_t pid, int want)
{
    for (int i = 0; i < 5000; i++) {
        if (count_fds(pid) == want)
            return true;
        struct timespec ts = {0, 1000000};
        nanosleep(&ts, NULL);
    }
    fprintf(stderr, "daemon has %d descriptors, want %d\n", count_fds(pid), want);
    return false;
}

int main(void)
{
    struct test_daemon d;
    struct san_stats_rep idle, s;
    struct san_msg m;

    test_init();
    test_daemon_start(&d, NULL);
    int base_fds = count_fds(d.pid); /* no connection yet */
    test_stats(&d, &idle);

    /* Well framed, bad content: error replies, connection stays. */
    int fd = test_connect(&d);
    san_proto_init(&m, SAN_OP_STATS, 7);
    m.hdr.version = 2;
    expect_reply(fd, &m, m.hdr.length, -EPROTO);
    san_proto_init(&m, SAN_OP_STATS, 8);
    m.hdr.opcode = 99;
    expect_reply(fd, &m, m.hdr.length, -EOPNOTSUPP);
    san_proto_init(&m, SAN_OP_STATS, 8);
    m.hdr.opcode = 0;
    expect_reply(fd, &m, m.hdr.length, -EOPNOTSUPP);
    san_proto_init(&m, SAN_OP_REGISTER, 9);
    m.hdr.length -= 8; /* body too short for the opcode */
    expect_reply(fd, &m, m.hdr.length, -EBADMSG);
    san_proto_init(&m, SAN_OP_STATS, 10);
    m.hdr.opcode |= SAN_OP_REPLY; /* a reply where a request belongs */
    expect_reply(fd, &m, m.hdr.length, -EBADMSG);
    san_proto_init(&m, SAN_OP_STATS, 11);
    m.hdr.status = -5;
    expect_reply(fd, &m, m.hdr.length, -EBADMSG);
    san_proto_init(&m, SAN_OP_ALLOC, 12);
    m.u.alloc_req.bytes = 4096;
    m.u.alloc_req.flags = 0x80;
    expect_reply(fd, &m, m.hdr.length, -EINVAL);
    san_proto_init(&m, SAN_OP_REGISTER, 13);
    m.u.register_req = (struct san_register_req){.va = 4096, .len = 4096, .access = 7};
    expect_reply(fd, &m, m.hdr.length, -EINVAL);
    san_proto_init(&m, SAN_OP_REGISTER, 14);
    m.u.register_req = (struct san_register_req){.va = UINT64_MAX - 10, .len = 4096, .access = 1};
    expect_reply(fd, &m, m.hdr.length, -EINVAL);
    san_proto_init(&m, SAN_OP_REGISTER, 15); /* unmapped in our address space */
    m.u.register_req = (struct san_register_req){.va = 4096, .len = 4096, .access = 1};
    expect_reply(fd, &m, m.hdr.length, -EFAULT);
    san_proto_init(&m, SAN_OP_FREE, 16);
    m.u.free_req.handle = 12345;
    expect_reply(fd, &m, m.hdr.length, -EINVAL);
    /* A reserved word set: a malformed message, whatever the arguments (proto.h). */
    san_proto_init(&m, SAN_OP_ALLOC, 16);
    m.u.alloc_req.bytes = 4096;
    m.u.alloc_req.reserved = 1;
    expect_reply(fd, &m, m.hdr.length, -EBADMSG);
    san_proto_init(&m, SAN_OP_DEREGISTER, 16);
    m.u.deregister_req = (struct san_deregister_req){.lkey = 0, .reserved = 2};
    expect_reply(fd, &m, m.hdr.length, -EBADMSG);
    san_proto_init(&m, SAN_OP_DEREGISTER, 16);
    m.u.deregister_req = (struct san_deregister_req){.lkey = 0};
    expect_reply(fd, &m, m.hdr.length, -EINVAL);
    san_proto_init(&m, SAN_OP_NETWORKS, 16);
    m.hdr.length -= 8; /* body too short */
    expect_reply(fd, &m, m.hdr.length, -EBADMSG);
    san_proto_init(&m, SAN_OP_STATS, 17);
    expect_reply(fd, &m, m.hdr.length, 0); /* still usable */

    /* NETWORKS, asked in every way a client can: the default [nic] addresses (127.0.0.0/8,
     * ::1/128), a page from any cursor (past the end: empty), unchanged only for the current
     * generation with cursor 0. */
    struct san_msg nreq, nrep;
    san_proto_init(&nreq, SAN_OP_NETWORKS, 0);
    CHECK_EQ(test_call(fd, &nreq, &nrep), 0);
    struct san_networks_rep nets = nrep.u.networks_rep;
    CHECK(nets.gen && nets.nr == 2 && !nets.next && !nets.unchanged);
    CHECK(nets.n[0].prefix == 104 && nets.n[0].ip[10] == 0xff && nets.n[0].ip[12] == 127);
    CHECK(nets.n[1].prefix == 128 && nets.n[1].ip[15] == 1);
    CHECK(nets.n[0].flags == SAN_WIRE_NET_LOCAL && nets.n[1].flags == SAN_WIRE_NET_LOCAL);
    san_proto_init(&nreq, SAN_OP_NETWORKS, 0);
    nreq.u.networks_req.known_gen = nets.gen;
    CHECK_EQ(test_call(fd, &nreq, &nrep), 0);
    CHECK(nrep.u.networks_rep.unchanged == 1 && !nrep.u.networks_rep.nr &&
          nrep.u.networks_rep.gen == nets.gen);
    san_proto_init(&nreq, SAN_OP_NETWORKS, 0);
    nreq.u.networks_req.known_gen = nets.gen + 1; /* a generation it never had */
    CHECK_EQ(test_call(fd, &nreq, &nrep), 0);
    CHECK(!nrep.u.networks_rep.unchanged && nrep.u.networks_rep.nr == 2);
    san_proto_init(&nreq, SAN_OP_NETWORKS, 0);
    nreq.u.networks_req = (struct san_networks_req){.cursor = 1, .known_gen = nets.gen};
    CHECK_EQ(test_call(fd, &nreq, &nrep), 0);
    CHECK(!nrep.u.networks_rep.unchanged && nrep.u.networks_rep.nr == 1 &&
          !memcmp(&nrep.u.networks_rep.n[0], &nets.n[1], sizeof(nets.n[1])));
    san_proto_init(&nreq, SAN_OP_NETWORKS, 0);
    nreq.u.networks_req.cursor = UINT64_MAX;
    CHECK_EQ(test_call(fd, &nreq, &nrep), 0);
    CHECK(!nrep.u.networks_rep.nr && !nrep.u.networks_rep.next);

    /* Descriptors cannot even be sent to the daemon (SO_PASSRIGHTS off on its socket); the
     * connection stays usable. test_daemon_attack covers kernels that cannot refuse them. */
    struct san_msg req;
    san_proto_init(&req, SAN_OP_STATS, 18);
    for (int i = 0; i < 20; i++) {
        int pfd[2];
        CHECK(!pipe(pfd));
        CHECK_EQ(san_proto_send(fd, &req, pfd[0], 0), -EPERM);
        close(pfd[0]);
        close(pfd[1]);
    }
    san_proto_init(&m, SAN_OP_STATS, 19);
    expect_reply(fd, &m, m.hdr.length, 0);
    CHECK(fds_settle(d.pid, base_fds + 5)); /* this connection: socket, pidfd, pagemap, maps, mem */
    close(fd);

    /* Framing garbage: the sender is disconnected. */
    static const char junk[] = "GET / HTTP/1.0\r\n\r\n";
    fd = test_connect(&d);
    send_raw(fd, junk, sizeof(junk));
    CHECK(closed_by_daemon(fd));
    close(fd);
    fd = test_connect(&d);
    send_raw(fd, "abc", 3); /* shorter than a header */
    CHECK(closed_by_daemon(fd));
    close(fd);
    fd = test_connect(&d);
    san_proto_init(&m, SAN_OP_STATS, 1);
    m.hdr.length = 1000; /* length that lies */
    send_raw(fd, &m, sizeof(m.hdr));
    CHECK(closed_by_daemon(fd));
    close(fd);
    fd = test_connect(&d);
    static char big[65536];
    san_proto_init((struct san_msg *)big, SAN_OP_STATS, 1);
    send_raw(fd, big, sizeof(big)); /* oversized */
    CHECK(closed_by_daemon(fd));
    close(fd);

    /* A client that sends without reading: its replies fill its socket, the daemon drops it (we
     * see our sends refused) while still serving others, and it is gone from the stats while we
     * still hold our end. */
    fd = test_connect(&d);
    test_stats(&d, &s);
    CHECK_EQ(s.clients, 2);
    san_proto_init(&req, SAN_OP_CLIENTS, 1);
    bool dropped = false;
    for (int i = 0; i < 1000000 && !dropped; i++) {
        ssize_t n = send(fd, &req, req.hdr.length, MSG_DONTWAIT | MSG_NOSIGNAL);
        if (n < 0 && (errno == EPIPE || errno == ECONNRESET)) {
            dropped = true;
        } else if (n < 0) {
            CHECK_EQ(-errno, -EAGAIN); /* the daemon has not read our last requests yet */
            struct pollfd w = {.fd = fd, .events = POLLOUT};
            CHECK(poll(&w, 1, 10) >= 0);
        }
        if (i % 1000 == 0)
            test_stats(&d, &s); /* served meanwhile */
    }
    CHECK(dropped);
    for (int i = 0; i < 5000; i++) {
        test_stats(&d, &s);
        if (s.clients == 1)
            break;
        struct timespec ts = {0, 1000000};
        nanosleep(&ts, NULL);
    }
    CHECK_EQ(s.clients, 1);
    close(fd);

    /* Random datagrams (some longer than any message), some with a valid header. */
    static union {
        struct san_msg_hdr hdr;
        unsigned char raw[1024];
    } g;
    uint64_t seed = 42;
    for (int round = 0; round < 300; round++) {
        fd = test_connect(&d);
        for (int k = 0; k < 4; k++) {
            size_t len = 1 + (seed = seed * 6364136223846793005u + 1442695040888963407u) % 900;
            for (size_t i = 0; i < len; i++) {
                seed = seed * 6364136223846793005u + 1442695040888963407u;
                g.raw[i] = (unsigned char)(seed >> 33);
            }
            if (round & 1 && len >= sizeof(g.hdr)) {
                g.hdr.magic = SAN_PROTO_MAGIC;
                g.hdr.version = SAN_PROTO_VERSION;
                g.hdr.length = (uint32_t)len;
                g.hdr.opcode = (uint16_t)(g.hdr.opcode % 12);
                g.hdr.status = 0;
            }
            if (send(fd, g.raw, len, MSG_NOSIGNAL) < 0)
                break;
        }
        close(fd);
    }
    test_wait_idle(&d, &idle);
    CHECK(fds_settle(d.pid, base_fds));
    CHECK_EQ(test_daemon_stop(&d), 0);
    printf("ok\n");
    return 0;
}
