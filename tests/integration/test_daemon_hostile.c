/* A client that tries to stall the daemon or to register memory with more access than it has:
 * a page under the client's own userfaultfd (reading it from the daemon would wait for the
 * client's handler, stopping every client) is refused at once with -EFAULT and other clients are
 * served meanwhile; read-only memory cannot be registered for device writes (-EFAULT), only for
 * reads; memory never touched registers (libsan faults it in before it asks). */
#include "harness.h"

#include <linux/userfaultfd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/time.h>

#define KIB 1024u

static void recv_timeout(int fd, int seconds)
{
    struct timeval tv = {seconds, 0};
    CHECK(!setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)));
}

static void userfaultfd_page(const struct test_daemon *d)
{
    char *p = mmap(NULL, 4 * KIB, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    CHECK(p != MAP_FAILED);
    int u = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK);
    if (u < 0) {
        printf("userfaultfd unavailable (%s): stall case skipped\n", strerror(errno));
        munmap(p, 4 * KIB);
        return;
    }
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

int main(void)
{
    struct test_daemon d;
    struct san_stats_rep idle;

    test_init();
    test_daemon_start(&d, NULL);
    test_stats(&d, &idle);
    userfaultfd_page(&d);
    access_rules();
    test_wait_idle(&d, &idle);
    CHECK_EQ(test_daemon_stop(&d), 0);
    printf("ok\n");
    return 0;
}
