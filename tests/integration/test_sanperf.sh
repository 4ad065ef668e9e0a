#!/usr/bin/env bash
# `make bench`, as a user types it in the source tree: its stdout is JSON objects only, one per
# line, each naming its suite, and every suite appears. Every object follows the one ratio
# convention: "ratio" = ours / the baseline's value of the same quantity, with "better": "lower"
# for times (p50_ns / baseline_p50_ns, or one_way_ns / baseline_one_way_ns) or "higher" for
# throughputs (gb_per_s / baseline_gb_per_s), and the ratio printed is that quotient. (Timings
# themselves are not judged here: they belong to the benchmark runs.) The nic rows also carry a
# UCX baseline: "ucx" is "ok" with ucx_gb_per_s or ucx_one_way_ns (positive) and ucx_ratio, that
# quotient too, or says why there is none ("not installed", or what failed).
#
# sanperf link runs too where it can (root), small: two reps, each figure their median, between
# the reps' smallest and largest.
#
# The sock rows of programs (iperf3, sockperf) carry "status": "ok" with their ratio, or why they
# did not run (then no ratio).
#
# sanperf sizes what it locks to RLIMIT_MEMLOCK (dma's buffer, nic's buffers in flight), so every
# suite runs for an ordinary user too. Under the sanitizers, which distort every timing and make
# the full run long, each suite runs on its own with smaller sizes instead of `make bench`, so that
# sanperf (and the private daemons it starts) still run under ASan+UBSan (nic with every memory
# kind, its mixed case included).
set -euo pipefail
# As under CTest: a developer's own settings do not reach the test.
unset SANPROXY_SOCKET SANPROXY_SPIN_US SANPROXY_LOG SANPROXY_TEST_PASS_RIGHTS \
  SAN_RCACHE_MAX_ENTRIES SAN_RCACHE_MAX_BYTES SANPERF_DAEMON_LOG
: "${SAN_BIN:?}" "${SAN_BUILD:?}" "${SAN_SRC:?}"
out=$(mktemp)
trap 'rm -f "$out"' EXIT
suites=(contig dma reg rcache nic sock)

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
    [reg]="--ops 400" [rcache]="--rounds 400" [nic]="--mib 16 --rounds 200 --memory all"
    [sock]="--mib 16 --rounds 200 --case switch")
  for s in "${suites[@]}"; do
    # The sock suite's peers exit with a SAN connection still being finished: its state is named
    # only from the switch's mmap'd descriptor table, which LeakSanitizer does not scan, so it
    # reports a leak and aborts the peer (test_sock_calls does the same for such clients).
    if [[ $s == sock ]]; then
      # shellcheck disable=SC2086
      ASAN_OPTIONS="${ASAN_OPTIONS:-}:detect_leaks=0" perf 300 "$s" --json ${small[$s]}
    else
      # shellcheck disable=SC2086
      perf 300 "$s" --json ${small[$s]}
    fi
  done
  what="sanperf ${suites[*]} (smaller sizes, under sanitizers)"
else
  unset MAKEFLAGS MFLAGS MAKELEVEL
  rc=0
  (cd "$SAN_SRC" && timeout 600 make bench BUILD="$SAN_BUILD") >"$out" || rc=$?
  ((rc == 124)) && { echo "FAIL: make bench did not finish in 600 s" >&2; exit 1; }
  ((rc == 0)) || { echo "FAIL: make bench: exit $rc" >&2; exit 1; }
  what="make bench"
fi
# sanperf link (not in `make bench`: it needs root and makes network namespaces), small, where it
# can run: its rows follow the same convention, and it leaves no namespace behind.
if ((EUID == 0)) && command -v ip >/dev/null && ip netns list >/dev/null 2>&1; then
  # Other runs of sanperf link may come and go on this machine meanwhile (another build's test
  # suite, another clone's): ours are named by this script's pid, and only those are looked for.
  perf 300 link --json --rounds 200 --mib 8 --reps 2 --tag $$
  suites+=(link)
  what="$what, sanperf link"
  left=$(ip netns list | grep -o "^sanperf-link-$$-[^ ]*" || true)
  if [[ -n $left ]]; then
    echo "FAIL: sanperf link left a namespace: $left" >&2
    exit 1
  fi
