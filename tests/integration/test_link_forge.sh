#!/usr/bin/env bash
# Forged messages on an up link cost the forger, not the daemon's log. A sanproxyd in a network
# namespace of its own (on its loopback: 127.0.0.1 and 127.0.0.2) is linked to the test's
# tests/link/link_forger, which holds the secret and plays the peer daemon at the peer's address,
# and which also sends messages with a wrong MAC of the session (endpoint messages, heartbeats,
# PROOFs): 15 of them leave the session up (sessions, mac_failures 15, one log line); the 16th
# ends it (the reason logged) and the link comes back by itself with a new session; endpoint
# messages under the previous session's key are late messages, not forgeries (not counted);
# sessions ended one after the other log at most one line a second about it; the daemon answers
# and stops cleanly after. Needs root and `ip netns` (exit 77 otherwise). SAN_NETNS_PREFIX names
# the namespace (default sanforge).
set -euo pipefail
unset SANPROXY_SOCKET SANPROXY_SPIN_US SANPROXY_LOG
bin=${SAN_BIN:?SAN_BIN not set}
forger=${SAN_BUILD:?SAN_BUILD not set}/tests/link_forger

skip() {
  echo "SKIPPED: $*" >&2
  [[ -n ${SAN_SKIP_LOG:-} ]] && echo "integration/test_link_forge: $*" >>"$SAN_SKIP_LOG"
  exit 77
}
((EUID == 0)) || skip "network namespaces need root"
command -v ip >/dev/null || skip "no ip command (iproute2)"
command -v python3 >/dev/null || skip "no python3 (the JSON checks)"

