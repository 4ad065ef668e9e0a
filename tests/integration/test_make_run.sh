#!/usr/bin/env bash
# `make run` with no terminal (stdin from /dev/null, output to a file), as CI and pipes run it: what
# it runs after the build (scripts/run on this build) starts the daemon, shows its stats, runs
# hello_san and nic_pingpong, shows the daemon idle again, says it is not on a terminal and stops the daemon: exit 0,
# the daemon gone, its temporary directory removed. (.ci/run runs `make run` itself too.)
set -euo pipefail
# As under CTest: a developer's own settings do not reach the test.
unset SANPROXY_SOCKET SANPROXY_SPIN_US SANPROXY_LOG SANPROXY_TEST_PASS_RIGHTS \
  SAN_RCACHE_MAX_ENTRIES SAN_RCACHE_MAX_BYTES SANPERF_DAEMON_LOG
: "${SAN_SRC:?}" "${SAN_BUILD:?}"
tmp=$(mktemp -d /tmp/santest.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
fail() { echo "FAIL: $*" >&2; cat "$tmp/out" "$tmp/err" >&2; exit 1; }

set +e
timeout 60 bash "$SAN_SRC/scripts/run" "$SAN_BUILD" </dev/null >"$tmp/out" 2>"$tmp/err"
rc=$?
set -e
[ $rc -eq 0 ] || fail "scripts/run: exit $rc"
line=$(grep -E '^== sanproxyd is running \(pid [0-9]+\) on /' "$tmp/out") || fail "no running line"
dpid=$(sed -nE 's/^== sanproxyd is running \(pid ([0-9]+)\) on .*/\1/p' <<<"$line")
sock=$(sed -nE 's/^== sanproxyd is running \(pid [0-9]+\) on (.*)$/\1/p' <<<"$line")
grep -q '^  clients          1 (this one included)$' "$tmp/out" || fail "no readable stats"
grep -q '^released everything' "$tmp/out" || fail "hello_san did not run to its end"
grep -q '^nic_pingpong: ok$' "$tmp/out" || fail "nic_pingpong did not run to its end"
json=$(grep '^{"clients"' "$tmp/out") || fail "no stats --json"
python3 -c 'import json,sys; d=json.loads(sys.argv[1]); assert d["clients"]==1 and d["allocations"]==0 and d["registrations"]==0, d' \
  "$json" || fail "daemon not idle after the demo: $json"
grep -q '^(not on a terminal: stopping the daemon' "$tmp/out" || fail "did not notice it has no terminal"
grep -q 'info: stopped' "$tmp/err" || fail "the daemon did not stop cleanly"
! kill -0 "$dpid" 2>/dev/null || fail "sanproxyd (pid $dpid) left running"
[ ! -e "$(dirname "$sock")" ] || fail "temporary directory $(dirname "$sock") left behind"
echo "make run without a terminal: demo ran, daemon stopped"
