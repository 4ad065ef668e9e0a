/* sanperf dma: the DMA data path and the lock path, each against a baseline measured in the same
 * run (issue 3's benchmark).
 *
 * Cases:
 * - direct:   a 64-bit NIC writes a locked 64 MiB buffer in 1 MiB transfers (get a scatter-gather
 *             list from the device, san_dma_write each element, put), against memcpy of the same
 *             1 MiB source into the same destination. ratio = DMA throughput / memcpy throughput
 *             (better: higher; 1.0 is as fast as memcpy).
 * - bounced:  the same with a 32-bit NIC on a NOLOWMEM host: every byte goes through map
 *             registers below 4 GiB and is copied out at put (two copies for memcpy's one).
 * - sg:       get+put of a list for a direct 1 MiB transfer, in ns per page; baseline: malloc+free
 *             of a block of the list's size; ratio = get+put time / malloc+free time.
 * - lock:     san_mdl_lock+san_mdl_unlock of 1 MiB against bare mlock+munlock of the same memory;
 *             ratio = lock time / mlock time.
 * Rounds (or batches) of the measured path and of the baseline alternate so both see the same
 * machine noise; medians are reported. Options (checked by main.c): --rounds N (buffer passes per
 * side, default 15), --ops N (iterations for sg and lock, default 20000 and 2000).
 * The buffer is locked, so it must fit RLIMIT_MEMLOCK (main.c raised the soft limit to the hard
 * one): without CAP_IPC_LOCK and with less than 64 MiB + 1 MiB allowed (Debian's default is 8 MiB)
 * the direct and bounced cases use the largest whole number of MiB that fits, say so on stderr,
 * and report it in buffer_bytes. Single-threaded. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>

#include <san/san.h>

#include "perf.h"

#define KIB         (UINT64_C(1) << 10)
#define MIB         (UINT64_C(1) << 20)
#define GIB         (UINT64_C(1) << 30)
#define FULL_BUFFER (64 * MIB)
#define XFER        (1 * MIB)

struct opts {
    unsigned rounds, sg_ops, lock_ops;
    size_t buffer; /* bytes the direct and bounced cases lock and transfer into */
};

/* The transfer buffer: FULL_BUFFER, or what RLIMIT_MEMLOCK leaves after 1 MiB kept for the
 * process's other locks, in whole transfers. */
static size_t buffer_size(void)
{
    uint64_t allowed = perf_memlock_allowance();
    if (allowed >= FULL_BUFFER + XFER)
        return FULL_BUFFER;
    size_t fit = allowed > 2 * XFER ? (allowed - XFER) / XFER * XFER : XFER;
    fprintf(stderr,
            "sanperf dma: RLIMIT_MEMLOCK is %llu KiB (ulimit -l): direct and bounced transfer into "
            "%zu MiB instead of %llu MiB\n",
            (unsigned long long)(allowed >> 10), fit / MIB,
            (unsigned long long)(FULL_BUFFER / MIB));
    return fit;
}

/* The values are main.c's, already checked against its table. */
static void parse(const struct perf_opts *o, struct opts *p)
{
    *p = (struct opts){15, 20000, 2000, buffer_size()};
    for (int i = 0; i + 1 < o->argc; i++) {
        const char *a = o->argv[i];
        unsigned v = (unsigned)strtoul(o->argv[i + 1], NULL, 10);
        if (!strcmp(a, "--rounds")) {
            p->rounds = v;
            i++;
        } else if (!strcmp(a, "--ops")) {
            p->sg_ops = v;
            p->lock_ops = v / 10 ? v / 10 : 1;
            i++;
        }
    }
}

/* A lock refused for RLIMIT_MEMLOCK says which limit. */
static void lock_failed(const char *what, size_t bytes, int err)
{
    struct rlimit r;
    fprintf(stderr, "sanperf dma %s: locking %zu KiB: %s\n", what, bytes >> 10, san_strerror(err));
    if ((err == -ENOBUFS || err == -EPERM || err == -EAGAIN || err == -ENOMEM) &&
        !getrlimit(RLIMIT_MEMLOCK, &r) && r.rlim_cur != RLIM_INFINITY)
        fprintf(stderr, "sanperf dma %s: RLIMIT_MEMLOCK allows %llu KiB (ulimit -l)\n", what,
                (unsigned long long)(r.rlim_cur >> 10));
}

static void *map_buffer(size_t len)
{
    void *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED)
        return NULL;
    memset(p, 1, len); /* faulted in: neither side pays first-touch faults */
    return p;
}

