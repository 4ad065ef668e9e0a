/* Memory descriptor lists: MmProbeAndLockPages / MmUnlockPages on the emulated machine.
 *
 * Locking a buffer checks that the owner's range is mapped with the access asked for, gives its
 * pages frames of the machine (SAN_FRAMES_LOCKED records from san_phys_alloc_piece_locked, highest
 * memory first, NOLOWMEM honoured by phys) and, for this process, pins the pages. The frames say
 * whose page they are (owner, owner_va), so a device access reaches the owner's bytes: memcpy for
 * this process, process_vm_readv/writev for a client (see dma/bus.c).
 *
 * Pinning in this process (common/pin): the range is first faulted in with the access asked
 * (unmapped or lacking the access: -EFAULT, before anything is pinned), then locked without a
 * second walk. mlock is not reference counted by the kernel, so every pinned range sits in a
 * process-wide tree of possibly overlapping ranges (common/range): unlocking munlocks only the
 * parts no other MDL still covers, and of those only what is still mapped.
 *
 * An allocated MDL (san_mdl_build, MmBuildMdlForNonPagedPool) describes frames the machine already
 * gave out, mapped in the owner's space (a daemon client's proxy memory): one piece, nothing
 * locked, and devices reach its bytes in the RAM image, as the machine's own memory.
 *
 * Locking: pin_lock (process-wide) serialises mlock/munlock with the pin tree, so a page is never
 * munlocked while an MDL covering it is being created. m->lock is taken for writing around frame
 * allocation and release, never while pin_lock is held. An MDL is immutable once returned. */
#include "mdl/mdl.h"
#include "mdl/vma.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>
#include <unistd.h>

#include "common/page.h"
#include "common/pin.h"
#include "common/search.h"

static struct san_mutex pin_lock = SAN_MUTEX_INITIALIZER;
static struct san_tree pin_tree = {.augment = san_range_augment};
/* MDLs unlocked while a device could still use them: kept reachable, never freed. */
static pthread_mutex_t leak_lock = PTHREAD_MUTEX_INITIALIZER;
static struct san_mdl *leaked;

/* Munlocks the parts of [start, end) no MDL in the pin tree covers. pin_lock held. */
static void unpin_uncovered_locked(uint64_t start, uint64_t end)
{
    san_assert_mutex_held(&pin_lock);
    struct san_range_gaps g;
    for (san_range_gaps_init(&g, &pin_tree, start, end); san_range_gaps_next(&g);)
        san_pin_unlock(g.start, g.len);
}

static void free_frames(struct san_mdl *mdl)
{
    struct san_machine *m = mdl->m;
    if (!mdl->allocated) {
        san_machine_write_lock(m);
        for (size_t i = 0; i < mdl->nr_pieces; i++)
            san_phys_free_locked(m, mdl->pieces[i].f);
        san_machine_write_unlock(m);
    }
    mdl->nr_pieces = 0;
}

static void free_mdl(struct san_mdl *mdl)
{
    if (mdl->pieces != mdl->inline_pieces)
        free(mdl->pieces);
    free(mdl);
}

/* Gives every page of mdl a frame, in pieces, highest memory first. -ENOMEM with nothing held. */
static int assign_frames(struct san_mdl *mdl)
{
    struct san_machine *m = mdl->m;
    size_t page = 0;
    int err = 0;

    san_machine_write_lock(m);
    while (page < mdl->nr_pages) {
        if (mdl->nr_pieces == mdl->cap_pieces) {
            size_t cap = mdl->cap_pieces * 2;
            struct san_mdl_piece *p = mdl->pieces == mdl->inline_pieces
                                          ? malloc(cap * sizeof(*p))
                                          : realloc(mdl->pieces, cap * sizeof(*p));
            if (!p) {
                err = -ENOMEM;
                break;
            }
            if (mdl->pieces == mdl->inline_pieces)
                memcpy(p, mdl->inline_pieces, sizeof(mdl->inline_pieces));
            mdl->pieces = p;
            mdl->cap_pieces = cap;
        }
        uint64_t want = (uint64_t)(mdl->nr_pages - page) * PAGE;
        struct san_frames *f =
            san_phys_alloc_piece_locked(m, want, 0, UINT64_MAX, SAN_FRAMES_LOCKED);
        if (!f) {
            err = -ENOMEM;
            break;
        }
        f->access = (uint8_t)mdl->access;
        f->tag = mdl;
        f->owner = &mdl->owner;
        f->owner_va = mdl->page_va + (uint64_t)page * PAGE;
        size_t n = (size_t)(f->r.len / PAGE);
        mdl->pieces[mdl->nr_pieces++] = (struct san_mdl_piece){page, n, f->r.start, f};
        page += n;
    }
    if (err) {
        for (size_t i = 0; i < mdl->nr_pieces; i++)
            san_phys_free_locked(m, mdl->pieces[i].f);
        mdl->nr_pieces = 0;
    }
    san_machine_write_unlock(m);
    return err;
}

