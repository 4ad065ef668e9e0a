/* libsan's connection to sanproxyd: opening a context (connect, HELLO, the registration cache),
 * closing it, and one request with its reply on the SOCK_SEQPACKET control socket (proto).
 *
 * Waiting: a reply is polled for up to $SANPROXY_SPIN_US (default 20) microseconds before the
 * thread sleeps in recv; a sleep and wake-up costs more than most requests take.
 *
 * Closing the socket is the cleanup request: the daemon releases everything the context held, so
 * san_close only forgets its own state (endpoints and listeners included: ep.c). san_ctx_call is
 * the round trip of ep.c, which takes the lock itself. Locking: see ctx.h; requests are sent and
 * their replies received under ctx->lock. */
#include <errno.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "client/ctx.h"
#include "client/defaults.h"
#include "client/ep.h"
#include "common/clock.h"
#include "common/page.h"

int san_ctx_send_locked(struct san_ctx *ctx, struct san_msg *req)
{
    san_assert_mutex_held(&ctx->lock);
    req->hdr.id = ++ctx->next_id;
    int err = san_proto_send(ctx->fd, req, -1, 0);
    return err == -EPIPE ? -ECONNRESET : err;
}

/* Receives one message, polling for up to ctx->spin_ns before sleeping: a reply usually comes
 * within microseconds (the daemon polls too), and a sleep plus wake-up costs more than that on
 * these machines. sched_yield between polls lets a daemon that shares our CPU run. */
static int recv_spin(struct san_ctx *ctx, struct san_msg *m, size_t *len, int *fds, unsigned max,
                     unsigned *n)
{
    if (ctx->spin_ns) {
        uint64_t deadline = san_now_ns() + ctx->spin_ns;
        do {
            int err = san_proto_recv_fds(ctx->fd, m, len, fds, max, n, MSG_DONTWAIT);
            if (err != -EAGAIN)
                return err;
            sched_yield();
        } while (san_now_ns() < deadline);
    }
    return san_proto_recv_fds(ctx->fd, m, len, fds, max, n, 0);
}

static void close_all(int *fds, unsigned *n)
{
    while (*n)
        close(fds[--*n]);
}

/* Up to max descriptors that came with a successful reply land in fds (*n of them). */
static int recv_rep_fds(struct san_ctx *ctx, const struct san_msg *req, struct san_msg *rep,
                        int *fds, unsigned max, unsigned *n)
{
    size_t len;
    int err, derr;

    for (;;) {
        err = recv_spin(ctx, rep, &len, fds, max, n);
        if (err)
            return err;
        if (san_proto_decode(rep, len, true, &derr) != SAN_DECODE_OK ||
            (rep->hdr.opcode & ~SAN_OP_REPLY) != (req->hdr.opcode & ~SAN_OP_REPLY)) {
            close_all(fds, n);
            return -EPROTO;
        }
        if (rep->hdr.id == req->hdr.id)
            break;
        close_all(fds, n);
        if (!rep->hdr.id && rep->hdr.status)
            return rep->hdr.status; /* the daemon refused the connection (a limit), then ends */
    }
    if (rep->hdr.status) {
        close_all(fds, n);
        return rep->hdr.status;
    }
    return 0;
}

int san_ctx_recv_locked(struct san_ctx *ctx, const struct san_msg *req, struct san_msg *rep,
                        int *fd)
{
    san_assert_mutex_held(&ctx->lock);
    int got = -1;
    unsigned n = 0;
    int err = recv_rep_fds(ctx, req, rep, &got, fd ? 1 : 0, &n);
    if (fd)
        *fd = err || !n ? -1 : got;
    return err;
}

int san_ctx_call_locked(struct san_ctx *ctx, struct san_msg *req, struct san_msg *rep, int *fd)
{
    int err = san_ctx_send_locked(ctx, req);
    /* A connection the daemon refused is closed, but its refusal (id 0) waits to be read. */
    if (err == -ECONNRESET && !ctx->closing)
        return san_ctx_recv_locked(ctx, req, rep, fd);
    return err ? err : san_ctx_recv_locked(ctx, req, rep, fd);
}

struct san_nic_objs *san_ctx_nic(struct san_ctx *ctx)
{
    return &ctx->nic;
}

int san_ctx_call(struct san_ctx *ctx, struct san_msg *req, struct san_msg *rep, int *fds,
                 unsigned max, unsigned *n)
{
    *n = 0;
    if (san_ctx_forked(ctx))
        return -ECHILD;
    san_mutex_lock(&ctx->lock);
    int err = ctx->closing ? -ECONNRESET : san_ctx_send_locked(ctx, req);
    if (!err)
        err = recv_rep_fds(ctx, req, rep, fds, max, n);
    san_mutex_unlock(&ctx->lock);
    return err;
}

