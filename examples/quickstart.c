/* quickstart: the program README.md shows under "Using it": a client of sanproxyd that gets proxy
 * memory below 4 GiB, registers a buffer of its own, and releases both; every call is checked.
 * Build: cc quickstart.c $(pkg-config --cflags --libs libsan) */
#include <inttypes.h>
#include <stdio.h>

#include <san/san.h>

int main(void)
{
    static char buf[1 << 16]; /* memory of our own, to register */
    struct san_ctx *ctx;
    struct san_mr *mr;
    san_paddr_t pa;
    void *low;
    const char *what = "san_open";

    /* NULL: $SANPROXY_SOCKET, else $XDG_RUNTIME_DIR/sanproxy.sock, else /tmp/sanproxy.sock */
    int err = san_open(NULL, &ctx);
    if (err) {
        fprintf(stderr, "quickstart: %s: %s\n", what, san_strerror(err));
        return 1;
    }
    /* 64 KiB of proxy memory below 4 GiB (for a 32-bit NIC), mapped into this process */
    what = "san_alloc";
    if ((err = san_alloc(ctx, 65536, SAN_ALLOC_LOW, &low)))
        goto out;
    what = "san_physical_address";
    if ((err = san_physical_address(ctx, low, &pa)))
        goto out;
    printf("proxy memory: 64 KiB at %p, physical address %#" PRIx64 "\n", low, pa);

    /* Our buffer, pinned and registered; the registration is cached, so a second
     * san_register of it costs no round trip to the daemon. */
    what = "san_register";
    if ((err = san_register(ctx, buf, sizeof(buf), SAN_MEM_READWRITE, &mr)))
        goto out;
    printf("registered: 64 KiB at %p, lkey %#" PRIx32 "\n", (void *)buf, san_mr_lkey(mr));
    what = "san_deregister";
    if ((err = san_deregister(mr)))
        goto out;
    what = "san_free";
    err = san_free(ctx, low);
out:
    san_close(ctx); /* releases whatever the context still holds */
    if (err) {
        fprintf(stderr, "quickstart: %s: %s\n", what, san_strerror(err));
        return 1;
    }
    return 0;
}
