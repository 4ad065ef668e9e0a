/* sanproxyd's requests: what each opcode does to the machine, the registration table and the
 * requesting client's state, and the cleanup of a client (IRP_MJ_CLEANUP).
 *
 * Sits on phys (san_alloc_contiguous and the memfd export of export.c), mr, and the decoded
 * requests of proto (every field here has already been validated by san_proto_decode). Handles
 * are per client: an allocation handle (a key of the client's handle table, common/keytab: a
 * freed handle is stale, never reused) or an lkey of another client is simply not found.
 * Locking: runs on the daemon's one thread; phys and mr take their own locks. */
#include "daemon/daemon.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <san/client.h>

#include "common/page.h"
#include "mdl/vma.h"
#include "phys/export.h"

/* The client stops paying for an allocation whose frames go back. */
static void alloc_uncharge(struct san_daemon_alloc *a)
{
    struct san_client *c = a->c;
    struct san_daemon *d = c->d;
    c->nr_allocs--;
    c->alloc_bytes -= a->bytes;
    c->usage->alloc_bytes -= a->bytes;
    d->nr_allocs--;
    d->alloc_bytes -= a->bytes;
}

/* Frees an allocation nothing names any more: the memfd stops backing the frames, then the frames
 * go back. */
static void alloc_free(struct san_daemon *d, struct san_daemon_alloc *a)
{
    int err = san_phys_unexport(d->m, a->host, a->bytes);
    if (err) {
        /* The client's memfd may still reach these frames: never hand them out again. */
        log_error("allocation at %#llx cannot be unexported (%s): leaked",
                  (unsigned long long)a->paddr, strerror(-err));
    } else if ((err = san_free_contiguous(d->m, a->host, a->bytes, SAN_CACHED))) {
        log_error("free of %#llx failed: %s", (unsigned long long)a->paddr, strerror(-err));
    }
    free(a);
}

/* Once neither a handle nor a registration names it: uncharged now, freed after the reply (or at
 * the end of the client's cleanup), before the next request is handled. */
static void alloc_retire(struct san_daemon_alloc *a)
{
    struct san_daemon *d = a->c->d;
    alloc_uncharge(a);
    a->freed_next = d->freed;
    d->freed = a;
}

/* Takes the handle away: from here on the client cannot name the allocation. */
static void alloc_unname(struct san_client *c, struct san_daemon_alloc *a)
{
    san_keytab_free(&c->allocs, a->handle);
    a->handle = 0;
    if (a->share_fd >= 0) { /* mappings made already stay; no new one */
        close(a->share_fd);
        a->share_fd = -1;
        c->nr_shared--;
    }
    if (!a->regs)
        alloc_retire(a);
}

/* mr's release of a registration backed by allocation arg. */
static void alloc_registration_gone(void *arg)
{
    struct san_daemon_alloc *a = arg;
    if (!--a->regs && !a->handle)
        alloc_retire(a);
}

static void free_retired(struct san_daemon *d)
{
    while (d->freed) {
        struct san_daemon_alloc *a = d->freed;
        d->freed = a->freed_next;
        alloc_free(d, a);
    }
}

/* A fresh memfd made between requests, or -1. */
static int take_spare(struct san_daemon *d)
{
    for (size_t i = 0; i < sizeof(d->spare_memfd) / sizeof(d->spare_memfd[0]); i++) {
        int fd = d->spare_memfd[i];
        if (fd >= 0) {
            d->spare_memfd[i] = -1;
            return fd;
        }
    }
    return -1;
}

void san_daemon_after_reply(struct san_daemon *d)
{
    free_retired(d);
    for (size_t i = 0; i < sizeof(d->spare_memfd) / sizeof(d->spare_memfd[0]); i++)
        if (d->spare_memfd[i] < 0)
            d->spare_memfd[i] = memfd_create("sanproxy-alloc", MFD_CLOEXEC | MFD_ALLOW_SEALING);
}

void san_daemon_drop_spares(struct san_daemon *d)
{
    for (size_t i = 0; i < sizeof(d->spare_memfd) / sizeof(d->spare_memfd[0]); i++) {
        if (d->spare_memfd[i] >= 0)
            close(d->spare_memfd[i]);
        d->spare_memfd[i] = -1;
    }
}

