/* The per-thread byte that names a thread for the lock checks (see lockcheck.h). */
#include "common/lockcheck.h"

_Thread_local char san_lock_self;
