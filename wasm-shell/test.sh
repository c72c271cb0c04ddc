#!/usr/bin/env bash
# wasm-bindgen-test unit tests of the JS API, in a dedicated worker of headless Chromium.
# Needs: Debian's chromium + chromium-driver, and wasm-bindgen-cli at the exact version of the
# wasm-bindgen crate in Cargo.lock (both installed here when missing).
set -euo pipefail
cd "$(dirname "$0")"
source ./tools.sh
ensure_chromium
ensure_wasm_bindgen
export CHROMEDRIVER=/usr/bin/chromedriver
export CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUNNER=wasm-bindgen-test-runner
export RUSTFLAGS="${RUSTFLAGS:-} -C target-feature=+simd128"
export WASM_BINDGEN_TEST_TIMEOUT=${WASM_BINDGEN_TEST_TIMEOUT:-300}
cargo test --release --target wasm32-unknown-unknown -p wasm-shell --test web "$@"
