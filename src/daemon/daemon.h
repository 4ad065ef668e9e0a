/* sanproxyd internals: configuration, logging, the server loop and the request handlers.
 *
 * The daemon is one thread running one epoll loop (server.c): the listening socket, a signalfd for
 * SIGTERM/SIGINT, and per client its control socket and its pidfd. Requests are handled to the end
 * before the next event (ops.c), so client state needs no lock; the machine and the registration
 * table have their own locks for the NIC engine that later issues add. */
#ifndef SAN_DAEMON_DAEMON_H
#define SAN_DAEMON_DAEMON_H

#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>
#include <sys/un.h>

#include "common/keytab.h"
#include "link/link.h"
#include "mr/mr.h"
#include "nic/nic.h"
#include "phys/machine.h"
#include "proto/proto.h"

/* --- configuration (config.c) ---------------------------------------------------------------- */

struct san_daemon_config {
    uint64_t ram_size;          /* [machine] ram_size */
    bool nolowmem;              /* [machine] nolowmem */
    uint32_t dma_address_width; /* [nic] */
    bool scatter_gather;
    uint64_t max_length;
    uint64_t limit_locked_bytes; /* [limits] locked_bytes */
    uint64_t limit_registrations;
    uint64_t limit_allocations;
    uint64_t limit_allocated_bytes;  /* [limits] allocated_bytes, per client */
    uint64_t limit_uid_locked_bytes; /* [limits] per_uid_locked_bytes */
    uint64_t limit_uid_allocated;    /* [limits] per_uid_allocated_bytes */
    uint64_t limit_uid_connections;  /* [limits] per_uid_connections (not for root) */
    uint64_t limit_endpoints;        /* [limits] endpoints, per client */
    uint64_t linger_ns;              /* [nic] linger: the most a gone client's endpoint lingers */
    struct san_nic_net nets[16];     /* [nic] addresses: the SAN networks served here */
    size_t nr_nets;
    char socket[sizeof(((struct sockaddr_un *)0)->sun_path)]; /* [daemon] socket; "" = default */
    struct san_link_config link;                              /* [link] */
};

/* [nic] linger's default: 10 s, as long as a peer that reads may need for what is in flight. */
#define SAN_DEFAULT_LINGER_NS (10ull * 1000000000ull)

/* A limit whose default follows ram_size until the config sets it (san_config_resolve). */
#define SAN_LIMIT_AUTO UINT64_MAX

/* The built-in defaults (every key has one). */
void san_config_defaults(struct san_daemon_config *c);
/* Gives the limits still SAN_LIMIT_AUTO their value for c->ram_size. */
void san_config_resolve(struct san_daemon_config *c);
/* Reads an INI file over c. On error writes "FILE:LINE: message naming the key" to err and
 * returns -EINVAL (-errno when the file cannot be read). */
int san_config_load(struct san_daemon_config *c, const char *path, char *err, size_t err_size);

/* --- logging (log.c) ------------------------------------------------------------------------- */

