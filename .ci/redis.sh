#!/usr/bin/env bash
# A private, throw-away Redis server for the tests, on a free loopback port.
#
#   .ci/redis.sh start DIR   starts redis-server with its files in DIR and writes DIR/env,
#                            which exports KMS_TEST_REDIS_URL=redis://127.0.0.1:PORT/0
#   .ci/redis.sh stop DIR    stops it and deletes DIR
#   .ci/redis.sh halt DIR    stops the server, keeping DIR (an outage, for tests)
#   .ci/redis.sh resume DIR  starts it again on the same port
#
# Installs redis-server from Debian's packages when it is missing. No persistence (test
# data), loopback only, protected mode on.
set -euo pipefail

usage() { echo "usage: $0 start|stop|halt|resume DIR" >&2; exit 2; }
[[ $# -eq 2 ]] || usage
action=$1
dir=$2

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

# Starts redis-server on $1 and waits until it answers.
run_on() {
  local port=$1 i
  redis-server --bind 127.0.0.1 --port "$port" --dir "$dir" --save '' --appendonly no \
    --daemonize yes --pidfile "$dir/redis.pid" --logfile "$dir/redis.log" >/dev/null
  for i in $(seq 1 50); do
    if redis-cli -p "$port" ping 2>/dev/null | grep -q PONG; then
      echo "$port" >"$dir/port"
      return 0
    fi
    sleep 0.1
  done
  [[ -f "$dir/redis.pid" ]] && kill "$(cat "$dir/redis.pid")" 2>/dev/null || true
  return 1
}

start() {
  if ! command -v redis-server >/dev/null 2>&1; then
    echo "== installing Redis (redis-server not found)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq redis-server >/dev/null
  fi
  mkdir -p "$dir"
  dir=$(cd "$dir" && pwd)
  local port attempt
  for attempt in 1 2 3 4 5; do
    port=$(free_port)
    if run_on "$port"; then
      local url="redis://127.0.0.1:$port/0"
      printf 'export KMS_TEST_REDIS_URL=%s\n' "$url" >"$dir/env"
      echo "Redis $(redis-server --version | awk '{print $3}') at $url (files in $dir)"
      echo "KMS_TEST_REDIS_URL=$url"
      return 0
    fi
    echo "start on port $port failed (attempt $attempt); retrying" >&2
  done
  cat "$dir/redis.log" >&2 || true
  exit 1
}

halt() {
  local pid
  pid=$(cat "$dir/redis.pid")
  kill "$pid"
  local i
  for i in $(seq 1 50); do
    kill -0 "$pid" 2>/dev/null || return 0
    sleep 0.1
  done
  kill -9 "$pid" 2>/dev/null || true
}

resume() {
  run_on "$(cat "$dir/port")"
}

stop() {
  if [[ -f "$dir/redis.pid" ]]; then
    halt || true
  fi
  rm -rf "$dir"
}

case $action in
  start) start ;;
  stop) stop ;;
  halt) halt ;;
  resume) resume ;;
  *) usage ;;
esac
