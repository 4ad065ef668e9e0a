/* Scatter-gather lists: GetScatterGatherList / PutScatterGatherList.
 *
 * A list maps part of a locked MDL for one transfer. The MDL's pieces (runs of contiguous frames)
 * are walked once: a part the device reaches becomes an element directly (adjacent frames
 * coalesce); a part it cannot reach is bounced through map registers, page for page and at the
 * same offset in the page, so the bounce pages mirror the buffer. A device without scatter-gather
 * gets one element: direct when the whole transfer is physically contiguous and reachable, else
 * every page bounced into one run of contiguous registers. Bounced data is copied into the
 * registers at get for a transfer to the device and out of them at put for one from the device.
 *
 * Cost: one allocation per list (header, elements, register runs and copies), O(pieces) work, one
 * memcpy per contiguous bounced run; nothing per page. Sits on mdl (pieces, and copies to an
 * owner's pages) and adapter.c (map registers).
 * Locking: the MDL is immutable; map registers are taken and given back under a->lock inside
 * san_regs_get/put; copies run without locks (the bounce pages belong to the list, the MDL's pages
 * are pinned). */
#include "dma/dma.h"

#include <errno.h>
#include <stdlib.h>

#include "common/page.h"

/* Reachability split point: bytes below it the device reaches (page-aligned). */
static uint64_t reach_end(const struct san_adapter *a)
{
    return a->limit == UINT64_MAX ? UINT64_MAX : (a->limit + 1) & ~(PAGE - 1);
}

/* Walks the physical segments of [o, end) of the MDL's page-aligned range, in order: runs of
 * contiguous frames, split where the device's reach ends. Segments start and end on page
 * boundaries except at the transfer's ends. */
struct seg_iter {
    const struct san_mdl *mdl;
    uint64_t split, o, end;
    size_t pi;
};

static void seg_begin(struct seg_iter *it, const struct san_adapter *a, const struct san_mdl *mdl,
                      uint64_t o, uint64_t end)
{
    it->mdl = mdl;
    it->split = reach_end(a);
    it->o = o;
    it->end = end;
    it->pi = san_mdl_piece_of(mdl, (size_t)(o / PAGE));
}

static bool seg_next(struct seg_iter *it, uint64_t *off, san_paddr_t *pa, uint64_t *n, bool *reach)
{
    if (it->o >= it->end)
        return false;
    const struct san_mdl_piece *p = &it->mdl->pieces[it->pi];
    uint64_t pstart = (uint64_t)p->first_page * PAGE, pend = pstart + (uint64_t)p->nr_pages * PAGE;
    uint64_t stop = pend < it->end ? pend : it->end;
    *off = it->o;
    *pa = p->pa + (it->o - pstart);
    *n = stop - it->o;
    *reach = *pa < it->split;
    if (*reach && it->split - *pa < *n)
        *n = it->split - *pa;
    it->o += *n;
    if (it->o == pend)
        it->pi++;
    return true;
}

/* Appends [addr, addr+len) to the list, coalescing with the last element when adjacent. */
static void emit(struct san_sg_list *sg, san_laddr_t addr, uint64_t len)
{
    if (sg->nr) {
        struct san_sg_element *e = &sg->elem[sg->nr - 1];
        if (e->addr + e->length == addr) {
            e->length += (uint32_t)len;
            return;
        }
    }
    sg->elem[sg->nr++] = (struct san_sg_element){addr, (uint32_t)len};
}

static void add_copy(struct san_sg_priv *s, uint64_t off, uint8_t *host, uint64_t len)
{
    if (s->nr_copies) {
        struct san_bounce_copy *c = &s->copies[s->nr_copies - 1];
        if (c->off + c->len == off && c->host + c->len == host) {
            c->len += len;
            return;
        }
    }
    s->copies[s->nr_copies++] = (struct san_bounce_copy){off, host, (size_t)len};
}

/* Copies every bounced run between the MDL owner's pages and the bounce pages. */
static int bounce_copy(const struct san_sg_priv *s, bool into_bounce)
{
    const struct san_mdl *mdl = s->mdl;
    for (uint32_t i = 0; i < s->nr_copies; i++) {
        const struct san_bounce_copy *c = &s->copies[i];
        int err = into_bounce ? san_mdl_read(mdl, c->off, c->host, c->len)
                              : san_mdl_write(mdl, c->off, c->host, c->len);
        if (err)
            return err;
    }
    atomic_fetch_add(&s->a->m->bounce_bytes, s->bounce_bytes);
    return 0;
}

