#!/usr/bin/env bash
# Unmodified programs under sanrun against the real daemon: python3 -m http.server (poll, accept4,
# send/recv through Python's socket module) serving a 64 MiB file to curl. A sanrun'd curl gets
# it over the SAN (what the daemon's NIC carried, san_carried, grows by at least the file's size), a plain curl over
# TCP from the same server; both copies equal the file. iperf3 (select, a control and a data
# connection) under sanrun on both ends moves its stream over the SAN (san_carried grows by at
# least what iperf3's receiver reports). Skipped when curl or iperf3 is missing
# (scripts/install-deps installs them).
set -euo pipefail
: "${SAN_BIN:?}"
test=test_sock_programs logs='http.err'
# shellcheck source=sock_programs_lib.sh
source "$(dirname "$0")/sock_programs_lib.sh"
command -v curl >/dev/null || skip "curl is not installed"
command -v python3 >/dev/null || skip "python3 is not installed"
command -v iperf3 >/dev/null || skip "iperf3 is not installed"
start_daemon

mkdir "$tmp/www"
head -c $((64 << 20)) /dev/urandom >"$tmp/www/big.bin"
(cd "$tmp/www" && exec "$SAN_BIN/sanrun" python3 -u -m http.server --bind 127.0.0.1 0 >"$tmp/http.out" 2>"$tmp/http.err") &
pids+=($!)
port=
for _ in $(seq 100); do
  port=$(sed -n 's/.* port \([0-9]*\) .*/\1/p' "$tmp/http.out" 2>/dev/null | head -1)
  [[ -n $port ]] && break
  sleep 0.1
done
[[ -n $port ]] || fail "http.server did not start"

want=$(sha256sum <"$tmp/www/big.bin")
before=$(san_carried)
timeout 120 "$SAN_BIN/sanrun" curl -sS -o "$tmp/san.bin" "http://127.0.0.1:$port/big.bin" || fail "sanrun curl: exit $?"
after=$(san_carried)
[[ $(sha256sum <"$tmp/san.bin") == "$want" ]] || fail "sanrun curl: the copy differs"
((after - before >= 64 << 20)) || fail "sanrun curl: san_carried grew by $((after - before)) only"

before=$(nic_bytes)
timeout 120 curl -sS -o "$tmp/tcp.bin" "http://127.0.0.1:$port/big.bin" || fail "plain curl: exit $?"
after=$(nic_bytes)
[[ $(sha256sum <"$tmp/tcp.bin") == "$want" ]] || fail "plain curl: the copy differs"
((after - before < 1 << 20)) || fail "plain curl went over the SAN ($((after - before)) bytes)"
echo "sock programs: curl and python3 -m http.server, 64 MiB over the SAN and over TCP, equal"

# iperf3, both ends under sanrun, one second: its bytes cross the SAN.
iport=$(free_port)
timeout 60 "$SAN_BIN/sanrun" iperf3 -s -1 -B 127.0.0.1 -p "$iport" >"$tmp/iperf-s.out" 2>&1 &
pids+=($!)
for _ in $(seq 100); do
  grep -q "listening" "$tmp/iperf-s.out" 2>/dev/null && break
  sleep 0.1
done
before=$(san_carried)
timeout 60 "$SAN_BIN/sanrun" iperf3 -c 127.0.0.1 -p "$iport" -t 1 -J >"$tmp/iperf-c.json" ||
  fail "sanrun iperf3 client: exit $? ($(tail -3 "$tmp/iperf-c.json" "$tmp/iperf-s.out" 2>/dev/null))"
after=$(san_carried)
got=$(python3 -c 'import json,sys; print(int(json.load(open(sys.argv[1]))["end"]["sum_received"]["bytes"]))' "$tmp/iperf-c.json")
((got > 0)) || fail "iperf3 moved nothing"
((after - before >= got)) || fail "iperf3: san_carried grew by $((after - before)), the receiver got $got"
echo "sock programs: iperf3 under sanrun, $got bytes over the SAN"
