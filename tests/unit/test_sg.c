/* dma scatter-gather lists: direct elements and coalescing, bouncing through map registers in both
 * directions, partial reach, devices without scatter-gather, map register exhaustion and recovery,
 * argument and access errors with nothing held, MDL unlock and adapter put while a list is
 * outstanding, a client process's pages, and concurrent users of one adapter. */
#include <pthread.h>
#include <sys/wait.h>

#include "dma_test.h"

static void assert_idle(struct san_machine *m, uint64_t bounce_bytes)
{
    struct san_machine_stats s = stats(m);
    assert_int_equal(s.map_registers_in_use, 0);
    assert_int_equal(s.bounce_bytes, bounce_bytes);
}

/* A 64-bit device reaches everything: elements are the frames, adjacent ones coalesced. */
static void test_direct(void **state)
{
    struct san_machine *m = machine(8 * GIB, true);
    struct san_dma_adapter *a = adapter(m, 64, true, 64 * KIB, NULL);
    uint8_t *buf = map_pages(20), dev[64 * KIB];
    struct san_mdl *mdl;
    struct san_sg_list *sg = (struct san_sg_list *)1;

    fill(buf, 20 * PAGE, 5);
    assert_int_equal(san_mdl_lock(m, buf + 100, 19 * PAGE, SAN_MEM_READWRITE, &mdl), 0);
    assert_int_equal(mdl->nr_pieces, 1);

    /* 16 pages from byte 300 of the MDL: one element. */
    assert_int_equal(a->ops->get_scatter_gather_list(a, mdl, 300, 16 * PAGE, true, &sg), 0);
    assert_int_equal(sg->nr, 1);
    assert_int_equal(sg->elem[0].addr, san_mdl_page(mdl, 0) + 400);
    assert_int_equal(sg->elem[0].length, 16 * PAGE);
    device_read_list(a, sg, dev);
    assert_int_equal(memcmp(dev, buf + 400, 16 * PAGE), 0);
    assert_int_equal(san_adapter_of(a)->lists, 1);
    assert_int_equal(mdl->maps, 1);
    a->ops->put_scatter_gather_list(a, sg, true);
    assert_int_equal(san_adapter_of(a)->lists, 0);
    assert_int_equal(mdl->maps, 0);

    /* From the device: the data is in the buffer at once (no copy at put). */
    assert_int_equal(a->ops->get_scatter_gather_list(a, mdl, 5, 3 * PAGE, false, &sg), 0);
    fill(dev, 3 * PAGE, 6);
    device_write_list(a, sg, dev);
    assert_true(filled(dev, 3 * PAGE, 6));
    assert_int_equal(memcmp(buf + 105, dev, 3 * PAGE), 0);
    a->ops->put_scatter_gather_list(a, sg, false);
    assert_idle(m, 0);

    /* The last byte of the MDL, exactly. */
    assert_int_equal(a->ops->get_scatter_gather_list(a, mdl, 19 * PAGE - 1, 1, false, &sg), 0);
    assert_int_equal(sg->nr, 1);
    assert_int_equal(sg->elem[0].addr, san_mdl_page(mdl, 19) + 99);
    a->ops->put_scatter_gather_list(a, sg, false);

    /* Errors, nothing held. */
    sg = (struct san_sg_list *)1;
    assert_int_equal(a->ops->get_scatter_gather_list(a, mdl, 0, 0, true, &sg), -EINVAL);
    assert_null(sg);
    assert_int_equal(a->ops->get_scatter_gather_list(a, mdl, 19 * PAGE, 1, true, &sg), -EINVAL);
    assert_int_equal(a->ops->get_scatter_gather_list(a, mdl, 1, 19 * PAGE, true, &sg), -EINVAL);
    assert_int_equal(a->ops->get_scatter_gather_list(a, mdl, SIZE_MAX, 2, true, &sg), -EINVAL);
    assert_int_equal(a->ops->get_scatter_gather_list(a, mdl, 0, 64 * KIB + 1, true, &sg), -EINVAL);
    assert_int_equal(a->ops->get_scatter_gather_list(a, NULL, 0, 1, true, &sg), -EINVAL);
    assert_int_equal(a->ops->get_scatter_gather_list(a, mdl, 0, 1, true, NULL), -EINVAL);
    assert_int_equal(san_adapter_of(a)->lists, 0);
    assert_int_equal(mdl->maps, 0);
    a->ops->put_scatter_gather_list(a, NULL, true);
    san_mdl_unlock(mdl);

    /* A device write into a buffer locked for reading: -EACCES; reading it is fine. */
    assert_int_equal(san_mdl_lock(m, buf, 4 * PAGE, SAN_MEM_READ, &mdl), 0);
    assert_int_equal(a->ops->get_scatter_gather_list(a, mdl, 0, PAGE, false, &sg), -EACCES);
    assert_null(sg);
    assert_int_equal(a->ops->get_scatter_gather_list(a, mdl, 0, PAGE, true, &sg), 0);
    a->ops->put_scatter_gather_list(a, sg, true);
    san_mdl_unlock(mdl);
    assert_idle(m, 0);

    a->ops->put_dma_adapter(a);
    munmap(buf, 20 * PAGE);
    san_machine_destroy(m);
}

