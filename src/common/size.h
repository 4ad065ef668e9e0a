/* Parsing sizes with K/M/G/T suffixes (powers of 1024). */
#ifndef SAN_COMMON_SIZE_H
#define SAN_COMMON_SIZE_H

#include <stdint.h>

/* Parses a size: leading blanks, decimal digits, an optional K/M/G/T (optionally followed by "iB"
 * or "B"), or a bare "B". 0, or -EINVAL for anything else, a negative number or an overflow. */
int san_parse_size(const char *s, uint64_t *out);

#endif
