#!/usr/bin/env bash
# sanproxyd and sanctl as a user meets them: config errors (exit 2, key and line named), the socket
# (mode 0660: its group may use it, nobody else; a second daemon refused), sanctl's commands,
# failures and timeout, SIGTERM (exit 0, socket removed), detaching without --foreground. Never
# leaves a daemon behind (trap on every exit).
set -euo pipefail
# As under CTest: a developer's own settings do not reach the test.
unset SANPROXY_SOCKET SANPROXY_SPIN_US SANPROXY_LOG SANPROXY_TEST_PASS_RIGHTS \
  SAN_RCACHE_MAX_ENTRIES SAN_RCACHE_MAX_BYTES SANPERF_DAEMON_LOG
bin=${SAN_BIN:?SAN_BIN not set}
tmp=$(mktemp -d /tmp/santest.XXXXXX)
pids=()
gdir=
cleanup() {
  for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  rm -rf "$tmp" ${gdir:+"$gdir"}
}
trap cleanup EXIT
fail() { echo "FAIL: $*" >&2; [ -f "$tmp/log" ] && tail -20 "$tmp/log" >&2; exit 1; }

# --- config errors: exit 2, message names the key and the line ---
expect_config_error() { # $1 = config text, $2 = pattern the message must match
  printf '%b' "$1" >"$tmp/bad.ini"
  set +e
  timeout 10 "$bin/sanproxyd" --foreground --socket "$tmp/never" --config "$tmp/bad.ini" 2>"$tmp/err"
  local rc=$?
  set -e
  [ $rc -eq 2 ] || fail "config '$1': exit $rc, want 2"
  grep -qE "$2" "$tmp/err" || fail "config '$1': message '$(cat "$tmp/err")' lacks /$2/"
  [ ! -e "$tmp/never" ] || fail "a socket was created despite a bad config"
}
expect_config_error '[machine]\nram_size = 8Q\n' 'bad.ini:2:.*ram_size'
expect_config_error '# comment\n[machine]\nnolowmem = maybe\n' 'bad.ini:3:.*nolowmem'
expect_config_error '[nic]\ndma_address_width = 65\n' 'bad.ini:2:.*dma_address_width'
expect_config_error '[limits]\nlocked_bytes = 1G\nregistrations = -1\n' 'bad.ini:3:.*registrations'
expect_config_error '[limits]\nallocation = 4\n' 'bad.ini:2:.*allocation.*unknown key'
expect_config_error '[bogus]\nx = 1\n' 'bad.ini:2:.*\[bogus\] x'
expect_config_error '[machine]\nram_size = 1G\n\n[limts]\n' 'bad.ini:4:.*\[limts\]: unknown section'
expect_config_error '[machine]\nthis line has no equals sign\n' 'bad.ini:2:.*syntax'
expect_config_error '[machine]\njunk\nram_size = 1Q\n' 'bad.ini:2:.*syntax'
# A key set twice names both lines (the second value would silently win otherwise).
expect_config_error '[machine]\nram_size = 8G\n[nic]\nmax_length = 64K\n[machine]\nram_size = 16G\n' \
  'bad.ini:6: \[machine\] ram_size: set twice, on line 2 and on line 6'