/* Frees every other page of 64 high pages, except runs given as (first, len) in frames from the
 * top, so that locked pages come in known pieces. Returns the allocations to free later. */
static void fragment(struct san_machine *m, void **va, unsigned nr, const unsigned *free_top,
                     size_t nr_free)
{
    for (unsigned i = 0; i < nr; i++)
        assert_int_equal(san_alloc_contiguous(m, PAGE, 4 * GIB, UINT64_MAX, 0, SAN_CACHED, &va[i]),
                         0);
    /* va[i] is frame nr-1-i from the bottom of high memory: i counts from the top. */
    for (size_t k = 0; k < nr_free; k++) {
        assert_int_equal(san_free_contiguous(m, va[free_top[k]], PAGE, SAN_CACHED), 0);
        va[free_top[k]] = NULL;
    }
}

static void unfragment(struct san_machine *m, void **va, unsigned nr)
{
    for (unsigned i = 0; i < nr; i++)
        if (va[i])
            assert_int_equal(san_free_contiguous(m, va[i], PAGE, SAN_CACHED), 0);
}

/* Pieces: frames {0,1}, {3}, {5,6,7} from the top of high memory. */
static const unsigned three_pieces[] = {0, 1, 3, 5, 6, 7};

static void test_pieces_and_coalescing(void **state)
{
    /* The adapter's 17 registers take the top 17 high pages; then 64 are fragmented. */
    struct san_machine *m = small_machine(64, 64 + 17, true);
    struct san_dma_adapter *a = adapter(m, 64, true, 64 * KIB, NULL);
    void *va[64];
    fragment(m, va, 64, three_pieces, 6);
    uint8_t *buf = map_pages(6), dev[6 * PAGE];
    struct san_mdl *mdl;
    struct san_sg_list *sg;

    fill(buf, 6 * PAGE, 7);
    assert_int_equal(san_mdl_lock(m, buf, 6 * PAGE, SAN_MEM_READWRITE, &mdl), 0);
    assert_int_equal(mdl->nr_pieces, 3);
    uint64_t top = 4 * GIB + 64 * PAGE;
    assert_int_equal(san_mdl_page(mdl, 0), top - 2 * PAGE);
    assert_int_equal(san_mdl_page(mdl, 2), top - 4 * PAGE);
    assert_int_equal(san_mdl_page(mdl, 3), top - 8 * PAGE);

    assert_int_equal(a->ops->get_scatter_gather_list(a, mdl, 10, 6 * PAGE - 20, true, &sg), 0);
    assert_int_equal(sg->nr, 3);
    assert_int_equal(sg->elem[0].addr, top - 2 * PAGE + 10);
    assert_int_equal(sg->elem[0].length, 2 * PAGE - 10);
    assert_int_equal(sg->elem[1].addr, top - 4 * PAGE);
    assert_int_equal(sg->elem[1].length, PAGE);
    assert_int_equal(sg->elem[2].addr, top - 8 * PAGE);
    assert_int_equal(sg->elem[2].length, 3 * PAGE - 10);
    device_read_list(a, sg, dev);
    assert_int_equal(memcmp(dev, buf + 10, 6 * PAGE - 20), 0);
    a->ops->put_scatter_gather_list(a, sg, true);

    /* Inside the middle piece only. */
    assert_int_equal(a->ops->get_scatter_gather_list(a, mdl, 2 * PAGE + 1, 100, false, &sg), 0);
    assert_int_equal(sg->nr, 1);
    assert_int_equal(sg->elem[0].addr, top - 4 * PAGE + 1);
    a->ops->put_scatter_gather_list(a, sg, false);

    san_mdl_unlock(mdl);
    a->ops->put_dma_adapter(a);
    unfragment(m, va, 64);
    assert_idle(m, 0);
    munmap(buf, 6 * PAGE);
    san_machine_destroy(m);
}

