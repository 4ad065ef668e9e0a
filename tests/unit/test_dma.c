/* dma: the DEVICE_DESCRIPTION rules, map register grants, common buffers, and the emulated bus's
 * checks on every device access (width, frame state, access rights, all-or-nothing). */
#include "dma_test.h"

/* Whether adapter a reaches pa, as the bus decides. */
static bool reaches(struct san_dma_adapter *a, san_paddr_t pa)
{
    uint8_t b;
    return san_dma_read(a, pa, &b, 1) == 0;
}

static void test_description_rules(void **state)
{
    struct san_machine *m = machine(8 * GIB, false);
    struct san_device_description d;
    struct san_dma_adapter *a = (struct san_dma_adapter *)1;
    uint32_t n = 0;
    void *hi, *mid, *lo;
    san_paddr_t pa_hi, pa_mid, pa_lo;

    /* Memory at the top (above 8 GiB), between 4 and 8 GiB, and below 4 GiB. */
    assert_int_equal(san_alloc_contiguous(m, PAGE, 0, UINT64_MAX, 0, SAN_CACHED, &hi), 0);
    assert_int_equal(san_alloc_contiguous(m, PAGE, 4 * GIB, 8 * GIB - 1, 0, SAN_CACHED, &mid), 0);
    assert_int_equal(san_alloc_contiguous(m, PAGE, 0, 4 * GIB - 1, 0, SAN_CACHED, &lo), 0);
    assert_int_equal(san_get_physical_address(m, hi, &pa_hi), 0);
    assert_int_equal(san_get_physical_address(m, mid, &pa_mid), 0);
    assert_int_equal(san_get_physical_address(m, lo, &pa_lo), 0);
    assert_true(pa_hi >= 8 * GIB);

    memset(&d, 0, sizeof(d));
    d.master = d.scatter_gather = true;
    d.max_length = 64 * KIB;
    d.version = 4;
    assert_int_equal(san_get_dma_adapter(m, &d, &n, &a), -EINVAL);
    assert_null(a);
    d.version = UINT32_MAX;
    assert_int_equal(san_get_dma_adapter(m, &d, &n, &a), -EINVAL);
    d.version = 3;
    d.dma_address_width = 0;
    assert_int_equal(san_get_dma_adapter(m, &d, &n, &a), -EINVAL);
    d.dma_address_width = 65;
    assert_int_equal(san_get_dma_adapter(m, &d, &n, &a), -EINVAL);
    d.dma_address_width = 64;
    d.max_length = 0; /* accepted: common buffers and bus accesses only */
    assert_int_equal(san_get_dma_adapter(m, &d, &n, &a), 0);
    assert_int_equal(n, 1);
    san_laddr_t l0;
    void *v0;
    assert_int_equal(a->ops->allocate_common_buffer(a, PAGE, &l0, true, &v0), 0);
    assert_int_equal(san_dma_write(a, l0, "x", 1), 0);
    assert_int_equal(a->ops->free_common_buffer(a, PAGE, l0, v0, true), 0);
    a->ops->put_dma_adapter(a);
    a = (struct san_dma_adapter *)1;
    d.max_length = 64 * KIB;
    assert_int_equal(san_get_dma_adapter(NULL, &d, &n, &a), -EINVAL);
    assert_int_equal(san_get_dma_adapter(m, NULL, &n, &a), -EINVAL);
    assert_int_equal(san_get_dma_adapter(m, &d, &n, NULL), -EINVAL);

    struct {
        uint32_t version;
        bool dma32, dma64;
        uint32_t width; /* version 3 */
        bool hi, mid;   /* reaches */
    } cases[] = {
        {0, false, true, 0, true, true},    {1, false, true, 0, true, true},
        {2, true, true, 0, true, true}, /* dma64 wins over dma32 */
        {2, true, false, 0, false, false},  {0, false, false, 0, false, false}, /* 32-bit master */
        {3, false, true, 32, false, false}, /* version 3: the width, not the flags */
        {3, false, false, 33, false, true}, {3, false, false, 64, true, true},
        {3, true, false, 40, true, true},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        memset(&d, 0, sizeof(d));
        d.master = d.scatter_gather = true;
        d.max_length = 64 * KIB;
        d.version = cases[i].version;
        d.dma32 = cases[i].dma32;
        d.dma64 = cases[i].dma64;
        d.dma_address_width = cases[i].width;
        n = 0;
        assert_int_equal(san_get_dma_adapter(m, &d, &n, &a), 0);
        assert_int_equal(a->version, cases[i].version);
        assert_non_null(a->ops);
        assert_int_equal(n, 17);
        assert_int_equal(reaches(a, pa_hi), cases[i].hi);
        assert_int_equal(reaches(a, pa_mid), cases[i].mid);
        assert_true(reaches(a, pa_lo));
        a->ops->put_dma_adapter(a);
    }
    /* A width below a page reaches no RAM: no map registers, no common buffer. */
    a = adapter(m, 12, true, 64 * KIB, &n);
    assert_int_equal(n, 0);
    assert_false(reaches(a, pa_lo));
    san_laddr_t l;
    void *va;
    assert_int_equal(a->ops->allocate_common_buffer(a, PAGE, &l, true, &va), -ENOMEM);
    a->ops->put_dma_adapter(a);
    a = adapter(m, 1, true, 64 * KIB, &n);
    assert_int_equal(n, 0);
    a->ops->put_dma_adapter(a);

    assert_int_equal(san_free_contiguous(m, hi, PAGE, SAN_CACHED), 0);
    assert_int_equal(san_free_contiguous(m, mid, PAGE, SAN_CACHED), 0);
    assert_int_equal(san_free_contiguous(m, lo, PAGE, SAN_CACHED), 0);
    san_machine_destroy(m);
}

