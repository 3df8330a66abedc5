# roomcast: every target bootstraps first, so a fresh machine needs only `make`.
#
# Tools are installed outside the checkout (~/.cargo/bin), pinned, and skipped
# when present, so a second `make bootstrap` takes seconds.

SHELL := /bin/bash
.SHELLFLAGS := -e -o pipefail -c
.DEFAULT_GOAL := build

CARGO_BIN        := $(HOME)/.cargo/bin
WORKER_BUILD_VER := 0.8.7
TANSU_VER        := 0.6.0
# dynostore: in-memory brokers; libsql: sqlite storage, the one that keeps
# SCRAM users (the SASL tests).
TANSU_FEATURES   := dynostore,libsql
CARGO_FUZZ_VER   := 0.13.2
CARGO_MUTANTS_VER := 27.1.0
TOOLS_DIR        := $(HOME)/.cache/roomcast/tools
CHROMIUM         := /usr/bin/chromium
# Debian's RabbitMQ: the end-to-end tests start private nodes of it, and
# `make dev BROKER=amqp` one.
RABBITMQ         := /usr/lib/rabbitmq/bin/rabbitmq-server
# wasm-bindgen-cli must match the wasm-bindgen crate exactly: read it from the lock file.
WASM_BINDGEN_VER := $(shell awk '/^name = "wasm-bindgen"$$/ {getline; gsub(/"/, "", $$3); print $$3}' Cargo.lock)

export PATH := $(CARGO_BIN):$(CURDIR)/node_modules/.bin:$(PATH)
export WASM_BINDGEN_BIN := $(CARGO_BIN)/wasm-bindgen
export WASM_OPT_BIN := $(CURDIR)/node_modules/.bin/wasm-opt
export ESBUILD_BIN := $(CURDIR)/node_modules/.bin/esbuild
export WRANGLER_SEND_METRICS := false
export CARGO_TERM_COLOR := never

