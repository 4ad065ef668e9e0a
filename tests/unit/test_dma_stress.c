/* Deterministic-seed stress of mdl + dma against a model: random locks of overlapping parts of an
 * arena (in fragmented memory, so MDLs come in many pieces), random scatter-gather lists through
 * adapters of several widths, with and without scatter-gather, held concurrently so map registers
 * run short; every list is checked (length, reach, element contents as the device reads them) and
 * every transfer from the device must land exactly in its byte range at put and nowhere else. The
 * machine returns to its idle figures and low memory stays clean. */
#include "dma_test.h"

#define ARENA      96 /* pages */
#define MAX_MDLS   8
#define MAX_LISTS  4
#define ITERATIONS 20000

static uint64_t rng = 0x9e3779b97f4a7c15u;
static uint64_t rnd(uint64_t n)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return n ? rng % n : 0;
}

struct held {
    struct san_dma_adapter *a;
    struct san_sg_list *sg;
    struct san_mdl *mdl;
    size_t off, len; /* arena bytes the transfer covers */
    bool to_device;
    uint8_t *data; /* what the device wrote (from-device lists) */
};

static bool overlaps(size_t a, size_t alen, size_t b, size_t blen)
{
    return a < b + blen && b < a + alen;
}

/* The arena equals the model, except where a from-device list is still outstanding (a direct one
 * has written there already, a bounced one has not yet). */
static void check_arena(const uint8_t *arena, const uint8_t *model, const struct held *lists,
                        uint8_t *tmp)
{
    memcpy(tmp, arena, ARENA * PAGE);
    for (unsigned i = 0; i < MAX_LISTS; i++)
        if (lists[i].sg && !lists[i].to_device)
            memcpy(tmp + lists[i].off, model + lists[i].off, lists[i].len);
    assert_int_equal(memcmp(tmp, model, ARENA * PAGE), 0);
}