bool san_ctx_forked(const struct san_ctx *ctx)
{
    return san_rcache_forked(ctx->rc);
}

/* The daemon's status page (proto.h), mapped read-only from HELLO's descriptor; NULL: not one. */
static const struct san_status_page *map_status(int fd)
{
    if (fd < 0)
        return NULL;
    void *p = mmap(NULL, SAN_STATUS_BYTES, PROT_READ, MAP_SHARED, fd, 0);
    if (p == MAP_FAILED)
        return NULL;
    const struct san_status_page *page = p;
    if (page->magic != SAN_STATUS_MAGIC || page->version != 1) {
        munmap(p, SAN_STATUS_BYTES);
        return NULL;
    }
    return page;
}

int san_open(const char *socket_path, struct san_ctx **out)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    struct san_msg req, rep;
    struct san_ctx *ctx;
    int err;

    if (!out)
        return -EINVAL;
    *out = NULL;
    if (!socket_path || !*socket_path)
        socket_path = getenv("SANPROXY_SOCKET");
    if (socket_path && *socket_path) {
        if (strlen(socket_path) >= sizeof(sa.sun_path))
            return -ENAMETOOLONG;
        strcpy(sa.sun_path, socket_path);
    } else if ((err = san_proto_default_path(sa.sun_path, sizeof(sa.sun_path)))) {
        return err;
    }
    ctx = calloc(1, sizeof(*ctx));
    if (!ctx)
        return -ENOMEM;
    ctx->fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
    if (ctx->fd < 0) {
        err = -errno;
        goto fail_ctx;
    }
    if (connect(ctx->fd, (struct sockaddr *)&sa, sizeof(sa))) {
        err = -errno;
        goto fail_fd;
    }
    if ((err = san_mutex_init(&ctx->lock)))
        goto fail_fd;
    if ((err = san_nic_objs_init(&ctx->nic)))
        goto fail_lock;
    san_range_tree_init(&ctx->allocs);
    san_range_tree_init(&ctx->regs);
    san_list_init(&ctx->refs);
    const char *spin = getenv("SANPROXY_SPIN_US");
    ctx->spin_ns = (spin && *spin ? strtoull(spin, NULL, 10) : SAN_CLIENT_SPIN_US) * 1000;
    if (ctx->spin_ns > 1000000000u)
        ctx->spin_ns = 1000000000u;
    san_proto_init(&req, SAN_OP_HELLO, 0);
    req.u.hello_req.version = SAN_PROTO_VERSION;
    san_mutex_lock(&ctx->lock);
    int status_fd = -1;
    err = san_ctx_call_locked(ctx, &req, &rep, &status_fd);
    san_mutex_unlock(&ctx->lock);
    if (err)
        goto fail_nic;
    if (rep.u.hello_rep.version != SAN_PROTO_VERSION || rep.u.hello_rep.page_size != PAGE) {
        err = -EPROTO;
        goto fail_status;
    }
    ctx->host_id = rep.u.hello_rep.host_id;
    ctx->client_id = rep.u.hello_rep.client_id;
    if (rep.u.hello_rep.flags & SAN_HELLO_STATUS)
        ctx->status = map_status(status_fd);
    if ((err = san_rcache_create(NULL, &san_ctx_rcache_ops, ctx, &ctx->rc)))
        goto fail_status;
    if (status_fd >= 0)
        close(status_fd);
    *out = ctx;
    return 0;

fail_status:
    if (ctx->status)
        munmap((void *)ctx->status, SAN_STATUS_BYTES);
    if (status_fd >= 0)
        close(status_fd);
fail_nic:
    pthread_mutex_destroy(&ctx->nic.lock);
fail_lock:
    san_mutex_destroy(&ctx->lock);
fail_fd:
    close(ctx->fd);
fail_ctx:
    free(ctx);
    return err;
}

void san_close(struct san_ctx *ctx)
{
    if (!ctx)
        return;
    /* The cache first: it stops its watcher, and its releases are no-ops (the socket's end
     * releases everything). In a forked child it frees its copy and releases nothing. */
    bool child = san_ctx_forked(ctx);
    if (!child) {
        san_mutex_lock(&ctx->lock);
        ctx->closing = true;
        san_mutex_unlock(&ctx->lock);
    }
    san_ctx_reap_dead(ctx);
    san_rcache_destroy(ctx->rc);
    /* The watcher is gone: a release it was making as the close began (past its look at closing)
     * left its reference here. */
    san_ctx_free_dead(ctx);
    san_nic_forget_all(ctx, &ctx->nic);
    close(ctx->fd);
    if (ctx->status)
        munmap((void *)ctx->status, SAN_STATUS_BYTES);
    san_ctx_drop_allocs(ctx);
    san_ctx_drop_regs(ctx, child);
    san_mutex_destroy(&ctx->lock);
    free(ctx);
}
