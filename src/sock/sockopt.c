/* Socket options and ioctl on SAN sockets (docs/sock.md, "Options and ioctl"). A SAN socket's
 * descriptor is an unconnected kernel TCP socket, so the kernel stores every option set on it and
 * answers for most: SO_TYPE, SO_DOMAIN, SO_PROTOCOL, SO_REUSEADDR, SO_KEEPALIVE, TCP_NODELAY,
 * SO_LINGER read back what was set. The switch answers where the unconnected socket would say
 * something false about the connection: SO_ERROR (the connection's pending error), SO_RCVBUF and
 * SO_SNDBUF (the connection's real buffering), TCP_INFO (its state), TCP_MAXSEG (the data one
 * message carries), FIONREAD/SIOCINQ and SIOCOUTQ/SIOCOUTQNSD. SO_LINGER {1, 0} also makes close
 * abortive, as TCP's: the peer gets ECONNRESET. Listeners are kernel sockets: all the kernel's. */
#include <limits.h>
#include <linux/sockios.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdarg.h>
#include <string.h>
#include <sys/ioctl.h>

#include "sock/export.h"
#include "sock/real.h"

/* Writes an option's value as the kernel does: the caller's length caps it, and comes back as the
 * length written. */
static int put_opt(void *val, socklen_t *len, const void *v, size_t size)
{
    if (!len)
        return -EFAULT;
    if ((int)*len < 0)
        return -EINVAL;
    size_t n = *len < size ? *len : size;
    if (n && !val)
        return -EFAULT;
    memcpy(val, v, n);
    *len = (socklen_t)n;
    return 0;
}

static int put_int(void *val, socklen_t *len, int v)
{
    return put_opt(val, len, &v, sizeof(v));
}

/* TCP's state for the connection's (TCP_INFO). */
static uint8_t tcp_state(const struct sansock_conn_state *st)
{
    if (st->err)
        return TCP_CLOSE;
    if (!st->negotiated)
        return TCP_SYN_SENT;
    if (st->peer_eof && st->wr_shut)
        return TCP_CLOSING;
    if (st->peer_eof)
        return TCP_CLOSE_WAIT;
    if (st->wr_shut)
        return st->outq ? TCP_FIN_WAIT1 : TCP_FIN_WAIT2;
    return TCP_ESTABLISHED;
}

/* The fields of tcp_info that mean something here; the others are 0 (no retransmissions, no
 * congestion, no round-trip estimate: the SAN has none of them). */
static void tcp_info_of(const struct sansock_conn_state *st, struct tcp_info *ti)
{
    memset(ti, 0, sizeof(*ti));
    ti->tcpi_state = tcp_state(st);
    ti->tcpi_snd_mss = st->mss;
    ti->tcpi_rcv_mss = st->mss;
    ti->tcpi_advmss = st->mss;
    ti->tcpi_pmtu = st->mss;
    ti->tcpi_rcv_space = st->rcvbuf;
    ti->tcpi_snd_cwnd = st->mss ? st->sndbuf / st->mss : 0; /* messages that may be in flight */
    ti->tcpi_unacked = st->mss ? (uint32_t)((st->outq + st->mss - 1) / st->mss) : 0;
}

/* 1: answered (*r set), 0: the kernel's to answer. */
static int conn_getsockopt(struct sansock_conn *c, int level, int opt, void *val, socklen_t *len,
                           int *r)
{
    struct sansock_conn_state st;
    if (level == SOL_SOCKET && opt == SO_ERROR) {
        *r = put_int(val, len, -sansock_conn_take_error(c));
        return 1;
    }
    bool ours = (level == SOL_SOCKET && (opt == SO_RCVBUF || opt == SO_SNDBUF)) ||
                (level == IPPROTO_TCP && (opt == TCP_INFO || opt == TCP_MAXSEG));
    if (!ours)
        return 0;
    sansock_conn_state(c, &st);
    if (level == SOL_SOCKET) {
        *r = put_int(val, len, (int)(opt == SO_RCVBUF ? st.rcvbuf : st.sndbuf));
    } else if (opt == TCP_MAXSEG) {
        *r = put_int(val, len, (int)st.mss);
    } else {
        struct tcp_info ti;
        tcp_info_of(&st, &ti);
        *r = put_opt(val, len, &ti, sizeof(ti));
    }
    return 1;
}

static int sock_getsockopt(struct sansock_conn *c, int fd, int level, int opt, void *val,
                           socklen_t *len)
{
    int r;
    if (conn_getsockopt(c, level, opt, val, len, &r))
        return (int)sansock_fail(r);
    return REAL(getsockopt)(fd, level, opt, val, len);
}

/* Every option goes to the kernel's socket (which checks it and keeps it for getsockopt); SO_LINGER
 * also sets how the connection closes. */
static int sock_setsockopt(struct sansock_conn *c, int fd, int level, int opt, const void *val,
                           socklen_t len)
{
    int r = REAL(setsockopt)(fd, level, opt, val, len);
    if (!r && level == SOL_SOCKET && opt == SO_LINGER && len >= sizeof(struct linger)) {
        struct linger l;
        memcpy(&l, val, sizeof(l));
        sansock_conn_set_abort(c, l.l_onoff && !l.l_linger);
    }
    return r;
}

EXPORT int getsockopt(int fd, int level, int opt, void *val, socklen_t *len)
{
    ON_CONN(fd, sock_getsockopt(c, fd, level, opt, val, len),
            REAL(getsockopt)(fd, level, opt, val, len));
}

EXPORT int setsockopt(int fd, int level, int opt, const void *val, socklen_t len)
{
    ON_CONN(fd, sock_setsockopt(c, fd, level, opt, val, len),
            REAL(setsockopt)(fd, level, opt, val, len));
}

/* The queue sizes of the connection; any other request is the kernel's (FIONBIO too: ioctl
 * below caches the flag it sets). */
static int sock_ioctl(struct sansock_conn *c, int fd, unsigned long req, void *arg)
{
    if (req != FIONREAD && req != SIOCOUTQ && req != SIOCOUTQNSD)
        return REAL(ioctl)(fd, req, arg);
    if (!arg)
        return (int)sansock_fail(-EFAULT);
    struct sansock_conn_state st;
    sansock_conn_state(c, &st);
    /* SIOCOUTQNSD: bytes not sent yet, i.e. written and waiting for a credit (session.c). */
    size_t v = req == FIONREAD ? st.inq : req == SIOCOUTQ ? st.outq : st.unsent;
    int n = v > INT_MAX ? INT_MAX : (int)v;
    memcpy(arg, &n, sizeof(n));
    return 0;
}

EXPORT int ioctl(int fd, unsigned long req, ...)
{
    va_list ap;
    va_start(ap, req);
    void *arg = va_arg(ap, void *); /* every request takes at most one argument */
    va_end(ap);
    struct sansock_obj *o = req == FIONBIO ? sansock_fd_get(fd) : NULL;
    if (o) { /* the switch's cached O_NONBLOCK follows (fdtab.h) */
        sansock_nonblock_lock();
        int r = REAL(ioctl)(fd, req, arg);
        int e = errno;
        if (!r) {
            int on;
            memcpy(&on, arg, sizeof(on)); /* the kernel read it: a valid pointer */
            sansock_obj_set_nonblock(o, on != 0);
        }
        sansock_nonblock_unlock();
        sansock_obj_put(o);
        errno = e;
        return r;
    }
    ON_CONN(fd, sock_ioctl(c, fd, req, arg), REAL(ioctl)(fd, req, arg));
}
