#!/usr/bin/env bash
# sanperf runs every suite to the end and prints only JSON objects, one per line, each naming its
# suite, and every suite appears. (Timings are not judged here: ratios belong to the benchmark runs,
# not to the test suite.) The plain build runs `sanperf all --json` as it ships; under the
# sanitizers, which distort every timing and make the full run long, each suite runs on its own
# with smaller sizes, so that sanperf (and the private daemons it starts) still run under ASan+UBSan.
#
# sanperf dma locks a 64 MiB buffer in its own process, sanperf nic registers (so libsan locks)
# 2 x 16 MiB: without CAP_IPC_LOCK and with a smaller RLIMIT_MEMLOCK such a suite cannot run, and
# the test skips it (exit 77, saying so) after running the others.
set -euo pipefail
# As under CTest: a developer's own settings do not reach the test.
unset SANPROXY_SOCKET SANPROXY_SPIN_US SANPROXY_LOG SANPROXY_TEST_PASS_RIGHTS \
  SAN_RCACHE_MAX_ENTRIES SAN_RCACHE_MAX_BYTES SANPERF_DAEMON_LOG
: "${SAN_BIN:?}"
out=$(mktemp)
trap 'rm -f "$out"' EXIT

declare -A lock_mib=([dma]=65 [nic]=33) # what a suite locks, with some room
suites=()
skipped=
lock_kib=$(ulimit -l)
for s in contig dma reg rcache nic; do
  if [[ -n ${lock_mib[$s]:-} && $(id -u) != 0 && $lock_kib != unlimited ]] &&
    ((lock_kib < ${lock_mib[$s]} * 1024)); then
    skipped+="${skipped:+; }sanperf $s locks about ${lock_mib[$s]} MiB"
  else
    suites+=("$s")
  fi
done
[[ -n $skipped ]] && skipped+=" (RLIMIT_MEMLOCK here: ${lock_kib} KiB, not root)"

# A suite that hangs fails here, named, instead of at CTest's timeout.
perf() { # perf SECONDS ARGS...
  local limit=$1 rc=0
  shift
  timeout "$limit" "$SAN_BIN/sanperf" "$@" >>"$out" || rc=$?
  ((rc == 124)) && { echo "FAIL: sanperf $* did not finish in $limit s" >&2; exit 1; }
  ((rc == 0)) || { echo "FAIL: sanperf $*: exit $rc" >&2; exit 1; }
}

if [[ -n ${SAN_EXTRA_CFLAGS:-} ]]; then
  declare -A small=([contig]="--ram 1G --ops 4000" [dma]="--rounds 2 --ops 400"
    [reg]="--ops 400" [rcache]="--rounds 400" [nic]="--mib 16 --rounds 200")
  for s in "${suites[@]}"; do
    # shellcheck disable=SC2086
    perf 300 "$s" --json ${small[$s]}
  done
  what="sanperf ${suites[*]} (smaller sizes, under sanitizers)"
elif [[ -n $skipped ]]; then
  for s in "${suites[@]}"; do
    perf 300 "$s" --json
  done
  what="sanperf ${suites[*]}"
else
  perf 600 all --json
  what="sanperf all"
fi
if grep -qv '^{"suite": "[a-z]*", .*}$' "$out"; then
  echo "FAIL: a line that is not a JSON object of a suite:" >&2
  grep -v '^{"suite": "[a-z]*", .*}$' "$out" >&2
  exit 1
fi
python3 -c '
import json, sys
for n, line in enumerate(open(sys.argv[1]), 1):
    row = json.loads(line)
    assert isinstance(row, dict) and row["suite"], "line %d: %s" % (n, line)
' "$out" || { echo "FAIL: sanperf printed a line that is not valid JSON" >&2; exit 1; }
for suite in "${suites[@]}"; do
  grep -q "^{\"suite\": \"$suite\"" "$out" || { echo "FAIL: no $suite results" >&2; exit 1; }
done
echo "$what: $(wc -l <"$out") results"
if [[ -n $skipped ]]; then
  echo "SKIPPED: $skipped" >&2
  [[ -n ${SAN_SKIP_LOG:-} ]] && echo "test_sanperf: $skipped" >>"$SAN_SKIP_LOG"
  exit 77
fi
