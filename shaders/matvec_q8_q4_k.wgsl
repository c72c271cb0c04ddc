// Q4_K against 8-bit activations (matvec_stage_q8.wgsl) for matvec.wgsl: ggml's
// vec_dot_q4_K_q8_K. Same lanes and loads as matvec_q4_k.wgsl (2 lanes per block, 80 bytes in
// flight); group g's nibbles meet its 32 quantized values with dot4I8Packed, and the block's
// value is d_x · (d · Σ sc·Σqx − dmin · Σ m·Σx), the sums of x being the integer bsums.
@group(0) @binding(1) var<storage, read> w: array<vec4<u32>>;

const BW: u32 = 256u;
const LPB: u32 = 2u;

// q4k_scale_min of matvec_q4_k.wgsl: the (scale, min) pairs of groups 2·pair and 2·pair + 1.
fn q4k_scale_min(h: vec4<u32>, pair: u32) -> vec2<u32> {
    let sh = 16u * (pair % 2u);
    let a = (h.y >> sh) & 0xFFFFu;
    let b = (h.z >> sh) & 0xFFFFu;
    let c = (h.w >> sh) & 0xFFFFu;
    let low = pair < 2u;
    let sc = select((c & 0x0F0Fu) | ((a >> 2u) & 0x3030u), a & 0x3F3Fu, low);
    let mn = select(((c >> 4u) & 0x0F0Fu) | ((b >> 2u) & 0x3030u), b & 0x3F3Fu, low);
    return vec2<u32>(sc, mn);
}

// Σ q·x of the 32 low (.x) and 32 high (.y) nibbles of q0, q1 against quantized vec4s xl
// (low: xl, xl + 1; high: xl + 2, xl + 3).
fn q4k_q8_pair(q0: vec4<u32>, q1: vec4<u32>, xl: u32) -> vec2<i32> {
    let m = 0x0F0F0F0Fu;
    let a0 = xqv(xl);
    let a1 = xqv(xl + 1u);
    let b0 = xqv(xl + 2u);
    let b1 = xqv(xl + 3u);
    let lo = dot4I8Packed(q0.x & m, a0.x) + dot4I8Packed(q0.y & m, a0.y)
        + dot4I8Packed(q0.z & m, a0.z) + dot4I8Packed(q0.w & m, a0.w)
        + dot4I8Packed(q1.x & m, a1.x) + dot4I8Packed(q1.y & m, a1.y)
        + dot4I8Packed(q1.z & m, a1.z) + dot4I8Packed(q1.w & m, a1.w);
    let hi = dot4I8Packed((q0.x >> 4u) & m, b0.x) + dot4I8Packed((q0.y >> 4u) & m, b0.y)
        + dot4I8Packed((q0.z >> 4u) & m, b0.z) + dot4I8Packed((q0.w >> 4u) & m, b0.w)
        + dot4I8Packed((q1.x >> 4u) & m, b1.x) + dot4I8Packed((q1.y >> 4u) & m, b1.y)
        + dot4I8Packed((q1.z >> 4u) & m, b1.z) + dot4I8Packed((q1.w >> 4u) & m, b1.w);
    return vec2<i32>(lo, hi);
}

// A lane's loads: the header and its two pairs' 32 bytes each (80 bytes in flight).
struct Q4kBlk {
    h: vec4<u32>,
    a0: vec4<u32>,
    a1: vec4<u32>,
    b0: vec4<u32>,
    b1: vec4<u32>,
}
alias MvBlk = Q4kBlk;

fn block_load(wrow: u32, blk: u32, part: u32) -> MvBlk {
    let bb = wrow / 4u + blk * 9u + 4u * part;
    return MvBlk(w[bb - 4u * part], w[bb + 1u], w[bb + 2u], w[bb + 3u], w[bb + 4u]);
}

fn block_compute(q: MvBlk, part: u32, xo: u32) -> f32 {
    // The block's first quantized vec4 (16 per block) and its scale.
    let xb = xo / 4u;
    let j = 2u * part;
    // Pair j: groups 2j, 2j + 1 = values 64j … 64j + 63 = quantized vec4s xb + 4j … + 3.
    let qa = q4k_q8_pair(q.a0, q.a1, xb + 4u * j);
    let qb = q4k_q8_pair(q.b0, q.b1, xb + 4u * j + 4u);
    let sa = q4k_scale_min(q.h, j);
    let sb = q4k_scale_min(q.h, j + 1u);
    let sc = vec4<i32>(vec4<u32>(sa.x & 0xFFu, sa.x >> 8u, sb.x & 0xFFu, sb.x >> 8u));
    let mn = vec4<i32>(vec4<u32>(sa.y & 0xFFu, sa.y >> 8u, sb.y & 0xFFu, sb.y >> 8u));
    // Σx of the four groups: two bsums each.
    let g = xb + 4u * j;
    let bs = vec4<i32>(qsum16[g] + qsum16[g + 1u], qsum16[g + 2u] + qsum16[g + 3u],
                       qsum16[g + 4u] + qsum16[g + 5u], qsum16[g + 6u] + qsum16[g + 7u]);
    let sumi = dot(sc, vec4<i32>(qa, qb));
    let summ = dot(mn, bs);
    let dm = unpack2x16float(q.h.x);
    return dq[xb / 16u] * (dm.x * f32(sumi) - dm.y * f32(summ));
}

fn block_dot(wrow: u32, blk: u32, part: u32, xo: u32) -> f32 {
    return block_compute(block_load(wrow, blk, part), part, xo);
}
