#!/usr/bin/env bash
# Every public header compiles on its own (included twice: its guard works) in strict C11, and as
# C++: it compiles as C++17 (not -pedantic: struct san_sg_list ends in a flexible array member,
# which C++ compilers take as an extension), and its functions have C linkage there (a C++ unit
# that takes the address of every function the header declares must reference their plain C names,
# never mangled ones: the extern "C" guards are in place).
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
    continue
  fi
  # The functions this header declares (san_name followed by an opening parenthesis).
  mapfile -t funcs < <(grep -o '\bsan_[a-z0-9_]*(' "$h" | tr -d '(' | sort -u)
  {
    printf '#include <%s>\n#include <%s>\n' "$name" "$name"
    printf 'extern void (*const san_header_check_funcs[])(void);\n'
    printf 'void (*const san_header_check_funcs[])(void) = {\n'
    for f in "${funcs[@]}"; do
      printf '    reinterpret_cast<void (*)(void)>(&%s),\n' "$f"
    done
    printf '    nullptr};\n'
  } >"$tmp/t.cc"
  if ! "$cc" -x c++ -std=c++17 -Wall -Wextra -Werror -I"$inc" -c "$tmp/t.cc" -o "$tmp/t.o"; then
    echo "FAIL: $name does not compile as C++" >&2
    fail=1
    continue
  fi
  mangled=$(nm -u "$tmp/t.o" | awk '{print $2}' | grep '^_Z.*san_' || true)
  if [[ -n $mangled ]]; then
    echo "FAIL: $name: C++ sees these functions without C linkage: $mangled" >&2
    fail=1
    continue
  fi
  for f in "${funcs[@]}"; do
    nm -u "$tmp/t.o" | grep -qw "$f" || { echo "FAIL: $name: $f not referenced" >&2; fail=1; }
  done
  echo "ok: $name (C11, C++17, ${#funcs[@]} functions with C linkage)"
done
exit $fail
