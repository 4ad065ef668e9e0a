/* san_strerror: names every error code a public call returns, its own and those the system calls
 * under it pass through (socket, connect, mmap, mlock, ...), and those of the NIC's endpoints
 * (DESIGN section 8). Each message starts with the errno name, then says what it means here.
 * tests/strerror.sh holds the list complete against the codes the sources return. Static strings,
 * no locking. */
#include <errno.h>
#include <san/error.h>

const char *san_strerror(int err)
{
    if (err < 0)
        err = -err;
    switch (err) {
    case 0:
        return "success";
    /* Arguments and state. */
    case EINVAL:
        return "EINVAL: invalid argument";
    case EFAULT:
        return "EFAULT: bad address (unmapped, unallocated or unreachable), or a buffer too small";
    case EACCES:
        return "EACCES: access rights do not allow this";
    case EPERM:
        return "EPERM: operation not permitted";
    case EBUSY:
        return "EBUSY: in use by an operation in flight";
    case EEXIST:
        return "EEXIST: already exists";
    case ENOENT:
        return "ENOENT: not found (for a socket path: no sanproxyd there)";
    case ESTALE:
        return "ESTALE: the object changed under the request (stale handle or key)";
    case ERANGE:
        return "ERANGE: value out of range";
    case EOVERFLOW:
        return "EOVERFLOW: value too large";
    case ENAMETOOLONG:
        return "ENAMETOOLONG: path too long (a socket path holds at most 107 bytes)";
    case ENOTDIR:
        return "ENOTDIR: a component of the path is not a directory";
    case ELOOP:
        return "ELOOP: too many symbolic links in the path";
    case ECHILD:
        return "ECHILD: the context belongs to the parent process (used after fork)";
    case ESRCH:
        return "ESRCH: no such process";
    case EINTR:
        return "EINTR: interrupted";
    case ECANCELED:
        return "ECANCELED: cancelled (flushed after an error or a close)";
    /* Resources. */
    case ENOMEM:
        return "ENOMEM: not enough memory satisfies the request";
    case ENOBUFS:
        return "ENOBUFS: a limit is reached (one of sanproxyd's per-client limits, or "
               "RLIMIT_MEMLOCK for locked memory: see ulimit -l)";
    case EAGAIN:
        return "EAGAIN: resource temporarily exhausted, try again";
    case ENOSPC:
        return "ENOSPC: no space left";
    case EMFILE:
        return "EMFILE: this process has too many open files (ulimit -n)";
    case ENFILE:
        return "ENFILE: the system has too many open files";
    /* Support. */
    case ENOSYS:
        return "ENOSYS: not supported by this kernel";
    case EOPNOTSUPP:
        return "EOPNOTSUPP: operation not supported";
    case ENOTTY:
        return "ENOTTY: an operation this kind of file (or this kernel) does not have";
    case ENODEV:
        return "ENODEV: no such device";
    case EIO:
        return "EIO: input/output error";
    case EBADF:
        return "EBADF: bad descriptor";
    /* The daemon's protocol and connections. */
    case EPROTO:
        return "EPROTO: protocol error (sanproxyd and libsan of different versions?)";
    case EBADMSG:
        return "EBADMSG: malformed message";
    case EMSGSIZE:
        return "EMSGSIZE: message too long, or a receive buffer too small for it";
    case EPROTOTYPE:
        return "EPROTOTYPE: the socket is of the wrong type (not sanproxyd's SOCK_SEQPACKET)";
    case ENOTSOCK:
        return "ENOTSOCK: not a socket";
    case EPIPE:
        return "EPIPE: connection to the peer is gone";
    case ECONNREFUSED:
        return "ECONNREFUSED: nobody listens there (for a socket path: sanproxyd is not running)";
    case ECONNRESET:
        return "ECONNRESET: connection reset by the peer";
    case ECONNABORTED:
        return "ECONNABORTED: connection aborted";
    case ENOTCONN:
        return "ENOTCONN: not connected (the endpoint is in error or its peer is gone)";
    case ETIMEDOUT:
        return "ETIMEDOUT: timed out";
    case EADDRINUSE:
        return "EADDRINUSE: address already in use";
    case EADDRNOTAVAIL:
        return "EADDRNOTAVAIL: address not served by this host";
    case ENETUNREACH:
        return "ENETUNREACH: network unreachable (no host serves the address)";
    case EISCONN:
        return "EISCONN: the socket is connected already";
    case EINPROGRESS:
        return "EINPROGRESS: the connect is under way (not accepted yet)";
    case EALREADY:
        return "EALREADY: a connect is under way already";
    case EAFNOSUPPORT:
        return "EAFNOSUPPORT: address family not supported (not IPv4 or IPv6)";
    case EHOSTUNREACH:
        return "EHOSTUNREACH: host unreachable";
    default:
        return "unknown error";
    }
}
