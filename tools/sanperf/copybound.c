/* The copy bound (perf.h): how fast this machine, in these minutes, passes a stream through a
 * chain of copies between processes with nothing else to do. The sockets switch's stream is
 * three copies in three processes (the writer into its staging buffer, the NIC's engine into
 * the reader's sink, the reader into its buffer); kernel TCP on loopback is two (into the socket
 * buffer, out of it). So the three-copy figure estimates the most a SAN stream can do here (it
 * leaves out the messages and the NIC's bookkeeping; measured apart, it varies as every figure
 * does), and that figure over TCP's the ratio the switch could reach.
 *
 * Each stage is a process of its own: stage 0 copies from a 1 MiB buffer of its own into ring 0,
 * stage i from ring i-1 into ring i, the last from its ring into a 1 MiB buffer of its own. A
 * ring is RINGS slots of SLOT bytes in shared memory (the switch's staging buffers and sinks are
 * that many of that size), with a count of slots filled and one of slots emptied; a stage that
 * waits yields, as the switch's waiters do. */
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include "perf.h"

#define SLOT       (256u << 10)
#define RINGS      8u
#define APP        (1u << 20)
#define MAX_STAGES 4

struct ring {
    _Alignas(64) _Atomic uint64_t filled;
    _Alignas(64) _Atomic uint64_t emptied;
};

static void wait_until(_Atomic uint64_t *v, uint64_t at_least)
{
    while (atomic_load_explicit(v, memory_order_acquire) < at_least)
        sched_yield();
}

/* Stage s of n moves slots slots: in from ring s-1 (or its own buffer), out to ring s (or its
 * own buffer). */
static void stage(int s, int n, uint64_t slots, struct ring *ctl, uint8_t *mem)
{
    uint8_t *own = malloc(APP);
    if (!own)
        _exit(1);
    memset(own, s, APP);
    struct ring *in = s ? &ctl[s - 1] : NULL, *out = s < n - 1 ? &ctl[s] : NULL;
    uint8_t *in_mem = s ? mem + (size_t)(s - 1) * RINGS * SLOT : NULL;
    uint8_t *out_mem = out ? mem + (size_t)s * RINGS * SLOT : NULL;
    for (uint64_t i = 0; i < slots; i++) {
        size_t at = (size_t)(i % (APP / SLOT)) * SLOT, slot = (size_t)(i % RINGS) * SLOT;
        if (in)
            wait_until(&in->filled, i + 1);
        if (out)
            wait_until(&out->emptied, i + 1 > RINGS ? i + 1 - RINGS : 0);
        memcpy(out ? out_mem + slot : own + at, in ? in_mem + slot : own + at, SLOT);
        if (in)
            atomic_store_explicit(&in->emptied, i + 1, memory_order_release);
        if (out)
            atomic_store_explicit(&out->filled, i + 1, memory_order_release);
    }
    free(own);
}

double perf_copy_bound(int stages, uint64_t bytes)
{
    if (stages < 2 || stages > MAX_STAGES || bytes < SLOT)
        return 0;
    size_t ctl_len = sizeof(struct ring) * MAX_STAGES,
           mem_len = (size_t)(stages - 1) * RINGS * SLOT;
    struct ring *ctl =
        mmap(NULL, ctl_len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    uint8_t *mem = mmap(NULL, mem_len, PROT_READ | PROT_WRITE,
                        MAP_SHARED | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
    double rate = 0;
    if (ctl == MAP_FAILED || mem == MAP_FAILED)
        goto out;
    memset(mem, 0, mem_len);
    uint64_t slots = bytes / SLOT, t0 = perf_now_ns();
    pid_t pid[MAX_STAGES];
    int started = 0, failed = 0;
    for (; started < stages; started++) {
        if ((pid[started] = fork()) < 0)
            break;
        if (pid[started] == 0) {
            stage(started, stages, slots, ctl, mem);
            _exit(0);
        }
    }
    if (started < stages) { /* a stage that never started: the others would wait for it */
        for (int i = 0; i < started; i++)
            kill(pid[i], SIGKILL);
        failed = 1;
    }
    for (int i = 0; i < started; i++) {
        int st;
        if (waitpid(pid[i], &st, 0) != pid[i] || !WIFEXITED(st) || WEXITSTATUS(st))
            failed = 1;
    }
    uint64_t ns = perf_now_ns() - t0;
    if (!failed && ns)
        rate = (double)(slots * SLOT) / (double)ns;
out:
    if (ctl != MAP_FAILED)
        munmap(ctl, ctl_len);
    if (mem != MAP_FAILED)
        munmap(mem, mem_len);
    return rate;
}
