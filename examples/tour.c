/* A guided tour of the emulated host physical memory: the RAM map, a few constrained contiguous
 * allocations (MmAllocateContiguousMemorySpecifyCache) and what NOLOWMEM changes. */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include <san/san.h>

#define MIB (UINT64_C(1) << 20)
#define GIB (UINT64_C(1) << 30)

static void show_map(struct san_machine *m, const char *title)
{
    struct san_machine_stats st;
    san_machine_stats(m, &st);
    printf("%s: %" PRIu64 " MiB of RAM, %" PRIu64 " MiB free, %" PRIu64 " MiB free below 4 GiB\n",
           title, st.ram_bytes / MIB, st.free_bytes / MIB, st.low_free_bytes / MIB);
}

static void try_alloc(struct san_machine *m, const char *what, size_t bytes, san_paddr_t lo,
                      san_paddr_t hi, san_paddr_t boundary)
{
    void *va;
    san_paddr_t pa;
    int err = san_alloc_contiguous(m, bytes, lo, hi, boundary, SAN_CACHED, &va);
    if (err) {
        printf("  %-44s -> %s\n", what, san_strerror(err));
        return;
    }
    san_get_physical_address(m, va, &pa);
    memset(va, 0xab, bytes < MIB ? bytes : MIB); /* the memory is real (touch at most 1 MiB) */
    printf("  %-44s -> pa 0x%010" PRIx64 "..0x%010" PRIx64 "\n", what, pa, pa + bytes - 1);
}

static void tour(bool nolowmem)
{
    struct san_machine_config cfg = {.ram_size = 8 * GIB, .nolowmem = nolowmem};
    struct san_machine *m;
    int err = san_machine_create(&cfg, &m);
    if (err) {
        printf("san_machine_create: %s\n", san_strerror(err));
        return;
    }
    printf("\n== An 8 GiB machine%s ==\n", nolowmem ? " booted with NOLOWMEM" : "");
    printf("RAM map: 0x0000100000-0x00bfffffff (1 MiB to 3 GiB), hole to 4 GiB, "
           "0x0100000000-0x02400fffff\n");
    show_map(m, "before");
    try_alloc(m, "64 KiB, anywhere", 64 * 1024, 0, UINT64_MAX, 0);
    try_alloc(m, "1 MiB, below 4 GiB (32-bit device)", MIB, 0, 4 * GIB - 1, 0);
    try_alloc(m, "192 KiB, not crossing 256 KiB", 192 * 1024, 0, UINT64_MAX, 256 * 1024);
    try_alloc(m, "64 KiB between 16 MiB and 1 GiB", 64 * 1024, 16 * MIB, GIB - 1, 0);
    try_alloc(m, "8 KiB below 16 MiB (ISA-style)", 8192, 0, 16 * MIB - 1, 0);
    try_alloc(m, "16 GiB, anywhere (too big)", (size_t)16 * GIB, 0, UINT64_MAX, 0);
    show_map(m, "after");

    /* Now fill the machine with 256 MiB requests that may go anywhere. */
    void *va[64];
    int n = 0, high = 0, low = 0;
    while (n < 64 &&
           !(err = san_alloc_contiguous(m, 256 * MIB, 0, UINT64_MAX, 0, SAN_CACHED, &va[n]))) {
        san_paddr_t pa;
        san_get_physical_address(m, va[n++], &pa);
        *(pa >= 4 * GIB ? &high : &low) += 1;
    }
    printf("  256 MiB requests until the machine says no (%s):\n"
           "    %d served above 4 GiB, %d served below 4 GiB\n",
           san_strerror(err), high, low);
    while (n--)
        san_free_contiguous(m, va[n], 256 * MIB, SAN_CACHED);
    if (nolowmem) {
        uint64_t dirty = 0;
        san_machine_check_lowmem(m, &dirty);
        printf("low-memory pattern check: %" PRIu64 " dirty free frames below 4 GiB\n", dirty);
    }
    san_machine_destroy(m);
}

int main(void)
{
    printf("sanproxy: emulated host physical memory\n"
           "Highest suitable memory first: requests that may use memory above 4 GiB get it,\n"
           "so low memory stays free for devices that can only address 32 bits.\n");
    tour(false);
    tour(true);
    printf(
        "\nWith NOLOWMEM, requests that may go above 4 GiB fail once high memory runs out instead\n"
        "of taking low frames; requests limited to below 4 GiB still get low memory.\n");
    return 0;
}
