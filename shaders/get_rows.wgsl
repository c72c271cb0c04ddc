// Embedding gather: x[r] = W[token[r]] · scale, one workgroup per row (rows of this part only). Prepended with one
// quant_*.wgsl, which supplies `load8(row_word, chunk)`.

struct EmbParams {
    rows: u32,
    cols: u32,
    row_words: u32,
    scale: f32,
    row_offset: u32,
    n_vocab: u32,
    _p0: u32,
    _p1: u32,
}

@group(0) @binding(0) var<uniform> p: EmbParams;
@group(0) @binding(1) var<storage, read> w: array<u32>;
@group(0) @binding(2) var<storage, read> step: array<u32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) tid: u32) {
    let r = wg.x;
    if r >= step[0] {
        return;
    }
    // Out-of-range ids read the last row, as the CPU path does; a split table has one
    // dispatch per part, each writing the rows whose token it holds.
    let tok = min(step[4u + r], p.n_vocab - 1u);
    if tok < p.row_offset || tok >= p.row_offset + p.rows {
        return;
    }
    let local = tok - p.row_offset;
    for (var c = tid; c < p.cols / 8u; c += 64u) {
        let v = load8(local * p.row_words, c);
        let o = r * p.cols + c * 8u;
        for (var i = 0u; i < 4u; i++) {
            out[o + i] = v[0][i] * p.scale;
            out[o + 4u + i] = v[1][i] * p.scale;
        }
    }
}
