/* Helpers shared by the dma unit tests (included by each test file; not a test itself). */
#ifndef SAN_TESTS_DMA_TEST_H
#define SAN_TESTS_DMA_TEST_H

#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cmocka.h>

#include <san/san.h>

#include "common/page.h"
#include "dma/dma.h"
#include "mdl/mdl.h"
#include "phys/machine.h"

#define GIB (UINT64_C(1) << 30)
#define MIB (UINT64_C(1) << 20)
#define KIB (UINT64_C(1) << 10)

static inline struct san_machine *machine(uint64_t ram, bool nolowmem)
{
    struct san_machine *m;
    struct san_machine_config cfg = {.ram_size = ram, .nolowmem = nolowmem};
    assert_int_equal(san_machine_create(&cfg, &m), 0);
    return m;
}

/* A RAM map of low pages at 1 MiB and high pages at 4 GiB. */
static inline struct san_machine *small_machine(uint64_t low_pages, uint64_t high_pages,
                                                bool nolowmem)
{
    struct san_ram_range ram[2] = {{MIB, low_pages * PAGE}, {4 * GIB, high_pages * PAGE}};
    struct san_machine_config cfg = {.ram = ram, .nr_ram = 2, .nolowmem = nolowmem};
    struct san_machine *m;
    assert_int_equal(san_machine_create(&cfg, &m), 0);
    return m;
}

static inline struct san_machine_stats stats(struct san_machine *m)
{
    struct san_machine_stats s;
    assert_int_equal(san_machine_stats(m, &s), 0);
    return s;
}

static inline void *map_pages(size_t n)
{
    void *p = mmap(NULL, n * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    assert_true(p != MAP_FAILED);
    return p;
}

/* An adapter: width 32 or 64 through the version 0-2 flags, anything else through version 3. */
static inline struct san_dma_adapter *adapter(struct san_machine *m, unsigned width, bool sg,
                                              uint32_t max_length, uint32_t *nr_regs)
{
    struct san_device_description d;
    memset(&d, 0, sizeof(d));
    d.master = true;
    d.scatter_gather = sg;
    d.max_length = max_length;
    if (width == 32 || width == 64) {
        d.version = 2;
        d.dma32 = width == 32;
        d.dma64 = width == 64;
    } else {
        d.version = 3;
        d.dma_address_width = width;
    }
    struct san_dma_adapter *a;
    uint32_t n = 0;
    assert_int_equal(san_get_dma_adapter(m, &d, nr_regs ? nr_regs : &n, &a), 0);
    assert_non_null(a);
    return a;
}

static inline void fill(uint8_t *p, size_t len, unsigned seed)
{
    for (size_t i = 0; i < len; i++)
        p[i] = (uint8_t)(i * 131 + seed * 7 + (i >> 12));
}

static inline bool filled(const uint8_t *p, size_t len, unsigned seed)
{
    for (size_t i = 0; i < len; i++)
        if (p[i] != (uint8_t)(i * 131 + seed * 7 + (i >> 12)))
            return false;
    return true;
}

/* The device reads a whole list into dst / writes src through it. */
static inline void device_read_list(struct san_dma_adapter *a, const struct san_sg_list *sg,
                                    uint8_t *dst)
{
    for (uint32_t i = 0; i < sg->nr; i++) {
        assert_int_equal(san_dma_read(a, sg->elem[i].addr, dst, sg->elem[i].length), 0);
        dst += sg->elem[i].length;
    }
}

static inline void device_write_list(struct san_dma_adapter *a, const struct san_sg_list *sg,
                                     const uint8_t *src)
{
    for (uint32_t i = 0; i < sg->nr; i++) {
        assert_int_equal(san_dma_write(a, sg->elem[i].addr, src, sg->elem[i].length), 0);
        src += sg->elem[i].length;
    }
}

static inline uint64_t list_bytes(const struct san_sg_list *sg)
{
    uint64_t n = 0;
    for (uint32_t i = 0; i < sg->nr; i++)
        n += sg->elem[i].length;
    return n;
}

static inline void assert_reachable(const struct san_sg_list *sg, uint64_t limit)
{
    for (uint32_t i = 0; i < sg->nr; i++) {
        assert_true(sg->elem[i].length > 0);
        assert_true(sg->elem[i].addr + sg->elem[i].length - 1 <= limit);
    }
}

/* Captures what a call writes to stderr. */
struct capture {
    int saved;
    FILE *f;
};
static inline void capture_begin(struct capture *c)
{
    fflush(stderr);
    c->f = tmpfile();
    assert_non_null(c->f);
    c->saved = dup(STDERR_FILENO);
    dup2(fileno(c->f), STDERR_FILENO);
}
static inline char *capture_end(struct capture *c, char *buf, size_t size)
{
    fflush(stderr);
    dup2(c->saved, STDERR_FILENO);
    close(c->saved);
    rewind(c->f);
    size_t n = fread(buf, 1, size - 1, c->f);
    buf[n] = 0;
    fclose(c->f);
    return buf;
}

#endif
