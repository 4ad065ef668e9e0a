#!/usr/bin/env bash
# Every public header compiles on its own, in strict C11 and as C++ would see its guards.
set -euo pipefail
cc=$1 inc=$2
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail=0
for h in "$inc"/san/*.h; do
  name=san/$(basename "$h")
  printf '#include <%s>\n#include <%s>\nint san_header_check_unit;\n' "$name" "$name" >"$tmp/t.c"
  if ! "$cc" -std=c11 -Wall -Wextra -Werror -pedantic -I"$inc" -c "$tmp/t.c" -o "$tmp/t.o"; then
    echo "FAIL: $name does not compile on its own" >&2
    fail=1
  else
    echo "ok: $name"
  fi
done
exit $fail