# ram_size: what is accepted is what works (the RAM is one mapping in 128 TiB of address space).
expect_config_error '[machine]\nram_size = 65T\n' 'bad.ini:2:.*ram_size: a size from 16M to 64T'
# [link]: addresses, peers, durations, the secret, and listen required once the section is used
expect_config_error '[link]\nlisten = 10.0.0.1\n' 'bad.ini:2:.*\[link\] listen: a specific ADDRESS:PORT'
expect_config_error '[link]\nlisten = 0.0.0.0:7000\n' 'bad.ini:2:.*listen: .*not a wildcard'
expect_config_error '[link]\nlisten = 10.0.0.1:70000\n' 'bad.ini:2:.*listen'
expect_config_error '[link]\nlisten = host.example:7000\n' 'bad.ini:2:.*listen'
expect_config_error '[link]\nlisten = 10.0.0.1:7000\npeers = 10.0.0.2:7000, nope\n' 'bad.ini:3:.*peers: up to 16'
expect_config_error '[link]\nlisten = 10.0.0.1:7000\npeers = 10.0.0.2:7000 10.0.0.2:7000\n' 'bad.ini:3:.*peers: each peer once'
expect_config_error '[link]\nlisten = 10.0.0.1:7000\npeers = 10.0.0.1:7000\n' "\[link\] peers: names this daemon's own listen address"
expect_config_error '[link]\nlisten = 10.0.0.1:7000\ntimeout = 5 parsecs\n' 'bad.ini:3:.*timeout: a duration from 100ms to 1h'
expect_config_error '[link]\nlisten = 10.0.0.1:7000\ntimeout = 10ms\n' 'bad.ini:3:.*timeout: a duration'
expect_config_error '[link]\nlisten = 10.0.0.1:7000\nsecret = a\nsecret_file = /etc/hostname\n' 'bad.ini:4:.*secret_file: secret and secret_file: one of them'
expect_config_error '[link]\nlisten = 10.0.0.1:7000\nsecret_file = /nonexistent/secret\n' 'bad.ini:3:.*secret_file: cannot open'
printf 'x%.0s' {1..257} >"$tmp/long-secret"
expect_config_error "[link]\nlisten = 10.0.0.1:7000\nsecret_file = $tmp/long-secret\n" 'bad.ini:3:.*secret_file: a readable file of 1 to 256 bytes'
: >"$tmp/empty-secret"
expect_config_error "[link]\nlisten = 10.0.0.1:7000\nsecret_file = $tmp/empty-secret\n" 'bad.ini:3:.*secret_file: a readable file'
expect_config_error '[link]\nlisten = 10.0.0.1:7000\nprovider =\n' 'bad.ini:3:.*provider'
expect_config_error '[link]\nlisten = 10.0.0.1:7000\nport = 1\n' 'bad.ini:3:.*\[link\] port: unknown key'
expect_config_error '[link]\npeers = 10.0.0.2:7000\n' '\[link\] listen: required'
expect_config_error '[machine]\nram_size = 1024T\n' 'bad.ini:2:.*ram_size: a size from 16M to 64T'
printf '[machine]\nram_size = 64T\nnolowmem = true\n' >"$tmp/big.ini"
mkfifo "$tmp/ready-big"
"$bin/sanproxyd" --foreground --config "$tmp/big.ini" --socket "$tmp/big.sock" --ready-fd 3 \
  3>"$tmp/ready-big" 2>"$tmp/log-big" &
bpid=$!
pids+=("$bpid")
read -r _ <"$tmp/ready-big" || fail "ram_size = 64T (the largest accepted) does not start: $(cat "$tmp/log-big")"
"$bin/sanctl" --socket "$tmp/big.sock" stats --json | grep -q '"ram_bytes": 70368744177664' ||
  fail "ram_size = 64T not applied"
kill -TERM "$bpid"
wait "$bpid" || fail "the 64T daemon: bad exit"
# $SANPROXY_LOG: a level name, or an error (exit 2) that names it; nothing is created.
set +e
SANPROXY_LOG=loud timeout 10 "$bin/sanproxyd" --foreground --socket "$tmp/never" 2>"$tmp/err"; rc=$?
set -e
[ $rc -eq 2 ] || fail "SANPROXY_LOG=loud: exit $rc, want 2"
grep -q 'SANPROXY_LOG: error, warn, info or debug (got "loud")' "$tmp/err" ||
  fail "SANPROXY_LOG=loud: $(cat "$tmp/err")"
[ ! -e "$tmp/never" ] || fail "a socket was created despite a bad SANPROXY_LOG"
# A directory is no config file (it reads as an error, not as an empty file).
mkdir -p "$tmp/conf.d"
set +e
timeout 10 "$bin/sanproxyd" --foreground --config "$tmp/conf.d" --socket "$tmp/never" 2>"$tmp/err"
rc=$?
set -e
[ $rc -eq 2 ] && grep -q "conf.d: cannot read" "$tmp/err" || fail "config is a directory: exit $rc"
[ ! -e "$tmp/never" ] || fail "a socket was created despite an unreadable config"
set +e
"$bin/sanproxyd" --config "$tmp/does-not-exist.ini" --socket "$tmp/never" 2>"$tmp/err"; rc=$?
"$bin/sanproxyd" --bogus 2>/dev/null; rc2=$?
set -e
[ $rc -eq 2 ] && grep -q "does-not-exist" "$tmp/err" || fail "missing config file: exit $rc"
[ $rc2 -eq 2 ] || fail "unknown option: exit $rc2"
set +e
timeout 10 "$bin/sanproxyd" --foreground --config 2>"$tmp/err"; rc=$?
set -e
[ $rc -eq 2 ] && grep -q -- "--config: needs a value" "$tmp/err" || fail "--config without a value: exit $rc"

