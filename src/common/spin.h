/* Polling shared memory on machines with fewer cores than pollers (two clients and the NIC's
 * engine on two cores). A poller that kept its CPU would keep the thread it waits for off it until
 * the scheduler's tick; one that yielded on every look would pay a system call (and often a
 * context switch) per look. So a look is a short burst of reads with the CPU's spin-wait hint,
 * which sees a store made on the other core at once, then one sched_yield, which lets a thread
 * waiting on this core run. Callers bound the whole wait by time and then sleep (futex). */
#ifndef SAN_COMMON_SPIN_H
#define SAN_COMMON_SPIN_H

#include <sched.h>
#include <stdbool.h>

#define SAN_SPIN_BURST 64 /* reads per look: about a microsecond */

static inline void san_cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ volatile("yield");
#endif
}

/* One look: true as soon as ready(arg) holds; false after a burst and a yield without it. */
static inline bool san_spin_look(bool (*ready)(void *), void *arg)
{
    for (int i = 0; i < SAN_SPIN_BURST; i++) {
        if (ready(arg))
            return true;
        san_cpu_relax();
    }
    sched_yield();
    return false;
}

#endif
