#!/usr/bin/env bash
# sanperf runs every suite to the end and prints only JSON objects, one per line, each naming its
# suite, and every suite appears. (Timings are not judged here: ratios belong to the benchmark runs,
# not to the test suite.) The plain build runs `sanperf all --json` as it ships; under the
# sanitizers, which distort every timing and make the full run long, each suite runs on its own
# with smaller sizes, so that sanperf (and the private daemons it starts) still run under ASan+UBSan.
set -euo pipefail
unset SANPROXY_SOCKET SANPROXY_SPIN_US SANPROXY_LOG SANPROXY_TEST_PASS_RIGHTS SAN_RCACHE_MAX_ENTRIES \
  SAN_RCACHE_MAX_BYTES SANPERF_DAEMON_LOG # as under CTest: a developer's own settings do not reach the test
: "${SAN_BIN:?}"
out=$(mktemp)
trap 'rm -f "$out"' EXIT
if [[ -n ${SAN_EXTRA_CFLAGS:-} ]]; then
  "$SAN_BIN/sanperf" contig --json --ram 1G --ops 4000 >>"$out"
  "$SAN_BIN/sanperf" dma --json --rounds 2 --ops 400 >>"$out"
  "$SAN_BIN/sanperf" reg --json --ops 400 >>"$out"
  "$SAN_BIN/sanperf" rcache --json --rounds 400 >>"$out"
  what="sanperf (every suite, smaller sizes, under sanitizers)"
else
  "$SAN_BIN/sanperf" all --json >"$out"
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
for suite in contig dma reg rcache; do
  grep -q "^{\"suite\": \"$suite\"" "$out" || { echo "FAIL: no $suite results" >&2; exit 1; }
done
echo "$what: $(wc -l <"$out") results"
