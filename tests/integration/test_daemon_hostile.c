/* A client that tries to stall the daemon or to register memory with more access than it has:
 * a page never touched is refused with -EFAULT and stays untouched (the daemon never faults a
 * client's page in: it asks the pagemap); a page under the client's own userfaultfd (reading it
 * from the daemon would wait for the client's handler, stopping every client) is refused at once
 * with -EFAULT and other clients are served meanwhile; read-only memory cannot be registered for
 * device writes (-EFAULT), only for reads; memory never touched registers through libsan (which
 * faults it in before it asks); the status page every client maps (HELLO's descriptor) cannot be
 * written through any descriptor or mapping a client can make. */
#include "harness.h"

#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <stdatomic.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/time.h>

#ifndef UFFD_USER_MODE_ONLY
#define UFFD_USER_MODE_ONLY 1
#endif

#define KIB 1024u

static void recv_timeout(int fd, int seconds)
{
    struct timeval tv = {seconds, 0};
    CHECK(!setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)));
}

static int register_raw(int fd, const void *va, size_t len, uint32_t *lkey)
{
    struct san_msg req, rep;
    san_proto_init(&req, SAN_OP_REGISTER, 0);
    req.u.register_req =
        (struct san_register_req){.va = (uintptr_t)va, .len = len, .access = SAN_MEM_READ};
    int err = test_call(fd, &req, &rep);
    *lkey = err ? 0 : rep.u.register_rep.lkey;
    return err;
}

/* Without libsan, which faults pages in: an absent page is refused and the daemon did not fault it
 * in (a daemon that read it would make it present, and accept it). Needs no privilege. */
static void untouched_page(const struct test_daemon *d)
{
    char *p = mmap(NULL, 8 * KIB, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    CHECK(p != MAP_FAILED);
    p[0] = 1; /* the first page present, the second never touched */
    int fd = test_connect(d);
    uint32_t lkey;
    CHECK_EQ(register_raw(fd, p, 8 * KIB, &lkey), -EFAULT);
    unsigned char vec[2];
    CHECK(!mincore(p, 8 * KIB, vec));
    CHECK((vec[0] & 1) && !(vec[1] & 1));
    CHECK_EQ(register_raw(fd, p, 4 * KIB, &lkey), 0);
    struct san_msg req, rep;
    san_proto_init(&req, SAN_OP_DEREGISTER, 0);
    req.u.deregister_req.lkey = lkey;
    CHECK_EQ(test_call(fd, &req, &rep), 0);
    close(fd);
    munmap(p, 8 * KIB);
}

/* A userfaultfd that also takes the kernel's faults (a remote read of the page waits for it), or,
 * where this user may not have one (vm.unprivileged_userfaultfd = 0 without CAP_SYS_PTRACE), one
 * for this process's own faults only (UFFD_USER_MODE_ONLY, open to every user). */
static int open_userfaultfd(bool *kernel_faults)
{
    int u = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK);
    *kernel_faults = u >= 0;
    if (u < 0 && errno == EPERM)
        u = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK | UFFD_USER_MODE_ONLY);
    CHECK(u >= 0);
    return u;
}