static void test_map_register_grants(void **state)
{
    struct san_machine *m = machine(8 * GIB, true);
    struct san_machine_stats s0 = stats(m);
    uint32_t n;

    struct {
        uint32_t max_length, want, granted;
    } cases[] = {
        {64 * KIB, 0, 17},
        {64 * KIB, 5, 5},
        {64 * KIB, 1000, 17},
        {1, 0, 2},
        {PAGE, 0, 2},
        {PAGE + 1, 0, 3},
        {MIB, 0, 257},
        {UINT32_MAX, 1, 1},
        {UINT32_MAX, 0, SAN_DMA_MAX_MAP_REGISTERS}, /* capped: 64 MiB of bounce pages */
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        n = cases[i].want;
        struct san_dma_adapter *a = adapter(m, 32, true, cases[i].max_length, &n);
        assert_int_equal(n, cases[i].granted);
        /* Bounce pages are low memory, even on a NOLOWMEM machine, and reserved now. */
        struct san_machine_stats s = stats(m);
        assert_int_equal(s0.low_free_bytes - s.low_free_bytes, (uint64_t)n * PAGE);
        assert_int_equal(s.map_registers_in_use, 0);
        struct san_adapter *ad = san_adapter_of(a);
        assert_int_equal(ad->nr_regs, n);
        for (uint32_t r = 0; r < n; r++) {
            struct san_frames *f = san_phys_frames_at(m, san_reg_paddr(ad, r));
            assert_non_null(f);
            assert_int_equal(f->kind, SAN_FRAMES_BOUNCE);
            assert_ptr_equal(f->tag, ad);
            assert_true(san_reg_paddr(ad, r) < 4 * GIB);
        }
        a->ops->put_dma_adapter(a);
        s = stats(m);
        assert_int_equal(s.free_bytes, s0.free_bytes);
        assert_int_equal(s.low_free_bytes, s0.low_free_bytes);
    }
    /* NULL: as many as max_length needs, not reported. */
    struct san_device_description d = {.version = 0, .master = true, .max_length = PAGE};
    struct san_dma_adapter *a;
    assert_int_equal(san_get_dma_adapter(m, &d, NULL, &a), 0);
    assert_int_equal(san_adapter_of(a)->nr_regs, 2);
    a->ops->put_dma_adapter(a);
    /* A 64-bit adapter's registers follow NOLOWMEM: high memory. */
    n = 0;
    a = adapter(m, 64, true, 64 * KIB, &n);
    assert_int_equal(n, 17);
    assert_int_equal(stats(m).low_free_bytes, s0.low_free_bytes);
    a->ops->put_dma_adapter(a);
    uint64_t dirty = 1;
    assert_int_equal(san_machine_check_lowmem(m, &dirty), 0);
    assert_int_equal(dirty, 0);
    san_machine_destroy(m);

    /* Little low memory: granted fewer, in pieces when it is fragmented. */
    m = small_machine(12, 64, true);
    void *hole;
    assert_int_equal(san_alloc_contiguous(m, PAGE, 0, 4 * GIB - 1, 0, SAN_CACHED, &hole), 0);
    n = 0;
    a = adapter(m, 32, true, 64 * KIB, &n);
    assert_int_equal(n, 11);
    assert_int_equal(san_adapter_of(a)->nr_pieces, 1); /* 11 pages in one run below the hole */
    a->ops->put_dma_adapter(a);
    assert_int_equal(san_free_contiguous(m, hole, PAGE, SAN_CACHED), 0);
    void *mid;
    assert_int_equal(
        san_alloc_contiguous(m, PAGE, MIB + 5 * PAGE, MIB + 6 * PAGE - 1, 0, SAN_CACHED, &mid), 0);
    a = adapter(m, 32, true, 64 * KIB, &n);
    assert_int_equal(n, 11);
    assert_int_equal(san_adapter_of(a)->nr_pieces, 2);
    assert_int_equal(san_adapter_of(a)->max_run, 6);
    assert_int_equal(san_reg_paddr(san_adapter_of(a), 0), MIB + 6 * PAGE);
    assert_int_equal(san_reg_paddr(san_adapter_of(a), 6), MIB);
    a->ops->put_dma_adapter(a);
    assert_int_equal(san_free_contiguous(m, mid, PAGE, SAN_CACHED), 0);
    san_machine_destroy(m);
}

