#!/usr/bin/env bash
# make install PREFIX=DIR, then everything from the installed tree only, as a user would: headers,
# libsan.so.0 and libsan.a, libsan.pc and libsan-static.pc, the tools and their man pages,
# libsansock.so and sanrun (which finds the installed library).
# - A program built with README's line, `cc prog.c $(pkg-config --cflags --libs libsan)`, runs
#   from this non-system prefix with nothing else set (the rpath comes from libsan.pc).
# - `pkg-config --static --cflags --libs libsan-static` links libsan in: no NEEDED libsan.so, and
#   the program runs with the shared library gone.
# - Every example (README's quickstart among them) builds from the installed tree alone, and
#   quickstart runs against the installed sanproxyd (and fails, saying so, without one).
# - README.md shows examples/quickstart.c as it is.
# - An install into a directory of the dynamic loader's cache runs ldconfig; any other does not.
set -euo pipefail
: "${SAN_BUILD:?}" "${SAN_SRC:?}" "${CC:=cc}"
tmp=$(mktemp -d)
pid=
cleanup() {
  [[ -z $pid ]] || kill -9 "$pid" 2>/dev/null || true
  rm -rf "$tmp"
}
trap cleanup EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }
prefix=$tmp/prefix
unset LD_LIBRARY_PATH PKG_CONFIG_LIBDIR

# An ldconfig that records its runs and reports $tmp/cached as a directory of the cache.
mkdir -p "$tmp/fakebin" "$tmp/cached"
cat >"$tmp/fakebin/ldconfig" <<SH
#!/bin/sh
if [ "\$*" = "-v -N -X" ]; then echo "$tmp/cached/lib: (from test)"; exit 0; fi
echo "ran \$*" >>"$tmp/ldconfig.log"
SH
chmod +x "$tmp/fakebin/ldconfig"

PATH=$tmp/fakebin:$PATH cmake --install "$SAN_BUILD" --prefix "$prefix" >/dev/null
[[ ! -e $tmp/ldconfig.log ]] || fail "ldconfig ran for a prefix outside the loader's cache"
PATH=$tmp/fakebin:$PATH cmake --install "$SAN_BUILD" --prefix "$tmp/cached" >/dev/null
grep -qx "ran " "$tmp/ldconfig.log" || fail "ldconfig did not run for a directory of the loader's cache"
rm -f "$tmp/ldconfig.log"
PATH=$tmp/fakebin:$PATH DESTDIR=$tmp/stage cmake --install "$SAN_BUILD" --prefix "$tmp/cached" >/dev/null
[[ ! -e $tmp/ldconfig.log ]] || fail "ldconfig ran for a staged install (DESTDIR)"

for f in include/san/san.h include/san/export.h bin/sanproxyd bin/sanctl bin/sanperf bin/sanrun \
         share/man/man8/sanproxyd.8 share/man/man8/sanctl.8 share/man/man1/sanperf.1 \
         share/man/man1/sanrun.1; do
  [[ -e $prefix/$f ]] || fail "$f not installed"
done
pc=$(find "$prefix" -name libsan.pc | head -1)
[[ -n $pc && -e $(dirname "$pc")/libsan-static.pc ]] || fail "libsan.pc / libsan-static.pc not installed"
export PKG_CONFIG_PATH=$(dirname "$pc")
libdir=$(pkg-config --variable=libdir libsan)
for f in libsan.so.0 libsan.a libsansock.so; do [[ -e $libdir/$f ]] || fail "$libdir/$f not installed"; done
! find "$prefix" -name 'libsanproxy*' | grep -q . || fail "a library under the old name is installed"

