#!/usr/bin/env bash
# A private, throw-away PostgreSQL server for the tests, on a free loopback port.
#
#   .ci/postgres.sh start DIR   creates a cluster in DIR (an empty or missing directory),
#                               starts it, and writes DIR/env, which exports
#                               KMS_TEST_POSTGRES_URL=postgres://postgres@127.0.0.1:PORT/postgres
#   .ci/postgres.sh stop DIR    stops it and deletes DIR
#   .ci/postgres.sh halt DIR    stops the server, keeping DIR (an outage, for tests)
#   .ci/postgres.sh resume DIR  starts it again on the same port
#
# Installs PostgreSQL from Debian's packages when initdb is missing. The cluster runs as
# the `postgres` user when started by root (initdb refuses root), with trust
# authentication on loopback only, fsync off (test data), and its unix socket in DIR.
set -euo pipefail

usage() { echo "usage: $0 start|stop|halt|resume DIR" >&2; exit 2; }
[[ $# -eq 2 ]] || usage
action=$1
dir=$2

pg_bin() {
  local bin
  bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
  if [[ -n "$bin" && -x "$bin/initdb" ]]; then
    echo "$bin"
    return 0
  fi
  return 1
}

# Runs a command as the cluster's owner.
as_owner() {
  if [[ $(id -u) -eq 0 ]]; then
    if command -v runuser >/dev/null 2>&1; then
      runuser -u postgres -- "$@"
    else
      su postgres -s /bin/sh -c "$(printf '%q ' "$@")"
    fi
  else
    "$@"
  fi
}

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

start() {
  if ! bin=$(pg_bin); then
    echo "== installing PostgreSQL (initdb not found)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq postgresql-15 >/dev/null 2>&1 || apt-get install -y -qq postgresql >/dev/null
    bin=$(pg_bin) || { echo "PostgreSQL was installed but initdb is still missing" >&2; exit 1; }
  fi
  mkdir -p "$dir"
  dir=$(cd "$dir" && pwd)
  if [[ $(id -u) -eq 0 ]]; then
    id postgres >/dev/null 2>&1 || { echo "there is no postgres user to run the server as" >&2; exit 1; }
    chown postgres "$dir"
  fi
  chmod 700 "$dir"
  as_owner "$bin/initdb" -D "$dir/data" -U postgres -A trust -E UTF8 --locale=C.UTF-8 --no-sync >"$dir/initdb.log" 2>&1 \
    || { cat "$dir/initdb.log" >&2; exit 1; }
  local port attempt
  for attempt in 1 2 3 4 5; do
    port=$(free_port)
    if as_owner "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 30 \
        -o "-c listen_addresses=127.0.0.1 -p $port -k $dir -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=300" \
        start >/dev/null; then
      echo "$port" >"$dir/port"
      local url="postgres://postgres@127.0.0.1:$port/postgres"
      printf 'export KMS_TEST_POSTGRES_URL=%s\n' "$url" >"$dir/env"
      echo "$bin" >"$dir/bin"
      echo "PostgreSQL $("$bin/postgres" --version | awk '{print $3}') at $url (data in $dir)"
      echo "KMS_TEST_POSTGRES_URL=$url"
      return 0
    fi
    echo "start on port $port failed (attempt $attempt); retrying" >&2
  done
  cat "$dir/server.log" >&2 || true
  exit 1
}

stop() {
  [[ -d "$dir" ]] || return 0
  local bin
  bin=$(cat "$dir/bin" 2>/dev/null || pg_bin || true)
  if [[ -n "$bin" && -f "$dir/data/postmaster.pid" ]]; then
    as_owner "$bin/pg_ctl" -D "$dir/data" -m immediate -w stop >/dev/null || true
  fi
  rm -rf "$dir"
}

halt() {
  as_owner "$(cat "$dir/bin")/pg_ctl" -D "$dir/data" -m immediate -w stop >/dev/null
}

resume() {
  local port
  port=$(cat "$dir/port")
  as_owner "$(cat "$dir/bin")/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 30 \
    -o "-c listen_addresses=127.0.0.1 -p $port -k $dir -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=300" \
    start >/dev/null
}

case "$action" in
  start) start ;;
  stop) stop ;;
  halt) halt ;;
  resume) resume ;;
  *) usage ;;
esac
