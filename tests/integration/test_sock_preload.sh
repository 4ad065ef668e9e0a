#!/usr/bin/env bash
# sanrun and libsansock.so preloaded into programs that use no sockets, or only the kernel's:
# nothing changes. `sanrun true` exits 0, `sanrun false` 1; `sanrun ls` lists a directory as ls does;
# a shell pipeline, a file copy with dd and python's own sockets over a Unix socketpair and UDP work
# as without it; sanrun's LD_PRELOAD keeps what was there; --socket sets SANPROXY_SOCKET; a missing
# program exits 127.
set -euo pipefail
: "${SAN_BIN:?}"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }
run=$SAN_BIN/sanrun

"$run" true || fail "sanrun true: exit $?"
set +e
"$run" false
rc=$?
# A PATH every user can search: an unsearchable directory in it makes execvp say EACCES (126),
# as env(1) does.
PATH=/usr/bin:/bin "$run" no-such-program-here 2>/dev/null
rc2=$?
set -e
[[ $rc -eq 1 ]] || fail "sanrun false: exit $rc"
[[ $rc2 -eq 127 ]] || fail "sanrun of a missing program: exit $rc2"

# A directory of its own: / and /tmp change while other tests run.
mkdir "$tmp/dir" && touch "$tmp/dir/a" "$tmp/dir/b" && ln -s a "$tmp/dir/c"
ls -lA "$tmp/dir" >"$tmp/plain"
"$run" ls -lA "$tmp/dir" >"$tmp/pre"
cmp -s "$tmp/plain" "$tmp/pre" || fail "sanrun ls differs from ls"

head -c 3000000 /dev/urandom >"$tmp/in"
"$run" sh -c "cat '$tmp/in' | dd of='$tmp/out' bs=64k status=none 2>/dev/null && sort -u /etc/passwd >/dev/null"
cmp -s "$tmp/in" "$tmp/out" || fail "a pipeline under sanrun lost data"

out=$("$run" python3 - <<'PY'
import socket
a, b = socket.socketpair()
a.sendall(b"x" * 100000)
a.shutdown(socket.SHUT_WR)
got = b""
while True:
    d = b.recv(65536)
    if not d:
        break
    got += d
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
u.bind(("127.0.0.1", 0))
v = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
v.sendto(b"ping", u.getsockname())
print(len(got), u.recvfrom(10)[0].decode())
PY
)
[[ $out == "100000 ping" ]] || fail "python's Unix and UDP sockets under sanrun: '$out'"

out=$(LD_PRELOAD=/lib/x86_64-linux-gnu/libc.so.6 "$run" --socket "$tmp/x.sock" sh -c 'echo "$LD_PRELOAD|$SANPROXY_SOCKET"')
lib=$(realpath "$SAN_BIN/../lib/libsansock.so")
[[ $out == "$lib /lib/x86_64-linux-gnu/libc.so.6|$tmp/x.sock" ]] || fail "sanrun's environment: '$out'"
echo "sock preload: programs without SAN sockets behave as without sanrun"