/* A read-only descriptor of memfd (a new open file of it: a mapping made from it can never be
 * made writable). */
static int share_fd_of(int memfd, int *out)
{
    char path[32];
    snprintf(path, sizeof(path), "/proc/self/fd/%d", memfd);
    *out = open(path, O_RDONLY | O_CLOEXEC);
    return *out < 0 ? -ENOBUFS : 0;
}

static int op_alloc(struct san_client *c, const struct san_alloc_req *q, struct san_alloc_rep *r,
                    int *fd)
{
    struct san_daemon *d = c->d;
    struct san_daemon_alloc *a;
    int err;

    if (q->bytes > UINT64_MAX - PAGE)
        return -EINVAL;
    if (d->cfg.limit_allocations && c->nr_allocs >= d->cfg.limit_allocations)
        return -ENOBUFS;
    uint64_t bytes = (q->bytes + PAGE - 1) & ~(PAGE - 1);
    if (bytes > (size_t)-1 || bytes > d->cfg.ram_size)
        return -ENOMEM;
    uint64_t mine = d->cfg.limit_allocated_bytes, ours = d->cfg.limit_uid_allocated;
    if ((mine && (bytes > mine || c->alloc_bytes > mine - bytes)) ||
        (ours && (bytes > ours || c->usage->alloc_bytes > ours - bytes)))
        return -ENOBUFS;
    /* A SHARED allocation holds a descriptor here: at most [limits] endpoints of them. */
    bool shared = q->flags & SAN_WIRE_ALLOC_SHARED;
    if (shared && d->cfg.limit_endpoints && c->nr_shared >= d->cfg.limit_endpoints)
        return -ENOBUFS;
    a = calloc(1, sizeof(*a));
    if (!a)
        return -ENOMEM;
    a->share_fd = -1;
    /* Proxy memory is for the NIC: never above what its DMA reaches. Highest suitable memory
     * first; LOW asks for the zone below 4 GiB, which NOLOWMEM keeps for exactly such requests
     * (as it does for a 32-bit NIC's). Every allocation is physically contiguous, so CONTIGUOUS
     * holds. */
    unsigned width = d->cfg.dma_address_width;
    san_paddr_t highest = width >= 64 ? UINT64_MAX : (UINT64_C(1) << width) - 1;
    if ((q->flags & SAN_ALLOC_LOW) && highest > SAN_4G - 1)
        highest = SAN_4G - 1;
    err = san_alloc_contiguous(d->m, bytes, 0, highest, 0, SAN_CACHED, &a->host);
    if (err)
        goto fail_free;
    if ((err = san_phys_export(d->m, a->host, bytes, take_spare(d), fd)))
        goto fail_contig;
    if ((err = san_get_physical_address(d->m, a->host, &a->paddr)))
        goto fail_export;
    struct stat st;
    if (fstat(*fd, &st)) {
        err = -errno;
        goto fail_export;
    }
    a->dev_major = major(st.st_dev);
    a->dev_minor = minor(st.st_dev);
    a->ino = st.st_ino;
    if (shared && (err = share_fd_of(*fd, &a->share_fd)))
        goto fail_export;
    if ((err = san_keytab_alloc(&c->allocs, a, &a->handle))) {
        if (a->share_fd >= 0)
            close(a->share_fd);
        goto fail_export;
    }
    c->nr_shared += shared;
    a->c = c;
    a->bytes = bytes;
    a->flags = q->flags;
    c->nr_allocs++;
    c->alloc_bytes += bytes;
    c->usage->alloc_bytes += bytes;
    d->nr_allocs++;
    d->alloc_bytes += bytes;
    *r = (struct san_alloc_rep){.handle = a->handle, .bytes = bytes, .paddr = a->paddr};
    log_debug("client %u: alloc %llu bytes at %#llx (handle %#x)", c->id, (unsigned long long)bytes,
              (unsigned long long)a->paddr, a->handle);
    return 0;

fail_export:
    close(*fd);
    *fd = -1;
    san_phys_unexport(d->m, a->host, bytes);
fail_contig:
    san_free_contiguous(d->m, a->host, bytes, SAN_CACHED);
fail_free:
    free(a);
    return err;
}

