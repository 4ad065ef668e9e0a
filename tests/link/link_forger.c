/* A peer daemon's side of a link, played by the test (test_link_forge.sh), so that it can also
 * send what no daemon sends: messages with a bad MAC. It holds the secret and speaks the link
 * protocol (link/wire.h, link/auth.h) on its own libfabric endpoint at the address the daemon
 * under test has in its peers: answers HELLOs with PROOFs, says hello itself until it has a
 * session, keeps the session with heartbeats, and starts a new one whenever the daemon does (a
 * HELLO from it, then its PROOF with a new nonce). Commands on stdin, one a line, each answered
 * with one line on stdout:
 *
 *   up N         wait (20 s at most) until N sessions were made: "up N", or "timeout"
 *   forge K T    send K messages of type T (ep, heartbeat, proof) of the current session, well
 *                formed, with sequence numbers ahead, and a wrong MAC: "forged K"
 *   stale K      send K endpoint messages MAC'd under the previous session's key (what a peer
 *                sends before it learns of a new session): "stale K"
 *   quit
 *
 *   link_forger LISTEN PEER SECRET */
#include <errno.h>
#include <poll.h>
#include <rdma/fabric.h>
#include <rdma/fi_cm.h>
#include <rdma/fi_domain.h>
#include <rdma/fi_endpoint.h>
#include <rdma/fi_errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include "link/auth.h"
#include "link/link.h"
#include "link/rxm_env.h"
#include "link/wire.h"

#define NR_RX    16
#define NR_TX    16
#define BUF      SAN_LINK_RXM_EAGER
#define SEC      1000000000ULL
#define HELLO_NS (100 * 1000000ULL)
#define BEAT_NS  (250 * 1000000ULL)

struct buf {
    struct fi_context2 ctx;
    int busy;
    int rx;
    _Alignas(8) uint8_t data[BUF];
};

static struct buf *bufs;
static struct fid_ep *ep;
static struct fid_cq *cq;
static fi_addr_t peer;
static uint64_t me, them, tx_seq, sessions;
static uint8_t secret[SAN_LINK_SECRET_MAX];
static size_t secret_len;
static uint8_t my_nonce[SAN_LINK_NONCE], their_nonce[SAN_LINK_NONCE];
static int in_session;
static uint8_t tx_key[SAN_LINK_KEY];
static struct umac64_ctx tx_umac, old_tx_umac;
static int have_old;
static uint64_t next_hello, next_beat;

static uint64_t now_ns(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (uint64_t)t.tv_sec * SEC + (uint64_t)t.tv_nsec;
}

_Noreturn static void die(const char *what, int r)
{
    fprintf(stderr, "link_forger: %s: %s\n", what, fi_strerror(r < 0 ? -r : r));
    exit(1);
}

static void progress(void);

/* A free send buffer, progressing the provider until one is. */
static struct buf *tx_buf(void)
{
    for (;;) {
        for (int i = NR_RX; i < NR_RX + NR_TX; i++)
            if (!bufs[i].busy)
                return &bufs[i];
        progress();
    }
}

/* Sends the message built in b (its MAC set); retried while the provider is busy. */
static void send_buf(struct buf *b)
{
    const struct san_link_msg *m = (const struct san_link_msg *)b->data;
    for (int tries = 0;; tries++) {
        ssize_t r = fi_send(ep, b->data, m->hdr.length, NULL, peer, &b->ctx);
        if (!r) {
            b->busy = 1;
            return;
        }
        if (r != -FI_EAGAIN || tries > 100000) {
            fprintf(stderr, "link_forger: send: %s (dropped)\n", fi_strerror((int)-r));
            return;
        }
        progress();
    }
}

static struct san_link_msg *start(struct buf *b, unsigned type)
{
    struct san_link_msg *m = (struct san_link_msg *)b->data;
    san_link_init(m, type, me, ++tx_seq);
    return m;
}

static void send_hello(void)
{
    struct buf *b = tx_buf();
    struct san_link_msg *m = start(b, SAN_LINK_HELLO);
    memcpy(m->u.hello.nonce, my_nonce, SAN_LINK_NONCE);
    m->u.hello.max_version = SAN_LINK_VERSION;
    send_buf(b);
}

