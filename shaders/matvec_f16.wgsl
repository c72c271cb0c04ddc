// F16 for matvec.wgsl: rows read as vec4 words (8 halves); blocks of 32 weights, one lane
// each (64 bytes in flight).
@group(0) @binding(1) var<storage, read> w: array<vec4<u32>>;

const BW: u32 = 32u;
const LPB: u32 = 1u;

// Σ of the 8 halves of v against staged vec4s xo + 2k and xo + 2k + 1.
fn f16_dot(v: vec4<u32>, xo: u32, k: u32) -> f32 {
    let a = vec4<f32>(unpack2x16float(v.x), unpack2x16float(v.y));
    let c = vec4<f32>(unpack2x16float(v.z), unpack2x16float(v.w));
    return dot(a, xv(xo + 2u * k)) + dot(c, xv(xo + 2u * k + 1u));
}

fn block_dot(wrow: u32, blk: u32, part: u32, xo: u32) -> f32 {
    let i = wrow / 4u + blk * 4u;
    let v0 = w[i];
    let v1 = w[i + 1u];
    let v2 = w[i + 2u];
    let v3 = w[i + 3u];
    return f16_dot(v0, xo, 0u) + f16_dot(v1, xo, 1u) + f16_dot(v2, xo, 2u) + f16_dot(v3, xo, 3u);
}