static void run(bool nolowmem, uint64_t seed)
{
    rng = seed;
    struct san_machine *m = machine(8 * GIB, nolowmem);
    struct san_machine_stats idle = stats(m);

    /* Adapters: 32-bit SG, 32-bit without SG, 33-bit SG, 64-bit SG, 64-bit without SG. */
    struct {
        unsigned width;
        bool sg;
    } kinds[] = {{32, true}, {32, false}, {33, true}, {64, true}, {64, false}};
    enum { NR_ADAPTERS = sizeof(kinds) / sizeof(kinds[0]) };
    struct san_dma_adapter *ad[NR_ADAPTERS];
    uint64_t limit[NR_ADAPTERS];
    for (int i = 0; i < NR_ADAPTERS; i++) {
        uint32_t nr = 12; /* fewer than 16 pages need: exhaustion happens */
        ad[i] = adapter(m, kinds[i].width, kinds[i].sg, 16 * PAGE, &nr);
        assert_int_equal(nr, 12);
        limit[i] = kinds[i].width == 64 ? UINT64_MAX : (UINT64_C(1) << kinds[i].width) - 1;
    }

    /* Fragment memory: many small allocations, every other one freed. */
    enum { FRAG = 400 };
    void *frag[FRAG];
    for (int i = 0; i < FRAG; i++)
        assert_int_equal(
            san_alloc_contiguous(m, (1 + rnd(3)) * PAGE, 0, UINT64_MAX, 0, SAN_CACHED, &frag[i]),
            0);
    for (int i = 0; i < FRAG; i += 2) {
        san_paddr_t pa;
        assert_int_equal(san_get_physical_address(m, frag[i], &pa), 0);
        struct san_frames *f = san_phys_frames_at(m, pa);
        assert_int_equal(san_free_contiguous(m, frag[i], f->r.len, SAN_CACHED), 0);
        frag[i] = NULL;
    }
    struct san_machine_stats fragmented = stats(m);

    uint8_t *arena = map_pages(ARENA), *model = malloc(ARENA * PAGE), *dev = malloc(16 * PAGE);
    uint8_t *tmp = malloc(ARENA * PAGE);
    assert_non_null(model);
    assert_non_null(tmp);
    assert_non_null(dev);
    fill(arena, ARENA * PAGE, (unsigned)seed);
    memcpy(model, arena, ARENA * PAGE);

    struct san_mdl *mdls[MAX_MDLS] = {0};
    size_t mdl_off[MAX_MDLS];
    unsigned mdl_maps[MAX_MDLS] = {0};
    struct held lists[MAX_LISTS] = {0};
    unsigned eagain = 0, bounced_lists = 0, multi_piece = 0, nr_lists = 0, nr_locks = 0;

    for (int it = 0; it < ITERATIONS; it++) {
        unsigned op = (unsigned)rnd(10);
        if (op < 2) { /* lock */
            unsigned k = (unsigned)rnd(MAX_MDLS);
            if (mdls[k])
                continue;
            size_t off = rnd(ARENA * PAGE - 1), len = 1 + rnd(ARENA * PAGE - off);
            if (len > 40 * PAGE)
                len = 1 + rnd(40 * PAGE);
            unsigned access = 1 + (unsigned)rnd(3);
            assert_int_equal(san_mdl_lock(m, arena + off, len, access, &mdls[k]), 0);
            mdl_off[k] = off;
            nr_locks++;
            if (mdls[k]->nr_pieces > 1)
                multi_piece++;
        } else if (op < 3) { /* unlock one no list maps */
            unsigned k = (unsigned)rnd(MAX_MDLS);
            if (!mdls[k] || mdl_maps[k])
                continue;
            san_mdl_unlock(mdls[k]);
            mdls[k] = NULL;
        } else if (op < 7) { /* get a list */
            unsigned k = (unsigned)rnd(MAX_MDLS), slot = (unsigned)rnd(MAX_LISTS);
            if (!mdls[k] || lists[slot].sg)
                continue;
            unsigned ai = (unsigned)rnd(NR_ADAPTERS);
            struct san_dma_adapter *a = ad[ai];
            size_t mlen = san_mdl_len(mdls[k]);
            size_t off = rnd(mlen), len = 1 + rnd(mlen - off);
            if (len > 16 * PAGE)
                len = 1 + rnd(16 * PAGE);
            bool to_device = rnd(2);
            /* A transfer from the device never overlaps another outstanding transfer (the
             * outcome would depend on timing, as on real hardware). */
            size_t aoff = mdl_off[k] + off;
            bool clash = false;
            for (unsigned i = 0; i < MAX_LISTS; i++)
                if (lists[i].sg && (!to_device || !lists[i].to_device) &&
                    overlaps(aoff, len, lists[i].off, lists[i].len))
                    clash = true;
            if (clash)
                continue;
            struct san_machine_stats before = stats(m);
            struct san_sg_list *sg = (struct san_sg_list *)1;
            int rc = a->ops->get_scatter_gather_list(a, mdls[k], off, len, to_device, &sg);
            if (!to_device && !(san_mdl_access(mdls[k]) & SAN_MEM_WRITE)) {
                assert_int_equal(rc, -EACCES);
                continue;
            }
            if (rc == -EAGAIN || rc == -ENOMEM) {
                assert_null(sg);
                struct san_machine_stats after = stats(m);
                assert_int_equal(after.map_registers_in_use, before.map_registers_in_use);
                assert_int_equal(after.bounce_bytes, before.bounce_bytes);
                eagain++;
                continue;
            }
            assert_int_equal(rc, 0);
            assert_int_equal(list_bytes(sg), len);
            assert_reachable(sg, limit[ai]);
            if (!kinds[ai].sg)
                assert_int_equal(sg->nr, 1);
            nr_lists++;
            if (stats(m).map_registers_in_use > before.map_registers_in_use)
                bounced_lists++;
            struct held *h = &lists[slot];
            *h = (struct held){a, sg, mdls[k], aoff, len, to_device, NULL};
            mdl_maps[k]++;
            if (to_device) {
                device_read_list(a, sg, dev);
                assert_int_equal(memcmp(dev, model + aoff, len), 0);
            } else {
                h->data = malloc(len);
                assert_non_null(h->data);
                for (size_t i = 0; i < len; i++)
                    h->data[i] = (uint8_t)rnd(256);
                device_write_list(a, sg, h->data);
                memcpy(model + aoff, h->data, len); /* where it ends up, by put at the latest */
            }
        } else { /* put a list */
            unsigned slot = (unsigned)rnd(MAX_LISTS);
            struct held *h = &lists[slot];
            if (!h->sg)
                continue;
            h->a->ops->put_scatter_gather_list(h->a, h->sg, h->to_device);
            free(h->data);
            for (unsigned k = 0; k < MAX_MDLS; k++)
                if (mdls[k] == h->mdl) {
                    mdl_maps[k]--;
                    break;
                }
            h->sg = NULL;
            /* Every byte of the arena is what the model says: nothing landed elsewhere. */
            check_arena(arena, model, lists, tmp);
        }
    }
    for (unsigned slot = 0; slot < MAX_LISTS; slot++) {
        struct held *h = &lists[slot];
        if (!h->sg)
            continue;
        h->a->ops->put_scatter_gather_list(h->a, h->sg, h->to_device);
        free(h->data);
        h->sg = NULL;
    }
    assert_int_equal(memcmp(arena, model, ARENA * PAGE), 0);
    for (unsigned k = 0; k < MAX_MDLS; k++)
        san_mdl_unlock(mdls[k]);
    print_message("seed %#llx: %u locks (%u in several pieces), %u lists (%u bounced), %u refused "
                  "for map registers\n",
                  (unsigned long long)seed, nr_locks, multi_piece, nr_lists, bounced_lists, eagain);
    assert_true(eagain > 0);
    assert_true(bounced_lists > 0);
    assert_true(multi_piece > 0);
    struct san_machine_stats s = stats(m);
    assert_int_equal(s.free_bytes, fragmented.free_bytes);
    assert_int_equal(s.map_registers_in_use, 0);
    assert_int_equal(s.locked_bytes, 0);
    assert_int_equal(s.dma_faults, 0);
    for (int i = 0; i < NR_ADAPTERS; i++)
        ad[i]->ops->put_dma_adapter(ad[i]);
    for (int i = 0; i < FRAG; i++)
        if (frag[i]) {
            san_paddr_t pa;
            assert_int_equal(san_get_physical_address(m, frag[i], &pa), 0);
            struct san_frames *f = san_phys_frames_at(m, pa);
            assert_int_equal(san_free_contiguous(m, frag[i], f->r.len, SAN_CACHED), 0);
        }
    s = stats(m);
    assert_int_equal(s.free_bytes, idle.free_bytes);
    assert_int_equal(s.low_free_bytes, idle.low_free_bytes);
    if (nolowmem) {
        uint64_t dirty = 1;
        assert_int_equal(san_machine_check_lowmem(m, &dirty), 0);
        assert_int_equal(dirty, 0);
    }
    free(model);
    free(tmp);
    free(dev);
    munmap(arena, ARENA * PAGE);
    san_machine_destroy(m);
}

static void test_stress_nolowmem(void **state)
{
    run(true, 0x5eed0001);
    run(true, 0x5eed0002);
}

static void test_stress_lowmem_allowed(void **state)
{
    run(false, 0x5eed0003);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_stress_nolowmem),
        cmocka_unit_test(test_stress_lowmem_allowed),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
