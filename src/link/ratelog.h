/* A log line's rate limit: at most one line per interval for one kind of event (a link's dropped
 * and forged messages, messages from nobody), each line counting the events not logged since the
 * last one, so that a peer or a stranger that sends bad messages fast cannot flood the log.
 * Pure bookkeeping on the caller's struct, no locking (the link thread's, under its lock). */
#ifndef SAN_LINK_RATELOG_H
#define SAN_LINK_RATELOG_H

#include <stdbool.h>
#include <stdint.h>

#define SAN_LINK_RATELOG_NS 1000000000ULL /* one line a second */

struct san_link_ratelog {
    uint64_t next_ns; /* no line before this (0: the first may go at once) */
    uint64_t held;    /* events since the last line that were not logged */
};

/* An event at now: true when its line may be logged, *held then set to the events not logged
 * since the last line (0 if none), which the line should say; false when it is held (counted). */
bool san_link_ratelog_take(struct san_link_ratelog *r, uint64_t now, uint64_t *held);

#endif
