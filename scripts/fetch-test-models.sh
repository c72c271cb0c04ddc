#!/usr/bin/env bash
# Fetch everything the test suite compares against, into the cache dirs (never into the repo):
# the real models, llama.cpp's prebuilt reference driver (for its ggml-vocab-*.gguf tokenizer
# files) and the requantized SmolLM2 variants. Idempotent; uses the shared reference kit.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
kit=${CHORD_REFERENCE_KIT:-$here/../shared/reference}
[ -d "$kit" ] || [ ! -d "$here/shared/reference" ] || kit=$here/shared/reference
if [ ! -d "$kit" ]; then
    echo "reference kit not found at $kit (set CHORD_REFERENCE_KIT)" >&2
    exit 1
fi
export CHORD_MODELS=${CHORD_MODELS:-$HOME/.cache/wasm-chord/models}
export CHORD_REF=${CHORD_REF:-$HOME/.cache/wasm-chord/llama-ref}
"$kit/fetch-models.sh" smollm2 gemma3 qwen05 >&2
if [ ! -x "$CHORD_REF/bin/ref" ]; then
    "$kit/llama-ref/setup.sh" >&2
fi
"$kit/derive-variants.sh" smollm2 tiny >&2
