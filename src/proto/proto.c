/* The control protocol's decoder, message construction and the send/receive helpers.
 *
 * Sits on the wire structs of proto.h and the socket calls only. The decoder is a pure function: it
 * checks framing first (a datagram that does not even carry our header is garbage and costs the
 * sender its connection), then version, opcode and exact body size (each refused with an error
 * reply), then every field with a fixed domain. The public headers are included only to assert that
 * libsan's values are the wire's. No locking: nothing here has state. */
#include "proto/proto.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <san/client.h>
#include <san/types.h>

/* libsan passes its public values through unchanged: they must be the wire's. */
static_assert(SAN_PAGE_SIZE == SAN_WIRE_PAGE_SIZE, "page size");
static_assert(SAN_ALLOC_LOW == SAN_WIRE_ALLOC_LOW &&
                  SAN_ALLOC_CONTIGUOUS == SAN_WIRE_ALLOC_CONTIGUOUS &&
                  SAN_ALLOC_SHARED == SAN_WIRE_ALLOC_SHARED,
              "alloc flags");
static_assert(SAN_MEM_READ == SAN_WIRE_MEM_READ && SAN_MEM_WRITE == SAN_WIRE_MEM_WRITE &&
                  SAN_MEM_READWRITE == (SAN_WIRE_MEM_READ | SAN_WIRE_MEM_WRITE),
              "access bits");

long san_proto_body_size(unsigned opcode)
{
    bool reply = opcode & SAN_OP_REPLY;
    switch (opcode & ~SAN_OP_REPLY) {
    case SAN_OP_HELLO:
        return reply ? sizeof(struct san_hello_rep) : sizeof(struct san_hello_req);
    case SAN_OP_ALLOC:
        return reply ? sizeof(struct san_alloc_rep) : sizeof(struct san_alloc_req);
    case SAN_OP_FREE:
        return reply ? 0 : sizeof(struct san_free_req);
    case SAN_OP_REGISTER:
        return reply ? sizeof(struct san_register_rep) : sizeof(struct san_register_req);
    case SAN_OP_DEREGISTER:
        return reply ? sizeof(struct san_deregister_rep) : sizeof(struct san_deregister_req);
    case SAN_OP_PADDR:
        return reply ? sizeof(struct san_paddr_rep) : sizeof(struct san_paddr_req);
    case SAN_OP_STATS:
        return reply ? sizeof(struct san_stats_rep) : 0;
    case SAN_OP_CLIENTS:
        return reply ? sizeof(struct san_clients_rep) : sizeof(struct san_list_req);
    case SAN_OP_ALLOCATIONS:
        return reply ? sizeof(struct san_allocations_rep) : sizeof(struct san_list_req);
    case SAN_OP_ENDPOINTS:
        return reply ? sizeof(struct san_endpoints_rep) : sizeof(struct san_list_req);
    case SAN_OP_CHECK_LOWMEM:
        return reply ? sizeof(struct san_lowmem_rep) : 0;
    case SAN_OP_LINKS:
        return reply ? sizeof(struct san_links_rep) : sizeof(struct san_list_req);
    case SAN_OP_NETWORKS:
        return reply ? sizeof(struct san_networks_rep) : sizeof(struct san_networks_req);
    case SAN_OP_SET_REMOTE:
        return reply ? sizeof(struct san_set_remote_rep) : sizeof(struct san_set_remote_req);
    case SAN_OP_LISTEN:
        return reply ? sizeof(struct san_handle_rep) : sizeof(struct san_listen_req);
    case SAN_OP_LISTEN_CLOSE:
    case SAN_OP_EP_CLOSE:
        return reply ? 0 : sizeof(struct san_handle_req);
    case SAN_OP_CONNECT:
        return reply ? sizeof(struct san_ep_rep) : sizeof(struct san_connect_req);
    case SAN_OP_ACCEPT:
        return reply ? sizeof(struct san_ep_rep) : sizeof(struct san_handle_req);
    case SAN_OP_RDMA_MAP:
        return reply ? sizeof(struct san_rdma_map_rep) : sizeof(struct san_rdma_map_req);
    default:
        return -1;
    }
}

