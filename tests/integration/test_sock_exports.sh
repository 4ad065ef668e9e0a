#!/usr/bin/env bash
# libsansock.so's boundary: the dynamic symbols it defines are exactly the libc names
# src/sock/*.c define with EXPORT (interpose.c and the files of the call families), and exactly
# those the version script lists: no libsan name, no internal of the switch. Each of them is a name libc itself defines (an interposer
# exports nothing else). Read from the installed tree.
set -euo pipefail
: "${SAN_BUILD:?}" "${SAN_SRC:?}"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }

cmake --install "$SAN_BUILD" --prefix "$tmp/prefix" >/dev/null
so=$(find "$tmp/prefix" -name libsansock.so | head -1)
[[ -n $so ]] || fail "libsansock.so not installed"

nm -D --defined-only "$so" | awk 'NF == 3 {print $3}' | sed 's/@.*//' | sort -u >"$tmp/so"
grep -hoE '^EXPORT [a-z_0-9 ]+\*? ?[a-z_0-9]+\(' "$SAN_SRC"/src/sock/*.c |
  sed -E 's/.*[ *]([a-z_0-9]+)\($/\1/' | sort -u >"$tmp/src"
sed -n '/global:/,/local:/p' "$SAN_SRC/src/sock/sansock.map" | grep -v -e global: -e local: |
  tr ';' '\n' | tr -d ' ' | grep . | sort -u >"$tmp/map"
[[ $(wc -l <"$tmp/src") -ge 38 ]] || fail "only $(wc -l <"$tmp/src") EXPORT functions found: the scan is broken"
diff -u "$tmp/src" "$tmp/map" >&2 || fail "src/sock's EXPORT functions and sansock.map differ"
diff -u "$tmp/src" "$tmp/so" >&2 || fail "libsansock.so's dynamic symbols are not the interposed names"

libc=$(ldd /bin/true | awk '/libc\.so/ {print $3}')
nm -D --defined-only "$libc" | awk '{print $3}' | sed 's/@.*//' | sort -u >"$tmp/libc"
extra=$(comm -23 "$tmp/so" "$tmp/libc")
[[ -z $extra ]] || fail "libsansock.so exports names libc does not define: $extra"
echo "sock exports: libsansock.so defines exactly the $(wc -l <"$tmp/so") libc names it interposes"
