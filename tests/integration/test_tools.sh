#!/usr/bin/env bash
# What every tool (sanproxyd, sanctl, sanperf, sanrun) promises on its command line, checked against the
# tool's own source: --version prints the project's version; --help (exit 0) lists every option
# the source knows (each "--name" it compares arguments with, in tools/<tool>/); so does the tool's man page
# (docs/man/), which renders without warnings; an unknown option and an option without its value
# are usage errors: exit 2, the option named on stderr.
set -euo pipefail
: "${SAN_BIN:?}" "${SAN_SRC:?}"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }
version=$(sed -n 's/^project(sanproxy VERSION \([0-9.]*\).*/\1/p' "$SAN_SRC/CMakeLists.txt")
[[ -n $version ]] || fail "no version in CMakeLists.txt"

usage_error() { # $1 = what, $2 = the option the message must name, then the command
  local what=$1 name=$2 rc
  shift 2
  set +e
  timeout 20 "$@" >"$tmp/out" 2>"$tmp/err"
  rc=$?
  set -e
  [[ $rc -eq 2 ]] || fail "$what: exit $rc, want 2"
  grep -qF -- "$name" "$tmp/err" || fail "$what: the message does not name $name: $(head -3 "$tmp/err")"
  [[ ! -s $tmp/out ]] || fail "$what: a usage error printed on stdout"
}

for tool in sanproxyd sanctl sanperf sanrun; do
  out=$("$SAN_BIN/$tool" --version) || fail "$tool --version: exit $?"
  [[ $out == "$tool (sanproxy) $version" ]] || fail "$tool --version: '$out'"

  "$SAN_BIN/$tool" --help >"$tmp/help" || fail "$tool --help: exit $?"
  man=$(ls "$SAN_SRC/docs/man/$tool".[18])
  sed 's/\\-/-/g' "$man" >"$tmp/man"
  if command -v groff >/dev/null; then
    groff -man -ww -z "$man" 2>"$tmp/groff" && [[ ! -s $tmp/groff ]] ||
      fail "$man: groff warns: $(cat "$tmp/groff")"
  fi
  # The options the source compares arguments with (strcmp), or lists in a table ({"--name", ...}).
  options=$(grep -ohE '(strcmp\([^,]*, |\{)"--[a-z][a-z-]*"' "$SAN_SRC/tools/$tool"/*.c |
    grep -oE -- '--[a-z][a-z-]*' | sort -u)
  [[ -n $options ]] || fail "no options found in tools/$tool"
  for o in $options; do
    grep -qE -- "(^|[^a-z-])$o([^a-z-]|$)" "$tmp/help" || fail "$tool --help does not list $o"
    grep -qE -- "(^|[^a-z-])$o([^a-z-]|$)" "$tmp/man" || fail "$man does not document $o"
  done
  usage_error "$tool --no-such-option" --no-such-option "$SAN_BIN/$tool" --no-such-option
done

# Options that take a value, given none.
usage_error "sanproxyd --config" --config "$SAN_BIN/sanproxyd" --foreground --config
usage_error "sanctl --socket" --socket "$SAN_BIN/sanctl" stats --socket
usage_error "sanctl --timeout" --timeout "$SAN_BIN/sanctl" stats --timeout
usage_error "sanrun --socket" --socket "$SAN_BIN/sanrun" --socket
usage_error "sanperf dma --rounds" --rounds "$SAN_BIN/sanperf" dma --rounds
# Values out of their domain, and the options of another suite.
usage_error "sanperf dma --rounds 0" --rounds "$SAN_BIN/sanperf" dma --rounds 0
usage_error "sanperf contig --case nope" --case "$SAN_BIN/sanperf" contig --case nope
usage_error "sanperf rcache --ops" --ops "$SAN_BIN/sanperf" rcache --ops 5
usage_error "sanperf all --rounds" --rounds "$SAN_BIN/sanperf" all --rounds 1
usage_error "sanperf nosuch" nosuch "$SAN_BIN/sanperf" nosuch
usage_error "sanctl nosuch" nosuch "$SAN_BIN/sanctl" nosuch
echo "tools: --version, --help, man pages and usage errors agree with the sources"