static bool access_ok(uint32_t a)
{
    return a && !(a & ~(SAN_WIRE_MEM_READ | SAN_WIRE_MEM_WRITE));
}

uint32_t san_proto_request_reserved(const struct san_msg *m)
{
    switch (m->hdr.opcode) {
    case SAN_OP_HELLO:
        return m->u.hello_req.reserved;
    case SAN_OP_ALLOC:
        return m->u.alloc_req.reserved;
    case SAN_OP_DEREGISTER:
        return m->u.deregister_req.reserved;
    case SAN_OP_PADDR:
        return m->u.paddr_req.reserved;
    case SAN_OP_LISTEN:
        return m->u.listen_req.addr.reserved | m->u.listen_req.addr.reserved2 |
               m->u.listen_req.reserved;
    case SAN_OP_CONNECT:
        return m->u.connect_req.addr.reserved | m->u.connect_req.addr.reserved2;
    case SAN_OP_RDMA_MAP:
        return m->u.rdma_map_req.reserved;
    default:
        return 0;
    }
}

/* Argument domains of a well-formed request: -EINVAL, as libsan answers the same arguments. */
static int check_request(const struct san_msg *m)
{
    if (san_proto_request_reserved(m))
        return -EBADMSG;
    switch (m->hdr.opcode) {
    case SAN_OP_HELLO:
        return m->u.hello_req.version ? 0 : -EINVAL;
    case SAN_OP_ALLOC:
        return m->u.alloc_req.bytes && !(m->u.alloc_req.flags & ~SAN_ALLOC_FLAGS_ALL) ? 0 : -EINVAL;
    case SAN_OP_FREE:
        return m->u.free_req.handle ? 0 : -EINVAL;
    case SAN_OP_REGISTER: {
        const struct san_register_req *r = &m->u.register_req;
        if (!r->va || !r->len || r->va + r->len < r->va || !access_ok(r->access) ||
            (r->flags & ~SAN_REG_RDMA))
            return -EINVAL;
        return 0;
    }
    case SAN_OP_DEREGISTER:
        return m->u.deregister_req.lkey ? 0 : -EINVAL;
    case SAN_OP_PADDR:
        return m->u.paddr_req.lkey ? 0 : -EINVAL;
    case SAN_OP_SET_REMOTE:
        return m->u.set_remote_req.lkey && m->u.set_remote_req.exposed <= 1 ? 0 : -EINVAL;
    case SAN_OP_LISTEN: {
        const struct san_listen_req *r = &m->u.listen_req;
        return r->addr.port && r->backlog && r->backlog <= INT32_MAX ? 0 : -EINVAL;
    }
    case SAN_OP_CONNECT:
        return m->u.connect_req.addr.port ? 0 : -EINVAL;
    case SAN_OP_LISTEN_CLOSE:
    case SAN_OP_EP_CLOSE:
    case SAN_OP_ACCEPT:
        return m->u.handle_req.handle ? 0 : -EINVAL;
    case SAN_OP_RDMA_MAP: {
        const struct san_rdma_map_req *r = &m->u.rdma_map_req;
        return r->handle && r->len && r->va + r->len >= r->va ? 0 : -EINVAL;
    }
    default:
        return 0;
    }
}

/* An endpoint listing: every entry's fields in their domains, unused entries zero. */
static int check_endpoints(const struct san_endpoints_rep *r)
{
    static const struct san_ep_info zero;
    if (r->nr > SAN_LIST_MAX || r->reserved)
        return -EBADMSG;
    for (uint32_t i = 0; i < SAN_LIST_MAX; i++) {
        const struct san_ep_info *e = &r->e[i];
        if (i >= r->nr) {
            if (memcmp(e, &zero, sizeof(zero)))
                return -EBADMSG;
            continue;
        }
        if (!e->id || e->state < SAN_WIRE_EP_CONNECTING || e->state > SAN_WIRE_EP_CLOSING ||
            e->error > 0 || e->error < -4095 ||
            ((e->state == SAN_WIRE_EP_ERROR || e->state == SAN_WIRE_EP_REFUSED) && !e->error) ||
            ((e->state == SAN_WIRE_EP_CONNECTING || e->state == SAN_WIRE_EP_CONNECTED) &&
             e->error) ||
            (e->bad_rings & ~SAN_WIRE_EP_BAD_ALL) || e->reserved || e->reserved2 ||
            e->local.reserved || e->local.reserved2 || e->remote.reserved || e->remote.reserved2 ||
            e->sq_fill > SAN_WIRE_EP_FILL_MAX || e->rq_fill > SAN_WIRE_EP_FILL_MAX ||
            e->cq_fill > SAN_WIRE_EP_FILL_MAX)
            return -EBADMSG;
    }
    return 0;
}

