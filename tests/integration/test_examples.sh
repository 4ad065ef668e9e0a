#!/usr/bin/env bash
# The examples as a user runs them. examples/hello_san against a private sanproxyd (socket given on
# the command line, then through $SANPROXY_SOCKET): exit 0, low memory below 4 GiB, the descriptor
# probe, an RDMA registration with both keys, and the daemon idle afterwards; without a daemon it
# says so and exits 1. examples/nic_pingpong against the same daemon: both processes report their
# RDMA write and read correct, exit 0, the daemon idle afterwards (endpoints closed); on a port
# already taken it fails. examples/tour (no daemon: its own machines): exit 0 and what it shows is
# what the allocator does (every constrained request served inside its constraint, the oversized
# one refused, NOLOWMEM keeping low memory for low requests, the pattern check clean).
set -euo pipefail
# As under CTest: a developer's own settings do not reach the test.
unset SANPROXY_SOCKET SANPROXY_SPIN_US SANPROXY_LOG SANPROXY_TEST_PASS_RIGHTS \
  SAN_RCACHE_MAX_ENTRIES SAN_RCACHE_MAX_BYTES SANPERF_DAEMON_LOG
: "${SAN_BIN:?}" "${SAN_BUILD:?}"
ex=$SAN_BUILD/examples
tmp=$(mktemp -d /tmp/santest.XXXXXX)
pid=
cleanup() {
  [ -n "$pid" ] && kill -9 "$pid" 2>/dev/null
  rm -rf "$tmp"
}
trap cleanup EXIT
fail() { echo "FAIL: $*" >&2; [ -f "$tmp/out" ] && cat "$tmp/out" >&2; exit 1; }

# --- hello_san ---
mkfifo "$tmp/ready"
"$SAN_BIN/sanproxyd" --foreground --socket "$tmp/sock" --ready-fd 3 3>"$tmp/ready" 2>"$tmp/log" &
pid=$!
read -r _ <"$tmp/ready" || fail "sanproxyd did not start"

check_hello() { # the output of one run in $tmp/out
  grep -qE '^allocated 64 KiB of low memory: mapped at 0x[0-9a-f]+, physical 0x[0-9a-f]+ \(below 4 GiB\)$' \
    "$tmp/out" || fail "hello_san: no low allocation below 4 GiB"
  local pa
  pa=$(sed -nE 's/^allocated .*physical (0x[0-9a-f]+) .*/\1/p' "$tmp/out")
  ((pa + 65536 <= 1 << 32)) || fail "hello_san: low memory at $pa"
  grep -qE '^descriptor probe: EFAULT, [1-9][0-9]* bytes needed - as expected' "$tmp/out" ||
    fail "hello_san: the descriptor probe"
  grep -qE '^registered 256 KiB at 0x[0-9a-f]+ for RDMA: lkey 0x[0-9a-f]*[1-9a-f][0-9a-f]*, rkey 0x[0-9a-f]*[1-9a-f][0-9a-f]*, first page at physical 0x[0-9a-f]+$' \
    "$tmp/out" || fail "hello_san: no RDMA registration with an lkey and an rkey"
  grep -q '^closing: the daemon now releases that cached registration' "$tmp/out" ||
    fail "hello_san did not finish"
  local json
  json=$("$SAN_BIN/sanctl" --socket "$tmp/sock" stats --json)
  python3 -c 'import json,sys; d=json.loads(sys.argv[1]); assert d["clients"]==1 and d["allocations"]==0 and d["registrations"]==0 and d["locked_bytes"]==0, d' \
    "$json" || fail "daemon not idle after hello_san: $json"
}
"$ex/hello_san" "$tmp/sock" >"$tmp/out" || fail "hello_san SOCKET: exit $?"
check_hello
SANPROXY_SOCKET=$tmp/sock "$ex/hello_san" >"$tmp/out" || fail "hello_san with SANPROXY_SOCKET: exit $?"
check_hello

