#!/usr/bin/env bash
# Load test of `kms serve` over loopback (issue 6, item 2). See docs/PERFORMANCE.md.
#
#   benches/load.sh                 # everything, pinned: server on CPU 1, generator on CPU 0
#   PIN=0 benches/load.sh           # no pinning: server and generator share both cores
#   ROUNDS=5 DURATION=10 SOAK=60 CONNS=64 benches/load.sh
#   ONLY=verify benches/load.sh     # just the verify-vs-bare rounds (also: mixed, soak,
#                                   # counting)
#
# 1. Builds the release binaries once (kms, loadgen, bare_axum).
# 2. verify vs bare: `kms serve` on a fresh database (production argon2id cost; lockouts
#    and the per-address rate limit off so the generator is never refused; verified-key
#    cache TTL 1 h so the key stays cached through every round), one application and one
#    token created over HTTP, the key cached by one verification; a second `kms serve` on
#    the same database with --log-level warn; `bare_axum` answering with the body kms
#    returned. ROUNDS rounds, each running the same generator for DURATION seconds against
#    kms (info logs), kms (warn logs) and bare axum in turn, so machine noise falls on all.
# 3. mixed: a fresh `kms serve` with production settings (TTL 60 s, argon2id OWASP cost
#    for created tokens: KMS_INSECURE_FAST_HASH is NOT set), 90 % verifications and 10 %
#    token creations/revocations; then the same against a server with
#    KMS_INSECURE_FAST_HASH=1, to show the management path without argon2id.
# 4. soak: a fresh production-settings server, the mixed workload for SOAK seconds, RSS
#    sampled every 5 s.
# 5. counting (issue 17): two `kms serve` on one database, alike but for
#    --usage-counting true/false (warn logs), the same generator against each in turn,
#    ROUNDS rounds: the throughput cost of usage counting.
# Prints one JSON line per run (also in $OUT/results.jsonl) and a table at the end.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
DURATION=${DURATION:-15}
WARMUP=${WARMUP:-2}
ROUNDS=${ROUNDS:-3}
CONNS=${CONNS:-64}
SOAK=${SOAK:-60}
PIN=${PIN:-1}
ONLY=${ONLY:-all}
OUT=${OUT:-$(mktemp -d /tmp/kms-load.XXXXXX)}
mkdir -p "$OUT"

cd "$ROOT"
cargo build --release -p kms-server -p kms-benches --bins >&2
BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release

if [[ $PIN == 1 ]]; then
    SERVER_CPU=(taskset -c 1)
    LOADGEN_CPU=(taskset -c 0)
else
    SERVER_CPU=()
    LOADGEN_CPU=()
fi

PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
}
trap cleanup EXIT

# start NAME CMD... : starts a server, waits for `listening on ADDR`; sets ADDR and PID.
start() {
    local name=$1
    shift
    "${SERVER_CPU[@]}" "$@" >"$OUT/$name.out" 2>"$OUT/$name.err" &
    PID=$!
    PIDS+=("$PID")
    for _ in $(seq 100); do
        ADDR=$(grep -o 'listening on [0-9.:]*' "$OUT/$name.err" | head -1 | cut -d' ' -f3 || true)
        [[ -n $ADDR ]] && return 0
        sleep 0.1
    done
    echo "$name did not start; see $OUT/$name.err" >&2
    exit 1
}

# api ADDR METHOD PATH [BODY]: a JSON call as root.
api() {
    curl -sf -X "$2" "http://$1$3" -H "Authorization: Bearer $ROOT_TOKEN" \
        -H 'content-type: application/json' ${4:+-d "$4"}
}

# loadgen ARGS...: one run, its JSON line appended to results.jsonl.
loadgen() {
    "${LOADGEN_CPU[@]}" "$BIN/loadgen" "$@" --connections "$CONNS" --warmup "$WARMUP" \
        | tee -a "$OUT/results.jsonl"
}

# kms_server NAME [FLAGS...]: a kms server on a fresh database with lockouts and the
# per-address rate limit off; sets ADDR, PID, ROOT_TOKEN, APP, TOKEN and warms the cache.
kms_server() {
    local name=$1
    shift
    local db="$OUT/$name.db"
    ROOT_TOKEN=$("$BIN/kms" --db "$db" init 2>/dev/null | jq -r .root_token)
    start "$name" "$BIN/kms" --db "$db" serve --listen 127.0.0.1:0 \
        --lockout-threshold 0 --rate-limit-per-ip 0 "$@"
    APP=$(api "$ADDR" POST /v1/apps '{"name":"load"}' | jq -r .id)
    TOKEN=$(api "$ADDR" POST "/v1/apps/$APP/tokens" \
        '{"name":"load","scopes":["app.read","token.verify"]}' | jq -r .token)
    # One verification caches both the caller (root) and the token: the load never
    # starts with every connection hashing at once.
    api "$ADDR" POST /v1/verify "{\"token\":\"$TOKEN\",\"permissions\":\"app.read\"}" \
        >"$OUT/$name.verify-response.json"
}

echo "machine: $(nproc) cores, $(lscpu | sed -n 's/^Model name: *//p'); load average $(cut -d' ' -f1-3 /proc/loadavg); pinned: $PIN" >&2
echo "results: $OUT/results.jsonl" >&2

