/* san_strerror: names every error code the project returns. Static strings, no locking. */
#include <errno.h>
#include <san/error.h>

const char *san_strerror(int err)
{
    if (err < 0)
        err = -err;
    switch (err) {
    case 0:
        return "success";
    case EINVAL:
        return "EINVAL: invalid argument";
    case ENOMEM:
        return "ENOMEM: not enough memory satisfies the request";
    case ENOBUFS:
        return "ENOBUFS: a per-client limit is reached";
    case EBUSY:
        return "EBUSY: in use by an operation in flight";
    case EFAULT:
        return "EFAULT: bad address (unmapped, unallocated or unreachable)";
    case EACCES:
        return "EACCES: access rights do not allow this";
    case EAGAIN:
        return "EAGAIN: resource temporarily exhausted, try again";
    case EPERM:
        return "EPERM: operation not permitted";
    case ENOENT:
        return "ENOENT: no such object";
    case EEXIST:
        return "EEXIST: already exists";
    case EPROTO:
        return "EPROTO: protocol error";
    case EPIPE:
        return "EPIPE: connection to the peer is gone";
    case ECONNREFUSED:
        return "ECONNREFUSED: nobody listens (is sanproxyd running?)";
    case ECONNRESET:
        return "ECONNRESET: connection reset";
    case ENOTCONN:
        return "ENOTCONN: not connected";
    case ETIMEDOUT:
        return "ETIMEDOUT: timed out";
    case EMSGSIZE:
        return "EMSGSIZE: message too long";
    case ERANGE:
        return "ERANGE: value out of range";
    case ENOSPC:
        return "ENOSPC: no space left";
    case ENOSYS:
        return "ENOSYS: not supported";
    case EOPNOTSUPP:
        return "EOPNOTSUPP: operation not supported";
    case EOVERFLOW:
        return "EOVERFLOW: value too large";
    case EINTR:
        return "EINTR: interrupted";
    case ESRCH:
        return "ESRCH: no such process";
    case ECHILD:
        return "ECHILD: the context belongs to the parent process (used after fork)";
    case EBADF:
        return "EBADF: bad descriptor";
    case EIO:
        return "EIO: input/output error";
    case ECANCELED:
        return "ECANCELED: operation cancelled";
    default:
        return "unknown error";
    }
}