/* A 32-bit device and a buffer above 4 GiB: every page bounced, data right both ways. */
static void test_bounce_32bit(void **state)
{
    struct san_machine *m = machine(8 * GIB, true);
    uint32_t nr = 0;
    struct san_dma_adapter *a = adapter(m, 32, true, 64 * KIB, &nr);
    uint8_t *buf = map_pages(18), dev[17 * PAGE];
    struct san_mdl *mdl;
    struct san_sg_list *sg;

    assert_int_equal(nr, 17);
    fill(buf, 18 * PAGE, 8);
    assert_int_equal(san_mdl_lock(m, buf, 18 * PAGE, SAN_MEM_READWRITE, &mdl), 0);
    for (size_t i = 0; i < 18; i++)
        assert_true(san_mdl_page(mdl, i) >= 4 * GIB);

    /* To the device: copied into the map registers at get; later CPU writes do not show. */
    size_t off = 100, len = 64 * KIB;
    assert_int_equal(a->ops->get_scatter_gather_list(a, mdl, off, len, true, &sg), 0);
    assert_reachable(sg, 4 * GIB - 1);
    assert_int_equal(list_bytes(sg), len);
    assert_int_equal(sg->nr, 1); /* 17 registers, one run: one element */
    struct san_machine_stats s = stats(m);
    assert_int_equal(s.map_registers_in_use, 17);
    assert_int_equal(s.bounce_bytes, len);
    assert_int_equal(sg->elem[0].addr % PAGE, off); /* the offset in the page is kept */
    memset(buf, 0, 18 * PAGE);
    device_read_list(a, sg, dev);
    uint8_t model[18 * PAGE];
    fill(model, 18 * PAGE, 8);
    assert_int_equal(memcmp(dev, model + off, len), 0);
    a->ops->put_scatter_gather_list(a, sg, true);
    assert_idle(m, len);
    assert_int_equal(memcmp(buf, (uint8_t[16]){0}, 16), 0); /* no copy back for to_device */

    /* From the device: the buffer changes only at put. */
    fill(buf, 18 * PAGE, 9);
    assert_int_equal(a->ops->get_scatter_gather_list(a, mdl, PAGE, 16 * PAGE, false, &sg), 0);
    assert_reachable(sg, 4 * GIB - 1);
    assert_int_equal(stats(m).map_registers_in_use, 16);
    assert_int_equal(stats(m).bounce_bytes, len); /* nothing copied in */
    fill(dev, 16 * PAGE, 10);
    device_write_list(a, sg, dev);
    assert_true(filled(buf, 18 * PAGE, 9));
    a->ops->put_scatter_gather_list(a, sg, false);
    assert_int_equal(memcmp(buf + PAGE, dev, 16 * PAGE), 0);
    fill(model, 18 * PAGE, 9);
    assert_int_equal(memcmp(buf, model, PAGE), 0);
    assert_int_equal(memcmp(buf + 17 * PAGE, model + 17 * PAGE, PAGE), 0);
    assert_idle(m, len + 16 * PAGE);

    /* The registers are DMA targets only while the list holds them. */
    assert_int_equal(a->ops->get_scatter_gather_list(a, mdl, 0, 10, false, &sg), 0);
    san_laddr_t reg = sg->elem[0].addr;
    assert_int_equal(san_dma_write(a, reg, dev, 10), 0);
    a->ops->put_scatter_gather_list(a, sg, false);
    uint64_t faults = stats(m).dma_faults;
    assert_int_equal(san_dma_write(a, reg, dev, 10), -EFAULT);
    assert_int_equal(stats(m).dma_faults, faults + 1);

    san_mdl_unlock(mdl);
    a->ops->put_dma_adapter(a);
    uint64_t dirty = 1;
    assert_int_equal(san_machine_check_lowmem(m, &dirty), 0);
    assert_int_equal(dirty, 0);
    munmap(buf, 18 * PAGE);
    san_machine_destroy(m);
}

/* A 33-bit device and a buffer whose first pages lie above 8 GiB, the rest below: bounced and
 * direct elements in one list. */
static void test_partial_reach(void **state)
{
    struct san_ram_range ram[2] = {{MIB, 64 * PAGE}, {4 * GIB, 8 * GIB}};
    struct san_machine_config cfg = {.ram = ram, .nr_ram = 2, .nolowmem = true};
    struct san_machine *m;
    assert_int_equal(san_machine_create(&cfg, &m), 0);
    struct san_dma_adapter *a = adapter(m, 33, true, 64 * KIB, NULL);
    /* Above 8 GiB only [8 GiB, 8 GiB + 4 pages) stays free. */
    void *fill_hi;
    assert_int_equal(
        san_alloc_contiguous(m, 4 * GIB - 4 * PAGE, 8 * GIB, UINT64_MAX, 0, SAN_CACHED, &fill_hi),
        0);
    uint8_t *buf = map_pages(8), dev[8 * PAGE];
    struct san_mdl *mdl;
    struct san_sg_list *sg;
    fill(buf, 8 * PAGE, 11);
    assert_int_equal(san_mdl_lock(m, buf, 8 * PAGE, SAN_MEM_READWRITE, &mdl), 0);
    assert_int_equal(san_mdl_page(mdl, 0), 8 * GIB);
    assert_true(san_mdl_page(mdl, 4) < 8 * GIB);

    assert_int_equal(a->ops->get_scatter_gather_list(a, mdl, 0, 8 * PAGE, true, &sg), 0);
    assert_reachable(sg, 8 * GIB - 1);
    assert_int_equal(sg->nr, 2);
    assert_int_equal(sg->elem[1].addr, san_mdl_page(mdl, 4));
    assert_int_equal(sg->elem[1].length, 4 * PAGE);
    assert_int_equal(stats(m).map_registers_in_use, 4);
    assert_int_equal(stats(m).bounce_bytes, 4 * PAGE);
    device_read_list(a, sg, dev);
    assert_true(filled(dev, 8 * PAGE, 11));
    a->ops->put_scatter_gather_list(a, sg, true);

    assert_int_equal(a->ops->get_scatter_gather_list(a, mdl, 3 * PAGE + 7, 2 * PAGE, false, &sg),
                     0);
    assert_int_equal(sg->nr, 2);
    fill(dev, 2 * PAGE, 12);
    device_write_list(a, sg, dev);
    a->ops->put_scatter_gather_list(a, sg, false);
    assert_int_equal(memcmp(buf + 3 * PAGE + 7, dev, 2 * PAGE), 0);
    assert_idle(m, 4 * PAGE + PAGE - 7);

    san_mdl_unlock(mdl);
    a->ops->put_dma_adapter(a);
    assert_int_equal(san_free_contiguous(m, fill_hi, 4 * GIB - 4 * PAGE, SAN_CACHED), 0);
    munmap(buf, 8 * PAGE);
    san_machine_destroy(m);
}

