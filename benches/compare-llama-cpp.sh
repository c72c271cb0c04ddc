#!/usr/bin/env bash
# Prefill / decode speed of `chord bench` next to llama.cpp's reference driver, same model,
# same thread count, same lengths, measured in the same run, alternating the two; and the peak
# resident memory of each process (GNU time's %M), and the time to first token: the wall time of
# a fresh process that loads the model, reads benches/prompts/chat.txt (66 tokens for SmolLM2)
# and produces one token (`ref gen` / `chord generate -n 1`; page cache warm).
#
#   benches/compare-llama-cpp.sh [-t THREADS] [-p PP] [-n TG] [-r REPS] [MODEL...]
#
# Models default to the SmolLM2 / qwen / gemma files of the reference kit that are present in
# $CHORD_MODELS. Extra `chord bench` flags go in $CHORD_ARGS (e.g. "--precision q8"). Needs `cargo build --release` and the kit's llama-ref (`$CHORD_REF/bin/ref`).
set -euo pipefail
cd "$(dirname "$0")/.."
THREADS=2 PP=128 TG=64 REPS=3
while getopts "t:p:n:r:" o; do
    case $o in
    t) THREADS=$OPTARG ;; p) PP=$OPTARG ;; n) TG=$OPTARG ;; r) REPS=$OPTARG ;;
    *) exit 2 ;;
    esac
done
shift $((OPTIND - 1))
M=${CHORD_MODELS:-$HOME/.cache/wasm-chord/models}
REF=${CHORD_REF:-$HOME/.cache/wasm-chord/llama-ref}/bin/ref
CHORD=${CHORD_BIN:-target/release/chord}
[ -x "$REF" ] || { echo "llama.cpp reference driver not found at $REF (run ../shared/reference/llama-ref/setup.sh)" >&2; exit 1; }
[ -x "$CHORD" ] || cargo build --release -p chord-engine --bin chord >&2
if [ $# -eq 0 ]; then
    set -- "$M/SmolLM2-135M-Instruct.Q4_1.gguf" "$M/derived/smollm2-135m-instruct-from-q4_1.q8_0.gguf" \
        "$M/derived/smollm2-135m-instruct-from-q4_1.q4_0.gguf" "$M/qwen2.5-coder-0.5b-instruct-awq-q4_k_m.gguf" \
        "$M/gemma-3-270m-q4_k_m.gguf" "$M/qwen2.5-coder-1.5b-instruct-q4_k_m.gguf"
fi
echo "# $(date -u +%Y-%m-%dT%H:%MZ) $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), threads=$THREADS pp=$PP tg=$TG reps=$REPS chord_args=${CHORD_ARGS:-}"
printf "%-48s %12s %12s %7s %12s %12s %7s %9s %9s %9s %9s\n" model llama_pp chord_pp ratio llama_tg chord_tg ratio llama_MB chord_MB llama_ttft chord_ttft
for model in "$@"; do
    [ -f "$model" ] || { echo "skip $model (absent)" >&2; continue; }
    lp=() lt=() cp=() ct=() lm=() cm=() lf=() cf=()
    rss=$(mktemp)
    for _ in $(seq "$REPS"); do
        # Peak RSS (KiB) of each process, from GNU time.
        r=$(/usr/bin/time -f %M -o "$rss" "$REF" bench "$model" "$THREADS" "$PP" "$TG" 1 2>/dev/null)
        lm+=("$(cat "$rss")")
        lp+=("$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["runs"][0]["pp_tok_s"])' "$r")")
        lt+=("$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["runs"][0]["tg_tok_s"])' "$r")")
        c=$(/usr/bin/time -f %M -o "$rss" "$CHORD" bench --model "$model" -t "$THREADS" -p "$PP" -n "$TG" ${CHORD_ARGS:-} --json 2>/dev/null)
        cm+=("$(cat "$rss")")
        cp+=("$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["prefill_tok_s"])' "$c")")
        ct+=("$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["decode_tok_s"])' "$c")")
        # Time to first token, whole process.
        /usr/bin/time -f %e -o "$rss" "$REF" gen "$model" "$THREADS" 1 "$rss.logits" benches/prompts/chat.txt >/dev/null 2>&1
        lf+=("$(cat "$rss")")
        /usr/bin/time -f %e -o "$rss" "$CHORD" generate --model "$model" -t "$THREADS" -n 1 -f benches/prompts/chat.txt ${CHORD_ARGS:-} >/dev/null 2>&1
        cf+=("$(cat "$rss")")
    done
    rm -f "$rss".logits*
    rm -f "$rss"
    python3 - "$(basename "$model")" "${lp[*]}" "${cp[*]}" "${lt[*]}" "${ct[*]}" "${lm[*]}" "${cm[*]}" "${lf[*]}" "${cf[*]}" <<'PY'
import statistics as st, sys
name, lp, cp, lt, ct, lm, cm, lf, cf = sys.argv[1], *[[float(x) for x in a.split()] for a in sys.argv[2:]]
m = st.median
print(f"{name:<48} {m(lp):12.1f} {m(cp):12.1f} {m(cp)/m(lp):7.2f} {m(lt):12.1f} {m(ct):12.1f} {m(ct)/m(lt):7.2f} {max(lm)/1024:9.0f} {max(cm)/1024:9.0f} {m(lf):8.2f}s {m(cf):8.2f}s")
print(f"  raw llama_pp={lp} chord_pp={[round(x,1) for x in cp]} llama_tg={lt} chord_tg={[round(x,1) for x in ct]} peak_rss_MB llama={[round(x/1024) for x in lm]} chord={[round(x/1024) for x in cm]} ttft_s llama={lf} chord={cf}", file=sys.stderr)
PY
done
