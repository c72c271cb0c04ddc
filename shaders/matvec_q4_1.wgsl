// Q4_1 for matvec.wgsl (5 words per block: [d: f16, m: f16], 16 bytes of qs). One lane per
// block, its 20 bytes in flight at once: weights 4k … 4k + 3 are the low nibbles of qs word k,
// 16 + 4k … the high ones; value q·d + m.
@group(0) @binding(1) var<storage, read> w: array<u32>;

const BW: u32 = 32u;
const LPB: u32 = 1u;

struct LegacyBlk {
    h: u32,
    q: vec4<u32>,
}
alias MvBlk = LegacyBlk;

fn block_load(wrow: u32, blk: u32, part: u32) -> MvBlk {
    let b = wrow + blk * 5u;
    return MvBlk(w[b], vec4<u32>(w[b + 1u], w[b + 2u], w[b + 3u], w[b + 4u]));
}

fn block_compute(b: MvBlk, part: u32, xo: u32) -> f32 {
    let dm = unpack2x16float(b.h);
    let z = vec2<u32>(0u);
    let s = nib_word(b.q.x, z, xo, 0u) + nib_word(b.q.y, z, xo, 1u) + nib_word(b.q.z, z, xo, 2u)
        + nib_word(b.q.w, z, xo, 3u);
    return dm.x * s + dm.y * block_xsum(xo);
}

fn block_dot(wrow: u32, blk: u32, part: u32, xo: u32) -> f32 {
    return block_compute(block_load(wrow, blk, part), part, xo);
}

