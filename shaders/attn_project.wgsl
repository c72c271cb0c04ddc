// The attention output projection folded into attention.wgsl for one-row chunks (decode): one
// dependent dispatch per layer fewer. Grid (1, n_head, slices): workgroup (h, s) has head h's
// output o_h (head_dim_v values, in `qs`) and multiplies it by W_o's rows
// [s·PJ_SLICE, (s+1)·PJ_SLICE) restricted to head h's columns: a partial row per head. The last
// workgroup of slice s to finish (a counter per slice) sums the heads' partials in head order —
// the same order whichever workgroup it is — and adds them into the residual row.
//
// Cross-workgroup handoff: partials are stored and loaded atomically (at the device's
// coherence point), and `storageBarrier()` is a device-scope acquire-release barrier in naga's
// SPIR-V (the host folds only on native backends). The counter is reset by the workgroup that
// read it last, so it is zero again for the next dispatch.
//
// The host prepends the weight type's decoder (quant_*.wgsl: `load8(row_word, c)` reads 8
// weights at column 8c from `w`) and the shape:
//   PJ_ROWS (output features, n_embd), PJ_ROW_WORDS (words per W_o row), PJ_HEADS (n_head),
//   PJ_N8 (head_dim_v / 8), PJ_SLICE (rows per workgroup: 256, 128, 64 or 32), PJ_BLK_E and
//   PJ_BLK_W (elements and words of a weight block as uploaded).
//
// `project_prefetch`, called before the attention, loads one word of every 128-byte line of the
// workgroup's weights and returns them folded into one value that `project_out` consumes, so
// the weights come from L1/L2 instead of memory once the head's output is known.

@group(0) @binding(6) var<storage, read> w: array<u32>;
@group(0) @binding(7) var<storage, read_write> resid: array<f32>;
// Partial rows as f32 bits: [head][feature].
@group(0) @binding(8) var<storage, read_write> pj_part: array<atomic<u32>>;
// Workgroups of each slice done so far.
@group(0) @binding(9) var<storage, read_write> pj_count: array<atomic<u32>>;

// Lanes per row: each takes every PJ_T-th group of 8 columns.
const PJ_T: u32 = 256u / PJ_SLICE;

var<workgroup> pj_last: u32;

// Start the loads of workgroup (h, s)'s weights: rows of slice s, the blocks holding head h's
// columns. Returns the loaded words XORed together (for `project_out`'s `pf`).
fn project_prefetch(h: u32, s: u32, tid: u32) -> u32 {
    let first = (h * PJ_N8 * 8u) / PJ_BLK_E;
    let last = ((h + 1u) * PJ_N8 * 8u - 1u) / PJ_BLK_E;
    let words = (last - first + 1u) * PJ_BLK_W;
    // A word every 32 (128 bytes), and the last one.
    let touches = words / 32u + 1u;
    var acc = 0u;
    for (var i = tid; i < PJ_SLICE * touches; i += 256u) {
        let r = s * PJ_SLICE + i / touches;
        if r < PJ_ROWS {
            let o = min((i % touches) * 32u, words - 1u);
            acc ^= w[r * PJ_ROW_WORDS + first * PJ_BLK_W + o];
        }
    }
    return acc;
}

// Workgroup (h, s) of activation row `row`, called by every invocation; `pf` is
// `project_prefetch`'s value (used only where no row exists, so that its loads are kept).
fn project_out(row: u32, h: u32, s: u32, tid: u32, pf: u32) {
    workgroupBarrier();
    let r = s * PJ_SLICE + tid / PJ_T;
    let lane = tid % PJ_T;
    var acc = 0.0;
    if r < PJ_ROWS {
        let rw = r * PJ_ROW_WORDS;
        let c0 = h * PJ_N8;
        for (var i = lane; i < PJ_N8; i += PJ_T) {
            let wv = load8(rw, c0 + i);
            let o = 8u * i;
            acc += dot(wv[0], vec4<f32>(qs[o], qs[o + 1u], qs[o + 2u], qs[o + 3u]))
                + dot(wv[1], vec4<f32>(qs[o + 4u], qs[o + 5u], qs[o + 6u], qs[o + 7u]));
        }
    }
    // The lanes of a row, summed in lane order (the score scratch is free after the keys).
    // (`p.n_rows` is 1 here: the prefetched words only ever reach the select.)
    sc[tid] = select(acc, bitcast<f32>(pf), p.n_rows == 0u);
    workgroupBarrier();
    if lane == 0u && r < PJ_ROWS {
        var t = 0.0;
        for (var k = 0u; k < PJ_T; k++) {
            t += sc[tid + k];
        }
        atomicStore(&pj_part[h * PJ_ROWS + r], bitcast<u32>(t));
    }
    storageBarrier();
    if tid == 0u {
        pj_last = select(0u, 1u, atomicAdd(&pj_count[s], 1u) == PJ_HEADS - 1u);
    }
    storageBarrier();
    if workgroupUniformLoad(&pj_last) == 1u {
        let rs = s * PJ_SLICE + tid;
        if tid < PJ_SLICE && rs < PJ_ROWS {
            var t = 0.0;
            for (var hh = 0u; hh < PJ_HEADS; hh++) {
                t += bitcast<f32>(atomicLoad(&pj_part[hh * PJ_ROWS + rs]));
            }
            resid[row * PJ_ROWS + rs] += t;
        }
        if tid == 0u {
            atomicStore(&pj_count[s], 0u);
        }
    }
}
