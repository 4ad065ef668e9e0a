# What the switch's program tests share (sourced, not run): set test (the script's name) and logs
# (globs of the files in $tmp that fail shows, besides the daemon's log) first. Gives skip, fail, a temporary directory
# $tmp removed at exit with every pid in pids killed, a daemon of the test's own started with
# start_daemon [SANPROXYD ARGS...] (SANPROXY_SOCKET exported), and nic_bytes (the bytes its NIC has moved).
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
start_daemon() {
  mkfifo "$tmp/ready"
  "$SAN_BIN/sanproxyd" --foreground --socket "$tmp/s.sock" --ready-fd 3 "$@" 3>"$tmp/ready" 2>"$tmp/daemon.log" &
  pids+=($!)
  read -r _ <"$tmp/ready" || fail "sanproxyd did not start"
  export SANPROXY_SOCKET=$tmp/s.sock
}
