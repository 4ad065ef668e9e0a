#!/usr/bin/env bash
# Which connects and listens the sockets switch takes to the SAN, on one host: the daemon serves
# 127.1.0.0/16 only ([nic] addresses), so 127.0.0.1 is not on the SAN. Under sanrun: a server
# bound to 127.1.0.5 (served) is reached over the SAN (nic_bytes grows), one bound to 127.0.0.1
# over TCP (nic_bytes still); one on the wildcard listens on the SAN at the served addresses of
# the host's interfaces, and 127.1.0.5 is none (lo has 127.0.0.1), so it is reached over TCP at
# both. A client connecting 300 times to a plain TCP server asks the daemon a few times only
# (strace counts its control messages: the context's HELLO, NETWORKS, a refresh at most once a
# second), never once per connect. Without a daemon everything is TCP. With the default networks
# a dual-stack wildcard server is reached over the SAN at 127.0.0.1 and at ::1.
set -euo pipefail
: "${SAN_BIN:?}"
test=test_sock_route logs='*.log'
# shellcheck source=sock_programs_lib.sh
source "$(dirname "$0")/sock_programs_lib.sh"
command -v python3 >/dev/null || skip "python3 is not installed"
command -v strace >/dev/null || skip "strace is not installed"
printf '[nic]\naddresses = 127.1.0.0/16\n' >"$tmp/d.ini"
start_daemon --config "$tmp/d.ini"

# An echo server: python3 HOST (port 0), its port on stdout's first line, serving until killed;
# it waits for connections in epoll (selectors), accepts without blocking, and serves each in
# turn on the same thread (the clients here are sequential).
cat >"$tmp/server.py" <<'PY'
import selectors, socket, sys
s = socket.socket(socket.AF_INET6 if ":" in sys.argv[1] else socket.AF_INET)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
if ":" in sys.argv[1]:
    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
s.bind((sys.argv[1], 0))
s.listen(64)
s.setblocking(False)
sel = selectors.DefaultSelector()
sel.register(s, selectors.EVENT_READ)
print(s.getsockname()[1], flush=True)
while True:
    sel.select()
    try:
        c, _ = s.accept()
    except BlockingIOError:
        continue
    with c:
        c.setblocking(True)
        while (b := c.recv(65536)):
            c.sendall(b)
PY
# A client: python3 HOST PORT N: N connections, each sends 4 KiB and reads them back.
cat >"$tmp/client.py" <<'PY'
import os, socket, sys
host, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
data = os.urandom(4096)
for _ in range(n):
    with socket.create_connection((host, port)) as c:
        c.sendall(data)
        got = b""
        while len(got) < len(data):
            b = c.recv(65536)
            if not b:
                sys.exit("early end of stream")
            got += b
        if got != data:
            sys.exit("the echo differs")
PY
# serve NAME HOST [sanrun]: a server in the background, its port in port[NAME]
declare -A port=()
serve() {
  local run=()
  [[ ${3:-} == sanrun ]] && run=("$SAN_BIN/sanrun")
  "${run[@]}" python3 -u "$tmp/server.py" "$2" >"$tmp/$1.out" 2>"$tmp/$1.log" &
  pids+=($!)
  for _ in $(seq 100); do [[ -s $tmp/$1.out ]] && break; sleep 0.05; done
  port[$1]=$(head -1 "$tmp/$1.out")
  [[ -n ${port[$1]} ]] || fail "server $1 did not start"
}
# over NAME HOST N: the client under sanrun, N connections to server NAME; prints nic_bytes' growth
over() {
  local before
  before=$(nic_bytes)
  timeout 60 "$SAN_BIN/sanrun" python3 "$tmp/client.py" "$2" "${port[$1]}" "$3" 2>>"$tmp/client.log" ||
    fail "client to $1 at $2: $(tail -3 "$tmp/client.log")"
  echo $(($(nic_bytes) - before))
}

serve served 127.1.0.5 sanrun
serve unserved 127.0.0.1 sanrun
serve wild 0.0.0.0 sanrun
serve plain 127.0.0.1

(($(over served 127.1.0.5 3) >= 3 * 2 * 4096)) || fail "a served address did not go over the SAN"
echo "ok: a listener at an address the daemon serves: reached over the SAN"
(($(over unserved 127.0.0.1 3) == 0)) || fail "an address the daemon does not serve went over the SAN"
echo "ok: a listener at an address the daemon does not serve: TCP"
(($(over wild 127.0.0.1 3) == 0)) || fail "the wildcard listener at 127.0.0.1 went over the SAN"
(($(over wild 127.1.0.5 3) == 0)) || fail "127.1.0.5 is no address of this host's: nothing listens there on the SAN"
echo "ok: a wildcard listener: on the SAN at served interface addresses only, TCP elsewhere"

# 300 connects to a plain TCP server: the switch's messages to the daemon are counted.
before=$(nic_bytes)
timeout 120 strace -f -qq -e trace=sendmsg -e signal=none -o "$tmp/strace.out" \
  "$SAN_BIN/sanrun" python3 "$tmp/client.py" 127.0.0.1 "${port[plain]}" 300 2>>"$tmp/client.log" ||
  fail "300 connects under strace"
requests=$(grep -c 'sendmsg(' "$tmp/strace.out" || true)
[[ $(nic_bytes) == "$before" ]] || fail "the plain server's connections went over the SAN"
# HELLO and NETWORKS, then one NETWORKS a second at most (strace slows the run: allow a few).
((requests >= 2 && requests <= 12)) || fail "$requests control messages for 300 connects"
echo "ok: 300 connects to a destination off the SAN: $requests messages to the daemon"

# No daemon: the served address is plain TCP too.
kill "${pids[0]}"
wait "${pids[0]}" 2>/dev/null || true
timeout 60 env SANPROXY_SOCKET="$tmp/none.sock" "$SAN_BIN/sanrun" python3 "$tmp/client.py" 127.0.0.1 \
  "${port[plain]}" 3 2>>"$tmp/client.log" || fail "no daemon: the client failed"
echo "ok: no daemon: TCP"

# The default networks (127.0.0.0/8, ::1/128): a dual-stack wildcard listens on the SAN at ::1 and
# 127.0.0.1, two SAN listeners behind one descriptor of the switch (epoll waits on it); both
# addresses are reached over the SAN.
rm -f "$tmp/ready" "$tmp/s.sock"
start_daemon
serve dual :: sanrun
(($(over dual 127.0.0.1 3) >= 3 * 2 * 4096)) || fail "[::] at 127.0.0.1 did not go over the SAN"
(($(over dual ::1 3) >= 3 * 2 * 4096)) || fail "[::] at ::1 did not go over the SAN"
echo "ok: a dual-stack wildcard with the default networks: 127.0.0.1 and ::1 over the SAN"
