#!/usr/bin/env bash
# Server memory and start-up (issue 6, item 3). See docs/PERFORMANCE.md.
#
#   benches/memory-server.sh                  # 100,000 cached keys, then a 1,000,000-token db
#   KEYS=20000 BIG=100000 benches/memory-server.sh
#   ONLY=cache benches/memory-server.sh       # or ONLY=startup
#
# cache: `kms init`, then `filldb` inserts KEYS tokens (cheapest argon2id cost, 10,000 per
#   transaction). For each allocator setting (now one: the binary's
#   mimalloc; glibc settings such as MALLOC_MMAP_THRESHOLD_=32768 applied before), a fresh
#   `kms serve` (lockouts off, cache TTL 1 h, logs at warn): RSS once the root token is
#   cached, then every token verified once over HTTP (`loadgen warm`), RSS again; the
#   difference over KEYS is the RSS per cached key. Then DURATION seconds of verifications
#   round robin over all KEYS cached keys.
# startup: `filldb` inserts BIG tokens (fill time reported); `kms serve` is started RUNS
#   times on that database: time to `listening on`, time to the first 200 from /readyz, RSS
#   then, and after one cold verification.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
KEYS=${KEYS:-100000}
BIG=${BIG:-1000000}
RUNS=${RUNS:-3}
DURATION=${DURATION:-10}
ONLY=${ONLY:-all}
OUT=${OUT:-$(mktemp -d /tmp/kms-memory.XXXXXX)}
mkdir -p "$OUT"

cd "$ROOT"
cargo build --release -p kms-server -p kms-benches --bins >&2
BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release

PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
}
trap cleanup EXIT

rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }
now() { date +%s.%N; }

# serve NAME DB [ENV...]: starts `kms serve`; sets PID, ADDR and LISTEN_S (seconds until
# `listening on`).
serve() {
    local name=$1 db=$2
    shift 2
    local t0
    t0=$(now)
    env "$@" "$BIN/kms" --db "$db" serve --listen 127.0.0.1:0 --lockout-threshold 0 \
        --rate-limit-per-ip 0 --cache-ttl 1h --log-level warn \
        >"$OUT/$name.out" 2>"$OUT/$name.err" &
    PID=$!
    PIDS+=("$PID")
    ADDR=
    for _ in $(seq 6000); do
        ADDR=$(grep -o 'listening on [0-9.:]*' "$OUT/$name.err" | head -1 | cut -d' ' -f3 || true)
        [[ -n $ADDR ]] && break
        sleep 0.005
    done
    [[ -n $ADDR ]] || { echo "$name did not start; see $OUT/$name.err" >&2; exit 1; }
    LISTEN_S=$(echo "$(now) - $t0" | bc)
    READY_S=
    for _ in $(seq 6000); do
        if curl -sf "http://$ADDR/readyz" >/dev/null; then
            READY_S=$(echo "$(now) - $t0" | bc)
            break
        fi
        sleep 0.005
    done
}

verify() { # verify ROOT_TOKEN TOKEN
    curl -sf -X POST "http://$ADDR/v1/verify" -H "Authorization: Bearer $1" \
        -H 'content-type: application/json' -d "{\"token\":\"$2\",\"permissions\":\"app.read\"}" >/dev/null
}

echo "machine: $(nproc) cores; load average $(cut -d' ' -f1-3 /proc/loadavg); results: $OUT/memory.jsonl" >&2

if [[ $ONLY == all || $ONLY == cache ]]; then
    db=$OUT/cache.db
    root=$("$BIN/kms" --db "$db" init 2>/dev/null | jq -r .root_token)
    "$BIN/filldb" --db "$db" --tokens "$KEYS" --out "$OUT/cache-tokens.txt" | tee -a "$OUT/memory.jsonl"
    first=$(head -1 "$OUT/cache-tokens.txt")
    # The kms binary links mimalloc, so glibc's MALLOC_* settings no longer apply; one run.
    for setting in mimalloc; do
        envs=()
        [[ $setting == *=* ]] && envs=("$setting")
        serve "cache-$setting" "$db" "${envs[@]}"
        verify "$root" "$first" # caches the caller (root) and one key
        base=$(rss_kib "$PID")
        warm=$("$BIN/loadgen" warm --addr "$ADDR" --auth "$root" --tokens-file "$OUT/cache-tokens.txt" \
            --connections 16 --server-pid "$PID" --label "warm $setting")
        filled=$(rss_kib "$PID")
        load=$("$BIN/loadgen" verify --addr "$ADDR" --auth "$root" --tokens-file "$OUT/cache-tokens.txt" \
            --duration "$DURATION" --server-pid "$PID" --label "verify round robin over $KEYS keys, $setting")
        echo "$load" >>"$OUT/memory.jsonl"
        jq -c -n --arg s "$setting" --argjson keys "$KEYS" --argjson base "$base" \
            --argjson filled "$filled" --argjson warm "$warm" --argjson load "$load" '{
            measure: "cached keys", allocator: $s, keys: $keys,
            rss_base_mib: ($base / 1024 | . * 10 | round / 10),
            rss_filled_mib: ($filled / 1024 | . * 10 | round / 10),
            rss_bytes_per_key: (($filled - $base) * 1024 / $keys | round),
            warm_seconds: $warm.seconds, warm_errors: $warm.errors,
            round_robin_rps: $load.throughput_rps, round_robin_p50_us: $load.verify.latency_us.p50,
            round_robin_p99_us: $load.verify.latency_us["p99"], round_robin_errors: $load.errors }' \
            | tee -a "$OUT/memory.jsonl"
        kill "$PID"
    done
fi

if [[ $ONLY == all || $ONLY == startup ]]; then
    db=$OUT/big.db
    root=$("$BIN/kms" --db "$db" init 2>/dev/null | jq -r .root_token)
    "$BIN/filldb" --db "$db" --tokens "$BIG" --out "$OUT/big-tokens.txt" | tee -a "$OUT/memory.jsonl"
    echo "{\"measure\":\"database size\",\"tokens\":$BIG,\"bytes\":$(stat -c %s "$db")}" | tee -a "$OUT/memory.jsonl"
    token=$(tail -1 "$OUT/big-tokens.txt")
    for run in $(seq "$RUNS"); do
        serve "startup-$run" "$db"
        ready_rss=$(rss_kib "$PID")
        t0=$(now)
        verify "$root" "$token"
        cold_s=$(echo "$(now) - $t0" | bc)
        after_rss=$(rss_kib "$PID")
        jq -c -n --argjson tokens "$BIG" --argjson run "$run" --arg listen "$LISTEN_S" \
            --arg ready "$READY_S" --argjson r1 "$ready_rss" --argjson r2 "$after_rss" \
            --arg cold "$cold_s" '{
            measure: "start-up", tokens: $tokens, run: $run,
            listening_ms: ($listen | tonumber * 1000 | round),
            ready_ms: ($ready | tonumber * 1000 | round),
            rss_ready_mib: ($r1 / 1024 | . * 10 | round / 10),
            first_verify_ms: ($cold | tonumber * 1000 | round),
            rss_after_first_verify_mib: ($r2 / 1024 | . * 10 | round / 10) }' \
            | tee -a "$OUT/memory.jsonl"
        kill "$PID"
        wait "$PID" 2>/dev/null || true
    done
fi