static void test_common_buffers(void **state)
{
    struct san_machine *m = machine(8 * GIB, true);
    struct san_machine_stats s0 = stats(m);
    struct san_dma_adapter *a32 = adapter(m, 32, true, 64 * KIB, NULL);
    struct san_dma_adapter *a64 = adapter(m, 64, true, 64 * KIB, NULL);
    san_laddr_t l32, l64, l;
    void *v32, *v64, *v;

    /* A 32-bit adapter on a NOLOWMEM host gets low memory; a 64-bit one the highest. */
    assert_int_equal(a32->ops->allocate_common_buffer(a32, 5000, &l32, false, &v32), 0);
    assert_true(l32 + 2 * PAGE <= 4 * GIB);
    assert_int_equal(l32 % PAGE, 0);
    assert_int_equal(a64->ops->allocate_common_buffer(a64, 3 * PAGE, &l64, true, &v64), 0);
    assert_true(l64 >= 8 * GIB);
    san_paddr_t pa;
    assert_int_equal(san_get_physical_address(m, v32, &pa), 0);
    assert_int_equal(pa, l32); /* logical == physical */
    assert_int_equal(san_get_physical_address(m, (uint8_t *)v64 + 2 * PAGE + 5, &pa), 0);
    assert_int_equal(pa, l64 + 2 * PAGE + 5);
    struct san_machine_stats s = stats(m);
    assert_int_equal(s.allocations, 2);
    assert_int_equal(s.allocated_bytes, 5 * PAGE);
    struct san_frames *f = san_phys_frames_at(m, l32);
    assert_int_equal(f->kind, SAN_FRAMES_COMMON);
    assert_ptr_equal(f->tag, san_adapter_of(a32));

    /* CPU and device see the same bytes, both ways, whole pages. */
    uint8_t buf[2 * PAGE], back[2 * PAGE];
    fill(v32, 2 * PAGE, 1);
    assert_int_equal(san_dma_read(a32, l32, back, 2 * PAGE), 0);
    assert_true(filled(back, 2 * PAGE, 1));
    fill(buf, 2 * PAGE, 2);
    assert_int_equal(san_dma_write(a32, l32, buf, 2 * PAGE), 0);
    assert_true(filled(v32, 2 * PAGE, 2));
    /* The 32-bit device cannot reach the 64-bit adapter's buffer. */
    assert_int_equal(san_dma_write(a32, l64, buf, 1), -EFAULT);

    /* Free must match exactly; nothing is freed otherwise. */
    assert_int_equal(a32->ops->free_common_buffer(a32, 3 * PAGE, l32, v32, false), -EINVAL);
    assert_int_equal(a32->ops->free_common_buffer(a32, 2 * PAGE, l32, v32, false),
                     -EINVAL); /* same pages, not the bytes asked */
    assert_int_equal(a32->ops->free_common_buffer(a32, 5000, l32 + PAGE, v32, false), -EINVAL);
    assert_int_equal(a32->ops->free_common_buffer(a32, 5000, l32, (uint8_t *)v32 + 1, false),
                     -EINVAL);
    assert_int_equal(a32->ops->free_common_buffer(a32, 5000, l32, v32, true), -EINVAL);
    assert_int_equal(a64->ops->free_common_buffer(a64, 5000, l32, v32, false), -EINVAL);
    assert_int_equal(a32->ops->free_common_buffer(a32, 0, l32, v32, false), -EINVAL);
    assert_int_equal(a32->ops->free_common_buffer(a32, PAGE, l64, v64, true), -EINVAL);
    assert_int_equal(san_free_contiguous(m, v32, 5000, SAN_NONCACHED), -EINVAL); /* not CONTIG */
    assert_int_equal(stats(m).allocations, 2);
    assert_int_equal(san_dma_read(a32, l32, back, 2 * PAGE), 0);
    assert_int_equal(a32->ops->free_common_buffer(a32, 5000, l32, v32, false), 0);
    assert_int_equal(a32->ops->free_common_buffer(a32, 5000, l32, v32, false), -EINVAL);
    assert_int_equal(san_dma_read(a32, l32, back, 1), -EFAULT); /* freed: the bus refuses */
    assert_int_equal(a64->ops->free_common_buffer(a64, 3 * PAGE, l64, v64, true), 0);

    /* Bad arguments, and low memory running out. */
    assert_int_equal(a32->ops->allocate_common_buffer(a32, 0, &l, true, &v), -EINVAL);
    assert_int_equal(a32->ops->allocate_common_buffer(a32, PAGE, NULL, true, &v), -EINVAL);
    assert_int_equal(a32->ops->allocate_common_buffer(a32, PAGE, &l, true, NULL), -EINVAL);
    assert_int_equal(a32->ops->allocate_common_buffer(a32, UINT32_MAX, &l, true, &v), -ENOMEM);

    a32->ops->put_dma_adapter(a32);
    a64->ops->put_dma_adapter(a64);
    s = stats(m);
    assert_int_equal(s.free_bytes, s0.free_bytes);
    assert_int_equal(s.allocations, 0);
    uint64_t dirty = 1;
    assert_int_equal(san_machine_check_lowmem(m, &dirty), 0);
    assert_int_equal(dirty, 0); /* the device's writes were scrubbed at free */
    san_machine_destroy(m);
}