static int op_free(struct san_client *c, const struct san_free_req *q)
{
    struct san_daemon_alloc *a =
        q->handle > UINT32_MAX ? NULL : san_keytab_lookup(&c->allocs, (uint32_t)q->handle);
    if (!a)
        return -EINVAL;
    /* Gone for the client now; the frames go back right after the reply (san_daemon_after_reply),
     * before any other request is handled, or once the last registration backed by them is gone
     * (the client's registration cache may hold some until it sees the unmap). */
    alloc_unname(c, a);
    return 0;
}

/* The client's allocation that its mapping of [start, start+len) (whole pages) shows: 0 with *out
 * and the physical address of start, -ENOENT for any other memory (the client's own pages, to be
 * locked), -EFAULT when the mapping lacks the access. Recognised by the memfd's inode in the
 * client's own maps (vma.h), so a client cannot pass other memory off as proxy memory. */
static int proxy_memory(struct san_client *c, uint64_t start, uint64_t len, unsigned access,
                        struct san_daemon_alloc **out, san_paddr_t *pa)
{
    struct san_vma_file f;
    if (!c->nr_allocs || san_vma_file(c->owner.maps_fd, start, len, &f) || !f.shared)
        return -ENOENT;
    struct san_daemon_alloc *a;
    uint32_t slot = 0, key;
    for (; (a = san_keytab_next(&c->allocs, &slot, &key)); slot++) {
        if (a->ino != f.inode || a->dev_major != f.dev_major || a->dev_minor != f.dev_minor)
            continue;
        if (f.offset % PAGE || f.offset > a->bytes || len > a->bytes - f.offset)
            return -ENOENT;
        if (!f.readable || ((access & SAN_MEM_WRITE) && !f.writable))
            return -EFAULT;
        *out = a;
        *pa = a->paddr + f.offset;
        return 0;
    }
    return -ENOENT;
}

static int op_register(struct san_client *c, const struct san_register_req *q,
                       struct san_register_rep *r)
{
    struct san_daemon *d = c->d;
    struct san_regtab_limits lim = {.locked_bytes = d->cfg.limit_locked_bytes,
                                    .registrations = d->cfg.limit_registrations,
                                    .account_locked_bytes = d->cfg.limit_uid_locked_bytes};
    /* The daemon validates a range from the client's own pagemap and maps, opened at accept: a
     * process it could not open them for (another user's, not dumpable) cannot register. */
    if (!san_identity_can_register(c))
        return -EPERM;
    /* Proxy memory is registered as its frames (the memcpy path of the NIC), anything else as the
     * client's pages. A range the table refuses anyway is not looked up. */
    struct san_daemon_alloc *a = NULL;
    struct san_regtab_backing b = {.release = alloc_registration_gone};
    int err;
    if (q->va && q->len && q->va <= UINT64_MAX - PAGE && q->len <= UINT64_MAX - PAGE - q->va) {
        uint64_t start = san_page_down(q->va), end = san_page_up(q->va + q->len);
        if ((err = proxy_memory(c, start, end - start, q->access, &a, &b.pa)) == -EFAULT)
            return err;
    }
    b.arg = a;
    err = san_regtab_register_backed(d->mr, &c->mrs, q->va, q->len, q->access,
                                     q->flags & SAN_REG_RDMA, &lim, a ? &b : NULL, &r->lkey,
                                     &r->rkey, &r->refs);
    if (!err && a && r->refs == 1)
        a->regs++; /* a new registration: its release will drop this */
    if (err)
        log_debug("client %u: register %#llx+%llu: %s", c->id, (unsigned long long)q->va,
                  (unsigned long long)q->len, strerror(-err));
    return err;
}

static void wire_to_addr(const struct san_wire_addr *w, struct san_nic_addr *a)
{
    memset(a, 0, sizeof(*a));
    memcpy(a->ip, w->ip, 16);
    a->port = w->port;
}

static void addr_to_wire(const struct san_nic_addr *a, struct san_wire_addr *w)
{
    memset(w, 0, sizeof(*w));
    memcpy(w->ip, a->ip, 16);
    w->port = a->port;
}

static struct san_client_nic *nic_obj(struct san_client *c, uint64_t handle, bool listener)
{
    struct san_client_nic *o =
        handle > UINT32_MAX ? NULL : san_keytab_lookup(&c->nic_objs, (uint32_t)handle);
    return o && !!o->l == listener ? o : NULL;
}

