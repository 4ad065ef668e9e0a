/* The process's libsan context and SAN destinations (san.h; which networks: route.c). In a forked
 * child the inherited context is closed with san_close (which, in a child, frees only the child's
 * copy: libsan's rule) before a new one is opened; the parent's connections are never touched from
 * the child. */
#include "sock/san.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <string.h>

#include "sock/fdtab.h"
#include "sock/finish.h"
#include "sock/route.h"
#include "sock/sock.h"
#include "sock/wait.h"

_Atomic unsigned sansock_fork_gen;
static pthread_mutex_t ctx_lock = PTHREAD_MUTEX_INITIALIZER;
static struct san_ctx *ctx;
static unsigned ctx_gen;

int sansock_ctx(struct san_ctx **out)
{
    pthread_mutex_lock(&ctx_lock);
    unsigned gen = sansock_fork_gen;
    if (ctx && ctx_gen != gen) {
        san_close(ctx);
        ctx = NULL;
    }
    int err = 0;
    if (!ctx) {
        err = san_open(NULL, &ctx);
        if (err)
            ctx = NULL;
        ctx_gen = gen;
    }
    *out = ctx;
    pthread_mutex_unlock(&ctx_lock);
    return err;
}

bool sansock_on_san(const struct sockaddr *addr, socklen_t len, struct sockaddr_storage *out,
                    socklen_t *out_len)
{
    if (!addr || len < (socklen_t)sizeof(sa_family_t))
        return false;
    memset(out, 0, sizeof(*out));
    if (addr->sa_family == AF_INET && len >= (socklen_t)sizeof(struct sockaddr_in)) {
        memcpy(out, addr, sizeof(struct sockaddr_in));
        *out_len = sizeof(struct sockaddr_in);
    } else if (addr->sa_family == AF_INET6 && len >= (socklen_t)sizeof(struct sockaddr_in6)) {
        struct sockaddr_in6 in6;
        memcpy(&in6, addr, sizeof(in6));
        if (IN6_IS_ADDR_V4MAPPED(&in6.sin6_addr)) {
            struct sockaddr_in in = {.sin_family = AF_INET, .sin_port = in6.sin6_port};
            memcpy(&in.sin_addr, &in6.sin6_addr.s6_addr[12], 4);
            memcpy(out, &in, sizeof(in));
            *out_len = sizeof(in);
        } else {
            in6.sin6_flowinfo = 0;
            in6.sin6_scope_id = 0;
            memcpy(out, &in6, sizeof(in6));
            *out_len = sizeof(in6);
        }
    } else {
        return false;
    }
    return sansock_route_served((struct sockaddr *)out, *out_len);
}

static void atfork_child(void)
{
    sansock_fork_gen++;
    pthread_mutex_init(&ctx_lock, NULL);
    sansock_fdtab_atfork_child();
    sansock_route_atfork_child();
    sansock_wait_atfork_child();
    sansock_finish_atfork_child();
    sansock_listen_atfork_child();
}

void sansock_san_init(void)
{
    pthread_atfork(NULL, NULL, atfork_child);
}
