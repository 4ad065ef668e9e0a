/* nic_pingpong: data across the SAN NIC between two processes. The parent listens on
 * 127.0.0.1:PORT, the child connects; each registers a buffer for RDMA and sends the other its
 * descriptor in a message (send/receive); then the child writes a pattern into the parent's buffer
 * by RDMA write, tells it so with a send (the write's data is there before the send completes at
 * the parent), and reads the parent's reply back by RDMA read. Every call is checked.
 * Usage: nic_pingpong [PORT] (default 7471); the daemon from $SANPROXY_SOCKET or its default. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <san/san.h>

#define BUF (64 * 1024)

static int die(const char *who, const char *what, int err)
{
    fprintf(stderr, "nic_pingpong %s: %s: %s\n", who, what, san_strerror(err));
    return 1;
}

/* One completion, checked. */
static int complete(struct san_ep *ep, const char *who, struct san_wc *wc)
{
    int err;
    while ((err = san_poll(ep, wc, 1)) == 0)
        if ((err = san_wait(ep, 5000)))
            return die(who, "san_wait", err);
    if (err < 0)
        return die(who, "san_poll", err);
    if (wc->status)
        return die(who, "completion", wc->status);
    return 0;
}

struct side {
    const char *who;
    struct san_ctx *ctx;
    struct san_ep *ep;
    char *buf, *msg;
    struct san_mr *mr, *msg_mr;
    char desc[SAN_RDMA_DESC_SIZE];
};

