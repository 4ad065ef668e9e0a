/* hello_san: what `make run` shows. Connects to sanproxyd, allocates proxy memory below 4 GiB (as
 * a 32-bit NIC would need it, even on a NOLOWMEM host), registers one of its own buffers for RDMA
 * (probing the descriptor size first, as WSPRegisterRdmaMemory callers do) and prints what it got,
 * saying what the expected oddities are: the probe's EFAULT, and the cached registration the
 * daemon releases at close. Usage: hello_san [SOCKET] (default: $SANPROXY_SOCKET, else the
 * daemon's default path). */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <san/san.h>

static int die(const char *what, int err)
{
    fprintf(stderr, "hello_san: %s: %s\n", what, san_strerror(err));
    return 1;
}

int main(int argc, char **argv)
{
    struct san_ctx *ctx;
    struct san_mr *mr;
    void *low;
    san_paddr_t pa;
    int err;

    /* Line by line even into a pipe, so that each line is out before the daemon (which may
     * share our stderr or stdout) logs what the next call makes it do. */
    setvbuf(stdout, NULL, _IOLBF, 0);
    if ((err = san_open(argc > 1 ? argv[1] : NULL, &ctx)))
        return die("cannot reach sanproxyd (is it running? SANPROXY_SOCKET?)", err);

    /* Proxy memory: frames of the (emulated) machine, mapped here through a memfd. */
    if ((err = san_alloc(ctx, 64 * 1024, SAN_ALLOC_LOW, &low)))
        return die("san_alloc", err);
    if ((err = san_physical_address(ctx, low, &pa)))
        return die("san_physical_address", err);
    strcpy(low, "hello from proxy memory");
    printf("allocated 64 KiB of low memory: mapped at %p, physical %#" PRIx64 " (%s 4 GiB)\n", low,
           pa, pa + 64 * 1024 <= (UINT64_C(1) << 32) ? "below" : "NOT below");

    /* Our own buffer, registered for RDMA: first ask how big the descriptor is. */
    size_t len = 256 * 1024, desc_len = 0;
    char *buf = aligned_alloc(4096, len);
    if (!buf)
        return die("aligned_alloc", -12);
    memset(buf, 0, len);
    err = san_register_rdma(ctx, buf, len, SAN_MEM_READWRITE, NULL, &desc_len, &mr);
    if (err != -EFAULT)
        return die("descriptor probe (EFAULT expected)", err ? err : -EPROTO);
    printf("descriptor probe: EFAULT, %zu bytes needed - as expected: asked with no room for the "
           "descriptor, the call registers nothing and says how much room it needs\n",
           desc_len);
    unsigned char *desc = malloc(desc_len);
    if (!desc || (err = san_register_rdma(ctx, buf, len, SAN_MEM_READWRITE, desc, &desc_len, &mr)))
        return die("san_register_rdma", err);
    if ((err = san_physical_address(ctx, buf, &pa)))
        return die("san_physical_address", err);
    printf("registered 256 KiB at %p for RDMA: lkey %#x, rkey %#x, first page at physical %#" PRIx64
           "\n",
           (void *)buf, san_mr_lkey(mr), san_mr_rkey(mr), pa);
    printf("descriptor (%zu bytes, give it to the peer):", desc_len);
    for (size_t i = 0; i < desc_len; i++)
        printf("%s%02x", i % 8 ? "" : " ", desc[i]);
    printf("\n");

    if ((err = san_deregister(mr)))
        return die("san_deregister", err);
    if ((err = san_free(ctx, low)))
        return die("san_free", err);
    printf("deregistered and freed; the registration stays in libsan's cache (registering the "
           "buffer again would cost no round trip) until the context closes\n");
    printf("closing: the daemon now releases that cached registration (its log says \"releasing "
           "0 allocations, 1 registrations\": expected, not a leak); `sanctl stats` then shows it "
           "idle\n");
    san_close(ctx);
    free(desc);
    free(buf);
    return 0;
}
