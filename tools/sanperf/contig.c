/* sanperf contig: the contiguous allocator against glibc malloc (placeholder until implemented). */
#include <stdio.h>

#include "perf.h"

int perf_contig(const struct perf_opts *o)
{
    (void)o;
    fprintf(stderr, "sanperf contig: not implemented yet\n");
    return 1;
}
