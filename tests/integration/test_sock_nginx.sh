#!/usr/bin/env bash
# nginx under sanrun against the real daemon: an event-driven server (epoll, non-blocking
# accept4, sendfile from the file to the socket, writev of headers) serving a 32 MiB file. A sanrun'd
# curl gets it over the SAN (san_carried, what the daemon's NIC carried, grows by at least the file's size), with
# sendfile on and off, and a plain curl gets it over TCP from the same server; every copy equals
# the file. nginx runs as one process (master_process off): a forked worker would inherit the
# master's listener, which in a forked child listens on TCP only (docs/sock.md, "fork").
# Skipped when nginx or curl is missing (scripts/install-deps installs them).
set -euo pipefail
: "${SAN_BIN:?}"
test=test_sock_nginx logs='error.log'
# shellcheck source=sock_programs_lib.sh
source "$(dirname "$0")/sock_programs_lib.sh"
nginx=$(command -v nginx || echo /usr/sbin/nginx)
[[ -x $nginx ]] || skip "nginx is not installed"
command -v curl >/dev/null || skip "curl is not installed"
command -v python3 >/dev/null || skip "python3 is not installed"
chmod 755 "$tmp"
start_daemon

mkdir "$tmp/www"
head -c $((32 << 20)) /dev/urandom >"$tmp/www/big.bin"
want=$(sha256sum <"$tmp/www/big.bin")

# Serves $tmp/www under sanrun with sendfile $1 (on/off) on a fresh port; sets port.
start_nginx() {
  port=$(free_port)
  cat >"$tmp/nginx.conf" <<EOF
daemon off;
master_process off;
error_log $tmp/error.log info;
pid $tmp/nginx.pid;
events { worker_connections 64; }
http {
  access_log off;
  client_body_temp_path $tmp/body;
  proxy_temp_path $tmp/proxy;
  fastcgi_temp_path $tmp/fastcgi;
  uwsgi_temp_path $tmp/uwsgi;
  scgi_temp_path $tmp/scgi;
  sendfile $1;
  server { listen 127.0.0.1:$port; root $tmp/www; }
}
EOF
  timeout 300 "$SAN_BIN/sanrun" "$nginx" -p "$tmp" -c "$tmp/nginx.conf" >"$tmp/nginx.out" 2>&1 &
  server=$!
  pids+=("$server")
  for _ in $(seq 100); do
    curl -s -o /dev/null "http://127.0.0.1:$port/" 2>/dev/null && return 0
    sleep 0.1
  done
  fail "nginx did not start ($(tail -3 "$tmp/nginx.out"))"
}

for sf in on off; do
  start_nginx "$sf"
  before=$(san_carried)
  timeout 120 "$SAN_BIN/sanrun" curl -sS -o "$tmp/san.bin" "http://127.0.0.1:$port/big.bin" ||
    fail "sanrun curl (sendfile $sf): exit $?"
  after=$(san_carried)
  [[ $(sha256sum <"$tmp/san.bin") == "$want" ]] || fail "sanrun curl (sendfile $sf): the copy differs"
  ((after - before >= 32 << 20)) || fail "sanrun curl (sendfile $sf): san_carried grew by $((after - before)) only"

  before=$(nic_bytes)
  timeout 120 curl -sS -o "$tmp/tcp.bin" "http://127.0.0.1:$port/big.bin" || fail "plain curl: exit $?"
  after=$(nic_bytes)
  [[ $(sha256sum <"$tmp/tcp.bin") == "$want" ]] || fail "plain curl (sendfile $sf): the copy differs"
  ((after - before < 1 << 20)) || fail "plain curl went over the SAN ($((after - before)) bytes)"
  kill "$server" 2>/dev/null || true
  wait "$server" 2>/dev/null || true
done
echo "sock programs: nginx under sanrun (sendfile on and off) to curl, 32 MiB over the SAN and over TCP, equal"
