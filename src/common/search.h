/* Binary search of a sorted array for "the last element whose key is <= x": which piece of an MDL
 * holds a page, which RAM segment holds an address, which run of map registers holds a register.
 * The array is the caller's; key(arr, i) reads element i's key, ascending in i (an array sorted
 * the other way searches ~key for ~x). Static inline with the key function known at the call
 * site, the compiler inlines it: no call per step. No locking, no allocation. */
#ifndef SAN_COMMON_SEARCH_H
#define SAN_COMMON_SEARCH_H

#include <stddef.h>
#include <stdint.h>

/* The index of the last of the n (>= 1) elements whose key is <= x; 0 when none is (callers whose
 * first key may be above x check element 0). O(log n). */
static inline size_t san_search_last(const void *arr, size_t n,
                                     uint64_t (*key)(const void *, size_t), uint64_t x)
{
    size_t lo = 0, hi = n;
    while (hi - lo > 1) {
        size_t mid = lo + (hi - lo) / 2;
        if (key(arr, mid) <= x)
            lo = mid;
        else
            hi = mid;
    }
    return lo;
}

#endif