/* A links page: every listed entry in its domain, its text terminated. */
static int check_links(const struct san_links_rep *r)
{
    if (r->nr > SAN_LINKS_MAX || r->enabled > 1)
        return -EBADMSG;
    for (uint32_t i = 0; i < r->nr; i++) {
        const struct san_link_info *l = &r->l[i];
        if (l->state > SAN_LINK_STATE_MAX || l->nr_nets > 16 || l->addr.reserved ||
            l->addr.reserved2 || !memchr(l->last_error, 0, sizeof(l->last_error)))
            return -EBADMSG;
        for (uint32_t k = 0; k < l->nr_nets; k++)
            if (l->nets[k].prefix > 128 || l->nets[k].reserved)
                return -EBADMSG;
    }
    return 0;
}

/* A networks page: a generation, the listed entries in their domain, the rest zero; an unchanged
 * answer lists nothing. */
static int check_networks(const struct san_networks_rep *r)
{
    static const struct san_wire_served zero;
    if (!r->gen || r->nr > SAN_NETWORKS_MAX || r->unchanged > 1 ||
        (r->unchanged && (r->nr || r->next)))
        return -EBADMSG;
    for (uint32_t i = 0; i < SAN_NETWORKS_MAX; i++) {
        const struct san_wire_served *n = &r->n[i];
        if (i >= r->nr) {
            if (memcmp(n, &zero, sizeof(zero)))
                return -EBADMSG;
            continue;
        }
        if (n->prefix > 128 || (n->flags != SAN_WIRE_NET_LOCAL && n->flags != SAN_WIRE_NET_LINKED))
            return -EBADMSG;
    }
    return 0;
}

static int check_reply(const struct san_msg *m)
{
    switch (m->hdr.opcode & ~SAN_OP_REPLY) {
    case SAN_OP_NETWORKS:
        return check_networks(&m->u.networks_rep);
    case SAN_OP_LINKS:
        return check_links(&m->u.links_rep);
    case SAN_OP_ENDPOINTS:
        return check_endpoints(&m->u.endpoints_rep);
    case SAN_OP_CLIENTS:
        return m->u.clients_rep.nr <= SAN_LIST_MAX ? 0 : -EBADMSG;
    case SAN_OP_ALLOCATIONS:
        return m->u.allocations_rep.nr <= SAN_LIST_MAX ? 0 : -EBADMSG;
    case SAN_OP_ALLOC:
        return m->u.alloc_rep.bytes && !(m->u.alloc_rep.bytes % SAN_WIRE_PAGE_SIZE) ? 0 : -EBADMSG;
    case SAN_OP_HELLO:
        return m->u.hello_rep.flags & ~SAN_HELLO_STATUS ? -EBADMSG : 0;
    case SAN_OP_RDMA_MAP: {
        const struct san_rdma_map_rep *r = &m->u.rdma_map_rep;
        return r->bytes && !(r->bytes % SAN_WIRE_PAGE_SIZE) && r->offset < r->bytes ? 0 : -EBADMSG;
    }
    default:
        return 0;
    }
}

enum san_decode san_proto_decode(const void *buf, size_t len, bool reply, int *err)
{
    const struct san_msg *m = buf;
    *err = 0;

