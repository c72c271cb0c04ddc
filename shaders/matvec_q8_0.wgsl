// Q8_0 for matvec.wgsl (9 words per block: [d: f16, pad], 32 × i8). One lane per block, all
// 36 bytes in flight at once; value q·d.
@group(0) @binding(1) var<storage, read> w: array<u32>;

const BW: u32 = 32u;
const LPB: u32 = 1u;

fn q8_word(q: u32, x: vec4<f32>) -> f32 {
    return dot(sbytes_f32(q), x);
}

struct Q8Blk {
    d: u32,
    a: vec4<u32>,
    b: vec4<u32>,
}
alias MvBlk = Q8Blk;

fn block_load(wrow: u32, blk: u32, part: u32) -> MvBlk {
    let b = wrow + blk * 9u;
    return MvBlk(w[b], vec4<u32>(w[b + 1u], w[b + 2u], w[b + 3u], w[b + 4u]),
                 vec4<u32>(w[b + 5u], w[b + 6u], w[b + 7u], w[b + 8u]));
}

fn block_compute(q: MvBlk, part: u32, xo: u32) -> f32 {
    let d = unpack2x16float(q.d).x;
    let s = q8_word(q.a.x, xv(xo)) + q8_word(q.a.y, xv(xo + 1u)) + q8_word(q.a.z, xv(xo + 2u))
        + q8_word(q.a.w, xv(xo + 3u)) + q8_word(q.b.x, xv(xo + 4u)) + q8_word(q.b.y, xv(xo + 5u))
        + q8_word(q.b.z, xv(xo + 6u)) + q8_word(q.b.w, xv(xo + 7u));
    return d * s;
}

fn block_dot(wrow: u32, blk: u32, part: u32, xo: u32) -> f32 {
    return block_compute(block_load(wrow, blk, part), part, xo);
}

