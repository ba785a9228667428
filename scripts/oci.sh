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

wasm=${VIGIL_WASM:-dist/vigil_filter.wasm}
out=${OUT:-dist}
tag=${VIGIL_OCI_TAG:-0.1.0}
[[ -f "$wasm" ]] || { echo "oci: $wasm not found: run make wasm" >&2; exit 1; }
for tool in tar gzip sha256sum stat; do
    command -v "$tool" >/dev/null || { echo "oci: $tool is required" >&2; exit 1; }
done

layout="$out/oci"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
rm -rf "$layout" && mkdir -p "$layout/blobs/sha256"

sha() { sha256sum "$1" | cut -d' ' -f1; }
size() { stat -c %s "$1"; }
blob() { # file -> moves it into blobs/sha256/<digest>, prints the digest
    local d; d=$(sha "$1"); mv "$1" "$layout/blobs/sha256/$d"; echo "$d"
}

# Layer: tar with plugin.wasm only, deterministic.
mkdir -p "$work/root"
cp "$wasm" "$work/root/plugin.wasm"
chmod 0644 "$work/root/plugin.wasm"
tar --format=ustar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner \
    -C "$work/root" -cf "$work/layer.tar" plugin.wasm
diff_id=$(sha "$work/layer.tar")
gzip -n -9 -c "$work/layer.tar" > "$work/layer.tar.gz"
layer_size=$(size "$work/layer.tar.gz")
layer=$(blob "$work/layer.tar.gz")

# Image config: wasm has no OS/arch of its own; Istio ignores these fields.
printf '{"architecture":"wasm","os":"wasip1","config":{},"rootfs":{"type":"layers","diff_ids":["sha256:%s"]}}' \
    "$diff_id" > "$work/config.json"
config_size=$(size "$work/config.json")
config=$(blob "$work/config.json")

printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:%s","size":%s},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"sha256:%s","size":%s,"annotations":{"org.opencontainers.image.title":"plugin.wasm"}}],"annotations":{"org.opencontainers.image.title":"vigil-filter","org.opencontainers.image.version":"%s"}}' \
    "$config" "$config_size" "$layer" "$layer_size" "$tag" > "$work/manifest.json"
manifest_size=$(size "$work/manifest.json")
manifest=$(blob "$work/manifest.json")

printf '{"imageLayoutVersion":"1.0.0"}' > "$layout/oci-layout"
printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:%s","size":%s,"annotations":{"org.opencontainers.image.ref.name":"%s"}}]}' \
    "$manifest" "$manifest_size" "$tag" > "$layout/index.json"

tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner \
    -C "$layout" -cf "$out/vigil-filter-oci.tar.tmp" oci-layout index.json blobs
mv "$out/vigil-filter-oci.tar.tmp" "$out/vigil-filter-oci.tar"
echo "oci: $layout (tag $tag) and $out/vigil-filter-oci.tar"
echo "oci: manifest sha256:$manifest  layer sha256:$layer  wasm sha256:$(sha "$wasm")"
