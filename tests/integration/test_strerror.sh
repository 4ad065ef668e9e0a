#!/usr/bin/env bash
# san_strerror names every code a public call can return: each -E... the sources and public headers
# mention (src/, include/san/, tools/), the codes the system calls under them pass through
# (socket, connect, mmap, mlock), and those the NIC's endpoints return (DESIGN section 8). Each
# message starts with the code's own name; 0 is "success"; a code nobody returns is "unknown".
set -euo pipefail
: "${SAN_BUILD:?}" "${SAN_SRC:?}" "${CC:=cc}"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

passed_through="ENOENT ENOTDIR ELOOP EACCES EPROTOTYPE ENOTSOCK EMFILE ENFILE ENAMETOOLONG ENOMEM
  EAGAIN EPERM ENODEV EINTR ENOSYS"
endpoints="EADDRINUSE EADDRNOTAVAIL ECONNREFUSED ECONNRESET ENETUNREACH ETIMEDOUT ENOTCONN ECANCELED
  EMSGSIZE"
codes=$({
  grep -rhoE -- '-E[A-Z0-9]{2,}\b' "$SAN_SRC/src" "$SAN_SRC/include" "$SAN_SRC/tools" | tr -d -- -
  printf '%s\n' $passed_through $endpoints
} | sort -u)

{
  echo '#include <errno.h>'
  echo '#include <stdio.h>'
  echo '#include <string.h>'
  echo '#include <san/error.h>'
  echo 'static int bad;'
  echo 'static void check(const char *name, int code)'
  echo '{'
  echo '    const char *m = san_strerror(-code);'
  echo '    size_t n = strlen(name);'
  echo '    if (strncmp(m, name, n) || m[n] != 0x3a || strcmp(m, san_strerror(code))) {'
  echo '        printf("%s: \"%s\"\n", name, m);'
  echo '        bad = 1;'
  echo '    }'
  echo '}'
  echo 'int main(void)'
  echo '{'
  for c in $codes; do
    printf '#ifdef %s\n    check("%s", %s);\n#endif\n' "$c" "$c" "$c"
  done
  echo '    if (strcmp(san_strerror(0), "success") || strcmp(san_strerror(-4000), "unknown error"))'
  echo '        bad = printf("0 or an unknown code misnamed\n");'
  echo '    return bad;'
  echo '}'
} >"$tmp/names.c"
# shellcheck disable=SC2086
"$CC" ${SAN_EXTRA_CFLAGS:-} -std=c11 -I"$SAN_SRC/include" "$tmp/names.c" "$SAN_BUILD/libsan.a" \
  -lpthread -o "$tmp/names"
if ! "$tmp/names" >"$tmp/out"; then
  echo "FAIL: codes san_strerror does not name as themselves:" >&2
  cat "$tmp/out" >&2
  exit 1
fi
echo "san_strerror names all $(wc -w <<<"$codes") codes"
