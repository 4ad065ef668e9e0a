/* The registration table below the daemon: key generations (a stale key is refused, never
 * aliased, slots retire instead of wrapping; a stale lkey or rkey whose slot now holds another
 * registration names nothing and leaves that registration alone), -EBUSY while an operation uses a
 * registration, per-set limits, and release waiting for uses to drain (checked by what happened
 * before it returned, not only by ASan), and the key table walk in slot order. */
#include "harness.h"

#include <pthread.h>
#include <stdatomic.h>
#include <sys/mman.h>

#include "common/keytab.h"
#include "mr/mr.h"

static void keytab(void)
{
    struct san_keytab t;
    int obj;
    uint32_t key, first = 0;
    enum { N = 3 * SAN_KEY_GEN_MAX };
    static uint32_t keys[N];

    san_keytab_init(&t, 0);
    for (int i = 0; i < N; i++) {
        CHECK_EQ(san_keytab_alloc(&t, &obj, &key), 0);
        CHECK(key != 0);
        CHECK(san_keytab_lookup(&t, key) == &obj);
        if (!i)
            first = key;
        keys[i] = key;
        san_keytab_free(&t, key);
        CHECK(san_keytab_lookup(&t, key) == NULL);
    }
    /* One slot reused until its generation ran out, then retired: no key ever repeats. */
    CHECK(san_key_index(first) == 0);
    CHECK(t.retired >= 2);
    for (int i = 1; i < N; i++)
        CHECK(keys[i] != keys[i - 1]);
    CHECK(san_key_index(keys[SAN_KEY_GEN_MAX - 1]) == 0);
    CHECK(san_key_index(keys[SAN_KEY_GEN_MAX]) != 0);
    /* Keys that were never issued. */
    CHECK(san_keytab_lookup(&t, 0) == NULL);
    CHECK(san_keytab_lookup(&t, 0xfffff) == NULL);
    /* FIFO reuse: with two slots free, the older one comes back first. */
    uint32_t a, b, c;
    CHECK_EQ(san_keytab_alloc(&t, &obj, &a), 0);
    CHECK_EQ(san_keytab_alloc(&t, &obj, &b), 0);
    san_keytab_free(&t, a);
    san_keytab_free(&t, b);
    CHECK_EQ(san_keytab_alloc(&t, &obj, &c), 0);
    CHECK(san_key_index(c) == san_key_index(a) && c != a);
    san_keytab_destroy(&t);

    /* A salted table: keys are not slot numbers, and lookups still find their objects. */
    san_keytab_init(&t, 0x12345);
    CHECK_EQ(san_keytab_alloc(&t, &obj, &a), 0);
    CHECK_EQ(san_keytab_alloc(&t, &obj, &b), 0);
    CHECK(san_key_index(a) == 0x12345 && san_key_index(b) == (0x12345 ^ 1));
    CHECK(san_keytab_lookup(&t, a) == &obj && san_keytab_lookup(&t, b) == &obj);
    CHECK(san_keytab_lookup(&t, 1u << SAN_KEY_INDEX_BITS) == NULL); /* slot 0 unsalted: not a key */
    san_keytab_free(&t, a);
    CHECK(san_keytab_lookup(&t, a) == NULL);
    san_keytab_destroy(&t);

    /* The walk in slot order: what is in use, with its current key, from any slot on. */
    int objs[8];
    uint32_t k[8], slot = 0, got;
    san_keytab_init(&t, 0x777);
    for (int i = 0; i < 8; i++)
        CHECK_EQ(san_keytab_alloc(&t, &objs[i], &k[i]), 0);
    san_keytab_free(&t, k[0]);
    san_keytab_free(&t, k[5]);
    int n = 0;
    for (void *o; (o = san_keytab_next(&t, &slot, &got)); slot++, n++) {
        int i = (int)((int *)o - objs);
        CHECK(i != 0 && i != 5 && got == k[i] && san_keytab_lookup(&t, got) == o);
        CHECK(slot == (san_key_index(got) ^ 0x777));
    }
    CHECK_EQ(n, 6);
    slot = san_key_index(k[5]) ^ 0x777; /* a freed slot: the next one in use */
    CHECK(san_keytab_next(&t, &slot, &got) == &objs[6] && got == k[6]);
    slot = 8;
    CHECK(san_keytab_next(&t, &slot, &got) == NULL);
    san_keytab_destroy(&t);
}

struct user {
    struct san_regtab *reg;
    struct san_regtab_set *set;
    struct san_regtab_entry *e;
    uint32_t lkey;
    atomic_bool releasing, put;
};

