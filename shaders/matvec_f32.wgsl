// F32 for matvec.wgsl: rows read as vec4; blocks of 32 weights, 2 lanes each (64 bytes in
// flight per block).
@group(0) @binding(1) var<storage, read> w: array<vec4<f32>>;

const BW: u32 = 32u;
const LPB: u32 = 2u;

fn block_dot(wrow: u32, blk: u32, part: u32, xo: u32) -> f32 {
    let i = wrow / 4u + blk * 8u + 4u * part;
    let x = xo + 4u * part;
    let v0 = w[i];
    let v1 = w[i + 1u];
    let v2 = w[i + 2u];
    let v3 = w[i + 3u];
    return dot(v0, xv(x)) + dot(v1, xv(x + 1u)) + dot(v2, xv(x + 2u)) + dot(v3, xv(x + 3u));
}
