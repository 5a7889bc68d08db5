#!/usr/bin/env bash
# Coverage-guided fuzzing of rgpu's untrusted-input DDIs (DxgkDdiBuildPagingBuffer,
# DxgkDdiQueryAdapterInfo; and user_input: DxgkDdiEscape buffers and DxgkDdiCreateAllocation
# private data through dxgk-sim's D3DKMT front end) with cargo-fuzz / libFuzzer, each on a
# started adapter in dxgk-sim, and of dxgk's BuildPagingBuffer decode alone
# (decode_paging_buffer: raw argument blocks and MDL headers). Harnesses, input layouts and
# invariants: tests/support/fuzz_harness.rs, tests/support/fuzz_user_input.rs. Four targets:
# at the default 30 s, 120 s of fuzzing in all (CI passes 22 s: under 90 s).
#
#   tools/fuzz/run.sh [seconds per target]      (default 30: 120 s for the four targets)
#
# Environment:
#   FUZZ_SANITIZER=address|none   address (default) also catches reads past the entry, range
#                                 and PFN arrays; none is ~3-8x faster (writes past buffers are
#                                 still caught by the harness's guard bytes).
#   FUZZ_TARGETS="a b"            default: every target in fuzz/Cargo.toml.
#
# Installs cargo-fuzz (crates.io, --locked) if missing. Runs on the pinned stable toolchain:
# cargo-fuzz passes -Z flags (-Zsanitizer=address, ...), which RUSTC_BOOTSTRAP=1 lets stable
# rustc accept; no nightly toolchain is used. Seeds: fuzz/seeds/<target>/ (checked in, replayed
# by `cargo test --test fuzz_regressions`); the growing corpus goes to fuzz/corpus/<target>/
# (ignored by git). Exits non-zero if a target crashes: its input is in fuzz/artifacts/<target>/
# — decode it with `RGPU_FUZZ_INPUT=<file> cargo test --test fuzz_regressions show_input --
# --ignored --nocapture`, fix the driver, and add it to fuzz/regressions/<target>/.
set -euo pipefail
cd "$(dirname "$0")/../.."

secs=${1:-30}
sanitizer=${FUZZ_SANITIZER:-address}
targets=${FUZZ_TARGETS:-build_paging_buffer query_adapter_info decode_paging_buffer user_input}
export RUSTC_BOOTSTRAP=1

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "installing cargo-fuzz"
    cargo install cargo-fuzz --locked
fi
cargo fuzz --version

cd fuzz
t0=$(date +%s)
cargo fuzz build -s "$sanitizer"
echo "build (${sanitizer}): $(( $(date +%s) - t0 ))s"

status=0
summary=()
for t in $targets; do
    mkdir -p "corpus/$t"
    log=$(mktemp)
    # -detect_leaks=0: the simulator keeps every debug line, which libFuzzer's per-input leak
    # heuristic would rescan the heap for on each input (50 exec/s); leaks of the driver are
    # checked by the simulator itself whenever the harness tears an adapter down.
    if cargo fuzz run -s "$sanitizer" "$t" "corpus/$t" "seeds/$t" -- \
        -max_total_time="$secs" -detect_leaks=0 -print_final_stats=1 >"$log" 2>&1; then
        result=ok
    else
        result=CRASH
        status=1
        tail -n 80 "$log"
        echo "$t: crash input(s): $(ls -d "$PWD/artifacts/$t/"* 2>/dev/null | tr '\n' ' ')"
    fi
    execs=$(awk '/stat::number_of_executed_units/ { print $2 }' "$log")
    rate=$(grep -oE 'exec/s: [0-9]+' "$log" | tail -n 1 | awk '{ print $2 }')
    cov=$(grep -oE 'cov: [0-9]+' "$log" | tail -n 1 | awk '{ print $2 }')
    corpus=$(find "corpus/$t" -type f | wc -l)
    seeds=$(find "seeds/$t" -type f | wc -l)
    summary+=("$t: $result, ${execs:-?} executions in ${secs}s (${rate:-?} exec/s), coverage ${cov:-?} edges, corpus ${corpus} files (+${seeds} seeds)")
    rm -f "$log"
done

echo
echo "=== fuzz summary (sanitizer: ${sanitizer})"
printf '%s\n' "${summary[@]}"
exit "$status"