static void test_bus_faults(void **state)
{
    struct san_machine *m = machine(8 * GIB, true);
    struct san_dma_adapter *a64 = adapter(m, 64, true, 64 * KIB, NULL);
    struct san_dma_adapter *a32 = adapter(m, 32, true, 64 * KIB, NULL);
    uint8_t buf[3 * PAGE], back[3 * PAGE];
    void *x, *y, *z;
    san_paddr_t px, py, pz;
    uint64_t faults = stats(m).dma_faults;

    /* Three adjacent allocations, highest first: x above y above z. */
    assert_int_equal(san_alloc_contiguous(m, PAGE, 0, UINT64_MAX, 0, SAN_CACHED, &x), 0);
    assert_int_equal(san_alloc_contiguous(m, PAGE, 0, UINT64_MAX, 0, SAN_CACHED, &y), 0);
    assert_int_equal(san_alloc_contiguous(m, PAGE, 0, UINT64_MAX, 0, SAN_CACHED, &z), 0);
    san_get_physical_address(m, x, &px);
    san_get_physical_address(m, y, &py);
    san_get_physical_address(m, z, &pz);
    assert_int_equal(py + PAGE, px);
    assert_int_equal(pz + PAGE, py);

    /* Spanning records: piecewise, one copy each. */
    fill(buf, 3 * PAGE, 3);
    assert_int_equal(san_dma_write(a64, pz + 10, buf, 3 * PAGE - 10), 0);
    assert_int_equal(san_dma_read(a64, pz + 10, back, 3 * PAGE - 10), 0);
    assert_int_equal(memcmp(back, buf, 3 * PAGE - 10), 0);
    assert_int_equal(memcmp((uint8_t *)z + 10, buf, PAGE - 10), 0);
    assert_int_equal(memcmp(y, buf + PAGE - 10, PAGE), 0);
    assert_int_equal(stats(m).dma_faults, faults);

    /* All or nothing: a free frame in the middle refuses the whole write. */
    assert_int_equal(san_free_contiguous(m, y, PAGE, SAN_CACHED), 0);
    memset(buf, 0xee, sizeof(buf));
    uint8_t *yhost = san_phys_to_host(m, py);
    memcpy(back, z, PAGE);
    memcpy(back + PAGE, yhost, PAGE);
    assert_int_equal(san_dma_write(a64, pz, buf, 3 * PAGE), -EFAULT);
    assert_int_equal(stats(m).dma_faults, ++faults);
    assert_int_equal(memcmp(z, back, PAGE), 0);
    assert_int_equal(memcmp(yhost, back + PAGE, PAGE), 0);
    assert_int_equal(san_dma_read(a64, pz, back, 3 * PAGE), -EFAULT);
    assert_int_equal(stats(m).dma_faults, ++faults);
    /* Above x: the 64-bit adapter's idle map registers. */
    assert_int_equal(san_dma_read(a64, px + PAGE - 1, back, 2), -EFAULT);
    assert_int_equal(stats(m).dma_faults, ++faults);
    assert_int_equal(san_dma_read(a64, 0, back, 1), -EFAULT);
    assert_int_equal(stats(m).dma_faults, ++faults);

    /* A physical address truncated to 32 bits lands in free low memory: fault, never a write. */
    assert_int_equal(san_dma_write(a64, px & 0xffffffffu, buf, PAGE), -EFAULT);
    assert_int_equal(san_dma_write(a32, px & 0xffffffffu, buf, PAGE), -EFAULT);
    assert_int_equal(stats(m).dma_faults, faults += 2);
    uint64_t dirty = 1;
    assert_int_equal(san_machine_check_lowmem(m, &dirty), 0);
    assert_int_equal(dirty, 0);

    /* Beyond the adapter's width, though allocated; and straddling the width. */
    assert_int_equal(san_dma_read(a32, px, back, 1), -EFAULT);
    assert_int_equal(san_dma_read(a32, 4 * GIB - 1, back, 2), -EFAULT);
    assert_int_equal(san_dma_read(a64, UINT64_MAX, back, 2), -EFAULT);
    assert_int_equal(stats(m).dma_faults, faults += 3);
    struct san_dma_adapter *a33 = adapter(m, 33, true, PAGE, NULL);
    assert_int_equal(san_dma_read(a33, 8 * GIB, back, 1), -EFAULT);
    assert_int_equal(stats(m).dma_faults, faults += 1);
    a33->ops->put_dma_adapter(a33);

    /* Zero bytes move nothing and check nothing; bad pointers are -EINVAL, not faults. */
    assert_int_equal(san_dma_read(a64, 0, back, 0), 0);
    assert_int_equal(san_dma_read(a64, px, NULL, 1), -EINVAL);
    assert_int_equal(san_dma_read(NULL, px, back, 1), -EINVAL);
    assert_int_equal(stats(m).dma_faults, faults);

    /* Locked memory: read always; write only with SAN_MEM_WRITE (-EACCES, counted). */
    uint8_t *ubuf = map_pages(2);
    fill(ubuf, 2 * PAGE, 4);
    struct san_mdl *ro, *rw;
    assert_int_equal(san_mdl_lock(m, ubuf, PAGE, SAN_MEM_READ, &ro), 0);
    assert_int_equal(san_mdl_lock(m, ubuf + PAGE, PAGE, SAN_MEM_WRITE, &rw), 0);
    assert_int_equal(san_dma_read(a64, san_mdl_page(ro, 0), back, PAGE), 0);
    assert_int_equal(memcmp(back, ubuf, PAGE), 0);
    assert_int_equal(san_dma_write(a64, san_mdl_page(ro, 0), buf, 16), -EACCES);
    assert_int_equal(stats(m).dma_faults, ++faults);
    assert_true(filled(ubuf, 2 * PAGE, 4));
    assert_int_equal(san_dma_write(a64, san_mdl_page(rw, 0) + 8, buf, 16), 0);
    assert_int_equal(memcmp(ubuf + PAGE + 8, buf, 16), 0);
    assert_int_equal(san_dma_read(a64, san_mdl_page(rw, 0), back, PAGE),
                     0); /* write-only: read ok */
    san_paddr_t gone = san_mdl_page(rw, 0);
    san_mdl_unlock(rw);
    assert_int_equal(san_dma_write(a64, gone, buf, 16), -EFAULT); /* unlocked: frame is free */
    assert_int_equal(stats(m).dma_faults, ++faults);
    san_mdl_unlock(ro);
    munmap(ubuf, 2 * PAGE);

    /* Map registers not in use are not DMA targets. */
    san_paddr_t reg = san_reg_paddr(san_adapter_of(a32), 0);
    assert_int_equal(san_dma_write(a32, reg, buf, 1), -EFAULT);
    assert_int_equal(san_dma_read(a32, reg, back, 1), -EFAULT);
    assert_int_equal(stats(m).dma_faults, faults += 2);

    assert_int_equal(san_free_contiguous(m, x, PAGE, SAN_CACHED), 0);
    assert_int_equal(san_free_contiguous(m, z, PAGE, SAN_CACHED), 0);
    a32->ops->put_dma_adapter(a32);
    a64->ops->put_dma_adapter(a64);
    san_machine_destroy(m);
}

