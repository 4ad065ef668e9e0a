#!/usr/bin/env bash
# sanperf all --json runs every suite to the end and prints only JSON objects, one per line, each
# naming its suite, and every suite appears. (Timings are not judged here: ratios belong to the
# benchmark runs, not to the test suite.) Skipped under the sanitizers, which distort every timing
# and make the run long.
set -euo pipefail
: "${SAN_BIN:?}"
if [[ -n ${SAN_EXTRA_CFLAGS:-} ]]; then
  echo "skipped under sanitizers"
  exit 0
fi
out=$(mktemp)
trap 'rm -f "$out"' EXIT
"$SAN_BIN/sanperf" all --json >"$out"
if grep -qv '^{"suite": "[a-z]*", .*}$' "$out"; then
  echo "FAIL: a line that is not a JSON object of a suite:" >&2
  grep -v '^{"suite": "[a-z]*", .*}$' "$out" >&2
  exit 1
fi
for suite in contig dma reg rcache; do
  grep -q "^{\"suite\": \"$suite\"" "$out" || { echo "FAIL: no $suite results" >&2; exit 1; }
done
echo "sanperf all: $(wc -l <"$out") results"
