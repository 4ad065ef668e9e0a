/* memwatch against the real kernel: munmap, mremap, madvise and missing-page faults on watched
 * spans reach the owner's invalidation callback with the owner's lock held; overlapping spans keep
 * shared pages registered; memory the kernel cannot watch is refused; an overflowing event queue
 * invalidates everything and loses no event. The owner here is a small fake with a mutex. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include <cmocka.h>

#include <stdatomic.h>
#include <stdbool.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <signal.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "client/memwatch.h"

#define PG        4096u
#define MAX_SPANS 64
#define MAX_LOG   1024

struct owner {
    struct san_mutex lock; /* knows its holder: memwatch checks it in debug builds */
    struct san_memwatch mw;
    struct san_memwatch_span spans[MAX_SPANS];
    struct {
        uint64_t start, len;
        int why;
    } log[MAX_LOG];
    int nlog;
};

static void o_lock(void *arg)
{
    san_mutex_lock(&((struct owner *)arg)->lock);
}

static void o_unlock(void *arg)
{
    san_mutex_unlock(&((struct owner *)arg)->lock);
}

/* Logs, and unwatches every span the gone range overlaps (as the cache does). */
static void o_invalidate_locked(void *arg, uint64_t start, uint64_t len, enum san_memwatch_why why)
{
    struct owner *o = arg;
    if (o->nlog < MAX_LOG) {
        o->log[o->nlog].start = start;
        o->log[o->nlog].len = len;
        o->log[o->nlog++].why = why;
    }
    for (int i = 0; i < MAX_SPANS; i++) {
        struct san_memwatch_span *s = &o->spans[i];
        if (s->watched && s->r.start < start + len && start < san_range_end(&s->r))
            san_memwatch_unwatch_locked(&o->mw, s);
    }
}

static struct owner *owner_new(void)
{
    struct owner *o = calloc(1, sizeof(*o));
    assert_non_null(o);
    assert_int_equal(san_mutex_init(&o->lock), 0);
    struct san_memwatch_ops ops = {o, o_lock, o_unlock, o_invalidate_locked, &o->lock.owner};
    san_memwatch_init(&o->mw, &ops);
    return o;
}

static void owner_free(struct owner *o)
{
    san_memwatch_destroy(&o->mw);
    san_mutex_destroy(&o->lock);
    free(o);
}

static int watch(struct owner *o, int slot, void *p, size_t len)
{
    o_lock(o);
    int err = san_memwatch_watch_locked(&o->mw, &o->spans[slot], (uintptr_t)p, len);
    o_unlock(o);
    return err;
}

/* Index of the first logged invalidation of kind why overlapping [p, p+len), or -1. Takes the
 * owner's lock: the handler holds it until it has applied what it read, so this sees it. */
static int logged(struct owner *o, int why, void *p, size_t len)
{
    uint64_t s = (uintptr_t)p;
    int found = -1;
    o_lock(o);
    for (int i = 0; i < o->nlog && found < 0; i++)
        if (o->log[i].why == why && o->log[i].start < s + len &&
            s < o->log[i].start + o->log[i].len)
            found = i;
    o_unlock(o);
    return found;
}

static uint64_t removes(struct owner *o)
{
    o_lock(o);
    uint64_t n = o->mw.stats.removes;
    o_unlock(o);
    return n;
}

