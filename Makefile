# Vigil's front door. `make test` is what CI runs (.ci/run); `make demo` shows it working.
SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
.NOTPARALLEL:

# e2e tests run one process per test, several at once, longest first (scripts/run-tests.py;
# each test starts its own Envoy and upstreams on kernel-chosen ports, so they never collide):
# at most E2E_JOBS at once and at most E2E_CPU_BUDGET cores of expected CPU use (from the
# last run's times, or tests/e2e-times.tsv), so timing-sensitive tests keep their CPU.
# E2E_EXCLUSIVE (BINARY::NAME prefixes) run only beside each other: the self-judgement tests
# read a load generator's CPU stall as a traffic burst.
E2E_JOBS ?= 4
E2E_CPU_BUDGET ?= 1.2
E2E_EXCLUSIVE ?= self_judgement::
# One package selection for every debug build (unit and e2e): one feature resolution, so no
# crate is compiled twice; vigil-control's binary comes from the same build.
TEST_PKGS := --workspace --exclude vigil-filter
RUN_TESTS := scripts/run-tests.py --cargo-args '$(TEST_PKGS)'
STEP := scripts/step.sh
LOGS := target/test-logs

.PHONY: all setup wasm lint unit eval e2e test demo clean distclean

all: test

## setup: wasm32-wasip1 toolchain (rustup, else Debian fallback) and Envoy 1.40 in .venv
setup:
	@$(STEP) setup scripts/setup.sh

## wasm: dist/vigil_filter.wasm + dist/vigil_filter.wasm.sha256
wasm: setup
	@$(STEP) wasm scripts/build-wasm.sh

## lint: rustfmt check; clippy -D warnings on the host and for wasm32-wasip1
lint: setup
	@$(STEP) lint scripts/lint.sh

## unit: host unit tests of every crate but the wasm glue and the e2e tests (builds the e2e tests too)
unit:
	@mkdir -p $(LOGS)
	@$(STEP) unit bash -o pipefail -c "($(RUN_TESTS) --group unit --whole-binaries --jobs 2 --cpu-budget 2 --hints /dev/null --log-dir $(LOGS)/unit --times $(LOGS)/unit-times.tsv && cargo test $(TEST_PKGS) --doc) 2>&1 | tee $(LOGS)/unit.log"

## eval: the scorer against the incumbents on held-out seeds; fails if a Vigil goal is missed
eval:
	@$(STEP) eval cargo run --release --quiet -p vigil-scorer --bin vigil-model -- eval --check

## e2e: end-to-end tests with real Envoy (needs setup and wasm), with the static control
## binary oci_control.rs packages built beside them at idle priority (scripts/e2e.sh)
e2e: wasm
	@mkdir -p $(LOGS)
	@$(STEP) e2e bash -o pipefail -c "E2E_LOG_DIR=$(LOGS) VIGIL_CONTROL_BIN=$(CURDIR)/target/debug/vigil-control scripts/e2e.sh --cargo-args '$(TEST_PKGS)' --jobs $(E2E_JOBS) --cpu-budget $(E2E_CPU_BUDGET) $(foreach x,$(E2E_EXCLUSIVE),--exclusive $(x)) --log-dir $(LOGS)/e2e 2>&1 | tee $(LOGS)/e2e.log"

## test: everything, in order: setup, lint, wasm, unit, eval, e2e
test:
	@rm -rf target/make-test-times.tsv $(LOGS)
	@$(MAKE) --no-print-directory setup lint wasm unit eval e2e
	@echo; echo "make test: all steps passed; seconds per step:"; cat target/make-test-times.tsv
	@scripts/test-summary.sh $(LOGS)/unit.log $(LOGS)/e2e.log

## oci: OCI image layout of the filter for Istio oci:// URLs: dist/oci/ + dist/vigil-filter-oci.tar
.PHONY: oci
oci: wasm
	@$(STEP) oci scripts/oci.sh

## oci-control: reproducible OCI image layout of vigil-control (static musl binary, non-root): dist/oci-control/ + dist/vigil-control-oci.tar
.PHONY: oci-control
oci-control:
	@$(STEP) oci-control scripts/oci-control.sh

## pin-control-image: build the control image and write its manifest digest into the Istio / Kong Mesh manifests (…/vigil-control@sha256:…)
.PHONY: pin-control-image
pin-control-image:
	@$(STEP) pin-control-image scripts/pin-control-image.sh

## demo: the whole loop: Envoy + filter (steer) + vigil-control (enforce) + stable/canary upstreams, canary fault, live timeline, target/demo/report.json
## (DEMO_SCENARIO=latency|errors|healthy|low-traffic|streaming; ports DEMO_LISTEN_PORT, DEMO_ADMIN_PORT, DEMO_CONTROL_PORT, DEMO_STABLE_PORT, DEMO_CANARY_PORT)
demo: wasm
	cargo build --quiet -p vigil-control -p vigil-demo
	cargo run --quiet -p vigil-demo --bin vigil-demo

clean:
	cargo clean
	rm -rf dist

## distclean: also the installed toolchain stamps and Envoy's virtualenv
distclean: clean
	rm -rf .tools .venv

## bench: Vigil's data-plane cost in real Envoy against a no-op wasm filter and no filter, scale, scorer, control → target/bench/results.json
.PHONY: bench
bench: wasm
	@$(STEP) bench scripts/bench.sh

## eval-corpus: Vigil's self path on real labelled corpora placed outside git (CORPORA=/path)
eval-corpus:
	bash scripts/eval-corpus.sh
.PHONY: eval-corpus
