#!/usr/bin/env bash
# libsan's boundary, read from the installed tree: the dynamic symbols libsan.so defines, and the
# global symbols libsan.a defines, are exactly the functions (and variables) the installed headers
# declare. The public names come from the headers through the preprocessor, not from a list kept
# here: an internal function escaping -fvisibility=hidden fails it, and so does a declaration
# without SAN_API (declared, not exported).
set -euo pipefail
: "${SAN_BUILD:?}" "${CC:=cc}"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
prefix=$tmp/prefix
fail() { echo "FAIL: $*" >&2; exit 1; }

cmake --install "$SAN_BUILD" --prefix "$prefix" >/dev/null
so=$(find "$prefix" -name libsan.so | head -1)
[[ -n $so ]] || fail "libsan.so not installed"
lib=$(dirname "$so")
readelf -d "$so" | grep -q 'SONAME.*\[libsan\.so\.0\]' || fail "libsan.so's SONAME is not libsan.so.0"

# What the public headers declare, as a program including all of them sees it.
for h in "$prefix"/include/san/*.h; do echo "#include <san/$(basename "$h")>"; done >"$tmp/all.c"
"$CC" -std=c11 -E -P -I"$prefix/include" "$tmp/all.c" >"$tmp/all.i"
python3 - "$tmp/all.i" >"$tmp/public" <<'PY'
import re, sys
text = open(sys.argv[1]).read()
text = re.sub(r'__attribute__\s*\(\((?:[^()]|\([^()]*\))*\)\)', ' ', text)
# Top-level declarations end in ';' outside braces (struct, union and enum bodies are skipped);
# typedefs and static (inline) functions define no symbol of the library.
names, depth, stmt = set(), 0, []
for ch in text:
    if ch == '{':
        depth += 1
    elif ch == '}':
        depth -= 1
    elif depth == 0 and ch == ';':
        s = ' '.join(''.join(stmt).split())
        stmt = []
        if re.match(r'(typedef|static)\b', s):
            continue
        fn = re.search(r'\b(san_\w+)\s*\(', s)
        var = re.match(r'extern\b[^(]*\b(san_\w+)\s*(\[[^]]*\])?$', s)
        if fn or var:
            names.add((fn or var).group(1))
    elif depth == 0:
        stmt.append(ch)
for n in sorted(names):
    print(n)
PY
n=$(wc -l <"$tmp/public")
[[ $n -ge 20 ]] || fail "only $n public names found in the headers: the header scan is broken"

check() { # $1 = what, $2 = file of defined global names
  local extra missing
  extra=$(comm -13 "$tmp/public" "$2")
  missing=$(comm -23 "$tmp/public" "$2")
  [[ -z $extra ]] || fail "$1 defines names that are not public API (missing -fvisibility=hidden?):
$extra"
  [[ -z $missing ]] || fail "$1 lacks public functions (declared without SAN_API?):
$missing"
}
nm -D --defined-only "$so" | awk 'NF == 3 {print $3}' | sort -u >"$tmp/so"
check "libsan.so" "$tmp/so"
nm -g --defined-only "$lib/libsan.a" | awk 'NF == 3 {print $3}' | sort -u >"$tmp/a"
check "libsan.a" "$tmp/a"
echo "exports: libsan.so and libsan.a define exactly the $n public names"