    if (len < sizeof(struct san_msg_hdr) || len > sizeof(struct san_msg))
        return SAN_DECODE_GARBAGE;
    if (m->hdr.magic != SAN_PROTO_MAGIC || m->hdr.length != len)
        return SAN_DECODE_GARBAGE;
    if (m->hdr.version != SAN_PROTO_VERSION) {
        *err = -EPROTO;
        return SAN_DECODE_REJECT;
    }
    if (!!(m->hdr.opcode & SAN_OP_REPLY) != reply) {
        *err = -EBADMSG;
        return SAN_DECODE_REJECT;
    }
    if (reply && m->hdr.status) {
        /* An error reply: a negative errno, no body; it may answer an opcode we do not know. */
        if (m->hdr.status > 0 || m->hdr.status < -4095 || len != sizeof(struct san_msg_hdr)) {
            *err = -EBADMSG;
            return SAN_DECODE_REJECT;
        }
        return SAN_DECODE_OK;
    }
    long body = san_proto_body_size(m->hdr.opcode);
    if (body < 0) {
        *err = -EOPNOTSUPP;
        return SAN_DECODE_REJECT;
    }
    if (!reply && m->hdr.status) {
        *err = -EBADMSG;
        return SAN_DECODE_REJECT;
    }
    if (len != sizeof(struct san_msg_hdr) + (size_t)body) {
        *err = -EBADMSG;
        return SAN_DECODE_REJECT;
    }
    *err = reply ? check_reply(m) : check_request(m);
    return *err ? SAN_DECODE_REJECT : SAN_DECODE_OK;
}

void san_proto_init(struct san_msg *m, unsigned opcode, uint64_t id)
{
    long body = san_proto_body_size(opcode);
    m->hdr = (struct san_msg_hdr){
        .magic = SAN_PROTO_MAGIC,
        .version = SAN_PROTO_VERSION,
        .opcode = (uint16_t)opcode,
        .length = (uint32_t)(sizeof(struct san_msg_hdr) + (body > 0 ? (size_t)body : 0)),
        .id = id,
    };
    if (body > 0)
        memset(m->u.raw, 0, (size_t)body);
}

void san_proto_reply(struct san_msg *m, const struct san_msg_hdr *req, int status)
{
    unsigned op = (req->opcode & ~SAN_OP_REPLY) | SAN_OP_REPLY;
    long body = status ? 0 : san_proto_body_size(op);
    m->hdr = (struct san_msg_hdr){
        .magic = SAN_PROTO_MAGIC,
        .version = SAN_PROTO_VERSION,
        .opcode = (uint16_t)op,
        .length = (uint32_t)(sizeof(struct san_msg_hdr) + (body > 0 ? (size_t)body : 0)),
        .status = status,
        .id = req->id,
    };
    if (body > 0)
        memset(m->u.raw, 0, (size_t)body);
}

int san_proto_send_fds(int sock, const struct san_msg *m, const int *fds, unsigned n, int flags)
{
    struct iovec iov = {.iov_base = (void *)m, .iov_len = m->hdr.length};
    union {
        char buf[CMSG_SPACE(sizeof(int) * SAN_PROTO_SEND_FDS)];
        struct cmsghdr align;
    } ctl;
    struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1};

    if (n > SAN_PROTO_SEND_FDS)
        return -EINVAL;
    if (n) {
        memset(&ctl, 0, sizeof(ctl));
        mh.msg_control = ctl.buf;
        mh.msg_controllen = CMSG_SPACE(sizeof(int) * n);
        struct cmsghdr *c = CMSG_FIRSTHDR(&mh);
        c->cmsg_level = SOL_SOCKET;
        c->cmsg_type = SCM_RIGHTS;
        c->cmsg_len = CMSG_LEN(sizeof(int) * n);
        memcpy(CMSG_DATA(c), fds, sizeof(int) * n);
    }
    for (;;) {
        ssize_t r = sendmsg(sock, &mh, flags | MSG_NOSIGNAL);
        if (r >= 0)
            return (size_t)r == m->hdr.length ? 0 : -EMSGSIZE;
        if (errno == EINTR)
            continue;
        return errno == EWOULDBLOCK ? -EAGAIN : -errno;
    }
}

int san_proto_send(int sock, const struct san_msg *m, int fd, int flags)
{
    return san_proto_send_fds(sock, m, &fd, fd >= 0 ? 1 : 0, flags);
}

/* One recvmsg of a whole datagram (MSG_TRUNC: its real length), retried on EINTR: the length,
 * or -EAGAIN / -errno. */
static ssize_t recv_datagram(int sock, struct msghdr *mh, int flags)
{
    for (;;) {
        ssize_t n = recvmsg(sock, mh, flags | MSG_TRUNC | MSG_CMSG_CLOEXEC);
        if (n >= 0)
            return n;
        if (errno != EINTR)
            return errno == EWOULDBLOCK ? -EAGAIN : -errno;
    }
}

