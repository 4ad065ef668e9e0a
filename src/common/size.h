/* Parsing sizes with K/M/G/T suffixes (powers of 1024), and the number that starts a size or a
 * duration (duration.h). */
#ifndef SAN_COMMON_SIZE_H
#define SAN_COMMON_SIZE_H

#include <stdint.h>

/* The number a size or a duration starts with: leading blanks, then decimal digits (no sign).
 * 0 with *end after the digits, or -EINVAL (no digit, an overflow). */
int san_parse_leading(const char *s, uint64_t *v, char **end);

/* Parses a size: leading blanks, decimal digits, an optional K/M/G/T (optionally followed by "iB"
 * or "B"), or a bare "B". 0, or -EINVAL for anything else, a negative number or an overflow. */
int san_parse_size(const char *s, uint64_t *out);

#endif
