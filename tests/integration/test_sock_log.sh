#!/usr/bin/env bash
# SANSOCK_LOG=1: the switch says on standard error what it did behind the program's back, one
# "sansock[PID]: ..." line per event, and nothing at all without it. Under sanrun against the
# test's daemon: a listener says it listens on TCP and the SAN; a client's connect to it says
# "over the SAN", one to a port nobody listens on "over TCP (Connection refused)"; a server
# that closes two connections whose peers never read, with SANSOCK_MAX_ORPHANS=1, says it reset
# one. The same runs without SANSOCK_LOG print no such line. A single-threaded program that
# connects to its own listener before it accepts goes over the SAN at once (its connect looks at
# that listener itself), not over TCP after SANSOCK_CONNECT_TIMEOUT_MS.
set -euo pipefail
: "${SAN_BIN:?}"
test=test_sock_log logs='*.err'
# shellcheck source=sock_programs_lib.sh
source "$(dirname "$0")/sock_programs_lib.sh"
command -v python3 >/dev/null || skip "python3 is not installed"
start_daemon

# A server: listens on 127.0.0.1 (port 0, printed first), accepts two connections, writes 300 KiB
# (above the RDMA threshold: offers the peers never take) to each and closes it, then waits for
# stdin to close.
cat >"$tmp/server.py" <<'PY'
import socket, sys
l = socket.socket()
l.bind(("127.0.0.1", 0))
l.listen(4)
print(l.getsockname()[1], flush=True)
for _ in range(2):
    s, _ = l.accept()
    s.sendall(b"x" * (300 << 10))
    s.close()
print("served", flush=True)
sys.stdin.read()
PY
# A client: two connections to PORT that it never reads, one to FREE (refused); then waits for
# stdin to close.
cat >"$tmp/client.py" <<'PY'
import socket, sys
port, free = int(sys.argv[1]), int(sys.argv[2])
keep = [socket.create_connection(("127.0.0.1", port)) for _ in range(2)]
try:
    socket.create_connection(("127.0.0.1", free))
except ConnectionRefusedError:
    pass
print("connected", flush=True)
sys.stdin.read()
PY

# run LOG NAME: the pair with SANSOCK_LOG=LOG; the server's stderr in $tmp/NAME-server.err, the
# client's in $tmp/NAME-client.err.
run() {
  local log=$1 name=$2 port free
  mkfifo "$tmp/$name-sin" "$tmp/$name-cin"
  SANSOCK_LOG=$log SANSOCK_MAX_ORPHANS=1 timeout 60 "$SAN_BIN/sanrun" python3 "$tmp/server.py" \
    <"$tmp/$name-sin" >"$tmp/$name-server.out" 2>"$tmp/$name-server.err" &
  pids+=($!)
  local spid=$!
  exec 7>"$tmp/$name-sin"
  for _ in $(seq 100); do
    port=$(head -1 "$tmp/$name-server.out" 2>/dev/null || true)
    [[ -n $port ]] && break
    sleep 0.1
  done
  [[ -n $port ]] || fail "$name: the server printed no port"
  free=$(free_port)
  SANSOCK_LOG=$log timeout 60 "$SAN_BIN/sanrun" python3 "$tmp/client.py" "$port" "$free" \
    <"$tmp/$name-cin" >"$tmp/$name-client.out" 2>"$tmp/$name-client.err" &
  pids+=($!)
  local cpid=$!
  exec 8>"$tmp/$name-cin"
  for _ in $(seq 200); do
    grep -q served "$tmp/$name-server.out" && grep -q connected "$tmp/$name-client.out" && break
    sleep 0.1
  done
  grep -q served "$tmp/$name-server.out" || fail "$name: the server did not serve both"
  grep -q connected "$tmp/$name-client.out" || fail "$name: the client did not connect"
  sleep 0.3 # the finisher's drop follows the second close
  exec 7>&- 8>&-
  wait "$cpid" || fail "$name: the client failed"
  wait "$spid" || fail "$name: the server failed"
}

run 1 on
want() { # want FILE PATTERN WHAT
  grep -Eq "^sansock\[[0-9]+\]: $2" "$tmp/$1" || fail "no '$3' in $1: $(cat "$tmp/$1")"
}
want on-server.err "listen on port [0-9]+: TCP and 1 SAN address$" "listen"
want on-client.err "connect to 127\.0\.0\.1:[0-9]+: over the SAN$" "connect over the SAN"
want on-client.err "connect to 127\.0\.0\.1:[0-9]+: over TCP \(Connection refused\)$" "refused"
want on-server.err "a closed connection reset: more than SANSOCK_MAX_ORPHANS=1 " "orphan reset"
((n = $(grep -c '^sansock\[' "$tmp/on-client.err"))) || true
((n == 3)) || fail "the client said $n lines, want 3: $(cat "$tmp/on-client.err")"

run 0 off
! grep -q 'sansock\[' "$tmp/off-server.err" "$tmp/off-client.err" ||
  fail "lines without SANSOCK_LOG: $(cat "$tmp/off-server.err" "$tmp/off-client.err")"
# One thread: listen, connect to itself, accept, a byte each way.
cat >"$tmp/self.py" <<'PY'
import socket
l = socket.socket()
l.bind(("127.0.0.1", 0))
l.listen(1)
c = socket.create_connection(("127.0.0.1", l.getsockname()[1]))
a, _ = l.accept()
c.sendall(b"p")
assert a.recv(1) == b"p"
a.sendall(b"q")
assert c.recv(1) == b"q"
print("ok")
PY
before=$(nic_bytes)
SANSOCK_LOG=1 timeout 60 "$SAN_BIN/sanrun" python3 "$tmp/self.py" >"$tmp/self.out" 2>"$tmp/self.err" ||
  fail "self-connect: exit $? ($(cat "$tmp/self.err"))"
grep -qx ok "$tmp/self.out" || fail "self-connect said '$(cat "$tmp/self.out")'"
want self.err "connect to 127\.0\.0\.1:[0-9]+: over the SAN$" "a self-connect over the SAN"
(($(nic_bytes) - before >= 2)) || fail "self-connect: nothing crossed the SAN"

echo "sock log: listen, connect over the SAN and over TCP, an orphan reset; nothing when off; a" \
  "single-threaded self-connect over the SAN"
