/* The registration table of the NIC: registrations of client memory with keys, access rights and
 * reference counts (WSPRegisterMemory / WSPRegisterRdmaMemory / WSPDeregister*Memory).
 *
 * Sits on mdl (san_mdl_lock_for locks the owner's pages and gives them frames; san_mdl_build
 * describes proxy memory, a backed registration), the key tables of
 * common/keytab.c and the shared range tree (each owner's registrations by virtual range).
 * Locking: reg->lock protects the key tables, every set and every entry; it is held across the
 * MDL lock of a new registration (a few system calls), so the NIC never sees a half-made entry.
 * reg->idle is signalled when a use ends, for san_regtab_set_release. */
#include "mr/mr.h"

#include <errno.h>
#include <stdlib.h>
#include <sys/random.h>

#include "common/page.h"
#include "mdl/mdl.h"

struct san_regtab {
    struct san_mutex lock;
    pthread_cond_t idle;
    struct san_machine *m;
    struct san_keytab ltab, rtab;
    uint64_t registrations, locked_bytes;
};

int san_regtab_create(struct san_machine *m, struct san_regtab **out)
{
    struct san_regtab *reg;
    int err;

    if (!m || !out)
        return -EINVAL;
    reg = calloc(1, sizeof(*reg));
    if (!reg)
        return -ENOMEM;
    if ((err = san_mutex_init(&reg->lock)))
        goto fail_free;
    if ((err = -pthread_cond_init(&reg->idle, NULL)))
        goto fail_lock;
    reg->m = m;
    uint32_t salt[2] = {0, 0};
    if (getrandom(salt, sizeof(salt), 0) != sizeof(salt))
        salt[1] = 0x5a5a5; /* still distinct from the lkey table's numbers */
    san_keytab_init(&reg->ltab, salt[0]);
    if (!((salt[0] ^ salt[1]) & (SAN_KEY_SLOTS - 1u)))
        salt[1] ^= 1;
    san_keytab_init(&reg->rtab, salt[1]);
    *out = reg;
    return 0;

fail_lock:
    san_mutex_destroy(&reg->lock);
fail_free:
    free(reg);
    return err;
}

void san_regtab_destroy(struct san_regtab *reg)
{
    if (!reg)
        return;
    san_keytab_destroy(&reg->ltab);
    san_keytab_destroy(&reg->rtab);
    pthread_cond_destroy(&reg->idle);
    san_mutex_destroy(&reg->lock);
    free(reg);
}

void san_regtab_counts(struct san_regtab *reg, uint64_t *registrations, uint64_t *locked_bytes)
{
    san_mutex_lock(&reg->lock);
    *registrations = reg->registrations;
    *locked_bytes = reg->locked_bytes;
    san_mutex_unlock(&reg->lock);
}

void san_regtab_set_init(struct san_regtab_set *set, const struct san_page_owner *owner)
{
    san_range_tree_init(&set->by_va);
    set->owner = owner;
    set->registrations = 0;
    set->locked_bytes = 0;
    set->account_locked = NULL;
}

static inline struct san_regtab_entry *entry_of(struct san_range *r)
{
    return r ? san_container_of(r, struct san_regtab_entry, r) : NULL;
}

/* Frees an entry whose last reference went away and that nothing uses. */
static void destroy_locked(struct san_regtab *reg, struct san_regtab_entry *e)
{
    struct san_regtab_set *set = e->set;

    san_assert_mutex_held(&reg->lock);
    san_range_erase(&set->by_va, &e->r);
    if (e->lkey)
        san_keytab_free(&reg->ltab, e->lkey);
    if (e->rkey)
        san_keytab_free(&reg->rtab, e->rkey);
    set->registrations--;
    set->locked_bytes -= e->pages_bytes;
    if (set->account_locked)
        *set->account_locked -= e->pages_bytes;
    reg->registrations--;
    reg->locked_bytes -= e->pages_bytes;
    san_mdl_unlock(e->mdl);
    if (e->release)
        e->release(e->release_arg);
    free(e);
}

void san_regtab_set_release(struct san_regtab *reg, struct san_regtab_set *set)
{
    san_mutex_lock(&reg->lock);
    for (;;) {
        struct san_regtab_entry *e = entry_of(san_range_first(&set->by_va));
        if (!e)
            break;
        /* Keys go first, so no new operation can start on it; then wait for the ones in flight. */
        if (e->uses) {
            san_keytab_free(&reg->ltab, e->lkey);
            if (e->rkey)
                san_keytab_free(&reg->rtab, e->rkey);
            e->lkey = e->rkey = 0;
            while (e->uses)
                san_mutex_wait(&reg->lock, &reg->idle);
        }
        destroy_locked(reg, e);
    }
    san_mutex_unlock(&reg->lock);
}