/* A PROOF answering (host, nonce): under the key of our direction for those nonces. */
static void send_proof(uint64_t host, const uint8_t nonce[SAN_LINK_NONCE])
{
    uint8_t key[SAN_LINK_KEY];
    struct buf *b = tx_buf();
    struct san_link_msg *m = start(b, SAN_LINK_PROOF);
    memcpy(m->u.proof.your_nonce, nonce, SAN_LINK_NONCE);
    memcpy(m->u.proof.my_nonce, my_nonce, SAN_LINK_NONCE);
    m->u.proof.your_host_id = host;
    m->u.proof.nr_nets = 1;
    m->u.proof.nets[0].ip[10] = m->u.proof.nets[0].ip[11] = 0xff; /* 10.77.0.0/16 */
    m->u.proof.nets[0].ip[12] = 10;
    m->u.proof.nets[0].ip[13] = 77;
    m->u.proof.nets[0].prefix = 96 + 16;
    san_link_key(secret, secret_len, me, my_nonce, host, nonce, key);
    san_link_mac(key, m);
    send_buf(b);
}

static void send_heartbeat(void)
{
    struct buf *b = tx_buf();
    struct san_link_msg *m = start(b, SAN_LINK_HEARTBEAT);
    m->u.heartbeat.sent_ns = now_ns();
    san_link_mac(tx_key, m);
    send_buf(b);
}

/* An endpoint message that passes the decoder (a CREDIT of a connection), under ctx's MAC, or
 * with its tag turned into garbage when ctx is NULL. */
static void send_ep(struct umac64_ctx *ctx)
{
    struct buf *b = tx_buf();
    struct san_link_msg *m = start(b, SAN_LINK_EP);
    m->u.ep.x.op = SAN_XMSG_CREDIT;
    m->u.ep.x.conn = 5;
    m->u.ep.x.from = 6;
    m->u.ep.x.chunks = 1;
    if (ctx) {
        san_link_umac(ctx, m);
    } else {
        san_link_umac(&tx_umac, m);
        m->hdr.mac[0] ^= 0x5a; /* the tag of this very message, wrong in one byte */
    }
    send_buf(b);
}

static void forge(const char *type)
{
    if (strcmp(type, "heartbeat") && strcmp(type, "proof")) {
        send_ep(NULL);
        return;
    }
    struct buf *b = tx_buf();
    struct san_link_msg *m;
    if (!strcmp(type, "heartbeat")) {
        m = start(b, SAN_LINK_HEARTBEAT);
        m->u.heartbeat.sent_ns = now_ns();
        san_link_mac(tx_key, m);
        m->hdr.mac[31] ^= 1;
    } else { /* a PROOF answering the daemon's nonce of this session */
        m = start(b, SAN_LINK_PROOF);
        memcpy(m->u.proof.your_nonce, their_nonce, SAN_LINK_NONCE);
        memcpy(m->u.proof.my_nonce, my_nonce, SAN_LINK_NONCE);
        m->u.proof.your_host_id = them;
        if (getrandom(m->hdr.mac, SAN_LINK_MAC, 0) != SAN_LINK_MAC)
            memset(m->hdr.mac, 0x77, SAN_LINK_MAC);
    }
    send_buf(b);
}

/* A PROOF of the daemon that answers our nonce: a session (a new one when its nonce is new). */
static void proven(const struct san_link_msg *m)
{
    const struct san_link_proof *pr = &m->u.proof;
    uint8_t key[SAN_LINK_KEY];
    if (pr->your_host_id != me || memcmp(pr->your_nonce, my_nonce, SAN_LINK_NONCE))
        return;
    san_link_key(secret, secret_len, m->hdr.host_id, pr->my_nonce, me, my_nonce, key);
    if (!san_link_mac_ok(key, m)) {
        fprintf(stderr, "link_forger: the daemon's PROOF fails its MAC (another secret?)\n");
        return;
    }
    if (in_session && them == m->hdr.host_id && !memcmp(their_nonce, pr->my_nonce, SAN_LINK_NONCE))
        return;     /* the session we have */
    if (sessions) { /* the daemon keeps the last session's key a while: so do we */
        old_tx_umac = tx_umac;
        have_old = 1;
    }
    them = m->hdr.host_id;
    memcpy(their_nonce, pr->my_nonce, SAN_LINK_NONCE);
    san_link_key(secret, secret_len, me, my_nonce, them, their_nonce, tx_key);
    san_link_umac_key(tx_key, &tx_umac);
    in_session = 1;
    sessions++;
    next_beat = now_ns();
    send_proof(them, their_nonce); /* what brings the daemon's side up, if it is not yet */
}