static char *map_pages(size_t n)
{
    char *p = mmap(NULL, n * PG, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    assert_true(p != MAP_FAILED);
    memset(p, 0x5a, n * PG);
    return p;
}

static void test_munmap_event(void **state)
{
    (void)state;
    struct owner *o = owner_new();
    char *p = map_pages(4);
    assert_int_equal(watch(o, 0, p, 4 * PG), 0);
    assert_int_equal(logged(o, SAN_MEMWATCH_UNMAP, p, 4 * PG), -1);

    assert_int_equal(munmap(p + PG, PG), 0);
    int i = logged(o, SAN_MEMWATCH_UNMAP, p + PG, PG);
    assert_true(i >= 0);
    assert_int_equal(o->log[i].start, (uintptr_t)(p + PG));
    assert_int_equal(o->log[i].len, PG);
    assert_false(o->spans[0].watched);
    munmap(p, 4 * PG);
    owner_free(o);
}

static void test_mremap_event(void **state)
{
    (void)state;
    struct owner *o = owner_new();
    char *p = map_pages(2);
    char *dst = map_pages(4); /* a place to move to */
    assert_int_equal(watch(o, 0, p, 2 * PG), 0);

    char *q = mremap(p, 2 * PG, 2 * PG, MREMAP_MAYMOVE | MREMAP_FIXED, dst + PG);
    assert_ptr_equal(q, dst + PG);
    assert_true(logged(o, SAN_MEMWATCH_REMAP, p, 2 * PG) >= 0);
    assert_int_equal(q[0], 0x5a);
    /* The moved vma carried its registration; nobody watches it there, so it was dropped: pages
     * dropped at the new place raise no event, and a system call can fill them again. */
    uint64_t before = removes(o);
    assert_int_equal(madvise(q, PG, MADV_DONTNEED), 0);
    assert_int_equal(removes(o), before);
    int z = open("/dev/zero", O_RDONLY);
    assert_int_equal(read(z, q, PG), (ssize_t)PG);
    close(z);
    munmap(dst, 4 * PG);
    owner_free(o);
}

static void test_madvise_remove_event(void **state)
{
    (void)state;
    struct owner *o = owner_new();
    char *p = map_pages(3);
    assert_int_equal(watch(o, 0, p, 3 * PG), 0);
    assert_int_equal(madvise(p + 2 * PG, PG, MADV_DONTNEED), 0);
    assert_true(logged(o, SAN_MEMWATCH_REMOVE, p + 2 * PG, PG) >= 0);
    assert_int_equal(p[2 * PG], 0); /* dropped, and not watched any more: no fault */
    munmap(p, 3 * PG);
    owner_free(o);
}

static void *toucher(void *arg)
{
    volatile char *c = arg;
    return (void *)(uintptr_t)(*c + 1);
}

static void test_fault_event_wakes(void **state)
{
    (void)state;
    struct owner *o = owner_new();
    /* Never touched: every page is missing. A user-mode read faults into the handler. */
    char *p = mmap(NULL, 2 * PG, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    assert_true(p != MAP_FAILED);
    assert_int_equal(watch(o, 0, p, 2 * PG), 0);
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, toucher, p + PG + 7), 0);
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += 10;
    void *ret;
    assert_int_equal(pthread_timedjoin_np(t, &ret, &ts), 0);
    assert_int_equal((uintptr_t)ret, 1); /* a zero page */
    assert_true(logged(o, SAN_MEMWATCH_FAULT, p + PG, PG) >= 0);
    assert_false(o->spans[0].watched);
    munmap(p, 2 * PG);
    owner_free(o);
}

static void test_unwatchable_refused(void **state)
{
    (void)state;
    struct owner *o = owner_new();
    int fd = open("/proc/self/exe", O_RDONLY);
    assert_true(fd >= 0);
    void *f = mmap(NULL, PG, PROT_READ, MAP_PRIVATE, fd, 0);
    assert_true(f != MAP_FAILED);
    assert_int_equal(watch(o, 0, f, PG), -EINVAL);
    assert_false(o->spans[0].watched);
    munmap(f, PG);
    close(fd);
    /* Nothing mapped there. */
    char *p = map_pages(3);
    munmap(p + PG, PG);
    assert_int_equal(watch(o, 1, p + PG, PG), -EINVAL);
    assert_false(o->spans[1].watched);
    /* Unaligned. */
    assert_int_equal(watch(o, 2, p + 1, PG), -EINVAL);
    munmap(p, 3 * PG);
    owner_free(o);
}

static void test_overlapping_spans(void **state)
{
    (void)state;
    struct owner *o = owner_new();
    char *p = map_pages(3);
    assert_int_equal(watch(o, 0, p, 2 * PG), 0);      /* pages 0-1 */
    assert_int_equal(watch(o, 1, p + PG, 2 * PG), 0); /* pages 1-2 */
    o_lock(o);
    san_memwatch_unwatch_locked(&o->mw, &o->spans[0]);
    o_unlock(o);
    /* Page 0: nobody watches it, no event. Page 1: span 1 still does. */
    uint64_t before = removes(o);
    assert_int_equal(madvise(p, PG, MADV_DONTNEED), 0);
    assert_int_equal(removes(o), before);
    assert_int_equal(madvise(p + PG, PG, MADV_DONTNEED), 0);
    assert_int_equal(removes(o), before + 1);
    assert_true(logged(o, SAN_MEMWATCH_REMOVE, p + PG, PG) >= 0);
    munmap(p, 3 * PG);
    owner_free(o);
}

