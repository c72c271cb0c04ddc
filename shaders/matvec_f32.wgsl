// F32 for matvec.wgsl: rows read as vec4; blocks of 32 weights, 2 lanes each (64 bytes in
// flight per block).
@group(0) @binding(1) var<storage, read> w: array<vec4<f32>>;

const BW: u32 = 32u;
const LPB: u32 = 2u;

// One lane's loads of a block (block_load), issued before they are needed (matvec.wgsl
// prefetches the next block while the lane computes this one).
struct F32Blk {
    v0: vec4<f32>,
    v1: vec4<f32>,
    v2: vec4<f32>,
    v3: vec4<f32>,
}
alias MvBlk = F32Blk;

fn block_load(wrow: u32, blk: u32, part: u32) -> MvBlk {
    let i = wrow / 4u + blk * 8u + 4u * part;
    return MvBlk(w[i], w[i + 1u], w[i + 2u], w[i + 3u]);
}

fn block_compute(q: MvBlk, part: u32, xo: u32) -> f32 {
    let x = xo + 4u * part;
    return dot(q.v0, xv(x)) + dot(q.v1, xv(x + 1u)) + dot(q.v2, xv(x + 2u))
        + dot(q.v3, xv(x + 3u));
}

fn block_dot(wrow: u32, blk: u32, part: u32, xo: u32) -> f32 {
    return block_compute(block_load(wrow, blk, part), part, xo);
}