static void userfaultfd_page(const struct test_daemon *d)
{
    char *p = mmap(NULL, 4 * KIB, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    CHECK(p != MAP_FAILED);
    bool kernel_faults;
    int u = open_userfaultfd(&kernel_faults);
    if (!kernel_faults)
        printf("userfaultfd: only a user-mode one is allowed here, on which a kernel access fails "
               "at once instead of waiting: this case cannot stall even a daemon that reads the "
               "page; untouched_page checks that it never does\n");
    struct uffdio_api api = {.api = UFFD_API};
    CHECK(!ioctl(u, UFFDIO_API, &api));
    struct uffdio_register reg = {.range = {(uintptr_t)p, 4 * KIB},
                                  .mode = UFFDIO_REGISTER_MODE_MISSING};
    CHECK(!ioctl(u, UFFDIO_REGISTER, &reg));

    /* Nobody ever reads u: a fault on p waits until u is closed. */
    int fd = test_connect(d), other = test_connect(d);
    recv_timeout(fd, 10);
    recv_timeout(other, 10);
    struct san_msg req, rep;
    san_proto_init(&req, SAN_OP_REGISTER, 0);
    req.u.register_req =
        (struct san_register_req){.va = (uintptr_t)p, .len = 4 * KIB, .access = SAN_MEM_READWRITE};
    CHECK_EQ(test_call(fd, &req, &rep), -EFAULT);
    san_proto_init(&req, SAN_OP_STATS, 0);
    CHECK_EQ(test_call(other, &req, &rep), 0);
    CHECK_EQ(rep.u.stats_rep.registrations, 0);
    close(fd);
    close(other);
    close(u);
    munmap(p, 4 * KIB);
}

static void access_rules(void)
{
    struct san_ctx *ctx;
    struct san_mr *mr;
    CHECK_EQ(san_open(NULL, &ctx), 0);

    char *ro = mmap(NULL, 16 * KIB, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    CHECK(ro != MAP_FAILED);
    CHECK_EQ(san_register(ctx, ro, 16 * KIB, SAN_MEM_WRITE, &mr), -EFAULT);
    CHECK_EQ(san_register(ctx, ro, 16 * KIB, SAN_MEM_READWRITE, &mr), -EFAULT);
    CHECK_EQ(san_register(ctx, ro + 4 * KIB, 100, SAN_MEM_READ, &mr), 0);
    CHECK_EQ(san_deregister(mr), 0);

    /* Never touched: not present until libsan faults it in. */
    char *fresh = mmap(NULL, 64 * KIB, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    CHECK(fresh != MAP_FAILED);
    CHECK_EQ(san_register(ctx, fresh, 64 * KIB, SAN_MEM_READWRITE, &mr), 0);
    san_paddr_t pa;
    CHECK_EQ(san_physical_address(ctx, fresh + 60 * KIB, &pa), 0);
    CHECK_EQ(san_deregister(mr), 0);
    CHECK_EQ(san_register(ctx, fresh + 8 * KIB, 8 * KIB, SAN_MEM_READ, &mr), 0);
    CHECK_EQ(san_deregister(mr), 0);

    char *none = mmap(NULL, 8 * KIB, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    CHECK(none != MAP_FAILED);
    CHECK_EQ(san_register(ctx, none, 8 * KIB, SAN_MEM_READ, &mr), -EFAULT);
    san_close(ctx);
    munmap(ro, 16 * KIB);
    munmap(fresh, 64 * KIB);
    munmap(none, 8 * KIB);
}

/* HELLO's status page: read-only however a client tries (a writable shared mapping, write(2),
 * ftruncate, mprotect, a read-write open through /proc), its count what libsan reports. */
static void status_page(const struct test_daemon *d)
{
    int fd = test_connect(d);
    struct san_msg req, rep;
    int page_fd;
    san_proto_init(&req, SAN_OP_HELLO, 0);
    req.u.hello_req.version = SAN_PROTO_VERSION;
    CHECK_EQ(test_call_fd(fd, &req, &rep, &page_fd), 0);
    CHECK_EQ(rep.u.hello_rep.flags, SAN_HELLO_STATUS);
    CHECK(page_fd >= 0);
    CHECK_EQ(fcntl(page_fd, F_GETFL) & O_ACCMODE, O_RDONLY);
    CHECK(mmap(NULL, SAN_STATUS_BYTES, PROT_READ | PROT_WRITE, MAP_SHARED, page_fd, 0) ==
          MAP_FAILED);
    CHECK(write(page_fd, "x", 1) < 0);
    CHECK(ftruncate(page_fd, 0) < 0);
    const struct san_status_page *page =
        mmap(NULL, SAN_STATUS_BYTES, PROT_READ, MAP_SHARED, page_fd, 0);
    CHECK(page != MAP_FAILED);
    CHECK_EQ(page->magic, SAN_STATUS_MAGIC);
    uint64_t changes = atomic_load(&page->networks_changes);
    CHECK(changes >= 1);
    CHECK(mprotect((void *)page, SAN_STATUS_BYTES, PROT_READ | PROT_WRITE) < 0);
    char path[64];
    snprintf(path, sizeof(path), "/proc/self/fd/%d", page_fd);
    int rw = open(path, O_RDWR); /* may open (as root): the seals still refuse every write */
    if (rw >= 0) {
        CHECK(write(rw, "x", 1) < 0 && errno == EPERM);
        CHECK(mmap(NULL, SAN_STATUS_BYTES, PROT_READ | PROT_WRITE, MAP_SHARED, rw, 0) ==
              MAP_FAILED);
        CHECK(ftruncate(rw, 0) < 0);
        close(rw);
    }
    /* A private writable copy writes only itself. */
    char *priv = mmap(NULL, SAN_STATUS_BYTES, PROT_READ | PROT_WRITE, MAP_PRIVATE, page_fd, 0);
    CHECK(priv != MAP_FAILED);
    memset(priv, 0xff, SAN_STATUS_BYTES);
    CHECK_EQ(page->magic, SAN_STATUS_MAGIC);
    CHECK_EQ(atomic_load(&page->networks_changes), changes);
    munmap(priv, SAN_STATUS_BYTES);

    struct san_ctx *ctx;
    CHECK_EQ(san_open(NULL, &ctx), 0);
    CHECK_EQ(san_nic_networks_changes(ctx), changes); /* no link: nothing ever changes it */
    CHECK_EQ(san_nic_networks_changes(NULL), 0);
    san_close(ctx);
    munmap((void *)page, SAN_STATUS_BYTES);
    close(page_fd);
    close(fd);
}

int main(void)
{
    struct test_daemon d;
    struct san_stats_rep idle;

    test_init();
    test_daemon_start(&d, NULL);
    test_stats(&d, &idle);
    untouched_page(&d);
    userfaultfd_page(&d);
    access_rules();
    status_page(&d);
    test_wait_idle(&d, &idle);
    CHECK_EQ(test_daemon_stop(&d), 0);
    printf("ok\n");
    return 0;
}
