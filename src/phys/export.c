/* Exporting contiguous allocations to other processes (sanproxyd's proxy memory).
 *
 * The RAM image is private anonymous memory and is never shared. To hand one allocation to a
 * client, its range of the image is re-backed by a fresh memfd mapped MAP_FIXED | MAP_SHARED over
 * it: the daemon (and every DMA) keeps using the same host addresses, and the client maps the same
 * memfd, so both see the same bytes and nothing else of the image. A fresh memfd is zero-filled, so
 * an exported allocation never shows what an earlier user left in those frames. Unexporting maps
 * anonymous MAP_NORESERVE memory back before the frames are freed: the client's mapping (if it
 * kept one) then refers to memory no frame backs any more, so a late write cannot reach the next
 * user of the frames.
 *
 * Sits on the machine's image and frame records (machine.h). Locking: takes m->lock for writing
 * around the remapping, so no DMA copy (which holds it for reading) sees the range half remapped.
 */
#include "phys/machine.h"
#include "phys/export.h"

#include <errno.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include "common/page.h"

/* The CONTIG record that is exactly [va, va+len) of the image, or NULL. */
static struct san_frames *record_of(struct san_machine *m, void *va, size_t len)
{
    san_paddr_t pa;
    if (san_phys_from_host(m, va, &pa))
        return NULL;
    struct san_frames *f = san_phys_frames_at(m, pa);
    if (!f || f->kind != SAN_FRAMES_CONTIG || f->r.start != pa || f->r.len != len)
        return NULL;
    return f;
}

int san_phys_export(struct san_machine *m, void *va, size_t len, int fresh, int *fd_out)
{
    int fd = fresh, err = 0;

    if (!m || !va || !len || len % PAGE || !fd_out) {
        if (fresh >= 0)
            close(fresh);
        return -EINVAL;
    }
    if (fd < 0 && (fd = memfd_create("sanproxy-alloc", MFD_CLOEXEC | MFD_ALLOW_SEALING)) < 0)
        return -errno;
    /* Sealed at its size: a client that shrank it would make every access to the range, the
     * daemon's and the devices', die of SIGBUS. */
    if (ftruncate(fd, (off_t)len) ||
        fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL)) {
        err = -errno;
        goto fail_fd;
    }
    san_machine_write_lock(m);
    if (!record_of(m, va, len)) {
        err = -EINVAL;
        goto fail_unlock;
    }
    if (mmap(va, len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED, fd, 0) == MAP_FAILED) {
        /* The old mapping is intact when mmap fails before replacing it; the range is still the
         * image's. */
        err = -errno;
        goto fail_unlock;
    }
    san_machine_write_unlock(m);
    *fd_out = fd;
    return 0;

fail_unlock:
    san_machine_write_unlock(m);
fail_fd:
    close(fd);
    return err;
}

int san_phys_unexport(struct san_machine *m, void *va, size_t len)
{
    int err = 0;

    if (!m || !va || !len || len % PAGE)
        return -EINVAL;
    san_machine_write_lock(m);
    if (!record_of(m, va, len)) {
        err = -EINVAL;
    } else if (mmap(va, len, PROT_READ | PROT_WRITE,
                    MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_FIXED, -1, 0) == MAP_FAILED) {
        err = -errno;
    }
    san_machine_write_unlock(m);
    return err;
}