/* The owner's registration of exactly [va, va+len) with access and kind, or NULL. Equal starts sit
 * next to each other in the tree: look both ways from one of them. */
static bool same(const struct san_regtab_entry *e, uint64_t len, unsigned access, bool rdma,
                 const struct san_regtab_backing *b)
{
    if (e->r.len != len || e->access != access || e->rdma != rdma || e->mdl->allocated != !!b)
        return false;
    return !b || e->mdl->pieces[0].pa == b->pa;
}

static struct san_regtab_entry *find_same(struct san_regtab_set *set, uint64_t va, uint64_t len,
                                          unsigned access, bool rdma,
                                          const struct san_regtab_backing *b)
{
    struct san_range *at = san_range_floor(&set->by_va, va);
    if (!at || at->start != va)
        return NULL;
    for (struct san_range *r = at; r && r->start == va; r = san_range_prev(r)) {
        struct san_regtab_entry *e = entry_of(r);
        if (same(e, len, access, rdma, b))
            return e;
    }
    for (struct san_range *r = san_range_next(at); r && r->start == va; r = san_range_next(r)) {
        struct san_regtab_entry *e = entry_of(r);
        if (same(e, len, access, rdma, b))
            return e;
    }
    return NULL;
}

int san_regtab_register(struct san_regtab *reg, struct san_regtab_set *set, uint64_t va,
                        uint64_t len, unsigned access, bool rdma,
                        const struct san_regtab_limits *lim, uint32_t *lkey, uint32_t *rkey,
                        uint32_t *refs)
{
    return san_regtab_register_backed(reg, set, va, len, access, rdma, lim, NULL, lkey, rkey, refs);
}

int san_regtab_register_backed(struct san_regtab *reg, struct san_regtab_set *set, uint64_t va,
                               uint64_t len, unsigned access, bool rdma,
                               const struct san_regtab_limits *lim,
                               const struct san_regtab_backing *backing, uint32_t *lkey,
                               uint32_t *rkey, uint32_t *refs)
{
    struct san_regtab_entry *e;
    int err;

    if (!reg || !set || !va || !len || va + len < va ||
        (access != SAN_MEM_READ && access != SAN_MEM_WRITE && access != SAN_MEM_READWRITE) ||
        !lkey || !rkey || !refs)
        return -EINVAL;
    uint64_t first = va & ~(PAGE - 1);
    uint64_t end = va + len;
    if (end > UINT64_MAX - PAGE)
        return -EFAULT;
    /* Proxy memory is resident already: registering it locks nothing. */
    uint64_t pages_bytes = backing ? 0 : ((end + PAGE - 1) & ~(PAGE - 1)) - first;

    san_mutex_lock(&reg->lock);
    e = find_same(set, va, len, access, rdma, backing);
    if (e) {
        if (e->refs == UINT32_MAX) {
            err = -ENOBUFS;
            goto out_unlock;
        }
        /* A registration the cache hid (rkey revoked) is reachable again once registered again. */
        if (e->rdma && !e->rkey && (err = san_keytab_alloc(&reg->rtab, e, &e->rkey)))
            goto out_unlock;
        e->refs++;
        goto done;
    }
    if (lim && lim->registrations && set->registrations >= lim->registrations) {
        err = -ENOBUFS;
        goto out_unlock;
    }
    if (lim && lim->locked_bytes &&
        (pages_bytes > lim->locked_bytes || set->locked_bytes > lim->locked_bytes - pages_bytes)) {
        err = -ENOBUFS;
        goto out_unlock;
    }
    if (lim && lim->account_locked_bytes && set->account_locked &&
        (pages_bytes > lim->account_locked_bytes ||
         *set->account_locked > lim->account_locked_bytes - pages_bytes)) {
        err = -ENOBUFS;
        goto out_unlock;
    }
    e = calloc(1, sizeof(*e));
    if (!e) {
        err = -ENOMEM;
        goto out_unlock;
    }
    e->r.start = va;
    e->r.len = len;
    e->set = set;
    e->access = (uint8_t)access;
    e->rdma = rdma;
    e->refs = 1;
    e->pages_bytes = pages_bytes;
    if ((err = san_keytab_alloc(&reg->ltab, e, &e->lkey)))
        goto fail_free;
    if (rdma && (err = san_keytab_alloc(&reg->rtab, e, &e->rkey)))
        goto fail_lkey;
    err = backing ? san_mdl_build(reg->m, set->owner, va, (size_t)len, access, backing->pa, &e->mdl)
                  : san_mdl_lock_for(reg->m, set->owner, va, (size_t)len, access, &e->mdl);
    if (err)
        goto fail_rkey;
    if (backing) {
        e->release = backing->release;
        e->release_arg = backing->arg;
    }
    san_range_insert(&set->by_va, &e->r);
    set->registrations++;
    set->locked_bytes += pages_bytes;
    if (set->account_locked)
        *set->account_locked += pages_bytes;
    reg->registrations++;
    reg->locked_bytes += pages_bytes;
done:
    *lkey = e->lkey;
    *rkey = e->rkey;
    *refs = e->refs;
    san_mutex_unlock(&reg->lock);
    return 0;

fail_rkey:
    if (e->rkey)
        san_keytab_free(&reg->rtab, e->rkey);
fail_lkey:
    san_keytab_free(&reg->ltab, e->lkey);
fail_free:
    free(e);
out_unlock:
    san_mutex_unlock(&reg->lock);
    return err;
}

