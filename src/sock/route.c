/* The SAN's networks as this process sees them (route.h). The cache holds them in the NIC's form
 * (IPv6 bytes, IPv4 as ::ffff:a.b.c.d, the prefix over that form) so one comparison serves both
 * families. It is refreshed when the daemon's status page says its networks changed (a link up
 * or down: san_nic_networks_changes, read with no round trip), when it is older than REFRESH_NS
 * (which also notices a daemon that went away) or was filled by another fork generation (the
 * child asks with its own context); the daemon's generation makes a refresh with nothing changed
 * a small round trip. Without a daemon (or when asking fails) the cache is empty
 * for REFRESH_NS, then the daemon is tried again: no destination is on the SAN meanwhile.
 * Locking: route_lock guards everything here; sansock_ctx's lock is taken under it. */
#include "common/clock.h"
#include "sock/route.h"

#include <errno.h>
#include <ifaddrs.h>
#include <netinet/in.h>
#include <pthread.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <san/san.h>

#include "sock/real.h"
#include "sock/san.h"

#define REFRESH_NS 1000000000ull
#define MAX_NETS   (16 + 16 * 16) /* [nic] addresses, 16 links of 16 networks */

struct net {
    unsigned char ip[16];
    unsigned prefix;
    bool local;
};

static pthread_mutex_t route_lock = PTHREAD_MUTEX_INITIALIZER;
static struct net nets[MAX_NETS];
static size_t nr_nets;
static uint64_t gen;                /* the daemon's generation of nets; 0: none */
static uint64_t changes;            /* san_nic_networks_changes when nets was asked for; 0: none */
static uint64_t fetched_ns;         /* when nets was last asked for (0: never) */
static unsigned fetched_fork = ~0u; /* the fork generation it was asked in */
static struct san_network buf[MAX_NETS];

/* sa in the NIC's form: false for anything but AF_INET / AF_INET6 of their size. */
static bool to_ip(const struct sockaddr *sa, socklen_t len, unsigned char ip[16])
{
    if (sa->sa_family == AF_INET && len >= (socklen_t)sizeof(struct sockaddr_in)) {
        struct sockaddr_in in;
        memcpy(&in, sa, sizeof(in));
        memset(ip, 0, 10);
        ip[10] = ip[11] = 0xff;
        memcpy(ip + 12, &in.sin_addr, 4);
        return true;
    }
    if (sa->sa_family == AF_INET6 && len >= (socklen_t)sizeof(struct sockaddr_in6)) {
        struct sockaddr_in6 in6;
        memcpy(&in6, sa, sizeof(in6));
        memcpy(ip, &in6.sin6_addr, 16);
        return true;
    }
    return false;
}

static bool net_has(const struct net *n, const unsigned char ip[16])
{
    unsigned full = n->prefix / 8, rest = n->prefix % 8;
    if (memcmp(ip, n->ip, full))
        return false;
    return !rest || !((ip[full] ^ n->ip[full]) & (0xff00u >> rest));
}

/* Under route_lock: asks the daemon again when the cache is stale. */
static void refresh_locked(void)
{
    uint64_t now = san_now_ns();
    unsigned fork = sansock_fork_gen;
    struct san_ctx *ctx;
    if (fetched_ns && fork == fetched_fork && now - fetched_ns < REFRESH_NS &&
        (!changes || (!sansock_ctx(&ctx) && san_nic_networks_changes(ctx) == changes)))
        return;
    if (fork != fetched_fork)
        gen = 0; /* another process's answer: ask in full with this one's context */
    fetched_ns = now;
    fetched_fork = fork;
    size_t n = 0;
    uint64_t g = gen;
    /* The count before the ask: a change while it is answered shows at the next lookup. */
    changes = sansock_ctx(&ctx) ? 0 : san_nic_networks_changes(ctx);
    if (!ctx || san_nic_networks(ctx, &g, buf, MAX_NETS, &n)) {
        nr_nets = 0;
        gen = 0;
        changes = 0;
        return;
    }
    if (g == gen && !n)
        return; /* unchanged */
    gen = g;
    nr_nets = 0;
    for (size_t i = 0; i < n && i < MAX_NETS; i++) {
        struct net *o = &nets[nr_nets];
        if (!to_ip((struct sockaddr *)&buf[i].addr, sizeof(buf[i].addr), o->ip))
            continue;
        o->prefix = buf[i].prefix + (buf[i].addr.ss_family == AF_INET ? 96 : 0);
        if (o->prefix > 128)
            continue;
        o->local = buf[i].flags & SAN_NETWORK_LOCAL;
        nr_nets++;
    }
}

