/* The control protocol between libsan / sanctl and sanproxyd.
 *
 * Every message on the SOCK_SEQPACKET control socket is one datagram: a fixed header followed by a
 * fixed-size body whose size the opcode decides. Requests and replies share the header; a reply has
 * SAN_OP_REPLY set in its opcode, the request's id, and a status (0 or a negative errno). An error
 * reply carries no body. All integers are little-endian in practice (both ends are on one host) and
 * wire structs hold only fixed-width integers, offsets, sizes and keys, never pointers; their
 * layout is pinned with static_assert. The allocation reply carries the allocation's memfd as
 * SCM_RIGHTS, HELLO's the daemon's status page (read-only).
 *
 * san_proto_decode is the one place that validates a received message: magic, version, opcode,
 * length and every body field that has a fixed domain (flags, access bits, reserved words). Nothing
 * reads a body before it passed. The helpers below it (send/recv one message) are thin blocking or
 * non-blocking wrappers around sendmsg/recvmsg; they keep no state and take no locks. */
#ifndef SAN_PROTO_PROTO_H
#define SAN_PROTO_PROTO_H

#include <assert.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define SAN_PROTO_MAGIC   0x504e4153u /* "SANP" */
#define SAN_PROTO_VERSION 1u

/* The wire's constants. The protocol defines them; libsan's public SAN_ALLOC_* and SAN_MEM_* have
 * the same values (proto.c asserts it), so the library passes its arguments through unchanged. */
#define SAN_WIRE_PAGE_SIZE        4096u /* of the emulated machine; hello reports it too */
#define SAN_WIRE_ALLOC_LOW        1u    /* alloc flags: below 4 GiB */
#define SAN_WIRE_ALLOC_CONTIGUOUS 2u    /* physically contiguous */
#define SAN_WIRE_ALLOC_SHARED     4u    /* connected peers of this host may map it (RDMA_MAP) */
#define SAN_ALLOC_FLAGS_ALL       (SAN_WIRE_ALLOC_LOW | SAN_WIRE_ALLOC_CONTIGUOUS | SAN_WIRE_ALLOC_SHARED)
#define SAN_WIRE_MEM_READ         1u /* register access: devices may read */
#define SAN_WIRE_MEM_WRITE        2u /* devices may write */
#define SAN_REG_RDMA              1u /* register flags: also usable by the connected peer (rkey) */

enum san_opcode {
    SAN_OP_HELLO = 1,         /* version check, daemon identity */
    SAN_OP_ALLOC = 2,         /* proxy memory: reply carries a memfd */
    SAN_OP_FREE = 3,          /* release an allocation by handle */
    SAN_OP_REGISTER = 4,      /* lock + register a range of the caller */
    SAN_OP_DEREGISTER = 5,    /* drop one reference of a registration */
    SAN_OP_PADDR = 6,         /* physical address of a byte of registered memory */
    SAN_OP_STATS = 7,         /* daemon-wide figures */
    SAN_OP_CLIENTS = 8,       /* list clients, a page at a time */
    SAN_OP_ALLOCATIONS = 9,   /* list allocations, a page at a time */
    SAN_OP_CHECK_LOWMEM = 10, /* NOLOWMEM pattern check */
    SAN_OP_SET_REMOTE = 11,   /* revoke / re-issue the rkey of an RDMA registration (cache) */
    SAN_OP_LISTEN = 12,       /* listen on a SAN address: reply carries the listener's eventfd */
    SAN_OP_LISTEN_CLOSE = 13, /* stop listening */
    SAN_OP_CONNECT = 14,      /* a new endpoint connecting: reply carries its region, eventfd */
    SAN_OP_ACCEPT = 15,       /* a new endpoint of a waiting connection: the same */
    SAN_OP_EP_CLOSE = 16,     /* close an endpoint */
    SAN_OP_ENDPOINTS = 17,    /* list the NIC's endpoints, a page at a time */
    SAN_OP_LINKS = 18,        /* list the links to other hosts' daemons, a page at a time */
    SAN_OP_NETWORKS = 19,     /* the SAN networks served: own and linked, with their generation */
    SAN_OP_RDMA_MAP = 20,     /* a same-host peer's shared registration: reply carries a memfd */
    SAN_OP_MAX = SAN_OP_RDMA_MAP,
};
#define SAN_OP_REPLY 0x8000u

