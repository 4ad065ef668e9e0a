#!/usr/bin/env bash
# `make run` with no terminal (stdin from /dev/null, stdout and stderr into one pipe, as CI and
# `make run | less` see it): what it runs after the build (scripts/run on this build) starts the
# daemon, shows its stats, runs hello_san and nic_pingpong, shows the daemon idle again, says it
# is not on a terminal and stops the daemon: exit 0, the daemon gone, its temporary directory
# removed. (.ci/run runs `make run` itself too.) The output says what its expected oddities are
# (the descriptor probe's EFAULT, the cached registrations the daemon releases at close) and comes
# in the order things happen: the daemon's log line about an example's disconnect comes after the
# lines that example printed before it closed (the examples write line by line, even into a pipe).
set -euo pipefail
# As under CTest: a developer's own settings do not reach the test.
unset SANPROXY_SOCKET SANPROXY_SPIN_US SANPROXY_LOG SANPROXY_TEST_PASS_RIGHTS \
  SAN_RCACHE_MAX_ENTRIES SAN_RCACHE_MAX_BYTES SANPERF_DAEMON_LOG
: "${SAN_SRC:?}" "${SAN_BUILD:?}"
tmp=$(mktemp -d /tmp/santest.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
out=$tmp/out
fail() { echo "FAIL: $*" >&2; cat "$out" >&2; exit 1; }

set +e
timeout 60 bash "$SAN_SRC/scripts/run" "$SAN_BUILD" </dev/null 2>&1 | cat >"$out"
rc=${PIPESTATUS[0]}
set -e
[ $rc -eq 0 ] || fail "scripts/run: exit $rc"
line=$(grep -E '^== sanproxyd is running \(pid [0-9]+\) on /' "$out") || fail "no running line"
dpid=$(sed -nE 's/^== sanproxyd is running \(pid ([0-9]+)\) on .*/\1/p' <<<"$line")
sock=$(sed -nE 's/^== sanproxyd is running \(pid [0-9]+\) on (.*)$/\1/p' <<<"$line")
grep -q '^  clients          1 (this one included)$' "$out" || fail "no readable stats"

# What the expected oddities are.
grep -q "^descriptor probe: EFAULT, [0-9]* bytes needed - as expected" "$out" ||
  fail "the descriptor probe's EFAULT is not explained"
grep -q 'releasing 0 allocations, 1 registrations": expected, not a leak' "$out" ||
  fail "the release of hello_san's cached registration at close is not explained"
grep -q "^connector: closing; the daemon releases its 2 registrations.*not a leak" "$out" ||
  fail "the release of nic_pingpong's cached registrations at close is not explained"

# The order: hello_san, then nic_pingpong; the first disconnect line is hello_san's, the last the
# listener's (nic_pingpong's parent).
closing=$(grep -n '^closing: the daemon now releases' "$out" | cut -d: -f1)
ok=$(grep -n '^nic_pingpong: ok; ' "$out" | cut -d: -f1)
first=$(grep -n '^allocated 64 KiB of low memory' "$out" | cut -d: -f1)
released=$(grep -n 'info: client [0-9]* (pid [0-9]*) disconnected: releasing' "$out" | cut -d: -f1)
[[ -n $closing ]] || fail "hello_san did not run to its end"
[[ -n $ok ]] || fail "nic_pingpong did not run to its end"
[[ $(wc -w <<<"$released") -eq 3 ]] || fail "not three disconnect log lines"
[[ $(head -1 <<<"$released") -gt $closing && $first -lt $closing ]] ||
  fail "hello_san: the daemon's disconnect line comes before the example's output ($first..$closing)"
[[ $(tail -1 <<<"$released") -gt $ok ]] ||
  fail "nic_pingpong: the listener's disconnect line comes before its output"

json=$(sed -n '/^== sanctl stats --json/,$p' "$out" | grep -m1 '^{"clients"') || fail "no stats --json"
python3 -c 'import json,sys; d=json.loads(sys.argv[1]); assert d["clients"]==1 and d["allocations"]==0 and d["registrations"]==0, d' \
  "$json" || fail "daemon not idle after the demo: $json"
grep -q '^(not on a terminal: stopping the daemon' "$out" || fail "did not notice it has no terminal"
grep -q 'info: stopped' "$out" || fail "the daemon did not stop cleanly"
! kill -0 "$dpid" 2>/dev/null || fail "sanproxyd (pid $dpid) left running"
[ ! -e "$(dirname "$sock")" ] || fail "temporary directory $(dirname "$sock") left behind"
echo "make run without a terminal: demo ran, explained and in order, daemon stopped"