/* put_dma_adapter with a common buffer outstanding: logged, nothing freed. */
static void test_put_adapter_outstanding(void **state)
{
    struct san_machine *m = machine(8 * GIB, true);
    struct san_machine_stats s0 = stats(m);
    struct san_dma_adapter *a = adapter(m, 32, true, 64 * KIB, NULL);
    san_laddr_t l;
    void *va;
    assert_int_equal(a->ops->allocate_common_buffer(a, PAGE, &l, true, &va), 0);
    struct san_machine_stats s1 = stats(m);
    struct capture c;
    char log[512];
    capture_begin(&c);
    a->ops->put_dma_adapter(a);
    capture_end(&c, log, sizeof(log));
    assert_non_null(strstr(log, "1 common buffer(s)"));
    assert_non_null(strstr(log, "leaking"));
    struct san_machine_stats s = stats(m);
    assert_int_equal(s.free_bytes, s1.free_bytes); /* buffer and bounce pages kept */
    assert_int_equal(s.allocations, 1);
    assert_true(s.free_bytes < s0.free_bytes);
    *(volatile uint8_t *)va = 1; /* still mapped and usable */
    san_machine_destroy(m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_description_rules),       cmocka_unit_test(test_map_register_grants),
        cmocka_unit_test(test_common_buffers),          cmocka_unit_test(test_bus_faults),
        cmocka_unit_test(test_put_adapter_outstanding),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