static struct san_client_nic *nic_obj_add(struct san_client *c)
{
    struct san_client_nic *o = calloc(1, sizeof(*o));
    if (o && san_keytab_alloc(&c->nic_objs, o, &o->handle)) {
        free(o);
        o = NULL;
    }
    return o;
}

static void nic_obj_free(struct san_client *c, struct san_client_nic *o)
{
    san_keytab_free(&c->nic_objs, o->handle);
    if (o->ep) {
        san_nic_ep_close(o->ep);
        c->nr_eps--;
    }
    if (o->l)
        san_nic_listener_close(o->l);
    free(o);
}

/* The descriptors an endpoint's reply carries: its region and its eventfd (copies: the daemon
 * keeps its own). */
static int ep_reply(struct san_client_nic *o, struct san_ep_rep *r, int *fds, unsigned *nfds)
{
    int region = fcntl(o->ep->memfd, F_DUPFD_CLOEXEC, 0);
    int event = fcntl(o->ep->efd, F_DUPFD_CLOEXEC, 0);
    if (region < 0 || event < 0) {
        if (region >= 0)
            close(region);
        if (event >= 0)
            close(event);
        return -ENOBUFS;
    }
    fds[0] = region;
    fds[1] = event;
    *nfds = 2;
    *r = (struct san_ep_rep){.handle = o->handle, .region_size = SAN_EPQ_SIZE};
    addr_to_wire(&o->ep->remote, &r->peer);
    return 0;
}

/* Who c is, for the NIC's listings of what it makes under handle. */
static struct san_nic_owner nic_owner(const struct san_client *c, uint32_t handle)
{
    return (struct san_nic_owner){.client = c->id, .pid = c->pid, .uid = c->uid, .handle = handle};
}

static int op_nic(struct san_client *c, const struct san_msg *req, struct san_msg *rep, int *fds,
                  unsigned *nfds)
{
    struct san_daemon *d = c->d;
    struct san_nic_addr a;
    struct san_client_nic *o;
    int err;

    switch (req->hdr.opcode) {
    case SAN_OP_LISTEN:
        wire_to_addr(&req->u.listen_req.addr, &a);
        if (!(o = nic_obj_add(c)))
            return -ENOMEM;
        struct san_nic_owner lwho = nic_owner(c, o->handle);
        if ((err = san_nic_listen(d->nic, &lwho, &a, (int)req->u.listen_req.backlog, &o->l))) {
            nic_obj_free(c, o);
            return err;
        }
        fds[0] = fcntl(o->l->efd, F_DUPFD_CLOEXEC, 0);
        if (fds[0] < 0) {
            nic_obj_free(c, o);
            return -ENOBUFS;
        }
        *nfds = 1;
        rep->u.handle_rep.handle = o->handle;
        return 0;
    case SAN_OP_LISTEN_CLOSE:
    case SAN_OP_EP_CLOSE:
        if (!(o = nic_obj(c, req->u.handle_req.handle, req->hdr.opcode == SAN_OP_LISTEN_CLOSE)))
            return -EINVAL;
        nic_obj_free(c, o);
        return 0;
    case SAN_OP_CONNECT:
    case SAN_OP_ACCEPT: {
        struct san_client_nic *l = NULL;
        if (req->hdr.opcode == SAN_OP_ACCEPT && !(l = nic_obj(c, req->u.handle_req.handle, true)))
            return -EINVAL;
        if (d->cfg.limit_endpoints && c->nr_eps >= d->cfg.limit_endpoints)
            return -ENOBUFS;
        if (!(o = nic_obj_add(c)))
            return -ENOMEM;
        struct san_nic_owner who = nic_owner(c, o->handle);
        if (l) {
            err = san_nic_accept(l->l, &who, &c->mrs, &o->ep);
        } else {
            wire_to_addr(&req->u.connect_req.addr, &a);
            err = san_nic_connect(d->nic, &who, &c->mrs, &a, &o->ep);
        }
        if (err) {
            nic_obj_free(c, o);
            return err;
        }
        c->nr_eps++;
        if ((err = ep_reply(o, &rep->u.ep_rep, fds, nfds))) {
            nic_obj_free(c, o);
            return err;
        }
        return 0;
    }
    default:
        return -EOPNOTSUPP;
    }
}

