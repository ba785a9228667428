#!/usr/bin/env bash
# Packages vigil-control as a reproducible OCI image layout (no docker, no network):
# a static x86_64-unknown-linux-musl binary (profile oci-control, paths remapped), run as
# a non-root user (65532), friendly to a read-only root filesystem: the only writable
# path it needs is its data directory /var/lib/vigil (a volume, owned by 65532).
#
# Layer (one tar+gzip, fixed mtimes/owners, sorted, gzip -n):
#   etc/passwd, etc/group         root and vigil (65532), no shell, no home
#   usr/local/bin/vigil-control   the static binary, 0755
#   var/lib/vigil/                0700, owned 65532:65532
# Config: User 65532:65532, Entrypoint vigil-control, Cmd serve --listen 0.0.0.0:8080
# --data /var/lib/vigil (credentials: --credentials FILE or $VIGIL_CONTROL_CREDENTIALS).
#
# Output: $OUT/oci-control/ (OCI image layout) and $OUT/vigil-control-oci.tar.
# OUT defaults to dist/. VIGIL_CONTROL_STATIC=<binary> skips the build (for tests).
# VIGIL_OCI_TAG sets the tag (0.1.0).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

source scripts/lib/oci.sh
out=${OUT:-dist}
tag=${VIGIL_OCI_TAG:-0.1.0}
target=x86_64-unknown-linux-musl
oci_require oci-control tar gzip sha256sum stat

bin=${VIGIL_CONTROL_STATIC:-}
if [[ -z "$bin" ]]; then
    if ! rustc --print target-libdir --target "$target" >/dev/null 2>&1 \
        || [[ ! -d "$(rustc --print target-libdir --target "$target")" ]]; then
        echo "oci-control: the $target Rust target is missing: rustup target add $target" >&2
        exit 1
    fi
    # Paths are remapped so the binary does not depend on where the clone lives.
    RUSTFLAGS="-C target-feature=+crt-static --remap-path-prefix=$ROOT=/vigil --remap-path-prefix=${CARGO_HOME:-$HOME/.cargo}=/cargo" \
        cargo build --quiet --locked --profile oci-control -p vigil-control --bin vigil-control \
        --target "$target" --target-dir target/oci-control
    bin=target/oci-control/$target/oci-control/vigil-control
fi
[[ -f "$bin" ]] || { echo "oci-control: $bin not found" >&2; exit 1; }

oci_init "$out/oci-control"

r="$OCI_WORK/root"
mkdir -p "$r/etc" "$r/usr/local/bin" "$r/var/lib/vigil"
printf 'root:x:0:0:root:/nonexistent:/sbin/nologin\nvigil:x:65532:65532:vigil-control:/nonexistent:/sbin/nologin\n' > "$r/etc/passwd"
printf 'root:x:0:\nvigil:x:65532:\n' > "$r/etc/group"
cp "$bin" "$r/usr/local/bin/vigil-control"
chmod 0644 "$r/etc/passwd" "$r/etc/group"
chmod 0755 "$r/usr/local/bin/vigil-control" "$r/etc" "$r/usr" "$r/usr/local" "$r/usr/local/bin" "$r/var" "$r/var/lib"
chmod 0700 "$r/var/lib/vigil"
common=(--format=ustar --mtime=@0 --numeric-owner -C "$r")
# Root-owned files first (sorted), then the data directory owned by the service user.
tar "${common[@]}" --owner=0 --group=0 --no-recursion -cf "$OCI_WORK/layer.tar" \
    etc etc/group etc/passwd usr usr/local usr/local/bin usr/local/bin/vigil-control var var/lib
tar "${common[@]}" --owner=65532 --group=65532 --no-recursion -rf "$OCI_WORK/layer.tar" var/lib/vigil
oci_layer "$OCI_WORK/layer.tar"

oci_image vigil-control "$tag" \
    "$(printf '{"architecture":"amd64","os":"linux","created":"1970-01-01T00:00:00Z","config":{"User":"65532:65532","Entrypoint":["/usr/local/bin/vigil-control"],"Cmd":["serve","--listen","0.0.0.0:8080","--data","/var/lib/vigil"],"Env":["PATH=/usr/local/bin"],"WorkingDir":"/var/lib/vigil","ExposedPorts":{"8080/tcp":{}},"Volumes":{"/var/lib/vigil":{}},"Labels":{"org.opencontainers.image.title":"vigil-control","org.opencontainers.image.version":"%s"}},"rootfs":{"type":"layers","diff_ids":["sha256:%s"]}}' "$tag" "$OCI_DIFF_ID")" \
    "" '{"architecture":"amd64","os":"linux"}'
oci_tarball "$out/vigil-control-oci.tar"
echo "oci-control: $OCI_LAYOUT (tag $tag) and $out/vigil-control-oci.tar"
echo "oci-control: manifest sha256:$OCI_MANIFEST  layer sha256:$OCI_LAYER  binary sha256:$(oci_sha "$bin")"
