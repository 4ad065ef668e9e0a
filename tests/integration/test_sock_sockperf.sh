#!/usr/bin/env bash
# sockperf under sanrun against the real daemon, with each of its multiplexers (-F p poll, -F s
# select, -F e epoll): a ping-pong of 64 B messages and a one-way throughput run of 1 KiB messages,
# both ends under sanrun. Each run must finish, report what it moved, and move it over the SAN (the
# daemon's nic_bytes grows by at least the bytes sockperf reports). A plain sockperf client (not
# under sanrun) must reach the sanrun'd server over TCP, untouched by the SAN. The same runs over
# plain TCP are printed beside the SAN's, as figures (not asserted: these machines are noisy).
# Skipped when sockperf is missing
# (scripts/install-deps installs it).
set -euo pipefail
: "${SAN_BIN:?}"
test=test_sock_sockperf logs='server-*.log'
# shellcheck source=sock_programs_lib.sh
source "$(dirname "$0")/sock_programs_lib.sh"
command -v sockperf >/dev/null || skip "sockperf is not installed"
command -v python3 >/dev/null || skip "python3 is not installed"
start_daemon
muxes=(p s e)

# Starts a sockperf server (under sanrun when $1 is "san") with multiplexer $2 on a free port
# (another, up to three tries, if it exits before it listens: a port taken meanwhile); sets feed
# (the feed file naming it) and server (its pid).
start_server() {
  local how=$1 mux=$2 port try
  local run=()
  [[ $how == san ]] && run=("$SAN_BIN/sanrun")
  feed=$tmp/feed-$how-$mux
  for try in 1 2 3; do
    port=$(free_port)
    echo "T:127.0.0.1:$port" >"$feed"
    timeout 120 "${run[@]}" sockperf server -f "$feed" -F "$mux" >"$tmp/server-$how-$mux.log" 2>&1 &
    server=$!
    pids+=("$server")
    for _ in $(seq 100); do
      ss -Htln "sport = :$port" 2>/dev/null | grep -q . && return 0
      kill -0 "$server" 2>/dev/null || break
      sleep 0.1
    done
    kill -0 "$server" 2>/dev/null && break # alive and not listening: no retry
    echo "sockperf server ($how, -F $mux) exited before listening on $port (try $try): $(tail -2 "$tmp/server-$how-$mux.log")"
  done
  fail "sockperf server ($how, -F $mux) did not listen: $(tail -3 "$tmp/server-$how-$mux.log")"
}

# Runs a sockperf client (under sanrun when $1 is "san") of kind $3 (ping-pong or throughput)
# with multiplexer $2 against $feed; its output goes to $out.
client() {
  local how=$1 mux=$2 kind=$3 size=64
  [[ $kind == throughput ]] && size=1024
  out=$tmp/client-$how-$mux-$kind.log
  local run=()
  [[ $how == san ]] && run=("$SAN_BIN/sanrun")
  timeout 60 "${run[@]}" sockperf "$kind" -f "$feed" -F "$mux" -m "$size" -t 1 >"$out" 2>&1 ||
    fail "sockperf $kind ($how, -F $mux): exit $? ($(tail -3 "$out"))"
}

# The figure a client printed: the median latency in us (ping-pong) or the bandwidth in MB/s.
figure() {
  if [[ $1 == ping-pong ]]; then
    sed -n 's/.*percentile 50.000 = *\([0-9.]*\).*/\1/p' "$out" | head -1
  else
    sed -n 's/.*BandWidth is \([0-9.]*\) MBps.*/\1/p' "$out" | head -1
  fi
}

# The messages a client sent ("SentMessages=N" of a ping-pong, "Total of N messages sent" of a
# throughput run).
sent() {
  sed -n -e 's/.*SentMessages=\([0-9]*\).*/\1/p' -e 's/.*Total of \([0-9]*\) messages sent.*/\1/p' "$out" | head -1
}

for mux in "${muxes[@]}"; do
  start_server san "$mux"
  for kind in ping-pong throughput; do
    before=$(nic_bytes)
    client san "$mux" "$kind"
    after=$(nic_bytes)
    n=$(sent)
    [[ -n $n ]] && ((n > 0)) || fail "sockperf $kind (-F $mux) sent nothing: $(tail -3 "$out")"
    size=64
    [[ $kind == throughput ]] && size=1024
    ((after - before >= n * size)) ||
      fail "sockperf $kind (-F $mux): nic_bytes grew by $((after - before)), it sent $n x $size B"
    san=$(figure "$kind")
    [[ -n $san ]] || fail "sockperf $kind (-F $mux) printed no figure"

    # A plain client reaches the same (sanrun'd) server over TCP.
    before=$(nic_bytes)
    client tcp "$mux" "$kind"
    after=$(nic_bytes)
    ((after - before < 1 << 20)) || fail "a plain sockperf client went over the SAN"
    eval "san_${mux}_${kind//-/_}=\$san"
  done
  kill "$server" 2>/dev/null || true
done

# The same runs over plain TCP, for the figures.
for mux in "${muxes[@]}"; do
  start_server tcp "$mux"
  for kind in ping-pong throughput; do
    client tcp "$mux" "$kind"
    tcp=$(figure "$kind")
    v=san_${mux}_${kind//-/_}
    unit="us median one-way"
    [[ $kind == throughput ]] && unit="MB/s, 1 KiB messages"
    echo "sockperf $kind -F $mux: SAN ${!v}, TCP $tcp ($unit)"
  done
  kill "$server" 2>/dev/null || true
done
echo "sock programs: sockperf ping-pong and throughput under sanrun with poll, select and epoll"