static bool lookup(const struct sockaddr *sa, socklen_t len, bool local_only)
{
    unsigned char ip[16];
    if (!to_ip(sa, len, ip))
        return false;
    bool found = false;
    pthread_mutex_lock(&route_lock);
    refresh_locked();
    for (size_t i = 0; i < nr_nets && !found; i++)
        found = (!local_only || nets[i].local) && net_has(&nets[i], ip);
    pthread_mutex_unlock(&route_lock);
    return found;
}

bool sansock_route_served(const struct sockaddr *sa, socklen_t len)
{
    return lookup(sa, len, false);
}

bool sansock_route_local(const struct sockaddr *sa, socklen_t len)
{
    return lookup(sa, len, true);
}

size_t sansock_route_local_addrs(int family, unsigned short port, struct sockaddr_storage *out,
                                 size_t max)
{
    struct ifaddrs *ifa;
    size_t n = 0;
    if (getifaddrs(&ifa))
        return 0;
    for (struct ifaddrs *i = ifa; i && n < max; i = i->ifa_next) {
        if (!i->ifa_addr || i->ifa_addr->sa_family != family)
            continue;
        struct sockaddr_storage a = {0};
        socklen_t len;
        if (family == AF_INET) {
            struct sockaddr_in *in = (struct sockaddr_in *)&a;
            memcpy(in, i->ifa_addr, sizeof(*in));
            in->sin_port = port;
            len = sizeof(*in);
        } else {
            struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&a;
            memcpy(in6, i->ifa_addr, sizeof(*in6));
            if (IN6_IS_ADDR_LINKLOCAL(&in6->sin6_addr))
                continue; /* scoped: a SAN address has no interface */
            in6->sin6_port = port;
            in6->sin6_scope_id = 0;
            in6->sin6_flowinfo = 0;
            len = sizeof(*in6);
        }
        bool dup = false;
        for (size_t k = 0; k < n && !dup; k++)
            dup = !memcmp(&out[k], &a, sizeof(a));
        if (!dup && sansock_route_local((struct sockaddr *)&a, len))
            out[n++] = a;
    }
    freeifaddrs(ifa);
    return n;
}

static bool is_loopback(const struct sockaddr *sa, socklen_t len)
{
    unsigned char ip[16];
    static const unsigned char v4mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    if (!to_ip(sa, len, ip))
        return false;
    if (!memcmp(ip, v4mapped, 12))
        return ip[12] == 127;
    return !memcmp(ip, &in6addr_loopback, 16);
}

int sansock_route_source(int family, const struct sockaddr *dst, socklen_t len,
                         struct sockaddr_storage *out, socklen_t *out_len)
{
    memset(out, 0, sizeof(*out));
    if (is_loopback(dst, len)) {
        if (family == AF_INET) {
            struct sockaddr_in *in = (struct sockaddr_in *)out;
            in->sin_family = AF_INET;
            in->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
            *out_len = sizeof(*in);
        } else {
            struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)out;
            in6->sin6_family = AF_INET6;
            in6->sin6_addr = in6addr_loopback;
            *out_len = sizeof(*in6);
        }
        return 0;
    }
    /* A UDP socket's connect picks the source address as TCP's would, and sends nothing. */
    int u = socket(family, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (u < 0)
        return -errno;
    int err = 0;
    socklen_t l = sizeof(*out);
    if (REAL(connect)(u, dst, len) || REAL(getsockname)(u, (struct sockaddr *)out, &l))
        err = -errno;
    REAL(close)(u);
    if (err)
        return err;
    if (out->ss_family == AF_INET)
        ((struct sockaddr_in *)out)->sin_port = 0;
    else if (out->ss_family == AF_INET6)
        ((struct sockaddr_in6 *)out)->sin6_port = 0;
    *out_len = l;
    return 0;
}

void sansock_route_atfork_child(void)
{
    pthread_mutex_init(&route_lock, NULL);
}