struct unmapper {
    char *page;
    pthread_t t;
    _Atomic int tid;
};

static void *unmap_one(void *arg)
{
    struct unmapper *u = arg;
    u->tid = gettid();
    munmap(u->page, PG);
    return NULL;
}

/* Whether thread tid sleeps in the kernel waiting for its userfaultfd event to be read. */
static bool blocked_on_uffd(int tid)
{
    char path[96], buf[256] = "";
    snprintf(path, sizeof(path), "/proc/self/task/%d/wchan", tid);
    FILE *f = fopen(path, "r");
    if (!f)
        return false;
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = 0;
    if (strstr(buf, "userfaultfd"))
        return true;
    if (strcmp(buf, "0") && n) /* a known symbol, but another one */
        return false;
    /* No symbol names here: fall back to the state ('D' for the killable wait). */
    snprintf(path, sizeof(path), "/proc/self/task/%d/stat", tid);
    if (!(f = fopen(path, "r")))
        return false;
    n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = 0;
    char *rp = strrchr(buf, ')');
    return rp && (rp[2] == 'D' || rp[2] == 'S');
}

static void test_overflow_loses_nothing(void **state)
{
    (void)state;
    enum { N = 24 };
    struct owner *o = owner_new();
    o->mw.queue_cap = 4;
    struct unmapper u[N];
    for (int i = 0; i < N; i++) {
        u[i].page = map_pages(1);
        assert_int_equal(watch(o, i, u[i].page, PG), 0);
    }
    /* Hold the owner's lock: the handler wakes and waits for it while the unmappers pile up in
     * the kernel, each blocked until its event is read. */
    o_lock(o);
    for (int i = 0; i < N; i++)
        assert_int_equal(pthread_create(&u[i].t, NULL, unmap_one, &u[i]), 0);
    for (int i = 0, spins = 0; i < N; spins++) {
        assert_true(spins < 10000); /* 10 s */
        if (u[i].tid && blocked_on_uffd(u[i].tid))
            i++;
        else
            usleep(1000);
    }
    o_unlock(o);
    for (int i = 0; i < N; i++) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_sec += 10;
        assert_int_equal(pthread_timedjoin_np(u[i].t, NULL, &ts), 0);
    }
    o_lock(o);
    uint64_t overflows = o->mw.stats.overflows, unmaps = o->mw.stats.unmaps;
    o_unlock(o);
    assert_int_equal(unmaps, N);
    assert_true(overflows >= 1);
    assert_true(logged(o, SAN_MEMWATCH_ALL, NULL, UINT64_MAX) >= 0);
    /* Nothing is lost: every span was dropped. */
    for (int i = 0; i < N; i++)
        assert_false(o->spans[i].watched);
    owner_free(o);
}

static void *unmapper(void *arg)
{
    munmap(arg, 2 * PG);
    return NULL;
}

/* A forked child keeps a copy of the userfaultfd open: destroying the watcher must still leave no
 * registration behind, or the parent's next unmap there would wait for an event nobody reads. */
static void test_destroy_with_child_holding_fd(void **state)
{
    (void)state;
    struct owner *o = owner_new();
    char *p = map_pages(2);
    assert_int_equal(watch(o, 0, p, 2 * PG), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        pause();
        _exit(0);
    }
    owner_free(o); /* the span is still watched: destroy must drop it */
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, unmapper, p), 0);
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += 5;
    int joined = pthread_timedjoin_np(t, NULL, &ts);
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
    if (joined) /* released by the child's death; join it before failing */
        pthread_join(t, NULL);
    assert_int_equal(joined, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_munmap_event),
        cmocka_unit_test(test_mremap_event),
        cmocka_unit_test(test_madvise_remove_event),
        cmocka_unit_test(test_fault_event_wakes),
        cmocka_unit_test(test_unwatchable_refused),
        cmocka_unit_test(test_overlapping_spans),
        cmocka_unit_test(test_overflow_loses_nothing),
        cmocka_unit_test(test_destroy_with_child_holding_fd),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
