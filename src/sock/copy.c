/* Stream copies that avoid `rep movsb`'s slow placement (copy.h). */
#include "sock/copy.h"

#include <stdint.h>
#include <string.h>

#define PIECE 2048u /* below glibc's rep movsb threshold: copied by its vector loop */
#define SMALL 4096u /* below this memcpy never uses rep movsb */

void sansock_copy(void *dst, const void *src, size_t n)
{
    uintptr_t gap = ((uintptr_t)dst - (uintptr_t)src) & 4095u;
    if (n < SMALL || gap == 0 || gap >= 64) {
        memcpy(dst, src, n);
        return;
    }
    uint8_t *d = dst;
    const uint8_t *s = src;
    for (size_t off = 0; off < n; off += PIECE)
        memcpy(d + off, s + off, n - off < PIECE ? n - off : PIECE);
}