struct san_msg_hdr {
    uint32_t magic;   /* SAN_PROTO_MAGIC */
    uint16_t version; /* SAN_PROTO_VERSION */
    uint16_t opcode;  /* enum san_opcode, | SAN_OP_REPLY in replies */
    uint32_t length;  /* whole message: header + body */
    int32_t status;   /* replies: 0 or -errno; requests: 0 */
    uint64_t id;      /* chosen by the requester, echoed in the reply */
};
static_assert(sizeof(struct san_msg_hdr) == 24, "wire layout");
static_assert(offsetof(struct san_msg_hdr, id) == 16, "wire layout");

/* --- bodies ----------------------------------------------------------------------------------- */

struct san_hello_req {
    uint32_t version; /* highest protocol version the client speaks */
    uint32_t reserved;
};
struct san_hello_rep {
    uint32_t version;   /* protocol version in use */
    uint32_t page_size; /* of the emulated machine */
    uint64_t host_id;   /* identifies this daemon instance in RDMA descriptors */
    uint32_t client_id; /* the daemon's number for this connection */
    uint32_t flags;     /* SAN_HELLO_STATUS: the reply carries the status page's descriptor */
};
#define SAN_HELLO_STATUS 1u

/* The daemon's status page: one page every client maps read-only from the descriptor HELLO's
 * reply carries (a memfd sealed against writes: only the daemon's own mapping writes it). A client
 * reads it with no round trip. networks_changes grows whenever the set of networks NETWORKS lists
 * changes (a link up or down, a peer's new session); it says nothing of what the set is. */
#define SAN_STATUS_MAGIC 0x54534e53u /* "SNST" */
#define SAN_STATUS_BYTES 4096u       /* the memfd's size, which both sides map */
struct san_status_page {
    uint32_t magic;   /* SAN_STATUS_MAGIC once the page is ready */
    uint32_t version; /* of this layout: 1 */
    _Atomic uint64_t networks_changes;
};

struct san_alloc_req {
    uint64_t bytes;
    uint32_t flags; /* SAN_WIRE_ALLOC_* */
    uint32_t reserved;
};
struct san_alloc_rep {
    uint64_t handle; /* names the allocation in SAN_OP_FREE; per client */
    uint64_t bytes;  /* whole pages: the size of the memfd */
    uint64_t paddr;  /* physical address of the first byte; the allocation is contiguous */
};

struct san_free_req {
    uint64_t handle;
};

struct san_register_req {
    uint64_t va; /* in the caller's address space (already mlocked by the caller) */
    uint64_t len;
    uint32_t access; /* SAN_WIRE_MEM_READ and/or SAN_WIRE_MEM_WRITE */
    uint32_t flags;  /* SAN_REG_RDMA */
};
struct san_register_rep {
    uint32_t lkey;
    uint32_t rkey; /* 0 unless SAN_REG_RDMA */
    uint32_t refs; /* reference count after this call: 1 for a new registration */
    uint32_t reserved;
};

struct san_deregister_req {
    uint32_t lkey;
    uint32_t reserved;
};
struct san_deregister_rep {
    uint32_t refs; /* references left: 0 when the registration is gone */
    uint32_t reserved;
};

/* libsan's registration cache keeps idle RDMA registrations: it revokes the rkey while nobody
 * holds the registration (peers cannot reach it) and has a new one issued on its next use. */
struct san_set_remote_req {
    uint32_t lkey;
    uint32_t exposed; /* 0: revoke the rkey; 1: issue one if it is revoked */
};
struct san_set_remote_rep {
    uint32_t rkey; /* current rkey, 0 when revoked */
    uint32_t reserved;
};

struct san_paddr_req {
    uint32_t lkey;
    uint32_t reserved;
    uint64_t offset; /* from the registration's va */
};
struct san_paddr_rep {
    uint64_t paddr;
};

struct san_stats_rep {
    uint64_t clients, allocations, allocated_bytes, locked_bytes, registrations;
    uint64_t ram_bytes, free_bytes, low_free_bytes, dma_faults, bounce_bytes;
    uint64_t map_registers_in_use;
    uint32_t nolowmem;
    uint32_t reserved;
    uint64_t endpoints, nic_ops, nic_bytes, links;
};