enum { CHECK_BATCH = 512 };

/* Reads one byte of each of the n pages listed through process_vm_readv: 0, or -EFAULT when one
 * is not mapped readable. A remote page walk per page: the slow, always available check. */
static int read_client_pages(pid_t pid, const uint64_t *page, size_t n)
{
    struct iovec remote[CHECK_BATCH];
    unsigned char sink[CHECK_BATCH];

    for (size_t i = 0; i < n; i++)
        remote[i] = (struct iovec){(void *)(uintptr_t)page[i], 1};
    for (;;) {
        struct iovec local = {sink, n};
        ssize_t got = process_vm_readv(pid, &local, 1, remote, n, 0);
        if (got < 0 && errno == EINTR)
            continue;
        if (got < 0)
            return errno == EFAULT ? -EFAULT : -errno;
        return (size_t)got == n ? 0 : -EFAULT;
    }
}

/* Checks that a client's range is mapped with the access asked for. The client pinned and
 * populated the pages itself (libsan does both before it asks), so they are present: the client's
 * pagemap (one read for up to CHECK_BATCH pages) shows them so. A page the pagemap shows neither
 * present nor swapped is refused (-EFAULT) without being touched: faulting it in from here could
 * block this thread for as long as the client likes (a page under the client's own userfaultfd
 * waits for its handler), and every other client with it. A pagemap that reads nothing belongs to
 * an address space that is gone (the client exec'd or exited): -ESRCH, never a fallback to the
 * pid, which now names another image or another process. The protection comes from the client's
 * maps (vma.c): a page mapped read-only is not registered for device writes. Only an owner without
 * a pagemap (tests, never the daemon) has its pages read through process_vm_readv, which checks
 * that they are readable. */
static int check_client_range(const struct san_page_owner *o, uint64_t start, size_t pages,
                              unsigned access)
{
    uint64_t entry[CHECK_BATCH], absent[CHECK_BATCH];

    if (o->maps_fd >= 0) {
        int err = san_vma_check(o->maps_fd, start, (uint64_t)pages * PAGE, access);
        if (err)
            return err;
    }
    for (size_t done = 0; done < pages;) {
        size_t n = pages - done < CHECK_BATCH ? pages - done : CHECK_BATCH, nr_absent = 0;
        uint64_t first = start + done * PAGE;
        ssize_t got = -1;
        if (o->pagemap_fd >= 0) {
            got = pread(o->pagemap_fd, entry, n * sizeof(entry[0]),
                        (off_t)(first / PAGE * sizeof(entry[0])));
            if (got == 0 && !san_owner_alive(o))
                return -ESRCH;
            if (got < 0)
                return errno == ESRCH ? -ESRCH : -EFAULT;
        }
        size_t known = got > 0 ? (size_t)got / sizeof(entry[0]) : 0;
        for (size_t i = 0; i < n; i++) {
            if (i >= known && o->pagemap_fd >= 0)
                return -EFAULT; /* beyond the end of the address space */
            if (i >= known)
                absent[nr_absent++] = first + i * PAGE;
            else if (!(entry[i] >> 62)) /* bit 63: present, bit 62: swapped */
                return -EFAULT;
        }
        int err = nr_absent ? read_client_pages(o->pid, absent, nr_absent) : 0;
        if (err)
            return err;
        done += n;
    }
    return 0;
}

