/* The source page's scenario end to end: a SAN NIC on a NOLOWMEM host. A 32-bit NIC gets its
 * common buffer below 4 GiB, an application buffer whose frames all lie above 4 GiB is bounced
 * through map registers, data is right in both directions, the low-memory pattern check stays
 * clean and the statistics show the bounced bytes. A 64-bit NIC does the same directly, with no
 * bounce bytes; a driver that truncates addresses to 32 bits only gets DMA faults. */
#include "dma_test.h"

#define XFER (1024 * 1024)

struct outcome {
    uint64_t bounce_bytes, dma_faults;
};

static struct outcome run_scenario(unsigned width)
{
    struct san_machine *m = machine(8 * GIB, true);
    struct san_machine_stats s0 = stats(m);
    uint32_t nr = 0;
    struct san_dma_adapter *nic = adapter(m, width, true, XFER, &nr);
    uint64_t limit = width == 64 ? UINT64_MAX : (UINT64_C(1) << width) - 1;
    assert_int_equal(nr, XFER / PAGE + 1);

    /* Control messages: a common buffer the NIC reaches, logical == physical. */
    san_laddr_t ctl;
    void *ctl_va;
    assert_int_equal(nic->ops->allocate_common_buffer(nic, 64 * KIB, &ctl, false, &ctl_va), 0);
    if (width == 32)
        assert_true(ctl + 64 * KIB <= 4 * GIB);
    else
        assert_true(ctl >= 4 * GIB); /* NOLOWMEM: a 64-bit NIC leaves low memory alone */
    strcpy(ctl_va, "hello, NIC");
    char msg[16];
    assert_int_equal(san_dma_read(nic, ctl, msg, 11), 0);
    assert_string_equal(msg, "hello, NIC");
    assert_int_equal(san_dma_write(nic, ctl + 32, "hello, host", 12), 0);
    assert_string_equal((char *)ctl_va + 32, "hello, host");

    /* RDMA: the application's buffer, locked; every frame above 4 GiB. */
    uint8_t *app = map_pages(XFER / PAGE), *wire = malloc(XFER);
    assert_non_null(wire);
    struct san_mdl *mdl;
    assert_int_equal(san_mdl_lock(m, app, XFER, SAN_MEM_READWRITE, &mdl), 0);
    for (size_t i = 0; i < san_mdl_page_count(mdl); i++)
        assert_true(san_mdl_page(mdl, i) >= 4 * GIB);

    /* Send: host to device. */
    fill(app, XFER, 30);
    struct san_sg_list *sg;
    assert_int_equal(nic->ops->get_scatter_gather_list(nic, mdl, 0, XFER, true, &sg), 0);
    assert_reachable(sg, limit);
    if (width == 64) {
        assert_int_equal(sg->nr, 1);
        assert_int_equal(sg->elem[0].addr, san_mdl_page(mdl, 0));
    }
    device_read_list(nic, sg, wire);
    nic->ops->put_scatter_gather_list(nic, sg, true);
    assert_true(filled(wire, XFER, 30));

    /* Receive: device to host. */
    fill(wire, XFER, 31);
    assert_int_equal(nic->ops->get_scatter_gather_list(nic, mdl, 0, XFER, false, &sg), 0);
    assert_reachable(sg, limit);
    device_write_list(nic, sg, wire);
    nic->ops->put_scatter_gather_list(nic, sg, false);
    assert_true(filled(app, XFER, 31));

    /* A driver bug: the buffer's address truncated to 32 bits. The bus refuses; nothing lands in
     * low memory. */
    assert_int_equal(san_dma_write(nic, san_mdl_page(mdl, 0) & 0xffffffffu, wire, PAGE), -EFAULT);

    struct san_machine_stats s = stats(m);
    struct outcome out = {s.bounce_bytes, s.dma_faults};
    assert_int_equal(s.map_registers_in_use, 0);
    assert_int_equal(s.locked_bytes, XFER);

    assert_int_equal(nic->ops->free_common_buffer(nic, 64 * KIB, ctl, ctl_va, false), 0);
    san_mdl_unlock(mdl);
    nic->ops->put_dma_adapter(nic);
    s = stats(m);
    assert_int_equal(s.free_bytes, s0.free_bytes);
    assert_int_equal(s.low_free_bytes, s0.low_free_bytes);
    assert_int_equal(s.allocations, 0);
    assert_int_equal(s.locked_bytes, 0);
    uint64_t dirty = 1;
    assert_int_equal(san_machine_check_lowmem(m, &dirty), 0);
    assert_int_equal(dirty, 0);
    free(wire);
    munmap(app, XFER);
    san_machine_destroy(m);
    return out;
}

static void test_32bit_nic_nolowmem(void **state)
{
    struct outcome o = run_scenario(32);
    assert_int_equal(o.bounce_bytes, 2 * XFER); /* every byte, each way */
    assert_int_equal(o.dma_faults, 1);
}

static void test_64bit_nic_direct(void **state)
{
    struct outcome o = run_scenario(64);
    assert_int_equal(o.bounce_bytes, 0);
    assert_int_equal(o.dma_faults, 1);
}

static void test_36bit_nic(void **state)
{
    /* Reaches all of this 8 GiB machine: direct, like the 64-bit NIC. */
    struct outcome o = run_scenario(36);
    assert_int_equal(o.bounce_bytes, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_32bit_nic_nolowmem),
        cmocka_unit_test(test_64bit_nic_direct),
        cmocka_unit_test(test_36bit_nic),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
