#!/usr/bin/env bash
# The test command: fetch the reference models (cached), then run every test of the workspace.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/fetch-test-models.sh
cargo test --release --workspace "$@"