if [[ $ONLY == all || $ONLY == verify ]]; then
    kms_server kms-info --cache-ttl 1h
    KMS_ADDR=$ADDR KMS_PID=$PID
    # A second server on the same database: same key, logs at warn.
    start kms-warn "$BIN/kms" --db "$OUT/kms-info.db" serve --listen 127.0.0.1:0 \
        --lockout-threshold 0 --rate-limit-per-ip 0 --cache-ttl 1h --log-level warn
    WARN_ADDR=$ADDR WARN_PID=$PID
    api "$WARN_ADDR" POST /v1/verify "{\"token\":\"$TOKEN\",\"permissions\":\"app.read\"}" >/dev/null
    start bare "$BIN/bare_axum" --listen 127.0.0.1:0 --body-file "$OUT/kms-info.verify-response.json"
    BARE_ADDR=$ADDR BARE_PID=$PID
    COMMON=(--auth "$ROOT_TOKEN" --token "$TOKEN" --duration "$DURATION")
    for round in $(seq "$ROUNDS"); do
        loadgen verify --addr "$KMS_ADDR" --server-pid "$KMS_PID" "${COMMON[@]}" --label "kms r$round"
        loadgen verify --addr "$WARN_ADDR" --server-pid "$WARN_PID" "${COMMON[@]}" --label "kms-warn-logs r$round"
        loadgen bare --addr "$BARE_ADDR" --server-pid "$BARE_PID" "${COMMON[@]}" --label "bare r$round"
    done
    kill "$KMS_PID" "$WARN_PID" "$BARE_PID"
fi

if [[ $ONLY == all || $ONLY == counting ]]; then
    kms_server kms-counting-on --cache-ttl 1h --log-level warn --usage-counting true
    ON_ADDR=$ADDR ON_PID=$PID
    start kms-counting-off "$BIN/kms" --db "$OUT/kms-counting-on.db" serve --listen 127.0.0.1:0 \
        --lockout-threshold 0 --rate-limit-per-ip 0 --cache-ttl 1h --log-level warn \
        --usage-counting false
    OFF_ADDR=$ADDR OFF_PID=$PID
    api "$OFF_ADDR" POST /v1/verify "{\"token\":\"$TOKEN\",\"permissions\":\"app.read\"}" >/dev/null
    COMMON=(--auth "$ROOT_TOKEN" --token "$TOKEN" --duration "$DURATION")
    for round in $(seq "$ROUNDS"); do
        loadgen verify --addr "$ON_ADDR" --server-pid "$ON_PID" "${COMMON[@]}" --label "counting-on r$round"
        loadgen verify --addr "$OFF_ADDR" --server-pid "$OFF_PID" "${COMMON[@]}" --label "counting-off r$round"
    done
    kill "$ON_PID" "$OFF_PID"
fi

if [[ $ONLY == all || $ONLY == mixed ]]; then
    kms_server kms-mixed
    loadgen mixed --addr "$ADDR" --server-pid "$PID" --auth "$ROOT_TOKEN" --token "$TOKEN" \
        --app "$APP" --duration "$DURATION" --label "mixed argon2id"
    kill "$PID"
    KMS_INSECURE_FAST_HASH=1 kms_server kms-mixed-fast
    loadgen mixed --addr "$ADDR" --server-pid "$PID" --auth "$ROOT_TOKEN" --token "$TOKEN" \
        --app "$APP" --duration "$DURATION" --label "mixed fast-hash"
    kill "$PID"
fi

if [[ $ONLY == all || $ONLY == soak ]]; then
    kms_server kms-soak
    loadgen soak --addr "$ADDR" --server-pid "$PID" --auth "$ROOT_TOKEN" --token "$TOKEN" \
        --app "$APP" --duration "$SOAK" --rss-interval 5 --label "soak"
    kill "$PID"
fi

echo
jq -r -s '
  def row: [.label, .throughput_rps, .verify.latency_us.p50, .verify.latency_us["p99"],
            .verify.latency_us["p99.9"], (.server_cpu.us_per_request // "-"),
            (.server_cpu.cores // "-"), .errors,
            (if .rss_kib then "\(.rss_kib.start / 1024 | floor)->\(.rss_kib.end / 1024 | floor) MiB" else "" end)]
          | @tsv;
  (["run", "req/s", "verify p50 us", "p99 us", "p99.9 us", "server CPU us/req", "server cores", "errors", "RSS"] | @tsv),
  (.[] | row),
  "",
  ((map(select(.label | startswith("kms r"))) | map(.throughput_rps)) as $k
   | (map(select(.label | startswith("kms-warn-logs r"))) | map(.throughput_rps)) as $w
   | (map(select(.label | startswith("bare r"))) | map(.throughput_rps)) as $b
   | if ($b | length) > 0 then
       "kms / bare per round:           \([$k, $b] | transpose | map(.[0] / .[1] * 1000 | round / 10 | tostring + " %") | join(", "))",
       "kms (warn logs) / bare per round: \([$w, $b] | transpose | map(.[0] / .[1] * 1000 | round / 10 | tostring + " %") | join(", "))",
       "target: >= 70 %"
     else empty end),
  ((map(select(.label | startswith("counting-on r"))) | map(.throughput_rps)) as $on
   | (map(select(.label | startswith("counting-off r"))) | map(.throughput_rps)) as $off
   | if ($off | length) > 0 then
       "counting on / off per round:     \([$on, $off] | transpose | map(.[0] / .[1] * 1000 | round / 10 | tostring + " %") | join(", "))",
       "target: >= 97 %"
     else empty end),
  (.[] | select(.create) | "\(.label): create p50 \(.create.latency_us.p50) us p99 \(.create.latency_us["p99"]) us (\(.create.requests)); revoke p50 \(.revoke.latency_us.p50) us p99 \(.revoke.latency_us["p99"]) us (\(.revoke.requests))")
' "$OUT/results.jsonl" | column -t -s $'\t'