/* A SAN address: IPv6 bytes (IPv4 as ::ffff:a.b.c.d) and a port. */
struct san_wire_addr {
    uint8_t ip[16];
    uint16_t port;
    uint16_t reserved;
    uint32_t reserved2;
};
struct san_listen_req {
    struct san_wire_addr addr;
    uint32_t backlog;
    uint32_t reserved;
};
struct san_handle_rep {
    uint64_t handle; /* per client */
};
struct san_handle_req {
    uint64_t handle;
};
struct san_connect_req {
    struct san_wire_addr addr;
};
/* RDMA_MAP: the range of the peer's RDMA descriptor (host_id, rkey, va, len) that endpoint handle's
 * peer registered for reading, in proxy memory it allocated SHARED; the reply carries a read-only
 * memfd of that allocation, bytes long, with va at offset. id names the allocation (the same for
 * every range of it, never another's while the caller holds a mapping). */
struct san_rdma_map_req {
    uint64_t handle;
    uint64_t host_id;
    uint64_t va, len;
    uint32_t rkey;
    uint32_t reserved;
};
struct san_rdma_map_rep {
    uint64_t offset;
    uint64_t bytes;
    uint64_t id;
};
/* CONNECT and ACCEPT: the region (proto/queue.h) and the eventfd of san_ep_fd come with it. */
struct san_ep_rep {
    uint64_t handle;
    uint64_t region_size;
    struct san_wire_addr peer;
};

/* Listings: the request names where to start, the reply holds up to SAN_LIST_MAX entries and the
 * cursor of the next page (0 when done). */
#define SAN_LIST_MAX 16
struct san_list_req {
    uint64_t cursor;
};
struct san_client_info {
    uint32_t id;
    int32_t pid;
    uint32_t uid;
    uint32_t gid;
    uint64_t allocations, allocated_bytes;
    uint64_t registrations, locked_bytes;
};
struct san_clients_rep {
    uint64_t next;
    uint32_t nr;
    uint32_t reserved;
    struct san_client_info c[SAN_LIST_MAX];
};
struct san_alloc_info {
    uint32_t client_id;
    int32_t pid;
    uint32_t flags;
    uint32_t reserved;
    uint64_t handle, paddr, bytes;
};
struct san_allocations_rep {
    uint64_t next;
    uint32_t nr;
    uint32_t reserved;
    struct san_alloc_info a[SAN_LIST_MAX];
};

/* ENDPOINTS pages by the NIC's endpoint id (cursor = first id wanted). Root and the daemon's own
 * uid see every endpoint; anyone else only those of clients with its own uid. */
enum san_wire_ep_state {
    SAN_WIRE_EP_CONNECTING = 1, /* connect asked, not accepted yet */
    SAN_WIRE_EP_CONNECTED = 2,
    SAN_WIRE_EP_REFUSED = 3, /* the listener went before accepting: error says so */
    SAN_WIRE_EP_ERROR = 4,   /* error: the first error */
    SAN_WIRE_EP_CLOSING = 5, /* its owner closed it; it goes when its engine lets go */
};
/* A ring's indexes in the shared region make no sense (its client scribbled): fill clamped. */
#define SAN_WIRE_EP_BAD_SQ   1u
#define SAN_WIRE_EP_BAD_RQ   2u
#define SAN_WIRE_EP_BAD_CQ   4u
#define SAN_WIRE_EP_BAD_ALL  7u
#define SAN_WIRE_EP_FILL_MAX 128u /* the deepest ring (completions) */
struct san_ep_info {
    uint64_t id;     /* the NIC's number for the endpoint: listing order */
    uint64_t handle; /* the owner's handle for it */
    uint32_t client_id;
    int32_t pid;
    uint32_t uid;
    uint32_t peer_client_id; /* the peer endpoint's owner; 0: none (not accepted) */
    uint32_t state;          /* enum san_wire_ep_state */
    int32_t error;           /* REFUSED, ERROR (and CLOSING after one): the first error; else 0 */
    uint32_t bad_rings;      /* SAN_WIRE_EP_BAD_* */
    uint32_t reserved;
    struct san_wire_addr local, remote; /* port 0: none */
    uint32_t sq_fill, rq_fill, cq_fill; /* posted, not yet taken (completions: not yet polled) */
    uint32_t reserved2;
    uint64_t ops, bytes; /* completed work requests, bytes moved */
};
struct san_endpoints_rep {
    uint64_t next;
    uint32_t nr;
    uint32_t reserved;
    struct san_ep_info e[SAN_LIST_MAX];
};