/* A device without scatter-gather: exactly one element, bounced into contiguous registers when
 * the transfer is not physically contiguous or not reachable. */
static void test_no_scatter_gather(void **state)
{
    struct san_machine *m = small_machine(64, 64 + 17, true);
    struct san_dma_adapter *a64 = adapter(m, 64, false, 64 * KIB, NULL);
    struct san_dma_adapter *a32 = adapter(m, 32, false, 64 * KIB, NULL);
    void *va[64];
    fragment(m, va, 64, three_pieces, 6);
    uint8_t *buf = map_pages(6), dev[6 * PAGE];
    struct san_mdl *mdl;
    struct san_sg_list *sg;
    uint64_t bounced = 0;

    fill(buf, 6 * PAGE, 13);
    assert_int_equal(san_mdl_lock(m, buf, 6 * PAGE, SAN_MEM_READWRITE, &mdl), 0);
    assert_int_equal(mdl->nr_pieces, 3);

    /* Contiguous and reachable: direct. */
    assert_int_equal(a64->ops->get_scatter_gather_list(a64, mdl, 3 * PAGE + 1, 2 * PAGE, true, &sg),
                     0);
    assert_int_equal(sg->nr, 1);
    assert_int_equal(sg->elem[0].addr, san_mdl_page(mdl, 3) + 1);
    a64->ops->put_scatter_gather_list(a64, sg, true);
    assert_idle(m, 0);

    /* Three pieces: bounced into one run (the 64-bit adapter's registers are high). */
    for (int dir = 0; dir < 2; dir++) {
        struct san_dma_adapter *a = dir ? a32 : a64;
        assert_int_equal(a->ops->get_scatter_gather_list(a, mdl, 5, 6 * PAGE - 10, true, &sg), 0);
        assert_int_equal(sg->nr, 1);
        assert_int_equal(sg->elem[0].length, 6 * PAGE - 10);
        assert_int_equal(stats(m).map_registers_in_use, 6);
        device_read_list(a, sg, dev);
        assert_int_equal(memcmp(dev, buf + 5, 6 * PAGE - 10), 0);
        a->ops->put_scatter_gather_list(a, sg, true);
        bounced += 6 * PAGE - 10;

        assert_int_equal(a->ops->get_scatter_gather_list(a, mdl, PAGE, 3 * PAGE, false, &sg), 0);
        assert_int_equal(sg->nr, 1);
        if (a == a32)
            assert_reachable(sg, 4 * GIB - 1);
        fill(dev, 3 * PAGE, 14 + dir);
        device_write_list(a, sg, dev);
        a->ops->put_scatter_gather_list(a, sg, false);
        assert_int_equal(memcmp(buf + PAGE, dev, 3 * PAGE), 0);
        bounced += 3 * PAGE;
        assert_idle(m, bounced);
    }

    san_mdl_unlock(mdl);
    a64->ops->put_dma_adapter(a64);
    a32->ops->put_dma_adapter(a32);
    unfragment(m, va, 64);
    munmap(buf, 6 * PAGE);
    san_machine_destroy(m);
}

/* Map registers run out: -EAGAIN with nothing held, and work again once a list is put. Swept over
 * how many registers another list holds. */