static void fill_stats(struct san_daemon *d, struct san_stats_rep *r)
{
    struct san_machine_stats ms;
    struct san_nic_stats ns;
    uint64_t regs, locked;

    san_machine_stats(d->m, &ms);
    san_nic_stats(d->nic, &ns);
    san_regtab_counts(d->mr, &regs, &locked);
    *r = (struct san_stats_rep){
        .clients = d->nr_clients,
        .allocations = d->nr_allocs,
        .allocated_bytes = d->alloc_bytes,
        .locked_bytes = ms.locked_bytes,
        .registrations = regs,
        .ram_bytes = ms.ram_bytes,
        .free_bytes = ms.free_bytes,
        .low_free_bytes = ms.low_free_bytes,
        .dma_faults = ms.dma_faults,
        .bounce_bytes = ms.bounce_bytes,
        .map_registers_in_use = ms.map_registers_in_use,
        .nolowmem = d->cfg.nolowmem,
        .endpoints = ns.endpoints,
        .nic_ops = ns.ops,
        .nic_bytes = ns.bytes,
        .links = d->link ? san_link_up(d->link) : 0,
    };
}

/* Links page by their index in [link] peers. */
static void list_links(struct san_daemon *d, uint64_t cursor, struct san_links_rep *r)
{
    struct san_link_peer_info p;
    memset(r, 0, sizeof(*r));
    r->enabled = d->link != NULL;
    for (uint64_t i = cursor; d->link && !san_link_peer_info(d->link, i, &p); i++) {
        if (r->nr == SAN_LINKS_MAX) {
            r->next = i;
            return;
        }
        struct san_link_info *o = &r->l[r->nr++];
        struct san_nic_addr a;
        if (!san_nic_addr_from((struct sockaddr *)&p.addr,
                               p.addr.ss_family == AF_INET ? sizeof(struct sockaddr_in)
                                                           : sizeof(struct sockaddr_in6),
                               &a)) {
            memcpy(o->addr.ip, a.ip, 16);
            o->addr.port = a.port;
        }
        o->state = p.state;
        o->nr_nets = (uint32_t)p.nr_nets;
        o->host_id = p.host_id;
        o->bytes_tx = p.bytes_tx;
        o->bytes_rx = p.bytes_rx;
        o->msgs_tx = p.msgs_tx;
        o->msgs_rx = p.msgs_rx;
        o->sessions = p.sessions;
        o->mac_failures = p.mac_failures;
        snprintf(o->last_error, sizeof(o->last_error), "%s", p.last_error);
        for (size_t k = 0; k < p.nr_nets; k++) {
            memcpy(o->nets[k].ip, p.nets[k].ip, 16);
            o->nets[k].prefix = p.nets[k].prefix;
        }
    }
}

/* Puts network number *idx (counting every network listed, from 0) into the page if it is at or
 * past the cursor: false when the page is full (r->next then says where the next one starts). */
static bool page_network(struct san_networks_rep *r, uint64_t cursor, uint64_t *idx,
                         const uint8_t ip[16], uint32_t prefix, uint32_t flags)
{
    uint64_t i = (*idx)++;
    if (i < cursor)
        return true;
    if (r->nr == SAN_NETWORKS_MAX) {
        r->next = i;
        return false;
    }
    struct san_wire_served *o = &r->n[r->nr++];
    memcpy(o->ip, ip, 16);
    o->prefix = prefix > 128 ? 128 : prefix;
    o->flags = flags;
    return true;
}

/* The networks served on the SAN: [nic] addresses first, then each up link's peer's, in the order
 * of [link] peers, paged by index in that sequence. The generation is read before the networks,
 * so what a page lists is at least as new as the generation it carries (a change meanwhile shows
 * as a newer generation at the next request). host_id in it: a restarted daemon's generations
 * are not its predecessor's. */