# --- a good config with every key; readiness through a FIFO, no sleeps ---
cat >"$tmp/good.ini" <<INI
; every key, with suffixes
[machine]
ram_size = 6GiB
nolowmem = yes
[nic]
dma_address_width = 32
scatter_gather = false
max_length = 64K
[limits]
locked_bytes = 256M
registrations = 100
allocations = 10
[daemon]
socket = $tmp/from-config.sock
INI
mkfifo "$tmp/ready"
SANPROXY_LOG=debug "$bin/sanproxyd" --foreground --config "$tmp/good.ini" --ready-fd 3 3>"$tmp/ready" \
  2>"$tmp/log" &
pid=$!
pids+=("$pid")
read -r line <"$tmp/ready" || fail "daemon did not become ready"
[ "$line" = ready ] || fail "readiness line '$line'"
sock=$tmp/from-config.sock
[ -S "$sock" ] || fail "no socket at the configured path"
mode=$(stat -c %a "$sock")
[ "$mode" = 660 ] || fail "socket mode $mode, want 660"

# --- sanctl ---
json=$("$bin/sanctl" --socket "$sock" stats --json)
for k in clients allocations allocated_bytes locked_bytes registrations ram_bytes free_bytes \
         low_free_bytes dma_faults bounce_bytes endpoints nic_ops nic_bytes links; do
  echo "$json" | grep -q "\"$k\": [0-9]" || fail "stats --json lacks $k: $json"
done
echo "$json" | grep -q '"ram_bytes": 6442450944' || fail "ram_size not applied: $json"
echo "$json" | grep -q '"nolowmem": true' || fail "nolowmem not applied: $json"
echo "$json" | python3 -c 'import json,sys; d=json.load(sys.stdin); assert d["clients"]==1 and d["allocations"]==0' \
  || fail "stats --json is not the JSON expected: $json"
"$bin/sanctl" --socket "$sock" stats | grep -q "clients" || fail "readable stats"
SANPROXY_SOCKET=$sock "$bin/sanctl" clients | grep -qE "^ +[0-9]+ +[0-9]+" || fail "clients table"
"$bin/sanctl" --socket "$sock" clients --json | grep -q '"pid"' || fail "clients --json"
"$bin/sanctl" --socket "$sock" allocations | grep -q "no allocations" || fail "allocations"
[ "$("$bin/sanctl" --socket "$sock" allocations --json)" = "[]" ] || fail "allocations --json"
"$bin/sanctl" --socket "$sock" check-lowmem | grep -q "clean" || fail "check-lowmem"
"$bin/sanctl" --socket "$sock" check-lowmem --json | grep -q '"dirty_frames": 0' || fail "check-lowmem --json"
set +e
"$bin/sanctl" --socket "$tmp/nothing-here" stats 2>"$tmp/err"; rc=$?
"$bin/sanctl" --socket "$sock" frobnicate 2>/dev/null; rc2=$?
"$bin/sanctl" 2>/dev/null; rc3=$?
set -e
[ $rc -eq 1 ] && grep -q "sanctl: connect" "$tmp/err" || fail "sanctl without daemon: exit $rc"
grep -q "sanctl: no sanproxyd at $tmp/nothing-here" "$tmp/err" || fail "sanctl without daemon: $(cat "$tmp/err")"
# Output that cannot be written (a full disk) is a failure, not a silent success.
set +e
"$bin/sanctl" --socket "$sock" stats --json >/dev/full 2>"$tmp/err"; rc4=$?
"$bin/sanctl" --socket "$sock" clients >/dev/full 2>"$tmp/err2"; rc5=$?
set -e
[ $rc4 -eq 1 ] && grep -q "sanctl: stats: cannot write" "$tmp/err" || fail "sanctl >/dev/full: exit $rc4"
[ $rc5 -eq 1 ] && grep -q "cannot write" "$tmp/err2" || fail "sanctl clients >/dev/full: exit $rc5"
[ $rc2 -eq 2 ] && [ $rc3 -eq 2 ] || fail "sanctl usage errors: $rc2 $rc3"

