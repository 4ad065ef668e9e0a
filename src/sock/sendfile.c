/* sendfile and sendfile64 to a SAN socket (docs/sock.md): the file's bytes are read into a buffer
 * and sent on the connection, chunk by chunk. The offset behaves as the kernel's: with a pointer,
 * the file is read at *offset, its position stays, and *offset advances by the bytes sent; without
 * one, the file is read at its position, which then advances by the bytes sent, no further (bytes
 * read but not sent, by a non-blocking socket that filled up, are not lost). Either way the file is
 * read with pread, so it must be seekable: a pipe as in_fd is EINVAL (ESPIPE with an offset). A SAN
 * socket as in_fd is EINVAL, as the kernel says for sockets. A non-blocking socket sends what fits
 * now, or fails with EAGAIN if nothing does. */
#include <fcntl.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/sendfile.h>
#include <unistd.h>

#include "sock/export.h"
#include "sock/real.h"

#define CHUNK     (64u << 10)
#define MAX_COUNT 0x7ffff000u /* the most bytes one call moves, as Linux's read and write */

static ssize_t conn_sendfile(struct sansock_conn *c, int out, int in, off_t *offset, size_t count)
{
    off_t pos;
    if (offset) {
        if (*offset < 0)
            return -EINVAL;
        pos = *offset;
    } else {
        pos = lseek(in, 0, SEEK_CUR);
        if (pos < 0)
            return errno == ESPIPE ? -EINVAL : -errno;
    }
    int fl = REAL(fcntl)(in, F_GETFL);
    if (fl < 0)
        return -EBADF;
    if ((fl & O_ACCMODE) == O_WRONLY)
        return -EBADF;
    if (count > MAX_COUNT)
        count = MAX_COUNT;
    if (!count)
        return 0;
    uint8_t *buf = malloc(count < CHUNK ? count : CHUNK);
    if (!buf)
        return -ENOMEM;
    size_t sent = 0;
    ssize_t err = 0;
    while (sent < count) {
        size_t want = count - sent < CHUNK ? count - sent : CHUNK;
        ssize_t n = pread(in, buf, want, pos + (off_t)sent);
        if (n < 0 && errno == EINTR && !sent)
            continue;
        if (n <= 0) {
            err = n < 0 ? -errno : 0;
            break;
        }
        /* Blocking: waits until the chunk is sent (or a signal, or an error, after which what
         * was sent is the answer). Non-blocking: what fits now. */
        ssize_t w = sansock_conn_send(c, out, buf, (size_t)n, 0);
        if (w < 0) {
            err = w;
            break;
        }
        sent += (size_t)w;
        if (w < n)
            break;
    }
    free(buf);
    if (!sent)
        return err;
    if (offset)
        *offset = pos + (off_t)sent;
    else
        lseek(in, pos + (off_t)sent, SEEK_SET);
    return (ssize_t)sent;
}

EXPORT ssize_t sendfile(int out, int in, off_t *offset, size_t count)
{
    struct sansock_obj *o = sansock_fd_get(in);
    if (o) { /* a SAN socket as the source */
        sansock_obj_put(o);
        errno = EINVAL;
        return -1;
    }
    ON_CONN(out, sansock_send_result(conn_sendfile(c, out, in, offset, count), 0),
            REAL(sendfile)(out, in, offset, count));
}

EXPORT ssize_t sendfile64(int out, int in, off_t *offset, size_t count)
{
    struct sansock_obj *o = sansock_fd_get(in);
    if (o) {
        sansock_obj_put(o);
        errno = EINVAL;
        return -1;
    }
    ON_CONN(out, sansock_send_result(conn_sendfile(c, out, in, offset, count), 0),
            REAL(sendfile64)(out, in, offset, count));
}
