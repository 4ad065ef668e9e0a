/* Durations with a unit, as the config file takes them ("5s", "500ms"). No locking, no
 * allocation. */
#include "common/duration.h"
#include "common/size.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

int san_parse_duration(const char *s, uint64_t *ns)
{
    static const struct {
        const char *name;
        uint64_t ns;
    } units[] = {{"us", 1000},
                 {"ms", 1000000},
                 {"s", 1000000000},
                 {"m", 60 * 1000000000ULL},
                 {"h", 3600 * 1000000000ULL},
                 {"", 1000000000}};
    char *end;
    uint64_t v;

    if (san_parse_leading(s, &v, &end))
        return -EINVAL;
    for (size_t i = 0; i < sizeof(units) / sizeof(units[0]); i++) {
        if (strcmp(end, units[i].name))
            continue;
        if (v > UINT64_MAX / units[i].ns)
            return -EINVAL;
        *ns = v * units[i].ns;
        return 0;
    }
    return -EINVAL;
}
