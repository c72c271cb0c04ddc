// Q5_0 for matvec.wgsl (6 words per block: [d: f16, pad], qh, 16 bytes of qs). One lane per
// block, its 24 bytes in flight at once: weights 4k … 4k + 3 are the low nibbles of qs word k
// with fifth bits qh[4k …], 16 + 4k … the high ones with qh[16 + 4k …]; value (q − 16)·d.
@group(0) @binding(1) var<storage, read> w: array<u32>;

const BW: u32 = 32u;
const LPB: u32 = 1u;

// Bits 0 … 3 of n as bit 4 of bytes 0 … 3.
fn q5_high(n: u32) -> u32 {
    return ((n * 0x00204081u) & 0x01010101u) << 4u;
}

// The fifth bits of qs word k's low and high nibbles.
fn q5_hi5(qh: u32, k: u32) -> vec2<u32> {
    return vec2<u32>(q5_high(extractBits(qh, 4u * k, 4u)), q5_high(extractBits(qh, 16u + 4u * k, 4u)));
}

fn block_dot(wrow: u32, blk: u32, part: u32, xo: u32) -> f32 {
    let b = wrow + blk * 6u;
    let d = unpack2x16float(w[b]).x;
    let qh = w[b + 1u];
    let q0 = w[b + 2u];
    let q1 = w[b + 3u];
    let q2 = w[b + 4u];
    let q3 = w[b + 5u];
    let s = nib_word(q0, q5_hi5(qh, 0u), xo, 0u) + nib_word(q1, q5_hi5(qh, 1u), xo, 1u)
        + nib_word(q2, q5_hi5(qh, 2u), xo, 2u) + nib_word(q3, q5_hi5(qh, 3u), xo, 3u);
    return d * (s - 16.0 * block_xsum(xo));
}