/* An operation in flight: it ends only once the release has started (the release revokes the keys
 * before it waits, so the lkey stops naming the entry) and then a while later, and says so before
 * it ends. */
static void *late_put(void *arg)
{
    struct user *u = arg;
    for (int i = 0; i < 100000; i++) {
        struct san_regtab_entry *e = san_regtab_get_lkey(u->reg, u->set, u->lkey);
        if (!e) {
            atomic_store(&u->releasing, true);
            struct timespec ts = {0, 20 * 1000 * 1000};
            nanosleep(&ts, NULL); /* a release that does not wait returns meanwhile */
            break;
        }
        san_regtab_put(u->reg, e);
        struct timespec ts = {0, 100 * 1000};
        nanosleep(&ts, NULL);
    }
    atomic_store(&u->put, true);
    san_regtab_put(u->reg, u->e);
    return NULL;
}

/* Stale keys after their slots were reused by another registration of the same set. */
static void stale_in_reused_slot(struct san_regtab *reg, struct san_regtab_set *set, char *buf)
{
    uint32_t l1, r1, l2, r2, l3, r3, refs, rkey;
    san_paddr_t pa;

    CHECK_EQ(san_regtab_register(reg, set, (uintptr_t)buf, 8192, SAN_MEM_READ, true, NULL, &l1, &r1,
                                 &refs),
             0);
    CHECK_EQ(san_regtab_deregister(reg, set, l1, &refs), 0);
    CHECK_EQ(san_regtab_register(reg, set, (uintptr_t)buf + 8192, 8192, SAN_MEM_READ, true, NULL,
                                 &l2, &r2, &refs),
             0);
    CHECK(san_key_index(l2) == san_key_index(l1) && l2 != l1);
    CHECK(san_key_index(r2) == san_key_index(r1) && r2 != r1);
    struct san_regtab_entry *e2 = san_regtab_get_lkey(reg, set, l2);
    CHECK(e2);
    san_regtab_put(reg, e2);

    CHECK(san_regtab_get_lkey(reg, set, l1) == NULL);
    CHECK(san_regtab_get_rkey(reg, r1) == NULL);
    CHECK_EQ(san_regtab_paddr(reg, set, l1, 0, &pa), -EINVAL);
    CHECK_EQ(san_regtab_set_remote(reg, set, l1, false, &rkey), -EINVAL);
    CHECK_EQ(san_regtab_deregister(reg, set, l1, &refs), -EINVAL);
    /* The registration in the slots: its keys still name it, one reference, its rkey kept. */
    CHECK(san_regtab_get_rkey(reg, r2) == e2);
    san_regtab_put(reg, e2);
    CHECK(e2->refs == 1 && e2->rkey == r2 && e2->uses == 0);

    /* An rkey slot freed by revocation, reissued to another registration. */
    CHECK_EQ(san_regtab_set_remote(reg, set, l2, false, &rkey), 0);
    CHECK_EQ(rkey, 0);
    CHECK_EQ(san_regtab_register(reg, set, (uintptr_t)buf + 16384, 8192, SAN_MEM_READ, true, NULL,
                                 &l3, &r3, &refs),
             0);
    CHECK(san_key_index(r3) == san_key_index(r2) && r3 != r2);
    CHECK(san_regtab_get_rkey(reg, r2) == NULL);
    struct san_regtab_entry *e3 = san_regtab_get_rkey(reg, r3);
    CHECK(e3 && e3 != e2);
    san_regtab_put(reg, e3);
    CHECK(e2->rkey == 0);
    CHECK(e3->refs == 1 && e3->rkey == r3 && e3->uses == 0);
    CHECK_EQ(san_regtab_deregister(reg, set, l3, &refs), 0);
    CHECK_EQ(san_regtab_deregister(reg, set, l2, &refs), 0);
    CHECK_EQ(refs, 0);
}

