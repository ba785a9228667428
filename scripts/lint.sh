#!/usr/bin/env bash
# rustfmt check, clippy on the host for the whole workspace, clippy for wasm32-wasip1 on
# the crates that run inside Envoy. Warnings are errors.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo fmt --all -- --check || { echo "lint: cargo fmt --check failed: run 'cargo fmt --all'" >&2; exit 1; }
cargo clippy --workspace --all-targets -- -D warnings || { echo "lint: host clippy failed" >&2; exit 1; }

kind=rustup
if [[ -f .tools/wasm.env ]]; then
    kind=$(sed -n 's/^VIGIL_WASM_TOOLCHAIN_KIND=//p' .tools/wasm.env)
fi
if [[ "$kind" == rustup ]]; then
    cargo clippy --target wasm32-wasip1 -p vigil-filter -p vigil-filter-core -p vigil-scorer -p vigil-pii -p vigil-traffic --all-targets -- -D warnings \
        || { echo "lint: wasm32-wasip1 clippy failed" >&2; exit 1; }
else
    # Debian's rustc-web ships no clippy and rustup's clippy has no wasm32-wasip1 std here.
    echo "lint: skipping wasm32-wasip1 clippy (Debian fallback toolchain has no clippy); host clippy checked the same code"
fi
