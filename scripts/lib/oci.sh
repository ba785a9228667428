# shellcheck shell=bash
# Shared by scripts/oci.sh (the filter's Wasm image) and scripts/oci-control.sh (the
# control service's image): a reproducible OCI image layout written without docker or
# network — one tar+gzip layer (gzip -n), a config blob, an image manifest, index.json,
# and the whole layout as one tarball (sorted, fixed mtimes and owners).
#
# Use: `source scripts/lib/oci.sh`, then
#   oci_require WHO tools…          fail unless every tool is on PATH
#   oci_init LAYOUT                 empty LAYOUT/blobs/sha256; $OCI_WORK is a scratch dir
#   oci_layer TAR                   gzip the layer into a blob: $OCI_DIFF_ID $OCI_LAYER $OCI_LAYER_SIZE
#   oci_json_blob NAME JSON         write a JSON blob: $OCI_DIGEST $OCI_SIZE
#   oci_image TITLE TAG CONFIG_JSON LAYER_ANNOTATIONS PLATFORM
#                                   config + manifest + index.json: $OCI_MANIFEST $OCI_MANIFEST_SIZE
#                                   (LAYER_ANNOTATIONS / PLATFORM: a JSON object or "")
#   oci_tarball FILE                the layout as one reproducible tarball
# Digests are bare hex (no "sha256:" prefix).

oci_require() {
    local who=$1 tool
    shift
    for tool in "$@"; do
        command -v "$tool" >/dev/null || { echo "$who: $tool is required" >&2; exit 1; }
    done
}

oci_sha() { sha256sum "$1" | cut -d' ' -f1; }
oci_size() { stat -c %s "$1"; }

oci_init() {
    OCI_LAYOUT=$1
    OCI_WORK=$(mktemp -d)
    trap 'rm -rf "$OCI_WORK"' EXIT
    rm -rf "$OCI_LAYOUT" && mkdir -p "$OCI_LAYOUT/blobs/sha256"
}

# FILE -> moved to blobs/sha256/<digest>; prints the digest.
oci_blob() {
    local d
    d=$(oci_sha "$1")
    mv "$1" "$OCI_LAYOUT/blobs/sha256/$d"
    echo "$d"
}

oci_layer() {
    OCI_DIFF_ID=$(oci_sha "$1")
    gzip -n -9 -c "$1" > "$OCI_WORK/layer.tar.gz"
    OCI_LAYER_SIZE=$(oci_size "$OCI_WORK/layer.tar.gz")
    OCI_LAYER=$(oci_blob "$OCI_WORK/layer.tar.gz")
}

oci_json_blob() {
    printf '%s' "$2" > "$OCI_WORK/$1"
    OCI_SIZE=$(oci_size "$OCI_WORK/$1")
    OCI_DIGEST=$(oci_blob "$OCI_WORK/$1")
}

oci_image() {
    local title=$1 tag=$2 config=$3 layer_ann=${4:+,\"annotations\":$4} platform=${5:+,\"platform\":$5}
    oci_json_blob config.json "$config"
    oci_json_blob manifest.json "$(printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:%s","size":%s},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"sha256:%s","size":%s%s}],"annotations":{"org.opencontainers.image.title":"%s","org.opencontainers.image.version":"%s"}}' \
        "$OCI_DIGEST" "$OCI_SIZE" "$OCI_LAYER" "$OCI_LAYER_SIZE" "$layer_ann" "$title" "$tag")"
    OCI_MANIFEST=$OCI_DIGEST
    OCI_MANIFEST_SIZE=$OCI_SIZE
    printf '{"imageLayoutVersion":"1.0.0"}' > "$OCI_LAYOUT/oci-layout"
    printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:%s","size":%s%s,"annotations":{"org.opencontainers.image.ref.name":"%s"}}]}' \
        "$OCI_MANIFEST" "$OCI_MANIFEST_SIZE" "$platform" "$tag" > "$OCI_LAYOUT/index.json"
}

oci_tarball() {
    tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner \
        -C "$OCI_LAYOUT" -cf "$1.tmp" oci-layout index.json blobs
    mv "$1.tmp" "$1"
}
