/* sanctl: the administrator's view of sanproxyd over its control socket.
 * `sanctl [--socket PATH] [--timeout SECONDS]
 * stats|clients|allocations|endpoints|links|check-lowmem [--json]`. Readable tables by default,
 * one JSON object (stats, check-lowmem) or array (clients, allocations, endpoints, links) with
 * --json. Every connect, send and receive gives up after --timeout
 * (default 5 s), so a daemon that accepts but never answers cannot hang it. Exit status: 0 on
 * success, 1 when the daemon cannot be reached, does not answer in time or refuses, 2 on usage
 * errors; check-lowmem exits 3 when dirty low frames were found. Sits on proto only (no libsan
 * context: sanctl holds nothing). */
#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <netinet/in.h>
#include <sys/un.h>
#include <unistd.h>

#include <san/error.h>

#include "proto/proto.h"

#define DEFAULT_TIMEOUT_S 5.0

static const char *sock_path;
static char path_buf[sizeof(((struct sockaddr_un *)0)->sun_path)];
static double timeout_s = DEFAULT_TIMEOUT_S; /* 0: wait forever */

static int connect_daemon(void)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    const char *p = sock_path;
    int fd, err;

    if (!p)
        p = getenv("SANPROXY_SOCKET");
    if (!p || !*p) {
        if ((err = san_proto_default_path(path_buf, sizeof(path_buf))))
            return err;
        p = path_buf;
    }
    sock_path = p;
    if (strlen(p) >= sizeof(sa.sun_path))
        return -ENAMETOOLONG;
    strcpy(sa.sun_path, p);
    fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    /* One bound on every wait: connect (a full backlog), send and receive. */
    time_t whole = (time_t)timeout_s;
    struct timeval tv = {.tv_sec = whole,
                         .tv_usec = (suseconds_t)((timeout_s - (double)whole) * 1e6)};
    if (setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)) ||
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv))) {
        err = -errno;
        close(fd);
        return err;
    }
    if (connect(fd, (struct sockaddr *)&sa, sizeof(sa))) {
        err = errno == EAGAIN || errno == EINPROGRESS ? -ETIMEDOUT : -errno;
        close(fd);
        return err;
    }
    return fd;
}

static int call(int fd, unsigned op, uint64_t cursor, struct san_msg *rep)
{
    static uint64_t id;
    struct san_msg req;
    size_t len;
    int err;

    san_proto_init(&req, op, ++id);
    if (san_proto_body_size(op) == sizeof(struct san_list_req))
        req.u.list_req.cursor = cursor;
    if (op == SAN_OP_NETWORKS)
        req.u.networks_req.cursor = cursor;
    if ((err = san_proto_send(fd, &req, -1, 0)) || (err = san_proto_recv(fd, rep, &len, NULL, 0)))
        return err == -EAGAIN ? -ETIMEDOUT : err; /* SO_RCVTIMEO / SO_SNDTIMEO ran out */
    if (san_proto_decode(rep, len, true, &err) != SAN_DECODE_OK || rep->hdr.id != id ||
        rep->hdr.opcode != (op | SAN_OP_REPLY))
        return -EPROTO;
    return rep->hdr.status;
}

static void fail(const char *what, int err)
{
    if (err == -ETIMEDOUT)
        fprintf(stderr,
                "sanctl: %s: no answer from sanproxyd on %s within %g s (--timeout SECONDS)\n",
                what, sock_path, timeout_s);
    else
        fprintf(stderr, "sanctl: %s: %s\n", what, san_strerror(err));
    if (err == -ENOENT || err == -ECONNREFUSED)
        fprintf(stderr,
                "sanctl: no sanproxyd at %s (start one, or name its socket: --socket PATH or "
                "$SANPROXY_SOCKET)\n",
                sock_path);
    else if (err == -EACCES)
        fprintf(stderr,
                "sanctl: %s is the daemon's user's and its group's only (mode 0660): ask for the "
                "group\n",
                sock_path);
    exit(1);
}

