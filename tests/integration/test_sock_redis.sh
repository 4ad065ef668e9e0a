#!/usr/bin/env bash
# redis under sanrun against the real daemon (epoll, non-blocking sockets, pipelining):
# redis-server under sanrun (its own port, no persistence, in a temporary directory) and
# redis-benchmark under sanrun (-P 16, 8 clients, SET and GET) succeed, and their traffic crosses
# the SAN (the daemon's nic_bytes grows by at least the requests' bytes); a plain redis-cli (not
# under sanrun) reaches the same server over TCP (SET then GET give the value back) and moves
# nothing on the SAN. The same benchmark between a plain redis-server and a plain redis-benchmark
# gives the TCP figures printed beside the SAN's. Skipped when redis is missing (scripts/install-deps
# installs redis-server and redis-tools).
set -euo pipefail
: "${SAN_BIN:?}"
test=test_sock_redis logs='redis-*.log'
# shellcheck source=sock_programs_lib.sh
source "$(dirname "$0")/sock_programs_lib.sh"
for p in redis-server redis-benchmark redis-cli python3; do
  command -v "$p" >/dev/null || skip "$p is not installed"
done
start_daemon

# A redis-server on a free port (under sanrun or not): its pid in $server.
start_server() {
  local name=$1 port=$2
  shift 2
  mkdir -p "$tmp/$name"
  (cd "$tmp/$name" && exec "$@" redis-server --port "$port" --bind 127.0.0.1 --save '' \
    --appendonly no --daemonize no --dir "$tmp/$name" >"$tmp/redis-$name.log" 2>&1) &
  server=$!
  pids+=("$server")
  for _ in $(seq 100); do
    grep -q "Ready to accept connections" "$tmp/redis-$name.log" 2>/dev/null && return 0
    kill -0 "$server" 2>/dev/null || fail "redis-server ($name) exited"
    sleep 0.1
  done
  fail "redis-server ($name) did not start"
}
# redis-benchmark's "SET: N requests per second" lines, one per test.
bench() {
  local port=$1
  shift
  timeout 120 "$@" redis-benchmark -h 127.0.0.1 -p "$port" -P 16 -c 8 -n 20000 -t set,get -q \
    >"$tmp/bench.out" 2>&1 || fail "redis-benchmark ($*): exit $? ($(tail -3 "$tmp/bench.out"))"
  tr '\r' '\n' <"$tmp/bench.out" | grep -E '^(SET|GET): [0-9.]+ requests per second' || true
}

port=$(free_port)
start_server san "$port" "$SAN_BIN/sanrun"
before=$(nic_bytes)
san=$(bench "$port" "$SAN_BIN/sanrun")
after=$(nic_bytes)
[[ $(grep -c 'requests per second' <<<"$san") == 2 ]] || fail "redis-benchmark under sanrun: '$san'"
# 40000 requests of at least 30 bytes each, and their replies, crossed the SAN.
((after - before >= 40000 * 30)) || fail "redis over the SAN: nic_bytes grew by $((after - before)) only"

before=$(nic_bytes)
[[ $(redis-cli -h 127.0.0.1 -p "$port" SET sanproxy:k value-over-tcp) == OK ]] || fail "plain redis-cli SET"
[[ $(redis-cli -h 127.0.0.1 -p "$port" GET sanproxy:k) == value-over-tcp ]] || fail "plain redis-cli GET"
after=$(nic_bytes)
((after - before < 4096)) || fail "plain redis-cli went over the SAN ($((after - before)) bytes)"
kill "$server"

tport=$((port == 40000 ? 20000 : port + 1))
start_server tcp "$tport"
tcp=$(bench "$tport")
[[ $(grep -c 'requests per second' <<<"$tcp") == 2 ]] || fail "plain redis-benchmark: '$tcp'"
kill "$server"

echo "sock redis: redis-benchmark -P 16 -c 8 -n 20000, SAN (both under sanrun) against TCP:"
paste <(sed 's/^/  sanrun: /' <<<"$san") <(sed 's/^/  tcp: /' <<<"$tcp")
echo "sock redis: redis-server and redis-benchmark under sanrun over the SAN, a plain redis-cli over TCP"
