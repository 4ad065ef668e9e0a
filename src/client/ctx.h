/* Internals of a libsan context (struct san_ctx), shared by the files of src/client that make up
 * the client side of sanproxyd (the SAN service provider's calls into its proxy):
 *   conn.c     the connection: open, close, one request and its reply
 *   alloc.c    proxy memory: allocate, free, physical addresses
 *   pins.c     the context's pins of its own pages (mlock does not nest)
 *   register.c registrations with the daemon, as the context holds them
 *   handle.c   the application's handles, served by the registration cache (rcache.c)
 *   ep.c       endpoints and listeners on the NIC (ep.h)
 *   networks.c the SAN networks the daemon serves (san_nic_networks)
 *
 * Locking: ctx->lock serialises everything on a context (the socket round trip and every tree and
 * list below), so a context may be shared by threads. Functions ending in _locked expect it held
 * (checked in debug builds); the cache's callbacks take it, always after the cache's own locks.
 * Contexts do not know each other: two contexts of one process that register overlapping pages each
 * unlock their own (documented limitation). */
#ifndef SAN_CLIENT_CTX_H
#define SAN_CLIENT_CTX_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include <san/client.h>

#include "client/ep.h"
#include "client/rcache.h"
#include "common/list.h"
#include "common/lockcheck.h"
#include "common/range.h"
#include "proto/proto.h"

/* Proxy memory mapped in this process. */
struct client_alloc {
    struct san_range r; /* mapped address, bytes */
    uint64_t handle;
    san_paddr_t pa;
};

/* One registration of the daemon, as this context sees it (all the references it holds on one
 * daemon registration: the same range, access and kind registered again share it). */
struct client_reg {
    struct san_range r; /* whole pages: what is pinned */
    uint64_t va, len;   /* as asked */
    uint32_t lkey, rkey;
    uint32_t refs; /* the daemon's reference count */
    unsigned access;
    bool rdma;
    bool proxy; /* inside one of ctx->allocs: the daemon registers its frames; nothing pinned */
};

/* One reference of the daemon's registration count, held by the registration cache (one per
 * cache entry). */
struct client_ref {
    struct san_ctx *ctx;          /* NULL once released */
    struct client_reg *reg;       /* what it is a reference to */
    struct san_list link;         /* ctx->refs while held */
    struct client_ref *dead_next; /* ctx->dead, once released by the cache */
    bool free_reg;                /* the last reference: reg goes with it */
};

struct san_ctx {
    struct san_mutex lock;
    int fd;
    uint64_t next_id;
    uint64_t host_id;
    uint32_t client_id;
    const struct san_status_page *status; /* the daemon's, mapped read-only; NULL: none */
    uint64_t spin_ns;       /* poll for a reply this long before sleeping ($SANPROXY_SPIN_US) */
    struct san_tree allocs; /* struct client_alloc by address */
    struct san_tree regs;   /* struct client_reg by page range (may overlap) */
    struct san_list refs;   /* struct client_ref held */
    struct san_rcache *rc;
    struct client_ref *dead; /* released by the cache, freed later (its thread never frees) */
    _Atomic bool closing;    /* san_close: the socket's end releases everything at once */
    struct san_nic_objs nic; /* endpoints and listeners (ep.c) */
};

/* conn.c: one request and its reply (ctx->lock held). send gives req a fresh id; recv waits for
 * the reply to req (replies to requests given up on are dropped) and returns its status or a
 * transport error; fd, if not NULL, gets a descriptor that came with a successful reply, or -1. */
int san_ctx_send_locked(struct san_ctx *ctx, struct san_msg *req);
int san_ctx_recv_locked(struct san_ctx *ctx, const struct san_msg *req, struct san_msg *rep,
                        int *fd);
int san_ctx_call_locked(struct san_ctx *ctx, struct san_msg *req, struct san_msg *rep, int *fd);

/* True in a process forked after the context was opened (every call there is -ECHILD). */
bool san_ctx_forked(const struct san_ctx *ctx);

/* alloc.c: unmaps and forgets every allocation (san_close; the daemon frees them). */
void san_ctx_drop_allocs(struct san_ctx *ctx);

/* pins.c: pins [start, start + len) (whole pages) for a registration with access: faults the pages
 * in with that access, then locks them. On failure what it pinned and no registration of the
 * context covers is unpinned again. 0, -EFAULT, -EPERM, -ENOBUFS (RLIMIT_MEMLOCK), -ENOMEM. */
int san_ctx_pin_locked(struct san_ctx *ctx, uint64_t start, uint64_t len, unsigned access);
/* Unpins the pages of [start, start + len) that no registration in ctx->regs covers and that are
 * still mapped. */
void san_ctx_unpin_uncovered_locked(struct san_ctx *ctx, uint64_t start, uint64_t len);

/* register.c: registers [addr, addr + len) with the daemon (pinning it first) and returns a new
 * reference. The same range, access and kind already held adds a reference to it. */
int san_ctx_register(struct san_ctx *ctx, void *addr, size_t len, unsigned access, bool rdma,
                     struct client_ref **out);
/* Drops a reference; the last one unpins and releases the daemon registration. With defer (the
 * cache's callback, which must not free) the reference goes to ctx->dead for san_ctx_reap_dead. */
int san_ctx_release(struct client_ref *ref, bool defer);
/* Frees what was released with defer. Called without ctx->lock. */
void san_ctx_reap_dead(struct san_ctx *ctx);
/* The same in san_close, once the cache and its watcher are gone (no thread adds to ctx->dead any
 * more): takes no lock. */
void san_ctx_free_dead(struct san_ctx *ctx);
/* Physical address of va in a registration the context holds: 0, -EINVAL (no registration holds
 * va), or the daemon's error. */
int san_ctx_reg_paddr_locked(struct san_ctx *ctx, uint64_t va, san_paddr_t *pa);
/* Unpins and forgets every registration and reference (san_close; the daemon drops them). In a
 * forked child (child) it only frees them. */
void san_ctx_drop_regs(struct san_ctx *ctx, bool child);

/* handle.c: the registration cache's callbacks. */
extern const struct san_rcache_ops san_ctx_rcache_ops;

#endif