static void list_networks(struct san_daemon *d, const struct san_networks_req *q,
                          struct san_networks_rep *r)
{
    memset(r, 0, sizeof(*r));
    r->gen = d->host_id + (d->link ? san_link_routes_gen(d->link) : 0);
    if (!r->gen)
        r->gen = 1;
    if (q->known_gen == r->gen && !q->cursor) {
        r->unchanged = 1;
        return;
    }
    uint64_t idx = 0;
    for (size_t i = 0; i < d->cfg.nr_nets; i++)
        if (!page_network(r, q->cursor, &idx, d->cfg.nets[i].ip, d->cfg.nets[i].prefix,
                          SAN_WIRE_NET_LOCAL))
            return;
    struct san_link_peer_info p;
    for (size_t i = 0; d->link && !san_link_peer_info(d->link, i, &p); i++) {
        if (p.state != SAN_LINK_UP)
            continue;
        for (size_t k = 0; k < p.nr_nets; k++)
            if (!page_network(r, q->cursor, &idx, p.nets[k].ip, p.nets[k].prefix,
                              SAN_WIRE_NET_LINKED))
                return;
    }
}

/* Clients page by id: cursor = first id wanted. */
/* Whether who may see other users' clients in listings: root and the daemon's own uid see every
 * client; anyone else sees those of its own uid only (other users' pids, memory and traffic are
 * theirs). */
static bool sees_all(const struct san_client *who)
{
    return who->uid == 0 || who->uid == geteuid();
}

static bool sees(const struct san_client *who, const struct san_client *c)
{
    return sees_all(who) || c->uid == who->uid;
}

static void list_clients(struct san_client *who, uint64_t cursor, struct san_clients_rep *r)
{
    struct san_daemon *d = who->d;
    memset(r, 0, sizeof(*r));
    for (struct san_client *c = d->clients.next; c != &d->clients; c = c->next) {
        if (c->id < cursor || !sees(who, c))
            continue;
        if (r->nr == SAN_LIST_MAX) {
            r->next = c->id;
            return;
        }
        r->c[r->nr++] = (struct san_client_info){
            .id = c->id,
            .pid = c->pid,
            .uid = c->uid,
            .gid = c->gid,
            .allocations = c->nr_allocs,
            .allocated_bytes = c->alloc_bytes,
            .registrations = c->mrs.registrations,
            .locked_bytes = c->mrs.locked_bytes,
        };
    }
}

/* Allocations page by (client id, handle table slot): cursor = id << 32 | the handle to start
 * from (its slot: the table is unsalted). */
static void list_allocs(struct san_client *who, uint64_t cursor, struct san_allocations_rep *r)
{
    struct san_daemon *d = who->d;
    uint32_t cid = (uint32_t)(cursor >> 32);
    uint32_t h = (uint32_t)cursor;

    memset(r, 0, sizeof(*r));
    for (struct san_client *c = d->clients.next; c != &d->clients; c = c->next) {
        if (c->id < cid || !sees(who, c))
            continue;
        uint32_t slot = c->id == cid ? san_key_index(h) : 0, key;
        struct san_daemon_alloc *a;
        for (; (a = san_keytab_next(&c->allocs, &slot, &key)); slot++) {
            if (r->nr == SAN_LIST_MAX) {
                r->next = (uint64_t)c->id << 32 | key;
                return;
            }
            r->a[r->nr++] = (struct san_alloc_info){
                .client_id = c->id,
                .pid = c->pid,
                .flags = a->flags,
                .handle = key,
                .paddr = a->paddr,
                .bytes = a->bytes,
            };
        }
    }
}

/* The NIC's endpoints page by endpoint id (cursor = first id wanted), as sees() allows. */
static void list_endpoints(struct san_client *c, uint64_t cursor, struct san_endpoints_rep *r)
{
    struct san_nic_ep_info e[SAN_LIST_MAX];
    bool all = sees_all(c);
    static_assert(SAN_NIC_CLOSING == (int)SAN_WIRE_EP_CLOSING &&
                      (int)SAN_EPQ_ERROR == (int)SAN_WIRE_EP_ERROR &&
                      (int)SAN_EPQ_CONNECTING == (int)SAN_WIRE_EP_CONNECTING &&
                      (int)SAN_EPQ_CONNECTED == (int)SAN_WIRE_EP_CONNECTED &&
                      (int)SAN_EPQ_REFUSED == (int)SAN_WIRE_EP_REFUSED,
                  "endpoint states");
    static_assert(SAN_EPQ_CQ <= SAN_WIRE_EP_FILL_MAX && SAN_EPQ_SQ <= SAN_WIRE_EP_FILL_MAX &&
                      SAN_EPQ_RQ <= SAN_WIRE_EP_FILL_MAX,
                  "ring depths");

    memset(r, 0, sizeof(*r));
    size_t n = san_nic_list(c->d->nic, cursor, all, (uint32_t)c->uid, e, SAN_LIST_MAX, &r->next);
    for (size_t i = 0; i < n; i++) {
        struct san_ep_info *w = &r->e[i];
        *w = (struct san_ep_info){
            .id = e[i].id,
            .handle = e[i].owner.handle,
            .client_id = e[i].owner.client,
            .pid = e[i].owner.pid,
            .uid = e[i].owner.uid,
            .peer_client_id = e[i].peer_client,
            .state = e[i].state,
            .error = e[i].err,
            .bad_rings = e[i].bad_rings,
            .sq_fill = e[i].sq_fill,
            .rq_fill = e[i].rq_fill,
            .cq_fill = e[i].cq_fill,
            .ops = e[i].ops,
            .bytes = e[i].bytes,
        };
        addr_to_wire(&e[i].local, &w->local);
        addr_to_wire(&e[i].remote, &w->remote);
    }
    r->nr = (uint32_t)n;
}

