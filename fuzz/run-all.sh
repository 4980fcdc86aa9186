#!/usr/bin/env bash
# Runs every fuzz target for N seconds each (default 60) and prints executions per target.
#
#   fuzz/run-all.sh [N]
#
# Seeds in fuzz/corpus/<target>/ are copied into fuzz/target/corpus-work/<target>/ and the
# fuzzer grows that copy, so the committed corpus only ever holds the hand-picked seeds.
# Crashes are written to fuzz/artifacts/<target>/; the script carries on with the next
# target and exits non-zero at the end if any target failed.
#
# Works on the stable toolchain through RUSTC_BOOTSTRAP=1 (cargo-fuzz passes -Z flags);
# set CARGO_FUZZ="cargo +nightly fuzz" to use a nightly toolchain instead, and FUZZ_FLAGS
# for extra cargo-fuzz options (e.g. FUZZ_FLAGS="--sanitizer none" for raw speed).
set -uo pipefail
cd "$(dirname "$0")"

secs="${1:-60}"
cargo_fuzz="${CARGO_FUZZ:-cargo fuzz}"
read -r -a fuzz_flags <<< "${FUZZ_FLAGS:-}"
export RUSTC_BOOTSTRAP="${RUSTC_BOOTSTRAP:-1}"

targets=$($cargo_fuzz list) || { echo "cargo fuzz list failed; is cargo-fuzz installed?" >&2; exit 2; }
$cargo_fuzz build "${fuzz_flags[@]}" || exit 2

mkdir -p target/fuzz-logs
summary=()
failed=0
for t in $targets; do
    work="target/corpus-work/$t"
    mkdir -p "$work"
    cp -n corpus/"$t"/* "$work"/ 2>/dev/null || true
    log="target/fuzz-logs/$t.log"
    echo "== $t: ${secs}s"
    $cargo_fuzz run "${fuzz_flags[@]}" "$t" "$work" -- \
        -max_total_time="$secs" -timeout=10 -max_len=8192 -print_final_stats=1 > "$log" 2>&1
    rc=$?
    execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' | tail -n1)
    units=$(find "$work" -type f | wc -l)
    if [ "$rc" -eq 0 ]; then
        result="ok"
    else
        result="FAILED (exit $rc; see fuzz/$log and fuzz/artifacts/$t/)"
        failed=1
        grep -m1 -A3 -E "panicked at|ERROR: libFuzzer|SUMMARY" "$log" | sed 's/^/    /'
    fi
    summary+=("$(printf '%-18s %12s execs  %6s corpus units  %s' "$t" "${execs:-?}" "$units" "$result")")
done

echo
echo "== summary (${secs}s per target)"
printf '%s\n' "${summary[@]}"
exit "$failed"
