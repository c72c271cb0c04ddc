#!/usr/bin/env bash
# The test command: fetch the reference models (cached), run every test of the workspace, then
# the browser tests of wasm-shell (wasm-bindgen tests and the Playwright end-to-end test in
# headless Chromium; they install chromium, wasm-bindgen-cli and npm packages when missing).
# CHORD_SKIP_BROWSER=1 skips the browser part.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/fetch-test-models.sh
cargo test --release --workspace "$@"
if [ "${CHORD_SKIP_BROWSER:-0}" != 1 ]; then
    wasm-shell/test.sh
    wasm-shell/e2e/run.sh
fi