static int make_adapter(struct san_machine *m, bool dma64, struct san_dma_adapter **out)
{
    struct san_device_description d;
    memset(&d, 0, sizeof(d));
    d.version = 2;
    d.master = true;
    d.scatter_gather = true;
    d.dma32 = !dma64;
    d.dma64 = dma64;
    d.max_length = XFER;
    uint32_t nr = 0;
    return san_get_dma_adapter(m, &d, &nr, out);
}

/* One pass of the device writing the locked buffer through 1 MiB lists. */
static int dma_pass(struct san_dma_adapter *a, struct san_mdl *mdl, const uint8_t *src, size_t len)
{
    for (size_t off = 0; off < len; off += XFER) {
        struct san_sg_list *sg;
        int err = a->ops->get_scatter_gather_list(a, mdl, off, XFER, false, &sg);
        if (err)
            return err;
        const uint8_t *p = src;
        for (uint32_t i = 0; i < sg->nr; p += sg->elem[i].length, i++)
            if ((err = san_dma_write(a, sg->elem[i].addr, p, sg->elem[i].length)))
                return err;
        a->ops->put_scatter_gather_list(a, sg, false);
    }
    return 0;
}

static void memcpy_pass(uint8_t *dst, const uint8_t *src, size_t len)
{
    for (size_t off = 0; off < len; off += XFER)
        memcpy(dst + off, src, XFER);
    __asm__ volatile("" : : "r"(dst) : "memory");
}

static double gbps(uint64_t bytes, uint64_t ns)
{
    return ns ? (double)bytes / (double)ns : 0;
}

static int case_transfer(const struct opts *p, bool json, bool dma64)
{
    const char *name = dma64 ? "direct" : "bounced";
    struct san_machine_config cfg = {.ram_size = 8 * GIB, .nolowmem = true};
    struct san_machine *m = NULL;
    struct san_dma_adapter *a = NULL;
    struct san_mdl *mdl = NULL;
    const size_t len = p->buffer;
    uint8_t *dst = NULL, *src = NULL;
    uint64_t *t_dma = calloc(p->rounds, sizeof(uint64_t));
    uint64_t *t_cpy = calloc(p->rounds, sizeof(uint64_t));
    int err = -ENOMEM;

    if (!t_dma || !t_cpy || !(dst = map_buffer(len)) || !(src = map_buffer(XFER)))
        goto out;
    for (size_t i = 0; i < XFER; i++)
        src[i] = (uint8_t)(i * 7 + 3);
    if ((err = san_machine_create(&cfg, &m)) || (err = make_adapter(m, dma64, &a))) {
        fprintf(stderr, "sanperf dma %s: setup: %s\n", name, san_strerror(err));
        goto out;
    }
    if ((err = san_mdl_lock(m, dst, len, SAN_MEM_READWRITE, &mdl))) {
        lock_failed(name, len, err);
        goto out;
    }
    if ((err = dma_pass(a, mdl, src, len))) /* warm-up: touches the bounce pages */
        goto fail_pass;
    memcpy_pass(dst, src, len);
    struct san_machine_stats s0, s1;
    san_machine_stats(m, &s0);
    for (unsigned r = 0; r < p->rounds; r++) {
        uint64_t t0 = perf_now_ns();
        memcpy_pass(dst, src, len);
        uint64_t t1 = perf_now_ns();
        if ((err = dma_pass(a, mdl, src, len)))
            goto fail_pass;
        uint64_t t2 = perf_now_ns();
        t_cpy[r] = t1 - t0;
        t_dma[r] = t2 - t1;
        perf_progress(name, r + 1, p->rounds);
    }
    san_machine_stats(m, &s1);
    /* The device's data must have arrived. */
    for (size_t off = 0; off < len; off += XFER)
        if (memcmp(dst + off, src, XFER)) {
            fprintf(stderr, "sanperf dma %s: data mismatch at %zu\n", name, off);
            err = -EIO;
            goto out;
        }
    uint64_t dma_ns = perf_quantile(t_dma, p->rounds, 0.5);
    uint64_t cpy_ns = perf_quantile(t_cpy, p->rounds, 0.5);
    double dma_gbps = gbps(len, dma_ns), cpy_gbps = gbps(len, cpy_ns);
    double ratio = cpy_gbps ? dma_gbps / cpy_gbps : 0;
    double target = dma64 ? 0.8 : 0.4;
    uint64_t bounced = (s1.bounce_bytes - s0.bounce_bytes) / p->rounds;
    if (json)
        perf_json("\"suite\": \"dma\", \"case\": \"%s\", \"nic_bits\": %d, \"nolowmem\": true, "
                  "\"buffer_bytes\": %zu, \"transfer_bytes\": %" PRIu64
                  ", \"rounds\": %u, \"p50_ns\": %" PRIu64 ", \"baseline\": \"memcpy\""
                  ", \"baseline_p50_ns\": %" PRIu64 ", \"gb_per_s\": %.4f"
                  ", \"baseline_gb_per_s\": %.4f, \"ratio\": %.3f, \"better\": \"higher\""
                  ", \"target_ratio\": %.1f, \"pass\": %s, \"bounce_bytes_per_pass\": %" PRIu64,
                  name, dma64 ? 64 : 32, len, XFER, p->rounds, dma_ns, cpy_ns, dma_gbps, cpy_gbps,
                  ratio, target, ratio >= target ? "true" : "false", bounced);
    else
        printf("%-8s %d-bit NIC: %zu MiB in 1 MiB transfers %8.2f GB/s, memcpy %8.2f GB/s, "
               "ratio %.3f (target >= %.1f), bounced %" PRIu64 " bytes/pass\n",
               name, dma64 ? 64 : 32, len / MIB, dma_gbps, cpy_gbps, ratio, target, bounced);
    err = 0;
    goto out;
fail_pass:
    fprintf(stderr, "sanperf dma %s: transfer failed: %s\n", name, san_strerror(err));
out:
    san_mdl_unlock(mdl);
    if (a)
        a->ops->put_dma_adapter(a);
    san_machine_destroy(m);
    if (dst)
        munmap(dst, len);
    if (src)
        munmap(src, XFER);
    free(t_dma);
    free(t_cpy);
    return err;
}

