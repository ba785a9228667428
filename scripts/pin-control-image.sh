#!/usr/bin/env bash
# Pins the control-service image by digest in every manifest that deploys it
# (istio-manifests/, kong-mesh-manifests/, deploy/): rewrites each
# `…/vigil-control@sha256:<hex>` to the manifest digest of the image `make oci-control`
# builds (dist/oci-control/index.json; built first unless PIN_NO_BUILD=1).
# The build is reproducible, so the digest is a function of the source and toolchain;
# tests/tests/oci_control.rs fails when a manifest names another digest.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-dist}
if [[ "${PIN_NO_BUILD:-0}" != 1 ]]; then
    OUT=$out scripts/oci-control.sh
fi
index="$out/oci-control/index.json"
[[ -f "$index" ]] || { echo "pin-control-image: $index not found: run make oci-control" >&2; exit 1; }
digest=$(grep -o '"digest":"sha256:[0-9a-f]\{64\}"' "$index" | head -1 | grep -o '[0-9a-f]\{64\}')
[[ -n "$digest" ]] || { echo "pin-control-image: no manifest digest in $index" >&2; exit 1; }
mapfile -t files < <(grep -rlE 'vigil-control@sha256:[0-9a-f]{64}' istio-manifests kong-mesh-manifests deploy || true)
[[ ${#files[@]} -gt 0 ]] || { echo "pin-control-image: no manifest references vigil-control@sha256:…" >&2; exit 1; }
for f in "${files[@]}"; do
    sed -i -E "s/(vigil-control@sha256:)[0-9a-f]{64}/\1$digest/g" "$f"
    echo "pin-control-image: $f → sha256:$digest"
done