/* SAN_OP_LINKS: the cursor is the index of the first link wanted (the order of [link] peers). */
#define SAN_LINKS_MAX      4
#define SAN_LINK_STATE_MAX 2 /* link/link.h: connecting, up, down */
struct san_wire_net {
    uint8_t ip[16];  /* IPv6, or ::ffff:a.b.c.d */
    uint32_t prefix; /* 0..128 */
    uint32_t reserved;
};
struct san_link_info {
    struct san_wire_addr addr; /* the peer's link address, as configured */
    uint32_t state;            /* 0 connecting, 1 up, 2 down */
    uint32_t nr_nets;          /* networks the peer serves (while up) */
    uint64_t host_id;          /* the peer daemon's, from its last session; 0: never up */
    uint64_t bytes_tx, bytes_rx, msgs_tx, msgs_rx;
    uint64_t sessions;     /* handshakes completed */
    char last_error[88];   /* NUL-terminated; "" when none */
    uint64_t mac_failures; /* messages whose MAC failed (where last_error's last 8 bytes were) */
    struct san_wire_net nets[16];
};
struct san_links_rep {
    uint64_t next;
    uint32_t nr;
    uint32_t enabled; /* 1: the daemon has a [link] section */
    struct san_link_info l[SAN_LINKS_MAX];
};

/* SAN_OP_NETWORKS: the networks this daemon serves on the SAN ([nic] addresses, LOCAL) and those
 * the peers of its links that are up serve (LINKED), a page at a time (cursor: the index of the
 * first network wanted). gen changes whenever the set changes (never 0): a request whose known_gen
 * is the current one (cursor 0) gets unchanged = 1 and no entries, so a client that caches the
 * answer refreshes it for the price of one small round trip. */
#define SAN_NETWORKS_MAX    64
#define SAN_WIRE_NET_LOCAL  1u
#define SAN_WIRE_NET_LINKED 2u
struct san_networks_req {
    uint64_t cursor;
    uint64_t known_gen; /* 0: none */
};
struct san_wire_served {
    uint8_t ip[16];  /* IPv6, or ::ffff:a.b.c.d */
    uint32_t prefix; /* 0..128 over the IPv6 form */
    uint32_t flags;  /* SAN_WIRE_NET_LOCAL or SAN_WIRE_NET_LINKED */
};
struct san_networks_rep {
    uint64_t gen;
    uint64_t next; /* cursor of the next page; 0: done */
    uint32_t nr;
    uint32_t unchanged; /* 1: known_gen is current, no entries */
    struct san_wire_served n[SAN_NETWORKS_MAX];
};

struct san_lowmem_rep {
    uint64_t dirty_frames;
    uint32_t nolowmem; /* 0: the check does not apply (nothing is scrubbed) */
    uint32_t reserved;
};

