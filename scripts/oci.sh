#!/usr/bin/env bash
# Packages dist/vigil_filter.wasm as an OCI image layout Istio's WasmPlugin image fetcher
# accepts (the "compat" variant: an OCI image manifest with ONE layer of media type
# application/vnd.oci.image.layer.v1.tar+gzip whose tar holds `plugin.wasm`).
#
# Output (no network, no docker; reproducible: fixed mtimes/owners, gzip -n):
#   $OUT/oci/                   OCI image layout (oci-layout, index.json, blobs/sha256/…)
#   $OUT/vigil-filter-oci.tar   the same layout as one tarball
# OUT defaults to dist/. VIGIL_WASM overrides the input, VIGIL_OCI_TAG the tag (0.1.0).
# Push with e.g.: oras cp --from-oci-layout dist/oci:0.1.0 <registry>/vigil/vigil-filter:0.1.0
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib/oci.sh

wasm=${VIGIL_WASM:-dist/vigil_filter.wasm}
out=${OUT:-dist}
tag=${VIGIL_OCI_TAG:-0.1.0}
[[ -f "$wasm" ]] || { echo "oci: $wasm not found: run make wasm" >&2; exit 1; }
oci_require oci tar gzip sha256sum stat
oci_init "$out/oci"

# Layer: tar with plugin.wasm only, deterministic.
mkdir -p "$OCI_WORK/root"
cp "$wasm" "$OCI_WORK/root/plugin.wasm"
chmod 0644 "$OCI_WORK/root/plugin.wasm"
tar --format=ustar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner \
    -C "$OCI_WORK/root" -cf "$OCI_WORK/layer.tar" plugin.wasm
oci_layer "$OCI_WORK/layer.tar"

# Image config: wasm has no OS/arch of its own; Istio ignores these fields.
oci_image vigil-filter "$tag" \
    "$(printf '{"architecture":"wasm","os":"wasip1","config":{},"rootfs":{"type":"layers","diff_ids":["sha256:%s"]}}' "$OCI_DIFF_ID")" \
    '{"org.opencontainers.image.title":"plugin.wasm"}' ""
oci_tarball "$out/vigil-filter-oci.tar"
echo "oci: $OCI_LAYOUT (tag $tag) and $out/vigil-filter-oci.tar"
echo "oci: manifest sha256:$OCI_MANIFEST  layer sha256:$OCI_LAYER  wasm sha256:$(oci_sha "$wasm")"
