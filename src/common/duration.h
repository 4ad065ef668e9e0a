/* Parsing durations as the config file takes them: "5s", "500ms", "2m", "250us". */
#ifndef SAN_COMMON_DURATION_H
#define SAN_COMMON_DURATION_H

#include <stdint.h>

/* Parses leading blanks, decimal digits and a unit (us, ms, s, m, h; no unit: seconds) into
 * nanoseconds. 0, or -EINVAL for anything else, a negative number or an overflow. */
int san_parse_duration(const char *s, uint64_t *ns);

#endif