static_assert(sizeof(struct san_hello_req) == 8, "wire layout");
static_assert(sizeof(struct san_hello_rep) == 24, "wire layout");
static_assert(sizeof(struct san_status_page) == 16, "wire layout");
static_assert(sizeof(struct san_alloc_req) == 16, "wire layout");
static_assert(sizeof(struct san_alloc_rep) == 24, "wire layout");
static_assert(sizeof(struct san_free_req) == 8, "wire layout");
static_assert(sizeof(struct san_register_req) == 24, "wire layout");
static_assert(sizeof(struct san_register_rep) == 16, "wire layout");
static_assert(sizeof(struct san_deregister_req) == 8, "wire layout");
static_assert(sizeof(struct san_deregister_rep) == 8, "wire layout");
static_assert(sizeof(struct san_set_remote_req) == 8, "wire layout");
static_assert(sizeof(struct san_set_remote_rep) == 8, "wire layout");
static_assert(sizeof(struct san_paddr_req) == 16, "wire layout");
static_assert(sizeof(struct san_paddr_rep) == 8, "wire layout");
static_assert(sizeof(struct san_stats_rep) == 128, "wire layout");
static_assert(sizeof(struct san_wire_addr) == 24, "wire layout");
static_assert(sizeof(struct san_listen_req) == 32, "wire layout");
static_assert(sizeof(struct san_handle_rep) == 8, "wire layout");
static_assert(sizeof(struct san_handle_req) == 8, "wire layout");
static_assert(sizeof(struct san_connect_req) == 24, "wire layout");
static_assert(sizeof(struct san_ep_rep) == 40, "wire layout");
static_assert(sizeof(struct san_rdma_map_req) == 40, "wire layout");
static_assert(sizeof(struct san_rdma_map_rep) == 24, "wire layout");
static_assert(sizeof(struct san_list_req) == 8, "wire layout");
static_assert(sizeof(struct san_client_info) == 48, "wire layout");
static_assert(sizeof(struct san_clients_rep) == 16 + 48 * SAN_LIST_MAX, "wire layout");
static_assert(sizeof(struct san_alloc_info) == 40, "wire layout");
static_assert(sizeof(struct san_allocations_rep) == 16 + 40 * SAN_LIST_MAX, "wire layout");
static_assert(sizeof(struct san_lowmem_rep) == 16, "wire layout");
static_assert(sizeof(struct san_ep_info) == 128, "wire layout");
static_assert(sizeof(struct san_endpoints_rep) == 16 + 128 * SAN_LIST_MAX, "wire layout");
static_assert(sizeof(struct san_wire_net) == 24, "wire layout");
static_assert(sizeof(struct san_link_info) == 176 + 24 * 16, "wire layout");
static_assert(sizeof(struct san_links_rep) == 16 + 560 * SAN_LINKS_MAX, "wire layout");
static_assert(sizeof(struct san_networks_req) == 16, "wire layout");
static_assert(sizeof(struct san_wire_served) == 24, "wire layout");
static_assert(sizeof(struct san_networks_rep) == 24 + 24 * SAN_NETWORKS_MAX, "wire layout");

/* The largest message either side ever sends; a datagram longer than this is garbage. */
#define SAN_MSG_MAX (sizeof(struct san_msg_hdr) + sizeof(struct san_links_rep))
static_assert(sizeof(struct san_links_rep) >= sizeof(struct san_endpoints_rep) &&
                  sizeof(struct san_links_rep) >= sizeof(struct san_clients_rep) &&
                  sizeof(struct san_links_rep) >= sizeof(struct san_allocations_rep) &&
                  sizeof(struct san_links_rep) >= sizeof(struct san_networks_rep),
              "the largest body");

/* A message as it travels: the header and room for the largest body. */
struct san_msg {
    struct san_msg_hdr hdr;
    union {
        uint8_t raw[SAN_MSG_MAX - sizeof(struct san_msg_hdr)];
        struct san_hello_req hello_req;
        struct san_hello_rep hello_rep;
        struct san_alloc_req alloc_req;
        struct san_alloc_rep alloc_rep;
        struct san_free_req free_req;
        struct san_register_req register_req;
        struct san_register_rep register_rep;
        struct san_deregister_req deregister_req;
        struct san_deregister_rep deregister_rep;
        struct san_set_remote_req set_remote_req;
        struct san_set_remote_rep set_remote_rep;
        struct san_paddr_req paddr_req;
        struct san_paddr_rep paddr_rep;
        struct san_stats_rep stats_rep;
        struct san_list_req list_req;
        struct san_clients_rep clients_rep;
        struct san_allocations_rep allocations_rep;
        struct san_endpoints_rep endpoints_rep;
        struct san_lowmem_rep lowmem_rep;
        struct san_links_rep links_rep;
        struct san_networks_req networks_req;
        struct san_networks_rep networks_rep;
        struct san_listen_req listen_req;
        struct san_handle_req handle_req;
        struct san_handle_rep handle_rep;
        struct san_connect_req connect_req;
        struct san_ep_rep ep_rep;
        struct san_rdma_map_req rdma_map_req;
        struct san_rdma_map_rep rdma_map_rep;
    } u;
};

/* What the decoder concluded about a received datagram. */
enum san_decode {
    SAN_DECODE_OK = 0,  /* valid: the body may be used */
    SAN_DECODE_REJECT,  /* well framed but unacceptable: send an error reply with *err */
    SAN_DECODE_GARBAGE, /* not our protocol (bad magic, truncated header, length lies): disconnect
                         */
};