bool san_owner_alive(const struct san_page_owner *o)
{
    uint64_t entry;
    if (o->pid == 0)
        return true;
    if (o->pagemap_fd < 0)
        return false;
    for (;;) {
        ssize_t got = pread(o->pagemap_fd, &entry, sizeof(entry), 0);
        if (got < 0 && errno == EINTR)
            continue;
        return got == (ssize_t)sizeof(entry);
    }
}

/* A new MDL of [va, va+len) with no pieces yet; the range is checked by the caller. */
static struct san_mdl *new_mdl(struct san_machine *m, const struct san_page_owner *owner,
                               uint64_t va, size_t len, unsigned access)
{
    struct san_mdl *mdl = calloc(1, sizeof(*mdl));
    if (!mdl)
        return NULL;
    uint64_t start = va & ~(PAGE - 1), end = (va + len + PAGE - 1) & ~(PAGE - 1);
    mdl->m = m;
    mdl->owner = *owner;
    mdl->va = va;
    mdl->len = len;
    mdl->access = access;
    mdl->page_va = start;
    mdl->nr_pages = (size_t)((end - start) / PAGE);
    mdl->cap_pieces = SAN_MDL_INLINE_PIECES;
    mdl->pieces = mdl->inline_pieces;
    mdl->pin.start = start;
    mdl->pin.len = end - start;
    return mdl;
}

int san_mdl_lock_for(struct san_machine *m, const struct san_page_owner *owner, uint64_t va,
                     size_t len, unsigned access, struct san_mdl **out)
{
    struct san_mdl *mdl;
    int err;

    if (!out)
        return -EINVAL;
    *out = NULL;
    if (!m || !owner || !len || access < SAN_MEM_READ || access > SAN_MEM_READWRITE)
        return -EINVAL;
    if (va > UINT64_MAX - len || va + len > UINT64_MAX - PAGE)
        return -EFAULT; /* wraps: cannot be mapped */
    uint64_t start = va & ~(PAGE - 1), end = (va + len + PAGE - 1) & ~(PAGE - 1);
    if (owner->pid == 0 && end > (uint64_t)UINTPTR_MAX)
        return -EFAULT;

    if (!(mdl = new_mdl(m, owner, va, len, access)))
        return -ENOMEM;

    if (owner->pid == 0)
        err = san_pin_populate(start, end - start, access & SAN_MEM_WRITE);
    else
        err = check_client_range(owner, start, mdl->nr_pages, access);
    if (err)
        goto fail_check;
    if ((err = assign_frames(mdl)))
        goto fail_check;
    if (owner->pid == 0) {
        san_mutex_lock(&pin_lock);
        err = san_pin_lock(start, end - start);
        if (err)
            unpin_uncovered_locked(start, end); /* mlock may have locked a prefix */
        else
            san_range_insert(&pin_tree, &mdl->pin);
        san_mutex_unlock(&pin_lock);
        if (err)
            goto fail_pin;
    }
    *out = mdl;
    return 0;

fail_pin:
    free_frames(mdl);
fail_check:
    free_mdl(mdl);
    return err;
}

/* The RAM image's bytes at off in an allocated MDL's range: one piece, contiguous. */
static uint8_t *allocated_host(const struct san_mdl *mdl, uint64_t off)
{
    return san_phys_to_host(mdl->m, mdl->pieces[0].pa + off);
}