int san_sg_get(struct san_dma_adapter *pub, struct san_mdl *mdl, size_t offset, size_t len,
               bool to_device, struct san_sg_list **out)
{
    if (!out)
        return -EINVAL;
    *out = NULL;
    if (!pub || !mdl || !len || offset > mdl->len || len > mdl->len - offset)
        return -EINVAL;
    struct san_adapter *a = san_adapter_of(pub);
    if (len > a->max_length)
        return -EINVAL;
    if (!to_device && !(mdl->access & SAN_MEM_WRITE))
        return -EACCES; /* the device would write a buffer locked for reading */

    uint64_t off0 = (mdl->va - mdl->page_va) + offset, end0 = off0 + len;
    uint64_t first_page = off0 / PAGE, pages = (end0 + PAGE - 1) / PAGE - first_page;

    /* Pass 1: how many direct segments, bounced segments and bounced pages. */
    uint64_t direct = 0, bounced = 0, bounce_pages = 0;
    san_paddr_t next_pa = 0;
    bool contiguous = true;
    struct seg_iter it;
    uint64_t off, n;
    san_paddr_t pa;
    bool reach;
    seg_begin(&it, a, mdl, off0, end0);
    while (seg_next(&it, &off, &pa, &n, &reach)) {
        if (direct + bounced && pa != next_pa)
            contiguous = false;
        next_pa = pa + n;
        if (reach) {
            direct++;
        } else {
            bounced++; /* segments end on page boundaries but at the transfer's ends */
            bounce_pages += (off + n - 1) / PAGE - off / PAGE + 1;
        }
    }
    bool bounce_all = !a->scatter_gather && (bounced || !contiguous);
    if (bounce_all)
        bounce_pages = pages; /* direct + bounced still bounds the segments walked */

    size_t runs_room = bounce_pages ? (size_t)bounce_pages : 0;
    size_t elems_room = (size_t)(direct + bounced + runs_room);
    size_t copies_room = (size_t)(bounced + runs_room);
    size_t size = sizeof(struct san_sg_priv) + elems_room * sizeof(struct san_sg_element);
    size = (size + _Alignof(struct san_bounce_copy) - 1) & ~(_Alignof(struct san_bounce_copy) - 1);
    size_t runs_at = size;
    size += runs_room * sizeof(struct san_reg_run);
    size = (size + _Alignof(struct san_bounce_copy) - 1) & ~(_Alignof(struct san_bounce_copy) - 1);
    size_t copies_at = size;
    size += copies_room * sizeof(struct san_bounce_copy);

    struct san_sg_priv *s = malloc(size);
    if (!s)
        return -ENOMEM;
    s->a = a;
    s->mdl = mdl;
    s->to_device = to_device;
    s->nr_regs = (uint32_t)bounce_pages;
    s->nr_runs = 0;
    s->nr_copies = 0;
    s->runs = (struct san_reg_run *)((char *)s + runs_at);
    s->copies = (struct san_bounce_copy *)((char *)s + copies_at);
    s->bounce_bytes = 0;
    s->pub.nr = 0;

    int err = 0;
    if (bounce_pages &&
        (err = san_regs_get(a, (uint32_t)bounce_pages, !a->scatter_gather, s->runs, &s->nr_runs)))
        goto fail_regs;

    /* Pass 2: elements and copies. Bounced page k of the transfer uses the k-th register held. */
    uint32_t run = 0, in_run = 0;
    seg_begin(&it, a, mdl, off0, end0);
    while (seg_next(&it, &off, &pa, &n, &reach)) {
        if (reach && !bounce_all) {
            emit(&s->pub, pa, n);
            continue;
        }
        /* Chunks of consecutive pages on consecutive registers of one run. */
        for (uint64_t o = off, seg_end = off + n; o < seg_end;) {
            uint64_t page = o / PAGE, avail = s->runs[run].nr - in_run;
            uint64_t chunk_end = (page + avail) * PAGE < seg_end ? (page + avail) * PAGE : seg_end;
            uint64_t k = chunk_end - o;
            san_paddr_t b = san_reg_paddr(a, s->runs[run].first + in_run) + o % PAGE;
            emit(&s->pub, b, k);
            add_copy(s, o, san_phys_to_host(a->m, b), k);
            s->bounce_bytes += k;
            in_run += (uint32_t)((chunk_end - 1) / PAGE - page + 1);
            if (in_run == s->runs[run].nr) {
                run++;
                in_run = 0;
            }
            o = chunk_end;
        }
    }

    if (to_device && s->nr_copies && (err = bounce_copy(s, true)))
        goto fail_copy;
    atomic_fetch_add(&mdl->maps, 1);
    atomic_fetch_add(&a->lists, 1);
    *out = &s->pub;
    return 0;

fail_copy:
    san_regs_put(a, s->runs, s->nr_runs);
fail_regs:
    free(s);
    return err;
}

void san_sg_put(struct san_dma_adapter *pub, struct san_sg_list *sg, bool to_device)
{
    if (!pub || !sg)
        return;
    struct san_sg_priv *s = san_container_of(sg, struct san_sg_priv, pub);
    struct san_adapter *a = s->a;

    /* The direction recorded at get decides: copying "back" into a buffer the device was only
     * reading could write memory locked for reading. */
    (void)to_device;
    if (!s->to_device && s->nr_copies)
        bounce_copy(s, false); /* a client gone away: its pages are gone too, nothing to keep */
    if (s->nr_runs)
        san_regs_put(a, s->runs, s->nr_runs);
    atomic_fetch_sub(&s->mdl->maps, 1);
    atomic_fetch_sub(&a->lists, 1);
    free(s);
}
