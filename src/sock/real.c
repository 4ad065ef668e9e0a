/* The real libc functions (real.h) and the environment's settings. Resolving uses dlsym with
 * RTLD_NEXT: the next definition after libsansock.so in the lookup order, i.e. libc's. */
#include "sock/real.h"

#include <dlfcn.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>

struct sansock_real sansock_real_fns;
/* The threshold's default comes from sanperf sock's crossover (docs/sock.md). */
struct sansock_config sansock_cfg = {.rdma_threshold = 32u << 10,
                                     .rdma = true,
                                     .rdma_write = 0,
                                     .connect_timeout_ms = 5000,
                                     .linger_ms = 10000,
                                     .max_orphans = 64};

#define RESOLVE(name)                                                                              \
    __atomic_store_n((void **)&sansock_real_fns.name, dlsym(RTLD_NEXT, #name), __ATOMIC_RELAXED)

void sansock_real_resolve(void)
{
    RESOLVE(connect);
    RESOLVE(listen);
    RESOLVE(accept);
    RESOLVE(accept4);
    RESOLVE(read);
    RESOLVE(write);
    RESOLVE(readv);
    RESOLVE(writev);
    RESOLVE(send);
    RESOLVE(recv);
    RESOLVE(sendto);
    RESOLVE(recvfrom);
    RESOLVE(sendmsg);
    RESOLVE(recvmsg);
    RESOLVE(sendmmsg);
    RESOLVE(recvmmsg);
    RESOLVE(sendfile);
    RESOLVE(sendfile64);
    RESOLVE(close);
    RESOLVE(shutdown);
    RESOLVE(getsockname);
    RESOLVE(getpeername);
    RESOLVE(getsockopt);
    RESOLVE(setsockopt);
    RESOLVE(ioctl);
    RESOLVE(poll);
    RESOLVE(select);
    RESOLVE(dup);
    RESOLVE(dup2);
    RESOLVE(dup3);
    RESOLVE(fcntl);
    RESOLVE(fcntl64);
    RESOLVE(close_range);
    RESOLVE(closefrom);
    RESOLVE(ppoll);
    RESOLVE(pselect);
    RESOLVE(epoll_create);
    RESOLVE(epoll_create1);
    RESOLVE(epoll_ctl);
    RESOLVE(epoll_wait);
    RESOLVE(epoll_pwait);
    RESOLVE(epoll_pwait2); /* glibc 2.35 and later; epoll.c makes the system call without it */
    if (!sansock_real_fns.fcntl64)
        sansock_real_fns.fcntl64 = sansock_real_fns.fcntl;
}

static unsigned long env_num(const char *name, unsigned long dflt, unsigned long lo,
                             unsigned long hi)
{
    const char *s = getenv(name);
    char *end;
    if (!s || !*s)
        return dflt;
    unsigned long v = strtoul(s, &end, 10);
    if (*end || v < lo || v > hi)
        return dflt;
    return v;
}

void sansock_config_load(void)
{
    const char *d = getenv("SANSOCK_DISABLE");
    sansock_cfg.disabled = d && *d && strcmp(d, "0") != 0;
    sansock_cfg.rdma_threshold =
        (unsigned)env_num("SANSOCK_RDMA_THRESHOLD", 32u << 10, 64, 64u << 20);
    sansock_cfg.rdma = env_num("SANSOCK_RDMA", 1, 0, 1) != 0;
    /* Write mode is off by default: slower than read mode here (docs/sock.md, performance). */
    sansock_cfg.rdma_write = (unsigned)env_num("SANSOCK_RDMA_WRITE", 0, 0, 2);
    sansock_cfg.map = env_num("SANSOCK_MAP", 1, 0, 1) != 0;
    sansock_cfg.coalesce = env_num("SANSOCK_COALESCE", 0, 0, 1) != 0;
    sansock_cfg.connect_timeout_ms =
        (int)env_num("SANSOCK_CONNECT_TIMEOUT_MS", 5000, 1, 3600 * 1000);
    sansock_cfg.linger_ms = (unsigned)env_num("SANSOCK_LINGER_MS", 10000, 0, 3600 * 1000);
    /* A quarter of the daemon's default [limits] endpoints (256 per client): connections the
     * program closed never take more than that of what it may have open. */
    sansock_cfg.max_orphans = (unsigned)env_num("SANSOCK_MAX_ORPHANS", 64, 0, 1u << 20);
    sansock_cfg.log = env_num("SANSOCK_LOG", 0, 0, 1) != 0;
}

bool sansock_nonblocking(int fd, int flags)
{
    if (flags & MSG_DONTWAIT)
        return true;
    int fl = REAL(fcntl)(fd, F_GETFL);
    return fl >= 0 && (fl & O_NONBLOCK);
}
