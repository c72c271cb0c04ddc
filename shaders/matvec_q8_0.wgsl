// Q8_0 for matvec.wgsl (9 words per block: [d: f16, pad], 32 × i8). Each of a block's 4 lanes
// takes two words: 8 weights; value q·d.
@group(0) @binding(1) var<storage, read> w: array<u32>;

const BW: u32 = 32u;
const LPB: u32 = 4u;

fn block_dot(wrow: u32, blk: u32, part: u32, xo: u32) -> f32 {
    let b = wrow + blk * 9u;
    let d = unpack2x16float(w[b]).x;
    let q0 = vec4<f32>(unpack4xI8(w[b + 1u + 2u * part]));
    let q1 = vec4<f32>(unpack4xI8(w[b + 2u + 2u * part]));
    return d * (dot(q0, xv(xo + 2u * part)) + dot(q1, xv(xo + 2u * part + 1u)));
}