int san_proto_recv_fds(int sock, struct san_msg *m, size_t *len, int *fds, unsigned max,
                       unsigned *nfds, int flags)
{
    struct iovec iov = {.iov_base = m, .iov_len = sizeof(*m)};
    union {
        char buf[CMSG_SPACE(sizeof(int) * 4)];
        struct cmsghdr align;
    } ctl;
    struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1};
    ssize_t n;

    *nfds = 0;
    mh.msg_control = ctl.buf;
    mh.msg_controllen = sizeof(ctl.buf);
    if ((n = recv_datagram(sock, &mh, flags)) < 0)
        return (int)n;
    /* Take what descriptors came; keep as many as are expected. */
    for (struct cmsghdr *c = CMSG_FIRSTHDR(&mh); c; c = CMSG_NXTHDR(&mh, c)) {
        if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS)
            continue;
        size_t nfd = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
        for (size_t i = 0; i < nfd; i++) {
            int got;
            memcpy(&got, CMSG_DATA(c) + i * sizeof(int), sizeof(int));
            if (*nfds < max)
                fds[(*nfds)++] = got;
            else
                close(got);
        }
    }
    if (n == 0) {
        while (*nfds)
            close(fds[--*nfds]);
        return -ECONNRESET;
    }
    *len = (size_t)n;
    return 0;
}

int san_proto_recv(int sock, struct san_msg *m, size_t *len, int *fd, int flags)
{
    unsigned n;
    int got = -1;
    int err = san_proto_recv_fds(sock, m, len, &got, fd ? 1 : 0, &n, flags);
    if (fd)
        *fd = n ? got : -1;
    return err;
}

int san_proto_recv_request(int sock, struct san_msg *m, size_t *len, struct san_proto_sender *from,
                           int flags)
{
    struct iovec iov = {.iov_base = m, .iov_len = sizeof(*m)};
    union {
        char buf[CMSG_SPACE(sizeof(struct ucred)) + CMSG_SPACE(sizeof(int) * SAN_PROTO_MAX_FDS)];
        struct cmsghdr align;
    } ctl;
    struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1};
    ssize_t n;

    from->has_cred = from->truncated = false;
    from->nr_fds = 0;
    mh.msg_control = ctl.buf;
    mh.msg_controllen = sizeof(ctl.buf);
    if ((n = recv_datagram(sock, &mh, flags)) < 0)
        return (int)n;
    from->truncated = mh.msg_flags & MSG_CTRUNC;
    for (struct cmsghdr *c = CMSG_FIRSTHDR(&mh); c; c = CMSG_NXTHDR(&mh, c)) {
        if (c->cmsg_level != SOL_SOCKET)
            continue;
        if (c->cmsg_type == SCM_CREDENTIALS && c->cmsg_len == CMSG_LEN(sizeof(struct ucred))) {
            struct ucred u;
            memcpy(&u, CMSG_DATA(c), sizeof(u));
            from->has_cred = true;
            from->pid = u.pid;
            from->uid = u.uid;
            from->gid = u.gid;
        } else if (c->cmsg_type == SCM_RIGHTS) {
            size_t nfd = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
            for (size_t i = 0; i < nfd && from->nr_fds < SAN_PROTO_MAX_FDS; i++)
                memcpy(&from->fds[from->nr_fds++], CMSG_DATA(c) + i * sizeof(int), sizeof(int));
        }
    }
    if (n == 0 && !from->nr_fds)
        return -ECONNRESET;
    *len = (size_t)n;
    return 0;
}

int san_proto_default_path(char *buf, size_t size)
{
    const char *dir = getenv("XDG_RUNTIME_DIR");
    int n;
    if (dir && *dir)
        n = snprintf(buf, size, "%s/sanproxy.sock", dir);
    else
        n = snprintf(buf, size, "/tmp/sanproxy.sock");
    if (n < 0 || (size_t)n >= size || (size_t)n >= sizeof(((struct sockaddr_un *)0)->sun_path))
        return -ENAMETOOLONG;
    return 0;
}
