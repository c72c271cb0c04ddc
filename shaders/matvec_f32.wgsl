// F32 for matvec.wgsl: rows read as vec4; blocks of 32 weights, 4 lanes each.
@group(0) @binding(1) var<storage, read> w: array<vec4<f32>>;

const BW: u32 = 32u;
const LPB: u32 = 4u;

fn block_dot(wrow: u32, blk: u32, part: u32, xo: u32) -> f32 {
    let i = wrow / 4u + blk * 8u + 2u * part;
    return dot(w[i], xv(xo + 2u * part)) + dot(w[i + 1u], xv(xo + 2u * part + 1u));
}