/* Keeps the compiler from eliding a malloc/free pair. */
static void escape(void *p)
{
    __asm__ volatile("" : : "r"(p) : "memory");
}

static int case_sg(const struct opts *p, bool json)
{
    enum { BATCH = 16 };
    struct san_machine_config cfg = {.ram_size = 8 * GIB};
    struct san_machine *m = NULL;
    struct san_dma_adapter *a = NULL;
    struct san_mdl *mdl = NULL;
    uint8_t *buf = map_buffer(XFER);
    unsigned n = (p->sg_ops + BATCH - 1) / BATCH;
    uint64_t *t_sg = calloc(n, sizeof(uint64_t)), *t_base = calloc(n, sizeof(uint64_t));
    uint32_t nr_elems = 0;
    int err = -ENOMEM;

    if (!buf || !t_sg || !t_base)
        goto out;
    if ((err = san_machine_create(&cfg, &m)) || (err = make_adapter(m, true, &a))) {
        fprintf(stderr, "sanperf dma sg: setup: %s\n", san_strerror(err));
        goto out;
    }
    if ((err = san_mdl_lock(m, buf, XFER, SAN_MEM_READWRITE, &mdl))) {
        lock_failed("sg", XFER, err);
        goto out;
    }
    size_t list_size = sizeof(struct san_sg_list) + sizeof(struct san_sg_element);
    for (unsigned i = 0; i < n; i++) {
        uint64_t t0 = perf_now_ns();
        for (int k = 0; k < BATCH; k++) {
            struct san_sg_list *sg;
            if ((err = a->ops->get_scatter_gather_list(a, mdl, 0, XFER, false, &sg))) {
                fprintf(stderr, "sanperf dma sg: %s\n", san_strerror(err));
                goto out;
            }
            nr_elems = sg->nr;
            a->ops->put_scatter_gather_list(a, sg, false);
        }
        uint64_t t1 = perf_now_ns();
        for (int k = 0; k < BATCH; k++) {
            void *q = malloc(list_size + 64);
            escape(q);
            free(q);
        }
        uint64_t t2 = perf_now_ns();
        t_sg[i] = (t1 - t0) / BATCH;
        t_base[i] = (t2 - t1) / BATCH;
    }
    uint64_t sg_ns = perf_quantile(t_sg, n, 0.5), base_ns = perf_quantile(t_base, n, 0.5);
    uint64_t sg99 = perf_quantile(t_sg, n, 0.99);
    double per_page = (double)sg_ns / (double)(XFER / SAN_PAGE_SIZE);
    if (json)
        perf_json("\"suite\": \"dma\", \"case\": \"sg\", \"nic_bits\": 64, \"transfer_bytes\": "
                  "%" PRIu64 ", \"pages\": %" PRIu64 ", \"elements\": %u, \"ops\": %u"
                  ", \"p50_ns\": %" PRIu64 ", \"p99_ns\": %" PRIu64
                  ", \"ns_per_page\": %.2f, \"baseline\": \"malloc_free\""
                  ", \"baseline_p50_ns\": %" PRIu64 ", \"ratio\": %.3f, \"better\": \"lower\""
                  ", \"target_ns_per_page\": 20, \"pass\": %s",
                  XFER, XFER / SAN_PAGE_SIZE, nr_elems, n * BATCH, sg_ns, sg99, per_page, base_ns,
                  base_ns ? (double)sg_ns / (double)base_ns : 0, per_page <= 20 ? "true" : "false");
    else
        printf("sg       get+put of a direct 1 MiB list: %" PRIu64
               " ns (%.2f ns/page, target <= 20), malloc+free %" PRIu64 " ns\n",
               sg_ns, per_page, base_ns);
    err = 0;
out:
    san_mdl_unlock(mdl);
    if (a)
        a->ops->put_dma_adapter(a);
    san_machine_destroy(m);
    if (buf)
        munmap(buf, XFER);
    free(t_sg);
    free(t_base);
    return err;
}