/* Registers the RDMA buffer and a message buffer, and trades descriptors with the peer. */
static int setup(struct side *s, char *peer_desc)
{
    int err;
    size_t len = sizeof(s->desc);
    struct san_wc wc;
    s->buf = mmap(NULL, BUF, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    s->msg = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (s->buf == MAP_FAILED || s->msg == MAP_FAILED)
        return die(s->who, "mmap", -ENOMEM);
    if ((err = san_register_rdma(s->ctx, s->buf, BUF, SAN_MEM_READWRITE, s->desc, &len, &s->mr)))
        return die(s->who, "san_register_rdma", err);
    if ((err = san_register(s->ctx, s->msg, 4096, SAN_MEM_READWRITE, &s->msg_mr)))
        return die(s->who, "san_register", err);
    struct san_sge in = {s->msg + 2048, 2048, san_mr_lkey(s->msg_mr)};
    struct san_sge out = {s->msg, SAN_RDMA_DESC_SIZE, san_mr_lkey(s->msg_mr)};
    memcpy(s->msg, s->desc, SAN_RDMA_DESC_SIZE);
    if ((err = san_post_recv(s->ep, 1, &in, 1)))
        return die(s->who, "san_post_recv", err);
    if ((err = san_post_send(s->ep, 2, &out, 1, 0)))
        return die(s->who, "san_post_send", err);
    for (int i = 0; i < 2; i++)
        if (complete(s->ep, s->who, &wc))
            return 1;
    memcpy(peer_desc, s->msg + 2048, SAN_RDMA_DESC_SIZE);
    return 0;
}

static int child(const struct sockaddr_in *sa)
{
    struct side s = {.who = "(connector)"};
    char peer[SAN_RDMA_DESC_SIZE];
    struct san_wc wc;
    int err;
    if ((err = san_open(NULL, &s.ctx)))
        return die(s.who, "san_open", err);
    if ((err = san_connect(s.ctx, (const struct sockaddr *)sa, sizeof(*sa), 5000, &s.ep)))
        return die(s.who, "san_connect", err);
    if (setup(&s, peer))
        return 1;
    for (int i = 0; i < BUF; i++)
        s.buf[i] = (char)(i * 7 + 3);
    struct san_sge w = {s.buf, BUF, san_mr_lkey(s.mr)};
    struct san_sge note = {s.msg, 16, san_mr_lkey(s.msg_mr)};
    strcpy(s.msg, "written");
    if ((err = san_rdma_write(s.ep, 3, &w, 1, peer, sizeof(peer), 0, SAN_WR_UNSIGNALED)) ||
        (err = san_post_send(s.ep, 4, &note, 1, 0)))
        return die(s.who, "post", err);
    if (complete(s.ep, s.who, &wc))
        return 1;
    /* The parent answers by putting its reply at offset 4096 of its buffer and saying so. */
    struct san_sge in = {s.msg + 2048, 2048, san_mr_lkey(s.msg_mr)};
    if ((err = san_post_recv(s.ep, 5, &in, 1)) || complete(s.ep, s.who, &wc))
        return err ? die(s.who, "san_post_recv", err) : 1;
    struct san_sge r = {s.buf, 64, san_mr_lkey(s.mr)};
    if ((err = san_rdma_read(s.ep, 6, &r, 1, peer, sizeof(peer), 4096, 0)) ||
        complete(s.ep, s.who, &wc))
        return err ? die(s.who, "san_rdma_read", err) : 1;
    printf("connector: read back \"%s\" from the listener's memory by RDMA read\n", s.buf);
    printf("connector: closing; the daemon releases its 2 registrations, kept in libsan's cache "
           "after use (its log says so: expected, not a leak)\n");
    fflush(stdout);
    san_ep_close(s.ep);
    san_close(s.ctx);
    return 0;
}

int main(int argc, char **argv)
{
    struct sockaddr_in sa = {.sin_family = AF_INET,
                             .sin_port = htons(argc > 1 ? (uint16_t)atoi(argv[1]) : 7471),
                             .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    struct side s = {.who = "(listener)"};
    struct san_listener *l;
    char peer[SAN_RDMA_DESC_SIZE];
    struct san_wc wc;
    int err;

    if ((err = san_open(NULL, &s.ctx)))
        return die(s.who, "cannot reach sanproxyd (is it running? SANPROXY_SOCKET?)", err);
    if ((err = san_listen(s.ctx, (struct sockaddr *)&sa, sizeof(sa), 1, &l)))
        return die(s.who, "san_listen", err);
    fflush(stdout);
    pid_t pid = fork();
    if (pid < 0)
        return die(s.who, "fork", -ENOMEM);
    if (pid == 0) /* the child opens its own context: the parent's is not its own */
        _exit(child(&sa));
    if ((err = san_accept(l, 5000, &s.ep)))
        return die(s.who, "san_accept", err);
    if (setup(&s, peer))
        return 1;
    struct san_sge in = {s.msg + 2048, 2048, san_mr_lkey(s.msg_mr)};
    if ((err = san_post_recv(s.ep, 7, &in, 1)) || complete(s.ep, s.who, &wc))
        return err ? die(s.who, "san_post_recv", err) : 1;
    int bad = 0;
    for (int i = 0; i < BUF; i++)
        bad += s.buf[i] != (char)(i * 7 + 3);
    printf("listener: \"%s\" arrived after %d bytes written into its memory by RDMA write, %s\n",
           s.msg + 2048, BUF, bad ? "WRONG" : "all correct");
    fflush(stdout);
    strcpy(s.buf + 4096, "hello from the listener");
    struct san_sge out = {s.msg, 8, san_mr_lkey(s.msg_mr)};
    if ((err = san_post_send(s.ep, 8, &out, 1, 0)) || complete(s.ep, s.who, &wc))
        return err ? die(s.who, "san_post_send", err) : 1;
    int status;
    waitpid(pid, &status, 0);
    bool ok = !bad && WIFEXITED(status) && !WEXITSTATUS(status);
    if (ok) /* before closing: the daemon logs the release that follows */
        printf("nic_pingpong: ok; listener: closing, its 2 cached registrations released too\n");
    fflush(stdout);
    san_ep_close(s.ep);
    san_listener_close(l);
    san_close(s.ctx);
    if (!ok) {
        fprintf(stderr, "nic_pingpong: failed\n");
        return 1;
    }
    return 0;
}
