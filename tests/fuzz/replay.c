/* Stand-in for libFuzzer where it is not available (gcc builds): feeds the target the files named
 * on the command line, or N inputs from a fixed-seed generator (default 10000), so every fuzz
 * target runs as a deterministic regression test in every build. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static uint64_t next(uint64_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

int main(int argc, char **argv)
{
    static uint8_t buf[4096];
    long n = 10000;

    if (argc > 1 && strspn(argv[1], "0123456789") == strlen(argv[1])) {
        n = atol(argv[1]);
    } else if (argc > 1) {
        for (int i = 1; i < argc; i++) {
            FILE *f = fopen(argv[i], "rb");
            if (!f) {
                perror(argv[i]);
                return 1;
            }
            size_t len = fread(buf, 1, sizeof(buf), f);
            fclose(f);
            LLVMFuzzerTestOneInput(buf, len);
        }
        return 0;
    }
    uint64_t seed = 0x9e3779b97f4a7c15u;
    for (long i = 0; i < n; i++) {
        size_t len = next(&seed) % sizeof(buf);
        for (size_t j = 0; j < len; j++)
            buf[j] = (uint8_t)next(&seed);
        LLVMFuzzerTestOneInput(buf, len);
    }
    printf("replayed %ld generated inputs\n", n);
    return 0;
}
