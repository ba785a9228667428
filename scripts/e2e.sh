#!/usr/bin/env bash
# make e2e: the end-to-end tests with real Envoy (run-tests.py --group e2e), with the static
# control binary that oci_control.rs packages built beside them at idle priority.
#
# The static build (release, musl, its own target dir) is about five CPU-minutes. The tests
# use well under the machine's two cores (run-tests.py keeps them within E2E_CPU_BUDGET,
# and the self-judgement phase uses about half a core for seven minutes), so the build runs
# in the background under SCHED_IDLE (`chrt --idle 0`, else nice 19): it gets only CPU no
# test wants, and a timing-sensitive test is never made to wait for it. It runs in the
# environment run-tests.py gives oci_control (else cargo's fingerprints differ and the
# test rebuilds); that test, scheduled late, finds it done or waits on cargo's lock.
# Arguments: run-tests.py's (after --group e2e). Environment: VIGIL_CONTROL_BIN, CARGO.
set -uo pipefail
cd "$(dirname "$0")/.."
logs=${E2E_LOG_DIR:-target/test-logs}
mkdir -p "$logs"
prebuild_log=$logs/oci-control-prebuild.log

idle=(chrt --idle 0)
"${idle[@]}" true 2>/dev/null || idle=(nice -n 19)
env CARGO_MANIFEST_DIR="$PWD/tests" CARGO_PKG_NAME=vigil-e2e CARGO="${CARGO:-$(command -v cargo)}" \
    OUT=target/oci-control-prebuild "${idle[@]}" scripts/oci-control.sh >"$prebuild_log" 2>&1 &
prebuild=$!
printf 'e2e: static control build started in the background (%s, log %s)\n' "${idle[*]}" "$prebuild_log"

python3 scripts/run-tests.py --group e2e "$@"
tests=$?

wait "$prebuild"
built=$?
if [[ $built -ne 0 ]]; then
    printf 'e2e: the static control build failed (exit %s):\n' "$built" >&2
    tail -n 40 "$prebuild_log" >&2
    exit 1
fi
exit "$tests"
