// Q4_1 for matvec.wgsl (5 words per block: [d: f16, m: f16], 16 bytes of qs). Each of a block's
// 2 lanes takes two words of qs: weights 8p … 8p + 7 (low nibbles) and 16 + 8p … (high
// nibbles); value q·d + m.
@group(0) @binding(1) var<storage, read> w: array<u32>;

const BW: u32 = 32u;
const LPB: u32 = 2u;

fn block_dot(wrow: u32, blk: u32, part: u32, xo: u32) -> f32 {
    let b = wrow + blk * 5u;
    let dm = unpack2x16float(w[b]);
    let q0 = w[b + 1u + 2u * part];
    let q1 = w[b + 2u + 2u * part];
    let xa = xv(xo + 2u * part);
    let xb = xv(xo + 2u * part + 1u);
    let xc = xv(xo + 4u + 2u * part);
    let xd = xv(xo + 5u + 2u * part);
    let m = 0x0F0F0F0Fu;
    let s = dot(vec4<f32>(unpack4xU8(q0 & m)), xa) + dot(vec4<f32>(unpack4xU8(q1 & m)), xb)
        + dot(vec4<f32>(unpack4xU8((q0 >> 4u) & m)), xc) + dot(vec4<f32>(unpack4xU8((q1 >> 4u) & m)), xd);
    return dm.x * s + dm.y * dot(xa + xb + xc + xd, vec4<f32>(1.0));
}
