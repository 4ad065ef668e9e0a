/* Descriptor number -> SAN object (a connection or a listener). Two levels of arrays allocated
 * with mmap on demand; a lookup of a descriptor that is no SAN socket costs one or two atomic loads
 * and takes no lock (so calls on kernel descriptors stay async-signal-safe). Finding an object
 * takes a reference under the table's mutex; an object is destroyed when its last reference goes
 * (the table holds one per descriptor that names it: dup shares one object).
 * Locking: tab_lock (fdtab.c) guards the entries' writers and the reference counts. */
#ifndef SANSOCK_FDTAB_H
#define SANSOCK_FDTAB_H

#include <stdbool.h>

enum sansock_kind { SANSOCK_CONN = 1, SANSOCK_LISTENER = 2, SANSOCK_EPOLL = 3 };

struct sansock_obj {
    enum sansock_kind kind;
    unsigned refs; /* under tab_lock */
    unsigned gen;  /* sansock_fork_gen when made: another value means an inherited object */
    void (*destroy)(struct sansock_obj *o);
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
/* Drops every entry in [first, last] (close_range, closefrom). */
void sansock_fd_drop_range(unsigned first, unsigned last);
/* In a forked child: the lock may have been held by another thread of the parent. */
void sansock_fdtab_atfork_child(void);

#endif