static void human(char *buf, size_t n, uint64_t v)
{
    static const char *const u[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB"};
    double d = (double)v;
    int i = 0;
    while (d >= 1024 && i < 5) {
        d /= 1024;
        i++;
    }
    snprintf(buf, n, i ? "%.1f %s" : "%.0f %s", d, u[i]);
}

static int cmd_stats(int fd, bool json)
{
    struct san_msg rep;
    int err = call(fd, SAN_OP_STATS, 0, &rep);
    if (err)
        fail("stats", err);
    const struct san_stats_rep *s = &rep.u.stats_rep;
    if (json) {
        printf("{\"clients\": %" PRIu64 ", \"allocations\": %" PRIu64
               ", \"allocated_bytes\": %" PRIu64 ", \"locked_bytes\": %" PRIu64
               ", \"registrations\": %" PRIu64 ", \"ram_bytes\": %" PRIu64
               ", \"free_bytes\": %" PRIu64 ", \"low_free_bytes\": %" PRIu64
               ", \"dma_faults\": %" PRIu64 ", \"bounce_bytes\": %" PRIu64
               ", \"map_registers_in_use\": %" PRIu64 ", \"nolowmem\": %s, \"endpoints\": %" PRIu64
               ", \"nic_ops\": %" PRIu64 ", \"nic_bytes\": %" PRIu64 ", \"links\": %" PRIu64 "}\n",
               s->clients, s->allocations, s->allocated_bytes, s->locked_bytes, s->registrations,
               s->ram_bytes, s->free_bytes, s->low_free_bytes, s->dma_faults, s->bounce_bytes,
               s->map_registers_in_use, s->nolowmem ? "true" : "false", s->endpoints, s->nic_ops,
               s->nic_bytes, s->links);
        return 0;
    }
    char a[32], b[32];
    printf("sanproxyd on %s\n", sock_path);
    printf("  clients          %" PRIu64 " (this one included)\n", s->clients);
    human(a, sizeof(a), s->allocated_bytes);
    printf("  allocations      %" PRIu64 " (%s)\n", s->allocations, a);
    human(a, sizeof(a), s->locked_bytes);
    printf("  registrations    %" PRIu64 " (%s locked)\n", s->registrations, a);
    human(a, sizeof(a), s->ram_bytes);
    human(b, sizeof(b), s->free_bytes);
    printf("  RAM              %s, %s free%s\n", a, b, s->nolowmem ? ", NOLOWMEM" : "");
    human(a, sizeof(a), s->low_free_bytes);
    printf("  free below 4 GiB %s\n", a);
    human(a, sizeof(a), s->bounce_bytes);
    printf("  DMA faults       %" PRIu64 "\n  bounced          %s\n", s->dma_faults, a);
    human(a, sizeof(a), s->nic_bytes);
    printf("  endpoints        %" PRIu64 "\n  NIC operations   %" PRIu64 " (%s moved)\n",
           s->endpoints, s->nic_ops, a);
    printf("  links up         %" PRIu64 "\n", s->links);
    return 0;
}

static int cmd_clients(int fd, bool json)
{
    struct san_msg rep;
    uint64_t cursor = 0;
    bool first = true;

    if (json)
        printf("[");
    else
        printf("%6s %8s %6s %6s %8s %12s %8s %12s\n", "id", "pid", "uid", "gid", "allocs", "bytes",
               "regs", "locked");
    do {
        int err = call(fd, SAN_OP_CLIENTS, cursor, &rep);
        if (err)
            fail("clients", err);
        for (uint32_t i = 0; i < rep.u.clients_rep.nr; i++) {
            const struct san_client_info *c = &rep.u.clients_rep.c[i];
            if (json)
                printf("%s{\"id\": %u, \"pid\": %d, \"uid\": %u, \"gid\": %u, \"allocations\": "
                       "%" PRIu64 ", \"allocated_bytes\": %" PRIu64 ", \"registrations\": %" PRIu64
                       ", \"locked_bytes\": %" PRIu64 "}",
                       first ? "" : ", ", c->id, c->pid, c->uid, c->gid, c->allocations,
                       c->allocated_bytes, c->registrations, c->locked_bytes);
            else
                printf("%6u %8d %6u %6u %8" PRIu64 " %12" PRIu64 " %8" PRIu64 " %12" PRIu64 "\n",
                       c->id, c->pid, c->uid, c->gid, c->allocations, c->allocated_bytes,
                       c->registrations, c->locked_bytes);
            first = false;
        }
        cursor = rep.u.clients_rep.next;
    } while (cursor);
    if (json)
        printf("]\n");
    return 0;
}

static int cmd_allocations(int fd, bool json)
{
    struct san_msg rep;
    uint64_t cursor = 0, n = 0;

    if (json)
        printf("[");
    else
        printf("%6s %8s %8s %18s %12s %s\n", "client", "pid", "handle", "paddr", "bytes", "flags");
    do {
        int err = call(fd, SAN_OP_ALLOCATIONS, cursor, &rep);
        if (err)
            fail("allocations", err);
        for (uint32_t i = 0; i < rep.u.allocations_rep.nr; i++, n++) {
            const struct san_alloc_info *a = &rep.u.allocations_rep.a[i];
            if (json)
                printf("%s{\"client\": %u, \"pid\": %d, \"handle\": %" PRIu64
                       ", \"paddr\": %" PRIu64 ", \"bytes\": %" PRIu64 ", \"low\": %s, "
                       "\"contiguous\": %s}",
                       n ? ", " : "", a->client_id, a->pid, a->handle, a->paddr, a->bytes,
                       a->flags & SAN_WIRE_ALLOC_LOW ? "true" : "false",
                       a->flags & SAN_WIRE_ALLOC_CONTIGUOUS ? "true" : "false");
            else
                printf("%6u %8d %8" PRIu64 " %#18" PRIx64 " %12" PRIu64 " %s%s\n", a->client_id,
                       a->pid, a->handle, a->paddr, a->bytes,
                       a->flags & SAN_WIRE_ALLOC_LOW ? "low " : "",
                       a->flags & SAN_WIRE_ALLOC_CONTIGUOUS ? "contiguous" : "");
        }
        cursor = rep.u.allocations_rep.next;
    } while (cursor);
    if (json)
        printf("]\n");
    else if (!n)
        printf("(no allocations)\n");
    return 0;
}

static const char *ep_state(uint32_t s)
{
    switch (s) {
    case SAN_WIRE_EP_CONNECTING:
        return "connecting";
    case SAN_WIRE_EP_CONNECTED:
        return "connected";
    case SAN_WIRE_EP_REFUSED:
        return "refused";
    case SAN_WIRE_EP_ERROR:
        return "error";
    default:
        return "closing";
    }
}

/* A SAN address as ip:port ([ip]:port for IPv6), "-" for none (port 0: a connector has no
 * address of its own). */
static void ep_addr(char *buf, size_t n, const struct san_wire_addr *a)
{
    static const uint8_t mapped[12] = {[10] = 0xff, [11] = 0xff};
    char ip[INET6_ADDRSTRLEN];
    if (!a->port)
        snprintf(buf, n, "-");
    else if (!memcmp(a->ip, mapped, sizeof(mapped)) &&
             inet_ntop(AF_INET, a->ip + 12, ip, sizeof(ip)))
        snprintf(buf, n, "%s:%u", ip, a->port);
    else if (inet_ntop(AF_INET6, a->ip, ip, sizeof(ip)))
        snprintf(buf, n, "[%s]:%u", ip, a->port);
    else
        snprintf(buf, n, "?");
}

/* The state with its error: "error (Connection reset by peer)". */
static void ep_state_text(char *buf, size_t n, const struct san_ep_info *e)
{
    if (e->error)
        snprintf(buf, n, "%s (%s)", ep_state(e->state), san_strerror(e->error));
    else
        snprintf(buf, n, "%s", ep_state(e->state));
}

static void ep_json(const struct san_ep_info *e, bool first)
{
    char local[64], remote[64], peer[16];
    ep_addr(local, sizeof(local), &e->local);
    ep_addr(remote, sizeof(remote), &e->remote);
    snprintf(peer, sizeof(peer), "%u", e->peer_client_id);
    printf("%s{\"id\": %" PRIu64 ", \"client\": %u, \"pid\": %d, \"uid\": %u, \"handle\": %" PRIu64
           ", \"peer_client\": %s, \"state\": \"%s\", \"error\": %d, \"error_text\": ",
           first ? "" : ", ", e->id, e->client_id, e->pid, e->uid, e->handle,
           e->peer_client_id ? peer : "null", ep_state(e->state), e->error);
    if (e->error)
        printf("\"%s\"", san_strerror(e->error)); /* fixed texts: nothing to escape */
    else
        printf("null");
    printf(", \"local\": %s%s%s, \"remote\": %s%s%s, \"sq_fill\": %u, \"rq_fill\": %u, "
           "\"cq_fill\": %u, \"rings_garbled\": %s, \"ops\": %" PRIu64 ", \"bytes\": %" PRIu64 "}",
           e->local.port ? "\"" : "", e->local.port ? local : "null", e->local.port ? "\"" : "",
           e->remote.port ? "\"" : "", e->remote.port ? remote : "null", e->remote.port ? "\"" : "",
           e->sq_fill, e->rq_fill, e->cq_fill, e->bad_rings ? "true" : "false", e->ops, e->bytes);
}

static int cmd_endpoints(int fd, bool json)
{
    struct san_msg rep;
    uint64_t cursor = 0, n = 0;

    if (json)
        printf("[");
    else
        printf("%6s %6s %8s %6s %6s %-24s %-24s %4s %4s %4s %10s %12s %s\n", "id", "client", "pid",
               "handle", "peer", "local", "remote", "sq", "rq", "cq", "ops", "bytes", "state");
    do {
        int err = call(fd, SAN_OP_ENDPOINTS, cursor, &rep);
        if (err)
            fail("endpoints", err);
        for (uint32_t i = 0; i < rep.u.endpoints_rep.nr; i++, n++) {
            const struct san_ep_info *e = &rep.u.endpoints_rep.e[i];
            if (json) {
                ep_json(e, !n);
                continue;
            }
            char local[64], remote[64], peer[16], state[96];
            ep_addr(local, sizeof(local), &e->local);
            ep_addr(remote, sizeof(remote), &e->remote);
            snprintf(peer, sizeof(peer), e->peer_client_id ? "%u" : "-", e->peer_client_id);
            ep_state_text(state, sizeof(state), e);
            printf("%6" PRIu64 " %6u %8d %6" PRIu64 " %6s %-24s %-24s %4u %4u %4u %10" PRIu64
                   " %12" PRIu64 " %s%s\n",
                   e->id, e->client_id, e->pid, e->handle, peer, local, remote, e->sq_fill,
                   e->rq_fill, e->cq_fill, e->ops, e->bytes, state,
                   e->bad_rings ? " (ring indexes garbled)" : "");
        }
        cursor = rep.u.endpoints_rep.next;
    } while (cursor);
    if (json)
        printf("]\n");
    else if (!n)
        printf("(no endpoints)\n");
    return 0;
}

/* The networks of l as "a/p, b/q" (JSON: "\"a/p\", \"b/q\""). */
static void nets_text(const struct san_link_info *l, bool json, char *buf, size_t n)
{
    size_t at = 0;
    buf[0] = 0;
    for (uint32_t k = 0; k < l->nr_nets && at < n; k++) {
        static const uint8_t mapped[12] = {[10] = 0xff, [11] = 0xff};
        char a[INET6_ADDRSTRLEN] = "?";
        unsigned prefix = l->nets[k].prefix;
        if (!memcmp(l->nets[k].ip, mapped, 12) && prefix >= 96) {
            prefix -= 96; /* an IPv4 network: its prefix over the IPv4 address */
            inet_ntop(AF_INET, l->nets[k].ip + 12, a, sizeof(a));
        } else {
            inet_ntop(AF_INET6, l->nets[k].ip, a, sizeof(a));
        }
        int w =
            snprintf(buf + at, n - at, json ? "%s\"%s/%u\"" : "%s%s/%u", k ? ", " : "", a, prefix);
        at += w > 0 ? (size_t)w : 0;
    }
}

/* A last_error for JSON: quotes and backslashes escaped, control bytes dropped. */
static void json_text(const char *s, char *buf, size_t n)
{
    size_t at = 0;
    for (; *s && at + 3 < n; s++) {
        if (*s == '"' || *s == '\\')
            buf[at++] = '\\';
        if ((unsigned char)*s >= 0x20)
            buf[at++] = *s;
    }
    buf[at] = 0;
}

static int cmd_links(int fd, bool json)
{
    static const char *const states[] = {"connecting", "up", "down"};
    struct san_msg rep;
    uint64_t cursor = 0, n = 0;
    bool enabled = false;

    if (json)
        printf("[");
    do {
        int err = call(fd, SAN_OP_LINKS, cursor, &rep);
        if (err)
            fail("links", err);
        enabled = rep.u.links_rep.enabled;
        for (uint32_t i = 0; i < rep.u.links_rep.nr; i++, n++) {
            const struct san_link_info *l = &rep.u.links_rep.l[i];
            char peer[80], nets[16 * 48], why[200];
            ep_addr(peer, sizeof(peer), &l->addr);
            nets_text(l, json, nets, sizeof(nets));
            if (json) {
                json_text(l->last_error, why, sizeof(why));
                printf("%s{\"peer\": \"%s\", \"state\": \"%s\", \"host_id\": \"%016" PRIx64
                       "\", \"networks\": [%s], \"bytes_tx\": %" PRIu64 ", \"bytes_rx\": %" PRIu64
                       ", \"msgs_tx\": %" PRIu64 ", \"msgs_rx\": %" PRIu64
                       ", \"sessions\": %" PRIu64 ", \"mac_failures\": %" PRIu64
                       ", \"last_error\": \"%s\"}",
                       n ? ", " : "", peer, states[l->state], l->host_id, nets, l->bytes_tx,
                       l->bytes_rx, l->msgs_tx, l->msgs_rx, l->sessions, l->mac_failures, why);
                continue;
            }
            if (!n)
                printf("%-24s %-10s %-16s %10s %10s %8s %8s %s\n", "peer", "state", "host_id",
                       "bytes_tx", "bytes_rx", "msgs_tx", "msgs_rx", "networks");
            printf("%-24s %-10s %016" PRIx64 " %10" PRIu64 " %10" PRIu64 " %8" PRIu64 " %8" PRIu64
                   " %s\n",
                   peer, states[l->state], l->host_id, l->bytes_tx, l->bytes_rx, l->msgs_tx,
                   l->msgs_rx, l->nr_nets ? nets : "-");
            if (l->last_error[0])
                printf("%-24s last error: %s\n", "", l->last_error);
            if (l->mac_failures)
                printf("%-24s messages with a bad MAC: %" PRIu64 "\n", "", l->mac_failures);
        }
        cursor = rep.u.links_rep.next;
    } while (cursor);
    if (json)
        printf("]\n");
    else if (!n)
        printf(enabled ? "(no [link] peers)\n" : "(no links: the daemon has no [link] section)\n");
    return 0;
}

/* The SAN networks the daemon serves, read whole: a generation that changes between pages starts
 * the listing again (a few times). */
static int cmd_networks(int fd, bool json)
{
    static struct san_wire_served all[4096];
    struct san_msg rep;
    uint64_t gen = 0;
    size_t n = 0;
    for (int tries = 0; tries < 8; tries++) {
        uint64_t cursor = 0;
        n = 0;
        gen = 0;
        do {
            int err = call(fd, SAN_OP_NETWORKS, cursor, &rep);
            if (err)
                fail("networks", err);
            const struct san_networks_rep *r = &rep.u.networks_rep;
            if (cursor && r->gen != gen)
                break;
            gen = r->gen;
            for (uint32_t i = 0; i < r->nr && n < 4096; i++)
                all[n++] = r->n[i];
            cursor = r->next > cursor ? r->next : 0;
        } while (cursor);
        if (!cursor)
            break;
    }
    if (json)
        printf("{\"gen\": \"%016" PRIx64 "\", \"networks\": [", gen);
    else
        printf("%-7s %s   (generation %016" PRIx64 ")\n", "kind", "network", gen);
    for (size_t i = 0; i < n; i++) {
        struct san_link_info one = {.nr_nets = 1};
        memcpy(one.nets[0].ip, all[i].ip, 16);
        one.nets[0].prefix = all[i].prefix;
        char net[64];
        nets_text(&one, false, net, sizeof(net));
        const char *kind = all[i].flags == SAN_WIRE_NET_LOCAL ? "local" : "linked";
        if (json)
            printf("%s{\"network\": \"%s\", \"kind\": \"%s\"}", i ? ", " : "", net, kind);
        else
            printf("%-7s %s\n", kind, net);
    }
    if (json)
        printf("]}\n");
    return 0;
}

static int cmd_lowmem(int fd, bool json)
{
    struct san_msg rep;
    int err = call(fd, SAN_OP_CHECK_LOWMEM, 0, &rep);
    if (err)
        fail("check-lowmem", err);
    const struct san_lowmem_rep *l = &rep.u.lowmem_rep;
    if (json)
        printf("{\"nolowmem\": %s, \"dirty_frames\": %" PRIu64 "}\n",
               l->nolowmem ? "true" : "false", l->dirty_frames);
    else if (!l->nolowmem)
        printf("not a NOLOWMEM machine: low memory is not kept scrubbed, nothing to check\n");
    else
        printf("%" PRIu64 " free frame(s) below 4 GiB were written%s\n", l->dirty_frames,
               l->dirty_frames ? " (a device or driver truncated an address?)" : ": clean");
    return l->dirty_frames ? 3 : 0;
}

static void usage(FILE *f)
{
    fprintf(f,
            "usage: sanctl [--socket PATH] [--timeout SECONDS] <command> [--json]\n"
            "commands:\n"
            "  stats         daemon-wide figures (clients, memory, registrations, DMA)\n"
            "  clients       connected clients and what each holds\n"
            "  allocations   proxy allocations of every client\n"
            "  endpoints     the NIC's endpoints: owner, peer, state, queue fill, traffic\n"
            "  links         links to other hosts' daemons: state, networks, traffic\n"
            "                (other users' only for root and the daemon's user)\n"
            "  networks      the SAN networks served: this host's ([nic] addresses) and\n"
            "                those of the hosts linked to it that are up\n"
            "  check-lowmem  NOLOWMEM pattern check of free low memory (exit 3 if dirty)\n"
            "options:\n"
            "  --socket PATH      the daemon's socket (default $SANPROXY_SOCKET, else\n"
            "                     $XDG_RUNTIME_DIR/sanproxy.sock, else /tmp/sanproxy.sock)\n"
            "  --timeout SECONDS  give up on a daemon that does not answer (default %g; 0: "
            "never)\n"
            "  --json             JSON instead of a table\n"
            "  --version          print the version and exit\n"
            "  -h, --help         this text\n",
            DEFAULT_TIMEOUT_S);
}

/* Exits 2 with a message naming the option and the value. */
static double parse_timeout(const char *v)
{
    char *end;
    errno = 0;
    double t = strtod(v, &end);
    if (errno || end == v || *end || !(t >= 0) || t > 86400) {
        fprintf(stderr, "sanctl: --timeout: seconds from 0 to 86400 (got \"%s\")\n", v);
        usage(stderr);
        exit(2);
    }
    return t;
}

int main(int argc, char **argv)
{
    const char *cmd = NULL;
    bool json = false;

    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        bool more = i + 1 < argc;
        if (!strcmp(a, "--socket") && more) {
            sock_path = argv[++i];
        } else if (!strcmp(a, "--timeout") && more) {
            timeout_s = parse_timeout(argv[++i]);
        } else if (!strcmp(a, "--json")) {
            json = true;
        } else if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            usage(stdout);
            return 0;
        } else if (!strcmp(a, "--version")) {
            printf("sanctl (sanproxy) %s\n", SAN_VERSION);
            return 0;
        } else if (!cmd && a[0] != '-') {
            cmd = a;
        } else {
            bool takes_value = !strcmp(a, "--socket") || !strcmp(a, "--timeout");
            fprintf(stderr, "sanctl: %s: %s\n", a,
                    takes_value   ? "needs a value"
                    : a[0] == '-' ? "unknown option"
                                  : "one command only");
            usage(stderr);
            return 2;
        }
    }
    if (!cmd) {
        usage(stderr);
        return 2;
    }
    int (*run)(int, bool) = !strcmp(cmd, "stats")          ? cmd_stats
                            : !strcmp(cmd, "clients")      ? cmd_clients
                            : !strcmp(cmd, "allocations")  ? cmd_allocations
                            : !strcmp(cmd, "endpoints")    ? cmd_endpoints
                            : !strcmp(cmd, "links")        ? cmd_links
                            : !strcmp(cmd, "networks")     ? cmd_networks
                            : !strcmp(cmd, "check-lowmem") ? cmd_lowmem
                                                           : NULL;
    if (!run) {
        fprintf(stderr, "sanctl: unknown command: %s\n", cmd);
        usage(stderr);
        return 2;
    }
    int fd = connect_daemon();
    if (fd < 0)
        fail("connect", fd);
    int rc = run(fd, json);
    close(fd);
    if (fflush(stdout) || ferror(stdout)) {
        fprintf(stderr, "sanctl: %s: cannot write the output: %s\n", cmd, strerror(errno));
        return 1;
    }
    return rc;
}
