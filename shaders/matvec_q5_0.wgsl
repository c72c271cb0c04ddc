// Q5_0 for matvec.wgsl (6 words per block: [d: f16, pad], qh, 16 bytes of qs). Each of a
// block's 2 lanes takes two words of qs: weights 8p … 8p + 7 (low nibbles) and 16 + 8p … (high
// nibbles), the fifth bits from qh spread one per byte; value (q − 16)·d.
@group(0) @binding(1) var<storage, read> w: array<u32>;

const BW: u32 = 32u;
const LPB: u32 = 2u;

// Bits 0 … 3 of n as bit 4 of bytes 0 … 3.
fn q5_high(n: u32) -> u32 {
    return ((n * 0x00204081u) & 0x01010101u) << 4u;
}

fn block_dot(wrow: u32, blk: u32, part: u32, xo: u32) -> f32 {
    let b = wrow + blk * 6u;
    let d = unpack2x16float(w[b]).x;
    let qh = w[b + 1u];
    let q0 = w[b + 2u + 2u * part];
    let q1 = w[b + 3u + 2u * part];
    let xa = xv(xo + 2u * part);
    let xb = xv(xo + 2u * part + 1u);
    let xc = xv(xo + 4u + 2u * part);
    let xd = xv(xo + 5u + 2u * part);
    let m = 0x0F0F0F0Fu;
    let lo = 8u * part;
    let hi = 16u + 8u * part;
    let s = dot(vec4<f32>(unpack4xU8((q0 & m) | q5_high(extractBits(qh, lo, 4u)))), xa)
        + dot(vec4<f32>(unpack4xU8((q1 & m) | q5_high(extractBits(qh, lo + 4u, 4u)))), xb)
        + dot(vec4<f32>(unpack4xU8(((q0 >> 4u) & m) | q5_high(extractBits(qh, hi, 4u)))), xc)
        + dot(vec4<f32>(unpack4xU8(((q1 >> 4u) & m) | q5_high(extractBits(qh, hi + 4u, 4u)))), xd);
    return d * (s - 16.0 * dot(xa + xb + xc + xd, vec4<f32>(1.0)));
}