static void handle(const void *data, size_t len)
{
    const struct san_link_msg *m = data;
    if (san_link_decode(data, len))
        return;
    if (m->hdr.type == SAN_LINK_HELLO) {
        /* The daemon says hello only without a session: ours, if any, is over for it. */
        in_session = 0;
        send_proof(m->hdr.host_id, m->u.hello.nonce);
    } else if (m->hdr.type == SAN_LINK_PROOF) {
        proven(m);
    }
}

static void progress(void)
{
    struct fi_cq_tagged_entry e[16];
    fi_addr_t src[16];
    ssize_t n = fi_cq_readfrom(cq, e, 16, src);
    for (ssize_t i = 0; i < n; i++) {
        struct buf *b = e[i].op_context;
        if (!b->rx) {
            b->busy = 0;
            continue;
        }
        handle(b->data, e[i].len);
        ssize_t r;
        while ((r = fi_recv(ep, b->data, BUF, NULL, FI_ADDR_UNSPEC, &b->ctx)) == -FI_EAGAIN)
            ;
        if (r)
            die("fi_recv", (int)r);
    }
    if (n == -FI_EAVAIL) {
        struct fi_cq_err_entry err = {0};
        if (fi_cq_readerr(cq, &err, 0) == 1 && err.op_context) {
            struct buf *b = err.op_context;
            if (b->rx)
                fi_recv(ep, b->data, BUF, NULL, FI_ADDR_UNSPEC, &b->ctx);
            else
                b->busy = 0; /* a send the daemon's reconnect cut off */
        }
    }
    uint64_t t = now_ns();
    if (!in_session && t >= next_hello) {
        next_hello = t + HELLO_NS;
        send_hello();
    }
    if (in_session && t >= next_beat) {
        next_beat = t + BEAT_NS;
        send_heartbeat();
    }
}

static void host_port(const char *s, char *host, size_t hn, char *port, size_t pn)
{
    const char *c = strrchr(s, ':');
    if (!c || (size_t)(c - s) >= hn || strlen(c + 1) >= pn) {
        fprintf(stderr, "link_forger: ADDR:PORT expected: %s\n", s);
        exit(2);
    }
    memcpy(host, s, (size_t)(c - s));
    host[c - s] = 0;
    strcpy(port, c + 1);
}