# The in-process emulated machine, through libsan.
cat >"$tmp/machine.c" <<'C'
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
cd "$tmp"
# shellcheck disable=SC2046,SC2086
"$CC" ${SAN_EXTRA_CFLAGS:-} -std=c11 machine.c -o machine $(pkg-config --cflags --libs libsan)
readelf -d machine | grep -q 'NEEDED.*\[libsan\.so\.0\]' || fail "dynamic program: no NEEDED libsan.so.0"
./machine | grep -q '^ok EINVAL' || fail "dynamic program built with pkg-config libsan does not run"

# shellcheck disable=SC2046,SC2086
"$CC" ${SAN_EXTRA_CFLAGS:-} -std=c11 machine.c -o machine-static \
  $(pkg-config --static --cflags --libs libsan-static)
if readelf -d machine-static | grep -q 'NEEDED.*libsan'; then
  fail "static program still needs libsan.so: $(readelf -d machine-static | grep NEEDED)"
fi
mv "$libdir/libsan.so.0" "$tmp/libsan.so.0.away"
./machine-static | grep -q '^ok EINVAL' || fail "static program does not run without libsan.so"
./machine 2>/dev/null && fail "the dynamic program ran without libsan.so.0 (test is broken)"
mv "$tmp/libsan.so.0.away" "$libdir/libsan.so.0"

# Every example builds against the installed tree alone (public headers, libsan), as README says:
# cc prog.c $(pkg-config --cflags --libs libsan).
for src in "$SAN_SRC"/examples/*.c; do
  name=$(basename "$src" .c)
  # shellcheck disable=SC2046,SC2086
  "$CC" ${SAN_EXTRA_CFLAGS:-} -Wall -Wextra -Werror "$src" -o "ex-$name" \
    $(pkg-config --cflags --libs libsan) || fail "examples/$name.c does not build from the install"
done

# quickstart: README's "Using it", as the file is; run against the installed daemon, and without one.
python3 - "$SAN_SRC/README.md" "$SAN_SRC/examples/quickstart.c" <<'PY' || fail "README.md does not show examples/quickstart.c as it is"
import re, sys
blocks = re.findall(r'^```c\n(.*?)^```$', open(sys.argv[1]).read(), re.S | re.M)
sys.exit(0 if open(sys.argv[2]).read() in blocks else 1)
PY
set +e
SANPROXY_SOCKET=$tmp/nobody.sock ./ex-quickstart >out 2>err
rc=$?
set -e
[[ $rc -ne 0 ]] || fail "quickstart without a daemon exited 0"
grep -q "san_open: ENOENT.*no sanproxyd" err || fail "quickstart without a daemon: $(cat err)"
mkfifo ready
"$prefix/bin/sanproxyd" --foreground --socket "$tmp/s.sock" --ready-fd 3 3>ready 2>daemon.log &
pid=$!
read -r _ <ready || fail "installed sanproxyd did not start: $(cat daemon.log)"
SANPROXY_SOCKET=$tmp/s.sock ./ex-quickstart >out 2>err || fail "quickstart: $(cat err)"
grep -q "^proxy memory: 64 KiB at .*physical address 0x" out || fail "quickstart output: $(cat out)"
grep -q "^registered: 64 KiB at .*lkey 0x" out || fail "quickstart output: $(cat out)"
"$prefix/bin/sanctl" --socket "$tmp/s.sock" stats --json | grep -q '"allocations": 0' ||
  fail "quickstart left an allocation behind"
# The installed sanrun preloads the installed libsansock.so (not the build tree's).
if [[ -z ${SAN_EXTRA_CFLAGS:-} ]]; then # an instrumented library needs its sanitizer runtime
  out=$("$prefix/bin/sanrun" --socket "$tmp/s.sock" sh -c 'echo "$LD_PRELOAD|$SANPROXY_SOCKET"')
  [[ $out == "$libdir/libsansock.so|$tmp/s.sock" ]] || fail "installed sanrun: '$out'"
fi
kill -TERM "$pid"
wait "$pid" || fail "installed sanproxyd: bad exit"
pid=
echo "install: headers, libsan (shared and static), pkg-config, examples, tools and man pages work"
