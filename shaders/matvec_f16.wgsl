// F16 for matvec.wgsl: rows read as vec4 words (8 halves); blocks of 32 weights, 4 lanes each.
@group(0) @binding(1) var<storage, read> w: array<vec4<u32>>;

const BW: u32 = 32u;
const LPB: u32 = 4u;

fn block_dot(wrow: u32, blk: u32, part: u32, xo: u32) -> f32 {
    let v = w[wrow / 4u + blk * 4u + part];
    let a = vec4<f32>(unpack2x16float(v.x), unpack2x16float(v.y));
    let c = vec4<f32>(unpack2x16float(v.z), unpack2x16float(v.w));
    return dot(a, xv(xo + 2u * part)) + dot(c, xv(xo + 2u * part + 1u));
}
