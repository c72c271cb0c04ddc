#!/usr/bin/env bash
# GPU prefill / decode of `chord bench --backend gpu` next to llama.cpp's Vulkan build on the
# same GPU, same model, alternating (ROUNDS rounds): the reference driver with every layer
# offloaded (REF_NGL=99; REF_BACKEND_DIR must hold the Vulkan build's libraries, e.g. npm
# `@node-llama-cpp/linux-x64-vulkan`), `ref bench MODEL 16 512 128 3` (its tg128 starts from an
# empty cache, its first rep compiles shaders), then chord with f32 and f16 K/V caches
# (`-p 512 -n 128 -r 3`: tg from an empty cache too).
#
#   benches/compare-llama-cpp-gpu.sh CHORD_BIN REF_BIN MODEL [ROUNDS]
set -uo pipefail
CHORD=$1 REF=$2 MODEL=$3 ROUNDS=${4:-2}
echo "# $(date -u +%Y-%m-%dT%H:%MZ) $(basename "$MODEL") $(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null)"
for r in $(seq "$ROUNDS"); do
    echo "## round $r"
    REF_NGL=99 "$REF" bench "$MODEL" 16 512 128 3 2>/dev/null | grep -o '"runs".*'
    echo "chord f32 K/V: $("$CHORD" bench -m "$MODEL" -p 512 -n 128 -r 3 --backend gpu 2>&1 | tail -1)"
    echo "chord f16 K/V: $("$CHORD" bench -m "$MODEL" -p 512 -n 128 -r 3 --backend gpu --kv f16 2>&1 | tail -1)"
done