static void open_ep(const char *listen, const char *to)
{
    char host[64], port[16];
    struct fi_info *hints = fi_allocinfo(), *info = NULL, *pi = NULL;
    struct fid_fabric *fabric;
    struct fid_domain *domain;
    struct fid_av *av;
    int r;
    hints->caps = FI_MSG | FI_RMA | FI_SOURCE;
    hints->mode = FI_CONTEXT | FI_CONTEXT2;
    hints->ep_attr->type = FI_EP_RDM;
    hints->domain_attr->mr_mode = FI_MR_VIRT_ADDR | FI_MR_ALLOCATED | FI_MR_PROV_KEY;
    hints->domain_attr->threading = FI_THREAD_DOMAIN;
    hints->tx_attr->msg_order = hints->rx_attr->msg_order = FI_ORDER_SAS;
    hints->fabric_attr->prov_name = strdup(SAN_LINK_DEFAULT_PROV);
    host_port(listen, host, sizeof(host), port, sizeof(port));
    if ((r = fi_getinfo(FI_VERSION(1, 17), host, port, FI_SOURCE, hints, &info)))
        die("fi_getinfo", r);
    struct fi_cq_attr cq_attr = {.size = NR_RX + NR_TX + 16, .format = FI_CQ_FORMAT_TAGGED};
    struct fi_av_attr av_attr = {.type = FI_AV_TABLE, .count = 4};
    if ((r = fi_fabric(info->fabric_attr, &fabric, NULL)) ||
        (r = fi_domain(fabric, info, &domain, NULL)) ||
        (r = fi_cq_open(domain, &cq_attr, &cq, NULL)) ||
        (r = fi_av_open(domain, &av_attr, &av, NULL)) ||
        (r = fi_endpoint(domain, info, &ep, NULL)) || (r = fi_ep_bind(ep, &av->fid, 0)) ||
        (r = fi_ep_bind(ep, &cq->fid, FI_TRANSMIT | FI_RECV)) || (r = fi_enable(ep)))
        die("opening the endpoint", r);
    host_port(to, host, sizeof(host), port, sizeof(port));
    if ((r = fi_getinfo(FI_VERSION(1, 17), host, port, 0, hints, &pi)))
        die("fi_getinfo (peer)", r);
    if (fi_av_insert(av, pi->dest_addr, 1, &peer, 0, NULL) != 1)
        die("fi_av_insert", -FI_EINVAL);
    for (int i = 0; i < NR_RX; i++) {
        bufs[i].rx = 1;
        if ((r = (int)fi_recv(ep, bufs[i].data, BUF, NULL, FI_ADDR_UNSPEC, &bufs[i].ctx)))
            die("fi_recv", r);
    }
    fi_freeinfo(pi);
    fi_freeinfo(info);
    fi_freeinfo(hints);
}

int main(int argc, char **argv)
{
    if (argc != 4) {
        fprintf(stderr, "usage: link_forger LISTEN PEER SECRET\n");
        return 2;
    }
    secret_len = strlen(argv[3]);
    if (secret_len > sizeof(secret))
        return 2;
    memcpy(secret, argv[3], secret_len);
    if (getrandom(&me, sizeof(me), 0) != sizeof(me) ||
        getrandom(my_nonce, sizeof(my_nonce), 0) != sizeof(my_nonce))
        return 1;
    me |= 1;
    struct san_link_rxm_var rxm[SAN_LINK_RXM_VARS];
    san_link_rxm_env(rxm); /* the daemon's message sizes: every message eager */
    bufs = calloc(NR_RX + NR_TX, sizeof(*bufs));
    if (!bufs)
        return 1;
    open_ep(argv[1], argv[2]);
    setvbuf(stdout, NULL, _IOLBF, 0);

    char line[128];
    size_t have = 0;
    for (;;) {
        progress();
        struct pollfd pfd = {.fd = 0, .events = POLLIN};
        if (poll(&pfd, 1, 1) <= 0)
            continue;
        ssize_t r = read(0, line + have, sizeof(line) - 1 - have);
        if (r <= 0)
            return 0;
        have += (size_t)r;
        line[have] = 0;
        char *nl;
        while ((nl = strchr(line, '\n'))) {
            *nl = 0;
            char what[16] = "", type[16] = "ep";
            unsigned long k = 0;
            sscanf(line, "%15s %lu %15s", what, &k, type);
            if (!strcmp(what, "quit"))
                return 0;
            if (!strcmp(what, "up")) {
                uint64_t until = now_ns() + 20 * SEC;
                while (sessions < k && now_ns() < until) {
                    progress();
                    usleep(200);
                }
                if (sessions >= k)
                    printf("up %lu\n", k);
                else
                    printf("timeout (%llu sessions)\n", (unsigned long long)sessions);
            } else if (!strcmp(what, "forge")) {
                for (unsigned long i = 0; i < k; i++)
                    forge(type);
                printf("forged %lu\n", k);
            } else if (!strcmp(what, "stale")) {
                for (unsigned long i = 0; i < k && have_old; i++)
                    send_ep(&old_tx_umac);
                printf(have_old ? "stale %lu\n" : "no previous session\n", k);
            } else {
                printf("unknown command\n");
            }
            size_t used = (size_t)(nl + 1 - line);
            memmove(line, nl + 1, have - used + 1);
            have -= used;
        }
        if (have == sizeof(line) - 1)
            have = 0; /* a line too long: dropped */
    }
}