static int case_lock(const struct opts *p, bool json)
{
    /* Batches of each side alternate: the kernel defers LRU work from munlock to whoever locks
     * next, so strict one-to-one alternation would bill one side for the other's pages. */
    enum { LOCK_BATCH = 8 };
    struct san_machine_config cfg = {.ram_size = 8 * GIB};
    struct san_machine *m = NULL;
    uint8_t *buf = map_buffer(XFER);
    unsigned n = (p->lock_ops + LOCK_BATCH - 1) / LOCK_BATCH;
    uint64_t *t_lock = calloc(n, sizeof(uint64_t));
    uint64_t *t_mlock = calloc(n, sizeof(uint64_t));
    int err = -ENOMEM;

    if (!buf || !t_lock || !t_mlock)
        goto out;
    if ((err = san_machine_create(&cfg, &m)))
        goto out;
    for (unsigned i = 0; i < n; i++) {
        uint64_t t0 = perf_now_ns();
        for (int k = 0; k < LOCK_BATCH; k++)
            if (mlock(buf, XFER) || munlock(buf, XFER)) {
                err = errno == EAGAIN || errno == ENOMEM ? -ENOBUFS : -errno;
                lock_failed("lock (mlock)", XFER, err);
                goto out;
            }
        uint64_t t1 = perf_now_ns();
        for (int k = 0; k < LOCK_BATCH; k++) {
            struct san_mdl *mdl;
            if ((err = san_mdl_lock(m, buf, XFER, SAN_MEM_READWRITE, &mdl))) {
                lock_failed("lock", XFER, err);
                goto out;
            }
            san_mdl_unlock(mdl);
        }
        uint64_t t2 = perf_now_ns();
        t_mlock[i] = (t1 - t0) / LOCK_BATCH;
        t_lock[i] = (t2 - t1) / LOCK_BATCH;
        perf_progress("lock", i + 1, n);
    }
    uint64_t lock_ns = perf_quantile(t_lock, n, 0.5);
    uint64_t mlock_ns = perf_quantile(t_mlock, n, 0.5);
    double ratio = mlock_ns ? (double)lock_ns / (double)mlock_ns : 0;
    if (json)
        perf_json("\"suite\": \"dma\", \"case\": \"lock\", \"bytes\": %" PRIu64
                  ", \"ops\": %u, \"batch\": %d, \"p50_ns\": %" PRIu64
                  ", \"baseline\": \"mlock_munlock\", \"baseline_p50_ns\": %" PRIu64
                  ", \"ratio\": %.3f, \"better\": \"lower\", \"target_ratio\": 1.5, \"pass\": %s",
                  XFER, n * LOCK_BATCH, LOCK_BATCH, lock_ns, mlock_ns, ratio,
                  ratio <= 1.5 ? "true" : "false");
    else
        printf("lock     san_mdl_lock+unlock of 1 MiB: %" PRIu64 " ns, mlock+munlock %" PRIu64
               " ns, ratio %.3f (target <= 1.5)\n",
               lock_ns, mlock_ns, ratio);
    err = 0;
out:
    san_machine_destroy(m);
    if (buf)
        munmap(buf, XFER);
    free(t_lock);
    free(t_mlock);
    return err;
}

int perf_dma(const struct perf_opts *o)
{
    struct opts p;
    int rc = 0;
    parse(o, &p);
    rc |= case_transfer(&p, o->json, true) != 0;
    rc |= case_transfer(&p, o->json, false) != 0;
    rc |= case_sg(&p, o->json) != 0;
    rc |= case_lock(&p, o->json) != 0;
    return rc;
}
