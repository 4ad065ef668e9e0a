/* san_nic_networks (include/san/nic.h): the SAN networks the daemon serves, a page of the NETWORKS
 * request at a time (proto.h). A generation that changes between pages means the set changed
 * while it was read: it is read again from the start, a bounded number of times. Sits on
 * san_ctx_call (the context's lock is held for each round trip, not across pages). */
#include <errno.h>
#include <netinet/in.h>
#include <stdatomic.h>
#include <string.h>

#include <san/nic.h>

#include "client/ctx.h"
#include "client/ep.h"

#define TRIES 8
#define MOST  4096 /* networks: far beyond what a daemon serves (16 + 16 links x 16) */

/* A wire network (IPv6 form, IPv4 as ::ffff:a.b.c.d with a prefix of at least 96) as the public
 * struct. */
static void from_wire(const struct san_wire_served *w, struct san_network *n)
{
    static const uint8_t v4mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    memset(n, 0, sizeof(*n));
    n->flags = w->flags == SAN_WIRE_NET_LOCAL ? SAN_NETWORK_LOCAL : SAN_NETWORK_LINKED;
    if (!memcmp(w->ip, v4mapped, sizeof(v4mapped)) && w->prefix >= 96) {
        struct sockaddr_in *in = (struct sockaddr_in *)&n->addr;
        in->sin_family = AF_INET;
        memcpy(&in->sin_addr, w->ip + 12, 4);
        n->prefix = w->prefix - 96;
    } else {
        struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&n->addr;
        in6->sin6_family = AF_INET6;
        memcpy(&in6->sin6_addr, w->ip, 16);
        n->prefix = w->prefix;
    }
}

int san_nic_networks(struct san_ctx *ctx, uint64_t *gen, struct san_network *nets, size_t max,
                     size_t *nr)
{
    if (!ctx || !gen || !nr || (!nets && max))
        return -EINVAL;
    struct san_msg req, rep;
    for (int t = 0; t < TRIES; t++) {
        uint64_t cursor = 0, seen = 0;
        size_t n = 0;
        for (;;) {
            unsigned nfds;
            san_proto_init(&req, SAN_OP_NETWORKS, 0);
            req.u.networks_req.cursor = cursor;
            req.u.networks_req.known_gen = cursor ? 0 : *gen;
            int err = san_ctx_call(ctx, &req, &rep, NULL, 0, &nfds);
            if (err)
                return err;
            const struct san_networks_rep *r = &rep.u.networks_rep;
            if (r->unchanged) {
                if (cursor || !*gen || r->gen != *gen)
                    return -EPROTO; /* only when asked, with cursor 0, about the current one */
                *nr = 0;
                return 0;
            }
            if (cursor && r->gen != seen)
                break; /* changed between pages: again from the start */
            seen = r->gen;
            /* A page must start where it was asked and move on, or a hostile daemon loops us. */
            if (r->next && (r->next <= cursor || r->next != cursor + r->nr || r->next > MOST))
                return -EPROTO;
            for (uint32_t i = 0; i < r->nr; i++, n++)
                if (n < max)
                    from_wire(&r->n[i], &nets[n]);
            if (!r->next) {
                *gen = seen;
                *nr = n;
                return 0;
            }
            cursor = r->next;
        }
    }
    return -EAGAIN; /* the set kept changing */
}

uint64_t san_nic_networks_changes(const struct san_ctx *ctx)
{
    if (!ctx || !ctx->status)
        return 0;
    return atomic_load_explicit(&ctx->status->networks_changes, memory_order_acquire);
}