static void test_register_exhaustion(void **state)
{
    struct san_machine *m = machine(8 * GIB, true);
    uint32_t nr = 0;
    struct san_dma_adapter *a = adapter(m, 32, true, 64 * KIB, &nr);
    uint8_t *buf = map_pages(17), dev[17 * PAGE];
    struct san_mdl *mdl;
    struct san_sg_list *hold, *sg;

    assert_int_equal(nr, 17);
    fill(buf, 17 * PAGE, 16);
    assert_int_equal(san_mdl_lock(m, buf, 17 * PAGE, SAN_MEM_READWRITE, &mdl), 0);
    /* A transfer needing r registers: r pages, or 16 pages starting mid-page for 17. */
#define XOFF(r) ((r) == 17 ? 1 : 0)
#define XLEN(r) ((r) == 17 ? 16 * PAGE : (r)*PAGE)
    for (uint32_t held = 1; held <= 16; held++) {
        assert_int_equal(a->ops->get_scatter_gather_list(a, mdl, 0, held * PAGE, true, &hold), 0);
        struct san_machine_stats s0 = stats(m);
        assert_int_equal(s0.map_registers_in_use, held);
        uint32_t want = 17 - held + 1;
        sg = (struct san_sg_list *)1;
        assert_int_equal(a->ops->get_scatter_gather_list(a, mdl, XOFF(want), XLEN(want), true, &sg),
                         -EAGAIN);
        assert_null(sg);
        struct san_machine_stats s1 = stats(m);
        assert_int_equal(s1.map_registers_in_use, s0.map_registers_in_use);
        assert_int_equal(s1.bounce_bytes, s0.bounce_bytes);
        assert_int_equal(san_adapter_of(a)->lists, 1);
        assert_int_equal(mdl->maps, 1);
        /* What is left can still be used. */
        assert_int_equal(
            a->ops->get_scatter_gather_list(a, mdl, XOFF(want - 1), XLEN(want - 1), true, &sg), 0);
        assert_int_equal(stats(m).map_registers_in_use, 17);
        device_read_list(a, sg, dev);
        uint8_t model[17 * PAGE];
        fill(model, 17 * PAGE, 16);
        assert_int_equal(memcmp(dev, model + XOFF(want - 1), XLEN(want - 1)), 0);
        a->ops->put_scatter_gather_list(a, sg, true);
        a->ops->put_scatter_gather_list(a, hold, true);
        /* Recovered. */
        assert_int_equal(a->ops->get_scatter_gather_list(a, mdl, XOFF(want), XLEN(want), true, &sg),
                         0);
        assert_int_equal(stats(m).map_registers_in_use, want);
        a->ops->put_scatter_gather_list(a, sg, true);
        assert_int_equal(stats(m).map_registers_in_use, 0);
    }
    san_mdl_unlock(mdl);
    a->ops->put_dma_adapter(a);

    /* Fewer registers granted than a transfer needs: never satisfiable, -ENOMEM, not -EAGAIN. A
     * direct transfer needs none. */
    nr = 4;
    a = adapter(m, 32, true, 64 * KIB, &nr);
    assert_int_equal(nr, 4);
    assert_int_equal(san_mdl_lock(m, buf, 17 * PAGE, SAN_MEM_READWRITE, &mdl), 0);
    assert_int_equal(a->ops->get_scatter_gather_list(a, mdl, 0, 5 * PAGE, true, &sg), -ENOMEM);
    assert_int_equal(a->ops->get_scatter_gather_list(a, mdl, 0, 4 * PAGE, true, &sg), 0);
    a->ops->put_scatter_gather_list(a, sg, true);
    struct san_dma_adapter *a64 = adapter(m, 64, true, 64 * KIB, &nr);
    assert_int_equal(a64->ops->get_scatter_gather_list(a64, mdl, 0, 16 * PAGE, true, &sg), 0);
    a64->ops->put_scatter_gather_list(a64, sg, true);
    a64->ops->put_dma_adapter(a64);
    san_mdl_unlock(mdl);
    a->ops->put_dma_adapter(a);
    munmap(buf, 17 * PAGE);
    san_machine_destroy(m);
}

/* 257 map registers (more than one bitmap word): filled one page at a time, then every other one
 * given back: a scatter-gather transfer takes the scattered registers (one element each), a
 * device without scatter-gather needs a run and waits. */
