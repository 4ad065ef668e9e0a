/* Descriptor number -> SAN object (a connection or a listener). Two levels of arrays allocated
 * with mmap on demand; a lookup of a descriptor that is no SAN socket costs one or two atomic loads
 * and takes no lock (so calls on kernel descriptors stay async-signal-safe). Finding an object
 * takes a reference under the table's mutex; an object is destroyed when its last reference goes
 * (the table holds one per descriptor that names it: dup shares one object).
 *
 * An object also caches its open file's O_NONBLOCK, so that a call which would wait does not ask
 * the kernel (an fcntl per wait). One object stands for one open file description (only dup and
 * its kin make a second descriptor name it, and they share the description's flags), so the cache
 * is per object, not per number. The interposed fcntl(F_SETFL) and ioctl(FIONBIO) keep it exact;
 * what changes the flag behind the switch's back (fcntl through syscall(), another process that
 * shares the open file) is caught by sansock_obj_nonblocking's re-reads (docs/sock.md).
 * Locking: tab_lock (fdtab.c) guards the entries' writers and the reference counts; nb_lock
 * (fdtab.c, a leaf) orders a flag's change in the kernel with its cached copy. */
#ifndef SANSOCK_FDTAB_H
#define SANSOCK_FDTAB_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

enum sansock_kind { SANSOCK_CONN = 1, SANSOCK_LISTENER = 2, SANSOCK_EPOLL = 3 };

struct sansock_obj {
    enum sansock_kind kind;
    unsigned refs; /* under tab_lock */
    unsigned gen;  /* sansock_fork_gen when made: another value means an inherited object */
    void (*destroy)(struct sansock_obj *o);
    _Atomic bool nonblock;       /* the open file's O_NONBLOCK as last set or read */
    _Atomic uint64_t nb_read_ns; /* when it was last set or read (CLOCK_MONOTONIC) */
};

/* The object at fd with a reference taken, or NULL. */
struct sansock_obj *sansock_fd_get(int fd);
/* Takes one more reference to an object the caller holds a reference to. */
void sansock_obj_ref(struct sansock_obj *o);
/* Drops a reference; the last one destroys the object (outside the lock). */
void sansock_obj_put(struct sansock_obj *o);
/* Makes fd name o (a reference is taken for the table). -EMFILE if fd is beyond the table. Any
 * object fd named before is dropped. */
int sansock_fd_set(int fd, struct sansock_obj *o);
/* Removes fd's entry and returns the table's reference to it (or NULL). A socket leaves the epoll
 * sets it was added to with fd (sansock_epoll_forget), as the kernel drops a closed file. */
struct sansock_obj *sansock_fd_take(int fd);
/* Removes every entry naming o, whose caller holds a reference of its own (never the last), and
 * leaves epoll sets alone (a connect that went to the kernel: epoll moves the member). */
void sansock_fd_unmap(struct sansock_obj *o);
/* Calls fn on the object of every entry (an object named by several descriptors is met once per
 * descriptor), holding a reference to it and not the table's lock. */
void sansock_fd_each(void (*fn)(struct sansock_obj *o, void *arg), void *arg);
/* Drops every entry in [first, last] (close_range, closefrom). */
void sansock_fd_drop_range(unsigned first, unsigned last);
/* Whether a call on fd (naming o) that would wait must not: MSG_DONTWAIT in flags, or the cached
 * O_NONBLOCK. A cached "non-blocking" older than 1 ms is read again from the kernel (one fcntl
 * per millisecond at most), so a flag cleared behind the switch's back stops giving EAGAIN. */
bool sansock_obj_nonblocking(struct sansock_obj *o, int fd, int flags);
/* Reads fd's O_NONBLOCK from the kernel into o's cache and returns it: a waiter calls it before it
 * sleeps, so a flag set behind the switch's back never makes a call sleep. */
bool sansock_obj_nonblock_reread(struct sansock_obj *o, int fd);
/* Sets the cache to what the caller knows the open file's flag is (accept4's SOCK_NONBLOCK). */
void sansock_obj_set_nonblock(struct sansock_obj *o, bool on);
/* Held around the kernel's fcntl(F_SETFL) or ioctl(FIONBIO) on a SAN socket and the cache's
 * update after it (and by the re-reads), so that two threads changing the flag leave the cache at
 * the kernel's last word. Nothing else is taken under it. */
void sansock_nonblock_lock(void);
void sansock_nonblock_unlock(void);
/* In a forked child: the lock may have been held by another thread of the parent. */
void sansock_fdtab_atfork_child(void);

#endif
