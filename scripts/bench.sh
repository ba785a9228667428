#!/usr/bin/env bash
# make bench: what Vigil costs in the data plane, measured against the floor (issue 7).
#   1. builds the no-op Proxy-Wasm filter (bench/noop-filter) exactly like the Vigil filter
#      (same proxy-wasm, release profile, wasm32-wasip1 toolchain from .tools/wasm.env);
#   2. runs the scorer's own bench (vigil-model bench --json);
#   3. runs `vigil-control bench --json` if the control service has one;
#   4. runs vigil-bench (bench/): real Envoy pinned to CPU 0, upstreams and load generator
#      pinned to CPU 1; prints the table and writes target/bench/results.json.
# Expects `make wasm` to have run (the Makefile's bench target depends on it).
# Environment (all optional): VIGIL_BENCH_ROUNDS (5), VIGIL_BENCH_SECS (3), VIGIL_BENCH_RATE
# (1000 req/s), VIGIL_BENCH_CONNS (16), VIGIL_BENCH_IDLE_SECS (5), VIGIL_BENCH_HOST_TICKS (10),
# VIGIL_BENCH_HOST_REQS (16), VIGIL_BENCH_CONTROL_SECS (5),
# VIGIL_BENCH_ARGS (extra vigil-bench arguments, e.g. "--only host,scorer").
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
OUT="$ROOT/target/bench"
mkdir -p "$OUT"
say() { printf 'bench: %s\n' "$*" >&2; }

[[ -f dist/vigil_filter.wasm ]] || { say "dist/vigil_filter.wasm missing: run make wasm"; exit 1; }
[[ -f .tools/wasm.env ]] || { say ".tools/wasm.env missing: run make setup"; exit 1; }

# --- 1. the no-op filter, built with the Vigil filter's toolchain --------------------------
say "building the no-op wasm filter (bench/noop-filter)"
(
    set -a
    # shellcheck disable=SC1091
    . ./.tools/wasm.env
    set +a
    args=(build --release --target wasm32-wasip1 -p vigil-bench-noop)
    [[ "${VIGIL_WASM_BUILD_STD:-0}" == 1 ]] && args+=(-Zbuild-std=std,panic_abort)
    cargo "${args[@]}" >&2
    cp "${CARGO_TARGET_DIR:-target}/wasm32-wasip1/release/vigil_bench_noop.wasm" "$OUT/noop_filter.wasm"
)

# --- 2. host binaries ---------------------------------------------------------------------
say "building vigil-bench and vigil-model (release)"
cargo build --release -p vigil-bench -p vigil-scorer -p vigil-pii --bin vigil-bench --bin vigil-model --bin vigil-pii >&2

# Pinning: Envoy on CPU 0 (vigil-bench starts it through a taskset wrapper), everything else
# (this process's children: scorer bench, upstreams, load generator) on CPU 1.
PIN=()
ENVOY_CPUS=""
if [[ $(nproc) -ge 2 ]] && command -v taskset >/dev/null; then
    PIN=(taskset -c 1)
    ENVOY_CPUS=0
else
    say "fewer than 2 CPUs or no taskset: not pinning (figures are noisier)"
fi

# --- 3. scorer ----------------------------------------------------------------------------
say "pii: vigil-pii bench (pure crate, one core, MB/s; printed, not asserted)"
"${PIN[@]}" target/release/vigil-pii bench --mb 32 >&2

say "scorer: vigil-model bench --json"
"${PIN[@]}" target/release/vigil-model bench --json >"$OUT/scorer.json"

# --- 4. control service -------------------------------------------------------------------
# `vigil-control bench` runs its own server and clients; no Envoy runs at this point, so it
# is not pinned. Its JSON is folded in as control.*; without it the rows say "not available yet".
CONTROL_ARGS=(--control-note "not available yet: vigil-control has no bench command")
CONTROL_SECS=${VIGIL_BENCH_CONTROL_SECS:-5}
rm -f "$OUT/control.json"
if cargo build --release -p vigil-control >"$OUT/control-build.log" 2>&1 && [[ -x target/release/vigil-control ]]; then
    say "control: vigil-control bench --seconds $CONTROL_SECS"
    if timeout 300 target/release/vigil-control bench --seconds "$CONTROL_SECS" --json "$OUT/control.json" \
            >"$OUT/control-bench.log" 2>&1 \
        && python3 -c 'import json,sys; v=json.load(open(sys.argv[1])); sys.exit(0 if v else 1)' "$OUT/control.json" 2>/dev/null; then
        say "control: folded in vigil-control bench --json"
        CONTROL_ARGS=(--control-json "$OUT/control.json")
    else
        say "control: vigil-control bench gave no JSON (see target/bench/control-bench.log): recorded as not available yet"
    fi
else
    say "control: vigil-control does not build yet (see target/bench/control-build.log): recorded as not available yet"
    CONTROL_ARGS=(--control-note "not available yet: vigil-control does not build")
fi

# --- 5. the measurements ------------------------------------------------------------------
MACHINE="$(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//'), $(free -g | awk '/^Mem:/ {print $2}') GiB, Linux $(uname -r)"
export VIGIL_BENCH_ENVOY_CPUS="$ENVOY_CPUS"
# shellcheck disable=SC2086
"${PIN[@]}" target/release/vigil-bench \
    --out "$OUT/results.json" \
    --noop-wasm "$OUT/noop_filter.wasm" \
    --vigil-wasm "$ROOT/dist/vigil_filter.wasm" \
    --scorer-json "$OUT/scorer.json" \
    "${CONTROL_ARGS[@]}" \
    --machine "$MACHINE" \
    ${VIGIL_BENCH_ARGS:-} | tee "$OUT/table.txt"