static void test_many_registers(void **state)
{
    enum { REGS = 257, PAGES = 300 };
    struct san_machine *m = machine(8 * GIB, true);
    uint32_t nr = 0, nr1 = 0;
    struct san_dma_adapter *a = adapter(m, 32, true, MIB, &nr);
    struct san_dma_adapter *b = adapter(m, 32, false, MIB, &nr1);
    assert_int_equal(nr, REGS);
    assert_int_equal(nr1, REGS);
    uint8_t *buf = map_pages(PAGES), *dev = malloc(PAGES * PAGE);
    struct san_mdl *mdl;
    struct san_sg_list *one[REGS], *sg;
    assert_non_null(dev);
    fill(buf, PAGES * PAGE, 40);
    assert_int_equal(san_mdl_lock(m, buf, PAGES * PAGE, SAN_MEM_READWRITE, &mdl), 0);

    for (uint32_t i = 0; i < REGS; i++) {
        assert_int_equal(a->ops->get_scatter_gather_list(a, mdl, i * PAGE, PAGE, true, &one[i]), 0);
        assert_int_equal(one[i]->nr, 1);
        assert_int_equal(one[i]->elem[0].addr, san_reg_paddr(san_adapter_of(a), i));
    }
    assert_int_equal(stats(m).map_registers_in_use, REGS);
    assert_int_equal(a->ops->get_scatter_gather_list(a, mdl, 0, 1, true, &sg), -EAGAIN);
    for (uint32_t i = 0; i < REGS; i += 2)
        a->ops->put_scatter_gather_list(a, one[i], true);
    assert_int_equal(stats(m).map_registers_in_use, REGS / 2);

    assert_int_equal(a->ops->get_scatter_gather_list(a, mdl, 10 * PAGE, 64 * PAGE, true, &sg), 0);
    assert_int_equal(sg->nr, 64);
    assert_reachable(sg, 4 * GIB - 1);
    for (uint32_t i = 0; i < 64; i++)
        assert_int_equal(sg->elem[i].addr, san_reg_paddr(san_adapter_of(a), 2 * i));
    device_read_list(a, sg, dev);
    assert_int_equal(memcmp(dev, buf + 10 * PAGE, 64 * PAGE), 0);
    assert_int_equal(a->ops->get_scatter_gather_list(a, mdl, 0, 66 * PAGE, true, &one[0]), -EAGAIN);
    a->ops->put_scatter_gather_list(a, sg, true);
    for (uint32_t i = 1; i < REGS; i += 2)
        a->ops->put_scatter_gather_list(a, one[i], true);

    /* The same pattern on the adapter without scatter-gather: a run of 2 is not there. */
    for (uint32_t i = 0; i < REGS; i++)
        assert_int_equal(b->ops->get_scatter_gather_list(b, mdl, i * PAGE, PAGE, true, &one[i]), 0);
    for (uint32_t i = 0; i < REGS; i += 2)
        b->ops->put_scatter_gather_list(b, one[i], true);
    assert_int_equal(b->ops->get_scatter_gather_list(b, mdl, 0, 2 * PAGE, true, &sg), -EAGAIN);
    assert_int_equal(b->ops->get_scatter_gather_list(b, mdl, 0, PAGE, true, &sg), 0);
    b->ops->put_scatter_gather_list(b, sg, true);
    for (uint32_t i = 1; i < REGS; i += 2)
        b->ops->put_scatter_gather_list(b, one[i], true);
    assert_int_equal(b->ops->get_scatter_gather_list(b, mdl, 100, MIB, false, &sg), 0);
    assert_int_equal(sg->nr, 1);
    assert_int_equal(stats(m).map_registers_in_use, REGS);
    fill(dev, MIB, 41);
    device_write_list(b, sg, dev);
    b->ops->put_scatter_gather_list(b, sg, false);
    assert_int_equal(memcmp(buf + 100, dev, MIB), 0);
    assert_int_equal(stats(m).map_registers_in_use, 0);

    san_mdl_unlock(mdl);
    a->ops->put_dma_adapter(a);
    b->ops->put_dma_adapter(b);
    free(dev);
    munmap(buf, PAGES * PAGE);
    san_machine_destroy(m);
}

/* Without scatter-gather the registers must be one run: fragmented by use, -EAGAIN. */
static void test_no_sg_register_runs(void **state)
{
    /* 11 low pages free in runs of 6 and 5: the adapter's registers come in two pieces. */
    struct san_machine *m = small_machine(12, 64, true);
    void *hole1, *hole2;
    assert_int_equal(
        san_alloc_contiguous(m, PAGE, MIB + 5 * PAGE, MIB + 6 * PAGE - 1, 0, SAN_CACHED, &hole1),
        0);
    assert_int_equal(
        san_alloc_contiguous(m, PAGE, MIB + 11 * PAGE, MIB + 12 * PAGE - 1, 0, SAN_CACHED, &hole2),
        0);
    uint32_t nr = 0;
    struct san_dma_adapter *a = adapter(m, 32, false, 64 * KIB, &nr);
    assert_int_equal(nr, 10);
    assert_int_equal(san_adapter_of(a)->max_run, 5);
    uint8_t *buf = map_pages(8);
    struct san_mdl *mdl;
    struct san_sg_list *x, *y;
    assert_int_equal(san_mdl_lock(m, buf, 8 * PAGE, SAN_MEM_READWRITE, &mdl), 0);
    assert_int_equal(a->ops->get_scatter_gather_list(a, mdl, 0, 6 * PAGE, true, &x), -ENOMEM);
    assert_int_equal(a->ops->get_scatter_gather_list(a, mdl, 0, 2 * PAGE, true, &x), 0);
    assert_int_equal(a->ops->get_scatter_gather_list(a, mdl, 0, 4 * PAGE, true, &y), 0);
    a->ops->put_scatter_gather_list(a, y, true);
    assert_int_equal(a->ops->get_scatter_gather_list(a, mdl, 0, 5 * PAGE, true, &y), 0);
    a->ops->put_scatter_gather_list(a, y, true);
    struct san_sg_list *z;
    assert_int_equal(a->ops->get_scatter_gather_list(a, mdl, 0, 4 * PAGE, true, &y), 0);
    assert_int_equal(stats(m).map_registers_in_use, 6);
    /* 4 free (3 in one piece, 1 in the other), but no run of 4. */
    assert_int_equal(a->ops->get_scatter_gather_list(a, mdl, 0, 4 * PAGE, true, &z), -EAGAIN);
    assert_int_equal(stats(m).map_registers_in_use, 6);
    a->ops->put_scatter_gather_list(a, x, true);
    assert_int_equal(a->ops->get_scatter_gather_list(a, mdl, 0, 4 * PAGE, true, &z), 0);
    a->ops->put_scatter_gather_list(a, y, true);
    a->ops->put_scatter_gather_list(a, z, true);
    assert_int_equal(stats(m).map_registers_in_use, 0);
    san_mdl_unlock(mdl);
    a->ops->put_dma_adapter(a);
    assert_int_equal(san_free_contiguous(m, hole1, PAGE, SAN_CACHED), 0);
    assert_int_equal(san_free_contiguous(m, hole2, PAGE, SAN_CACHED), 0);
    munmap(buf, 8 * PAGE);
    san_machine_destroy(m);
}

