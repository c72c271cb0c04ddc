// Q6_K for matvec.wgsl (53 words per block, see quant_q6_k.wgsl). Each of a block's 16 lanes
// takes one word of ql at l, one at l + 32 and one of qh (l = 4·(p mod 8) in the 128-half
// ⌊p/8⌋): 16 weights in four runs of 4, 32 apart, each with its own scale; value d·sc·(q − 32).
@group(0) @binding(1) var<storage, read> w: array<u32>;

const BW: u32 = 256u;
const LPB: u32 = 16u;

fn block_dot(wrow: u32, blk: u32, part: u32, xo: u32) -> f32 {
    let b = wrow + blk * 53u;
    let n = part / 8u;
    let l = part % 8u;
    let qa = w[b + 16u * n + l];
    let qb = w[b + 16u * n + 8u + l];
    let qh = w[b + 32u + 8u * n + l];
    let d = unpack2x16float(w[b + 52u]).x;
    // Scales 8n + l/4 + {0, 2} and 8n + 4 + l/4 + {0, 2}.
    let s01 = bitcast<i32>(w[b + 48u + 2u * n]);
    let s23 = bitcast<i32>(w[b + 49u + 2u * n]);
    let si = (l / 4u) * 8u;
    let q1 = (qa & 0x0F0F0F0Fu) | ((qh << 4u) & 0x30303030u);
    let q2 = (qb & 0x0F0F0F0Fu) | ((qh << 2u) & 0x30303030u);
    let q3 = ((qa >> 4u) & 0x0F0F0F0Fu) | (qh & 0x30303030u);
    let q4 = ((qb >> 4u) & 0x0F0F0F0Fu) | ((qh >> 2u) & 0x30303030u);
    let xb = xo + 32u * n + l;
    let x1 = xv(xb);
    let x2 = xv(xb + 8u);
    let x3 = xv(xb + 16u);
    let x4 = xv(xb + 24u);
    let one = vec4<f32>(1.0);
    let v = f32(extractBits(s01, si, 8u)) * (dot(vec4<f32>(unpack4xU8(q1)), x1) - 32.0 * dot(x1, one))
        + f32(extractBits(s01, si + 16u, 8u)) * (dot(vec4<f32>(unpack4xU8(q2)), x2) - 32.0 * dot(x2, one))
        + f32(extractBits(s23, si, 8u)) * (dot(vec4<f32>(unpack4xU8(q3)), x3) - 32.0 * dot(x3, one))
        + f32(extractBits(s23, si + 16u, 8u)) * (dot(vec4<f32>(unpack4xU8(q4)), x4) - 32.0 * dot(x4, one));
    return d * v;
}