WORKER_BUNDLE  := build/worker/shim.mjs
TEST_CONFIG    := build/wrangler.toml
WORKER_SOURCES := $(shell find worker/src protocol/src -name '*.rs') $(wildcard worker/js/*.js) worker/Cargo.toml protocol/Cargo.toml Cargo.toml Cargo.lock

.PHONY: bootstrap bootstrap-test build worker bridge dev token test test-unit test-wasm test-fuzz test-e2e test-js test-types lint fuzz mutants bench profile deploy-check clean

## bootstrap: install what building and running needs (idempotent): the wasm toolchain, wrangler, OpenSSL's headers
bootstrap: node_modules/.package-lock.json
	@rustup target list --installed | grep -qx wasm32-unknown-unknown || rustup target add wasm32-unknown-unknown
	@rustup component list --installed | grep -q '^clippy' || rustup component add clippy rustfmt
	@test -n "$(WASM_BINDGEN_VER)" || { echo "cannot read the wasm-bindgen version from Cargo.lock" >&2; exit 1; }
	@$(CARGO_BIN)/wasm-bindgen --version 2>/dev/null | grep -qx "wasm-bindgen $(WASM_BINDGEN_VER)" \
	  || cargo install wasm-bindgen-cli --version "$(WASM_BINDGEN_VER)" --force
	@$(CARGO_BIN)/worker-build --version 2>/dev/null | grep -q "$(WORKER_BUILD_VER)" \
	  || cargo install worker-build --version "$(WORKER_BUILD_VER)" --force
	@# OpenSSL's headers (librdkafka's TLS and SASL, in the bridge) and kcat (the
	@# Kafka side of `make dev`), from Debian.
	@missing=""; pkg-config --exists openssl 2>/dev/null || missing="$$missing libssl-dev pkg-config"; \
	  command -v kcat >/dev/null || missing="$$missing kcat"; \
	  test -z "$$missing" || { apt-get update -qq && apt-get install -y -qq $$missing; }

## bootstrap-test: bootstrap, and what only the tests, fuzzing and benchmarks need (idempotent)
bootstrap-test: bootstrap
	@$(CARGO_BIN)/cargo-fuzz --version 2>/dev/null | grep -qx "cargo-fuzz $(CARGO_FUZZ_VER)" \
	  || cargo install cargo-fuzz --version "$(CARGO_FUZZ_VER)" --locked --force
	@# The end-to-end tests' Kafka-protocol broker (about 20 minutes to build, once;
	@# `make dev` uses the bridge's embedded one instead).
	@test "$$(cat $(TOOLS_DIR)/tansu.features 2>/dev/null)" = "$(TANSU_VER) $(TANSU_FEATURES)" \
	  && $(TOOLS_DIR)/bin/tansu --version 2>/dev/null | grep -q "$(TANSU_VER)" \
	  || { cargo install tansu --version "$(TANSU_VER)" --features "$(TANSU_FEATURES)" --locked --root "$(TOOLS_DIR)" --force \
	       && echo "$(TANSU_VER) $(TANSU_FEATURES)" > $(TOOLS_DIR)/tansu.features; }
	@# Chromium (the browser test), socat (the end-to-end tests' TLS terminator
	@# in front of the Kafka broker) and RabbitMQ (the AMQP tests' broker), from Debian.
	@missing=""; command -v socat >/dev/null || missing="$$missing socat"; \
	  test -x $(CHROMIUM) || missing="$$missing chromium"; \
	  test -x $(RABBITMQ) || missing="$$missing rabbitmq-server"; \
	  test -z "$$missing" || { apt-get update -qq && apt-get install -y -qq $$missing; }

# npm ci only when the lock file changed since the last install.
node_modules/.package-lock.json: package-lock.json
	npm ci --no-audit --no-fund
	@touch $@

## build: the worker bundle and the bridge binary
build: bootstrap worker bridge

## worker: the worker bundle (wasm-bindgen, wasm-opt, esbuild), rebuilt only when sources change
worker: bootstrap $(WORKER_BUNDLE)

# wasm-opt runs here rather than inside worker-build so that it can shrink for
# size and strip debug names (bundle size is cold-start time on Workers). The
# worker is compiled for size (opt-level z: about 25 KB less gzipped than s);
# the bridge keeps the workspace's release profile.
WORKER_CARGO := CARGO_PROFILE_RELEASE_OPT_LEVEL=z
$(WORKER_BUNDLE): $(WORKER_SOURCES)
	$(WORKER_CARGO) worker-build --release --no-opt --out-dir ../build worker
	wasm-opt build/index_bg.wasm -o build/index_bg.wasm -Oz --enable-exception-handling --strip-debug --strip-producers
	@touch $@

# wrangler.toml without its build step, for the test harnesses:
# `wrangler dev` with a build command rebuilds and restarts workerd
# once its watcher is ready, and the restarted workerd binds its ports again,
# which another process starting meanwhile may have taken (the worker then
# exits with "Address already in use"). Paths move one directory down with it.
$(TEST_CONFIG): wrangler.toml
	@mkdir -p build
	sed -e '/^\[build\]$$/,/^$$/d' -e 's|^main = "build/|main = "|' -e 's|^directory = "|directory = "../|' $< > $@

bridge: bootstrap
	cargo build --release -p roomcast-bridge

## dev: the worker on 127.0.0.1:8787, the bridge with an embedded Kafka on 127.0.0.1:9092 [BROKER=amqp: with a local RabbitMQ on 127.0.0.1:5672 instead]; Ctrl-C stops all
BROKER ?= kafka
dev: worker bridge .dev.vars
	@BROKER=$(BROKER) ROOMCAST_RABBITMQ=$(RABBITMQ) scripts/dev.sh

.dev.vars:
	@echo "JWT_SECRET=$$(head -c 32 /dev/urandom | base64 | tr -d '/+=')" > $@
	@echo "created .dev.vars with a random JWT_SECRET"

## token: an HS256 token from .dev.vars: make token SUB=alice [ROOMS='*'] [PUBLISH='*'] [PRESENCE='*'] [TTL=1h]
SUB ?= dev
ROOMS ?= *
PUBLISH ?= *
PRESENCE ?= *
TTL ?= 1h
token: .dev.vars
	@cargo run -q -p roomcast-bridge -- --jwt-secret "$$(sed -n 's/^JWT_SECRET=//p' .dev.vars)" \
	  token --sub "$(SUB)" --rooms '$(ROOMS)' --publish '$(PUBLISH)' --presence '$(PRESENCE)' --ttl "$(TTL)"

## test: every test: formatting, lints, unit and property tests (native and wasm), a short fuzz run, end to end, JS client and browser; each suite must run at least the tests .ci/minimums says
test: lint test-unit test-wasm test-fuzz test-e2e test-js

# Runs a suite's command and fails, naming the suite, when it runs fewer
# tests than .ci/minimums says or skips any it may not (scripts/test-counts.sh).
COUNTED = scripts/test-counts.sh run

# Crates whose modules may not import each other in a circle
# (scripts/import-cycles.py names the files and what ties them).
CYCLE_CHECK_CRATES := protocol bridge bench fuzz worker

lint: bootstrap
	scripts/import-cycles.py $(CYCLE_CHECK_CRATES)
	cargo fmt --all --check
	cargo clippy --workspace --all-targets -- -D warnings
	cargo clippy -p roomcast-worker --target wasm32-unknown-unknown -- -D warnings
	cargo fmt --manifest-path fuzz/Cargo.toml --check
	cargo clippy --manifest-path fuzz/Cargo.toml --all-targets -- -D warnings

# --no-fail-fast: a failing test binary does not keep the rest from running
# and being counted.
test-unit: bootstrap
	$(COUNTED) test-unit cargo test --no-fail-fast -p roomcast-protocol -p roomcast-bridge -p roomcast-bench

## test-wasm: the protocol crate's unit, integration and property tests compiled to wasm32, in Node
test-wasm: bootstrap
	CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUNNER=wasm-bindgen-test-runner \
	  $(COUNTED) test-wasm cargo test --no-fail-fast -p roomcast-protocol --target wasm32-unknown-unknown

## test-fuzz: every fuzz target (fuzz/) for FUZZ_RUNS inputs from the committed seeds, the same inputs each time
FUZZ_RUNS ?= 50000
test-fuzz: bootstrap-test
	$(COUNTED) test-fuzz scripts/fuzz.sh --runs $(FUZZ_RUNS)

test-e2e: bootstrap-test worker $(TEST_CONFIG)
	cargo build -p roomcast-bridge
	ROOMCAST_TANSU=$(TOOLS_DIR)/bin/tansu ROOMCAST_RABBITMQ=$(RABBITMQ) \
	  $(COUNTED) test-e2e cargo test --no-fail-fast -p roomcast-tests -- --test-threads=1

# node --test gets files, never directories: what it does with a directory
# changed across Node versions.
JS_TESTS := $(wildcard clients/js/test/*.test.js tests/browser/*.test.mjs)

# Not a counted suite (tsc runs no tests): test-js runs it first, so a
# declaration that no longer fits fails the build there.
## test-types: the JS client's type declarations (clients/js/index.d.ts) checked by tsc against its TypeScript examples
test-types: node_modules/.package-lock.json
	node_modules/.bin/tsc -p clients/js --noEmit

## test-js: the JS client (node's test runner) and the demo page in headless Chromium, against wrangler dev
test-js: test-types bootstrap-test worker $(TEST_CONFIG)
	@test -n "$(JS_TESTS)" || { echo "test-js: no test files" >&2; exit 1; }
	CHROMIUM_PATH=$(CHROMIUM) $(COUNTED) test-js node --test --test-concurrency=1 --test-timeout=300000 --test-reporter=spec \
	  $(JS_TESTS)

## fuzz: every fuzz target for FUZZ_SECONDS each (8 x 90 s: about 12 minutes), growing fuzz/corpus; not part of test
FUZZ_SECONDS ?= 90
fuzz: bootstrap-test
	scripts/fuzz.sh --seconds $(FUZZ_SECONDS)

## mutants: cargo-mutants over the files that keep the delivery guarantees, each against its crate's unit and property tests, with counts per file [FILES='protocol/src/rate.rs ...']; not part of test (about 1½ h on two cores); output in ~/.cache/roomcast/mutants
mutants: bootstrap
	@$(CARGO_BIN)/cargo-mutants --version 2>/dev/null | grep -qx "cargo-mutants $(CARGO_MUTANTS_VER)" \
	  || cargo install cargo-mutants --version "$(CARGO_MUTANTS_VER)" --locked --force
	scripts/mutants.sh $(FILES)

# The worker with Rust function names kept, for profiles (rule below).
PROFILE_BUNDLE := build/profile/worker/shim.mjs

## bench: the ladder (bare JS, durable JS, partyserver, roomcast), push/poll, fan-out, many rooms, footprint [FULL=1: everything, the bridge with Kafka and with RabbitMQ, the presence join storm and one client in 100 rooms multiplexed]; not part of test (see BENCHMARKS.md)
bench: bootstrap-test build $(PROFILE_BUNDLE)
	cargo build --release -p roomcast-bench
	target/release/roomcast-bench $(if $(filter 1,$(FULL)),--full) --out target/bench-$(if $(filter 1,$(FULL)),full,quick).md

## profile: a CPU profile of one room under publish load (PROFILE_SECONDS), from a worker build that keeps function names; see BENCHMARKS.md, "Profiling"
PROFILE_SECONDS ?= 10
profile: bootstrap $(PROFILE_BUNDLE)
	cargo build --release -p roomcast-bench
	target/release/roomcast-bench profile --seconds $(PROFILE_SECONDS) --out target/profile.cpuprofile

# The worker as $(WORKER_BUNDLE) builds it, with the same optimisations, but
# keeping wasm's name section (wasm-opt -g, no --strip-debug) so that a
# profile names Rust functions; in its own directory, so the deploy bundle is
# untouched.
$(PROFILE_BUNDLE): $(WORKER_SOURCES)
	$(WORKER_CARGO) worker-build --release --no-opt --out-dir ../build/profile worker
	wasm-opt build/profile/index_bg.wasm -o build/profile/index_bg.wasm -Oz -g --enable-exception-handling --strip-producers
	@touch $@

## deploy-check: the deploy bundle, built offline, and its gzip size
deploy-check: worker
	rm -rf build/deploy-check
	wrangler deploy --dry-run --outdir build/deploy-check
	@for f in build/deploy-check/*; do printf '%-50s %8d bytes, %8d gzipped\n' "$$f" "$$(wc -c < $$f)" "$$(gzip -9c $$f | wc -c)"; done

clean:
	rm -rf build target fuzz/target
