/* The link's log rate limits (ratelog.h): a deadline and a count per kind of event. No locking:
 * the caller's struct, under the caller's lock. */
#include "link/ratelog.h"

bool san_link_ratelog_take(struct san_link_ratelog *r, uint64_t now, uint64_t *held)
{
    if (r->next_ns && now < r->next_ns) {
        r->held++;
        return false;
    }
    *held = r->held;
    r->held = 0;
    r->next_ns = now + SAN_LINK_RATELOG_NS; /* the monotonic clock: never near its end */
    return true;
}