int san_mdl_build(struct san_machine *m, const struct san_page_owner *owner, uint64_t va,
                  size_t len, unsigned access, san_paddr_t pa, struct san_mdl **out)
{
    if (!out)
        return -EINVAL;
    *out = NULL;
    if (!m || !owner || !len || access < SAN_MEM_READ || access > SAN_MEM_READWRITE || pa % PAGE ||
        va > UINT64_MAX - len || va + len > UINT64_MAX - PAGE)
        return -EINVAL;
    struct san_mdl *mdl = new_mdl(m, owner, va, len, access);
    if (!mdl)
        return -ENOMEM;
    mdl->allocated = true;
    mdl->pieces[0] = (struct san_mdl_piece){0, mdl->nr_pages, pa, NULL};
    mdl->nr_pieces = 1;
    /* Nothing is populated here: the daemon builds this on its loop, and zeroing a fresh
     * allocation's pages there would stall every other client for as long as the range is large.
     * The first device accesses fault the pages in, on the NIC engine of that connection. */
    *out = mdl;
    return 0;
}

int san_mdl_read(const struct san_mdl *mdl, uint64_t off, void *buf, size_t len)
{
    if (mdl->allocated) {
        memcpy(buf, allocated_host(mdl, off), len);
        return 0;
    }
    return san_owner_read(&mdl->owner, mdl->page_va + off, buf, len);
}

int san_mdl_write(const struct san_mdl *mdl, uint64_t off, const void *buf, size_t len)
{
    if (mdl->allocated) {
        memcpy(allocated_host(mdl, off), buf, len);
        return 0;
    }
    return san_owner_write(&mdl->owner, mdl->page_va + off, buf, len);
}

int san_mdl_lock(struct san_machine *m, void *va, size_t len, unsigned access, struct san_mdl **out)
{
    static const struct san_page_owner self = {
        .pid = 0, .pidfd = -1, .pagemap_fd = -1, .maps_fd = -1, .mem_fd = -1};
    if (!va && out) {
        *out = NULL;
        return len ? -EFAULT : -EINVAL; /* page 0 is never mapped */
    }
    return san_mdl_lock_for(m, &self, (uint64_t)(uintptr_t)va, len, access, out);
}

void san_mdl_unlock(struct san_mdl *mdl)
{
    if (!mdl)
        return;
    unsigned maps = atomic_load(&mdl->maps);
    if (maps) {
        /* A device may still write these pages: keep them pinned and their frames allocated. */
        fprintf(stderr,
                "sanproxy: san_mdl_unlock: %u scatter-gather list(s) still map the MDL of "
                "[%#llx, +%zu); leaking it\n",
                maps, (unsigned long long)mdl->va, mdl->len);
        pthread_mutex_lock(&leak_lock);
        mdl->leak_next = leaked;
        leaked = mdl;
        pthread_mutex_unlock(&leak_lock);
        return;
    }
    if (mdl->owner.pid == 0 && !mdl->allocated) {
        uint64_t start = mdl->pin.start, end = san_range_end(&mdl->pin);
        san_mutex_lock(&pin_lock);
        san_range_erase(&pin_tree, &mdl->pin);
        unpin_uncovered_locked(start, end);
        san_mutex_unlock(&pin_lock);
    }
    free_frames(mdl);
    free_mdl(mdl);
}

size_t san_mdl_page_count(const struct san_mdl *mdl)
{
    return mdl ? mdl->nr_pages : 0;
}

static uint64_t piece_first_page(const void *pieces, size_t i)
{
    return ((const struct san_mdl_piece *)pieces)[i].first_page;
}

size_t san_mdl_piece_of(const struct san_mdl *mdl, size_t page)
{
    return san_search_last(mdl->pieces, mdl->nr_pieces, piece_first_page, page);
}

san_paddr_t san_mdl_page(const struct san_mdl *mdl, size_t i)
{
    if (!mdl || i >= mdl->nr_pages)
        return 0;
    const struct san_mdl_piece *p = &mdl->pieces[san_mdl_piece_of(mdl, i)];
    return p->pa + (uint64_t)(i - p->first_page) * PAGE;
}

uint64_t san_mdl_va(const struct san_mdl *mdl)
{
    return mdl ? mdl->va : 0;
}

size_t san_mdl_len(const struct san_mdl *mdl)
{
    return mdl ? mdl->len : 0;
}

unsigned san_mdl_access(const struct san_mdl *mdl)
{
    return mdl ? mdl->access : 0;
}
