# What the switch's program tests share (sourced, not run): set test (the script's name) and logs
# (globs of the files in $tmp that fail shows, besides the daemon's log) first. Gives skip, fail, a temporary directory
# $tmp removed at exit with every pid in pids killed, a daemon of the test's own started with
# start_daemon [SANPROXYD ARGS...] (SANPROXY_SOCKET exported), nic_bytes (the bytes its NIC has moved),
# san_carried (the most the SAN can have carried) and free_port.
: "${SAN_BIN:?}" "${test:?}"
skip() {
  echo "$test: $*"
  [[ -z ${SAN_SKIP_LOG:-} ]] || echo "$test: $*" >>"$SAN_SKIP_LOG"
  exit 77
}
tmp=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  rm -rf "$tmp"
}
trap cleanup EXIT
fail() {
  echo "FAIL: $*" >&2
  # shellcheck disable=SC2086 # logs is a list of globs
  (cd "$tmp" && tail -5 daemon.log ${logs:-} >&2 2>/dev/null) || true
  exit 1
}
nic_bytes() {
  "$SAN_BIN/sanctl" --socket "$tmp/s.sock" stats --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["nic_bytes"])'
}
# The most the SAN can have carried, ever: the NIC's bytes, and 512 KiB for each of its operations.
# On one host a reader maps the writer's staging (docs/sock.md), and the NIC then moves an offer
# and a DONE, two operations, for each transfer of at most 1 MiB, but none of its bytes. A stream
# that went over TCP instead grows neither.
san_carried() {
  "$SAN_BIN/sanctl" --socket "$tmp/s.sock" stats --json |
    python3 -c 'import json,sys; s=json.load(sys.stdin); print(s["nic_bytes"] + s["nic_ops"] * 524288)'
}
start_daemon() {
  mkfifo "$tmp/ready"
  "$SAN_BIN/sanproxyd" --foreground --socket "$tmp/s.sock" --ready-fd 3 "$@" 3>"$tmp/ready" 2>"$tmp/daemon.log" &
  pids+=($!)
  read -r _ <"$tmp/ready" || fail "sanproxyd did not start"
  export SANPROXY_SOCKET=$tmp/s.sock
}
# A loopback TCP port for a server: below the kernel's ephemeral range (where other tests'
# connections take theirs: a random port there once collided with one) and listened on by nobody.
free_port() {
  local lo p
  read -r lo _ </proc/sys/net/ipv4/ip_local_port_range
  ((lo > 12000)) || lo=32768
  for _ in $(seq 50); do
    p=$((10000 + RANDOM % (lo - 10000)))
    ss -Htan "sport = :$p" 2>/dev/null | grep -q . || {
      echo "$p"
      return 0
    }
  done
  fail "no free port"
}
