#!/usr/bin/env bash
# Builds the filter for wasm32-wasip1 and publishes dist/vigil_filter.wasm (+ .sha256).
# Uses the toolchain scripts/setup.sh chose (.tools/wasm.env): rustup's target, or
# Debian's fallback (RUSTC=/usr/bin/rustc, std rebuilt with -Zbuild-std, own target dir).
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ -f .tools/wasm.env ]]; then
    set -a
    # shellcheck disable=SC1091
    . ./.tools/wasm.env
    set +a
else
    echo "build-wasm: .tools/wasm.env missing: run make setup" >&2
    exit 1
fi

args=(build --release --target wasm32-wasip1 -p vigil-filter)
if [[ "${VIGIL_WASM_BUILD_STD:-0}" == 1 ]]; then
    args+=(-Zbuild-std=std,panic_abort)
fi
echo "build-wasm: cargo ${args[*]} (toolchain: ${VIGIL_WASM_TOOLCHAIN_KIND:-rustup})"
cargo "${args[@]}" || { echo "build-wasm: cargo build of vigil-filter for wasm32-wasip1 failed" >&2; exit 1; }

out="${CARGO_TARGET_DIR:-target}/wasm32-wasip1/release/vigil_filter.wasm"
[[ -f "$out" ]] || { echo "build-wasm: $out was not produced (is vigil-filter a cdylib?)" >&2; exit 1; }
mkdir -p dist
cp "$out" dist/vigil_filter.wasm.tmp
mv dist/vigil_filter.wasm.tmp dist/vigil_filter.wasm
(cd dist && sha256sum vigil_filter.wasm > vigil_filter.wasm.sha256)
echo "build-wasm: dist/vigil_filter.wasm $(stat -c %s dist/vigil_filter.wasm) bytes, sha256 $(cut -c1-16 dist/vigil_filter.wasm.sha256)…"
