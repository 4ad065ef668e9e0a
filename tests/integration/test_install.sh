#!/usr/bin/env bash
# make install PREFIX=DIR: headers under include/san/, libsanproxy (static and shared), the tools,
# and sanproxy.pc, so that a program builds against the installed tree with pkg-config, dynamically
# and with --static, and runs.
set -euo pipefail
: "${SAN_BUILD:?}" "${CC:=cc}"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
prefix=$tmp/prefix

cmake --install "$SAN_BUILD" --prefix "$prefix" >/dev/null
for f in include/san/san.h bin/sanproxyd bin/sanctl bin/sanperf; do
  [[ -e $prefix/$f ]] || { echo "FAIL: $f not installed" >&2; exit 1; }
done
pc=$(find "$prefix" -name sanproxy.pc | head -1)
[[ -n $pc ]] || { echo "FAIL: sanproxy.pc not installed" >&2; exit 1; }
export PKG_CONFIG_PATH=$(dirname "$pc")

cat >"$tmp/prog.c" <<'C'
#include <san/san.h>
#include <stdio.h>
#include <string.h>

int main(void)
{
    struct san_machine *m;
    void *va;
    san_paddr_t pa;
    struct san_machine_config cfg = {.ram_size = 1ull << 33, .nolowmem = true};
    if (san_machine_create(&cfg, &m))
        return 1;
    if (san_alloc_contiguous(m, 65536, 0, 0xffffffffu, 65536, SAN_CACHED, &va) ||
        san_get_physical_address(m, va, &pa) || pa >= 0x100000000ull || pa % 65536)
        return 2;
    memset(va, 7, 65536);
    if (san_free_contiguous(m, va, 65536, SAN_CACHED))
        return 3;
    san_machine_destroy(m);
    printf("ok %s\n", san_strerror(-22));
    return 0;
}
C
# shellcheck disable=SC2086
"$CC" ${SAN_EXTRA_CFLAGS:-} -std=c11 "$tmp/prog.c" -o "$tmp/prog" $(pkg-config --cflags --libs sanproxy) \
  -Wl,-rpath,"$(pkg-config --variable=libdir sanproxy)"
"$tmp/prog" | grep -q '^ok EINVAL' || { echo "FAIL: dynamic program" >&2; exit 1; }
# shellcheck disable=SC2086
"$CC" ${SAN_EXTRA_CFLAGS:-} -std=c11 "$tmp/prog.c" -o "$tmp/prog-static" \
  $(pkg-config --static --cflags sanproxy) "$(pkg-config --variable=libdir sanproxy)/libsanproxy.a" \
  $(pkg-config --static --libs-only-l sanproxy | sed 's/-lsanproxy//')
"$tmp/prog-static" | grep -q '^ok EINVAL' || { echo "FAIL: static program" >&2; exit 1; }
echo "install: headers, libraries, tools and pkg-config all work"