static struct san_sg_list *leaked_list;

/* Unlocking an MDL or putting the adapter while a list is outstanding: logged, nothing freed. */
static void test_outstanding_lists(void **state)
{
    struct san_machine *m = machine(8 * GIB, true);
    struct san_dma_adapter *a = adapter(m, 32, true, 64 * KIB, NULL);
    uint8_t *buf = map_pages(4), dev[4 * PAGE];
    struct san_mdl *mdl;
    struct san_sg_list *sg;
    struct capture c;
    char log[512];

    assert_int_equal(san_mdl_lock(m, buf, 4 * PAGE, SAN_MEM_READWRITE, &mdl), 0);
    assert_int_equal(a->ops->get_scatter_gather_list(a, mdl, 0, 4 * PAGE, false, &sg), 0);
    struct san_machine_stats s0 = stats(m);
    capture_begin(&c);
    san_mdl_unlock(mdl);
    capture_end(&c, log, sizeof(log));
    assert_non_null(strstr(log, "leaking"));
    struct san_machine_stats s1 = stats(m);
    assert_int_equal(s1.locked_bytes, s0.locked_bytes);
    assert_int_equal(s1.free_bytes, s0.free_bytes);
    /* The device finishes; the data still lands in the (still pinned) buffer. */
    fill(dev, 4 * PAGE, 17);
    device_write_list(a, sg, dev);
    a->ops->put_scatter_gather_list(a, sg, false);
    assert_true(filled(buf, 4 * PAGE, 17));

    /* An adapter put with a list outstanding keeps its registers. */
    assert_int_equal(san_mdl_lock(m, buf, 4 * PAGE, SAN_MEM_READWRITE, &mdl), 0);
    assert_int_equal(a->ops->get_scatter_gather_list(a, mdl, 0, 4 * PAGE, false, &sg), 0);
    capture_begin(&c);
    a->ops->put_dma_adapter(a);
    capture_end(&c, log, sizeof(log));
    assert_non_null(strstr(log, "1 scatter-gather list(s)"));
    assert_int_equal(stats(m).map_registers_in_use, 4);
    device_write_list(a, sg, dev); /* the registers are still there */
    assert_int_equal(stats(m).dma_faults, 0);
    leaked_list = sg; /* the driver would still hold it */
    munmap(buf, 4 * PAGE);
    san_machine_destroy(m);
}

/* The daemon's case: the MDL is a client's buffer, reached with process_vm_readv/writev. */
static void test_client_buffer(void **state)
{
    struct san_machine *m = machine(8 * GIB, true);
    uint8_t *buf = map_pages(8), dev[8 * PAGE];
    int go[2], done[2];
    assert_int_equal(pipe(go), 0);
    assert_int_equal(pipe(done), 0);
    fill(buf, 8 * PAGE, 20); /* what the client has; the parent's copy changes below */
    pid_t child = fork();
    assert_true(child >= 0);
    if (child == 0) {
        char c = 0;
        if (write(done[1], "r", 1) != 1 || read(go[0], &c, 1) != 1)
            _exit(1);
        /* The parent's devices wrote pages 2..5 with seed 21 (direct) and 6..7 with 22 (bounced).
         */
        uint8_t model[4 * PAGE];
        fill(model, 4 * PAGE, 21);
        if (memcmp(buf + 2 * PAGE, model, 4 * PAGE))
            _exit(2);
        fill(model, 2 * PAGE, 22);
        if (memcmp(buf + 6 * PAGE, model, 2 * PAGE))
            _exit(3);
        _exit(0);
    }
    char c;
    assert_int_equal(read(done[0], &c, 1), 1);
    memset(buf, 0, 8 * PAGE);

    struct san_page_owner owner = {child, -1, -1, -1, -1};
    struct san_mdl *mdl;
    struct san_sg_list *sg;
    assert_int_equal(san_mdl_lock_for(m, &owner, (uintptr_t)buf, 8 * PAGE, SAN_MEM_READWRITE, &mdl),
                     0);
    struct san_dma_adapter *a64 = adapter(m, 64, true, 64 * KIB, NULL);
    struct san_dma_adapter *a32 = adapter(m, 32, true, 64 * KIB, NULL);

    /* Reads see the client's bytes, direct and bounced. */
    assert_int_equal(san_dma_read(a64, san_mdl_page(mdl, 0), dev, 8 * PAGE), 0);
    assert_true(filled(dev, 8 * PAGE, 20));
    assert_int_equal(a32->ops->get_scatter_gather_list(a32, mdl, 0, 8 * PAGE, true, &sg), 0);
    memset(dev, 0, sizeof(dev));
    device_read_list(a32, sg, dev);
    assert_true(filled(dev, 8 * PAGE, 20));
    a32->ops->put_scatter_gather_list(a32, sg, true);

    /* Writes land in the client. */
    fill(dev, 4 * PAGE, 21);
    assert_int_equal(san_dma_write(a64, san_mdl_page(mdl, 2), dev, 4 * PAGE), 0);
    assert_int_equal(a32->ops->get_scatter_gather_list(a32, mdl, 6 * PAGE, 2 * PAGE, false, &sg),
                     0);
    fill(dev, 2 * PAGE, 22);
    device_write_list(a32, sg, dev);
    a32->ops->put_scatter_gather_list(a32, sg, false);
    assert_int_equal(memcmp(buf, (uint8_t[8]){0}, 8), 0); /* not this process's copy */

    assert_int_equal(write(go[1], "g", 1), 1);
    int status;
    assert_int_equal(waitpid(child, &status, 0), child);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);

    /* The client is gone: its pages are gone; the device's access fails and is counted. */
    uint64_t faults = stats(m).dma_faults;
    assert_int_equal(san_dma_read(a64, san_mdl_page(mdl, 0), dev, PAGE), -EFAULT);
    assert_int_equal(stats(m).dma_faults, faults + 1);
    san_mdl_unlock(mdl);
    a64->ops->put_dma_adapter(a64);
    a32->ops->put_dma_adapter(a32);
    close(go[0]);
    close(go[1]);
    close(done[0]);
    close(done[1]);
    munmap(buf, 8 * PAGE);
    san_machine_destroy(m);
}

