#!/usr/bin/env bash
# Build the static page into wasm-shell/dist/ (serve it with serve.py):
#   cargo (wasm32, SIMD128) → wasm-bindgen --target web → wasm-opt -O3 (npm binaryen) → copy www/.
# Tools missing here are installed: the wasm32 target, wasm-bindgen-cli at Cargo.lock's version,
# and binaryen from npm (package.json beside this script).
set -euo pipefail
cd "$(dirname "$0")"
source ./tools.sh
ensure_wasm_target
ensure_wasm_bindgen
ensure_npm "$WASM_SHELL_DIR"

export RUSTFLAGS="${RUSTFLAGS:-} -C target-feature=+simd128"
cargo build --release --target wasm32-unknown-unknown -p wasm-shell

target_dir="$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')"
raw="$target_dir/wasm32-unknown-unknown/release/wasm_shell.wasm"
rm -rf dist
mkdir -p dist/pkg
wasm-bindgen --target web --out-dir dist/pkg "$raw"
./node_modules/.bin/wasm-opt -O3 \
  --enable-simd --enable-bulk-memory --enable-nontrapping-float-to-int --enable-sign-ext \
  --enable-mutable-globals --enable-reference-types --enable-multivalue \
  dist/pkg/wasm_shell_bg.wasm -o dist/pkg/wasm_shell_bg.opt.wasm
mv dist/pkg/wasm_shell_bg.opt.wasm dist/pkg/wasm_shell_bg.wasm
cp www/* dist/

wasm=dist/pkg/wasm_shell_bg.wasm
python3 - "$wasm" "$(wasm_bindgen_version)" <<'PY'
import gzip, json, os, subprocess, sys
path, wb = sys.argv[1], sys.argv[2]
data = open(path, "rb").read()
rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
info = {"wasm_bytes": len(data), "wasm_gzip_bytes": len(gzip.compress(data, 9)),
        "wasm_bindgen": wb, "git": rev, "rustflags": os.environ.get("RUSTFLAGS", "").strip()}
json.dump(info, open("dist/build.json", "w"), indent=1)
print(f"dist/ ready: wasm {info['wasm_bytes']/1e6:.2f} MB, gzip {info['wasm_gzip_bytes']/1e6:.2f} MB")
PY