static void registry(void)
{
    struct san_machine *m;
    struct san_regtab *reg;
    struct san_page_owner owner = {
        .pid = getpid(), .pidfd = -1, .pagemap_fd = -1, .maps_fd = -1, .mem_fd = -1};
    struct san_regtab_set set, other;
    uint32_t lkey, rkey, refs, k2, r2;
    size_t len = 64 * 1024;
    char *buf = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

    CHECK(buf != MAP_FAILED);
    CHECK(!mlock(buf, len));
    CHECK_EQ(san_machine_create(NULL, &m), 0);
    CHECK_EQ(san_regtab_create(m, &reg), 0);
    san_regtab_set_init(&set, &owner);
    san_regtab_set_init(&other, &owner);

    CHECK_EQ(san_regtab_register(reg, &set, (uintptr_t)buf, len, SAN_MEM_READWRITE, true, NULL,
                                 &lkey, &rkey, &refs),
             0);
    CHECK(refs == 1 && rkey);
    CHECK_EQ(san_regtab_register(reg, &set, (uintptr_t)buf, len, SAN_MEM_READWRITE, true, NULL, &k2,
                                 &r2, &refs),
             0);
    CHECK(refs == 2 && k2 == lkey && r2 == rkey);

    /* An operation in flight: the last deregistration is refused, earlier ones are not. */
    struct san_regtab_entry *e = san_regtab_get_rkey(reg, rkey);
    CHECK(e);
    CHECK(san_regtab_get_lkey(reg, &other, lkey) == NULL); /* not the other set's key */
    CHECK_EQ(san_regtab_deregister(reg, &set, lkey, &refs), 0);
    CHECK(refs == 1);
    CHECK_EQ(san_regtab_deregister(reg, &set, lkey, &refs), -EBUSY);
    CHECK_EQ(san_regtab_deregister(reg, &other, lkey, &refs), -EINVAL);
    san_regtab_put(reg, e);
    CHECK_EQ(san_regtab_deregister(reg, &set, lkey, &refs), 0);
    CHECK(refs == 0);
    CHECK(san_regtab_get_rkey(reg, rkey) == NULL);
    CHECK_EQ(san_regtab_deregister(reg, &set, lkey, &refs), -EINVAL);

    stale_in_reused_slot(reg, &set, buf);

    /* Limits: registrations and locked bytes per set, -ENOBUFS. */
    struct san_regtab_limits lim = {.registrations = 2, .locked_bytes = 40 * 1024};
    CHECK_EQ(san_regtab_register(reg, &set, (uintptr_t)buf, 32 * 1024, SAN_MEM_READ, false, &lim,
                                 &lkey, &rkey, &refs),
             0);
    CHECK_EQ(san_regtab_register(reg, &set, (uintptr_t)buf, 16 * 1024, SAN_MEM_READ, false, &lim,
                                 &k2, &r2, &refs),
             -ENOBUFS); /* 48K > 40K */
    CHECK_EQ(san_regtab_register(reg, &set, (uintptr_t)buf, 8 * 1024, SAN_MEM_READ, false, &lim,
                                 &k2, &r2, &refs),
             0);
    CHECK_EQ(san_regtab_register(reg, &set, (uintptr_t)buf + 8192, 100, SAN_MEM_READ, false, &lim,
                                 &k2, &r2, &refs),
             -ENOBUFS); /* a third registration */
    /* The same registration again is no new registration: allowed at the limit. */
    CHECK_EQ(san_regtab_register(reg, &set, (uintptr_t)buf, 32 * 1024, SAN_MEM_READ, false, &lim,
                                 &k2, &r2, &refs),
             0);
    CHECK(k2 == lkey && refs == 2);
    /* The other set has its own limits. */
    CHECK_EQ(san_regtab_register(reg, &other, (uintptr_t)buf, 32 * 1024, SAN_MEM_READ, false, &lim,
                                 &k2, &r2, &refs),
             0);
    CHECK(k2 != lkey);

    /* Release waits for an operation in flight: it returns only after the use ended. */
    struct user u = {
        .reg = reg, .set = &set, .e = san_regtab_get_lkey(reg, &set, lkey), .lkey = lkey};
    CHECK(u.e);
    pthread_t t;
    CHECK(!pthread_create(&t, NULL, late_put, &u));
    san_regtab_set_release(reg, &set);
    CHECK(atomic_load(&u.put)); /* before pthread_join: the release itself must have waited */
    pthread_join(t, NULL);
    CHECK(atomic_load(&u.releasing)); /* the use really overlapped the release */
    CHECK(set.registrations == 0 && set.locked_bytes == 0);
    san_regtab_set_release(reg, &other);
    uint64_t regs, locked;
    san_regtab_counts(reg, &regs, &locked);
    CHECK(regs == 0 && locked == 0);
    struct san_machine_stats ms;
    san_machine_stats(m, &ms);
    CHECK(ms.locked_bytes == 0 && ms.free_bytes == ms.ram_bytes);

    san_regtab_destroy(reg);
    san_machine_destroy(m);
    munmap(buf, len);
}

int main(void)
{
    test_init();
    keytab();
    registry();
    printf("ok\n");
    return 0;
}
