/* san_nic_networks as a program, for test_link_netns.sh: prints the networks the daemon at SOCK
 * serves, one a line ("local 10.1.0.0/16", "linked 10.2.0.0/16"), after the lines "changes C"
 * (san_nic_networks_changes, read before the networks: never 0 from sanproxyd) and "gen G". Checks
 * the call's contract on the way: NULL arguments are -EINVAL; asking again with the generation
 * just returned writes nothing (*nr 0, the same generation, nets untouched); with too little room
 * *nr is still the whole count and only max entries are written. Exit 1 with a reason otherwise.
 *
 *   san_networks SOCK */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <san/san.h>

#define MAX 300

static struct san_network nets[MAX], again[MAX];

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: san_networks SOCK\n");
        return 2;
    }
    struct san_ctx *ctx;
    int err = san_open(argv[1], &ctx);
    if (err) {
        fprintf(stderr, "san_open: %s\n", san_strerror(err));
        return 1;
    }
    uint64_t changes = san_nic_networks_changes(ctx);
    if (!changes) {
        fprintf(stderr, "no status page (san_nic_networks_changes 0)\n");
        return 1;
    }
    uint64_t gen = 0;
    size_t nr = 0, n2 = 0;
    if (san_nic_networks(NULL, &gen, nets, MAX, &nr) != -EINVAL ||
        san_nic_networks(ctx, NULL, nets, MAX, &nr) != -EINVAL ||
        san_nic_networks(ctx, &gen, nets, MAX, NULL) != -EINVAL ||
        san_nic_networks(ctx, &gen, NULL, 1, &nr) != -EINVAL) {
        fprintf(stderr, "NULL arguments are not -EINVAL\n");
        return 1;
    }
    for (int tries = 0;; tries++) {
        gen = 0;
        if ((err = san_nic_networks(ctx, &gen, nets, MAX, &nr))) {
            fprintf(stderr, "san_nic_networks: %s\n", san_strerror(err));
            return 1;
        }
        if (!gen || nr > MAX) {
            fprintf(stderr, "gen %llu, %zu networks\n", (unsigned long long)gen, nr);
            return 1;
        }
        /* The same generation again: nothing written. */
        uint64_t g2 = gen;
        memset(again, 0x5a, sizeof(again));
        n2 = 12345;
        if ((err = san_nic_networks(ctx, &g2, again, MAX, &n2))) {
            fprintf(stderr, "san_nic_networks again: %s\n", san_strerror(err));
            return 1;
        }
        if (g2 == gen)
            break;
        if (tries == 5) { /* the set changed under every pair of calls */
            fprintf(stderr, "the generation keeps changing\n");
            return 1;
        }
    }
    if (n2 != 0 || again[0].flags != 0x5a5a5a5au) {
        fprintf(stderr, "unchanged generation: %zu networks written\n", n2);
        return 1;
    }
    /* Too little room: the count is whole, one entry written, equal to the first. */
    if (nr > 1) {
        uint64_t g3 = 0;
        size_t n3 = 0;
        memset(again, 0, sizeof(again));
        if ((err = san_nic_networks(ctx, &g3, again, 1, &n3)) ||
            (g3 == gen &&
             (n3 != nr || memcmp(&again[0], &nets[0], sizeof(nets[0])) || again[1].flags != 0))) {
            fprintf(stderr, "max 1: %d, %zu networks (of %zu)\n", err, n3, nr);
            return 1;
        }
    }
    printf("changes %llu\ngen %llu\n", (unsigned long long)changes, (unsigned long long)gen);
    for (size_t i = 0; i < nr; i++) {
        char ip[INET6_ADDRSTRLEN] = "?";
        const struct san_network *n = &nets[i];
        if (n->addr.ss_family == AF_INET)
            inet_ntop(AF_INET, &((const struct sockaddr_in *)&n->addr)->sin_addr, ip, sizeof(ip));
        else if (n->addr.ss_family == AF_INET6)
            inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)&n->addr)->sin6_addr, ip,
                      sizeof(ip));
        const char *kind = n->flags == SAN_NETWORK_LOCAL    ? "local"
                           : n->flags == SAN_NETWORK_LINKED ? "linked"
                                                            : "?";
        printf("%s %s/%u\n", kind, ip, n->prefix);
    }
    san_close(ctx);
    return 0;
}