/* Two threads share one 32-bit adapter with few map registers, locking, mapping, transferring
 * and unlocking their own buffers; a third does direct DMA on a common buffer. Every transfer
 * must arrive intact; -EAGAIN is retried. Deterministic per-thread seeds. */
struct worker {
    struct san_machine *m;
    struct san_dma_adapter *a;
    unsigned seed;
    int iterations;
    int eagain;
};

static void *worker(void *arg)
{
    struct worker *w = arg;
    uint8_t *buf = map_pages(16), *dev = malloc(16 * PAGE);
    uint64_t rng = w->seed * 2654435761u + 1;
    for (int it = 0; it < w->iterations; it++) {
        rng = rng * 6364136223846793005u + 1442695040888963407u;
        size_t off = (rng >> 33) % (8 * PAGE), len = 1 + (rng >> 17) % (7 * PAGE);
        struct san_mdl *mdl;
        struct san_sg_list *sg;
        if (san_mdl_lock(w->m, buf, 16 * PAGE, SAN_MEM_READWRITE, &mdl))
            abort();
        bool to_device = it & 1;
        int rc;
        fill(buf, 16 * PAGE, w->seed + it);
        while ((rc = w->a->ops->get_scatter_gather_list(w->a, mdl, off, len, to_device, &sg)) ==
               -EAGAIN) {
            w->eagain++;
            sched_yield();
        }
        if (rc)
            abort();
        if (to_device) {
            uint8_t *p = dev;
            for (uint32_t i = 0; i < sg->nr; p += sg->elem[i].length, i++)
                if (san_dma_read(w->a, sg->elem[i].addr, p, sg->elem[i].length))
                    abort();
            if (memcmp(dev, buf + off, len))
                abort();
        } else {
            memset(dev, (int)it, len);
            const uint8_t *p = dev;
            for (uint32_t i = 0; i < sg->nr; p += sg->elem[i].length, i++)
                if (san_dma_write(w->a, sg->elem[i].addr, p, sg->elem[i].length))
                    abort();
        }
        w->a->ops->put_scatter_gather_list(w->a, sg, to_device);
        if (!to_device && memcmp(dev, buf + off, len))
            abort();
        san_mdl_unlock(mdl);
    }
    free(dev);
    munmap(buf, 16 * PAGE);
    return NULL;
}

static void test_concurrent(void **state)
{
    struct san_machine *m = machine(8 * GIB, true);
    uint32_t nr = 10;
    struct san_dma_adapter *a = adapter(m, 32, true, 8 * PAGE, &nr);
    assert_int_equal(nr, 9);
    struct worker w[2] = {{m, a, 1, 400, 0}, {m, a, 2, 400, 0}};
    pthread_t t[2];
    for (int i = 0; i < 2; i++)
        assert_int_equal(pthread_create(&t[i], NULL, worker, &w[i]), 0);
    for (int i = 0; i < 2; i++)
        assert_int_equal(pthread_join(t[i], NULL), 0);
    struct san_machine_stats s = stats(m);
    assert_int_equal(s.map_registers_in_use, 0);
    assert_int_equal(s.locked_bytes, 0);
    assert_int_equal(s.dma_faults, 0);
    assert_true(s.bounce_bytes > 0);
    a->ops->put_dma_adapter(a);
    san_machine_destroy(m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_direct),
        cmocka_unit_test(test_pieces_and_coalescing),
        cmocka_unit_test(test_bounce_32bit),
        cmocka_unit_test(test_partial_reach),
        cmocka_unit_test(test_no_scatter_gather),
        cmocka_unit_test(test_register_exhaustion),
        cmocka_unit_test(test_no_sg_register_runs),
        cmocka_unit_test(test_many_registers),
        cmocka_unit_test(test_outstanding_lists),
        cmocka_unit_test(test_client_buffer),
        cmocka_unit_test(test_concurrent),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
