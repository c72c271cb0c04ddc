// Q8_0 for matvec.wgsl (9 words per block: [d: f16, pad], 32 × i8). One lane per block, all
// 36 bytes in flight at once; value q·d.
@group(0) @binding(1) var<storage, read> w: array<u32>;

const BW: u32 = 32u;
const LPB: u32 = 1u;

fn q8_word(q: u32, x: vec4<f32>) -> f32 {
    return dot(sbytes_f32(q), x);
}

fn block_dot(wrow: u32, blk: u32, part: u32, xo: u32) -> f32 {
    let b = wrow + blk * 9u;
    let d = unpack2x16float(w[b]).x;
    let q0 = w[b + 1u];
    let q1 = w[b + 2u];
    let q2 = w[b + 3u];
    let q3 = w[b + 4u];
    let q4 = w[b + 5u];
    let q5 = w[b + 6u];
    let q6 = w[b + 7u];
    let q7 = w[b + 8u];
    let s = q8_word(q0, xv(xo)) + q8_word(q1, xv(xo + 1u)) + q8_word(q2, xv(xo + 2u))
        + q8_word(q3, xv(xo + 3u)) + q8_word(q4, xv(xo + 4u)) + q8_word(q5, xv(xo + 5u))
        + q8_word(q6, xv(xo + 6u)) + q8_word(q7, xv(xo + 7u));
    return d * s;
}
