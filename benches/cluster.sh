#!/usr/bin/env bash
# Several nodes (issue 14): see docs/PERFORMANCE.md, "Several nodes".
#
#   benches/cluster.sh                      # everything
#   ROUNDS=3 DURATION=10 N=1000 benches/cluster.sh
#
# Starts a private PostgreSQL and Redis (.ci/postgres.sh, .ci/redis.sh), builds the release
# binaries once, then:
# 1. cached `POST /v1/verify`: one kms node on a SQLite file and one on PostgreSQL (with
#    Redis for the counters), both with a cached key; ROUNDS rounds of the same `loadgen`
#    for DURATION seconds against each in turn, so machine noise falls on both;
# 2. propagation: two PostgreSQL nodes A and B; N revocations through A, each timed until
#    B answers REVOKED for a key it had cached (`cluster propagation`);
# 3. limiter decisions: `cluster counters` against the same Redis and PostgreSQL;
# 4. creation, cold verification and a list page through the facade on SQLite and
#    PostgreSQL, interleaved (`cluster stores`, cheap argon2id, no cache).
# Prints JSON lines (also in $OUT/results.jsonl).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
DURATION=${DURATION:-10}
WARMUP=${WARMUP:-2}
ROUNDS=${ROUNDS:-3}
CONNS=${CONNS:-64}
N=${N:-1000}
OUT=${OUT:-$(mktemp -d /tmp/kms-cluster.XXXXXX)}
mkdir -p "$OUT"
cd "$ROOT"
cargo build --release -p kms-server -p kms-benches --bins >&2
BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release
KEY=$(head -c 32 /dev/urandom | base64)
export KMS_MASTER_KEY=$KEY

PIDS=()
PG_DIR=$OUT/pg REDIS_DIR=$OUT/redis
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    bash .ci/postgres.sh stop "$PG_DIR" >/dev/null 2>&1 || true
    bash .ci/redis.sh stop "$REDIS_DIR" >/dev/null 2>&1 || true
}
trap cleanup EXIT
bash .ci/postgres.sh start "$PG_DIR" >&2
bash .ci/redis.sh start "$REDIS_DIR" >&2
psql_bin=$(cat "$PG_DIR/bin")/psql
PG=$(sed 's/^export KMS_TEST_POSTGRES_URL=//' "$PG_DIR/env")
"$psql_bin" "$PG" -qc 'CREATE DATABASE stores' >&2
REDIS=$(sed 's/^export KMS_TEST_REDIS_URL=//' "$REDIS_DIR/env")

start() {
    local name=$1
    shift
    "$@" >"$OUT/$name.out" 2>"$OUT/$name.err" &
    PID=$!
    PIDS+=("$PID")
    for _ in $(seq 200); do
        ADDR=$(grep -o 'listening on [0-9.:]*' "$OUT/$name.err" | head -1 | cut -d' ' -f3 || true)
        [[ -n $ADDR ]] && return 0
        sleep 0.1
    done
    echo "$name did not start; see $OUT/$name.err" >&2
    exit 1
}
api() {
    curl -sf -X "$2" "http://$1$3" -H "Authorization: Bearer $ROOT_TOKEN" \
        -H 'content-type: application/json' ${4:+-d "$4"}
}
loadgen() {
    "$BIN/loadgen" "$@" --connections "$CONNS" --warmup "$WARMUP" | tee -a "$OUT/results.jsonl"
}
FLAGS=(--lockout-threshold 0 --rate-limit-per-ip 0 --cache-ttl 1h --log-level warn)

# 1. Cached verification, SQLite vs PostgreSQL.
ROOT_TOKEN=$("$BIN/kms" --db "$OUT/sqlite.db" init 2>/dev/null | jq -r .root_token)
start sqlite "$BIN/kms" --db "$OUT/sqlite.db" serve --listen 127.0.0.1:0 "${FLAGS[@]}"
SQ_ADDR=$ADDR SQ_PID=$PID SQ_ROOT=$ROOT_TOKEN
APP=$(api "$SQ_ADDR" POST /v1/apps '{"name":"load"}' | jq -r .id)
SQ_TOKEN=$(api "$SQ_ADDR" POST "/v1/apps/$APP/tokens" '{"name":"load","scopes":["app.read"]}' | jq -r .token)
api "$SQ_ADDR" POST /v1/verify "{\"token\":\"$SQ_TOKEN\"}" >/dev/null
PGDB=${PG%/postgres}/postgres
ROOT_TOKEN=$("$BIN/kms" --db "$PGDB" init 2>/dev/null | jq -r .root_token)
start pg-a "$BIN/kms" --db "$PGDB" serve --listen 127.0.0.1:0 --redis "$REDIS" "${FLAGS[@]}"
PA_ADDR=$ADDR PA_PID=$PID PG_ROOT=$ROOT_TOKEN
APP=$(api "$PA_ADDR" POST /v1/apps '{"name":"load"}' | jq -r .id)
PG_TOKEN=$(api "$PA_ADDR" POST "/v1/apps/$APP/tokens" '{"name":"load","scopes":["app.read"]}' | jq -r .token)
api "$PA_ADDR" POST /v1/verify "{\"token\":\"$PG_TOKEN\"}" >/dev/null
for round in $(seq "$ROUNDS"); do
    loadgen verify --addr "$SQ_ADDR" --server-pid "$SQ_PID" --auth "$SQ_ROOT" --token "$SQ_TOKEN" \
        --duration "$DURATION" --label "sqlite r$round"
    loadgen verify --addr "$PA_ADDR" --server-pid "$PA_PID" --auth "$PG_ROOT" --token "$PG_TOKEN" \
        --duration "$DURATION" --label "postgres r$round"
done
kill "$SQ_PID"

# 2. Propagation A -> B. B's first answer after the change is a cold verification (store
#    lookup and argon2id), so the nodes of this step use the cheapest argon2id cost to
#    measure the propagation itself; the production-cost figure adds one hash (~12 ms).
"$psql_bin" "$PG" -qc 'CREATE DATABASE propagation' >&2
PROPDB=${PG%/postgres}/propagation
ROOT_TOKEN=$(KMS_INSECURE_FAST_HASH=1 "$BIN/kms" --db "$PROPDB" init 2>/dev/null | jq -r .root_token)
KMS_INSECURE_FAST_HASH=1 start prop-a "$BIN/kms" --db "$PROPDB" serve --listen 127.0.0.1:0 --redis "$REDIS" "${FLAGS[@]}"
PROP_A=$ADDR
KMS_INSECURE_FAST_HASH=1 start prop-b "$BIN/kms" --db "$PROPDB" serve --listen 127.0.0.1:0 --redis "$REDIS" "${FLAGS[@]}"
PROP_B=$ADDR
PROP_APP=$(api "$PROP_A" POST /v1/apps '{"name":"propagation"}' | jq -r .id)
"$BIN/cluster" propagation --a "$PROP_A" --b "$PROP_B" --auth "$ROOT_TOKEN" --app "$PROP_APP" --n "$N" \
    | tee -a "$OUT/results.jsonl"

# 3. Limiter decisions (node B stays up: its counters pool is idle).
"$BIN/cluster" counters --redis "$REDIS" --postgres "$PGDB" --n 20000 | tee -a "$OUT/results.jsonl"
# 4. The store's share of creation, cold verification and a list page, through the facade.
"$BIN/cluster" stores --sqlite "$OUT/stores.db" --postgres "${PG%/postgres}/stores" --n 500 \
    | tee -a "$OUT/results.jsonl"
echo "results: $OUT/results.jsonl" >&2