/* Size of the body of opcode (requests, or replies with SAN_OP_REPLY set); -1 for unknown. */
long san_proto_body_size(unsigned opcode);

/* Validates a received datagram of len bytes at buf (len may exceed SAN_MSG_MAX: then it is
 * garbage). reply says whether a reply is expected (client side) or a request (daemon side).
 * On SAN_DECODE_REJECT, *err is the status for the error reply:
 *   -EPROTO      another protocol version;
 *   -EOPNOTSUPP  an unknown opcode;
 *   -EBADMSG     a malformed message: the wrong direction, a status in a request, a body of
 *                another size than the opcode's, a reserved word that is not 0, or a reply field
 *                out of its domain;
 *   -EINVAL      a well-formed request whose arguments are out of their domain (unknown flags or
 *                access bits, a zero size, handle or key, a range that wraps): what libsan itself
 *                returns for the same arguments.
 * A reply with a non-zero status is accepted with an empty body. Pure function: no side effects,
 * no allocation. */
enum san_decode san_proto_decode(const void *buf, size_t len, bool reply, int *err);
/* The reserved words of a request whose body size is right, ORed: not 0 makes the request
 * malformed (-EBADMSG), before any argument is looked at. The decoder's rule, shared with its
 * fuzzer. */
uint32_t san_proto_request_reserved(const struct san_msg *m);

/* Fills hdr for a message of opcode with a body of the opcode's size. */
void san_proto_init(struct san_msg *m, unsigned opcode, uint64_t id);
/* Turns request header req into the header of its reply with status; the body size follows
 * (empty when status != 0). */
void san_proto_reply(struct san_msg *m, const struct san_msg_hdr *req, int status);

/* Sends m (its hdr.length bytes) and, if fd >= 0, the descriptor as SCM_RIGHTS. flags are
 * sendmsg flags (MSG_DONTWAIT on the daemon side). 0 or -errno. */
int san_proto_send(int sock, const struct san_msg *m, int fd, int flags);
/* The same with n (<= SAN_PROTO_SEND_FDS) descriptors. */
#define SAN_PROTO_SEND_FDS 2
int san_proto_send_fds(int sock, const struct san_msg *m, const int *fds, unsigned n, int flags);
/* Receives one datagram like san_proto_recv, keeping up to max descriptors in fds (*nfds of
 * them; the rest are closed). */
int san_proto_recv_fds(int sock, struct san_msg *m, size_t *len, int *fds, unsigned max,
                       unsigned *nfds, int flags);
/* Receives one datagram into m. *len gets its real length (which exceeds sizeof(*m) for an
 * oversized one, whose tail is dropped); *fd a descriptor passed with it, or -1 (fd may be NULL:
 * descriptors are then refused and closed). 0, -EAGAIN, -ECONNRESET on end of stream, or -errno. */
int san_proto_recv(int sock, struct san_msg *m, size_t *len, int *fd, int flags);

/* What came with a request besides its bytes (the daemon's receive). */
#define SAN_PROTO_MAX_FDS 253 /* the kernel's most descriptors in one message */
struct san_proto_sender {
    bool has_cred; /* SCM_CREDENTIALS came (the socket has SO_PASSCRED) */
    pid_t pid;     /* the sending process */
    uid_t uid;
    gid_t gid;
    bool truncated;  /* MSG_CTRUNC: the kernel dropped control data */
    unsigned nr_fds; /* descriptors passed with it: the caller must dispose of them */
    int fds[SAN_PROTO_MAX_FDS];
};
/* Receives one request into m like san_proto_recv, with the sender's credentials. Descriptors
 * are never closed here (closing one can block: see daemon/closer.c); they are handed over in
 * from->fds. 0, -EAGAIN, -ECONNRESET on end of stream, or -errno. */
int san_proto_recv_request(int sock, struct san_msg *m, size_t *len, struct san_proto_sender *from,
                           int flags);

/* The default socket path: $XDG_RUNTIME_DIR/sanproxy.sock, else /tmp/sanproxy.sock. Writes into
 * buf (size bytes); -ENAMETOOLONG when it does not fit. */
int san_proto_default_path(char *buf, size_t size);

#endif
