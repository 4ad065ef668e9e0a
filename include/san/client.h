/* libsan: the client side of sanproxyd (the WSD SAN service provider's proxy calls). A context is
 * one connection to the daemon; everything it holds (allocations, registrations) is released when
 * it is closed or when the process dies. */
#ifndef SAN_CLIENT_H
#define SAN_CLIENT_H

#include <stddef.h>
#include <stdint.h>

#include <san/export.h>
#include <san/types.h>

#ifdef __cplusplus
extern "C" {
#endif

struct san_ctx;
struct san_mr;

/* Connects to sanproxyd at socket_path (NULL: $SANPROXY_SOCKET, else
 * $XDG_RUNTIME_DIR/sanproxy.sock, else /tmp/sanproxy.sock) and checks the protocol version.
 * -ENOENT/-ECONNREFUSED when no daemon listens, -EPROTO on a version mismatch, -EINVAL for a
 * malformed $SAN_RCACHE_MAX_ENTRIES / $SAN_RCACHE_MAX_BYTES (the registration cache's bounds).
 * Blocks for one round trip. A context belongs to the process that opened it: in a forked child
 * every call on it returns -ECHILD, except san_close (which frees the child's copy and releases
 * nothing of the parent's). */
/* Replies are polled for up to $SANPROXY_SPIN_US microseconds (default 20; 0: never) before the
 * calling thread sleeps. */
SAN_API int san_open(const char *socket_path, struct san_ctx **out);
/* Releases everything the context holds: its allocations are unmapped, its registrations dropped
 * (every struct san_mr of it becomes invalid), the connection closed. NULL is a no-op. */
SAN_API void san_close(struct san_ctx *ctx);

/* LOW: below 4 GiB, even on NOLOWMEM. SHARED: a connected peer of this host that is given an RDMA
 * descriptor of it for reading may map that range (san_rdma_map in nic.h); at most [limits]
 * endpoints such allocations per client (-ENOBUFS). */
enum { SAN_ALLOC_LOW = 1, SAN_ALLOC_CONTIGUOUS = 2, SAN_ALLOC_SHARED = 4 };
/* Allocates proxy memory (frames of the emulated machine, physically contiguous, zeroed), rounded
 * up to whole pages and mapped read-write into this process. Unknown flags or bytes 0: -EINVAL;
 * no memory: -ENOMEM; over the per-client allocation limit: -ENOBUFS. Blocks for one round trip. */
SAN_API int san_alloc(struct san_ctx *ctx, size_t bytes, unsigned flags, void **va);
/* Frees what san_alloc returned (the exact address): -EINVAL otherwise. */
SAN_API int san_free(struct san_ctx *ctx, void *va);
/* Physical address of a byte of san_alloc memory (no round trip) or of registered memory (one
 * round trip). -EINVAL for an address that is neither. */
SAN_API int san_physical_address(struct san_ctx *ctx, const void *va, san_paddr_t *pa);

/* Size of the descriptor san_register_rdma writes. */
#define SAN_RDMA_DESC_SIZE 40u

/* WSPRegisterMemory: locks [addr, addr+len) (whole pages) and registers it for local use. Goes
 * through the registration cache (docs/rcache.md): a cached registration that covers the range with
 * at least this access serves it (same keys, no round trip, no system call); registrations stay
 * cached after their last san_deregister until evicted or until the memory is unmapped. A call may
 * return the same handle as an earlier one; every successful call needs its own san_deregister.
 * Bad arguments: -EINVAL; an unmapped page: -EFAULT; over a per-client limit: -ENOBUFS; no frames:
 * -ENOMEM. A miss blocks for one round trip. */
SAN_API int san_register(struct san_ctx *ctx, void *addr, size_t len, unsigned access,
                         struct san_mr **out);
/* WSPRegisterRdmaMemory: as san_register, and the registration gets a remote key usable by the
 * connected peer. Writes an opaque descriptor (SAN_RDMA_DESC_SIZE bytes) to desc; if *desc_len is
 * too small, nothing is registered: -EFAULT and *desc_len = the size needed. Only a cached RDMA
 * registration of exactly the same pages serves it (the peer reaches every page of it). A cached
 * RDMA registration nobody holds has no rkey (peers cannot reach it); a hit on it gets a new rkey
 * (one round trip). */
SAN_API int san_register_rdma(struct san_ctx *ctx, void *addr, size_t len, unsigned access,
                              void *desc, size_t *desc_len, struct san_mr **out);
/* Drops the reference mr holds. At the last one the registration stays cached (locked and
 * registered; RDMA: its rkey revoked) until it is evicted or invalidated; one served uncached
 * (cache full of held entries, file mappings, cache disabled) is released: -EBUSY while an
 * operation still uses the memory (mr stays valid then). */
SAN_API int san_deregister(struct san_mr *mr);
SAN_API uint32_t san_mr_lkey(const struct san_mr *mr);
SAN_API uint32_t san_mr_rkey(const struct san_mr *mr); /* 0 for local registrations */

/* WSPMemoryRegistrationCacheCallback: the memory at [addr, addr+len) is going away. Every cached
 * registration overlapping it is released now (handles still held become invalid: their keys no
 * longer work; they are still deregistered). -EINVAL when nothing registered by this context
 * overlaps it. Unmapping the memory does the same on its own (docs/rcache.md). */
SAN_API int san_cache_invalidate(struct san_ctx *ctx, void *addr, size_t len);

#ifdef __cplusplus
}
#endif

#endif
