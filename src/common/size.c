/* Sizes with a binary suffix, as the config file, the environment and the tools take them:
 * "65536", "64K", "1M", "8G", "2T" (also "64KiB", "64KB", "4096B"). No locking, no allocation. */
#include "common/size.h"

#include <errno.h>
#include <stdlib.h>

int san_parse_leading(const char *s, uint64_t *v, char **end)
{
    while (*s == ' ' || *s == '\t')
        s++;
    if (*s < '0' || *s > '9')
        return -EINVAL;
    errno = 0;
    unsigned long long n = strtoull(s, end, 10);
    if (errno)
        return -EINVAL;
    *v = n;
    return 0;
}

int san_parse_size(const char *s, uint64_t *out)
{
    char *end;
    unsigned shift = 0;
    uint64_t v;

    if (san_parse_leading(s, &v, &end))
        return -EINVAL;
    switch (*end) {
    case 'k':
    case 'K':
        shift = 10;
        end++;
        break;
    case 'm':
    case 'M':
        shift = 20;
        end++;
        break;
    case 'g':
    case 'G':
        shift = 30;
        end++;
        break;
    case 't':
    case 'T':
        shift = 40;
        end++;
        break;
    default:
        break;
    }
    if (shift && *end == 'i' && end[1] == 'B')
        end += 2;
    else if (*end == 'B')
        end++;
    if (*end || (shift && v > (UINT64_MAX >> shift)))
        return -EINVAL;
    *out = (uint64_t)v << shift;
    return 0;
}