/* RDMA_MAP: the range a descriptor of endpoint q->handle's peer names, checked as the NIC checks
 * an RDMA read of it (this host's descriptor, the rkey current and the peer's, read access, the
 * range inside the registration), and then in proxy memory the peer allocated SHARED: a
 * read-only descriptor of that allocation's memfd and where the range starts in it. */
static int op_rdma_map(struct san_client *c, const struct san_rdma_map_req *q,
                       struct san_rdma_map_rep *r, int *fd)
{
    struct san_daemon *d = c->d;
    struct san_client_nic *o = nic_obj(c, q->handle, false);
    const struct san_regtab_set *peer;
    struct san_nic_piece pc;
    int err;
    if (!o)
        return -EINVAL;
    if ((err = san_nic_ep_peer_set(o->ep, &peer)))
        return err;
    if (q->host_id != d->host_id)
        return -EACCES;
    if ((err = san_nic_remote(d->nic, peer, q->rkey, q->va, q->len, false, &pc)))
        return err;
    struct san_regtab_entry *e = pc.e;
    struct san_daemon_alloc *a =
        e->release == alloc_registration_gone ? (struct san_daemon_alloc *)e->release_arg : NULL;
    san_paddr_t pa = 0;
    err = !a || a->share_fd < 0 ? -EOPNOTSUPP
                                : san_regtab_paddr(d->mr, e->set, e->lkey, q->va - e->r.start, &pa);
    if (!err && (pa < a->paddr || pa - a->paddr > a->bytes || q->len > a->bytes - (pa - a->paddr)))
        err = -EOPNOTSUPP;
    if (!err && (*fd = fcntl(a->share_fd, F_DUPFD_CLOEXEC, 0)) < 0)
        err = -ENOBUFS;
    if (!err)
        *r = (struct san_rdma_map_rep){.offset = pa - a->paddr, .bytes = a->bytes, .id = a->ino};
    san_regtab_put(d->mr, e);
    return err;
}