/* set's entry named by lkey, or NULL. */
static struct san_regtab_entry *own_locked(struct san_regtab *reg, const struct san_regtab_set *set,
                                           uint32_t lkey)
{
    san_assert_mutex_held(&reg->lock);
    struct san_regtab_entry *e = san_keytab_lookup(&reg->ltab, lkey);
    return e && e->set == set ? e : NULL;
}

int san_regtab_set_remote(struct san_regtab *reg, struct san_regtab_set *set, uint32_t lkey,
                          bool exposed, uint32_t *rkey)
{
    int err = 0;

    if (!reg || !set || !rkey)
        return -EINVAL;
    san_mutex_lock(&reg->lock);
    struct san_regtab_entry *e = own_locked(reg, set, lkey);
    if (!e || !e->rdma) {
        err = -EINVAL;
    } else if (!exposed && e->rkey) {
        san_keytab_free(&reg->rtab, e->rkey);
        e->rkey = 0;
    } else if (exposed && !e->rkey) {
        err = san_keytab_alloc(&reg->rtab, e, &e->rkey);
    }
    if (!err)
        *rkey = e->rkey;
    san_mutex_unlock(&reg->lock);
    return err;
}

int san_regtab_deregister(struct san_regtab *reg, struct san_regtab_set *set, uint32_t lkey,
                          uint32_t *refs)
{
    int err = 0;

    if (!reg || !set || !refs)
        return -EINVAL;
    san_mutex_lock(&reg->lock);
    struct san_regtab_entry *e = own_locked(reg, set, lkey);
    if (!e) {
        err = -EINVAL;
    } else if (e->refs == 1 && e->uses) {
        err = -EBUSY;
    } else if (--e->refs) {
        *refs = e->refs;
    } else {
        destroy_locked(reg, e);
        *refs = 0;
    }
    san_mutex_unlock(&reg->lock);
    return err;
}

int san_regtab_paddr(struct san_regtab *reg, struct san_regtab_set *set, uint32_t lkey,
                     uint64_t offset, san_paddr_t *pa)
{
    int err = -EINVAL;

    if (!reg || !set || !pa)
        return -EINVAL;
    san_mutex_lock(&reg->lock);
    struct san_regtab_entry *e = own_locked(reg, set, lkey);
    if (e && offset < e->r.len) {
        uint64_t at = e->r.start + offset;
        uint64_t page = (at >> SAN_PAGE_SHIFT) - (e->r.start >> SAN_PAGE_SHIFT);
        san_paddr_t base = san_mdl_page(e->mdl, (size_t)page);
        if (base) {
            *pa = base + (at & (PAGE - 1));
            err = 0;
        }
    }
    san_mutex_unlock(&reg->lock);
    return err;
}

struct san_regtab_entry *san_regtab_get_lkey(struct san_regtab *reg,
                                             const struct san_regtab_set *set, uint32_t lkey)
{
    san_mutex_lock(&reg->lock);
    struct san_regtab_entry *e = own_locked(reg, set, lkey);
    if (e)
        e->uses++;
    san_mutex_unlock(&reg->lock);
    return e;
}

struct san_regtab_entry *san_regtab_get_rkey(struct san_regtab *reg, uint32_t rkey)
{
    san_mutex_lock(&reg->lock);
    struct san_regtab_entry *e = san_keytab_lookup(&reg->rtab, rkey);
    if (e)
        e->uses++;
    san_mutex_unlock(&reg->lock);
    return e;
}

void san_regtab_put(struct san_regtab *reg, struct san_regtab_entry *e)
{
    if (!e)
        return;
    san_mutex_lock(&reg->lock);
    if (!--e->uses)
        pthread_cond_broadcast(&reg->idle);
    san_mutex_unlock(&reg->lock);
}