# --- nic_pingpong ---
SANPROXY_SOCKET=$tmp/sock timeout 60 "$ex/nic_pingpong" 7600 >"$tmp/out" ||
  fail "nic_pingpong: exit $?"
grep -qE '^listener: "written" arrived after 65536 bytes written into its memory by RDMA write, all correct$' \
  "$tmp/out" || fail "nic_pingpong: the listener did not see the RDMA write"
grep -q '^connector: read back "hello from the listener" from the listener.s memory by RDMA read$' \
  "$tmp/out" || fail "nic_pingpong: the connector did not read the reply back"
grep -q '^nic_pingpong: ok; ' "$tmp/out" || fail "nic_pingpong did not finish"
for _ in $(seq 100); do # endpoints close on the daemon's schedule
  json=$("$SAN_BIN/sanctl" --socket "$tmp/sock" stats --json)
  python3 -c 'import json,sys; d=json.loads(sys.argv[1]); sys.exit(not (d["clients"]==1 and d["registrations"]==0 and d.get("endpoints",0)==0))' \
    "$json" && break
  sleep 0.05
done
python3 -c 'import json,sys; d=json.loads(sys.argv[1]); assert d["clients"]==1 and d["registrations"]==0 and d.get("endpoints",0)==0, d' \
  "$json" || fail "daemon not idle after nic_pingpong: $json"
kill -TERM "$pid"
wait "$pid" || fail "sanproxyd: exit $? after SIGTERM"
pid=
set +e
"$ex/hello_san" "$tmp/sock" >"$tmp/out" 2>"$tmp/err"
rc=$?
set -e
[ $rc -eq 1 ] && grep -q "hello_san: cannot reach sanproxyd" "$tmp/err" ||
  fail "hello_san without a daemon: exit $rc, $(cat "$tmp/err")"

# --- tour ---
"$ex/tour" >"$tmp/out" || fail "tour: exit $?"
[ "$(grep -c '^== An 8 GiB machine' "$tmp/out")" -eq 2 ] || fail "tour: not both machines"
# Every served request inside its constraint: 1 MiB below 4 GiB, 64 KiB in [16 MiB, 1 GiB), 8 KiB
# below 16 MiB, 192 KiB not crossing a 256 KiB boundary.
python3 - "$tmp/out" <<'PY' || fail "tour: an allocation outside its constraint"
import re, sys
rows = re.findall(r"^  (.+?)\s+-> pa 0x([0-9a-f]+)\.\.0x([0-9a-f]+)$", open(sys.argv[1]).read(), re.M)
assert len(rows) == 10, rows
for what, lo, hi in rows:
    lo, hi = int(lo, 16), int(hi, 16)
    if "below 4 GiB" in what:
        assert hi < 1 << 32, what
    if "between 16 MiB and 1 GiB" in what:
        assert lo >= 16 << 20 and hi < 1 << 30, what
    if "below 16 MiB" in what:
        assert hi < 16 << 20, what
    if "not crossing 256 KiB" in what:
        assert lo // (256 << 10) == hi // (256 << 10), what
PY
[ "$(grep -c '16 GiB, anywhere (too big) *-> ENOMEM' "$tmp/out")" -eq 2 ] ||
  fail "tour: the oversized request was not refused on both machines"
grep -qE '^    [1-9][0-9]* served above 4 GiB, 0 served below 4 GiB$' "$tmp/out" ||
  fail "tour: NOLOWMEM handed low memory to requests that may go high"
grep -qE '^    [1-9][0-9]* served above 4 GiB, [1-9][0-9]* served below 4 GiB$' "$tmp/out" ||
  fail "tour: without NOLOWMEM low memory was not used once high memory ran out"
grep -q '^low-memory pattern check: 0 dirty free frames below 4 GiB$' "$tmp/out" ||
  fail "tour: the low-memory pattern check"
echo "examples: hello_san (twice, and without a daemon), nic_pingpong and tour ok"
