/* Links between hosts: this daemon's libfabric endpoint and the peer daemons it is linked to.
 *
 * One RDM endpoint per daemon ([link] listen, the provider of [link] provider). Every configured
 * peer is a link: a handshake proves that both ends hold the shared secret and tells each side
 * the other's host_id and the SAN networks it serves; heartbeats keep it up, and a link that stays
 * silent for [link] timeout is declared down and retried with backoff (wire.h, auth.h;
 * docs/link.md).
 *
 * Threads: the link's own thread owns the libfabric objects and drives their progress (the
 * providers here progress manually) and every link's state machine; the daemon's loop only reads
 * snapshots (san_link_peer_info, san_link_up) and drains state changes (san_link_events) when the
 * eventfd san_link_event_fd becomes readable. A mutex guards what both see; the link thread holds
 * it only while it handles a batch of completions or timers, never across a wait. */
#ifndef SAN_LINK_LINK_H
#define SAN_LINK_LINK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "nic/nic.h"

#define SAN_LINK_MAX_PEERS       16
#define SAN_LINK_SECRET_MAX      256
#define SAN_LINK_DEFAULT_PROV    "tcp;ofi_rxm"
#define SAN_LINK_DEFAULT_TIMEOUT (5 * 1000000000ULL)

/* [link]: enabled once the section sets any key. */
struct san_link_config {
    bool enabled;
    struct sockaddr_storage listen; /* a specific address: peers name it in their peers */
    socklen_t listen_len;
    struct sockaddr_storage peers[SAN_LINK_MAX_PEERS];
    socklen_t peer_len[SAN_LINK_MAX_PEERS];
    size_t nr_peers;
    char provider[64];
    uint64_t timeout_ns;
    uint8_t secret[SAN_LINK_SECRET_MAX]; /* secret or the contents of secret_file */
    size_t secret_len;                   /* 0: unauthenticated links */
};

/* addr.c: "ADDR:PORT" (IPv4 a.b.c.d:port, IPv6 [addr]:port; numeric only, port 1..65535) into a
 * socket address. -EINVAL. */
int san_link_parse_addr(const char *s, struct sockaddr_storage *out, socklen_t *len);
/* Writes "a.b.c.d:port" or "[addr]:port" into buf (size >= 64). */
void san_link_format_addr(const struct sockaddr *sa, char *buf, size_t size);
/* Whether sa is a wildcard address (0.0.0.0, ::). */
bool san_link_addr_is_any(const struct sockaddr *sa);

enum san_link_state {
    SAN_LINK_CONNECTING = 0, /* never up yet: saying hello */
    SAN_LINK_UP = 1,
    SAN_LINK_DOWN = 2, /* was up, lost: saying hello again with backoff */
};
const char *san_link_state_name(unsigned state);

struct san_link_params {
    const struct san_link_config *cfg;
    uint64_t host_id;
    const struct san_nic_net *nets; /* [nic] addresses: told to every peer */
    size_t nr_nets;
    struct san_nic *nic;       /* endpoint messages are delivered to it (NULL: dropped) */
    _Atomic uint64_t *changes; /* bumped with san_link_routes_gen (the status page); NULL: none */
};

/* What the loop learns of a link. */
struct san_link_peer_info {
    struct sockaddr_storage addr;
    unsigned state;
    uint64_t host_id; /* the peer's, once it proved itself; 0 before */
    struct san_nic_net nets[16];
    size_t nr_nets;
    uint64_t bytes_tx, bytes_rx, msgs_tx, msgs_rx;
    uint64_t sessions;     /* handshakes completed (a new one after every loss or peer restart) */
    uint64_t mac_failures; /* messages from the peer's address whose MAC failed, ever */
    char last_error[88];
};

/* A change of a link's state, for the loop. */
struct san_link_event {
    unsigned peer;    /* index in [link] peers */
    unsigned state;   /* the new state */
    uint64_t host_id; /* the peer's host_id of the session (new one when it restarted) */
    bool restarted;   /* up again with another host_id than the last session's */
};

struct san_link;

/* Opens the endpoint, resolves the peers and starts the link thread. Does not block on the
 * network (numeric addresses only; connections are made lazily by the provider). -errno or a
 * libfabric error mapped to -errno, with a log line saying which step failed. */
int san_link_create(const struct san_link_params *p, struct san_link **out);
/* Says goodbye to every up peer (briefly), stops the thread, closes the endpoint. NULL: no-op. */
void san_link_destroy(struct san_link *l);

/* Readable while state changes wait to be drained. */
int san_link_event_fd(const struct san_link *l);
/* Takes up to max waiting events (oldest first); clears the eventfd when none are left. */
size_t san_link_events(struct san_link *l, struct san_link_event *ev, size_t max);

size_t san_link_nr_peers(const struct san_link *l);
/* A snapshot of peer i: -ENOENT past the last. */
int san_link_peer_info(struct san_link *l, size_t i, struct san_link_peer_info *out);
/* Links that are up. */
uint64_t san_link_up(struct san_link *l);
/* Grows whenever a link goes up or down or a peer's networks change (a new session): what
 * san_link_peer_info says of the networks reachable is the same while it stays. Never blocks. */
uint64_t san_link_routes_gen(struct san_link *l);

/* The transport endpoints across hosts use (san_nic_set_xport): routes over the links that are
 * up, endpoint messages queued per peer and sent by the link thread in order, under the session's
 * keys. Detach it from the NIC before san_link_destroy. */
void san_link_xport(struct san_link *l, struct san_nic_xport *out);

#endif