ns=${SAN_NETNS_PREFIX:-sanforge}-$$
tmp=$(mktemp -d /tmp/santest.XXXXXX)
dpid= fpid= made=
cleanup() {
  [[ -n $fpid ]] && kill -9 "$fpid" 2>/dev/null
  [[ -n $dpid ]] && kill -9 "$dpid" 2>/dev/null
  [[ -z $made ]] || ip netns del "$ns" 2>/dev/null || true # only ours: a name taken already is another's
  rm -rf "$tmp"
}
trap cleanup EXIT
fail() {
  echo "FAIL: $*" >&2
  for f in "$tmp"/*.log; do [[ -f $f ]] && { echo "--- $f" >&2; tail -20 "$f" >&2; }; done
  exit 1
}

ip netns add "$ns" 2>/dev/null || skip "ip netns add failed (no network namespaces here)"
made=1
ip -n "$ns" link set lo up

cat >"$tmp/d.ini" <<INI
[machine]
ram_size = 64M
[nic]
addresses = 10.1.0.0/16
[link]
listen = 127.0.0.1:7000
peers = 127.0.0.2:7000
timeout = 2s
secret = forge test secret
INI
mkfifo "$tmp/ready"
ip netns exec "$ns" "$bin/sanproxyd" --foreground --config "$tmp/d.ini" --socket "$tmp/d.sock" \
  --ready-fd 3 3>"$tmp/ready" 2>>"$tmp/daemon.log" &
dpid=$!
read -r -t 30 line <"$tmp/ready" || fail "the daemon did not become ready"
[[ $line == ready ]] || fail "readiness line '$line'"

# The forger as a co-process: a command a line in, an answer a line out.
coproc FORGER { exec ip netns exec "$ns" "$forger" 127.0.0.2:7000 127.0.0.1:7000 "forge test secret" 2>>"$tmp/forger.log"; }
fpid=$FORGER_PID
ask() {
  local answer
  echo "$1" >&"${FORGER[1]}"
  read -r -t 30 answer <&"${FORGER[0]}" || fail "the forger did not answer '$1'"
  [[ $answer == "$2" ]] || fail "forger: '$1' answered '$answer', not '$2'"
}
# link EXPR: EXPR (Python, over the link `l` of sanctl links --json)
link() {
  "$bin/sanctl" --socket "$tmp/d.sock" links --json |
    python3 -c 'import json,sys; l=json.load(sys.stdin)[0]; print(eval(sys.argv[1]))' "$1"
}
# wait_for EXPR SECONDS: until EXPR holds of the link; fails past SECONDS.
wait_for() {
  python3 - "$bin/sanctl" "$tmp/d.sock" "$1" "$2" <<'PY' || fail "not ($1) within $2 s"
import json, subprocess, sys, time
sanctl, sock, expr, limit = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
t0 = time.monotonic()
while True:
    out = subprocess.run([sanctl, "--socket", sock, "links", "--json"], capture_output=True,
                         text=True, check=True).stdout
    l = json.loads(out)[0]
    if eval(expr):
        sys.exit(0)
    if time.monotonic() - t0 > limit:
        print(f"{l}", file=sys.stderr)
        sys.exit(1)
    time.sleep(0.02)
PY
}
# lines: the daemon's log lines about messages with a bad MAC so far
lines() { grep -c 'bad MAC' "$tmp/daemon.log" || true; }

ask "up 1" "up 1"
wait_for "l['state'] == 'up' and l['sessions'] == 1" 10
[[ $(link "l['networks']") == "['10.77.0.0/16']" ]] || fail "the forger's networks: $(link l)"
[[ $(link "l['mac_failures']") == 0 ]] || fail "mac_failures before any forgery: $(link l)"
[[ $(lines) == 0 ]] || fail "bad MAC lines before any forgery"
echo "ok: the forger is linked"

# --- 15 forgeries in a burst: dropped, counted, the session stays, one line in the log ---
ask "forge 10 ep" "forged 10"
ask "forge 3 heartbeat" "forged 3"
ask "forge 2 proof" "forged 2"
wait_for "l['mac_failures'] == 15" 5
sleep 0.5 # what the daemon would do about them, done
[[ $(link "l['state'], l['sessions'], l['mac_failures']") == "('up', 1, 15)" ]] ||
  fail "after 15 forgeries: $(link l)"
[[ $(link "l['last_error']") == "a message with a bad MAC was dropped" ]] || fail "$(link l)"
[[ $(lines) == 1 ]] || fail "15 forgeries in a burst logged $(lines) lines, not 1"
grep -q 'an endpoint message with a bad MAC was dropped (1 in this session, which ends at 16; 0 more' "$tmp/daemon.log" ||
  fail "the first forgery's line: $(grep 'bad MAC' "$tmp/daemon.log")"
"$bin/sanctl" --socket "$tmp/d.sock" links | grep -q "messages with a bad MAC: 15" ||
  fail "sanctl links' table: $("$bin/sanctl" --socket "$tmp/d.sock" links)"
echo "ok: 15 forgeries dropped and counted, the session up, 1 log line"

# --- the 16th ends the session; the link comes back with a new one by itself ---
sleep 1.1 # past the rate limit: the end is logged
ask "forge 1 ep" "forged 1"
wait_for "l['sessions'] == 2 and l['state'] == 'up'" 10
ask "up 2" "up 2"
[[ $(link "l['mac_failures']") == 16 ]] || fail "after the 16th: $(link l)"
grep -q '16 messages with a bad MAC in one session: it ended' "$tmp/daemon.log" ||
  fail "the end of the session is not logged"
[[ $(lines) == 2 ]] || fail "$(lines) lines after the 16th forgery, not 2"
echo "ok: the 16th forgery ended the session, the link is up again (session 2)"

# --- late messages of the previous session: no forgeries ---
ask "stale 20" "stale 20"
sleep 0.5
[[ $(link "l['state'], l['sessions'], l['mac_failures']") == "('up', 2, 16)" ]] ||
  fail "messages under the previous session's key were counted: $(link l)"
echo "ok: messages under the previous session's key dropped, not counted"

# --- sessions ended one after the other: the log stays quiet ---
before=$(lines)
t0=$(date +%s.%N)
for s in 3 4 5 6; do
  ask "forge 16 ep" "forged 16"
  wait_for "l['sessions'] == $s and l['state'] == 'up'" 10
  ask "up $s" "up $s"
done
t1=$(date +%s.%N)
[[ $(link "l['mac_failures']") == $((16 + 4 * 16)) ]] || fail "mac_failures: $(link l)"
new=$(($(lines) - before))
allowed=$(python3 -c "import math; print(math.floor($t1 - $t0) + 1)")
echo "4 sessions ended by 64 forgeries in $(python3 -c "print(round($t1 - $t0, 2))") s: $new log lines (at most $allowed)"
((new >= 1 && new <= allowed)) || fail "$new lines about bad MACs, allowed $allowed"

# --- the daemon is fine: answers, stops cleanly ---
"$bin/sanctl" --socket "$tmp/d.sock" stats --json >/dev/null || fail "the daemon does not answer"
echo quit >&"${FORGER[1]}"
wait "$fpid" || fail "the forger did not exit 0"
fpid=
kill -TERM "$dpid"
wait "$dpid" || fail "the daemon did not exit 0 on SIGTERM"
dpid=
echo "ok: the daemon answers and stops cleanly"
