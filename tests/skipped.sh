#!/usr/bin/env bash
# The reasons of the tests that skipped, for CTest's summary (which shows only that a test was
# skipped). Every skipping test appends "program: reason" to $SAN_SKIP_LOG before it exits 77.
#   skipped.sh --reset FILE   before the tests (CTEST_CUSTOM_PRE_TEST): empties the list
#   skipped.sh FILE           after them (CTEST_CUSTOM_POST_TEST): prints it, if anything skipped
#   skipped.sh --fail FILE    the same, and exits 1 if anything skipped (CI: nothing may skip)
set -euo pipefail
mode=${1:?usage: skipped.sh [--reset|--fail] FILE}
if [[ $mode == --reset || $mode == --fail ]]; then
  shift
fi
log=${1:?usage: skipped.sh [--reset|--fail] FILE}
if [[ $mode == --reset ]]; then
  mkdir -p "$(dirname "$log")" # a fresh build has no Testing directory before its first run
  : >"$log"
  exit 0
fi
[[ -s $log ]] || exit 0
echo
echo "Skipped here, and why:"
sed 's/^/  /' "$log"
[[ $mode == --fail ]] && exit 1
exit 0