fi
if grep -qv '^{"suite": "[a-z]*", .*}$' "$out"; then
  echo "FAIL: a line of $what's stdout that is not a JSON object of a suite:" >&2
  grep -v '^{"suite": "[a-z]*", .*}$' "$out" >&2
  exit 1
fi
for suite in "${suites[@]}"; do
  grep -q "^{\"suite\": \"$suite\"" "$out" || { echo "FAIL: no $suite results" >&2; exit 1; }
done
python3 - "$out" <<'PY'
import json, sys
bad = 0
for line in open(sys.argv[1]):
    row = json.loads(line)
    what = f'{row["suite"]} {row.get("case")}'
    if row.get("status", "ok") != "ok":  # a program the sock suite could not run, and why
        if "ratio" in row:
            print(f"FAIL: {what}: a ratio although status is {row['status']!r}: {line}", end="")
            bad = 1
        continue
    if "ratio" not in row or row.get("better") not in ("lower", "higher"):
        print(f"FAIL: {what}: no ratio, or better is not lower/higher: {line}", end="")
        bad = 1
        continue
    quantities = ["p50_ns", "one_way_ns"] if row["better"] == "lower" else ["gb_per_s"]
    pairs = [(q, "baseline_" + q) for q in quantities if q in row and "baseline_" + q in row]
    if not pairs:
        print(f"FAIL: {what}: better={row['better']} but none of {quantities} with its baseline_: "
              f"{line}", end="")
        bad = 1
        continue
    ours, base = pairs[0]
    want = row[ours] / row[base] if row[base] else 0
    if abs(row["ratio"] - want) > 0.006 + 0.01 * want:  # ratios print with two decimals
        print(f"FAIL: {what}: ratio {row['ratio']} is not {ours} / {base} = {want:.4f}")
        bad = 1
    if row["suite"] == "link":  # medians of --reps 2 alternating runs, between their extremes
        lo, hi = row.get(ours + "_min"), row.get(ours + "_max")
        if row.get("reps") != 2 or lo is None or hi is None or not lo <= row[ours] <= hi:
            print(f"FAIL: {what}: not the median of 2 reps between {ours}_min and _max: {line}",
                  end="")
            bad = 1
    if row["suite"] != "nic":
        continue
    ucx = row.get("ucx")
    if not isinstance(ucx, str) or not ucx:
        print(f"FAIL: {what}: no \"ucx\" saying whether UCX was measured: {line}", end="")
        bad = 1
        continue
    uq = "ucx_gb_per_s" if row["better"] == "higher" else "ucx_one_way_ns"
    if ucx != "ok":
        if uq in row or "ucx_ratio" in row:
            print(f"FAIL: {what}: UCX figures although ucx is {ucx!r}: {line}", end="")
            bad = 1
        continue
    if not (row.get(uq, 0) > 0 and "ucx_ratio" in row):
        print(f"FAIL: {what}: ucx is ok but {uq} or ucx_ratio is missing or not positive: {line}",
              end="")
        bad = 1
        continue
    want = row[ours] / row[uq]
    if abs(row["ucx_ratio"] - want) > 0.006 + 0.01 * want:
        print(f"FAIL: {what}: ucx_ratio {row['ucx_ratio']} is not {ours} / {uq} = {want:.4f}")
        bad = 1
sys.exit(bad)
PY
ucx=$(grep -o '"ucx": "[^"]*"' "$out" | sort | uniq -c | tr -s ' ' | tr '\n' ';')
echo "$what: $(wc -l <"$out") results, JSON only, one ratio convention; UCX baselines:$ucx"
