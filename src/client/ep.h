/* libsan's endpoints and listeners (include/san/nic.h), as the rest of libsan sees them: a list
 * per context, forgotten at san_close, and the round trip they use. */
#ifndef SAN_CLIENT_EP_H
#define SAN_CLIENT_EP_H

#include <pthread.h>
#include <stdbool.h>

#include "proto/proto.h"

struct san_ctx;
struct san_ep;
struct san_listener;

struct san_nic_objs {
    pthread_mutex_t lock;
    struct san_ep *eps;
    struct san_listener *listeners;
};

/* 0, or the error of pthread_mutex_init (negative). */
int san_nic_objs_init(struct san_nic_objs *o);
/* san_close: unmaps and frees every endpoint and listener without asking the daemon (closing the
 * connection releases them there). */
void san_nic_forget_all(struct san_ctx *ctx, struct san_nic_objs *o);

/* client.c: one round trip on ctx (its lock taken), up to max descriptors back in fds. -ECHILD in a
 * forked child. */
int san_ctx_call(struct san_ctx *ctx, struct san_msg *req, struct san_msg *rep, int *fds,
                 unsigned max, unsigned *n);
struct san_nic_objs *san_ctx_nic(struct san_ctx *ctx);

/* For libsansock (not public): the endpoint's eventfd, armed for one wait until the matching
 * san_ep_wait_disarm, where san_ep_fd arms it for good. While nobody waits on it the NIC does not
 * write it, so a thread that polls the completion queue costs the NIC no system call. Arms nest;
 * any thread. */
int san_ep_wait_arm(struct san_ep *ep);
void san_ep_wait_disarm(struct san_ep *ep);

/* For libsansock (not public): a san_post_send flag saying the message holds no stream data of
 * the program (the sockets switch's CREDIT, DONE, SHUTDOWN, NEGOTIATE): a peer that dies with it
 * unread may still linger. */
#define SAN_EP_WR_NODATA (1u << 16)
/* For libsansock: whether the daemon finishes ep when this process goes away (exit, _exit,
 * SIGKILL) instead of closing it (proto/queue.h `linger`, docs/nic.md). One store in the
 * region: no system call, any thread. */
void san_ep_set_linger(struct san_ep *ep, bool on);

#endif
