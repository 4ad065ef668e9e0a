/* Helpers of the NIC's integration tests (header-only, after harness.h): a loopback SAN address,
 * a connected pair of endpoints between two contexts of this process (the accept runs on a thread,
 * because san_connect waits for it), and one completion waited for. */
#ifndef SAN_TEST_NIC_PAIR_H
#define SAN_TEST_NIC_PAIR_H

#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>

static inline struct sockaddr_in addr4(const char *ip, uint16_t port)
{
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(port)};
    CHECK(inet_pton(AF_INET, ip, &sa.sin_addr) == 1);
    return sa;
}

struct acceptor {
    struct san_listener *l;
    struct san_ep *ep;
    int err;
};

static inline void *accept_main(void *arg)
{
    struct acceptor *a = arg;
    a->err = san_accept(a->l, 10000, &a->ep);
    return NULL;
}

/* A connected pair on 127.0.0.1:port: *a in ca (connector), *b in cb (acceptor). */
static inline void connect_pair(struct san_ctx *ca, struct san_ctx *cb, uint16_t port,
                                struct san_ep **a, struct san_ep **b)
{
    struct sockaddr_in sa = addr4("127.0.0.1", port);
    struct acceptor acc = {0};
    CHECK_EQ(san_listen(cb, (struct sockaddr *)&sa, sizeof(sa), 4, &acc.l), 0);
    pthread_t t;
    CHECK(!pthread_create(&t, NULL, accept_main, &acc));
    CHECK_EQ(san_connect(ca, (struct sockaddr *)&sa, sizeof(sa), 10000, a), 0);
    CHECK(!pthread_join(t, NULL));
    CHECK_EQ(acc.err, 0);
    *b = acc.ep;
    san_listener_close(acc.l);
}

/* The next completion of ep, waited for up to 20 s. */
static inline struct san_wc wait_one(struct san_ep *ep)
{
    struct san_wc wc;
    for (int i = 0; i < 200; i++) {
        if (san_poll(ep, &wc, 1) == 1)
            return wc;
        san_wait(ep, 100);
    }
    test_fail(__FILE__, __LINE__, "no completion");
}

#endif
