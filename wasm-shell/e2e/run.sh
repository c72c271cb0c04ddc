#!/usr/bin/env bash
# Build dist/ and the native CLI, then run the end-to-end test in headless Chromium
# (serves dist/ and the model's folder on 127.0.0.1; see e2e.test.mjs), then its WebGPU part in a
# browser with --enable-unsafe-webgpu. Exits non-zero on failure.
#   wasm-shell/e2e/run.sh                        the SmolLM2-135M Q4_1 of the model cache
#   MODEL=path/to.gguf PROMPT=… wasm-shell/e2e/run.sh
set -euo pipefail
cd "$(dirname "$0")"
source ../tools.sh
default_model="$HOME/.cache/wasm-chord/models/SmolLM2-135M-Instruct.Q4_1.gguf"
export MODEL="${MODEL:-$default_model}"
ensure_chromium
ensure_npm "$WASM_SHELL_DIR/e2e"
(cd "$REPO_ROOT" && cargo build --release -p chord-engine)
target_dir="$(cd "$REPO_ROOT" && cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')"
export CHORD="$target_dir/release/chord"
if [ ! -f "$MODEL" ] && [ "$MODEL" = "$default_model" ]; then
  # Without --model the CLI fetches its default model into the cache.
  "$CHORD" generate --prompt hi -n 1 --json >/dev/null
fi
[ -f "$MODEL" ] || { echo "model not found: $MODEL" >&2; exit 1; }
# The WebGPU part's model: the tests' tiny llama as a file (SwiftShader is slow on bigger ones).
mkdir -p "$target_dir/wasm-shell-e2e"
(cd "$REPO_ROOT" && cargo run --release -q -p wasm-shell --example tiny_model -- "$target_dir/wasm-shell-e2e/tiny-llama.gguf")
../build.sh
node e2e.test.mjs
