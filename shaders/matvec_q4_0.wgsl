// Q4_0 for matvec.wgsl (5 words per block: [d: f16, pad], 16 bytes of qs). One lane per
// block, its 20 bytes in flight at once: weights 4k … 4k + 3 are the low nibbles of qs word k,
// 16 + 4k … the high ones; value (q − 8)·d.
@group(0) @binding(1) var<storage, read> w: array<u32>;

const BW: u32 = 32u;
const LPB: u32 = 1u;

fn block_dot(wrow: u32, blk: u32, part: u32, xo: u32) -> f32 {
    let b = wrow + blk * 5u;
    let d = unpack2x16float(w[b]).x;
    let q0 = w[b + 1u];
    let q1 = w[b + 2u];
    let q2 = w[b + 3u];
    let q3 = w[b + 4u];
    let z = vec2<u32>(0u);
    let s = nib_word(q0, z, xo, 0u) + nib_word(q1, z, xo, 1u) + nib_word(q2, z, xo, 2u)
        + nib_word(q3, z, xo, 3u);
    return d * (s - 8.0 * block_xsum(xo));
}