grep -q "debug: client [0-9]* connected" "$tmp/log" || fail "SANPROXY_LOG=debug not applied"

# --- sanctl against a daemon that accepts but never answers, and one that never accepts: it
# gives up after --timeout (default 5 s) with a message, exit 1, instead of hanging ---
mkfifo "$tmp/mute-ready"
python3 - "$tmp/mute.sock" "$tmp/deaf.sock" >"$tmp/mute-ready" <<'PY' &
import socket, sys, time
mute = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
mute.bind(sys.argv[1]); mute.listen(8)
deaf = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
deaf.bind(sys.argv[2]); deaf.listen(8)  # connections wait in the backlog, never accepted
print("ready", flush=True)
held = []
mute.settimeout(60)
try:
    while True:
        held.append(mute.accept()[0])  # accepted, never answered
except OSError:
    pass
PY
mpid=$!
pids+=("$mpid")
read -r _ <"$tmp/mute-ready" || fail "the mute server did not start"
for case in "mute 1 1000" "deaf 0.5 500" "mute - 5000"; do # server, --timeout (-: default), ms
  read -r server t want_ms <<<"$case"
  args=()
  [ "$t" = - ] || args=(--timeout "$t")
  start=$(date +%s%N)
  set +e
  timeout 30 "$bin/sanctl" --socket "$tmp/$server.sock" "${args[@]}" stats 2>"$tmp/err"; rc=$?
  set -e
  ms=$((($(date +%s%N) - start) / 1000000))
  [ $rc -eq 1 ] || fail "sanctl on a $server daemon ($case): exit $rc, want 1"
  grep -q "sanctl: stats: no answer from sanproxyd on $tmp/$server.sock within ${t/-/5} s (--timeout" \
    "$tmp/err" || fail "sanctl on a $server daemon ($case): $(cat "$tmp/err")"
  [ $ms -ge $((want_ms * 9 / 10)) ] && [ $ms -lt $((want_ms + 5000)) ] ||
    fail "sanctl on a $server daemon ($case): gave up after $ms ms, not $want_ms"
done
kill "$mpid" 2>/dev/null || true
set +e
"$bin/sanctl" --timeout -1 stats 2>"$tmp/err"; rc=$?
set -e
[ $rc -eq 2 ] && grep -q -- "--timeout: seconds" "$tmp/err" || fail "sanctl --timeout -1: exit $rc"

# --- who may use the socket (mode 0660): its group, which a set-group-ID directory gives it, and
# nobody else; as root, with the unprivileged user nobody, when nobody may run the tools here ---
if [ "$(id -u)" = 0 ] && command -v setpriv >/dev/null && id nobody >/dev/null 2>&1 &&
   setpriv --reuid=nobody --regid=nogroup --clear-groups "$bin/sanctl" --version >/dev/null 2>&1; then
  gdir=$(mktemp -d /tmp/santest-group.XXXXXX)
  chgrp nogroup "$gdir"
  chmod 2770 "$gdir"
  mkfifo "$tmp/ready-group"
  "$bin/sanproxyd" --foreground --socket "$gdir/s.sock" --ready-fd 3 3>"$tmp/ready-group" \
    2>"$tmp/log-group" &
  gpid=$!
  pids+=("$gpid")
  read -r _ <"$tmp/ready-group" || fail "daemon in a set-group-ID directory did not start"
  [ "$(stat -c '%a %G' "$gdir/s.sock")" = "660 nogroup" ] ||
    fail "socket in a set-group-ID directory: $(stat -c '%a %G' "$gdir/s.sock")"
  setpriv --reuid=nobody --regid=nogroup --clear-groups "$bin/sanctl" --socket "$gdir/s.sock" \
    stats --json >/dev/null || fail "a member of the socket's group was refused"
  set +e
  setpriv --reuid=nobody --regid=1 --clear-groups "$bin/sanctl" --socket "$gdir/s.sock" \
    stats 2>"$tmp/err"; rc=$?
  set -e
  [ $rc -eq 1 ] && grep -q "EACCES" "$tmp/err" && grep -q "mode 0660" "$tmp/err" ||
    fail "a user outside the socket's group: exit $rc: $(cat "$tmp/err")"
  kill -TERM "$gpid"
  wait "$gpid" || fail "daemon in a set-group-ID directory: bad exit"
  rmdir "$gdir"
  gdir=