void san_daemon_handle(struct san_client *c, const struct san_msg *req, struct san_msg *rep,
                       int *fds, unsigned *nfds)
{
    struct san_daemon *d = c->d;
    int err = 0, memfd = -1;
    int *fd = &memfd;

    *nfds = 0;
    san_proto_reply(rep, &req->hdr, 0);
    switch (req->hdr.opcode) {
    case SAN_OP_HELLO:
        rep->u.hello_rep = (struct san_hello_rep){
            .version = SAN_PROTO_VERSION,
            .page_size = SAN_PAGE_SIZE,
            .host_id = d->host_id,
            .client_id = c->id,
        };
        if ((memfd = san_status_fd(&d->status)) >= 0)
            rep->u.hello_rep.flags = SAN_HELLO_STATUS;
        break;
    case SAN_OP_ALLOC:
        err = op_alloc(c, &req->u.alloc_req, &rep->u.alloc_rep, fd);
        break;
    case SAN_OP_FREE:
        err = op_free(c, &req->u.free_req);
        break;
    case SAN_OP_REGISTER:
        err = op_register(c, &req->u.register_req, &rep->u.register_rep);
        break;
    case SAN_OP_DEREGISTER:
        rep->u.deregister_rep = (struct san_deregister_rep){0};
        err = san_regtab_deregister(d->mr, &c->mrs, req->u.deregister_req.lkey,
                                    &rep->u.deregister_rep.refs);
        break;
    case SAN_OP_SET_REMOTE:
        rep->u.set_remote_rep = (struct san_set_remote_rep){0};
        err = san_regtab_set_remote(d->mr, &c->mrs, req->u.set_remote_req.lkey,
                                    req->u.set_remote_req.exposed, &rep->u.set_remote_rep.rkey);
        break;
    case SAN_OP_PADDR:
        err = san_regtab_paddr(d->mr, &c->mrs, req->u.paddr_req.lkey, req->u.paddr_req.offset,
                               &rep->u.paddr_rep.paddr);
        break;
    case SAN_OP_STATS:
        fill_stats(d, &rep->u.stats_rep);
        break;
    case SAN_OP_CLIENTS:
        list_clients(c, req->u.list_req.cursor, &rep->u.clients_rep);
        break;
    case SAN_OP_ALLOCATIONS:
        list_allocs(c, req->u.list_req.cursor, &rep->u.allocations_rep);
        break;
    case SAN_OP_ENDPOINTS:
        list_endpoints(c, req->u.list_req.cursor, &rep->u.endpoints_rep);
        break;
    case SAN_OP_LINKS:
        list_links(d, req->u.list_req.cursor, &rep->u.links_rep);
        break;
    case SAN_OP_NETWORKS:
        list_networks(d, &req->u.networks_req, &rep->u.networks_rep);
        break;
    case SAN_OP_LISTEN:
    case SAN_OP_LISTEN_CLOSE:
    case SAN_OP_CONNECT:
    case SAN_OP_ACCEPT:
    case SAN_OP_EP_CLOSE:
        err = op_nic(c, req, rep, fds, nfds);
        break;
    case SAN_OP_RDMA_MAP:
        err = op_rdma_map(c, &req->u.rdma_map_req, &rep->u.rdma_map_rep, fd);
        break;
    case SAN_OP_CHECK_LOWMEM:
        rep->u.lowmem_rep = (struct san_lowmem_rep){.nolowmem = d->cfg.nolowmem};
        if (d->cfg.nolowmem)
            err = san_machine_check_lowmem(d->m, &rep->u.lowmem_rep.dirty_frames);
        break;
    default:
        err = -EOPNOTSUPP; /* the decoder lets no such opcode through */
        break;
    }
    if (memfd >= 0)
        fds[(*nfds)++] = memfd;
    if (err) {
        while (*nfds)
            close(fds[--*nfds]);
        san_proto_reply(rep, &req->hdr, err);
    }
}

bool san_daemon_linger_client(struct san_client *c)
{
    uint32_t slot = 0, key;
    uint64_t n = 0;
    struct san_client_nic *o;
    while ((o = san_keytab_next(&c->nic_objs, &slot, &key))) {
        if (o->ep && san_nic_ep_linger(o->ep)) {
            n++;
            slot++;
        } else {
            nic_obj_free(c, o); /* its slot is empty now: look at it again */
        }
    }
    return n != 0;
}

bool san_daemon_linger_step(struct san_client *c, bool all)
{
    uint32_t slot = 0, key;
    uint64_t left = 0;
    struct san_client_nic *o;
    while ((o = san_keytab_next(&c->nic_objs, &slot, &key))) {
        if (all || !o->ep || atomic_load(&o->ep->linger_over)) {
            nic_obj_free(c, o);
        } else {
            left++;
            slot++;
        }
    }
    return !left;
}

void san_daemon_release_client(struct san_client *c)
{
    struct san_daemon_alloc *a;
    uint32_t slot = 0, key;

    /* Endpoints first: their engines stop looking at the registrations before these go. */
    struct san_client_nic *o;
    while ((o = san_keytab_next(&c->nic_objs, &slot, &key)))
        nic_obj_free(c, o);
    san_keytab_destroy(&c->nic_objs);
    slot = 0;
    san_regtab_set_release(c->d->mr, &c->mrs);
    while ((a = san_keytab_next(&c->allocs, &slot, &key)))
        alloc_unname(c, a);
    san_keytab_destroy(&c->allocs);
    free_retired(c->d);
}