enum san_log_level { SAN_LOG_ERROR, SAN_LOG_WARN, SAN_LOG_INFO, SAN_LOG_DEBUG };
extern enum san_log_level san_log_threshold;
void san_log(enum san_log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
#define log_error(...) san_log(SAN_LOG_ERROR, __VA_ARGS__)
#define log_warn(...)  san_log(SAN_LOG_WARN, __VA_ARGS__)
#define log_info(...)  san_log(SAN_LOG_INFO, __VA_ARGS__)
#define log_debug(...)                                                                             \
    do {                                                                                           \
        if (san_log_threshold >= SAN_LOG_DEBUG)                                                    \
            san_log(SAN_LOG_DEBUG, __VA_ARGS__);                                                   \
    } while (0)

/* --- daemon state ---------------------------------------------------------------------------- */

/* A proxy allocation: frames of the machine exported to one client through a memfd. Registrations
 * of the client's mapping of it are backed by its frames (mr's san_regtab_backing), so its frames
 * and the client's charge for them stay until FREE took its handle and the last such registration
 * is gone. */
struct san_daemon_alloc {
    uint32_t handle;                     /* its key in the client's handle table; 0 once freed */
    struct san_daemon_alloc *freed_next; /* d->freed, once nothing names it */
    struct san_client *c;                /* charged with it */
    void *host;                          /* in the machine's image */
    uint64_t bytes;                      /* whole pages */
    san_paddr_t paddr;
    unsigned flags;
    uint32_t dev_major, dev_minor; /* the memfd's device and inode: the client's mapping of it */
    uint64_t ino;
    uint32_t regs; /* backed registrations of it (under the registration table's lock) */
    int share_fd;  /* SHARED: a read-only descriptor of its memfd, for RDMA_MAP; else -1 */
};

/* What all clients of one uid hold together ([limits] per_uid_*). */
struct san_uid_usage {
    struct san_uid_usage *next;
    uid_t uid;
    uint64_t clients;
    uint64_t alloc_bytes;
    uint64_t locked_bytes; /* under the registration table's lock (mr) */
};

/* A listener or an endpoint of a client, by handle. */
struct san_client_nic {
    uint32_t handle;            /* its key in the client's nic_objs table */
    struct san_nic_listener *l; /* one of the two */
    struct san_nic_ep *ep;
};

struct san_client {
    struct san_client *next, *prev;
    struct san_daemon *d;
    int fd, pidfd;
    uint32_t id;
    pid_t pid;
    uid_t uid;
    gid_t gid;
    bool dead;
    struct san_uid_usage *usage;
    struct san_page_owner owner;
    struct san_regtab_set mrs;
    struct san_keytab allocs; /* struct san_daemon_alloc by handle (unsalted: slot order) */
    uint64_t nr_allocs, alloc_bytes;
    struct san_keytab nic_objs; /* struct san_client_nic (listeners and endpoints) by handle */
    uint64_t nr_eps;
    uint64_t nr_shared;             /* its allocations holding a share_fd */
    struct san_client *linger_next; /* in d->lingering once its process is gone */
    uint64_t linger_deadline;       /* CLOCK_MONOTONIC ns: its endpoints close then at last */
};

struct san_daemon_status {
    struct san_status_page *page; /* mapped read-write here; NULL: none */
    int fd;                       /* read-only, dup'ed into HELLO replies; -1: none */
};

struct san_daemon {
    struct san_daemon_config cfg;
    struct san_daemon_status status; /* the page clients map (status.c) */
    struct san_machine *m;
    struct san_regtab *mr;
    struct san_dma_adapter *adapter; /* the NIC's DMA adapter */
    struct san_nic *nic;             /* the NIC: endpoints, listeners, engines */
    struct san_link *link;           /* links to other hosts' daemons; NULL without [link] */
    uint64_t host_id;
    int epfd, lfd, sigfd, sweepfd;
    bool fds_can_arrive;         /* no SO_PASSRIGHTS: clients may pass descriptors (closer.c) */
    uint64_t max_clients;        /* from RLIMIT_NOFILE; the last few are root's */
    struct san_uid_usage *usage; /* per uid with clients */
    char path[sizeof(((struct sockaddr_un *)0)->sun_path)];
    struct san_client clients;    /* list head; sorted by id */
    struct san_client *graveyard; /* clients to free after the current batch of events */
    struct san_client *lingering; /* gone, their lingering endpoints not closed yet */
    uint64_t nr_lingering;
    uint32_t next_client_id;
    uint64_t nr_clients, nr_allocs, alloc_bytes;
    bool stopping;
    bool accept_paused;             /* out of descriptors: listener out of the epoll set */
    struct san_daemon_alloc *freed; /* detached by FREE, released after the reply went out */
    int spare_memfd[4];             /* fresh memfds made between requests, -1: none */
    uint64_t spin_ns;               /* poll this long after a request before sleeping */
    uint64_t last_request_ns;       /* CLOCK_MONOTONIC */
};

/* --- status.c: the status page clients map read-only (proto.h) ----------------------------- */

/* Makes the page (networks_changes 1) and the read-only descriptor of it. 0 or -errno; on failure
 * nothing is left open and s says there is no page. */
int san_status_create(struct san_daemon_status *s);
/* Unmaps and closes; a status without a page is left as it is. */
void san_status_destroy(struct san_daemon_status *s);
/* A new read-only descriptor of the page for one HELLO reply (the sender closes it); -1 without a
 * page or out of descriptors. */
int san_status_fd(const struct san_daemon_status *s);

/* --- identity (identity.c) ------------------------------------------------------------------ */

/* Fixes c's identity from its connection fd: pid, uid, gid, pidfd, and the process's pagemap and
 * maps. -ESRCH when the process that connected has exited (refuse it), -EPERM without
 * credentials, -EMFILE/-ENFILE out of descriptors. On failure nothing is left open. */
int san_identity_take(struct san_client *c, int fd);
void san_identity_drop(struct san_client *c);
/* Whether the daemon can see c's memory (it may register). */
bool san_identity_can_register(const struct san_client *c);
/* False once c's process has exec'd or exited: the program accepted is gone. */
bool san_identity_current(const struct san_client *c);

/* --- closer.c -------------------------------------------------------------------------------- */

/* Closes fd on a thread of its own: for descriptors whose release may block (see closer.c). */
void san_closer_close(int fd);

/* server.c: sets up the machine, the socket and the loop, runs until SIGTERM/SIGINT. ready_fd, if
 * >= 0, gets "ready\n" once the socket accepts connections and is then closed. spin_us: how long
 * the loop polls after a request before sleeping (0: never). Returns the exit status: 0 after a
 * clean stop, 1 when setup failed. */
#define SAN_DAEMON_SPIN_US 50
int san_daemon_run(const struct san_daemon_config *cfg, int ready_fd, unsigned spin_us);

/* ops.c: handles one decoded request of c and fills the reply (hdr and body); fds[0..*nfds) get
 * descriptors to pass with it (closed once sent; at most SAN_PROTO_SEND_FDS). */
void san_daemon_handle(struct san_client *c, const struct san_msg *req, struct san_msg *rep,
                       int *fds, unsigned *nfds);
/* Releases everything c holds (allocations, registrations). */
void san_daemon_release_client(struct san_client *c);
/* c's process went away: its endpoints that asked for it linger (san_nic_ep_linger: what they
 * posted is still delivered, their peer may still RDMA-read c's memory), the others and its
 * listeners close. Whether any lingers: c then keeps its registrations, allocations and charges
 * until san_daemon_linger_step says none is left, and only then is released. */
bool san_daemon_linger_client(struct san_client *c);
/* Closes c's lingering endpoints that have nothing left to do (all: every one). Whether none is
 * left. */
bool san_daemon_linger_step(struct san_client *c, bool all);
/* Work that can wait until a reply has gone out (the client goes on meanwhile): releases the
 * allocations FREE detached, and makes fresh memfds for the next allocations. Runs before the
 * next event is handled, so no request ever sees it undone. */
void san_daemon_after_reply(struct san_daemon *d);
/* Closes the spare memfds. */
void san_daemon_drop_spares(struct san_daemon *d);

#endif