fi

# --- a second daemon on a live socket is refused; the first keeps running ---
set +e
"$bin/sanproxyd" --foreground --socket "$sock" 2>"$tmp/err2"; rc=$?
set -e
[ $rc -eq 1 ] || fail "second daemon on a live socket: exit $rc"
"$bin/sanctl" --socket "$sock" stats >/dev/null || fail "first daemon hurt by the second"

# --- SIGTERM: exit 0, socket removed ---
kill -TERM "$pid"
set +e
wait "$pid"; rc=$?
set -e
[ $rc -eq 0 ] || fail "SIGTERM: exit $rc"
[ ! -e "$sock" ] || fail "socket left behind after SIGTERM"
grep -q "info: stopped" "$tmp/log" || fail "no 'stopped' in the log"

# --- out of descriptors: the daemon stops accepting (no busy loop), resumes when clients leave ---
# With 32 descriptors the daemon allows 17 connections, the last 16 of them root's only: root's
# 40 connections run it out of descriptors, an ordinary user's are refused by the count first (so
# the daemon never runs out). Either way every attempt costs a bounded number of log lines, and a
# connection works again once the others went.
if [ "$(id -u)" = 0 ]; then
  want="not accepting until a client leaves"
else
  want="refused: the last connections are kept for root"
fi
mkfifo "$tmp/ready3"
(ulimit -n 32; exec "$bin/sanproxyd" --foreground --socket "$tmp/few.sock" --ready-fd 3 \
   3>"$tmp/ready3" 2>"$tmp/log3") &
fpid=$!
pids+=("$fpid")
read -r _ <"$tmp/ready3" || fail "daemon with few descriptors did not start"
python3 - "$tmp/few.sock" "$bin/sanctl" "$tmp/log3" "$want" <<'PY' || fail "descriptor exhaustion"
import socket, subprocess, sys, time
path, sanctl, log, want = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
held = []
for _ in range(40):  # more than 32 descriptors' worth: some stay in the backlog
    s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    s.connect(path)
    held.append(s)
# Hold them until the daemon says it ran out or refused (it logs it), then let go.
for _ in range(2000):
    if want in open(log).read():
        break
    time.sleep(0.005)
for s in held:
    s.close()
out = subprocess.run([sanctl, "--socket", path, "stats", "--json"], capture_output=True, timeout=20)
assert out.returncode == 0, out.stderr
PY
grep -q "$want" "$tmp/log3" || fail "no '$want' logged"
# At most a refusal and a pause per connection attempt: a busy loop would log thousands.
n=$(grep -c "refused\|out of descriptors" "$tmp/log3" || true)
[ "$n" -le 82 ] || fail "accept errors logged in a loop ($n lines)"
kill -TERM "$fpid"; wait "$fpid" || fail "daemon with few descriptors: bad exit"

# --- without --foreground: detaches once ready; a stale socket file is replaced ---
touch "$tmp/log2"
python3 - "$tmp/stale.sock" <<'PY' || fail "cannot leave a stale socket file"
import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET); s.bind(sys.argv[1])
PY
[ -S "$tmp/stale.sock" ] || fail "no stale socket file to replace"
"$bin/sanproxyd" --socket "$tmp/stale.sock" 2>"$tmp/log2" || fail "detached start failed"
"$bin/sanctl" --socket "$tmp/stale.sock" stats --json >/dev/null || fail "detached daemon not answering"
dpid=$(grep -o 'sanproxyd\[[0-9]*\]: info: ready' "$tmp/log2" | grep -o '[0-9]*' | head -1)
[ -n "$dpid" ] || fail "no ready line from the detached daemon"
pids+=("$dpid")
kill -TERM "$dpid"
timeout 10 tail --pid="$dpid" -f /dev/null || true
kill -0 "$dpid" 2>/dev/null && fail "detached daemon ignored SIGTERM"
[ ! -e "$tmp/stale.sock" ] || fail "socket left behind"
echo ok
